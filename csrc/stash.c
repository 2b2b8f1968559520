/* Stash records (see stash.h): the record types behind devstash.Stash.
 *
 * Layout. A record type is made by stash_py_type from a field list with
 * PyType_FromSpecWithBases. Each field gets a PyMemberDef at a fixed offset:
 * Py_T_OBJECT_EX for a reference, and with compact=True Py_T_LONGLONG,
 * Py_T_DOUBLE or Py_T_BOOL for unboxed ints, floats and bools, so reading a
 * field is CPython's own member descriptor (what __slots__ uses). Those
 * member definitions, copied into the type object, are also the layout the
 * hot paths below walk: the first field_count() entries of tp_members are the
 * fields, in declaration order; a `__weaklistoffset__` entry (weakref=True)
 * comes after them. A subclass repeats its base's fields at the base's
 * offsets and adds its own after the base's end.
 *
 * What the members cannot hold (the field names as str objects, the
 * defaults) lives in the type's dict as __stash_layout__, a tuple
 * (names, defaults): read only when a construction is not all
 * positional, on a frozen record's setattr and by __replace__.
 *
 * No GC header unless STASH_GC: a record that is not tracked costs 16 bytes
 * less and nothing to the collector, but a cycle through such records is
 * never collected (README: when gc=True is needed). */
#include "stash.h"

#define STASH_ALIGN 8

static PyObject *stash_missing;   /* default of a field that has none */
static PyObject *str_layout;      /* "__stash_layout__" */
static PyObject *str_separator;   /* ", " */
static PyObject *str_dict;        /* "__dict__" */
static PyObject *str_module;      /* "__module__" */

static void stash_dealloc(PyObject *self);

#define QUALNAME(tp) (((PyHeapTypeObject *)(tp))->ht_qualname)
#define FIELD_PTR(self, m) ((char *)(self) + (m)->offset)

/* ---- layout ----------------------------------------------------------- */

/* The record type that defines the fields of an instance of tp: tp itself,
 * or for a class derived from a record type in Python, the nearest record
 * type among its bases. */
static PyTypeObject *
record_type(PyTypeObject *tp)
{
    while (tp != NULL && tp->tp_dealloc != stash_dealloc)
        tp = tp->tp_base;
    return tp;
}

static inline int
is_field(const PyMemberDef *m)
{
    return m->name != NULL && m->type != Py_T_PYSSIZET;
}

static Py_ssize_t
field_count(PyTypeObject *rt)
{
    Py_ssize_t n = 0;
    if (rt->tp_members != NULL)
        while (is_field(&rt->tp_members[n]))
            n++;
    return n;
}

/* Borrowed: the (names, defaults) tuple of a record type, checked: it is a
 * class attribute, which Python code could replace. */
static PyObject *
layout_of(PyTypeObject *rt)
{
    PyObject *layout = PyDict_GetItemWithError(rt->tp_dict, str_layout), *names, *defaults;
    Py_ssize_t n = field_count(rt);
    if (layout == NULL) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_TypeError, "%U has lost its __stash_layout__", QUALNAME(rt));
        return NULL;
    }
    if (!PyTuple_CheckExact(layout) || PyTuple_GET_SIZE(layout) != 2)
        goto damaged;
    names = PyTuple_GET_ITEM(layout, 0);
    defaults = PyTuple_GET_ITEM(layout, 1);
    if (!PyTuple_CheckExact(names) || !PyTuple_CheckExact(defaults) || PyTuple_GET_SIZE(names) != n ||
        PyTuple_GET_SIZE(defaults) != n)
        goto damaged;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!PyUnicode_Check(PyTuple_GET_ITEM(names, i)))
            goto damaged;
    return layout;
damaged:
    PyErr_Format(PyExc_TypeError, "%U.__stash_layout__ has been replaced", QUALNAME(rt));
    return NULL;
}

/* Index of the field called name, -1 if none, -2 with an exception set. */
static Py_ssize_t
name_index(PyObject *names, PyObject *name)
{
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    for (Py_ssize_t i = 0; i < n; i++)
        if (PyTuple_GET_ITEM(names, i) == name)
            return i;
    for (Py_ssize_t i = 0; i < n; i++) {
        int eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(names, i), name, Py_EQ);
        if (eq < 0)
            return -2;
        if (eq)
            return i;
    }
    return -1;
}

/* ---- one field --------------------------------------------------------- */

/* A new reference to the field's value (compact fields boxed). */
static PyObject *
field_get(PyObject *self, const PyMemberDef *m)
{
    char *p = FIELD_PTR(self, m);
    switch (m->type) {
    case Py_T_LONGLONG:
        return PyLong_FromLongLong(*(long long *)p);
    case Py_T_DOUBLE:
        return PyFloat_FromDouble(*(double *)p);
    case Py_T_BOOL:
        return PyBool_FromLong(*p);
    default: {
        PyObject *value = *(PyObject **)p;
        if (value == NULL) {
            PyErr_Format(PyExc_AttributeError, "'%U' record has no value for field '%s'",
                         QUALNAME(Py_TYPE(self)), m->name);
            return NULL;
        }
        return Py_NewRef(value);
    }
    }
}

/* Interning a str looks it up in CPython's table of interned strings, which
 * costs as much as the rest of a construction. Records are mostly built
 * from the same few str objects over and over (a label in a variable, the
 * values of a column read once), so the result for each of the last few
 * str objects is remembered by address. An entry holds a reference to its
 * source str, so no other object can take that address while it is cached;
 * a str never changes, so the result stays right. Only short str objects
 * (those interned) are cached. */
#if STASH_INTERN
#define INTERN_CACHE_SIZE 64
static struct {
    PyObject *source, *result;
} intern_cache[INTERN_CACHE_SIZE];

/* New reference: the str to store for s (a str not interned): the interned
 * equal str when s is short enough, else s itself. Never fails: a str that
 * cannot be interned is stored as it is. */
static PyObject *
interned(PyObject *s)
{
    size_t slot = ((uintptr_t)s >> 4) % INTERN_CACHE_SIZE;
    if (intern_cache[slot].source == s)
        return Py_NewRef(intern_cache[slot].result);
    PyObject *result = Py_NewRef(s);
#if PY_VERSION_HEX < 0x030C0000
    if (!PyUnicode_IS_READY(s))     /* made by a legacy API: kept as it is */
        return result;
#endif
    if (PyUnicode_GET_LENGTH(s) > STASH_INTERN_MAX)
        return result;              /* and not cached: it could be large */
    PyUnicode_InternInPlace(&result);
    PyObject *old_source = intern_cache[slot].source, *old_result = intern_cache[slot].result;
    intern_cache[slot].source = Py_NewRef(s);
    intern_cache[slot].result = Py_NewRef(result);
    Py_XDECREF(old_source);
    Py_XDECREF(old_result);
    return result;
}
#else
#define interned(s) Py_NewRef(s)
#endif

/* Stores value in the field: a reference (a short str interned), or the
 * unboxed value of a compact field, refused with TypeError or OverflowError
 * when it is not one. 0, or -1 with an exception set. */
static int
field_put(PyObject *self, const PyMemberDef *m, PyObject *value)
{
    char *p = FIELD_PTR(self, m);
    switch (m->type) {
    case Py_T_LONGLONG: {
        int overflow = 0;
        long long v;
        if (!PyLong_Check(value))
            goto wrong_type;
        v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow) {
            PyErr_Format(PyExc_OverflowError,
                         "%U.%s is a compact int field (compact=True): %R does not fit in 64 bits",
                         QUALNAME(Py_TYPE(self)), m->name, value);
            return -1;
        }
        if (v == -1 && PyErr_Occurred())
            return -1;
        *(long long *)p = v;
        return 0;
    }
    case Py_T_DOUBLE: {
        double v;
        if (!PyFloat_Check(value) && !PyLong_Check(value))
            goto wrong_type;
        v = PyFloat_AsDouble(value);
        if (v == -1.0 && PyErr_Occurred())
            return -1;
        *(double *)p = v;
        return 0;
    }
    case Py_T_BOOL:
        if (!PyBool_Check(value))
            goto wrong_type;
        *p = (char)(value == Py_True);
        return 0;
    default: {
        PyObject **slot = (PyObject **)p;
        PyObject *old = *slot;
        if (STASH_INTERN && PyUnicode_CheckExact(value) && !PyUnicode_CHECK_INTERNED(value))
            value = interned(value);
        else
            Py_INCREF(value);
        *slot = value;
        Py_XDECREF(old);
        return 0;
    }
    }
wrong_type:
    PyErr_Format(PyExc_TypeError, "%U.%s is a compact %s field (compact=True): it takes %s, not %.100s",
                 QUALNAME(Py_TYPE(self)), m->name,
                 m->type == Py_T_LONGLONG ? "int" : m->type == Py_T_DOUBLE ? "float" : "bool",
                 m->type == Py_T_LONGLONG ? "an int" : m->type == Py_T_DOUBLE ? "a float or an int" : "a bool",
                 Py_TYPE(value)->tp_name);
    return -1;
}

/* ---- construction ------------------------------------------------------ */

/* "'a'", "'a' and 'b'", "'a', 'b', and 'c'", as CPython names missing
 * arguments. */
static PyObject *
quoted_list(PyObject *names)
{
    PyObject *quoted = NULL, *head = NULL, *result = NULL;
    Py_ssize_t k = PyList_GET_SIZE(names);
    if ((quoted = PyList_New(k)) == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *q = PyUnicode_FromFormat("'%U'", PyList_GET_ITEM(names, i));
        if (q == NULL)
            goto done;
        PyList_SET_ITEM(quoted, i, q);
    }
    if (k == 1) {
        result = Py_NewRef(PyList_GET_ITEM(quoted, 0));
        goto done;
    }
    if (PyList_SetSlice(quoted, k - 1, k, NULL) < 0)
        goto done;
    if ((head = PyUnicode_Join(str_separator, quoted)) == NULL)
        goto done;
    result = PyUnicode_FromFormat(k == 2 ? "%U and '%U'" : "%U, and '%U'", head,
                                  PyList_GET_ITEM(names, k - 1));
done:
    Py_XDECREF(quoted);
    Py_XDECREF(head);
    return result;
}

/* Construction with keywords, defaults or a wrong count: the rules and the
 * messages of a dataclass's __init__. */
static int
fill_slow(PyObject *self, PyTypeObject *rt, Py_ssize_t n, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    PyMemberDef *members = rt->tp_members;
    PyObject *qualname = QUALNAME(Py_TYPE(self));
    PyObject *layout, *names, *defaults, *missing = NULL;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    char small[64];
    char *filled = small;
    int status = -1;

    if ((layout = layout_of(rt)) == NULL)
        return -1;
    names = PyTuple_GET_ITEM(layout, 0);
    defaults = PyTuple_GET_ITEM(layout, 1);
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%U() takes %zd positional argument%s but %zd %s given",
                     qualname, n, n == 1 ? "" : "s", nargs, nargs == 1 ? "was" : "were");
        return -1;
    }
    if (n > (Py_ssize_t)sizeof small && (filled = PyMem_Calloc((size_t)n, 1)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (filled == small)
        memset(small, 0, sizeof small);
    for (Py_ssize_t i = 0; i < nargs; i++) {
        if (field_put(self, &members[i], args[i]) < 0)
            goto done;
        filled[i] = 1;
    }
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t i = name_index(names, key);
        if (i == -2)
            goto done;
        if (i < 0) {
            PyErr_Format(PyExc_TypeError, "%U() got an unexpected keyword argument '%U'", qualname, key);
            goto done;
        }
        if (filled[i]) {
            PyErr_Format(PyExc_TypeError, "%U() got multiple values for argument '%U'", qualname, key);
            goto done;
        }
        if (field_put(self, &members[i], args[nargs + k]) < 0)
            goto done;
        filled[i] = 1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *fallback = PyTuple_GET_ITEM(defaults, i);
        if (filled[i])
            continue;
        if (fallback != stash_missing) {
            if (field_put(self, &members[i], fallback) < 0)
                goto done;
            continue;
        }
        if (missing == NULL && (missing = PyList_New(0)) == NULL)
            goto done;
        if (PyList_Append(missing, PyTuple_GET_ITEM(names, i)) < 0)
            goto done;
    }
    if (missing != NULL) {
        PyObject *listed = quoted_list(missing);
        Py_ssize_t k = PyList_GET_SIZE(missing);
        if (listed != NULL)
            PyErr_Format(PyExc_TypeError, "%U() missing %zd required argument%s: %U",
                         qualname, k, k == 1 ? "" : "s", listed);
        Py_XDECREF(listed);
        goto done;
    }
    status = 0;
done:
    Py_XDECREF(missing);
    if (filled != small)
        PyMem_Free(filled);
    return status;
}

/* Fills a new record's fields (all empty) from a call's arguments
 * (vectorcall layout: positional, then the values of kwnames). */
static int
stash_fill(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyTypeObject *rt = record_type(Py_TYPE(self));
    Py_ssize_t n = field_count(rt);
    if (nargs == n && (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0)) {
        PyMemberDef *members = rt->tp_members;
        for (Py_ssize_t i = 0; i < n; i++) {
            const PyMemberDef *m = &members[i];
            PyObject *v = args[i];
            /* the common case inline: a reference that needs no interning
             * into a new record's empty slot */
            if (m->type == Py_T_OBJECT_EX &&
                (!STASH_INTERN || !PyUnicode_CheckExact(v) || PyUnicode_CHECK_INTERNED(v))) {
                *(PyObject **)FIELD_PTR(self, m) = Py_NewRef(v);
                continue;
            }
            if (field_put(self, m, v) < 0)
                return -1;
        }
        return 0;
    }
    return fill_slow(self, rt, n, args, nargs, kwnames);
}

/* The call of a record type itself (tp_vectorcall): no argument tuple, no
 * __init__ lookup. */
static PyObject *
stash_vectorcall(PyObject *type, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyTypeObject *tp = (PyTypeObject *)type;
    PyObject *self;
    if (tp->tp_alloc == PyType_GenericAlloc && !PyType_IS_GC(tp)) {
        /* what PyType_GenericAlloc does for a fixed-size type without GC */
        if ((self = PyObject_Malloc((size_t)tp->tp_basicsize)) == NULL)
            return PyErr_NoMemory();
        memset(self, 0, (size_t)tp->tp_basicsize);
        PyObject_Init(self, tp);
    }
    else if ((self = tp->tp_alloc(tp, 0)) == NULL) {
        return NULL;
    }
    if (stash_fill(self, args, PyVectorcall_NARGS(nargsf), kwnames) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return self;
}

/* tp_new: the same, for classes derived in Python (no tp_vectorcall). */
static PyObject *
stash_new(PyTypeObject *tp, PyObject *args, PyObject *kwargs)
{
    PyObject *self = NULL, *kwnames = NULL, *values = NULL;
    Py_ssize_t nargs = PyTuple_GET_SIZE(args), nkw = kwargs == NULL ? 0 : PyDict_GET_SIZE(kwargs);
    if ((self = tp->tp_alloc(tp, 0)) == NULL)
        return NULL;
    if (nkw == 0) {
        if (stash_fill(self, &PyTuple_GET_ITEM(args, 0), nargs, NULL) < 0)
            Py_CLEAR(self);
        return self;
    }
    /* strong references: a str subclass's __eq__ could change the dict */
    if ((kwnames = PyTuple_New(nkw)) == NULL || (values = PyTuple_New(nargs + nkw)) == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SET_ITEM(values, i, Py_NewRef(PyTuple_GET_ITEM(args, i)));
    {
        Py_ssize_t pos = 0, k = 0;
        PyObject *key, *value;
        while (k < nkw && PyDict_Next(kwargs, &pos, &key, &value)) {
            PyTuple_SET_ITEM(kwnames, k, Py_NewRef(key));
            PyTuple_SET_ITEM(values, nargs + k, Py_NewRef(value));
            k++;
        }
    }
    if (stash_fill(self, &PyTuple_GET_ITEM(values, 0), nargs, kwnames) < 0)
        goto error;
    Py_DECREF(kwnames);
    Py_DECREF(values);
    return self;
error:
    Py_XDECREF(kwnames);
    Py_XDECREF(values);
    Py_DECREF(self);
    return NULL;
}

/* ---- lifetime ---------------------------------------------------------- */

static int
stash_clear(PyObject *self)
{
    PyTypeObject *rt = record_type(Py_TYPE(self));
    Py_ssize_t n = field_count(rt);
    for (Py_ssize_t i = 0; i < n; i++) {
        const PyMemberDef *m = &rt->tp_members[i];
        if (m->type == Py_T_OBJECT_EX)
            Py_CLEAR(*(PyObject **)FIELD_PTR(self, m));
    }
    return 0;
}

static int
stash_traverse(PyObject *self, visitproc visit, void *arg)
{
    PyTypeObject *rt = record_type(Py_TYPE(self));
    Py_ssize_t n = field_count(rt);
    Py_VISIT(Py_TYPE(self));
    for (Py_ssize_t i = 0; i < n; i++) {
        const PyMemberDef *m = &rt->tp_members[i];
        if (m->type == Py_T_OBJECT_EX)
            Py_VISIT(*(PyObject **)FIELD_PTR(self, m));
    }
    return 0;
}

static void
dealloc_body(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (tp->tp_weaklistoffset != 0)
        PyObject_ClearWeakRefs(self);
    stash_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);  /* a heap type's instances own a reference to it */
}

static void
stash_dealloc(PyObject *self)
{
    if (PyType_IS_GC(Py_TYPE(self))) {
        /* gc=True records may chain deeply (linked lists): the trashcan
         * keeps their destruction off the C stack. */
        PyObject_GC_UnTrack(self);
        Py_TRASHCAN_BEGIN(self, stash_dealloc)
        dealloc_body(self);
        Py_TRASHCAN_END
    }
    else {
        dealloc_body(self);
    }
}

/* ---- the other slots --------------------------------------------------- */

/* A new tuple of the fields' values. */
static PyObject *
stash_values(PyObject *self)
{
    PyTypeObject *rt = record_type(Py_TYPE(self));
    Py_ssize_t n = field_count(rt);
    PyObject *values = PyTuple_New(n);
    if (values == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = field_get(self, &rt->tp_members[i]);
        if (v == NULL) {
            Py_DECREF(values);
            return NULL;
        }
        PyTuple_SET_ITEM(values, i, v);
    }
    return values;
}

/* Example(name='Tony Stark', age=34, is_single=False) */
static PyObject *
stash_repr(PyObject *self)
{
    PyTypeObject *rt = record_type(Py_TYPE(self));
    PyObject *qualname = QUALNAME(Py_TYPE(self));
    PyObject *parts = NULL, *joined = NULL, *result = NULL;
    Py_ssize_t n = field_count(rt);
    int entered = Py_ReprEnter(self);
    if (entered != 0)
        return entered > 0 ? PyUnicode_FromFormat("%U(...)", qualname) : NULL;
    if ((parts = PyList_New(n)) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        const PyMemberDef *m = &rt->tp_members[i];
        PyObject *part, *v;
        if (m->type == Py_T_OBJECT_EX && *(PyObject **)FIELD_PTR(self, m) == NULL) {
            part = PyUnicode_FromFormat("%s=<deleted>", m->name);
        }
        else {
            if ((v = field_get(self, m)) == NULL)
                goto done;
            part = PyUnicode_FromFormat("%s=%R", m->name, v);
            Py_DECREF(v);
        }
        if (part == NULL)
            goto done;
        PyList_SET_ITEM(parts, i, part);
    }
    if ((joined = PyUnicode_Join(str_separator, parts)) == NULL)
        goto done;
    result = PyUnicode_FromFormat("%U(%U)", qualname, joined);
done:
    Py_XDECREF(parts);
    Py_XDECREF(joined);
    Py_ReprLeave(self);
    return result;
}

/* 1 if the field is equal in both records, 0 if not, -1 on error. */
static int
field_equal(PyObject *a, PyObject *b, const PyMemberDef *m)
{
    char *pa = FIELD_PTR(a, m), *pb = FIELD_PTR(b, m);
    switch (m->type) {
    case Py_T_LONGLONG:
        return *(long long *)pa == *(long long *)pb;
    case Py_T_DOUBLE:
        return *(double *)pa == *(double *)pb;
    case Py_T_BOOL:
        return *pa == *pb;
    default: {
        PyObject *x = *(PyObject **)pa, *y = *(PyObject **)pb;
        int eq;
        if (x == NULL || y == NULL)
            return x == y;
        /* __eq__ may run code that replaces the fields */
        Py_INCREF(x);
        Py_INCREF(y);
        eq = PyObject_RichCompareBool(x, y, Py_EQ);
        Py_DECREF(x);
        Py_DECREF(y);
        return eq;
    }
    }
}

/* == and != between records of the same class, field by field, as a
 * dataclass compares; anything else is NotImplemented. */
static PyObject *
stash_richcompare(PyObject *self, PyObject *other, int op)
{
    PyTypeObject *rt;
    Py_ssize_t n;
    int equal = 1;
    if ((op != Py_EQ && op != Py_NE) || Py_TYPE(other) != Py_TYPE(self))
        Py_RETURN_NOTIMPLEMENTED;
    rt = record_type(Py_TYPE(self));
    n = field_count(rt);
    for (Py_ssize_t i = 0; i < n && equal == 1 && self != other; i++)
        equal = field_equal(self, other, &rt->tp_members[i]);
    if (equal < 0)
        return NULL;
    return PyBool_FromLong(op == Py_EQ ? equal : !equal);
}

/* Frozen records hash as the tuple of their fields does (tuplehash's
 * xxHash-based combination). */
#if SIZEOF_PY_UHASH_T > 4
#define XXPRIME_1 ((Py_uhash_t)11400714785074694791ULL)
#define XXPRIME_2 ((Py_uhash_t)14029467366897019727ULL)
#define XXPRIME_5 ((Py_uhash_t)2870177450012600261ULL)
#define XXROTATE(x) ((x << 31) | (x >> 33))
#else
#define XXPRIME_1 ((Py_uhash_t)2654435761UL)
#define XXPRIME_2 ((Py_uhash_t)2246822519UL)
#define XXPRIME_5 ((Py_uhash_t)374761393UL)
#define XXROTATE(x) ((x << 13) | (x >> 19))
#endif

static Py_hash_t
stash_hash(PyObject *self)
{
    PyTypeObject *rt = record_type(Py_TYPE(self));
    Py_ssize_t n = field_count(rt);
    Py_uhash_t acc = XXPRIME_5;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = field_get(self, &rt->tp_members[i]);
        Py_hash_t lane;
        if (v == NULL)
            return -1;
        lane = PyObject_Hash(v);
        Py_DECREF(v);
        if (lane == -1)
            return -1;
        acc += (Py_uhash_t)lane * XXPRIME_2;
        acc = XXROTATE(acc);
        acc *= XXPRIME_1;
    }
    acc += (Py_uhash_t)n ^ (XXPRIME_5 ^ 3527539UL);
    if (acc == (Py_uhash_t)-1)
        return 1546275796;
    return (Py_hash_t)acc;
}

/* The index of the field of self's record type called name: -1 if none,
 * -2 with an exception set. */
static Py_ssize_t
field_named(PyObject *self, PyObject *name, PyTypeObject **rt)
{
    PyObject *layout;
    *rt = record_type(Py_TYPE(self));
    if ((layout = layout_of(*rt)) == NULL)
        return -2;
    return name_index(PyTuple_GET_ITEM(layout, 0), name);
}

/* freeze=True: fields cannot be set or deleted after construction. */
static int
stash_setattro_frozen(PyObject *self, PyObject *name, PyObject *value)
{
    PyTypeObject *rt;
    Py_ssize_t i = field_named(self, name, &rt);
    if (i == -2)
        return -1;
    if (i >= 0) {
        PyErr_Format(PyExc_AttributeError, "cannot %s field '%U' of a frozen %U record",
                     value == NULL ? "delete" : "assign to", name, QUALNAME(Py_TYPE(self)));
        return -1;
    }
    return PyObject_GenericSetAttr(self, name, value);
}

/* compact=True, not frozen: an unboxed field set after construction takes
 * the same checks and messages as the constructor (a member descriptor's
 * own name neither the field nor the class), and cannot be deleted. */
static int
stash_setattro_compact(PyObject *self, PyObject *name, PyObject *value)
{
    PyTypeObject *rt;
    Py_ssize_t i = field_named(self, name, &rt);
    if (i == -2)
        return -1;
    if (i >= 0 && rt->tp_members[i].type != Py_T_OBJECT_EX) {
        if (value == NULL) {
            PyErr_Format(PyExc_AttributeError, "cannot delete compact field '%U' of a %U record",
                         name, QUALNAME(Py_TYPE(self)));
            return -1;
        }
        return field_put(self, &rt->tp_members[i], value);
    }
    return PyObject_GenericSetAttr(self, name, value);
}

/* Pickled by reference to the class, the fields as a tuple:
 * (cls, (v1, v2, ...)), plus the __dict__ of a class derived in Python. */
static PyObject *
stash_reduce(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *values = stash_values(self), *dict = NULL, *result;
    if (values == NULL)
        return NULL;
    if (Py_TYPE(self)->tp_dictoffset != 0) {
        if ((dict = PyObject_GetAttr(self, str_dict)) == NULL) {
            Py_DECREF(values);
            return NULL;
        }
        if (PyDict_Check(dict) && PyDict_GET_SIZE(dict) == 0)
            Py_CLEAR(dict);
    }
    if (dict != NULL)
        result = Py_BuildValue("(ONN)", (PyObject *)Py_TYPE(self), values, dict);
    else
        result = Py_BuildValue("(ON)", (PyObject *)Py_TYPE(self), values);
    return result;
}

/* __reduce_ex__(protocol): the same for every protocol, found by pickle
 * and copy without object.__reduce_ex__'s lookups of __reduce__. */
static PyObject *
stash_reduce_ex(PyObject *self, PyObject *Py_UNUSED(protocol))
{
    return stash_reduce(self, NULL);
}

/* copy.replace(record, **changes) (3.13) and record.__replace__(**changes). */
static PyObject *
stash_replace(PyObject *self, PyObject *args, PyObject *kwargs)
{
    PyTypeObject *rt = record_type(Py_TYPE(self));
    PyObject *layout, *values, *result;
    if (PyTuple_GET_SIZE(args) != 0) {
        PyErr_SetString(PyExc_TypeError, "__replace__() takes no positional arguments");
        return NULL;
    }
    if ((layout = layout_of(rt)) == NULL || (values = stash_values(self)) == NULL)
        return NULL;
    if (kwargs != NULL) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(kwargs, &pos, &key, &value)) {
            Py_ssize_t i = name_index(PyTuple_GET_ITEM(layout, 0), key);
            if (i < 0) {
                if (i == -1)
                    PyErr_Format(PyExc_TypeError, "%U.__replace__() got an unexpected keyword argument '%U'",
                                 QUALNAME(Py_TYPE(self)), key);
                Py_DECREF(values);
                return NULL;
            }
            Py_SETREF(PyTuple_GET_ITEM(values, i), Py_NewRef(value));
        }
    }
    result = PyObject_Call((PyObject *)Py_TYPE(self), values, NULL);
    Py_DECREF(values);
    return result;
}

static PyMethodDef stash_methods[] = {
    {"__reduce__", stash_reduce, METH_NOARGS, "(cls, fields): pickles by reference to the class."},
    {"__reduce_ex__", stash_reduce_ex, METH_O, "__reduce__() for every protocol."},
    {"__replace__", (PyCFunction)(void (*)(void))stash_replace, METH_VARARGS | METH_KEYWORDS,
     "A copy with some fields changed (copy.replace)."},
    {NULL, NULL, 0, NULL},
};

/* ---- making a record type ---------------------------------------------- */

static int
member_type_of(long kind)
{
    switch (kind) {
    case STASH_INT:
        return Py_T_LONGLONG;
    case STASH_FLOAT:
        return Py_T_DOUBLE;
    case STASH_BOOL:
        return Py_T_BOOL;
    default:
        return Py_T_OBJECT_EX;
    }
}

/* Checks base (None or a record type) against the field list, which starts
 * with the base's fields. Its field count, or -1 with an exception set. */
static Py_ssize_t
check_base(PyObject *base, PyObject *fields, PyObject *kinds)
{
    PyTypeObject *bt = (PyTypeObject *)base;
    PyObject *layout, *names;
    Py_ssize_t nbase;
    if (base == Py_None)
        return 0;
    if (!PyType_Check(base) || record_type(bt) != bt) {
        PyErr_SetString(PyExc_TypeError, "stash_type: base must be None or a Stash record type");
        return -1;
    }
    if ((layout = layout_of(bt)) == NULL)
        return -1;
    names = PyTuple_GET_ITEM(layout, 0);
    nbase = field_count(bt);
    if (PyTuple_GET_SIZE(names) != nbase || PyTuple_GET_SIZE(fields) < nbase) {
        PyErr_SetString(PyExc_TypeError, "stash_type: the fields must start with the base's");
        return -1;
    }
    for (Py_ssize_t i = 0; i < nbase; i++) {
        long kind = PyLong_AsLong(PyTuple_GET_ITEM(kinds, i));
        int eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(names, i), PyTuple_GET_ITEM(fields, i), Py_EQ);
        if (eq < 0 || (kind == -1 && PyErr_Occurred()))
            return -1;
        if (!eq || member_type_of(kind) != bt->tp_members[i].type) {
            PyErr_SetString(PyExc_TypeError, "stash_type: the fields must start with the base's");
            return -1;
        }
    }
    return nbase;
}

static int
has_compact(const PyMemberDef *members)
{
    for (const PyMemberDef *m = members; is_field(m); m++)
        if (m->type != Py_T_OBJECT_EX)
            return 1;
    return 0;
}

static Py_ssize_t
align_up(Py_ssize_t offset)
{
    return (offset + STASH_ALIGN - 1) & ~(Py_ssize_t)(STASH_ALIGN - 1);
}

/* Fills members[0..n) (and the __weaklistoffset__ entry after them) and
 * returns the instance size: 8-byte fields in order after the base's end,
 * the weakref slot, then the bools packed. -1 with an exception set. */
static Py_ssize_t
plan_layout(PyMemberDef *members, PyObject *fields, PyObject *kinds, PyTypeObject *base,
            Py_ssize_t nbase, int flags)
{
    Py_ssize_t n = PyTuple_GET_SIZE(fields);
    Py_ssize_t offset = align_up(base != NULL ? base->tp_basicsize : (Py_ssize_t)sizeof(PyObject));
    int readonly = (flags & STASH_FREEZE) ? Py_READONLY : 0;
    for (Py_ssize_t pass = 0; pass < 2; pass++) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *name = PyTuple_GET_ITEM(fields, i);
            long kind = PyLong_AsLong(PyTuple_GET_ITEM(kinds, i));
            if (kind == -1 && PyErr_Occurred())
                return -1;
            if (kind < STASH_OBJECT || kind > STASH_BOOL || !PyUnicode_Check(name)) {
                PyErr_SetString(PyExc_ValueError, "stash_type: fields are str, kinds 0 to 3");
                return -1;
            }
            if ((pass == 0) == (kind == STASH_BOOL))
                continue;  /* bools in the second pass */
            if ((members[i].name = PyUnicode_AsUTF8(name)) == NULL)
                return -1;
            members[i].type = member_type_of(kind);
            members[i].flags = readonly;
            if (i < nbase) {
                members[i].offset = base->tp_members[i].offset;
            }
            else {
                members[i].offset = offset;
                offset += kind == STASH_BOOL ? 1 : 8;
            }
        }
        if (pass == 0 && (flags & STASH_WEAKREF) && (base == NULL || base->tp_weaklistoffset == 0)) {
            members[n] = (PyMemberDef){"__weaklistoffset__", Py_T_PYSSIZET, offset, Py_READONLY, NULL};
            offset += (Py_ssize_t)sizeof(PyObject *);
        }
    }
    return align_up(offset);
}

PyObject *
stash_py_type(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"name", "qualname", "fields", "kinds", "defaults", "flags", "base",
                             "namespace", "signature", NULL};
    PyObject *name, *qualname, *fields, *kinds, *defaults, *base, *ns;
    const char *signature = NULL;
    PyObject *module_name, *defaults_tuple = NULL, *layout = NULL;
    char *spec_name = NULL;
    PyObject *bases = NULL, *type = NULL, *key, *value;
    PyMemberDef *members = NULL;
    PyTypeObject *bt;
    Py_ssize_t n, nbase, basicsize, pos = 0;
    int flags, k = 0;
    PyType_Slot slots[13];
    PyType_Spec spec;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "UUO!O!O!iOO!|z:stash_type", kwlist, &name,
                                     &qualname, &PyTuple_Type, &fields, &PyTuple_Type, &kinds,
                                     &PyDict_Type, &defaults, &flags, &base, &PyDict_Type, &ns,
                                     &signature))
        return NULL;
    n = PyTuple_GET_SIZE(fields);
    if (PyTuple_GET_SIZE(kinds) != n) {
        PyErr_SetString(PyExc_ValueError, "stash_type: one kind per field");
        return NULL;
    }
    if ((nbase = check_base(base, fields, kinds)) < 0)
        return NULL;
    bt = base == Py_None ? NULL : (PyTypeObject *)base;
    if (bt != NULL && PyType_IS_GC(bt))
        flags |= STASH_GC;  /* a base's GC header is every subclass's */
    module_name = PyDict_GetItemWithError(ns, str_module);
    if (module_name == NULL || !PyUnicode_Check(module_name)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "stash_type: namespace['__module__'] must be a str");
        return NULL;
    }
    /* the spec's name is "module.name", as PyType_FromSpec wants it */
    {
        PyObject *text = PyUnicode_FromFormat("%U.%U", module_name, name);
        const char *utf8;
        Py_ssize_t size;
        if (text == NULL)
            return NULL;
        if ((utf8 = PyUnicode_AsUTF8AndSize(text, &size)) != NULL &&
            (spec_name = PyMem_Malloc((size_t)size + 1)) != NULL)
            memcpy(spec_name, utf8, (size_t)size + 1);
        Py_DECREF(text);
        if (spec_name == NULL)
            return utf8 == NULL ? NULL : PyErr_NoMemory();
    }
    if ((defaults_tuple = PyTuple_New(n)) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *d = PyDict_GetItemWithError(defaults, PyTuple_GET_ITEM(fields, i));
        if (d == NULL && PyErr_Occurred())
            goto done;
        PyTuple_SET_ITEM(defaults_tuple, i, Py_NewRef(d != NULL ? d : stash_missing));
    }
    if ((layout = PyTuple_Pack(2, fields, defaults_tuple)) == NULL)
        goto done;

    if ((members = PyMem_Calloc((size_t)n + 2, sizeof(PyMemberDef))) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if ((basicsize = plan_layout(members, fields, kinds, bt, nbase, flags)) < 0)
        goto done;
    if (basicsize > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "stash_type: too many fields");
        goto done;
    }
    slots[k++] = (PyType_Slot){Py_tp_dealloc, (void *)stash_dealloc};
    slots[k++] = (PyType_Slot){Py_tp_new, (void *)stash_new};
    slots[k++] = (PyType_Slot){Py_tp_repr, (void *)stash_repr};
    slots[k++] = (PyType_Slot){Py_tp_richcompare, (void *)stash_richcompare};
    slots[k++] = (PyType_Slot){Py_tp_methods, stash_methods};
    slots[k++] = (PyType_Slot){Py_tp_hash, (flags & STASH_FREEZE) ? (void *)stash_hash
                                                                   : (void *)PyObject_HashNotImplemented};
    if (flags & STASH_FREEZE)
        slots[k++] = (PyType_Slot){Py_tp_setattro, (void *)stash_setattro_frozen};
    else if (has_compact(members))
        slots[k++] = (PyType_Slot){Py_tp_setattro, (void *)stash_setattro_compact};
    if (flags & STASH_GC) {
        slots[k++] = (PyType_Slot){Py_tp_traverse, (void *)stash_traverse};
        slots[k++] = (PyType_Slot){Py_tp_clear, (void *)stash_clear};
    }
    if (members[0].name != NULL)
        slots[k++] = (PyType_Slot){Py_tp_members, members};
    /* "Name(a, b=1)\n--\n\n": __text_signature__, for inspect.signature */
    if (signature != NULL)
        slots[k++] = (PyType_Slot){Py_tp_doc, (void *)signature};
    slots[k] = (PyType_Slot){0, NULL};
    spec = (PyType_Spec){
        .name = spec_name,
        .basicsize = (int)basicsize,
        .itemsize = 0,
        .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | ((flags & STASH_GC) ? Py_TPFLAGS_HAVE_GC : 0),
        .slots = slots,
    };
    if (bt != NULL && (bases = PyTuple_Pack(1, base)) == NULL)
        goto done;
    if ((type = PyType_FromSpecWithBases(&spec, bases)) == NULL)
        goto done;
    /* tp_name, which error messages show, is the class's own name, as a
     * class statement makes it. 3.11 and later copy the spec's name into
     * the type: shorten the copy in place. 3.10 points tp_name at the
     * spec's name: that buffer then lives as long as the process. */
    {
        PyTypeObject *tp = (PyTypeObject *)type;
        const char *dot = strrchr(tp->tp_name, '.');
        if (tp->tp_name == spec_name) {
            tp->tp_name = dot + 1;
            spec_name = NULL;  /* kept */
        }
        else if (dot != NULL) {
            memmove((char *)tp->tp_name, dot + 1, strlen(dot + 1) + 1);
        }
    }
    if (PyObject_SetAttr(type, str_layout, layout) < 0 ||
        PyObject_SetAttrString(type, "__qualname__", qualname) < 0)
        goto error;
    while (PyDict_Next(ns, &pos, &key, &value))
        if (PyObject_SetAttr(type, key, value) < 0)
            goto error;
    /* last: setting attributes may reset it */
    ((PyTypeObject *)type)->tp_vectorcall = stash_vectorcall;
    goto done;
error:
    Py_CLEAR(type);
done:
    PyMem_Free(members);
    PyMem_Free(spec_name);
    Py_XDECREF(defaults_tuple);
    Py_XDECREF(layout);
    Py_XDECREF(bases);
    return type;
}

int
stash_module_init(PyObject *Py_UNUSED(module))
{
    if (stash_missing != NULL)
        return 0;
    if ((stash_missing = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type)) == NULL ||
        (str_layout = PyUnicode_InternFromString("__stash_layout__")) == NULL ||
        (str_separator = PyUnicode_InternFromString(", ")) == NULL ||
        (str_dict = PyUnicode_InternFromString("__dict__")) == NULL ||
        (str_module = PyUnicode_InternFromString("__module__")) == NULL)
        return -1;
    return 0;
}
