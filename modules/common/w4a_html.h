/**
 * @file w4a_html.h
 * @brief Streaming rewriter of static asset URLs in HTML (httpd-free).
 *
 * Feeds of any size and at any boundary give the same output as one feed
 * of the whole page: the tokenizer keeps its state between feeds and holds
 * back at most one tag (or one CSS url() token) of at most max_token
 * bytes; a longer one is passed through unchanged, whatever the chunking.
 *
 * What is rewritten (to opts->media_base + the normalised path + the
 * original query/fragment): same-site URLs whose path ends in an
 * allow-listed extension, in the attributes src, data-src, data-lazy-src,
 * poster, srcset, data-srcset, data-lazy-srcset, imagesrcset (every
 * candidate), href of <link rel=stylesheet|icon|preload|...>, url(...) in
 * style attributes and in <style> blocks.  Hyperlinks, forms, script and
 * other raw text, comments are left alone.  Relative URLs resolve against
 * opts->doc_path; a page with a <base> tag keeps its relative URLs.
 *
 * ASCII-compatible encodings only: a page that starts with a UTF-16 byte
 * order mark passes through untouched (the caller checks the declared
 * charset with w4a_html_charset_ok()).
 */
#ifndef W4A_HTML_H
#define W4A_HTML_H

#include <apr.h>
#include <apr_pools.h>
#include <apr_errno.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Default longest tag (or CSS url() token) that may be rewritten. */
#define W4A_HTML_MAX_TOKEN_DEFAULT 65536

/**
 * Output sink: called with consecutive pieces of the output.
 * @return APR_SUCCESS, or an error that the rewriter returns at once.
 */
typedef apr_status_t w4a_html_out_fn(void *baton, const char *data,
                                     apr_size_t len);

/** What the rewriter needs to know about the page. */
typedef struct w4a_html_opts_t {
    /** Put before the path, e.g. "//media.example.com" (no trailing '/'). */
    const char         *media_base;
    /** Same-site host names, lower case, NULL-terminated. */
    const char *const  *hosts;
    /** URL path of the page (no query), for relative URLs; NULL: relative
     *  URLs are left alone. */
    const char         *doc_path;
    /** Allow-listed extensions, lower case, no dot, NULL-terminated. */
    const char *const  *extensions;
    /** Longest tag or CSS url() token rewritten; 0: the default. */
    apr_size_t          max_token;
} w4a_html_opts_t;

/** Counters of one rewriter. */
typedef struct w4a_html_stats_t {
    apr_uint64_t urls;        /**< URLs rewritten */
    apr_uint64_t bytes_in;    /**< bytes fed */
    apr_uint64_t bytes_out;   /**< bytes given to the sink */
    apr_uint64_t overlong;    /**< tokens passed unchanged for their length */
} w4a_html_stats_t;

typedef struct w4a_html_t w4a_html_t;

/**
 * A rewriter for one page.  opts and the strings it points to must live as
 * long as the rewriter; buffers are freed with pool p.
 * @return APR_SUCCESS, or APR_EINVAL when media_base, hosts or extensions
 *         is missing.
 */
apr_status_t w4a_html_create(w4a_html_t **h, apr_pool_t *p,
                             const w4a_html_opts_t *opts,
                             w4a_html_out_fn *out, void *baton);

/**
 * The next bytes of the page.
 * @return APR_SUCCESS, or the sink's error.
 */
apr_status_t w4a_html_feed(w4a_html_t *h, const char *data, apr_size_t len);

/**
 * End of the page: whatever is held back goes out unchanged.
 * @return APR_SUCCESS, or the sink's error.
 */
apr_status_t w4a_html_finish(w4a_html_t *h);

/** The counters so far. */
void w4a_html_get_stats(const w4a_html_t *h, w4a_html_stats_t *st);

/**
 * The rewritten form of one URL (as found in an attribute value, entities
 * not decoded).
 * @return a string valid until the next call on h, or NULL when the URL is
 *         left alone.
 */
const char *w4a_html_rewrite_url(w4a_html_t *h, const char *url,
                                 apr_size_t len);

/**
 * Whether a charset (the Content-Type parameter, any case) is
 * ASCII-compatible, so that the tokenizer may read the page.
 * @return 1 when it is, 0 when it is not (UTF-16/32, UCS-2/4, UTF-7,
 *         ISO-2022-*, HZ, EBCDIC code pages) or is not a charset name.
 */
int w4a_html_charset_ok(const char *charset, apr_size_t len);

#ifdef __cplusplus
}
#endif
#endif /* W4A_HTML_H */
