/*
 * mod_w4a_php: the pool socket and proxy handler of (W4APHPSocket,
 * hosting, PHP version), expanded once per thread (see php_sock.h).
 */
#include <stdlib.h>
#include <string.h>

#include <apr_strings.h>

#include "php_sock.h"
#include "w4a_util.h"

#define HEAD_LEN (sizeof(PHP_SOCK_HANDLER_HEAD) - 1)
#define TAIL_LEN (sizeof(PHP_SOCK_HANDLER_TAIL) - 1)
#define MAX_SLOTS 65536u

/* One key and its strings, in one malloc'd block:
 * hosting \0 version \0 handler \0 socket \0 */
typedef struct entry {
    const char  *pattern;       /* by address, within the cache's gen */
    apr_uint32_t hash;
    apr_size_t   hosting_len;
    apr_size_t   version_len;
    apr_size_t   sock_len;
    apr_uint32_t sock_hash;     /* w4a_fnv1a of the socket path */
    char         data[];
} entry;

struct php_sock_cache_t {
    apr_uint32_t     gen;
    unsigned         mask;
    php_sock_stats_t st;
    entry           *slot[];
};
const char *php_sock_expand(apr_pool_t *p, const char *pattern,
                            const char *hosting, const char *version,
                            apr_size_t *len)
{
    apr_size_t hl = strlen(hosting), vl = strlen(version);
    apr_size_t n = w4a_pool_pattern_len(pattern, hl, vl);
    char *s = apr_palloc(p, n + 1);

    w4a_pool_pattern_expand(s, pattern, hosting, hl, version, vl);
    if (len) {
        *len = n;
    }
    return s;
}

/* "proxy:unix:<socket>|fcgi://localhost" \0 <socket> \0 at out (PAIR_LEN
 * bytes): the socket expanded in place inside the handler, then copied
 * after it. */
static void write_pair(char *out, const char *pattern, const char *hosting,
                       apr_size_t hl, const char *version, apr_size_t vl,
                       apr_size_t sl)
{
    memcpy(out, PHP_SOCK_HANDLER_HEAD, HEAD_LEN);
    w4a_pool_pattern_expand(out + HEAD_LEN, pattern, hosting, hl, version, vl);
    memcpy(out + HEAD_LEN + sl, PHP_SOCK_HANDLER_TAIL, TAIL_LEN + 1);
    memcpy(out + HEAD_LEN + sl + TAIL_LEN + 1, out + HEAD_LEN, sl);
    out[HEAD_LEN + sl + TAIL_LEN + 1 + sl] = '\0';
}

#define PAIR_LEN(sl) (HEAD_LEN + (sl) + TAIL_LEN + 1 + (sl) + 1)

/* Where to look (FNV-1a; a separator between the two strings); the
 * lengths on the way.  The pattern is not hashed (one per server, most
 * nodes have one): it is compared. */
static apr_uint32_t key_hash(const char *hosting, const char *version,
                             apr_size_t *hl, apr_size_t *vl)
{
    apr_uint32_t h = 2166136261u;
    const char *q;

    for (q = hosting; *q; q++) {
        h = (h ^ (unsigned char)*q) * 16777619u;
    }
    *hl = q - hosting;
    h = (h ^ 0xffu) * 16777619u;
    for (q = version; *q; q++) {
        h = (h ^ (unsigned char)*q) * 16777619u;
    }
    *vl = q - version;
    return h ^ (h >> 15);
}

apr_status_t php_sock_cache_create(php_sock_cache_t **c, unsigned slots)
{
    php_sock_cache_t *n;

    *c = NULL;
    if (slots == 0 || slots > MAX_SLOTS || (slots & (slots - 1))) {
        return APR_EINVAL;
    }
    n = calloc(1, sizeof(*n) + slots * sizeof(n->slot[0]));
    if (!n) {
        return APR_ENOMEM;
    }
    n->mask = slots - 1;
    n->st.slots = slots;
    *c = n;
    return APR_SUCCESS;
}

static void flush(php_sock_cache_t *c)
{
    unsigned i;

    for (i = 0; i <= c->mask; i++) {
        free(c->slot[i]);
        c->slot[i] = NULL;
    }
    c->st.entries = 0;
}

void php_sock_cache_destroy(php_sock_cache_t *c)
{
    if (c) {
        flush(c);
        free(c);
    }
}

static void uncached(const char *pattern, const char *hosting,
                     apr_size_t hl, const char *version, apr_size_t vl,
                     apr_pool_t *p, const char **sock, const char **handler,
                     apr_uint32_t *sock_hash)
{
    apr_size_t sl = w4a_pool_pattern_len(pattern, hl, vl);
    char *out = apr_palloc(p, PAIR_LEN(sl));

    write_pair(out, pattern, hosting, hl, version, vl, sl);
    *handler = out;
    *sock = out + HEAD_LEN + sl + TAIL_LEN + 1;
    *sock_hash = w4a_fnv1a(*sock);
}

void php_sock_get(php_sock_cache_t *c, apr_uint32_t gen, const char *pattern,
                  const char *hosting, const char *version, apr_pool_t *p,
                  const char **sock, const char **handler,
                  apr_uint32_t *sock_hash)
{
    apr_size_t hl, vl, sl, len;
    apr_uint32_t h;
    entry *e, **slot;
    char *out;

    if (!c) {
        uncached(pattern, hosting, strlen(hosting), version,
                 strlen(version), p, sock, handler, sock_hash);
        return;
    }
    if (c->gen != gen) {
        if (c->st.entries) {
            c->st.flushes++;
            flush(c);
        }
        c->gen = gen;
    }
    h = key_hash(hosting, version, &hl, &vl);
    slot = &c->slot[h & c->mask];
    e = *slot;
    if (e && e->hash == h && e->pattern == pattern && e->hosting_len == hl
        && e->version_len == vl && !memcmp(e->data, hosting, hl)
        && !memcmp(e->data + hl + 1, version, vl)) {
        c->st.hits++;
    }
    else {
        c->st.misses++;
        sl = w4a_pool_pattern_len(pattern, hl, vl);
        e = malloc(sizeof(*e) + hl + 1 + vl + 1 + PAIR_LEN(sl));
        if (!e) {
            uncached(pattern, hosting, hl, version, vl, p, sock, handler,
                     sock_hash);
            return;
        }
        e->pattern = pattern;
        e->hash = h;
        e->hosting_len = hl;
        e->version_len = vl;
        e->sock_len = sl;
        memcpy(e->data, hosting, hl + 1);
        memcpy(e->data + hl + 1, version, vl + 1);
        write_pair(e->data + hl + 1 + vl + 1, pattern, hosting, hl, version,
                   vl, sl);
        e->sock_hash = w4a_fnv1a(e->data + hl + 1 + vl + 1 + HEAD_LEN + sl
                                 + TAIL_LEN + 1);
        if (*slot) {
            c->st.replaced++;
            free(*slot);
        }
        else {
            c->st.entries++;
        }
        *slot = e;
    }
    sl = e->sock_len;
    len = PAIR_LEN(sl);
    out = apr_palloc(p, len);
    memcpy(out, e->data + e->hosting_len + 1 + e->version_len + 1, len);
    *handler = out;
    *sock = out + HEAD_LEN + sl + TAIL_LEN + 1;
    *sock_hash = e->sock_hash;
}

void php_sock_cache_stats(const php_sock_cache_t *c, php_sock_stats_t *st)
{
    *st = c->st;
}
