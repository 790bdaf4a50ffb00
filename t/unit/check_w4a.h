/* Check suites of modules/common. */
#ifndef CHECK_W4A_H
#define CHECK_W4A_H

#include <check.h>
#include <apr_pools.h>

Suite *host_suite(void);
Suite *map_suite(void);

/* A pool made per test (the suites' fixtures create and destroy it). */
extern apr_pool_t *test_pool;

#endif
