/*
 * w4a-vhostmap: compile, check and query the hosting map.
 * See docs/w4a-vhostmap.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <apr_general.h>
#include <apr_getopt.h>
#include <apr_strings.h>
#include <apr_time.h>

#include "w4a_host.h"
#include "w4a_map.h"

typedef struct {
    w4a_map_checks_t checks;
    apr_array_header_t *bases;
    int quiet;
} tool_opts;

static void to_stderr(void *baton, int level, const char *msg)
{
    fprintf(stderr, "%s: %s\n", level <= W4A_LOG_ERR ? "error" : "warning", msg);
}

static void usage(FILE *f)
{
    fprintf(f,
"Usage: w4a-vhostmap COMMAND [options] ARGS\n"
"\n"
"Commands:\n"
"  compile [options] MAP.txt INDEX  check MAP.txt and write INDEX atomically\n"
"  check   [options] MAP.txt        check MAP.txt, write nothing\n"
"  lookup  INDEX HOST               print the record HOST resolves to\n"
"  info    INDEX                    validate INDEX and print its header\n"
"\n"
"Options (compile, check):\n"
"  --min-uid N     uids and gids below N are errors [1000]\n"
"  --base DIR      allowed base of document roots (repeatable) [any]\n"
"  --check-dirs    report document roots that are not directories\n"
"  --strict        missing directories are errors, not warnings\n"
"  --skip-bad      leave bad lines out and compile the rest\n"
"  -q, --quiet     no summary line\n"
"  -h, --help      this text\n"
"\n"
"Exit status: 0 success (found, for lookup); 1 errors in the map (or not\n"
"found); 2 usage error, unreadable file or broken index.\n");
}

static int parse_opts(int argc, const char *const *argv, apr_pool_t *p,
                      tool_opts *o, int *ind)
{
    static const apr_getopt_option_t opts[] = {
        {"min-uid", 1001, 1, "minimum uid"},
        {"base", 1002, 1, "allowed docroot base"},
        {"check-dirs", 1003, 0, "check directories"},
        {"strict", 1004, 0, "strict"},
        {"skip-bad", 1005, 0, "skip bad lines"},
        {"quiet", 'q', 0, "quiet"},
        {"help", 'h', 0, "help"},
        {NULL, 0, 0, NULL}
    };
    apr_getopt_t *os;
    apr_status_t rv;
    int ch;
    const char *arg;
    char *end;

    memset(o, 0, sizeof(*o));
    o->checks.min_uid = 1000;
    o->bases = apr_array_make(p, 2, sizeof(const char *));
    o->checks.bases = o->bases;
    apr_getopt_init(&os, p, argc, argv);
    os->errfn = NULL;
    while ((rv = apr_getopt_long(os, opts, &ch, &arg)) == APR_SUCCESS) {
        switch (ch) {
        case 1001:
            o->checks.min_uid = (apr_uint32_t)strtoul(arg, &end, 10);
            if (!*arg || *end) {
                fprintf(stderr, "w4a-vhostmap: --min-uid: '%s' is not a number\n", arg);
                return -1;
            }
            break;
        case 1002:
            if (arg[0] != '/') {
                fprintf(stderr, "w4a-vhostmap: --base: '%s' is not absolute\n", arg);
                return -1;
            }
            APR_ARRAY_PUSH(o->bases, const char *) = arg;
            break;
        case 1003: o->checks.check_dirs = 1; break;
        case 1004: o->checks.strict = 1; o->checks.check_dirs = 1; break;
        case 1005: o->checks.skip_bad = 1; break;
        case 'q': o->quiet = 1; break;
        case 'h': usage(stdout); exit(0);
        }
    }
    if (rv != APR_EOF) {
        fprintf(stderr, "w4a-vhostmap: unknown or incomplete option (see --help)\n");
        return -1;
    }
    *ind = os->ind;
    return 0;
}

static int cmd_compile(int argc, const char *const *argv, apr_pool_t *p,
                       int write)
{
    tool_opts o;
    int ind;
    w4a_logger_t log = { to_stderr, NULL };
    w4a_map_stats_t st;
    apr_status_t rv;
    apr_time_t t0;
    const char *index;

    if (parse_opts(argc, argv, p, &o, &ind) != 0
        || argc - ind != (write ? 2 : 1)) {
        usage(stderr);
        return 2;
    }
    index = write ? argv[ind + 1] : NULL;
    t0 = apr_time_now();
    rv = w4a_map_compile(argv[ind], index, &o.checks, &log, &st, p);
    if (rv == APR_EINVAL) {
        fprintf(stderr, "w4a-vhostmap: %s: %u line(s) with errors, %u "
                "warning(s); %s\n", argv[ind], st.errors, st.warnings,
                write ? "index NOT written (old one kept)" : "map refused");
        return 1;
    }
    if (rv != APR_SUCCESS) {
        return 2;
    }
    if (!o.quiet) {
        if (write) {
            w4a_map_t *m;
            const char *err = NULL;
            apr_uint64_t gen = 0;
            if (w4a_map_open(&m, index, &err, p) == APR_SUCCESS) {
                gen = w4a_map_generation(m);
                w4a_map_close(m);
            }
            printf("compiled %u records, %u names in %" APR_TIME_T_FMT
                   " ms -> %s (generation %" APR_UINT64_T_FMT ")%s\n",
                   st.records, st.names,
                   apr_time_as_msec(apr_time_now() - t0), index, gen,
                   st.errors ? apr_psprintf(p, "; %u bad line(s) left out",
                                            st.errors) : "");
        }
        else {
            printf("%s: %u records, %u names, %u error(s), %u warning(s)\n",
                   argv[ind], st.records, st.names, st.errors, st.warnings);
        }
    }
    if (!write && o.checks.strict && st.warnings) {
        return 1;
    }
    return st.errors ? 1 : 0;
}

static int open_index(const char *path, w4a_map_t **m, apr_pool_t *p)
{
    const char *err = NULL;
    if (w4a_map_open(m, path, &err, p) != APR_SUCCESS) {
        fprintf(stderr, "w4a-vhostmap: %s: %s\n", path, err ? err : "unreadable");
        return 2;
    }
    return 0;
}

static int cmd_lookup(int argc, const char *const *argv, apr_pool_t *p)
{
    w4a_map_t *m;
    w4a_hosting_t r;
    char host[W4A_HOST_MAX + 1];
    apr_size_t len;
    int rc;

    if (argc != 4) {
        usage(stderr);
        return 2;
    }
    if ((rc = open_index(argv[2], &m, p)) != 0) {
        return rc;
    }
    if (w4a_host_normalise(argv[3], host, &len) != APR_SUCCESS) {
        fprintf(stderr, "w4a-vhostmap: '%s' is not a valid host\n", argv[3]);
        w4a_map_close(m);
        return 2;
    }
    if (w4a_map_lookup(m, host, len, &r) != APR_SUCCESS) {
        printf("%s: not found\n", host);
        w4a_map_close(m);
        return 1;
    }
    printf("host=%s\ndomain=%s\nmatched=%s\nhosting=%s\nuid=%u\ngid=%u\n"
           "docroot=%s\nphp=%s\nstate=%s\nflags=%s\nlog_dir=%s\nmedia=%s\n",
           host, r.domain, r.matched, r.hosting, r.uid, r.gid, r.docroot,
           r.php_version ? r.php_version : "-", w4a_state_name(r.state),
           (r.flags & W4A_FLAG_LOG) ? "log" : "-",
           r.log_dir ? r.log_dir : "-", r.media_host ? r.media_host : "-");
    w4a_map_close(m);
    return 0;
}

static int cmd_info(int argc, const char *const *argv, apr_pool_t *p)
{
    w4a_map_t *m;
    struct stat st;
    char date[APR_RFC822_DATE_LEN];
    int rc;

    if (argc != 3) {
        usage(stderr);
        return 2;
    }
    if ((rc = open_index(argv[2], &m, p)) != 0) {
        return rc;
    }
    apr_rfc822_date(date, (apr_time_t)w4a_map_generation(m));
    stat(argv[2], &st);
    printf("index=%s\nvalid=yes\ngeneration=%" APR_UINT64_T_FMT "\n"
           "compiled=%s\nrecords=%u\nnames=%u\nsize=%lld\n", argv[2],
           w4a_map_generation(m), date, w4a_map_records(m), w4a_map_names(m),
           (long long)st.st_size);
    w4a_map_close(m);
    return 0;
}

int main(int argc, const char *const *argv)
{
    apr_pool_t *p;
    const char *cmd;

    apr_app_initialize(&argc, &argv, NULL);
    atexit(apr_terminate);
    apr_pool_create(&p, NULL);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    /* Subcommand parsers see argv from the subcommand on. */
    if (!strcmp(cmd, "compile")) {
        return cmd_compile(argc - 1, argv + 1, p, 1);
    }
    if (!strcmp(cmd, "check")) {
        return cmd_compile(argc - 1, argv + 1, p, 0);
    }
    if (!strcmp(cmd, "lookup")) {
        return cmd_lookup(argc, argv, p);
    }
    if (!strcmp(cmd, "info")) {
        return cmd_info(argc, argv, p);
    }
    fprintf(stderr, "w4a-vhostmap: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
