/*
 * w4a_html: streaming rewriter of static asset URLs in HTML.
 *
 * One pass, no look-behind: a state machine over the bytes, resumable at
 * every byte.  Text, comments, end tags, doctypes and raw text (script,
 * textarea, title, ...) are only scanned (memchr where it can); a start
 * tag, or the inside of a CSS url(...) in a <style> block, is a
 * "construct": processed in place when it ends inside the current feed,
 * otherwise copied to the hold buffer until it ends.  A construct longer
 * than max_token is passed through unchanged, in place or held alike, so
 * that the result never depends on where the feeds were cut.
 */
#include <stdlib.h>
#include <string.h>

#include <apr_strings.h>

#include "w4a_html.h"

/* Modes of the scanner between bytes. */
typedef enum {
    M_TEXT,         /* text */
    M_LT,           /* after '<' */
    M_LT_BANG,      /* after "<!" */
    M_LT_BANG_DASH, /* after "<!-" */
    M_COMMENT,      /* inside <!-- --> */
    M_SKIPGT,       /* end tag, doctype, bogus comment: up to '>' */
    M_RAW,          /* raw text up to </name */
    M_CSS,          /* <style> content up to </style>, url( watched */
    M_HOLD,         /* a construct continues in the hold buffer */
    M_SKIPCONS,     /* an overlong construct continues, passed as is */
    M_PASS          /* the rest passes untouched (<plaintext>, UTF-16) */
} mode_e;

/* Which construct. */
typedef enum { C_TAG, C_CSSURL } cons_e;

/* States of the tag-end finder. */
enum { T_IN, T_EQ, T_DQ, T_SQ, T_UNQ };

/* Kinds of start tag. */
typedef enum {
    K_OTHER, K_LINK, K_BASE, K_HYPER, K_SCRIPT, K_STYLE, K_RAW, K_PLAINTEXT
} kind_e;

typedef struct {
    char      *d;
    apr_size_t len, cap;
    apr_size_t limit;        /* 0: none; past it sbuf_reserve refuses */
    int        over;         /* something was refused for the limit */
} sbuf;

/* A relative URL is joined to the page's directory only when that is at
 * most this long: a client's 8 KB request path must not make every
 * "a.js" of a tenant's page 8 KB long. */
#define MAX_DOC_DIR 1024

#define MAX_ATTRS 64
#define TNAME_MAX 10   /* longer than every tag name tag_kind knows */

struct w4a_html_t {
    const w4a_html_opts_t *o;
    w4a_html_out_fn *out;
    void           *baton;
    apr_size_t      max;
    apr_size_t      base_len;

    mode_e          mode;
    cons_e          cons;
    int             ts;          /* tag-end finder state */
    int             cq;          /* CSS url() quote: 0, '"', '\'' */
    kind_e          kind;        /* tag whose raw text we are in */
    const char     *raw_name;    /* "script", ... for M_RAW/M_CSS */
    apr_size_t      raw_len;
    apr_size_t      raw_match;   /* bytes of "</name" matched */
    int             css_match;   /* bytes of "url(" matched */
    int             css_prev;    /* previous byte in CSS (identifier?) */
    int             dashes;      /* trailing '-' in a comment, up to 2 */
    int             bom;         /* 0: no byte yet, 1: FE/FF seen, 2: done */
    int             bom_first;
    int             has_base;    /* a <base> tag: relative URLs left alone */
    /* the name of an overlong start tag whose name the feed cut: its kind
     * is known only when the name ends (in a later feed) */
    char            tname[TNAME_MAX];
    apr_size_t      tname_len;   /* bytes of the name so far */
    int             tname_open;  /* still inside the name */

    char           *hold;
    apr_size_t      hold_len, hold_cap;  /* grown as needed, up to max */

    sbuf            url;         /* a rewritten URL */
    sbuf            tmp;         /* relative URL joined to the page's dir */
    sbuf            val;         /* a rewritten attribute value */
    w4a_html_stats_t st;
};

/* ------------------------------------------------------------------ */
/* small helpers                                                        */

static const unsigned char lower_tab[256] = {
#define L(c) ((c) >= 'A' && (c) <= 'Z' ? (c) + 32 : (c))
#define R4(b) L(b), L(b + 1), L(b + 2), L(b + 3)
#define R16(b) R4(b), R4(b + 4), R4(b + 8), R4(b + 12)
    R16(0), R16(16), R16(32), R16(48), R16(64), R16(80), R16(96), R16(112),
    R16(128), R16(144), R16(160), R16(176), R16(192), R16(208), R16(224),
    R16(240)
#undef R16
#undef R4
#undef L
};
#define LC(c) (lower_tab[(unsigned char)(c)])

/* Byte classes, so that the hot loops test one table entry per byte. */
#define C_SP      0x01   /* HTML blank */
#define C_NAMEEND 0x02   /* ends a tag or attribute name: blank / > */
#define C_EQGT    0x04   /* '=' or '>' (tag-end finder) */
#define C_UNQEND  0x08   /* ends an unquoted value: blank > */
#define C_PATH    0x10   /* needs a look in a URL path */
static const unsigned char cls[256] = {
    /* generated from the C_* definitions above */
    0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1b, 0x1b, 0x10,
    0x1b, 0x1b, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
    0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1b, 0x00, 0x00, 0x10,
    0x00, 0x10, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x12,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x04, 0x0e, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00,
};
#define CLS(c, m) (cls[(unsigned char)(c)] & (m))

static int is_space(int c)
{
    return CLS(c, C_SP);
}

static int is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_ident(int c)
{
    return is_alpha(c) || (c >= '0' && c <= '9') || c == '-' || c == '_'
           || c >= 0x80;
}

/* s[0..n) equals the lower-case word w, ignoring case */
static int eq_word(const char *s, apr_size_t n, const char *w)
{
    apr_size_t i;
    for (i = 0; i < n; i++) {
        if (!w[i] || LC(s[i]) != (unsigned char)w[i]) {
            return 0;
        }
    }
    return w[n] == '\0';
}

static apr_status_t sbuf_reserve(sbuf *b, apr_size_t more)
{
    apr_size_t need = b->len + more + 1;
    char *d;
    if (b->limit && need > b->limit + 1) {
        b->over = 1;
        return APR_ENOSPC;
    }
    if (need <= b->cap) {
        return APR_SUCCESS;
    }
    if (need < 256) {
        need = 256;
    }
    if (need < b->cap * 2) {
        need = b->cap * 2;
    }
    d = realloc(b->d, need);
    if (!d) {
        return APR_ENOMEM;
    }
    b->d = d;
    b->cap = need;
    return APR_SUCCESS;
}

static apr_status_t sbuf_add(sbuf *b, const char *s, apr_size_t n)
{
    apr_status_t rv = sbuf_reserve(b, n);
    if (rv == APR_SUCCESS) {
        memcpy(b->d + b->len, s, n);
        b->len += n;
        b->d[b->len] = '\0';
    }
    return rv;
}

static apr_status_t free_bufs(void *data)
{
    w4a_html_t *h = data;
    free(h->url.d);
    free(h->tmp.d);
    free(h->val.d);
    free(h->hold);
    return APR_SUCCESS;
}

/* Room for need bytes in the hold buffer (need <= max). */
static apr_status_t hold_reserve(w4a_html_t *h, apr_size_t need)
{
    apr_size_t cap = h->hold_cap ? h->hold_cap : 1024;
    char *d;
    if (need <= h->hold_cap) {
        return APR_SUCCESS;
    }
    while (cap < need) {
        cap *= 2;
    }
    if (cap > h->max) {
        cap = h->max;
    }
    d = realloc(h->hold, cap);
    if (!d) {
        return APR_ENOMEM;
    }
    h->hold = d;
    h->hold_cap = cap;
    return APR_SUCCESS;
}

static apr_status_t emit(w4a_html_t *h, const char *s, apr_size_t n)
{
    if (!n) {
        return APR_SUCCESS;
    }
    h->st.bytes_out += n;
    return h->out(h->baton, s, n);
}

/* ------------------------------------------------------------------ */
/* URLs                                                                 */

static int ext_allowed(const w4a_html_t *h, const char *e, apr_size_t n)
{
    const char *const *x;
    for (x = h->o->extensions; *x; x++) {
        if (eq_word(e, n, *x)) {
            return 1;
        }
    }
    return 0;
}

static int host_same_site(const w4a_html_t *h, const char *s, apr_size_t n)
{
    const char *const *x;
    if (n && s[n - 1] == '.') {
        n--;                                    /* "example.com." */
    }
    for (x = h->o->hosts; *x; x++) {
        if (eq_word(s, n, *x)) {
            return 1;
        }
    }
    return 0;
}

/*
 * Append the root-relative path p[0..n) (starting with '/') to h->url,
 * '.' and '..' segments resolved.  0 when it climbs above the root, or
 * holds what we do not touch: encoded dots, slashes or backslashes, a
 * backslash, an entity, a blank or control byte.
 */
static int add_path(w4a_html_t *h, const char *p, apr_size_t n,
                    apr_size_t root)
{
    apr_size_t i = 0, j;
    for (j = 0; j < n; j++) {
        unsigned char c = (unsigned char)p[j];
        if (c <= 0x20 || c == 0x7f || c == '\\' || c == '&') {
            return 0;
        }
        if (c == '%' && j + 2 < n) {
            unsigned char a = (unsigned char)p[j + 1], b = LC(p[j + 2]);
            if ((a == '2' && (b == 'e' || b == 'f'))
                || (a == '5' && b == 'c')) {
                return 0;
            }
        }
    }
    while (i < n) {
        const char *seg;
        apr_size_t len;
        i++;                                    /* the '/' */
        seg = p + i;
        for (len = 0; i < n && p[i] != '/'; i++, len++) {
        }
        if (len == 1 && seg[0] == '.') {
            if (i >= n) {
                return 0;                       /* a directory */
            }
            continue;
        }
        if (len == 2 && seg[0] == '.' && seg[1] == '.') {
            char *d = h->url.d;
            if (h->url.len == root) {
                return 0;                       /* above the root */
            }
            while (h->url.len > root && d[h->url.len - 1] != '/') {
                h->url.len--;
            }
            h->url.len--;                       /* the '/' */
            if (i >= n) {
                return 0;                       /* a directory */
            }
            continue;
        }
        if (sbuf_add(&h->url, "/", 1) != APR_SUCCESS
            || sbuf_add(&h->url, seg, len) != APR_SUCCESS) {
            return 0;
        }
    }
    return 1;
}

const char *w4a_html_rewrite_url(w4a_html_t *h, const char *u, apr_size_t n)
{
    const char *path, *tail, *last, *dot, *q, *end;
    apr_size_t plen, i, root;
    int dotseg = 0;

    while (n && is_space(u[0])) {
        u++, n--;
    }
    while (n && is_space(u[n - 1])) {
        n--;
    }
    if (!n) {
        return NULL;
    }
    if (n >= 2 && u[0] == '/' && u[1] == '/') {
        path = u + 2;
    }
    else if (u[0] == '/') {
        path = NULL;                            /* root-relative */
    }
    else {
        for (i = 0; i < n && u[i] != ':' && u[i] != '/' && u[i] != '?'
             && u[i] != '#'; i++) {
        }
        if (i < n && u[i] == ':') {
            if (!((i == 4 && eq_word(u, 4, "http"))
                  || (i == 5 && eq_word(u, 5, "https")))
                || n < i + 3 || u[i + 1] != '/' || u[i + 2] != '/') {
                return NULL;                    /* another scheme */
            }
            path = u + i + 3;
        }
        else if (u[0] == '?' || u[0] == '#' || !h->o->doc_path
                 || h->has_base) {
            return NULL;
        }
        else {
            /* relative: the page's directory, then the URL */
            const char *dp = h->o->doc_path, *ls = strrchr(dp, '/');
            if (dp[0] != '/' || !ls || (apr_size_t)(ls - dp) > MAX_DOC_DIR) {
                return NULL;
            }
            h->tmp.len = 0;
            if (sbuf_add(&h->tmp, dp, ls - dp + 1) != APR_SUCCESS
                || sbuf_add(&h->tmp, u, n) != APR_SUCCESS) {
                return NULL;
            }
            u = h->tmp.d;
            n = h->tmp.len;
            path = NULL;
        }
    }
    if (path) {
        /* an authority: one of the site's own hosts, no port, no user */
        const char *hs = path, *aend = u + n;
        for (q = hs; q < aend && *q != '/' && *q != '?' && *q != '#'; q++) {
            if (*q == '@' || *q == ':' || *q == '\\') {
                return NULL;
            }
        }
        if (q == hs || !host_same_site(h, hs, q - hs) || q == aend
            || *q != '/') {
            return NULL;
        }
        n -= q - u;
        u = q;
    }

    /* u[0..n) is now a root-relative path + tail: one pass finds the end
     * of the path, its last segment's extension, dot segments, and what
     * we do not touch (see add_path) */
    end = u + n;
    last = u;
    dot = NULL;
    for (q = u; q < end; q++) {
        unsigned char c;
        while (q < end && !CLS(*q, C_PATH)) {
            q++;
        }
        if (q >= end || *q == '?' || *q == '#') {
            break;
        }
        c = (unsigned char)*q;
        if (c == '/') {
            last = q;
            dot = NULL;
            if (q + 1 < end && q[1] == '.') {
                dotseg = 1;
            }
        }
        else if (c == '.') {
            dot = q;
        }
        else if (c <= 0x20 || c == 0x7f || c == '\\' || c == '&') {
            return NULL;
        }
        else if (c == '%' && q + 2 < end
                 && ((q[1] == '2' && (LC(q[2]) == 'e' || LC(q[2]) == 'f'))
                     || (q[1] == '5' && LC(q[2]) == 'c'))) {
            return NULL;
        }
    }
    plen = q - u;
    tail = q;
    if (!dot || dot == last + 1 || !ext_allowed(h, dot + 1, tail - dot - 1)) {
        return NULL;
    }
    h->url.len = 0;
    if (sbuf_add(&h->url, h->o->media_base, h->base_len) != APR_SUCCESS) {
        return NULL;
    }
    root = h->url.len;
    if (dotseg ? !add_path(h, u, plen, root)
               : sbuf_add(&h->url, u, plen) != APR_SUCCESS) {
        return NULL;
    }
    if (h->url.len == root
        || sbuf_add(&h->url, tail, n - plen) != APR_SUCCESS) {
        return NULL;
    }
    return h->url.d;
}

/* ------------------------------------------------------------------ */
/* attribute values                                                     */

/* Append v[0..n) to h->val, its URL rewritten; 1 if it was. */
static int val_url(w4a_html_t *h, const char *v, apr_size_t n)
{
    const char *nu = w4a_html_rewrite_url(h, v, n);
    apr_size_t a = 0, b = n;
    if (!nu) {
        sbuf_add(&h->val, v, n);
        return 0;
    }
    while (a < n && is_space(v[a])) {
        a++;
    }
    while (b > a && is_space(v[b - 1])) {
        b--;
    }
    sbuf_add(&h->val, v, a);
    sbuf_add(&h->val, nu, h->url.len);
    sbuf_add(&h->val, v + b, n - b);
    h->st.urls++;
    return 1;
}

/* srcset: comma-separated candidates "URL [descriptors]". */
static int val_srcset(w4a_html_t *h, const char *v, apr_size_t n)
{
    apr_size_t i = 0, s, e;
    int changed = 0;
    while (i < n) {
        s = i;
        while (i < n && (is_space(v[i]) || v[i] == ',')) {
            i++;
        }
        sbuf_add(&h->val, v + s, i - s);
        if (i >= n) {
            break;
        }
        s = i;
        while (i < n && !is_space(v[i])) {
            i++;
        }
        e = i;
        while (e > s && v[e - 1] == ',') {
            e--;                                /* "a.png," : no descriptor */
        }
        changed |= val_url(h, v + s, e - s);
        i = e;
        s = i;
        while (i < n && v[i] != ',') {          /* descriptors */
            i++;
        }
        sbuf_add(&h->val, v + s, i - s);
    }
    return changed;
}

/* The inside of url( ... ): blanks, quotes (or their entities), the URL. */
static int css_inner(w4a_html_t *h, const char *v, apr_size_t n)
{
    static const char *const quotes[] = { "&quot;", "&#34;", "&#39;",
                                          "&apos;", "\"", "'", NULL };
    apr_size_t a = 0, b = n, ql = 0;
    const char *const *q;

    while (a < b && is_space(v[a])) {
        a++;
    }
    while (b > a && is_space(v[b - 1])) {
        b--;
    }
    for (q = quotes; *q; q++) {
        apr_size_t l = strlen(*q);
        if (b - a >= 2 * l && !strncasecmp(v + a, *q, l)
            && !strncasecmp(v + b - l, *q, l)) {
            ql = l;
            break;
        }
    }
    sbuf_add(&h->val, v, a + ql);
    {
        int changed = val_url(h, v + a + ql, b - a - 2 * ql);
        sbuf_add(&h->val, v + b - ql, n - b + ql);
        return changed;
    }
}

/* End of a CSS url( ... ) token: index of the ')', or -1 (not in s[0..n));
 * with stop_lt, a '<' (quoted or not) gives up at its index i: -2 - i, so
 * that a broken token cannot hide the </style> after it.  *q carries the
 * quote state between calls. */
#define CSS_GAVE_UP(e) ((e) <= -2)
#define CSS_GAVE_UP_AT(e) ((apr_size_t)(-(e) - 2))
static apr_ssize_t css_end(int *q, const char *s, apr_size_t n, int stop_lt)
{
    apr_size_t i;
    for (i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '<' && stop_lt) {
            return -2 - (apr_ssize_t)i;
        }
        if (*q) {
            if (c == *q) {
                *q = 0;
            }
        }
        else if (c == '"' || c == '\'') {
            *q = c;
        }
        else if (c == ')') {
            return (apr_ssize_t)i;
        }
    }
    return -1;
}

/* A style attribute: every url( ... ) in it. */
static int val_style(w4a_html_t *h, const char *v, apr_size_t n)
{
    apr_size_t i = 0, from = 0;
    int changed = 0;
    while (i + 4 <= n) {
        if (LC(v[i]) == 'u' && (i == 0 || !is_ident((unsigned char)v[i - 1]))
            && eq_word(v + i, 4, "url(")) {
            int q = 0;
            apr_ssize_t e = css_end(&q, v + i + 4, n - i - 4, 0);
            if (e < 0) {
                break;
            }
            sbuf_add(&h->val, v + from, i + 4 - from);
            changed |= css_inner(h, v + i + 4, (apr_size_t)e);
            i += 4 + (apr_size_t)e;
            from = i;
            continue;
        }
        i++;
    }
    sbuf_add(&h->val, v + from, n - from);
    return changed;
}

/* ------------------------------------------------------------------ */
/* tags                                                                 */

/* End of a start tag: index of its '>' or -1; *st carries the state. */
static apr_ssize_t tag_end(int *st, const char *s, apr_size_t n)
{
    const char *p = s, *e = s + n, *q;
    while (p < e) {
        switch (*st) {
        case T_DQ:
        case T_SQ:
            q = memchr(p, *st == T_DQ ? '"' : '\'', e - p);
            if (!q) {
                return -1;
            }
            p = q + 1;
            *st = T_IN;
            break;
        case T_EQ:
            if (is_space(*p)) {
                p++;
            }
            else if (*p == '"') {
                *st = T_DQ, p++;
            }
            else if (*p == '\'') {
                *st = T_SQ, p++;
            }
            else if (*p == '>') {
                return p - s;
            }
            else {
                *st = T_UNQ, p++;
            }
            break;
        case T_UNQ:
            for (; p < e && !CLS(*p, C_UNQEND); p++) {
            }
            if (p < e) {
                if (*p == '>') {
                    return p - s;
                }
                *st = T_IN;
                p++;
            }
            break;
        default:
            for (; p < e && !CLS(*p, C_EQGT); p++) {
            }
            if (p < e) {
                if (*p == '>') {
                    return p - s;
                }
                *st = T_EQ;
                p++;
            }
            break;
        }
    }
    return -1;
}

static kind_e tag_kind(const char *t, apr_size_t n, const char **raw)
{
    apr_size_t l;
    for (l = 0; l < n && !CLS(t[l], C_NAMEEND); l++) {
    }
    if (l == n) {
        return K_OTHER;                         /* name not complete */
    }
    *raw = NULL;
    switch (l) {
    case 1:
        return eq_word(t, 1, "a") ? K_HYPER : K_OTHER;
    case 3:
        return eq_word(t, 3, "xmp") ? (*raw = "xmp", K_RAW) : K_OTHER;
    case 4:
        if (eq_word(t, 4, "link")) {
            return K_LINK;
        }
        if (eq_word(t, 4, "base")) {
            return K_BASE;
        }
        if (eq_word(t, 4, "area") || eq_word(t, 4, "form")) {
            return K_HYPER;
        }
        return K_OTHER;
    case 5:
        if (eq_word(t, 5, "style")) {
            return *raw = "style", K_STYLE;
        }
        if (eq_word(t, 5, "title")) {
            return *raw = "title", K_RAW;
        }
        return K_OTHER;
    case 6:
        if (eq_word(t, 6, "script")) {
            return *raw = "script", K_SCRIPT;
        }
        if (eq_word(t, 6, "iframe")) {
            return *raw = "iframe", K_RAW;
        }
        return K_OTHER;
    case 7:
        return eq_word(t, 7, "noembed") ? (*raw = "noembed", K_RAW) : K_OTHER;
    case 8:
        if (eq_word(t, 8, "textarea")) {
            return *raw = "textarea", K_RAW;
        }
        if (eq_word(t, 8, "noframes")) {
            return *raw = "noframes", K_RAW;
        }
        return K_OTHER;
    case 9:
        return eq_word(t, 9, "plaintext") ? K_PLAINTEXT : K_OTHER;
    default:
        return K_OTHER;
    }
}

/* rel of a <link> that loads a static resource */
static int rel_static(const char *v, apr_size_t n)
{
    static const char *const rels[] = {
        "stylesheet", "icon", "apple-touch-icon",
        "apple-touch-icon-precomposed", "mask-icon", "preload",
        "modulepreload", "prefetch", NULL };
    apr_size_t i = 0, s;
    const char *const *r;
    while (i < n) {
        while (i < n && is_space(v[i])) {
            i++;
        }
        s = i;
        while (i < n && !is_space(v[i])) {
            i++;
        }
        for (r = rels; *r && i > s; r++) {
            if (eq_word(v + s, i - s, *r)) {
                return 1;
            }
        }
    }
    return 0;
}

typedef enum { A_NONE, A_URL, A_SRCSET, A_STYLE, A_HREF, A_REL } attr_e;

static attr_e attr_type(const char *s, apr_size_t n)
{
    switch (n) {
    case 3:
        return eq_word(s, 3, "src") ? A_URL : eq_word(s, 3, "rel") ? A_REL
                                                                   : A_NONE;
    case 4:
        return eq_word(s, 4, "href") ? A_HREF : A_NONE;
    case 5:
        return eq_word(s, 5, "style") ? A_STYLE : A_NONE;
    case 6:
        return eq_word(s, 6, "poster") ? A_URL : eq_word(s, 6, "srcset")
                                                 ? A_SRCSET : A_NONE;
    case 8:
        return eq_word(s, 8, "data-src") ? A_URL : A_NONE;
    case 11:
        return eq_word(s, 11, "data-srcset") ? A_SRCSET
               : eq_word(s, 11, "imagesrcset") ? A_SRCSET : A_NONE;
    case 13:
        return eq_word(s, 13, "data-lazy-src") ? A_URL : A_NONE;
    case 16:
        return eq_word(s, 16, "data-lazy-srcset") ? A_SRCSET : A_NONE;
    default:
        return A_NONE;
    }
}

typedef struct {
    attr_e     type;
    apr_size_t vs, ve;       /* value span in the tag */
} attr_t;

/*
 * A complete start tag t[0..n) (from its name to its '>').  When one of
 * its URLs is rewritten, pend[0..pend_len) (what precedes the tag and is
 * not emitted yet) then the rewritten tag are emitted and *done is 1;
 * otherwise nothing is emitted.  Sets h->kind / h->raw_name for after it.
 */
static apr_status_t do_tag(w4a_html_t *h, const char *t, apr_size_t n,
                           const char *pend, apr_size_t pend_len, int *done)
{
    attr_t attrs[MAX_ATTRS];
    int na = 0, i, link_static = 0, any = 0;
    apr_size_t p, cur;
    const char *raw = NULL;
    kind_e kind = tag_kind(t, n, &raw);
    apr_status_t rv;

    *done = 0;
    h->kind = kind;
    h->raw_name = raw;
    /* the rewritten tag may grow by at most max_token: a tenant's srcset
     * of thousands of short relative URLs is passed as it is, not made a
     * hundred times longer in memory */
    h->val.limit = n + h->max;
    h->val.over = 0;
    if (kind == K_BASE) {
        h->has_base = 1;
        return APR_SUCCESS;
    }
    for (p = 0; p < n && !CLS(t[p], C_NAMEEND); p++) {
    }
    while (p < n) {
        apr_size_t ns, ne;
        attr_e type;
        while (p < n && (is_space(t[p]) || t[p] == '/')) {
            p++;
        }
        if (p >= n || t[p] == '>') {
            break;
        }
        ns = p++;
        while (p < n && !CLS(t[p], C_NAMEEND) && t[p] != '=') {
            p++;
        }
        ne = p;
        while (p < n && is_space(t[p])) {
            p++;
        }
        if (p >= n || t[p] != '=') {
            continue;                           /* no value */
        }
        p++;
        while (p < n && is_space(t[p])) {
            p++;
        }
        type = attr_type(t + ns, ne - ns);
        if (p < n && (t[p] == '"' || t[p] == '\'')) {
            const char *q = memchr(t + p + 1, t[p], n - p - 1);
            apr_size_t vs = p + 1;
            p = q ? (apr_size_t)(q - t) : n;
            if (type != A_NONE && na < MAX_ATTRS) {
                attrs[na].type = type, attrs[na].vs = vs, attrs[na++].ve = p;
            }
            p++;
        }
        else {
            apr_size_t vs = p;
            while (p < n && !CLS(t[p], C_UNQEND)) {
                p++;
            }
            if (type != A_NONE && na < MAX_ATTRS) {
                attrs[na].type = type, attrs[na].vs = vs, attrs[na++].ve = p;
            }
        }
    }
    if (!na) {
        return APR_SUCCESS;
    }
    if (kind == K_LINK) {
        for (i = 0; i < na; i++) {
            if (attrs[i].type == A_REL
                && rel_static(t + attrs[i].vs, attrs[i].ve - attrs[i].vs)) {
                link_static = 1;
            }
        }
    }

    /* rewrite into h->val; attrs[i].vs/ve become offsets in h->val */
    h->val.len = 0;
    cur = 0;
    for (i = 0; i < na; i++) {
        attr_t *a = &attrs[i];
        const char *v = t + a->vs;
        apr_size_t vn = a->ve - a->vs;
        int changed = 0;
        apr_size_t before;

        if (a->type == A_REL || (a->type == A_HREF && !link_static)
            || (kind == K_HYPER && a->type != A_STYLE)) {
            continue;
        }
        sbuf_add(&h->val, t + cur, a->vs - cur);
        before = h->val.len;
        switch (a->type) {
        case A_URL:
        case A_HREF:
            changed = val_url(h, v, vn);
            break;
        case A_SRCSET:
            changed = val_srcset(h, v, vn);
            break;
        case A_STYLE:
            changed = val_style(h, v, vn);
            break;
        default:
            break;
        }
        if (!changed) {
            h->val.len = before;
            sbuf_add(&h->val, v, vn);
        }
        any |= changed;
        cur = a->ve;
    }
    if (!any) {
        return APR_SUCCESS;
    }
    sbuf_add(&h->val, t + cur, n - cur);
    if (h->val.over) {
        h->st.overlong++;
        return APR_SUCCESS;                 /* passed unchanged */
    }
    if (sbuf_reserve(&h->val, 0) != APR_SUCCESS) {
        return APR_ENOMEM;
    }
    if ((rv = emit(h, pend, pend_len)) != APR_SUCCESS) {
        return rv;
    }
    *done = 1;
    return emit(h, h->val.d, h->val.len);
}

/* The inside of a <style> url( ... ) and its ')': t[0..n), n >= 1. */
static apr_status_t do_cssurl(w4a_html_t *h, const char *t, apr_size_t n,
                              const char *pend, apr_size_t pend_len,
                              int *done)
{
    apr_status_t rv;
    *done = 0;
    h->val.len = 0;
    h->val.limit = 0;           /* one URL: bounded by MAX_DOC_DIR */
    h->val.over = 0;
    if (!css_inner(h, t, n - 1)) {
        return APR_SUCCESS;
    }
    sbuf_add(&h->val, t + n - 1, 1);
    if (sbuf_reserve(&h->val, 0) != APR_SUCCESS) {
        return APR_ENOMEM;
    }
    if ((rv = emit(h, pend, pend_len)) != APR_SUCCESS) {
        return rv;
    }
    *done = 1;
    return emit(h, h->val.d, h->val.len);
}

static apr_ssize_t cons_end(w4a_html_t *h, const char *s, apr_size_t n)
{
    return h->cons == C_TAG ? tag_end(&h->ts, s, n)
                            : css_end(&h->cq, s, n, 1);
}

/* The mode after a construct. */
static void after_cons(w4a_html_t *h)
{
    if (h->cons == C_CSSURL) {
        h->mode = M_CSS;
        h->css_prev = ')';
        return;
    }
    h->raw_match = 0;
    h->css_match = 0;
    switch (h->kind) {
    case K_SCRIPT:
    case K_RAW:
        h->mode = M_RAW;
        h->raw_len = strlen(h->raw_name);
        break;
    case K_STYLE:
        h->mode = M_CSS;
        h->raw_len = strlen(h->raw_name);
        h->css_prev = '>';
        break;
    case K_PLAINTEXT:
        h->mode = M_PASS;
        break;
    default:
        h->mode = M_TEXT;
        break;
    }
}

/* More bytes t[0..n) of an overlong tag whose name is not complete yet:
 * once it is, the tag's kind (as tag_kind gives it for the whole tag). */
static void tname_more(w4a_html_t *h, const char *t, apr_size_t n)
{
    apr_size_t i;
    for (i = 0; i < n && h->tname_open; i++) {
        if (CLS(t[i], C_NAMEEND)) {
            const char *raw = NULL;
            h->tname_open = 0;
            if (h->tname_len < TNAME_MAX) {
                h->tname[h->tname_len] = '>';
                h->kind = tag_kind(h->tname, h->tname_len + 1, &raw);
                h->raw_name = raw;
            }
            if (h->kind == K_BASE) {
                h->has_base = 1;
            }
        }
        else if (h->tname_len < TNAME_MAX) {
            h->tname[h->tname_len++] = t[i];
        }
        else {
            h->tname_len = TNAME_MAX;           /* no name we know */
        }
    }
}

/* A construct passed through for its length; t[0..n) its bytes so far. */
static void overlong_kind(w4a_html_t *h, const char *t, apr_size_t n)
{
    h->st.overlong++;
    if (h->cons == C_TAG) {
        h->kind = K_OTHER;
        h->raw_name = NULL;
        h->tname_len = 0;
        h->tname_open = 1;
        tname_more(h, t, n);
    }
}

/*
 * A construct starts at *pp (the tag-end or css state already reset).
 * Processed in place when it ends in this feed; else held (or skipped
 * when overlong).  *pass is the start of what is not emitted yet.
 */
static apr_status_t cons_start(w4a_html_t *h, const char **pp,
                               const char *end, const char **pass)
{
    const char *p = *pp;
    apr_ssize_t e = cons_end(h, p, end - p);
    apr_status_t rv;
    int done;

    if (CSS_GAVE_UP(e)) {
        *pp = p + CSS_GAVE_UP_AT(e);            /* left as it is */
        h->mode = M_CSS;
        h->css_prev = '(';
        return APR_SUCCESS;
    }
    if (e >= 0) {
        apr_size_t n = (apr_size_t)e + 1;
        if (n > h->max) {
            overlong_kind(h, p, n);
        }
        else {
            rv = h->cons == C_TAG
                 ? do_tag(h, p, n, *pass, p - *pass, &done)
                 : do_cssurl(h, p, n, *pass, p - *pass, &done);
            if (rv != APR_SUCCESS) {
                return rv;
            }
            if (done) {
                *pass = p + n;
            }
        }
        *pp = p + n;
        after_cons(h);
        return APR_SUCCESS;
    }
    if ((apr_size_t)(end - p) > h->max) {
        overlong_kind(h, p, end - p);
        h->mode = M_SKIPCONS;
        *pp = end;
        return APR_SUCCESS;
    }
    if ((rv = emit(h, *pass, p - *pass)) != APR_SUCCESS) {
        return rv;
    }
    if ((rv = hold_reserve(h, end - p)) != APR_SUCCESS) {
        return rv;
    }
    memcpy(h->hold, p, end - p);
    h->hold_len = end - p;
    h->mode = M_HOLD;
    *pp = *pass = end;
    return APR_SUCCESS;
}

/* ------------------------------------------------------------------ */

apr_status_t w4a_html_create(w4a_html_t **hp, apr_pool_t *p,
                             const w4a_html_opts_t *o,
                             w4a_html_out_fn *out, void *baton)
{
    w4a_html_t *h;
    if (!o || !o->media_base || !o->hosts || !o->extensions || !out) {
        return APR_EINVAL;
    }
    h = apr_pcalloc(p, sizeof(*h));
    h->o = o;
    h->out = out;
    h->baton = baton;
    h->max = o->max_token ? o->max_token : W4A_HTML_MAX_TOKEN_DEFAULT;
    h->base_len = strlen(o->media_base);
    h->mode = M_TEXT;
    apr_pool_cleanup_register(p, h, free_bufs, apr_pool_cleanup_null);
    *hp = h;
    return APR_SUCCESS;
}

apr_status_t w4a_html_feed(w4a_html_t *h, const char *data, apr_size_t len)
{
    const char *p = data, *end = data + len, *pass = data, *q;
    apr_status_t rv;

    h->st.bytes_in += len;
    if (h->bom < 2 && len) {
        unsigned char c0 = (unsigned char)data[0];
        if (h->bom == 0) {
            h->bom = (c0 == 0xFE || c0 == 0xFF) ? 1 : 2;
            h->bom_first = c0;
            if (h->bom == 1 && len > 1) {
                h->bom = 2;
                if ((unsigned char)data[1] == (c0 ^ 0x01)) {
                    h->mode = M_PASS;           /* UTF-16 BOM */
                }
            }
        }
        else {
            h->bom = 2;
            if (c0 == (h->bom_first ^ 0x01)) {
                h->mode = M_PASS;
            }
        }
    }

    while (p < end) {
        switch (h->mode) {
        case M_PASS:
            p = end;
            break;
        case M_TEXT:
            q = memchr(p, '<', end - p);
            if (!q) {
                p = end;
                break;
            }
            p = q + 1;
            h->mode = M_LT;
            break;
        case M_LT:
            if (is_alpha(*p)) {
                h->cons = C_TAG;
                h->ts = T_IN;
                if ((rv = cons_start(h, &p, end, &pass)) != APR_SUCCESS) {
                    return rv;
                }
            }
            else if (*p == '/' || *p == '?') {
                h->mode = M_SKIPGT;
                p++;
            }
            else if (*p == '!') {
                h->mode = M_LT_BANG;
                p++;
            }
            else {
                h->mode = M_TEXT;
            }
            break;
        case M_LT_BANG:
            if (*p == '-') {
                h->mode = M_LT_BANG_DASH;
                p++;
            }
            else {
                h->mode = M_SKIPGT;
            }
            break;
        case M_LT_BANG_DASH:
            if (*p == '-') {
                h->mode = M_COMMENT;
                /* "<!-->" and "<!--->" end at once, as in HTML */
                h->dashes = 2;
                p++;
            }
            else {
                h->mode = M_SKIPGT;
            }
            break;
        case M_COMMENT:
            q = memchr(p, '>', end - p);
            if (!q) {
                const char *t = end;
                int n = 0;
                while (t > p && n < 2 && t[-1] == '-') {
                    t--, n++;
                }
                h->dashes = t != p ? n
                            : h->dashes + n > 2 ? 2 : h->dashes + n;
                p = end;
                break;
            }
            if ((q - p >= 2 && q[-1] == '-' && q[-2] == '-')
                || (q - p == 1 && q[-1] == '-' && h->dashes >= 1)
                || (q == p && h->dashes >= 2)) {
                h->mode = M_TEXT;
            }
            h->dashes = 0;
            p = q + 1;
            break;
        case M_SKIPGT:
            q = memchr(p, '>', end - p);
            if (!q) {
                p = end;
                break;
            }
            p = q + 1;
            h->mode = M_TEXT;
            break;
        case M_RAW:
        case M_CSS:
            if (h->raw_match == 0 && h->css_match == 0 && h->mode == M_RAW) {
                q = memchr(p, '<', end - p);
                if (!q) {
                    p = end;
                    break;
                }
                p = q + 1;
                h->raw_match = 1;
                break;
            }
            {
                int c = (unsigned char)*p;
                if (h->raw_match) {
                    int need = h->raw_match == 1 ? '/'
                               : h->raw_name[h->raw_match - 2];
                    if (LC(c) == need) {
                        p++;
                        if (++h->raw_match == h->raw_len + 2) {
                            h->raw_match = 0;
                            h->mode = M_SKIPGT;
                        }
                    }
                    else {
                        h->raw_match = 0;       /* c looked at again */
                    }
                    break;
                }
                if (h->css_match) {
                    if (LC(c) == (unsigned char)"url("[h->css_match]) {
                        p++;
                        h->css_prev = c;
                        if (++h->css_match == 4) {
                            h->css_match = 0;
                            h->cons = C_CSSURL;
                            h->cq = 0;
                            if (p < end) {
                                rv = cons_start(h, &p, end, &pass);
                                if (rv != APR_SUCCESS) {
                                    return rv;
                                }
                            }
                            else {
                                /* the token starts in the next feed */
                                rv = emit(h, pass, p - pass);
                                if (rv != APR_SUCCESS) {
                                    return rv;
                                }
                                pass = p;
                                h->hold_len = 0;
                                h->mode = M_HOLD;
                            }
                        }
                    }
                    else {
                        h->css_match = 0;       /* c looked at again */
                        h->css_prev = 'r';
                    }
                    break;
                }
                if (c == '<') {
                    h->raw_match = 1;
                }
                else if (LC(c) == 'u' && !is_ident(h->css_prev)) {
                    h->css_match = 1;
                }
                h->css_prev = c;
                p++;
            }
            break;
        case M_HOLD:
            {
                apr_ssize_t e = cons_end(h, p, end - p);
                apr_size_t n = e >= 0 ? (apr_size_t)e + 1
                                      : (apr_size_t)(end - p);
                int done;
                if (CSS_GAVE_UP(e)) {
                    if ((rv = emit(h, h->hold, h->hold_len)) != APR_SUCCESS) {
                        return rv;
                    }
                    h->hold_len = 0;
                    p += CSS_GAVE_UP_AT(e);
                    h->mode = M_CSS;
                    h->css_prev = '(';
                    break;
                }
                if (h->hold_len + n > h->max) {
                    overlong_kind(h, h->hold, h->hold_len);
                    if (h->cons == C_TAG) {
                        tname_more(h, p, n);
                    }
                    if ((rv = emit(h, h->hold, h->hold_len)) != APR_SUCCESS) {
                        return rv;
                    }
                    h->hold_len = 0;
                    p += n;
                    if (e >= 0) {
                        after_cons(h);
                    }
                    else {
                        h->mode = M_SKIPCONS;
                    }
                    break;
                }
                if ((rv = hold_reserve(h, h->hold_len + n)) != APR_SUCCESS) {
                    return rv;
                }
                memcpy(h->hold + h->hold_len, p, n);
                h->hold_len += n;
                p += n;
                pass = p;
                if (e < 0) {
                    break;
                }
                rv = h->cons == C_TAG
                     ? do_tag(h, h->hold, h->hold_len, NULL, 0, &done)
                     : do_cssurl(h, h->hold, h->hold_len, NULL, 0, &done);
                if (rv == APR_SUCCESS && !done) {
                    rv = emit(h, h->hold, h->hold_len);
                }
                if (rv != APR_SUCCESS) {
                    return rv;
                }
                h->hold_len = 0;
                after_cons(h);
            }
            break;
        case M_SKIPCONS:
            {
                apr_ssize_t e = cons_end(h, p, end - p);
                if (h->cons == C_TAG && h->tname_open) {
                    tname_more(h, p, e >= 0 ? (apr_size_t)e + 1
                                            : (apr_size_t)(end - p));
                }
                if (CSS_GAVE_UP(e)) {
                    p += CSS_GAVE_UP_AT(e);
                    h->mode = M_CSS;
                    h->css_prev = '(';
                }
                else if (e < 0) {
                    p = end;
                }
                else {
                    p += e + 1;
                    after_cons(h);
                }
            }
            break;
        }
    }
    return emit(h, pass, end - pass);
}

apr_status_t w4a_html_finish(w4a_html_t *h)
{
    apr_status_t rv = APR_SUCCESS;
    if (h->mode == M_HOLD && h->hold_len) {
        rv = emit(h, h->hold, h->hold_len);
    }
    h->hold_len = 0;
    h->mode = M_PASS;
    return rv;
}

void w4a_html_get_stats(const w4a_html_t *h, w4a_html_stats_t *st)
{
    *st = h->st;
}

int w4a_html_charset_ok(const char *cs, apr_size_t n)
{
    static const char *const bad[] = {
        "utf-16", "utf16", "utf-32", "utf32", "ucs-2", "ucs2", "ucs-4",
        "ucs4", "utf-7", "utf7", "iso-2022", "csiso2022", "hz-gb", "hz",
        "unicode", "ibm037", "ibm1047", "cp037", "cp1047", "ebcdic",
        "x-ebcdic", "csunicode", NULL };
    const char *const *b;
    apr_size_t i;

    while (n && (cs[0] == '"' || cs[0] == '\'')) {
        cs++, n--;
    }
    while (n && (cs[n - 1] == '"' || cs[n - 1] == '\'')) {
        n--;
    }
    if (!n) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)cs[i];
        if (!(is_alpha(c) || (c >= '0' && c <= '9') || c == '-' || c == '_'
              || c == '.' || c == ':')) {
            return 0;
        }
    }
    for (b = bad; *b; b++) {
        apr_size_t l = strlen(*b);
        if (n >= l && !strncasecmp(cs, *b, l)) {
            return 0;
        }
    }
    return 1;
}
