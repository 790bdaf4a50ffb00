/*
 * The hosting map: text source, compiled index, lookup.  See w4a_map.h.
 *
 * Index layout (native little-endian, every section 8-byte aligned):
 *
 *   header   magic "W4AMAPv1", version, sizes, generation, counts, section
 *            offsets, FNV-1a 64 checksum of every byte but its own
 *   slots    nslots (a power of two >= 2 * names) x {hash64, name, record};
 *            open addressing, linear probing, record == EMPTY when free
 *   records  nrecords x {string offsets..., uid, gid, state, flags}
 *   strings  NUL-terminated strings; the section ends with a NUL, so any
 *            offset inside it names a terminated string
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_file_io.h>
#include <apr_hash.h>
#include <apr_strings.h>
#include <apr_time.h>

#include "w4a_host.h"
#include "w4a_map.h"
#include "w4a_util.h"

#define MAGIC        "W4AMAPv1"
#define FORMAT       1u
#define EMPTY        0xFFFFFFFFu
#define NONE         0xFFFFFFFFu
#define MAX_FIELDS   8

typedef struct {
    char         magic[8];
    apr_uint32_t format;
    apr_uint32_t header_size;
    apr_uint64_t file_size;
    apr_uint64_t generation;
    apr_uint32_t nrecords;
    apr_uint32_t nnames;
    apr_uint32_t nslots;
    apr_uint32_t reserved;
    apr_uint64_t slots_off;
    apr_uint64_t records_off;
    apr_uint64_t strings_off;
    apr_uint64_t strings_len;
    apr_uint64_t checksum;
} map_header_t;

typedef struct {
    apr_uint64_t hash;
    apr_uint32_t name;       /* string offset */
    apr_uint32_t record;     /* index, or EMPTY */
} map_slot_t;

typedef struct {
    apr_uint32_t domain, hosting, docroot, php, log_dir, media;  /* or NONE */
    apr_uint32_t uid, gid, state, flags;
} map_record_t;

struct w4a_map_t {
    void               *base;
    apr_size_t          size;
    const map_header_t *h;
    const map_slot_t   *slots;
    const map_record_t *records;
    const char         *strings;
};

const char *w4a_state_name(w4a_state_e state)
{
    switch (state) {
    case W4A_STATE_ACTIVE:    return "active";
    case W4A_STATE_SUSPENDED: return "suspended";
    }
    return "unknown";
}

/* ------------------------------------------------------------------ */
/* Hashing.                                                            */

static apr_uint64_t fnv1a(const void *data, apr_size_t len, apr_uint64_t h)
{
    const unsigned char *p = data;
    while (len--) {
        h ^= *p++;
        h *= 0x100000001b3ULL;
    }
    return h;
}

#define FNV_SEED 0xcbf29ce484222325ULL

/* FNV-1a with a final avalanche, so low bits (the slot) use every byte. */
static apr_uint64_t name_hash(const char *s, apr_size_t len)
{
    apr_uint64_t h = fnv1a(s, len, FNV_SEED);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* Every byte of the file but the checksum itself (the header's last
 * field), so a flipped header byte is caught too. */
static apr_uint64_t image_checksum(const void *image, apr_size_t size)
{
    apr_size_t head = offsetof(map_header_t, checksum);
    apr_uint64_t h = fnv1a(image, head, FNV_SEED);
    return fnv1a((const char *)image + sizeof(map_header_t),
                 size - sizeof(map_header_t), h);
}

static apr_uint64_t align8(apr_uint64_t v)
{
    return (v + 7) & ~(apr_uint64_t)7;
}

/* ------------------------------------------------------------------ */
/* Opening and lookup.                                                 */

static apr_status_t fail(const char **err, const char *why, apr_status_t rv)
{
    if (err) {
        *err = why;
    }
    return rv;
}

static int str_ok(const map_header_t *h, apr_uint32_t off, int may_be_none)
{
    if (off == NONE) {
        return may_be_none;
    }
    return off < h->strings_len;
}

static apr_status_t validate(const w4a_map_t *m, const char **err, apr_pool_t *p)
{
    const map_header_t *h = m->h;
    apr_uint64_t slots_end, records_end, strings_end, used = 0, i;

    if (m->size < sizeof(*h)) {
        return fail(err, "file shorter than an index header (truncated?)",
                    APR_EINVAL);
    }
    if (memcmp(h->magic, MAGIC, 8) != 0) {
        return fail(err, "not a w4a map index (bad magic)", APR_EINVAL);
    }
    if (h->format != FORMAT || h->header_size != sizeof(*h)) {
        return fail(err, apr_psprintf(p, "index format %u not supported "
                                      "(expected %u)", h->format, FORMAT),
                    APR_EINVAL);
    }
    if (h->file_size != m->size) {
        return fail(err, apr_psprintf(p, "index is %" APR_SIZE_T_FMT " bytes, "
                                      "header says %" APR_UINT64_T_FMT
                                      " (truncated or appended to)",
                                      m->size, h->file_size), APR_EINVAL);
    }
    if (h->nslots == 0 || (h->nslots & (h->nslots - 1))
        || h->nnames > h->nslots / 2 || h->strings_len == 0) {
        return fail(err, "index header counts are inconsistent", APR_EINVAL);
    }
    slots_end = h->slots_off + (apr_uint64_t)h->nslots * sizeof(map_slot_t);
    records_end = h->records_off
                  + (apr_uint64_t)h->nrecords * sizeof(map_record_t);
    strings_end = h->strings_off + h->strings_len;
    if (h->slots_off < sizeof(*h) || h->records_off < slots_end
        || h->strings_off < records_end || strings_end > m->size
        || (h->slots_off | h->records_off) & 7) {
        return fail(err, "index sections out of bounds", APR_EINVAL);
    }
    if (image_checksum(m->base, m->size) != h->checksum) {
        return fail(err, "index checksum mismatch (corrupt or half-written)",
                    APR_EINVAL);
    }
    if (m->strings[h->strings_len - 1] != '\0') {
        return fail(err, "index string table not terminated", APR_EINVAL);
    }
    for (i = 0; i < h->nslots; i++) {
        const map_slot_t *s = &m->slots[i];
        if (s->record == EMPTY) {
            continue;
        }
        if (s->record >= h->nrecords || !str_ok(h, s->name, 0)) {
            return fail(err, "index slot points out of bounds", APR_EINVAL);
        }
        used++;
    }
    if (used != h->nnames) {
        return fail(err, "index name count does not match its table",
                    APR_EINVAL);
    }
    for (i = 0; i < h->nrecords; i++) {
        const map_record_t *r = &m->records[i];
        if (!str_ok(h, r->domain, 0) || !str_ok(h, r->hosting, 0)
            || !str_ok(h, r->docroot, 0) || !str_ok(h, r->php, 1)
            || !str_ok(h, r->log_dir, 1) || !str_ok(h, r->media, 1)
            || r->state > W4A_STATE_SUSPENDED) {
            return fail(err, "index record out of bounds", APR_EINVAL);
        }
    }
    return APR_SUCCESS;
}

apr_status_t w4a_map_open(w4a_map_t **map, const char *path,
                          const char **err, apr_pool_t *p)
{
    struct stat st;
    w4a_map_t *m;
    apr_status_t rv;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        rv = APR_FROM_OS_ERROR(errno);
        return fail(err, apr_psprintf(p, "cannot open %s: %s", path,
                                      strerror(errno)), rv);
    }
    if (fstat(fd, &st) != 0) {
        rv = APR_FROM_OS_ERROR(errno);
        close(fd);
        return fail(err, "cannot stat the index", rv);
    }
    if (!S_ISREG(st.st_mode) || st.st_size < (off_t)sizeof(map_header_t)) {
        close(fd);
        return fail(err, "file shorter than an index header (empty or "
                    "truncated?)", APR_EINVAL);
    }
    m = calloc(1, sizeof(*m));
    if (!m) {
        close(fd);
        return fail(err, "out of memory", APR_ENOMEM);
    }
    m->size = (apr_size_t)st.st_size;
    m->base = mmap(NULL, m->size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m->base == MAP_FAILED) {
        rv = APR_FROM_OS_ERROR(errno);
        free(m);
        return fail(err, "cannot map the index", rv);
    }
    m->h = m->base;
    m->slots = (const map_slot_t *)((const char *)m->base + m->h->slots_off);
    m->records = (const map_record_t *)((const char *)m->base
                                        + m->h->records_off);
    m->strings = (const char *)m->base + m->h->strings_off;
    rv = validate(m, err, p);
    if (rv != APR_SUCCESS) {
        munmap(m->base, m->size);
        free(m);
        return rv;
    }
    *map = m;
    return APR_SUCCESS;
}

void w4a_map_close(w4a_map_t *map)
{
    if (map) {
        munmap(map->base, map->size);
        free(map);
    }
}

static const char *str_at(const w4a_map_t *m, apr_uint32_t off)
{
    return off == NONE ? NULL : m->strings + off;
}

static void fill(const w4a_map_t *m, const map_record_t *r, w4a_hosting_t *rec)
{
    rec->domain = str_at(m, r->domain);
    rec->hosting = str_at(m, r->hosting);
    rec->uid = r->uid;
    rec->gid = r->gid;
    rec->docroot = str_at(m, r->docroot);
    rec->php_version = str_at(m, r->php);
    rec->state = (w4a_state_e)r->state;
    rec->flags = r->flags;
    rec->log_dir = str_at(m, r->log_dir);
    rec->media_host = str_at(m, r->media);
}

static const map_slot_t *probe(const w4a_map_t *m, const char *key,
                               apr_size_t len)
{
    apr_uint64_t h = name_hash(key, len);
    apr_uint32_t mask = m->h->nslots - 1, i = (apr_uint32_t)h & mask, n;

    for (n = 0; n < m->h->nslots; n++, i = (i + 1) & mask) {
        const map_slot_t *s = &m->slots[i];
        if (s->record == EMPTY) {
            return NULL;
        }
        if (s->hash == h && !strcmp(m->strings + s->name, key)) {
            return s;
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

    if (len == 0 || len > W4A_HOST_MAX) {
        return APR_NOTFOUND;
    }
    s = probe(map, host, len);
    /* Wildcards, longest suffix first: "*.b.example.org", "*.example.org"... */
    for (i = 0; !s && i < len; i++) {
        if (host[i] != '.') {
            continue;
        }
        key[0] = '*';
        memcpy(key + 1, host + i, len - i + 1);
        s = probe(map, key, len - i + 1);
    }
    if (!s) {
        return APR_NOTFOUND;
    }
    fill(map, &map->records[s->record], rec);
    rec->matched = map->strings + s->name;
    return APR_SUCCESS;
}

int w4a_map_iterate(const w4a_map_t *map, w4a_map_record_fn *fn, void *baton)
{
    apr_uint32_t i;
    for (i = 0; i < map->h->nrecords; i++) {
        w4a_hosting_t rec;
        int rc;
        fill(map, &map->records[i], &rec);
        rec.matched = NULL;
        if ((rc = fn(baton, &rec)) != 0) {
            return rc;
        }
    }
    return 0;
}

apr_uint64_t w4a_map_generation(const w4a_map_t *map) { return map->h->generation; }
apr_uint32_t w4a_map_records(const w4a_map_t *map)    { return map->h->nrecords; }
apr_uint32_t w4a_map_names(const w4a_map_t *map)      { return map->h->nnames; }

/* ------------------------------------------------------------------ */
/* Compiling.                                                          */

typedef struct {
    const char  *domain, *hosting, *docroot, *php, *log_dir, *media;
    apr_uint32_t uid, gid, state, flags;
} src_record_t;

typedef struct {
    const char  *name;
    apr_uint32_t record;
} src_name_t;

typedef struct {
    apr_pool_t             *p;
    const char             *path;
    const w4a_map_checks_t *checks;
    const w4a_logger_t     *log;
    w4a_map_stats_t        *stats;
    apr_array_header_t     *records;   /* src_record_t */
    apr_array_header_t     *names;     /* src_name_t */
    apr_hash_t             *seen;      /* name -> line (as intptr) */
    apr_uint32_t            line;
    int                     line_bad;
} compile_ctx;

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

static int parse_id(const char *s, apr_uint32_t *out)
{
    char *end;
    apr_int64_t v;
    if (!*s || *s == '-' || *s == '+') {
        return 0;
    }
    errno = 0;
    v = apr_strtoi64(s, &end, 10);
    if (*end || errno == ERANGE || v < 0 || v >= 0xFFFFFFFFll) {
        return 0;
    }
    *out = (apr_uint32_t)v;
    return 1;
}

/* Absolute, no "." or ".." component, no "//"; one trailing '/' dropped. */
static const char *clean_path(apr_pool_t *p, const char *in)
{
    apr_size_t n = strlen(in);
    char *s;
    if (in[0] != '/' || strstr(in, "//") || strstr(in, "/./")
        || strstr(in, "/../") || (n >= 2 && !strcmp(in + n - 2, "/."))
        || (n >= 3 && !strcmp(in + n - 3, "/.."))) {
        return NULL;
    }
    s = apr_pstrdup(p, in);
    if (n > 1 && s[n - 1] == '/') {
        s[n - 1] = '\0';
    }
    return s;
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

/* A map name: a host name, or "*." + host name; NULL if invalid. */
static const char *map_name(apr_pool_t *p, const char *in)
{
    char buf[W4A_HOST_MAX + 1];
    apr_size_t len;
    int wild = in[0] == '*';

    if (wild && in[1] != '.') {
        return NULL;
    }
    if (w4a_host_normalise(wild ? in + 2 : in, buf, &len) != APR_SUCCESS
        || buf[0] == '[' || strchr(wild ? in + 2 : in, ':')) {
        return NULL;
    }
    return wild ? apr_pstrcat(p, "*.", buf, NULL) : apr_pstrdup(p, buf);
}

static void parse_flags(compile_ctx *c, src_record_t *r, char *flags)
{
    char *tok, *last;

    if (!strcmp(flags, "-")) {
        return;
    }
    for (tok = apr_strtok(flags, ",", &last); tok;
         tok = apr_strtok(NULL, ",", &last)) {
        if (!strcmp(tok, "log")) {
            r->flags |= W4A_FLAG_LOG;
        }
        else if (!strncmp(tok, "log=", 4)) {
            const char *d = clean_path(c->p, tok + 4);
            if (!d) {
                report(c, W4A_LOG_ERR, "log directory '%s' is not an absolute, "
                       "normalised path", tok + 4);
                continue;
            }
            r->flags |= W4A_FLAG_LOG;
            r->log_dir = d;
        }
        else if (!strncmp(tok, "media=", 6)) {
            const char *m = map_name(c->p, tok + 6);
            if (!m || m[0] == '*') {
                report(c, W4A_LOG_ERR, "media host '%s' is not a host name",
                       tok + 6);
                continue;
            }
            r->media = m;
        }
        else {
            report(c, W4A_LOG_ERR, "unknown flag '%s' (expected log, "
                   "log=DIR, media=HOST)", tok);
        }
    }
    if ((r->flags & W4A_FLAG_LOG) && !r->log_dir) {
        const char *vw = strstr(r->docroot, "/var/www/");
        if (!vw) {
            report(c, W4A_LOG_ERR, "flag 'log' needs log=DIR: document root "
                   "%s has no /var/www/ to find the hosting's home from",
                   r->docroot);
        }
        else {
            r->log_dir = apr_pstrcat(c->p, apr_pstrmemdup(c->p, r->docroot,
                                                          vw - r->docroot),
                                     "/log/apache2", NULL);
        }
    }
}

static void parse_line(compile_ctx *c, char *line)
{
    char *field[MAX_FIELDS + 1], *last, *tok, *names;
    int n = 0, i;
    src_record_t r;
    const w4a_map_checks_t *k = c->checks;
    apr_array_header_t *mine;
    apr_uint32_t recno;

    for (tok = apr_strtok(line, " \t\r", &last); tok && n <= MAX_FIELDS;
         tok = apr_strtok(NULL, " \t\r", &last)) {
        field[n++] = tok;
    }
    if (n == 0) {
        return;
    }
    c->stats->lines++;
    if (n < MAX_FIELDS - 1 || n > MAX_FIELDS) {
        report(c, W4A_LOG_ERR, "expected 7 or 8 fields (names hosting uid gid "
               "docroot php state [flags]), found %d", n);
        return;
    }
    memset(&r, 0, sizeof(r));
    r.hosting = field[1];
    for (tok = field[1]; *tok; tok++) {
        if (!((*tok >= 'a' && *tok <= 'z') || (*tok >= '0' && *tok <= '9')
              || *tok == '_' || *tok == '-' || *tok == '.')) {
            report(c, W4A_LOG_ERR, "hosting '%s' is not a Unix user name "
                   "([a-z0-9_.-])", field[1]);
            break;
        }
    }
    if (!parse_id(field[2], &r.uid)) {
        report(c, W4A_LOG_ERR, "uid '%s' is not a number", field[2]);
    }
    else if (k && r.uid < k->min_uid) {
        report(c, W4A_LOG_ERR, "uid %u is below the minimum %u", r.uid,
               k->min_uid);
    }
    if (!parse_id(field[3], &r.gid)) {
        report(c, W4A_LOG_ERR, "gid '%s' is not a number", field[3]);
    }
    else if (k && r.gid < k->min_uid) {
        report(c, W4A_LOG_ERR, "gid %u is below the minimum %u", r.gid,
               k->min_uid);
    }
    r.docroot = clean_path(c->p, field[4]);
    if (!r.docroot) {
        report(c, W4A_LOG_ERR, "document root '%s' is not an absolute, "
               "normalised path", field[4]);
        r.docroot = field[4];
    }
    else {
        if (k && k->bases && k->bases->nelts) {
            int ok = 0;
            for (i = 0; i < k->bases->nelts && !ok; i++) {
                ok = w4a_path_under(r.docroot, APR_ARRAY_IDX(k->bases, i,
                                                         const char *));
            }
            if (!ok) {
                report(c, W4A_LOG_ERR, "document root %s is outside the "
                       "allowed bases", r.docroot);
            }
        }
        if (k && k->check_dirs) {
            struct stat st;
            if (stat(r.docroot, &st) != 0 || !S_ISDIR(st.st_mode)) {
                report(c, k->strict ? W4A_LOG_ERR : W4A_LOG_WARNING,
                       "document root %s is not a directory", r.docroot);
            }
        }
    }
    if (strcmp(field[5], "-")) {
        if (!version_ok(field[5])) {
            report(c, W4A_LOG_ERR, "PHP version '%s' is not a version like "
                   "8.2 (or - for none)", field[5]);
        }
        r.php = field[5];
    }
    if (!strcmp(field[6], "active")) {
        r.state = W4A_STATE_ACTIVE;
    }
    else if (!strcmp(field[6], "suspended")) {
        r.state = W4A_STATE_SUSPENDED;
    }
    else {
        report(c, W4A_LOG_ERR, "unknown state '%s' (expected active or "
               "suspended)", field[6]);
    }
    parse_flags(c, &r, apr_pstrdup(c->p, n == MAX_FIELDS ? field[7] : "-"));

    /* Names last, so a bad line claims none of them. */
    recno = (apr_uint32_t)c->records->nelts;
    mine = apr_array_make(c->p, 4, sizeof(const char *));
    names = field[0];
    for (tok = apr_strtok(names, ",", &last); tok;
         tok = apr_strtok(NULL, ",", &last)) {
        const char *name = map_name(c->p, tok);
        void *first;
        if (!name) {
            report(c, W4A_LOG_ERR, "'%s' is not a domain name or *.wildcard",
                   tok);
            continue;
        }
        first = apr_hash_get(c->seen, name, APR_HASH_KEY_STRING);
        if (first) {
            report(c, W4A_LOG_ERR, "duplicate name '%s' (first on line %u)",
                   name, (apr_uint32_t)(apr_uintptr_t)first);
            continue;
        }
        APR_ARRAY_PUSH(mine, const char *) = name;
    }
    if (mine->nelts == 0 && !c->line_bad) {
        report(c, W4A_LOG_ERR, "no domain name");
    }
    if (c->line_bad) {
        return;
    }
    r.domain = APR_ARRAY_IDX(mine, 0, const char *);
    if (r.domain[0] == '*') {
        r.domain += 2;          /* canonical name of a wildcard-only line */
    }
    for (i = 0; i < mine->nelts; i++) {
        src_name_t *sn = apr_array_push(c->names);
        sn->name = APR_ARRAY_IDX(mine, i, const char *);
        sn->record = recno;
        apr_hash_set(c->seen, sn->name, APR_HASH_KEY_STRING,
                     (void *)(apr_uintptr_t)c->line);
    }
    *(src_record_t *)apr_array_push(c->records) = r;
}

/* Strings: appended to a growing buffer; returns the offset. */
typedef struct {
    char        *buf;
    apr_size_t   len, cap;
} strtab_t;

static apr_uint32_t str_add(strtab_t *t, const char *s)
{
    apr_size_t n;
    apr_uint32_t off;
    if (!s) {
        return NONE;
    }
    n = strlen(s) + 1;
    if (t->len + n > t->cap) {
        t->cap = (t->cap + n) * 2;
        t->buf = realloc(t->buf, t->cap);
        if (!t->buf) {
            abort();
        }
    }
    off = (apr_uint32_t)t->len;
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    return off;
}

static apr_status_t write_index(compile_ctx *c, const char *index_path)
{
    map_header_t h;
    strtab_t st = { NULL, 0, 0 };
    map_slot_t *slots;
    map_record_t *recs;
    apr_uint32_t *rec_hosting_off;
    char *image;
    apr_uint64_t size;
    int i, fd, dfd;
    apr_uint32_t nslots = 16;
    const char *tmp, *slash;
    apr_status_t rv = APR_SUCCESS;

    while (nslots < 2u * (apr_uint32_t)c->names->nelts) {
        nslots <<= 1;
    }
    slots = malloc(sizeof(*slots) * nslots);
    recs = calloc(c->records->nelts ? c->records->nelts : 1, sizeof(*recs));
    rec_hosting_off = NULL;
    if (!slots || !recs) {
        free(slots);
        free(recs);
        return APR_ENOMEM;
    }
    for (i = 0; i < (int)nslots; i++) {
        slots[i].record = EMPTY;
        slots[i].hash = 0;
        slots[i].name = 0;
    }
    str_add(&st, "");      /* offset 0: never a real string */
    for (i = 0; i < c->records->nelts; i++) {
        const src_record_t *r = &APR_ARRAY_IDX(c->records, i, src_record_t);
        recs[i].domain = str_add(&st, r->domain);
        recs[i].hosting = str_add(&st, r->hosting);
        recs[i].docroot = str_add(&st, r->docroot);
        recs[i].php = str_add(&st, r->php);
        recs[i].log_dir = str_add(&st, r->log_dir);
        recs[i].media = str_add(&st, r->media);
        recs[i].uid = r->uid;
        recs[i].gid = r->gid;
        recs[i].state = r->state;
        recs[i].flags = r->flags;
    }
    for (i = 0; i < c->names->nelts; i++) {
        const src_name_t *sn = &APR_ARRAY_IDX(c->names, i, src_name_t);
        apr_size_t len = strlen(sn->name);
        apr_uint64_t hv = name_hash(sn->name, len);
        apr_uint32_t j = (apr_uint32_t)hv & (nslots - 1);
        while (slots[j].record != EMPTY) {
            j = (j + 1) & (nslots - 1);
        }
        slots[j].hash = hv;
        slots[j].name = str_add(&st, sn->name);
        slots[j].record = sn->record;
    }

    memset(&h, 0, sizeof(h));
    memcpy(h.magic, MAGIC, 8);
    h.format = FORMAT;
    h.header_size = sizeof(h);
    h.generation = (apr_uint64_t)apr_time_now();
    h.nrecords = (apr_uint32_t)c->records->nelts;
    h.nnames = (apr_uint32_t)c->names->nelts;
    h.nslots = nslots;
    h.slots_off = align8(sizeof(h));
    h.records_off = align8(h.slots_off + (apr_uint64_t)nslots * sizeof(*slots));
    h.strings_off = align8(h.records_off
                           + (apr_uint64_t)h.nrecords * sizeof(*recs));
    h.strings_len = st.len;
    size = h.strings_off + st.len;
    h.file_size = size;

    image = calloc(1, size);
    if (!image) {
        free(slots);
        free(recs);
        free(st.buf);
        return APR_ENOMEM;
    }
    memcpy(image + h.slots_off, slots, (apr_size_t)nslots * sizeof(*slots));
    memcpy(image + h.records_off, recs, (apr_size_t)h.nrecords * sizeof(*recs));
    memcpy(image + h.strings_off, st.buf, st.len);
    memcpy(image, &h, sizeof(h));
    h.checksum = image_checksum(image, size);
    memcpy(image, &h, sizeof(h));
    free(slots);
    free(recs);
    free(st.buf);
    free(rec_hosting_off);

    tmp = apr_psprintf(c->p, "%s.tmp.%ld", index_path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rv = APR_FROM_OS_ERROR(errno);
    }
    else {
        apr_size_t done = 0;
        while (done < size) {
            ssize_t w = write(fd, image + done, size - done);
            if (w <= 0) {
                rv = APR_FROM_OS_ERROR(errno);
                break;
            }
            done += (apr_size_t)w;
        }
        if (rv == APR_SUCCESS && fsync(fd) != 0) {
            rv = APR_FROM_OS_ERROR(errno);
        }
        close(fd);
        if (rv == APR_SUCCESS && rename(tmp, index_path) != 0) {
            rv = APR_FROM_OS_ERROR(errno);
        }
        if (rv != APR_SUCCESS) {
            unlink(tmp);
        }
    }
    free(image);
    if (rv == APR_SUCCESS) {
        slash = strrchr(index_path, '/');
        dfd = open(slash ? apr_pstrmemdup(c->p, index_path,
                                          slash == index_path ? 1
                                          : (apr_size_t)(slash - index_path))
                         : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    else if (c->log && c->log->fn) {
        char msg[512];
        char ebuf[128];
        apr_snprintf(msg, sizeof(msg), "%s: cannot write the index: %s",
                     index_path, apr_strerror(rv, ebuf, sizeof(ebuf)));
        c->log->fn(c->log->baton, W4A_LOG_ERR, msg);
    }
    return rv;
}

apr_status_t w4a_map_compile(const char *text_path, const char *index_path,
                             const w4a_map_checks_t *checks,
                             const w4a_logger_t *log, w4a_map_stats_t *stats,
                             apr_pool_t *p)
{
    compile_ctx c;
    w4a_map_stats_t local;
    apr_file_t *f;
    apr_finfo_t fi;
    apr_size_t len;
    char *text, *line, *next;
    apr_status_t rv;
    apr_pool_t *sub;

    if (!stats) {
        stats = &local;
    }
    memset(stats, 0, sizeof(*stats));
    rv = apr_file_open(&f, text_path, APR_FOPEN_READ | APR_FOPEN_BINARY, 0, p);
    if (rv == APR_SUCCESS) {
        rv = apr_file_info_get(&fi, APR_FINFO_SIZE, f);
    }
    if (rv != APR_SUCCESS) {
        if (log && log->fn) {
            char ebuf[128];
            char msg[512];
            apr_snprintf(msg, sizeof(msg), "%s: cannot read: %s", text_path,
                         apr_strerror(rv, ebuf, sizeof(ebuf)));
            log->fn(log->baton, W4A_LOG_ERR, msg);
        }
        return rv;
    }
    apr_pool_create(&sub, p);
    len = (apr_size_t)fi.size;
    text = apr_palloc(sub, len + 1);
    rv = apr_file_read_full(f, text, len, &len);
    apr_file_close(f);
    if (rv != APR_SUCCESS && rv != APR_EOF) {
        apr_pool_destroy(sub);
        return rv;
    }
    text[len] = '\0';

    memset(&c, 0, sizeof(c));
    c.p = sub;
    c.path = text_path;
    c.checks = checks;
    c.log = log;
    c.stats = stats;
    c.records = apr_array_make(sub, 1024, sizeof(src_record_t));
    c.names = apr_array_make(sub, 2048, sizeof(src_name_t));
    c.seen = apr_hash_make(sub);

    for (line = text; line; line = next) {
        char *hash;
        next = strchr(line, '\n');
        if (next) {
            *next++ = '\0';
        }
        c.line++;
        c.line_bad = 0;
        if ((hash = strchr(line, '#')) != NULL) {
            *hash = '\0';
        }
        if (strlen(line) != (apr_size_t)((next ? next - 1 : text + len) - line)
            && !hash) {
            report(&c, W4A_LOG_ERR, "NUL byte in line");
            continue;
        }
        parse_line(&c, line);
    }

    stats->records = (apr_uint32_t)c.records->nelts;
    stats->names = (apr_uint32_t)c.names->nelts;
    if (stats->errors && !(checks && checks->skip_bad)) {
        apr_pool_destroy(sub);
        return APR_EINVAL;
    }
    rv = index_path ? write_index(&c, index_path) : APR_SUCCESS;
    apr_pool_destroy(sub);
    return rv;
}
