/* What the parts of the key hasher share: the byte sink a key is fed
 * into, the hasher's state, the persisted type tags, and the feed_*
 * functions each part offers the others. Internal to keys*.c.
 *
 *   keys.c          dispatch, scalars, containers, pickle's reduce; the API
 *   keys_call.c     a call: callee, receiver, arguments, keywords, chains
 *   keys_code.c     code identity: functions, methods, the user's helpers
 *   keys_buffers.c  memory: buffers and NumPy arrays, at memory speed
 *   keys_files.c    files: paths and open files by the file they name
 * Each part declares its functions in its own header (keys_code.h,
 * keys_files.h, keys_buffers.h), included at the end of this one.
 */
#ifndef DEVSTASH_KEYS_FEED_H
#define DEVSTASH_KEYS_FEED_H

#include "keys.h"

#define XXH_INLINE_ALL
#include <xxhash.h>


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
    KT_BACKREF = 0x34, KT_DICT_KEYS = 0x35, KT_DICT_VALUES = 0x36, KT_DICT_ITEMS = 0x37,
    KT_PATH = 0x38, KT_CLASS = 0x39, KT_GLOBAL_VALUE = 0x3a,
    KT_FILE = 0x3b, KT_DIRECTORY = 0x3c, KT_OPEN_FILE = 0x3d, KT_NO_FILE = 0x3e,
    KT_ARGS = 0x40, KT_KWARGS = 0x41, KT_CALLEE = 0x42, KT_IGNORED = 0x43,
    /* memory beyond NumPy (keys_buffers.c) */
    KT_TENSOR = 0x50, KT_STORAGE = 0x51, KT_ARRAY = 0x52, KT_NN_MODULE = 0x53,
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
    /* The depth at which a direct input of the call (an argument, the
     * receiver) is being fed, or -1: a direct input that could only be
     * keyed by its type makes the call uncacheable; nested inside an
     * object's state (a lock in a client) its type is enough. */
    int direct_depth;
    /* ignore=: names left out of the key, arguments and globals alike
     * (borrowed tuple of str, or NULL). */
    PyObject *ignore;
    PyObject *unhashable;       /* list of str, or NULL */
    /* When set (keys_record_parts), each part of the key (an argument, the
     * callee's code, a global, a file) is hashed into its own digest and
     * (label, digest) appended here: a miss can then say which input
     * changed. A key fed this way differs from an ordinary one; it is only
     * ever compared with another recording. */
    PyObject *parts;
    /* The containers and objects being fed, outermost first: meeting one
     * again is a cycle, fed as a back-reference (its distance up the
     * stack), as pickle's memo does. Addresses are compared, never fed. */
    int nopen;
    PyObject *open[MAX_DEPTH + 1];
    Sink *sinks[MAX_SINKS];     /* [0] is the key; the others are allocated on use */
};

/* What the key needs of a code object; cached per code object. */
typedef struct {
    unsigned char digest[DS_DIGEST_SIZE];
    PyObject *names;            /* tuple: names used by the code and its nested code */
    int is_user;                /* defined outside the library prefixes */
    int unique;                 /* its qualified name has no "<locals>"/"<lambda>" */
} CodeInfo;

/* Interned attribute names (keys_module_init). */
extern PyObject *s_main, *s_mp_main;
extern PyObject *s_reduce_ex, *s_module, *s_qualname, *s_dtype, *s_kind,
    *s_hasobject, *s_names, *s_descr, *s_str, *s_shape, *s_tobytes, *s_init,
    *s_call, *s_wrapped, *s_co_code, *s_co_qualname, *s_co_varnames,
    *s_co_freevars, *s_co_cellvars, *s_co_exceptiontable, *s_frozen, *s_copy, *s_C,
    *s_fspath, *s_dict, *s_pathlib;

/* ---- the sink (keys.c) */

Sink *Sink_new(void);
void Sink_free(Sink *s);
void Sink_flush(Sink *s);
void Sink_write_slow(Sink *s, const void *p, size_t n);
XXH128_hash_t Sink_hash(Sink *s);
void Sink_write_hash(Sink *s, XXH128_hash_t d);
void Sink_digest(Sink *s, unsigned char out[DS_DIGEST_SIZE]);

static inline void
Sink_reset(Sink *s)
{
    s->len = 0;
    s->streaming = 0;
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

/* ---- nesting (keys.c) */

int hasher_push(ds_hasher *h);

static inline void
hasher_pop(ds_hasher *h)
{
    h->nest--;
    h->sink = h->sinks[h->nest];
}

/* One level of nesting, bounded by MAX_DEPTH: cycles end here, and the C
 * stack this recursion uses stays small (calls into Python code, such as
 * __reduce_ex__, are checked by the interpreter's own recursion limit). */
static inline int
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

static inline void
hasher_leave(ds_hasher *h)
{
    h->depth--;
}

/* Errors that must reach the user rather than be keyed around. */
static inline int
error_is_fatal(void)
{
    return PyErr_ExceptionMatches(PyExc_MemoryError)
        || !PyErr_ExceptionMatches(PyExc_Exception);
}

/* ---- values (keys.c) */

int feed_str_slow(Sink *s, unsigned tag, PyObject *o);

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

static inline void
feed_raw_bytes(Sink *s, unsigned tag, const void *p, size_t n)
{
    Sink_u8(s, tag);
    Sink_len(s, (uint64_t)n);
    Sink_write(s, p, n);
}

int feed_object(ds_hasher *h, PyObject *o);
/* Parts (see ds_hasher.parts): part_begin before feeding one, then
 * part_end with its label (a new reference, stolen; NULL: error) or
 * part_abort on failure. No-ops unless recording. */
int part_begin(ds_hasher *h);
int part_end(ds_hasher *h, PyObject *label);
void part_abort(ds_hasher *h);

int feed_name(ds_hasher *h, PyObject *o);
int feed_module_name(ds_hasher *h, PyObject *mod);
int feed_type(ds_hasher *h, PyTypeObject *t);
int feed_module(ds_hasher *h, PyObject *m);
int feed_unhashable(ds_hasher *h, PyObject *o);
int feed_dict(ds_hasher *h, PyObject *d, int counted);
/* Cycles (see ds_hasher.open): feed_backref feeds a back-reference and
 * returns 1 when `o` is being fed already, else 0; open_object marks `o`
 * as being fed (-1 with ValueError when too deep), close_object unmarks. */
int feed_backref(ds_hasher *h, PyObject *o);
int open_object(ds_hasher *h, PyObject *o);
void close_object(ds_hasher *h);

/* ---- a call (keys_call.c) */

/* Whether `name` is one of h->ignore's names. */
int is_ignored_name(ds_hasher *h, PyObject *name);
/* Feeds a direct input of the call (see direct_depth). */
int feed_direct(ds_hasher *h, PyObject *o);
/* A callee's identity, its receiver a direct input. */
int feed_callee(ds_hasher *h, PyObject *callee, const ds_call_options *o);

/* Each part's own functions, declared in its header. */
#include "keys_code.h"
#include "keys_files.h"
#include "keys_buffers.h"

#endif /* DEVSTASH_KEYS_FEED_H */
