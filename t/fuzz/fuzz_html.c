/*
 * The streaming HTML rewriter (modules/common/w4a_html.c).
 *
 * Input: byte 0 chooses max_token (0: the default 64 KiB, else 4 to 512,
 * so that the "overlong token" paths are reached), byte 1 chooses the
 * page's doc_path (none, or /blog/post.html) and how many cut points
 * follow (0 to 15), then one byte per cut point (the length of the next
 * piece, 0 included), then the page.
 *
 * Invariants:
 * - the output does not depend on how the page is split into buckets:
 *   the page fed whole and fed in the chosen pieces (each piece in a
 *   buffer of its own, so that ASan sees a read past its end) give the
 *   same bytes, the same number of URLs rewritten;
 * - bytes_in is the page's length, bytes_out the output's;
 * - no URL rewritten: the output is the page.
 */
#include "fuzz_common.h"
#include "w4a_html.h"

#ifndef FUZZ_STRICT_COUNTERS
#define FUZZ_STRICT_COUNTERS 0
#endif

static const char *const hosts[] = { "a.example", "www.a.example", NULL };
static const char *const exts[] = { "css", "js", "png", "jpg", "webp",
                                    "svg", "woff2", "mp4", NULL };

typedef struct {
    char  *d;
    size_t len, cap;
} obuf;

static apr_status_t sink(void *baton, const char *data, apr_size_t len)
{
    obuf *o = baton;

    FUZZ_CHECK(len == 0 || data != NULL, "NULL data");
    if (o->len + len > o->cap) {
        o->cap = (o->len + len) * 2 + 64;
        o->d = realloc(o->d, o->cap);
        if (!o->d) {
            abort();
        }
    }
    memcpy(o->d + o->len, data, len);
    o->len += len;
    return APR_SUCCESS;
}

static void run(const w4a_html_opts_t *op, const uint8_t *page, size_t len,
                const uint8_t *cuts, int ncuts, obuf *o, w4a_html_stats_t *st)
{
    apr_pool_t *p;
    w4a_html_t *h;
    size_t at = 0;
    int i;

    apr_pool_create(&p, fuzz_pool());
    FUZZ_CHECK(w4a_html_create(&h, p, op, sink, o) == APR_SUCCESS, "create");
    for (i = 0; i <= ncuts && at <= len; i++) {
        size_t n = i < ncuts ? cuts[i] : len - at;
        char *piece;
        if (n > len - at) {
            n = len - at;
        }
        piece = malloc(n ? n : 1);
        memcpy(piece, page + at, n);
        FUZZ_CHECK(w4a_html_feed(h, piece, n) == APR_SUCCESS, "feed");
        free(piece);
        at += n;
    }
    FUZZ_CHECK(w4a_html_finish(h) == APR_SUCCESS, "finish");
    w4a_html_get_stats(h, st);
    apr_pool_destroy(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    w4a_html_opts_t op;
    w4a_html_stats_t s1, s2;
    obuf whole = { NULL, 0, 0 }, split = { NULL, 0, 0 };
    const uint8_t *cuts, *page;
    size_t len;
    int ncuts;

    if (size < 2) {
        return 0;
    }
    memset(&op, 0, sizeof(op));
    op.media_base = "//media.a.example";
    op.hosts = hosts;
    op.extensions = exts;
    op.max_token = data[0] ? 4 + (apr_size_t)(data[0] - 1) * 2 : 0;
    op.doc_path = (data[1] & 0x10) ? NULL : "/blog/post.html";
    ncuts = data[1] & 0x0f;
    if (size < 2 + (size_t)ncuts) {
        return 0;
    }
    cuts = data + 2;
    page = cuts + ncuts;
    len = size - 2 - (size_t)ncuts;

    run(&op, page, len, NULL, 0, &whole, &s1);
    run(&op, page, len, cuts, ncuts, &split, &s2);

    FUZZ_CHECK(whole.len == split.len
               && (whole.len == 0 || !memcmp(whole.d, split.d, whole.len)),
               "output depends on the split: %zu vs %zu bytes", whole.len,
               split.len);
    /* (the overlong counter may differ: a CSS url( token that gives up
     * past max_token counts as overlong only when a split made it held;
     * see docs/testing.md.  FUZZ_STRICT_COUNTERS=1 checks it too.) */
    FUZZ_CHECK(s1.urls == s2.urls, "URLs rewritten depend on the split: "
               "%llu/%llu", (unsigned long long)s1.urls,
               (unsigned long long)s2.urls);
#if FUZZ_STRICT_COUNTERS
    FUZZ_CHECK(s1.overlong == s2.overlong, "overlong counter depends on the "
               "split: %llu/%llu", (unsigned long long)s1.overlong,
               (unsigned long long)s2.overlong);
#endif
    FUZZ_CHECK(s1.bytes_in == len && s1.bytes_out == whole.len,
               "bytes_in %llu of %zu, bytes_out %llu of %zu",
               (unsigned long long)s1.bytes_in, len,
               (unsigned long long)s1.bytes_out, whole.len);
    if (s1.urls == 0) {
        FUZZ_CHECK(whole.len == len && (len == 0
                   || !memcmp(whole.d, page, len)),
                   "no URL rewritten, yet the page changed");
    }
    free(whole.d);
    free(split.d);
    return 0;
}
