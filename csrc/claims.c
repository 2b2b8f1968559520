/* Compute claims: see claims.h. */
#include "claims.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
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
    return open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
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
