"""A hosting poisons the fleet's shared memcached (issue 12, vector 5).

Hosting A's PHP runs as A's uid and reaches memcached like the nodes do:
it can set any key to anything.  The nodes seal every value they write
(W4AVhostMemcachedKey: HMAC-SHA256 over the key, an expiry and the value,
docs/mod_w4a_vhost.md "Sealed values"), so that what A writes is a miss,
counted and logged, and B's domain keeps being served from B's tree.

Everything is real: memcached, an SQLite source, httpd; the test plays A
with a memcached client of its own (as A's PHP would).
"""
import json
import os
import re
import stat
import subprocess
import time

from fleet_servers import Memcached, Sqlite, seal, unseal
from test_fleet import A, B, fleet_key, node, put, sites, status
from w4a_harness import HTTPD, VHOSTMAP

WRONG_KEY = b"0123456789abcdef0123456789abcdef"   # A's guess: not the key


def key_bytes(w4a):
    with open(fleet_key(w4a), "rb") as f:
        return f.read().rstrip(b"\r\n\t ")


def start(w4a, ttl="0 0", mc_ttl=None, nodes=1):
    """Sites a.example (A) and b.example (B) in SQLite, a memcached, and
    nodes sealing with the workspace key.  W4AVhostCacheTTL 0: every
    request asks memcached, so each forged value is read at once."""
    tree = w4a.tree
    sites(tree)
    db = Sqlite(w4a.root)
    put(db, tree, "a.example", A, "a.example")
    put(db, tree, "b.example", B, "b.example")
    mc = Memcached().start()
    extra = "W4AVhostMemcachedTTL %s" % mc_ttl if mc_ttl else ""
    hs = [node(w4a, db, mc, ttl=ttl, driver="sqlite3", extra=extra).start()
          for _ in range(nodes)]
    return db, mc, hs


def counters(h):
    return status(h)["counters"]


def until(what, fn, timeout=5.0):
    """Poll fn() until true; fail saying what was waited for."""
    end = time.time() + timeout
    while not fn():
        assert time.time() < end, "timed out waiting for " + what
        time.sleep(0.05)


def invalidate(w4a, mc, *args):
    r = subprocess.run([VHOSTMAP, "invalidate", "--memcached", mc.server,
                        "--key", fleet_key(w4a), *args],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def bump(w4a, mc):
    """invalidate --all; the new generation."""
    out = invalidate(w4a, mc, "--all")
    m = re.match(r"generation (\d+): every name is fetched again\n$", out)
    assert m, out
    return int(m.group(1))


def a_record_for(tree, name):
    """The record line A would like the nodes to believe for name: A's
    hosting and document root.  It passes every record check (uid, base,
    key), so only the seal can refuse it."""
    return "%s a.example %s 100010 100010 %s 8.2 active -" % (
        name, A, tree.docroot(A, "a.example"))


def test_forged_record_for_b_is_a_counted_miss_and_b_keeps_its_tree(w4a):
    db, mc, (h,) = start(w4a)
    try:
        assert h.get("b.example")[2] == b"site b\n"
        assert mc.get("w4a:0:b.example").startswith("w4a1 ")   # sealed
        forged = a_record_for(w4a.tree, "b.example")
        before = counters(h)["memcached_forged"]

        # unsealed, then sealed with a key that is not the nodes'
        for value in (forged, seal(WRONG_KEY, "w4a:0:b.example", forged,
                                   time.time() + 300)):
            mc.set("w4a:0:b.example", value)
            st, hd, body = h.get("b.example")
            assert (st, body, hd["x-hosting"]) == (200, b"site b\n", B)
        assert h.wait_log(r"W4A00140: memcached value of 'b\.example' "
                          r"\(w4a:0:b\.example\) is not sealed by our key; "
                          r"treated as a miss")
        assert counters(h)["memcached_forged"] >= before + 2
        # the node put the true record back, sealed
        _, value = unseal(mc.get("w4a:0:b.example"))
        assert value.split()[2] == B
        assert h.get("a.example")[2] == b"site a\n"

        # a flood of forged values is counted, not logged line by line
        for _ in range(30):
            mc.set("w4a:0:b.example", forged)
            assert h.get("b.example")[2] == b"site b\n"
        assert counters(h)["memcached_forged"] >= before + 32
        lines = re.findall(r"W4A00140", h.log())
        assert len(lines) <= 4, lines     # once per 10 s per process (<= 4)
    finally:
        mc.stop()


def test_a_signed_record_copied_into_b_key_is_refused(w4a):
    db, mc, (h,) = start(w4a)
    try:
        assert h.get("a.example")[2] == b"site a\n"
        signed_a = mc.get("w4a:0:a.example")
        assert signed_a.startswith("w4a1 ")
        # A's own, genuinely sealed record, with its name changed to fit
        # the key check: the seal covers the key, so neither passes
        exp, line = unseal(signed_a)
        renamed = (signed_a[:len(signed_a) - len(line)] + "b.example"
                   + line[len("a.example"):])
        before = counters(h)["memcached_forged"]
        for value in (signed_a, renamed):
            mc.set("w4a:0:b.example", value)
            st, hd, body = h.get("b.example")
            assert (st, body, hd["x-hosting"]) == (200, b"site b\n", B)
        assert counters(h)["memcached_forged"] >= before + 2
        assert h.wait_log(r"W4A00140: memcached value of 'b\.example' ")
        assert h.get("a.example")[2] == b"site a\n"
    finally:
        mc.stop()


def test_an_expired_signed_record_put_back_is_refused(w4a):
    # memcached keeps a record 2 s: what A saved is soon past its expiry
    db, mc, (h,) = start(w4a, mc_ttl="2 2")
    try:
        gen = bump(w4a, mc)
        assert status(h)["source"]["generation"] == gen
        k = "w4a:%d:b.example" % gen
        assert h.get("b.example")[2] == b"site b\n"
        old = mc.get(k)
        exp, _ = unseal(old)
        # the panel suspends B; B's old active record is what A keeps
        put(db, w4a.tree, "b.example", B, "b.example", state="suspended")
        assert invalidate(w4a, mc, "b.example") == "b.example: invalidated\n"
        assert h.get("b.example")[0] == 403
        until("the saved record's expiry to pass", lambda: time.time() > exp,
              timeout=6)
        before = counters(h)["memcached_expired"]
        mc.set(k, old)                          # no memcached expiry
        assert h.get("b.example")[0] == 403     # the database's answer
        assert counters(h)["memcached_expired"] >= before + 1
        assert h.wait_log(r"W4A00141: memcached value of 'b\.example' "
                          r"\(%s\) expired at %d; a replay, treated as a "
                          r"miss" % (re.escape(k), exp))
        assert h.get("a.example")[2] == b"site a\n"
    finally:
        mc.stop()


def test_a_forged_not_found_for_b_does_not_blank_it(w4a):
    db, mc, (h,) = start(w4a)
    try:
        assert h.get("b.example")[2] == b"site b\n"
        before = counters(h)["memcached_forged"]
        for value in ("-", seal(WRONG_KEY, "w4a:0:b.example", "-",
                                time.time() + 30)):
            mc.set("w4a:0:b.example", value)
            # an unknown name just before: the database answered this very
            # second, so a believable not-found would be believed
            assert h.get("nope.example")[0] == 404
            st, hd, body = h.get("b.example")
            assert (st, body, hd["x-hosting"]) == (200, b"site b\n", B)
        assert counters(h)["memcached_forged"] >= before + 2
        assert h.wait_log(r"W4A00140: memcached value of 'b\.example' ")
        # a genuine not-found is still sealed and believed
        assert mc.get("w4a:0:nope.example").startswith("w4a1 ")
        assert unseal(mc.get("w4a:0:nope.example"))[1] == "-"
    finally:
        mc.stop()


def test_a_forged_or_rolled_back_generation_is_ignored(w4a):
    db, mc, (h,) = start(w4a)
    try:
        gen1 = bump(w4a, mc)
        assert status(h)["source"]["generation"] == gen1
        sealed_gen1 = mc.get("w4a:gen")
        assert unseal(sealed_gen1) == (0, str(gen1))
        gen2 = bump(w4a, mc)
        assert gen2 > gen1
        assert status(h)["source"]["generation"] == gen2
        assert h.get("b.example")[2] == b"site b\n"    # cached at gen2
        before = counters(h)
        # a bump (a fleet-wide miss storm), a bump with the wrong key, and
        # the genuine old generation put back (a roll-back)
        for value in ("%d" % (gen2 + 1000), seal(WRONG_KEY, "w4a:gen",
                      "%d" % (gen2 + 1000)), sealed_gen1):
            mc.set("w4a:gen", value)
            assert status(h)["source"]["generation"] == gen2
            for _ in range(3):
                st, hd, body = h.get("b.example")
                assert (st, body, hd["x-hosting"]) == (200, b"site b\n", B)
        after = counters(h)
        assert after["db_queries"] == before["db_queries"]   # no miss storm
        assert after["memcached_hits"] >= before["memcached_hits"] + 9
        assert after["memcached_forged"] >= before["memcached_forged"] + 2
        assert h.wait_log(r"W4A00140: memcached value of the generation "
                          r"\(w4a:gen\) is not sealed by our key")
        # the tool is not fooled either: it moves every node on
        gen3 = bump(w4a, mc)
        assert gen3 > gen2
        assert status(h)["source"]["generation"] == gen3
        assert h.get("a.example")[2] == b"site a\n"
    finally:
        mc.stop()


def test_invalidate_with_the_key_shows_a_panel_change_on_two_nodes(w4a):
    db, mc, (n1, n2) = start(w4a, ttl="1 1", nodes=2)
    try:
        tree = w4a.tree
        for n in (n1, n2):
            assert n.get("a.example")[2] == b"site a\n"
        put(db, tree, "a.example", A, "a2.example")
        # the first time, the generation is absent (no bump yet): the tool
        # moves every node on; then it drops single names
        out = invalidate(w4a, mc, "a.example")
        assert "the generation was absent; every name is fetched again" in out
        for n in (n1, n2):
            until("a.example's new docroot on %s" % n.root,
                  lambda: n.get("a.example")[2] == b"site a2\n")
        put(db, tree, "a.example", A, "a.example")
        out = invalidate(w4a, mc, "a.example")
        assert out == "a.example: invalidated\n", out
        for n in (n1, n2):
            until("a.example's docroot back on %s" % n.root,
                  lambda: n.get("a.example")[2] == b"site a\n")
        put(db, tree, "a.example", A, "a2.example")
        invalidate(w4a, mc, "a.example")
        for n in (n1, n2):
            until("a.example's new docroot on %s" % n.root,
                  lambda: n.get("a.example")[2] == b"site a2\n")
        put(db, tree, "b.example", B, "b.example", state="suspended")
        gen = bump(w4a, mc)
        for n in (n1, n2):
            # whichever process answers the status reads the generation
            for _ in range(6):
                assert status(n)["source"]["generation"] == gen
            until("b.example suspended on %s" % n.root,
                  lambda: n.get("b.example")[0] == 403)
            # (a process may serve its own copy for W4AVhostCacheTTL, 1 s)
            until("a.example's new docroot again on %s" % n.root,
                  lambda: n.get("a.example")[2] == b"site a2\n")
    finally:
        mc.stop()


def test_memcached_without_a_key_is_refused_at_start_unless_told(w4a):
    tree = w4a.tree
    sites(tree)
    db = Sqlite(w4a.root)
    put(db, tree, "a.example", A, "a.example")
    mc = Memcached().start()
    try:
        def refused(key, why):
            h = node(w4a, db, mc, driver="sqlite3", key=key)
            r = subprocess.run([HTTPD, "-f", h.conf, "-k",
                                "start"], capture_output=True, text=True)
            text = r.stdout + r.stderr + h.log()
            assert r.returncode != 0, text
            assert re.search(why, text), text
            h.expect_error(why)

        # no W4AVhostMemcachedKey at all
        refused("", r"W4A00143: W4AVhostMemcached 127\.0\.0\.1:\d+ without "
                r"W4AVhostMemcachedKey")

        key = os.path.join(w4a.root, "k")
        with open(key, "w") as f:
            f.write("x" * 40 + "\n")
        os.chmod(key, 0o644)
        refused(key, r"W4A00142: W4AVhostMemcachedKey %s: mode 0644" % key)
        os.chmod(key, 0o660)
        refused(key, r"W4A00142: W4AVhostMemcachedKey %s: mode 0660" % key)
        with open(key, "w") as f:
            f.write("x" * 31 + "\n")
        os.chmod(key, 0o640)
        refused(key, r"W4A00142: W4AVhostMemcachedKey %s: 31 bytes" % key)
        refused(key + ".none", r"W4A00142: W4AVhostMemcachedKey %s\.none: "
                r"cannot open it" % key)

        # told: plain values, said at start-up, and served
        h = node(w4a, db, mc, driver="sqlite3", key="none").start()
        assert h.wait_log(r"W4A00144: W4AVhostMemcached 127\.0\.0\.1:\d+ "
                          r"without a key \(W4AVhostMemcachedKey none\)")
        assert h.get("a.example")[2] == b"site a\n"
        assert not mc.get("w4a:0:a.example").startswith("w4a1 ")
        assert status(h)["source"]["memcached_sealed"] is False
    finally:
        mc.stop()


def test_keygen_writes_a_key_only_root_and_httpd_read(w4a):
    path = os.path.join(w4a.root, "new.key")
    r = subprocess.run([VHOSTMAP, "keygen", path], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    st = os.stat(path)
    import grp
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (0, grp.getgrnam("www-data").gr_gid)
    text = open(path).read()
    assert re.fullmatch(r"[0-9a-f]{64}\n", text), text
    # never overwrites a key (that would split the fleet)
    r = subprocess.run([VHOSTMAP, "keygen", path], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "exists" in r.stderr, r.stderr
    assert open(path).read() == text
    # invalidate needs --key, or --no-key for nodes told "none"
    r = subprocess.run([VHOSTMAP, "invalidate", "--memcached",
                        "127.0.0.1:1", "x.example"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "--key" in r.stderr, r.stderr
