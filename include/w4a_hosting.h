/**
 * @file w4a_hosting.h
 * @brief The hosting record: what a domain resolves to.
 *
 * Plain C + APR types only, so that the modules, the support tools and the
 * unit tests share it.  mod_w4a_vhost is the single source of this record
 * at request time (see mod_w4a_vhost.h); no other module reads the map.
 */
#ifndef W4A_HOSTING_H
#define W4A_HOSTING_H

#include <apr.h>

#ifdef __cplusplus
extern "C" {
#endif

/** State of a hosting, as given by the map. */
typedef enum {
    W4A_STATE_ACTIVE    = 0,  /**< serves normally */
    W4A_STATE_SUSPENDED = 1   /**< answered with the suspended page/status */
} w4a_state_e;

/** Record flags (bit set). */
#define W4A_FLAG_LOG     0x0001u  /**< copy access log lines to the hosting's log_dir */
#define W4A_FLAG_REWRITE 0x0002u  /**< mod_w4a_media rewrites asset URLs of its HTML to media_host */

/** Largest per-hosting PHP limit a record may give (flag php_limit=N). */
#define W4A_PHP_LIMIT_MAX 65535u

/** Largest per-hosting limit of all requests a record may give (flag
 *  req_limit=N; mod_w4a_guard's W4AGuardHostingLimit). */
#define W4A_REQ_LIMIT_MAX 4095u

/**
 * One hosting record as seen for one domain.  Every string is
 * NUL-terminated; those that may be absent are NULL, never "".
 */
typedef struct w4a_hosting_t {
    const char  *domain;      /**< canonical domain: first name of its map line */
    const char  *matched;     /**< map key that matched: the host or a "*.suffix" pattern */
    const char  *hosting;     /**< hosting id = Unix user name, e.g. "w4a100010" */
    apr_uint32_t uid;         /**< the hosting's uid */
    apr_uint32_t gid;         /**< the hosting's gid */
    const char  *docroot;     /**< absolute document root, no trailing slash */
    const char  *php_version; /**< e.g. "8.2"; NULL when the domain has no PHP */
    w4a_state_e  state;       /**< active or suspended */
    apr_uint32_t flags;       /**< W4A_FLAG_* */
    const char  *log_dir;     /**< per-hosting log directory; NULL unless W4A_FLAG_LOG */
    const char  *media_host;  /**< the record's media host (media=HOST), e.g.
                                   "media.example.com"; NULL if none.  The
                                   prefix's media host of a site: through
                                   w4a_media_host() (mod_w4a_vhost.h) */
    apr_uint32_t php_limit;   /**< PHP requests in flight for the hosting on the
                                   node (flag php_limit=N, 1..W4A_PHP_LIMIT_MAX);
                                   0: the node's W4APHPHostingLimit */
    apr_uint32_t req_limit;   /**< requests of every kind in flight for the
                                   hosting on the node (flag req_limit=N,
                                   1..W4A_REQ_LIMIT_MAX); 0: the node's
                                   W4AGuardHostingLimit */
} w4a_hosting_t;

/** Name of a state as written in the map ("active", "suspended"). */
const char *w4a_state_name(w4a_state_e state);

#ifdef __cplusplus
}
#endif
#endif /* W4A_HOSTING_H */
