/*
 * Records of the SQL and memcached sources (w4a_record_parse,
 * w4a_record_parse_line in modules/common/w4a_map.c): a row or a cache
 * value is not trusted more than a line of the text map.
 *
 * Input: one byte of options (as fuzz_map_compile: min_uid 1000, bases
 * /datas and /home), one byte choosing the entry, then
 * - even: a cache line for w4a_record_parse_line;
 * - odd: key, domain and the 7 fields, separated by NUL bytes (missing
 *   ones are NULL), for w4a_record_parse.
 *
 * Invariants: a refusal says why; an accepted record meets the checks
 * (user name, uid/gid >= min_uid, docroot absolute and clean and below a
 * base, state, log flag with its directory); its cache line holds no
 * newline and parses back to the same record (format/parse round trip).
 */
#include "fuzz_map_common.h"

static void check_accepted(const w4a_hosting_t *r, const w4a_map_checks_t *k,
                           apr_pool_t *p)
{
    const char *err = NULL, *why;
    w4a_hosting_t back;
    char *line, *doc;
    int i, ok;

    FUZZ_CHECK(r->matched && r->domain && r->hosting && r->docroot,
               "missing field");
    FUZZ_CHECK(user_ok(r->hosting), "hosting '%s'", r->hosting);
    FUZZ_CHECK(r->uid >= k->min_uid && r->gid >= k->min_uid
               && r->uid != 0xFFFFFFFFu && r->gid != 0xFFFFFFFFu,
               "uid %u gid %u", r->uid, r->gid);
    doc = apr_pstrdup(p, r->docroot);
    FUZZ_CHECK((why = clean_path(doc)) == NULL && !strcmp(doc, r->docroot),
               "docroot '%s': %s", r->docroot, why ? why : "not normalised");
    if (k->bases && k->bases->nelts) {
        for (i = 0, ok = 0; i < k->bases->nelts; i++) {
            ok |= docroot_under(r->docroot, APR_ARRAY_IDX(k->bases, i,
                                                         const char *));
        }
        FUZZ_CHECK(ok, "docroot '%s' outside the bases", r->docroot);
    }
    FUZZ_CHECK(!r->php_version || version_ok(r->php_version), "php '%s'",
               r->php_version);
    FUZZ_CHECK(r->state == W4A_STATE_ACTIVE || r->state == W4A_STATE_SUSPENDED,
               "state %d", (int)r->state);
    FUZZ_CHECK(!(r->flags & W4A_FLAG_LOG) == !r->log_dir, "log flag/dir");
    if (r->log_dir) {
        doc = apr_pstrdup(p, r->log_dir);
        FUZZ_CHECK(clean_path(doc) == NULL, "log dir '%s'", r->log_dir);
    }

    line = w4a_record_format(r, p);
    FUZZ_CHECK(!strpbrk(line, "\r\n"), "cache line holds a newline");
    memset(&back, 0, sizeof(back));
    FUZZ_CHECK(w4a_record_parse_line(&back, line, k, &err, p) == APR_SUCCESS,
               "own cache line '%s' refused: %s", line, err ? err : "?");
    FUZZ_CHECK(same_str(back.matched, r->matched)
               && same_str(back.domain, r->domain)
               && same_str(back.hosting, r->hosting)
               && back.uid == r->uid && back.gid == r->gid
               && same_str(back.docroot, r->docroot)
               && same_str(back.php_version, r->php_version)
               && back.state == r->state && back.flags == r->flags
               && same_str(back.log_dir, r->log_dir)
               && same_str(back.media_host, r->media_host),
               "cache line '%s' parses back to another record", line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    w4a_map_checks_t k;
    w4a_hosting_t rec;
    const char *err = NULL;
    apr_status_t rv;
    char *s;

    if (size < 2) {
        return 0;
    }
    apr_pool_create(&p, fuzz_pool());
    fuzz_checks(data[0] & 6, &k, apr_array_make(p, 2, sizeof(const char *)));
    s = apr_pcalloc(p, size + 1);
    memcpy(s, data + 2, size - 2);
    memset(&rec, 0, sizeof(rec));
    if (!(data[1] & 1)) {
        rv = w4a_record_parse_line(&rec, s, &k, &err, p);
    }
    else {
        const char *f[9];
        const char *q = s, *end = s + (size - 2);
        int i;
        for (i = 0; i < 9; i++) {
            if (q <= end) {
                f[i] = q;
                q += strlen(q) + 1;
            }
            else {
                f[i] = NULL;
            }
        }
        if (!f[0]) {
            apr_pool_destroy(p);
            return 0;
        }
        rv = w4a_record_parse(&rec, f[0], f[1], f + 2, &k, &err, p);
    }
    if (rv == APR_SUCCESS) {
        check_accepted(&rec, &k, p);
    }
    else {
        FUZZ_CHECK(rv == APR_EINVAL && err && *err, "refused: %d", rv);
    }
    apr_pool_destroy(p);
    return 0;
}
