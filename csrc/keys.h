/* Canonical, process-independent 128-bit hashing of Python values and of
 * callees: the "argument hash" and "name" halves of a cache key. */
#ifndef DEVSTASH_KEYS_H
#define DEVSTASH_KEYS_H

#include "util.h"

typedef struct ds_hasher ds_hasher;

/* Allocates a hasher (reusable: keys_reset before each key). NULL + MemoryError. */
ds_hasher *keys_new(void);
void keys_free(ds_hasher *h);

/* Starts a new key. `unhashable` collects the qualified type names of values
 * that could not be hashed and were keyed by type only; it is cleared here. */
void keys_reset(ds_hasher *h);

/* Feeds raw bytes (a tag or a name) into the key. */
void keys_update_bytes(ds_hasher *h, const void *data, size_t len);

/* Feeds one value, canonically: equal values give equal input whatever the
 * process, hash seed or dict/set iteration order, and values of different
 * types (1, 1.0, True, "1") never give the same input. Returns 0, or -1 with
 * an exception set when the value must not be cached at all (a cycle, too
 * deep a nesting): the caller then computes without caching. */
int keys_update_object(ds_hasher *h, PyObject *obj);

/* How a call is keyed: the marker's options. */
typedef struct {
    int with_code;      /* the user's code counts (no nocode) */
    int with_files;     /* paths count by the file they name (no nofiles) */
    PyObject *ignore;   /* tuple of str: parameter names, or "self" for the
                           receiver, left out of the key; NULL: none */
} ds_call_options;

/* Feeds a call: the callee's identity (see keys_update_callee), then its
 * positional and keyword arguments (vectorcall layout). The receiver and
 * the arguments are direct inputs: one that can be keyed by its type only,
 * or an iterator, makes the call uncacheable (-1, ValueError naming the
 * argument). */
int keys_update_call(ds_hasher *h, PyObject *callee, PyObject *const *args,
                     Py_ssize_t nargs, PyObject *kwnames, const ds_call_options *o);

/* Feeds a chain root(...).attr(...)[i]: the root's identity, the steps
 * (("c", args, kwargs), ("a", name), ("i", index)) and the files named by
 * the first call's arguments. */
int keys_update_chain(ds_hasher *h, PyObject *root, PyObject *steps, const ds_call_options *o);

/* The files named by a chain constructor's arguments (a tuple) and keyword
 * arguments (a dict or None), as keys_update_call adds them. */
int keys_update_paths(ds_hasher *h, PyObject *args, PyObject *kwargs);

/* Feeds a callee's identity: module and qualified name; for a bound method
 * also its receiver (hashed where possible, its type otherwise). When
 * `with_code` is set and the function is the user's own (see
 * keys_set_library_prefixes), its code too. */
int keys_update_callee(ds_hasher *h, PyObject *callee, int with_code);

/* Starts recording the key's parts: each argument, the receiver and its
 * attributes, the callee's code, each global and file gets a digest of its
 * own. Returns the list (label, digest) pairs are appended to (a new
 * reference), or NULL with an exception. The key fed this way is not the
 * ordinary key: record with a hasher of its own. */
PyObject *keys_record_parts(ds_hasher *h);

/* Writes the 16-byte digest of everything fed since keys_reset. */
void keys_digest(ds_hasher *h, unsigned char out[DS_DIGEST_SIZE]);

/* Type names substituted since keys_reset: a borrowed list, or NULL if none. */
PyObject *keys_unhashable(ds_hasher *h);

/* Folders whose code is not the user's own (stdlib, site-packages): a tuple
 * of str. Functions defined under them are keyed by name only. */
int keys_set_library_prefixes(PyObject *prefixes);

/* _core.hash_value(obj) -> bytes(16): digest of one value (tests, CLI). */
PyObject *keys_py_hash_value(PyObject *module, PyObject *obj);
/* _core.hash_call(callee, *args, **kwargs) -> bytes(16). */
PyObject *keys_py_hash_call(PyObject *module, PyObject *const *args,
                            Py_ssize_t nargsf, PyObject *kwnames);
/* _core.set_library_prefixes(tuple_of_str) -> None. */
PyObject *keys_py_set_library_prefixes(PyObject *module, PyObject *prefixes);

/* Interns the names the hasher looks up and adds two more functions:
 *   _core.hash_call_ex(callee, *args, **kwargs) -> (bytes, tuple[str, ...]):
 *       hash_call's key and the types keyed by type only (keys_unhashable);
 *   _core.hash_code(func) -> bytes | None: the code part of a function's
 *       key, None when the function is not the user's own (keyed by name). */
int keys_module_init(PyObject *module);

#endif /* DEVSTASH_KEYS_H */
