"""mod_w4a_guard: per-client rate limits and micro-bans (issue 13, item 3).

Everything is real: httpd nodes (event MPM, several children), the
fleet's memcached, the key file of w4a-vhostmap keygen.  Clients are told
apart by their source address: the test binds its client sockets to
127.0.0.2, 127.0.0.3 ... (the status page is read from 127.0.0.1, which
is whitelisted inline so that reading it never bans the reader).
"""
import json
import os
import re
import resource
import socket
import subprocess
import time

from fleet_servers import Memcached
from w4a_harness import HTTPD, REPO, SANITIZE, VHOSTMAP, hostings_dir_block

GUARD_SO = os.path.join(REPO, "modules/guard/.libs/mod_w4a_guard.so")
BAN = os.path.join(REPO, "support/w4a-ban")
OURS = [("w4a_guard_module", GUARD_SO)]

A, B, C, D = "w4a100010", "w4a100011", "w4a100012", "w4a100013"

# Drupal's .htaccess, short: what is not a file goes to index.php (an
# index.html here: the guard decides before any handler, PHP or not)
DRUPAL_HTACCESS = """RewriteEngine On
RewriteCond %{REQUEST_FILENAME} !-f
RewriteCond %{REQUEST_FILENAME} !-d
RewriteRule ^ index.html [L]
"""

STATUS = """<Location /w4a-guard-status>
    SetHandler w4a-guard-status
    Require local
</Location>
"""


def until(what, fn, timeout=5.0, step=0.02):
    """Poll fn() until it is true; fail saying what was waited for."""
    end = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        assert time.time() < end, "timed out waiting for " + what
        time.sleep(step)


def req(h, src, host="a.example", path="/", method="GET", timeout=5.0,
        headers=None):
    """One request from source address src: (status, headers)."""
    extra = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.bind((src, 0))
        s.connect(("127.0.0.1", h.port))
        s.sendall(("%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
                   "%sContent-Length: 0\r\n\r\n" % (method, path, host,
                                                     extra)).encode())
        buf = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            buf += b
    finally:
        s.close()
    head = buf.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/\d\.\d (\d{3})", head[0])
    hdrs = {}
    for ln in head[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return int(m.group(1)), hdrs


def flood(h, src, n, **kw):
    return [req(h, src, **kw)[0] for _ in range(n)]


def status(h, client=None):
    path = "/w4a-guard-status" + ("?client=" + client if client else "")
    st, _, body = h.get("localhost", path)
    assert st == 200, body
    return json.loads(body)


def key_file(w4a):
    path = os.path.join(w4a.root, "memcached.key")
    if not os.path.exists(path):
        r = subprocess.run([VHOSTMAP, "keygen", path], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    return path


def sites(w4a):
    tree = w4a.tree
    if not os.path.exists(os.path.join(w4a.root, "map.index")):
        tree.site(A, "a.example", {"index.html": "site a\n",
                                   "wp-login.php": "login a\n",
                                   "blog/wp-login.php": "login a blog\n"})
        tree.site(B, "b.example", {"index.html": "site b\n",
                                   "wp-login.php": "login b\n"})
        tree.site(C, "c.example", {"index.html": "site c\n"})
        tree.site(D, "d.example", {"index.html": "drupal\n",
                                   "index.php": "drupal\n",
                                   ".htaccess": DRUPAL_HTACCESS})
        rc, out, _ = tree.compile_map([tree.line("a.example", A, "a.example"),
                                       tree.line("b.example", B, "b.example"),
                                       tree.line("d.example", D, "d.example"),
                                       tree.line("localhost", C,
                                                 "c.example")])
        assert rc == 0, out
    return os.path.join(w4a.root, "map.index")


def node(w4a, guard="", mc=None, rate="1 10", modules=()):
    """An httpd with the hostings A, B (and localhost: the status page)
    and mod_w4a_guard on: rate, whitelist 127.0.0.1, the given lines."""
    index = sites(w4a)
    fleet = ""
    if mc:
        fleet = "W4AGuardMemcached %s\nW4AGuardMemcachedKey %s\n" % (
            mc.server, key_file(w4a))
    h = w4a.httpd(f"""
DirectoryIndex index.html
AddType text/plain .php
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {w4a.tree.base}
{hostings_dir_block(w4a.tree.base)}
W4AGuardEngine on
W4AGuardRate {rate}
W4AGuardWhitelist 127.0.0.1
{fleet}
{guard}
{STATUS}
""", ours=OURS, modules=modules)
    return h.start()


def bans_logged(h, client):
    return re.findall(r"W4A00600: client %s banned .*" % re.escape(client),
                      h.log())


def login_bans_logged(h, client):
    """Bans for one hosting only (a login quota's), logged W4A00670."""
    return re.findall(r"W4A00670: client %s banned from hosting .*"
                      % re.escape(client), h.log())


def test_guard_flooding_client_gets_429_retry_after_logged_once(w4a):
    h = node(w4a)
    codes = flood(h, "127.0.0.2", 30)
    served = codes.index(429)
    # burst 10, refilled 1/s: ten (or one more, refilled meanwhile) pass
    assert served in (10, 11), codes
    assert set(codes[served:]) == {429}, codes
    st, hd = req(h, "127.0.0.2")
    assert st == 429 and 1 <= int(hd["retry-after"]) <= 10, hd
    logged = bans_logged(h, "127.0.0.2")
    assert len(logged) == 1, h.log()
    assert "reason rate" in logged[0] and "answered 429" in logged[0]
    # another client, another hosting: served
    assert req(h, "127.0.0.3", host="b.example")[0] == 200
    assert req(h, "127.0.0.3")[0] == 200


def test_guard_status_counters_are_node_wide_and_exact(w4a):
    h = node(w4a)
    codes = flood(h, "127.0.0.2", 25)
    n200, n429 = codes.count(200), codes.count(429)
    assert n200 + n429 == 25 and n429 > 0, codes
    # charged: the requests served and the one that decided the ban (the
    # others were refused before any charge); the status read itself is
    # charged before it is answered.
    c = status(h)["counters"]
    assert c["requests"] == n200 + 1 + 1, c
    assert c["refused"] == n429 and c["bans"] == 1, c
    # Read many times over new connections, which the node's children
    # take in turns: each figure is exactly one more than the last, as
    # one table in shared memory gives, whichever child answers.
    pids = set()
    for i in range(12):
        c2 = status(h)["counters"]
        assert c2["requests"] == c["requests"] + 1 + i, (i, c, c2)
        assert c2["refused"] == n429 and c2["bans"] == 1, c2
    one = status(h, "127.0.0.2")
    assert one["requests"] == n200 + 1 and one["banned"] is True, one
    assert one["refused"] == n429 - 1 and one["reason"] == "rate", one
    st = status(h)
    assert [b["client"] for b in st["bans"]] == ["127.0.0.2"], st
    kids = subprocess.run(["pgrep", "-P", str(h.pid())], capture_output=True,
                          text=True).stdout.split()
    assert len(kids) >= 2, kids


def test_guard_ban_on_node1_refused_by_node2_within_a_second(w4a):
    mc = Memcached().start()
    try:
        n1 = node(w4a, mc=mc)
        # node 2 would not ban 127.0.0.2 on its own in this test
        n2 = node(w4a, mc=mc, rate="100 200")
        assert req(n2, "127.0.0.3")[0] == 200
        codes = flood(n1, "127.0.0.2", 15)
        assert 429 in codes, codes
        t0 = time.time()
        until("node 2 refusing 127.0.0.2 (banned on node 1)",
              lambda: req(n2, "127.0.0.2")[0] == 429, timeout=3.0)
        took = time.time() - t0
        assert took < 1.0, took
        assert n2.wait_log(r"W4A00601: client 127\.0\.0\.2 banned for \d+ s "
                           r"by the fleet list \(reason rate"), n2.log()
        assert status(n2)["counters"]["fleet_applied"] == 1
        assert status(n1)["counters"]["fleet_published"] == 1
        # the value in memcached is sealed: no plain list for a tenant
        raw = mc.get("w4a-guard:bans")
        assert raw.startswith("w4a1 ") and "127.0.0.2" in raw, raw
        # another client is served on both
        assert req(n1, "127.0.0.3", host="b.example")[0] == 200
        assert req(n2, "127.0.0.3", host="b.example")[0] == 200
    finally:
        mc.stop()


def test_guard_forged_fleet_list_is_refused(w4a):
    """A tenant's PHP reaches memcached: a list it writes (unsealed, or
    sealed with a wrong key) bans nobody."""
    mc = Memcached().start()
    try:
        n1 = node(w4a, mc=mc, guard="W4AGuardFleetPoll 100")
        until_ms = int(time.time() * 1000) + 60000
        mc.set("w4a-guard:bans", "127.0.0.3 %d %d rate -\n"
               % (until_ms - 1000, until_ms))
        # the node reads the list when a request comes, at most every
        # W4AGuardFleetPoll
        until("the forged list read and refused",
              lambda: (req(n1, "127.0.0.3", host="b.example")[0] == 200
                       and re.search(r"W4A00610: .*reading refused: not "
                                     r"sealed by the key", n1.log())),
              step=0.05)
        assert req(n1, "127.0.0.3", host="b.example")[0] == 200
        assert status(n1)["counters"]["fleet_applied"] == 0
    finally:
        mc.stop()


def test_guard_without_memcached_bans_stay_node_wide_and_end(w4a):
    """No W4AGuardMemcached: bans are decided, refused by every child of
    the node, shown by w4a-ban show, and end; nothing tries the fleet."""
    import concurrent.futures
    h = node(w4a, guard="W4AGuardBanTime 2 2 60")
    codes = flood(h, "127.0.0.42", 15)
    assert 429 in codes and not [c for c in codes if c >= 500], codes
    # many connections at once (spread over the children): all refused
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        answers = list(ex.map(lambda _: req(h, "127.0.0.42")[0], range(32)))
    assert answers == [429] * 32, answers
    assert req(h, "127.0.0.43")[0] == 200
    st = status(h)
    assert st["fleet"] == {"memcached": False, "sealed": False}, st
    c = st["counters"]
    assert c["bans"] == 1 and c["fleet_published"] == 0 \
        and c["fleet_errors"] == 0 and c["fleet_applied"] == 0, c
    assert [b["client"] for b in st["bans"]] == ["127.0.0.42"], st["bans"]
    r = subprocess.run([BAN, "show", "--url", "http://127.0.0.1:%d/"
                        "w4a-guard-status" % h.port, "127.0.0.42"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    shown = json.loads(r.stdout)
    assert shown["banned"] is True and shown["bans"] == 1, shown
    assert not re.search(r"W4A0060[358]|W4A00610", h.log()), h.log()
    # the ban ends on its own (2 s): served again
    until("the node-only ban over",
          lambda: req(h, "127.0.0.42")[0] == 200, timeout=6.0, step=0.1)


def keepalive_answers(h, src, n, path="/", method="GET"):
    """n requests on one keep-alive connection from src: the statuses
    answered, and whether the server closed the connection after them."""
    s = socket.socket()
    s.settimeout(5)
    s.bind((src, 0))
    s.connect(("127.0.0.1", h.port))
    codes, closed, buf = [], False, b""
    try:
        for _ in range(n):
            try:
                s.sendall(("%s %s HTTP/1.1\r\nHost: a.example\r\n"
                           "Content-Length: 0\r\n\r\n"
                           % (method, path)).encode())
            except OSError:
                closed = True
                break
            while b"\r\n\r\n" not in buf:
                b = s.recv(65536)
                if not b:
                    break
                buf += b
            if b"\r\n\r\n" not in buf:
                closed = True
                break
            head, _, buf = buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            codes.append(int(lines[0].split()[1]))
            length = 0
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v)
            while len(buf) < length:
                b = s.recv(65536)
                if not b:
                    break
                buf += b
            buf = buf[length:]
        if not closed:
            s.settimeout(1)
            try:
                closed = s.recv(1) == b""
            except socket.timeout:
                closed = False
    finally:
        s.close()
    return codes, closed


def test_guard_banned_client_connection_closed_after_the_refusal(w4a):
    """A banned client holds no connection: closed after the refusal, by
    the rate ban (post_read_request) and by the login quota (fixups)."""
    h = node(w4a, rate="1 3", guard="W4AGuardLoginQuota 1 60")
    flood(h, "127.0.0.44", 5)
    assert req(h, "127.0.0.44")[0] == 429
    codes, closed = keepalive_answers(h, "127.0.0.44", 3)
    assert codes == [429] and closed, (codes, closed)
    # a client in good standing keeps its connection
    codes, closed = keepalive_answers(h, "127.0.0.45", 2)
    assert codes == [200, 200] and not closed, (codes, closed)
    # the login quota's refusal: the POST that bans, on a kept connection
    codes, closed = keepalive_answers(h, "127.0.0.47", 2,
                                      path="/wp-login.php", method="POST")
    assert codes == [200, 429] and closed, (codes, closed)


def test_guard_memcached_killed_no_5xx_local_bans_still_work(w4a):
    mc = Memcached().start()
    n1 = node(w4a, mc=mc)
    n2 = node(w4a, mc=mc)
    mc.kill()
    codes = flood(n1, "127.0.0.4", 20)
    assert 429 in codes and not [c for c in codes if c >= 500], codes
    assert len(bans_logged(n1, "127.0.0.4")) == 1, n1.log()
    assert n1.wait_log(r"W4A00610: fleet ban list in memcached .*bans stay "
                       r"on this node"), n1.log()
    assert status(n1)["counters"]["fleet_errors"] >= 1
    # node 2 did not hear of it (the fleet is down), still serves and
    # still bans on its own
    assert req(n2, "127.0.0.4")[0] == 200
    codes = flood(n2, "127.0.0.5", 20)
    assert 429 in codes and not [c for c in codes if c >= 500], codes
    assert req(n2, "127.0.0.3", host="b.example")[0] == 200


def test_guard_whitelisted_client_counted_never_banned_file_reloads(w4a):
    wl = os.path.join(w4a.root, "supervisors.txt")
    with open(wl, "w") as f:
        f.write("# monitoring\n127.0.0.5/32\n")
    h = node(w4a, guard=f"W4AGuardWhitelistFile {wl}\n"
                        "W4AGuardWhitelistCheck 1")
    codes = flood(h, "127.0.0.5", 40)
    assert codes == [200] * 40, codes
    c = status(h)["counters"]
    assert c["bans"] == 0 and c["whitelisted_over"] >= 29, c
    one = status(h, "127.0.0.5")
    assert one["requests"] == 40 and one["banned"] is False, one
    # a client banned, then whitelisted in the file: served again
    # without a restart, once the children looked at the file
    assert 429 in flood(h, "127.0.0.7", 15)
    with open(wl, "w") as f:
        f.write("127.0.0.5/32 127.0.0.7\n")
    until("127.0.0.7 served after the whitelist reload",
          lambda: flood(h, "127.0.0.7", 8) == [200] * 8, timeout=8.0,
          step=0.2)
    assert h.wait_log(r"W4A00622: whitelist file .* reloaded: 2 networks")
    assert req(h, "127.0.0.3", host="b.example")[0] == 200


def test_guard_login_quota_per_client_per_hosting(w4a):
    h = node(w4a, rate="100 200", guard="W4AGuardLoginQuota 3 60\n"
                                         "W4AGuardLoginPath /custom/login")
    # GETs of the login page do not count
    assert flood(h, "127.0.0.9", 6, path="/wp-login.php") == [200] * 6
    # three POSTs per client and hosting: the fourth bans the client
    first = flood(h, "127.0.0.8", 3, path="/wp-login.php", method="POST")
    assert 429 not in first, first
    st, hd = req(h, "127.0.0.8", path="/blog/wp-login.php", method="POST")
    assert st == 429 and "retry-after" in hd, (st, hd)
    logged = login_bans_logged(h, "127.0.0.8")
    assert len(logged) == 1 and "hosting %s only" % A in logged[0], logged
    assert "reason login" in logged[0], logged
    assert "login quota of 3 POSTs" in logged[0], logged
    assert not bans_logged(h, "127.0.0.8"), h.log()
    # the ban holds for every page of that hosting, not for the others
    # (test_guard_login_scope.py: node and fleet)
    assert req(h, "127.0.0.8")[0] == 429
    assert req(h, "127.0.0.8", host="b.example")[0] == 200
    # another client: its quota for A is its own, and B's is another one
    for host in ("a.example", "b.example"):
        codes = flood(h, "127.0.0.9", 3, host=host, path="/wp-login.php",
                      method="POST")
        assert 429 not in codes, (host, codes)
    assert req(h, "127.0.0.9", host="b.example", path="/custom/login",
               method="POST")[0] == 429
    assert "hosting %s only" % B in login_bans_logged(h, "127.0.0.9")[0]
    c = status(h)["counters"]
    assert c["login_posts"] == 3 + 1 + 3 + 3 + 1 and c["bans"] == 2, c


def login_posts(h):
    return status(h)["counters"]["login_posts"]


def test_guard_login_quota_covers_drupal_and_joomla_paths(w4a):
    h = node(w4a, rate="1000 2000", guard="W4AGuardLoginQuota 100 60")
    # POSTs that are logins: each counted once (not again after the
    # .htaccess rewrite or mod_dir's index), whatever the client
    logins = ["/user/login", "/user/login?destination=node",
              "/?q=user/login", "/?q=user", "/index.php?q=user/login",
              "/index.php?destination=x&q=user%2Flogin", "/?q=user/password",
              "/drupal/?q=user/login", "/index.php?option=com_users"
              "&task=user.login"]
    # and what is not: other Drupal pages, a GET, look-alikes
    others = [("POST", "/?q=node"), ("POST", "/?q=users"),
              ("POST", "/?q=node&x=user/login"), ("POST", "/user/loginx"),
              ("POST", "/index.php?q=%zz"), ("POST", "/?task=user.logout"),
              ("GET", "/?q=user/login"), ("GET", "/user/login")]
    n = login_posts(h)
    for i, path in enumerate(logins):
        st, _ = req(h, "127.0.0.%d" % (20 + i), host="d.example", path=path,
                    method="POST")
        assert st in (200, 404), (path, st)
        now = login_posts(h)
        assert now == n + 1, (path, "counted %d times" % (now - n))
        n = now
    for method, path in others:
        st, _ = req(h, "127.0.0.40", host="d.example", path=path,
                    method=method)
        assert st in (200, 404), (path, st)
        assert login_posts(h) == n, (method, path, "counted as a login")
    # the quota bans a Drupal brute force as it bans a WordPress one
    h2 = node(w4a, rate="1000 2000", guard="W4AGuardLoginQuota 3 60")
    codes = [req(h2, "127.0.0.41", host="d.example", path=p,
                 method="POST")[0]
             for p in ("/user/login", "/?q=user/login", "/index.php?q=user",
                       "/user/login")]
    assert codes[:3] != [429] * 3 and codes[3] == 429, codes
    logged = login_bans_logged(h2, "127.0.0.41")
    assert len(logged) == 1 and "hosting %s only" % D in logged[0], logged
    assert "reason login" in logged[0], logged


def test_guard_login_path_with_query_is_checked_at_start(w4a):
    for bad in ("/x?q", "/x?=v", "/x?q=", "/x?a=1&b=2", "/x?q=a%2Fb",
                "x?q=1"):
        h = w4a.httpd("W4AGuardEngine on\nW4AGuardLoginPath %s\n" % bad,
                      ours=OURS)
        r = subprocess.run([HTTPD, "-f", h.conf, "-t"], capture_output=True,
                           text=True)
        assert r.returncode != 0, (bad, r.stderr)
        assert "W4AGuardLoginPath: %s: " % bad in r.stderr, (bad, r.stderr)


def test_guard_ban_grows_on_repeat_up_to_max(w4a):
    h = node(w4a, rate="1 3", guard="W4AGuardBanTime 1 4 60")
    seen = []
    for strike in range(4):
        until("ban %d decided" % (strike + 1),
              lambda: req(h, "127.0.0.10")[0] == 429, timeout=3.0, step=0)
        st, hd = req(h, "127.0.0.10")
        seen.append(int(hd.get("retry-after", 0)) if st == 429 else 0)
        until("ban %d over" % (strike + 1),
              lambda: req(h, "127.0.0.10")[0] == 200, timeout=8.0, step=0.1)
    durations = [int(m) for m in re.findall(
        r"W4A00600: client 127\.0\.0\.10 banned for (\d+) s", h.log())]
    assert durations == [1, 2, 4, 4], (durations, h.log())
    strikes = re.findall(r"127\.0\.0\.10 banned for \d+ s \(strike (\d+)",
                         h.log())
    assert strikes == ["1", "2", "3", "4"], strikes


def test_guard_w4a_ban_add_list_remove_fleet_wide_and_show(w4a):
    mc = Memcached().start()
    try:
        # rate high: polling the node here must not ban on its own
        n1 = node(w4a, mc=mc, rate="100 200")
        key = key_file(w4a)
        base = ["--memcached", mc.server, "--key", key]
        assert req(n1, "127.0.0.11")[0] == 200

        r = subprocess.run([BAN, "add", *base, "--for", "120", "127.0.0.11"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        until("the node applying w4a-ban add",
              lambda: req(n1, "127.0.0.11")[0] == 429, timeout=2.0)
        r = subprocess.run([BAN, "list", *base], capture_output=True,
                           text=True)
        assert re.search(r"^127\.0\.0\.11 banned 1[12]\d s more, reason "
                         r"admin", r.stdout, re.M), r.stdout + r.stderr
        url = "http://127.0.0.1:%d/w4a-guard-status" % n1.port
        r = subprocess.run([BAN, "show", "--url", url, "127.0.0.11"],
                           capture_output=True, text=True)
        one = json.loads(r.stdout)
        assert one["banned"] is True and one["reason"] == "admin", one
        r = subprocess.run([BAN, "show", "--url", url], capture_output=True,
                           text=True)
        assert json.loads(r.stdout)["counters"]["fleet_applied"] == 1

        r = subprocess.run([BAN, "remove", *base, "127.0.0.11"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        until("the node applying w4a-ban remove",
              lambda: req(n1, "127.0.0.11")[0] == 200, timeout=2.0)
        assert n1.wait_log(r"W4A00602: client 127\.0\.0\.11: ban removed")
        # a wrong key: refused, nothing written
        bad = os.path.join(w4a.root, "bad.key")
        with open(bad, "w") as f:
            f.write("x" * 40)
        os.chmod(bad, 0o600)
        r = subprocess.run([BAN, "list", "--memcached", mc.server, "--key",
                            bad], capture_output=True, text=True)
        assert r.returncode == 1 and "W4A00652" in r.stderr, r.stderr
    finally:
        mc.stop()


def test_guard_fleet_list_of_a_thousand_bans_keeps_the_admin_ban(w4a):
    """A list of 1,001 bans (about 50 KiB) is read, kept and extended:
    the list was refused as forged past 16 KiB (about 300 bans), and the
    next ban published started from an empty list, dropping the admin's."""
    mc = Memcached().start()
    try:
        n1 = node(w4a, mc=mc, rate="100 200",
                  guard="W4AGuardFleetPoll 100")
        key = key_file(w4a)
        base = ["--memcached", mc.server, "--key", key]
        r = subprocess.run([BAN, "add", *base, "--for", "600", "127.0.0.21"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        many = ["10.%d.%d.1" % (i // 250, i % 250) for i in range(1000)]

        def cap():
            # each publish reads and writes the whole list: 1000 of them
            # in one pool took about 250 MB (ASan's shadow memory does
            # not fit in such a limit: no cap there)
            if not SANITIZE:
                resource.setrlimit(resource.RLIMIT_AS, (128 << 20, 128 << 20))

        r = subprocess.run([BAN, "add", *base, "--for", "300", *many],
                           capture_output=True, text=True, timeout=60,
                           preexec_fn=cap)
        assert r.returncode == 0, r.stderr[-2000:]
        r = subprocess.run([BAN, "list", *base], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert len(lines) == 1001, (len(lines), r.stderr)
        assert re.search(r"^127\.0\.0\.21 banned (5\d\d|600) s more, "
                         r"reason admin",
                         r.stdout, re.M), r.stdout[:500]
        assert len(mc.get("w4a-guard:bans")) > 40000
        # the node reads the whole list: the admin's ban and the last one
        # published hold there, another client is served
        until("the node applying the list",
              lambda: req(n1, "127.0.0.21")[0] == 429, timeout=3.0)
        assert req(n1, "127.0.0.22")[0] == 200
        assert "W4A00610" not in n1.log()
        assert status(n1)["counters"]["fleet_applied"] == 1001
    finally:
        mc.stop()


HITS_PHP = """<?php
file_put_contents(__DIR__ . '/hits.txt', "x", FILE_APPEND);
echo "login page\\n";
"""


def test_guard_refused_client_never_reaches_php_even_by_errordocument(w4a):
    """Real PHP-FPM pools: the PHP login page counts its runs in a file.
    Past the login quota the client is answered 429 and PHP does not run,
    not even through the hosting's own `ErrorDocument 429 /wp-login.php`;
    a PHP request costs W4AGuardWeight php more than a static one."""
    tree = w4a.tree
    tree.site(A, "a.example", {"wp-login.php": HITS_PHP,
                               "info.php": "<?php echo 'info';\n",
                               ".htaccess": "ErrorDocument 429 /wp-login.php\n",
                               "index.html": "static a\n"})
    tree.site(B, "b.example", {"index.html": "site b\n"})
    tree.site(C, "c.example", {"index.html": "site c\n"})
    rc, out, index = tree.compile_map([tree.line("a.example", A, "a.example"),
                                       tree.line("b.example", B, "b.example"),
                                       tree.line("localhost", C, "c.example")])
    assert rc == 0, out
    fpm = w4a.fpm()
    rc, out = fpm.generate(index)
    assert rc in (0, 1), out
    fpm.start()
    h = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
W4APHPEngine on
W4APHPSocket {fpm.socket_pattern}
DirectoryIndex index.html
{hostings_dir_block(tree.base)}
W4AGuardEngine on
W4AGuardRate 1 12
W4AGuardWeight post 0
W4AGuardWeight php 2
W4AGuardLoginQuota 3 60
W4AGuardWhitelist 127.0.0.1
{STATUS}
""", with_php=True, ours=OURS).start()
    hits = os.path.join(tree.docroot(A, "a.example"), "hits.txt")

    def runs():
        try:
            return len(open(hits).read())
        except FileNotFoundError:
            return 0

    codes = flood(h, "127.0.0.12", 3, path="/wp-login.php", method="POST")
    assert codes == [200] * 3 and runs() == 3, (codes, runs())
    st, hd = req(h, "127.0.0.12", path="/wp-login.php", method="POST")
    assert st == 429 and "retry-after" in hd, (st, hd)
    assert req(h, "127.0.0.12", path="/wp-login.php")[0] == 429
    assert req(h, "127.0.0.12", path="/wp-login.php/x", method="POST")[0] \
        == 429
    assert runs() == 3, runs()
    assert "hosting %s only" % A in login_bans_logged(h, "127.0.0.12")[0]
    # /wp-login.php/x (path info) runs wp-login.php: it is a login path
    codes = flood(h, "127.0.0.14", 4, path="/wp-login.php/x", method="POST")
    assert codes[:3] == [200] * 3 and codes[3] == 429, codes
    assert runs() == 6, runs()
    # PHP costs 1 + 2: four PHP requests of a burst of 12, not twelve
    codes = flood(h, "127.0.0.13", 8, path="/info.php")
    assert codes.index(429) in (4, 5), codes
    # a static client keeps its full burst; another hosting is served
    codes = flood(h, "127.0.0.15", 8)
    assert codes == [200] * 8, codes
    assert req(h, "127.0.0.15", host="b.example")[0] == 200


def test_guard_counts_the_client_behind_the_load_balancer_only(w4a):
    """mod_remoteip with the load balancer (127.0.0.20) as the only
    internal proxy: the guard counts the client it names; any other
    source naming a client in X-Forwarded-For is counted as itself."""
    h = node(w4a, modules=["remoteip"], guard="RemoteIPHeader X-Forwarded-For\n"
                                             "RemoteIPInternalProxy 127.0.0.20")
    lb = {"X-Forwarded-For": "192.0.2.77"}
    codes = [req(h, "127.0.0.20", headers=lb)[0] for _ in range(15)]
    assert 429 in codes, codes
    assert len(bans_logged(h, "192.0.2.77")) == 1, h.log()
    assert not bans_logged(h, "127.0.0.20")
    # the balancer's other clients are served
    assert req(h, "127.0.0.20", headers={"X-Forwarded-For": "192.0.2.78"})[0] \
        == 200
    # a tenant's PHP (loopback, not a trusted proxy) naming a victim is
    # counted as itself: the victim 192.0.2.79 is never banned
    fake = {"X-Forwarded-For": "192.0.2.79"}
    codes = [req(h, "127.0.0.21", headers=fake)[0] for _ in range(15)]
    assert 429 in codes, codes
    assert len(bans_logged(h, "127.0.0.21")) == 1 and \
        not bans_logged(h, "192.0.2.79"), h.log()
    assert req(h, "127.0.0.20", headers=fake)[0] == 200


def test_guard_tenant_htaccess_cannot_whitelist_itself_even_with_override_all(w4a):
    """Every directive is the server's (RSRC_CONF, main server only): a
    hosting's .htaccess naming one is a 500 for that hosting alone, even
    on a node configured with AllowOverride All; its flooder is still
    banned and the other hosting still served."""
    index = sites(w4a)
    w4a.tree.write(A, "a.example", ".htaccess",
                   "W4AGuardWhitelist 127.0.0.0/8\nW4AGuardEngine off\n")
    h = w4a.httpd(f"""
DirectoryIndex index.html
AddType text/plain .php
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {w4a.tree.base}
{hostings_dir_block(w4a.tree.base, overrides="All")}
W4AGuardEngine on
W4AGuardRate 1 10
W4AGuardWhitelist 127.0.0.1
{STATUS}
""", ours=OURS).start()
    h.expect_error(r"W4AGuardWhitelist not allowed here")
    codes = flood(h, "127.0.0.2", 15)
    assert codes[0] == 500 and 429 in codes, codes
    assert h.wait_log(r"\.htaccess: W4AGuardWhitelist not allowed here")
    assert len(bans_logged(h, "127.0.0.2")) == 1
    assert req(h, "127.0.0.3", host="b.example")[0] == 200
    # a VirtualHost cannot hold the directives either (start-up refused)
    conf = os.path.join(w4a.root, "vhost-guard.conf")
    with open(conf, "w") as f:
        f.write("<VirtualHost 127.0.0.1:1>\nW4AGuardEngine off\n"
                "</VirtualHost>\n")
    r = subprocess.run(["/usr/sbin/apache2", "-t", "-f", h.conf, "-c",
                        "Include " + conf], capture_output=True, text=True)
    assert r.returncode != 0 and re.search(
        r"W4AGuardEngine cannot occur within <VirtualHost> section",
        r.stderr), r.stderr
