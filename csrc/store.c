/* STUB: replaced by the real LMDB store. */
#include "store.h"
struct StoreObject { PyObject_HEAD };
PyTypeObject Store_Type = { PyVarObject_HEAD_INIT(NULL, 0) .tp_name = "devstash._core.Store", .tp_basicsize = sizeof(StoreObject), .tp_flags = Py_TPFLAGS_DEFAULT, .tp_new = PyType_GenericNew };
void store_record_buffer(const ds_record *r, uint32_t i, const char **d, size_t *n) { DS_UNUSED(r); DS_UNUSED(i); *d = NULL; *n = 0; }
int store_read_begin(StoreObject *s) { DS_UNUSED(s); return 0; }
void store_read_end(StoreObject *s) { DS_UNUSED(s); }
int store_lookup(StoreObject *s, const unsigned char *k, ds_record *r) { DS_UNUSED(s); DS_UNUSED(k); DS_UNUSED(r); return 0; }
int store_write(StoreObject *s, const unsigned char *k, const ds_entry *e) { DS_UNUSED(s); DS_UNUSED(k); DS_UNUSED(e); return 0; }
int store_note_hit(StoreObject *s, const unsigned char *k, double w) { DS_UNUSED(s); DS_UNUSED(k); DS_UNUSED(w); return 0; }
int store_flush(StoreObject *s) { DS_UNUSED(s); return 0; }
