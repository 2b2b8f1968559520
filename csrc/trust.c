/* The cache folder's trust check (see trust.h). */
#include "trust.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

/* The files devstash opens in a cache folder (LMDB's two, the claims). */
static const char *const folder_files[] = {"data.mdb", "lock.mdb", "claims", NULL};

/* 1 (and `why` filled) when `st`, the stat of `what`, is not owned by the
 * effective user or is writable by group or others. */
static int
owned_privately(const struct stat *st, const char *what, const char *fix_path, int is_dir,
                char *why, size_t whylen)
{
    uid_t me = geteuid();
    if (st->st_uid != me) {
        snprintf(why, whylen,
                 "%s is owned by user id %lu, not by you (user id %lu): another user could "
                 "plant code in it that runs when a value is loaded; use a folder of your own "
                 "(set DEVSTASH_CACHE_DIR) or, if it is yours, chown %lu %s",
                 what, (unsigned long)st->st_uid, (unsigned long)me, (unsigned long)me, fix_path);
        return 1;
    }
    if (st->st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(why, whylen,
                 "%s has mode %04o: others can write it and plant code that runs when a value "
                 "is loaded; fix: chmod %s %s",
                 what, (unsigned)(st->st_mode & 07777), is_dir ? "700" : "600", fix_path);
        return 1;
    }
    return 0;
}

int
trust_check_folder(const char *folder, char *why, size_t whylen)
{
    char what[PATH_MAX + 64];
    int fd = open(folder, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ELOOP || errno == ENOTDIR) {
            struct stat lst;
            if (lstat(folder, &lst) == 0 && S_ISLNK(lst.st_mode)) {
                snprintf(why, whylen,
                         "the cache folder %s is a symbolic link: a link planted in a shared "
                         "folder would send your values, and the code devstash runs, to another "
                         "user's folder; fix: replace it with a folder of your own, or set "
                         "DEVSTASH_CACHE_DIR to the folder it points to", folder);
                return 1;
            }
        }
        return -1;
    }
    int rc = 0;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = -1;
        goto done;
    }
    snprintf(what, sizeof what, "the cache folder %s", folder);
    if ((rc = owned_privately(&st, what, folder, 1, why, whylen)) != 0)
        goto done;
    for (int i = 0; folder_files[i] != NULL; i++) {
        if (fstatat(fd, folder_files[i], &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT)
                continue;
            rc = -1;
            goto done;
        }
        char path[PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/%s", folder, folder_files[i]);
        if (!S_ISREG(st.st_mode)) {
            snprintf(why, whylen,
                     "%s is %s, not a file: writing through it would change another file, and "
                     "reading it could load another user's values; fix: delete it (rm %s)",
                     path, S_ISLNK(st.st_mode) ? "a symbolic link" : "not a regular file", path);
            rc = 1;
            goto done;
        }
        snprintf(what, sizeof what, "%s", path);
        if ((rc = owned_privately(&st, what, path, 0, why, whylen)) != 0)
            goto done;
    }
done:
    close(fd);
    return rc;
}

PyObject *
trust_py_check_folder(PyObject *module, PyObject *path)
{
    DS_UNUSED(module);
    PyObject *bytes = NULL;
    if (!PyUnicode_FSConverter(path, &bytes))
        return NULL;
    char why[2 * PATH_MAX + 512];
    int rc = trust_check_folder(PyBytes_AS_STRING(bytes), why, sizeof why);
    Py_DECREF(bytes);
    if (rc == 1)
        return PyUnicode_DecodeFSDefault(why);
    Py_RETURN_NONE;     /* trusted, or not there (yet) */
}
