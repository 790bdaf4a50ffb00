"""mod_w4a_vhost against docs/mod_w4a_vhost.md: the cases test_vhost_map.py
leaves out (which layer refuses each bad Host, the 253-byte limit, the
second locks at request time, per-vhost engine, Alias precedence, config
errors, exact status counters, the check interval, the log flag).

Each test starts its own httpd with a small config; the harness fails a
test on any [error] or worse in the error log it did not declare.
"""
import json
import os
import re
import subprocess

from w4a_harness import HTTPD, VHOSTMAP, STATUS_BLOCK, hostings_dir_block

A, B, C = "w4a100010", "w4a100011", "w4a100012"

# Publish what the module set, only when it set it.
SHOW = """
Header always set X-Hosting "%{W4A_HOSTING}e" env=W4A_HOSTING
Header always set X-Domain "%{W4A_DOMAIN}e" env=W4A_DOMAIN
Header always set X-PHP "%{W4A_PHP_VERSION}e" env=W4A_PHP_VERSION
Header always set X-Log "%{W4A_LOG}e" env=W4A_LOG
"""


def sites(tree):
    tree.site(A, "a.example", {"index.html": "site a\n", "x.txt": "a x\n"})
    tree.site(B, "b.example", {"index.html": "site b\n"})
    tree.site(C, "c.example", {"index.html": "site c\n"})


def default_lines(tree):
    return [
        tree.line("a.example,www.a.example", A, "a.example", flags="log"),
        tree.line("*.wild.example", B, "b.example", php="7.4"),
        tree.line("*.deep.wild.example", C, "c.example", php="-"),
        tree.line("gone.example", C, "c.example", state="suspended"),
    ]


def server(w4a, conf="", lines=None, interval=0, log_level="info",
           vhost_conf=None, compile_extra=()):
    """Three hostings, a compiled map, an httpd resolving through it.
    vhost_conf replaces the default mod_w4a_vhost block."""
    tree = w4a.tree
    sites(tree)
    rc, out, index = tree.compile_map(lines or default_lines(tree),
                                      extra=compile_extra)
    assert rc == 0, out
    if vhost_conf is None:
        vhost_conf = f"""
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostMapCheckInterval {interval}
W4AVhostDocRootBase {tree.base}
"""
    httpd = w4a.httpd(f"""
DirectoryIndex index.html
{vhost_conf}
{hostings_dir_block(tree.base)}{STATUS_BLOCK}{SHOW}
{conf}
""", log_level=log_level).start()
    return tree, index, httpd


def get_host(httpd, host, path="/"):
    """GET with a raw Host value (bytes)."""
    return httpd.raw(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + host
                     + b"\r\nConnection: close\r\n\r\n")


def status_json(httpd, host="a.example"):
    st, h, b = httpd.get(host, "/w4a-vhost-status")
    assert st == 200, b
    assert h["content-type"].startswith("application/json")
    return json.loads(b)


def assert_still_serving(httpd):
    st, h, b = httpd.get("a.example", "/")
    assert (st, b) == (200, b"site a\n")


# --- bad Host: which layer answers, with which log line --------------------

# httpd core checks the Host before any module sees the request
# (server/vhost.c fix_hostname, server/protocol.c); what it refuses never
# reaches mod_w4a_vhost. It logs at debug only: "AH00550: Client sent
# malformed Host header" (bad characters, "..", "/", bad port, unclosed
# IPv6) or AH00567/AH02427 (NUL or control byte in a header field).
CORE_MALFORMED = [
    b"a.exa$mple", b"a..example", b"a.example/../../etc", b"a.example\\x",
    b"a.example:http", b"a example", b"[::1", b"a.example:99999",
    b"\xc3\xa9.example", b"a.example@b.example", b"a.example..",
]
CORE_CTL = [b"a.example\x00.evil", b"a\x7f.example"]
# What core lets through and our normalisation refuses (W4A00101).
OURS = [
    (b".a.example", "invalid"),
    (b"a" * 300 + b".example", "too long"),          # the brief's 300 chars
    (b".".join([b"abcdefghij"] * 25), "too long"),    # 274, all labels valid
]


def test_vhost_bad_host_400_from_core_or_ours_each_with_its_log_line(w4a):
    tree, index, httpd = server(w4a, log_level="info core:debug")
    for host in CORE_MALFORMED + CORE_CTL:
        n = len(httpd.log())
        st, h, b = get_host(httpd, host)
        new = httpd.log()[n:]
        assert st == 400, host
        assert b"site a" not in b
        if host in CORE_MALFORMED:
            assert "AH00550: Client sent malformed Host header" in new, host
        else:
            assert re.search(r"AH00567|AH02427", new), (host, new)
        assert "W4A001" not in new, host          # never reached us
    for host, why in OURS:
        n = len(httpd.log())
        st, h, b = get_host(httpd, host)
        new = httpd.log()[n:]
        assert st == 400, host
        assert "Bad Request" in b.decode("latin-1")
        assert re.search(r"W4A00101: malformed Host '%s' \(%s\); answered 400"
                         % (re.escape(host.decode()), why), new), (host, new)
    c = status_json(httpd)["counters"]
    assert c["bad_host"] == len(OURS)
    assert c["lookups"] == 1                      # the status request itself
    assert_still_serving(httpd)


def test_vhost_host_of_253_bytes_served_254_refused(w4a):
    name253 = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(name253) == 253
    tree = w4a.tree
    sites(tree)
    tree, index, httpd = server(w4a, lines=default_lines(tree) + [
        tree.line(name253, C, "c.example")])
    # port and one trailing dot are stripped before the length counts
    for host in (name253, name253.upper(), name253 + ":8080", name253 + "."):
        st, h, b = httpd.get(host, "/")
        assert (st, b) == (200, b"site c\n"), host[-12:]
    name254 = "e" + name253
    st, h, b = httpd.get(name254, "/")
    assert st == 400
    assert httpd.wait_log(r"W4A00101: malformed Host '%s' \(too long\)" % name254)
    assert_still_serving(httpd)


def test_vhost_request_line_host_wins_over_host_header(w4a):
    """RFC 9112 3.2.2: an absolute request target's host is the one."""
    tree, index, httpd = server(w4a)
    st, h, b = httpd.raw(b"GET http://a.example/ HTTP/1.1\r\nHost: foo.wild.example"
                         b"\r\nConnection: close\r\n\r\n")
    assert (st, b) == (200, b"site a\n")
    assert h["x-hosting"] == A


# --- resolution ---------------------------------------------------------------

def test_vhost_longest_wildcard_wins_and_bare_suffix_not_matched(w4a):
    tree, index, httpd = server(w4a)
    for host, body, hosting in (("x.deep.wild.example", b"site c\n", C),
                                ("y.x.deep.wild.example", b"site c\n", C),
                                ("deep.wild.example", b"site b\n", B),
                                ("z.wild.example", b"site b\n", B)):
        st, h, b = httpd.get(host, "/")
        assert (st, b, h.get("x-hosting")) == (200, body, hosting), host
    st, h, b = httpd.get("wild.example", "/")
    assert (st, b) == (200, b"default server\n")
    assert "x-hosting" not in h


def test_vhost_env_vars_unset_for_unknown_and_php_dash(w4a):
    tree, index, httpd = server(w4a)
    st, h, b = httpd.get("a.example", "/", headers={"W4A-Log": "0",
                                                    "W4A_PHP_VERSION": "5.6"})
    assert (h["x-hosting"], h["x-domain"], h["x-php"], h["x-log"]) == \
        (A, "a.example", "8.2", "1")
    st, h, b = httpd.get("x.deep.wild.example", "/")
    assert (h["x-hosting"], h["x-domain"]) == (C, "deep.wild.example")
    assert "x-php" not in h and "x-log" not in h          # php "-", no log flag
    st, h, b = httpd.get("nope.example", "/", headers={"W4A-Hosting": A})
    assert b == b"default server\n"
    assert not any(k.startswith("x-") for k in h), h


def test_vhost_env_vars_from_htaccess_are_overwritten_by_the_record(w4a):
    tree, index, httpd = server(w4a, conf="""
Header always set X-Media "%{W4A_MEDIA}e" env=W4A_MEDIA
""")
    # b.example's tree serves *.wild.example (hosting B, PHP 7.4, no log)
    tree.write(B, "b.example", ".htaccess", f"""
SetEnv W4A_HOSTING {A}
SetEnv W4A_PHP_VERSION 5.6
SetEnv W4A_LOG 1
SetEnvIf Request_URI . W4A_MEDIA=1
RewriteEngine On
RewriteRule ^ - [E=W4A_DOMAIN:a.example]
""")
    st, h, b = httpd.get("z.wild.example", "/")
    assert (st, b) == (200, b"site b\n")
    assert (h["x-hosting"], h["x-domain"], h["x-php"]) == \
        (B, "wild.example", "7.4")
    assert "x-log" not in h and "x-media" not in h, h
    # and a hosting with the log flag still has it
    st, h, b = httpd.get("a.example", "/")
    assert (h["x-hosting"], h["x-log"]) == (A, "1")


def test_vhost_log_flag_sets_w4a_log_and_the_w4a_log_note(w4a):
    notes = os.path.join(w4a.root, "notes.log")
    tree, index, httpd = server(w4a, conf=f"""
CustomLog {notes} "%{{Host}}i|%{{W4A_LOG}}e|%{{w4a-log}}n|%{{W4A_HOSTING}}e"
""")
    httpd.get("www.a.example", "/")
    httpd.get("z.wild.example", "/")
    httpd.get("nope.example", "/")
    httpd.stop()
    lines = open(notes).read().splitlines()
    assert sorted(lines) == sorted([              # logged by different threads
        "www.a.example|1|100010:100010:%s/log/apache2|%s" % (tree.home(A), A),
        "z.wild.example|-|-|%s" % B,
        "nope.example|-|-|-",
    ])


def test_vhost_server_alias_wins_over_the_hostings_docroot(w4a):
    shared = os.path.join(w4a.root, "shared")
    os.makedirs(shared)
    os.chmod(shared, 0o755)
    with open(os.path.join(shared, "x.txt"), "w") as f:
        f.write("server alias\n")
    tree, index, httpd = server(w4a, conf=f"""
Alias /x.txt {shared}/x.txt
<Directory {shared}>
    Require all granted
</Directory>
""")
    # root-owned file outside the docroot: the owner check is not for it
    st, h, b = httpd.get("a.example", "/x.txt")
    assert (st, b) == (200, b"server alias\n")
    assert h["x-hosting"] == A
    st, h, b = httpd.get("a.example", "/index.html")
    assert (st, b) == (200, b"site a\n")


def test_vhost_engine_off_in_a_virtualhost_leaves_it_to_httpd(w4a):
    plain = os.path.join(w4a.root, "plain")
    os.makedirs(plain)
    with open(os.path.join(plain, "index.html"), "w") as f:
        f.write("plain vhost\n")
    tree = w4a.tree
    index = os.path.join(w4a.root, "map.index")      # written by server()
    # Map and bases in the main server, merged into both vhosts; the first
    # vhost (default for unknown names) resolves, the second does not.
    tree, index, httpd = server(w4a, vhost_conf=f"""
W4AVhostMap {index}
W4AVhostMapCheckInterval 0
W4AVhostDocRootBase {tree.base}
<VirtualHost *>
    ServerName hostings.invalid
    W4AVhostEngine on
</VirtualHost>
<VirtualHost *>
    ServerName plain.example
    DocumentRoot {plain}
    W4AVhostEngine off
</VirtualHost>
""", lines=default_lines(tree) + [tree.line("plain.example", C, "c.example")])
    st, h, b = httpd.get("plain.example", "/")
    assert (st, b) == (200, b"plain vhost\n")
    assert "x-hosting" not in h
    st, h, b = httpd.get("a.example", "/")
    assert (st, b, h["x-hosting"]) == (200, b"site a\n", A)
    assert "plain.example" not in httpd.log()          # no W4A00102 for it


# --- second locks at request time ----------------------------------------------

def test_vhost_record_outside_docroot_base_is_500_with_log_line(w4a):
    """w4a-vhostmap compiled without --base; the module's
    W4AVhostDocRootBase still refuses the record (W4A00105)."""
    tree = w4a.tree
    sites(tree)
    other = os.path.join(w4a.root, "elsewhere")
    os.makedirs(other)
    os.chmod(other, 0o755)
    with open(os.path.join(other, "index.html"), "w") as f:
        f.write("outside\n")
    os.chown(os.path.join(other, "index.html"), 100010, 100010)
    os.chown(other, 100010, 100010)
    text = os.path.join(w4a.root, "nobase.txt")
    index = os.path.join(w4a.root, "nobase.index")
    with open(text, "w") as f:
        f.write(tree.line("a.example", A, "a.example") + "\n")
        f.write("out.example %s 100010 100010 %s 8.2 active -\n" % (A, other))
    r = subprocess.run([VHOSTMAP, "compile", text, index],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    tree, _, httpd = server(w4a, vhost_conf=f"""
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
""", conf=f"<Directory {other}>\n    Require all granted\n</Directory>")
    httpd.expect_error(r"W4A00105: hosting w4a100010 \(domain out\.example\): "
                       r"document root %s is outside every W4AVhostDocRootBase; "
                       r"refused" % re.escape(other))
    st, h, b = httpd.get("out.example", "/")
    assert st == 500 and b"outside" not in b
    assert httpd.wait_log(r"W4A00105")
    assert status_json(httpd)["counters"]["refused"] == 1
    assert_still_serving(httpd)


def test_vhost_owner_check_holds_whatever_options_htaccess_sets(w4a):
    tree, index, httpd = server(w4a)
    da, db = tree.docroot(A, "a.example"), tree.docroot(B, "b.example")
    tree.write(A, "a.example", ".htaccess", "Options +FollowSymLinks +Indexes\n")
    os.symlink(os.path.join(db, "index.html"), os.path.join(da, "steal.html"))
    os.link(os.path.join(db, "index.html"), os.path.join(da, "hard.html"))
    httpd.expect_error(r"W4A00106: hosting w4a100010: .* belongs to uid 100011")
    for path in ("/steal.html", "/hard.html"):
        n = len(httpd.log())
        st, h, b = httpd.get("a.example", path)
        assert st == 403 and b"site b" not in b, path
        assert re.search(r"W4A00106: hosting w4a100010: %s belongs to uid "
                         r"100011, not the hosting's uid 100010; answered 403"
                         % re.escape(da + path), httpd.log()[n:]), path
    assert status_json(httpd)["counters"]["owner_denied"] == 2
    assert_still_serving(httpd)


def test_vhost_owner_check_off_leaves_symlinks_to_options(w4a):
    tree = w4a.tree
    sites(tree)
    da, db = tree.docroot(A, "a.example"), tree.docroot(B, "b.example")
    os.symlink(os.path.join(db, "index.html"), os.path.join(da, "steal.html"))
    tree, index, httpd = server(w4a, conf="W4AVhostOwnerCheck off")
    st, h, b = httpd.get("a.example", "/steal.html")
    assert (st, b) == (200, b"site b\n")       # Options FollowSymLinks allows it
    assert "W4A00106" not in httpd.log()


def test_vhost_path_tricks_stay_inside_the_docroot(w4a):
    tree, index, httpd = server(w4a)
    httpd.expect_error(r"AH10244: invalid URI path")     # core's 400, not ours
    rel = "w4a100011/var/www/b.example/index.html"
    for path, want in (("/../../../" + rel, 400),
                       ("/%2e%2e/%2e%2e/%2e%2e/" + rel, 400),
                       ("/..%2f..%2f..%2f" + rel, 404),
                       ("/x.txt/../../../../" + rel, 400)):
        st, h, b = httpd.raw(("GET %s HTTP/1.1\r\nHost: a.example\r\n"
                              "Connection: close\r\n\r\n" % path).encode())
        assert st == want and b"site b" not in b, path
    assert_still_serving(httpd)


# --- suspended ---------------------------------------------------------------

def test_vhost_suspended_page_is_html_for_every_path(w4a):
    page = os.path.join(w4a.root, "suspended.html")
    with open(page, "w") as f:
        f.write("<h1>Suspended</h1>\n")
    tree, index, httpd = server(
        w4a, conf=f"W4AVhostSuspendedStatus 451\nW4AVhostSuspendedPage {page}")
    for path in ("/", "/index.html", "/nothing.php", "/w4a-vhost-status"):
        st, h, b = httpd.get("gone.example", path)
        assert (st, b) == (451, b"<h1>Suspended</h1>\n"), path
        assert h["content-type"].startswith("text/html"), path
        assert "x-hosting" not in h
    assert status_json(httpd)["counters"]["suspended"] == 4


# --- configuration -------------------------------------------------------------

BAD_DIRECTIVES = [
    ("W4AVhostSuspendedStatus 200", "expected an HTTP status from 400 to 599"),
    ("W4AVhostSuspendedStatus 4xx", "expected an HTTP status from 400 to 599"),
    ("W4AVhostUnknown maybe", "expected 'default' or '404'"),
    ("W4AVhostDocRootBase datas", "is not an absolute, normalised path"),
    ("W4AVhostDocRootBase /datas/../etc", "is not an absolute, normalised path"),
    ("W4AVhostMapCheckInterval -1", "expected seconds from 0 to 86400"),
    ("W4AVhostMinUid abc", "expected a uid"),
    ("W4AVhostEngine maybe", "W4AVhostEngine must be On or Off"),
]


def test_vhost_bad_directive_arguments_refused_at_config_time(w4a):
    for line, msg in BAD_DIRECTIVES:
        httpd = w4a.httpd(line)
        r = subprocess.run([HTTPD, "-t", "-f", httpd.conf],
                           capture_output=True, text=True)
        assert r.returncode != 0, line
        assert msg in r.stderr, (line, r.stderr)


def test_vhost_engine_without_map_or_unreadable_page_stops_start(w4a):
    for body, msg in (
            ("W4AVhostEngine on",
             r"W4A00122: W4AVhostEngine on for .* but neither W4AVhostMap "
             r"nor W4AVhostDBDQuery set"),
            ("W4AVhostSuspendedPage /nonexistent/page.html",
             r"W4A00121: W4AVhostSuspendedPage /nonexistent/page\.html: "
             r"cannot read it")):
        httpd = w4a.httpd(body)
        httpd.expect_error(msg)
        r = subprocess.run([HTTPD, "-f", httpd.conf, "-k", "start"],
                           capture_output=True, text=True)
        assert r.returncode != 0 or not httpd.wait_log("resuming normal", 2)
        assert httpd.wait_log(msg, 5) or re.search(msg, r.stderr), \
            r.stderr + httpd.log()


# --- status handler and reloading ---------------------------------------------

def test_vhost_status_counters_count_each_outcome_exactly(w4a):
    tree = w4a.tree
    sites(tree)
    tree, index, httpd = server(w4a, lines=default_lines(tree) + [
        "low.example %s 33 33 %s 8.2 active -" % (A, tree.docroot(A, "a.example"))],
        compile_extra=("--min-uid", "0"))
    httpd.expect_error(r"W4A00104: hosting w4a100010 \(domain low\.example\)")
    httpd.expect_error(r"W4A00106: hosting w4a100010: ")
    os.symlink(os.path.join(tree.docroot(B, "b.example"), "index.html"),
               os.path.join(tree.docroot(A, "a.example"), "steal.html"))
    s0 = status_json(httpd)
    # the SQL source's counters (media and the cache layers) stay at zero
    zero = {k: 0 for k in ("media", "cache_hits", "cache_negative_hits",
                           "cache_waits", "memcached_hits",
                           "memcached_misses", "memcached_errors",
                           "bad_cache_values", "memcached_forged",
                           "memcached_expired", "db_queries", "db_errors",
                           "bad_records", "stale_serves", "unavailable",
                           "handlers_refused", "htaccess_refused",
                           "headers_removed", "special_denied")}
    assert s0["counters"] == {"lookups": 1, "hits": 1, "unknown": 0,
                              "suspended": 0, "bad_host": 0, "refused": 0,
                              "owner_denied": 0, "reloads": 0,
                              "reload_failures": 0, **zero}
    want = [("a.example", "/", 200)] * 3 + [
        ("nope.example", "/", 200), ("nope2.example", "/", 200),
        ("gone.example", "/", 403), ("a.example", "/steal.html", 403),
        ("low.example", "/", 500), (".a.example", "/", 400),
        ("a..example", "/", 400)]           # core's 400: never counted
    for host, path, status in want:
        st, h, b = httpd.get(host, path)
        assert st == status, host
    s = status_json(httpd)
    assert s["counters"] == {"lookups": 1 + 8 + 1, "hits": 1 + 6 + 1,
                             "unknown": 2, "suspended": 1, "bad_host": 1,
                             "refused": 1, "owner_denied": 1, "reloads": 0,
                             "reload_failures": 0, **zero}
    # what the answering process has loaded (it checked the index on this
    # very request: interval 0)
    m = s["map"]["this_process"]
    assert (s["map"]["path"], m["loaded"], m["records"], m["names"]) == \
        (index, True, 5, 6)
    assert m["last_error"] is None
    assert 0 <= m["age_seconds"] < 60
    assert s["engine"] is True


def test_vhost_check_interval_holds_new_index_until_due_or_graceful(w4a):
    # one child, so "each process checks once per interval" is observable
    tree, index, httpd = server(w4a, interval=3600, conf="""
ServerLimit 1
StartServers 1
MinSpareThreads 1
MaxSpareThreads 16
ThreadsPerChild 16
MaxRequestWorkers 16
""")
    assert_still_serving(httpd)           # the child's first (and only) check
    rc, out, _ = tree.compile_map(default_lines(tree) + [
        tree.line("new.example", A, "a.example")])
    assert rc == 0, out
    for _ in range(5):
        st, h, b = httpd.get("new.example", "/")
        assert (st, b) == (200, b"default server\n")   # not due for an hour
    httpd.graceful()
    assert httpd.wait_log(r"W4A00111: map index .* loaded: generation \d+, "
                          r"5 records, 6 names")
    for _ in range(5):
        st, h, b = httpd.get("new.example", "/")
        assert (st, b) == (200, b"site a\n")
