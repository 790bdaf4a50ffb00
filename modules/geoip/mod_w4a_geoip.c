/*
 * mod_w4a_geoip: client address -> GEOIP_COUNTRY_CODE, MM_COUNTRY_CODE and
 * any other value of any MaxMind DB, set early enough (post_read_request)
 * for server, virtual host, directory and .htaccess rules to see them.
 *
 * - The client address is the one mod_remoteip established, or, with
 *   W4AGeoIPTrustedProxy, X-Forwarded-For walked right to left past the
 *   trusted proxies.
 * - Our variables come only from the lookup: request headers that stand
 *   for one of our names (w4a_envhdr.h: compared without case, '-', '_',
 *   '.' alike), which mod_setenvif and CGI would read, are removed first
 *   of all, whether or not a database is loaded; earlier values are
 *   removed, and the values are put back after every phase a customer's
 *   .htaccess can act in, and after internal redirects.
 * - A module loaded but not configured (no database, no supervisors)
 *   sets nothing.
 * - Supervisors (CIDR lists, inline or from a reloadable file) get the
 *   exemption variable (BTW_FORBIDDEN_GEOIP) "1", everybody else "0".
 * - Databases are never mapped in place: a watcher thread per child
 *   notices a new file, copies it once it is stable, validates the copy
 *   and swaps it in under a lock and a reference count (geoip_db.c).  A
 *   missing or broken file never stops httpd nor fails a request.
 */

#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>
#include <ap_mpm.h>
#include <unixd.h>

#include <apr_atomic.h>
#include <apr_file_io.h>
#include <apr_hash.h>
#include <apr_lib.h>
#include <apr_network_io.h>
#include <apr_shm.h>
#include <apr_strings.h>
#include <apr_thread_cond.h>
#include <apr_thread_mutex.h>
#include <apr_thread_proc.h>

#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include "geoip_private.h"
#include "geoip_db.h"
#include "w4a_envhdr.h"
#include "w4a_httpd.h"
#include "w4a_prom.h"
#include "w4a_util.h"

module AP_MODULE_DECLARE_DATA w4a_geoip_module;

#define W4A_UNSET           (-1)
#define STATUS_HANDLER      "w4a-geoip-status"
#define DEFAULT_SUP_ENV     "BTW_FORBIDDEN_GEOIP"
#define DEFAULT_PROXY_HDR   "X-Forwarded-For"
#define DEFAULT_INTERVAL    5
#define MAX_DATABASES       32
#define COUNTRY_PATH        "country/iso_code"

static const char *const country_vars[] = {
    "GEOIP_COUNTRY_CODE", "MM_COUNTRY_CODE", NULL
};

/* Request headers standing for these are removed whatever the
 * configuration: the names of every GeoIP module's variables (customers
 * bring rules from mod_geoip and mod_maxminddb) and the default
 * exemption variable. */
static const char *const strip_always[] = {
    "GEOIP_*", "MM_*", DEFAULT_SUP_ENV
};
#define STRIP_ALWAYS (int)(sizeof(strip_always) / sizeof(strip_always[0]))

/* Counters shared by every process of a generation (anonymous shared
 * memory made by the parent), per database.  Each child has its own
 * watcher and loads a new file itself: a new version of the file counts
 * once for the node (reloads or refused), by the first process that gets
 * to it, which is the one that moves CNT_FILE (a digest of the file's
 * identity) to it.  CNT_FILE and CNT_LAST_RELOAD are not shown as
 * counters. */
enum { CNT_LOOKUPS, CNT_MISSES, CNT_ERRORS, CNT_RELOADS, CNT_REFUSED,
       CNT_SHOWN, CNT_FILE = CNT_SHOWN, CNT_LAST_RELOAD, CNT_MAX };
static const char *const counter_names[CNT_SHOWN] = {
    "lookups", "misses", "errors", "reloads", "refused"
};

/* One database of this process. */
typedef struct {
    const char      *name;
    const char      *path;
    apr_thread_mutex_t *lock;      /* guards cur, its refs, error, times */
    w4a_geoip_db_t  *cur;          /* NULL: none usable */
    w4a_geoip_fid_t  seen;         /* source at the last check (watcher) */
    w4a_geoip_fid_t  tried;        /* source last loaded or refused */
    apr_time_t       loaded_at;    /* 0: never */
    apr_time_t       checked_at;
    apr_uint32_t     reloads, refused;   /* this process's own */
    apr_uint64_t    *counters;     /* CNT_MAX, shared; NULL: none */
    apr_uint32_t    *generation;   /* the process's, bumped on every swap */
    char             error[512];   /* why there is no (new) database */
} geoip_slot;

/* A CIDR list read from a file: swapped whole, reference counted. */
typedef struct {
    apr_pool_t          *pool;
    apr_array_header_t  *nets;     /* apr_ipsubnet_t * */
    apr_uint32_t         refs;
} geoip_netlist;

/* Process-wide state and the main-server-only settings. */
typedef struct {
    apr_array_header_t *dbs;       /* geoip_slot * */
    apr_array_header_t *sup_nets;  /* apr_ipsubnet_t *, inline */
    const char         *sup_file;  /* NULL: none */
    const char         *sup_env;   /* NULL: DEFAULT_SUP_ENV */
    int                 interval;  /* W4A_UNSET: DEFAULT_INTERVAL; 0: never */

    /* run time */
    server_rec         *server;
    const char         *dir;       /* private copies */
    apr_thread_mutex_t *sup_lock;  /* guards sup_list, sup_* below */
    geoip_netlist      *sup_list;
    w4a_geoip_fid_t     sup_seen, sup_tried;
    apr_time_t          sup_loaded_at;
    char                sup_error[512];
    apr_thread_t       *thread;
    apr_thread_mutex_t *wlock;
    apr_thread_cond_t  *wcond;
    int                 stop;
    apr_uint32_t        generation; /* bumped when any database or the
                                       supervisor list changes */
    apr_uint64_t       *headers_removed; /* shared; NULL: not counted */
    apr_uint64_t       *sup_shared;  /* SUP_MAX, shared; NULL: none */
} geoip_global;

/* Node-wide figures of the supervisor file (as CNT_FILE above). */
enum { SUP_FILE, SUP_RELOADS, SUP_REFUSED, SUP_MAX };

/* The last result of a connection: the next request on it from the same
 * client (a browser fetching a page's assets) reuses it, the supervisor
 * exemption included, while no database and no supervisor list changed
 * (the key is the exact address looked up: through trusted proxies it may
 * change from one request to the next).  Fixed size, so that a long
 * connection from a proxy carrying many clients costs nothing more;
 * values that do not fit are not kept. */
#define CONN_CACHE_VARS  8
#define CONN_CACHE_BYTES 256
typedef struct {
    const void   *c;               /* the geoip_conf it was made for; NULL:
                                      empty */
    apr_uint32_t  generation;
    int           family;
    unsigned char addr[16];
    int           supervisor;      /* is_supervisor() of addr */
    const char   *values[CONN_CACHE_VARS];
    char          buf[CONN_CACHE_BYTES];
} geoip_conncache;

/* One variable to set. */
typedef struct {
    const char  *var;
    const char  *dbname;           /* NULL: the first database */
    int          db;               /* index, resolved at post_config */
    const char **path;             /* NULL: the network */
    const char  *path_text;
    int          same_as;          /* an earlier variable with the same
                                      database and path, or -1 */
} geoip_env;

typedef struct {
    int                 engine;        /* W4A_UNSET, 0, 1 */
    int                 country_vars;  /* W4A_UNSET, 0, 1 */
    apr_array_header_t *envs;          /* geoip_env; NULL: unset */
    apr_array_header_t *proxies;       /* apr_ipsubnet_t *; NULL: unset */
    const char         *proxy_header;  /* NULL: unset */
    geoip_global       *g;

    /* computed at post_config from the merged settings */
    apr_array_header_t *effective;     /* geoip_env, one per variable */
    apr_array_header_t *names;         /* const char *, every name we own:
                                          effective's, then the supervisor
                                          variable */
    apr_uint32_t        dbmask;
    unsigned char       first[32];     /* bitmap: first characters of the
                                          names, both cases */
    w4a_envhdr_set_t   *strip;         /* request headers removed: names,
                                          strip_always */
} geoip_conf;

/* What post_read_request decided, for putting it back later: one value
 * per name of c->names (NULL: absent). */
typedef struct {
    const geoip_conf   *c;
    const char        **values;
    const apr_table_t  *block_env;     /* the table our entries were added
                                          to as one block (one entry per
                                          value), or NULL */
    int                 block_pos;     /* where the block starts there */
} geoip_req;

/* ------------------------------------------------------------------ */
/* Configuration.                                                      */

static void *create_srv_conf(apr_pool_t *p, server_rec *s)
{
    geoip_conf *c = apr_pcalloc(p, sizeof(*c));
    c->engine = W4A_UNSET;
    c->country_vars = W4A_UNSET;
    c->g = apr_pcalloc(p, sizeof(*c->g));
    c->g->dbs = apr_array_make(p, 2, sizeof(geoip_slot *));
    c->g->interval = W4A_UNSET;
    return c;
}

static void *merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    geoip_conf *base = basev, *add = addv;
    geoip_conf *c = apr_pcalloc(p, sizeof(*c));

    c->engine = add->engine != W4A_UNSET ? add->engine : base->engine;
    c->country_vars = add->country_vars != W4A_UNSET ? add->country_vars
                                                     : base->country_vars;
    /* Lists: the main server's first, then the virtual host's (a variable
     * defined in both takes the virtual host's definition). */
    c->envs = add->envs && base->envs ? apr_array_append(p, base->envs,
                                                         add->envs)
              : add->envs ? add->envs : base->envs;
    c->proxies = add->proxies && base->proxies
                 ? apr_array_append(p, base->proxies, add->proxies)
                 : add->proxies ? add->proxies : base->proxies;
    c->proxy_header = add->proxy_header ? add->proxy_header
                                        : base->proxy_header;
    /* Process-wide: always the main server's. */
    c->g = base->g;
    return c;
}

static geoip_conf *srv_conf(server_rec *s)
{
    return ap_get_module_config(s->module_config, &w4a_geoip_module);
}

static int valid_var_name(const char *s)
{
    if (!apr_isalpha(*s) && *s != '_') {
        return 0;
    }
    for (s++; *s; s++) {
        if (!apr_isalnum(*s) && *s != '_') {
            return 0;
        }
    }
    return 1;
}

static int valid_db_name(const char *s)
{
    if (!*s) {
        return 0;
    }
    for (; *s; s++) {
        if (!apr_isalnum(*s) && *s != '_' && *s != '-') {
            return 0;
        }
    }
    return 1;
}

/* "192.0.2.0/24", "2001:db8::/32" or one address.
 * @return NULL, or why not. */
static const char *parse_cidr(const char *arg, apr_ipsubnet_t **out,
                              apr_pool_t *p)
{
    char *ip = apr_pstrdup(p, arg), *slash = strchr(ip, '/');
    struct sockaddr_storage ss;
    apr_int64_t bits;
    apr_status_t rv;

    if (slash) {
        *slash++ = '\0';
    }
    if (!w4a_geoip_addr_parse(ip, &ss)) {
        return "not an IPv4 or IPv6 address";
    }
    if (slash && !w4a_parse_number(slash, 1, ss.ss_family == AF_INET ? 32
                                                                 : 128,
                                   &bits)) {
        return ss.ss_family == AF_INET
               ? "the prefix length must be 1 to 32"
               : "the prefix length must be 1 to 128";
    }
    if (slash) {
        /* APR would quietly clear bits beyond the prefix: a typo. */
        const unsigned char *a = ss.ss_family == AF_INET
            ? (const unsigned char *)&((struct sockaddr_in *)&ss)->sin_addr
            : (const unsigned char *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
        int len = ss.ss_family == AF_INET ? 4 : 16, i;
        for (i = 0; i < len; i++) {
            int keep = bits - 8 * i;
            unsigned char mask = keep >= 8 ? 0xff : keep <= 0 ? 0
                                 : (unsigned char)(0xff << (8 - keep));
            if (a[i] & ~mask) {
                return "not a network: address bits are set beyond the "
                       "prefix length";
            }
        }
    }
    rv = apr_ipsubnet_create(out, ip, slash, p);
    if (rv != APR_SUCCESS) {
        return apr_psprintf(p, "not a network: %pm", &rv);
    }
    return NULL;
}

static const char *set_engine(cmd_parms *cmd, void *d, int on)
{
    srv_conf(cmd->server)->engine = on;
    return NULL;
}

static const char *set_country_vars(cmd_parms *cmd, void *d, int on)
{
    srv_conf(cmd->server)->country_vars = on;
    return NULL;
}

static const char *add_database(cmd_parms *cmd, void *d, const char *name,
                                const char *path)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    geoip_global *g = srv_conf(cmd->server)->g;
    geoip_slot *slot;
    int i;

    if (err) {
        return err;
    }
    if (!valid_db_name(name)) {
        return "W4AGeoIPDatabase: the name may hold letters, digits, '-' "
               "and '_' only";
    }
    for (i = 0; i < g->dbs->nelts; i++) {
        if (!strcmp(APR_ARRAY_IDX(g->dbs, i, geoip_slot *)->name, name)) {
            return apr_psprintf(cmd->pool, "W4AGeoIPDatabase: %s is "
                                "declared twice", name);
        }
    }
    if (g->dbs->nelts >= MAX_DATABASES) {
        return "W4AGeoIPDatabase: at most 32 databases";
    }
    slot = apr_pcalloc(cmd->pool, sizeof(*slot));
    slot->name = name;
    slot->path = ap_server_root_relative(cmd->pool, path);
    if (!slot->path) {
        return apr_pstrcat(cmd->pool, "W4AGeoIPDatabase: bad path ", path,
                           NULL);
    }
    APR_ARRAY_PUSH(g->dbs, geoip_slot *) = slot;
    return NULL;
}

static const char *add_env(cmd_parms *cmd, void *d, const char *var,
                           const char *path, const char *db)
{
    geoip_conf *c = srv_conf(cmd->server);
    geoip_env *e;

    if (!valid_var_name(var)) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not a variable name "
                            "(letters, digits, '_')", cmd->cmd->name, var);
    }
    if (db && !valid_db_name(db)) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not a database name",
                            cmd->cmd->name, db);
    }
    if (!c->envs) {
        c->envs = apr_array_make(cmd->pool, 4, sizeof(geoip_env));
    }
    e = apr_array_push(c->envs);
    memset(e, 0, sizeof(*e));
    e->var = var;
    e->dbname = db;
    e->db = -1;
    if (path) {
        e->path = w4a_geoip_path_parse(path, cmd->pool);
        if (!e->path) {
            return apr_psprintf(cmd->pool, "W4AGeoIPEnv: '%s' is not a data "
                                "path like country/iso_code", path);
        }
        e->path_text = path;
    }
    return NULL;
}

static const char *set_env(cmd_parms *cmd, void *d, const char *var,
                           const char *path, const char *db)
{
    return add_env(cmd, d, var, path, db);
}

static const char *set_network_env(cmd_parms *cmd, void *d, const char *var,
                                   const char *db)
{
    return add_env(cmd, d, var, NULL, db);
}

static const char *add_proxy(cmd_parms *cmd, void *d, const char *arg)
{
    geoip_conf *c = srv_conf(cmd->server);
    apr_ipsubnet_t *net;
    const char *why = parse_cidr(arg, &net, cmd->pool);

    if (why) {
        return apr_psprintf(cmd->pool, "W4AGeoIPTrustedProxy: %s: %s", arg,
                            why);
    }
    if (!c->proxies) {
        c->proxies = apr_array_make(cmd->pool, 4, sizeof(apr_ipsubnet_t *));
    }
    APR_ARRAY_PUSH(c->proxies, apr_ipsubnet_t *) = net;
    return NULL;
}

static const char *set_proxy_header(cmd_parms *cmd, void *d, const char *arg)
{
    const char *s;
    for (s = arg; *s; s++) {
        if (!apr_isalnum(*s) && *s != '-' && *s != '_') {
            return "W4AGeoIPProxyHeader: expected a header name";
        }
    }
    if (!*arg) {
        return "W4AGeoIPProxyHeader: expected a header name";
    }
    srv_conf(cmd->server)->proxy_header = arg;
    return NULL;
}

static const char *add_supervisor(cmd_parms *cmd, void *d, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    geoip_global *g = srv_conf(cmd->server)->g;
    apr_ipsubnet_t *net;
    const char *why;

    if (err) {
        return err;
    }
    if ((why = parse_cidr(arg, &net, cmd->pool))) {
        return apr_psprintf(cmd->pool, "W4AGeoIPSupervisor: %s: %s", arg,
                            why);
    }
    if (!g->sup_nets) {
        g->sup_nets = apr_array_make(cmd->pool, 4, sizeof(apr_ipsubnet_t *));
    }
    APR_ARRAY_PUSH(g->sup_nets, apr_ipsubnet_t *) = net;
    return NULL;
}

static const char *set_supervisor_file(cmd_parms *cmd, void *d,
                                       const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    geoip_global *g = srv_conf(cmd->server)->g;

    if (err) {
        return err;
    }
    if (g->sup_file) {
        return "W4AGeoIPSupervisorFile: only one file (list several "
               "networks in it)";
    }
    g->sup_file = ap_server_root_relative(cmd->pool, arg);
    if (!g->sup_file) {
        return apr_pstrcat(cmd->pool, "W4AGeoIPSupervisorFile: bad path ",
                           arg, NULL);
    }
    return NULL;
}

static const char *set_supervisor_env(cmd_parms *cmd, void *d,
                                      const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    if (err) {
        return err;
    }
    if (!valid_var_name(arg)) {
        return "W4AGeoIPSupervisorEnv: expected a variable name (letters, "
               "digits, '_')";
    }
    srv_conf(cmd->server)->g->sup_env = arg;
    return NULL;
}

static const char *set_interval(cmd_parms *cmd, void *d, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    apr_int64_t v;

    if (err) {
        return err;
    }
    if (!w4a_parse_number(arg, 0, 86400, &v)) {
        return "W4AGeoIPCheckInterval: expected seconds from 0 (never) to "
               "86400";
    }
    srv_conf(cmd->server)->g->interval = (int)v;
    return NULL;
}

static const command_rec geoip_cmds[] = {
    AP_INIT_FLAG("W4AGeoIPEngine", set_engine, NULL, RSRC_CONF,
                 "Off: no lookups and no variables in this server"),
    AP_INIT_TAKE2("W4AGeoIPDatabase", add_database, NULL, RSRC_CONF,
                  "NAME PATH of a MaxMind DB (the first is the default)"),
    AP_INIT_FLAG("W4AGeoIPCountryVars", set_country_vars, NULL, RSRC_CONF,
                 "GEOIP_COUNTRY_CODE and MM_COUNTRY_CODE from the first "
                 "database (default on)"),
    AP_INIT_TAKE23("W4AGeoIPEnv", set_env, NULL, RSRC_CONF,
                   "VAR data/path [DATABASE]: a variable from a lookup"),
    AP_INIT_TAKE12("W4AGeoIPNetworkEnv", set_network_env, NULL, RSRC_CONF,
                   "VAR [DATABASE]: the network the client address is in"),
    AP_INIT_ITERATE("W4AGeoIPTrustedProxy", add_proxy, NULL, RSRC_CONF,
                    "Proxies (CIDR) whose X-Forwarded-For is believed"),
    AP_INIT_TAKE1("W4AGeoIPProxyHeader", set_proxy_header, NULL, RSRC_CONF,
                  "Header trusted proxies put the client in "
                  "(default X-Forwarded-For)"),
    AP_INIT_ITERATE("W4AGeoIPSupervisor", add_supervisor, NULL, RSRC_CONF,
                    "Supervisor networks (CIDR), exempt from geo rules"),
    AP_INIT_TAKE1("W4AGeoIPSupervisorFile", set_supervisor_file, NULL,
                  RSRC_CONF, "File of supervisor networks, reloaded on "
                  "change"),
    AP_INIT_TAKE1("W4AGeoIPSupervisorEnv", set_supervisor_env, NULL,
                  RSRC_CONF, "The exemption variable (default "
                  DEFAULT_SUP_ENV ")"),
    AP_INIT_TAKE1("W4AGeoIPCheckInterval", set_interval, NULL, RSRC_CONF,
                  "Seconds between checks for new files (default 5)"),
    {NULL}
};

static const char *sup_env(const geoip_global *g)
{
    return g->sup_env ? g->sup_env : DEFAULT_SUP_ENV;
}

/* ------------------------------------------------------------------ */
/* Databases: reference counting, loading, swapping.                   */

static w4a_geoip_db_t *slot_acquire(geoip_slot *slot)
{
    w4a_geoip_db_t *db;
    apr_thread_mutex_lock(slot->lock);
    db = slot->cur;
    if (db) {
        db->refs++;
    }
    apr_thread_mutex_unlock(slot->lock);
    return db;
}

static void slot_release(geoip_slot *slot, w4a_geoip_db_t *db)
{
    int last;
    apr_thread_mutex_lock(slot->lock);
    last = --db->refs == 0;
    apr_thread_mutex_unlock(slot->lock);
    if (last) {
        w4a_geoip_db_close(db, 1);
    }
}

/* Put @a db (one reference, the slot's) in place; the old one is closed
 * when its last lookup is done. */
static void slot_swap(geoip_slot *slot, w4a_geoip_db_t *db)
{
    w4a_geoip_db_t *old;
    apr_thread_mutex_lock(slot->lock);
    old = slot->cur;
    db->refs = 1;
    slot->cur = db;
    if (slot->generation) {
        apr_atomic_inc32(slot->generation);
    }
    slot->loaded_at = apr_time_now();
    slot->error[0] = '\0';
    apr_thread_mutex_unlock(slot->lock);
    if (old) {
        slot_release(slot, old);
    }
}

static void slot_error(geoip_slot *slot, const char *fmt, ...)
{
    va_list ap;
    apr_thread_mutex_lock(slot->lock);
    va_start(ap, fmt);
    apr_vsnprintf(slot->error, sizeof(slot->error), fmt, ap);
    va_end(ap);
    apr_thread_mutex_unlock(slot->lock);
}

static apr_status_t slot_cleanup(void *data)
{
    geoip_slot *slot = data;
    w4a_geoip_db_t *db = slot->cur;
    slot->cur = NULL;
    if (db) {
        slot_release(slot, db);
    }
    return APR_SUCCESS;
}

static const char *fmt_time(apr_pool_t *p, apr_time_t t)
{
    char buf[APR_RFC822_DATE_LEN];
    if (!t) {
        return "never";
    }
    apr_rfc822_date(buf, t);
    return apr_pstrdup(p, buf);
}

/* A digest of a file version's identity, never 0 (0: none yet). */
static apr_uint64_t fid_digest(const w4a_geoip_fid_t *f)
{
    apr_uint64_t h = 14695981039346656037ULL;
    apr_uint64_t v[5];
    int i;

    v[0] = (apr_uint64_t)f->ino;
    v[1] = (apr_uint64_t)f->dev;
    v[2] = (apr_uint64_t)f->size;
    v[3] = (apr_uint64_t)f->mtime;
    v[4] = (apr_uint64_t)f->ctime;
    for (i = 0; i < 5; i++) {
        h = (h ^ v[i]) * 1099511628211ULL;
        h ^= h >> 29;
    }
    return h | 1;
}

/* Note that this process got to file version @a f (loaded or refused).
 * @return 1 when it is the first process of the node to get to it (the
 * node-wide counters then count it), 0 when another one did already.  A
 * version replaced again before every child got to it may count twice
 * (a child still on the older one moves CNT_FILE back). */
static int node_first_at(apr_uint64_t *digest, const w4a_geoip_fid_t *f)
{
    apr_uint64_t want = fid_digest(f), old;

    if (!digest) {
        return 0;
    }
    for (;;) {
        old = apr_atomic_read64(digest);
        if (old == want) {
            return 0;
        }
        if (apr_atomic_cas64(digest, want, old) == old) {
            return 1;
        }
    }
}

static int node_first(geoip_slot *slot, const w4a_geoip_fid_t *f)
{
    return node_first_at(slot->counters ? &slot->counters[CNT_FILE] : NULL,
                         f);
}

/* Load at start-up (parent, post_config): no wait for stability (there
 * is no earlier check), but the copy must still be of one version. */
static void slot_load_at_start(geoip_global *g, geoip_slot *slot,
                               apr_pool_t *ptemp)
{
    w4a_geoip_db_t *db;
    const char *why;
    apr_status_t rv;

    rv = w4a_geoip_fid_stat(&slot->seen, slot->path, ptemp);
    slot->tried = slot->seen;
    if (rv != APR_SUCCESS) {
        slot_error(slot, "%s: missing at start-up (%pm)", slot->path, &rv);
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, g->server, W4ALOGNO(00313)
                     "database %s: %s is missing; httpd serves without its "
                     "variables until the file appears", slot->name,
                     slot->path);
        return;
    }
    rv = w4a_geoip_db_load(&db, slot->path, &slot->seen, g->dir, slot->name,
                           &why, ptemp);
    if (rv == APR_EAGAIN) {
        memset(&slot->tried, 0, sizeof(slot->tried));
        slot->tried.exists = -1;            /* matches nothing: retry */
        slot_error(slot, "%s: changed while being read at start-up",
                   slot->path);
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, g->server, W4ALOGNO(00316)
                     "database %s: %s changed while being read at start-up; "
                     "the children retry once it is stable", slot->name,
                     slot->path);
        return;
    }
    node_first(slot, &slot->seen);          /* the node starts with it */
    if (rv != APR_SUCCESS) {
        slot_error(slot, "%s: refused at start-up: %s", slot->path, why);
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, g->server, W4ALOGNO(00314)
                     "database %s: %s refused at start-up: %s; httpd serves "
                     "without its variables until a valid file replaces it",
                     slot->name, slot->path, why);
        return;
    }
    slot_swap(slot, db);
    if (slot->counters) {
        apr_atomic_set64(&slot->counters[CNT_LAST_RELOAD],
                         (apr_uint64_t)apr_time_sec(slot->loaded_at));
    }
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, g->server, W4ALOGNO(00315)
                 "database %s: %s loaded (%s, IPv%u, build epoch %"
                 APR_UINT64_T_FMT ")", slot->name, slot->path,
                 db->mmdb.metadata.database_type,
                 (unsigned)db->mmdb.metadata.ip_version,
                 (apr_uint64_t)db->mmdb.metadata.build_epoch);
}

/* One check of the watcher (in a child). */
static void slot_check(geoip_global *g, geoip_slot *slot, apr_pool_t *p)
{
    w4a_geoip_fid_t now;
    w4a_geoip_db_t *db;
    const char *why;
    apr_status_t rv;

    w4a_geoip_fid_stat(&now, slot->path, p);
    apr_thread_mutex_lock(slot->lock);
    slot->checked_at = apr_time_now();
    apr_thread_mutex_unlock(slot->lock);
    if (w4a_geoip_fid_same(&now, &slot->tried)) {
        slot->seen = now;
        return;                             /* nothing new */
    }
    if (!now.exists) {
        if (slot->seen.exists) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, g->server,
                         W4ALOGNO(00312) "database %s: %s is gone; the "
                         "database in use stays", slot->name, slot->path);
        }
        slot->seen = now;
        slot->tried = now;
        return;
    }
    if (!w4a_geoip_fid_same(&now, &slot->seen)) {
        /* New or still changing: wait until a check finds it unchanged. */
        slot->seen = now;
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, g->server, W4ALOGNO(00317)
                     "database %s: %s changed; waiting until it is stable",
                     slot->name, slot->path);
        return;
    }
    rv = w4a_geoip_db_load(&db, slot->path, &now, g->dir, slot->name, &why,
                           p);
    if (rv == APR_EAGAIN) {
        memset(&slot->seen, 0, sizeof(slot->seen));
        slot->seen.exists = -1;             /* wait for another stable check */
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, g->server, W4ALOGNO(00318)
                     "database %s: %s changed while being copied; retrying",
                     slot->name, slot->path);
        return;
    }
    slot->tried = now;
    if (rv != APR_SUCCESS) {
        apr_atomic_inc32(&slot->refused);
        if (node_first(slot, &now)) {
            apr_atomic_inc64(&slot->counters[CNT_REFUSED]);
        }
        slot_error(slot, "%s: new file refused: %s", slot->path, why);
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, g->server, W4ALOGNO(00310)
                     "database %s: new file %s refused: %s; %s", slot->name,
                     slot->path, why, slot->cur ? "the database in use stays"
                     : "still no database, its variables stay absent");
        return;
    }
    slot_swap(slot, db);
    apr_atomic_inc32(&slot->reloads);
    if (node_first(slot, &now)) {
        apr_atomic_inc64(&slot->counters[CNT_RELOADS]);
        apr_atomic_set64(&slot->counters[CNT_LAST_RELOAD],
                         (apr_uint64_t)apr_time_sec(slot->loaded_at));
    }
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, g->server, W4ALOGNO(00311)
                 "database %s: reloaded from %s (%s, IPv%u, build epoch %"
                 APR_UINT64_T_FMT ")", slot->name, slot->path,
                 db->mmdb.metadata.database_type,
                 (unsigned)db->mmdb.metadata.ip_version,
                 (apr_uint64_t)db->mmdb.metadata.build_epoch);
}

/* ------------------------------------------------------------------ */
/* Supervisor file.                                                    */

static void netlist_release(geoip_global *g, geoip_netlist *l)
{
    int last;
    apr_thread_mutex_lock(g->sup_lock);
    last = --l->refs == 0;
    apr_thread_mutex_unlock(g->sup_lock);
    if (last) {
        apr_pool_destroy(l->pool);
    }
}

static geoip_netlist *netlist_acquire(geoip_global *g)
{
    geoip_netlist *l;
    apr_thread_mutex_lock(g->sup_lock);
    l = g->sup_list;
    if (l) {
        l->refs++;
    }
    apr_thread_mutex_unlock(g->sup_lock);
    return l;
}

/* Read the supervisor file; the whole file or nothing.
 * @return the list, or NULL with *why. */
static geoip_netlist *netlist_read(const char *path, const char **why,
                                   apr_pool_t *ptemp)
{
    apr_pool_t *pool;
    geoip_netlist *l;
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
            const char *bad = parse_cidr(tok, &net, pool);
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

static void sup_swap(geoip_global *g, geoip_netlist *l)
{
    geoip_netlist *old;
    apr_thread_mutex_lock(g->sup_lock);
    old = g->sup_list;
    g->sup_list = l;
    g->sup_loaded_at = apr_time_now();
    g->sup_error[0] = '\0';
    apr_thread_mutex_unlock(g->sup_lock);
    /* after the swap: a connection's cached exemption, taken under the
     * generation read before, is not used again */
    apr_atomic_inc32(&g->generation);
    if (old) {
        netlist_release(g, old);
    }
}

static void sup_set_error(geoip_global *g, const char *why)
{
    apr_thread_mutex_lock(g->sup_lock);
    apr_cpystrn(g->sup_error, why, sizeof(g->sup_error));
    apr_thread_mutex_unlock(g->sup_lock);
}

/* At start-up (at_start) or from the watcher. */
static void sup_check(geoip_global *g, apr_pool_t *p, int at_start)
{
    w4a_geoip_fid_t now;
    geoip_netlist *l;
    const char *why;

    w4a_geoip_fid_stat(&now, g->sup_file, p);
    if (!at_start && w4a_geoip_fid_same(&now, &g->sup_tried)) {
        return;
    }
    if (!at_start && !w4a_geoip_fid_same(&now, &g->sup_seen)) {
        g->sup_seen = now;                  /* wait until it is stable */
        return;
    }
    g->sup_seen = g->sup_tried = now;
    if (at_start && now.exists) {
        node_first_at(g->sup_shared ? &g->sup_shared[SUP_FILE] : NULL, &now);
    }
    if (!now.exists) {
        sup_set_error(g, apr_psprintf(p, "%s is missing", g->sup_file));
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, g->server, W4ALOGNO(00320)
                     "supervisor file %s is missing; %s", g->sup_file,
                     g->sup_list ? "the list in use stays"
                                 : "only W4AGeoIPSupervisor networks apply");
        return;
    }
    l = netlist_read(g->sup_file, &why, p);
    if (!at_start
        && node_first_at(g->sup_shared ? &g->sup_shared[SUP_FILE] : NULL,
                         &now)) {
        apr_atomic_inc64(&g->sup_shared[l ? SUP_RELOADS : SUP_REFUSED]);
    }
    if (!l) {
        sup_set_error(g, apr_psprintf(p, "%s refused: %s", g->sup_file, why));
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, g->server, W4ALOGNO(00321)
                     "supervisor file %s refused: %s; %s", g->sup_file, why,
                     g->sup_list ? "the list in use stays"
                                 : "only W4AGeoIPSupervisor networks apply");
        return;
    }
    sup_swap(g, l);
    ap_log_error(APLOG_MARK, at_start ? APLOG_INFO : APLOG_NOTICE, 0,
                 g->server, W4ALOGNO(00322) "supervisor file %s %s: %d "
                 "networks", g->sup_file, at_start ? "loaded" : "reloaded",
                 l->nets->nelts);
}

static apr_status_t sup_cleanup(void *data)
{
    geoip_global *g = data;
    geoip_netlist *l = g->sup_list;
    g->sup_list = NULL;
    if (l) {
        netlist_release(g, l);
    }
    return APR_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* The watcher thread (one per child).                                 */

static void *APR_THREAD_FUNC watcher(apr_thread_t *thd, void *data)
{
    geoip_global *g = data;
    apr_pool_t *p;
    int i;

    apr_pool_create(&p, apr_thread_pool_get(thd));
    apr_thread_mutex_lock(g->wlock);
    while (!g->stop) {
        apr_thread_cond_timedwait(g->wcond, g->wlock,
                                  apr_time_from_sec(g->interval));
        if (g->stop) {
            break;
        }
        apr_thread_mutex_unlock(g->wlock);
        for (i = 0; i < g->dbs->nelts; i++) {
            slot_check(g, APR_ARRAY_IDX(g->dbs, i, geoip_slot *), p);
        }
        if (g->sup_file) {
            sup_check(g, p, 0);
        }
        apr_pool_clear(p);
        apr_thread_mutex_lock(g->wlock);
    }
    apr_thread_mutex_unlock(g->wlock);
    return NULL;
}

/* Before pchild's sub-pools (the thread's among them) go. */
static apr_status_t watcher_stop(void *data)
{
    geoip_global *g = data;
    apr_status_t rv;

    apr_thread_mutex_lock(g->wlock);
    g->stop = 1;
    apr_thread_cond_signal(g->wcond);
    apr_thread_mutex_unlock(g->wlock);
    apr_thread_join(&rv, g->thread);
    return APR_SUCCESS;
}

static void geoip_child_init(apr_pool_t *pchild, server_rec *s)
{
    geoip_global *g = srv_conf(s)->g;
    apr_status_t rv;

    if (!g->server || g->interval == 0
        || (!g->dbs->nelts && !g->sup_file)) {
        return;
    }
    g->stop = 0;
    if ((rv = apr_thread_mutex_create(&g->wlock, APR_THREAD_MUTEX_DEFAULT,
                                      pchild)) != APR_SUCCESS
        || (rv = apr_thread_cond_create(&g->wcond, pchild)) != APR_SUCCESS
        || (rv = apr_thread_create(&g->thread, NULL, watcher, g, pchild))
           != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, W4ALOGNO(00330)
                     "cannot start the database watcher thread; this "
                     "process keeps the databases it has");
        return;
    }
    apr_pool_pre_cleanup_register(pchild, g, watcher_stop);
}

/* ------------------------------------------------------------------ */
/* Start-up.                                                           */

/* The private directory of the copies, owned by the children's user;
 * copies left by an earlier generation are removed. */
static apr_status_t make_private_dir(geoip_global *g, apr_pool_t *pconf,
                                     apr_pool_t *ptemp)
{
    apr_dir_t *dir;
    apr_finfo_t fi;
    apr_status_t rv;

    g->dir = ap_runtime_dir_relative(pconf, "w4a-geoip");
    rv = apr_dir_make(g->dir, APR_FPROT_UREAD | APR_FPROT_UWRITE
                      | APR_FPROT_UEXECUTE, ptemp);
    if (rv != APR_SUCCESS && !APR_STATUS_IS_EEXIST(rv)) {
        return rv;
    }
    if (geteuid() == 0 && chown(g->dir, ap_unixd_config.user_id,
                                ap_unixd_config.group_id) != 0) {
        return APR_FROM_OS_ERROR(errno);
    }
    if (apr_dir_open(&dir, g->dir, ptemp) == APR_SUCCESS) {
        while (apr_dir_read(&fi, APR_FINFO_NAME | APR_FINFO_TYPE, dir)
               == APR_SUCCESS) {
            if (fi.filetype == APR_REG) {
                apr_file_remove(apr_pstrcat(ptemp, g->dir, "/", fi.name,
                                            NULL), ptemp);
            }
        }
        apr_dir_close(dir);
    }
    return APR_SUCCESS;
}

/* The variables of one (merged) server, each once, databases resolved. */
static const char *compute_effective(geoip_conf *c, apr_pool_t *p)
{
    geoip_global *g = c->g;
    apr_array_header_t *all = apr_array_make(p, 4, sizeof(geoip_env));
    apr_hash_t *seen = apr_hash_make(p);
    int i, j;

    if (c->country_vars != 0 && g->dbs->nelts) {
        for (i = 0; country_vars[i]; i++) {
            geoip_env *e = apr_array_push(all);
            memset(e, 0, sizeof(*e));
            e->var = country_vars[i];
            e->path = w4a_geoip_path_parse(COUNTRY_PATH, p);
            e->path_text = COUNTRY_PATH;
        }
    }
    if (c->envs) {
        apr_array_cat(all, c->envs);
    }
    c->effective = apr_array_make(p, all->nelts, sizeof(geoip_env));
    c->names = apr_array_make(p, all->nelts + 1, sizeof(const char *));
    c->dbmask = 0;
    /* The last definition of a variable wins. */
    for (i = all->nelts - 1; i >= 0; i--) {
        geoip_env e = APR_ARRAY_IDX(all, i, geoip_env);
        char *key = apr_pstrdup(p, e.var);
        ap_str_tolower(key);            /* the environment ignores case */
        if (apr_hash_get(seen, key, APR_HASH_KEY_STRING)) {
            continue;
        }
        apr_hash_set(seen, key, APR_HASH_KEY_STRING, "");
        if (!g->dbs->nelts) {
            return apr_psprintf(p, "%s needs a W4AGeoIPDatabase", e.var);
        }
        e.db = e.dbname ? -1 : 0;
        for (j = 0; e.dbname && j < g->dbs->nelts; j++) {
            if (!strcmp(APR_ARRAY_IDX(g->dbs, j, geoip_slot *)->name,
                        e.dbname)) {
                e.db = j;
            }
        }
        if (e.db < 0) {
            return apr_psprintf(p, "%s: no W4AGeoIPDatabase named %s", e.var,
                                e.dbname);
        }
        if (!strcasecmp(e.var, sup_env(g))) {
            return apr_psprintf(p, "%s is the supervisor variable "
                                "(W4AGeoIPSupervisorEnv)", e.var);
        }
        APR_ARRAY_PUSH(c->effective, geoip_env) = e;
        APR_ARRAY_PUSH(c->names, const char *) = e.var;
        c->dbmask |= 1u << e.db;
    }
    APR_ARRAY_PUSH(c->names, const char *) = sup_env(g);
    memset(c->first, 0, sizeof(c->first));
    for (i = 0; i < c->names->nelts; i++) {
        unsigned char ch = APR_ARRAY_IDX(c->names, i, const char *)[0];
        unsigned char lo = apr_tolower(ch), up = apr_toupper(ch);
        c->first[lo >> 3] |= 1 << (lo & 7);
        c->first[up >> 3] |= 1 << (up & 7);
    }
    /* our names first: a header is logged as the one it stands for */
    if (w4a_envhdr_set_make(&c->strip,
                            (const char *const *)c->names->elts,
                            c->names->nelts, p) != APR_SUCCESS
        || w4a_envhdr_set_add(&c->strip, c->strip, strip_always,
                              STRIP_ALWAYS, p) != APR_SUCCESS) {
        return "cannot compile the names of the request headers removed";
    }
    /* GEOIP_COUNTRY_CODE and MM_COUNTRY_CODE are one value: read once. */
    for (i = 0; i < c->effective->nelts; i++) {
        geoip_env *e = &APR_ARRAY_IDX(c->effective, i, geoip_env);
        e->same_as = -1;
        for (j = 0; j < i && e->path; j++) {
            geoip_env *o = &APR_ARRAY_IDX(c->effective, j, geoip_env);
            if (o->db == e->db && o->path && !strcmp(o->path_text,
                                                     e->path_text)) {
                e->same_as = j;
                break;
            }
        }
    }
    return NULL;
}

/* check_config runs for "httpd -t" too: the variables' databases are
 * resolved there, with errors on the console. */
static int geoip_check_config(apr_pool_t *pconf, apr_pool_t *plog,
                              apr_pool_t *ptemp, server_rec *s)
{
    server_rec *sv;

    for (sv = s; sv; sv = sv->next) {
        geoip_conf *c = srv_conf(sv);
        const char *why = compute_effective(c, pconf);
        if (why) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, sv, W4ALOGNO(00340)
                         "W4AGeoIPEnv: %s", why);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    return OK;
}

static int geoip_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                             apr_pool_t *ptemp, server_rec *s)
{
    geoip_global *g = srv_conf(s)->g;
    apr_shm_t *shm = NULL;
    apr_uint64_t *counters = NULL;
    apr_status_t rv;
    int i;

    g->server = s;
    if ((rv = apr_thread_mutex_create(&g->sup_lock, APR_THREAD_MUTEX_DEFAULT,
                                      pconf)) != APR_SUCCESS) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    apr_pool_cleanup_register(pconf, g, sup_cleanup, apr_pool_cleanup_null);
    /* the database counters, the count of removed headers, then the
     * supervisor file's */
    rv = apr_shm_create(&shm, sizeof(apr_uint64_t) * (CNT_MAX
                        * g->dbs->nelts + 1 + SUP_MAX), NULL, pconf);
    if (rv == APR_SUCCESS) {
        counters = apr_shm_baseaddr_get(shm);
        memset(counters, 0, apr_shm_size_get(shm));
        g->headers_removed = counters + CNT_MAX * g->dbs->nelts;
        g->sup_shared = g->headers_removed + 1;
    }
    else {
        g->headers_removed = NULL;
        g->sup_shared = NULL;
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s, W4ALOGNO(00342)
                     "no shared memory for the status counters; they stay 0");
    }
    if (g->sup_file) {
        sup_check(g, ptemp, 1);
    }
    if (!g->dbs->nelts) {
        return OK;
    }
    if ((rv = make_private_dir(g, pconf, ptemp)) != APR_SUCCESS) {
        /* httpd still serves, without the databases (as with missing
         * files); the watchers retry. */
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, W4ALOGNO(00341)
                     "cannot make the private directory %s of the database "
                     "copies; serving without databases", g->dir);
    }
    for (i = 0; i < g->dbs->nelts; i++) {
        geoip_slot *slot = APR_ARRAY_IDX(g->dbs, i, geoip_slot *);
        if ((rv = apr_thread_mutex_create(&slot->lock,
                                          APR_THREAD_MUTEX_DEFAULT, pconf))
            != APR_SUCCESS) {
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        slot->counters = counters ? counters + i * CNT_MAX : NULL;
        slot->generation = &g->generation;
        apr_pool_cleanup_register(pconf, slot, slot_cleanup,
                                  apr_pool_cleanup_null);
        slot_load_at_start(g, slot, ptemp);
    }
    return OK;
}

/* ------------------------------------------------------------------ */
/* Requests.                                                           */

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

/* The client: the peer (as mod_remoteip left it), or, when that is a
 * trusted proxy, X-Forwarded-For walked right to left past trusted
 * proxies to the first untrusted address.  A malformed entry stops the
 * walk at the last trusted hop: never the first entry, which anybody
 * can write. */
static apr_sockaddr_t *client_addr(request_rec *r, const geoip_conf *c)
{
    apr_sockaddr_t *cur = r->useragent_addr;
    const char *hdr;
    char *list, *end;

    if (!cur || !c->proxies || !in_nets(c->proxies, cur)) {
        return cur;
    }
    hdr = apr_table_getm(r->pool, r->headers_in,
                         c->proxy_header ? c->proxy_header : DEFAULT_PROXY_HDR);
    if (!hdr) {
        return cur;
    }
    list = apr_pstrdup(r->pool, hdr);
    end = list + strlen(list);
    for (;;) {
        struct sockaddr_storage ss;
        apr_sockaddr_t *sa;
        char *comma, *tok;

        /* the last entry of list[0, end) */
        *end = '\0';
        comma = strrchr(list, ',');
        tok = comma ? comma + 1 : list;
        while (*tok == ' ' || *tok == '\t') {
            tok++;
        }
        while (end > tok && (end[-1] == ' ' || end[-1] == '\t')) {
            *--end = '\0';
        }
        if (!w4a_geoip_addr_parse(tok, &ss)
            || apr_sockaddr_info_get(&sa, tok, APR_UNSPEC, 0, 0, r->pool)
               != APR_SUCCESS) {
            if (APLOGrdebug(r)) {
                char *hop = NULL;
                apr_sockaddr_ip_get(&hop, cur);
                ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, W4ALOGNO(00301)
                              "%s entry '%s' is not an address; the client "
                              "is the last trusted hop %s",
                              c->proxy_header ? c->proxy_header
                                              : DEFAULT_PROXY_HDR,
                              ap_escape_logitem(r->pool, tok),
                              hop ? hop : "-");
            }
            return cur;
        }
        cur = sa;
        if (!in_nets(c->proxies, cur) || !comma) {
            return cur;
        }
        end = comma;
    }
}

static int is_supervisor(geoip_global *g, apr_sockaddr_t *sa)
{
    geoip_netlist *l;
    int hit;

    if (!sa) {
        return 0;
    }
    if (in_nets(g->sup_nets, sa)) {
        return 1;
    }
    if (!g->sup_file || !(l = netlist_acquire(g))) {
        return 0;
    }
    hit = in_nets(l->nets, sa);
    netlist_release(g, l);
    return hit;
}

static void count(geoip_slot *slot, int which)
{
    if (slot->counters) {
        apr_atomic_inc64(&slot->counters[which]);
    }
}

static int may_be_ours(const geoip_conf *c, const char *key)
{
    unsigned char ch = (unsigned char)key[0];
    return c->first[ch >> 3] & (1 << (ch & 7));
}

/* Whether r's environment holds exactly our entries, as we put them: one
 * pass over the table, our own entries recognised by their key and value
 * pointers (the very strings we put there), any other entry whose name is
 * one of ours a change.  1: in place; 0: changed; -1: no entry has any
 * of our names (the first put of a request whose table mod_w4a_vhost's
 * W4A_* made non-empty). */
static int values_in_place(request_rec *r, const geoip_req *rq)
{
    const geoip_conf *c = rq->c;
    const apr_array_header_t *h = apr_table_elts(r->subprocess_env);
    const apr_table_entry_t *e = (const apr_table_entry_t *)h->elts;
    const char *const *names = (const char *const *)c->names->elts;
    int i, j, found = 0, present = 0, from = 0;

    for (j = 0; j < c->names->nelts; j++) {
        present += rq->values[j] != NULL;
    }
    if (rq->block_env == r->subprocess_env
        && rq->block_pos + present <= h->nelts) {
        /* Added as one block after entries none of which had our names:
         * if the block still stands where it was, key and value pointers
         * ours, no entry before it can have changed into one of ours
         * (a set keeps its key, an unset or a sort moves the block, an add
         * comes after it), so only the entries after it are looked at. */
        for (i = rq->block_pos, j = 0; j < c->names->nelts; j++) {
            if (rq->values[j]) {
                if (e[i].key != names[j] || e[i].val != rq->values[j]) {
                    break;
                }
                i++;
            }
        }
        if (j == c->names->nelts) {
            found = present;
            from = rq->block_pos + present;
        }
    }
    for (i = from; i < h->nelts; i++) {
        if (!e[i].key || !may_be_ours(c, e[i].key)) {
            continue;
        }
        for (j = 0; j < c->names->nelts; j++) {
            if (e[i].key == names[j]) {
                if (e[i].val != rq->values[j]) {
                    return 0;
                }
                found++;
                break;
            }
        }
        if (j < c->names->nelts) {
            continue;
        }
        for (j = 0; j < c->names->nelts; j++) {
            if (!strcasecmp(e[i].key, names[j])) {
                return 0;           /* set by someone else */
            }
        }
    }
    if (found == present) {
        return 1;
    }
    return found ? 0 : -1;
}

/* Our names in r's environment hold the lookup's values. */
static void put_values(request_rec *r, geoip_req *rq)
{
    const apr_array_header_t *names = rq->c->names;
    int i, in_place;

    in_place = apr_is_empty_table(r->subprocess_env)
               ? -1 : values_in_place(r, rq);
    if (in_place < 0) {
        /* none of our names there: added, without setn's search, as one
         * block that values_in_place() finds again cheaply */
        rq->block_env = r->subprocess_env;
        rq->block_pos = apr_table_elts(r->subprocess_env)->nelts;
        for (i = 0; i < names->nelts; i++) {
            if (rq->values[i]) {
                apr_table_addn(r->subprocess_env,
                               APR_ARRAY_IDX(names, i, const char *),
                               rq->values[i]);
            }
        }
        return;
    }
    if (in_place) {
        return;
    }
    /* Something changed: set every name (apr_table_setn also drops
     * duplicates someone may have added after ours). */
    for (i = 0; i < names->nelts; i++) {
        const char *n = APR_ARRAY_IDX(names, i, const char *);
        if (rq->values[i]) {
            apr_table_setn(r->subprocess_env, n, rq->values[i]);
        }
        else {
            apr_table_unset(r->subprocess_env, n);
        }
    }
}

static geoip_conncache *conn_cache(conn_rec *conn)
{
    geoip_conncache *cc = ap_get_module_config(conn->conn_config,
                                               &w4a_geoip_module);
    if (!cc) {
        cc = apr_pcalloc(conn->pool, sizeof(*cc));
        ap_set_module_config(conn->conn_config, &w4a_geoip_module, cc);
    }
    return cc;
}

static int conn_cache_hit(const geoip_conncache *cc, const geoip_conf *c,
                          apr_uint32_t gen, const apr_sockaddr_t *sa)
{
    return cc->c == c && cc->generation == gen && cc->family == sa->family
           && sa->ipaddr_len <= (int)sizeof(cc->addr)
           && !memcmp(cc->addr, sa->ipaddr_ptr, sa->ipaddr_len);
}

static void conn_cache_store(geoip_conncache *cc, const geoip_conf *c,
                             apr_uint32_t gen, const apr_sockaddr_t *sa,
                             const char **values, int n, int supervisor)
{
    apr_size_t used = 0;
    int i;

    cc->c = NULL;
    if (n > CONN_CACHE_VARS || sa->ipaddr_len > (int)sizeof(cc->addr)) {
        return;
    }
    for (i = 0; i < n; i++) {
        apr_size_t len;
        if (!values[i]) {
            cc->values[i] = NULL;
            continue;
        }
        len = strlen(values[i]) + 1;
        if (used + len > sizeof(cc->buf)) {
            return;                         /* does not fit: not kept */
        }
        memcpy(cc->buf + used, values[i], len);
        cc->values[i] = cc->buf + used;
        used += len;
    }
    cc->generation = gen;
    cc->supervisor = supervisor;
    cc->family = sa->family;
    memcpy(cc->addr, sa->ipaddr_ptr, sa->ipaddr_len);
    cc->c = c;
}

static int configured(const geoip_global *g)
{
    return g->dbs->nelts || g->sup_nets || g->sup_file;
}

static void header_removed(void *baton, const char *header, const char *var)
{
    request_rec *r = baton;
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, W4ALOGNO(00302)
                  "request header %s removed: it stands for %s "
                  "(mod_w4a_geoip's variables)",
                  ap_escape_logitem(r->pool, header), var);
}

/* First of all: mod_setenvif looks a name up among the request headers
 * before the environment and matches its regexes against header names
 * ("SetEnvIfNoCase ^geoip.country.code$" matches "Geoip-Country-Code"),
 * and CGI and PHP see HTTP_GEOIP_COUNTRY_CODE.  Headers standing for our
 * names are removed, with or without databases, engine on or off (where
 * customers' geo rules then find nothing rather than what a client
 * sent).  Sub-requests and internal redirects copy the cleaned headers. */
static int geoip_strip_headers(request_rec *r)
{
    geoip_conf *c = srv_conf(r->server);
    int n;

    if (!c->strip || r->main || r->prev) {
        return DECLINED;
    }
    n = w4a_envhdr_strip(c->strip, r->headers_in,
                         APLOGrdebug(r) ? header_removed : NULL, r);
    if (n && c->g->headers_removed) {
        apr_atomic_add64(c->g->headers_removed, n);
    }
    return DECLINED;
}

static int geoip_post_read_request(request_rec *r)
{
    geoip_conf *c = srv_conf(r->server);
    geoip_global *g = c->g;
    apr_sockaddr_t *client;
    geoip_conncache *cc = NULL;
    apr_uint32_t gen = 0;
    geoip_req *rq;
    int i, d, nvars, supervisor = 0;

    /* Nothing to say (not configured, or off here): nothing said, not
     * even the exemption variable. */
    if (!c->names || c->engine == 0 || !configured(g)) {
        return DECLINED;
    }
    nvars = c->effective->nelts;
    rq = apr_pcalloc(r->pool, sizeof(*rq));
    rq->c = c;
    rq->values = apr_pcalloc(r->pool, sizeof(const char *) * (nvars + 1));
    client = client_addr(r, c);
    /* the generation before the supervisor list and the databases are
     * read: a change meanwhile makes what is stored below a miss */
    if (client) {
        cc = conn_cache(r->connection);
        gen = apr_atomic_read32(&g->generation);
        if (conn_cache_hit(cc, c, gen, client)) {
            memcpy(rq->values, cc->values, sizeof(const char *) * nvars);
            rq->values[nvars] = cc->supervisor ? "1" : "0";
            client = NULL;                  /* no lookup */
        }
    }
    if (client || !cc) {
        supervisor = is_supervisor(g, client);
        rq->values[nvars] = supervisor ? "1" : "0";
    }
    for (d = 0; client && d < g->dbs->nelts; d++) {
        geoip_slot *slot;
        w4a_geoip_db_t *db;
        w4a_geoip_result_t res;
        apr_status_t rv;

        if (!(c->dbmask & (1u << d))) {
            continue;
        }
        slot = APR_ARRAY_IDX(g->dbs, d, geoip_slot *);
        if (!(db = slot_acquire(slot))) {
            continue;                       /* no database: no variables */
        }
        rv = w4a_geoip_lookup(db, (const struct sockaddr *)&client->sa, &res);
        count(slot, CNT_LOOKUPS);
        if (rv == APR_SUCCESS) {
            for (i = 0; i < nvars; i++) {
                geoip_env *e = &APR_ARRAY_IDX(c->effective, i, geoip_env);
                if (e->db != d) {
                    continue;
                }
                rq->values[i] = e->same_as >= 0 ? rq->values[e->same_as]
                                : e->path ? w4a_geoip_value_cached(
                                                db, &res, e->path, r->pool)
                                : w4a_geoip_network(&res, r->pool);
            }
        }
        else if (rv == APR_NOTFOUND) {
            count(slot, CNT_MISSES);
        }
        else {
            count(slot, CNT_ERRORS);
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, W4ALOGNO(00303)
                          "database %s: lookup of %s failed: %s", slot->name,
                          client == r->useragent_addr ? r->useragent_ip
                                                      : "the client",
                          MMDB_strerror(res.mmdb_error));
        }
        slot_release(slot, db);
    }
    if (client && cc) {
        conn_cache_store(cc, c, gen, client, rq->values, nvars, supervisor);
    }
    ap_set_module_config(r->request_config, &w4a_geoip_module, rq);
    put_values(r, rq);
    return DECLINED;
}

/* Before the handler, after every phase in which per-directory
 * configuration (a customer's .htaccess: SetEnvIf, SetEnv, RewriteRule
 * [E=]) can set variables, and at the start of internal redirects (whose
 * environment httpd renamed to REDIRECT_*): our variables are the
 * lookup's again.  (Not also after per-directory SetEnvIf: what a
 * customer sets there only reaches its own later rules, and a check per
 * phase costs every request.) */
static int geoip_restore(request_rec *r)
{
    request_rec *r0 = w4a_initial_request(r);
    geoip_req *rq = ap_get_module_config(r0->request_config,
                                         &w4a_geoip_module);
    if (rq) {
        put_values(r, rq);
    }
    return DECLINED;
}

static int geoip_translate_name(request_rec *r)
{
    if (r->prev || r->main) {
        geoip_restore(r);
    }
    return DECLINED;
}

/* ------------------------------------------------------------------ */
/* Status.                                                             */

static void json_str(request_rec *r, const char *s)
{
    if (!s) {
        ap_rputs("null", r);
        return;
    }
    ap_rputc('"', r);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            ap_rputc('\\', r);
            ap_rputc(ch, r);
        }
        else if (ch < 0x20) {
            ap_rprintf(r, "\\u%04x", ch);
        }
        else {
            ap_rputc(ch, r);
        }
    }
    ap_rputc('"', r);
}

static apr_int64_t epoch_sec(apr_time_t t)
{
    return t ? (apr_int64_t)apr_time_sec(t) : 0;
}

/*
 * Node-wide figures (shared memory, the same whichever child answers) at
 * the top of each object; what only the answering process knows (the
 * database it has loaded, its own checks and errors) under
 * "this_process", with its pid, so that nobody reads it as the node's.
 */
static int geoip_status_handler(request_rec *r)
{
    geoip_global *g;
    geoip_netlist *l;
    int i, k, rv;

    if (!w4a_status_begin(r, STATUS_HANDLER, &rv)) {
        return rv;
    }
    g = srv_conf(r->server)->g;
    ap_rprintf(r, "{\"module\":\"mod_w4a_geoip\","
               "\"check_interval\":%d,\"headers_removed\":%"
               APR_UINT64_T_FMT ",\"this_process\":{\"pid\":%ld},"
               "\"databases\":[",
               g->interval == W4A_UNSET ? DEFAULT_INTERVAL : g->interval,
               g->headers_removed ? apr_atomic_read64(g->headers_removed)
                                  : 0, (long)getpid());
    for (i = 0; i < g->dbs->nelts; i++) {
        geoip_slot *slot = APR_ARRAY_IDX(g->dbs, i, geoip_slot *);
        w4a_geoip_db_t *db = slot->lock ? slot_acquire(slot) : NULL;

        ap_rputs(i ? ",{\"name\":" : "{\"name\":", r);
        json_str(r, slot->name);
        ap_rputs(",\"path\":", r);
        json_str(r, slot->path);
        for (k = 0; k < CNT_SHOWN; k++) {
            ap_rprintf(r, ",\"%s\":%" APR_UINT64_T_FMT, counter_names[k],
                       slot->counters ? apr_atomic_read64(&slot->counters[k])
                                      : 0);
        }
        ap_rprintf(r, ",\"last_reload\":%" APR_UINT64_T_FMT,
                   slot->counters
                   ? apr_atomic_read64(&slot->counters[CNT_LAST_RELOAD]) : 0);
        ap_rprintf(r, ",\"this_process\":{\"pid\":%ld,\"loaded\":%s",
                   (long)getpid(), db ? "true" : "false");
        if (db) {
            const MMDB_metadata_s *md = &db->mmdb.metadata;
            ap_rputs(",\"copy\":", r);
            json_str(r, db->copy_path);
            ap_rputs(",\"type\":", r);
            json_str(r, md->database_type);
            ap_rprintf(r, ",\"ip_version\":%u,\"build_epoch\":%"
                       APR_UINT64_T_FMT ",\"node_count\":%u",
                       (unsigned)md->ip_version,
                       (apr_uint64_t)md->build_epoch,
                       (unsigned)md->node_count);
            slot_release(slot, db);
        }
        if (slot->lock) {
            apr_thread_mutex_lock(slot->lock);
        }
        ap_rprintf(r, ",\"loaded_at\":%" APR_INT64_T_FMT ",\"loaded_at_"
                   "http\":", epoch_sec(slot->loaded_at));
        json_str(r, slot->loaded_at ? fmt_time(r->pool, slot->loaded_at)
                                    : NULL);
        ap_rprintf(r, ",\"last_check\":%" APR_INT64_T_FMT
                   ",\"reloads\":%u,\"refused\":%u,\"last_error\":",
                   epoch_sec(slot->checked_at), slot->reloads, slot->refused);
        json_str(r, slot->error[0] ? slot->error : NULL);
        if (slot->lock) {
            apr_thread_mutex_unlock(slot->lock);
        }
        ap_rputs("}}", r);
    }
    ap_rputs("],\"supervisors\":{\"variable\":", r);
    json_str(r, sup_env(g));
    ap_rprintf(r, ",\"inline\":%d,\"file\":",
               g->sup_nets ? g->sup_nets->nelts : 0);
    json_str(r, g->sup_file);
    ap_rprintf(r, ",\"file_reloads\":%" APR_UINT64_T_FMT ",\"file_refused\":%"
               APR_UINT64_T_FMT ",\"this_process\":{\"pid\":%ld",
               g->sup_shared ? apr_atomic_read64(&g->sup_shared[SUP_RELOADS])
                             : 0,
               g->sup_shared ? apr_atomic_read64(&g->sup_shared[SUP_REFUSED])
                             : 0, (long)getpid());
    l = g->sup_lock ? netlist_acquire(g) : NULL;
    ap_rprintf(r, ",\"file_networks\":%d", l ? l->nets->nelts : 0);
    if (l) {
        netlist_release(g, l);
    }
    if (g->sup_lock) {
        apr_thread_mutex_lock(g->sup_lock);
        ap_rprintf(r, ",\"file_loaded\":%" APR_INT64_T_FMT ",\"file_error\":",
                   epoch_sec(g->sup_loaded_at));
        json_str(r, g->sup_error[0] ? g->sup_error : NULL);
        apr_thread_mutex_unlock(g->sup_lock);
    }
    ap_rputs("}}}\n", r);
    return OK;
}

/* Prometheus: the node-wide figures of the status page (shared memory;
 * what only the answering process knows is left out), for
 * mod_w4a_metrics' page (its optional hook w4a_metrics_collect). */
static const char *const counter_help[CNT_SHOWN] = {
    "Lookups of client addresses in the database.",
    "Lookups that found no entry for the address.",
    "Lookups that failed (a database error).",
    "New versions of the database file loaded (once per version, "
    "node-wide).",
    "New versions of the database file refused (the old one kept)."
};

static int geoip_metrics_collect(request_rec *r, w4a_prom_t *out)
{
    geoip_global *g = srv_conf(r->server)->g;
    int i, k;

    if (!g || !g->dbs) {
        return DECLINED;
    }
    for (k = 0; k < CNT_SHOWN; k++) {
        w4a_prom_family(out, apr_pstrcat(r->pool, "w4a_geoip_",
                                         counter_names[k], "_total", NULL),
                        W4A_PROM_COUNTER, counter_help[k]);
        for (i = 0; i < g->dbs->nelts; i++) {
            geoip_slot *slot = APR_ARRAY_IDX(g->dbs, i, geoip_slot *);
            w4a_prom_u64(out, slot->counters
                              ? apr_atomic_read64(&slot->counters[k]) : 0,
                         "database", slot->name, NULL);
        }
    }
    w4a_prom_family(out, "w4a_geoip_last_reload_timestamp_seconds",
                    W4A_PROM_GAUGE, "When a new version of the database was "
                    "last loaded (Unix time; 0: not since start).");
    for (i = 0; i < g->dbs->nelts; i++) {
        geoip_slot *slot = APR_ARRAY_IDX(g->dbs, i, geoip_slot *);
        w4a_prom_u64(out, slot->counters
                          ? apr_atomic_read64(&slot->counters[CNT_LAST_RELOAD])
                          : 0, "database", slot->name, NULL);
    }
    w4a_prom_one(out, "w4a_geoip_headers_removed_total", W4A_PROM_COUNTER,
                 "Request headers removed that stood for our variables "
                 "(GEOIP_*, MM_*, the supervisor variable).",
                 g->headers_removed ? apr_atomic_read64(g->headers_removed)
                                    : 0);
    w4a_prom_one(out, "w4a_geoip_supervisor_file_reloads_total",
                 W4A_PROM_COUNTER, "New versions of the supervisor list "
                 "file loaded.", g->sup_shared
                 ? apr_atomic_read64(&g->sup_shared[SUP_RELOADS]) : 0);
    w4a_prom_one(out, "w4a_geoip_supervisor_file_refused_total",
                 W4A_PROM_COUNTER, "New versions of the supervisor list "
                 "file refused (the old one kept).", g->sup_shared
                 ? apr_atomic_read64(&g->sup_shared[SUP_REFUSED]) : 0);
    return OK;
}

static void register_hooks(apr_pool_t *p)
{
    /* post_read_request: after mod_remoteip (APR_HOOK_FIRST), which sets
     * r->useragent_addr to the real client, and before mod_setenvif
     * (APR_HOOK_MIDDLE), whose server-level SetEnvIf must see our
     * variables; everything later (virtual host, directory, .htaccess,
     * mod_rewrite) sees them too. */
    static const char *const after_remoteip[] = { "mod_remoteip.c", NULL };
    static const char *const before_setenvif[] = { "mod_setenvif.c", NULL };

    ap_hook_check_config(geoip_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(geoip_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(geoip_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_read_request(geoip_post_read_request, after_remoteip,
                              before_setenvif, APR_HOOK_MIDDLE);
    /* Before anyone reads a request header. */
    ap_hook_post_read_request(geoip_strip_headers, NULL, NULL,
                              APR_HOOK_REALLY_FIRST);
    /* Internal redirects: before mod_rewrite's server-level rules. */
    ap_hook_translate_name(geoip_translate_name, NULL, NULL,
                           APR_HOOK_REALLY_FIRST);
    /* After mod_rewrite's per-directory [E=] (first) and mod_env's SetEnv
     * (middle), before the handler: CGI, PHP and SSI see ours. */
    ap_hook_fixups(geoip_restore, NULL, NULL, APR_HOOK_LAST);
    ap_hook_handler(geoip_status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(w4a, metrics_collect, geoip_metrics_collect, NULL, NULL,
                      APR_HOOK_MIDDLE);
}

module AP_MODULE_DECLARE_DATA w4a_geoip_module = {
    STANDARD20_MODULE_STUFF,
    NULL,                   /* per-directory config creator */
    NULL,                   /* dir config merger */
    create_srv_conf,        /* server config creator */
    merge_srv_conf,         /* server config merger */
    geoip_cmds,             /* command table */
    register_hooks,         /* set up other request processing hooks */
    AP_MODULE_FLAG_NONE     /* flags */
};
