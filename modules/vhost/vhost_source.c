/*
 * vhost_source: the SQL source of mod_w4a_vhost, through mod_dbd, with
 * memcached and a per-process cache in front.  See vhost_source.h.
 */
#define _GNU_SOURCE 1           /* F_OFD_SETLKW */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <mpm_common.h>
#include <ap_mpm.h>
#include <unixd.h>

#include <apr_atomic.h>
#include <apr_dbd.h>
#include <mod_dbd.h>     /* after apr_dbd.h */
#include <apr_hash.h>
#include <apr_optional.h>
#include <apr_shm.h>
#include <apr_strings.h>
#include <apr_thread_cond.h>
#include <apr_thread_mutex.h>

#include "vhost_private.h"
#include "vhost_source.h"
#include "w4a_mac.h"
#include "w4a_mc.h"
#include "w4a_util.h"

#define UNSET            (-1)
#define DEF_TTL          5        /* per-process cache, found */
#define DEF_NEG_TTL      2        /* per-process cache, not found */
#define DEF_MC_TTL       300      /* memcached, found */
#define DEF_MC_NEG_TTL   30       /* memcached, not found */
#define DEF_STALE        86400    /* a record kept for database outages */
#define DEF_CACHE_SIZE   20000
#define DEF_MC_TIMEOUT   50       /* ms */
#define DEF_PREFIX       "w4a:"
#define DB_RETRY         apr_time_from_sec(1)  /* after a database error */
#define GEN_REFRESH      apr_time_from_sec(1)  /* generation re-read */
#define MAX_WAIT         apr_time_from_sec(5)  /* for another thread's fetch */
#define LOG_EVERY        apr_time_from_sec(10) /* backend errors, per process */
#define MAX_KEYS         10       /* the name and up to 9 wildcards */
#define LOCK_STRIPES     4096
#define LOCK_FILE        "w4a-vhost-fetch.lock"
#define GEN_KEY          "gen"

struct vhost_source_conf {
    const char  *query;        /* NULL: unset */
    const char  *label;        /* the prepared statement's mod_dbd label */
    const char  *mc_servers;   /* NULL: unset; "" after "none" */
    const char  *mc_prefix;
    const char  *mc_key;       /* key file; NULL: unset; "" after "none" */
    apr_int64_t  mc_timeout;   /* ms */
    apr_int64_t  ttl, neg_ttl, mc_ttl, mc_neg_ttl, stale, cache_size;
};

typedef enum { E_NONE, E_FOUND, E_NEG } entry_state_e;

typedef struct entry {
    char          *key;        /* malloc'ed */
    entry_state_e  state;
    w4a_hosting_t  rec;        /* strings in blob */
    char          *blob;       /* malloc'ed */
    apr_time_t     fetched;    /* when the data was got */
    apr_time_t     expires;    /* fresh until */
    int            inflight;   /* a thread is fetching it */
} entry;

struct vhost_source {
    server_rec          *s;
    const char          *query, *label, *mc_servers, *mc_prefix;
    apr_uint32_t         mc_timeout;
    apr_interval_time_t  ttl, neg_ttl, stale;
    apr_uint32_t         mc_ttl, mc_neg_ttl, cache_size;
    w4a_map_checks_t     checks;
    const char          *lock_path;
    const char          *mc_key_path;  /* NULL: plain values */
    w4a_mac_key_t       *mac_key;      /* read at post_config, as root */
    volatile apr_uint64_t *node_gen;   /* the newest generation any
                                        * process of this node has seen
                                        * (shared memory), or NULL */
    /* per process (child_init) */
    apr_thread_mutex_t  *mutex;    /* guards everything below */
    apr_thread_cond_t   *cond;     /* a fetch finished */
    apr_pool_t          *pool;     /* for the hash; used under mutex only */
    apr_hash_t          *cache;    /* key -> entry */
    w4a_mc_t            *mc;
    apr_uint64_t         gen;      /* memcached generation */
    apr_time_t           gen_at;
    apr_time_t           db_down_until;
    apr_time_t           db_ok_at;     /* the database last answered */
    apr_time_t           db_logged, mc_logged, forged_logged,
                         expired_logged, bad_logged;
};

static vhost_source_conf_fn *conf_of;
static apr_array_header_t *sources;      /* vhost_source *, this cycle */

static APR_OPTIONAL_FN_TYPE(ap_dbd_acquire) *dbd_acquire;
static APR_OPTIONAL_FN_TYPE(ap_dbd_prepare) *dbd_prepare;
static APR_OPTIONAL_FN_TYPE(ap_dbd_open) *dbd_open;
static APR_OPTIONAL_FN_TYPE(ap_dbd_close) *dbd_close;

/* ------------------------------------------------------------------ */
/* Configuration.                                                      */

vhost_source_conf *vhost_source_conf_create(apr_pool_t *p)
{
    vhost_source_conf *sc = apr_pcalloc(p, sizeof(*sc));
    sc->mc_timeout = UNSET;
    sc->ttl = sc->neg_ttl = sc->mc_ttl = sc->mc_neg_ttl = UNSET;
    sc->stale = sc->cache_size = UNSET;
    return sc;
}

#define PICK(f) (add->f != UNSET ? add->f : base->f)
#define PICKP(f) (add->f ? add->f : base->f)

vhost_source_conf *vhost_source_conf_merge(apr_pool_t *p,
                                           const vhost_source_conf *base,
                                           const vhost_source_conf *add)
{
    vhost_source_conf *sc = apr_pcalloc(p, sizeof(*sc));
    /* the query and its label go together */
    sc->query = add->query ? add->query : base->query;
    sc->label = add->query ? add->label : base->label;
    sc->mc_servers = PICKP(mc_servers);
    sc->mc_prefix = PICKP(mc_prefix);
    sc->mc_key = PICKP(mc_key);
    sc->mc_timeout = PICK(mc_timeout);
    sc->ttl = PICK(ttl);
    sc->neg_ttl = PICK(neg_ttl);
    sc->mc_ttl = PICK(mc_ttl);
    sc->mc_neg_ttl = PICK(mc_neg_ttl);
    sc->stale = PICK(stale);
    sc->cache_size = PICK(cache_size);
    return sc;
}

int vhost_source_configured(const vhost_source_conf *sc)
{
    return sc && sc->query != NULL;
}

void vhost_source_set_getter(vhost_source_conf_fn *get)
{
    conf_of = get;
}

const char *vhost_src_set_query(cmd_parms *cmd, void *d, const char *arg)
{
    vhost_source_conf *sc = conf_of(cmd->server);
    static unsigned n;

    if (!dbd_prepare) {
        dbd_prepare = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_prepare);
        dbd_acquire = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_acquire);
        dbd_open = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_open);
        dbd_close = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_close);
    }
    if (!dbd_prepare || !dbd_acquire) {
        return "W4AVhostDBDQuery: mod_dbd is not loaded (LoadModule "
               "dbd_module before mod_w4a_vhost)";
    }
    if (!ap_strcasestr(arg, "%s")) {
        return "W4AVhostDBDQuery: the query must take the name as %s";
    }
    sc->query = arg;
    sc->label = apr_psprintf(cmd->pool, "w4a_vhost_%u", ++n);
    dbd_prepare(cmd->server, arg, sc->label);
    return NULL;
}

const char *vhost_src_add_mc_server(cmd_parms *cmd, void *d, const char *arg)
{
    vhost_source_conf *sc = conf_of(cmd->server);
    const char *why;

    if (!strcasecmp(arg, "none")) {
        sc->mc_servers = "";
        return NULL;
    }
    if ((why = w4a_mc_check_servers(arg, cmd->pool)) != NULL) {
        return apr_pstrcat(cmd->pool, "W4AVhostMemcached: ", why, NULL);
    }
    sc->mc_servers = sc->mc_servers && *sc->mc_servers
        ? apr_pstrcat(cmd->pool, sc->mc_servers, ",", arg, NULL) : arg;
    return NULL;
}

const char *vhost_src_set_mc_prefix(cmd_parms *cmd, void *d, const char *arg)
{
    const char *q;
    if (strlen(arg) > 32) {
        return "W4AVhostMemcachedPrefix: at most 32 bytes";
    }
    for (q = arg; *q; q++) {
        if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f) {
            return "W4AVhostMemcachedPrefix: no blank or control byte";
        }
    }
    conf_of(cmd->server)->mc_prefix = arg;
    return NULL;
}

const char *vhost_src_set_mc_key(cmd_parms *cmd, void *d, const char *arg)
{
    vhost_source_conf *sc = conf_of(cmd->server);

    if (!strcasecmp(arg, "none")) {
        sc->mc_key = "";
        return NULL;
    }
    sc->mc_key = ap_server_root_relative(cmd->pool, arg);
    if (!sc->mc_key) {
        return apr_pstrcat(cmd->pool, "W4AVhostMemcachedKey: bad path ", arg,
                           NULL);
    }
    return NULL;
}

const char *vhost_src_set_mc_timeout(cmd_parms *cmd, void *d, const char *arg)
{
    apr_int64_t v;
    if (!w4a_parse_number(arg, 1, 10000, &v)) {
        return "W4AVhostMemcachedTimeout: expected milliseconds from 1 to "
               "10000";
    }
    conf_of(cmd->server)->mc_timeout = v;
    return NULL;
}

/* "POSITIVE [NEGATIVE]" seconds. */
static const char *two_ttls(cmd_parms *cmd, const char *a, const char *b,
                            apr_int64_t max, apr_int64_t *pos,
                            apr_int64_t *neg)
{
    if (!w4a_parse_number(a, 0, max, pos)
        || (b && !w4a_parse_number(b, 0, max, neg))) {
        return apr_psprintf(cmd->pool, "%s: expected seconds from 0 to %"
                            APR_INT64_T_FMT " (found, then not found)",
                            cmd->cmd->name, max);
    }
    return NULL;
}

const char *vhost_src_set_cache_ttl(cmd_parms *cmd, void *d, const char *a,
                                 const char *b)
{
    vhost_source_conf *sc = conf_of(cmd->server);
    return two_ttls(cmd, a, b, 3600, &sc->ttl, &sc->neg_ttl);
}

const char *vhost_src_set_mc_ttl(cmd_parms *cmd, void *d, const char *a,
                              const char *b)
{
    vhost_source_conf *sc = conf_of(cmd->server);
    return two_ttls(cmd, a, b, 30 * 86400, &sc->mc_ttl, &sc->mc_neg_ttl);
}

const char *vhost_src_set_stale(cmd_parms *cmd, void *d, const char *arg)
{
    if (!w4a_parse_number(arg, 0, 30 * 86400,
                          &conf_of(cmd->server)->stale)) {
        return "W4AVhostStaleTTL: expected seconds from 0 to 2592000";
    }
    return NULL;
}

const char *vhost_src_set_cache_size(cmd_parms *cmd, void *d, const char *arg)
{
    if (!w4a_parse_number(arg, 16, 10000000,
                          &conf_of(cmd->server)->cache_size)) {
        return "W4AVhostCacheSize: expected a number of names from 16 to "
               "10000000";
    }
    return NULL;
}


/* ------------------------------------------------------------------ */
/* Set-up.                                                             */

#define DEF(v, d) ((v) == UNSET ? (d) : (v))

vhost_source *vhost_source_setup(apr_pool_t *pconf, apr_pool_t *ptemp,
                                 server_rec *s, const vhost_source_conf *sc,
                                 const w4a_map_checks_t *checks,
                                 apr_hash_t *states)
{
    const char *key;
    vhost_source *src;
    int fd;

    if (!sources) {
        sources = apr_array_make(pconf, 4, sizeof(vhost_source *));
        apr_pool_cleanup_register(pconf, &sources, ap_pool_cleanup_set_null,
                                  apr_pool_cleanup_null);
    }
    key = apr_psprintf(ptemp, "%s|%s|%s|%s|%" APR_INT64_T_FMT "|%"
                       APR_INT64_T_FMT "|%" APR_INT64_T_FMT "|%"
                       APR_INT64_T_FMT "|%" APR_INT64_T_FMT "|%"
                       APR_INT64_T_FMT "|%" APR_INT64_T_FMT "|%lx", sc->label,
                       sc->mc_servers ? sc->mc_servers : "",
                       sc->mc_prefix ? sc->mc_prefix : "",
                       sc->mc_key ? sc->mc_key : "-", sc->mc_timeout,
                       sc->ttl, sc->neg_ttl, sc->mc_ttl, sc->mc_neg_ttl,
                       sc->stale, sc->cache_size,
                       (unsigned long)(apr_uintptr_t)checks->bases);
    src = apr_hash_get(states, key, APR_HASH_KEY_STRING);
    if (src) {
        return src;
    }
    src = apr_pcalloc(pconf, sizeof(*src));
    src->s = s;
    src->query = sc->query;
    src->label = sc->label;
    src->mc_servers = sc->mc_servers && *sc->mc_servers ? sc->mc_servers
                                                        : NULL;
    src->mc_prefix = sc->mc_prefix ? sc->mc_prefix : DEF_PREFIX;
    src->mc_timeout = (apr_uint32_t)DEF(sc->mc_timeout, DEF_MC_TIMEOUT);
    src->ttl = apr_time_from_sec(DEF(sc->ttl, DEF_TTL));
    src->neg_ttl = apr_time_from_sec(DEF(sc->neg_ttl, DEF_NEG_TTL));
    src->mc_ttl = (apr_uint32_t)DEF(sc->mc_ttl, DEF_MC_TTL);
    src->mc_neg_ttl = (apr_uint32_t)DEF(sc->mc_neg_ttl, DEF_MC_NEG_TTL);
    src->stale = apr_time_from_sec(DEF(sc->stale, DEF_STALE));
    src->cache_size = (apr_uint32_t)DEF(sc->cache_size, DEF_CACHE_SIZE);
    src->checks = *checks;
    src->checks.check_dirs = 0;

    /* Whoever else reaches memcached (a hosting's PHP does) could make
     * every node serve its own tree for another domain: values are sealed
     * with a key only root and httpd read, unless the operator says
     * "none" (memcached reachable by the nodes alone, e.g. with SASL). */
    if (src->mc_servers && !sc->mc_key) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, W4ALOGNO(00143)
                     "W4AVhostMemcached %s without W4AVhostMemcachedKey: "
                     "anyone who reaches memcached could choose what every "
                     "node serves for any domain; give the key file "
                     "(w4a-vhostmap keygen), or 'W4AVhostMemcachedKey none' "
                     "when only the nodes can reach memcached",
                     src->mc_servers);
        return NULL;
    }
    if (src->mc_servers && !*sc->mc_key) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, W4ALOGNO(00144)
                     "W4AVhostMemcached %s without a key (W4AVhostMemcachedKey "
                     "none): its values are believed as they come; only the "
                     "nodes must be able to reach it", src->mc_servers);
    }
    else if (src->mc_servers) {
        const char *err = NULL;
        apr_status_t rv = w4a_mac_key_load(&src->mac_key, sc->mc_key, &err,
                                           pconf);
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, W4ALOGNO(00142)
                         "W4AVhostMemcachedKey %s: %s", sc->mc_key, err);
            return NULL;
        }
        src->mc_key_path = sc->mc_key;
    }
    if (src->mc_servers) {
        apr_shm_t *shm;
        if (apr_shm_create(&shm, sizeof(apr_uint64_t), NULL, pconf)
            == APR_SUCCESS) {
            src->node_gen = apr_shm_baseaddr_get(shm);
            *src->node_gen = 0;
        }
    }

    /* The file whose byte ranges serialise database queries between the
     * processes of this node; the children open it as the server user. */
    src->lock_path = ap_runtime_dir_relative(pconf, LOCK_FILE);
    fd = open(src->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || (geteuid() == 0
                   && fchown(fd, ap_unixd_config.user_id,
                             ap_unixd_config.group_id) != 0)) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, errno, s, W4ALOGNO(00136)
                     "cannot create the fetch lock file %s", src->lock_path);
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    close(fd);
    apr_hash_set(states, key, APR_HASH_KEY_STRING, src);
    APR_ARRAY_PUSH(sources, vhost_source *) = src;
    return src;
}

void vhost_source_child_init(apr_pool_t *pchild, server_rec *s)
{
    int i, threads = 16;

    if (!sources) {
        return;
    }
    ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads);
    for (i = 0; i < sources->nelts; i++) {
        vhost_source *src = APR_ARRAY_IDX(sources, i, vhost_source *);
        apr_status_t rv;

        apr_thread_mutex_create(&src->mutex, APR_THREAD_MUTEX_DEFAULT, pchild);
        apr_thread_cond_create(&src->cond, pchild);
        apr_pool_create(&src->pool, pchild);
        src->cache = apr_hash_make(src->pool);
        if (src->mc_servers) {
            w4a_mc_opts_t o;
            const char *err = NULL;
            memset(&o, 0, sizeof(o));
            o.prefix = src->mc_prefix;
            o.key = src->mac_key;
            o.timeout_ms = src->mc_timeout;
            o.retry_s = 1;
            o.max_conns = threads > 0 ? (apr_uint32_t)threads : 16;
            rv = w4a_mc_create(&src->mc, src->mc_servers, &o, &err, pchild);
            if (rv != APR_SUCCESS) {
                src->mc = NULL;
                ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, W4ALOGNO(00137)
                             "memcached %s: %s; this process goes to the "
                             "database directly", src->mc_servers, err);
            }
        }
    }
}

/* ------------------------------------------------------------------ */
/* Records in the cache: one malloc'ed block each.                     */

static apr_size_t slen(const char *v)
{
    return v ? strlen(v) + 1 : 0;
}

static const char *pack_str(char **at, const char *v)
{
    char *out;
    if (!v) {
        return NULL;
    }
    out = *at;
    memcpy(out, v, strlen(v) + 1);
    *at += strlen(v) + 1;
    return out;
}

static int entry_store(entry *e, const w4a_hosting_t *rec)
{
    apr_size_t n = slen(rec->domain) + slen(rec->matched) + slen(rec->hosting)
                   + slen(rec->docroot) + slen(rec->php_version)
                   + slen(rec->log_dir) + slen(rec->media_host);
    char *blob = malloc(n ? n : 1), *at = blob;

    if (!blob) {
        return 0;
    }
    free(e->blob);
    e->blob = blob;
    e->rec = *rec;
    e->rec.domain = pack_str(&at, rec->domain);
    e->rec.matched = pack_str(&at, rec->matched);
    e->rec.hosting = pack_str(&at, rec->hosting);
    e->rec.docroot = pack_str(&at, rec->docroot);
    e->rec.php_version = pack_str(&at, rec->php_version);
    e->rec.log_dir = pack_str(&at, rec->log_dir);
    e->rec.media_host = pack_str(&at, rec->media_host);
    return 1;
}

static const char *pdup(apr_pool_t *p, const char *v)
{
    return v ? apr_pstrdup(p, v) : NULL;
}

static const w4a_hosting_t *rec_copy(apr_pool_t *p, const w4a_hosting_t *in)
{
    w4a_hosting_t *rec = apr_palloc(p, sizeof(*rec));
    *rec = *in;
    rec->domain = pdup(p, in->domain);
    rec->matched = pdup(p, in->matched);
    rec->hosting = pdup(p, in->hosting);
    rec->docroot = pdup(p, in->docroot);
    rec->php_version = pdup(p, in->php_version);
    rec->log_dir = pdup(p, in->log_dir);
    rec->media_host = pdup(p, in->media_host);
    return rec;
}

static void entry_free(entry *e)
{
    free(e->blob);
    free(e->key);
    free(e);
}

/* Under the mutex: make room by dropping what is least useful. */
static void cache_trim(vhost_source *src, apr_time_t now)
{
    apr_hash_index_t *hi;
    unsigned target = src->cache_size - src->cache_size / 10;
    int pass;

    for (pass = 0; pass < 2 && apr_hash_count(src->cache) > target; pass++) {
        for (hi = apr_hash_first(NULL, src->cache); hi;
             hi = apr_hash_next(hi)) {
            entry *e = apr_hash_this_val(hi);
            int drop;
            if (e->inflight) {
                continue;
            }
            /* first pass: what can no longer be served, even stale */
            drop = pass == 1 || e->state != E_FOUND
                   || now - e->fetched > src->stale;
            if (drop && (pass == 0 ? now >= e->expires : 1)) {
                apr_hash_set(src->cache, e->key, APR_HASH_KEY_STRING, NULL);
                entry_free(e);
                if (pass == 1 && apr_hash_count(src->cache) <= target) {
                    break;
                }
            }
        }
    }
}

/* ------------------------------------------------------------------ */
/* Backends.                                                           */

typedef enum { F_FOUND, F_NEG, F_ERROR } fetch_e;

/* Rate-limited error log of a backend, per process. */
static int log_due(vhost_source *src, apr_time_t *last)
{
    apr_time_t now = apr_time_now();
    int due;
    apr_thread_mutex_lock(src->mutex);
    due = now - *last >= LOG_EVERY;
    if (due) {
        *last = now;
    }
    apr_thread_mutex_unlock(src->mutex);
    return due;
}

static void mc_failed(request_rec *r, vhost_source *src, const char *what,
                      const char *err)
{
    vhost_count(CNT_MC_ERRORS);
    if (log_due(src, &src->mc_logged)) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00130)
                      "memcached %s: %s failed (%s); going to the database "
                      "(said at most every 10 s)", src->mc_servers, what,
                      err ? err : "no answer");
    }
}

/* A value memcached gave that we did not write (W4A_MAC_EFORGED) or that
 * is past its sealed expiry (W4A_MAC_EEXPIRED): counted, logged at most
 * every 10 s per process (whoever writes them could flood the log). */
static void mc_refused(request_rec *r, vhost_source *src, apr_status_t rv,
                       const char *what, const char *mkey, const char *raw)
{
    const char *name = apr_pstrcat(r->pool, src->mc_prefix, mkey, NULL);

    if (rv == W4A_MAC_EEXPIRED) {
        apr_int64_t exp = 0;
        vhost_count(CNT_MC_EXPIRED);
        if (log_due(src, &src->expired_logged)) {
            if (raw) {
                sscanf(raw, "w4a1 %" APR_INT64_T_FMT, &exp);
            }
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, W4ALOGNO(00141)
                          "memcached value of %s (%s) expired at %"
                          APR_INT64_T_FMT "; a replay, treated as a miss "
                          "(said at most every 10 s)", what, name, exp);
        }
        return;
    }
    vhost_count(CNT_MC_FORGED);
    if (log_due(src, &src->forged_logged)) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, W4ALOGNO(00140)
                      "memcached value of %s (%s) is not sealed by our key; "
                      "treated as a miss: someone else writes to memcached "
                      "(said at most every 10 s)", what, name);
    }
}

/* The newest of this process's generation and the node's. */
static apr_uint64_t node_generation(vhost_source *src, apr_uint64_t gen)
{
    apr_uint64_t seen;

    if (!src->node_gen) {
        return gen;
    }
    for (;;) {
        seen = apr_atomic_read64(src->node_gen);
        if (seen >= gen) {
            return seen;
        }
        if (apr_atomic_cas64(src->node_gen, gen, seen) == seen) {
            return gen;
        }
    }
}

/* The generation of the cached keys, re-read at most once a second (or
 * now, with force); a generation memcached lost (evicted, restarted) is
 * put back, and a node never goes back to older keys: an older value, even
 * one genuinely sealed once, is a roll-back and is ignored. */
static apr_uint64_t generation(request_rec *r, vhost_source *src, int force)
{
    apr_time_t now = apr_time_now();
    apr_uint64_t gen;
    char *val = NULL;
    const char *err = NULL;
    apr_status_t rv;
    apr_int64_t v;

    apr_thread_mutex_lock(src->mutex);
    gen = src->gen = node_generation(src, src->gen);
    if (!force && now - src->gen_at < GEN_REFRESH) {
        apr_thread_mutex_unlock(src->mutex);
        return gen;
    }
    src->gen_at = now;
    apr_thread_mutex_unlock(src->mutex);

    rv = w4a_mc_get(src->mc, GEN_KEY, &val, &err, r->pool);
    if (rv == APR_SUCCESS) {
        apr_collapse_spaces(val, val);  /* memcached pads incremented values */
    }
    if (rv == APR_SUCCESS && w4a_parse_number(val, 0, APR_INT64_MAX, &v)) {
        if ((apr_uint64_t)v > gen) {
            gen = (apr_uint64_t)v;
        }
    }
    else if (rv == APR_NOTFOUND && gen > 0) {
        w4a_mc_add(src->mc, GEN_KEY,
                   apr_psprintf(r->pool, "%" APR_UINT64_T_FMT, gen), 0, NULL,
                   r->pool);
    }
    else if (rv == W4A_MAC_EFORGED || rv == W4A_MAC_EEXPIRED) {
        mc_refused(r, src, rv, "the generation", GEN_KEY, val);
    }
    else if (rv == APR_EGENERAL) {
        mc_failed(r, src, "reading the generation", err);
    }
    apr_thread_mutex_lock(src->mutex);
    gen = src->gen = node_generation(src, gen > src->gen ? gen : src->gen);
    apr_thread_mutex_unlock(src->mutex);
    return gen;
}

static const char *mc_key(request_rec *r, apr_uint64_t gen, const char *key)
{
    return apr_psprintf(r->pool, "%" APR_UINT64_T_FMT ":%s", gen, key);
}

/* memcached: "-" is a not-found, else a record line, checked as the map's
 * lines are (a cache shared by many nodes is not trusted more). */
static fetch_e mc_lookup(request_rec *r, vhost_source *src, const char *mkey,
                         const char *key, w4a_hosting_t **rec, int *down)
{
    char *val = NULL;
    const char *err = NULL;
    apr_status_t rv;
    w4a_hosting_t *out;

    *down = 0;
    rv = w4a_mc_get(src->mc, mkey, &val, &err, r->pool);
    if (rv == APR_NOTFOUND) {
        vhost_count(CNT_MC_MISSES);
        return F_ERROR;
    }
    if (rv == W4A_MAC_EFORGED || rv == W4A_MAC_EEXPIRED) {
        /* a miss: the database's answer is stored over it, sealed */
        mc_refused(r, src, rv, apr_psprintf(r->pool, "'%s'", key), mkey, val);
        return F_ERROR;
    }
    if (rv != APR_SUCCESS) {
        mc_failed(r, src, "get", err);
        *down = 1;
        return F_ERROR;
    }
    if (!strcmp(val, "-")) {
        vhost_count(CNT_MC_HITS);
        return F_NEG;
    }
    out = apr_pcalloc(r->pool, sizeof(*out));
    if (w4a_record_parse_line(out, val, &src->checks, &err, r->pool)
        != APR_SUCCESS || strcmp(out->matched, key)) {
        vhost_count(CNT_BAD_CACHE_VALUES);
        if (log_due(src, &src->bad_logged)) {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, W4ALOGNO(00135)
                          "memcached value of '%s' refused (%s); asking the "
                          "database (said at most every 10 s)", key,
                          err ? err : "key mismatch");
        }
        return F_ERROR;
    }
    vhost_count(CNT_MC_HITS);
    *rec = out;
    return F_FOUND;
}

static void mc_store(request_rec *r, vhost_source *src, const char *mkey,
                     const w4a_hosting_t *rec)
{
    const char *err = NULL;
    const char *val = rec ? w4a_record_format(rec, r->pool) : "-";
    if (w4a_mc_set(src->mc, mkey, val, rec ? src->mc_ttl : src->mc_neg_ttl,
                   &err, r->pool) != APR_SUCCESS) {
        mc_failed(r, src, "set", err);
    }
}

static int db_is_down(vhost_source *src)
{
    int down;
    apr_thread_mutex_lock(src->mutex);
    down = apr_time_now() < src->db_down_until;
    apr_thread_mutex_unlock(src->mutex);
    return down;
}

/* A not-found from memcached is believed only while the database is known
 * to answer: it answered this process within DB_RETRY.  Otherwise the
 * database is asked (at most about once a second per process while only
 * not-founds come from memcached), so that an outage nobody else noticed
 * (every other name served from the caches) still turns an unknown name
 * into a 503, never a cached 404. */
static int mc_negative_believed(vhost_source *src)
{
    int ok;
    apr_time_t now = apr_time_now();
    apr_thread_mutex_lock(src->mutex);
    ok = now >= src->db_down_until && now - src->db_ok_at < DB_RETRY;
    apr_thread_mutex_unlock(src->mutex);
    return ok;
}

static void db_answered(vhost_source *src)
{
    apr_thread_mutex_lock(src->mutex);
    src->db_ok_at = apr_time_now();
    apr_thread_mutex_unlock(src->mutex);
}

static fetch_e db_failed(request_rec *r, vhost_source *src, const char *key,
                         const char *why)
{
    vhost_count(CNT_DB_ERRORS);
    apr_thread_mutex_lock(src->mutex);
    src->db_down_until = apr_time_now() + DB_RETRY;
    apr_thread_mutex_unlock(src->mutex);
    if (log_due(src, &src->db_logged)) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00131)
                      "database lookup of '%s' failed: %s; serving known "
                      "records, 503 for the others, retrying every second "
                      "(said at most every 10 s)", key, why);
    }
    return F_ERROR;
}

typedef struct {
    server_rec *s;
    ap_dbd_t   *dbd;
} dbd_held;

static apr_status_t dbd_held_close(void *data)
{
    dbd_held *h = data;
    dbd_close(h->s, h->dbd);
    return APR_SUCCESS;
}

/* The request's connection.  mod_dbd drops a pooled connection it finds
 * dead (the database restarted: with reconnect=0, see the docs) and gives
 * NULL, which ap_dbd_acquire() then keeps for the whole request: one more
 * try, on a connection of our own, so that each dead connection of the
 * pool does not cost a failed lookup and a second of "database down".
 * @return NULL when there is none (the database is down). */
static ap_dbd_t *db_connection(request_rec *r)
{
    ap_dbd_t *dbd = dbd_acquire(r);
    dbd_held *h;

    if (dbd || !dbd_open || !dbd_close) {
        return dbd;
    }
    dbd = dbd_open(r->pool, r->server);
    if (dbd) {
        h = apr_palloc(r->pool, sizeof(*h));
        h->s = r->server;
        h->dbd = dbd;
        apr_pool_cleanup_register(r->pool, h, dbd_held_close,
                                  apr_pool_cleanup_null);
    }
    return dbd;
}

static fetch_e db_lookup(request_rec *r, vhost_source *src, const char *key,
                         w4a_hosting_t **rec)
{
    ap_dbd_t *dbd;
    apr_dbd_prepared_t *stmt;
    apr_dbd_results_t *res = NULL;
    apr_dbd_row_t *row = NULL;
    const char *fields[W4A_RECORD_FIELDS], *domain, *err = NULL;
    w4a_hosting_t *out = NULL;
    int rv, ncols, i, rows = 0;

    if (db_is_down(src)) {
        return F_ERROR;
    }
    dbd = db_connection(r);
    if (!dbd) {
        return db_failed(r, src, key, "no database connection (see mod_dbd's "
                         "message above)");
    }
    stmt = apr_hash_get(dbd->prepared, src->label, APR_HASH_KEY_STRING);
    if (!stmt) {
        return db_failed(r, src, key, "the query is not prepared on this "
                         "connection (see mod_dbd's message at start-up)");
    }
    vhost_count(CNT_DB_QUERIES);
    /* random access: the whole (one-row) result comes with the select, so
     * that a connection lost on the way is an error here, never an empty
     * result (pgsql's sequential mode reports a lost connection as "no
     * more rows", which would make a known name unknown) */
    rv = apr_dbd_pvselect(dbd->driver, r->pool, dbd->handle, &res, stmt, 1,
                          key, NULL);
    if (rv != 0) {
        return db_failed(r, src, key, apr_pstrdup(r->pool,
                         apr_dbd_error(dbd->driver, dbd->handle, rv)));
    }
    /* random access: the row count is known, and rows are numbered from 1
     * (every driver agrees on that; on -1, "the next row", they do not) */
    ncols = apr_dbd_num_cols(dbd->driver, res);
    rows = apr_dbd_num_tuples(dbd->driver, res);
    if (rows < 0) {
        return db_failed(r, src, key, "the driver gave no row count");
    }
    if (rows > 0 && ncols >= 7) {
        rv = apr_dbd_get_row(dbd->driver, r->pool, res, &row, 1);
        if (rv != 0) {
            return db_failed(r, src, key, apr_pstrdup(r->pool,
                             apr_dbd_error(dbd->driver, dbd->handle, rv)));
        }
        domain = apr_dbd_get_entry(dbd->driver, row, 0);
        for (i = 0; i < W4A_RECORD_FIELDS; i++) {
            fields[i] = i + 1 < ncols ? apr_dbd_get_entry(dbd->driver, row,
                                                          i + 1) : NULL;
        }
        out = apr_pcalloc(r->pool, sizeof(*out));
        if (w4a_record_parse(out, key, domain, fields, &src->checks, &err,
                             r->pool) != APR_SUCCESS) {
            out = NULL;
        }
    }
    db_answered(src);
    if (rows && ncols < 7) {
        vhost_count(CNT_BAD_RECORDS);
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00134)
                      "W4AVhostDBDQuery gives %d columns; expected 8 (domain "
                      "hosting uid gid docroot php state flags); '%s' is "
                      "unknown", ncols, key);
        return F_NEG;
    }
    if (rows > 1) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, W4ALOGNO(00138)
                      "W4AVhostDBDQuery gives %d rows for '%s'; using the "
                      "first", rows, key);
    }
    if (rows && !out) {
        vhost_count(CNT_BAD_RECORDS);
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00134)
                      "database record of '%s' refused: %s; the name is "
                      "unknown until it is fixed", key, err);
        return F_NEG;
    }
    *rec = out;
    return out ? F_FOUND : F_NEG;
}

/* A per-key lock between the processes of this node (an open file
 * description lock on one byte of the lock file); -1 when unavailable. */
static int node_lock(vhost_source *src, const char *key)
{
    struct flock fl;
    apr_uint32_t h = w4a_fnv1a(key);
    int fd = open(src->lock_path, O_RDWR | O_CLOEXEC);

    if (fd < 0) {
        return -1;
    }
    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)(h % LOCK_STRIPES);
    fl.l_len = 1;
    while (fcntl(fd, F_OFD_SETLKW, &fl) != 0) {
        if (errno != EINTR) {
            close(fd);
            return -1;
        }
    }
    return fd;
}

/* One key, from memcached or the database; NOT under the mutex. */
static fetch_e fetch(request_rec *r, vhost_source *src, const char *key,
                     w4a_hosting_t **rec)
{
    const char *mkey = NULL;
    int mc_down = 1, lock;
    fetch_e f;

    if (src->mc) {
        mkey = mc_key(r, generation(r, src, 0), key);
        f = mc_lookup(r, src, mkey, key, rec, &mc_down);
        /* a cached not-found is believed only while the database answers:
         * during an outage an unknown name is a 503, never a 404 */
        if (f == F_FOUND || (f == F_NEG && mc_negative_believed(src))) {
            return f;
        }
    }
    lock = node_lock(src, key);
    if (lock >= 0 && src->mc && !mc_down) {
        /* another process of this node may have fetched it meanwhile */
        f = mc_lookup(r, src, mkey, key, rec, &mc_down);
        if (f == F_FOUND || (f == F_NEG && mc_negative_believed(src))) {
            close(lock);
            return f;
        }
    }
    f = db_lookup(r, src, key, rec);
    if (f != F_ERROR && src->mc && !mc_down) {
        mc_store(r, src, mkey, f == F_FOUND ? *rec : NULL);
    }
    if (lock >= 0) {
        close(lock);
    }
    return f;
}

/* ------------------------------------------------------------------ */
/* Lookup.                                                             */

/* One key.  *unsure is set when SRC_NOTFOUND only repeats what was known
 * before the backends failed (a stale not-found): good enough to go on to
 * the wildcards, never to answer 404. */
static vhost_source_result_e lookup_key(request_rec *r, vhost_source *src,
                                        const char *key,
                                        const w4a_hosting_t **rec,
                                        int *unsure)
{
    apr_time_t now = apr_time_now(), waited_until = now + MAX_WAIT;
    w4a_hosting_t *got = NULL;
    entry *e;
    fetch_e f;
    vhost_source_result_e res;

    apr_thread_mutex_lock(src->mutex);
    for (;;) {
        e = apr_hash_get(src->cache, key, APR_HASH_KEY_STRING);
        if (!e) {
            break;
        }
        if (!e->inflight && now < e->expires) {
            if (e->state == E_FOUND) {
                *rec = rec_copy(r->pool, &e->rec);
                vhost_count(CNT_CACHE_HITS);
                apr_thread_mutex_unlock(src->mutex);
                return SRC_FOUND;
            }
            if (e->state == E_NEG) {
                vhost_count(CNT_CACHE_NEGATIVE_HITS);
                apr_thread_mutex_unlock(src->mutex);
                return SRC_NOTFOUND;
            }
        }
        if (!e->inflight) {
            break;
        }
        /* another thread of this process fetches it: wait for it */
        if (now >= waited_until) {
            apr_thread_mutex_unlock(src->mutex);
            return SRC_UNAVAILABLE;
        }
        vhost_count(CNT_CACHE_WAITS);
        apr_thread_cond_timedwait(src->cond, src->mutex, waited_until - now);
        now = apr_time_now();
    }
    if (!e) {
        if (apr_hash_count(src->cache) >= src->cache_size) {
            cache_trim(src, now);
        }
        e = calloc(1, sizeof(*e));
        if (!e || !(e->key = strdup(key))) {
            free(e);
            apr_thread_mutex_unlock(src->mutex);
            return SRC_UNAVAILABLE;
        }
        apr_hash_set(src->cache, e->key, APR_HASH_KEY_STRING, e);
    }
    e->inflight = 1;
    apr_thread_mutex_unlock(src->mutex);

    f = fetch(r, src, key, &got);

    apr_thread_mutex_lock(src->mutex);
    now = apr_time_now();
    e->inflight = 0;
    if (f == F_FOUND && entry_store(e, got)) {
        e->state = E_FOUND;
        e->fetched = now;
        e->expires = now + src->ttl;
        *rec = got;
        res = SRC_FOUND;
    }
    else if (f == F_NEG) {
        e->state = E_NEG;
        e->fetched = now;
        e->expires = now + src->neg_ttl;
        res = SRC_NOTFOUND;
    }
    else if (e->state == E_FOUND && now - e->fetched <= src->stale) {
        /* database down: the last known record, asked again in a second */
        e->expires = now + DB_RETRY;
        *rec = rec_copy(r->pool, &e->rec);
        vhost_count(CNT_STALE);
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, W4ALOGNO(00132)
                      "'%s': backend unavailable, serving the record known "
                      "since %" APR_TIME_T_FMT " s", key,
                      apr_time_sec(now - e->fetched));
        res = SRC_FOUND;
    }
    else if (e->state == E_NEG && now - e->fetched <= src->stale) {
        /* database down, and this name was not found when last asked */
        e->expires = now + DB_RETRY;
        *unsure = 1;
        res = SRC_NOTFOUND;
    }
    else {
        /* nothing known to serve */
        e->state = E_NONE;
        e->expires = 0;
        res = SRC_UNAVAILABLE;
    }
    apr_thread_cond_broadcast(src->cond);
    apr_thread_mutex_unlock(src->mutex);
    return res;
}

vhost_source_result_e vhost_source_find(request_rec *r, vhost_source *src,
                                        const char *host,
                                        const w4a_hosting_t **rec)
{
    const char *dot = host;
    vhost_source_result_e res;
    int keys = 0, unsure = 0;

    if (!src->mutex) {
        return SRC_UNAVAILABLE;          /* no child_init: cannot happen */
    }
    res = lookup_key(r, src, host, rec, &unsure);
    /* then "*.suffix" from the longest suffix; during an outage a name the
     * backends cannot answer for still goes on to the wildcards known */
    while ((res == SRC_NOTFOUND || res == SRC_UNAVAILABLE) && ++keys < MAX_KEYS
           && (dot = strchr(dot, '.')) != NULL) {
        dot++;
        if (res == SRC_UNAVAILABLE) {
            unsure = 1;
        }
        res = lookup_key(r, src, apr_pstrcat(r->pool, "*.", dot, NULL), rec,
                         &unsure);
    }
    /* no record, and the backends could not confirm it: 503, not 404 */
    if (res == SRC_NOTFOUND && unsure) {
        res = SRC_UNAVAILABLE;
    }
    if (res == SRC_UNAVAILABLE) {
        vhost_count(CNT_UNAVAILABLE);
    }
    return res;
}

void vhost_source_status(request_rec *r, vhost_source *src)
{
    unsigned n = 0;
    apr_uint64_t gen = 0;
    int db_down = 0;

    if (src->mutex) {
        /* the generation in force, as this node accepts it, read now:
         * not the one this process last happened to use */
        gen = src->mc ? generation(r, src, 1) : 0;
        apr_thread_mutex_lock(src->mutex);
        n = apr_hash_count(src->cache);
        db_down = apr_time_now() < src->db_down_until;
        apr_thread_mutex_unlock(src->mutex);
    }
    /* The generation is read now (the fleet's); the cache and what this
     * process last found of the database and memcached are its own,
     * under this_process. */
    ap_rprintf(r, "{\"label\":\"%s\",\"memcached\":%s%s%s,"
               "\"memcached_sealed\":%s,"
               "\"generation\":%" APR_UINT64_T_FMT ",\"ttl\":%" APR_TIME_T_FMT
               ",\"negative_ttl\":%" APR_TIME_T_FMT ",\"stale_ttl\":%"
               APR_TIME_T_FMT ",\"this_process\":{\"pid\":%ld,"
               "\"memcached_up\":%s,\"cached_names\":%u,"
               "\"database_down\":%s}}", src->label,
               src->mc_servers ? "\"" : "",
               src->mc_servers ? ap_escape_quotes(r->pool, src->mc_servers)
                               : "null",
               src->mc_servers ? "\"" : "",
               src->mac_key ? "true" : "false",
               gen, apr_time_sec(src->ttl),
               apr_time_sec(src->neg_ttl), apr_time_sec(src->stale),
               (long)getpid(), src->mc ? "true" : "false", n,
               db_down ? "true" : "false");
}
