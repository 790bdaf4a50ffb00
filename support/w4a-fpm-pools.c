/*
 * w4a-fpm-pools: PHP-FPM pool files from the hosting map.
 *
 * One "pm = ondemand" pool per (hosting, PHP version) found in the compiled
 * map index, running as the hosting's uid/gid, listening on the socket
 * mod_w4a_php will use (same pattern as W4APHPSocket), with open_basedir,
 * upload and session directories inside the hosting's home, and the
 * hosting's error and mail logs in <home>/log/php (the slow log, written
 * by the FPM master as root, in the operator's --slowlog directory).
 * Files are written
 * atomically and only when their content changes; pools no longer in the
 * map are removed; each FPM master whose pools changed is reloaded
 * (SIGUSR2), and only then.
 *
 * Beside each pool file, w4a-<hosting>.settings lists the pool's own
 * php_value / php_admin_value settings (htcompat_pool.h's format):
 * mod_w4a_htcompat reads it so that its resets restore the pool's values
 * and never touch a setting the pool fixes.  Per-hosting settings come
 * from the operator's --pool-settings directory.
 *
 * --copy-slow-logs (root, from cron) instead copies what is new in each
 * pool's slow log to the hosting's <home>/log/php/slow.log, appended by a
 * child running as the hosting (see the section below).
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE                 /* pipe2, getresuid */
#endif

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <poll.h>
#include <unistd.h>
#include <dirent.h>

#include <apr_file_io.h>
#include <apr_general.h>
#include <apr_getopt.h>
#include <apr_hash.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <apr_time.h>

#include "htcompat_pool.h"
#include "htcompat_table.h"
#include "w4a_map.h"
#include "w4a_util.h"

#define POOL_PREFIX "w4a-"
#define POOL_SUFFIX ".conf"
#define SETTINGS_SUFFIX ".settings"

/* What FPM may run: .php, and the extensions the mod_php era mapped to PHP
 * (AddHandler application/x-httpd-php .html, …: mod_w4a_php routes those
 * to the pool, FPM must not refuse them). */
#define DEFAULT_EXTENSIONS ".php .php5 .php7 .php8 .phtml .html .htm"

typedef struct {
    const char *index;
    const char *pool_dir;      /* pattern, %v */
    const char *socket;        /* pattern, %h %v */
    const char *pid_file;      /* pattern, %v; "" = never reload */
    const char *slowlog;       /* pattern, %h %v: outside the hosting's tree */
    const char *listen_owner;
    const char *extensions;    /* "…" for security.limit_extensions */
    const char *settings_dir;  /* operator's <hosting>.conf files; NULL: none */
    int         max_children;
    int         idle_timeout;
    int         max_requests;
    int         slowlog_timeout;
    int         backlog;
    int         dry_run;
    int         quiet;
    int         copy_slow;     /* --copy-slow-logs */
    const char *slow_state;    /* root's directory of the copy offsets */
    apr_off_t   slow_copy_limit; /* bytes one run copies per slow log */
    apr_off_t   slow_log_size; /* the customer's slow.log at most */
} options;

#define SLOW_COPY_LIMIT_MAX  ((apr_off_t)64 << 20)

typedef struct {
    apr_pool_t  *p;
    options     *o;
    apr_hash_t  *pools;        /* "hosting\001version" -> pool_t */
    apr_hash_t  *versions;     /* version -> per-version state */
    apr_hash_t  *dirs;         /* pool directory -> what all its versions want */
    apr_hash_t  *signalled;    /* pid file -> its master was sent SIGUSR2 */
    int          reloaded;     /* masters signalled */
} gen_ctx;

/* One php_value / php_flag / php_admin_value / php_admin_flag of a pool. */
typedef struct {
    const char *name;
    const char *value;         /* as PHP sees it ("1"/"" for a flag) */
    int         admin;
    int         flag;
} pool_setting_t;

typedef struct {
    const w4a_hosting_t *rec;
    const char          *home;
    apr_array_header_t  *extra;   /* pool_setting_t, from --pool-settings */
} pool_t;

typedef struct {
    const char *version;
    const char *dir;
    apr_hash_t *wanted;        /* file name -> content */
    apr_hash_t *dir_wanted;    /* the same, for every version of v->dir */
    int         changed;
    int         written, removed, unchanged;
} version_t;

static const char *expand(apr_pool_t *p, const char *pattern,
                          const char *hosting, const char *version)
{
    apr_array_header_t *parts = apr_array_make(p, 8, sizeof(const char *));
    const char *q, *start = pattern;

    for (q = pattern; *q; q++) {
        if (*q != '%' || !q[1]) {
            continue;
        }
        APR_ARRAY_PUSH(parts, const char *) = apr_pstrmemdup(p, start, q - start);
        q++;
        APR_ARRAY_PUSH(parts, const char *) =
            *q == 'h' ? hosting : *q == 'v' ? version : *q == '%' ? "%" : "";
        start = q + 1;
    }
    APR_ARRAY_PUSH(parts, const char *) = start;
    return apr_array_pstrcat(p, parts, 0);
}

/* The hosting's home: the docroot's part before "/var/www/", as in the map
 * format's default log directory; else the docroot itself. */
static const char *hosting_home(apr_pool_t *p, const char *docroot)
{
    const char *vw = strstr(docroot, "/var/www/");
    return vw ? apr_pstrmemdup(p, docroot, vw - docroot) : docroot;
}

/* Pool names and paths go into an INI file: allow only what cannot break
 * out of a value or a section name. */
/* A value that FPM's INI parser keeps as one double-quoted string. */
static int ini_safe_value(const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch < 0x20 || ch == 0x7f || strchr("\"\\$`", ch)) {
            return 0;
        }
    }
    return 1;
}

/* A name or path written unquoted into a pool file: none of the bytes
 * FPM's INI parser reads as quoting, sections, assignment, comments,
 * variables or (the operators ( ) ! ~ | & ^) an expression, which fails
 * the whole file or turns the value into a number. */
static int ini_safe(const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch < 0x21 || ch >= 0x7f
            || strchr("\"'[]=;$`\\{}()!~|&^", ch)) {
            return 0;
        }
    }
    return 1;
}

static char *read_small(apr_pool_t *p, const char *path);

/* The operator's settings of the pool, as pool file lines; values quoted,
 * so that FPM keeps them as the very strings mod_w4a_htcompat sends. */
static const char *extra_text(apr_pool_t *p, const pool_t *pl)
{
    apr_array_header_t *out = apr_array_make(p, 8, sizeof(const char *));
    int k;

    for (k = 0; pl->extra && k < pl->extra->nelts; k++) {
        const pool_setting_t *e = &APR_ARRAY_IDX(pl->extra, k, pool_setting_t);
        APR_ARRAY_PUSH(out, const char *) =
            e->flag ? apr_psprintf(p, "php%s_flag[%s] = %s\n",
                                   e->admin ? "_admin" : "", e->name,
                                   *e->value ? "on" : "off")
                    : apr_psprintf(p, "php%s_value[%s] = \"%s\"\n",
                                   e->admin ? "_admin" : "", e->name,
                                   e->value);
    }
    return apr_array_pstrcat(p, out, 0);
}

/* The operator's <settings_dir>/<hosting>.conf: lines "php_value NAME
 * VALUE", "php_flag NAME on|off", "php_admin_value …", "php_admin_flag
 * …"; '#' comments.  -1 (said on stderr) on any line that is not one of
 * these, names a setting every pool fixes, or holds a value that could
 * not be kept as one quoted string. */
static int read_extra(apr_pool_t *p, const options *o, pool_t *pl)
{
    const char *path;
    char *text, *line, *next;
    struct stat st;
    int lineno = 0;

    if (!o->settings_dir) {
        return 0;
    }
    path = apr_pstrcat(p, o->settings_dir, "/", pl->rec->hosting, ".conf",
                       NULL);
    if (lstat(path, &st) != 0 && errno == ENOENT) {
        return 0;
    }
    if (!(text = read_small(p, path))) {
        fprintf(stderr, "w4a-fpm-pools: W4A00250: %s: not a readable regular "
                "file\n", path);
        return -1;
    }
    pl->extra = apr_array_make(p, 4, sizeof(pool_setting_t));
    for (line = text; line; line = next) {
        char *dir, *name, *value, *end, *last;
        pool_setting_t *e;
        int k;

        if ((next = strchr(line, '\n')) != NULL) {
            *next++ = '\0';
        }
        lineno++;
        while (*line == ' ' || *line == '\t') {
            line++;
        }
        for (end = line + strlen(line); end > line
             && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'); end--) {
        }
        *end = '\0';
        if (!*line || *line == '#') {
            continue;
        }
        dir = apr_strtok(line, " \t", &last);
        name = apr_strtok(NULL, " \t", &last);
        value = last;
        while (value && (*value == ' ' || *value == '\t')) {
            value++;
        }
        if (value && *value == '"' && end - value >= 2 && end[-1] == '"') {
            value++;
            end[-1] = '\0';
        }
        if (!dir || !name || !value || !*value
            || (strcmp(dir, "php_value") && strcmp(dir, "php_flag")
                && strcmp(dir, "php_admin_value")
                && strcmp(dir, "php_admin_flag"))
            || !w4a_ini_name_ok(name)) {
            fprintf(stderr, "w4a-fpm-pools: W4A00250: %s:%d: expected "
                    "php_value|php_flag|php_admin_value|php_admin_flag NAME "
                    "VALUE\n", path, lineno);
            return -1;
        }
        if (htc_pool_locked(name)) {
            fprintf(stderr, "w4a-fpm-pools: W4A00250: %s:%d: %s is fixed by "
                    "w4a-fpm-pools in every pool (isolation); not settable\n",
                    path, lineno, name);
            return -1;
        }
        for (k = 0; k < pl->extra->nelts; k++) {
            if (!strcmp(APR_ARRAY_IDX(pl->extra, k, pool_setting_t).name,
                        name)) {
                fprintf(stderr, "w4a-fpm-pools: W4A00250: %s:%d: %s given "
                        "twice\n", path, lineno, name);
                return -1;
            }
        }
        e = apr_array_push(pl->extra);
        e->name = name;
        e->admin = !strncmp(dir, "php_admin_", 10);
        e->flag = !strcmp(dir + strlen(dir) - 4, "flag");
        if (e->flag) {
            const char *f = htc_flag_value(value);
            if (!f) {
                fprintf(stderr, "w4a-fpm-pools: W4A00250: %s:%d: %s takes on "
                        "or off\n", path, lineno, dir);
                return -1;
            }
            e->value = *f == '1' ? "1" : "";      /* as FPM gives it to PHP */
        }
        else if (!htc_value_safe(value) || !ini_safe_value(value)) {
            fprintf(stderr, "w4a-fpm-pools: W4A00250: %s:%d: the value of %s "
                    "holds a control character, '\"', '\\' or '$', which a "
                    "pool file cannot keep as one string\n", path, lineno,
                    name);
            return -1;
        }
        else {
            e->value = value;
        }
    }
    return 0;
}

/* No generation or date in the text: an unchanged pool stays unchanged. */
static const char *pool_text(apr_pool_t *p, const options *o, const pool_t *pl)
{
    const w4a_hosting_t *r = pl->rec;
    const char *sock = expand(p, o->socket, r->hosting, r->php_version);

    return apr_psprintf(p,
        "; Generated by w4a-fpm-pools from %s.\n"
        "; Do not edit: the next run overwrites it.\n"
        "[%s]\n"
        "user = %u\n"
        "group = %u\n"
        "listen = %s\n"
        "listen.owner = %s\n"
        "listen.group = %s\n"
        "listen.mode = 0600\n"
        "listen.backlog = %d\n"
        "pm = ondemand\n"
        "pm.max_children = %d\n"
        "pm.process_idle_timeout = %ds\n"
        "pm.max_requests = %d\n"
        "chdir = /\n"
        "catch_workers_output = no\n"
        "clear_env = yes\n"
        "security.limit_extensions = %s\n"
        "slowlog = %s\n"
        "request_slowlog_timeout = %ds\n"
        /* Settings set here are locked for mod_w4a_htcompat too: keep the
         * list in modules/htcompat/htcompat_table.c (pool_locked) in step. */
        "php_admin_value[error_log] = %s/log/php/error.log\n"
        "php_admin_flag[log_errors] = on\n"
        "php_admin_value[open_basedir] = %s/:/usr/share/php/\n"
        "php_admin_value[upload_tmp_dir] = %s/tmp\n"
        "php_admin_value[session.save_path] = %s/tmp\n"
        "php_admin_value[sys_temp_dir] = %s/tmp\n"
        /* every mail says the uid and script that sent it; the hosting's
         * own mail log, written by its worker (its uid) */
        "php_admin_flag[mail.add_x_header] = on\n"
        "php_admin_value[mail.log] = %s/log/php/mail.log\n"
        "env[TMPDIR] = %s/tmp\n"
        "%s",
        o->index, r->hosting, r->uid, r->gid, sock,
        o->listen_owner, o->listen_owner, o->backlog, o->max_children, o->idle_timeout,
        o->max_requests, o->extensions,
        expand(p, o->slowlog, r->hosting, r->php_version), o->slowlog_timeout,
        pl->home, pl->home, pl->home, pl->home, pl->home, pl->home, pl->home,
        extra_text(p, pl));
}

/* The pool's own settings, for mod_w4a_htcompat: the ones pool_text()
 * fixes, then the operator's. */
static const char *settings_text(apr_pool_t *p, const pool_t *pl)
{
    const char *fixed[][2] = {
        { "error_log", "/log/php/error.log" }, { "log_errors", NULL },
        { "open_basedir", "/:/usr/share/php/" }, { "upload_tmp_dir", "/tmp" },
        { "session.save_path", "/tmp" }, { "sys_temp_dir", "/tmp" },
        { "mail.add_x_header", NULL }, { "mail.log", "/log/php/mail.log" }
    };
    apr_array_header_t *out = apr_array_make(p, 16, sizeof(const char *));
    apr_size_t i;
    int k;

    APR_ARRAY_PUSH(out, const char *) =
        "# Generated by w4a-fpm-pools: the settings of the pool file beside "
        "it.\n" HTC_POOL_MAGIC " " HTC_POOL_FORMAT "\n";
    for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        const char *v = fixed[i][1] ? apr_pstrcat(p, pl->home, fixed[i][1],
                                                  NULL) : "1";
        APR_ARRAY_PUSH(out, const char *) =
            apr_psprintf(p, "admin %s =%s\n", fixed[i][0],
                         htc_pool_escape(v, p));
    }
    for (k = 0; pl->extra && k < pl->extra->nelts; k++) {
        const pool_setting_t *e = &APR_ARRAY_IDX(pl->extra, k, pool_setting_t);
        APR_ARRAY_PUSH(out, const char *) =
            apr_psprintf(p, "%s %s =%s\n", e->admin ? "admin" : "value",
                         e->name, htc_pool_escape(e->value, p));
    }
    return apr_array_pstrcat(p, out, 0);
}

static int collect(void *baton, const w4a_hosting_t *rec)
{
    gen_ctx *g = baton;
    const char *key;

    if (!rec->php_version) {
        return 0;
    }
    if (!ini_safe(rec->hosting) || !ini_safe(rec->php_version)
        || !ini_safe(rec->docroot)) {
        fprintf(stderr, "w4a-fpm-pools: W4A00901: hosting '%s' (domain %s): "
                "name, version or docroot holds characters unsafe in a pool "
                "file; skipped\n", rec->hosting, rec->domain);
        return 0;
    }
    key = apr_pstrcat(g->p, rec->hosting, "\001", rec->php_version, NULL);
    if (!apr_hash_get(g->pools, key, APR_HASH_KEY_STRING)) {
        pool_t *pl = apr_pcalloc(g->p, sizeof(*pl));
        w4a_hosting_t *copy = apr_pmemdup(g->p, rec, sizeof(*rec));
        pl->rec = copy;
        pl->home = hosting_home(g->p, rec->docroot);
        apr_hash_set(g->pools, key, APR_HASH_KEY_STRING, pl);
    }
    return 0;
}

static version_t *version_of(gen_ctx *g, const char *version)
{
    version_t *v = apr_hash_get(g->versions, version, APR_HASH_KEY_STRING);
    if (!v) {
        v = apr_pcalloc(g->p, sizeof(*v));
        v->version = version;
        v->dir = expand(g->p, g->o->pool_dir, "", version);
        v->wanted = apr_hash_make(g->p);
        v->dir_wanted = apr_hash_get(g->dirs, v->dir, APR_HASH_KEY_STRING);
        if (!v->dir_wanted) {
            v->dir_wanted = apr_hash_make(g->p);
            apr_hash_set(g->dirs, v->dir, APR_HASH_KEY_STRING, v->dir_wanted);
        }
        apr_hash_set(g->versions, version, APR_HASH_KEY_STRING, v);
    }
    return v;
}

/* Content of path if it is a regular file under 1 MiB, else NULL. */
static char *read_small(apr_pool_t *p, const char *path)
{
    struct stat st;
    char *buf;
    ssize_t n;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0) {
        return NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (1 << 20)) {
        close(fd);
        return NULL;
    }
    buf = apr_palloc(p, (apr_size_t)st.st_size + 1);
    n = read(fd, buf, (size_t)st.st_size);
    close(fd);
    if (n != st.st_size) {
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* Pool files name hostings, users, sockets and paths: for the FPM master
 * (root) only, whatever the umask.  The settings file beside each is read
 * by mod_w4a_htcompat in httpd's children: root's, group www-data, and the
 * pool directory the same, so that no hosting's uid reads either. */
#define POOL_FILE_MODE 0640
#define POOL_DIR_MODE  0750
#define READER_GROUP   "www-data"

static int has_suffix(const char *name, const char *suffix)
{
    size_t n = strlen(name);
    return n > strlen(POOL_PREFIX) + strlen(suffix)
           && !strncmp(name, POOL_PREFIX, strlen(POOL_PREFIX))
           && !strcmp(name + n - strlen(suffix), suffix);
}

/* The group the settings files and a new pool directory get: httpd's. */
static gid_t reader_gid(void)
{
    struct group *gr = getgrnam(READER_GROUP);
    return gr ? gr->gr_gid : 0;
}

static int write_atomic(apr_pool_t *p, const char *path, const char *text)
{
    const char *tmp = apr_psprintf(p, "%s.tmp.%ld", path, (long)getpid());
    size_t len = strlen(text);
    int fd;

    unlink(tmp);                    /* left by a crashed run */
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
              0600);
    if (fd < 0) {
        return -1;
    }
    const char *base = strrchr(path, '/');

    if ((has_suffix(base ? base + 1 : path, SETTINGS_SUFFIX) && geteuid() == 0
         && fchown(fd, 0, reader_gid()) != 0)
        || fchmod(fd, POOL_FILE_MODE) != 0
        || write(fd, text, len) != (ssize_t)len || fsync(fd) != 0) {
        close(fd);
        unlink(tmp);
        return -1;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* Directory name in dfd: made (mode) if missing, opened without following
 * a symlink, and given to the hosting when it is the one we made (still
 * root's).  Its descriptor, or -1. */
static int subdir_at(int dfd, const char *name, mode_t mode,
                     const w4a_hosting_t *r)
{
    struct stat st;
    int made = mkdirat(dfd, name, mode) == 0;
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0) {
        return -1;
    }
    if (fstat(fd, &st) != 0
        || (made && st.st_uid == 0 && fchown(fd, r->uid, r->gid) != 0)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* <home>/log/php (error and mail logs) and <home>/tmp, owned by the
 * hosting: both are written by its workers, which run as the hosting.
 * The home is the hosting's: whatever is in it may be swapped for a
 * symlink at any moment, so each directory is reached from the one above
 * by descriptor, never followed through a symlink, and given to the
 * hosting through its descriptor (a chown by path would follow a symlink
 * the tenant put there in between, anywhere on the machine).  The slow
 * log is not here: the FPM master writes it as root, so it lives in the
 * operator's --slowlog directory.  -1: no usable home. */
static int home_dirs(const pool_t *pl, apr_pool_t *p)
{
    const w4a_hosting_t *r = pl->rec;
    const char *link;
    struct stat st;
    int home, log, php, tmp;

    /* (a docroot without /var/www/ is its own home, its name in the
     * tenant's directory: w4a_open_dir_trusted follows no symlink of
     * the tenant's on the way) */
    home = w4a_open_dir_trusted(pl->home, &link, p);
    if (home < 0 && errno == EPERM) {
        fprintf(stderr, "w4a-fpm-pools: W4A00928: hosting %s: home %s is "
                "reached through a symlink (%s) in a directory others than "
                "root can change: log/ and tmp/ not made; the pool is "
                "written\n", r->hosting, pl->home, link);
        return 0;
    }
    if (home < 0 || fstat(home, &st) != 0) {
        if (home >= 0) {
            close(home);
        }
        return -1;
    }
    if (st.st_uid != r->uid && st.st_uid != 0) {
        fprintf(stderr, "w4a-fpm-pools: W4A00928: hosting %s: home %s "
                "belongs to uid %ld, neither the hosting's nor root's: log/ "
                "and tmp/ not made; the pool is written\n", r->hosting,
                pl->home, (long)st.st_uid);
        close(home);
        return 0;
    }
    log = subdir_at(home, "log", 0755, r);
    php = log >= 0 ? subdir_at(log, "php", 0755, r) : -1;
    if (php < 0) {
        fprintf(stderr, "w4a-fpm-pools: W4A00908: hosting %s: %s/log/php is "
                "not a directory (a symlink?): not made; PHP's error and "
                "mail logs will not be written\n", r->hosting, pl->home);
    }
    tmp = subdir_at(home, "tmp", 0700, r);
    if (tmp < 0) {
        fprintf(stderr, "w4a-fpm-pools: W4A00908: hosting %s: %s/tmp is not a "
                "directory (a symlink?): not made; uploads and sessions will "
                "fail\n", r->hosting, pl->home);
    }
    if (log >= 0) {
        close(log);
    }
    if (php >= 0) {
        close(php);
    }
    if (tmp >= 0) {
        close(tmp);
    }
    close(home);
    return 0;
}

static int prepare_dirs(const options *o, const pool_t *pl, apr_pool_t *p)
{
    const w4a_hosting_t *r = pl->rec;

    if (home_dirs(pl, p) != 0) {
        return -1;
    }
    /* FPM refuses a pool whose slow log cannot be opened. */
    {
        const char *slow = expand(p, o->slowlog, r->hosting, r->php_version);
        const char *slash = strrchr(slow, '/');
        if (slash && slash != slow
            && apr_dir_make_recursive(apr_pstrmemdup(p, slow, slash - slow),
                                      APR_FPROT_UREAD | APR_FPROT_UWRITE | APR_FPROT_UEXECUTE
                                      | APR_FPROT_GREAD | APR_FPROT_GEXECUTE, p)
               != APR_SUCCESS) {
            return -1;
        }
    }
    return 0;
}

/* An existing pool file (not a symlink) made POOL_FILE_MODE. */
static int fix_mode(const char *path)
{
    struct stat st;
    int rc = 0, fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0) {
        return -1;
    }
    if (fstat(fd, &st) != 0) {
        rc = -1;
    }
    else if ((st.st_mode & 07777) != POOL_FILE_MODE) {
        rc = fchmod(fd, POOL_FILE_MODE);
    }
    close(fd);
    return rc;
}



/* Ours: a pool file, or the settings file beside one. */
static int is_pool_file(const char *name)
{
    return has_suffix(name, POOL_SUFFIX) || has_suffix(name, SETTINGS_SUFFIX);
}

static int sync_version(gen_ctx *g, version_t *v)
{
    apr_hash_index_t *hi;
    DIR *d;
    struct dirent *de;
    apr_pool_t *p = g->p;

    /* A new pool directory is the master's only; an existing one (the
     * distribution's pool.d) is left as it is: the files are 0640. */
    if (!g->o->dry_run && mkdir(v->dir, POOL_DIR_MODE) == 0
        && geteuid() == 0 && chown(v->dir, 0, reader_gid()) != 0) {
        fprintf(stderr, "w4a-fpm-pools: W4A00902: cannot give %s to group "
                READER_GROUP ": %s\n", v->dir, strerror(errno));
        return -1;
    }
    if (!g->o->dry_run && access(v->dir, F_OK) != 0) {
        fprintf(stderr, "w4a-fpm-pools: W4A00902: cannot create %s: %s\n",
                v->dir, strerror(errno));
        return -1;
    }
    for (hi = apr_hash_first(p, v->wanted); hi; hi = apr_hash_next(hi)) {
        const char *name = apr_hash_this_key(hi);
        const char *text = apr_hash_this_val(hi);
        const char *path = apr_pstrcat(p, v->dir, "/", name, NULL);
        const char *old = read_small(p, path);

        int counted = has_suffix(name, POOL_SUFFIX);   /* pools, not files */

        if (old && !strcmp(old, text)) {
            v->unchanged += counted;
            /* written by an older version 0644: take it back */
            if (!g->o->dry_run && counted && fix_mode(path) != 0) {
                fprintf(stderr, "w4a-fpm-pools: W4A00175: cannot make %s "
                        "mode %04o: %s\n", path, POOL_FILE_MODE,
                        strerror(errno));
                return -1;
            }
            continue;
        }
        v->written += counted;
        v->changed = 1;
        if (!g->o->dry_run && write_atomic(p, path, text) != 0) {
            fprintf(stderr, "w4a-fpm-pools: W4A00903: cannot write %s: %s\n",
                    path, strerror(errno));
            return -1;
        }
    }
    d = opendir(v->dir);
    if (!d) {
        return g->o->dry_run ? 0 : -1;
    }
    while ((de = readdir(d)) != NULL) {
        /* another version's file, in a directory they share, is not ours
         * to remove */
        if (is_pool_file(de->d_name)
            && !apr_hash_get(v->dir_wanted, de->d_name, APR_HASH_KEY_STRING)) {
            v->removed += has_suffix(de->d_name, POOL_SUFFIX);
            v->changed = 1;
            if (!g->o->dry_run) {
                unlink(apr_pstrcat(p, v->dir, "/", de->d_name, NULL));
            }
        }
    }
    closedir(d);
    return 0;
}

static int reload(gen_ctx *g, version_t *v)
{
    const char *pidf;
    char *text, *end;
    long pid;

    if (!v->changed || g->o->dry_run || !*g->o->pid_file) {
        return 0;
    }
    pidf = expand(g->p, g->o->pid_file, "", v->version);
    if (apr_hash_get(g->signalled, pidf, APR_HASH_KEY_STRING)) {
        return 0;               /* one master for several versions: once */
    }
    apr_hash_set(g->signalled, pidf, APR_HASH_KEY_STRING, pidf);
    text = read_small(g->p, pidf);
    pid = text ? strtol(text, &end, 10) : 0;
    if (pid <= 1) {
        fprintf(stderr, "w4a-fpm-pools: W4A00904: PHP %s: no FPM master pid in "
                "%s; pools written, not reloaded\n", v->version, pidf);
        return 1;
    }
    if (kill((pid_t)pid, SIGUSR2) != 0) {
        fprintf(stderr, "w4a-fpm-pools: W4A00905: PHP %s: cannot signal FPM "
                "master %ld: %s\n", v->version, pid, strerror(errno));
        return 1;
    }
    g->reloaded++;
    return 0;
}

static int version_cmp(const void *a, const void *b)
{
    return strcmp((*(version_t *const *)a)->version,
                  (*(version_t *const *)b)->version);
}

/* The versions in one order from run to run (apr_hash's is random), and
 * each one's files entered in its directory's dir_wanted.  Versions whose
 * --pool-dir has no %v share one directory, where a hosting with pools in
 * two versions would need two files of one name (and one master would see
 * two pools of one name, and refuse to start at all): the lowest version
 * keeps it, the later one's pool is skipped and said. */
static apr_array_header_t *versions_in_order(gen_ctx *g, int *npools)
{
    apr_array_header_t *vs = apr_array_make(g->p, 4, sizeof(version_t *));
    apr_hash_index_t *hi;
    int i;

    for (hi = apr_hash_first(g->p, g->versions); hi; hi = apr_hash_next(hi)) {
        APR_ARRAY_PUSH(vs, version_t *) = apr_hash_this_val(hi);
    }
    qsort(vs->elts, vs->nelts, sizeof(version_t *), version_cmp);
    for (i = 0; i < vs->nelts; i++) {
        version_t *v = APR_ARRAY_IDX(vs, i, version_t *);
        for (hi = apr_hash_first(g->p, v->wanted); hi; hi = apr_hash_next(hi)) {
            const char *name = apr_hash_this_key(hi);
            const char *text = apr_hash_this_val(hi);
            const char *had = apr_hash_get(v->dir_wanted, name,
                                           APR_HASH_KEY_STRING);
            if (!had) {
                apr_hash_set(v->dir_wanted, name, APR_HASH_KEY_STRING, text);
            }
            else if (strcmp(had, text)) {
                fprintf(stderr, "w4a-fpm-pools: W4A00909: PHP %s: %s/%s is "
                        "another PHP version's already (--pool-dir has no "
                        "%%v); the PHP %s one is skipped\n", v->version,
                        v->dir, name, v->version);
                *npools -= has_suffix(name, POOL_SUFFIX);
                apr_hash_set(v->wanted, name, APR_HASH_KEY_STRING, NULL);
            }
        }
    }
    return vs;
}

/* ---- --copy-slow-logs ------------------------------------------------
 *
 * The FPM master writes each pool's slow log as root, so it lives in the
 * operator's --slowlog directory, never in a hosting's tree.  This copies
 * what is new in it to <home>/log/php/slow.log, where the customer looks:
 * root reads the source (in a directory root's and writable by root only,
 * O_NOFOLLOW, a regular file on the descriptor) from the offset kept in
 * its state directory; a child that has dropped to the hosting's uid/gid
 * appends the bytes.  Root never opens a path in the hosting's tree: the
 * child can write only what the hosting itself could, whatever symlink or
 * FIFO the tenant put there.  The child says what it did through a pipe,
 * and is killed past SLOW_CHILD_TIMEOUT_MS, or as soon as it is seen
 * stopped (it is the tenant's process: the tenant may SIGSTOP it, and each
 * stopped copy would otherwise hold the run, which is serial, for the
 * whole timeout). */

#define SLOW_STATE_MAGIC      "w4a-slowlog-state 1"
#define SLOW_DEST_DIR         "/log/php"
#define SLOW_DEST_NAME        "slow.log"
#define SLOW_DEST_OLD         "slow.log.1"
#define SLOW_CHILD_TIMEOUT_MS 5000
#define SLOW_CHILD_SLICE_MS   20      /* how often a stopped child is looked for */

/* Where a source was read up to: the file (device, inode) and offset. */
typedef struct {
    int        valid;
    dev_t      dev;
    ino_t      ino;
    apr_off_t  off;
} slow_pos_t;

/* One piece read for the child: part of a source file. */
typedef struct {
    dev_t      dev;
    ino_t      ino;
    apr_off_t  start;
    apr_size_t len;
} slow_seg_t;

/* The child's word to the parent. */
enum {
    SLOW_OK = 0, SLOW_DROP, SLOW_DIR, SLOW_OPEN, SLOW_NOTREG, SLOW_NOTOWNER,
    SLOW_ROTATE, SLOW_WRITE
};
typedef struct {
    int        stage;          /* SLOW_* where it stopped */
    int        err;            /* errno there */
    int        rotated;        /* slow.log became slow.log.1 first */
    long long  written;        /* bytes appended */
} slow_report_t;

typedef struct {
    int        logs, copied, failed;
    long long  bytes, left;
} slow_totals_t;

static int pool_cmp(const void *a, const void *b)
{
    const pool_t *x = *(pool_t *const *)a, *y = *(pool_t *const *)b;
    int c = strcmp(x->rec->hosting, y->rec->hosting);
    return c ? c : strcmp(x->rec->php_version, y->rec->php_version);
}

/* The state file's name for a pool: "<hosting>-<version>.state". */
static const char *slow_state_name(apr_pool_t *p, const w4a_hosting_t *r)
{
    return apr_pstrcat(p, r->hosting, "-", r->php_version, ".state", NULL);
}

/* 0: *pos read (valid = 0 when there is no state yet); -1: unreadable or
 * not ours (said by the caller). */
static int slow_state_read(int sdfd, const char *name, slow_pos_t *pos)
{
    char buf[128];
    unsigned long long dev, ino;
    long long off;
    struct stat st;
    ssize_t n;
    int fd;

    memset(pos, 0, sizeof(*pos));
    if (sdfd < 0) {
        return 0;                   /* dry run, no state directory yet */
    }
    fd = openat(sdfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        return errno == ENOENT ? 0 : -1;
    }
    n = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == 0
        ? read(fd, buf, sizeof(buf) - 1) : -1;
    close(fd);
    if (n <= 0) {
        return -1;
    }
    buf[n] = '\0';
    if (strncmp(buf, SLOW_STATE_MAGIC " ", sizeof(SLOW_STATE_MAGIC))
        || sscanf(buf + sizeof(SLOW_STATE_MAGIC), "%llu %llu %lld", &dev,
                  &ino, &off) != 3 || off < 0) {
        return -1;
    }
    pos->valid = 1;
    pos->dev = (dev_t)dev;
    pos->ino = (ino_t)ino;
    pos->off = (apr_off_t)off;
    return 0;
}

/* Atomically (temporary file, rename); no fsync: after a crash at most
 * one run's bytes are copied again. */
static int slow_state_write(apr_pool_t *p, int sdfd, const char *name,
                            const slow_pos_t *pos)
{
    const char *tmp = apr_psprintf(p, "%s.tmp.%ld", name, (long)getpid());
    char text[128];
    size_t len;
    int fd;

    /* (snprintf: apr_psprintf knows no %llu) */
    snprintf(text, sizeof(text), SLOW_STATE_MAGIC " %llu %llu %lld\n",
             (unsigned long long)pos->dev, (unsigned long long)pos->ino,
             (long long)pos->off);
    len = strlen(text);

    unlinkat(sdfd, tmp, 0);
    fd = openat(sdfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW
                | O_CLOEXEC, 0600);
    if (fd < 0) {
        return -1;
    }
    if (write(fd, text, len) != (ssize_t)len) {
        close(fd);
        unlinkat(sdfd, tmp, 0);
        return -1;
    }
    close(fd);
    if (renameat(sdfd, tmp, sdfd, name) != 0) {
        unlinkat(sdfd, tmp, 0);
        return -1;
    }
    return 0;
}

/* A source file in dfd, not through a symlink, regular on the
 * descriptor.  Its descriptor, -1 with errno (EINVAL: not regular). */
static int slow_open_source(int dfd, const char *name, struct stat *st)
{
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK
                    | O_CLOEXEC);

    if (fd < 0) {
        return -1;
    }
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
        close(fd);
        errno = EINVAL;
        return -1;
    }
    return fd;
}

/* Up to want bytes of fd from start, appended to buf at *used. */
static int slow_read(int fd, apr_off_t start, apr_size_t want, char *buf,
                     apr_size_t *used)
{
    apr_size_t got = 0;

    while (got < want) {
        ssize_t n = pread(fd, buf + *used + got, want - got,
                          (off_t)(start + (apr_off_t)got));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -1;
        }
        if (n == 0) {
            break;
        }
        got += (apr_size_t)n;
    }
    *used += got;
    return (int)got;        /* callers read at most SLOW_COPY_LIMIT_MAX */
}

/* Where the sources are after `written` bytes of the segments were
 * appended. */
static slow_pos_t slow_advance(const slow_seg_t *seg, int nseg,
                               long long written)
{
    slow_pos_t pos = { 1, 0, 0, 0 };
    int i;

    for (i = 0; i < nseg; i++) {
        if (written < (long long)seg[i].len || i == nseg - 1) {
            pos.dev = seg[i].dev;
            pos.ino = seg[i].ino;
            pos.off = seg[i].start
                      + (written < (long long)seg[i].len
                         ? (apr_off_t)written : (apr_off_t)seg[i].len);
            break;
        }
        written -= (long long)seg[i].len;
    }
    return pos;
}

static int slow_dest_open(int dfd, uid_t uid, slow_report_t *rep)
{
    struct stat st;
    int fd = openat(dfd, SLOW_DEST_NAME, O_WRONLY | O_APPEND | O_CREAT
                    | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0640);

    if (fd < 0) {
        rep->stage = SLOW_OPEN;
        rep->err = errno;
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rep->stage = SLOW_NOTREG;
        close(fd);
        return -1;
    }
    if (st.st_uid != uid) {
        rep->stage = SLOW_NOTOWNER;
        close(fd);
        return -1;
    }
    return fd;
}

/* The child: nothing of root's is kept past the drop (stdio on /dev/null,
 * every other descriptor closed but the report pipe), then it is the
 * hosting, verified, and not dumpable (the tenant cannot ptrace it or read
 * its memory, which holds the parent's map).  Never returns. */
static void slow_child(const w4a_hosting_t *r, const char *home,
                       const char *buf, apr_size_t n, apr_off_t cap, int wfd)
{
    slow_report_t rep;
    gid_t gid = (gid_t)r->gid, groups[2];
    uid_t ru, eu, su;
    gid_t rg, eg, sg;
    struct stat st;
    int nul = open("/dev/null", O_RDWR), dfd, fd, fdmax;

    memset(&rep, 0, sizeof(rep));               /* padding too: it is sent */
    if (nul >= 0) {
        dup2(nul, 0);
        dup2(nul, 1);
        dup2(nul, 2);
    }
    if (wfd != 3) {
        dup2(wfd, 3);
        wfd = 3;
    }
    if (close_range(4, ~0U, 0) != 0) {          /* older kernels: by hand */
        fdmax = (int)sysconf(_SC_OPEN_MAX);
        if (fdmax < 0 || fdmax > 65536) {
            fdmax = 65536;
        }
        for (fd = 4; fd < fdmax; fd++) {
            close(fd);
        }
    }
    umask(0);
    errno = 0;
    if (setgroups(1, &gid) != 0 || setgid(gid) != 0
        || setuid((uid_t)r->uid) != 0
        || getresuid(&ru, &eu, &su) != 0 || getresgid(&rg, &eg, &sg) != 0
        || ru != (uid_t)r->uid || eu != ru || su != ru
        || rg != gid || eg != gid || sg != gid
        || getgroups(2, groups) != 1 || groups[0] != gid
        || setuid(0) == 0 || seteuid(0) == 0
        || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        rep.stage = SLOW_DROP;
        rep.err = errno ? errno : EPERM;
        goto out;
    }

    /* From here on, everything is the hosting's own doing. */
    {
        char path[4096];
        if ((size_t)snprintf(path, sizeof(path), "%s" SLOW_DEST_DIR, home)
            >= sizeof(path)) {
            rep.stage = SLOW_DIR;
            rep.err = ENAMETOOLONG;
            goto out;
        }
        dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 && errno == ENOENT) {
            /* the customer removed it: make it again, as the hosting */
            char up[4096];
            snprintf(up, sizeof(up), "%s/log", home);
            mkdir(up, 0755);
            mkdir(path, 0755);
            dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        }
        if (dfd < 0) {
            rep.stage = SLOW_DIR;
            rep.err = errno;
            goto out;
        }
    }
    if ((fd = slow_dest_open(dfd, (uid_t)r->uid, &rep)) < 0) {
        goto out;
    }
    if (fstat(fd, &st) == 0 && st.st_size + (off_t)n > (off_t)cap) {
        /* the customer's file is full: it becomes slow.log.1 */
        close(fd);
        if (renameat(dfd, SLOW_DEST_NAME, dfd, SLOW_DEST_OLD) != 0) {
            rep.stage = SLOW_ROTATE;
            rep.err = errno;
            goto out;
        }
        rep.rotated = 1;
        if ((fd = slow_dest_open(dfd, (uid_t)r->uid, &rep)) < 0) {
            goto out;
        }
    }
    while ((apr_size_t)rep.written < n) {
        ssize_t w = write(fd, buf + rep.written, n - (apr_size_t)rep.written);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            rep.stage = SLOW_WRITE;
            rep.err = w < 0 ? errno : ENOSPC;
            break;
        }
        rep.written += w;
    }
    close(fd);
out:
    if (write(wfd, &rep, sizeof(rep)) != (ssize_t)sizeof(rep)) {
        _exit(3);
    }
    _exit(0);
}

/* Forks the child that appends buf as the hosting; fills *rep.  0: the
 * child reported (rep->stage says how it went); -1: it did not (killed
 * past the timeout, died, or could not be started), said on stderr. */
static int slow_append(const options *o, const pool_t *pl, const char *buf,
                       apr_size_t n, slow_report_t *rep)
{
    const w4a_hosting_t *r = pl->rec;
    struct pollfd pfd;
    apr_time_t deadline = apr_time_now()
                          + apr_time_from_msec(SLOW_CHILD_TIMEOUT_MS);
    size_t got = 0;
    int fds[2], status = 0, timed_out = 0, stopped = 0;
    pid_t pid;

    if (pipe2(fds, O_CLOEXEC) != 0) {
        fprintf(stderr, "w4a-fpm-pools: W4A00926: hosting %s: pipe: %s\n",
                r->hosting, strerror(errno));
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) {
        fprintf(stderr, "w4a-fpm-pools: W4A00926: hosting %s: fork: %s\n",
                r->hosting, strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        slow_child(r, pl->home, buf, n, o->slow_log_size, fds[1]);
    }
    close(fds[1]);
    pfd.fd = fds[0];
    pfd.events = POLLIN;
    while (got < sizeof(*rep)) {
        apr_interval_time_t left = deadline - apr_time_now();
        int k;
        ssize_t m;

        if (left <= 0) {
            timed_out = 1;
            break;
        }
        if (left > apr_time_from_msec(SLOW_CHILD_SLICE_MS)) {
            left = apr_time_from_msec(SLOW_CHILD_SLICE_MS);
        }
        k = poll(&pfd, 1, (int)apr_time_as_msec(left) + 1);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k == 0) {
            siginfo_t si;
            memset(&si, 0, sizeof(si));
            if (waitid(P_PID, (id_t)pid, &si, WSTOPPED | WNOHANG | WNOWAIT)
                == 0 && si.si_pid == pid && si.si_code == CLD_STOPPED) {
                stopped = 1;
                break;
            }
            continue;
        }
        if (k < 0) {
            break;
        }
        m = read(fds[0], (char *)rep + got, sizeof(*rep) - got);
        if (m < 0 && errno == EINTR) {
            continue;
        }
        if (m <= 0) {
            break;
        }
        got += (size_t)m;
    }
    close(fds[0]);
    /* Killed even after a whole report: all it does then is exit, and a
     * child the tenant stopped between its report and its exit would
     * otherwise hold this waitpid(), and the run, for ever. */
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (got == sizeof(*rep)) {
        return 0;
    }
    if (stopped) {
        fprintf(stderr, "w4a-fpm-pools: W4A00926: hosting %s: the copy to "
                "%s" SLOW_DEST_DIR "/" SLOW_DEST_NAME " was stopped (by the "
                "hosting: it runs as its uid); killed, the bytes are copied "
                "again next run\n", r->hosting, pl->home);
    }
    else if (timed_out) {
        fprintf(stderr, "w4a-fpm-pools: W4A00926: hosting %s: the copy to "
                "%s" SLOW_DEST_DIR "/" SLOW_DEST_NAME " did not finish within "
                "%d ms (not stopped: held by something in the hosting's "
                "tree, or a slow disk); killed, the bytes are "
                "copied again next run\n", r->hosting, pl->home,
                SLOW_CHILD_TIMEOUT_MS);
    }
    else {
        fprintf(stderr, "w4a-fpm-pools: W4A00926: hosting %s: the copy to "
                "%s" SLOW_DEST_DIR "/" SLOW_DEST_NAME " died (%s %d) without "
                "a report; the bytes are copied again next run\n",
                r->hosting, pl->home,
                WIFSIGNALED(status) ? "signal" : "status",
                WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    }
    return -1;
}

/* What the child's report says, on stderr; 0 when all was written. */
static int slow_said(const pool_t *pl, const slow_report_t *rep,
                     apr_size_t n)
{
    const char *h = pl->rec->hosting;
    const char *home = pl->home;
    const char *dest = SLOW_DEST_DIR "/" SLOW_DEST_NAME;

    if (rep->rotated) {
        fprintf(stderr, "w4a-fpm-pools: W4A00927: hosting %s: %s%s reached "
                "its size limit: renamed " SLOW_DEST_OLD " (as the hosting), "
                "a new one started\n", h, home, dest);
    }
    switch (rep->stage) {
    case SLOW_OK:
        return 0;
    case SLOW_DROP:
        fprintf(stderr, "w4a-fpm-pools: W4A00923: hosting %s: cannot become "
                "uid %ld gid %ld (or become root again after): %s; nothing "
                "copied\n", h, (long)pl->rec->uid, (long)pl->rec->gid,
                strerror(rep->err));
        return -1;
    case SLOW_DIR:
        fprintf(stderr, "w4a-fpm-pools: W4A00924: hosting %s: %s" SLOW_DEST_DIR
                " not usable by the hosting: %s; nothing copied\n", h, home,
                strerror(rep->err));
        return -1;
    case SLOW_OPEN:
        fprintf(stderr, "w4a-fpm-pools: W4A00924: hosting %s: cannot open "
                "%s%s as the hosting (a symlink, a FIFO?): %s; nothing "
                "copied\n", h, home, dest, strerror(rep->err));
        return -1;
    case SLOW_NOTREG:
        fprintf(stderr, "w4a-fpm-pools: W4A00924: hosting %s: %s%s is not a "
                "regular file; nothing copied\n", h, home, dest);
        return -1;
    case SLOW_NOTOWNER:
        fprintf(stderr, "w4a-fpm-pools: W4A00924: hosting %s: %s%s is not "
                "the hosting's (uid %ld); nothing copied\n", h, home, dest,
                (long)pl->rec->uid);
        return -1;
    case SLOW_ROTATE:
        fprintf(stderr, "w4a-fpm-pools: W4A00927: hosting %s: %s%s is full "
                "and cannot be renamed " SLOW_DEST_OLD ": %s; nothing "
                "copied\n", h, home, dest, strerror(rep->err));
        return -1;
    default:
        fprintf(stderr, "w4a-fpm-pools: W4A00925: hosting %s: %s%s: %lld of "
                "%lu bytes written: %s; the rest next run\n", h, home, dest,
                rep->written, (unsigned long)n, strerror(rep->err));
        return -1;
    }
}

/* One pool's slow log: 0 done (or nothing new), 1 failed (said). */
static int slow_copy_one(gen_ctx *g, int sdfd, const pool_t *pl,
                         slow_totals_t *t, apr_pool_t *p)
{
    const options *o = g->o;
    const w4a_hosting_t *r = pl->rec;
    const char *src = expand(p, o->slowlog, r->hosting, r->php_version);
    const char *slash = strrchr(src, '/');
    const char *dirname = slash == src ? "/" : apr_pstrmemdup(p, src,
                                                              slash - src);
    const char *base = slash + 1;
    const char *state = slow_state_name(p, r);
    slow_pos_t pos, next;
    slow_seg_t seg[2];
    slow_report_t rep;
    struct stat st, ost;
    char *buf;
    apr_size_t used = 0, budget = (apr_size_t)o->slow_copy_limit;
    int nseg = 0, dfd, fd, ofd, rc = 0;

    if (r->uid == 0 || r->gid == 0 || strchr(r->hosting, '/')
        || strchr(r->php_version, '/') || *r->hosting == '.') {
        fprintf(stderr, "w4a-fpm-pools: W4A00923: hosting %s: uid %ld gid "
                "%ld: no slow log is copied for root or a name holding "
                "'/'\n", r->hosting, (long)r->uid, (long)r->gid);
        return 1;
    }
    dfd = open(dirname, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        if (errno == ENOENT) {
            return 0;               /* no slow request on this node yet */
        }
        fprintf(stderr, "w4a-fpm-pools: W4A00921: hosting %s: %s: %s\n",
                r->hosting, dirname, strerror(errno));
        return 1;
    }
    if (fstat(dfd, &st) != 0 || st.st_uid != 0 || (st.st_mode & 022)) {
        fprintf(stderr, "w4a-fpm-pools: W4A00921: hosting %s: %s is not "
                "root's or is writable by others: its slow logs are not "
                "copied\n", r->hosting, dirname);
        close(dfd);
        return 1;
    }
    if (slow_state_read(sdfd, state, &pos) != 0) {
        fprintf(stderr, "w4a-fpm-pools: W4A00922: hosting %s: state %s/%s "
                "unreadable or not ours: the slow log is copied from its "
                "start\n", r->hosting, o->slow_state, state);
        memset(&pos, 0, sizeof(pos));
    }
    fd = slow_open_source(dfd, base, &st);
    if (fd < 0 && errno != ENOENT) {
        fprintf(stderr, "w4a-fpm-pools: W4A00921: hosting %s: %s: %s\n",
                r->hosting, src, errno == EINVAL ? "not a regular file"
                : strerror(errno));
        close(dfd);
        return 1;
    }
    buf = apr_palloc(p, budget + 1);
    t->logs += fd >= 0;

    if (pos.valid && (fd < 0 || st.st_dev != pos.dev
                      || st.st_ino != pos.ino)) {
        /* Rotated since the last run (another file now, or none yet): the
         * tail of the one we were reading first, from <source>.1 if that
         * is it (logrotate's delaycompress), then the new file from its
         * start. */
        apr_off_t old_left = 0;
        ofd = slow_open_source(dfd, apr_pstrcat(p, base, ".1", NULL), &ost);
        if (ofd >= 0 && ost.st_dev == pos.dev && ost.st_ino == pos.ino
            && ost.st_size > pos.off) {
            apr_size_t want = (apr_size_t)(ost.st_size - pos.off);
            int k = slow_read(ofd, pos.off, want > budget ? budget : want,
                              buf, &used);
            if (k < 0) {
                fprintf(stderr, "w4a-fpm-pools: W4A00921: hosting %s: "
                        "%s.1: %s\n", r->hosting, src, strerror(errno));
                rc = 1;
                k = 0;
            }
            seg[nseg++] = (slow_seg_t){ pos.dev, pos.ino, pos.off,
                                        (apr_size_t)k };
            budget -= (apr_size_t)k;
            old_left = ost.st_size - pos.off - k;
        }
        if (ofd >= 0) {
            close(ofd);
        }
        if (old_left > 0 || rc) {
            t->left += (long long)old_left + (fd >= 0 ? st.st_size : 0);
        }
        else if (fd >= 0) {
            pos.valid = 0;          /* the new file, from its start */
        }
    }
    if (fd >= 0 && !rc && (!pos.valid || (st.st_dev == pos.dev
                                          && st.st_ino == pos.ino))) {
        /* (truncated below our offset: from its start too) */
        apr_off_t from = pos.valid && pos.off <= st.st_size ? pos.off : 0;
        apr_size_t want = (apr_size_t)(st.st_size - from);
        int k;
        if (want > budget) {
            t->left += (long long)(want - budget);
            want = budget;
        }
        k = slow_read(fd, from, want, buf, &used);
        if (k < 0) {
            fprintf(stderr, "w4a-fpm-pools: W4A00921: hosting %s: %s: %s\n",
                    r->hosting, src, strerror(errno));
            close(fd);
            close(dfd);
            return 1;
        }
        seg[nseg++] = (slow_seg_t){ st.st_dev, st.st_ino, from,
                                    (apr_size_t)k };
    }
    if (fd >= 0) {
        close(fd);
    }
    close(dfd);
    if (nseg == 0) {
        return rc;
    }

    memset(&rep, 0, sizeof(rep));
    if (used > 0) {
        if (o->dry_run) {
            printf("(dry run) hosting %s: %lu bytes of %s to %s" SLOW_DEST_DIR
                   "/" SLOW_DEST_NAME "\n", r->hosting, (unsigned long)used,
                   src, pl->home);
            t->copied++;
            t->bytes += (long long)used;
            return 0;
        }
        if (slow_append(o, pl, buf, used, &rep) != 0) {
            return 1;
        }
        if (slow_said(pl, &rep, used) != 0) {
            rc = 1;
        }
        if (rep.written > 0) {
            t->copied++;
            t->bytes += rep.written;
        }
    }
    next = slow_advance(seg, nseg, rep.written);
    if (o->dry_run || (pos.valid && next.dev == pos.dev
                       && next.ino == pos.ino && next.off == pos.off)) {
        return rc;
    }
    if (slow_state_write(p, sdfd, state, &next) != 0) {
        fprintf(stderr, "w4a-fpm-pools: W4A00929: hosting %s: cannot save "
                "%s/%s: %s; the bytes are copied again next run\n",
                r->hosting, o->slow_state, state, strerror(errno));
        return 1;
    }
    return rc;
}

/* --copy-slow-logs: every pool of the map.  0 done, 1 some hosting's
 * copy failed (said; the others done), 2 not root or no usable state
 * directory. */
static int copy_slow_logs(gen_ctx *g)
{
    const options *o = g->o;
    apr_pool_t *sp;
    apr_hash_index_t *hi;
    apr_array_header_t *order;
    slow_totals_t t = { 0, 0, 0, 0, 0 };
    apr_time_t t0 = apr_time_now();
    struct stat st;
    int sdfd, k;

    if (geteuid() != 0) {
        fprintf(stderr, "w4a-fpm-pools: W4A00920: --copy-slow-logs must run "
                "as root (it becomes each hosting in turn)\n");
        return 2;
    }
    if (*o->slowlog != '/') {
        /* (a name without '/' took the process down: SIGSEGV) */
        fprintf(stderr, "w4a-fpm-pools: W4A00985: --slowlog %s is not an "
                "absolute path; nothing copied\n", o->slowlog);
        return 2;
    }
    if (!o->dry_run && mkdir(o->slow_state, 0700) != 0 && errno == ENOENT) {
        const char *slash = strrchr(o->slow_state, '/');
        if (slash && slash != o->slow_state) {
            apr_dir_make_recursive(apr_pstrmemdup(g->p, o->slow_state,
                                                  slash - o->slow_state),
                                   APR_FPROT_UREAD | APR_FPROT_UWRITE
                                   | APR_FPROT_UEXECUTE | APR_FPROT_GREAD
                                   | APR_FPROT_GEXECUTE | APR_FPROT_WREAD
                                   | APR_FPROT_WEXECUTE,
                                   g->p);
        }
        mkdir(o->slow_state, 0700);
    }
    sdfd = open(o->slow_state, O_RDONLY | O_DIRECTORY | O_NOFOLLOW
                | O_CLOEXEC);
    if (sdfd < 0 && !(o->dry_run && errno == ENOENT)) {
        fprintf(stderr, "w4a-fpm-pools: W4A00920: state directory %s: %s\n",
                o->slow_state, strerror(errno));
        return 2;
    }
    if (sdfd >= 0 && (fstat(sdfd, &st) != 0 || st.st_uid != 0
                      || (st.st_mode & 022))) {
        fprintf(stderr, "w4a-fpm-pools: W4A00920: state directory %s is not "
                "root's or is writable by others; nothing copied\n",
                o->slow_state);
        close(sdfd);
        return 2;
    }
    /* One run at a time (a slow run and the next minute's would copy the
     * same bytes twice). */
    if (sdfd >= 0 && flock(sdfd, LOCK_EX | LOCK_NB) != 0) {
        fprintf(stderr, "w4a-fpm-pools: W4A00920: another --copy-slow-logs "
                "run holds %s (%s); nothing done\n", o->slow_state,
                strerror(errno));
        close(sdfd);
        return 0;
    }
    /* in hosting order: the output reads the same run after run */
    order = apr_array_make(g->p, 64, sizeof(pool_t *));
    for (hi = apr_hash_first(g->p, g->pools); hi; hi = apr_hash_next(hi)) {
        APR_ARRAY_PUSH(order, pool_t *) = apr_hash_this_val(hi);
    }
    qsort(order->elts, order->nelts, sizeof(pool_t *), pool_cmp);
    for (k = 0; k < order->nelts; k++) {
        apr_pool_create(&sp, g->p);
        t.failed += slow_copy_one(g, sdfd, APR_ARRAY_IDX(order, k, pool_t *),
                                  &t, sp);
        apr_pool_destroy(sp);
    }
    if (sdfd >= 0) {
        close(sdfd);
    }
    if (!o->quiet) {
        printf("%s%d slow logs: %d copied (%lld bytes), %d failed, %lld bytes "
               "left for the next run, in %" APR_TIME_T_FMT " ms\n",
               o->dry_run ? "(dry run) " : "", t.logs, t.copied, t.bytes,
               t.failed, t.left, apr_time_as_msec(apr_time_now() - t0));
    }
    return t.failed ? 1 : 0;
}

/* A byte count ("1048576"); -1 when it is not one. */
static apr_off_t size_arg(const char *arg)
{
    char *end;
    apr_int64_t v;

    errno = 0;
    v = apr_strtoi64(arg, &end, 10);
    return errno || end == arg || *end || v < 0 ? -1 : (apr_off_t)v;
}

static void usage(FILE *f)
{
    fprintf(f,
"Usage: w4a-fpm-pools [options] INDEX\n"
"\n"
"Write one PHP-FPM pool file per (hosting, PHP version) of the compiled map\n"
"INDEX, remove pools no longer in it, and reload each FPM master whose pools\n"
"changed (SIGUSR2). Files are rewritten only when their content changes.\n"
"\n"
"Options:\n"
"  --pool-dir PATTERN   pool directory per version (%%v) [/etc/php/%%v/fpm/pool.d]\n"
"  --socket PATTERN     pool socket, as W4APHPSocket (%%h, %%v) [/run/w4a-php/%%v/%%h.sock]\n"
"  --pid-file PATTERN   FPM master pid file per version (%%v), '' for no reload\n"
"                       [/run/php/php%%v-fpm.pid]\n"
"  --slowlog PATTERN    slow log file (%%h, %%v), written by the root FPM master,\n"
"                       so never inside a hosting's tree [/var/log/php/w4a/%%h-%%v.slow.log]\n"
"  --listen-owner USER  owner and group of the sockets [www-data]\n"
"  --extensions LIST    security.limit_extensions\n"
"                       [" DEFAULT_EXTENSIONS "]\n"
"  --max-children N     pm.max_children [5]\n"
"  --listen-backlog N   requests that may wait for a busy pool; beyond them\n"
"                       the connection is refused (httpd answers 503) [64]\n"
"  --idle-timeout S     pm.process_idle_timeout in seconds [10]\n"
"  --max-requests N     pm.max_requests [500]\n"
"  --slowlog-timeout S  request_slowlog_timeout in seconds [5]\n"
"  --pool-settings DIR  per-hosting pool settings: DIR/<hosting>.conf with\n"
"                       php_value|php_flag|php_admin_value|php_admin_flag lines\n"
"  --dry-run            say what would change, change nothing\n"
"  -q, --quiet          no summary line\n"
"  -h, --help           this text\n"
"\n"
"  --copy-slow-logs     write no pool: copy what is new in each pool's slow log\n"
"                       (--slowlog) to <home>/log/php/slow.log, appended as the\n"
"                       hosting; run as root from cron\n"
"  --slow-state DIR     root's directory of the copy offsets [/var/lib/w4a/slowlog]\n"
"  --slow-copy-limit N  bytes one run copies per slow log, the rest next run\n"
"                       [1048576]\n"
"  --slow-log-size N    the customer's slow.log at most: beyond, it becomes\n"
"                       slow.log.1 [8388608]\n"
"\n"
"Exit status: 0 done (or nothing to do), 1 written but a reload failed\n"
"(--copy-slow-logs: a hosting's copy failed, the others done), 2 usage or\n"
"I/O error.\n");
}

int main(int argc, const char *const *argv)
{
    static const apr_getopt_option_t opts[] = {
        {"pool-dir", 1001, 1, "pool directory pattern"},
        {"socket", 1002, 1, "socket pattern"},
        {"pid-file", 1003, 1, "pid file pattern"},
        {"listen-owner", 1004, 1, "socket owner"},
        {"slowlog", 1011, 1, "slow log pattern"},
        {"listen-backlog", 1012, 1, "listen.backlog"},
        {"extensions", 1005, 1, "limit_extensions"},
        {"max-children", 1006, 1, "pm.max_children"},
        {"idle-timeout", 1007, 1, "idle timeout"},
        {"max-requests", 1008, 1, "pm.max_requests"},
        {"slowlog-timeout", 1009, 1, "slowlog timeout"},
        {"dry-run", 1010, 0, "dry run"},
        {"pool-settings", 1013, 1, "per-hosting settings directory"},
        {"copy-slow-logs", 1014, 0, "copy the slow logs"},
        {"slow-state", 1015, 1, "slow log copy state directory"},
        {"slow-copy-limit", 1016, 1, "bytes per run"},
        {"slow-log-size", 1017, 1, "customer's slow.log size"},
        {"quiet", 'q', 0, "quiet"},
        {"help", 'h', 0, "help"},
        {NULL, 0, 0, NULL}
    };
    options o = {
        NULL, "/etc/php/%v/fpm/pool.d", "/run/w4a-php/%v/%h.sock",
        "/run/php/php%v-fpm.pid", "/var/log/php/w4a/%h-%v.slow.log",
        "www-data", DEFAULT_EXTENSIONS, NULL, 5, 10, 500, 5, 64, 0, 0,
        0, "/var/lib/w4a/slowlog", 1 << 20, 8 << 20
    };
    apr_pool_t *p;
    apr_getopt_t *os;
    apr_status_t rv;
    int optch, rc = 0;
    const char *arg, *err = NULL;
    w4a_map_t *map;
    gen_ctx g;
    apr_hash_index_t *hi;
    apr_time_t t0 = apr_time_now();
    int npools = 0, written = 0, removed = 0, unchanged = 0, i;
    apr_array_header_t *vs;

    apr_app_initialize(&argc, &argv, NULL);
    atexit(apr_terminate);
    apr_pool_create(&p, NULL);
    apr_getopt_init(&os, p, argc, argv);
    while ((rv = apr_getopt_long(os, opts, &optch, &arg)) == APR_SUCCESS) {
        switch (optch) {
        case 1001: o.pool_dir = arg; break;
        case 1002: o.socket = arg; break;
        case 1003: o.pid_file = arg; break;
        case 1004: o.listen_owner = arg; break;
        case 1011: o.slowlog = arg; break;
        case 1012: o.backlog = atoi(arg); break;
        case 1005: o.extensions = arg; break;
        case 1006: o.max_children = atoi(arg); break;
        case 1007: o.idle_timeout = atoi(arg); break;
        case 1008: o.max_requests = atoi(arg); break;
        case 1009: o.slowlog_timeout = atoi(arg); break;
        case 1010: o.dry_run = 1; break;
        case 1013: o.settings_dir = arg; break;
        case 1014: o.copy_slow = 1; break;
        case 1015: o.slow_state = arg; break;
        case 1016: o.slow_copy_limit = size_arg(arg); break;
        case 1017: o.slow_log_size = size_arg(arg); break;
        case 'q': o.quiet = 1; break;
        case 'h': usage(stdout); return 0;
        }
    }
    if (o.slow_copy_limit < 1 || o.slow_copy_limit > SLOW_COPY_LIMIT_MAX
        || o.slow_log_size < o.slow_copy_limit) {
        fprintf(stderr, "w4a-fpm-pools: --slow-copy-limit takes 1 to %ld "
                "bytes, --slow-log-size at least as many\n",
                (long)SLOW_COPY_LIMIT_MAX);
    }
    if (rv != APR_EOF || os->ind != argc - 1 || o.max_children < 1
        || o.idle_timeout < 1 || o.max_requests < 0 || o.slowlog_timeout < 0
        || o.backlog < 0
        || o.slow_copy_limit < 1 || o.slow_copy_limit > SLOW_COPY_LIMIT_MAX
        || o.slow_log_size < o.slow_copy_limit || !*o.slow_state
        || !strstr(o.socket, "%h") || !ini_safe(o.listen_owner)
        || strpbrk(o.extensions, "\"'[]=;\n")) {
        usage(stderr);
        return 2;
    }
    o.index = argv[os->ind];

    rv = w4a_map_open(&map, o.index, &err, p);
    if (rv != APR_SUCCESS) {
        fprintf(stderr, "w4a-fpm-pools: W4A00906: %s: %s\n", o.index,
                err ? err : "cannot open");
        return 2;
    }
    g.p = p;
    g.o = &o;
    g.pools = apr_hash_make(p);
    g.versions = apr_hash_make(p);
    g.dirs = apr_hash_make(p);
    g.signalled = apr_hash_make(p);
    g.reloaded = 0;
    w4a_map_iterate(map, collect, &g);
    if (o.copy_slow) {
        rc = copy_slow_logs(&g);
        w4a_map_close(map);
        return rc;
    }

    /* Every operator settings file first: a bad one changes nothing. */
    for (hi = apr_hash_first(p, g.pools); hi; hi = apr_hash_next(hi)) {
        if (read_extra(p, &o, apr_hash_this_val(hi)) != 0) {
            return 2;
        }
    }
    for (hi = apr_hash_first(p, g.pools); hi; hi = apr_hash_next(hi)) {
        pool_t *pl = apr_hash_this_val(hi);
        version_t *v = version_of(&g, pl->rec->php_version);
        const char *name = apr_pstrcat(p, POOL_PREFIX, pl->rec->hosting,
                                       POOL_SUFFIX, NULL);
        if (!o.dry_run && prepare_dirs(&o, pl, p) != 0) {
            fprintf(stderr, "w4a-fpm-pools: W4A00907: hosting %s: home %s is "
                    "not a usable directory; pool skipped\n", pl->rec->hosting,
                    pl->home);
            continue;
        }
        apr_hash_set(v->wanted, name, APR_HASH_KEY_STRING,
                     pool_text(p, &o, pl));
        apr_hash_set(v->wanted, apr_pstrcat(p, POOL_PREFIX, pl->rec->hosting,
                                            SETTINGS_SUFFIX, NULL),
                     APR_HASH_KEY_STRING, settings_text(p, pl));
        npools++;
    }
    vs = versions_in_order(&g, &npools);
    for (i = 0; i < vs->nelts; i++) {
        version_t *v = APR_ARRAY_IDX(vs, i, version_t *);
        if (sync_version(&g, v) != 0) {
            return 2;
        }
        written += v->written;
        removed += v->removed;
        unchanged += v->unchanged;
    }
    /* Every file first, then the masters: one master may run the pools of
     * several versions, and reads them all when it starts again. */
    for (i = 0; i < vs->nelts; i++) {
        if (reload(&g, APR_ARRAY_IDX(vs, i, version_t *)) != 0) {
            rc = 1;
        }
    }
    if (!o.quiet) {
        printf("%s%d pools: %d written, %d unchanged, %d removed; %d FPM "
               "master(s) reloaded in %" APR_TIME_T_FMT " ms\n",
               o.dry_run ? "(dry run) " : "", npools, written, unchanged,
               removed, g.reloaded, apr_time_as_msec(apr_time_now() - t0));
    }
    w4a_map_close(map);
    return rc;
}
