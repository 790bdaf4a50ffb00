/**
 * @file vhost_private.h
 * @brief Private header of mod_w4a_vhost: per-module LogLevel, log tags,
 *        the status counters shared by the module's files.
 */
#ifndef MOD_W4A_VHOST_PRIVATE_H
#define MOD_W4A_VHOST_PRIVATE_H

#include <httpd.h>
#include <http_log.h>
#include "w4a_log.h"
#include "w4a_hosting.h"

APLOG_USE_MODULE(w4a_vhost);

/** Server-wide counters (status handler), in shared memory. */
typedef enum {
    CNT_LOOKUPS, CNT_HITS, CNT_UNKNOWN, CNT_SUSPENDED, CNT_BAD_HOST,
    CNT_REFUSED, CNT_OWNER_DENIED, CNT_RELOADS, CNT_RELOAD_FAILURES,
    CNT_MEDIA,
    /* the SQL/memcached source */
    CNT_CACHE_HITS, CNT_CACHE_NEGATIVE_HITS, CNT_CACHE_WAITS,
    CNT_MC_HITS, CNT_MC_MISSES, CNT_MC_ERRORS, CNT_BAD_CACHE_VALUES,
    CNT_MC_FORGED, CNT_MC_EXPIRED,
    CNT_DB_QUERIES, CNT_DB_ERRORS, CNT_BAD_RECORDS,
    CNT_STALE, CNT_UNAVAILABLE,
    CNT_HANDLER_REFUSED, CNT_HTACCESS_REFUSED, CNT_HEADERS_REMOVED,
    /* the static files (vhost_static.c) */
    CNT_SPECIAL_DENIED,
    CNT_MAX
} vhost_counter_e;

/** Adds one to a counter (a no-op without shared memory). */
void vhost_count(vhost_counter_e c);

/** Adds one to a refusal counter and notes the refusal in r->notes
 * ("w4a-vhost-refused" = the counter's name), for mod_w4a_metrics. */
void vhost_refused(request_rec *r, vhost_counter_e c);

/** The hosting of a request (of its main request, or the one it was
 *  redirected from), or NULL. */
const w4a_hosting_t *vhost_request_hosting(const request_rec *r);

/** Marks r (not its main request, nor the one it came from) as a node
 *  page: the operator's sections gave it a handler that does not serve
 *  the hosting's files (vhost_guard.c). */
void vhost_set_node_page(const request_rec *r);

/** 1 when vhost_set_node_page(r) was called for r itself. */
int vhost_node_page(const request_rec *r);

/** 1 when W4AVhostOwnerCheck is on for the request's server. */
int vhost_owner_check_on(const request_rec *r);

/* vhost_static.c */

/** "fifo", "socket", "regular file"... */
const char *vhost_filetype_name(apr_filetype_e t);

/** Logs W4A00161 (a file of a hosting that is no regular file or
 *  directory), counts it; returns 403. */
int vhost_refuse_type(request_rec *r, const w4a_hosting_t *rec,
                      apr_filetype_e t);

/** Hooks the handler that serves the hostings' static files from the
 *  descriptor it checked. */
void vhost_static_register_hooks(void);

/** Whether W4AVhostEngine is on for s. */
int vhost_engine_on(server_rec *s);

/** The handlers W4AVhostHandler adds to those a hosting may name, or NULL. */
const apr_array_header_t *vhost_extra_handlers(server_rec *s);

/* vhost_guard.c: what a hosting's per-directory configuration may not
 * decide (handlers), and the start-up check of the hostings' overrides. */

/** w4a_operator_handler(): the handler the operator's sections set. */
const char *vhost_operator_handler(request_rec *r);

/** Logs (W4A00153/00154) what the overrides of s's <Directory> sections
 *  that reach one of bases (every section when none) hand customers. */
void vhost_guard_check_overrides(server_rec *s,
                                 const apr_array_header_t *bases);

/** Fetches the other modules' optional functions. */
void vhost_guard_post_config(apr_pool_t *pconf);

/** Registers the guard's hooks. */
void vhost_guard_register_hooks(void);

#endif
