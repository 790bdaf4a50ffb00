/**
 * @file htcompat_table.h
 * @brief PHP INI access tables and the checks of one php_value line
 *        (httpd-free, APR only: linked by mod_w4a_htcompat and w4a-htcheck).
 *
 * A table is generated from a real PHP (w4a-htcheck --dump-table): one line
 * per INI setting PHP knows, with its access level as ini_get_all() gives it
 * (1 USER, 2 PERDIR, 4 SYSTEM; 7 ALL) and the value a fresh FPM worker of
 * that PHP starts with (php.ini plus conf.d):
 *
 *     # comment
 *     version 8.2
 *     memory_limit 7 =128M
 *     open_basedir 7 =
 *     max_execution_time 7 !
 *
 * The default is "=" followed by the value, %XX-escaped, or "!" when it is
 * not known (the CLI forces a few settings and php.ini does not name them):
 * such a setting is never delivered, since it could not be reset.
 */
#ifndef HTCOMPAT_TABLE_H
#define HTCOMPAT_TABLE_H

#include <apr.h>
#include <apr_errno.h>
#include <apr_hash.h>
#include <apr_pools.h>

/** Slots of the node-wide "ever delivered" set (a bitmap, see the module). */
#define HTC_BITS 4096

/** Access bits, as PHP's PHP_INI_USER / PERDIR / SYSTEM. */
#define HTC_ACC_USER   1
#define HTC_ACC_PERDIR 2
#define HTC_ACC_SYSTEM 4

typedef struct htc_setting_t htc_setting_t;
struct htc_setting_t {
    const char    *name;
    int            access;     /**< HTC_* bits */
    const char    *defval;     /**< the worker's start value; NULL: unknown */
    unsigned       bit;        /**< slot in the delivered set */
    int            locked;     /**< set by the pools' php_admin_value */
    int            irreversible; /**< FPM cannot undo it */
    htc_setting_t *next_bit;   /**< next setting of this table in the same slot */
};

typedef struct htc_table_t {
    const char     *path;
    const char     *version;   /**< "8.2" */
    apr_hash_t     *by_name;   /**< name -> htc_setting_t * */
    htc_setting_t **by_bit;    /**< HTC_BITS heads */
    int             count;
} htc_table_t;

/** Why a line is not delivered (HTC_OK: it is). */
typedef enum {
    HTC_OK = 0,
    HTC_UNKNOWN,      /**< not a setting of this PHP */
    HTC_REMOVED,      /**< a setting PHP removed (register_globals, …) */
    HTC_SYSTEM,       /**< system-only: php_admin_value in server config only */
    HTC_ADMIN,        /**< php_admin_* from .htaccess */
    HTC_LOCKED,       /**< set by the pool or the server's php_admin_* */
    HTC_UNSAFE,       /**< value holds a character that cannot be sent safely */
    HTC_BADFLAG,      /**< php_flag value not on/off */
    HTC_NODEFAULT,    /**< its default is unknown: it could not be reset */
    HTC_NOTABLE,      /**< no table for the pool's PHP version */
    HTC_IRREVERSIBLE, /**< FPM cannot undo it (disable_functions, …) */
    HTC_SYNTAX,       /**< not "name value" (an unquoted value with blanks) */
    HTC_SUPHP,        /**< a suPHP_* directive: accepted and ignored */
    HTC_NREASONS
} htc_reason_e;

/** Short name of a reason, for counters and logs ("system", …). */
const char *htc_reason_name(htc_reason_e why);

/** A sentence explaining a reason, for logs and the checker. */
const char *htc_reason_text(htc_reason_e why);

/**
 * Read a table file.
 * @param t    set to the table
 * @param path the file
 * @param err  on failure, "path:line: why"
 * @param p    pool holding the table
 * @return APR_SUCCESS, APR_EINVAL for a malformed file, or an I/O error.
 */
apr_status_t htc_table_load(htc_table_t **t, const char *path,
                            const char **err, apr_pool_t *p);

/** The setting @a name of table @a t, or NULL. */
const htc_setting_t *htc_table_get(const htc_table_t *t, const char *name);

/** The slot of a setting name in the delivered set. */
unsigned htc_bit(const char *name);

/** Whether PHP removed this setting (and it is not in the table). */
int htc_removed(const char *name);

/** Whether the pools of w4a-fpm-pools set it with php_admin_value. */
int htc_pool_locked(const char *name);

/**
 * Whether a value can go into FPM's INI text inside double quotes with no
 * way of starting another setting: no control character, no '"', '\\' or
 * '$' (the only characters that INI parser reads specially there).
 */
int htc_value_safe(const char *value);

/**
 * php_flag's value as mod_php read it: on/1/yes/true -> "1",
 * off/0/no/false -> "0", anything else NULL.
 */
const char *htc_flag_value(const char *arg);

/**
 * Check one line against a table.
 * @param t      table of the pool's PHP version (NULL: HTC_NOTABLE)
 * @param name   setting name
 * @param value  its value (already a "0"/"1" for flags)
 * @param admin  1 for php_admin_* from server configuration
 * @param sp     set to the setting of the table when HTC_OK (may be NULL)
 * @return HTC_OK or the reason it is skipped.
 */
htc_reason_e htc_check(const htc_table_t *t, const char *name,
                       const char *value, int admin,
                       const htc_setting_t **sp);

/** A setting to send to a pool, and its value. */
typedef struct {
    const htc_setting_t *s;
    const char          *value;
} htc_send_t;

/**
 * The PHP_VALUE text of send[0, n): one name="value" line each, in that
 * order, allocated from @a p; NULL when n is 0.  Every value must be
 * htc_value_safe(): inside the quotes, nothing can start another setting
 * (t/fuzz/fuzz_htcompat_ini.c reads the text back as FPM's INI scanner).
 */
char *htc_ini_text(const htc_send_t *send, int n, apr_pool_t *p);

#endif /* HTCOMPAT_TABLE_H */
