/* STUB: replaced by the real hasher. */
#define XXH_INLINE_ALL
#include <xxhash.h>
#include "keys.h"
struct ds_hasher { XXH3_state_t st; };
ds_hasher *keys_new(void) { ds_hasher *h = PyMem_Malloc(sizeof *h); if (!h) PyErr_NoMemory(); return h; }
void keys_free(ds_hasher *h) { PyMem_Free(h); }
void keys_reset(ds_hasher *h) { XXH3_128bits_reset(&h->st); }
void keys_update_bytes(ds_hasher *h, const void *d, size_t n) { XXH3_128bits_update(&h->st, d, n); }
int keys_update_object(ds_hasher *h, PyObject *o) { PyObject *r = PyObject_Repr(o); if (!r) return -1; Py_ssize_t n; const char *s = PyUnicode_AsUTF8AndSize(r, &n); if (!s) { Py_DECREF(r); return -1; } keys_update_bytes(h, s, (size_t)n); Py_DECREF(r); return 0; }
int keys_update_args(ds_hasher *h, PyObject *const *a, Py_ssize_t n, PyObject *kw)
{ for (Py_ssize_t i = 0; i < n; i++) if (keys_update_object(h, a[i]) < 0) return -1;
  if (kw) { Py_ssize_t k = PyTuple_GET_SIZE(kw); for (Py_ssize_t i = 0; i < k; i++) { if (keys_update_object(h, PyTuple_GET_ITEM(kw, i)) < 0 || keys_update_object(h, a[n + i]) < 0) return -1; } }
  return 0; }
int keys_update_callee(ds_hasher *h, PyObject *c, int with_code) { DS_UNUSED(with_code); PyObject *q = PyObject_GetAttrString(c, "__qualname__"); if (!q) return -1; int r = keys_update_object(h, q); Py_DECREF(q); return r; }
void keys_digest(ds_hasher *h, unsigned char out[DS_DIGEST_SIZE]) { XXH128_hash_t d = XXH3_128bits_digest(&h->st); XXH128_canonicalFromHash((XXH128_canonical_t *)out, d); }
PyObject *keys_unhashable(ds_hasher *h) { DS_UNUSED(h); return NULL; }
int keys_set_library_prefixes(PyObject *p) { DS_UNUSED(p); return 0; }
PyObject *keys_py_hash_value(PyObject *m, PyObject *o) { DS_UNUSED(m); DS_UNUSED(o); PyErr_SetString(PyExc_NotImplementedError, "stub"); return NULL; }
PyObject *keys_py_hash_call(PyObject *m, PyObject *const *a, Py_ssize_t n, PyObject *kw) { DS_UNUSED(m); DS_UNUSED(a); DS_UNUSED(n); DS_UNUSED(kw); PyErr_SetString(PyExc_NotImplementedError, "stub"); return NULL; }
PyObject *keys_py_set_library_prefixes(PyObject *m, PyObject *p) { DS_UNUSED(m); DS_UNUSED(p); Py_RETURN_NONE; }
int keys_module_init(PyObject *m) { DS_UNUSED(m); return 0; }
