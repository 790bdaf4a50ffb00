/**
 * @file w4a_httpd.h
 * @brief Small httpd-side helpers every w4a module shares (header only:
 *        the rest of modules/common is httpd-free and linked by the tools).
 *
 * Messages logged from here carry the including module's name, so its
 * LogLevel applies; the include must follow the module's
 * APLOG_USE_MODULE (its private header).
 */
#ifndef W4A_HTTPD_H
#define W4A_HTTPD_H

#include <httpd.h>
#include <http_log.h>
#include <http_protocol.h>
#include <apr_optional.h>
#include <apr_strings.h>

#include "mod_w4a_vhost.h"
#include "w4a_log.h"

/** The request whose lookups r shares: the main request of a
 * sub-request, the first of a chain of internal redirects. */
static APR_INLINE request_rec *w4a_initial_request(request_rec *r)
{
    for (;;) {
        if (r->main) {
            r = r->main;
        }
        else if (r->prev) {
            r = r->prev;
        }
        else {
            return r;
        }
    }
}

/**
 * The common start of the node's status handlers (vhost, geoip, htcompat,
 * media, and metrics, which then sets its own text content type):
 * r->handler is @a name; a hosting's request may reach it only
 * through the operator's own <Location> (never through a customer's
 * SetHandler, AddHandler or RewriteRule [H=]); GET only; a JSON answer
 * that no cache keeps.
 * @param r the request
 * @param name the handler name, e.g. "w4a-vhost-status"
 * @param rv set to what the handler returns when this returns 0
 * @return 1 when the caller writes its JSON body, 0 when it returns *rv
 *         (DECLINED: not this handler; 403, 405; OK for HEAD).
 */
static APR_INLINE int w4a_status_begin(request_rec *r, const char *name,
                                       int *rv)
{
    APR_OPTIONAL_FN_TYPE(w4a_hosting) *hosting_of;
    APR_OPTIONAL_FN_TYPE(w4a_operator_handler) *operator_handler;
    const w4a_hosting_t *rec;

    /* every request of the node passes here once per status handler:
     * the first byte turns nearly all of them away */
    if (!r->handler || r->handler[0] != name[0] || strcmp(r->handler, name)) {
        *rv = DECLINED;
        return 0;
    }
    hosting_of = APR_RETRIEVE_OPTIONAL_FN(w4a_hosting);
    operator_handler = APR_RETRIEVE_OPTIONAL_FN(w4a_operator_handler);
    if (hosting_of && (rec = hosting_of(r)) != NULL) {
        const char *op = operator_handler ? operator_handler(r) : NULL;
        if (!op || strcmp(op, name)) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00150)
                          "hosting %s: handler %s (node status) was set by "
                          "per-directory configuration of the hosting for "
                          "%s; answered 403", rec->hosting, name,
                          ap_escape_logitem(r->pool, r->uri));
            *rv = HTTP_FORBIDDEN;
            return 0;
        }
    }
    r->allowed |= (AP_METHOD_BIT << M_GET);
    if (r->method_number != M_GET) {
        *rv = HTTP_METHOD_NOT_ALLOWED;
        return 0;
    }
    ap_set_content_type(r, "application/json");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (r->header_only) {
        *rv = OK;
        return 0;
    }
    return 1;
}

#endif /* W4A_HTTPD_H */
