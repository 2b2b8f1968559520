/* The cache folder as a security boundary: see folder.h. */
#include "folder.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

/* Messages are cut at their buffers' size, which only a path of thousands of
 * bytes reaches: better than failing to say anything. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

PyObject *ds_UnsafeFolderError = NULL;

/* The files devstash opens in a cache folder: LMDB's two and the claims
 * file (claims.c). Leftover folders of `devstash compact` are checked when
 * they are opened, as any folder. */
static const char *const folder_files[] = {"data.mdb", "lock.mdb", "claims", NULL};

#define WRITABLE_BY_OTHERS (S_IWGRP | S_IWOTH)

int
folder_make(char *path)
{
    if (mkdir(path, 0700) == 0)
        return chmod(path, 0700);   /* whatever the umask */
    if (errno == EEXIST)
        return 0;
    if (errno != ENOENT)
        return -1;
    char *slash = strrchr(path, '/');
    if (slash == NULL || slash == path)
        return -1;
    *slash = '\0';
    int r = folder_make(path);
    *slash = '/';
    if (r < 0)
        return -1;
    if (mkdir(path, 0700) == 0)
        return chmod(path, 0700);
    return errno == EEXIST ? 0 : -1;
}

/* " (alice)" for a uid with a name here, else "". */
static void
uid_name(uid_t uid, char *out, size_t size)
{
    struct passwd *pw = getpwuid(uid);
    if (pw != NULL && pw->pw_name != NULL)
        snprintf(out, size, " (%s)", pw->pw_name);
    else
        out[0] = '\0';
}

static const char *
writers(mode_t mode)
{
    if ((mode & S_IWGRP) && (mode & S_IWOTH))
        return "group and others";
    return (mode & S_IWGRP) ? "its group" : "others";
}

/* Fills why for st (of the folder when is_dir, else of a file in it) if it
 * is not ours or others may write it; 0 when it passes. */
static int
check_stat(const struct stat *st, const char *shown, const char *folder, int is_dir,
           ds_unsafe *why)
{
    uid_t me = geteuid();
    char owner[128];

    if (st->st_uid != me) {
        uid_name(st->st_uid, owner, sizeof owner);
        snprintf(why->problem, sizeof why->problem,
                 "%s %s is owned by user id %u%s, not by you (user id %u): its owner could "
                 "plant values there that run code as you when loaded",
                 is_dir ? "the cache folder" : "the file", shown, (unsigned)st->st_uid, owner,
                 (unsigned)me);
        snprintf(why->fix, sizeof why->fix,
                 "use a cache folder of your own (DEVSTASH_CACHE_DIR), or, if it is yours, "
                 "`chown -R %u %s`; else remove it (`rm -r %s`)",
                 (unsigned)me, folder, folder);
        return -1;
    }
    if (st->st_mode & WRITABLE_BY_OTHERS) {
        snprintf(why->problem, sizeof why->problem,
                 "%s %s has mode %04o: %s can write it, and could plant values there that "
                 "run code as you when loaded",
                 is_dir ? "the cache folder" : "the file", shown,
                 (unsigned)(st->st_mode & 07777), writers(st->st_mode));
        snprintf(why->fix, sizeof why->fix, "`chmod %s %s`", is_dir ? "700" : "600", shown);
        return -1;
    }
    return 0;
}

static void
describe_link(const char *shown, const char *target_of, int is_dir, const char *folder,
              ds_unsafe *why)
{
    char target[PATH_MAX];
    ssize_t n = readlink(target_of, target, sizeof target - 1);
    if (n < 0)
        n = 0;
    target[n] = '\0';
    snprintf(why->problem, sizeof why->problem,
             "%s %s is a symbolic link%s%s%s: devstash does not follow links in a cache "
             "folder (whoever placed it chooses what gets loaded or overwritten)",
             is_dir ? "the cache folder" : "the file", shown,
             n ? " (to " : "", target, n ? ")" : "");
    if (is_dir)
        snprintf(why->fix, sizeof why->fix,
                 "remove the link (`rm %s`; devstash then creates a real folder), or set "
                 "DEVSTASH_CACHE_DIR to the folder itself if it is yours", shown);
    else
        snprintf(why->fix, sizeof why->fix, "`rm %s` (devstash recreates it), or remove "
                 "the folder (`rm -r %s`)", shown, folder);
}

int
folder_check_fd(int fd, const char *shown, ds_unsafe *why)
{
    struct stat st;

    why->problem[0] = why->fix[0] = '\0';
    if (fstat(fd, &st) < 0)
        return -1;
    if (!S_ISREG(st.st_mode)) {
        snprintf(why->problem, sizeof why->problem, "%s is not a regular file", shown);
        snprintf(why->fix, sizeof why->fix, "remove it (`rm -r %s`)", shown);
        return -1;
    }
    return check_stat(&st, shown, shown, 0, why);
}

int
folder_check_entry(int dirfd, const char *folder, const char *name, ds_unsafe *why)
{
    struct stat st;
    char shown[PATH_MAX + 64];

    why->problem[0] = why->fix[0] = '\0';
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : -1;
    snprintf(shown, sizeof shown, "%s/%s", folder, name);
    if (S_ISLNK(st.st_mode)) {
        char link[PATH_MAX + 64];
        /* readlink through the opened folder: /proc/self/fd/N/name */
        snprintf(link, sizeof link, "/proc/self/fd/%d/%s", dirfd, name);
        describe_link(shown, link, 0, folder, why);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why->problem, sizeof why->problem, "%s is not a regular file", shown);
        snprintf(why->fix, sizeof why->fix, "remove it (`rm -r %s`)", shown);
        return -1;
    }
    return check_stat(&st, shown, folder, 0, why);
}

int
folder_open_checked(const char *path, ds_unsafe *why)
{
    struct stat st;

    why->problem[0] = why->fix[0] = '\0';
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        if ((err == ELOOP || err == ENOTDIR) && lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
            describe_link(path, path, 1, path, why);
            err = EPERM;
        }
        errno = err;
        return -1;
    }
    if (fstat(fd, &st) < 0)
        goto failed;
    if (check_stat(&st, path, path, 1, why) < 0) {
        errno = EPERM;
        goto failed;
    }
    for (const char *const *name = folder_files; *name != NULL; name++) {
        if (folder_check_entry(fd, path, *name, why) < 0) {
            if (why->problem[0])
                errno = EPERM;
            goto failed;
        }
    }
    return fd;

failed: {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
}

void
folder_raise(const ds_unsafe *why)
{
    /* OSError(errno, strerror) would print "[Errno 1] ..." first: the
     * message alone, then errno, problem and fix as attributes. */
    PyObject *exc, *msg = PyUnicode_FromFormat("%s; fix: %s", why->problem, why->fix);
    if (msg == NULL)
        return;
    exc = PyObject_CallOneArg(ds_UnsafeFolderError, msg);
    Py_DECREF(msg);
    if (exc == NULL)
        return;
    PyObject *num = PyLong_FromLong(EPERM);
    PyObject *problem = PyUnicode_DecodeFSDefault(why->problem);
    PyObject *fix = PyUnicode_DecodeFSDefault(why->fix);
    PyObject *text = PyObject_Str(exc);
    /* strerror too: the policy layer words an EPERM with one as a refusal
     * ("not using the cache: ..."). */
    if (num != NULL && problem != NULL && fix != NULL && text != NULL
        && PyObject_SetAttrString(exc, "errno", num) == 0
        && PyObject_SetAttrString(exc, "strerror", text) == 0
        && PyObject_SetAttrString(exc, "problem", problem) == 0
        && PyObject_SetAttrString(exc, "fix", fix) == 0)
        PyErr_SetObject(ds_UnsafeFolderError, exc);
    Py_XDECREF(num);
    Py_XDECREF(problem);
    Py_XDECREF(fix);
    Py_XDECREF(text);
    Py_DECREF(exc);
}

PyObject *
folder_py_check(PyObject *self, PyObject *arg)
{
    PyObject *path = NULL, *fspath = NULL, *result = NULL;
    ds_unsafe why;

    DS_UNUSED(self);
    if (!PyUnicode_FSDecoder(arg, &path))
        return NULL;
    if ((fspath = PyUnicode_EncodeFSDefault(path)) == NULL)
        goto done;
    char buf[PATH_MAX];
    size_t n = (size_t)PyBytes_GET_SIZE(fspath);
    if (n >= sizeof buf || n == 0) {
        errno = n ? ENAMETOOLONG : ENOENT;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        goto done;
    }
    memcpy(buf, PyBytes_AS_STRING(fspath), n + 1);
    while (n > 1 && buf[n - 1] == '/')
        buf[--n] = '\0';
    int fd = folder_open_checked(buf, &why);
    if (fd >= 0) {
        close(fd);
        result = Py_NewRef(Py_None);
    }
    else if (why.problem[0])
        result = Py_BuildValue("(NN)", PyUnicode_DecodeFSDefault(why.problem),
                               PyUnicode_DecodeFSDefault(why.fix));
    else if (errno == ENOENT)
        result = Py_NewRef(Py_None);
    else
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
done:
    Py_XDECREF(path);
    Py_XDECREF(fspath);
    return result;
}
