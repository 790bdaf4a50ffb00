/**
 * @file guard_hosting.h
 * @brief mod_w4a_guard: requests of every kind in flight per hosting,
 *        node-wide (W4AGuardHostingLimit, the record's req_limit=N),
 *        counted in modules/common/w4a_inflight.c's table: crash-safe,
 *        one row per child, cleared by the parent for a child gone.
 */
#ifndef MOD_W4A_GUARD_HOSTING_H
#define MOD_W4A_GUARD_HOSTING_H

#include <httpd.h>
#include <http_config.h>
#include <ap_mpm.h>

/** W4AGuardHostingLimit: off (only records' req_limit), auto, or N. */
#define GUARD_HLIMIT_OFF   0
#define GUARD_HLIMIT_AUTO  (-2)

/**
 * post_config: create the table once per httpd process (kept across
 * graceful restarts, whose old children may still serve).
 * @param limit        GUARD_HLIMIT_OFF, GUARD_HLIMIT_AUTO or N > 0
 * @param retry_after  seconds of the refusal's Retry-After
 * @param client_share percent of a hosting's limit one client may hold
 *                     (0: no share)
 * @return APR_SUCCESS, or the shared-memory error (logged here; the
 *         limit is then not enforced).
 */
apr_status_t guard_hosting_post_config(server_rec *s, int limit,
                                       int retry_after, int client_share);

/** child_init: claim this child's row. */
void guard_hosting_child_init(apr_pool_t *pchild, server_rec *s);

/** child_status (parent): clear the row of a child that has exited. */
void guard_hosting_child_status(server_rec *s, pid_t pid,
                                ap_generation_t gen, int slot,
                                mpm_child_status state);

/** Whether a hosting whose record says @a req_limit (0: none) is held to
 * a limit, so guard_hosting_enter() has something to do. */
int guard_hosting_limited(apr_uint32_t req_limit);

/**
 * Admit the request of a hosting, or refuse it.
 * @param hosting  the hosting's name
 * @param req_limit the record's req_limit (0: none)
 * @param client   the client's address bytes (its share), or NULL
 * @param exempt   asked (with @a baton) before a refusal for the share:
 *                 1, a whitelisted client, held to the limit only
 * @return DECLINED (admitted, or no limit), or HTTP_SERVICE_UNAVAILABLE
 *         with Retry-After set.
 */
int guard_hosting_enter(request_rec *r, const char *hosting,
                        apr_uint32_t req_limit, const void *client,
                        apr_size_t client_len, int (*exempt)(void *),
                        void *baton);

/** The status page's "hosting_limit" member (`,"hosting_limit":{...}`). */
void guard_hosting_status(request_rec *r);

/** The status page of one hosting (?hosting=NAME). */
void guard_hosting_status_one(request_rec *r, const char *hosting);

struct w4a_prom_t;
/** The node-wide figures of the hosting limit, for the Prometheus page
 * (nothing without the table). */
void guard_hosting_prom(struct w4a_prom_t *out);

#endif
