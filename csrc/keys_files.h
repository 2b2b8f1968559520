/* Files (keys_files.c): paths and open files keyed by the file they name. */
#ifndef DEVSTASH_KEYS_FILES_H
#define DEVSTASH_KEYS_FILES_H

/* Included by keys_feed.h, after the types these use: include that. */

/* After a direct input was fed: the identity of the file or directory it
 * names, when it is a path to one (nothing otherwise). 0 or -1. */
int feed_path_identity(ds_hasher *h, PyObject *o);
/* An open file: as feed_buffer (1: not an open file). */
int feed_open_file(ds_hasher *h, PyObject *o);

#endif /* DEVSTASH_KEYS_FILES_H */
