/* The streaming HTML rewriter (w4a_html): URLs, attributes, every split. */
#include <stdlib.h>
#include <string.h>

#include <apr_pools.h>
#include <apr_strings.h>

#include "check_w4a.h"
#include "w4a_html.h"

static const char *const hosts[] = { "a.example", "www.a.example", NULL };
static const char *const exts[] = { "css", "js", "png", "jpg", "webp",
                                    "woff2", "mp4", NULL };

typedef struct {
    char      *d;
    apr_size_t len, cap;
} obuf;

static apr_status_t sink(void *baton, const char *data, apr_size_t len)
{
    obuf *o = baton;
    if (o->len + len + 1 > o->cap) {
        o->cap = (o->len + len + 1) * 2;
        o->d = realloc(o->d, o->cap);
        ck_assert_ptr_nonnull(o->d);
    }
    memcpy(o->d + o->len, data, len);
    o->len += len;
    o->d[o->len] = '\0';
    return APR_SUCCESS;
}

static w4a_html_opts_t opts(apr_size_t max_token)
{
    w4a_html_opts_t o;
    o.media_base = "//media.a.example";
    o.hosts = hosts;
    o.doc_path = "/blog/post.html";
    o.extensions = exts;
    o.max_token = max_token;
    return o;
}

/* The page fed in pieces cut at cuts[0..ncuts) (increasing offsets). */
static char *run_cuts(const char *in, apr_size_t len, const apr_size_t *cuts,
                      int ncuts, apr_size_t max_token, w4a_html_stats_t *st)
{
    apr_pool_t *p;
    w4a_html_t *h;
    obuf o = { NULL, 0, 0 };
    w4a_html_opts_t op = opts(max_token);
    apr_size_t at = 0;
    int i;

    apr_pool_create(&p, NULL);
    ck_assert_int_eq(w4a_html_create(&h, p, &op, sink, &o), APR_SUCCESS);
    for (i = 0; i <= ncuts; i++) {
        apr_size_t to = i < ncuts ? cuts[i] : len;
        ck_assert_int_eq(w4a_html_feed(h, in + at, to - at), APR_SUCCESS);
        at = to;
    }
    ck_assert_int_eq(w4a_html_finish(h), APR_SUCCESS);
    if (st) {
        w4a_html_get_stats(h, st);
    }
    apr_pool_destroy(p);
    sink(&o, "", 0);
    return o.d;
}

static char *run(const char *in)
{
    return run_cuts(in, strlen(in), NULL, 0, 0, NULL);
}

static void same(const char *in, const char *want)
{
    char *got = run(in);
    ck_assert_str_eq(got, want);
    free(got);
}

static void untouched(const char *in)
{
    same(in, in);
}

/* A page with every form, the representative page of the split tests. */
static const char page[] =
    "<!DOCTYPE html>\n"
    "<html><head><title>t <img src=\"/t.png\"></title>\n"
    "<link rel=\"stylesheet\" href=\"/css/site.css?v=3\">\n"
    "<link href=\"/feed.png\" rel=\"alternate\">\n"
    "<link rel=icon href=favicon.png>\n"
    "<link href='/late.css' rel='preload' as=style>\n"
    "<style>body{background:url(\"/img/bg.png\")} .a{background:URL( "
    "'../img/x.jpg' )} .b{background:myurl(/y.png)}</style>\n"
    "<script src=\"/js/app.js\"></script>\n"
    "<script>var s = \"<img src='/img/in-script.png'>\";</script>\n"
    "<style>.broken{b:url(\"/q.png}</style>\n"
    "</head><body>\n"
    "<!-- <img src=\"/img/comment.png\"> -->\n"
    "<img src=\"img/a.png\" srcset=\"img/a.png 1x, /img/a@2x.png 2x,"
    "https://a.example/img/a3.png 3x\" alt=\"a>b\">\n"
    "<picture><source srcset=\"/img/p.webp\" type=\"image/webp\">"
    "<source srcset=\"/img/p1.jpg 100w,/img/p2.jpg 200w\">"
    "<img src=\"http://www.a.example/img/p.jpg\"></picture>\n"
    "<img data-src=\"/lazy.jpg\" data-srcset=\"/l1.jpg 1x\" "
    "src=data:image/png;base64,AAA>\n"
    "<video poster=\"/v/poster.jpg\" src=\"/v/movie.mp4\"></video>\n"
    "<link rel=preload as=image imagesrcset=\"/i1.png 1x, /i2.png 2x\">\n"
    "<div style=\"background-image:url(&quot;/img/st.png&quot;)\"></div>\n"
    "<a href=\"/img/link.png\" style=\"background:url(/img/a-bg.png)\">l</a>\n"
    "<form action=\"/x.js\"><input src=\"/in.png\" type=image></form>\n"
    "<img src=\"//other.example/x.png\"><img src=\"https://b.example/x.png\">"
    "<img src=\"../../../x.png\"><img src=\"/a/../b/./c.png?x=1&amp;y=2#f\">\n"
    "<img src=\"/nope.php\"><img src=\"/dir/\"><img src=\"javascript:x()\">\n"
    "<textarea><img src=\"/ta.png\"></textarea>\n"
    "</body></html>\n";

static const char page_want[] =
    "<!DOCTYPE html>\n"
    "<html><head><title>t <img src=\"/t.png\"></title>\n"
    "<link rel=\"stylesheet\" href=\"//media.a.example/css/site.css?v=3\">\n"
    "<link href=\"/feed.png\" rel=\"alternate\">\n"
    "<link rel=icon href=//media.a.example/blog/favicon.png>\n"
    "<link href='//media.a.example/late.css' rel='preload' as=style>\n"
    "<style>body{background:url(\"//media.a.example/img/bg.png\")} "
    ".a{background:URL( '//media.a.example/img/x.jpg' )} "
    ".b{background:myurl(/y.png)}</style>\n"
    "<script src=\"//media.a.example/js/app.js\"></script>\n"
    "<script>var s = \"<img src='/img/in-script.png'>\";</script>\n"
    "<style>.broken{b:url(\"/q.png}</style>\n"
    "</head><body>\n"
    "<!-- <img src=\"/img/comment.png\"> -->\n"
    "<img src=\"//media.a.example/blog/img/a.png\" "
    "srcset=\"//media.a.example/blog/img/a.png 1x, "
    "//media.a.example/img/a@2x.png 2x,//media.a.example/img/a3.png 3x\" "
    "alt=\"a>b\">\n"
    "<picture><source srcset=\"//media.a.example/img/p.webp\" "
    "type=\"image/webp\">"
    "<source srcset=\"//media.a.example/img/p1.jpg 100w,"
    "//media.a.example/img/p2.jpg 200w\">"
    "<img src=\"//media.a.example/img/p.jpg\"></picture>\n"
    "<img data-src=\"//media.a.example/lazy.jpg\" "
    "data-srcset=\"//media.a.example/l1.jpg 1x\" "
    "src=data:image/png;base64,AAA>\n"
    "<video poster=\"//media.a.example/v/poster.jpg\" "
    "src=\"//media.a.example/v/movie.mp4\"></video>\n"
    "<link rel=preload as=image imagesrcset=\"//media.a.example/i1.png 1x, "
    "//media.a.example/i2.png 2x\">\n"
    "<div style=\"background-image:url(&quot;//media.a.example/img/st.png"
    "&quot;)\"></div>\n"
    "<a href=\"/img/link.png\" "
    "style=\"background:url(//media.a.example/img/a-bg.png)\">l</a>\n"
    "<form action=\"/x.js\"><input src=\"//media.a.example/in.png\" "
    "type=image></form>\n"
    "<img src=\"//other.example/x.png\"><img src=\"https://b.example/x.png\">"
    "<img src=\"../../../x.png\">"
    "<img src=\"//media.a.example/b/c.png?x=1&amp;y=2#f\">\n"
    "<img src=\"/nope.php\"><img src=\"/dir/\"><img src=\"javascript:x()\">\n"
    "<textarea><img src=\"/ta.png\"></textarea>\n"
    "</body></html>\n";

START_TEST(test_html_page_every_form)
{
    w4a_html_stats_t st;
    char *got = run_cuts(page, strlen(page), NULL, 0, 0, &st);
    ck_assert_str_eq(got, page_want);
    ck_assert_uint_eq(st.urls, 24);
    ck_assert_uint_eq(st.bytes_in, strlen(page));
    ck_assert_uint_eq(st.bytes_out, strlen(page_want));
    free(got);
}
END_TEST

START_TEST(test_html_every_split_position)
{
    apr_size_t len = strlen(page), i, j;
    for (i = 0; i <= len; i++) {
        char *got = run_cuts(page, len, &i, 1, 0, NULL);
        ck_assert_msg(!strcmp(got, page_want), "cut at %zu differs", i);
        free(got);
    }
    /* three pieces: every first cut, second cuts 1, 2 and 7 bytes later */
    for (i = 0; i < len; i++) {
        static const apr_size_t d[] = { 1, 2, 7 };
        for (j = 0; j < 3; j++) {
            apr_size_t cuts[2] = { i, i + d[j] > len ? len : i + d[j] };
            char *got = run_cuts(page, len, cuts, 2, 0, NULL);
            ck_assert_msg(!strcmp(got, page_want), "cuts at %zu, %zu differ",
                          cuts[0], cuts[1]);
            free(got);
        }
    }
}
END_TEST

START_TEST(test_html_one_byte_feeds)
{
    apr_size_t len = strlen(page), i;
    apr_size_t *cuts = malloc(sizeof(*cuts) * len);
    char *got;
    for (i = 0; i < len; i++) {
        cuts[i] = i;
    }
    got = run_cuts(page, len, cuts, (int)len, 0, NULL);
    ck_assert_str_eq(got, page_want);
    free(got);
    free(cuts);
}
END_TEST

START_TEST(test_html_url_forms)
{
    same("<img src=\"/x.png\">", "<img src=\"//media.a.example/x.png\">");
    same("<img src=\"x.png\">", "<img src=\"//media.a.example/blog/x.png\">");
    same("<img src=\"./x.png\">", "<img src=\"//media.a.example/blog/x.png\">");
    same("<img src=\"../x.png\">", "<img src=\"//media.a.example/x.png\">");
    same("<img src=\"//a.example/x.png\">",
         "<img src=\"//media.a.example/x.png\">");
    same("<img src=\"HTTPS://A.Example/x.PNG\">",
         "<img src=\"//media.a.example/x.PNG\">");
    same("<img src=\"https://a.example./x.png\">",
         "<img src=\"//media.a.example/x.png\">");
    same("<img src=\" /x.png \">", "<img src=\" //media.a.example/x.png \">");
    same("<IMG SRC=/x.png?a=1#b>", "<IMG SRC=//media.a.example/x.png?a=1#b>");
    same("<img src = '/x.png' >", "<img src = '//media.a.example/x.png' >");
    untouched("<img src=\"https://a.example:8443/x.png\">");
    untouched("<img src=\"https://user@a.example/x.png\">");
    untouched("<img src=\"//media.a.example/x.png\">");
    untouched("<img src=\"https://b.example/x.png\">");
    untouched("<img src=\"/x.php\">");
    untouched("<img src=\"/x.png.php\">");
    untouched("<img src=\"/x\">");
    untouched("<img src=\"/.png\">");
    untouched("<img src=\"/x.png/\">");
    untouched("<img src=\"/../x.png\">");
    untouched("<img src=\"/a/%2e%2e/x.png\">");
    untouched("<img src=\"/a%2fx.png\">");
    untouched("<img src=\"/a\\x.png\">");
    untouched("<img src=\"/a&#46;png\">");
    untouched("<img src=\"data:image/png;base64,AAAA\">");
    untouched("<img src=\"?x.png\">");
    untouched("<img src=\"#x.png\">");
    untouched("<img src=\"\">");
    untouched("<img src>");
    untouched("<a href=\"/x.png\">x</a>");
    untouched("<a data-src=\"/x.png\">x</a>");
    untouched("<link rel=canonical href=\"/x.css\">");
    untouched("<img alt=\"/x.png\" title='/y.png'>");
    /* <base>: relative URLs resolve against it, so they are left alone */
    same("<base href=\"/other/\"><img src=\"x.png\"><img src=\"/y.png\">",
         "<base href=\"/other/\"><img src=\"x.png\">"
         "<img src=\"//media.a.example/y.png\">");
}
END_TEST

START_TEST(test_html_script_comment_raw_text_left_alone)
{
    untouched("<script>document.write('<img src=\"/x.png\">')</script>");
    untouched("<script type=module>import x from '/x.js'</script >");
    untouched("<SCRIPT>a<b; c</scrip>d '<img src=/x.png>'</SCRIPT>");
    untouched("<!-- <img src=/x.png> --> <!----> <!-- a -- b -->");
    untouched("<textarea><img src=/x.png></textarea>");
    untouched("<noembed><img src=/x.png></noembed>");
    untouched("<plaintext><img src=/x.png>");
    same("<!--><img src=/x.png>", "<!--><img src=//media.a.example/x.png>");
    same("<script></script><img src=/x.png>",
         "<script></script><img src=//media.a.example/x.png>");
    same("<style>a{b:url(/x.png)}</style><style>@import url('/y.css');"
         "</style>",
         "<style>a{b:url(//media.a.example/x.png)}</style><style>@import "
         "url('//media.a.example/y.css');</style>");
}
END_TEST

START_TEST(test_html_malformed_passes)
{
    untouched("<<<>>> < img src=/x.png> <3 a<b");
    untouched("<img src=\"/x.png");                 /* never ends */
    untouched("<img src=\"/x.png\"");
    untouched("</img src=/x.png>");
    untouched("<?php echo '<img src=/x.png>' ?>");
    untouched("<!doctype html><![CDATA[ x ]]>");
    untouched("\xff\xfe<\0i\0m\0g\0");
    /* a broken url( in a <style> does not hide its </style> */
    same("<style>a{b:url(\"/x.png}</style><img src=/y.png>",
         "<style>a{b:url(\"/x.png}</style><img src=//media.a.example/y.png>");
    same("<style>a{b:url(/x.png}</style><style>c{d:url(/z.png)}</style>",
         "<style>a{b:url(/x.png}</style><style>c{d:url(//media.a.example/z.png)}"
         "</style>");
    same("<img src=\"/x.png\" alt='it''s' title=\"a\"b\">",
         "<img src=\"//media.a.example/x.png\" alt='it''s' title=\"a\"b\">");
    /* an unquoted value takes the '/' of "/>" */
    same("<img src=/x.png/><img src=/y.png />",
         "<img src=/x.png/><img src=//media.a.example/y.png />");
}
END_TEST

START_TEST(test_html_utf16_bom_passes_whatever_the_cut)
{
    static const char in[] = "\xfe\xff\0<\0i\0m\0g\0 \0s\0r\0c\0=\0/\0x";
    apr_size_t one = 1;
    char *got = run_cuts(in, sizeof(in) - 1, &one, 1, 0, NULL);
    ck_assert_mem_eq(got, in, sizeof(in) - 1);
    free(got);
}
END_TEST

START_TEST(test_html_multi_megabyte_attribute_passes_unchanged)
{
    apr_size_t big = 3 * 1024 * 1024, len, i;
    static const char head[] = "<p><img src=\"/a.png\" alt=\"";
    static const char tail[] = "\" src2=\"/x.png\"><img src=\"/b.png\">";
    char *in = malloc(sizeof(head) + big + sizeof(tail)), *got, *want;
    static const apr_size_t sizes[] = { 0, 1, 7, 8000, 65536, 1000000 };
    w4a_html_stats_t st;

    memcpy(in, head, sizeof(head) - 1);
    memset(in + sizeof(head) - 1, 'x', big);
    memcpy(in + sizeof(head) - 1 + big, tail, sizeof(tail));
    len = strlen(in);
    /* the long tag unchanged, the next one rewritten */
    want = malloc(len + 64);
    memcpy(want, in, len - strlen("<img src=\"/b.png\">"));
    strcpy(want + len - strlen("<img src=\"/b.png\">"),
           "<img src=\"//media.a.example/b.png\">");
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        apr_size_t step = sizes[i], n = 0, at;
        apr_size_t *cuts = NULL;
        if (step) {
            cuts = malloc(sizeof(*cuts) * (len / step + 1));
            for (at = step; at < len; at += step) {
                cuts[n++] = at;
            }
        }
        got = run_cuts(in, len, cuts, (int)n, 0, &st);
        ck_assert_msg(!strcmp(got, want), "feeds of %zu differ", step);
        ck_assert_uint_eq(st.urls, 1);
        ck_assert_uint_eq(st.overlong, 1);
        free(got);
        free(cuts);
    }
    free(in);
    free(want);
}
END_TEST

/* A page with deep directory or a srcset of thousands of short relative
 * URLs: each would be joined to the page's directory, so one 64 KB tag
 * became 87 MB in one sink call under an 8 KB request path. */
static char *run_at(const char *in, const char *doc_path,
                    w4a_html_stats_t *st)
{
    apr_pool_t *p;
    w4a_html_t *h;
    obuf o = { NULL, 0, 0 };
    w4a_html_opts_t op = opts(0);

    op.doc_path = doc_path;
    apr_pool_create(&p, NULL);
    ck_assert_int_eq(w4a_html_create(&h, p, &op, sink, &o), APR_SUCCESS);
    ck_assert_int_eq(w4a_html_feed(h, in, strlen(in)), APR_SUCCESS);
    ck_assert_int_eq(w4a_html_finish(h), APR_SUCCESS);
    w4a_html_get_stats(h, st);
    apr_pool_destroy(p);
    sink(&o, "", 0);
    return o.d;
}

START_TEST(test_html_rewriting_never_grows_a_tag_past_max_token)
{
    apr_size_t n = 10000, i, len;
    char *in = malloc(n * 6 + 64), *got, *dir, *w;
    w4a_html_stats_t st;

    strcpy(in, "<img srcset=\"");
    w = in + strlen(in);
    for (i = 0; i < n; i++, w += 6) {
        memcpy(w, "a.js ,", 6);
    }
    strcpy(w, "a.js\"><img src=\"b.js\">");
    len = strlen(in);
    /* a 1000-byte directory: the long srcset would grow by ~10 MB, so it
     * passes as it is; the next tag is rewritten */
    dir = malloc(1100);
    memset(dir, 'd', 1100);
    dir[0] = '/';
    strcpy(dir + 1000, "/p.html");
    got = run_at(in, dir, &st);
    ck_assert_uint_eq(st.overlong, 1);
    ck_assert_uint_eq(strlen(got), len + 1000 + strlen("//media.a.example/"));
    ck_assert(!strncmp(got, in, len - strlen("<img src=\"b.js\">")));
    free(got);
    /* a 2000-byte directory: relative URLs are left alone */
    free(dir);
    dir = malloc(2100);
    memset(dir, 'd', 2100);
    dir[0] = '/';
    strcpy(dir + 2000, "/p.html");
    got = run_at("<img src=\"b.js\"><img src=\"/c.js\">", dir, &st);
    ck_assert_str_eq(got, "<img src=\"b.js\"><img "
                     "src=\"//media.a.example/c.js\">");
    free(got);
    free(dir);
    free(in);
}
END_TEST

START_TEST(test_html_max_token_is_the_same_in_place_and_held)
{
    /* a tag of exactly max_token bytes (name to '>') is rewritten, one
     * byte more is not, wherever the cut */
    static const char fit[] = "x<img src=\"/a.png\" alt=\"1234567\">y";
    static const char over[] = "x<img src=\"/a.png\" alt=\"12345678\">y";
    apr_size_t max = strlen(fit) - 3, i;   /* without "x<" and "y" */
    for (i = 0; i <= strlen(fit); i++) {
        char *got = run_cuts(fit, strlen(fit), &i, 1, max, NULL);
        ck_assert_msg(strstr(got, "//media.a.example/a.png") != NULL,
                      "fit: cut at %zu not rewritten", i);
        free(got);
    }
    for (i = 0; i <= strlen(over); i++) {
        char *got = run_cuts(over, strlen(over), &i, 1, max, NULL);
        ck_assert_msg(!strcmp(got, over), "over: cut at %zu changed", i);
        free(got);
    }
}
END_TEST

START_TEST(test_html_overlong_raw_tag_cut_in_its_name)
{
    /* an overlong <script>/<style> start tag still opens raw text when a
     * feed ends inside its name: the <img> inside stays as it is, as it
     * does when the page comes whole (found by fuzz_html) */
    static const char *const pages[] = {
        "<script type=\"text/javascript\"><img src=/a.png></script>x",
        "<STYLE media=\"screen and (min-width: 1px)\"><img src=/a.png>"
        "</style>x",
        "<plaintext class=\"a-rather-long-class\"><img src=/a.png>",
        NULL };
    apr_size_t max = 20, i;
    int k;
    for (k = 0; pages[k]; k++) {
        const char *in = pages[k];
        char *whole = run_cuts(in, strlen(in), NULL, 0, max, NULL);
        ck_assert_str_eq(whole, in);
        for (i = 0; i <= strlen(in); i++) {
            apr_size_t cuts[2] = { i, i + 1 < strlen(in) ? i + 1 : i };
            char *got = run_cuts(in, strlen(in), cuts, 2, max, NULL);
            ck_assert_msg(!strcmp(got, whole), "page %d, cut at %zu: %s",
                          k, i, got);
            free(got);
        }
        free(whole);
    }
}
END_TEST

START_TEST(test_html_charsets)
{
    ck_assert_int_eq(w4a_html_charset_ok("utf-8", 5), 1);
    ck_assert_int_eq(w4a_html_charset_ok("\"UTF-8\"", 7), 1);
    ck_assert_int_eq(w4a_html_charset_ok("iso-8859-1", 10), 1);
    ck_assert_int_eq(w4a_html_charset_ok("windows-1252", 12), 1);
    ck_assert_int_eq(w4a_html_charset_ok("Shift_JIS", 9), 1);
    ck_assert_int_eq(w4a_html_charset_ok("UTF-16", 6), 0);
    ck_assert_int_eq(w4a_html_charset_ok("utf-16le", 8), 0);
    ck_assert_int_eq(w4a_html_charset_ok("UTF-32BE", 8), 0);
    ck_assert_int_eq(w4a_html_charset_ok("ISO-2022-JP", 11), 0);
    ck_assert_int_eq(w4a_html_charset_ok("utf-7", 5), 0);
    ck_assert_int_eq(w4a_html_charset_ok("", 0), 0);
    ck_assert_int_eq(w4a_html_charset_ok("a b", 3), 0);
}
END_TEST

Suite *html_suite(void)
{
    Suite *s = suite_create("html");
    TCase *tc = tcase_create("rewrite");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_html_page_every_form);
    tcase_add_test(tc, test_html_every_split_position);
    tcase_add_test(tc, test_html_one_byte_feeds);
    tcase_add_test(tc, test_html_url_forms);
    tcase_add_test(tc, test_html_script_comment_raw_text_left_alone);
    tcase_add_test(tc, test_html_malformed_passes);
    tcase_add_test(tc, test_html_utf16_bom_passes_whatever_the_cut);
    tcase_add_test(tc, test_html_multi_megabyte_attribute_passes_unchanged);
    tcase_add_test(tc, test_html_max_token_is_the_same_in_place_and_held);
    tcase_add_test(tc, test_html_overlong_raw_tag_cut_in_its_name);
    tcase_add_test(tc, test_html_charsets);
    tcase_add_test(tc, test_html_rewriting_never_grows_a_tag_past_max_token);
    suite_add_tcase(s, tc);
    return s;
}
