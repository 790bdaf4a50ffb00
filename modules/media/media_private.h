/**
 * @file media_private.h
 * @brief Private header of mod_w4a_media: per-module LogLevel, log tags.
 */
#ifndef MOD_W4A_MEDIA_PRIVATE_H
#define MOD_W4A_MEDIA_PRIVATE_H

#include <httpd.h>
#include <http_log.h>
#include "w4a_log.h"

APLOG_USE_MODULE(w4a_media);

#endif
