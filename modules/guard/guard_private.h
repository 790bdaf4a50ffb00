/**
 * @file guard_private.h
 * @brief Private header of mod_w4a_guard: per-module LogLevel, log tags.
 *
 * Tags W4A00600-00649 are this module's, W4A00650-00659 w4a-ban's.
 */
#ifndef MOD_W4A_GUARD_PRIVATE_H
#define MOD_W4A_GUARD_PRIVATE_H

#include <httpd.h>
#include <http_log.h>
#include "w4a_log.h"

APLOG_USE_MODULE(w4a_guard);

#endif
