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
 *   ccount[buckets][rows]    the same per (name, client) bucket
 *   shares                   refusals for a client's share, since start
 *   rows_used                rows ever claimed: a sum reads no further
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
 * adjacent counters, read up to the highest row ever claimed (rows are
 * claimed lowest first: as many as the node has had children at once,
 * not ServerLimit x 2).  The hot path is: one atomic increment of the
 * own counter, a sum of those loads, (over the limit) one atomic
 * decrement; at the end of the request one atomic decrement.  No total
 * is kept beside the rows: a process dying between the two updates would
 * leave it wrong for good.  A process that dies at any point leaves only
 * its own row behind, which the parent zeroes once the process has been
 * reaped: no count can stay behind.  A process without a row counts in
 * its own memory, added to what it sees, seen by no other.
 *
 * A client's share: the requests one client (its address bytes, as the
 * caller masks them) has in flight for one name, in a second area of
 * buckets from a keyed hash of (the name's bucket, client) -- SipHash-2-4
 * under a key drawn when the table is made, so that no one can pick
 * addresses that fall in another's bucket.  These buckets are not claimed (clients are
 * countless): two pairs in one bucket share its figure, which only ever
 * makes the check stricter for both, and by chance only.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <string.h>

#include <apr_atomic.h>
#include <apr_general.h>
#include <apr_strings.h>
#include <apr_time.h>

#include "w4a_inflight.h"

#define MAX_BUCKETS    16384u
#define MIN_BUCKETS    1024u
#define NAME_MAX_LEN   48u          /* hosting names are 1-32 bytes */
#define PROBE          32u          /* buckets a name looks at */
#define CLAIM_SPINS    1000
#define CLIENT_MAX     16u          /* client bytes hashed */

struct w4a_inflight_t {
    apr_shm_t    *shm;
    apr_uint32_t  rows;
    apr_uint32_t  buckets;          /* a power of two */
    apr_uint32_t *owner;
    apr_uint32_t *refused;
    apr_uint32_t *last_log;
    apr_uint32_t *state;
    apr_uint32_t *count;
    apr_uint32_t *ccount;
    apr_uint32_t *shares;
    apr_uint32_t *rows_used;
    char         *names;
    apr_uint64_t  sipkey[2];        /* same in every process */
    /* per process (a forked copy of this struct each) */
    int           my_row;           /* -1: none */
    apr_uint32_t *private_count;    /* no free row: this process's own */
    apr_uint32_t *private_ccount;
};

typedef struct {
    apr_uint32_t *name;             /* the process's own counters */
    apr_uint32_t *client;           /* NULL: no share */
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

/* SipHash-2-4 of @a len bytes under @a k (Aumasson and Bernstein). */
#define ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND(v0, v1, v2, v3) do {                                   \
        v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32);   \
        v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;                        \
        v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;                        \
        v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32);   \
    } while (0)

static apr_uint64_t siphash24(const apr_uint64_t k[2], const unsigned char *in,
                              apr_size_t len)
{
    apr_uint64_t v0 = k[0] ^ 0x736f6d6570736575ULL;
    apr_uint64_t v1 = k[1] ^ 0x646f72616e646f6dULL;
    apr_uint64_t v2 = k[0] ^ 0x6c7967656e657261ULL;
    apr_uint64_t v3 = k[1] ^ 0x7465646279746573ULL;
    apr_uint64_t m, b = (apr_uint64_t)len << 56;
    apr_size_t i, whole = len & ~(apr_size_t)7;
    int j;

    for (i = 0; i < whole; i += 8) {
        for (m = 0, j = 7; j >= 0; j--) {
            m = (m << 8) | in[i + (apr_size_t)j];
        }
        v3 ^= m;
        SIPROUND(v0, v1, v2, v3);
        SIPROUND(v0, v1, v2, v3);
        v0 ^= m;
    }
    for (j = (int)(len - whole) - 1; j >= 0; j--) {
        b |= (apr_uint64_t)in[whole + (apr_size_t)j] << (8 * j);
    }
    v3 ^= b;
    SIPROUND(v0, v1, v2, v3);
    SIPROUND(v0, v1, v2, v3);
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND(v0, v1, v2, v3);
    SIPROUND(v0, v1, v2, v3);
    SIPROUND(v0, v1, v2, v3);
    SIPROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
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

void w4a_inflight_set_key(w4a_inflight_t *t, const unsigned char key[16])
{
    int i;

    t->sipkey[0] = t->sipkey[1] = 0;
    for (i = 0; i < 8; i++) {
        t->sipkey[0] = (t->sipkey[0] << 8) | key[i];
        t->sipkey[1] = (t->sipkey[1] << 8) | key[8 + i];
    }
}

apr_status_t w4a_inflight_create(w4a_inflight_t **out, apr_uint32_t rows,
                                 apr_size_t max_bytes, apr_size_t *size,
                                 apr_pool_t *p)
{
    w4a_inflight_t *t = apr_pcalloc(p, sizeof(*t));
    unsigned char key[16];
    apr_status_t rv;
    char *base;

    t->rows = rows ? rows : 1;
    t->buckets = MAX_BUCKETS;
    /* both count areas within max_bytes, rows allowing */
    while (t->buckets > MIN_BUCKETS
           && (apr_size_t)t->buckets * t->rows * 8 > max_bytes) {
        t->buckets >>= 1;
    }
    rv = apr_generate_random_bytes(key, sizeof(key));
    if (rv != APR_SUCCESS) {
        return rv;
    }
    w4a_inflight_set_key(t, key);
    *size = ((apr_size_t)t->rows + 3 * (apr_size_t)t->buckets + 2
             + 2 * (apr_size_t)t->buckets * t->rows) * sizeof(apr_uint32_t)
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
    t->ccount = t->count + (apr_size_t)t->buckets * t->rows;
    t->shares = t->ccount + (apr_size_t)t->buckets * t->rows;
    t->rows_used = t->shares + 1;
    t->names = (char *)(t->rows_used + 1);
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
            apr_uint32_t used = apr_atomic_read32(t->rows_used);
            while (used < r + 1) {
                apr_uint32_t seen = apr_atomic_cas32(t->rows_used, r + 1,
                                                     used);
                if (seen == used) {
                    break;
                }
                used = seen;
            }
            t->my_row = (int)r;
            return APR_SUCCESS;
        }
    }
    t->private_count = apr_pcalloc(p, t->buckets * sizeof(apr_uint32_t));
    t->private_ccount = apr_pcalloc(p, t->buckets * sizeof(apr_uint32_t));
    return APR_ENOSPC;
}

/* Zero one area's counts of row @a r. */
static apr_uint64_t clear_area(w4a_inflight_t *t, apr_uint32_t *count,
                               apr_uint32_t r)
{
    apr_uint64_t held = 0;
    apr_uint32_t b;

    for (b = 0; b < t->buckets; b++) {
        apr_uint32_t *c = &count[(apr_size_t)b * t->rows + r];
        apr_uint32_t v = apr_atomic_read32(c);
        if (v) {
            held += v;
            apr_atomic_set32(c, 0);
        }
    }
    return held;
}

/* Zero a row whose process is gone; @return the requests it still held. */
static apr_uint64_t clear_row(w4a_inflight_t *t, apr_uint32_t r)
{
    apr_uint64_t held = clear_area(t, t->count, r);

    clear_area(t, t->ccount, r);
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

    apr_atomic_dec32(sl->name);
    if (sl->client) {
        apr_atomic_dec32(sl->client);
    }
    return APR_SUCCESS;
}

/* The sum of bucket @a b of an area over the rows ever claimed, and this
 * process's own counter if it has no row.  A 32-bit aligned load is
 * atomic; volatile keeps the compiler from caching it (what
 * apr_atomic_read32 does, without a call per row). */
static apr_uint32_t area_sum(const w4a_inflight_t *t,
                             const apr_uint32_t *count,
                             const apr_uint32_t *private_count,
                             apr_uint32_t b)
{
    const volatile apr_uint32_t *c = &count[(apr_size_t)b * t->rows];
    apr_uint32_t r, n = 0, used = *(const volatile apr_uint32_t *)t->rows_used;

    if (used > t->rows) {
        used = t->rows;
    }
    for (r = 0; r < used; r++) {
        n += c[r];
    }
    if (private_count) {
        n += ((const volatile apr_uint32_t *)private_count)[b];
    }
    return n;
}

static apr_uint32_t bucket_sum(const w4a_inflight_t *t, apr_uint32_t b)
{
    return area_sum(t, t->count, t->private_count, b);
}

/* The own counter of bucket @a b of an area. */
static apr_uint32_t *own_counter(const w4a_inflight_t *t, apr_uint32_t *count,
                                 apr_uint32_t *private_count, apr_uint32_t b)
{
    return t->my_row >= 0 ? &count[(apr_size_t)b * t->rows + t->my_row]
                          : &private_count[b];
}

/* The share bucket of @a client for the name of bucket @a nb (a claimed
 * bucket is one name's; names sharing one share a limit already). */
static apr_uint32_t client_bucket(const w4a_inflight_t *t, apr_uint32_t nb,
                                  const void *client, apr_size_t client_len)
{
    unsigned char in[4 + CLIENT_MAX];

    if (client_len > CLIENT_MAX) {
        client_len = CLIENT_MAX;
    }
    memcpy(in, &nb, 4);
    memcpy(in + 4, client, client_len);
    return (apr_uint32_t)siphash24(t->sipkey, in, 4 + client_len)
           & (t->buckets - 1);
}

int w4a_inflight_enter_client(w4a_inflight_t *t, const char *name,
                              apr_uint32_t limit, const void *client,
                              apr_size_t client_len, apr_uint32_t share,
                              apr_uint32_t *inflight, apr_pool_t *p)
{
    inflight_slot *sl;
    apr_uint32_t b;

    if (t->my_row < 0 && !t->private_count) {
        *inflight = 0;
        return W4A_INFLIGHT_NOT_COUNTED;    /* before claim */
    }
    b = bucket_of(t, name);
    sl = apr_palloc(p, sizeof(*sl));
    sl->name = own_counter(t, t->count, t->private_count, b);
    /* Count first, then look: two requests racing for the last place
     * both see each other, so the limit is never passed (at worst both
     * are refused). */
    apr_atomic_inc32(sl->name);
    *inflight = bucket_sum(t, b);
    if (*inflight > limit) {
        apr_atomic_dec32(sl->name);
        return W4A_INFLIGHT_FULL;
    }
    sl->client = NULL;
    if (client && share && share < limit) {
        b = client_bucket(t, b, client, client_len);
        sl->client = own_counter(t, t->ccount, t->private_ccount, b);
        apr_atomic_inc32(sl->client);
        if (area_sum(t, t->ccount, t->private_ccount, b) > share) {
            apr_atomic_dec32(sl->client);
            apr_atomic_dec32(sl->name);
            apr_atomic_inc32(t->shares);
            return W4A_INFLIGHT_SHARE;
        }
    }
    apr_pool_cleanup_register(p, sl, slot_release, apr_pool_cleanup_null);
    return W4A_INFLIGHT_ADMITTED;
}

apr_uint32_t w4a_inflight_share(apr_uint32_t limit, int percent)
{
    apr_uint64_t n;

    if (percent <= 0) {
        return 0;
    }
    n = (apr_uint64_t)limit * (apr_uint32_t)percent / 100;
    if (n >= limit) {
        return 0;
    }
    return n ? (apr_uint32_t)n : 1;
}

int w4a_inflight_enter(w4a_inflight_t *t, const char *name,
                       apr_uint32_t limit, apr_uint32_t *inflight,
                       apr_pool_t *p)
{
    return w4a_inflight_enter_client(t, name, limit, NULL, 0, 0, inflight, p);
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
    st->share_refused = apr_atomic_read32(t->shares);
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
