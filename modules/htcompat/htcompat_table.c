/*
 * PHP INI access tables and the checks of one php_value line.
 * httpd-free (APR only): mod_w4a_htcompat and w4a-htcheck share it.
 */
#include <string.h>

#include <apr_file_io.h>
#include <apr_lib.h>
#include <apr_strings.h>

#include "htcompat_table.h"
#include "w4a_util.h"

static const char *const reason_names[HTC_NREASONS] = {
    "applied", "unknown", "removed", "system", "admin", "locked", "unsafe",
    "badflag", "nodefault", "notable", "irreversible", "syntax", "suphp"
};

static const char *const reason_texts[HTC_NREASONS] = {
    "applied",
    "not a setting of this PHP version (unknown name or extension not loaded)",
    "removed from PHP; the line has no effect",
    "system-only setting: only the server's configuration may set it",
    "php_admin_value/php_admin_flag is only for the server's configuration, "
    "not .htaccess",
    "locked by the server (php_admin_value in the pool or server configuration)",
    "value holds a control character, '\"', '\\' or '$', which could change "
    "other settings",
    "php_flag takes on or off",
    "its default in the pool is unknown, so it could not be reset after the "
    "request",
    "no INI table for the pool's PHP version (W4AHtcompatIniTable)",
    "FPM cannot undo this setting once made, so it would leak into other "
    "requests",
    "expected a setting name and one value (quote a value holding blanks)",
    "mod_suphp's directive: PHP already runs as the hosting's own user; "
    "ignored instead of a 500"
};

const char *htc_reason_name(htc_reason_e why)
{
    return why < HTC_NREASONS ? reason_names[why] : "?";
}

const char *htc_reason_text(htc_reason_e why)
{
    return why < HTC_NREASONS ? reason_texts[why] : "?";
}

unsigned htc_bit(const char *name)
{
    return w4a_fnv1a(name) % HTC_BITS;
}

/* Settings PHP has removed (PHP 5.3 to 8.x); lines naming them had no
 * effect for years or stopped PHP from starting: dropped quietly. */
static const char *const removed[] = {
    "register_globals", "register_long_arrays", "magic_quotes_gpc",
    "magic_quotes_runtime", "magic_quotes_sybase", "safe_mode",
    "safe_mode_gid", "safe_mode_include_dir", "safe_mode_exec_dir",
    "safe_mode_allowed_env_vars", "safe_mode_protected_env_vars",
    "allow_call_time_pass_reference", "y2k_compliance",
    "define_syslog_variables", "highlight.bg", "session.bug_compat_42",
    "session.bug_compat_warn", "session.hash_function",
    "session.hash_bits_per_character", "session.entropy_file",
    "session.entropy_length", "asp_tags", "always_populate_raw_post_data",
    "mbstring.func_overload", "mbstring.script_encoding", "track_errors",
    "sql.safe_mode", "zend.ze1_compatibility_mode", "assert.quiet_eval",
    "opcache.fast_shutdown", "opcache.inherited_hack", "opcache.load_comments",
    NULL
};

int htc_removed(const char *name)
{
    int i;
    if (!strncmp(name, "mysql.", 6)) {       /* ext/mysql, removed in 7.0 */
        return 1;
    }
    for (i = 0; removed[i]; i++) {
        if (!strcmp(name, removed[i])) {
            return 1;
        }
    }
    return 0;
}

/* Keep in step with pool_text() and settings_text() in
 * support/w4a-fpm-pools.c (every pool fixes these; a pool's settings file
 * may fix more, see htcompat_pool.h). */
static const char *const pool_locked[] = {
    "error_log", "log_errors", "open_basedir", "upload_tmp_dir",
    "session.save_path", "sys_temp_dir", "mail.add_x_header", "mail.log",
    NULL
};

int htc_pool_locked(const char *name)
{
    int i;
    for (i = 0; pool_locked[i]; i++) {
        if (!strcmp(name, pool_locked[i])) {
            return 1;
        }
    }
    return 0;
}

/* FPM applies these once and for all in the worker (fpm_php.c disables
 * the functions; loading an extension cannot be undone). */
static int irreversible(const char *name)
{
    return !strcmp(name, "disable_functions")
           || !strcmp(name, "disable_classes")
           || !strcmp(name, "extension") || !strcmp(name, "zend_extension");
}

int htc_value_safe(const char *value)
{
    const unsigned char *q;
    for (q = (const unsigned char *)value; *q; q++) {
        if (*q < 0x20 || *q == 0x7f || *q == '"' || *q == '\\' || *q == '$') {
            return 0;
        }
    }
    return 1;
}

char *htc_ini_text(const htc_send_t *send, int n, apr_pool_t *p)
{
    apr_size_t len = 0;
    char *text, *o;
    int i;

    if (n <= 0) {
        return NULL;
    }
    for (i = 0; i < n; i++) {
        /* name="value"\n */
        len += strlen(send[i].s->name) + strlen(send[i].value) + 4;
    }
    text = o = apr_palloc(p, len + 1);
    for (i = 0; i < n; i++) {
        apr_size_t a = strlen(send[i].s->name), m = strlen(send[i].value);
        memcpy(o, send[i].s->name, a);
        o += a;
        *o++ = '=';
        *o++ = '"';
        memcpy(o, send[i].value, m);
        o += m;
        *o++ = '"';
        *o++ = '\n';
    }
    *o = '\0';
    return text;
}

const char *htc_flag_value(const char *arg)
{
    if (!strcasecmp(arg, "on") || !strcmp(arg, "1")
        || !strcasecmp(arg, "yes") || !strcasecmp(arg, "true")) {
        return "1";
    }
    if (!strcasecmp(arg, "off") || !strcmp(arg, "0")
        || !strcasecmp(arg, "no") || !strcasecmp(arg, "false")) {
        return "0";
    }
    return NULL;
}

htc_reason_e htc_check(const htc_table_t *t, const char *name,
                       const char *value, int admin,
                       const htc_setting_t **sp)
{
    const htc_setting_t *s;

    if (!t) {
        return irreversible(name) ? HTC_IRREVERSIBLE : HTC_NOTABLE;
    }
    s = htc_table_get(t, name);
    if (!s) {
        return irreversible(name) ? HTC_IRREVERSIBLE
               : htc_removed(name) ? HTC_REMOVED : HTC_UNKNOWN;
    }
    if (s->irreversible) {
        return HTC_IRREVERSIBLE;
    }
    if (s->locked) {
        return HTC_LOCKED;
    }
    if (!admin && !(s->access & HTC_ACC_PERDIR)) {
        return HTC_SYSTEM;
    }
    if (!htc_value_safe(value)) {
        return HTC_UNSAFE;
    }
    if (!s->defval) {
        return HTC_NODEFAULT;
    }
    if (sp) {
        *sp = s;
    }
    return HTC_OK;
}

const htc_setting_t *htc_table_get(const htc_table_t *t, const char *name)
{
    return apr_hash_get(t->by_name, name, APR_HASH_KEY_STRING);
}

static int hexval(char c)
{
    return apr_isdigit(c) ? c - '0' : apr_tolower(c) - 'a' + 10;
}

/* "%XX" unescaped in place; 0 on a bad escape. */
static int unescape(char *s)
{
    char *w = s;
    for (; *s; s++) {
        if (*s == '%') {
            if (!apr_isxdigit(s[1]) || !apr_isxdigit(s[2])) {
                return 0;
            }
            *w++ = (char)(hexval(s[1]) * 16 + hexval(s[2]));
            s += 2;
        }
        else {
            *w++ = *s;
        }
    }
    *w = '\0';
    return 1;
}

apr_status_t htc_table_load(htc_table_t **tp, const char *path,
                            const char **err, apr_pool_t *p)
{
    apr_file_t *f;
    apr_status_t rv;
    char line[16384];
    int lineno = 0;
    htc_table_t *t;

    rv = apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_BUFFERED,
                       APR_OS_DEFAULT, p);
    if (rv != APR_SUCCESS) {
        char buf[120];
        *err = apr_psprintf(p, "%s: %s", path,
                            apr_strerror(rv, buf, sizeof(buf)));
        return rv;
    }
    t = apr_pcalloc(p, sizeof(*t));
    t->path = apr_pstrdup(p, path);
    t->by_name = apr_hash_make(p);
    t->by_bit = apr_pcalloc(p, HTC_BITS * sizeof(*t->by_bit));

    while ((rv = apr_file_gets(line, sizeof(line), f)) == APR_SUCCESS) {
        char *last, *name, *acc, *def, *extra;
        apr_size_t n = strlen(line);
        htc_setting_t *s;

        lineno++;
        if (n && line[n - 1] == '\n') {
            line[--n] = '\0';
        }
        else if (n == sizeof(line) - 1) {
            *err = apr_psprintf(p, "%s:%d: line too long", path, lineno);
            apr_file_close(f);
            return APR_EINVAL;
        }
        if (!line[0] || line[0] == '#') {
            continue;
        }
        /* apr_strtok() sets last only when it finds a token: a line of
         * blanks must not go on from an unset pointer */
        name = apr_strtok(line, " ", &last);
        acc = name ? apr_strtok(NULL, " ", &last) : NULL;
        def = acc ? apr_strtok(NULL, " ", &last) : NULL;
        extra = def ? apr_strtok(NULL, " ", &last) : NULL;
        if (name && !strcmp(name, "version") && acc && !def && !t->version) {
            t->version = apr_pstrdup(p, acc);
            continue;
        }
        if (!name || !acc || !def || extra || !w4a_ini_name_ok(name)
            || acc[1] || acc[0] < '1' || acc[0] > '7'
            || (def[0] != '=' && strcmp(def, "!"))
            || (def[0] == '=' && !unescape(def + 1))) {
            *err = apr_psprintf(p, "%s:%d: expected 'name access =default' "
                                "or 'name access !'", path, lineno);
            apr_file_close(f);
            return APR_EINVAL;
        }
        if (apr_hash_get(t->by_name, name, APR_HASH_KEY_STRING)) {
            *err = apr_psprintf(p, "%s:%d: %s given twice", path, lineno, name);
            apr_file_close(f);
            return APR_EINVAL;
        }
        s = apr_pcalloc(p, sizeof(*s));
        s->name = apr_pstrdup(p, name);
        s->access = acc[0] - '0';
        /* A default that cannot be sent safely cannot reset the setting. */
        s->defval = def[0] == '=' && htc_value_safe(def + 1)
                    ? apr_pstrdup(p, def + 1) : NULL;
        s->bit = htc_bit(name);
        s->locked = htc_pool_locked(name);
        s->irreversible = irreversible(name);
        s->next_bit = t->by_bit[s->bit];
        t->by_bit[s->bit] = s;
        apr_hash_set(t->by_name, s->name, APR_HASH_KEY_STRING, s);
        t->count++;
    }
    apr_file_close(f);
    if (rv != APR_EOF) {
        *err = apr_psprintf(p, "%s: read error", path);
        return rv;
    }
    if (!t->version || !t->count) {
        *err = apr_psprintf(p, "%s: no 'version' line or no settings: not a "
                            "table written by w4a-htcheck --dump-table", path);
        return APR_EINVAL;
    }
    *tp = t;
    return APR_SUCCESS;
}
