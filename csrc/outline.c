/* Outlining: see outline.h. */
#include "outline.h"
#include "scanner.h"

/* ---- lines -------------------------------------------------------------- */

typedef struct {
    Py_ssize_t *start;     /* byte offset of each physical line, 1-based */
    Py_ssize_t count;      /* physical lines */
    unsigned char *code;   /* 1 where the line begins outside any string */
} line_index;

static int
mark_code_line(void *ctx, Py_ssize_t line, Py_ssize_t offset)
{
    line_index *ix = ctx;
    DS_UNUSED(offset);
    if (line >= 1 && line <= ix->count)
        ix->code[line] = 1;
    return 0;
}

static int
line_index_build(line_index *ix, const char *src, Py_ssize_t len)
{
    Py_ssize_t lines = 1;
    for (Py_ssize_t i = 0; i < len; i++)
        if (src[i] == '\n' || (src[i] == '\r' && (i + 1 >= len || src[i + 1] != '\n')))
            lines++;
    ix->count = lines;
    ix->start = PyMem_Malloc((size_t)(lines + 2) * sizeof *ix->start);
    ix->code = PyMem_Calloc((size_t)lines + 2, 1);
    if (ix->start == NULL || ix->code == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t line = 1;
    ix->start[1] = 0;
    for (Py_ssize_t i = 0; i < len; i++)
        if (src[i] == '\n' || (src[i] == '\r' && (i + 1 >= len || src[i + 1] != '\n')))
            ix->start[++line] = i + 1;
    ix->start[lines + 1] = len;
    return scanner_scan(src, len, NULL, mark_code_line, ix);
}

static void
line_index_free(line_index *ix)
{
    PyMem_Free(ix->start);
    PyMem_Free(ix->code);
}

/* A line where a top-level statement (or a decorator) begins: outside any
 * string, not indented, not blank, not a comment. A line inside brackets
 * can look like one too; such a guess only ends a stub early, which the
 * checks of outline.h turn into a full rewrite. */
static int
top_level(const char *src, const line_index *ix, Py_ssize_t line)
{
    if (line > ix->count || !ix->code[line])
        return 0;
    Py_ssize_t at = ix->start[line];
    if (at >= ix->start[line + 1])
        return 0;
    unsigned char c = (unsigned char)src[at];
    return !(c == ' ' || c == '\t' || c == '\f' || c == '\r' || c == '\n' || c == '#' || c == '\\');
}

static int
word_at(const char *p, const char *end, const char *word)
{
    size_t n = strlen(word);
    return (size_t)(end - p) > n && memcmp(p, word, n) == 0 && (p[n] == ' ' || p[n] == '\t');
}

/* The name a `def`, `async def` or `class` line defines, or NULL (no error)
 * when the line starts none. */
static PyObject *
block_name(const char *src, const line_index *ix, Py_ssize_t line)
{
    const char *p = src + ix->start[line], *end = src + ix->start[line + 1];
    if (word_at(p, end, "async")) {
        p += 5;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
    }
    if (word_at(p, end, "def"))
        p += 3;
    else if (word_at(p, end, "class"))
        p += 5;
    else
        return NULL;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    const char *name = p;
    while (p < end && (*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                       (*p >= '0' && *p <= '9') || (unsigned char)*p >= 0x80))
        p++;
    if (p == name)
        return NULL;
    PyObject *s = PyUnicode_DecodeUTF8(name, p - name, "strict");
    if (s == NULL)
        PyErr_Clear();
    return s;
}

/* ---- the original code objects -------------------------------------------- */

static long
code_firstlineno(PyObject *code)
{
    return (long)((PyCodeObject *)code)->co_firstlineno;
}

/* The code object Python made for the block `name` whose def/class line is
 * `line`: the one of that name whose first line is `line`, or a decorator
 * line above it with only decorator lines between. Borrowed, or NULL. */
static PyObject *
find_original(PyObject *original, PyObject *name, Py_ssize_t line, const char *src,
              const line_index *ix)
{
    PyObject *consts = ((PyCodeObject *)original)->co_consts;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(consts); i++) {
        PyObject *c = PyTuple_GET_ITEM(consts, i);
        if (!PyCode_Check(c) || PyUnicode_Compare(((PyCodeObject *)c)->co_name, name) != 0)
            continue;
        long first = code_firstlineno(c);
        if (first > line)
            continue;
        int decorators_only = 1;
        for (long l = first; l < line && decorators_only; l++)
            if (top_level(src, ix, l) && src[ix->start[l]] != '@')
                decorators_only = 0;
        if (decorators_only)
            return c;
    }
    PyErr_Clear();   /* a failed name comparison only means "not this one" */
    return NULL;
}

/* The first line after `after` that code runs: where the body's first
 * statement starts. 0 when there is none (an empty body). */
static long
first_run_line(PyObject *code, long after)
{
    PyObject *it = PyObject_CallMethod(code, "co_lines", NULL);
    if (it == NULL)
        return -1;
    PyObject *iter = PyObject_GetIter(it), *item;
    Py_DECREF(it);
    if (iter == NULL)
        return -1;
    long best = 0;
    while ((item = PyIter_Next(iter)) != NULL) {
        PyObject *line = PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 3 ? PyTuple_GET_ITEM(item, 2) : NULL;
        if (line != NULL && line != Py_None) {
            long l = PyLong_AsLong(line);
            if (l > after && (best == 0 || l < best))
                best = l;
        }
        Py_DECREF(item);
    }
    Py_DECREF(iter);
    return PyErr_Occurred() ? -1 : best;
}

/* ---- reduce ----------------------------------------------------------------- */

static int
has_marker(const long *marker_lines, Py_ssize_t n, long from, long to)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (marker_lines[i] >= from && marker_lines[i] < to)
            return 1;
    return 0;
}

PyObject *
outline_reduce(const char *src, Py_ssize_t len, PyObject *original, long resume_line,
               const long *marker_lines, Py_ssize_t nmarkers, PyObject **stubs)
{
    line_index ix = {0};
    PyObject *list = NULL, *out = NULL;
    char *buf = NULL;
    unsigned char *blank = NULL;   /* per line: 0 keep, 1 blank, 2 "pass" */
    *stubs = NULL;
    if (!PyCode_Check(original)) {
        PyErr_SetString(PyExc_TypeError, "original must be a code object");
        return NULL;
    }
    if (line_index_build(&ix, src, len) < 0 || (list = PyList_New(0)) == NULL)
        goto error;
    if ((blank = PyMem_Calloc((size_t)ix.count + 2, 1)) == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    for (Py_ssize_t line = resume_line + 1; line <= ix.count; line++) {
        if (!top_level(src, &ix, line))
            continue;
        PyObject *name = block_name(src, &ix, line);
        if (name == NULL)
            continue;
        Py_ssize_t end = line + 1;
        while (end <= ix.count && !top_level(src, &ix, end))
            end++;
        PyObject *code = has_marker(marker_lines, nmarkers, line, end)
                             ? NULL : find_original(original, name, line, src, &ix);
        long body = code ? first_run_line(code, line) : 0;
        if (body < 0) {
            Py_DECREF(name);
            goto error;
        }
        if (body > line && body < end) {
            PyObject *stub = Py_BuildValue("(OlO)", name, code_firstlineno(code), code);
            if (stub == NULL || PyList_Append(list, stub) < 0) {
                Py_XDECREF(stub);
                Py_DECREF(name);
                goto error;
            }
            Py_DECREF(stub);
            blank[body] = 2;
            for (Py_ssize_t l = body + 1; l < end; l++)
                blank[l] = 1;
        }
        Py_DECREF(name);
        line = end - 1;
    }
    if (PyList_GET_SIZE(list) == 0) {
        out = Py_NewRef(Py_None);
        goto done;
    }
    /* Each stubbed line keeps its line break, so every line keeps its number;
     * the first keeps its indentation too and says `pass`. */
    if ((buf = PyMem_Malloc((size_t)len + 5 * (size_t)PyList_GET_SIZE(list) + 1)) == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    Py_ssize_t n = 0;
    for (Py_ssize_t line = 1; line <= ix.count; line++) {
        Py_ssize_t a = ix.start[line], b = ix.start[line + 1];
        if (blank[line] == 0) {
            memcpy(buf + n, src + a, (size_t)(b - a));
            n += b - a;
            continue;
        }
        Py_ssize_t text_end = b;
        while (text_end > a && (src[text_end - 1] == '\n' || src[text_end - 1] == '\r'))
            text_end--;
        if (blank[line] == 2) {
            Py_ssize_t indent = a;
            while (indent < text_end && (src[indent] == ' ' || src[indent] == '\t'))
                indent++;
            memcpy(buf + n, src + a, (size_t)(indent - a));
            n += indent - a;
            memcpy(buf + n, "pass", 4);
            n += 4;
        }
        memcpy(buf + n, src + text_end, (size_t)(b - text_end));
        n += b - text_end;
    }
    if ((out = PyBytes_FromStringAndSize(buf, n)) == NULL)
        goto error;
    *stubs = list;
    list = NULL;
    goto done;
error:
    Py_CLEAR(out);
done:
    Py_XDECREF(list);
    PyMem_Free(buf);
    PyMem_Free(blank);
    line_index_free(&ix);
    return out;
}

/* ---- checks and restore ------------------------------------------------------ */

/* First line of a statement, decorators included (a decorated def's
 * lineno is its `def` line). -1 on error. */
static long
statement_start(PyObject *node)
{
    PyObject *a = PyObject_GetAttrString(node, "lineno");
    long start = a ? PyLong_AsLong(a) : -1;
    Py_XDECREF(a);
    PyObject *fields = start < 0 ? NULL : PyObject_GenericGetDict(node, NULL);
    if (fields == NULL)
        return -1;
    PyObject *decorators = PyDict_GetItemString(fields, "decorator_list");
    for (Py_ssize_t i = 0; decorators && PyList_Check(decorators) && i < PyList_GET_SIZE(decorators); i++) {
        PyObject *d = PyObject_GetAttrString(PyList_GET_ITEM(decorators, i), "lineno");
        long l = d ? PyLong_AsLong(d) : -1;
        Py_XDECREF(d);
        if (l < 0) {
            start = -1;
            break;
        }
        if (l < start)
            start = l;
    }
    Py_DECREF(fields);
    return start;
}

int
outline_covers(PyObject *body, PyObject *original, long resume_line)
{
    long last = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(body); i++) {
        PyObject *end = PyObject_GetAttrString(PyList_GET_ITEM(body, i), "end_lineno");
        long e = end ? PyLong_AsLong(end) : -1;
        Py_XDECREF(end);
        if (e < 0)
            return -1;
        if (e > last)
            last = e;
    }
    unsigned char *covered = PyMem_Calloc((size_t)last + 2, 1);
    if (covered == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    int rc = -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(body); i++) {
        PyObject *node = PyList_GET_ITEM(body, i);
        PyObject *b = PyObject_GetAttrString(node, "end_lineno");
        long from = statement_start(node), to = b ? PyLong_AsLong(b) : -1;
        Py_XDECREF(b);
        if (from < 0 || to < 0)
            goto done;
        for (long l = from; l <= to; l++)
            covered[l] = 1;
    }
    PyObject *it = PyObject_CallMethod(original, "co_lines", NULL);
    PyObject *iter = it ? PyObject_GetIter(it) : NULL, *item;
    Py_XDECREF(it);
    if (iter == NULL)
        goto done;
    rc = 1;
    while (rc == 1 && (item = PyIter_Next(iter)) != NULL) {
        PyObject *line = PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 3 ? PyTuple_GET_ITEM(item, 2) : NULL;
        if (line != NULL && line != Py_None) {
            long l = PyLong_AsLong(line);
            if (l > resume_line && (l > last || !covered[l]))
                rc = 0;
        }
        Py_DECREF(item);
    }
    Py_DECREF(iter);
    if (PyErr_Occurred())
        rc = -1;
done:
    PyMem_Free(covered);
    return rc;
}

PyObject *
outline_restore(PyObject *code, PyObject *stubs)
{
    PyObject *consts = PySequence_List(((PyCodeObject *)code)->co_consts), *result = NULL;
    if (consts == NULL)
        return NULL;
    for (Py_ssize_t s = 0; s < PyList_GET_SIZE(stubs); s++) {
        PyObject *stub = PyList_GET_ITEM(stubs, s);
        PyObject *name = PyTuple_GET_ITEM(stub, 0);
        long first = PyLong_AsLong(PyTuple_GET_ITEM(stub, 1));
        int found = 0;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(consts) && !found; i++) {
            PyObject *c = PyList_GET_ITEM(consts, i);
            if (PyCode_Check(c) && code_firstlineno(c) == first &&
                PyUnicode_Compare(((PyCodeObject *)c)->co_name, name) == 0) {
                found = 1;
                if (PyList_SetItem(consts, i, Py_NewRef(PyTuple_GET_ITEM(stub, 2))) < 0)
                    goto done;
            }
        }
        if (!found) {
            result = Py_NewRef(Py_None);
            goto done;
        }
    }
    PyObject *tuple = PyList_AsTuple(consts);
    if (tuple == NULL)
        goto done;
    PyObject *kwargs = Py_BuildValue("{sN}", "co_consts", tuple);
    if (kwargs == NULL)
        goto done;
    PyObject *replace = PyObject_GetAttrString(code, "replace");
    PyObject *no_args = replace != NULL ? PyTuple_New(0) : NULL;
    if (no_args != NULL)
        result = PyObject_Call(replace, no_args, kwargs);
    Py_XDECREF(no_args);
    Py_XDECREF(replace);
    Py_DECREF(kwargs);
done:
    Py_DECREF(consts);
    return result;
}
