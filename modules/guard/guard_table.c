/**
 * @file guard_table.c
 * @brief The node's table of clients of mod_w4a_guard (see guard_table.h).
 */
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sched.h>

#include <apr_atomic.h>
#include <apr_strings.h>
#include <apr_time.h>

#include "guard_table.h"
#include "w4a_util.h"

#define GUARD_MAGIC 0x77346731u

const char *const guard_counter_names[GC_MAX] = {
    "requests", "refused", "bans", "login_posts", "whitelisted_over",
    "evicted", "fleet_published", "fleet_applied", "fleet_removed",
    "fleet_errors", "scoped_replaced"
};

static const char *const reason_names[] = { "none", "rate", "login",
                                            "fleet", "admin" };

const char *guard_reason_name(int reason)
{
    if (reason < 0 || reason > GUARD_R_ADMIN) {
        return "none";
    }
    return reason_names[reason];
}

int guard_reason_parse(const char *name)
{
    int i;
    for (i = 1; i <= GUARD_R_ADMIN; i++) {
        if (!strcmp(name, reason_names[i])) {
            return i;
        }
    }
    return GUARD_R_FLEET;
}

apr_size_t guard_table_size(apr_uint32_t nslots)
{
    return sizeof(guard_table_t) + (apr_size_t)(nslots - 1)
                                   * sizeof(guard_slot_t);
}

guard_table_t *guard_table_init(void *mem, apr_uint32_t nslots)
{
    guard_table_t *t = mem;
    memset(t, 0, guard_table_size(nslots));
    t->magic = GUARD_MAGIC;
    t->nslots = nslots;
    return t;
}

void guard_count(guard_table_t *t, int c, apr_uint64_t n)
{
    apr_atomic_add64(&t->counters[c], n);
}

apr_uint32_t guard_hash_str(const char *s)
{
    apr_uint32_t h = w4a_fnv1a(s);
    return h ? h : 1;
}

static const unsigned char v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                            0xff, 0xff };

void guard_key_from_bytes(guard_key_t *k, int family, const void *addr,
                          int v6bits, apr_uint32_t hosting)
{
    memset(k, 0, sizeof(*k));
    k->hosting = hosting;
    w4a_client_bytes(family, addr, v6bits, k->addr);
    k->bits = !memcmp(k->addr, v4mapped, 12) ? 128 : (apr_uint32_t)v6bits;
}

apr_status_t guard_key_parse(guard_key_t *k, const char *text, int v6bits)
{
    char buf[64], *slash;
    unsigned char a[16];

    if (strlen(text) >= sizeof(buf)) {
        return APR_EINVAL;
    }
    strcpy(buf, text);
    if ((slash = strchr(buf, '/')) != NULL) {
        *slash = '\0';
    }
    if (inet_pton(AF_INET, buf, a) == 1) {
        guard_key_from_bytes(k, AF_INET, a, 128, 0);
        return APR_SUCCESS;
    }
    if (inet_pton(AF_INET6, buf, a) == 1) {
        guard_key_from_bytes(k, AF_INET6, a, v6bits, 0);
        return APR_SUCCESS;
    }
    return APR_EINVAL;
}

const char *guard_key_text(const guard_key_t *k, apr_pool_t *p)
{
    char buf[INET6_ADDRSTRLEN];
    if (!memcmp(k->addr, v4mapped, 12)) {
        inet_ntop(AF_INET, k->addr + 12, buf, sizeof(buf));
        return apr_pstrdup(p, buf);
    }
    inet_ntop(AF_INET6, k->addr, buf, sizeof(buf));
    return apr_psprintf(p, "%s/%u", buf, k->bits);
}

static apr_uint32_t key_hash(const guard_key_t *k)
{
    apr_uint32_t w[6];
    apr_uint64_t h;

    memcpy(w, k, sizeof(w));
    h = ((apr_uint64_t)(w[0] ^ w[1]) << 32 | (w[2] ^ w[5]))
        * APR_UINT64_C(0x9e3779b97f4a7c15);
    h ^= (apr_uint64_t)w[3] * APR_UINT64_C(0xc2b2ae3d27d4eb4f);
    h ^= (apr_uint64_t)(w[4] ^ k->bits) * APR_UINT64_C(0x165667b19e3779f9);
    return (apr_uint32_t)(h >> 32) ^ (apr_uint32_t)h;
}

static void slot_lock(guard_slot_t *s, apr_int64_t now_ms)
{
    /* the lock word is the time it was taken (ms, odd: never 0), for a
     * takeover after a crash */
    apr_uint32_t now = (apr_uint32_t)now_ms | 1u;
    int spins = 0;

    for (;;) {
        apr_uint32_t held = s->lock;
        if (held == 0 && apr_atomic_cas32(&s->lock, now, 0) == 0) {
            return;
        }
        if (++spins < 64) {
            continue;
        }
        spins = 0;
        now = (apr_uint32_t)(apr_time_now() / 1000) | 1u;
        /* Held by a process that was killed holding it: take it over. */
        if (held && (apr_uint32_t)(now - held) > GUARD_LOCK_STALE_MS
            && (apr_int32_t)(now - held) > 0
            && apr_atomic_cas32(&s->lock, now, held) == held) {
            return;
        }
        /* its holder may be a thread that lost its core: let it run */
        sched_yield();
    }
}

static void slot_unlock(guard_slot_t *s)
{
    apr_atomic_set32(&s->lock, 0);
}

/* The slot of k, locked; created (full bucket) when create.  NULL when
 * absent and !create. */
static guard_slot_t *slot_get(guard_table_t *t, const guard_key_t *k,
                              int create, apr_int64_t now_ms,
                              const guard_bucket_t *b)
{
    apr_uint32_t h = key_hash(k) % t->nslots, i, victim = 0;
    apr_int64_t best = -1;
    int vclass = 99;
    guard_slot_t *s;

    for (i = 0; i < GUARD_PROBE; i++) {
        s = &t->slots[(h + i) % t->nslots];
        slot_lock(s, now_ms);
        if (s->used && !memcmp(&s->key, k, sizeof(*k))) {
            return s;
        }
        if (create) {
            /* 0 free, 1 not banned (oldest seen), 2 banned (ends first);
             * a client's bans for one hosting protect its slot as a ban
             * for all does */
            apr_int64_t end = s->ban_until_ms > s->scoped_until_ms
                              ? s->ban_until_ms : s->scoped_until_ms;
            int c = !s->used ? 0 : end <= now_ms ? 1 : 2;
            apr_int64_t v = c == 1 ? s->seen_ms : c == 2 ? end : 0;
            if (c < vclass || (c == vclass && v < best)) {
                vclass = c;
                best = v;
                victim = (h + i) % t->nslots;
            }
        }
        slot_unlock(s);
    }
    if (!create) {
        return NULL;
    }
    s = &t->slots[victim];
    slot_lock(s, now_ms);
    if (s->used) {
        guard_count(t, GC_EVICTED, 1);
    }
    memset((char *)s + sizeof(s->lock), 0, sizeof(*s) - sizeof(s->lock));
    s->used = 1;
    s->key = *k;
    s->tokens = b ? b->burst * 1000 : 0;
    s->refill_ms = now_ms;
    s->seen_ms = now_ms;
    return s;
}

static void fill(guard_slot_t *s, const guard_verdict_t *dummy,
                 guard_verdict_t *v)
{
    (void)dummy;
    v->banned = 1;
    v->until_ms = s->ban_until_ms;
    v->since_ms = s->ban_since_ms;
    v->strikes = s->strikes;
    v->reason = (int)s->reason;
}

int guard_check(guard_table_t *t, const guard_key_t *k, apr_int64_t now_ms,
                int count_refused, guard_verdict_t *v)
{
    guard_slot_t *s = slot_get(t, k, 0, now_ms, NULL);
    int banned = 0;

    memset(v, 0, sizeof(*v));
    if (!s) {
        return 0;
    }
    if (s->ban_until_ms > now_ms) {
        banned = 1;
        fill(s, NULL, v);
        if (count_refused) {
            s->refused++;
        }
    }
    slot_unlock(s);
    return banned;
}

/* The duration of the ban of strike @a strikes (1: the first). */
static apr_int64_t ban_duration(apr_uint32_t strikes,
                                const guard_banpol_t *pol)
{
    apr_int64_t dur = pol->base_ms;
    apr_uint32_t i;

    for (i = 1; i < strikes && dur < pol->max_ms; i++) {
        dur *= 2;
    }
    return dur > pol->max_ms ? pol->max_ms : dur;
}

static void ban_locked(guard_slot_t *s, apr_int64_t now_ms, int reason,
                       const char *hosting, const guard_banpol_t *pol,
                       guard_verdict_t *v)
{
    apr_int64_t dur;

    if (s->strikes && s->ban_since_ms && now_ms - s->ban_since_ms
                                         > pol->forget_ms) {
        s->strikes = 0;
    }
    s->strikes++;
    dur = ban_duration(s->strikes, pol);
    s->ban_since_ms = now_ms;
    s->ban_until_ms = now_ms + dur;
    s->reason = (apr_uint32_t)reason;
    s->bans++;
    apr_cpystrn(s->hosting, hosting ? hosting : "", sizeof(s->hosting));
    fill(s, NULL, v);
    v->new_ban = 1;
}

/* Is @a e the scoped ban of the hosting @a name (hash @a h)? */
static int scoped_is(const guard_scoped_t *e, apr_uint32_t h,
                     const char *name)
{
    return e->hosting == h && !strncmp(e->name, name, GUARD_SCOPE_NAME - 1);
}

static void scoped_recount(guard_slot_t *s)
{
    int i;
    s->scoped_until_ms = 0;
    for (i = 0; i < GUARD_SCOPED_MAX; i++) {
        if (s->scoped[i].until_ms > s->scoped_until_ms) {
            s->scoped_until_ms = s->scoped[i].until_ms;
        }
    }
}

/* The entry of @a name in @a s; when absent and @a create, a new one:
 * a free entry, else one whose ban is over (the oldest), else the ban
 * ending first (counted), unless @a outlast (0: any) says the new ban
 * ends before it: then NULL (a client's GUARD_SCOPED_MAX bans ending
 * last are kept, and a fleet list naming more of them is stable). */
static guard_scoped_t *scoped_get(guard_table_t *t, guard_slot_t *s,
                                  const char *name, int create,
                                  apr_int64_t now_ms, apr_int64_t outlast)
{
    apr_uint32_t h = guard_hash_str(name);
    guard_scoped_t *e, *victim = NULL;
    int i, vclass = 99;
    apr_int64_t best = 0;

    for (i = 0; i < GUARD_SCOPED_MAX; i++) {
        e = &s->scoped[i];
        if (e->hosting && scoped_is(e, h, name)) {
            return e;
        }
        if (create) {
            int c = !e->hosting ? 0 : e->until_ms <= now_ms ? 1 : 2;
            apr_int64_t v = c == 1 ? (e->since_ms > e->unbanned_ms
                                      ? e->since_ms : e->unbanned_ms)
                            : c == 2 ? e->until_ms : 0;
            if (c < vclass || (c == vclass && v < best)) {
                vclass = c;
                best = v;
                victim = e;
            }
        }
    }
    if (!create) {
        return NULL;
    }
    if (vclass == 2) {
        if (outlast && victim->until_ms >= outlast) {
            return NULL;
        }
        guard_count(t, GC_SCOPED_REPLACED, 1);
    }
    memset(victim, 0, sizeof(*victim));
    victim->hosting = h;
    apr_cpystrn(victim->name, name, sizeof(victim->name));
    return victim;
}

static void scoped_fill(const guard_scoped_t *e, guard_verdict_t *v)
{
    v->banned = 1;
    v->scoped = 1;
    v->until_ms = e->until_ms;
    v->since_ms = e->since_ms;
    v->strikes = e->strikes;
    v->reason = (int)e->reason;
}

int guard_scoped_check(guard_table_t *t, const guard_key_t *k,
                       const char *name, apr_int64_t now_ms,
                       int count_refused, guard_verdict_t *v)
{
    guard_slot_t *s = slot_get(t, k, 0, now_ms, NULL);
    guard_scoped_t *e;
    int banned = 0;

    memset(v, 0, sizeof(*v));
    if (!s) {
        return 0;
    }
    if (s->scoped_until_ms > now_ms
        && (e = scoped_get(t, s, name, 0, now_ms, 0)) != NULL
        && e->until_ms > now_ms) {
        banned = 1;
        scoped_fill(e, v);
        if (count_refused) {
            s->refused++;
        }
    }
    slot_unlock(s);
    return banned;
}

void guard_charge(guard_table_t *t, const guard_key_t *k,
                  const guard_bucket_t *b, apr_int64_t units, int count,
                  int refuse_banned,
                  apr_int64_t now_ms, int (*exempt)(void *), void *baton,
                  const guard_key_t *ban_key, int reason, const char *hosting,
                  const guard_banpol_t *pol, guard_verdict_t *v)
{
    int may_ban;
    apr_uint32_t qstrikes = 0;      /* a login quota's, from its own slot */
    apr_int64_t qsince = 0;
    guard_slot_t *s = slot_get(t, k, 1, now_ms, b);
    apr_int64_t el = now_ms - s->refill_ms;
    int over = 0, same = ban_key == k
                         || !memcmp(ban_key, k, sizeof(*k));

    memset(v, 0, sizeof(*v));
    if (refuse_banned && s->ban_until_ms > now_ms
        && !(exempt && exempt(baton))) {
        s->refused++;
        fill(s, NULL, v);
        slot_unlock(s);
        return;
    }
    if (el > 0) {
        s->tokens += el * b->rate / 1000;   /* rate: milli-units per s */
        if (s->tokens > b->burst * 1000) {
            s->tokens = b->burst * 1000;
        }
        s->refill_ms = now_ms;
    }
    s->seen_ms = now_ms;
    s->tokens -= units * 1000;
    s->cost += (apr_uint64_t)units;
    if (count) {
        s->requests++;
    }
    if (s->tokens < 0) {
        over = 1;
        /* never in debt by more than one burst: once the ban is over,
         * the client starts again from an empty bucket */
        if (s->tokens < -b->burst * 1000) {
            s->tokens = -b->burst * 1000;
        }
    }
    v->scoped_until_ms = s->scoped_until_ms;
    may_ban = over && !(exempt && exempt(baton));
    if (over && !may_ban) {
        s->tokens = 0;
    }
    if (over && may_ban && same && s->ban_until_ms <= now_ms) {
        ban_locked(s, now_ms, reason, hosting, pol, v);
        s->tokens = 0;
    }
    if (over && may_ban && !same) {
        /* A login quota's slot, (client, hosting), is never banned: its
         * strikes and ban_since_ms keep the scoped ban's, which bans on
         * 4 other hostings would otherwise reset by replacing its entry
         * (a brute-forcer's ban at strike 1 for ever). */
        qstrikes = s->strikes;
        qsince = s->ban_since_ms;
    }
    slot_unlock(s);
    if (over && may_ban && !same) {
        /* a login quota: ban the client from this hosting only (in its
         * own slot); the quota refills for after the ban */
        guard_scoped_t *e;
        s = slot_get(t, ban_key, 1, now_ms, b);
        e = scoped_get(t, s, hosting ? hosting : "-", 1, now_ms, 0);
        if (e->until_ms > now_ms) {
            scoped_fill(e, v);              /* banned meanwhile */
        }
        else {
            if (e->strikes && e->since_ms
                && now_ms - e->since_ms > pol->forget_ms) {
                e->strikes = 0;
            }
            if (qstrikes > e->strikes && qsince
                && now_ms - qsince <= pol->forget_ms) {
                e->strikes = qstrikes;      /* its entry was replaced */
            }
            e->strikes++;
            e->since_ms = now_ms;
            e->until_ms = now_ms + ban_duration(e->strikes, pol);
            e->reason = (apr_uint32_t)reason;
            s->bans++;
            scoped_recount(s);
            scoped_fill(e, v);
            v->new_ban = 1;
        }
        v->scoped_until_ms = s->scoped_until_ms;
        slot_unlock(s);
        if (v->new_ban && (s = slot_get(t, k, 0, now_ms, b)) != NULL) {
            s->strikes = v->strikes;
            s->ban_since_ms = now_ms;
            slot_unlock(s);
        }
    }
    v->over = over;
    v->exempted = over && !may_ban;
}

int guard_ban_set(guard_table_t *t, const guard_key_t *k, apr_int64_t since_ms,
                  apr_int64_t until_ms, int reason, const char *hosting,
                  apr_int64_t now_ms)
{
    guard_slot_t *s;
    int changed = 0;

    if (until_ms <= now_ms) {
        return 0;
    }
    s = slot_get(t, k, 1, now_ms, NULL);
    if (s->unbanned_ms < since_ms && s->ban_until_ms < until_ms) {
        if (s->ban_until_ms <= now_ms) {
            s->ban_since_ms = since_ms;
            s->bans++;
        }
        s->ban_until_ms = until_ms;
        s->reason = (apr_uint32_t)reason;
        apr_cpystrn(s->hosting, hosting ? hosting : "", sizeof(s->hosting));
        changed = 1;
    }
    slot_unlock(s);
    return changed;
}

int guard_scoped_set(guard_table_t *t, const guard_key_t *k,
                     const char *name, apr_int64_t since_ms,
                     apr_int64_t until_ms, int reason,
                     const guard_bucket_t *b, apr_int64_t now_ms)
{
    guard_slot_t *s;
    guard_scoped_t *e;
    int changed = 0;

    if (until_ms <= now_ms) {
        return 0;
    }
    s = slot_get(t, k, 1, now_ms, b);
    e = scoped_get(t, s, name, 1, now_ms, until_ms);
    if (e && e->unbanned_ms < since_ms && e->until_ms < until_ms) {
        if (e->until_ms <= now_ms) {
            e->since_ms = since_ms;
            s->bans++;
        }
        e->until_ms = until_ms;
        e->reason = (apr_uint32_t)reason;
        scoped_recount(s);
        changed = 1;
    }
    slot_unlock(s);
    return changed;
}

int guard_scoped_remove(guard_table_t *t, const guard_key_t *k,
                        const char *name, apr_int64_t when_ms,
                        apr_int64_t now_ms)
{
    guard_key_t lk = *k;
    guard_slot_t *s;
    guard_scoped_t *e;
    int removed = 0;

    /* the strikes kept in the login quota's slot too (guard_charge) */
    lk.hosting = guard_hash_str(name);
    if ((s = slot_get(t, &lk, 0, now_ms, NULL)) != NULL) {
        if (s->ban_since_ms <= when_ms) {
            s->strikes = 0;
            s->ban_since_ms = 0;
        }
        slot_unlock(s);
    }
    if (!(s = slot_get(t, k, 0, now_ms, NULL))) {
        return 0;
    }
    if ((e = scoped_get(t, s, name, 0, now_ms, 0)) != NULL) {
        if (e->unbanned_ms < when_ms) {
            e->unbanned_ms = when_ms;
        }
        if (e->until_ms && e->since_ms <= when_ms) {
            removed = e->until_ms > when_ms;
            e->until_ms = 0;
            e->strikes = 0;
            scoped_recount(s);
        }
    }
    slot_unlock(s);
    return removed;
}

int guard_ban_remove(guard_table_t *t, const guard_key_t *k,
                     apr_int64_t when_ms, apr_int64_t now_ms)
{
    guard_slot_t *s = slot_get(t, k, 0, now_ms, NULL);
    int removed = 0;

    if (!s) {
        return 0;
    }
    if (s->unbanned_ms < when_ms) {
        s->unbanned_ms = when_ms;
    }
    if (s->ban_until_ms && s->ban_since_ms <= when_ms) {
        removed = s->ban_until_ms > when_ms;
        s->ban_until_ms = 0;
        s->strikes = 0;
    }
    slot_unlock(s);
    return removed;
}

int guard_lookup(guard_table_t *t, const guard_key_t *k, guard_slot_t *out)
{
    guard_slot_t *s = slot_get(t, k, 0, apr_time_now() / 1000, NULL);
    if (!s) {
        return 0;
    }
    *out = *s;
    slot_unlock(s);
    return 1;
}

void guard_walk(guard_table_t *t, void (*fn)(void *baton,
                                             const guard_slot_t *s),
                void *baton)
{
    apr_int64_t now_ms = apr_time_now() / 1000;
    apr_uint32_t i;
    for (i = 0; i < t->nslots; i++) {
        guard_slot_t c, *s = &t->slots[i];
        if (!s->used) {
            continue;
        }
        slot_lock(s, now_ms);
        c = *s;
        slot_unlock(s);
        if (c.used) {
            fn(baton, &c);
        }
    }
}
