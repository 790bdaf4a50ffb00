/*
 * w4a_mc: the memcached client of the hosting cache, on libmemcached and
 * its connection pool (libmemcachedutil).  See w4a_mc.h.
 */
#include <string.h>
#include <time.h>

#include <libmemcached/memcached.h>
#include <libmemcachedutil-1.0/pool.h>

#include <apr_sha1.h>
#include <apr_strings.h>
#include <apr_time.h>

#include "w4a_mc.h"
#include "w4a_util.h"

#define KEY_MAX 250
#define RECORD_MAX 16384        /* a record is at most ~8.5 KiB */
/* what sealing adds: "w4a1 " EXP(<= 19) " " MAC(64) " " */
#define SEAL_ROOM  96

struct w4a_mc_t {
    memcached_st      *master;
    memcached_pool_st *pool;
    const char        *prefix;
    const w4a_mac_key_t *key;
};

static apr_status_t mc_cleanup(void *data)
{
    w4a_mc_t *mc = data;
    if (mc->pool) {
        memcached_pool_destroy(mc->pool);
        mc->pool = NULL;
    }
    if (mc->master) {
        memcached_free(mc->master);
        mc->master = NULL;
    }
    return APR_SUCCESS;
}

/* Splits one "host:port", "[v6]:port", "host" or "/unix/socket" item. */
static const char *split_server(char *item, const char **host,
                                apr_uint32_t *port)
{
    char *colon;
    apr_int64_t v;

    *port = 11211;
    if (item[0] == '/') {
        *host = item;
        *port = 0;
        return NULL;
    }
    if (item[0] == '[') {
        char *end = strchr(item, ']');
        if (!end || end == item + 1) {
            return "unterminated [IPv6] address";
        }
        *end = '\0';
        *host = item + 1;
        colon = end[1] == ':' ? end + 1 : NULL;
        if (!colon && end[1]) {
            return "junk after ]";
        }
    }
    else {
        *host = item;
        colon = strchr(item, ':');
        if (colon && strchr(colon + 1, ':')) {
            return "an IPv6 address must be written [addr]:port";
        }
    }
    if (colon) {
        *colon = '\0';
        if (!w4a_parse_number(colon + 1, 1, 65535, &v)) {
            return "port is not a number from 1 to 65535";
        }
        *port = (apr_uint32_t)v;
    }
    if (!**host) {
        return "empty host";
    }
    return NULL;
}

/* Calls fn for each server of the list; returns the first complaint. */
static const char *each_server(const char *servers, apr_pool_t *p,
                               memcached_st *m)
{
    char *list = apr_pstrdup(p, servers), *item, *state;
    int n = 0;

    for (item = apr_strtok(list, ", \t", &state); item;
         item = apr_strtok(NULL, ", \t", &state)) {
        const char *host, *why;
        apr_uint32_t port;
        char *copy = apr_pstrdup(p, item);

        if ((why = split_server(copy, &host, &port)) != NULL) {
            return apr_psprintf(p, "memcached server '%s': %s", item, why);
        }
        if (m) {
            memcached_return_t rc = port
                ? memcached_server_add(m, host, (in_port_t)port)
                : memcached_server_add_unix_socket(m, host);
            if (rc != MEMCACHED_SUCCESS) {
                return apr_psprintf(p, "memcached server '%s': %s", item,
                                    memcached_strerror(m, rc));
            }
        }
        n++;
    }
    return n ? NULL : "no memcached server given";
}

const char *w4a_mc_check_servers(const char *servers, apr_pool_t *p)
{
    return each_server(servers, p, NULL);
}

apr_status_t w4a_mc_create(w4a_mc_t **out, const char *servers,
                           const w4a_mc_opts_t *opts, const char **err,
                           apr_pool_t *p)
{
    w4a_mc_t *mc = apr_pcalloc(p, sizeof(*mc));
    apr_uint32_t timeout = opts && opts->timeout_ms ? opts->timeout_ms : 50;
    apr_uint32_t retry = opts && opts->retry_s ? opts->retry_s : 1;
    apr_uint32_t max = opts && opts->max_conns ? opts->max_conns : 16;
    const char *why;
    memcached_st *m;

    mc->prefix = opts && opts->prefix ? opts->prefix : "";
    mc->key = opts ? opts->key : NULL;
    if (strlen(mc->prefix) > 64) {
        *err = "memcached key prefix longer than 64 bytes";
        return APR_EINVAL;
    }
    m = mc->master = memcached_create(NULL);
    if (!m) {
        *err = "out of memory";
        return APR_ENOMEM;
    }
    apr_pool_cleanup_register(p, mc, mc_cleanup, apr_pool_cleanup_null);
    if ((why = each_server(servers, p, m)) != NULL) {
        *err = why;
        return APR_EINVAL;
    }
    /* Consistent hashing: a server gone moves only its own keys. */
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_DISTRIBUTION,
                           MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_NO_BLOCK, 1);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, timeout);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, timeout);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_SND_TIMEOUT, timeout * 1000);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_RCV_TIMEOUT, timeout * 1000);
    /* A server that failed is skipped for retry_s, then tried again. */
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, retry);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT, 1);
    mc->pool = memcached_pool_create(m, 1, max);
    if (!mc->pool) {
        *err = "cannot create the connection pool";
        return APR_ENOMEM;
    }
    *out = mc;
    return APR_SUCCESS;
}

static const char *full_key(const w4a_mc_t *mc, const char *key, apr_size_t *len,
                            apr_pool_t *p)
{
    const char *k = apr_pstrcat(p, mc->prefix, key, NULL);
    apr_size_t n = strlen(k), i;
    int plain = n <= KEY_MAX;

    for (i = 0; plain && i < n; i++) {
        unsigned char ch = (unsigned char)k[i];
        plain = ch > 0x20 && ch < 0x7f;
    }
    if (!plain) {
        unsigned char digest[APR_SHA1_DIGESTSIZE];
        char hex[2 * APR_SHA1_DIGESTSIZE + 1];
        apr_sha1_ctx_t ctx;
        apr_sha1_init(&ctx);
        apr_sha1_update(&ctx, key, (unsigned int)strlen(key));
        apr_sha1_final(digest, &ctx);
        for (i = 0; i < APR_SHA1_DIGESTSIZE; i++) {
            apr_snprintf(hex + 2 * i, 3, "%02x", digest[i]);
        }
        k = apr_pstrcat(p, mc->prefix, "#", hex, NULL);
        n = strlen(k);
    }
    *len = n;
    return k;
}

static memcached_st *take(w4a_mc_t *mc, const char **err)
{
    struct timespec wait = { 1, 0 };
    memcached_return_t rc;
    memcached_st *m = memcached_pool_fetch(mc->pool, &wait, &rc);
    if (!m && err) {
        *err = "no free memcached connection in the pool";
    }
    return m;
}

static apr_status_t failed(memcached_st *m, memcached_return_t rc,
                           const char **err, apr_pool_t *p)
{
    if (err) {
        const char *msg = memcached_last_error_message(m);
        /* libmemcached starts its messages with "(0x<address>) " */
        if (msg && msg[0] == '(' && strstr(msg, ") ")) {
            msg = strstr(msg, ") ") + 2;
        }
        *err = apr_pstrdup(p, msg && *msg ? msg : memcached_strerror(m, rc));
    }
    return APR_EGENERAL;
}

apr_status_t w4a_mc_get(w4a_mc_t *mc, const char *key, char **val,
                        const char **err, apr_pool_t *p)
{
    return w4a_mc_get_max(mc, key, RECORD_MAX, val, err, p);
}

apr_status_t w4a_mc_get_max(w4a_mc_t *mc, const char *key, apr_size_t max,
                            char **val, const char **err, apr_pool_t *p)
{
    apr_size_t klen, vlen = 0;
    const char *k = full_key(mc, key, &klen, p);
    memcached_st *m = take(mc, err);
    memcached_return_t rc;
    uint32_t flags = 0;
    char *v;
    apr_status_t rv;

    if (!m) {
        return APR_EGENERAL;
    }
    v = memcached_get(m, k, klen, &vlen, &flags, &rc);
    if (v && rc == MEMCACHED_SUCCESS) {
        *val = apr_pstrmemdup(p, v, vlen);
        rv = APR_SUCCESS;
        if (mc->key) {
            const char *plain = NULL;
            /* a NUL inside, or a size our writers never store, is not a
             * value we wrote: refused before hashing it */
            rv = strlen(*val) != vlen || vlen > max + SEAL_ROOM
                 ? W4A_MAC_EFORGED
                 : w4a_mac_open(mc->key, apr_pstrcat(p, mc->prefix, key, NULL),
                                *val, apr_time_sec(apr_time_now()), &plain);
            if (rv == APR_SUCCESS) {
                *val = (char *)plain;
            }
        }
    }
    else if (rc == MEMCACHED_NOTFOUND) {
        rv = APR_NOTFOUND;
    }
    else {
        rv = failed(m, rc, err, p);
    }
    free(v);
    memcached_pool_release(mc->pool, m);
    return rv;
}

static apr_status_t store(w4a_mc_t *mc, int add, const char *key,
                          const char *val, apr_uint32_t ttl_s,
                          const char **err, apr_pool_t *p)
{
    apr_size_t klen;
    const char *k = full_key(mc, key, &klen, p);
    memcached_st *m;
    memcached_return_t rc;
    apr_status_t rv = APR_SUCCESS;

    if (mc->key) {
        val = w4a_mac_seal(mc->key, apr_pstrcat(p, mc->prefix, key, NULL), val,
                           ttl_s ? apr_time_sec(apr_time_now()) + ttl_s : 0,
                           p);
        if (!val) {
            if (err) {
                *err = "cannot seal the value (libcrypto: out of memory?)";
            }
            return APR_EGENERAL;
        }
    }
    if ((m = take(mc, err)) == NULL) {
        return APR_EGENERAL;
    }
    rc = add ? memcached_add(m, k, klen, val, strlen(val), (time_t)ttl_s, 0)
             : memcached_set(m, k, klen, val, strlen(val), (time_t)ttl_s, 0);
    if (add && (rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_DATA_EXISTS)) {
        rv = APR_EEXIST;
    }
    else if (rc != MEMCACHED_SUCCESS) {
        rv = failed(m, rc, err, p);
    }
    memcached_pool_release(mc->pool, m);
    return rv;
}

apr_status_t w4a_mc_set(w4a_mc_t *mc, const char *key, const char *val,
                        apr_uint32_t ttl_s, const char **err, apr_pool_t *p)
{
    return store(mc, 0, key, val, ttl_s, err, p);
}

apr_status_t w4a_mc_add(w4a_mc_t *mc, const char *key, const char *val,
                        apr_uint32_t ttl_s, const char **err, apr_pool_t *p)
{
    return store(mc, 1, key, val, ttl_s, err, p);
}

apr_status_t w4a_mc_delete(w4a_mc_t *mc, const char *key, const char **err,
                           apr_pool_t *p)
{
    apr_size_t klen;
    const char *k = full_key(mc, key, &klen, p);
    memcached_st *m = take(mc, err);
    memcached_return_t rc;
    apr_status_t rv = APR_SUCCESS;

    if (!m) {
        return APR_EGENERAL;
    }
    rc = memcached_delete(m, k, klen, 0);
    if (rc == MEMCACHED_NOTFOUND) {
        rv = APR_NOTFOUND;
    }
    else if (rc != MEMCACHED_SUCCESS) {
        rv = failed(m, rc, err, p);
    }
    memcached_pool_release(mc->pool, m);
    return rv;
}

apr_status_t w4a_mc_incr(w4a_mc_t *mc, const char *key, apr_uint64_t *out,
                         const char **err, apr_pool_t *p)
{
    apr_size_t klen;
    const char *k = full_key(mc, key, &klen, p);
    memcached_st *m = take(mc, err);
    memcached_return_t rc;
    uint64_t v = 0;
    apr_status_t rv = APR_SUCCESS;
    int tries;

    if (!m) {
        return APR_EGENERAL;
    }
    if (mc->key) {
        memcached_pool_release(mc->pool, m);
        if (err) {
            *err = "a sealed value cannot be incremented";
        }
        *out = 0;
        return APR_ENOTIMPL;
    }
    for (tries = 0; tries < 3; tries++) {
        rc = memcached_increment(m, k, klen, 1, &v);
        if (rc == MEMCACHED_SUCCESS) {
            break;
        }
        if (rc != MEMCACHED_NOTFOUND) {
            rv = failed(m, rc, err, p);
            break;
        }
        /* absent: create it; another client may win the race, then incr */
        rc = memcached_add(m, k, klen, "1", 1, 0, 0);
        if (rc == MEMCACHED_SUCCESS) {
            v = 1;
            break;
        }
        if (rc != MEMCACHED_NOTSTORED && rc != MEMCACHED_DATA_EXISTS) {
            rv = failed(m, rc, err, p);
            break;
        }
    }
    if (rv == APR_SUCCESS && tries == 3) {
        rv = APR_EGENERAL;
        if (err) {
            *err = "the counter kept disappearing";
        }
    }
    memcached_pool_release(mc->pool, m);
    *out = v;
    return rv;
}
