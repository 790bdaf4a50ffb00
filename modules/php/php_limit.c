/*
 * mod_w4a_php: PHP requests in flight per hosting, node-wide (see
 * php_limit.h).
 *
 * The table is modules/common/w4a_inflight.c's (mod_w4a_guard's limit
 * of all requests is another one); this file is its httpd glue: the
 * table made once per httpd process (kept across graceful restarts), a
 * row per child, cleared by the parent when a child is gone, and the log
 * lines.
 */
#include <string.h>
#include <unistd.h>

#include <httpd.h>
#include <http_log.h>
#include <apr_strings.h>

#include "php_private.h"
#include "php_limit.h"
#include "w4a_inflight.h"

#define USERDATA_KEY   "w4a_php_limit"
#define TABLE_BYTES    (16u << 20)  /* both count areas at most this */

static w4a_inflight_t *table;       /* NULL: none */

apr_status_t php_limit_post_config(server_rec *s)
{
    apr_pool_t *pglobal = s->process->pool;
    w4a_inflight_t *t = NULL;
    int limit_daemons = 0;
    apr_size_t size = 0;
    apr_status_t rv;

    apr_pool_userdata_get((void **)&t, USERDATA_KEY, pglobal);
    if (t) {
        table = t;
        return APR_SUCCESS;
    }
    /* ServerLimit: a graceful restart cannot change it, so the table made
     * at the first start serves every generation.  A child of an old
     * generation may still hold a row while a new one squats its
     * scoreboard slot: twice the slots, and a little more. */
    if (ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &limit_daemons) != APR_SUCCESS
        || limit_daemons < 1) {
        limit_daemons = 16;
    }
    rv = w4a_inflight_create(&t, (apr_uint32_t)limit_daemons * 2 + 2,
                             TABLE_BYTES, &size, pglobal);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, W4ALOGNO(00261)
                     "cannot create the shared memory of the per-hosting "
                     "PHP limit (%" APR_SIZE_T_FMT " bytes): W4APHPHostingLimit "
                     "is not enforced", size);
        return rv;
    }
    apr_pool_userdata_set(t, USERDATA_KEY, apr_pool_cleanup_null, pglobal);
    table = t;
    return APR_SUCCESS;
}

void php_limit_child_init(apr_pool_t *pchild, server_rec *s)
{
    w4a_inflight_stats_t st;

    if (!table
        || w4a_inflight_claim(table, (apr_uint32_t)getpid(), pchild)
           == APR_SUCCESS) {
        return;
    }
    /* Cannot happen with the rows above; this child's requests are then
     * counted for itself only (and still see every other child's). */
    w4a_inflight_stats(table, &st);
    ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, W4ALOGNO(00262)
                 "no free row in the per-hosting PHP limit table (%u rows): "
                 "the PHP requests of this child (pid %u) are not seen by "
                 "the others", st.rows, (apr_uint32_t)getpid());
}

void php_limit_child_status(server_rec *s, pid_t pid, ap_generation_t gen,
                            int slot, mpm_child_status state)
{
    apr_uint64_t held;

    if (!table) {
        return;
    }
    if (state == MPM_CHILD_EXITED) {
        held = w4a_inflight_release_pid(table, (apr_uint32_t)pid);
        if (held) {
            ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, W4ALOGNO(00263)
                         "child %ld exited with %" APR_UINT64_T_FMT
                         " PHP requests counted in flight; its "
                         "counts cleared", (long)pid, held);
        }
    }
    else if (state == MPM_CHILD_STARTED) {
        /* A row whose process is gone though no exit was seen for it (a
         * parent that itself was restarted by hand in between): freed. */
        apr_uint32_t freed = w4a_inflight_reap(table, (apr_uint32_t)pid,
                                               &held);
        if (freed) {
            ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, W4ALOGNO(00264)
                         "%u rows of processes gone without an exit seen "
                         "freed; %" APR_UINT64_T_FMT " PHP requests counted "
                         "in flight cleared", freed, held);
        }
    }
}

int php_limit_enter(const char *hosting, apr_uint32_t limit,
                    const unsigned char *client, apr_uint32_t share,
                    apr_uint32_t *inflight, apr_pool_t *p)
{
    if (!table) {
        *inflight = 0;
        return W4A_INFLIGHT_NOT_COUNTED;
    }
    return w4a_inflight_enter_client(table, hosting, limit, client,
                                     client ? 16 : 0, share, inflight, p);
}

int php_limit_refused(const char *hosting, int every, apr_uint32_t *refused)
{
    if (!table) {
        *refused = 0;
        return 1;
    }
    return w4a_inflight_refused(table, hosting, every, refused);
}

apr_status_t php_limit_stats(php_limit_stats_t *st)
{
    w4a_inflight_stats_t w;

    memset(st, 0, sizeof(*st));
    if (!table) {
        return APR_ENOSHMAVAIL;
    }
    w4a_inflight_stats(table, &w);
    st->rows = w.rows;
    st->children = w.children;
    st->buckets = w.buckets;
    st->inflight = w.inflight;
    st->refused = w.refused;
    st->busy = w.busy;
    st->share_refused = w.share_refused;
    return APR_SUCCESS;
}

apr_status_t php_limit_hosting(const char *hosting, apr_uint32_t *inflight,
                               apr_uint32_t *refused)
{
    if (!table) {
        *inflight = *refused = 0;
        return APR_ENOSHMAVAIL;
    }
    w4a_inflight_name(table, hosting, inflight, refused);
    return APR_SUCCESS;
}
