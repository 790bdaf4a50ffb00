/**
 * @file vhost_source.h
 * @brief mod_w4a_vhost's SQL source (mod_dbd), with memcached shared by
 *        every node and a short per-process cache in front of it.
 *
 * A name is looked up as itself, then as "*.suffix" wildcards from the
 * longest suffix, each key through three layers:
 *
 *   per-process cache (positive and negative lifetimes)
 *     -> memcached (several servers, consistent hashing; shared by nodes)
 *       -> the database, through mod_dbd's prepared statement
 *
 * Many requests missing the same key at once cost one fetch per process
 * (the others wait for it) and one database query per node (processes
 * take a per-key file lock and look in memcached again before querying).
 * When the database fails, the last known record is served (stale); an
 * unknown name is then answered 503, never a cached 404.  When memcached
 * fails, lookups go to the database, slower but without an error.
 */
#ifndef MOD_W4A_VHOST_SOURCE_H
#define MOD_W4A_VHOST_SOURCE_H

#include <httpd.h>
#include <http_config.h>
#include "w4a_hosting.h"
#include "w4a_map.h"

/** Configuration of the source, per server (merged). */
typedef struct vhost_source_conf vhost_source_conf;

/** The source's state in one process. */
typedef struct vhost_source vhost_source;

typedef enum {
    SRC_FOUND,         /**< a record */
    SRC_NOTFOUND,      /**< no record for the name */
    SRC_UNAVAILABLE    /**< the database could not be asked, nothing known */
} vhost_source_result_e;

vhost_source_conf *vhost_source_conf_create(apr_pool_t *p);
vhost_source_conf *vhost_source_conf_merge(apr_pool_t *p,
                                           const vhost_source_conf *base,
                                           const vhost_source_conf *add);

/** 1 when the server has W4AVhostDBDQuery. */
int vhost_source_configured(const vhost_source_conf *sc);

/** The directives of the source, for the module's command table; they
 * find their configuration through the getter set once at start-up. */
typedef vhost_source_conf *vhost_source_conf_fn(server_rec *s);
void vhost_source_set_getter(vhost_source_conf_fn *get);
const char *vhost_src_set_query(cmd_parms *cmd, void *d, const char *a);
const char *vhost_src_add_mc_server(cmd_parms *cmd, void *d, const char *a);
const char *vhost_src_set_mc_prefix(cmd_parms *cmd, void *d, const char *a);
const char *vhost_src_set_mc_key(cmd_parms *cmd, void *d, const char *a);
const char *vhost_src_set_mc_timeout(cmd_parms *cmd, void *d, const char *a);
const char *vhost_src_set_cache_ttl(cmd_parms *cmd, void *d, const char *a, const char *b);
const char *vhost_src_set_mc_ttl(cmd_parms *cmd, void *d, const char *a, const char *b);
const char *vhost_src_set_stale(cmd_parms *cmd, void *d, const char *a);
const char *vhost_src_set_cache_size(cmd_parms *cmd, void *d, const char *a);
#define VHOST_SOURCE_COMMANDS \
    AP_INIT_TAKE1("W4AVhostDBDQuery", vhost_src_set_query, NULL, RSRC_CONF, \
                  "SQL query giving the record of a name (%s); needs mod_dbd"), \
    AP_INIT_ITERATE("W4AVhostMemcached", vhost_src_add_mc_server, NULL, RSRC_CONF, \
                    "memcached servers host:port shared by the nodes, or " \
                    "'none'"), \
    AP_INIT_TAKE1("W4AVhostMemcachedPrefix", vhost_src_set_mc_prefix, NULL, RSRC_CONF, \
                  "prefix of the memcached keys (default w4a:)"), \
    AP_INIT_TAKE1("W4AVhostMemcachedKey", vhost_src_set_mc_key, NULL, RSRC_CONF, \
                  "file of the key sealing memcached values (0640 root:httpd's " \
                  "group), or 'none'"), \
    AP_INIT_TAKE1("W4AVhostMemcachedTimeout", vhost_src_set_mc_timeout, NULL, \
                  RSRC_CONF, "memcached connect and I/O timeout, ms"), \
    AP_INIT_TAKE12("W4AVhostMemcachedTTL", vhost_src_set_mc_ttl, NULL, RSRC_CONF, \
                   "seconds memcached keeps a record, and a not-found"), \
    AP_INIT_TAKE12("W4AVhostCacheTTL", vhost_src_set_cache_ttl, NULL, RSRC_CONF, \
                   "seconds a process keeps a record, and a not-found"), \
    AP_INIT_TAKE1("W4AVhostStaleTTL", vhost_src_set_stale, NULL, RSRC_CONF, \
                  "seconds a known record is still served while the " \
                  "database is down"), \
    AP_INIT_TAKE1("W4AVhostCacheSize", vhost_src_set_cache_size, NULL, RSRC_CONF, \
                  "names kept by each process's cache"),


/**
 * post_config: the source state of a server (shared by servers with the
 * same settings through @a states).
 * @return NULL and logs when the configuration cannot work.
 */
vhost_source *vhost_source_setup(apr_pool_t *pconf, apr_pool_t *ptemp,
                                 server_rec *s, const vhost_source_conf *sc,
                                 const w4a_map_checks_t *checks,
                                 apr_hash_t *states);

/** child_init: per-process cache, locks, memcached connections. */
void vhost_source_child_init(apr_pool_t *pchild, server_rec *s);

/**
 * Resolve a normalised host.
 * @param rec  on SRC_FOUND, the record, allocated from r->pool
 */
vhost_source_result_e vhost_source_find(request_rec *r, vhost_source *src,
                                        const char *host,
                                        const w4a_hosting_t **rec);

/** Status of the source as a JSON object (for the status handler). */
void vhost_source_status(request_rec *r, vhost_source *src);

#endif
