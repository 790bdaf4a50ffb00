/*
 * Private copies of the map index: see w4a_map_open_copy() in w4a_map.h.
 *
 * The live index belongs to the operator, who may replace it with rename
 * (w4a-vhostmap compile), but also copy a file over it in place (cp),
 * truncate it, or edit it: a process that had mapped it would take a
 * SIGBUS at the first access past its new end.  So httpd never maps it:
 * a process that sees a new version reads it (read(), which only ever
 * returns short) into a file of a directory only httpd writes, and maps
 * that copy.  A copy is named by the identity of the version it was read
 * from, "map-<dev>-<ino>-<size>-<mtime>-<ctime>.index", and published with
 * link(), so it is never replaced nor written again once it has a name:
 * every child that sees the same version maps the same copy, and 100,000
 * hostings cost one copy per node, not one per child.
 */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_atomic.h>
#include <apr_strings.h>

#include "w4a_map.h"
#include "w4a_map_private.h"

#define COPY_PREFIX  "map-"
#define COPY_SUFFIX  ".index"
#define COPY_BUFSIZE (256 * 1024)

static volatile apr_uint32_t tmp_counter;  /* temp names of this process */

static void fid_of(w4a_map_fid_t *id, const struct stat *st)
{
    id->dev = (apr_uint64_t)st->st_dev;
    id->ino = (apr_uint64_t)st->st_ino;
    id->size = (apr_int64_t)st->st_size;
    id->mtime_ns = (apr_int64_t)st->st_mtim.tv_sec * 1000000000
                   + st->st_mtim.tv_nsec;
    id->ctime_ns = (apr_int64_t)st->st_ctim.tv_sec * 1000000000
                   + st->st_ctim.tv_nsec;
    id->mode = (unsigned int)(st->st_mode & 07777);
}

apr_status_t w4a_map_fid_stat(w4a_map_fid_t *id, const char *path)
{
    struct stat st;

    if (stat(path, &st) != 0) {
        return APR_FROM_OS_ERROR(errno);
    }
    fid_of(id, &st);
    return APR_SUCCESS;
}

int w4a_map_fid_same(const w4a_map_fid_t *a, const w4a_map_fid_t *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size
           && a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns;
}

static apr_status_t failf(const char **err, apr_pool_t *p, apr_status_t rv,
                          const char *fmt, ...)
{
    va_list ap;

    if (err) {
        va_start(ap, fmt);
        *err = apr_pvsprintf(p, fmt, ap);
        va_end(ap);
    }
    return rv;
}

/* A directory (not a symlink) nobody but its owner writes, the owner
 * being us (root trusts what root's tools made). */
static apr_status_t dir_check(const struct stat *st, const char *dir,
                              const char **err, apr_pool_t *p)
{
    if (!S_ISDIR(st->st_mode)) {
        return failf(err, p, APR_EACCES, "private directory %s is not a "
                     "directory (or is a symlink)", dir);
    }
    if (st->st_mode & 022) {
        return failf(err, p, APR_EACCES, "private directory %s is writable by "
                     "group or others (mode %04o)", dir,
                     (unsigned)(st->st_mode & 07777));
    }
    if (st->st_uid != geteuid() && geteuid() != 0) {
        return failf(err, p, APR_EACCES, "private directory %s belongs to uid "
                     "%ld, not to this process (%ld)", dir,
                     (long)st->st_uid, (long)geteuid());
    }
    return APR_SUCCESS;
}

static int is_copy_name(const char *name)
{
    apr_size_t n = strlen(name);

    if (name[0] == '.') {                   /* a temporary file */
        name++;
        n--;
        return n > strlen(COPY_PREFIX) + 4
               && !strncmp(name, COPY_PREFIX, strlen(COPY_PREFIX))
               && !strcmp(name + n - 4, ".tmp");
    }
    return n > strlen(COPY_PREFIX) + strlen(COPY_SUFFIX)
           && !strncmp(name, COPY_PREFIX, strlen(COPY_PREFIX))
           && !strcmp(name + n - strlen(COPY_SUFFIX), COPY_SUFFIX);
}

apr_status_t w4a_map_copy_dir(const char *dir, long uid, long gid, int clean,
                              const char **err, apr_pool_t *p)
{
    struct stat st;
    apr_status_t rv;
    int dfd;

    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        rv = APR_FROM_OS_ERROR(errno);
        return failf(err, p, rv, "cannot create the private directory %s: %s",
                     dir, strerror(errno));
    }
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        rv = APR_FROM_OS_ERROR(errno);
        return failf(err, p, rv, "cannot open the private directory %s "
                     "(a symlink?): %s", dir, strerror(errno));
    }
    if (geteuid() == 0 && uid >= 0
        && fchown(dfd, (uid_t)uid, (gid_t)gid) != 0) {
        rv = APR_FROM_OS_ERROR(errno);
        close(dfd);
        return failf(err, p, rv, "cannot give the private directory %s to "
                     "%ld:%ld: %s", dir, uid, gid, strerror(errno));
    }
    fchmod(dfd, 0700);          /* not ours: dir_check() says so below */
    if (fstat(dfd, &st) != 0) {
        rv = APR_FROM_OS_ERROR(errno);
        close(dfd);
        return failf(err, p, rv, "cannot stat %s: %s", dir, strerror(errno));
    }
    if ((rv = dir_check(&st, dir, err, p)) != APR_SUCCESS) {
        close(dfd);
        return rv;
    }
    if (clean) {
        DIR *d = fdopendir(dfd);
        struct dirent *de;

        if (!d) {
            close(dfd);
            return APR_SUCCESS;
        }
        while ((de = readdir(d)) != NULL) {
            if (is_copy_name(de->d_name)) {
                unlinkat(dirfd(d), de->d_name, 0);
            }
        }
        closedir(d);                        /* closes dfd */
        return APR_SUCCESS;
    }
    close(dfd);
    return APR_SUCCESS;
}

/* Everything of in (from its start) into out; 1 when it was exactly
 * want bytes. */
static apr_status_t copy_fd(int in, int out, apr_int64_t want, int *exact)
{
    char *buf = malloc(COPY_BUFSIZE);
    apr_int64_t total = 0;
    apr_status_t rv = APR_SUCCESS;

    if (!buf) {
        return APR_ENOMEM;
    }
    for (;;) {
        ssize_t n = read(in, buf, COPY_BUFSIZE), w = 0;
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            rv = APR_FROM_OS_ERROR(errno);
            break;
        }
        if (n == 0) {
            break;
        }
        total += n;
        if (total > want) {             /* grew: not the version expected */
            break;
        }
        while (w < n) {
            ssize_t k = write(out, buf + w, (size_t)(n - w));
            if (k < 0 && errno == EINTR) {
                continue;
            }
            if (k <= 0) {
                rv = k < 0 ? APR_FROM_OS_ERROR(errno) : APR_EGENERAL;
                break;
            }
            w += k;
        }
        if (rv != APR_SUCCESS) {
            break;
        }
    }
    free(buf);
    *exact = total == want;
    return rv;
}

/* Read the open source into a new temporary file of dir and publish it
 * as name; on success *cfd is the copy (ours, or one another process
 * published meanwhile). */
static apr_status_t make_copy(int src, const w4a_map_fid_t *before,
                              const char *dir, const struct stat *dst,
                              const char *name, int *cfd, const char **err,
                              apr_pool_t *p)
{
    struct stat st;
    w4a_map_fid_t after;
    apr_status_t rv;
    const char *tmp;
    int tfd, exact = 0;

    tmp = apr_psprintf(p, "%s/." COPY_PREFIX "%ld-%u.tmp", dir, (long)getpid(),
                       apr_atomic_inc32(&tmp_counter));
    unlink(tmp);                            /* left by a dead process */
    tfd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0400);
    if (tfd < 0) {
        rv = APR_FROM_OS_ERROR(errno);
        return failf(err, p, rv, "cannot create the private copy %s: %s",
                     tmp, strerror(errno));
    }
    rv = copy_fd(src, tfd, before->size, &exact);
    if (rv != APR_SUCCESS) {
        failf(err, p, rv, "copying the index into %s: %s", tmp,
              strerror(APR_TO_OS_ERROR(rv)));
    }
    else if (fstat(src, &st) != 0) {
        rv = failf(err, p, APR_FROM_OS_ERROR(errno), "cannot stat the index: "
                   "%s", strerror(errno));
    }
    else {
        fid_of(&after, &st);
        if (!exact || !w4a_map_fid_same(before, &after)) {
            rv = failf(err, p, APR_EAGAIN, "the index changed while it was "
                       "copied (being written in place?)");
        }
    }
    /* As the directory: a root parent's copies stay usable by the
     * children that will replace them. */
    if (rv == APR_SUCCESS && geteuid() == 0
        && fchown(tfd, dst->st_uid, dst->st_gid) != 0) {
        rv = failf(err, p, APR_FROM_OS_ERROR(errno), "cannot chown %s: %s",
                   tmp, strerror(errno));
    }
    if (rv == APR_SUCCESS && link(tmp, name) != 0 && errno != EEXIST) {
        rv = failf(err, p, APR_FROM_OS_ERROR(errno), "cannot publish the "
                   "private copy %s: %s", name, strerror(errno));
    }
    if (rv == APR_SUCCESS) {
        /* Ours, or (EEXIST) the same version another process published
         * first: opened by its name, which is what /proc/PID/maps shows. */
        close(tfd);
        tfd = open(name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (tfd < 0) {
            rv = failf(err, p, APR_EAGAIN, "the private copy %s went away",
                       name);
        }
    }
    unlink(tmp);
    if (rv != APR_SUCCESS) {
        if (tfd >= 0) {
            close(tfd);
        }
        return rv;
    }
    *cfd = tfd;
    return APR_SUCCESS;
}

apr_status_t w4a_map_open_copy(w4a_map_t **map, const char *path,
                               const w4a_map_fid_t *expected,
                               const char *dir, const char **err,
                               apr_pool_t *p)
{
    struct stat st, dst;
    w4a_map_fid_t now;
    apr_status_t rv;
    const char *name;
    char *keep;
    int fd, cfd;

    if (lstat(dir, &dst) != 0) {
        return failf(err, p, APR_FROM_OS_ERROR(errno), "private directory "
                     "%s: %s", dir, strerror(errno));
    }
    if ((rv = dir_check(&dst, dir, err, p)) != APR_SUCCESS) {
        return rv;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        return failf(err, p, APR_FROM_OS_ERROR(errno), "cannot open %s: %s",
                     path, strerror(errno));
    }
    if (fstat(fd, &st) != 0) {
        rv = APR_FROM_OS_ERROR(errno);
        close(fd);
        return failf(err, p, rv, "cannot stat %s: %s", path,
                     strerror(APR_TO_OS_ERROR(rv)));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return failf(err, p, APR_EINVAL, "%s is not a regular file", path);
    }
    fid_of(&now, &st);
    if (expected && !w4a_map_fid_same(&now, expected)) {
        close(fd);
        return failf(err, p, APR_EAGAIN, "%s changed since it was looked at",
                     path);
    }
    name = apr_psprintf(p, "%s/" COPY_PREFIX "%" APR_UINT64_T_HEX_FMT "-%"
                        APR_UINT64_T_HEX_FMT "-%" APR_INT64_T_FMT "-%"
                        APR_INT64_T_FMT "-%" APR_INT64_T_FMT COPY_SUFFIX, dir,
                        now.dev, now.ino, now.size, now.mtime_ns,
                        now.ctime_ns);
    rv = APR_SUCCESS;
    cfd = open(name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (cfd < 0 && errno == ENOENT) {
        rv = make_copy(fd, &now, dir, &dst, name, &cfd, err, p);
    }
    else if (cfd < 0) {
        rv = failf(err, p, APR_FROM_OS_ERROR(errno), "cannot open the private "
                   "copy %s: %s", name, strerror(errno));
    }
    close(fd);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    rv = w4a_map__load_fd(map, cfd, 1, name, err, p);
    close(cfd);
    if (rv != APR_SUCCESS) {
        unlink(name);                       /* a bad copy helps nobody */
        return rv;
    }
    keep = strdup(name);
    if (!keep) {
        w4a_map_close(*map);
        return failf(err, p, APR_ENOMEM, "out of memory");
    }
    w4a_map__set_copy(*map, keep);
    return APR_SUCCESS;
}

void w4a_map_discard(w4a_map_t *map)
{
    if (map && w4a_map__copy_path(map)) {
        unlink(w4a_map__copy_path(map));
    }
    w4a_map_close(map);
}

void w4a_map_retire(w4a_map_t *map)
{
    /* the name goes now (nothing new opens it), the mapping with the
     * last holder: a request that found its record in it keeps it */
    if (map && w4a_map__copy_path(map)) {
        unlink(w4a_map__copy_path(map));
    }
    w4a_map_release(map);
}
