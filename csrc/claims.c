/* Compute claims: see claims.h. */
#include "claims.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

int
claims_open(const char *folder)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/claims", folder);
    if (n < 0 || (size_t)n >= sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    /* Never through a link, and only a file of ours that nobody else can
     * write (see folder.h): the store checked the folder already. */
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()
        || (st.st_mode & (S_IWGRP | S_IWOTH))) {
        close(fd);
        errno = EPERM;
        return -1;
    }
    return fd;
}

/* The byte a key locks: 62 bits of the key, so distinct keys practically
 * never share one (sharing would only make one process wait needlessly). */
static off_t
claim_offset(const unsigned char key[DS_DIGEST_SIZE])
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | key[i];
    return (off_t)(v >> 2);
}

static int
claim_lock(int fd, const unsigned char key[DS_DIGEST_SIZE], short type)
{
    struct flock lock = {
        .l_type = type,
        .l_whence = SEEK_SET,
        .l_start = claim_offset(key),
        .l_len = 1,
        .l_pid = 0,   /* required by F_OFD_* */
    };
    return fcntl(fd, F_OFD_SETLK, &lock);
}

int
claims_try(int fd, const unsigned char key[DS_DIGEST_SIZE])
{
    if (claim_lock(fd, key, F_WRLCK) == 0)
        return 1;
    if (errno == EAGAIN || errno == EACCES)
        return 0;
    return -1;
}

void
claims_release(int fd, const unsigned char key[DS_DIGEST_SIZE])
{
    int saved = errno;
    (void)claim_lock(fd, key, F_UNLCK);
    errno = saved;
}
