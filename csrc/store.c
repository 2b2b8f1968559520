/* The LMDB store: one environment per cache folder per process, and the
 * Python type devstash._core.Store around it. See store.h for the C contract.
 *
 * Tables (named LMDB databases; integers little-endian, "varint" = LEB128):
 *   values  key(16) -> u8 0xD5 (magic, format 1) | f64 created |
 *                      varint pickle_len | varint nbuffers |
 *                      nbuffers x u64 end offset of buffer i within the
 *                      buffer data | pickle | buffer 0 | buffer 1 | ...
 *           Cumulative end offsets give buffer i in O(1), and the lookup
 *           checks them once against the record size.
 *   meta    key(16) -> u8 1 (version) | u8 flags | f64 created | f64 compute |
 *                      [f64 ttl] | [f64 last_hit] | varint size | varint hits |
 *                      either (META_INLINE) varint callee_len, callee, site
 *                      or u64 id of a "sites" record.
 *   sites   u64 id  -> varint callee_len | callee | site.  Many entries share
 *           one marked line: storing its strings once keeps an entry's
 *           bookkeeping small (the benchmark allows 200 bytes per entry).
 *           Site records are never deleted: there is one per marked line.
 *   code    key(16) -> raw bytes (the rewriter's compiled-code cache).
 *
 * Durability: the environment runs with MDB_NOSYNC | MDB_WRITEMAP. A commit
 * writes pages straight into the shared map, the meta page last, and does not
 * sync. The kernel keeps every write of a killed process, and LMDB's
 * copy-on-write tree only becomes visible through the meta page, so a process
 * crash (SIGKILL included) at any instant leaves each entry whole or absent.
 * We give up durability against an OS crash or power loss: the kernel writes
 * dirty pages back in any order, so writes since the last mdb_env_sync may be
 * lost and the file may even be damaged (delete the folder then). For a cache
 * that is right: a synced commit costs a disk flush (milliseconds) per value,
 * and a lost entry is only recomputed. store_flush and close sync; at a
 * process's exit devstash only starts the writeback (store_flush_nowait).
 * Why WRITEMAP: without it a commit costs one pwrite per scattered dirty page
 * (about 7 for a small entry: 12 us instead of 3.5 us). Its two hazards in
 * LMDB 0.9 are handled here: opening or resizing ftruncates data.mdb to this
 * process's map size, which could cut the file under another process's
 * larger map (SIGBUS there), so map size changes take an flock on the folder
 * and never go below the file's size (env_set_mapsize); and writing to a
 * sparse file on a full disk raises SIGBUS instead of ENOSPC, so a write
 * first fallocates the pages it may use (env_reserve_disk).
 *
 * Threads: every function runs with the GIL held and never releases it, so a
 * StoreObject is used by one thread at a time and a write transaction always
 * begins and commits inside one call. A read transaction may stay open while
 * Python code runs (the hit path unpickles inside it), hence MDB_NOTLS and
 * the nesting count. */
#include "store.h"
#include "trust.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#define VALUES_MAGIC 0xD5
#define META_VERSION 1
#define META_TTL 1          /* ttl follows */
#define META_LAST_HIT 2     /* last_hit follows */
#define META_INLINE 4       /* callee and site inline, not in "sites" */
#define VARINT_MAX 10
#define DEFAULT_MAP_SIZE ((size_t)1 << 30)
#define WRITE_ATTEMPTS 64
#define FILL_PYERR (-1)     /* a fill callback set a Python exception */

/* ---- environments: one per folder per process --------------------------- */

typedef struct ds_env {
    MDB_env *env;
    MDB_dbi values, meta, sites, code;
    int have_tables;        /* 0 only for a read-only env of an empty store */
    int rdonly;
    int refs;               /* StoreObjects using it */
    int reading;            /* of those, how many have a read transaction open */
    int dirty;              /* commits since the last mdb_env_sync */
    int dirfd;              /* the folder, flock'ed around map size changes */
    int fd;                 /* data.mdb, LMDB's descriptor */
    size_t psize;           /* LMDB page size */
    size_t allocated;       /* data.mdb is fallocate'd up to here */
    int no_fallocate;       /* the file system cannot */
    int stale_readers;      /* reader slots of dead processes cleared at open */
    dev_t dev;
    ino_t ino;
    struct ds_env *next;
} ds_env;

/* LMDB forbids two environments on one file in a process (closing one drops
 * the other's fcntl locks), so Store objects on the same folder share one. */
static ds_env *env_list = NULL;

/* Bumped in a forked child: a StoreObject whose generation differs holds the
 * parent's environment, which the child must neither use nor close. */
static unsigned long fork_gen = 0;
static int atfork_registered = 0;

static void
store_atfork_child(void)
{
    fork_gen++;
    /* The parent's environments are leaked in the child on purpose: closing
     * one would close descriptors and clear reader slots (MDB_NOTLS slots
     * are freed by mdb_txn_abort) that the parent still uses. */
    env_list = NULL;
}

/* ---- pending hits: an open-addressing table, flushed by store_flush ----- */

typedef struct {
    unsigned char key[DS_DIGEST_SIZE];
    uint64_t count;         /* 0: nothing pending (slot still keyed) */
    double last;
    int used;
} ds_hit;

struct StoreObject {
    PyObject_HEAD
    ds_env *env;            /* NULL once closed */
    MDB_txn *rtxn;          /* the reader, reset between reads (MDB_NOTLS) */
    unsigned int reading;   /* nesting depth of store_read_begin */
    unsigned long gen;      /* fork generation env belongs to */
    int readonly;
    size_t map_size;        /* as asked for; reused to reopen after a fork */
    PyObject *path;         /* str, as given */
    PyObject *abspath;      /* bytes, resolved: a child may have chdir'd */
    ds_hit *hits;
    size_t hits_cap;        /* power of two, or 0 */
    size_t hits_used;
    double saved;           /* compute seconds of the hits flushed so far */
};

/* ---- small encoders ----------------------------------------------------- */

static void
put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t
get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void
put_f64(unsigned char *p, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v);
    put_u64(p, v);
}

static double
get_f64(const unsigned char *p)
{
    uint64_t v = get_u64(p);
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}

static size_t
varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static unsigned char *
put_varint(unsigned char *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    return p;
}

/* Reads a varint from [*p, end); 0 or -1 if truncated or overlong. */
static int
get_varint(const unsigned char **p, const unsigned char *end, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return -1;
        unsigned char b = *(*p)++;
        if (shift == 63 && b > 1)
            return -1;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

static double
store_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- errors: the one place LMDB failures become exceptions -------------- */

/* Raises StoreError("<what>: <mdb_strerror(rc)>"), or "<what> '<path>': ..."
 * when a file is concerned. For system errors (rc > 0) the exception's errno
 * is set too, and filename when there is a path. */
static void
store_raise(int rc, const char *what, PyObject *path)
{
    PyObject *msg = NULL, *exc = NULL, *num = NULL;
    const char *reason = mdb_strerror(rc);

    msg = path ? PyUnicode_FromFormat("%s '%U': %s", what, path, reason)
               : PyUnicode_FromFormat("%s: %s", what, reason);
    if (msg == NULL)
        goto error;
    exc = PyObject_CallOneArg(ds_StoreError, msg);
    if (exc == NULL)
        goto error;
    if (rc > 0) {
        num = PyLong_FromLong(rc);
        if (num == NULL || PyObject_SetAttrString(exc, "errno", num) < 0)
            goto error;
    }
    /* The path is in the message; setting `filename` as well would make
     * OSError print "[Errno N] None: 'path'" and drop the message. */
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
error:
    Py_XDECREF(msg);
    Py_XDECREF(exc);
    Py_XDECREF(num);
}

/* LMDB aborts the process when it meets a page that cannot be (a data.mdb
 * damaged from outside: a killed process never leaves one). Nothing here can
 * stop that abort; at least the user learns what happened and what to do. */
static void
store_on_assert(MDB_env *env, const char *msg)
{
    const char *path = NULL;
    if (mdb_env_get_path(env, &path) != 0)
        path = NULL;
    fprintf(stderr, "devstash: the cache in %s is damaged (%s); run `devstash doctor` "
            "or delete the folder\n", path ? path : "?", msg);
}

/* ---- environment lifetime and map size ---------------------------------- */

static int
env_lock(int dirfd)
{
    while (flock(dirfd, LOCK_EX) < 0) {
        if (errno != EINTR)
            return -1;
    }
    return 0;
}

/* Sets the map size to at least `size` and at least data.mdb's size, under
 * the folder's flock, so that no process ever shrinks the file (see the top
 * of the file). size 0 adopts the file's size: what another process grew.
 * Remapping moves the map, so no transaction of this process may be open. */
static int
env_set_mapsize(ds_env *e, size_t size, const char *what)
{
    struct stat st;
    int rc;

    if (e->reading > 0) {
        /* The records a reader holds point into the map. */
        store_raise(size ? MDB_MAP_FULL : MDB_MAP_RESIZED,
                    size ? "cannot grow the map while a read is in progress"
                         : "cannot adopt the new map size while a read is in progress",
                    NULL);
        return -1;
    }
    if (env_lock(e->dirfd) < 0) {
        store_raise(errno, what, NULL);
        return -1;
    }
    if (fstat(e->fd, &st) < 0) {
        rc = errno;
    }
    else {
        if ((size_t)st.st_size > size)
            size = (size_t)st.st_size;
        rc = mdb_env_set_mapsize(e->env, size);
    }
    flock(e->dirfd, LOCK_UN);
    if (rc != 0) {
        store_raise(rc, what, NULL);
        return -1;
    }
    return 0;
}

/* Adopts a map grown by another process (MDB_MAP_RESIZED). */
static int
env_adopt_mapsize(ds_env *e)
{
    return env_set_mapsize(e, 0, "adopt map size");
}

/* Grows the map after MDB_MAP_FULL: at least doubles it, and makes room for
 * `need` more bytes, so one huge value needs one retry, not many. */
static int
env_grow(ds_env *e, size_t need)
{
    MDB_envinfo info;
    int rc;

    if ((rc = mdb_env_info(e->env, &info)) != 0) {
        store_raise(rc, "grow map", NULL);
        return -1;
    }
    size_t cur = info.me_mapsize;
    size_t used = (info.me_last_pgno + 1) * e->psize;
    size_t want = cur <= SIZE_MAX / 2 ? cur * 2 : SIZE_MAX;
    /* Room for the data, and for the tree and free-list pages the
     * transaction touches. */
    size_t extra = need / 8 + 64 * e->psize;
    if (need > SIZE_MAX - used - extra) {
        store_raise(MDB_MAP_FULL, "grow map", NULL);
        return -1;
    }
    if (want < used + need + extra)
        want = used + need + extra;
    want = (want + e->psize - 1) / e->psize * e->psize;
    return env_set_mapsize(e, want, "grow map");
}

/* Gives real disk blocks to the pages a write transaction may take beyond
 * the last used page, so a full disk is ENOSPC here and not SIGBUS inside
 * the map. Called inside the write transaction, so the last page is stable.
 * Allocates ahead in chunks: most writes need no system call. Returns 0 or
 * an errno. */
static int
env_reserve_disk(ds_env *e, size_t need)
{
    MDB_envinfo info;

    if (e->no_fallocate || e->rdonly || mdb_env_info(e->env, &info) != 0)
        return 0;
    size_t start = (info.me_last_pgno + 1) * e->psize;
    size_t slack = 32 * e->psize;
    if (need > SIZE_MAX - start - slack)
        return 0;   /* cannot fit the map anyway: MDB_MAP_FULL follows */
    size_t end = start + need + slack;
    if (end <= e->allocated)
        return 0;
    size_t chunk = start / 16 > ((size_t)1 << 20) ? start / 16 : ((size_t)1 << 20);
    if (end - start < chunk && chunk <= SIZE_MAX - start)
        end = start + chunk;
    if (end > info.me_mapsize)
        end = info.me_mapsize;
    if (end <= start)
        return 0;
    if (fallocate(e->fd, FALLOC_FL_KEEP_SIZE, (off_t)start, (off_t)(end - start)) < 0) {
        if (errno == EOPNOTSUPP || errno == ENOSYS) {
            e->no_fallocate = 1;
            return 0;
        }
        return errno;
    }
    e->allocated = end;
    return 0;
}

/* Key order of the 16-byte tables: exactly memcmp's (so any LMDB tool
 * reads them), compared as two big-endian words instead of byte by byte. */
static int
key_compare(const MDB_val *a, const MDB_val *b)
{
    if (a->mv_size == DS_DIGEST_SIZE && b->mv_size == DS_DIGEST_SIZE) {
        const unsigned char *p = a->mv_data, *q = b->mv_data;
        for (int half = 0; half < 2; half++, p += 8, q += 8) {
            uint64_t x = 0, y = 0;
            for (int i = 0; i < 8; i++) {
                x = x << 8 | p[i];
                y = y << 8 | q[i];
            }
            if (x != y)
                return x < y ? -1 : 1;
        }
        return 0;
    }
    size_t n = a->mv_size < b->mv_size ? a->mv_size : b->mv_size;
    int c = n ? memcmp(a->mv_data, b->mv_data, n) : 0;
    if (c != 0)
        return c;
    return a->mv_size < b->mv_size ? -1 : a->mv_size > b->mv_size;
}

/* Opens the four tables once; handles stay valid for the environment's life. */
static int
env_open_tables(ds_env *e)
{
    MDB_txn *txn = NULL;
    unsigned int flags = e->rdonly ? 0 : MDB_CREATE;
    int rc;

    for (int attempt = 0; attempt < WRITE_ATTEMPTS; attempt++) {
        rc = mdb_txn_begin(e->env, NULL, e->rdonly ? MDB_RDONLY : 0, &txn);
        if (rc == MDB_MAP_RESIZED) {
            if (env_adopt_mapsize(e) < 0)
                return -1;
            continue;
        }
        if (rc != 0)
            break;
        if ((rc = mdb_dbi_open(txn, "values", flags, &e->values)) == 0
            && (rc = mdb_dbi_open(txn, "meta", flags, &e->meta)) == 0
            && (rc = mdb_dbi_open(txn, "sites", flags, &e->sites)) == 0
            && (rc = mdb_dbi_open(txn, "code", flags, &e->code)) == 0
            && (rc = mdb_set_compare(txn, e->values, key_compare)) == 0
            && (rc = mdb_set_compare(txn, e->meta, key_compare)) == 0
            && (rc = mdb_set_compare(txn, e->code, key_compare)) == 0) {
            rc = mdb_txn_commit(txn);   /* keeps the handles, even read-only */
            txn = NULL;
            if (rc == 0) {
                e->have_tables = 1;
                return 0;
            }
        }
        if (txn != NULL)
            mdb_txn_abort(txn);
        txn = NULL;
        if (rc == MDB_NOTFOUND && e->rdonly)
            return 0;   /* nothing written yet: an empty store */
        if (rc != MDB_MAP_FULL)
            break;
        if (env_grow(e, 0) < 0)
            return -1;
    }
    store_raise(rc, "open tables", NULL);
    return -1;
}

/* mkdir -p, new folders with mode 0700: a cache holds the user's data. */
static int
make_dirs(char *path)
{
    if (mkdir(path, 0700) == 0)
        return chmod(path, 0700);   /* whatever the umask */
    if (errno == EEXIST)
        return 0;
    if (errno != ENOENT)
        return -1;
    char *slash = strrchr(path, '/');
    if (slash == NULL || slash == path)
        return -1;
    *slash = '\0';
    int r = make_dirs(path);
    *slash = '/';
    if (r < 0)
        return -1;
    if (mkdir(path, 0700) == 0)
        return chmod(path, 0700);
    return errno == EEXIST ? 0 : -1;
}

/* Finds or opens the environment of a folder; creates the folder unless
 * read-only. Returns a counted reference, or NULL with an exception. */
static ds_env *
env_acquire(PyObject *path, const char *fspath, size_t map_size, int rdonly)
{
    ds_env *e = NULL;
    char *buf = NULL, *data_path;
    struct stat st;
    int rc, locked = 0;

    size_t n = strlen(fspath);
    /* The folder, then its data file's path after the NUL. */
    buf = PyMem_Malloc(2 * n + 1 + sizeof "/data.mdb");
    if (buf == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    memcpy(buf, fspath, n + 1);
    data_path = buf + n + 1;
    while (n > 1 && buf[n - 1] == '/')
        buf[--n] = '\0';
    if (!rdonly && make_dirs(buf) < 0) {
        store_raise(errno, "cannot create cache folder", path);
        goto error;
    }
    if (stat(buf, &st) < 0) {
        store_raise(errno, "cannot open cache folder", path);
        goto error;
    }
    /* Loading a value runs code: a folder others could write is not used. */
    {
        char why[2 * PATH_MAX + 512];
        int trusted = trust_check_folder(buf, why, sizeof why);
        if (trusted < 0) {
            store_raise(errno, "cannot open cache folder", path);
            goto error;
        }
        if (trusted > 0) {
            PyObject *exc = PyObject_CallFunction(ds_StoreError, "is", EPERM, why);
            if (exc != NULL) {
                PyErr_SetObject(ds_StoreError, exc);
                Py_DECREF(exc);
            }
            goto error;
        }
    }
    if (!S_ISDIR(st.st_mode)) {
        store_raise(ENOTDIR, "cannot open cache folder", path);
        goto error;
    }
    for (ds_env *it = env_list; it != NULL; it = it->next) {
        if (it->dev == st.st_dev && it->ino == st.st_ino) {
            if (it->rdonly && !rdonly) {
                store_raise(EBUSY, "already open read-only in this process", path);
                goto error;
            }
            it->refs++;
            PyMem_Free(buf);
            return it;
        }
    }

    e = PyMem_Calloc(1, sizeof *e);
    if (e == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    e->rdonly = rdonly;
    e->dev = st.st_dev;
    e->ino = st.st_ino;
    e->fd = -1;
    e->dirfd = open(buf, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (e->dirfd < 0) {
        store_raise(errno, "cannot open cache folder", path);
        goto error;
    }
    if ((rc = mdb_env_create(&e->env)) != 0) {
        e->env = NULL;
        store_raise(rc, "create LMDB environment", path);
        goto error;
    }
    (void)mdb_env_set_assert(e->env, store_on_assert);
    long page = sysconf(_SC_PAGESIZE);
    size_t psize = page > 0 ? (size_t)page : 4096;
    if (map_size == 0)
        map_size = DEFAULT_MAP_SIZE;
    if (map_size > SIZE_MAX - psize)
        map_size = SIZE_MAX - psize;
    map_size = (map_size + psize - 1) / psize * psize;
    if (env_lock(e->dirfd) < 0) {
        store_raise(errno, "cannot lock cache folder", path);
        goto error;
    }
    locked = 1;
    /* Never below the file's size: see env_set_mapsize. */
    size_t dirlen = strlen(buf);
    memcpy(data_path, buf, dirlen);
    memcpy(data_path + dirlen, "/data.mdb", sizeof "/data.mdb");
    if (stat(data_path, &st) == 0 && (size_t)st.st_size > map_size)
        map_size = (size_t)st.st_size;
    if ((rc = mdb_env_set_maxdbs(e->env, 4)) != 0
        || (rc = mdb_env_set_maxreaders(e->env, 510)) != 0
        || (rc = mdb_env_set_mapsize(e->env, map_size)) != 0) {
        store_raise(rc, "configure LMDB environment", path);
        goto error;
    }
    unsigned int flags = MDB_NOTLS | MDB_NOSYNC | (rdonly ? MDB_RDONLY : MDB_WRITEMAP);
    if ((rc = mdb_env_open(e->env, buf, flags, 0600)) != 0) {
        store_raise(rc, "cannot open store", path);
        goto error;
    }
    flock(e->dirfd, LOCK_UN);
    locked = 0;
    MDB_stat est;
    if ((rc = mdb_env_get_fd(e->env, &e->fd)) != 0 || (rc = mdb_env_stat(e->env, &est)) != 0) {
        store_raise(rc, "cannot open store", path);
        goto error;
    }
    e->psize = est.ms_psize;
    /* Processes killed mid-read leave reader slots that pin old pages. */
    int dead = 0;
    if ((rc = mdb_reader_check(e->env, &dead)) != 0) {
        store_raise(rc, "check readers", path);
        goto error;
    }
    e->stale_readers = dead;   /* reported by check_readers() */
    if (env_open_tables(e) < 0)
        goto error;
    e->refs = 1;
    e->next = env_list;
    env_list = e;
    PyMem_Free(buf);
    return e;

error:
    if (e != NULL) {
        if (locked)
            flock(e->dirfd, LOCK_UN);
        if (e->env != NULL)
            mdb_env_close(e->env);   /* also after a failed mdb_env_open */
        if (e->dirfd >= 0)
            close(e->dirfd);
        PyMem_Free(e);
    }
    PyMem_Free(buf);
    return NULL;
}

/* Drops a reference; the last one syncs and closes. Only for environments
 * of this process (same fork generation). */
static void
env_release(ds_env *e)
{
    if (--e->refs > 0)
        return;
    for (ds_env **p = &env_list; *p != NULL; p = &(*p)->next) {
        if (*p == e) {
            *p = e->next;
            break;
        }
    }
    if (e->dirty)
        mdb_env_sync(e->env, 1);   /* best effort: callers flushed already */
    mdb_env_close(e->env);
    close(e->dirfd);
    PyMem_Free(e);
}

/* ---- the pending hits table --------------------------------------------- */

static size_t
hit_hash(const unsigned char *key)
{
    uint64_t a, b;
    memcpy(&a, key, 8);
    memcpy(&b, key + 8, 8);
    uint64_t h = a ^ (b * 0x9E3779B97F4A7C15u);
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9u;
    h ^= h >> 29;
    return (size_t)h;
}

static ds_hit *
hits_find(StoreObject *s, const unsigned char *key)
{
    if (s->hits_cap == 0)
        return NULL;
    size_t mask = s->hits_cap - 1;
    for (size_t i = hit_hash(key) & mask;; i = (i + 1) & mask) {
        ds_hit *h = &s->hits[i];
        if (!h->used)
            return NULL;
        if (memcmp(h->key, key, DS_DIGEST_SIZE) == 0)
            return h;
    }
}

static void
hits_clear(StoreObject *s)
{
    PyMem_Free(s->hits);
    s->hits = NULL;
    s->hits_cap = 0;
    s->hits_used = 0;
}

static int
hits_grow(StoreObject *s)
{
    size_t cap = s->hits_cap ? s->hits_cap * 2 : 64;
    ds_hit *table = PyMem_Calloc(cap, sizeof *table);
    if (table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t j = 0; j < s->hits_cap; j++) {
        ds_hit *old = &s->hits[j];
        if (!old->used)
            continue;
        size_t i = hit_hash(old->key) & (cap - 1);
        while (table[i].used)
            i = (i + 1) & (cap - 1);
        table[i] = *old;
    }
    PyMem_Free(s->hits);
    s->hits = table;
    s->hits_cap = cap;
    return 0;
}

/* Forgets pending hits of a key whose entry is replaced or deleted. */
static void
hits_forget(StoreObject *s, const unsigned char *key)
{
    ds_hit *h = hits_find(s, key);
    if (h != NULL)
        h->count = 0;
}

/* ---- StoreObject state -------------------------------------------------- */

static int
store_reopen_after_fork(StoreObject *s)
{
    /* The parent's env, reader and pending hits stay behind: see
     * store_atfork_child. The parent flushes its own hits. */
    s->env = NULL;
    s->rtxn = NULL;
    s->reading = 0;
    s->gen = fork_gen;
    hits_clear(s);
    s->env = env_acquire(s->path, PyBytes_AS_STRING(s->abspath), s->map_size, s->readonly);
    return s->env != NULL ? 0 : -1;
}

/* Entry check of every operation: open, and in the process that opened it. */
static int
store_ensure(StoreObject *s)
{
    if (s->gen != fork_gen && s->env != NULL)
        return store_reopen_after_fork(s);
    if (s->env == NULL) {
        PyErr_SetString(ds_StoreError, "the store is closed");
        return -1;
    }
    return 0;
}

static int
store_ensure_writable(StoreObject *s)
{
    if (store_ensure(s) < 0)
        return -1;
    if (s->readonly) {
        PyErr_SetString(ds_StoreError, "the store was opened read-only");
        return -1;
    }
    return 0;
}

/* ---- reads (the hit path) ------------------------------------------------ */

int
store_read_begin(StoreObject *s)
{
    int rc;

    if (s->reading > 0 && s->gen == fork_gen) {
        s->reading++;   /* nested: same snapshot, pointers stay valid */
        return 0;
    }
    if (store_ensure(s) < 0)
        return -1;
    for (int attempt = 0; attempt < WRITE_ATTEMPTS; attempt++) {
        if (s->rtxn != NULL) {
            rc = mdb_txn_renew(s->rtxn);
        }
        else {
            MDB_txn *txn = NULL;
            rc = mdb_txn_begin(s->env->env, NULL, MDB_RDONLY, &txn);
            if (rc == 0)
                s->rtxn = txn;
        }
        if (rc == 0) {
            s->reading = 1;
            s->env->reading++;
            return 0;
        }
        if (rc != MDB_MAP_RESIZED)
            break;
        if (env_adopt_mapsize(s->env) < 0)
            return -1;
    }
    store_raise(rc, "begin read", NULL);
    return -1;
}

void
store_read_end(StoreObject *s)
{
    if (s->reading == 0)
        return;
    if (s->gen != fork_gen) {
        s->reading = 0;   /* the parent's reader: never reset it here */
        return;
    }
    if (--s->reading == 0) {
        mdb_txn_reset(s->rtxn);
        s->env->reading--;
    }
}

/* Parses a values record; 1 if well formed, 0 otherwise. Every length is
 * checked against the record size before anything is read. */
static int
record_parse(const unsigned char *p, size_t size, ds_record *rec)
{
    const unsigned char *end = p + size;
    uint64_t pickle_len, nbuf;

    if (size < 1 + 8 || p[0] != VALUES_MAGIC)
        return 0;
    double created = get_f64(p + 1);
    p += 9;
    if (get_varint(&p, end, &pickle_len) < 0 || get_varint(&p, end, &nbuf) < 0)
        return 0;
    size_t left = (size_t)(end - p);
    if (nbuf > UINT32_MAX || nbuf > left / 8)
        return 0;
    const unsigned char *table = p;
    p += nbuf * 8;
    left = (size_t)(end - p);
    if (pickle_len > left)
        return 0;
    size_t data_len = left - (size_t)pickle_len;
    uint64_t prev = 0;
    for (uint64_t i = 0; i < nbuf; i++) {
        uint64_t e = get_u64(table + 8 * i);
        if (e < prev || e > data_len)
            return 0;
        prev = e;
    }
    if (prev != data_len)
        return 0;
    rec->created = created;
    rec->pickle = (const char *)p;
    rec->pickle_len = (size_t)pickle_len;
    rec->nbuffers = (uint32_t)nbuf;
    rec->buffer_table = table;
    rec->buffer_data = (const char *)(p + pickle_len);
    return 1;
}

int
store_lookup(StoreObject *s, const unsigned char key[DS_DIGEST_SIZE], ds_record *rec)
{
    MDB_val k = {DS_DIGEST_SIZE, (void *)key}, v;

    if (s->reading == 0 || s->gen != fork_gen) {
        PyErr_SetString(ds_StoreError,
                        "store_lookup outside store_read_begin/store_read_end");
        return -1;
    }
    if (!s->env->have_tables)
        return 0;
    int rc = mdb_get(s->rtxn, s->env->values, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0) {
        store_raise(rc, "lookup", NULL);
        return -1;
    }
    return record_parse(v.mv_data, v.mv_size, rec);
}

void
store_record_buffer(const ds_record *rec, uint32_t i, const char **data, size_t *len)
{
    if (i >= rec->nbuffers) {
        *data = NULL;
        *len = 0;
        return;
    }
    uint64_t start = i > 0 ? get_u64(rec->buffer_table + 8 * (size_t)(i - 1)) : 0;
    uint64_t end = get_u64(rec->buffer_table + 8 * (size_t)i);
    *data = rec->buffer_data + start;
    *len = (size_t)(end - start);
}

/* ---- metadata records ---------------------------------------------------- */

typedef struct {
    double created, compute, ttl, last_hit;
    uint64_t size, hits;
    int inline_site;
    uint64_t site_id;
    const char *callee;
    size_t callee_len;
    const char *site;
    size_t site_len;
} ds_meta;

static size_t
site_blob_size(const ds_meta *m)
{
    return varint_size(m->callee_len) + m->callee_len + m->site_len;
}

static void
site_blob_encode(const ds_meta *m, unsigned char *p)
{
    p = put_varint(p, m->callee_len);
    if (m->callee_len)
        memcpy(p, m->callee, m->callee_len);
    if (m->site_len)
        memcpy(p + m->callee_len, m->site, m->site_len);
}

static int
site_blob_decode(const unsigned char *p, size_t size, ds_meta *m)
{
    const unsigned char *end = p + size;
    uint64_t n;
    if (get_varint(&p, end, &n) < 0 || n > (uint64_t)(end - p))
        return -1;
    m->callee = (const char *)p;
    m->callee_len = (size_t)n;
    m->site = (const char *)(p + n);
    m->site_len = (size_t)(end - p) - (size_t)n;
    return 0;
}

static size_t
meta_size(const ds_meta *m)
{
    size_t n = 2 + 8 + 8 + varint_size(m->size) + varint_size(m->hits);
    if (m->ttl != 0.0)
        n += 8;
    if (m->hits > 0)
        n += 8;
    return n + (m->inline_site ? site_blob_size(m) : 8);
}

static void
meta_encode(const ds_meta *m, unsigned char *p)
{
    unsigned char flags = (m->ttl != 0.0 ? META_TTL : 0)
                        | (m->hits > 0 ? META_LAST_HIT : 0)
                        | (m->inline_site ? META_INLINE : 0);
    p[0] = META_VERSION;
    p[1] = flags;
    put_f64(p + 2, m->created);
    put_f64(p + 10, m->compute);
    p += 18;
    if (flags & META_TTL) {
        put_f64(p, m->ttl);
        p += 8;
    }
    if (flags & META_LAST_HIT) {
        put_f64(p, m->last_hit);
        p += 8;
    }
    p = put_varint(p, m->size);
    p = put_varint(p, m->hits);
    if (m->inline_site)
        site_blob_encode(m, p);
    else
        put_u64(p, m->site_id);
}

/* 0, or -1 when the record is malformed. Strings point into the record. */
static int
meta_decode(const unsigned char *p, size_t size, ds_meta *m)
{
    const unsigned char *end = p + size;

    memset(m, 0, sizeof *m);
    if (size < 18 || p[0] != META_VERSION)
        return -1;
    unsigned char flags = p[1];
    m->created = get_f64(p + 2);
    m->compute = get_f64(p + 10);
    p += 18;
    if (flags & META_TTL) {
        if (end - p < 8)
            return -1;
        m->ttl = get_f64(p);
        p += 8;
    }
    if (flags & META_LAST_HIT) {
        if (end - p < 8)
            return -1;
        m->last_hit = get_f64(p);
        p += 8;
    }
    if (get_varint(&p, end, &m->size) < 0 || get_varint(&p, end, &m->hits) < 0)
        return -1;
    m->inline_site = (flags & META_INLINE) != 0;
    if (m->inline_site)
        return site_blob_decode(p, (size_t)(end - p), m);
    if (end - p != 8)
        return -1;
    m->site_id = get_u64(p);
    return 0;
}

/* Fills callee/site of a meta record that refers to "sites"; a missing or
 * bad site record leaves them empty. */
static int
meta_resolve_site(ds_env *e, MDB_txn *txn, ds_meta *m)
{
    unsigned char id[8];
    MDB_val k = {8, id}, v;

    if (m->inline_site)
        return 0;
    put_u64(id, m->site_id);
    int rc = mdb_get(txn, e->sites, &k, &v);
    if (rc == 0 && site_blob_decode(v.mv_data, v.mv_size, m) == 0)
        return 0;
    m->callee = m->site = "";
    m->callee_len = m->site_len = 0;
    if (rc != 0 && rc != MDB_NOTFOUND) {
        store_raise(rc, "read site", NULL);
        return -1;
    }
    return 0;
}

/* ---- write transactions ------------------------------------------------- */

/* Does the puts of one transaction: returns an LMDB code (sets *what), or
 * FILL_PYERR with a Python exception. Called again after the map grew, so
 * it must not change anything outside the transaction. */
typedef int (*store_fill_fn)(StoreObject *s, MDB_txn *txn, void *ctx, const char **what);

/* One write transaction: begin (adopting a map another process grew), fill,
 * commit; on MDB_MAP_FULL abort, grow the map and start over. `need` is
 * roughly how many bytes the transaction adds. */
static int
store_write_txn(StoreObject *s, store_fill_fn fill, void *ctx, size_t need)
{
    ds_env *e = s->env;
    const char *what = "begin write";
    int rc = 0;

    for (int attempt = 0; attempt < WRITE_ATTEMPTS; attempt++) {
        MDB_txn *txn = NULL;
        what = "begin write";
        rc = mdb_txn_begin(e->env, NULL, 0, &txn);
        if (rc == MDB_MAP_RESIZED) {
            if (env_adopt_mapsize(e) < 0)
                return -1;
            continue;
        }
        if (rc != 0)
            break;
        what = "reserve disk space";
        rc = env_reserve_disk(e, need);
        if (rc == 0)
            rc = fill(s, txn, ctx, &what);
        if (rc == 0) {
            what = "commit";
            rc = mdb_txn_commit(txn);   /* frees txn, even on failure */
        }
        else {
            mdb_txn_abort(txn);
        }
        if (rc == 0) {
            e->dirty = 1;
            return 0;
        }
        if (rc == FILL_PYERR)
            return -1;
        if (rc != MDB_MAP_FULL)
            break;
        if (env_grow(e, need) < 0)
            return -1;
    }
    store_raise(rc, what, NULL);
    return -1;
}

typedef struct {
    const unsigned char *key;
    const ds_entry *entry;
    Py_buffer *views;
    Py_ssize_t nviews;
    size_t header_size;
    size_t record_size;
    ds_meta meta;
} write_ctx;

/* Writes the metadata record of key k inside txn: callee and site by
 * reference to a shared site record when that is shorter than the strings
 * themselves. Fills m->inline_site and m->site_id. An LMDB code. */
static int
meta_write(StoreObject *s, MDB_txn *txn, MDB_val *k, ds_meta *m, const char **what)
{
    ds_env *e = s->env;
    int rc;

    size_t blob = site_blob_size(m);
    m->inline_site = blob <= 8;
    if (!m->inline_site) {
        unsigned char id[8];
        MDB_val sk = {8, id}, sv;
        XXH3_state_t st;
        unsigned char len[VARINT_MAX];
        size_t lenlen = (size_t)(put_varint(len, m->callee_len) - len);
        XXH3_64bits_reset(&st);
        XXH3_64bits_update(&st, len, lenlen);
        XXH3_64bits_update(&st, m->callee, m->callee_len);
        XXH3_64bits_update(&st, m->site, m->site_len);
        m->site_id = XXH3_64bits_digest(&st);
        put_u64(id, m->site_id);
        *what = "write site";
        rc = mdb_get(txn, e->sites, &sk, &sv);
        if (rc == MDB_NOTFOUND) {
            sv.mv_size = blob;
            if ((rc = mdb_put(txn, e->sites, &sk, &sv, MDB_RESERVE)) != 0)
                return rc;
            site_blob_encode(m, sv.mv_data);
        }
        else if (rc != 0) {
            return rc;
        }
        else {
            ds_meta old;
            if (site_blob_decode(sv.mv_data, sv.mv_size, &old) < 0
                || old.callee_len != m->callee_len || old.site_len != m->site_len
                || memcmp(old.callee, m->callee, m->callee_len) != 0
                || memcmp(old.site, m->site, m->site_len) != 0)
                m->inline_site = 1;   /* a 64-bit collision: keep it inline */
        }
    }
    MDB_val mv = {meta_size(m), NULL};
    *what = "write metadata";
    if ((rc = mdb_put(txn, e->meta, k, &mv, MDB_RESERVE)) != 0)
        return rc;
    meta_encode(m, mv.mv_data);
    return 0;
}

static int
write_fill(StoreObject *s, MDB_txn *txn, void *arg, const char **what)
{
    write_ctx *c = arg;
    ds_env *e = s->env;
    const ds_entry *en = c->entry;
    MDB_val k = {DS_DIGEST_SIZE, (void *)c->key}, v = {c->record_size, NULL};
    int rc;

    /* The value: header, pickle and buffers copied straight into the
     * space LMDB reserves in its page. */
    *what = "write value";
    if ((rc = mdb_put(txn, e->values, &k, &v, MDB_RESERVE)) != 0)
        return rc;
    unsigned char *p = v.mv_data;
    p[0] = VALUES_MAGIC;
    put_f64(p + 1, en->created);
    p = put_varint(p + 9, en->pickle_len);
    p = put_varint(p, (uint64_t)c->nviews);
    uint64_t offset = 0;
    for (Py_ssize_t i = 0; i < c->nviews; i++) {
        offset += (uint64_t)c->views[i].len;
        put_u64(p, offset);
        p += 8;
    }
    if (en->pickle_len)
        memcpy(p, en->pickle, en->pickle_len);
    p += en->pickle_len;
    for (Py_ssize_t i = 0; i < c->nviews; i++) {
        if (c->views[i].len)
            memcpy(p, c->views[i].buf, (size_t)c->views[i].len);
        p += c->views[i].len;
    }
    return meta_write(s, txn, &k, &c->meta, what);
}

int
store_write(StoreObject *s, const unsigned char key[DS_DIGEST_SIZE], const ds_entry *e)
{
    PyObject *seq = NULL;
    Py_buffer *views = NULL;
    Py_ssize_t nviews = 0, n = 0;
    int result = -1;
    write_ctx c;

    if (store_ensure_writable(s) < 0)
        goto error;
    if (e->buffers != NULL && e->buffers != Py_None) {
        seq = PySequence_Fast(e->buffers, "buffers must be a sequence");
        if (seq == NULL)
            goto error;
        n = PySequence_Fast_GET_SIZE(seq);
    }
    /* All views are taken before the transaction starts, so no Python code
     * runs while LMDB's write lock is held. */
    if (n > 0) {
        views = PyMem_Calloc((size_t)n, sizeof *views);
        if (views == NULL) {
            PyErr_NoMemory();
            goto error;
        }
    }
    size_t total = e->pickle_len;
    for (; nviews < n; nviews++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, nviews);
        if (PyObject_GetBuffer(item, &views[nviews], PyBUF_FULL_RO) < 0)
            goto error;
        if (!PyBuffer_IsContiguous(&views[nviews], 'A')) {
            nviews++;
            PyErr_SetString(PyExc_BufferError, "out-of-band buffer is not contiguous");
            goto error;
        }
        size_t len = (size_t)views[nviews].len;
        if (len > SIZE_MAX - total) {
            nviews++;
            PyErr_SetString(PyExc_OverflowError, "value too large");
            goto error;
        }
        total += len;
    }
    memset(&c, 0, sizeof c);
    c.key = key;
    c.entry = e;
    c.views = views;
    c.nviews = nviews;
    c.header_size = 1 + 8 + varint_size(e->pickle_len) + varint_size((uint64_t)n)
                  + 8 * (size_t)n;
    if (total > SIZE_MAX - c.header_size) {
        PyErr_SetString(PyExc_OverflowError, "value too large");
        goto error;
    }
    c.record_size = c.header_size + total;
    c.meta.created = e->created;
    c.meta.compute = e->compute_seconds;
    c.meta.ttl = e->ttl;
    c.meta.size = total;
    c.meta.callee = e->callee ? e->callee : "";
    c.meta.callee_len = strlen(c.meta.callee);
    c.meta.site = e->site ? e->site : "";
    c.meta.site_len = strlen(c.meta.site);
    size_t need = c.record_size + meta_size(&c.meta) + site_blob_size(&c.meta);
    if (need < c.record_size)
        need = SIZE_MAX;
    if (store_write_txn(s, write_fill, &c, need) < 0)
        goto error;
    hits_forget(s, key);
    result = 0;
error:
    for (Py_ssize_t i = 0; i < nviews; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    Py_XDECREF(seq);
    return result;
}

/* ---- hits ---------------------------------------------------------------- */

int
store_note_hit(StoreObject *s, const unsigned char key[DS_DIGEST_SIZE], double when)
{
    if (s->gen != fork_gen || s->env == NULL) {
        if (store_ensure(s) < 0)
            return -1;
    }
    if (s->readonly)
        return 0;   /* nowhere to write them */
    ds_hit *h = hits_find(s, key);
    if (h == NULL) {
        if ((s->hits_used + 1) * 2 > s->hits_cap && hits_grow(s) < 0)
            return -1;
        size_t mask = s->hits_cap - 1;
        size_t i = hit_hash(key) & mask;
        while (s->hits[i].used)
            i = (i + 1) & mask;
        h = &s->hits[i];
        h->used = 1;
        memcpy(h->key, key, DS_DIGEST_SIZE);
        h->count = 0;
        h->last = when;
        s->hits_used++;
    }
    h->count++;
    if (when > h->last)
        h->last = when;
    return 0;
}

static int
flush_fill(StoreObject *s, MDB_txn *txn, void *ctx, const char **what)
{
    ds_env *e = s->env;
    unsigned char small[512];
    unsigned char *copy = NULL;
    size_t copy_cap = 0;
    int rc = 0;

    double *saved = ctx;
    for (size_t i = 0; i < s->hits_cap; i++) {
        ds_hit *h = &s->hits[i];
        if (!h->used || h->count == 0)
            continue;
        MDB_val k = {DS_DIGEST_SIZE, h->key}, v;
        *what = "read metadata";
        rc = mdb_get(txn, e->meta, &k, &v);
        if (rc == MDB_NOTFOUND)
            continue;   /* deleted meanwhile */
        if (rc != 0)
            goto done;
        /* Copy first: the put below may reuse the very bytes we decode. */
        unsigned char *buf = small;
        if (v.mv_size > sizeof small) {
            if (v.mv_size > copy_cap) {
                unsigned char *bigger = PyMem_Realloc(copy, v.mv_size);
                if (bigger == NULL) {
                    PyErr_NoMemory();
                    rc = FILL_PYERR;
                    goto done;
                }
                copy = bigger;
                copy_cap = v.mv_size;
            }
            buf = copy;
        }
        memcpy(buf, v.mv_data, v.mv_size);
        ds_meta m;
        if (meta_decode(buf, v.mv_size, &m) < 0)
            continue;   /* unreadable: leave it, it lists as absent */
        m.hits += h->count;
        *saved += m.compute * (double)h->count;
        if (h->last > m.last_hit)
            m.last_hit = h->last;
        MDB_val nv = {meta_size(&m), NULL};
        *what = "write metadata";
        if ((rc = mdb_put(txn, e->meta, &k, &nv, MDB_RESERVE)) != 0)
            goto done;
        meta_encode(&m, nv.mv_data);
    }
    rc = 0;
done:
    PyMem_Free(copy);
    return rc;
}

int
store_flush(StoreObject *s)
{
    if (store_ensure(s) < 0)
        return -1;
    if (!s->readonly && s->hits_used > 0) {
        double saved = 0;
        int was_dirty = s->env->dirty;
        if (store_write_txn(s, flush_fill, &saved, 64 * s->hits_used) < 0) {
            hits_clear(s);   /* best effort: close must not try (and report) again */
            return -1;
        }
        /* Hit counts alone are not worth a disk flush at every exit: a warm
         * run would pay for it, and a lost count costs nothing. */
        s->env->dirty = was_dirty;
        s->saved += saved;   /* only once committed: a retried fill starts over */
        hits_clear(s);
    }
    if (s->env->dirty) {
        int rc = mdb_env_sync(s->env->env, 1);
        if (rc != 0) {
            store_raise(rc, "sync", NULL);
            return -1;
        }
        s->env->dirty = 0;
    }
    return 0;
}

/* Writes pending hits, then starts writing the map back to disk without
 * waiting for it (what a process does at exit): the window in which a power
 * cut could lose or damage recent entries shrinks to the writeback itself,
 * and the run does not wait milliseconds for the disk. */
static int
store_flush_nowait(StoreObject *s)
{
    int dirty = s->env != NULL && s->env->dirty;
    if (dirty)
        s->env->dirty = 0;   /* so store_flush only writes the hits */
    int rc = store_flush(s);
    if (dirty && rc == 0) {
        int fd;
        if (mdb_env_get_fd(s->env->env, &fd) == 0)
            (void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);   /* a hint */
    }
    else if (dirty)
        s->env->dirty = 1;
    return rc;
}

/* ---- the Python type ----------------------------------------------------- */

/* Borrows a 16-byte key from a bytes-like object; release with
 * PyBuffer_Release. */
static int
store_key(PyObject *obj, Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0)
        return -1;
    if (view->len != DS_DIGEST_SIZE) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "a store key is %d bytes, not %zd",
                     DS_DIGEST_SIZE, view->len);
        return -1;
    }
    return 0;
}

static int
store_close_impl(StoreObject *s)
{
    int result = 0;

    if (s->env == NULL)
        return 0;
    if (s->gen != fork_gen) {
        s->env = NULL;   /* the parent's: leaked, see store_atfork_child */
        s->rtxn = NULL;
        s->reading = 0;
        hits_clear(s);
        return 0;
    }
    if (s->reading > 0) {
        PyErr_SetString(ds_StoreError, "cannot close the store while a read is in progress");
        return -1;
    }
    result = store_flush(s);
    if (s->rtxn != NULL)
        mdb_txn_abort(s->rtxn);
    s->rtxn = NULL;
    env_release(s->env);
    s->env = NULL;
    hits_clear(s);
    return result;
}

static PyObject *
Store_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", "map_size", "readonly", NULL};
    PyObject *path = NULL, *fspath = NULL;
    Py_ssize_t map_size = 0;
    int readonly = 0;
    StoreObject *s = NULL;
    char *resolved = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&|np:Store", kwlist,
                                     PyUnicode_FSDecoder, &path, &map_size, &readonly))
        goto error;
    if (map_size < 0) {
        PyErr_SetString(PyExc_ValueError, "map_size must be >= 0");
        goto error;
    }
    fspath = PyUnicode_EncodeFSDefault(path);
    if (fspath == NULL)
        goto error;
    if (!atfork_registered) {
        int rc = pthread_atfork(NULL, NULL, store_atfork_child);
        if (rc != 0) {
            store_raise(rc, "pthread_atfork", NULL);
            goto error;
        }
        atfork_registered = 1;
    }
    s = (StoreObject *)type->tp_alloc(type, 0);
    if (s == NULL)
        goto error;
    s->gen = fork_gen;
    s->readonly = readonly;
    s->map_size = (size_t)map_size;
    s->path = path;
    path = NULL;
    s->env = env_acquire(s->path, PyBytes_AS_STRING(fspath), s->map_size, readonly);
    if (s->env == NULL)
        goto error;
    resolved = realpath(PyBytes_AS_STRING(fspath), NULL);
    if (resolved == NULL) {
        store_raise(errno, "cannot resolve cache folder", s->path);
        goto error;
    }
    s->abspath = PyBytes_FromString(resolved);
    if (s->abspath == NULL)
        goto error;
    free(resolved);
    Py_DECREF(fspath);
    return (PyObject *)s;

error:
    free(resolved);
    Py_XDECREF(path);
    Py_XDECREF(fspath);
    Py_XDECREF(s);
    return NULL;
}

static void
Store_dealloc(StoreObject *s)
{
    if (s->env != NULL) {
        PyObject *exc = PyErr_GetRaisedException();
        /* Whoever began a read held a reference: nobody can still use a
         * record of a dying store. */
        if (s->gen == fork_gen && s->reading > 0) {
            mdb_txn_reset(s->rtxn);
            s->env->reading--;
            s->reading = 0;
        }
        if (store_close_impl(s) < 0)
            PyErr_WriteUnraisable(NULL);   /* not s: its refcount is 0 */
        PyErr_SetRaisedException(exc);
    }
    hits_clear(s);
    Py_XDECREF(s->path);
    Py_XDECREF(s->abspath);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyObject *
Store_close(StoreObject *s, PyObject *unused)
{
    DS_UNUSED(unused);
    if (store_close_impl(s) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Store_enter(StoreObject *s, PyObject *unused)
{
    DS_UNUSED(unused);
    if (store_ensure(s) < 0)
        return NULL;
    return Py_NewRef(s);
}

static PyObject *
Store_exit(StoreObject *s, PyObject *args)
{
    DS_UNUSED(args);
    if (store_close_impl(s) < 0)
        return NULL;
    Py_RETURN_FALSE;
}

static PyObject *
Store_get(StoreObject *s, PyObject *keyobj)
{
    Py_buffer key;
    PyObject *result = NULL, *pickle = NULL, *buffers = NULL;
    ds_record rec;
    int reading = 0;

    if (store_key(keyobj, &key) < 0)
        return NULL;
    if (store_read_begin(s) < 0)
        goto error;
    reading = 1;
    int found = store_lookup(s, key.buf, &rec);
    if (found < 0)
        goto error;
    if (!found) {
        result = Py_NewRef(Py_None);
        goto error;
    }
    pickle = PyBytes_FromStringAndSize(rec.pickle, (Py_ssize_t)rec.pickle_len);
    buffers = PyList_New((Py_ssize_t)rec.nbuffers);
    if (pickle == NULL || buffers == NULL)
        goto error;
    for (uint32_t i = 0; i < rec.nbuffers; i++) {
        const char *data;
        size_t len;
        store_record_buffer(&rec, i, &data, &len);
        PyObject *b = PyByteArray_FromStringAndSize(data, (Py_ssize_t)len);
        if (b == NULL)
            goto error;
        PyList_SET_ITEM(buffers, i, b);
    }
    result = Py_BuildValue("(dOO)", rec.created, pickle, buffers);
error:
    if (reading)
        store_read_end(s);
    PyBuffer_Release(&key);
    Py_XDECREF(pickle);
    Py_XDECREF(buffers);
    return result;
}

static PyObject *
Store_put(StoreObject *s, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"key", "pickle", "buffers", "created", "ttl", "compute",
                             "callee", "site", NULL};
    PyObject *keyobj, *buffers = NULL, *created = Py_None, *result = NULL;
    Py_buffer key, pickle;
    int have_key = 0;
    const char *callee = "", *site = "";
    ds_entry e;

    memset(&e, 0, sizeof e);
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oy*|O$Oddss:put", kwlist,
                                     &keyobj, &pickle, &buffers, &created, &e.ttl,
                                     &e.compute_seconds, &callee, &site))
        return NULL;
    if (store_key(keyobj, &key) < 0)
        goto error;
    have_key = 1;
    if (created == Py_None) {
        e.created = store_now();
    }
    else {
        e.created = PyFloat_AsDouble(created);
        if (e.created == -1.0 && PyErr_Occurred())
            goto error;
    }
    e.pickle = pickle.buf;
    e.pickle_len = (size_t)pickle.len;
    e.buffers = buffers;
    e.callee = callee;
    e.site = site;
    if (store_write(s, key.buf, &e) < 0)
        goto error;
    result = Py_NewRef(Py_None);
error:
    if (have_key)
        PyBuffer_Release(&key);
    PyBuffer_Release(&pickle);
    return result;
}

/* A raw put into one table: put_code, and the test hook _put_raw. */
typedef struct {
    const unsigned char *key;
    MDB_dbi dbi;
    const char *data;
    size_t len;
} raw_ctx;

static int
raw_fill(StoreObject *s, MDB_txn *txn, void *arg, const char **what)
{
    raw_ctx *c = arg;
    MDB_val k = {DS_DIGEST_SIZE, (void *)c->key}, v = {c->len, NULL};
    int rc;

    DS_UNUSED(s);
    *what = "write";
    if ((rc = mdb_put(txn, c->dbi, &k, &v, MDB_RESERVE)) != 0)
        return rc;
    if (c->len)
        memcpy(v.mv_data, c->data, c->len);
    return 0;
}

static PyObject *
store_put_raw(StoreObject *s, PyObject *args, int code)
{
    PyObject *keyobj, *result = NULL;
    Py_buffer key, data;
    int have_key = 0;

    if (!PyArg_ParseTuple(args, code ? "Oy*:put_code" : "Oy*:_put_raw", &keyobj, &data))
        return NULL;
    if (store_key(keyobj, &key) < 0)
        goto error;
    have_key = 1;
    if (store_ensure_writable(s) < 0)
        goto error;
    raw_ctx c = {key.buf, code ? s->env->code : s->env->values, data.buf, (size_t)data.len};
    if (store_write_txn(s, raw_fill, &c, c.len + 64) < 0)
        goto error;
    if (!code)
        hits_forget(s, key.buf);
    result = Py_NewRef(Py_None);
error:
    if (have_key)
        PyBuffer_Release(&key);
    PyBuffer_Release(&data);
    return result;
}

static PyObject *
Store_put_code(StoreObject *s, PyObject *args)
{
    return store_put_raw(s, args, 1);
}

static PyObject *
Store_put_raw(StoreObject *s, PyObject *args)
{
    return store_put_raw(s, args, 0);
}

/* A raw get from one table, copied to bytes: get_code and _get_raw. */
static PyObject *
store_get_raw(StoreObject *s, PyObject *keyobj, int code)
{
    Py_buffer key;
    PyObject *result = NULL;
    int reading = 0;

    if (store_key(keyobj, &key) < 0)
        return NULL;
    if (store_read_begin(s) < 0)
        goto error;
    reading = 1;
    if (!s->env->have_tables) {
        result = Py_NewRef(Py_None);
        goto error;
    }
    MDB_val k = {DS_DIGEST_SIZE, key.buf}, v;
    int rc = mdb_get(s->rtxn, code ? s->env->code : s->env->values, &k, &v);
    if (rc == MDB_NOTFOUND)
        result = Py_NewRef(Py_None);
    else if (rc != 0)
        store_raise(rc, "read", NULL);
    else
        result = PyBytes_FromStringAndSize(v.mv_data, (Py_ssize_t)v.mv_size);
error:
    if (reading)
        store_read_end(s);
    PyBuffer_Release(&key);
    return result;
}

static PyObject *
Store_get_code(StoreObject *s, PyObject *keyobj)
{
    return store_get_raw(s, keyobj, 1);
}

static PyObject *
Store_get_raw(StoreObject *s, PyObject *keyobj)
{
    return store_get_raw(s, keyobj, 0);
}

typedef struct {
    const unsigned char *key;
    int found;
} delete_ctx;

static int
delete_fill(StoreObject *s, MDB_txn *txn, void *arg, const char **what)
{
    delete_ctx *c = arg;
    MDB_val k = {DS_DIGEST_SIZE, (void *)c->key};
    MDB_dbi tables[2] = {s->env->values, s->env->meta};

    c->found = 0;
    *what = "delete";
    for (int i = 0; i < 2; i++) {
        int rc = mdb_del(txn, tables[i], &k, NULL);
        if (rc == 0)
            c->found = 1;
        else if (rc != MDB_NOTFOUND)
            return rc;
    }
    return 0;
}

static PyObject *
Store_delete(StoreObject *s, PyObject *keyobj)
{
    Py_buffer key;
    PyObject *result = NULL;
    delete_ctx c = {NULL, 0};

    if (store_key(keyobj, &key) < 0)
        return NULL;
    if (store_ensure_writable(s) < 0)
        goto error;
    c.key = key.buf;
    if (store_write_txn(s, delete_fill, &c, 4096) < 0)
        goto error;
    hits_forget(s, key.buf);
    result = PyBool_FromLong(c.found);
error:
    PyBuffer_Release(&key);
    return result;
}

/* The dict of one meta record, pending hits of this process included. */
static PyObject *
meta_dict(StoreObject *s, const unsigned char *key, const ds_meta *m)
{
    uint64_t hits = m->hits;
    double last = m->last_hit;
    ds_hit *h = hits_find(s, key);
    if (h != NULL && h->count > 0) {
        hits += h->count;
        if (h->last > last)
            last = h->last;
    }
    /* "replace": a damaged record must still list. */
    return Py_BuildValue("{s:y#,s:N,s:N,s:d,s:d,s:K,s:d,s:K,s:d}",
        "key", (const char *)key, (Py_ssize_t)DS_DIGEST_SIZE,
        "callee", PyUnicode_DecodeUTF8(m->callee, (Py_ssize_t)m->callee_len, "replace"),
        "site", PyUnicode_DecodeUTF8(m->site, (Py_ssize_t)m->site_len, "replace"),
        "created", m->created,
        "ttl", m->ttl,
        "size", (unsigned long long)m->size,
        "compute", m->compute,
        "hits", (unsigned long long)hits,
        "last_hit", last);
}

static PyObject *
Store_meta(StoreObject *s, PyObject *keyobj)
{
    Py_buffer key;
    PyObject *result = NULL;
    int reading = 0;
    ds_meta m;

    if (store_key(keyobj, &key) < 0)
        return NULL;
    if (store_read_begin(s) < 0)
        goto error;
    reading = 1;
    if (!s->env->have_tables) {
        result = Py_NewRef(Py_None);
        goto error;
    }
    MDB_val k = {DS_DIGEST_SIZE, key.buf}, v;
    int rc = mdb_get(s->rtxn, s->env->meta, &k, &v);
    if (rc == MDB_NOTFOUND || (rc == 0 && meta_decode(v.mv_data, v.mv_size, &m) < 0)) {
        result = Py_NewRef(Py_None);
        goto error;
    }
    if (rc != 0) {
        store_raise(rc, "read metadata", NULL);
        goto error;
    }
    if (meta_resolve_site(s->env, s->rtxn, &m) < 0)
        goto error;
    result = meta_dict(s, key.buf, &m);
error:
    if (reading)
        store_read_end(s);
    PyBuffer_Release(&key);
    return result;
}

static PyObject *
Store_entries(StoreObject *s, PyObject *unused)
{
    PyObject *list = NULL, *item = NULL;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc;

    DS_UNUSED(unused);
    if (store_read_begin(s) < 0)
        return NULL;
    list = PyList_New(0);
    if (list == NULL || !s->env->have_tables)
        goto done;
    if ((rc = mdb_cursor_open(s->rtxn, s->env->meta, &cur)) != 0) {
        store_raise(rc, "list entries", NULL);
        goto error;
    }
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
        ds_meta m;
        if (k.mv_size != DS_DIGEST_SIZE || meta_decode(v.mv_data, v.mv_size, &m) < 0)
            continue;
        if (meta_resolve_site(s->env, s->rtxn, &m) < 0)
            goto error;
        item = meta_dict(s, k.mv_data, &m);
        if (item == NULL || PyList_Append(list, item) < 0)
            goto error;
        Py_CLEAR(item);
    }
    if (rc != MDB_NOTFOUND) {
        store_raise(rc, "list entries", NULL);
        goto error;
    }
    goto done;
error:
    Py_CLEAR(list);
    Py_CLEAR(item);
done:
    if (cur != NULL)
        mdb_cursor_close(cur);
    store_read_end(s);
    return list;
}

/* Entries in "values"; -1 with an exception. Needs a read in progress. */
static Py_ssize_t
store_count(StoreObject *s)
{
    MDB_stat st;
    if (!s->env->have_tables)
        return 0;
    int rc = mdb_stat(s->rtxn, s->env->values, &st);
    if (rc != 0) {
        store_raise(rc, "count", NULL);
        return -1;
    }
    return (Py_ssize_t)st.ms_entries;
}

static PyObject *
Store_count(StoreObject *s, PyObject *unused)
{
    DS_UNUSED(unused);
    if (store_read_begin(s) < 0)
        return NULL;
    Py_ssize_t n = store_count(s);
    store_read_end(s);
    return n < 0 ? NULL : PyLong_FromSsize_t(n);
}

static PyObject *
Store_note_hit(StoreObject *s, PyObject *args)
{
    PyObject *keyobj;
    Py_buffer key;
    double when;

    if (!PyArg_ParseTuple(args, "Od:note_hit", &keyobj, &when) || store_key(keyobj, &key) < 0)
        return NULL;
    int r = store_note_hit(s, key.buf, when);
    PyBuffer_Release(&key);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Store_flush(StoreObject *s, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"wait", NULL};
    int wait = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|p:flush", kwlist, &wait))
        return NULL;
    if ((wait ? store_flush(s) : store_flush_nowait(s)) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Store_info(StoreObject *s, PyObject *unused)
{
    MDB_envinfo info;
    MDB_stat st;
    int rc;

    DS_UNUSED(unused);
    if (store_read_begin(s) < 0)
        return NULL;
    Py_ssize_t n = store_count(s);
    store_read_end(s);
    if (n < 0)
        return NULL;
    if ((rc = mdb_env_info(s->env->env, &info)) != 0
        || (rc = mdb_env_stat(s->env->env, &st)) != 0) {
        store_raise(rc, "info", NULL);
        return NULL;
    }
    return Py_BuildValue("{s:O,s:n,s:I,s:n,s:n,s:n,s:I,s:I,s:O}",
        "path", s->path,
        "map_size", (Py_ssize_t)info.me_mapsize,
        "page_size", st.ms_psize,
        "last_pgno", (Py_ssize_t)info.me_last_pgno,
        "used", (Py_ssize_t)((info.me_last_pgno + 1) * st.ms_psize),
        "entries", n,
        "readers", info.me_numreaders,
        "max_readers", info.me_maxreaders,
        "readonly", s->readonly ? Py_True : Py_False);
}

/* ---- for the devstash command: export, import, clear, compact, doctor --- */

typedef struct {
    const unsigned char *key;
    const char *record;     /* a values record, checked by record_parse */
    size_t len;
    int if_newer;
    int written;            /* out: 0 when a newer entry was kept */
    ds_meta meta;
} record_ctx;

static int
record_fill(StoreObject *s, MDB_txn *txn, void *arg, const char **what)
{
    record_ctx *c = arg;
    ds_env *e = s->env;
    MDB_val k = {DS_DIGEST_SIZE, (void *)c->key}, v;
    int rc;

    c->written = 0;
    if (c->if_newer) {
        /* Checked inside the write transaction: no other writer can slip
         * a newer value in between. */
        *what = "read metadata";
        rc = mdb_get(txn, e->meta, &k, &v);
        if (rc == 0) {
            ds_meta old;
            if (meta_decode(v.mv_data, v.mv_size, &old) == 0 && old.created >= c->meta.created)
                return 0;
        }
        else if (rc != MDB_NOTFOUND) {
            return rc;
        }
    }
    v.mv_size = c->len;
    v.mv_data = NULL;
    *what = "write value";
    if ((rc = mdb_put(txn, e->values, &k, &v, MDB_RESERVE)) != 0)
        return rc;
    memcpy(v.mv_data, c->record, c->len);
    if ((rc = meta_write(s, txn, &k, &c->meta, what)) != 0)
        return rc;
    c->written = 1;
    return 0;
}

/* put_record(key, record, *, ttl, compute, callee, site, if_newer): what
 * `devstash import` writes. The record is a values record as get_record
 * returns it (its own creation time is the entry's); it is checked like a
 * lookup checks it, so a damaged file cannot plant an unreadable entry. */
static PyObject *
Store_put_record(StoreObject *s, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"key", "record", "ttl", "compute", "callee", "site",
                             "if_newer", NULL};
    PyObject *keyobj, *result = NULL;
    Py_buffer key, record;
    int have_key = 0, if_newer = 0;
    const char *callee = "", *site = "";
    double ttl = 0.0, compute = 0.0;
    ds_record rec;
    record_ctx c;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oy*|$ddssp:put_record", kwlist,
                                     &keyobj, &record, &ttl, &compute, &callee, &site,
                                     &if_newer))
        return NULL;
    if (store_key(keyobj, &key) < 0)
        goto error;
    have_key = 1;
    if (store_ensure_writable(s) < 0)
        goto error;
    if (!record_parse(record.buf, (size_t)record.len, &rec)) {
        PyErr_SetString(PyExc_ValueError, "not a well-formed value record");
        goto error;
    }
    memset(&c, 0, sizeof c);
    c.key = key.buf;
    c.record = record.buf;
    c.len = (size_t)record.len;
    c.if_newer = if_newer;
    c.meta.created = rec.created;
    c.meta.compute = compute;
    c.meta.ttl = ttl;
    c.meta.size = c.len - (size_t)(rec.pickle - (const char *)record.buf);
    c.meta.callee = callee;
    c.meta.callee_len = strlen(callee);
    c.meta.site = site;
    c.meta.site_len = strlen(site);
    size_t need = c.len + meta_size(&c.meta) + site_blob_size(&c.meta);
    if (need < c.len)
        need = SIZE_MAX;
    if (store_write_txn(s, record_fill, &c, need) < 0)
        goto error;
    if (c.written)
        hits_forget(s, key.buf);
    result = PyBool_FromLong(c.written);
error:
    if (have_key)
        PyBuffer_Release(&key);
    PyBuffer_Release(&record);
    return result;
}

static int
clear_fill(StoreObject *s, MDB_txn *txn, void *arg, const char **what)
{
    size_t *removed = arg;
    ds_env *e = s->env;
    MDB_stat st;
    int rc;

    *what = "clear";
    if ((rc = mdb_stat(txn, e->values, &st)) != 0)
        return rc;
    *removed = st.ms_entries;
    /* Sites go too: every meta record that named one is gone. */
    if ((rc = mdb_drop(txn, e->values, 0)) != 0
        || (rc = mdb_drop(txn, e->meta, 0)) != 0
        || (rc = mdb_drop(txn, e->sites, 0)) != 0)
        return rc;
    return 0;
}

static PyObject *
Store_clear(StoreObject *s, PyObject *unused)
{
    size_t removed = 0;

    DS_UNUSED(unused);
    if (store_ensure_writable(s) < 0)
        return NULL;
    if (store_write_txn(s, clear_fill, &removed, 64 * s->env->psize) < 0)
        return NULL;
    hits_clear(s);
    return PyLong_FromSize_t(removed);
}

/* compact_to(filename): LMDB's compacting copy (free pages left out, pages
 * renumbered) of the whole environment, written to a new file, mode 0600,
 * and synced. The copy is one read transaction's snapshot; writers go on
 * meanwhile. Returns the copy's size in bytes. */
static PyObject *
Store_compact_to(StoreObject *s, PyObject *arg)
{
    PyObject *path = NULL, *fspath = NULL, *result = NULL;
    struct stat st;
    int fd = -1, rc;

    if (!PyUnicode_FSDecoder(arg, &path))
        return NULL;
    if ((fspath = PyUnicode_EncodeFSDefault(path)) == NULL)
        goto error;
    if (store_ensure(s) < 0 || store_flush(s) < 0)
        goto error;
    fd = open(PyBytes_AS_STRING(fspath), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        store_raise(errno, "cannot create", path);
        goto error;
    }
    if ((rc = mdb_env_copyfd2(s->env->env, fd, MDB_CP_COMPACT)) != 0) {
        store_raise(rc, "compacting copy to", path);
        goto error;
    }
    if (fsync(fd) < 0 || fstat(fd, &st) < 0) {
        store_raise(errno, "compacting copy to", path);
        goto error;
    }
    result = PyLong_FromLongLong((long long)st.st_size);
error:
    if (fd >= 0) {
        close(fd);
        if (result == NULL)
            unlink(PyBytes_AS_STRING(fspath));   /* a partial copy is no use */
    }
    Py_XDECREF(path);
    Py_XDECREF(fspath);
    return result;
}

static PyObject *
Store_check_readers(StoreObject *s, PyObject *unused)
{
    int dead = 0, rc;

    DS_UNUSED(unused);
    if (store_ensure(s) < 0)
        return NULL;
    if ((rc = mdb_reader_check(s->env->env, &dead)) != 0) {
        store_raise(rc, "check readers", NULL);
        return NULL;
    }
    return PyLong_FromLong((long)s->env->stale_readers + dead);
}

static PyObject *
Store_get_path(StoreObject *s, void *closure)
{
    DS_UNUSED(closure);
    return Py_NewRef(s->path);
}

static PyObject *
Store_get_readonly(StoreObject *s, void *closure)
{
    DS_UNUSED(closure);
    return PyBool_FromLong(s->readonly);
}

static PyObject *
Store_get_closed(StoreObject *s, void *closure)
{
    DS_UNUSED(closure);
    return PyBool_FromLong(s->env == NULL);
}

static PyObject *
Store_get_saved(StoreObject *s, void *closure)
{
    DS_UNUSED(closure);
    return PyFloat_FromDouble(s->saved);
}

static PyGetSetDef Store_getset[] = {
    {"saved_seconds", (getter)Store_get_saved, NULL,
     "Compute seconds of the hits this object has flushed: the time they saved.", NULL},
    {"path", (getter)Store_get_path, NULL, "The cache folder, as given.", NULL},
    {"readonly", (getter)Store_get_readonly, NULL, "Whether writes are refused.", NULL},
    {"closed", (getter)Store_get_closed, NULL, "Whether close() was called.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Store_methods[] = {
    {"close", (PyCFunction)Store_close, METH_NOARGS,
     "close(): flush pending hits, sync and release the environment."},
    {"__enter__", (PyCFunction)Store_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Store_exit, METH_VARARGS, NULL},
    {"get", (PyCFunction)Store_get, METH_O,
     "get(key) -> (created, pickle, [bytearray, ...]) | None"},
    {"put", (PyCFunction)(void (*)(void))Store_put, METH_VARARGS | METH_KEYWORDS,
     "put(key, pickle, buffers=(), *, created=now, ttl=0.0, compute=0.0, callee='', site='')"},
    {"delete", (PyCFunction)Store_delete, METH_O,
     "delete(key) -> bool: remove value and metadata; whether anything was there."},
    {"meta", (PyCFunction)Store_meta, METH_O,
     "meta(key) -> dict | None: key, callee, site, created, ttl, size, compute, hits, last_hit."},
    {"entries", (PyCFunction)Store_entries, METH_NOARGS,
     "entries() -> list[dict]: the metadata of every entry, in key order."},
    {"count", (PyCFunction)Store_count, METH_NOARGS, "count() -> int: stored values."},
    {"note_hit", (PyCFunction)Store_note_hit, METH_VARARGS,
     "note_hit(key, when): count a hit in memory; written by flush()."},
    {"flush", (PyCFunction)(void (*)(void))Store_flush, METH_VARARGS | METH_KEYWORDS,
     "flush(wait=True): write pending hits and sync to disk; wait=False only starts the "
     "writeback (at exit)."},
    {"get_code", (PyCFunction)Store_get_code, METH_O, "get_code(key) -> bytes | None"},
    {"put_code", (PyCFunction)Store_put_code, METH_VARARGS, "put_code(key, data)"},
    {"info", (PyCFunction)Store_info, METH_NOARGS,
     "info() -> dict: path, map_size, page_size, last_pgno, used, entries, readers, ..."},
    {"get_record", (PyCFunction)Store_get_raw, METH_O,
     "get_record(key) -> bytes | None: the raw values record of key, for put_record."},
    {"put_record", (PyCFunction)(void (*)(void))Store_put_record, METH_VARARGS | METH_KEYWORDS,
     "put_record(key, record, *, ttl=0.0, compute=0.0, callee='', site='', if_newer=False)"
     " -> bool: write a raw values record and its metadata; with if_newer, keep an entry"
     " created at the same time or later (returns False). ValueError if the record is"
     " malformed."},
    {"clear", (PyCFunction)Store_clear, METH_NOARGS,
     "clear() -> int: remove every value with its metadata (the code cache stays);"
     " returns how many values were removed."},
    {"compact_to", (PyCFunction)Store_compact_to, METH_O,
     "compact_to(filename) -> int: write a compacted copy of the store to a new file"
     " (mode 0600, synced); returns its size."},
    {"check_readers", (PyCFunction)Store_check_readers, METH_NOARGS,
     "check_readers() -> int: reader slots of dead processes cleared, when this process"
     " opened the folder and now."},
    {"_put_raw", (PyCFunction)Store_put_raw, METH_VARARGS,
     "_put_raw(key, data): write a raw values record (tests only)."},
    {"_get_raw", (PyCFunction)Store_get_raw, METH_O,
     "_get_raw(key) -> bytes | None: a raw values record (tests only)."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject Store_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "devstash._core.Store",
    .tp_basicsize = sizeof(StoreObject),
    .tp_dealloc = (destructor)Store_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Store(path, map_size=0, readonly=False): the LMDB cache in a folder.",
    .tp_methods = Store_methods,
    .tp_getset = Store_getset,
    .tp_new = Store_new,
};
