/*
 * w4a-logsplit: per-hosting copies of access-log lines, as an httpd piped
 * logger.  See docs/w4a-logsplit.md.
 *
 * Each input line is "<uid>:<gid>:<log dir> <rest of the line>" (the
 * request note w4a-log that mod_w4a_vhost sets, then the usual format).
 * The rest is appended to <log dir>/access.log, opened with the hosting's
 * own file-system identity (setfsuid/setfsgid), O_NOFOLLOW, so that a
 * customer's symlink never makes root write elsewhere.  One write() per
 * line with O_APPEND: lines are never split or interleaved.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE  16384
#define MAX_BASES 16

typedef struct {
    char   *dir;        /* NULL: free */
    int     fd;
    dev_t   dev;
    ino_t   ino;
    time_t  used;       /* for LRU eviction */
    time_t  checked;    /* last rotation check */
} open_file;

static const char *bases[MAX_BASES];
static int nbases;
static unsigned long min_uid = 1000;
static int max_files = 256;
static int check_every = 5;
static open_file *files;
static volatile sig_atomic_t reopen_all;
static unsigned long refused, written, failed;

static void on_hup(int sig)
{
    (void)sig;
    reopen_all = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
"Usage: w4a-logsplit --base DIR [--base DIR ...] [options]\n"
"\n"
"Reads access-log lines \"<uid>:<gid>:<log dir> <line>\" on standard input\n"
"(an httpd piped logger) and appends <line> to <log dir>/access.log, opened\n"
"as uid:gid so that a symlink cannot redirect the write.\n"
"\n"
"Options:\n"
"  --base DIR        log directories must lie under DIR (repeatable; required)\n"
"  --min-uid N       refuse uids and gids below N [1000]\n"
"  --max-files N     open files kept (least recently used closed) [256]\n"
"  --check-every S   seconds between checks for a rotated file [5]\n"
"  -h, --help        this text\n"
"\n"
"SIGHUP reopens every file. Exits 0 at end of input.\n");
}

static void complain(const char *what, const char *dir, const char *why)
{
    /* stderr of a piped logger is httpd's error log */
    fprintf(stderr, "w4a-logsplit: W4A00910: %s %s: %s\n", what,
            dir ? dir : "-", why);
}

static int under_base(const char *dir)
{
    int i;
    for (i = 0; i < nbases; i++) {
        size_t n = strlen(bases[i]);
        if (!strncmp(dir, bases[i], n) && dir[n] == '/') {
            return 1;
        }
    }
    return 0;
}

static void close_slot(open_file *f)
{
    if (f->fd >= 0) {
        close(f->fd);
    }
    free(f->dir);
    f->dir = NULL;
    f->fd = -1;
}

/* Open <dir>/access.log as uid:gid; -1 on failure (reason on stderr). */
static int open_as(const char *dir, uid_t uid, gid_t gid, struct stat *st)
{
    char path[4096];
    int fd, err;

    if (snprintf(path, sizeof(path), "%s/access.log", dir) >= (int)sizeof(path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    setfsgid(gid);
    setfsuid(uid);
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC
                    | O_NOCTTY, 0640);
    err = errno;
    setfsuid(0);
    setfsgid(0);
    if (fd >= 0 && (fstat(fd, st) != 0 || !S_ISREG(st->st_mode))) {
        close(fd);
        fd = -1;
        err = EINVAL;
    }
    errno = err;
    return fd;
}

static open_file *get_file(const char *dir, uid_t uid, gid_t gid, time_t now)
{
    open_file *lru = NULL, *f;
    struct stat st;
    int i;

    for (i = 0; i < max_files; i++) {
        f = &files[i];
        if (f->dir && !strcmp(f->dir, dir)) {
            if (reopen_all || now - f->checked >= check_every) {
                struct stat cur;
                char path[4096];
                f->checked = now;
                snprintf(path, sizeof(path), "%s/access.log", dir);
                if (reopen_all || lstat(path, &cur) != 0
                    || cur.st_ino != f->ino || cur.st_dev != f->dev) {
                    close_slot(f);      /* rotated or gone: reopen below */
                    break;
                }
            }
            f->used = now;
            return f;
        }
        if (!lru || !f->dir || (lru->dir && f->used < lru->used)) {
            lru = f;
        }
    }
    if (i < max_files) {
        lru = &files[i];                /* the slot just closed */
    }
    if (lru->dir) {
        close_slot(lru);
    }
    lru->fd = open_as(dir, uid, gid, &st);
    if (lru->fd < 0) {
        return NULL;
    }
    lru->dir = strdup(dir);
    lru->dev = st.st_dev;
    lru->ino = st.st_ino;
    lru->used = lru->checked = now;
    return lru;
}

static void handle(char *line, size_t len)
{
    char *sp, *c1, *c2, *end, *dir;
    unsigned long uid, gid;
    open_file *f;
    time_t now;

    sp = memchr(line, ' ', len);
    if (!sp || sp == line) {
        refused++;
        complain("line without a hosting prefix", NULL, "dropped");
        return;
    }
    *sp = '\0';
    if (!strcmp(line, "-")) {
        return;         /* request without the note: not ours */
    }
    c1 = strchr(line, ':');
    c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c2) {
        refused++;
        complain("malformed prefix", line, "dropped");
        return;
    }
    *c1 = *c2 = '\0';
    errno = 0;
    uid = strtoul(line, &end, 10);
    if (*end || errno || uid < min_uid) {
        refused++;
        complain("uid below --min-uid or invalid for", c2 + 1, "dropped");
        return;
    }
    gid = strtoul(c1 + 1, &end, 10);
    if (*end || errno || gid < min_uid) {
        refused++;
        complain("gid below --min-uid or invalid for", c2 + 1, "dropped");
        return;
    }
    dir = c2 + 1;
    if (dir[0] != '/' || strstr(dir, "/../") || strstr(dir, "/./")
        || (strlen(dir) >= 3 && !strcmp(dir + strlen(dir) - 3, "/.."))
        || !under_base(dir)) {
        refused++;
        complain("log directory outside every --base", dir, "dropped");
        return;
    }
    now = time(NULL);
    f = get_file(dir, (uid_t)uid, (gid_t)gid, now);
    if (!f) {
        failed++;
        complain("cannot open access.log in", dir, strerror(errno));
        return;
    }
    /* the rest of the line, with its newline, in one write */
    {
        char *rest = sp + 1;
        size_t n = len - (size_t)(rest - line);
        ssize_t w = write(f->fd, rest, n);
        if (w != (ssize_t)n) {
            failed++;
            complain("short write to", dir, w < 0 ? strerror(errno) : "short");
            close_slot(f);
            return;
        }
        written++;
    }
}

int main(int argc, char **argv)
{
    static char line[MAX_LINE + 2];
    size_t len = 0;
    int i, c, overflow = 0;
    struct sigaction sa;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        if (!strcmp(argv[i], "--base") && nbases < MAX_BASES
            && argv[i + 1][0] == '/') {
            bases[nbases++] = argv[++i];
        }
        else if (!strcmp(argv[i], "--min-uid")) {
            min_uid = strtoul(argv[++i], NULL, 10);
        }
        else if (!strcmp(argv[i], "--max-files")) {
            max_files = atoi(argv[++i]);
        }
        else if (!strcmp(argv[i], "--check-every")) {
            check_every = atoi(argv[++i]);
        }
        else {
            usage(stderr);
            return 2;
        }
    }
    if (nbases == 0 || max_files < 1 || check_every < 0) {
        usage(stderr);
        return 2;
    }
    files = calloc((size_t)max_files, sizeof(*files));
    if (!files) {
        return 2;
    }
    for (i = 0; i < max_files; i++) {
        files[i].fd = -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* Byte by byte through stdio's buffer: a line longer than MAX_LINE is
     * cut (and kept one line), never split in two. */
    while ((c = getchar_unlocked()) != EOF) {
        if (c != '\n') {
            if (len < MAX_LINE) {
                line[len++] = (char)c;
            }
            else {
                overflow = 1;
            }
            continue;
        }
        line[len++] = '\n';
        line[len] = '\0';
        handle(line, len);
        if (reopen_all) {
            for (i = 0; i < max_files; i++) {
                close_slot(&files[i]);
            }
            reopen_all = 0;
        }
        if (overflow) {
            complain("line longer than 16 KiB", NULL, "truncated");
            overflow = 0;
        }
        len = 0;
    }
    for (i = 0; i < max_files; i++) {
        close_slot(&files[i]);
    }
    if (refused || failed) {
        fprintf(stderr, "w4a-logsplit: W4A00911: end of input: %lu lines "
                "written, %lu refused, %lu failed\n", written, refused, failed);
    }
    return 0;
}
