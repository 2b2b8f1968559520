/* Whether a cache folder may be trusted: loading a value unpickles it, and
 * the code cache holds code that runs, so a folder someone else can write
 * is a way to run code as its user. Treated as ssh treats ~/.ssh. */
#ifndef DEVSTASH_TRUST_H
#define DEVSTASH_TRUST_H

#include "util.h"

/* Checks `folder` and the files LMDB and the claims open in it: the folder
 * itself no symbolic link, every one of them owned by the effective user
 * and writable by no group or other user, the files regular files (no
 * symbolic links). Checks what was opened (O_NOFOLLOW, fstat), never a path
 * twice. Returns 0 when trusted; 1 when not, with one sentence in `why`
 * that names the folder or file, what was found, and the fix; -1 when the
 * folder cannot be opened (errno set). Sets no Python exception. */
int trust_check_folder(const char *folder, char *why, size_t whylen);

/* _core.check_folder(path: str) -> str | None: why the folder is not
 * trusted, or None (also when it does not exist yet). */
PyObject *trust_py_check_folder(PyObject *module, PyObject *path);

#endif /* DEVSTASH_TRUST_H */
