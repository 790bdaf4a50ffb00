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

/* A name's bytes: the lower-case form of what a key may hold, 0 for
 * every other byte (NUL and ':' included: they end the name). */
static const unsigned char name_tab[256] = {
#define N_(c) ((c) >= 'a' && (c) <= 'z' ? (c) \
               : (c) >= 'A' && (c) <= 'Z' ? (c) + 32 \
               : ((c) >= '0' && (c) <= '9') || (c) == '-' || (c) == '_' \
                 || (c) == '.' ? (c) : 0)
#define N4_(b) N_(b), N_(b + 1), N_(b + 2), N_(b + 3)
#define N16_(b) N4_(b), N4_(b + 4), N4_(b + 8), N4_(b + 12)
    N16_(0), N16_(16), N16_(32), N16_(48), N16_(64), N16_(80), N16_(96),
    N16_(112)
#undef N16_
#undef N4_
#undef N_
};

apr_status_t w4a_host_normalise(const char *in, char *out, apr_size_t *outlen)
{
    apr_size_t n = 0;
    const unsigned char *p;
    unsigned char t;
    int dot = 1;                /* a dot here would be a leading one */

    if (!in || !*in) {
        return APR_EINVAL;
    }
    if (in[0] == '[') {
        return normalise_ipv6(in, out, outlen);
    }

    /* One pass: lower case, refused bytes, empty labels, length.  Up to
     * W4A_HOST_MAX + 1 bytes are stored (the last may be the one
     * trailing dot allowed, dropped below); past that only counted. */
    for (p = (const unsigned char *)in; (t = name_tab[*p]) != 0; p++) {
        if (t == '.') {
            if (dot) {
                return APR_EINVAL;          /* leading dot or empty label */
            }
            dot = 1;
        }
        else {
            dot = 0;
        }
        if (n <= W4A_HOST_MAX) {
            out[n] = (char)t;
        }
        n++;
    }
    if (*p == ':' ? !is_port((const char *)p) : *p != '\0') {
        return APR_EINVAL;                  /* a byte a key cannot hold */
    }
    if (dot) {
        if (n == 0) {
            return APR_EINVAL;              /* no name (":80") */
        }
        n--;                                /* one trailing dot */
    }
    if (n > W4A_HOST_MAX) {
        return APR_ENAMETOOLONG;
    }
    out[n] = '\0';
    *outlen = n;
    return APR_SUCCESS;
}
