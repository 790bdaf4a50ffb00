/*
 * Small helpers shared by the modules and tools: see w4a_util.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/openat2.h>

#include <apr_lib.h>
#include <apr_network_io.h>
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

const char *w4a_pool_pattern_check(const char *pattern)
{
    const char *q;

    for (q = pattern; *q; q++) {
        if (*q == '%') {
            q++;
            if (*q != 'h' && *q != 'v' && *q != '%') {
                return "only %h (hosting), %v (PHP version) and %% may "
                       "follow '%'";
            }
        }
    }
    if (!strstr(pattern, "%h")) {
        return "the pattern must hold %h: each hosting has its own pool";
    }
    return NULL;
}

apr_size_t w4a_pool_pattern_len(const char *pattern, apr_size_t hl,
                                apr_size_t vl)
{
    apr_size_t n = 0;
    const char *q;

    for (q = pattern; *q; q++) {
        if (*q != '%') {
            n++;
            continue;
        }
        q++;
        n += *q == 'h' ? hl : *q == 'v' ? vl : 1;
        if (!*q) {
            break;              /* a '%' last: kept as it is */
        }
    }
    return n;
}

void w4a_pool_pattern_expand(char *out, const char *pattern,
                             const char *hosting, apr_size_t hl,
                             const char *version, apr_size_t vl)
{
    const char *q;

    for (q = pattern; *q; q++) {
        if (*q != '%') {
            *out++ = *q;
            continue;
        }
        q++;
        if (*q == 'h') {
            memcpy(out, hosting, hl);
            out += hl;
        }
        else if (*q == 'v') {
            memcpy(out, version, vl);
            out += vl;
        }
        else {
            *out++ = '%';
            if (!*q) {
                break;
            }
        }
    }
    *out = '\0';
}

int w4a_ini_name_ok(const char *s)
{
    if (!*s) {
        return 0;
    }
    for (; *s; s++) {
        if (!apr_isalnum(*s) && *s != '_' && *s != '.' && *s != '-') {
            return 0;
        }
    }
    return 1;
}

/* ::ffff:0:0/96, IPv4-mapped IPv6 */
static const unsigned char v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0,
                                            0, 0, 0xff, 0xff };

void w4a_client_bytes(int family, const void *addr, int v6bits,
                      unsigned char out[16])
{
    int i;

    memset(out, 0, 16);
#if APR_HAVE_IPV6
    if (family == APR_INET6 && !memcmp(addr, v4mapped, 12)) {
        family = APR_INET;
        addr = (const unsigned char *)addr + 12;
    }
    if (family == APR_INET6) {
        memcpy(out, addr, 16);
        for (i = 0; i < 16; i++) {
            int keep = v6bits - 8 * i;
            out[i] &= keep >= 8 ? 0xff : keep <= 0 ? 0
                      : (unsigned char)(0xff << (8 - keep));
        }
        return;
    }
#endif
    if (family == APR_INET) {
        memcpy(out, v4mapped, 12);
        memcpy(out + 12, addr, 4);
    }
    (void)i;
}

void w4a_client_share_bytes(int family, const void *addr, int v6bits,
                            unsigned char out[16])
{
    static const unsigned char v6local[16] = { 0, 0, 0, 0, 0, 0, 0, 0,
                                               0, 0, 0, 0, 0, 0, 0, 1 };

    w4a_client_bytes(family, addr, 128, out);
    if ((!memcmp(out, v4mapped, 12) && out[12] == 127)
        || !memcmp(out, v6local, 16)) {
        memcpy(out, v4mapped, 12);
        out[12] = 127;
        out[13] = out[14] = out[15] = 0;
        return;
    }
    if (v6bits < 128) {
        w4a_client_bytes(family, addr, v6bits, out);
    }
}

static int open_trusted(const char *path, const char **link, apr_pool_t *p,
                        int hops)
{
    char *copy, *comp, *last;
    int fd;

    if (path[0] != '/') {
        errno = EINVAL;
        return -1;
    }
    copy = apr_pstrdup(p, path);
    fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    for (comp = apr_strtok(copy, "/", &last); comp && fd >= 0;
         comp = apr_strtok(NULL, "/", &last)) {
        int next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW
                                    | O_CLOEXEC);
        /* (a symlink with O_DIRECTORY | O_NOFOLLOW: ENOTDIR or ELOOP) */
        if (next < 0 && (errno == ELOOP || errno == ENOTDIR)) {
            struct stat dir, ln;
            char target[4096];
            ssize_t n;
            const char *at;

            if (fstat(fd, &dir) != 0
                || fstatat(fd, comp, &ln, AT_SYMLINK_NOFOLLOW) != 0) {
                close(fd);
                return -1;
            }
            if (!S_ISLNK(ln.st_mode)) {
                close(fd);
                errno = ENOTDIR;
                return -1;
            }
            at = apr_pstrmemdup(p, path, (apr_size_t)(comp - copy)
                                         + strlen(comp));
            if (ln.st_uid != 0 || dir.st_uid != 0
                || (dir.st_mode & (S_IWGRP | S_IWOTH))) {
                *link = at;
                close(fd);
                errno = EPERM;
                return -1;
            }
            /* root's: its target is walked the same way, name by name
             * (it may lead through a tenant's symlink) */
            n = readlinkat(fd, comp, target, sizeof(target) - 1);
            close(fd);
            if (n <= 0 || hops >= 16) {
                errno = n <= 0 ? errno : ELOOP;
                return -1;
            }
            target[n] = '\0';
            return open_trusted(apr_pstrcat(p, target[0] == '/' ? ""
                                : apr_pstrmemdup(p, path, (apr_size_t)(comp
                                                                - copy)),
                                target, "/", last ? last : "", NULL),
                                link, p, hops + 1);
        }
        close(fd);
        fd = next;
    }
    return fd;
}

int w4a_open_dir_trusted(const char *path, const char **link, apr_pool_t *p)
{
    *link = NULL;
    return open_trusted(path, link, p, 0);
}

int w4a_open_docroot(const char *docroot, const char **link, apr_pool_t *p)
{
    const char *vw = strstr(docroot, "/var/www/");
    const char *home = vw && vw > docroot
                       ? apr_pstrmemdup(p, docroot, (apr_size_t)(vw - docroot))
                       : docroot;
    struct open_how how;
    int hfd, fd, tries;

    hfd = w4a_open_dir_trusted(home, link, p);
    if (hfd < 0 || home == docroot) {
        return hfd;
    }
    memset(&how, 0, sizeof(how));
    how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    /* EAGAIN: a rename elsewhere on the machine raced a ".." of the
     * path; EPERM: a seccomp filter that does not know openat2 */
    for (tries = 0; tries < 8; tries++) {
        fd = (int)syscall(SYS_openat2, hfd, vw + 1, &how, sizeof(how));
        if (fd >= 0 || errno != EAGAIN) {
            break;
        }
    }
    if (fd < 0 && (errno == ENOSYS || errno == EPERM)) {
        /* (before Linux 5.6: no symlink followed at all below the home) */
        char *copy = apr_pstrdup(p, vw + 1), *comp, *last;
        fd = dup(hfd);
        for (comp = apr_strtok(copy, "/", &last); comp && fd >= 0;
             comp = apr_strtok(NULL, "/", &last)) {
            int next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW
                                        | O_CLOEXEC);
            if (next < 0 && (errno == ELOOP || errno == ENOTDIR)) {
                errno = EXDEV;
            }
            close(fd);
            fd = next;
        }
    }
    if (fd < 0 && errno == EXDEV) {
        *link = docroot;
    }
    close(hfd);
    return fd;
}

/* The length of the valid UTF-8 sequence at q (1 to 4), its code point
 * in *cp; 0 when q holds no valid sequence (a stray byte, an overlong
 * form, a surrogate, past U+10FFFF). */
static int utf8_at(const unsigned char *q, apr_uint32_t *cp)
{
    int n, i;
    apr_uint32_t c;

    if (q[0] < 0x80) {
        *cp = q[0];
        return 1;
    }
    if (q[0] >= 0xc2 && q[0] <= 0xdf) {
        n = 2, c = q[0] & 0x1f;
    }
    else if (q[0] >= 0xe0 && q[0] <= 0xef) {
        n = 3, c = q[0] & 0x0f;
    }
    else if (q[0] >= 0xf0 && q[0] <= 0xf4) {
        n = 4, c = q[0] & 0x07;
    }
    else {
        return 0;
    }
    for (i = 1; i < n; i++) {
        if ((q[i] & 0xc0) != 0x80) {
            return 0;           /* (the NUL at the end stops here too) */
        }
        c = (c << 6) | (q[i] & 0x3f);
    }
    if ((n == 3 && (c < 0x800 || (c >= 0xd800 && c <= 0xdfff)))
        || (n == 4 && (c < 0x10000 || c > 0x10ffff))) {
        return 0;
    }
    *cp = c;
    return n;
}

/* Shown escaped: controls, C1 controls, and the bidirectional marks and
 * overrides that reorder what a terminal shows. */
static int cp_unsafe(apr_uint32_t c)
{
    return c < 0x20 || (c >= 0x7f && c <= 0x9f) || c == 0x061c
           || c == 0x200e || c == 0x200f || (c >= 0x202a && c <= 0x202e)
           || (c >= 0x2066 && c <= 0x2069);
}

const char *w4a_printable(apr_pool_t *p, const char *s)
{
    const unsigned char *q = (const unsigned char *)s;
    char *out, *o;
    apr_uint32_t cp;
    int n, clean = 1;

    while (*q && clean) {
        n = utf8_at(q, &cp);
        clean = n > 0 && !cp_unsafe(cp);
        q += n > 0 ? n : 1;
    }
    if (clean) {
        return s;
    }
    o = out = apr_palloc(p, strlen(s) * 4 + 1);
    for (q = (const unsigned char *)s; *q; ) {
        n = utf8_at(q, &cp);
        if (n > 0 && !cp_unsafe(cp)) {
            memcpy(o, q, (size_t)n);
            o += n;
            q += n;
            continue;
        }
        if (n == 0) {
            n = 1;              /* a byte that is no UTF-8: that byte */
        }
        while (n-- > 0) {
            o += apr_snprintf(o, 5, "\\x%02x", *q++);
        }
    }
    *o = '\0';
    return out;
}
