/* The byte formats of the store's records (see record.h).
 *
 * Tables (named LMDB databases; integers little-endian, "varint" = LEB128):
 *   values  key(16) -> u8 0xD6 (magic, format 2) | u64 checksum |
 *                      f64 created | varint pickle_len | varint nbuffers |
 *                      nbuffers x u64 end offset of buffer i within the
 *                      buffer data | pickle | buffer 0 | buffer 1 | ...
 *           The checksum is XXH3-64 of everything after it (creation time,
 *           lengths, pickle and buffers): one flipped bit in data.mdb and
 *           the record reads as damaged, never as another value. A lookup
 *           verifies it before anything is unmarshalled or unpickled (XXH3
 *           reads ~20 GB/s: 5 ms for 100 MB). Records of format 1 (magic
 *           0xD5, no checksum) read as absent, so they are recomputed.
 *           Cumulative end offsets give buffer i in O(1), and the lookup
 *           checks them once against the record size.
 *   meta    key(16) -> u8 1 (version) | u8 flags | f64 created | f64 compute |
 *                      [f64 ttl] | [f64 last_hit] | varint size | varint hits |
 *                      either (META_INLINE) varint callee_len, callee, site
 *                      or u64 id of a "sites" record.
 *   sites   u64 id  -> varint callee_len | callee | site.  Many entries share
 *           one marked line: storing its strings once keeps an entry's
 *           bookkeeping small (the benchmark allows 200 bytes per entry).
 *           Site records are never deleted: there is one per marked line.
 *   code    key(16) -> u8 0xC5 | u64 checksum | data (the rewriter's
 *           compiled-code cache, which replaces a whole script, and what the
 *           policy layer remembers). The checksum is XXH3-64 of data; a
 *           record without one (an older devstash's) or that fails it reads
 *           as absent.
 */
#include "record.h"
#include "checksum.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

/* Inline below this size (no call, no dispatch); the library above. */
#define INLINE_HASH_MAX ((size_t)1 << 16)

uint64_t
record_checksum(const unsigned char *p, size_t len)
{
    return len < INLINE_HASH_MAX ? XXH3_64bits(p, len) : checksum_bytes(p, len);
}

int
record_parse(const unsigned char *p, size_t size, ds_record *rec, int later)
{
    const unsigned char *start = p, *end = p + size;
    uint64_t pickle_len, nbuf;

    if (size >= 1 && p[0] == VALUES_MAGIC_V1)
        return RECORD_ABSENT;
    if (size < RECORD_FIXED || p[0] != VALUES_MAGIC)
        return RECORD_DAMAGED;
    uint64_t checksum = get_u64(p + 1);
    double created = get_f64(p + 9);
    p += RECORD_FIXED;
    if (get_varint(&p, end, &pickle_len) < 0 || get_varint(&p, end, &nbuf) < 0)
        return RECORD_DAMAGED;
    size_t left = (size_t)(end - p);
    if (nbuf > UINT32_MAX || nbuf > left / 8)
        return RECORD_DAMAGED;
    const unsigned char *table = p;
    p += nbuf * 8;
    left = (size_t)(end - p);
    if (pickle_len > left)
        return RECORD_DAMAGED;
    size_t data_len = left - (size_t)pickle_len;
    uint64_t prev = 0;
    for (uint64_t i = 0; i < nbuf; i++) {
        uint64_t e = get_u64(table + 8 * i);
        if (e < prev || e > data_len)
            return RECORD_DAMAGED;
        prev = e;
    }
    if (prev != data_len)
        return RECORD_DAMAGED;
    const unsigned char *data = p + pickle_len;
    rec->checksum = checksum;
    rec->head = start + 9;
    rec->head_len = (size_t)(data - rec->head);
    rec->verified = !later || data_len < RECORD_VERIFY_LATER;
    if (rec->verified && record_checksum(start + 9, size - 9) != checksum)
        return RECORD_DAMAGED;
    rec->created = created;
    rec->pickle = (const char *)p;
    rec->pickle_len = (size_t)pickle_len;
    rec->nbuffers = (uint32_t)nbuf;
    rec->buffer_table = table;
    rec->buffer_data = (const char *)data;
    return RECORD_OK;
}

size_t
record_header_size(uint64_t pickle_len, uint64_t nbuffers)
{
    return RECORD_FIXED + varint_size(pickle_len) + varint_size(nbuffers) + 8 * (size_t)nbuffers;
}

unsigned char *
record_put_header(unsigned char *p, double created, uint64_t pickle_len, uint64_t nbuffers)
{
    p[0] = VALUES_MAGIC;
    put_u64(p + 1, 0);
    put_f64(p + 9, created);
    p = put_varint(p + RECORD_FIXED, pickle_len);
    return put_varint(p, nbuffers);
}

void
record_seal(unsigned char *p, size_t size)
{
    put_u64(p + 1, record_checksum(p + 9, size - 9));
}

void
code_seal(unsigned char *p, size_t size)
{
    p[0] = CODE_MAGIC;
    put_u64(p + 1, record_checksum(p + CODE_HEADER, size - CODE_HEADER));
}

int
code_parse(const unsigned char *p, size_t size, const unsigned char **data, size_t *len)
{
    if (size < CODE_HEADER || p[0] != CODE_MAGIC
        || record_checksum(p + CODE_HEADER, size - CODE_HEADER) != get_u64(p + 1))
        return 0;
    *data = p + CODE_HEADER;
    *len = size - CODE_HEADER;
    return 1;
}

void
store_record_buffer(const ds_record *rec, uint32_t i, const char **data, size_t *len)
{
    if (i >= rec->nbuffers || !rec->verified) {
        *data = NULL;
        *len = 0;
        return;
    }
    uint64_t start = i > 0 ? get_u64(rec->buffer_table + 8 * (size_t)(i - 1)) : 0;
    uint64_t end = get_u64(rec->buffer_table + 8 * (size_t)i);
    *data = rec->buffer_data + start;
    *len = (size_t)(end - start);
}

size_t
site_blob_size(const ds_meta *m)
{
    return varint_size(m->callee_len) + m->callee_len + m->site_len;
}

void
site_blob_encode(const ds_meta *m, unsigned char *p)
{
    p = put_varint(p, m->callee_len);
    if (m->callee_len)
        memcpy(p, m->callee, m->callee_len);
    if (m->site_len)
        memcpy(p + m->callee_len, m->site, m->site_len);
}

int
site_blob_decode(const unsigned char *p, size_t size, ds_meta *m)
{
    const unsigned char *end = p + size;
    uint64_t n;
    if (get_varint(&p, end, &n) < 0 || n > (uint64_t)(end - p))
        return -1;
    m->callee = (const char *)p;
    m->callee_len = (size_t)n;
    m->site = (const char *)(p + n);
    m->site_len = (size_t)(end - p) - (size_t)n;
    return 0;
}

size_t
meta_size(const ds_meta *m)
{
    size_t n = 2 + 8 + 8 + varint_size(m->size) + varint_size(m->hits);
    if (m->ttl != 0.0)
        n += 8;
    if (m->hits > 0)
        n += 8;
    return n + (m->inline_site ? site_blob_size(m) : 8);
}

void
meta_encode(const ds_meta *m, unsigned char *p)
{
    unsigned char flags = (m->ttl != 0.0 ? META_TTL : 0)
                        | (m->hits > 0 ? META_LAST_HIT : 0)
                        | (m->inline_site ? META_INLINE : 0);
    p[0] = META_VERSION;
    p[1] = flags;
    put_f64(p + 2, m->created);
    put_f64(p + 10, m->compute);
    p += 18;
    if (flags & META_TTL) {
        put_f64(p, m->ttl);
        p += 8;
    }
    if (flags & META_LAST_HIT) {
        put_f64(p, m->last_hit);
        p += 8;
    }
    p = put_varint(p, m->size);
    p = put_varint(p, m->hits);
    if (m->inline_site)
        site_blob_encode(m, p);
    else
        put_u64(p, m->site_id);
}

/* 0, or -1 when the record is malformed. Strings point into the record. */
int
meta_decode(const unsigned char *p, size_t size, ds_meta *m)
{
    const unsigned char *end = p + size;

    memset(m, 0, sizeof *m);
    if (size < 18 || p[0] != META_VERSION)
        return -1;
    unsigned char flags = p[1];
    m->created = get_f64(p + 2);
    m->compute = get_f64(p + 10);
    p += 18;
    if (flags & META_TTL) {
        if (end - p < 8)
            return -1;
        m->ttl = get_f64(p);
        p += 8;
    }
    if (flags & META_LAST_HIT) {
        if (end - p < 8)
            return -1;
        m->last_hit = get_f64(p);
        p += 8;
    }
    if (get_varint(&p, end, &m->size) < 0 || get_varint(&p, end, &m->hits) < 0)
        return -1;
    m->inline_site = (flags & META_INLINE) != 0;
    if (m->inline_site)
        return site_blob_decode(p, (size_t)(end - p), m);
    if (end - p != 8)
        return -1;
    m->site_id = get_u64(p);
    return 0;
}
