/*
 * mod_w4a_guard: requests of every kind in flight per hosting, node-wide
 * (see guard_hosting.h).  The same table as mod_w4a_php's PHP limit
 * (modules/common/w4a_inflight.c), another instance: a hosting may be held
 * to N requests of any kind and, inside those, to M PHP requests.
 */
#include <string.h>
#include <unistd.h>

#include <httpd.h>
#include <http_log.h>
#include <http_protocol.h>
#include <apr_strings.h>

#include "guard_private.h"
#include "guard_hosting.h"
#include "w4a_inflight_httpd.h"
#include "w4a_prom.h"

#define USERDATA_KEY   "w4a_guard_hosting_limit"
#define TABLE_BYTES    (8u << 20)   /* both count areas at most this */
#define LOG_EVERY      5            /* seconds between two log lines */

static w4a_inflight_t *table;       /* NULL: none */
static apr_uint32_t node_limit;     /* 0: only records' req_limit */
static int retry;
static int share_pct;               /* 0: no client share */

static const w4a_inflight_glue_t glue = {
    USERDATA_KEY, TABLE_BYTES, "per-hosting request limit", "requests",
    "W4AGuardHostingLimit and records' req_limit are not enforced",
    W4ALOGNO(00661), W4ALOGNO(00662), W4ALOGNO(00663), W4ALOGNO(00664)
};

apr_status_t guard_hosting_post_config(server_rec *s, int limit,
                                       int retry_after, int client_share)
{
    int daemons = 0, threads = 0;

    node_limit = 0;
    retry = retry_after;
    share_pct = client_share;
    if (limit == GUARD_HLIMIT_AUTO) {
        /* max(8, MaxRequestWorkers / 4): a quarter of the node's threads */
        if (ap_mpm_query(AP_MPMQ_MAX_DAEMONS, &daemons) == APR_SUCCESS
            && ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads) == APR_SUCCESS
            && daemons > 0) {
            int mrw = daemons * (threads > 0 ? threads : 1);
            node_limit = mrw / 4 > 8 ? (apr_uint32_t)(mrw / 4) : 8;
        }
        else {
            node_limit = 8;
        }
    }
    else if (limit > 0) {
        node_limit = (apr_uint32_t)limit;
    }
    table = w4a_inflight_httpd_table(s, &glue);
    return table ? APR_SUCCESS : APR_ENOSHMAVAIL;
}

void guard_hosting_child_init(apr_pool_t *pchild, server_rec *s)
{
    w4a_inflight_httpd_child_init(table, pchild, s, &glue);
}

void guard_hosting_child_status(server_rec *s, pid_t pid,
                                ap_generation_t gen, int slot,
                                mpm_child_status state)
{
    w4a_inflight_httpd_child_status(table, s, pid, state, &glue);
}

int guard_hosting_limited(apr_uint32_t req_limit)
{
    return table && (req_limit || node_limit);
}

int guard_hosting_enter(request_rec *r, const char *hosting,
                        apr_uint32_t req_limit, const void *client,
                        apr_size_t client_len, int (*exempt)(void *),
                        void *baton)
{
    apr_uint32_t limit = req_limit ? req_limit : node_limit, n, refused;
    apr_uint32_t share;
    int rc;

    if (!table || !limit) {
        return DECLINED;
    }
    share = client ? w4a_inflight_share(limit, share_pct) : 0;
    rc = w4a_inflight_enter_client(table, hosting, limit, client, client_len,
                                   share, &n, r->pool);
    if (rc == W4A_INFLIGHT_SHARE && exempt && exempt(baton) == 1) {
        /* whitelisted: the hosting's limit only */
        rc = w4a_inflight_enter(table, hosting, limit, &n, r->pool);
    }
    if (rc != W4A_INFLIGHT_FULL && rc != W4A_INFLIGHT_SHARE) {
        return DECLINED;
    }
    if (w4a_inflight_refused(table, hosting, LOG_EVERY, &refused)) {
        if (rc == W4A_INFLIGHT_SHARE) {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, W4ALOGNO(00666)
                          "hosting %s: client %s holds its share of the "
                          "hosting's requests in flight (%u of its limit of "
                          "%u, W4AGuardHostingClientShare %d%%); answered "
                          "503 (%u refused so far; logged at most every "
                          "%d s)", hosting, r->useragent_ip, share, limit,
                          share_pct, refused, LOG_EVERY);
        }
        else {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, W4ALOGNO(00660)
                          "hosting %s: requests in flight on the node at "
                          "its limit of %u (%s); answered 503 (%u refused "
                          "so far; logged at most every %d s)", hosting,
                          limit, req_limit ? "record's req_limit"
                                           : "W4AGuardHostingLimit",
                          refused, LOG_EVERY);
        }
    }
    apr_table_setn(r->err_headers_out, "Retry-After",
                   apr_itoa(r->pool, retry));
    apr_table_setn(r->notes, "w4a-guard-hosting",
                   rc == W4A_INFLIGHT_SHARE ? "client-share" : "limit");
    return HTTP_SERVICE_UNAVAILABLE;
}

void guard_hosting_status(request_rec *r)
{
    w4a_inflight_stats_t st;

    if (!table) {
        ap_rputs(",\"hosting_limit\":null", r);
        return;
    }
    w4a_inflight_stats(table, &st);
    ap_rprintf(r, ",\"hosting_limit\":{\"limit\":%u,\"retry_after\":%d,"
               "\"client_share_percent\":%d,"
               "\"rows\":%u,\"children\":%u,\"buckets\":%u,\"inflight\":%"
               APR_UINT64_T_FMT ",\"refused\":%" APR_UINT64_T_FMT
               ",\"refused_client_share\":%u,\"busy_buckets\":%u}",
               node_limit, retry, share_pct, st.rows, st.children,
               st.buckets, st.inflight, st.refused, st.share_refused,
               st.busy);
}

void guard_hosting_prom(w4a_prom_t *out)
{
    w4a_inflight_stats_t st;

    if (!table) {
        return;
    }
    w4a_inflight_stats(table, &st);
    w4a_prom_one(out, "w4a_guard_hosting_inflight_requests", W4A_PROM_GAUGE,
                 "Requests in flight, node-wide (W4AGuardHostingLimit's "
                 "table).", st.inflight);
    w4a_prom_one(out, "w4a_guard_hosting_busy_hostings", W4A_PROM_GAUGE,
                 "Hostings with requests in flight.", st.busy);
    w4a_prom_one(out, "w4a_guard_hosting_limit_refused_total",
                 W4A_PROM_COUNTER, "Requests refused at "
                 "W4AGuardHostingLimit (a client's share included).",
                 st.refused);
    w4a_prom_one(out, "w4a_guard_hosting_limit_client_share_refused_total",
                 W4A_PROM_COUNTER, "Requests refused because their client "
                 "held its share (W4AGuardHostingClientShare).",
                 st.share_refused);
    w4a_prom_one(out, "w4a_guard_hosting_limit", W4A_PROM_GAUGE,
                 "W4AGuardHostingLimit, for hostings without a "
                 "req_limit of their own (0: none).",
                 (apr_uint64_t)node_limit);
}

void guard_hosting_status_one(request_rec *r, const char *hosting)
{
    apr_uint32_t n = 0, refused = 0;

    if (table) {
        w4a_inflight_name(table, hosting, &n, &refused);
    }
    ap_rprintf(r, "{\"hosting\":\"%s\",\"table\":%s,\"inflight\":%u,"
               "\"refused\":%u}\n", ap_escape_logitem(r->pool, hosting),
               table ? "true" : "false", n, refused);
}
