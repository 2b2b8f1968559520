/* The store's C contract (store.h): reads on the hit path, writes, pending
 * hit counts and flushing, on a StoreObject (the Python type is in
 * store_type.c, the LMDB environment in env.c, the byte formats in
 * record.c).
 *
 * Threads: every function runs with the GIL held and never releases it, so a
 * StoreObject is used by one thread at a time and a write transaction always
 * begins and commits inside one call. A read transaction may stay open while
 * Python code runs (the hit path unpickles inside it), hence MDB_NOTLS and
 * the nesting count. */
#include "store_internal.h"
#include "buffer.h"
#include "checksum.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

/* ---- StoreObject state -------------------------------------------------- */

static int
store_reopen_after_fork(StoreObject *s)
{
    /* The parent's env, reader and pending hits stay behind: see
     * store_atfork_child. The parent flushes its own hits. */
    s->env = NULL;
    PyMem_Free(s->readers);   /* their transactions are the parent's */
    s->readers = NULL;
    s->nreaders = 0;
    s->reading = 0;
    s->gen = ds_fork_gen;
    hits_abandon(&s->hits);
    s->flush_failed = 0;
    s->env = env_acquire(s->path, PyBytes_AS_STRING(s->abspath), s->map_size, s->readonly);
    return s->env != NULL ? 0 : -1;
}

/* Entry check of every operation: open, and in the process that opened it. */
int
store_ensure(StoreObject *s)
{
    if (s->gen != ds_fork_gen && s->env != NULL)
        return store_reopen_after_fork(s);
    if (s->env == NULL) {
        PyErr_SetString(ds_StoreError, "the store is closed");
        return -1;
    }
    return 0;
}

int
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

static ds_reader *
store_reader_of(StoreObject *s, unsigned long thread)
{
    for (size_t i = 0; i < s->nreaders; i++) {
        if (s->readers[i].depth > 0 && s->readers[i].thread == thread)
            return &s->readers[i];
    }
    return NULL;
}

MDB_txn *
store_txn(StoreObject *s)
{
    ds_reader *r = s->gen == ds_fork_gen ? store_reader_of(s, PyThread_get_thread_ident()) : NULL;
    return r != NULL ? r->txn : NULL;
}

/* A reader no thread uses now, made when all are in use. */
static ds_reader *
store_free_reader(StoreObject *s)
{
    for (size_t i = 0; i < s->nreaders; i++) {
        if (s->readers[i].depth == 0)
            return &s->readers[i];
    }
    ds_reader *more = PyMem_Realloc(s->readers, (s->nreaders + 1) * sizeof *more);
    if (more == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    s->readers = more;
    ds_reader *r = &s->readers[s->nreaders++];
    r->thread = 0;
    r->txn = NULL;
    r->depth = 0;
    return r;
}

int
store_read_begin(StoreObject *s)
{
    unsigned long thread = PyThread_get_thread_ident();
    int rc;

    if (s->gen == ds_fork_gen) {
        ds_reader *nested = store_reader_of(s, thread);
        if (nested != NULL) {
            nested->depth++;   /* same snapshot: pointers stay valid */
            return 0;
        }
    }
    if (store_ensure(s) < 0)
        return -1;
    ds_reader *r = store_free_reader(s);
    if (r == NULL)
        return -1;
    for (int attempt = 0; attempt < WRITE_ATTEMPTS; attempt++) {
        if (r->txn != NULL) {
            rc = mdb_txn_renew(r->txn);
        }
        else {
            MDB_txn *txn = NULL;
            rc = mdb_txn_begin(s->env->env, NULL, MDB_RDONLY, &txn);
            if (rc == 0)
                r->txn = txn;
        }
        if (rc == 0) {
            r->thread = thread;
            r->depth = 1;
            s->reading++;
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
    if (s->gen != ds_fork_gen)
        return;   /* the parent's readers: never reset them here */
    ds_reader *r = store_reader_of(s, PyThread_get_thread_ident());
    if (r == NULL)
        return;
    if (--r->depth == 0) {
        mdb_txn_reset(r->txn);
        s->reading--;
        s->env->reading--;
    }
}

void
store_readers_close(StoreObject *s)
{
    if (s->gen == ds_fork_gen) {
        for (size_t i = 0; i < s->nreaders; i++) {
            if (s->readers[i].depth > 0)
                s->env->reading--;
            if (s->readers[i].txn != NULL)
                mdb_txn_abort(s->readers[i].txn);
        }
    }
    PyMem_Free(s->readers);
    s->readers = NULL;
    s->nreaders = 0;
    s->reading = 0;
}

int
store_lookup_impl(StoreObject *s, const unsigned char key[DS_DIGEST_SIZE], ds_record *rec,
                  int later)
{
    MDB_val k = {DS_DIGEST_SIZE, (void *)key}, v;

    MDB_txn *txn = store_txn(s);
    if (txn == NULL) {
        PyErr_SetString(ds_StoreError,
                        "store_lookup outside store_read_begin/store_read_end");
        return -1;
    }
    if (!s->env->have_tables)
        return 0;
    int rc = mdb_get(txn, s->env->values, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0) {
        store_raise(rc, "lookup", NULL);
        return -1;
    }
    int r = record_parse(v.mv_data, v.mv_size, rec, later);
    if (r == RECORD_DAMAGED) {
        PyErr_SetString(ds_DamagedError, "the stored value is damaged: its checksum does not "
                        "match its bytes");
        return DS_LOOKUP_DAMAGED;
    }
    return r;
}

int
store_lookup(StoreObject *s, const unsigned char key[DS_DIGEST_SIZE], ds_record *rec)
{
    return store_lookup_impl(s, key, rec, 1);
}

PyObject *
store_record_copy_buffers(const ds_record *rec)
{
    size_t n = rec->nbuffers;
    PyObject *list = PyList_New((Py_ssize_t)n);
    char **dst = NULL;
    const char **src = NULL;
    size_t *lens = NULL;
    if (list == NULL)
        return NULL;
    if (!rec->verified) {
        dst = PyMem_Malloc(n * sizeof *dst);
        src = PyMem_Malloc(n * sizeof *src);
        lens = PyMem_Malloc(n * sizeof *lens);
        if (dst == NULL || src == NULL || lens == NULL) {
            PyErr_NoMemory();
            goto error;
        }
    }
    uint64_t start = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t end = get_u64(rec->buffer_table + 8 * i);
        size_t len = (size_t)(end - start);
        char *data;
        PyObject *copy = buffer_alloc(len, &data);
        if (copy == NULL)
            goto error;
        PyList_SET_ITEM(list, (Py_ssize_t)i, copy);
        if (rec->verified) {
            memcpy(data, rec->buffer_data + start, len);
        }
        else {
            dst[i] = data;
            src[i] = rec->buffer_data + start;
            lens[i] = len;
        }
        start = end;
    }
    if (!rec->verified) {
        uint64_t sum;
        Py_BEGIN_ALLOW_THREADS
        sum = checksum_copy(rec->head, rec->head_len, n, dst, src, lens);
        Py_END_ALLOW_THREADS
        if (sum != rec->checksum) {
            PyErr_SetString(ds_DamagedError, "the stored value is damaged: its checksum does not "
                            "match its bytes");
            goto error;
        }
    }
    PyMem_Free(dst);
    PyMem_Free(src);
    PyMem_Free(lens);
    return list;

error:
    PyMem_Free(dst);
    PyMem_Free(src);
    PyMem_Free(lens);
    Py_DECREF(list);
    return NULL;
}

/* ---- metadata records ---------------------------------------------------- */

/* Fills callee/site of a meta record that refers to "sites"; a missing or
 * bad site record leaves them empty. */
int
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

int
store_write_txn(StoreObject *s, store_fill_fn fill, void *ctx, size_t need)
{
    ds_env *e = s->env;
    const char *what = "begin write";
    int rc = 0, result = -1;

    if (env_write_lock(e) < 0)
        return -1;
    for (int attempt = 0; attempt < WRITE_ATTEMPTS; attempt++) {
        MDB_txn *txn = NULL;
        what = "begin write";
        rc = mdb_txn_begin(e->env, NULL, 0, &txn);
        if (rc == MDB_MAP_RESIZED) {
            if (env_adopt_mapsize(e) < 0)
                goto done;
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
            result = 0;
            goto done;
        }
        if (rc == FILL_PYERR)
            goto done;
        if (rc != MDB_MAP_FULL)
            break;
        if (env_grow(e, need) < 0)
            goto done;
    }
    store_raise(rc, what, NULL);
done:
    env_write_unlock(e);
    return result;
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
int
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
     * space LMDB reserves in its page, then the checksum over them. */
    *what = "write value";
    if ((rc = mdb_put(txn, e->values, &k, &v, MDB_RESERVE)) != 0)
        return rc;
    unsigned char *p = record_put_header(v.mv_data, en->created, en->pickle_len,
                                         (uint64_t)c->nviews);
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
    record_seal(v.mv_data, c->record_size);
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
    c.header_size = record_header_size(e->pickle_len, (uint64_t)n);
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
    hits_forget(&s->hits, key);
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
    if (s->gen != ds_fork_gen || s->env == NULL) {
        if (store_ensure(s) < 0)
            return -1;
    }
    if (s->readonly)
        return 0;   /* nowhere to write them */
    if (hits_note(&s->hits, s->env->dirfd, key, when) < 0)
        return -1;
    return 0;
}

/* Adds n pending counts to their entries' metadata inside txn. */
static int
flush_counts(ds_env *e, MDB_txn *txn, const ds_hitrec *recs, size_t n, double *saved,
             const char **what)
{
    unsigned char small[512];
    unsigned char *copy = NULL;
    size_t copy_cap = 0;
    int rc = 0;

    for (size_t i = 0; i < n; i++) {
        const ds_hitrec *h = &recs[i];
        if (h->count == 0)
            continue;
        MDB_val k = {DS_DIGEST_SIZE, (void *)h->key}, v;
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

typedef struct {
    double saved;               /* this process's hits only */
    const ds_orphans *orphans;
} flush_ctx;

static int
flush_fill(StoreObject *s, MDB_txn *txn, void *arg, const char **what)
{
    flush_ctx *c = arg;
    double orphan_saved = 0;
    int rc;

    c->saved = 0;   /* a retried fill starts over */
    rc = flush_counts(s->env, txn, s->hits.recs, s->hits.n, &c->saved, what);
    for (size_t i = 0; rc == 0 && i < c->orphans->n; i++)
        rc = flush_counts(s->env, txn, c->orphans->files[i].recs, c->orphans->files[i].n,
                          &orphan_saved, what);
    return rc;
}

/* Writes this process's pending hits and those that processes which ended
 * without flushing left in the folder (hits.h), then syncs what was
 * written before. After a failure the counts stay in their file, and close
 * does not try again: a later process adds them. */
int
store_flush(StoreObject *s)
{
    if (store_ensure(s) < 0)
        return -1;
    if (!s->readonly) {
        ds_orphans orphans;
        hits_orphans_open(s->env->dirfd, &s->hits, &orphans);
        if (s->hits.n > 0 || orphans.n > 0) {
            flush_ctx c = {.saved = 0, .orphans = &orphans};
            int was_dirty = s->env->dirty;
            size_t records = s->hits.n;
            for (size_t i = 0; i < orphans.n; i++)
                records += orphans.files[i].n;
            if (store_write_txn(s, flush_fill, &c, 64 * records) < 0) {
                hits_orphans_close(s->env->dirfd, &orphans, 0);
                s->flush_failed = 1;
                return -1;
            }
            /* Hit counts alone are not worth a disk flush at every exit: a
             * warm run would pay for it, and a lost count costs nothing. */
            s->env->dirty = was_dirty;
            s->saved += c.saved;
            s->flush_failed = 0;
            hits_reset(&s->hits);
        }
        hits_orphans_close(s->env->dirfd, &orphans, 1);
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
int
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

int
store_close_impl(StoreObject *s)
{
    int result = 0;

    if (s->env == NULL)
        return 0;
    if (s->gen != ds_fork_gen) {
        store_readers_close(s);   /* frees ours; the transactions are the parent's */
        s->env = NULL;   /* the parent's: leaked, see store_atfork_child */
        hits_abandon(&s->hits);
        return 0;
    }
    if (s->reading > 0) {
        PyErr_SetString(ds_StoreError, "cannot close the store while a read is in progress");
        return -1;
    }
    if (!s->flush_failed)
        result = store_flush(s);
    hits_close(&s->hits, s->env->dirfd, s->flush_failed);
    s->flush_failed = 0;
    store_readers_close(s);
    env_release(s->env);
    s->env = NULL;
    return result;
}
