/*
 * Check (libcheck) unit tests of modules/common: one suite per file,
 * check_main.c runs them all.
 */
#ifndef CHECK_W4A_H
#define CHECK_W4A_H

#include <check.h>

/** Host header normalisation (check_host.c). */
Suite *host_suite(void);

/** Map compile, index validation, lookup (check_map.c). */
Suite *map_suite(void);

/** Streaming HTML rewriter of mod_w4a_media (check_html.c). */
Suite *html_suite(void);

/** Single records of the SQL source and memcached (check_record.c). */
Suite *record_suite(void);

/** Sealed cache values and key files (check_mac.c). */
Suite *mac_suite(void);

/** MaxMind DB copies, validation, lookups of mod_w4a_geoip (check_geoip.c). */
Suite *geoip_suite(void);

/** INI tables and line checks of mod_w4a_htcompat (check_htcompat.c). */
Suite *htcompat_suite(void);

/** Request headers standing for our variables (check_envhdr.c). */
Suite *envhdr_suite(void);

/** The client table of mod_w4a_guard (check_guard.c). */
Suite *guard_suite(void);

/** The node's per-hosting counters (check_metrics.c). */
Suite *metrics_suite(void);

/** The pool socket cache of mod_w4a_php (check_phpsock.c). */
Suite *phpsock_suite(void);

#endif /* CHECK_W4A_H */
