/* The node's per-hosting counters (w4a_metrics). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <apr_pools.h>
#include <apr_strings.h>
#include <apr_tables.h>

#include "check_w4a.h"
#include "w4a_metrics.h"
#include "w4a_prom.h"

static apr_pool_t *pool;

static void setup(void)
{
    apr_pool_create(&pool, NULL);
}

static void teardown(void)
{
    apr_pool_destroy(pool);
}

static w4a_metrics_table_t *table_of2(apr_uint32_t nrows, apr_uint32_t ndrows)
{
    void *mem = apr_palloc(pool, w4a_metrics_size(nrows, ndrows));
    return w4a_metrics_init(mem, nrows, ndrows, 1, 0);
}

static w4a_metrics_table_t *table_of(apr_uint32_t nrows)
{
    return table_of2(nrows, 0);
}

static const w4a_metrics_dsnap_t *dfind(apr_array_header_t *a,
                                        const char *hosting,
                                        const char *domain)
{
    int i;
    for (i = 0; i < a->nelts; i++) {
        const w4a_metrics_dsnap_t *s = &APR_ARRAY_IDX(a, i,
                                                      w4a_metrics_dsnap_t);
        if (!strcmp(s->hosting, hosting) && !strcmp(s->domain, domain)) {
            return s;
        }
    }
    return NULL;
}

static const w4a_metrics_snap_t *find(apr_array_header_t *a, const char *name)
{
    int i;
    for (i = 0; i < a->nelts; i++) {
        const w4a_metrics_snap_t *s = &APR_ARRAY_IDX(a, i, w4a_metrics_snap_t);
        if (!strcmp(s->name, name)) {
            return s;
        }
    }
    return NULL;
}

START_TEST(test_metrics_one_row_per_hosting_counts_add_up)
{
    w4a_metrics_table_t *t = table_of(64);
    int full, i;
    apr_array_header_t *a;

    for (i = 0; i < 10; i++) {
        w4a_metrics_row_t *r = w4a_metrics_row(t, i % 2 ? "w4a100011"
                                                        : "w4a100010", &full);
        ck_assert_int_eq(full, 0);
        w4a_metrics_add(r, W4A_MC_REQUESTS, 1);
        w4a_metrics_add(r, W4A_MC_BYTES, 100);
    }
    ck_assert_ptr_eq(w4a_metrics_row(t, "w4a100010", &full),
                     w4a_metrics_row(t, "w4a100010", &full));
    ck_assert_uint_eq(t->used, 2);
    a = w4a_metrics_snapshot(t, pool);
    ck_assert_int_eq(a->nelts, 4);      /* two hostings, (none), (other) */
    ck_assert_str_eq(APR_ARRAY_IDX(a, 0, w4a_metrics_snap_t).name, "w4a100010");
    ck_assert_str_eq(APR_ARRAY_IDX(a, 2, w4a_metrics_snap_t).name,
                     W4A_METRICS_NONE);
    ck_assert_str_eq(APR_ARRAY_IDX(a, 3, w4a_metrics_snap_t).name,
                     W4A_METRICS_OTHER);
    ck_assert_uint_eq(find(a, "w4a100010")->c[W4A_MC_REQUESTS], 5);
    ck_assert_uint_eq(find(a, "w4a100011")->c[W4A_MC_BYTES], 500);
    ck_assert_uint_eq(find(a, W4A_METRICS_OTHER)->c[W4A_MC_REQUESTS], 0);
}
END_TEST

START_TEST(test_metrics_no_hosting_is_the_none_row)
{
    w4a_metrics_table_t *t = table_of(4);
    int full;

    ck_assert_ptr_eq(w4a_metrics_row(t, NULL, &full), &t->none);
    ck_assert_ptr_eq(w4a_metrics_row(t, "", &full), &t->none);
    ck_assert_int_eq(full, 0);
    ck_assert_uint_eq(t->used, 0);
}
END_TEST

START_TEST(test_metrics_full_table_counts_in_other_and_logs_once)
{
    w4a_metrics_table_t *t = table_of(2);
    int full;

    ck_assert_ptr_ne(w4a_metrics_row(t, "w4a100010", &full), &t->other);
    ck_assert_ptr_ne(w4a_metrics_row(t, "w4a100011", &full), &t->other);
    ck_assert_int_eq(full, 0);
    ck_assert_ptr_eq(w4a_metrics_row(t, "w4a100012", &full), &t->other);
    ck_assert_int_eq(full, 1);
    /* the rows already held keep counting */
    ck_assert_ptr_ne(w4a_metrics_row(t, "w4a100011", &full), &t->other);
    ck_assert_int_eq(full, 0);
    ck_assert_int_eq(w4a_metrics_full_due(t, 1000, 60), 1);
    ck_assert_int_eq(w4a_metrics_full_due(t, 1001, 60), 0);
    ck_assert_int_eq(w4a_metrics_full_due(t, 1059, 60), 0);
    ck_assert_int_eq(w4a_metrics_full_due(t, 1060, 60), 1);
    ck_assert_uint_eq(t->full_hits, 4);
}
END_TEST

START_TEST(test_metrics_name_too_long_is_other_not_full)
{
    w4a_metrics_table_t *t = table_of(8);
    char name[W4A_METRICS_NAME_MAX + 1];
    int full;

    memset(name, 'a', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    ck_assert_ptr_eq(w4a_metrics_row(t, name, &full), &t->other);
    ck_assert_int_eq(full, 0);
    name[W4A_METRICS_NAME_MAX - 1] = '\0';      /* the longest that fits */
    ck_assert_ptr_ne(w4a_metrics_row(t, name, &full), &t->other);
}
END_TEST

START_TEST(test_metrics_stuck_claim_is_skipped_and_snapshot_merges_names)
{
    w4a_metrics_table_t *t = table_of(8);
    w4a_metrics_row_t *r;
    apr_array_header_t *a;
    int full, i;

    /* the hosting's home row held by a claimer that died mid-claim */
    for (i = 0; i < 8; i++) {
        t->rows[i].state = 1;
    }
    t->rows[3].state = 0;
    r = w4a_metrics_row(t, "w4a100010", &full);
    ck_assert_ptr_eq(r, &t->rows[3]);
    w4a_metrics_add(r, W4A_MC_REQUESTS, 2);
    /* a duplicate row of the same name (two claims that raced) */
    t->rows[5].state = 2;
    strcpy(t->rows[5].name, "w4a100010");
    t->rows[5].c[W4A_MC_REQUESTS] = 3;
    a = w4a_metrics_snapshot(t, pool);
    ck_assert_int_eq(a->nelts, 3);
    ck_assert_uint_eq(find(a, "w4a100010")->c[W4A_MC_REQUESTS], 5);
}
END_TEST

START_TEST(test_metrics_file_shared_across_processes_and_read_only_mapped)
{
    char dir[] = "/tmp/w4a-metrics-XXXXXX";
    const char *path, *err = NULL;
    w4a_metrics_table_t *t = NULL;
    const w4a_metrics_table_t *ro = NULL;
    apr_array_header_t *a;
    struct stat st;
    int i, full, status;
    pid_t kids[4];

    ck_assert_ptr_nonnull(mkdtemp(dir));
    path = apr_pstrcat(pool, dir, "/metrics.shm", NULL);
    ck_assert_int_eq(w4a_metrics_file_create(&t, path, 16, 16, 0600, 42, &err,
                                             pool), APR_SUCCESS);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 07777, 0600);
    for (i = 0; i < 4; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            int n;
            for (n = 0; n < 1000; n++) {
                w4a_metrics_row_t *r = w4a_metrics_row(t, n % 2 ? "w4a100011"
                                                           : "w4a100010", &full);
                w4a_metrics_add(r, W4A_MC_REQUESTS, 1);
                w4a_metrics_dadd(w4a_metrics_domain_row(t, r, n % 4 < 2
                                                        ? "a.example"
                                                        : "b.example", 16,
                                                        &full),
                                 W4A_MD_REQUESTS, 1);
            }
            _exit(0);
        }
    }
    for (i = 0; i < 4; i++) {
        ck_assert_int_eq(waitpid(kids[i], &status, 0), kids[i]);
        ck_assert_int_eq(status, 0);
    }
    ck_assert_int_eq(w4a_metrics_file_open(&ro, path, &err, pool),
                     APR_SUCCESS);
    ck_assert_uint_eq(ro->pid, 42);
    a = w4a_metrics_snapshot(ro, pool);
    ck_assert_int_eq(a->nelts, 4);
    ck_assert_uint_eq(find(a, "w4a100010")->c[W4A_MC_REQUESTS], 2000);
    ck_assert_uint_eq(find(a, "w4a100011")->c[W4A_MC_REQUESTS], 2000);
    /* the domains of each hosting, from four processes, exact */
    a = w4a_metrics_domain_snapshot(ro, pool);
    ck_assert_int_eq(a->nelts, 4);
    ck_assert_uint_eq(dfind(a, "w4a100010", "a.example")->c[W4A_MD_REQUESTS],
                      1000);
    ck_assert_uint_eq(dfind(a, "w4a100010", "b.example")->c[W4A_MD_REQUESTS],
                      1000);
    ck_assert_uint_eq(dfind(a, "w4a100011", "a.example")->c[W4A_MD_REQUESTS],
                      1000);
    /* a new table replaces the file; the old mapping stays readable */
    ck_assert_int_eq(w4a_metrics_file_create(&t, path, 16, 16, 0600, 43, &err,
                                             pool), APR_SUCCESS);
    ck_assert_uint_eq(ro->pid, 42);
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(test_metrics_check_refuses_what_is_no_table)
{
    char junk[4096];
    w4a_metrics_table_t *t = table_of(4);

    memset(junk, 0, sizeof(junk));
    ck_assert_int_eq(w4a_metrics_check(junk, sizeof(junk)), APR_EINVAL);
    ck_assert_int_eq(w4a_metrics_check(t, w4a_metrics_size(4, 0)),
                     APR_SUCCESS);
    ck_assert_int_eq(w4a_metrics_check(t, w4a_metrics_size(4, 0) - 1),
                     APR_EINVAL);
    /* the domain rows are part of the size */
    t = table_of2(4, 8);
    ck_assert_int_eq(w4a_metrics_check(t, w4a_metrics_size(4, 8)),
                     APR_SUCCESS);
    ck_assert_int_eq(w4a_metrics_check(t, w4a_metrics_size(4, 7)),
                     APR_EINVAL);
    ck_assert_int_eq(w4a_metrics_check(t, 8), APR_EINVAL);
}
END_TEST

START_TEST(test_metrics_domains_per_hosting_bounded_other_and_full)
{
    w4a_metrics_table_t *t = table_of2(64, 64);
    w4a_metrics_row_t *a, *b;
    w4a_metrics_drow_t *d;
    apr_array_header_t *s;
    char longname[W4A_METRICS_DOMAIN_MAX + 8];
    int full, i;

    a = w4a_metrics_row(t, "w4a100010", &full);
    b = w4a_metrics_row(t, "w4a100011", &full);
    /* the same domain under two hostings: two rows */
    d = w4a_metrics_domain_row(t, a, "x.example", 2, &full);
    ck_assert_int_eq(full, 0);
    ck_assert_ptr_ne(d, w4a_metrics_domain_row(t, b, "x.example", 2, &full));
    ck_assert_ptr_eq(d, w4a_metrics_domain_row(t, a, "x.example", 2, &full));
    w4a_metrics_dadd(d, W4A_MD_REQUESTS, 1);
    /* cap 2: a's second domain has a row, its third and later are a's
     * "(other)", which does not count against the cap */
    d = w4a_metrics_domain_row(t, a, "y.example", 2, &full);
    ck_assert_str_eq(d->name, "y.example");
    for (i = 0; i < 10; i++) {
        char name[32];
        apr_snprintf(name, sizeof(name), "z%d.example", i);
        d = w4a_metrics_domain_row(t, a, name, 2, &full);
        ck_assert_int_eq(full, 0);
        ck_assert_str_eq(d->name, W4A_METRICS_OTHER);
        ck_assert_uint_eq(d->hosting, (apr_uint32_t)(a - t->rows));
        w4a_metrics_dadd(d, W4A_MD_REQUESTS, 1);
    }
    ck_assert_uint_eq(a->domains, 2);
    /* too long, or with a parenthesis: "(other)" too, never a row of its own */
    memset(longname, 'l', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    ck_assert_str_eq(w4a_metrics_domain_row(t, b, longname, 8, &full)->name,
                     W4A_METRICS_OTHER);
    ck_assert_str_eq(w4a_metrics_domain_row(t, b, "(x)", 8, &full)->name,
                     W4A_METRICS_OTHER);
    ck_assert_uint_eq(b->domains, 1);
    /* "(none)" has no domains; "(other)" hosting counts in the overflow */
    ck_assert_ptr_null(w4a_metrics_domain_row(t, &t->none, "x.example", 2,
                                              &full));
    ck_assert_ptr_eq(w4a_metrics_domain_row(t, &t->other, "x.example", 2,
                                            &full), &t->dother);
    /* cap 0: off */
    ck_assert_ptr_null(w4a_metrics_domain_row(t, a, "x.example", 0, &full));
    s = w4a_metrics_domain_snapshot(t, pool);
    ck_assert_uint_eq(dfind(s, "w4a100010", W4A_METRICS_OTHER)
                      ->c[W4A_MD_REQUESTS], 10);
    ck_assert_uint_eq(dfind(s, "w4a100010", "x.example")->c[W4A_MD_REQUESTS],
                      1);
    ck_assert_ptr_null(dfind(s, W4A_METRICS_OTHER, W4A_METRICS_OTHER));

    /* a full domain area: the overflow row, said */
    t = table_of2(8, 2);
    a = w4a_metrics_row(t, "w4a100010", &full);
    for (i = 0; i < 2; i++) {
        char name[32];
        apr_snprintf(name, sizeof(name), "d%d.example", i);
        d = w4a_metrics_domain_row(t, a, name, 16, &full);
        ck_assert_int_eq(full, 0);
        ck_assert_ptr_ne(d, &t->dother);
    }
    d = w4a_metrics_domain_row(t, a, "d9.example", 16, &full);
    ck_assert_int_eq(full, 1);
    ck_assert_ptr_eq(d, &t->dother);
    ck_assert_uint_eq(a->domains, 2);       /* the reservation given back */
    w4a_metrics_dadd(d, W4A_MD_REQUESTS, 1);
    ck_assert_int_eq(w4a_metrics_domain_full_due(t, 100, 60), 1);
    ck_assert_int_eq(w4a_metrics_domain_full_due(t, 110, 60), 0);
    ck_assert_uint_eq(t->dfull_hits, 2);
    s = w4a_metrics_domain_snapshot(t, pool);
    ck_assert_uint_eq(dfind(s, W4A_METRICS_OTHER, W4A_METRICS_OTHER)
                      ->c[W4A_MD_REQUESTS], 1);
}
END_TEST

START_TEST(test_metrics_cache_gives_the_rows_a_lookup_gives_never_a_stale_one)
{
    w4a_metrics_table_t *t = table_of2(64, 64);
    w4a_metrics_cache_t *c = apr_pcalloc(pool, sizeof(*c));
    w4a_metrics_row_t *a, *row;
    w4a_metrics_drow_t *d, *drow;
    char hosting[16], domain[32];
    int full, dfull, i;

    /* a miss then hits: the rows the plain lookups give */
    strcpy(hosting, "w4a100010");
    strcpy(domain, "x.example");
    a = w4a_metrics_row(t, hosting, &full);
    d = w4a_metrics_domain_row(t, a, domain, 4, &full);
    for (i = 0; i < 3; i++) {
        row = w4a_metrics_rows(t, c, hosting, domain, 4, &drow, &full, &dfull);
        ck_assert_ptr_eq(row, a);
        ck_assert_ptr_eq(drow, d);
        ck_assert_int_eq(full + dfull, 0);
    }
    /* the same strings' memory now holds another record (a map generation
     * swapped in at the same address): the slot is checked by name */
    strcpy(hosting, "w4a100011");
    row = w4a_metrics_rows(t, c, hosting, domain, 4, &drow, &full, &dfull);
    ck_assert_str_eq(row->name, "w4a100011");
    ck_assert_uint_eq(drow->hosting, (apr_uint32_t)(row - t->rows));
    ck_assert_ptr_ne(drow, d);
    strcpy(domain, "y.example");
    row = w4a_metrics_rows(t, c, hosting, domain, 4, &drow, &full, &dfull);
    ck_assert_str_eq(row->name, "w4a100011");
    ck_assert_str_eq(drow->name, "y.example");
    /* domains off (cap 0) with the same slot: no domain row */
    row = w4a_metrics_rows(t, c, hosting, domain, 0, &drow, &full, &dfull);
    ck_assert_str_eq(row->name, "w4a100011");
    ck_assert_ptr_null(drow);
    row = w4a_metrics_rows(t, c, hosting, domain, 4, &drow, &full, &dfull);
    ck_assert_str_eq(drow->name, "y.example");
    /* no hosting: "(none)", nothing cached */
    ck_assert_ptr_eq(w4a_metrics_rows(t, c, NULL, NULL, 4, &drow, &full,
                                      &dfull), &t->none);
    ck_assert_ptr_null(drow);

    /* a full table: "(other)" and full each time, never from the cache */
    t = table_of2(8, 2);
    memset(c, 0, sizeof(*c));
    for (i = 0; i < 8 + 2; i++) {
        apr_snprintf(hosting, sizeof(hosting), "w4a%d", 200000 + i);
        w4a_metrics_rows(t, c, hosting, "d.example", 4, &drow, &full, &dfull);
    }
    for (i = 0; i < 3; i++) {
        row = w4a_metrics_rows(t, c, hosting, "d.example", 4, &drow, &full,
                               &dfull);
        ck_assert_ptr_eq(row, &t->other);
        ck_assert_int_eq(full, 1);
    }
    /* a full domain area: the hosting's row, the domain overflow, dfull
     * each time */
    a = &t->rows[0];
    for (i = 0; i < 3; i++) {
        row = w4a_metrics_rows(t, c, a->name, "e.example", 4, &drow, &full,
                               &dfull);
        ck_assert_ptr_eq(row, a);
        ck_assert_ptr_eq(drow, &t->dother);
        ck_assert_int_eq(dfull, 1);
    }
}
END_TEST

/* ------------------------------------------------------------------ */
/* The refusal's check, and the Prometheus writer (w4a_prom).         */

START_TEST(test_metrics_check_of_notes_in_request_order_and_bounded)
{
    ck_assert_int_eq(w4a_metrics_check_of(NULL, NULL, NULL, NULL), -1);
    ck_assert_str_eq(w4a_metrics_check_names[w4a_metrics_check_of(
        NULL, NULL, "owner_denied", NULL) - W4A_MC_REF_FIRST], "vhost-owner");
    ck_assert_str_eq(w4a_metrics_check_names[w4a_metrics_check_of(
        NULL, NULL, NULL, "client-share") - W4A_MC_REF_FIRST],
        "php-client-share");
    ck_assert_str_eq(w4a_metrics_check_names[w4a_metrics_check_of(
        NULL, "limit", NULL, "busy") - W4A_MC_REF_FIRST],
        "guard-hosting-limit");
    /* the guard's client check comes first */
    ck_assert_str_eq(w4a_metrics_check_names[w4a_metrics_check_of(
        "login", "limit", "refused", "busy") - W4A_MC_REF_FIRST],
        "guard-ban-login");
    /* a value nobody sets today: its module's -other */
    ck_assert_str_eq(w4a_metrics_check_names[w4a_metrics_check_of(
        NULL, NULL, NULL, "new-thing") - W4A_MC_REF_FIRST], "php-other");
    ck_assert_str_eq(w4a_metrics_check_names[w4a_metrics_check_of(
        "zzz", NULL, NULL, NULL) - W4A_MC_REF_FIRST], "guard-other");
    ck_assert_int_eq(w4a_metrics_check_of(NULL, NULL, "x", NULL),
                     W4A_MC_REF_FIRST + 12);
    ck_assert_int_le(W4A_MC_REF_LAST, W4A_MC_MAX - 1);
}
END_TEST

typedef struct {
    apr_pool_t *p;
    char       *text;
    int         writes;
} sink;

static apr_status_t sink_write(void *baton, const char *data, apr_size_t len)
{
    sink *k = baton;
    k->text = apr_pstrcat(k->p, k->text, apr_pstrndup(k->p, data, len), NULL);
    k->writes++;
    return APR_SUCCESS;
}

static w4a_prom_t *writer(sink *k)
{
    k->p = pool;
    k->text = "";
    k->writes = 0;
    return w4a_prom_make(sink_write, k, pool);
}

START_TEST(test_prom_family_once_labels_escaped_values_exact)
{
    sink k;
    w4a_prom_t *o = writer(&k);

    ck_assert_int_eq(w4a_prom_family(o, "w4a_x_things_total",
                                     W4A_PROM_COUNTER, "Things\\ done,\n"
                                     "node-wide."), APR_SUCCESS);
    ck_assert_int_eq(w4a_prom_u64(o, 3, "hosting", "a\"b\\c\nd",
                                  "check", "x", NULL), APR_SUCCESS);
    ck_assert_int_eq(w4a_prom_u64(o, 18446744073709551615ULL, NULL),
                     APR_SUCCESS);
    ck_assert_int_eq(w4a_prom_family(o, "w4a_x_seconds_total",
                                     W4A_PROM_COUNTER, "t"), APR_SUCCESS);
    ck_assert_int_eq(w4a_prom_scaled(o, 1234567, 1000000, NULL), APR_SUCCESS);
    ck_assert_int_eq(w4a_prom_scaled(o, 5, 1000, "k", "\xc3\xa9", NULL),
                     APR_SUCCESS);
    ck_assert_int_eq(w4a_prom_one(o, "w4a_x_rows", W4A_PROM_GAUGE, "", 7),
                     APR_SUCCESS);
    ck_assert_int_eq(w4a_prom_flush(o), APR_SUCCESS);
    ck_assert_str_eq(k.text,
        "# HELP w4a_x_things_total Things\\\\ done,\\nnode-wide.\n"
        "# TYPE w4a_x_things_total counter\n"
        "w4a_x_things_total{hosting=\"a\\\"b\\\\c\\nd\",check=\"x\"} 3\n"
        "w4a_x_things_total 18446744073709551615\n"
        "# HELP w4a_x_seconds_total t\n"
        "# TYPE w4a_x_seconds_total counter\n"
        "w4a_x_seconds_total 1.234567\n"
        "w4a_x_seconds_total{k=\"\xc3\xa9\"} 0.005\n"
        "# HELP w4a_x_rows \n"
        "# TYPE w4a_x_rows gauge\n"
        "w4a_x_rows 7\n");
    ck_assert_int_eq(w4a_prom_samples(o), 5);
    ck_assert_int_eq(w4a_prom_dropped(o), 0);
    ck_assert_ptr_null(w4a_prom_error(o));
}
END_TEST

START_TEST(test_prom_refuses_bad_names_labels_and_a_family_twice)
{
    sink k;
    w4a_prom_t *o = writer(&k);
    char big[W4A_PROM_VALUE_MAX + 2];

    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    /* names: prefix, characters, counters _total, gauges not */
    ck_assert_int_eq(w4a_prom_family(o, "x_total", W4A_PROM_COUNTER, ""),
                     APR_EINVAL);
    ck_assert_int_eq(w4a_prom_u64(o, 1, NULL), APR_EINVAL); /* its sample */
    ck_assert_int_eq(w4a_prom_family(o, "w4a_Up_total", W4A_PROM_COUNTER,
                                     ""), APR_EINVAL);
    ck_assert_int_eq(w4a_prom_family(o, "w4a_x", W4A_PROM_COUNTER, ""),
                     APR_EINVAL);
    ck_assert_int_eq(w4a_prom_family(o, "w4a_x_total", W4A_PROM_GAUGE, ""),
                     APR_EINVAL);
    ck_assert_int_eq(w4a_prom_family(o, "w4a_x-y_total", W4A_PROM_COUNTER,
                                     ""), APR_EINVAL);
    ck_assert_int_eq(w4a_prom_family(o, "w4a_a_total", W4A_PROM_COUNTER, ""),
                     APR_SUCCESS);
    /* labels: names, each once, at most 4, values UTF-8 and bounded */
    ck_assert_int_eq(w4a_prom_u64(o, 1, "__x", "v", NULL), APR_EINVAL);
    ck_assert_int_eq(w4a_prom_u64(o, 1, "Bad", "v", NULL), APR_EINVAL);
    ck_assert_int_eq(w4a_prom_u64(o, 1, "a", "v", "a", "w", NULL),
                     APR_EINVAL);
    ck_assert_int_eq(w4a_prom_u64(o, 1, "a", "1", "b", "2", "c", "3",
                                  "d", "4", "e", "5", NULL), APR_EINVAL);
    ck_assert_int_eq(w4a_prom_u64(o, 1, "a", "\xff", NULL), APR_EINVAL);
    ck_assert_int_eq(w4a_prom_u64(o, 1, "a", "\xc3", NULL), APR_EINVAL);
    ck_assert_int_eq(w4a_prom_u64(o, 1, "a", "\xed\xa0\x80", NULL),
                     APR_EINVAL);                  /* a surrogate */
    ck_assert_int_eq(w4a_prom_u64(o, 1, "a", big, NULL), APR_EINVAL);
    ck_assert_int_eq(w4a_prom_scaled(o, 1, 7, NULL), APR_EINVAL);
    ck_assert_int_eq(w4a_prom_u64(o, 2, "a", "ok", NULL), APR_SUCCESS);
    /* the same family again: refused, its samples too */
    ck_assert_int_eq(w4a_prom_family(o, "w4a_a_total", W4A_PROM_COUNTER, ""),
                     APR_EEXIST);
    ck_assert_int_eq(w4a_prom_u64(o, 9, NULL), APR_EINVAL);
    w4a_prom_flush(o);
    ck_assert_str_eq(k.text, "# HELP w4a_a_total \n"
                             "# TYPE w4a_a_total counter\n"
                             "w4a_a_total{a=\"ok\"} 2\n");
    ck_assert_int_eq(w4a_prom_samples(o), 1);
    ck_assert_int_eq(w4a_prom_dropped(o), 17);
    ck_assert_ptr_nonnull(strstr(w4a_prom_error(o), "x_total"));
}
END_TEST

START_TEST(test_prom_budget_families_and_help_are_bounded_output_streamed)
{
    sink k;
    w4a_prom_t *o = writer(&k);
    char help[W4A_PROM_HELP_MAX + 100];
    int i;

    memset(help, 'h', sizeof(help) - 1);
    help[sizeof(help) - 1] = '\0';
    help[W4A_PROM_HELP_MAX - 1] = '\xc3';    /* a character across the cut */
    help[W4A_PROM_HELP_MAX] = '\xa9';
    w4a_prom_budget(o, 3);
    ck_assert_int_eq(w4a_prom_family(o, "w4a_b_total", W4A_PROM_COUNTER,
                                     help), APR_SUCCESS);
    for (i = 0; i < 5; i++) {
        w4a_prom_u64(o, (apr_uint64_t)i, NULL);
    }
    ck_assert_int_eq(w4a_prom_samples(o), 3);
    ck_assert_int_eq(w4a_prom_dropped(o), 2);
    w4a_prom_budget(o, 0);                   /* no limit again */
    ck_assert_int_eq(w4a_prom_u64(o, 5, NULL), APR_SUCCESS);
    for (i = 1; i < W4A_PROM_MAX_FAMILIES; i++) {
        ck_assert_int_eq(w4a_prom_family(o, apr_psprintf(pool, "w4a_f%d", i),
                                         W4A_PROM_GAUGE, "x"), APR_SUCCESS);
    }
    ck_assert_int_eq(w4a_prom_family(o, "w4a_one_more", W4A_PROM_GAUGE, "x"),
                     APR_ENOSPC);
    w4a_prom_flush(o);
    /* the HELP line stops before the character the cut would split */
    ck_assert_ptr_nonnull(strstr(k.text, "hhh\n# TYPE w4a_b_total counter"));
    ck_assert_int_eq((int)(strchr(k.text, '\n') - k.text),
                     (int)strlen("# HELP w4a_b_total ") + W4A_PROM_HELP_MAX
                     - 1);
    /* written in 4 KB pieces, not held whole */
    ck_assert_int_gt(k.writes, 5);
}
END_TEST

Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("metrics");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_metrics_one_row_per_hosting_counts_add_up);
    tcase_add_test(tc, test_metrics_no_hosting_is_the_none_row);
    tcase_add_test(tc, test_metrics_full_table_counts_in_other_and_logs_once);
    tcase_add_test(tc, test_metrics_name_too_long_is_other_not_full);
    tcase_add_test(tc, test_metrics_stuck_claim_is_skipped_and_snapshot_merges_names);
    tcase_add_test(tc, test_metrics_file_shared_across_processes_and_read_only_mapped);
    tcase_add_test(tc, test_metrics_check_refuses_what_is_no_table);
    tcase_add_test(tc, test_metrics_domains_per_hosting_bounded_other_and_full);
    tcase_add_test(tc, test_metrics_cache_gives_the_rows_a_lookup_gives_never_a_stale_one);
    tcase_add_test(tc, test_metrics_check_of_notes_in_request_order_and_bounded);
    tcase_add_test(tc, test_prom_family_once_labels_escaped_values_exact);
    tcase_add_test(tc, test_prom_refuses_bad_names_labels_and_a_family_twice);
    tcase_add_test(tc, test_prom_budget_families_and_help_are_bounded_output_streamed);
    suite_add_tcase(s, tc);
    return s;
}
