/* The LMDB environment of a cache folder: one per folder per process,
 * shared by the Store objects on that folder. Opening, map size, disk
 * reservation, the tables, and the one place LMDB failures become Python
 * exceptions. See env.c. */
#ifndef DEVSTASH_ENV_H
#define DEVSTASH_ENV_H

#include "util.h"

#include <lmdb.h>
#include <sys/types.h>

#define WRITE_ATTEMPTS 64

typedef struct ds_env {
    MDB_env *env;
    MDB_dbi values, meta, sites, code;
    int have_tables;        /* 0 only for a read-only env of an empty store */
    int rdonly;
    int refs;               /* StoreObjects using it */
    int reading;            /* of those, how many have a read transaction open */
    int dirty;              /* commits since the last mdb_env_sync */
    int dirfd;              /* the folder, flock'ed around map size changes */
    int fd;                 /* data.mdb, LMDB's descriptor */
    size_t psize;           /* LMDB page size */
    size_t allocated;       /* data.mdb is fallocate'd up to here */
    int no_fallocate;       /* the file system cannot */
    int stale_readers;      /* reader slots of dead processes cleared at open */
    int write_held;         /* a thread of this process holds the writer gate */
    double lock_timeout;    /* longest wait for the writer gate or for this
                               process's reads to end before the map grows */
    dev_t dev;
    ino_t ino;
    char *folder;           /* its path, for messages (PyMem) */
    struct ds_env *next;
} ds_env;

/* Bumped in a forked child: a StoreObject whose generation differs holds the
 * parent's environment, which the child must neither use nor close. */
extern unsigned long ds_fork_gen;

/* Registers the fork handler once; 0 or -1 with an exception. */
int env_register_atfork(void);

/* Raises StoreError("<what>: <mdb_strerror(rc)>"), or "<what> '<path>': ..."
 * when a file is concerned. For system errors (rc > 0) the exception's errno
 * is set too. */
void store_raise(int rc, const char *what, PyObject *path);

/* Finds or opens the environment of a folder; creates the folder unless
 * read-only. Returns a counted reference, or NULL with an exception. */
ds_env *env_acquire(PyObject *path, const char *fspath, size_t map_size, int rdonly);

/* Drops a reference; the last one syncs and closes. Only for environments
 * of this process (same fork generation). */
void env_release(ds_env *e);

/* The writer gate: an flock on data.mdb taken around every write
 * transaction, polled with the GIL released for at most e->lock_timeout
 * seconds. LMDB's own writer mutex cannot be waited on with a bound: behind
 * the gate it is only ever taken by a process that is writing now, so a
 * writer that is stopped (Ctrl-Z, SIGSTOP) holds up other writers for
 * lock_timeout, never forever, and readers not at all. 0, or -1 with
 * BusyError (or StoreError) set. */
int env_write_lock(ds_env *e);
void env_write_unlock(ds_env *e);

/* Adopts a map grown by another process (MDB_MAP_RESIZED). 0 or -1. */
int env_adopt_mapsize(ds_env *e);

/* Grows the map after MDB_MAP_FULL, with room for `need` more bytes. */
int env_grow(ds_env *e, size_t need);

/* Gives real disk blocks to the pages a write may take: 0 or an errno. */
int env_reserve_disk(ds_env *e, size_t need);

#endif /* DEVSTASH_ENV_H */
