/*
 * w4a-logsplit: per-hosting copies of access-log lines, as an httpd piped
 * logger.  See docs/w4a-logsplit.md.
 *
 * Each input line is "<uid>:<gid>:<log dir> <rest of the line>": the request
 * note w4a-log that mod_w4a_vhost sets, then the operator's log format.  The
 * rest is appended to <log dir>/access.log.  The file is opened with the
 * hosting's own file-system identity (setfsgid/setfsuid), walking the
 * directories below the --base without following a symlink anyone but root
 * could have placed, and with O_NOFOLLOW: a customer's symlink never makes
 * this root process write elsewhere, and the file belongs to the hosting.
 * Each line is one write() on an O_APPEND descriptor: never split, never
 * interleaved with another writer's line.
 *
 * Messages go to standard error, which httpd makes its error log, in
 * httpd's format, tagged W4A00910..W4A00919.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LS_MAX_LINE      16384      /* longer lines are cut, not split */
#define LS_READ_BUF      65536
#define LS_MAX_BASES     64
#define LS_MAX_DIR       4000       /* + "/access.log" stays below PATH_MAX */
#define LS_LOG_NAME      "access.log"
#define LS_NOTE_SLOTS    1024       /* per-dir complaint memory (direct-mapped) */
#define LS_NOTE_EVERY    60         /* seconds between complaints per dir */
#define LS_BUDGET        100        /* refused-line messages per minute */
#define LS_LINE_SHOWN    300        /* bytes of a refused line shown */

#define LS_ERR    "error"
#define LS_WARN   "warn"
#define LS_NOTICE "notice"

/* ------------------------------------------------------------------ */
/* Options and process state.                                          */

typedef struct {
    const char *path;           /* without trailing '/' */
    size_t      len;
} ls_base;

typedef struct ls_file ls_file;
struct ls_file {
    char    *dir;               /* NULL: slot unused */
    size_t   dirlen;
    uint32_t hash;
    uid_t    uid;
    gid_t    gid;
    int      fd;
    dev_t    dev;
    ino_t    ino;
    time_t   checked;           /* monotonic: last rotation check */
    ls_file *hnext;             /* hash chain */
    ls_file *prev, *next;       /* LRU list, most recently used first */
};

typedef struct {
    uint32_t hash;
    char    *dir;
    time_t   last;              /* monotonic: last complaint */
    unsigned long dropped;      /* lines dropped since */
} ls_note;

static ls_base bases[LS_MAX_BASES];
static int nbases;
static unsigned long min_uid = 1000;
static long max_files = 256;
static long check_every = 5;
static long drain_secs = 30;

static ls_file *slots;          /* max_files entries */
static ls_file **buckets;
static size_t nbuckets;         /* power of two */
static ls_file *lru_head, *lru_tail;
static ls_note notes[LS_NOTE_SLOTS];

static uid_t root_uid;
static gid_t root_gid;

static volatile sig_atomic_t got_hup, got_term;

static unsigned long n_written, n_refused, n_failed, n_truncated;
static time_t budget_start;
static unsigned long budget_used, budget_hidden;

static void on_signal(int sig)
{
    if (sig == SIGHUP) {
        got_hup = 1;
    }
    else {
        got_term = 1;
    }
}

static time_t mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

/* ------------------------------------------------------------------ */
/* Messages, in httpd's error-log format (our stderr is its error log). */

static void say(const char *level, const char *tag, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(const char *level, const char *tag, const char *fmt, ...)
{
    char when[64], msg[1024];
    struct timeval tv;
    struct tm tm;
    va_list ap;

    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    strftime(when, sizeof(when), "%a %b %d %H:%M:%S", &tm);
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* one fprintf per message on an unbuffered stream: one write() */
    fprintf(stderr, "[%s.%06ld %d] [w4a_logsplit:%s] [pid %ld] %s: %s\n",
            when, (long)tv.tv_usec, tm.tm_year + 1900, level, (long)getpid(),
            tag, msg);
}

/* A printable copy of (part of) an input line, for a message. */
static const char *shown(const char *s, size_t len, char *buf, size_t size)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, o = 0;

    for (i = 0; i < len && o + 5 < size; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\n') {
            break;
        }
        if (ch < 0x20 || ch >= 0x7f || ch == '\\') {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[ch >> 4];
            buf[o++] = hex[ch & 15];
        }
        else {
            buf[o++] = (char)ch;
        }
    }
    if (i < len && s[i] != '\n' && o + 4 < size) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

/* At most LS_BUDGET refused-line messages a minute: a misconfigured
 * CustomLog must not bury httpd's error log. */
static int budget_ok(time_t now)
{
    if (now - budget_start >= 60) {
        if (budget_hidden) {
            say(LS_WARN, "W4A00914", "%lu more refused lines in the last "
                "minute were not shown", budget_hidden);
        }
        budget_start = now;
        budget_used = budget_hidden = 0;
    }
    if (budget_used < LS_BUDGET) {
        budget_used++;
        return 1;
    }
    budget_hidden++;
    return 0;
}

static void refuse(const char *why, const char *line, size_t len)
{
    char buf[LS_LINE_SHOWN * 4 + 8];

    n_refused++;
    if (budget_ok(mono_now())) {
        say(LS_ERR, "W4A00910", "line refused (%s), not written: %s", why,
            shown(line, len, buf, sizeof(buf)));
    }
}

static uint32_t hash_of(const char *s, size_t len, uid_t uid, gid_t gid)
{
    uint32_t h = 2166136261u;                   /* FNV-1a */
    size_t i;

    for (i = 0; i < len; i++) {
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    }
    h = (h ^ (uint32_t)uid) * 16777619u;
    return (h ^ (uint32_t)gid) * 16777619u;
}

/* A line for a directory whose file cannot be opened or written: said once
 * a minute per directory, with the count of lines dropped meanwhile. */
static void dir_failed(const char *dir, size_t dirlen, uint32_t h,
                       const char *why)
{
    ls_note *nt = &notes[h & (LS_NOTE_SLOTS - 1)];
    time_t now = mono_now();

    n_failed++;
    if (nt->dir && nt->hash == h && !strcmp(nt->dir, dir)
        && now - nt->last < LS_NOTE_EVERY) {
        nt->dropped++;
        return;
    }
    if (nt->dir && nt->hash == h && !strcmp(nt->dir, dir) && nt->dropped) {
        say(LS_ERR, "W4A00912", "%s/" LS_LOG_NAME ": %s; line dropped "
            "(and %lu more since the last message)", dir, why, nt->dropped);
    }
    else {
        say(LS_ERR, "W4A00912", "%s/" LS_LOG_NAME ": %s; line dropped "
            "(said once a minute for this directory)", dir, why);
    }
    if (!nt->dir || nt->hash != h || strcmp(nt->dir, dir)) {
        char *copy = malloc(dirlen + 1);
        if (!copy) {
            return;
        }
        memcpy(copy, dir, dirlen + 1);
        free(nt->dir);
        nt->dir = copy;
        nt->hash = h;
    }
    nt->last = now;
    nt->dropped = 0;
}

/* ------------------------------------------------------------------ */
/* Validation of the "<uid>:<gid>:<dir>" prefix.                        */

/* Decimal, no sign, no blanks, fits an id and is not (uid_t)-1. */
static int parse_id(const char *s, const char *end, unsigned long *out)
{
    unsigned long v = 0;

    if (s == end || end - s > 10) {
        return 0;
    }
    for (; s < end; s++) {
        if (*s < '0' || *s > '9') {
            return 0;
        }
        v = v * 10 + (unsigned long)(*s - '0');
    }
    if (v >= 4294967295UL) {
        return 0;
    }
    *out = v;
    return 1;
}

/* The index of the base @a dir lies strictly below, or -1. */
static int base_of(const char *dir, size_t len)
{
    int i;

    for (i = 0; i < nbases; i++) {
        if (len > bases[i].len + 1 && dir[bases[i].len] == '/'
            && !memcmp(dir, bases[i].path, bases[i].len)) {
            return i;
        }
    }
    return -1;
}

/* Absolute, printable, no empty, "." or ".." component, not too long. */
static const char *dir_problem(const char *dir, size_t len)
{
    const char *p, *c;

    if (dir[0] != '/') {
        return "log directory not absolute";
    }
    if (len > LS_MAX_DIR) {
        return "log directory path too long";
    }
    for (p = dir; p < dir + len; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
            return "log directory holds a control or non-ASCII byte";
        }
    }
    for (c = dir + 1; c <= dir + len; c = p + 1) {
        p = memchr(c, '/', (size_t)(dir + len - c));
        if (!p) {
            p = dir + len;
        }
        if (p == c || (p - c == 1 && c[0] == '.')
            || (p - c == 2 && c[0] == '.' && c[1] == '.')) {
            return "log directory has an empty, '.' or '..' component";
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Opening as the hosting.                                             */

static int become(uid_t uid, gid_t gid)
{
    setfsgid(gid);
    setfsuid(uid);
    /* setfs*id(-1) fails and returns the current value: check it took */
    return (uid_t)setfsuid((uid_t)-1) == uid && (gid_t)setfsgid((gid_t)-1) == gid;
}

static void unbecome(void)
{
    setfsuid(root_uid);
    setfsgid(root_gid);
}

/* May a symlink in this directory be followed?  Only when nobody but root
 * could have put it there. */
static int trusted_dir(int dfd)
{
    struct stat st;

    return fstat(dfd, &st) == 0 && st.st_uid == 0
           && !(st.st_mode & (S_IWGRP | S_IWOTH));
}

/*
 * Open <dir>/access.log for appending, with the hosting's identity.  The
 * base itself is opened as given (the operator's path); each component
 * below it is opened without following a symlink unless its parent
 * directory is root's and writable by root only.  Returns the fd, or -1
 * with *why set.
 */
static int open_log(const char *dir, int base, uid_t uid, gid_t gid,
                    struct stat *st, const char **why)
{
    char comp[LS_MAX_DIR + 1];
    const char *c, *p, *end = dir + strlen(dir);
    int dfd, fd, err = 0;

    *why = NULL;
    if (!become(uid, gid)) {
        unbecome();
        *why = "cannot take the hosting's file-system identity "
               "(w4a-logsplit must run as root)";
        return -1;
    }
    dfd = open(bases[base].path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        err = errno;
        *why = "cannot reach the --base directory";
        goto fail;
    }
    for (c = dir + bases[base].len + 1; c < end; c = p + 1) {
        int nfd, flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
        p = memchr(c, '/', (size_t)(end - c));
        if (!p) {
            p = end;
        }
        memcpy(comp, c, (size_t)(p - c));
        comp[p - c] = '\0';
        if (!trusted_dir(dfd)) {
            flags |= O_NOFOLLOW;
        }
        nfd = openat(dfd, comp, flags);
        if (nfd < 0) {
            err = errno;
            if (err == ENOENT) {
                *why = "no such log directory";
            }
            else if ((err == ENOTDIR || err == ELOOP) && (flags & O_NOFOLLOW)) {
                *why = "a component of the log directory is a symbolic link "
                       "or not a directory";
            }
            close(dfd);
            goto fail;
        }
        close(dfd);
        dfd = nfd;
    }
    /* O_NONBLOCK: a FIFO left there must not block us (ENXIO instead) */
    fd = openat(dfd, LS_LOG_NAME, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW
                | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0640);
    err = errno;
    close(dfd);
    if (fd < 0) {
        if (err == ELOOP) {
            *why = "access.log is a symbolic link";
        }
        else if (err == ENXIO) {
            *why = "access.log is a FIFO or a device";
        }
        goto fail;
    }
    unbecome();
    if (fstat(fd, st) != 0) {
        err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    if (!S_ISREG(st->st_mode)) {
        *why = "access.log is not a regular file";
    }
    else if (st->st_uid != uid) {
        *why = "access.log is not owned by the hosting's uid";
    }
    else if (fcntl(fd, F_SETFL, O_WRONLY | O_APPEND) != 0) {
        *why = "cannot make the file blocking";
    }
    if (*why) {
        close(fd);
        errno = EPERM;
        return -1;
    }
    return fd;

fail:
    unbecome();
    errno = err ? err : EPERM;
    return -1;
}

/* ------------------------------------------------------------------ */
/* The cache of open files: hash table + LRU list.                    */

static void lru_unlink(ls_file *f)
{
    if (f->prev) {
        f->prev->next = f->next;
    }
    else {
        lru_head = f->next;
    }
    if (f->next) {
        f->next->prev = f->prev;
    }
    else {
        lru_tail = f->prev;
    }
    f->prev = f->next = NULL;
}

static void lru_push(ls_file *f)
{
    f->prev = NULL;
    f->next = lru_head;
    if (lru_head) {
        lru_head->prev = f;
    }
    lru_head = f;
    if (!lru_tail) {
        lru_tail = f;
    }
}

static void file_close(ls_file *f)
{
    ls_file **pp;

    if (!f->dir) {
        return;
    }
    for (pp = &buckets[f->hash & (nbuckets - 1)]; *pp; pp = &(*pp)->hnext) {
        if (*pp == f) {
            *pp = f->hnext;
            break;
        }
    }
    lru_unlink(f);
    if (f->fd >= 0) {
        close(f->fd);
    }
    free(f->dir);
    f->dir = NULL;
    f->fd = -1;
    f->hnext = NULL;
}

static void close_all(void)
{
    long i;

    for (i = 0; i < max_files; i++) {
        file_close(&slots[i]);
    }
}

static ls_file *free_slot(void)
{
    long i;

    for (i = 0; i < max_files; i++) {
        if (!slots[i].dir) {
            return &slots[i];
        }
    }
    return NULL;
}

/* Has the file at the path been rotated away (or replaced)? */
static int rotated(const ls_file *f)
{
    char path[LS_MAX_DIR + sizeof(LS_LOG_NAME) + 2];
    struct stat st;

    snprintf(path, sizeof(path), "%s/" LS_LOG_NAME, f->dir);
    return lstat(path, &st) != 0 || st.st_ino != f->ino || st.st_dev != f->dev;
}

static ls_file *get_file(const char *dir, size_t dirlen, int base, uid_t uid,
                         gid_t gid, uint32_t h, const char **why)
{
    ls_file *f;
    struct stat st;
    time_t now = mono_now();
    int fd, tries;

    for (f = buckets[h & (nbuckets - 1)]; f; f = f->hnext) {
        if (f->hash == h && f->uid == uid && f->gid == gid
            && f->dirlen == dirlen && !memcmp(f->dir, dir, dirlen)) {
            break;
        }
    }
    if (f && now - f->checked >= check_every) {
        f->checked = now;
        if (rotated(f)) {
            file_close(f);
            f = NULL;
        }
    }
    if (f) {
        if (f != lru_head) {
            lru_unlink(f);
            lru_push(f);
        }
        return f;
    }

    if (!free_slot() && lru_tail) {
        /* room first: never more than max_files open, even for a moment */
        file_close(lru_tail);
    }
    for (tries = 0; ; tries++) {
        fd = open_log(dir, base, uid, gid, &st, why);
        if (fd >= 0 || (errno != EMFILE && errno != ENFILE) || !lru_tail
            || tries > 4) {
            break;
        }
        file_close(lru_tail);           /* out of descriptors: make room */
    }
    if (fd < 0) {
        if (!*why) {
            *why = strerror(errno);
        }
        return NULL;
    }
    f = free_slot();
    if (!f) {
        file_close(lru_tail);
        f = free_slot();
    }
    f->dir = malloc(dirlen + 1);
    if (!f->dir) {
        close(fd);
        *why = "out of memory";
        return NULL;
    }
    memcpy(f->dir, dir, dirlen + 1);
    f->dirlen = dirlen;
    f->hash = h;
    f->uid = uid;
    f->gid = gid;
    f->fd = fd;
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    f->checked = now;
    f->hnext = buckets[h & (nbuckets - 1)];
    buckets[h & (nbuckets - 1)] = f;
    lru_push(f);
    return f;
}

/* ------------------------------------------------------------------ */
/* One line.                                                           */

/* The "<uid>:<gid>:<dir> " prefix of @a line (@a len bytes): on success
 * the ids, the directory (its trailing '/' dropped, NUL-terminated in
 * place), the index of its base and the rest of the line; else why not.
 * No file system access (t/fuzz/fuzz_logsplit.c calls it). */
static const char *parse_prefix(char *line, size_t len, unsigned long *uid,
                                unsigned long *gid, char **dirp,
                                size_t *dirlenp, int *basep, char **restp)
{
    char *sp, *c1, *c2, *dir;
    size_t dirlen;
    const char *why;
    int base;

    sp = memchr(line, ' ', len);
    if (!sp || sp == line) {
        return "no \"<uid>:<gid>:<dir> \" prefix";
    }
    if (sp - line == 1 && line[0] == '-') {
        return "no w4a-log note: CustomLog without env=W4A_LOG?";
    }
    c1 = memchr(line, ':', (size_t)(sp - line));
    c2 = c1 ? memchr(c1 + 1, ':', (size_t)(sp - c1 - 1)) : NULL;
    if (!c2) {
        return "malformed \"<uid>:<gid>:<dir>\" prefix";
    }
    if (!parse_id(line, c1, uid) || !parse_id(c1 + 1, c2, gid)) {
        return "uid or gid not a number";
    }
    if (*uid < min_uid || *gid < min_uid || *uid == 0 || *gid == 0) {
        /* root's identity never writes into a hosting's tree, whatever
         * --min-uid says */
        return "uid or gid below --min-uid (or 0)";
    }
    dir = c2 + 1;
    dirlen = (size_t)(sp - dir);
    if (dirlen > 1 && dir[dirlen - 1] == '/') {
        dirlen--;
    }
    if ((why = dir_problem(dir, dirlen)) != NULL) {
        return why;
    }
    if ((base = base_of(dir, dirlen)) < 0) {
        return "log directory not below any --base";
    }
    dir[dirlen] = '\0';
    *dirp = dir;
    *dirlenp = dirlen;
    *basep = base;
    *restp = sp + 1;
    return NULL;
}

/* @a line holds @a len bytes ending with '\n'; it may be modified. */
static void handle(char *line, size_t len)
{
    char *dir, *rest;
    unsigned long uid, gid;
    size_t dirlen, n;
    const char *why;
    ls_file *f;
    uint32_t h;
    ssize_t w;
    int base;

    if ((why = parse_prefix(line, len, &uid, &gid, &dir, &dirlen, &base,
                            &rest)) != NULL) {
        refuse(why, line, len);
        return;
    }

    h = hash_of(dir, dirlen, (uid_t)uid, (gid_t)gid);
    f = get_file(dir, dirlen, base, (uid_t)uid, (gid_t)gid, h, &why);
    if (!f) {
        dir_failed(dir, dirlen, h, why);
        return;
    }
    /* the rest of the line, with its newline, in a single write() */
    n = len - (size_t)(rest - line);
    do {
        w = write(f->fd, rest, n);
    } while (w < 0 && errno == EINTR);
    if (w != (ssize_t)n) {
        dir_failed(dir, dirlen, h, w < 0 ? strerror(errno)
                                         : "short write (disk full or quota?)");
        file_close(f);
        return;
    }
    n_written++;
}

/* ------------------------------------------------------------------ */
/* Input: whole lines from stdin; signals between reads.               */

static void between_lines(void)
{
    if (got_hup) {
        got_hup = 0;
        close_all();                    /* reopened on their next line */
    }
}

static void run(void)
{
    static char buf[LS_READ_BUF];
    static char line[LS_MAX_LINE + 1];
    size_t len = 0;
    int cut = 0;
    time_t drain_end = 0;

    for (;;) {
        ssize_t r;
        char *p, *q, *end;

        if (got_term && !drain_end) {
            drain_end = mono_now() + drain_secs;
            say(LS_NOTICE, "W4A00915", "SIGTERM: writing what httpd still "
                "sends, until end of input or %ld s", drain_secs);
        }
        if (drain_end) {
            struct pollfd pfd = { 0, POLLIN, 0 };
            time_t left = drain_end - mono_now();
            int ready = left > 0 ? poll(&pfd, 1, (int)(left * 1000)) : 0;
            if (ready < 0 && errno == EINTR) {
                between_lines();
                continue;
            }
            if (ready == 0) {
                say(LS_WARN, "W4A00916", "input still open %ld s after "
                    "SIGTERM: exiting", drain_secs);
                break;
            }
        }
        r = read(0, buf, sizeof(buf));
        if (r < 0) {
            if (errno == EINTR) {
                between_lines();
                continue;
            }
            say(LS_ERR, "W4A00917", "reading standard input: %s",
                strerror(errno));
            break;
        }
        if (r == 0) {
            break;
        }
        for (p = buf, end = buf + r; p < end; p = q + 1) {
            size_t take;
            q = memchr(p, '\n', (size_t)(end - p));
            take = (size_t)((q ? q : end) - p);
            if (len + take > LS_MAX_LINE) {
                take = LS_MAX_LINE - len;
                cut = 1;
            }
            memcpy(line + len, p, take);
            len += take;
            if (!q) {
                break;
            }
            line[len++] = '\n';
            if (cut) {
                n_truncated++;
                if (budget_ok(mono_now())) {
                    say(LS_WARN, "W4A00913", "line longer than %d bytes cut "
                        "to that length", LS_MAX_LINE);
                }
                cut = 0;
            }
            handle(line, len);
            len = 0;
            between_lines();
        }
    }
    if (len) {                          /* a last line without its newline */
        line[len++] = '\n';
        handle(line, len);
    }
}

/* ------------------------------------------------------------------ */
/* Start and end.                                                      */

static void usage(FILE *f)
{
    fprintf(f,
"Usage: w4a-logsplit --base DIR [--base DIR]... [options]\n"
"\n"
"An httpd piped logger: reads access-log lines\n"
"    <uid>:<gid>:<log dir> <rest of the line>\n"
"on standard input (the first field is mod_w4a_vhost's request note\n"
"w4a-log) and appends <rest of the line> to <log dir>/access.log, opened\n"
"with the hosting's uid:gid and without following the customer's symlinks,\n"
"so the file belongs to the hosting and root never writes elsewhere.\n"
"\n"
"  CustomLog \"|/usr/sbin/w4a-logsplit --base /datas\" \\\n"
"    \"%%{w4a-log}n %%h %%l %%u %%t \\\"%%r\\\" %%>s %%b \\\"%%{Referer}i\\\" \\\"%%{User-Agent}i\\\"\" env=W4A_LOG\n"
"\n"
"Options:\n"
"  --base DIR         log directories must lie below DIR (repeatable; at\n"
"                     least one; not /)\n"
"  --min-uid N        refuse lines whose uid or gid is below N [1000]\n"
"  --max-files N      log files kept open, least recently used closed\n"
"                     first [256]\n"
"  --check-every S    seconds between checks that a file was not rotated\n"
"                     away (0: before every line) [5]\n"
"  --drain S          after SIGTERM, keep writing what arrives until end of\n"
"                     input, at most S seconds [30]\n"
"  -h, --help         this text\n"
"\n"
"Lines are cut at %d bytes, never split. Refused lines and failures are\n"
"reported on standard error (httpd's error log), tagged W4A0091x.\n"
"SIGHUP reopens every file. Exit status: 0 at end of input, 2 on a usage\n"
"error.\n", LS_MAX_LINE);
}

static int number_arg(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        return 0;
    }
    *out = v;
    return 1;
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "w4a-logsplit: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(w4a-logsplit --help for the usage)\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct sigaction sa;
    struct rlimit rl;
    long i, v;

    for (i = 1; i < argc; i++) {
        const char *opt = argv[i], *arg;
        if (!strcmp(opt, "-h") || !strcmp(opt, "--help")) {
            usage(stdout);
            return 0;
        }
        if (strcmp(opt, "--base") && strcmp(opt, "--min-uid")
            && strcmp(opt, "--max-files") && strcmp(opt, "--check-every")
            && strcmp(opt, "--drain")) {
            return usage_error("unknown argument '%s'", opt);
        }
        if (i + 1 >= argc) {
            return usage_error("%s needs a value", opt);
        }
        arg = argv[++i];
        if (!strcmp(opt, "--base")) {
            size_t n = strlen(arg);
            while (n > 1 && arg[n - 1] == '/') {
                n--;
            }
            if (arg[0] != '/' || n <= 1 || dir_problem(arg, n)) {
                return usage_error("--base '%s': an absolute, clean "
                                   "directory other than / is needed", arg);
            }
            if (nbases == LS_MAX_BASES) {
                return usage_error("too many --base (at most %s)", "64");
            }
            bases[nbases].path = strndup(arg, n);
            bases[nbases++].len = n;
        }
        else if (!strcmp(opt, "--min-uid") && number_arg(arg, 0, 4294967294L, &v)) {
            min_uid = (unsigned long)v;
        }
        else if (!strcmp(opt, "--max-files") && number_arg(arg, 1, 1000000, &v)) {
            max_files = v;
        }
        else if (!strcmp(opt, "--check-every") && number_arg(arg, 0, 86400, &v)) {
            check_every = v;
        }
        else if (!strcmp(opt, "--drain") && number_arg(arg, 0, 86400, &v)) {
            drain_secs = v;
        }
        else {
            return usage_error("%s: the value is not a number in range", opt);
        }
    }
    if (nbases == 0) {
        return usage_error("%s", "at least one --base DIR is needed");
    }

    setvbuf(stderr, NULL, _IONBF, 0);
    umask(027);                         /* files are created 0640 */
    root_uid = geteuid();
    root_gid = getegid();
    if (root_uid == 0 && setgroups(0, NULL) != 0) {
        /* the fs identity must be the hosting's alone, without root's
         * supplementary groups */
        say(LS_ERR, "W4A00918", "setgroups: %s", strerror(errno));
        return 1;
    }
    if (root_uid != 0) {
        say(LS_WARN, "W4A00918", "not running as root: only lines of uid "
            "%ld can be written", (long)root_uid);
    }

    /* one descriptor per open file, plus a few */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0
        && rl.rlim_cur < (rlim_t)max_files + 16) {
        rl.rlim_cur = (rlim_t)max_files + 16;
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur > rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
        }
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    slots = calloc((size_t)max_files, sizeof(*slots));
    for (nbuckets = 16; nbuckets < (size_t)max_files * 2; nbuckets <<= 1)
        ;
    buckets = calloc(nbuckets, sizeof(*buckets));
    if (!slots || !buckets) {
        say(LS_ERR, "W4A00918", "out of memory");
        return 1;
    }
    for (i = 0; i < max_files; i++) {
        slots[i].fd = -1;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;          /* no SA_RESTART: read() returns */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    budget_start = mono_now();

    run();

    close_all();
    if (n_refused || n_failed || n_truncated) {
        say(LS_NOTICE, "W4A00911", "end of input: %lu lines written, "
            "%lu refused, %lu dropped (file not writable), %lu cut",
            n_written, n_refused, n_failed, n_truncated);
    }
    return 0;
}
