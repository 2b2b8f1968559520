/* Compute claims: when two processes miss the same key at once, one
 * computes and the other waits for its result.
 *
 * A claim is an open-file-description lock (F_OFD_SETLK) on one byte of the
 * file "claims" in the cache folder, at an offset taken from the key. The
 * kernel drops it when its holder exits or dies, so a crashed computation
 * never leaves a stale claim behind, and taking or dropping one is a single
 * system call: cheap enough for every miss. */
#ifndef DEVSTASH_CLAIMS_H
#define DEVSTASH_CLAIMS_H

#include "util.h"

/* Opens (creating, mode 0600) the claims file in folder: an fd, or -1 with
 * errno set (EPERM: a file of someone else's, or one others may write; ELOOP:
 * a symbolic link). */
int claims_open(const char *folder);

/* 1: claimed by us; 0: another process holds it; -1: error (errno). */
int claims_try(int fd, const unsigned char key[DS_DIGEST_SIZE]);

/* Drops our claim on key (no error if we hold none). */
void claims_release(int fd, const unsigned char key[DS_DIGEST_SIZE]);

#endif /* DEVSTASH_CLAIMS_H */
