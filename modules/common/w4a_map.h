/**
 * @file w4a_map.h
 * @brief The hosting map: text source, compiled index, lookup (httpd-free).
 *
 * Text map (see conf/w4a-vhost.map.example and docs/w4a-vhostmap.md): one
 * line per hosting domain set, fields separated by blanks, '#' comments:
 *
 *     # names                          hosting    uid    gid    docroot                                  php  state   flags
 *     example.com,www.example.com      w4a100010  100010 100010 /datas/vol1/w4a100010/var/www/example.com 8.2  active  log
 *     *.example.org                    w4a100011  100011 100011 /datas/vol1/w4a100011/var/www/example.org -    active  media=static.example.org
 *
 * - names: comma-separated; the first is the canonical domain, the others
 *   aliases; "*.suffix" is a wildcard matching any name ending in ".suffix"
 *   (not "suffix" itself), the longest matching suffix wins, an exact name
 *   always wins over a wildcard.  Names are normalised like Host headers.
 * - php: a version such as "8.2", or "-" for none.
 * - state: "active" or "suspended".
 * - flags: "-" or a comma list of: "log" (copy access log lines to the
 *   hosting's log dir, by default <home>/log/apache2 where <home> is the
 *   docroot's part before "/var/www/"), "log=<absolute dir>",
 *   "media=<host>" (the media host name of the domain).
 *
 * Index: a single file written by w4a_map_compile() (temp file, fsync,
 * rename, so readers never see it half-written; mode 0640): a header
 * (magic, format version, generation, counts, section offsets, checksum
 * of the body), an open-addressing hash table of names, the records, a
 * string table.  Lookups are O(1), allocate nothing and return pointers
 * into the loaded index.
 *
 * The index file itself is never mapped: an operator who copies a new
 * index over it in place (cp) or truncates it would make every access to
 * a mapped page past the new end a SIGBUS.  w4a_map_open() reads it into
 * private memory; w4a_map_open_copy() (httpd) copies it into a private
 * directory and maps the copy, which nothing ever writes again, so that
 * all the processes sharing that directory share one copy.
 */
#ifndef W4A_MAP_H
#define W4A_MAP_H

#include <apr.h>
#include <apr_errno.h>
#include <apr_pools.h>
#include <apr_tables.h>
#include "w4a_hosting.h"
#include "w4a_log.h"

/** Check options for parsing/compiling a text map. */
typedef struct w4a_map_checks_t {
    apr_uint32_t min_uid;        /**< uids (and gids) below are errors; 0 = no check */
    const apr_array_header_t *bases; /**< const char *: allowed docroot bases
                                          ("/datas"); NULL or empty = any absolute path */
    int check_dirs;              /**< 1: a docroot that is not a directory is reported */
    int strict;                  /**< 1: missing directories are errors, not warnings */
    int skip_bad;                /**< 1: bad lines are reported and left out, the rest
                                      compiled; 0: any error refuses the whole map */
} w4a_map_checks_t;

/** Result counters of a parse/compile. */
typedef struct w4a_map_stats_t {
    apr_uint32_t lines;          /**< record lines read (not comments/blank) */
    apr_uint32_t records;        /**< records in the index */
    apr_uint32_t names;          /**< names (domains, aliases, wildcards) in the index */
    apr_uint32_t errors;         /**< lines with errors */
    apr_uint32_t warnings;       /**< warnings */
} w4a_map_stats_t;

/**
 * Parse and check a text map, and write its index atomically.
 * Every problem is reported through @a log as one line
 * "<path>:<line>: <message>" (errors at W4A_LOG_ERR, warnings at
 * W4A_LOG_WARNING): malformed line, bad name, duplicate name (naming the
 * line of the first), bad uid/gid, uid below min_uid, relative docroot or
 * one holding "..", docroot outside the bases, missing directory, unknown
 * state or flag.
 * @param text_path   the text map
 * @param index_path  the index to write (NULL: check only, write nothing)
 * @param checks      check options (NULL: no optional checks)
 * @param log         sink for the per-line messages
 * @param stats       filled in (may be NULL)
 * @param p           pool for temporary allocations
 * @return APR_SUCCESS when written (or, check only, when no error);
 *         APR_EINVAL when errors refused the map (nothing written);
 *         an APR error from reading or writing files.
 */
apr_status_t w4a_map_compile(const char *text_path, const char *index_path,
                             const w4a_map_checks_t *checks,
                             const w4a_logger_t *log, w4a_map_stats_t *stats,
                             apr_pool_t *p);

/** How w4a_map_compile_ex() writes the index file. */
typedef struct w4a_map_perms_t {
    unsigned int mode;           /**< permission bits; 0 = 0640 */
    long         gid;            /**< group of the file; -1 = the writer's */
} w4a_map_perms_t;

/** Mode of the index when none is given: the owner (root) writes it,
 *  its group (httpd's) reads it, others (tenants) do not. */
#define W4A_MAP_INDEX_MODE 0640

/**
 * w4a_map_compile() with the index file's mode and group: the temporary
 * file gets them before anything is written into it, so the index is
 * never visible with other permissions.
 * @param perms  NULL: mode W4A_MAP_INDEX_MODE, the writer's group
 * @return as w4a_map_compile(); an error from fchown (not allowed to give
 *         that group) leaves the old index in place.
 */
apr_status_t w4a_map_compile_ex(const char *text_path, const char *index_path,
                                const w4a_map_checks_t *checks,
                                const w4a_map_perms_t *perms,
                                const w4a_logger_t *log,
                                w4a_map_stats_t *stats, apr_pool_t *p);

/** An opened, validated index. Not pool-bound: see w4a_map_close(). */
typedef struct w4a_map_t w4a_map_t;

/**
 * Open an index: read it into private memory (never mapping the file, so
 * that nothing done to it later can fault this process) and validate it
 * completely (magic, version, size, every offset and length in bounds,
 * strings terminated, body checksum) before returning it.
 * @param map     set to the opened map on success
 * @param path    the index file
 * @param err     on failure, set to a message saying why (static or
 *                allocated from @a p); may be NULL
 * @param p       pool for @a err only
 * @return APR_SUCCESS; APR_EGENERAL/APR_EINVAL for a corrupt or truncated
 *         index; APR_EAGAIN when the file changed size while it was read;
 *         an APR error from open/read/mmap.
 */
apr_status_t w4a_map_open(w4a_map_t **map, const char *path,
                          const char **err, apr_pool_t *p);

/** What tells one version of a file from another without reading it. */
typedef struct w4a_map_fid_t {
    apr_uint64_t dev;
    apr_uint64_t ino;
    apr_int64_t  size;           /**< -1, -2: sentinels of the caller's */
    apr_int64_t  mtime_ns;
    apr_int64_t  ctime_ns;
    unsigned int mode;           /**< permission bits (not compared) */
} w4a_map_fid_t;

/** stat() @a path (following symlinks) into @a id.
 *  @return APR_SUCCESS or the error of stat(). */
apr_status_t w4a_map_fid_stat(w4a_map_fid_t *id, const char *path);

/** 1 when @a a and @a b name the same version of the same file. */
int w4a_map_fid_same(const w4a_map_fid_t *a, const w4a_map_fid_t *b);

/**
 * Open an index through a private, shared copy.  The file at @a path is
 * opened; when its identity (device, inode, size, mtime, ctime) is not
 * @a expected, APR_EAGAIN.  When @a dir holds a copy of that identity
 * already (made by another process), that copy is used; else the file is
 * read (never mapped) into a new file of @a dir, which is kept only when
 * the source did not change while it was read, and published under a name
 * made of the identity (link: a published copy is never replaced nor
 * written again).  The copy is mapped read-only and validated as by
 * w4a_map_open(); a copy that fails validation is removed.
 *
 * @a dir must be a directory (not a symlink) owned by this process's
 * euid (or this process is root), writable by nobody else: everything in
 * it is trusted not to change.
 * @param expected  the identity the caller saw (w4a_map_fid_stat)
 * @return as w4a_map_open(); APR_EAGAIN when the file is not (or no
 *         longer) the one expected or changed while copied: try again at
 *         the next check; APR_EACCES when @a dir is not safe.
 */
apr_status_t w4a_map_open_copy(w4a_map_t **map, const char *path,
                               const w4a_map_fid_t *expected,
                               const char *dir, const char **err,
                               apr_pool_t *p);

/**
 * Make (or check) the private directory of w4a_map_open_copy(): created
 * mode 0700 if missing; when this process is root, given to @a uid:@a gid
 * (the processes that will use it); copies in it are removed when
 * @a clean.  Refused when it is a symlink, not a directory, or writable
 * by group or others.
 * @return APR_SUCCESS, or an error with @a err set.
 */
apr_status_t w4a_map_copy_dir(const char *dir, long uid, long gid, int clean,
                              const char **err, apr_pool_t *p);

/** Unmap and free.  Pointers from w4a_map_lookup() die with it. */
void w4a_map_close(w4a_map_t *map);

/** w4a_map_close(), and remove the map's private copy from its
 *  directory (processes that have it mapped keep it): for the process
 *  that replaces it by a newer one. */
void w4a_map_discard(w4a_map_t *map);

/** One more holder of @a map: pointers from w4a_map_lookup() stay valid
 *  until it calls w4a_map_release().  The opener is the first holder.
 *  w4a_map_close()/w4a_map_discard() ignore holders: use them only on a
 *  map nobody else holds. */
void w4a_map_hold(w4a_map_t *map);

/** Drop a hold; the last one closes the map.  NULL is a no-op. */
void w4a_map_release(w4a_map_t *map);

/** For the opener replacing @a map by a newer one: remove its private
 *  copy from its directory now, and drop the opener's hold (the map is
 *  closed when the last request holding it ends). */
void w4a_map_retire(w4a_map_t *map);

/**
 * Look a normalised host up: exact name first, then wildcards from the
 * longest suffix to the shortest.
 * @param map    the index
 * @param host   normalised host (see w4a_host_normalise())
 * @param len    strlen(host)
 * @param rec    filled with pointers into the mapping on success
 * @return APR_SUCCESS, or APR_NOTFOUND.
 */
apr_status_t w4a_map_lookup(const w4a_map_t *map, const char *host,
                            apr_size_t len, w4a_hosting_t *rec);

/**
 * Called once per record by w4a_map_iterate(); rec->matched is NULL and
 * the pointers live as long as the map.
 * @return 0 to go on, non-zero to stop (w4a_map_iterate returns it).
 */
typedef int w4a_map_record_fn(void *baton, const w4a_hosting_t *rec);

/**
 * Visit every record of the index, in index order.
 * @return 0, or the first non-zero value @a fn returned.
 */
int w4a_map_iterate(const w4a_map_t *map, w4a_map_record_fn *fn, void *baton);

/** The index's generation (microseconds since the epoch at compile time). */
apr_uint64_t w4a_map_generation(const w4a_map_t *map);

/** Counts held by the index. */
apr_uint32_t w4a_map_records(const w4a_map_t *map);
apr_uint32_t w4a_map_names(const w4a_map_t *map);

/* ------------------------------------------------------------------ */
/* Single records, from other sources than the index (an SQL row, a    */
/* memcached value), with the same checks as a line of the text map.  */

/** Fields of a record, in map order: hosting uid gid docroot php state flags. */
#define W4A_RECORD_FIELDS 7

/**
 * Check one record given as the fields of a map line and build it.
 * @param rec     filled in; every string allocated from @a p
 * @param key     the name that matched: a host or "*.suffix" (normalised
 *                here; becomes rec->matched)
 * @param domain  canonical domain; NULL or "" = @a key without "*."
 * @param fields  hosting, uid, gid, docroot, php, state, flags as in the
 *                text map; a NULL or "" php or flags means "-"
 * @param checks  min_uid and bases as for w4a_map_compile (check_dirs is
 *                ignored: no file system access); may be NULL
 * @param err     on failure, the first problem, as the compiler says it
 * @param p       pool
 * @return APR_SUCCESS, or APR_EINVAL when a field is invalid.
 */
apr_status_t w4a_record_parse(w4a_hosting_t *rec, const char *key,
                              const char *domain,
                              const char *const fields[W4A_RECORD_FIELDS],
                              const w4a_map_checks_t *checks,
                              const char **err, apr_pool_t *p);

/**
 * One line holding a record ("key domain hosting uid gid docroot php state
 * flags", blank-separated, the log directory and media host spelt out in
 * flags), as the memcached cache stores it.
 */
char *w4a_record_format(const w4a_hosting_t *rec, apr_pool_t *p);

/**
 * Parse a line of w4a_record_format() back, with all the checks of
 * w4a_record_parse(): a cache value is not trusted more than the map.
 * @return APR_SUCCESS, or APR_EINVAL with @a err set.
 */
apr_status_t w4a_record_parse_line(w4a_hosting_t *rec, const char *line,
                                   const w4a_map_checks_t *checks,
                                   const char **err, apr_pool_t *p);

#endif /* W4A_MAP_H */
