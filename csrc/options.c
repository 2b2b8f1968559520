/* STUB: replaced by the real options parser. */
#include "options.h"
int options_parse(const char *text, Py_ssize_t len, ds_options *out, char *err, size_t errlen)
{ DS_UNUSED(text); DS_UNUSED(len); out->ttl = 0; out->flags = 0; DS_UNUSED(err); DS_UNUSED(errlen); return 0; }
int options_parse_duration(const char *text, Py_ssize_t len, double *s, char *err, size_t errlen)
{ DS_UNUSED(text); DS_UNUSED(len); *s = 0; snprintf(err, errlen, "stub"); return -1; }
PyObject *options_py_parse(PyObject *m, PyObject *s) { DS_UNUSED(m); DS_UNUSED(s); PyErr_SetString(PyExc_NotImplementedError, "stub"); return NULL; }
PyObject *options_py_parse_duration(PyObject *m, PyObject *s) { DS_UNUSED(m); DS_UNUSED(s); PyErr_SetString(PyExc_NotImplementedError, "stub"); return NULL; }
