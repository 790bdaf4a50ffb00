/* Single records (the SQL source and its memcached values): the same checks
 * as a line of the text map, and a cache line that parses back to itself. */
#include <string.h>

#include <apr_strings.h>
#include <apr_tables.h>

#include "check_w4a.h"
#include "w4a_map.h"

static apr_pool_t *pool;
static w4a_map_checks_t checks;

static void setup(void)
{
    apr_array_header_t *bases;

    apr_pool_create(&pool, NULL);
    bases = apr_array_make(pool, 1, sizeof(const char *));
    APR_ARRAY_PUSH(bases, const char *) = "/datas";
    memset(&checks, 0, sizeof(checks));
    checks.min_uid = 1000;
    checks.bases = bases;
}

static void teardown(void)
{
    apr_pool_destroy(pool);
}

/* fields: hosting uid gid docroot php state flags */
static apr_status_t parse(w4a_hosting_t *rec, const char *key,
                          const char *domain, const char *f0,
                          const char *f1, const char *f2, const char *f3,
                          const char *f4, const char *f5, const char *f6,
                          const char **err)
{
    const char *fields[W4A_RECORD_FIELDS];

    fields[0] = f0; fields[1] = f1; fields[2] = f2; fields[3] = f3;
    fields[4] = f4; fields[5] = f5; fields[6] = f6;
    memset(rec, 0, sizeof(*rec));
    *err = NULL;
    return w4a_record_parse(rec, key, domain, fields, &checks, err, pool);
}

START_TEST(test_record_parse_fields)
{
    w4a_hosting_t rec;
    const char *err;

    ck_assert_int_eq(parse(&rec, "WWW.Example.COM.", "example.com",
                           "w4a100010", "100010", "100011",
                           "/datas/vol1/w4a100010/var/www/example.com/",
                           "8.2", "active", "log,media=Media.Example.com",
                           &err), APR_SUCCESS);
    ck_assert_str_eq(rec.matched, "www.example.com");
    ck_assert_str_eq(rec.domain, "example.com");
    ck_assert_str_eq(rec.hosting, "w4a100010");
    ck_assert_uint_eq(rec.uid, 100010);
    ck_assert_uint_eq(rec.gid, 100011);
    ck_assert_str_eq(rec.docroot, "/datas/vol1/w4a100010/var/www/example.com");
    ck_assert_str_eq(rec.php_version, "8.2");
    ck_assert_int_eq(rec.state, W4A_STATE_ACTIVE);
    ck_assert_uint_eq(rec.flags & W4A_FLAG_LOG, W4A_FLAG_LOG);
    ck_assert_str_eq(rec.log_dir, "/datas/vol1/w4a100010/log/apache2");
    ck_assert_str_eq(rec.media_host, "media.example.com");

    /* NULL php and flags (SQL NULL) are "-"; no domain: the key's */
    ck_assert_int_eq(parse(&rec, "*.sites.example.org", NULL, "w4a100012",
                           "100012", "100012",
                           "/datas/vol1/w4a100012/var/www/sites", NULL,
                           "suspended", NULL, &err), APR_SUCCESS);
    ck_assert_str_eq(rec.matched, "*.sites.example.org");
    ck_assert_str_eq(rec.domain, "sites.example.org");
    ck_assert_ptr_null(rec.php_version);
    ck_assert_ptr_null(rec.media_host);
    ck_assert_ptr_null(rec.log_dir);
    ck_assert_int_eq(rec.state, W4A_STATE_SUSPENDED);
}
END_TEST

START_TEST(test_record_parse_refuses_what_the_map_refuses)
{
    static const struct {
        const char *key, *domain, *f[W4A_RECORD_FIELDS], *why;
    } bad[] = {
        { "a.example", NULL, { "w4a1", "999", "1000", "/datas/a/var/www/a",
          "8.2", "active", "-" }, "uid" },
        { "a.example", NULL, { "w4a1", "1000", "1000", "/etc", "8.2",
          "active", "-" }, "docroot" },
        { "a.example", NULL, { "w4a1", "1000", "1000", "/datas", "8.2",
          "active", "-" }, "docroot" },
        { "a.example", NULL, { "w4a1", "1000", "1000",
          "/datas/a/../../etc", "8.2", "active", "-" }, "docroot" },
        { "a.example", NULL, { "w4a 1", "1000", "1000", "/datas/a", "8.2",
          "active", "-" }, "blank" },
        { "a.example", NULL, { "w4a1", "1000", "1000", "/datas/a", "8.2",
          "paused", "-" }, "state" },
        { "a.example", NULL, { "w4a1", "1000", "1000", "/datas/a", "8.2",
          "active", "shell=/bin/sh" }, "flag" },
        { "a..example", NULL, { "w4a1", "1000", "1000", "/datas/a", "8.2",
          "active", "-" }, "name" },
        { "a.example", "bad domain", { "w4a1", "1000", "1000", "/datas/a",
          "8.2", "active", "-" }, "domain" },
        { "a.example", NULL, { "w4a1", "1000", NULL, "/datas/a", "8.2",
          "active", "-" }, "gid" },
        { "a.example", NULL, { "w4a1", "1000", "1000", "/datas/a", "8.2",
          "active", "rewrite,rewrite" }, "flag twice" },
        { "a.example", NULL, { "w4a1", "1000", "1000", "/datas/a", "8.2",
          "active", "php_limit=0" }, "php_limit 0" },
        { "a.example", NULL, { "w4a1", "1000", "1000", "/datas/a", "8.2",
          "active", "php_limit=99999" }, "php_limit too large" },
        { "a.example", NULL, { "w4a1", "1000", "1000", "/datas/a", "8.2",
          "active", "php_limit=x" }, "php_limit not a number" },
    };
    apr_size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        w4a_hosting_t rec;
        const char *err;
        apr_status_t rv = parse(&rec, bad[i].key, bad[i].domain, bad[i].f[0],
                                bad[i].f[1], bad[i].f[2], bad[i].f[3],
                                bad[i].f[4], bad[i].f[5], bad[i].f[6], &err);
        ck_assert_msg(rv == APR_EINVAL, "case %d (%s) accepted", (int)i,
                      bad[i].why);
        ck_assert_msg(err && *err, "case %d (%s): no reason", (int)i,
                      bad[i].why);
    }
}
END_TEST

START_TEST(test_record_cache_line_round_trip)
{
    w4a_hosting_t rec, back;
    const char *err;
    char *line;

    ck_assert_int_eq(parse(&rec, "shop.example.net", "shop.example.net",
                           "w4a100011", "100011", "100011",
                           "/datas/vol2/w4a100011/var/www/shop", "7.4",
                           "active", "rewrite,log=/datas/logs/w4a100011,"
                           "php_limit=12,req_limit=30,media=cdn.example.net",
                           &err),
                     APR_SUCCESS);
    ck_assert_uint_eq(rec.flags, W4A_FLAG_LOG | W4A_FLAG_REWRITE);
    ck_assert_uint_eq(rec.php_limit, 12);
    ck_assert_uint_eq(rec.req_limit, 30);
    line = w4a_record_format(&rec, pool);
    ck_assert_int_eq(w4a_record_parse_line(&back, line, &checks, &err, pool),
                     APR_SUCCESS);
    ck_assert_str_eq(back.matched, rec.matched);
    ck_assert_str_eq(back.domain, rec.domain);
    ck_assert_str_eq(back.hosting, rec.hosting);
    ck_assert_uint_eq(back.uid, rec.uid);
    ck_assert_uint_eq(back.gid, rec.gid);
    ck_assert_str_eq(back.docroot, rec.docroot);
    ck_assert_str_eq(back.php_version, "7.4");
    ck_assert_str_eq(back.log_dir, "/datas/logs/w4a100011");
    ck_assert_str_eq(back.media_host, "cdn.example.net");
    ck_assert_uint_eq(back.flags, W4A_FLAG_LOG | W4A_FLAG_REWRITE);
    ck_assert_uint_eq(back.php_limit, 12);
    ck_assert_uint_eq(back.req_limit, 30);
    ck_assert_str_eq(w4a_record_format(&back, pool), line);

    /* a cache line is checked like the database: a forged one is refused */
    ck_assert_int_eq(w4a_record_parse_line(&back,
                     "a.example a.example root 0 0 /datas/a 8.2 active -",
                     &checks, &err, pool), APR_EINVAL);
    ck_assert_int_eq(w4a_record_parse_line(&back,
                     "a.example a.example w4a1 1000 1000 /datas/a 8.2 active",
                     &checks, &err, pool), APR_EINVAL);
    ck_assert_int_eq(w4a_record_parse_line(&back,
                     "a.example a.example w4a1 1000 1000 /var/www 8.2 active -",
                     &checks, &err, pool), APR_EINVAL);
    ck_assert_int_eq(w4a_record_parse_line(&back, "", &checks, &err, pool),
                     APR_EINVAL);
}
END_TEST

/* Found by t/fuzz/fuzz_record: the default log directory comes from the
 * docroot; with a ',' in the docroot its cache line's "log=DIR" flag split
 * at the comma and the record's own cache line was refused. */
START_TEST(test_record_log_dir_from_docroot_with_comma_refused)
{
    w4a_hosting_t rec, back;
    const char *err;
    char *line;

    ck_assert_int_eq(parse(&rec, "a.example", "", "w4a1", "1000", "1000",
                           "/datas/a,b/var/www/a", "8.2", "active", "log",
                           &err), APR_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "log=DIR"));
    /* a comma in a docroot alone is fine, and round-trips */
    ck_assert_int_eq(parse(&rec, "a.example", "", "w4a1", "1000", "1000",
                           "/datas/a,b/var/www/a", "8.2", "active",
                           "log=/datas/logs/a", &err), APR_SUCCESS);
    line = w4a_record_format(&rec, pool);
    ck_assert_int_eq(w4a_record_parse_line(&back, line, &checks, &err, pool),
                     APR_SUCCESS);
    ck_assert_str_eq(back.docroot, "/datas/a,b/var/www/a");
    ck_assert_str_eq(back.log_dir, "/datas/logs/a");
}
END_TEST

Suite *record_suite(void)
{
    Suite *s = suite_create("record");
    TCase *tc = tcase_create("record");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_record_parse_fields);
    tcase_add_test(tc, test_record_parse_refuses_what_the_map_refuses);
    tcase_add_test(tc, test_record_cache_line_round_trip);
    tcase_add_test(tc, test_record_log_dir_from_docroot_with_comma_refused);
    suite_add_tcase(s, tc);
    return s;
}
