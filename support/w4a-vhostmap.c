/*
 * w4a-vhostmap: compile, check and query the hosting map.
 * See docs/w4a-vhostmap.md.
 *
 * main() only finds the subcommand in commands[] and runs it; a new
 * subcommand is one function and one line of that table.  Every
 * subcommand parses its own options (from the argv that starts at its
 * name) and returns the exit status:
 *   0  success (compiled / clean / found / valid)
 *   1  refused: errors in the map (or, lookup, host not found)
 *   2  usage error, unreadable file, write failure, broken index
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_general.h>
#include <apr_getopt.h>
#include <apr_strings.h>
#include <apr_time.h>

#include "w4a_host.h"
#include "w4a_mac.h"
#include "w4a_map.h"
#include "w4a_mc.h"
#include "w4a_util.h"

#define PROG "w4a-vhostmap"

#define EXIT_OK      0
#define EXIT_REFUSED 1
#define EXIT_USAGE   2

typedef struct cmd_t cmd_t;
typedef int cmd_fn(const cmd_t *cmd, int argc, const char *const *argv,
                   apr_pool_t *p);

struct cmd_t {
    const char *name;
    cmd_fn     *run;
    const char *args;           /* synopsis after the name */
    const char *summary;
    int         map_opts;       /* takes the map check options */
};

static cmd_fn cmd_compile, cmd_check, cmd_lookup, cmd_info, cmd_invalidate,
    cmd_keygen, cmd_help;

static const cmd_t commands[] = {
    { "compile", cmd_compile, "[options] MAP.txt INDEX",
      "check MAP.txt and write INDEX atomically", 1 },
    { "check",   cmd_check,   "[options] MAP.txt",
      "check MAP.txt, write nothing", 1 },
    { "lookup",  cmd_lookup,  "INDEX HOST",
      "print the record HOST resolves to", 0 },
    { "info",    cmd_info,    "INDEX",
      "validate INDEX and print its header", 0 },
    { "invalidate", cmd_invalidate,
      "--memcached SERVERS (--key FILE | --no-key) [--prefix P] "
      "(NAME... | --all)",
      "drop NAMEs (or, --all, every name) from the nodes' shared cache", 0 },
    { "keygen", cmd_keygen, "[--group GROUP] FILE",
      "write a new key for W4AVhostMemcachedKey (0640, group www-data)", 0 },
    { "help",    cmd_help,    "[COMMAND]",
      "this text", 0 },
    { NULL, NULL, NULL, NULL, 0 }
};

/* Options of the map checks (compile, check) and the common -h. */
enum {
    OPT_MIN_UID = 1001, OPT_BASE, OPT_CHECK_DIRS, OPT_STRICT, OPT_SKIP_BAD,
    OPT_GROUP
};

/* The group of the index when --group is not given: httpd's on Debian. */
#define DEFAULT_GROUP "www-data"

/* (described in usage()) */
static const apr_getopt_option_t map_options[] = {
    { "min-uid",    OPT_MIN_UID,    1, "N" },
    { "base",       OPT_BASE,       1, "DIR" },
    { "check-dirs", OPT_CHECK_DIRS, 0, "" },
    { "strict",     OPT_STRICT,     0, "" },
    { "skip-bad",   OPT_SKIP_BAD,   0, "" },
    { "group",      OPT_GROUP,      1, "GROUP" },
    { "quiet",      'q',            0, "" },
    { "help",       'h',            0, "" },
    { NULL, 0, 0, NULL }
};

static const apr_getopt_option_t help_only[] = {
    { "help", 'h', 0, "" },
    { NULL, 0, 0, NULL }
};

typedef struct {
    w4a_map_checks_t    checks;
    apr_array_header_t *bases;
    const char         *group;      /* of the index; NULL: DEFAULT_GROUP */
    int                 quiet;
    int                 help;
    int                 ind;        /* first operand */
} tool_opts;

/* The synopsis of every command (or of only); with full, the rest. */
static void usage(FILE *f, const cmd_t *only, int full)
{
    const cmd_t *c;

    fprintf(f, "Usage:\n");
    for (c = commands; c->name; c++) {
        if (!only || only == c) {
            fprintf(f, "  " PROG " %s %s\n      %s\n", c->name, c->args,
                    c->summary);
        }
    }
    if (!full) {
        fprintf(f, "(" PROG " help%s%s: the full text)\n", only ? " " : "",
                only ? only->name : "");
        return;
    }
    if (!only || only->map_opts) {
        fprintf(f,
"\n"
"Options of compile and check (may come before or after the operands):\n"
"  --min-uid N    uids and gids below N are errors [1000]\n"
"  --base DIR     allowed base of document roots: a docroot must lie below\n"
"                 one of them; repeatable [any absolute path]\n"
"  --check-dirs   report document roots that are not directories (warnings)\n"
"  --strict       missing directories are errors and, for check, warnings\n"
"                 make the exit status 1 (implies --check-dirs)\n"
"  --skip-bad     compile: report bad lines, leave them out, write the rest\n"
"  --group GROUP  compile: the index is written mode 0640, this group (httpd's\n"
"                 User/Group: it reads the index, the hostings do not)\n"
"                 [" DEFAULT_GROUP ", if it exists]\n"
"  -q, --quiet    no summary line\n");
    }
    fprintf(f, "  -h, --help     this text\n");
    if (!only || only->run == cmd_lookup) {
        fprintf(f,
"\n"
"lookup prints key=value lines: host domain matched hosting uid gid\n"
"docroot php state flags log_dir media php_limit req_limit (\"-\" for\n"
"none).\n");
    }
    if (!only || only->run == cmd_invalidate) {
        fprintf(f,
"\n"
"invalidate (for the SQL source, after the panel changed the database):\n"
"  --memcached SERVERS  host:port[,host:port...] as W4AVhostMemcached\n"
"  --key FILE           the nodes' W4AVhostMemcachedKey (the generation is\n"
"                       read and written sealed with it)\n"
"  --no-key             for nodes with W4AVhostMemcachedKey none\n"
"  --prefix P           as W4AVhostMemcachedPrefix [w4a:]\n"
"  --all                move every node to a new generation of keys\n"
"NAME: a domain or *.wildcard as in the database.  Nodes see the change\n"
"within W4AVhostCacheTTL seconds.  When the generation is absent or not\n"
"sealed by the key, every node is moved to a new generation instead.\n");
    }
    if (!only || only->run == cmd_keygen) {
        fprintf(f,
"\n"
"keygen writes 32 random bytes (/dev/urandom) as 64 hex digits to FILE,\n"
"which must not exist, mode 0640, owner the caller (root), group GROUP\n"
"[www-data]: what httpd reads at start-up and nobody else.  Copy the same\n"
"file to every node and to the panel (install -m 0640 -o root -g www-data).\n");
    }
    if (!only) {
        fprintf(f,
"\n"
"The text map: one line per set of domains, blank-separated fields, '#'\n"
"comments:\n"
"  names hosting uid gid docroot php state [flags]\n"
"  example.com,www.example.com w4a100010 100010 100010 "
"/datas/vol1/w4a100010/var/www/example.com 8.2 active log\n"
"names: comma list, first = canonical domain, \"*.suffix\" = wildcard;\n"
"php: version or \"-\"; state: active | suspended; flags: \"-\" or a comma\n"
"list of log, log=DIR, media=HOST, rewrite, php_limit=N, req_limit=N.  See\n"
"docs/w4a-vhostmap.md.\n"
"\n"
"Exit status: 0 success (compiled, clean, found, valid); 1 errors in the\n"
"map (with --skip-bad: the index was written without the bad lines), or\n"
"host not found; 2 usage error, unreadable file, write failure or broken\n"
"index.\n");
    }
}

/* Parses the options of cmd; returns 0, or an exit status to stop with. */
static int parse_opts(const cmd_t *cmd, int argc, const char *const *argv,
                      apr_pool_t *p, tool_opts *o)
{
    apr_getopt_t *os;
    apr_status_t rv;
    int ch;
    const char *arg;

    memset(o, 0, sizeof(*o));
    o->checks.min_uid = 1000;
    o->bases = apr_array_make(p, 2, sizeof(const char *));
    o->checks.bases = o->bases;
    apr_getopt_init(&os, p, argc, argv);
    os->interleave = 1;             /* options may follow the operands */
    while ((rv = apr_getopt_long(os, cmd->map_opts ? map_options : help_only,
                                 &ch, &arg)) == APR_SUCCESS) {
        switch (ch) {
        case OPT_MIN_UID: {
            apr_int64_t v;
            if (!w4a_parse_number(arg, 0, 0xFFFFFFFEll, &v)) {
                fprintf(stderr, PROG ": --min-uid: '%s' is not a uid\n", arg);
                return EXIT_USAGE;
            }
            o->checks.min_uid = (apr_uint32_t)v;
            break;
        }
        case OPT_BASE:
            if (arg[0] != '/' || strstr(arg, "/../") || strstr(arg, "/./")
                || (strlen(arg) >= 3
                    && !strcmp(arg + strlen(arg) - 3, "/.."))) {
                fprintf(stderr, PROG ": --base: '%s' is not an absolute, "
                        "normalised directory\n", arg);
                return EXIT_USAGE;
            }
            APR_ARRAY_PUSH(o->bases, const char *) = arg;
            break;
        case OPT_CHECK_DIRS:
            o->checks.check_dirs = 1;
            break;
        case OPT_STRICT:
            o->checks.strict = 1;
            o->checks.check_dirs = 1;
            break;
        case OPT_SKIP_BAD:
            o->checks.skip_bad = 1;
            break;
        case OPT_GROUP:
            o->group = arg;
            break;
        case 'q':
            o->quiet = 1;
            break;
        case 'h':
            o->help = 1;
            break;
        }
    }
    if (rv != APR_EOF) {            /* apr_getopt has said what */
        fprintf(stderr, "(see " PROG " help %s)\n", cmd->name);
        return EXIT_USAGE;
    }
    o->ind = os->ind;
    return 0;
}

/* The operands after the options, exactly n of them; else usage. */
static int operands(const cmd_t *cmd, int argc, const tool_opts *o, int n)
{
    if (o->help) {
        usage(stdout, cmd, 1);
        return EXIT_OK;
    }
    if (argc - o->ind != n) {
        fprintf(stderr, PROG " %s: expected %d operand%s, got %d\n",
                cmd->name, n, n == 1 ? "" : "s", argc - o->ind);
        usage(stderr, cmd, 0);
        return EXIT_USAGE;
    }
    return -1;
}

/* (a map line's names may be a customer's, through the panel: printed
 * with their control bytes escaped) */
static void to_stderr(void *baton, int level, const char *msg)
{
    apr_pool_t *p;

    if (apr_pool_create(&p, NULL) != APR_SUCCESS) {
        return;
    }
    fprintf(stderr, "%s: %s\n", level <= W4A_LOG_ERR ? "error" : "warning",
            w4a_printable(p, msg));
    apr_pool_destroy(p);
}

/* The index's permissions from --group: 0 or an exit status. */
static int index_perms(const tool_opts *o, w4a_map_perms_t *perms)
{
    const char *name = o->group ? o->group : DEFAULT_GROUP;
    struct group *g = getgrnam(name);
    apr_int64_t v;

    perms->mode = W4A_MAP_INDEX_MODE;
    perms->gid = -1;
    if (g) {
        perms->gid = (long)g->gr_gid;
    }
    else if (o->group && w4a_parse_number(o->group, 0, 0xFFFFFFFEll, &v)) {
        perms->gid = (long)v;
    }
    else if (o->group) {
        fprintf(stderr, PROG ": --group: no group '%s'\n", o->group);
        return EXIT_USAGE;
    }
    else {
        fprintf(stderr, "warning: W4A00174: no group '" DEFAULT_GROUP "': "
                "the index gets this process's group (gid %ld), mode 0640; "
                "give httpd's group with --group\n", (long)getegid());
    }
    return 0;
}

/* The text map names every hosting's domains, users and paths: the
 * hostings' users must not read it (nor the index, see index_perms). */
static void warn_if_world_readable(const char *text)
{
    struct stat sb;

    if (stat(text, &sb) == 0 && S_ISREG(sb.st_mode) && (sb.st_mode & 0004)) {
        fprintf(stderr, "warning: W4A00173: %s is readable by every user "
                "(mode %04o): any hosting's code can list every hosting; "
                "chmod o-r it (0640 or 0600)\n", text,
                (unsigned)(sb.st_mode & 07777));
    }
}

/* compile and check. */
static int compile_or_check(const cmd_t *cmd, int argc,
                            const char *const *argv, apr_pool_t *p, int write)
{
    tool_opts o;
    w4a_logger_t log = { to_stderr, NULL };
    w4a_map_stats_t st;
    w4a_map_perms_t perms;
    apr_status_t rv;
    apr_time_t t0, t1;
    const char *text, *index;
    int rc;

    if ((rc = parse_opts(cmd, argc, argv, p, &o)) != 0
        || (rc = operands(cmd, argc, &o, write ? 2 : 1)) >= 0) {
        return rc;
    }
    text = argv[o.ind];
    index = write ? argv[o.ind + 1] : NULL;
    if (write && (rc = index_perms(&o, &perms)) != 0) {
        return rc;
    }
    warn_if_world_readable(text);
    t0 = apr_time_now();
    rv = w4a_map_compile_ex(text, index, &o.checks, write ? &perms : NULL,
                            &log, &st, p);
    t1 = apr_time_now();
    if (rv == APR_EINVAL) {
        fprintf(stderr, PROG ": %s: %u line(s) with errors, %u warning(s); "
                "%s\n", text, st.errors, st.warnings,
                write ? "index NOT written (old one kept)" : "map refused");
        return EXIT_REFUSED;
    }
    if (rv != APR_SUCCESS) {
        return EXIT_USAGE;          /* the library said why */
    }
    if (write) {
        w4a_map_t *m;
        const char *err = NULL;
        /* Read back what was written: the same validation httpd does. */
        if (w4a_map_open(&m, index, &err, p) != APR_SUCCESS) {
            fprintf(stderr, PROG ": %s: written but refused on reading it "
                    "back: %s\n", index, err);
            return EXIT_USAGE;
        }
        if (!o.quiet) {
            printf("compiled %u records, %u names in %" APR_TIME_T_FMT " ms "
                   "-> %s (generation %" APR_UINT64_T_FMT ")\n",
                   st.records, st.names, apr_time_as_msec(t1 - t0), index,
                   w4a_map_generation(m));
        }
        w4a_map_close(m);
        if (st.errors) {
            fprintf(stderr, PROG ": %s: %u bad line(s) left out (--skip-bad)"
                    "\n", text, st.errors);
        }
        return st.errors ? EXIT_REFUSED : EXIT_OK;
    }
    if (!o.quiet) {
        printf("%s: %u records, %u names, %u error(s), %u warning(s)\n",
               text, st.records, st.names, st.errors, st.warnings);
    }
    return (st.errors || (o.checks.strict && st.warnings)) ? EXIT_REFUSED
                                                           : EXIT_OK;
}

static int cmd_compile(const cmd_t *cmd, int argc, const char *const *argv,
                       apr_pool_t *p)
{
    return compile_or_check(cmd, argc, argv, p, 1);
}

static int cmd_check(const cmd_t *cmd, int argc, const char *const *argv,
                     apr_pool_t *p)
{
    return compile_or_check(cmd, argc, argv, p, 0);
}

static int open_index(const char *path, w4a_map_t **m, const char **err,
                      apr_pool_t *p)
{
    *err = NULL;
    if (w4a_map_open(m, path, err, p) != APR_SUCCESS) {
        if (!*err) {
            *err = "unreadable";
        }
        fprintf(stderr, PROG ": %s: %s\n", path, *err);
        return EXIT_USAGE;
    }
    return 0;
}

static const char *or_dash(const char *s)
{
    return s ? s : "-";
}

/* The record flags as the map writes them ("log,rewrite"), or "-". */
static const char *flag_names(apr_uint32_t flags, apr_pool_t *p)
{
    const char *out = apr_pstrcat(p, (flags & W4A_FLAG_LOG) ? ",log" : "",
                                  (flags & W4A_FLAG_REWRITE) ? ",rewrite" : "",
                                  NULL);
    return *out ? out + 1 : "-";
}

static int cmd_lookup(const cmd_t *cmd, int argc, const char *const *argv,
                      apr_pool_t *p)
{
    tool_opts o;
    w4a_map_t *m;
    w4a_hosting_t r;
    char host[W4A_HOST_MAX + 1];
    const char *err;
    apr_size_t len;
    apr_status_t rv;
    int rc;

    if ((rc = parse_opts(cmd, argc, argv, p, &o)) != 0
        || (rc = operands(cmd, argc, &o, 2)) >= 0) {
        return rc;
    }
    if ((rc = open_index(argv[o.ind], &m, &err, p)) != 0) {
        return rc;
    }
    rv = w4a_host_normalise(argv[o.ind + 1], host, &len);
    if (rv != APR_SUCCESS) {
        fprintf(stderr, PROG ": '%s' is not a valid host (%s): not found\n",
                argv[o.ind + 1], rv == APR_ENAMETOOLONG
                ? "longer than 253 characters" : "malformed");
        w4a_map_close(m);
        return EXIT_REFUSED;
    }
    if (w4a_map_lookup(m, host, len, &r) != APR_SUCCESS) {
        fprintf(stderr, PROG ": %s: not found\n", host);
        w4a_map_close(m);
        return EXIT_REFUSED;
    }
    printf("host=%s\ndomain=%s\nmatched=%s\nhosting=%s\nuid=%u\ngid=%u\n"
           "docroot=%s\nphp=%s\nstate=%s\nflags=%s\nlog_dir=%s\nmedia=%s\n",
           host, r.domain, r.matched, r.hosting, r.uid, r.gid, r.docroot,
           or_dash(r.php_version), w4a_state_name(r.state),
           flag_names(r.flags, p), or_dash(r.log_dir),
           or_dash(r.media_host));
    if (r.php_limit) {
        printf("php_limit=%u\n", r.php_limit);
    }
    else {
        printf("php_limit=-\n");
    }
    if (r.req_limit) {
        printf("req_limit=%u\n", r.req_limit);
    }
    else {
        printf("req_limit=-\n");
    }
    w4a_map_close(m);
    return EXIT_OK;
}

static int cmd_info(const cmd_t *cmd, int argc, const char *const *argv,
                    apr_pool_t *p)
{
    tool_opts o;
    w4a_map_t *m;
    struct stat st;
    char date[APR_RFC822_DATE_LEN];
    const char *path, *err;
    int rc;

    if ((rc = parse_opts(cmd, argc, argv, p, &o)) != 0
        || (rc = operands(cmd, argc, &o, 1)) >= 0) {
        return rc;
    }
    path = argv[o.ind];
    printf("index=%s\n", path);
    if (open_index(path, &m, &err, p) != 0) {
        printf("valid=no\nerror=%s\n", err);
        return EXIT_USAGE;
    }
    apr_rfc822_date(date, (apr_time_t)w4a_map_generation(m));
    if (stat(path, &st) != 0) {
        st.st_size = 0;
    }
    printf("valid=yes\ngeneration=%" APR_UINT64_T_FMT "\ncompiled=%s\n"
           "records=%u\nnames=%u\nsize=%lld\n", w4a_map_generation(m), date,
           w4a_map_records(m), w4a_map_names(m), (long long)st.st_size);
    w4a_map_close(m);
    return EXIT_OK;
}

enum { OPT_MEMCACHED = 2001, OPT_PREFIX, OPT_ALL, OPT_KEY, OPT_NO_KEY };

static const apr_getopt_option_t invalidate_options[] = {
    { "memcached", OPT_MEMCACHED, 1, "SERVERS" },
    { "key",       OPT_KEY,       1, "FILE" },
    { "no-key",    OPT_NO_KEY,    0, "" },
    { "prefix",    OPT_PREFIX,    1, "P" },
    { "all",       OPT_ALL,       0, "" },
    { "help",      'h',           0, "" },
    { NULL, 0, 0, NULL }
};

typedef enum { GEN_OK, GEN_ABSENT, GEN_FORGED, GEN_ERROR } gen_e;

/* The generation as the nodes read it (absent: 0). */
static gen_e read_generation(w4a_mc_t *mc, int sealed, apr_uint64_t *gen,
                             apr_pool_t *p)
{
    char *val = NULL;
    const char *err = NULL;
    apr_int64_t v;
    apr_status_t rv = w4a_mc_get(mc, "gen", &val, &err, p);

    *gen = 0;
    if (rv == APR_NOTFOUND) {
        return GEN_ABSENT;
    }
    if (rv == W4A_MAC_EFORGED || rv == W4A_MAC_EEXPIRED) {
        return GEN_FORGED;
    }
    if (rv != APR_SUCCESS) {
        fprintf(stderr, PROG ": memcached: %s\n", err ? err : "no answer");
        return GEN_ERROR;
    }
    if (!sealed && w4a_mac_looks_sealed(val)) {
        fprintf(stderr, PROG ": the nodes seal their values: give their "
                "key with --key FILE\n");
        return GEN_ERROR;
    }
    apr_collapse_spaces(val, val);      /* memcached pads incremented values */
    if (!w4a_parse_number(val, 0, APR_INT64_MAX, &v)) {
        return GEN_FORGED;
    }
    *gen = (apr_uint64_t)v;
    return GEN_OK;
}

/* A new generation, above the one read and above every one written
 * before (microseconds of the clock): what someone put back, or a lost
 * value, cannot make it one the nodes have used already. */
static int bump_generation(w4a_mc_t *mc, int sealed, apr_uint64_t old,
                           const char *servers, const char *why,
                           apr_pool_t *p)
{
    const char *err = NULL;
    apr_uint64_t gen = (apr_uint64_t)apr_time_now();
    apr_status_t rv;

    if (gen <= old) {
        gen = old + 1;
    }
    if (sealed) {
        rv = w4a_mc_set(mc, "gen", apr_psprintf(p, "%" APR_UINT64_T_FMT, gen),
                        0, &err, p);
    }
    else {
        /* plain values: incr keeps concurrent bumps apart */
        rv = w4a_mc_incr(mc, "gen", &gen, &err, p);
    }
    if (rv != APR_SUCCESS) {
        fprintf(stderr, PROG ": memcached %s: %s\n", servers,
                err ? err : "no answer");
        return EXIT_USAGE;
    }
    printf("generation %" APR_UINT64_T_FMT ": %severy name is fetched "
           "again\n", gen, why);
    return EXIT_OK;
}

static int cmd_invalidate(const cmd_t *cmd, int argc, const char *const *argv,
                          apr_pool_t *p)
{
    apr_getopt_t *os;
    apr_status_t rv;
    const char *arg, *servers = NULL, *prefix = "w4a:", *err = NULL;
    const char *key_path = NULL;
    int ch, all = 0, i, rc = EXIT_OK, no_key = 0;
    w4a_mc_opts_t o;
    w4a_mc_t *mc;
    w4a_mac_key_t *key = NULL;
    apr_uint64_t gen;
    gen_e g;

    apr_getopt_init(&os, p, argc, argv);
    os->interleave = 1;
    while ((rv = apr_getopt_long(os, invalidate_options, &ch, &arg))
           == APR_SUCCESS) {
        switch (ch) {
        case OPT_MEMCACHED: servers = arg; break;
        case OPT_PREFIX:    prefix = arg; break;
        case OPT_ALL:       all = 1; break;
        case OPT_KEY:       key_path = arg; break;
        case OPT_NO_KEY:    no_key = 1; break;
        case 'h':           usage(stdout, cmd, 1); return EXIT_OK;
        }
    }
    if (rv != APR_EOF) {
        fprintf(stderr, "(see " PROG " help %s)\n", cmd->name);
        return EXIT_USAGE;
    }
    if (!servers || (all == (os->ind < argc)) || !key_path == !no_key) {
        fprintf(stderr, PROG " invalidate: needs --memcached, --key FILE (or "
                "--no-key for nodes without one) and either names or --all\n");
        usage(stderr, cmd, 0);
        return EXIT_USAGE;
    }
    if (key_path && w4a_mac_key_load(&key, key_path, &err, p)
                    != APR_SUCCESS) {
        fprintf(stderr, PROG ": --key %s: %s\n", key_path, err);
        return EXIT_USAGE;
    }
    memset(&o, 0, sizeof(o));
    o.prefix = prefix;
    o.timeout_ms = 1000;
    o.key = key;
    if (w4a_mc_create(&mc, servers, &o, &err, p) != APR_SUCCESS) {
        fprintf(stderr, PROG ": %s\n", err);
        return EXIT_USAGE;
    }
    g = read_generation(mc, key != NULL, &gen, p);
    if (g == GEN_ERROR) {
        return EXIT_USAGE;
    }
    if (all) {
        return bump_generation(mc, key != NULL, gen, servers, "", p);
    }
    if (g == GEN_FORGED || (g == GEN_ABSENT && key)) {
        /* which keys the nodes use is not known: move them all on (after a
         * memcached restart, when it is absent, the cache is empty anyway) */
        return bump_generation(mc, key != NULL, gen, servers,
                               g == GEN_FORGED ? "the generation in memcached "
                               "was not sealed by the key; "
                               : "the generation was absent; ", p);
    }
    for (i = os->ind; i < argc; i++) {
        char host[W4A_HOST_MAX + 3];
        apr_size_t len;
        const char *name = argv[i];
        int wild = name[0] == '*' && name[1] == '.';

        if (w4a_host_normalise(name + (wild ? 2 : 0), host + (wild ? 2 : 0),
                               &len) != APR_SUCCESS) {
            fprintf(stderr, PROG ": '%s' is not a domain name or "
                    "*.wildcard\n", name);
            rc = EXIT_USAGE;
            continue;
        }
        if (wild) {
            host[0] = '*';
            host[1] = '.';
        }
        rv = w4a_mc_delete(mc, apr_psprintf(p, "%" APR_UINT64_T_FMT ":%s",
                                            gen, host), &err, p);
        if (rv == APR_EGENERAL) {
            fprintf(stderr, PROG ": memcached %s: %s\n", servers,
                    err ? err : "no answer");
            return EXIT_USAGE;
        }
        printf("%s: %s\n", host, rv == APR_SUCCESS ? "invalidated"
                                                   : "was not cached");
    }
    return rc;
}

static const apr_getopt_option_t keygen_options[] = {
    { "group", OPT_GROUP, 1, "GROUP" },
    { "help",  'h',       0, "" },
    { NULL, 0, 0, NULL }
};

static int cmd_keygen(const cmd_t *cmd, int argc, const char *const *argv,
                      apr_pool_t *p)
{
    static const char digits[] = "0123456789abcdef";
    apr_getopt_t *os;
    apr_status_t rv;
    const char *arg, *group = "www-data", *path;
    unsigned char raw[32];
    char text[2 * sizeof(raw) + 1];
    struct group *gr;
    int ch, fd, in;
    apr_size_t i;
    ssize_t n;

    apr_getopt_init(&os, p, argc, argv);
    os->interleave = 1;
    while ((rv = apr_getopt_long(os, keygen_options, &ch, &arg))
           == APR_SUCCESS) {
        switch (ch) {
        case OPT_GROUP: group = arg; break;
        case 'h':       usage(stdout, cmd, 1); return EXIT_OK;
        }
    }
    if (rv != APR_EOF || argc - os->ind != 1) {
        if (rv == APR_EOF) {
            fprintf(stderr, PROG " keygen: expected one FILE\n");
        }
        usage(stderr, cmd, 0);
        return EXIT_USAGE;
    }
    path = argv[os->ind];
    if ((gr = getgrnam(group)) == NULL) {
        fprintf(stderr, PROG ": no group '%s'\n", group);
        return EXIT_USAGE;
    }
    in = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (in < 0 || read(in, raw, sizeof(raw)) != (ssize_t)sizeof(raw)) {
        fprintf(stderr, PROG ": /dev/urandom: %s\n", strerror(errno));
        if (in >= 0) {
            close(in);
        }
        return EXIT_USAGE;
    }
    close(in);
    for (i = 0; i < sizeof(raw); i++) {
        text[2 * i] = digits[raw[i] >> 4];
        text[2 * i + 1] = digits[raw[i] & 15];
    }
    text[2 * sizeof(raw)] = '\n';
    memset(raw, 0, sizeof(raw));
    /* never over an existing key: that would split the fleet in two */
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
              0600);
    if (fd < 0) {
        fprintf(stderr, PROG ": %s: %s%s\n", path, strerror(errno),
                errno == EEXIST ? " (exists: a key is never overwritten; "
                "remove it first to make a new one)" : "");
        memset(text, 0, sizeof(text));
        return EXIT_USAGE;
    }
    n = write(fd, text, sizeof(text));
    memset(text, 0, sizeof(text));
    if (n != (ssize_t)sizeof(text) || fchown(fd, (uid_t)-1, gr->gr_gid) != 0
        || fchmod(fd, 0640) != 0 || fsync(fd) != 0) {
        fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
        close(fd);
        unlink(path);
        return EXIT_USAGE;
    }
    if (close(fd) != 0) {
        fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
        unlink(path);
        return EXIT_USAGE;
    }
    printf("%s: a new key, mode 0640, group %s\n", path, group);
    return EXIT_OK;
}

static const cmd_t *find_command(const char *name)
{
    const cmd_t *c;

    for (c = commands; c->name; c++) {
        if (!strcmp(c->name, name)) {
            return c;
        }
    }
    return NULL;
}

static int cmd_help(const cmd_t *cmd, int argc, const char *const *argv,
                    apr_pool_t *p)
{
    const cmd_t *about = argc > 1 ? find_command(argv[1]) : NULL;

    if (argc > 1 && !about) {
        fprintf(stderr, PROG ": unknown command '%s'\n", argv[1]);
        usage(stderr, NULL, 0);
        return EXIT_USAGE;
    }
    usage(stdout, about, 1);
    return EXIT_OK;
}

int main(int argc, const char *const *argv)
{
    apr_pool_t *p;
    const cmd_t *cmd;
    int rc;

    if (apr_app_initialize(&argc, &argv, NULL) != APR_SUCCESS
        || apr_pool_create(&p, NULL) != APR_SUCCESS) {
        fprintf(stderr, PROG ": cannot initialise APR\n");
        return EXIT_USAGE;
    }
    if (argc < 2) {
        usage(stderr, NULL, 0);
        rc = EXIT_USAGE;
    }
    else if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(stdout, NULL, 1);
        rc = EXIT_OK;
    }
    else if ((cmd = find_command(argv[1])) == NULL) {
        fprintf(stderr, PROG ": unknown command '%s'\n", argv[1]);
        usage(stderr, NULL, 0);
        rc = EXIT_USAGE;
    }
    else {
        /* A subcommand sees argv from its own name on. */
        rc = cmd->run(cmd, argc - 1, argv + 1, p);
    }
    fflush(stdout);
    apr_pool_destroy(p);
    apr_terminate();
    return rc;
}
