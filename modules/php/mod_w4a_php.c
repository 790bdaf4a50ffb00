/*
 * mod_w4a_php: hand PHP to the hosting's own PHP-FPM pool.
 *
 * In fixups, after every per-directory setting (.htaccess SetHandler,
 * AddHandler, mod_rewrite) has had its say, a request of a hosting whose
 * target is PHP is checked (file inside the hosting's document root, owned
 * by the hosting's uid, uid above the minimum) and given the handler
 * "proxy:unix:<socket>|fcgi://localhost", where the socket follows
 * W4APHPSocket for (hosting, PHP version).  httpd's own mod_proxy_fcgi
 * then speaks FastCGI: we do not.
 *
 * A hosting's request may never be proxied anywhere else: a proxy handler
 * or a proxy request that per-directory configuration (a customer's
 * .htaccess) set is refused, so that no hosting can reach another
 * hosting's pool.
 *
 * Files given a PHP handler or type in the mod_php era's spellings
 * (AddHandler/AddType/SetHandler application/x-httpd-php, x-httpd-php74,
 * x-httpd-ea-php83, x-mapp-php5, php5-script, …) are PHP too; a versioned type picks that version's
 * pool when the hosting has one (its socket exists).
 *
 * FPM applies FastCGI parameters named PHP_VALUE and PHP_ADMIN_VALUE to the
 * worker for good and without any access check, and mod_proxy_fcgi sends
 * every r->subprocess_env entry as a parameter: in the very last fixup,
 * every such entry a customer could have set (SetEnv, SetEnvIf,
 * RewriteRule [E=], …) is removed, and the only PHP_VALUE left is the one
 * mod_w4a_htcompat built and checked.
 *
 * mod_proxy_fcgi itself applies per-directory configuration while it
 * builds the FastCGI request, after every fixup (ProxyFCGISetEnvIf,
 * ProxyFCGIBackendType): a request this module dispatched is handed to it
 * with mod_proxy_fcgi's configuration of the server, never the
 * directory's.  Which request this module dispatched is kept in its own
 * request configuration, which no directive can write (r->notes can be,
 * by mod_headers).
 */

#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_atomic.h>
#include <apr_lib.h>
#include <apr_optional.h>
#include <apr_strings.h>
#include <apr_thread_proc.h>

#include "php_private.h"
#include "php_limit.h"
#include "php_sock.h"
#include "w4a_httpd.h"
#include "mod_w4a_vhost.h"
#include "mod_w4a_htcompat.h"
#include "mod_w4a_php.h"
#include "w4a_util.h"

module AP_MODULE_DECLARE_DATA w4a_php_module;

#define W4A_UNSET          (-1)
#define DEFAULT_SOCKET     "/run/w4a-php/%v/%h.sock"
#define DEFAULT_MIN_UID    1000
#define DEFAULT_RETRY      10
#define LIMIT_AUTO         (-2)    /* W4APHPHostingLimit auto */
#define LIMIT_LOG_EVERY    5       /* seconds between two W4A00260 per hosting */
#define STATUS_HANDLER     "w4a-php-status"

/*
 * What this module knows of a request, in r->request_config (private to
 * the module: no directive, and no other module, writes it).
 */
typedef struct php_req php_req;
struct php_req {
    int         pre_proxy;  /* proxied before the per-directory phase */
    const char *handler;    /* the very handler string this module set */
    const char *sock;       /* its pool socket */
    apr_uint32_t sock_hash; /* w4a_fnv1a(sock), from the socket cache */
    const char *version;    /* its PHP version */
    const char *php_value;  /* the PHP_VALUE string this module set */
    php_req    *sub;        /* a dispatched sub-request of this request */
    php_req    *parent;     /* for a sub-request: its main's */
};

/* The checks before dispatch, each with its own status. */
typedef enum { CHK_OUTSIDE, CHK_OWNER, CHK_UID, CHK_NOPHP, CHK_PROXY,
               CHK_BUSY, CHK_ENGINE, CHK_MAX } check_e;
static const char *const check_names[CHK_MAX] = {
    "outside", "owner", "uid", "nophp", "proxy", "busy", "engine"
};
static const int check_defaults[CHK_MAX] = {
    HTTP_FORBIDDEN, HTTP_FORBIDDEN, HTTP_FORBIDDEN, HTTP_FORBIDDEN,
    HTTP_FORBIDDEN, HTTP_SERVICE_UNAVAILABLE, HTTP_FORBIDDEN
};

/*
 * Requests in flight per pool, in this process: a hosting whose PHP hangs
 * cannot take every thread of the process (and so every other hosting)
 * with it.  Counted per process on purpose: a child that dies takes its
 * counts with it, where a shared counter would stay too high for good.
 * Sockets are hashed into buckets; two pools sharing a bucket share its
 * limit (stricter, never looser).
 */
#define INFLIGHT_BUCKETS 4096
static apr_uint32_t inflight[INFLIGHT_BUCKETS];

typedef struct {
    int                 engine;            /* W4A_UNSET, 0, 1 */
    const char         *socket;            /* pattern; NULL: unset */
    apr_array_header_t *extensions;        /* const char * (".php"); NULL: unset */
    apr_int64_t         min_uid;           /* W4A_UNSET: unset */
    int                 status[CHK_MAX];   /* 0: unset */
    int                 retry_after;       /* W4A_UNSET: unset */
    int                 pool_limit;        /* W4A_UNSET: unset; 0: none */
    int                 hosting_limit;     /* W4A_UNSET: unset (auto);
                                              LIMIT_AUTO; 0: none; N */
    int                 client_share;      /* W4A_UNSET: unset (50); 0:
                                              none; percent */
} php_conf;

#define DEF_CLIENT_SHARE   50      /* W4APHPHostingClientShare */

/* W4APHPHostingLimit auto: max(4, MaxRequestWorkers / 8), from the MPM at
 * post_config. */
static int auto_hosting_limit = 4;

static APR_OPTIONAL_FN_TYPE(w4a_hosting) *get_hosting;
static APR_OPTIONAL_FN_TYPE(w4a_htcompat_engine) *htcompat_engine;
static APR_OPTIONAL_FN_TYPE(w4a_htcompat_php_value) *htcompat_php_value;
static module *proxy_fcgi_module_p;     /* mod_proxy_fcgi, found by name */

static void *create_srv_conf(apr_pool_t *p, server_rec *s)
{
    php_conf *c = apr_pcalloc(p, sizeof(*c));
    c->engine = W4A_UNSET;
    c->min_uid = W4A_UNSET;
    c->retry_after = W4A_UNSET;
    c->pool_limit = W4A_UNSET;
    c->hosting_limit = W4A_UNSET;
    c->client_share = W4A_UNSET;
    return c;
}

static void *merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    php_conf *base = basev, *add = addv;
    php_conf *c = apr_pcalloc(p, sizeof(*c));
    int i;

    c->engine = add->engine != W4A_UNSET ? add->engine : base->engine;
    c->socket = add->socket ? add->socket : base->socket;
    /* A list given in the virtual host replaces the main server's. */
    c->extensions = add->extensions ? add->extensions : base->extensions;
    c->min_uid = add->min_uid != W4A_UNSET ? add->min_uid : base->min_uid;
    for (i = 0; i < CHK_MAX; i++) {
        c->status[i] = add->status[i] ? add->status[i] : base->status[i];
    }
    c->retry_after = add->retry_after != W4A_UNSET ? add->retry_after
                                                   : base->retry_after;
    c->pool_limit = add->pool_limit != W4A_UNSET ? add->pool_limit
                                                 : base->pool_limit;
    c->hosting_limit = add->hosting_limit != W4A_UNSET ? add->hosting_limit
                                                       : base->hosting_limit;
    c->client_share = add->client_share != W4A_UNSET ? add->client_share
                                                     : base->client_share;
    return c;
}

static int conf_status(const php_conf *c, check_e k)
{
    return c->status[k] ? c->status[k] : check_defaults[k];
}

/* Retry-After on an error answer, unless W4APHPRetryAfter is 0. */
static void add_retry_after(request_rec *r, const php_conf *c)
{
    int retry = c->retry_after == W4A_UNSET ? DEFAULT_RETRY : c->retry_after;
    if (retry > 0) {
        apr_table_setn(r->err_headers_out, "Retry-After",
                       apr_itoa(r->pool, retry));
    }
}

static php_conf *srv_conf(cmd_parms *cmd)
{
    return ap_get_module_config(cmd->server->module_config, &w4a_php_module);
}

static const char *set_engine(cmd_parms *cmd, void *d, int on)
{
    srv_conf(cmd)->engine = on;
    return NULL;
}

static const char *set_socket(cmd_parms *cmd, void *d, const char *arg)
{
    const char *why;
    if (arg[0] != '/') {
        return "W4APHPSocket: expected an absolute path pattern";
    }
    if ((why = w4a_pool_pattern_check(arg)) != NULL) {
        return apr_pstrcat(cmd->pool, "W4APHPSocket: ", why, NULL);
    }
    srv_conf(cmd)->socket = arg;
    return NULL;
}

static const char *add_extension(cmd_parms *cmd, void *d, const char *arg)
{
    php_conf *c = srv_conf(cmd);
    if (arg[0] != '.' || arg[1] == '\0' || strchr(arg + 1, '.')
        || strchr(arg, '/')) {
        return apr_pstrcat(cmd->pool, "W4APHPExtensions: '", arg,
                           "' is not an extension like .php", NULL);
    }
    if (!c->extensions) {
        c->extensions = apr_array_make(cmd->pool, 4, sizeof(const char *));
    }
    APR_ARRAY_PUSH(c->extensions, const char *) = apr_pstrdup(cmd->pool, arg);
    return NULL;
}

static const char *set_min_uid(cmd_parms *cmd, void *d, const char *arg)
{
    apr_int64_t v;
    if (!w4a_parse_number(arg, 0, 0xFFFFFFFEll, &v)) {
        return "W4APHPMinUid: expected a uid (a whole number)";
    }
    srv_conf(cmd)->min_uid = v;
    return NULL;
}

static const char *set_check_status(cmd_parms *cmd, void *d, const char *what,
                                    const char *code)
{
    php_conf *c = srv_conf(cmd);
    apr_int64_t v;
    int i;

    if (!w4a_parse_number(code, 400, 599, &v)) {
        return "W4APHPCheckStatus: expected an HTTP status from 400 to 599";
    }
    for (i = 0; i < CHK_MAX; i++) {
        if (!strcasecmp(what, check_names[i])) {
            c->status[i] = (int)v;
            return NULL;
        }
    }
    return "W4APHPCheckStatus: expected one of outside, owner, uid, nophp, "
           "proxy, busy, engine";
}

static const char *set_retry_after(cmd_parms *cmd, void *d, const char *arg)
{
    apr_int64_t v;
    if (!w4a_parse_number(arg, 0, 86400, &v)) {
        return "W4APHPRetryAfter: expected seconds from 0 to 86400";
    }
    srv_conf(cmd)->retry_after = (int)v;
    return NULL;
}

static const char *set_pool_limit(cmd_parms *cmd, void *d, const char *arg)
{
    apr_int64_t v;
    if (!w4a_parse_number(arg, 0, 100000, &v)) {
        return "W4APHPPoolLimit: expected a number of requests (0: no limit)";
    }
    srv_conf(cmd)->pool_limit = (int)v;
    return NULL;
}

static const char *set_hosting_limit(cmd_parms *cmd, void *d,
                                     const char *arg)
{
    apr_int64_t v;
    if (!strcasecmp(arg, "auto")) {
        srv_conf(cmd)->hosting_limit = LIMIT_AUTO;
        return NULL;
    }
    if (!w4a_parse_number(arg, 0, W4A_PHP_LIMIT_MAX, &v)) {
        return "W4APHPHostingLimit: expected auto, or a number of requests "
               "from 0 (no node default) to 65535";
    }
    srv_conf(cmd)->hosting_limit = (int)v;
    return NULL;
}

static const char *set_client_share(cmd_parms *cmd, void *d,
                                    const char *arg)
{
    apr_int64_t v;
    if (!strcasecmp(arg, "off")) {
        srv_conf(cmd)->client_share = 0;
        return NULL;
    }
    if (!w4a_parse_number(arg, 1, 100, &v)) {
        return "W4APHPHostingClientShare: expected a percent from 1 to 100, "
               "or off";
    }
    srv_conf(cmd)->client_share = (int)v;
    return NULL;
}

static const command_rec php_cmds[] = {
    AP_INIT_FLAG("W4APHPEngine", set_engine, NULL, RSRC_CONF,
                 "On: hand hostings' PHP to their own PHP-FPM pools"),
    AP_INIT_TAKE1("W4APHPSocket", set_socket, NULL, RSRC_CONF,
                  "Pool socket pattern: %h hosting, %v PHP version"),
    AP_INIT_ITERATE("W4APHPExtensions", add_extension, NULL, RSRC_CONF,
                    "File extensions run by PHP (default .php)"),
    AP_INIT_TAKE1("W4APHPMinUid", set_min_uid, NULL, RSRC_CONF,
                  "PHP never runs for a hosting uid below this"),
    AP_INIT_TAKE2("W4APHPCheckStatus", set_check_status, NULL, RSRC_CONF,
                  "Status of a failed check: outside|owner|uid|nophp|proxy|busy|engine CODE"),
    AP_INIT_TAKE1("W4APHPPoolLimit", set_pool_limit, NULL, RSRC_CONF,
                  "Requests in flight per pool and httpd process (0: no limit)"),
    AP_INIT_TAKE1("W4APHPHostingLimit", set_hosting_limit, NULL, RSRC_CONF,
                  "PHP requests in flight per hosting on the whole node: "
                  "auto (default), N, or 0 (only records' php_limit)"),
    AP_INIT_TAKE1("W4APHPHostingClientShare", set_client_share, NULL,
                  RSRC_CONF, "Percent of a hosting's PHP limit one client "
                  "may hold (50), or off"),
    AP_INIT_TAKE1("W4APHPRetryAfter", set_retry_after, NULL, RSRC_CONF,
                  "Retry-After seconds sent with 503 when a pool is down"),
    {NULL}
};

/* ------------------------------------------------------------------ */

/*
 * The pool socket and handler of a hosting's PHP version: a function of
 * (W4APHPSocket, hosting, version) alone, kept in a cache of the calling
 * thread (php_sock.h says why that is safe across map reloads and hash
 * collisions).  One cache per thread: the event MPM's workers (and
 * mod_http2's) never share one, so no lock.  A thread's cache is freed
 * when the thread ends.
 */
#if APR_HAS_THREADS
static apr_threadkey_t *sock_key;       /* NULL: not in a child (yet) */
#else
static php_sock_cache_t *sock_cache;
#endif
/* Bumped by every post_config: a pattern is known by its address, which
 * only holds within one configuration generation. */
static apr_uint32_t conf_generation;

static php_sock_cache_t *thread_sock_cache(void)
{
#if APR_HAS_THREADS
    void *v = NULL;
    php_sock_cache_t *c;

    if (!sock_key) {
        return NULL;
    }
    if (apr_threadkey_private_get(&v, sock_key) == APR_SUCCESS && v) {
        return v;
    }
    if (php_sock_cache_create(&c, PHP_SOCK_SLOTS) != APR_SUCCESS) {
        return NULL;
    }
    if (apr_threadkey_private_set(c, sock_key) != APR_SUCCESS) {
        php_sock_cache_destroy(c);
        return NULL;
    }
    return c;
#else
    if (!sock_cache) {
        php_sock_cache_create(&sock_cache, PHP_SOCK_SLOTS);
    }
    return sock_cache;
#endif
}

#if APR_HAS_THREADS
static void sock_cache_free(void *c)
{
    php_sock_cache_destroy(c);
}

static apr_status_t sock_key_gone(void *data)
{
    sock_key = NULL;
    return APR_SUCCESS;
}
#endif

static void sock_cache_child_init(apr_pool_t *pchild, server_rec *s)
{
#if APR_HAS_THREADS
    sock_key = NULL;
    /* Registered before the key's own cleanup, so run after it. */
    apr_pool_cleanup_register(pchild, NULL, sock_key_gone,
                              apr_pool_cleanup_null);
    /* Without a key (out of keys: cannot happen with one per module),
     * every request expands the pattern: slower, not different. */
    if (apr_threadkey_private_create(&sock_key, sock_cache_free, pchild)
        != APR_SUCCESS) {
        sock_key = NULL;
    }
#endif
}

/* The socket and handler of (c's pattern, hosting, version), the
 * request's own copies. */
static void pool_socket(request_rec *r, const php_conf *c,
                        const char *hosting, const char *version,
                        const char **sock, const char **handler,
                        apr_uint32_t *sock_hash)
{
    php_sock_get(thread_sock_cache(), conf_generation,
                 c->socket ? c->socket : DEFAULT_SOCKET, hosting, version,
                 r->pool, sock, handler, sock_hash);
}

/* A socket is there: stat(2) by path, as mod_proxy_fcgi's connect()
 * goes by path (apr_stat would fill a whole apr_finfo_t first). */
static int socket_there(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

static int has_php_extension(const php_conf *c, const char *filename)
{
    /* the last '.' of the last component: one scan back from the end,
     * which is a few bytes away */
    const char *end = filename + strlen(filename), *dot = end;
    int i;

    while (dot > filename && dot[-1] != '.' && dot[-1] != '/') {
        dot--;
    }
    if (dot == filename || dot[-1] != '.') {
        return 0;
    }
    dot--;
    if (!c->extensions) {
        return end - dot == 4 && !strcasecmp(dot, ".php");
    }
    for (i = 0; i < c->extensions->nelts; i++) {
        if (!strcasecmp(dot, APR_ARRAY_IDX(c->extensions, i, const char *))) {
            return 1;
        }
    }
    return 0;
}

/*
 * The mod_php era's handler and type names: [application/]x-httpd-php,
 * x-httpd-php<digits> and x-httpd-ea-php<digits> (control panels),
 * x-mapp-php<digits> (1&1-style hosts), and the handler names php-script,
 * php5-script, … (some distributions' mod_php); any case, "; parameters"
 * ignored.  Not x-httpd-php-source (that one shows the source, as the
 * customer asked).
 * @return 1 for a PHP name, with *version set to "7.4" for "74", "5" for
 *         "5", or NULL for the unversioned form; 0 otherwise.
 */
static int php_type_version(apr_pool_t *p, const char *name,
                            const char **version)
{
    const char *q;
    apr_size_t n;
    int prefixed = 1;

    *version = NULL;
    if (!name) {
        return 0;
    }
    switch (name[0]) {          /* "text/html" and most others end here */
    case 'a': case 'A': case 'x': case 'X': case 'p': case 'P':
        break;
    default:
        return 0;
    }
    if (!strncasecmp(name, "application/", 12)) {
        name += 12;
    }
    if (!strncasecmp(name, "x-httpd-", 8)) {
        name += 8;
        if (!strncasecmp(name, "ea-", 3)) {
            name += 3;
        }
    }
    else if (!strncasecmp(name, "x-mapp-", 7)) {
        name += 7;
    }
    else {
        prefixed = 0;
    }
    if (strncasecmp(name, "php", 3)) {
        return 0;
    }
    name += 3;
    for (q = name; apr_isdigit(*q); q++) {
    }
    n = q - name;
    if (!prefixed) {
        if (strncasecmp(q, "-script", 7)) {
            return 0;
        }
        q += 7;
    }
    while (*q == ' ' || *q == '\t') {
        q++;
    }
    if ((*q && *q != ';') || n > 2) {
        return 0;
    }
    if (n == 2) {
        *version = apr_psprintf(p, "%c.%c", name[0], name[1]);
    }
    else if (n == 1) {
        *version = apr_pstrndup(p, name, 1);
    }
    return 1;
}

/* FPM looks PHP_VALUE and PHP_ADMIN_VALUE up by exact name; any entry that
 * could become one of those names (any case, any non-alphanumeric
 * character for '_', as CGI-style environments are spelt) goes. */
static int is_php_ini_param(const char *key)
{
    static const char *const names[] = { "PHP_VALUE", "PHP_ADMIN_VALUE" };
    int i;

    if (*key != 'P' && *key != 'p') {
        return 0;
    }
    for (i = 0; i < 2; i++) {
        const char *a = key, *b = names[i];
        for (; *a && *b; a++, b++) {
            if (*b == '_' ? apr_isalnum(*a)
                          : apr_toupper((unsigned char)*a) != *b) {
                break;
            }
        }
        if (!*a && !*b) {
            return 1;
        }
    }
    return 0;
}

static int is_proxied(const request_rec *r)
{
    return (r->handler && (r->handler[0] | 0x20) == 'p'
            && (!strncasecmp(r->handler, "proxy:", 6)
                || !strcasecmp(r->handler, "proxy-server")))
           || (r->proxyreq && r->filename
               && !strncmp(r->filename, "proxy:", 6));
}

/* The in-flight bucket of a pool socket, from its w4a_fnv1a(). */
static apr_size_t bucket_of(apr_uint32_t sock_hash)
{
    return sock_hash % INFLIGHT_BUCKETS;
}

static apr_status_t inflight_done(void *slot)
{
    apr_atomic_dec32(slot);
    return APR_SUCCESS;
}

static php_req *req_of(request_rec *r, int create)
{
    php_req *q = ap_get_module_config(r->request_config, &w4a_php_module);
    if (!q && create) {
        q = apr_pcalloc(r->pool, sizeof(*q));
        ap_set_module_config(r->request_config, &w4a_php_module, q);
    }
    return q;
}

/* A sub-request's pool goes: its main no longer has its dispatch. */
static apr_status_t sub_gone(void *data)
{
    php_req *q = data;
    if (q->parent && q->parent->sub == q) {
        q->parent->sub = NULL;
    }
    return APR_SUCCESS;
}

/*
 * The request's handler is the very string this module set when it
 * dispatched the request, or when it dispatched a sub-request of it that
 * mod_dir (DirectoryIndex) or mod_negotiation then made the request
 * itself (ap_internal_fast_redirect copies the handler, not the request
 * configuration).  Compared by address: no configuration can make it.
 * @return the request's record, or NULL.
 */
static php_req *our_dispatch(request_rec *r)
{
    php_req *q = req_of(r, 0);

    if (!q || !r->handler || r->proxyreq) {
        return NULL;
    }
    if (q->handler && r->handler == q->handler) {
        return q;
    }
    if (q->sub && r->handler == q->sub->handler) {
        q->handler = q->sub->handler;
        q->sock = q->sub->sock;
        q->sock_hash = q->sub->sock_hash;
        q->version = q->sub->version;
        q->php_value = q->sub->php_value;
        return q;
    }
    return NULL;
}

/* For mod_w4a_metrics (its "refused" counter): this module refused r. */
#define NOTE_REFUSED "w4a-php-refused"
/* ... and the hosting's pool was not there (a backend error). */
#define NOTE_BACKEND "w4a-php-backend"

static int refuse(request_rec *r, const php_conf *c, check_e k,
                  const char *fmt_reason)
{
    apr_table_setn(r->notes, NOTE_REFUSED, "check");
    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "%s", fmt_reason);
    return conf_status(c, k);
}

/* Whatever proxying exists before the per-directory phase was set up by
 * the operator (ProxyPass, server-level RewriteRule [P]); remember it, so
 * that fixups can tell it from a customer's. */
static int php_map_to_storage_mark(request_rec *r)
{
    if (is_proxied(r)) {
        req_of(r, 1)->pre_proxy = 1;
    }
    return DECLINED;
}

static int php_fixups(request_rec *r)
{
    php_conf *c = ap_get_module_config(r->server->module_config,
                                       &w4a_php_module);
    const w4a_hosting_t *rec;
    apr_uint32_t min_uid;
    const char *sock, *handler, *version, *want = NULL;
    apr_uint32_t sock_hash = 0;
    int by_type;

    if (c->engine != 1 || !get_hosting || !(rec = get_hosting(r))) {
        return DECLINED;
    }

    if (is_proxied(r)) {
        php_req *q = req_of(r, 0);
        if (q && q->pre_proxy) {
            return DECLINED;                /* the operator's own proxying */
        }
        if (our_dispatch(r)) {
            return DECLINED;    /* mod_dir's fast redirect of our sub-request */
        }
        return refuse(r, c, CHK_PROXY, apr_psprintf(r->pool, W4ALOGNO(00201)
                      "hosting %s: per-directory configuration asked to proxy "
                      "%s (handler %s); a hosting's requests only reach its "
                      "own pool; refused", rec->hosting,
                      r->filename ? r->filename : r->uri,
                      r->handler ? r->handler : "-"));
    }
    if (!r->filename
        || (r->filename[0] == 'r' && !strncmp(r->filename, "redirect:", 9))) {
        /* none, or mod_rewrite's per-directory internal redirect of an
         * existing file: its new URI comes through these fixups again */
        return DECLINED;
    }
    by_type = php_type_version(r->pool, r->handler ? r->handler
                                                   : r->content_type, &want);
    if (!by_type && !has_php_extension(c, r->filename)) {
        return DECLINED;
    }
    if (r->finfo.filetype != APR_REG) {
        return DECLINED;    /* missing script: the site's own 404, no round trip */
    }
    if (!rec->php_version) {
        return refuse(r, c, CHK_NOPHP, apr_psprintf(r->pool, W4ALOGNO(00202)
                      "hosting %s: domain %s has no PHP version; %s not run "
                      "and not served", rec->hosting, rec->domain,
                      r->filename));
    }
    if (!w4a_path_under(r->filename, rec->docroot)) {
        return refuse(r, c, CHK_OUTSIDE, apr_psprintf(r->pool, W4ALOGNO(00203)
                      "hosting %s: script %s is outside the document root %s; "
                      "refused", rec->hosting, r->filename, rec->docroot));
    }
    /* The owner of what the path is now, on a descriptor (opened without
     * blocking on a FIFO): r->finfo is the walk's earlier stat.  FPM opens
     * the path again: docs/security.md (section 4) says what that leaves.
     * open/fstat/close themselves: apr_file_open would allocate a file
     * and a cleanup, and apr_file_info_get fill a whole apr_finfo_t, on
     * every PHP request, for one mode and one uid. */
    {
        struct stat st;
        apr_status_t rv = APR_SUCCESS;
        int fd = open(r->filename, O_RDONLY | O_NONBLOCK | O_NOCTTY
                                   | O_CLOEXEC);
        if (fd < 0) {
            rv = APR_FROM_OS_ERROR(errno);
        }
        else {
            if (fstat(fd, &st) != 0) {
                rv = APR_FROM_OS_ERROR(errno);
            }
            close(fd);
        }
        if (rv != APR_SUCCESS) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, rv, r, W4ALOGNO(00230)
                          "hosting %s: cannot open script %s; answered 404",
                          rec->hosting, r->filename);
            return HTTP_NOT_FOUND;
        }
        if (!S_ISREG(st.st_mode)) {
            return refuse(r, c, CHK_OWNER, apr_psprintf(r->pool,
                          W4ALOGNO(00231) "hosting %s: script %s is no "
                          "regular file (any more); refused", rec->hosting,
                          r->filename));
        }
        if ((apr_uint32_t)st.st_uid != rec->uid) {
            return refuse(r, c, CHK_OWNER, apr_psprintf(r->pool,
                          W4ALOGNO(00204) "hosting %s: script %s belongs to "
                          "uid %ld, not the hosting's uid %u; refused",
                          rec->hosting, r->filename, (long)st.st_uid,
                          rec->uid));
        }
    }
    min_uid = c->min_uid == W4A_UNSET ? DEFAULT_MIN_UID : (apr_uint32_t)c->min_uid;
    if (rec->uid < min_uid) {
        return refuse(r, c, CHK_UID, apr_psprintf(r->pool, W4ALOGNO(00205)
                      "hosting %s: uid %u below W4APHPMinUid %u; PHP not run",
                      rec->hosting, rec->uid, min_uid));
    }

    if (htcompat_engine && !htcompat_engine(r)) {
        return refuse(r, c, CHK_ENGINE, apr_psprintf(r->pool, W4ALOGNO(00213)
                      "hosting %s: PHP engine off in this directory "
                      "(php_flag engine off); %s neither run nor served",
                      rec->hosting, r->filename));
    }

    /* A versioned type (x-httpd-php74) picks that version's pool when the
     * hosting has one; otherwise, the domain's version. */
    version = NULL;
    if (want && strcmp(want, rec->php_version)) {
        pool_socket(r, c, rec->hosting, want, &sock, &handler, &sock_hash);
        if (socket_there(sock)) {
            version = want;
        }
        else {
            ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, W4ALOGNO(00214)
                          "hosting %s: %s asks for PHP %s, which the hosting "
                          "has no pool of; PHP %s used", rec->hosting,
                          r->filename, want, rec->php_version);
        }
    }
    if (!version) {
        version = rec->php_version;
        pool_socket(r, c, rec->hosting, version, &sock, &handler,
                    &sock_hash);
        if (!socket_there(sock)) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00210)
                          "hosting %s: PHP %s pool socket %s is missing; "
                          "answered 503", rec->hosting, version, sock);
            apr_table_setn(r->notes, NOTE_BACKEND, "missing");
            add_retry_after(r, c);
            return HTTP_SERVICE_UNAVAILABLE;
        }
    }

    /* The node-wide limit of the hosting (every child, every pool of it):
     * the record's php_limit, else W4APHPHostingLimit. */
    {
        apr_uint32_t limit = rec->php_limit, n;
        if (!limit) {
            limit = c->hosting_limit == W4A_UNSET
                    || c->hosting_limit == LIMIT_AUTO
                    ? (apr_uint32_t)auto_hosting_limit
                    : (apr_uint32_t)c->hosting_limit;
        }
        if (limit) {
            int pct = c->client_share == W4A_UNSET ? DEF_CLIENT_SHARE
                                                   : c->client_share;
            apr_uint32_t share = w4a_inflight_share(limit, pct);
            unsigned char client[16];
            const unsigned char *who = NULL;
            int rc;

            if (share && r->useragent_addr) {
                w4a_client_share_bytes(r->useragent_addr->family,
                                       r->useragent_addr->ipaddr_ptr, 64,
                                       client);
                who = client;
            }
            rc = php_limit_enter(rec->hosting, limit, who, share, &n,
                                 r->pool);
            if (rc == W4A_INFLIGHT_FULL || rc == W4A_INFLIGHT_SHARE) {
                apr_uint32_t refused;
                int due = php_limit_refused(rec->hosting, LIMIT_LOG_EVERY,
                                            &refused);
                if (due && rc == W4A_INFLIGHT_SHARE) {
                    ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                                  W4ALOGNO(00265) "hosting %s: client %s "
                                  "holds its share of the hosting's PHP "
                                  "requests in flight (%u of its limit of "
                                  "%u, W4APHPHostingClientShare %d%%); "
                                  "answered %d (%u refused so far; logged "
                                  "at most every %d s)", rec->hosting,
                                  r->useragent_ip, share, limit, pct,
                                  conf_status(c, CHK_BUSY), refused,
                                  LIMIT_LOG_EVERY);
                }
                else if (due) {
                    ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                                  W4ALOGNO(00260) "hosting %s: PHP requests "
                                  "in flight on the node at its limit of %u "
                                  "(%s); answered %d (%u refused so far; "
                                  "logged at most every %d s)", rec->hosting,
                                  limit, rec->php_limit ? "record's php_limit"
                                                        : "W4APHPHostingLimit",
                                  conf_status(c, CHK_BUSY), refused,
                                  LIMIT_LOG_EVERY);
                }
                apr_table_setn(r->notes, NOTE_REFUSED,
                               rc == W4A_INFLIGHT_SHARE ? "client-share"
                                                        : "busy");
                add_retry_after(r, c);
                return conf_status(c, CHK_BUSY);
            }
        }
    }

    if (c->pool_limit > 0) {
        apr_uint32_t *slot = &inflight[bucket_of(sock_hash)];
        apr_uint32_t n = apr_atomic_inc32(slot) + 1;
        if (n > (apr_uint32_t)c->pool_limit) {
            apr_atomic_dec32(slot);
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00212)
                          "hosting %s: PHP pool %s is busy (%u requests in "
                          "flight in this process, W4APHPPoolLimit %d); "
                          "answered %d", rec->hosting, sock, n - 1,
                          c->pool_limit, conf_status(c, CHK_BUSY));
            apr_table_setn(r->notes, NOTE_REFUSED, "busy");
            add_retry_after(r, c);
            return conf_status(c, CHK_BUSY);
        }
        apr_pool_cleanup_register(r->pool, slot, inflight_done,
                                  apr_pool_cleanup_null);
    }

    /* The Authorization header reaches PHP, as it did under mod_php. */
    {
        const char *auth = apr_table_get(r->headers_in, "Authorization");
        if (auth) {
            apr_table_setn(r->subprocess_env, "HTTP_AUTHORIZATION", auth);
        }
    }
    {
        php_req *q = req_of(r, 1);
        q->handler = r->handler = handler;
        q->sock = sock;
        q->sock_hash = sock_hash;
        q->version = version;
        if (r->main) {
            /* mod_dir may make this sub-request its main request */
            q->parent = req_of(r->main, 1);
            q->parent->sub = q;
            apr_pool_cleanup_register(r->pool, q, sub_gone,
                                      apr_pool_cleanup_null);
        }
    }
    return DECLINED;
}

/* mod_proxy_fcgi's configuration of the server (the operator's, outside
 * any <Directory>), in place of the one the request's directories merged:
 * the ProxyFCGISetEnvIf and ProxyFCGIBackendType of a .htaccess never
 * apply to a dispatched request.  r->per_dir_config may be shared (httpd
 * caches merged configurations): the request gets a copy of its own. */
static void server_fcgi_conf(request_rec *r)
{
    ap_conf_vector_t *v;
    void *srv;
    module *m;

    if (!proxy_fcgi_module_p) {
        return;
    }
    srv = ap_get_module_config(r->server->lookup_defaults,
                               proxy_fcgi_module_p);
    if (ap_get_module_config(r->per_dir_config, proxy_fcgi_module_p) == srv) {
        return;
    }
    v = ap_create_per_dir_config(r->pool);
    for (m = ap_top_module; m; m = m->next) {
        ap_set_module_config(v, m, ap_get_module_config(r->per_dir_config,
                                                        m));
    }
    ap_set_module_config(v, proxy_fcgi_module_p, srv);
    r->per_dir_config = v;
}

/* The last fixup of all: no PHP_VALUE / PHP_ADMIN_VALUE that any
 * per-directory directive or module set reaches FPM; a dispatched request
 * gets the one mod_w4a_htcompat built, if any, and mod_proxy_fcgi's
 * configuration of the server. */
static int php_fixups_ini(request_rec *r)
{
    php_conf *c = ap_get_module_config(r->server->module_config,
                                       &w4a_php_module);
    const w4a_hosting_t *rec;
    const apr_array_header_t *arr;
    const apr_table_entry_t *e;
    const char *ini = NULL;
    php_req *q;
    int i, n = 0;

    if (c->engine != 1 || !get_hosting || !(rec = get_hosting(r))) {
        return DECLINED;
    }
    q = our_dispatch(r);
    if (!q && !is_proxied(r)) {
        /* Served in httpd (a static file, a CGI as the hosting): its
         * environment reaches no FPM worker, so no worker keeps it */
        return DECLINED;
    }
    arr = apr_table_elts(r->subprocess_env);
    e = (const apr_table_entry_t *)arr->elts;
    for (i = 0; i < arr->nelts; i++) {
        if (e[i].key && is_php_ini_param(e[i].key)) {
            n++;
        }
    }
    if (n) {
        /* Collect the keys first: unsetting while walking skips entries.
         * The PHP_VALUE this module set on a sub-request that became this
         * request (DirectoryIndex) is its own: removed without a word. */
        const char **keys = apr_palloc(r->pool, n * sizeof(*keys));
        int k = 0, quiet = 0;
        for (i = 0; i < arr->nelts; i++) {
            if (e[i].key && is_php_ini_param(e[i].key)) {
                if (q && q->php_value && e[i].val == q->php_value
                    && !strcmp(e[i].key, "PHP_VALUE")) {
                    quiet = 1;
                    continue;
                }
                keys[k++] = e[i].key;
            }
        }
        for (i = 0; i < k; i++) {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, W4ALOGNO(00215)
                          "%s: environment variable %s set by configuration "
                          "removed: FPM would apply it to the worker for "
                          "good, unchecked (use php_value)",
                          r->filename ? r->filename : r->uri, keys[i]);
            apr_table_unset(r->subprocess_env, keys[i]);
        }
        if (quiet) {
            apr_table_unset(r->subprocess_env, "PHP_VALUE");
        }
    }
    if (!q) {
        return DECLINED;
    }
    /* mod_proxy_fcgi reads it while it canonicalises the URL: "full" would
     * walk the directories again inside the handler, the others re-split
     * the script's path; the path was split by httpd's own walk. */
    if (apr_table_get(r->subprocess_env, "proxy-fcgi-pathinfo")) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, W4ALOGNO(00241)
                      "%s: proxy-fcgi-pathinfo set by configuration "
                      "ignored for a hosting's PHP", r->filename);
        apr_table_unset(r->subprocess_env, "proxy-fcgi-pathinfo");
    }
    server_fcgi_conf(r);
    q->php_value = NULL;
    if (htcompat_php_value) {
        apr_status_t rv = htcompat_php_value(r, rec->hosting, q->version,
                                             q->sock, q->sock_hash, &ini);
        if (rv != APR_SUCCESS) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, W4ALOGNO(00240)
                          "hosting %s: the settings of its PHP %s pool are "
                          "unknown (see above); %s not run", rec->hosting,
                          q->version, r->filename);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        if (ini) {
            apr_table_setn(r->subprocess_env, "PHP_VALUE", ini);
            q->php_value = ini;
        }
    }
    return DECLINED;
}

/* A dispatched request whose pool refused or died: tell the client when to
 * come back, and say which hosting and socket in the log. */
static void php_insert_error_filter(request_rec *r)
{
    php_conf *c;
    php_req *q = req_of(r, 0);
    const char *sock = q && q->handler ? q->sock : NULL;

    if (!sock || (r->status != HTTP_SERVICE_UNAVAILABLE
                  && r->status != HTTP_GATEWAY_TIME_OUT)) {
        return;
    }
    c = ap_get_module_config(r->server->module_config, &w4a_php_module);
    if (r->status == HTTP_SERVICE_UNAVAILABLE) {
        add_retry_after(r, c);
    }
    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00211)
                  "PHP pool at %s %s; answered %d", sock,
                  r->status == HTTP_GATEWAY_TIME_OUT ? "timed out"
                                                     : "refused or died",
                  r->status);
}

/* The node's PHP figures: JSON, through the operator's <Location> only
 * (w4a_status_begin); ?hosting=NAME adds that hosting's. */
static int php_status_handler(request_rec *r)
{
    php_limit_stats_t st;
    int rv;

    if (!w4a_status_begin(r, STATUS_HANDLER, &rv)) {
        return rv;
    }
    php_limit_stats(&st);
    ap_rprintf(r, "{\"hosting_limit_auto\": %d, \"rows\": %u, "
               "\"children\": %u, \"buckets\": %u, \"inflight\": %"
               APR_UINT64_T_FMT ", \"refused\": %" APR_UINT64_T_FMT
               ", \"refused_client_share\": %u, \"busy_buckets\": %u",
               auto_hosting_limit, st.rows, st.children, st.buckets,
               st.inflight, st.refused, st.share_refused, st.busy);
    if (r->args && !strncmp(r->args, "hosting=", 8)) {
        const char *name = r->args + 8;
        apr_uint32_t n, refused;
        const char *q;
        for (q = name; *q; q++) {
            if (!apr_isalnum(*q) && *q != '_' && *q != '-' && *q != '.') {
                return HTTP_BAD_REQUEST;
            }
        }
        php_limit_hosting(name, &n, &refused);
        ap_rprintf(r, ", \"hosting\": {\"name\": \"%s\", \"inflight\": %u, "
                   "\"refused\": %u}", name, n, refused);
    }
    ap_rputs("}\n", r);
    return OK;
}

static void php_child_init(apr_pool_t *pchild, server_rec *s)
{
    sock_cache_child_init(pchild, s);
    php_limit_child_init(pchild, s);
}

static int php_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                           apr_pool_t *ptemp, server_rec *s)
{
    server_rec *sv;
    int daemons = 0, threads = 0, any = 0;

    conf_generation++;      /* the patterns' addresses are this pass's */

    /* Here rather than in optional_fn_retrieve, which httpd runs only
     * after post_config. */
    get_hosting = APR_RETRIEVE_OPTIONAL_FN(w4a_hosting);
    htcompat_engine = APR_RETRIEVE_OPTIONAL_FN(w4a_htcompat_engine);
    htcompat_php_value = APR_RETRIEVE_OPTIONAL_FN(w4a_htcompat_php_value);
    /* By name, not by symbol: mod_proxy_fcgi exports only its module. */
    proxy_fcgi_module_p = ap_find_linked_module("mod_proxy_fcgi.c");
    for (sv = s; sv; sv = sv->next) {
        php_conf *c = ap_get_module_config(sv->module_config, &w4a_php_module);
        if (c->engine == 1 && !get_hosting) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, sv, W4ALOGNO(00220)
                         "W4APHPEngine on needs mod_w4a_vhost (load it)");
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        any |= c->engine == 1;
    }
    /* MaxRequestWorkers = daemons x threads (prefork: threads 1). */
    if (ap_mpm_query(AP_MPMQ_MAX_DAEMONS, &daemons) == APR_SUCCESS
        && ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads) == APR_SUCCESS
        && daemons > 0) {
        int mrw = daemons * (threads > 0 ? threads : 1);
        auto_hosting_limit = mrw / 8 > 4 ? mrw / 8 : 4;
    }
    if (any) {
        php_limit_post_config(s);   /* a failure is logged; not fatal */
    }
    return OK;
}

/* For mod_w4a_vhost's handler guard: this module's own dispatch. */
static int w4a_php_dispatched(request_rec *r)
{
    return our_dispatch(r) != NULL;
}

/* Prometheus: the node-wide figures of the status page (the limit's
 * shared table), for mod_w4a_metrics' page (w4a_metrics_collect). */
#include "w4a_prom.h"

static int php_metrics_collect(request_rec *r, w4a_prom_t *out)
{
    php_limit_stats_t st;

    php_limit_stats(&st);
    w4a_prom_one(out, "w4a_php_inflight_requests", W4A_PROM_GAUGE,
                 "PHP requests in flight, node-wide (W4APHPHostingLimit's "
                 "table).", st.inflight);
    w4a_prom_one(out, "w4a_php_busy_hostings", W4A_PROM_GAUGE,
                 "Hostings with PHP requests in flight.", st.busy);
    w4a_prom_one(out, "w4a_php_hosting_limit_refused_total", W4A_PROM_COUNTER,
                 "PHP requests refused at W4APHPHostingLimit (a client's "
                 "share included).", st.refused);
    w4a_prom_one(out, "w4a_php_hosting_limit_client_share_refused_total",
                 W4A_PROM_COUNTER, "PHP requests refused because their "
                 "client held its share (W4APHPHostingClientShare).",
                 st.share_refused);
    w4a_prom_one(out, "w4a_php_hosting_limit_auto", W4A_PROM_GAUGE,
                 "The hosting limit W4APHPHostingLimit auto stands for "
                 "(MaxRequestWorkers / 8, at least 4).",
                 (apr_uint64_t)(auto_hosting_limit > 0 ? auto_hosting_limit
                                                       : 0));
    w4a_prom_one(out, "w4a_php_hosting_limit_table_rows", W4A_PROM_GAUGE,
                 "Rows of the limit's table (children it can hold).",
                 st.rows);
    w4a_prom_one(out, "w4a_php_hosting_limit_children", W4A_PROM_GAUGE,
                 "Rows of the limit's table held by live children.",
                 st.children);
    w4a_prom_one(out, "w4a_php_hosting_limit_buckets", W4A_PROM_GAUGE,
                 "Hosting buckets of the limit's table.", st.buckets);
    return OK;
}

static void register_hooks(apr_pool_t *p)
{
    /* Fixups run after mod_rewrite's per-directory rules (which may set a
     * proxy request) and after mod_w4a_vhost's owner check. */
    static const char *const after[] = { "mod_rewrite.c", "mod_w4a_vhost.c",
                                         NULL };

    ap_hook_post_config(php_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(php_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_status(php_limit_child_status, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(php_status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    /* Before core's directory walk applies .htaccess. */
    ap_hook_map_to_storage(php_map_to_storage_mark, NULL, NULL,
                           APR_HOOK_REALLY_FIRST);
    ap_hook_fixups(php_fixups, after, NULL, APR_HOOK_LAST);
    /* After every other fixup (mod_env, mod_rewrite, mod_setenvif's
     * per-directory work, ours above): the last word on PHP_VALUE. */
    ap_hook_fixups(php_fixups_ini, NULL, NULL, APR_HOOK_REALLY_LAST + 10);
    ap_hook_insert_error_filter(php_insert_error_filter, NULL, NULL,
                                APR_HOOK_MIDDLE);
    APR_REGISTER_OPTIONAL_FN(w4a_php_dispatched);
    APR_OPTIONAL_HOOK(w4a, metrics_collect, php_metrics_collect, NULL, NULL,
                      APR_HOOK_MIDDLE);
}

module AP_MODULE_DECLARE_DATA w4a_php_module = {
    STANDARD20_MODULE_STUFF,
    NULL,                   /* per-directory config creator */
    NULL,                   /* dir config merger */
    create_srv_conf,        /* server config creator */
    merge_srv_conf,         /* server config merger */
    php_cmds,               /* command table */
    register_hooks,         /* set up other request processing hooks */
    AP_MODULE_FLAG_NONE     /* flags */
};
