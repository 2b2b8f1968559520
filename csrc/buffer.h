/* Owned, writable memory for the out-of-band buffers of a loaded value
 * (a NumPy array's data): the one copy out of the map that a hit makes. */
#ifndef DEVSTASH_BUFFER_H
#define DEVSTASH_BUFFER_H

#include "util.h"

extern PyTypeObject Buffer_Type;

/* A new object exporting a writable copy of src[0..len): a bytearray for
 * small sizes, a Buffer over huge-page-backed memory for large ones.
 * NULL with an exception set. */
PyObject *buffer_copy(const char *src, size_t len);

/* The same object, uninitialized: *data gets its memory, to fill before
 * anyone sees it. NULL with an exception set. */
PyObject *buffer_alloc(size_t len, char **data);

#endif /* DEVSTASH_BUFFER_H */
