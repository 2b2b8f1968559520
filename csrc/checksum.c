/* The checksum of value records: see checksum.h. */
#include "checksum.h"

#include <string.h>

#define XXH_INLINE_ALL   /* header-only: also gives XXH3_state_t on the stack */
#include <xxhash.h>

/* What is hashed then copied at a time: well inside the L2 cache. */
#define SLICE ((size_t)1 << 16)

uint64_t
checksum_bytes(const void *p, size_t len)
{
    return XXH3_64bits(p, len);
}

uint64_t
checksum_copy(const void *head, size_t head_len, size_t n,
              char *const *dst, const char *const *src, const size_t *lens)
{
    XXH3_state_t st;
    (void)XXH3_64bits_reset(&st);
    (void)XXH3_64bits_update(&st, head, head_len);
    for (size_t i = 0; i < n; i++) {
        for (size_t done = 0; done < lens[i]; done += SLICE) {
            size_t k = lens[i] - done < SLICE ? lens[i] - done : SLICE;
            (void)XXH3_64bits_update(&st, src[i] + done, k);
            memcpy(dst[i] + done, src[i] + done, k);
        }
    }
    return XXH3_64bits_digest(&st);
}
