/*
 * Runs every Check suite of modules/common; exits non-zero when a test
 * failed.  CK_FORK=no runs the tests in this process (for valgrind).
 */
#include <stdlib.h>

#include <apr_general.h>

#include "check_w4a.h"

int main(void)
{
    SRunner *sr;
    int failed;

    if (apr_initialize() != APR_SUCCESS) {
        return EXIT_FAILURE;
    }
    sr = srunner_create(host_suite());
    srunner_add_suite(sr, map_suite());
    srunner_add_suite(sr, html_suite());
    srunner_add_suite(sr, record_suite());
    srunner_add_suite(sr, mac_suite());
    srunner_add_suite(sr, geoip_suite());
    srunner_add_suite(sr, htcompat_suite());
    srunner_add_suite(sr, envhdr_suite());
    srunner_add_suite(sr, guard_suite());
    srunner_add_suite(sr, metrics_suite());
    srunner_add_suite(sr, phpsock_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    apr_terminate();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
