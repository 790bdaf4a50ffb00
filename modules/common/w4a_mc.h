/**
 * @file w4a_mc.h
 * @brief A small memcached client for the hosting cache (httpd-free),
 *        on libmemcached: several servers, consistent hashing, millisecond
 *        timeouts, a pool of connections safe for many threads.
 *
 * Keys are "<prefix><key>"; a key too long for memcached (250 bytes) or
 * holding a blank or control byte is replaced by "<prefix>#" + its SHA-1
 * in hex, so any domain name can be a key.  Create one client per process
 * (after fork): connections are not shared across processes.
 *
 * With a key (w4a_mac.h), every value stored is sealed: bound to its key
 * ("<prefix><key>", before any hashing) and to its expiry (now + ttl), and
 * every value read must carry a good seal; one that does not is not
 * returned (W4A_MAC_EFORGED, W4A_MAC_EEXPIRED), so that whoever else can
 * reach memcached cannot make the nodes believe anything.
 */
#ifndef W4A_MC_H
#define W4A_MC_H

#include <apr.h>
#include <apr_errno.h>
#include <apr_pools.h>

#include "w4a_mac.h"

/** Options of a client. */
typedef struct w4a_mc_opts_t {
    const char   *prefix;      /**< prepended to every key (NULL: "") */
    apr_uint32_t  timeout_ms;  /**< connect and I/O timeout (0: 50 ms) */
    apr_uint32_t  retry_s;     /**< seconds a failed server is left alone (0: 1) */
    apr_uint32_t  max_conns;   /**< connections in the pool (0: 16) */
    const w4a_mac_key_t *key;  /**< seal values with it (NULL: plain) */
} w4a_mc_opts_t;

typedef struct w4a_mc_t w4a_mc_t;

/**
 * Make a client for a server list.
 * @param mc       set to the client
 * @param servers  "host:port[,host:port...]" (port defaults to 11211)
 * @param opts     options (NULL: defaults)
 * @param err      on failure, why (allocated from @a p)
 * @param p        the client lives as long as this pool
 * @return APR_SUCCESS; APR_EINVAL for a bad server list; APR_ENOMEM.
 */
apr_status_t w4a_mc_create(w4a_mc_t **mc, const char *servers,
                           const w4a_mc_opts_t *opts, const char **err,
                           apr_pool_t *p);

/**
 * Check a server list without connecting (for configuration time).
 * @return NULL when fine, else why not (allocated from @a p).
 */
const char *w4a_mc_check_servers(const char *servers, apr_pool_t *p);

/**
 * Get a value.
 * @param val  set to the value, NUL-terminated, allocated from @a p
 * @return APR_SUCCESS; APR_NOTFOUND (no such key); APR_EGENERAL (no
 *         server answered: down, timed out) with @a err set when not NULL;
 *         with a key, W4A_MAC_EFORGED (not sealed by the key, or for
 *         another key) or W4A_MAC_EEXPIRED (sealed, but past its expiry),
 *         @a val then set to the value as read (for a message, never to
 *         be used).
 */
apr_status_t w4a_mc_get(w4a_mc_t *mc, const char *key, char **val,
                        const char **err, apr_pool_t *p);

/**
 * w4a_mc_get() for a value of at most @a max bytes before sealing (a
 * hosting record is at most 16 KiB, the size w4a_mc_get() takes).  With a
 * key, a longer value is refused as W4A_MAC_EFORGED before it is hashed:
 * a writer of this value must never store more than @a max.
 */
apr_status_t w4a_mc_get_max(w4a_mc_t *mc, const char *key, apr_size_t max,
                            char **val, const char **err, apr_pool_t *p);

/**
 * Store a value for @a ttl_s seconds (0: no expiry).
 * @return APR_SUCCESS, or APR_EGENERAL when the server did not take it.
 */
apr_status_t w4a_mc_set(w4a_mc_t *mc, const char *key, const char *val,
                        apr_uint32_t ttl_s, const char **err, apr_pool_t *p);

/**
 * Store a value only if the key is absent.
 * @return APR_SUCCESS; APR_EEXIST when present; APR_EGENERAL.
 */
apr_status_t w4a_mc_add(w4a_mc_t *mc, const char *key, const char *val,
                        apr_uint32_t ttl_s, const char **err, apr_pool_t *p);

/**
 * Delete a key.
 * @return APR_SUCCESS (deleted); APR_NOTFOUND (was absent); APR_EGENERAL.
 */
apr_status_t w4a_mc_delete(w4a_mc_t *mc, const char *key, const char **err,
                           apr_pool_t *p);

/**
 * Add 1 to a numeric value, creating it as "1" when absent.
 * @param out  the new value
 * @return APR_SUCCESS or APR_EGENERAL; APR_ENOTIMPL for a client with a
 *         key (a sealed value is not a number: get, then set).
 */
apr_status_t w4a_mc_incr(w4a_mc_t *mc, const char *key, apr_uint64_t *out,
                         const char **err, apr_pool_t *p);

#endif /* W4A_MC_H */
