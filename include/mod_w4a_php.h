/**
 * @file mod_w4a_php.h
 * @brief What mod_w4a_php publishes to the other w4a modules.
 */
#ifndef MOD_W4A_PHP_H
#define MOD_W4A_PHP_H

#include <httpd.h>
#include <apr_optional.h>

/**
 * Whether mod_w4a_php itself gave r its proxy handler (the hosting's own
 * pool), as opposed to per-directory configuration.
 * @param r the request
 * @return 1 when r->handler is mod_w4a_php's dispatch to the hosting's
 *         pool, 0 otherwise.
 */
APR_DECLARE_OPTIONAL_FN(int, w4a_php_dispatched, (request_rec *r));

#endif /* MOD_W4A_PHP_H */
