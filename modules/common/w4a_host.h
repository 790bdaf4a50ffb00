/**
 * @file w4a_host.h
 * @brief Host header normalisation (httpd-free).
 */
#ifndef W4A_HOST_H
#define W4A_HOST_H

#include <apr.h>
#include <apr_errno.h>

/** Longest normalised host we accept (a DNS name is at most 253). */
#define W4A_HOST_MAX 253

/**
 * Normalise a Host header value into a map key.
 *
 * Lower-cases; strips a ":port" suffix (digits only) and one trailing dot.
 * A name may hold [a-z0-9-_.] with no empty label (no "..", no leading
 * dot).  An IPv6 literal "[...]" (hex digits, ':' and '.') is kept with its
 * brackets, lower-cased, port stripped.
 *
 * @param in     the header value (may be NULL)
 * @param out    buffer of at least W4A_HOST_MAX + 1 bytes
 * @param outlen set to strlen(out) on success
 * @return APR_SUCCESS; APR_EINVAL when empty, malformed or holding a
 *         forbidden byte ('/', '\\', NUL, space, control, ...);
 *         APR_ENAMETOOLONG when longer than W4A_HOST_MAX.
 */
apr_status_t w4a_host_normalise(const char *in, char *out, apr_size_t *outlen);

#endif /* W4A_HOST_H */
