/* The hit counts a Store has not written yet.
 *
 * A hit adds one to a count in memory; store_flush writes the counts into
 * the entries' metadata, at exit or when asked. A process that ends without
 * flushing (SIGTERM from uvicorn's reloader or a pool, SIGKILL, a writer
 * holding the cache at exit) would lose them, and a signal handler would
 * change how the user's program ends. So the counts live in a file of the
 * cache folder, "hits-<pid>-<n>", mapped shared: the kernel keeps what a
 * killed process wrote there. The owner holds an flock on the file for its
 * life; a file whose flock another process can take has no owner left, and
 * the next flush on the folder adds its counts (hits_orphans_*) and deletes
 * it. When no file can be made, the counts stay in memory only.
 *
 * File layout (host byte order: it never leaves the machine): a 64-byte
 * header (magic, record size, records in use), then the records. A record
 * is filled before the count of records in use covers it. */
#ifndef DEVSTASH_HITS_H
#define DEVSTASH_HITS_H

#include "util.h"

#include <stdint.h>
#include <stddef.h>

typedef struct {
    unsigned char key[DS_DIGEST_SIZE];
    uint64_t count;
    double last;                /* unix time of the latest hit */
} ds_hitrec;

typedef struct {
    ds_hitrec *recs;            /* in the file's map, or PyMem */
    size_t n, cap;              /* records in use, room */
    uint32_t *slots;            /* key -> record number + 1; 0 is empty */
    size_t nslots;              /* power of two, > 2 n; or 0 */
    unsigned char *map;         /* header + records, or NULL (in memory) */
    size_t map_len;
    int fd;                     /* the file, flock'ed; -1 when in memory */
    char name[64];
} ds_hits;

/* A ds_hits with nothing in it and no file. */
void hits_init(ds_hits *h);

/* Adds a hit of key at `when`. The first hit creates the file in the
 * folder dirfd (falling back to memory). 0, or -1 with MemoryError. */
int hits_note(ds_hits *h, int dirfd, const unsigned char key[DS_DIGEST_SIZE], double when);

/* The pending record of key, or NULL. */
ds_hitrec *hits_find(const ds_hits *h, const unsigned char key[DS_DIGEST_SIZE]);

/* Forgets pending hits of a key whose entry is replaced or deleted. */
void hits_forget(ds_hits *h, const unsigned char key[DS_DIGEST_SIZE]);

/* The counts are written: empty the table, keep the file for later hits. */
void hits_reset(ds_hits *h);

/* Ends the table: with keep 0 the file is deleted (its counts written or
 * given up); with keep 1 it stays for a later flush on the folder to add. */
void hits_close(ds_hits *h, int dirfd, int keep);

/* In a forked child: the table and file are the parent's. Drops them
 * without touching the file, the parent's lock or the parent's map. */
void hits_abandon(ds_hits *h);

/* The files of processes that ended without flushing. */
typedef struct {
    int fd;
    char name[64];
    const ds_hitrec *recs;
    size_t n;
    void *map;
    size_t map_len;
} ds_orphan;

typedef struct {
    ds_orphan *files;
    size_t n;
} ds_orphans;

/* Finds and locks the orphaned hit files of the folder dirfd (never this
 * table's own), checked as every file in the folder is (folder.h): files
 * that fail are left alone. Never fails: what cannot be read is skipped. */
void hits_orphans_open(int dirfd, const ds_hits *own, ds_orphans *out);

/* After their counts were committed (done 1) deletes them; then, or after
 * a failed write (done 0), unlocks and unmaps them. */
void hits_orphans_close(int dirfd, ds_orphans *o, int done);

#endif /* DEVSTASH_HITS_H */
