/* Sealed cache values and key files (w4a_mac). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_pools.h>
#include <apr_strings.h>

#include "check_w4a.h"
#include "w4a_mac.h"

static apr_pool_t *pool;
static w4a_mac_key_t *key, *other;
static char dir[64];

static void setup(void)
{
    apr_pool_create(&pool, NULL);
    ck_assert_int_eq(w4a_mac_key_make(&key, "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk",
                                      32, pool), APR_SUCCESS);
    ck_assert_int_eq(w4a_mac_key_make(&other, "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkl",
                                      32, pool), APR_SUCCESS);
    strcpy(dir, "/tmp/w4a-check-mac-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
    apr_pool_destroy(pool);
}

START_TEST(test_mac_seal_has_the_documented_form)
{
    /* the same bytes as Python's hmac.new(b"k" * 32, b"w4a-mc-1\0"
     * b"w4a:0:b.example\0" b"1700000000\0" b"-", sha256): the tests and
     * other tools may compute seals on their own */
    ck_assert_str_eq(w4a_mac_seal(key, "w4a:0:b.example", "-", 1700000000,
                                  pool),
                     "w4a1 1700000000 59d2dc9fc5b586fa41a163064fc403e95e92b381"
                     "3eaa421c4df3d996becb195f -");
    ck_assert(w4a_mac_looks_sealed(w4a_mac_seal(key, "n", "v", 0, pool)));
    ck_assert(!w4a_mac_looks_sealed("12"));
    ck_assert(!w4a_mac_looks_sealed("-"));
}
END_TEST

START_TEST(test_mac_open_gives_the_value_back)
{
    const char *v = NULL;
    const char *s = w4a_mac_seal(key, "w4a:3:a.example", "a b c", 2000, pool);

    ck_assert_int_eq(w4a_mac_open(key, "w4a:3:a.example", s, 1999, &v),
                     APR_SUCCESS);
    ck_assert_str_eq(v, "a b c");
    s = w4a_mac_seal(key, "w4a:gen", "17", 0, pool);     /* never expires */
    ck_assert_int_eq(w4a_mac_open(key, "w4a:gen", s, APR_INT64_MAX, &v),
                     APR_SUCCESS);
    ck_assert_str_eq(v, "17");
    s = w4a_mac_seal(key, "w4a:0:x", "", 0, pool);       /* empty value */
    ck_assert_int_eq(w4a_mac_open(key, "w4a:0:x", s, 5, &v), APR_SUCCESS);
    ck_assert_str_eq(v, "");
}
END_TEST

START_TEST(test_mac_refuses_another_name_key_value_or_expiry)
{
    const char *v = "untouched";
    const char *s = w4a_mac_seal(key, "w4a:0:a.example", "rec", 2000, pool);
    char *t;

    /* a.example's record copied into b.example's key */
    ck_assert_int_eq(w4a_mac_open(key, "w4a:0:b.example", s, 1, &v),
                     W4A_MAC_EFORGED);
    /* the same name in another generation */
    ck_assert_int_eq(w4a_mac_open(key, "w4a:1:a.example", s, 1, &v),
                     W4A_MAC_EFORGED);
    /* sealed with another key */
    ck_assert_int_eq(w4a_mac_open(other, "w4a:0:a.example", s, 1, &v),
                     W4A_MAC_EFORGED);
    /* the value changed */
    t = apr_pstrcat(pool, s, "x", NULL);
    ck_assert_int_eq(w4a_mac_open(key, "w4a:0:a.example", t, 1, &v),
                     W4A_MAC_EFORGED);
    /* the expiry pushed back */
    t = apr_pstrdup(pool, s);
    t[5] = '9';
    ck_assert_int_eq(w4a_mac_open(key, "w4a:0:a.example", t, 1, &v),
                     W4A_MAC_EFORGED);
    /* the expiry made "never" */
    t = apr_pstrcat(pool, "w4a1 0 ", s + strlen("w4a1 2000 "), NULL);
    ck_assert_int_eq(w4a_mac_open(key, "w4a:0:a.example", t, 1, &v),
                     W4A_MAC_EFORGED);
    /* upper-case hex, a leading zero: not the form we write */
    t = apr_pstrdup(pool, s);
    t[10] = t[10] >= 'a' ? (char)(t[10] - 32) : t[10];
    if (t[10] != s[10]) {
        ck_assert_int_eq(w4a_mac_open(key, "w4a:0:a.example", t, 1, &v),
                         W4A_MAC_EFORGED);
    }
    t = apr_pstrcat(pool, "w4a1 02000 ", s + strlen("w4a1 2000 "), NULL);
    ck_assert_int_eq(w4a_mac_open(key, "w4a:0:a.example", t, 1, &v),
                     W4A_MAC_EFORGED);
    ck_assert_str_eq(v, "untouched");
}
END_TEST

START_TEST(test_mac_refuses_what_is_not_sealed)
{
    static const char *const bad[] = {
        "", "-", "12", "a.example a.example w4a100010 100010 100010 /d 8.2 "
        "active -", "w4a1 ", "w4a1 5 ", "w4a1 5 abc -",
        "w4a1 x 0000000000000000000000000000000000000000000000000000000000000000 -",
        "w4a1 5 0000000000000000000000000000000000000000000000000000000000000000 -",
        "w4a1 5 00000000000000000000000000000000000000000000000000000000000000000 -",
        "w4a1 99999999999999999999 0000000000000000000000000000000000000000000000000000000000000000 -",
        NULL
    };
    int i;
    const char *v = "untouched";

    for (i = 0; bad[i]; i++) {
        ck_assert_msg(w4a_mac_open(key, "w4a:0:a", bad[i], 1, &v)
                      == W4A_MAC_EFORGED, "'%s' accepted", bad[i]);
    }
    ck_assert_int_eq(w4a_mac_open(key, "w4a:0:a", NULL, 1, &v),
                     W4A_MAC_EFORGED);
    ck_assert_str_eq(v, "untouched");
}
END_TEST

START_TEST(test_mac_refuses_an_expired_value)
{
    const char *v = "untouched";
    const char *s = w4a_mac_seal(key, "w4a:0:b.example", "old", 1000, pool);

    ck_assert_int_eq(w4a_mac_open(key, "w4a:0:b.example", s, 1000, &v),
                     W4A_MAC_EEXPIRED);
    ck_assert_int_eq(w4a_mac_open(key, "w4a:0:b.example", s, 5000, &v),
                     W4A_MAC_EEXPIRED);
    ck_assert_str_eq(v, "untouched");
    ck_assert_int_eq(w4a_mac_open(key, "w4a:0:b.example", s, 999, &v),
                     APR_SUCCESS);
}
END_TEST

static const char *write_key(const char *name, const char *text, mode_t mode)
{
    const char *path = apr_pstrcat(pool, dir, "/", name, NULL);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    ck_assert_int_eq(chmod(path, mode), 0);
    return path;
}

START_TEST(test_mac_key_file_modes_size_and_type)
{
    static const char k32[] = "0123456789abcdef0123456789abcdef";
    w4a_mac_key_t *k = NULL;
    const char *err = NULL, *v = NULL;

    /* 0640 and 0600 are fine; a trailing newline is not part of the key */
    ck_assert_int_eq(w4a_mac_key_load(&k, write_key("a", "0123456789abcdef"
                     "0123456789abcdef\n", 0640), &err, pool), APR_SUCCESS);
    ck_assert_int_eq(w4a_mac_key_make(&key, k32, 32, pool), APR_SUCCESS);
    ck_assert_int_eq(w4a_mac_open(k, "n", w4a_mac_seal(key, "n", "v", 0, pool),
                                  1, &v), APR_SUCCESS);
    ck_assert_int_eq(w4a_mac_key_load(&k, write_key("b", k32, 0600), &err,
                                      pool), APR_SUCCESS);
    /* readable by others, writable by the group or by others */
    err = NULL;
    ck_assert_int_eq(w4a_mac_key_load(&k, write_key("c", k32, 0644), &err,
                                      pool), APR_EACCES);
    ck_assert_ptr_nonnull(strstr(err, "mode 0644"));
    ck_assert_int_eq(w4a_mac_key_load(&k, write_key("d", k32, 0660), &err,
                                      pool), APR_EACCES);
    ck_assert_int_eq(w4a_mac_key_load(&k, write_key("e", k32, 0602), &err,
                                      pool), APR_EACCES);
    ck_assert_int_eq(w4a_mac_key_load(&k, write_key("f", k32, 0601), &err,
                                      pool), APR_EACCES);
    /* too short (31 bytes, newline not counted), too long, a directory */
    err = NULL;
    ck_assert_int_eq(w4a_mac_key_load(&k, write_key("g", "0123456789abcdef"
                     "0123456789abcde\n", 0600), &err, pool), APR_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "31 bytes"));
    {
        char big[W4A_MAC_KEY_MAX + 2];
        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        ck_assert_int_eq(w4a_mac_key_load(&k, write_key("h", big, 0600), &err,
                                          pool), APR_EINVAL);
    }
    ck_assert_int_eq(w4a_mac_key_load(&k, dir, &err, pool), APR_EINVAL);
    ck_assert_int_ne(w4a_mac_key_load(&k, apr_pstrcat(pool, dir, "/none",
                                                      NULL), &err, pool),
                     APR_SUCCESS);
    ck_assert_int_eq(w4a_mac_key_make(&k, k32, 31, pool), APR_EINVAL);
}
END_TEST

Suite *mac_suite(void)
{
    Suite *s = suite_create("mac");
    TCase *tc = tcase_create("mac");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_mac_seal_has_the_documented_form);
    tcase_add_test(tc, test_mac_open_gives_the_value_back);
    tcase_add_test(tc, test_mac_refuses_another_name_key_value_or_expiry);
    tcase_add_test(tc, test_mac_refuses_what_is_not_sealed);
    tcase_add_test(tc, test_mac_refuses_an_expired_value);
    tcase_add_test(tc, test_mac_key_file_modes_size_and_type);
    suite_add_tcase(s, tc);
    return s;
}
