/* Code identity: what a function, a method or a builtin contributes to a
 * key. The user's own functions count by their code (bytecode, constants,
 * names; not line numbers), their defaults and closures, and the user's
 * functions they call by name (HELPER_DEPTH levels); library functions
 * by module and qualified name. A code object's digest is computed once
 * and cached by identity. */
#include "keys_feed.h"

typedef struct {
    PyObject *code;             /* strong reference; NULL marks a free slot */
    CodeInfo info;
} CodeEntry;

static CodeEntry *code_table = NULL;
static size_t code_capacity = 0;    /* a power of two, or 0 */
static size_t code_count = 0;

static PyObject *lib_prefixes = NULL;       /* tuple of str, or NULL */

static int is_user_class(PyTypeObject *t);

/* A builtin function or method: its name, and its receiver (`"abc".upper`
 * is keyed with "abc"; `math.sqrt`'s receiver is its module) unless
 * `with_self` is 0: the caller feeds it then. */
int
feed_builtin(ds_hasher *h, PyObject *o, int with_self)
{
    int ret = -1;
    PyObject *qual = NULL, *self = NULL, *mod = NULL;
    PyCFunctionObject *cf = (PyCFunctionObject *)o;
    const char *name = cf->m_ml->ml_name;
    size_t len = strlen(name);

    /* Fast path for module functions (len, math.sqrt): the same bytes as
     * below without building __qualname__, which is then just the name. */
    if (cf->m_self != NULL && PyModule_Check(cf->m_self)
        && (cf->m_module == NULL || PyUnicode_Check(cf->m_module))) {
        int ascii = 1;
        for (size_t i = 0; i < len; i++)
            ascii &= (unsigned char)name[i] < 0x80;
        if (ascii) {
            Sink_u8(h->sink, KT_BUILTIN);
            if (feed_name(h, cf->m_module) < 0)
                return -1;
            feed_raw_bytes(h->sink, KT_STR, name, len);
            return feed_module(h, cf->m_self);
        }
    }
    mod = PyObject_GetAttr(o, s_module);
    if (mod == NULL)
        goto error;
    qual = PyObject_GetAttr(o, s_qualname);
    if (qual == NULL)
        goto error;
    Sink_u8(h->sink, KT_BUILTIN);
    if (feed_name(h, mod) < 0 || feed_name(h, qual) < 0)
        goto error;
    self = PyCFunction_GET_SELF(o);
    Py_XINCREF(self);
    if (self == NULL || !with_self)
        Sink_u8(h->sink, KT_NONE);
    else if (feed_object(h, self) < 0)     /* a module: its name */
        goto error;
    ret = 0;
error:
    Py_XDECREF(mod);
    Py_XDECREF(qual);
    Py_XDECREF(self);
    return ret;
}

/* A bound method: the function, then the receiver (its type only when it
 * cannot be hashed, recorded). */
int
feed_method_function(ds_hasher *h, PyObject *m, int with_code)
{
    PyObject *func = PyMethod_GET_FUNCTION(m);
    PyObject *self = PyMethod_GET_SELF(m);
    Sink_u8(h->sink, KT_METHOD);
    /* Its helpers include the methods it calls (self.other()). */
    PyTypeObject *owner = PyType_Check(self) ? (PyTypeObject *)self : Py_TYPE(self);
    if (PyFunction_Check(func))
        return feed_function(h, func, with_code, owner);
    return feed_object(h, func);
}

int
feed_method(ds_hasher *h, PyObject *m, int with_code)
{
    if (hasher_enter(h) < 0)
        return -1;
    int r = feed_method_function(h, m, with_code);
    if (r == 0)
        r = feed_object(h, PyMethod_GET_SELF(m));
    hasher_leave(h);
    return r;
}

static size_t
ptr_slot(const void *p)
{
    /* Lookup only: the address is never fed into a key. */
    uint64_t x = (uint64_t)(uintptr_t)p;
    x = (x >> 4) * UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(x >> 32);
}

static CodeEntry *
code_table_find(PyObject *code)
{
    if (code_table == NULL)
        return NULL;
    size_t i = ptr_slot(code) & (code_capacity - 1);
    while (code_table[i].code != NULL) {
        if (code_table[i].code == code)
            return &code_table[i];
        i = (i + 1) & (code_capacity - 1);
    }
    return NULL;
}

static void
code_table_clear(void)
{
    /* Detach first: releasing a code object may run arbitrary code
     * (weakref callbacks) that could reach the table. */
    CodeEntry *old = code_table;
    size_t cap = code_capacity;
    code_table = NULL;
    code_capacity = 0;
    code_count = 0;
    for (size_t i = 0; i < cap; i++) {
        if (old[i].code != NULL) {
            Py_DECREF(old[i].code);
            Py_DECREF(old[i].info.names);
        }
    }
    PyMem_Free(old);
}

static void
code_table_place(CodeEntry *table, size_t cap, PyObject *code, const CodeInfo *info)
{
    size_t i = ptr_slot(code) & (cap - 1);
    while (table[i].code != NULL)
        i = (i + 1) & (cap - 1);
    table[i].code = code;
    table[i].info = *info;
}

/* Stores a new reference to `code` and to info->names. */
static int
code_table_insert(PyObject *code, const CodeInfo *info)
{
    if (code_count + 1 >= CODE_TABLE_MAX)
        code_table_clear();
    if ((code_count + 1) * 2 > code_capacity) {
        size_t cap = code_capacity ? code_capacity * 2 : 256;
        CodeEntry *table = PyMem_Calloc(cap, sizeof *table);
        if (table == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (size_t i = 0; i < code_capacity; i++) {
            if (code_table[i].code != NULL)
                code_table_place(table, cap, code_table[i].code, &code_table[i].info);
        }
        PyMem_Free(code_table);
        code_table = table;
        code_capacity = cap;
    }
    Py_INCREF(code);
    Py_INCREF(info->names);
    code_table_place(code_table, code_capacity, code, info);
    code_count++;
    return 0;
}

/* 1 if `filename` is the user's own: not under a library prefix, not a
 * frozen module. */
static int
is_user_file(PyObject *filename)
{
    if (!PyUnicode_Check(filename))
        return 1;
    Py_ssize_t r = PyUnicode_Tailmatch(filename, s_frozen, 0, PY_SSIZE_T_MAX, -1);
    if (r != 0)
        return r < 0 ? -1 : 0;
    if (lib_prefixes != NULL) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(lib_prefixes); i++) {
            r = PyUnicode_Tailmatch(filename, PyTuple_GET_ITEM(lib_prefixes, i),
                                    0, PY_SSIZE_T_MAX, -1);
            if (r != 0)
                return r < 0 ? -1 : 0;
        }
    }
    return 1;
}

static PyObject *
code_attr(PyObject *code, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(code, name);
    if (v == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();          /* absent in this Python version */
        v = Py_NewRef(Py_None);
    }
    return v;
}

/* Adds to `names` (a list) the names of `code` not in it yet. */
static int
add_names(PyObject *names, PyObject *more)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(more); i++) {
        PyObject *n = PyTuple_GET_ITEM(more, i);
        int has = PySequence_Contains(names, n);
        if (has < 0 || (!has && PyList_Append(names, n) < 0))
            return -1;
    }
    return 0;
}

/* Opcode numbers differ between Python versions: read from the opcode
 * module once. -1 until then (or when absent). */
static int op_store_global = -1, op_delete_global = -1, op_extended_arg = -1;

static int
load_opcodes(void)
{
    if (op_extended_arg >= 0)
        return 0;
    PyObject *mod = PyImport_ImportModule("opcode");
    PyObject *map = mod ? PyObject_GetAttrString(mod, "opmap") : NULL;
    Py_XDECREF(mod);
    if (map == NULL)
        return -1;
    static const struct { const char *name; int *slot; } ops[] = {
        {"STORE_GLOBAL", &op_store_global}, {"DELETE_GLOBAL", &op_delete_global},
        {"EXTENDED_ARG", &op_extended_arg},
    };
    int rc = 0;
    for (size_t i = 0; i < sizeof ops / sizeof ops[0] && rc == 0; i++) {
        PyObject *v = PyMapping_GetItemString(map, ops[i].name);
        if (v == NULL) {
            rc = -1;
            break;
        }
        *ops[i].slot = (int)PyLong_AsLong(v);
        Py_DECREF(v);
        if (*ops[i].slot == -1 && PyErr_Occurred())
            rc = -1;
    }
    Py_DECREF(map);
    return rc;
}

/* Removes from `names` the globals `co` assigns or deletes: its bytecode's
 * STORE_GLOBAL and DELETE_GLOBAL arguments (indexes into co_names). */
static int
drop_stored_globals(PyObject *names, PyCodeObject *co, PyObject *bytecode)
{
    if (!PyBytes_Check(bytecode) || load_opcodes() < 0)
        return -1;
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(bytecode);
    Py_ssize_t n = PyBytes_GET_SIZE(bytecode);
    unsigned long arg = 0;
    for (Py_ssize_t i = 0; i + 1 < n; i += 2) {
        int op = b[i];
        arg = (arg << 8) | b[i + 1];
        if (op == op_extended_arg)
            continue;
        if ((op == op_store_global || op == op_delete_global)
            && arg < (unsigned long)PyTuple_GET_SIZE(co->co_names)) {
            PyObject *name = PyTuple_GET_ITEM(co->co_names, (Py_ssize_t)arg);
            Py_ssize_t at = PySequence_Index(names, name);
            if (at < 0)
                PyErr_Clear();
            else if (PySequence_DelItem(names, at) < 0)
                return -1;
        }
        arg = 0;
    }
    return 0;
}

/* The digest of a code object alone: bytecode, constants (nested code by
 * its own digest), names and signature counts. Not its line numbers, line
 * table or file name, so moving a function keeps its digest and editing
 * its body changes it. */
static int
code_compute(ds_hasher *h, PyObject *code, CodeInfo *out)
{
    PyCodeObject *co = (PyCodeObject *)code;
    PyObject *bytecode = NULL, *varnames = NULL, *freevars = NULL,
        *cellvars = NULL, *exctable = NULL, *qualname = NULL, *names = NULL;
    int ret = -1, entered = 0, pushed = 0;

    if (hasher_enter(h) < 0)
        goto error;
    entered = 1;
#if PY_VERSION_HEX >= 0x030B0000
    bytecode = PyCode_GetCode(co);      /* without adaptive specialisation */
#else
    bytecode = PyObject_GetAttr(code, s_co_code);
#endif
    if (bytecode == NULL
        || (varnames = code_attr(code, s_co_varnames)) == NULL
        || (freevars = code_attr(code, s_co_freevars)) == NULL
        || (cellvars = code_attr(code, s_co_cellvars)) == NULL
        || (exctable = code_attr(code, s_co_exceptiontable)) == NULL
        || (qualname = code_attr(code, s_co_qualname)) == NULL)
        goto error;
    if (hasher_push(h) < 0)
        goto error;
    pushed = 1;
    Sink *s = h->sink;
    Sink_u8(s, KT_CODE);
    if (feed_name(h, co->co_name) < 0 || feed_object(h, bytecode) < 0)
        goto error;
    s = h->sink;
    Sink_u64(s, (uint64_t)co->co_argcount);
    Sink_u64(s, (uint64_t)co->co_posonlyargcount);
    Sink_u64(s, (uint64_t)co->co_kwonlyargcount);
    Sink_u64(s, (uint64_t)co->co_flags);
    if (feed_object(h, co->co_consts) < 0 || feed_object(h, co->co_names) < 0
        || feed_object(h, varnames) < 0 || feed_object(h, freevars) < 0
        || feed_object(h, cellvars) < 0 || feed_object(h, exctable) < 0)
        goto error;
    Sink_digest(h->sink, out->digest);
    hasher_pop(h);
    pushed = 0;

    /* Names a call by name can go through: this code's and its nested
     * code's (lambdas, comprehensions, inner functions), less the globals
     * this code assigns (`global CALLS; CALLS += 1`): state the function
     * keeps, an effect of calling it, not an input. */
    names = PyList_New(0);
    if (names == NULL || add_names(names, co->co_names) < 0
        || drop_stored_globals(names, co, bytecode) < 0)
        goto error;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(co->co_consts); i++) {
        PyObject *c = PyTuple_GET_ITEM(co->co_consts, i);
        if (PyCode_Check(c)) {
            CodeInfo sub;
            if (code_info(h, c, &sub) < 0)
                goto error;
            int r = add_names(names, sub.names);
            Py_DECREF(sub.names);
            if (r < 0)
                goto error;
        }
    }
    out->names = PyList_AsTuple(names);
    if (out->names == NULL)
        goto error;
    out->is_user = is_user_file(co->co_filename);
    if (out->is_user < 0) {
        Py_CLEAR(out->names);
        goto error;
    }
    /* Lambdas, functions defined inside functions: their qualified names
     * are not unique, so their code always counts. */
    Py_ssize_t lt = -1;
    if (qualname != Py_None && PyUnicode_Check(qualname))
        lt = PyUnicode_FindChar(qualname, '<', 0, PyUnicode_GET_LENGTH(qualname), 1);
    else
        lt = PyUnicode_FindChar(co->co_name, '<', 0, PyUnicode_GET_LENGTH(co->co_name), 1);
    if (lt == -2) {
        Py_CLEAR(out->names);
        goto error;
    }
    out->unique = lt == -1;
    ret = 0;
error:
    if (pushed)
        hasher_pop(h);
    if (entered)
        hasher_leave(h);
    Py_XDECREF(bytecode);
    Py_XDECREF(varnames);
    Py_XDECREF(freevars);
    Py_XDECREF(cellvars);
    Py_XDECREF(exctable);
    Py_XDECREF(qualname);
    Py_XDECREF(names);
    return ret;
}

/* Fills `out` (a copy: out->names is a new reference) from the cache. */
int
code_info(ds_hasher *h, PyObject *code, CodeInfo *out)
{
    CodeEntry *e = code_table_find(code);
    if (e != NULL) {
        *out = e->info;
        Py_INCREF(out->names);
        return 0;
    }
    if (code_compute(h, code, out) < 0)
        return -1;
    if (code_table_insert(code, out) < 0) {
        Py_DECREF(out->names);
        return -1;
    }
    return 0;
}

int
feed_code(ds_hasher *h, PyObject *code)
{
    CodeInfo ci;
    if (code_info(h, code, &ci) < 0)
        return -1;
    Py_DECREF(ci.names);
    Sink_u8(h->sink, KT_CODE);
    Sink_write(h->sink, ci.digest, DS_DIGEST_SIZE);
    return 0;
}

/* The function a global name stands for, if it is one: a plain function,
 * or a wrapper exposing the function as __wrapped__ (functools.wraps,
 * lru_cache). A new reference, or NULL (with an exception only if fatal). */
static PyObject *
helper_function(PyObject *v)
{
    if (PyFunction_Check(v))
        return Py_NewRef(v);
    if (PyType_Check(v) || PyModule_Check(v) || PyCFunction_Check(v) || !PyCallable_Check(v))
        return NULL;
    PyObject *w = PyObject_GetAttr(v, s_wrapped);
    if (w == NULL) {
        if (!error_is_fatal())
            PyErr_Clear();
        return NULL;
    }
    if (!PyFunction_Check(w))
        Py_CLEAR(w);
    return w;
}

int
feed_defaults(ds_hasher *h, PyFunctionObject *f)
{
    if (feed_object(h, f->func_defaults ? f->func_defaults : Py_None) < 0)
        return -1;
    return feed_object(h, f->func_kwdefaults ? f->func_kwdefaults : Py_None);
}

/* The function `name` finds in the user classes of owner's MRO (a method,
 * or a static/class method's function): a new reference, or NULL (with an
 * exception only on error). Classes from C are skipped: no user code. */
static PyObject *
owner_lookup(PyTypeObject *owner, PyObject *name)
{
    PyObject *mro = owner->tp_mro;
    if (mro == NULL || !PyTuple_Check(mro))
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (!PyType_Check(base) || !(base->tp_flags & Py_TPFLAGS_HEAPTYPE)
            || base->tp_dict == NULL)
            continue;
        PyObject *v = PyDict_GetItemWithError(base->tp_dict, name);
        if (v == NULL) {
            if (PyErr_Occurred())
                return NULL;
            continue;
        }
        if (PyFunction_Check(v))
            return Py_NewRef(v);
        if (Py_IS_TYPE(v, &PyStaticMethod_Type) || Py_IS_TYPE(v, &PyClassMethod_Type)) {
            Py_INCREF(v);
            PyObject *fn = PyObject_GetAttrString(v, "__func__");
            Py_DECREF(v);
            if (fn == NULL) {
                if (!error_is_fatal())
                    PyErr_Clear();
                return NULL;
            }
            if (!PyFunction_Check(fn))
                Py_CLEAR(fn);
            return fn;
        }
        return NULL;            /* shadowed by something else */
    }
    return NULL;
}

/* A global the code reads that is not a function: data counts by value
 * (THRESH, a CONFIG dict); the user's classes by their code; modules,
 * builtins and library classes by nothing more than the name the code
 * already holds. Names starting with "@" are devstash's own runtime. */
static int
feed_global_value(ds_hasher *h, PyObject *name, PyObject *v)
{
    if (PyModule_Check(v) || PyCFunction_Check(v))
        return 0;
    if (PyUnicode_Check(name) && PyUnicode_GET_LENGTH(name) > 0
        && PyUnicode_READ_CHAR(name, 0) == '@')
        return 0;
    if (is_ignored_name(h, name))
        return 0;
    if (PyType_Check(v)) {
        int user = is_user_class((PyTypeObject *)v);
        if (user <= 0)
            return user;
        Sink_u8(h->sink, KT_GLOBAL_VALUE);
        if (feed_str(h->sink, KT_STR, name) < 0)
            return -1;
        return feed_class_code(h, (PyTypeObject *)v);
    }
    Sink_u8(h->sink, KT_GLOBAL_VALUE);
    if (feed_str(h->sink, KT_STR, name) < 0 || part_begin(h) < 0)
        return -1;
    if (feed_object(h, v) < 0) {
        part_abort(h);
        return -1;
    }
    return part_end(h, h->parts ? PyUnicode_FromFormat("global %S", name) : NULL);
}

/* One helper: its name, code digest, defaults and (depth > 1) its own
 * helpers. Steals the reference to `fn`. */
static int
feed_helper(ds_hasher *h, unsigned tag, PyObject *name, PyObject *fn, int depth,
            PyTypeObject *owner)
{
    PyFunctionObject *f = (PyFunctionObject *)fn;
    CodeInfo ci;
    int r = code_info(h, f->func_code, &ci);
    if (r == 0) {
        if (ci.is_user) {
            Sink_u8(h->sink, tag);
            r = feed_str(h->sink, KT_STR, name);
            if (r == 0)
                r = part_begin(h);
            if (r == 0) {
                Sink_write(h->sink, ci.digest, DS_DIGEST_SIZE);
                r = feed_defaults(h, f);
                if (r < 0)
                    part_abort(h);
                else
                    r = part_end(h, h->parts ? PyUnicode_FromFormat("code of %S", f->func_qualname) : NULL);
            }
            if (r == 0 && depth > 1)
                r = feed_helpers(h, f->func_globals, ci.names, depth - 1, owner);
        }
        Py_DECREF(ci.names);
    }
    Py_DECREF(fn);
    return r;
}

/* The user's own functions that `names` resolve to in `globals` and, for a
 * method, in its class (`owner`, or NULL), each by name, code digest and
 * defaults, and (depth > 1) the functions they call. A name in co_names
 * may be a global or an attribute: both lookups are made. */
int
feed_helpers(ds_hasher *h, PyObject *globals, PyObject *names, int depth,
             PyTypeObject *owner)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        PyObject *v = PyDict_Check(globals) ? PyDict_GetItemWithError(globals, name) : NULL;
        if (v != NULL) {
            Py_INCREF(v);
            PyObject *fn = helper_function(v);
            int r = 0;
            if (fn != NULL)
                r = feed_helper(h, KT_HELPER, name, fn, depth, NULL);
            else if (!PyErr_Occurred())
                r = feed_global_value(h, name, v);
            Py_DECREF(v);
            if (r < 0)
                return -1;
        }
        if (PyErr_Occurred())
            return -1;
        if (owner != NULL) {
            PyObject *fn = owner_lookup(owner, name);
            if (fn != NULL && feed_helper(h, KT_METHOD_HELPER, name, fn, depth, owner) < 0)
                return -1;
            if (PyErr_Occurred())
                return -1;
        }
    }
    Sink_u8(h->sink, KT_END);
    return 0;
}

/* A function: module and qualified name; its code (digest, defaults, and
 * the user's functions it calls) when it is the user's own and `with_code`,
 * or when its name is not unique; its closure's values always (they change
 * what it computes). */
int
feed_function(ds_hasher *h, PyObject *func, int with_code, PyTypeObject *owner)
{
    PyFunctionObject *f = (PyFunctionObject *)func;
    CodeInfo ci;
    int ret = -1, have_ci = 0;

    if (hasher_enter(h) < 0)
        return -1;
    if (code_info(h, f->func_code, &ci) < 0)
        goto error;
    have_ci = 1;
    int unique = ci.unique;
#if PY_VERSION_HEX >= 0x030B0000
    /* A wrapper renamed after what it wraps (functools.wraps). */
    PyObject *co_qualname = ((PyCodeObject *)f->func_code)->co_qualname;
    if (unique && f->func_qualname != co_qualname) {
        int eq = PyUnicode_Check(f->func_qualname)
            ? PyUnicode_Compare(f->func_qualname, co_qualname) : 1;
        if (eq == -1 && PyErr_Occurred())
            goto error;
        unique = eq == 0;
    }
#else
    if (unique && PyUnicode_Check(f->func_qualname)) {
        Py_ssize_t lt = PyUnicode_FindChar(f->func_qualname, '<', 0,
                                           PyUnicode_GET_LENGTH(f->func_qualname), 1);
        if (lt == -2)
            goto error;
        unique = lt == -1;
    }
#endif
    int user_code = with_code && ci.is_user;

    Sink_u8(h->sink, KT_FUNCTION);
    if (feed_module_name(h, f->func_module) < 0 || feed_name(h, f->func_qualname) < 0)
        goto error;
    if (user_code || !unique) {
        if (part_begin(h) < 0)
            goto error;
        Sink_u8(h->sink, KT_CODE);
        Sink_write(h->sink, ci.digest, DS_DIGEST_SIZE);
        if (feed_defaults(h, f) < 0) {
            part_abort(h);
            goto error;
        }
        if (part_end(h, h->parts ? PyUnicode_FromFormat("code of %S", f->func_qualname) : NULL) < 0)
            goto error;
        if (user_code) {
            if (feed_helpers(h, f->func_globals, ci.names, HELPER_DEPTH, owner) < 0)
                goto error;
        }
        else {
            Sink_u8(h->sink, KT_END);
        }
    }
    if (f->func_closure != NULL && PyTuple_Check(f->func_closure)) {
        Py_ssize_t n = PyTuple_GET_SIZE(f->func_closure);
        Sink_u8(h->sink, KT_CLOSURE);
        Sink_len(h->sink, (uint64_t)n);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *cell = PyTuple_GET_ITEM(f->func_closure, i);
            PyObject *v = PyCell_Check(cell) ? PyCell_GET(cell) : cell;
            if (v == NULL) {
                Sink_u8(h->sink, KT_EMPTY_CELL);
            }
            else if (v == func) {
                Sink_u8(h->sink, KT_SELF);      /* a recursive inner function */
            }
            else {
                Py_INCREF(v);
                int r = feed_object(h, v);
                Py_DECREF(v);
                if (r < 0)
                    goto error;
            }
        }
    }
    Sink_u8(h->sink, KT_END);
    ret = 0;
error:
    if (have_ci)
        Py_DECREF(ci.names);
    hasher_leave(h);
    return ret;
}

void
code_set_library_prefixes(PyObject *prefixes)
{
    Py_XSETREF(lib_prefixes, prefixes);
    /* Whether code is the user's own depends on the prefixes. */
    code_table_clear();
}

/* 1 if `t` is a class of the user's project: defined in Python (a heap
 * type) by code outside the library prefixes, judged by its first function. */
static int
is_user_class(PyTypeObject *t)
{
    if (!(t->tp_flags & Py_TPFLAGS_HEAPTYPE) || t->tp_dict == NULL)
        return 0;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(t->tp_dict, &pos, &k, &v)) {
        PyObject *fn = v;
        if (Py_IS_TYPE(v, &PyStaticMethod_Type) || Py_IS_TYPE(v, &PyClassMethod_Type)
            || Py_IS_TYPE(v, &PyProperty_Type))
            continue;           /* checked through a plain function, if any */
        if (PyFunction_Check(fn))
            return is_user_file(((PyCodeObject *)PyFunction_GET_CODE(fn))->co_filename);
    }
    return 0;
}

/* Class attributes that say where or how a class was defined, not what it
 * computes: moving a class must not change its key. And the caches Python
 * adds to a class as it is used (copyreg's __slotnames__ on the first
 * pickling, abc's _abc_impl): the class is the same before and after. */
static int
is_class_bookkeeping(PyObject *name)
{
    static const char *const skipped[] = {
        "__module__", "__qualname__", "__doc__", "__dict__", "__weakref__",
        "__firstlineno__", "__static_attributes__", "__annotations__",
        "__annotate__", "__orig_bases__", "__parameters__", "__slots__",
        "__slotnames__", "_abc_impl", NULL,
    };
    if (!PyUnicode_Check(name))
        return 0;
    for (int i = 0; skipped[i] != NULL; i++) {
        if (PyUnicode_CompareWithASCIIString(name, skipped[i]) == 0)
            return 1;
    }
    return 0;
}

/* One class attribute: functions (plain, static, class methods) by code
 * digest and defaults, properties by their accessors' code, nested classes
 * by their own code, data by value. */
static int
feed_class_attr(ds_hasher *h, PyObject *v)
{
    if (Py_IS_TYPE(v, &PyStaticMethod_Type) || Py_IS_TYPE(v, &PyClassMethod_Type)) {
        PyObject *fn = PyObject_GetAttrString(v, "__func__");
        if (fn == NULL)
            return -1;
        int r = feed_class_attr(h, fn);
        Py_DECREF(fn);
        return r;
    }
    if (Py_IS_TYPE(v, &PyProperty_Type)) {
        static const char *const accessors[] = {"fget", "fset", "fdel"};
        for (int i = 0; i < 3; i++) {
            PyObject *fn = PyObject_GetAttrString(v, accessors[i]);
            if (fn == NULL)
                return -1;
            int r = fn == Py_None ? (Sink_u8(h->sink, KT_NONE), 0) : feed_class_attr(h, fn);
            Py_DECREF(fn);
            if (r < 0)
                return -1;
        }
        return 0;
    }
    if (PyFunction_Check(v)) {
        CodeInfo ci;
        if (code_info(h, PyFunction_GET_CODE(v), &ci) < 0)
            return -1;
        Py_DECREF(ci.names);
        Sink_u8(h->sink, KT_CODE);
        Sink_write(h->sink, ci.digest, DS_DIGEST_SIZE);
        return feed_defaults(h, (PyFunctionObject *)v);
    }
    if (PyType_Check(v)) {
        int user = is_user_class((PyTypeObject *)v);
        if (user < 0)
            return -1;
        return user ? feed_class_code(h, (PyTypeObject *)v) : feed_type(h, (PyTypeObject *)v);
    }
    return feed_object(h, v);
}

int
feed_class_code(ds_hasher *h, PyTypeObject *t)
{
    int user = is_user_class(t);
    if (user <= 0)
        return user < 0 ? -1 : feed_entry_code(h, (PyObject *)t, s_init, 1);
    if (hasher_enter(h) < 0)
        return -1;
    int ret = -1;
    PyObject *items = PyDict_Items(t->tp_dict);     /* definition order */
    if (items == NULL)
        goto error;
    Sink_u8(h->sink, KT_CLASS);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *kv = PyList_GET_ITEM(items, i);
        PyObject *name = PyTuple_GET_ITEM(kv, 0);
        if (is_class_bookkeeping(name))
            continue;
        if (feed_name(h, name) < 0 || part_begin(h) < 0)
            goto error;
        if (feed_class_attr(h, PyTuple_GET_ITEM(kv, 1)) < 0) {
            part_abort(h);
            goto error;
        }
        PyObject *v = PyTuple_GET_ITEM(kv, 1);
        int code = PyFunction_Check(v) || Py_IS_TYPE(v, &PyProperty_Type)
            || Py_IS_TYPE(v, &PyStaticMethod_Type) || Py_IS_TYPE(v, &PyClassMethod_Type);
        if (part_end(h, h->parts ? PyUnicode_FromFormat("%s%s.%S", code ? "code of " : "class attribute ",
                                                        t->tp_name, name) : NULL) < 0)
            goto error;
    }
    Sink_u8(h->sink, KT_END);
    /* Its project bases count the same way; library bases by name. */
    PyObject *bases = t->tp_bases;
    for (Py_ssize_t i = 0; bases != NULL && i < PyTuple_GET_SIZE(bases); i++) {
        PyTypeObject *b = (PyTypeObject *)PyTuple_GET_ITEM(bases, i);
        if (b == &PyBaseObject_Type)
            continue;
        int r = is_user_class(b);
        if (r < 0 || (r ? feed_class_code(h, b) : feed_type(h, b)) < 0)
            goto error;
    }
    Sink_u8(h->sink, KT_END);
    ret = 0;
error:
    Py_XDECREF(items);
    hasher_leave(h);
    return ret;
}

/* The code of what calling a class or an instance runs, when it is a
 * function (a user's __init__ or __call__), or None. */
int
feed_entry_code(ds_hasher *h, PyObject *owner, PyObject *attr, int with_code)
{
    if (!with_code) {
        Sink_u8(h->sink, KT_NONE);
        return 0;
    }
    PyObject *fn = PyObject_GetAttr(owner, attr);
    if (fn == NULL) {
        if (error_is_fatal())
            return -1;
        PyErr_Clear();
    }
    int r = 0;
    if (fn != NULL && PyFunction_Check(fn))
        r = feed_function(h, fn, with_code, PyType_Check(owner) ? (PyTypeObject *)owner : NULL);
    else
        Sink_u8(h->sink, KT_NONE);
    Py_XDECREF(fn);
    return r;
}
