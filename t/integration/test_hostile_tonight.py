"""A hostile tenant against tonight's features: mod_w4a_metrics,
W4AGuardHostingLimit / req_limit (modules/common/w4a_inflight.c, shared
with mod_w4a_php's PHP limit), the guard's login quota.

A is the attacking hosting, B the victim.  Each test either shows a hole
closed (it fails on the code before the fix) or an attack that does not
work (it fails if the protection it relies on is removed).
"""
import os
import re

import pytest

from w4a_harness import ensure_user, hostings_dir_block, wait_until
from test_guard_hosting_limit import GUARD_SO, Holder, safe_status
from test_metrics import (METRICS_SO, HANDLER_CASES, scrape, value,
                          wait_requests)

A, B = "w4a100010", "w4a100011"


def fnv_bucket(name, buckets):
    """w4a_inflight.c's hash of a name before the fix (FNV-1a, folded),
    public: any tenant can compute it for every name in /etc/passwd."""
    h = 2166136261
    for c in name.encode():
        h = ((h ^ c) * 16777619) & 0xffffffff
    h ^= h >> 15
    return h & (buckets - 1)


# A hosting name of the w4a<uid> kind that hashes to B's bucket of 16384
# (the table's size with the harness's ServerLimit 4): with 100,000
# hostings in a fleet's map every bucket holds about six of them.
COLLIDER = "w4a113584"


def test_collider_really_shares_bs_bucket_before_the_fix():
    assert COLLIDER != B
    assert fnv_bucket(COLLIDER, 16384) == fnv_bucket(B, 16384)


def collision_server(w4a, limit_line):
    """A's record is named COLLIDER (A's uid and tree: the name is what
    the table hashes); B is w4a100011."""
    tree = w4a.tree
    tree.site(A, "a.example", {"index.html": "static a\n"})
    tree.site(B, "b.example", {"index.html": "static b\n"})
    la = tree.line("a.example", A, "a.example").split()
    la[1] = COLLIDER
    rc, out, index = tree.compile_map([" ".join(la),
                                       tree.line("b.example", B,
                                                 "b.example")])
    assert rc == 0, out
    return w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
DirectoryIndex index.html
W4AGuardEngine on
W4AGuardRate 100000 200000
W4AGuardWhitelist 127.0.0.1
{limit_line}
<Location /w4a-guard-status>
    SetHandler w4a-guard-status
    Require local
</Location>
{hostings_dir_block(tree.base)}
""", ours=[("w4a_guard_module", GUARD_SO)]).start()


def test_a_hosting_sharing_bs_bucket_cannot_exhaust_bs_request_limit(w4a):
    """Hole (fixed): the per-hosting request table hashed names into
    buckets and two names of one bucket shared its limit.  A, whose name
    falls in B's bucket, held its 4 requests and B got 503 for every
    request, static ones included, for as long as A liked."""
    h = collision_server(w4a, "W4AGuardHostingLimit 4 7")
    holders = [Holder(h, "a.example") for _ in range(4)]
    try:
        wait_until(lambda: (safe_status(h, COLLIDER) or {}).get("inflight")
                   == 4, "A's 4 requests in flight (guard status)")
        # A is at its own limit...
        st, hd, _ = h.get("a.example", "/index.html")
        assert st == 503 and hd.get("retry-after") == "7", (st, hd)
        # ...and B, which has nothing in flight, is served
        for _ in range(3):
            st, _, body = h.get("b.example", "/index.html")
            assert st == 200 and body == b"static b\n", (st, body)
        s = safe_status(h, B)
        assert s["inflight"] == 0 and s["refused"] == 0, s
    finally:
        for x in holders:
            x.close()


# ---------------------------------------------------------------------
# The login quota: A's .htaccess turns one POST of a visitor into enough
# login POSTs to ban the visitor, and the ban holds for every hosting.

def follow_post(h, src, host, path, hops=10):
    """A browser submitting one form: POST, following 307s (which keep
    the method).  Returns the statuses seen."""
    from test_guard import req
    seen = []
    for _ in range(hops):
        st, hd = req(h, src, host=host, path=path, method="POST")
        seen.append(st)
        if st != 307:
            break
        path = re.sub(r"^https?://[^/]+", "", hd["location"])
    return seen


REDIRECT_LOOP = """RewriteEngine On
RewriteRule ^contact$ /wp-login.php [R=307,L]
RewriteRule ^wp-login\\.php$ /1/wp-login.php [R=307,L]
RewriteRule ^1/wp-login\\.php$ /2/wp-login.php [R=307,L]
RewriteRule ^2/wp-login\\.php$ /3/wp-login.php [R=307,L]
"""


def test_a_hosting_cannot_ban_its_visitors_from_another_hosting(w4a):
    """Hole (fixed): a login-quota ban held node- (and fleet-) wide, so a
    hosting whose pages make its visitors POST to a login path (a 307
    chain of its .htaccess, or a script) banned them from every other
    hosting.  Now the ban holds for the hosting it was earned on only."""
    from test_guard import node, req
    h = node(w4a, rate="100 200", guard="W4AGuardLoginQuota 3 60")
    w4a.tree.write(A, "a.example", ".htaccess", REDIRECT_LOOP)
    src = "127.0.0.21"
    assert req(h, src, host="b.example")[0] == 200
    # the visitor sends one contact form to A: A's 307s make it 4 login
    # POSTs, the 4th over the quota of 3
    seen = follow_post(h, src, "a.example", "/contact")
    assert seen[-1] == 429, seen
    assert h.wait_log(r"W4A00670: client 127\.0\.0\.21 banned from "
                      r"hosting %s only for \d+ s \(strike 1, reason "
                      r"login" % A), h.log()
    # the visitor may well be refused by A (every page of it)...
    st, hd = req(h, src, host="a.example")
    assert st == 429 and "retry-after" in hd, (st, hd)
    # ...B never asked for that: its pages and its own login are served
    st, _ = req(h, src, host="b.example")
    assert st == 200, st
    st, _ = req(h, src, host="b.example", path="/wp-login.php",
                method="POST")
    assert st == 200, st
    assert "W4A00600: client 127.0.0.21" not in h.log(), h.log()


# ---------------------------------------------------------------------
# mod_w4a_metrics' page from a hosting: every route a .htaccess has.

def metrics_node(w4a):
    """A, B; the operator's /w4a-metrics for 192.0.2.10 only (as shipped:
    the test client, 127.0.0.1, is not the monitoring host) and a
    /w4a-metrics-local for a local client; mod_proxy_http and mod_include
    loaded."""
    tree = w4a.tree
    tree.site(A, "a.example", {"index.html": "a\n"})
    tree.site(B, "b.example", {"index.html": "b\n"})
    rc, out, index = tree.compile_map([
        tree.line("a.example", A, "a.example"),
        tree.line("b.example", B, "b.example")])
    assert rc == 0, out
    shm = os.path.join(w4a.root, "metrics.shm")
    h = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
W4AMetrics on
W4AMetricsFile {shm}
{hostings_dir_block(tree.base)}
<Location /w4a-metrics>
    SetHandler w4a-metrics
    Require ip 192.0.2.10
</Location>
<Location /w4a-metrics-local>
    SetHandler w4a-metrics
    Require local
</Location>
""", modules=["proxy", "proxy_http", "include"],
                  ours=[("w4a_metrics_module", METRICS_SO)])
    return tree, h


ROUTES = [
    # an ErrorDocument naming the operator's location (internal redirect)
    ("ErrorDocument 404 /w4a-metrics\n", "/nothing-here"),
    # an internal rewrite to it
    ("RewriteEngine On\nRewriteRule ^stats$ /w4a-metrics [L]\n", "/stats"),
    # a rewrite with a proxy flag to it, on the node's own name
    ("RewriteEngine On\nRewriteRule ^stats$ "
     "http://127.0.0.1:%(port)d/w4a-metrics-local [P]\n", "/stats"),
    # SSI (IncludesNOEXEC is granted) including it as a sub-request
    ("Options +IncludesNOEXEC\nAddOutputFilter INCLUDES .shtml\n",
     "/inc.shtml"),
    ("Options +IncludesNOEXEC\nAddHandler server-parsed .shtml\n",
     "/inc.shtml"),
]
# httpd merges a .htaccess's <If> after the operator's <Location>: a
# Require there would override the one that keeps the page to the
# monitoring host, directly or on any of the routes above
IF_GRANTED = '<If "true">\n    Require all granted\n</If>\n'
ROUTES += [(IF_GRANTED, "/w4a-metrics"),
           ('<If "%{REQUEST_URI} =~ m#metrics#">\n    <RequireAny>\n'
            '        Require ip 127.0.0.1\n    </RequireAny>\n</If>\n',
            "/w4a-metrics")]
ROUTES += [(IF_GRANTED + ht, path) for ht, path in ROUTES[:5]
           if "[P]" not in ht]


def test_no_htaccess_route_reaches_the_metrics_page(w4a):
    tree, httpd = metrics_node(w4a)
    for regex in (r"AH01630: client denied", r"W4A00151: .*'proxy-server'",
                  r"unable to include \"/w4a-metrics\""):
        httpd.expect_error(regex)
    httpd.start()
    tree.write(A, "a.example", "inc.shtml",
               '<!--#include virtual="/w4a-metrics" -->\n')
    # the page is there: for a local client (as httpd's own proxy
    # request is) and a hosting's name, not for this client otherwise
    st, _, body = httpd.get("b.example", "/w4a-metrics-local")
    assert st == 200 and b"w4a_hosting_requests_total" in body
    assert httpd.get("b.example", "/w4a-metrics")[0] == 403
    for ht, path in ROUTES:
        tree.write(A, "a.example", ".htaccess",
                   ht % {"port": httpd.port} if "%(port)" in ht else ht)
        st, _, body = httpd.get("a.example", path)
        assert b"w4a_hosting_requests_total" not in body, (ht, st, body)
        assert st in (403, 404, 500) or (
            st == 200 and b"an error occurred" in body), (ht, st, body)
    # the operator's own Require still decides on a hosting's name, with
    # the tenant's <If> there: granted for the local page, nothing from
    # the hosting needed, and B untouched
    tree.write(A, "a.example", ".htaccess",
               '<If "true">\n    Require all denied\n</If>\n')
    st, _, body = httpd.get("a.example", "/w4a-metrics-local")
    assert st == 200 and b"w4a_hosting_requests_total" in body, (st, body)
    assert httpd.get("b.example", "/index.html")[::2] == (200, b"b\n")
    # the proxy request was refused by mod_w4a_vhost's handler guard
    # (httpd's own request from 127.0.0.1 would have passed Require local)
    assert re.search(r"W4A00151: hosting w4a100010: handler 'proxy-server'",
                     httpd.log())


def ensure_collider_user():
    """COLLIDER as a real hosting user (uid = gid = 113584), as the
    harness makes its hostings' users."""
    ensure_user(COLLIDER, 113584)


def test_a_hosting_sharing_bs_bucket_cannot_take_bs_php_limit(w4a):
    """The same hole in mod_w4a_php's W4APHPHostingLimit (on by default,
    the same table): COLLIDER's slow PHP, at its limit of 2, held B's PHP
    at 503.  Real pools as real users."""
    from test_hostile_limits import Flood, status as php_status, wait_status
    ensure_collider_user()
    tree = w4a.tree
    tree.site(COLLIDER, "a.example",
              {"slow.php": "<?php usleep(2500000); echo 'done';\n"})
    tree.site(B, "b.example",
              {"info.php": "<?php echo 'user=', "
               "posix_getpwuid(posix_geteuid())['name'];\n"})
    rc, out, index = tree.compile_map([
        tree.line("a.example", COLLIDER, "a.example"),
        tree.line("b.example", B, "b.example")])
    assert rc == 0, out
    fpm = w4a.fpm()
    rc, out = fpm.generate(index, extra=("--max-children", "8"))
    assert rc in (0, 1), out
    fpm.start()
    h = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
W4APHPEngine on
W4APHPSocket {fpm.socket_pattern}
W4APHPHostingLimit 2
# one client holds COLLIDER's limit here: no share
W4APHPHostingClientShare off
<Location /w4a-php-status>
    SetHandler w4a-php-status
</Location>
{hostings_dir_block(tree.base)}
""", with_php=True).start()
    flood = Flood(h, "a.example", "/slow.php", 2)
    wait_status(h, lambda s: s["hosting"]["inflight"] == 2,
                "COLLIDER's 2 slow PHP requests in flight", COLLIDER)
    for _ in range(3):
        st, _, body = h.get("b.example", "/info.php")
        assert st == 200 and body == ("user=" + B).encode(), (st, body)
    assert php_status(h, B)["hosting"]["refused"] == 0
    assert sorted(r[0] for r in flood.join()) == [200, 200]


# ---------------------------------------------------------------------
# W4AGuardHostingLimit against one client: the slots are taken before the
# request's body is read, so whoever sends the headers holds a place.

class SlowPost:
    """A POST to host from source address src whose body never comes."""

    def __init__(self, h, src, host, client=None):
        """client: an X-Client header (mod_remoteip, when src is the
        trusted proxy)."""
        import socket
        self.s = socket.socket()
        self.s.settimeout(10)
        self.s.bind((src, 0))
        self.s.connect(("127.0.0.1", h.port))
        extra = "X-Client: %s\r\n" % client if client else ""
        self.s.sendall(("POST /index.html HTTP/1.1\r\nHost: %s\r\n%s"
                        "Content-Length: 100000\r\n\r\nx"
                        % (host, extra)).encode())

    def close(self):
        self.s.close()


def slow_post_answer(x, timeout=10.0):
    """The status line of what the server answered a SlowPost, or None
    if nothing came within timeout seconds."""
    import socket
    x.s.settimeout(timeout)
    try:
        data = x.s.recv(200)
    except socket.timeout:
        return None
    finally:
        x.s.settimeout(10)
    return data.split(b"\r\n", 1)[0].decode()


def test_one_client_cannot_hold_another_hosting_at_its_request_limit(w4a):
    """Hole (fixed): one client (any tenant's PHP, or anyone) held a
    hosting at its W4AGuardHostingLimit/req_limit with as many POSTs whose
    bodies never come (each cut only after RequestReadTimeout's body=20),
    under any rate limit.  Now a client holds at most its share of a
    hosting's places (W4AGuardHostingClientShare, 50%): the hosting's
    other visitors keep the rest; a whitelisted client is held to the
    limit only.  The clients are public addresses behind a trusted proxy
    (mod_remoteip): every loopback address is one client for the share
    (test_hostile_today)."""
    from test_guard import req
    tree = w4a.tree
    tree.site(A, "a.example", {"index.html": "a\n"})
    tree.site(B, "b.example", {"index.html": "static b\n"})
    rc, out, index = tree.compile_map([
        tree.line("a.example", A, "a.example"),
        tree.line("b.example", B, "b.example")])
    assert rc == 0, out
    h = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
DirectoryIndex index.html
W4AGuardEngine on
RemoteIPHeader X-Client
RemoteIPInternalProxy 127.0.0.1
W4AGuardWhitelist 127.0.0.1 192.0.2.43
W4AGuardHostingLimit 4
<Location /w4a-guard-status>
    SetHandler w4a-guard-status
    Require local
</Location>
{hostings_dir_block(tree.base)}
""", ours=[("w4a_guard_module", GUARD_SO)], modules=["remoteip"]).start()
    held = []

    def visit(client, host):
        return req(h, "127.0.0.1", host=host, path="/index.html",
                   headers={"X-Client": client})[0]
    try:
        # the attacker: 4 connections, one request each (far under any
        # rate); it gets its share of B, 2 of 4, the rest answered 503
        for _ in range(2):
            held.append(SlowPost(h, "127.0.0.1", "b.example", "192.0.2.41"))
        wait_until(lambda: (safe_status(h, B) or {}).get("inflight") == 2,
                   "the attacker's 2 requests to B in flight")
        for _ in range(2):
            x = SlowPost(h, "127.0.0.1", "b.example", "192.0.2.41")
            held.append(x)
            line = slow_post_answer(x)
            assert line is not None and " 503 " in line, line
        assert h.wait_log(r"W4A00666: hosting %s: client 192\.0\.2\.41 holds its "
                   r"share of the hosting's requests in flight \(2 of its "
                   r"limit of 4" % B)
        assert (safe_status(h, B) or {}).get("inflight") == 2
        # B's visitors: served
        st = visit("192.0.2.42", "b.example")
        assert st == 200, st
        # and A's, untouched
        st = visit("192.0.2.41", "a.example")
        assert st == 200, st
        # a whitelisted client (a supervisor, an API partner) is held to
        # the hosting's limit only: it takes B's last 2 places
        for _ in range(2):
            held.append(SlowPost(h, "127.0.0.1", "b.example", "192.0.2.43"))
        wait_until(lambda: (safe_status(h, B) or {}).get("inflight") == 4,
                   "the whitelisted client's 2 requests to B in flight")
        st = visit("192.0.2.42", "b.example")
        assert st == 503, st
    finally:
        for x in held:
            x.close()
    # the places come back with the requests
    wait_until(lambda: (safe_status(h, B) or {}).get("inflight") == 0,
               "B's places given back")
    st = visit("192.0.2.41", "b.example")
    assert st == 200, st


# ---------------------------------------------------------------------
# w4a-top (run as root) reads the table's file: a table a hosting could
# have written is not believed.

def test_w4a_top_refuses_a_table_a_tenant_could_have_written(w4a):
    """Hole (hardened): w4a-top trusted any file that looked like a table.
    With W4AMetricsFile in a directory a hosting can write, the hosting
    could put its own table there (its figures, other hostings' names)
    for the operator to act on.  Now a table not owned by root (or the
    reader), or writable by group or others, is refused."""
    import shutil
    import subprocess
    from test_metrics import TOP, metrics_server
    tree, fpm, httpd = metrics_server(w4a)
    wait_requests(httpd, {})            # the table is there and served
    forged = os.path.join(w4a.root, "forged.shm")
    shutil.copyfile(httpd.shm, forged)
    # the genuine one is read
    r = subprocess.run([TOP, "--file", httpd.shm, "--once", "--json",
                        "--interval", "0.05"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    for owner, mode in ((A, 0o600), ("root", 0o622), ("root", 0o660)):
        os.chown(forged, *(lambda pw: (pw.pw_uid, pw.pw_gid))(
            __import__("pwd").getpwnam(owner)))
        os.chmod(forged, mode)
        r = subprocess.run([TOP, "--file", forged, "--once", "--json",
                            "--interval", "0.05"], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 1, (owner, oct(mode), r.stdout, r.stderr)
        assert "is not httpd's table" in r.stderr, r.stderr
    # a FIFO at the path: refused at once (opened without blocking), not
    # a w4a-top that waits forever for a writer
    fifo = os.path.join(w4a.root, "fifo.shm")
    os.mkfifo(fifo, 0o600)
    r = subprocess.run([TOP, "--file", fifo, "--once", "--json",
                        "--interval", "0.05"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "is not a metrics table" in r.stderr, r.stderr
