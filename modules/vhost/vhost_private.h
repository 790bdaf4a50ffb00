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
    CNT_MAX
} vhost_counter_e;

/** Adds one to a counter (a no-op without shared memory). */
void vhost_count(vhost_counter_e c);

#endif
