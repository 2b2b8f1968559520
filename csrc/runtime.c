/* STUB */
#include "runtime.h"
typedef struct { PyObject_HEAD } RuntimeObject;
PyTypeObject Runtime_Type = { PyVarObject_HEAD_INIT(NULL, 0) .tp_name = "devstash._core.Runtime", .tp_basicsize = sizeof(RuntimeObject), .tp_flags = Py_TPFLAGS_DEFAULT, .tp_new = PyType_GenericNew };
