/* Memory (keys_buffers.c): buffers, NumPy arrays, tensors and the array
 * protocols keyed by their bytes at memory speed. */
#ifndef DEVSTASH_KEYS_BUFFERS_H
#define DEVSTASH_KEYS_BUFFERS_H

/* Included by keys_feed.h, after the types these use: include that. */

/* Each returns 0, -1 with an exception, or 1 when the value is not theirs
 * to key (the caller then takes another path). */
int feed_buffer(ds_hasher *h, PyObject *o);
int is_ndarray(PyTypeObject *t);
int feed_ndarray(ds_hasher *h, PyObject *o);
/* torch tensors, storages and nn.Modules, objects exposing
 * __array_interface__, __cuda_array_interface__ or __dlpack__, and plain
 * buffer exporters: tried last in the dispatch, before pickle's reduce. */
int feed_array_like(ds_hasher *h, PyObject *o);

#endif /* DEVSTASH_KEYS_BUFFERS_H */
