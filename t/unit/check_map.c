/* The map: compile, open (validation), lookup. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_strings.h>
#include <apr_tables.h>

#include "check_w4a.h"
#include "w4a_map.h"

apr_pool_t *test_pool;
static char dir[64];
static char msgs[65536];

static void capture(void *baton, int level, const char *msg)
{
    apr_size_t n = strlen(msgs);
    apr_snprintf(msgs + n, sizeof(msgs) - n, "%s|%s\n",
                 level <= W4A_LOG_ERR ? "E" : "W", msg);
}

static w4a_logger_t logger = { capture, NULL };

static void setup(void)
{
    apr_pool_create(&test_pool, NULL);
    strcpy(dir, "/tmp/w4a-check-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    msgs[0] = '\0';
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
    apr_pool_destroy(test_pool);
}

static const char *path_of(const char *name)
{
    return apr_pstrcat(test_pool, dir, "/", name, NULL);
}

static const char *write_text(const char *name, const char *text)
{
    const char *p = path_of(name);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return p;
}

static const char *MAP =
    "# comment line\n"
    "\n"
    "example.com,www.example.com  w4a100010 100010 100010 /datas/vol1/w4a100010/var/www/example.com 8.2 active log\n"
    "*.example.org   w4a100011 100011 100011 /datas/vol1/w4a100011/var/www/example.org/ - active media=Media.Example.org\n"
    "*.b.example.org w4a100012 100012 100012 /datas/vol1/w4a100012/var/www/b 7.4 suspended  # trailing comment\n"
    "exact.b.example.org w4a100013 100013 100013 /datas/vol1/w4a100013/var/www/exact 8.3 active log=/datas/logs/w4a100013\n";

static w4a_map_t *compile_open(const char *text, const w4a_map_checks_t *k)
{
    const char *src = write_text("map.txt", text);
    const char *idx = path_of("map.index");
    w4a_map_t *m = NULL;
    const char *err = NULL;
    w4a_map_stats_t st;

    ck_assert_int_eq(w4a_map_compile(src, idx, k, &logger, &st, test_pool),
                     APR_SUCCESS);
    ck_assert_int_eq(w4a_map_open(&m, idx, &err, test_pool), APR_SUCCESS);
    return m;
}

static int find(w4a_map_t *m, const char *host, w4a_hosting_t *r)
{
    return w4a_map_lookup(m, host, strlen(host), r) == APR_SUCCESS;
}

START_TEST(test_map_round_trip)
{
    w4a_map_t *m = compile_open(MAP, NULL);
    w4a_hosting_t r;

    ck_assert_uint_eq(w4a_map_records(m), 4);
    ck_assert_uint_eq(w4a_map_names(m), 5);
    ck_assert(w4a_map_generation(m) > 0);

    ck_assert(find(m, "www.example.com", &r));
    ck_assert_str_eq(r.domain, "example.com");
    ck_assert_str_eq(r.matched, "www.example.com");
    ck_assert_str_eq(r.hosting, "w4a100010");
    ck_assert_uint_eq(r.uid, 100010);
    ck_assert_uint_eq(r.gid, 100010);
    ck_assert_str_eq(r.docroot, "/datas/vol1/w4a100010/var/www/example.com");
    ck_assert_str_eq(r.php_version, "8.2");
    ck_assert_int_eq(r.state, W4A_STATE_ACTIVE);
    ck_assert_uint_eq(r.flags, W4A_FLAG_LOG);
    ck_assert_str_eq(r.log_dir, "/datas/vol1/w4a100010/log/apache2");
    ck_assert_ptr_null(r.media_host);

    /* wildcard, trailing slash dropped, no PHP, media host normalised */
    ck_assert(find(m, "a.example.org", &r));
    ck_assert_str_eq(r.matched, "*.example.org");
    ck_assert_str_eq(r.domain, "example.org");
    ck_assert_str_eq(r.docroot, "/datas/vol1/w4a100011/var/www/example.org");
    ck_assert_ptr_null(r.php_version);
    ck_assert_ptr_null(r.log_dir);
    ck_assert_str_eq(r.media_host, "media.example.org");

    /* longest suffix wins; exact beats wildcard */
    ck_assert(find(m, "x.y.b.example.org", &r));
    ck_assert_str_eq(r.hosting, "w4a100012");
    ck_assert_int_eq(r.state, W4A_STATE_SUSPENDED);
    ck_assert(find(m, "exact.b.example.org", &r));
    ck_assert_str_eq(r.hosting, "w4a100013");
    ck_assert_str_eq(r.log_dir, "/datas/logs/w4a100013");
    ck_assert(find(m, "b.example.org", &r));        /* by *.example.org */
    ck_assert_str_eq(r.hosting, "w4a100011");

    /* a wildcard does not match its bare suffix; unknowns are unknown */
    ck_assert(!find(m, "example.org", &r));
    ck_assert(!find(m, "example.net", &r));
    ck_assert(!find(m, "com", &r));
    ck_assert(!find(m, "ww.example.com", &r));
    w4a_map_close(m);
}
END_TEST

static int count_records(void *baton, const w4a_hosting_t *rec)
{
    (*(int *)baton)++;
    ck_assert_ptr_null(rec->matched);
    ck_assert_ptr_nonnull(rec->hosting);
    return 0;
}

START_TEST(test_map_iterate)
{
    w4a_map_t *m = compile_open(MAP, NULL);
    int n = 0;
    ck_assert_int_eq(w4a_map_iterate(m, count_records, &n), 0);
    ck_assert_int_eq(n, 4);
    w4a_map_close(m);
}
END_TEST

/* Compile text and expect it refused with msg among the messages. */
static void refused(const char *text, const char *msg,
                    const w4a_map_checks_t *k)
{
    const char *src = write_text("bad.txt", text);
    const char *idx = path_of("bad.index");
    w4a_map_stats_t st;
    struct stat sb;

    msgs[0] = '\0';
    ck_assert_int_eq(w4a_map_compile(src, idx, k, &logger, &st, test_pool),
                     APR_EINVAL);
    ck_assert_msg(strstr(msgs, msg) != NULL, "expected '%s' in:\n%s", msg, msgs);
    ck_assert_int_ne(stat(idx, &sb), 0);   /* nothing written */
    ck_assert_uint_ge(st.errors, 1);
}

START_TEST(test_map_checks)
{
    w4a_map_checks_t k;
    apr_array_header_t *bases = apr_array_make(test_pool, 1, sizeof(char *));
    APR_ARRAY_PUSH(bases, const char *) = "/datas";
    memset(&k, 0, sizeof(k));
    k.min_uid = 1000;
    k.bases = bases;

    refused("a.com w 1000 1000 /datas/a 8.2 active\n"
            "b.com,A.com w 1000 1000 /datas/b 8.2 active\n",
            "bad.txt:2: duplicate name 'a.com' (first on line 1)", &k);
    refused("a.com w x1 1000 /datas/a 8.2 active\n",
            "bad.txt:1: uid 'x1' is not a number", &k);
    refused("a.com w -5 1000 /datas/a 8.2 active\n",
            "bad.txt:1: uid '-5' is not a number", &k);
    refused("a.com w 999 1000 /datas/a 8.2 active\n",
            "bad.txt:1: uid 999 is below the minimum 1000", &k);
    refused("a.com w 1000 0 /datas/a 8.2 active\n",
            "bad.txt:1: gid 0 is below the minimum 1000", &k);
    refused("a.com w 1000 1000 /etc 8.2 active\n",
            "bad.txt:1: document root /etc is outside the allowed bases", &k);
    refused("a.com w 1000 1000 /datasX/a 8.2 active\n",
            "document root /datasX/a is outside the allowed bases", &k);
    refused("a.com w 1000 1000 datas/a 8.2 active\n",
            "document root 'datas/a' is not an absolute, normalised path", &k);
    refused("a.com w 1000 1000 /datas/../etc 8.2 active\n",
            "is not an absolute, normalised path", &k);
    refused("a.com w 1000 1000 /datas/a 8.2 frozen\n",
            "bad.txt:1: unknown state 'frozen'", &k);
    refused("a.com w 1000 1000 /datas/a 8.2 active loud\n",
            "bad.txt:1: unknown flag 'loud'", &k);
    refused("a.com w 1000 1000 /datas/a 8.2 active log\n",
            "flag 'log' needs log=DIR", &k);
    refused("a.com w 1000 1000 /datas/a 8;2 active\n",
            "PHP version '8;2' is not a version", &k);
    refused("a.com w 1000 1000 /datas/a\n", "expected 7 or 8 fields", &k);
    refused("a..com w 1000 1000 /datas/a 8.2 active\n",
            "'a..com' is not a domain name", &k);
    refused("[::1] w 1000 1000 /datas/a 8.2 active\n",
            "'[::1]' is not a domain name", &k);
    refused("a.com w/x 1000 1000 /datas/a 8.2 active\n",
            "hosting 'w/x' is not a Unix user name", &k);
}
END_TEST

START_TEST(test_map_missing_dirs_warn_or_fail)
{
    w4a_map_checks_t k;
    const char *text = apr_psprintf(test_pool,
        "a.com w 1000 1000 %s 8.2 active\nb.com w 1000 1000 %s/nope 8.2 active\n",
        dir, dir);
    const char *src = write_text("dirs.txt", text);
    w4a_map_stats_t st;

    memset(&k, 0, sizeof(k));
    k.check_dirs = 1;
    msgs[0] = '\0';
    ck_assert_int_eq(w4a_map_compile(src, NULL, &k, &logger, &st, test_pool),
                     APR_SUCCESS);
    ck_assert_uint_eq(st.warnings, 1);
    ck_assert_ptr_nonnull(strstr(msgs, "W|"));
    ck_assert_ptr_nonnull(strstr(msgs, "dirs.txt:2: document root"));
    k.strict = 1;
    ck_assert_int_eq(w4a_map_compile(src, NULL, &k, &logger, &st, test_pool),
                     APR_EINVAL);
}
END_TEST

START_TEST(test_map_skip_bad)
{
    w4a_map_checks_t k;
    w4a_map_t *m;
    w4a_hosting_t r;

    memset(&k, 0, sizeof(k));
    k.min_uid = 1000;
    k.skip_bad = 1;
    m = compile_open("good.com w 1000 1000 /d/g 8.2 active\n"
                     "bad.com w 5 1000 /d/b 8.2 active\n", &k);
    ck_assert(find(m, "good.com", &r));
    ck_assert(!find(m, "bad.com", &r));
    ck_assert_uint_eq(w4a_map_records(m), 1);
    w4a_map_close(m);
}
END_TEST

static void write_bytes(const char *path, const char *data, apr_size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void expect_refused(const char *path, const char *why)
{
    w4a_map_t *m = NULL;
    const char *err = NULL;
    ck_assert_int_ne(w4a_map_open(&m, path, &err, test_pool), APR_SUCCESS);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(err);
    if (why) {
        ck_assert_msg(strstr(err, why) != NULL, "'%s' not in '%s'", why, err);
    }
}

START_TEST(test_map_corrupt_index_refused)
{
    w4a_map_t *m = compile_open(MAP, NULL);
    const char *idx = path_of("map.index");
    const char *bad = path_of("corrupt.index");
    char *data;
    apr_size_t n, i, cuts[] = { 0, 1, 8, 40, 95, 200 };
    FILE *f = fopen(idx, "rb");
    struct stat sb;

    w4a_map_close(m);
    stat(idx, &sb);
    n = (apr_size_t)sb.st_size;
    data = apr_palloc(test_pool, n);
    ck_assert_uint_eq(fread(data, 1, n, f), n);
    fclose(f);

    for (i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        write_bytes(bad, data, cuts[i]);
        expect_refused(bad, NULL);
    }
    write_bytes(bad, data, n - 1);
    expect_refused(bad, "truncated");
    /* every single flipped byte after the header is caught */
    for (i = 0; i < n; i += (i < 200 ? 1 : 7)) {
        data[i] ^= 0x10;
        write_bytes(bad, data, n);
        expect_refused(bad, NULL);
        data[i] ^= 0x10;
    }
    memcpy(data, "NOTAMAP!", 8);
    write_bytes(bad, data, n);
    expect_refused(bad, "bad magic");
    expect_refused(path_of("does-not-exist"), "cannot open");
}
END_TEST

START_TEST(test_map_large_table_all_found)
{
    apr_size_t cap = 50000 * 96, len = 0;
    char *text = malloc(cap);
    int i;
    w4a_map_t *m;
    w4a_hosting_t r;
    char host[64];

    for (i = 0; i < 25000; i++) {
        len += (apr_size_t)snprintf(text + len, cap - len,
            "d%d.example,www.d%d.example w%d %d %d /datas/v/w%d 8.2 active\n",
            i, i, i, 200000 + i, 200000 + i, i);
    }
    m = compile_open(text, NULL);
    free(text);
    ck_assert_uint_eq(w4a_map_names(m), 50000);
    for (i = 0; i < 25000; i++) {
        snprintf(host, sizeof(host), "www.d%d.example", i);
        ck_assert_msg(find(m, host, &r), "%s not found", host);
        ck_assert_uint_eq(r.uid, (apr_uint32_t)(200000 + i));
        snprintf(host, sizeof(host), "d%d.example", i);
        ck_assert(find(m, host, &r));
    }
    ck_assert(!find(m, "d25000.example", &r));
    w4a_map_close(m);
}
END_TEST

Suite *map_suite(void)
{
    Suite *s = suite_create("map");
    TCase *tc = tcase_create("map");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_map_round_trip);
    tcase_add_test(tc, test_map_iterate);
    tcase_add_test(tc, test_map_checks);
    tcase_add_test(tc, test_map_missing_dirs_warn_or_fail);
    tcase_add_test(tc, test_map_skip_bad);
    tcase_add_test(tc, test_map_corrupt_index_refused);
    tcase_add_test(tc, test_map_large_table_all_found);
    suite_add_tcase(s, tc);
    return s;
}
