/**
 * @file metrics_private.h
 * @brief Private header of mod_w4a_metrics: per-module LogLevel, log tags.
 *
 * Tags W4A00700-00749 are this module's, W4A00750-00759 w4a-top's.
 */
#ifndef MOD_W4A_METRICS_PRIVATE_H
#define MOD_W4A_METRICS_PRIVATE_H

#include <httpd.h>
#include <http_log.h>
#include "w4a_log.h"

APLOG_USE_MODULE(w4a_metrics);

#endif
