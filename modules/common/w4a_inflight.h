/**
 * @file w4a_inflight.h
 * @brief Requests in flight per name (a hosting), counted across every
 *        process of the node in shared memory, crash-safe.  httpd-free
 *        (APR only): mod_w4a_php's PHP limit and mod_w4a_guard's limit of
 *        all requests are two tables of this kind.
 *
 * The table is [bucket] x [row], one row per live process: a process only
 * ever changes the counters of its own row, and the parent clears the row
 * of a process that is gone (w4a_inflight_release_pid() from the MPM's
 * child_status hook: a normal exit, a crash, a SIGKILL alike), as httpd's
 * scoreboard keeps its per-child slots.  A name's figure is the sum of its
 * bucket over every row, kept as a total beside the rows.  A bucket belongs to the first name that claims
 * it (a window of 32 from the name's hash): two names share a bucket, and
 * its limit (stricter, never looser), only when a name finds every bucket
 * of its window held by others (about as many names as buckets).
 */
#ifndef W4A_INFLIGHT_H
#define W4A_INFLIGHT_H

#include <apr_pools.h>
#include <apr_shm.h>

/** A table, as one process sees it (opaque). */
typedef struct w4a_inflight_t w4a_inflight_t;

/**
 * Create a table in anonymous shared memory (inherited by the processes
 * forked after it) for @a rows processes.
 * @param max_bytes  the counters take at most this (fewer buckets then,
 *                   at least 1024)
 * @param size       set to the bytes of shared memory made
 * @return APR_SUCCESS, or apr_shm_create()'s error.
 */
apr_status_t w4a_inflight_create(w4a_inflight_t **t, apr_uint32_t rows,
                                 apr_size_t max_bytes, apr_size_t *size,
                                 apr_pool_t *p);

/**
 * For tests: replace the key of the client-share hash, drawn at random by
 * w4a_inflight_create(), by @a key, so that which pairs of (name, client)
 * fall in one share bucket is the same on every run.  Before any request
 * is counted.
 */
void w4a_inflight_set_key(w4a_inflight_t *t, const unsigned char key[16]);

/**
 * In a new process: claim a free row for @a pid.
 * @return APR_SUCCESS, or APR_ENOSPC when every row is held: this
 *         process's requests are then counted in @a p's memory only
 *         (they still see every other process's).
 */
apr_status_t w4a_inflight_claim(w4a_inflight_t *t, apr_uint32_t pid,
                                apr_pool_t *p);

/**
 * In the parent, for a process that has exited: zero its rows.
 * @return the requests they still held.
 */
apr_uint64_t w4a_inflight_release_pid(w4a_inflight_t *t, apr_uint32_t pid);

/**
 * Free the rows of processes that are gone though no exit was seen for
 * them (kill(pid, 0) says ESRCH), other than @a keep.
 * @param held  set to the requests they still held
 * @return the rows freed.
 */
apr_uint32_t w4a_inflight_reap(w4a_inflight_t *t, apr_uint32_t keep,
                               apr_uint64_t *held);

/** What w4a_inflight_enter*() decided. */
#define W4A_INFLIGHT_NOT_COUNTED (-1)  /**< this process has no row yet */
#define W4A_INFLIGHT_FULL        0     /**< the name is at its limit */
#define W4A_INFLIGHT_ADMITTED    1     /**< a place is held */
#define W4A_INFLIGHT_SHARE       2     /**< the client holds its share */

/**
 * Admit one request of @a name if the node holds fewer than @a limit in
 * flight for it; the place is given back when @a p is cleared.
 * @param inflight set to the figure seen, this request included
 * @return W4A_INFLIGHT_ADMITTED, _FULL (nothing held) or _NOT_COUNTED.
 */
int w4a_inflight_enter(w4a_inflight_t *t, const char *name,
                       apr_uint32_t limit, apr_uint32_t *inflight,
                       apr_pool_t *p);

/**
 * The places one client may hold of @a limit: @a percent of it, at least
 * one; 0 (no share) when @a percent is 0 or that is the whole limit.
 */
apr_uint32_t w4a_inflight_share(apr_uint32_t limit, int percent);

/**
 * As w4a_inflight_enter(), and also refuse the request when @a client
 * already holds @a share of @a name's places (share 0, or not under
 * @a limit: no share).  A client is what the caller makes of the
 * address (at most 16 bytes are hashed: IPv4, an IPv6 prefix).
 * @return W4A_INFLIGHT_ADMITTED, _FULL, _SHARE (nothing held) or
 *         _NOT_COUNTED.
 */
int w4a_inflight_enter_client(w4a_inflight_t *t, const char *name,
                              apr_uint32_t limit, const void *client,
                              apr_size_t client_len, apr_uint32_t share,
                              apr_uint32_t *inflight, apr_pool_t *p);

/**
 * Count one refusal of @a name.
 * @param refused set to the refusals counted for its bucket so far
 * @return 1 when a log line is due (none for this bucket in the last
 *         @a every seconds), 0 otherwise.
 */
int w4a_inflight_refused(w4a_inflight_t *t, const char *name, int every,
                         apr_uint32_t *refused);

/** The figures of a status page. */
typedef struct {
    apr_uint32_t rows;       /**< rows of the table (processes it can hold) */
    apr_uint32_t children;   /**< rows held by live processes */
    apr_uint32_t buckets;    /**< name buckets */
    apr_uint64_t inflight;   /**< requests in flight, node-wide */
    apr_uint64_t refused;    /**< refusals since start */
    apr_uint32_t busy;       /**< buckets with requests in flight */
    apr_uint32_t share_refused; /**< refusals for a client's share */
} w4a_inflight_stats_t;

/** Fill @a st from the table. */
void w4a_inflight_stats(w4a_inflight_t *t, w4a_inflight_stats_t *st);

/** The figures of @a name's bucket. */
void w4a_inflight_name(w4a_inflight_t *t, const char *name,
                       apr_uint32_t *inflight, apr_uint32_t *refused);

#endif
