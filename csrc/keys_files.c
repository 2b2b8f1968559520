/* Files: what a call reads through a path or an open file counts by the
 * file, not only by the text that names it.
 *
 * A path (an exact str or an os.PathLike) given directly to the marked call
 * (an argument, a keyword argument, a direct attribute of the receiver, an
 * argument of a chain's constructor) that names an existing regular file
 * adds the file's identity: device, inode, size and modification time in
 * nanoseconds. An edited file, or one replaced by another, changes the key.
 * A directory adds its listing: each entry's name, size and modification
 * time, sorted by name. One stat per path; nested values (a list of 100,000
 * strings) are never stat-ed: only direct inputs are taken for paths.
 *
 * An open file is keyed by what a read would return: its name, mode,
 * encoding, position, and the identity of the file behind its descriptor.
 * A pipe, socket or terminal has no such identity: the call cannot be keyed. */
#include "keys_feed.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Directories with more entries than this are keyed by their first entries
 * in name order and their entry count. */
#define DIR_MAX_ENTRIES 100000

static void
feed_stat(Sink *s, const struct stat *st)
{
    Sink_u64(s, (uint64_t)st->st_dev);
    Sink_u64(s, (uint64_t)st->st_ino);
    Sink_u64(s, (uint64_t)st->st_size);
    Sink_u64(s, (uint64_t)st->st_mtim.tv_sec);
    Sink_u64(s, (uint64_t)st->st_mtim.tv_nsec);
}

typedef struct {
    char *name;
    uint64_t size, mtime_s, mtime_ns;
    unsigned char type;
} dir_entry;

static int
dir_entry_cmp(const void *a, const void *b)
{
    return strcmp(((const dir_entry *)a)->name, ((const dir_entry *)b)->name);
}

/* A directory's listing: names, sizes and modification times in name order
 * (readdir's order depends on the file system). Reading it releases the GIL. */
static int
feed_directory(ds_hasher *h, const char *path)
{
    dir_entry *entries = NULL;
    size_t n = 0, cap = 0;
    int ret = -1, err = 0;
    DIR *dir;

    Py_BEGIN_ALLOW_THREADS
    dir = opendir(path);
    if (dir == NULL) {
        err = errno;
    }
    else {
        int fd = dirfd(dir);
        struct dirent *d;
        while ((d = readdir(dir)) != NULL && n < DIR_MAX_ENTRIES) {
            if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
                continue;
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                dir_entry *grown = realloc(entries, ncap * sizeof *grown);
                if (grown == NULL) {
                    err = ENOMEM;
                    break;
                }
                entries = grown;
                cap = ncap;
            }
            dir_entry *e = &entries[n];
            struct stat st;
            memset(e, 0, sizeof *e);
            if ((e->name = strdup(d->d_name)) == NULL) {
                err = ENOMEM;
                break;
            }
            n++;
            if (fstatat(fd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
                e->size = (uint64_t)st.st_size;
                e->mtime_s = (uint64_t)st.st_mtim.tv_sec;
                e->mtime_ns = (uint64_t)st.st_mtim.tv_nsec;
                e->type = S_ISDIR(st.st_mode) ? 'd' : S_ISREG(st.st_mode) ? 'f' : 'o';
            }
        }
        closedir(dir);
        if (err == 0)
            qsort(entries, n, sizeof *entries, dir_entry_cmp);
    }
    Py_END_ALLOW_THREADS

    if (err == ENOMEM) {
        PyErr_NoMemory();
        goto error;
    }
    Sink_u8(h->sink, KT_DIRECTORY);
    if (err != 0) {
        /* Unreadable: the error counts, so it becoming readable recomputes. */
        Sink_u64(h->sink, (uint64_t)err);
        ret = 0;
        goto error;
    }
    Sink_len(h->sink, (uint64_t)n);
    for (size_t i = 0; i < n; i++) {
        feed_raw_bytes(h->sink, KT_STR, entries[i].name, strlen(entries[i].name));
        Sink_u8(h->sink, entries[i].type);
        Sink_u64(h->sink, entries[i].size);
        Sink_u64(h->sink, entries[i].mtime_s);
        Sink_u64(h->sink, entries[i].mtime_ns);
    }
    ret = 0;
error:
    for (size_t i = 0; i < n; i++)
        free(entries[i].name);
    free(entries);
    return ret;
}

/* The str a path-like value names, as a new reference, or NULL without an
 * exception when `o` is no path (or one too odd to be a file name). */
static PyObject *
path_text(PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyUnicode_Type)
        return Py_NewRef(o);
    /* Quick refusals for the common non-path values. */
    if (t == &PyLong_Type || t == &PyFloat_Type || t == &PyBool_Type || o == Py_None
        || t == &PyTuple_Type || t == &PyList_Type || t == &PyDict_Type
        || t == &PyBytes_Type || PyType_Check(o) || PyFunction_Check(o))
        return NULL;
    PyObject *fspath = PyObject_GetAttr((PyObject *)t, s_fspath);
    if (fspath == NULL) {
        PyErr_Clear();
        return NULL;
    }
    Py_DECREF(fspath);
    PyObject *p = PyOS_FSPath(o);
    if (p == NULL || !PyUnicode_Check(p)) {
        PyErr_Clear();
        Py_XDECREF(p);
        return NULL;
    }
    return p;
}

int
feed_path_identity(ds_hasher *h, PyObject *o)
{
    PyObject *text = path_text(o);
    if (text == NULL)
        return 0;
    int ret = -1;
    Py_ssize_t len;
    const char *path = PyUnicode_AsUTF8AndSize(text, &len);
    if (path == NULL) {
        PyErr_Clear();          /* lone surrogates: no file has that name */
        ret = 0;
        goto done;
    }
    if (len == 0 || len >= PATH_MAX || memchr(path, '\0', (size_t)len) != NULL) {
        ret = 0;
        goto done;
    }
    struct stat st;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = stat(path, &st);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        ret = 0;                /* names no file: the text alone counts */
        goto done;
    }
    if (part_begin(h) < 0)
        goto done;
    if (S_ISDIR(st.st_mode)) {
        if (feed_directory(h, path) < 0) {
            part_abort(h);
            goto done;
        }
    }
    else {
        Sink_u8(h->sink, KT_FILE);
        feed_stat(h->sink, &st);
    }
    ret = part_end(h, h->parts ? PyUnicode_FromFormat("file %U", text) : NULL);
done:
    Py_DECREF(text);
    return ret;
}

/* The io classes whose instances read a file through a descriptor. */
static int
is_open_file(PyTypeObject *t)
{
    const char *n = t->tp_name;
    return strcmp(n, "_io.TextIOWrapper") == 0 || strcmp(n, "_io.BufferedReader") == 0
        || strcmp(n, "_io.BufferedRandom") == 0 || strcmp(n, "_io.BufferedWriter") == 0
        || strcmp(n, "_io.FileIO") == 0;
}

static int
feed_attr(ds_hasher *h, PyObject *o, const char *name)
{
    PyObject *v = PyObject_GetAttrString(o, name);
    if (v == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear();
        Sink_u8(h->sink, KT_NONE);
        return 0;
    }
    int r = feed_object(h, v);
    Py_DECREF(v);
    return r;
}

int
feed_open_file(ds_hasher *h, PyObject *o)
{
    if (!is_open_file(Py_TYPE(o)))
        return 1;
    PyObject *r = PyObject_CallMethod(o, "fileno", NULL);
    if (r == NULL)
        return -1;              /* closed, or detached: ValueError */
    long fd = PyLong_AsLong(r);
    Py_DECREF(r);
    if (fd == -1 && PyErr_Occurred())
        return -1;
    if (fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "fileno() out of range");
        return -1;
    }
    struct stat st;
    if (fstat((int)fd, &st) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        PyErr_Format(PyExc_ValueError,
                     "an open %s reads a stream (a pipe, socket or terminal), "
                     "not a file: what it returns cannot be keyed", Py_TYPE(o)->tp_name);
        return -1;
    }
    PyObject *pos = PyObject_CallMethod(o, "tell", NULL);
    if (pos == NULL)
        return -1;
    Sink_u8(h->sink, KT_OPEN_FILE);
    int ret = -1;
    feed_raw_bytes(h->sink, KT_STR, Py_TYPE(o)->tp_name, strlen(Py_TYPE(o)->tp_name));
    if (feed_attr(h, o, "name") < 0 || feed_attr(h, o, "mode") < 0
        || feed_attr(h, o, "encoding") < 0 || feed_object(h, pos) < 0)
        goto done;
    feed_stat(h->sink, &st);
    ret = 0;
done:
    Py_DECREF(pos);
    return ret;
}
