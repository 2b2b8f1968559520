/* Walks of the metadata table for the devstash command: see store_scan.h. */
#include "store_scan.h"

#include <stdlib.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

/* Deletes per write transaction when pruning: LMDB keeps a transaction's
 * dirty pages in a bounded list, and short writes let other processes in. */
#define PRUNE_BATCH 20000

PyObject *
meta_dict(StoreObject *s, const unsigned char *key, const ds_meta *m)
{
    uint64_t hits = m->hits;
    double last = m->last_hit;
    const ds_hitrec *h = hits_find(&s->hits, key);
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

/* ---- a hex prefix of keys ----------------------------------------------- */

typedef struct {
    unsigned char low[DS_DIGEST_SIZE];   /* the smallest key with the prefix */
    int nibbles;                         /* hex digits in the prefix */
} key_prefix;

static int
hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* 0, or -1 with ValueError. */
static int
prefix_parse(const char *text, Py_ssize_t len, key_prefix *p)
{
    memset(p, 0, sizeof *p);
    if (len > 2 * DS_DIGEST_SIZE) {
        PyErr_SetString(PyExc_ValueError, "a key prefix has at most 32 hex digits");
        return -1;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        int v = hex_value((unsigned char)text[i]);
        if (v < 0) {
            PyErr_Format(PyExc_ValueError, "not a hex key prefix: %R",
                         PyUnicode_FromStringAndSize(text, len));
            return -1;
        }
        p->low[i / 2] |= (unsigned char)(i % 2 ? v : v << 4);
    }
    p->nibbles = (int)len;
    return 0;
}

static int
prefix_matches(const key_prefix *p, const unsigned char *key)
{
    int whole = p->nibbles / 2;
    if (memcmp(key, p->low, (size_t)whole) != 0)
        return 0;
    return p->nibbles % 2 == 0 || (key[whole] & 0xF0) == p->low[whole];
}

/* ---- scan: a page of entries in key order ------------------------------- */

PyObject *
Store_scan(StoreObject *s, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"after", "limit", "prefix", NULL};
    Py_buffer after = {0};
    Py_ssize_t limit = -1, prefix_len = 0;
    const char *prefix_text = "";
    PyObject *list = NULL, *item = NULL;
    MDB_cursor *cur = NULL;
    key_prefix prefix;
    MDB_val k, v;
    int rc, reading = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|z*ns#:scan", kwlist, &after, &limit,
                                     &prefix_text, &prefix_len))
        return NULL;
    if (after.buf != NULL && after.len != DS_DIGEST_SIZE) {
        PyErr_SetString(PyExc_ValueError, "after must be a 16-byte key");
        goto error;
    }
    if (prefix_parse(prefix_text, prefix_len, &prefix) < 0)
        goto error;
    if (store_read_begin(s) < 0)
        goto error;
    reading = 1;
    list = PyList_New(0);
    if (list == NULL || !s->env->have_tables || limit == 0)
        goto done;
    MDB_txn *txn = store_txn(s);
    if ((rc = mdb_cursor_open(txn, s->env->meta, &cur)) != 0)
        goto lmdb_error;
    /* Start at the prefix's first key or just after `after`, whichever is
     * later; an empty table answers MDB_NOTFOUND. */
    unsigned char start[DS_DIGEST_SIZE];
    memcpy(start, prefix.low, DS_DIGEST_SIZE);
    int skip_equal = 0;
    if (after.buf != NULL && memcmp(after.buf, start, DS_DIGEST_SIZE) >= 0) {
        memcpy(start, after.buf, DS_DIGEST_SIZE);
        skip_equal = 1;
    }
    k.mv_size = DS_DIGEST_SIZE;
    k.mv_data = start;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == 0 && skip_equal && k.mv_size == DS_DIGEST_SIZE
        && memcmp(k.mv_data, start, DS_DIGEST_SIZE) == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        ds_meta m;
        if (k.mv_size != DS_DIGEST_SIZE)
            continue;
        if (!prefix_matches(&prefix, k.mv_data)) {
            rc = MDB_NOTFOUND;   /* past the prefix's range */
            break;
        }
        if (meta_decode(v.mv_data, v.mv_size, &m) < 0)
            continue;
        if (meta_resolve_site(s->env, txn, &m) < 0)
            goto error;
        item = meta_dict(s, k.mv_data, &m);
        if (item == NULL || PyList_Append(list, item) < 0)
            goto error;
        Py_CLEAR(item);
        if (limit > 0 && PyList_GET_SIZE(list) >= limit)
            goto done;
    }
    if (rc == MDB_NOTFOUND)
        goto done;
lmdb_error:
    store_raise(rc, "list entries", NULL);
error:
    Py_CLEAR(list);
    Py_CLEAR(item);
done:
    if (cur != NULL)
        mdb_cursor_close(cur);
    if (reading)
        store_read_end(s);
    if (after.buf != NULL)
        PyBuffer_Release(&after);
    return list;
}

PyObject *
Store_entries(StoreObject *s, PyObject *unused)
{
    DS_UNUSED(unused);
    PyObject *args = PyTuple_New(0);
    if (args == NULL)
        return NULL;
    PyObject *list = Store_scan(s, args, NULL);
    Py_DECREF(args);
    return list;
}

/* ---- totals ---------------------------------------------------------------- */

/* A map of 64-bit keys to 64-bit values, open addressing (key 0 is kept
 * aside, as 0 marks an empty slot). */
typedef struct {
    uint64_t *keys, *vals;
    size_t cap, n;
    int has_zero;
    uint64_t zero_val;
} u64_map;

static size_t
u64_slot(uint64_t x, size_t mask)
{
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDu;
    x ^= x >> 33;
    return (size_t)x & mask;
}

/* 1 with *val when x is present, else 0. */
static int
u64_map_get(const u64_map *m, uint64_t x, uint64_t *val)
{
    if (x == 0) {
        *val = m->zero_val;
        return m->has_zero;
    }
    if (m->cap == 0)
        return 0;
    for (size_t j = u64_slot(x, m->cap - 1); m->keys[j] != 0; j = (j + 1) & (m->cap - 1)) {
        if (m->keys[j] == x) {
            *val = m->vals[j];
            return 1;
        }
    }
    return 0;
}

/* Sets x to val. 0, or -1 with MemoryError. */
static int
u64_map_set(u64_map *m, uint64_t x, uint64_t val)
{
    if (x == 0) {
        m->has_zero = 1;
        m->zero_val = val;
        return 0;
    }
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 256;
        uint64_t *keys = PyMem_Calloc(cap, sizeof *keys), *vals = PyMem_Calloc(cap, sizeof *vals);
        if (keys == NULL || vals == NULL) {
            PyMem_Free(keys);
            PyMem_Free(vals);
            PyErr_NoMemory();
            return -1;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (m->keys[i] == 0)
                continue;
            size_t j = u64_slot(m->keys[i], cap - 1);
            while (keys[j] != 0)
                j = (j + 1) & (cap - 1);
            keys[j] = m->keys[i];
            vals[j] = m->vals[i];
        }
        PyMem_Free(m->keys);
        PyMem_Free(m->vals);
        m->keys = keys;
        m->vals = vals;
        m->cap = cap;
    }
    size_t j = u64_slot(x, m->cap - 1);
    while (m->keys[j] != 0 && m->keys[j] != x)
        j = (j + 1) & (m->cap - 1);
    if (m->keys[j] == 0)
        m->n++;
    m->keys[j] = x;
    m->vals[j] = val;
    return 0;
}

static void
u64_map_free(u64_map *m)
{
    PyMem_Free(m->keys);
    PyMem_Free(m->vals);
}

/* totals(now) -> dict: entries, size, hits, saved, expired, sites. */
PyObject *
Store_totals(StoreObject *s, PyObject *arg)
{
    double now = PyFloat_AsDouble(arg);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    uint64_t entries = 0, size = 0, hits = 0, expired = 0;
    double saved = 0;
    u64_map site_of = {0}, sites = {0};   /* site record id -> site hash; site hashes */
    MDB_cursor *cur = NULL;
    PyObject *result = NULL;
    MDB_val k, v;
    int rc = MDB_NOTFOUND;

    if (store_read_begin(s) < 0)
        return NULL;
    MDB_txn *txn = store_txn(s);
    if (s->env->have_tables) {
        if ((rc = mdb_cursor_open(txn, s->env->meta, &cur)) != 0)
            goto lmdb_error;
        while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
            ds_meta m;
            if (k.mv_size != DS_DIGEST_SIZE || meta_decode(v.mv_data, v.mv_size, &m) < 0)
                continue;
            uint64_t n_hits = m.hits;
            const ds_hitrec *h = hits_find(&s->hits, k.mv_data);
            if (h != NULL)
                n_hits += h->count;
            entries++;
            size += m.size;
            hits += n_hits;
            saved += m.compute * (double)n_hits;
            if (m.ttl > 0 && (now >= m.created + m.ttl || m.created > now))
                expired++;
            /* Sites are few: each shared site record is read once. */
            uint64_t site_hash;
            if (m.inline_site || !u64_map_get(&site_of, m.site_id, &site_hash)) {
                if (meta_resolve_site(s->env, txn, &m) < 0)
                    goto error;
                site_hash = XXH3_64bits(m.site, m.site_len);
                if (!m.inline_site && u64_map_set(&site_of, m.site_id, site_hash) < 0)
                    goto error;
            }
            if (u64_map_set(&sites, site_hash, 0) < 0)
                goto error;
        }
        if (rc != MDB_NOTFOUND)
            goto lmdb_error;
    }
    result = Py_BuildValue("{s:K,s:K,s:K,s:d,s:K,s:n}",
        "entries", (unsigned long long)entries, "size", (unsigned long long)size,
        "hits", (unsigned long long)hits, "saved", saved,
        "expired", (unsigned long long)expired,
        "sites", (Py_ssize_t)(sites.n + (size_t)sites.has_zero));
    goto done;
lmdb_error:
    store_raise(rc, "total entries", NULL);
error:
    Py_CLEAR(result);
done:
    if (cur != NULL)
        mdb_cursor_close(cur);
    store_read_end(s);
    u64_map_free(&site_of);
    u64_map_free(&sites);
    return result;
}

/* ---- prune: least recently hit first, until the values fit ---------------- */

typedef struct {
    double last_hit, created;
    uint64_t size;
    unsigned char key[DS_DIGEST_SIZE];
} prune_row;

static int
prune_order(const void *a, const void *b)
{
    const prune_row *x = a, *y = b;
    if (x->last_hit != y->last_hit)
        return x->last_hit < y->last_hit ? -1 : 1;
    if (x->created != y->created)
        return x->created < y->created ? -1 : 1;
    return memcmp(x->key, y->key, DS_DIGEST_SIZE);
}

static int
key_order(const void *a, const void *b)
{
    return memcmp(((const prune_row *)a)->key, ((const prune_row *)b)->key, DS_DIGEST_SIZE);
}

typedef struct {
    const prune_row *rows;
    size_t n;
} prune_batch;

static int
prune_fill(StoreObject *s, MDB_txn *txn, void *arg, const char **what)
{
    prune_batch *b = arg;
    MDB_dbi tables[2] = {s->env->values, s->env->meta};

    *what = "delete";
    for (size_t i = 0; i < b->n; i++) {
        MDB_val k = {DS_DIGEST_SIZE, (void *)b->rows[i].key};
        for (int t = 0; t < 2; t++) {
            int rc = mdb_del(txn, tables[t], &k, NULL);
            if (rc != 0 && rc != MDB_NOTFOUND)
                return rc;
        }
    }
    return 0;
}

/* prune(max_size) -> (removed, removed_size, left, left_size): removes the
 * least recently hit entries (never hit first, then the oldest) until the
 * values take at most max_size bytes. */
PyObject *
Store_prune(StoreObject *s, PyObject *arg)
{
    unsigned long long max_size = PyLong_AsUnsignedLongLong(arg);
    if (max_size == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (store_ensure_writable(s) < 0 || store_read_begin(s) < 0)
        return NULL;
    prune_row *rows = NULL;
    size_t n = 0, cap = 0;
    uint64_t total = 0;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc = MDB_NOTFOUND, reading = 1;

    if (s->env->have_tables) {
        if ((rc = mdb_cursor_open(store_txn(s), s->env->meta, &cur)) != 0)
            goto lmdb_error;
        while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
            ds_meta m;
            if (k.mv_size != DS_DIGEST_SIZE || meta_decode(v.mv_data, v.mv_size, &m) < 0)
                continue;
            if (n == cap) {
                size_t bigger = cap ? cap * 2 : 1024;
                prune_row *more = PyMem_Realloc(rows, bigger * sizeof *more);
                if (more == NULL)
                    goto nomem;
                rows = more;
                cap = bigger;
            }
            prune_row *r = &rows[n++];
            r->last_hit = m.last_hit;
            const ds_hitrec *h = hits_find(&s->hits, k.mv_data);
            if (h != NULL && h->count > 0 && h->last > r->last_hit)
                r->last_hit = h->last;
            r->created = m.created;
            r->size = m.size;
            memcpy(r->key, k.mv_data, DS_DIGEST_SIZE);
            total += m.size;
        }
        if (rc != MDB_NOTFOUND)
            goto lmdb_error;
        mdb_cursor_close(cur);
        cur = NULL;
    }
    store_read_end(s);   /* a write may grow the map: no read may be open */
    reading = 0;
    size_t removed = 0;
    uint64_t removed_size = 0;
    if (total > max_size) {
        qsort(rows, n, sizeof *rows, prune_order);
        size_t upto = 0;
        uint64_t left = total;
        while (upto < n && left > max_size)
            left -= rows[upto++].size;
        /* Deleted in key order: neighbouring keys share pages, so each page
         * is touched once, not once per key. */
        qsort(rows, upto, sizeof *rows, key_order);
        for (size_t at = 0; at < upto; at += PRUNE_BATCH) {
            prune_batch b = {rows + at, upto - at < PRUNE_BATCH ? upto - at : PRUNE_BATCH};
            if (store_write_txn(s, prune_fill, &b, 64 * s->env->psize) < 0)
                goto error;
            for (size_t i = 0; i < b.n; i++) {
                hits_forget(&s->hits, b.rows[i].key);
                removed_size += b.rows[i].size;
            }
            removed += b.n;
        }
    }
    PyMem_Free(rows);
    return Py_BuildValue("(nKnK)", (Py_ssize_t)removed, (unsigned long long)removed_size,
                         (Py_ssize_t)(n - removed), (unsigned long long)(total - removed_size));
nomem:
    PyErr_NoMemory();
    goto error;
lmdb_error:
    store_raise(rc, "prune", NULL);
error:
    if (cur != NULL)
        mdb_cursor_close(cur);
    if (reading)
        store_read_end(s);
    PyMem_Free(rows);
    return NULL;
}
