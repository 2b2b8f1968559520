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

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <pthread.h>

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
 * when a file is concerned. For system errors (rc > 0) the exception's errno
 * is set too, and filename when there is a path. */
void
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
ds_env *
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
    PyMem_Free(e);
}
