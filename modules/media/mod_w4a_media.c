/*
 * mod_w4a_media: the media host of a domain, and asset URLs rewritten to
 * it in the domain's HTML.
 *
 * The media host.  mod_w4a_vhost resolves media.<domain> (or the record's
 * own media host) to the domain's record and sets its document root; it
 * tells (w4a_media_request) whether a request is for a media host (see
 * docs/mod_w4a_media.md).  Here such a request may
 * only be an allow-listed static file served by core: a fixup ordered
 * first refuses anything else before mod_w4a_php (or anyone) dispatches
 * it; a late fixup (after mod_rewrite, before mod_w4a_php) and a handler
 * ordered first refuse a handler or
 * a proxy request that per-directory configuration (a customer's
 * .htaccess: SetHandler, AddHandler, RewriteRule [P] or [H=]) set, and
 * force core's static handler.  Only allow-listed output filters run
 * (no SSI, no mod_filter harness).  The content type is the extension's
 * (media_types.c), never ForceType/AddType/Header's; a type a browser
 * runs as a document is refused or sent sandboxed.  A late output
 * filter, just before the response headers go out, drops Set-Cookie and
 * sets the type, CSP sandbox, CORS, Vary and Cache-Control.
 *
 * The rewriting filter.  On the domain's own host, with W4AMediaRewrite
 * on, text/html responses (static or from PHP) go through the httpd-free
 * streaming rewriter of modules/common/w4a_html.c.
 */

#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>
#include <util_filter.h>

#include <apr_atomic.h>
#include <apr_lib.h>
#include <apr_optional.h>
#include <apr_shm.h>
#include <apr_strings.h>

#include <unistd.h>
#include <zlib.h>

#include "media_private.h"
#include "media_types.h"
#include "mod_w4a_vhost.h"
#include "w4a_html.h"
#include "w4a_httpd.h"
#include "w4a_prom.h"
#include "w4a_util.h"

module AP_MODULE_DECLARE_DATA w4a_media_module;

#define W4A_UNSET         (-1)
#define STATUS_HANDLER    "w4a-media-status"
#define REWRITE_FILTER    "W4A_MEDIA_REWRITE"
#define HEADERS_FILTER    "W4A_MEDIA_HEADERS"
#define DEFAULT_CACHE     "public, max-age=2592000"
#define STATIC_HANDLER    "default-handler"
#define PASS_AT           65536     /* bytes of output passed on at once */
#define FEED_SLICE        65536     /* bytes fed to the rewriter at once */
#define MAX_TOKEN_LIMIT   (16 * 1024 * 1024)
#define ZBUF_SIZE         16384     /* inflated bytes per inflate() call */
/* a gzip answer inflating past ZBOMB_RATIO times its compressed size
 * (HTML is 3 to 20, zlib's most is about 1030), once past ZBOMB_FREE
 * bytes, is a gzip bomb: httpd's CPU, not the tenant's pool's */
#define ZBOMB_RATIO       200
#define ZBOMB_FREE        (1 << 20)
#define DEFAULT_TYPE      "application/octet-stream"
#define SVG_TYPE          "image/svg+xml"

static const char *const default_extensions[] = {
    "css", "js", "mjs", "map", "jpg", "jpeg", "png", "gif", "webp", "avif",
    "svg", "ico", "bmp", "tif", "tiff", "woff", "woff2", "ttf", "otf", "eot",
    "mp4", "webm", "ogv", "ogg", "mp3", "m4a", "wav", "flac", "vtt", "pdf",
    "txt", NULL
};
static const char *const font_extensions[] = {
    "woff", "woff2", "ttf", "otf", "eot", NULL
};

/* Status counters, in shared memory (zero without it). */
typedef enum {
    CNT_PAGES, CNT_PAGES_REWRITTEN, CNT_URLS, CNT_BYTES_IN, CNT_BYTES_OUT,
    CNT_PAGES_PASSED, CNT_OVERLONG, CNT_MEDIA_SERVED, CNT_MEDIA_REFUSED,
    CNT_INFLATED, CNT_FILTERS_REMOVED, CNT_MAX
} counter_e;
static const char *const counter_names[CNT_MAX] = {
    "pages_filtered", "pages_rewritten", "urls_rewritten", "bytes_in",
    "bytes_out", "pages_passed", "tokens_overlong", "media_served",
    "media_refused", "pages_inflated", "media_filters_removed"
};
static apr_uint64_t *counters;

static void count(counter_e c, apr_uint64_t n)
{
    if (counters && n) {
        apr_atomic_add64(&counters[c], n);
    }
}

typedef enum { SCHEME_UNSET = 0, SCHEME_RELATIVE, SCHEME_HTTP,
               SCHEME_HTTPS } scheme_e;

/* What the media host does with a type a browser runs (SVG is always
 * served, sandboxed). */
typedef enum { ACTIVE_UNSET = 0, ACTIVE_REFUSE, ACTIVE_SANDBOX,
               ACTIVE_ATTACHMENT } active_e;

/* One W4AMediaType extension. */
typedef struct {
    const char *ext;
    const char *type;
} media_type_t;

/* The output filters that may run on the media host below the protocol
 * level, by handle (a mod_filter harness declared in .htaccess may take
 * any name): resolved at post_config. */
static const char *const allowed_filter_names[] = {
    HEADERS_FILTER, "FIXUP_HEADERS_OUT", "FIXUP_HEADERS_ERR", "DEFLATE",
    "BROTLI_COMPRESS", NULL
};
#define MAX_ALLOWED_FILTERS 8
static ap_filter_rec_t *allowed_filters[MAX_ALLOWED_FILTERS];

/* A media request's decision (request_config). */
typedef struct {
    const char *type;
} media_req;

typedef struct {
    int                 rewrite;       /* W4A_UNSET, 0, 1 */
    int                 inflate;       /* W4A_UNSET, 0, 1 */
    const char        **extensions;    /* NULL-terminated; NULL: unset */
    apr_array_header_t *ext_list;      /* while reading the directive */
    const char         *cache_control; /* NULL: unset; "": none */
    apr_array_header_t *cors_origins;  /* const char *; NULL: unset */
    apr_array_header_t *same_site;     /* const char * (%d); NULL: unset */
    int                 fonts_any;     /* W4A_UNSET, 0, 1 */
    scheme_e            scheme;        /* SCHEME_UNSET: unset */
    apr_int64_t         max_token;     /* W4A_UNSET: unset */
    apr_array_header_t *types;         /* media_type_t; NULL: unset */
    active_e            active;        /* ACTIVE_UNSET: unset */
} media_conf;

static APR_OPTIONAL_FN_TYPE(w4a_hosting) *get_hosting;
static APR_OPTIONAL_FN_TYPE(w4a_media_host) *get_media_host;
static APR_OPTIONAL_FN_TYPE(w4a_media_request) *get_media_request;

static void *create_srv_conf(apr_pool_t *p, server_rec *s)
{
    media_conf *c = apr_pcalloc(p, sizeof(*c));
    c->rewrite = W4A_UNSET;
    c->inflate = W4A_UNSET;
    c->fonts_any = W4A_UNSET;
    c->scheme = SCHEME_UNSET;
    c->max_token = W4A_UNSET;
    return c;
}

static void *merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    media_conf *base = basev, *add = addv;
    media_conf *c = apr_pcalloc(p, sizeof(*c));

    c->rewrite = add->rewrite != W4A_UNSET ? add->rewrite : base->rewrite;
    c->inflate = add->inflate != W4A_UNSET ? add->inflate : base->inflate;
    /* A list given in the virtual host replaces the main server's. */
    c->extensions = add->extensions ? add->extensions : base->extensions;
    c->ext_list = NULL;
    c->cache_control = add->cache_control ? add->cache_control
                                          : base->cache_control;
    c->cors_origins = add->cors_origins ? add->cors_origins
                                        : base->cors_origins;
    c->same_site = add->same_site ? add->same_site : base->same_site;
    c->fonts_any = add->fonts_any != W4A_UNSET ? add->fonts_any
                                               : base->fonts_any;
    c->scheme = add->scheme != SCHEME_UNSET ? add->scheme : base->scheme;
    c->max_token = add->max_token != W4A_UNSET ? add->max_token
                                               : base->max_token;
    /* the virtual host's types after the main server's: the last wins */
    c->types = add->types && base->types
               ? apr_array_append(p, base->types, add->types)
               : add->types ? add->types : base->types;
    c->active = add->active != ACTIVE_UNSET ? add->active : base->active;
    return c;
}

static media_conf *srv_conf(cmd_parms *cmd)
{
    return ap_get_module_config(cmd->server->module_config, &w4a_media_module);
}

static media_conf *req_conf(request_rec *r)
{
    return ap_get_module_config(r->server->module_config, &w4a_media_module);
}

static const char *const *conf_extensions(const media_conf *c)
{
    return c->extensions ? c->extensions : default_extensions;
}

static active_e conf_active(const media_conf *c)
{
    return c->active != ACTIVE_UNSET ? c->active : ACTIVE_REFUSE;
}

/* The type the media host sends for an extension: W4AMediaType, the
 * built-in table, or application/octet-stream; never per-directory
 * configuration's. */
static const char *conf_type(const media_conf *c, const char *ext)
{
    const char *t;
    int i;

    for (i = c->types ? c->types->nelts - 1 : -1; ext && i >= 0; i--) {
        const media_type_t *m = &APR_ARRAY_IDX(c->types, i, media_type_t);
        if (!strcasecmp(m->ext, ext)) {
            return m->type;
        }
    }
    t = media_type_builtin(ext);
    return t ? t : DEFAULT_TYPE;
}

/* ------------------------------------------------------------------ */
/* directives                                                           */

static const char *set_rewrite(cmd_parms *cmd, void *d, int on)
{
    srv_conf(cmd)->rewrite = on;
    return NULL;
}

static const char *set_inflate(cmd_parms *cmd, void *d, int on)
{
    srv_conf(cmd)->inflate = on;
    return NULL;
}

static const char *add_extension(cmd_parms *cmd, void *d, const char *arg)
{
    media_conf *c = srv_conf(cmd);
    const char *q;
    char *e;

    if (*arg == '.') {
        arg++;
    }
    if (!*arg || strlen(arg) > 16) {
        return "W4AMediaExtensions: expected extensions like css or .png";
    }
    for (q = arg; *q; q++) {
        if (!apr_isalnum(*q)) {
            return apr_pstrcat(cmd->pool, "W4AMediaExtensions: '", arg,
                               "' is not an extension (letters and digits)",
                               NULL);
        }
    }
    e = apr_pstrdup(cmd->pool, arg);
    ap_str_tolower(e);
    if (!strcmp(e, "php") || !strncmp(e, "php", 3) || !strcmp(e, "phtml")
        || !strcmp(e, "cgi") || !strcmp(e, "pl") || !strcmp(e, "shtml")) {
        return apr_pstrcat(cmd->pool, "W4AMediaExtensions: '", e, "' is a "
                           "script, never served by the media host", NULL);
    }
    if (!c->ext_list) {
        c->ext_list = apr_array_make(cmd->pool, 16, sizeof(const char *));
    }
    APR_ARRAY_PUSH(c->ext_list, const char *) = e;
    /* keep the NULL-terminated copy current */
    c->extensions = apr_pcalloc(cmd->pool, sizeof(const char *)
                                           * (c->ext_list->nelts + 1));
    memcpy(c->extensions, c->ext_list->elts,
           sizeof(const char *) * c->ext_list->nelts);
    return NULL;
}

static const char *set_cache_control(cmd_parms *cmd, void *d, const char *arg)
{
    const char *q;
    if (!strcasecmp(arg, "none")) {
        srv_conf(cmd)->cache_control = "";
        return NULL;
    }
    for (q = arg; *q; q++) {
        if (*q < 0x20 || *q == 0x7f) {
            return "W4AMediaCacheControl: control characters in the value";
        }
    }
    if (!*arg) {
        return "W4AMediaCacheControl: expected a Cache-Control value or none";
    }
    srv_conf(cmd)->cache_control = arg;
    return NULL;
}

static const char *add_cors_origin(cmd_parms *cmd, void *d, const char *arg)
{
    media_conf *c = srv_conf(cmd);
    const char *host, *q;

    if (!strncasecmp(arg, "http://", 7)) {
        host = arg + 7;
    }
    else if (!strncasecmp(arg, "https://", 8)) {
        host = arg + 8;
    }
    else {
        return apr_pstrcat(cmd->pool, "W4AMediaCORSOrigin: '", arg, "' is "
                           "not an origin like https://www.%d or "
                           "https://app.example:8443", NULL);
    }
    if (!*host) {
        return "W4AMediaCORSOrigin: an origin needs a host";
    }
    for (q = host; *q; q++) {
        if (*q == '%') {
            if (q[1] != 'd') {
                return "W4AMediaCORSOrigin: only %d (the domain) may follow "
                       "'%'";
            }
            q++;
        }
        else if (!apr_isalnum(*q) && *q != '.' && *q != '-' && *q != ':') {
            return apr_pstrcat(cmd->pool, "W4AMediaCORSOrigin: '", arg,
                               "' has more than scheme://host[:port]", NULL);
        }
    }
    if (!c->cors_origins) {
        c->cors_origins = apr_array_make(cmd->pool, 4, sizeof(const char *));
    }
    APR_ARRAY_PUSH(c->cors_origins, const char *) = apr_pstrdup(cmd->pool, arg);
    return NULL;
}

static const char *add_same_site(cmd_parms *cmd, void *d, const char *arg)
{
    media_conf *c = srv_conf(cmd);
    const char *q;

    for (q = arg; *q; q++) {
        if (*q == '%') {
            if (q[1] != 'd') {
                return "W4AMediaSameSite: only %d (the domain) may follow '%'";
            }
            q++;
        }
        else if (!apr_isalnum(*q) && *q != '.' && *q != '-') {
            return apr_pstrcat(cmd->pool, "W4AMediaSameSite: '", arg,
                               "' is not a host name like www.%d", NULL);
        }
    }
    if (!*arg || *arg == '.') {
        return "W4AMediaSameSite: expected a host name like www.%d";
    }
    if (!c->same_site) {
        c->same_site = apr_array_make(cmd->pool, 4, sizeof(const char *));
    }
    APR_ARRAY_PUSH(c->same_site, const char *) = apr_pstrdup(cmd->pool, arg);
    return NULL;
}

static const char *set_fonts_any(cmd_parms *cmd, void *d, int on)
{
    srv_conf(cmd)->fonts_any = on;
    return NULL;
}

static const char *set_scheme(cmd_parms *cmd, void *d, const char *arg)
{
    media_conf *c = srv_conf(cmd);
    if (!strcasecmp(arg, "relative")) {
        c->scheme = SCHEME_RELATIVE;
    }
    else if (!strcasecmp(arg, "http")) {
        c->scheme = SCHEME_HTTP;
    }
    else if (!strcasecmp(arg, "https")) {
        c->scheme = SCHEME_HTTPS;
    }
    else {
        return "W4AMediaURLScheme: expected relative, http or https";
    }
    return NULL;
}

static const char *set_max_token(cmd_parms *cmd, void *d, const char *arg)
{
    apr_int64_t v;
    if (!w4a_parse_number(arg, 256, MAX_TOKEN_LIMIT, &v)) {
        return "W4AMediaMaxToken: expected bytes from 256 to 16777216";
    }
    srv_conf(cmd)->max_token = v;
    return NULL;
}

static const char *add_type(cmd_parms *cmd, void *d, const char *type,
                            const char *ext)
{
    media_conf *c = srv_conf(cmd);
    const char *q, *slash = strchr(type, '/');
    media_type_t *m;

    for (q = type; *q; q++) {
        if (!apr_isalnum(*q) && !strchr("/.+-_", *q)) {
            break;
        }
    }
    if (*q || !slash || slash == type || !slash[1] || strchr(slash + 1, '/')) {
        return apr_pstrcat(cmd->pool, "W4AMediaType: '", type, "' is not a "
                           "type like image/png (no parameters)", NULL);
    }
    if (*ext == '.') {
        ext++;
    }
    for (q = ext; *q; q++) {
        if (!apr_isalnum(*q)) {
            break;
        }
    }
    if (*q || !*ext || strlen(ext) > 16) {
        return apr_pstrcat(cmd->pool, "W4AMediaType: '", ext, "' is not an "
                           "extension (letters and digits)", NULL);
    }
    if (!c->types) {
        c->types = apr_array_make(cmd->pool, 4, sizeof(media_type_t));
    }
    m = apr_array_push(c->types);
    m->type = apr_pstrdup(cmd->pool, type);
    m->ext = apr_pstrdup(cmd->pool, ext);
    ap_str_tolower((char *)m->type);
    return NULL;
}

static const char *set_active(cmd_parms *cmd, void *d, const char *arg)
{
    media_conf *c = srv_conf(cmd);
    if (!strcasecmp(arg, "refuse")) {
        c->active = ACTIVE_REFUSE;
    }
    else if (!strcasecmp(arg, "sandbox")) {
        c->active = ACTIVE_SANDBOX;
    }
    else if (!strcasecmp(arg, "attachment")) {
        c->active = ACTIVE_ATTACHMENT;
    }
    else {
        return "W4AMediaActiveTypes: expected refuse, sandbox or attachment";
    }
    return NULL;
}

static const command_rec media_cmds[] = {
    AP_INIT_FLAG("W4AMediaRewrite", set_rewrite, NULL, RSRC_CONF,
                 "On: static asset URLs in HTML pages point at the media host"),
    AP_INIT_FLAG("W4AMediaInflate", set_inflate, NULL, RSRC_CONF,
                 "On: gzip HTML from the backend is inflated and rewritten"),
    AP_INIT_ITERATE("W4AMediaExtensions", add_extension, NULL, RSRC_CONF,
                    "Extensions the media host serves and the filter rewrites"),
    AP_INIT_TAKE1("W4AMediaCacheControl", set_cache_control, NULL, RSRC_CONF,
                  "Cache-Control of the media host's answers, or none"),
    AP_INIT_ITERATE("W4AMediaCORSOrigin", add_cors_origin, NULL, RSRC_CONF,
                    "More origins allowed by CORS (%d: the domain)"),
    AP_INIT_ITERATE("W4AMediaSameSite", add_same_site, NULL, RSRC_CONF,
                    "More same-site host names to rewrite (%d: the domain)"),
    AP_INIT_FLAG("W4AMediaCORSFontsAny", set_fonts_any, NULL, RSRC_CONF,
                 "On: fonts carry Access-Control-Allow-Origin: *"),
    AP_INIT_TAKE1("W4AMediaURLScheme", set_scheme, NULL, RSRC_CONF,
                  "Rewritten URLs: relative (//host), http or https"),
    AP_INIT_TAKE1("W4AMediaMaxToken", set_max_token, NULL, RSRC_CONF,
                  "Longest tag rewritten, in bytes (longer: unchanged)"),
    AP_INIT_ITERATE2("W4AMediaType", add_type, NULL, RSRC_CONF,
                     "TYPE ext [ext...]: the type the media host sends for "
                     "these extensions"),
    AP_INIT_TAKE1("W4AMediaActiveTypes", set_active, NULL, RSRC_CONF,
                  "Types a browser runs (HTML, XML...; SVG aside): refuse, "
                  "sandbox or attachment"),
    {NULL}
};

/* ------------------------------------------------------------------ */
/* helpers                                                              */

/* The media host name when r is a media request, else NULL: asked of
 * mod_w4a_vhost's own per-request state (a pointer or two), not read from
 * the note w4a-media, a table search of every request, five times, and a
 * table that mod_headers' "Header note" could write into. */
static const char *media_host_of(request_rec *r)
{
    return get_media_request(r);
}

static const char *extension_of(const char *filename)
{
    const char *slash = strrchr(filename, '/');
    const char *dot = strrchr(slash ? slash + 1 : filename, '.');
    return dot && dot != (slash ? slash + 1 : filename) ? dot + 1 : NULL;
}

static int in_list(const char *const *list, const char *e)
{
    for (; e && *list; list++) {
        if (!strcasecmp(*list, e)) {
            return 1;
        }
    }
    return 0;
}

static int is_proxied(const request_rec *r)
{
    return r->proxyreq
           || (r->handler && (!strncasecmp(r->handler, "proxy:", 6)
                              || !strcasecmp(r->handler, "proxy-server")))
           || (r->filename && !strncmp(r->filename, "proxy:", 6));
}

/* No handler but core's static one; or mod_rewrite's internal redirect of
 * a per-directory rule, whose new request is checked again. */
static int handler_refused(const request_rec *r)
{
    if (is_proxied(r)) {
        return 1;
    }
    if (!r->handler || !strcmp(r->handler, STATIC_HANDLER)) {
        return 0;
    }
    return strcmp(r->handler, "redirect-handler")
           || !r->filename || strncmp(r->filename, "redirect:", 9);
}

static int refuse(request_rec *r, int status, int level, const char *msg)
{
    count(CNT_MEDIA_REFUSED, 1);
    ap_log_rerror(APLOG_MARK, level, 0, r, "%s", msg);
    return status;
}

/* A handler or proxying that per-directory configuration set. */
static int refuse_handler(request_rec *r, const char *host, const char *when)
{
    return refuse(r, HTTP_FORBIDDEN, APLOG_ERR, apr_psprintf(r->pool,
                  W4ALOGNO(00502) "media host %s: %s asks for %s%s on %s; "
                  "the media host serves static files only; refused", host,
                  when, is_proxied(r) ? "proxying, handler " : "handler ",
                  r->handler ? r->handler : "-",
                  r->filename ? r->filename : r->uri));
}

/* ------------------------------------------------------------------ */
/* the media host                                                       */

/* First of all fixups (before mod_rewrite's per-directory rules and
 * mod_w4a_php): an allow-listed static file, or nothing. */
static int media_fixup_first(request_rec *r)
{
    const char *host = media_host_of(r);
    media_conf *c;
    media_req *mr;
    const char *ext;

    if (!host) {
        return DECLINED;
    }
    c = req_conf(r);
    if (r->method_number != M_GET) {
        ap_allow_methods(r, 1, "GET", "HEAD", NULL);
        return refuse(r, HTTP_METHOD_NOT_ALLOWED, APLOG_INFO,
                      apr_psprintf(r->pool, W4ALOGNO(00503) "media host %s: "
                                   "method %s; only GET and HEAD; answered "
                                   "405", host, r->method));
    }
    if (handler_refused(r)) {
        return refuse_handler(r, host, "configuration");
    }
    if (!r->filename || r->finfo.filetype == APR_NOFILE) {
        return refuse(r, HTTP_NOT_FOUND, APLOG_INFO, apr_psprintf(r->pool,
                      W4ALOGNO(00504) "media host %s: %s not found; answered "
                      "404", host, r->filename ? r->filename : r->uri));
    }
    ext = extension_of(r->filename);
    if (r->finfo.filetype != APR_REG || (r->path_info && *r->path_info)
        || !in_list(conf_extensions(c), ext)) {
        return refuse(r, HTTP_FORBIDDEN, APLOG_INFO, apr_psprintf(r->pool,
                      W4ALOGNO(00501) "media host %s: %s%s is not an "
                      "allow-listed static file; answered 403", host,
                      r->filename, r->path_info ? r->path_info : ""));
    }
    mr = apr_palloc(r->pool, sizeof(*mr));
    mr->type = conf_type(c, ext);
    if (media_type_active(mr->type) && strcmp(mr->type, SVG_TYPE)
        && conf_active(c) == ACTIVE_REFUSE) {
        return refuse(r, HTTP_FORBIDDEN, APLOG_INFO, apr_psprintf(r->pool,
                      W4ALOGNO(00530) "media host %s: %s would be %s, a "
                      "document browsers run; refused (W4AMediaActiveTypes)"
                      "; answered 403", host, r->filename, mr->type));
    }
    ap_set_module_config(r->request_config, &w4a_media_module, mr);
    return DECLINED;
}

/* Late in fixups (after mod_rewrite's [H=]/[P], before mod_w4a_php):
 * nobody set a handler or proxying; core's static handler it is. */
static int media_fixup_last(request_rec *r)
{
    const char *host = media_host_of(r);
    media_req *mr;

    if (!host) {
        return DECLINED;
    }
    if (handler_refused(r)) {
        return refuse_handler(r, host, "per-directory configuration");
    }
    if (r->handler && !strcmp(r->handler, "redirect-handler")) {
        /* mod_rewrite's internal redirect: its target is checked by the
         * new request, but a target that can only be refused is refused
         * here already, before anyone (mod_w4a_php) looks at it */
        const char *target = r->filename + 9;
        apr_size_t n = strcspn(target, "?#");
        if (!in_list(conf_extensions(req_conf(r)),
                     extension_of(apr_pstrmemdup(r->pool, target, n)))) {
            return refuse(r, HTTP_FORBIDDEN, APLOG_INFO, apr_psprintf(r->pool,
                          W4ALOGNO(00501) "media host %s: a rewrite to %s, "
                          "not an allow-listed static file; answered 403",
                          host, target));
        }
        return DECLINED;
    }
    if (!r->handler) {
        r->handler = STATIC_HANDLER;
    }
    /* the extension's type, whatever mod_mime made of per-directory
     * ForceType/AddType (the headers filter says it again last) */
    mr = ap_get_module_config(r->request_config, &w4a_media_module);
    if (mr) {
        ap_set_content_type(r, mr->type);
    }
    return DECLINED;
}

/* First of all handlers: the same, whatever ran between. */
static int media_handler_guard(request_rec *r)
{
    const char *host = media_host_of(r);

    if (!host) {
        return DECLINED;
    }
    if (!r->handler || handler_refused(r)) {
        return refuse_handler(r, host, "a module");
    }
    if (!strcmp(r->handler, STATIC_HANDLER)) {
        count(CNT_MEDIA_SERVED, 1);
    }
    return DECLINED;
}

/* pattern with %d replaced by the domain */
static const char *expand_domain(apr_pool_t *p, const char *pat,
                                 const char *domain)
{
    const char *d = strstr(pat, "%d");
    if (!d) {
        return pat;
    }
    return apr_pstrcat(p, apr_pstrmemdup(p, pat, d - pat), domain,
                       expand_domain(p, d + 2, domain), NULL);
}

static int origin_allowed(request_rec *r, const media_conf *c,
                          const w4a_hosting_t *rec, const char *origin)
{
    const char *host;
    int i;

    if (!strncasecmp(origin, "https://", 8)) {
        host = origin + 8;
    }
    else if (!strncasecmp(origin, "http://", 7)) {
        host = origin + 7;
    }
    else {
        return 0;
    }
    if (rec && (!strcasecmp(host, rec->domain)
                || (rec->matched && rec->matched[0] != '*'
                    && !strcasecmp(host, rec->matched)))) {
        return 1;
    }
    for (i = 0; c->cors_origins && i < c->cors_origins->nelts; i++) {
        const char *o = APR_ARRAY_IDX(c->cors_origins, i, const char *);
        if (strstr(o, "%d")) {
            if (!rec) {
                continue;
            }
            o = expand_domain(r->pool, o, rec->domain);
        }
        if (!strcasecmp(o, origin)) {
            return 1;
        }
    }
    return 0;
}

/* Just before the headers leave: no cookies, CORS, caching. */
static apr_status_t media_headers_filter(ap_filter_t *f,
                                         apr_bucket_brigade *bb)
{
    request_rec *r = f->r;
    media_conf *c = req_conf(r);
    const w4a_hosting_t *rec = get_hosting ? get_hosting(r) : NULL;
    const char *origin = apr_table_get(r->headers_in, "Origin");
    const char *ext = r->filename ? extension_of(r->filename) : NULL;
    const char *cc = c->cache_control ? c->cache_control : DEFAULT_CACHE;
    media_req *mr = ap_get_module_config(r->request_config,
                                         &w4a_media_module);

    /* A file's type is its extension's, even if mod_headers (Header set
     * Content-Type) or a module changed it since the fixups. */
    if (mr && (r->status == HTTP_OK || r->status == HTTP_NOT_MODIFIED
               || r->status == HTTP_PARTIAL_CONTENT)) {
        apr_table_unset(r->headers_out, "Content-Type");
        apr_table_unset(r->err_headers_out, "Content-Type");
        ap_set_content_type(r, mr->type);
    }
    /* Anything a browser would run as a document of the media origin (an
     * SVG, an allowed HTML, an error page, an ErrorDocument string) runs
     * in a sandbox: no script, no same-origin access. */
    apr_table_unset(r->err_headers_out, "Content-Security-Policy");
    apr_table_unset(r->err_headers_out, "Content-Disposition");
    if (media_type_active(r->content_type)) {
        apr_table_setn(r->headers_out, "Content-Security-Policy", "sandbox");
        if (conf_active(c) == ACTIVE_ATTACHMENT) {
            apr_table_setn(r->headers_out, "Content-Disposition",
                           "attachment");
        }
    }

    apr_table_unset(r->headers_out, "Set-Cookie");
    apr_table_unset(r->err_headers_out, "Set-Cookie");
    apr_table_unset(r->headers_out, "Set-Cookie2");
    apr_table_unset(r->err_headers_out, "Set-Cookie2");
    apr_table_unset(r->err_headers_out, "Access-Control-Allow-Origin");
    apr_table_unset(r->headers_out, "Access-Control-Allow-Origin");
    apr_table_unset(r->err_headers_out, "Access-Control-Allow-Credentials");
    apr_table_unset(r->headers_out, "Access-Control-Allow-Credentials");

    if (c->fonts_any != 0 && in_list(font_extensions, ext)) {
        apr_table_setn(r->headers_out, "Access-Control-Allow-Origin", "*");
    }
    else {
        apr_table_mergen(r->headers_out, "Vary", "Origin");
        if (origin && origin_allowed(r, c, rec, origin)) {
            apr_table_set(r->headers_out, "Access-Control-Allow-Origin",
                          origin);
        }
    }
    apr_table_setn(r->headers_out, "X-Content-Type-Options", "nosniff");
    apr_table_unset(r->err_headers_out, "Cache-Control");
    if (r->status == HTTP_OK || r->status == HTTP_NOT_MODIFIED
        || r->status == HTTP_PARTIAL_CONTENT) {
        if (*cc) {
            apr_table_setn(r->headers_out, "Cache-Control", cc);
        }
        else {
            apr_table_unset(r->headers_out, "Cache-Control");
        }
    }
    ap_remove_output_filter(f);
    return ap_pass_brigade(f->next, bb);
}

/* ------------------------------------------------------------------ */
/* the rewriting filter                                                 */

typedef struct {
    w4a_html_t         *h;
    w4a_html_opts_t     opts;
    const char        **hosts;
    apr_bucket_brigade *out;
    apr_size_t          pending;     /* bytes in out */
    ap_filter_t        *f;
    int                 zstate;      /* 0: plain, 1: inflating, 2: gzip ended */
    int                 passed;      /* something went downstream */
    int                 failed;      /* the answer was cut: drop the rest */
    z_stream            z;
    unsigned char      *zbuf;
    apr_off_t           zin, zout;   /* gzip bytes read, inflated bytes */
} rw_ctx;

static apr_status_t rw_out(void *baton, const char *data, apr_size_t len)
{
    rw_ctx *ctx = baton;
    ctx->pending += len;
    return apr_brigade_write(ctx->out, NULL, NULL, data, len);
}

static int is_gzip(const char *ce)
{
    while (*ce == ' ' || *ce == '\t') {
        ce++;
    }
    return !strncasecmp(ce, "gzip", 4) ? !ce[4 + strspn(ce + 4, " \t")]
           : !strncasecmp(ce, "x-gzip", 6) ? !ce[6 + strspn(ce + 6, " \t")]
           : 0;
}

/* Why a response is not for the rewriter, or NULL; *gzip: it is gzip
 * that W4AMediaInflate lets us inflate. */
static const char *rw_skip_reason(request_rec *r, int *gzip)
{
    const char *ct = r->content_type, *ce, *ccs, *cs;
    *gzip = 0;

    if (r->main) {
        return "sub-request";
    }
    if (r->status != HTTP_OK) {
        return "status";
    }
    if (!ct || strncasecmp(ct, "text/html", 9)
        || (ct[9] && ct[9] != ';' && ct[9] != ' ')) {
        return "not text/html";
    }
    if ((ce = apr_table_get(r->headers_out, "Content-Encoding"))
        || (ce = apr_table_get(r->err_headers_out, "Content-Encoding"))) {
        if (is_gzip(ce) && req_conf(r)->inflate != 0) {
            *gzip = 1;
        }
        else if (strcasecmp(ce, "identity")) {
            return "Content-Encoding";
        }
    }
    if (((ccs = apr_table_get(r->headers_out, "Cache-Control"))
         && ap_strcasestr(ccs, "no-transform"))
        || ((ccs = apr_table_get(r->err_headers_out, "Cache-Control"))
            && ap_strcasestr(ccs, "no-transform"))) {
        return "no-transform";
    }
    if (apr_table_get(r->headers_in, "Range")) {
        return "Range";
    }
    if ((cs = ap_strcasestr(ct, "charset="))) {
        apr_size_t n;
        cs += 8;
        n = strcspn(cs, " ;");
        if (!w4a_html_charset_ok(cs, n)) {
            return "charset";
        }
    }
    if (r->header_only) {
        /* GET would be rewritten: its length is not the file's */
        apr_table_unset(r->headers_out, "Content-Length");
        return "HEAD";
    }
    return NULL;
}

static rw_ctx *rw_start(ap_filter_t *f, const w4a_hosting_t *rec)
{
    request_rec *r = f->r;
    media_conf *c = req_conf(r);
    rw_ctx *ctx = apr_pcalloc(r->pool, sizeof(*ctx));
    request_rec *top = w4a_initial_request(r);
    int n = 0, i;

    ctx->f = f;
    ctx->hosts = apr_pcalloc(r->pool, sizeof(const char *)
                             * (4 + (c->same_site ? c->same_site->nelts : 0)));
    ctx->hosts[n++] = rec->domain;
    if (rec->matched && rec->matched[0] != '*'
        && strcmp(rec->matched, rec->domain)) {
        ctx->hosts[n++] = rec->matched;
    }
    if (r->hostname && strcmp(r->hostname, rec->domain)
        && (n == 1 || strcmp(r->hostname, ctx->hosts[1]))) {
        char *hn = apr_pstrdup(r->pool, r->hostname);
        ap_str_tolower(hn);
        ctx->hosts[n++] = hn;
    }
    for (i = 0; c->same_site && i < c->same_site->nelts; i++) {
        char *hn = (char *)expand_domain(r->pool, APR_ARRAY_IDX(c->same_site, i,
                                                                const char *),
                                         rec->domain);
        hn = apr_pstrdup(r->pool, hn);
        ap_str_tolower(hn);
        ctx->hosts[n++] = hn;
    }
    ctx->hosts[n] = NULL;
    ctx->opts.hosts = ctx->hosts;
    ctx->opts.media_base = apr_pstrcat(r->pool,
                                       c->scheme == SCHEME_HTTPS ? "https:"
                                       : c->scheme == SCHEME_HTTP ? "http:"
                                       : "", "//", get_media_host(r), NULL);
    /* relative URLs resolve against what the browser asked for */
    ctx->opts.doc_path = top->parsed_uri.path ? top->parsed_uri.path : top->uri;
    ctx->opts.extensions = conf_extensions(c);
    ctx->opts.max_token = c->max_token == W4A_UNSET ? 0
                                                     : (apr_size_t)c->max_token;
    if (w4a_html_create(&ctx->h, r->pool, &ctx->opts, rw_out, ctx)
        != APR_SUCCESS) {
        return NULL;
    }
    ctx->out = apr_brigade_create(r->pool, f->c->bucket_alloc);
    return ctx;
}

static apr_status_t rw_pass(rw_ctx *ctx)
{
    apr_status_t rv;
    if (APR_BRIGADE_EMPTY(ctx->out)) {
        return APR_SUCCESS;
    }
    ctx->passed = 1;
    rv = ap_pass_brigade(ctx->f->next, ctx->out);
    apr_brigade_cleanup(ctx->out);
    ctx->pending = 0;
    return rv;
}

static void rw_done(request_rec *r, rw_ctx *ctx)
{
    w4a_html_stats_t st;
    w4a_html_get_stats(ctx->h, &st);
    count(CNT_PAGES, 1);
    count(CNT_PAGES_REWRITTEN, st.urls ? 1 : 0);
    count(CNT_URLS, st.urls);
    count(CNT_BYTES_IN, st.bytes_in);
    count(CNT_BYTES_OUT, st.bytes_out);
    count(CNT_OVERLONG, st.overlong);
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, W4ALOGNO(00510)
                  "rewrote %" APR_UINT64_T_FMT " URLs of %s to %s (%"
                  APR_UINT64_T_FMT " bytes in, %" APR_UINT64_T_FMT " out)",
                  st.urls, r->uri, ctx->opts.media_base, st.bytes_in,
                  st.bytes_out);
}

/* Feed the rewriter; pass its output on every PASS_AT bytes. */
static apr_status_t rw_feed(rw_ctx *ctx, const char *data, apr_size_t len)
{
    apr_status_t rv = w4a_html_feed(ctx->h, data, len);
    if (rv == APR_SUCCESS && ctx->pending >= PASS_AT) {
        rv = rw_pass(ctx);
    }
    return rv;
}

static apr_status_t rw_inflate_end(void *data)
{
    rw_ctx *ctx = data;
    if (ctx->zstate == 1) {
        inflateEnd(&ctx->z);
        ctx->zstate = 2;
    }
    return APR_SUCCESS;
}

/* gzip from the backend: inflated here, sent as identity (a later
 * mod_deflate compresses it again if configured). */
static apr_status_t rw_inflate_start(rw_ctx *ctx)
{
    request_rec *r = ctx->f->r;

    ctx->zbuf = apr_palloc(r->pool, ZBUF_SIZE);
    if (inflateInit2(&ctx->z, 16 + MAX_WBITS) != Z_OK) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00515)
                      "no memory to inflate the answer of %s", r->uri);
        return APR_ENOMEM;
    }
    ctx->zstate = 1;
    apr_pool_cleanup_register(r->pool, ctx, rw_inflate_end,
                              apr_pool_cleanup_null);
    apr_table_unset(r->headers_out, "Content-Encoding");
    apr_table_unset(r->err_headers_out, "Content-Encoding");
    /* what the backend tagged was the gzip representation */
    apr_table_unset(r->headers_out, "ETag");
    count(CNT_INFLATED, 1);
    return APR_SUCCESS;
}

/* A broken gzip answer.  Nothing sent yet: a clean 500.  Else, as
 * mod_proxy does for a broken backend: no last chunk, the connection is
 * closed, the client sees an incomplete answer, never a complete wrong
 * one; what follows is dropped. */
static apr_status_t rw_inflate_failed(rw_ctx *ctx)
{
    request_rec *r = ctx->f->r;

    rw_inflate_end(ctx);
    if (!ctx->passed) {
        return APR_EGENERAL;
    }
    ctx->failed = 1;
    APR_BRIGADE_INSERT_TAIL(ctx->out, ap_bucket_error_create(
        HTTP_BAD_GATEWAY, NULL, r->pool, r->connection->bucket_alloc));
    APR_BRIGADE_INSERT_TAIL(ctx->out, apr_bucket_eos_create(
        r->connection->bucket_alloc));
    return rw_pass(ctx);
}

static apr_status_t rw_inflate(rw_ctx *ctx, const char *data, apr_size_t len)
{
    request_rec *r = ctx->f->r;
    apr_status_t rv;
    int zr;

    if (ctx->zstate == 2) {
        return APR_SUCCESS;                 /* after the gzip end: ignored */
    }
    ctx->z.next_in = (unsigned char *)data;
    ctx->z.avail_in = (uInt)len;
    ctx->zin += (apr_off_t)len;
    do {
        apr_size_t n;
        ctx->z.next_out = ctx->zbuf;
        ctx->z.avail_out = ZBUF_SIZE;
        zr = inflate(&ctx->z, Z_NO_FLUSH);
        if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00513)
                          "gzip answer of %s is corrupt (%s); %s", r->uri,
                          ctx->z.msg ? ctx->z.msg : "inflate error",
                          ctx->passed ? "answer cut short" : "answered 500");
            return rw_inflate_failed(ctx);
        }
        n = ZBUF_SIZE - ctx->z.avail_out;
        ctx->zout += (apr_off_t)n;
        if (ctx->zout > ZBOMB_FREE && ctx->zout / ZBOMB_RATIO > ctx->zin) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00516)
                          "gzip answer of %s inflates to more than %d "
                          "times its size (%" APR_OFF_T_FMT " bytes from %"
                          APR_OFF_T_FMT ": a gzip bomb?); %s", r->uri,
                          ZBOMB_RATIO, ctx->zout, ctx->zin,
                          ctx->passed ? "answer cut short" : "answered 500");
            return rw_inflate_failed(ctx);
        }
        if (n && (rv = rw_feed(ctx, (const char *)ctx->zbuf, n))
            != APR_SUCCESS) {
            return rv;
        }
        if (zr == Z_STREAM_END) {
            rw_inflate_end(ctx);
            break;
        }
        if (zr == Z_BUF_ERROR && !n) {
            break;                          /* needs more input */
        }
    } while (ctx->z.avail_in > 0 || ctx->z.avail_out == 0);
    return APR_SUCCESS;
}

static apr_status_t media_rewrite_filter(ap_filter_t *f,
                                         apr_bucket_brigade *bb)
{
    request_rec *r = f->r;
    rw_ctx *ctx = f->ctx;
    apr_status_t rv;

    if (!ctx) {
        const w4a_hosting_t *rec = get_hosting ? get_hosting(r) : NULL;
        int gzip = 0;
        const char *why = rec && get_media_host(r) ? rw_skip_reason(r, &gzip)
                                                 : "no media host";
        if (why && r->header_only && !strcmp(why, "HEAD")) {
            /* no body goes out anyway: without its bytes, httpd cannot
             * put the file's length (not GET's) back */
            apr_bucket *b = APR_BRIGADE_FIRST(bb);
            while (b != APR_BRIGADE_SENTINEL(bb)) {
                apr_bucket *next = APR_BUCKET_NEXT(b);
                if (!APR_BUCKET_IS_METADATA(b)) {
                    apr_bucket_delete(b);
                }
                b = next;
            }
        }
        if (why) {
            ap_log_rerror(APLOG_MARK, APLOG_TRACE1, 0, r,
                          "not rewritten: %s", why);
            count(CNT_PAGES_PASSED, 1);
            ap_remove_output_filter(f);
            return ap_pass_brigade(f->next, bb);
        }
        if (!(ctx = f->ctx = rw_start(f, rec))) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00511)
                          "no memory for the rewriter; %s passed unchanged",
                          r->uri);
            ap_remove_output_filter(f);
            return ap_pass_brigade(f->next, bb);
        }
        /* the length changes; ETag and Last-Modified stay (the same file
         * gives the same page for the same configuration) */
        apr_table_unset(r->headers_out, "Content-Length");
        if (gzip && (rv = rw_inflate_start(ctx)) != APR_SUCCESS) {
            return rv;
        }
    }
    if (ctx->failed) {
        apr_brigade_cleanup(bb);
        return APR_SUCCESS;
    }

    while (!APR_BRIGADE_EMPTY(bb)) {
        apr_bucket *b = APR_BRIGADE_FIRST(bb);
        const char *data;
        apr_size_t len, off;

        if (APR_BUCKET_IS_METADATA(b)) {
            if (APR_BUCKET_IS_EOS(b)) {
                if (ctx->zstate == 1) {
                    ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                                  W4ALOGNO(00514) "gzip answer of %s ends "
                                  "before its gzip stream does; %s", r->uri,
                                  ctx->passed ? "answer cut short"
                                              : "answered 500");
                    apr_brigade_cleanup(bb);
                    return rw_inflate_failed(ctx);
                }
                if ((rv = w4a_html_finish(ctx->h)) != APR_SUCCESS) {
                    return rv;
                }
                rw_done(r, ctx);
            }
            APR_BUCKET_REMOVE(b);
            APR_BRIGADE_INSERT_TAIL(ctx->out, b);
            if (APR_BUCKET_IS_EOS(b) || APR_BUCKET_IS_FLUSH(b)) {
                if ((rv = rw_pass(ctx)) != APR_SUCCESS) {
                    return rv;
                }
            }
            continue;
        }
        rv = apr_bucket_read(b, &data, &len, APR_BLOCK_READ);
        if (rv != APR_SUCCESS) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, W4ALOGNO(00512)
                          "reading the response of %s", r->uri);
            return rv;
        }
        if (ctx->zstate) {
            if ((rv = rw_inflate(ctx, data, len)) != APR_SUCCESS) {
                return rv;
            }
            apr_bucket_delete(b);
            if (ctx->failed) {
                apr_brigade_cleanup(bb);
                return APR_SUCCESS;
            }
            continue;
        }
        for (off = 0; off < len; ) {
            apr_size_t n = len - off > FEED_SLICE ? FEED_SLICE : len - off;
            if ((rv = rw_feed(ctx, data + off, n)) != APR_SUCCESS) {
                return rv;
            }
            off += n;
        }
        apr_bucket_delete(b);
    }
    return rw_pass(ctx);
}

/* ------------------------------------------------------------------ */

/* Whether an output filter may run on the media host: below the
 * protocol level only the allow-listed ones (by handle); at or above it
 * httpd's registered filters (a mod_filter harness, declared per
 * directory with any name and type, is never registered). */
static int filter_allowed(const ap_filter_t *f)
{
    ap_filter_rec_t *frec = f->frec;
    int i;

    if (frec->ftype < AP_FTYPE_PROTOCOL) {
        for (i = 0; i < MAX_ALLOWED_FILTERS && allowed_filters[i]; i++) {
            if (allowed_filters[i] == frec) {
                return 1;
            }
        }
        return 0;
    }
    return ap_get_output_filter_handle(frec->name) == frec;
}

/* The bytes of the file, as they are: no SSI, no mod_filter dispatch, no
 * other content filter a customer (or a module) added. */
static void remove_filters(request_rec *r, const char *host)
{
    ap_filter_t *f, *next;

    for (f = r->output_filters; f; f = next) {
        next = f->next;
        if ((f->r == r || !f->r) && !filter_allowed(f)) {
            count(CNT_FILTERS_REMOVED, 1);
            ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, W4ALOGNO(00531)
                          "media host %s: output filter %s removed (not "
                          "allowed on the media host)", host,
                          f->frec->name ? f->frec->name : "-");
            ap_remove_output_filter(f);
        }
    }
}

static void media_insert_filter(request_rec *r)
{
    const char *host = media_host_of(r);

    if (host) {
        remove_filters(r, host);
        ap_add_output_filter(HEADERS_FILTER, NULL, r, r->connection);
    }
}

static void media_insert_rewrite_filter(request_rec *r)
{
    media_conf *c = req_conf(r);
    const w4a_hosting_t *rec;

    /* on: every hosting; unset: the hostings whose record says rewrite */
    if (c->rewrite != 0 && !r->main && !media_host_of(r) && get_hosting
        && (rec = get_hosting(r))
        && (c->rewrite == 1 || (rec->flags & W4A_FLAG_REWRITE))
        && get_media_host(r)) {        /* its lookup last: only if needed */
        ap_add_output_filter(REWRITE_FILTER, NULL, r, r->connection);
    }
}

static void media_insert_error_filter(request_rec *r)
{
    const char *host = media_host_of(r);

    if (host) {
        remove_filters(r, host);
        ap_add_output_filter(HEADERS_FILTER, NULL, r, r->connection);
    }
}

/* ------------------------------------------------------------------ */
/* status                                                               */

static int media_status_handler(request_rec *r)
{
    int i, rv;

    if (!w4a_status_begin(r, STATUS_HANDLER, &rv)) {
        return rv;
    }
    ap_rputs("{\"module\":\"mod_w4a_media\",\"counters\":{", r);
    for (i = 0; i < CNT_MAX; i++) {
        ap_rprintf(r, "%s\"%s\":%" APR_UINT64_T_FMT, i ? "," : "",
                   counter_names[i],
                   counters ? apr_atomic_read64(&counters[i]) : 0);
    }
    ap_rprintf(r, "},\"rewrite\":\"%s\",\"this_process\":{\"pid\":%ld}}"
               "\n",
               req_conf(r)->rewrite == 1 ? "on" : req_conf(r)->rewrite == 0
               ? "off" : "record", (long)getpid());
    return OK;
}

/* Prometheus: the node-wide counters of the status page, for
 * mod_w4a_metrics' page (its optional hook w4a_metrics_collect); names
 * with their unit, in the order of counter_e. */
static const char *const prom_names[CNT_MAX][2] = {
    { "w4a_media_pages_filtered_total",
      "HTML pages that went through the URL rewriting filter." },
    { "w4a_media_pages_rewritten_total",
      "HTML pages with at least one URL rewritten to the media host." },
    { "w4a_media_urls_rewritten_total",
      "Asset URLs rewritten to the media host." },
    { "w4a_media_rewrite_input_bytes_total",
      "Bytes of HTML into the rewriting filter." },
    { "w4a_media_rewrite_output_bytes_total",
      "Bytes of HTML out of the rewriting filter." },
    { "w4a_media_pages_passed_total",
      "HTML pages passed unchanged (too large, or not to be rewritten)." },
    { "w4a_media_tokens_overlong_total",
      "HTML tokens too long to be rewritten, passed as they were." },
    { "w4a_media_served_total",
      "Requests served on a media host." },
    { "w4a_media_refused_total",
      "Requests refused on a media host (not a static file)." },
    { "w4a_media_pages_inflated_total",
      "Compressed HTML pages inflated to be rewritten." },
    { "w4a_media_filters_removed_total",
      "Output filters removed from media host responses." },
};

static int media_metrics_collect(request_rec *r, w4a_prom_t *out)
{
    int i;

    for (i = 0; i < CNT_MAX; i++) {
        w4a_prom_one(out, prom_names[i][0], W4A_PROM_COUNTER, prom_names[i][1],
                     counters ? apr_atomic_read64(&counters[i]) : 0);
    }
    return OK;
}

static apr_status_t counters_cleanup(void *data)
{
    counters = NULL;
    return APR_SUCCESS;
}

static int media_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                             apr_pool_t *ptemp, server_rec *s)
{
    apr_shm_t *shm;
    apr_status_t rv;
    int i, n = 0;

    for (i = 0; allowed_filter_names[i] && n < MAX_ALLOWED_FILTERS; i++) {
        ap_filter_rec_t *frec = ap_get_output_filter_handle(
                                    allowed_filter_names[i]);
        if (frec) {
            allowed_filters[n++] = frec;
        }
    }
    while (n < MAX_ALLOWED_FILTERS) {
        allowed_filters[n++] = NULL;
    }
    get_hosting = APR_RETRIEVE_OPTIONAL_FN(w4a_hosting);
    get_media_host = APR_RETRIEVE_OPTIONAL_FN(w4a_media_host);
    get_media_request = APR_RETRIEVE_OPTIONAL_FN(w4a_media_request);
    if (!get_hosting || !get_media_host || !get_media_request) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, W4ALOGNO(00520)
                     "mod_w4a_media needs mod_w4a_vhost (load it)");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    rv = apr_shm_create(&shm, sizeof(apr_uint64_t) * CNT_MAX, NULL, pconf);
    if (rv == APR_SUCCESS) {
        counters = apr_shm_baseaddr_get(shm);
        memset((void *)counters, 0, sizeof(apr_uint64_t) * CNT_MAX);
        apr_pool_cleanup_register(pconf, NULL, counters_cleanup,
                                  apr_pool_cleanup_null);
    }
    else {
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s, W4ALOGNO(00521)
                     "no shared memory for status counters; they stay 0");
    }
    return OK;
}

static void register_hooks(apr_pool_t *p)
{
    static const char *const late_pred[] = { "mod_rewrite.c", "mod_w4a_vhost.c",
                                             NULL };
    static const char *const late_succ[] = { "mod_w4a_php.c", NULL };

    ap_hook_post_config(media_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    /* First: before mod_rewrite's per-directory rules, mod_w4a_vhost's
     * owner check and mod_w4a_php's dispatch. */
    ap_hook_fixups(media_fixup_first, NULL, NULL, APR_HOOK_REALLY_FIRST);
    /* Late: after mod_rewrite's per-directory [H=] and [P], before
     * mod_w4a_php's dispatch (also APR_HOOK_LAST); the handler guard
     * below catches whatever comes after. */
    ap_hook_fixups(media_fixup_last, late_pred, late_succ, APR_HOOK_LAST);
    ap_hook_handler(media_handler_guard, NULL, NULL, APR_HOOK_REALLY_FIRST);
    ap_hook_handler(media_status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(w4a, metrics_collect, media_metrics_collect, NULL, NULL,
                      APR_HOOK_MIDDLE);
    /* After every other module added its filters: remove them. */
    ap_hook_insert_filter(media_insert_filter, NULL, NULL,
                          APR_HOOK_REALLY_LAST);
    /* Before mod_filter's (AddOutputFilterByType DEFLATE in a customer's
     * .htaccess is a resource-level filter too): we see plain HTML. */
    ap_hook_insert_filter(media_insert_rewrite_filter, NULL, NULL,
                          APR_HOOK_FIRST);
    ap_hook_insert_error_filter(media_insert_error_filter, NULL, NULL,
                                APR_HOOK_REALLY_LAST);
    /* A resource filter, added first: after the resource filters that
     * mod_mime added earlier (AddOutputFilter INCLUDES), before those added
     * in insert_filter (mod_filter's AddOutputFilterByType, SetOutputFilter)
     * and before every content-set filter (mod_deflate): compression always
     * comes after us. */
    ap_register_output_filter(REWRITE_FILTER, media_rewrite_filter, NULL,
                              AP_FTYPE_RESOURCE);
    /* After every content filter (mod_headers, mod_deflate), before the
     * HTTP header filter (AP_FTYPE_PROTOCOL). */
    ap_register_output_filter(HEADERS_FILTER, media_headers_filter, NULL,
                              (ap_filter_type)(AP_FTYPE_PROTOCOL - 1));
}

module AP_MODULE_DECLARE_DATA w4a_media_module = {
    STANDARD20_MODULE_STUFF,
    NULL,                   /* per-directory config creator */
    NULL,                   /* dir config merger */
    create_srv_conf,        /* server config creator */
    merge_srv_conf,         /* server config merger */
    media_cmds,             /* command table */
    register_hooks,         /* set up other request processing hooks */
    AP_MODULE_FLAG_NONE     /* flags */
};
