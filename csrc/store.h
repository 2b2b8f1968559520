/* The LMDB store: one environment per cache folder per process, holding
 *   "values": key(16) -> record (checksum, creation time, pickle, out-of-band
 *             buffers)
 *   "meta":   key(16) -> metadata (callee, call site, ttl, size, hits, ...)
 *   "code":   key(16) -> checksum, marshalled rewritten code (the rewriter's cache)
 * The hit path (store_read_begin / store_lookup / store_read_end) runs with
 * no Python objects created; writes are short transactions. */
#ifndef DEVSTASH_STORE_H
#define DEVSTASH_STORE_H

#include "util.h"

typedef struct StoreObject StoreObject;
extern PyTypeObject Store_Type;

/* StoreError's subclass for a damaged data.mdb or value record. */
extern PyObject *ds_DamagedError;
/* StoreError's subclass for a write that waited its bound for another
 * process (env_write_lock) or for this process's reads to end. */
extern PyObject *ds_BusyError;

/* Adds Store's exceptions (UnsafeFolderError, DamagedError, BusyError) and functions
 * (check_folder) to the module, after StoreError exists. 0 or -1. */
int store_module_init(PyObject *module);

/* A value record as read from the map: valid until store_read_end. */
typedef struct {
    double created;            /* unix time the value was stored */
    const char *pickle;        /* protocol-5 pickle bytes */
    size_t pickle_len;
    uint32_t nbuffers;         /* out-of-band buffers that follow */
    /* private: read the buffers with store_record_copy_buffers */
    const unsigned char *buffer_table;
    const char *buffer_data;
    int verified;              /* the checksum was verified by the lookup */
    uint64_t checksum;         /* else: what the buffers must complete */
    const unsigned char *head; /* the checksummed bytes before buffer_data */
    size_t head_len;
} ds_record;

/* Copies the out-of-band buffers of rec into owned, writable objects (see
 * buffer.h): a new list, or NULL with an exception. The checksum of a record
 * with large buffers is verified here, while the buffers are copied (one
 * pass over the memory instead of two): DamagedError when it does not
 * match, before anything is unpickled. */
PyObject *store_record_copy_buffers(const ds_record *rec);

/* Gets buffer i of rec (i < rec->nbuffers), pointing into the map. Only
 * for a verified record: on one whose checksum is left to
 * store_record_copy_buffers, *data is NULL and *len 0. */
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
 * that needs to grow the map waits for the read to end (BusyError after the
 * lock timeout when it is this thread's own), so end the read before writing. */
int store_read_begin(StoreObject *s);
void store_read_end(StoreObject *s);

/* 1 found (rec filled, its checksum verified), 0 absent (or written by an
 * older devstash), -1 error (exception), DS_LOOKUP_DAMAGED: a record whose
 * checksum or lengths do not match, with a DamagedError set that says so:
 * report it, treat it as a miss, and the value written next replaces it. */
#define DS_LOOKUP_DAMAGED (-2)
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
