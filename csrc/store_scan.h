/* Store methods that walk the metadata table for the devstash command:
 * pages of entries in key order (list, show PREFIX), totals (stats) and
 * pruning to a size. Each runs in C over the cursor, making Python objects
 * only for the rows it returns, so a cache of a million entries answers in
 * a fraction of a second and in memory that does not grow with it. See
 * store_scan.c. */
#ifndef DEVSTASH_STORE_SCAN_H
#define DEVSTASH_STORE_SCAN_H

#include "store_internal.h"

/* The dict of one meta record, pending hits of this process included. */
PyObject *meta_dict(StoreObject *s, const unsigned char *key, const ds_meta *m);

PyObject *Store_entries(StoreObject *s, PyObject *unused);
PyObject *Store_scan(StoreObject *s, PyObject *args, PyObject *kwargs);
PyObject *Store_totals(StoreObject *s, PyObject *arg);
PyObject *Store_prune(StoreObject *s, PyObject *arg);

#endif /* DEVSTASH_STORE_SCAN_H */
