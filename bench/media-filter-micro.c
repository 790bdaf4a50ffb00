/*
 * bench/media-filter-micro: throughput of the httpd-free rewriter
 * (modules/common/w4a_html.c) over a page in memory, fed in slices of a
 * given size, the output copied into a buffer as the filter does.
 *
 * usage: media-filter-micro PAGE MEDIA_HOST SITE_HOST SECONDS SLICE
 * Timed in CPU time of the process (the machine is shared).
 * prints: "micro bytes=<page> urls=<per page> slice=<n> MBps=<MB/s>
 *          ns_per_100KB=<ns>" (MB = 10^6 bytes)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>

#include "w4a_html.h"

static char *out_buf;
static apr_size_t out_len, out_cap;

static apr_status_t sink(void *baton, const char *data, apr_size_t len)
{
    if (out_len + len > out_cap) {
        out_cap = (out_len + len) * 2;
        out_buf = realloc(out_buf, out_cap);
        if (!out_buf) {
            return APR_ENOMEM;
        }
    }
    memcpy(out_buf + out_len, data, len);
    out_len += len;
    return APR_SUCCESS;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    static const char *const exts[] = {
        "css", "js", "mjs", "map", "jpg", "jpeg", "png", "gif", "webp",
        "avif", "svg", "ico", "woff", "woff2", "ttf", "otf", "eot", "mp4",
        "webm", "pdf", "txt", NULL };
    const char *hosts[2];
    apr_pool_t *pool, *p;
    w4a_html_opts_t o;
    w4a_html_stats_t st;
    FILE *f;
    char *page;
    long size;
    double seconds, t0, t;
    apr_size_t slice, off;
    unsigned long iters = 0;
    apr_uint64_t urls = 0;

    if (argc != 6) {
        fprintf(stderr, "usage: %s PAGE MEDIA_HOST SITE_HOST SECONDS SLICE\n",
                argv[0]);
        return 2;
    }
    f = fopen(argv[1], "rb");
    if (!f || fseek(f, 0, SEEK_END) || (size = ftell(f)) <= 0) {
        perror(argv[1]);
        return 2;
    }
    rewind(f);
    page = malloc(size);
    if (!page || fread(page, 1, size, f) != (size_t)size) {
        perror(argv[1]);
        return 2;
    }
    fclose(f);
    seconds = atof(argv[4]);
    slice = (apr_size_t)atol(argv[5]);
    if (!slice) {
        slice = size;
    }
    apr_initialize();
    apr_pool_create(&pool, NULL);
    hosts[0] = argv[3];
    hosts[1] = NULL;
    o.media_base = apr_pstrcat(pool, "//", argv[2], NULL);
    o.hosts = hosts;
    o.doc_path = "/index.html";
    o.extensions = exts;
    o.max_token = 0;

    t0 = now();
    do {
        w4a_html_t *h;
        apr_pool_create(&p, pool);
        out_len = 0;
        if (w4a_html_create(&h, p, &o, sink, NULL) != APR_SUCCESS) {
            return 1;
        }
        for (off = 0; off < (apr_size_t)size; off += slice) {
            apr_size_t n = (apr_size_t)size - off < slice ? (apr_size_t)size - off
                                                          : slice;
            if (w4a_html_feed(h, page + off, n) != APR_SUCCESS) {
                return 1;
            }
        }
        w4a_html_finish(h);
        w4a_html_get_stats(h, &st);
        urls = st.urls;
        apr_pool_destroy(p);
        iters++;
        t = now() - t0;
    } while (t < seconds);
    printf("micro bytes=%ld urls=%" APR_UINT64_T_FMT " slice=%lu MBps=%.0f "
           "ns_per_100KB=%.0f\n", size, urls, (unsigned long)slice,
           (double)size * iters / t / 1e6,
           t / iters / size * 102400 * 1e9);
    apr_terminate();
    return 0;
}
