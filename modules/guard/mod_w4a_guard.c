/**
 * @file mod_w4a_guard.c
 * @brief mod_w4a_guard: per-client rate limits and micro-bans, node-wide
 *        in shared memory, shared by the fleet through memcached.
 *
 * - Every request of a client (r->useragent_addr: mod_remoteip's address
 *   when it is configured; IPv4 /32, IPv6 masked to W4AGuardIPv6Prefix)
 *   costs tokens of its bucket (W4AGuardRate): 1 at post_read_request,
 *   plus W4AGuardWeight post at once, php and 404 at log_transaction.
 * - POSTs to login paths (W4AGuardLoginPath) also cost a token of the
 *   client's login quota for that hosting (W4AGuardLoginQuota), checked in
 *   fixups, before any handler (so before PHP).  A client over it is
 *   banned from that hosting only (W4A00670): a hosting whose pages make
 *   its visitors POST to a login path bans them from itself, never from
 *   another hosting.
 * - A client over a budget is banned (W4AGuardBanTime, growing on repeat)
 *   and answered W4AGuardBanStatus with Retry-After at post_read_request:
 *   before mod_w4a_vhost looks its host up, before any PHP.  Logged once
 *   per ban (W4A00600), published to the fleet's memcached
 *   (W4AGuardMemcached, sealed with W4AGuardMemcachedKey) and applied by
 *   every node at its next poll (W4AGuardFleetPoll).
 * - Whitelisted clients (W4AGuardWhitelist, W4AGuardWhitelistFile) are
 *   counted, never banned nor refused.
 * - Status: handler w4a-guard-status (JSON; ?client=ADDRESS).
 */
#include <sys/stat.h>

#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>
#include <ap_mpm.h>

#include <apr_atomic.h>
#include <apr_optional.h>
#include <apr_shm.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>

#include "guard_private.h"
#include "w4a_httpd.h"
#include "w4a_prom.h"
#include "w4a_mac.h"
#include "w4a_mc.h"
#include "w4a_util.h"
#include "mod_w4a_php.h"
#include "guard_table.h"
#include "guard_fleet.h"
#include "guard_hosting.h"

module AP_MODULE_DECLARE_DATA w4a_guard_module;

#define STATUS_HANDLER "w4a-guard-status"

/* Defaults. */
#define DEF_RATE        20
#define DEF_BURST       40
#define DEF_W_POST      2
#define DEF_W_PHP       2
#define DEF_W_404       2
#define DEF_LOGIN_N     10
#define DEF_LOGIN_S     60
#define DEF_BAN_BASE    10
#define DEF_BAN_MAX     300
#define DEF_BAN_FORGET  600
#define DEF_STATUS      HTTP_TOO_MANY_REQUESTS
#define DEF_V6BITS      64
#define DEF_WL_CHECK    5
#define DEF_SLOTS       65536
#define DEF_POLL_MS     500
#define DEF_MC_PREFIX   "w4a-guard:"
#define DEF_MC_TIMEOUT  50
#define DEF_H_RETRY     10
#define DEF_H_SHARE     50

/* Login paths: the end of the decoded URL path, and optionally one
 * argument of the query ("PATH?NAME=VALUE": the argument NAME, decoded,
 * is VALUE or starts with VALUE/).  Drupal without clean URLs logs in at
 * /?q=user/login or /index.php?q=user (both end in "/" or "/index.php");
 * Joomla's site login posts task=user.login to index.php. */
static const char *const default_login_paths[] = {
    "/wp-login.php", "/xmlrpc.php", "/administrator/index.php",
    "/user/login", "/?q=user", "/index.php?q=user",
    "/index.php?task=user.login", NULL
};

typedef struct login_path {
    const char *path;           /* suffix of the decoded URL path */
    const char *arg;            /* NULL, or the query argument's name */
    const char *value;          /* its decoded value (or VALUE/...) */
} login_path;

/* A whitelist read from the file: reference-counted, swapped on reload. */
typedef struct guard_netlist {
    apr_pool_t         *pool;
    apr_array_header_t *nets;      /* apr_ipsubnet_t * */
    int                 refs;
} guard_netlist;

/* The main server's configuration (every directive is global). */
typedef struct guard_conf {
    int                 engine;          /* -1 unset */
    apr_int64_t         rate, burst;     /* -1 unset */
    apr_int64_t         w_post, w_php, w_404;
    apr_int64_t         login_n, login_s;
    apr_array_header_t *login_paths;     /* const char *, added */
    apr_int64_t         ban_base, ban_max, ban_forget;
    int                 status;
    int                 v6bits;
    apr_array_header_t *wl_nets;         /* apr_ipsubnet_t *, inline */
    const char         *wl_file;
    apr_int64_t         wl_check;
    apr_int64_t         slots;
    const char         *mc_servers;
    const char         *mc_key;          /* path, "" for none */
    const char         *mc_prefix;
    apr_int64_t         poll_ms;
    int                 hlimit;          /* -1 unset (off), GUARD_HLIMIT_* */
    apr_int64_t         hretry;          /* -1 unset */
    apr_int64_t         hshare;          /* -1 unset; percent, 0 off */
} guard_conf;

#define DEF(v, d) ((v) >= 0 ? (v) : (d))

/* The node's state, one per process (the table is shared by all). */
typedef struct guard_global {
    server_rec          *server;
    int                  on;
    guard_table_t       *table;
    guard_bucket_t       bucket, login;
    guard_banpol_t       pol;
    apr_int64_t          w_post, w_php, w_404;
    apr_array_header_t  *login_paths;
    int                  status, v6bits;
    apr_array_header_t  *wl_nets;
    const char          *wl_file;
    apr_int64_t          wl_check_us;
    /* per process */
    apr_thread_mutex_t  *wl_lock;
    guard_netlist       *wl_list;
    volatile apr_uint64_t wl_next;       /* apr_time_t of the next stat */
    apr_time_t           wl_mtime;
    apr_off_t            wl_size;
    apr_ino_t            wl_ino;
    char                 wl_error[256];
    const char          *mc_servers;
    const char          *mc_prefix;
    w4a_mac_key_t       *mac_key;
    w4a_mc_t            *mc;
    apr_int64_t          poll_ms;
    volatile apr_uint32_t mc_warned;     /* seconds of the last warning */
} guard_global;

static guard_global *G;
static APR_OPTIONAL_FN_TYPE(w4a_hosting) *hosting_of;
static APR_OPTIONAL_FN_TYPE(w4a_php_dispatched) *php_dispatched;

/* What post_read_request leaves for the later hooks. */
typedef struct guard_req {
    guard_key_t key;
    apr_sockaddr_t *addr;
    int exempt;                 /* -1 unknown */
    int php;                    /* mod_w4a_php sends it to the pool */
    int refused;                /* answered the ban status */
    apr_int64_t scoped_until_ms;    /* the client's scoped bans end */
} guard_req;

/* ------------------------------------------------------------------ */
/* Configuration.                                                     */

static void *create_srv_conf(apr_pool_t *p, server_rec *s)
{
    guard_conf *c = apr_pcalloc(p, sizeof(*c));
    c->engine = -1;
    c->rate = c->burst = -1;
    c->w_post = c->w_php = c->w_404 = -1;
    c->login_n = c->login_s = -1;
    c->login_paths = apr_array_make(p, 4, sizeof(const char *));
    c->ban_base = c->ban_max = c->ban_forget = -1;
    c->status = -1;
    c->v6bits = -1;
    c->wl_nets = apr_array_make(p, 4, sizeof(apr_ipsubnet_t *));
    c->wl_file = NULL;
    c->wl_check = -1;
    c->slots = -1;
    c->mc_servers = NULL;
    c->mc_key = NULL;
    c->mc_prefix = NULL;
    c->poll_ms = -1;
    c->hlimit = -1;
    c->hshare = -1;
    c->hretry = -1;
    return c;
}

static guard_conf *conf_of(cmd_parms *cmd)
{
    return ap_get_module_config(cmd->server->module_config,
                                &w4a_guard_module);
}

#define GLOBAL_CHECK(cmd) do { \
        const char *e_ = ap_check_cmd_context(cmd, GLOBAL_ONLY); \
        if (e_) return e_; \
    } while (0)

static const char *num_arg(cmd_parms *cmd, const char *arg, apr_int64_t min,
                           apr_int64_t max, apr_int64_t *out)
{
    if (!w4a_parse_number(arg, min, max, out)) {
        return apr_psprintf(cmd->pool, "%s: %s: expected a whole number "
                            "from %" APR_INT64_T_FMT " to %" APR_INT64_T_FMT,
                            cmd->cmd->name, arg, min, max);
    }
    return NULL;
}

static const char *set_engine(cmd_parms *cmd, void *d, int on)
{
    GLOBAL_CHECK(cmd);
    conf_of(cmd)->engine = on;
    return NULL;
}

static const char *set_rate(cmd_parms *cmd, void *d, const char *rate,
                            const char *burst)
{
    guard_conf *c = conf_of(cmd);
    const char *e;
    GLOBAL_CHECK(cmd);
    if ((e = num_arg(cmd, rate, 1, 1000000, &c->rate)) != NULL) {
        return e;
    }
    if (!burst) {
        c->burst = c->rate * 2;
        return NULL;
    }
    return num_arg(cmd, burst, 1, 10000000, &c->burst);
}

static const char *set_weight(cmd_parms *cmd, void *d, const char *what,
                              const char *n)
{
    guard_conf *c = conf_of(cmd);
    apr_int64_t *f = !strcasecmp(what, "post") ? &c->w_post
                     : !strcasecmp(what, "php") ? &c->w_php
                     : !strcmp(what, "404") ? &c->w_404 : NULL;
    GLOBAL_CHECK(cmd);
    if (!f) {
        return apr_psprintf(cmd->pool, "W4AGuardWeight: %s: expected post, "
                            "php or 404", what);
    }
    return num_arg(cmd, n, 0, 1000, f);
}

static const char *set_login_quota(cmd_parms *cmd, void *d, const char *n,
                                   const char *secs)
{
    guard_conf *c = conf_of(cmd);
    const char *e;
    GLOBAL_CHECK(cmd);
    if ((e = num_arg(cmd, n, 1, 1000000, &c->login_n)) != NULL) {
        return e;
    }
    return num_arg(cmd, secs, 1, 86400, &c->login_s);
}

/* "PATH" or "PATH?NAME=VALUE" into @a lp; @return NULL or what is wrong. */
static const char *login_path_parse(apr_pool_t *p, const char *text,
                                    login_path *lp)
{
    char *path = apr_pstrdup(p, text), *q = strchr(path, '?'), *eq;

    lp->arg = lp->value = NULL;
    if (q) {
        *q++ = '\0';
        eq = strchr(q, '=');
        if (!eq || eq == q || !eq[1] || strpbrk(q, "&=%+;#") != eq
            || strpbrk(eq + 1, "&=%+;#")) {
            return "expected PATH?NAME=VALUE: one argument, a name and a "
                   "value, neither encoded";
        }
        *eq = '\0';
        lp->arg = q;
        lp->value = eq + 1;
    }
    if (path[0] != '/' || strchr(path, '%')) {
        return "expected a decoded path starting with /";
    }
    lp->path = path;
    return NULL;
}

static const char *add_login_path(cmd_parms *cmd, void *d, const char *arg)
{
    login_path lp;
    const char *why;

    GLOBAL_CHECK(cmd);
    if ((why = login_path_parse(cmd->pool, arg, &lp)) != NULL) {
        return apr_psprintf(cmd->pool, "W4AGuardLoginPath: %s: %s", arg, why);
    }
    APR_ARRAY_PUSH(conf_of(cmd)->login_paths, const char *) = arg;
    return NULL;
}

static const char *set_ban_time(cmd_parms *cmd, void *d, const char *base,
                                const char *max, const char *forget)
{
    guard_conf *c = conf_of(cmd);
    const char *e;
    GLOBAL_CHECK(cmd);
    if ((e = num_arg(cmd, base, 1, 86400, &c->ban_base)) != NULL) {
        return e;
    }
    if (max && (e = num_arg(cmd, max, c->ban_base, 7 * 86400, &c->ban_max))) {
        return e;
    }
    if (forget && (e = num_arg(cmd, forget, 1, 30 * 86400, &c->ban_forget))) {
        return e;
    }
    return NULL;
}

static const char *set_status(cmd_parms *cmd, void *d, const char *arg)
{
    apr_int64_t v;
    GLOBAL_CHECK(cmd);
    if (!w4a_parse_number(arg, 400, 599, &v) || v == 500) {
        return apr_psprintf(cmd->pool, "W4AGuardBanStatus: %s: expected a "
                            "4xx or 5xx status other than 500 (429, 408, "
                            "403, 503)", arg);
    }
    conf_of(cmd)->status = (int)v;
    return NULL;
}

static const char *set_v6bits(cmd_parms *cmd, void *d, const char *arg)
{
    apr_int64_t v;
    const char *e;
    GLOBAL_CHECK(cmd);
    if ((e = num_arg(cmd, arg, 16, 128, &v)) != NULL) {
        return e;
    }
    conf_of(cmd)->v6bits = (int)v;
    return NULL;
}

static const char *parse_net(apr_pool_t *p, const char *arg,
                             apr_ipsubnet_t **out)
{
    char *ip = apr_pstrdup(p, arg), *slash = strchr(ip, '/');
    apr_status_t rv;
    if (slash) {
        *slash++ = '\0';
    }
    if (!*ip || (slash && !*slash)) {
        return "not an address or a network";
    }
    rv = apr_ipsubnet_create(out, ip, slash, p);
    if (rv != APR_SUCCESS) {
        return "not an IPv4 or IPv6 address or network";
    }
    return NULL;
}

static const char *add_whitelist(cmd_parms *cmd, void *d, const char *arg)
{
    apr_ipsubnet_t *net;
    const char *why;
    GLOBAL_CHECK(cmd);
    if ((why = parse_net(cmd->pool, arg, &net)) != NULL) {
        return apr_psprintf(cmd->pool, "W4AGuardWhitelist: %s: %s", arg, why);
    }
    APR_ARRAY_PUSH(conf_of(cmd)->wl_nets, apr_ipsubnet_t *) = net;
    return NULL;
}

static const char *set_wl_file(cmd_parms *cmd, void *d, const char *arg)
{
    GLOBAL_CHECK(cmd);
    if (conf_of(cmd)->wl_file) {
        return "W4AGuardWhitelistFile: only one file";
    }
    conf_of(cmd)->wl_file = ap_server_root_relative(cmd->pool, arg);
    if (!conf_of(cmd)->wl_file) {
        return apr_pstrcat(cmd->pool, "W4AGuardWhitelistFile: bad path ", arg,
                           NULL);
    }
    return NULL;
}

static const char *set_wl_check(cmd_parms *cmd, void *d, const char *arg)
{
    GLOBAL_CHECK(cmd);
    return num_arg(cmd, arg, 0, 3600, &conf_of(cmd)->wl_check);
}

static const char *set_slots(cmd_parms *cmd, void *d, const char *arg)
{
    GLOBAL_CHECK(cmd);
    return num_arg(cmd, arg, 64, 16 * 1024 * 1024, &conf_of(cmd)->slots);
}

static const char *set_mc(cmd_parms *cmd, void *d, const char *arg)
{
    const char *why;
    GLOBAL_CHECK(cmd);
    if ((why = w4a_mc_check_servers(arg, cmd->pool)) != NULL) {
        return apr_psprintf(cmd->pool, "W4AGuardMemcached: %s", why);
    }
    conf_of(cmd)->mc_servers = arg;
    return NULL;
}

static const char *set_mc_key(cmd_parms *cmd, void *d, const char *arg)
{
    GLOBAL_CHECK(cmd);
    if (!strcasecmp(arg, "none")) {
        conf_of(cmd)->mc_key = "";
        return NULL;
    }
    conf_of(cmd)->mc_key = ap_server_root_relative(cmd->pool, arg);
    if (!conf_of(cmd)->mc_key) {
        return apr_pstrcat(cmd->pool, "W4AGuardMemcachedKey: bad path ", arg,
                           NULL);
    }
    return NULL;
}

static const char *set_mc_prefix(cmd_parms *cmd, void *d, const char *arg)
{
    const char *q;
    GLOBAL_CHECK(cmd);
    for (q = arg; *q; q++) {
        if (*q <= ' ' || *q == 0x7f) {
            return "W4AGuardMemcachedPrefix: no blanks or control bytes";
        }
    }
    if (q - arg > 64) {
        return "W4AGuardMemcachedPrefix: 64 bytes at most";
    }
    conf_of(cmd)->mc_prefix = arg;
    return NULL;
}

static const char *set_poll(cmd_parms *cmd, void *d, const char *arg)
{
    GLOBAL_CHECK(cmd);
    return num_arg(cmd, arg, 50, 60000, &conf_of(cmd)->poll_ms);
}

static const char *set_hosting_limit(cmd_parms *cmd, void *d,
                                     const char *arg, const char *retry)
{
    guard_conf *c = conf_of(cmd);
    apr_int64_t v;
    GLOBAL_CHECK(cmd);
    if (!strcasecmp(arg, "off")) {
        c->hlimit = GUARD_HLIMIT_OFF;
    }
    else if (!strcasecmp(arg, "auto")) {
        c->hlimit = GUARD_HLIMIT_AUTO;
    }
    else if (w4a_parse_number(arg, 1, W4A_REQ_LIMIT_MAX, &v)) {
        c->hlimit = (int)v;
    }
    else {
        return apr_psprintf(cmd->pool, "W4AGuardHostingLimit: %s: expected "
                            "off, auto, or a number of requests from 1 to "
                            "%u", arg, W4A_REQ_LIMIT_MAX);
    }
    return retry ? num_arg(cmd, retry, 1, 3600, &c->hretry) : NULL;
}

static const char *set_hosting_share(cmd_parms *cmd, void *d,
                                     const char *arg)
{
    guard_conf *c = conf_of(cmd);
    GLOBAL_CHECK(cmd);
    if (!strcasecmp(arg, "off")) {
        c->hshare = 0;
        return NULL;
    }
    return num_arg(cmd, arg, 1, 100, &c->hshare);
}

static const command_rec guard_cmds[] = {
    AP_INIT_FLAG("W4AGuardEngine", set_engine, NULL, RSRC_CONF,
                 "Rate limits and bans of clients: on or off"),
    AP_INIT_TAKE12("W4AGuardRate", set_rate, NULL, RSRC_CONF,
                   "Units per second and burst of a client's bucket"),
    AP_INIT_TAKE2("W4AGuardWeight", set_weight, NULL, RSRC_CONF,
                  "Extra units of a post, php or 404 request"),
    AP_INIT_TAKE2("W4AGuardLoginQuota", set_login_quota, NULL, RSRC_CONF,
                  "Login POSTs per client and hosting, and the seconds in "
                  "which they are refilled"),
    AP_INIT_ITERATE("W4AGuardLoginPath", add_login_path, NULL, RSRC_CONF,
                    "Login paths (URL path endings) beyond the defaults"),
    AP_INIT_TAKE123("W4AGuardBanTime", set_ban_time, NULL, RSRC_CONF,
                    "Seconds of a first ban, of the longest, and after which "
                    "a client's strikes are forgotten"),
    AP_INIT_TAKE1("W4AGuardBanStatus", set_status, NULL, RSRC_CONF,
                  "Status answered to a banned client (429)"),
    AP_INIT_TAKE1("W4AGuardIPv6Prefix", set_v6bits, NULL, RSRC_CONF,
                  "Prefix length of an IPv6 client (64)"),
    AP_INIT_ITERATE("W4AGuardWhitelist", add_whitelist, NULL, RSRC_CONF,
                    "Networks (CIDR) counted but never banned"),
    AP_INIT_TAKE1("W4AGuardWhitelistFile", set_wl_file, NULL, RSRC_CONF,
                  "File of whitelisted networks, reloaded when it changes"),
    AP_INIT_TAKE1("W4AGuardWhitelistCheck", set_wl_check, NULL, RSRC_CONF,
                  "Seconds between two looks at the whitelist file (5)"),
    AP_INIT_TAKE1("W4AGuardTableSize", set_slots, NULL, RSRC_CONF,
                  "Slots of the node's client table (65536)"),
    AP_INIT_TAKE1("W4AGuardMemcached", set_mc, NULL, RSRC_CONF,
                  "The fleet's memcached servers host:port[,...]"),
    AP_INIT_TAKE1("W4AGuardMemcachedKey", set_mc_key, NULL, RSRC_CONF,
                  "Key file sealing the fleet's ban list, or none"),
    AP_INIT_TAKE1("W4AGuardMemcachedPrefix", set_mc_prefix, NULL, RSRC_CONF,
                  "Prefix of the guard's memcached keys (w4a-guard:)"),
    AP_INIT_TAKE1("W4AGuardFleetPoll", set_poll, NULL, RSRC_CONF,
                  "Milliseconds between two reads of the fleet list (500)"),
    AP_INIT_TAKE12("W4AGuardHostingLimit", set_hosting_limit, NULL, RSRC_CONF,
                   "Requests of every kind in flight per hosting on the "
                   "node: off (default: only records' req_limit), auto, or "
                   "N; and the seconds of Retry-After (10)"),
    AP_INIT_TAKE1("W4AGuardHostingClientShare", set_hosting_share, NULL,
                  RSRC_CONF, "Percent of a hosting's request limit one "
                  "client may hold (50), or off"),
    { NULL }
};

/* ------------------------------------------------------------------ */
/* Whitelist.                                                         */

static int in_nets(const apr_array_header_t *nets, apr_sockaddr_t *sa)
{
    int i;
    for (i = 0; nets && i < nets->nelts; i++) {
        if (apr_ipsubnet_test(APR_ARRAY_IDX(nets, i, apr_ipsubnet_t *), sa)) {
            return 1;
        }
    }
    return 0;
}

static void netlist_release(guard_netlist *l)
{
    int last;
    apr_thread_mutex_lock(G->wl_lock);
    last = --l->refs == 0;
    apr_thread_mutex_unlock(G->wl_lock);
    if (last) {
        apr_pool_destroy(l->pool);
    }
}

/* The whole file or nothing: @return the list, or NULL with *why. */
static guard_netlist *netlist_read(const char *path, const char **why,
                                   apr_pool_t *ptemp)
{
    apr_pool_t *pool;
    guard_netlist *l;
    apr_file_t *f;
    char line[1024];
    int lineno = 0;
    apr_status_t rv;

    rv = apr_file_open(&f, path, APR_FOPEN_READ, 0, ptemp);
    if (rv != APR_SUCCESS) {
        *why = apr_psprintf(ptemp, "cannot open: %pm", &rv);
        return NULL;
    }
    apr_pool_create_unmanaged_ex(&pool, NULL, NULL);
    l = apr_pcalloc(pool, sizeof(*l));
    l->pool = pool;
    l->nets = apr_array_make(pool, 8, sizeof(apr_ipsubnet_t *));
    l->refs = 1;
    while ((rv = apr_file_gets(line, sizeof(line), f)) == APR_SUCCESS) {
        char *last, *tok, *hash = strchr(line, '#');
        lineno++;
        if (hash) {
            *hash = '\0';
        }
        for (tok = apr_strtok(line, " \t\r\n", &last); tok;
             tok = apr_strtok(NULL, " \t\r\n", &last)) {
            apr_ipsubnet_t *net;
            const char *bad = parse_net(pool, tok, &net);
            if (bad) {
                *why = apr_psprintf(ptemp, "line %d: %s: %s", lineno, tok,
                                    bad);
                apr_file_close(f);
                apr_pool_destroy(pool);
                return NULL;
            }
            APR_ARRAY_PUSH(l->nets, apr_ipsubnet_t *) = net;
        }
    }
    apr_file_close(f);
    if (rv != APR_EOF) {
        *why = apr_psprintf(ptemp, "reading: %pm", &rv);
        apr_pool_destroy(pool);
        return NULL;
    }
    return l;
}

/* Look at the file when its time has come (one thread of the process);
 * @a now: the request's time (read with it: no clock call per request). */
static void wl_maybe_reload(apr_pool_t *p, apr_time_t now, int at_start)
{
    apr_uint64_t next = apr_atomic_read64(&G->wl_next);
    apr_finfo_t fi;
    guard_netlist *l, *old;
    const char *why;
    apr_status_t rv;

    if (!G->wl_file) {
        return;
    }
    if (!at_start && ((apr_uint64_t)now < next
                      || apr_atomic_cas64(&G->wl_next,
                                          (apr_uint64_t)(now + G->wl_check_us),
                                          next) != next)) {
        return;
    }
    rv = apr_stat(&fi, G->wl_file, APR_FINFO_MTIME | APR_FINFO_SIZE
                  | APR_FINFO_INODE, p);
    if (rv != APR_SUCCESS) {
        apr_snprintf(G->wl_error, sizeof(G->wl_error), "%s: %pm", G->wl_file,
                     &rv);
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, G->server, W4ALOGNO(00620)
                     "whitelist file %s cannot be read; %s", G->wl_file,
                     G->wl_list ? "the list in use stays"
                                : "only W4AGuardWhitelist networks apply");
        return;
    }
    if (!at_start && fi.mtime == G->wl_mtime && fi.size == G->wl_size
        && fi.inode == G->wl_ino) {
        return;
    }
    G->wl_mtime = fi.mtime;
    G->wl_size = fi.size;
    G->wl_ino = fi.inode;
    if (!(l = netlist_read(G->wl_file, &why, p))) {
        apr_snprintf(G->wl_error, sizeof(G->wl_error), "%s", why);
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, G->server, W4ALOGNO(00621)
                     "whitelist file %s refused: %s; %s", G->wl_file, why,
                     G->wl_list ? "the list in use stays"
                                : "only W4AGuardWhitelist networks apply");
        return;
    }
    apr_thread_mutex_lock(G->wl_lock);
    old = G->wl_list;
    G->wl_list = l;
    G->wl_error[0] = '\0';
    apr_thread_mutex_unlock(G->wl_lock);
    if (old) {
        netlist_release(old);
    }
    ap_log_error(APLOG_MARK, at_start ? APLOG_DEBUG : APLOG_NOTICE, 0,
                 G->server, W4ALOGNO(00622) "whitelist file %s %s: %d "
                 "networks", G->wl_file, at_start ? "loaded" : "reloaded",
                 l->nets->nelts);
}

static int whitelisted(apr_sockaddr_t *sa)
{
    guard_netlist *l;
    int hit;

    if (!sa) {
        return 0;
    }
    if (in_nets(G->wl_nets, sa)) {
        return 1;
    }
    if (!G->wl_file || !G->wl_lock) {
        return 0;
    }
    apr_thread_mutex_lock(G->wl_lock);
    if ((l = G->wl_list) != NULL) {
        l->refs++;
    }
    apr_thread_mutex_unlock(G->wl_lock);
    if (!l) {
        return 0;
    }
    hit = in_nets(l->nets, sa);
    netlist_release(l);
    return hit;
}

static int exempt_cb(void *baton)
{
    guard_req *q = baton;
    if (q->exempt < 0) {
        q->exempt = whitelisted(q->addr);
    }
    return q->exempt;
}

/* ------------------------------------------------------------------ */
/* Fleet.                                                             */

static void mc_trouble(const char *what, apr_status_t rv, const char *err)
{
    apr_uint32_t now = (apr_uint32_t)apr_time_sec(apr_time_now());
    apr_uint32_t last = apr_atomic_read32(&G->mc_warned);

    guard_count(G->table, GC_FLEET_ERRORS, 1);
    if (now - last < 10 || apr_atomic_cas32(&G->mc_warned, now, last) != last) {
        return;
    }
    ap_log_error(APLOG_MARK, APLOG_WARNING, 0, G->server, W4ALOGNO(00610)
                 "fleet ban list in memcached %s: %s %s; bans stay on this "
                 "node (said at most every 10 s)", G->mc_servers, what,
                 rv == W4A_MAC_EFORGED ? "refused: not sealed by the key"
                 : rv == W4A_MAC_EEXPIRED ? "refused: expired"
                 : err ? err : "failed");
}

static void fleet_publish(guard_key_t *k, const guard_verdict_t *v,
                          const char *hosting, const char *scope,
                          apr_pool_t *p)
{
    guard_fleet_ban_t b;
    const char *err = NULL;
    apr_status_t rv;

    if (!G->mc) {
        return;
    }
    b.addr = guard_key_text(k, p);
    b.since_ms = v->since_ms;
    b.until_ms = v->until_ms;
    b.reason = guard_reason_name(v->reason);
    b.hosting = hosting && *hosting && guard_fleet_name_ok(hosting)
                ? hosting : "-";
    b.scope = scope;
    if (scope && !guard_fleet_name_ok(scope)) {
        /* (a ServerName with a ':' or longer than 63 bytes) */
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, G->server, W4ALOGNO(00674)
                     "client %s: its ban for hosting %s is not published "
                     "(not a name the fleet list takes); it holds on this "
                     "node", b.addr, ap_escape_logitem(p, scope));
        return;
    }
    rv = guard_fleet_publish(G->mc, &b, apr_time_now() / 1000, &err, p);
    if (rv != APR_SUCCESS) {
        mc_trouble("publishing a ban", rv, err);
        return;
    }
    guard_count(G->table, GC_FLEET_PUBLISHED, 1);
}

/* A line of the fleet list for one hosting only. */
static void fleet_apply_scoped(const guard_fleet_ban_t *b,
                               const guard_key_t *k, apr_int64_t now_ms,
                               apr_pool_t *p)
{
    guard_table_t *t = G->table;

    if (b->until_ms == 0) {
        if (guard_scoped_remove(t, k, b->scope, b->since_ms, now_ms)) {
            guard_count(t, GC_FLEET_REMOVED, 1);
            ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, G->server,
                         W4ALOGNO(00672) "client %s: ban for hosting %s "
                         "removed by the fleet list (w4a-ban remove "
                         "--hosting)", guard_key_text(k, p), b->scope);
        }
    }
    else if (guard_scoped_set(t, k, b->scope, b->since_ms, b->until_ms,
                              strcmp(b->reason, "admin") ? GUARD_R_FLEET
                                                         : GUARD_R_ADMIN,
                              &G->bucket, now_ms)) {
        guard_count(t, GC_FLEET_APPLIED, 1);
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, G->server,
                     W4ALOGNO(00671) "client %s banned from hosting %s "
                     "only for %" APR_INT64_T_FMT " s by the fleet list "
                     "(reason %s); its other hostings are served",
                     guard_key_text(k, p), b->scope,
                     (b->until_ms - now_ms + 999) / 1000, b->reason);
    }
}

/* Read the fleet list when the node's poll is due (one thread of the
 * node per W4AGuardFleetPoll) and apply it. */
static void fleet_poll(apr_int64_t now_ms, apr_pool_t *p)
{
    guard_table_t *t = G->table;
    apr_uint64_t next = apr_atomic_read64(&t->fleet_next_ms);
    apr_array_header_t *bans;
    const char *err = NULL;
    apr_status_t rv;
    int i;

    if (!G->mc || (apr_uint64_t)now_ms < next
        || apr_atomic_cas64(&t->fleet_next_ms,
                            (apr_uint64_t)(now_ms + G->poll_ms), next)
           != next) {
        return;
    }
    rv = guard_fleet_read(G->mc, &bans, &err, p);
    if (rv != APR_SUCCESS) {
        mc_trouble("reading", rv, err);
        return;
    }
    for (i = 0; i < bans->nelts; i++) {
        guard_fleet_ban_t *b = &APR_ARRAY_IDX(bans, i, guard_fleet_ban_t);
        guard_key_t k;
        if (guard_key_parse(&k, b->addr, G->v6bits) != APR_SUCCESS) {
            continue;
        }
        if (b->scope) {
            fleet_apply_scoped(b, &k, now_ms, p);
        }
        else if (b->until_ms == 0) {
            if (guard_ban_remove(t, &k, b->since_ms, now_ms)) {
                guard_count(t, GC_FLEET_REMOVED, 1);
                ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, G->server,
                             W4ALOGNO(00602) "client %s: ban removed by the "
                             "fleet list (w4a-ban remove)",
                             guard_key_text(&k, p));
            }
        }
        else if (guard_ban_set(t, &k, b->since_ms, b->until_ms,
                               strcmp(b->reason, "admin") ? GUARD_R_FLEET
                                                          : GUARD_R_ADMIN,
                               strcmp(b->hosting, "-") ? b->hosting : "",
                               now_ms)) {
            guard_count(t, GC_FLEET_APPLIED, 1);
            ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, G->server,
                         W4ALOGNO(00601) "client %s banned for %" 
                         APR_INT64_T_FMT " s by the fleet list (reason %s, "
                         "hosting %s)", guard_key_text(&k, p),
                         (b->until_ms - now_ms + 999) / 1000, b->reason,
                         b->hosting);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Requests.                                                          */

static int refuse(request_rec *r, guard_req *q, const guard_verdict_t *v,
                  apr_int64_t now)
{
    apr_int64_t left = (v->until_ms - now + 999) / 1000;
    apr_table_setn(r->err_headers_out, "Retry-After",
                   apr_psprintf(r->pool, "%" APR_INT64_T_FMT,
                                left > 0 ? left : 1));
    apr_table_setn(r->notes, "w4a-guard", guard_reason_name(v->reason));
    /* A banned client holds no connection (no slot of a child's share,
     * AsyncRequestWorkerFactor), and each try costs it a new connection:
     * a round trip.  A refusal at post_read_request closes it anyway
     * (httpd ends the connection when ap_read_request fails); this one
     * also closes after the login quota's refusal, at the fixups. */
    r->connection->keepalive = AP_CONN_CLOSE;
    q->refused = 1;
    guard_count(G->table, GC_REFUSED, 1);
    return G->status;
}

static void log_ban(request_rec *r, const guard_key_t *k,
                    const guard_verdict_t *v, const char *hosting,
                    const char *why)
{
    ap_log_rerror(APLOG_MARK, APLOG_NOTICE, 0, r, W4ALOGNO(00600)
                  "client %s banned for %" APR_INT64_T_FMT " s (strike %u, "
                  "reason %s, hosting %s, host %s): %s; answered %d",
                  guard_key_text(k, r->pool),
                  (v->until_ms - v->since_ms) / 1000, v->strikes,
                  guard_reason_name(v->reason),
                  hosting && *hosting ? hosting : "-",
                  r->hostname ? ap_escape_logitem(r->pool, r->hostname) : "-",
                  why, G->status);
}

static void new_ban(request_rec *r, guard_req *q, const guard_verdict_t *v,
                    const char *hosting, const char *why)
{
    guard_count(G->table, GC_BANS, 1);
    log_ban(r, &q->key, v, hosting, why);
    fleet_publish(&q->key, v, hosting, NULL, r->pool);
}

/* A ban for the hosting @a hosting only (a login quota's). */
static void new_scoped_ban(request_rec *r, guard_req *q,
                           const guard_verdict_t *v, const char *hosting,
                           const char *why)
{
    guard_count(G->table, GC_BANS, 1);
    ap_log_rerror(APLOG_MARK, APLOG_NOTICE, 0, r, W4ALOGNO(00670)
                  "client %s banned from hosting %s only for %"
                  APR_INT64_T_FMT " s (strike %u, reason %s, host %s): %s; "
                  "answered %d; its other hostings are served",
                  guard_key_text(&q->key, r->pool),
                  ap_escape_logitem(r->pool, hosting),
                  (v->until_ms - v->since_ms) / 1000, v->strikes,
                  guard_reason_name(v->reason),
                  r->hostname ? ap_escape_logitem(r->pool, r->hostname) : "-",
                  why, G->status);
    fleet_publish(&q->key, v, hosting, hosting, r->pool);
}

static const char *rate_why(request_rec *r)
{
    return apr_psprintf(r->pool, "over %" APR_INT64_T_FMT "/s, burst %"
                        APR_INT64_T_FMT, G->bucket.rate / 1000,
                        G->bucket.burst);
}

static int guard_post_read_request(request_rec *r)
{
    guard_req *q;
    guard_verdict_t v;
    apr_sockaddr_t *sa = r->useragent_addr;
    apr_int64_t now, units = 1;

    if (!G || !G->on || r->main || r->prev || !sa) {
        return DECLINED;
    }
    now = r->request_time / 1000;
    q = apr_pcalloc(r->pool, sizeof(*q));
    q->addr = sa;
    q->exempt = -1;
    guard_key_from_bytes(&q->key, sa->family, sa->ipaddr_ptr, G->v6bits, 0);
    ap_set_module_config(r->request_config, &w4a_guard_module, q);

    fleet_poll(now, r->pool);
    wl_maybe_reload(r->pool, r->request_time, 0);
    if (r->method_number == M_POST) {
        units += G->w_post;
    }
    guard_charge(G->table, &q->key, &G->bucket, units, 1, 1, now, exempt_cb,
                 q, &q->key, GUARD_R_RATE, NULL, &G->pol, &v);
    if (v.banned && !v.new_ban) {
        return refuse(r, q, &v, now);          /* banned before: not charged */
    }
    guard_count(G->table, GC_REQUESTS, 1);
    if (v.exempted) {
        guard_count(G->table, GC_WHITELISTED, 1);
    }
    if (v.new_ban) {
        new_ban(r, q, &v, NULL, rate_why(r));
        return refuse(r, q, &v, now);
    }
    q->scoped_until_ms = v.scoped_until_ms;
    return DECLINED;
}

/* The hosting a login quota and its ban are for: mod_w4a_vhost's
 * hosting, else the virtual host httpd chose (its ServerName: never the
 * client's Host header, which would give a client a quota, and a ban,
 * per name it likes). */
static const char *hosting_name(request_rec *r)
{
    const w4a_hosting_t *rec = hosting_of ? hosting_of(r) : NULL;

    if (rec && rec->hosting && *rec->hosting) {
        return rec->hosting;
    }
    return r->server->server_hostname && *r->server->server_hostname
           ? r->server->server_hostname : "-";
}

/* @a uri, without its path info when it names an existing file
 * (/wp-login.php/x runs wp-login.php; /user/login, a path that does not
 * exist, is Drupal's login rewritten to index.php: matched whole). */
/* Whether the query @a args has the argument @a name with the value
 * @a value, or one starting with value/ (q=user/login for q=user). */
static int query_has(const char *args, const char *name, const char *value,
                     apr_pool_t *p)
{
    apr_size_t nlen = strlen(name), vlen = strlen(value);
    const char *a = args;

    while (a && *a) {
        const char *end = a + strcspn(a, "&;");
        if ((apr_size_t)(end - a) > nlen && a[nlen] == '='
            && !strncmp(a, name, nlen)) {
            char *v = apr_pstrmemdup(p, a + nlen + 1, end - a - nlen - 1);
            /* as a form value: + is a space, %2F a slash; one that does
             * not decode is not a login (the application refuses it too) */
            if (ap_unescape_urlencoded(v) == OK && !strncmp(v, value, vlen)
                && (v[vlen] == '\0' || v[vlen] == '/')) {
                return 1;
            }
        }
        a = *end ? end + 1 : NULL;
    }
    return 0;
}

static int is_login_path(const char *uri, const char *path_info,
                         const char *args, apr_pool_t *p)
{
    apr_size_t ulen = strlen(uri);
    int i;

    if (path_info && *path_info) {
        apr_size_t plen = strlen(path_info);
        if (ulen > plen && !strcmp(uri + ulen - plen, path_info)) {
            ulen -= plen;
        }
    }

    for (i = 0; i < G->login_paths->nelts; i++) {
        const login_path *lp = &APR_ARRAY_IDX(G->login_paths, i, login_path);
        apr_size_t plen = strlen(lp->path);
        if (ulen >= plen && !strncmp(uri + ulen - plen, lp->path, plen)
            && (!lp->arg || query_has(args, lp->arg, lp->value, p))) {
            return 1;
        }
    }
    return 0;
}

/* Login POSTs: before any handler, so before PHP. */
static int guard_fixups(request_rec *r)
{
    guard_req *q;
    guard_key_t lk;
    guard_verdict_t v;
    const char *hosting = NULL;
    apr_int64_t now = 0;

    if (!G || !G->on || r->main || r->prev
        || !(q = ap_get_module_config(r->request_config, &w4a_guard_module))
        || q->refused) {
        return DECLINED;
    }
    /* Banned from this hosting (its login quota, here or on another
     * node): every request to it is refused, the others' are served.
     * Looked up only when the client's slot says such a ban may hold
     * (the clock read only then, or for a POST: not per request). */
    if (q->scoped_until_ms && q->scoped_until_ms > (now = apr_time_now()
                                                         / 1000)) {
        hosting = hosting_name(r);
        if (!exempt_cb(q)
            && guard_scoped_check(G->table, &q->key, hosting, now, 1, &v)) {
            return refuse(r, q, &v, now);
        }
    }
    if (r->method_number != M_POST || !r->uri
        || !is_login_path(r->uri, r->finfo.filetype == APR_REG
                                  ? r->path_info : NULL, r->args, r->pool)) {
        return DECLINED;
    }
    if (!hosting) {
        hosting = hosting_name(r);
    }
    if (!now) {
        now = apr_time_now() / 1000;
    }
    lk = q->key;
    lk.hosting = guard_hash_str(hosting);
    guard_count(G->table, GC_LOGIN_POSTS, 1);
    guard_charge(G->table, &lk, &G->login, 1, 1, 0, now, exempt_cb, q, &q->key,
                 GUARD_R_LOGIN, hosting, &G->pol, &v);
    if (v.exempted) {
        guard_count(G->table, GC_WHITELISTED, 1);
    }
    if (v.new_ban) {
        new_scoped_ban(r, q, &v, hosting, apr_psprintf(r->pool, "over its login "
                                                "quota of %" APR_INT64_T_FMT
                                                " POSTs to %s",
                                                G->login.burst,
                                                ap_escape_logitem(r->pool,
                                                                  r->uri)));
    }
    if (v.banned) {
        return refuse(r, q, &v, now);
    }
    return DECLINED;
}

/* The hosting's requests in flight on the node (every kind): before any
 * handler, after the login quota (a banned client is refused first). */
static int guard_hosting_fixups(request_rec *r)
{
    const w4a_hosting_t *rec;
    unsigned char client[16];
    guard_req *q;

    if (!G || !G->on || r->main || r->prev || !hosting_of
        || !(rec = hosting_of(r)) || !rec->hosting
        || !guard_hosting_limited(rec->req_limit)) {
        return DECLINED;                /* no limit: nothing to count */
    }
    /* The client's share: its address as the client guard keys it (IPv6
     * its prefix), every loopback address one client; a whitelisted
     * client has none (asked only when the share would refuse it). */
    q = ap_get_module_config(r->request_config, &w4a_guard_module);
    if (q) {
        w4a_client_share_bytes(q->addr->family, q->addr->ipaddr_ptr,
                               G->v6bits, client);
    }
    return guard_hosting_enter(r, rec->hosting, rec->req_limit,
                               q ? client : NULL, sizeof(client),
                               exempt_cb, q);
}

/* After mod_w4a_php's decision: note a PHP request (for its weight: at
 * log time mod_proxy has made it a proxy request, no longer seen as
 * mod_w4a_php's dispatch); and a request refused by the guard must not
 * reach PHP through an ErrorDocument (a hosting's .htaccess may name a
 * PHP page for 429) or a sub-request: refuse such a dispatch. */
static int guard_fixups_late(request_rec *r)
{
    request_rec *first;
    guard_req *q;

    if (!G || !G->on || !php_dispatched || !php_dispatched(r)) {
        return DECLINED;
    }
    first = w4a_initial_request(r);
    if ((q = ap_get_module_config(first->request_config, &w4a_guard_module))
        != NULL) {
        q->php = 1;
    }
    if (!r->prev && !r->main) {
        return DECLINED;
    }
    if (apr_table_get(first->notes, "w4a-guard")) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, W4ALOGNO(00609)
                      "%s of a refused client's request goes to PHP: "
                      "refused", r->prev ? "internal redirect (ErrorDocument)"
                                         : "sub-request");
        return G->status;
    }
    /* A hosting at its request limit: its ErrorDocument 503 must not be
     * one more PHP request of it (it would pass the limit it was refused
     * for). */
    if (apr_table_get(first->notes, "w4a-guard-hosting")) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, W4ALOGNO(00665)
                      "%s of a request refused at its hosting's request "
                      "limit goes to PHP: refused",
                      r->prev ? "internal redirect (ErrorDocument)"
                              : "sub-request");
        return HTTP_SERVICE_UNAVAILABLE;
    }
    return DECLINED;
}

/* What costs more is known now: PHP, 404. */
static int guard_log_transaction(request_rec *r)
{
    guard_req *q;
    guard_verdict_t v;
    request_rec *last = r;
    apr_int64_t units = 0;
    const w4a_hosting_t *rec;

    if (!G || !G->on || r->main
        || !(q = ap_get_module_config(r->request_config, &w4a_guard_module))
        || q->refused) {
        return DECLINED;
    }
    while (last->next) {
        last = last->next;
    }
    if (last->status == HTTP_NOT_FOUND) {
        units += G->w_404;
    }
    if (q->php) {
        units += G->w_php;
    }
    if (!units) {
        return DECLINED;
    }
    guard_charge(G->table, &q->key, &G->bucket, units, 0, 0,
                 apr_time_now() / 1000, exempt_cb, q, &q->key, GUARD_R_RATE,
                 NULL, &G->pol, &v);
    if (v.exempted) {
        guard_count(G->table, GC_WHITELISTED, 1);
    }
    if (v.new_ban) {
        rec = hosting_of ? hosting_of(r) : NULL;
        new_ban(r, q, &v, rec ? rec->hosting : NULL, rate_why(r));
    }
    return DECLINED;
}

/* ------------------------------------------------------------------ */
/* Status.                                                            */

typedef struct walk_ctx {
    request_rec *r;
    apr_int64_t  now;
    int          n, used;
} walk_ctx;

/* One ban of the list: "scope" says "all" (every hosting) or "hosting"
 * (the one "hosting" names only). */
static void print_ban(walk_ctx *w, const char *client, int reason,
                      const char *hosting, int scoped, apr_uint32_t strikes,
                      apr_int64_t since, apr_int64_t until)
{
    ap_rprintf(w->r, "%s{\"client\":\"%s\",\"reason\":\"%s\",\"hosting\":"
               "\"%s\",\"scope\":\"%s\",\"strikes\":%u,\"since_ms\":%"
               APR_INT64_T_FMT ",\"until_ms\":%" APR_INT64_T_FMT
               ",\"seconds_left\":%" APR_INT64_T_FMT "}", w->n++ ? "," : "",
               client, guard_reason_name(reason),
               ap_escape_logitem(w->r->pool, hosting),
               scoped ? "hosting" : "all", strikes, since, until,
               (until - w->now + 999) / 1000);
}

static void walk_ban(void *baton, const guard_slot_t *s)
{
    walk_ctx *w = baton;
    const char *client;
    int i;

    w->used++;
    if (s->key.hosting || (s->ban_until_ms <= w->now
                           && s->scoped_until_ms <= w->now)) {
        return;
    }
    client = guard_key_text(&s->key, w->r->pool);
    if (s->ban_until_ms > w->now) {
        print_ban(w, client, (int)s->reason, s->hosting, 0, s->strikes,
                  s->ban_since_ms, s->ban_until_ms);
    }
    for (i = 0; i < GUARD_SCOPED_MAX; i++) {
        const guard_scoped_t *e = &s->scoped[i];
        if (e->hosting && e->until_ms > w->now) {
            print_ban(w, client, (int)e->reason, e->name, 1, e->strikes,
                      e->since_ms, e->until_ms);
        }
    }
}

static int status_client(request_rec *r, const char *addr, apr_int64_t now)
{
    guard_key_t k;
    guard_slot_t s;
    apr_int64_t tok;
    int found, i, n = 0;

    if (guard_key_parse(&k, addr, G->v6bits) != APR_SUCCESS) {
        return HTTP_BAD_REQUEST;
    }
    found = guard_lookup(G->table, &k, &s);
    if (!found) {
        ap_rprintf(r, "{\"client\":\"%s\",\"found\":false}\n",
                   guard_key_text(&k, r->pool));
        return OK;
    }
    tok = s.tokens + (now - s.refill_ms) * G->bucket.rate / 1000;
    if (tok > G->bucket.burst * 1000) {
        tok = G->bucket.burst * 1000;
    }
    ap_rprintf(r, "{\"client\":\"%s\",\"found\":true,\"requests\":%"
               APR_UINT64_T_FMT ",\"units\":%" APR_UINT64_T_FMT
               ",\"tokens\":%.3f,\"refused\":%" APR_UINT64_T_FMT
               ",\"bans\":%" APR_UINT64_T_FMT ",\"strikes\":%u,"
               "\"banned\":%s,\"reason\":\"%s\",\"hosting\":\"%s\","
               "\"until_ms\":%" APR_INT64_T_FMT ",\"scoped\":[",
               guard_key_text(&k, r->pool), s.requests, s.cost,
               (double)tok / 1000.0, s.refused, s.bans, s.strikes,
               s.ban_until_ms > now ? "true" : "false",
               guard_reason_name((int)s.reason),
               ap_escape_logitem(r->pool, s.hosting), s.ban_until_ms);
    /* its bans for one hosting only (those that hold) */
    for (i = 0; i < GUARD_SCOPED_MAX; i++) {
        const guard_scoped_t *e = &s.scoped[i];
        if (e->hosting && e->until_ms > now) {
            ap_rprintf(r, "%s{\"hosting\":\"%s\",\"reason\":\"%s\","
                       "\"strikes\":%u,\"since_ms\":%" APR_INT64_T_FMT
                       ",\"until_ms\":%" APR_INT64_T_FMT "}", n++ ? "," : "",
                       ap_escape_logitem(r->pool, e->name),
                       guard_reason_name((int)e->reason), e->strikes,
                       e->since_ms, e->until_ms);
        }
    }
    ap_rputs("]}\n", r);
    return OK;
}

/* Prometheus: the node-wide counters of the status page (the shared
 * table; the per-client bans, unbounded, stay on the JSON page), for
 * mod_w4a_metrics' page (its optional hook w4a_metrics_collect). */
static const char *const prom_help[GC_MAX] = {
    "Requests charged to their client's budget.",
    "Requests refused: their client is banned (or over a login quota).",
    "Bans decided on this node.",
    "POSTs to login paths counted against the login quota.",
    "Clients over their budget not banned: whitelisted.",
    "Client slots reused for another client (the table is full).",
    "Bans written to the fleet's memcached.",
    "Bans of other nodes (or w4a-ban) applied here.",
    "Removals applied from the fleet's list.",
    "Fleet list errors: memcached unreachable, forged or expired list.",
    "Hosting-scoped bans of a client replaced (more than it can hold).",
};

static int guard_metrics_collect(request_rec *r, w4a_prom_t *out)
{
    int i;

    if (!G || !G->table) {
        return DECLINED;
    }
    for (i = 0; i < GC_MAX; i++) {
        w4a_prom_one(out, apr_pstrcat(r->pool, "w4a_guard_",
                                      guard_counter_names[i], "_total", NULL),
                     W4A_PROM_COUNTER, prom_help[i],
                     apr_atomic_read64(&G->table->counters[i]));
    }
    w4a_prom_one(out, "w4a_guard_table_slots", W4A_PROM_GAUGE,
                 "Client slots of the guard's table (W4AGuardTableSize).",
                 G->table->nslots);
    guard_hosting_prom(out);
    return OK;
}

static int guard_status_handler(request_rec *r)
{
    int rv, i;
    apr_int64_t now;
    walk_ctx w;
    const char *client = NULL;

    if (!w4a_status_begin(r, STATUS_HANDLER, &rv)) {
        return rv;
    }
    now = apr_time_now() / 1000;
    if (!G || !G->table) {
        ap_rputs("{\"engine\":false}\n", r);
        return OK;
    }
    if (r->args && !strncmp(r->args, "client=", 7)) {
        client = apr_pstrdup(r->pool, r->args + 7);
        ap_unescape_url((char *)client);
        return status_client(r, client, now);
    }
    if (r->args && !strncmp(r->args, "hosting=", 8)) {
        char *h = apr_pstrdup(r->pool, r->args + 8);
        ap_unescape_url(h);
        guard_hosting_status_one(r, h);
        return OK;
    }
    ap_rprintf(r, "{\"engine\":%s,\"slots\":%u,\"rate\":%" APR_INT64_T_FMT
               ",\"burst\":%" APR_INT64_T_FMT ",\"ban_status\":%d,"
               "\"counters\":{", G->on ? "true" : "false", G->table->nslots,
               G->bucket.rate / 1000, G->bucket.burst, G->status);
    for (i = 0; i < GC_MAX; i++) {
        ap_rprintf(r, "%s\"%s\":%" APR_UINT64_T_FMT, i ? "," : "",
                   guard_counter_names[i],
                   apr_atomic_read64(&G->table->counters[i]));
    }
    ap_rputs("},\"bans\":[", r);
    w.r = r;
    w.now = now;
    w.n = w.used = 0;
    guard_walk(G->table, walk_ban, &w);
    ap_rprintf(r, "],\"used\":%d", w.used);
    guard_hosting_status(r);
    ap_rprintf(r, ",\"fleet\":{\"memcached\":%s,\"sealed\":%s},"
               "\"whitelist\":{\"inline\":%d,\"file\":%s%s%s,\"error\":\"%s\"}"
               "}\n", G->mc ? "true" : "false",
               G->mac_key ? "true" : "false", G->wl_nets->nelts,
               G->wl_file ? "\"" : "", G->wl_file ? G->wl_file : "null",
               G->wl_file ? "\"" : "",
               ap_escape_logitem(r->pool, G->wl_error));
    return OK;
}

/* ------------------------------------------------------------------ */
/* Start-up.                                                          */

static int guard_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                             apr_pool_t *ptemp, server_rec *s)
{
    guard_conf *c = ap_get_module_config(s->module_config, &w4a_guard_module);
    guard_global *g;
    apr_shm_t *shm;
    apr_status_t rv;
    apr_uint32_t slots;
    int i;

    G = NULL;
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG
        || c->engine != 1) {
        return OK;
    }
    g = apr_pcalloc(pconf, sizeof(*g));
    g->server = s;
    g->on = 1;
    g->bucket.rate = DEF(c->rate, DEF_RATE) * 1000;
    g->bucket.burst = DEF(c->burst, c->rate >= 0 ? c->rate * 2 : DEF_BURST);
    g->login.burst = DEF(c->login_n, DEF_LOGIN_N);
    g->login.rate = g->login.burst * 1000 / DEF(c->login_s, DEF_LOGIN_S);
    if (g->login.rate < 1) {
        g->login.rate = 1;
    }
    g->w_post = DEF(c->w_post, DEF_W_POST);
    g->w_php = DEF(c->w_php, DEF_W_PHP);
    g->w_404 = DEF(c->w_404, DEF_W_404);
    g->pol.base_ms = DEF(c->ban_base, DEF_BAN_BASE) * 1000;
    g->pol.max_ms = DEF(c->ban_max, g->pol.base_ms > DEF_BAN_MAX * 1000
                        ? g->pol.base_ms / 1000 : DEF_BAN_MAX) * 1000;
    g->pol.forget_ms = DEF(c->ban_forget, DEF_BAN_FORGET) * 1000;
    g->status = c->status >= 0 ? c->status : DEF_STATUS;
    g->v6bits = c->v6bits >= 0 ? c->v6bits : DEF_V6BITS;
    g->login_paths = apr_array_make(pconf, 16, sizeof(login_path));
    for (i = 0; default_login_paths[i]; i++) {
        login_path_parse(pconf, default_login_paths[i],
                         apr_array_push(g->login_paths));
    }
    for (i = 0; i < c->login_paths->nelts; i++) {
        login_path_parse(pconf, APR_ARRAY_IDX(c->login_paths, i,
                                              const char *),
                         apr_array_push(g->login_paths));
    }
    g->wl_nets = c->wl_nets;
    g->wl_file = c->wl_file;
    g->wl_check_us = apr_time_from_sec(DEF(c->wl_check, DEF_WL_CHECK));
    g->poll_ms = DEF(c->poll_ms, DEF_POLL_MS);
    g->mc_servers = c->mc_servers;
    g->mc_prefix = c->mc_prefix ? c->mc_prefix : DEF_MC_PREFIX;

    if (g->mc_servers && !c->mc_key) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, W4ALOGNO(00603)
                     "W4AGuardMemcached %s without W4AGuardMemcachedKey: "
                     "anyone who reaches memcached (a hosting's PHP does) "
                     "could ban any client fleet-wide; give the key file "
                     "(the vhost cache's, w4a-vhostmap keygen), or "
                     "'W4AGuardMemcachedKey none' when only the nodes can "
                     "reach memcached", g->mc_servers);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (g->mc_servers && *c->mc_key) {
        const char *err = NULL;
        rv = w4a_mac_key_load(&g->mac_key, c->mc_key, &err, pconf);
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, W4ALOGNO(00604)
                         "W4AGuardMemcachedKey %s: %s", c->mc_key, err);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    else if (g->mc_servers) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, W4ALOGNO(00605)
                     "W4AGuardMemcached %s without a key "
                     "(W4AGuardMemcachedKey none): the fleet ban list is "
                     "believed as it comes; only the nodes must be able to "
                     "reach memcached", g->mc_servers);
    }

    slots = (apr_uint32_t)DEF(c->slots, DEF_SLOTS);
    rv = apr_shm_create(&shm, guard_table_size(slots), NULL, pconf);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s, W4ALOGNO(00606)
                     "cannot create the client table (%u slots, %"
                     APR_SIZE_T_FMT " bytes) in shared memory", slots,
                     guard_table_size(slots));
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    g->table = guard_table_init(apr_shm_baseaddr_get(shm), slots);
    /* a failure is logged there; the client guard goes on without it */
    guard_hosting_post_config(s, c->hlimit == -1 ? GUARD_HLIMIT_OFF
                                                 : c->hlimit,
                              (int)DEF(c->hretry, DEF_H_RETRY),
                              (int)DEF(c->hshare, DEF_H_SHARE));
    G = g;
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, W4ALOGNO(00607)
                 "client table: %u slots, %" APR_SIZE_T_FMT " bytes; %"
                 APR_INT64_T_FMT "/s burst %" APR_INT64_T_FMT "; fleet %s",
                 slots, guard_table_size(slots), g->bucket.rate / 1000,
                 g->bucket.burst, g->mc_servers ? g->mc_servers : "none");
    return OK;
}

static void guard_child_init(apr_pool_t *pchild, server_rec *s)
{
    int threads = 16;

    if (!G) {
        return;
    }
    guard_hosting_child_init(pchild, s);
    apr_thread_mutex_create(&G->wl_lock, APR_THREAD_MUTEX_DEFAULT, pchild);
    if (G->wl_file) {
        wl_maybe_reload(pchild, apr_time_now(), 1);
        apr_atomic_set64(&G->wl_next,
                         (apr_uint64_t)(apr_time_now() + G->wl_check_us));
    }
    if (G->mc_servers) {
        w4a_mc_opts_t o;
        const char *err = NULL;
        apr_status_t rv;
        ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads);
        memset(&o, 0, sizeof(o));
        o.prefix = G->mc_prefix;
        o.key = G->mac_key;
        o.timeout_ms = DEF_MC_TIMEOUT;
        o.retry_s = 1;
        o.max_conns = threads > 0 ? (apr_uint32_t)threads : 16;
        rv = w4a_mc_create(&G->mc, G->mc_servers, &o, &err, pchild);
        if (rv != APR_SUCCESS) {
            G->mc = NULL;
            ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, W4ALOGNO(00608)
                         "memcached %s: %s; bans of this process stay on "
                         "this node", G->mc_servers, err);
        }
    }
}

static void guard_retrieve(void)
{
    hosting_of = APR_RETRIEVE_OPTIONAL_FN(w4a_hosting);
    php_dispatched = APR_RETRIEVE_OPTIONAL_FN(w4a_php_dispatched);
}

static void register_hooks(apr_pool_t *p)
{
    /* After mod_remoteip (the client is the one it found behind the load
     * balancers), before mod_w4a_vhost: a banned client costs no lookup. */
    static const char *const after_remoteip[] = { "mod_remoteip.c", NULL };
    static const char *const before_vhost[] = { "mod_w4a_vhost.c", NULL };

    ap_hook_post_config(guard_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(guard_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_optional_fn_retrieve(guard_retrieve, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_read_request(guard_post_read_request, after_remoteip,
                              before_vhost, APR_HOOK_FIRST);
    /* First fixup: the login quota is checked before mod_w4a_php picks
     * the pool, and a refusal means no handler runs at all. */
    ap_hook_fixups(guard_fixups, NULL, NULL, APR_HOOK_REALLY_FIRST);
    /* Then the hosting's requests in flight, before mod_w4a_php (which
     * counts its PHP requests in its own table). */
    ap_hook_fixups(guard_hosting_fixups, NULL, NULL, APR_HOOK_REALLY_FIRST);
    ap_hook_child_status(guard_hosting_child_status, NULL, NULL,
                         APR_HOOK_MIDDLE);
    /* After mod_w4a_php's decision (APR_HOOK_LAST). */
    ap_hook_fixups(guard_fixups_late, NULL, NULL, APR_HOOK_REALLY_LAST);
    ap_hook_handler(guard_status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(w4a, metrics_collect, guard_metrics_collect, NULL, NULL,
                      APR_HOOK_MIDDLE);
    ap_hook_log_transaction(guard_log_transaction, NULL, NULL,
                            APR_HOOK_MIDDLE);
}

/* Every directive is global (GLOBAL_ONLY): a virtual host's configuration
 * holds nothing, so there is nothing to merge. */
module AP_MODULE_DECLARE_DATA w4a_guard_module = {
    STANDARD20_MODULE_STUFF,
    NULL,                   /* per-directory config creator */
    NULL,                   /* dir config merger */
    create_srv_conf,        /* server config creator */
    NULL,                   /* server config merger: global directives */
    guard_cmds,             /* command table */
    register_hooks,         /* set up other request processing hooks */
    AP_MODULE_FLAG_NONE     /* flags */
};
