/* MaxMind DB handling of mod_w4a_geoip (modules/geoip/geoip_db.c), on a
 * database written by t/integration/mkmmdb.pl (libmaxmind-db-writer-perl). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <apr_file_io.h>
#include <apr_pools.h>
#include <apr_strings.h>

#include "check_w4a.h"
#include "geoip_db.h"

static apr_pool_t *pool;
static char dir[] = "/tmp/w4a-check-geoip-XXXXXX";
static const char *db4, *db6;

static const char *write_db(const char *name, const char *json)
{
    const char *srcdir = getenv("srcdir") ? getenv("srcdir") : ".";
    const char *spec = apr_psprintf(pool, "%s/%s.json", dir, name);
    const char *out = apr_psprintf(pool, "%s/%s.mmdb", dir, name);
    FILE *f = fopen(spec, "w");
    char *cmd;

    ck_assert_ptr_nonnull(f);
    fputs(json, f);
    fclose(f);
    cmd = apr_psprintf(pool, "perl %s/t/integration/mkmmdb.pl %s %s", srcdir,
                       out, spec);
    ck_assert_int_eq(system(cmd), 0);
    return out;
}

#define RECORDS \
    "[\"192.0.2.0/24\",{\"country\":{\"iso_code\":\"FR\"," \
    "\"is_in_european_union\":true,\"geoname_id\":3017382}," \
    "\"location\":{\"latitude\":48.5,\"accuracy_radius\":20}," \
    "\"subdivisions\":[{\"iso_code\":\"IDF\"}]}]," \
    "[\"198.51.100.0/25\",{\"country\":{\"iso_code\":\"US\"}}]"

static void setup(void)
{
    apr_pool_create(&pool, NULL);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    db4 = write_db("v4", "{\"ip_version\":4,\"database_type\":\"T4\","
                   "\"networks\":[" RECORDS "]}");
    db6 = write_db("v6", "{\"ip_version\":6,\"database_type\":\"T6\","
                   "\"networks\":[" RECORDS ",[\"2001:db8:1::/48\","
                   "{\"country\":{\"iso_code\":\"UA\"}}]]}");
}

static void teardown(void)
{
    char *cmd = apr_psprintf(pool, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
    strcpy(dir, "/tmp/w4a-check-geoip-XXXXXX");
    apr_pool_destroy(pool);
}

static struct sockaddr_storage addr(const char *s)
{
    struct sockaddr_storage ss;
    ck_assert_msg(w4a_geoip_addr_parse(s, &ss), "%s", s);
    return ss;
}

static const char *value_of(w4a_geoip_db_t *db, const char *ip,
                            const char *path)
{
    struct sockaddr_storage ss = addr(ip);
    w4a_geoip_result_t res;
    if (w4a_geoip_lookup(db, (struct sockaddr *)&ss, &res) != APR_SUCCESS) {
        return NULL;
    }
    return w4a_geoip_value(&res, w4a_geoip_path_parse(path, pool), pool);
}

START_TEST(test_geoip_addr_parse_plain_addresses_only)
{
    struct sockaddr_storage ss;
    ck_assert(w4a_geoip_addr_parse("192.0.2.1", &ss));
    ck_assert_int_eq(ss.ss_family, AF_INET);
    ck_assert(w4a_geoip_addr_parse("2001:db8::1", &ss));
    ck_assert_int_eq(ss.ss_family, AF_INET6);
    ck_assert(w4a_geoip_addr_parse("::ffff:192.0.2.1", &ss));
    ck_assert(!w4a_geoip_addr_parse("", &ss));
    ck_assert(!w4a_geoip_addr_parse("example.com", &ss));
    ck_assert(!w4a_geoip_addr_parse("192.0.2.1:80", &ss));
    ck_assert(!w4a_geoip_addr_parse("[2001:db8::1]", &ss));
    ck_assert(!w4a_geoip_addr_parse("1.2.3", &ss));
    ck_assert(!w4a_geoip_addr_parse(" 1.2.3.4", &ss));
    ck_assert(!w4a_geoip_addr_parse("256.1.1.1", &ss));
}
END_TEST

START_TEST(test_geoip_path_parse)
{
    const char **p = w4a_geoip_path_parse("subdivisions/0/iso_code", pool);
    ck_assert_ptr_nonnull(p);
    ck_assert_str_eq(p[0], "subdivisions");
    ck_assert_str_eq(p[1], "0");
    ck_assert_str_eq(p[2], "iso_code");
    ck_assert_ptr_null(p[3]);
    ck_assert_ptr_null(w4a_geoip_path_parse("", pool));
    ck_assert_ptr_null(w4a_geoip_path_parse("a//b", pool));
    ck_assert_ptr_null(w4a_geoip_path_parse("/a", pool));
    ck_assert_ptr_null(w4a_geoip_path_parse("a/", pool));
}
END_TEST

START_TEST(test_geoip_values_of_each_type)
{
    w4a_geoip_db_t *db;
    const char *why = NULL;

    ck_assert_int_eq(w4a_geoip_db_open(&db, db6, &why, pool), APR_SUCCESS);
    ck_assert_str_eq(value_of(db, "192.0.2.7", "country/iso_code"), "FR");
    ck_assert_str_eq(value_of(db, "192.0.2.7", "country/geoname_id"),
                     "3017382");
    ck_assert_str_eq(value_of(db, "192.0.2.7", "country/is_in_european_union"),
                     "1");
    ck_assert_str_eq(value_of(db, "192.0.2.7", "location/latitude"),
                     "48.500000");
    ck_assert_str_eq(value_of(db, "192.0.2.7", "location/accuracy_radius"),
                     "20");
    ck_assert_str_eq(value_of(db, "192.0.2.7", "subdivisions/0/iso_code"),
                     "IDF");
    /* absent paths, maps and arrays: no value */
    ck_assert_ptr_null(value_of(db, "192.0.2.7", "subdivisions/1/iso_code"));
    ck_assert_ptr_null(value_of(db, "192.0.2.7", "country"));
    ck_assert_ptr_null(value_of(db, "192.0.2.7", "subdivisions"));
    ck_assert_ptr_null(value_of(db, "192.0.2.7", "city/names/en"));
    /* no record */
    ck_assert_ptr_null(value_of(db, "203.0.113.1", "country/iso_code"));
    ck_assert_str_eq(value_of(db, "2001:db8:1:2::3", "country/iso_code"), "UA");
    w4a_geoip_db_close(db, 0);
}
END_TEST

START_TEST(test_geoip_mapped_addresses_in_ipv4_and_ipv6_databases)
{
    w4a_geoip_db_t *d4, *d6;
    const char *why = NULL;
    struct sockaddr_storage ss = addr("2001:db8:1::1");
    w4a_geoip_result_t res;

    ck_assert_int_eq(w4a_geoip_db_open(&d4, db4, &why, pool), APR_SUCCESS);
    ck_assert_int_eq(w4a_geoip_db_open(&d6, db6, &why, pool), APR_SUCCESS);
    ck_assert_str_eq(value_of(d4, "::ffff:198.51.100.9", "country/iso_code"),
                     "US");
    ck_assert_str_eq(value_of(d6, "::ffff:198.51.100.9", "country/iso_code"),
                     "US");
    /* IPv6 in an IPv4 database: a miss, not an error */
    ck_assert_int_eq(w4a_geoip_lookup(d4, (struct sockaddr *)&ss, &res),
                     APR_NOTFOUND);
    w4a_geoip_db_close(d4, 0);
    w4a_geoip_db_close(d6, 0);
}
END_TEST

START_TEST(test_geoip_network_of_the_record)
{
    w4a_geoip_db_t *d4, *d6;
    const char *why = NULL;
    const char *ips[] = { "198.51.100.77", "::ffff:198.51.100.77",
                          "2001:db8:1:ffff::1" };
    const char *want6[] = { "198.51.100.0/25", "198.51.100.0/25",
                            "2001:db8:1::/48" };
    int i;

    ck_assert_int_eq(w4a_geoip_db_open(&d4, db4, &why, pool), APR_SUCCESS);
    ck_assert_int_eq(w4a_geoip_db_open(&d6, db6, &why, pool), APR_SUCCESS);
    for (i = 0; i < 3; i++) {
        struct sockaddr_storage ss = addr(ips[i]);
        w4a_geoip_result_t res;
        ck_assert_int_eq(w4a_geoip_lookup(d6, (struct sockaddr *)&ss, &res),
                         APR_SUCCESS);
        ck_assert_str_eq(w4a_geoip_network(&res, pool), want6[i]);
        if (i < 2) {
            ck_assert_int_eq(w4a_geoip_lookup(d4, (struct sockaddr *)&ss,
                                              &res), APR_SUCCESS);
            ck_assert_str_eq(w4a_geoip_network(&res, pool), want6[i]);
        }
    }
    w4a_geoip_db_close(d4, 0);
    w4a_geoip_db_close(d6, 0);
}
END_TEST

START_TEST(test_geoip_cached_values_equal_decoded_ones)
{
    w4a_geoip_db_t *db;
    const char *why = NULL;
    const char **path = w4a_geoip_path_parse("country/iso_code", pool);
    const char **none = w4a_geoip_path_parse("city/names/en", pool);
    const char *ips[] = { "192.0.2.1", "198.51.100.1", "192.0.2.200",
                          "2001:db8:1::9", "198.51.100.100" };
    const char *want[] = { "FR", "US", "FR", "UA", "US" };
    int round, i;

    ck_assert_int_eq(w4a_geoip_db_open(&db, db6, &why, pool), APR_SUCCESS);
    for (round = 0; round < 3; round++) {
        for (i = 0; i < 5; i++) {
            struct sockaddr_storage ss = addr(ips[i]);
            w4a_geoip_result_t res;
            ck_assert_int_eq(w4a_geoip_lookup(db, (struct sockaddr *)&ss,
                                              &res), APR_SUCCESS);
            ck_assert_str_eq(w4a_geoip_value_cached(db, &res, path, pool),
                             want[i]);
            ck_assert_ptr_null(w4a_geoip_value_cached(db, &res, none, pool));
        }
    }
    w4a_geoip_db_close(db, 0);
}
END_TEST

static const char *write_bytes(const char *name, const void *data,
                               apr_size_t len)
{
    const char *path = apr_psprintf(pool, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    fclose(f);
    return path;
}

static char *slurp(const char *path, apr_size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = apr_palloc(pool, n + 1);
    *len = fread(buf, 1, n, f);
    fclose(f);
    ck_assert_uint_eq(*len, (apr_size_t)n);
    return buf;
}

START_TEST(test_geoip_invalid_files_refused_with_a_reason)
{
    apr_size_t len;
    char *good = slurp(db6, &len);
    char garbage[4096];
    w4a_geoip_db_t *db = (void *)1;
    const char *why;
    char *smashed;

    memset(garbage, 0x5a, sizeof(garbage));
    why = NULL;
    ck_assert_int_ne(w4a_geoip_db_open(&db, write_bytes("g", garbage,
                                                        sizeof(garbage)),
                                       &why, pool), APR_SUCCESS);
    ck_assert_ptr_null(db);
    ck_assert_ptr_nonnull(strstr(why, "metadata"));
    why = NULL;
    ck_assert_int_ne(w4a_geoip_db_open(&db, write_bytes("h", good, len / 2),
                                       &why, pool), APR_SUCCESS);
    ck_assert_ptr_nonnull(why);
    why = NULL;
    ck_assert_int_ne(w4a_geoip_db_open(&db, write_bytes("e", "", 0), &why,
                                       pool), APR_SUCCESS);
    ck_assert_ptr_nonnull(why);
    why = NULL;
    ck_assert_int_ne(w4a_geoip_db_open(&db, apr_pstrcat(pool, dir, "/none",
                                                        NULL), &why, pool),
                     APR_SUCCESS);
    ck_assert_ptr_nonnull(why);
    /* the search tree overwritten: the test lookups find it out */
    smashed = apr_pmemdup(pool, good, len);
    memset(smashed, 0xff, 1024);
    why = NULL;
    ck_assert_int_ne(w4a_geoip_db_open(&db, write_bytes("s", smashed, len),
                                       &why, pool), APR_SUCCESS);
    ck_assert_ptr_nonnull(strstr(why, "test lookup"));
}
END_TEST

START_TEST(test_geoip_load_copies_a_stable_file_privately)
{
    const char *priv = apr_pstrcat(pool, dir, "/private", NULL);
    w4a_geoip_fid_t id, other;
    w4a_geoip_db_t *db, *db2;
    const char *why;

    ck_assert_int_eq(apr_dir_make(priv, APR_FPROT_OS_DEFAULT, pool), 0);
    ck_assert_int_eq(w4a_geoip_fid_stat(&id, db6, pool), APR_SUCCESS);
    ck_assert(id.exists);
    /* a file that is no longer the one seen: not copied */
    other = id;
    other.mtime += 1;
    ck_assert_int_eq(w4a_geoip_db_load(&db, db6, &other, priv, "t", &why,
                                       pool), APR_EAGAIN);
    ck_assert_ptr_null(db);
    /* the one seen: a private copy, named by the source's identity */
    ck_assert_int_eq(w4a_geoip_db_load(&db, db6, &id, priv, "t", &why, pool),
                     APR_SUCCESS);
    ck_assert_ptr_eq(strstr(db->copy_path, priv), db->copy_path);
    ck_assert_str_ne(db->copy_path, db6);
    ck_assert(w4a_geoip_fid_same(&db->source, &id));
    ck_assert_str_eq(value_of(db, "192.0.2.1", "country/iso_code"), "FR");
    /* a second load of the same version shares the copy */
    ck_assert_int_eq(w4a_geoip_db_load(&db2, db6, &id, priv, "t", &why, pool),
                     APR_SUCCESS);
    ck_assert_str_eq(db2->copy_path, db->copy_path);
    w4a_geoip_db_close(db2, 0);
    /* the source rewritten in place does not touch the mapped copy */
    ck_assert_ptr_nonnull(write_bytes("v6.mmdb", "junk", 4));
    ck_assert_str_eq(value_of(db, "192.0.2.1", "country/iso_code"), "FR");
    /* close removes the copy */
    {
        char *copy = apr_pstrdup(pool, db->copy_path);
        w4a_geoip_db_close(db, 1);
        ck_assert_int_ne(access(copy, F_OK), 0);
    }
    /* a missing source */
    memset(&other, 0, sizeof(other));
    ck_assert_int_ne(w4a_geoip_fid_stat(&other, apr_pstrcat(pool, dir,
                                                            "/none", NULL),
                                        pool), APR_SUCCESS);
    ck_assert(!other.exists);
    ck_assert(!w4a_geoip_fid_same(&other, &id));
}
END_TEST

Suite *geoip_suite(void)
{
    Suite *s = suite_create("geoip");
    TCase *tc = tcase_create("db");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_geoip_addr_parse_plain_addresses_only);
    tcase_add_test(tc, test_geoip_path_parse);
    tcase_add_test(tc, test_geoip_values_of_each_type);
    tcase_add_test(tc, test_geoip_mapped_addresses_in_ipv4_and_ipv6_databases);
    tcase_add_test(tc, test_geoip_network_of_the_record);
    tcase_add_test(tc, test_geoip_cached_values_equal_decoded_ones);
    tcase_add_test(tc, test_geoip_invalid_files_refused_with_a_reason);
    tcase_add_test(tc, test_geoip_load_copies_a_stable_file_privately);
    suite_add_tcase(s, tc);
    return s;
}
