/**
 * @file php_sock.h
 * @brief The pool socket of a hosting and its proxy handler string, from
 *        W4APHPSocket, expanded once per thread and kept.
 *
 * Both strings are a function of (pattern, hosting, PHP version) alone:
 * nothing else of the record (docroot, uid, state, flags, the map
 * generation) goes into them.  The cache is keyed by exactly these, the
 * hosting and the version compared in full (a hash is only where to look),
 * so a record that changes its hosting or version gets its own entry, and
 * a map reload needs nothing of the cache.  The pattern is known by its
 * address, which only holds within one configuration generation: an entry
 * made under another generation is never used.
 *
 * One cache belongs to one thread (mod_w4a_php keeps one per thread in
 * thread-local storage): no lock, no atomic.  Its size is fixed at
 * creation (direct-mapped slots; a new entry replaces what its slot held).
 * What a lookup returns is copied into the caller's pool: the request's
 * strings outlive any later eviction, and are the request's own (its
 * handler is recognised by address).
 *
 * httpd-free (APR only): the module and the unit tests link the same code.
 */
#ifndef MOD_W4A_PHP_SOCK_H
#define MOD_W4A_PHP_SOCK_H

#include <apr_pools.h>

/** Slots of a thread's cache in mod_w4a_php. */
#define PHP_SOCK_SLOTS 64

/** The proxy handler's parts around the socket. */
#define PHP_SOCK_HANDLER_HEAD "proxy:unix:"
#define PHP_SOCK_HANDLER_TAIL "|fcgi://localhost"

typedef struct php_sock_cache_t php_sock_cache_t;

/** What a cache did since it was made (the unit tests read it). */
typedef struct {
    apr_uint64_t hits;       /**< lookups answered from an entry */
    apr_uint64_t misses;     /**< lookups that expanded the pattern */
    apr_uint64_t replaced;   /**< entries dropped for another key */
    apr_uint64_t flushes;    /**< emptied for a new generation */
    unsigned     entries;    /**< entries held now */
    unsigned     slots;      /**< its size */
} php_sock_stats_t;

/**
 * Expand a socket pattern: %h the hosting, %v the PHP version, %% a '%'.
 * @param p       pool of the result
 * @param pattern a pattern that w4a_pool_pattern_check() accepts
 * @param hosting the hosting id
 * @param version the PHP version, e.g. "8.2"
 * @param len     if not NULL, set to the result's length
 * @return the socket path
 */
const char *php_sock_expand(apr_pool_t *p, const char *pattern,
                            const char *hosting, const char *version,
                            apr_size_t *len);

/**
 * Make an empty cache (malloc'd: it belongs to a thread, not to a pool).
 * @param c     set to the cache
 * @param slots number of slots, a power of two from 1 to 65536
 * @return APR_SUCCESS; APR_EINVAL for another slot count; APR_ENOMEM
 */
apr_status_t php_sock_cache_create(php_sock_cache_t **c, unsigned slots);

/** Free a cache and its entries (NULL: nothing). */
void php_sock_cache_destroy(php_sock_cache_t *c);

/**
 * The socket and the handler "proxy:unix:<socket>|fcgi://localhost" of
 * (pattern, hosting, version), both copied into p.
 * @param c       the calling thread's cache; NULL: expanded, nothing kept
 * @param gen     the configuration generation the pattern belongs to; a
 *                cache holding another generation's entries is emptied
 *                first
 * @param pattern W4APHPSocket, known by its address within gen
 * @param hosting the hosting id (compared in full)
 * @param version the PHP version (compared in full)
 * @param p       pool of the results (the request's)
 * @param sock    set to the socket path
 * @param handler set to the handler string (never shared with another
 *                call's result)
 * @param sock_hash set to w4a_fnv1a(*sock), computed once per entry
 */
void php_sock_get(php_sock_cache_t *c, apr_uint32_t gen, const char *pattern,
                  const char *hosting, const char *version, apr_pool_t *p,
                  const char **sock, const char **handler,
                  apr_uint32_t *sock_hash);

/** A cache's figures (c not NULL). */
void php_sock_cache_stats(const php_sock_cache_t *c, php_sock_stats_t *st);

#endif /* MOD_W4A_PHP_SOCK_H */
