"""mod_w4a_guard's limit of requests of every kind per hosting (issue 13,
item 2): W4AGuardHostingLimit and the record's req_limit=N, counted across
every child of the node in shared memory, crash-safe.  A hosting at its
limit gets 503 + Retry-After at once, while another hosting's static and
PHP pages are served.

Requests are held in flight without timing: a POST whose body never comes
(the core reads it before answering) holds its place until the client
closes; slow PHP (real FPM pools) for the node-wide round.  The test
client, 127.0.0.1, is whitelisted: the client guard counts, never bans it.
"""
import json
import os
import re
import signal
import socket
import subprocess
import time

from w4a_harness import HTTPD, REPO, hostings_dir_block, wait_until
from test_hostile_limits import Flood

GUARD_SO = os.path.join(REPO, "modules/guard/.libs/mod_w4a_guard.so")
A, B = "w4a100010", "w4a100011"
SLOW = "<?php usleep(%d); echo 'done';\n"
INFO = "<?php echo 'user=', posix_getpwuid(posix_geteuid())['name'];\n"


def server(w4a, limit_line="", a_flags="-", extra="", slow_us=1500000,
           more_modules=()):
    tree = w4a.tree
    tree.site(A, "a.example", {"index.html": "static a\n",
                               "slow.php": SLOW % slow_us,
                               "err.php": "<?php echo 'php error page';\n",
                               "busy.html": "static busy page\n",
                               "php-err/.htaccess":
                               "ErrorDocument 503 /err.php\n",
                               "php-err/index.html": "x\n",
                               "html-err/.htaccess":
                               "ErrorDocument 503 /busy.html\n",
                               "html-err/index.html": "y\n"})
    tree.site(B, "b.example", {"index.html": "static b\n", "info.php": INFO})
    rc, out, index = tree.compile_map([
        tree.line("a.example", A, "a.example", flags=a_flags),
        tree.line("b.example", B, "b.example")])
    assert rc == 0, out
    fpm = w4a.fpm()
    rc, out = fpm.generate(index, extra=("--max-children", "32"))
    assert rc in (0, 1), out
    fpm.start()
    return w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
W4APHPEngine on
W4APHPSocket {fpm.socket_pattern}
W4APHPHostingLimit 0
DirectoryIndex index.html
W4AGuardEngine on
W4AGuardRate 100000 200000
W4AGuardWhitelist 127.0.0.1
{limit_line}
{extra}
<Location /w4a-guard-status>
    SetHandler w4a-guard-status
    Require local
</Location>
{hostings_dir_block(tree.base)}
""", with_php=True, ours=[("w4a_guard_module", GUARD_SO)] + list(more_modules)).start()


def status(h, hosting=None):
    st, _, body = h.get("localhost", "/w4a-guard-status"
                        + ("?hosting=" + hosting if hosting else ""))
    assert st == 200, (st, body)
    return json.loads(body)


def safe_status(h, hosting=None):
    try:
        return status(h, hosting)
    except (OSError, AssertionError, ValueError):
        return None                 # children restarting


def inflight_is(h, hosting, n):
    s = safe_status(h, hosting)
    return s is not None and s["inflight"] == n


class Holder:
    """A request of host in flight: a POST whose body never comes."""

    def __init__(self, h, host):
        self.s = socket.create_connection(("127.0.0.1", h.port), timeout=10)
        self.s.sendall(("POST /index.html HTTP/1.1\r\nHost: %s\r\n"
                        "Content-Length: 100000\r\n\r\nx" % host).encode())

    def close(self):
        self.s.close()


def hold(h, host, n, hosting):
    holders = [Holder(h, host) for _ in range(n)]
    wait_until(lambda: inflight_is(h, hosting, n),
               "%d requests of %s in flight (guard status)" % (n, hosting))
    return holders


def timed_get(h, host, path):
    t0 = time.time()
    st, hd, body = h.get(host, path)
    return st, hd, body, time.time() - t0


def test_hosting_over_its_request_limit_gets_503_at_once_others_served(w4a):
    h = server(w4a, "W4AGuardHostingLimit 4 7")
    holders = hold(h, "a.example", 4, A)
    for path in ("/index.html", "/slow.php", "/"):
        st, hd, _, took = timed_get(h, "a.example", path)
        assert st == 503 and hd.get("retry-after") == "7", (path, st, hd)
        assert took < 2.0, (path, took)
    # another hosting: its static page and its PHP, served
    st, _, body, _ = timed_get(h, "b.example", "/index.html")
    assert st == 200 and body == b"static b\n"
    st, _, body, _ = timed_get(h, "b.example", "/info.php")
    assert st == 200 and body == ("user=" + B).encode(), body
    s = status(h)["hosting_limit"]
    assert s["limit"] == 4 and s["inflight"] == 4 and s["refused"] == 3, s
    assert status(h, A) == {"hosting": A, "table": True, "inflight": 4,
                            "refused": 3}
    # logged once (at most every 5 s per hosting), saying which limit
    lines = re.findall(r"W4A00660: hosting w4a100010: .*", h.log())
    assert len(lines) == 1, lines
    assert "at its limit of 4 (W4AGuardHostingLimit); answered 503" \
        in lines[0], lines
    for x in holders:
        x.close()
    wait_until(lambda: inflight_is(h, A, 0), "A's requests given back")
    st, _, body, _ = timed_get(h, "a.example", "/index.html")
    assert st == 200 and body == b"static a\n"


def test_requests_refused_at_the_limit_are_counted_by_mod_w4a_metrics(w4a):
    """The 503s of W4AGuardHostingLimit are refusals in mod_w4a_metrics'
    per-hosting figures (the note w4a-guard-hosting), A's only."""
    from test_metrics import METRICS_SO, scrape, value, until
    shm = os.path.join(w4a.root, "metrics.shm")
    h = server(w4a, "W4AGuardHostingLimit 4", extra=f"""
W4AMetrics on
W4AMetricsFile {shm}
<Location /w4a-metrics>
    SetHandler w4a-metrics
    Require local
</Location>
""", more_modules=[("w4a_metrics_module", METRICS_SO)])
    holders = hold(h, "a.example", 4, A)
    for _ in range(3):
        assert timed_get(h, "a.example", "/index.html")[0] == 503
    assert timed_get(h, "b.example", "/index.html")[0] == 200
    m = until("3 refusals of A in the metrics",
              lambda: (lambda m: m if value(m, "w4a_hosting_refused_total", A) == 3
                       else None)(scrape(h)))
    assert value(m, "w4a_hosting_refused_total", B) == 0
    for x in holders:
        x.close()


def test_request_limit_counts_php_and_is_node_wide_across_children(w4a):
    """Whichever children take the connections, the node admits no more
    than the limit in total; rounds until the admitted requests of one
    round came from two children or more (the access log's %P)."""
    pidlog = os.path.join(w4a.root, "pids.log")
    h = server(w4a, "W4AGuardHostingLimit 4",
               extra="LogFormat \"%P %>s %U\" pids\nCustomLog " + pidlog
               + " pids")
    spread = False
    for _ in range(6):
        if os.path.exists(pidlog):
            os.truncate(pidlog, 0)
        codes = [r[0] for r in Flood(h, "a.example", "/slow.php", 30).join()]
        assert codes.count(200) == 4 and codes.count(503) == 26, sorted(codes)
        wait_until(lambda: inflight_is(h, A, 0), "A's requests given back")
        with open(pidlog) as f:
            pids = {ln.split()[0] for ln in f
                    if ln.split()[1:3] == ["200", "/slow.php"]}
        if len(pids) >= 2:
            spread = True
            break
    assert spread, "the admitted requests always came from one child"
    assert status(h)["hosting_limit"]["children"] >= 2


def httpd_children(h):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(h.pid())],
                         capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_child_killed_holding_request_slots_leaves_no_count_behind(w4a):
    h = server(w4a, "W4AGuardHostingLimit 3")
    holders = hold(h, "a.example", 3, A)
    assert h.get("a.example", "/index.html")[0] == 503
    for pid in httpd_children(h):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: (lambda s: s is not None
                        and s["hosting_limit"]["inflight"] == 0
                        and s["hosting_limit"]["children"] >= 1)(
                            safe_status(h)),
               "the killed children's counts cleared by the parent")
    assert h.wait_log(r"W4A00663: child \d+ exited with \d+ requests counted "
                      r"in flight; its counts cleared")
    for x in holders:
        x.close()
    st, _, body, _ = timed_get(h, "a.example", "/index.html")
    assert st == 200 and body == b"static a\n"


def test_record_req_limit_overrides_the_node_default(w4a):
    # no W4AGuardHostingLimit (off): only the record's req_limit=2 counts
    h = server(w4a, "", a_flags="req_limit=2")
    holders = hold(h, "a.example", 2, A)
    assert h.get("a.example", "/index.html")[0] == 503
    assert re.search(r"W4A00660: hosting w4a100010: .* at its limit of 2 "
                     r"\(record's req_limit\); answered 503", h.log())
    # B: no limit at all (nor counted: a hosting without one costs nothing)
    others = [Holder(h, "b.example") for _ in range(6)]
    st, _, body, _ = timed_get(h, "b.example", "/info.php")
    assert st == 200 and body == ("user=" + B).encode(), body
    assert status(h)["hosting_limit"]["limit"] == 0
    assert "W4A00660: hosting w4a100011" not in h.log()
    for x in holders + others:
        x.close()


def test_hosting_at_its_limit_errordocument_never_runs_its_php(w4a):
    h = server(w4a, "W4AGuardHostingLimit 2",
               extra="LogLevel info w4a_guard:debug")
    holders = hold(h, "a.example", 2, A)
    st, _, body = h.get("a.example", "/php-err/")
    assert st == 503 and b"php error page" not in body, (st, body)
    assert h.wait_log(r"W4A00665: internal redirect \(ErrorDocument\) of a "
                      r"request refused at its hosting's request limit "
                      r"goes to PHP: refused")
    st, _, body = h.get("a.example", "/html-err/")
    assert st == 503 and body == b"static busy page\n", (st, body)
    for x in holders:
        x.close()
    wait_until(lambda: inflight_is(h, A, 0), "A's requests given back")
    assert h.get("a.example", "/php-err/")[0] == 200


def test_hosting_limit_bad_value_is_a_config_error(w4a):
    for line, why in (("W4AGuardHostingLimit lots", "expected off, auto, or "
                       "a number of requests from 1 to 4095"),
                      ("W4AGuardHostingLimit 4096", "expected off, auto"),
                      ("W4AGuardHostingLimit 4 0", "W4AGuardHostingLimit: 0: "
                       "expected a whole number from 1 to 3600")):
        h = w4a.httpd("W4AGuardEngine on\n%s\n" % line,
                      ours=[("w4a_guard_module", GUARD_SO)])
        r = subprocess.run([HTTPD, "-f", h.conf, "-t"], capture_output=True,
                           text=True)
        assert r.returncode != 0 and why in r.stderr, (line, r.stderr)
