/* Request headers standing for our variables (w4a_envhdr). */
#include <string.h>

#include <apr_pools.h>
#include <apr_tables.h>

#include "check_w4a.h"
#include "w4a_envhdr.h"

static apr_pool_t *pool;

static void setup(void)
{
    apr_pool_create(&pool, NULL);
}

static void teardown(void)
{
    apr_pool_destroy(pool);
}

static const char *const names[] = {
    "GEOIP_COUNTRY_CODE", "BTW_FORBIDDEN_GEOIP", "MM_*", "_X"
};

static w4a_envhdr_set_t *set_of(void)
{
    w4a_envhdr_set_t *s = NULL;
    ck_assert_int_eq(w4a_envhdr_set_make(&s, names, 4, pool), APR_SUCCESS);
    return s;
}

START_TEST(test_envhdr_separators_and_case_are_alike)
{
    w4a_envhdr_set_t *s = set_of();
    const char *const same[] = {
        "GEOIP_COUNTRY_CODE", "geoip_country_code", "Geoip-Country-Code",
        "geoip.country.code", "GEOIP+COUNTRY~CODE", "GeoIP-Country_Code",
        NULL
    };
    int i;

    for (i = 0; same[i]; i++) {
        ck_assert_msg(w4a_envhdr_match(s, same[i]) == names[0], "%s",
                      same[i]);
    }
    ck_assert_ptr_eq(w4a_envhdr_match(s, "Btw-Forbidden-Geoip"), names[1]);
    ck_assert_ptr_eq(w4a_envhdr_match(s, "-X"), names[3]);
    ck_assert_ptr_eq(w4a_envhdr_match(s, ".x"), names[3]);
}
END_TEST

START_TEST(test_envhdr_other_names_do_not_match)
{
    w4a_envhdr_set_t *s = set_of();
    const char *const other[] = {
        "GEOIP_COUNTRY_COD", "GEOIP_COUNTRY_CODES", "XGEOIP_COUNTRY_CODE",
        "GEOIPCOUNTRYCODE", "Host", "Accept", "M", "MM", "Max-Forwards",
        "X", "", NULL
    };
    int i;

    for (i = 0; other[i]; i++) {
        ck_assert_msg(w4a_envhdr_match(s, other[i]) == NULL, "%s", other[i]);
    }
    ck_assert_ptr_null(w4a_envhdr_match(s, NULL));
}
END_TEST

START_TEST(test_envhdr_prefix_names)
{
    w4a_envhdr_set_t *s = set_of();
    ck_assert_ptr_eq(w4a_envhdr_match(s, "MM_COUNTRY_CODE"), names[2]);
    ck_assert_ptr_eq(w4a_envhdr_match(s, "mm-city"), names[2]);
    ck_assert_ptr_eq(w4a_envhdr_match(s, "Mm-"), names[2]);
    ck_assert_ptr_null(w4a_envhdr_match(s, "MMX"));
}
END_TEST

START_TEST(test_envhdr_bad_names_refused_and_sets_add_up)
{
    w4a_envhdr_set_t *s = NULL, *t = NULL;
    const char *const bad1[] = { "" }, *const bad2[] = { "A-B" },
                      *const bad3[] = { "*" }, *const more[] = { "W4A_*" };

    ck_assert_int_eq(w4a_envhdr_set_make(&s, bad1, 1, pool), APR_EINVAL);
    ck_assert_int_eq(w4a_envhdr_set_make(&s, bad2, 1, pool), APR_EINVAL);
    ck_assert_int_eq(w4a_envhdr_set_make(&s, bad3, 1, pool), APR_EINVAL);
    s = set_of();
    ck_assert_int_eq(w4a_envhdr_set_add(&t, s, more, 1, pool), APR_SUCCESS);
    ck_assert_ptr_eq(w4a_envhdr_match(t, "W4A-Hosting"), more[0]);
    ck_assert_ptr_eq(w4a_envhdr_match(t, "geoip.country.code"), names[0]);
    ck_assert_ptr_null(w4a_envhdr_match(s, "W4A-Hosting"));   /* unchanged */
}
END_TEST

static int seen;

static void removed(void *baton, const char *header, const char *name)
{
    seen++;
}

START_TEST(test_envhdr_strip_removes_every_entry_and_keeps_the_rest)
{
    w4a_envhdr_set_t *s = set_of();
    apr_table_t *t = apr_table_make(pool, 4);

    apr_table_add(t, "Host", "a.example");
    apr_table_add(t, "Geoip-Country-Code", "FR");
    apr_table_add(t, "Accept", "*/*");
    apr_table_add(t, "GEOIP_COUNTRY_CODE", "US");
    apr_table_add(t, "geoip-country-code", "DE");
    apr_table_add(t, "MM-Country-Code", "UA");
    apr_table_add(t, "btw.forbidden.geoip", "1");
    apr_table_add(t, "X-Other", "x");
    seen = 0;
    ck_assert_int_eq(w4a_envhdr_strip(s, t, removed, NULL), 5);
    ck_assert_int_eq(seen, 4);      /* one call per name (of any case) */
    ck_assert_int_eq(apr_table_elts(t)->nelts, 3);
    ck_assert_str_eq(apr_table_get(t, "Host"), "a.example");
    ck_assert_str_eq(apr_table_get(t, "Accept"), "*/*");
    ck_assert_str_eq(apr_table_get(t, "X-Other"), "x");
    ck_assert_int_eq(w4a_envhdr_strip(s, t, NULL, NULL), 0);
    apr_table_clear(t);
    ck_assert_int_eq(w4a_envhdr_strip(s, t, NULL, NULL), 0);
}
END_TEST

Suite *envhdr_suite(void)
{
    Suite *s = suite_create("envhdr");
    TCase *tc = tcase_create("envhdr");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_envhdr_separators_and_case_are_alike);
    tcase_add_test(tc, test_envhdr_other_names_do_not_match);
    tcase_add_test(tc, test_envhdr_prefix_names);
    tcase_add_test(tc, test_envhdr_bad_names_refused_and_sets_add_up);
    tcase_add_test(tc,
                   test_envhdr_strip_removes_every_entry_and_keeps_the_rest);
    suite_add_tcase(s, tc);
    return s;
}
