/**
 * @file w4a_log.h
 * @brief Logging callback of the httpd-free common library.
 *
 * The library never prints: it reports through a callback that its caller
 * installs (the module maps it to ap_log_error, the tools to stderr, the
 * unit tests to a buffer).
 */
#ifndef W4A_LOG_H
#define W4A_LOG_H

#include <apr.h>

/** Levels, numerically equal to httpd's APLOG_* levels. */
#define W4A_LOG_ERR     3
#define W4A_LOG_WARNING 4
#define W4A_LOG_NOTICE  5
#define W4A_LOG_INFO    6
#define W4A_LOG_DEBUG   7

/**
 * A log sink.
 * @param baton   the caller's context
 * @param level   W4A_LOG_*
 * @param msg     one line, no trailing newline
 */
typedef void w4a_log_fn(void *baton, int level, const char *msg);

/** A sink with its context; a NULL fn discards messages. */
typedef struct w4a_logger_t {
    w4a_log_fn *fn;
    void       *baton;
} w4a_logger_t;

/**
 * Our own message tags, "W4Annnnn: ", in every message at debug level or
 * above (httpd's AHnnnnn numbers are httpd's).  Never reuse a number:
 * 001xx mod_w4a_vhost, 002xx mod_w4a_php, 003xx mod_w4a_geoip,
 * 004xx mod_w4a_htcompat, 005xx mod_w4a_media, 00600-00649
 * mod_w4a_guard (00650-00659 w4a-ban), 00700-00749 mod_w4a_metrics
 * (00750-00759 w4a-top), 009xx support tools.
 */
#define W4ALOGNO(n) "W4A" #n ": "

#endif /* W4A_LOG_H */
