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
 * The INI text to send as FPM's PHP_VALUE for a request dispatched to the
 * pool of (@a hosting, PHP @a version) at @a pool: the directory's accepted
 * settings plus, for every setting any request has ever delivered to that
 * pool (its workers keep them), the
 * value that pool starts its workers with (its own php_value, else the INI
 * table's start value), so that nothing persists from one request to the
 * next on an FPM worker.  A setting the pool fixes with php_admin_value or
 * php_admin_flag is never in the text.  Settings refused are logged and
 * counted here.
 * @param r        the request, about to be handed to mod_proxy_fcgi
 * @param hosting  the hosting whose pool it goes to
 * @param version  PHP version of that pool ("8.2")
 * @param pool     what names the pool's workers: its socket path (two
 *                 hostings or versions sharing a socket share workers,
 *                 hence the set of settings to reset)
 * @param pool_hash w4a_fnv1a(@a pool) (modules/common/w4a_util.h), which
 *                 the caller has cached with the path
 * @param text     out: the text ("name=\"value\"\n" lines), or NULL when
 *                 nothing needs to be sent (no setting was ever delivered)
 * @return APR_SUCCESS; an error (logged) when the pool's own settings
 *         cannot be known (its settings file is not root's alone, or
 *         malformed): then nothing may be sent, and the request must not
 *         run.
 */
APR_DECLARE_OPTIONAL_FN(apr_status_t, w4a_htcompat_php_value,
                        (request_rec *r, const char *hosting,
                         const char *version, const char *pool,
                         apr_uint32_t pool_hash, const char **text));

#endif /* MOD_W4A_HTCOMPAT_H */
