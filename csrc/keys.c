/* Canonical, process-independent 128-bit hashing of Python values and of
 * callees: the "argument hash" and "name" halves of a cache key.
 *
 * A key decides whether a stored value is returned, so two inputs that
 * could give different results must never feed the same bytes. Every value
 * is fed as a self-delimiting record: a one-byte type tag (exact types, so
 * 1, 1.0, True and "1" differ), explicit lengths or counts, then the
 * payload. Records are concatenated, so no two different argument lists can
 * produce the same byte stream. Nothing process-specific is ever fed: no
 * hash(), no id(), no address.
 *
 * Bytes go to a Sink: a local buffer hashed once with the one-shot XXH3 when
 * everything fits (the common case: a few scalars), spilling into the
 * streaming state when it does not. Large buffers (bytes, NumPy data) are
 * handed to the streaming state directly, never copied. XXH3 gives the same
 * digest for one-shot and streamed input, so how the bytes were split never
 * matters.
 *
 * Unordered containers (dict, set, frozenset) hash every element (or
 * key/value pair) into its own 128-bit digest in a nested sink, sort the
 * digests and feed them: equal containers built in any order feed the same
 * bytes.
 *
 * Anything else goes through pickle's own description of its state,
 * obj.__reduce_ex__(5), hashed recursively with the same rules.
 *
 * This file holds the dispatch and the values; keys_call.c a call's parts,
 * keys_code.c the identity of code, keys_buffers.c memory (see keys_feed.h). */
#include "keys_feed.h"

#include <math.h>
#include <stdlib.h>

/* Fed first in every key: bump it whenever the encoding below changes, so
 * old stored keys can never match a value encoded differently. */
#define KEYS_FORMAT 1

static ds_hasher *shared_hasher = NULL;     /* for the Python-level functions */
static int shared_busy = 0;
static PyObject *int_five = NULL;
static PyObject *dispatch_table = NULL;     /* copyreg.dispatch_table */

PyObject *s_main, *s_mp_main;
PyObject *s_reduce_ex, *s_module, *s_qualname, *s_dtype, *s_kind,
    *s_hasobject, *s_names, *s_descr, *s_str, *s_shape, *s_tobytes, *s_init,
    *s_call, *s_wrapped, *s_co_code, *s_co_qualname, *s_co_varnames,
    *s_co_freevars, *s_co_cellvars, *s_co_exceptiontable, *s_frozen, *s_copy, *s_C,
    *s_fspath, *s_dict, *s_pathlib;

/* ------------------------------------------------------------------ sink */

Sink *
Sink_new(void)
{
    Sink *s = PyMem_Malloc(sizeof *s);
    if (s == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    s->st = XXH3_createState();
    if (s->st == NULL) {
        PyMem_Free(s);
        PyErr_NoMemory();
        return NULL;
    }
    s->len = 0;
    s->streaming = 0;
    return s;
}

void
Sink_free(Sink *s)
{
    if (s != NULL) {
        XXH3_freeState(s->st);
        PyMem_Free(s);
    }
}

void
Sink_flush(Sink *s)
{
    if (!s->streaming) {
        (void)XXH3_128bits_reset(s->st);
        s->streaming = 1;
    }
    (void)XXH3_128bits_update(s->st, s->buf, s->len);
    s->len = 0;
}

void
Sink_write_slow(Sink *s, const void *p, size_t n)
{
    Sink_flush(s);
    if (n >= SINK_SIZE) {
        (void)XXH3_128bits_update(s->st, p, n);
    }
    else {
        memcpy(s->buf, p, n);
        s->len = n;
    }
}

XXH128_hash_t
Sink_hash(Sink *s)
{
    if (s->streaming) {
        (void)XXH3_128bits_update(s->st, s->buf, s->len);
        return XXH3_128bits_digest(s->st);
    }
    return XXH3_128bits(s->buf, s->len);
}

/* Big-endian (XXH128's canonical form): the same bytes on every host. */
void
Sink_write_hash(Sink *s, XXH128_hash_t d)
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, d);
    Sink_write(s, c.digest, DS_DIGEST_SIZE);
}

void
Sink_digest(Sink *s, unsigned char out[DS_DIGEST_SIZE])
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, Sink_hash(s));
    memcpy(out, c.digest, DS_DIGEST_SIZE);
}

/* Nested sink for a sub-digest; the caller pops it on every path. */
int
hasher_push(ds_hasher *h)
{
    if (h->nest + 1 >= MAX_SINKS) {
        PyErr_SetString(PyExc_ValueError, "cannot key a recursive value");
        return -1;
    }
    Sink *s = h->sinks[h->nest + 1];
    if (s == NULL) {
        s = Sink_new();
        if (s == NULL)
            return -1;
        h->sinks[h->nest + 1] = s;
    }
    Sink_reset(s);
    h->nest++;
    h->sink = s;
    return 0;
}

/* ------------------------------------------------------------- parts */

int
part_begin(ds_hasher *h)
{
    return h->parts != NULL ? hasher_push(h) : 0;
}

void
part_abort(ds_hasher *h)
{
    if (h->parts != NULL)
        hasher_pop(h);
}

int
part_end(ds_hasher *h, PyObject *label)
{
    if (h->parts == NULL) {
        Py_XDECREF(label);
        return 0;
    }
    unsigned char d[DS_DIGEST_SIZE];
    Sink_digest(h->sink, d);
    hasher_pop(h);
    Sink_write(h->sink, d, DS_DIGEST_SIZE);
    if (label == NULL)
        return -1;
    PyObject *item = Py_BuildValue("(Ny#)", label, (const char *)d, (Py_ssize_t)DS_DIGEST_SIZE);
    if (item == NULL)
        return -1;
    int r = PyList_Append(h->parts, item);
    Py_DECREF(item);
    return r;
}

/* ------------------------------------------------------------ scalars */

int
feed_str_slow(Sink *s, unsigned tag, PyObject *o)
{
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(o) < 0)
        return -1;
#endif
    Py_ssize_t n = PyUnicode_GET_LENGTH(o);
    Sink_u8(s, tag);
    /* The count of code points, then UTF-8: each code point's length is in
     * its lead byte, so the record is self-delimiting in one pass. */
    Sink_len(s, (uint64_t)n);
    if (PyUnicode_IS_ASCII(o)) {
        Sink_write(s, PyUnicode_DATA(o), (size_t)n);
        return 0;
    }
    int kind = PyUnicode_KIND(o);
    const void *data = PyUnicode_DATA(o);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (SINK_SIZE - s->len < 4)
            Sink_flush(s);
        unsigned char *p = s->buf + s->len;
        /* Lone surrogates are encoded like any other code point (what the
         * "surrogatepass" error handler does): never an error. */
        if (c < 0x80) {
            p[0] = (unsigned char)c;
            s->len += 1;
        }
        else if (c < 0x800) {
            p[0] = (unsigned char)(0xC0 | (c >> 6));
            p[1] = (unsigned char)(0x80 | (c & 0x3F));
            s->len += 2;
        }
        else if (c < 0x10000) {
            p[0] = (unsigned char)(0xE0 | (c >> 12));
            p[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
            p[2] = (unsigned char)(0x80 | (c & 0x3F));
            s->len += 3;
        }
        else {
            p[0] = (unsigned char)(0xF0 | (c >> 18));
            p[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
            p[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
            p[3] = (unsigned char)(0x80 | (c & 0x3F));
            s->len += 4;
        }
    }
    return 0;
}

/* Rare: arbitrary size, as its canonical hex text ("-0x1f..."). */
static DS_NOINLINE int
feed_bigint(Sink *s, PyObject *o)
{
    PyObject *hex = PyNumber_ToBase(o, 16);
    if (hex == NULL)
        return -1;
    int r = feed_str_slow(s, KT_BIGINT, hex);
    Py_DECREF(hex);
    return r;
}

static inline int
feed_int(Sink *s, PyObject *o)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (!overflow) {
        if (v == -1 && PyErr_Occurred())
            return -1;
        Sink_u8(s, KT_INT);
        Sink_u64(s, (uint64_t)v);
        return 0;
    }
    return feed_bigint(s, o);
}

/* All NaNs become one pattern (their payload and sign never change a
 * result's NaN-ness). -0.0 stays distinct from 0.0 although they compare
 * equal: 1/x, atan2, copysign and str() tell them apart, so a value
 * computed for one must not be returned for the other. */
static inline void
feed_double(Sink *s, double d)
{
    uint64_t bits;
    if (isnan(d))
        bits = UINT64_C(0x7ff8000000000000);
    else
        memcpy(&bits, &d, sizeof bits);
    Sink_u64(s, bits);
}

/* A name (module, qualname): a str in practice; anything else is keyed by a
 * marker only, never recursed into. */
int
feed_name(ds_hasher *h, PyObject *o)
{
    if (o != NULL && PyUnicode_Check(o))
        return feed_str(h->sink, KT_STR, o);
    Sink_u8(h->sink, o == NULL || o == Py_None ? KT_NONE : KT_ODD_NAME);
    return 0;
}

/* A module name: a process that multiprocessing spawns runs the main
 * script as __mp_main__, defining the same functions and classes as
 * __main__, so both key alike (a worker hits what the parent stored). */
int
feed_module_name(ds_hasher *h, PyObject *mod)
{
    if (mod != NULL && PyUnicode_Check(mod) && PyUnicode_Compare(mod, s_mp_main) == 0)
        mod = s_main;
    return feed_name(h, mod);
}

/* ------------------------------------------------------ containers */

int
feed_backref(ds_hasher *h, PyObject *o)
{
    for (int i = h->nopen - 1; i >= 0; i--) {
        if (h->open[i] == o) {
            Sink_u8(h->sink, KT_BACKREF);
            Sink_len(h->sink, (uint64_t)(h->nopen - i));
            return 1;
        }
    }
    return 0;
}

int
open_object(ds_hasher *h, PyObject *o)
{
    if (h->nopen > MAX_DEPTH) {
        PyErr_SetString(PyExc_ValueError, "cannot key a value nested deeper than 100 levels");
        return -1;
    }
    h->open[h->nopen++] = o;
    return 0;
}

void
close_object(ds_hasher *h)
{
    h->nopen--;
}

static int
feed_tuple_items(ds_hasher *h, unsigned tag, PyObject *t)
{
    Py_ssize_t n = PyTuple_GET_SIZE(t);
    Sink_u8(h->sink, tag);
    Sink_len(h->sink, (uint64_t)n);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (feed_object(h, PyTuple_GET_ITEM(t, i)) < 0)
            return -1;
    }
    return 0;
}

static int
feed_tuple(ds_hasher *h, PyObject *t)
{
    if (hasher_enter(h) < 0)
        return -1;
    int r = feed_tuple_items(h, KT_TUPLE, t);
    hasher_leave(h);
    return r;
}

static DS_NOINLINE int
feed_list(ds_hasher *h, unsigned tag, PyObject *l)
{
    Py_ssize_t n = PyList_GET_SIZE(l);
    int ret = -1;
    if (feed_backref(h, l))
        return 0;
    if (hasher_enter(h) < 0)
        return -1;
    if (open_object(h, l) < 0) {
        hasher_leave(h);
        return -1;
    }
    Sink_u8(h->sink, tag);
    Sink_len(h->sink, (uint64_t)n);
    for (Py_ssize_t i = 0; i < n; i++) {
        /* Hashing an item may run user code (__reduce_ex__) that mutates
         * the list: hold the item, and refuse a list that changed size. */
        if (PyList_GET_SIZE(l) != n) {
            PyErr_SetString(PyExc_RuntimeError, "list changed size while computing its key");
            goto error;
        }
        PyObject *item = PyList_GET_ITEM(l, i);
        Py_INCREF(item);
        int r = feed_object(h, item);
        Py_DECREF(item);
        if (r < 0)
            goto error;
    }
    ret = 0;
error:
    close_object(h);
    hasher_leave(h);
    return ret;
}

/* Order of the canonical (big-endian) bytes: high half, then low half. */
static inline int
hash_less(const XXH128_hash_t *a, const XXH128_hash_t *b)
{
    return a->high64 < b->high64 || (a->high64 == b->high64 && a->low64 < b->low64);
}

/* Merge sort (insertion sort for short runs); tmp holds n / 2 entries. */
static void
hashes_sort(XXH128_hash_t *a, XXH128_hash_t *tmp, size_t n)
{
    if (n <= 16) {
        for (size_t i = 1; i < n; i++) {
            XXH128_hash_t x = a[i];
            size_t j = i;
            while (j > 0 && hash_less(&x, &a[j - 1])) {
                a[j] = a[j - 1];
                j--;
            }
            a[j] = x;
        }
        return;
    }
    size_t m = n / 2;
    hashes_sort(a, tmp, m);
    hashes_sort(a + m, tmp, n - m);
    if (!hash_less(&a[m], &a[m - 1]))
        return;
    memcpy(tmp, a, m * sizeof *a);
    size_t i = 0, j = m, k = 0;
    while (i < m && j < n)
        a[k++] = hash_less(&a[j], &tmp[i]) ? a[j++] : tmp[i++];
    while (i < m)
        a[k++] = tmp[i++];
}

/* Feeds `tag`, the count and the sorted digests of `items` (of key/value
 * pairs when `pairs`: items holds 2 * n objects). `counted`: whether this
 * is a nesting level of its own (not when it is an object's state). */
static DS_NOINLINE int
feed_unordered(ds_hasher *h, unsigned tag, PyObject *const *items, Py_ssize_t n,
               int pairs, int counted)
{
    XXH128_hash_t small[16];
    XXH128_hash_t *dig = small;
    int ret = -1, entered = 0, pushed = 0;

    if (n > 16) {
        /* n digests, then room for the merge. */
        if ((size_t)n > SIZE_MAX / (2 * sizeof *dig)) {
            PyErr_NoMemory();
            return -1;
        }
        dig = PyMem_Malloc(((size_t)n + (size_t)n / 2) * sizeof *dig);
        if (dig == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    if (counted) {
        if (hasher_enter(h) < 0)
            goto error;
        entered = 1;
    }
    if (hasher_push(h) < 0)
        goto error;
    pushed = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        Sink_reset(h->sink);
        if (pairs) {
            if (feed_object(h, items[2 * i]) < 0 || feed_object(h, items[2 * i + 1]) < 0)
                goto error;
        }
        else if (feed_object(h, items[i]) < 0) {
            goto error;
        }
        dig[i] = Sink_hash(h->sink);
    }
    hasher_pop(h);
    pushed = 0;
    hashes_sort(dig, dig + n, (size_t)n);
    Sink_u8(h->sink, tag);
    Sink_len(h->sink, (uint64_t)n);
    for (Py_ssize_t i = 0; i < n; i++)
        Sink_write_hash(h->sink, dig[i]);
    ret = 0;
error:
    if (pushed)
        hasher_pop(h);
    if (entered)
        hasher_leave(h);
    if (dig != small)
        PyMem_Free(dig);
    return ret;
}

int
feed_dict(ds_hasher *h, PyObject *d, int counted)
{
    Py_ssize_t n = PyDict_GET_SIZE(d), pos = 0, got = 0;
    PyObject *small[16] = {NULL};
    PyObject **items = small;
    PyObject *k, *v;
    int ret = -1;

    /* A dict of its own (not an object's state, whose object is open). */
    if (counted) {
        if (feed_backref(h, d))
            return 0;
        if (open_object(h, d) < 0)
            return -1;
    }
    if (n > 8) {
        if ((size_t)n > SIZE_MAX / (2 * sizeof(PyObject *))) {
            PyErr_NoMemory();
            goto error;
        }
        items = PyMem_Malloc((size_t)n * 2 * sizeof(PyObject *));
        if (items == NULL) {
            PyErr_NoMemory();
            goto error;
        }
    }
    /* Snapshot with strong references first: hashing runs user code that
     * could mutate the dict under PyDict_Next. */
    while (got < n && PyDict_Next(d, &pos, &k, &v)) {
        Py_INCREF(k);
        Py_INCREF(v);
        items[2 * got] = k;
        items[2 * got + 1] = v;
        got++;
    }
    ret = feed_unordered(h, KT_DICT, items, got, 1, counted);
    for (Py_ssize_t i = 0; i < 2 * got; i++)
        Py_DECREF(items[i]);
    if (items != small)
        PyMem_Free(items);
error:
    if (counted)
        close_object(h);
    return ret;
}

/* Any iterable, unordered (sets, and a set subclass's pickled element list). */
static DS_NOINLINE int
feed_iterable_unordered(ds_hasher *h, unsigned tag, PyObject *o)
{
    PyObject *t = PySequence_Tuple(o);
    if (t == NULL)
        return -1;
    int r = feed_unordered(h, tag, PySequence_Fast_ITEMS(t), PyTuple_GET_SIZE(t), 0, 1);
    Py_DECREF(t);
    return r;
}

/* ------------------------------------------------- names and identities */

int
feed_type(ds_hasher *h, PyTypeObject *t)
{
    int ret = -1;
    PyObject *qual = NULL;
    PyObject *mod = PyObject_GetAttr((PyObject *)t, s_module);
    if (mod == NULL) {
        if (error_is_fatal())
            return -1;
        PyErr_Clear();
    }
#if PY_VERSION_HEX >= 0x030B0000
    qual = PyType_GetQualName(t);
#else
    qual = PyObject_GetAttr((PyObject *)t, s_qualname);
#endif
    if (qual == NULL)
        goto error;
    Sink_u8(h->sink, KT_TYPE);
    if (feed_module_name(h, mod) < 0 || feed_name(h, qual) < 0)
        goto error;
    ret = 0;
error:
    Py_XDECREF(mod);
    Py_XDECREF(qual);
    return ret;
}

/* "module.qualname" of a type, as shown to the user. */
static PyObject *
type_full_name(PyTypeObject *t)
{
    PyObject *res = NULL;
    PyObject *mod = PyObject_GetAttr((PyObject *)t, s_module);
    if (mod == NULL) {
        if (error_is_fatal())
            return NULL;
        PyErr_Clear();
    }
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *qual = PyType_GetQualName(t);
#else
    PyObject *qual = PyObject_GetAttr((PyObject *)t, s_qualname);
#endif
    if (qual == NULL || !PyUnicode_Check(qual)) {
        if (qual != NULL || !error_is_fatal()) {
            PyErr_Clear();
            Py_XSETREF(qual, PyUnicode_FromString(t->tp_name));
        }
        if (qual == NULL)
            goto error;
    }
    if (mod != NULL && PyUnicode_Check(mod)
        && PyUnicode_CompareWithASCIIString(mod, "builtins") != 0)
        res = PyUnicode_FromFormat("%U.%U", mod, qual);
    else
        res = Py_NewRef(qual);
error:
    Py_XDECREF(mod);
    Py_XDECREF(qual);
    return res;
}

/* Keys a value that cannot be hashed by its type alone, and records the
 * type for the caller to report. */
int
feed_unhashable(ds_hasher *h, PyObject *o)
{
    int ret = -1;
    PyObject *name = type_full_name(Py_TYPE(o));
    if (name == NULL)
        return -1;
    if (feed_str(h->sink, KT_UNHASHABLE, name) < 0)
        goto error;
    if (h->unhashable == NULL) {
        h->unhashable = PyList_New(0);
        if (h->unhashable == NULL)
            goto error;
    }
    int seen = PySequence_Contains(h->unhashable, name);
    if (seen < 0 || (!seen && PyList_Append(h->unhashable, name) < 0))
        goto error;
    ret = 0;
error:
    Py_DECREF(name);
    return ret;
}

int
feed_module(ds_hasher *h, PyObject *m)
{
    PyObject *name = PyModule_GetNameObject(m);
    if (name == NULL) {
        if (error_is_fatal())
            return -1;
        PyErr_Clear();
        return feed_unhashable(h, m);
    }
    int r = feed_str(h->sink, KT_MODULE, name);
    Py_DECREF(name);
    return r;
}

/* ------------------------------------------------------------ reduce */

/* listitems / dictitems of a reduce tuple: None, or an iterator. */
static int
feed_reduce_items(ds_hasher *h, PyObject *items, int ordered)
{
    if (items == Py_None) {
        Sink_u8(h->sink, KT_NONE);
        return 0;
    }
    if (!ordered)
        return feed_iterable_unordered(h, KT_UNORDERED, items);
    PyObject *it = PyObject_GetIter(items);
    if (it == NULL)
        return -1;
    Sink_u8(h->sink, KT_ITEMS);
    PyObject *item;
    int r = 0;
    while (r == 0 && (item = PyIter_Next(it)) != NULL) {
        r = feed_object(h, item);
        Py_DECREF(item);
    }
    Py_DECREF(it);
    if (r < 0 || PyErr_Occurred())
        return -1;
    Sink_u8(h->sink, KT_END);
    return 0;
}

/* obj.__reduce_ex__ returned a name: obj is a global (a singleton, an
 * lru_cache wrapper): its type, module and name, and the function it
 * wraps if any. */
static int
feed_global(ds_hasher *h, PyObject *o, PyObject *name)
{
    int ret = -1;
    PyObject *wrapped = NULL;
    PyObject *mod = PyObject_GetAttr(o, s_module);
    if (mod == NULL) {
        if (error_is_fatal())
            return -1;
        PyErr_Clear();
    }
    Sink_u8(h->sink, KT_GLOBAL);
    if (feed_type(h, Py_TYPE(o)) < 0 || feed_module_name(h, mod) < 0 || feed_name(h, name) < 0)
        goto error;
    wrapped = PyObject_GetAttr(o, s_wrapped);
    if (wrapped == NULL) {
        if (error_is_fatal())
            goto error;
        PyErr_Clear();
    }
    if (wrapped != NULL && PyFunction_Check(wrapped)) {
        if (feed_function(h, wrapped, 1, NULL) < 0)
            goto error;
    }
    else {
        Sink_u8(h->sink, KT_NONE);
    }
    ret = 0;
error:
    Py_XDECREF(mod);
    Py_XDECREF(wrapped);
    return ret;
}

/* ---------------------------------------------------------- type traits */

/* What the key needs to know of a type beyond its name, found once per
 * type: whether it is infrastructure (below), and the names of its
 * functools.cached_property attributes. */
typedef struct {
    int infrastructure;
    PyObject *cached;           /* tuple of str (borrowed from the cache) */
} type_traits;

static PyObject *traits_cache = NULL;       /* type -> (bool, tuple of str) */
#define TRAITS_CACHE_MAX 4096

/* Classes whose instances hold connections, threads or a client's
 * lifecycle, never an input (or profilers): nested inside an argument (the httpx client
 * inside an openai client) they are keyed by their type, and so are their
 * subclasses. Given directly to a call they are keyed in full as any value. */
static const char *const infrastructure_types[] = {
    "httpx.Client", "httpx.AsyncClient", "httpx._client.Client", "httpx._client.AsyncClient",
    "httpx2.Client", "httpx2.AsyncClient",
    "requests.adapters.HTTPAdapter", "urllib3.poolmanager.PoolManager",
    "urllib3.connectionpool.HTTPConnectionPool", "urllib3.connectionpool.HTTPSConnectionPool",
    "aiohttp.client.ClientSession", "aiohttp.connector.TCPConnector",
    "threading.Thread", "concurrent.futures.thread.ThreadPoolExecutor",
    "concurrent.futures.process.ProcessPoolExecutor",
    /* kernprof's @profile: its state holds hash() values of code objects,
     * which differ from process to process. */
    "line_profiler._line_profiler.LineProfiler", "line_profiler.line_profiler.LineProfiler",
    "cProfile.Profile", "_lsprof.Profiler", NULL,
};

static PyObject *
traits_compute(PyTypeObject *t)
{
    static PyObject *cached_property_type = NULL;
    PyObject *names = NULL, *res = NULL;
    int infra = 0;
    PyObject *mro = t->tp_mro;
    for (Py_ssize_t i = 0; mro != NULL && i < PyTuple_GET_SIZE(mro) && !infra; i++) {
        PyObject *name = type_full_name((PyTypeObject *)PyTuple_GET_ITEM(mro, i));
        if (name == NULL)
            return NULL;
        for (int j = 0; infrastructure_types[j] != NULL && !infra; j++)
            infra = PyUnicode_CompareWithASCIIString(name, infrastructure_types[j]) == 0;
        Py_DECREF(name);
    }
    if (cached_property_type == NULL) {
        PyObject *functools = PyImport_ImportModule("functools");
        if (functools == NULL)
            goto error;
        cached_property_type = PyObject_GetAttrString(functools, "cached_property");
        Py_DECREF(functools);
        if (cached_property_type == NULL)
            goto error;
    }
    if ((names = PyList_New(0)) == NULL)
        goto error;
    for (Py_ssize_t i = 0; mro != NULL && i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (!(base->tp_flags & Py_TPFLAGS_HEAPTYPE) || base->tp_dict == NULL)
            continue;
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(base->tp_dict, &pos, &k, &v)) {
            if ((PyObject *)Py_TYPE(v) == cached_property_type && PyList_Append(names, k) < 0)
                goto error;
        }
    }
    res = Py_BuildValue("(ON)", infra ? Py_True : Py_False, PyList_AsTuple(names));
error:
    Py_XDECREF(names);
    return res;
}

static int
get_type_traits(PyTypeObject *t, type_traits *out)
{
    if (traits_cache == NULL && (traits_cache = PyDict_New()) == NULL)
        return -1;
    PyObject *tr = PyDict_GetItemWithError(traits_cache, (PyObject *)t);
    if (tr == NULL) {
        if (PyErr_Occurred() || (tr = traits_compute(t)) == NULL)
            return -1;
        if (PyDict_GET_SIZE(traits_cache) >= TRAITS_CACHE_MAX)
            PyDict_Clear(traits_cache);
        int r = PyDict_SetItem(traits_cache, (PyObject *)t, tr);
        Py_DECREF(tr);          /* the cache holds it */
        if (r < 0)
            return -1;
    }
    out->infrastructure = PyTuple_GET_ITEM(tr, 0) == Py_True;
    out->cached = PyTuple_GET_ITEM(tr, 1);
    return 0;
}

/* An object's __dict__-like state, less what functools.cached_property
 * computed from the rest: whether `client.chat` was touched yet is no
 * input. */
static int
feed_state_dict(ds_hasher *h, PyObject *o, PyObject *state)
{
    type_traits tr;
    if (get_type_traits(Py_TYPE(o), &tr) < 0)
        return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(tr.cached);
    if (n == 0)
        return feed_dict(h, state, 0);
    PyObject *copy = PyDict_Copy(state);
    if (copy == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyDict_DelItem(copy, PyTuple_GET_ITEM(tr.cached, i)) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError)) {
                Py_DECREF(copy);
                return -1;
            }
            PyErr_Clear();
        }
    }
    int r = feed_dict(h, copy, 0);
    Py_DECREF(copy);
    return r;
}

/* (callable, args[, state[, listitems[, dictitems[, state_setter]]]]) */
static int
feed_reduce_tuple(ds_hasher *h, PyObject *o, PyObject *r)
{
    Py_ssize_t n = PyTuple_GET_SIZE(r);
    PyObject *args = PyTuple_GET_ITEM(r, 1);
    Sink_u8(h->sink, KT_REDUCE);
    Sink_u8(h->sink, (unsigned)n);
    if (feed_object(h, PyTuple_GET_ITEM(r, 0)) < 0)
        return -1;
    if (PyTuple_Check(args)) {
        Py_ssize_t na = PyTuple_GET_SIZE(args);
        Sink_u8(h->sink, KT_TUPLE);
        Sink_len(h->sink, (uint64_t)na);
        for (Py_ssize_t i = 0; i < na; i++) {
            PyObject *a = PyTuple_GET_ITEM(args, i);
            int rc;
            /* A set subclass pickles its elements as a list in iteration
             * order, which depends on the hash seed. */
            if (PyAnySet_Check(o) && PyList_CheckExact(a))
                rc = feed_iterable_unordered(h, KT_UNORDERED, a);
            else
                rc = feed_object(h, a);
            if (rc < 0)
                return -1;
        }
    }
    else if (feed_object(h, args) < 0) {
        return -1;
    }
    if (n > 2) {
        /* The state is part of this object's level, not one of its own. */
        PyObject *state = PyTuple_GET_ITEM(r, 2);
        int rc = PyDict_CheckExact(state) ? feed_state_dict(h, o, state) : feed_object(h, state);
        if (rc < 0)
            return -1;
    }
    if (n > 3 && feed_reduce_items(h, PyTuple_GET_ITEM(r, 3), 1) < 0)
        return -1;
    /* A dict subclass's items count in any order, as dict equality does;
     * an OrderedDict's in order, as its equality does. */
    if (n > 4 && feed_reduce_items(h, PyTuple_GET_ITEM(r, 4), PyODict_Check(o)) < 0)
        return -1;
    if (n > 5 && feed_object(h, PyTuple_GET_ITEM(r, 5)) < 0)
        return -1;
    return 0;
}

/* 1 if `o` is an I/O stream (an io.IOBase: sys.stderr held by a thread or
 * a log handler), which is iterable over lines but is infrastructure when
 * nested in an object's state; 0 if not, -1 on error. */
static int
is_stream(PyObject *o)
{
    static PyObject *io_base = NULL;
    if (io_base == NULL) {
        PyObject *io = PyImport_ImportModule("io");
        if (io == NULL)
            return -1;
        io_base = PyObject_GetAttrString(io, "IOBase");
        Py_DECREF(io);
        if (io_base == NULL)
            return -1;
    }
    return PyObject_IsInstance(o, io_base);
}

/* A value pickle refuses. An iterator (a generator, a file being read)
 * cannot be keyed by content without consuming it, and a direct input
 * keyed by its type alone would return one input's value for another: both
 * make the call uncacheable (ValueError). Nested inside an object's state
 * a lock, a connection pool or an I/O stream (sys.stderr inside a thread)
 * carries no input and is keyed by its type; a nested generator is still
 * data the call would read. */
static int
feed_opaque(ds_hasher *h, PyObject *o)
{
    int stream = PyIter_Check(o) ? is_stream(o) : 0;
    if (stream < 0)
        return -1;
    if (PyIter_Check(o) && (!stream || h->depth == h->direct_depth)) {
        PyErr_Format(PyExc_ValueError,
                     "a %.100s is an iterator: keying it would consume it", Py_TYPE(o)->tp_name);
        return -1;
    }
    if (h->depth == h->direct_depth) {
        PyErr_Format(PyExc_ValueError,
                     "a %.100s can be keyed by its type only, not by what it holds",
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    return feed_unhashable(h, o);
}

/* Everything without a dedicated encoding: pickle's description of it. A
 * value pickle refuses (a lock, a file, a generator) is keyed by its type
 * and recorded; the rest of the key stays. */
static int
feed_reduce(ds_hasher *h, PyObject *o)
{
    PyObject *r = NULL;
    if (feed_backref(h, o))
        return 0;
    if (h->depth != h->direct_depth) {
        type_traits tr;
        if (get_type_traits(Py_TYPE(o), &tr) < 0)
            return -1;
        if (tr.infrastructure)
            return feed_type(h, Py_TYPE(o));
    }
#if PY_VERSION_HEX >= 0x030C0000
    /* Pickling itertools' iterators (count, cycle, islice, ...) warns from
     * 3.12 (DeprecationWarning) and fails from 3.14: key them as 3.14 does,
     * as iterators pickle refuses, without the warning. */
    if (strncmp(Py_TYPE(o)->tp_name, "itertools.", 10) == 0 && PyIter_Check(o))
        return feed_opaque(h, o);
#endif
    /* Like pickle: a reducer registered with copyreg.pickle() (re.Pattern,
     * union types) comes first. */
    if (dispatch_table == NULL) {
        PyObject *copyreg = PyImport_ImportModule("copyreg");
        if (copyreg == NULL)
            return -1;
        dispatch_table = PyObject_GetAttrString(copyreg, "dispatch_table");
        Py_DECREF(copyreg);
        if (dispatch_table == NULL)
            return -1;
    }
    PyObject *reducer = NULL;
    if (PyDict_Check(dispatch_table)) {
        reducer = PyDict_GetItemWithError(dispatch_table, (PyObject *)Py_TYPE(o));
        if (reducer == NULL && PyErr_Occurred())
            return -1;
    }
    if (reducer != NULL) {
        Py_INCREF(reducer);
        r = PyObject_CallOneArg(reducer, o);
        Py_DECREF(reducer);
    }
    else {
        r = PyObject_CallMethodOneArg(o, s_reduce_ex, int_five);
    }
    if (r == NULL) {
        if (error_is_fatal())
            return -1;
        PyErr_Clear();
        if (PyObject_CheckBuffer(o)) {
            int b = feed_buffer(h, o);
            if (b <= 0)
                return b;
        }
        return feed_opaque(h, o);
    }
    int ret;
    if (hasher_enter(h) < 0) {
        Py_DECREF(r);
        return -1;
    }
    if (open_object(h, o) < 0) {
        hasher_leave(h);
        Py_DECREF(r);
        return -1;
    }
    if (PyUnicode_Check(r))
        ret = feed_global(h, o, r);
    else if (PyTuple_Check(r) && PyTuple_GET_SIZE(r) >= 2 && PyTuple_GET_SIZE(r) <= 6)
        ret = feed_reduce_tuple(h, o, r);
    else
        ret = feed_unhashable(h, o);
    close_object(h);
    hasher_leave(h);
    Py_DECREF(r);
    return ret;
}

/* A dict view reads its dict: keyed by its contents (keys and items as
 * sets, values in the dict's order), never by its type. */
static int
feed_dict_view(ds_hasher *h, PyObject *o)
{
    if (PyDictValues_Check(o)) {
        PyObject *l = PySequence_List(o);
        if (l == NULL)
            return -1;
        int r = feed_list(h, KT_DICT_VALUES, l);
        Py_DECREF(l);
        return r;
    }
    return feed_iterable_unordered(h, PyDictKeys_Check(o) ? KT_DICT_KEYS : KT_DICT_ITEMS, o);
}

/* pathlib's paths by their type and text: equal paths key alike whatever
 * they were built from (3.13 pickles the parts it was given). 1: not one. */
static int
feed_pure_path(ds_hasher *h, PyObject *o)
{
    static PyObject *pure_path = NULL;      /* pathlib.PurePath once imported */
    if (pure_path == NULL) {
        PyObject *mod = PyImport_GetModule(s_pathlib);
        if (mod == NULL) {
            if (PyErr_Occurred())
                return -1;
            return 1;                       /* no pathlib: no paths */
        }
        pure_path = PyObject_GetAttrString(mod, "PurePath");
        Py_DECREF(mod);
        if (pure_path == NULL)
            return -1;
    }
    int is_path = PyObject_IsInstance(o, pure_path);
    if (is_path <= 0)
        return is_path < 0 ? -1 : 1;
    PyObject *text = PyOS_FSPath(o);
    if (text == NULL)
        return -1;
    Sink_u8(h->sink, KT_PATH);
    int r = feed_type(h, Py_TYPE(o));
    if (r == 0)
        r = feed_object(h, text);
    Py_DECREF(text);
    return r;
}

/* ---------------------------------------------------------- dispatch */

static DS_NOINLINE int
feed_other(ds_hasher *h, PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    if (is_ndarray(t)) {
        int r = feed_ndarray(h, o);
        if (r <= 0)
            return r;
        return feed_reduce(h, o);       /* object dtype */
    }
    if (PyType_Check(o))
        return feed_type(h, (PyTypeObject *)o);
    if (PyFunction_Check(o))
        return feed_function(h, o, 1, NULL);
    if (PyCFunction_Check(o))
        return feed_builtin(h, o, 1);
    if (PyMethod_Check(o))
        return feed_method(h, o, 1);
    if (PyModule_Check(o))
        return feed_module(h, o);
    if (PyCode_Check(o))
        return feed_code(h, o);
    if (t == &PyMemoryView_Type || strcmp(t->tp_name, "array.array") == 0
        || strcmp(t->tp_name, "pickle.PickleBuffer") == 0) {
        int r = feed_buffer(h, o);
        if (r <= 0)
            return r;
        return feed_unhashable(h, o);
    }
    if (PyDictKeys_Check(o) || PyDictValues_Check(o) || PyDictItems_Check(o))
        return feed_dict_view(h, o);
    int r = feed_pure_path(h, o);
    if (r <= 0)
        return r;
    r = feed_open_file(h, o);
    if (r <= 0)
        return r;
    r = feed_array_like(h, o);          /* tensors, array protocols: keys_buffers.c */
    if (r <= 0)
        return r;
    return feed_reduce(h, o);
}

/* Containers and the rest: out of line, so that the scalar fast path in
 * feed_object stays a small function. */
static DS_NOINLINE int
feed_compound(ds_hasher *h, PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    Sink *s = h->sink;
    if (t == &PyTuple_Type)
        return feed_tuple(h, o);
    if (t == &PyList_Type)
        return feed_list(h, KT_LIST, o);
    if (t == &PyDict_Type)
        return feed_dict(h, o, 1);
    if (t == &PyBytes_Type) {
        feed_raw_bytes(s, KT_BYTES, PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o));
        return 0;
    }
    if (t == &PyByteArray_Type) {
        feed_raw_bytes(s, KT_BYTEARRAY, PyByteArray_AS_STRING(o), (size_t)PyByteArray_GET_SIZE(o));
        return 0;
    }
    if (t == &PySet_Type)
        return feed_iterable_unordered(h, KT_SET, o);
    if (t == &PyFrozenSet_Type)
        return feed_iterable_unordered(h, KT_FROZENSET, o);
    if (t == &PyComplex_Type) {
        Py_complex c = ((PyComplexObject *)o)->cval;
        Sink_u8(s, KT_COMPLEX);
        feed_double(s, c.real);
        feed_double(s, c.imag);
        return 0;
    }
    if (o == Py_Ellipsis) {
        Sink_u8(s, KT_ELLIPSIS);
        return 0;
    }
    return feed_other(h, o);
}

int
feed_object(ds_hasher *h, PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    Sink *s = h->sink;
    /* Exact types only: subclasses (IntEnum, str subclasses, namedtuples)
     * go through reduce so that their class counts. */
    if (t == &PyUnicode_Type)
        return feed_str(s, KT_STR, o);
    if (t == &PyLong_Type)
        return feed_int(s, o);
    if (t == &PyFloat_Type) {
        Sink_u8(s, KT_FLOAT);
        feed_double(s, PyFloat_AS_DOUBLE(o));
        return 0;
    }
    if (o == Py_None) {
        Sink_u8(s, KT_NONE);
        return 0;
    }
    if (t == &PyBool_Type) {
        Sink_u8(s, o == Py_True ? KT_TRUE : KT_FALSE);
        return 0;
    }
    return feed_compound(h, o);
}

/* ------------------------------------------------------------ public */

ds_hasher *
keys_new(void)
{
    ds_hasher *h = PyMem_Calloc(1, sizeof *h);
    if (h == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    h->sinks[0] = Sink_new();
    if (h->sinks[0] == NULL) {
        PyMem_Free(h);
        return NULL;
    }
    keys_reset(h);
    return h;
}

void
keys_free(ds_hasher *h)
{
    if (h == NULL)
        return;
    for (int i = 0; i < MAX_SINKS; i++)
        Sink_free(h->sinks[i]);
    Py_XDECREF(h->unhashable);
    Py_XDECREF(h->parts);
    PyMem_Free(h);
}

void
keys_reset(ds_hasher *h)
{
    h->nest = 0;
    h->depth = 0;
    h->direct_depth = -1;
    h->ignore = NULL;
    h->nopen = 0;
    Py_CLEAR(h->parts);
    h->sink = h->sinks[0];
    Sink_reset(h->sink);
    Py_CLEAR(h->unhashable);
    Sink_u8(h->sink, KEYS_FORMAT);
}

void
keys_update_bytes(ds_hasher *h, const void *data, size_t len)
{
    Sink_write(h->sink, data, len);
}

int
keys_update_object(ds_hasher *h, PyObject *obj)
{
    return feed_object(h, obj);
}

PyObject *
keys_record_parts(ds_hasher *h)
{
    PyObject *parts = PyList_New(0);
    if (parts == NULL)
        return NULL;
    Py_XSETREF(h->parts, Py_NewRef(parts));
    return parts;
}

void
keys_digest(ds_hasher *h, unsigned char out[DS_DIGEST_SIZE])
{
    Sink_digest(h->sinks[0], out);
}

PyObject *
keys_unhashable(ds_hasher *h)
{
    return h->unhashable;
}

int
keys_set_library_prefixes(PyObject *prefixes)
{
    PyObject *t = PySequence_Tuple(prefixes);
    if (t == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++) {
        if (!PyUnicode_Check(PyTuple_GET_ITEM(t, i))) {
            PyErr_SetString(PyExc_TypeError, "library prefixes must be str");
            Py_DECREF(t);
            return -1;
        }
    }
    code_set_library_prefixes(t);
    return 0;
}

/* ------------------------------------------------------- Python level */

/* The shared hasher, or a fresh one when it is in use (hashing ran user
 * code that hashes again). */
static ds_hasher *
hasher_acquire(void)
{
    if (shared_busy)
        return keys_new();
    if (shared_hasher == NULL) {
        shared_hasher = keys_new();
        if (shared_hasher == NULL)
            return NULL;
    }
    shared_busy = 1;
    keys_reset(shared_hasher);
    return shared_hasher;
}

static void
hasher_release(ds_hasher *h)
{
    if (h == shared_hasher) {
        Py_CLEAR(h->unhashable);
        shared_busy = 0;
    }
    else {
        keys_free(h);
    }
}

static PyObject *
hasher_result(ds_hasher *h)
{
    unsigned char out[DS_DIGEST_SIZE];
    keys_digest(h, out);
    return PyBytes_FromStringAndSize((const char *)out, DS_DIGEST_SIZE);
}

PyObject *
keys_py_hash_value(PyObject *module, PyObject *obj)
{
    DS_UNUSED(module);
    PyObject *res = NULL;
    ds_hasher *h = hasher_acquire();
    if (h == NULL)
        return NULL;
    if (keys_update_object(h, obj) == 0)
        res = hasher_result(h);
    hasher_release(h);
    return res;
}

static int
hash_call_into(ds_hasher *h, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "hash_call() needs the callee");
        return -1;
    }
    ds_call_options o = {.with_code = 1, .with_files = 1, .ignore = NULL};
    return keys_update_call(h, args[0], args + 1, nargs - 1, kwnames, &o);
}

PyObject *
keys_py_hash_call(PyObject *module, PyObject *const *args, Py_ssize_t nargsf,
                  PyObject *kwnames)
{
    DS_UNUSED(module);
    PyObject *res = NULL;
    ds_hasher *h = hasher_acquire();
    if (h == NULL)
        return NULL;
    if (hash_call_into(h, args, nargsf, kwnames) == 0)
        res = hasher_result(h);
    hasher_release(h);
    return res;
}

/* hash_call_ex(callee, *args, **kwargs) -> (bytes, tuple[str, ...]) */
static PyObject *
keys_py_hash_call_ex(PyObject *module, PyObject *const *args, Py_ssize_t nargsf,
                     PyObject *kwnames)
{
    DS_UNUSED(module);
    PyObject *res = NULL, *digest = NULL, *names = NULL;
    ds_hasher *h = hasher_acquire();
    if (h == NULL)
        return NULL;
    if (hash_call_into(h, args, nargsf, kwnames) < 0)
        goto error;
    digest = hasher_result(h);
    if (digest == NULL)
        goto error;
    names = h->unhashable != NULL ? PyList_AsTuple(h->unhashable) : PyTuple_New(0);
    if (names == NULL)
        goto error;
    res = PyTuple_Pack(2, digest, names);
error:
    Py_XDECREF(digest);
    Py_XDECREF(names);
    hasher_release(h);
    return res;
}

/* hash_code(func_or_code) -> bytes | None: what the key takes of a
 * function's code (digest, defaults, the user's functions it calls), or
 * None when it is not the user's own (keyed by name only). */
static PyObject *
keys_py_hash_code(PyObject *module, PyObject *obj)
{
    DS_UNUSED(module);
    PyObject *res = NULL;
    CodeInfo ci;
    int have_ci = 0;
    if (!PyFunction_Check(obj) && !PyCode_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "hash_code() takes a function or a code object");
        return NULL;
    }
    ds_hasher *h = hasher_acquire();
    if (h == NULL)
        return NULL;
    PyObject *code = PyFunction_Check(obj) ? PyFunction_GET_CODE(obj) : obj;
    if (code_info(h, code, &ci) < 0)
        goto error;
    have_ci = 1;
    if (PyCode_Check(obj)) {
        res = PyBytes_FromStringAndSize((const char *)ci.digest, DS_DIGEST_SIZE);
        goto error;
    }
    if (!ci.is_user) {
        res = Py_NewRef(Py_None);
        goto error;
    }
    PyFunctionObject *f = (PyFunctionObject *)obj;
    Sink_u8(h->sink, KT_CODE);
    Sink_write(h->sink, ci.digest, DS_DIGEST_SIZE);
    if (feed_defaults(h, f) < 0 || feed_helpers(h, f->func_globals, ci.names, HELPER_DEPTH, NULL) < 0)
        goto error;
    res = hasher_result(h);
error:
    if (have_ci)
        Py_DECREF(ci.names);
    hasher_release(h);
    return res;
}

PyObject *
keys_py_set_library_prefixes(PyObject *module, PyObject *prefixes)
{
    DS_UNUSED(module);
    if (keys_set_library_prefixes(prefixes) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef keys_extra_methods[] = {
    {"hash_call_ex", (PyCFunction)(void (*)(void))keys_py_hash_call_ex,
     METH_FASTCALL | METH_KEYWORDS,
     "hash_call_ex(callee, *args, **kwargs) -> tuple[bytes, tuple[str, ...]]: the key "
     "of a call and the types of the values keyed by type only."},
    {"hash_code", keys_py_hash_code, METH_O,
     "hash_code(func) -> bytes | None: the code part of a function's key "
     "(None when it is not the user's own); of a code object, its digest."},
    {NULL, NULL, 0, NULL},
};

int
keys_module_init(PyObject *module)
{
    static const struct { PyObject **slot; const char *text; } names[] = {
        {&s_reduce_ex, "__reduce_ex__"}, {&s_module, "__module__"},
        {&s_qualname, "__qualname__"}, {&s_dtype, "dtype"}, {&s_kind, "kind"},
        {&s_hasobject, "hasobject"}, {&s_names, "names"}, {&s_descr, "descr"},
        {&s_str, "str"}, {&s_shape, "shape"}, {&s_tobytes, "tobytes"},
        {&s_init, "__init__"}, {&s_call, "__call__"}, {&s_wrapped, "__wrapped__"},
        {&s_co_code, "co_code"}, {&s_co_qualname, "co_qualname"},
        {&s_co_varnames, "co_varnames"}, {&s_co_freevars, "co_freevars"},
        {&s_co_cellvars, "co_cellvars"}, {&s_co_exceptiontable, "co_exceptiontable"},
        {&s_frozen, "<frozen"}, {&s_copy, "copy"}, {&s_C, "C"},
        {&s_main, "__main__"}, {&s_mp_main, "__mp_main__"},
        {&s_fspath, "__fspath__"}, {&s_dict, "__dict__"}, {&s_pathlib, "pathlib"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (*names[i].slot == NULL) {
            *names[i].slot = PyUnicode_InternFromString(names[i].text);
            if (*names[i].slot == NULL)
                return -1;
        }
    }
    if (int_five == NULL) {
        int_five = PyLong_FromLong(5);
        if (int_five == NULL)
            return -1;
    }
    return PyModule_AddFunctions(module, keys_extra_methods);
}
