"""Per-hosting PHP limits, node-wide (issue 13): a hosting that floods its
own slow PHP gets 503 + Retry-After at once past its limit, counted across
every child of the node, while another hosting's static and PHP pages are
served promptly; a child killed while it holds slots leaves no count
behind (the parent clears its row)."""
import json
import os
import re
import signal
import subprocess
import threading
import time

from w4a_harness import dechunk, hostings_dir_block

A, B = "w4a100010", "w4a100011"
SLOW = "<?php usleep(%d); echo 'done';\n"
INFO = "<?php echo 'user=', posix_getpwuid(posix_geteuid())['name'];\n"


def limits_server(w4a, limit_line="", a_flags="-", slow_us=2000000,
                  max_children="16", share="off", modules=()):
    """A (slow.php) and B (static, info.php, slow.php) with limit_line.
    share: W4APHPHostingClientShare -- off by default here, as these
    tests hold a hosting's limit from one client (the share has its own
    test)."""
    tree = w4a.tree
    tree.site(A, "a.example", {"slow.php": SLOW % slow_us})
    tree.site(B, "b.example", {"index.html": "static b\n", "info.php": INFO,
                               "slow.php": SLOW % slow_us})
    rc, out, index = tree.compile_map([
        tree.line("a.example", A, "a.example", flags=a_flags),
        tree.line("b.example", B, "b.example")])
    assert rc == 0, out
    fpm = w4a.fpm()
    rc, out = fpm.generate(index, extra=("--max-children", max_children))
    assert rc in (0, 1), out
    fpm.start()
    httpd = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
W4APHPEngine on
W4APHPSocket {fpm.socket_pattern}
W4APHPRetryAfter 2
W4APHPHostingClientShare {share}
{limit_line}
DirectoryIndex index.php index.html
<Location /w4a-php-status>
    SetHandler w4a-php-status
</Location>
{hostings_dir_block(tree.base)}
""", with_php=True, modules=modules).start()
    return httpd


def status(httpd, hosting=None):
    st, h, body = httpd.get("localhost", "/w4a-php-status"
                            + ("?hosting=" + hosting if hosting else ""))
    assert st == 200, (st, body)
    return json.loads(body)


def wait_status(httpd, pred, what, hosting=None, timeout=10.0):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        try:
            last = status(httpd, hosting)
        except (OSError, AssertionError, ValueError):
            last = None             # children restarting
        if last is not None and pred(last):
            return last
        time.sleep(0.05)
    raise AssertionError("timed out waiting for %s; last status %r"
                         % (what, last))


class Flood:
    """n concurrent GETs of a slow page, each with a deadline."""

    def __init__(self, httpd, host, path, n, deadline=15.0):
        self.results = []
        self.lock = threading.Lock()

        def one():
            t0 = time.time()
            try:
                st, h, body = httpd.raw(
                    ("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                     % (path, host)).encode(), timeout=deadline)
                if h.get("transfer-encoding", "").lower() == "chunked":
                    body = dechunk(body)
            except OSError as e:
                st, h, body = 0, {}, repr(e).encode()
            with self.lock:
                self.results.append((st, h.get("retry-after"), body,
                                     time.time() - t0))

        self.threads = [threading.Thread(target=one) for _ in range(n)]
        for t in self.threads:
            t.start()

    def join(self):
        for t in self.threads:
            t.join()
        return self.results


class ClientFlood(Flood):
    """n concurrent GETs of a slow page from client address client, sent
    through the trusted proxy 127.0.0.1 (X-Client, mod_remoteip)."""

    def __init__(self, httpd, client, host, path, n, deadline=15.0):
        from test_guard import req
        self.results = []
        self.lock = threading.Lock()

        def one():
            st, h = req(httpd, "127.0.0.1", host=host, path=path,
                        timeout=deadline, headers={"X-Client": client})
            with self.lock:
                self.results.append((st, h.get("retry-after")))

        self.threads = [threading.Thread(target=one) for _ in range(n)]
        for t in self.threads:
            t.start()


def test_one_client_holds_only_its_share_of_a_hostings_php(w4a):
    """Hole (fixed): one client (anyone, or another tenant's PHP) held a
    hosting's whole PHP limit -- with slow pages as here, or with POST
    bodies that never come.  W4APHPHostingClientShare (50% by default)
    leaves the rest to the hosting's other visitors."""
    httpd = limits_server(w4a, "W4APHPHostingLimit 4\n"
                          "RemoteIPHeader X-Client\n"
                          "RemoteIPInternalProxy 127.0.0.1", share="50",
                          modules=["remoteip"])
    flood = ClientFlood(httpd, "192.0.2.51", "a.example", "/slow.php", 5)
    # the client's 2 in flight, its 3 others refused at once
    wait_status(httpd, lambda s: s["hosting"]["inflight"] == 2
                and s["hosting"]["refused"] == 3,
                "2 of the client's requests in flight, 3 refused", A)
    assert httpd.wait_log(r"\[w4a_php:warn\].*W4A00265: hosting w4a100010: "
                          r"client 192\.0\.2\.51 holds its share of the "
                          r"hosting's PHP requests in flight \(2 of its "
                          r"limit of 4, W4APHPHostingClientShare 50%\); "
                          r"answered 503")
    # another client of A still gets A's other places
    other = ClientFlood(httpd, "192.0.2.52", "a.example", "/slow.php", 2)
    wait_status(httpd, lambda s: s["hosting"]["inflight"] == 4,
                "the other client's 2 requests in flight too", A)
    # B is untouched
    st, body, took = timed_get(httpd, "b.example", "/info.php")
    assert st == 200 and body == ("user=" + B).encode(), (st, body)
    codes = sorted(r[0] for r in flood.join())
    assert codes == [200, 200, 503, 503, 503], codes
    assert sorted(r[0] for r in other.join()) == [200, 200]
    s = wait_status(httpd, lambda s: s["inflight"] == 0, "no PHP in flight")
    assert s["refused_client_share"] == 3, s
    # a share of 0 is refused at start ("off" says it)
    bad = w4a.httpd("W4APHPHostingClientShare 0\n", with_php=True)
    r = bad.ctl("-t")
    assert r.returncode != 0
    assert "W4APHPHostingClientShare: expected a percent from 1 to 100" \
        in r.stderr


def timed_get(httpd, host, path):
    t0 = time.time()
    st, h, body = httpd.get(host, path)
    return st, body, time.time() - t0


def test_hosting_over_its_php_limit_gets_503_at_once_others_served(w4a):
    httpd = limits_server(w4a, "W4APHPHostingLimit 3")
    s = status(httpd, A)
    assert s["hosting_limit_auto"] == 8        # MaxRequestWorkers 64 / 8
    assert s["hosting"] == {"name": A, "inflight": 0, "refused": 0}
    flood = Flood(httpd, "a.example", "/slow.php", 12)
    # the 3 admitted requests are in flight, the 9 others refused at once
    wait_status(httpd, lambda s: s["hosting"]["inflight"] == 3
                and s["hosting"]["refused"] == 9,
                "3 of A's requests in flight and 9 refused", A)
    # meanwhile B's static page and B's PHP are served promptly
    for path, want in (("/", b"static b\n"), ("/index.html", b"static b\n"),
                       ("/info.php", ("user=" + B).encode())):
        st, body, took = timed_get(httpd, "b.example", path)
        assert st == 200 and body == want, (path, st, body)
        assert took < 1.0, (path, took)
    results = flood.join()
    codes = sorted(r[0] for r in results)
    assert codes == [200] * 3 + [503] * 9, codes
    for st, retry, body, took in results:
        if st == 503:
            assert retry == "2"
            assert took < 1.0, took     # at once, not queued
        else:
            assert body == b"done"
    # one log line for the 9 refusals (at most one every 5 s per hosting)
    lines = re.findall(r".*W4A00260.*", httpd.log())
    assert len(lines) == 1, lines
    # the count is the refusals counted when the line was written: refusals
    # racing in other threads may be counted before the first one logs
    m = re.search(r"\[w4a_php:warn\].*W4A00260: hosting w4a100010: PHP "
                  r"requests in flight on the node at its limit of 3 "
                  r"\(W4APHPHostingLimit\); answered 503 \((\d+) refused so "
                  r"far", lines[0])
    assert m and 1 <= int(m.group(1)) <= 9, lines[0]
    # the counts go back to zero after the flood; B never counted a refusal
    s = wait_status(httpd, lambda s: s["inflight"] == 0, "no PHP in flight",
                    A)
    assert s["hosting"]["refused"] == 9 and s["refused"] == 9
    assert status(httpd, B)["hosting"] == {"name": B, "inflight": 0,
                                           "refused": 0}
    assert s["children"] >= 2
    # and A is served again
    st, body, took = timed_get(httpd, "a.example", "/slow.php")
    assert st == 200 and body == b"done"


def test_limit_is_node_wide_across_children(w4a):
    """Whichever children take the connections, the node admits no more
    than the limit in total (a per-process limit would admit it in each
    child).  Rounds until the admitted requests of one round were served
    by two children or more (the access log's %P), so that the round
    shows the count was shared."""
    pidlog = os.path.join(w4a.root, "pids.log")
    httpd = limits_server(w4a, "W4APHPHostingLimit 4\n"
                          "LogFormat \"%P %>s %U\" pids\n"
                          "CustomLog " + pidlog + " pids",
                          slow_us=1200000, max_children="32")
    spread = False
    for round_ in range(6):
        if os.path.exists(pidlog):
            os.truncate(pidlog, 0)
        flood = Flood(httpd, "a.example", "/slow.php", 40)
        codes = [r[0] for r in flood.join()]
        assert codes.count(200) == 4 and codes.count(503) == 36, sorted(codes)
        wait_status(httpd, lambda s: s["inflight"] == 0, "no PHP in flight")
        with open(pidlog) as f:
            pids = {ln.split()[0] for ln in f
                    if ln.split()[1:3] == ["200", "/slow.php"]}
        if len(pids) >= 2:
            spread = True
            break
    assert spread, "the admitted requests always came from one child"
    assert status(httpd, A)["children"] >= 2


def httpd_children(httpd):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(httpd.pid())],
                         capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_child_killed_holding_php_slots_leaves_no_count_behind(w4a):
    httpd = limits_server(w4a, "W4APHPHostingLimit 5", slow_us=6000000)
    flood = Flood(httpd, "a.example", "/slow.php", 5, deadline=10.0)
    wait_status(httpd, lambda s: s["hosting"]["inflight"] == 5,
                "5 of A's requests in flight", A)
    # at its limit now: one more is refused
    st, h, body = httpd.get("a.example", "/slow.php")
    assert st == 503 and h.get("retry-after") == "2"
    for pid in httpd_children(httpd):
        os.kill(pid, signal.SIGKILL)
    s = wait_status(httpd, lambda s: s["inflight"] == 0
                    and s["children"] >= 1,
                    "the killed children's counts cleared by the parent", A)
    assert s["hosting"]["inflight"] == 0
    assert httpd.wait_log(r"W4A00263: child \d+ exited with \d+ PHP requests "
                          r"counted in flight; its counts cleared")
    flood.join()
    # A is admitted again, up to its limit
    flood = Flood(httpd, "a.example", "/info.php", 1)
    st, h, body = httpd.get("b.example", "/info.php")
    assert st == 200 and body == ("user=" + B).encode()
    r = flood.join()
    assert r[0][0] in (200, 403, 404) and r[0][0] != 503, r


def test_record_php_limit_overrides_the_node_default(w4a):
    httpd = limits_server(w4a, "W4APHPHostingLimit 6", a_flags="php_limit=2",
                          slow_us=1500000)
    fa = Flood(httpd, "a.example", "/slow.php", 6)
    fb = Flood(httpd, "b.example", "/slow.php", 5)
    ra, rb = fa.join(), fb.join()
    codes_a = sorted(r[0] for r in ra)
    codes_b = sorted(r[0] for r in rb)
    assert codes_a == [200] * 2 + [503] * 4, codes_a
    assert codes_b == [200] * 5, codes_b       # B: the node's 6
    assert re.search(r"W4A00260: hosting w4a100010: .* at its limit of 2 "
                     r"\(record's php_limit\); answered 503", httpd.log())
    assert "W4A00260: hosting w4a100011" not in httpd.log()


def test_hosting_limit_zero_leaves_only_records_limits(w4a):
    httpd = limits_server(w4a, "W4APHPHostingLimit 0", slow_us=1000000)
    flood = Flood(httpd, "a.example", "/slow.php", 12)
    codes = sorted(r[0] for r in flood.join())
    assert codes == [200] * 12, codes
    assert "W4A00260" not in httpd.log()


def test_hosting_limit_bad_value_is_a_config_error(w4a):
    from w4a_harness import HTTPD
    httpd = w4a.httpd("W4APHPHostingLimit lots\n", with_php=True)
    r = subprocess.run([HTTPD, "-f", httpd.conf, "-t"], capture_output=True,
                       text=True)
    assert r.returncode != 0
    assert "W4APHPHostingLimit: expected auto, or a number" in r.stderr


def test_directory_index_of_a_hosting_at_its_limit_never_shows_php(w4a):
    """DirectoryIndex index.php index.html: at its limit, the hosting's
    "/" is never its PHP source; mod_dir passes the refused index.php by
    and serves index.html."""
    tree = w4a.tree
    httpd = limits_server(w4a, "W4APHPHostingLimit 1", slow_us=3000000)
    tree.write(A, "a.example", "index.php", "<?php echo 'secret php';\n")
    tree.write(A, "a.example", "index.html", "static a\n")
    flood = Flood(httpd, "a.example", "/slow.php", 1)
    wait_status(httpd, lambda s: s["hosting"]["inflight"] == 1,
                "A's slow request in flight", A)
    st, h, body = httpd.get("a.example", "/")
    assert b"<?php" not in body and b"secret php" not in body
    assert (st, body) == (200, b"static a\n"), (st, body)
    st, h, body = httpd.get("a.example", "/index.php")
    assert st == 503 and b"<?php" not in body
    assert flood.join()[0][0] == 200
    st, h, body = httpd.get("a.example", "/")
    assert (st, body) == (200, b"secret php"), (st, body)


def test_shipped_node_conf_cuts_a_slowloris_client_others_served(w4a):
    """conf/w4a-node.conf (mod_reqtimeout): a client that trickles its
    headers a byte a second is cut (408, connection closed) within the
    header timeout of 10 s (mod_reqtimeout's own default: 20 s), while
    another hosting is served meanwhile."""
    import socket
    from w4a_harness import REPO
    tree = w4a.tree
    tree.site(B, "b.example", {"index.html": "static b\n"})
    rc, out, index = tree.compile_map([tree.line("b.example", B,
                                                 "b.example")])
    assert rc == 0, out
    httpd = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
Include {os.path.join(REPO, "conf/w4a-node.conf")}
{hostings_dir_block(tree.base)}
""", modules=("reqtimeout",)).start()
    s = socket.create_connection(("127.0.0.1", httpd.port), timeout=25)
    t0 = time.time()
    s.sendall(b"GET / HTTP/1.1\r\nHost: b.example\r\n")
    got = b""
    try:
        while time.time() - t0 < 25:
            s.sendall(b"X")             # one byte a second, never a header end
            st, h, body = httpd.get("b.example", "/")
            assert (st, body) == (200, b"static b\n")
            s.settimeout(1.0)
            try:
                b = s.recv(65536)
            except socket.timeout:
                continue
            if not b:
                break
            got += b
    except (BrokenPipeError, ConnectionResetError):
        pass
    took = time.time() - t0
    s.close()
    assert 9 <= took < 15, took      # mod_reqtimeout alone: 20 s
    assert got == b"" or got.startswith(b"HTTP/1.1 408"), got[:80]
