/**
 * @file mod_w4a_htcompat.h
 * @brief What mod_w4a_htcompat publishes to mod_w4a_php.
 *
 * mod_w4a_php dispatches PHP; mod_w4a_htcompat knows what the mod_php-era
 * lines of the request's directories (php_value, php_flag, …) ask for.
 * Both optional functions may be absent (mod_w4a_htcompat not loaded):
 * then PHP runs with its pool's settings only.
 */
#ifndef MOD_W4A_HTCOMPAT_H
#define MOD_W4A_HTCOMPAT_H

#include <httpd.h>
#include <apr_optional.h>

/**
 * Whether PHP may run for this request's directory.
 * @param r the request (after the per-directory configuration is merged)
 * @return 0 when "php_flag engine off" (or php_admin_flag in server
 *         configuration) applies to the request's directory, 1 otherwise.
 */
APR_DECLARE_OPTIONAL_FN(int, w4a_htcompat_engine, (request_rec *r));

/**
 * The INI text to send as FPM's PHP_VALUE for a request dispatched to a
 * pool of PHP @a version: the directory's accepted settings plus, for every
 * setting any request has ever delivered on this node, the pool's default,
 * so that nothing persists from one request to the next on an FPM worker.
 * Settings refused are logged and counted here.
 * @param r        the request, about to be handed to mod_proxy_fcgi
 * @param version  PHP version of the pool it goes to ("8.2")
 * @return the text ("name=\"value\"\n" lines), or NULL when nothing needs
 *         to be sent (no setting was ever delivered).
 */
APR_DECLARE_OPTIONAL_FN(const char *, w4a_htcompat_php_value,
                        (request_rec *r, const char *version));

#endif /* MOD_W4A_HTCOMPAT_H */
