/* Memory: values keyed by their bytes at memory speed, streamed into the
 * hash without a copy when they are contiguous. memoryview, array.array,
 * PickleBuffer and NumPy arrays of plain data. */
#include "keys_feed.h"

#include <string.h>

static PyTypeObject *ndarray_type = NULL;   /* numpy.ndarray once seen */

static void
feed_shape(Sink *s, int ndim, const Py_ssize_t *shape, Py_ssize_t len, Py_ssize_t itemsize)
{
    Sink_len(s, (uint64_t)ndim);
    for (int i = 0; i < ndim; i++) {
        if (shape != NULL)
            Sink_u64(s, (uint64_t)shape[i]);
        else
            Sink_u64(s, (uint64_t)(itemsize ? len / itemsize : len));
    }
}

/* memoryview, array.array, pickle.PickleBuffer and other exporters that
 * cannot be pickled: type, format, item size, shape and the bytes in C
 * order. Returns 0, -1 on error, 1 when the buffer cannot key the value
 * (no buffer, or one holding pointers). */
int
feed_buffer(ds_hasher *h, PyObject *o)
{
    Py_buffer view;
    char *tmp = NULL;
    int ret = -1;

    if (PyObject_GetBuffer(o, &view, PyBUF_FULL_RO) < 0) {
        if (error_is_fatal())
            return -1;
        PyErr_Clear();
        return 1;
    }
    const char *fmt = view.format != NULL ? view.format : "B";
    if (strpbrk(fmt, "OP&") != NULL) {
        /* Object or pointer items: their bytes are addresses. */
        PyBuffer_Release(&view);
        return 1;
    }
    const void *data = view.buf;
    if (!PyBuffer_IsContiguous(&view, 'C')) {
        tmp = PyMem_Malloc(view.len > 0 ? (size_t)view.len : 1);
        if (tmp == NULL) {
            PyErr_NoMemory();
            goto error;
        }
        if (PyBuffer_ToContiguous(tmp, &view, view.len, 'C') < 0)
            goto error;
        data = tmp;
    }
    Sink_u8(h->sink, KT_BUFFER);
    if (feed_type(h, Py_TYPE(o)) < 0)
        goto error;
    feed_raw_bytes(h->sink, KT_STR, fmt, strlen(fmt));
    Sink_u64(h->sink, (uint64_t)view.itemsize);
    feed_shape(h->sink, view.ndim, view.shape, view.len, view.itemsize);
    feed_raw_bytes(h->sink, KT_BYTES, data, (size_t)view.len);
    ret = 0;
error:
    PyMem_Free(tmp);
    PyBuffer_Release(&view);
    return ret;
}

int
is_ndarray(PyTypeObject *t)
{
    if (t == ndarray_type)
        return 1;
    if (ndarray_type == NULL && strcmp(t->tp_name, "numpy.ndarray") == 0) {
        ndarray_type = (PyTypeObject *)Py_NewRef((PyObject *)t);
        return 1;
    }
    return 0;
}

/* A numpy.ndarray of plain data: dtype (str, and descr when structured),
 * shape and the data bytes in C order, streamed straight from the array's
 * buffer without a copy. A non-contiguous array is copied once, by
 * arr.copy(order="C"), so a strided view keys like its contiguous copy; a
 * dtype the buffer protocol refuses (datetime64) is read by arr.tobytes().
 * Returns 1 when the dtype holds objects: the caller then uses the generic
 * path. */
int
feed_ndarray(ds_hasher *h, PyObject *o)
{
    PyObject *dtype = NULL, *kind = NULL, *hasobj = NULL, *fnames = NULL,
        *dstr = NULL, *descr = NULL, *copy = NULL, *bytes = NULL;
    Py_buffer view;
    int have_view = 0, ret = -1;

    if ((dtype = PyObject_GetAttr(o, s_dtype)) == NULL
        || (kind = PyObject_GetAttr(dtype, s_kind)) == NULL
        || (hasobj = PyObject_GetAttr(dtype, s_hasobject)) == NULL)
        goto error;
    int objects = PyObject_IsTrue(hasobj);
    if (objects < 0)
        goto error;
    /* Only kinds whose bytes are their value (not "O", nor numpy 2's
     * variable-width strings, which hold pointers). */
    Py_UCS4 k = 0;
    if (PyUnicode_Check(kind) && PyUnicode_GET_LENGTH(kind) == 1)
        k = PyUnicode_READ_CHAR(kind, 0);
    if (objects || k == 0 || k > 127 || strchr("biufcSUVMm", (int)k) == NULL) {
        ret = 1;
        goto error;
    }
    if ((fnames = PyObject_GetAttr(dtype, s_names)) == NULL
        || (dstr = PyObject_GetAttr(dtype, s_str)) == NULL)
        goto error;
    if (fnames != Py_None && (descr = PyObject_GetAttr(dtype, s_descr)) == NULL)
        goto error;

    PyObject *src = o;
    if (PyObject_GetBuffer(o, &view, PyBUF_C_CONTIGUOUS) == 0) {
        have_view = 1;
    }
    else {
        if (error_is_fatal())
            goto error;
        PyErr_Clear();
        copy = PyObject_VectorcallMethod(s_copy, (PyObject *[]){o, s_C},
                                         2, NULL);
        if (copy == NULL)
            goto error;
        src = copy;
        if (PyObject_GetBuffer(copy, &view, PyBUF_C_CONTIGUOUS) == 0) {
            have_view = 1;
        }
        else {
            if (error_is_fatal())
                goto error;
            PyErr_Clear();
            bytes = PyObject_CallMethodNoArgs(copy, s_tobytes);
            if (bytes == NULL)
                goto error;
            if (!PyBytes_Check(bytes)) {
                PyErr_SetString(PyExc_TypeError, "ndarray.tobytes() did not return bytes");
                goto error;
            }
        }
    }

    Sink_u8(h->sink, KT_NDARRAY);
    if (feed_object(h, dstr) < 0 || feed_object(h, descr ? descr : Py_None) < 0)
        goto error;
    if (have_view) {
        feed_shape(h->sink, view.ndim, view.shape, view.len, view.itemsize);
        feed_raw_bytes(h->sink, KT_BYTES, view.buf, (size_t)view.len);
    }
    else {
        PyObject *shape = PyObject_GetAttr(src, s_shape);
        if (shape == NULL)
            goto error;
        if (!PyTuple_Check(shape)) {
            Py_DECREF(shape);
            PyErr_SetString(PyExc_TypeError, "ndarray.shape is not a tuple");
            goto error;
        }
        Py_ssize_t nd = PyTuple_GET_SIZE(shape);
        Sink_len(h->sink, (uint64_t)nd);
        for (Py_ssize_t i = 0; i < nd; i++) {
            Py_ssize_t d = PyLong_AsSsize_t(PyTuple_GET_ITEM(shape, i));
            if (d == -1 && PyErr_Occurred()) {
                Py_DECREF(shape);
                goto error;
            }
            Sink_u64(h->sink, (uint64_t)d);
        }
        Py_DECREF(shape);
        feed_raw_bytes(h->sink, KT_BYTES, PyBytes_AS_STRING(bytes),
                       (size_t)PyBytes_GET_SIZE(bytes));
    }
    ret = 0;
error:
    if (have_view)
        PyBuffer_Release(&view);
    Py_XDECREF(dtype);
    Py_XDECREF(kind);
    Py_XDECREF(hasobj);
    Py_XDECREF(fnames);
    Py_XDECREF(dstr);
    Py_XDECREF(descr);
    Py_XDECREF(copy);
    Py_XDECREF(bytes);
    return ret;
}
