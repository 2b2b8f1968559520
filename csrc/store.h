/* The LMDB store: one environment per cache folder per process, holding
 *   "values": key(16) -> record (creation time, pickle, out-of-band buffers)
 *   "meta":   key(16) -> metadata (callee, call site, ttl, size, hits, ...)
 *   "code":   key(16) -> marshalled rewritten code (the rewriter's cache)
 * The hit path (store_read_begin / store_lookup / store_read_end) runs with
 * no Python objects created; writes are short transactions. */
#ifndef DEVSTASH_STORE_H
#define DEVSTASH_STORE_H

#include "util.h"

typedef struct StoreObject StoreObject;
extern PyTypeObject Store_Type;

/* StoreError's subclass for a damaged data.mdb or value record. */
extern PyObject *ds_DamagedError;

/* Adds Store's exceptions (UnsafeFolderError, DamagedError) and functions
 * (check_folder) to the module, after StoreError exists. 0 or -1. */
int store_module_init(PyObject *module);

/* A value record as read from the map: valid until store_read_end. */
typedef struct {
    double created;            /* unix time the value was stored */
    const char *pickle;        /* protocol-5 pickle bytes */
    size_t pickle_len;
    uint32_t nbuffers;         /* out-of-band buffers that follow */
    const unsigned char *buffer_table; /* private: read with store_record_buffer */
    const char *buffer_data;
} ds_record;

/* Gets buffer i of rec (i < rec->nbuffers). */
void store_record_buffer(const ds_record *rec, uint32_t i,
                         const char **data, size_t *len);

/* What a miss writes. The buffers are PickleBuffer objects (or anything with
 * the buffer protocol); they are copied straight into LMDB's reserved space. */
typedef struct {
    double created;
    double ttl;                /* seconds, 0 = none: recorded for listing */
    double compute_seconds;    /* how long the call took: "time saved" */
    const char *pickle;
    size_t pickle_len;
    PyObject *buffers;         /* list or NULL */
    const char *callee;        /* "module.qualname", UTF-8 */
    const char *site;          /* "file:line", UTF-8 */
} ds_entry;

/* Read transaction around lookups. store_read_begin returns 0 or -1 with an
 * exception set. Calls nest (Python code run between them may read again):
 * records stay valid until the outermost store_read_end. No malloc, no
 * Python object. Between them the store cannot be closed, and a store_write
 * that would need to grow the map fails, so end the read before writing. */
int store_read_begin(StoreObject *s);
void store_read_end(StoreObject *s);

/* 1 found (rec filled), 0 absent or unreadable record, -1 error (exception). */
int store_lookup(StoreObject *s, const unsigned char key[DS_DIGEST_SIZE],
                 ds_record *rec);

/* Writes value and metadata in one transaction. 0 or -1 with exception. */
int store_write(StoreObject *s, const unsigned char key[DS_DIGEST_SIZE],
                const ds_entry *e);

/* Counts a hit in memory; written to "meta" by store_flush (at exit) or at
 * close. A no-op on a read-only store. */
int store_note_hit(StoreObject *s, const unsigned char key[DS_DIGEST_SIZE],
                   double when);

/* Writes pending hit counts and syncs to disk. 0 or -1 with exception. */
int store_flush(StoreObject *s);

#endif /* DEVSTASH_STORE_H */
