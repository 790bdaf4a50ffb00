/*
 * Host header normalisation: see w4a_host.h.
 */
#include <string.h>

#include "w4a_host.h"

static int name_char(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')
           || ch == '-' || ch == '_' || ch == '.';
}

static int ipv6_char(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'f') || (ch >= '0' && ch <= '9')
           || ch == ':' || ch == '.';
}

static unsigned char lower(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') ? (unsigned char)(ch - 'A' + 'a') : ch;
}

/* ":digits" or ":" to the end, from p on. */
static int is_port(const char *p)
{
    if (*p != ':') {
        return 0;
    }
    for (p++; *p; p++) {
        if (*p < '0' || *p > '9') {
            return 0;
        }
    }
    return 1;
}

apr_status_t w4a_host_normalise(const char *in, char *out, apr_size_t *outlen)
{
    apr_size_t n = 0, i, end;

    if (!in || !*in) {
        return APR_EINVAL;
    }
    if (in[0] == '[') {
        const char *close = strchr(in, ']');
        if (!close || close == in + 1 || (close[1] && !is_port(close + 1))) {
            return APR_EINVAL;
        }
        end = (apr_size_t)(close - in) + 1;
        if (end > W4A_HOST_MAX) {
            return APR_ENAMETOOLONG;
        }
        out[n++] = '[';
        for (i = 1; i < end - 1; i++) {
            unsigned char ch = lower((unsigned char)in[i]);
            if (!ipv6_char(ch)) {
                return APR_EINVAL;
            }
            out[n++] = (char)ch;
        }
        out[n++] = ']';
        out[n] = '\0';
        *outlen = n;
        return APR_SUCCESS;
    }

    /* A name: up to the port, if any. */
    for (end = 0; in[end] && in[end] != ':'; end++) {
        ;
    }
    if (in[end] && !is_port(in + end)) {
        return APR_EINVAL;
    }
    if (end > 0 && in[end - 1] == '.') {
        end--;                                  /* one trailing dot */
    }
    if (end == 0) {
        return APR_EINVAL;
    }
    for (i = 0; i < end; i++) {
        unsigned char ch = lower((unsigned char)in[i]);
        if (!name_char(ch)) {
            return APR_EINVAL;
        }
        if (ch == '.' && (i == 0 || in[i - 1] == '.')) {
            return APR_EINVAL;                  /* empty label */
        }
        if (n >= W4A_HOST_MAX) {
            return APR_ENAMETOOLONG;
        }
        out[n++] = (char)ch;
    }
    if (out[n - 1] == '.') {
        return APR_EINVAL;                      /* "name.." */
    }
    out[n] = '\0';
    *outlen = n;
    return APR_SUCCESS;
}
