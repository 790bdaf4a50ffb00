/* Host header normalisation (w4a_host_normalise). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "check_w4a.h"
#include "w4a_host.h"
#include "w4a_util.h"

static void ok(const char *in, const char *want)
{
    char out[W4A_HOST_MAX + 1];
    apr_size_t len = 0;
    apr_status_t rv = w4a_host_normalise(in, out, &len);

    ck_assert_msg(rv == APR_SUCCESS, "'%s' refused (%d)", in, rv);
    ck_assert_str_eq(out, want);
    ck_assert_uint_eq(len, strlen(want));
}

static void bad(const char *in, apr_status_t want)
{
    char out[W4A_HOST_MAX + 1];
    apr_size_t len = 12345;
    apr_status_t rv = w4a_host_normalise(in, out, &len);

    ck_assert_msg(rv == want, "'%s' gave %d, expected %d", in ? in : "(null)",
                  rv, want);
    ck_assert_uint_eq(len, 12345);          /* untouched on failure */
}

START_TEST(test_host_port_is_stripped)
{
    ok("example.com:8080", "example.com");
    ok("example.com:80", "example.com");
    ok("example.com:", "example.com");      /* empty port */
    ok("a:0", "a");
    bad("example.com:abc", APR_EINVAL);
    bad("example.com:80a", APR_EINVAL);
    bad("example.com:-1", APR_EINVAL);
    bad("example.com:80:80", APR_EINVAL);
    bad("example.com: 80", APR_EINVAL);
    bad(":80", APR_EINVAL);
}
END_TEST

START_TEST(test_host_case_and_trailing_dot)
{
    ok("example.com", "example.com");
    ok("EXAMPLE.Com", "example.com");
    ok("example.com.", "example.com");
    ok("Www.Example.COM.:443", "www.example.com");
    ok("under_score.example", "under_score.example");
    ok("xn--bcher-kva.example", "xn--bcher-kva.example");
    ok("localhost", "localhost");
    ok("1.2.3.4", "1.2.3.4");
    ok("a-b.c-d", "a-b.c-d");
    bad("example.com..", APR_EINVAL);       /* only one dot stripped */
    bad(".", APR_EINVAL);
    bad(".:80", APR_EINVAL);
}
END_TEST

START_TEST(test_host_ipv6_literals)
{
    ok("[::1]", "[::1]");
    ok("[::1]:8080", "[::1]");
    ok("[::1]:", "[::1]");
    ok("[2001:DB8::1]", "[2001:db8::1]");
    ok("[::ffff:192.0.2.1]:80", "[::ffff:192.0.2.1]");
    bad("[]", APR_EINVAL);
    bad("[1]", APR_EINVAL);                 /* no colon: not IPv6 */
    bad("[.]", APR_EINVAL);
    bad("[::1", APR_EINVAL);
    bad("[::1]x", APR_EINVAL);
    bad("[::1]:8o", APR_EINVAL);
    bad("[::g]", APR_EINVAL);
    bad("[::1%eth0]", APR_EINVAL);
    bad("[::1]]", APR_EINVAL);
    bad("[1111:2222:3333:4444:5555:6666:7777:8888:9999:0000:1]",
        APR_EINVAL);                        /* longer than any IPv6 */
}
END_TEST

START_TEST(test_host_malformed)
{
    bad(NULL, APR_EINVAL);
    bad("", APR_EINVAL);
    bad("a..b", APR_EINVAL);
    bad(".example.com", APR_EINVAL);
    bad("a/b", APR_EINVAL);
    bad("/", APR_EINVAL);
    bad("..", APR_EINVAL);
    bad("../etc", APR_EINVAL);
    bad("a\\b", APR_EINVAL);
    bad("a b", APR_EINVAL);
    bad(" a", APR_EINVAL);
    bad("a\tb", APR_EINVAL);
    bad("a\rb", APR_EINVAL);
    bad("a\nb", APR_EINVAL);
    bad("a\x01" "b", APR_EINVAL);
    bad("a\x7f" "b", APR_EINVAL);
    bad("caf\xc3\xa9.example", APR_EINVAL);
    bad("*.example.com", APR_EINVAL);       /* wildcards are map-only */
    bad("*", APR_EINVAL);
    bad("a.example%2fb", APR_EINVAL);
    bad("a@b", APR_EINVAL);
    bad("a+b", APR_EINVAL);
    bad("user:pass@host", APR_EINVAL);
}
END_TEST

START_TEST(test_host_length_limit)
{
    char name[W4A_HOST_MAX + 8];
    char out[W4A_HOST_MAX + 1];
    apr_size_t len;
    int i;

    /* 253 characters: labels of 9 letters and dots, ending in a letter */
    for (i = 0; i < W4A_HOST_MAX; i++) {
        name[i] = (i % 10 == 9) ? '.' : 'a';
    }
    name[W4A_HOST_MAX - 1] = 'a';
    name[W4A_HOST_MAX] = '\0';
    ck_assert_int_eq(w4a_host_normalise(name, out, &len), APR_SUCCESS);
    ck_assert_uint_eq(len, W4A_HOST_MAX);
    ck_assert_uint_eq(strlen(out), W4A_HOST_MAX);

    /* 253 + a trailing dot and a port still fit */
    strcpy(name + W4A_HOST_MAX, ".:80");
    ck_assert_int_eq(w4a_host_normalise(name, out, &len), APR_SUCCESS);
    ck_assert_uint_eq(len, W4A_HOST_MAX);

    /* 254 does not */
    name[W4A_HOST_MAX] = 'b';
    name[W4A_HOST_MAX + 1] = '\0';
    bad(name, APR_ENAMETOOLONG);
    name[W4A_HOST_MAX + 1] = ':';
    name[W4A_HOST_MAX + 2] = '1';
    name[W4A_HOST_MAX + 3] = '\0';
    bad(name, APR_ENAMETOOLONG);
}
END_TEST

/* w4a_printable: what the root tools print of a tenant's names */
START_TEST(test_printable_escapes_controls_keeps_utf8)
{
    apr_pool_t *p;
    const char *same = "caf\xc3\xa9 a\\b [x]";

    apr_pool_create(&p, NULL);
    ck_assert_ptr_eq(w4a_printable(p, same), same);
    ck_assert_str_eq(w4a_printable(p, "a\x1b[2J\nb\x7f"),
                     "a\\x1b[2J\\x0ab\\x7f");
    /* C1 CSI as UTF-8 escaped, a no-break space (C2 A0) kept */
    ck_assert_str_eq(w4a_printable(p, "\xc2\x9b" "31m \xc2\xa0"),
                     "\\xc2\\x9b31m \xc2\xa0");
    /* a byte that is no UTF-8 (8-bit CSI, a cut sequence), an overlong
     * form, a right-to-left override: escaped */
    ck_assert_str_eq(w4a_printable(p, "a\x9b" "31m"), "a\\x9b31m");
    ck_assert_str_eq(w4a_printable(p, "end\xc2"), "end\\xc2");
    ck_assert_str_eq(w4a_printable(p, "\xc0\xaf"), "\\xc0\\xaf");
    ck_assert_str_eq(w4a_printable(p, "x\xe2\x80\xaey"),
                     "x\\xe2\\x80\\xaey");
    /* and valid text of 2, 3, 4 bytes kept */
    same = "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
    ck_assert_ptr_eq(w4a_printable(p, same), same);
    apr_pool_destroy(p);
}
END_TEST

/* w4a_open_dir_trusted: a root-owned symlink is followed, but its target
 * is walked name by name too: a tenant's symlink in it is refused */
START_TEST(test_open_dir_trusted_walks_a_root_links_target)
{
    apr_pool_t *p;
    char top[] = "/tmp/w4a-check-trusted-XXXXXX", path[256];
    const char *link = NULL;
    int fd;

    if (geteuid() != 0) {
        return;                 /* (needs to chown to a tenant) */
    }
    apr_pool_create(&p, NULL);
    ck_assert_ptr_nonnull(mkdtemp(top));
    snprintf(path, sizeof(path), "%s/other", top);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/tenant", top);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    ck_assert_int_eq(chown(path, 100010, 100010), 0);
    snprintf(path, sizeof(path), "%s/tenant/inner", top);
    ck_assert_int_eq(symlink("../other", path), 0);
    ck_assert_int_eq(lchown(path, 100010, 100010), 0);
    snprintf(path, sizeof(path), "%s/alias", top);
    ck_assert_int_eq(symlink("tenant/inner", path), 0);
    /* the root link to a root directory: followed */
    snprintf(path, sizeof(path), "%s/direct", top);
    ck_assert_int_eq(symlink("other", path), 0);
    fd = w4a_open_dir_trusted(path, &link, p);
    ck_assert_int_ge(fd, 0);
    close(fd);
    /* through the tenant's link: refused, the tenant's link named */
    snprintf(path, sizeof(path), "%s/alias", top);
    fd = w4a_open_dir_trusted(path, &link, p);
    ck_assert_int_eq(fd, -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_ptr_nonnull(strstr(link, "/tenant/inner"));
    snprintf(path, sizeof(path), "rm -rf %s", top);
    ck_assert_int_eq(system(path), 0);
    apr_pool_destroy(p);
}
END_TEST

Suite *host_suite(void)
{
    Suite *s = suite_create("host");
    TCase *tc = tcase_create("normalise");

    tcase_add_test(tc, test_host_port_is_stripped);
    tcase_add_test(tc, test_host_case_and_trailing_dot);
    tcase_add_test(tc, test_host_ipv6_literals);
    tcase_add_test(tc, test_host_malformed);
    tcase_add_test(tc, test_host_length_limit);
    tcase_add_test(tc, test_printable_escapes_controls_keeps_utf8);
    tcase_add_test(tc, test_open_dir_trusted_walks_a_root_links_target);
    suite_add_tcase(s, tc);
    return s;
}
