/* Owned memory for large loaded buffers (see buffer.h).
 *
 * Why not a bytearray: a 100 MB bytearray is fresh anonymous memory that
 * faults in 4 KiB at a time while the copy runs, which costs several times
 * the copy itself. Asking for transparent huge pages cuts the faults 512-fold,
 * so the load of a large array costs about one memcpy. */
#include "buffer.h"

#include <sys/mman.h>

/* Below this a bytearray is as fast and simpler. */
#define BUFFER_MMAP_MIN (1u << 21)

typedef struct {
    PyObject_HEAD
    char *data;
    Py_ssize_t len;
} BufferObject;

/* Every view holds a reference to the object, so the memory outlives it. */
static int
Buffer_getbuffer(BufferObject *self, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, (PyObject *)self, self->data, self->len, 0, flags);
}

static void
Buffer_dealloc(BufferObject *self)
{
    if (self->data != NULL)
        munmap(self->data, (size_t)self->len);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyBufferProcs Buffer_as_buffer = {
    .bf_getbuffer = (getbufferproc)Buffer_getbuffer,
};

PyTypeObject Buffer_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "devstash._core.Buffer",
    .tp_doc = "Writable memory holding a loaded value's out-of-band buffer.",
    .tp_basicsize = sizeof(BufferObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)Buffer_dealloc,
    .tp_as_buffer = &Buffer_as_buffer,
};

PyObject *
buffer_alloc(size_t len, char **data)
{
    if (len < BUFFER_MMAP_MIN || len > (size_t)PY_SSIZE_T_MAX) {
        PyObject *b = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)len);
        if (b != NULL)
            *data = PyByteArray_AS_STRING(b);
        return b;
    }
    BufferObject *self = PyObject_New(BufferObject, &Buffer_Type);
    if (self == NULL)
        return NULL;
    self->len = (Py_ssize_t)len;
    self->data = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (self->data == MAP_FAILED) {
        self->data = NULL;
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
#ifdef MADV_HUGEPAGE
    (void)madvise(self->data, len, MADV_HUGEPAGE);   /* a hint: fine if refused */
#endif
    *data = self->data;
    return (PyObject *)self;
}

PyObject *
buffer_copy(const char *src, size_t len)
{
    char *data;
    PyObject *self = buffer_alloc(len, &data);
    if (self == NULL || len == 0)
        return self;
    if (len < BUFFER_MMAP_MIN) {
        memcpy(data, src, len);
        return self;
    }
    Py_BEGIN_ALLOW_THREADS
    memcpy(data, src, len);
    Py_END_ALLOW_THREADS
    return self;
}
