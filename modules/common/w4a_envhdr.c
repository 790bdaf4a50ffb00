/*
 * Request headers standing for our variables: see w4a_envhdr.h.
 */
#include <string.h>

#include <apr_lib.h>
#include <apr_strings.h>

#include "w4a_envhdr.h"

typedef struct {
    const char *name;           /* as given */
    const char *key;            /* normalised (upper case), no '*' */
    apr_size_t  len;            /* of key */
    int         prefix;
} envhdr_name;

struct w4a_envhdr_set_t {
    envhdr_name    *names;
    int             n;
    unsigned char   first[32];  /* bitmap: raw first characters that
                                   normalise to a name's first */
};

/* A character as it counts: upper case, anything not a letter or digit
 * is '_'. */
static unsigned char norm(unsigned char ch)
{
    return apr_isalnum(ch) ? (unsigned char)apr_toupper(ch) : '_';
}

static apr_status_t add_name(w4a_envhdr_set_t *set, const char *name,
                             apr_pool_t *p)
{
    envhdr_name *e = &set->names[set->n];
    apr_size_t len = strlen(name), i;
    char *key;
    int ch;

    e->prefix = len > 0 && name[len - 1] == '*';
    if (e->prefix) {
        len--;
    }
    if (!len) {
        return APR_EINVAL;
    }
    key = apr_pstrmemdup(p, name, len);
    for (i = 0; i < len; i++) {
        if (!apr_isalnum(key[i]) && key[i] != '_') {
            return APR_EINVAL;
        }
        key[i] = (char)norm((unsigned char)key[i]);
    }
    e->name = name;
    e->key = key;
    e->len = len;
    for (ch = 0; ch < 256; ch++) {
        if (norm((unsigned char)ch) == (unsigned char)key[0] && ch) {
            set->first[ch >> 3] |= (unsigned char)(1 << (ch & 7));
        }
    }
    set->n++;
    return APR_SUCCESS;
}

apr_status_t w4a_envhdr_set_add(w4a_envhdr_set_t **out,
                                const w4a_envhdr_set_t *set,
                                const char *const *more, int n,
                                apr_pool_t *p)
{
    w4a_envhdr_set_t *s = apr_pcalloc(p, sizeof(*s));
    int have = set ? set->n : 0, i;
    apr_status_t rv;

    s->names = apr_pcalloc(p, sizeof(envhdr_name) * (have + n + 1));
    if (set) {
        memcpy(s->names, set->names, sizeof(envhdr_name) * have);
        memcpy(s->first, set->first, sizeof(s->first));
        s->n = have;
    }
    for (i = 0; i < n; i++) {
        if ((rv = add_name(s, more[i], p)) != APR_SUCCESS) {
            return rv;
        }
    }
    *out = s;
    return APR_SUCCESS;
}

apr_status_t w4a_envhdr_set_make(w4a_envhdr_set_t **out,
                                 const char *const *names, int n,
                                 apr_pool_t *p)
{
    return w4a_envhdr_set_add(out, NULL, names, n, p);
}

static int may_match(const w4a_envhdr_set_t *set, const char *header)
{
    unsigned char ch = (unsigned char)header[0];
    return set->first[ch >> 3] & (1 << (ch & 7));
}

const char *w4a_envhdr_match(const w4a_envhdr_set_t *set,
                             const char *header)
{
    apr_size_t hlen, i;
    int k;

    if (!header || !may_match(set, header)) {
        return NULL;
    }
    hlen = strlen(header);
    for (k = 0; k < set->n; k++) {
        const envhdr_name *e = &set->names[k];
        if (e->prefix ? hlen < e->len : hlen != e->len) {
            continue;
        }
        for (i = 0; i < e->len; i++) {
            if (norm((unsigned char)header[i]) != (unsigned char)e->key[i]) {
                break;
            }
        }
        if (i == e->len) {
            return e->name;
        }
    }
    return NULL;
}

int w4a_envhdr_strip(const w4a_envhdr_set_t *set, apr_table_t *headers,
                     w4a_envhdr_removed_fn *removed, void *baton)
{
    const apr_array_header_t *h = apr_table_elts(headers);
    int i, count = 0;

    for (i = 0; i < h->nelts; ) {
        const apr_table_entry_t *e = (const apr_table_entry_t *)h->elts + i;
        const char *name;
        int before;

        /* the first byte tells most headers apart without a call */
        if (!e->key || !may_match(set, e->key)
            || !(name = w4a_envhdr_match(set, e->key))) {
            i++;
            continue;
        }
        if (removed) {
            removed(baton, e->key, name);
        }
        /* every entry of this key goes; those before i did not match
         * (or they would be gone already), so i is the next one to look
         * at */
        before = h->nelts;
        apr_table_unset(headers, e->key);
        count += before - h->nelts;
        if (before == h->nelts) {
            i++;                    /* cannot happen; never loop */
        }
    }
    return count;
}
