/* Memory: values keyed by their bytes at memory speed, streamed into the
 * hash without a copy when they are contiguous. memoryview, array.array,
 * PickleBuffer and NumPy arrays of plain data; torch tensors, storages and
 * modules; objects exposing __array_interface__, __cuda_array_interface__,
 * __dlpack__ or the buffer protocol. */
#include "keys_feed.h"

#include <stdint.h>
#include <stdio.h>
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

/* ================================================================ *
 * Beyond NumPy: torch, the array protocols and plain buffer exporters.
 *
 * feed_array_like is the dispatch's last stop before pickle's reduce.
 * Whatever it keys is keyed by its type, its element type, its shape and
 * its elements' bytes in C order: a strided view keys like its contiguous
 * copy, and its bytes are streamed into the hash from where they are
 * (strided memory run by run, through the sink's buffer), never copied
 * into a Python object first. Nothing of an address enters a key.
 *
 * torch is never imported here: its types are looked up in sys.modules
 * once torch has been imported by the user, so a value can only be a
 * tensor when torch is there.
 * ================================================================ */

#define NAMES(X) X(data_ptr) X(stride) X(element_size) X(is_cpu) X(requires_grad) \
    X(is_conj) X(is_neg) X(resolve_conj) X(resolve_neg) X(layout) X(is_quantized) \
    X(device) X(type) X(detach) X(cpu) X(nbytes) X(training) X(_parameters) \
    X(_buffers) X(_modules) X(__dict__) X(__array_interface__) \
    X(__cuda_array_interface__) X(__dlpack__) X(max_version) X(dl_device) \
    X(copy) X(typestr) X(descr) X(data) X(strides) X(offset) X(mask) X(get) \
    X(copy_to_host) X(_untyped_storage) X(torch) X(Tensor) \
    X(strided) X(UntypedStorage) X(TypedStorage) X(nn) X(Module) X(state_dict) \
    X(hook)

#define NAME_DECL(n) static PyObject *N_##n;
NAMES(NAME_DECL)
#undef NAME_DECL

static int names_ready = 0;
static PyObject *dl_version = NULL;     /* (1, 0): the DLPack we read */
static PyObject *dl_cpu = NULL;         /* (kDLCPU, 0) */

static int
names_init(void)
{
    if (names_ready)
        return 0;
#define NAME_INIT(n) if (N_##n == NULL && (N_##n = PyUnicode_InternFromString(#n)) == NULL) return -1;
    NAMES(NAME_INIT)
#undef NAME_INIT
    if (dl_version == NULL && (dl_version = Py_BuildValue("(ii)", 1, 0)) == NULL)
        return -1;
    if (dl_cpu == NULL && (dl_cpu = Py_BuildValue("(ii)", 1, 0)) == NULL)
        return -1;
    names_ready = 1;
    return 0;
}

/* o.name into *out: 1 found, 0 absent (or failing in a way that is not
 * fatal: the value is then not keyed this way), -1 fatal error. Objects
 * without it cost no exception (PyObject_GetOptionalAttr). */
static int
lookup(PyObject *o, PyObject *name, PyObject **out)
{
#if PY_VERSION_HEX >= 0x030D0000
    int r = PyObject_GetOptionalAttr(o, name, out);
#else
    int r = _PyObject_LookupAttr(o, name, out);
#endif
    if (r < 0) {
        *out = NULL;
        if (error_is_fatal())
            return -1;
        PyErr_Clear();
        return 0;
    }
    return r;
}

/* After a failed step of reading a value's metadata, before anything was
 * fed: -1 when the error must reach the user, else 1 (the value is keyed
 * another way). */
static int
not_ours(void)
{
    if (error_is_fatal())
        return -1;
    PyErr_Clear();
    return 1;
}

/* ---------------------------------------------------- strided memory */

#define SMALL_NDIM 16

typedef struct {
    const char *data;           /* the first element */
    Py_ssize_t itemsize;
    int ndim;
    Py_ssize_t *shape, *strides;    /* strides in bytes, any sign, 0 for broadcast */
    Py_ssize_t small[2 * SMALL_NDIM];
} Strided;

static int
strided_init(Strided *v, Py_ssize_t ndim, Py_ssize_t itemsize)
{
    if (ndim < 0 || ndim > INT32_MAX / 2) {
        PyErr_SetString(PyExc_ValueError, "bad number of dimensions");
        return -1;
    }
    v->data = NULL;
    v->itemsize = itemsize;
    v->ndim = (int)ndim;
    if (ndim <= SMALL_NDIM) {
        v->shape = v->small;
    }
    else {
        v->shape = PyMem_Malloc(2 * (size_t)ndim * sizeof *v->shape);
        if (v->shape == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    v->strides = v->shape + ndim;
    return 0;
}

static void
strided_free(Strided *v)
{
    if (v->shape != v->small)
        PyMem_Free(v->shape);
    v->shape = v->small;
}

static void
strided_c_strides(Strided *v)
{
    Py_ssize_t st = v->itemsize;
    for (int d = v->ndim - 1; d >= 0; d--) {
        v->strides[d] = st;
        st *= v->shape[d] > 0 ? v->shape[d] : 1;
    }
}

/* Total bytes of the elements, or -1 with an exception. */
static Py_ssize_t
strided_nbytes(const Strided *v)
{
    for (int d = 0; d < v->ndim; d++) {
        if (v->shape[d] < 0) {
            PyErr_SetString(PyExc_ValueError, "negative dimension");
            return -1;
        }
        if (v->shape[d] == 0)
            return 0;
    }
    if (v->itemsize < 0) {
        PyErr_SetString(PyExc_ValueError, "negative item size");
        return -1;
    }
    Py_ssize_t n = v->itemsize;
    for (int d = 0; d < v->ndim; d++) {
        if (n > PY_SSIZE_T_MAX / v->shape[d]) {
            PyErr_SetString(PyExc_OverflowError, "array too large");
            return -1;
        }
        n *= v->shape[d];
    }
    return n;
}

/* The lowest and one-past-highest byte offsets from v->data the elements
 * span (nbytes > 0). */
static void
strided_extent(const Strided *v, Py_ssize_t *lo, Py_ssize_t *hi)
{
    Py_ssize_t a = 0, b = v->itemsize;
    for (int d = 0; d < v->ndim; d++) {
        Py_ssize_t span = v->strides[d] * (v->shape[d] - 1);
        if (span < 0)
            a += span;
        else
            b += span;
    }
    *lo = a;
    *hi = b;
}

/* n items of `run` bytes, `stride` apart, packed into dst. Fixed sizes
 * for the common item sizes, so each copy is one load and one store. */
static void
gather(unsigned char *dst, const char *src, Py_ssize_t stride, Py_ssize_t n, Py_ssize_t run)
{
#define GATHER(k) for (Py_ssize_t i = 0; i < n; i++) memcpy(dst + (k) * i, src + stride * i, (k))
    switch (run) {
    case 1: GATHER(1); break;
    case 2: GATHER(2); break;
    case 4: GATHER(4); break;
    case 8: GATHER(8); break;
    case 16: GATHER(16); break;
    default: GATHER(run); break;
    }
#undef GATHER
}

#define STAGE_SIZE 16384
#define SHORT_RUN 256

/* The elements' bytes in C order as one KT_BYTES record, the same bytes
 * feed_raw_bytes writes for the contiguous copy. The innermost dimensions
 * that are contiguous make one run. Long runs go straight to XXH3; short
 * ones (a transposed or sliced view) are gathered along the innermost
 * remaining dimension into a stage, hashed a stage at a time. An odometer
 * walks the other dimensions. */
static int
feed_strided(Sink *s, const Strided *v, Py_ssize_t nbytes)
{
    Sink_u8(s, KT_BYTES);
    Sink_len(s, (uint64_t)nbytes);
    if (nbytes == 0)
        return 0;
    int outer = v->ndim;
    Py_ssize_t run = v->itemsize;
    while (outer > 0 && (v->shape[outer - 1] == 1 || v->strides[outer - 1] == run)) {
        run *= v->shape[outer - 1];
        outer--;
    }
    if (outer == 0) {
        Sink_write(s, v->data, (size_t)nbytes);
        return 0;
    }
    int inner = outer - 1;
    Py_ssize_t n_inner = v->shape[inner], st_inner = v->strides[inner];
    Py_ssize_t small[SMALL_NDIM];
    Py_ssize_t *idx = small;
    if (inner > SMALL_NDIM) {
        idx = PyMem_Calloc((size_t)inner, sizeof *idx);
        if (idx == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    else {
        memset(small, 0, sizeof small);
    }
    unsigned char stage[STAGE_SIZE];
    size_t fill = 0;
    const char *p = v->data;
    for (;;) {
        if (run >= SHORT_RUN) {
            for (Py_ssize_t i = 0; i < n_inner; i++)
                Sink_write(s, p + st_inner * i, (size_t)run);
        }
        else {
            for (Py_ssize_t i = 0; i < n_inner;) {
                Py_ssize_t m = (Py_ssize_t)(STAGE_SIZE - fill) / run;
                if (m == 0) {
                    Sink_write(s, stage, fill);
                    fill = 0;
                    continue;
                }
                if (m > n_inner - i)
                    m = n_inner - i;
                gather(stage + fill, p + st_inner * i, st_inner, m, run);
                fill += (size_t)(m * run);
                i += m;
            }
        }
        int k = inner - 1;
        for (; k >= 0; k--) {
            p += v->strides[k];
            if (++idx[k] < v->shape[k])
                break;
            p -= v->strides[k] * v->shape[k];
            idx[k] = 0;
        }
        if (k < 0)
            break;
    }
    Sink_write(s, stage, fill);
    if (idx != small)
        PyMem_Free(idx);
    return 0;
}

/* Fills v->shape (or v->strides, times `mul`) from a tuple of ints. */
static int
ints_from_tuple(PyObject *t, Py_ssize_t *out, Py_ssize_t n, Py_ssize_t mul)
{
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != n) {
        PyErr_SetString(PyExc_TypeError, "expected a tuple of ints");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t x = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, i));
        if (x == -1 && PyErr_Occurred())
            return -1;
        if (mul != 1) {
            if (x > PY_SSIZE_T_MAX / mul || x < -(PY_SSIZE_T_MAX / mul)) {
                PyErr_SetString(PyExc_OverflowError, "stride too large");
                return -1;
            }
            x *= mul;
        }
        out[i] = x;
    }
    return 0;
}

static int
attr_true(PyObject *o, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL)
        return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

static int
call_true(PyObject *o, PyObject *name)
{
    PyObject *v = PyObject_CallMethodNoArgs(o, name);
    if (v == NULL)
        return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* ----------------------------------------------------------- torch */

static int torch_ready = 0;
static PyTypeObject *torch_tensor, *torch_nn_module, *torch_untyped_storage,
    *torch_typed_storage;
static PyObject *torch_strided;

static PyTypeObject *
type_attr(PyObject *o, PyObject *name)
{
    PyObject *t = PyObject_GetAttr(o, name);
    if (t != NULL && !PyType_Check(t)) {
        Py_DECREF(t);
        PyErr_SetString(PyExc_TypeError, "not a type");
        return NULL;
    }
    return (PyTypeObject *)t;
}

/* 1 once torch's types are known, 0 while torch is not (fully) imported,
 * -1 on a fatal error. A module called torch that is not PyTorch stays 0
 * at the cost of a few failed lookups. */
static int
torch_resolve(void)
{
    if (torch_ready)
        return 1;
    PyObject *modules = PyImport_GetModuleDict();
    PyObject *torch = PyDict_GetItemWithError(modules, N_torch);
    if (torch == NULL) {
        if (PyErr_Occurred() && not_ours() < 0)
            return -1;
        return 0;
    }
    Py_INCREF(torch);
    PyObject *nn = NULL;
    PyTypeObject *tensor = NULL, *module = NULL, *ustorage = NULL, *tstorage = NULL;
    PyObject *strided = NULL;
    int ret = 0;
    if ((tensor = type_attr(torch, N_Tensor)) == NULL
        || (ustorage = type_attr(torch, N_UntypedStorage)) == NULL
        || (tstorage = type_attr(torch, N_TypedStorage)) == NULL
        || (strided = PyObject_GetAttr(torch, N_strided)) == NULL
        || (nn = PyObject_GetAttr(torch, N_nn)) == NULL
        || (module = type_attr(nn, N_Module)) == NULL) {
        ret = not_ours() < 0 ? -1 : 0;
        Py_XDECREF(tensor);
        Py_XDECREF(ustorage);
        Py_XDECREF(tstorage);
        Py_XDECREF(strided);
        Py_XDECREF(module);
    }
    else {
        torch_tensor = tensor;
        torch_nn_module = module;
        torch_untyped_storage = ustorage;
        torch_typed_storage = tstorage;
        torch_strided = strided;
        torch_ready = 1;
        ret = 1;
    }
    Py_XDECREF(nn);
    Py_DECREF(torch);
    return ret;
}

/* A strided torch.Tensor (and Parameter, and subclasses): its type, dtype
 * (torch's name: "torch.bfloat16" needs no NumPy equivalent), device type
 * ("cpu", "cuda": the device of a result follows its inputs'), whether it
 * requires grad, its shape and its elements.
 *
 * Read through Tensor's own public methods (data_ptr, stride,
 * element_size: about 0.6 us in all), not through .numpy() (needs NumPy,
 * refuses tensors that require grad and has no bfloat16) nor DLPack (also
 * refuses them, and costs more): the bytes are read where they are, with
 * the tensor's strides. A tensor on another device is copied to the host
 * first (.detach().cpu()); lazy conjugate and negative bits are resolved,
 * so the bytes are the values. Returns 1 for what this does not cover
 * (sparse and other layouts, quantized tensors, tensors without storage):
 * pickle's description of those is made of dense tensors and storages,
 * which come back here. */
static int
feed_tensor(ds_hasher *h, PyObject *o)
{
    PyObject *layout = NULL, *dtype = NULL, *dname = NULL, *device = NULL,
        *devtype = NULL, *src = NULL, *tmp = NULL, *shape = NULL,
        *stride = NULL, *ptr = NULL, *esize = NULL;
    Strided v;
    int have_v = 0, ret = 1;

    if ((layout = PyObject_GetAttr(o, N_layout)) == NULL)
        goto fail;
    if (layout != torch_strided)
        goto done;
    int q = attr_true(o, N_is_quantized);
    if (q != 0) {
        if (q < 0)
            goto fail;
        goto done;
    }
    int grad = attr_true(o, N_requires_grad);
    int cpu = attr_true(o, N_is_cpu);
    if (grad < 0 || cpu < 0)
        goto fail;
    if ((dtype = PyObject_GetAttr(o, s_dtype)) == NULL
        || (dname = PyObject_Str(dtype)) == NULL)
        goto fail;
    if (cpu) {
        devtype = Py_NewRef(N_cpu);
        src = Py_NewRef(o);
    }
    else {
        if ((device = PyObject_GetAttr(o, N_device)) == NULL
            || (devtype = PyObject_GetAttr(device, N_type)) == NULL
            || (tmp = PyObject_CallMethodNoArgs(o, N_detach)) == NULL
            || (src = PyObject_CallMethodNoArgs(tmp, N_cpu)) == NULL)
            goto fail;
    }
    int conj = call_true(src, N_is_conj);
    int neg = conj == 0 ? call_true(src, N_is_neg) : 0;
    if (conj < 0 || neg < 0)
        goto fail;
    if (conj || neg) {
        Py_XSETREF(tmp, PyObject_CallMethodNoArgs(src, N_resolve_conj));
        if (tmp == NULL)
            goto fail;
        Py_SETREF(src, PyObject_CallMethodNoArgs(tmp, N_resolve_neg));
        if (src == NULL)
            goto fail;
    }
    if ((shape = PyObject_GetAttr(src, s_shape)) == NULL
        || (stride = PyObject_CallMethodNoArgs(src, N_stride)) == NULL
        || (ptr = PyObject_CallMethodNoArgs(src, N_data_ptr)) == NULL
        || (esize = PyObject_CallMethodNoArgs(src, N_element_size)) == NULL)
        goto fail;
    if (!PyTuple_Check(shape)) {
        PyErr_SetString(PyExc_TypeError, "Tensor.shape is not a tuple");
        goto fail;
    }
    Py_ssize_t itemsize = PyLong_AsSsize_t(esize);
    if (itemsize == -1 && PyErr_Occurred())
        goto fail;
    Py_ssize_t nd = PyTuple_GET_SIZE(shape);
    if (strided_init(&v, nd, itemsize) < 0)
        goto fail;
    have_v = 1;
    if (ints_from_tuple(shape, v.shape, nd, 1) < 0
        || ints_from_tuple(stride, v.strides, nd, itemsize) < 0)
        goto fail;
    v.data = PyLong_AsVoidPtr(ptr);
    if (v.data == NULL && PyErr_Occurred())
        goto fail;
    Py_ssize_t nbytes = strided_nbytes(&v);
    if (nbytes < 0)
        goto fail;
    if (nbytes > 0 && v.data == NULL)
        goto done;              /* no memory to read (a fake tensor) */

    ret = -1;
    Sink_u8(h->sink, KT_TENSOR);
    if (feed_type(h, Py_TYPE(o)) < 0 || feed_object(h, dname) < 0
        || feed_object(h, devtype) < 0)
        goto done;
    Sink_u8(h->sink, grad ? KT_TRUE : KT_FALSE);
    feed_shape(h->sink, v.ndim, v.shape, 0, 0);
    ret = feed_strided(h->sink, &v, nbytes);
    goto done;
fail:
    ret = not_ours();
done:
    if (have_v)
        strided_free(&v);
    Py_XDECREF(layout);
    Py_XDECREF(dtype);
    Py_XDECREF(dname);
    Py_XDECREF(device);
    Py_XDECREF(devtype);
    Py_XDECREF(src);
    Py_XDECREF(tmp);
    Py_XDECREF(shape);
    Py_XDECREF(stride);
    Py_XDECREF(ptr);
    Py_XDECREF(esize);
    return ret;
}

/* torch.UntypedStorage: its type, device type and bytes (copied to the
 * host when elsewhere); TypedStorage (and the legacy FloatStorage...): its
 * type, dtype and untyped storage. Tensors are keyed without them; these
 * are for storages passed as values and for the pickled descriptions of
 * quantized tensors, whose storages pickle with their address. */
static int
feed_storage(ds_hasher *h, PyObject *o)
{
    PyObject *a = NULL, *b = NULL, *src = NULL, *ptr = NULL, *n = NULL;
    int ret = 1;
    if (PyType_IsSubtype(Py_TYPE(o), torch_typed_storage)) {
        if ((a = PyObject_GetAttr(o, s_dtype)) == NULL
            || (b = PyObject_Str(a)) == NULL
            || (src = PyObject_GetAttr(o, N__untyped_storage)) == NULL)
            goto fail;
        if (!PyType_IsSubtype(Py_TYPE(src), torch_untyped_storage))
            goto done;
        ret = -1;
        if (hasher_enter(h) < 0)
            goto done;
        Sink_u8(h->sink, KT_STORAGE);
        if (feed_type(h, Py_TYPE(o)) == 0 && feed_object(h, b) == 0
            && feed_object(h, src) == 0)
            ret = 0;
        hasher_leave(h);
        goto done;
    }
    if ((a = PyObject_GetAttr(o, N_device)) == NULL
        || (b = PyObject_GetAttr(a, N_type)) == NULL)
        goto fail;
    int cpu = PyUnicode_Check(b) && PyUnicode_CompareWithASCIIString(b, "cpu") == 0;
    src = cpu ? Py_NewRef(o) : PyObject_CallMethodNoArgs(o, N_cpu);
    if (src == NULL
        || (ptr = PyObject_CallMethodNoArgs(src, N_data_ptr)) == NULL
        || (n = PyObject_CallMethodNoArgs(src, N_nbytes)) == NULL)
        goto fail;
    const void *p = PyLong_AsVoidPtr(ptr);
    if (p == NULL && PyErr_Occurred())
        goto fail;
    Py_ssize_t len = PyLong_AsSsize_t(n);
    if (len < 0) {
        if (PyErr_Occurred())
            goto fail;
        goto done;
    }
    if (len > 0 && p == NULL)
        goto done;
    ret = -1;
    Sink_u8(h->sink, KT_STORAGE);
    if (feed_type(h, Py_TYPE(o)) < 0 || feed_object(h, b) < 0)
        goto done;
    feed_raw_bytes(h->sink, KT_BYTES, p, (size_t)len);
    ret = 0;
    goto done;
fail:
    ret = not_ours();
done:
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(src);
    Py_XDECREF(ptr);
    Py_XDECREF(n);
    return ret;
}

/* A dict's items in their order (parameters, buffers and submodules are in
 * registration order, which the module's code fixes). */
static int
feed_ordered(ds_hasher *h, PyObject *d)
{
    PyObject *items = PyDict_Items(d);
    if (items == NULL)
        return -1;
    Py_ssize_t n = PyList_GET_SIZE(items);
    Sink_u8(h->sink, KT_ITEMS);
    Sink_len(h->sink, (uint64_t)n);
    int r = 0;
    for (Py_ssize_t i = 0; r == 0 && i < n; i++) {
        PyObject *kv = PyList_GET_ITEM(items, i);
        r = feed_object(h, PyTuple_GET_ITEM(kv, 0));
        if (r == 0)
            r = feed_object(h, PyTuple_GET_ITEM(kv, 1));
    }
    Py_DECREF(items);
    return r;
}

/* Hooks by what they run, in order: a function's code object (keyed by
 * its digest), a bound method's function's, or the hook's type. Their
 * handle ids (a process-wide counter) and their closures (often the module
 * itself, or a list collecting activations) do not count. */
static PyObject *
hooks_summary(PyObject *d)
{
    PyObject *vals = PyDict_Values(d);
    if (vals == NULL)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(vals);
    PyObject *t = PyTuple_New(n);
    for (Py_ssize_t i = 0; t != NULL && i < n; i++) {
        PyObject *v = PyList_GET_ITEM(vals, i);
        if (PyMethod_Check(v))
            v = PyMethod_GET_FUNCTION(v);
        if (PyFunction_Check(v))
            v = ((PyFunctionObject *)v)->func_code;
        else
            v = (PyObject *)Py_TYPE(v);
        PyTuple_SET_ITEM(t, i, Py_NewRef(v));
    }
    Py_DECREF(vals);
    return t;
}

static int
name_has(PyObject *name, PyObject *part)
{
    return PyUnicode_Find(name, part, 0, PY_SSIZE_T_MAX, 1) >= 0;
}

/* A torch.nn.Module: its class (by name, and by code as any class: the
 * user's by all their methods, torch's by what __init__ runs), its
 * training flag, its parameters,
 * buffers (persistent or not: both shape what forward computes) and
 * submodules by name and content, and its other attributes (in_features,
 * p, eps: the hyperparameters) as a dict. Not its __dict__ whole: hooks
 * are keyed by their code only (see hooks_summary), hook handles by their
 * type, state-dict hooks not at all. */
static int
feed_nn_module(ds_hasher *h, PyObject *o)
{
    PyObject *d = NULL, *rest = NULL;
    int ret = 1;
    if ((d = PyObject_GetAttr(o, N___dict__)) == NULL)
        goto fail;
    if (!PyDict_Check(d))
        goto done;
    PyObject *training = PyDict_GetItemWithError(d, N_training);
    PyObject *params = training ? PyDict_GetItemWithError(d, N__parameters) : NULL;
    PyObject *buffers = params ? PyDict_GetItemWithError(d, N__buffers) : NULL;
    PyObject *mods = buffers ? PyDict_GetItemWithError(d, N__modules) : NULL;
    if (mods == NULL) {
        if (PyErr_Occurred())
            goto fail;
        goto done;              /* Module.__init__ has not run */
    }
    if (!PyDict_Check(params) || !PyDict_Check(buffers) || !PyDict_Check(mods))
        goto done;
    Py_INCREF(training);
    Py_INCREF(params);
    Py_INCREF(buffers);
    Py_INCREF(mods);

    ret = -1;
    /* A module met again inside itself (a bound method of it kept as an
     * attribute, a reference to its parent) is a back-reference, as any
     * object's cycle is. */
    if (feed_backref(h, o)) {
        ret = 0;
        goto release;
    }
    if (hasher_enter(h) < 0)
        goto release;
    if (open_object(h, o) < 0) {
        hasher_leave(h);
        goto release;
    }
    rest = PyDict_New();
    if (rest == NULL)
        goto leave;
    PyObject *k, *val;
    Py_ssize_t pos = 0;
    while (PyDict_Next(d, &pos, &k, &val)) {
        if (k == N_training || k == N__parameters || k == N__buffers || k == N__modules)
            continue;
        PyObject *put = Py_NewRef(val);
        if (PyUnicode_Check(k) && PyUnicode_GET_LENGTH(k) > 0
            && PyUnicode_READ_CHAR(k, 0) == '_' && name_has(k, N_hook)) {
            if (name_has(k, N_state_dict)) {
                Py_DECREF(put);
                continue;
            }
            if (PyDict_Check(val)) {
                Py_SETREF(put, hooks_summary(val));
                if (put == NULL)
                    goto leave;
            }
            else if (val != Py_None && !PyBool_Check(val)) {
                /* A RemovableHandle (lazy modules keep theirs): its state
                 * is the hooks dict, whose methods hold the module. */
                Py_SETREF(put, Py_NewRef((PyObject *)Py_TYPE(val)));
            }
        }
        int r = PyDict_SetItem(rest, k, put);
        Py_DECREF(put);
        if (r < 0)
            goto leave;
    }
    Sink_u8(h->sink, KT_NN_MODULE);
    if (feed_type(h, Py_TYPE(o)) < 0 || feed_class_code(h, Py_TYPE(o)) < 0
        || feed_object(h, training) < 0
        || feed_ordered(h, params) < 0 || feed_ordered(h, buffers) < 0
        || feed_ordered(h, mods) < 0 || feed_dict(h, rest, 0) < 0)
        goto leave;
    ret = 0;
leave:
    close_object(h);
    hasher_leave(h);
release:
    Py_DECREF(training);
    Py_DECREF(params);
    Py_DECREF(buffers);
    Py_DECREF(mods);
    goto done;
fail:
    ret = not_ours();
done:
    Py_XDECREF(d);
    Py_XDECREF(rest);
    return ret;
}

/* --------------------------------------------------- array protocols */

/* The item size a typestr ("<f8", "|u1", "<U3", "|V16", "<M8[ns]")
 * gives, 0 when it is not one (or holds objects: "|O"). */
static Py_ssize_t
typestr_itemsize(PyObject *typestr)
{
    if (!PyUnicode_Check(typestr))
        return 0;
    const char *s = PyUnicode_AsUTF8(typestr);
    if (s == NULL) {
        PyErr_Clear();
        return 0;
    }
    if (strlen(s) < 3 || strchr("<>|=", s[0]) == NULL || strchr("btiufcmMSUV", s[1]) == NULL)
        return 0;
    Py_ssize_t n = 0;
    const char *p = s + 2;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > PY_SSIZE_T_MAX / 40)
            return 0;
        n = n * 10 + (*p - '0');
    }
    if (*p != '\0' && *p != '[')
        return 0;
    return s[1] == 'U' ? n * 4 : n;
}

/* 1 when a descr (a list of (name, typestr or descr[, shape])) has a field
 * that is not plain data, 0 when all are, -1 on error. */
static int
descr_has_objects(PyObject *descr, int depth)
{
    if (descr == NULL || descr == Py_None)
        return 0;
    if (!PyList_Check(descr) || depth > 32)
        return 1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(descr); i++) {
        PyObject *f = PyList_GET_ITEM(descr, i);
        if (!PyTuple_Check(f) || PyTuple_GET_SIZE(f) < 2)
            return 1;
        PyObject *ft = PyTuple_GET_ITEM(f, 1);
        if (PyList_Check(ft)) {
            int r = descr_has_objects(ft, depth + 1);
            if (r != 0)
                return r;
        }
        else if (typestr_itemsize(ft) == 0) {
            return 1;
        }
    }
    return 0;
}

/* What __array_interface__ and __cuda_array_interface__ share: the element
 * type, a plain-data check and the shape. Returns 0, 1 when the value
 * cannot be keyed by it, -1 on a fatal error. */
typedef struct {
    PyObject *typestr, *descr, *shape, *strides, *data;     /* borrowed from the dict */
    Py_ssize_t itemsize;
} Interface;

static int
interface_read(PyObject *iface, Interface *f)
{
    memset(f, 0, sizeof *f);
    if (!PyDict_Check(iface))
        return 1;
    PyObject *mask;
    if ((f->typestr = PyDict_GetItemWithError(iface, N_typestr)) == NULL
        || (f->shape = PyDict_GetItemWithError(iface, s_shape)) == NULL)
        return PyErr_Occurred() ? not_ours() : 1;
    /* Optional entries (absent: NULL). */
    if (((f->descr = PyDict_GetItemWithError(iface, N_descr)) == NULL && PyErr_Occurred())
        || ((f->strides = PyDict_GetItemWithError(iface, N_strides)) == NULL && PyErr_Occurred())
        || ((f->data = PyDict_GetItemWithError(iface, N_data)) == NULL && PyErr_Occurred())
        || ((mask = PyDict_GetItemWithError(iface, N_mask)) == NULL && PyErr_Occurred()))
        return not_ours();
    if (mask != NULL && mask != Py_None)
        return 1;               /* masked: pickle's description has the mask */
    if (!PyTuple_Check(f->shape))
        return 1;
    f->itemsize = typestr_itemsize(f->typestr);
    if (f->itemsize == 0)
        return 1;
    int obj = descr_has_objects(f->descr, 0);
    if (obj != 0)
        return obj < 0 ? -1 : 1;
    return 0;
}

/* The KT_ARRAY record: type, element type, shape, elements. */
static int
feed_array_record(ds_hasher *h, PyObject *o, PyObject *dtype, PyObject *descr,
                  const Strided *v, Py_ssize_t nbytes)
{
    Sink_u8(h->sink, KT_ARRAY);
    if (feed_type(h, Py_TYPE(o)) < 0 || feed_object(h, dtype) < 0
        || feed_object(h, descr != NULL ? descr : Py_None) < 0)
        return -1;
    feed_shape(h->sink, v->ndim, v->shape, 0, 0);
    return feed_strided(h->sink, v, nbytes);
}

/* __array_interface__ (version 3): data is (address, read-only), or an
 * object exposing the buffer the elements are in (at "offset"), or absent
 * (the object's own buffer). Data given as bytes is a copy made for the
 * occasion (PIL images): the interface is then a conversion, not the
 * object's memory, and the object keeps its pickled-state key (which, for
 * an image, has its mode and palette). */
static int
feed_array_interface(ds_hasher *h, PyObject *o, PyObject *iface)
{
    Interface f;
    Strided v;
    Py_buffer view;
    int have_view = 0, have_v = 0, ret = interface_read(iface, &f);
    if (ret != 0)
        return ret;
    ret = 1;
    const char *base = NULL;
    PyObject *exporter = NULL;
    if (f.data == NULL || f.data == Py_None)
        exporter = o;
    else if (PyBytes_Check(f.data))
        goto done;
    else if (PyTuple_Check(f.data) && PyTuple_GET_SIZE(f.data) == 2) {
        base = PyLong_AsVoidPtr(PyTuple_GET_ITEM(f.data, 0));
        if (base == NULL && PyErr_Occurred())
            goto fail;
    }
    else
        exporter = f.data;
    if (exporter != NULL) {
        if (PyObject_GetBuffer(exporter, &view, PyBUF_SIMPLE) < 0)
            goto fail;
        have_view = 1;
        Py_ssize_t off = 0;
        PyObject *offset = PyDict_GetItemWithError(iface, N_offset);
        if (offset == NULL && PyErr_Occurred())
            goto fail;
        if (offset != NULL && offset != Py_None) {
            off = PyLong_AsSsize_t(offset);
            if (off == -1 && PyErr_Occurred())
                goto fail;
        }
        if (off < 0 || off > view.len)
            goto done;
        base = (const char *)view.buf + off;
    }
    Py_ssize_t nd = PyTuple_GET_SIZE(f.shape);
    if (strided_init(&v, nd, f.itemsize) < 0)
        goto fail;
    have_v = 1;
    if (ints_from_tuple(f.shape, v.shape, nd, 1) < 0)
        goto fail;
    if (f.strides == NULL || f.strides == Py_None)
        strided_c_strides(&v);
    else if (ints_from_tuple(f.strides, v.strides, nd, 1) < 0)
        goto fail;
    v.data = base;
    Py_ssize_t nbytes = strided_nbytes(&v);
    if (nbytes < 0)
        goto fail;
    if (nbytes > 0) {
        if (base == NULL)
            goto done;
        if (have_view) {
            /* The elements must lie in the buffer. */
            Py_ssize_t lo, hi;
            strided_extent(&v, &lo, &hi);
            const char *start = view.buf;
            if (base + lo < start || base + hi > start + view.len)
                goto done;
        }
    }
    ret = feed_array_record(h, o, f.typestr, f.descr, &v, nbytes);
    goto done;
fail:
    ret = not_ours();
done:
    if (have_v)
        strided_free(&v);
    if (have_view)
        PyBuffer_Release(&view);
    return ret;
}

/* __cuda_array_interface__: the elements are in device memory, which this
 * process may only read through the device's own library: the host copy
 * the exporter makes, .get() (CuPy) or .copy_to_host() (Numba), is read
 * through the buffer protocol. Element type and shape come from the
 * interface, so the key does not depend on the host copy's type. */
static int
feed_cuda_interface(ds_hasher *h, PyObject *o, PyObject *iface)
{
    Interface f;
    Strided v;
    Py_buffer view;
    PyObject *host = NULL, *meth = NULL;
    int have_view = 0, have_v = 0, ret = interface_read(iface, &f);
    if (ret != 0)
        return ret;
    ret = 1;
    PyObject *names[2] = {N_get, N_copy_to_host};
    for (int i = 0; i < 2 && host == NULL; i++) {
        int r = lookup(o, names[i], &meth);
        if (r < 0) {
            ret = -1;
            goto done;
        }
        if (r > 0) {
            host = PyObject_CallNoArgs(meth);
            Py_CLEAR(meth);
            if (host == NULL)
                goto fail;
        }
    }
    if (host == NULL)
        goto done;
    if (PyObject_GetBuffer(host, &view, PyBUF_RECORDS_RO) < 0)
        goto fail;
    have_view = 1;
    Py_ssize_t nd = PyTuple_GET_SIZE(f.shape);
    if (view.ndim != nd || view.itemsize != f.itemsize)
        goto done;
    if (strided_init(&v, nd, f.itemsize) < 0)
        goto fail;
    have_v = 1;
    if (ints_from_tuple(f.shape, v.shape, nd, 1) < 0)
        goto fail;
    for (Py_ssize_t i = 0; i < nd; i++) {
        if (view.shape[i] != v.shape[i])
            goto done;
        v.strides[i] = view.strides[i];
    }
    v.data = view.buf;
    Py_ssize_t nbytes = strided_nbytes(&v);
    if (nbytes < 0)
        goto fail;
    ret = feed_array_record(h, o, f.typestr, f.descr, &v, nbytes);
    goto done;
fail:
    ret = not_ours();
done:
    if (have_v)
        strided_free(&v);
    if (have_view)
        PyBuffer_Release(&view);
    Py_XDECREF(host);
    return ret;
}

/* DLPack, declared here from dlpack.h (v1.0; the layouts are a stable
 * ABI): an exporter's __dlpack__() returns a capsule "dltensor"
 * (DLManagedTensor) or, asked with max_version, "dltensor_versioned"
 * (DLManagedTensorVersioned, which can also say read-only: NumPy exports
 * read-only arrays only that way). The capsule is read without being
 * consumed (its name is left as is), so its own destructor calls the
 * exporter's deleter when it is released. */
typedef struct { int32_t device_type, device_id; } DLDevice;
typedef struct { uint8_t code, bits; uint16_t lanes; } DLDataType;
typedef struct {
    void *data;
    DLDevice device;
    int32_t ndim;
    DLDataType dtype;
    int64_t *shape;
    int64_t *strides;           /* in elements; NULL: C order */
    uint64_t byte_offset;
} DLTensor;
typedef struct DLManagedTensor {
    DLTensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensor *);
} DLManagedTensor;
typedef struct { uint32_t major, minor; } DLPackVersion;
typedef struct DLManagedTensorVersioned {
    DLPackVersion version;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensorVersioned *);
    uint64_t flags;
    DLTensor dl_tensor;
} DLManagedTensorVersioned;

enum { kDLCPU = 1, kDLCUDAHost = 3, kDLROCMHost = 11, kDLCUDAManaged = 13 };
enum { kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLOpaqueHandle = 3, kDLComplex = 5, kDLBool = 6 };

/* The DLTensor in a capsule, or NULL (no exception) when it is not one
 * this reads. */
static DLTensor *
dlpack_tensor(PyObject *cap)
{
    if (PyCapsule_IsValid(cap, "dltensor_versioned")) {
        DLManagedTensorVersioned *m = PyCapsule_GetPointer(cap, "dltensor_versioned");
        if (m == NULL || m->version.major != 1)
            return NULL;
        return &m->dl_tensor;
    }
    if (PyCapsule_IsValid(cap, "dltensor")) {
        DLManagedTensor *m = PyCapsule_GetPointer(cap, "dltensor");
        return m != NULL ? &m->dl_tensor : NULL;
    }
    return NULL;
}

static PyObject *
dlpack_call(PyObject *meth, int to_host)
{
    PyObject *kw = PyDict_New();
    if (kw == NULL)
        return NULL;
    PyObject *cap = NULL;
    if (PyDict_SetItem(kw, N_max_version, dl_version) == 0
        && (!to_host || (PyDict_SetItem(kw, N_dl_device, dl_cpu) == 0
                         && PyDict_SetItem(kw, N_copy, Py_True) == 0))) {
        PyObject *empty = PyTuple_New(0);
        if (empty != NULL) {
            cap = PyObject_Call(meth, empty, kw);
            Py_DECREF(empty);
        }
    }
    Py_DECREF(kw);
    if (cap == NULL && !to_host && PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();          /* an exporter older than max_version */
        cap = PyObject_CallNoArgs(meth);
    }
    return cap;
}

static int
dl_readable(const DLTensor *t)
{
    int d = t->device.device_type;
    return d == kDLCPU || d == kDLCUDAHost || d == kDLROCMHost || d == kDLCUDAManaged;
}

/* __dlpack__: the element type as a typestr where it has one ("<f4",
 * "|b1"), else "dlpack:code:bits:lanes" (bfloat16, float8); a tensor on a
 * device is asked for again as a host copy (dl_device, copy: DLPack 1.0). */
static int
feed_dlpack(ds_hasher *h, PyObject *o, PyObject *meth)
{
    PyObject *cap = NULL, *dtype = NULL;
    Strided v;
    int have_v = 0, ret = 1;
    if ((cap = dlpack_call(meth, 0)) == NULL)
        goto fail;
    DLTensor *t = dlpack_tensor(cap);
    if (t != NULL && !dl_readable(t)) {
        Py_SETREF(cap, dlpack_call(meth, 1));
        if (cap == NULL)
            goto fail;
        t = dlpack_tensor(cap);
    }
    if (t == NULL || !dl_readable(t) || t->ndim < 0 || t->dtype.code == kDLOpaqueHandle
        || t->dtype.bits == 0 || t->dtype.bits % 8 != 0 || t->dtype.lanes == 0)
        goto done;
    Py_ssize_t itemsize = (Py_ssize_t)(t->dtype.bits / 8) * t->dtype.lanes;
    char buf[48];
    const char *kinds = "iuf??cb";
    if (t->dtype.lanes == 1 && t->dtype.code <= kDLBool && kinds[t->dtype.code] != '?') {
        char order = itemsize == 1 ? '|' :
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
            '>';
#else
            '<';
#endif
        snprintf(buf, sizeof buf, "%c%c%d", order, kinds[t->dtype.code], (int)itemsize);
    }
    else {
        snprintf(buf, sizeof buf, "dlpack:%u:%u:%u", (unsigned)t->dtype.code,
                 (unsigned)t->dtype.bits, (unsigned)t->dtype.lanes);
    }
    if ((dtype = PyUnicode_FromString(buf)) == NULL)
        goto fail;
    if (strided_init(&v, t->ndim, itemsize) < 0)
        goto fail;
    have_v = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0 || t->shape[i] > PY_SSIZE_T_MAX)
            goto done;
        v.shape[i] = (Py_ssize_t)t->shape[i];
    }
    if (t->strides == NULL) {
        strided_c_strides(&v);
    }
    else {
        for (int i = 0; i < t->ndim; i++) {
            int64_t st = t->strides[i];
            if (st > PY_SSIZE_T_MAX / itemsize || st < -(PY_SSIZE_T_MAX / itemsize))
                goto done;
            v.strides[i] = (Py_ssize_t)st * itemsize;
        }
    }
    v.data = (const char *)t->data + t->byte_offset;
    Py_ssize_t nbytes = strided_nbytes(&v);
    if (nbytes < 0)
        goto fail;
    if (nbytes > 0 && t->data == NULL)
        goto done;
    ret = feed_array_record(h, o, dtype, NULL, &v, nbytes);
    goto done;
fail:
    ret = not_ours();
done:
    if (have_v)
        strided_free(&v);
    Py_XDECREF(dtype);
    Py_XDECREF(cap);            /* the capsule's destructor frees the tensor */
    return ret;
}

/* ------------------------------------------------------- the dispatch */

static int
is_ndarray_subclass(PyTypeObject *t)
{
    PyObject *mro = t->tp_mro;
    if (mro == NULL || !PyTuple_Check(mro))
        return 0;
    for (Py_ssize_t i = 1; i < PyTuple_GET_SIZE(mro); i++) {
        if (is_ndarray((PyTypeObject *)PyTuple_GET_ITEM(mro, i)))
            return 1;
    }
    return 0;
}

/* An exporter whose instances hold nothing but what its buffer shows: a
 * type from C (mmap, a pyarrow Buffer) or a subclass that adds no state
 * (no __dict__, no slots). Others (a bytes subclass with attributes) keep
 * their pickled-state key. */
static int
is_plain_exporter(PyTypeObject *t)
{
    PyBufferProcs *bp = t->tp_as_buffer;
    if (bp == NULL || bp->bf_getbuffer == NULL || t->tp_dictoffset != 0)
        return 0;
#ifdef Py_TPFLAGS_MANAGED_DICT
    if (t->tp_flags & Py_TPFLAGS_MANAGED_DICT)
        return 0;
#endif
    PyTypeObject *b = t;
    while (b->tp_base != NULL && b->tp_base->tp_as_buffer != NULL
           && b->tp_base->tp_as_buffer->bf_getbuffer == bp->bf_getbuffer)
        b = b->tp_base;
    return t->tp_basicsize == b->tp_basicsize;
}

/* Order: torch's types; plain buffer exporters (no Python call at all);
 * then __array_interface__, __cuda_array_interface__, __dlpack__, the
 * first an object has. NumPy subclasses (masked arrays, matrix) keep their
 * pickled state, which has what the interfaces leave out (the mask).
 *
 * A tensor or array keys differently from a NumPy array of the same bytes
 * (the type is fed): the marked call gets a different type back from
 * each. An object exposing an interface is keyed by its type and that
 * array; what else it holds does not count. */
int
feed_array_like(ds_hasher *h, PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    if (names_init() < 0)
        return -1;
    int tr = torch_resolve();
    if (tr < 0)
        return -1;
    if (tr > 0) {
        if (PyType_IsSubtype(t, torch_tensor))
            return feed_tensor(h, o);
        if (PyType_IsSubtype(t, torch_nn_module))
            return feed_nn_module(h, o);
        if (PyType_IsSubtype(t, torch_untyped_storage)
            || PyType_IsSubtype(t, torch_typed_storage))
            return feed_storage(h, o);
    }
    if (is_ndarray_subclass(t))
        return 1;
    if (is_plain_exporter(t)) {
        int r = feed_buffer(h, o);
        if (r <= 0)
            return r;
    }
    PyObject *attr;
    int r = lookup(o, N___array_interface__, &attr);
    if (r > 0) {
        r = feed_array_interface(h, o, attr);
        Py_DECREF(attr);
        if (r <= 0)
            return r;
    }
    else if (r < 0) {
        return -1;
    }
    r = lookup(o, N___cuda_array_interface__, &attr);
    if (r > 0) {
        r = feed_cuda_interface(h, o, attr);
        Py_DECREF(attr);
        if (r <= 0)
            return r;
    }
    else if (r < 0) {
        return -1;
    }
    r = lookup(o, N___dlpack__, &attr);
    if (r > 0) {
        r = PyCallable_Check(attr) ? feed_dlpack(h, o, attr) : 1;
        Py_DECREF(attr);
        return r;
    }
    return r < 0 ? -1 : 1;
}
