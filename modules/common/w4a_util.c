/*
 * Small helpers shared by the modules and tools: see w4a_util.h.
 */
#include <errno.h>
#include <string.h>

#include <apr_strings.h>

#include "w4a_util.h"

int w4a_path_under(const char *path, const char *base)
{
    apr_size_t n = strlen(base);
    if (n == 1 && base[0] == '/') {
        return path[0] == '/';
    }
    return strncmp(path, base, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

int w4a_parse_number(const char *s, apr_int64_t min, apr_int64_t max,
                     apr_int64_t *out)
{
    char *end;
    apr_int64_t v;

    if (!s || !*s || *s == '+' || *s == ' ') {
        return 0;
    }
    errno = 0;
    v = apr_strtoi64(s, &end, 10);
    if (*end || errno || v < min || v > max) {
        return 0;
    }
    *out = v;
    return 1;
}
