/* Code identity (keys_code.c): what a function, a method, a builtin or a
 * class contributes to a key, and the globals the user's code reads. */
#ifndef DEVSTASH_KEYS_CODE_H
#define DEVSTASH_KEYS_CODE_H

/* Included by keys_feed.h, after the types these use: include that. */

int feed_function(ds_hasher *h, PyObject *func, int with_code, PyTypeObject *owner);
int feed_method(ds_hasher *h, PyObject *m, int with_code);
/* A bound method's tag and function, without its receiver (the caller
 * feeds that: nested, or as a direct input). */
int feed_method_function(ds_hasher *h, PyObject *m, int with_code);
int feed_builtin(ds_hasher *h, PyObject *o, int with_self);
/* A class of the user's project by the code of all its methods, properties,
 * class-level data and project bases; any other class by what its __init__
 * runs. */
int feed_class_code(ds_hasher *h, PyTypeObject *t);
/* What calling a class or an instance runs (`attr`: __init__, __call__). */
int feed_entry_code(ds_hasher *h, PyObject *owner, PyObject *attr, int with_code);
int feed_code(ds_hasher *h, PyObject *code);
int feed_defaults(ds_hasher *h, PyFunctionObject *f);
int feed_helpers(ds_hasher *h, PyObject *globals, PyObject *names, int depth,
                 PyTypeObject *owner);
/* Fills `out` (out->names is a new reference) from a per-code-object cache. */
int code_info(ds_hasher *h, PyObject *code, CodeInfo *out);
/* Sets the folders whose code is not the user's (a tuple of str, stolen). */
void code_set_library_prefixes(PyObject *prefixes);

#endif /* DEVSTASH_KEYS_CODE_H */
