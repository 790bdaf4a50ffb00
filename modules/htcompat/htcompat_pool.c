/*
 * A PHP-FPM pool's own settings file, and a per-process cache of them.
 * httpd-free (APR and POSIX only): mod_w4a_htcompat, w4a-fpm-pools and
 * the unit tests share it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_allocator.h>
#include <apr_lib.h>
#include <apr_strings.h>
#if APR_HAS_THREADS
#include <apr_thread_mutex.h>
#endif

#include "htcompat_pool.h"
#include "w4a_util.h"

static int hexval(char c)
{
    return apr_isdigit(c) ? c - '0' : apr_tolower(c) - 'a' + 10;
}

static int unescape(char *s)
{
    char *w = s;
    for (; *s; s++) {
        if (*s == '%') {
            if (!apr_isxdigit(s[1]) || !apr_isxdigit(s[2])) {
                return 0;
            }
            *w++ = (char)(hexval(s[1]) * 16 + hexval(s[2]));
            s += 2;
        }
        else {
            *w++ = *s;
        }
    }
    *w = '\0';
    return 1;
}

const char *htc_pool_escape(const char *value, apr_pool_t *p)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *q;
    char *out = apr_palloc(p, 3 * strlen(value) + 1), *o = out;

    for (q = (const unsigned char *)value; *q; q++) {
        if (*q <= 0x20 || *q >= 0x7f || *q == '%') {
            *o++ = '%';
            *o++ = hex[*q >> 4];
            *o++ = hex[*q & 15];
        }
        else {
            *o++ = (char)*q;
        }
    }
    *o = '\0';
    return out;
}

/* The class of a name in htc_pool_t's sig (len: strlen(name) > 0). */
static unsigned sig_of(const char *name, apr_size_t len)
{
    return (unsigned)(len * 7 + (unsigned char)name[0] * 3
                      + (unsigned char)name[len - 1]) & 255u;
}

apr_status_t htc_pool_parse(htc_pool_t **out, const char *text,
                            const char **err, apr_pool_t *p)
{
    char *copy = apr_pstrdup(p, text), *line, *next;
    htc_pool_t *ps = apr_pcalloc(p, sizeof(*ps));
    int lineno = 0, magic = 0;

    ps->settings = apr_hash_make(p);
    for (line = copy; line; line = next) {
        char *last, *kind, *name, *val, *extra;
        htc_pool_setting_t *s;

        next = strchr(line, '\n');
        if (next) {
            *next++ = '\0';
        }
        lineno++;
        if (!*line || *line == '#') {
            continue;
        }
        kind = apr_strtok(line, " ", &last);
        name = apr_strtok(NULL, " ", &last);
        val = apr_strtok(NULL, " ", &last);
        extra = apr_strtok(NULL, " ", &last);
        if (!magic) {
            if (kind && !strcmp(kind, HTC_POOL_MAGIC) && name
                && !strcmp(name, HTC_POOL_FORMAT) && !val) {
                magic = 1;
                continue;
            }
            *err = apr_psprintf(p, "line %d: expected '" HTC_POOL_MAGIC " "
                                HTC_POOL_FORMAT "' first", lineno);
            return APR_EINVAL;
        }
        if (!kind || !name || !val || extra
            || (strcmp(kind, "admin") && strcmp(kind, "value"))
            || !w4a_ini_name_ok(name) || val[0] != '=' || !unescape(val + 1)) {
            *err = apr_psprintf(p, "line %d: expected 'admin|value name "
                                "=value'", lineno);
            return APR_EINVAL;
        }
        if (apr_hash_get(ps->settings, name, APR_HASH_KEY_STRING)) {
            *err = apr_psprintf(p, "line %d: %s given twice", lineno, name);
            return APR_EINVAL;
        }
        s = apr_palloc(p, sizeof(*s));
        s->name = name;
        s->value = val + 1;
        s->admin = kind[0] == 'a';
        apr_hash_set(ps->settings, s->name, APR_HASH_KEY_STRING, s);
        {
            unsigned b = sig_of(name, strlen(name));   /* name not empty */
            ps->sig[b / 32] |= 1u << (b % 32);
        }
    }
    if (!magic) {
        *err = "empty: not a file written by w4a-fpm-pools";
        return APR_EINVAL;
    }
    *out = ps;
    return APR_SUCCESS;
}

const htc_pool_setting_t *htc_pool_get(const htc_pool_t *ps,
                                       const char *name)
{
    apr_size_t len;
    unsigned b;

    if (!ps || !*name) {
        return NULL;                    /* no pool, or a name none has */
    }
    len = strlen(name);
    b = sig_of(name, len);
    if (!(ps->sig[b / 32] & (1u << (b % 32)))) {
        return NULL;                    /* most lookups: not set by the pool */
    }
    return apr_hash_get(ps->settings, name, (apr_ssize_t)len);
}

/* ------------------------------------------------------------------ */
/* Cache                                                                */

typedef struct entry_t entry_t;
struct entry_t {
    apr_pool_t        *pool;      /* the entry's own; NULL: static "none" */
    const void        *key;       /* in c->entries: klen bytes */
    apr_size_t         klen;
    const char        *path;
    apr_time_t         checked;
    apr_status_t       status;    /* of the last check */
    const char        *why;
    struct stat        st;        /* identity of the file parsed */
    int                have_st;
    const htc_pool_t  *set;       /* NULL: no file, or an error */
    apr_size_t         refs;      /* handed out, not released */
    int                gone;      /* out of the cache: freed at refs 0 */
};

struct htc_pool_cache_t {
    apr_pool_t          *pool;
    apr_hash_t          *entries; /* key -> entry_t * */
    apr_size_t           max;
    apr_interval_time_t  recheck;
#if APR_HAS_THREADS
    apr_thread_mutex_t  *mutex;
#endif
};

static void lock(htc_pool_cache_t *c)
{
#if APR_HAS_THREADS
    apr_thread_mutex_lock(c->mutex);
#endif
}

static void unlock(htc_pool_cache_t *c)
{
#if APR_HAS_THREADS
    apr_thread_mutex_unlock(c->mutex);
#endif
}

apr_status_t htc_pool_cache_create(htc_pool_cache_t **cp, apr_size_t max,
                                   apr_interval_time_t recheck,
                                   apr_pool_t *p)
{
    htc_pool_cache_t *c = apr_pcalloc(p, sizeof(*c));
    apr_allocator_t *al;
    apr_status_t rv;

    /* Entries live in sub-pools of a pool of the cache's own, with an
     * allocator of its own: nothing else allocates from it, and its
     * children are created and destroyed under the cache's mutex only. */
    if ((rv = apr_allocator_create(&al)) != APR_SUCCESS) {
        return rv;
    }
#if APR_HAS_THREADS
    {
        apr_thread_mutex_t *am;
        if ((rv = apr_thread_mutex_create(&c->mutex, APR_THREAD_MUTEX_DEFAULT,
                                          p)) != APR_SUCCESS
            || (rv = apr_thread_mutex_create(&am, APR_THREAD_MUTEX_DEFAULT,
                                             p)) != APR_SUCCESS) {
            apr_allocator_destroy(al);
            return rv;
        }
        apr_allocator_mutex_set(al, am);
    }
#endif
    if ((rv = apr_pool_create_ex(&c->pool, p, NULL, al)) != APR_SUCCESS) {
        apr_allocator_destroy(al);
        return rv;
    }
    apr_allocator_owner_set(al, c->pool);
    c->entries = apr_hash_make(c->pool);
    c->max = max ? max : 1;
    c->recheck = recheck;
    *cp = c;
    return APR_SUCCESS;
}

static void entry_drop(entry_t *e)
{
    e->gone = 1;
    if (!e->refs) {
        apr_pool_destroy(e->pool);
    }
}

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino
           && a->st_size == b->st_size
           && a->st_mtim.tv_sec == b->st_mtim.tv_sec
           && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec
           && a->st_ctim.tv_sec == b->st_ctim.tv_sec
           && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static int trusted(const struct stat *st)
{
    return st->st_uid == 0 && !(st->st_mode & (S_IWGRP | S_IWOTH));
}

/* Look at path: *st of the file, *fd open on it (or -1 when absent).
 * Errors say why in *why. */
static apr_status_t check_file(const char *path, struct stat *st, int *fd,
                               const char **why, apr_pool_t *p)
{
    const char *slash = strrchr(path, '/');
    const char *dir, *base;
    struct stat dst;
    int dfd;

    *fd = -1;
    if (!slash || !slash[1]) {
        *why = "not an absolute file path";
        return APR_EINVAL;
    }
    dir = slash == path ? "/" : apr_pstrmemdup(p, path, slash - path);
    base = slash + 1;
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        if (errno == ENOENT) {
            return APR_SUCCESS;           /* no such pool directory */
        }
        *why = apr_psprintf(p, "directory %s: %s", dir, strerror(errno));
        return APR_FROM_OS_ERROR(errno);
    }
    if (fstat(dfd, &dst) != 0 || !trusted(&dst)) {
        close(dfd);
        *why = apr_psprintf(p, "directory %s is not root's alone (owner uid "
                            "%ld, mode %04o): anyone else who may write it "
                            "could swap the file", dir, (long)dst.st_uid,
                            (unsigned)(dst.st_mode & 07777));
        return APR_EACCES;
    }
    *fd = openat(dfd, base, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    close(dfd);
    if (*fd < 0) {
        int e = errno;
        if (e == ENOENT) {
            return APR_SUCCESS;           /* the pool sets nothing */
        }
        *why = e == ELOOP ? apr_pstrdup(p, "is a symbolic link")
                          : apr_psprintf(p, "cannot be opened: %s",
                                         strerror(e));
        return e == ELOOP ? APR_EACCES : APR_FROM_OS_ERROR(e);
    }
    if (fstat(*fd, st) != 0 || !S_ISREG(st->st_mode) || !trusted(st)
        || st->st_size > HTC_POOL_MAX_SIZE) {
        *why = apr_psprintf(p, "is not a regular file of root's alone under "
                            "%d bytes (owner uid %ld, mode %04o, %ld bytes)",
                            HTC_POOL_MAX_SIZE, (long)st->st_uid,
                            (unsigned)(st->st_mode & 07777),
                            (long)st->st_size);
        close(*fd);
        *fd = -1;
        return APR_EACCES;
    }
    return APR_SUCCESS;
}

/* A new entry for key and path from the open fd (-1: none). */
static entry_t *load(htc_pool_cache_t *c, const void *key, apr_size_t klen,
                     const char *path, int fd, const struct stat *st,
                     apr_status_t status, const char *why)
{
    apr_pool_t *p;
    entry_t *e;

    apr_pool_create(&p, c->pool);
    e = apr_pcalloc(p, sizeof(*e));
    e->pool = p;
    e->key = apr_pmemdup(p, key, klen);
    e->klen = klen;
    e->path = apr_pstrdup(p, path);
    e->status = status;
    e->why = why ? apr_pstrdup(p, why) : NULL;
    if (status == APR_SUCCESS && fd >= 0) {
        char *buf = apr_palloc(p, (apr_size_t)st->st_size + 1);
        ssize_t n = pread(fd, buf, (size_t)st->st_size, 0);
        htc_pool_t *set = NULL;
        const char *err = NULL;

        e->st = *st;
        e->have_st = 1;
        if (n != (ssize_t)st->st_size) {
            e->status = APR_EINVAL;
            e->why = "could not be read whole";
        }
        else {
            buf[n] = '\0';
            if (memchr(buf, '\0', (size_t)n)
                || htc_pool_parse(&set, buf, &err, p) != APR_SUCCESS) {
                e->status = APR_EINVAL;
                e->why = err ? err : "holds a NUL byte";
            }
            else {
                e->set = set;
            }
        }
    }
    return e;
}

static int by_checked(const void *a, const void *b)
{
    const entry_t *x = *(entry_t *const *)a, *y = *(entry_t *const *)b;
    return x->checked < y->checked ? -1 : x->checked > y->checked;
}

/* Full: drop the tenth (at least one) of the entries looked at least
 * recently, so that a flood of new paths costs a sort per tenth of the
 * bound, not the whole cache.  Under the lock. */
static apr_size_t trim(htc_pool_cache_t *c, apr_pool_t *tmp)
{
    apr_size_t n = apr_hash_count(c->entries), drop, i = 0;
    apr_size_t keep = c->max - 1 - c->max / 10;
    apr_hash_index_t *hi;
    entry_t **all;

    if (n <= keep) {
        return 0;
    }
    drop = n - keep;
    all = apr_palloc(tmp, sizeof(*all) * n);
    for (hi = apr_hash_first(tmp, c->entries); hi; hi = apr_hash_next(hi)) {
        all[i++] = apr_hash_this_val(hi);
    }
    qsort(all, n, sizeof(*all), by_checked);
    for (i = 0; i < drop; i++) {
        apr_hash_set(c->entries, all[i]->key, all[i]->klen, NULL);
        entry_drop(all[i]);
    }
    return drop;
}

void htc_pool_cache_count(htc_pool_cache_t *c, apr_size_t *entries,
                          apr_size_t *max)
{
    lock(c);
    *entries = apr_hash_count(c->entries);
    *max = c->max;
    unlock(c);
}

apr_status_t htc_pool_cache_get_key(htc_pool_cache_t *c, const void *key,
                                    apr_size_t klen,
                                    htc_pool_path_fn *path_of, void *baton,
                                    const htc_pool_t **set, void **handle,
                                    const char **why, const char **pathp,
                                    int *fresh, apr_size_t *trimmed,
                                    apr_pool_t *tmp)
{
    apr_time_t now = apr_time_now();
    entry_t *e, *n;
    struct stat st;
    const char *w = NULL, *path;
    apr_status_t rv;
    int fd;

    *set = NULL;
    *handle = NULL;
    *why = NULL;
    *fresh = 0;
    if (pathp) {
        *pathp = NULL;
    }
    if (trimmed) {
        *trimmed = 0;
    }
    lock(c);
    e = apr_hash_get(c->entries, key, klen);
    if (!e || now - e->checked >= c->recheck || now < e->checked) {
        *fresh = 1;
        /* the path, only when the file is looked at; the entry's is
         * copied, since the entry may be dropped below and the caller
         * logs the path it is given back */
        path = e ? apr_pstrdup(tmp, e->path) : path_of(baton, tmp);
        if (pathp) {
            *pathp = path;
        }
        rv = check_file(path, &st, &fd, &w, tmp);
        if (e && rv == APR_SUCCESS && fd >= 0 && e->have_st
            && e->status == APR_SUCCESS && same_file(&st, &e->st)) {
            e->checked = now;            /* unchanged */
        }
        else {
            n = load(c, key, klen, path, fd, &st, rv, w);
            n->checked = now;
            if (e) {
                apr_hash_set(c->entries, e->key, e->klen, NULL);
                entry_drop(e);
            }
            else if (apr_hash_count(c->entries) >= c->max) {
                apr_size_t k = trim(c, tmp);
                if (trimmed) {
                    *trimmed = k;
                }
            }
            apr_hash_set(c->entries, n->key, n->klen, n);
            e = n;
        }
        if (fd >= 0) {
            close(fd);
        }
    }
    rv = e->status;
    if (rv != APR_SUCCESS) {
        *why = apr_pstrdup(tmp, e->why ? e->why : "unusable");
    }
    else if (e->set) {
        e->refs++;
        *set = e->set;
        *handle = e;
    }
    unlock(c);
    return rv;
}

static const char *path_itself(void *baton, apr_pool_t *p)
{
    (void)p;
    return baton;
}

apr_status_t htc_pool_cache_get(htc_pool_cache_t *c, const char *path,
                                const htc_pool_t **set, void **handle,
                                const char **why, int *fresh,
                                apr_size_t *trimmed, apr_pool_t *tmp)
{
    return htc_pool_cache_get_key(c, path, strlen(path), path_itself,
                                  (void *)path, set, handle, why, NULL, fresh,
                                  trimmed, tmp);
}

void htc_pool_cache_release(htc_pool_cache_t *c, void *handle)
{
    entry_t *e = handle;

    if (!e) {
        return;
    }
    lock(c);
    if (--e->refs == 0 && e->gone) {
        apr_pool_destroy(e->pool);
    }
    unlock(c);
}
