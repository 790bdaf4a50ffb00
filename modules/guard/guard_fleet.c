/**
 * @file guard_fleet.c
 * @brief The fleet's list of bans in memcached (see guard_fleet.h).
 */
#include <stdlib.h>
#include <string.h>

#include <apr_lib.h>
#include <apr_strings.h>

#include "guard_fleet.h"

int guard_fleet_name_ok(const char *name)
{
    const char *c;
    for (c = name; *c; c++) {
        if (!apr_isalnum(*c) && !strchr("._-", *c)) {
            return 0;
        }
    }
    return c > name && c - name <= GUARD_FLEET_NAME_MAX;
}

static void parse(const char *val, apr_array_header_t *out, apr_pool_t *p)
{
    char *text = apr_pstrdup(p, val), *line, *last;

    for (line = apr_strtok(text, "\n", &last); line;
         line = apr_strtok(NULL, "\n", &last)) {
        char *f[5], *l2, *tok, *scope;
        int n = 0;
        guard_fleet_ban_t *b;

        for (tok = apr_strtok(line, " ", &l2); tok && n < 5;
             tok = apr_strtok(NULL, " ", &l2)) {
            f[n++] = tok;
        }
        if (n != 5) {
            continue;
        }
        /* a list sealed by the key is the nodes' own; with no key it is
         * anyone's: keep the names printable in logs and JSON */
        for (tok = f[3]; *tok; tok++) {
            if (!apr_isalnum(*tok)) {
                f[3] = "fleet";
                break;
            }
        }
        if (strcmp(f[4], "-") && !guard_fleet_name_ok(f[4])) {
            f[4] = "-";
        }
        scope = strchr(f[0], '@');
        if (scope) {
            *scope++ = '\0';
            if (!guard_fleet_name_ok(scope)) {
                continue;           /* a scope we cannot match: no ban */
            }
        }
        else if (!strcmp(f[3], "login")) {
            /* the old format's login ban: narrowed to its hosting */
            if (!strcmp(f[4], "-")) {
                continue;
            }
            scope = f[4];
        }
        b = apr_array_push(out);
        b->scope = scope;
        b->addr = f[0];
        b->since_ms = apr_atoi64(f[1]);
        b->until_ms = apr_atoi64(f[2]);
        b->reason = f[3];
        b->hosting = f[4];
    }
}

apr_status_t guard_fleet_read(w4a_mc_t *mc, apr_array_header_t **bans,
                              const char **err, apr_pool_t *p)
{
    char *val = NULL;
    apr_status_t rv;

    *bans = apr_array_make(p, 16, sizeof(guard_fleet_ban_t));
    rv = w4a_mc_get_max(mc, GUARD_FLEET_KEY, GUARD_FLEET_BYTES, &val, err, p);
    if (rv == APR_NOTFOUND) {
        return APR_SUCCESS;
    }
    if (rv != APR_SUCCESS) {
        return rv;
    }
    parse(val, *bans, p);
    return APR_SUCCESS;
}

static apr_int64_t end_of(const guard_fleet_ban_t *b)
{
    return b->until_ms ? b->until_ms : b->since_ms + GUARD_FLEET_TOMB_MS;
}

static int by_end_desc(const void *a, const void *b)
{
    apr_int64_t x = end_of(a), y = end_of(b);
    return x < y ? 1 : x > y ? -1 : 0;
}

apr_status_t guard_fleet_publish(w4a_mc_t *mc, const guard_fleet_ban_t *ban,
                                 apr_int64_t now_ms, const char **err,
                                 apr_pool_t *p)
{
    apr_array_header_t *bans, *keep;
    apr_status_t rv;
    apr_int64_t last = end_of(ban);
    char *text;
    const apr_size_t room = 320;
    apr_size_t len = 0;
    int i, n;

    if (ban->scope && !guard_fleet_name_ok(ban->scope)) {
        *err = "the hosting of a scoped ban is not a name";
        return APR_EINVAL;
    }
    rv = guard_fleet_read(mc, &bans, err, p);
    if (rv == APR_EGENERAL) {
        return rv;
    }
    if (rv != APR_SUCCESS) {
        /* not ours (forged) or too old: written over */
        bans = apr_array_make(p, 1, sizeof(guard_fleet_ban_t));
    }
    keep = apr_array_make(p, bans->nelts + 1, sizeof(guard_fleet_ban_t));
    *(guard_fleet_ban_t *)apr_array_push(keep) = *ban;
    for (i = 0; i < bans->nelts; i++) {
        guard_fleet_ban_t *b = &APR_ARRAY_IDX(bans, i, guard_fleet_ban_t);
        if ((!strcmp(b->addr, ban->addr)
             && (b->scope && ban->scope ? !strcmp(b->scope, ban->scope)
                                        : b->scope == ban->scope))
            || end_of(b) <= now_ms) {
            continue;
        }
        *(guard_fleet_ban_t *)apr_array_push(keep) = *b;
        if (end_of(b) > last) {
            last = end_of(b);
        }
    }
    qsort(keep->elts, keep->nelts, sizeof(guard_fleet_ban_t), by_end_desc);
    n = keep->nelts < GUARD_FLEET_MAX ? keep->nelts : GUARD_FLEET_MAX;
    text = apr_palloc(p, (apr_size_t)n * room + 1);
    text[0] = '\0';
    for (i = 0; i < n; i++) {
        guard_fleet_ban_t *b = &APR_ARRAY_IDX(keep, i, guard_fleet_ban_t);
        /* address <= 43, scope and hosting <= 63 (checked), times <= 20 */
        apr_size_t l = (apr_size_t)apr_snprintf(text + len, room, "%s%s%s %"
                                                APR_INT64_T_FMT " %"
                                                APR_INT64_T_FMT " %.16s "
                                                "%.63s\n", b->addr,
                                                b->scope ? "@" : "",
                                                b->scope ? b->scope : "",
                                                b->since_ms, b->until_ms,
                                                b->reason, b->hosting);
        if (len + l > GUARD_FLEET_BYTES) {
            text[len] = '\0';      /* the rest end sooner: dropped */
            break;
        }
        len += l;
    }
    return w4a_mc_set(mc, GUARD_FLEET_KEY, text,
                      (apr_uint32_t)((last - now_ms) / 1000 + 2), err, p);
}
