/**
 * @file htcompat_pool.h
 * @brief A PHP-FPM pool's own settings (php_value / php_admin_value lines
 *        of its pool file), as w4a-fpm-pools writes them next to the pool
 *        file, and a per-process cache of them (httpd-free, APR only:
 *        linked by mod_w4a_htcompat, w4a-fpm-pools and the unit tests).
 *
 * The settings file of a pool (w4a-<hosting>.settings beside
 * w4a-<hosting>.conf):
 *
 *     # comment
 *     w4a-pool-settings 1
 *     admin open_basedir =/datas/vol1/w4a100011/:/usr/share/php/
 *     value max_execution_time =45
 *
 * "admin": php_admin_value / php_admin_flag in the pool (FPM fixes the
 * setting for the worker; mod_w4a_htcompat never sends it); "value":
 * php_value / php_flag (the worker starts with it; a reset restores it).
 * Values are the strings PHP sees (a flag is "1" or ""), %XX-escaped for
 * '%', blanks and bytes outside printable ASCII.
 */
#ifndef HTCOMPAT_POOL_H
#define HTCOMPAT_POOL_H

#include <apr.h>
#include <apr_errno.h>
#include <apr_hash.h>
#include <apr_pools.h>
#include <apr_time.h>

#define HTC_POOL_MAGIC "w4a-pool-settings"
#define HTC_POOL_FORMAT "1"
/** A settings file larger than this is not one we wrote. */
#define HTC_POOL_MAX_SIZE (64 * 1024)

typedef struct {
    const char *name;
    const char *value;     /**< as PHP sees it */
    int         admin;     /**< php_admin_*: fixed by the pool */
} htc_pool_setting_t;

typedef struct htc_pool_t {
    apr_hash_t  *settings;  /**< name -> htc_pool_setting_t * */
    apr_uint32_t sig[8];    /**< 256 bits, one per (length, first and last
                                 byte) class of the names set: a name whose
                                 bit is clear is not there, no hash needed */
} htc_pool_t;

/**
 * Parse the text of a settings file.
 * @return APR_SUCCESS with *out set; APR_EINVAL with *err (line and why).
 */
apr_status_t htc_pool_parse(htc_pool_t **out, const char *text,
                            const char **err, apr_pool_t *p);

/** The setting @a name of the pool, or NULL when the pool does not set it. */
const htc_pool_setting_t *htc_pool_get(const htc_pool_t *ps,
                                       const char *name);

/** @a value escaped for a settings file line (allocated from @a p). */
const char *htc_pool_escape(const char *value, apr_pool_t *p);

/** Per-process cache of settings files, safe under threads. */
typedef struct htc_pool_cache_t htc_pool_cache_t;

/**
 * @param max      files kept at most (> 0); a new file when the cache is
 *                 full first drops the tenth of the entries looked at
 *                 least recently (at least one; an entry still handed out
 *                 is freed when it is released)
 * @param recheck  a file is looked at again (stat) at most this often
 */
apr_status_t htc_pool_cache_create(htc_pool_cache_t **c, apr_size_t max,
                                   apr_interval_time_t recheck,
                                   apr_pool_t *p);

/**
 * The settings of the pool whose file is @a path, checked: the directory
 * and the file (opened without following a symlink, checked on its
 * descriptor) must be owned by root and writable by nobody else, the file
 * regular, under HTC_POOL_MAX_SIZE and well-formed.
 * @param set      out: the settings, or NULL when neither the file nor
 *                 its directory exists (the pool sets nothing)
 * @param handle   out: give it back to htc_pool_cache_release() once
 *                 done with *set (NULL when *set is NULL)
 * @param why      out, on error: what was wrong, for the log
 * @param fresh    out: 1 when the file was looked at by this call (so
 *                 that an error is logged once per recheck, not on every
 *                 request)
 * @param trimmed  out: the entries this call dropped to stay within the
 *                 bound (0 mostly); NULL: not wanted
 * @return APR_SUCCESS; APR_EACCES (not trusted), APR_EINVAL (malformed)
 *         or the error that opening/reading gave.
 */
apr_status_t htc_pool_cache_get(htc_pool_cache_t *c, const char *path,
                                const htc_pool_t **set, void **handle,
                                const char **why, int *fresh,
                                apr_size_t *trimmed, apr_pool_t *tmp);

/** Builds the path of a settings file when htc_pool_cache_get_key()
 *  must look at it (allocated from @a p, or @a baton's own). */
typedef const char *htc_pool_path_fn(void *baton, apr_pool_t *p);

/**
 * htc_pool_cache_get() for the entry found by @a key (@a klen bytes, any
 * binary: a request's pool names, say) rather than by the path, which
 * @a path_of builds only when the file is looked at (a new entry, or its
 * recheck is due): a request whose pool's file was checked a moment ago
 * builds no path at all.  One key must always stand for one path.
 * @param pathp  out: the path when this call looked at the file (*fresh),
 *               allocated from @a tmp (it outlives the entry),
 *               else NULL; NULL: not wanted
 */
apr_status_t htc_pool_cache_get_key(htc_pool_cache_t *c, const void *key,
                                    apr_size_t klen,
                                    htc_pool_path_fn *path_of, void *baton,
                                    const htc_pool_t **set, void **handle,
                                    const char **why, const char **pathp,
                                    int *fresh, apr_size_t *trimmed,
                                    apr_pool_t *tmp);

/** The number of files the cache holds now, and its bound. */
void htc_pool_cache_count(htc_pool_cache_t *c, apr_size_t *entries,
                          apr_size_t *max);

/** Release what htc_pool_cache_get() handed out. */
void htc_pool_cache_release(htc_pool_cache_t *c, void *handle);

#endif /* HTCOMPAT_POOL_H */
