/* What store.c (the C contract of store.h) and store_type.c (the Python
 * type Store) share: the StoreObject and its write transactions. Private to
 * those two files. */
#ifndef DEVSTASH_STORE_INTERNAL_H
#define DEVSTASH_STORE_INTERNAL_H

#include "env.h"
#include "record.h"
#include "store.h"

#include <time.h>

#define FILL_PYERR (-1)     /* a fill callback set a Python exception */

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

static inline double
store_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The pending hits of key, or NULL. */
ds_hit *hits_find(StoreObject *s, const unsigned char *key);
void hits_clear(StoreObject *s);
/* Forgets pending hits of a key whose entry is replaced or deleted. */
void hits_forget(StoreObject *s, const unsigned char *key);

/* Entry check of every operation: open, and in the process that opened it
 * (reopens after a fork). 0 or -1 with an exception. */
int store_ensure(StoreObject *s);
int store_ensure_writable(StoreObject *s);

/* store_lookup; with later 0 the checksum is always verified at once. */
int store_lookup_impl(StoreObject *s, const unsigned char key[DS_DIGEST_SIZE], ds_record *rec,
                      int later);

/* Flushes, then releases the environment. 0 or -1 with an exception. */
int store_close_impl(StoreObject *s);

/* store_flush that only starts the writeback (at exit). */
int store_flush_nowait(StoreObject *s);

/* Does the puts of one transaction: returns an LMDB code (sets *what), or
 * FILL_PYERR with a Python exception. Called again after the map grew, so
 * it must not change anything outside the transaction. */
typedef int (*store_fill_fn)(StoreObject *s, MDB_txn *txn, void *ctx, const char **what);

/* One write transaction: begin (adopting a map another process grew), fill,
 * commit; on MDB_MAP_FULL abort, grow the map and start over. `need` is
 * roughly how many bytes the transaction adds. 0 or -1 with an exception. */
int store_write_txn(StoreObject *s, store_fill_fn fill, void *ctx, size_t need);

/* Writes the metadata record of key k inside txn (see store.c). An LMDB
 * code. */
int meta_write(StoreObject *s, MDB_txn *txn, MDB_val *k, ds_meta *m, const char **what);

/* Fills callee/site of a meta record that refers to "sites". 0 or -1. */
int meta_resolve_site(ds_env *e, MDB_txn *txn, ds_meta *m);

#endif /* DEVSTASH_STORE_INTERNAL_H */
