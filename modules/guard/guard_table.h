/**
 * @file guard_table.h
 * @brief The node's table of clients of mod_w4a_guard (httpd-free, APR
 *        only): token buckets and bans in one shared memory segment that
 *        every child of the node reads and writes.
 *
 * The table is a fixed number of slots, open-addressed: a key (a client's
 * address, masked to its prefix, plus a hosting hash for login quotas)
 * hashes to a slot and is looked for in GUARD_PROBE slots from there.
 * When all of them hold other keys, the slot to reuse is, in order, one
 * that is free, one whose ban is over and that was seen least recently,
 * and only when every probed slot is banned, the ban ending first.  A
 * flood of fresh addresses (random IPv6 /64s) so evicts the quietest
 * clients first and bans last (counter "evicted").
 *
 * Each slot has its own lock, a word taken with a compare-and-swap and
 * held for a few dozen instructions (a waiter spins 64 times, then yields
 * its core); a lock older than GUARD_LOCK_STALE_MS (its holder was
 * killed) is taken over.
 */
#ifndef GUARD_TABLE_H
#define GUARD_TABLE_H

#include <apr.h>
#include <apr_errno.h>
#include <apr_pools.h>

#define GUARD_PROBE          8
#define GUARD_LOCK_STALE_MS  100
#define GUARD_HOSTING_MAX    32
#define GUARD_SCOPED_MAX     4     /* hosting-scoped bans per client */
#define GUARD_SCOPE_NAME     24    /* bytes of a scoped ban's hosting name */

/** Node-wide counters (status page). */
enum {
    GC_REQUESTS = 0,   /* requests charged */
    GC_REFUSED,        /* requests answered with the ban status */
    GC_BANS,           /* bans decided on this node */
    GC_LOGIN_POSTS,    /* POSTs to login paths counted */
    GC_WHITELISTED,    /* over budget, whitelisted: not banned */
    GC_EVICTED,        /* slots reused for another key */
    GC_FLEET_PUBLISHED,/* bans written to the fleet's memcached */
    GC_FLEET_APPLIED,  /* bans of other nodes (or w4a-ban) applied here */
    GC_FLEET_REMOVED,  /* removals applied from the fleet list */
    GC_FLEET_ERRORS,   /* memcached unreachable, forged or expired list */
    GC_SCOPED_REPLACED,/* a client's hosting-scoped ban replaced (5th) */
    GC_MAX
};

extern const char *const guard_counter_names[GC_MAX];

/** Why a client is banned. */
enum { GUARD_R_NONE = 0, GUARD_R_RATE, GUARD_R_LOGIN, GUARD_R_FLEET,
       GUARD_R_ADMIN };

const char *guard_reason_name(int reason);
int guard_reason_parse(const char *name);

/** A key: 16 address bytes (IPv4 as ::ffff:a.b.c.d), prefix length in
 * bits of that, and 0 or the hash of a hosting (login quota). */
typedef struct guard_key_t {
    unsigned char addr[16];
    apr_uint32_t  bits;
    apr_uint32_t  hosting;
} guard_key_t;

/** A ban of a client for one hosting only (its login quota there, or
 * the fleet's line of such a ban): kept in the client's own slot, at most
 * GUARD_SCOPED_MAX of them, so that a client banned on many hostings
 * takes no more of the table than one banned everywhere. */
typedef struct guard_scoped_t {
    apr_uint32_t  hosting;      /* guard_hash_str of the name; 0: unused */
    apr_uint32_t  reason;
    apr_uint32_t  strikes;
    apr_uint32_t  unused;
    apr_int64_t   since_ms;
    apr_int64_t   until_ms;     /* 0: not banned */
    apr_int64_t   unbanned_ms;  /* last removal (w4a-ban remove --hosting) */
    char          name[GUARD_SCOPE_NAME];   /* the hosting, truncated */
} guard_scoped_t;

/** What a slot holds (a copy, for status and the tools). */
typedef struct guard_slot_t {
    volatile apr_uint32_t lock;
    apr_uint32_t  used;
    guard_key_t   key;
    apr_int64_t   tokens;       /* milli-units */
    apr_int64_t   refill_ms;    /* tokens counted up to this time */
    apr_int64_t   seen_ms;
    apr_int64_t   ban_until_ms; /* 0: not banned */
    apr_int64_t   ban_since_ms;
    apr_int64_t   unbanned_ms;  /* last removal (w4a-ban remove) */
    apr_uint32_t  strikes;
    apr_uint32_t  reason;
    apr_uint64_t  requests;     /* requests charged */
    apr_uint64_t  cost;         /* units charged */
    apr_uint64_t  refused;
    apr_uint64_t  bans;
    char          hosting[GUARD_HOSTING_MAX];
    apr_int64_t   scoped_until_ms;  /* the last end of scoped[] */
    guard_scoped_t scoped[GUARD_SCOPED_MAX];
} guard_slot_t;

typedef struct guard_table_t {
    apr_uint32_t           magic;
    apr_uint32_t           nslots;
    volatile apr_uint64_t  counters[GC_MAX];
    volatile apr_uint64_t  fleet_next_ms;   /* next fleet poll */
    volatile apr_uint32_t  fleet_polling;
    guard_slot_t           slots[1];
} guard_table_t;

/** A bucket's parameters: @a rate milli-units per second, @a burst units. */
typedef struct guard_bucket_t {
    apr_int64_t rate;
    apr_int64_t burst;
} guard_bucket_t;

/** Ban durations: base, doubled per repeat up to max; strikes forgotten
 * after forget seconds without a ban (all in ms). */
typedef struct guard_banpol_t {
    apr_int64_t base_ms;
    apr_int64_t max_ms;
    apr_int64_t forget_ms;
} guard_banpol_t;

/** Bytes of a table of @a nslots slots. */
apr_size_t guard_table_size(apr_uint32_t nslots);

/** Initialise a table in @a mem (guard_table_size bytes, zeroed). */
guard_table_t *guard_table_init(void *mem, apr_uint32_t nslots);

/** Counter @a c += @a n (atomic). */
void guard_count(guard_table_t *t, int c, apr_uint64_t n);

/** Make a key from a socket address (IPv4 /32; IPv6 masked to
 * @a v6bits; IPv4-mapped IPv6 as IPv4). */
void guard_key_from_bytes(guard_key_t *k, int family, const void *addr,
                          int v6bits, apr_uint32_t hosting);

/** Parse "a.b.c.d" or an IPv6 address (optionally "/bits") into a key.
 * @return APR_SUCCESS or APR_EINVAL. */
apr_status_t guard_key_parse(guard_key_t *k, const char *text, int v6bits);

/** The key's address as text ("a.b.c.d" or "x::/bits"), from @a p. */
const char *guard_key_text(const guard_key_t *k, apr_pool_t *p);

/** FNV-1a of a string (a hosting id); never 0. */
apr_uint32_t guard_hash_str(const char *s);

/** Result of a charge. */
typedef struct guard_verdict_t {
    int          banned;       /* 1: the client is banned (now or before) */
    int          new_ban;      /* 1: this charge decided the ban */
    apr_int64_t  until_ms;     /* ban end */
    apr_int64_t  since_ms;
    apr_uint32_t strikes;
    int          reason;
    int          over;         /* 1: over budget */
    int          exempted;     /* 1: over budget, exempt: not banned */
    int          scoped;       /* 1: the ban holds for one hosting only */
    apr_int64_t  scoped_until_ms; /* the client's scoped bans end (charge) */
} guard_verdict_t;

/**
 * Is the client of @a k banned at @a now_ms?  Counts a refusal when so
 * (count_refused).  @return 1 banned (v filled), 0 not.
 */
int guard_check(guard_table_t *t, const guard_key_t *k, apr_int64_t now_ms,
                int count_refused, guard_verdict_t *v);

/**
 * Charge @a units to the bucket of @a k (created full); when the bucket
 * goes below zero and @a exempt (called then only, under the slot's
 * lock: a memory test) says 0, ban @a ban_key (the client's own key,
 * may be @a k) for @a reason, the duration growing with its strikes.
 * When @a ban_key is not @a k (a login quota: @a k is the client's
 * address plus the hosting's hash), the ban is scoped: it holds for the
 * hosting @a hosting only, kept in @a ban_key's slot (guard_scoped_check;
 * v->scoped set), replacing, when the client has GUARD_SCOPED_MAX
 * already, one that ended or else the one ending first.
 * v->scoped_until_ms tells when the client's scoped bans end (0: none),
 * so that a caller looks them up only when one may hold.
 * @param count 1: a request is counted in the slot's figures
 * @param refuse_banned 1: when @a k is banned (and not exempt), charge
 *        nothing, count a refusal, return v->banned set (v->new_ban 0)
 */
void guard_charge(guard_table_t *t, const guard_key_t *k,
                  const guard_bucket_t *b, apr_int64_t units, int count,
                  int refuse_banned,
                  apr_int64_t now_ms, int (*exempt)(void *), void *baton,
                  const guard_key_t *ban_key, int reason, const char *hosting,
                  const guard_banpol_t *pol, guard_verdict_t *v);

/**
 * Set a ban on @a k from @a since_ms until @a until_ms (a fleet or
 * administrator ban): unless a removal at or after @a since_ms is known.
 * @return 1 when this changed the slot (a new or longer ban), else 0.
 */
int guard_ban_set(guard_table_t *t, const guard_key_t *k, apr_int64_t since_ms,
                  apr_int64_t until_ms, int reason, const char *hosting,
                  apr_int64_t now_ms);

/** Remove the ban of @a k at @a when_ms (a ban set before it ends);
 * @a now_ms is the current time.
 * @return 1 when a ban was removed. */
int guard_ban_remove(guard_table_t *t, const guard_key_t *k,
                     apr_int64_t when_ms, apr_int64_t now_ms);

/**
 * Is the client of @a k (its own key) banned from the hosting @a name
 * (a scoped ban) at @a now_ms?  Counts a refusal when so (count_refused).
 * The name is matched on its hash and its first GUARD_SCOPE_NAME - 1
 * bytes.  @return 1 banned (v filled, v->scoped set), 0 not.
 */
int guard_scoped_check(guard_table_t *t, const guard_key_t *k,
                       const char *name, apr_int64_t now_ms,
                       int count_refused, guard_verdict_t *v);

/**
 * Set a ban of @a k for the hosting @a name only (the fleet's, or an
 * administrator's) from @a since_ms until @a until_ms, unless a removal
 * of it at or after @a since_ms is known, or the client has
 * GUARD_SCOPED_MAX such bans that all end later.  A slot it creates has
 * a full bucket @a b (the client is not banned on the other hostings).
 * @return 1 when this changed the slot (a new or longer ban), else 0.
 */
int guard_scoped_set(guard_table_t *t, const guard_key_t *k,
                     const char *name, apr_int64_t since_ms,
                     apr_int64_t until_ms, int reason,
                     const guard_bucket_t *b, apr_int64_t now_ms);

/** Remove the ban of @a k for the hosting @a name at @a when_ms (a ban
 * set before it ends).  @return 1 when a ban was removed. */
int guard_scoped_remove(guard_table_t *t, const guard_key_t *k,
                        const char *name, apr_int64_t when_ms,
                        apr_int64_t now_ms);

/** Copy of the slot of @a k. @return 1 found, 0 not. */
int guard_lookup(guard_table_t *t, const guard_key_t *k, guard_slot_t *out);

/** Call @a fn for a copy of every used slot (unlocked snapshot). */
void guard_walk(guard_table_t *t, void (*fn)(void *baton,
                                             const guard_slot_t *s),
                void *baton);

#endif /* GUARD_TABLE_H */
