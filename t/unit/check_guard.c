/* The node's client table of mod_w4a_guard (guard_table.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <apr_pools.h>

#include "check_w4a.h"
#include "guard_table.h"
#include "w4a_inflight.h"
#include <apr_network_io.h>

#include "w4a_util.h"

static apr_pool_t *pool;
static guard_table_t *t;
static const guard_bucket_t bucket = { 1000, 3 };        /* 1/s, burst 3 */
static const guard_banpol_t pol = { 10000, 40000, 600000 };

static void setup(void)
{
    apr_pool_create(&pool, NULL);
    t = guard_table_init(calloc(1, guard_table_size(64)), 64);
}

static void teardown(void)
{
    free(t);
    apr_pool_destroy(pool);
}

static guard_key_t key(const char *text)
{
    guard_key_t k;
    ck_assert_int_eq(guard_key_parse(&k, text, 64), APR_SUCCESS);
    return k;
}

static int never(void *b) { (void)b; return 0; }
static int always(void *b) { (void)b; return 1; }

START_TEST(test_guard_ipv6_clients_are_their_prefix_ipv4_mapped_is_ipv4)
{
    guard_key_t a = key("2001:db8:1:2:aaaa::1"), b = key("2001:db8:1:2::ffff");
    guard_key_t m = key("::ffff:192.0.2.7"), v4 = key("192.0.2.7");
    ck_assert_mem_eq(&a, &b, sizeof(a));
    ck_assert_str_eq(guard_key_text(&a, pool), "2001:db8:1:2::/64");
    ck_assert_mem_eq(&m, &v4, sizeof(m));
    ck_assert_str_eq(guard_key_text(&v4, pool), "192.0.2.7");
    ck_assert_int_eq(guard_key_parse(&a, "not-an-address", 64), APR_EINVAL);
}
END_TEST

START_TEST(test_guard_burst_then_ban_then_refused_without_charge)
{
    guard_key_t k = key("192.0.2.1");
    guard_verdict_t v = { 0 };
    guard_slot_t s;
    int i;

    for (i = 0; i < 3; i++) {
        guard_charge(t, &k, &bucket, 1, 1, 1, 1000, never, NULL, &k,
                     GUARD_R_RATE, NULL, &pol, &v);
        ck_assert_int_eq(v.banned, 0);
    }
    guard_charge(t, &k, &bucket, 1, 1, 1, 1000, never, NULL, &k,
                 GUARD_R_RATE, NULL, &pol, &v);
    ck_assert_int_eq(v.new_ban, 1);
    ck_assert_int_eq(v.until_ms, 11000);
    guard_charge(t, &k, &bucket, 1, 1, 1, 2000, never, NULL, &k,
                 GUARD_R_RATE, NULL, &pol, &v);
    ck_assert_int_eq(v.banned, 1);
    ck_assert_int_eq(v.new_ban, 0);
    ck_assert_int_eq(guard_lookup(t, &k, &s), 1);
    ck_assert_uint_eq(s.requests, 4);
    ck_assert_uint_eq(s.refused, 1);
}
END_TEST

START_TEST(test_guard_ban_doubles_up_to_max_and_is_forgotten)
{
    guard_key_t k = key("192.0.2.2");
    guard_verdict_t v = { 0 };
    apr_int64_t now = 1000, want[] = { 10000, 20000, 40000, 40000 };
    int i, n;

    for (i = 0; i < 4; i++) {
        for (n = 0; n < 10 && !v.new_ban; n++) {
            guard_charge(t, &k, &bucket, 1, 1, 1, now, never, NULL, &k,
                         GUARD_R_RATE, NULL, &pol, &v);
        }
        ck_assert_int_eq(v.until_ms - v.since_ms, want[i]);
        now = v.until_ms;
        memset(&v, 0, sizeof(v));
    }
    /* quiet for longer than forget: a first ban again */
    now += pol.forget_ms + 1;
    for (n = 0; n < 10 && !v.new_ban; n++) {
        guard_charge(t, &k, &bucket, 1, 1, 1, now, never, NULL, &k,
                     GUARD_R_RATE, NULL, &pol, &v);
    }
    ck_assert_int_eq(v.until_ms - v.since_ms, 10000);
}
END_TEST

START_TEST(test_guard_exempt_client_counted_never_banned)
{
    guard_key_t k = key("192.0.2.3");
    guard_verdict_t v = { 0 };
    int i, over = 0;

    for (i = 0; i < 50; i++) {
        guard_charge(t, &k, &bucket, 1, 1, 1, 1000, always, NULL, &k,
                     GUARD_R_RATE, NULL, &pol, &v);
        ck_assert_int_eq(v.banned, 0);
        over += v.exempted;
    }
    ck_assert_int_eq(over, 47);
}
END_TEST

START_TEST(test_guard_fleet_ban_and_removal)
{
    guard_key_t k = key("192.0.2.4");
    guard_verdict_t v = { 0 };

    ck_assert_int_eq(guard_ban_set(t, &k, 1000, 9000, GUARD_R_FLEET, "h1",
                                   2000), 1);
    ck_assert_int_eq(guard_ban_set(t, &k, 1000, 9000, GUARD_R_FLEET, "h1",
                                   2000), 0);     /* the same: no change */
    ck_assert_int_eq(guard_check(t, &k, 3000, 0, &v), 1);
    ck_assert_int_eq(guard_ban_remove(t, &k, 3500, 3500), 1);
    ck_assert_int_eq(guard_check(t, &k, 4000, 0, &v), 0);
    /* the old ban read again from the list does not come back */
    ck_assert_int_eq(guard_ban_set(t, &k, 1000, 9000, GUARD_R_FLEET, "h1",
                                   4000), 0);
    ck_assert_int_eq(guard_check(t, &k, 4000, 0, &v), 0);
    /* a newer one does */
    ck_assert_int_eq(guard_ban_set(t, &k, 5000, 9000, GUARD_R_ADMIN, "-",
                                   5000), 1);
    ck_assert_int_eq(guard_check(t, &k, 5000, 0, &v), 1);
}
END_TEST

START_TEST(test_guard_full_table_evicts_quiet_clients_keeps_bans)
{
    guard_verdict_t v = { 0 };
    guard_key_t banned = key("198.51.100.1");
    char buf[64];
    int i;

    ck_assert_int_eq(guard_ban_set(t, &banned, 1, 1000000, GUARD_R_FLEET,
                                   "", 1), 1);
    /* 64 slots: a flood of 5000 fresh addresses */
    for (i = 0; i < 5000; i++) {
        guard_key_t k;
        snprintf(buf, sizeof(buf), "2001:db8:%x:%x::1", i >> 8, i & 0xff);
        k = key(buf);
        guard_charge(t, &k, &bucket, 1, 1, 1, 1000 + i, never, NULL, &k,
                     GUARD_R_RATE, NULL, &pol, &v);
    }
    ck_assert_uint_gt(t->counters[GC_EVICTED], 4000);
    ck_assert_int_eq(guard_check(t, &banned, 10000, 0, &v), 1);
}
END_TEST

/* The old table's bucket of a name (FNV-1a folded), public. */
static apr_uint32_t old_bucket(const char *name, apr_uint32_t buckets)
{
    apr_uint32_t h = 2166136261u;
    for (; *name; name++) {
        h = (h ^ (unsigned char)*name) * 16777619u;
    }
    h ^= h >> 15;
    return h & (buckets - 1);
}

START_TEST(test_inflight_names_of_one_hash_bucket_do_not_share_a_limit)
{
    w4a_inflight_t *it;
    apr_size_t size;
    apr_uint32_t n, refused, want = old_bucket("w4a100011", 1024);
    char other[32];
    int i;

    /* 4 rows, 16 KB of counters: 1024 buckets */
    ck_assert_int_eq(w4a_inflight_create(&it, 4, 16384, &size, pool),
                     APR_SUCCESS);
    ck_assert_int_eq(w4a_inflight_claim(it, 4242, pool), APR_SUCCESS);
    for (i = 100012; ; i++) {
        snprintf(other, sizeof(other), "w4a%d", i);
        if (old_bucket(other, 1024) == want) {
            break;
        }
    }
    /* A at its limit of 2 ... */
    ck_assert_int_eq(w4a_inflight_enter(it, other, 2, &n, pool), 1);
    ck_assert_int_eq(w4a_inflight_enter(it, other, 2, &n, pool), 1);
    ck_assert_int_eq(w4a_inflight_enter(it, other, 2, &n, pool), 0);
    /* ... B, of the same hash, has all of its own */
    ck_assert_int_eq(w4a_inflight_enter(it, "w4a100011", 2, &n, pool), 1);
    ck_assert_uint_eq(n, 1);
    w4a_inflight_name(it, "w4a100011", &n, &refused);
    ck_assert_uint_eq(n, 1);
    w4a_inflight_name(it, other, &n, &refused);
    ck_assert_uint_eq(n, 2);
    /* a look at a name never seen claims nothing and says 0 */
    w4a_inflight_name(it, "w4a999999", &n, &refused);
    ck_assert_uint_eq(n, 0);
}
END_TEST

START_TEST(test_inflight_names_share_a_bucket_only_when_every_one_is_taken)
{
    w4a_inflight_t *it;
    apr_size_t size;
    apr_uint32_t n, refused;
    char name[32];
    int i, admitted;

    ck_assert_int_eq(w4a_inflight_create(&it, 4, 16384, &size, pool),
                     APR_SUCCESS);
    ck_assert_int_eq(w4a_inflight_claim(it, 4242, pool), APR_SUCCESS);
    /* 4096 names for 1024 buckets, one request each, given back: every
     * bucket claimed by one of them */
    for (i = 0; i < 4096; i++) {
        apr_pool_t *rp;
        apr_pool_create(&rp, pool);
        snprintf(name, sizeof(name), "w4a%d", 200000 + i);
        ck_assert_int_ne(w4a_inflight_enter(it, name, 1, &n, rp), -1);
        apr_pool_destroy(rp);
    }
    /* each at its limit of 1 at once: one admitted per bucket, the names
     * past the table's size share */
    for (i = 0, admitted = 0; i < 4096; i++) {
        snprintf(name, sizeof(name), "w4a%d", 200000 + i);
        admitted += w4a_inflight_enter(it, name, 1, &n, pool);
    }
    ck_assert_int_eq(admitted, 1024);
    /* another name finds no bucket of its own: it shares its hash's,
     * held at 1 -- stricter, never looser */
    ck_assert_int_eq(w4a_inflight_enter(it, "w4a300000", 1, &n, pool), 0);
    ck_assert_uint_ge(n, 2);
    w4a_inflight_refused(it, "w4a300000", 5, &refused);
    ck_assert_uint_eq(refused, 1);
}
END_TEST

static const unsigned char fixed_key[16] = "w4a-check-guard";

START_TEST(test_inflight_a_client_holds_its_share_others_keep_theirs)
{
    w4a_inflight_t *it;
    apr_size_t size;
    apr_uint32_t n, refused;
    const unsigned char c1[4] = { 192, 0, 2, 1 }, c2[4] = { 192, 0, 2, 2 };
    apr_pool_t *rp;
    int i;

    ck_assert_int_eq(w4a_inflight_create(&it, 4, 16384, &size, pool),
                     APR_SUCCESS);
    /* a fixed key: with the random one, c1 and c2 (or c1's pairs of the
     * two hostings) fell in one of the 1024 share buckets in about one
     * run in 350, and shared a share: the test failed at random */
    w4a_inflight_set_key(it, fixed_key);
    ck_assert_int_eq(w4a_inflight_claim(it, 4242, pool), APR_SUCCESS);
    apr_pool_create(&rp, pool);
    /* limit 4, share 2: c1 gets 2, its third is refused for its share */
    for (i = 0; i < 2; i++) {
        ck_assert_int_eq(w4a_inflight_enter_client(it, "w4a100010", 4, c1, 4,
                                                   2, &n, rp),
                         W4A_INFLIGHT_ADMITTED);
    }
    ck_assert_int_eq(w4a_inflight_enter_client(it, "w4a100010", 4, c1, 4, 2,
                                               &n, rp), W4A_INFLIGHT_SHARE);
    /* the refusal held nothing: 2 in flight; c2 still gets its 2 */
    w4a_inflight_name(it, "w4a100010", &n, &refused);
    ck_assert_uint_eq(n, 2);
    for (i = 0; i < 2; i++) {
        ck_assert_int_eq(w4a_inflight_enter_client(it, "w4a100010", 4, c2, 4,
                                                   2, &n, rp),
                         W4A_INFLIGHT_ADMITTED);
    }
    /* the hosting is full: anyone is refused for the limit itself */
    ck_assert_int_eq(w4a_inflight_enter_client(it, "w4a100010", 4, c2, 4, 2,
                                               &n, pool), W4A_INFLIGHT_FULL);
    /* c1's share is per hosting: another hosting admits it */
    ck_assert_int_eq(w4a_inflight_enter_client(it, "w4a100011", 4, c1, 4, 2,
                                               &n, pool),
                     W4A_INFLIGHT_ADMITTED);
    /* the places come back with the request pool */
    apr_pool_destroy(rp);
    w4a_inflight_name(it, "w4a100010", &n, &refused);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(w4a_inflight_enter_client(it, "w4a100010", 4, c1, 4, 2,
                                               &n, pool),
                     W4A_INFLIGHT_ADMITTED);
}
END_TEST

START_TEST(test_inflight_share_is_a_percent_of_the_limit_at_least_one)
{
    ck_assert_uint_eq(w4a_inflight_share(4, 50), 2);
    ck_assert_uint_eq(w4a_inflight_share(3, 50), 1);
    ck_assert_uint_eq(w4a_inflight_share(3, 10), 1);      /* at least one */
    ck_assert_uint_eq(w4a_inflight_share(37, 50), 18);
    ck_assert_uint_eq(w4a_inflight_share(4, 100), 0);     /* the limit */
    ck_assert_uint_eq(w4a_inflight_share(4, 0), 0);       /* off */
}
END_TEST

START_TEST(test_inflight_a_dead_process_leaves_no_share_behind)
{
    w4a_inflight_t *it;
    apr_size_t size;
    apr_uint32_t n, refused;
    const unsigned char c1[4] = { 192, 0, 2, 1 };
    w4a_inflight_stats_t st;

    ck_assert_int_eq(w4a_inflight_create(&it, 4, 16384, &size, pool),
                     APR_SUCCESS);
    w4a_inflight_set_key(it, fixed_key);
    ck_assert_int_eq(w4a_inflight_claim(it, 4242, pool), APR_SUCCESS);
    /* the process of pid 4242 holds c1's share of 1 and dies with it */
    ck_assert_int_eq(w4a_inflight_enter_client(it, "w4a100010", 4, c1, 4, 1,
                                               &n, pool),
                     W4A_INFLIGHT_ADMITTED);
    ck_assert_int_eq(w4a_inflight_enter_client(it, "w4a100010", 4, c1, 4, 1,
                                               &n, pool), W4A_INFLIGHT_SHARE);
    w4a_inflight_stats(it, &st);
    ck_assert_uint_eq(st.share_refused, 1);
    ck_assert_uint_eq(w4a_inflight_release_pid(it, 4242), 1);
    w4a_inflight_name(it, "w4a100010", &n, &refused);
    ck_assert_uint_eq(n, 0);
    /* a new process (this one again, a new row) finds c1's share free */
    ck_assert_int_eq(w4a_inflight_claim(it, 4343, pool), APR_SUCCESS);
    ck_assert_int_eq(w4a_inflight_enter_client(it, "w4a100010", 4, c1, 4, 1,
                                               &n, pool),
                     W4A_INFLIGHT_ADMITTED);
}
END_TEST

START_TEST(test_share_client_every_loopback_address_is_one_client)
{
    unsigned char a[16], b[16];
    const unsigned char lo1[4] = { 127, 0, 0, 61 }, lo2[4] = { 127, 9, 9, 9 };
    const unsigned char pub[4] = { 192, 0, 2, 1 };
    unsigned char v6lo[16] = { 0 }, mapped[16] = { 0 }, v6[16] = { 0x20, 1,
        0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };

    v6lo[15] = 1;
    mapped[10] = mapped[11] = 0xff;
    mapped[12] = 127;
    mapped[15] = 5;
    w4a_client_share_bytes(APR_INET, lo1, 64, a);
    w4a_client_share_bytes(APR_INET, lo2, 64, b);
    ck_assert_mem_eq(a, b, 16);
    w4a_client_share_bytes(APR_INET6, v6lo, 64, b);
    ck_assert_mem_eq(a, b, 16);
    w4a_client_share_bytes(APR_INET6, mapped, 64, b);
    ck_assert_mem_eq(a, b, 16);
    /* others are themselves, IPv6 cut to its prefix */
    w4a_client_share_bytes(APR_INET, pub, 64, b);
    ck_assert_int_eq(b[12], 192);
    ck_assert_int_ne(memcmp(a, b, 16), 0);
    w4a_client_share_bytes(APR_INET6, v6, 64, b);
    ck_assert_int_eq(b[15], 0);
    ck_assert_int_eq(b[0], 0x20);
}
END_TEST

Suite *guard_suite(void)
{
    Suite *s = suite_create("guard");
    TCase *tc = tcase_create("table");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_guard_ipv6_clients_are_their_prefix_ipv4_mapped_is_ipv4);
    tcase_add_test(tc, test_guard_burst_then_ban_then_refused_without_charge);
    tcase_add_test(tc, test_guard_ban_doubles_up_to_max_and_is_forgotten);
    tcase_add_test(tc, test_guard_exempt_client_counted_never_banned);
    tcase_add_test(tc, test_guard_fleet_ban_and_removal);
    tcase_add_test(tc, test_guard_full_table_evicts_quiet_clients_keeps_bans);
    tcase_add_test(tc, test_inflight_names_of_one_hash_bucket_do_not_share_a_limit);
    tcase_add_test(tc, test_inflight_names_share_a_bucket_only_when_every_one_is_taken);
    tcase_add_test(tc, test_inflight_a_client_holds_its_share_others_keep_theirs);
    tcase_add_test(tc, test_inflight_a_dead_process_leaves_no_share_behind);
    tcase_add_test(tc, test_inflight_share_is_a_percent_of_the_limit_at_least_one);
    tcase_add_test(tc, test_share_client_every_loopback_address_is_one_client);
    suite_add_tcase(s, tc);
    return s;
}
