/* The LMDB environment of a cache folder (see env.h).
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
 * LMDB forbids two environments on one file in a process (closing one drops
 * the other's fcntl locks), so Store objects on the same folder share one. */
#include "env.h"
#include "folder.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <pthread.h>
#include <time.h>

#define DEFAULT_MAP_SIZE ((size_t)1 << 30)

static ds_env *env_list = NULL;

unsigned long ds_fork_gen = 0;
static int atfork_registered = 0;

static void
store_atfork_child(void)
{
    ds_fork_gen++;
    /* The parent's environments are leaked in the child on purpose: closing
     * one would close descriptors and clear reader slots (MDB_NOTLS slots
     * are freed by mdb_txn_abort) that the parent still uses. */
    env_list = NULL;
}

int
env_register_atfork(void)
{
    if (!atfork_registered) {
        int rc = pthread_atfork(NULL, NULL, store_atfork_child);
        if (rc != 0) {
            store_raise(rc, "pthread_atfork", NULL);
            return -1;
        }
        atfork_registered = 1;
    }
    return 0;
}

/* ---- errors: the one place LMDB failures become exceptions -------------- */

/* Raises StoreError("<what>: <mdb_strerror(rc)>"), or "<what> '<path>': ..."
 * when a file is concerned; DamagedError for the codes of a damaged file.
 * For system errors (rc > 0) the exception's errno is set too. */
void
store_raise(int rc, const char *what, PyObject *path)
{
    PyObject *msg = NULL, *exc = NULL, *num = NULL;
    const char *reason = mdb_strerror(rc);
    /* What LMDB reports for a data.mdb damaged from outside. */
    int damaged = rc == MDB_INVALID || rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND
                  || rc == MDB_VERSION_MISMATCH;
    const char *hint = damaged ? " (the cache is damaged: run `devstash doctor` or delete "
                                 "the folder)" : "";

    msg = path ? PyUnicode_FromFormat("%s '%U': %s%s", what, path, reason, hint)
               : PyUnicode_FromFormat("%s: %s%s", what, reason, hint);
    if (msg == NULL)
        goto error;
    exc = PyObject_CallOneArg(damaged ? ds_DamagedError : ds_StoreError, msg);
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
    ds_env *e = mdb_env_get_userctx(env);
    fprintf(stderr, "devstash: the cache in %s is damaged (%s); run `devstash doctor` "
            "or delete the folder\n", e != NULL && e->folder != NULL ? e->folder : "?", msg);
}

/* ---- environment lifetime and map size ---------------------------------- */

#define DEFAULT_LOCK_TIMEOUT 10.0

static double
monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Sleeps `pause` seconds with the GIL released, so the threads this process
 * waits for can run. -1 with an exception when a signal handler raised. */
static int
pause_released(double pause)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(pause * 1e9)};
    Py_BEGIN_ALLOW_THREADS
    nanosleep(&ts, NULL);
    Py_END_ALLOW_THREADS
    return PyErr_CheckSignals();
}

static void
raise_busy(ds_env *e, const char *what)
{
    PyErr_Format(ds_BusyError,
                 "%s: the cache in %s is held by another process for more than %d s "
                 "(one stopped with Ctrl-Z or SIGSTOP?)",
                 what, e->folder != NULL ? e->folder : "?", (int)(e->lock_timeout + 0.5));
}

/* flock(fd, LOCK_EX), polled for at most e->lock_timeout seconds. With
 * `held`, the lock is also one thread's at a time within this process
 * (flock alone is shared by every thread using the descriptor): *held is
 * set while a thread holds it, as threads may wait with the GIL released
 * while holding it. 0, or -1 with BusyError or StoreError set. */
static int
env_flock(ds_env *e, int fd, int *held, const char *what)
{
    double deadline = monotonic_now() + e->lock_timeout, pause = 0.0005;

    for (;;) {
        if (held == NULL || !*held) {
            if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
                if (held != NULL)
                    *held = 1;
                return 0;
            }
            if (errno == EINTR)
                continue;
            if (errno != EWOULDBLOCK) {
                store_raise(errno, what, NULL);
                return -1;
            }
        }
        if (monotonic_now() >= deadline) {
            raise_busy(e, what);
            return -1;
        }
        if (pause_released(pause) < 0)
            return -1;
        pause = pause * 2 > 0.05 ? 0.05 : pause * 2;
    }
}

int
env_write_lock(ds_env *e)
{
    return env_flock(e, e->fd, &e->write_held, "write");
}

void
env_write_unlock(ds_env *e)
{
    e->write_held = 0;
    flock(e->fd, LOCK_UN);
}

/* Waits, with the GIL released, for the reads other threads of this process
 * have open to end: the records they hold point into the map, which a new
 * size moves. A read that outlasts lock_timeout (one open in this very
 * thread, below the write) makes BusyError. */
static int
env_wait_reads(ds_env *e, const char *what)
{
    double deadline = monotonic_now() + e->lock_timeout, pause = 0.0002;

    while (e->reading > 0) {
        if (monotonic_now() >= deadline) {
            PyErr_Format(ds_BusyError, "%s: a read of the cache in %s stayed open for more "
                         "than %d s", what, e->folder != NULL ? e->folder : "?",
                         (int)(e->lock_timeout + 0.5));
            return -1;
        }
        if (pause_released(pause) < 0)
            return -1;
        pause = pause * 2 > 0.01 ? 0.01 : pause * 2;
    }
    return 0;
}

/* Sets the map size to at least `size` and at least data.mdb's size, under
 * the folder's flock, so that no process ever shrinks the file (see the top
 * of the file). size 0 adopts the file's size: what another process grew.
 * Remapping moves the map, so no transaction of this process may be open:
 * other threads' reads are waited for (the GIL is held from their end to
 * the new size). */
static int
env_set_mapsize(ds_env *e, size_t size, const char *what)
{
    struct stat st;
    int rc;

    if (env_wait_reads(e, what) < 0 || env_flock(e, e->dirfd, NULL, what) < 0)
        return -1;
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
int
env_adopt_mapsize(ds_env *e)
{
    return env_set_mapsize(e, 0, "adopt map size");
}

/* Grows the map after MDB_MAP_FULL: at least doubles it, and makes room for
 * `need` more bytes, so one huge value needs one retry, not many. */
int
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
int
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

/* Opens the four tables in txn (creating them when `create`). An LMDB code. */
static int
env_open_tables_in(ds_env *e, MDB_txn *txn, unsigned int create)
{
    int rc;

    if ((rc = mdb_dbi_open(txn, "values", create, &e->values)) == 0
        && (rc = mdb_dbi_open(txn, "meta", create, &e->meta)) == 0
        && (rc = mdb_dbi_open(txn, "sites", create, &e->sites)) == 0
        && (rc = mdb_dbi_open(txn, "code", create, &e->code)) == 0
        && (rc = mdb_set_compare(txn, e->values, key_compare)) == 0
        && (rc = mdb_set_compare(txn, e->meta, key_compare)) == 0
        && (rc = mdb_set_compare(txn, e->code, key_compare)) == 0)
        return 0;
    return rc;
}

/* Opens the four tables once; handles stay valid for the environment's life.
 * A read transaction does when they exist (every open but the first), so
 * opening never waits for a writer; only creating them takes the gate. */
static int
env_open_tables(ds_env *e)
{
    MDB_txn *txn = NULL;
    int rc = 0, writing = 0;

    for (int attempt = 0; attempt < WRITE_ATTEMPTS; attempt++) {
        rc = mdb_txn_begin(e->env, NULL, writing ? 0 : MDB_RDONLY, &txn);
        if (rc == MDB_MAP_RESIZED) {
            if (env_adopt_mapsize(e) < 0)
                goto error;
            continue;
        }
        if (rc != 0)
            break;
        rc = env_open_tables_in(e, txn, writing ? MDB_CREATE : 0);
        if (rc == 0) {
            rc = mdb_txn_commit(txn);   /* keeps the handles, even read-only */
            txn = NULL;
            if (rc == 0) {
                e->have_tables = 1;
                goto done;
            }
        }
        if (txn != NULL)
            mdb_txn_abort(txn);
        txn = NULL;
        if (rc == MDB_NOTFOUND && e->rdonly) {
            rc = 0;   /* nothing written yet: an empty store */
            goto done;
        }
        if (rc == MDB_NOTFOUND && !writing) {
            if (env_write_lock(e) < 0)
                return -1;
            writing = 1;
            continue;
        }
        if (rc != MDB_MAP_FULL)
            break;
        if (writing) {
            env_write_unlock(e);
            writing = 0;
        }
        if (env_grow(e, 0) < 0)
            return -1;
    }
    store_raise(rc, "open tables", NULL);
error:
    if (writing)
        env_write_unlock(e);
    return -1;
done:
    if (writing)
        env_write_unlock(e);
    return 0;
}

/* ---- checking data.mdb against LMDB's own metadata ---------------------- */

/* LMDB 0.9's data file begins with two meta pages (mdb.c): a 16-byte page
 * header, then MDB_meta = u32 magic, u32 version, void *address, size_t
 * mapsize, MDB_db dbs[2] (48 bytes each; dbs[0].md_pad holds the page size),
 * pgno_t last_pg, txnid_t txnid, in the host's byte order. The current meta
 * is the one with the larger txnid. Read only on 64-bit hosts and only when
 * magic and version match: anything else is left to LMDB to judge. */
#define LMDB_MAGIC 0xBEEFC0DEu
#define LMDB_DATA_VERSION 1u
#define LMDB_META_END 152   /* page header + MDB_meta up to mm_txnid's end */

static int
lmdb_read_meta(int fd, off_t at, uint32_t *psize, uint64_t *last_pg, uint64_t *txnid)
{
    unsigned char b[LMDB_META_END];
    uint32_t magic, version;

    if (pread(fd, b, sizeof b, at) != (ssize_t)sizeof b)
        return -1;
    memcpy(&magic, b + 16, 4);
    memcpy(&version, b + 20, 4);
    memcpy(psize, b + 40, 4);
    memcpy(last_pg, b + 136, 8);
    memcpy(txnid, b + 144, 8);
    return magic == LMDB_MAGIC && version == LMDB_DATA_VERSION ? 0 : -1;
}

/* How many bytes data.mdb must hold for the pages its current meta page
 * says are in use: (last_pg + 1) * page size; 0 when unknown. */
static size_t
lmdb_bytes_in_use(int fd)
{
    uint32_t psize, psize1;
    uint64_t last, txnid, last1, txnid1;

    if (sizeof(size_t) != 8 || lmdb_read_meta(fd, 0, &psize, &last, &txnid) < 0)
        return 0;
    if (psize < 512 || psize > 65536 || (psize & (psize - 1)) != 0)
        return 0;
    if (lmdb_read_meta(fd, (off_t)psize, &psize1, &last1, &txnid1) == 0 && txnid1 > txnid)
        last = last1;
    if (last >= SIZE_MAX / psize)
        return SIZE_MAX;
    return (size_t)(last + 1) * psize;
}

/* Raises DamagedError: the file is shorter than its pages in use. Reading
 * them through the map would kill the process with SIGBUS. */
static void
raise_truncated(PyObject *path, size_t have, size_t need)
{
    PyErr_Format(ds_DamagedError,
                 "the cache in '%U' is damaged (data.mdb holds %zu bytes, but its pages in use "
                 "end at byte %zu: the file was cut short): run `devstash doctor` or delete "
                 "the folder", path, have, need);
}

/* Checks data.mdb (under the folder lock, before LMDB opens it): a file of
 * ours that nobody else may write, not shorter than its pages in use.
 * *size gets its size (0 when absent). 0, or -1 with an exception. */
static int
env_check_data(ds_env *e, PyObject *path, const char *folder, size_t *size)
{
    char shown[PATH_MAX + 16];
    ds_unsafe why;
    struct stat st;

    *size = 0;
    int fd = openat(e->dirfd, "data.mdb", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        if (errno == ELOOP && folder_check_entry(e->dirfd, folder, "data.mdb", &why) < 0
            && why.problem[0]) {
            folder_raise(&why);
            return -1;
        }
        if (errno == EACCES && e->rdonly)
            return 0;   /* LMDB says it better */
        store_raise(errno, "cannot open store", path);
        return -1;
    }
    snprintf(shown, sizeof shown, "%s/data.mdb", folder);
    if (folder_check_fd(fd, shown, &why) < 0) {
        int err = errno;
        close(fd);
        if (why.problem[0])
            folder_raise(&why);
        else
            store_raise(err, "cannot open store", path);
        return -1;
    }
    if (fstat(fd, &st) < 0) {
        int err = errno;
        close(fd);
        store_raise(err, "cannot open store", path);
        return -1;
    }
    *size = (size_t)st.st_size;
    size_t need = *size ? lmdb_bytes_in_use(fd) : 0;
    close(fd);
    if (need > *size) {
        raise_truncated(path, *size, need);
        return -1;
    }
    return 0;
}

/* The path LMDB opens the folder by: /proc/self/fd/N, the folder already
 * opened and checked, so that nobody can swap the folder between the checks
 * and LMDB's opens; the path itself where /proc is not mounted. */
static const char *
env_open_path(ds_env *e, const char *folder, char *out, size_t size)
{
    struct stat st;
    snprintf(out, size, "/proc/self/fd/%d", e->dirfd);
    if (stat(out, &st) == 0 && st.st_dev == e->dev && st.st_ino == e->ino)
        return out;
    return folder;
}

/* Finds or opens the environment of a folder; creates the folder unless
 * read-only. Returns a counted reference, or NULL with an exception. */
ds_env *
env_acquire(PyObject *path, const char *fspath, size_t map_size, int rdonly)
{
    ds_env *e = NULL;
    char *buf = NULL;
    char open_path[64];
    struct stat st;
    ds_unsafe why;
    int rc, locked = 0, dirfd = -1;

    size_t n = strlen(fspath);
    buf = PyMem_Malloc(n + 1);
    if (buf == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    memcpy(buf, fspath, n + 1);
    while (n > 1 && buf[n - 1] == '/')
        buf[--n] = '\0';
    if (!rdonly && folder_make(buf) < 0) {
        store_raise(errno, "cannot create cache folder", path);
        goto error;
    }
    /* The folder and the files in it: ours, and nobody else's to write. */
    dirfd = folder_open_checked(buf, &why);
    if (dirfd < 0) {
        if (why.problem[0])
            folder_raise(&why);
        else
            store_raise(errno, "cannot open cache folder", path);
        goto error;
    }
    if (fstat(dirfd, &st) < 0) {
        store_raise(errno, "cannot open cache folder", path);
        goto error;
    }
    for (ds_env *it = env_list; it != NULL; it = it->next) {
        if (it->dev == st.st_dev && it->ino == st.st_ino) {
            if (it->rdonly && !rdonly) {
                store_raise(EBUSY, "already open read-only in this process", path);
                goto error;
            }
            it->refs++;
            close(dirfd);
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
    e->dirfd = dirfd;
    dirfd = -1;
    e->folder = buf;
    buf = NULL;
    if ((rc = mdb_env_create(&e->env)) != 0) {
        e->env = NULL;
        store_raise(rc, "create LMDB environment", path);
        goto error;
    }
    (void)mdb_env_set_userctx(e->env, e);
    (void)mdb_env_set_assert(e->env, store_on_assert);
    long page = sysconf(_SC_PAGESIZE);
    size_t psize = page > 0 ? (size_t)page : 4096;
    if (map_size == 0)
        map_size = DEFAULT_MAP_SIZE;
    if (map_size > SIZE_MAX - psize)
        map_size = SIZE_MAX - psize;
    map_size = (map_size + psize - 1) / psize * psize;
    e->lock_timeout = DEFAULT_LOCK_TIMEOUT;
    if (env_flock(e, e->dirfd, NULL, "open") < 0)
        goto error;
    locked = 1;
    /* Before LMDB opens the file (a writable open extends it to the map
     * size): a file cut short must not be opened, let alone grown. */
    size_t file_size;
    if (env_check_data(e, path, e->folder, &file_size) < 0)
        goto error;
    /* Never below the file's size: see env_set_mapsize. */
    if (file_size > map_size)
        map_size = file_size;
    if ((rc = mdb_env_set_maxdbs(e->env, 4)) != 0
        || (rc = mdb_env_set_maxreaders(e->env, 510)) != 0
        || (rc = mdb_env_set_mapsize(e->env, map_size)) != 0) {
        store_raise(rc, "configure LMDB environment", path);
        goto error;
    }
    unsigned int flags = MDB_NOTLS | MDB_NOSYNC | (rdonly ? MDB_RDONLY : MDB_WRITEMAP);
    const char *where = env_open_path(e, e->folder, open_path, sizeof open_path);
    if ((rc = mdb_env_open(e->env, where, flags, 0600)) != 0) {
        store_raise(rc, "cannot open store", path);
        goto error;
    }
    MDB_stat est;
    MDB_envinfo info;
    if ((rc = mdb_env_get_fd(e->env, &e->fd)) != 0 || (rc = mdb_env_stat(e->env, &est)) != 0
        || (rc = mdb_env_info(e->env, &info)) != 0) {
        store_raise(rc, "cannot open store", path);
        goto error;
    }
    e->psize = est.ms_psize;
    /* What LMDB opened is what was checked: ours, nobody else's to write. */
    char shown[PATH_MAX + 16];
    snprintf(shown, sizeof shown, "%s/data.mdb", e->folder);
    if (folder_check_fd(e->fd, shown, &why) < 0) {
        if (why.problem[0])
            folder_raise(&why);
        else
            store_raise(errno, "cannot open store", path);
        goto error;
    }
    /* LMDB's own account of the pages in use, against the file as it was
     * before the open (a writable open has extended it by now). */
    size_t in_use = (size_t)(info.me_last_pgno + 1) * e->psize;
    if (file_size > 0 && in_use > file_size) {
        raise_truncated(path, file_size, in_use);
        goto error;
    }
    flock(e->dirfd, LOCK_UN);
    locked = 0;
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
    return e;

error:
    if (dirfd >= 0)
        close(dirfd);
    if (e != NULL) {
        if (locked)
            flock(e->dirfd, LOCK_UN);
        if (e->env != NULL)
            mdb_env_close(e->env);   /* also after a failed mdb_env_open */
        if (e->dirfd >= 0)
            close(e->dirfd);
        PyMem_Free(e->folder);
        PyMem_Free(e);
    }
    PyMem_Free(buf);
    return NULL;
}

/* Drops a reference; the last one syncs and closes. Only for environments
 * of this process (same fork generation). */
void
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
    PyMem_Free(e->folder);
    PyMem_Free(e);
}
