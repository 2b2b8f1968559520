/* Outlining: what the rewrite of a main script need not compile again.
 *
 * Python compiled the whole main script before activate() ran. The rewrite
 * must compile the statements after activate() again, but the functions and
 * classes among them that hold no marker compile to exactly the code objects
 * Python made already. So their bodies are left out of the source that is
 * parsed (each becomes `pass`, on the same lines), and once the module is
 * compiled, Python's own code objects take the place of those stubs. On a
 * long script this turns a second full compile into a small one.
 *
 * Every step is checked: a stub whose original cannot be found, or a reduced
 * module whose top-level statements do not cover every line Python's module
 * code runs, makes the caller rewrite the full source instead. */
#ifndef DEVSTASH_OUTLINE_H
#define DEVSTASH_OUTLINE_H

#include "util.h"

/* The source with the bodies of unmarked top-level functions and classes
 * after resume_line stubbed out, as a new bytes object; *stubs receives a
 * new list of (name, firstlineno, original code) for each. `original` is
 * the module code Python compiled from src; `marker_lines` (sorted) the
 * lines holding markers. Returns NULL with an exception on failure; when
 * there is nothing to stub, returns a new reference to Py_None. */
PyObject *outline_reduce(const char *src, Py_ssize_t len, PyObject *original, long resume_line,
                         const long *marker_lines, Py_ssize_t nmarkers, PyObject **stubs);

/* Checks that `body` (the final module statements) covers every line after
 * resume_line that the original module code runs. 1 yes, 0 no, -1 error. */
int outline_covers(PyObject *body, PyObject *original, long resume_line);

/* code with each stub's code object replaced by its original: a new code
 * object, Py_None (a new reference) when a stub is missing, NULL on error. */
PyObject *outline_restore(PyObject *code, PyObject *stubs);

#endif /* DEVSTASH_OUTLINE_H */
