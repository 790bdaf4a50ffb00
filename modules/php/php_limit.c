/*
 * mod_w4a_php: PHP requests in flight per hosting, node-wide (see
 * php_limit.h).
 *
 * Layout of the anonymous shared memory (apr_shm, inherited by every
 * child), all apr_uint32_t:
 *
 *   owner[rows]              pid of the child holding the row, 0: free
 *   refused[buckets]         refusals per bucket, since start
 *   last_log[buckets]        second of the last refusal logged
 *   count[buckets][rows]     requests in flight, per bucket and child
 *
 * count is bucket-major: the figure of a hosting is one short run of
 * adjacent counters.  The hot path is: one atomic increment of the own
 * counter, a sum of `rows` loads, (over the limit) one atomic decrement;
 * at the end of the request one atomic decrement.  A child that dies at
 * any point leaves only its own row behind, which the parent zeroes
 * once the child has been reaped: no count can stay behind.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <httpd.h>
#include <http_log.h>
#include <apr_atomic.h>
#include <apr_time.h>
#include <apr_shm.h>
#include <apr_strings.h>

#include "php_private.h"
#include "php_limit.h"

#define USERDATA_KEY   "w4a_php_limit"
#define MAX_BUCKETS    16384u
#define MIN_BUCKETS    1024u
#define TABLE_BYTES    (8u << 20)   /* count[][] at most this, rows allowing */

typedef struct {
    apr_shm_t    *shm;
    apr_uint32_t  rows;
    apr_uint32_t  buckets;          /* a power of two */
    apr_uint32_t *owner;
    apr_uint32_t *refused;
    apr_uint32_t *last_log;
    apr_uint32_t *count;
} limit_table;

static limit_table *table;          /* NULL: none */
static int my_row = -1;             /* this child's row; -1: none */
static apr_uint32_t *private_count; /* no row: this process's own counts */

struct php_limit_slot {
    apr_uint32_t *counter;
};

static apr_uint32_t bucket_of(const char *hosting)
{
    apr_uint32_t h = 2166136261u;
    for (; *hosting; hosting++) {
        h = (h ^ (unsigned char)*hosting) * 16777619u;
    }
    h ^= h >> 15;
    return h & (table->buckets - 1);
}

apr_status_t php_limit_post_config(server_rec *s)
{
    apr_pool_t *pglobal = s->process->pool;
    limit_table *t = NULL;
    int limit_daemons = 0;
    apr_size_t size;
    apr_status_t rv;
    char *base;

    apr_pool_userdata_get((void **)&t, USERDATA_KEY, pglobal);
    if (t) {
        table = t;
        return APR_SUCCESS;
    }
    /* ServerLimit: a graceful restart cannot change it, so the table made
     * at the first start serves every generation.  A child of an old
     * generation may still hold a row while a new one squats its
     * scoreboard slot: twice the slots, and a little more. */
    if (ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &limit_daemons) != APR_SUCCESS
        || limit_daemons < 1) {
        limit_daemons = 16;
    }
    t = apr_pcalloc(pglobal, sizeof(*t));
    t->rows = (apr_uint32_t)limit_daemons * 2 + 2;
    t->buckets = MAX_BUCKETS;
    while (t->buckets > MIN_BUCKETS
           && (apr_size_t)t->buckets * t->rows * 4 > TABLE_BYTES) {
        t->buckets >>= 1;
    }
    size = ((apr_size_t)t->rows + 2 * t->buckets
            + (apr_size_t)t->buckets * t->rows) * sizeof(apr_uint32_t);
    rv = apr_shm_create(&t->shm, size, NULL, pglobal);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, W4ALOGNO(00261)
                     "cannot create the shared memory of the per-hosting "
                     "PHP limit (%" APR_SIZE_T_FMT " bytes): W4APHPHostingLimit "
                     "is not enforced", size);
        return rv;
    }
    base = apr_shm_baseaddr_get(t->shm);
    memset(base, 0, size);
    t->owner = (apr_uint32_t *)base;
    t->refused = t->owner + t->rows;
    t->last_log = t->refused + t->buckets;
    t->count = t->last_log + t->buckets;
    apr_pool_userdata_set(t, USERDATA_KEY, apr_pool_cleanup_null, pglobal);
    table = t;
    return APR_SUCCESS;
}

void php_limit_child_init(apr_pool_t *pchild, server_rec *s)
{
    apr_uint32_t pid = (apr_uint32_t)getpid(), r;

    if (!table) {
        return;
    }
    for (r = 0; r < table->rows; r++) {
        if (apr_atomic_cas32(&table->owner[r], pid, 0) == 0) {
            my_row = (int)r;
            return;
        }
    }
    /* Cannot happen with the rows above; this child's requests are then
     * counted for itself only (and still see every other child's). */
    private_count = apr_pcalloc(pchild, table->buckets * sizeof(apr_uint32_t));
    ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, W4ALOGNO(00262)
                 "no free row in the per-hosting PHP limit table (%u rows): "
                 "the PHP requests of this child (pid %u) are not seen by "
                 "the others", table->rows, pid);
}

/* Zero a row whose child is gone; @return the requests it still held. */
static apr_uint64_t clear_row(apr_uint32_t r)
{
    apr_uint64_t held = 0;
    apr_uint32_t b;

    for (b = 0; b < table->buckets; b++) {
        apr_uint32_t *c = &table->count[(apr_size_t)b * table->rows + r];
        apr_uint32_t v = apr_atomic_read32(c);
        if (v) {
            held += v;
            apr_atomic_set32(c, 0);
        }
    }
    apr_atomic_set32(&table->owner[r], 0);
    return held;
}

void php_limit_child_status(server_rec *s, pid_t pid, ap_generation_t gen,
                            int slot, mpm_child_status state)
{
    apr_uint32_t r;

    if (!table) {
        return;
    }
    if (state == MPM_CHILD_EXITED) {
        for (r = 0; r < table->rows; r++) {
            if (apr_atomic_read32(&table->owner[r]) == (apr_uint32_t)pid) {
                apr_uint64_t held = clear_row(r);
                if (held) {
                    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, W4ALOGNO(00263)
                                 "child %ld exited with %" APR_UINT64_T_FMT
                                 " PHP requests counted in flight; its "
                                 "counts cleared", (long)pid, held);
                }
            }
        }
    }
    else if (state == MPM_CHILD_STARTED) {
        /* A row whose process is gone though no exit was seen for it (a
         * parent that itself was restarted by hand in between): freed. */
        for (r = 0; r < table->rows; r++) {
            apr_uint32_t owner = apr_atomic_read32(&table->owner[r]);
            if (owner && owner != (apr_uint32_t)pid
                && kill((pid_t)owner, 0) != 0 && errno == ESRCH) {
                apr_uint64_t held = clear_row(r);
                ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, W4ALOGNO(00264)
                             "process %u is gone without an exit seen; its "
                             "%" APR_UINT64_T_FMT " PHP requests counted in "
                             "flight cleared", owner, held);
            }
        }
    }
}

static apr_status_t slot_release(void *data)
{
    php_limit_slot *sl = data;
    apr_atomic_dec32(sl->counter);
    return APR_SUCCESS;
}

static apr_uint32_t bucket_sum(apr_uint32_t b)
{
    apr_uint32_t *c = &table->count[(apr_size_t)b * table->rows];
    apr_uint32_t r, n = 0;

    for (r = 0; r < table->rows; r++) {
        n += apr_atomic_read32(&c[r]);
    }
    if (private_count) {
        n += apr_atomic_read32(&private_count[b]);
    }
    return n;
}

int php_limit_enter(const char *hosting, apr_uint32_t limit,
                    apr_uint32_t *inflight, apr_pool_t *p)
{
    php_limit_slot *sl;
    apr_uint32_t b;

    if (!table || (my_row < 0 && !private_count)) {
        *inflight = 0;
        return -1;              /* no table, or before child_init */
    }
    b = bucket_of(hosting);
    sl = apr_palloc(p, sizeof(*sl));
    sl->counter = my_row >= 0
                  ? &table->count[(apr_size_t)b * table->rows + my_row]
                  : &private_count[b];
    /* Count first, then look: two requests racing for the last place
     * both see each other, so the limit is never passed (at worst both
     * are refused). */
    apr_atomic_inc32(sl->counter);
    *inflight = bucket_sum(b);
    if (*inflight > limit) {
        apr_atomic_dec32(sl->counter);
        return 0;
    }
    apr_pool_cleanup_register(p, sl, slot_release, apr_pool_cleanup_null);
    return 1;
}

int php_limit_refused(const char *hosting, int every, apr_uint32_t *refused)
{
    apr_uint32_t b, now, last;

    if (!table) {
        *refused = 0;
        return 1;
    }
    b = bucket_of(hosting);
    *refused = apr_atomic_inc32(&table->refused[b]) + 1;
    now = (apr_uint32_t)apr_time_sec(apr_time_now());
    last = apr_atomic_read32(&table->last_log[b]);
    if (last && now - last < (apr_uint32_t)every) {
        return 0;
    }
    return apr_atomic_cas32(&table->last_log[b], now, last) == last;
}

apr_status_t php_limit_stats(php_limit_stats_t *st)
{
    apr_uint32_t b, r;

    memset(st, 0, sizeof(*st));
    if (!table) {
        return APR_ENOSHMAVAIL;
    }
    st->rows = table->rows;
    st->buckets = table->buckets;
    for (r = 0; r < table->rows; r++) {
        if (apr_atomic_read32(&table->owner[r])) {
            st->children++;
        }
    }
    for (b = 0; b < table->buckets; b++) {
        apr_uint32_t n = bucket_sum(b);
        st->inflight += n;
        st->busy += n != 0;
        st->refused += apr_atomic_read32(&table->refused[b]);
    }
    return APR_SUCCESS;
}

apr_status_t php_limit_hosting(const char *hosting, apr_uint32_t *inflight,
                               apr_uint32_t *refused)
{
    apr_uint32_t b;

    if (!table) {
        *inflight = *refused = 0;
        return APR_ENOSHMAVAIL;
    }
    b = bucket_of(hosting);
    *inflight = bucket_sum(b);
    *refused = apr_atomic_read32(&table->refused[b]);
    return APR_SUCCESS;
}
