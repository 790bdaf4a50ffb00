/* INI tables and line checks of mod_w4a_htcompat
 * (modules/htcompat/htcompat_table.c), on small hand-written tables. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <apr_pools.h>
#include <apr_strings.h>
#include <apr_time.h>

#include "check_w4a.h"
#include "htcompat_pool.h"
#include "htcompat_state.h"
#include "htcompat_table.h"

static apr_pool_t *pool;

static const char *write_table(const char *text)
{
    char path[] = "/tmp/w4a-check-htc-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return apr_pstrdup(pool, path);
}

static htc_table_t *load_ok(const char *text)
{
    htc_table_t *t = NULL;
    const char *err = NULL, *path = write_table(text);
    ck_assert_int_eq(htc_table_load(&t, path, &err, pool), APR_SUCCESS);
    unlink(path);
    return t;
}

static const char *load_err(const char *text)
{
    htc_table_t *t = NULL;
    const char *err = NULL, *path = write_table(text);
    ck_assert_int_ne(htc_table_load(&t, path, &err, pool), APR_SUCCESS);
    unlink(path);
    ck_assert_ptr_nonnull(err);
    return err;
}

#define TABLE \
    "# a table\n" \
    "version 8.2\n" \
    "memory_limit 7 =128M\n" \
    "allow_url_fopen 4 =1\n" \
    "upload_max_filesize 6 =2M\n" \
    "arg_separator.output 7 =%26\n" \
    "opcache.enable 7 !\n" \
    "open_basedir 7 =\n" \
    "disable_functions 4 =\n" \
    "error_prepend_string 7 =%22q%22\n"

static void setup(void)
{
    apr_pool_create(&pool, NULL);
}

static void teardown(void)
{
    apr_pool_destroy(pool);
}

START_TEST(table_loads_values_and_escapes)
{
    htc_table_t *t = load_ok(TABLE);
    const htc_setting_t *s;

    ck_assert_str_eq(t->version, "8.2");
    ck_assert_int_eq(t->count, 8);
    s = htc_table_get(t, "memory_limit");
    ck_assert_int_eq(s->access, 7);
    ck_assert_str_eq(s->defval, "128M");
    ck_assert_str_eq(htc_table_get(t, "arg_separator.output")->defval, "&");
    ck_assert_str_eq(htc_table_get(t, "open_basedir")->defval, "");
    ck_assert_ptr_null(htc_table_get(t, "opcache.enable")->defval);
    /* a start value that could not be sent safely cannot reset */
    ck_assert_ptr_null(htc_table_get(t, "error_prepend_string")->defval);
    ck_assert_ptr_null(htc_table_get(t, "nope"));
    ck_assert(htc_table_get(t, "open_basedir")->locked);
    ck_assert(htc_table_get(t, "disable_functions")->irreversible);
    s = htc_table_get(t, "upload_max_filesize");
    ck_assert_ptr_nonnull(t->by_bit[s->bit]);
}
END_TEST

START_TEST(bad_tables_are_refused_with_the_line)
{
    ck_assert_ptr_nonnull(strstr(load_err("version 8.2\nmemory_limit 9 =1\n"),
                                 ":2: expected"));
    ck_assert_ptr_nonnull(strstr(load_err("version 8.2\nmemory_limit 7 1M\n"),
                                 ":2: expected"));
    ck_assert_ptr_nonnull(strstr(load_err("version 8.2\na=b 7 =1\n"),
                                 ":2: expected"));
    ck_assert_ptr_nonnull(strstr(load_err("version 8.2\nx 7 =%zz\n"),
                                 ":2: expected"));
    ck_assert_ptr_nonnull(strstr(load_err("version 8.2\nx 7 =1\nx 7 =2\n"),
                                 ":3: x given twice"));
    ck_assert_ptr_nonnull(strstr(load_err("x 7 =1\n"), "no 'version' line"));
    ck_assert_ptr_nonnull(strstr(load_err("version 8.2\n"), "no 'version' line"));
}
END_TEST

START_TEST(values_that_could_start_another_setting_are_unsafe)
{
    ck_assert(htc_value_safe("256M"));
    ck_assert(htc_value_safe(".;open_basedir=/"));
    ck_assert(htc_value_safe("it's [fine] {too}"));
    ck_assert(!htc_value_safe("a\"b"));
    ck_assert(!htc_value_safe("a\\b"));
    ck_assert(!htc_value_safe("${HOME}"));
    ck_assert(!htc_value_safe("a\nopen_basedir=/"));
    ck_assert(!htc_value_safe("a\rb"));
    ck_assert(!htc_value_safe("a\tb"));
    ck_assert(!htc_value_safe("a\x7f"));
}
END_TEST

START_TEST(flags_read_as_mod_php_did)
{
    ck_assert_str_eq(htc_flag_value("On"), "1");
    ck_assert_str_eq(htc_flag_value("yes"), "1");
    ck_assert_str_eq(htc_flag_value("1"), "1");
    ck_assert_str_eq(htc_flag_value("TRUE"), "1");
    ck_assert_str_eq(htc_flag_value("off"), "0");
    ck_assert_str_eq(htc_flag_value("No"), "0");
    ck_assert_str_eq(htc_flag_value("0"), "0");
    ck_assert_ptr_null(htc_flag_value("maybe"));
    ck_assert_ptr_null(htc_flag_value(""));
}
END_TEST

START_TEST(each_line_gets_its_verdict)
{
    htc_table_t *t = load_ok(TABLE);
    const htc_setting_t *s = NULL;

    ck_assert_int_eq(htc_check(t, "memory_limit", "256M", 0, &s), HTC_OK);
    ck_assert_str_eq(s->name, "memory_limit");
    ck_assert_int_eq(htc_check(t, "upload_max_filesize", "9M", 0, NULL), HTC_OK);
    ck_assert_int_eq(htc_check(t, "allow_url_fopen", "0", 0, NULL), HTC_SYSTEM);
    ck_assert_int_eq(htc_check(t, "allow_url_fopen", "0", 1, NULL), HTC_OK);
    ck_assert_int_eq(htc_check(t, "open_basedir", "/", 0, NULL), HTC_LOCKED);
    ck_assert_int_eq(htc_check(t, "open_basedir", "/", 1, NULL), HTC_LOCKED);
    ck_assert_int_eq(htc_check(t, "disable_functions", "", 1, NULL),
                     HTC_IRREVERSIBLE);
    ck_assert_int_eq(htc_check(t, "extension", "x.so", 1, NULL),
                     HTC_IRREVERSIBLE);
    ck_assert_int_eq(htc_check(t, "opcache.enable", "0", 0, NULL),
                     HTC_NODEFAULT);
    ck_assert_int_eq(htc_check(t, "memory_limit", "1\"", 0, NULL), HTC_UNSAFE);
    ck_assert_int_eq(htc_check(t, "register_globals", "0", 0, NULL),
                     HTC_REMOVED);
    ck_assert_int_eq(htc_check(t, "mysql.default_host", "x", 0, NULL),
                     HTC_REMOVED);
    ck_assert_int_eq(htc_check(t, "mysqli.default_host", "x", 0, NULL),
                     HTC_UNKNOWN);
    ck_assert_int_eq(htc_check(t, "no.such", "1", 0, NULL), HTC_UNKNOWN);
    ck_assert_int_eq(htc_check(NULL, "memory_limit", "1M", 0, NULL),
                     HTC_NOTABLE);
    ck_assert_str_eq(htc_reason_name(HTC_SYSTEM), "system");
    ck_assert_str_eq(htc_reason_name(HTC_SUPHP), "suphp");
    ck_assert_str_eq(htc_reason_name(HTC_NREASONS), "?");
}
END_TEST

/* Found by t/fuzz fuzz_htcompat_table: a line of blanks only made
 * apr_strtok() go on from an unset pointer (a crash or garbage). */
START_TEST(blank_only_line_is_refused_not_read_past)
{
    ck_assert_ptr_nonnull(strstr(load_err(" "), ":1: expected"));
    ck_assert_ptr_nonnull(strstr(load_err("version 8.2\n   \nx 7 =1\n"),
                                 ":2: expected"));
}
END_TEST

START_TEST(slots_are_stable_and_in_range)
{
    ck_assert_uint_eq(htc_bit("memory_limit"), htc_bit("memory_limit"));
    ck_assert_uint_lt(htc_bit("memory_limit"), HTC_BITS);
    ck_assert_uint_lt(htc_bit(""), HTC_BITS);
}
END_TEST

START_TEST(pool_settings_parse_and_escape_round_trip)
{
    const char *v = "a b%c\x01";
    const char *text = apr_pstrcat(pool, "# c\n" HTC_POOL_MAGIC " "
                                   HTC_POOL_FORMAT "\nadmin memory_limit "
                                   "=512M\nvalue session.name =",
                                   htc_pool_escape(v, pool),
                                   "\nvalue display_errors =\n", NULL);
    htc_pool_t *ps = NULL;
    const char *err = NULL;
    const htc_pool_setting_t *s;

    ck_assert_int_eq(htc_pool_parse(&ps, text, &err, pool), APR_SUCCESS);
    s = htc_pool_get(ps, "memory_limit");
    ck_assert_ptr_nonnull(s);
    ck_assert(s->admin);
    ck_assert_str_eq(s->value, "512M");
    s = htc_pool_get(ps, "session.name");
    ck_assert(s && !s->admin);
    ck_assert_str_eq(s->value, v);
    ck_assert_str_eq(htc_pool_get(ps, "display_errors")->value, "");
    ck_assert_ptr_null(htc_pool_get(ps, "upload_max_filesize"));
    ck_assert_ptr_null(htc_pool_get(NULL, "memory_limit"));
    ck_assert_ptr_null(htc_pool_get(ps, ""));
    /* a name of the same (length, first, last byte) class as one the
     * pool sets ("axd", "bxa"): the pre-check lets it through, the hash
     * still says no */
    ck_assert_int_eq(htc_pool_parse(&ps, HTC_POOL_MAGIC " " HTC_POOL_FORMAT
                                    "\nvalue axd =1\n", &err, pool),
                     APR_SUCCESS);
    ck_assert_str_eq(htc_pool_get(ps, "axd")->value, "1");
    ck_assert_ptr_null(htc_pool_get(ps, "bxa"));
    ck_assert_ptr_null(htc_pool_get(ps, "axe"));
}
END_TEST

START_TEST(bad_pool_settings_are_refused_with_the_line)
{
    static const char *const bad[] = {
        "admin memory_limit =1\n",                      /* no magic line */
        HTC_POOL_MAGIC " 2\nadmin memory_limit =1\n",   /* other format */
        HTC_POOL_MAGIC " 1\nlocked memory_limit =1\n",
        HTC_POOL_MAGIC " 1\nadmin memory_limit 1\n",
        HTC_POOL_MAGIC " 1\nadmin memory_limit =1 x\n",
        HTC_POOL_MAGIC " 1\nadmin memory/limit =1\n",
        HTC_POOL_MAGIC " 1\nadmin memory_limit =%4\n",
        HTC_POOL_MAGIC " 1\nadmin a =1\nvalue a =2\n",
        "", NULL
    };
    int i;

    for (i = 0; bad[i]; i++) {
        htc_pool_t *ps = NULL;
        const char *err = NULL;
        ck_assert_int_eq(htc_pool_parse(&ps, bad[i], &err, pool), APR_EINVAL);
        ck_assert_ptr_nonnull(err);
    }
}
END_TEST

/* One get of @a path: whether it was looked at anew (not in the cache). */
static int cache_get_fresh(htc_pool_cache_t *c, const char *path,
                           apr_size_t *trimmed)
{
    const htc_pool_t *set = NULL;
    void *handle = NULL;
    const char *why = NULL;
    apr_time_t t0 = apr_time_now();
    int fresh = -1;

    htc_pool_cache_get(c, path, &set, &handle, &why, &fresh, trimmed, pool);
    htc_pool_cache_release(c, handle);
    while (apr_time_now() == t0) {
        /* the next get is looked at strictly later */
    }
    return fresh;
}

START_TEST(pool_cache_full_trims_the_least_recently_checked_tenth)
{
    char dir[] = "/tmp/w4a-check-htcpool-XXXXXX";
    htc_pool_cache_t *c = NULL;
    apr_size_t trimmed = 99, n = 0, max = 0;
    int i;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_int_eq(htc_pool_cache_create(&c, 10, apr_time_from_sec(3600),
                                           pool), APR_SUCCESS);
    /* absent files of a root-owned 0700 directory: kept as "none" */
    for (i = 0; i < 10; i++) {
        ck_assert_int_eq(cache_get_fresh(c, apr_psprintf(pool, "%s/p%d", dir,
                                                         i), &trimmed), 1);
        ck_assert_uint_eq(trimmed, 0);
    }
    htc_pool_cache_count(c, &n, &max);
    ck_assert_uint_eq(n, 10);
    ck_assert_uint_eq(max, 10);
    /* full: the 11th drops the 2 looked at least recently, not all */
    ck_assert_int_eq(cache_get_fresh(c, apr_psprintf(pool, "%s/p10", dir),
                                     &trimmed), 1);
    ck_assert_uint_eq(trimmed, 2);
    htc_pool_cache_count(c, &n, &max);
    ck_assert_uint_eq(n, 9);
    for (i = 2; i <= 10; i++) {         /* still there: not looked at */
        ck_assert_int_eq(cache_get_fresh(c, apr_psprintf(pool, "%s/p%d", dir,
                                                         i), &trimmed), 0);
        ck_assert_uint_eq(trimmed, 0);
    }
    /* p0 was dropped: looked at anew (one free place, no trim) */
    ck_assert_int_eq(cache_get_fresh(c, apr_psprintf(pool, "%s/p0", dir),
                                     &trimmed), 1);
    ck_assert_uint_eq(trimmed, 0);
    htc_pool_cache_count(c, &n, &max);
    ck_assert_uint_eq(n, 10);
    rmdir(dir);
}
END_TEST

static int paths_built;

static const char *count_path(void *baton, apr_pool_t *p)
{
    (void)p;
    paths_built++;
    return baton;
}

START_TEST(pool_cache_by_key_builds_the_path_only_when_it_looks_at_the_file)
{
    char dir[] = "/tmp/w4a-check-htckey-XXXXXX";
    const char *path, *why = NULL, *seen = NULL;
    htc_pool_cache_t *c = NULL;
    const htc_pool_t *set = NULL, *again = NULL;
    void *handle = NULL, *handle2 = NULL;
    int fresh = -1;
    FILE *f;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    path = apr_psprintf(pool, "%s/w4a-a.settings", dir);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(HTC_POOL_MAGIC " 1\nadmin memory_limit =64M\n", f);
    fclose(f);
    ck_assert_int_eq(htc_pool_cache_create(&c, 10, apr_time_from_sec(3600),
                                           pool), APR_SUCCESS);
    paths_built = 0;
    /* a new key: the path is built and the file read */
    ck_assert_int_eq(htc_pool_cache_get_key(c, "a\0" "8.2", 5, count_path,
                                            (void *)path, &set, &handle, &why,
                                            &seen, &fresh, NULL, pool),
                     APR_SUCCESS);
    ck_assert_int_eq(paths_built, 1);
    ck_assert_int_eq(fresh, 1);
    ck_assert_str_eq(seen, path);
    ck_assert_ptr_nonnull(set);
    /* the same key within the recheck: no path, the same settings */
    ck_assert_int_eq(htc_pool_cache_get_key(c, "a\0" "8.2", 5, count_path,
                                            (void *)path, &again, &handle2,
                                            &why, &seen, &fresh, NULL, pool),
                     APR_SUCCESS);
    ck_assert_int_eq(paths_built, 1);
    ck_assert_int_eq(fresh, 0);
    ck_assert_ptr_null(seen);
    ck_assert_ptr_eq(again, set);
    htc_pool_cache_release(c, handle2);
    /* a key that differs after the NUL is another pool's entry */
    ck_assert_int_eq(htc_pool_cache_get_key(c, "a\0" "8.3", 5, count_path,
                                            (void *)path, &again, &handle2,
                                            &why, &seen, &fresh, NULL, pool),
                     APR_SUCCESS);
    ck_assert_int_eq(paths_built, 2);
    ck_assert_int_eq(fresh, 1);
    htc_pool_cache_release(c, handle2);
    htc_pool_cache_release(c, handle);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* The path given back of a recheck that replaces the entry (a file in
 * error stays in error: a new entry each time) is the caller's own copy,
 * not the dropped entry's: W4A00420 logs it after the entry is freed, and
 * another pool's entry may take that memory. */
START_TEST(pool_cache_by_key_gives_back_a_path_that_outlives_the_entry)
{
    char dir[] = "/tmp/w4a-check-htckey2-XXXXXX";
    const char *bad, *other, *why = NULL, *seen = NULL, *seen2 = NULL;
    htc_pool_cache_t *c = NULL;
    const htc_pool_t *set = NULL;
    void *handle = NULL;
    int fresh = -1;
    char copy[256];
    int i;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    bad = apr_psprintf(pool, "%s/w4a-bad-a.settings", dir);
    other = apr_psprintf(pool, "%s/w4a-bad-bbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
                         ".settings", dir);
    for (i = 0; i < 2; i++) {           /* not a settings file: an error */
        FILE *f = fopen(i ? other : bad, "w");
        ck_assert_ptr_nonnull(f);
        fputs("not a settings file\n", f);
        fclose(f);
    }
    ck_assert_int_eq(htc_pool_cache_create(&c, 10, 0, pool), APR_SUCCESS);
    ck_assert_int_ne(htc_pool_cache_get_key(c, "a\0" "8.2", 5, count_path,
                                            (void *)bad, &set, &handle, &why,
                                            &seen, &fresh, NULL, pool),
                     APR_SUCCESS);
    /* recheck 0: looked at again, still in error, the entry replaced */
    ck_assert_int_ne(htc_pool_cache_get_key(c, "a\0" "8.2", 5, count_path,
                                            (void *)bad, &set, &handle, &why,
                                            &seen, &fresh, NULL, pool),
                     APR_SUCCESS);
    ck_assert_int_eq(fresh, 1);
    ck_assert_ptr_nonnull(seen);
    apr_cpystrn(copy, seen, sizeof(copy));
    ck_assert_str_eq(copy, bad);
    /* another pool's entries, which may reuse the dropped one's memory */
    ck_assert_int_ne(htc_pool_cache_get_key(c, "b\0" "8.3", 5, count_path,
                                            (void *)other, &set, &handle,
                                            &why, &seen2, &fresh, NULL, pool),
                     APR_SUCCESS);
    ck_assert_int_ne(htc_pool_cache_get_key(c, "c\0" "8.3", 5, count_path,
                                            (void *)other, &set, &handle,
                                            &why, &seen2, &fresh, NULL, pool),
                     APR_SUCCESS);
    ck_assert_str_eq(seen, bad);
    unlink(bad);
    unlink(other);
    rmdir(dir);
}
END_TEST

START_TEST(pool_cache_of_one_keeps_the_last_file)
{
    char dir[] = "/tmp/w4a-check-htcpool-XXXXXX";
    htc_pool_cache_t *c = NULL;
    apr_size_t trimmed = 99, n = 0, max = 0;
    const char *a, *b;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    a = apr_pstrcat(pool, dir, "/a", NULL);
    b = apr_pstrcat(pool, dir, "/b", NULL);
    ck_assert_int_eq(htc_pool_cache_create(&c, 1, apr_time_from_sec(3600),
                                           pool), APR_SUCCESS);
    ck_assert_int_eq(cache_get_fresh(c, a, &trimmed), 1);
    ck_assert_int_eq(cache_get_fresh(c, a, &trimmed), 0);
    ck_assert_int_eq(cache_get_fresh(c, b, &trimmed), 1);
    ck_assert_uint_eq(trimmed, 1);
    ck_assert_int_eq(cache_get_fresh(c, b, &trimmed), 0);
    htc_pool_cache_count(c, &n, &max);
    ck_assert_uint_eq(n, 1);
    rmdir(dir);
}
END_TEST

/* set is valid only in the words used says */
#define in_set(set, bit) in_set_used(set, used, bit)
static int in_set_used(const apr_uint32_t *set, const apr_uint32_t *used,
                       unsigned bit)
{
    return ((used[bit / 1024] >> ((bit / 32) % 32)) & 1)
           && ((set[bit / 32] >> (bit % 32)) & 1);
}

static htc_state_t *fresh_state(void)
{
    htc_state_t *st = calloc(1, sizeof(*st));
    ck_assert_ptr_nonnull(st);
    ck_assert_int_eq(htc_state_init(st, 0), 2);
    ck_assert_int_eq(htc_state_init(st, sizeof(*st)), 0);
    return st;
}

START_TEST(pool_a_values_are_reset_in_a_and_never_sent_to_b)
{
    htc_state_t *st = fresh_state();
    apr_uint32_t a = htc_pool_tag("/run/php/a.sock");
    apr_uint32_t b = htc_pool_tag("/run/php/b.sock");
    apr_uint32_t set[HTC_WORDS], used[HTC_USED_WORDS];
    unsigned bit = htc_bit("memory_limit");

    ck_assert_uint_ne(a, b);
    ck_assert_int_eq(htc_state_pool_set(st, a, set, used), 0);
    htc_state_mark(st, htc_state_pool_claim(st, a), bit);
    ck_assert_int_eq(htc_state_pool_set(st, a, set, used), 1);
    ck_assert(in_set(set, bit));
    ck_assert_int_eq(htc_state_pool_set(st, b, set, used), 0);
    ck_assert(!in_set(set, bit));
    ck_assert(in_set_used(st->bits, st->bits_used, bit));   /* node-wide */
    ck_assert_uint_eq(htc_state_pools(st), 1);
    /* the same slot again, not a second one */
    ck_assert_ptr_eq(htc_state_pool_claim(st, a), htc_state_pool_claim(st, a));
    ck_assert_uint_eq(htc_state_pools(st), 1);
    free(st);
}
END_TEST

START_TEST(track_applies_to_every_pool)
{
    htc_state_t *st = fresh_state();
    apr_uint32_t set[HTC_WORDS], used[HTC_USED_WORDS];
    unsigned bit = htc_bit("post_max_size");

    htc_state_mark_common(st, bit);
    ck_assert_int_eq(htc_state_pool_set(st, htc_pool_tag("x"), set, used), 1);
    ck_assert(in_set(set, bit));
    htc_state_mark(st, htc_state_pool_claim(st, htc_pool_tag("y")),
                   htc_bit("memory_limit"));
    ck_assert_int_eq(htc_state_pool_set(st, htc_pool_tag("y"), set, used), 1);
    ck_assert(in_set(set, bit));
    ck_assert(in_set(set, htc_bit("memory_limit")));
    free(st);
}
END_TEST

/* More pools hashing to one place than it has probes: the last gets no
 * slot, and reads the node-wide set, which holds every pool's settings. */
START_TEST(pool_without_a_slot_resets_the_node_wide_set)
{
    htc_state_t *st = fresh_state();
    apr_uint32_t set[HTC_WORDS], used[HTC_USED_WORDS];
    apr_uint32_t tag;
    unsigned i;

    for (i = 0; i < HTC_POOL_PROBES; i++) {
        tag = 7 + i * HTC_POOL_SLOTS;           /* all start at slot 7 */
        ck_assert_ptr_nonnull(htc_state_pool_claim(st, tag));
        htc_state_mark(st, htc_state_pool_claim(st, tag), 100 + i);
    }
    tag = 7 + HTC_POOL_PROBES * HTC_POOL_SLOTS;
    ck_assert_int_eq(htc_state_pool_set(st, tag, set, used), 1);
    for (i = 0; i < HTC_POOL_PROBES; i++) {
        ck_assert(in_set(set, 100 + i));
    }
    ck_assert_ptr_null(htc_state_pool_claim(st, tag));
    htc_state_mark(st, NULL, 200);
    ck_assert_uint_eq(st->pools_full, 1);
    ck_assert_int_eq(htc_state_pool_set(st, tag, set, used), 1);
    ck_assert(in_set(set, 200));
    /* the pools with a slot still get only theirs */
    ck_assert_int_eq(htc_state_pool_set(st, 7, set, used), 1);
    ck_assert(in_set(set, 100));
    ck_assert(!in_set(set, 101));
    ck_assert(!in_set(set, 200));
    /* one probe further along: a pool whose own start is free there */
    ck_assert_int_eq(htc_state_pool_set(st, 7 + HTC_POOL_PROBES, set, used), 0);
    free(st);
}
END_TEST

/* A format 1 file (node-wide set only): its set was sent to pools nobody
 * knows, so every pool keeps resetting it; its counters stay. */
START_TEST(format_1_state_upgrades_with_its_set_for_every_pool)
{
    htc_state_t *st = calloc(1, sizeof(*st));
    apr_uint32_t set[HTC_WORDS], used[HTC_USED_WORDS];
    unsigned bit = htc_bit("upload_max_filesize");

    st->magic = HTC_STATE_MAGIC;
    st->format = 1;
    st->bits[bit / 32] |= 1u << (bit % 32);
    st->counters[3] = 42;
    /* what a format 2 field would hold if the file was never extended
     * with zeros: must not survive the upgrade */
    st->slots[0].tag = 99;
    ck_assert_int_eq(htc_state_init(st, sizeof(*st)), 1);
    ck_assert_uint_eq(st->format, HTC_STATE_FORMAT);
    ck_assert_uint_eq(st->counters[3], 42);
    ck_assert_uint_eq(htc_state_pools(st), 0);
    ck_assert_int_eq(htc_state_pool_set(st, htc_pool_tag("any.sock"), set, used), 1);
    ck_assert(in_set(set, bit));
    ck_assert_int_eq(htc_state_init(st, sizeof(*st)), 0);
    /* unknown content: starts empty */
    st->magic = 1;
    st->slots[5].tag = 5;
    ck_assert_int_eq(htc_state_init(st, sizeof(*st)), 2);
    ck_assert_uint_eq(htc_state_pools(st), 0);
    ck_assert_int_eq(htc_state_pool_set(st, htc_pool_tag("any.sock"), set, used), 0);
    free(st);
}
END_TEST

Suite *htcompat_suite(void)
{
    Suite *s = suite_create("htcompat");
    TCase *tc = tcase_create("table");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, table_loads_values_and_escapes);
    tcase_add_test(tc, bad_tables_are_refused_with_the_line);
    tcase_add_test(tc, values_that_could_start_another_setting_are_unsafe);
    tcase_add_test(tc, flags_read_as_mod_php_did);
    tcase_add_test(tc, each_line_gets_its_verdict);
    tcase_add_test(tc, slots_are_stable_and_in_range);
    tcase_add_test(tc, pool_settings_parse_and_escape_round_trip);
    tcase_add_test(tc, bad_pool_settings_are_refused_with_the_line);
    tcase_add_test(tc, blank_only_line_is_refused_not_read_past);
    tcase_add_test(tc, pool_cache_full_trims_the_least_recently_checked_tenth);
    tcase_add_test(tc, pool_cache_of_one_keeps_the_last_file);
    tcase_add_test(tc, pool_cache_by_key_builds_the_path_only_when_it_looks_at_the_file);
    tcase_add_test(tc, pool_cache_by_key_gives_back_a_path_that_outlives_the_entry);
    tcase_add_test(tc, pool_a_values_are_reset_in_a_and_never_sent_to_b);
    tcase_add_test(tc, track_applies_to_every_pool);
    tcase_add_test(tc, pool_without_a_slot_resets_the_node_wide_set);
    tcase_add_test(tc, format_1_state_upgrades_with_its_set_for_every_pool);
    suite_add_tcase(s, tc);
    return s;
}
