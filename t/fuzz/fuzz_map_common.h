/*
 * Shared by the map targets: they #include w4a_map.c itself (one
 * translation unit), to reach the index layout and its checksum, and
 * check an opened index against the public API.
 */
#ifndef W4A_FUZZ_MAP_COMMON_H
#define W4A_FUZZ_MAP_COMMON_H

#include "fuzz_common.h"
#include "../../modules/common/w4a_map.c"

/* Checks from the first input byte: what w4a-vhostmap and the sources pass. */
static void fuzz_checks(unsigned char opt, w4a_map_checks_t *k,
                        apr_array_header_t *bases)
{
    memset(k, 0, sizeof(*k));
    k->skip_bad = opt & 1;
    k->min_uid = (opt & 2) ? 1000 : 0;
    if (opt & 4) {
        APR_ARRAY_PUSH(bases, const char *) = "/datas";
        APR_ARRAY_PUSH(bases, const char *) = "/home/";
        k->bases = bases;
    }
}

/* A string the lookup gave must lie inside the mapping, terminated. */
static void in_map(const w4a_map_t *m, const char *s, int optional)
{
    const char *b = m->base;

    if (!s) {
        FUZZ_CHECK(optional, "required string absent");
        return;
    }
    FUZZ_CHECK(s >= m->strings && s < b + m->size, "string outside the map");
    FUZZ_CHECK(memchr(s, '\0', (size_t)(b + m->size - s)) != NULL,
               "unterminated string");
}

static void check_rec(const w4a_map_t *m, const w4a_hosting_t *r)
{
    in_map(m, r->domain, 0);
    in_map(m, r->hosting, 0);
    in_map(m, r->docroot, 0);
    in_map(m, r->php_version, 1);
    in_map(m, r->log_dir, 1);
    in_map(m, r->media_host, 1);
    FUZZ_CHECK(r->state == W4A_STATE_ACTIVE || r->state == W4A_STATE_SUSPENDED,
               "state %d", (int)r->state);
    FUZZ_CHECK(!(r->flags & ~KNOWN_FLAGS), "flags %x", r->flags);
    FUZZ_CHECK(!(r->flags & W4A_FLAG_LOG) == !r->log_dir,
               "log flag without a directory or the reverse");
}

static int count_rec(void *baton, const w4a_hosting_t *r)
{
    const w4a_map_t *m = ((void **)baton)[0];
    apr_uint32_t *n = ((void **)baton)[1];

    FUZZ_CHECK(r->matched == NULL, "iterate gives a matched name");
    check_rec(m, r);
    (*n)++;
    return 0;
}

static int same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

/* Every name of the slot table is found, and gives its own record; every
 * record iterates.  With a pool: the record's cache line
 * (w4a_record_format) parses back, with the same checks, to the same
 * record (the memcached source stores exactly that). */
static void check_index(const w4a_map_t *m, const w4a_map_checks_t *k,
                        apr_pool_t *p)
{
    apr_uint32_t i, n = 0;
    void *baton[2];

    baton[0] = (void *)m;
    baton[1] = &n;
    FUZZ_CHECK(w4a_map_iterate(m, count_rec, baton) == 0, "iterate stopped");
    FUZZ_CHECK(n == w4a_map_records(m), "iterated %u of %u records", n,
               w4a_map_records(m));

    for (i = 0; i < m->nslots; i++) {
        const map_slot_t *s = &m->slots[i];
        w4a_hosting_t rec;
        const char *name, *host;
        char buf[W4A_HOST_MAX + 16];
        apr_status_t rv;

        if (LE32(s->record) == NONE) {
            continue;
        }
        name = m->strings + LE32(s->name);
        host = name;
        if (name[0] == '*') {
            /* one more label: the longest wildcard is this one, unless an
             * exact name happens to be that host */
            if (strlen(name) + 6 > W4A_HOST_MAX || name[1] != '.') {
                continue;
            }
            snprintf(buf, sizeof(buf), "zq9x%s", name + 1);
            host = buf;
        }
        memset(&rec, 0, sizeof(rec));
        rv = w4a_map_lookup(m, host, strlen(host), &rec);
        if (m->strings[LE32(s->name)] == '\0'
            || strlen(host) > W4A_HOST_MAX) {
            continue;               /* a corrupt index's odd names */
        }
        if (name[0] != '*' && rv != APR_SUCCESS) {
            /* a slot with the wrong hash (a hand-made index) is unreachable;
             * only the compiler's own indexes must find every name */
            if (p) {
                FUZZ_CHECK(0, "name '%s' of slot %u not found", name, i);
            }
            continue;
        }
        if (rv != APR_SUCCESS) {
            continue;
        }
        check_rec(m, &rec);
        in_map(m, rec.matched, 0);
        if (p && name[0] != '*') {
            FUZZ_CHECK(!strcmp(rec.matched, name), "'%s' matched '%s'", name,
                       rec.matched);
            FUZZ_CHECK(rec.domain == m->strings
                       + LE32(m->records[LE32(s->record)].domain),
                       "'%s' gave another record", name);
        }
        if (p) {
            char *line = w4a_record_format(&rec, p);
            w4a_hosting_t back;
            const char *err = NULL;
            memset(&back, 0, sizeof(back));
            FUZZ_CHECK(!strpbrk(line, "\r\n"), "cache line holds a newline");
            rv = w4a_record_parse_line(&back, line, k, &err, p);
            FUZZ_CHECK(rv == APR_SUCCESS, "cache line '%s' refused: %s", line,
                       err ? err : "?");
            FUZZ_CHECK(same_str(back.matched, rec.matched)
                       && same_str(back.domain, rec.domain)
                       && same_str(back.hosting, rec.hosting)
                       && back.uid == rec.uid && back.gid == rec.gid
                       && same_str(back.docroot, rec.docroot)
                       && same_str(back.php_version, rec.php_version)
                       && back.state == rec.state && back.flags == rec.flags
                       && same_str(back.log_dir, rec.log_dir)
                       && same_str(back.media_host, rec.media_host),
                       "cache line '%s' parses back to another record", line);
        }
    }
}

#endif /* W4A_FUZZ_MAP_COMMON_H */
