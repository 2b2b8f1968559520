/* The runtime object a rewritten module calls (see runtime.h).
 *
 * rt.call() is the hit path: hash the callee and arguments, look the key up
 * in a reused read transaction, unpickle straight from the map. No Python
 * code runs on a hit; Python is called back only on rare events, through
 * methods the Python subclass (devstash/_runtime.py) defines:
 *   _unhashable(site, names)   arguments keyed by their type only
 *   _uncacheable(site, exc)    arguments that cannot be keyed: not cached
 *   _unpicklable(site, exc)    a result that cannot be pickled: not stored
 *   _unreadable(site, exc)     a stored value that cannot be loaded: recomputed
 *   _store_failed(site, exc)   the store failed: the run goes on uncached
 *   _event(kind, site, detail) hits, misses and stores, when `verbose` is set
 */
#include "runtime.h"
#include "buffer.h"
#include "claims.h"
#include "keys.h"
#include "options.h"
#include "store.h"

#include <errno.h>
#include <marshal.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    double ttl;
    int flags;
    int extra;              /* the key also takes self._site_extra(site) */
    ds_call_options key;    /* from the marker: nocode, nofiles, ignore= */
} site_info;

typedef struct {
    PyObject_HEAD
    PyObject *store;        /* a Store, or None when caching is off */
    PyObject *filename;
    PyObject *sites;        /* tuple of (line, col, ttl, flags, kind, label, ignore) */
    PyObject *effects_type; /* the class of stored values that carry a call's
                               effects (devstash/_effects.py), or NULL */
    site_info *info;
    Py_ssize_t nsites;
    ds_hasher *hasher;
    int hashing;            /* hasher in use: a __reduce__ that calls a marked
                               function re-enters; it gets a hasher of its own */
    int claims_fd;          /* see claims.h; -1 when none */
    pid_t claims_pid;       /* process that opened claims_fd: reopen after fork */
    double wait_seconds;    /* longest wait for another process's result */
    int refresh_all;        /* DEVSTASH_REFRESH: recompute every marked value */
    int verbose;            /* call _event for every hit, miss and store */
    const char *miss_why;   /* why the miss _run_call computes happened */
    long long hits, misses, stores;
    double saved;           /* compute seconds of the values stored this run */
} RuntimeObject;

/* Key domains: a call, a chain and a plain expression never share a key. */
static const char KEY_CALL[] = "devstash/1/call";
static const char KEY_CHAIN[] = "devstash/1/chain";
static const char KEY_EXPR[] = "devstash/1/expr";

/* _pickle, imported on first use: most runs that import devstash never
 * load or store anything. */
static PyObject *pickle_loads, *pickle_dumps, *buffers_kwnames, *dumps_kwnames, *protocol_5;

static int
pickle_ready(void)
{
    if (pickle_loads != NULL)
        return 0;
    PyObject *mod = PyImport_ImportModule("_pickle");
    if (mod == NULL)
        return -1;
    pickle_loads = PyObject_GetAttrString(mod, "loads");
    pickle_dumps = PyObject_GetAttrString(mod, "dumps");
    Py_DECREF(mod);
    buffers_kwnames = Py_BuildValue("(s)", "buffers");
    dumps_kwnames = Py_BuildValue("(s)", "buffer_callback");
    protocol_5 = PyLong_FromLong(5);
    if (!pickle_loads || !pickle_dumps || !buffers_kwnames || !dumps_kwnames || !protocol_5) {
        Py_CLEAR(pickle_loads);
        return -1;
    }
    return 0;
}

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static StoreObject *
Runtime_store(RuntimeObject *self)
{
    if (self->store == NULL || !Py_IS_TYPE(self->store, &Store_Type))
        return NULL;
    return (StoreObject *)self->store;
}

/* Calls self.<method>(site, arg) for a rare event, keeping any exception
 * that is pending. A failing callback is reported as unraisable: policy
 * code must never break the user's script. */
static void
Runtime_notify(RuntimeObject *self, const char *method, Py_ssize_t site, PyObject *arg)
{
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *r = PyObject_CallMethod((PyObject *)self, method, "nO", site, arg ? arg : Py_None);
    if (r == NULL)
        PyErr_WriteUnraisable((PyObject *)self);
    Py_XDECREF(r);
    PyErr_SetRaisedException(exc);
}

/* Same, for the exception currently set, which is cleared. */
static void
Runtime_notify_error(RuntimeObject *self, const char *method, Py_ssize_t site)
{
    PyObject *exc = PyErr_GetRaisedException();   /* its traceback attached */
    Runtime_notify(self, method, site, exc);
    Py_XDECREF(exc);
}

static void
Runtime_event(RuntimeObject *self, const char *kind, Py_ssize_t site, const char *detail)
{
    if (!self->verbose)
        return;
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *r = PyObject_CallMethod((PyObject *)self, "_event", "sns", kind, site, detail);
    if (r == NULL)
        PyErr_WriteUnraisable((PyObject *)self);
    Py_XDECREF(r);
    PyErr_SetRaisedException(exc);
}

/* Checks a method's argument count (min..max; max < 0: no limit, usage
 * says how to call it) and reads args[0], the call site index. */
static int
Runtime_site(RuntimeObject *self, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t min,
             Py_ssize_t max, const char *usage, Py_ssize_t *site)
{
    if (nargs < min || (max >= 0 && nargs > max)) {
        PyErr_Format(PyExc_TypeError, "devstash runtime: %s", usage);
        return -1;
    }
    Py_ssize_t i = PyLong_AsSsize_t(args[0]);
    if (i == -1 && PyErr_Occurred())
        return -1;
    if (i < 0 || i >= self->nsites) {
        PyErr_Format(PyExc_IndexError, "devstash: no call site %zd in %U", i, self->filename);
        return -1;
    }
    *site = i;
    return 0;
}

/* A hasher for one key: the runtime's own, or a fresh one when the own one
 * is busy (hashing an argument ran user code that called a marked function).
 * NULL with MemoryError. Pair with Runtime_key_end. */
static ds_hasher *
Runtime_key_begin(RuntimeObject *self, const char *domain, size_t len)
{
    ds_hasher *h = self->hasher;
    if (self->hashing) {
        if ((h = keys_new()) == NULL)
            return NULL;
    }
    else
        self->hashing = 1;
    keys_reset(h);
    keys_update_bytes(h, domain, len);
    return h;
}

static void
Runtime_key_end(RuntimeObject *self, ds_hasher *h)
{
    if (h == self->hasher)
        self->hashing = 0;
    else
        keys_free(h);
}

/* After a key was fed: reports substituted types, writes the digest. */
static void
Runtime_finish_key(RuntimeObject *self, ds_hasher *h, Py_ssize_t site,
                   unsigned char key[DS_DIGEST_SIZE])
{
    PyObject *names = keys_unhashable(h);
    if (names != NULL && PyList_GET_SIZE(names) > 0)
        Runtime_notify(self, "_unhashable", site, names);
    keys_digest(h, key);
}

/* Ends a key that `rc` (0, or -1 with an exception) says was fed or not.
 * 0: key written; 1: the inputs cannot be keyed (reported to the policy:
 * compute without caching); -1: an error that must reach the user. */
static int
Runtime_key_done(RuntimeObject *self, ds_hasher *h, Py_ssize_t site, int rc,
                 unsigned char key[DS_DIGEST_SIZE])
{
    if (rc == 0)
        Runtime_finish_key(self, h, site, key);
    Runtime_key_end(self, h);
    if (rc == 0)
        return 0;
    if (PyErr_ExceptionMatches(PyExc_MemoryError) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return -1;
    Runtime_notify_error(self, "_uncacheable", site);
    return 1;
}

/* Inputs that only the policy knows a site reads (the global random
 * generators' state, once a call there was seen to advance them): the value
 * self._site_extra(site) returns. 0, or -1 with an exception. */
static int
Runtime_feed_extra(RuntimeObject *self, ds_hasher *h, Py_ssize_t site)
{
    PyObject *extra = PyObject_CallMethod((PyObject *)self, "_site_extra", "n", site);
    if (extra == NULL)
        return -1;
    int rc = keys_update_object(h, extra);
    Py_DECREF(extra);
    return rc;
}

/* The key of func(*args, **kwargs) at site: the callee's identity (with its
 * code unless the marker says nocode) and the arguments. As Runtime_key_done. */
static int
Runtime_call_key(RuntimeObject *self, Py_ssize_t site, PyObject *func, PyObject *const *args,
                 Py_ssize_t nargs, PyObject *kwnames, unsigned char key[DS_DIGEST_SIZE])
{
    ds_hasher *h = Runtime_key_begin(self, KEY_CALL, sizeof KEY_CALL);
    if (h == NULL)
        return -1;
    int rc = keys_update_call(h, func, args, nargs, kwnames, &self->info[site].key);
    if (rc == 0 && self->info[site].extra)
        rc = Runtime_feed_extra(self, h, site);
    return Runtime_key_done(self, h, site, rc, key);
}

/* ---- load and save -------------------------------------------------------- */

/* Values made only of exact built-in types (numbers, str, bytes, and
 * tuples, lists, dicts, sets of them) are stored with marshal: loading them
 * needs no pickle module, whose import costs milliseconds at start-up, and
 * is faster. Everything else is pickled with protocol 5. A pickle always
 * starts with its PROTO opcode 0x80, which starts no marshal stream, so the
 * first byte says which one a stored value is. */
#define PICKLE_PROTO_OPCODE 0x80

static int
marshal_safe(PyObject *v, int depth)
{
    if (depth > 64)
        return 0;
    if (v == Py_None || v == Py_Ellipsis || PyBool_Check(v))
        return 1;
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyLong_Type || t == &PyFloat_Type || t == &PyComplex_Type ||
        t == &PyUnicode_Type || t == &PyBytes_Type)
        return 1;
    if (t == &PyTuple_Type || t == &PyList_Type) {
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(v); i++)
            if (!marshal_safe(PySequence_Fast_GET_ITEM(v, i), depth + 1))
                return 0;
        return 1;
    }
    if (t == &PyDict_Type) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(v, &pos, &key, &value))
            if (!marshal_safe(key, depth + 1) || !marshal_safe(value, depth + 1))
                return 0;
        return 1;
    }
    if (t == &PySet_Type || t == &PyFrozenSet_Type) {
        PyObject *it = PyObject_GetIter(v), *item;
        int ok = it != NULL;
        while (ok && (item = PyIter_Next(it)) != NULL) {
            ok = marshal_safe(item, depth + 1);
            Py_DECREF(item);
        }
        Py_XDECREF(it);
        if (PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        return ok;
    }
    return 0;
}

/* Unpickles a record read from the map. Buffers are copied once into
 * bytearrays (the map is only valid inside the read transaction). */
static PyObject *
Runtime_unpickle(const ds_record *rec)
{
    PyObject *view = NULL, *buffers = NULL, *value = NULL;
    int pickled = rec->pickle_len > 0 && (unsigned char)rec->pickle[0] == PICKLE_PROTO_OPCODE;
    if (!pickled && rec->nbuffers == 0)
        return PyMarshal_ReadObjectFromString(rec->pickle, (Py_ssize_t)rec->pickle_len);
    if (pickle_ready() < 0)
        return NULL;
    view = PyMemoryView_FromMemory((char *)rec->pickle, (Py_ssize_t)rec->pickle_len, PyBUF_READ);
    if (view == NULL)
        return NULL;
    if (rec->nbuffers == 0) {
        value = PyObject_CallOneArg(pickle_loads, view);
    }
    else {
        /* Copied out of the map, the checksum verified on the way. */
        if ((buffers = store_record_copy_buffers(rec)) == NULL)
            goto done;
        PyObject *argv[2] = {view, buffers};
        value = PyObject_Vectorcall(pickle_loads, argv, 1, buffers_kwnames);
    }
done:
    /* The view points into the map: make sure nothing can use it later. */
    if (Py_REFCNT(view) > 1) {
        PyObject *exc = PyErr_GetRaisedException();
        PyObject *r = PyObject_CallMethod(view, "release", NULL);
        if (r == NULL)
            PyErr_Clear();
        Py_XDECREF(r);
        PyErr_SetRaisedException(exc);
    }
    Py_DECREF(view);
    Py_XDECREF(buffers);
    return value;
}

typedef enum { LOAD_HIT, LOAD_MISS, LOAD_ERROR } load_result;

/* Looks key up for site. On a hit *value is a new reference. On a miss
 * *why says why. LOAD_ERROR only for errors that must reach the user
 * (MemoryError, KeyboardInterrupt); store problems are reported and turn
 * into misses. */
static load_result
Runtime_load(RuntimeObject *self, Py_ssize_t site, const unsigned char key[DS_DIGEST_SIZE],
             PyObject **value, const char **why)
{
    StoreObject *store = Runtime_store(self);
    *value = NULL;
    if (store == NULL) {
        *why = "caching is off";
        return LOAD_MISS;
    }
    if (self->refresh_all || (self->info[site].flags & DS_OPT_REFRESH)) {
        *why = "refresh requested";
        return LOAD_MISS;
    }
    ds_record rec;
    if (store_read_begin(store) < 0) {
        Runtime_notify_error(self, "_store_failed", site);
        *why = "store unavailable";
        return LOAD_MISS;
    }
    int found = store_lookup(store, key, &rec);
    if (found == DS_LOOKUP_DAMAGED) {
        store_read_end(store);
        Runtime_notify_error(self, "_unreadable", site);
        *why = "entry damaged";
        return LOAD_MISS;
    }
    if (found < 0) {
        store_read_end(store);
        Runtime_notify_error(self, "_store_failed", site);
        *why = "store unavailable";
        return LOAD_MISS;
    }
    if (found == 0) {
        store_read_end(store);
        *why = "new arguments";
        return LOAD_MISS;
    }
    double t = now();
    double ttl = self->info[site].ttl;
    /* Created in the future (stored while the clock was ahead): how old it
     * is cannot be told, so it counts as expired. */
    if (ttl > 0 && (t - rec.created > ttl || rec.created > t)) {
        store_read_end(store);
        *why = "ttl expired";
        return LOAD_MISS;
    }
    PyObject *v = Runtime_unpickle(&rec);
    store_read_end(store);
    if (v == NULL) {
        if (PyErr_ExceptionMatches(PyExc_MemoryError) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
            return LOAD_ERROR;
        Runtime_notify_error(self, "_unreadable", site);
        *why = "entry unreadable";
        return LOAD_MISS;
    }
    if (store_note_hit(store, key, t) < 0)
        PyErr_Clear();   /* a lost hit count is not worth failing a hit */
    self->hits++;
    *value = v;
    return LOAD_HIT;
}

/* Pickles value and writes it under key. Returns 0 when stored, 1 when not
 * (reported to the policy), never fails: the user keeps the value. */
static int
Runtime_save(RuntimeObject *self, Py_ssize_t site, const unsigned char key[DS_DIGEST_SIZE],
             PyObject *value, PyObject *callee_name, double seconds)
{
    StoreObject *store = Runtime_store(self);
    PyObject *buffers = NULL, *append = NULL, *pickled = NULL, *site_str = NULL;
    int rc = 1;
    if (store == NULL)
        return 1;
    if ((buffers = PyList_New(0)) == NULL)
        goto failed;
    if (marshal_safe(value, 0)) {
        pickled = PyMarshal_WriteObjectToString(value, Py_MARSHAL_VERSION);
        if (pickled == NULL)
            PyErr_Clear();   /* too large for marshal: pickle it */
    }
    if (pickled == NULL) {
        if (pickle_ready() < 0 || (append = PyObject_GetAttrString(buffers, "append")) == NULL)
            goto failed;
        PyObject *argv[3] = {value, protocol_5, append};
        pickled = PyObject_Vectorcall(pickle_dumps, argv, 2, dumps_kwnames);
    }
    if (pickled == NULL) {
        if (PyErr_ExceptionMatches(PyExc_MemoryError) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
            goto failed;
        Runtime_notify_error(self, "_unpicklable", site);
        goto done;
    }
    PyObject *site_tuple = PyTuple_GET_ITEM(self->sites, site);
    site_str = PyUnicode_FromFormat("%U:%S", self->filename, PyTuple_GET_ITEM(site_tuple, 0));
    if (site_str == NULL)
        goto failed;
    const char *site_c = PyUnicode_AsUTF8(site_str);
    const char *callee_c = callee_name != NULL ? PyUnicode_AsUTF8(callee_name) : "";
    if (site_c == NULL || callee_c == NULL)
        goto failed;
    ds_entry entry = {
        .created = now(),
        .ttl = self->info[site].ttl,
        .compute_seconds = seconds,
        .pickle = PyBytes_AS_STRING(pickled),
        .pickle_len = (size_t)PyBytes_GET_SIZE(pickled),
        .buffers = PyList_GET_SIZE(buffers) ? buffers : NULL,
        .callee = callee_c,
        .site = site_c,
    };
    if (store_write(store, key, &entry) < 0) {
        Runtime_notify_error(self, "_store_failed", site);
        goto done;
    }
    self->stores++;
    self->saved += seconds;
    Runtime_event(self, "store", site, "");
    rc = 0;
    goto done;
failed:
    /* Out of memory or interrupted while pickling: drop the value, keep the
     * exception for the caller to decide. */
    Runtime_notify_error(self, "_store_failed", site);
done:
    Py_XDECREF(buffers);
    Py_XDECREF(append);
    Py_XDECREF(pickled);
    Py_XDECREF(site_str);
    return rc;
}

/* "module.qualname" of a callee, for listings; NULL (no error) if none. */
static PyObject *
callee_name(PyObject *callee)
{
    PyObject *target = callee;
    if (PyMethod_Check(callee))
        target = PyMethod_GET_FUNCTION(callee);
    PyObject *qual = PyObject_GetAttrString(target, "__qualname__");
    if (qual == NULL || !PyUnicode_Check(qual)) {
        PyErr_Clear();
        Py_XDECREF(qual);
        qual = PyObject_GetAttrString((PyObject *)Py_TYPE(target), "__qualname__");
        if (qual == NULL) {
            PyErr_Clear();
            return NULL;
        }
    }
    PyObject *mod = PyObject_GetAttrString(target, "__module__");
    PyObject *name;
    if (mod != NULL && PyUnicode_Check(mod))
        name = PyUnicode_FromFormat("%U.%U", mod, qual);
    else {
        PyErr_Clear();
        name = Py_NewRef(qual);
    }
    Py_XDECREF(mod);
    Py_DECREF(qual);
    if (name == NULL)
        PyErr_Clear();
    return name;
}

/* ---- waiting for another process's result ------------------------------- */

/* The claims fd for this process, opened on first use (and again in a
 * forked child: the parent's open file description, and so its claims, must
 * not be shared). -1 when claims cannot be used: then nobody waits. */
static int
Runtime_claims_fd(RuntimeObject *self)
{
    pid_t pid = getpid();
    if (self->claims_pid == pid)
        return self->claims_fd;
    if (self->claims_fd >= 0)
        close(self->claims_fd);   /* the parent keeps its own descriptor */
    self->claims_fd = -1;
    self->claims_pid = pid;
    PyObject *path = self->store ? PyObject_GetAttrString(self->store, "path") : NULL;
    const char *folder = path != NULL && PyUnicode_Check(path) ? PyUnicode_AsUTF8(path) : NULL;
    if (folder != NULL)
        self->claims_fd = claims_open(folder);
    Py_XDECREF(path);
    PyErr_Clear();
    return self->claims_fd;
}

/* Claims key before a miss computes it. While another process holds the
 * claim, waits (GIL released) for its value, up to wait_seconds; then
 * computes anyway. LOAD_HIT: the value arrived (*value); LOAD_MISS: compute
 * (*claimed: whether we hold the claim, to release after storing);
 * LOAD_ERROR: interrupted by a signal while waiting. */
static load_result
Runtime_claim(RuntimeObject *self, Py_ssize_t site, const unsigned char key[DS_DIGEST_SIZE],
              PyObject **value, int *claimed)
{
    const char *why;
    double waited = 0, pause = 0.001;
    int fd = Runtime_claims_fd(self);
    *claimed = 0;
    *value = NULL;
    if (fd < 0 || self->refresh_all || (self->info[site].flags & DS_OPT_REFRESH))
        return LOAD_MISS;
    for (;;) {
        int r = claims_try(fd, key);
        if (r < 0)
            return LOAD_MISS;
        if (r == 1) {
            /* The holder may have stored and released just before we
             * claimed: look once more, so the value is not computed twice. */
            *claimed = 1;
            load_result again = Runtime_load(self, site, key, value, &why);
            if (again != LOAD_MISS) {
                claims_release(fd, key);
                *claimed = 0;
            }
            return again;
        }
        if (waited >= self->wait_seconds)
            return LOAD_MISS;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(pause * 1e9)};
        Py_BEGIN_ALLOW_THREADS
        nanosleep(&ts, NULL);
        Py_END_ALLOW_THREADS
        waited += pause;
        pause = pause * 2 > 0.05 ? 0.05 : pause * 2;
        if (PyErr_CheckSignals() < 0)
            return LOAD_ERROR;
        load_result done = Runtime_load(self, site, key, value, &why);
        if (done != LOAD_MISS)
            return done;
    }
}

/* ---- rt.call: the hit path ----------------------------------------------- */

/* self.<method>(site, first, func, args, kwargs): the Python side's part of
 * a call (a miss computes there, so it can see what the call changed; a hit
 * whose value carries effects restores them there). Steals `first`. */
static PyObject *
Runtime_policy_call_obj(RuntimeObject *self, const char *method, Py_ssize_t site, PyObject *first,
                        PyObject *func, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *res = NULL, *name = NULL, *site_obj = NULL, *pos = NULL, *kw = NULL;
    if (first == NULL)
        return NULL;
    if ((name = PyUnicode_FromString(method)) == NULL
        || (site_obj = PyLong_FromSsize_t(site)) == NULL
        || (pos = PyTuple_New(nargs)) == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SET_ITEM(pos, i, Py_NewRef(args[i]));
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        if ((kw = PyDict_New()) == NULL)
            goto error;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            if (PyDict_SetItem(kw, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0)
                goto error;
        }
    }
    PyObject *argv[] = {(PyObject *)self, site_obj, first, func, pos, kw ? kw : Py_None};
    res = PyObject_VectorcallMethod(name, argv, 6, NULL);
error:
    Py_DECREF(first);
    Py_XDECREF(name);
    Py_XDECREF(site_obj);
    Py_XDECREF(pos);
    Py_XDECREF(kw);
    return res;
}

static PyObject *
Runtime_policy_call(RuntimeObject *self, const char *method, Py_ssize_t site,
                    const unsigned char key[DS_DIGEST_SIZE], PyObject *func,
                    PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *key_obj = PyBytes_FromStringAndSize((const char *)key, DS_DIGEST_SIZE);
    return Runtime_policy_call_obj(self, method, site, key_obj, func, args, nargs, kwnames);
}

/* A loaded value as the call returns it: most are returned as they are; a
 * record of effects (what the call changed in its receiver, arguments or
 * the random generators) is applied by self._restore. Steals `value`. */
static inline PyObject *
Runtime_hit_value(RuntimeObject *self, Py_ssize_t site, PyObject *value, PyObject *func,
                  PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (self->effects_type == NULL || (PyObject *)Py_TYPE(value) != self->effects_type)
        return value;
    return Runtime_policy_call_obj(self, "_restore", site, value, func, args, nargs, kwnames);
}

static PyObject *
Runtime_call(RuntimeObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf), site;
    if (Runtime_site(self, args, nargs, 2, -1, "call(site, func, *args, **kwargs)", &site) < 0)
        return NULL;
    PyObject *func = args[1];
    PyObject *const *call_args = args + 2;
    Py_ssize_t call_nargs = nargs - 2;
    if (Runtime_store(self) == NULL)
        return PyObject_Vectorcall(func, call_args, call_nargs, kwnames);

    unsigned char key[DS_DIGEST_SIZE];
    int keyed = Runtime_call_key(self, site, func, call_args, call_nargs, kwnames, key);
    if (keyed < 0)
        return NULL;
    if (keyed > 0)   /* inputs that cannot be keyed: computed, never cached */
        return PyObject_Vectorcall(func, call_args, call_nargs, kwnames);

    PyObject *value;
    const char *why;
    switch (Runtime_load(self, site, key, &value, &why)) {
    case LOAD_HIT:
        Runtime_event(self, "hit", site, "");
        return Runtime_hit_value(self, site, value, func, call_args, call_nargs, kwnames);
    case LOAD_ERROR:
        return NULL;
    case LOAD_MISS:
        break;
    }
    int claimed = 0;
    switch (Runtime_claim(self, site, key, &value, &claimed)) {
    case LOAD_HIT:
        Runtime_event(self, "hit", site, "computed by another process");
        return Runtime_hit_value(self, site, value, func, call_args, call_nargs, kwnames);
    case LOAD_ERROR:
        return NULL;
    case LOAD_MISS:
        break;
    }
    self->misses++;
    /* _run_call reports the miss: it can say which input changed. */
    self->miss_why = why;
    value = Runtime_policy_call(self, "_run_call", site, key, func, call_args, call_nargs, kwnames);
    if (claimed)
        claims_release(self->claims_fd, key);
    return value;
}

/* ---- primitives for the Python side (chains, expressions, async) --------- */

/* A key for Python: bytes, None when the inputs cannot be keyed, NULL on error. */
static PyObject *
Runtime_key_object(int keyed, const unsigned char key[DS_DIGEST_SIZE])
{
    if (keyed < 0)
        return NULL;
    if (keyed > 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)key, DS_DIGEST_SIZE);
}

/* rt.key_call(site, func, *args, **kwargs) -> bytes | None */
static PyObject *
Runtime_key_call(RuntimeObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t site;
    if (Runtime_site(self, args, nargs, 2, -1, "key_call(site, func, *args, **kwargs)", &site) < 0)
        return NULL;
    unsigned char key[DS_DIGEST_SIZE];
    return Runtime_key_object(Runtime_call_key(self, site, args[1], args + 2, nargs - 2, kwnames, key), key);
}

/* rt.key_parts(site, func, *args, **kwargs) -> list[(label, digest)]: the
 * call's key split into its parts (see ds_hasher.parts), for miss reasons. */
static PyObject *
Runtime_key_parts(RuntimeObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t site;
    if (Runtime_site(self, args, nargs, 2, -1, "key_parts(site, func, *args, **kwargs)", &site) < 0)
        return NULL;
    ds_hasher *h = keys_new();
    if (h == NULL)
        return NULL;
    PyObject *parts = keys_record_parts(h);
    if (parts != NULL && keys_update_call(h, args[1], args + 2, nargs - 2, kwnames,
                                          &self->info[site].key) < 0)
        Py_CLEAR(parts);
    keys_free(h);
    return parts;
}

/* rt.key_chain_parts(site, root, steps) -> list[(label, digest)] */
static PyObject *
Runtime_key_chain_parts(RuntimeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t site;
    if (Runtime_site(self, args, nargs, 3, 3, "key_chain_parts(site, root, steps)", &site) < 0)
        return NULL;
    ds_hasher *h = keys_new();
    if (h == NULL)
        return NULL;
    PyObject *parts = keys_record_parts(h);
    if (parts != NULL && keys_update_chain(h, args[1], args[2], &self->info[site].key) < 0)
        Py_CLEAR(parts);
    keys_free(h);
    return parts;
}

/* rt.key_chain(site, root, steps) -> bytes | None */
static PyObject *
Runtime_key_chain(RuntimeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t site;
    if (Runtime_site(self, args, nargs, 3, 3, "key_chain(site, root, steps)", &site) < 0)
        return NULL;
    ds_hasher *h = Runtime_key_begin(self, KEY_CHAIN, sizeof KEY_CHAIN);
    if (h == NULL)
        return NULL;
    int rc = keys_update_chain(h, args[1], args[2], &self->info[site].key);
    unsigned char key[DS_DIGEST_SIZE];
    return Runtime_key_object(Runtime_key_done(self, h, site, rc, key), key);
}

/* rt.key_expr(site, values) -> bytes | None: the statement's text and the
 * values of the names it reads. */
static PyObject *
Runtime_key_expr(RuntimeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t site;
    if (Runtime_site(self, args, nargs, 2, 2, "key_expr(site, values)", &site) < 0)
        return NULL;
    ds_hasher *h = Runtime_key_begin(self, KEY_EXPR, sizeof KEY_EXPR);
    if (h == NULL)
        return NULL;
    int rc = keys_update_object(h, PyTuple_GET_ITEM(PyTuple_GET_ITEM(self->sites, site), 5));
    if (rc == 0)
        rc = keys_update_object(h, args[1]);
    unsigned char key[DS_DIGEST_SIZE];
    return Runtime_key_object(Runtime_key_done(self, h, site, rc, key), key);
}

static int
key_arg(PyObject *obj, const unsigned char **key)
{
    if (!PyBytes_Check(obj) || PyBytes_GET_SIZE(obj) != DS_DIGEST_SIZE) {
        PyErr_SetString(PyExc_ValueError, "a key is 16 bytes");
        return -1;
    }
    *key = (const unsigned char *)PyBytes_AS_STRING(obj);
    return 0;
}

/* rt.load(site, key) -> (True, value) | (False, why) */
static PyObject *
Runtime_load_py(RuntimeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t site;
    const unsigned char *key;
    if (Runtime_site(self, args, nargs, 2, 3, "load(site, key, quiet_miss=False)", &site) < 0 ||
        key_arg(args[1], &key) < 0)
        return NULL;
    /* quiet_miss: the caller reports the miss itself, with its reason. */
    int quiet = nargs == 3 ? PyObject_IsTrue(args[2]) : 0;
    if (quiet < 0)
        return NULL;
    PyObject *value;
    const char *why;
    switch (Runtime_load(self, site, key, &value, &why)) {
    case LOAD_HIT:
        Runtime_event(self, "hit", site, "");
        return Py_BuildValue("(ON)", Py_True, value);
    case LOAD_ERROR:
        return NULL;
    case LOAD_MISS:
        break;
    }
    self->misses++;
    if (!quiet)
        Runtime_event(self, "miss", site, why);
    return Py_BuildValue("(Os)", Py_False, why);
}

/* rt.save(site, key, value, seconds, callee=None) -> bool */
static PyObject *
Runtime_save_py(RuntimeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t site;
    const unsigned char *key;
    if (Runtime_site(self, args, nargs, 4, 5, "save(site, key, value, seconds, callee=None)",
                     &site) < 0 || key_arg(args[1], &key) < 0)
        return NULL;
    double seconds = PyFloat_AsDouble(args[3]);
    if (seconds == -1.0 && PyErr_Occurred())
        return NULL;
    PyObject *name = NULL;
    if (nargs == 5 && PyUnicode_Check(args[4]))
        name = Py_NewRef(args[4]);
    else if (nargs == 5 && args[4] != Py_None)
        name = callee_name(args[4]);
    int rc = Runtime_save(self, site, key, args[2], name, seconds);
    Py_XDECREF(name);
    if (rc < 0)
        return NULL;
    return PyBool_FromLong(rc == 0);
}

/* rt.set_extra(site, on): whether the site's keys take self._site_extra(site) */
static PyObject *
Runtime_set_extra(RuntimeObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t site;
    if (Runtime_site(self, args, nargs, 2, 2, "set_extra(site, on)", &site) < 0)
        return NULL;
    int on = PyObject_IsTrue(args[1]);
    if (on < 0)
        return NULL;
    self->info[site].extra = on;
    Py_RETURN_NONE;
}

/* ---- type ---------------------------------------------------------------- */

static int
Runtime_init(RuntimeObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"store", "filename", "sites", "refresh", "verbose", NULL};
    PyObject *store, *filename, *sites;
    int refresh = 0, verbose = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OUO!|pp:Runtime", kwlist, &store, &filename,
                                     &PyTuple_Type, &sites, &refresh, &verbose))
        return -1;
    if (store != Py_None && !Py_IS_TYPE(store, &Store_Type)) {
        PyErr_SetString(PyExc_TypeError, "store must be a Store or None");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(sites);
    site_info *info = PyMem_Calloc(n ? (size_t)n : 1, sizeof *info);
    if (info == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = PyTuple_GET_ITEM(sites, i);
        Py_ssize_t len = PyTuple_Check(s) ? PyTuple_GET_SIZE(s) : 0;
        PyObject *ignore = len == 7 ? PyTuple_GET_ITEM(s, 6) : NULL;
        if ((len != 6 && len != 7) || !PyUnicode_Check(PyTuple_GET_ITEM(s, 5))
            || (ignore != NULL && !PyTuple_Check(ignore))) {
            PyMem_Free(info);
            PyErr_SetString(PyExc_ValueError,
                            "a site is (line, col, ttl, flags, kind, label[, ignore])");
            return -1;
        }
        info[i].ttl = PyFloat_AsDouble(PyTuple_GET_ITEM(s, 2));
        info[i].flags = (int)PyLong_AsLong(PyTuple_GET_ITEM(s, 3));
        /* Borrowed: self->sites holds the tuple. */
        info[i].key.ignore = ignore != NULL && PyTuple_GET_SIZE(ignore) > 0 ? ignore : NULL;
        info[i].key.with_code = !(info[i].flags & DS_OPT_NOCODE);
        info[i].key.with_files = !(info[i].flags & DS_OPT_NOFILES);
        if (PyErr_Occurred()) {
            PyMem_Free(info);
            return -1;
        }
    }
    if (self->hasher == NULL && (self->hasher = keys_new()) == NULL) {
        PyMem_Free(info);
        return -1;
    }
    PyMem_Free(self->info);
    self->info = info;
    self->nsites = n;
    Py_XSETREF(self->store, Py_NewRef(store));
    Py_XSETREF(self->filename, Py_NewRef(filename));
    Py_XSETREF(self->sites, Py_NewRef(sites));
    if (self->effects_type == NULL)   /* Py_T_OBJECT_EX: None, not unset */
        self->effects_type = Py_NewRef(Py_None);
    self->refresh_all = refresh;
    self->verbose = verbose;
    self->claims_fd = -1;
    self->claims_pid = 0;
    self->wait_seconds = 300.0;
    return 0;
}

static int
Runtime_traverse(RuntimeObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->store);
    Py_VISIT(self->filename);
    Py_VISIT(self->sites);
    Py_VISIT(self->effects_type);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int
Runtime_clear(RuntimeObject *self)
{
    Py_CLEAR(self->store);
    Py_CLEAR(self->filename);
    Py_CLEAR(self->sites);
    Py_CLEAR(self->effects_type);
    return 0;
}

static void
Runtime_dealloc(RuntimeObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Runtime_clear(self);
    if (self->hasher != NULL)
        keys_free(self->hasher);
    if (self->claims_fd >= 0 && self->claims_pid == getpid())
        close(self->claims_fd);
    PyMem_Free(self->info);
    tp->tp_free((PyObject *)self);
}

static PyMethodDef Runtime_methods[] = {
    {"call", (PyCFunction)(void (*)(void))Runtime_call, METH_FASTCALL | METH_KEYWORDS,
     "call(site, func, *args, **kwargs): func(*args, **kwargs), cached."},
    {"key_call", (PyCFunction)(void (*)(void))Runtime_key_call, METH_FASTCALL | METH_KEYWORDS,
     "key_call(site, func, *args, **kwargs) -> bytes | None"},
    {"key_parts", (PyCFunction)(void (*)(void))Runtime_key_parts, METH_FASTCALL | METH_KEYWORDS,
     "key_parts(site, func, *args, **kwargs) -> list[tuple[str, bytes]]: the key's parts"},
    {"key_chain_parts", (PyCFunction)(void (*)(void))Runtime_key_chain_parts, METH_FASTCALL,
     "key_chain_parts(site, root, steps) -> list[tuple[str, bytes]]: the chain key's parts"},
    {"key_chain", (PyCFunction)(void (*)(void))Runtime_key_chain, METH_FASTCALL,
     "key_chain(site, root, steps) -> bytes | None"},
    {"key_expr", (PyCFunction)(void (*)(void))Runtime_key_expr, METH_FASTCALL,
     "key_expr(site, values) -> bytes | None"},
    {"load", (PyCFunction)(void (*)(void))Runtime_load_py, METH_FASTCALL,
     "load(site, key, quiet_miss=False) -> (True, value) | (False, reason)"},
    {"save", (PyCFunction)(void (*)(void))Runtime_save_py, METH_FASTCALL,
     "save(site, key, value, seconds, callee=None) -> bool: whether it was stored"},
    {"set_extra", (PyCFunction)(void (*)(void))Runtime_set_extra, METH_FASTCALL,
     "set_extra(site, on): whether the site's keys also take self._site_extra(site)"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Runtime_members[] = {
    {"store", Py_T_OBJECT_EX, offsetof(RuntimeObject, store), 0, "the Store, or None: caching off"},
    {"filename", Py_T_OBJECT_EX, offsetof(RuntimeObject, filename), Py_READONLY, "the module's file"},
    {"effects_type", Py_T_OBJECT_EX, offsetof(RuntimeObject, effects_type), 0,
     "the class of loaded values whose effects self._restore applies"},
    {"sites", Py_T_OBJECT_EX, offsetof(RuntimeObject, sites), Py_READONLY,
     "(line, col, ttl, flags, kind, label) per marker"},
    {"refresh", Py_T_INT, offsetof(RuntimeObject, refresh_all), 0, "recompute every marked value"},
    {"verbose", Py_T_INT, offsetof(RuntimeObject, verbose), 0, "report every hit, miss and store"},
    {"wait_seconds", Py_T_DOUBLE, offsetof(RuntimeObject, wait_seconds), 0,
     "longest wait for another process computing the same key"},
    {"miss_why", Py_T_STRING, offsetof(RuntimeObject, miss_why), Py_READONLY,
     "why the last miss of call() happened (for _run_call)"},
    {"hits", Py_T_LONGLONG, offsetof(RuntimeObject, hits), Py_READONLY, "values loaded this run"},
    {"misses", Py_T_LONGLONG, offsetof(RuntimeObject, misses), Py_READONLY, "values computed this run"},
    {"stores", Py_T_LONGLONG, offsetof(RuntimeObject, stores), Py_READONLY, "values stored this run"},
    {"compute_seconds", Py_T_DOUBLE, offsetof(RuntimeObject, saved), Py_READONLY,
     "seconds spent computing the values stored this run"},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject Runtime_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "devstash._core.Runtime",
    .tp_doc = "The cache calls of one rewritten module.",
    .tp_basicsize = sizeof(RuntimeObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Runtime_init,
    .tp_dealloc = (destructor)Runtime_dealloc,
    .tp_traverse = (traverseproc)Runtime_traverse,
    .tp_clear = (inquiry)Runtime_clear,
    .tp_methods = Runtime_methods,
    .tp_members = Runtime_members,
};
