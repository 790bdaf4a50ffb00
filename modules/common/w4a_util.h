/**
 * @file w4a_util.h
 * @brief Small helpers shared by the modules and tools (httpd-free).
 */
#ifndef W4A_UTIL_H
#define W4A_UTIL_H

#include <string.h>

#include <apr.h>
#include <apr_pools.h>

/**
 * Whether @a path is @a base or lies below it ("/datas" holds "/datas/x",
 * not "/datasX"). Purely textual: both must be normalised absolute paths.
 * @return 1 or 0
 */
int w4a_path_under(const char *path, const char *base);

/**
 * FNV-1a (32 bits) of the string @a s.  A pool socket's: mod_w4a_php
 * computes it once per cached socket path and hands it on, so neither its
 * in-flight buckets nor mod_w4a_htcompat's pool tags hash the path again.
 */
static APR_INLINE apr_uint32_t w4a_fnv1a(const char *s)
{
    apr_uint32_t h = 2166136261u;

    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 16777619u;
    }
    return h;
}

/**
 * @a a then @a b in one allocation of @a p: the two strings a request's
 * path is made of (docroot and URI), without apr_pstrcat's two passes over
 * a NULL-terminated list.
 */
static APR_INLINE char *w4a_pjoin(apr_pool_t *p, const char *a, const char *b)
{
    apr_size_t na = strlen(a), nb = strlen(b);
    char *s = apr_palloc(p, na + nb + 1);

    memcpy(s, a, na);
    memcpy(s + na, b, nb + 1);
    return s;
}

/**
 * Parse a whole decimal number within [min, max].
 * @return 1 with *out set, or 0 when @a s is empty, has other characters,
 *         or is out of range.
 */
int w4a_parse_number(const char *s, apr_int64_t min, apr_int64_t max,
                     apr_int64_t *out);

/**
 * Check a per-pool path pattern: only %h (hosting), %v (PHP version) and
 * %% may follow '%', and %h must be there (each hosting its own file).
 * @return NULL when fine, or what is wrong (a static string)
 */
const char *w4a_pool_pattern_check(const char *pattern);

/**
 * Bytes of a per-pool path pattern expanded for a hosting name of @a hl
 * bytes and a PHP version of @a vl bytes (the terminating NUL not
 * counted).  A request's hot path (socket and settings-file paths): no
 * allocation, no formatting.
 */
apr_size_t w4a_pool_pattern_len(const char *pattern, apr_size_t hl,
                                apr_size_t vl);

/**
 * Write the pattern expanded (%h: @a hosting, %v: @a version, %%: '%')
 * and a NUL into @a out, which holds w4a_pool_pattern_len() + 1 bytes.
 */
void w4a_pool_pattern_expand(char *out, const char *pattern,
                             const char *hosting, apr_size_t hl,
                             const char *version, apr_size_t vl);

/**
 * Whether @a s is a PHP INI setting name: letters, digits, '_', '.', '-',
 * not empty.
 * @return 1 or 0
 */
int w4a_ini_name_ok(const char *s);

/**
 * A client as the limits count it: its address in 16 bytes, IPv4 (and
 * IPv4-mapped IPv6) as ::ffff:a.b.c.d, IPv6 cut to its first @a v6bits
 * bits (the rest zero).
 * @param family  APR_INET or APR_INET6 (anything else: all zero)
 */
void w4a_client_bytes(int family, const void *addr, int v6bits,
                      unsigned char out[16]);

/**
 * A client as a share of a limit counts it: as w4a_client_bytes(), except
 * that every loopback address (127.0.0.0/8, ::1) is one client,
 * ::ffff:127.0.0.0.  A tenant's PHP on the node picks its source anywhere
 * in 127.0.0.0/8; each address its own client, it would take as many
 * shares as it likes.
 */
void w4a_client_share_bytes(int family, const void *addr, int v6bits,
                            unsigned char out[16]);

/**
 * Open the directory @a path (absolute) for a root tool about to act in
 * it, one name at a time from "/": a symlink on the way is followed only
 * when it is root's, in a directory nobody but root can write (the
 * operator's, such as a volume moved to another disk).  A tenant owns the
 * directory holding its docroot's name, and could swap it for a symlink
 * to another hosting's tree at any moment.
 * @param link  set, on EPERM, to @a path up to the refused symlink
 * @return the descriptor (O_DIRECTORY, close-on-exec), or -1 with errno:
 *         EPERM (a symlink refused), EINVAL (not absolute), ENOTDIR,
 *         or openat()'s
 */
int w4a_open_dir_trusted(const char *path, const char **link, apr_pool_t *p);

/**
 * Open a hosting's docroot for a root tool: its home (the part before
 * "/var/www/", else the docroot itself) as w4a_open_dir_trusted() opens
 * it, then the rest below the home with the hosting's own symlinks
 * followed as long as they stay in the home (openat2 RESOLVE_BENEATH: a
 * deploy's "current -> releases/42" works, "-> /datas/vol1/other" not).
 * @return the descriptor, or -1 with errno: EXDEV (a symlink leading out
 *         of the home; *link set to @a docroot), or as
 *         w4a_open_dir_trusted()
 */
int w4a_open_docroot(const char *docroot, const char **link, apr_pool_t *p);

/**
 * @a s with every control byte (below 0x20, 0x7f, the C1 controls
 * U+0080 to U+009F), every byte that is not UTF-8, and the bidirectional
 * marks and overrides (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066
 * to U+2069) written as \xHH, byte by byte: for a line a person reads
 * in a terminal, where a tenant's names could otherwise move the cursor,
 * recolour or forge lines (a backslash stays as it is: the line is for
 * reading, not for parsing back).  @a s itself when nothing needs
 * escaping.
 */
const char *w4a_printable(apr_pool_t *p, const char *s);

#endif /* W4A_UTIL_H */
