/* Marker scanner: finds the comment tokens of Python source in one pass,
 * without building tokens.
 *
 * Only three things can hide a '#' from being a comment: string literals,
 * f-string (and t-string) literal text, and format specs. So the scanner
 * knows strings exactly and treats all other code as opaque bytes, except
 * inside f-string replacement fields, where it counts brackets to find the
 * field's ':' and '}'.
 *
 * F-strings follow Python 3.12 (PEP 701): a replacement field is code, so it
 * may hold strings with the same quote and, across lines, comments. For code
 * that Python 3.11 accepts, this gives the same comments as 3.11's tokenize,
 * because 3.11 forbids the outer quote, backslashes and '#' inside fields.
 * T-strings (3.14: t, tr, rt) scan like f-strings; before 3.14 't"..."' is a
 * syntax error, so this never changes the result for older code.
 *
 * Lines end at "\r\n", "\r" or "\n" everywhere, as they do for the compiler.
 * Invalid source: a single-quoted string ends at the end of its line; an
 * unterminated string or field ends at the end of the input; nesting deeper
 * than DS_MAX_FRAMES is scanned as plain strings. Each byte is examined a
 * bounded number of times, so the scan is linear. */
#include "scanner.h"

#include <ctype.h>

#define DS_MARKER_WORD "@devstash"
#define DS_MARKER_WORD_LEN 9

/* CPython refuses f-strings nested 150 deep; each level needs a frame for
 * the f-string and one for its replacement field. */
#define DS_MAX_FRAMES 320

/* Byte classes. A class of 0 means "nothing to do, keep going". */
enum {
    K_OTHER = 0,
    K_NEWLINE,      /* '\r' or '\n' */
    K_HASH,         /* '#' */
    K_QUOTE,        /* '\'' or '"' */
    K_OPEN,         /* '(' '[' '{' */
    K_CLOSE,        /* ')' ']' '}' */
    K_COLON,        /* ':' */
    K_BACKSLASH,    /* '\\' */
    K_LBRACE,       /* '{' in f-string text */
    K_RBRACE,       /* '}' in f-string text */
};

typedef struct {
    unsigned char code_top[256];    /* code outside any f-string */
    unsigned char code_field[256];  /* code inside a replacement field */
    unsigned char str_sq[256];      /* plain string quoted with ' */
    unsigned char str_dq[256];      /* plain string quoted with " */
    unsigned char fstr_sq[256];     /* f-string text quoted with ' */
    unsigned char fstr_dq[256];     /* f-string text quoted with " */
} ds_tables;

#define T_NL ['\r'] = K_NEWLINE, ['\n'] = K_NEWLINE
#define T_STR T_NL, ['\\'] = K_BACKSLASH

static const ds_tables tables = {
    .code_top = {T_NL, ['#'] = K_HASH, ['\''] = K_QUOTE, ['"'] = K_QUOTE},
    .code_field = {T_NL, ['#'] = K_HASH, ['\''] = K_QUOTE, ['"'] = K_QUOTE,
                   ['('] = K_OPEN, ['['] = K_OPEN, ['{'] = K_OPEN,
                   [')'] = K_CLOSE, [']'] = K_CLOSE, ['}'] = K_CLOSE,
                   [':'] = K_COLON},
    .str_sq = {T_STR, ['\''] = K_QUOTE},
    .str_dq = {T_STR, ['"'] = K_QUOTE},
    .fstr_sq = {T_STR, ['\''] = K_QUOTE, ['{'] = K_LBRACE, ['}'] = K_RBRACE},
    .fstr_dq = {T_STR, ['"'] = K_QUOTE, ['{'] = K_LBRACE, ['}'] = K_RBRACE},
};

enum { FR_FSTRING, FR_FIELD };

/* One level of f-string nesting: an f-string, or a replacement field of the
 * f-string at index `owner`. */
typedef struct {
    unsigned char kind;      /* FR_FSTRING or FR_FIELD */
    unsigned char quote;     /* FR_FSTRING: '\'' or '"' */
    unsigned char triple;    /* FR_FSTRING: 1 if triple-quoted */
    unsigned char raw;       /* FR_FSTRING: 1 if it has an r prefix */
    unsigned char in_spec;   /* FR_FIELD: past the field's top-level ':' */
    int owner;               /* FR_FIELD: index of its f-string */
    Py_ssize_t brackets;     /* FR_FIELD: brackets open inside the field */
} ds_frame;

typedef struct {
    const unsigned char *s;
    Py_ssize_t len;
    Py_ssize_t i;            /* current byte */
    Py_ssize_t line;         /* 1-based line of byte i */
    Py_ssize_t line_start;   /* offset of the first byte of that line */
    Py_ssize_t code_start;   /* 3 after a UTF-8 BOM, else 0 */
    ds_comment_cb cb;
    ds_line_cb line_cb;      /* may be NULL */
    void *ctx;
    int depth;               /* frames in use */
    ds_frame frames[DS_MAX_FRAMES];
} ds_scanner;

static inline int
is_ident_byte(unsigned char c)
{
    /* Bytes >= 0x80 are parts of non-ASCII identifier characters. */
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_' || c >= 0x80;
}

static inline int
is_line_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\f' || c == '\v';
}

/* Consumes the line end at i ("\r\n", "\r" or "\n"); returns the index
 * after it. */
static inline Py_ssize_t
Scanner_newline(ds_scanner *sc, Py_ssize_t i)
{
    if (sc->s[i] == '\r' && i + 1 < sc->len && sc->s[i + 1] == '\n')
        i += 2;
    else
        i += 1;
    sc->line++;
    sc->line_start = i;
    return i;
}

/* Index of the first byte at or after i whose class in tbl is not K_OTHER,
 * or len. Nearly all time goes here, so it looks at 8 bytes per branch. */
static inline Py_ssize_t
skip_other(const unsigned char *s, Py_ssize_t i, Py_ssize_t len,
           const unsigned char *tbl)
{
    while (len - i >= 8) {
        if ((tbl[s[i]] | tbl[s[i + 1]] | tbl[s[i + 2]] | tbl[s[i + 3]] |
             tbl[s[i + 4]] | tbl[s[i + 5]] | tbl[s[i + 6]] | tbl[s[i + 7]]) != 0)
            break;
        i += 8;
    }
    while (i < len && tbl[s[i]] == K_OTHER)
        i++;
    return i;
}

/* The comment starting at i runs to the end of its line. Returns the index
 * of that line end, or -1 when the callback fails. */
static Py_ssize_t
Scanner_comment(ds_scanner *sc, Py_ssize_t i)
{
    const unsigned char *s = sc->s;
    Py_ssize_t end = i + 1, k;
    ds_comment c;

    while (end < sc->len && s[end] != '\n' && s[end] != '\r')
        end++;
    c.line = sc->line;
    c.col = 0;
    c.own_line = 1;
    for (k = sc->line_start; k < i; k++) {
        /* tokenize counts code points: every byte but UTF-8 continuations */
        c.col += (s[k] & 0xC0) != 0x80;
        if (!is_line_space(s[k]))
            c.own_line = 0;
    }
    c.start = i;
    c.end = end;
    if (sc->cb != NULL && sc->cb(sc->ctx, &c) < 0)
        return -1;
    return end;
}

/* Scans a plain string whose content starts at i; returns the index after
 * the closing quote, or of the line end that cuts a single-quoted string
 * short, or len. */
static Py_ssize_t
Scanner_plain_string(ds_scanner *sc, Py_ssize_t i, unsigned char quote, int triple)
{
    const unsigned char *s = sc->s;
    const unsigned char *tbl = quote == '"' ? tables.str_dq : tables.str_sq;
    Py_ssize_t len = sc->len;

    for (;;) {
        i = skip_other(s, i, len, tbl);
        if (i >= len)
            return i;
        switch (tbl[s[i]]) {
        case K_QUOTE:
            if (!triple)
                return i + 1;
            if (i + 2 < len && s[i + 1] == quote && s[i + 2] == quote)
                return i + 3;
            i++;
            break;
        case K_BACKSLASH:
            /* The escaped byte never ends the string, even in raw strings. */
            i++;
            if (i < len) {
                if (s[i] == '\r' || s[i] == '\n')
                    i = Scanner_newline(sc, i);
                else
                    i++;
            }
            break;
        default: /* K_NEWLINE */
            if (!triple)
                return i;
            i = Scanner_newline(sc, i);
            break;
        }
    }
}

/* Classifies the prefix letters just before the quote at index q:
 * returns -1 for none or not a valid prefix, else bit 1 = f-string or
 * t-string, bit 2 = raw. Only the valid Python prefixes count (b, r, u, f,
 * br, rb, fr, rf; t, tr, rt), and only when they are a whole word. */
static int
Scanner_prefix(const ds_scanner *sc, Py_ssize_t q)
{
    const unsigned char *s = sc->s;
    Py_ssize_t p = q;
    int n = 0, flags = 0, has_b = 0, has_u = 0, has_r = 0, has_ft = 0;

    while (p > sc->code_start && n < 3 && is_ident_byte(s[p - 1])) {
        p--;
        n++;
    }
    if (n == 0 || n == 3)
        return -1;
    for (; p < q; p++) {
        switch (s[p] | 0x20) {  /* ASCII lower case */
        case 'b': has_b++; break;
        case 'u': has_u++; break;
        case 'r': has_r++; break;
        case 'f': case 't': has_ft++; break;
        default: return -1;
        }
    }
    /* What is left of the two-letter words: br, rb, fr, rf, tr, rt. */
    if (has_b > 1 || has_r > 1 || has_ft > 1 || (has_u && n > 1) ||
        (has_b && has_ft))
        return -1;
    if (has_ft)
        flags |= 1;
    if (has_r)
        flags |= 2;
    return flags;
}

static int
Scanner_push(ds_scanner *sc, const ds_frame *f)
{
    if (sc->depth >= DS_MAX_FRAMES)
        return -1;
    sc->frames[sc->depth++] = *f;
    return 0;
}

/* The quote at i opens a string. Plain strings are consumed here; an
 * f-string pushes a frame, and the caller sees the depth change. Returns
 * the index where scanning goes on. */
static Py_ssize_t
Scanner_string(ds_scanner *sc, Py_ssize_t i)
{
    const unsigned char *s = sc->s;
    unsigned char quote = s[i];
    int flags = Scanner_prefix(sc, i);
    int triple = i + 2 < sc->len && s[i + 1] == quote && s[i + 2] == quote;
    ds_frame f;

    i += triple ? 3 : 1;
    if (flags >= 0 && (flags & 1)) {
        memset(&f, 0, sizeof f);
        f.kind = FR_FSTRING;
        f.quote = quote;
        f.triple = (unsigned char)triple;
        f.raw = (flags & 2) != 0;
        if (Scanner_push(sc, &f) == 0)
            return i;
        /* Nested too deep for any Python: best effort as a plain string. */
    }
    return Scanner_plain_string(sc, i, quote, triple);
}

/* Code: top level, or a replacement field (not its format spec). Returns
 * when the mode changes (an f-string opens, the field ends or reaches its
 * format spec) or at the end of input; -1 when the callback fails. */
static int
Scanner_code(ds_scanner *sc)
{
    const unsigned char *s = sc->s;
    Py_ssize_t len = sc->len, i = sc->i;
    ds_frame *field = sc->depth ? &sc->frames[sc->depth - 1] : NULL;
    const unsigned char *tbl = field ? tables.code_field : tables.code_top;
    int depth = sc->depth;

    for (;;) {
        i = skip_other(s, i, len, tbl);
        if (i >= len)
            break;
        switch (tbl[s[i]]) {
        case K_NEWLINE:
            i = Scanner_newline(sc, i);
            if (field == NULL && sc->line_cb != NULL && sc->line_cb(sc->ctx, sc->line, i) < 0)
                return -1;
            break;
        case K_HASH:
            i = Scanner_comment(sc, i);
            if (i < 0)
                return -1;
            break;
        case K_QUOTE:
            i = Scanner_string(sc, i);
            if (sc->depth != depth)
                goto done;
            break;
        case K_OPEN:
            field->brackets++;
            i++;
            break;
        case K_CLOSE:
            if (field->brackets > 0) {
                field->brackets--;
            } else if (s[i] == '}') {
                sc->depth--;  /* the field ends */
                i++;
                goto done;
            }
            /* else: a stray closer, an error Python reports; ignore it */
            i++;
            break;
        default: /* K_COLON */
            i++;
            if (field->brackets == 0) {
                field->in_spec = 1;
                goto done;
            }
            break;
        }
    }
done:
    sc->i = i;
    return 0;
}

/* Literal text of an f-string (top frame is the f-string) or the format spec
 * of a field (top frame is a field with in_spec). Returns when the mode
 * changes or at the end of input. */
static void
Scanner_ftext(ds_scanner *sc)
{
    const unsigned char *s = sc->s;
    Py_ssize_t len = sc->len, i = sc->i;
    ds_frame *top = &sc->frames[sc->depth - 1];
    int spec = top->kind == FR_FIELD;
    int owner = spec ? top->owner : sc->depth - 1;
    const ds_frame *fs = &sc->frames[owner];
    unsigned char quote = fs->quote, c;
    const unsigned char *tbl = quote == '"' ? tables.fstr_dq : tables.fstr_sq;
    int named = 0;  /* inside "\N{...}", where braces are not fields */
    ds_frame f;

    for (;;) {
        i = skip_other(s, i, len, tbl);
        if (i >= len)
            break;
        switch (tbl[s[i]]) {
        case K_QUOTE:
            if (!fs->triple) {
                sc->depth = owner;  /* the f-string ends */
                i++;
                goto done;
            }
            if (i + 2 < len && s[i + 1] == quote && s[i + 2] == quote) {
                sc->depth = owner;
                i += 3;
                goto done;
            }
            i++;
            break;
        case K_BACKSLASH:
            i++;
            if (i >= len)
                break;
            c = s[i];
            if (c == '{' || c == '}')
                break;  /* a backslash does not escape a brace */
            if (c == '\r' || c == '\n') {
                i = Scanner_newline(sc, i);
                break;
            }
            i++;
            if (c == 'N' && !fs->raw && i < len && s[i] == '{') {
                named = 1;
                i++;
            }
            break;
        case K_LBRACE:
            if (named) {
                i++;
                break;
            }
            if (!spec && i + 1 < len && s[i + 1] == '{') {
                i += 2;  /* "{{" is a literal brace */
                break;
            }
            i++;
            memset(&f, 0, sizeof f);
            f.kind = FR_FIELD;
            f.owner = owner;
            if (Scanner_push(sc, &f) == 0)
                goto done;
            break;  /* nested too deep: best effort, a literal brace */
        case K_RBRACE:
            i++;
            if (named) {
                named = 0;
            } else if (spec) {
                sc->depth--;  /* the '}' ends the field */
                goto done;
            } else if (i < len && s[i] == '}') {
                i++;  /* "}}" is a literal brace; a lone one is an error */
            }
            break;
        default: /* K_NEWLINE */
            if (fs->triple) {
                i = Scanner_newline(sc, i);
            } else if (spec) {
                /* As in CPython: the spec ends, the field goes on as code. */
                top->in_spec = 0;
                goto done;
            } else {
                /* Unterminated: the f-string ends with its line. */
                sc->depth = owner;
                goto done;
            }
            break;
        }
    }
done:
    sc->i = i;
}

int
scanner_comments(const char *src, Py_ssize_t len, ds_comment_cb cb, void *ctx)
{
    return scanner_scan(src, len, cb, NULL, ctx);
}

int
scanner_scan(const char *src, Py_ssize_t len, ds_comment_cb cb, ds_line_cb line_cb, void *ctx)
{
    /* The frame stack is about 8 KB: fine on the C stack, and it keeps the
     * scanner free of allocation. */
    ds_scanner sc;

    sc.s = (const unsigned char *)src;
    sc.len = len > 0 ? len : 0;
    sc.i = 0;
    if (sc.len >= 3 && memcmp(src, "\xEF\xBB\xBF", 3) == 0)
        sc.i = 3;  /* tokenize drops the BOM before counting columns */
    sc.line = 1;
    sc.line_start = sc.i;
    sc.code_start = sc.i;
    sc.cb = cb;
    sc.line_cb = line_cb;
    sc.ctx = ctx;
    sc.depth = 0;
    if (line_cb != NULL && line_cb(ctx, 1, sc.i) < 0)
        return -1;

    while (sc.i < sc.len) {
        const ds_frame *top = sc.depth ? &sc.frames[sc.depth - 1] : NULL;
        if (top == NULL || (top->kind == FR_FIELD && !top->in_spec)) {
            if (Scanner_code(&sc) < 0)
                return -1;
        } else {
            Scanner_ftext(&sc);
        }
    }
    return 0;
}

/* The marker rule: the comment is '#', optional white space (space, tab,
 * form feed, vertical tab), the word "@devstash", then white space or the
 * end of the comment. So "#@devstash" and "#   @devstash ttl=1d" are
 * markers, while "# @devstashes" (a longer word), "# see @devstash docs"
 * (the word is not first) and "## @devstash" (a commented-out marker) are
 * not. The option text is what follows the word, up to a further '#' that
 * starts a note for the reader, trimmed of white space. */
int
scanner_is_marker(const char *src, const ds_comment *c,
                  Py_ssize_t *opt_start, Py_ssize_t *opt_end)
{
    const unsigned char *s = (const unsigned char *)src;
    Py_ssize_t i = c->start, end = c->end, a, b;

    if (i >= end || s[i] != '#')
        return 0;
    i++;
    while (i < end && is_line_space(s[i]))
        i++;
    if (end - i < DS_MARKER_WORD_LEN || memcmp(s + i, DS_MARKER_WORD, DS_MARKER_WORD_LEN) != 0)
        return 0;
    i += DS_MARKER_WORD_LEN;
    if (i < end && !is_line_space(s[i]))
        return 0;
    a = i;
    while (a < end && is_line_space(s[a]))
        a++;
    b = a;
    while (b < end && s[b] != '#')
        b++;
    while (b > a && is_line_space(s[b - 1]))
        b--;
    *opt_start = a;
    *opt_end = b;
    return 1;
}

int
scanner_is_near_marker(const char *src, const ds_comment *c)
{
    const unsigned char *s = (const unsigned char *)src;
    Py_ssize_t i = c->start, end = c->end, a, b;
    static const char word[] = "@devstash";
    const Py_ssize_t n = (Py_ssize_t)sizeof word - 1;

    if (i >= end || s[i] != '#' || scanner_is_marker(src, c, &a, &b))
        return 0;
    i++;
    while (i < end && (is_line_space(s[i]) || s[i] == '#'))
        i++;
    if (end - i < n)
        return 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        unsigned char ch = s[i + k];
        if (ch >= 'A' && ch <= 'Z')
            ch = (unsigned char)(ch - 'A' + 'a');
        if (ch != (unsigned char)word[k])
            return 0;
    }
    /* "@devstashed", "@devstash_cache": other words that happen to start so. */
    i += n;
    return i >= end || !(isalnum(s[i]) || s[i] == '_');
}

int
scanner_may_have_marker(const char *src, Py_ssize_t len)
{
    if (len < DS_MARKER_WORD_LEN)
        return 0;
    return memmem(src, (size_t)len, DS_MARKER_WORD, DS_MARKER_WORD_LEN) != NULL;
}

/* ---- Python-level functions ---- */

/* Gets a contiguous byte view of `source`; TypeError for str and other
 * non-buffers (PyObject_GetBuffer's own message). */
static int
scanner_get_buffer(PyObject *source, Py_buffer *view)
{
    if (PyUnicode_Check(source)) {
        PyErr_SetString(PyExc_TypeError,
                        "source must be a bytes-like object, not 'str' (encode it first)");
        return -1;
    }
    return PyObject_GetBuffer(source, view, PyBUF_SIMPLE);
}

typedef struct {
    const char *src;
    PyObject *list;
} ds_collect;

static int
collect_comment(void *ctx, const ds_comment *c)
{
    ds_collect *cl = ctx;
    PyObject *item = Py_BuildValue("(nn)", c->line, c->col);
    int rc;

    if (item == NULL)
        return -1;
    rc = PyList_Append(cl->list, item);
    Py_DECREF(item);
    return rc;
}

static int
collect_marker(void *ctx, const ds_comment *c)
{
    ds_collect *cl = ctx;
    Py_ssize_t a, b;
    PyObject *opts = NULL, *item = NULL;
    int rc = -1;

    if (!scanner_is_marker(cl->src, c, &a, &b))
        return 0;
    /* Source in another encoding must not make scanning fail: undecodable
     * bytes become U+FFFD and the option parser reports them. */
    opts = PyUnicode_DecodeUTF8(cl->src + a, b - a, "replace");
    if (opts == NULL)
        goto error;
    item = Py_BuildValue("(nnOO)", c->line, c->col, opts,
                         c->own_line ? Py_True : Py_False);
    if (item == NULL)
        goto error;
    rc = PyList_Append(cl->list, item);
error:
    Py_XDECREF(item);
    Py_XDECREF(opts);
    return rc;
}

static PyObject *
scanner_collect(PyObject *source, ds_comment_cb cb)
{
    Py_buffer view;
    ds_collect cl;
    PyObject *result = NULL;

    if (scanner_get_buffer(source, &view) < 0)
        return NULL;
    cl.src = view.buf;
    cl.list = PyList_New(0);
    if (cl.list == NULL)
        goto done;
    if (scanner_comments(view.buf, view.len, cb, &cl) < 0) {
        Py_CLEAR(cl.list);
        goto done;
    }
    result = cl.list;
done:
    PyBuffer_Release(&view);
    return result;
}

static int
collect_near_marker(void *ctx, const ds_comment *c)
{
    ds_collect *cl = ctx;
    if (!scanner_is_near_marker(cl->src, c))
        return 0;
    PyObject *text = PyUnicode_DecodeUTF8(cl->src + c->start, c->end - c->start, "replace");
    if (text == NULL)
        return -1;
    PyObject *item = Py_BuildValue("(nN)", c->line, text);
    if (item == NULL)
        return -1;
    int rc = PyList_Append(cl->list, item);
    Py_DECREF(item);
    return rc;
}

PyObject *
scanner_py_near_markers(PyObject *module, PyObject *source)
{
    DS_UNUSED(module);
    return scanner_collect(source, collect_near_marker);
}

PyObject *
scanner_py_comments(PyObject *module, PyObject *source)
{
    DS_UNUSED(module);
    return scanner_collect(source, collect_comment);
}

PyObject *
scanner_py_markers(PyObject *module, PyObject *source)
{
    DS_UNUSED(module);
    return scanner_collect(source, collect_marker);
}

PyObject *
scanner_py_has_marker(PyObject *module, PyObject *source)
{
    Py_buffer view;
    int found;

    DS_UNUSED(module);
    if (scanner_get_buffer(source, &view) < 0)
        return NULL;
    found = scanner_may_have_marker(view.buf, view.len);
    PyBuffer_Release(&view);
    return PyBool_FromLong(found);
}
