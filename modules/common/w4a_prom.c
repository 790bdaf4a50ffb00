/**
 * @file w4a_prom.c
 * @brief Writing the Prometheus text exposition format (see w4a_prom.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <apr_hash.h>
#include <apr_strings.h>

#include "w4a_prom.h"

#define BUF_SIZE 4096

struct w4a_prom_t {
    apr_pool_t        *pool;
    w4a_prom_write_fn *write;
    void              *baton;
    apr_status_t       failed;     /* the sink's first error */
    apr_hash_t        *families;   /* names declared */
    const char        *family;     /* current; NULL: none, or refused */
    apr_uint32_t       budget;     /* samples left; 0 with limited: none */
    int                limited;
    apr_uint32_t       dropped, samples;
    const char        *error;
    apr_size_t         len;
    char               buf[BUF_SIZE];
};

w4a_prom_t *w4a_prom_make(w4a_prom_write_fn *write, void *baton,
                          apr_pool_t *p)
{
    w4a_prom_t *o = apr_pcalloc(p, sizeof(*o));
    o->pool = p;
    o->write = write;
    o->baton = baton;
    o->families = apr_hash_make(p);
    return o;
}

void w4a_prom_budget(w4a_prom_t *o, apr_uint32_t n)
{
    o->limited = n > 0;
    o->budget = n;
}

static void drop(w4a_prom_t *o, const char *fmt, ...)
{
    o->dropped++;
    if (!o->error) {
        va_list ap;
        va_start(ap, fmt);
        o->error = apr_pvsprintf(o->pool, fmt, ap);
        va_end(ap);
    }
}

apr_status_t w4a_prom_flush(w4a_prom_t *o)
{
    if (o->len && !o->failed) {
        o->failed = o->write(o->baton, o->buf, o->len);
    }
    o->len = 0;
    return o->failed;
}

static void put(w4a_prom_t *o, const char *s, apr_size_t n)
{
    while (n && !o->failed) {
        apr_size_t k = BUF_SIZE - o->len;
        if (k > n) {
            k = n;
        }
        memcpy(o->buf + o->len, s, k);
        o->len += k;
        s += k;
        n -= k;
        if (o->len == BUF_SIZE) {
            w4a_prom_flush(o);
        }
    }
}

static void puts_(w4a_prom_t *o, const char *s)
{
    put(o, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at s (of at most n bytes), 0 when
 * it is not one (overlongs, surrogates and beyond U+10FFFF refused). */
static apr_size_t utf8_len(const unsigned char *s, apr_size_t n)
{
    apr_size_t k, i;
    apr_uint32_t c;

    if (s[0] < 0x80) {
        return 1;
    }
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        k = 2;
        c = s[0] & 0x1f;
    }
    else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        k = 3;
        c = s[0] & 0x0f;
    }
    else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        k = 4;
        c = s[0] & 0x07;
    }
    else {
        return 0;
    }
    if (n < k) {
        return 0;
    }
    for (i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        c = (c << 6) | (s[i] & 0x3f);
    }
    if ((k == 3 && (c < 0x800 || (c >= 0xd800 && c <= 0xdfff)))
        || (k == 4 && (c < 0x10000 || c > 0x10ffff))) {
        return 0;
    }
    return k;
}

/* Text with \\ and \n escaped (and \" in a label value). */
static void put_escaped(w4a_prom_t *o, const char *s, apr_size_t n,
                        int quote)
{
    const char *run = s, *end = s + n;

    for (; s < end; s++) {
        const char *esc = *s == '\\' ? "\\\\" : *s == '\n' ? "\\n"
                          : quote && *s == '"' ? "\\\"" : NULL;
        if (esc) {
            put(o, run, (apr_size_t)(s - run));
            put(o, esc, 2);
            run = s + 1;
        }
    }
    put(o, run, (apr_size_t)(end - run));
}

static int name_chars_ok(const char *s, apr_size_t max, int colon_ok)
{
    apr_size_t n = 0;

    if (!(*s == '_' || (*s >= 'a' && *s <= 'z'))) {
        return 0;
    }
    for (; *s; s++, n++) {
        if (!(*s == '_' || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')
              || (colon_ok && *s == ':'))) {
            return 0;
        }
    }
    return n <= max;
}

int w4a_prom_name_ok(const char *name, w4a_prom_type_e type)
{
    apr_size_t n;

    if (!name || strncmp(name, "w4a_", 4)
        || !name_chars_ok(name, W4A_PROM_NAME_MAX, 0)) {
        return 0;
    }
    n = strlen(name);
    if (type == W4A_PROM_COUNTER) {
        return n > 10 && !strcmp(name + n - 6, "_total");
    }
    return type == W4A_PROM_GAUGE
           && !(n > 6 && !strcmp(name + n - 6, "_total"));
}

apr_status_t w4a_prom_family(w4a_prom_t *o, const char *name,
                             w4a_prom_type_e type, const char *help)
{
    apr_size_t hn, i;

    o->family = NULL;
    if (!w4a_prom_name_ok(name, type)) {
        drop(o, "metric name '%s' refused (w4a_[a-z0-9_], counters end in "
             "_total, gauges do not, at most %d bytes)",
             name ? name : "(null)", W4A_PROM_NAME_MAX);
        return APR_EINVAL;
    }
    if (apr_hash_get(o->families, name, APR_HASH_KEY_STRING)) {
        drop(o, "metric %s declared twice", name);
        return APR_EEXIST;
    }
    if (apr_hash_count(o->families) >= W4A_PROM_MAX_FAMILIES) {
        drop(o, "metric %s: more than %d families", name,
             W4A_PROM_MAX_FAMILIES);
        return APR_ENOSPC;
    }
    name = apr_pstrdup(o->pool, name);
    apr_hash_set(o->families, name, APR_HASH_KEY_STRING, name);
    o->family = name;
    /* HELP: cut at W4A_PROM_HELP_MAX on a character boundary; bytes that
     * are no UTF-8 end it too. */
    help = help ? help : "";
    hn = strlen(help);
    for (i = 0; i < hn && i < W4A_PROM_HELP_MAX;) {
        apr_size_t k = utf8_len((const unsigned char *)help + i, hn - i);
        if (!k || i + k > W4A_PROM_HELP_MAX) {
            break;
        }
        i += k;
    }
    puts_(o, "# HELP ");
    puts_(o, name);
    put(o, " ", 1);
    put_escaped(o, help, i, 0);
    puts_(o, "\n# TYPE ");
    puts_(o, name);
    puts_(o, type == W4A_PROM_COUNTER ? " counter\n" : " gauge\n");
    return APR_SUCCESS;
}

/* Checks the labels of va; writes nothing. */
static apr_status_t labels_ok(w4a_prom_t *o, va_list ap)
{
    const char *names[W4A_PROM_MAX_LABELS];
    const char *k, *v;
    int n = 0, j;

    while ((k = va_arg(ap, const char *)) != NULL) {
        apr_size_t vn, i;

        v = va_arg(ap, const char *);
        if (n == W4A_PROM_MAX_LABELS) {
            drop(o, "metric %s: more than %d labels", o->family,
                 W4A_PROM_MAX_LABELS);
            return APR_EINVAL;
        }
        if (!name_chars_ok(k, W4A_PROM_LABEL_MAX, 0) || !strncmp(k, "__", 2)) {
            drop(o, "metric %s: label name '%s' refused", o->family, k);
            return APR_EINVAL;
        }
        for (j = 0; j < n; j++) {
            if (!strcmp(names[j], k)) {
                drop(o, "metric %s: label %s twice", o->family, k);
                return APR_EINVAL;
            }
        }
        names[n++] = k;
        if (!v) {
            drop(o, "metric %s: label %s without a value", o->family, k);
            return APR_EINVAL;
        }
        vn = strlen(v);
        if (vn > W4A_PROM_VALUE_MAX) {
            drop(o, "metric %s: label %s longer than %d bytes", o->family, k,
                 W4A_PROM_VALUE_MAX);
            return APR_EINVAL;
        }
        for (i = 0; i < vn;) {
            apr_size_t c = utf8_len((const unsigned char *)v + i, vn - i);
            if (!c) {
                drop(o, "metric %s: label %s is not UTF-8", o->family, k);
                return APR_EINVAL;
            }
            i += c;
        }
    }
    return APR_SUCCESS;
}

static void put_labels(w4a_prom_t *o, va_list ap)
{
    const char *k, *v;
    int n = 0;

    while ((k = va_arg(ap, const char *)) != NULL) {
        v = va_arg(ap, const char *);
        put(o, n++ ? "," : "{", 1);
        puts_(o, k);
        put(o, "=\"", 2);
        put_escaped(o, v, strlen(v), 1);
        put(o, "\"", 1);
    }
    if (n) {
        put(o, "}", 1);
    }
}

static apr_status_t sample(w4a_prom_t *o, apr_uint64_t v, apr_uint64_t scale,
                           va_list ap)
{
    char num[48];
    va_list aq;
    apr_status_t rv;
    int digits;
    apr_uint64_t s;

    if (!o->family) {
        drop(o, "a sample without its family (or of a refused one)");
        return APR_EINVAL;
    }
    for (digits = 0, s = scale; s > 1 && s % 10 == 0; s /= 10) {
        digits++;
    }
    if (scale == 0 || s != 1) {
        drop(o, "metric %s: scale %" APR_UINT64_T_FMT " is no power of ten",
             o->family, scale);
        return APR_EINVAL;
    }
    va_copy(aq, ap);
    rv = labels_ok(o, aq);
    va_end(aq);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    if (o->limited && o->budget == 0) {
        drop(o, "metric %s: over the budget of samples", o->family);
        return APR_ENOSPC;
    }
    if (o->limited) {
        o->budget--;
    }
    puts_(o, o->family);
    put_labels(o, ap);
    if (scale == 1) {
        apr_snprintf(num, sizeof(num), " %" APR_UINT64_T_FMT "\n", v);
    }
    else {
        apr_snprintf(num, sizeof(num), " %" APR_UINT64_T_FMT ".%0*"
                     APR_UINT64_T_FMT "\n", v / scale, digits, v % scale);
    }
    puts_(o, num);
    o->samples++;
    return APR_SUCCESS;
}

apr_status_t w4a_prom_u64(w4a_prom_t *o, apr_uint64_t v, ...)
{
    va_list ap;
    apr_status_t rv;

    va_start(ap, v);
    rv = sample(o, v, 1, ap);
    va_end(ap);
    return rv;
}

apr_status_t w4a_prom_scaled(w4a_prom_t *o, apr_uint64_t v,
                             apr_uint64_t scale, ...)
{
    va_list ap;
    apr_status_t rv;

    va_start(ap, scale);
    rv = sample(o, v, scale, ap);
    va_end(ap);
    return rv;
}

apr_status_t w4a_prom_one(w4a_prom_t *o, const char *name,
                          w4a_prom_type_e type, const char *help,
                          apr_uint64_t v)
{
    apr_status_t rv = w4a_prom_family(o, name, type, help);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    return w4a_prom_u64(o, v, NULL);
}

apr_uint32_t w4a_prom_dropped(const w4a_prom_t *o)
{
    return o->dropped;
}

apr_uint32_t w4a_prom_samples(const w4a_prom_t *o)
{
    return o->samples;
}

const char *w4a_prom_error(const w4a_prom_t *o)
{
    return o->error;
}
