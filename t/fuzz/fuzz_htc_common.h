/*
 * Shared by the htcompat targets: the PHP_VALUE text as
 * w4a_htcompat_php_value() in modules/htcompat/mod_w4a_htcompat.c builds
 * it, and a reader of that text as PHP-FPM's INI scanner
 * (ZEND_INI_SCANNER_NORMAL) reads it.  The text itself is the module's
 * own htc_ini_text(); the choice of what to send (tied in the module to
 * request_rec, the pool's settings and the shared state file) is modelled
 * here: every setting of a delivered slot, with this directory's value or
 * the table's start value.
 */
#ifndef W4A_FUZZ_HTC_COMMON_H
#define W4A_FUZZ_HTC_COMMON_H

#include "fuzz_common.h"
#include <apr_lib.h>
#include <apr_strings.h>
#include "htcompat_table.h"

typedef htc_send_t fz_send_t;

/* The module's choice, modelled: every setting of t in a delivered slot
 * (bits), with this directory's value (local[0, nlocal)) or the table's
 * start value; then the module's own text. */
static char *fz_build(const htc_table_t *t, const apr_uint32_t *bits,
                      const fz_send_t *local, int nlocal, fz_send_t *send,
                      int *nsend, apr_pool_t *p)
{
    apr_size_t len = 0;
    int w, i, n = 0;
    char *text;

    for (w = 0; w < HTC_BITS / 32; w++) {
        apr_uint32_t word = bits[w];
        while (word) {
            int b = __builtin_ctz(word);
            const htc_setting_t *s;
            word &= word - 1;
            for (s = t->by_bit[w * 32 + b]; s; s = s->next_bit) {
                const char *v = NULL;
                for (i = 0; i < nlocal; i++) {
                    if (local[i].s == s) {
                        v = local[i].value;
                        break;
                    }
                }
                if (!v && !(v = s->defval)) {
                    continue;
                }
                send[n].s = s;
                send[n++].value = v;
                len += strlen(s->name) + strlen(v) + 4;   /* =""\n */
            }
        }
    }
    *nsend = n;
    if (!n) {
        return NULL;
    }
    text = htc_ini_text(send, n, p);
    FUZZ_CHECK(text && strlen(text) == len, "htc_ini_text wrote %zu bytes "
               "for %zu", text ? strlen(text) : (size_t)0, (size_t)len);
    return text;
}

typedef struct {
    char *name, *value;
} fz_pair_t;

/*
 * Reads INI text the way PHP's scanner does for what matters here:
 * "name = value" statements, one per line; ';' starts a comment; a value
 * is unquoted words or "double-quoted" strings (which may span lines, and
 * where '\' escapes the next byte), concatenated.  What the builder must
 * never produce (a section, a statement without '=', "${" expansion, an
 * operator or constant, an unterminated string) is a finding: *bad says
 * what.  Returns the number of pairs read into out[0, max).
 */
static int fz_ini_read(const char *s, fz_pair_t *out, int max,
                       const char **bad, apr_pool_t *p)
{
    int n = 0;

    *bad = NULL;
    for (;;) {
        const char *ns, *ne;
        char *val = apr_palloc(p, strlen(s) + 1), *v = val;

        while (*s == '\n' || *s == '\r' || *s == ' ' || *s == '\t') {
            s++;
        }
        if (!*s) {
            return n;
        }
        if (*s == ';') {
            while (*s && *s != '\n') {
                s++;
            }
            continue;
        }
        if (*s == '[') {
            *bad = "a section";
            return n;
        }
        for (ns = s; *s && *s != '=' && *s != '\n'; s++) {
            if (strchr("\"'$~!|&^(){}[];", *s)) {
                *bad = "an operator in a name";
                return n;
            }
        }
        if (*s != '=') {
            *bad = "a statement without '='";
            return n;
        }
        for (ne = s; ne > ns && (ne[-1] == ' ' || ne[-1] == '\t'); ne--) {
            ;
        }
        s++;
        while (*s && *s != '\n') {
            if (*s == ' ' || *s == '\t' || *s == '\r') {
                s++;
            }
            else if (*s == ';') {
                while (*s && *s != '\n') {
                    s++;
                }
            }
            else if (*s == '"') {
                for (s++; *s && *s != '"'; s++) {
                    if (*s == '\\' && s[1]) {
                        *v++ = *++s;
                    }
                    else if (*s == '$' && s[1] == '{') {
                        *bad = "\"${\" expansion in a value";
                        return n;
                    }
                    else {
                        *v++ = *s;
                    }
                }
                if (!*s) {
                    *bad = "an unterminated string";
                    return n;
                }
                s++;
            }
            else if (strchr("'$~!|&^(){}[]", *s)) {
                *bad = "an operator in a value";
                return n;
            }
            else {
                /* an unquoted word: PHP would expand a constant or map
                 * On/Off; the builder quotes every value */
                *bad = "an unquoted word in a value";
                return n;
            }
        }
        *v = '\0';
        if (n == max) {
            *bad = "more statements than settings sent";
            return n;
        }
        out[n].name = apr_pstrmemdup(p, ns, (apr_size_t)(ne - ns));
        out[n++].value = val;
    }
}

/* The text must read back to exactly send[0, nsend): no setting more, none
 * less, every value as sent. */
static void fz_check_text(const char *text, const fz_send_t *send, int nsend,
                          apr_pool_t *p)
{
    fz_pair_t *got = apr_palloc(p, sizeof(*got) * (nsend + 1));
    const char *bad;
    int n, i;

    if (!text) {
        FUZZ_CHECK(nsend == 0, "no text for %d settings", nsend);
        return;
    }
    n = fz_ini_read(text, got, nsend, &bad, p);
    FUZZ_CHECK(!bad, "PHP would read %s in:\n%s", bad, text);
    FUZZ_CHECK(n == nsend, "PHP reads %d settings, %d sent:\n%s", n, nsend,
               text);
    for (i = 0; i < n; i++) {
        FUZZ_CHECK(!strcmp(got[i].name, send[i].s->name)
                   && !strcmp(got[i].value, send[i].value),
                   "setting %d reads as %s=\"%s\", sent %s=\"%s\"", i,
                   got[i].name, got[i].value, send[i].s->name,
                   send[i].value);
    }
}

#endif /* W4A_FUZZ_HTC_COMMON_H */
