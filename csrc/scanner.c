/* STUB: replaced by the real scanner. */
#include "scanner.h"
int scanner_comments(const char *src, Py_ssize_t len, ds_comment_cb cb, void *ctx)
{ DS_UNUSED(src); DS_UNUSED(len); DS_UNUSED(cb); DS_UNUSED(ctx); return 0; }
int scanner_is_marker(const char *src, const ds_comment *c, Py_ssize_t *s, Py_ssize_t *e)
{ DS_UNUSED(src); DS_UNUSED(c); DS_UNUSED(s); DS_UNUSED(e); return 0; }
int scanner_may_have_marker(const char *src, Py_ssize_t len)
{ return memmem(src, (size_t)len, "@devstash", 9) != NULL; }
PyObject *scanner_py_comments(PyObject *m, PyObject *s) { DS_UNUSED(m); DS_UNUSED(s); PyErr_SetString(PyExc_NotImplementedError, "stub"); return NULL; }
PyObject *scanner_py_markers(PyObject *m, PyObject *s) { DS_UNUSED(m); DS_UNUSED(s); PyErr_SetString(PyExc_NotImplementedError, "stub"); return NULL; }
PyObject *scanner_py_has_marker(PyObject *m, PyObject *s) { DS_UNUSED(m); DS_UNUSED(s); PyErr_SetString(PyExc_NotImplementedError, "stub"); return NULL; }
