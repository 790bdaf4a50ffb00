/*
 * What a hosting's per-directory configuration may not decide.
 *
 * A customer's .htaccess can name any handler (SetHandler, AddHandler,
 * RewriteRule [H=]) that the node's modules offer: mod_status's
 * server-status, mod_info's server-info, mod_lua's lua-script (code run as
 * www-data), mod_proxy's proxy: handlers (another hosting's pool), our own
 * status pages.  Here, for a hosting's request, a handler that the
 * operator's own sections did not set must be one that serves the
 * hosting's files as the hosting: static files, SSI without exec, type
 * maps, PHP through mod_w4a_php, CGI through suEXEC; or one the operator
 * lists with W4AVhostHandler.  Anything else is a 403 and a tagged line.
 *
 * "The operator's own sections": the core's handler as it stands at
 * translate_name, after the server's, <Location>'s and <If>'s sections and
 * before any <Directory> (and so any .htaccess) is merged.
 *
 * At start-up, every <Directory> that reaches the hostings' tree is
 * checked for overrides that hand customers a directive that runs code,
 * reaches a backend or maps their files (W4A00153).
 */

#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>
#include <ap_expr.h>
#include <unixd.h>

#include <apr_optional.h>
#include <apr_portable.h>
#include <apr_strings.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vhost_private.h"
#include "mod_w4a_vhost.h"
#include "mod_w4a_php.h"
#include "w4a_envhdr.h"
#include "w4a_util.h"

#define OP_HANDLER_KEY "w4a-vhost-operator-handler"
#define HTACCESS_MAX   (1024 * 1024)    /* bytes of a customer's .htaccess */

typedef struct {
    const request_rec *r;       /* the request it was taken for */
    const char        *handler; /* NULL: the operator set none */
} op_handler;

static APR_OPTIONAL_FN_TYPE(w4a_php_dispatched) *php_dispatched;
static w4a_envhdr_set_t *our_vars;   /* W4A_*: headers that stand for them */

/* Handlers that serve a hosting's own files as the hosting, whoever named
 * them.  Content types ("text/html") are handler names too.  Not
 * send-as-is nor imap-file: mod_asis and mod_imagemap open the path
 * themselves (a symlink swapped in after our check is read, mod_asis maps
 * it); what core serves, mod_w4a_vhost serves from a checked descriptor. */
static const char *const safe_handlers[] = {
    "default-handler", "server-parsed", "type-map", "redirect-handler", NULL
};

/* First of all: a request header that stands for one of our W4A_*
 * variables ("W4A-Hosting", "w4a.log"), which CGI and PHP would see as
 * HTTP_W4A_HOSTING and mod_setenvif would match by name, is removed before
 * any module reads it.  Counted; said at debug level. */
static void removed_header(void *baton, const char *header, const char *name)
{
    request_rec *r = baton;
    vhost_count(CNT_HEADERS_REMOVED);
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, W4ALOGNO(00156)
                  "request header '%s' stands for our variable %s: removed",
                  ap_escape_logitem(r->pool, header), name);
}

static int guard_post_read_request(request_rec *r)
{
    if (our_vars && vhost_engine_on(r->server)) {
        w4a_envhdr_strip(our_vars, r->headers_in, removed_header, r);
    }
    return DECLINED;
}

static int is_safe_handler(request_rec *r, const char *h);

/* A node page: a handler of the operator's sections that serves neither
 * the hosting's files (the safe handlers) nor its programs (CGI by
 * suEXEC, a proxy the operator set up): the status pages, w4a-metrics,
 * server-status, server-info, balancer-manager... */
static int is_node_handler(request_rec *r, const char *h)
{
    return !is_safe_handler(r, h) && strncasecmp(h, "proxy:", 6)
           && strcasecmp(h, "proxy-server") && strcasecmp(h, "cgi-script");
}

/* Taken before the directory walk: at translate_name, r->per_dir_config
 * holds the server's, <Location>'s and <If>'s sections only.  Nothing is
 * stored for the common request whose sections set no handler.  A node
 * page is marked: it gets no directory walk, so no .htaccess of the
 * hosting (guard_map_to_storage). */
static int guard_translate_name(request_rec *r)
{
    core_dir_config *d;
    op_handler *oh;
    const char *h = NULL, *err = NULL;

    if (!vhost_engine_on(r->server)) {
        return DECLINED;
    }
    d = ap_get_core_module_config(r->per_dir_config);
    if (d->expr_handler) {
        h = ap_expr_str_exec(r, d->expr_handler, &err);
        if (err || (h && !strcasecmp(h, "none"))) {
            h = NULL;
        }
    }
    else if (d->handler) {
        h = d->handler;
    }
    if (h) {
        oh = apr_palloc(r->pool, sizeof(*oh));
        oh->r = r;
        oh->handler = h;
        apr_pool_userdata_setn(oh, OP_HANDLER_KEY, NULL, r->pool);
        if (is_node_handler(r, h)) {
            vhost_set_node_page(r);
        }
    }
    else {
        void *old = NULL;
        apr_pool_userdata_get(&old, OP_HANDLER_KEY, r->pool);
        if (old && ((op_handler *)old)->r != r) {
            /* an earlier request of this pool (internal redirect) */
            ((op_handler *)old)->r = NULL;
        }
    }
    return DECLINED;
}

/* A node page on a hosting's Host: no directory walk (as mod_proxy does
 * for what it proxies), so no .htaccess of the hosting is merged into it.
 * httpd merges a .htaccess's <If> sections after the operator's
 * <Location>: an <If "true"> Require all granted </If> would override the
 * Require that keeps the page to the monitoring host, and a request
 * internally redirected there (RewriteRule, ErrorDocument) or included
 * (SSI) would reuse the .htaccess its first request had parsed.  What
 * decides is the operator's <Location> (and server-level <If>) alone. */
static int guard_map_to_storage(request_rec *r)
{
    const w4a_hosting_t *rec;

    if (!vhost_node_page(r) || !(rec = vhost_request_hosting(r))) {
        return DECLINED;
    }
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, W4ALOGNO(00157)
                  "hosting %s: %s is a node page (handler %s of the "
                  "operator's sections): no directory walk, no .htaccess",
                  rec->hosting, ap_escape_logitem(r->pool, r->uri),
                  vhost_operator_handler(r));
    return OK;
}

const char *vhost_operator_handler(request_rec *r)
{
    void *v = NULL;
    apr_pool_userdata_get(&v, OP_HANDLER_KEY, r->pool);
    return v && ((op_handler *)v)->r == r ? ((op_handler *)v)->handler : NULL;
}

static int is_safe_handler(request_rec *r, const char *h)
{
    const apr_array_header_t *extra;
    int i;

    if (ap_strchr_c(h, '/') && !ap_strchr_c(h, ':')) {
        return 1;                   /* a content type (not proxy:unix:/…) */
    }
    for (i = 0; safe_handlers[i]; i++) {
        if (!strcasecmp(h, safe_handlers[i])) {
            return 1;
        }
    }
    extra = vhost_extra_handlers(r->server);
    for (i = 0; extra && i < extra->nelts; i++) {
        if (!strcasecmp(h, APR_ARRAY_IDX(extra, i, const char *))) {
            return 1;
        }
    }
    return 0;
}

/* First of the handlers: a handler the operator did not set must be one
 * that keeps the hosting to its own files and identity. */
static int guard_handler(request_rec *r)
{
    const w4a_hosting_t *rec;
    const char *op;

    if (!r->handler || !*r->handler) {
        return DECLINED;
    }
    if ((r->handler[0] | 0x20) == 'p' && !strncasecmp(r->handler, "proxy:", 6)
        && php_dispatched && php_dispatched(r)) {
        return DECLINED;            /* mod_w4a_php: the hosting's own pool
                                     * (first: every PHP request) */
    }
    if (is_safe_handler(r, r->handler)) {
        return DECLINED;            /* the common case: a static file */
    }
    if (!(rec = vhost_request_hosting(r))) {
        return DECLINED;
    }
    op = vhost_operator_handler(r);
    if (op && !strcmp(op, r->handler)) {
        return DECLINED;            /* the operator's <Location> */
    }
    /* a proxy: handler that is not mod_w4a_php's own dispatch (let through
     * first of all above), and proxy-server, are refused below */
    if (!strcasecmp(r->handler, "cgi-script")) {
        if (ap_unixd_config.suexec_enabled) {
            return DECLINED;        /* run as the hosting, by suEXEC */
        }
        vhost_refused(r, CNT_HANDLER_REFUSED);
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00152)
                      "hosting %s: CGI %s refused: suEXEC is not enabled, so "
                      "it would run as httpd's user (%s); answered 403",
                      rec->hosting, r->filename ? r->filename : r->uri,
                      ap_unixd_config.suexec_disabled_reason
                      ? ap_unixd_config.suexec_disabled_reason : "-");
        return HTTP_FORBIDDEN;
    }
    else if (!strncmp(r->handler, "w4a-", 4)
             && ap_strstr_c(r->handler, "-status")) {
        return DECLINED;            /* ours: w4a_status_begin() decides */
    }
    vhost_refused(r, CNT_HANDLER_REFUSED);
    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00151)
                  "hosting %s: handler '%s' for %s was not set by the "
                  "operator's configuration and is not one that serves a "
                  "hosting's own files (W4AVhostHandler lists more); "
                  "answered 403", rec->hosting,
                  ap_escape_logitem(r->pool, r->handler),
                  ap_escape_logitem(r->pool, r->uri));
    return HTTP_FORBIDDEN;
}

/* ------------------------------------------------------------------ */
/* A hosting's .htaccess files.                                        */

static apr_status_t ht_getch(char *ch, void *param)
{
    return apr_file_getc(ch, param);
}

static apr_status_t ht_getstr(void *buf, apr_size_t bufsiz, void *param)
{
    return apr_file_gets(buf, (int)bufsiz, param);
}

static apr_status_t ht_close(void *param)
{
    return apr_file_close(param);
}

/*
 * Core opens .htaccess with a plain blocking open(): a FIFO named
 * .htaccess holds every thread that serves its directory until a writer
 * comes, and a symlink to another tenant's file is read as www-data.  For a
 * hosting's request the file is opened once, without blocking, and checked
 * on that descriptor: a regular file of at most 1 MiB, owned by the
 * hosting or root; that descriptor is what httpd parses.
 */
static apr_status_t guard_open_htaccess(request_rec *r, const char *dir_name,
                                        const char *access_name,
                                        ap_configfile_t **conffile,
                                        const char **full_name)
{
    const w4a_hosting_t *rec = vhost_request_hosting(r);
    const char *why = NULL;
    struct stat st;
    apr_file_t *f = NULL;
    apr_os_file_t ofd;
    int fd, flags;

    if (!rec) {
        return AP_DECLINED;
    }
    *full_name = ap_make_full_path(r->pool, dir_name, access_name);
    fd = open(*full_name, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        return APR_FROM_OS_ERROR(errno);    /* ENOENT: none, as core says */
    }
    if (fstat(fd, &st) != 0) {
        why = "cannot be examined";
    }
    else if (!S_ISREG(st.st_mode)) {
        why = S_ISFIFO(st.st_mode) ? "is a FIFO" : "is not a regular file";
    }
    else if (st.st_uid != (uid_t)rec->uid && st.st_uid != 0) {
        why = apr_psprintf(r->pool, "belongs to uid %ld, neither the "
                           "hosting's (%u) nor root", (long)st.st_uid,
                           rec->uid);
    }
    else if (st.st_size > HTACCESS_MAX) {
        why = apr_psprintf(r->pool, "has %" APR_OFF_T_FMT " bytes, more "
                           "than %d", (apr_off_t)st.st_size, HTACCESS_MAX);
    }
    if (why) {
        close(fd);
        vhost_refused(r, CNT_HTACCESS_REFUSED);
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00155)
                      "hosting %s: %s %s; not read, answered 403",
                      rec->hosting, *full_name, why);
        return APR_EACCES;
    }
    flags = fcntl(fd, F_GETFL);
    if (flags != -1) {
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    }
    ofd = fd;
    if (apr_os_file_put(&f, &ofd, APR_FOPEN_READ | APR_FOPEN_BUFFERED,
                        r->pool) != APR_SUCCESS) {
        close(fd);
        return APR_EGENERAL;
    }
    *conffile = ap_pcfg_open_custom(r->pool, *full_name, f, ht_getch,
                                    ht_getstr, ht_close);
    return APR_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Start-up: overrides of the hostings' tree.                          */

/* Directive names (prefixes) that run code, reach a backend, let PHP
 * send any file httpd can read, or map tenants' files, were a customer
 * allowed to write them. */
static const char *const dangerous[] = {
    "Lua", "Perl", "Python", "WSGI", "Fcgid", "FCGIWrapper", "Proxy",
    "XSendFile", "EnableMMAP", "EnableSendfile", "PassEnv", "Action",
    "Script", "ISAPI", "AuthLDAP", "AuthDBD", "AuthnzFcgi", "DBD",
    "Session", "ExtFilter", "SSIExec", "JkMount", "FilterDeclare",
    "FilterProvider", "FilterChain", "FilterProtocol", NULL
};

static int is_dangerous(const char *name)
{
    int i;
    for (i = 0; dangerous[i]; i++) {
        if (!strncasecmp(name, dangerous[i], strlen(dangerous[i]))) {
            return 1;
        }
    }
    return 0;
}

/* Whether <Directory dir> (d->d, with its trailing '/', or a regex)
 * reaches a path below base. */
static int reaches(const core_dir_config *d, const char *base)
{
    apr_size_t n;

    if (d->r || !d->d) {
        return d->r != NULL;        /* a regex may match anything */
    }
    n = strlen(d->d);
    while (n > 1 && d->d[n - 1] == '/') {
        n--;
    }
    return !strncmp(d->d, base, n) || !strncmp(base, d->d, strlen(base));
}

static void check_section(server_rec *s, const core_dir_config *d)
{
    module *m;
    const command_rec *cmd;
    int allowed_all = (d->override & OR_ALL) == OR_ALL;

    if ((d->override & OR_UNSET) && !d->override_list) {
        return;
    }
    if (allowed_all) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, W4ALOGNO(00154)
                     "<Directory %s> reaches the hostings' tree with "
                     "AllowOverride All: customers get every .htaccess "
                     "directive of every loaded module; include "
                     "w4a-overrides.conf instead (docs/security.md)",
                     d->d ? d->d : "(regex)");
    }
    for (m = ap_top_module; m; m = m->next) {
        for (cmd = m->cmds; cmd && cmd->name; cmd++) {
            int by_class = (cmd->req_override & d->override & OR_ALL) != 0;
            int by_name = d->override_list
                && apr_table_get(d->override_list, cmd->name) != NULL;
            if ((by_class || by_name) && is_dangerous(cmd->name)) {
                ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                             W4ALOGNO(00153) "<Directory %s> reaches the "
                             "hostings' tree and lets a customer's .htaccess "
                             "use %s (%s, %s): it runs code, reaches a "
                             "backend or maps files for every tenant; "
                             "take it out of AllowOverride%s",
                             d->d ? d->d : "(regex)", cmd->name, m->name,
                             by_name ? "named in AllowOverrideList"
                                     : "by its override class",
                             by_name ? "List" : "");
            }
        }
    }
}

void vhost_guard_check_overrides(server_rec *s,
                                 const apr_array_header_t *bases)
{
    core_server_config *sconf = ap_get_core_module_config(s->module_config);
    ap_conf_vector_t **sec = (ap_conf_vector_t **)sconf->sec_dir->elts;
    int i, k;

    for (i = 0; i < sconf->sec_dir->nelts; i++) {
        core_dir_config *d = ap_get_core_module_config(sec[i]);
        int hit = !bases || !bases->nelts;
        for (k = 0; !hit && k < bases->nelts; k++) {
            hit = reaches(d, APR_ARRAY_IDX(bases, k, const char *));
        }
        if (hit) {
            check_section(s, d);
        }
    }
}

void vhost_guard_post_config(apr_pool_t *pconf)
{
    static const char *const names[] = { "W4A_*" };

    php_dispatched = APR_RETRIEVE_OPTIONAL_FN(w4a_php_dispatched);
    if (w4a_envhdr_set_make(&our_vars, names, 1, pconf) != APR_SUCCESS) {
        our_vars = NULL;
    }
}

void vhost_guard_register_hooks(void)
{
    /* Before mod_setenvif's server-level rules and everyone else. */
    ap_hook_post_read_request(guard_post_read_request, NULL, NULL,
                              APR_HOOK_REALLY_FIRST);
    ap_hook_translate_name(guard_translate_name, NULL, NULL,
                           APR_HOOK_REALLY_FIRST);
    ap_hook_handler(guard_handler, NULL, NULL, APR_HOOK_REALLY_FIRST);
    /* Before core's directory walk (after mod_w4a_php's mark). */
    ap_hook_map_to_storage(guard_map_to_storage, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_open_htaccess(guard_open_htaccess, NULL, NULL, APR_HOOK_FIRST);
}
