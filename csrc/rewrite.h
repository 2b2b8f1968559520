/* The rewriter: parses a source, finds its markers (scanner.c), parses their
 * options (options.c) and replaces each marked statement's value with a call
 * into the module's runtime object (runtime.c), keeping every location. */
#ifndef DEVSTASH_REWRITE_H
#define DEVSTASH_REWRITE_H

#include "util.h"

/* Name of the global that holds the runtime object in rewritten modules.
 * '@' cannot start a Python identifier, so it never collides with user
 * names and is never mangled inside classes. */
#define DS_RUNTIME_NAME "@devstash"

/* _core.rewrite(source: bytes, filename: str, resume_line: int = 0,
 *               tree: bool = False, original: code | None = None) -> (code, sites)
 * tree=True returns the rewritten ast.Module instead of code.
 * original: the code Python compiled from source, for a main script: the
 * unmarked functions and classes then keep it (outline.h) and are not
 * compiled a second time.
 * resume_line > 0: the script already ran up to the activate() call on that
 * line; the code holds the statements after it (and re-defines the marked
 * functions and classes defined before it). Raises MarkerError.
 * When there are markers, the code starts by binding its runtime:
 *   @devstash = devstash._runtime.runtime_for(filename, sites)
 * so it runs the same under activate(), the import hook and runpy. */
PyObject *rewrite_py_rewrite(PyObject *module, PyObject *args, PyObject *kwargs);

#endif /* DEVSTASH_REWRITE_H */
