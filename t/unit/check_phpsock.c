/* The pool socket cache of mod_w4a_php (modules/php/php_sock.c). */
#include <stdio.h>
#include <string.h>

#include <apr_pools.h>
#include <apr_strings.h>

#include "check_w4a.h"
#include "php_sock.h"
#include "w4a_util.h"

static apr_pool_t *pool;

static void setup(void)
{
    apr_pool_create(&pool, NULL);
}

static void teardown(void)
{
    apr_pool_destroy(pool);
}

static const char *handler_of(const char *sock)
{
    return apr_pstrcat(pool, "proxy:unix:", sock, "|fcgi://localhost", NULL);
}

START_TEST(test_phpsock_expand_every_escape)
{
    apr_size_t n;
    ck_assert_str_eq(php_sock_expand(pool, "/run/w4a-php/%v/%h.sock",
                                     "w4a100010", "8.2", &n),
                     "/run/w4a-php/8.2/w4a100010.sock");
    ck_assert_uint_eq(n, strlen("/run/w4a-php/8.2/w4a100010.sock"));
    ck_assert_str_eq(php_sock_expand(pool, "/s/%h", "h", "7.4", NULL), "/s/h");
    ck_assert_str_eq(php_sock_expand(pool, "/s/%%h-%h%%%v%%", "w4a1", "8.3",
                                     &n), "/s/%h-w4a1%8.3%");
    ck_assert_uint_eq(n, strlen("/s/%h-w4a1%8.3%"));
    ck_assert_str_eq(php_sock_expand(pool, "%h%h%v", "ab", "5", NULL),
                     "abab5");
}
END_TEST

START_TEST(test_phpsock_hit_gives_the_same_strings_in_fresh_copies)
{
    apr_uint32_t hh;
    php_sock_cache_t *c;
    php_sock_stats_t st;
    const char *pat = "/run/%v/%h.sock";
    const char *s1, *h1, *s2, *h2;

    ck_assert_int_eq(php_sock_cache_create(&c, 64), APR_SUCCESS);
    php_sock_get(c, 1, pat, "w4a100010", "8.2", pool, &s1, &h1, &hh);
    ck_assert_uint_eq(hh, w4a_fnv1a(s1));
    php_sock_get(c, 1, pat, "w4a100010", "8.2", pool, &s2, &h2, &hh);
    ck_assert_uint_eq(hh, w4a_fnv1a(s2));
    ck_assert_str_eq(s1, "/run/8.2/w4a100010.sock");
    ck_assert_str_eq(h1, handler_of(s1));
    ck_assert_str_eq(s2, s1);
    ck_assert_str_eq(h2, h1);
    /* the request recognises its handler by address: never shared */
    ck_assert_ptr_ne(h1, h2);
    ck_assert_ptr_ne(s1, s2);
    php_sock_cache_stats(c, &st);
    ck_assert_uint_eq(st.misses, 1);
    ck_assert_uint_eq(st.hits, 1);
    ck_assert_uint_eq(st.entries, 1);
    php_sock_cache_destroy(c);
}
END_TEST

/* One slot: every key lands on the same one, as two hostings whose hashes
 * collide do; each must still get its own socket. */
START_TEST(test_phpsock_colliding_keys_never_get_each_others_socket)
{
    apr_uint32_t hh;
    static const char *const keys[][2] = {
        { "w4a100010", "8.2" }, { "w4a100011", "8.2" },
        { "w4a100010", "8.3" }, { "w4a10001", "08.2" },
        { "w4a1000108", ".2" }, { "w4a100010", "8.2" },
        { "w4a10001", "0" },   { "w4a100010", "" },
    };
    php_sock_cache_t *c;
    php_sock_stats_t st;
    const char *pat = "/run/%v/%h.sock";
    unsigned i, round;

    ck_assert_int_eq(php_sock_cache_create(&c, 1), APR_SUCCESS);
    for (round = 0; round < 3; round++) {
        for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
            const char *s, *h;
            const char *want = apr_psprintf(pool, "/run/%s/%s.sock",
                                            keys[i][1], keys[i][0]);
            php_sock_get(c, 1, pat, keys[i][0], keys[i][1], pool, &s, &h, &hh);
            ck_assert_uint_eq(hh, w4a_fnv1a(s));
            ck_assert_str_eq(s, want);
            ck_assert_str_eq(h, handler_of(want));
            /* the same key twice in a row: from the entry */
            php_sock_get(c, 1, pat, keys[i][0], keys[i][1], pool, &s, &h, &hh);
            ck_assert_uint_eq(hh, w4a_fnv1a(s));
            ck_assert_str_eq(s, want);
            ck_assert_str_eq(h, handler_of(want));
        }
    }
    php_sock_cache_stats(c, &st);
    ck_assert_uint_eq(st.entries, 1);          /* bounded by its slots */
    ck_assert_uint_eq(st.hits, 3 * 8);
    ck_assert_uint_eq(st.misses, 3 * 8);
    php_sock_cache_destroy(c);
}
END_TEST

/* Two hostings whose hashes are equal in full (found by search): each its
 * own socket, whichever came first. */
START_TEST(test_phpsock_equal_hashes_compared_in_full)
{
    apr_uint32_t hh;
    php_sock_cache_t *c;
    php_sock_stats_t st;
    const char *pat = "/run/%v/%h.sock", *s, *h;
    int i;

    ck_assert_int_eq(php_sock_cache_create(&c, 64), APR_SUCCESS);
    for (i = 0; i < 4; i++) {
        php_sock_get(c, 1, pat, "w4agwzxx", "8.2", pool, &s, &h, &hh);
        ck_assert_uint_eq(hh, w4a_fnv1a(s));
        ck_assert_str_eq(s, "/run/8.2/w4agwzxx.sock");
        php_sock_get(c, 1, pat, "w4a16cdx", "8.2", pool, &s, &h, &hh);
        ck_assert_uint_eq(hh, w4a_fnv1a(s));
        ck_assert_str_eq(s, "/run/8.2/w4a16cdx.sock");
        ck_assert_str_eq(h, handler_of(s));
    }
    php_sock_cache_stats(c, &st);
    ck_assert_uint_eq(st.misses, 8);
    ck_assert_uint_eq(st.entries, 1);
    /* the same hosting, versions of equal hashes */
    for (i = 0; i < 4; i++) {
        php_sock_get(c, 1, pat, "w4a100010", "i.xz1", pool, &s, &h, &hh);
        ck_assert_uint_eq(hh, w4a_fnv1a(s));
        ck_assert_str_eq(s, "/run/i.xz1/w4a100010.sock");
        php_sock_get(c, 1, pat, "w4a100010", "u9de1", pool, &s, &h, &hh);
        ck_assert_uint_eq(hh, w4a_fnv1a(s));
        ck_assert_str_eq(s, "/run/u9de1/w4a100010.sock");
    }
    php_sock_cache_stats(c, &st);
    ck_assert_uint_eq(st.misses, 16);       /* one slot each: they take turns */
    ck_assert_uint_eq(st.entries, 2);
    php_sock_cache_destroy(c);
}
END_TEST

/* Many hostings through 64 slots: always the right socket, never more
 * entries than slots. */
START_TEST(test_phpsock_many_hostings_bounded_and_right)
{
    apr_uint32_t hh;
    php_sock_cache_t *c;
    php_sock_stats_t st;
    const char *pat = "/run/w4a-php/%v/%h.sock";
    int i, round;

    ck_assert_int_eq(php_sock_cache_create(&c, 64), APR_SUCCESS);
    for (round = 0; round < 2; round++) {
        for (i = 0; i < 5000; i++) {
            const char *s, *h;
            char name[32];
            snprintf(name, sizeof(name), "w4a%d", 100000 + (i * 7919) % 5000);
            php_sock_get(c, 7, pat, name, i % 3 ? "8.2" : "7.4", pool,
                         &s, &h, &hh);
            ck_assert_uint_eq(hh, w4a_fnv1a(s));
            ck_assert_str_eq(s, apr_psprintf(pool, "/run/w4a-php/%s/%s.sock",
                                             i % 3 ? "8.2" : "7.4", name));
            ck_assert_str_eq(h, handler_of(s));
        }
    }
    php_sock_cache_stats(c, &st);
    ck_assert_uint_le(st.entries, 64);
    ck_assert_uint_eq(st.slots, 64);
    ck_assert_uint_eq(st.hits + st.misses, 10000);
    ck_assert_uint_ge(st.replaced, 5000 - 64);
    php_sock_cache_destroy(c);
}
END_TEST

/* The pattern is known by its address within a generation; another
 * generation may hold another pattern at the same address (a restart
 * freed the old configuration): never the old socket. */
START_TEST(test_phpsock_new_generation_never_gets_an_old_socket)
{
    apr_uint32_t hh;
    php_sock_cache_t *c;
    php_sock_stats_t st;
    char pat[64];
    const char *s, *h;

    ck_assert_int_eq(php_sock_cache_create(&c, 64), APR_SUCCESS);
    strcpy(pat, "/old/%h.sock");
    php_sock_get(c, 1, pat, "w4a100010", "8.2", pool, &s, &h, &hh);
    ck_assert_uint_eq(hh, w4a_fnv1a(s));
    ck_assert_str_eq(s, "/old/w4a100010.sock");
    strcpy(pat, "/new/%v/%h.sock");
    php_sock_get(c, 2, pat, "w4a100010", "8.2", pool, &s, &h, &hh);
    ck_assert_uint_eq(hh, w4a_fnv1a(s));
    ck_assert_str_eq(s, "/new/8.2/w4a100010.sock");
    ck_assert_str_eq(h, handler_of(s));
    php_sock_cache_stats(c, &st);
    ck_assert_uint_eq(st.flushes, 1);
    ck_assert_uint_eq(st.misses, 2);
    ck_assert_uint_eq(st.entries, 1);
    php_sock_cache_destroy(c);
}
END_TEST

/* Two server configurations with their own patterns: their own sockets,
 * even for the same hosting and version. */
START_TEST(test_phpsock_each_pattern_its_own_entry)
{
    apr_uint32_t hh;
    php_sock_cache_t *c;
    const char *pa = "/a/%h.sock", *pb = "/b/%h.sock", *s, *h;
    int i;

    ck_assert_int_eq(php_sock_cache_create(&c, 64), APR_SUCCESS);
    for (i = 0; i < 3; i++) {
        php_sock_get(c, 1, pa, "w4a100010", "8.2", pool, &s, &h, &hh);
        ck_assert_uint_eq(hh, w4a_fnv1a(s));
        ck_assert_str_eq(s, "/a/w4a100010.sock");
        php_sock_get(c, 1, pb, "w4a100010", "8.2", pool, &s, &h, &hh);
        ck_assert_uint_eq(hh, w4a_fnv1a(s));
        ck_assert_str_eq(s, "/b/w4a100010.sock");
    }
    php_sock_cache_destroy(c);
}
END_TEST

START_TEST(test_phpsock_without_cache_and_bad_sizes)
{
    apr_uint32_t hh;
    php_sock_cache_t *c = NULL;
    const char *s, *h;

    php_sock_get(NULL, 1, "/x/%h-%v", "w4a1", "8.1", pool, &s, &h, &hh);
    ck_assert_uint_eq(hh, w4a_fnv1a(s));
    ck_assert_str_eq(s, "/x/w4a1-8.1");
    ck_assert_str_eq(h, "proxy:unix:/x/w4a1-8.1|fcgi://localhost");
    ck_assert_int_eq(php_sock_cache_create(&c, 0), APR_EINVAL);
    ck_assert_int_eq(php_sock_cache_create(&c, 3), APR_EINVAL);
    ck_assert_int_eq(php_sock_cache_create(&c, 1u << 17), APR_EINVAL);
    php_sock_cache_destroy(NULL);
}
END_TEST

Suite *phpsock_suite(void)
{
    Suite *s = suite_create("phpsock");
    TCase *tc = tcase_create("cache");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_phpsock_expand_every_escape);
    tcase_add_test(tc, test_phpsock_hit_gives_the_same_strings_in_fresh_copies);
    tcase_add_test(tc, test_phpsock_colliding_keys_never_get_each_others_socket);
    tcase_add_test(tc, test_phpsock_equal_hashes_compared_in_full);
    tcase_add_test(tc, test_phpsock_many_hostings_bounded_and_right);
    tcase_add_test(tc, test_phpsock_new_generation_never_gets_an_old_socket);
    tcase_add_test(tc, test_phpsock_each_pattern_its_own_entry);
    tcase_add_test(tc, test_phpsock_without_cache_and_bad_sizes);
    suite_add_tcase(s, tc);
    return s;
}
