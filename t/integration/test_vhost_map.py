"""mod_w4a_vhost: Host -> hosting from the compiled map, and bad input."""
import json
import os
import re
import shutil
import subprocess
import threading
import time

from w4a_harness import VHOSTMAP, STATUS_BLOCK, hostings_dir_block, wait_until

A, B, C = "w4a100010", "w4a100011", "w4a100012"

SHOW_ENV = """
Header always set X-Hosting "%{W4A_HOSTING}e"
Header always set X-Domain "%{W4A_DOMAIN}e"
Header always set X-PHP "%{W4A_PHP_VERSION}e"
RewriteEngine On
RewriteRule ^/dr$ - [E=DR:%{DOCUMENT_ROOT},E=CDR:%{CONTEXT_DOCUMENT_ROOT},R=204]
Header always set X-DR "%{DR}e" env=DR
Header always set X-CDR "%{CDR}e" env=CDR
"""


def vhost_server(w4a, extra_conf="", lines=None, unknown="default",
                 interval=0):
    tree = w4a.tree
    tree.site(A, "a.example", {"index.html": "site a\n", "sub/x.txt": "x\n"})
    tree.site(B, "b.example", {"index.html": "site b\n"})
    tree.site(C, "c.example", {"index.html": "site c\n"})
    rc, out, index = tree.compile_map(lines or [
        tree.line("a.example,www.a.example", A, "a.example"),
        tree.line("*.wild.example", B, "b.example", php="7.4"),
        tree.line("deep.x.wild.example", C, "c.example"),
        tree.line("c.example", C, "c.example", php="-"),
        tree.line("gone.example", C, "c.example", state="suspended"),
    ])
    assert rc == 0, out
    httpd = w4a.httpd(f"""
DirectoryIndex index.html
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostMapCheckInterval {interval}
W4AVhostDocRootBase {tree.base}
W4AVhostUnknown {unknown}
{hostings_dir_block(tree.base)}{STATUS_BLOCK}{SHOW_ENV}
{extra_conf}
""").start()
    return tree, index, httpd


def test_vhost_serves_docroot_of_mapped_domain_alias_and_wildcard(w4a):
    tree, index, httpd = vhost_server(w4a)
    for host, body in (("a.example", b"site a\n"), ("www.a.example", b"site a\n"),
                       ("foo.wild.example", b"site b\n"),
                       ("a.b.wild.example", b"site b\n"),
                       ("deep.x.wild.example", b"site c\n")):
        st, h, b = httpd.get(host, "/")
        assert (st, b) == (200, body), host
    st, h, b = httpd.get("a.example", "/sub/x.txt")
    assert (st, b) == (200, b"x\n")
    # a wildcard does not match its bare suffix
    st, h, b = httpd.get("wild.example", "/")
    assert b == b"default server\n"


def test_vhost_host_normalised_case_port_trailing_dot(w4a):
    tree, index, httpd = vhost_server(w4a)
    for host in ("A.EXAMPLE", "a.example:8080", "a.example.", "WWW.A.Example.:80"):
        st, h, b = httpd.get(host, "/")
        assert (st, b) == (200, b"site a\n"), host


def test_vhost_env_vars_and_document_root_come_from_the_map(w4a):
    tree, index, httpd = vhost_server(w4a)
    st, h, b = httpd.get("www.a.example", "/",
                         headers={"W4A_HOSTING": "w4a100011",
                                  "W4A-Hosting": "w4a100011",
                                  "X-Hosting": "evil"})
    assert st == 200
    assert h["x-hosting"] == A
    assert h["x-domain"] == "a.example"
    assert h["x-php"] == "8.2"
    st, h, b = httpd.get("x.wild.example", "/")
    assert (h["x-hosting"], h["x-domain"], h["x-php"]) == (B, "wild.example", "7.4")
    st, h, b = httpd.get("a.example", "/dr")
    assert st == 204
    assert h["x-dr"] == tree.docroot(A, "a.example")
    assert h["x-cdr"] == tree.docroot(A, "a.example")


def test_vhost_unknown_host_default_server(w4a):
    tree, index, httpd = vhost_server(w4a)
    st, h, b = httpd.get("nope.example", "/")
    assert (st, b) == (200, b"default server\n")
    assert httpd.wait_log(r"W4A00102: unknown host 'nope\.example'")


def test_vhost_unknown_host_404_with_error_document(w4a):
    tree, index, httpd = vhost_server(w4a, unknown="404",
                                      extra_conf="ErrorDocument 404 /404.html")
    with open(os.path.join(httpd.root, "htdocs/404.html"), "w") as f:
        f.write("no such site\n")
    st, h, b = httpd.get("nope.example", "/")
    assert (st, b) == (404, b"no such site\n")
    assert httpd.wait_log(r"W4A00102: unknown host 'nope\.example'; answered 404")
    st, h, b = httpd.get("a.example", "/")
    assert (st, b) == (200, b"site a\n")


def test_vhost_suspended_status_and_page(w4a):
    page = os.path.join(w4a.root, "suspended.html")
    with open(page, "w") as f:
        f.write("<h1>This site is suspended</h1>\n")
    tree, index, httpd = vhost_server(
        w4a, extra_conf=f"W4AVhostSuspendedStatus 503\nW4AVhostSuspendedPage {page}")
    st, h, b = httpd.get("gone.example", "/index.html")
    assert st == 503
    assert b"This site is suspended" in b
    assert b"site c" not in b
    assert httpd.wait_log(r"W4A00103: hosting w4a100012 \(domain gone\.example\) "
                          r"is suspended; answered 503")
    st, h, b = httpd.get("c.example", "/")
    assert (st, b) == (200, b"site c\n")


def test_vhost_suspended_default_is_403(w4a):
    tree, index, httpd = vhost_server(w4a)
    st, h, b = httpd.get("gone.example", "/")
    assert st == 403 and b"site c" not in b


# --- bad input: status, log line, and the server keeps serving ------------

def assert_still_serving(httpd):
    st, h, b = httpd.get("a.example", "/")
    assert (st, b) == (200, b"site a\n")


def test_vhost_malformed_hosts_get_400_and_server_keeps_serving(w4a):
    tree, index, httpd = vhost_server(w4a)
    cases = {
        "bad char": b"a.exa$mple",
        "double dot": b"a..example",
        "slash": b"a.example/../../etc",
        "backslash": b"a.example\\x",
        "leading dot": b".a.example",
        "bad port": b"a.example:http",
        "oversize": b"a" * 300 + b".example",
        "space inside": b"a example",
    }
    for name, host in cases.items():
        st, h, b = httpd.raw(b"GET / HTTP/1.1\r\nHost: " + host +
                             b"\r\nConnection: close\r\n\r\n")
        assert st == 400, name
        assert b"site a" not in b
    # Those httpd's own Host check lets through reach ours (W4A00101);
    # the others are refused by httpd core first (AH00550-type lines).
    assert re.search(r"W4A00101: malformed Host 'a\.exa\$mple' \(invalid\)",
                     httpd.log()) or "AH0" in httpd.log()
    assert "W4A00101" in httpd.log()
    assert_still_serving(httpd)


def test_vhost_nul_byte_in_host_is_refused(w4a):
    tree, index, httpd = vhost_server(w4a)
    st, h, b = httpd.raw(b"GET / HTTP/1.1\r\nHost: a.example\x00.evil\r\n"
                         b"Connection: close\r\n\r\n")
    assert st == 400
    assert_still_serving(httpd)


def test_vhost_oversize_host_is_400_with_log_line(w4a):
    tree, index, httpd = vhost_server(w4a)
    host = ".".join(["abcdefghij"] * 25)          # 274 chars, valid labels
    st, h, b = httpd.get(host, "/")
    assert st == 400
    assert httpd.wait_log(r"W4A00101: malformed Host '%s' \(too long\)"
                          % re.escape(host))
    assert_still_serving(httpd)


def test_vhost_ipv6_literal_host_is_unknown_not_an_error(w4a):
    tree, index, httpd = vhost_server(w4a)
    st, h, b = httpd.get("[::1]:8080", "/")
    assert (st, b) == (200, b"default server\n")
    assert httpd.wait_log(r"W4A00102: unknown host '\[::1\]'")
    assert_still_serving(httpd)


def test_vhost_empty_host_on_http10_is_unknown(w4a):
    tree, index, httpd = vhost_server(w4a)
    st, h, b = httpd.raw(b"GET / HTTP/1.0\r\n\r\n")
    assert (st, b) == (200, b"default server\n")
    assert httpd.wait_log(r"W4A00102: no Host in request")
    assert_still_serving(httpd)


def test_vhost_map_line_with_bad_uid_or_base_is_refused_old_index_kept(w4a):
    tree, index, httpd = vhost_server(w4a)
    other = os.path.join(w4a.root, "elsewhere")
    os.makedirs(other)
    rc, out, _ = tree.compile_map([
        tree.line("a.example", A, "a.example"),
        "new.example w4a100010 100 100 %s 8.2 active -" % tree.docroot(A, "a.example"),
        "out.example w4a100010 100010 100010 %s 8.2 active -" % other,
        "x.example w4a100010 abc 100010 %s 8.2 active -" % tree.docroot(A, "a.example"),
        tree.line("a.example", B, "b.example"),
    ])
    assert rc == 1
    assert re.search(r"map\.txt:2: uid 100 is below the minimum 1000", out)
    assert re.search(r"map\.txt:3: document root %s is outside the allowed bases"
                     % re.escape(other), out)
    assert re.search(r"map\.txt:4: uid 'abc' is not a number", out)
    assert re.search(r"map\.txt:5: duplicate name 'a\.example' \(first on line 1\)", out)
    assert "index NOT written" in out
    # the old index is still there and served
    st, h, b = httpd.get("foo.wild.example", "/")
    assert (st, b) == (200, b"site b\n")


def test_vhostmap_prints_a_bad_lines_control_bytes_escaped(w4a):
    """A customer's domain reaches the map through the panel: a name with
    ESC sequences and a BEL in it was echoed raw to the operator's
    terminal by the compiler's error line."""
    tree = w4a.tree
    tree.site(A, "a.example", {"index.html": "a\n"})
    rc, out, _ = tree.compile_map([
        tree.line("a.example", A, "a.example"),
        "x\x1b[2J\x07forged.example w4a100010 100010 100010 %s 8.2 active -"
        % tree.docroot(A, "a.example"),
    ])
    assert rc == 1, out
    assert "\x1b" not in out and "\x07" not in out, repr(out)
    assert re.search(r"map\.txt:2: .*x\\x1b\[2J\\x07forged\.example", out), \
        repr(out)


def test_vhost_record_below_min_uid_refused_at_request_time(w4a):
    """Second lock: an index compiled with a lower --min-uid still cannot
    make the module serve a low uid."""
    tree = w4a.tree
    tree.site(A, "a.example", {"index.html": "site a\n"})
    rc, out, index = tree.compile_map([
        tree.line("a.example", A, "a.example"),
        "low.example w4a100010 33 33 %s 8.2 active -" % tree.docroot(A, "a.example"),
    ], extra=("--min-uid", "0"))
    assert rc == 0, out
    httpd = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostMinUid 1000
<Directory {tree.base}>
    Require all granted
</Directory>
""").start()
    httpd.expect_error(r"W4A00104: hosting w4a100010 \(domain low\.example\): "
                       r"uid 33 / gid 33 below W4AVhostMinUid 1000; refused")
    st, h, b = httpd.get("low.example", "/")
    assert st == 500 and b"site a" not in b
    assert httpd.wait_log(r"W4A00104")
    st, h, b = httpd.get("a.example", "/index.html")
    assert st == 200


def corrupt_variants(good):
    data = open(good, "rb").read()
    yield "empty", b""
    yield "header only", data[:40]
    yield "truncated half", data[:len(data) // 2]
    yield "truncated by one", data[:-1]
    flipped = bytearray(data)
    flipped[len(data) - 5] ^= 0x40
    yield "flipped string byte", bytes(flipped)
    flipped = bytearray(data)
    flipped[100] ^= 0x01
    yield "flipped slot byte", bytes(flipped)
    yield "not an index", b"example.com w4a100010 100010 100010 /x 8.2 active\n" * 20


def test_vhost_corrupt_or_truncated_index_refused_old_kept(w4a):
    tree, index, httpd = vhost_server(w4a)
    httpd.expect_error(r"W4A00110: map index .* refused: ")
    good = index + ".good"
    shutil.copy(index, good)
    for name, blob in corrupt_variants(good):
        tmp = index + ".new"
        with open(tmp, "wb") as f:
            f.write(blob)
        os.rename(tmp, index)
        st, h, b = httpd.get("a.example", "/")
        assert (st, b) == (200, b"site a\n"), name
        st, h, b = httpd.get("foo.wild.example", "/")
        assert (st, b) == (200, b"site b\n"), name
    log = httpd.log()
    for why in ("shorter than an index header", "truncated or appended",
                "checksum mismatch", "bad magic"):
        assert why in log, why
    st, h, b = httpd.get("a.example", "/w4a-vhost-status")
    status = json.loads(b)
    assert status["counters"]["reload_failures"] >= 2
    # the answering process's own (it checked on this request: interval 0)
    assert status["map"]["this_process"]["loaded"] is True
    assert status["map"]["this_process"]["last_error"]
    # a good index is taken again
    os.rename(good, index)
    st, h, b = httpd.get("a.example", "/")
    assert st == 200


def test_vhost_index_replaced_under_load_no_failed_request(w4a):
    tree, index, httpd = vhost_server(w4a, interval=0)
    failures, done, seen_new = [], threading.Event(), []

    def hammer():
        while not done.is_set():
            for host, body in (("a.example", b"site a\n"),
                               ("foo.wild.example", b"site b\n")):
                try:
                    st, h, b = httpd.get(host, "/")
                except OSError as e:
                    failures.append((host, repr(e)))
                    continue
                if (st, b) != (200, body):
                    failures.append((host, st, b[:80]))
            st, h, b = httpd.get("new.example", "/")
            if st == 200 and b == b"site c\n":
                seen_new.append(1)

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        base = [tree.line("a.example,www.a.example", A, "a.example"),
                tree.line("*.wild.example", B, "b.example")]
        for i in range(20):
            extra = [tree.line("new.example", C, "c.example")] if i == 19 else []
            extra += [tree.line("filler%d.example" % j, C, "c.example")
                      for j in range(i * 50)]
            rc, out, _ = tree.compile_map(base + extra)
            assert rc == 0, out
            time.sleep(0.1)             # pacing: one index every 0.1 s
        wait_until(lambda: seen_new, "new.example (only in the last index) "
                   "to be served", 10)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert failures == []
    assert seen_new, "the last index (with new.example) was never served"
    assert re.search(r"W4A00111: map index .* loaded", httpd.log())


def test_vhost_symlink_to_another_hostings_file_is_403(w4a):
    tree, index, httpd = vhost_server(w4a)
    da, db = tree.docroot(A, "a.example"), tree.docroot(B, "b.example")
    os.symlink(os.path.join(db, "index.html"), os.path.join(da, "steal.html"))
    os.symlink(db, os.path.join(da, "stealdir"))
    os.symlink("/etc/passwd", os.path.join(da, "passwd.txt"))
    httpd.expect_error(r"W4A00106: hosting w4a100010: .* belongs to uid")
    for path in ("/steal.html", "/stealdir/index.html", "/stealdir/", "/passwd.txt"):
        st, h, b = httpd.get("a.example", path)
        assert st == 403, path
        assert b"site b" not in b and b"root:" not in b
    assert re.search(r"W4A00106: hosting w4a100010: %s/steal\.html belongs to "
                     r"uid 100011, not the hosting's uid 100010; answered 403"
                     % re.escape(da), httpd.log())
    # own symlinks keep working
    os.symlink(os.path.join(da, "index.html"), os.path.join(da, "mine.html"))
    os.lchown(os.path.join(da, "mine.html"), 100010, 100010)
    st, h, b = httpd.get("a.example", "/mine.html")
    assert (st, b) == (200, b"site a\n")


def test_vhost_status_handler_json_counters(w4a):
    tree, index, httpd = vhost_server(w4a)
    httpd.get("a.example", "/")
    httpd.get("nope.example", "/")
    httpd.get("gone.example", "/")
    httpd.get("a..example", "/")
    st, h, b = httpd.get("a.example", "/w4a-vhost-status")
    assert st == 200 and h["content-type"].startswith("application/json")
    s = json.loads(b)
    c = s["counters"]
    assert c["hits"] >= 3 and c["unknown"] >= 1 and c["suspended"] == 1
    assert c["lookups"] == c["hits"] + c["unknown"] - 0 or c["lookups"] >= 4
    m = s["map"]["this_process"]
    assert m["records"] == 5 and m["names"] == 6
    assert m["generation"] > 0 and m["loaded"] is True


def test_vhost_missing_index_at_startup_does_not_stop_httpd(w4a):
    tree = w4a.tree
    tree.site(A, "a.example", {"index.html": "site a\n"})
    index = os.path.join(w4a.root, "later.index")
    httpd = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostMapCheckInterval 0
<Directory {tree.base}>
    Require all granted
</Directory>
""").start()
    httpd.expect_error(r"W4A00110: map index .*later\.index: cannot stat it")
    st, h, b = httpd.get("a.example", "/")
    assert (st, b) == (200, b"default server\n")
    rc, out, _ = tree.compile_map([tree.line("a.example", A, "a.example")],
                                  index=index)
    assert rc == 0, out
    st, h, b = httpd.get("a.example", "/")
    assert (st, b) == (200, b"site a\n")


def test_vhostmap_lookup_and_check_tool(w4a):
    tree, index, httpd = vhost_server(w4a)
    r = subprocess.run([VHOSTMAP, "lookup", index, "X.Y.Wild.Example.:443"],
                       capture_output=True, text=True)
    assert r.returncode == 0
    assert "matched=*.wild.example" in r.stdout and "hosting=%s" % B in r.stdout
    r = subprocess.run([VHOSTMAP, "lookup", index, "none.example"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    r = subprocess.run([VHOSTMAP, "check", "--check-dirs", "--strict",
                        os.path.join(w4a.root, "map.txt")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_vhost_graceful_restart_with_broken_index_keeps_last_good(w4a):
    tree, index, httpd = vhost_server(w4a)
    httpd.expect_error(r"W4A00110: map index .* refused: .*checksum mismatch")
    data = bytearray(open(index, "rb").read())
    data[-3] ^= 0x20
    with open(index + ".new", "wb") as f:
        f.write(data)
    os.rename(index + ".new", index)
    httpd.graceful()
    assert httpd.wait_log(r"W4A00110: .*checksum mismatch.*keeping the index "
                          r"already loaded")
    for _ in range(3):
        st, h, b = httpd.get("a.example", "/")
        assert (st, b) == (200, b"site a\n")
