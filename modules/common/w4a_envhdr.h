/**
 * @file w4a_envhdr.h
 * @brief Request headers that stand for our variables (httpd-free).
 *
 * mod_setenvif looks a name up among the request headers before the
 * environment, matches its regexes against header names ("SetEnvIfNoCase
 * ^geoip.country.code$" matches a header "Geoip-Country-Code"), and CGI,
 * PHP and SSI see every header as HTTP_<NAME> with '-' as '_'.  A header
 * "stands for" one of our variables when the two names are equal compared
 * without case and with every character other than a letter or a digit
 * counted as '_' (so '-', '_', '.', '+' … are alike).  Such headers are
 * removed before any module reads them.
 */
#ifndef W4A_ENVHDR_H
#define W4A_ENVHDR_H

#include <apr_pools.h>
#include <apr_tables.h>

/** A compiled set of variable names; read-only once made (threads may
 *  share it). */
typedef struct w4a_envhdr_set_t w4a_envhdr_set_t;

/** Called for each header removed: its name, and the name of the set
 *  (as given to w4a_envhdr_set_make()) it stands for. */
typedef void w4a_envhdr_removed_fn(void *baton, const char *header,
                                   const char *name);

/**
 * Compile @a n names (letters, digits, '_'; a name ending in '*' is a
 * prefix: "GEOIP_*" stands for every name beginning with GEOIP_).
 * Duplicates are fine.
 * @return APR_SUCCESS with *out set, or APR_EINVAL (an empty name, or
 *         one with a character other than a letter, digit or '_').
 */
apr_status_t w4a_envhdr_set_make(w4a_envhdr_set_t **out,
                                 const char *const *names, int n,
                                 apr_pool_t *p);

/**
 * Add the names of @a more to @a set (a new set, @a set is unchanged).
 * @return as w4a_envhdr_set_make()
 */
apr_status_t w4a_envhdr_set_add(w4a_envhdr_set_t **out,
                                const w4a_envhdr_set_t *set,
                                const char *const *more, int n,
                                apr_pool_t *p);

/**
 * Which name of @a set the header name @a header stands for.
 * @return that name (as given), or NULL
 */
const char *w4a_envhdr_match(const w4a_envhdr_set_t *set,
                             const char *header);

/**
 * Remove from @a headers every entry whose name stands for a name of
 * @a set (every entry of that name, whatever its case).  One pass over the
 * table, a table look-up only for a header whose first character may
 * begin one of the names.
 * @param removed NULL, or called for each name removed (before removal)
 * @return how many entries were removed
 */
int w4a_envhdr_strip(const w4a_envhdr_set_t *set, apr_table_t *headers,
                     w4a_envhdr_removed_fn *removed, void *baton);

#endif /* W4A_ENVHDR_H */
