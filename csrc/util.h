/* Shared macros and includes for every devstash C file. */
#ifndef DEVSTASH_UTIL_H
#define DEVSTASH_UTIL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Size of every key and digest devstash stores: 128 bits. */
#define DS_DIGEST_SIZE 16

/* Module-level exception types, created in module.c. */
extern PyObject *ds_MarkerError;   /* subclass of SyntaxError: bad marker */
extern PyObject *ds_StoreError;    /* LMDB failure: "what: mdb_strerror(rc)" */

#define DS_UNUSED(x) ((void)(x))

#endif /* DEVSTASH_UTIL_H */
