/*
 * mod_w4a_php: PHP requests in flight per hosting, node-wide (see
 * php_limit.h).
 *
 * The table is modules/common/w4a_inflight.c's (mod_w4a_guard's limit
 * of all requests is another one), made and kept as
 * w4a_inflight_httpd.h makes both; this file says which, and answers
 * mod_w4a_php.
 */
#include <string.h>
#include <unistd.h>

#include <httpd.h>
#include <http_log.h>
#include <apr_strings.h>

#include "php_private.h"
#include "php_limit.h"
#include "w4a_inflight_httpd.h"

#define USERDATA_KEY   "w4a_php_limit"
#define TABLE_BYTES    (16u << 20)  /* both count areas at most this */

static w4a_inflight_t *table;       /* NULL: none */

static const w4a_inflight_glue_t glue = {
    USERDATA_KEY, TABLE_BYTES, "per-hosting PHP limit", "PHP requests",
    "W4APHPHostingLimit is not enforced",
    W4ALOGNO(00261), W4ALOGNO(00262), W4ALOGNO(00263), W4ALOGNO(00264)
};

apr_status_t php_limit_post_config(server_rec *s)
{
    table = w4a_inflight_httpd_table(s, &glue);
    return table ? APR_SUCCESS : APR_ENOSHMAVAIL;
}

void php_limit_child_init(apr_pool_t *pchild, server_rec *s)
{
    w4a_inflight_httpd_child_init(table, pchild, s, &glue);
}

void php_limit_child_status(server_rec *s, pid_t pid, ap_generation_t gen,
                            int slot, mpm_child_status state)
{
    w4a_inflight_httpd_child_status(table, s, pid, state, &glue);
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
