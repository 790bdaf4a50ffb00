/*
 * GeoIP's httpd-free parsers (modules/geoip/geoip_db.c):
 * w4a_geoip_addr_parse (the X-Forwarded-For entries, the proxy and
 * supervisor networks) and w4a_geoip_path_parse (W4AGeoIPEnv data paths).
 *
 * Invariants:
 * - an accepted address has its family set, is the address inet_pton
 *   reads, and its text form (inet_ntop) parses back to the same bytes;
 *   refused: anything inet_pton refuses, so no name, port, bracket, zone;
 * - an accepted path is a list of non-empty steps without '/', that joined
 *   with '/' give the path back; refused: empty path or an empty step.
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "fuzz_common.h"
#include <apr_strings.h>
#include "geoip_db.h"

static void check_addr(const char *s)
{
    struct sockaddr_storage ss, again;
    unsigned char raw[16];
    char text[INET6_ADDRSTRLEN];
    const void *a;
    int fam, ok = w4a_geoip_addr_parse(s, &ss);

    fam = strchr(s, ':') ? AF_INET6 : AF_INET;
    FUZZ_CHECK(ok == (inet_pton(fam, s, raw) == 1), "'%s': %d, inet_pton "
               "otherwise", s, ok);
    if (!ok) {
        return;
    }
    FUZZ_CHECK(ss.ss_family == fam, "family %d", ss.ss_family);
    a = fam == AF_INET ? (const void *)&((struct sockaddr_in *)&ss)->sin_addr
                       : (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
    FUZZ_CHECK(!memcmp(a, raw, fam == AF_INET ? 4 : 16), "other bytes");
    FUZZ_CHECK(!strpbrk(s, "[]/% \t"), "'%s' accepted", s);
    FUZZ_CHECK(inet_ntop(fam, a, text, sizeof(text)) != NULL, "ntop");
    FUZZ_CHECK(w4a_geoip_addr_parse(text, &again) == 1
               && !memcmp(&again, &ss, sizeof(ss)), "'%s' does not read back",
               text);
}

static void check_path(const char *s, apr_pool_t *p)
{
    const char **steps = w4a_geoip_path_parse(s, p);
    const char *joined = "";
    int i;

    if (!steps) {
        FUZZ_CHECK(!*s || s[0] == '/' || s[strlen(s) - 1] == '/'
                   || strstr(s, "//"), "'%s' refused", s);
        return;
    }
    FUZZ_CHECK(steps[0], "no step");
    for (i = 0; steps[i]; i++) {
        FUZZ_CHECK(*steps[i] && !strchr(steps[i], '/'), "step '%s'",
                   steps[i]);
        joined = i ? apr_pstrcat(p, joined, "/", steps[i], NULL) : steps[i];
    }
    FUZZ_CHECK(!strcmp(joined, s), "'%s' joins back as '%s'", s, joined);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    char *s = fuzz_strndup(data, size);

    apr_pool_create(&p, fuzz_pool());
    check_addr(s);
    check_path(s, p);
    apr_pool_destroy(p);
    free(s);
    return 0;
}
