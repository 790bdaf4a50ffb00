/**
 * @file mod_w4a_vhost.h
 * @brief What mod_w4a_vhost publishes to the other w4a modules.
 *
 * Modules never link each other's symbols: they fetch this optional
 * function in their optional_fn_retrieve hook, e.g.
 *
 *     static APR_OPTIONAL_FN_TYPE(w4a_hosting) *get_hosting;
 *     static void retrieve(void) { get_hosting = APR_RETRIEVE_OPTIONAL_FN(w4a_hosting); }
 */
#ifndef MOD_W4A_VHOST_H
#define MOD_W4A_VHOST_H

#include <httpd.h>
#include <apr_optional.h>
#include "w4a_hosting.h"

/**
 * The hosting record of a request (or of its main / original request for
 * sub-requests and internal redirects).
 * @param r the request
 * @return the record, allocated from the request pool and valid for its
 *         lifetime, or NULL when the request's Host is not in the map or
 *         mod_w4a_vhost is not active for this server.
 */
APR_DECLARE_OPTIONAL_FN(const w4a_hosting_t *, w4a_hosting, (request_rec *r));

/**
 * The media host of a request's hosting: the record's media=HOST, or, on
 * the site itself, the one W4AVhostMediaPrefix gives (prefix + domain,
 * unless that name is another hosting's or docroot's own site), looked up
 * the first time it is asked for (a request that never asks never pays
 * the lookup); on a media host request, the name being served.
 * @param r the request
 * @return the host name (valid for the request's lifetime), or NULL.
 */
APR_DECLARE_OPTIONAL_FN(const char *, w4a_media_host, (request_rec *r));

/**
 * Whether r is a request for a media host (or a sub-request or internal
 * redirect of one): what mod_w4a_vhost decided when it read the Host, kept
 * in its own per-request state, which no configuration can touch (the
 * request note w4a-media says the same, for logs and rules).
 * @param r the request
 * @return the media host name being served (valid for the request's
 *         lifetime), or NULL when r is not a media host request.
 */
APR_DECLARE_OPTIONAL_FN(const char *, w4a_media_request, (request_rec *r));

/**
 * The handler the operator's own configuration gives r: the server's and
 * the <Location>/<If> sections' SetHandler, as they stand before any
 * directory (and so before any .htaccess) is read.
 * @param r the request
 * @return the handler name, or NULL when the operator's sections set none
 *         (whatever r->handler says then came from per-directory
 *         configuration, mod_mime or mod_rewrite).
 */
APR_DECLARE_OPTIONAL_FN(const char *, w4a_operator_handler, (request_rec *r));

#endif /* MOD_W4A_VHOST_H */
