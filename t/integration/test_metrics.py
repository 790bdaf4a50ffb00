"""mod_w4a_metrics and w4a-top: which hosting is it? (issue 16)

Everything is real: httpd (event MPM, two children or more), FPM pools
running as the hostings' users.  The table is shared by every child, so
the counts asserted are exact whichever child served each request; a
request is counted in log_transaction, after its response went out, so
the tests poll (with a deadline) until the last request is in.
"""
import json
import os
import re
import stat
import subprocess
import time

from prometheus_client.parser import text_string_to_metric_families

from w4a_harness import REPO, hostings_dir_block

METRICS_SO = os.path.join(REPO, "modules/metrics/.libs/mod_w4a_metrics.so")
TOP = os.path.join(REPO, "support/w4a-top")
OURS = [("w4a_metrics_module", METRICS_SO)]

A, B, C = "w4a100010", "w4a100011", "w4a100012"
OTHER, NONE = "(other)", "(none)"

HELLO = "<?php echo 'hello ', posix_getpwuid(posix_geteuid())['name'], \"\\n\";\n"
SLOW = "<?php usleep(%d); echo 'slow';\n"

LOCATION = """<Location /w4a-metrics>
    SetHandler w4a-metrics
    Require local
</Location>
"""


def until(what, fn, timeout=10.0, step=0.05):
    """Poll fn() until it returns a true value; fail saying what was
    waited for."""
    end = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        assert time.time() < end, "timed out waiting for " + what
        time.sleep(step)


def metrics_server(w4a, extra="", files_a=None, table=None, recent=None,
                   start=True, map_lines=None, names_a="a.example"):
    tree = w4a.tree
    tree.site(A, "a.example", dict({"index.html": "static a\n",
                                    "hello.php": HELLO,
                                    "slow.php": SLOW % 300000},
                                   **(files_a or {})))
    tree.site(B, "b.example", {"index.html": "static b, longer\n",
                               "hello.php": HELLO})
    tree.site(C, "c.example", {"index.html": "static c\n"})
    rc, out, index = tree.compile_map([
        tree.line(names_a, A, "a.example"),
        tree.line("b.example", B, "b.example"),
        tree.line("c.example", C, "c.example")]
        + (map_lines(tree) if map_lines else []))
    assert rc == 0, out
    fpm = w4a.fpm()
    rc, out = fpm.generate(index)
    assert rc in (0, 1), out
    fpm.start()
    shm = os.path.join(w4a.root, "metrics.shm")
    lines = ["W4AMetrics on", "W4AMetricsFile %s" % shm]
    if table:
        lines.append("W4AMetricsTableSize %d" % table)
    if recent is not None:
        lines.append("W4AMetricsRecentScript %d" % recent)
    httpd = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
W4APHPEngine on
W4APHPSocket {fpm.socket_pattern}
{chr(10).join(lines)}
{hostings_dir_block(tree.base)}{LOCATION}{extra}
""", with_php=True, ours=OURS)
    httpd.shm = shm
    if start:
        httpd.start()
    return tree, fpm, httpd


def scrape(httpd):
    """The exposition, parsed by the Prometheus client's own parser:
    {(metric sample name, hosting[, code]): value}."""
    st, h, body = httpd.get("localhost", "/w4a-metrics")
    assert st == 200, body
    assert h["content-type"].startswith("text/plain; version=0.0.4"), h
    assert h["cache-control"] == "no-store"
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            key = (s.name,) + tuple(s.labels[k] for k in ("hosting", "code")
                                    if k in s.labels)
            # w4a_hosting_refused_total: summed over its label check
            out[key] = out.get(key, 0) + s.value
    return out


def value(m, name, hosting, code=None):
    key = (name, hosting) + ((code,) if code else ())
    return m.get(key, 0)


def wait_requests(httpd, want):
    """Scrape until every hosting of want {hosting: n} has logged n
    requests (the last one's log_transaction has run), then once more to
    see that nothing more comes."""
    def done():
        m = scrape(httpd)
        got = {h: value(m, "w4a_hosting_requests_total", h) for h in want}
        return m if got == want else None
    try:
        return until("request counts %s" % want, done)
    except AssertionError:
        m = scrape(httpd)
        raise AssertionError("wanted %s, have %s" % (
            want, {h: value(m, "w4a_hosting_requests_total", h)
                   for h in want}))


def top_json(httpd, *args):
    r = subprocess.run([TOP, "--file", httpd.shm, "--once", "--json",
                        "--interval", "0.2", *args],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def test_metrics_counts_each_hosting_exactly_whichever_child_served(w4a):
    tree, fpm, httpd = metrics_server(w4a)
    sent = {A: 0, B: 0}
    statuses = {A: {}, B: {}}

    def go(hosting, host, path, method="GET", body=b""):
        st, h, b = httpd.get(host, path, method=method, body=body)
        sent[hosting] += len(b)
        statuses[hosting][st // 100] = statuses[hosting].get(st // 100, 0) + 1
        return st, b

    for _ in range(7):
        assert go(A, "a.example", "/index.html") == (200, b"static a\n")
    for _ in range(3):
        assert go(A, "a.example", "/hello.php") == (200, b"hello %s\n"
                                                    % A.encode())
    for _ in range(2):
        st, b = go(A, "a.example", "/hello.php", method="POST", body=b"x=1")
        assert st == 200, b
    for _ in range(2):
        assert go(A, "a.example", "/missing.html")[0] == 404
    for _ in range(5):
        assert go(B, "b.example", "/index.html")[0] == 200
    assert go(B, "b.example", "/hello.php")[0] == 200

    m = wait_requests(httpd, {A: 14, B: 6})
    assert value(m, "w4a_hosting_responses_total", A, "2xx") == 12
    assert value(m, "w4a_hosting_responses_total", A, "4xx") == 2
    assert value(m, "w4a_hosting_responses_total", A, "5xx") == 0
    assert value(m, "w4a_hosting_responses_total", B, "2xx") == 6
    assert value(m, "w4a_hosting_post_requests_total", A) == 2
    assert value(m, "w4a_hosting_post_requests_total", B) == 0
    assert value(m, "w4a_hosting_php_requests_total", A) == 5
    assert value(m, "w4a_hosting_php_requests_total", B) == 1
    assert value(m, "w4a_hosting_sent_bytes_total", A) == sent[A]
    assert value(m, "w4a_hosting_sent_bytes_total", B) == sent[B]
    assert value(m, "w4a_hosting_php_seconds_total", A) > 0
    assert value(m, "w4a_hosting_php_backend_errors_total", A) == 0
    # C had no request: no row; the scrapes themselves are (none)'s
    assert ("w4a_hosting_requests_total", C) not in m
    until("a scrape counted as %s" % NONE, lambda: value(
        scrape(httpd), "w4a_hosting_requests_total", NONE) >= 1)
    assert m[("w4a_metrics_table_rows",)] == 4096
    assert m[("w4a_metrics_table_used_rows",)] == 2
    assert m[("w4a_metrics_table_full_total",)] == 0

    # w4a-top reads the same table from its file, no HTTP
    j = top_json(httpd)
    rows = {x["hosting"]: x for x in j["hostings"]}
    assert rows[A]["requests"] == 14 and rows[B]["requests"] == 6
    assert rows[A]["bytes"] == sent[A] and rows[A]["php_requests"] == 5
    assert rows[A]["posts"] == 2 and rows[A]["4xx"] == 2
    assert j["httpd_running"] is True and j["rows"] == 4096
    # idle during the sample: no rate
    assert rows[A]["requests_per_s"] == 0
    # sorted by requests: A before B
    names = [x["hosting"] for x in j["hostings"]]
    assert names.index(A) < names.index(B)


def test_metrics_exact_under_concurrency_from_many_threads(w4a):
    """8 client threads at once (both children busy, many threads each):
    no count is lost or doubled by the lock-free adds."""
    import threading
    tree, fpm, httpd = metrics_server(w4a)
    errors = []

    def client(k):
        for i in range(25):
            host = "a.example" if (i + k) % 2 else "b.example"
            try:
                st = httpd.get(host, "/index.html")[0]
                if st != 200:
                    errors.append(st)
            except OSError as e:
                errors.append(e)
    ts = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors
    m = wait_requests(httpd, {A: 100, B: 100})
    assert value(m, "w4a_hosting_sent_bytes_total", A) == 100 * len(
        b"static a\n")
    assert value(m, "w4a_hosting_responses_total", B, "2xx") == 100


def test_metrics_counts_of_old_and_new_children_add_up_across_graceful(w4a):
    """Requests served before a graceful restart (old children) and after
    (new children, other processes for certain, as the access log's %P
    shows) add up in the one table, which the restart keeps."""
    pids_log = os.path.join(w4a.root, "pids.log")
    tree, fpm, httpd = metrics_server(w4a, extra=(
        'LogFormat "%%P %%v" pids\nCustomLog %s pids\n' % pids_log))
    for _ in range(4):
        assert httpd.get("a.example", "/index.html")[0] == 200
    assert httpd.get("b.example", "/hello.php")[0] == 200
    wait_requests(httpd, {A: 4, B: 1})

    def pids():
        with open(pids_log) as f:
            return [ln.split()[0] for ln in f if ln.strip()]
    before = set(pids())
    httpd.graceful()
    n0 = len(pids())
    for _ in range(3):
        assert httpd.get("a.example", "/hello.php")[0] == 200
    assert httpd.get("b.example", "/index.html")[0] == 200
    m = wait_requests(httpd, {A: 7, B: 2})
    assert value(m, "w4a_hosting_php_requests_total", A) == 3
    assert value(m, "w4a_hosting_php_requests_total", B) == 1
    after = set(pids()[n0:])
    assert after and not (after & before), (before, after)
    assert top_json(httpd)["httpd_running"] is True


def test_metrics_php_time_of_a_slow_script_from_the_httpd_side(w4a):
    tree, fpm, httpd = metrics_server(w4a)
    t0 = time.monotonic()
    assert httpd.get("a.example", "/slow.php")[::2] == (200, b"slow")
    took = time.monotonic() - t0
    assert httpd.get("b.example", "/index.html")[0] == 200
    m = wait_requests(httpd, {A: 1, B: 1})
    php_s = value(m, "w4a_hosting_php_seconds_total", A)
    assert 0.3 <= php_s <= took, (php_s, took)
    assert value(m, "w4a_hosting_php_requests_total", A) == 1
    assert value(m, "w4a_hosting_php_seconds_total", B) == 0
    j = top_json(httpd, "--sort", "php_time")
    assert j["hostings"][0]["hosting"] == A
    assert j["hostings"][0]["php_us"] >= 300000


def test_metrics_recent_script_counts_a_fresh_php_file_not_an_old_one(w4a):
    tree, fpm, httpd = metrics_server(w4a, recent=10, files_a={
        "old.php": "<?php echo 'old';\n"})
    old = os.path.join(tree.docroot(A, "a.example"), "old.php")
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    tree.write(A, "a.example", "fresh.php", "<?php echo 'fresh';\n")
    assert httpd.get("a.example", "/old.php")[::2] == (200, b"old")
    assert httpd.get("a.example", "/fresh.php")[::2] == (200, b"fresh")
    assert httpd.get("a.example", "/fresh.php")[::2] == (200, b"fresh")
    # a static file just written is no script
    tree.write(A, "a.example", "new.html", "new\n")
    assert httpd.get("a.example", "/new.html")[0] == 200
    m = wait_requests(httpd, {A: 4})
    assert value(m, "w4a_hosting_php_recent_script_requests_total", A) == 2
    assert value(m, "w4a_hosting_php_requests_total", A) == 3


def test_metrics_backend_errors_of_a_dead_and_a_missing_pool(w4a):
    import socket as so
    tree, fpm, httpd = metrics_server(w4a)
    fpm.stop()
    path = fpm.socket(A)            # a's: a socket nobody listens on
    if os.path.exists(path):
        os.unlink(path)
    s = so.socket(so.AF_UNIX)
    s.bind(path)
    os.chmod(path, 0o666)
    s.close()
    if os.path.exists(fpm.socket(B)):
        os.unlink(fpm.socket(B))    # b's: no socket at all
    httpd.expect_error(r"AH0\d+|W4A00211|W4A00210|attempt to connect|"
                       r"failed to make connection|disabled connection")
    assert httpd.get("a.example", "/hello.php")[0] == 503
    assert httpd.get("b.example", "/hello.php")[0] == 503
    assert httpd.get("b.example", "/index.html")[0] == 200
    m = wait_requests(httpd, {A: 1, B: 2})
    assert value(m, "w4a_hosting_php_backend_errors_total", A) == 1
    assert value(m, "w4a_hosting_php_backend_errors_total", B) == 1
    assert value(m, "w4a_hosting_responses_total", A, "5xx") == 1
    assert value(m, "w4a_hosting_php_requests_total", A) == 1
    # b's never reached a pool: no PHP request, a backend error all the same
    assert value(m, "w4a_hosting_php_requests_total", B) == 0


def test_metrics_refused_counts_our_checks(w4a):
    """A script owned by another user is refused by mod_w4a_vhost's owner
    check (its note): counted as refused and as a 4xx, not as PHP."""
    tree, fpm, httpd = metrics_server(w4a)
    tree.write(A, "a.example", "alien.php", "<?php echo 'x';\n", owner=B)
    httpd.expect_error(r"W4A00106")
    assert httpd.get("a.example", "/alien.php")[0] == 403
    assert httpd.get("a.example", "/index.html")[0] == 200
    # a plain 403 of the site's own is no refusal of ours
    tree.write(A, "a.example", "closed/.htaccess", "Require all denied\n")
    tree.write(A, "a.example", "closed/x.html", "x\n")
    httpd.expect_error(r"AH01630")
    assert httpd.get("a.example", "/closed/x.html")[0] == 403
    m = wait_requests(httpd, {A: 3})
    assert value(m, "w4a_hosting_refused_total", A) == 1
    assert value(m, "w4a_hosting_responses_total", A, "4xx") == 2
    assert value(m, "w4a_hosting_php_requests_total", A) == 0


def test_metrics_full_table_counts_other_and_logs_once(w4a):
    tree, fpm, httpd = metrics_server(w4a, table=1)
    assert httpd.get("a.example", "/index.html")[0] == 200
    wait_requests(httpd, {A: 1})        # a holds the only row
    for _ in range(3):
        assert httpd.get("b.example", "/index.html")[0] == 200
    for _ in range(2):
        assert httpd.get("c.example", "/index.html")[0] == 200
    assert httpd.get("a.example", "/index.html")[0] == 200
    m = wait_requests(httpd, {A: 2, OTHER: 5})
    assert ("w4a_hosting_requests_total", B) not in m
    assert ("w4a_hosting_requests_total", C) not in m
    assert m[("w4a_metrics_table_full_total",)] == 5
    assert m[("w4a_metrics_table_used_rows",)] == 1
    assert value(m, "w4a_hosting_responses_total", OTHER, "2xx") == 5
    logged = re.findall(r"W4A00700: metrics table full \(1 rows, "
                        r"W4AMetricsTableSize\): hosting (w4a\d+)",
                        httpd.log())
    assert logged == [B], httpd.log()   # once per 60 s, node-wide
    j = top_json(httpd)
    rows = {x["hosting"]: x for x in j["hostings"]}
    assert rows[OTHER]["requests"] == 5 and j["full"] == 5


HANDLER_CASES = [
    ("SetHandler w4a-metrics\n", "/"),
    ("AddHandler w4a-metrics .txt\n", "/x.txt"),
    ("RewriteEngine on\nRewriteRule ^x\\.txt$ - [H=w4a-metrics]\n", "/x.txt"),
]


def refused_from_htaccess(httpd, tree, tag):
    tree.write(A, "a.example", "x.txt", "x\n")
    for ht, path in HANDLER_CASES:
        tree.write(A, "a.example", ".htaccess", ht)
        st, _, body = httpd.get("a.example", path)
        assert st == 403, (ht, st, body)
        assert b"w4a_hosting_requests_total" not in body
    assert len(re.findall(tag + r": hosting w4a100010: handler '?w4a-metrics",
                          httpd.log())) == len(HANDLER_CASES), httpd.log()
    m = wait_requests(httpd, {A: len(HANDLER_CASES)})
    assert value(m, "w4a_hosting_refused_total", A) == (
        len(HANDLER_CASES) if tag == "W4A00151" else 0)


def test_metrics_handler_refused_from_htaccess_served_from_location(w4a):
    tree, fpm, httpd = metrics_server(w4a, start=False)
    httpd.expect_error(r"W4A00151")
    httpd.start()
    # mod_w4a_vhost's handler guard: no hosting may name it
    refused_from_htaccess(httpd, tree, "W4A00151")
    # the operator's Location answers, on the node's name and a hosting's
    for host in ("localhost", "b.example"):
        st, h, body = httpd.get(host, "/w4a-metrics")
        assert st == 200 and b"# TYPE w4a_hosting_requests_total counter" \
            in body, (host, body)
        assert h["cache-control"] == "no-store"
    assert httpd.get("localhost", "/w4a-metrics", method="POST")[0] == 405
    st, h, body = httpd.get("localhost", "/w4a-metrics", method="HEAD")
    assert st == 200 and h["content-type"].startswith("text/plain")


def test_metrics_handler_refuses_itself_when_the_handler_guard_lets_it(w4a):
    """An operator who lists w4a-metrics in W4AVhostHandler (a mistake)
    still has the handler's own check: w4a_status_begin, W4A00150."""
    tree, fpm, httpd = metrics_server(w4a, start=False,
                                      extra="W4AVhostHandler w4a-metrics\n")
    httpd.expect_error(r"W4A00150")
    httpd.start()
    refused_from_htaccess(httpd, tree, "W4A00150")


def test_metrics_file_is_roots_only_and_w4a_top_says_so(w4a):
    tree, fpm, httpd = metrics_server(w4a)
    st = os.stat(httpd.shm)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    for user in (A, "www-data"):
        r = subprocess.run(["runuser", "-u", user, "--", TOP, "--file",
                            httpd.shm, "--once"], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 1, (user, r.stdout, r.stderr)
        assert "Permission denied" in r.stderr and "as root" in r.stderr
    # a tenant's PHP cannot open it either
    tree.write(A, "a.example", "peek.php",
               "<?php echo @file_get_contents('%s') === false ? 'no' "
               ": 'yes';\n" % httpd.shm)
    assert httpd.get("a.example", "/peek.php")[::2] == (200, b"no")


def test_w4a_top_text_once_and_rates_while_serving(w4a):
    tree, fpm, httpd = metrics_server(w4a)
    assert httpd.get("b.example", "/index.html")[0] == 200
    wait_requests(httpd, {B: 1})
    # a's requests are sent during w4a-top's sample: a shows a rate
    p = subprocess.Popen([TOP, "--file", httpd.shm, "--once", "--json",
                          "--interval", "3"], stdout=subprocess.PIPE,
                         text=True)
    # the first sample is taken once the file is mapped; send until the
    # process has ended (it then holds the rate of what it saw)
    n = 0
    while p.poll() is None:
        assert httpd.get("a.example", "/index.html")[0] == 200
        n += 1
    j = json.loads(p.stdout.read())
    rows = {x["hosting"]: x for x in j["hostings"]}
    assert rows[A]["requests_per_s"] > 0, j
    assert rows[B]["requests_per_s"] == 0
    assert j["hostings"][0]["hosting"] == A
    r = subprocess.run([TOP, "--file", httpd.shm, "--once", "--interval",
                        "0.1", "--sort", "bytes"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^HOSTING\s+REQ/s", r.stdout, re.M), r.stdout
    assert re.search(r"^%s\s" % A, r.stdout, re.M), r.stdout
    r = subprocess.run([TOP, "--file", httpd.shm, "--sort", "nope"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "unknown key" in r.stderr


def test_w4a_top_live_refreshes_and_follows_a_new_table(w4a):
    """Without --once: a screen every interval until SIGINT; when httpd is
    started anew (a new table replaces the file) it reads the new one."""
    import signal
    tree, fpm, httpd = metrics_server(w4a)
    assert httpd.get("a.example", "/index.html")[0] == 200
    wait_requests(httpd, {A: 1})
    out_path = os.path.join(w4a.root, "top.out")
    with open(out_path, "w") as out:
        p = subprocess.Popen([TOP, "--file", httpd.shm, "--interval", "0.2"],
                             stdout=out, stderr=subprocess.STDOUT)
    try:
        def text():
            with open(out_path, errors="replace") as f:
                return f.read()
        until("two screens of w4a-top", lambda: text().count("HOSTING") >= 2)
        assert re.search(r"^%s\s" % A, text(), re.M), text()
        assert not re.search(r"^%s\s" % C, text(), re.M)
        httpd.stop()
        httpd.start()
        assert httpd.get("c.example", "/index.html")[0] == 200
        until("w4a-top showing c's row of the new table",
              lambda: re.search(r"^%s\s" % C, text().rsplit("HOSTING", 1)[-1],
                                re.M))
        last = text().rsplit("w4a-top:", 1)[-1]
        assert "not running" not in last, last
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(10) == 0


def assert_httpd_t_refuses(httpd, cases):
    """Each (configuration added, message) of cases: httpd -t fails saying
    it; the configuration is put back after."""
    conf = open(httpd.conf).read()
    for bad, msg in cases:
        with open(httpd.conf, "w") as f:
            f.write(conf + bad)
        r = httpd.ctl("-t")
        assert r.returncode != 0 and re.search(msg, r.stdout + r.stderr), \
            (bad, r.stdout + r.stderr)
    with open(httpd.conf, "w") as f:
        f.write(conf)


def test_metrics_directives_are_global_and_checked(w4a):
    tree, fpm, httpd = metrics_server(w4a, start=False)
    assert_httpd_t_refuses(httpd, (
            ("<VirtualHost *:*>\nW4AMetricsTableSize 8\n</VirtualHost>\n",
             r"cannot occur within <VirtualHost> section"),
            ("W4AMetricsTableSize 0\n", r"W4AMetricsTableSize: '0' is not"),
            ("W4AMetricsRecentScript soon\n",
             r"W4AMetricsRecentScript: 'soon' is not"),
            ("W4AMetricsRecentScript ' 5'\n",
             r"W4AMetricsRecentScript: ' 5' is not"),
            ("W4AMetricsTableSize +64\n", r"W4AMetricsTableSize: '\+64' is not")))


def test_metrics_graceful_keeps_the_table_and_says_a_new_size_waits(w4a):
    tree, fpm, httpd = metrics_server(w4a)
    assert httpd.get("a.example", "/index.html")[0] == 200
    wait_requests(httpd, {A: 1})
    with open(httpd.conf, "a") as f:
        f.write("W4AMetricsTableSize 8\n")
    httpd.graceful()
    assert httpd.wait_log(r"W4A00702: W4AMetricsFile/W4AMetricsTableSize/"
                          r"W4AMetricsDomainTableSize changed: the table "
                          r"stays .*metrics.shm \(4096 rows, 16384 domain "
                          r"rows\) until a full restart"), httpd.log()
    assert httpd.get("a.example", "/index.html")[0] == 200
    m = wait_requests(httpd, {A: 2})
    assert m[("w4a_metrics_table_rows",)] == 4096
    # a full restart makes the table anew, with the new size
    httpd.stop()
    httpd.start()
    assert httpd.get("a.example", "/index.html")[0] == 200
    m = wait_requests(httpd, {A: 1})
    assert m[("w4a_metrics_table_rows",)] == 8


# ---------------------------------------------------------------------
# Every module's node-wide counters on the page (w4a_metrics_collect).

from geoip_mmdb import GEOIP_SO, make_mmdb               # noqa: E402
from w4a_harness import HTCOMPAT_SO, MEDIA_SO             # noqa: E402

GUARD_SO = os.path.join(REPO, "modules/guard/.libs/mod_w4a_guard.so")
HTCHECK = os.path.join(REPO, "support/w4a-htcheck")
ALL = OURS + [("w4a_geoip_module", GEOIP_SO),
              ("w4a_htcompat_module", HTCOMPAT_SO),
              ("w4a_media_module", MEDIA_SO),
              ("w4a_guard_module", GUARD_SO)]
NAME = re.compile(r"^w4a_[a-z0-9_]+$")
INI = "<?php echo ini_get('max_execution_time'), \"\\n\";\n"


def page(httpd):
    st, h, body = httpd.get("localhost", "/w4a-metrics")
    assert st == 200, body
    return body.decode()


def families(text):
    """{name: (type, [(labels, value)])}, parsed by prometheus_client's
    parser, after checking the text itself: one # HELP and one # TYPE per
    family, before its samples, every sample of a declared family, names
    valid and Grafana-ready (counters _total, gauges not)."""
    helps, types, seen = {}, {}, set()
    for ln in text.splitlines():
        if ln.startswith("# HELP "):
            n = ln.split()[2]
            assert n not in helps, "HELP twice: " + n
            helps[n] = ln
        elif ln.startswith("# TYPE "):
            _, _, n, t = ln.split()
            assert n not in types and n in helps, "TYPE of " + n
            types[n] = t
        elif ln and not ln.startswith("#"):
            n = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", ln).group(0)
            assert n in types, "sample of an undeclared family: " + ln
            seen.add(n)
    for n, t in types.items():
        assert NAME.match(n), n
        assert t in ("counter", "gauge"), (n, t)
        assert n.endswith("_total") == (t == "counter"), (n, t)
    out = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            fam_name = smp.name
            assert fam_name in types, fam_name
            out.setdefault(fam_name, (types[fam_name], []))[1].append(
                (smp.labels, smp.value))
    return out


def one(fams, name, **labels):
    """The value of the sample of name with exactly these labels (0 when
    the family has no such sample)."""
    assert name in fams, name + " not on the page"
    got = [v for lb, v in fams[name][1] if lb == labels]
    assert len(got) <= 1, (name, labels, fams[name])
    return got[0] if got else 0


def from_src(httpd, src, host, path):
    """One request from source address src: its status."""
    import socket
    s = socket.socket()
    s.settimeout(10)
    try:
        s.bind((src, 0))
        s.connect(("127.0.0.1", httpd.port))
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                   % (path, host)).encode())
        buf = b""
        while b"\r\n" not in buf:
            d = s.recv(4096)
            if not d:
                break
            buf += d
        return int(buf.split(b" ", 2)[1])
    finally:
        s.close()


def all_modules_server(w4a):
    tree = w4a.tree
    tree.site(A, "a.example", {"index.html": "static a\n",
                               "hello.php": HELLO,
                               "slow.php": SLOW % 3000000,
                               "img/x.png": "PNG fake\n",
                               "ht/.htaccess":
                                   "php_value max_execution_time 77\n",
                               "ht/ini.php": INI})
    tree.site(B, "b.example", {"index.html": "static b\n"})
    tree.write(A, "a.example", "alien.php", "<?php echo 'x';\n", owner=B)
    rc, out, index = tree.compile_map([
        tree.line("a.example", A, "a.example"),
        tree.line("b.example", B, "b.example")])
    assert rc == 0, out
    fpm = w4a.fpm()
    rc, out = fpm.generate(index)
    assert rc in (0, 1), out
    fpm.start()
    table = os.path.join(w4a.root, "php8.2.table")
    r = subprocess.run([HTCHECK, "--dump-table", "8.2", "-o", table],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    db = make_mmdb(os.path.join(w4a.root, "country.mmdb"), "country")
    shm = os.path.join(w4a.root, "metrics.shm")
    httpd = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
W4AVhostMediaPrefix media.
W4APHPEngine on
W4APHPSocket {fpm.socket_pattern}
W4APHPHostingLimit 1
W4APHPHostingClientShare off
W4AHtcompatIniTable 8.2 {table}
W4AGeoIPDatabase country {db}
W4AGuardEngine on
W4AGuardRate 1 5
W4AGuardWhitelist 127.0.0.1
W4AMetrics on
W4AMetricsFile {shm}
{hostings_dir_block(tree.base)}{LOCATION}
<Location /w4a-htcompat-status>
    SetHandler w4a-htcompat-status
    Require local
</Location>
""", with_php=True, ours=ALL)
    httpd.shm = shm
    httpd.expect_error(r"W4A00106")      # the owner check's refusal
    httpd.expect_error(r"W4A00260")      # the PHP limit's
    httpd.expect_error(r"W4A00600")      # the ban
    httpd.expect_error(r"W4A00151")      # the handler from .htaccess
    httpd.start()
    return tree, httpd


def test_metrics_page_has_every_modules_counters_after_a_known_mix(w4a):
    import threading
    tree, httpd = all_modules_server(w4a)
    before = families(page(httpd))
    # every loaded module says something, before any request of the mix
    for prefix in ("w4a_hosting_", "w4a_vhost_", "w4a_php_", "w4a_geoip_",
                   "w4a_htcompat_", "w4a_media_", "w4a_guard_"):
        assert [n for n in before if n.startswith(prefix)], prefix
    assert one(before, "w4a_metrics_page_dropped_samples") == 0

    # a vhost refusal: a script of another owner
    assert httpd.get("a.example", "/alien.php")[0] == 403
    # a PHP limit refusal: one slow request holds A's limit of 1
    slow = {}
    t = threading.Thread(target=lambda: slow.setdefault(
        "st", httpd.get("a.example", "/slow.php")[0]))
    t.start()
    until("A's slow request in flight",
          lambda: one(families(page(httpd)), "w4a_php_inflight_requests")
          == 1)
    assert httpd.get("a.example", "/hello.php")[0] == 503
    t.join(30)
    assert slow["st"] == 200
    # an htcompat php_value, delivered to A's pool
    st, _, body = httpd.get("a.example", "/ht/ini.php")
    assert st == 200 and body == b"77\n", body
    # a media request
    assert httpd.get("media.a.example", "/img/x.png")[0] == 200
    # a guard ban: 127.0.0.2 floods B past its burst of 5
    codes = [from_src(httpd, "127.0.0.2", "b.example", "/index.html")
             for _ in range(12)]
    banned = codes.count(429)
    assert banned >= 5 and codes[:5] == [200] * 5, codes
    # the page: every request of the mix logged (A: alien, slow, hello,
    # ini; the media host's request is A's too), then exact figures
    want_a = 5
    until("the mix logged", lambda: value(scrape(httpd),
                                          "w4a_hosting_requests_total", A)
          == want_a)
    text = page(httpd)
    m = families(text)
    # per hosting, by check
    assert one(m, "w4a_hosting_refused_total", hosting=A,
               check="vhost-owner") == 1
    assert one(m, "w4a_hosting_refused_total", hosting=A,
               check="php-limit") == 1
    guard_refused = sum(v for lb, v in m["w4a_hosting_refused_total"][1]
                        if lb["check"] == "guard-ban-rate")
    assert guard_refused == banned, m["w4a_hosting_refused_total"]
    checks = {lb["check"] for lb, v in m["w4a_hosting_refused_total"][1]}
    assert checks == {"vhost-owner", "php-limit", "guard-ban-rate"}, checks
    # each module's node-wide counters
    assert one(m, "w4a_vhost_owner_denied_total") == 1
    assert one(m, "w4a_vhost_media_total") == 1
    assert one(m, "w4a_php_hosting_limit_refused_total") == 1
    assert one(m, "w4a_php_hosting_limit_client_share_refused_total") == 0
    assert one(m, "w4a_php_inflight_requests") == 0
    assert one(m, "w4a_htcompat_applied_total") == 1
    # the same figures as the module's JSON page (node-wide ones)
    st, _, body = httpd.get("localhost", "/w4a-htcompat-status")
    assert st == 200, body
    js = json.loads(body)
    # htcompat worked out PHP_VALUE for slow.php and ht/ini.php; hello.php
    # was refused by the PHP limit (php_fixups) before it got that far
    assert one(m, "w4a_htcompat_requests_total") == js["requests"] == 2
    assert one(m, "w4a_htcompat_applied_total") == js["applied"]
    assert one(m, "w4a_htcompat_refused_total", reason="unknown") == 0
    assert one(m, "w4a_media_served_total") == 1
    assert one(m, "w4a_guard_bans_total") == 1
    assert one(m, "w4a_guard_refused_total") == banned
    assert one(m, "w4a_geoip_errors_total", database="country") == 0
    assert one(m, "w4a_geoip_lookups_total", database="country") > 0
    # a geoip lookup: one request and one more page, two lookups exactly
    n = one(families(page(httpd)), "w4a_geoip_lookups_total",
            database="country")
    assert httpd.get("b.example", "/index.html")[0] == 200
    assert one(families(page(httpd)), "w4a_geoip_lookups_total",
               database="country") == n + 2
    assert one(m, "w4a_metrics_page_dropped_samples") == 0
    # the JSON pages stay; w4a-top has the split too
    j = top_json(httpd)
    rows = {x["hosting"]: x for x in j["hostings"]}
    assert rows[A]["refused"] == 2 and rows[A]["refused_vhost_owner"] == 1 \
        and rows[A]["refused_php_limit"] == 1, rows[A]
    # a hosting's .htaccess cannot name the page
    tree.write(B, "b.example", ".htaccess", "SetHandler w4a-metrics\n")
    st, _, body = httpd.get("b.example", "/")
    assert st == 403 and b"w4a_guard_" not in body, (st, body)
    assert re.search(r"W4A00151: hosting w4a100011: handler '?w4a-metrics",
                     httpd.log()), httpd.log()


def test_metrics_modules_not_loaded_contribute_nothing(w4a):
    """Only mod_w4a_vhost, mod_w4a_php and ours: their families, nobody
    else's, and a page the parser reads; W4AMetrics off: the modules'
    figures still come, no per-hosting ones."""
    tree, fpm, httpd = metrics_server(w4a)
    assert httpd.get("a.example", "/index.html")[0] == 200
    wait_requests(httpd, {A: 1})
    m = families(page(httpd))
    for prefix in ("w4a_geoip_", "w4a_htcompat_", "w4a_media_",
                   "w4a_guard_"):
        assert not [n for n in m if n.startswith(prefix)], prefix
    assert one(m, "w4a_vhost_hits_total") >= 1
    assert "w4a_php_inflight_requests" in m
    assert one(m, "w4a_metrics_page_dropped_samples") == 0
    assert one(m, "w4a_hosting_requests_total", hosting=A) == 1


def test_metrics_off_still_shows_the_modules_counters(w4a):
    tree = w4a.tree
    tree.site(A, "a.example", {"index.html": "static a\n"})
    rc, out, index = tree.compile_map([tree.line("a.example", A,
                                                 "a.example")])
    assert rc == 0, out
    httpd = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
{hostings_dir_block(tree.base)}{LOCATION}
""", ours=OURS).start()
    assert httpd.get("a.example", "/index.html")[0] == 200
    text = page(httpd)
    assert text.startswith("# W4AMetrics is off"), text
    m = families(text)
    assert not [n for n in m if n.startswith("w4a_hosting_")], m.keys()
    assert until("the request counted",
                 lambda: one(families(page(httpd)),
                             "w4a_vhost_hits_total") == 1)
