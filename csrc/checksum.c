/* The checksum of value records: see checksum.h. */
#include "checksum.h"

#include <string.h>

#define XXH_STATIC_LINKING_ONLY   /* XXH3_state_t on the stack */
#include <xxhash.h>
#ifdef DS_HAVE_XXH_DISPATCH
#include <xxh_x86dispatch.h>
#define HASH XXH3_64bits_dispatch
#define UPDATE XXH3_64bits_update_dispatch
#else
#define HASH XXH3_64bits
#define UPDATE XXH3_64bits_update
#endif

/* What is hashed then copied at a time: well inside the L2 cache. */
#define SLICE ((size_t)1 << 16)

uint64_t
checksum_bytes(const void *p, size_t len)
{
    return HASH(p, len);
}

uint64_t
checksum_copy(const void *head, size_t head_len, size_t n,
              char *const *dst, const char *const *src, const size_t *lens)
{
    XXH3_state_t st;
    (void)XXH3_64bits_reset(&st);
    (void)UPDATE(&st, head, head_len);
    for (size_t i = 0; i < n; i++) {
        for (size_t done = 0; done < lens[i]; done += SLICE) {
            size_t k = lens[i] - done < SLICE ? lens[i] - done : SLICE;
            (void)UPDATE(&st, src[i] + done, k);
            memcpy(dst[i] + done, src[i] + done, k);
        }
    }
    return XXH3_64bits_digest(&st);
}
