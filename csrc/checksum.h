/* The checksum of value records (record.c): XXH3-64, inlined from xxHash's
 * header like every other hash in the extension, so the built module links
 * no libxxhash. */
#ifndef DEVSTASH_CHECKSUM_H
#define DEVSTASH_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

/* XXH3-64 of p[0..len). */
uint64_t checksum_bytes(const void *p, size_t len);

/* XXH3-64 of head followed by src[0], ..., src[n-1], while copying each
 * src[i] (lens[i] bytes) to dst[i]: a slice is hashed, then copied while it
 * is still in the cache, so the whole costs about what the copy alone does.
 * Touches no Python object: callers may release the GIL around it. */
uint64_t checksum_copy(const void *head, size_t head_len, size_t n,
                       char *const *dst, const char *const *src, const size_t *lens);

#endif /* DEVSTASH_CHECKSUM_H */
