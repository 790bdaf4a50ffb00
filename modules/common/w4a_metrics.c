/**
 * @file w4a_metrics.c
 * @brief The node's per-hosting counters (see w4a_metrics.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_strings.h>
#include <apr_time.h>

#include "w4a_metrics.h"

#define METRICS_MAGIC   0x77346d31u     /* "w4m1" */
#define METRICS_VERSION 3u      /* 2: refusals by check; 3: domains */
#define CLAIM_SPINS     1000

const char *const w4a_metrics_counter_names[W4A_MC_MAX] = {
    "requests", "bytes", "1xx", "2xx", "3xx", "4xx", "5xx", "posts",
    "php_requests", "php_us", "backend_errors", "refused", "recent_script",
    "refused_guard_ban_rate", "refused_guard_ban_login",
    "refused_guard_ban_fleet", "refused_guard_ban_admin",
    "refused_guard_other", "refused_guard_hosting_limit",
    "refused_guard_hosting_client_share", "refused_vhost_record",
    "refused_vhost_owner", "refused_vhost_handler", "refused_vhost_htaccess",
    "refused_vhost_file_type", "refused_vhost_other", "refused_php_check",
    "refused_php_limit", "refused_php_client_share", "refused_php_other"
};

const char *const w4a_metrics_check_names[W4A_METRICS_CHECKS] = {
    "guard-ban-rate", "guard-ban-login", "guard-ban-fleet", "guard-ban-admin",
    "guard-other", "guard-hosting-limit", "guard-hosting-client-share",
    "vhost-record", "vhost-owner", "vhost-handler", "vhost-htaccess",
    "vhost-file-type", "vhost-other", "php-check", "php-limit",
    "php-client-share", "php-other"
};

/* The note values each module sets, and their check. */
typedef struct {
    const char *value;
    int         check;
} note_check;

static const note_check guard_notes[] = {
    { "rate", 0 }, { "login", 1 }, { "fleet", 2 }, { "admin", 3 },
    { NULL, 4 }
};
static const note_check guard_hosting_notes[] = {
    { "limit", 5 }, { "client-share", 6 }, { NULL, 4 }
};
static const note_check vhost_notes[] = {
    { "refused", 7 }, { "owner_denied", 8 }, { "handlers_refused", 9 },
    { "htaccess_refused", 10 }, { "special_denied", 11 }, { NULL, 12 }
};
static const note_check php_notes[] = {
    { "check", 13 }, { "busy", 14 }, { "client-share", 15 }, { NULL, 16 }
};

static int check_in(const note_check *t, const char *v)
{
    for (; t->value; t++) {
        if (!strcmp(t->value, v)) {
            break;
        }
    }
    return W4A_MC_REF_FIRST + t->check;
}

/* The slot of a record: its strings' address, mixed (Fibonacci). */
static apr_uint32_t cache_slot(const char *hosting, const char *domain)
{
    apr_uint64_t k = (apr_uint64_t)(apr_uintptr_t)(domain ? domain : hosting);

    return (apr_uint32_t)((k * 11400714819323198485ull) >> 54)
           & (W4A_METRICS_CACHE - 1);
}

w4a_metrics_row_t *w4a_metrics_rows(w4a_metrics_table_t *t,
                                    w4a_metrics_cache_t *cache,
                                    const char *hosting, const char *domain,
                                    apr_uint32_t cap, w4a_metrics_drow_t **drow,
                                    int *full, int *dfull)
{
    int domains = t->ndrows && cap;
    apr_uint32_t i = 0, ri, di;
    apr_uint64_t v;
    w4a_metrics_row_t *row;

    *dfull = 0;
    if (cache && hosting) {
        i = cache_slot(hosting, domain);
        v = __atomic_load_n(&cache->slot[i], __ATOMIC_RELAXED);
        ri = (apr_uint32_t)(v >> 32);       /* index + 1, 0: empty */
        di = (apr_uint32_t)v;               /* index + 1, 0: none */
        if (ri && ri <= t->nrows && !strcmp(t->rows[ri - 1].name, hosting)) {
            if (!domains && !di) {
                *full = 0;
                *drow = NULL;
                return &t->rows[ri - 1];
            }
            if (domains && di && di <= t->ndrows && domain) {
                w4a_metrics_drow_t *d = &w4a_metrics_drows(t)[di - 1];
                if (d->hosting == ri - 1 && !strcmp(d->name, domain)) {
                    *full = 0;
                    *drow = d;
                    return &t->rows[ri - 1];
                }
            }
        }
    }
    row = w4a_metrics_row(t, hosting, full);
    *drow = w4a_metrics_domain_row(t, row, domain, cap, dfull);
    /* only a hosting's own row and, with domains, its domain's own row:
     * the one a hit can check by name */
    if (cache && hosting && row != &t->other && row != &t->none
        && (!domains || (*drow && *drow != &t->dother && domain
                         && !strcmp((*drow)->name, domain)))) {
        ri = (apr_uint32_t)(row - t->rows) + 1;
        di = *drow ? (apr_uint32_t)(*drow - w4a_metrics_drows(t)) + 1 : 0;
        __atomic_store_n(&cache->slot[i], ((apr_uint64_t)ri << 32) | di,
                         __ATOMIC_RELAXED);
    }
    return row;
}

int w4a_metrics_check_of(const char *guard, const char *guard_hosting,
                         const char *vhost, const char *php)
{
    return guard ? check_in(guard_notes, guard)
           : guard_hosting ? check_in(guard_hosting_notes, guard_hosting)
           : vhost ? check_in(vhost_notes, vhost)
           : php ? check_in(php_notes, php) : -1;
}

apr_size_t w4a_metrics_size(apr_uint32_t nrows, apr_uint32_t ndrows)
{
    return sizeof(w4a_metrics_table_t)
           + (apr_size_t)(nrows - 1) * sizeof(w4a_metrics_row_t)
           + (apr_size_t)ndrows * sizeof(w4a_metrics_drow_t);
}

static void special(w4a_metrics_row_t *row, const char *name)
{
    apr_cpystrn(row->name, name, sizeof(row->name));
    row->state = 2;
}

w4a_metrics_table_t *w4a_metrics_init(void *mem, apr_uint32_t nrows,
                                      apr_uint32_t ndrows, apr_uint32_t pid,
                                      apr_uint64_t now_us)
{
    w4a_metrics_table_t *t = mem;

    memset(t, 0, w4a_metrics_size(nrows, ndrows));
    t->version = METRICS_VERSION;
    t->nrows = nrows;
    t->ndrows = ndrows;
    apr_cpystrn(t->dother.name, W4A_METRICS_OTHER, sizeof(t->dother.name));
    t->dother.state = 2;
    t->pid = pid;
    t->started_us = now_us;
    special(&t->other, W4A_METRICS_OTHER);
    special(&t->none, W4A_METRICS_NONE);
    __atomic_store_n(&t->magic, METRICS_MAGIC, __ATOMIC_RELEASE);
    return t;
}

apr_status_t w4a_metrics_check(const void *mem, apr_size_t len)
{
    const w4a_metrics_table_t *t = mem;

    if (len < sizeof(*t)
        || __atomic_load_n(&t->magic, __ATOMIC_ACQUIRE) != METRICS_MAGIC
        || t->version != METRICS_VERSION
        || t->nrows < W4A_METRICS_MIN_ROWS || t->nrows > W4A_METRICS_MAX_ROWS
        || t->ndrows > W4A_METRICS_MAX_DOMAIN_ROWS
        || w4a_metrics_size(t->nrows, t->ndrows) != len) {
        return APR_EINVAL;
    }
    return APR_SUCCESS;
}

static apr_uint32_t hash_of(const char *s, apr_size_t *len)
{
    apr_uint32_t h = 2166136261u;
    const char *q;

    for (q = s; *q; q++) {
        h = (h ^ (unsigned char)*q) * 16777619u;
    }
    *len = (apr_size_t)(q - s);
    return h;
}

w4a_metrics_row_t *w4a_metrics_row(w4a_metrics_table_t *t, const char *hosting,
                                   int *full)
{
    apr_uint32_t h, i, n, probe;
    apr_size_t len;

    *full = 0;
    if (!hosting || !*hosting) {
        return &t->none;
    }
    h = hash_of(hosting, &len);
    if (len >= W4A_METRICS_NAME_MAX) {
        return &t->other;
    }
    probe = t->nrows < W4A_METRICS_PROBE ? t->nrows : W4A_METRICS_PROBE;
    for (n = 0, i = h % t->nrows; n < probe; n++, i = (i + 1) % t->nrows) {
        w4a_metrics_row_t *row = &t->rows[i];
        apr_uint32_t st = __atomic_load_n(&row->state, __ATOMIC_ACQUIRE);
        int spins;

        if (st == 0) {
            apr_uint32_t expect = 0;
            if (__atomic_compare_exchange_n(&row->state, &expect, 1, 0,
                                            __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE)) {
                row->hash = h;
                memcpy(row->name, hosting, len + 1);
                __atomic_store_n(&row->state, 2, __ATOMIC_RELEASE);
                __atomic_fetch_add(&t->used, 1, __ATOMIC_RELAXED);
                return row;
            }
            st = expect;
        }
        /* Another process is writing this row's name: a few stores. */
        for (spins = 0; st == 1 && spins < CLAIM_SPINS; spins++) {
            if (spins >= 64) {
                sched_yield();
            }
            st = __atomic_load_n(&row->state, __ATOMIC_ACQUIRE);
        }
        if (st == 2 && row->hash == h && !strcmp(row->name, hosting)) {
            return row;
        }
        /* st 1 still: its claimer died; the row is lost, go on */
    }
    *full = 1;
    return &t->other;
}

static int full_due(volatile apr_uint64_t *hits,
                    volatile apr_uint32_t *logged, apr_uint32_t now_s,
                    apr_uint32_t every)
{
    apr_uint32_t last;

    __atomic_fetch_add(hits, 1, __ATOMIC_RELAXED);
    last = __atomic_load_n(logged, __ATOMIC_ACQUIRE);
    if (last && now_s - last < every) {
        return 0;
    }
    return __atomic_compare_exchange_n(logged, &last, now_s, 0,
                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

int w4a_metrics_full_due(w4a_metrics_table_t *t, apr_uint32_t now_s,
                         apr_uint32_t every)
{
    return full_due(&t->full_hits, &t->full_logged, now_s, every);
}

int w4a_metrics_domain_full_due(w4a_metrics_table_t *t, apr_uint32_t now_s,
                                apr_uint32_t every)
{
    return full_due(&t->dfull_hits, &t->dfull_logged, now_s, every);
}

/* One more domain row for the hosting of @a row, unless it has @a cap. */
static int domain_reserve(w4a_metrics_row_t *row, apr_uint32_t cap)
{
    apr_uint32_t n = __atomic_load_n(&row->domains, __ATOMIC_RELAXED);

    while (n < cap) {
        if (__atomic_compare_exchange_n(&row->domains, &n, n + 1, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            return 1;
        }
    }
    return 0;
}

w4a_metrics_drow_t *w4a_metrics_domain_row(w4a_metrics_table_t *t,
                                           w4a_metrics_row_t *row,
                                           const char *domain,
                                           apr_uint32_t cap, int *full)
{
    w4a_metrics_drow_t *rows = w4a_metrics_drows(t);
    const char *name = domain;
    apr_uint32_t hidx, h, i, n, probe;
    apr_size_t len = 0;
    int other;

    *full = 0;
    if (!t->ndrows || !cap || row == &t->none) {
        return NULL;
    }
    if (row == &t->other) {
        return &t->dother;
    }
    hidx = (apr_uint32_t)(row - t->rows);
    /* no domain of the map has a parenthesis; one that has (a SQL row
     * nothing checked) is no name of its own */
    other = !name || !*name || name[0] == '(';
    probe = t->ndrows < W4A_METRICS_PROBE ? t->ndrows : W4A_METRICS_PROBE;
again:
    if (other) {
        name = W4A_METRICS_OTHER;
    }
    h = hash_of(name, &len) ^ (hidx * 2654435761u);
    if (len >= W4A_METRICS_DOMAIN_MAX) {
        other = 1;
        goto again;
    }
    for (n = 0, i = h % t->ndrows; n < probe; n++, i = (i + 1) % t->ndrows) {
        w4a_metrics_drow_t *d = &rows[i];
        apr_uint32_t st = __atomic_load_n(&d->state, __ATOMIC_ACQUIRE);
        int spins;

        if (st == 0) {
            apr_uint32_t expect = 0;
            /* Rows are never freed: a free row means the domain has none
             * further on either.  A new one only within the cap. */
            if (!other && !domain_reserve(row, cap)) {
                other = 1;
                goto again;
            }
            if (__atomic_compare_exchange_n(&d->state, &expect, 1, 0,
                                            __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE)) {
                d->hash = h;
                d->hosting = hidx;
                memcpy(d->name, name, len + 1);
                __atomic_store_n(&d->state, 2, __ATOMIC_RELEASE);
                __atomic_fetch_add(&t->dused, 1, __ATOMIC_RELAXED);
                return d;
            }
            if (!other) {
                __atomic_fetch_sub(&row->domains, 1, __ATOMIC_RELAXED);
            }
            st = expect;
        }
        for (spins = 0; st == 1 && spins < CLAIM_SPINS; spins++) {
            if (spins >= 64) {
                sched_yield();
            }
            st = __atomic_load_n(&d->state, __ATOMIC_ACQUIRE);
        }
        if (st == 2 && d->hash == h && d->hosting == hidx
            && !strcmp(d->name, name)) {
            return d;
        }
    }
    *full = 1;
    return &t->dother;
}

static void copy_row(w4a_metrics_snap_t *s, const w4a_metrics_row_t *row)
{
    int c;

    for (c = 0; c < W4A_MC_MAX; c++) {
        s->c[c] += __atomic_load_n(&row->c[c], __ATOMIC_RELAXED);
    }
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const w4a_metrics_snap_t *)a)->name,
                  ((const w4a_metrics_snap_t *)b)->name);
}

apr_array_header_t *w4a_metrics_snapshot(const w4a_metrics_table_t *t,
                                         apr_pool_t *p)
{
    apr_array_header_t *a = apr_array_make(p, 64, sizeof(w4a_metrics_snap_t));
    w4a_metrics_snap_t *s;
    apr_uint32_t i;
    int j, k;

    for (i = 0; i < t->nrows; i++) {
        const w4a_metrics_row_t *row = &t->rows[i];
        if (__atomic_load_n(&row->state, __ATOMIC_ACQUIRE) != 2) {
            continue;
        }
        s = apr_array_push(a);
        memset(s, 0, sizeof(*s));
        memcpy(s->name, row->name, sizeof(s->name));
        s->name[sizeof(s->name) - 1] = '\0';
        copy_row(s, row);
    }
    qsort(a->elts, (size_t)a->nelts, sizeof(*s), by_name);
    /* rows of one name (a claim that raced another) are one hosting */
    for (j = 0, k = 1; k < a->nelts; k++) {
        w4a_metrics_snap_t *x = &APR_ARRAY_IDX(a, j, w4a_metrics_snap_t);
        w4a_metrics_snap_t *y = &APR_ARRAY_IDX(a, k, w4a_metrics_snap_t);
        if (!strcmp(x->name, y->name)) {
            int c;
            for (c = 0; c < W4A_MC_MAX; c++) {
                x->c[c] += y->c[c];
            }
        }
        else if (++j != k) {
            APR_ARRAY_IDX(a, j, w4a_metrics_snap_t) = *y;
        }
    }
    if (a->nelts) {
        a->nelts = j + 1;
    }
    s = apr_array_push(a);
    memset(s, 0, sizeof(*s));
    apr_cpystrn(s->name, W4A_METRICS_NONE, sizeof(s->name));
    copy_row(s, &t->none);
    s = apr_array_push(a);
    memset(s, 0, sizeof(*s));
    apr_cpystrn(s->name, W4A_METRICS_OTHER, sizeof(s->name));
    copy_row(s, &t->other);
    return a;
}

static int by_pair(const void *a, const void *b)
{
    const w4a_metrics_dsnap_t *x = a, *y = b;
    int c = strcmp(x->hosting, y->hosting);
    return c ? c : strcmp(x->domain, y->domain);
}

apr_array_header_t *w4a_metrics_domain_snapshot(const w4a_metrics_table_t *t,
                                                apr_pool_t *p)
{
    apr_array_header_t *a = apr_array_make(p, 64, sizeof(w4a_metrics_dsnap_t));
    const w4a_metrics_drow_t *rows = w4a_metrics_drows(t);
    w4a_metrics_dsnap_t *s;
    apr_uint32_t i;
    int j, k, c;

    for (i = 0; i < t->ndrows; i++) {
        const w4a_metrics_drow_t *d = &rows[i];
        const w4a_metrics_row_t *row;
        if (__atomic_load_n(&d->state, __ATOMIC_ACQUIRE) != 2
            || d->hosting >= t->nrows) {
            continue;
        }
        row = &t->rows[d->hosting];
        if (__atomic_load_n(&row->state, __ATOMIC_ACQUIRE) != 2) {
            continue;
        }
        s = apr_array_push(a);
        memcpy(s->hosting, row->name, sizeof(s->hosting));
        s->hosting[sizeof(s->hosting) - 1] = '\0';
        memcpy(s->domain, d->name, sizeof(s->domain));
        s->domain[sizeof(s->domain) - 1] = '\0';
        for (c = 0; c < W4A_MD_MAX; c++) {
            s->c[c] = __atomic_load_n(&d->c[c], __ATOMIC_RELAXED);
        }
    }
    qsort(a->elts, (size_t)a->nelts, sizeof(*s), by_pair);
    for (j = 0, k = 1; k < a->nelts; k++) {
        w4a_metrics_dsnap_t *x = &APR_ARRAY_IDX(a, j, w4a_metrics_dsnap_t);
        w4a_metrics_dsnap_t *y = &APR_ARRAY_IDX(a, k, w4a_metrics_dsnap_t);
        if (!by_pair(x, y)) {
            for (c = 0; c < W4A_MD_MAX; c++) {
                x->c[c] += y->c[c];
            }
        }
        else if (++j != k) {
            APR_ARRAY_IDX(a, j, w4a_metrics_dsnap_t) = *y;
        }
    }
    if (a->nelts) {
        a->nelts = j + 1;
    }
    if (__atomic_load_n(&t->dother.c[W4A_MD_REQUESTS], __ATOMIC_RELAXED)) {
        s = apr_array_push(a);
        apr_cpystrn(s->hosting, W4A_METRICS_OTHER, sizeof(s->hosting));
        apr_cpystrn(s->domain, W4A_METRICS_OTHER, sizeof(s->domain));
        for (c = 0; c < W4A_MD_MAX; c++) {
            s->c[c] = __atomic_load_n(&t->dother.c[c], __ATOMIC_RELAXED);
        }
    }
    return a;
}

/* ------------------------------------------------------------------ */
/* The file.                                                          */

typedef struct {
    void       *mem;
    apr_size_t  len;
} mapping;

static apr_status_t unmap(void *data)
{
    mapping *m = data;
    munmap(m->mem, m->len);
    return APR_SUCCESS;
}

apr_status_t w4a_metrics_file_create(w4a_metrics_table_t **t, const char *path,
                                     apr_uint32_t nrows, apr_uint32_t ndrows,
                                     int mode, apr_uint32_t pid,
                                     const char **err, apr_pool_t *p)
{
    apr_size_t len = w4a_metrics_size(nrows, ndrows);
    const char *tmp = apr_psprintf(p, "%s.%u.tmp", path, pid);
    mapping *m;
    void *mem;
    int fd, e;

    unlink(tmp);
    fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        e = errno;
        *err = apr_psprintf(p, "cannot create %s: %s", tmp, strerror(e));
        return APR_FROM_OS_ERROR(e);
    }
    /* the mode asked for, whatever the umask */
    if (fchmod(fd, (mode_t)mode) != 0 || ftruncate(fd, (off_t)len) != 0) {
        e = errno;
        *err = apr_psprintf(p, "cannot size %s to %" APR_SIZE_T_FMT
                            " bytes: %s", tmp, len, strerror(e));
        goto fail;
    }
    mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) {
        e = errno;
        *err = apr_psprintf(p, "cannot map %s: %s", tmp, strerror(e));
        goto fail;
    }
    *t = w4a_metrics_init(mem, nrows, ndrows, pid,
                          (apr_uint64_t)apr_time_now());
    if (rename(tmp, path) != 0) {
        e = errno;
        munmap(mem, len);
        *err = apr_psprintf(p, "cannot rename %s to %s: %s", tmp, path,
                            strerror(e));
        goto fail;
    }
    close(fd);
    m = apr_palloc(p, sizeof(*m));
    m->mem = mem;
    m->len = len;
    apr_pool_cleanup_register(p, m, unmap, apr_pool_cleanup_null);
    return APR_SUCCESS;
fail:
    close(fd);
    unlink(tmp);
    return APR_FROM_OS_ERROR(e);
}

apr_status_t w4a_metrics_file_open(const w4a_metrics_table_t **t,
                                   const char *path, const char **err,
                                   apr_pool_t *p)
{
    struct stat st;
    mapping *m;
    void *mem;
    int fd, e;

    /* without blocking: a FIFO there is refused below, not waited on */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        e = errno;
        *err = apr_psprintf(p, "cannot open %s: %s", path, strerror(e));
        return APR_FROM_OS_ERROR(e);
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)
        || st.st_size < (off_t)sizeof(w4a_metrics_table_t)) {
        close(fd);
        *err = apr_psprintf(p, "%s is not a metrics table", path);
        return APR_EINVAL;
    }
    /* httpd's parent makes it root's, 0600: a table of another owner, or
     * that others may write, could be a tenant's forgery (a W4AMetricsFile
     * in a directory a hosting can write) and is not read. */
    if ((st.st_uid != 0 && st.st_uid != geteuid())
        || (st.st_mode & (S_IWGRP | S_IWOTH))) {
        close(fd);
        *err = apr_psprintf(p, "%s is not httpd's table: owned by uid %ld "
                            "or writable by others (mode %04o)", path,
                            (long)st.st_uid,
                            (unsigned)(st.st_mode & 07777));
        return APR_EACCES;
    }
    mem = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    e = errno;
    close(fd);
    if (mem == MAP_FAILED) {
        *err = apr_psprintf(p, "cannot map %s: %s", path, strerror(e));
        return APR_FROM_OS_ERROR(e);
    }
    m = apr_palloc(p, sizeof(*m));
    m->mem = mem;
    m->len = (apr_size_t)st.st_size;
    apr_pool_cleanup_register(p, m, unmap, apr_pool_cleanup_null);
    if (w4a_metrics_check(mem, m->len) != APR_SUCCESS) {
        *err = apr_psprintf(p, "%s is not a metrics table of this version",
                            path);
        return APR_EINVAL;
    }
    *t = mem;
    return APR_SUCCESS;
}
