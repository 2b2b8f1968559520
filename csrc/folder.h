/* The cache folder as a security boundary.
 *
 * Stored values are pickles, and loading a pickle runs code: whoever can
 * write the cache folder can make the user's scripts run their code. So, as
 * ssh treats ~/.ssh, the folder and the files opened in it must belong to the
 * current (effective) user and be writable by nobody else, and none of them
 * may be a symbolic link (a planted lock.mdb -> ~/important.txt would have
 * LMDB overwrite that file). The checks go by what was opened (O_NOFOLLOW,
 * then fstat on the descriptor) or by fstatat(AT_SYMLINK_NOFOLLOW) inside the
 * opened folder, never by following a path. */
#ifndef DEVSTASH_FOLDER_H
#define DEVSTASH_FOLDER_H

#include "util.h"

/* What is wrong and how to fix it, as the warning and `devstash doctor`
 * say it. problem[0] == 0: nothing found (a system call failed instead). */
typedef struct {
    char problem[1024];
    char fix[1024];
} ds_unsafe;

/* Raised when a folder or a file in it fails the checks: a subclass of
 * StoreError (and so of OSError, errno EPERM). Created by
 * store_module_init. */
extern PyObject *ds_UnsafeFolderError;

/* Creates path and its missing parents with mode 0700 whatever the umask.
 * 0, or -1 with errno. path is modified and restored. */
int folder_make(char *path);

/* Opens the folder path without following a link at its end, and checks it
 * and the files devstash opens in it (data.mdb, lock.mdb, claims). Returns
 * the folder's descriptor; or -1 with errno set: with why->problem filled
 * (errno EPERM) when something is unsafe, empty when the folder cannot be
 * opened at all. */
int folder_open_checked(const char *path, ds_unsafe *why);

/* Checks name inside the opened folder dirfd without following it: absent,
 * or a regular file of ours that nobody else may write. 0; or -1 with why
 * filled (unsafe) or errno set and why empty (a failing system call).
 * folder is the folder's path, for messages. */
int folder_check_entry(int dirfd, const char *folder, const char *name, ds_unsafe *why);

/* Checks a file opened by descriptor the same way; shown is its path. */
int folder_check_fd(int fd, const char *shown, ds_unsafe *why);

/* Sets UnsafeFolderError("<problem>; fix: <fix>") with attributes problem
 * and fix. */
void folder_raise(const ds_unsafe *why);

/* check_folder(path) -> None | (problem, fix): for `devstash doctor` and
 * the command's messages. None also when the folder does not exist;
 * OSError when it cannot be examined. */
PyObject *folder_py_check(PyObject *self, PyObject *arg);

#endif /* DEVSTASH_FOLDER_H */
