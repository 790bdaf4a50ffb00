/*
 * w4a-htcheck: .htaccess lines that break or change meaning on this
 * platform (httpd 2.4, PHP in FPM pools, mod_w4a_htcompat), with the
 * reason and the fix; --fix rewrites the files, keeping the original
 * beside each (.htaccess.w4a-orig), and a second run changes nothing.
 *
 * Also writes the INI access tables mod_w4a_htcompat reads
 * (--dump-table), from the real PHP of each version.
 *
 * Runs as root over customers' trees: every file is opened relative to an
 * already opened directory with O_NOFOLLOW, so that a symlink in a tree
 * never makes it read or write anything outside, and the docroot itself
 * (whose name sits in the tenant's directory) is reached without a
 * symlink of anyone's but root's.  Each file's memory goes with it, and
 * what it prints of a tenant's names and words is escaped.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <apr_general.h>
#include <apr_getopt.h>
#include <apr_hash.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <apr_tables.h>

#include "htcompat_table.h"
#include "w4a_map.h"
#include "w4a_util.h"

#define ORIG_SUFFIX ".w4a-orig"
#define FIX_MARK    "# w4a-htcheck: "
#define MAX_DEPTH   64
#define MAX_FILE    (4 << 20)

typedef struct {
    const char *table_pattern;   /* %v */
    const char *php_version;     /* tree mode */
    int         fix;
    int         quiet;
    apr_hash_t *tables;          /* version -> htc_table_t * or (void *)1 */
    apr_hash_t *links;           /* "dev:ino" of files with hard links read */
    apr_pool_t *p;
    /* totals */
    int files, findings, fixed, notes, errors, rewritten;
} ctx_t;

typedef enum { SEV_NOTE, SEV_BREAK } sev_e;

/* ------------------------------------------------------------------ */
/* --dump-table                                                         */

/* Printed by the PHP of the version, with the FPM's php.ini and conf.d:
 * name, access, "=" rawurlencoded start value, or "!" for the settings the
 * CLI forces (sapi/cli HARDCODED_INI) when php.ini does not name them. */
static const char dump_php[] =
    "$ini = [];"
    "$files = [php_ini_loaded_file()];"
    "$s = php_ini_scanned_files();"
    "if ($s) { foreach (explode(',', $s) as $f) { $f = trim($f);"
    "  if ($f !== '') { $files[] = $f; } } }"
    "foreach ($files as $f) { if ($f) { $a = @parse_ini_file($f, false,"
    "  INI_SCANNER_RAW); if (is_array($a)) { $ini = array_merge($ini, $a); } } }"
    "$cli = ['html_errors', 'register_argc_argv', 'implicit_flush',"
    "  'output_buffering', 'max_execution_time', 'max_input_time'];"
    "$o = ['version ' . PHP_MAJOR_VERSION . '.' . PHP_MINOR_VERSION];"
    "foreach (ini_get_all(null, true) as $k => $v) {"
    "  $a = $v['access'];"
    "  if (in_array($k, $cli, true)) {"
    "    if (!array_key_exists($k, $ini)) { $o[] = \"$k $a !\"; continue; }"
    "    $d = $ini[$k];"
    "  } else { $d = $v['global_value']; }"
    /* A start value the setting refuses to be set back to (opcache.enable
     * cannot be re-enabled at run time; a NULL default that "" does not
     * stand for) could not reset a customer's value: unknown.  Only the
     * settings ini_set() may change can be tried, each set to the value it
     * already has (no ini_restore(): PHP 8.2's CLI crashes on some
     * sequences of it); nothing is printed before (session settings
     * refuse changes after output). */
    "  if ($a & 1) { error_clear_last();"
    "    $r = @ini_set($k, (string)$d); $e = error_get_last();"
    "    if ($r === false || ($e !== null"
    "        && !($e['type'] & (E_DEPRECATED | E_USER_DEPRECATED | E_NOTICE)))) {"
    "      $o[] = \"$k $a !\"; continue; } }"
    "  $o[] = \"$k $a =\" . rawurlencode((string)$d); }"
    "echo implode(\"\\n\", $o), \"\\n\";";

static int dump_table(apr_pool_t *p, const char *version, const char *php,
                      const char *ini, const char *scan, const char *out)
{
    int pfd[2], status;
    pid_t pid;
    char *buf = malloc(MAX_FILE);
    size_t len = 0;
    ssize_t n;
    const char *tmp = apr_psprintf(p, "%s.tmp.%ld", out, (long)getpid());
    const char *head;
    htc_table_t *t;
    const char *err = NULL;
    FILE *f;

    if (!buf || pipe(pfd) != 0) {
        perror("w4a-htcheck");
        return 2;
    }
    pid = fork();
    if (pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        setenv("PHP_INI_SCAN_DIR", scan, 1);
        execlp(php, php, "-c", ini, "-r", dump_php, (char *)NULL);
        fprintf(stderr, "w4a-htcheck: W4A00961: cannot run %s: %s\n", php,
                strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    while (len < MAX_FILE - 1
           && (n = read(pfd[0], buf + len, MAX_FILE - 1 - len)) > 0) {
        len += n;
    }
    close(pfd[0]);
    buf[len] = '\0';
    if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status)
        || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "w4a-htcheck: W4A00962: %s -c %s failed; no table "
                "written\n", php, ini);
        return 2;
    }
    head = apr_psprintf(p, "# INI table of PHP %s for mod_w4a_htcompat, "
                        "written by w4a-htcheck --dump-table\n"
                        "# from %s -c %s, PHP_INI_SCAN_DIR=%s\n"
                        "# name access =start-value (%%XX escaped) | ! "
                        "(unknown start value)\n", version, php, ini, scan);
    f = fopen(tmp, "w");
    if (!f || fputs(head, f) < 0 || fwrite(buf, 1, len, f) != len
        || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        fprintf(stderr, "w4a-htcheck: W4A00963: cannot write %s: %s\n", tmp,
                strerror(errno));
        if (f) {
            fclose(f);
        }
        unlink(tmp);
        return 2;
    }
    fclose(f);
    /* What we write is what the module will read: check it the same way. */
    if (htc_table_load(&t, tmp, &err, p) != APR_SUCCESS
        || strcmp(t->version, version)) {
        fprintf(stderr, "w4a-htcheck: W4A00964: %s gave no usable table "
                "for PHP %s: %s\n", php, version,
                err ? err : apr_psprintf(p, "it is PHP %s", t->version));
        unlink(tmp);
        return 2;
    }
    if (chmod(tmp, 0644) != 0 || rename(tmp, out) != 0) {
        fprintf(stderr, "w4a-htcheck: W4A00963: cannot write %s: %s\n", out,
                strerror(errno));
        unlink(tmp);
        return 2;
    }
    printf("%s: PHP %s, %d settings\n", out, version, t->count);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Checks of one .htaccess                                              */

static const htc_table_t *table_of(ctx_t *c, const char *version)
{
    htc_table_t *t;
    const char *err = NULL, *path;
    void *v;

    if (!version) {
        return NULL;
    }
    v = apr_hash_get(c->tables, version, APR_HASH_KEY_STRING);
    if (v) {
        return v == (void *)1 ? NULL : v;
    }
    path = apr_pstrdup(c->p, c->table_pattern);
    {
        const char *at = strstr(path, "%v");
        if (at) {
            path = apr_pstrcat(c->p, apr_pstrmemdup(c->p, path, at - path),
                               version, at + 2, NULL);
        }
    }
    if (htc_table_load(&t, path, &err, c->p) != APR_SUCCESS) {
        fprintf(stderr, "w4a-htcheck: W4A00965: no INI table for PHP %s (%s): "
                "php_value lines are not checked\n", version, err);
        c->errors++;
        apr_hash_set(c->tables, apr_pstrdup(c->p, version),
                     APR_HASH_KEY_STRING, (void *)1);
        return NULL;
    }
    apr_hash_set(c->tables, apr_pstrdup(c->p, version), APR_HASH_KEY_STRING,
                 t);
    return t;
}

/* One word as httpd's configuration parser reads it: blank-separated, or
 * quoted with " or ' (a backslash escapes the quote). */
static const char *conf_word(apr_pool_t *p, const char **line)
{
    const char *q = *line, *start;

    if (*q == '"' || *q == '\'') {
        char quote = *q++;
        char *w, *o, *word;
        start = q;
        while (*q && !(*q == quote && q[-1] != '\\')) {
            q++;
        }
        w = word = apr_pstrmemdup(p, start, q - start);
        *line = *q ? q + 1 : q;
        for (o = w; *w; w++) {
            if (*w == '\\' && (w[1] == quote || w[1] == '\\')) {
                w++;
            }
            *o++ = *w;
        }
        *o = '\0';
        return word;
    }
    start = q;
    while (*q && *q != ' ' && *q != '\t') {
        q++;
    }
    *line = q;
    return apr_pstrmemdup(p, start, q - start);
}

/* Words of a directive line, as httpd splits them (quotes, backslash). */
static apr_array_header_t *words(apr_pool_t *p, const char *line)
{
    apr_array_header_t *a = apr_array_make(p, 8, sizeof(const char *));
    const char *q = line;

    for (;;) {
        const char *w;
        while (*q == ' ' || *q == '\t') {
            q++;
        }
        if (!*q) {
            break;
        }
        w = conf_word(p, &q);
        APR_ARRAY_PUSH(a, const char *) = w;
    }
    return a;
}

static int is_mod_php(const char *m)
{
    static const char *const names[] = {
        "mod_php.c", "mod_php5.c", "mod_php7.c", "mod_php8.c", "sapi_apache2.c",
        "php_module", "php5_module", "php7_module", "php8_module", NULL
    };
    int i;
    for (i = 0; names[i]; i++) {
        if (!strcasecmp(m, names[i])) {
            return 1;
        }
    }
    return 0;
}

/* The same names as mod_w4a_php's php_type_version(). */
static int is_php_type(const char *w)
{
    int prefixed = 1;

    if (!strncasecmp(w, "application/", 12)) {
        w += 12;
    }
    if (!strncasecmp(w, "x-httpd-", 8)) {
        w += 8;
        if (!strncasecmp(w, "ea-", 3)) {
            w += 3;
        }
    }
    else if (!strncasecmp(w, "x-mapp-", 7)) {
        w += 7;
    }
    else {
        prefixed = 0;
    }
    if (strncasecmp(w, "php", 3)) {
        return 0;
    }
    for (w += 3; apr_isdigit(*w); w++) {
    }
    if (!prefixed) {
        return !strcasecmp(w, "-script");
    }
    return !*w;
}

static int names_php_ini_env(const char *w)
{
    return !strncasecmp(w, "PHP_VALUE", 9) || !strncasecmp(w, "PHP_ADMIN_VALUE", 15);
}

typedef struct {
    ctx_t       *c;
    apr_pool_t  *p;            /* this file's, gone after it */
    const char  *path;
    const htc_table_t *table;
    const char  *version;
    int          found, fixes;
} file_t;

static void report(file_t *f, int line, sev_e sev, const char *what,
                   const char *why, const char *fix)
{
    if (sev == SEV_BREAK) {
        f->found++;
        f->c->findings++;
    }
    else {
        f->c->notes++;
    }
    if (f->c->quiet && sev == SEV_NOTE) {
        return;
    }
    printf("%s\n", w4a_printable(f->p, apr_psprintf(f->p, "%s:%d: %s: %s: "
           "%s%s%s", f->path, line, sev == SEV_BREAK ? "break" : "note",
           what, why, fix ? "; fix: " : "", fix ? fix : "")));
}

/* Options mixing +/- and bare words: 2.4 refuses the line (500). */
/*
 * The Options line httpd 2.4 and this node take, or NULL when it is fine;
 * "" when only a person can say (None or All mixed with +/-).  Mixed
 * signed and bare options get a '+'; Includes (SSI exec, run as httpd's
 * user) is not offered to customers (conf/w4a-overrides.conf): it becomes
 * IncludesNOEXEC, and *exec says so.
 */
static const char *fix_options(apr_pool_t *p, const apr_array_header_t *w,
                               int *exec)
{
    int i, signed_n = 0, bare_n = 0, all_none = 0, mixed;
    apr_array_header_t *out = apr_array_make(p, w->nelts, sizeof(const char *));

    *exec = 0;
    for (i = 1; i < w->nelts; i++) {
        const char *o = APR_ARRAY_IDX(w, i, const char *);
        const char *name = (*o == '+' || *o == '-') ? o + 1 : o;
        if (*o == '+' || *o == '-') {
            signed_n++;
        }
        else {
            all_none |= !strcasecmp(o, "None") || !strcasecmp(o, "All");
            bare_n++;
        }
        *exec |= !strcasecmp(name, "Includes");
    }
    mixed = signed_n && bare_n;
    if (mixed && all_none) {
        return "";               /* no sign makes sense: by hand */
    }
    if (!mixed && !*exec) {
        return NULL;
    }
    APR_ARRAY_PUSH(out, const char *) = "Options";
    for (i = 1; i < w->nelts; i++) {
        const char *o = APR_ARRAY_IDX(w, i, const char *);
        const char *sign = (*o == '+' || *o == '-')
                           ? apr_pstrndup(p, o, 1) : mixed ? "+" : "";
        const char *name = (*o == '+' || *o == '-') ? o + 1 : o;
        if (!strcasecmp(name, "Includes")) {
            name = "IncludesNOEXEC";
        }
        APR_ARRAY_PUSH(out, const char *) = apr_pstrcat(p, sign, name, NULL);
    }
    return apr_array_pstrcat(p, out, ' ');
}

/* The leading blanks of a line, to keep indentation in a fix. */
static const char *indent_of(apr_pool_t *p, const char *line)
{
    const char *q = line;
    while (*q == ' ' || *q == '\t') {
        q++;
    }
    return apr_pstrmemdup(p, line, q - line);
}

/*
 * Check every line; return the fixed text (or NULL when nothing to fix).
 * The text is split into lines; fixed lines are replaced.
 */
static char *check_text(file_t *f, char *text)
{
    apr_pool_t *p = f->p;
    apr_array_header_t *out = apr_array_make(p, 64, sizeof(const char *));
    char *line, *next;
    int lineno = 0, changed = 0, has_require = 0, has_order = 0;

    for (line = text; line && *line; line = next) {
        char *nl = strchr(line, '\n');
        const char *fixed = NULL, *ind;
        apr_array_header_t *w;
        const char *d;
        int n, crlf;

        next = nl ? nl + 1 : NULL;
        if (nl) {
            *nl = '\0';
        }
        lineno++;
        n = strlen(line);
        crlf = n && line[n - 1] == '\r';
        if (crlf) {
            line[n - 1] = '\0';
        }
        ind = indent_of(p, line);
        w = words(p, line);
        if (!w->nelts || *APR_ARRAY_IDX(w, 0, const char *) == '#') {
            APR_ARRAY_PUSH(out, const char *) =
                crlf ? apr_pstrcat(p, line, "\r", NULL) : line;
            continue;
        }
        d = APR_ARRAY_IDX(w, 0, const char *);

        if (!strcasecmp(d, "php_value") || !strcasecmp(d, "php_flag")) {
            const char *name = w->nelts > 1 ? APR_ARRAY_IDX(w, 1, const char *) : "";
            const char *val = w->nelts > 2 ? APR_ARRAY_IDX(w, 2, const char *) : "";
            htc_reason_e why = HTC_OK;
            if (w->nelts != 3) {
                why = HTC_SYNTAX;
            }
            else if (!strcasecmp(d, "php_flag") && !htc_flag_value(val)) {
                why = HTC_BADFLAG;
            }
            else if (!strcmp(name, "engine")) {
                why = HTC_OK;
                report(f, lineno, SEV_NOTE, apr_pstrcat(p, d, " engine", NULL),
                       "works: PHP is not run in this directory (403)", NULL);
            }
            else if (f->table || htc_removed(name)) {
                if (!strcasecmp(d, "php_flag")) {
                    val = htc_flag_value(val);
                }
                why = htc_check(f->table, name, val, 0, NULL);
            }
            if (why != HTC_OK) {
                report(f, lineno, SEV_BREAK, apr_pstrcat(p, d, " ", name, NULL),
                       apr_pstrcat(p, "skipped by mod_w4a_htcompat: ",
                                   htc_reason_text(why), NULL),
                       why == HTC_SYSTEM
                       ? "ask support to set it for the hosting; line commented out"
                       : "line commented out");
                fixed = apr_pstrcat(p, FIX_MARK, htc_reason_name(why), ": ",
                                    line, NULL);
            }
        }
        else if (!strcasecmp(d, "php_admin_value")
                 || !strcasecmp(d, "php_admin_flag")) {
            report(f, lineno, SEV_BREAK, d,
                   "only for the server's configuration: ignored in .htaccess "
                   "(it was a 500 under mod_php)",
                   "use php_value/php_flag if the setting is per-directory; "
                   "line commented out");
            fixed = apr_pstrcat(p, FIX_MARK, "admin: ", line, NULL);
        }
        else if (!strcasecmp(d, "<IfModule")
                 && (w->nelts == 2 || (w->nelts == 3 && !strcmp(
                         APR_ARRAY_IDX(w, 2, const char *), ">")))) {
            /* <IfModule mod_php7.c> or <IfModule "mod_php7.c"> */
            char *m = apr_pstrdup(p, APR_ARRAY_IDX(w, 1, const char *));
            int neg = *m == '!';
            size_t ml;
            if (neg) {
                m++;
            }
            ml = strlen(m);
            if (ml && m[ml - 1] == '>') {
                m[ml - 1] = '\0';
            }
            if (is_mod_php(m)) {
                report(f, lineno, SEV_BREAK, apr_pstrcat(p, "<IfModule ",
                                                        neg ? "!" : "", m, ">", NULL),
                       neg ? "mod_php is never loaded here, so this block is "
                             "always active, also where mod_w4a_htcompat "
                             "applies the php_* lines"
                           : "mod_php is never loaded here, so the lines in "
                             "this block are silently skipped",
                       neg ? "<IfModule !mod_w4a_htcompat.c>"
                           : "<IfModule mod_w4a_htcompat.c> (active where the "
                             "php_* lines are applied)");
                fixed = apr_pstrcat(p, ind, "<IfModule ", neg ? "!" : "",
                                    "mod_w4a_htcompat.c>", NULL);
            }
        }
        else if (!strcasecmp(d, "Options")) {
            int exec;
            const char *o = fix_options(p, w, &exec);
            if (o && !*o) {
                report(f, lineno, SEV_BREAK, "Options",
                       "mixes +/- options with None or All: httpd 2.4 refuses "
                       "the line (500)", "by hand: list the options with + or -");
            }
            else if (o) {
                report(f, lineno, SEV_BREAK, "Options", exec
                       ? "Includes (SSI #exec, run as httpd's user) is not "
                         "offered to hostings: the line is a 500 (Option "
                         "Includes not allowed here)"
                       : "mixes options with and without +/-: httpd 2.4 "
                         "refuses the line (500 for the whole directory)", o);
                fixed = apr_pstrcat(p, ind, o, NULL);
            }
        }
        else if ((!strcasecmp(d, "SetEnv") || !strcasecmp(d, "PassEnv")
                  || !strcasecmp(d, "UnsetEnv"))
                 && w->nelts >= 2
                 && names_php_ini_env(APR_ARRAY_IDX(w, 1, const char *))) {
            report(f, lineno, SEV_BREAK, apr_pstrcat(p, d, " ",
                   APR_ARRAY_IDX(w, 1, const char *), NULL),
                   "removed before PHP: FPM would apply it to the worker for "
                   "good, unchecked", "use php_value name value; line "
                   "commented out");
            fixed = apr_pstrcat(p, FIX_MARK, "env: ", line, NULL);
        }
        else if ((!strcasecmp(d, "SetEnvIf") || !strcasecmp(d, "SetEnvIfNoCase")
                  || !strcasecmp(d, "SetEnvIfExpr") || !strcasecmp(d, "RewriteRule")
                  || !strcasecmp(d, "BrowserMatch"))
                 && (strstr(line, "PHP_VALUE") || strstr(line, "PHP_ADMIN_VALUE")
                     || strstr(line, "php_value") || strstr(line, "php_admin_value"))) {
            int env_only = strcasecmp(d, "RewriteRule") != 0;
            report(f, lineno, SEV_BREAK, d,
                   "sets PHP_VALUE/PHP_ADMIN_VALUE, which is removed before "
                   "PHP (FPM would keep it in the worker, unchecked)",
                   env_only ? "use php_value name value; line commented out"
                            : "by hand: drop the E=PHP_VALUE part, use php_value");
            if (env_only) {
                fixed = apr_pstrcat(p, FIX_MARK, "env: ", line, NULL);
            }
        }
        else if (!strncasecmp(d, "suPHP_", 6)) {
            report(f, lineno, SEV_BREAK, d,
                   "mod_suphp is not loaded: ignored by mod_w4a_htcompat (a "
                   "500 without it); PHP already runs as the hosting's user, "
                   "a suPHP_ConfigPath php.ini is not read",
                   "line commented out");
            fixed = apr_pstrcat(p, FIX_MARK, "suphp: ", line, NULL);
        }
        else if (!strcasecmp(d, "DefaultType") && w->nelts == 2
                 && strcasecmp(APR_ARRAY_IDX(w, 1, const char *), "none")) {
            report(f, lineno, SEV_BREAK, "DefaultType",
                   "has no effect since httpd 2.4 (files without a known "
                   "extension are no longer given this type)",
                   "use ForceType or AddType; line commented out");
            fixed = apr_pstrcat(p, FIX_MARK, "defaulttype: ", line, NULL);
        }
        else if ((!strcasecmp(d, "AddHandler") || !strcasecmp(d, "AddType")
                  || !strcasecmp(d, "SetHandler") || !strcasecmp(d, "ForceType"))
                 && w->nelts >= 2
                 && is_php_type(APR_ARRAY_IDX(w, 1, const char *))) {
            report(f, lineno, SEV_NOTE, apr_pstrcat(p, d, " ",
                   APR_ARRAY_IDX(w, 1, const char *), NULL),
                   "works: these files run in the hosting's PHP pool (a "
                   "versioned type picks that version when the hosting has "
                   "its pool, the domain's version otherwise); the pool must "
                   "allow the extension (security.limit_extensions)", NULL);
        }
        else if (!strcasecmp(d, "RewriteRule") && strstr(line, "index.php/")) {
            report(f, lineno, SEV_NOTE, "RewriteRule … index.php/",
                   "works: PATH_INFO reaches PHP (index.php? works too)", NULL);
        }
        else if (!strcasecmp(d, "Order") || !strcasecmp(d, "Allow")
                 || !strcasecmp(d, "Deny") || !strcasecmp(d, "Satisfy")) {
            if (!has_order) {
                report(f, lineno, SEV_NOTE, d,
                       "works (mod_access_compat is loaded); httpd 2.4's "
                       "form is Require", NULL);
            }
            has_order = lineno;
        }
        else if (!strcasecmp(d, "Require")) {
            has_require = lineno;
        }
        if (fixed) {
            changed = 1;
            f->fixes++;
            APR_ARRAY_PUSH(out, const char *) =
                crlf ? apr_pstrcat(p, fixed, "\r", NULL) : fixed;
        }
        else {
            APR_ARRAY_PUSH(out, const char *) =
                crlf ? apr_pstrcat(p, line, "\r", NULL) : line;
        }
    }
    if (has_order && has_require) {
        report(f, has_require, SEV_BREAK, "Require with Order/Allow/Deny",
               apr_psprintf(p, "mixing httpd 2.4's Require with 2.2's access "
                            "lines (line %d) changes their meaning: 2.2's "
                            "lines win over Require in the same directory",
                            has_order),
               "by hand: keep one form (Require)");
    }
    if (!changed) {
        return NULL;
    }
    {
        char *s = apr_array_pstrcat(p, out, '\n');
        return apr_pstrcat(p, s, "\n", NULL);
    }
}

/* Read a regular file relative to dfd, without following a symlink; a
 * file of several hard links only the first time (links: the ones seen;
 * a tenant's tree of links to one 4 MiB file is read once). */
static char *read_at(apr_pool_t *p, int dfd, const char *name, struct stat *st,
                     apr_hash_t *links)
{
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    char *buf;
    ssize_t n;

    if (fd < 0) {
        return NULL;
    }
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode) || st->st_size > MAX_FILE) {
        close(fd);
        return NULL;
    }
    if (st->st_nlink > 1 && links) {
        char key[48];
        int kl = snprintf(key, sizeof(key), "%lu:%lu",
                          (unsigned long)st->st_dev, (unsigned long)st->st_ino);
        if (apr_hash_get(links, key, kl)) {
            close(fd);
            return NULL;
        }
        apr_hash_set(links, apr_pstrmemdup(apr_hash_pool_get(links), key, kl),
                     kl, "");
    }
    buf = apr_palloc(p, st->st_size + 1);
    n = read(fd, buf, st->st_size);
    close(fd);
    if (n != st->st_size) {
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* Write text to name in dfd, atomically, owned and moded like st. */
static int write_at(apr_pool_t *p, int dfd, const char *name, const char *text,
                    const struct stat *st, int excl)
{
    const char *tmp = excl ? name : apr_psprintf(p, ".%s.w4a-tmp.%ld", name,
                                                 (long)getpid());
    size_t len = strlen(text);
    int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW
                    | O_CLOEXEC, 0600);

    if (fd < 0) {
        return excl && errno == EEXIST ? 0 : -1;
    }
    if (write(fd, text, len) != (ssize_t)len
        || fchown(fd, st->st_uid, st->st_gid) != 0
        || fchmod(fd, st->st_mode & 07777) != 0 || fsync(fd) != 0) {
        close(fd);
        unlinkat(dfd, tmp, 0);
        return -1;
    }
    close(fd);
    if (!excl && renameat(dfd, tmp, dfd, name) != 0) {
        unlinkat(dfd, tmp, 0);
        return -1;
    }
    return 0;
}

static void check_file(ctx_t *c, int dfd, const char *dir, const char *version)
{
    struct stat st;
    apr_pool_t *p;
    const char *path;
    char *text, *orig, *fixed;
    file_t f;

    /* (a tenant's tree can hold thousands of hard links to one 4 MiB
     * .htaccess: nothing of a file is kept past it) */
    apr_pool_create(&p, c->p);
    path = apr_pstrcat(p, dir, "/.htaccess", NULL);
    /* (with --fix, every link is read: fixing one renames a new file over
     * that name only, and the others must be fixed too) */
    text = read_at(p, dfd, ".htaccess", &st, c->fix ? NULL : c->links);
    if (!text) {
        apr_pool_destroy(p);
        return;
    }
    c->files++;
    memset(&f, 0, sizeof(f));
    f.c = c;
    f.p = p;
    f.path = path;
    f.version = version;
    f.table = table_of(c, version);
    orig = apr_pstrdup(p, text);
    fixed = check_text(&f, text);
    if (fixed && c->fix) {
        /* The original is kept once: the first version we ever changed. */
        if (write_at(p, dfd, ".htaccess" ORIG_SUFFIX, orig, &st, 1) != 0
            || write_at(p, dfd, ".htaccess", fixed, &st, 0) != 0) {
            fprintf(stderr, "w4a-htcheck: W4A00966: %s: cannot rewrite: %s\n",
                    w4a_printable(p, path), strerror(errno));
            c->errors++;
        }
        else {
            c->fixed += f.fixes;
            c->rewritten++;
            if (!c->quiet) {
                printf("%s: fixed %d line(s), original kept in .htaccess%s\n",
                       w4a_printable(p, path), f.fixes, ORIG_SUFFIX);
            }
        }
    }
    apr_pool_destroy(p);
}

static void walk(ctx_t *c, int dfd, const char *path, const char *version,
                 int depth)
{
    DIR *d;
    struct dirent *de;
    int fd2;
    apr_pool_t *wp;
    apr_array_header_t *subdirs;
    int i;

    check_file(c, dfd, path, version);
    if (depth >= MAX_DEPTH || (fd2 = dup(dfd)) < 0) {
        return;
    }
    if (!(d = fdopendir(fd2))) {
        close(fd2);
        return;
    }
    apr_pool_create(&wp, c->p);
    subdirs = apr_array_make(wp, 8, sizeof(const char *));
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) {
            continue;
        }
        if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0
            && S_ISDIR(st.st_mode)) {
            APR_ARRAY_PUSH(subdirs, const char *) = apr_pstrdup(wp, de->d_name);
        }
    }
    closedir(d);
    for (i = 0; i < subdirs->nelts; i++) {
        const char *name = APR_ARRAY_IDX(subdirs, i, const char *);
        int nfd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW
                         | O_CLOEXEC);
        if (nfd < 0) {
            continue;
        }
        walk(c, nfd, apr_pstrcat(wp, path, "/", name, NULL), version,
             depth + 1);
        close(nfd);
    }
    apr_pool_destroy(wp);
}

/* uid: the hosting's (map mode), whose docroot must be its or root's;
 * -1 for a DIR of the command line. */
static void walk_top(ctx_t *c, const char *top, const char *version, long uid)
{
    const char *abs = top, *link;
    size_t n = strlen(top);
    struct stat st;
    int fd;

    if (top[0] != '/') {
        char cwd[4096];
        if (getcwd(cwd, sizeof(cwd))) {
            abs = apr_pstrcat(c->p, cwd, "/", top, NULL);
        }
    }
    fd = w4a_open_docroot(abs, &link, c->p);
    if (fd < 0 && errno == EXDEV) {
        fprintf(stderr, "w4a-htcheck: W4A00967: %s: a symlink below its home "
                "leads out of it: not checked\n", w4a_printable(c->p, top));
        c->errors++;
        return;
    }
    if (fd < 0 && errno == EPERM) {
        fprintf(stderr, "w4a-htcheck: W4A00967: %s: reached through a "
                "symlink (%s) in a directory others than root can change: "
                "not checked\n", w4a_printable(c->p, top),
                w4a_printable(c->p, link ? link : top));
        c->errors++;
        return;
    }
    if (fd < 0) {
        fprintf(stderr, "w4a-htcheck: W4A00967: %s: %s\n",
                w4a_printable(c->p, top), strerror(errno));
        c->errors++;
        return;
    }
    if (uid >= 0 && fstat(fd, &st) != 0) {
        fprintf(stderr, "w4a-htcheck: W4A00967: %s: %s\n",
                w4a_printable(c->p, top), strerror(errno));
        c->errors++;
        close(fd);
        return;
    }
    if (uid >= 0 && st.st_uid != (uid_t)uid && st.st_uid != 0) {
        fprintf(stderr, "w4a-htcheck: W4A00967: %s: belongs to uid %ld, "
                "neither its hosting's (%ld) nor root's: not checked\n",
                w4a_printable(c->p, top), (long)st.st_uid, uid);
        c->errors++;
        close(fd);
        return;
    }
    while (n > 1 && top[n - 1] == '/') {
        n--;
    }
    walk(c, fd, apr_pstrmemdup(c->p, top, n), version, 0);
    close(fd);
}

typedef struct {
    ctx_t      *c;
    apr_hash_t *seen;
} map_walk_t;

static int map_record(void *baton, const w4a_hosting_t *rec)
{
    map_walk_t *m = baton;
    if (apr_hash_get(m->seen, rec->docroot, APR_HASH_KEY_STRING)) {
        return 0;
    }
    apr_hash_set(m->seen, apr_pstrdup(m->c->p, rec->docroot),
                 APR_HASH_KEY_STRING, "");
    walk_top(m->c, rec->docroot, rec->php_version, (long)rec->uid);
    return 0;
}

/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
"Usage: w4a-htcheck [options] DIR...          check the .htaccess files below DIR\n"
"       w4a-htcheck [options] --map INDEX     ... of every hosting in the map\n"
"       w4a-htcheck --dump-table VERSION [--php BIN] [--php-ini FILE]\n"
"                   [--scan-dir DIR] -o FILE  write the INI table of a PHP\n"
"\n"
"Reports every .htaccess line that breaks or changes meaning on this\n"
"platform, with the reason and the fix (\"break\"), and lines that work as\n"
"they did (\"note\"). --fix rewrites the files: the original is kept as\n"
".htaccess" ORIG_SUFFIX " beside each; a second run changes nothing.\n"
"\n"
"Options:\n"
"  --fix                 rewrite the files\n"
"  --map INDEX           every docroot of the compiled hosting map\n"
"  --table PATTERN       INI tables, %%v = PHP version [/etc/w4a/php/%%v.table]\n"
"  --php-version V       PHP version for DIR arguments [8.2]\n"
"  -q, --quiet           only the lines to fix, no notes\n"
"  -h, --help            this text\n"
"\n"
"Exit status: 0 nothing to fix, 1 lines to fix found (fixed with --fix),\n"
"2 usage or I/O error.\n");
}

int main(int argc, const char *const *argv)
{
    static const apr_getopt_option_t opts[] = {
        {"fix", 1001, 0, "rewrite"},
        {"map", 1002, 1, "map index"},
        {"table", 1003, 1, "table pattern"},
        {"php-version", 1004, 1, "version"},
        {"dump-table", 1005, 1, "dump table"},
        {"php", 1006, 1, "php binary"},
        {"php-ini", 1007, 1, "php.ini"},
        {"scan-dir", 1008, 1, "conf.d"},
        {"output", 'o', 1, "output"},
        {"quiet", 'q', 0, "quiet"},
        {"help", 'h', 0, "help"},
        {NULL, 0, 0, NULL}
    };
    apr_pool_t *p;
    apr_getopt_t *os;
    apr_status_t rv;
    int optch, i;
    const char *arg;
    const char *map = NULL, *dump = NULL, *php = NULL, *ini = NULL,
               *scan = NULL, *out = NULL;
    ctx_t c;

    apr_app_initialize(&argc, &argv, NULL);
    atexit(apr_terminate);
    apr_pool_create(&p, NULL);
    memset(&c, 0, sizeof(c));
    c.p = p;
    c.table_pattern = "/etc/w4a/php/%v.table";
    c.php_version = "8.2";
    c.tables = apr_hash_make(p);
    c.links = apr_hash_make(p);

    apr_getopt_init(&os, p, argc, argv);
    while ((rv = apr_getopt_long(os, opts, &optch, &arg)) == APR_SUCCESS) {
        switch (optch) {
        case 1001: c.fix = 1; break;
        case 1002: map = arg; break;
        case 1003: c.table_pattern = arg; break;
        case 1004: c.php_version = arg; break;
        case 1005: dump = arg; break;
        case 1006: php = arg; break;
        case 1007: ini = arg; break;
        case 1008: scan = arg; break;
        case 'o': out = arg; break;
        case 'q': c.quiet = 1; break;
        case 'h': usage(stdout); return 0;
        }
    }
    if (rv != APR_EOF) {
        usage(stderr);
        return 2;
    }
    if (dump) {
        if (!out || os->ind != argc || strpbrk(dump, "/ ")) {
            usage(stderr);
            return 2;
        }
        return dump_table(p, dump, php ? php : apr_pstrcat(p, "php", dump, NULL),
                          ini ? ini : apr_psprintf(p, "/etc/php/%s/fpm/php.ini", dump),
                          scan ? scan : apr_psprintf(p, "/etc/php/%s/fpm/conf.d", dump),
                          out);
    }
    if ((map && os->ind != argc) || (!map && os->ind == argc)) {
        usage(stderr);
        return 2;
    }
    if (map) {
        w4a_map_t *m;
        const char *err = NULL;
        map_walk_t mw;
        if (w4a_map_open(&m, map, &err, p) != APR_SUCCESS) {
            fprintf(stderr, "w4a-htcheck: W4A00968: %s: %s\n", map,
                    err ? err : "cannot open");
            return 2;
        }
        mw.c = &c;
        mw.seen = apr_hash_make(p);
        w4a_map_iterate(m, map_record, &mw);
        w4a_map_close(m);
    }
    for (i = os->ind; i < argc; i++) {
        walk_top(&c, argv[i], c.php_version, -1);
    }
    printf("%d .htaccess file(s): %d line(s) to fix%s, %d note(s)",
           c.files, c.findings, c.fix ? "" : " (run with --fix)", c.notes);
    if (c.fix) {
        printf("; %d line(s) fixed in %d file(s)", c.fixed, c.rewritten);
    }
    printf("\n");
    if (c.errors && !c.files) {
        return 2;
    }
    return c.findings ? 1 : 0;
}
