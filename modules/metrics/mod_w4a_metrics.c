/*
 * mod_w4a_metrics: which hosting is it?  Per-hosting counters of the
 * node, in one table every child shares (modules/common/w4a_metrics.c),
 * exposed to Prometheus at the handler "w4a-metrics" and read directly by
 * w4a-top.  See docs/metrics.md.
 *
 * Every request is counted once, in log_transaction, for the hosting
 * mod_w4a_vhost gave it, with the figures of the last request of its
 * internal-redirect chain (the one whose status and bytes mod_log_config
 * logs).  A PHP request is one mod_w4a_php dispatched to the hosting's
 * pool (its optional function, which no configuration can fake); its time
 * runs from our fixup just after the dispatch to the end of the
 * response passing our output filter.
 */
#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>
#include <util_filter.h>
#include <apr_optional.h>
#include <apr_optional_hooks.h>
#include <apr_strings.h>
#include <unistd.h>

#include "metrics_private.h"
#include "w4a_httpd.h"
#include "mod_w4a_php.h"
#include "w4a_metrics.h"
#include "w4a_prom.h"
#include "w4a_util.h"

module AP_MODULE_DECLARE_DATA w4a_metrics_module;

#define HANDLER        "w4a-metrics"
#define FILTER         "W4A_METRICS"
#define USERDATA_KEY   "w4a_metrics_table"
#define DEF_ROWS       4096
#define DEF_DOMAINS    16                  /* per hosting */
#define DEF_DROWS      16384
#define DEF_FILE       "w4a-metrics.shm"   /* in DefaultRuntimeDir */
#define FULL_LOG_EVERY 60                  /* seconds */

typedef struct {
    int          engine;       /* -1 unset, 0 off, 1 on */
    int          rows;         /* -1 unset */
    const char  *file;         /* NULL unset */
    int          recent_min;   /* -1 unset, 0 off */
    int          domains;      /* -1 unset, 0 off: per hosting */
    int          drows;        /* -1 unset */
} metrics_conf;

/* The table, once per httpd process (it lives in the process pool: a
 * graceful restart keeps its counts). */
typedef struct {
    w4a_metrics_table_t *t;
    const char          *file;
    apr_uint32_t         rows;
    apr_uint32_t         drows;
    w4a_metrics_cache_t  cache;    /* copied at fork: each process its own */
} metrics_global;

/* One request's PHP timing: in the request configuration of the initial
 * request (w4a_initial_request), which its sub-requests and internal
 * redirects reach, and no per-directory configuration does. */
typedef struct {
    apr_time_t dispatched;   /* our fixup after mod_w4a_php's dispatch */
    apr_time_t done;         /* EOS through our filter */
    int        php;          /* the handler run was that dispatch */
} metrics_req;

static metrics_global *G;
static int recent_min;           /* the main server's W4AMetricsRecentScript */
static apr_uint32_t domain_cap;  /* the main server's W4AMetricsDomains */
static APR_OPTIONAL_FN_TYPE(w4a_hosting) *hosting_of;
static APR_OPTIONAL_FN_TYPE(w4a_php_dispatched) *php_dispatched;

/* ------------------------------------------------------------------ */
/* Configuration: every directive is global (main server only).       */

static void *create_srv_conf(apr_pool_t *p, server_rec *s)
{
    metrics_conf *c = apr_pcalloc(p, sizeof(*c));
    c->engine = -1;
    c->rows = -1;
    c->file = NULL;
    c->recent_min = -1;
    c->domains = -1;
    c->drows = -1;
    return c;
}

static const char *global_only(cmd_parms *cmd)
{
    return ap_check_cmd_context(cmd, GLOBAL_ONLY);
}

static const char *set_engine(cmd_parms *cmd, void *dummy, int on)
{
    metrics_conf *c = ap_get_module_config(cmd->server->module_config,
                                           &w4a_metrics_module);
    const char *err = global_only(cmd);
    if (err) {
        return err;
    }
    c->engine = on;
    return NULL;
}

/* A numeric directive: where it goes in metrics_conf, its range, what
 * its number counts (for the message). */
typedef struct {
    apr_size_t   offset;
    apr_int64_t  min, max;
    const char  *what;
} number_directive;

static const number_directive table_size = {
    APR_OFFSETOF(metrics_conf, rows), W4A_METRICS_MIN_ROWS,
    W4A_METRICS_MAX_ROWS, "rows" };
static const number_directive recent_script = {
    APR_OFFSETOF(metrics_conf, recent_min), 0, 525600, "minutes" };
static const number_directive domains_per_hosting = {
    APR_OFFSETOF(metrics_conf, domains), 0, W4A_METRICS_MAX_DOMAINS,
    "domains per hosting" };
static const number_directive domain_table_size = {
    APR_OFFSETOF(metrics_conf, drows), 1, W4A_METRICS_MAX_DOMAIN_ROWS,
    "rows" };

static const char *set_number(cmd_parms *cmd, void *dummy, const char *arg)
{
    const number_directive *d = cmd->info;
    metrics_conf *c = ap_get_module_config(cmd->server->module_config,
                                           &w4a_metrics_module);
    const char *err = global_only(cmd);
    apr_int64_t n;

    if (err) {
        return err;
    }
    if (!w4a_parse_number(arg, d->min, d->max, &n)) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not a number of %s from "
                            "%s to %" APR_INT64_T_FMT,
                            cmd->directive->directive, arg, d->what,
                            d->min ? apr_psprintf(cmd->pool,
                                                  "%" APR_INT64_T_FMT, d->min)
                                   : "0 (off)", d->max);
    }
    *(int *)(void *)((char *)c + d->offset) = (int)n;
    return NULL;
}

static const char *set_file(cmd_parms *cmd, void *dummy, const char *arg)
{
    metrics_conf *c = ap_get_module_config(cmd->server->module_config,
                                           &w4a_metrics_module);
    const char *err = global_only(cmd);
    if (err) {
        return err;
    }
    c->file = ap_runtime_dir_relative(cmd->pool, arg);
    if (!c->file) {
        return apr_psprintf(cmd->pool, "W4AMetricsFile: invalid path '%s'",
                            arg);
    }
    return NULL;
}

static const command_rec metrics_cmds[] = {
    AP_INIT_FLAG("W4AMetrics", set_engine, NULL, RSRC_CONF,
                 "On: count every request per hosting (default Off)"),
    AP_INIT_TAKE1("W4AMetricsTableSize", set_number,
                  (void *)&table_size, RSRC_CONF,
                  "rows of the per-hosting table (default 4096); hostings "
                  "beyond it are counted as (other)"),
    AP_INIT_TAKE1("W4AMetricsFile", set_file, NULL, RSRC_CONF,
                  "the table's file, read by w4a-top (default "
                  DEF_FILE " in DefaultRuntimeDir)"),
    AP_INIT_TAKE1("W4AMetricsRecentScript", set_number,
                  (void *)&recent_script, RSRC_CONF,
                  "minutes: count PHP requests of scripts modified that "
                  "recently (default 0: off)"),
    AP_INIT_TAKE1("W4AMetricsDomains", set_number,
                  (void *)&domains_per_hosting, RSRC_CONF,
                  "domains counted on their own per hosting (default 16; "
                  "0: no domain figures); the others as (other)"),
    AP_INIT_TAKE1("W4AMetricsDomainTableSize", set_number,
                  (void *)&domain_table_size, RSRC_CONF,
                  "rows of the per-domain table (default 16384); domains "
                  "beyond it are counted as (other) of (other)"),
    { NULL }
};

/* ------------------------------------------------------------------ */
/* Counting.                                                          */

static metrics_req *req_of(request_rec *r, int create)
{
    request_rec *first = w4a_initial_request(r);
    metrics_req *q = ap_get_module_config(first->request_config,
                                          &w4a_metrics_module);

    if (!q && create) {
        q = apr_pcalloc(first->pool, sizeof(*q));
        ap_set_module_config(first->request_config, &w4a_metrics_module, q);
    }
    return q;
}

/* Just after mod_w4a_php's dispatch (its fixups run APR_HOOK_LAST). */
static int metrics_fixups(request_rec *r)
{
    metrics_req *q;

    if (!G || !php_dispatched || !php_dispatched(r)) {
        return DECLINED;
    }
    q = req_of(r, 1);
    q->dispatched = apr_time_now();
    q->done = 0;
    return DECLINED;
}

/* The handler about to run is mod_w4a_php's dispatch: a PHP request.
 * (At log time mod_proxy has made it a proxy request, which the optional
 * function no longer recognises: the mark is taken here.) */
static void metrics_insert_filter(request_rec *r)
{
    metrics_req *q;

    if (G && php_dispatched && php_dispatched(r)) {
        q = req_of(r, 1);
        q->php = 1;
        if (!q->dispatched) {
            q->dispatched = apr_time_now();
        }
        ap_add_output_filter(FILTER, NULL, r, r->connection);
    }
}

/* The end of the backend's response: the EOS passing here. */
static apr_status_t metrics_filter(ap_filter_t *f, apr_bucket_brigade *bb)
{
    if (!APR_BRIGADE_EMPTY(bb)
        && APR_BUCKET_IS_EOS(APR_BRIGADE_LAST(bb))) {
        metrics_req *q = req_of(f->r, 0);
        if (q && !q->done) {
            q->done = apr_time_now();
        }
        ap_remove_output_filter(f);
    }
    return ap_pass_brigade(f->next, bb);
}

/* The notes our modules set when they refuse a request (mod_w4a_vhost:
 * owner, file type, record, handler, .htaccess; mod_w4a_php: its checks
 * and limits; mod_w4a_guard: bans, quotas and its per-hosting request
 * limit) or find no PHP backend, read in one pass over r->notes: the
 * first of each, as apr_table_get would give it. */
typedef struct {
    const char *guard, *guard_hosting, *vhost, *php, *backend;
} refusal_notes;

static void notes_of(const request_rec *r, refusal_notes *n)
{
    const apr_array_header_t *a = apr_table_elts(r->notes);
    const apr_table_entry_t *e = (const apr_table_entry_t *)a->elts;
    int i;

    memset(n, 0, sizeof(*n));
    for (i = 0; i < a->nelts; i++) {
        const char *k = e[i].key, **slot;

        /* our modules set these names as written here */
        if (!k || k[0] != 'w' || k[1] != '4' || k[2] != 'a' || k[3] != '-') {
            continue;
        }
        k += 4;
        slot = !strcmp(k, "guard") ? &n->guard
               : !strcmp(k, "guard-hosting") ? &n->guard_hosting
               : !strcmp(k, "vhost-refused") ? &n->vhost
               : !strcmp(k, "php-refused") ? &n->php
               : !strcmp(k, "php-backend") ? &n->backend : NULL;
        if (slot && !*slot) {
            *slot = e[i].val;
        }
    }
}

/* The counter of the check that refused, or -1. */
static int refused_check(const refusal_notes *n)
{
    return w4a_metrics_check_of(n->guard, n->guard_hosting, n->vhost,
                                n->php);
}

static int metrics_log_transaction(request_rec *r)
{
    const w4a_hosting_t *rec;
    w4a_metrics_row_t *row;
    w4a_metrics_drow_t *drow;
    metrics_req *q;
    request_rec *last = r;
    refusal_notes notes;
    int full, dfull, status, klass, check, backend;

    if (!G || r->main) {
        return DECLINED;
    }
    while (last->next) {
        last = last->next;
    }
    rec = hosting_of ? hosting_of(r) : NULL;
    row = w4a_metrics_rows(G->t, &G->cache, rec ? rec->hosting : NULL,
                           rec ? rec->domain : NULL, rec ? domain_cap : 0,
                           &drow, &full, &dfull);
    if (full && w4a_metrics_full_due(G->t,
                                     (apr_uint32_t)apr_time_sec(apr_time_now()),
                                     FULL_LOG_EVERY)) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, W4ALOGNO(00700)
                      "metrics table full (%u rows, W4AMetricsTableSize): "
                      "hosting %s is counted as " W4A_METRICS_OTHER " with "
                      "every other hosting that finds no row (%"
                      APR_UINT64_T_FMT " requests so far; logged at most "
                      "every %d s)", G->t->nrows, rec->hosting,
                      G->t->full_hits, FULL_LOG_EVERY);
    }
    if (dfull && w4a_metrics_domain_full_due(
                    G->t, (apr_uint32_t)apr_time_sec(apr_time_now()),
                    FULL_LOG_EVERY)) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, W4ALOGNO(00706)
                      "metrics domain table full (%u rows, "
                      "W4AMetricsDomainTableSize): domain %s of hosting %s "
                      "is counted as domain " W4A_METRICS_OTHER " of "
                      "hosting " W4A_METRICS_OTHER " (%" APR_UINT64_T_FMT
                      " requests so far; logged at most every %d s)",
                      G->t->ndrows, rec->domain, rec->hosting,
                      G->t->dfull_hits, FULL_LOG_EVERY);
    }
    status = last->status;
    klass = status / 100;
    w4a_metrics_add(row, W4A_MC_REQUESTS, 1);
    if (last->bytes_sent > 0) {
        w4a_metrics_add(row, W4A_MC_BYTES, (apr_uint64_t)last->bytes_sent);
    }
    if (klass >= 1 && klass <= 5) {
        w4a_metrics_add(row, W4A_MC_1XX + klass - 1, 1);
    }
    if (drow) {
        w4a_metrics_dadd(drow, W4A_MD_REQUESTS, 1);
        if (last->bytes_sent > 0) {
            w4a_metrics_dadd(drow, W4A_MD_BYTES,
                             (apr_uint64_t)last->bytes_sent);
        }
        if (klass >= 1 && klass <= 5) {
            w4a_metrics_dadd(drow, W4A_MD_1XX + klass - 1, 1);
        }
    }
    if (r->method_number == M_POST) {
        w4a_metrics_add(row, W4A_MC_POSTS, 1);
    }
    notes_of(r, &notes);
    check = refused_check(&notes);
    backend = notes.backend != NULL;
    if (last != r && (check < 0 || !backend)) {
        notes_of(last, &notes);
        if (check < 0) {
            check = refused_check(&notes);
        }
        backend = backend || notes.backend;
    }
    if (check >= 0) {
        w4a_metrics_add(row, W4A_MC_REFUSED, 1);
        w4a_metrics_add(row, check, 1);
    }
    /* mod_w4a_php found no socket for the hosting's pool: 503 before any
     * dispatch, a backend error all the same. */
    if (backend) {
        w4a_metrics_add(row, W4A_MC_BACKEND_ERR, 1);
    }
    /* r is the initial request here (its redirects are r->next) */
    q = ap_get_module_config(r->request_config, &w4a_metrics_module);
    if (q && q->php) {
        apr_time_t now = apr_time_now();
        w4a_metrics_add(row, W4A_MC_PHP, 1);
        if (drow) {
            w4a_metrics_dadd(drow, W4A_MD_PHP, 1);
        }
        if (q->dispatched) {
            apr_time_t end = q->done ? q->done : now;
            if (end > q->dispatched) {
                w4a_metrics_add(row, W4A_MC_PHP_US,
                                (apr_uint64_t)(end - q->dispatched));
                if (drow) {
                    w4a_metrics_dadd(drow, W4A_MD_PHP_US,
                                     (apr_uint64_t)(end - q->dispatched));
                }
            }
        }
        if (status == HTTP_SERVICE_UNAVAILABLE
            || status == HTTP_GATEWAY_TIME_OUT) {
            w4a_metrics_add(row, W4A_MC_BACKEND_ERR, 1);
        }
        /* r->finfo: the walk's stat of the script, no new system call */
        if (recent_min > 0 && last->finfo.filetype == APR_REG
            && (last->finfo.valid & APR_FINFO_MTIME)
            && now - last->finfo.mtime
               < apr_time_from_sec((apr_time_t)recent_min * 60)) {
            w4a_metrics_add(row, W4A_MC_RECENT, 1);
        }
    }
    return DECLINED;
}

/* ------------------------------------------------------------------ */
/* Prometheus exposition (text format 0.0.4, modules/common/w4a_prom). */

typedef struct {
    int         counter;     /* W4A_MC_* */
    const char *name;
    const char *help;
} family;

static const family families[] = {
    { W4A_MC_REQUESTS, "w4a_hosting_requests_total",
      "Requests of the hosting, counted when logged." },
    { W4A_MC_BYTES, "w4a_hosting_sent_bytes_total",
      "Response body bytes sent for the hosting." },
    { W4A_MC_POSTS, "w4a_hosting_post_requests_total",
      "POST requests of the hosting." },
    { W4A_MC_PHP, "w4a_hosting_php_requests_total",
      "Requests dispatched to the hosting's PHP-FPM pool." },
    { W4A_MC_PHP_US, "w4a_hosting_php_seconds_total",
      "Time of the hosting's PHP requests, from dispatch to the end of the "
      "backend's response, seen from httpd." },
    { W4A_MC_BACKEND_ERR, "w4a_hosting_php_backend_errors_total",
      "PHP requests of the hosting answered 503 or 504 (pool refused, "
      "died or timed out)." },
    { W4A_MC_RECENT, "w4a_hosting_php_recent_script_requests_total",
      "PHP requests of a script modified within W4AMetricsRecentScript "
      "minutes." },
};

static const family domain_families[] = {
    { W4A_MD_REQUESTS, "w4a_domain_requests_total",
      "Requests of the domain (the record's canonical domain), counted "
      "when logged; a hosting's domains beyond W4AMetricsDomains are "
      "domain \"(other)\"." },
    { W4A_MD_BYTES, "w4a_domain_sent_bytes_total",
      "Response body bytes sent for the domain." },
    { W4A_MD_PHP, "w4a_domain_php_requests_total",
      "Requests of the domain dispatched to its hosting's PHP-FPM pool." },
    { W4A_MD_PHP_US, "w4a_domain_php_seconds_total",
      "Time of the domain's PHP requests, from dispatch to the end of the "
      "backend's response, seen from httpd." },
};

/* Samples one module's collector may write: every module's figures are
 * a few dozen series; this keeps a slip from making the page unbounded. */
#define COLLECTOR_SAMPLES 2048
#define DROPPED_LOG_EVERY apr_time_from_sec(60)

static apr_status_t page_write(void *baton, const char *data, apr_size_t len)
{
    return ap_rwrite(data, (int)len, baton) < 0 ? APR_EGENERAL : APR_SUCCESS;
}

static void hosting_families(w4a_prom_t *out, apr_array_header_t *a)
{
    apr_size_t i;
    int j, k;
    static const char *const codes[] = { "1xx", "2xx", "3xx", "4xx", "5xx" };

    for (i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
        const family *f = &families[i];
        w4a_prom_family(out, f->name, W4A_PROM_COUNTER, f->help);
        for (j = 0; j < a->nelts; j++) {
            const w4a_metrics_snap_t *s = &APR_ARRAY_IDX(a, j,
                                                         w4a_metrics_snap_t);
            if (f->counter == W4A_MC_PHP_US) {
                w4a_prom_scaled(out, s->c[f->counter], 1000000,
                                "hosting", s->name, NULL);
            }
            else {
                w4a_prom_u64(out, s->c[f->counter], "hosting", s->name, NULL);
            }
        }
    }
    w4a_prom_family(out, "w4a_hosting_responses_total", W4A_PROM_COUNTER,
                    "Responses of the hosting by status class.");
    for (j = 0; j < a->nelts; j++) {
        const w4a_metrics_snap_t *s = &APR_ARRAY_IDX(a, j, w4a_metrics_snap_t);
        for (k = 0; k < 5; k++) {
            w4a_prom_u64(out, s->c[W4A_MC_1XX + k], "hosting", s->name,
                         "code", codes[k], NULL);
        }
    }
    /* Only the checks that refused something: 17 series per hosting
     * would be most of the page, and almost all 0. */
    w4a_prom_family(out, "w4a_hosting_refused_total", W4A_PROM_COUNTER,
                    "Requests of the hosting refused by a check of "
                    "mod_w4a_guard, mod_w4a_vhost or mod_w4a_php, by check "
                    "(series of checks that refused nothing are left out).");
    for (j = 0; j < a->nelts; j++) {
        const w4a_metrics_snap_t *s = &APR_ARRAY_IDX(a, j, w4a_metrics_snap_t);
        for (k = 0; k < W4A_METRICS_CHECKS; k++) {
            if (s->c[W4A_MC_REF_FIRST + k]) {
                w4a_prom_u64(out, s->c[W4A_MC_REF_FIRST + k],
                             "hosting", s->name,
                             "check", w4a_metrics_check_names[k], NULL);
            }
        }
    }
    w4a_prom_one(out, "w4a_metrics_table_rows", W4A_PROM_GAUGE,
                 "Rows of the per-hosting table (W4AMetricsTableSize).",
                 G->t->nrows);
    w4a_prom_one(out, "w4a_metrics_table_used_rows", W4A_PROM_GAUGE,
                 "Rows held by a hosting.",
                 __atomic_load_n(&G->t->used, __ATOMIC_RELAXED));
    w4a_prom_one(out, "w4a_metrics_table_full_total", W4A_PROM_COUNTER,
                 "Requests whose hosting found no free row (counted as "
                 "hosting \"(other)\").",
                 __atomic_load_n(&G->t->full_hits, __ATOMIC_RELAXED));
}

static void domain_families_write(w4a_prom_t *out, apr_array_header_t *a)
{
    apr_size_t i;
    int j, k;
    static const char *const codes[] = { "1xx", "2xx", "3xx", "4xx", "5xx" };

    for (i = 0; i < sizeof(domain_families) / sizeof(domain_families[0]);
         i++) {
        const family *f = &domain_families[i];
        w4a_prom_family(out, f->name, W4A_PROM_COUNTER, f->help);
        for (j = 0; j < a->nelts; j++) {
            const w4a_metrics_dsnap_t *s = &APR_ARRAY_IDX(a, j,
                                                          w4a_metrics_dsnap_t);
            if (f->counter == W4A_MD_PHP_US) {
                w4a_prom_scaled(out, s->c[f->counter], 1000000, "hosting",
                                s->hosting, "domain", s->domain, NULL);
            }
            else {
                w4a_prom_u64(out, s->c[f->counter], "hosting", s->hosting,
                             "domain", s->domain, NULL);
            }
        }
    }
    w4a_prom_family(out, "w4a_domain_responses_total", W4A_PROM_COUNTER,
                    "Responses of the domain by status class.");
    for (j = 0; j < a->nelts; j++) {
        const w4a_metrics_dsnap_t *s = &APR_ARRAY_IDX(a, j,
                                                      w4a_metrics_dsnap_t);
        for (k = 0; k < 5; k++) {
            w4a_prom_u64(out, s->c[W4A_MD_1XX + k], "hosting", s->hosting,
                         "domain", s->domain, "code", codes[k], NULL);
        }
    }
    w4a_prom_one(out, "w4a_metrics_domain_table_rows", W4A_PROM_GAUGE,
                 "Rows of the per-domain table (W4AMetricsDomainTableSize).",
                 G->t->ndrows);
    w4a_prom_one(out, "w4a_metrics_domain_table_used_rows", W4A_PROM_GAUGE,
                 "Domain rows held by a (hosting, domain).",
                 __atomic_load_n(&G->t->dused, __ATOMIC_RELAXED));
    w4a_prom_one(out, "w4a_metrics_domain_table_full_total", W4A_PROM_COUNTER,
                 "Requests whose domain found no free domain row (counted "
                 "as domain \"(other)\" of hosting \"(other)\").",
                 __atomic_load_n(&G->t->dfull_hits, __ATOMIC_RELAXED));
    w4a_prom_one(out, "w4a_metrics_domains_per_hosting", W4A_PROM_GAUGE,
                 "Domains a hosting has counted on their own at most "
                 "(W4AMetricsDomains).", domain_cap);
}

/* Every module's w4a_metrics_collect, in hook order, each with its own
 * budget of samples. */
static void run_collectors(request_rec *r, w4a_prom_t *out)
{
    apr_array_header_t *hooks = apr_optional_hook_get("metrics_collect");
    w4a_LINK_metrics_collect_t *h;
    int i;

    if (!hooks) {
        return;
    }
    h = (w4a_LINK_metrics_collect_t *)hooks->elts;
    for (i = 0; i < hooks->nelts; i++) {
        w4a_prom_budget(out, COLLECTOR_SAMPLES);
        h[i].pFunc(r, out);
    }
    w4a_prom_budget(out, 0);
}

static int metrics_handler(request_rec *r)
{
    static apr_time_t dropped_logged;   /* this process's last W4A00705 */
    w4a_prom_t *out;
    apr_uint32_t dropped;
    int rv;

    if (!w4a_status_begin(r, HANDLER, &rv)) {
        if (rv == OK) {
            ap_set_content_type(r, "text/plain; version=0.0.4; charset=utf-8");
        }
        return rv;
    }
    ap_set_content_type(r, "text/plain; version=0.0.4; charset=utf-8");
    out = w4a_prom_make(page_write, r, r->pool);
    if (!G) {
        ap_rputs("# W4AMetrics is off: no per-hosting figures\n", r);
    }
    else {
        hosting_families(out, w4a_metrics_snapshot(G->t, r->pool));
        if (G->t->ndrows && domain_cap) {
            domain_families_write(out,
                                  w4a_metrics_domain_snapshot(G->t, r->pool));
        }
    }
    run_collectors(r, out);
    dropped = w4a_prom_dropped(out);
    w4a_prom_one(out, "w4a_metrics_page_dropped_samples", W4A_PROM_GAUGE,
                 "Samples of this page left out because the writer refused "
                 "them (a bad name or label, a family twice, over a module's "
                 "budget); see the error log, W4A00705.", dropped);
    w4a_prom_flush(out);
    if (dropped) {
        apr_time_t now = apr_time_now();
        if (now - dropped_logged >= DROPPED_LOG_EVERY) {
            dropped_logged = now;
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, W4ALOGNO(00705)
                          "metrics page: %u samples left out, the first "
                          "because: %s (logged at most every 60 s per "
                          "process)", dropped, w4a_prom_error(out));
        }
    }
    return OK;
}

/* ------------------------------------------------------------------ */
/* Start-up.                                                          */

static int metrics_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                               apr_pool_t *ptemp, server_rec *s)
{
    metrics_conf *c = ap_get_module_config(s->module_config,
                                           &w4a_metrics_module);
    apr_pool_t *pglobal = s->process->pool;
    metrics_global *g = NULL;
    const char *file, *err = NULL;
    apr_uint32_t rows, drows;
    apr_status_t rv;

    /* Here rather than in optional_fn_retrieve, which httpd runs only
     * after post_config. */
    hosting_of = APR_RETRIEVE_OPTIONAL_FN(w4a_hosting);
    php_dispatched = APR_RETRIEVE_OPTIONAL_FN(w4a_php_dispatched);
    G = NULL;
    recent_min = c->recent_min > 0 ? c->recent_min : 0;
    domain_cap = (apr_uint32_t)(c->domains >= 0 ? c->domains : DEF_DOMAINS);
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG
        || c->engine != 1) {
        return OK;
    }
    if (!hosting_of) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, W4ALOGNO(00701)
                     "W4AMetrics on without mod_w4a_vhost: every request is "
                     "counted as " W4A_METRICS_NONE);
    }
    file = c->file ? c->file : ap_runtime_dir_relative(pconf, DEF_FILE);
    rows = (apr_uint32_t)(c->rows > 0 ? c->rows : DEF_ROWS);
    /* no domain rows at all when domains are off */
    drows = domain_cap ? (apr_uint32_t)(c->drows > 0 ? c->drows : DEF_DROWS)
                       : 0;
    apr_pool_userdata_get((void **)&g, USERDATA_KEY, pglobal);
    if (g) {
        if (strcmp(g->file, file) || g->rows != rows || g->drows != drows) {
            ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, W4ALOGNO(00702)
                         "W4AMetricsFile/W4AMetricsTableSize/"
                         "W4AMetricsDomainTableSize changed: the table stays "
                         "%s (%u rows, %u domain rows) until a full restart",
                         g->file, g->rows, g->drows);
        }
        G = g;
        return OK;
    }
    g = apr_pcalloc(pglobal, sizeof(*g));
    g->file = apr_pstrdup(pglobal, file);
    g->rows = rows;
    g->drows = drows;
    /* 0600, the parent's (root's): neither a hosting's PHP nor httpd's
     * user can open it; the children use the mapping they inherit. */
    rv = w4a_metrics_file_create(&g->t, g->file, rows, drows, 0600,
                                 (apr_uint32_t)getpid(), &err, pglobal);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s, W4ALOGNO(00703)
                     "W4AMetricsFile: %s", err);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    apr_pool_userdata_set(g, USERDATA_KEY, apr_pool_cleanup_null, pglobal);
    G = g;
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, W4ALOGNO(00704)
                 "per-hosting metrics: %u rows, %u domain rows (%u domains "
                 "per hosting), %" APR_SIZE_T_FMT " bytes in %s", rows, drows,
                 domain_cap, w4a_metrics_size(rows, drows), g->file);
    return OK;
}

static void register_hooks(apr_pool_t *p)
{
    /* After mod_w4a_php's dispatch (fixups APR_HOOK_LAST) and its
     * PHP_VALUE fixup (APR_HOOK_REALLY_LAST + 10): the clock starts when
     * nothing of ours is left before the handler. */
    static const char *const after_php[] = { "mod_w4a_php.c", NULL };

    ap_hook_post_config(metrics_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_fixups(metrics_fixups, after_php, NULL, APR_HOOK_REALLY_LAST + 20);
    ap_hook_insert_filter(metrics_insert_filter, NULL, NULL, APR_HOOK_MIDDLE);
    ap_register_output_filter(FILTER, metrics_filter, NULL,
                              AP_FTYPE_RESOURCE);
    ap_hook_handler(metrics_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_log_transaction(metrics_log_transaction, NULL, NULL,
                            APR_HOOK_MIDDLE);
}

/* Every directive is global (GLOBAL_ONLY): a virtual host's configuration
 * holds nothing, so there is nothing to merge. */
module AP_MODULE_DECLARE_DATA w4a_metrics_module = {
    STANDARD20_MODULE_STUFF,
    NULL,                   /* per-directory config creator */
    NULL,                   /* dir config merger */
    create_srv_conf,        /* server config creator */
    NULL,                   /* server config merger: global directives */
    metrics_cmds,           /* command table */
    register_hooks,         /* set up other request processing hooks */
    AP_MODULE_FLAG_NONE     /* flags */
};
