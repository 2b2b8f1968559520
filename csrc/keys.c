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
 * obj.__reduce_ex__(5), hashed recursively with the same rules. */
#include "keys.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <math.h>
#include <stdlib.h>

/* Fed first in every key: bump it whenever the encoding below changes, so
 * old stored keys can never match a value encoded differently. */
#define KEYS_FORMAT 1

/* Type tags. They are persisted (inside stored keys): never renumber. */
enum {
    KT_NONE = 0x01, KT_FALSE = 0x02, KT_TRUE = 0x03, KT_ELLIPSIS = 0x04,
    KT_INT = 0x05, KT_BIGINT = 0x06, KT_FLOAT = 0x07, KT_COMPLEX = 0x08,
    KT_STR = 0x09, KT_BYTES = 0x0a, KT_BYTEARRAY = 0x0b,
    KT_TUPLE = 0x10, KT_LIST = 0x11, KT_DICT = 0x12, KT_SET = 0x13,
    KT_FROZENSET = 0x14, KT_UNORDERED = 0x15,
    KT_NDARRAY = 0x18, KT_BUFFER = 0x19,
    KT_TYPE = 0x20, KT_MODULE = 0x21, KT_FUNCTION = 0x22, KT_BUILTIN = 0x23,
    KT_METHOD = 0x24, KT_CODE = 0x25, KT_INSTANCE = 0x26, KT_CLOSURE = 0x27,
    KT_HELPER = 0x28, KT_SELF = 0x29, KT_EMPTY_CELL = 0x2a, KT_ODD_NAME = 0x2b,
    KT_METHOD_HELPER = 0x2c,
    KT_REDUCE = 0x30, KT_GLOBAL = 0x31, KT_ITEMS = 0x32, KT_UNHASHABLE = 0x33,
    KT_ARGS = 0x40, KT_KWARGS = 0x41, KT_CALLEE = 0x42,
    KT_END = 0x7f,
};

/* Nesting deeper than this is taken for a cycle (or is absurd): the value
 * is not keyed at all. Sub-digests nest at most once per level. */
#define MAX_DEPTH 100
#define MAX_SINKS (MAX_DEPTH + 4)
/* How far the callee's code digest follows the user's functions it calls. */
#define HELPER_DEPTH 2
/* The code digest cache is emptied when it reaches this many entries. */
#define CODE_TABLE_MAX 65536

#define SINK_SIZE 1024

/* Keeps the rare or heavy paths out of the scalar fast path's frame. */
#if defined(__GNUC__)
#define DS_NOINLINE __attribute__((noinline))
#else
#define DS_NOINLINE
#endif

typedef struct {
    XXH3_state_t *st;           /* used once the buffer spills */
    size_t len;
    int streaming;
    unsigned char buf[SINK_SIZE];
} Sink;

struct ds_hasher {
    Sink *sink;                 /* where bytes go now: sinks[nest] */
    int nest;
    int depth;
    PyObject *unhashable;       /* list of str, or NULL */
    Sink *sinks[MAX_SINKS];     /* [0] is the key; the others are allocated on use */
};

/* What the key needs of a code object; cached per code object. */
typedef struct {
    unsigned char digest[DS_DIGEST_SIZE];
    PyObject *names;            /* tuple: names used by the code and its nested code */
    int is_user;                /* defined outside the library prefixes */
    int unique;                 /* its qualified name has no "<locals>"/"<lambda>" */
} CodeInfo;

typedef struct {
    PyObject *code;             /* strong reference; NULL marks a free slot */
    CodeInfo info;
} CodeEntry;

static CodeEntry *code_table = NULL;
static size_t code_capacity = 0;    /* a power of two, or 0 */
static size_t code_count = 0;

static PyObject *lib_prefixes = NULL;       /* tuple of str, or NULL */
static PyTypeObject *ndarray_type = NULL;   /* numpy.ndarray once seen */
static ds_hasher *shared_hasher = NULL;     /* for the Python-level functions */
static int shared_busy = 0;
static PyObject *int_five = NULL;
static PyObject *dispatch_table = NULL;     /* copyreg.dispatch_table */

static PyObject *s_main, *s_mp_main;
static PyObject *s_reduce_ex, *s_module, *s_qualname, *s_dtype, *s_kind,
    *s_hasobject, *s_names, *s_descr, *s_str, *s_shape, *s_tobytes, *s_init,
    *s_call, *s_wrapped, *s_co_code, *s_co_qualname, *s_co_varnames,
    *s_co_freevars, *s_co_cellvars, *s_co_exceptiontable, *s_frozen, *s_copy, *s_C;

static int feed_object(ds_hasher *h, PyObject *o);
static int feed_function(ds_hasher *h, PyObject *func, int with_code, PyTypeObject *owner);
static int code_info(ds_hasher *h, PyObject *code, CodeInfo *out);

/* ------------------------------------------------------------------ sink */

static Sink *
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

static void
Sink_free(Sink *s)
{
    if (s != NULL) {
        XXH3_freeState(s->st);
        PyMem_Free(s);
    }
}

static inline void
Sink_reset(Sink *s)
{
    s->len = 0;
    s->streaming = 0;
}

static void
Sink_flush(Sink *s)
{
    if (!s->streaming) {
        (void)XXH3_128bits_reset(s->st);
        s->streaming = 1;
    }
    (void)XXH3_128bits_update(s->st, s->buf, s->len);
    s->len = 0;
}

static void
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

static inline void
Sink_write(Sink *s, const void *p, size_t n)
{
    if (n == 0)
        return;                 /* p may be NULL for an empty buffer */
    if (n <= SINK_SIZE - s->len) {
        memcpy(s->buf + s->len, p, n);
        s->len += n;
    }
    else {
        Sink_write_slow(s, p, n);
    }
}

static inline void
Sink_u8(Sink *s, unsigned v)
{
    if (s->len == SINK_SIZE)
        Sink_flush(s);
    s->buf[s->len++] = (unsigned char)v;
}

/* Little-endian whatever the host, so keys match across machines. */
static inline void
Sink_u64(Sink *s, uint64_t v)
{
    unsigned char b[8];
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(b, &v, 8);
#else
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
#endif
    if (SINK_SIZE - s->len >= 8) {
        memcpy(s->buf + s->len, b, 8);
        s->len += 8;
    }
    else {
        Sink_write_slow(s, b, 8);
    }
}

/* A length or count: LEB128 (7 bits a byte, high bit = more follows), so
 * the common small ones take one byte. */
static inline void
Sink_len(Sink *s, uint64_t v)
{
    if (v < 0x80 && s->len < SINK_SIZE) {
        s->buf[s->len++] = (unsigned char)v;
        return;
    }
    unsigned char b[10];
    size_t n = 0;
    do {
        b[n++] = (unsigned char)((v & 0x7F) | (v >= 0x80 ? 0x80 : 0));
        v >>= 7;
    } while (v != 0);
    Sink_write(s, b, n);
}

static XXH128_hash_t
Sink_hash(Sink *s)
{
    if (s->streaming) {
        (void)XXH3_128bits_update(s->st, s->buf, s->len);
        return XXH3_128bits_digest(s->st);
    }
    return XXH3_128bits(s->buf, s->len);
}

/* Big-endian (XXH128's canonical form): the same bytes on every host. */
static void
Sink_write_hash(Sink *s, XXH128_hash_t d)
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, d);
    Sink_write(s, c.digest, DS_DIGEST_SIZE);
}

static void
Sink_digest(Sink *s, unsigned char out[DS_DIGEST_SIZE])
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, Sink_hash(s));
    memcpy(out, c.digest, DS_DIGEST_SIZE);
}

/* Nested sink for a sub-digest; the caller pops it on every path. */
static int
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

static void
hasher_pop(ds_hasher *h)
{
    h->nest--;
    h->sink = h->sinks[h->nest];
}

/* One level of nesting, bounded by MAX_DEPTH: cycles end here, and the C
 * stack this recursion uses stays small (calls into Python code, such as
 * __reduce_ex__, are checked by the interpreter's own recursion limit). */
static int
hasher_enter(ds_hasher *h)
{
    if (h->depth >= MAX_DEPTH) {
        PyErr_SetString(PyExc_ValueError,
                        "cannot key a recursive value (or one nested deeper than 100 levels)");
        return -1;
    }
    h->depth++;
    return 0;
}

static void
hasher_leave(ds_hasher *h)
{
    h->depth--;
}

/* Errors that must reach the user rather than be keyed around. */
static int
error_is_fatal(void)
{
    return PyErr_ExceptionMatches(PyExc_MemoryError)
        || !PyErr_ExceptionMatches(PyExc_Exception);
}

/* ------------------------------------------------------------ scalars */

static DS_NOINLINE int
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

/* A str: tag, code point count, UTF-8. Short ASCII (names, most keys)
 * is copied in one go. */
static inline int
feed_str(Sink *s, unsigned tag, PyObject *o)
{
#if PY_VERSION_HEX < 0x030C0000
    if (!PyUnicode_IS_READY(o))
        return feed_str_slow(s, tag, o);
#endif
    if (PyUnicode_IS_ASCII(o)) {
        size_t n = (size_t)PyUnicode_GET_LENGTH(o);
        if (n < 0x80 && SINK_SIZE - s->len >= n + 2) {
            unsigned char *p = s->buf + s->len;
            p[0] = (unsigned char)tag;
            p[1] = (unsigned char)n;        /* Sink_len of n < 0x80 */
            memcpy(p + 2, PyUnicode_DATA(o), n);
            s->len += n + 2;
            return 0;
        }
    }
    return feed_str_slow(s, tag, o);
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

static inline void
feed_raw_bytes(Sink *s, unsigned tag, const void *p, size_t n)
{
    Sink_u8(s, tag);
    Sink_len(s, (uint64_t)n);
    Sink_write(s, p, n);
}

/* A name (module, qualname): a str in practice; anything else is keyed by a
 * marker only, never recursed into. */
static int
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
static int
feed_module_name(ds_hasher *h, PyObject *mod)
{
    if (mod != NULL && PyUnicode_Check(mod) && PyUnicode_Compare(mod, s_mp_main) == 0)
        mod = s_main;
    return feed_name(h, mod);
}

/* ------------------------------------------------------ containers */

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
    if (hasher_enter(h) < 0)
        return -1;
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

static DS_NOINLINE int
feed_dict(ds_hasher *h, PyObject *d, int counted)
{
    Py_ssize_t n = PyDict_GET_SIZE(d), pos = 0, got = 0;
    PyObject *small[16] = {NULL};
    PyObject **items = small;
    PyObject *k, *v;
    int ret = -1;

    if (n > 8) {
        if ((size_t)n > SIZE_MAX / (2 * sizeof(PyObject *))) {
            PyErr_NoMemory();
            return -1;
        }
        items = PyMem_Malloc((size_t)n * 2 * sizeof(PyObject *));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
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

static int
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
static int
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

static int
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

/* A builtin function or method: its name, and its receiver (`"abc".upper`
 * is keyed with "abc"; `math.sqrt`'s receiver is its module). */
static int
feed_builtin(ds_hasher *h, PyObject *o)
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
    if (self == NULL)
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
static int
feed_method(ds_hasher *h, PyObject *m, int with_code)
{
    int r;
    PyObject *func = PyMethod_GET_FUNCTION(m);
    PyObject *self = PyMethod_GET_SELF(m);
    if (hasher_enter(h) < 0)
        return -1;
    Sink_u8(h->sink, KT_METHOD);
    /* Its helpers include the methods it calls (self.other()). */
    PyTypeObject *owner = PyType_Check(self) ? (PyTypeObject *)self : Py_TYPE(self);
    if (PyFunction_Check(func))
        r = feed_function(h, func, with_code, owner);
    else
        r = feed_object(h, func);
    if (r == 0)
        r = feed_object(h, self);
    hasher_leave(h);
    return r;
}

/* ------------------------------------------------------------- code */

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
     * code's (lambdas, comprehensions, inner functions). */
    names = PyList_New(0);
    if (names == NULL || add_names(names, co->co_names) < 0)
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
static int
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

static int
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

static int
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

static int feed_helpers(ds_hasher *h, PyObject *globals, PyObject *names, int depth,
                        PyTypeObject *owner);

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
            if (r == 0) {
                Sink_write(h->sink, ci.digest, DS_DIGEST_SIZE);
                r = feed_defaults(h, f);
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
static int
feed_helpers(ds_hasher *h, PyObject *globals, PyObject *names, int depth,
             PyTypeObject *owner)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        PyObject *v = PyDict_Check(globals) ? PyDict_GetItemWithError(globals, name) : NULL;
        if (v != NULL) {
            Py_INCREF(v);
            PyObject *fn = helper_function(v);
            Py_DECREF(v);
            if (fn != NULL && feed_helper(h, KT_HELPER, name, fn, depth, NULL) < 0)
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
static int
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
        Sink_u8(h->sink, KT_CODE);
        Sink_write(h->sink, ci.digest, DS_DIGEST_SIZE);
        if (feed_defaults(h, f) < 0)
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

/* ----------------------------------------------------------- buffers */

static void
feed_shape(Sink *s, int ndim, const Py_ssize_t *shape, Py_ssize_t len, Py_ssize_t itemsize)
{
    Sink_len(s, (uint64_t)ndim);
    for (int i = 0; i < ndim; i++) {
        if (shape != NULL)
            Sink_u64(s, (uint64_t)shape[i]);
        else
            Sink_u64(s, (uint64_t)(itemsize ? len / itemsize : len));
    }
}

/* memoryview, array.array, pickle.PickleBuffer and other exporters that
 * cannot be pickled: type, format, item size, shape and the bytes in C
 * order. Returns 0, -1 on error, 1 when the buffer cannot key the value
 * (no buffer, or one holding pointers). */
static int
feed_buffer(ds_hasher *h, PyObject *o)
{
    Py_buffer view;
    char *tmp = NULL;
    int ret = -1;

    if (PyObject_GetBuffer(o, &view, PyBUF_FULL_RO) < 0) {
        if (error_is_fatal())
            return -1;
        PyErr_Clear();
        return 1;
    }
    const char *fmt = view.format != NULL ? view.format : "B";
    if (strpbrk(fmt, "OP&") != NULL) {
        /* Object or pointer items: their bytes are addresses. */
        PyBuffer_Release(&view);
        return 1;
    }
    const void *data = view.buf;
    if (!PyBuffer_IsContiguous(&view, 'C')) {
        tmp = PyMem_Malloc(view.len > 0 ? (size_t)view.len : 1);
        if (tmp == NULL) {
            PyErr_NoMemory();
            goto error;
        }
        if (PyBuffer_ToContiguous(tmp, &view, view.len, 'C') < 0)
            goto error;
        data = tmp;
    }
    Sink_u8(h->sink, KT_BUFFER);
    if (feed_type(h, Py_TYPE(o)) < 0)
        goto error;
    feed_raw_bytes(h->sink, KT_STR, fmt, strlen(fmt));
    Sink_u64(h->sink, (uint64_t)view.itemsize);
    feed_shape(h->sink, view.ndim, view.shape, view.len, view.itemsize);
    feed_raw_bytes(h->sink, KT_BYTES, data, (size_t)view.len);
    ret = 0;
error:
    PyMem_Free(tmp);
    PyBuffer_Release(&view);
    return ret;
}

static int
is_ndarray(PyTypeObject *t)
{
    if (t == ndarray_type)
        return 1;
    if (ndarray_type == NULL && strcmp(t->tp_name, "numpy.ndarray") == 0) {
        ndarray_type = (PyTypeObject *)Py_NewRef((PyObject *)t);
        return 1;
    }
    return 0;
}

/* A numpy.ndarray of plain data: dtype (str, and descr when structured),
 * shape and the data bytes in C order, streamed straight from the array's
 * buffer without a copy. A non-contiguous array is copied once, by
 * arr.copy(order="C"), so a strided view keys like its contiguous copy; a
 * dtype the buffer protocol refuses (datetime64) is read by arr.tobytes().
 * Returns 1 when the dtype holds objects: the caller then uses the generic
 * path. */
static int
feed_ndarray(ds_hasher *h, PyObject *o)
{
    PyObject *dtype = NULL, *kind = NULL, *hasobj = NULL, *fnames = NULL,
        *dstr = NULL, *descr = NULL, *copy = NULL, *bytes = NULL;
    Py_buffer view;
    int have_view = 0, ret = -1;

    if ((dtype = PyObject_GetAttr(o, s_dtype)) == NULL
        || (kind = PyObject_GetAttr(dtype, s_kind)) == NULL
        || (hasobj = PyObject_GetAttr(dtype, s_hasobject)) == NULL)
        goto error;
    int objects = PyObject_IsTrue(hasobj);
    if (objects < 0)
        goto error;
    /* Only kinds whose bytes are their value (not "O", nor numpy 2's
     * variable-width strings, which hold pointers). */
    Py_UCS4 k = 0;
    if (PyUnicode_Check(kind) && PyUnicode_GET_LENGTH(kind) == 1)
        k = PyUnicode_READ_CHAR(kind, 0);
    if (objects || k == 0 || k > 127 || strchr("biufcSUVMm", (int)k) == NULL) {
        ret = 1;
        goto error;
    }
    if ((fnames = PyObject_GetAttr(dtype, s_names)) == NULL
        || (dstr = PyObject_GetAttr(dtype, s_str)) == NULL)
        goto error;
    if (fnames != Py_None && (descr = PyObject_GetAttr(dtype, s_descr)) == NULL)
        goto error;

    PyObject *src = o;
    if (PyObject_GetBuffer(o, &view, PyBUF_C_CONTIGUOUS) == 0) {
        have_view = 1;
    }
    else {
        if (error_is_fatal())
            goto error;
        PyErr_Clear();
        copy = PyObject_VectorcallMethod(s_copy, (PyObject *[]){o, s_C},
                                         2, NULL);
        if (copy == NULL)
            goto error;
        src = copy;
        if (PyObject_GetBuffer(copy, &view, PyBUF_C_CONTIGUOUS) == 0) {
            have_view = 1;
        }
        else {
            if (error_is_fatal())
                goto error;
            PyErr_Clear();
            bytes = PyObject_CallMethodNoArgs(copy, s_tobytes);
            if (bytes == NULL)
                goto error;
            if (!PyBytes_Check(bytes)) {
                PyErr_SetString(PyExc_TypeError, "ndarray.tobytes() did not return bytes");
                goto error;
            }
        }
    }

    Sink_u8(h->sink, KT_NDARRAY);
    if (feed_object(h, dstr) < 0 || feed_object(h, descr ? descr : Py_None) < 0)
        goto error;
    if (have_view) {
        feed_shape(h->sink, view.ndim, view.shape, view.len, view.itemsize);
        feed_raw_bytes(h->sink, KT_BYTES, view.buf, (size_t)view.len);
    }
    else {
        PyObject *shape = PyObject_GetAttr(src, s_shape);
        if (shape == NULL)
            goto error;
        if (!PyTuple_Check(shape)) {
            Py_DECREF(shape);
            PyErr_SetString(PyExc_TypeError, "ndarray.shape is not a tuple");
            goto error;
        }
        Py_ssize_t nd = PyTuple_GET_SIZE(shape);
        Sink_len(h->sink, (uint64_t)nd);
        for (Py_ssize_t i = 0; i < nd; i++) {
            Py_ssize_t d = PyLong_AsSsize_t(PyTuple_GET_ITEM(shape, i));
            if (d == -1 && PyErr_Occurred()) {
                Py_DECREF(shape);
                goto error;
            }
            Sink_u64(h->sink, (uint64_t)d);
        }
        Py_DECREF(shape);
        feed_raw_bytes(h->sink, KT_BYTES, PyBytes_AS_STRING(bytes),
                       (size_t)PyBytes_GET_SIZE(bytes));
    }
    ret = 0;
error:
    if (have_view)
        PyBuffer_Release(&view);
    Py_XDECREF(dtype);
    Py_XDECREF(kind);
    Py_XDECREF(hasobj);
    Py_XDECREF(fnames);
    Py_XDECREF(dstr);
    Py_XDECREF(descr);
    Py_XDECREF(copy);
    Py_XDECREF(bytes);
    return ret;
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
        int rc = PyDict_CheckExact(state) ? feed_dict(h, state, 0) : feed_object(h, state);
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

/* Everything without a dedicated encoding: pickle's description of it. A
 * value pickle refuses (a lock, a file, a generator) is keyed by its type
 * and recorded; the rest of the key stays. */
static int
feed_reduce(ds_hasher *h, PyObject *o)
{
    PyObject *r = NULL;
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
        return feed_unhashable(h, o);
    }
    int ret;
    if (hasher_enter(h) < 0) {
        Py_DECREF(r);
        return -1;
    }
    if (PyUnicode_Check(r))
        ret = feed_global(h, o, r);
    else if (PyTuple_Check(r) && PyTuple_GET_SIZE(r) >= 2 && PyTuple_GET_SIZE(r) <= 6)
        ret = feed_reduce_tuple(h, o, r);
    else
        ret = feed_unhashable(h, o);
    hasher_leave(h);
    Py_DECREF(r);
    return ret;
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
        return feed_builtin(h, o);
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

static int
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
    PyMem_Free(h);
}

void
keys_reset(ds_hasher *h)
{
    h->nest = 0;
    h->depth = 0;
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

int
keys_update_args(ds_hasher *h, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t nk = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    Py_ssize_t small[16];
    Py_ssize_t *order = small;
    int ret = -1;

    Sink_u8(h->sink, KT_ARGS);
    Sink_len(h->sink, (uint64_t)nargs);
    for (Py_ssize_t i = 0; i < nargs; i++) {
        if (feed_object(h, args[i]) < 0)
            return -1;
    }
    if (nk > 16) {
        order = PyMem_Malloc((size_t)nk * sizeof *order);
        if (order == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    /* Keywords by name (their order in the call does not matter);
     * insertion sort: calls have few. */
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
        if (feed_str(h->sink, KT_STR, PyTuple_GET_ITEM(kwnames, k)) < 0
            || feed_object(h, args[nargs + k]) < 0)
            goto error;
    }
    ret = 0;
error:
    if (order != small)
        PyMem_Free(order);
    return ret;
}

/* The code of what calling a class or an instance runs, when it is a
 * function (a user's __init__ or __call__), or None. */
static int
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

int
keys_update_callee(ds_hasher *h, PyObject *callee, int with_code)
{
    Sink_u8(h->sink, KT_CALLEE);
    if (PyFunction_Check(callee))
        return feed_function(h, callee, with_code, NULL);
    if (PyMethod_Check(callee))
        return feed_method(h, callee, with_code);
    if (PyCFunction_Check(callee))
        return feed_builtin(h, callee);
    if (PyType_Check(callee)) {
        if (feed_type(h, (PyTypeObject *)callee) < 0)
            return -1;
        return feed_entry_code(h, callee, s_init, with_code);
    }
    /* A callable instance: its type, its __call__, and the instance. */
    Sink_u8(h->sink, KT_INSTANCE);
    if (feed_type(h, Py_TYPE(callee)) < 0
        || feed_entry_code(h, (PyObject *)Py_TYPE(callee), s_call, with_code) < 0)
        return -1;
    return feed_object(h, callee);
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
    Py_XSETREF(lib_prefixes, t);
    /* Whether code is the user's own depends on the prefixes. */
    code_table_clear();
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
    if (keys_update_callee(h, args[0], 1) < 0)
        return -1;
    return keys_update_args(h, args + 1, nargs - 1, kwnames);
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
