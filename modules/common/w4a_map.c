/*
 * The hosting map: text source, compiled index, lookup.  See w4a_map.h;
 * the file format is also described in docs/w4a-vhostmap.md ("THE INDEX").
 *
 * Index layout.  Every integer is little-endian; the sections follow each
 * other with no gap and every one starts 8-byte aligned:
 *
 *   header   104 bytes: magic "W4AMAPv1", format 2, header size, file size,
 *            generation (apr_time_now() at compile), record/name/slot
 *            counts, offset and length of each section, and a checksum:
 *            w4a-sum64 (below) of every byte of the file but its own 8
 *   slots    nslots x 16 bytes {hash u64, name u32, record u32}: open
 *            addressing with linear probing, nslots a power of two and at
 *            least 2 x nnames (load <= 0.5); record 0xFFFFFFFF = free
 *   records  nrecords x 40 bytes {domain, hosting, docroot, php, log_dir,
 *            media: u32 string offsets, 0xFFFFFFFF = none; uid, gid,
 *            state, flags: u32}; flags holds the W4A_FLAG_* bits in its
 *            low 4 bits, the record's req_limit (0: none given) in bits
 *            4 to 15 and its php_limit (0: none given) in its high 16
 *            bits (an index without them is the same, byte for byte, as
 *            before those flags existed)
 *   strings  NUL-terminated strings; offset 0 holds ""; the section ends
 *            with a NUL, so any offset inside it names a terminated string
 *
 * Names are stored as they are looked up: normalised host names, and
 * wildcards as "*.suffix".  A record's domain points into the string of
 * its first name (past the "*." of a wildcard), other strings are shared
 * between records that hold the same value.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_atomic.h>
#include <apr_file_io.h>
#include <apr_strings.h>
#include <apr_time.h>

#include "w4a_host.h"
#include "w4a_map.h"
#include "w4a_map_private.h"
#include "w4a_util.h"

#define MAGIC        "W4AMAPv1"
#define FORMAT       2u    /* 1: the first layout (88-byte header) */
#define NONE         0xFFFFFFFFu    /* free slot; absent string */
#define MIN_SLOTS    16u
#define MAX_NAMES    0x20000000u    /* 2^29: nslots stays below 2^31 */
#define MAX_FIELDS   8
#define PATH_LIMIT   4095           /* longest docroot or log directory */
#define USER_LIMIT   32             /* longest hosting (Unix user) name */

#if APR_IS_BIGENDIAN
#define LE32(v) __builtin_bswap32(v)
#define LE64(v) __builtin_bswap64(v)
#else
#define LE32(v) (v)
#define LE64(v) (v)
#endif

typedef struct {
    char         magic[8];          /*   0 */
    apr_uint32_t format;            /*   8 */
    apr_uint32_t header_size;       /*  12 */
    apr_uint64_t file_size;         /*  16 */
    apr_uint64_t generation;        /*  24 */
    apr_uint32_t nrecords;          /*  32 */
    apr_uint32_t nnames;            /*  36 */
    apr_uint32_t nslots;            /*  40 */
    apr_uint32_t reserved;          /*  44: 0 */
    apr_uint64_t slots_off;         /*  48 */
    apr_uint64_t slots_len;         /*  56 */
    apr_uint64_t records_off;       /*  64 */
    apr_uint64_t records_len;       /*  72 */
    apr_uint64_t strings_off;       /*  80 */
    apr_uint64_t strings_len;       /*  88 */
    apr_uint64_t checksum;          /*  96 */
} map_header_t;                     /* 104 */

typedef struct {
    apr_uint64_t hash;
    apr_uint32_t name;              /* string offset */
    apr_uint32_t record;            /* index, or NONE when free */
} map_slot_t;

typedef struct {
    apr_uint32_t domain, hosting, docroot, php, log_dir, media;
    apr_uint32_t uid, gid, state, flags;
} map_record_t;

/* The layout is the file format: catch a compiler that pads. */
typedef char header_is_104_bytes[sizeof(map_header_t) == 104 ? 1 : -1];
typedef char slot_is_16_bytes[sizeof(map_slot_t) == 16 ? 1 : -1];
typedef char record_is_40_bytes[sizeof(map_record_t) == 40 ? 1 : -1];

#define CHECKSUM_AT  offsetof(map_header_t, checksum)
#define KNOWN_FLAGS  (W4A_FLAG_LOG | W4A_FLAG_REWRITE)
#define LIMIT_SHIFT  16    /* php_limit in the high half of flags */
#define REQ_SHIFT    4     /* req_limit in bits 4..15 of flags */
#define REQ_BITS     0xFFF0u
#define FLAG_BITS    0x000Fu

/* The opened index: values of the header in host byte order. */
struct w4a_map_t {
    void               *base;       /* a private mapping: see w4a_map.h */
    apr_size_t          size;       /* of the index */
    apr_size_t          size_mapped;
    char               *copy_path;  /* malloc'ed; NULL: not a copy */
    apr_uint64_t        generation;
    apr_uint32_t        nrecords;
    apr_uint32_t        nnames;
    apr_uint32_t        nslots;
    const map_slot_t   *slots;
    const map_record_t *records;
    const char         *strings;
    apr_uint64_t        strings_len;
    volatile apr_uint32_t refs;     /* holders; the opener's is the first */
};

const char *w4a_state_name(w4a_state_e state)
{
    switch (state) {
    case W4A_STATE_ACTIVE:
        return "active";
    case W4A_STATE_SUSPENDED:
        return "suspended";
    }
    return "unknown";
}

/* ------------------------------------------------------------------ */
/* Hashing.                                                            */

/* Odd 64-bit constants (the golden ratio and two well-mixing ones). */
#define K1 0x9E3779B97F4A7C15ULL
#define K2 0xBF58476D1CE4E5B9ULL
#define K3 0x94D049BB133111EBULL

static APR_INLINE apr_uint64_t rotl64(apr_uint64_t v, int r)
{
    return (v << r) | (v >> (64 - r));
}

static APR_INLINE apr_uint64_t load64(const void *p)
{
    apr_uint64_t v;
    memcpy(&v, p, 8);
    return LE64(v);
}

/* One round: a bijection of acc for a given w and of w for a given acc,
 * so one changed word always changes the result. */
static APR_INLINE apr_uint64_t mix_round(apr_uint64_t acc, apr_uint64_t w)
{
    return rotl64(acc ^ (w * K2), 31) * K1;
}

/* Final avalanche (bijective): every input bit reaches the low bits. */
static APR_INLINE apr_uint64_t avalanche(apr_uint64_t h)
{
    h ^= h >> 32;
    h *= K3;
    h ^= h >> 29;
    h *= K2;
    h ^= h >> 32;
    return h;
}

/* The name hash of the slot table: 8 bytes per round, tail packed
 * little-endian, length in the seed. */
static apr_uint64_t name_hash(const char *s, apr_size_t len)
{
    apr_uint64_t h = K3 ^ ((apr_uint64_t)len * K1), w = 0;
    apr_size_t i;

    for (; len >= 8; s += 8, len -= 8) {
        h = mix_round(h, load64(s));
    }
    for (i = 0; i < len; i++) {
        w |= (apr_uint64_t)(unsigned char)s[i] << (8 * i);
    }
    return avalanche(mix_round(h, w));
}

/*
 * w4a-sum64, the index checksum: four lanes of mix_round() over 32-byte
 * blocks of little-endian words (so it runs several bytes per cycle), the
 * lanes folded in order, the tail bytes FNV-1a style, the length, and the
 * avalanche.  Streaming, so the writer feeds it section by section.
 */
typedef struct {
    apr_uint64_t  v[4];
    apr_uint64_t  total;
    unsigned char buf[32];
    apr_size_t    nbuf;
} sum64_t;

static void sum_init(sum64_t *s)
{
    s->v[0] = K1;
    s->v[1] = K2;
    s->v[2] = K3;
    s->v[3] = K1 ^ K2 ^ K3;
    s->total = 0;
    s->nbuf = 0;
}

static void sum_blocks(sum64_t *s, const unsigned char *p, apr_size_t n)
{
    apr_uint64_t a = s->v[0], b = s->v[1], c = s->v[2], d = s->v[3];

    for (; n; n--, p += 32) {
        a = mix_round(a, load64(p));
        b = mix_round(b, load64(p + 8));
        c = mix_round(c, load64(p + 16));
        d = mix_round(d, load64(p + 24));
    }
    s->v[0] = a;
    s->v[1] = b;
    s->v[2] = c;
    s->v[3] = d;
}

static void sum_update(sum64_t *s, const void *data, apr_size_t len)
{
    const unsigned char *p = data;

    if (len == 0) {
        return;             /* data may be NULL (an empty section) */
    }
    s->total += len;
    if (s->nbuf) {
        apr_size_t take = 32 - s->nbuf < len ? 32 - s->nbuf : len;
        memcpy(s->buf + s->nbuf, p, take);
        s->nbuf += take;
        p += take;
        len -= take;
        if (s->nbuf < 32) {
            return;
        }
        sum_blocks(s, s->buf, 1);
        s->nbuf = 0;
    }
    sum_blocks(s, p, len / 32);
    p += len & ~(apr_size_t)31;
    len &= 31;
    if (len) {
        memcpy(s->buf, p, len);
    }
    s->nbuf = len;
}

static apr_uint64_t sum_final(const sum64_t *s)
{
    apr_uint64_t h = K1;
    apr_size_t i;

    for (i = 0; i < 4; i++) {
        h = mix_round(h, s->v[i]);
    }
    for (i = 0; i < s->nbuf; i++) {
        h = (h ^ s->buf[i]) * 0x100000001b3ULL;
    }
    return avalanche(h ^ s->total);
}

/* ------------------------------------------------------------------ */
/* Opening and validation.                                             */

static apr_status_t fail(const char **err, const char *why, apr_status_t rv)
{
    if (err) {
        *err = why;
    }
    return rv;
}

/* A formatted reason, from p (the details are lost without a pool). */
static apr_status_t failf(const char **err, apr_pool_t *p, apr_status_t rv,
                          const char *fmt, ...)
{
    va_list ap;

    if (err) {
        va_start(ap, fmt);
        *err = p ? apr_pvsprintf(p, fmt, ap) : "index refused (no pool for "
                                               "the details)";
        va_end(ap);
    }
    return rv;
}

/* A string offset: NONE only when optional; a required one non-empty. */
static int str_ok(const w4a_map_t *m, apr_uint32_t off, int optional)
{
    if (off == NONE) {
        return optional;
    }
    return off < m->strings_len && (optional || m->strings[off] != '\0');
}

static apr_status_t validate(w4a_map_t *m, const char **err, apr_pool_t *p)
{
    const map_header_t *h = m->base;
    apr_uint64_t slots_off, slots_len, records_off, records_len;
    apr_uint64_t strings_off, strings_len, file_size, checksum, used = 0;
    apr_uint32_t i, format, header_size;
    sum64_t sum;

    if (m->size < sizeof(*h)) {
        return failf(err, p, APR_EINVAL, "index is %" APR_SIZE_T_FMT " bytes: "
                     "file shorter than an index header "
                     "(empty or truncated?)", m->size);
    }
    if (memcmp(h->magic, MAGIC, 8) != 0) {
        return fail(err, "not a w4a map index (bad magic)", APR_EINVAL);
    }
    format = LE32(h->format);
    header_size = LE32(h->header_size);
    if (format != FORMAT) {
        return failf(err, p, APR_EINVAL, "index format %u not supported "
                     "(expected %u)", format, FORMAT);
    }
    if (header_size != sizeof(*h) || LE32(h->reserved) != 0) {
        return fail(err, "index header is malformed (size or reserved field)",
                    APR_EINVAL);
    }
    file_size = LE64(h->file_size);
    if (file_size != m->size) {
        return failf(err, p, APR_EINVAL, "index is %" APR_SIZE_T_FMT " bytes, "
                     "header says %" APR_UINT64_T_FMT
                     " (truncated or appended to)",
                     m->size, file_size);
    }

    m->generation = LE64(h->generation);
    m->nrecords = LE32(h->nrecords);
    m->nnames = LE32(h->nnames);
    m->nslots = LE32(h->nslots);
    if (m->nslots < MIN_SLOTS || (m->nslots & (m->nslots - 1))
        || m->nnames > m->nslots / 2 || m->nrecords > m->nnames) {
        return fail(err, "index header counts are inconsistent", APR_EINVAL);
    }

    /* Sections: exactly where the counts put them, back to back.  Every
     * value compared is bounded, so nothing here can overflow. */
    slots_off = LE64(h->slots_off);
    slots_len = LE64(h->slots_len);
    records_off = LE64(h->records_off);
    records_len = LE64(h->records_len);
    strings_off = LE64(h->strings_off);
    strings_len = LE64(h->strings_len);
    if (slots_off != sizeof(*h)
        || slots_len != (apr_uint64_t)m->nslots * sizeof(map_slot_t)
        || records_off != slots_off + slots_len
        || records_len != (apr_uint64_t)m->nrecords * sizeof(map_record_t)
        || strings_off != records_off + records_len
        || strings_off >= file_size
        || strings_len != file_size - strings_off
        || strings_len > NONE) {
        return fail(err, "index sections out of bounds (corrupt header)",
                    APR_EINVAL);
    }

    checksum = LE64(h->checksum);
    sum_init(&sum);
    sum_update(&sum, m->base, CHECKSUM_AT);
    sum_update(&sum, (const char *)m->base + sizeof(*h), m->size - sizeof(*h));
    if (sum_final(&sum) != checksum) {
        return fail(err, "index checksum mismatch (corrupt or half-written)",
                    APR_EINVAL);
    }

    m->slots = (const map_slot_t *)((const char *)m->base + slots_off);
    m->records = (const map_record_t *)((const char *)m->base + records_off);
    m->strings = (const char *)m->base + strings_off;
    m->strings_len = strings_len;
    if (m->strings[strings_len - 1] != '\0') {
        return fail(err, "index string table not terminated", APR_EINVAL);
    }
    for (i = 0; i < m->nslots; i++) {
        apr_uint32_t rec = LE32(m->slots[i].record);
        if (rec == NONE) {
            continue;
        }
        if (rec >= m->nrecords || !str_ok(m, LE32(m->slots[i].name), 0)) {
            return failf(err, p, APR_EINVAL, "index slot %u points out of "
                         "bounds", i);
        }
        used++;
    }
    if (used != m->nnames) {
        return fail(err, "index name count does not match its table",
                    APR_EINVAL);
    }
    for (i = 0; i < m->nrecords; i++) {
        const map_record_t *r = &m->records[i];
        apr_uint32_t flags = LE32(r->flags);
        apr_uint32_t log_dir = LE32(r->log_dir);
        if (!str_ok(m, LE32(r->domain), 0) || !str_ok(m, LE32(r->hosting), 0)
            || !str_ok(m, LE32(r->docroot), 0) || !str_ok(m, LE32(r->php), 1)
            || !str_ok(m, log_dir, 1) || !str_ok(m, LE32(r->media), 1)) {
            return failf(err, p, APR_EINVAL, "index record %u points out of "
                         "bounds", i);
        }
        if (LE32(r->state) > W4A_STATE_SUSPENDED
            || (flags & FLAG_BITS & ~KNOWN_FLAGS)
            || !(flags & W4A_FLAG_LOG) != (log_dir == NONE)) {
            return failf(err, p, APR_EINVAL, "index record %u has an unknown "
                         "state or inconsistent flags", i);
        }
    }
    return APR_SUCCESS;
}

/* Everything of fd, from where it is, into buf (len bytes); 1 byte more
 * is asked for, so that a file grown meanwhile is seen.  @return the bytes
 * read, or -1. */
static apr_ssize_t read_fully(int fd, char *buf, apr_size_t len)
{
    apr_size_t got = 0;

    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -1;
        }
        if (n == 0) {
            break;
        }
        got += (apr_size_t)n;
    }
    return (apr_ssize_t)got;
}

apr_status_t w4a_map__load_fd(w4a_map_t **map, int fd, int shared,
                              const char *name, const char **err,
                              apr_pool_t *p)
{
    struct stat st;
    w4a_map_t *m;
    apr_status_t rv;
    apr_ssize_t got;

    if (fstat(fd, &st) != 0) {
        rv = APR_FROM_OS_ERROR(errno);
        return failf(err, p, rv, "cannot stat %s: %s", name,
                     strerror(APR_TO_OS_ERROR(rv)));
    }
    if (!S_ISREG(st.st_mode)) {
        return fail(err, "not a regular file", APR_EINVAL);
    }
    if (st.st_size < (off_t)sizeof(map_header_t)) {
        return failf(err, p, APR_EINVAL, "index is %" APR_OFF_T_FMT " bytes: "
                     "file shorter than an index header (empty or "
                     "truncated?)", (apr_off_t)st.st_size);
    }
    if ((apr_uint64_t)st.st_size >= (apr_uint64_t)(~(apr_size_t)0 >> 1)) {
        return fail(err, "index too large for this process", APR_EINVAL);
    }
    m = calloc(1, sizeof(*m));
    if (!m) {
        return fail(err, "out of memory", APR_ENOMEM);
    }
    m->refs = 1;
    m->size = (apr_size_t)st.st_size;
    if (shared) {
        /* Only for a file nobody writes again (a private copy). */
        m->base = mmap(NULL, m->size, PROT_READ, MAP_SHARED, fd, 0);
    }
    else {
        /* One byte more than the file: a file that grew is seen. */
        m->base = mmap(NULL, m->size + 1, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    }
    if (m->base == MAP_FAILED) {
        rv = APR_FROM_OS_ERROR(errno);
        free(m);
        return failf(err, p, rv, "cannot map %s: %s", name,
                     strerror(APR_TO_OS_ERROR(rv)));
    }
    if (!shared) {
        got = read_fully(fd, m->base, m->size + 1);
        if (got < 0) {
            rv = APR_FROM_OS_ERROR(errno);
            munmap(m->base, m->size + 1);
            free(m);
            return failf(err, p, rv, "cannot read %s: %s", name,
                         strerror(APR_TO_OS_ERROR(rv)));
        }
        if ((apr_size_t)got != m->size) {
            munmap(m->base, m->size + 1);
            free(m);
            return failf(err, p, APR_EAGAIN, "index changed size while it "
                         "was read (%" APR_OFF_T_FMT " bytes, then %"
                         APR_SSIZE_T_FMT "+): being written in place?",
                         (apr_off_t)st.st_size, got);
        }
        mprotect(m->base, m->size + 1, PROT_READ);
        m->size_mapped = m->size + 1;
    }
    else {
        m->size_mapped = m->size;
    }
    rv = validate(m, err, p);
    if (rv != APR_SUCCESS) {
        munmap(m->base, m->size_mapped);
        free(m);
        return rv;
    }
    *map = m;
    return APR_SUCCESS;
}

apr_status_t w4a_map_open(w4a_map_t **map, const char *path,
                          const char **err, apr_pool_t *p)
{
    apr_status_t rv;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

    if (fd < 0) {
        rv = APR_FROM_OS_ERROR(errno);
        return failf(err, p, rv, "cannot open %s: %s", path,
                     strerror(errno));
    }
    rv = w4a_map__load_fd(map, fd, 0, path, err, p);
    close(fd);
    return rv;
}

void w4a_map__set_copy(w4a_map_t *map, char *copy_path)
{
    map->copy_path = copy_path;
}

const char *w4a_map__copy_path(const w4a_map_t *map)
{
    return map->copy_path;
}

void w4a_map_close(w4a_map_t *map)
{
    if (map) {
        munmap(map->base, map->size_mapped);
        free(map->copy_path);
        free(map);
    }
}

void w4a_map_hold(w4a_map_t *map)
{
    apr_atomic_inc32(&map->refs);
}

void w4a_map_release(w4a_map_t *map)
{
    if (map && apr_atomic_dec32(&map->refs) == 0) {
        w4a_map_close(map);
    }
}

/* ------------------------------------------------------------------ */
/* Lookup.                                                             */

static const char *str_at(const w4a_map_t *m, apr_uint32_t off)
{
    off = LE32(off);
    return off == NONE ? NULL : m->strings + off;
}

static void fill(const w4a_map_t *m, const map_record_t *r, w4a_hosting_t *rec)
{
    rec->domain = str_at(m, r->domain);
    rec->hosting = str_at(m, r->hosting);
    rec->uid = LE32(r->uid);
    rec->gid = LE32(r->gid);
    rec->docroot = str_at(m, r->docroot);
    rec->php_version = str_at(m, r->php);
    rec->state = (w4a_state_e)LE32(r->state);
    rec->flags = LE32(r->flags) & FLAG_BITS;
    rec->php_limit = LE32(r->flags) >> LIMIT_SHIFT;
    rec->req_limit = (LE32(r->flags) & REQ_BITS) >> REQ_SHIFT;
    rec->log_dir = str_at(m, r->log_dir);
    rec->media_host = str_at(m, r->media);
}

/* key holds no NUL in its len bytes, so a name equal over len bytes is at
 * least len long and name[len] lies inside the (terminated) table. */
static const map_slot_t *probe(const w4a_map_t *m, const char *key,
                               apr_size_t len)
{
    apr_uint64_t h = name_hash(key, len);
    apr_uint32_t mask = m->nslots - 1, i = (apr_uint32_t)h & mask, n;

    for (n = 0; n <= mask; n++, i = (i + 1) & mask) {
        const map_slot_t *s = &m->slots[i];
        if (LE32(s->record) == NONE) {
            return NULL;
        }
        if (LE64(s->hash) == h) {
            const char *name = m->strings + LE32(s->name);
            if (!strncmp(name, key, len) && name[len] == '\0') {
                return s;
            }
        }
    }
    return NULL;
}

apr_status_t w4a_map_lookup(const w4a_map_t *map, const char *host,
                            apr_size_t len, w4a_hosting_t *rec)
{
    char key[W4A_HOST_MAX + 3];
    const map_slot_t *s;
    apr_size_t i;

    if (len == 0 || len > W4A_HOST_MAX || host[0] == '*'
        || memchr(host, '\0', len)) {
        return APR_NOTFOUND;
    }
    s = probe(map, host, len);
    /* "a.b.example.org": "*.b.example.org", "*.example.org", "*.org". */
    for (i = 1; !s && i < len; i++) {
        if (host[i] != '.') {
            continue;
        }
        key[0] = '*';
        memcpy(key + 1, host + i, len - i);
        key[len - i + 1] = '\0';
        s = probe(map, key, len - i + 1);
    }
    if (!s) {
        return APR_NOTFOUND;
    }
    fill(map, &map->records[LE32(s->record)], rec);
    rec->matched = map->strings + LE32(s->name);
    return APR_SUCCESS;
}

int w4a_map_iterate(const w4a_map_t *map, w4a_map_record_fn *fn, void *baton)
{
    apr_uint32_t i;
    int rc;

    for (i = 0; i < map->nrecords; i++) {
        w4a_hosting_t rec;
        fill(map, &map->records[i], &rec);
        rec.matched = NULL;
        if ((rc = fn(baton, &rec)) != 0) {
            return rc;
        }
    }
    return 0;
}

apr_uint64_t w4a_map_generation(const w4a_map_t *map)
{
    return map->generation;
}

apr_uint32_t w4a_map_records(const w4a_map_t *map)
{
    return map->nrecords;
}

apr_uint32_t w4a_map_names(const w4a_map_t *map)
{
    return map->nnames;
}

/* ------------------------------------------------------------------ */
/* Compiling: growable tables (malloc'ed, freed at the end).           */

typedef struct {
    char       *buf;
    apr_size_t  len, cap;
} strtab_t;

typedef struct {                    /* strings shared between records */
    apr_uint64_t *hash;
    apr_uint32_t *off;              /* NONE when free */
    apr_uint32_t  cap, n;
} intern_t;

typedef struct {                    /* the names: becomes the slot table */
    map_slot_t   *slot;
    apr_uint32_t  cap, n;
} names_t;

typedef struct {                    /* a name of the line being parsed */
    const char   *name;
    apr_size_t    len;
    apr_uint64_t  hash;
} line_name_t;

typedef struct {
    apr_pool_t             *p;
    const char             *path;
    w4a_map_checks_t        checks;
    w4a_map_perms_t         perms;  /* of the index file */
    const w4a_logger_t     *log;
    w4a_map_stats_t        *stats;
    apr_uint32_t            line;
    int                     line_bad;
    int                     nomem;
    strtab_t                str;
    intern_t                intern;
    names_t                 names;
    map_record_t           *rec;    /* records, host byte order */
    apr_uint32_t           *rec_line; /* the line of each record */
    apr_uint32_t            nrec, rec_cap, rec_line_cap;
    line_name_t            *ln;     /* names of the current line */
    apr_uint32_t            ln_cap;
} compile_ctx;

static void say(const w4a_logger_t *log, int level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (!log || !log->fn) {
        return;
    }
    va_start(ap, fmt);
    apr_vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log->fn(log->baton, level, msg);
}

/* "<path>:<line>: <message>"; an error marks the line bad (counted once). */
static void report(compile_ctx *c, int level, const char *fmt, ...)
{
    char msg[1024];
    int n;
    va_list ap;

    n = apr_snprintf(msg, sizeof(msg), "%s:%u: ", c->path, c->line);
    va_start(ap, fmt);
    apr_vsnprintf(msg + n, sizeof(msg) - n, fmt, ap);
    va_end(ap);
    if (level <= W4A_LOG_ERR) {
        if (!c->line_bad) {
            c->stats->errors++;
        }
        c->line_bad = 1;
    }
    else {
        c->stats->warnings++;
    }
    if (c->log && c->log->fn) {
        c->log->fn(c->log->baton, level, msg);
    }
}

/* Grows *ptr (of *cap elements of size sz) to hold at least need. */
static int grow(compile_ctx *c, void **ptr, apr_uint32_t *cap,
                apr_size_t need, apr_size_t sz)
{
    apr_size_t ncap = *cap ? *cap : 64;
    void *np;

    if (need <= *cap) {
        return 1;
    }
    while (ncap < need) {
        ncap *= 2;
    }
    if (ncap > 0xFFFFFFFFu || !(np = realloc(*ptr, ncap * sz))) {
        c->nomem = 1;
        return 0;
    }
    *ptr = np;
    *cap = (apr_uint32_t)ncap;
    return 1;
}

/* Appends a string of n bytes (+ NUL); NONE when the table is full. */
static apr_uint32_t str_add(compile_ctx *c, const char *s, apr_size_t n)
{
    strtab_t *t = &c->str;
    apr_uint32_t off;

    if (t->len + n + 1 > t->cap) {
        apr_size_t ncap = t->cap ? t->cap : 1 << 16;
        char *nb;
        while (ncap < t->len + n + 1) {
            ncap *= 2;
        }
        if (ncap - 1 > NONE) {      /* offsets are 32-bit */
            ncap = (apr_size_t)NONE + 1;
        }
        if (t->len + n + 1 > ncap || !(nb = realloc(t->buf, ncap))) {
            c->nomem = 1;
            return NONE;
        }
        t->buf = nb;
        t->cap = ncap;
    }
    off = (apr_uint32_t)t->len;
    memcpy(t->buf + t->len, s, n);
    t->buf[t->len + n] = '\0';
    t->len += n + 1;
    return off;
}

static int intern_resize(compile_ctx *c, apr_uint32_t ncap)
{
    intern_t *t = &c->intern, nt;
    apr_uint32_t i, j;

    nt.hash = malloc(sizeof(*nt.hash) * ncap);
    nt.off = malloc(sizeof(*nt.off) * ncap);
    if (!nt.hash || !nt.off) {
        free(nt.hash);
        free(nt.off);
        c->nomem = 1;
        return 0;
    }
    memset(nt.off, 0xFF, sizeof(*nt.off) * ncap);
    for (i = 0; i < t->cap; i++) {
        if (t->off[i] == NONE) {
            continue;
        }
        for (j = (apr_uint32_t)t->hash[i] & (ncap - 1); nt.off[j] != NONE;
             j = (j + 1) & (ncap - 1)) {
            ;
        }
        nt.hash[j] = t->hash[i];
        nt.off[j] = t->off[i];
    }
    free(t->hash);
    free(t->off);
    t->hash = nt.hash;
    t->off = nt.off;
    t->cap = ncap;
    return 1;
}

/* The offset of a copy of s in the string table, shared when already
 * there; NONE for a NULL s (or when out of memory). */
static apr_uint32_t intern(compile_ctx *c, const char *s)
{
    intern_t *t = &c->intern;
    apr_size_t n;
    apr_uint64_t h;
    apr_uint32_t j;

    if (!s) {
        return NONE;
    }
    if (2 * (t->n + 1) > t->cap
        && !intern_resize(c, t->cap ? 2 * t->cap : 1024)) {
        return NONE;
    }
    n = strlen(s);
    h = name_hash(s, n);
    for (j = (apr_uint32_t)h & (t->cap - 1); t->off[j] != NONE;
         j = (j + 1) & (t->cap - 1)) {
        if (t->hash[j] == h && !strcmp(c->str.buf + t->off[j], s)) {
            return t->off[j];
        }
    }
    if ((t->off[j] = str_add(c, s, n)) == NONE) {
        return NONE;
    }
    t->hash[j] = h;
    t->n++;
    return t->off[j];
}

/* The slot holding name, or NULL. */
static map_slot_t *name_find(compile_ctx *c, const char *s, apr_size_t n,
                             apr_uint64_t h)
{
    names_t *t = &c->names;
    apr_uint32_t j;

    if (!t->cap) {
        return NULL;
    }
    for (j = (apr_uint32_t)h & (t->cap - 1); t->slot[j].record != NONE;
         j = (j + 1) & (t->cap - 1)) {
        const char *name = c->str.buf + t->slot[j].name;
        if (t->slot[j].hash == h && !strncmp(name, s, n) && !name[n]) {
            return &t->slot[j];
        }
    }
    return NULL;
}

static void name_put(map_slot_t *slot, apr_uint32_t cap, const map_slot_t *s)
{
    apr_uint32_t j;

    for (j = (apr_uint32_t)s->hash & (cap - 1); slot[j].record != NONE;
         j = (j + 1) & (cap - 1)) {
        ;
    }
    slot[j] = *s;
}

static int names_resize(compile_ctx *c, apr_uint32_t ncap)
{
    names_t *t = &c->names;
    map_slot_t *ns = malloc(sizeof(*ns) * ncap);
    apr_uint32_t i;

    if (!ns) {
        c->nomem = 1;
        return 0;
    }
    for (i = 0; i < ncap; i++) {
        ns[i].hash = 0;
        ns[i].name = 0;
        ns[i].record = NONE;
    }
    for (i = 0; i < t->cap; i++) {
        if (t->slot[i].record != NONE) {
            name_put(ns, ncap, &t->slot[i]);
        }
    }
    free(t->slot);
    t->slot = ns;
    t->cap = ncap;
    return 1;
}

/* Adds a name (not yet present); keeps the load <= 0.5. */
static int name_add(compile_ctx *c, const map_slot_t *s)
{
    names_t *t = &c->names;

    if (t->n >= MAX_NAMES) {
        c->nomem = 1;
        return 0;
    }
    if (2 * (t->n + 1) > t->cap
        && !names_resize(c, t->cap ? 2 * t->cap : MIN_SLOTS)) {
        return 0;
    }
    name_put(t->slot, t->cap, s);
    t->n++;
    return 1;
}

/* ------------------------------------------------------------------ */
/* Compiling: the checks of one line.                                  */

/* A uid or gid: decimal, below (uid_t)-1 (which means "no change"). */
static int parse_id(const char *s, apr_uint32_t *out)
{
    apr_int64_t v;

    if (!w4a_parse_number(s, 0, 0xFFFFFFFEll, &v) || *s == '-') {
        return 0;
    }
    *out = (apr_uint32_t)v;
    return 1;
}

/* Strictly below base: a docroot that is a base itself would serve every
 * hosting under it.  A trailing '/' of base is no part of it. */
static int docroot_under(const char *path, const char *base)
{
    char buf[PATH_LIMIT + 1];
    apr_size_t n = strlen(base);

    while (n > 1 && base[n - 1] == '/') {
        n--;
    }
    if (n > PATH_LIMIT) {
        return 0;
    }
    memcpy(buf, base, n);
    buf[n] = '\0';
    return w4a_path_under(path, buf) && strcmp(path, buf) != 0;
}

/* An absolute, clean path: printable ASCII, no empty, "." or ".."
 * component, not "/" itself.  One trailing '/' is dropped in place.
 * Returns NULL when fine, else why not. */
static const char *clean_path(char *s)
{
    apr_size_t n = strlen(s), i;

    if (s[0] != '/') {
        return "relative";
    }
    if (n > PATH_LIMIT) {
        return "longer than 4095 bytes";
    }
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x21 || ch > 0x7e) {
            return "control, blank or non-ASCII byte";
        }
    }
    if (n > 1 && s[n - 1] == '/') {
        s[--n] = '\0';
    }
    if (n == 1) {
        return "the root directory";
    }
    for (i = 0; i < n; i++) {
        if (s[i] != '/') {
            continue;
        }
        if (s[i + 1] == '/' || s[i + 1] == '\0') {
            return "empty component";
        }
        if (s[i + 1] == '.') {
            apr_size_t dots = s[i + 2] == '.' ? 2 : 1;
            if (s[i + 1 + dots] == '/' || s[i + 1 + dots] == '\0') {
                return "'.' or '..' component";
            }
        }
    }
    return NULL;
}

static int version_ok(const char *v)
{
    apr_size_t n = strlen(v);

    if (n == 0 || n > 16 || !(v[0] >= '0' && v[0] <= '9')) {
        return 0;
    }
    for (; *v; v++) {
        if (!((*v >= '0' && *v <= '9') || (*v >= 'a' && *v <= 'z')
              || *v == '.' || *v == '_' || *v == '-')) {
            return 0;
        }
    }
    return 1;
}

/* A Unix user name: [a-z_][a-z0-9_.-]*, at most 32 bytes. */
static int user_ok(const char *s)
{
    apr_size_t n = strlen(s);

    if (n == 0 || n > USER_LIMIT || !((*s >= 'a' && *s <= 'z') || *s == '_')) {
        return 0;
    }
    for (; *s; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')
              || *s == '_' || *s == '-' || *s == '.')) {
            return 0;
        }
    }
    return 1;
}

/*
 * The compiler's own entry to the normaliser: a host name, or with
 * wildcard_ok a "*." + host name.  IPv6 literals and ports are not map
 * names.  The result is written back over in (never longer); returns
 * NULL when fine, else why not.
 */
static const char *map_name(char *in, int wildcard_ok, apr_size_t *outlen)
{
    char buf[W4A_HOST_MAX + 1];
    apr_size_t len;
    apr_status_t rv;
    int wild = in[0] == '*';
    char *host = wild ? in + 2 : in;

    if (wild && (!wildcard_ok || in[1] != '.')) {
        return wildcard_ok ? "a wildcard is '*.' followed by a domain name"
                           : "not a host name";
    }
    if (host[0] == '[' || strchr(host, ':')) {
        return "IPv6 literals and ports are not map names";
    }
    rv = w4a_host_normalise(host, buf, &len);
    if (rv == APR_ENAMETOOLONG
        || (rv == APR_SUCCESS && wild && len > W4A_HOST_MAX - 2)) {
        return wild ? "longer than a *.suffix that a host of 253 characters "
                      "can match" : "longer than 253 characters";
    }
    if (rv != APR_SUCCESS) {
        return "not a domain name";
    }
    memcpy(host, buf, len + 1);
    *outlen = len + (wild ? 2 : 0);
    return NULL;
}

/* Blank-separated fields, in place; returns how many (at most max). */
static int split_fields(char *s, char **field, int max)
{
    int n = 0;

    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\v'
               || *s == '\f') {
            s++;
        }
        if (!*s || n == max) {
            return n;
        }
        field[n++] = s;
        while (*s && *s != ' ' && *s != '\t' && *s != '\r' && *s != '\v'
               && *s != '\f') {
            s++;
        }
        if (*s) {
            *s++ = '\0';
        }
    }
}

/* The next comma-separated item of *s, in place (may be ""). */
static char *next_item(char **s)
{
    char *item = *s, *comma;

    if (!item) {
        return NULL;
    }
    comma = strchr(item, ',');
    if (comma) {
        *comma = '\0';
        *s = comma + 1;
    }
    else {
        *s = NULL;
    }
    return item;
}

static int cmp_line_names(const void *a, const void *b)
{
    const line_name_t *x = a, *y = b;
    if (x->hash != y->hash) {
        return x->hash < y->hash ? -1 : 1;
    }
    return strcmp(x->name, y->name);
}

typedef struct {
    const char  *hosting, *docroot, *php, *log_dir, *media;
    apr_uint32_t uid, gid, state, flags;
    apr_uint32_t php_limit;         /* 0: none given */
    apr_uint32_t req_limit;         /* 0: none given */
} src_record_t;

static void parse_flags(compile_ctx *c, src_record_t *r, char *flags,
                        char *log_buf, char *media_buf)
{
    char *item, *rest = flags;
    int seen_log = 0, seen_rewrite = 0;
    const char *why;

    if (!strcmp(flags, "-")) {
        return;
    }
    while ((item = next_item(&rest)) != NULL) {
        if (!*item) {
            report(c, W4A_LOG_ERR, "empty flag in the list of flags (a comma "
                   "too many?)");
        }
        else if (!strcmp(item, "log") || !strncmp(item, "log=", 4)) {
            if (seen_log++) {
                report(c, W4A_LOG_ERR, "flag log given twice");
            }
            r->flags |= W4A_FLAG_LOG;
            if (item[3] == '=') {
                if ((why = clean_path(item + 4)) != NULL) {
                    report(c, W4A_LOG_ERR, "log directory '%s' is not an "
                           "absolute, normalised path (%s)", item + 4, why);
                }
                r->log_dir = item + 4;
            }
        }
        else if (!strcmp(item, "rewrite")) {
            if (seen_rewrite++) {
                report(c, W4A_LOG_ERR, "flag rewrite given twice");
            }
            r->flags |= W4A_FLAG_REWRITE;
        }
        else if (!strncmp(item, "media=", 6)) {
            apr_size_t len;
            if (r->media) {
                report(c, W4A_LOG_ERR, "flag media given twice");
            }
            else if (strlen(item + 6) > W4A_HOST_MAX + 8
                     || (why = map_name(strcpy(media_buf, item + 6), 0,
                                        &len)) != NULL) {
                report(c, W4A_LOG_ERR, "media host '%s' is not a host name",
                       item + 6);
            }
            else {
                r->media = media_buf;
            }
        }
        else if (!strncmp(item, "php_limit=", 10)) {
            apr_int64_t v;
            if (r->php_limit) {
                report(c, W4A_LOG_ERR, "flag php_limit given twice");
            }
            else if (!w4a_parse_number(item + 10, 1, W4A_PHP_LIMIT_MAX, &v)) {
                report(c, W4A_LOG_ERR, "php_limit '%s' is not a number of "
                       "requests from 1 to %u", item + 10, W4A_PHP_LIMIT_MAX);
            }
            else {
                r->php_limit = (apr_uint32_t)v;
            }
        }
        else if (!strncmp(item, "req_limit=", 10)) {
            apr_int64_t v;
            if (r->req_limit) {
                report(c, W4A_LOG_ERR, "flag req_limit given twice");
            }
            else if (!w4a_parse_number(item + 10, 1, W4A_REQ_LIMIT_MAX, &v)) {
                report(c, W4A_LOG_ERR, "req_limit '%s' is not a number of "
                       "requests from 1 to %u", item + 10, W4A_REQ_LIMIT_MAX);
            }
            else {
                r->req_limit = (apr_uint32_t)v;
            }
        }
        else {
            report(c, W4A_LOG_ERR, "unknown flag '%s' (expected log, log=DIR, "
                   "media=HOST, rewrite, php_limit=N, req_limit=N)", item);
        }
    }
    /* The default log directory: <home>/log/apache2, <home> being the
     * docroot's part before "/var/www/". */
    if ((r->flags & W4A_FLAG_LOG) && !r->log_dir && r->docroot) {
        const char *vw = strstr(r->docroot, "/var/www/");
        apr_size_t n = strlen(r->docroot);
        if (!vw && n >= 8 && !strcmp(r->docroot + n - 8, "/var/www")) {
            vw = r->docroot + n - 8;
        }
        if (!vw || vw == r->docroot) {
            report(c, W4A_LOG_ERR, "flag 'log' needs log=DIR: document root "
                   "%s has no <home>/var/www/ to find the hosting's home from",
                   r->docroot);
        }
        else if (memchr(r->docroot, ',', (apr_size_t)(vw - r->docroot))) {
            /* its cache line's "log=DIR" would split at the comma */
            report(c, W4A_LOG_ERR, "flag 'log' needs log=DIR: the home of "
                   "document root %s holds a ','", r->docroot);
        }
        else {
            memcpy(log_buf, r->docroot, (apr_size_t)(vw - r->docroot));
            strcpy(log_buf + (vw - r->docroot), "/log/apache2");
            r->log_dir = log_buf;
        }
    }
}

/* The record fields of a line (field[1] to field[6], field[7] when
 * has_flags): hosting uid gid docroot php state [flags]. */
static void parse_fields(compile_ctx *c, src_record_t *r, char **field,
                         int has_flags, char *log_buf, char *media_buf)
{
    const w4a_map_checks_t *k = &c->checks;
    const char *why;

    r->hosting = field[1];
    if (!user_ok(field[1])) {
        report(c, W4A_LOG_ERR, "hosting '%s' is not a Unix user name (1 to 32 "
               "of [a-z0-9_.-], starting with a letter or '_')", field[1]);
    }
    if (!parse_id(field[2], &r->uid)) {
        report(c, W4A_LOG_ERR, "uid '%s' is not a number", field[2]);
    }
    else if (r->uid < k->min_uid) {
        report(c, W4A_LOG_ERR, "uid %u is below the minimum %u", r->uid,
               k->min_uid);
    }
    if (!parse_id(field[3], &r->gid)) {
        report(c, W4A_LOG_ERR, "gid '%s' is not a number", field[3]);
    }
    else if (r->gid < k->min_uid) {
        report(c, W4A_LOG_ERR, "gid %u is below the minimum %u", r->gid,
               k->min_uid);
    }

    if ((why = clean_path(field[4])) != NULL) {
        report(c, W4A_LOG_ERR, "document root '%s' is not an absolute, "
               "normalised path (%s)", field[4], why);
    }
    else {
        r->docroot = field[4];
        if (k->bases && k->bases->nelts) {
            int j, ok = 0;
            for (j = 0; j < k->bases->nelts && !ok; j++) {
                ok = docroot_under(r->docroot, APR_ARRAY_IDX(k->bases, j,
                                                            const char *));
            }
            if (!ok) {
                report(c, W4A_LOG_ERR, "document root %s is outside the "
                       "allowed bases", r->docroot);
            }
        }
        if (k->check_dirs) {
            struct stat st;
            if (stat(r->docroot, &st) != 0) {
                report(c, k->strict ? W4A_LOG_ERR : W4A_LOG_WARNING,
                       "document root %s is not a directory (%s)", r->docroot,
                       strerror(errno));
            }
            else if (!S_ISDIR(st.st_mode)) {
                report(c, k->strict ? W4A_LOG_ERR : W4A_LOG_WARNING,
                       "document root %s is not a directory", r->docroot);
            }
        }
    }

    if (strcmp(field[5], "-")) {
        if (!version_ok(field[5])) {
            report(c, W4A_LOG_ERR, "PHP version '%s' is not a version like "
                   "8.2 (or - for none)", field[5]);
        }
        r->php = field[5];
    }

    if (!strcmp(field[6], "active")) {
        r->state = W4A_STATE_ACTIVE;
    }
    else if (!strcmp(field[6], "suspended")) {
        r->state = W4A_STATE_SUSPENDED;
    }
    else {
        report(c, W4A_LOG_ERR, "unknown state '%s' (expected active or "
               "suspended)", field[6]);
    }

    if (has_flags) {
        parse_flags(c, r, field[7], log_buf, media_buf);
    }
}

static void parse_line(compile_ctx *c, char *line)
{
    char *field[MAX_FIELDS + 1], *item, *rest;
    char log_buf[PATH_LIMIT + 16], media_buf[W4A_HOST_MAX + 16];
    src_record_t r;
    map_record_t *out;
    apr_uint32_t recno, i, nn = 0;
    line_name_t canon = { NULL, 0, 0 };
    const char *why;
    int n;

    n = split_fields(line, field, MAX_FIELDS + 1);
    if (n == 0) {
        return;
    }
    c->stats->lines++;
    if (n < MAX_FIELDS - 1 || n > MAX_FIELDS) {
        report(c, W4A_LOG_ERR, "expected 7 or 8 fields (names hosting uid gid "
               "docroot php state [flags]), found %s%d", n > MAX_FIELDS
               ? "more than " : "", n > MAX_FIELDS ? MAX_FIELDS : n);
        return;
    }
    memset(&r, 0, sizeof(r));

    parse_fields(c, &r, field, n == MAX_FIELDS, log_buf, media_buf);

    /* The names, checked against the lines before and each other. */
    rest = field[0];
    while ((item = next_item(&rest)) != NULL) {
        apr_size_t len;
        map_slot_t *first;
        if (!*item) {
            report(c, W4A_LOG_ERR, "empty name in the list of names (a comma "
                   "too many?)");
            continue;
        }
        if (strlen(item) > W4A_HOST_MAX + 8) {
            report(c, W4A_LOG_ERR, "'%.40s...' is not a domain name or "
                   "*.wildcard (longer than 253 characters)", item);
            continue;
        }
        if ((why = map_name(item, 1, &len)) != NULL) {
            report(c, W4A_LOG_ERR, "'%s' is not a domain name or *.wildcard "
                   "(%s)", item, why);
            continue;
        }
        if (!grow(c, (void **)&c->ln, &c->ln_cap, nn + 1, sizeof(*c->ln))) {
            return;
        }
        c->ln[nn].name = item;
        c->ln[nn].len = len;
        c->ln[nn].hash = name_hash(item, len);
        first = name_find(c, item, len, c->ln[nn].hash);
        if (first) {
            report(c, W4A_LOG_ERR, "duplicate name '%s' (first on line %u)",
                   item, c->rec_line[first->record]);
            continue;
        }
        nn++;
    }
    if (nn > 0) {
        canon = c->ln[0];           /* before the sort: the first name */
    }
    if (nn > 1) {
        qsort(c->ln, nn, sizeof(*c->ln), cmp_line_names);
        for (i = 1; i < nn; i++) {
            if (c->ln[i].hash == c->ln[i - 1].hash
                && !strcmp(c->ln[i].name, c->ln[i - 1].name)) {
                report(c, W4A_LOG_ERR, "duplicate name '%s' (first on line "
                       "%u)", c->ln[i].name, c->line);
            }
        }
    }
    else if (nn == 0 && !c->line_bad) {
        report(c, W4A_LOG_ERR, "no domain name");
    }
    if (c->line_bad) {
        return;
    }


    /* A good line: its record and names go in. */
    recno = c->nrec;
    if (!grow(c, (void **)&c->rec, &c->rec_cap, recno + 1, sizeof(*c->rec))
        || !grow(c, (void **)&c->rec_line, &c->rec_line_cap, recno + 1,
                 sizeof(*c->rec_line))) {
        return;
    }
    out = &c->rec[recno];
    for (i = 0; i < nn; i++) {
        map_slot_t s;
        s.hash = c->ln[i].hash;
        s.name = str_add(c, c->ln[i].name, c->ln[i].len);
        s.record = recno;
        if (s.name == NONE || !name_add(c, &s)) {
            return;
        }
        if (c->ln[i].name == canon.name) {
            /* a wildcard-only line: its domain is the suffix */
            out->domain = s.name + (canon.name[0] == '*' ? 2 : 0);
        }
    }
    out->hosting = intern(c, r.hosting);
    out->docroot = intern(c, r.docroot);
    out->php = intern(c, r.php);
    out->log_dir = intern(c, r.log_dir);
    out->media = intern(c, r.media);
    out->uid = r.uid;
    out->gid = r.gid;
    out->state = r.state;
    out->flags = r.flags | (r.php_limit << LIMIT_SHIFT)
                 | (r.req_limit << REQ_SHIFT);
    c->rec_line[recno] = c->line;
    if (!c->nomem) {
        c->nrec++;
    }
}

/* ------------------------------------------------------------------ */
/* Compiling: the index file.                                          */

static apr_status_t write_all(int fd, const void *data, apr_size_t len)
{
    const char *p = data;

    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return w < 0 ? APR_FROM_OS_ERROR(errno) : APR_EGENERAL;
        }
        p += w;
        len -= (apr_size_t)w;
    }
    return APR_SUCCESS;
}

#if APR_IS_BIGENDIAN
static void to_little_endian(compile_ctx *c)
{
    apr_uint32_t i;

    for (i = 0; i < c->names.cap; i++) {
        c->names.slot[i].hash = LE64(c->names.slot[i].hash);
        c->names.slot[i].name = LE32(c->names.slot[i].name);
        c->names.slot[i].record = LE32(c->names.slot[i].record);
    }
    for (i = 0; i < c->nrec; i++) {
        apr_uint32_t *f = (apr_uint32_t *)&c->rec[i];
        apr_size_t j;
        for (j = 0; j < sizeof(map_record_t) / 4; j++) {
            f[j] = LE32(f[j]);
        }
    }
}
#endif

/* Header + sections to "<index>.tmp.<pid>", fsync, rename, fsync dir. */
static apr_status_t write_index(compile_ctx *c, const char *index_path)
{
    map_header_t h;
    sum64_t sum;
    apr_uint64_t slots_len, records_len;
    const char *tmp, *slash, *dir;
    apr_status_t rv = APR_SUCCESS;
    char ebuf[128];
    int fd, dfd;

    if (!c->names.cap && !names_resize(c, MIN_SLOTS)) {
        return APR_ENOMEM;          /* an empty map: an empty table */
    }
    slots_len = (apr_uint64_t)c->names.cap * sizeof(map_slot_t);
    records_len = (apr_uint64_t)c->nrec * sizeof(map_record_t);

#if APR_IS_BIGENDIAN
    to_little_endian(c);
#endif
    memset(&h, 0, sizeof(h));
    memcpy(h.magic, MAGIC, 8);
    h.format = LE32(FORMAT);
    h.header_size = LE32((apr_uint32_t)sizeof(h));
    h.file_size = LE64(sizeof(h) + slots_len + records_len + c->str.len);
    h.generation = LE64((apr_uint64_t)apr_time_now());
    h.nrecords = LE32(c->nrec);
    h.nnames = LE32(c->names.n);
    h.nslots = LE32(c->names.cap);
    h.slots_off = LE64(sizeof(h));
    h.slots_len = LE64(slots_len);
    h.records_off = LE64(sizeof(h) + slots_len);
    h.records_len = LE64(records_len);
    h.strings_off = LE64(sizeof(h) + slots_len + records_len);
    h.strings_len = LE64(c->str.len);
    sum_init(&sum);
    sum_update(&sum, &h, CHECKSUM_AT);
    sum_update(&sum, c->names.slot, (apr_size_t)slots_len);
    sum_update(&sum, c->rec, (apr_size_t)records_len);
    sum_update(&sum, c->str.buf, c->str.len);
    h.checksum = LE64(sum_final(&sum));

    tmp = apr_psprintf(c->p, "%s.tmp.%ld", index_path, (long)getpid());
    unlink(tmp);                    /* left over by a crashed run */
    /* Created 0600: nobody else can open it before it has its group and
     * mode (and open descriptors keep what they were opened with). */
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
              0600);
    if (fd < 0) {
        rv = APR_FROM_OS_ERROR(errno);
        say(c->log, W4A_LOG_ERR, "%s: cannot create: %s (old index kept)",
            tmp, apr_strerror(rv, ebuf, sizeof(ebuf)));
        return rv;
    }
    /* The group first (fchown may clear set-id bits), then the mode,
     * whatever the umask: readable by httpd's children (the group), not
     * by the hostings' users. */
    if (c->perms.gid >= 0 && fchown(fd, (uid_t)-1, (gid_t)c->perms.gid) != 0) {
        rv = APR_FROM_OS_ERROR(errno);
        say(c->log, W4A_LOG_ERR, "%s: cannot give the index group %ld: %s "
            "(old index kept)", tmp, c->perms.gid,
            apr_strerror(rv, ebuf, sizeof(ebuf)));
        close(fd);
        unlink(tmp);
        return rv;
    }
    if (fchmod(fd, (mode_t)c->perms.mode) != 0) {
        rv = APR_FROM_OS_ERROR(errno);
    }
    if (rv == APR_SUCCESS) {
        rv = write_all(fd, &h, sizeof(h));
    }
    if (rv == APR_SUCCESS) {
        rv = write_all(fd, c->names.slot, (apr_size_t)slots_len);
    }
    if (rv == APR_SUCCESS) {
        rv = write_all(fd, c->rec, (apr_size_t)records_len);
    }
    if (rv == APR_SUCCESS) {
        rv = write_all(fd, c->str.buf, c->str.len);
    }
    if (rv == APR_SUCCESS && fsync(fd) != 0) {
        rv = APR_FROM_OS_ERROR(errno);
    }
    if (close(fd) != 0 && rv == APR_SUCCESS) {
        rv = APR_FROM_OS_ERROR(errno);
    }
    if (rv == APR_SUCCESS && rename(tmp, index_path) != 0) {
        rv = APR_FROM_OS_ERROR(errno);
    }
    if (rv != APR_SUCCESS) {
        unlink(tmp);
        say(c->log, W4A_LOG_ERR, "%s: cannot write the index: %s (old index "
            "kept)", index_path, apr_strerror(rv, ebuf, sizeof(ebuf)));
        return rv;
    }
    /* The rename itself must reach the disk. */
    slash = strrchr(index_path, '/');
    dir = !slash ? "." : slash == index_path ? "/"
          : apr_pstrmemdup(c->p, index_path, (apr_size_t)(slash - index_path));
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return APR_SUCCESS;
}

static void compile_cleanup(compile_ctx *c)
{
    free(c->str.buf);
    free(c->intern.hash);
    free(c->intern.off);
    free(c->names.slot);
    free(c->rec);
    free(c->rec_line);
    free(c->ln);
}

/* The whole text map, NUL-terminated, from p; read to its end, so that a
 * pipe does as well as a file. */
static apr_status_t read_text(const char *path, char **text, apr_size_t *len,
                              apr_pool_t *p)
{
    apr_file_t *f;
    apr_finfo_t fi;
    apr_size_t cap = 1 << 16, got = 0, n;
    apr_status_t rv;
    char *buf;

    rv = apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_BINARY, 0, p);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    if (apr_file_info_get(&fi, APR_FINFO_SIZE | APR_FINFO_TYPE, f)
        == APR_SUCCESS && fi.filetype == APR_REG && fi.size >= 0) {
        cap = (apr_size_t)fi.size + 1;      /* +1: EOF seen in one go */
    }
    buf = apr_palloc(p, cap + 1);
    for (;;) {
        n = cap - got;
        rv = apr_file_read(f, buf + got, &n);
        got += n;
        if (rv != APR_SUCCESS) {
            break;
        }
        if (got == cap) {               /* grew while read, or a pipe */
            char *nb = apr_palloc(p, 2 * cap + 1);
            memcpy(nb, buf, got);
            buf = nb;
            cap *= 2;
        }
    }
    apr_file_close(f);
    if (rv != APR_EOF) {
        return rv;
    }
    buf[got] = '\0';
    *text = buf;
    *len = got;
    return APR_SUCCESS;
}

apr_status_t w4a_map_compile(const char *text_path, const char *index_path,
                             const w4a_map_checks_t *checks,
                             const w4a_logger_t *log, w4a_map_stats_t *stats,
                             apr_pool_t *p)
{
    return w4a_map_compile_ex(text_path, index_path, checks, NULL, log, stats,
                              p);
}

apr_status_t w4a_map_compile_ex(const char *text_path, const char *index_path,
                                const w4a_map_checks_t *checks,
                                const w4a_map_perms_t *perms,
                                const w4a_logger_t *log,
                                w4a_map_stats_t *stats, apr_pool_t *p)
{
    compile_ctx c;
    w4a_map_stats_t local;
    apr_size_t len;
    char *text, *line, *end, *nl;
    apr_status_t rv;
    apr_pool_t *sub;
    char ebuf[128];

    if (!stats) {
        stats = &local;
    }
    memset(stats, 0, sizeof(*stats));
    if ((rv = apr_pool_create(&sub, p)) != APR_SUCCESS) {
        return rv;
    }
    rv = read_text(text_path, &text, &len, sub);
    if (rv != APR_SUCCESS) {
        say(log, W4A_LOG_ERR, "%s: cannot read: %s", text_path,
            apr_strerror(rv, ebuf, sizeof(ebuf)));
        apr_pool_destroy(sub);
        return rv;
    }

    memset(&c, 0, sizeof(c));
    c.p = sub;
    c.path = text_path;
    if (checks) {
        c.checks = *checks;
    }
    c.perms.mode = perms && perms->mode ? perms->mode & 07777
                                        : W4A_MAP_INDEX_MODE;
    c.perms.gid = perms ? perms->gid : -1;
    c.log = log;
    c.stats = stats;
    str_add(&c, "", 0);             /* offset 0: "" */

    for (line = text, end = text + len; line < end && !c.nomem;
         line = nl + 1) {
        char *hash;
        nl = memchr(line, '\n', (apr_size_t)(end - line));
        if (!nl) {
            nl = end;
        }
        *nl = '\0';
        c.line++;
        c.line_bad = 0;
        if (strlen(line) != (apr_size_t)(nl - line)) {
            report(&c, W4A_LOG_ERR, "NUL byte in line");
            continue;
        }
        if ((hash = strchr(line, '#')) != NULL) {
            *hash = '\0';
        }
        parse_line(&c, line);
    }

    stats->records = c.nrec;
    stats->names = c.names.n;
    if (c.nomem) {
        say(log, W4A_LOG_ERR, "%s: out of memory (or more than 4 GB of "
            "strings / 2^29 names) at line %u", text_path, c.line);
        rv = APR_ENOMEM;
    }
    else if (stats->errors && (!index_path || !c.checks.skip_bad)) {
        rv = APR_EINVAL;
    }
    else if (stats->errors && c.nrec == 0) {
        say(log, W4A_LOG_ERR, "%s: no line without errors: nothing to "
            "compile", text_path);
        rv = APR_EINVAL;
    }
    else {
        if (c.nrec == 0) {
            say(log, W4A_LOG_WARNING, "%s: no records: the index resolves no "
                "host", text_path);
            stats->warnings++;
        }
        rv = index_path ? write_index(&c, index_path) : APR_SUCCESS;
    }
    compile_cleanup(&c);
    apr_pool_destroy(sub);
    return rv;
}

/* ------------------------------------------------------------------ */
/* Single records: an SQL row, a cache value.                          */

typedef struct {
    char msg[512];
    apr_size_t skip;               /* length of report()'s "path:line: " */
} first_error_t;

static void keep_first_error(void *baton, int level, const char *msg)
{
    first_error_t *fe = baton;
    if (level <= W4A_LOG_ERR && !fe->msg[0]) {
        apr_cpystrn(fe->msg, msg + (strlen(msg) > fe->skip ? fe->skip : 0),
                    sizeof(fe->msg));
    }
}

/* A copy that fits the compiler's in-place parsers, or NULL if too long. */
static char *field_copy(apr_pool_t *p, const char *v, apr_size_t max)
{
    if (!v || !*v) {
        return apr_pstrdup(p, "-");
    }
    return strlen(v) > max ? NULL : apr_pstrdup(p, v);
}

apr_status_t w4a_record_parse(w4a_hosting_t *rec, const char *key,
                              const char *domain,
                              const char *const fields[W4A_RECORD_FIELDS],
                              const w4a_map_checks_t *checks,
                              const char **err, apr_pool_t *p)
{
    compile_ctx c;
    w4a_map_stats_t stats;
    w4a_logger_t log;
    first_error_t fe;
    src_record_t r;
    char *field[MAX_FIELDS];
    char log_buf[PATH_LIMIT + 16], media_buf[W4A_HOST_MAX + 16];
    char *name;
    apr_size_t len;
    const char *why;
    int i;

    memset(&c, 0, sizeof(c));
    memset(&stats, 0, sizeof(stats));
    memset(&r, 0, sizeof(r));
    fe.msg[0] = '\0';
    fe.skip = strlen("record:0: ");
    log.fn = keep_first_error;
    log.baton = &fe;
    c.p = p;
    c.path = "record";
    c.log = &log;
    c.stats = &stats;
    if (checks) {
        c.checks = *checks;
        c.checks.check_dirs = 0;        /* never a stat() per request */
    }

    /* key: the name that matched (a host or "*.suffix") */
    if (!key || strlen(key) > W4A_HOST_MAX + 2
        || (why = map_name(name = apr_pstrdup(p, key), 1, &len)) != NULL) {
        *err = "the looked-up name is not a domain name or *.wildcard";
        return APR_EINVAL;
    }
    rec->matched = name;
    if (domain && *domain) {
        if (strlen(domain) > W4A_HOST_MAX
            || map_name(name = apr_pstrdup(p, domain), 0, &len) != NULL) {
            *err = apr_psprintf(p, "domain '%.80s' is not a domain name",
                                domain);
            return APR_EINVAL;
        }
        rec->domain = name;
    }
    else {
        rec->domain = rec->matched + (rec->matched[0] == '*' ? 2 : 0);
    }

    field[0] = NULL;
    for (i = 0; i < W4A_RECORD_FIELDS; i++) {
        field[i + 1] = field_copy(p, fields[i], i == 3 ? PATH_LIMIT
                                                       : PATH_LIMIT + 256);
        if (!field[i + 1] || (i < 6 && strpbrk(field[i + 1], " \t\r\n\v\f"))) {
            *err = apr_psprintf(p, "field %d is too long or holds a blank",
                                i + 2);
            return APR_EINVAL;
        }
    }
    parse_fields(&c, &r, field, 1, log_buf, media_buf);
    if (c.line_bad) {
        *err = apr_pstrdup(p, fe.msg[0] ? fe.msg : "invalid record");
        return APR_EINVAL;
    }
    rec->hosting = apr_pstrdup(p, r.hosting);
    rec->uid = r.uid;
    rec->gid = r.gid;
    rec->docroot = apr_pstrdup(p, r.docroot);
    rec->php_version = r.php ? apr_pstrdup(p, r.php) : NULL;
    rec->state = (w4a_state_e)r.state;
    rec->flags = r.flags;
    rec->log_dir = r.log_dir ? apr_pstrdup(p, r.log_dir) : NULL;
    rec->media_host = r.media ? apr_pstrdup(p, r.media) : NULL;
    rec->php_limit = r.php_limit;
    rec->req_limit = r.req_limit;
    return APR_SUCCESS;
}

char *w4a_record_format(const w4a_hosting_t *rec, apr_pool_t *p)
{
    const char *flags = "";

    if ((rec->flags & W4A_FLAG_LOG) && rec->log_dir) {
        flags = apr_pstrcat(p, ",log=", rec->log_dir, NULL);
    }
    if (rec->media_host) {
        flags = apr_pstrcat(p, flags, ",media=", rec->media_host, NULL);
    }
    if (rec->flags & W4A_FLAG_REWRITE) {
        flags = apr_pstrcat(p, flags, ",rewrite", NULL);
    }
    if (rec->php_limit) {
        flags = apr_psprintf(p, "%s,php_limit=%u", flags, rec->php_limit);
    }
    if (rec->req_limit) {
        flags = apr_psprintf(p, "%s,req_limit=%u", flags, rec->req_limit);
    }
    flags = *flags ? flags + 1 : "-";
    return apr_psprintf(p, "%s %s %s %u %u %s %s %s %s", rec->matched,
                        rec->domain, rec->hosting, rec->uid, rec->gid,
                        rec->docroot,
                        rec->php_version ? rec->php_version : "-",
                        w4a_state_name(rec->state), flags);
}

apr_status_t w4a_record_parse_line(w4a_hosting_t *rec, const char *line,
                                   const w4a_map_checks_t *checks,
                                   const char **err, apr_pool_t *p)
{
    char *copy = apr_pstrdup(p, line);
    char *field[MAX_FIELDS + 2];
    int n = split_fields(copy, field, MAX_FIELDS + 2);

    if (n != MAX_FIELDS + 1) {
        *err = "expected 9 fields (key domain hosting uid gid docroot php "
               "state flags)";
        return APR_EINVAL;
    }
    return w4a_record_parse(rec, field[0], field[1],
                            (const char *const *)field + 2, checks, err, p);
}
