/*
 * Requests in flight per name, node-wide (see w4a_inflight.h).
 *
 * Layout of the anonymous shared memory (apr_shm, inherited by every
 * process forked after it), all apr_uint32_t:
 *
 *   owner[rows]              pid of the process holding the row, 0: free
 *   refused[buckets]         refusals per bucket, since start
 *   last_log[buckets]        second of the last refusal logged
 *   state[buckets]           0 free, 1 a name being written, 2 named
 *   count[buckets][rows]     requests in flight, per bucket and process
 *   names[buckets][NAME_MAX] the name that claimed the bucket
 *
 * A bucket belongs to one name: a name claims the first free bucket of a
 * short window from its hash (open addressing), and keeps it until the
 * table is made again.  Two hostings never share a limit, unless every
 * bucket of a name's window is another's (more names than buckets, or
 * nearly): that name then shares the bucket of its hash (stricter, never
 * looser).  A hash alone would not do: names are public (/etc/passwd),
 * the hash too, and a tenant whose name fell in another's bucket held the
 * other hosting at 503 by holding its own requests.
 *
 * count is bucket-major: the figure of a name is one short run of
 * adjacent counters.  The hot path is: one atomic increment of the own
 * counter, a sum of `rows` loads, (over the limit) one atomic decrement;
 * at the end of the request one atomic decrement.  A process that dies at
 * any point leaves only its own row behind, which the parent zeroes once
 * the process has been reaped: no count can stay behind.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <string.h>

#include <apr_atomic.h>
#include <apr_strings.h>
#include <apr_time.h>

#include "w4a_inflight.h"

#define MAX_BUCKETS    16384u
#define MIN_BUCKETS    1024u
#define NAME_MAX_LEN   48u          /* hosting names are 1-32 bytes */
#define PROBE          32u          /* buckets a name looks at */
#define CLAIM_SPINS    1000

struct w4a_inflight_t {
    apr_shm_t    *shm;
    apr_uint32_t  rows;
    apr_uint32_t  buckets;          /* a power of two */
    apr_uint32_t *owner;
    apr_uint32_t *refused;
    apr_uint32_t *last_log;
    apr_uint32_t *state;
    apr_uint32_t *count;
    char         *names;
    /* per process (a forked copy of this struct each) */
    int           my_row;           /* -1: none */
    apr_uint32_t *private_count;    /* no free row: this process's own */
};

typedef struct {
    apr_uint32_t *counter;
} inflight_slot;

static apr_uint32_t hash_of(const char *name, apr_size_t *len)
{
    apr_uint32_t h = 2166136261u;
    const char *q;

    for (q = name; *q; q++) {
        h = (h ^ (unsigned char)*q) * 16777619u;
    }
    *len = (apr_size_t)(q - name);
    h ^= h >> 15;
    return h;
}

/* The bucket of @a name: the one it claimed in its window, claiming a
 * free one if @a claim; else (window full, name too long) the bucket of
 * its hash, shared.  @return -1 when !claim and the name has none. */
static long bucket_find(const w4a_inflight_t *t, const char *name, int claim)
{
    apr_size_t len;
    apr_uint32_t h = hash_of(name, &len), n, i;
    apr_uint32_t probe = t->buckets < PROBE ? t->buckets : PROBE;

    if (len >= NAME_MAX_LEN) {
        return (long)(h & (t->buckets - 1));
    }
    for (n = 0, i = h & (t->buckets - 1); n < probe;
         n++, i = (i + 1) & (t->buckets - 1)) {
        char *slot = t->names + (apr_size_t)i * NAME_MAX_LEN;
        apr_uint32_t st = apr_atomic_read32(&t->state[i]);
        int spins;

        if (st == 0) {
            if (!claim) {
                return -1;
            }
            st = apr_atomic_cas32(&t->state[i], 1, 0);
            if (st == 0) {
                memcpy(slot, name, len + 1);
                apr_atomic_set32(&t->state[i], 2);  /* a full barrier */
                return (long)i;
            }
        }
        /* another process is writing this bucket's name: a few stores */
        for (spins = 0; st == 1 && spins < CLAIM_SPINS; spins++) {
            if (spins >= 64) {
                sched_yield();
            }
            st = apr_atomic_read32(&t->state[i]);
        }
        if (st == 2 && !strcmp(slot, name)) {
            return (long)i;
        }
        /* st 1 still: its claimer died, the bucket is lost; go on */
    }
    return (long)(h & (t->buckets - 1));
}

static apr_uint32_t bucket_of(const w4a_inflight_t *t, const char *name)
{
    return (apr_uint32_t)bucket_find(t, name, 1);
}

apr_status_t w4a_inflight_create(w4a_inflight_t **out, apr_uint32_t rows,
                                 apr_size_t max_bytes, apr_size_t *size,
                                 apr_pool_t *p)
{
    w4a_inflight_t *t = apr_pcalloc(p, sizeof(*t));
    apr_status_t rv;
    char *base;

    t->rows = rows ? rows : 1;
    t->buckets = MAX_BUCKETS;
    while (t->buckets > MIN_BUCKETS
           && (apr_size_t)t->buckets * t->rows * 4 > max_bytes) {
        t->buckets >>= 1;
    }
    *size = ((apr_size_t)t->rows + 3 * t->buckets
             + (apr_size_t)t->buckets * t->rows) * sizeof(apr_uint32_t)
            + (apr_size_t)t->buckets * NAME_MAX_LEN;
    rv = apr_shm_create(&t->shm, *size, NULL, p);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    base = apr_shm_baseaddr_get(t->shm);
    memset(base, 0, *size);
    t->owner = (apr_uint32_t *)base;
    t->refused = t->owner + t->rows;
    t->last_log = t->refused + t->buckets;
    t->state = t->last_log + t->buckets;
    t->count = t->state + t->buckets;
    t->names = (char *)(t->count + (apr_size_t)t->buckets * t->rows);
    t->my_row = -1;
    *out = t;
    return APR_SUCCESS;
}

apr_status_t w4a_inflight_claim(w4a_inflight_t *t, apr_uint32_t pid,
                                apr_pool_t *p)
{
    apr_uint32_t r;

    for (r = 0; r < t->rows; r++) {
        if (apr_atomic_cas32(&t->owner[r], pid, 0) == 0) {
            t->my_row = (int)r;
            return APR_SUCCESS;
        }
    }
    t->private_count = apr_pcalloc(p, t->buckets * sizeof(apr_uint32_t));
    return APR_ENOSPC;
}

/* Zero a row whose process is gone; @return the requests it still held. */
static apr_uint64_t clear_row(w4a_inflight_t *t, apr_uint32_t r)
{
    apr_uint64_t held = 0;
    apr_uint32_t b;

    for (b = 0; b < t->buckets; b++) {
        apr_uint32_t *c = &t->count[(apr_size_t)b * t->rows + r];
        apr_uint32_t v = apr_atomic_read32(c);
        if (v) {
            held += v;
            apr_atomic_set32(c, 0);
        }
    }
    apr_atomic_set32(&t->owner[r], 0);
    return held;
}

apr_uint64_t w4a_inflight_release_pid(w4a_inflight_t *t, apr_uint32_t pid)
{
    apr_uint64_t held = 0;
    apr_uint32_t r;

    for (r = 0; pid && r < t->rows; r++) {
        if (apr_atomic_read32(&t->owner[r]) == pid) {
            held += clear_row(t, r);
        }
    }
    return held;
}

apr_uint32_t w4a_inflight_reap(w4a_inflight_t *t, apr_uint32_t keep,
                               apr_uint64_t *held)
{
    apr_uint32_t r, freed = 0;

    *held = 0;
    for (r = 0; r < t->rows; r++) {
        apr_uint32_t owner = apr_atomic_read32(&t->owner[r]);
        if (owner && owner != keep && kill((pid_t)owner, 0) != 0
            && errno == ESRCH) {
            *held += clear_row(t, r);
            freed++;
        }
    }
    return freed;
}

static apr_status_t slot_release(void *data)
{
    inflight_slot *sl = data;
    apr_atomic_dec32(sl->counter);
    return APR_SUCCESS;
}

static apr_uint32_t bucket_sum(const w4a_inflight_t *t, apr_uint32_t b)
{
    apr_uint32_t *c = &t->count[(apr_size_t)b * t->rows];
    apr_uint32_t r, n = 0;

    for (r = 0; r < t->rows; r++) {
        n += apr_atomic_read32(&c[r]);
    }
    if (t->private_count) {
        n += apr_atomic_read32(&t->private_count[b]);
    }
    return n;
}

int w4a_inflight_enter(w4a_inflight_t *t, const char *name,
                       apr_uint32_t limit, apr_uint32_t *inflight,
                       apr_pool_t *p)
{
    inflight_slot *sl;
    apr_uint32_t b;

    if (t->my_row < 0 && !t->private_count) {
        *inflight = 0;
        return -1;              /* before claim */
    }
    b = bucket_of(t, name);
    sl = apr_palloc(p, sizeof(*sl));
    sl->counter = t->my_row >= 0
                  ? &t->count[(apr_size_t)b * t->rows + t->my_row]
                  : &t->private_count[b];
    /* Count first, then look: two requests racing for the last place
     * both see each other, so the limit is never passed (at worst both
     * are refused). */
    apr_atomic_inc32(sl->counter);
    *inflight = bucket_sum(t, b);
    if (*inflight > limit) {
        apr_atomic_dec32(sl->counter);
        return 0;
    }
    apr_pool_cleanup_register(p, sl, slot_release, apr_pool_cleanup_null);
    return 1;
}

int w4a_inflight_refused(w4a_inflight_t *t, const char *name, int every,
                         apr_uint32_t *refused)
{
    apr_uint32_t b = bucket_of(t, name), now, last;

    *refused = apr_atomic_inc32(&t->refused[b]) + 1;
    now = (apr_uint32_t)apr_time_sec(apr_time_now());
    last = apr_atomic_read32(&t->last_log[b]);
    if (last && now - last < (apr_uint32_t)every) {
        return 0;
    }
    return apr_atomic_cas32(&t->last_log[b], now, last) == last;
}

void w4a_inflight_stats(w4a_inflight_t *t, w4a_inflight_stats_t *st)
{
    apr_uint32_t b, r;

    memset(st, 0, sizeof(*st));
    st->rows = t->rows;
    st->buckets = t->buckets;
    for (r = 0; r < t->rows; r++) {
        if (apr_atomic_read32(&t->owner[r])) {
            st->children++;
        }
    }
    for (b = 0; b < t->buckets; b++) {
        apr_uint32_t n = bucket_sum(t, b);
        st->inflight += n;
        st->busy += n != 0;
        st->refused += apr_atomic_read32(&t->refused[b]);
    }
}

void w4a_inflight_name(w4a_inflight_t *t, const char *name,
                       apr_uint32_t *inflight, apr_uint32_t *refused)
{
    long b = bucket_find(t, name, 0);     /* a look claims nothing */

    if (b < 0) {
        *inflight = 0;
        *refused = 0;
        return;
    }
    *inflight = bucket_sum(t, (apr_uint32_t)b);
    *refused = apr_atomic_read32(&t->refused[b]);
}
