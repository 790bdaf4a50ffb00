/*
 * bench/geoip-lookup: lookups per second of mod_w4a_geoip's lookup path
 * (modules/geoip/geoip_db.c, the same code the module links), on one
 * thread, for comparison with `mmdblookup --benchmark` on the same file.
 *
 *   geoip-lookup DB.mmdb COUNT [found]
 *
 * With "found", only addresses that have a record are looked up (chosen
 * up front by a first lookup), so every lookup also reads its values.
 *
 * Per lookup, what the module does per request and database: take the
 * handle under a mutex (reference count), w4a_geoip_lookup() of a random
 * IPv4 address, w4a_geoip_value_cached() of country/iso_code (the two
 * default variables share it) copied into a pool, give the handle back.  The
 * addresses are made up front, as a request's address already is; the
 * pool is cleared every 1,000 lookups as request pools are.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_thread_mutex.h>
#include <apr_time.h>

#include "geoip_db.h"

int main(int argc, char **argv)
{
    apr_pool_t *pool, *req;
    apr_thread_mutex_t *lock;
    w4a_geoip_db_t *db;
    const char *why, **path;
    struct sockaddr_in *addrs;
    unsigned long found = 0, i, n;
    unsigned int seed = 12345;
    apr_time_t t0, t1;
    apr_uint32_t refs = 1;

    if (argc < 3 || argc > 4 || (n = strtoul(argv[2], NULL, 10)) == 0
        || (argc == 4 && strcmp(argv[3], "found"))) {
        fprintf(stderr, "usage: %s DB.mmdb COUNT [found]\n", argv[0]);
        return 2;
    }
    apr_initialize();
    apr_pool_create(&pool, NULL);
    apr_pool_create(&req, pool);
    apr_thread_mutex_create(&lock, APR_THREAD_MUTEX_DEFAULT, pool);
    if (w4a_geoip_db_open(&db, argv[1], &why, pool) != APR_SUCCESS) {
        fprintf(stderr, "%s: %s\n", argv[1], why);
        return 1;
    }
    path = w4a_geoip_path_parse("country/iso_code", pool);
    addrs = calloc(n, sizeof(*addrs));
    for (i = 0; i < n; i++) {
        w4a_geoip_result_t res;
        do {
            addrs[i].sin_family = AF_INET;
            addrs[i].sin_addr.s_addr =
                htonl(((apr_uint32_t)rand_r(&seed) << 16)
                      ^ (apr_uint32_t)rand_r(&seed));
        } while (argc == 4 && w4a_geoip_lookup(db, (struct sockaddr *)&addrs[i],
                                               &res) != APR_SUCCESS);
    }
    t0 = apr_time_now();
    for (i = 0; i < n; i++) {
        w4a_geoip_result_t res;
        apr_thread_mutex_lock(lock);
        refs++;
        apr_thread_mutex_unlock(lock);
        if (w4a_geoip_lookup(db, (struct sockaddr *)&addrs[i], &res)
            == APR_SUCCESS) {
            /* MM_COUNTRY_CODE reuses GEOIP_COUNTRY_CODE's value, as in
             * the module (same database and path: read once). */
            const char *a = w4a_geoip_value_cached(db, &res, path, req);
            const char *b = a;
            found += a && b;
        }
        apr_thread_mutex_lock(lock);
        refs--;
        apr_thread_mutex_unlock(lock);
        if (i % 1000 == 999) {
            apr_pool_clear(req);
        }
    }
    t1 = apr_time_now();
    printf("Looked up %lu addresses (%lu found) in %.3f s: %.0f lookups "
           "per second\n", n, found, (double)(t1 - t0) / APR_USEC_PER_SEC,
           (double)n * APR_USEC_PER_SEC / (double)(t1 - t0 ? t1 - t0 : 1));
    w4a_geoip_db_close(db, 0);
    free(addrs);
    apr_terminate();
    return refs == 1 ? 0 : 1;
}
