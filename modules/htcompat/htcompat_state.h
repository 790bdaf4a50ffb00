/**
 * @file htcompat_state.h
 * @brief The state file of mod_w4a_htcompat (W4AHtcompatStateFile): which
 * settings were ever delivered, per FPM pool, shared by every httpd
 * process.  httpd-free (APR only), for the module and the unit tests.
 *
 * A worker of an FPM pool keeps every PHP_VALUE it was ever sent.  So each
 * request to a pool must reset every setting that pool was ever sent; not
 * those only other pools were (issue 17: a node-wide set made every pool
 * pay for every other's php_value lines).  Layout:
 *
 *  - bits:   every setting ever delivered to any pool (the node-wide set);
 *  - common: settings reset for every pool (W4AHtcompatTrack, and the set
 *            of a format 1 file, which did not know pools);
 *  - slots:  a fixed open-addressed table of per-pool sets, keyed by a
 *            32-bit hash of the pool's key (its socket path), at most
 *            HTC_POOL_PROBES places tried from the hash.
 *
 * Correctness never rests on the table: two pools sharing a tag share a
 * set (a superset of what each was sent: only more resets), and a pool
 * that finds no place uses the node-wide set, which holds everything.
 * Slots are never freed, so a pool that once found no place never finds
 * one later, and a pool's slot is always the first of its probes that is
 * not another pool's.
 */
#ifndef HTCOMPAT_STATE_H
#define HTCOMPAT_STATE_H

#include <apr.h>
#include "htcompat_table.h"

#define HTC_STATE_MAGIC   0x57344843u     /* "W4HC" */
#define HTC_STATE_FORMAT  2u              /* 1: node-wide set only */
#define HTC_WORDS         (HTC_BITS / 32)
#define HTC_STATE_COUNTERS 32
#define HTC_POOL_SLOTS    4096            /* pools with a set of their own */
#define HTC_POOL_PROBES   8
#define HTC_USED_WORDS    (HTC_WORDS / 32)  /* which words are not zero */

typedef struct {
    apr_uint32_t tag;                   /* 0: free; else htc_pool_tag() */
    apr_uint32_t used[HTC_USED_WORDS];  /* words of bits not zero */
    apr_uint32_t pad[3];
    apr_uint32_t bits[HTC_WORDS];
} htc_pool_slot_t;

typedef struct {
    /* format 1 had these four fields, in this order, and nothing else */
    apr_uint32_t magic;
    apr_uint32_t format;
    apr_uint32_t bits[HTC_WORDS];       /* node-wide: ever delivered anywhere */
    apr_uint32_t counters[HTC_STATE_COUNTERS];
    /* format 2 */
    apr_uint32_t common[HTC_WORDS];     /* reset for every pool */
    apr_uint32_t pools_full;            /* deliveries to a pool without a slot */
    apr_uint32_t bits_used[HTC_USED_WORDS];    /* words not zero: bits */
    apr_uint32_t common_used[HTC_USED_WORDS];  /* ... common */
    apr_uint32_t pad[3];
    htc_pool_slot_t slots[HTC_POOL_SLOTS];
} htc_state_t;

/** Size of a format 1 file (its whole content). */
#define HTC_STATE_V1_SIZE (2 * 4 + HTC_WORDS * 4 + HTC_STATE_COUNTERS * 4)

/**
 * Make @a st (mapped, sizeof(htc_state_t) bytes) a valid format 2 state;
 * the bytes from @a old_size on (the file's size before it was extended)
 * are known zeros and not written.
 * A format 1 state (its first HTC_STATE_V1_SIZE bytes) keeps its counters,
 * and its set becomes the common set: it was delivered to pools unknown,
 * so every pool resets it.  Anything else unknown starts empty.
 * Called once, before any other process maps the file.
 * @return 0: was format 2 already; 1: upgraded from format 1; 2: reset.
 */
int htc_state_init(htc_state_t *st, apr_size_t old_size);

/** The 32-bit tag of a pool key (never 0). */
apr_uint32_t htc_pool_tag(const char *key);

/** The same tag from the key's w4a_fnv1a(), when the caller has it. */
static APR_INLINE apr_uint32_t htc_pool_tag_of(apr_uint32_t fnv)
{
    return fnv ? fnv : 1;
}

/**
 * The set of settings to reset for the pool of @a key, in @a out
 * (HTC_WORDS words) and @a used (HTC_USED_WORDS words: which words of
 * out are set; only those are written): the common set and the pool's
 * own, or the node-wide set when the pool has no slot of its own because
 * the table is full around its hash.  A walk over the words in use, not
 * over all 128: a handful of instructions when a pool was sent nothing.
 * @return 1 if anything is in the set, else 0.
 */
int htc_state_pool_set(htc_state_t *st, apr_uint32_t tag, apr_uint32_t *out,
                       apr_uint32_t *used);

/**
 * The pool's own set, claiming a slot for it if it has none.
 * @return the set (HTC_WORDS words), or NULL when no slot is free among
 *         its probes (then the node-wide set stands for it).
 */
htc_pool_slot_t *htc_state_pool_claim(htc_state_t *st, apr_uint32_t tag);

/**
 * Record that setting slot @a bit is delivered to a pool: in the
 * node-wide set, and in @a pool (from htc_state_pool_claim) if not NULL.
 */
void htc_state_mark(htc_state_t *st, htc_pool_slot_t *pool, unsigned bit);

/** Record @a bit as reset for every pool (W4AHtcompatTrack). */
void htc_state_mark_common(htc_state_t *st, unsigned bit);

/** Pools with a slot of their own. */
apr_uint32_t htc_state_pools(const htc_state_t *st);

#endif /* HTCOMPAT_STATE_H */
