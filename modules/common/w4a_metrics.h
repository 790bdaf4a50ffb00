/**
 * @file w4a_metrics.h
 * @brief The node's per-hosting counters (httpd-free, APR and POSIX only):
 *        one table in a file-backed shared mapping that every httpd child
 *        writes and w4a-top reads.
 *
 * The table is a fixed number of rows, open-addressed by the hosting's
 * name: a hosting hashes to a row and is looked for in at most
 * W4A_METRICS_PROBE rows from there.  A row, once claimed, is that
 * hosting's until the table is made again (a full restart): the counters
 * are monotonic totals (Prometheus counters), never reset, never moved.
 * A hosting that finds no free row in its probe window (the table is
 * full, or nearly), or whose name is longer than W4A_METRICS_NAME_MAX - 1,
 * is counted in the overflow row, reported as hosting "(other)".
 * Requests without a hosting (a Host not in the map, the default server)
 * have their own row, "(none)".
 *
 * Domains: a second area of rows, per (hosting row, canonical domain of
 * the record the request was served for), open-addressed the same way.
 * The domain comes from the map or the SQL source (the operator's), never
 * from the request's Host, and a hosting claims at most a given number of
 * domain rows (W4AMetricsDomains, counted in its hosting row): its further
 * domains, and a domain longer than W4A_METRICS_DOMAIN_MAX - 1, are
 * counted in that hosting's domain "(other)".  A domain that finds no free
 * domain row is counted in the area's overflow row, hosting "(other)",
 * domain "(other)".  The "(other)" hosting's requests are counted there
 * too, and "(none)" has no domains: so for every hosting with a row, its
 * domains' requests add up to its own.
 *
 * Counters are added with atomic adds (no lock, no per-child slot): a
 * child that dies leaves only what it had already added, which is true.
 * A row is claimed with a compare-and-swap of its state (free -> claiming
 * -> ready); its name is written between the two and published with a
 * release store.  A claimer killed in between leaves a row that nobody
 * uses again (skipped by lookups, never shown).
 */
#ifndef W4A_METRICS_H
#define W4A_METRICS_H

#include <apr.h>
#include <apr_errno.h>
#include <apr_pools.h>
#include <apr_tables.h>

#define W4A_METRICS_NAME_MAX  48
#define W4A_METRICS_PROBE     32
#define W4A_METRICS_MIN_ROWS  1
#define W4A_METRICS_MAX_ROWS  (1u << 20)
#define W4A_METRICS_DOMAIN_MAX 128
#define W4A_METRICS_MAX_DOMAIN_ROWS (1u << 20)
#define W4A_METRICS_MAX_DOMAINS 1024   /* per hosting */

/** Names of the special rows (no Unix user name has parentheses). */
#define W4A_METRICS_OTHER "(other)"
#define W4A_METRICS_NONE  "(none)"

/** The counters of a row. */
enum {
    W4A_MC_REQUESTS = 0, /* requests logged */
    W4A_MC_BYTES,        /* bytes sent (bodies, as %B) */
    W4A_MC_1XX, W4A_MC_2XX, W4A_MC_3XX, W4A_MC_4XX, W4A_MC_5XX,
    W4A_MC_POSTS,        /* POST requests */
    W4A_MC_PHP,          /* requests mod_w4a_php dispatched to the pool */
    W4A_MC_PHP_US,       /* their time, dispatch to end of response, us */
    W4A_MC_BACKEND_ERR,  /* PHP requests answered 503 or 504 */
    W4A_MC_REFUSED,      /* refused by our checks (see docs/metrics.md) */
    W4A_MC_RECENT,       /* PHP requests of a recently modified script */
    /* W4A_MC_REFUSED split by the check that refused: exactly one of
     * these per refusal (w4a_metrics_check_of), their sum is it. */
    W4A_MC_REF_FIRST,
    W4A_MC_REF_LAST = W4A_MC_REF_FIRST + 16,
    W4A_MC_MAX
};

/** The checks a refusal is counted for (label "check"), in the order of
 * W4A_MC_REF_FIRST ... W4A_MC_REF_LAST. */
#define W4A_METRICS_CHECKS (W4A_MC_REF_LAST - W4A_MC_REF_FIRST + 1)
extern const char *const w4a_metrics_check_names[W4A_METRICS_CHECKS];

/**
 * The check of a refusal, from the notes our modules set when they refuse
 * (the values of r->notes "w4a-guard", "w4a-guard-hosting",
 * "w4a-vhost-refused" and "w4a-php-refused"; NULL when not set), looked at
 * in the order a request meets them (guard's client checks, guard's
 * hosting limit, vhost, php).  A value no module sets today counts as the
 * module's "-other": the figures stay bounded.
 * @return a counter, W4A_MC_REF_FIRST + k, or -1 when no note is set.
 */
int w4a_metrics_check_of(const char *guard, const char *guard_hosting,
                         const char *vhost, const char *php);

/** Short names of the counters (JSON keys of w4a-top, sort keys). */
extern const char *const w4a_metrics_counter_names[W4A_MC_MAX];

typedef struct w4a_metrics_row_t {
    volatile apr_uint32_t state;     /* 0 free, 1 claiming, 2 ready */
    apr_uint32_t          hash;
    char                  name[W4A_METRICS_NAME_MAX];
    volatile apr_uint32_t domains;   /* domain rows claimed for it */
    apr_uint32_t          pad;
    volatile apr_uint64_t c[W4A_MC_MAX];
} w4a_metrics_row_t;

/** The counters of a domain row. */
enum {
    W4A_MD_REQUESTS = 0, W4A_MD_BYTES,
    W4A_MD_1XX, W4A_MD_2XX, W4A_MD_3XX, W4A_MD_4XX, W4A_MD_5XX,
    W4A_MD_PHP, W4A_MD_PHP_US,
    W4A_MD_MAX
};

typedef struct w4a_metrics_drow_t {
    volatile apr_uint32_t state;     /* 0 free, 1 claiming, 2 ready */
    apr_uint32_t          hash;
    apr_uint32_t          hosting;   /* index of its hosting's row */
    apr_uint32_t          pad;
    char                  name[W4A_METRICS_DOMAIN_MAX];
    volatile apr_uint64_t c[W4A_MD_MAX];
} w4a_metrics_drow_t;

typedef struct w4a_metrics_table_t {
    apr_uint32_t          magic;
    apr_uint32_t          version;
    apr_uint32_t          nrows;
    apr_uint32_t          pid;          /* the httpd parent that made it */
    apr_uint64_t          started_us;   /* when it was made (apr_time_t) */
    volatile apr_uint32_t used;         /* rows claimed */
    volatile apr_uint32_t full_logged;  /* second of the last "full" log */
    volatile apr_uint64_t full_hits;    /* requests that found no row */
    apr_uint32_t          ndrows;       /* domain rows (0: no domains) */
    volatile apr_uint32_t dused;        /* domain rows claimed */
    volatile apr_uint64_t dfull_hits;   /* requests whose domain found none */
    volatile apr_uint32_t dfull_logged; /* second of the last "full" log */
    apr_uint32_t          pad;
    w4a_metrics_drow_t    dother;       /* hosting "(other)", domain "(other)" */
    w4a_metrics_row_t     other;
    w4a_metrics_row_t     none;
    w4a_metrics_row_t     rows[1];
    /* then the ndrows domain rows (w4a_metrics_drows) */
} w4a_metrics_table_t;

/** Bytes of a table of @a nrows rows and @a ndrows domain rows. */
apr_size_t w4a_metrics_size(apr_uint32_t nrows, apr_uint32_t ndrows);

/** The domain rows of @a t (t->ndrows of them). */
static APR_INLINE w4a_metrics_drow_t *
w4a_metrics_drows(const w4a_metrics_table_t *t)
{
    return (w4a_metrics_drow_t *)(void *)&t->rows[t->nrows];
}

/** Initialise a table in @a mem (w4a_metrics_size bytes). */
w4a_metrics_table_t *w4a_metrics_init(void *mem, apr_uint32_t nrows,
                                      apr_uint32_t ndrows, apr_uint32_t pid,
                                      apr_uint64_t now_us);

/**
 * Whether @a len bytes at @a mem hold a table this code can read.
 * @return APR_SUCCESS, APR_EINVAL (not a table, another version, or a
 *         size that does not match its row count).
 */
apr_status_t w4a_metrics_check(const void *mem, apr_size_t len);

/**
 * The row of @a hosting, claimed when it has none yet.
 * @param hosting the hosting's name; NULL or "" for the "(none)" row
 * @param full set to 1 when the hosting got the overflow row because no
 *        row was free in its probe window (not for a too long name)
 * @return the row (never NULL).
 */
w4a_metrics_row_t *w4a_metrics_row(w4a_metrics_table_t *t, const char *hosting,
                                   int *full);

/**
 * The domain row of (@a row, @a domain), claimed when it has none yet.
 * @param row    what w4a_metrics_row() gave the request's hosting
 * @param domain the canonical domain of its record (the operator's)
 * @param cap    domain rows a hosting may claim (W4AMetricsDomains)
 * @param full   set to 1 when the domain got the overflow row because no
 *               domain row was free in its probe window
 * @return the row; NULL when domains are off (no domain rows, or @a cap
 *         0) or for the "(none)" row.
 */
w4a_metrics_drow_t *w4a_metrics_domain_row(w4a_metrics_table_t *t,
                                           w4a_metrics_row_t *row,
                                           const char *domain,
                                           apr_uint32_t cap, int *full);

/** Slots of a w4a_metrics_cache_t (a power of two). */
#define W4A_METRICS_CACHE 1024

/**
 * One process's memory of the rows its requests found, so that a request
 * of a hosting seen before neither hashes nor probes: one word per slot
 * (row and domain row indexes), chosen by the address of the record's
 * strings, read and written whole (any thread, no lock).  A hit is only
 * taken after the row's name (and the domain row's) is compared with the
 * request's, so a stale or shared slot costs a lookup, never a wrong row.
 * Zeroed memory is an empty cache.
 */
typedef struct w4a_metrics_cache_t {
    apr_uint64_t slot[W4A_METRICS_CACHE];
} w4a_metrics_cache_t;

/**
 * w4a_metrics_row() then w4a_metrics_domain_row(), through @a cache.
 * @param cache  the process's cache, or NULL for none
 * @param drow   set to the domain row, or NULL (as w4a_metrics_domain_row)
 * @param full   set to 1 when the hosting found the table full
 * @param dfull  set to 1 when the domain found the domain rows full
 * @return the hosting's row (never NULL).  Overflow and "(none)" rows are
 *         never cached: each such request is counted as full again.
 */
w4a_metrics_row_t *w4a_metrics_rows(w4a_metrics_table_t *t,
                                    w4a_metrics_cache_t *cache,
                                    const char *hosting, const char *domain,
                                    apr_uint32_t cap, w4a_metrics_drow_t **drow,
                                    int *full, int *dfull);

/** Domain counter @a c of @a d += @a n (atomic). */
static APR_INLINE void w4a_metrics_dadd(w4a_metrics_drow_t *d, int c,
                                        apr_uint64_t n)
{
    __atomic_fetch_add(&d->c[c], n, __ATOMIC_RELAXED);
}

/** As w4a_metrics_full_due, for a domain that found the domain rows
 * full. */
int w4a_metrics_domain_full_due(w4a_metrics_table_t *t, apr_uint32_t now_s,
                                apr_uint32_t every);

/** Counter @a c of @a row += @a n (atomic). */
static APR_INLINE void w4a_metrics_add(w4a_metrics_row_t *row, int c,
                                       apr_uint64_t n)
{
    __atomic_fetch_add(&row->c[c], n, __ATOMIC_RELAXED);
}

/**
 * Count a request that found the table full, and say whether it is to be
 * logged: at most once per @a every seconds node-wide.
 * @return 1 when the caller logs now, 0 otherwise.
 */
int w4a_metrics_full_due(w4a_metrics_table_t *t, apr_uint32_t now_s,
                         apr_uint32_t every);

/** A copy of one row. */
typedef struct w4a_metrics_snap_t {
    char         name[W4A_METRICS_NAME_MAX];
    apr_uint64_t c[W4A_MC_MAX];
} w4a_metrics_snap_t;

/**
 * Copy every ready row, the special rows included (last, "(none)" then
 * "(other)"), sorted by name otherwise; rows of one name (a claim that
 * raced) are summed.
 * @return an array of w4a_metrics_snap_t from @a p.
 */
apr_array_header_t *w4a_metrics_snapshot(const w4a_metrics_table_t *t,
                                         apr_pool_t *p);

/** A copy of one domain row. */
typedef struct w4a_metrics_dsnap_t {
    char         hosting[W4A_METRICS_NAME_MAX];
    char         domain[W4A_METRICS_DOMAIN_MAX];
    apr_uint64_t c[W4A_MD_MAX];
} w4a_metrics_dsnap_t;

/**
 * Copy every ready domain row, sorted by hosting then domain, rows of one
 * (hosting, domain) summed; the overflow row last when it counted
 * anything.
 * @return an array of w4a_metrics_dsnap_t from @a p.
 */
apr_array_header_t *w4a_metrics_domain_snapshot(const w4a_metrics_table_t *t,
                                                apr_pool_t *p);

/**
 * Make a new table file: written beside @a path and renamed over it (a
 * reader of the old one keeps its mapping), mode @a mode, mapped shared
 * and writable.
 * @param err set to a message on failure, from @a p
 * @return APR_SUCCESS or the errno of the step that failed.
 */
apr_status_t w4a_metrics_file_create(w4a_metrics_table_t **t, const char *path,
                                     apr_uint32_t nrows, apr_uint32_t ndrows,
                                     int mode, apr_uint32_t pid, const char **err,
                                     apr_pool_t *p);

/**
 * Map a table file read-only (w4a-top); unmapped when @a p goes.
 * @return APR_SUCCESS, an errno (open, mmap), or APR_EINVAL (not a table).
 */
apr_status_t w4a_metrics_file_open(const w4a_metrics_table_t **t,
                                   const char *path, const char **err,
                                   apr_pool_t *p);

#endif /* W4A_METRICS_H */
