/*
 * geoip_db.c: private copies, validation and lookups of MaxMind DB files
 * (see geoip_db.h).  httpd-free: APR and libmaxminddb only.
 */

#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <apr_atomic.h>
#include <apr_file_io.h>
#include <apr_strings.h>

#include "geoip_db.h"

apr_status_t w4a_geoip_fid_stat(w4a_geoip_fid_t *id, const char *path,
                                apr_pool_t *p)
{
    apr_finfo_t fi;
    apr_status_t rv = apr_stat(&fi, path, APR_FINFO_MIN | APR_FINFO_IDENT, p);

    memset(id, 0, sizeof(*id));
    if (rv != APR_SUCCESS && rv != APR_INCOMPLETE) {
        return rv;
    }
    id->exists = 1;
    id->ino = fi.inode;
    id->dev = fi.device;
    id->size = fi.size;
    id->mtime = fi.mtime;
    id->ctime = fi.ctime;
    return APR_SUCCESS;
}

int w4a_geoip_fid_same(const w4a_geoip_fid_t *a, const w4a_geoip_fid_t *b)
{
    if (!a->exists || !b->exists) {
        return a->exists == b->exists;
    }
    return a->ino == b->ino && a->dev == b->dev && a->size == b->size
           && a->mtime == b->mtime && a->ctime == b->ctime;
}

/* Addresses every database is asked about before it is used: each must
 * give MMDB_SUCCESS, and a record found must be readable to its end. */
static const char *const probe_v4[] = {
    "1.1.1.1", "8.8.8.8", "81.2.69.160", "192.0.2.1", "127.0.0.1", NULL
};
static const char *const probe_v6[] = {
    "2001:db8::1", "2a02:ff0::1", "::1", "::ffff:8.8.8.8", NULL
};

static apr_status_t probe(const MMDB_s *mmdb, const char *ip,
                          const char **why, apr_pool_t *p)
{
    int gai = 0, err = MMDB_SUCCESS;
    MMDB_lookup_result_s res = MMDB_lookup_string(mmdb, ip, &gai, &err);
    MMDB_entry_data_list_s *list = NULL;

    if (gai) {
        *why = apr_psprintf(p, "test address %s: %s", ip, gai_strerror(gai));
        return APR_EINVAL;
    }
    if (err != MMDB_SUCCESS) {
        *why = apr_psprintf(p, "test lookup of %s: %s", ip,
                            MMDB_strerror(err));
        return APR_EINVAL;
    }
    if (!res.found_entry) {
        return APR_SUCCESS;
    }
    err = MMDB_get_entry_data_list(&res.entry, &list);
    MMDB_free_entry_data_list(list);
    if (err != MMDB_SUCCESS) {
        *why = apr_psprintf(p, "record of test address %s: %s", ip,
                            MMDB_strerror(err));
        return APR_EINVAL;
    }
    return APR_SUCCESS;
}

apr_status_t w4a_geoip_db_open(w4a_geoip_db_t **out, const char *path,
                               const char **why, apr_pool_t *p)
{
    w4a_geoip_db_t *db = calloc(1, sizeof(*db));
    const MMDB_metadata_s *md;
    const char *const *ip;
    int err;

    *out = NULL;
    if (!db) {
        *why = "out of memory";
        return APR_ENOMEM;
    }
    err = MMDB_open(path, MMDB_MODE_MMAP, &db->mmdb);
    if (err != MMDB_SUCCESS) {
        *why = apr_psprintf(p, "%s%s%s", MMDB_strerror(err),
                            err == MMDB_IO_ERROR ? ": " : "",
                            err == MMDB_IO_ERROR ? strerror(errno) : "");
        free(db);
        return err == MMDB_IO_ERROR ? APR_FROM_OS_ERROR(errno) : APR_EINVAL;
    }
    md = &db->mmdb.metadata;
    if (md->binary_format_major_version != 2) {
        *why = apr_psprintf(p, "binary format %u, not 2",
                            (unsigned)md->binary_format_major_version);
    }
    else if (md->record_size != 24 && md->record_size != 28
             && md->record_size != 32) {
        *why = apr_psprintf(p, "record size %u", (unsigned)md->record_size);
    }
    else if (md->ip_version != 4 && md->ip_version != 6) {
        *why = apr_psprintf(p, "IP version %u", (unsigned)md->ip_version);
    }
    else if (md->node_count == 0) {
        *why = "no nodes";
    }
    else if (!md->database_type || !*md->database_type) {
        *why = "no database type in the metadata";
    }
    else {
        *why = NULL;
    }
    for (ip = probe_v4; !*why && *ip; ip++) {
        probe(&db->mmdb, *ip, why, p);
    }
    for (ip = probe_v6; !*why && md->ip_version == 6 && *ip; ip++) {
        probe(&db->mmdb, *ip, why, p);
    }
    if (*why) {
        MMDB_close(&db->mmdb);
        free(db);
        return APR_EINVAL;
    }
    db->copy_path = strdup(path);
    if (!db->copy_path) {
        MMDB_close(&db->mmdb);
        free(db);
        *why = "out of memory";
        return APR_ENOMEM;
    }
    *out = db;
    return APR_SUCCESS;
}

/* One cached value: immutable once published in a slot. */
typedef struct {
    apr_uint64_t        offset;    /* the record's offset in the data */
    const char *const  *path;
    int                 absent;
    char                value[1];
} cache_entry;

void w4a_geoip_db_close(w4a_geoip_db_t *db, int unlink_copy)
{
    int i;

    if (!db) {
        return;
    }
    for (i = 0; i < W4A_GEOIP_CACHE_SLOTS; i++) {
        free(db->cache[i]);
    }
    MMDB_close(&db->mmdb);
    if (unlink_copy && db->copy_path) {
        unlink(db->copy_path);
    }
    free(db->copy_path);
    free(db);
}

/* The identity of an open file. */
static apr_status_t fid_of_file(w4a_geoip_fid_t *id, apr_file_t *f)
{
    apr_finfo_t fi;
    apr_status_t rv = apr_file_info_get(&fi, APR_FINFO_MIN | APR_FINFO_IDENT,
                                        f);
    memset(id, 0, sizeof(*id));
    if (rv != APR_SUCCESS && rv != APR_INCOMPLETE) {
        return rv;
    }
    id->exists = 1;
    id->ino = fi.inode;
    id->dev = fi.device;
    id->size = fi.size;
    id->mtime = fi.mtime;
    id->ctime = fi.ctime;
    return APR_SUCCESS;
}

/* Copy the open @a in, of @a size bytes, into a new file @a tmp. */
static apr_status_t copy_to(apr_file_t *in, apr_off_t size, const char *tmp,
                            const char **why, apr_pool_t *p)
{
    apr_file_t *out;
    apr_off_t total = 0;
    char buf[65536];
    apr_status_t rv;

    rv = apr_file_open(&out, tmp, APR_FOPEN_WRITE | APR_FOPEN_CREATE
                       | APR_FOPEN_EXCL | APR_FOPEN_BINARY, APR_FPROT_UREAD
                       | APR_FPROT_UWRITE | APR_FPROT_GREAD, p);
    if (rv != APR_SUCCESS) {
        *why = apr_psprintf(p, "cannot create the private copy %s: %pm",
                            tmp, &rv);
        return rv;
    }
    for (;;) {
        apr_size_t n = sizeof(buf);
        rv = apr_file_read(in, buf, &n);
        if (rv == APR_EOF || (rv == APR_SUCCESS && n == 0)) {
            rv = APR_SUCCESS;
            break;
        }
        if (rv != APR_SUCCESS) {
            *why = apr_psprintf(p, "reading: %pm", &rv);
            break;
        }
        rv = apr_file_write_full(out, buf, n, NULL);
        if (rv != APR_SUCCESS) {
            *why = apr_psprintf(p, "writing the private copy %s: %pm", tmp,
                                &rv);
            break;
        }
        total += n;
    }
    if (apr_file_close(out) != APR_SUCCESS && rv == APR_SUCCESS) {
        rv = APR_EGENERAL;
        *why = apr_psprintf(p, "writing the private copy %s", tmp);
    }
    if (rv == APR_SUCCESS && total != size) {
        rv = APR_EAGAIN;            /* the file changed size under us */
    }
    if (rv != APR_SUCCESS) {
        apr_file_remove(tmp, p);
    }
    return rv;
}

apr_status_t w4a_geoip_db_load(w4a_geoip_db_t **db, const char *src,
                               const w4a_geoip_fid_t *expected,
                               const char *dir, const char *tag,
                               const char **why, apr_pool_t *p)
{
    apr_file_t *in;
    w4a_geoip_fid_t before, after, bypath;
    const char *copy, *tmp;
    apr_finfo_t fi;
    apr_status_t rv;

    *db = NULL;
    *why = NULL;
    rv = apr_file_open(&in, src, APR_FOPEN_READ | APR_FOPEN_BINARY, 0, p);
    if (rv != APR_SUCCESS) {
        *why = apr_psprintf(p, "cannot open: %pm", &rv);
        return rv;
    }
    if ((rv = fid_of_file(&before, in)) != APR_SUCCESS) {
        apr_file_close(in);
        *why = apr_psprintf(p, "cannot stat: %pm", &rv);
        return rv;
    }
    if (!w4a_geoip_fid_same(&before, expected)) {
        apr_file_close(in);
        return APR_EAGAIN;
    }
    copy = apr_psprintf(p, "%s/%s-%" APR_UINT64_T_HEX_FMT "-%"
                        APR_UINT64_T_HEX_FMT "-%" APR_INT64_T_FMT "-%"
                        APR_INT64_T_FMT ".mmdb", dir, tag,
                        (apr_uint64_t)before.dev, (apr_uint64_t)before.ino,
                        (apr_int64_t)before.size, (apr_int64_t)before.mtime);
    if (apr_stat(&fi, copy, APR_FINFO_SIZE, p) == APR_SUCCESS
        && fi.size == before.size) {
        /* Another process copied this version already (it renames a copy
         * into place only after the same checks). */
        apr_file_close(in);
    }
    else {
        tmp = apr_psprintf(p, "%s/.%s.%ld.tmp", dir, tag, (long)getpid());
        apr_file_remove(tmp, p);        /* left by a dead process */
        rv = copy_to(in, before.size, tmp, why, p);
        if (rv == APR_SUCCESS) {
            rv = fid_of_file(&after, in);
        }
        apr_file_close(in);
        if (rv == APR_SUCCESS) {
            /* Unchanged through the copy, and still the file at the path
             * (not renamed away meanwhile). */
            if (!w4a_geoip_fid_same(&before, &after)
                || w4a_geoip_fid_stat(&bypath, src, p) != APR_SUCCESS
                || !w4a_geoip_fid_same(&before, &bypath)) {
                rv = APR_EAGAIN;
            }
        }
        if (rv == APR_SUCCESS) {
            rv = apr_file_rename(tmp, copy, p);
            if (rv != APR_SUCCESS) {
                *why = apr_psprintf(p, "cannot rename the private copy to "
                                    "%s: %pm", copy, &rv);
            }
        }
        if (rv != APR_SUCCESS) {
            apr_file_remove(tmp, p);
            return rv;
        }
    }
    rv = w4a_geoip_db_open(db, copy, why, p);
    if (rv != APR_SUCCESS) {
        apr_file_remove(copy, p);
        return rv;
    }
    (*db)->source = before;
    return APR_SUCCESS;
}

apr_status_t w4a_geoip_lookup(const w4a_geoip_db_t *db,
                              const struct sockaddr *sa,
                              w4a_geoip_result_t *res)
{
    struct sockaddr_in v4;
    const struct sockaddr *q = sa;

    memset(res, 0, sizeof(*res));
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            /* ::ffff:a.b.c.d is a.b.c.d: an IPv4-only database cannot
             * take an IPv6 address, and in an IPv6 one the IPv4 networks
             * are under ::/96, not ::ffff:0:0/96 unless aliased. */
            memset(&v4, 0, sizeof(v4));
            v4.sin_family = AF_INET;
            memcpy(&v4.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
            q = (const struct sockaddr *)&v4;
        }
    }
    if (q->sa_family == AF_INET) {
        res->family = AF_INET;
        memcpy(res->addr, &((const struct sockaddr_in *)q)->sin_addr, 4);
    }
    else if (q->sa_family == AF_INET6) {
        res->family = AF_INET6;
        memcpy(res->addr, &((const struct sockaddr_in6 *)q)->sin6_addr, 16);
    }
    else {
        res->mmdb_error = MMDB_INVALID_LOOKUP_PATH_ERROR;
        return APR_EGENERAL;
    }
    if (res->family == AF_INET6 && db->mmdb.metadata.ip_version == 4) {
        return APR_NOTFOUND;        /* an IPv4 database knows no IPv6 */
    }
    res->res = MMDB_lookup_sockaddr(&db->mmdb, q, &res->mmdb_error);
    if (res->mmdb_error != MMDB_SUCCESS) {
        return APR_EGENERAL;
    }
    if (!res->res.found_entry) {
        return APR_NOTFOUND;
    }
    res->prefix = res->res.netmask;
    if (res->family == AF_INET && db->mmdb.metadata.ip_version == 6) {
        res->prefix = res->prefix >= 96 ? res->prefix - 96 : 0;
    }
    return APR_SUCCESS;
}

const char **w4a_geoip_path_parse(const char *spec, apr_pool_t *p)
{
    apr_array_header_t *a = apr_array_make(p, 4, sizeof(const char *));
    const char *s = spec, *e;

    if (!*spec) {
        return NULL;
    }
    for (;;) {
        e = strchr(s, '/');
        if ((e ? e : s + strlen(s)) == s) {
            return NULL;                    /* empty step */
        }
        APR_ARRAY_PUSH(a, const char *) = e ? apr_pstrmemdup(p, s, e - s)
                                            : apr_pstrdup(p, s);
        if (!e) {
            break;
        }
        s = e + 1;
    }
    APR_ARRAY_PUSH(a, const char *) = NULL;
    return (const char **)a->elts;
}

const char *w4a_geoip_value(w4a_geoip_result_t *res, const char *const *path,
                            apr_pool_t *p)
{
    MMDB_entry_data_s d;
    MMDB_entry_s entry = res->res.entry;
    int i;

    if (!res->res.found_entry
        || MMDB_aget_value(&entry, &d, path) != MMDB_SUCCESS
        || !d.has_data) {
        return NULL;
    }
    switch (d.type) {
    case MMDB_DATA_TYPE_UTF8_STRING:
        return apr_pstrmemdup(p, d.utf8_string, d.data_size);
    case MMDB_DATA_TYPE_DOUBLE:
        return apr_psprintf(p, "%.6f", d.double_value);
    case MMDB_DATA_TYPE_FLOAT:
        return apr_psprintf(p, "%.6f", (double)d.float_value);
    case MMDB_DATA_TYPE_UINT16:
        return apr_psprintf(p, "%u", (unsigned)d.uint16);
    case MMDB_DATA_TYPE_UINT32:
        return apr_psprintf(p, "%u", (unsigned)d.uint32);
    case MMDB_DATA_TYPE_INT32:
        return apr_psprintf(p, "%d", (int)d.int32);
    case MMDB_DATA_TYPE_UINT64:
        return apr_psprintf(p, "%" APR_UINT64_T_FMT, (apr_uint64_t)d.uint64);
    case MMDB_DATA_TYPE_BOOLEAN:
        return d.boolean ? "1" : "0";
    case MMDB_DATA_TYPE_UINT128: {
#if MMDB_UINT128_IS_BYTE_ARRAY
        char *out = apr_palloc(p, 35), *o = out;
        *o++ = '0';
        *o++ = 'x';
        for (i = 0; i < 16; i++) {
            o += apr_snprintf(o, 3, "%02x", d.uint128[i]);
        }
        return out;
#else
        (void)i;
        return apr_psprintf(p, "0x%016" APR_UINT64_T_HEX_FMT "%016"
                            APR_UINT64_T_HEX_FMT,
                            (apr_uint64_t)(d.uint128 >> 64),
                            (apr_uint64_t)d.uint128);
#endif
    }
    default:
        return NULL;                        /* map, array, bytes */
    }
}

const char *w4a_geoip_value_cached(w4a_geoip_db_t *db,
                                   w4a_geoip_result_t *res,
                                   const char *const *path, apr_pool_t *p)
{
    apr_uint64_t off = res->res.entry.offset;
    apr_uint64_t h = (off ^ ((apr_uintptr_t)path >> 4)) * 0x9E3779B97F4A7C15ull;
    volatile void **slot = (volatile void **)
        &db->cache[(h >> 32) % W4A_GEOIP_CACHE_SLOTS];
    const cache_entry *e = (const cache_entry *)*slot;
    cache_entry *mine;
    const char *v;
    apr_size_t len;

    if (!res->res.found_entry) {
        return NULL;
    }
    if (e && e->offset == off && e->path == path) {
        return e->absent ? NULL : apr_pstrdup(p, e->value);
    }
    v = w4a_geoip_value(res, path, p);
    if (e) {
        return v;                   /* the slot is taken: uncached */
    }
    len = v ? strlen(v) : 0;
    mine = malloc(sizeof(*mine) + len);
    if (!mine) {
        return v;
    }
    mine->offset = off;
    mine->path = path;
    mine->absent = v == NULL;
    memcpy(mine->value, v ? v : "", len + 1);
    if (apr_atomic_casptr(slot, mine, NULL) != NULL) {
        free(mine);                 /* another thread was first */
    }
    return v;
}

const char *w4a_geoip_network(const w4a_geoip_result_t *res, apr_pool_t *p)
{
    unsigned char a[16];
    char text[INET6_ADDRSTRLEN];
    int len = res->family == AF_INET ? 4 : 16;
    int bits = res->prefix, i;

    memcpy(a, res->addr, len);
    for (i = 0; i < len; i++) {
        int keep = bits >= 8 ? 8 : bits > 0 ? bits : 0;
        a[i] &= (unsigned char)(0xff << (8 - keep));
        bits -= 8;
    }
    if (!inet_ntop(res->family, a, text, sizeof(text))) {
        return NULL;
    }
    return apr_psprintf(p, "%s/%d", text, res->prefix);
}

int w4a_geoip_addr_parse(const char *s, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (strchr(s, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, s, &s6->sin6_addr) != 1) {
            return 0;
        }
        s6->sin6_family = AF_INET6;
        return 1;
    }
    else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        if (inet_pton(AF_INET, s, &s4->sin_addr) != 1) {
            return 0;
        }
        s4->sin_family = AF_INET;
        return 1;
    }
}
