/* Keying a call: the callee's identity and code, its receiver, the
 * arguments and keywords by parameter name, the steps of a chain, and the
 * files named by paths among them. Each is a direct input (see
 * ds_hasher.direct_depth): one that could only be keyed by its type makes
 * the call uncacheable. The values themselves are fed by keys.c. */
#include "keys_feed.h"

int
keys_update_callee(ds_hasher *h, PyObject *callee, int with_code)
{
    ds_call_options o = {.with_code = with_code, .with_files = 0, .ignore = NULL};
    return feed_callee(h, callee, &o);
}

int
feed_direct(ds_hasher *h, PyObject *o)
{
    int saved = h->direct_depth;
    h->direct_depth = h->depth;
    int r = feed_object(h, o);
    h->direct_depth = saved;
    return r;
}

static int
names_contain(PyObject *names, PyObject *name)
{
    if (names == NULL || name == NULL || !PyUnicode_Check(name))
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        if (PyUnicode_Compare(PyTuple_GET_ITEM(names, i), name) == 0)
            return 1;
    }
    PyErr_Clear();
    return 0;
}

/* Whether `name` (a str, or NULL) is one of o->ignore's names. */
static int
is_ignored(const ds_call_options *o, PyObject *name)
{
    return names_contain(o->ignore, name);
}

int
is_ignored_name(ds_hasher *h, PyObject *name)
{
    return names_contain(h->ignore, name);
}

/* Says which input could not be keyed: "argument 2 (path): <reason>". The
 * errors that must reach the user are left as they are. */
static void
name_failed_input(const char *what, Py_ssize_t index, PyObject *name)
{
    if (error_is_fatal())
        return;
    PyObject *value = PyErr_GetRaisedException();
    PyObject *msg = value != NULL ? PyObject_Str(value) : NULL;
    if (msg == NULL) {
        PyErr_Clear();
        msg = PyUnicode_FromString("cannot be keyed");
    }
    if (msg != NULL) {
        if (index >= 0 && name != NULL)
            PyErr_Format(PyExc_ValueError, "%s %zd (%U): %U", what, index, name, msg);
        else if (index >= 0)
            PyErr_Format(PyExc_ValueError, "%s %zd: %U", what, index, msg);
        else if (name != NULL)
            PyErr_Format(PyExc_ValueError, "%s %U: %U", what, name, msg);
        else
            PyErr_Format(PyExc_ValueError, "%s: %U", what, msg);
        Py_DECREF(msg);
    }
    Py_XDECREF(value);
}

/* One argument of the call as a part of its own (see part_begin): its
 * value and, when files count, the file it names. -1 with the part
 * dropped, for the caller to say which argument failed. */
static int
feed_argument(ds_hasher *h, PyObject *value, const ds_call_options *o)
{
    if (part_begin(h) < 0)
        return -1;
    if (feed_direct(h, value) < 0 || (o->with_files && feed_path_identity(h, value) < 0)) {
        part_abort(h);
        return -1;
    }
    return 0;
}

/* The paths among the receiver's direct attributes (loader.file_path):
 * their files count. Objects with many attributes are left alone. */
static int
feed_receiver_files(ds_hasher *h, PyObject *self)
{
    PyObject *d = PyObject_GetAttr(self, s_dict);
    if (d == NULL) {
        if (error_is_fatal())
            return -1;
        PyErr_Clear();
        return 0;
    }
    int r = 0;
    if (PyDict_Check(d) && PyDict_GET_SIZE(d) <= 64) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (r == 0 && PyDict_Next(d, &pos, &k, &v)) {
            Py_INCREF(v);
            r = feed_path_identity(h, v);
            Py_DECREF(v);
        }
    }
    Py_DECREF(d);
    return r;
}

/* When recording: each of the receiver's attributes as a part of its own,
 * so that a miss can say which one changed. */
static int
record_attributes(ds_hasher *h, PyObject *self)
{
    PyObject *d = PyObject_GetAttr(self, s_dict);
    if (d == NULL) {
        PyErr_Clear();
        return 0;
    }
    int r = 0;
    if (PyDict_Check(d)) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (r == 0 && PyDict_Next(d, &pos, &k, &v)) {
            Py_INCREF(k);
            Py_INCREF(v);
            r = part_begin(h);
            if (r == 0 && feed_object(h, v) < 0) {
                part_abort(h);
                PyErr_Clear();              /* only an explanation depends on it */
                Sink_u8(h->sink, KT_UNHASHABLE);
            }
            else if (r == 0) {
                r = part_end(h, PyUnicode_FromFormat("receiver %s: attribute %S",
                                                     Py_TYPE(self)->tp_name, k));
            }
            Py_DECREF(k);
            Py_DECREF(v);
        }
    }
    Py_DECREF(d);
    return r;
}

/* A receiver (a bound method's self, a callable instance): a direct input,
 * unless ignore=self; with its paths' files. */
static int
feed_receiver(ds_hasher *h, PyObject *self, const ds_call_options *o)
{
    if (o->ignore != NULL) {
        PyObject *name = PyUnicode_FromString("self");
        if (name == NULL)
            return -1;
        int ignored = is_ignored(o, name);
        Py_DECREF(name);
        if (ignored) {
            Sink_u8(h->sink, KT_IGNORED);
            return 0;
        }
    }
    if (part_begin(h) < 0)
        return -1;
    if (feed_direct(h, self) < 0 || (o->with_files && feed_receiver_files(h, self) < 0)) {
        part_abort(h);
        name_failed_input("receiver", -1, NULL);
        return -1;
    }
    if (part_end(h, h->parts ? PyUnicode_FromFormat("receiver %s", Py_TYPE(self)->tp_name) : NULL) < 0)
        return -1;
    return h->parts != NULL ? record_attributes(h, self) : 0;
}

/* The parameter names the arguments of a call to `callee` bind to, when it
 * runs Python code: (code, how many leading parameters are taken already,
 * by self or cls). NULL when unknown (a builtin): then only keyword names
 * can be ignored. Borrowed. */
static PyCodeObject *
callee_code(PyObject *callee, Py_ssize_t *skip)
{
    *skip = 0;
    if (PyMethod_Check(callee)) {
        *skip = 1;
        callee = PyMethod_GET_FUNCTION(callee);
    }
    if (PyFunction_Check(callee))
        return (PyCodeObject *)PyFunction_GET_CODE(callee);
    return NULL;
}

/* The name of parameter `i` of `code` (borrowed from *varnames, which is
 * fetched on first use), or NULL when it has none (*args). */
static PyObject *
param_name(PyCodeObject *code, Py_ssize_t i, PyObject **varnames)
{
    if (i >= code->co_argcount)
        return NULL;
#if PY_VERSION_HEX >= 0x030B0000
    if (*varnames == NULL && (*varnames = PyCode_GetVarnames(code)) == NULL)
        return NULL;
#else
    if (*varnames == NULL && (*varnames = PyObject_GetAttr((PyObject *)code, s_co_varnames)) == NULL)
        return NULL;
#endif
    return i < PyTuple_GET_SIZE(*varnames) ? PyTuple_GET_ITEM(*varnames, i) : NULL;
}

/* The callee's identity: what it runs (see keys_update_callee) and its
 * receiver, a direct input. */
int
feed_callee(ds_hasher *h, PyObject *callee, const ds_call_options *o)
{
    int with_code = o->with_code;
    Sink_u8(h->sink, KT_CALLEE);
    if (PyFunction_Check(callee))
        return feed_function(h, callee, with_code, NULL);
    if (PyMethod_Check(callee)) {
        PyObject *self = PyMethod_GET_SELF(callee);
        if (hasher_enter(h) < 0)
            return -1;
        int r = feed_method_function(h, callee, with_code);
        if (r == 0)
            r = PyType_Check(self) ? feed_object(h, self) : feed_receiver(h, self, o);
        hasher_leave(h);
        return r;
    }
    if (PyCFunction_Check(callee)) {
        PyObject *self = PyCFunction_GET_SELF(callee);
        if (self == NULL || PyModule_Check(self) || PyType_Check(self))
            return feed_builtin(h, callee, 1);
        /* A method of a built-in type (xs.sort): its receiver is an input. */
        if (feed_builtin(h, callee, 0) < 0)
            return -1;
        return feed_receiver(h, self, o);
    }
    if (PyType_Check(callee)) {
        if (feed_type(h, (PyTypeObject *)callee) < 0)
            return -1;
        if (!with_code) {
            Sink_u8(h->sink, KT_NONE);
            return 0;
        }
        /* The class's code, all of it: calling it runs __init__ now and
         * hands back an object whose methods a chain goes on to call. */
        return feed_class_code(h, (PyTypeObject *)callee);
    }
    /* A callable instance: its type, its __call__, and the instance. */
    Sink_u8(h->sink, KT_INSTANCE);
    if (feed_type(h, Py_TYPE(callee)) < 0
        || feed_entry_code(h, (PyObject *)Py_TYPE(callee), s_call, with_code) < 0)
        return -1;
    return feed_receiver(h, callee, o);
}

/* Keyword arguments by name (their order in the call does not matter);
 * an ignored one counts by its name only. */
static int
feed_keywords(ds_hasher *h, PyObject *const *values, PyObject *kwnames,
              const ds_call_options *o)
{
    Py_ssize_t nk = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    Py_ssize_t small[16];
    Py_ssize_t *order = small;
    int ret = -1;

    if (nk > 16) {
        order = PyMem_Malloc((size_t)nk * sizeof *order);
        if (order == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    /* Insertion sort: calls have few. */
    for (Py_ssize_t i = 0; i < nk; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (!PyUnicode_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "keyword names must be str");
            goto error;
        }
        Py_ssize_t j = i;
        while (j > 0) {
            int c = PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, order[j - 1]), name);
            if (c == -1 && PyErr_Occurred())
                goto error;
            if (c <= 0)
                break;
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    Sink_u8(h->sink, KT_KWARGS);
    Sink_len(h->sink, (uint64_t)nk);
    for (Py_ssize_t i = 0; i < nk; i++) {
        Py_ssize_t k = order[i];
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        if (feed_str(h->sink, KT_STR, name) < 0)
            goto error;
        if (is_ignored(o, name)) {
            Sink_u8(h->sink, KT_IGNORED);
            continue;
        }
        if (feed_argument(h, values[k], o) < 0) {
            name_failed_input("keyword argument", -1, name);
            goto error;
        }
        if (part_end(h, h->parts ? PyUnicode_FromFormat("keyword argument %U", name) : NULL) < 0)
            goto error;
    }
    ret = 0;
error:
    if (order != small)
        PyMem_Free(order);
    return ret;
}

int
keys_update_call(ds_hasher *h, PyObject *callee, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames, const ds_call_options *o)
{
    h->ignore = o->ignore;
    if (feed_callee(h, callee, o) < 0)
        return -1;
    Py_ssize_t skip;
    PyCodeObject *code = callee_code(callee, &skip);
    PyObject *varnames = NULL;
    int ret = -1;
    Sink_u8(h->sink, KT_ARGS);
    Sink_len(h->sink, (uint64_t)nargs);
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyObject *name = NULL;
        if (code != NULL && o->ignore != NULL && (name = param_name(code, i + skip, &varnames)) == NULL
            && PyErr_Occurred())
            goto error;
        if (is_ignored(o, name)) {
            Sink_u8(h->sink, KT_IGNORED);
            continue;
        }
        if (feed_argument(h, args[i], o) < 0) {
            if (code != NULL && name == NULL && !error_is_fatal()) {
                PyObject *exc = PyErr_GetRaisedException();
                name = param_name(code, i + skip, &varnames);
                PyErr_Clear();
                PyErr_SetRaisedException(exc);
            }
            name_failed_input("argument", i + 1, name);
            goto error;
        }
        if (part_end(h, h->parts ? PyUnicode_FromFormat("argument %zd", i + 1) : NULL) < 0)
            goto error;
    }
    ret = feed_keywords(h, args + nargs, kwnames, o);
error:
    Py_XDECREF(varnames);
    return ret;
}

/* When recording parts: each step of a chain as a part of its own,
 * labelled by the call it makes ("arguments of score()"). */
static int
record_chain_steps(ds_hasher *h, PyObject *root, PyObject *steps)
{
    PyObject *name = PyObject_GetAttrString(root, "__name__");
    if (name == NULL) {
        PyErr_Clear();
        name = PyUnicode_FromString("the first call");
        if (name == NULL)
            return -1;
    }
    int r = 0;
    for (Py_ssize_t i = 0; r == 0 && i < PyTuple_GET_SIZE(steps); i++) {
        PyObject *step = PyTuple_GET_ITEM(steps, i);
        if (!PyTuple_Check(step) || PyTuple_GET_SIZE(step) < 2 || !PyUnicode_Check(PyTuple_GET_ITEM(step, 0)))
            continue;
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(step, 0), "a") == 0) {
            Py_SETREF(name, Py_NewRef(PyTuple_GET_ITEM(step, 1)));
            continue;
        }
        if ((r = part_begin(h)) < 0)
            break;
        if ((r = feed_object(h, step)) < 0) {
            part_abort(h);
            break;
        }
        r = part_end(h, PyUnicode_FromFormat("arguments of %S()", name));
    }
    Py_DECREF(name);
    return r;
}

int
keys_update_chain(ds_hasher *h, PyObject *root, PyObject *steps, const ds_call_options *o)
{
    h->ignore = o->ignore;
    if (keys_update_callee(h, root, o->with_code) < 0)
        return -1;
    int r = h->parts != NULL && PyTuple_Check(steps) ? record_chain_steps(h, root, steps)
                                                     : feed_object(h, steps);
    /* The files a chain's constructor is given: PyPDFLoader("r.pdf").load() */
    if (r == 0 && o->with_files && PyTuple_Check(steps) && PyTuple_GET_SIZE(steps) > 0) {
        PyObject *first = PyTuple_GET_ITEM(steps, 0);
        if (PyTuple_Check(first) && PyTuple_GET_SIZE(first) == 3)
            r = keys_update_paths(h, PyTuple_GET_ITEM(first, 1), PyTuple_GET_ITEM(first, 2));
    }
    return r;
}

int
keys_update_paths(ds_hasher *h, PyObject *args, PyObject *kwargs)
{
    for (Py_ssize_t i = 0; PyTuple_Check(args) && i < PyTuple_GET_SIZE(args); i++) {
        if (feed_path_identity(h, PyTuple_GET_ITEM(args, i)) < 0)
            return -1;
    }
    if (kwargs != NULL && PyDict_Check(kwargs)) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(kwargs, &pos, &k, &v)) {
            Py_INCREF(v);
            int r = feed_path_identity(h, v);
            Py_DECREF(v);
            if (r < 0)
                return -1;
        }
    }
    return 0;
}
