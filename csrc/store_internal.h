/* What store.c (the C contract of store.h) and store_type.c (the Python
 * type Store) share: the StoreObject and its write transactions. Private to
 * those two files. */
#ifndef DEVSTASH_STORE_INTERNAL_H
#define DEVSTASH_STORE_INTERNAL_H

#include "env.h"
#include "record.h"
#include "store.h"

#include <time.h>

#include "hits.h"

#define FILL_PYERR (-1)     /* a fill callback set a Python exception */

/* A thread's read transaction. Each thread reads its own snapshot: one
 * shared between threads would stay open as long as any of them reads, and
 * the others would not see what was written since. Calls of one thread
 * nest (Python code run during a read may read again) on one snapshot. */
typedef struct {
    unsigned long thread;   /* PyThread_get_thread_ident; meaningful while depth > 0 */
    MDB_txn *txn;           /* reset between reads (MDB_NOTLS), or NULL */
    unsigned int depth;     /* nesting of store_read_begin; 0: free */
} ds_reader;

/* The read transaction of the calling thread, or NULL when it has none. */
MDB_txn *store_txn(StoreObject *s);

/* Ends every read and frees the readers (close; a dying store). */
void store_readers_close(StoreObject *s);

struct StoreObject {
    PyObject_HEAD
    ds_env *env;            /* NULL once closed */
    ds_reader *readers;     /* one per thread that reads, reused between reads */
    size_t nreaders;
    unsigned int reading;   /* threads with a read open now */
    unsigned long gen;      /* fork generation env belongs to */
    int readonly;
    size_t map_size;        /* as asked for; reused to reopen after a fork */
    PyObject *path;         /* str, as given */
    PyObject *abspath;      /* bytes, resolved: a child may have chdir'd */
    ds_hits hits;           /* not yet written: see hits.h */
    int flush_failed;       /* the last flush could not write them: close
                               leaves their file to a later process */
    double saved;           /* compute seconds of the hits flushed so far */
};

static inline double
store_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

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
