/*
 * httpd's functions that mod_w4a_geoip.c refers to, for fuzz_geoip_xff,
 * which links the module's code without httpd.  Only logging is reached
 * from the code under test (and does nothing); anything else aborts, so
 * that a target reaching it is noticed.  Types do not matter to the
 * linker; these never see a caller's arguments.
 */
#include <stdlib.h>

void ap_log_rerror_(void) { }
void ap_log_error_(void) { }
const char *ap_escape_logitem(void *p, const char *s) { (void)p; return s; }

#define STUB(name) void name(void) { abort(); }
STUB(ap_check_cmd_context)
STUB(ap_hook_check_config)
STUB(ap_hook_child_init)
STUB(ap_hook_fixups)
STUB(ap_hook_handler)
STUB(ap_hook_post_config)
STUB(ap_hook_post_read_request)
STUB(ap_hook_translate_name)
STUB(ap_rprintf)
STUB(ap_rputc)
STUB(ap_runtime_dir_relative)
STUB(ap_rwrite)
STUB(ap_server_root_relative)
STUB(ap_set_content_type)
STUB(ap_str_tolower)

/* unixd_config_rec: only its address is taken */
_Alignas(16) char ap_unixd_config[4096];
