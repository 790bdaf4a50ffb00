/**
 * @file geoip_db.h
 * @brief MaxMind DB handling of mod_w4a_geoip, httpd-free (APR and
 *        libmaxminddb only), shared by the module and bench/geoip.
 *
 * libmaxminddb can only map a file.  A file copied over in place or
 * truncated and rewritten under a live mapping gives readers SIGBUS or
 * garbage, so the operator's file is never mapped: it is copied to a
 * private file (once it has been stable), the copy is validated, and only
 * then is it used.  A handle is reference counted by its owner (the
 * module); lookups on one handle are safe from any number of threads.
 */
#ifndef W4A_GEOIP_DB_H
#define W4A_GEOIP_DB_H

#include <apr.h>
#include <apr_pools.h>
#include <apr_file_info.h>
#include <maxminddb.h>

/** What identifies a version of a file: a replacement by rename changes
 *  the inode, a copy over or a rewrite changes size, mtime or ctime. */
typedef struct w4a_geoip_fid_t {
    int         exists;
    apr_ino_t   ino;
    apr_dev_t   dev;
    apr_off_t   size;
    apr_time_t  mtime;
    apr_time_t  ctime;
} w4a_geoip_fid_t;

/**
 * Identity of the file at @a path.
 * @return APR_SUCCESS (id->exists 1), or the stat error (id->exists 0).
 */
apr_status_t w4a_geoip_fid_stat(w4a_geoip_fid_t *id, const char *path,
                                apr_pool_t *p);

/** @return 1 when @a a and @a b are the same version (or both absent). */
int w4a_geoip_fid_same(const w4a_geoip_fid_t *a, const w4a_geoip_fid_t *b);

/** Slots of a database's value cache (see w4a_geoip_value_cached). */
#define W4A_GEOIP_CACHE_SLOTS 1024

/** An open, validated database.  Allocated with malloc, not from a pool,
 *  so that any thread may open and close one. */
typedef struct w4a_geoip_db_t {
    MMDB_s          mmdb;
    char           *copy_path;     /**< the private copy that is mapped */
    w4a_geoip_fid_t source;        /**< identity of the source it came from */
    apr_uint32_t    refs;          /**< owner's reference count */
    void * volatile cache[W4A_GEOIP_CACHE_SLOTS]; /**< value cache */
} w4a_geoip_db_t;

/**
 * Open and validate the database file at @a path, in place (for a file
 * nobody rewrites: the private copy, or a benchmark's file): MMDB_open,
 * metadata (binary format 2, record size, IP version, node count, type),
 * and test lookups of a few IPv4 and IPv6 addresses whose records must be
 * readable to the end.
 * @param db    out: the handle, to be closed with w4a_geoip_db_close()
 * @param why   out on failure: a message, allocated from @a p
 * @return APR_SUCCESS, or APR_EINVAL (not a valid database), or the
 *         error of opening the file.
 */
apr_status_t w4a_geoip_db_open(w4a_geoip_db_t **db, const char *path,
                               const char **why, apr_pool_t *p);

/**
 * Copy the operator's @a src to a private file under @a dir and open the
 * copy with w4a_geoip_db_open().  The copy is made only when @a src still
 * has the identity @a expected (the caller saw it at an earlier check, so
 * it has been stable since) and keeps it until the copy is done; the
 * private file is named by that identity, so processes copying the same
 * version share one file.
 * @param tag  a short name for the file name (the database's name)
 * @return APR_SUCCESS with *db; APR_EAGAIN when @a src changed (try
 *         later); another error with *why when the file is unreadable or
 *         not a valid database.
 */
apr_status_t w4a_geoip_db_load(w4a_geoip_db_t **db, const char *src,
                               const w4a_geoip_fid_t *expected,
                               const char *dir, const char *tag,
                               const char **why, apr_pool_t *p);

/** Unmap and free @a db and remove its private copy (processes that still
 *  map it keep their mapping). @a unlink_copy 0 keeps the file. */
void w4a_geoip_db_close(w4a_geoip_db_t *db, int unlink_copy);

/** One lookup's result. */
typedef struct w4a_geoip_result_t {
    MMDB_lookup_result_s res;
    int                  mmdb_error;   /**< MMDB_SUCCESS or the error */
    int                  prefix;       /**< network prefix length, in the
                                            address's own family */
    int                  family;       /**< AF_INET or AF_INET6 looked up */
    unsigned char        addr[16];     /**< the address looked up */
} w4a_geoip_result_t;

/**
 * Look up @a sa (AF_INET or AF_INET6; an IPv4-mapped IPv6 address is
 * looked up as the IPv4 address, in IPv4 and IPv6 databases alike).
 * @return APR_SUCCESS (found), APR_NOTFOUND (no record for the address,
 *         or an IPv6 address in an IPv4-only database),
 *         APR_EGENERAL (lookup error, res->mmdb_error says which).
 */
apr_status_t w4a_geoip_lookup(const w4a_geoip_db_t *db,
                              const struct sockaddr *sa,
                              w4a_geoip_result_t *res);

/**
 * Split a data path "country/iso_code" (or "subdivisions/0/iso_code") into
 * the NULL-terminated list MMDB_aget_value takes.
 * @return the list, or NULL when the path is empty or has an empty step.
 */
const char **w4a_geoip_path_parse(const char *spec, apr_pool_t *p);

/**
 * The value at @a path in a found result, as text: strings as they are,
 * numbers in decimal, booleans as 1/0, 128-bit numbers in hex.
 * @return the value from @a p, or NULL when the path is absent or leads
 *         to a map, an array or bytes.
 */
const char *w4a_geoip_value(w4a_geoip_result_t *res, const char *const *path,
                            apr_pool_t *p);

/**
 * w4a_geoip_value() through the database's value cache: a country
 * database has a few hundred distinct records for millions of networks,
 * so the value of (record, path) is decoded once and kept (first come,
 * first kept, in a fixed number of slots; safe from any thread; freed with
 * the database).  @a path is the key by its address: pass the same list
 * for the same path.
 * @return as w4a_geoip_value(), copied into @a p.
 */
const char *w4a_geoip_value_cached(w4a_geoip_db_t *db,
                                   w4a_geoip_result_t *res,
                                   const char *const *path, apr_pool_t *p);

/** The network of a found result, "192.0.2.0/24" or "2001:db8::/48". */
const char *w4a_geoip_network(const w4a_geoip_result_t *res, apr_pool_t *p);

/**
 * Parse a plain IPv4 or IPv6 address (no name, no port, no brackets)
 * into @a ss.
 * @return 1, or 0 when @a s is not such an address.
 */
int w4a_geoip_addr_parse(const char *s, struct sockaddr_storage *ss);

#endif /* W4A_GEOIP_DB_H */
