/*
 * The state file's sets, per pool (htcompat_state.h says why and how).
 * Shared by every httpd process through a mapping: lock-free, with
 * atomic compare-and-swap; sets only ever grow, slots are never freed.
 */
#include <string.h>
#include <stddef.h>

#include <apr_atomic.h>

#include "htcompat_state.h"
#include "w4a_util.h"

/* format 1's fields are a prefix of format 2's */
typedef char htc_v1_prefix_ok[offsetof(htc_state_t, common)
                              == HTC_STATE_V1_SIZE ? 1 : -1];

int htc_state_init(htc_state_t *st, apr_size_t old_size)
{
    /* Bytes from old_size on are zeros (the file was just extended):
     * not written again, so the pages of pools never used stay unwritten
     * (a sparse file) and a first start does not touch 2 MB. */
    apr_size_t known = old_size < sizeof(*st) ? old_size : sizeof(*st);
    int w;

    if (st->magic == HTC_STATE_MAGIC && st->format == HTC_STATE_FORMAT) {
        return 0;
    }
    if (known >= HTC_STATE_V1_SIZE && st->magic == HTC_STATE_MAGIC
        && st->format == 1u) {
        /* A format 1 set was sent to pools we cannot tell apart: every
         * pool keeps resetting it. */
        memset((char *)st + HTC_STATE_V1_SIZE, 0, known - HTC_STATE_V1_SIZE);
        memcpy(st->common, st->bits, sizeof(st->common));
        for (w = 0; w < HTC_WORDS; w++) {
            if (st->bits[w]) {
                st->bits_used[w / 32] |= 1u << (w % 32);
            }
        }
        memcpy(st->common_used, st->bits_used, sizeof(st->common_used));
        st->format = HTC_STATE_FORMAT;
        return 1;
    }
    memset(st, 0, known);
    st->format = HTC_STATE_FORMAT;
    st->magic = HTC_STATE_MAGIC;
    return 2;
}

apr_uint32_t htc_pool_tag(const char *key)
{
    return htc_pool_tag_of(w4a_fnv1a(key));
}

static void or_bit(apr_uint32_t *w, apr_uint32_t m)
{
    apr_uint32_t old;
    while (!((old = __atomic_load_n(w, __ATOMIC_RELAXED)) & m)) {
        if (apr_atomic_cas32(w, old | m, old) == old) {
            break;
        }
    }
}

/* The pool's slot; NULL with *full 0: the pool has none (yet), with
 * *full 1: it can have none (every probe is another pool's). */
static htc_pool_slot_t *find(htc_state_t *st, apr_uint32_t tag, int claim,
                             int *full)
{
    unsigned i, at = tag % HTC_POOL_SLOTS;

    *full = 0;
    for (i = 0; i < HTC_POOL_PROBES; i++) {
        htc_pool_slot_t *sl = &st->slots[(at + i) % HTC_POOL_SLOTS];
        apr_uint32_t t = __atomic_load_n(&sl->tag, __ATOMIC_ACQUIRE);
        if (t == 0) {
            if (!claim) {
                return NULL;
            }
            t = apr_atomic_cas32(&sl->tag, tag, 0);
            if (t == 0) {
                return sl;
            }
            /* another process took it meanwhile: for this pool? */
        }
        if (t == tag) {
            return sl;
        }
    }
    *full = 1;
    return NULL;
}

int htc_state_pool_set(htc_state_t *st, apr_uint32_t tag, apr_uint32_t *out,
                       apr_uint32_t *used)
{
    int full, i;
    apr_uint32_t any = 0;
    const htc_pool_slot_t *sl = find(st, tag, 0, &full);
    const apr_uint32_t *src = full ? st->bits : sl ? sl->bits : NULL;
    const apr_uint32_t *src_used = full ? st->bits_used
                                   : sl ? sl->used : NULL;

    for (i = 0; i < HTC_USED_WORDS; i++) {
        apr_uint32_t cu = __atomic_load_n(&st->common_used[i],
                                          __ATOMIC_ACQUIRE);
        apr_uint32_t su = src_used ? __atomic_load_n(&src_used[i],
                                                     __ATOMIC_ACQUIRE) : 0;
        apr_uint32_t u = cu | su;
        used[i] = u;
        any |= u;
        while (u) {
            int w = i * 32 + __builtin_ctz(u);
            apr_uint32_t m = u & -u;
            u &= u - 1;
            out[w] = ((cu & m) ? __atomic_load_n(&st->common[w],
                                                 __ATOMIC_RELAXED) : 0)
                     | ((su & m) ? __atomic_load_n(&src[w],
                                                   __ATOMIC_RELAXED) : 0);
        }
    }
    return any != 0;
}

htc_pool_slot_t *htc_state_pool_claim(htc_state_t *st, apr_uint32_t tag)
{
    int full;
    return find(st, tag, 1, &full);
}

/* The bit, then the word's bit in the summary: whoever sees the summary
 * sees the word. */
static void set_bit(apr_uint32_t *bits, apr_uint32_t *used, unsigned bit)
{
    or_bit(&bits[bit / 32], 1u << (bit % 32));
    or_bit(&used[bit / 1024], 1u << ((bit / 32) % 32));
}

void htc_state_mark(htc_state_t *st, htc_pool_slot_t *pool, unsigned bit)
{
    /* the node-wide set first: a pool without a slot reads that one */
    set_bit(st->bits, st->bits_used, bit);
    if (pool) {
        set_bit(pool->bits, pool->used, bit);
    }
    else {
        apr_atomic_inc32(&st->pools_full);
    }
}

void htc_state_mark_common(htc_state_t *st, unsigned bit)
{
    set_bit(st->bits, st->bits_used, bit);
    set_bit(st->common, st->common_used, bit);
}

apr_uint32_t htc_state_pools(const htc_state_t *st)
{
    apr_uint32_t i, n = 0;
    for (i = 0; i < HTC_POOL_SLOTS; i++) {
        if (__atomic_load_n(&st->slots[i].tag, __ATOMIC_RELAXED)) {
            n++;
        }
    }
    return n;
}
