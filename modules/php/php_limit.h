/**
 * @file php_limit.h
 * @brief mod_w4a_php: PHP requests in flight per hosting, counted across
 *        every child of the node (shared memory), crash-safe.
 *
 * The table is [hosting bucket] x [row], one row per live child: a child
 * only ever changes the counters of its own row, and the parent clears the
 * row of a child that is gone (MPM child_status hook: a normal exit, a
 * crash, a SIGKILL alike), as httpd's scoreboard keeps its per-child
 * slots.  A hosting's figure is the sum of its bucket over every row.
 * Hostings are hashed into buckets: two hostings sharing a bucket share
 * its limit (stricter, never looser).
 */
#ifndef MOD_W4A_PHP_LIMIT_H
#define MOD_W4A_PHP_LIMIT_H

#include <httpd.h>
#include <http_config.h>
#include <ap_mpm.h>
#include <apr_pools.h>

#include "w4a_inflight.h"       /* W4A_INFLIGHT_* */

/** One admitted request's place in the table (opaque). */
typedef struct php_limit_slot php_limit_slot;

/**
 * post_config: create the table once per httpd process (it lives in the
 * process pool, so that a graceful restart keeps the counts of the
 * children that still serve).
 * @return APR_SUCCESS, or the shared-memory error (logged here).
 */
apr_status_t php_limit_post_config(server_rec *s);

/** child_init: claim this child's row. */
void php_limit_child_init(apr_pool_t *pchild, server_rec *s);

/** child_status (parent): clear the row of a child that has exited. */
void php_limit_child_status(server_rec *s, pid_t pid, ap_generation_t gen,
                            int slot, mpm_child_status state);

/**
 * Admit one PHP request of @a hosting if the node holds fewer than
 * @a limit in flight for it; the slot is released when @a p goes.
 * @param hosting  the hosting's name
 * @param limit    the hosting's limit (> 0)
 * @param client   the client's 16 address bytes (w4a_client_bytes()), or
 *                 NULL: no share
 * @param share    the places one client may hold (0: no share)
 * @param inflight set to the figure seen, this request included
 * @param p        the request's pool
 * @return W4A_INFLIGHT_ADMITTED, _FULL or _SHARE (nothing held), or
 *         _NOT_COUNTED (no table: post_config failed or not run).
 */
int php_limit_enter(const char *hosting, apr_uint32_t limit,
                    const unsigned char *client, apr_uint32_t share,
                    apr_uint32_t *inflight, apr_pool_t *p);

/**
 * Count one refusal of @a hosting.
 * @param refused set to the refusals counted for its bucket so far
 * @return 1 when a log line is due (none for this bucket in the last
 *         @a every seconds), 0 otherwise.
 */
int php_limit_refused(const char *hosting, int every, apr_uint32_t *refused);

/** The figures of the status page. */
typedef struct {
    apr_uint32_t rows;       /**< rows of the table (children it can hold) */
    apr_uint32_t children;   /**< rows held by live children */
    apr_uint32_t buckets;    /**< hosting buckets */
    apr_uint64_t inflight;   /**< PHP requests in flight, node-wide */
    apr_uint64_t refused;    /**< refusals since start */
    apr_uint32_t busy;       /**< buckets with requests in flight */
    apr_uint32_t share_refused; /**< refusals for a client's share */
} php_limit_stats_t;

/** @return APR_SUCCESS, or APR_ENOSHMAVAIL without a table. */
apr_status_t php_limit_stats(php_limit_stats_t *st);

/**
 * The figures of one hosting's bucket.
 * @return APR_SUCCESS, or APR_ENOSHMAVAIL without a table.
 */
apr_status_t php_limit_hosting(const char *hosting, apr_uint32_t *inflight,
                               apr_uint32_t *refused);

#endif
