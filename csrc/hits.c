/* Pending hit counts, kept in a shared-mapped file of the cache folder so a
 * killed process leaves them behind: see hits.h. */
#include "hits.h"
#include "folder.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HITS_MAGIC "DSHITS01"
#define HEADER_SIZE 64
#define FIRST_CAP 128

/* The header: magic, record size, records in use. */
typedef struct {
    char magic[8];
    uint32_t record_size;
    uint32_t unused;
    uint64_t n;
} hits_header;

static size_t
key_hash(const unsigned char *key)
{
    uint64_t a, b;
    memcpy(&a, key, 8);
    memcpy(&b, key + 8, 8);
    uint64_t x = a ^ (b * 0x9E3779B97F4A7C15u);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9u;
    x ^= x >> 29;
    return (size_t)x;
}

void
hits_init(ds_hits *h)
{
    memset(h, 0, sizeof *h);
    h->fd = -1;
}

ds_hitrec *
hits_find(const ds_hits *h, const unsigned char key[DS_DIGEST_SIZE])
{
    if (h->nslots == 0)
        return NULL;
    size_t mask = h->nslots - 1;
    for (size_t i = key_hash(key) & mask;; i = (i + 1) & mask) {
        uint32_t r = h->slots[i];
        if (r == 0)
            return NULL;
        if (memcmp(h->recs[r - 1].key, key, DS_DIGEST_SIZE) == 0)
            return &h->recs[r - 1];
    }
}

/* Rebuilds the key index with room for twice the records. */
static int
hits_grow_slots(ds_hits *h)
{
    size_t nslots = h->nslots ? h->nslots * 2 : 2 * FIRST_CAP;
    uint32_t *slots = PyMem_Calloc(nslots, sizeof *slots);
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t r = 0; r < h->n; r++) {
        size_t i = key_hash(h->recs[r].key) & (nslots - 1);
        while (slots[i] != 0)
            i = (i + 1) & (nslots - 1);
        slots[i] = (uint32_t)(r + 1);
    }
    PyMem_Free(h->slots);
    h->slots = slots;
    h->nslots = nslots;
    return 0;
}

/* Gives the file real blocks from `from` to `to`: a write through the map
 * to a block a full disk cannot give is SIGBUS, not an error. Where that
 * cannot be promised (no fallocate), the counts stay in memory. */
static int
hits_allocate(int fd, size_t from, size_t to)
{
    return fallocate(fd, 0, (off_t)from, (off_t)(to - from));
}

/* Creates this process's file: named by pid and a sequence number (a file
 * of an earlier process with the same pid may still be there). */
static int
hits_create_file(ds_hits *h, int dirfd)
{
    static unsigned int sequence;
    size_t len = HEADER_SIZE + FIRST_CAP * sizeof(ds_hitrec);
    struct timespec ts;
    int fd = -1;

    clock_gettime(CLOCK_REALTIME, &ts);
    for (int attempt = 0; attempt < 16 && fd < 0; attempt++) {
        snprintf(h->name, sizeof h->name, "hits-%ld-%lx-%u", (long)getpid(),
                 (unsigned long)ts.tv_nsec, sequence++);
        fd = openat(dirfd, h->name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            return -1;
    }
    if (fd < 0)
        return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0 || hits_allocate(fd, 0, len) < 0)
        goto error;
    void *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED)
        goto error;
    hits_header head = {.magic = HITS_MAGIC, .record_size = sizeof(ds_hitrec), .n = 0};
    memcpy(map, &head, sizeof head);
    h->fd = fd;
    h->map = map;
    h->map_len = len;
    h->recs = (ds_hitrec *)(h->map + HEADER_SIZE);
    h->cap = FIRST_CAP;
    return 0;
error:
    unlinkat(dirfd, h->name, 0);
    close(fd);
    return -1;
}

/* Room for one more record: the file (or memory) doubles. */
static int
hits_grow_records(ds_hits *h, int dirfd)
{
    if (h->recs == NULL && dirfd >= 0 && hits_create_file(h, dirfd) == 0)
        return 0;
    size_t cap = h->cap ? h->cap * 2 : FIRST_CAP;
    if (h->map != NULL) {
        size_t len = HEADER_SIZE + cap * sizeof(ds_hitrec);
        if (hits_allocate(h->fd, h->map_len, len) == 0) {
            void *map = mremap(h->map, h->map_len, len, MREMAP_MAYMOVE);
            if (map != MAP_FAILED) {
                h->map = map;
                h->map_len = len;
                h->recs = (ds_hitrec *)(h->map + HEADER_SIZE);
                h->cap = cap;
                return 0;
            }
        }
        /* The file cannot grow: carry on in memory; the file keeps what it
         * has until the flush. */
        ds_hitrec *recs = PyMem_Malloc(cap * sizeof *recs);
        if (recs == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(recs, h->recs, h->n * sizeof *recs);
        ((hits_header *)h->map)->n = 0;   /* now counted in memory */
        munmap(h->map, h->map_len);
        h->map = NULL;
        h->recs = recs;
        h->cap = cap;
        return 0;
    }
    ds_hitrec *recs = PyMem_Realloc(h->recs, cap * sizeof *recs);
    if (recs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    h->recs = recs;
    h->cap = cap;
    return 0;
}

int
hits_note(ds_hits *h, int dirfd, const unsigned char key[DS_DIGEST_SIZE], double when)
{
    ds_hitrec *r = hits_find(h, key);
    if (r == NULL) {
        if (h->n == h->cap && hits_grow_records(h, dirfd) < 0)
            return -1;
        if ((h->n + 1) * 2 > h->nslots && hits_grow_slots(h) < 0)
            return -1;
        r = &h->recs[h->n];
        memcpy(r->key, key, DS_DIGEST_SIZE);
        r->count = 0;
        r->last = when;
        size_t i = key_hash(key) & (h->nslots - 1);
        while (h->slots[i] != 0)
            i = (i + 1) & (h->nslots - 1);
        h->slots[i] = (uint32_t)(++h->n);
        if (h->map != NULL)
            ((hits_header *)h->map)->n = h->n;   /* the record is whole first */
    }
    r->count++;
    if (when > r->last)
        r->last = when;
    return 0;
}

void
hits_forget(ds_hits *h, const unsigned char key[DS_DIGEST_SIZE])
{
    ds_hitrec *r = hits_find(h, key);
    if (r != NULL)
        r->count = 0;
}

void
hits_reset(ds_hits *h)
{
    if (h->map != NULL)
        ((hits_header *)h->map)->n = 0;
    h->n = 0;
    if (h->slots != NULL)
        memset(h->slots, 0, h->nslots * sizeof *h->slots);
}

static void
hits_free(ds_hits *h)
{
    if (h->map != NULL)
        munmap(h->map, h->map_len);
    else
        PyMem_Free(h->recs);
    PyMem_Free(h->slots);
}

void
hits_close(ds_hits *h, int dirfd, int keep)
{
    if (h->fd >= 0) {
        if (!keep || h->map == NULL || h->n == 0)
            unlinkat(dirfd, h->name, 0);   /* before the lock goes: see orphans */
        close(h->fd);
    }
    hits_free(h);
    hits_init(h);
}

void
hits_abandon(ds_hits *h)
{
    if (h->fd >= 0)
        close(h->fd);   /* the parent's descriptor keeps its lock */
    hits_free(h);
    hits_init(h);
}

/* ---- the files of processes that ended without flushing ----------------- */

static int
orphan_open(int dirfd, const char *name, ds_orphan *o)
{
    struct stat st;
    ds_unsafe why;

    o->fd = openat(dirfd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (o->fd < 0)
        return -1;
    snprintf(o->name, sizeof o->name, "%s", name);
    /* Someone else's file, or one others may write: not ours to read. A
     * live owner holds the lock. A file already collected and deleted by
     * another process (which held the lock until after the unlink) has no
     * links left. */
    if (folder_check_fd(o->fd, name, &why) < 0 || flock(o->fd, LOCK_EX | LOCK_NB) < 0
        || fstat(o->fd, &st) < 0 || st.st_nlink == 0 || (size_t)st.st_size < HEADER_SIZE)
        goto skip;
    o->map_len = (size_t)st.st_size;
    o->map = mmap(NULL, o->map_len, PROT_READ, MAP_SHARED, o->fd, 0);
    if (o->map == MAP_FAILED)
        goto skip;
    hits_header head;
    memcpy(&head, o->map, sizeof head);
    size_t room = (o->map_len - HEADER_SIZE) / sizeof(ds_hitrec);
    if (memcmp(head.magic, HITS_MAGIC, 8) != 0 || head.record_size != sizeof(ds_hitrec)) {
        munmap(o->map, o->map_len);
        goto skip;
    }
    o->recs = (const ds_hitrec *)((const unsigned char *)o->map + HEADER_SIZE);
    o->n = head.n < room ? (size_t)head.n : room;
    return 0;
skip:
    close(o->fd);
    return -1;
}

void
hits_orphans_open(int dirfd, const ds_hits *own, ds_orphans *out)
{
    out->files = NULL;
    out->n = 0;
    int fd = dup(dirfd);
    if (fd < 0)
        return;
    DIR *dir = fdopendir(fd);
    if (dir == NULL) {
        close(fd);
        return;
    }
    size_t cap = 0;
    struct dirent *d;
    while ((d = readdir(dir)) != NULL) {
        if (strncmp(d->d_name, "hits-", 5) != 0 || strlen(d->d_name) >= sizeof out->files[0].name
            || (own->fd >= 0 && strcmp(d->d_name, own->name) == 0))
            continue;
        if (out->n == cap) {
            size_t bigger = cap ? cap * 2 : 4;
            ds_orphan *files = PyMem_Realloc(out->files, bigger * sizeof *files);
            if (files == NULL)
                break;   /* the rest waits for the next flush */
            out->files = files;
            cap = bigger;
        }
        if (orphan_open(dirfd, d->d_name, &out->files[out->n]) == 0)
            out->n++;
    }
    closedir(dir);   /* closes fd */
}

void
hits_orphans_close(int dirfd, ds_orphans *o, int done)
{
    for (size_t i = 0; i < o->n; i++) {
        ds_orphan *f = &o->files[i];
        if (done)
            unlinkat(dirfd, f->name, 0);   /* before the lock goes */
        munmap(f->map, f->map_len);
        close(f->fd);
    }
    PyMem_Free(o->files);
    o->files = NULL;
    o->n = 0;
}
