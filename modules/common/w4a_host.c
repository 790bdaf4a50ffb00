/*
 * Host header normalisation: see w4a_host.h.
 *
 * Only what a map key can be comes out: a lower-case name of [a-z0-9-_.]
 * with no empty label, or a bracketed IPv6 literal.  Everything else
 * (other bytes, "..", a leading dot, a port that is not digits) is
 * refused rather than repaired, so that two different Host values never
 * meet on one key by accident.
 */
#include <string.h>

#include "w4a_host.h"

/* The longest IPv6 text form ("ffff:...:255.255.255.255"). */
#define IPV6_TEXT_MAX 45

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

/* ":digits" or ":" up to the end of the string. */
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

/* "[v6]" or "[v6]:port"; the brackets are kept. */
static apr_status_t normalise_ipv6(const char *in, char *out,
                                   apr_size_t *outlen)
{
    const char *close = strchr(in, ']');
    apr_size_t n = 0, i, inner, colons = 0;

    if (!close || (close[1] && !is_port(close + 1))) {
        return APR_EINVAL;
    }
    inner = (apr_size_t)(close - in) - 1;
    if (inner > IPV6_TEXT_MAX) {
        return APR_EINVAL;
    }
    out[n++] = '[';
    for (i = 1; i <= inner; i++) {
        unsigned char ch = lower((unsigned char)in[i]);
        if (!ipv6_char(ch)) {
            return APR_EINVAL;
        }
        colons += ch == ':';
        out[n++] = (char)ch;
    }
    if (colons < 2) {               /* every IPv6 text form has two */
        return APR_EINVAL;
    }
    out[n++] = ']';
    out[n] = '\0';
    *outlen = n;
    return APR_SUCCESS;
}

apr_status_t w4a_host_normalise(const char *in, char *out, apr_size_t *outlen)
{
    apr_size_t n = 0, i, end;

    if (!in || !*in) {
        return APR_EINVAL;
    }
    if (in[0] == '[') {
        return normalise_ipv6(in, out, outlen);
    }

    /* A name, up to its port if any. */
    for (end = 0; in[end] && in[end] != ':'; end++) {
        ;
    }
    if (in[end] && !is_port(in + end)) {
        return APR_EINVAL;
    }
    if (end > 0 && in[end - 1] == '.') {
        end--;                              /* one trailing dot */
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
            return APR_EINVAL;              /* leading dot or empty label */
        }
        if (n == W4A_HOST_MAX) {
            return APR_ENAMETOOLONG;
        }
        out[n++] = (char)ch;
    }
    if (out[n - 1] == '.') {
        return APR_EINVAL;                  /* "name.." */
    }
    out[n] = '\0';
    *outlen = n;
    return APR_SUCCESS;
}
