/* The Python type devstash._core.Store: a cache folder's store, for the
 * policy layer, the devstash command and tests. The C contract it wraps is
 * in store.c. */
#include "folder.h"
#include "store_internal.h"
#include "store_scan.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

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
    if (env_register_atfork() < 0)
        goto error;
    s = (StoreObject *)type->tp_alloc(type, 0);
    if (s == NULL)
        goto error;
    s->gen = ds_fork_gen;
    s->readonly = readonly;
    hits_init(&s->hits);
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
        store_readers_close(s);
        if (store_close_impl(s) < 0)
            PyErr_WriteUnraisable(NULL);   /* not s: its refcount is 0 */
        PyErr_SetRaisedException(exc);
    }
    hits_abandon(&s->hits);   /* nothing left after a close */
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
    int found = store_lookup_impl(s, key.buf, &rec, 0);
    if (found == DS_LOOKUP_DAMAGED) {
        PyErr_Clear();   /* verify() tells damaged from missing */
        found = 0;
    }
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
    int sealed;             /* a code record: header and checksum first */
} raw_ctx;

static int
raw_fill(StoreObject *s, MDB_txn *txn, void *arg, const char **what)
{
    raw_ctx *c = arg;
    size_t head = c->sealed ? CODE_HEADER : 0;
    MDB_val k = {DS_DIGEST_SIZE, (void *)c->key}, v = {head + c->len, NULL};
    int rc;

    DS_UNUSED(s);
    *what = "write";
    if ((rc = mdb_put(txn, c->dbi, &k, &v, MDB_RESERVE)) != 0)
        return rc;
    if (c->len)
        memcpy((char *)v.mv_data + head, c->data, c->len);
    if (c->sealed)
        code_seal(v.mv_data, v.mv_size);
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
    raw_ctx c = {key.buf, code ? s->env->code : s->env->values, data.buf, (size_t)data.len, code};
    if (c.len > SIZE_MAX - 64 - CODE_HEADER) {
        PyErr_SetString(PyExc_OverflowError, "value too large");
        goto error;
    }
    if (store_write_txn(s, raw_fill, &c, c.len + 64 + CODE_HEADER) < 0)
        goto error;
    if (!code)
        hits_forget(&s->hits, key.buf);
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

/* What store_get_raw reads. */
enum { RAW_VALUE, RAW_CODE, RAW_RECORD, RAW_VERIFY };

/* A raw get from one table, copied to bytes: get_code, _get_raw, and
 * get_record (a values record whose checksum verifies: DamagedError if it
 * does not, None for one of the older format); verify tells which. */
static PyObject *
store_get_raw(StoreObject *s, PyObject *keyobj, int what)
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
        result = what == RAW_VERIFY ? PyUnicode_FromString("missing") : Py_NewRef(Py_None);
        goto error;
    }
    MDB_val k = {DS_DIGEST_SIZE, key.buf}, v;
    int rc = mdb_get(store_txn(s), what == RAW_CODE ? s->env->code : s->env->values, &k, &v);
    if (rc == MDB_NOTFOUND) {
        result = what == RAW_VERIFY ? PyUnicode_FromString("missing") : Py_NewRef(Py_None);
        goto error;
    }
    if (rc != 0) {
        store_raise(rc, "read", NULL);
        goto error;
    }
    if (what == RAW_CODE) {
        const unsigned char *data;
        size_t len;
        /* A code record that fails its checksum (or an older devstash's,
         * without one) is as good as absent: the caller rewrites the
         * source again and replaces it. */
        if (code_parse(v.mv_data, v.mv_size, &data, &len))
            result = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len);
        else
            result = Py_NewRef(Py_None);
        goto error;
    }
    if (what == RAW_RECORD || what == RAW_VERIFY) {
        ds_record rec;
        int r = record_parse(v.mv_data, v.mv_size, &rec, 0);
        if (what == RAW_VERIFY) {
            result = PyUnicode_FromString(r == RECORD_OK ? "ok" : r == RECORD_ABSENT ? "old"
                                                                                : "damaged");
            goto error;
        }
        if (r == RECORD_DAMAGED) {
            PyErr_SetString(ds_DamagedError, "the stored value is damaged: its checksum does "
                            "not match its bytes");
            goto error;
        }
        if (r == RECORD_ABSENT) {
            result = Py_NewRef(Py_None);
            goto error;
        }
    }
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
    return store_get_raw(s, keyobj, RAW_CODE);
}

static PyObject *
Store_get_raw(StoreObject *s, PyObject *keyobj)
{
    return store_get_raw(s, keyobj, RAW_VALUE);
}

static PyObject *
Store_get_record(StoreObject *s, PyObject *keyobj)
{
    return store_get_raw(s, keyobj, RAW_RECORD);
}

static PyObject *
Store_verify(StoreObject *s, PyObject *keyobj)
{
    return store_get_raw(s, keyobj, RAW_VERIFY);
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
    hits_forget(&s->hits, key.buf);
    result = PyBool_FromLong(c.found);
error:
    PyBuffer_Release(&key);
    return result;
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
    int rc = mdb_get(store_txn(s), s->env->meta, &k, &v);
    if (rc == MDB_NOTFOUND || (rc == 0 && meta_decode(v.mv_data, v.mv_size, &m) < 0)) {
        result = Py_NewRef(Py_None);
        goto error;
    }
    if (rc != 0) {
        store_raise(rc, "read metadata", NULL);
        goto error;
    }
    if (meta_resolve_site(s->env, store_txn(s), &m) < 0)
        goto error;
    result = meta_dict(s, key.buf, &m);
error:
    if (reading)
        store_read_end(s);
    PyBuffer_Release(&key);
    return result;
}

/* Entries in "values"; -1 with an exception. Needs a read in progress. */
static Py_ssize_t
store_count(StoreObject *s)
{
    MDB_stat st;
    if (!s->env->have_tables)
        return 0;
    int rc = mdb_stat(store_txn(s), s->env->values, &st);
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
    const char *body;       /* or NULL: the record is record then body */
    size_t body_len;
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
    v.mv_size = c->len + c->body_len;
    v.mv_data = NULL;
    *what = "write value";
    if ((rc = mdb_put(txn, e->values, &k, &v, MDB_RESERVE)) != 0)
        return rc;
    memcpy(v.mv_data, c->record, c->len);
    if (c->body != NULL) {
        /* Joined where it is stored (no copy of a large value in memory
         * first), then checked there; the transaction is dropped if not. */
        ds_record rec;
        memcpy((char *)v.mv_data + c->len, c->body, c->body_len);
        if (record_parse(v.mv_data, v.mv_size, &rec, 0) != RECORD_OK
            || rec.created != c->meta.created) {
            PyErr_SetString(PyExc_ValueError, "not a well-formed value record");
            return FILL_PYERR;
        }
        c->meta.size = v.mv_size - (size_t)(rec.pickle - (const char *)v.mv_data);
    }
    if ((rc = meta_write(s, txn, &k, &c->meta, what)) != 0)
        return rc;
    c->written = 1;
    return 0;
}

/* put_record(key, record, *, ttl, compute, callee, site, if_newer, body):
 * what `devstash import` and the team cache write. The record is a values
 * record as get_record returns it (its own creation time is the entry's),
 * or with body, its first bytes and body the rest (the remote cache keeps
 * a large value's bytes apart: they are joined in the map, not in memory).
 * It is checked like a lookup checks it, so a damaged file or entry cannot
 * plant an unreadable one. */
static PyObject *
Store_put_record(StoreObject *s, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"key", "record", "ttl", "compute", "callee", "site",
                             "if_newer", "body", NULL};
    PyObject *keyobj, *result = NULL;
    Py_buffer key, record, body = {0};
    int have_key = 0, if_newer = 0;
    const char *callee = "", *site = "";
    double ttl = 0.0, compute = 0.0;
    ds_record rec;
    record_ctx c;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oy*|$ddsspz*:put_record", kwlist,
                                     &keyobj, &record, &ttl, &compute, &callee, &site,
                                     &if_newer, &body))
        return NULL;
    if (store_key(keyobj, &key) < 0)
        goto error;
    have_key = 1;
    if (store_ensure_writable(s) < 0)
        goto error;
    memset(&c, 0, sizeof c);
    c.key = key.buf;
    c.record = record.buf;
    c.len = (size_t)record.len;
    if (body.buf != NULL) {
        /* Checked once joined (record_fill); the creation time is read now,
         * for if_newer, and checked against the parse there. */
        if (record.len < RECORD_FIXED || ((unsigned char *)record.buf)[0] != VALUES_MAGIC
            || (size_t)body.len > SIZE_MAX - c.len) {
            PyErr_SetString(PyExc_ValueError, "not a well-formed value record");
            goto error;
        }
        c.body = body.buf;
        c.body_len = (size_t)body.len;
        c.meta.created = get_f64((const unsigned char *)record.buf + 9);
        c.meta.size = c.len + c.body_len;   /* an upper bound until parsed */
    }
    else {
        if (record_parse(record.buf, (size_t)record.len, &rec, 0) != RECORD_OK) {
            PyErr_SetString(PyExc_ValueError, "not a well-formed value record");
            goto error;
        }
        c.meta.created = rec.created;
        c.meta.size = c.len - (size_t)(rec.pickle - (const char *)record.buf);
    }
    c.if_newer = if_newer;
    c.meta.compute = compute;
    c.meta.ttl = ttl;
    c.meta.callee = callee;
    c.meta.callee_len = strlen(callee);
    c.meta.site = site;
    c.meta.site_len = strlen(site);
    size_t need = c.len + c.body_len + meta_size(&c.meta) + site_blob_size(&c.meta);
    if (need < c.len + c.body_len)
        need = SIZE_MAX;
    if (store_write_txn(s, record_fill, &c, need) < 0)
        goto error;
    if (c.written)
        hits_forget(&s->hits, key.buf);
    result = PyBool_FromLong(c.written);
error:
    if (have_key)
        PyBuffer_Release(&key);
    PyBuffer_Release(&record);
    if (body.obj != NULL)
        PyBuffer_Release(&body);
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
    hits_reset(&s->hits);
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

static PyObject *
Store_get_lock_timeout(StoreObject *s, void *closure)
{
    DS_UNUSED(closure);
    if (store_ensure(s) < 0)
        return NULL;
    return PyFloat_FromDouble(s->env->lock_timeout);
}

static int
Store_set_lock_timeout(StoreObject *s, PyObject *value, void *closure)
{
    DS_UNUSED(closure);
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "lock_timeout cannot be deleted");
        return -1;
    }
    double t = PyFloat_AsDouble(value);
    if (t == -1.0 && PyErr_Occurred())
        return -1;
    if (!(t >= 0.0 && t <= 86400.0)) {
        PyErr_SetString(PyExc_ValueError, "lock_timeout must be between 0 and 86400 seconds");
        return -1;
    }
    if (store_ensure(s) < 0)
        return -1;
    s->env->lock_timeout = t;
    return 0;
}

static PyGetSetDef Store_getset[] = {
    {"lock_timeout", (getter)Store_get_lock_timeout, (setter)Store_set_lock_timeout,
     "Seconds a write waits for another process's write (or this process's reads)"
     " before BusyError; shared by the Store objects of a folder in this process.", NULL},
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
    {"scan", (PyCFunction)(void (*)(void))Store_scan, METH_VARARGS | METH_KEYWORDS,
     "scan(after=None, limit=-1, prefix='') -> list[dict]: metadata in key order, of keys"
     " after `after` that start with the hex prefix; at most limit (-1: all)."},
    {"totals", (PyCFunction)Store_totals, METH_O,
     "totals(now) -> dict: entries, size, hits, saved (compute seconds x hits), expired"
     " (at now), sites (distinct call sites)."},
    {"prune", (PyCFunction)Store_prune, METH_O,
     "prune(max_size) -> (removed, removed_size, left, left_size): least recently hit"
     " entries (never hit first, then oldest) removed until the values fit max_size."},
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
    {"get_record", (PyCFunction)Store_get_record, METH_O,
     "get_record(key) -> bytes | None: the values record of key, for put_record; its checksum"
     " verified (DamagedError if it does not match). None when absent or of an older format."},
    {"verify", (PyCFunction)Store_verify, METH_O,
     "verify(key) -> str: 'ok' (the value's checksum matches), 'missing', 'old' (an older"
     " devstash's format: recomputed on the next run) or 'damaged' (a checksum or length that"
     " does not match)."},
    {"put_record", (PyCFunction)(void (*)(void))Store_put_record, METH_VARARGS | METH_KEYWORDS,
     "put_record(key, record, *, ttl=0.0, compute=0.0, callee='', site='', if_newer=False,"
     " body=None) -> bool: write a raw values record (record, then body if given) and its"
     " metadata; with if_newer, keep an entry created at the same time or later (returns"
     " False). ValueError if the record is malformed."},
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

/* ---- module registration -------------------------------------------------- */

PyObject *ds_DamagedError = NULL;
PyObject *ds_BusyError = NULL;

static PyMethodDef store_functions[] = {
    {"check_folder", folder_py_check, METH_O,
     "check_folder(path) -> None | (problem, fix): whether a cache folder and the files"
     " devstash opens in it are the current user's and nobody else's to write (no symbolic"
     " links); None when they are, or when the folder does not exist."},
    {NULL, NULL, 0, NULL},
};

int
store_module_init(PyObject *module)
{
    ds_UnsafeFolderError = PyErr_NewExceptionWithDoc(
        "devstash._core.UnsafeFolderError",
        "The cache folder, or a file in it, belongs to someone else, may be written by"
        " others, or is a symbolic link: its values could run someone else's code."
        " Attributes problem and fix say what and how.",
        ds_StoreError, NULL);
    if (ds_UnsafeFolderError == NULL
        || PyModule_AddObjectRef(module, "UnsafeFolderError", ds_UnsafeFolderError) < 0)
        return -1;
    ds_DamagedError = PyErr_NewExceptionWithDoc(
        "devstash._core.DamagedError",
        "data.mdb or a value record in it is damaged (cut short, a checksum that does not"
        " match, pages LMDB cannot read).",
        ds_StoreError, NULL);
    if (ds_DamagedError == NULL
        || PyModule_AddObjectRef(module, "DamagedError", ds_DamagedError) < 0)
        return -1;
    ds_BusyError = PyErr_NewExceptionWithDoc(
        "devstash._core.BusyError",
        "A write waited its bound (Store.lock_timeout) for the cache: another process held"
        " it (stopped with Ctrl-Z or SIGSTOP?), or a read of this process stayed open.",
        ds_StoreError, NULL);
    if (ds_BusyError == NULL
        || PyModule_AddObjectRef(module, "BusyError", ds_BusyError) < 0)
        return -1;
    return PyModule_AddFunctions(module, store_functions);
}
