/*
 * w4a-top: the busiest hostings of the node, from mod_w4a_metrics' table
 * (the file W4AMetricsFile, read-only mapped: no HTTP round trip, so it
 * answers when every worker is busy).  See docs/metrics.md.
 *
 *   w4a-top [--file PATH] [--interval SEC] [--sort KEY] [--limit N]
 *           [--once [--json]]
 *
 * Two snapshots --interval apart give the rates; --once prints one
 * result and exits, otherwise the screen is refreshed every interval.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_general.h>
#include <apr_getopt.h>
#include <apr_hash.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <apr_time.h>

#include "w4a_metrics.h"

#define DEF_FILE "/run/apache2/w4a-metrics.shm"

typedef struct {
    const char  *name;
    apr_uint64_t tot[W4A_MC_MAX];
    double       rate[W4A_MC_MAX];
} line_t;

static const char *const sort_keys[] = {
    "requests", "bytes", "php_time", "5xx", "4xx", "php_requests",
    "refused", "posts", "backend_errors", "recent_script", NULL
};
static const int sort_counters[] = {
    W4A_MC_REQUESTS, W4A_MC_BYTES, W4A_MC_PHP_US, W4A_MC_5XX, W4A_MC_4XX,
    W4A_MC_PHP, W4A_MC_REFUSED, W4A_MC_POSTS, W4A_MC_BACKEND_ERR,
    W4A_MC_RECENT
};

static int sort_by;
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    stop = 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: w4a-top [--file PATH] [--interval SEC] [--sort KEY] "
            "[--limit N] [--once [--json]]\n"
            "  --file PATH     the table (W4AMetricsFile; default %s)\n"
            "  --interval SEC  seconds between the two samples of a rate "
            "(default 1)\n"
            "  --sort KEY      requests|bytes|php_time|5xx|4xx|php_requests|"
            "refused|posts|backend_errors|recent_script (rate; default "
            "requests)\n"
            "  --limit N       hostings shown (default 20; 0: all)\n"
            "  --once          one sample, printed, then exit\n"
            "  --json          with --once: JSON\n", DEF_FILE);
}

static int by_rate(const void *a, const void *b)
{
    const line_t *x = a, *y = b;
    int c = sort_counters[sort_by];

    if (x->rate[c] != y->rate[c]) {
        return x->rate[c] < y->rate[c] ? 1 : -1;
    }
    if (x->tot[c] != y->tot[c]) {
        return x->tot[c] < y->tot[c] ? 1 : -1;
    }
    return strcmp(x->name, y->name);
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            printf("\\%c", *s);
        }
        else if ((unsigned char)*s < 0x20) {
            printf("\\u%04x", (unsigned char)*s);
        }
        else {
            putchar(*s);
        }
    }
    putchar('"');
}

/* The lines of a sample: totals of now, rates against before. */
static line_t *lines_of(apr_array_header_t *before, apr_array_header_t *now,
                        double secs, int *n, apr_pool_t *p)
{
    line_t *l = apr_pcalloc(p, sizeof(*l) * (apr_size_t)(now->nelts + 1));
    apr_hash_t *was_of = apr_hash_make(p);
    int i, c;

    for (i = 0; i < before->nelts; i++) {
        const w4a_metrics_snap_t *b = &APR_ARRAY_IDX(before, i,
                                                     w4a_metrics_snap_t);
        apr_hash_set(was_of, b->name, APR_HASH_KEY_STRING, b);
    }

    for (i = 0; i < now->nelts; i++) {
        const w4a_metrics_snap_t *s = &APR_ARRAY_IDX(now, i,
                                                     w4a_metrics_snap_t);
        const w4a_metrics_snap_t *b = apr_hash_get(was_of, s->name,
                                                    APR_HASH_KEY_STRING);
        l[i].name = apr_pstrdup(p, s->name);
        for (c = 0; c < W4A_MC_MAX; c++) {
            apr_uint64_t was = b ? b->c[c] : 0;
            l[i].tot[c] = s->c[c];
            l[i].rate[c] = s->c[c] >= was ? (double)(s->c[c] - was) / secs
                                          : 0.0;
        }
    }
    *n = now->nelts;
    qsort(l, (size_t)*n, sizeof(*l), by_rate);
    return l;
}

static void print_json(const w4a_metrics_table_t *t, line_t *l, int n,
                       int limit, double secs, int alive)
{
    int i, c;

    printf("{\"interval\": %.3f, \"sort\": \"%s\", \"rows\": %u, "
           "\"used\": %u, \"full\": %" APR_UINT64_T_FMT ", \"pid\": %u, "
           "\"httpd_running\": %s, \"hostings\": [", secs,
           sort_keys[sort_by], t->nrows,
           __atomic_load_n(&t->used, __ATOMIC_RELAXED),
           __atomic_load_n(&t->full_hits, __ATOMIC_RELAXED), t->pid,
           alive ? "true" : "false");
    for (i = 0; i < n && (!limit || i < limit); i++) {
        printf("%s\n  {\"hosting\": ", i ? "," : "");
        json_str(l[i].name);
        for (c = 0; c < W4A_MC_MAX; c++) {
            printf(", \"%s\": %" APR_UINT64_T_FMT, w4a_metrics_counter_names[c],
                   l[i].tot[c]);
        }
        for (c = 0; c < W4A_MC_MAX; c++) {
            printf(", \"%s_per_s\": %.3f", w4a_metrics_counter_names[c],
                   c == W4A_MC_PHP_US ? l[i].rate[c] / 1e6 : l[i].rate[c]);
        }
        printf("}");
    }
    printf("]}\n");
}

static void print_text(const w4a_metrics_table_t *t, line_t *l, int n,
                       int limit, double secs, int alive)
{
    int i;

    printf("w4a-top: %u/%u rows used, %" APR_UINT64_T_FMT " requests found "
           "the table full; rates over %.1f s, by %s%s\n",
           __atomic_load_n(&t->used, __ATOMIC_RELAXED), t->nrows,
           __atomic_load_n(&t->full_hits, __ATOMIC_RELAXED), secs,
           sort_keys[sort_by], alive ? "" : " (httpd is not running)");
    printf("%-20s %9s %11s %8s %8s %8s %8s %8s %12s\n", "HOSTING", "REQ/s",
           "KB/s", "PHP/s", "PHPt/s", "5xx/s", "4xx/s", "REFUSE/s",
           "REQUESTS");
    for (i = 0; i < n && (!limit || i < limit); i++) {
        printf("%-20s %9.1f %11.1f %8.1f %8.3f %8.1f %8.1f %8.1f %12"
               APR_UINT64_T_FMT "\n", l[i].name, l[i].rate[W4A_MC_REQUESTS],
               l[i].rate[W4A_MC_BYTES] / 1024, l[i].rate[W4A_MC_PHP],
               l[i].rate[W4A_MC_PHP_US] / 1e6, l[i].rate[W4A_MC_5XX],
               l[i].rate[W4A_MC_4XX], l[i].rate[W4A_MC_REFUSED],
               l[i].tot[W4A_MC_REQUESTS]);
    }
    fflush(stdout);
}

int main(int argc, const char *const *argv)
{
    static const apr_getopt_option_t opts[] = {
        { "file", 'f', 1, "table file" },
        { "interval", 'i', 1, "seconds" },
        { "sort", 's', 1, "key" },
        { "limit", 'n', 1, "hostings" },
        { "once", '1', 0, "one sample" },
        { "json", 'j', 0, "JSON" },
        { "help", 'h', 0, "help" },
        { NULL, 0, 0, NULL }
    };
    const char *file = DEF_FILE, *arg, *err = NULL;
    const w4a_metrics_table_t *t = NULL;
    apr_array_header_t *before, *now;
    apr_getopt_t *g;
    apr_pool_t *pool, *iter, *tpool;
    struct stat st;
    ino_t ino = 0;
    double interval = 1.0;
    int once = 0, json = 0, limit = 20, ch, i, n, alive;
    apr_status_t rv;
    line_t *l;

    apr_app_initialize(&argc, &argv, NULL);
    apr_pool_create(&pool, NULL);
    apr_getopt_init(&g, pool, argc, argv);
    while ((rv = apr_getopt_long(g, opts, &ch, &arg)) == APR_SUCCESS) {
        switch (ch) {
        case 'f':
            file = arg;
            break;
        case 'i':
            interval = strtod(arg, NULL);
            if (interval < 0.01 || interval > 3600) {
                fprintf(stderr, "w4a-top: --interval %s: from 0.01 to 3600 "
                        "seconds\n", arg);
                return 2;
            }
            break;
        case 's':
            for (i = 0; sort_keys[i] && strcmp(sort_keys[i], arg); i++) {
            }
            if (!sort_keys[i]) {
                fprintf(stderr, "w4a-top: --sort %s: unknown key\n", arg);
                usage(stderr);
                return 2;
            }
            sort_by = i;
            break;
        case 'n':
            limit = atoi(arg);
            break;
        case '1':
            once = 1;
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        }
    }
    if (rv != APR_EOF || g->ind < argc) {
        usage(stderr);
        return 2;
    }
    if (json && !once) {
        fprintf(stderr, "w4a-top: --json needs --once\n");
        return 2;
    }
    if (stat(file, &st) == 0) {
        ino = st.st_ino;
    }
    apr_pool_create(&tpool, pool);
    rv = w4a_metrics_file_open(&t, file, &err, tpool);
    if (rv != APR_SUCCESS) {
        fprintf(stderr, "w4a-top: %s%s\n", err,
                rv == APR_FROM_OS_ERROR(EACCES)
                ? " (the table is root's: run w4a-top as root)" : "");
        return 1;
    }
    alive = t->pid && (kill((pid_t)t->pid, 0) == 0 || errno == EPERM);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    apr_pool_create(&iter, pool);
    before = w4a_metrics_snapshot(t, iter);
    while (!stop) {
        apr_pool_t *next;
        apr_sleep((apr_interval_time_t)(interval * 1e6));
        apr_pool_create(&next, pool);
        now = w4a_metrics_snapshot(t, next);
        l = lines_of(before, now, interval, &n, next);
        if (once) {
            if (json) {
                print_json(t, l, n, limit, interval, alive);
            }
            else {
                print_text(t, l, n, limit, interval, alive);
            }
            break;
        }
        printf("\033[H\033[2J");
        print_text(t, l, n, limit, interval, alive);
        apr_pool_destroy(iter);
        iter = next;
        before = now;
        /* httpd started anew: a new table replaced the file */
        if (stat(file, &st) == 0 && st.st_ino != ino) {
            const w4a_metrics_table_t *t2 = NULL;
            apr_pool_t *tp;
            apr_pool_create(&tp, pool);
            if (w4a_metrics_file_open(&t2, file, &err, tp) == APR_SUCCESS) {
                apr_pool_destroy(tpool);
                tpool = tp;
                t = t2;
                ino = st.st_ino;
                apr_pool_destroy(iter);
                apr_pool_create(&iter, pool);
                before = w4a_metrics_snapshot(t, iter);
            }
            else {
                apr_pool_destroy(tp);
            }
        }
        alive = t->pid && (kill((pid_t)t->pid, 0) == 0 || errno == EPERM);
    }
    apr_pool_destroy(pool);
    apr_terminate();
    return 0;
}
