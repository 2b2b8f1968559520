/* STUB */
#include "rewrite.h"
PyObject *rewrite_py_rewrite(PyObject *m, PyObject *const *a, Py_ssize_t n, PyObject *kw) { DS_UNUSED(m); DS_UNUSED(a); DS_UNUSED(n); DS_UNUSED(kw); PyErr_SetString(PyExc_NotImplementedError, "stub"); return NULL; }
int rewrite_module_init(PyObject *m) { DS_UNUSED(m); return 0; }
