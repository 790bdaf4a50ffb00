/*
 * mod_w4a_htcompat: the mod_php era's .htaccess lines keep working.
 *
 * php_value, php_flag, php_admin_value and php_admin_flag are accepted
 * wherever mod_php accepted them (never "Invalid command"), collected per
 * directory with the file and line they came from, and checked, at request
 * time, against the INI table of the PHP version the request goes to
 * (W4AHtcompatIniTable, generated from that PHP's own ini_get_all()).
 *
 * Delivery: FPM's PHP_VALUE parameter writes into the worker's master INI
 * values, which stay for every later request of that worker.  So every
 * request handed to a pool sends, for every setting that any request has
 * ever delivered to that pool (its socket), either its directory's value
 * or the pool's start value (the pool's own php_value, from the settings file
 * w4a-fpm-pools writes beside the pool, else the table's); a setting the
 * pool fixes with php_admin_* is never sent.  The "ever delivered" sets,
 * one per pool (htcompat_state.h), are bitmaps in a state file mapped by
 * every httpd process (W4AHtcompatStateFile); they only grow, and survive
 * restarts of httpd, since FPM workers do.  A page whose directories set
 * nothing, in a pool that was never sent anything, sends no PHP_VALUE.
 *
 * mod_w4a_php asks, through the optional functions of mod_w4a_htcompat.h,
 * whether PHP may run here (php_flag engine off) and, in its very last
 * fixup, for the PHP_VALUE text.
 */

#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>

#include <apr_atomic.h>
#include <apr_hash.h>
#include <apr_lib.h>
#include <apr_mmap.h>
#include <apr_optional.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>
#include <apr_time.h>

#include "htcompat_pool.h"
#include "htcompat_private.h"
#include "htcompat_state.h"
#include "htcompat_table.h"
#include "mod_w4a_htcompat.h"
#include "w4a_httpd.h"
#include "w4a_prom.h"
#include "w4a_util.h"

module AP_MODULE_DECLARE_DATA w4a_htcompat_module;

#define W4A_UNSET        (-1)
#define DEFAULT_STATE    "w4a-htcompat.state"
#define STATUS_HANDLER   "w4a-htcompat-status"
/* w4a-fpm-pools' default pool directory, settings file beside each pool */
#define DEFAULT_POOL_SETTINGS "/etc/php/%v/fpm/pool.d/w4a-%h.settings"
#define POOL_CACHE_MAX   20000      /* W4AHtcompatPoolCacheSize default */
#define POOL_RECHECK     apr_time_from_sec(1)

/* Counters beyond the reasons. */
#define CNT_ENGINE_OFF   HTC_NREASONS
#define CNT_REQUESTS     (HTC_NREASONS + 1)
#define CNT_POOL_TRIMMED (HTC_NREASONS + 2)   /* pool cache entries dropped */
#define CNT_MAX          HTC_STATE_COUNTERS

/* The node's state, per pool (htcompat_state.h): mapped shared by every
 * httpd process. */

static htc_state_t *state;

/*
 * Log throttle, per process: a skipped line is logged once per
 * W4AHtcompatLogInterval for each (file, line, reason), not on every
 * request of a busy site that nobody will fix since it works.  Counters
 * count every request.
 */
#define DEFAULT_LOG_INTERVAL 300
#define MAX_THROTTLED        10000
/* Skipped lines one request logs at most: a file of 10,000 refused lines
 * must not write 10,000 lines to the node's error log per request (the
 * rest are counted, and one W4A00441 says so). */
#define MAX_LOGGED_PER_REQUEST 16
static apr_pool_t         *throttle_pool;   /* cleared whenever full */
static apr_hash_t         *throttle_seen;    /* key -> apr_time_t * */
#if APR_HAS_THREADS
static apr_thread_mutex_t *throttle_mutex;
#endif

/* The pools' own settings files, per process (htcompat_pool.c). */
static htc_pool_cache_t   *pool_cache;

/* One php_* line. */
typedef struct {
    const char *name;
    const char *value;       /* flags already "0"/"1" */
    const char *directive;   /* "php_value", … */
    const char *file;
    int         line;
    int         admin;       /* php_admin_* from server configuration */
} htc_line_t;

typedef struct {
    const htc_line_t *line;
    htc_reason_e      why;
} htc_refused_t;

typedef struct {
    apr_hash_t         *settings;   /* name -> htc_line_t *; NULL: none */
    apr_array_header_t *refused;    /* htc_refused_t; NULL: none */
    int                 engine;     /* W4A_UNSET, 0, 1 */
    int                 engine_admin;
} htc_dir_conf;

typedef struct {
    apr_hash_t *tables;             /* version -> htc_table_t *; NULL: unset */
    const char *state_file;         /* NULL: unset */
    apr_hash_t *deny;               /* names customers may not set; NULL: unset */
    apr_array_header_t *track;      /* names reset from the start ("all"); NULL: unset */
    int         log_interval;       /* seconds; W4A_UNSET: unset; 0: every request */
    const char *pool_settings;      /* pattern (%h %v); "": none; NULL: unset */
    apr_int64_t pool_cache_size;    /* files per process; W4A_UNSET: unset */
} htc_srv_conf;

/* ------------------------------------------------------------------ */

static void *create_dir_conf(apr_pool_t *p, char *dir)
{
    htc_dir_conf *c = apr_pcalloc(p, sizeof(*c));
    c->engine = W4A_UNSET;
    c->engine_admin = 0;
    return c;
}

static void push_refused(apr_pool_t *p, htc_dir_conf *c, const htc_line_t *l,
                         htc_reason_e why)
{
    htc_refused_t *r;
    if (!c->refused) {
        c->refused = apr_array_make(p, 2, sizeof(htc_refused_t));
    }
    r = apr_array_push(c->refused);
    r->line = l;
    r->why = why;
}

static void *merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    htc_dir_conf *base = basev, *add = addv;
    htc_dir_conf *c = apr_pcalloc(p, sizeof(*c));

    /* engine: the deeper directory wins, unless the server locked it with
     * php_admin_flag engine. */
    if (add->engine != W4A_UNSET && (add->engine_admin || !base->engine_admin)) {
        c->engine = add->engine;
        c->engine_admin = add->engine_admin;
    }
    else {
        c->engine = base->engine;
        c->engine_admin = base->engine_admin;
    }

    /* refused lines: the parent's, then this directory's, then those the
     * server's php_admin_* lines lock out */
    c->refused = NULL;
    if (base->refused) {
        c->refused = apr_array_copy(p, base->refused);
    }
    if (add->refused) {
        c->refused = c->refused ? (apr_array_cat(c->refused, add->refused),
                                   c->refused)
                                : apr_array_copy(p, add->refused);
    }
    if (add->engine != W4A_UNSET && !add->engine_admin && base->engine_admin) {
        htc_line_t *l = apr_pcalloc(p, sizeof(*l));
        l->name = "engine";
        l->value = add->engine ? "1" : "0";
        l->directive = "php_flag";
        l->file = "(per-directory configuration)";
        push_refused(p, c, l, HTC_LOCKED);
    }

    /* settings: the deeper directory's value wins, except over a value the
     * server set with php_admin_*. */
    if (!add->settings || !base->settings) {
        c->settings = add->settings ? add->settings : base->settings;
    }
    else {
        apr_hash_index_t *hi;
        c->settings = apr_hash_copy(p, base->settings);
        for (hi = apr_hash_first(p, add->settings); hi; hi = apr_hash_next(hi)) {
            const htc_line_t *a = apr_hash_this_val(hi);
            const htc_line_t *b = apr_hash_get(base->settings, a->name,
                                               APR_HASH_KEY_STRING);
            if (b && b->admin && !a->admin) {
                push_refused(p, c, a, HTC_LOCKED);
                continue;
            }
            apr_hash_set(c->settings, a->name, APR_HASH_KEY_STRING, a);
        }
    }
    return c;
}

static void *create_srv_conf(apr_pool_t *p, server_rec *s)
{
    htc_srv_conf *c = apr_pcalloc(p, sizeof(*c));
    c->tables = NULL;
    c->state_file = NULL;
    c->deny = NULL;
    c->track = NULL;
    c->log_interval = W4A_UNSET;
    c->pool_settings = NULL;
    c->pool_cache_size = W4A_UNSET;
    return c;
}

static void *merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    htc_srv_conf *base = basev, *add = addv;
    htc_srv_conf *c = apr_pcalloc(p, sizeof(*c));

    if (base->tables && add->tables) {
        c->tables = apr_hash_overlay(p, add->tables, base->tables);
    }
    else {
        c->tables = add->tables ? add->tables : base->tables;
    }
    c->state_file = add->state_file ? add->state_file : base->state_file;
    if (base->deny && add->deny) {
        c->deny = apr_hash_overlay(p, add->deny, base->deny);
    }
    else {
        c->deny = add->deny ? add->deny : base->deny;
    }
    c->track = add->track ? add->track : base->track;   /* main server only */
    c->log_interval = add->log_interval != W4A_UNSET ? add->log_interval
                                                     : base->log_interval;
    c->pool_settings = add->pool_settings ? add->pool_settings
                                          : base->pool_settings;
    c->pool_cache_size = add->pool_cache_size != W4A_UNSET     /* main only */
                         ? add->pool_cache_size : base->pool_cache_size;
    return c;
}

/* ------------------------------------------------------------------ */
/* Directives                                                           */

static int from_htaccess(cmd_parms *cmd)
{
    return !(cmd->override & (ACCESS_CONF | RSRC_CONF));
}

/* php_value / php_flag / php_admin_value / php_admin_flag NAME VALUE.
 * Never an error: a line that cannot be used is kept, with its reason, to
 * be logged for the requests it applies to. */
static const char *php_line(cmd_parms *cmd, void *dv, const char *args)
{
    htc_dir_conf *c = dv;
    int is_flag = (int)(apr_uintptr_t)cmd->info & 1;
    int is_admin = ((int)(apr_uintptr_t)cmd->info & 2) != 0;
    const char *name = ap_getword_conf(cmd->pool, &args);
    const char *value = ap_getword_conf(cmd->pool, &args);
    htc_line_t *l = apr_pcalloc(cmd->pool, sizeof(*l));
    htc_reason_e why = HTC_OK;

    l->name = name;
    l->value = value;
    l->directive = cmd->cmd->name;
    l->file = cmd->directive && cmd->directive->filename
              ? cmd->directive->filename : "?";
    l->line = cmd->directive ? cmd->directive->line_num : 0;
    l->admin = is_admin && !from_htaccess(cmd);

    while (*args == ' ' || *args == '\t') {
        args++;
    }
    if (!*name || *args) {
        why = HTC_SYNTAX;
    }
    else if (is_admin && from_htaccess(cmd)) {
        why = HTC_ADMIN;
    }
    else if (is_flag && !(l->value = htc_flag_value(value))) {
        l->value = value;
        why = HTC_BADFLAG;
    }
    if (why != HTC_OK) {
        push_refused(cmd->pool, c, l, why);
        return NULL;
    }
    if (!strcmp(name, "engine")) {
        const char *f = htc_flag_value(l->value);
        if (!f) {
            push_refused(cmd->pool, c, l, HTC_BADFLAG);
            return NULL;
        }
        c->engine = *f == '1';
        c->engine_admin = l->admin;
        return NULL;
    }
    if (!c->settings) {
        c->settings = apr_hash_make(cmd->pool);
    }
    apr_hash_set(c->settings, l->name, APR_HASH_KEY_STRING, l);
    return NULL;
}

/* suPHP_Engine, suPHP_ConfigPath, …: without mod_suphp, "Invalid command"
 * and a 500 for the whole directory.  PHP already runs as the hosting's
 * user here: accepted, and logged as ignored with the PHP requests they
 * apply to. */
static const char *suphp_line(cmd_parms *cmd, void *dv, const char *args)
{
    htc_line_t *l = apr_pcalloc(cmd->pool, sizeof(*l));

    l->name = "";
    l->value = args;
    l->directive = cmd->cmd->name;
    l->file = cmd->directive && cmd->directive->filename
              ? cmd->directive->filename : "?";
    l->line = cmd->directive ? cmd->directive->line_num : 0;
    push_refused(cmd->pool, dv, l, HTC_SUPHP);
    return NULL;
}

static htc_srv_conf *srv_conf(cmd_parms *cmd)
{
    return ap_get_module_config(cmd->server->module_config,
                                &w4a_htcompat_module);
}

static const char *set_ini_table(cmd_parms *cmd, void *d, const char *version,
                                 const char *path)
{
    htc_srv_conf *c = srv_conf(cmd);
    htc_table_t *t;
    const char *err = NULL, *q;

    for (q = version; *q; q++) {
        if (!apr_isdigit(*q) && *q != '.') {
            break;
        }
    }
    if (!*version || *q) {
        return "W4AHtcompatIniTable: expected a PHP version like 8.2, then "
               "the table file";
    }
    path = ap_server_root_relative(cmd->pool, path);
    if (htc_table_load(&t, path, &err, cmd->pool) != APR_SUCCESS) {
        return apr_pstrcat(cmd->pool, "W4AHtcompatIniTable: ", err, NULL);
    }
    if (strcmp(t->version, version)) {
        return apr_psprintf(cmd->pool, "W4AHtcompatIniTable: %s is the table "
                            "of PHP %s, not %s", path, t->version, version);
    }
    if (!c->tables) {
        c->tables = apr_hash_make(cmd->pool);
    }
    apr_hash_set(c->tables, apr_pstrdup(cmd->pool, version),
                 APR_HASH_KEY_STRING, t);
    return NULL;
}

static const char *add_deny(cmd_parms *cmd, void *d, const char *name)
{
    htc_srv_conf *c = srv_conf(cmd);
    const char *q;

    for (q = name; *q; q++) {
        if (!apr_isalnum(*q) && *q != '_' && *q != '.' && *q != '-') {
            return apr_pstrcat(cmd->pool, "W4AHtcompatDeny: '", name,
                               "' is not a PHP setting name", NULL);
        }
    }
    if (!c->deny) {
        c->deny = apr_hash_make(cmd->pool);
    }
    apr_hash_set(c->deny, apr_pstrdup(cmd->pool, name), APR_HASH_KEY_STRING,
                 "");
    return NULL;
}

static const char *add_track(cmd_parms *cmd, void *d, const char *name)
{
    htc_srv_conf *c = srv_conf(cmd);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY), *q;

    if (err) {
        return err;
    }
    for (q = name; *q; q++) {
        if (!apr_isalnum(*q) && *q != '_' && *q != '.' && *q != '-') {
            return apr_pstrcat(cmd->pool, "W4AHtcompatTrack: '", name,
                               "' is not a PHP setting name or 'all'", NULL);
        }
    }
    if (!c->track) {
        c->track = apr_array_make(cmd->pool, 8, sizeof(const char *));
    }
    APR_ARRAY_PUSH(c->track, const char *) = apr_pstrdup(cmd->pool, name);
    return NULL;
}

static const char *set_log_interval(cmd_parms *cmd, void *d, const char *arg)
{
    apr_int64_t v;
    if (!w4a_parse_number(arg, 0, 86400, &v)) {
        return "W4AHtcompatLogInterval: expected seconds from 0 to 86400 "
               "(0: log on every request)";
    }
    srv_conf(cmd)->log_interval = (int)v;
    return NULL;
}

static const char *set_pool_settings(cmd_parms *cmd, void *d,
                                     const char *arg)
{
    const char *why;

    if (!strcasecmp(arg, "none")) {
        srv_conf(cmd)->pool_settings = "";
        return NULL;
    }
    if (arg[0] != '/') {
        return "W4AHtcompatPoolSettings: expected an absolute path pattern "
               "or none";
    }
    if ((why = w4a_pool_pattern_check(arg)) != NULL) {
        return apr_pstrcat(cmd->pool, "W4AHtcompatPoolSettings: ", why, NULL);
    }
    srv_conf(cmd)->pool_settings = arg;
    return NULL;
}

static const char *set_pool_cache_size(cmd_parms *cmd, void *d,
                                       const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    apr_int64_t v;
    if (err) {
        return err;
    }
    if (!w4a_parse_number(arg, 1, 10000000, &v)) {
        return "W4AHtcompatPoolCacheSize: expected a number of files from 1 "
               "to 10000000";
    }
    srv_conf(cmd)->pool_cache_size = v;
    return NULL;
}

static const char *set_state_file(cmd_parms *cmd, void *d, const char *path)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    if (err) {
        return err;
    }
    srv_conf(cmd)->state_file = ap_server_root_relative(cmd->pool, path);
    return NULL;
}

static const command_rec htc_cmds[] = {
    AP_INIT_RAW_ARGS("php_value", php_line, (void *)0, OR_OPTIONS,
                     "php_value NAME VALUE: a PHP setting for this directory"),
    AP_INIT_RAW_ARGS("php_flag", php_line, (void *)1, OR_OPTIONS,
                     "php_flag NAME on|off: a PHP flag for this directory"),
    AP_INIT_RAW_ARGS("php_admin_value", php_line, (void *)2, OR_OPTIONS,
                     "php_admin_value NAME VALUE (server configuration only)"),
    AP_INIT_RAW_ARGS("php_admin_flag", php_line, (void *)3, OR_OPTIONS,
                     "php_admin_flag NAME on|off (server configuration only)"),
    AP_INIT_RAW_ARGS("suPHP_Engine", suphp_line, NULL, OR_ALL,
                     "mod_suphp's: ignored (PHP runs as the hosting)"),
    AP_INIT_RAW_ARGS("suPHP_ConfigPath", suphp_line, NULL, OR_ALL,
                     "mod_suphp's: ignored (PHP runs as the hosting)"),
    AP_INIT_RAW_ARGS("suPHP_UserGroup", suphp_line, NULL, OR_ALL,
                     "mod_suphp's: ignored (PHP runs as the hosting)"),
    AP_INIT_RAW_ARGS("suPHP_AddHandler", suphp_line, NULL, OR_ALL,
                     "mod_suphp's: ignored (PHP runs as the hosting)"),
    AP_INIT_RAW_ARGS("suPHP_RemoveHandler", suphp_line, NULL, OR_ALL,
                     "mod_suphp's: ignored (PHP runs as the hosting)"),
    AP_INIT_RAW_ARGS("suPHP_PHPPath", suphp_line, NULL, OR_ALL,
                     "mod_suphp's: ignored (PHP runs as the hosting)"),
    AP_INIT_TAKE2("W4AHtcompatIniTable", set_ini_table, NULL, RSRC_CONF,
                  "PHP version and its INI table (w4a-htcheck --dump-table)"),
    AP_INIT_ITERATE("W4AHtcompatDeny", add_deny, NULL, RSRC_CONF,
                    "PHP settings php_value/php_flag may not set (locked)"),
    AP_INIT_ITERATE("W4AHtcompatTrack", add_track, NULL, RSRC_CONF,
                    "Settings reset on every PHP request from the start "
                    "(names, or all)"),
    AP_INIT_TAKE1("W4AHtcompatLogInterval", set_log_interval, NULL, RSRC_CONF,
                  "Seconds between two log lines about the same skipped line"),
    AP_INIT_TAKE1("W4AHtcompatPoolSettings", set_pool_settings, NULL,
                  RSRC_CONF, "Settings file of each pool (%h hosting, %v "
                  "version), as w4a-fpm-pools writes it, or none"),
    AP_INIT_TAKE1("W4AHtcompatPoolCacheSize", set_pool_cache_size, NULL,
                  RSRC_CONF, "Pool settings files each httpd process keeps "
                  "(default 20000)"),
    AP_INIT_TAKE1("W4AHtcompatStateFile", set_state_file, NULL, RSRC_CONF,
                  "File holding the settings ever delivered and the counters"),
    {NULL}
};

/* ------------------------------------------------------------------ */
/* Requests                                                             */

static void count(int k)
{
    if (state && k >= 0 && k < CNT_MAX) {
        apr_atomic_inc32(&state->counters[k]);
    }
}

/* Whether this (file, line, reason) may be logged now; record: and
 * note that it is (0: only look). */
static int throttle_check(request_rec *r, const htc_line_t *l,
                          htc_reason_e why, int record)
{
    htc_srv_conf *sc = ap_get_module_config(r->server->module_config,
                                            &w4a_htcompat_module);
    int interval = sc->log_interval == W4A_UNSET ? DEFAULT_LOG_INTERVAL
                                                 : sc->log_interval;
    apr_time_t now = apr_time_now(), *last;
    const char *key;
    int ok = 1;

    if (interval == 0 || !throttle_seen) {
        return 1;
    }
    key = apr_psprintf(r->pool, "%s\001%d\001%d\001%s", l->file, l->line,
                       (int)why, l->name);
#if APR_HAS_THREADS
    if (throttle_mutex) {
        apr_thread_mutex_lock(throttle_mutex);
    }
#endif
    last = apr_hash_get(throttle_seen, key, APR_HASH_KEY_STRING);
    if (last && now - *last < apr_time_from_sec(interval)) {
        ok = 0;
    }
    else if (record) {
        if (!last) {
            if (apr_hash_count(throttle_seen) >= MAX_THROTTLED) {
                /* bounded memory: the keys and times live in a pool of
                 * their own, freed with the table (a cleared hash alone
                 * would keep every key it ever held) */
                apr_pool_clear(throttle_pool);
                throttle_seen = apr_hash_make(throttle_pool);
            }
            last = apr_palloc(throttle_pool, sizeof(*last));
            apr_hash_set(throttle_seen, apr_pstrdup(throttle_pool, key),
                         APR_HASH_KEY_STRING, last);
        }
        *last = now;
    }
#if APR_HAS_THREADS
    if (throttle_mutex) {
        apr_thread_mutex_unlock(throttle_mutex);
    }
#endif
    return ok;
}

/* The skipped lines this request has logged (its main request's). */
static apr_uint32_t *logged_of(request_rec *r)
{
    void *v = NULL;

    while (r->main) {
        r = r->main;
    }
    apr_pool_userdata_get(&v, "w4a-htcompat-logged", r->pool);
    if (!v) {
        v = apr_pcalloc(r->pool, sizeof(apr_uint32_t));
        apr_pool_userdata_setn(v, "w4a-htcompat-logged", NULL, r->pool);
    }
    return v;
}

static void log_refused(request_rec *r, const htc_line_t *l, htc_reason_e why)
{
    apr_uint32_t *logged;

    count(why);
    logged = logged_of(r);
    if (*logged >= MAX_LOGGED_PER_REQUEST) {
        /* a line that would be logged, past the cap: said once a request
         * (and that too throttled per file) */
        if (*logged == MAX_LOGGED_PER_REQUEST
            && throttle_check(r, l, why, 0)) {
            htc_line_t cap = *l;
            (*logged)++;
            cap.line = 0;
            cap.name = "";
            if (throttle_check(r, &cap, HTC_REMOVED, 1)) {
                ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                              W4ALOGNO(00441) "%s: more skipped lines than "
                              "the %d one request logs: the others are "
                              "counted, and logged by the next requests",
                              l->file, MAX_LOGGED_PER_REQUEST);
            }
        }
        return;
    }
    if (!throttle_check(r, l, why, 1)) {
        return;
    }
    (*logged)++;
    if (why == HTC_REMOVED) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, W4ALOGNO(00402)
                      "%s:%d: %s %s dropped: %s", l->file, l->line,
                      l->directive, l->name, htc_reason_text(why));
    }
    else if (why == HTC_SUPHP) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, W4ALOGNO(00403)
                      "%s:%d: %s ignored: %s", l->file, l->line,
                      l->directive, htc_reason_text(why));
    }
    else {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, W4ALOGNO(00401)
                      "%s:%d: %s %s skipped (%s): %s", l->file, l->line,
                      l->directive, l->name, htc_reason_name(why),
                      htc_reason_text(why));
    }
}

static int w4a_htcompat_engine(request_rec *r)
{
    htc_dir_conf *dc = ap_get_module_config(r->per_dir_config,
                                            &w4a_htcompat_module);
    if (dc->engine == 0) {
        if (!r->main) {
            count(CNT_ENGINE_OFF);
        }
        return 0;
    }
    return 1;
}

#define MAX_LOCAL 256   /* settings one directory may deliver */

/* A pool's names, and the pattern its settings file path is made from. */
typedef struct {
    const char *pattern;
    const char *hosting;
    apr_size_t  hl;
    const char *version;
    apr_size_t  vl;
} pool_names_t;

/* The path of the settings file of pool (hosting, version): built only
 * when the cache looks at the file (htc_pool_cache_get_key). */
static const char *pool_settings_path(void *baton, apr_pool_t *p)
{
    const pool_names_t *n = baton;
    char *out = apr_palloc(p, w4a_pool_pattern_len(n->pattern, n->hl, n->vl)
                              + 1);

    w4a_pool_pattern_expand(out, n->pattern, n->hosting, n->hl, n->version,
                            n->vl);
    return out;
}

/* Names that cannot leave the pattern's directory. */
static int pool_name_ok(const char *s)
{
    return *s && s[0] != '.' && !strchr(s, '/');
}

#define POOL_KEY_MAX 256    /* the cache key of a pool, on the stack */

/* The pool's own settings: APR_SUCCESS with *set (NULL: the pool sets
 * nothing we need to know, or no settings file is configured), or the
 * error, logged (once per recheck of the file). */
static apr_status_t pool_settings(request_rec *r, const htc_srv_conf *sc,
                                  const char *hosting, const char *version,
                                  const htc_pool_t **set, void **handle)
{
    const char *pattern = sc->pool_settings ? sc->pool_settings
                                            : DEFAULT_POOL_SETTINGS;
    const char *path = NULL, *why = NULL;
    char key[POOL_KEY_MAX];
    pool_names_t names;
    apr_size_t trimmed = 0, klen;
    apr_status_t rv;
    int fresh = 0;

    *set = NULL;
    *handle = NULL;
    if (!*pattern) {
        return APR_SUCCESS;                     /* W4AHtcompatPoolSettings none */
    }
    if (!pool_name_ok(hosting) || !pool_name_ok(version)) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00421)
                      "pool %s (PHP %s): name unusable in a file path; its "
                      "settings are unknown", hosting, version);
        return APR_EINVAL;
    }
    if (!pool_cache) {
        return APR_ENOMEM;                      /* child_init could not make it */
    }
    /* The entry is found by the pattern (its address: one per server
     * configuration, for the child's life) and the two names, so that a
     * request makes no path: that costs a pass over the whole pattern. */
    names.pattern = pattern;
    names.hosting = hosting;
    names.hl = strlen(hosting);
    names.version = version;
    names.vl = strlen(version);
    klen = sizeof(pattern) + names.hl + 1 + names.vl;
    if (klen > sizeof(key)) {
        path = pool_settings_path(&names, r->pool);
        rv = htc_pool_cache_get(pool_cache, path, set, handle, &why, &fresh,
                                &trimmed, r->pool);
    }
    else {
        memcpy(key, &pattern, sizeof(pattern));
        memcpy(key + sizeof(pattern), hosting, names.hl + 1);
        memcpy(key + sizeof(pattern) + names.hl + 1, version, names.vl);
        rv = htc_pool_cache_get_key(pool_cache, key, klen, pool_settings_path,
                                    &names, set, handle, &why, &path, &fresh,
                                    &trimmed, r->pool);
    }
    if (trimmed && state) {
        apr_atomic_add32(&state->counters[CNT_POOL_TRIMMED],
                         (apr_uint32_t)trimmed);
    }
    if (rv != APR_SUCCESS && fresh) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, W4ALOGNO(00420)
                      "PHP pool settings %s %s: the pool's own settings are "
                      "unknown, so no setting can be sent to it without "
                      "risking to undo one of them", path, why);
    }
    return rv;
}

static apr_status_t w4a_htcompat_php_value(request_rec *r,
                                           const char *hosting,
                                           const char *version,
                                           const char *pool,
                                           apr_uint32_t pool_hash,
                                           const char **textp)
{
    htc_dir_conf *dc = ap_get_module_config(r->per_dir_config,
                                            &w4a_htcompat_module);
    htc_srv_conf *sc = ap_get_module_config(r->server->module_config,
                                            &w4a_htcompat_module);
    const htc_table_t *t = sc->tables
        ? apr_hash_get(sc->tables, version, APR_HASH_KEY_STRING) : NULL;
    htc_send_t local[MAX_LOCAL], *send;
    apr_uint32_t mine[HTC_WORDS];       /* slots of this directory's values */
    apr_uint32_t set[HTC_WORDS];        /* slots to send: resets and values */
    apr_uint32_t used[HTC_USED_WORDS];  /* words of set in use */
    apr_uint32_t mused[HTC_USED_WORDS]; /* words of mine in use */
    apr_uint32_t tag = pool ? htc_pool_tag_of(pool_hash) : htc_pool_tag("");
    htc_pool_slot_t *pool_bits = NULL;
    int any = 0, claimed = 0;
    const htc_pool_t *ps = NULL;
    void *ps_handle = NULL;
    int i, w, g, nlocal = 0, nsend = 0, cap;
    int quiet = r->main != NULL;        /* a sub-request: its main says it */
    apr_status_t rv;
    char *text;

    *textp = NULL;
    if (!state) {
        return APR_SUCCESS;
    }
    if (!quiet && dc->refused) {
        for (i = 0; i < dc->refused->nelts; i++) {
            const htc_refused_t *f = &APR_ARRAY_IDX(dc->refused, i,
                                                    htc_refused_t);
            log_refused(r, f->line, f->why);
        }
    }
    /* The pool's own settings, when anything may be sent at all: a value
     * of this directory, or a reset of what this pool (its socket) was
     * ever sent. */
    if (t) {
        any = htc_state_pool_set(state, tag, set, used);
        if (dc->settings || any) {
            rv = pool_settings(r, sc, hosting, version, &ps, &ps_handle);
            if (rv != APR_SUCCESS) {
                return rv;
            }
        }
    }
    if (dc->settings) {
        apr_hash_index_t *hi;
        memset(mine, 0, sizeof(mine));
        memset(mused, 0, sizeof(mused));
        for (hi = apr_hash_first(r->pool, dc->settings); hi;
             hi = apr_hash_next(hi)) {
            const htc_line_t *l = apr_hash_this_val(hi);
            const htc_setting_t *s = NULL;
            const htc_pool_setting_t *pv;
            htc_reason_e why = htc_check(t, l->name, l->value, l->admin, &s);
            if (why == HTC_OK && !l->admin && sc->deny
                && apr_hash_get(sc->deny, l->name, APR_HASH_KEY_STRING)) {
                why = HTC_LOCKED;
            }
            /* the pool's php_admin_*: fixed there, never sent */
            if (why == HTC_OK && (pv = htc_pool_get(ps, l->name)) != NULL
                && pv->admin) {
                why = HTC_LOCKED;
            }
            if (why == HTC_OK && nlocal == MAX_LOCAL) {
                why = HTC_UNKNOWN;      /* more than PHP has settings */
            }
            if (why != HTC_OK) {
                if (!quiet) {
                    log_refused(r, l, why);
                }
                continue;
            }
            local[nlocal].s = s;
            local[nlocal++].value = l->value;
            mine[s->bit / 32] |= 1u << (s->bit % 32);
            mused[s->bit / 1024] |= 1u << ((s->bit / 32) % 32);
            if (!t) {
                continue;       /* nothing is sent: no version's table */
            }
            if (!claimed) {
                pool_bits = htc_state_pool_claim(state, tag);
                claimed = 1;
            }
            htc_state_mark(state, pool_bits, s->bit);
        }
        if (!quiet && nlocal) {
            apr_atomic_add32(&state->counters[HTC_OK], nlocal);
        }
    }
    if (!t) {
        return APR_SUCCESS;
    }
    if (!quiet) {
        count(CNT_REQUESTS);
    }

    /* Every setting ever delivered to this pool: this directory's value,
     * else the pool's own value, else the table's start value; never one
     * the pool fixes with php_admin_*. */
    if (!any && !nlocal) {
        htc_pool_cache_release(pool_cache, ps_handle);
        return APR_SUCCESS;
    }
    cap = 32;
    send = apr_palloc(r->pool, cap * sizeof(*send));
    /* the words in use only, found by their bits in used/mused (a walk of
     * all HTC_WORDS cost a thousand instructions on every request) */
    for (g = 0; g < HTC_USED_WORDS; g++) {
        apr_uint32_t su = any ? used[g] : 0;
        apr_uint32_t mu = nlocal ? mused[g] : 0;
        apr_uint32_t words = su | mu;
        while (words) {
            apr_uint32_t m = 1u << __builtin_ctz(words), word;
            words &= words - 1;
            w = g * 32 + __builtin_ctz(m);
            word = ((su & m) ? set[w] : 0) | ((mu & m) ? mine[w] : 0);
            while (word) {
                int b = __builtin_ctz(word);
                const htc_setting_t *s;
                word &= word - 1;
                for (s = t->by_bit[w * 32 + b]; s; s = s->next_bit) {
                    const char *v = NULL;
                    if (nlocal && (mine[w] & (1u << b))) {
                        for (i = 0; i < nlocal; i++) {
                            if (local[i].s == s) {
                                v = local[i].value;
                                break;
                            }
                        }
                    }
                    if (!v && ps) {
                        const htc_pool_setting_t *pv =
                            htc_pool_get(ps, s->name);
                        if (pv && pv->admin) {
                            continue;
                        }
                        if (pv && htc_value_safe(pv->value)) {
                            v = pv->value;
                        }
                    }
                    if (!v && !(v = s->defval)) {
                        continue;
                    }
                    if (nsend == cap) {
                        htc_send_t *bigger =
                            apr_palloc(r->pool, 2 * cap * sizeof(*send));
                        memcpy(bigger, send, cap * sizeof(*send));
                        send = bigger;
                        cap *= 2;
                    }
                    send[nsend].s = s;
                    send[nsend++].value = v;
                }
            }
        }
    }
    if (!nsend) {
        htc_pool_cache_release(pool_cache, ps_handle);
        return APR_SUCCESS;
    }
    text = htc_ini_text(send, nsend, r->pool);
    htc_pool_cache_release(pool_cache, ps_handle);
    *textp = text;
    return APR_SUCCESS;
}

/* JSON counters: settings applied, refused by reason. */
static int htc_status_handler(request_rec *r)
{
    int i, rv, tracked = 0;

    if (!w4a_status_begin(r, STATUS_HANDLER, &rv)) {
        return rv;
    }
    if (!state) {
        ap_rputs("{\"error\":\"no state file\"}\n", r);
        return OK;
    }
    for (i = 0; i < HTC_WORDS; i++) {
        tracked += __builtin_popcount(apr_atomic_read32(&state->bits[i]));
    }
    ap_rprintf(r, "{\"requests\":%u,\"applied\":%u,\"engine_off\":%u,"
               "\"tracked_slots\":%d,\"refused\":{",
               apr_atomic_read32(&state->counters[CNT_REQUESTS]),
               apr_atomic_read32(&state->counters[HTC_OK]),
               apr_atomic_read32(&state->counters[CNT_ENGINE_OFF]), tracked);
    for (i = 1; i < HTC_NREASONS; i++) {
        ap_rprintf(r, "%s\"%s\":%u", i > 1 ? "," : "", htc_reason_name(i),
                   apr_atomic_read32(&state->counters[i]));
    }
    ap_rprintf(r, "},\"pool_cache_trimmed\":%u,\"pool_sets\":%u,"
               "\"pool_sets_full\":%u",
               apr_atomic_read32(&state->counters[CNT_POOL_TRIMMED]),
               htc_state_pools(state), apr_atomic_read32(&state->pools_full));
    if (pool_cache) {
        apr_size_t n, max;
        htc_pool_cache_count(pool_cache, &n, &max);
        ap_rprintf(r, ",\"this_process\":{\"pid\":%ld,\"pool_cache_files\":%"
                   APR_SIZE_T_FMT ",\"pool_cache_size\":%" APR_SIZE_T_FMT "}",
                   (long)getpid(), n, max);
    }
    ap_rputs("}\n", r);
    return OK;
}

/* Prometheus: the node-wide figures of the status page (the state
 * file's counters; the pool cache, this process's own, is left out), for
 * mod_w4a_metrics' page (its optional hook w4a_metrics_collect).  The
 * counters are 32 bits: a wrap reads as a counter reset. */
static int htc_metrics_collect(request_rec *r, w4a_prom_t *out)
{
    int i, tracked = 0;

    if (!state) {
        return DECLINED;
    }
    for (i = 0; i < HTC_WORDS; i++) {
        tracked += __builtin_popcount(apr_atomic_read32(&state->bits[i]));
    }
    w4a_prom_one(out, "w4a_htcompat_requests_total", W4A_PROM_COUNTER,
                 "PHP requests mod_w4a_htcompat worked PHP_VALUE out "
                 "for (their settings and resets), sent or not.",
                 apr_atomic_read32(&state->counters[CNT_REQUESTS]));
    w4a_prom_one(out, "w4a_htcompat_applied_total", W4A_PROM_COUNTER,
                 "php_value/php_flag lines delivered to PHP.",
                 apr_atomic_read32(&state->counters[HTC_OK]));
    w4a_prom_one(out, "w4a_htcompat_engine_off_total", W4A_PROM_COUNTER,
                 "Lines ignored because W4AHtcompatEngine is off there.",
                 apr_atomic_read32(&state->counters[CNT_ENGINE_OFF]));
    w4a_prom_family(out, "w4a_htcompat_refused_total", W4A_PROM_COUNTER,
                    "php_value/php_flag lines not delivered, by reason.");
    for (i = 1; i < HTC_NREASONS; i++) {
        w4a_prom_u64(out, apr_atomic_read32(&state->counters[i]),
                     "reason", htc_reason_name(i), NULL);
    }
    w4a_prom_one(out, "w4a_htcompat_pool_cache_trimmed_total",
                 W4A_PROM_COUNTER, "Entries dropped from the pool settings "
                 "caches.",
                 apr_atomic_read32(&state->counters[CNT_POOL_TRIMMED]));
    w4a_prom_one(out, "w4a_htcompat_tracked_slots", W4A_PROM_GAUGE,
                 "Settings ever delivered through FPM (each "
                 "later PHP request sends their defaults back).",
                 (apr_uint64_t)tracked);
    return OK;
}

/* ------------------------------------------------------------------ */

static int htc_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                           apr_pool_t *ptemp, server_rec *s)
{
    htc_srv_conf *sc = ap_get_module_config(s->module_config,
                                            &w4a_htcompat_module);
    const char *path = sc->state_file ? sc->state_file
                       : ap_runtime_dir_relative(pconf, DEFAULT_STATE);
    apr_file_t *f;
    apr_finfo_t fi;
    apr_mmap_t *mm;
    apr_status_t rv;
    htc_state_t *st;

    state = NULL;
    rv = apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_WRITE
                       | APR_FOPEN_CREATE, APR_FPROT_UREAD | APR_FPROT_UWRITE,
                       pconf);
    if (rv == APR_SUCCESS) {
        rv = apr_file_info_get(&fi, APR_FINFO_SIZE, f);
    }
    if (rv == APR_SUCCESS && fi.size != (apr_off_t)sizeof(htc_state_t)) {
        rv = apr_file_trunc(f, sizeof(htc_state_t));
    }
    if (rv == APR_SUCCESS) {
        rv = apr_mmap_create(&mm, f, 0, sizeof(htc_state_t),
                             APR_MMAP_READ | APR_MMAP_WRITE, pconf);
    }
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s, W4ALOGNO(00410)
                     "W4AHtcompatStateFile %s cannot be opened and mapped: "
                     "without it, settings could leak between requests", path);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    st = mm->mm;
    if (htc_state_init(st, (apr_size_t)fi.size) == 1) {
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, W4ALOGNO(00440)
                     "W4AHtcompatStateFile %s: format 1 upgraded; the "
                     "settings it says were delivered are reset for every "
                     "pool", path);
    }
    state = st;

    /* W4AHtcompatTrack: in the delivered set from the start. */
    if (sc->track) {
        int i;
        for (i = 0; i < sc->track->nelts; i++) {
            const char *name = APR_ARRAY_IDX(sc->track, i, const char *);
            server_rec *sv;
            if (strcmp(name, "all")) {
                htc_state_mark_common(st, htc_bit(name));
                continue;
            }
            for (sv = s; sv; sv = sv->next) {
                htc_srv_conf *c = ap_get_module_config(sv->module_config,
                                                       &w4a_htcompat_module);
                apr_hash_index_t *ti, *hi;
                if (!c->tables) {
                    continue;
                }
                for (ti = apr_hash_first(ptemp, c->tables); ti;
                     ti = apr_hash_next(ti)) {
                    const htc_table_t *t = apr_hash_this_val(ti);
                    for (hi = apr_hash_first(ptemp, t->by_name); hi;
                         hi = apr_hash_next(hi)) {
                        const htc_setting_t *set = apr_hash_this_val(hi);
                        if (set->defval && !set->locked && !set->irreversible
                            && (set->access & HTC_ACC_PERDIR)) {
                            htc_state_mark_common(st, set->bit);
                        }
                    }
                }
            }
        }
    }
    return OK;
}

static void htc_child_init(apr_pool_t *pchild, server_rec *s)
{
    htc_srv_conf *sc = ap_get_module_config(s->module_config,
                                            &w4a_htcompat_module);
    apr_status_t rv = htc_pool_cache_create(&pool_cache,
                                            sc->pool_cache_size == W4A_UNSET
                                            ? POOL_CACHE_MAX
                                            : (apr_size_t)sc->pool_cache_size,
                                            POOL_RECHECK, pchild);
    if (rv != APR_SUCCESS) {
        pool_cache = NULL;              /* PHP requests refused, see above */
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, W4ALOGNO(00422)
                     "cannot create the cache of PHP pool settings: PHP "
                     "requests that would carry settings are refused");
    }
    if (apr_pool_create(&throttle_pool, pchild) != APR_SUCCESS) {
        throttle_pool = NULL;
    }
    throttle_seen = throttle_pool ? apr_hash_make(throttle_pool) : NULL;
#if APR_HAS_THREADS
    if (apr_thread_mutex_create(&throttle_mutex, APR_THREAD_MUTEX_DEFAULT,
                                pchild) != APR_SUCCESS) {
        throttle_mutex = NULL;
        throttle_seen = NULL;           /* no throttle: log every time */
    }
#endif
}

static void register_hooks(apr_pool_t *p)
{
    APR_REGISTER_OPTIONAL_FN(w4a_htcompat_engine);
    APR_REGISTER_OPTIONAL_FN(w4a_htcompat_php_value);
    ap_hook_post_config(htc_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(htc_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(htc_status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(w4a, metrics_collect, htc_metrics_collect, NULL, NULL,
                      APR_HOOK_MIDDLE);
}

module AP_MODULE_DECLARE_DATA w4a_htcompat_module = {
    STANDARD20_MODULE_STUFF,
    create_dir_conf,        /* per-directory config creator */
    merge_dir_conf,         /* dir config merger */
    create_srv_conf,        /* server config creator */
    merge_srv_conf,         /* server config merger */
    htc_cmds,               /* command table */
    register_hooks,         /* set up other request processing hooks */
    AP_MODULE_FLAG_NONE     /* flags */
};
