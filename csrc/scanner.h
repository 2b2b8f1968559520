/* Marker scanner: finds comment tokens in Python source by Python's lexical
 * rules (strings of every form, f-strings with nested quotes, continuations),
 * without building tokens. */
#ifndef DEVSTASH_SCANNER_H
#define DEVSTASH_SCANNER_H

#include "util.h"

typedef struct {
    Py_ssize_t line;        /* 1-based physical line, as tokenize counts them */
    Py_ssize_t col;         /* 0-based column in characters (code points), as tokenize */
    Py_ssize_t start;       /* byte offset of the '#' */
    Py_ssize_t end;         /* byte offset just past the comment (before the newline) */
    int own_line;           /* 1 if only white space precedes the '#' on its line */
} ds_comment;

/* Calls `cb` for each comment token of `src`, in order. Stops and returns -1
 * when `cb` does; returns 0 otherwise. Never reads outside src[0..len).
 * Source that Python would reject is scanned on a best-effort basis. */
typedef int (*ds_comment_cb)(void *ctx, const ds_comment *c);
int scanner_comments(const char *src, Py_ssize_t len, ds_comment_cb cb, void *ctx);

/* The same scan, also calling `line_cb` (when not NULL) for the start of
 * line 1 and of every line that begins outside any string or f-string: the
 * lines where a statement may begin (or a bracketed expression go on: the
 * scanner does not count brackets outside f-strings). `cb` may be NULL. */
typedef int (*ds_line_cb)(void *ctx, Py_ssize_t line, Py_ssize_t offset);
int scanner_scan(const char *src, Py_ssize_t len, ds_comment_cb cb, ds_line_cb line_cb,
                 void *ctx);

/* If the comment text src[c->start..c->end) is a devstash marker
 * ("#", optional spaces, "@devstash", then end or white space), returns 1 and
 * sets the byte range of the option text (trimmed); returns 0 otherwise. */
int scanner_is_marker(const char *src, const ds_comment *c,
                      Py_ssize_t *opt_start, Py_ssize_t *opt_end);

/* 1 if the comment looks meant as a marker but is not one: "@devstash" in
 * another case ("# @DevStash"), glued to what follows ("# @devstash:",
 * "# @devstash#ttl=1h") or after a second "#". Such comments are warned
 * about, as a linter would. */
int scanner_is_near_marker(const char *src, const ds_comment *c);

/* 1 if the bytes "@devstash" occur anywhere in src: the cheap pre-check. */
int scanner_may_have_marker(const char *src, Py_ssize_t len);

/* Python-level functions, registered in module.c. */
PyObject *scanner_py_comments(PyObject *module, PyObject *source);
PyObject *scanner_py_markers(PyObject *module, PyObject *source);
PyObject *scanner_py_has_marker(PyObject *module, PyObject *source);
PyObject *scanner_py_near_markers(PyObject *module, PyObject *source);

#endif /* DEVSTASH_SCANNER_H */
