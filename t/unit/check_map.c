/* The map: compile (checks), open (validation), lookup. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_strings.h>
#include <apr_tables.h>

#include "check_w4a.h"
#include "w4a_host.h"
#include "w4a_map.h"

static apr_pool_t *pool;
static char dir[64];
static char msgs[65536];

static void capture(void *baton, int level, const char *msg)
{
    apr_size_t n = strlen(msgs);

    apr_snprintf(msgs + n, sizeof(msgs) - n, "%s|%s\n",
                 level <= W4A_LOG_ERR ? "E" : "W", msg);
}

static w4a_logger_t logger = { capture, NULL };

static void setup(void)
{
    apr_pool_create(&pool, NULL);
    strcpy(dir, "/tmp/w4a-check-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    msgs[0] = '\0';
}

static void teardown(void)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
    apr_pool_destroy(pool);
}

static const char *path_of(const char *name)
{
    return apr_pstrcat(pool, dir, "/", name, NULL);
}

static void write_bytes(const char *path, const void *data, apr_size_t n)
{
    FILE *f = fopen(path, "wb");

    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

static const char *write_text(const char *name, const char *text)
{
    const char *p = path_of(name);

    write_bytes(p, text, strlen(text));
    return p;
}

static unsigned char *read_bytes(const char *path, apr_size_t *n)
{
    struct stat sb;
    unsigned char *data;
    FILE *f = fopen(path, "rb");

    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fstat(fileno(f), &sb), 0);
    *n = (apr_size_t)sb.st_size;
    data = apr_palloc(pool, *n + 1);
    ck_assert_uint_eq(fread(data, 1, *n, f), *n);
    fclose(f);
    return data;
}

/* Files of the test directory whose name holds part. */
static int files_with(const char *part)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL) {
        n += strstr(e->d_name, part) != NULL;
    }
    closedir(d);
    return n;
}

static const char *MAP =
    "# comment line\n"
    "\n"
    "example.com,www.example.com,Alias.Example.NET.  w4a100010 100010 100010 "
        "/datas/vol1/w4a100010/var/www/example.com 8.2 active log\n"
    "*.example.org\tw4a100011 100011 100011\t"
        "/datas/vol1/w4a100011/var/www/example.org/ - active "
        "media=Media.Example.org\r\n"
    "   *.b.example.org w4a100012 100012 100012 /datas/vol1/w4a100012/var/www/b"
        " 7.4 suspended  # trailing comment\n"
    "exact.b.example.org w4a100013 100013 100013 "
        "/datas/vol1/w4a100013/var/www/exact 8.3 active "
        "log=/datas/logs/w4a100013/,media=m.example.org\n"
    "home.example w4a100014 100014 100014 /datas/vol1/w4a100014/var/www "
        "8.2 active log"; /* no final newline */

static w4a_map_t *open_ok(const char *idx)
{
    w4a_map_t *m = NULL;
    const char *err = NULL;
    apr_status_t rv = w4a_map_open(&m, idx, &err, pool);

    ck_assert_msg(rv == APR_SUCCESS, "%s refused: %s", idx, err);
    ck_assert_ptr_nonnull(m);
    return m;
}

static w4a_map_t *compile_open(const char *text, const w4a_map_checks_t *k,
                               w4a_map_stats_t *st)
{
    const char *src = write_text("map.txt", text);
    const char *idx = path_of("map.index");
    w4a_map_stats_t local;
    apr_status_t rv;

    msgs[0] = '\0';
    rv = w4a_map_compile(src, idx, k, &logger, st ? st : &local, pool);
    ck_assert_msg(rv == APR_SUCCESS, "compile failed (%d):\n%s", rv, msgs);
    return open_ok(idx);
}

static int find(w4a_map_t *m, const char *host, w4a_hosting_t *r)
{
    memset(r, 0, sizeof(*r));
    return w4a_map_lookup(m, host, strlen(host), r) == APR_SUCCESS;
}

/* Normalise like mod_w4a_vhost does, then look up. */
static int find_header(w4a_map_t *m, const char *header, w4a_hosting_t *r)
{
    char host[W4A_HOST_MAX + 1];
    apr_size_t len;

    ck_assert_int_eq(w4a_host_normalise(header, host, &len), APR_SUCCESS);
    return w4a_map_lookup(m, host, len, r) == APR_SUCCESS;
}

START_TEST(test_map_round_trip)
{
    w4a_map_stats_t st;
    w4a_map_t *m = compile_open(MAP, NULL, &st);
    w4a_hosting_t r;

    ck_assert_str_eq(msgs, "");
    ck_assert_uint_eq(st.lines, 5);
    ck_assert_uint_eq(st.records, 5);
    ck_assert_uint_eq(st.names, 7);
    ck_assert_uint_eq(st.errors, 0);
    ck_assert_uint_eq(st.warnings, 0);
    ck_assert_uint_eq(w4a_map_records(m), 5);
    ck_assert_uint_eq(w4a_map_names(m), 7);
    ck_assert(w4a_map_generation(m) > 1700000000000000ull);

    /* exact name: every field */
    ck_assert(find(m, "example.com", &r));
    ck_assert_str_eq(r.domain, "example.com");
    ck_assert_str_eq(r.matched, "example.com");
    ck_assert_str_eq(r.hosting, "w4a100010");
    ck_assert_uint_eq(r.uid, 100010);
    ck_assert_uint_eq(r.gid, 100010);
    ck_assert_str_eq(r.docroot, "/datas/vol1/w4a100010/var/www/example.com");
    ck_assert_str_eq(r.php_version, "8.2");
    ck_assert_int_eq(r.state, W4A_STATE_ACTIVE);
    ck_assert_uint_eq(r.flags, W4A_FLAG_LOG);
    ck_assert_str_eq(r.log_dir, "/datas/vol1/w4a100010/log/apache2");
    ck_assert_ptr_null(r.media_host);

    /* aliases, normalised in the map (case, trailing dot) */
    ck_assert(find(m, "www.example.com", &r));
    ck_assert_str_eq(r.domain, "example.com");
    ck_assert_str_eq(r.matched, "www.example.com");
    ck_assert_str_eq(r.hosting, "w4a100010");
    ck_assert(find_header(m, "ALIAS.example.net.:8443", &r));
    ck_assert_str_eq(r.matched, "alias.example.net");
    ck_assert_str_eq(r.domain, "example.com");

    /* wildcard (tab separated, CRLF): trailing slash dropped, no PHP,
     * media host normalised */
    ck_assert(find(m, "a.example.org", &r));
    ck_assert_str_eq(r.matched, "*.example.org");
    ck_assert_str_eq(r.domain, "example.org");
    ck_assert_str_eq(r.hosting, "w4a100011");
    ck_assert_str_eq(r.docroot, "/datas/vol1/w4a100011/var/www/example.org");
    ck_assert_ptr_null(r.php_version);
    ck_assert_uint_eq(r.flags, 0);
    ck_assert_ptr_null(r.log_dir);
    ck_assert_str_eq(r.media_host, "media.example.org");

    /* longest suffix wins */
    ck_assert(find(m, "x.y.b.example.org", &r));
    ck_assert_str_eq(r.matched, "*.b.example.org");
    ck_assert_str_eq(r.hosting, "w4a100012");
    ck_assert_str_eq(r.php_version, "7.4");
    ck_assert_int_eq(r.state, W4A_STATE_SUSPENDED);
    ck_assert(find(m, "b.example.org", &r));        /* by *.example.org */
    ck_assert_str_eq(r.matched, "*.example.org");

    /* exact beats wildcard; log=DIR with its slash dropped */
    ck_assert(find(m, "exact.b.example.org", &r));
    ck_assert_str_eq(r.matched, "exact.b.example.org");
    ck_assert_str_eq(r.hosting, "w4a100013");
    ck_assert_uint_eq(r.flags, W4A_FLAG_LOG);
    ck_assert_str_eq(r.log_dir, "/datas/logs/w4a100013");
    ck_assert_str_eq(r.media_host, "m.example.org");
    ck_assert(find(m, "sub.exact.b.example.org", &r));
    ck_assert_str_eq(r.matched, "*.b.example.org");

    /* docroot = <home>/var/www: log in <home>/log/apache2 */
    ck_assert(find(m, "home.example", &r));
    ck_assert_str_eq(r.log_dir, "/datas/vol1/w4a100014/log/apache2");

    /* a wildcard does not match its bare suffix; unknowns are unknown */
    ck_assert(!find(m, "example.org", &r));
    ck_assert(!find(m, "b.example.org.x", &r));
    ck_assert(!find(m, "example.net", &r));
    ck_assert(!find(m, "org", &r));
    ck_assert(!find(m, "com", &r));
    ck_assert(!find(m, "ww.example.com", &r));
    ck_assert(!find(m, "xexample.com", &r));
    ck_assert(!find(m, "EXAMPLE.COM", &r));        /* lookup takes normalised */
    ck_assert(!find(m, "*.example.org", &r));      /* not a host */
    ck_assert(!find(m, "", &r));
    ck_assert(w4a_map_lookup(m, "example.com\0x", 13, &r) == APR_NOTFOUND);
    ck_assert(w4a_map_lookup(m, "example.comXYZ", 11, &r) == APR_SUCCESS);
    w4a_map_close(m);
}
END_TEST

static int count_records(void *baton, const w4a_hosting_t *rec)
{
    apr_array_header_t *seen = baton;

    ck_assert_ptr_null(rec->matched);
    ck_assert_ptr_nonnull(rec->hosting);
    ck_assert_ptr_nonnull(rec->docroot);
    APR_ARRAY_PUSH(seen, const char *) = rec->domain;
    return seen->nelts == 3 ? 42 : 0;
}

START_TEST(test_map_iterate_in_index_order)
{
    w4a_map_t *m = compile_open(MAP, NULL, NULL);
    apr_array_header_t *seen = apr_array_make(pool, 8, sizeof(char *));

    ck_assert_int_eq(w4a_map_iterate(m, count_records, seen), 42);
    ck_assert_int_eq(seen->nelts, 3);
    ck_assert_str_eq(APR_ARRAY_IDX(seen, 0, const char *), "example.com");
    ck_assert_str_eq(APR_ARRAY_IDX(seen, 1, const char *), "example.org");
    ck_assert_str_eq(APR_ARRAY_IDX(seen, 2, const char *), "b.example.org");
    w4a_map_close(m);
}
END_TEST

/* Compile text and expect it refused with msg among the messages, and
 * nothing written. */
static void refused_bytes(const char *text, apr_size_t len, const char *msg,
                          const w4a_map_checks_t *k)
{
    const char *src = path_of("bad.txt");
    const char *idx = path_of("bad.index");
    w4a_map_stats_t st;
    struct stat sb;

    write_bytes(src, text, len);
    msgs[0] = '\0';
    ck_assert_int_eq(w4a_map_compile(src, idx, k, &logger, &st, pool),
                     APR_EINVAL);
    ck_assert_msg(strstr(msgs, msg) != NULL, "expected '%s' in:\n%s", msg,
                  msgs);
    ck_assert_msg(strncmp(msgs, "E|", 2) == 0, "not an error: %s", msgs);
    ck_assert_int_ne(stat(idx, &sb), 0);            /* nothing written */
    ck_assert_int_eq(files_with(".tmp."), 0);
    ck_assert_uint_ge(st.errors, 1);
}

static void refused(const char *text, const char *msg,
                    const w4a_map_checks_t *k)
{
    refused_bytes(text, strlen(text), msg, k);
}

static w4a_map_checks_t *standard_checks(void)
{
    w4a_map_checks_t *k = apr_pcalloc(pool, sizeof(*k));
    apr_array_header_t *bases = apr_array_make(pool, 2, sizeof(char *));

    APR_ARRAY_PUSH(bases, const char *) = "/datas";
    APR_ARRAY_PUSH(bases, const char *) = "/home/";
    k->min_uid = 1000;
    k->bases = bases;
    return k;
}

START_TEST(test_map_check_names)
{
    w4a_map_checks_t *k = standard_checks();

    refused("a.com w 1000 1000 /datas/a 8.2 active\n"
            "b.com,A.com w 1000 1000 /datas/b 8.2 active\n",
            "bad.txt:2: duplicate name 'a.com' (first on line 1)", k);
    refused("a.com,b.com,a.com. w 1000 1000 /datas/a 8.2 active\n",
            "bad.txt:1: duplicate name 'a.com' (first on line 1)", k);
    refused("\n\n*.a.com w 1000 1000 /datas/a 8.2 active\n"
            "x.com,*.A.com w 1000 1000 /datas/b 8.2 active\n",
            "bad.txt:4: duplicate name '*.a.com' (first on line 3)", k);
    refused("a..com w 1000 1000 /datas/a 8.2 active\n",
            "bad.txt:1: 'a..com' is not a domain name or *.wildcard", k);
    refused("[::1] w 1000 1000 /datas/a 8.2 active\n",
            "'[::1]' is not a domain name or *.wildcard", k);
    refused("a.com:80 w 1000 1000 /datas/a 8.2 active\n",
            "'a.com:80' is not a domain name", k);
    refused("* w 1000 1000 /datas/a 8.2 active\n",
            "'*' is not a domain name", k);
    refused("*. w 1000 1000 /datas/a 8.2 active\n",
            "'*.' is not a domain name", k);
    refused("a.*.com w 1000 1000 /datas/a 8.2 active\n",
            "'a.*.com' is not a domain name", k);
    refused("*.*.com w 1000 1000 /datas/a 8.2 active\n",
            "'*.*.com' is not a domain name", k);
    refused("a/b w 1000 1000 /datas/a 8.2 active\n",
            "'a/b' is not a domain name", k);
    refused(",a.com w 1000 1000 /datas/a 8.2 active\n",
            "empty name in the list of names", k);
    refused("a.com w 1000 1000 /datas/a 8.2 active\n"
            "a.com\x01 w 1000 1000 /datas/a 8.2 active\n",
            "bad.txt:2: 'a.com\x01' is not a domain name", k);
#define NUL_LINE1 "a.com w 1000 1000 /datas/a\0 8.2 active\n"
#define NUL_LINE2 "a.com w 1000 1000 /datas/a 8.2 active # \0\n"
    refused_bytes(NUL_LINE1, sizeof(NUL_LINE1) - 1,
                  "bad.txt:1: NUL byte in line", k);
    refused_bytes(NUL_LINE2, sizeof(NUL_LINE2) - 1, "NUL byte in line", k);
}
END_TEST

START_TEST(test_map_check_name_lengths)
{
    w4a_map_checks_t *k = standard_checks();
    char label[300], text[700], host[310];
    w4a_map_t *m;
    w4a_hosting_t r;
    int i;

    /* "*." + 251 characters: the longest wildcard a host can match */
    for (i = 0; i < 251; i++) {
        label[i] = (i % 50 == 49) ? '.' : 'a';
    }
    label[251] = '\0';
    snprintf(text, sizeof(text), "*.%s w 1000 1000 /datas/a 8.2 active\n",
             label);
    m = compile_open(text, k, NULL);
    snprintf(host, sizeof(host), "x.%s", label);
    ck_assert_uint_eq(strlen(host), W4A_HOST_MAX);
    ck_assert(find(m, host, &r));
    w4a_map_close(m);

    label[251] = 'a';
    label[252] = '\0';
    snprintf(text, sizeof(text), "*.%s w 1000 1000 /datas/a 8.2 active\n",
             label);
    refused(text, "longer than a *.suffix", k);
    label[252] = 'a';
    label[253] = 'a';
    label[254] = '\0';
    snprintf(text, sizeof(text), "%s w 1000 1000 /datas/a 8.2 active\n",
             label);
    refused(text, "longer than 253 characters", k);
}
END_TEST

START_TEST(test_map_check_ids)
{
    w4a_map_checks_t *k = standard_checks();

    refused("a.com w x1 1000 /datas/a 8.2 active\n",
            "bad.txt:1: uid 'x1' is not a number", k);
    refused("a.com w -5 1000 /datas/a 8.2 active\n",
            "bad.txt:1: uid '-5' is not a number", k);
    refused("a.com w +5000 1000 /datas/a 8.2 active\n",
            "uid '+5000' is not a number", k);
    refused("a.com w 4294967295 1000 /datas/a 8.2 active\n",
            "uid '4294967295' is not a number", k);
    refused("a.com w 99999999999 1000 /datas/a 8.2 active\n",
            "uid '99999999999' is not a number", k);
    refused("a.com w 999 1000 /datas/a 8.2 active\n",
            "bad.txt:1: uid 999 is below the minimum 1000", k);
    refused("a.com w 0 1000 /datas/a 8.2 active\n",
            "uid 0 is below the minimum 1000", k);
    refused("a.com w 1000 0 /datas/a 8.2 active\n",
            "bad.txt:1: gid 0 is below the minimum 1000", k);
    refused("a.com w 1000 1e3 /datas/a 8.2 active\n",
            "gid '1e3' is not a number", k);
    refused("a.com w/x 1000 1000 /datas/a 8.2 active\n",
            "hosting 'w/x' is not a Unix user name", k);
    refused("a.com .. 1000 1000 /datas/a 8.2 active\n",
            "hosting '..' is not a Unix user name", k);
    refused("a.com -w 1000 1000 /datas/a 8.2 active\n",
            "hosting '-w' is not a Unix user name", k);
    refused("a.com W4A 1000 1000 /datas/a 8.2 active\n",
            "hosting 'W4A' is not a Unix user name", k);
    refused("a.com abcdefghijklmnopqrstuvwxyz0123456 1000 1000 /datas/a 8.2 "
            "active\n", "is not a Unix user name", k);
}
END_TEST

START_TEST(test_map_check_docroots)
{
    w4a_map_checks_t *k = standard_checks();
    w4a_map_t *m;
    w4a_hosting_t r;

    refused("a.com w 1000 1000 /etc 8.2 active\n",
            "bad.txt:1: document root /etc is outside the allowed bases", k);
    refused("a.com w 1000 1000 /datasX/a 8.2 active\n",
            "document root /datasX/a is outside the allowed bases", k);
    refused("a.com w 1000 1000 /datas 8.2 active\n",
            "document root /datas is outside the allowed bases", k);
    refused("a.com w 1000 1000 /datas/ 8.2 active\n",
            "document root /datas is outside the allowed bases", k);
    refused("a.com w 1000 1000 /home 8.2 active\n",
            "document root /home is outside the allowed bases", k);
    refused("a.com w 1000 1000 datas/a 8.2 active\n",
            "document root 'datas/a' is not an absolute, normalised path "
            "(relative)", k);
    refused("a.com w 1000 1000 /datas/../etc 8.2 active\n",
            "is not an absolute, normalised path ('.' or '..' component)", k);
    refused("a.com w 1000 1000 /datas/a/.. 8.2 active\n",
            "('.' or '..' component)", k);
    refused("a.com w 1000 1000 /datas/a/../ 8.2 active\n",
            "('.' or '..' component)", k);
    refused("a.com w 1000 1000 /datas/./a 8.2 active\n",
            "('.' or '..' component)", k);
    refused("a.com w 1000 1000 /datas//a 8.2 active\n",
            "(empty component)", k);
    refused("a.com w 1000 1000 /datas/a// 8.2 active\n",
            "(empty component)", k);
    refused("a.com w 1000 1000 / 8.2 active\n", "(the root directory)", k);
    refused("a.com w 1000 1000 /datas/a\x01 8.2 active\n",
            "(control, blank or non-ASCII byte)", k);
    refused("a.com w 1000 1000 /datas/caf\xc3\xa9 8.2 active\n",
            "(control, blank or non-ASCII byte)", k);

    /* "..." is a name, not a parent; a base's trailing slash is no part
     * of it; without bases any absolute path goes */
    m = compile_open("a.com w 1000 1000 /datas/.../a 8.2 active\n"
                     "b.com w 1000 1000 /home/b/var/www 8.2 active\n", k,
                     NULL);
    ck_assert(find(m, "b.com", &r));
    ck_assert_str_eq(r.docroot, "/home/b/var/www");
    w4a_map_close(m);
    m = compile_open("a.com w 1 1 /srv/a 8.2 active\n", NULL, NULL);
    ck_assert(find(m, "a.com", &r));
    ck_assert_uint_eq(r.uid, 1);
    w4a_map_close(m);
}
END_TEST

START_TEST(test_map_check_fields_state_flags)
{
    w4a_map_checks_t *k = standard_checks();

    refused("a.com w 1000 1000 /datas/a 8.2 frozen\n",
            "bad.txt:1: unknown state 'frozen' (expected active or "
            "suspended)", k);
    refused("a.com w 1000 1000 /datas/a 8.2 Active\n",
            "unknown state 'Active'", k);
    refused("a.com w 1000 1000 /datas/a 8.2 active loud\n",
            "bad.txt:1: unknown flag 'loud'", k);
    refused("a.com w 1000 1000 /datas/a 8.2 active log,loud\n",
            "unknown flag 'loud'", k);
    refused("a.com w 1000 1000 /datas/a 8.2 active -,log\n",
            "unknown flag '-'", k);
    refused("a.com w 1000 1000 /datas/a/var/www/a 8.2 active log,,media=m.a\n",
            "empty flag", k);
    refused("a.com w 1000 1000 /datas/a/var/www/a 8.2 active log,log=/x/y\n",
            "flag log given twice", k);
    refused("a.com w 1000 1000 /datas/a 8.2 active media=a.b,media=c.d\n",
            "flag media given twice", k);
    refused("a.com w 1000 1000 /datas/a 8.2 active media=*.a.com\n",
            "media host '*.a.com' is not a host name", k);
    refused("a.com w 1000 1000 /datas/a 8.2 active media=\n",
            "media host '' is not a host name", k);
    refused("a.com w 1000 1000 /datas/a 8.2 active log=var/log\n",
            "log directory 'var/log' is not an absolute, normalised path", k);
    refused("a.com w 1000 1000 /datas/a 8.2 active log=/var/../etc\n",
            "log directory '/var/../etc' is not an absolute", k);
    refused("a.com w 1000 1000 /datas/a 8.2 active log\n",
            "bad.txt:1: flag 'log' needs log=DIR", k);
    refused("a.com w 1000 1000 /var/www/a 8.2 active log\n",
            "flag 'log' needs log=DIR", NULL);
    refused("a.com w 1000 1000 /datas/a 8.2 active php_limit=0\n",
            "php_limit '0' is not a number of requests from 1 to 65535", k);
    refused("a.com w 1000 1000 /datas/a 8.2 active php_limit=65536\n",
            "php_limit '65536' is not a number", k);
    refused("a.com w 1000 1000 /datas/a 8.2 active php_limit=-3\n",
            "php_limit '-3' is not a number", k);
    refused("a.com w 1000 1000 /datas/a 8.2 active php_limit=4,php_limit=5\n",
            "flag php_limit given twice", k);
    refused("a.com w 1000 1000 /datas/a 8.2 active req_limit=0\n",
            "req_limit '0' is not a number of requests from 1 to 4095", k);
    refused("a.com w 1000 1000 /datas/a 8.2 active req_limit=4096\n",
            "req_limit '4096' is not a number", k);
    refused("a.com w 1000 1000 /datas/a 8.2 active req_limit=2,req_limit=3\n",
            "flag req_limit given twice", k);
    refused("a.com w 1000 1000 /datas/a 8;2 active\n",
            "PHP version '8;2' is not a version", k);
    refused("a.com w 1000 1000 /datas/a php8 active\n",
            "PHP version 'php8' is not a version", k);
    refused("a.com w 1000 1000 /datas/a\n",
            "bad.txt:1: expected 7 or 8 fields (names hosting uid gid docroot "
            "php state [flags]), found 5", k);
    refused("a.com w 1000 1000 /datas/a 8.2 active - extra\n",
            "found more than 8", k);
}
END_TEST

/* php_limit=N rides in the high half of the record's flags word: it comes
 * back from the index with the other flags intact, and a record without
 * it reads 0 (the node's default). */
START_TEST(test_map_php_limit_flag_round_trip)
{
    w4a_map_t *m = compile_open(
        "a.example w4a100010 100010 100010 /datas/vol1/a/var/www/a 8.2 active "
            "rewrite,php_limit=65535,media=m.a.example,req_limit=4095\n"
        "b.example w4a100011 100011 100011 /datas/vol1/b/var/www/b 8.2 active "
            "php_limit=3\n"
        "d.example w4a100013 100013 100013 /datas/vol1/d/var/www/d 8.2 active "
            "req_limit=7,log=/datas/vol1/d/log\n"
        "c.example w4a100012 100012 100012 /datas/vol1/c/var/www/c 8.2 active "
            "rewrite\n", NULL, NULL);
    w4a_hosting_t r;

    ck_assert(find(m, "a.example", &r));
    ck_assert_uint_eq(r.php_limit, 65535);
    ck_assert_uint_eq(r.flags, W4A_FLAG_REWRITE);
    ck_assert_str_eq(r.media_host, "m.a.example");
    ck_assert_uint_eq(r.req_limit, 4095);
    ck_assert(find(m, "b.example", &r));
    ck_assert_uint_eq(r.php_limit, 3);
    ck_assert_uint_eq(r.req_limit, 0);
    ck_assert_uint_eq(r.flags, 0);
    ck_assert(find(m, "c.example", &r));
    ck_assert_uint_eq(r.php_limit, 0);
    ck_assert_uint_eq(r.req_limit, 0);
    ck_assert_uint_eq(r.flags, W4A_FLAG_REWRITE);
    ck_assert(find(m, "d.example", &r));
    ck_assert_uint_eq(r.req_limit, 7);
    ck_assert_uint_eq(r.php_limit, 0);
    ck_assert_uint_eq(r.flags, W4A_FLAG_LOG);
    ck_assert_str_eq(r.log_dir, "/datas/vol1/d/log");
    w4a_map_close(m);
}
END_TEST

START_TEST(test_map_every_error_of_a_line_is_reported)
{
    w4a_map_checks_t *k = standard_checks();
    w4a_map_stats_t st;
    const char *src = write_text("many.txt",
        "a..com w/x 5 x /etc 8;2 frozen loud\n"
        "ok.com w 1000 1000 /datas/ok 8.2 active\n"
        "b.com w 5 1000 /datas/b 8.2 active\n");

    msgs[0] = '\0';
    ck_assert_int_eq(w4a_map_compile(src, NULL, k, &logger, &st, pool),
                     APR_EINVAL);
    ck_assert_uint_eq(st.lines, 3);
    ck_assert_uint_eq(st.errors, 2);                /* lines, not messages */
    ck_assert_ptr_nonnull(strstr(msgs, "many.txt:1: 'a..com'"));
    ck_assert_ptr_nonnull(strstr(msgs, "many.txt:1: hosting 'w/x'"));
    ck_assert_ptr_nonnull(strstr(msgs, "many.txt:1: uid 5 is below"));
    ck_assert_ptr_nonnull(strstr(msgs, "many.txt:1: gid 'x'"));
    ck_assert_ptr_nonnull(strstr(msgs, "many.txt:1: document root /etc"));
    ck_assert_ptr_nonnull(strstr(msgs, "many.txt:1: PHP version '8;2'"));
    ck_assert_ptr_nonnull(strstr(msgs, "many.txt:1: unknown state 'frozen'"));
    ck_assert_ptr_nonnull(strstr(msgs, "many.txt:1: unknown flag 'loud'"));
    ck_assert_ptr_nonnull(strstr(msgs, "many.txt:3: uid 5 is below"));
    ck_assert_ptr_null(strstr(msgs, "many.txt:2:"));
}
END_TEST

START_TEST(test_map_missing_dirs_warn_or_fail)
{
    w4a_map_checks_t k;
    const char *text = apr_psprintf(pool,
        "a.com w 1000 1000 %s 8.2 active\n"
        "b.com w 1000 1000 %s/nope 8.2 active\n", dir, dir);
    const char *src = write_text("dirs.txt", text);
    const char *idx = path_of("dirs.index");
    w4a_map_stats_t st;
    struct stat sb;

    memset(&k, 0, sizeof(k));
    msgs[0] = '\0';
    ck_assert_int_eq(w4a_map_compile(src, NULL, &k, &logger, &st, pool),
                     APR_SUCCESS);
    ck_assert_uint_eq(st.warnings, 0);              /* not asked to look */

    k.check_dirs = 1;
    ck_assert_int_eq(w4a_map_compile(src, idx, &k, &logger, &st, pool),
                     APR_SUCCESS);
    ck_assert_uint_eq(st.warnings, 1);
    ck_assert_uint_eq(st.errors, 0);
    ck_assert_uint_eq(st.records, 2);
    ck_assert_ptr_nonnull(strstr(msgs, "W|"));
    ck_assert_ptr_nonnull(strstr(msgs, apr_psprintf(pool,
        "dirs.txt:2: document root %s/nope is not a directory", dir)));
    ck_assert_ptr_null(strstr(msgs, "E|"));
    ck_assert_int_eq(stat(idx, &sb), 0);
    unlink(idx);

    k.strict = 1;
    msgs[0] = '\0';
    ck_assert_int_eq(w4a_map_compile(src, idx, &k, &logger, &st, pool),
                     APR_EINVAL);
    ck_assert_uint_eq(st.errors, 1);
    ck_assert_ptr_nonnull(strstr(msgs, "E|"));
    ck_assert_int_ne(stat(idx, &sb), 0);

    /* a file is not a directory either */
    text = apr_psprintf(pool, "a.com w 1000 1000 %s 8.2 active\n", src);
    write_text("dirs.txt", text);
    msgs[0] = '\0';
    ck_assert_int_eq(w4a_map_compile(src, NULL, &k, &logger, &st, pool),
                     APR_EINVAL);
    ck_assert_ptr_nonnull(strstr(msgs, "is not a directory"));
}
END_TEST

START_TEST(test_map_skip_bad)
{
    w4a_map_checks_t *k = standard_checks();
    w4a_map_stats_t st;
    w4a_map_t *m;
    w4a_hosting_t r;
    const char *text =
        "good.com w 1000 1000 /datas/g 8.2 active\n"
        "bad.com,other.com w 5 1000 /datas/b 8.2 active\n"
        "other.com w 1001 1001 /datas/o 8.2 active\n"    /* not claimed */
        "good.com w 1002 1002 /datas/d 8.2 active\n";    /* duplicate */
    const char *src = write_text("skip.txt", text);

    /* check only: errors are errors, skip_bad or not */
    k->skip_bad = 1;
    ck_assert_int_eq(w4a_map_compile(src, NULL, k, &logger, &st, pool),
                     APR_EINVAL);
    ck_assert_uint_eq(st.errors, 2);

    m = compile_open(text, k, &st);
    ck_assert_uint_eq(st.errors, 2);
    ck_assert_uint_eq(st.records, 2);
    ck_assert_uint_eq(st.names, 2);
    ck_assert_uint_eq(w4a_map_records(m), 2);
    ck_assert(find(m, "good.com", &r));
    ck_assert_uint_eq(r.uid, 1000);
    ck_assert(find(m, "other.com", &r));
    ck_assert_uint_eq(r.uid, 1001);
    ck_assert(!find(m, "bad.com", &r));
    ck_assert_ptr_nonnull(strstr(msgs, "map.txt:2: uid 5 is below"));
    ck_assert_ptr_nonnull(strstr(msgs, "map.txt:4: duplicate name "
                                       "'good.com' (first on line 1)"));
    w4a_map_close(m);

    /* nothing good left: refused rather than an empty index */
    refused("bad.com w 5 1000 /datas/b 8.2 active\n", "no line without errors",
            k);
}
END_TEST

START_TEST(test_map_refused_keeps_old_index)
{
    w4a_map_t *m = compile_open(MAP, NULL, NULL);
    const char *idx = path_of("map.index");
    const char *src = write_text("map.txt",
                                 "x.com w 1000 1000 rel 8.2 active\n");
    apr_uint64_t gen = w4a_map_generation(m);
    apr_size_t n1, n2;
    unsigned char *before = read_bytes(idx, &n1), *after;
    w4a_map_stats_t st;

    w4a_map_close(m);
    ck_assert_int_eq(w4a_map_compile(src, idx, NULL, &logger, &st, pool),
                     APR_EINVAL);
    after = read_bytes(idx, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert(memcmp(before, after, n1) == 0);
    m = open_ok(idx);
    ck_assert_uint_eq(w4a_map_generation(m), gen);
    w4a_map_close(m);
    ck_assert_int_eq(files_with(".tmp."), 0);

    /* a new compile replaces it with a later generation */
    write_text("map.txt", MAP);
    ck_assert_int_eq(w4a_map_compile(path_of("map.txt"), idx, NULL, &logger,
                                     &st, pool), APR_SUCCESS);
    m = open_ok(idx);
    ck_assert(w4a_map_generation(m) > gen);
    w4a_map_close(m);
    ck_assert_int_eq(files_with(".tmp."), 0);
}
END_TEST

START_TEST(test_map_index_is_0640_whatever_the_umask)
{
    mode_t old = umask(0);
    w4a_map_t *m = compile_open(MAP, NULL, NULL);
    struct stat sb;

    umask(old);
    w4a_map_close(m);
    ck_assert_int_eq(stat(path_of("map.index"), &sb), 0);
    ck_assert_uint_eq(sb.st_mode & 0777, 0640);
    old = umask(077);
    w4a_map_close(compile_open(MAP, NULL, NULL));
    umask(old);
    ck_assert_int_eq(stat(path_of("map.index"), &sb), 0);
    ck_assert_uint_eq(sb.st_mode & 0777, 0640);
}
END_TEST

/* The group is given before the file gets its name: never visible with
 * another group or mode. */
START_TEST(test_map_index_mode_and_group_as_asked)
{
    const char *src = write_text("map.txt", MAP);
    const char *idx = path_of("map.index");
    w4a_map_perms_t perms = { 0600, 12345 };
    w4a_map_stats_t st;
    struct stat sb;

    if (geteuid() != 0) {
        perms.gid = (long)getegid();
    }
    ck_assert_int_eq(w4a_map_compile_ex(src, idx, NULL, &perms, &logger, &st,
                                        pool), APR_SUCCESS);
    ck_assert_int_eq(stat(idx, &sb), 0);
    ck_assert_uint_eq(sb.st_mode & 07777, 0600);
    ck_assert_uint_eq(sb.st_gid, (unsigned)perms.gid);
    ck_assert_int_eq(files_with(".tmp."), 0);
}
END_TEST

/* A map opened by w4a_map_open() is the file's content at open time: the
 * file copied over in place (cp), truncated or rewritten afterwards does
 * not fault the reader (it was mapped: SIGBUS past the new end). */
START_TEST(test_map_open_survives_the_file_truncated_in_place)
{
    w4a_map_t *m = compile_open(MAP, NULL, NULL);
    w4a_hosting_t r;
    FILE *f;

    f = fopen(path_of("map.index"), "r+b");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(ftruncate(fileno(f), 0), 0);
    fclose(f);
    ck_assert(find(m, "home.example", &r));
    ck_assert_str_eq(r.hosting, "w4a100014");
    ck_assert(find(m, "exact.b.example.org", &r));
    ck_assert_str_eq(r.docroot, "/datas/vol1/w4a100013/var/www/exact");
    w4a_map_close(m);
}
END_TEST

/* UBSan (issue 14): an empty map has no records and no names: the
 * checksum saw NULL + 0 and memcpy(…, NULL, 0).  A text map of zero bytes
 * compiles to a valid index that resolves nothing. */
START_TEST(test_map_empty_text_file_compiles_to_a_valid_index)
{
    w4a_map_stats_t st;
    w4a_map_t *m = compile_open("", NULL, &st);
    w4a_hosting_t r;

    ck_assert_uint_eq(st.lines, 0);
    ck_assert_uint_eq(st.records, 0);
    ck_assert_uint_eq(w4a_map_records(m), 0);
    ck_assert_uint_eq(w4a_map_names(m), 0);
    ck_assert(!find(m, "example.com", &r));
    ck_assert_int_eq(w4a_map_iterate(m, NULL, NULL), 0);
    w4a_map_close(m);
}
END_TEST

static int files_in(const char *d, const char *part)
{
    DIR *dd = opendir(d);
    struct dirent *e;
    int n = 0;

    ck_assert_ptr_nonnull(dd);
    while ((e = readdir(dd)) != NULL) {
        n += strstr(e->d_name, part) != NULL;
    }
    closedir(dd);
    return n;
}

/* The private copy: one per version, shared by whoever opens the same
 * version through the same directory; the live file truncated in place
 * changes nothing for an open map; discard removes the copy. */
START_TEST(test_map_open_copy_one_shared_copy_immune_to_the_live_file)
{
    w4a_map_t *m, *m2;
    const char *idx = path_of("map.index");
    const char *cdir = path_of("copies");
    const char *err = NULL;
    w4a_map_fid_t id;
    w4a_hosting_t r;
    FILE *f;

    w4a_map_close(compile_open(MAP, NULL, NULL));
    ck_assert_int_eq(w4a_map_copy_dir(cdir, -1, -1, 1, &err, pool),
                     APR_SUCCESS);
    ck_assert_int_eq(w4a_map_fid_stat(&id, idx), APR_SUCCESS);
    ck_assert_msg(w4a_map_open_copy(&m, idx, &id, cdir, &err, pool)
                  == APR_SUCCESS, "%s", err);
    ck_assert_int_eq(files_in(cdir, "map-"), 1);
    ck_assert_int_eq(files_in(cdir, ".tmp"), 0);
    ck_assert_int_eq(w4a_map_open_copy(&m2, idx, &id, cdir, &err, pool),
                     APR_SUCCESS);
    ck_assert_int_eq(files_in(cdir, "map-"), 1);

    f = fopen(idx, "r+b");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(ftruncate(fileno(f), 100), 0);
    fclose(f);
    ck_assert(find(m, "home.example", &r));
    ck_assert(find(m2, "www.example.com", &r));
    ck_assert_str_eq(r.hosting, "w4a100010");

    /* not the version expected any more: try again later */
    ck_assert_int_eq(w4a_map_open_copy(&m2, idx, &id, cdir, &err, pool),
                     APR_EAGAIN);
    /* the truncated version itself: refused, and its bad copy removed */
    ck_assert_int_eq(w4a_map_fid_stat(&id, idx), APR_SUCCESS);
    ck_assert_int_ne(w4a_map_open_copy(&m2, idx, &id, cdir, &err, pool),
                     APR_SUCCESS);
    ck_assert_ptr_nonnull(strstr(err, "header"));
    ck_assert_int_eq(files_in(cdir, "map-"), 1);

    w4a_map_discard(m);
    ck_assert_int_eq(files_in(cdir, "map-"), 0);
    ck_assert(find(m2, "home.example", &r));    /* still mapped */
    w4a_map_close(m2);
}
END_TEST

/* A reload while requests are in flight: the request that found its
 * record in the old generation holds it (mod_w4a_vhost's map_find); the
 * reload retires it, which removes its copy at once, but the record's
 * strings stay readable until the request's hold is released. */
START_TEST(test_map_retired_generation_kept_by_its_holders)
{
    w4a_map_t *m;
    const char *idx = path_of("map.index");
    const char *cdir = path_of("copies");
    const char *err = NULL;
    w4a_map_fid_t id;
    w4a_hosting_t r;
    char hosting[64], docroot[512];

    w4a_map_close(compile_open(MAP, NULL, NULL));
    ck_assert_int_eq(w4a_map_copy_dir(cdir, -1, -1, 1, &err, pool),
                     APR_SUCCESS);
    ck_assert_int_eq(w4a_map_fid_stat(&id, idx), APR_SUCCESS);
    ck_assert_msg(w4a_map_open_copy(&m, idx, &id, cdir, &err, pool)
                  == APR_SUCCESS, "%s", err);
    w4a_map_hold(m);                            /* request 1 */
    w4a_map_hold(m);                            /* request 2 */
    ck_assert(find(m, "www.example.com", &r));
    apr_cpystrn(hosting, r.hosting, sizeof(hosting));
    apr_cpystrn(docroot, r.docroot, sizeof(docroot));

    w4a_map_retire(m);                          /* the reload's swap */
    ck_assert_int_eq(files_in(cdir, "map-"), 0);
    ck_assert_str_eq(r.hosting, hosting);       /* still mapped */
    ck_assert_str_eq(r.docroot, docroot);
    w4a_map_release(m);                         /* request 1 ends */
    ck_assert_str_eq(r.hosting, hosting);
    ck_assert(find(m, "home.example", &r));     /* request 2 still looks */
    w4a_map_release(m);                         /* the last: closed */
    w4a_map_release(NULL);                      /* a no-op */
}
END_TEST

START_TEST(test_map_open_copy_refuses_an_unsafe_directory)
{
    const char *idx = path_of("map.index");
    const char *cdir = path_of("copies");
    const char *err = NULL;
    w4a_map_t *m;

    w4a_map_close(compile_open(MAP, NULL, NULL));
    ck_assert_int_eq(mkdir(cdir, 0777), 0);
    ck_assert_int_eq(chmod(cdir, 0777), 0);
    ck_assert_int_eq(w4a_map_open_copy(&m, idx, NULL, cdir, &err, pool),
                     APR_EACCES);
    ck_assert_ptr_nonnull(strstr(err, "writable by group or others"));
    ck_assert_int_ne(w4a_map_copy_dir(path_of("map.txt"), -1, -1, 0, &err,
                                      pool), APR_SUCCESS);
    ck_assert_int_eq(symlink(cdir, path_of("link")), 0);
    ck_assert_int_ne(w4a_map_copy_dir(path_of("link"), -1, -1, 0, &err,
                                      pool), APR_SUCCESS);
    /* copy_dir repairs the mode of a directory it owns */
    ck_assert_int_eq(w4a_map_copy_dir(cdir, -1, -1, 0, &err, pool),
                     APR_SUCCESS);
    ck_assert_int_eq(w4a_map_open_copy(&m, idx, NULL, cdir, &err, pool),
                     APR_SUCCESS);
    w4a_map_discard(m);
}
END_TEST

START_TEST(test_map_empty_map)
{
    w4a_map_stats_t st;
    w4a_map_t *m = compile_open("# nothing yet\n\n   \n", NULL, &st);
    w4a_hosting_t r;

    ck_assert_uint_eq(st.lines, 0);
    ck_assert_uint_eq(st.warnings, 1);
    ck_assert_ptr_nonnull(strstr(msgs, "W|"));
    ck_assert_ptr_nonnull(strstr(msgs, "no records"));
    ck_assert_uint_eq(w4a_map_records(m), 0);
    ck_assert_uint_eq(w4a_map_names(m), 0);
    ck_assert(!find(m, "a.com", &r));
    ck_assert(!find(m, "x.a.com", &r));
    w4a_map_close(m);
}
END_TEST

START_TEST(test_map_unreadable_text)
{
    w4a_map_stats_t st;

    msgs[0] = '\0';
    ck_assert_int_ne(w4a_map_compile(path_of("nope.txt"), path_of("i"), NULL,
                                     &logger, &st, pool), APR_SUCCESS);
    ck_assert_ptr_nonnull(strstr(msgs, "nope.txt: cannot read"));
    msgs[0] = '\0';
    ck_assert_int_ne(w4a_map_compile(dir, NULL, NULL, &logger, &st, pool),
                     APR_SUCCESS);
    ck_assert_ptr_nonnull(strstr(msgs, "cannot read"));
    /* an index in a directory that does not exist: an I/O error */
    write_text("map.txt", MAP);
    msgs[0] = '\0';
    ck_assert_int_ne(w4a_map_compile(path_of("map.txt"),
                                     path_of("no/such/dir/map.index"), NULL,
                                     &logger, &st, pool), APR_SUCCESS);
    ck_assert_ptr_nonnull(strstr(msgs, "cannot create"));
}
END_TEST

/* ------------------------------------------------------------------ */
/* Corrupt indexes.                                                    */

static void expect_refused(const char *path, const char *why)
{
    w4a_map_t *m = NULL;
    const char *err = NULL;

    ck_assert_int_ne(w4a_map_open(&m, path, &err, pool), APR_SUCCESS);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(err);
    ck_assert(strlen(err) > 10);
    if (why) {
        ck_assert_msg(strstr(err, why) != NULL, "'%s' not in '%s'", why, err);
    }
}

/* Offsets of the header fields (docs/w4a-vhostmap.md, THE INDEX). */
enum {
    H_FORMAT = 8, H_HEADER_SIZE = 12, H_FILE_SIZE = 16, H_GENERATION = 24,
    H_NRECORDS = 32, H_NNAMES = 36, H_NSLOTS = 40, H_RESERVED = 44,
    H_SLOTS_OFF = 48, H_SLOTS_LEN = 56, H_RECORDS_OFF = 64,
    H_RECORDS_LEN = 72, H_STRINGS_OFF = 80, H_STRINGS_LEN = 88,
    H_CHECKSUM = 96, H_SIZE = 104
};

static apr_uint64_t get_le(const unsigned char *p, int n)
{
    apr_uint64_t v = 0;

    while (n--) {
        v = (v << 8) | p[n];
    }
    return v;
}

static void put_le(unsigned char *p, int n, apr_uint64_t v)
{
    int i;

    for (i = 0; i < n; i++, v >>= 8) {
        p[i] = (unsigned char)v;
    }
}

/* w4a-sum64 written from its description in the documentation. */
#define D1 0x9E3779B97F4A7C15ULL
#define D2 0xBF58476D1CE4E5B9ULL
#define D3 0x94D049BB133111EBULL

static apr_uint64_t d_round(apr_uint64_t acc, apr_uint64_t w)
{
    acc ^= w * D2;
    acc = (acc << 31) | (acc >> 33);
    return acc * D1;
}

static apr_uint64_t doc_sum64(const unsigned char *d, apr_size_t n)
{
    apr_uint64_t v[4] = { D1, D2, D3, D1 ^ D2 ^ D3 }, h = D1;
    apr_size_t i, blocks = n / 32;
    int j;

    for (i = 0; i < blocks; i++) {
        for (j = 0; j < 4; j++) {
            v[j] = d_round(v[j], get_le(d + 32 * i + 8 * j, 8));
        }
    }
    for (j = 0; j < 4; j++) {
        h = d_round(h, v[j]);
    }
    for (i = blocks * 32; i < n; i++) {
        h = (h ^ d[i]) * 0x100000001b3ULL;
    }
    h ^= n;
    h ^= h >> 32;
    h *= D3;
    h ^= h >> 29;
    h *= D2;
    h ^= h >> 32;
    return h;
}

/* The checksum of a whole file: every byte but bytes 96..103. */
static apr_uint64_t doc_checksum(const unsigned char *file, apr_size_t n)
{
    unsigned char *buf = malloc(n - 8);
    apr_uint64_t h;

    memcpy(buf, file, H_CHECKSUM);
    memcpy(buf + H_CHECKSUM, file + H_SIZE, n - H_SIZE);
    h = doc_sum64(buf, n - 8);
    free(buf);
    return h;
}

/* Write data with a recomputed checksum, expect it refused with why. */
static void sealed_refused(const unsigned char *good, apr_size_t n,
                           apr_size_t at, int width, apr_uint64_t value,
                           const char *why)
{
    unsigned char *data = apr_pmemdup(pool, good, n);
    const char *bad = path_of("sealed.index");

    put_le(data + at, width, value);
    put_le(data + H_CHECKSUM, 8, doc_checksum(data, n));
    write_bytes(bad, data, n);
    expect_refused(bad, why);
}

START_TEST(test_map_checksum_is_as_documented)
{
    w4a_map_t *m = compile_open(MAP, NULL, NULL);
    apr_size_t n;
    unsigned char *data = read_bytes(path_of("map.index"), &n);

    w4a_map_close(m);
    ck_assert(memcmp(data, "W4AMAPv1", 8) == 0);
    ck_assert_uint_eq(get_le(data + H_FORMAT, 4), 2);
    ck_assert_uint_eq(get_le(data + H_HEADER_SIZE, 4), H_SIZE);
    ck_assert_uint_eq(get_le(data + H_FILE_SIZE, 8), n);
    ck_assert_uint_eq(get_le(data + H_NRECORDS, 4), 5);
    ck_assert_uint_eq(get_le(data + H_NNAMES, 4), 7);
    ck_assert_uint_eq(get_le(data + H_NSLOTS, 4), 16);
    ck_assert_uint_eq(get_le(data + H_SLOTS_OFF, 8), H_SIZE);
    ck_assert_uint_eq(get_le(data + H_SLOTS_LEN, 8), 16 * 16);
    ck_assert_uint_eq(get_le(data + H_RECORDS_OFF, 8), H_SIZE + 16 * 16);
    ck_assert_uint_eq(get_le(data + H_RECORDS_LEN, 8), 5 * 40);
    ck_assert_uint_eq(get_le(data + H_STRINGS_OFF, 8), H_SIZE + 256 + 200);
    ck_assert_uint_eq(get_le(data + H_STRINGS_LEN, 8), n - (H_SIZE + 456));
    ck_assert_uint_eq(data[n - 1], 0);
    ck_assert(get_le(data + H_CHECKSUM, 8) == doc_checksum(data, n));
    /* and our sealing is good: an untouched re-sealed copy opens */
    put_le(data + H_CHECKSUM, 8, doc_checksum(data, n));
    write_bytes(path_of("resealed.index"), data, n);
    w4a_map_close(open_ok(path_of("resealed.index")));
}
END_TEST

START_TEST(test_map_truncated_or_flipped_index_refused)
{
    w4a_map_t *m = compile_open(MAP, NULL, NULL);
    const char *bad = path_of("corrupt.index");
    apr_size_t n, i;
    unsigned char *data = read_bytes(path_of("map.index"), &n);
    apr_uint64_t sections[4];

    w4a_map_close(m);
    ck_assert_uint_gt(n, 600);

    /* every truncation, the empty file included */
    for (i = 0; i < n; i++) {
        write_bytes(bad, data, i);
        expect_refused(bad, i < H_SIZE ? "shorter than an index header"
                                       : "truncated or appended");
    }
    write_bytes(bad, "", 0);
    expect_refused(bad, "index is 0 bytes");
    /* appended to */
    data[n] = '\n';
    write_bytes(bad, data, n + 1);
    expect_refused(bad, "truncated or appended");

    /* every bit of every byte, in every section: header, slots, records,
     * strings */
    sections[0] = 0;
    sections[1] = get_le(data + H_SLOTS_OFF, 8);
    sections[2] = get_le(data + H_RECORDS_OFF, 8);
    sections[3] = get_le(data + H_STRINGS_OFF, 8);
    ck_assert(sections[1] < sections[2] && sections[2] < sections[3]
              && sections[3] < n);
    for (i = 0; i < n; i++) {
        unsigned char bit;
        for (bit = 1; bit; bit <<= 1) {
            data[i] ^= bit;
            write_bytes(bad, data, n);
            expect_refused(bad, NULL);
            data[i] ^= bit;
        }
    }
    data[sections[1] + 20] ^= 0x01;                 /* a slot */
    write_bytes(bad, data, n);
    expect_refused(bad, "checksum mismatch");
    data[sections[1] + 20] ^= 0x01;
    data[sections[2] + 44] ^= 0x80;                 /* a record */
    write_bytes(bad, data, n);
    expect_refused(bad, "checksum mismatch");
    data[sections[2] + 44] ^= 0x80;
    data[n - 3] ^= 0x20;                            /* a string */
    write_bytes(bad, data, n);
    expect_refused(bad, "checksum mismatch");
    data[n - 3] ^= 0x20;
    data[H_GENERATION] ^= 0x01;                     /* the header */
    write_bytes(bad, data, n);
    expect_refused(bad, "checksum mismatch");
    data[H_GENERATION] ^= 0x01;

    /* the intact copy still opens: the loop restored every byte */
    write_bytes(bad, data, n);
    w4a_map_close(open_ok(bad));

    /* not an index at all */
    memcpy(data, "NOTAMAP!", 8);
    write_bytes(bad, data, n);
    expect_refused(bad, "bad magic");
    write_bytes(bad, MAP, strlen(MAP));
    expect_refused(bad, "bad magic");
    expect_refused(path_of("does-not-exist"), "cannot open");
    expect_refused(dir, "not a regular file");
}
END_TEST

START_TEST(test_map_crafted_index_refused)
{
    w4a_map_t *m = compile_open(MAP, NULL, NULL);
    apr_size_t n;
    unsigned char *d = read_bytes(path_of("map.index"), &n);
    apr_uint64_t slots = get_le(d + H_SLOTS_OFF, 8);
    apr_uint64_t recs = get_le(d + H_RECORDS_OFF, 8);
    apr_uint64_t strs_len = get_le(d + H_STRINGS_LEN, 8);
    apr_uint64_t used = slots;
    const apr_uint64_t huge = 0xFFFFFFFFFFFFFFF8ull;

    w4a_map_close(m);
    while (get_le(d + used + 12, 4) == 0xFFFFFFFFu) {
        used += 16;                                 /* first used slot */
    }

    /* header: versions, sizes, counts, offsets (checked before the sum) */
    sealed_refused(d, n, H_FORMAT, 4, 1, "index format 1 not supported "
                   "(expected 2)");
    sealed_refused(d, n, H_FORMAT, 4, 3, "index format 3 not supported");
    sealed_refused(d, n, H_HEADER_SIZE, 4, 96, "header is malformed");
    sealed_refused(d, n, H_RESERVED, 4, 1, "header is malformed");
    sealed_refused(d, n, H_FILE_SIZE, 8, n + 1, "truncated or appended");
    sealed_refused(d, n, H_NSLOTS, 4, 15, "counts are inconsistent");
    sealed_refused(d, n, H_NSLOTS, 4, 8, "counts are inconsistent");
    sealed_refused(d, n, H_NSLOTS, 4, 0, "counts are inconsistent");
    sealed_refused(d, n, H_NNAMES, 4, 9, "counts are inconsistent");
    sealed_refused(d, n, H_NRECORDS, 4, 8, "counts are inconsistent");
    sealed_refused(d, n, H_NRECORDS, 4, 4, "sections out of bounds");
    sealed_refused(d, n, H_NNAMES, 4, 6, "name count does not match");
    sealed_refused(d, n, H_SLOTS_OFF, 8, huge, "sections out of bounds");
    sealed_refused(d, n, H_SLOTS_LEN, 8, huge, "sections out of bounds");
    sealed_refused(d, n, H_RECORDS_OFF, 8, huge, "sections out of bounds");
    sealed_refused(d, n, H_RECORDS_LEN, 8, 0, "sections out of bounds");
    sealed_refused(d, n, H_STRINGS_OFF, 8, huge, "sections out of bounds");
    sealed_refused(d, n, H_STRINGS_OFF, 8, n, "sections out of bounds");
    sealed_refused(d, n, H_STRINGS_LEN, 8, strs_len + 1,
                   "sections out of bounds");
    sealed_refused(d, n, H_STRINGS_LEN, 8, huge, "sections out of bounds");

    /* slots: record index and name offset in bounds, name not "" */
    sealed_refused(d, n, used + 12, 4, 5, "slot");
    sealed_refused(d, n, used + 12, 4, 5, "points out of bounds");
    sealed_refused(d, n, used + 8, 4, strs_len, "points out of bounds");
    sealed_refused(d, n, used + 8, 4, 0, "points out of bounds");

    /* records: every string offset, state, flags */
    sealed_refused(d, n, recs + 0, 4, strs_len,
                   "record 0 points out of bounds");
    sealed_refused(d, n, recs + 0, 4, 0xFFFFFFFFu, "record 0 points out");
    sealed_refused(d, n, recs + 4, 4, strs_len + 100, "record 0 points out");
    sealed_refused(d, n, recs + 8, 4, 0, "record 0 points out");
    sealed_refused(d, n, recs + 12, 4, strs_len, "record 0 points out");
    sealed_refused(d, n, recs + 40 + 16, 4, strs_len, "record 1 points out");
    sealed_refused(d, n, recs + 40 + 20, 4, 0x7FFFFFFF, "record 1 points out");
    sealed_refused(d, n, recs + 32, 4, 2, "unknown state");
    sealed_refused(d, n, recs + 36, 4, 0x80, "inconsistent flags");
    sealed_refused(d, n, recs + 36, 4, 0, "inconsistent flags");
    sealed_refused(d, n, recs + 40 + 36, 4, 1, "inconsistent flags");

    /* strings: the table ends with a NUL */
    sealed_refused(d, n, n - 1, 1, 'x', "not terminated");
}
END_TEST

/* Random damage past the checksum: refused, or harmless when accepted. */
START_TEST(test_map_resealed_random_damage_is_safe)
{
    w4a_map_t *m = compile_open(MAP, NULL, NULL);
    apr_size_t n, i, j;
    unsigned char *good = read_bytes(path_of("map.index"), &n);
    unsigned char *d = apr_palloc(pool, n);
    const char *bad = path_of("fuzz.index");
    const char *hosts[] = { "example.com", "www.example.com", "a.example.org",
                            "x.b.example.org", "exact.b.example.org",
                            "nope.example", "home.example" };
    unsigned int seed = 12345;
    int accepted = 0;

    w4a_map_close(m);
    for (i = 0; i < 3000; i++) {
        memcpy(d, good, n);
        for (j = 0; j < 1 + i % 4; j++) {
            apr_size_t at = H_SIZE + (apr_size_t)rand_r(&seed) % (n - H_SIZE);
            d[at] = (unsigned char)rand_r(&seed);
        }
        put_le(d + H_CHECKSUM, 8, doc_checksum(d, n));
        write_bytes(bad, d, n);
        m = NULL;
        if (w4a_map_open(&m, bad, NULL, pool) == APR_SUCCESS) {
            w4a_hosting_t r;
            apr_array_header_t *seen = apr_array_make(pool, 8, sizeof(char *));
            accepted++;
            for (j = 0; j < sizeof(hosts) / sizeof(hosts[0]); j++) {
                if (find(m, hosts[j], &r)) {
                    ck_assert_ptr_nonnull(r.domain);
                    ck_assert_ptr_nonnull(r.hosting);
                    ck_assert_ptr_nonnull(r.docroot);
                    ck_assert(strlen(r.matched) + strlen(r.docroot) < n);
                    ck_assert(r.state == W4A_STATE_ACTIVE
                              || r.state == W4A_STATE_SUSPENDED);
                    ck_assert(!(r.flags & W4A_FLAG_LOG) == !r.log_dir);
                }
            }
            w4a_map_iterate(m, count_records, seen);
            w4a_map_close(m);
        }
    }
    /* damage in strings and hashes goes unnoticed by the structure
     * checks (the checksum is there for it): some were accepted */
    ck_assert_int_gt(accepted, 0);
    ck_assert_int_lt(accepted, 3000);
}
END_TEST

START_TEST(test_map_large_table_all_found)
{
    apr_size_t cap = 25000 * 128, len = 0;
    char *text = malloc(cap);
    w4a_map_stats_t st;
    w4a_map_t *m;
    w4a_hosting_t r;
    char host[64], pattern[64];
    int i;

    /* 25,000 lines: an exact name and a wildcard each = 50,000 names */
    for (i = 0; i < 25000; i++) {
        len += (apr_size_t)snprintf(text + len, cap - len,
            "d%d.example,*.d%d.example w%d %d %d /datas/v/w%d/var/www/d "
            "8.%d active%s\n", i, i, i, 200000 + i, 200000 + i, i, i % 4,
            i % 3 ? "" : " log");
    }
    m = compile_open(text, NULL, &st);
    free(text);
    ck_assert_uint_eq(st.names, 50000);
    ck_assert_uint_eq(w4a_map_names(m), 50000);
    ck_assert_uint_eq(w4a_map_records(m), 25000);
    for (i = 0; i < 25000; i++) {
        snprintf(host, sizeof(host), "d%d.example", i);
        ck_assert_msg(find(m, host, &r), "%s not found", host);
        ck_assert_str_eq(r.matched, host);
        ck_assert_uint_eq(r.uid, (apr_uint32_t)(200000 + i));
        snprintf(host, sizeof(host), "www.d%d.example", i);
        snprintf(pattern, sizeof(pattern), "*.d%d.example", i);
        ck_assert_msg(find(m, host, &r), "%s not found", host);
        ck_assert_str_eq(r.matched, pattern);
        ck_assert_uint_eq(r.gid, (apr_uint32_t)(200000 + i));
        ck_assert_uint_eq(r.php_version[2] - '0', (unsigned)(i % 4));
        ck_assert_uint_eq(r.flags, i % 3 ? 0 : W4A_FLAG_LOG);
        if (!(i % 3)) {
            snprintf(host, sizeof(host), "/datas/v/w%d/log/apache2", i);
            ck_assert_str_eq(r.log_dir, host);
        }
    }
    ck_assert(!find(m, "d25000.example", &r));
    ck_assert(!find(m, "x.d25000.example", &r));
    ck_assert(!find(m, "example", &r));
    w4a_map_close(m);
}
END_TEST

Suite *map_suite(void)
{
    Suite *s = suite_create("map");
    TCase *tc = tcase_create("map");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_map_round_trip);
    tcase_add_test(tc, test_map_iterate_in_index_order);
    tcase_add_test(tc, test_map_check_names);
    tcase_add_test(tc, test_map_check_name_lengths);
    tcase_add_test(tc, test_map_check_ids);
    tcase_add_test(tc, test_map_check_docroots);
    tcase_add_test(tc, test_map_check_fields_state_flags);
    tcase_add_test(tc, test_map_php_limit_flag_round_trip);
    tcase_add_test(tc, test_map_every_error_of_a_line_is_reported);
    tcase_add_test(tc, test_map_missing_dirs_warn_or_fail);
    tcase_add_test(tc, test_map_skip_bad);
    tcase_add_test(tc, test_map_refused_keeps_old_index);
    tcase_add_test(tc, test_map_index_is_0640_whatever_the_umask);
    tcase_add_test(tc, test_map_index_mode_and_group_as_asked);
    tcase_add_test(tc, test_map_open_survives_the_file_truncated_in_place);
    tcase_add_test(tc, test_map_empty_text_file_compiles_to_a_valid_index);
    tcase_add_test(tc, test_map_open_copy_one_shared_copy_immune_to_the_live_file);
    tcase_add_test(tc, test_map_retired_generation_kept_by_its_holders);
    tcase_add_test(tc, test_map_open_copy_refuses_an_unsafe_directory);
    tcase_add_test(tc, test_map_empty_map);
    tcase_add_test(tc, test_map_unreadable_text);
    tcase_add_test(tc, test_map_checksum_is_as_documented);
    tcase_add_test(tc, test_map_truncated_or_flipped_index_refused);
    tcase_add_test(tc, test_map_crafted_index_refused);
    tcase_add_test(tc, test_map_resealed_random_damage_is_safe);
    tcase_add_test(tc, test_map_large_table_all_found);
    suite_add_tcase(s, tc);
    return s;
}
