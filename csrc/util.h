/* Shared macros and includes for every devstash C file. */
#ifndef DEVSTASH_UTIL_H
#define DEVSTASH_UTIL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Size of every key and digest devstash stores: 128 bits. */
#define DS_DIGEST_SIZE 16

/* Module-level exception types, created in module.c. */
extern PyObject *ds_MarkerError;   /* subclass of SyntaxError: bad marker */
extern PyObject *ds_StoreError;    /* LMDB failure: "what: mdb_strerror(rc)" */

#define DS_UNUSED(x) ((void)(x))

/* ---- C API of older Pythons (csrc/README.md) ---------------------------- */

#if PY_VERSION_HEX < 0x030C0000
/* 3.12 moves PyMemberDef's type codes into Python.h as Py_T_* (structmember.h
 * and its T_* names are deprecated; T_OBJECT is not kept at all). */
#include <structmember.h>
#define Py_T_INT T_INT
#define Py_T_DOUBLE T_DOUBLE
#define Py_T_STRING T_STRING
#define Py_T_LONGLONG T_LONGLONG
#define Py_T_OBJECT_EX T_OBJECT_EX
#define Py_T_BOOL T_BOOL
#define Py_T_PYSSIZET T_PYSSIZET
#define Py_READONLY READONLY

/* 3.12 deprecates PyErr_Fetch, PyErr_Restore and PyErr_NormalizeException
 * for these two, which devstash uses everywhere; before 3.12 they are built
 * from the old ones (as pythoncapi-compat does). */
static inline PyObject *
PyErr_GetRaisedException(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL)
        return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL && tb != NULL)
        PyException_SetTraceback(value, tb);
    Py_DECREF(type);
    Py_XDECREF(tb);
    return value;
}

static inline void
PyErr_SetRaisedException(PyObject *exc)
{
    if (exc == NULL) {
        PyErr_Clear();
        return;
    }
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
}
#endif

#endif /* DEVSTASH_UTIL_H */
