/*
 * Host header normalisation (modules/common/w4a_host.c).
 *
 * Invariants, for any byte string:
 * - success gives at most W4A_HOST_MAX bytes, *outlen == strlen(out);
 * - a name is lower case [a-z0-9-_.], no empty label, no leading or
 *   trailing dot; an IPv6 literal is "[" [0-9a-f:.]+ "]";
 * - normalising the result again gives the result (a key is a fixed point,
 *   so two Host values meet on one key only if they mean the same host);
 * - the case of the input does not matter;
 * - a name (not an IPv6 literal) is accepted, and gives the same key, as
 *   the two-pass reference below does (the form w4a_host.c had before its
 *   one-pass loop, issue 17): only the kind of error may differ.
 */
#include "fuzz_common.h"
#include "w4a_host.h"

static void check_key(const char *out, apr_size_t len)
{
    apr_size_t i;

    FUZZ_CHECK(len > 0 && len <= W4A_HOST_MAX && strlen(out) == len,
               "length %zu", (size_t)len);
    if (out[0] == '[') {
        FUZZ_CHECK(len >= 4 && out[len - 1] == ']', "bad literal '%s'", out);
        for (i = 1; i + 1 < len; i++) {
            char ch = out[i];
            FUZZ_CHECK((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')
                       || ch == ':' || ch == '.', "byte %02x in '%s'",
                       (unsigned char)ch, out);
        }
        return;
    }
    FUZZ_CHECK(out[0] != '.' && out[len - 1] != '.' && !strstr(out, ".."),
               "empty label in '%s'", out);
    for (i = 0; i < len; i++) {
        char ch = out[i];
        FUZZ_CHECK((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')
                   || ch == '-' || ch == '_' || ch == '.',
                   "byte %02x in '%s'", (unsigned char)ch, out);
    }
}

/* The reference: find the end, then check and copy byte by byte. */
static apr_status_t ref_name(const char *in, char *out, apr_size_t *outlen)
{
    apr_size_t n = 0, i, end, j;

    if (!in || !*in) {
        return APR_EINVAL;
    }
    for (end = 0; in[end] && in[end] != ':'; end++) {
    }
    if (in[end]) {
        for (j = end + 1; in[j]; j++) {     /* ":" then digits, or none */
            if (in[j] < '0' || in[j] > '9') {
                return APR_EINVAL;
            }
        }
    }
    if (end > 0 && in[end - 1] == '.') {
        end--;
    }
    if (end == 0) {
        return APR_EINVAL;
    }
    for (i = 0; i < end; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch >= 'A' && ch <= 'Z') {
            ch = (unsigned char)(ch - 'A' + 'a');
        }
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')
              || ch == '-' || ch == '_' || ch == '.')) {
            return APR_EINVAL;
        }
        if (ch == '.' && (i == 0 || in[i - 1] == '.')) {
            return APR_EINVAL;
        }
        if (n == W4A_HOST_MAX) {
            return APR_ENAMETOOLONG;
        }
        out[n++] = (char)ch;
    }
    if (out[n - 1] == '.') {
        return APR_EINVAL;
    }
    out[n] = '\0';
    *outlen = n;
    return APR_SUCCESS;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char out[W4A_HOST_MAX + 1], again[W4A_HOST_MAX + 1];
    char upper[W4A_HOST_MAX + 1];
    apr_size_t len = 0, len2 = 0, len3 = 0, i;
    apr_status_t rv, rv2;
    char *in = fuzz_strndup(data, size), *up;

    rv = w4a_host_normalise(in, out, &len);
    FUZZ_CHECK(rv == APR_SUCCESS || rv == APR_EINVAL
               || rv == APR_ENAMETOOLONG, "status %d", rv);
    if (in[0] != '[') {
        char ref[W4A_HOST_MAX + 1];
        apr_size_t rlen = 0;
        apr_status_t rrv = ref_name(in, ref, &rlen);
        FUZZ_CHECK((rv == APR_SUCCESS) == (rrv == APR_SUCCESS),
                   "status %d, the reference %d", rv, rrv);
        if (rv == APR_SUCCESS) {
            FUZZ_CHECK(rlen == len && !memcmp(ref, out, len + 1),
                       "'%s', the reference '%s'", out, ref);
        }
    }
    if (rv == APR_SUCCESS) {
        check_key(out, len);
        FUZZ_CHECK(w4a_host_normalise(out, again, &len2) == APR_SUCCESS
                   && len2 == len && !memcmp(again, out, len + 1),
                   "'%s' is not a fixed point", out);
    }

    /* Case does not matter: the upper-cased input gives the same key. */
    up = fuzz_strndup(data, size);
    for (i = 0; up[i]; i++) {
        if (up[i] >= 'a' && up[i] <= 'z') {
            up[i] = (char)(up[i] - 'a' + 'A');
        }
    }
    rv2 = w4a_host_normalise(up, upper, &len3);
    FUZZ_CHECK(rv2 == rv, "upper case: status %d, lower %d", rv2, rv);
    if (rv == APR_SUCCESS) {
        FUZZ_CHECK(len3 == len && !memcmp(upper, out, len + 1),
                   "upper case gives '%s', not '%s'", upper, out);
    }
    free(up);
    free(in);
    return 0;
}
