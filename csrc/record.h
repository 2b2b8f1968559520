/* The byte formats of the store's records: what a value and its metadata
 * look like inside LMDB. Pure functions over bytes: no LMDB, no Python
 * objects. See record.c for the layouts. */
#ifndef DEVSTASH_RECORD_H
#define DEVSTASH_RECORD_H

#include "store.h"

#define VALUES_MAGIC 0xD6       /* format 2: with a checksum */
#define VALUES_MAGIC_V1 0xD5    /* format 1, before checksums: read as absent */
#define RECORD_FIXED 17         /* magic, checksum, created */
#define META_VERSION 1
#define META_TTL 1          /* ttl follows */
#define META_LAST_HIT 2     /* last_hit follows */
#define META_INLINE 4       /* callee and site inline, not in "sites" */
#define VARINT_MAX 10

/* ---- small encoders: integers little-endian, varints LEB128 ------------- */

static inline void
put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint64_t
get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static inline void
put_f64(unsigned char *p, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v);
    put_u64(p, v);
}

static inline double
get_f64(const unsigned char *p)
{
    uint64_t v = get_u64(p);
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}

static inline size_t
varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline unsigned char *
put_varint(unsigned char *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    return p;
}

/* Reads a varint from [*p, end); 0 or -1 if truncated or overlong. */
static inline int
get_varint(const unsigned char **p, const unsigned char *end, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return -1;
        unsigned char b = *(*p)++;
        if (shift == 63 && b > 1)
            return -1;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* ---- value records ------------------------------------------------------ */

enum {
    RECORD_DAMAGED = -1,    /* this format, but the checksum or a length is wrong */
    RECORD_ABSENT = 0,      /* a record of the older format: recomputed */
    RECORD_OK = 1,
};

/* Buffer data from this size on has its checksum verified while it is
 * copied out (store_record_copy_buffers), not by the lookup. */
#define RECORD_VERIFY_LATER ((size_t)1 << 20)

/* Parses a values record: RECORD_OK (rec filled), RECORD_ABSENT or
 * RECORD_DAMAGED. Every length is checked against the record size before
 * anything is read. The checksum is verified here (rec->verified) unless
 * later is set and the buffers are large: then rec holds what the copy
 * verifies. */
int record_parse(const unsigned char *p, size_t size, ds_record *rec, int later);

/* XXH3-64 of the checksummed bytes: what the header's checksum must be. */
uint64_t record_checksum(const unsigned char *p, size_t len);

/* The size of a record's header and buffer table. */
size_t record_header_size(uint64_t pickle_len, uint64_t nbuffers);

/* Writes a record's header, its checksum left for record_seal; returns
 * where the buffer table (nbuffers x u64 end offsets) goes, followed by the
 * pickle and the buffers. */
unsigned char *record_put_header(unsigned char *p, double created, uint64_t pickle_len,
                                 uint64_t nbuffers);

/* Computes and writes the checksum of a filled record of size bytes. */
void record_seal(unsigned char *p, size_t size);

/* ---- code records --------------------------------------------------------- */

#define CODE_MAGIC 0xC5
#define CODE_HEADER 9           /* magic, checksum */

/* Writes the header of a code record of size bytes whose data (after the
 * header) is in place. */
void code_seal(unsigned char *p, size_t size);

/* 1 and the data of a code record whose checksum matches; 0 otherwise. */
int code_parse(const unsigned char *p, size_t size, const unsigned char **data, size_t *len);

/* ---- metadata records ---------------------------------------------------- */

typedef struct {
    double created, compute, ttl, last_hit;
    uint64_t size, hits;
    int inline_site;
    uint64_t site_id;
    const char *callee;
    size_t callee_len;
    const char *site;
    size_t site_len;
} ds_meta;

/* A "sites" record: callee and site of a marked line. */
size_t site_blob_size(const ds_meta *m);
void site_blob_encode(const ds_meta *m, unsigned char *p);
int site_blob_decode(const unsigned char *p, size_t size, ds_meta *m);

size_t meta_size(const ds_meta *m);
void meta_encode(const ds_meta *m, unsigned char *p);
/* 0, or -1 when the record is malformed. Strings point into the record. */
int meta_decode(const unsigned char *p, size_t size, ds_meta *m);

#endif /* DEVSTASH_RECORD_H */
