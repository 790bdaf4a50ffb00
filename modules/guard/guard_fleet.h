/**
 * @file guard_fleet.h
 * @brief The fleet's list of bans in memcached (httpd-free: the module
 *        and w4a-ban link it).
 *
 * One key, GUARD_FLEET_KEY under the memcached prefix, holds a sealed
 * value (w4a_mac.h, the vhost cache's key file) of one line per client:
 *
 *     ADDRESS SINCE_MS UNTIL_MS REASON HOSTING          (every hosting)
 *     ADDRESS@SCOPE SINCE_MS UNTIL_MS REASON HOSTING    (SCOPE only)
 *
 * ADDRESS as guard_key_text() writes it, times in Unix milliseconds,
 * UNTIL_MS 0 for a removal (kept GUARD_FLEET_TOMB_MS so that every node
 * sees it), HOSTING "-" when none.  A ban scoped to one hosting (a login
 * quota's, w4a-ban add --hosting) writes its hosting after an "@": a node
 * of before the scope finds no address there and skips the line (it does
 * not widen it to every hosting).  An unscoped line of reason "login"
 * (written by such a node, whose login bans held everywhere) is read as
 * scoped to its HOSTING, and skipped when it has none: no line of the old
 * format widens a login ban.  A node publishing a ban reads the
 * list, replaces the client's line and writes it back; two nodes doing so
 * in the same instant may lose one line (memcached without CAS here): the
 * ban still holds on the node that decided it.
 */
#ifndef GUARD_FLEET_H
#define GUARD_FLEET_H

#include <apr.h>
#include <apr_errno.h>
#include <apr_pools.h>
#include <apr_tables.h>

#include "w4a_mc.h"

#define GUARD_FLEET_KEY      "bans"
#define GUARD_FLEET_TOMB_MS  (600 * 1000)
#define GUARD_FLEET_MAX      4096    /* lines kept, the ones ending last */
/* bytes of the list, at most (memcached's items are 1 MiB by default):
 * a publisher keeps the lines ending last that fit, a reader refuses a
 * longer value as not ours */
#define GUARD_FLEET_BYTES    (768 * 1024)

typedef struct guard_fleet_ban_t {
    const char  *addr;
    apr_int64_t  since_ms;
    apr_int64_t  until_ms;     /* 0: removed at since_ms */
    const char  *reason;
    const char  *hosting;      /* "-": none */
    const char  *scope;        /* NULL: every hosting; else the one */
} guard_fleet_ban_t;

#define GUARD_FLEET_NAME_MAX 63      /* bytes of a scope's hosting name */

/** Whether @a name may be a scope (1 to GUARD_FLEET_NAME_MAX bytes of
 * letters, digits, ".", "_", "-"). */
int guard_fleet_name_ok(const char *name);

/**
 * Read the fleet list.
 * @param bans set to an array of guard_fleet_ban_t (empty when absent)
 * @return APR_SUCCESS (also for an absent key); APR_EGENERAL (memcached
 *         down); W4A_MAC_EFORGED / W4A_MAC_EEXPIRED (a value the key did
 *         not seal, or too old: treated as empty by the writers).
 */
apr_status_t guard_fleet_read(w4a_mc_t *mc, apr_array_header_t **bans,
                              const char **err, apr_pool_t *p);

/**
 * Put @a ban in the fleet list (replacing the line of its address and
 * scope), dropping lines that ended.
 * @return APR_SUCCESS, APR_EINVAL (a scope guard_fleet_name_ok refuses:
 *         nothing written), or what reading / writing returned.
 */
apr_status_t guard_fleet_publish(w4a_mc_t *mc, const guard_fleet_ban_t *ban,
                                 apr_int64_t now_ms, const char **err,
                                 apr_pool_t *p);

#endif /* GUARD_FLEET_H */
