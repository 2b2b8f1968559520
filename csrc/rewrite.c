/* The rewriter: source + markers -> code object whose marked statements call
 * the module's runtime object instead of computing their value directly.
 *
 * The tree comes from CPython's own parser (PyCF_ONLY_AST) and goes back to
 * the compiler, so the rewritten module keeps every line number and column of
 * the user's code: tracebacks point at the user's lines. Markers are
 * comments, which the tree does not hold, so they come from scanner.c.
 *
 * Each marked statement's value expression E becomes one of:
 *   @devstash.call(SITE, F, *A, **K)       E is F(*A, **K)
 *   @devstash.chain(SITE, F, STEPS)        E is F(..).attr(..)[i]...: STEPS
 *                                          holds every call's arguments, so
 *                                          on a hit none of the chain runs
 *   @devstash.expr(SITE, lambda n1, n2, ...: E, (n1, n2, ...)[, NAME])
 *                                          any other expression, keyed by its
 *                                          text and the values of the names
 *                                          it reads; NAME, when the statement
 *                                          is `NAME = E` or `NAME: T = E`, is
 *                                          what listings show for it
 *   await @devstash.acall(...) / achain(...)   for `await E`
 *
 * Effects. When the statement is a call statement whose call is an effect,
 * print(...) or x.m(...) with m one of the built-in containers' mutators
 * (list append, extend, insert; dict update, setdefault; set add, update,
 * discard; deque append, appendleft, extend, extendleft), caching the call
 * would skip the print or the append on a hit. So the effect stays as it
 * is and runs every time, and what is cached is each part of its arguments
 * that holds a call (lambda bodies aside), rewritten as above at a site of
 * its own:
 *   every positional and keyword argument,      r.append(fetch(x)),
 *                                               print(a, sep=s())
 *   what a * or ** argument unpacks,            print(*rows(), **opts())
 *   every {field} of an f-string argument       print(f"{slow(2)} {g(1) + 1}")
 * The rule reads the text only: whatever r turns out to be, caching the
 * arguments and running the call is correct. A generator expression the
 * call consumes (any positional argument of extend, extendleft, update) or
 * unpacks (*) is cached as the list of its items; one it keeps (print(g),
 * r.append(g)) is cached as a generator, which cannot be stored: it runs
 * every time, with a warning. An effect none of whose arguments calls
 * anything is cached whole, as any call; an effect whose value is assigned
 * (`n = r.append(fetch(x))`) too.
 *
 * SITE indexes the `sites` tuple returned beside the code: one tuple
 * (line, column, ttl, flags, kind, label, ignore) per cached value, in the
 * order the markers come (one site per marker, one per cached part of an
 * effect). A marker's sites all hold its line, column, ttl, flags and
 * ignore; kind is the method called ("call", "chain", "expr", "acall",
 * "achain") and label the source text of what is cached: the statement, or
 * the effect's argument (warnings quote it; a plain expression's key holds
 * it). */
#include "rewrite.h"
#include "options.h"
#include "outline.h"
#include "scanner.h"

/* ---- the _ast types we look at ------------------------------------------ */

static struct {
    PyObject *Assign, *AnnAssign, *AugAssign, *Expr, *Return;
    PyObject *FunctionDef, *AsyncFunctionDef, *ClassDef;
    PyObject *If, *With, *AsyncWith, *Try, *TryStar;
    PyObject *ImportFrom;
    PyObject *Call, *Attribute, *Subscript, *Slice, *Await, *Starred;
    PyObject *Name, *Constant, *Tuple, *Dict, *Lambda, *arguments, *arg;
    PyObject *Load, *Store, *keyword, *comprehension;
    PyObject *Yield, *YieldFrom, *NamedExpr;
    PyObject *JoinedStr, *FormattedValue, *GeneratorExp, *ListComp;
    PyObject *Module, *AST;
    PyObject *compile;          /* builtins.compile */
    PyObject *empty_tuple;
} T;

/* Loads the _ast types on the first rewrite, not at import: a warm run takes
 * its code from the cache and never needs them. */
static int ast_types_loaded;

static int
rewrite_ready(void)
{
    if (ast_types_loaded)
        return 0;
    PyObject *ast = PyImport_ImportModule("_ast");
    if (ast == NULL)
        return -1;
    int rc = -1;
#define LOAD(name) Py_XSETREF(T.name, PyObject_GetAttrString(ast, #name)); if (T.name == NULL) goto done;
    LOAD(Assign) LOAD(AnnAssign) LOAD(AugAssign) LOAD(Expr) LOAD(Return)
    LOAD(FunctionDef) LOAD(AsyncFunctionDef) LOAD(ClassDef)
    LOAD(If) LOAD(With) LOAD(AsyncWith) LOAD(Try)
    LOAD(ImportFrom)
    LOAD(Call) LOAD(Attribute) LOAD(Subscript) LOAD(Slice) LOAD(Await) LOAD(Starred)
    LOAD(Name) LOAD(Constant) LOAD(Tuple) LOAD(Dict) LOAD(Lambda) LOAD(arguments)
    LOAD(Load) LOAD(Store) LOAD(keyword) LOAD(comprehension) LOAD(arg)
    LOAD(Yield) LOAD(YieldFrom) LOAD(NamedExpr)
    LOAD(JoinedStr) LOAD(FormattedValue) LOAD(GeneratorExp) LOAD(ListComp)
    LOAD(Module) LOAD(AST)
#undef LOAD
    /* TryStar exists from 3.11 on. */
    Py_XSETREF(T.TryStar, PyObject_GetAttrString(ast, "TryStar"));
    if (T.TryStar == NULL) {
        PyErr_Clear();
        T.TryStar = Py_NewRef(Py_None);
    }
    /* From the builtins module, not the running frame's builtins
     * (PyEval_GetBuiltins is deprecated from 3.13 on). */
    PyObject *builtins = PyImport_ImportModule("builtins");
    if (builtins == NULL)
        goto done;
    Py_XSETREF(T.compile, PyObject_GetAttrString(builtins, "compile"));
    Py_DECREF(builtins);
    if (T.compile == NULL)
        goto done;
    Py_XSETREF(T.empty_tuple, PyTuple_New(0));
    if (T.empty_tuple == NULL)
        goto done;
    ast_types_loaded = 1;
    rc = 0;
done:
    Py_DECREF(ast);
    return rc;
}

static int
is_a(PyObject *node, PyObject *type)
{
    return type != Py_None && Py_IS_TYPE(node, (PyTypeObject *)type);
}

/* ---- small node helpers ------------------------------------------------- */

/* Appends a new reference (NULL: an error already set) to list, dropping
 * it: 0, or -1 with an exception. */
static int
append_new(PyObject *list, PyObject *item)
{
    if (item == NULL)
        return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

static long
node_int(PyObject *node, const char *attr)
{
    PyObject *v = PyObject_GetAttrString(node, attr);
    if (v == NULL)
        return -1;
    long n = v == Py_None ? 0 : PyLong_AsLong(v);
    Py_DECREF(v);
    return n;
}

static const char *const location_attrs[] = {"lineno", "col_offset", "end_lineno", "end_col_offset"};

/* New node of `type` located at `loc`, fields given as NULL-terminated
 * (name, value) pairs; the values are borrowed. Every field and the location
 * go to the constructor: a node built empty and filled in afterwards makes
 * 3.13 warn (DeprecationWarning: missing required argument), and 3.15 raise.
 * So callers name every field of the node's type, optional ones as None. */
static PyObject *
node_new(PyObject *type, PyObject *loc, ...)
{
    PyObject *kwargs = PyDict_New();
    if (kwargs == NULL)
        return NULL;
    va_list ap;
    va_start(ap, loc);
    const char *name;
    while ((name = va_arg(ap, const char *)) != NULL) {
        PyObject *value = va_arg(ap, PyObject *);
        if (value == NULL || PyDict_SetItemString(kwargs, name, value) < 0) {
            va_end(ap);
            Py_DECREF(kwargs);
            return NULL;
        }
    }
    va_end(ap);
    for (size_t i = 0; loc != NULL && i < sizeof location_attrs / sizeof location_attrs[0]; i++) {
        PyObject *v = PyObject_GetAttrString(loc, location_attrs[i]);
        int rc = v == NULL ? -1 : PyDict_SetItemString(kwargs, location_attrs[i], v);
        Py_XDECREF(v);
        if (rc < 0) {
            Py_DECREF(kwargs);
            return NULL;
        }
    }
    PyObject *node = PyObject_Call(type, T.empty_tuple, kwargs);
    Py_DECREF(kwargs);
    return node;
}

static PyObject *
load_ctx(void)
{
    return PyObject_Call(T.Load, T.empty_tuple, NULL);
}

static PyObject *
make_constant(PyObject *value, PyObject *loc)
{
    return node_new(T.Constant, loc, "value", value, "kind", Py_None, NULL);
}

/* @devstash.<method> as an expression located at loc. */
static PyObject *
runtime_method(const char *method, PyObject *loc)
{
    PyObject *ctx = load_ctx(), *id = NULL, *name = NULL, *attr = NULL, *result = NULL;
    if (ctx == NULL)
        return NULL;
    if ((id = PyUnicode_FromString(DS_RUNTIME_NAME)) == NULL)
        goto done;
    if ((name = node_new(T.Name, loc, "id", id, "ctx", ctx, NULL)) == NULL)
        goto done;
    if ((attr = PyUnicode_FromString(method)) == NULL)
        goto done;
    result = node_new(T.Attribute, loc, "value", name, "attr", attr, "ctx", ctx, NULL);
done:
    Py_XDECREF(ctx);
    Py_XDECREF(id);
    Py_XDECREF(name);
    Py_XDECREF(attr);
    return result;
}

/* Call(func=@devstash.<method>, args=[SITE, *rest], keywords=keywords). */
static PyObject *
runtime_call(const char *method, long site, PyObject *rest, PyObject *keywords, PyObject *loc)
{
    PyObject *func = NULL, *site_obj = NULL, *site_node = NULL, *args = NULL, *result = NULL;
    if ((func = runtime_method(method, loc)) == NULL)
        goto done;
    if ((site_obj = PyLong_FromLong(site)) == NULL)
        goto done;
    if ((site_node = make_constant(site_obj, loc)) == NULL)
        goto done;
    if ((args = PyList_New(0)) == NULL || PyList_Append(args, site_node) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rest); i++)
        if (PyList_Append(args, PyList_GET_ITEM(rest, i)) < 0)
            goto done;
    result = node_new(T.Call, loc, "func", func, "args", args, "keywords", keywords, NULL);
done:
    Py_XDECREF(func);
    Py_XDECREF(site_obj);
    Py_XDECREF(site_node);
    Py_XDECREF(args);
    return result;
}

/* Makes room for one more item in a PyMem array. 0, or -1 with MemoryError. */
static int
array_reserve(void **items, Py_ssize_t n, Py_ssize_t *cap, size_t item_size, Py_ssize_t first_cap)
{
    if (n < *cap)
        return 0;
    Py_ssize_t new_cap = *cap ? *cap * 2 : first_cap;
    void *grown = PyMem_Realloc(*items, (size_t)new_cap * item_size);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *items = grown;
    *cap = new_cap;
    return 0;
}

/* ---- markers -------------------------------------------------------------- */

typedef struct {
    Py_ssize_t line, col;          /* col: 0-based, characters */
    Py_ssize_t start, end;         /* the comment's bytes */
    Py_ssize_t opt_start, opt_end; /* its option text */
    int own_line;
    ds_options options;
    PyObject *target;              /* borrowed: the statement it applies to */
} marker;

typedef struct {
    marker *items;
    Py_ssize_t n, cap;
    const char *src;
} marker_list;

static int
collect_marker(void *ctx, const ds_comment *c)
{
    marker_list *list = ctx;
    Py_ssize_t os, oe;
    if (!scanner_is_marker(list->src, c, &os, &oe))
        return 0;
    void *items = list->items;
    if (array_reserve(&items, list->n, &list->cap, sizeof *list->items, 8) < 0)
        return -1;
    list->items = items;
    list->items[list->n++] = (marker){
        .line = c->line, .col = c->col, .start = c->start, .end = c->end,
        .opt_start = os, .opt_end = oe, .own_line = c->own_line,
    };
    return 0;
}

/* The physical line `line` (1-based) of src, as str, without its newline. */
static PyObject *
source_line(const char *src, Py_ssize_t len, Py_ssize_t line)
{
    Py_ssize_t start = 0;
    for (Py_ssize_t l = 1; l < line && start < len; start++) {
        if (src[start] == '\n' || (src[start] == '\r' && (start + 1 >= len || src[start + 1] != '\n')))
            l++;
    }
    Py_ssize_t end = start;
    while (end < len && src[end] != '\n' && src[end] != '\r')
        end++;
    return PyUnicode_DecodeUTF8(src + start, end - start, "replace");
}

/* Raises MarkerError at marker m: "<what>; <quoted marker>". */
static void
marker_error(PyObject *filename, const char *src, Py_ssize_t len, const marker *m,
             const char *what)
{
    PyObject *text = source_line(src, len, m->line);
    PyObject *quoted = PyUnicode_DecodeUTF8(src + m->start, m->end - m->start, "replace");
    if (text != NULL && quoted != NULL) {
        PyObject *msg = PyUnicode_FromFormat("%s (marker '%U')", what, quoted);
        if (msg != NULL) {
            PyObject *exc = PyObject_CallFunction(
                ds_MarkerError, "O(OnnOnn)", msg, filename, m->line, m->col + 1, text,
                m->line, m->col + 1 + PyUnicode_GET_LENGTH(quoted));
            if (exc != NULL) {
                PyErr_SetObject(ds_MarkerError, exc);
                Py_DECREF(exc);
            }
            Py_DECREF(msg);
        }
    }
    Py_XDECREF(text);
    Py_XDECREF(quoted);
}

/* ---- statements ----------------------------------------------------------- */

typedef struct {
    PyObject *node;        /* borrowed from the tree */
    long line, end_line, col;
    int simple;            /* a statement whose value a marker can cache */
    Py_ssize_t marked_by;  /* line of the marker that took it, or 0 */
} stmt_pos;

typedef struct {
    stmt_pos *items;
    Py_ssize_t n, cap;
    /* Sorted by (line, col) once collected (stmt_list_index), so that each
     * marker finds its statement by binary search: rewriting stays linear
     * in the number of markers. Pointers into items. */
    stmt_pos **all, **simple;
    Py_ssize_t nsimple;
} stmt_list;

static int
stmt_list_add(stmt_list *list, PyObject *node, int simple)
{
    long line = node_int(node, "lineno"), end = node_int(node, "end_lineno");
    long col = node_int(node, "col_offset");
    if (PyErr_Occurred())
        return -1;
    void *items = list->items;
    if (array_reserve(&items, list->n, &list->cap, sizeof *list->items, 64) < 0)
        return -1;
    list->items = items;
    list->items[list->n++] = (stmt_pos){.node = node, .line = line, .end_line = end, .col = col,
                                        .simple = simple, .marked_by = 0};
    return 0;
}

static int
is_simple(PyObject *node)
{
    return is_a(node, T.Assign) || is_a(node, T.AnnAssign) || is_a(node, T.AugAssign) ||
           is_a(node, T.Expr) || is_a(node, T.Return);
}

static int collect_block(stmt_list *list, PyObject *body);

/* The statement blocks a compound statement holds: body, orelse, finalbody,
 * and the bodies of its except handlers and match cases. Fields are read
 * from the node's __dict__, so an absent one costs no AttributeError (that
 * made the walk of a long script slower than parsing it). */
static int
collect_nested(stmt_list *list, PyObject *node)
{
    static const char *const blocks[] = {"body", "orelse", "finalbody"};
    static const char *const clauses[] = {"handlers", "cases"};
    PyObject *fields = PyObject_GenericGetDict(node, NULL);
    if (fields == NULL)
        return -1;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof blocks / sizeof blocks[0]; i++) {
        PyObject *block = PyDict_GetItemString(fields, blocks[i]);
        if (block != NULL && PyList_Check(block))
            rc = collect_block(list, block);
    }
    for (size_t i = 0; rc == 0 && i < sizeof clauses / sizeof clauses[0]; i++) {
        PyObject *items = PyDict_GetItemString(fields, clauses[i]);
        if (items == NULL || !PyList_Check(items))
            continue;
        for (Py_ssize_t j = 0; rc == 0 && j < PyList_GET_SIZE(items); j++)
            rc = collect_nested(list, PyList_GET_ITEM(items, j));
    }
    Py_DECREF(fields);
    return rc;
}

/* Records every statement of `body` and of the blocks nested in it. */
static int
collect_block(stmt_list *list, PyObject *body)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(body); i++) {
        PyObject *node = PyList_GET_ITEM(body, i);
        int simple = is_simple(node);
        if (stmt_list_add(list, node, simple) < 0)
            return -1;
        if (!simple && collect_nested(list, node) < 0)
            return -1;
    }
    return 0;
}

/* The statement a marker applies to, or NULL with *why set. An inline marker
 * applies to the simple statement whose lines hold it (the last one on the
 * line when semicolons join several); a marker alone on its line applies to
 * the statement around it, else to the next one. */
static int
stmt_pos_cmp(const void *a, const void *b)
{
    const stmt_pos *x = *(stmt_pos *const *)a, *y = *(stmt_pos *const *)b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    return (x->col > y->col) - (x->col < y->col);
}

/* Builds the sorted views of the collected statements. */
static int
stmt_list_index(stmt_list *list)
{
    size_t n = list->n ? (size_t)list->n : 1;
    list->all = PyMem_Malloc(n * sizeof *list->all);
    list->simple = PyMem_Malloc(n * sizeof *list->simple);
    if (list->all == NULL || list->simple == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    list->nsimple = 0;
    for (Py_ssize_t i = 0; i < list->n; i++) {
        list->all[i] = &list->items[i];
        if (list->items[i].simple)
            list->simple[list->nsimple++] = &list->items[i];
    }
    qsort(list->all, (size_t)list->n, sizeof *list->all, stmt_pos_cmp);
    qsort(list->simple, (size_t)list->nsimple, sizeof *list->simple, stmt_pos_cmp);
    return 0;
}

/* How many of v[0..n) (sorted by line) start on a line <= line. */
static Py_ssize_t
count_starting_by(stmt_pos *const *v, Py_ssize_t n, long line)
{
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (v[mid]->line <= line)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The statement a marker applies to: the innermost, last-starting simple
 * statement on its line, or (a marker on a line of its own) the next
 * statement. Simple statements never nest, and only share lines, so going
 * back from the last one that starts by the marker's line stops at the
 * first that ends before it. */
static stmt_pos *
marker_target(stmt_list *stmts, const marker *m, const char **why)
{
    stmt_pos *found = NULL, *next = NULL;
    Py_ssize_t k = count_starting_by(stmts->simple, stmts->nsimple, (long)m->line);
    for (Py_ssize_t i = k - 1; i >= 0; i--) {
        stmt_pos *s = stmts->simple[i];
        if (s->end_line < m->line)
            break;
        if (found == NULL || s->line > found->line || (s->line == found->line && s->col > found->col))
            found = s;
    }
    if (found != NULL)
        return found;
    Py_ssize_t j = count_starting_by(stmts->all, stmts->n, (long)m->line);
    if (j < stmts->n)
        next = stmts->all[j];
    if (!m->own_line) {
        *why = "this marker is on a line with no statement it can cache: "
               "mark an assignment, a call statement or a return";
        return NULL;
    }
    if (next == NULL) {
        *why = "this marker applies to nothing: no statement follows it";
        return NULL;
    }
    if (!next->simple) {
        *why = "this marker applies to a compound statement (def, class, if, for, with, ...): "
               "mark an assignment, a call statement or a return";
        return NULL;
    }
    return next;
}

/* ---- expressions ---------------------------------------------------------- */

typedef struct {
    PyObject *filename;
    const char *src;
    Py_ssize_t len;
    PyObject *sites;     /* list of site tuples */
    Py_ssize_t *line_starts;    /* byte offset of each line (1-based: [l - 1]), */
    Py_ssize_t nlines;          /* built on the first segment() */
} rewriter;

/* Where each line starts, as the tokenizer counts lines (\n, \r\n, \r). */
static int
index_lines(rewriter *rw)
{
    Py_ssize_t cap = 64, n = 0;
    Py_ssize_t *starts = PyMem_Malloc((size_t)cap * sizeof *starts);
    if (starts == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t pos = 0;
    starts[n++] = 0;
    while (pos < rw->len) {
        char c = rw->src[pos++];
        if (c == '\r' && pos < rw->len && rw->src[pos] == '\n')
            pos++;
        if (c == '\n' || c == '\r') {
            if (n == cap) {
                void *grown = starts;
                if (array_reserve(&grown, n, &cap, sizeof *starts, 64) < 0) {
                    PyMem_Free(starts);
                    return -1;
                }
                starts = grown;
            }
            starts[n++] = pos;
        }
    }
    rw->line_starts = starts;
    rw->nlines = n;
    return 0;
}

/* Text of node's source segment (positions are UTF-8 byte offsets). */
static PyObject *
segment(rewriter *rw, PyObject *node)
{
    long line = node_int(node, "lineno"), col = node_int(node, "col_offset");
    long end_line = node_int(node, "end_lineno"), end_col = node_int(node, "end_col_offset");
    if (PyErr_Occurred())
        return NULL;
    if (rw->line_starts == NULL && index_lines(rw) < 0)
        return NULL;
    if (line < 1 || end_line < line || end_line > rw->nlines)
        return PyUnicode_FromString("");
    Py_ssize_t start = rw->line_starts[line - 1] + col, end = rw->line_starts[end_line - 1] + end_col;
    if (start < 0 || end < start || end > rw->len)
        return PyUnicode_FromString("");
    return PyUnicode_DecodeUTF8(rw->src + start, end - start, "replace");
}

/* Whether node is `super()`: it finds its class and instance in the frame
 * it runs in, so it must run where it stands, never inside a lambda or the
 * runtime. */
static int
is_bare_super(PyObject *node)
{
    if (!is_a(node, T.Call))
        return 0;
    PyObject *func = PyObject_GetAttrString(node, "func");
    PyObject *args = PyObject_GetAttrString(node, "args");
    PyObject *kws = PyObject_GetAttrString(node, "keywords");
    PyObject *id = func != NULL && is_a(func, T.Name) ? PyObject_GetAttrString(func, "id") : NULL;
    int result = id != NULL && PyUnicode_Check(id) && PyUnicode_CompareWithASCIIString(id, "super") == 0 &&
                 args != NULL && PyList_Check(args) && PyList_GET_SIZE(args) == 0 &&
                 kws != NULL && PyList_Check(kws) && PyList_GET_SIZE(kws) == 0;
    Py_XDECREF(func);
    Py_XDECREF(args);
    Py_XDECREF(kws);
    Py_XDECREF(id);
    PyErr_Clear();
    return result;
}

/* A chain step list from the outermost node inward, ending at the innermost
 * call; *root receives that call's callee (borrowed). 0 when expr is no
 * call chain (a plain expression). */
static int
find_chain(PyObject *expr, PyObject **root, PyObject *path)
{
    PyObject *node = expr, *innermost = NULL;
    Py_ssize_t innermost_depth = -1;
    for (Py_ssize_t depth = 0;; depth++) {
        if (PyList_Append(path, node) < 0)
            return -1;
        PyObject *next;
        if (is_a(node, T.Call)) {
            if (is_bare_super(node))   /* super().f(x): the root is super().f */
                break;
            innermost = node;
            innermost_depth = depth;
            next = PyObject_GetAttrString(node, "func");
        }
        else if (is_a(node, T.Attribute))
            next = PyObject_GetAttrString(node, "value");
        else if (is_a(node, T.Subscript)) {
            PyObject *slice = PyObject_GetAttrString(node, "slice");
            if (slice == NULL)
                return -1;
            int is_slice = is_a(slice, T.Slice);
            Py_DECREF(slice);
            if (is_slice)   /* x[a:b] has no value of its own to pass along */
                break;
            next = PyObject_GetAttrString(node, "value");
        }
        else
            break;
        if (next == NULL)
            return -1;
        node = next;
        Py_DECREF(next);    /* the tree keeps it alive */
    }
    if (innermost == NULL)
        return 0;
    /* A slice between the outermost node and the innermost call breaks the
     * chain: treat the whole as a plain expression. */
    if (PyList_GET_SIZE(path) <= innermost_depth)
        return 0;
    if (PyList_SetSlice(path, innermost_depth + 1, PyList_GET_SIZE(path), NULL) < 0)
        return -1;
    *root = PyObject_GetAttrString(innermost, "func");
    if (*root == NULL)
        return -1;
    Py_DECREF(*root);
    return 1;
}

/* The names an expression reads from its scope: Name loads, minus names it
 * binds itself (comprehension targets, lambda parameters, := targets). */
static int
free_names(PyObject *node, PyObject *loads, PyObject *stores)
{
    if (PyList_Check(node)) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(node); i++)
            if (free_names(PyList_GET_ITEM(node, i), loads, stores) < 0)
                return -1;
        return 0;
    }
    if (!PyObject_TypeCheck(node, (PyTypeObject *)T.AST))
        return 0;
    if (is_a(node, T.Name)) {
        PyObject *id = PyObject_GetAttrString(node, "id");
        PyObject *ctx = PyObject_GetAttrString(node, "ctx");
        int rc = -1;
        if (id != NULL && ctx != NULL)
            rc = PySet_Add(is_a(ctx, T.Load) ? loads : stores, id);
        Py_XDECREF(id);
        Py_XDECREF(ctx);
        return rc;
    }
    if (is_a(node, T.arguments)) {   /* lambda parameters bind names */
        static const char *const fields[] = {"posonlyargs", "args", "kwonlyargs"};
        for (size_t f = 0; f < 3; f++) {
            PyObject *args = PyObject_GetAttrString(node, fields[f]);
            if (args == NULL)
                return -1;
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(args); i++) {
                PyObject *arg = PyObject_GetAttrString(PyList_GET_ITEM(args, i), "arg");
                if (arg == NULL || PySet_Add(stores, arg) < 0) {
                    Py_XDECREF(arg);
                    Py_DECREF(args);
                    return -1;
                }
                Py_DECREF(arg);
            }
            Py_DECREF(args);
        }
    }
    PyObject *fields = PyObject_GetAttrString((PyObject *)Py_TYPE(node), "_fields");
    if (fields == NULL)
        return -1;
    int rc = 0;
    for (Py_ssize_t i = 0; rc == 0 && i < PyTuple_GET_SIZE(fields); i++) {
        PyObject *child = PyObject_GetAttr(node, PyTuple_GET_ITEM(fields, i));
        if (child == NULL) {
            PyErr_Clear();   /* an optional field left unset */
            continue;
        }
        rc = free_names(child, loads, stores);
        Py_DECREF(child);
    }
    Py_DECREF(fields);
    return rc;
}

/* Whether node holds a yield, await, := or super() (which cannot move into
 * a lambda). */
static int
has_scope_breaker(PyObject *node)
{
    if (PyList_Check(node)) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(node); i++) {
            int r = has_scope_breaker(PyList_GET_ITEM(node, i));
            if (r != 0)
                return r;
        }
        return 0;
    }
    if (!PyObject_TypeCheck(node, (PyTypeObject *)T.AST))
        return 0;
    if (is_a(node, T.Yield) || is_a(node, T.YieldFrom) || is_a(node, T.Await) ||
        is_a(node, T.NamedExpr) || is_bare_super(node))
        return 1;
    PyObject *fields = PyObject_GetAttrString((PyObject *)Py_TYPE(node), "_fields");
    if (fields == NULL)
        return -1;
    int rc = 0;
    for (Py_ssize_t i = 0; rc == 0 && i < PyTuple_GET_SIZE(fields); i++) {
        PyObject *child = PyObject_GetAttr(node, PyTuple_GET_ITEM(fields, i));
        if (child == NULL) {
            PyErr_Clear();
            continue;
        }
        rc = has_scope_breaker(child);
        Py_DECREF(child);
    }
    Py_DECREF(fields);
    return rc;
}

/* lambda n1, n2, ...: body */
static PyObject *
make_lambda(PyObject *params, PyObject *body, PyObject *loc)
{
    PyObject *l[5] = {PyList_New(0), PyList_New(0), PyList_New(0), PyList_New(0), PyList_New(0)};
    PyObject *args = NULL, *result = NULL;
    if (!(l[0] && l[1] && l[2] && l[3] && l[4]))
        goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(params); i++) {
        if (append_new(l[1], node_new(T.arg, loc, "arg", PyList_GET_ITEM(params, i),
                                      "annotation", Py_None, "type_comment", Py_None, NULL)) < 0)
            goto done;
    }
    args = node_new(T.arguments, NULL, "posonlyargs", l[0], "args", l[1], "kwonlyargs", l[2],
                    "kw_defaults", l[3], "defaults", l[4], "vararg", Py_None, "kwarg", Py_None, NULL);
    if (args != NULL)
        result = node_new(T.Lambda, loc, "args", args, "body", body, NULL);
done:
    for (int i = 0; i < 5; i++)
        Py_XDECREF(l[i]);
    Py_XDECREF(args);
    return result;
}

/* @devstash.expr(SITE, lambda n1, n2, ...: E, (n1, n2, ...)[, NAME])
 * The names E reads are evaluated where the statement stands (a class body
 * included, whose names a lambda could not see) and handed to E as
 * parameters: the value is computed from exactly the values keyed. NAME
 * (when callee is not NULL) is what listings show as the entry's callee. */
static PyObject *
rewrite_plain(long site, PyObject *expr, PyObject *names, PyObject *callee)
{
    PyObject *thunk = NULL, *elts = NULL, *ctx = NULL, *tuple = NULL;
    PyObject *rest = NULL, *keywords = NULL, *result = NULL;
    if ((thunk = make_lambda(names, expr, expr)) == NULL)
        goto done;
    if ((ctx = load_ctx()) == NULL || (elts = PyList_New(0)) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(names); i++) {
        if (append_new(elts, node_new(T.Name, expr, "id", PyList_GET_ITEM(names, i), "ctx", ctx, NULL)) < 0)
            goto done;
    }
    if ((tuple = node_new(T.Tuple, expr, "elts", elts, "ctx", ctx, NULL)) == NULL)
        goto done;
    if ((rest = Py_BuildValue("[OO]", thunk, tuple)) == NULL || (keywords = PyList_New(0)) == NULL)
        goto done;
    if (callee != NULL && append_new(rest, make_constant(callee, expr)) < 0)
        goto done;
    result = runtime_call("expr", site, rest, keywords, expr);
done:
    Py_XDECREF(thunk);
    Py_XDECREF(elts);
    Py_XDECREF(ctx);
    Py_XDECREF(tuple);
    Py_XDECREF(rest);
    Py_XDECREF(keywords);
    return result;
}

/* One chain step as a tuple expression: ('c', (args...), {kwargs...}),
 * ('a', 'name') or ('i', index). */
static PyObject *
chain_step(PyObject *node)
{
    PyObject *ctx = load_ctx(), *elts = NULL, *tag = NULL, *tag_node = NULL, *result = NULL;
    PyObject *args = NULL, *kws = NULL, *keys = NULL, *values = NULL, *a = NULL, *b = NULL;
    if (ctx == NULL || (elts = PyList_New(0)) == NULL)
        goto done;
    const char *kind = is_a(node, T.Call) ? "c" : is_a(node, T.Attribute) ? "a" : "i";
    if ((tag = PyUnicode_FromString(kind)) == NULL || (tag_node = make_constant(tag, node)) == NULL ||
        PyList_Append(elts, tag_node) < 0)
        goto done;
    if (kind[0] == 'c') {
        if ((args = PyObject_GetAttrString(node, "args")) == NULL ||
            (kws = PyObject_GetAttrString(node, "keywords")) == NULL)
            goto done;
        if ((a = node_new(T.Tuple, node, "elts", args, "ctx", ctx, NULL)) == NULL)
            goto done;
        if ((keys = PyList_New(0)) == NULL || (values = PyList_New(0)) == NULL)
            goto done;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(kws); i++) {
            PyObject *kw = PyList_GET_ITEM(kws, i);
            PyObject *arg = PyObject_GetAttrString(kw, "arg");
            PyObject *value = PyObject_GetAttrString(kw, "value");
            PyObject *key = NULL;
            int ok = arg != NULL && value != NULL &&
                     (arg == Py_None ? (key = Py_NewRef(Py_None)) : (key = make_constant(arg, value))) != NULL &&
                     PyList_Append(keys, key) == 0 && PyList_Append(values, value) == 0;
            Py_XDECREF(arg);
            Py_XDECREF(value);
            Py_XDECREF(key);
            if (!ok)
                goto done;
        }
        if ((b = node_new(T.Dict, node, "keys", keys, "values", values, NULL)) == NULL)
            goto done;
    }
    else if (kind[0] == 'a') {
        PyObject *attr = PyObject_GetAttrString(node, "attr");
        if (attr == NULL)
            goto done;
        a = make_constant(attr, node);
        Py_DECREF(attr);
        if (a == NULL)
            goto done;
    }
    else if ((a = PyObject_GetAttrString(node, "slice")) == NULL)
        goto done;
    if (PyList_Append(elts, a) < 0 || (b != NULL && PyList_Append(elts, b) < 0))
        goto done;
    result = node_new(T.Tuple, node, "elts", elts, "ctx", ctx, NULL);
done:
    Py_XDECREF(ctx);
    Py_XDECREF(elts);
    Py_XDECREF(tag);
    Py_XDECREF(tag_node);
    Py_XDECREF(args);
    Py_XDECREF(kws);
    Py_XDECREF(keys);
    Py_XDECREF(values);
    Py_XDECREF(a);
    Py_XDECREF(b);
    return result;
}

/* @devstash.chain(SITE, ROOT, (step, step, ...)), innermost step first. */
static PyObject *
rewrite_chain(long site, const char *method, PyObject *expr, PyObject *root, PyObject *path)
{
    PyObject *ctx = load_ctx(), *steps = NULL, *tuple = NULL, *rest = NULL, *keywords = NULL;
    PyObject *result = NULL;
    if (ctx == NULL || (steps = PyList_New(0)) == NULL)
        goto done;
    for (Py_ssize_t i = PyList_GET_SIZE(path) - 1; i >= 0; i--) {
        if (append_new(steps, chain_step(PyList_GET_ITEM(path, i))) < 0)
            goto done;
    }
    if ((tuple = node_new(T.Tuple, expr, "elts", steps, "ctx", ctx, NULL)) == NULL)
        goto done;
    if ((rest = Py_BuildValue("[OO]", root, tuple)) == NULL || (keywords = PyList_New(0)) == NULL)
        goto done;
    result = runtime_call(method, site, rest, keywords, expr);
done:
    Py_XDECREF(ctx);
    Py_XDECREF(steps);
    Py_XDECREF(tuple);
    Py_XDECREF(rest);
    Py_XDECREF(keywords);
    return result;
}

/* @devstash.call(SITE, F, *A, **K) from the call F(*A, **K). */
static PyObject *
rewrite_call(long site, const char *method, PyObject *call)
{
    PyObject *func = PyObject_GetAttrString(call, "func");
    PyObject *args = PyObject_GetAttrString(call, "args");
    PyObject *keywords = PyObject_GetAttrString(call, "keywords");
    PyObject *rest = NULL, *result = NULL;
    if (func == NULL || args == NULL || keywords == NULL)
        goto done;
    if ((rest = PyList_New(0)) == NULL || PyList_Append(rest, func) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(args); i++)
        if (PyList_Append(rest, PyList_GET_ITEM(args, i)) < 0)
            goto done;
    result = runtime_call(method, site, rest, keywords, call);
done:
    Py_XDECREF(func);
    Py_XDECREF(args);
    Py_XDECREF(keywords);
    Py_XDECREF(rest);
    return result;
}

/* Rewrites `value`, an expression whose value marker m caches, into its
 * cached form (*out, a new reference) and records its site: the next index
 * of rw->sites, labelled with the source text of label_node. callee (NULL:
 * none) is what listings show for a plain expression. 0, or -1 with an
 * exception (MarkerError for what cannot be cached). */
static int
rewrite_value(rewriter *rw, const marker *m, PyObject *value, PyObject *label_node,
              PyObject *callee, PyObject **out)
{
    long site = (long)PyList_GET_SIZE(rw->sites);
    PyObject *expr = Py_NewRef(value), *path = NULL, *new_value = NULL, *label = NULL;
    PyObject *names = NULL, *loads = NULL, *stores = NULL, *site_tuple = NULL;
    const char *kind = NULL;
    int awaited = 0, rc = -1;
    *out = NULL;
    if (is_a(expr, T.Await)) {
        awaited = 1;
        Py_SETREF(expr, PyObject_GetAttrString(expr, "value"));
        if (expr == NULL)
            goto done;
    }
    if (is_a(expr, T.Yield) || is_a(expr, T.YieldFrom)) {
        marker_error(rw->filename, rw->src, rw->len, m,
                     "a yield expression cannot be cached: mark the call that computes the value");
        goto done;
    }
    if ((path = PyList_New(0)) == NULL)
        goto done;
    PyObject *root = NULL;
    int chain = find_chain(expr, &root, path);
    if (chain < 0)
        goto done;
    if (chain && PyList_GET_SIZE(path) == 1) {
        kind = awaited ? "acall" : "call";
        new_value = rewrite_call(site, kind, expr);
    }
    else if (chain) {
        kind = awaited ? "achain" : "chain";
        new_value = rewrite_chain(site, kind, expr, root, path);
    }
    else {
        int breaker = has_scope_breaker(expr);
        if (breaker < 0)
            goto done;
        if (breaker || awaited) {
            marker_error(rw->filename, rw->src, rw->len, m,
                         "an expression holding await, yield or := can only be cached "
                         "when it is a call: mark the call on a line of its own");
            goto done;
        }
        kind = "expr";
        if ((loads = PySet_New(NULL)) == NULL || (stores = PySet_New(NULL)) == NULL)
            goto done;
        if (free_names(expr, loads, stores) < 0)
            goto done;
        PyObject *difference = PyNumber_InPlaceSubtract(loads, stores);
        if (difference == NULL)
            goto done;
        Py_DECREF(difference);   /* the same set as loads, updated in place */
        if ((names = PySequence_List(loads)) == NULL || PyList_Sort(names) < 0)
            goto done;
        new_value = rewrite_plain(site, expr, names, callee);
    }
    if (new_value == NULL)
        goto done;
    if (awaited) {
        PyObject *aw = node_new(T.Await, value, "value", new_value, NULL);
        if (aw == NULL)
            goto done;
        Py_SETREF(new_value, aw);
    }

    /* The label names what the value is: the statement's text, or the
     * argument's for a call inside an effect. A plain expression's key
     * holds it; warnings quote its first line. */
    if ((label = segment(rw, label_node)) == NULL)
        goto done;
    site_tuple = Py_BuildValue("(nndisON)", m->line, m->col, m->options.ttl, m->options.flags,
                               kind, label, options_ignore_tuple(&m->options));
    if (site_tuple == NULL || PyList_Append(rw->sites, site_tuple) < 0)
        goto done;
    *out = new_value;
    new_value = NULL;
    rc = 0;
done:
    Py_XDECREF(expr);
    Py_XDECREF(path);
    Py_XDECREF(new_value);
    Py_XDECREF(label);
    Py_XDECREF(names);
    Py_XDECREF(loads);
    Py_XDECREF(stores);
    Py_XDECREF(site_tuple);
    return rc;
}

/* ---- effects: print(...) and the built-in containers' mutators ----------- */

/* An effect's method names: list append, extend, insert; dict update,
 * setdefault; set add, update, discard; deque append, appendleft, extend,
 * extendleft. The first three consume each positional argument as an
 * iterable. */
static const char *const effect_methods[] = {
    "extend", "extendleft", "update",
    "append", "appendleft", "insert", "setdefault", "add", "discard",
};
#define CONSUMING_METHODS 3

enum { EFFECT = 1, EFFECT_CONSUMES = 2 };

/* Whether `call` is an effect: print(...) or x.<mutator>(...), by its text
 * only (whatever the callee turns out to be, caching the calls in its
 * arguments and running it is correct). EFFECT, EFFECT | EFFECT_CONSUMES,
 * 0 (no effect), or -1 with an exception. */
static int
effect_kind(PyObject *call)
{
    PyObject *func = PyObject_GetAttrString(call, "func"), *id = NULL;
    int kind = -1;
    if (func == NULL)
        return -1;
    int is_name = is_a(func, T.Name);
    if (!is_name && !is_a(func, T.Attribute)) {
        kind = 0;
        goto done;
    }
    if ((id = PyObject_GetAttrString(func, is_name ? "id" : "attr")) == NULL)
        goto done;
    kind = 0;
    if (!PyUnicode_Check(id))
        goto done;
    if (is_name) {
        kind = PyUnicode_CompareWithASCIIString(id, "print") == 0 ? EFFECT : 0;
        goto done;
    }
    for (size_t i = 0; i < sizeof effect_methods / sizeof effect_methods[0]; i++)
        if (PyUnicode_CompareWithASCIIString(id, effect_methods[i]) == 0) {
            kind = EFFECT | (i < CONSUMING_METHODS ? EFFECT_CONSUMES : 0);
            break;
        }
done:
    Py_DECREF(func);
    Py_XDECREF(id);
    return kind;
}

/* Whether node holds a call that runs where it stands: lambda bodies do
 * not count (they run when called, if ever). 1, 0, or -1 with an exception. */
static int
has_call(PyObject *node)
{
    if (PyList_Check(node)) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(node); i++) {
            int r = has_call(PyList_GET_ITEM(node, i));
            if (r != 0)
                return r;
        }
        return 0;
    }
    if (!PyObject_TypeCheck(node, (PyTypeObject *)T.AST) || is_a(node, T.Lambda))
        return 0;
    if (is_a(node, T.Call))
        return 1;
    PyObject *fields = PyObject_GetAttrString((PyObject *)Py_TYPE(node), "_fields");
    if (fields == NULL)
        return -1;
    int rc = 0;
    for (Py_ssize_t i = 0; rc == 0 && i < PyTuple_GET_SIZE(fields); i++) {
        PyObject *child = PyObject_GetAttr(node, PyTuple_GET_ITEM(fields, i));
        if (child == NULL) {
            PyErr_Clear();   /* an optional field left unset */
            continue;
        }
        rc = has_call(child);
        Py_DECREF(child);
    }
    Py_DECREF(fields);
    return rc;
}

/* [E for ...] from the generator expression (E for ...), at its place. */
static PyObject *
generator_as_list(PyObject *gen)
{
    PyObject *elt = PyObject_GetAttrString(gen, "elt");
    PyObject *generators = PyObject_GetAttrString(gen, "generators");
    PyObject *result = NULL;
    if (elt != NULL && generators != NULL)
        result = node_new(T.ListComp, gen, "elt", elt, "generators", generators, NULL);
    Py_XDECREF(elt);
    Py_XDECREF(generators);
    return result;
}

static int cache_field(rewriter *rw, const marker *m, PyObject *node, const char *field, int eager);

/* The cached form of an effect's argument `arg`, a new reference: arg
 * itself when nothing in it calls anything. A starred argument caches what
 * it unpacks; an f-string each replacement field that calls something;
 * anything else that holds a call is cached whole, as a marked statement's
 * value is. eager: the effect consumes arg as an iterable there (or it is
 * unpacked), so a generator expression is cached as the list of its items;
 * elsewhere its value, a generator, cannot be stored and runs every time. */
static PyObject *
effect_argument(rewriter *rw, const marker *m, PyObject *arg, int eager)
{
    if (is_a(arg, T.Starred))
        return cache_field(rw, m, arg, "value", 1) < 0 ? NULL : Py_NewRef(arg);
    if (is_a(arg, T.JoinedStr)) {
        PyObject *values = PyObject_GetAttrString(arg, "values");
        if (values == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(values); i++) {
            PyObject *part = PyList_GET_ITEM(values, i);
            if (is_a(part, T.FormattedValue) && cache_field(rw, m, part, "value", 0) < 0) {
                Py_DECREF(values);
                return NULL;
            }
        }
        Py_DECREF(values);
        return Py_NewRef(arg);
    }
    int calls = has_call(arg);
    if (calls <= 0)
        return calls < 0 ? NULL : Py_NewRef(arg);
    PyObject *value = eager && is_a(arg, T.GeneratorExp) ? generator_as_list(arg) : Py_NewRef(arg);
    if (value == NULL)
        return NULL;
    PyObject *cached;
    int rc = rewrite_value(rw, m, value, arg, NULL, &cached);
    Py_DECREF(value);
    return rc < 0 ? NULL : cached;
}

/* Replaces node.<field> by its cached form (effect_argument). 0, or -1
 * with an exception. */
static int
cache_field(rewriter *rw, const marker *m, PyObject *node, const char *field, int eager)
{
    PyObject *value = PyObject_GetAttrString(node, field);
    if (value == NULL)
        return -1;
    PyObject *cached = effect_argument(rw, m, value, eager);
    Py_DECREF(value);
    if (cached == NULL)
        return -1;
    int rc = PyObject_SetAttrString(node, field, cached);
    Py_DECREF(cached);
    return rc;
}

/* A call statement whose call is an effect keeps the effect and caches the
 * calls in its arguments instead, each at a site of its own, so a hit still
 * prints or appends. 1 when it did, 0 when the call is no effect or none of
 * its arguments calls anything (the whole call is then cached, untouched so
 * far), -1 with an exception. */
static int
rewrite_effect(rewriter *rw, const marker *m, PyObject *call)
{
    int kind = effect_kind(call);
    if (kind <= 0)
        return kind;
    Py_ssize_t before = PyList_GET_SIZE(rw->sites);
    PyObject *args = PyObject_GetAttrString(call, "args");
    PyObject *keywords = PyObject_GetAttrString(call, "keywords");
    int rc = -1;
    if (args == NULL || keywords == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(args); i++) {
        PyObject *cached = effect_argument(rw, m, PyList_GET_ITEM(args, i), (kind & EFFECT_CONSUMES) != 0);
        if (cached == NULL || PyList_SetItem(args, i, cached) < 0)
            goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keywords); i++)
        if (cache_field(rw, m, PyList_GET_ITEM(keywords, i), "value", 0) < 0)
            goto done;
    rc = PyList_GET_SIZE(rw->sites) > before;
done:
    Py_XDECREF(args);
    Py_XDECREF(keywords);
    return rc;
}

/* ---- marked statements ---------------------------------------------------- */

/* The one plain name a statement assigns its value to (`x = E`,
 * `x: T = E`): *name a new reference, or NULL for any other statement or
 * target. 0, or -1 with an exception. */
static int
assigned_name(PyObject *stmt, PyObject **name)
{
    PyObject *target = NULL;
    *name = NULL;
    if (is_a(stmt, T.Assign)) {
        PyObject *targets = PyObject_GetAttrString(stmt, "targets");
        if (targets == NULL)
            return -1;
        if (PyList_GET_SIZE(targets) == 1)
            target = Py_NewRef(PyList_GET_ITEM(targets, 0));
        Py_DECREF(targets);
    }
    else if (is_a(stmt, T.AnnAssign) && (target = PyObject_GetAttrString(stmt, "target")) == NULL)
        return -1;
    if (target == NULL || !is_a(target, T.Name)) {
        Py_XDECREF(target);
        return 0;
    }
    *name = PyObject_GetAttrString(target, "id");
    Py_DECREF(target);
    return *name == NULL ? -1 : 0;
}

/* Rewrites the value of the statement marker m applies to. */
static int
rewrite_statement(rewriter *rw, const marker *m)
{
    PyObject *stmt = m->target;
    PyObject *value = PyObject_GetAttrString(stmt, "value");
    PyObject *name = NULL, *new_value = NULL;
    int rc = -1;
    if (value == NULL)
        return -1;
    if (value == Py_None) {
        marker_error(rw->filename, rw->src, rw->len, m,
                     "this marker applies to a statement without a value to cache");
        goto done;
    }
    if (is_a(stmt, T.Expr) && is_a(value, T.Call)) {
        int effect = rewrite_effect(rw, m, value);
        if (effect != 0) {
            rc = effect < 0 ? -1 : 0;
            goto done;
        }
    }
    if (assigned_name(stmt, &name) < 0)
        goto done;
    if (rewrite_value(rw, m, value, stmt, name, &new_value) < 0)
        goto done;
    if (PyObject_SetAttrString(stmt, "value", new_value) < 0)
        goto done;
    rc = 0;
done:
    Py_DECREF(value);
    Py_XDECREF(name);
    Py_XDECREF(new_value);
    return rc;
}

/* ---- resuming after activate() ------------------------------------------- */

static int
span_holds(PyObject *node, long line)
{
    long a = node_int(node, "lineno"), b = node_int(node, "end_lineno");
    return a <= line && line <= b;
}

static int
has_marker_in(PyObject *node, const marker_list *markers)
{
    long a = node_int(node, "lineno"), b = node_int(node, "end_lineno");
    for (Py_ssize_t i = 0; i < markers->n; i++) {
        long l = node_int(markers->items[i].target, "lineno");
        if (a <= l && l <= b)
            return 1;
    }
    return 0;
}

static int try_breaks(PyObject *try_node, long line);

/* Appends to `out` the statements that run after line `line` of `block`,
 * descending into the if/with/try statement that holds that line. */
static int
resume_block(PyObject *block, long line, PyObject *out, PyObject *filename)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(block); i++) {
        PyObject *node = PyList_GET_ITEM(block, i);
        if (!span_holds(node, line))
            continue;
        if (!is_simple(node) && !is_a(node, T.Expr)) {
            if (!(is_a(node, T.If) || is_a(node, T.With) || is_a(node, T.AsyncWith) ||
                  is_a(node, T.Try) || is_a(node, T.TryStar))) {
                PyErr_Format(PyExc_RuntimeError,
                             "%U:%ld: devstash.activate() must be called at the top level of "
                             "the script, or inside an if, with or try block there",
                             filename, line);
                return -1;
            }
            if (is_a(node, T.With) || is_a(node, T.AsyncWith)) {
                PyErr_Format(PyExc_RuntimeError,
                             "%U:%ld: devstash.activate() inside a with block would keep it open "
                             "until the script ends: call devstash.activate() before the with "
                             "statement", filename, line);
                return -1;
            }
            if ((is_a(node, T.Try) || is_a(node, T.TryStar)) && try_breaks(node, line)) {
                PyErr_Format(PyExc_RuntimeError,
                             "%U:%ld: devstash.activate() inside a try block must be the last "
                             "statement of its body, in a try without else or finally: the rest "
                             "of the script runs from activate(), outside the try, so its except "
                             "clauses would no longer apply to it", filename, line);
                return -1;
            }
            static const char *const fields[] = {"body", "orelse", "finalbody", "handlers"};
            int found = 0;
            for (size_t f = 0; f < 4 && !found; f++) {
                PyObject *sub = PyObject_GetAttrString(node, fields[f]);
                if (sub == NULL) {
                    PyErr_Clear();
                    continue;
                }
                for (Py_ssize_t j = 0; j < PyList_GET_SIZE(sub) && !found; j++) {
                    PyObject *child = PyList_GET_ITEM(sub, j);
                    if (!span_holds(child, line))
                        continue;
                    found = 1;
                    int rc;
                    if (f == 3) {   /* an except handler: its body is the block */
                        PyObject *hbody = PyObject_GetAttrString(child, "body");
                        rc = hbody == NULL ? -1 : resume_block(hbody, line, out, filename);
                        Py_XDECREF(hbody);
                    }
                    else
                        rc = resume_block(sub, line, out, filename);
                    if (rc < 0) {
                        Py_DECREF(sub);
                        return -1;
                    }
                }
                Py_DECREF(sub);
            }
        }
        for (Py_ssize_t j = i + 1; j < PyList_GET_SIZE(block); j++)
            if (PyList_Append(out, PyList_GET_ITEM(block, j)) < 0)
                return -1;
        return 0;
    }
    return 0;
}

/* Whether running the rest of the script from an activate() on `line`
 * inside `try_node` would change what the try means: statements after it in
 * the try's body, or an else or finally clause. (`try: import devstash;
 * devstash.activate() except ImportError: pass` keeps its meaning.) */
static int
try_breaks(PyObject *try_node, long line)
{
    int breaks = 0;
    PyObject *body = PyObject_GetAttrString(try_node, "body");
    PyObject *orelse = PyObject_GetAttrString(try_node, "orelse");
    PyObject *finalbody = PyObject_GetAttrString(try_node, "finalbody");
    if (body != NULL && PyList_Check(body) && PyList_GET_SIZE(body) > 0) {
        PyObject *last = PyList_GET_ITEM(body, PyList_GET_SIZE(body) - 1);
        breaks = span_holds(last, line) ? 0 : node_int(last, "lineno") > line;
    }
    if ((orelse != NULL && PyList_Check(orelse) && PyList_GET_SIZE(orelse) > 0)
        || (finalbody != NULL && PyList_Check(finalbody) && PyList_GET_SIZE(finalbody) > 0)) {
        /* Only when activate() is in the body: from a handler, else or
         * finally the try is over by then. */
        Py_ssize_t n = body != NULL && PyList_Check(body) ? PyList_GET_SIZE(body) : 0;
        for (Py_ssize_t i = 0; i < n && !breaks; i++)
            breaks = span_holds(PyList_GET_ITEM(body, i), line);
    }
    PyErr_Clear();
    Py_XDECREF(body);
    Py_XDECREF(orelse);
    Py_XDECREF(finalbody);
    return breaks;
}

/* Builds the body that runs after activate() on line `line`: the
 * `from __future__` imports (they change how the rest compiles), the marked
 * functions and classes defined before (so their markers work), then every
 * statement after the activate() call. A marker anywhere else before it
 * would silently do nothing, so it is an error. */
static PyObject *
resume_body(rewriter *rw, PyObject *body, long line, const marker_list *markers)
{
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(body); i++) {
        PyObject *node = PyList_GET_ITEM(body, i);
        if (node_int(node, "end_lineno") >= line)
            break;
        int keep = is_a(node, T.ImportFrom);
        if (keep) {
            PyObject *mod = PyObject_GetAttrString(node, "module");
            keep = mod != NULL && PyUnicode_Check(mod) && PyUnicode_CompareWithASCIIString(mod, "__future__") == 0;
            Py_XDECREF(mod);
        }
        if (!keep && has_marker_in(node, markers)) {
            if (!(is_a(node, T.FunctionDef) || is_a(node, T.AsyncFunctionDef) || is_a(node, T.ClassDef))) {
                long first = node_int(node, "lineno");
                for (Py_ssize_t m = 0; m < markers->n; m++)
                    if (node_int(markers->items[m].target, "lineno") >= first) {
                        marker_error(rw->filename, rw->src, rw->len, &markers->items[m],
                                     "this marker comes before devstash.activate() and would have "
                                     "no effect: call devstash.activate() above it");
                        break;
                    }
                goto error;
            }
            keep = 1;
        }
        if (keep && PyList_Append(out, node) < 0)
            goto error;
    }
    if (PyErr_Occurred() || resume_block(body, line, out, rw->filename) < 0)
        goto error;
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

/* The statement that binds the module's runtime, placed first:
 *   @devstash = __import__("devstash._runtime", None, None, ("runtime_for",), 0)
 *                   .runtime_for(FILENAME, SITES)
 * so the code runs the same wherever it is executed (activate(), the import
 * hook, runpy, a notebook cell) and can be cached as it is. */
static PyObject *
prologue_statement(PyObject *filename, PyObject *sites, PyObject *loc)
{
    PyObject *load = NULL, *store = NULL, *import_id = NULL, *import_name = NULL;
    PyObject *consts = NULL, *import_args = NULL, *import_call = NULL, *attr = NULL;
    PyObject *method = NULL, *call_args = NULL, *call = NULL, *target_id = NULL;
    PyObject *target = NULL, *targets = NULL, *empty = NULL, *result = NULL;
    if ((load = load_ctx()) == NULL || (store = PyObject_Call(T.Store, T.empty_tuple, NULL)) == NULL)
        goto done;
    if ((import_id = PyUnicode_FromString("__import__")) == NULL ||
        (import_name = node_new(T.Name, loc, "id", import_id, "ctx", load, NULL)) == NULL)
        goto done;
    consts = Py_BuildValue("(sOO(s)i)", "devstash._runtime", Py_None, Py_None, "runtime_for", 0);
    if (consts == NULL || (import_args = PyList_New(0)) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(consts); i++) {
        if (append_new(import_args, make_constant(PyTuple_GET_ITEM(consts, i), loc)) < 0)
            goto done;
    }
    if ((empty = PyList_New(0)) == NULL)
        goto done;
    if ((import_call = node_new(T.Call, loc, "func", import_name, "args", import_args,
                                "keywords", empty, NULL)) == NULL)
        goto done;
    if ((attr = PyUnicode_FromString("runtime_for")) == NULL ||
        (method = node_new(T.Attribute, loc, "value", import_call, "attr", attr, "ctx", load, NULL)) == NULL)
        goto done;
    PyObject *fn = make_constant(filename, loc), *st = make_constant(sites, loc);
    call_args = (fn && st) ? Py_BuildValue("[OO]", fn, st) : NULL;
    Py_XDECREF(fn);
    Py_XDECREF(st);
    if (call_args == NULL)
        goto done;
    if ((call = node_new(T.Call, loc, "func", method, "args", call_args, "keywords", empty, NULL)) == NULL)
        goto done;
    if ((target_id = PyUnicode_FromString(DS_RUNTIME_NAME)) == NULL ||
        (target = node_new(T.Name, loc, "id", target_id, "ctx", store, NULL)) == NULL ||
        (targets = Py_BuildValue("[O]", target)) == NULL)
        goto done;
    result = node_new(T.Assign, loc, "targets", targets, "value", call, "type_comment", Py_None, NULL);
done:
    Py_XDECREF(load);
    Py_XDECREF(store);
    Py_XDECREF(import_id);
    Py_XDECREF(import_name);
    Py_XDECREF(consts);
    Py_XDECREF(import_args);
    Py_XDECREF(import_call);
    Py_XDECREF(attr);
    Py_XDECREF(method);
    Py_XDECREF(call_args);
    Py_XDECREF(call);
    Py_XDECREF(target_id);
    Py_XDECREF(target);
    Py_XDECREF(targets);
    Py_XDECREF(empty);
    return result;
}

/* Puts the prologue first in the tree's body (after `from __future__`
 * imports, which must stay first). */
static int
insert_prologue(PyObject *tree, PyObject *filename, PyObject *sites)
{
    PyObject *body = PyObject_GetAttrString(tree, "body");
    if (body == NULL)
        return -1;
    Py_ssize_t at = 0;
    while (at < PyList_GET_SIZE(body) && is_a(PyList_GET_ITEM(body, at), T.ImportFrom)) {
        PyObject *mod = PyObject_GetAttrString(PyList_GET_ITEM(body, at), "module");
        int future = mod != NULL && PyUnicode_Check(mod) &&
                     PyUnicode_CompareWithASCIIString(mod, "__future__") == 0;
        Py_XDECREF(mod);
        if (!future)
            break;
        at++;
    }
    int rc = -1;
    PyObject *loc = at < PyList_GET_SIZE(body) ? PyList_GET_ITEM(body, at)
                    : PyList_GET_SIZE(body) ? PyList_GET_ITEM(body, 0) : NULL;
    PyObject *stmt;
    if (loc == NULL) {   /* nothing runs after activate(): no prologue needed */
        Py_DECREF(body);
        return 0;
    }
    stmt = prologue_statement(filename, sites, loc);
    if (stmt != NULL) {
        rc = PyList_Insert(body, at, stmt);
        Py_DECREF(stmt);
    }
    Py_DECREF(body);
    return rc;
}

/* Rewrites one source text. With an outline (outline.h: the module code
 * Python compiled and the stubs taken out of src), any trouble returns
 * Py_None instead, for the caller to rewrite the full source. */
static PyObject *
rewrite_text(PyObject *filename, const char *src, Py_ssize_t len, long resume_line,
             int want_tree, PyObject *original, PyObject *stubs)
{
    PyObject *tree = NULL, *body = NULL, *code = NULL, *result = NULL, *sites = NULL;
    marker_list markers = {0};
    stmt_list stmts = {0};
    rewriter rw = {.filename = filename, .src = src, .len = len};
    int unusable = 0;
    markers.src = src;
    if ((rw.sites = PyList_New(0)) == NULL)
        goto done;
    if (scanner_comments(rw.src, rw.len, collect_marker, &markers) < 0)
        goto done;

    PyCompilerFlags flags = {.cf_flags = PyCF_ONLY_AST, .cf_feature_version = PY_MINOR_VERSION};
    if ((tree = Py_CompileStringObject(rw.src, filename, Py_file_input, &flags, -1)) == NULL)
        goto done;
    if ((body = PyObject_GetAttrString(tree, "body")) == NULL || !PyList_Check(body))
        goto done;
    if (collect_block(&stmts, body) < 0 || stmt_list_index(&stmts) < 0)
        goto done;

    /* Resolve every marker before changing anything, so errors name the
     * first bad marker in the file. */
    for (Py_ssize_t i = 0; i < markers.n; i++) {
        marker *m = &markers.items[i];
        char why[DS_OPTIONS_ERRLEN];
        if (options_parse(rw.src + m->opt_start, m->opt_end - m->opt_start, &m->options, why,
                          sizeof why) < 0) {
            marker_error(filename, rw.src, rw.len, m, why);
            goto done;
        }
        const char *reason = NULL;
        stmt_pos *target = marker_target(&stmts, m, &reason);
        if (target == NULL) {
            marker_error(filename, rw.src, rw.len, m, reason);
            goto done;
        }
        if (target->marked_by != 0) {
            char msg[128];
            snprintf(msg, sizeof msg, "this statement already has a marker on line %zd",
                     target->marked_by);
            marker_error(filename, rw.src, rw.len, m, msg);
            goto done;
        }
        target->marked_by = m->line;
        m->target = target->node;
    }
    for (Py_ssize_t i = 0; i < markers.n; i++)
        if (rewrite_statement(&rw, &markers.items[i]) < 0)
            goto done;
    if (resume_line > 0) {
        PyObject *rest = resume_body(&rw, body, resume_line, &markers);
        if (rest == NULL)
            goto done;
        if (stubs != NULL) {
            int covers = outline_covers(rest, original, resume_line);
            unusable = covers == 0;
            if (covers <= 0) {
                Py_DECREF(rest);
                goto done;
            }
        }
        int rc = PyObject_SetAttrString(tree, "body", rest);
        Py_DECREF(rest);
        if (rc < 0)
            goto done;
    }
    if ((sites = PyList_AsTuple(rw.sites)) == NULL)
        goto done;
    if (markers.n > 0 && insert_prologue(tree, filename, sites) < 0)
        goto done;
    if (want_tree) {   /* for hosts that compile trees themselves (IPython) */
        result = PyTuple_Pack(2, tree, sites);
        goto done;
    }
    /* dont_inherit: devstash's own future flags must not leak into user code */
    code = PyObject_CallFunction(T.compile, "OOsii", tree, filename, "exec", 0, 1);
    if (code == NULL)
        goto done;
    if (stubs != NULL) {
        PyObject *restored = outline_restore(code, stubs);
        if (restored == NULL || restored == Py_None) {
            unusable = restored != NULL;
            Py_XDECREF(restored);
            goto done;
        }
        Py_SETREF(code, restored);
    }
    result = PyTuple_Pack(2, code, sites);
done:
    if (result == NULL && stubs != NULL && (unusable || !PyErr_ExceptionMatches(PyExc_MemoryError))) {
        /* a stub the parser or a check refused: rewrite the full source */
        PyErr_Clear();
        result = Py_NewRef(Py_None);
    }
    Py_XDECREF(sites);
    PyMem_Free(markers.items);
    PyMem_Free(stmts.items);
    PyMem_Free(stmts.all);
    PyMem_Free(stmts.simple);
    PyMem_Free(rw.line_starts);
    Py_XDECREF(rw.sites);
    Py_XDECREF(tree);
    Py_XDECREF(body);
    Py_XDECREF(code);
    return result;
}

/* The rewrite of a main script whose unmarked functions and classes keep
 * the code Python compiled (outline.h): Py_None when that cannot be done. */
static PyObject *
rewrite_outlined(PyObject *filename, const char *src, Py_ssize_t len, long resume_line,
                 PyObject *original)
{
    marker_list markers = {.src = src};
    long *lines = NULL;
    PyObject *stubs = NULL, *reduced = NULL, *result = NULL;
    if (scanner_comments(src, len, collect_marker, &markers) < 0)
        goto done;
    if ((lines = PyMem_Malloc(((size_t)markers.n + 1) * sizeof *lines)) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < markers.n; i++)
        lines[i] = (long)markers.items[i].line;
    reduced = outline_reduce(src, len, original, resume_line, lines, markers.n, &stubs);
    if (reduced == NULL)
        goto done;
    if (reduced == Py_None) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    result = rewrite_text(filename, PyBytes_AS_STRING(reduced), PyBytes_GET_SIZE(reduced),
                          resume_line, 0, original, stubs);
done:
    PyMem_Free(markers.items);
    PyMem_Free(lines);
    Py_XDECREF(stubs);
    Py_XDECREF(reduced);
    return result;
}

PyObject *
rewrite_py_rewrite(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"source", "filename", "resume_line", "tree", "original", NULL};
    PyObject *source, *filename, *original = Py_None, *result = NULL;
    long resume_line = 0;
    int want_tree = 0;
    DS_UNUSED(module);
    if (rewrite_ready() < 0)
        return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "SU|lpO:rewrite", kwlist, &source, &filename,
                                     &resume_line, &want_tree, &original))
        return NULL;
    if (original != Py_None && !PyCode_Check(original)) {
        PyErr_SetString(PyExc_TypeError, "original must be a code object or None");
        return NULL;
    }
    /* A tree is tens of thousands of acyclic objects: letting them trigger
     * collections made the cyclic GC a tenth of a long script's rewrite. */
    int gc_was_enabled = PyGC_Disable();
    const char *src = PyBytes_AS_STRING(source);
    Py_ssize_t len = PyBytes_GET_SIZE(source);
    /* The parser reads a C string: a NUL would end the module there. Refuse
     * it as compile() and ast.parse do. */
    if (memchr(src, '\0', (size_t)len) != NULL) {
        PyErr_SetString(PyExc_SyntaxError, "source code string cannot contain null bytes");
        goto done;
    }
    if (original != Py_None && resume_line > 0 && !want_tree) {
        result = rewrite_outlined(filename, src, len, resume_line, original);
        if (result == Py_None)
            Py_CLEAR(result);
        else
            goto done;   /* rewritten, or an error */
    }
    result = rewrite_text(filename, src, len, resume_line, want_tree, NULL, NULL);
done:
    if (gc_was_enabled)
        PyGC_Enable();
    return result;
}
