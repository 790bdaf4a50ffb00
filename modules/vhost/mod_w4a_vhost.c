/*
 * mod_w4a_vhost: Host header -> hosting record, from a compiled map index.
 *
 * One request, one lookup: post_read_request normalises the Host, looks it
 * up in the index (under a read lock, copying the record into the request
 * pool), sets DOCUMENT_ROOT and the W4A_* variables; translate_name maps
 * the URI under the record's document root; fixups refuses FIFOs,
 * sockets and devices and makes the early owner check; the static handler
 * (vhost_static.c) serves a hosting's files from the descriptor it
 * checked; get_suexec_identity gives CGI the hosting's identity.  The record
 * is published to the other w4a modules through the optional function
 * w4a_hosting() (include/mod_w4a_vhost.h).
 *
 * The index file is never mapped (a cp over it would SIGBUS a child that
 * had): a version is copied into the private directory
 * <DefaultRuntimeDir>/w4a-vhost (httpd's user, 0700) and that copy is
 * mapped read-only, one copy per version shared by every process (see
 * modules/common/w4a_map_copy.c).  Each process re-checks the file at
 * most every W4AVhostMapCheckInterval; a changed file is copied and
 * validated completely before it replaces the current one under the write
 * lock, so a request in flight never sees a half-swapped or broken map.
 */

#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>
#include <unixd.h>

#include <apr_atomic.h>
#include <apr_file_io.h>
#include <apr_hash.h>
#include <apr_optional.h>
#include <apr_shm.h>
#include <apr_strings.h>
#include <apr_thread_rwlock.h>

#include "vhost_private.h"
#include "vhost_source.h"
#include "mod_w4a_vhost.h"
#include "w4a_host.h"
#include "w4a_httpd.h"
#include "w4a_map.h"
#include "w4a_prom.h"
#include "w4a_util.h"

module AP_MODULE_DECLARE_DATA w4a_vhost_module;

#define W4A_UNSET        (-1)
#define DEFAULT_INTERVAL apr_time_from_sec(2)
#define DEFAULT_MIN_UID  1000
#define MAX_PAGE_SIZE    (1024 * 1024)
#define STATUS_HANDLER   "w4a-vhost-status"

/* ------------------------------------------------------------------ */
/* Server-wide counters, in anonymous shared memory made before fork.  */

static const char *const counter_names[CNT_MAX] = {
    "lookups", "hits", "unknown", "suspended", "bad_host",
    "refused", "owner_denied", "reloads", "reload_failures", "media",
    "cache_hits", "cache_negative_hits", "cache_waits",
    "memcached_hits", "memcached_misses", "memcached_errors",
    "bad_cache_values", "memcached_forged", "memcached_expired",
    "db_queries", "db_errors", "bad_records",
    "stale_serves", "unavailable", "handlers_refused",
    "htaccess_refused", "headers_removed", "special_denied"
};

static volatile apr_uint64_t *counters;   /* CNT_MAX slots, or NULL */

void vhost_count(vhost_counter_e c)
{
    if (counters) {
        apr_atomic_inc64(&counters[c]);
    }
}

void vhost_refused(request_rec *r, vhost_counter_e c)
{
    vhost_count(c);
    apr_table_setn(r->notes, "w4a-vhost-refused", counter_names[c]);
}

/* ------------------------------------------------------------------ */
/* Per-process state of one index file.                                */

/* What tells one index file from another without reading it. */
typedef w4a_map_fid_t file_id;

typedef struct map_state {
    const char          *path;
    const char          *copy_dir;   /* private copies; NULL: private memory */
    apr_interval_time_t  interval;
    apr_thread_rwlock_t *lock;       /* guards map and the identity below */
    w4a_map_t           *map;        /* current index, or NULL */
    apr_time_t           loaded_at;
    file_id              id;         /* the file behind map */
    file_id              bad;        /* the last file refused */
    volatile apr_uint64_t next_check;
    volatile apr_uint32_t checking;  /* 1 while one thread checks */
    char                 last_error[256];
} map_state;

/* ------------------------------------------------------------------ */
/* Configuration.                                                      */

typedef struct {
    int                  engine;           /* W4A_UNSET, 0, 1 */
    const char          *map_path;         /* NULL: unset */
    apr_interval_time_t  interval;         /* W4A_UNSET: unset */
    int                  unknown_404;      /* W4A_UNSET, 0, 1 */
    int                  suspended_status; /* 0: unset */
    const char          *suspended_page;   /* file; NULL: unset */
    const char          *suspended_body;   /* its content, read in post_config */
    apr_int64_t          min_uid;          /* W4A_UNSET: unset */
    apr_array_header_t  *bases;            /* const char *; NULL: unset */
    int                  owner_check;      /* W4A_UNSET, 0, 1 */
    const char          *media_prefix;     /* NULL: unset; "" after none */
    apr_array_header_t  *handlers;         /* W4AVhostHandler; NULL: unset */
    vhost_source_conf   *src_conf;         /* the SQL source's directives */
    map_state           *state;            /* set in post_config */
    vhost_source        *source;           /* set in post_config */
} vhost_conf;

/* Per request: the record, or why there is none. */
typedef struct {
    const w4a_hosting_t *rec;
    int                  media;     /* a media host request */
    const char          *log_note; /* "uid:gid:dir" for w4a-logsplit, or NULL */
    const char          *site_media;      /* w4a_media_host(), once asked */
    int                  site_media_done;
    const request_rec   *node_page; /* the request the operator's sections
                                       gave a node handler (vhost_guard.c) */
} vhost_req;

static void *create_srv_conf(apr_pool_t *p, server_rec *s)
{
    vhost_conf *c = apr_pcalloc(p, sizeof(*c));
    c->engine = W4A_UNSET;
    c->interval = W4A_UNSET;
    c->unknown_404 = W4A_UNSET;
    c->suspended_status = 0;
    c->min_uid = W4A_UNSET;
    c->owner_check = W4A_UNSET;
    c->src_conf = vhost_source_conf_create(p);
    return c;
}

static void *merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    vhost_conf *base = basev, *add = addv;
    vhost_conf *c = apr_pcalloc(p, sizeof(*c));

    c->engine = add->engine != W4A_UNSET ? add->engine : base->engine;
    c->map_path = add->map_path ? add->map_path : base->map_path;
    c->interval = add->interval != W4A_UNSET ? add->interval : base->interval;
    c->unknown_404 = add->unknown_404 != W4A_UNSET ? add->unknown_404
                                                   : base->unknown_404;
    c->suspended_status = add->suspended_status ? add->suspended_status
                                                : base->suspended_status;
    c->suspended_page = add->suspended_page ? add->suspended_page
                                            : base->suspended_page;
    c->min_uid = add->min_uid != W4A_UNSET ? add->min_uid : base->min_uid;
    if (base->bases && add->bases) {
        c->bases = apr_array_append(p, base->bases, add->bases);
    }
    else {
        c->bases = add->bases ? add->bases : base->bases;
    }
    c->owner_check = add->owner_check != W4A_UNSET ? add->owner_check
                                                   : base->owner_check;
    c->media_prefix = add->media_prefix ? add->media_prefix
                                        : base->media_prefix;
    if (base->handlers && add->handlers) {
        c->handlers = apr_array_append(p, base->handlers, add->handlers);
    }
    else {
        c->handlers = add->handlers ? add->handlers : base->handlers;
    }
    c->src_conf = vhost_source_conf_merge(p, base->src_conf, add->src_conf);
    c->state = NULL;   /* set per server in post_config */
    c->source = NULL;
    return c;
}

/* Effective values, unset -> default. */
static int conf_engine(const vhost_conf *c)      { return c->engine == 1; }
static int conf_unknown_404(const vhost_conf *c) { return c->unknown_404 == 1; }
static int conf_owner_check(const vhost_conf *c) { return c->owner_check != 0; }
static int conf_suspended_status(const vhost_conf *c)
{
    return c->suspended_status ? c->suspended_status : HTTP_FORBIDDEN;
}
static apr_uint32_t conf_min_uid(const vhost_conf *c)
{
    return c->min_uid == W4A_UNSET ? DEFAULT_MIN_UID : (apr_uint32_t)c->min_uid;
}
static apr_interval_time_t conf_interval(const vhost_conf *c)
{
    return c->interval == W4A_UNSET ? DEFAULT_INTERVAL : c->interval;
}

static const char *set_engine(cmd_parms *cmd, void *d, int on)
{
    vhost_conf *c = ap_get_module_config(cmd->server->module_config,
                                         &w4a_vhost_module);
    c->engine = on;
    return NULL;
}

static const char *set_map(cmd_parms *cmd, void *d, const char *arg)
{
    vhost_conf *c = ap_get_module_config(cmd->server->module_config,
                                         &w4a_vhost_module);
    c->map_path = ap_server_root_relative(cmd->pool, arg);
    if (!c->map_path) {
        return apr_pstrcat(cmd->pool, "W4AVhostMap: invalid path '", arg, "'",
                           NULL);
    }
    return NULL;
}

static const char *set_interval(cmd_parms *cmd, void *d, const char *arg)
{
    vhost_conf *c = ap_get_module_config(cmd->server->module_config,
                                         &w4a_vhost_module);
    apr_int64_t v;
    if (!w4a_parse_number(arg, 0, 86400, &v)) {
        return "W4AVhostMapCheckInterval: expected seconds from 0 to 86400";
    }
    c->interval = apr_time_from_sec(v);
    return NULL;
}

static const char *set_unknown(cmd_parms *cmd, void *d, const char *arg)
{
    vhost_conf *c = ap_get_module_config(cmd->server->module_config,
                                         &w4a_vhost_module);
    if (!strcasecmp(arg, "default")) {
        c->unknown_404 = 0;
    }
    else if (!strcmp(arg, "404")) {
        c->unknown_404 = 1;
    }
    else {
        return "W4AVhostUnknown: expected 'default' or '404'";
    }
    return NULL;
}

static const char *set_suspended_status(cmd_parms *cmd, void *d,
                                        const char *arg)
{
    vhost_conf *c = ap_get_module_config(cmd->server->module_config,
                                         &w4a_vhost_module);
    apr_int64_t v;
    if (!w4a_parse_number(arg, 400, 599, &v)) {
        return "W4AVhostSuspendedStatus: expected an HTTP status from 400 to 599";
    }
    c->suspended_status = (int)v;
    return NULL;
}

static const char *set_suspended_page(cmd_parms *cmd, void *d,
                                      const char *arg)
{
    vhost_conf *c = ap_get_module_config(cmd->server->module_config,
                                         &w4a_vhost_module);
    c->suspended_page = ap_server_root_relative(cmd->pool, arg);
    if (!c->suspended_page) {
        return apr_pstrcat(cmd->pool, "W4AVhostSuspendedPage: invalid path '",
                           arg, "'", NULL);
    }
    return NULL;
}

static const char *set_min_uid(cmd_parms *cmd, void *d, const char *arg)
{
    vhost_conf *c = ap_get_module_config(cmd->server->module_config,
                                         &w4a_vhost_module);
    apr_int64_t v;
    if (!w4a_parse_number(arg, 0, 0xFFFFFFFEll, &v)) {
        return "W4AVhostMinUid: expected a uid (a whole number)";
    }
    c->min_uid = v;
    return NULL;
}

static const char *add_base(cmd_parms *cmd, void *d, const char *arg)
{
    vhost_conf *c = ap_get_module_config(cmd->server->module_config,
                                         &w4a_vhost_module);
    apr_size_t len = strlen(arg);
    char *b;

    if (arg[0] != '/' || strstr(arg, "/..") || strstr(arg, "/./")) {
        return apr_pstrcat(cmd->pool, "W4AVhostDocRootBase: '", arg,
                           "' is not an absolute, normalised path", NULL);
    }
    b = apr_pstrdup(cmd->pool, arg);
    while (len > 1 && b[len - 1] == '/') {
        b[--len] = '\0';
    }
    if (!c->bases) {
        c->bases = apr_array_make(cmd->pool, 2, sizeof(const char *));
    }
    APR_ARRAY_PUSH(c->bases, const char *) = b;
    return NULL;
}

static const char *set_owner_check(cmd_parms *cmd, void *d, int on)
{
    vhost_conf *c = ap_get_module_config(cmd->server->module_config,
                                         &w4a_vhost_module);
    c->owner_check = on;
    return NULL;
}

static const char *set_media_prefix(cmd_parms *cmd, void *d,
                                    const char *arg)
{
    vhost_conf *c = ap_get_module_config(cmd->server->module_config,
                                         &w4a_vhost_module);
    apr_size_t n = strlen(arg);
    char buf[W4A_HOST_MAX + 1];
    apr_size_t len;

    if (!strcasecmp(arg, "none")) {
        c->media_prefix = "";
        return NULL;
    }
    /* "media." : a label and a dot, normalised like a host */
    if (n < 2 || arg[n - 1] != '.' || n > 64
        || w4a_host_normalise(apr_pstrndup(cmd->pool, arg, n - 1), buf, &len)
           != APR_SUCCESS || strchr(buf, '.')) {
        return "W4AVhostMediaPrefix: expected one label and a dot, like "
               "'media.', or 'none'";
    }
    c->media_prefix = apr_pstrcat(cmd->pool, buf, ".", NULL);
    return NULL;
}

static const char *add_handler(cmd_parms *cmd, void *d, const char *arg)
{
    vhost_conf *c = ap_get_module_config(cmd->server->module_config,
                                         &w4a_vhost_module);
    if (!*arg || ap_strchr_c(arg, ' ')) {
        return "W4AVhostHandler: expected handler names";
    }
    if (!c->handlers) {
        c->handlers = apr_array_make(cmd->pool, 4, sizeof(const char *));
    }
    APR_ARRAY_PUSH(c->handlers, const char *) = arg;
    return NULL;
}

static vhost_source_conf *source_conf_of(server_rec *s)
{
    vhost_conf *c = ap_get_module_config(s->module_config, &w4a_vhost_module);
    return c->src_conf;
}

static const command_rec vhost_cmds[] = {
    AP_INIT_FLAG("W4AVhostEngine", set_engine, NULL, RSRC_CONF,
                 "On: resolve the Host header to a hosting from the map"),
    AP_INIT_TAKE1("W4AVhostMap", set_map, NULL, RSRC_CONF,
                  "Compiled map index (from w4a-vhostmap compile)"),
    AP_INIT_TAKE1("W4AVhostMapCheckInterval", set_interval, NULL, RSRC_CONF,
                  "Seconds between checks of the index file for a new version"),
    AP_INIT_TAKE1("W4AVhostUnknown", set_unknown, NULL, RSRC_CONF,
                  "Unknown Host: 'default' (server's own config) or '404'"),
    AP_INIT_TAKE1("W4AVhostSuspendedStatus", set_suspended_status, NULL,
                  RSRC_CONF, "HTTP status for a suspended hosting"),
    AP_INIT_TAKE1("W4AVhostSuspendedPage", set_suspended_page, NULL,
                  RSRC_CONF, "File sent as the body for a suspended hosting"),
    AP_INIT_TAKE1("W4AVhostMinUid", set_min_uid, NULL, RSRC_CONF,
                  "Records with a uid or gid below this are never served"),
    AP_INIT_ITERATE("W4AVhostDocRootBase", add_base, NULL, RSRC_CONF,
                    "Allowed bases of document roots"),
    AP_INIT_FLAG("W4AVhostOwnerCheck", set_owner_check, NULL, RSRC_CONF,
                 "On: files served must belong to the hosting's uid"),
    AP_INIT_ITERATE("W4AVhostHandler", add_handler, NULL, RSRC_CONF,
                    "Handlers a hosting's .htaccess may name besides those "
                    "that serve its own files (static, SSI, CGI, PHP)"),
    AP_INIT_TAKE1("W4AVhostMediaPrefix", set_media_prefix, NULL, RSRC_CONF,
                  "'media.': media.<name> serves <name>'s files, static "
                  "only (needs mod_w4a_media); 'none'"),
    VHOST_SOURCE_COMMANDS
    {NULL}
};

/* ------------------------------------------------------------------ */
/* The index: load and reload.                                         */

/*
 * The last good index of each path, kept across configuration cycles:
 * a graceful restart while the index file is broken keeps serving the
 * hostings it served, and the two configuration passes at start-up map the
 * file once.  A restart unloads this DSO, so the table is httpd's retained
 * data and the maps are malloc'ed.  Only the parent writes it.
 */
#define RETAINED_KEY "mod_w4a_vhost-maps"
#define MAX_RETAINED 16
typedef struct {
    char       *path;
    w4a_map_t  *map;
    file_id     id;
    apr_time_t  loaded_at;
} retained_map;

static retained_map *retained;   /* MAX_RETAINED entries */

static retained_map *retained_find(const char *path)
{
    int i;
    for (i = 0; i < MAX_RETAINED && retained[i].path; i++) {
        if (!strcmp(retained[i].path, path)) {
            return &retained[i];
        }
    }
    return i < MAX_RETAINED ? &retained[i] : NULL;   /* a free slot */
}

/* A map not retained (more than MAX_RETAINED paths) is the parent's
 * only for this configuration cycle: closed when the cycle ends (the
 * children already running keep their own mapping), instead of staying
 * mapped, unreachable, in the parent at every restart. */
static apr_status_t unretained_cleanup(void *data)
{
    map_state *st = data;
    if (st->map) {
        w4a_map_close(st->map);
        st->map = NULL;
    }
    return APR_SUCCESS;
}

/*
 * Look at the file; when it is neither the loaded one nor the last refused
 * one, open and validate it and swap it in.  Called by one thread at a time
 * (st->checking), so only the swap itself needs the write lock.
 */
static void map_check(map_state *st, server_rec *s, apr_pool_t *p)
{
    apr_status_t rv;
    w4a_map_t *fresh, *old;
    const char *err = NULL;
    file_id now;

    rv = w4a_map_fid_stat(&now, st->path);
    if (rv != APR_SUCCESS) {
        if (st->bad.size != -1) {           /* not said already */
            st->bad.size = -1;
            apr_snprintf(st->last_error, sizeof(st->last_error),
                         "cannot stat %s", st->path);
            ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, W4ALOGNO(00110)
                         "map index %s: cannot stat it; %s", st->path,
                         st->map ? "keeping the index already loaded"
                                 : "every host is unknown until it appears");
            vhost_count(CNT_RELOAD_FAILURES);
        }
        return;
    }
    if (st->map && w4a_map_fid_same(&now, &st->id)) {
        return;                                 /* unchanged */
    }
    if (w4a_map_fid_same(&now, &st->bad)) {
        return;                                 /* refused already */
    }

    /* Never the file itself: a copy nothing can change (or private
     * memory), so that an index copied over in place or truncated while
     * in use cannot fault this process. */
    rv = st->copy_dir ? w4a_map_open_copy(&fresh, st->path, &now,
                                          st->copy_dir, &err, p)
                      : w4a_map_open(&fresh, st->path, &err, p);
    if (APR_STATUS_IS_EAGAIN(rv)) {
        /* Being written (cp) or replaced right now: not refused, looked
         * at again at the next check. */
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, W4ALOGNO(00172)
                     "map index %s is changing (%s); %s until the next "
                     "check", st->path, err ? err : "busy",
                     st->map ? "keeping the index already loaded"
                             : "no index");
        return;
    }
    if (rv != APR_SUCCESS) {
        st->bad = now;
        apr_snprintf(st->last_error, sizeof(st->last_error), "%s",
                     err ? err : "unreadable");
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, W4ALOGNO(00110)
                     "map index %s refused: %s; %s", st->path,
                     err ? err : "unreadable",
                     st->map ? "keeping the index already loaded"
                             : "every host is unknown until a good one appears");
        vhost_count(CNT_RELOAD_FAILURES);
        return;
    }

    apr_thread_rwlock_wrlock(st->lock);
    old = st->map;
    st->map = fresh;
    st->id = now;
    st->loaded_at = apr_time_now();
    st->last_error[0] = '\0';
    apr_thread_rwlock_unlock(st->lock);
    if (old) {
        /* its copy goes now; the mapping once the requests holding it
         * (map_find) have ended */
        w4a_map_retire(old);
    }
    vhost_count(CNT_RELOADS);
    ap_log_error(APLOG_MARK, old ? APLOG_NOTICE : APLOG_INFO, 0, s,
                 W4ALOGNO(00111) "map index %s loaded: generation %"
                 APR_UINT64_T_FMT ", %u records, %u names", st->path,
                 w4a_map_generation(fresh), w4a_map_records(fresh),
                 w4a_map_names(fresh));
}

/* At most one stat() per process per interval; never blocks a request on
 * another thread's check. */
static void map_maybe_check(map_state *st, server_rec *s, apr_pool_t *p)
{
    apr_time_t now = apr_time_now();

    if (st->interval > 0 && (apr_uint64_t)now < apr_atomic_read64(&st->next_check)) {
        return;
    }
    if (apr_atomic_cas32(&st->checking, 1, 0) != 0) {
        return;
    }
    apr_atomic_set64(&st->next_check, (apr_uint64_t)(now + st->interval));
    map_check(st, s, p);
    apr_atomic_set32(&st->checking, 0);
}

static apr_status_t map_unhold(void *data)
{
    w4a_map_release(data);
    return APR_SUCCESS;
}

/*
 * Look up in the current generation, held (not copied) for as long as p
 * lives: the read lock only covers taking the hold, so a reload that swaps
 * the map meanwhile retires the old one, which stays mapped until the
 * last request that found a record in it ends.
 */
static const w4a_hosting_t *map_find(map_state *st, const char *host,
                                     apr_size_t len, apr_pool_t *p)
{
    w4a_hosting_t tmp, *rec;
    w4a_map_t *map;

    apr_thread_rwlock_rdlock(st->lock);
    map = st->map;
    if (map) {
        w4a_map_hold(map);
    }
    apr_thread_rwlock_unlock(st->lock);
    if (!map) {
        return NULL;
    }
    if (w4a_map_lookup(map, host, len, &tmp) != APR_SUCCESS) {
        w4a_map_release(map);
        return NULL;
    }
    apr_pool_cleanup_register(p, map, map_unhold, apr_pool_cleanup_null);
    rec = apr_pmemdup(p, &tmp, sizeof(tmp));
    return rec;
}

/* ------------------------------------------------------------------ */
/* Request side.                                                       */

/* The record of r, of the request it is a sub-request of, or of the one
 * it was internally redirected from. */
static vhost_req *find_req_chain(const request_rec *r);

static APR_INLINE vhost_req *find_req(const request_rec *r)
{
    vhost_req *req = ap_get_module_config(r->request_config,
                                          &w4a_vhost_module);
    return req ? req : find_req_chain(r);
}

static vhost_req *find_req_chain(const request_rec *r)
{
    const request_rec *rr;
    for (rr = r; rr; rr = rr->main ? rr->main : rr->prev) {
        vhost_req *req = ap_get_module_config(rr->request_config,
                                              &w4a_vhost_module);
        if (req) {
            if (rr != r) {
                ap_set_module_config(((request_rec *)r)->request_config,
                                     &w4a_vhost_module, req);
            }
            return req;
        }
    }
    return NULL;
}

static const w4a_hosting_t *w4a_hosting(request_rec *r)
{
    return vhost_request_hosting(r);
}

static const char *site_media_host(request_rec *r, vhost_conf *c,
                                   const w4a_hosting_t *rec);

static const char *w4a_media_request(request_rec *r)
{
    vhost_req *req = find_req(r);

    return req && req->media && req->rec ? req->rec->media_host : NULL;
}

static const char *w4a_media_host(request_rec *r)
{
    vhost_req *req = find_req(r);
    request_rec *first;
    vhost_conf *c;

    if (!req || !req->rec) {
        return NULL;
    }
    if (req->rec->media_host || req->media) {
        return req->rec->media_host;
    }
    if (!req->site_media_done) {
        /* req is the initial request's: what it holds lives as long */
        first = w4a_initial_request(r);
        c = ap_get_module_config(first->server->module_config,
                                 &w4a_vhost_module);
        req->site_media = site_media_host(first, c, req->rec);
        req->site_media_done = 1;
    }
    return req->site_media;
}

const w4a_hosting_t *vhost_request_hosting(const request_rec *r)
{
    vhost_req *req = find_req(r);
    return req ? req->rec : NULL;
}

void vhost_set_node_page(const request_rec *r)
{
    vhost_req *req = find_req(r);
    if (req) {
        req->node_page = r;
    }
}

int vhost_node_page(const request_rec *r)
{
    vhost_req *req = find_req(r);
    return req && req->node_page == r;
}

int vhost_owner_check_on(const request_rec *r)
{
    vhost_conf *c = ap_get_module_config(r->server->module_config,
                                         &w4a_vhost_module);
    return conf_owner_check(c);
}

static const char *w4a_operator_handler(request_rec *r)
{
    return vhost_operator_handler(r);
}

int vhost_engine_on(server_rec *s)
{
    return conf_engine(ap_get_module_config(s->module_config,
                                            &w4a_vhost_module));
}

const apr_array_header_t *vhost_extra_handlers(server_rec *s)
{
    vhost_conf *c = ap_get_module_config(s->module_config, &w4a_vhost_module);
    return c->handlers;
}

/* Second lock behind w4a-vhostmap's checks: never serve a record that
 * breaks the operator's rules. */
static int record_refused(request_rec *r, const vhost_conf *c,
                          const w4a_hosting_t *rec)
{
    apr_uint32_t min_uid = conf_min_uid(c);

    if (rec->uid < min_uid || rec->gid < min_uid) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00104)
                      "hosting %s (domain %s): uid %u / gid %u below "
                      "W4AVhostMinUid %u; refused", rec->hosting, rec->domain,
                      rec->uid, rec->gid, min_uid);
        return 1;
    }
    if (c->bases && c->bases->nelts) {
        int i;
        for (i = 0; i < c->bases->nelts; i++) {
            const char *base = APR_ARRAY_IDX(c->bases, i, const char *);
            /* strictly below: a docroot that is the base holds every tenant */
            if (strcmp(rec->docroot, base) && w4a_path_under(rec->docroot, base)) {
                return 0;
            }
        }
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00105)
                      "hosting %s (domain %s): document root %s is outside "
                      "every W4AVhostDocRootBase; refused", rec->hosting,
                      rec->domain, rec->docroot);
        return 1;
    }
    return 0;
}

static int media_module_loaded;   /* mod_w4a_media is in this server */

/* The map first (the embedded default), then the SQL source. */
static vhost_source_result_e resolve(request_rec *r, vhost_conf *c,
                                     const char *host, apr_size_t len,
                                     const w4a_hosting_t **rec)
{
    if (c->state) {
        map_maybe_check(c->state, r->server, r->pool);
        if ((*rec = map_find(c->state, host, len, r->pool)) != NULL) {
            return SRC_FOUND;
        }
    }
    if (c->source) {
        return vhost_source_find(r, c->source, host, rec);
    }
    return SRC_NOTFOUND;
}

static const char *media_prefix(const vhost_conf *c)
{
    return media_module_loaded && c->media_prefix && *c->media_prefix
           ? c->media_prefix : NULL;
}

/*
 * The Host's record.  With a media prefix, "media.<name>" that is no name
 * of its own (or only matches a wildcard) is the media host of <name>'s
 * record, unless that record names another media host; *media says so.
 */
static vhost_source_result_e resolve_host(request_rec *r, vhost_conf *c,
                                          const char *host, apr_size_t len,
                                          const w4a_hosting_t **rec,
                                          int *media)
{
    const char *prefix = media_prefix(c);
    apr_size_t plen = prefix ? strlen(prefix) : 0;
    const w4a_hosting_t *mrec = NULL;
    vhost_source_result_e res, mres;
    w4a_hosting_t *out;

    *media = 0;
    res = resolve(r, c, host, len, rec);
    /* <label>.<name>, no name of its own (or only a wildcard's): the media
     * host of <name>'s record when the record names it (media=HOST), or,
     * when the record names none, when <label>. is the prefix */
    if (media_module_loaded
        && (res == SRC_NOTFOUND
            || (res == SRC_FOUND && (*rec)->matched[0] == '*'))) {
        const char *dot = memchr(host, '.', len);
        apr_size_t rest = dot ? len - (apr_size_t)(dot + 1 - host) : 0;
        int by_prefix = plen && len > plen && !strncmp(host, prefix, plen);

        if (rest) {
            mres = resolve(r, c, dot + 1, rest, &mrec);
            if (mres == SRC_FOUND
                && (mrec->media_host ? !strcmp(mrec->media_host, host)
                                     : by_prefix)) {
                *rec = mrec;
                *media = 1;
                res = SRC_FOUND;
            }
            else if (mres == SRC_UNAVAILABLE && res == SRC_NOTFOUND
                     && by_prefix) {
                res = SRC_UNAVAILABLE;
            }
        }
    }
    if (res == SRC_FOUND && prefix && !(*rec)->media_host && *media) {
        /* the media host of the pattern, on a media request: the name
         * being served (on the site itself: site_media_host(), when asked) */
        out = apr_pmemdup(r->pool, *rec, sizeof(**rec));
        out->media_host = apr_pstrndup(r->pool, host, len);
        *rec = out;
    }
    return res;
}

/*
 * The media host of the pattern for a request of the site itself, whose
 * record names none: media.<domain>, unless that name is a site of its
 * own (not a wildcard's) of another hosting or docroot, since the pages of
 * one tenant must never load their assets (their scripts) from another's.
 * A lookup of its own: made only when asked (w4a_media_host), not for
 * every request of every site.
 */
static const char *site_media_host(request_rec *r, vhost_conf *c,
                                   const w4a_hosting_t *rec)
{
    const char *prefix = media_prefix(c);
    const w4a_hosting_t *other = NULL;
    vhost_source_result_e mres;
    const char *mhost;

    if (!prefix) {
        return NULL;
    }
    mhost = apr_pstrcat(r->pool, prefix, rec->domain, NULL);
    mres = resolve(r, c, mhost, strlen(mhost), &other);
    if (mres == SRC_NOTFOUND
        || (mres == SRC_FOUND
            && (other->matched[0] == '*'
                || (!strcmp(other->hosting, rec->hosting)
                    && !strcmp(other->docroot, rec->docroot))))) {
        return mhost;
    }
    return NULL;
}

static void set_docroot(request_rec *r, const char *docroot)
{
    ap_set_document_root(r, docroot);
    ap_set_context_info(r, NULL, docroot);
}

/* The W4A_* variables of a request, in the order of env_value(). */
static const char *const env_names[] = { "W4A_HOSTING", "W4A_DOMAIN",
    "W4A_PHP_VERSION", "W4A_LOG", "W4A_MEDIA" };
#define ENV_NAMES (sizeof(env_names) / sizeof(env_names[0]))

/* What variable i must be for this request; NULL: absent. */
static const char *env_value(const vhost_req *req, apr_size_t i)
{
    const w4a_hosting_t *rec = req ? req->rec : NULL;

    if (!rec) {
        return NULL;
    }
    switch (i) {
    case 0:  return rec->hosting;
    case 1:  return rec->domain;
    case 2:  return rec->php_version;
    case 3:  return (rec->flags & W4A_FLAG_LOG) && rec->log_dir ? "1" : NULL;
    default: return req->media ? "1" : NULL;
    }
}

/* The record's W4A_* variables, or none at all; clean: remove whatever
 * stands under those names first. */
/* 1 when no entry of t is named W4A_* (in any case): one pass, cheaper
 * than setn's search for each of five names that share their first four
 * letters, which is all apr_table's index tells apart. */
static int no_w4a_entry(const apr_table_t *t)
{
    const apr_array_header_t *arr = apr_table_elts(t);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;
    int k;

    for (k = 0; k < arr->nelts; k++) {
        if (e[k].key && (e[k].key[0] == 'W' || e[k].key[0] == 'w')
            && !strncasecmp(e[k].key, "W4A_", 4)) {
            return 0;
        }
    }
    return 1;
}

static void set_env(request_rec *r, const vhost_req *req, int clean)
{
    /* A table with none of the names (a request's first hooks: empty, or
     * only what mod_w4a_geoip put there) gets them added, without setn's
     * search for each. */
    int fresh = no_w4a_entry(r->subprocess_env);
    apr_size_t i;

    for (i = 0; i < ENV_NAMES; i++) {
        const char *v = env_value(req, i);
        if (clean && !fresh) {
            apr_table_unset(r->subprocess_env, env_names[i]);
        }
        if (!v) {
            continue;
        }
        if (fresh) {
            apr_table_addn(r->subprocess_env, env_names[i], v);
        }
        else {
            apr_table_setn(r->subprocess_env, env_names[i], v);
        }
    }
}

/* 1 when the environment holds exactly the record's W4A_* variables (one
 * pass over the table, the common case: nothing in .htaccess touched
 * them). */
static int env_intact(request_rec *r, const vhost_req *req)
{
    const apr_array_header_t *arr = apr_table_elts(r->subprocess_env);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;
    apr_size_t i, want = 0, seen = 0;
    int k;

    for (i = 0; i < ENV_NAMES; i++) {
        want += env_value(req, i) != NULL;
    }
    for (k = 0; k < arr->nelts; k++) {
        if (!e[k].key || strncasecmp(e[k].key, "W4A_", 4)) {
            continue;
        }
        for (i = 0; i < ENV_NAMES; i++) {
            if (!strcasecmp(e[k].key, env_names[i])) {
                const char *v = env_value(req, i);
                if (!v || !e[k].val || strcmp(e[k].val, v)) {
                    return 0;
                }
                seen++;
                break;
            }
        }
    }
    return seen == want;
}

static int vhost_post_read_request(request_rec *r)
{
    vhost_conf *c = ap_get_module_config(r->server->module_config,
                                         &w4a_vhost_module);
    vhost_req *req;
    const w4a_hosting_t *rec = NULL;
    const char *raw;
    char host[W4A_HOST_MAX + 1];
    apr_size_t len;
    apr_status_t rv;
    vhost_source_result_e res;
    int media;

    if (!conf_engine(c) || !(c->state || c->source) || r->main || r->prev) {
        return DECLINED;
    }
    req = apr_pcalloc(r->pool, sizeof(*req));
    ap_set_module_config(r->request_config, &w4a_vhost_module, req);

    raw = r->hostname;
    if (!raw || !*raw) {
        vhost_count(CNT_UNKNOWN);
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, W4ALOGNO(00102)
                      "no Host in request; unknown host");
        return conf_unknown_404(c) ? HTTP_NOT_FOUND : DECLINED;
    }
    if (raw[0] != '[' && strchr(raw, ':')) {
        raw = apr_pstrcat(r->pool, "[", raw, "]", NULL);   /* httpd strips them */
    }
    rv = w4a_host_normalise(raw, host, &len);
    if (rv != APR_SUCCESS) {
        vhost_count(CNT_BAD_HOST);
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, W4ALOGNO(00101)
                      "malformed Host '%s' (%s); answered 400",
                      ap_escape_logitem(r->pool, raw),
                      rv == APR_ENAMETOOLONG ? "too long" : "invalid");
        return HTTP_BAD_REQUEST;
    }

    vhost_count(CNT_LOOKUPS);
    res = resolve_host(r, c, host, len, &rec, &media);
    if (res == SRC_UNAVAILABLE) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, W4ALOGNO(00133)
                      "host '%s' unknown while the database is unavailable; "
                      "answered 503", host);
        apr_table_setn(r->err_headers_out, "Retry-After", "5");
        return HTTP_SERVICE_UNAVAILABLE;
    }
    if (res == SRC_NOTFOUND) {
        vhost_count(CNT_UNKNOWN);
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, W4ALOGNO(00102)
                      "unknown host '%s'%s", host,
                      conf_unknown_404(c) ? "; answered 404" : "");
        return conf_unknown_404(c) ? HTTP_NOT_FOUND : DECLINED;
    }
    vhost_count(CNT_HITS);
    if (record_refused(r, c, rec)) {
        vhost_refused(r, CNT_REFUSED);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (rec->state == W4A_STATE_SUSPENDED) {
        int status = conf_suspended_status(c);
        vhost_count(CNT_SUSPENDED);
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, W4ALOGNO(00103)
                      "hosting %s (domain %s) is suspended; answered %d",
                      rec->hosting, rec->domain, status);
        if (c->suspended_body) {
            ap_custom_response(r, status, c->suspended_body);
        }
        return status;
    }

    req->rec = rec;
    req->media = media;
    if (media) {
        /* mod_w4a_media serves it, static files only */
        vhost_count(CNT_MEDIA);
        apr_table_setn(r->notes, "w4a-media", rec->media_host);
    }
    set_docroot(r, rec->docroot);
    set_env(r, req, 0);
    if ((rec->flags & W4A_FLAG_LOG) && rec->log_dir) {
        req->log_note = apr_psprintf(r->pool, "%u:%u:%s", rec->uid, rec->gid,
                                     rec->log_dir);
        apr_table_setn(r->notes, "w4a-log", req->log_note);
    }
    return DECLINED;
}

/*
 * First of the loggers: where w4a-logsplit copies a line (the note
 * w4a-log, and W4A_LOG that CustomLog's env= tests) is the record's, or
 * nothing; never what a customer's Header note, SetEnv or RewriteRule [E=]
 * made of it.  Every request of an internal redirect chain is set, since
 * mod_log_config reads notes of the last one.
 */
static int customer_config(const request_rec *r);

static int vhost_log_transaction(request_rec *r)
{
    vhost_conf *c = ap_get_module_config(r->server->module_config,
                                         &w4a_vhost_module);
    vhost_req *req;
    const char *note;
    request_rec *rr;

    if (!conf_engine(c)) {
        return DECLINED;
    }
    req = find_req(r);
    note = req && req->rec ? req->log_note : NULL;
    for (rr = r; rr && !customer_config(rr); rr = rr->next) {
    }
    if (!rr && !r->next) {
        return DECLINED;    /* one request, no .htaccess: ours stand */
    }
    for (rr = r; rr; rr = rr->next) {
        if (note) {
            apr_table_setn(rr->notes, "w4a-log", note);
            apr_table_setn(rr->subprocess_env, "W4A_LOG", "1");
        }
        else {
            apr_table_unset(rr->notes, "w4a-log");
            apr_table_unset(rr->subprocess_env, "W4A_LOG");
        }
    }
    return DECLINED;
}

/* 1 when a .htaccess file was read for this request (r->htaccess also
 * remembers directories that have none). */
static int customer_config(const request_rec *r)
{
    const struct htaccess_result *h;
    for (h = r->htaccess; h; h = h->next) {
        if (h->htaccess) {
            return 1;
        }
    }
    return 0;
}

/*
 * Last of the fixups, after .htaccess (SetEnv, SetEnvIf, RewriteRule
 * [E=]) had its say: the W4A_* variables are the record's again, so that
 * what PHP, CGI and the logs see comes from us, never from a customer.
 */
static int vhost_env_fixups(request_rec *r)
{
    vhost_conf *c = ap_get_module_config(r->server->module_config,
                                         &w4a_vhost_module);
    vhost_req *req;

    if (!conf_engine(c)) {
        return DECLINED;
    }
    req = find_req(r);
    if (req && !req->rec) {
        req = NULL;
    }
    if (!customer_config(r)) {
        return DECLINED;    /* only the operator's configuration ran */
    }
    if (!env_intact(r, req)) {
        set_env(r, req, 1);
    }
    return DECLINED;
}

static int vhost_translate_name(request_rec *r)
{
    vhost_req *req = find_req(r);

    if (!req || !req->rec || r->uri[0] != '/') {
        return DECLINED;
    }
    if (r->main || r->prev) {
        set_docroot(r, req->rec->docroot);
    }
    r->filename = w4a_pjoin(r->pool, req->rec->docroot, r->uri);
    return OK;
}

/*
 * Only regular files and directories are served from a hosting: a FIFO,
 * a socket or a device is refused here, before any handler opens it (an
 * open() of a FIFO blocks the thread until a writer comes).
 *
 * Then, like SymLinksIfOwnerMatch, but per hosting and whatever the
 * customer's Options: what we serve from a hosting's tree belongs to that
 * hosting.  This is the early refusal, on the walk's stat of the path;
 * the static handler (vhost_static.c) checks again the descriptor it
 * serves, since the tenant can swap the path in between.
 */
static int vhost_fixups(request_rec *r)
{
    vhost_conf *c = ap_get_module_config(r->server->module_config,
                                         &w4a_vhost_module);
    vhost_req *req;
    const w4a_hosting_t *rec;
    apr_finfo_t fi;

    if (!conf_engine(c) || !r->filename || r->finfo.filetype == APR_NOFILE) {
        return DECLINED;
    }
    req = find_req(r);
    if (!req || !(rec = req->rec) || !w4a_path_under(r->filename, rec->docroot)) {
        return DECLINED;        /* not a hosting's file (e.g. a server Alias) */
    }
    if (r->finfo.filetype != APR_REG && r->finfo.filetype != APR_DIR) {
        return vhost_refuse_type(r, rec, r->finfo.filetype);
    }
    if (!conf_owner_check(c)) {
        return DECLINED;
    }
    if (!(r->finfo.valid & APR_FINFO_USER)) {
        if (apr_stat(&fi, r->filename, APR_FINFO_USER, r->pool) != APR_SUCCESS) {
            return DECLINED;    /* core answers for a file it cannot stat */
        }
        r->finfo.user = fi.user;
        r->finfo.valid |= APR_FINFO_USER;
    }
    if ((apr_uint32_t)r->finfo.user != rec->uid) {
        vhost_refused(r, CNT_OWNER_DENIED);
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00106)
                      "hosting %s: %s belongs to uid %ld, not the hosting's "
                      "uid %u; answered 403", rec->hosting, r->filename,
                      (long)r->finfo.user, rec->uid);
        return HTTP_FORBIDDEN;
    }
    return DECLINED;
}

static ap_unix_identity_t *vhost_suexec_identity(const request_rec *r)
{
    vhost_req *req = find_req(r);
    ap_unix_identity_t *id;

    if (!req || !req->rec) {
        return NULL;
    }
    id = apr_palloc(r->pool, sizeof(*id));
    id->uid = (uid_t)req->rec->uid;
    id->gid = (gid_t)req->rec->gid;
    id->userdir = 0;
    return id;
}

/* ------------------------------------------------------------------ */
/* Status handler (JSON).                                              */

static void json_str(request_rec *r, const char *v)
{
    const char *q;
    if (!v) {
        ap_rputs("null", r);
        return;
    }
    ap_rputc('"', r);
    for (q = v; *q; q++) {
        unsigned char ch = (unsigned char)*q;
        if (ch == '"' || ch == '\\') {
            ap_rprintf(r, "\\%c", ch);
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

static int vhost_status_handler(request_rec *r)
{
    vhost_conf *c = ap_get_module_config(r->server->module_config,
                                         &w4a_vhost_module);
    map_state *st = c->state;
    int i, rv;

    if (!w4a_status_begin(r, STATUS_HANDLER, &rv)) {
        return rv;
    }
    ap_rputs("{\"module\":\"mod_w4a_vhost\",\"counters\":{", r);
    for (i = 0; i < CNT_MAX; i++) {
        ap_rprintf(r, "%s\"%s\":%" APR_UINT64_T_FMT, i ? "," : "",
                   counter_names[i],
                   counters ? apr_atomic_read64(&counters[i]) : 0);
    }
    ap_rprintf(r, "},\"engine\":%s,\"this_process\":{\"pid\":%ld},"
               "\"map\":", conf_engine(c) ? "true" : "false",
               (long)getpid());
    if (!st) {
        ap_rputs("null,\"source\":", r);
        if (c->source) {
            vhost_source_status(r, c->source);
        }
        else {
            ap_rputs("null", r);
        }
        ap_rputs("}\n", r);
        return OK;
    }
    /* Each process checks and loads the index by itself: what it has
     * loaded is its own, said under this_process. */
    apr_thread_rwlock_rdlock(st->lock);
    ap_rputs("{\"path\":", r);
    json_str(r, st->path);
    ap_rprintf(r, ",\"this_process\":{\"pid\":%ld", (long)getpid());
    if (st->map) {
        ap_rprintf(r, ",\"loaded\":true,\"generation\":%" APR_UINT64_T_FMT
                   ",\"records\":%u,\"names\":%u,\"age_seconds\":%"
                   APR_INT64_T_FMT ",\"loaded_seconds_ago\":%" APR_INT64_T_FMT,
                   w4a_map_generation(st->map), w4a_map_records(st->map),
                   w4a_map_names(st->map),
                   (apr_int64_t)apr_time_sec(apr_time_now()
                                - (apr_time_t)w4a_map_generation(st->map)),
                   (apr_int64_t)apr_time_sec(apr_time_now() - st->loaded_at));
    }
    else {
        ap_rputs(",\"loaded\":false", r);
    }
    ap_rputs(",\"last_error\":", r);
    json_str(r, st->last_error[0] ? st->last_error : NULL);
    apr_thread_rwlock_unlock(st->lock);
    ap_rputs("}},\"source\":", r);
    if (c->source) {
        vhost_source_status(r, c->source);
    }
    else {
        ap_rputs("null", r);
    }
    ap_rputs("}\n", r);
    return OK;
}

/* ------------------------------------------------------------------ */
/* Start-up.                                                           */

static apr_status_t counters_cleanup(void *data)
{
    counters = NULL;
    return APR_SUCCESS;
}

static const char *read_page(apr_pool_t *p, const char *path, const char **err)
{
    apr_file_t *f;
    apr_finfo_t fi;
    apr_size_t n;
    char *buf;
    apr_status_t rv;

    rv = apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_BINARY, 0, p);
    if (rv == APR_SUCCESS) {
        rv = apr_file_info_get(&fi, APR_FINFO_SIZE, f);
    }
    if (rv != APR_SUCCESS) {
        *err = "cannot read it";
        return NULL;
    }
    if (fi.size > MAX_PAGE_SIZE) {
        *err = "larger than 1 MiB";
        apr_file_close(f);
        return NULL;
    }
    /* ap_custom_response() takes text as the body as long as it does not
     * look like a URL ("/…" or "scheme:…"); a leading newline, harmless in
     * HTML, keeps such a page a body. */
    buf = apr_palloc(p, (apr_size_t)fi.size + 2);
    n = (apr_size_t)fi.size;
    rv = apr_file_read_full(f, buf + 1, n, &n);
    apr_file_close(f);
    if (rv != APR_SUCCESS && rv != APR_EOF) {
        *err = "cannot read it";
        return NULL;
    }
    buf[n + 1] = '\0';
    if (buf[1] == '/' || ap_is_url(buf + 1)) {
        buf[0] = '\n';
        return buf;
    }
    return buf + 1;
}

/*
 * The private directory of the index copies, <DefaultRuntimeDir>/w4a-vhost,
 * owned by the children's user, 0700: only httpd writes there, so a copy
 * mapped from it never changes.  Copies of an earlier run are removed on
 * the first start (not on a restart: the retained maps and the children
 * of the previous generation still use theirs).  "" when it cannot be
 * made: each process then reads the index into its own memory.
 */
static const char *map_copy_dir(apr_pool_t *pconf, apr_pool_t *ptemp,
                                server_rec *s, int clean)
{
    const char *dir = ap_runtime_dir_relative(pconf, "w4a-vhost");
    const char *err = NULL;
    apr_status_t rv;

    if (!dir) {
        return "";
    }
    rv = w4a_map_copy_dir(dir, (long)ap_unixd_config.user_id,
                          (long)ap_unixd_config.group_id, clean, &err, ptemp);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s, W4ALOGNO(00171)
                     "%s; every process reads the map index into memory "
                     "of its own instead of sharing one copy", err);
        return "";
    }
    return dir;
}

static int vhost_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                             apr_pool_t *ptemp, server_rec *s)
{
    apr_hash_t *states = apr_hash_make(ptemp);
    apr_hash_t *sources = apr_hash_make(ptemp);
    apr_shm_t *shm;
    apr_status_t rv;
    server_rec *sv;
    const char *copy_dir = NULL;
    int first_start = 0;

    media_module_loaded = ap_find_linked_module("mod_w4a_media.c") != NULL;
    vhost_guard_post_config(pconf);
    retained = ap_retained_data_get(RETAINED_KEY);
    if (!retained) {
        retained = ap_retained_data_create(RETAINED_KEY,
                                           sizeof(*retained) * MAX_RETAINED);
        first_start = 1;
    }
    rv = apr_shm_create(&shm, sizeof(apr_uint64_t) * CNT_MAX, NULL, pconf);
    if (rv == APR_SUCCESS) {
        counters = apr_shm_baseaddr_get(shm);
        memset((void *)counters, 0, sizeof(apr_uint64_t) * CNT_MAX);
        apr_pool_cleanup_register(pconf, NULL, counters_cleanup,
                                  apr_pool_cleanup_null);
    }
    else {
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s, W4ALOGNO(00120)
                     "no shared memory for status counters; they stay 0");
    }

    for (sv = s; sv; sv = sv->next) {
        vhost_conf *c = ap_get_module_config(sv->module_config,
                                             &w4a_vhost_module);
        map_state *st;
        retained_map *kept;

        if (c->suspended_page && !c->suspended_body) {
            const char *err = NULL;
            c->suspended_body = read_page(pconf, c->suspended_page, &err);
            if (!c->suspended_body) {
                ap_log_error(APLOG_MARK, APLOG_EMERG, 0, sv, W4ALOGNO(00121)
                             "W4AVhostSuspendedPage %s: %s",
                             c->suspended_page, err);
                return HTTP_INTERNAL_SERVER_ERROR;
            }
        }
        if (!conf_engine(c)) {
            continue;
        }
        vhost_guard_check_overrides(sv, c->bases);
        if (!c->map_path && !vhost_source_configured(c->src_conf)) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, sv, W4ALOGNO(00122)
                         "W4AVhostEngine on for %s:%u but neither W4AVhostMap "
                         "nor W4AVhostDBDQuery set",
                         sv->server_hostname ? sv->server_hostname : "-",
                         sv->port);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        if (c->media_prefix && *c->media_prefix && !media_module_loaded) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, sv, W4ALOGNO(00124)
                         "W4AVhostMediaPrefix %s ignored: mod_w4a_media is "
                         "not loaded, and only it keeps media hosts static",
                         c->media_prefix);
        }
        if (vhost_source_configured(c->src_conf)) {
            w4a_map_checks_t checks;
            memset(&checks, 0, sizeof(checks));
            checks.min_uid = conf_min_uid(c);
            checks.bases = c->bases;
            c->source = vhost_source_setup(pconf, ptemp, sv, c->src_conf,
                                           &checks, sources);
            if (!c->source) {
                return HTTP_INTERNAL_SERVER_ERROR;
            }
        }
        if (!c->map_path) {
            continue;
        }
        if (!copy_dir) {
            copy_dir = map_copy_dir(pconf, ptemp, sv, first_start);
        }
        st = apr_hash_get(states, c->map_path, APR_HASH_KEY_STRING);
        if (!st) {
            file_id fid;
            st = apr_pcalloc(pconf, sizeof(*st));
            st->path = c->map_path;
            st->copy_dir = *copy_dir ? copy_dir : NULL;
            if (w4a_map_fid_stat(&fid, c->map_path) == APR_SUCCESS
                && (fid.mode & 0004)) {
                ap_log_error(APLOG_MARK, APLOG_WARNING, 0, sv,
                             W4ALOGNO(00170) "map index %s is readable by "
                             "every user (mode %04o): any hosting's code "
                             "can list every hosting's domains, users and "
                             "document roots; make it 0640 root:%s "
                             "(w4a-vhostmap compile does)", c->map_path,
                             fid.mode, ap_unixd_config.group_name);
            }
            st->interval = conf_interval(c);
            st->bad.size = -2;      /* nothing refused yet */
            rv = apr_thread_rwlock_create(&st->lock, pconf);
            if (rv != APR_SUCCESS) {
                ap_log_error(APLOG_MARK, APLOG_EMERG, rv, sv, W4ALOGNO(00123)
                             "cannot create the map lock");
                return HTTP_INTERNAL_SERVER_ERROR;
            }
            /* Loaded here, before the fork, so every child shares the
             * mapping; a missing or broken index does not stop httpd, and
             * the last good one (from an earlier pass) is kept. */
            kept = retained_find(c->map_path);
            if (kept && kept->map) {
                st->map = kept->map;
                st->id = kept->id;
                st->loaded_at = kept->loaded_at;
            }
            map_check(st, sv, ptemp);   /* closes kept->map if it swaps */
            if (!kept) {
                ap_log_error(APLOG_MARK, APLOG_WARNING, 0, sv,
                             W4ALOGNO(00180) "map index %s not retained "
                             "across restarts: more than %d W4AVhostMap "
                             "paths; each restart loads it anew, so an "
                             "index broken at a restart leaves its hosts "
                             "unknown", c->map_path, MAX_RETAINED);
                apr_pool_cleanup_register(pconf, st, unretained_cleanup,
                                          apr_pool_cleanup_null);
            }
            if (kept && st->map) {
                if (!kept->path) {
                    kept->path = strdup(c->map_path);
                }
                kept->map = st->map;
                kept->id = st->id;
                kept->loaded_at = st->loaded_at;
            }
            apr_hash_set(states, c->map_path, APR_HASH_KEY_STRING, st);
        }
        else if (conf_interval(c) < st->interval) {
            st->interval = conf_interval(c);
        }
        c->state = st;
    }
    return OK;
}

static void vhost_child_init(apr_pool_t *pchild, server_rec *s)
{
    vhost_source_child_init(pchild, s);
}

/* ------------------------------------------------------------------ */
/* Prometheus: the node-wide counters of the status page, for
 * mod_w4a_metrics' page (its optional hook w4a_metrics_collect).      */

static const char *const counter_help[CNT_MAX] = {
    "Host lookups in the map.",
    "Host lookups that found a hosting.",
    "Requests for a Host not in the map.",
    "Requests of a suspended hosting.",
    "Requests with an invalid Host header.",
    "Requests refused for an invalid or refused record.",
    "Requests refused by the owner check.",
    "Map index reloads (every process counts its own).",
    "Map index reloads that failed (the old index kept).",
    "Requests for a media host.",
    "Lookups answered by the per-process cache.",
    "Lookups answered by a negative entry of the per-process cache.",
    "Lookups that waited for another thread's lookup of the same name.",
    "Lookups answered by memcached.",
    "Lookups memcached did not have.",
    "memcached errors.",
    "Cache values refused as malformed.",
    "memcached values refused: their seal did not match.",
    "memcached values refused: expired.",
    "Database queries.",
    "Database errors.",
    "Records refused as invalid.",
    "Requests served from a stale record while the source was down.",
    "Requests answered unavailable: no source answered.",
    "Handlers named by per-directory configuration and refused.",
    ".htaccess files refused (too large).",
    "Request headers removed that stood for our variables.",
    "Requests of a FIFO, socket or device file refused.",
};

static int vhost_metrics_collect(request_rec *r, w4a_prom_t *out)
{
    int i;

    for (i = 0; i < CNT_MAX; i++) {
        w4a_prom_one(out, apr_pstrcat(r->pool, "w4a_vhost_", counter_names[i],
                                      "_total", NULL),
                     W4A_PROM_COUNTER, counter_help[i],
                     counters ? apr_atomic_read64(&counters[i]) : 0);
    }
    return OK;
}

static void register_hooks(apr_pool_t *p)
{
    /* After mod_alias and mod_userdir, as mod_vhost_alias: server-level
     * Alias and ~user still win over the hosting's document root. */
    static const char *const pre_translate[] = { "mod_alias.c", "mod_userdir.c",
                                                 NULL };

    ap_hook_post_config(vhost_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(vhost_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    vhost_source_set_getter(source_conf_of);
    ap_hook_post_read_request(vhost_post_read_request, NULL, NULL,
                              APR_HOOK_MIDDLE);
    ap_hook_translate_name(vhost_translate_name, pre_translate, NULL,
                           APR_HOOK_MIDDLE);
    ap_hook_fixups(vhost_fixups, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_fixups(vhost_env_fixups, NULL, NULL, APR_HOOK_REALLY_LAST);
    /* First: for a hosting's request its identity beats SuexecUserGroup. */
    ap_hook_get_suexec_identity(vhost_suexec_identity, NULL, NULL,
                                APR_HOOK_FIRST);
    ap_hook_handler(vhost_status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(w4a, metrics_collect, vhost_metrics_collect, NULL, NULL,
                      APR_HOOK_MIDDLE);
    ap_hook_log_transaction(vhost_log_transaction, NULL, NULL,
                            APR_HOOK_REALLY_FIRST);
    vhost_guard_register_hooks();
    vhost_static_register_hooks();
    APR_REGISTER_OPTIONAL_FN(w4a_hosting);
    APR_REGISTER_OPTIONAL_FN(w4a_media_host);
    APR_REGISTER_OPTIONAL_FN(w4a_media_request);
    APR_REGISTER_OPTIONAL_FN(w4a_operator_handler);
}

module AP_MODULE_DECLARE_DATA w4a_vhost_module = {
    STANDARD20_MODULE_STUFF,
    NULL,                   /* per-directory config creator */
    NULL,                   /* dir config merger */
    create_srv_conf,        /* server config creator */
    merge_srv_conf,         /* server config merger */
    vhost_cmds,             /* command table */
    register_hooks,         /* set up other request processing hooks */
    AP_MODULE_FLAG_NONE     /* flags */
};
