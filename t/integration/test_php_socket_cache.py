"""mod_w4a_php keeps each hosting's pool socket per thread (php_sock.c):
never a stale one after a map reload, never another hosting's, under
threads."""
import os
import random
import re
from concurrent.futures import ThreadPoolExecutor

from w4a_harness import HOSTINGS, hostings_dir_block, socket_listens, wait_until
from test_php import A, B, INFO_PHP, php_server, vars_of

# One child of two threads: a handful of requests passes through both
# threads' caches; the map is looked at on every request.
ONE_CHILD = """
W4AVhostMapCheckInterval 0
ServerLimit 1
StartServers 1
ThreadsPerChild 2
MaxRequestWorkers 2
MinSpareThreads 1
MaxSpareThreads 2
"""


def warm(httpd, host, user, n=20):
    for _ in range(n):
        st, h, body = httpd.get(host, "/info.php")
        assert st == 200, body
        assert vars_of(body)["user"] == user


def test_php_socket_cache_follows_a_new_php_version_after_map_reload(w4a):
    tree, fpm, httpd = php_server(w4a, body_extra=ONE_CHILD)
    warm(httpd, "a.example", A)
    # a.example's hosting moves to PHP 8.3, whose pool is not there yet
    rc, out, index = tree.compile_map([
        tree.line("a.example,www.a.example", A, "a.example", php="8.3"),
        tree.line("b.example", B, "b.example")])
    assert rc == 0, out
    sock83 = os.path.join(fpm.sock_dir, "8.3-%s.sock" % A)
    httpd.expect_error(r"W4A00210: hosting w4a100010: PHP 8\.3 pool socket "
                       + re.escape(sock83) + " is missing; answered 503")
    for _ in range(10):                     # whichever thread serves it
        st, h, body = httpd.get("a.example", "/info.php")
        assert st == 503, body
    assert httpd.wait_log(r"W4A00210: hosting w4a100010: PHP 8\.3")
    assert not re.search(r"W4A00210: hosting w4a100010: PHP 8\.2",
                         httpd.log())
    warm(httpd, "b.example", B, 4)          # the other hosting unharmed
    # its 8.3 pool appears: served there
    rc, out = fpm.generate(index)
    assert rc == 0, out
    # FPM's reload (SIGUSR2 from w4a-fpm-pools: the master re-executes and
    # starts every pool again) took more than 10 s in a CI run with two
    # others on the same two cores: a deadline, not a pause, so generous
    wait_until(lambda: socket_listens(sock83), "the 8.3 pool of " + A,
               timeout=60)
    warm(httpd, "a.example", A, 10)
    # the 8.2 pool of B kept its file through A's move (one --pool-dir for
    # both versions here): still served after the master's reload
    assert sorted(os.listdir(fpm.pool_dir)) == sorted(
        "w4a-%s.%s" % (h, e) for h in (A, B) for e in ("conf", "settings"))
    warm(httpd, "b.example", B, 4)


def test_php_socket_cache_domain_moved_to_another_hosting_gets_its_pool(w4a):
    tree, fpm, httpd = php_server(w4a, body_extra=ONE_CHILD)
    warm(httpd, "a.example", A)
    warm(httpd, "b.example", B, 4)
    # a.example now belongs to B (B's document root)
    rc, out, index = tree.compile_map([
        tree.line("a.example,www.a.example", B, "b.example"),
        tree.line("b.example", B, "b.example")])
    assert rc == 0, out
    for _ in range(10):
        st, h, body = httpd.get("a.example", "/info.php")
        assert st == 200, body
        v = vars_of(body)
        assert v["user"] == B
        assert v["SCRIPT_FILENAME"] == tree.docroot(B, "b.example") \
            + "/info.php"


def test_php_socket_cache_threads_each_hosting_its_own_pool(w4a):
    """Five hostings, sixteen clients at once against two children of
    sixteen threads: every answer from the hosting's own pool."""
    tree = w4a.tree
    names = [n for n, _ in HOSTINGS]
    lines = []
    for i, name in enumerate(names):
        dom = "h%d.example" % i
        tree.site(name, dom, {"info.php": INFO_PHP})
        lines.append(tree.line(dom, name, dom))
    rc, out, index = tree.compile_map(lines)
    assert rc == 0, out
    fpm = w4a.fpm()
    rc, out = fpm.generate(index)
    assert rc in (0, 1), out
    fpm.start()
    httpd = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
W4APHPEngine on
W4APHPSocket {fpm.socket_pattern}
# sixteen clients may send one hosting more than auto's 8: not this test
W4APHPHostingLimit 0
{hostings_dir_block(tree.base)}
""", with_php=True).start()

    def client(seed):
        rnd = random.Random(seed)
        bad = []
        for _ in range(25):
            i = rnd.randrange(len(names))
            st, h, body = httpd.get("h%d.example" % i, "/info.php")
            user = vars_of(body).get("user") if st == 200 else None
            if user != names[i]:
                bad.append((names[i], st, user))
        return bad

    with ThreadPoolExecutor(16) as ex:
        bad = [b for r in ex.map(client, range(16)) for b in r]
    assert bad == []
