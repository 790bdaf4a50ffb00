/*
 * w4a-logsplit's input lines (support/w4a-logsplit.c): the
 * "<uid>:<gid>:<log dir> " prefix (parse_prefix: parse_id, dir_problem,
 * base_of) and shown(), the printable copy of a refused line.  The tool's
 * source is included, its main() renamed (-Dmain=logsplit_main); bases
 * /datas and /home, --min-uid 1000.
 *
 * Invariants, checked against a plain reading of the format:
 * - accepted: uid and gid are 1 to 10 decimal digits, >= 1000 and below
 *   2^32-1; the directory is absolute, of printable ASCII without blank,
 *   has no empty, "." or ".." component, no trailing '/', at most 4000
 *   bytes, strictly below a base; the rest is what follows the first
 *   blank, and the directory ends at that blank;
 * - shown() writes a terminated string within its buffer, printable, each
 *   other byte as \xHH.
 */
#include "fuzz_common.h"

#define main logsplit_main
#include "../../support/w4a-logsplit.c"
#undef main

static int digits_id(const char *s, const char *e, unsigned long *v)
{
    const char *q;

    if (e - s < 1 || e - s > 10) {
        return 0;
    }
    for (*v = 0, q = s; q < e; q++) {
        if (*q < '0' || *q > '9') {
            return 0;
        }
        *v = *v * 10 + (unsigned long)(*q - '0');
    }
    return *v < 4294967295UL;
}

static void check_dir(const char *dir)
{
    size_t n = strlen(dir), i;
    const char *c;

    FUZZ_CHECK(dir[0] == '/' && n > 1 && n <= LS_MAX_DIR, "dir '%s'", dir);
    FUZZ_CHECK(dir[n - 1] != '/', "trailing '/' in '%s'", dir);
    for (i = 0; i < n; i++) {
        FUZZ_CHECK((unsigned char)dir[i] > 0x20 && (unsigned char)dir[i] < 0x7f,
                   "byte %02x in the dir", (unsigned char)dir[i]);
    }
    FUZZ_CHECK(!strstr(dir, "//") && !strstr(dir, "/./")
               && !strstr(dir, "/../"), "component of '%s'", dir);
    c = strrchr(dir, '/');
    FUZZ_CHECK(strcmp(c, "/.") && strcmp(c, "/.."), "last component of '%s'",
               dir);
    FUZZ_CHECK((!strncmp(dir, "/datas/", 7) && dir[7])
               || (!strncmp(dir, "/home/", 6) && dir[6]),
               "'%s' not below a base", dir);
}

static void check_shown(const char *line, size_t len)
{
    char buf[LS_LINE_SHOWN * 4 + 8], small[16];
    const char *out;
    size_t i;

    out = shown(line, len, buf, sizeof(buf));
    FUZZ_CHECK(out == buf && strlen(buf) < sizeof(buf), "shown overruns");
    for (i = 0; buf[i]; i++) {
        FUZZ_CHECK((unsigned char)buf[i] >= 0x20
                   && (unsigned char)buf[i] < 0x7f, "unprintable byte shown");
        if (buf[i] == '\\') {
            FUZZ_CHECK(buf[i + 1] == 'x' && buf[i + 2] && buf[i + 3],
                       "bare backslash shown");
        }
    }
    out = shown(line, len, small, sizeof(small));
    FUZZ_CHECK(strlen(small) < sizeof(small), "shown overruns a small buffer");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    unsigned long uid = 0, gid = 0, u2, g2;
    char *line, *orig, *dir = NULL, *rest = NULL, *sp, *c1, *c2;
    size_t len, dirlen = 0;
    const char *why;
    int base = -1;

    if (!ready) {
        bases[0].path = "/datas";
        bases[0].len = 6;
        bases[1].path = "/home";
        bases[1].len = 5;
        nbases = 2;
        min_uid = 1000;
        ready = 1;
    }
    /* as run() hands them over: one line, with its '\n' */
    len = size;
    if (memchr(data, '\n', size)) {
        len = (size_t)((const uint8_t *)memchr(data, '\n', size) - data);
    }
    line = malloc(len + 1);
    memcpy(line, data, len);
    line[len++] = '\n';
    orig = malloc(len);
    memcpy(orig, line, len);

    check_shown(line, len);
    why = parse_prefix(line, len, &uid, &gid, &dir, &dirlen, &base, &rest);
    if (why) {
        free(line);
        free(orig);
        return 0;
    }
    sp = memchr(orig, ' ', len);
    FUZZ_CHECK(sp && rest == line + (sp - orig) + 1, "rest elsewhere than "
               "after the first blank");
    c1 = memchr(orig, ':', (size_t)(sp - orig));
    c2 = c1 ? memchr(c1 + 1, ':', (size_t)(sp - c1 - 1)) : NULL;
    FUZZ_CHECK(c2 && digits_id(orig, c1, &u2) && digits_id(c1 + 1, c2, &g2)
               && u2 == uid && g2 == gid, "ids %lu:%lu", uid, gid);
    FUZZ_CHECK(uid >= 1000 && gid >= 1000, "ids %lu:%lu below 1000", uid, gid);
    FUZZ_CHECK(dir == line + (c2 - orig) + 1 && strlen(dir) == dirlen
               && dir + dirlen <= line + (sp - orig), "dir bounds");
    check_dir(dir);
    FUZZ_CHECK(base >= 0 && base < nbases && !strncmp(dir, bases[base].path,
                                                      bases[base].len),
               "base %d", base);
    free(line);
    free(orig);
    return 0;
}
