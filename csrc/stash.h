/* Stash records: the lean record types behind devstash.Stash.
 *
 * A record type is a heap type made here from a field list: the fields sit
 * inline at fixed offsets, each with a member descriptor, and an instance has
 * no __dict__, no weakref slot and no GC header unless its class asks. C
 * holds the layout and the hot paths (construction, equality, hash, repr,
 * pickling); devstash/_stash.py decides what the fields and options are. */
#ifndef DEVSTASH_STASH_H
#define DEVSTASH_STASH_H

#include "util.h"

/* Option bits of stash_type's flags. */
#define STASH_FREEZE 1
#define STASH_WEAKREF 2
#define STASH_GC 4

/* Kinds of field storage (stash_type's kinds): a reference, or compact
 * (unboxed) storage of an int (int64), a float (double) or a bool (char). */
#define STASH_OBJECT 0
#define STASH_INT 1
#define STASH_FLOAT 2
#define STASH_BOOL 3

/* str values of at most this many characters are interned on construction
 * (labels, names, codes repeat; long text rarely does). Not on 3.12, where
 * an interned str is immortal: records of distinct ids would never free
 * them (3.10, 3.11 and 3.13 on free an interned str like any other). */
#define STASH_INTERN_MAX 32
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000
#define STASH_INTERN 0
#else
#define STASH_INTERN 1
#endif

/* stash_type(name, qualname, fields, kinds, defaults, flags, base, namespace,
 * signature=None) -> type: a new record type (module function, METH_VARARGS | METH_KEYWORDS). */
PyObject *stash_py_type(PyObject *module, PyObject *args, PyObject *kwargs);

/* Creates the module-level objects stash.c needs; 0, or -1 with an
 * exception set. */
int stash_module_init(PyObject *module);

#endif /* DEVSTASH_STASH_H */
