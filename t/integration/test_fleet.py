"""mod_w4a_vhost's fleet source: the hosting map in an SQL database
(through mod_dbd), shared through memcached by every node, with a short
per-process cache in front (docs/mod_w4a_vhost.md, "The SQL source").

Everything is real: a MariaDB server and memcached of the test's own, an
SQLite file, two httpd nodes sharing them.
"""
import collections
import json
import os
import re
import subprocess
import threading
import time

from fleet_servers import Mariadb, Memcached, Postgres, Sqlite, QUERY
from w4a_harness import HTTPD, VHOSTMAP, STATUS_BLOCK, hostings_dir_block

A, B, C = "w4a100010", "w4a100011", "w4a100012"
UID = {A: 100010, B: 100011, C: 100012}

SHOW = """
Header always set X-Hosting "%{W4A_HOSTING}e" env=W4A_HOSTING
Header always set X-PHP "%{W4A_PHP_VERSION}e" env=W4A_PHP_VERSION
"""


def fleet_key(w4a):
    """The workspace's memcached key, made by w4a-vhostmap keygen (0640,
    group www-data) the first time."""
    path = os.path.join(w4a.root, "memcached.key")
    if not os.path.exists(path):
        r = subprocess.run([VHOSTMAP, "keygen", path], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    return path


def node(w4a, db, mc=None, ttl="1 1", extra="", driver="mysql", key=None):
    """An httpd resolving through db (and mc, its values sealed with key:
    the workspace's key unless given, "none" for plain values, "" for no
    W4AVhostMemcachedKey line); "localhost"
    (the status page) comes from a text map consulted first, so that
    reading the status never queries the database."""
    tree = w4a.tree
    if mc and key is None:
        key = fleet_key(w4a)
    rc, out, index = tree.compile_map([tree.line("localhost", C,
                                                 "c.example")])
    assert rc == 0, out
    h = w4a.httpd(f"""
DirectoryIndex index.html
DBDriver {driver}
DBDParams "{db.dbd_params}"
DBDMin 0
DBDKeep 2
DBDMax 8
DBDExptime 30
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDBDQuery "{QUERY}"
{"W4AVhostMemcached " + mc.server if mc else ""}
{"W4AVhostMemcachedKey " + key if mc and key else ""}
W4AVhostCacheTTL {ttl}
W4AVhostDocRootBase {tree.base}
W4AVhostUnknown 404
{hostings_dir_block(tree.base)}
{STATUS_BLOCK}
{SHOW}
{extra}
""", modules=("dbd",))
    return h


def sites(tree):
    tree.site(A, "a.example", {"index.html": "site a\n"})
    tree.site(A, "a2.example", {"index.html": "site a2\n"})
    tree.site(B, "b.example", {"index.html": "site b\n"})
    tree.site(C, "c.example", {"index.html": "site c\n"})


def put(db, tree, name, hosting, domain_dir, **kw):
    domain = kw.pop("domain", name.lstrip("*."))
    db.put(name, domain, hosting, UID[hosting],
           tree.docroot(hosting, domain_dir), **kw)


def status(h):
    st, _, body = h.get("localhost", "/w4a-vhost-status")
    assert st == 200, body
    return json.loads(body)


def invalidate(w4a, mc, *names):
    r = subprocess.run([VHOSTMAP, "invalidate", "--memcached", mc.server,
                        "--key", fleet_key(w4a), *names],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def eventually(fn, timeout=6.0):
    end = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() > end:
            return v
        time.sleep(0.1)


def hammer(h, hosts, stop, results, limit=90.0):
    """Request hosts in a loop until stop is set (or limit seconds, so that
    a failed test never leaves it running); results gets statuses."""
    i = 0
    end = time.time() + limit
    while not stop.is_set() and time.time() < end:
        try:
            st, _, _ = h.get(hosts[i % len(hosts)])
        except OSError:
            st = 0
        results.append(st)
        i += 1


def start_hammers(nodes, hosts, n=3):
    stop, results, threads = threading.Event(), [], []
    for h in nodes:
        for _ in range(n):
            t = threading.Thread(target=hammer, args=(h, hosts, stop, results),
                                 daemon=True)
            t.start()
            threads.append(t)
    return stop, results, threads


def stop_hammers(stop, threads):
    stop.set()
    for t in threads:
        t.join(10)


# ---------------------------------------------------------------------

def test_fleet_sqlite_source_serves_names_wildcards_and_refuses_bad_rows(w4a):
    tree = w4a.tree
    sites(tree)
    db = Sqlite(w4a.root)
    put(db, tree, "a.example", A, "a.example")
    put(db, tree, "*.a.example", A, "a2.example", domain="a.example", php=None)
    put(db, tree, "b.example", B, "b.example", state="suspended")
    db.put("evil.example", "evil.example", C, UID[C], "/etc")  # outside base
    db.put("low.example", "low.example", "root", 0, tree.docroot(C, "c.example"))
    h = node(w4a, db, driver="sqlite3").start()
    h.expect_error(r"W4A00134: database record of 'evil\.example' refused: "
                   r"document root /etc is outside the allowed bases")
    h.expect_error(r"W4A00134: database record of 'low\.example' refused: "
                   r"uid 0 is below the minimum 1000")

    st, hd, body = h.get("a.example")
    assert (st, body, hd["x-hosting"], hd["x-php"]) == (200, b"site a\n", A, "8.2")
    st, hd, body = h.get("x.y.a.example")          # the wildcard, no PHP
    assert (st, body) == (200, b"site a2\n") and "x-php" not in hd
    assert h.get("b.example")[0] == 403              # suspended
    assert h.get("nope.example")[0] == 404
    assert h.get("evil.example")[0] == 404
    assert h.get("low.example")[0] == 404
    assert h.wait_log(r"W4A00102: unknown host 'nope\.example'; answered 404")
    assert h.get("a.example")[1]["x-hosting"] == A   # still serving
    c = status(h)["counters"]
    assert c["bad_records"] == 2 and c["db_errors"] == 0
    assert c["db_queries"] >= 6


def test_fleet_two_nodes_serve_panel_changes_after_invalidate(w4a):
    tree = w4a.tree
    sites(tree)
    db = Mariadb(w4a.root).start(first=True)
    mc = Memcached().start()
    try:
        put(db, tree, "a.example", A, "a.example")
        n1 = node(w4a, db, mc).start()
        n2 = node(w4a, db, mc).start()
        pids = (n1.pid(), n2.pid())
        for n in (n1, n2):
            assert n.get("a.example")[2] == b"site a\n"
            assert n.get("new.example")[0] == 404      # cached as unknown

        # the panel adds a domain, changes PHP and docroot, suspends one
        put(db, tree, "new.example", B, "b.example")
        put(db, tree, "a.example", A, "a2.example", php="7.4")
        invalidate(w4a, mc, "new.example", "a.example")
        time.sleep(1.5)          # W4AVhostCacheTTL 1: every process knows
        for n in (n1, n2):
            for _ in range(4):
                assert n.get("new.example")[2] == b"site b\n"
                st, hd, body = n.get("a.example")
                assert (body, hd.get("x-php")) == (b"site a2\n", "7.4")

        put(db, tree, "a.example", A, "a2.example", php="7.4",
            state="suspended")
        out = invalidate(w4a, mc, "a.example", "gone.example")
        assert "a.example: invalidated" in out
        assert "gone.example: was not cached" in out
        time.sleep(1.5)
        for n in (n1, n2):
            for _ in range(4):
                assert n.get("a.example")[0] == 403
                assert n.get("new.example")[0] == 200
        assert (n1.pid(), n2.pid()) == pids               # no restart

        # a whole-map change: one generation bump
        put(db, tree, "new.example", C, "c.example")
        out = invalidate(w4a, mc, "--all")
        gen = int(re.match(r"generation (\d+): every name is fetched again",
                           out).group(1))
        # whichever process answers, the status says the generation in
        # force (it reads it), not the one that process last used
        for n in (n1, n2):
            for _ in range(6):
                assert status(n)["source"]["generation"] == gen
        time.sleep(2.5)          # the generation is re-read every second
        for n in (n1, n2):
            for _ in range(4):
                assert n.get("new.example")[2] == b"site c\n"
    finally:
        mc.stop()
        db.stop()


def test_fleet_miss_storm_costs_one_database_query_per_node(w4a):
    tree = w4a.tree
    sites(tree)
    db = Mariadb(w4a.root).start(first=True)
    mc = Memcached().start()
    try:
        n1 = node(w4a, db, mc, ttl="30 30").start()
        n2 = node(w4a, db, mc, ttl="30 30").start()
        put(db, tree, "storm.example", C, "c.example")
        before = db.executes()
        results = []
        barrier = threading.Barrier(48)

        def one(n):
            barrier.wait()
            for _ in range(5):
                results.append(n.get("storm.example")[0])

        threads = [threading.Thread(target=one, args=(n,))
                   for n in (n1, n2) for _ in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results.count(200) == 240, results
        queries = [status(n)["counters"]["db_queries"] for n in (n1, n2)]
        assert all(q <= 1 for q in queries), queries
        assert 1 <= sum(queries) <= 2
        # the database's own count agrees
        assert db.executes() - before == sum(queries)
    finally:
        mc.stop()
        db.stop()


def test_fleet_memcached_down_under_load_costs_speed_not_errors(w4a):
    tree = w4a.tree
    sites(tree)
    db = Mariadb(w4a.root).start(first=True)
    mc = Memcached().start()
    try:
        for name, hosting, d in (("a.example", A, "a.example"),
                                 ("b.example", B, "b.example"),
                                 ("*.c.example", C, "c.example")):
            put(db, tree, name, hosting, d)
        n1 = node(w4a, db, mc).start()
        n2 = node(w4a, db, mc).start()
        for n in (n1, n2):
            n.expect_error(r"W4A00130: memcached 127\.0\.0\.1:\d+: .* failed")
        hosts = ["a.example", "b.example", "x.c.example"]
        stop, results, threads = start_hammers((n1, n2), hosts)
        time.sleep(1.5)
        mc.kill()
        time.sleep(3)
        put(db, tree, "late.example", A, "a2.example")  # found without memcached
        assert n1.get("late.example")[2] == b"site a2\n"
        mc.start()
        time.sleep(3)
        stop_hammers(stop, threads)
        assert len(results) > 100
        assert set(results) == {200}, {s: results.count(s) for s in set(results)}
        for n in (n1, n2):
            assert n.wait_log(r"W4A00130: memcached 127\.0\.0\.1:\d+: .* failed")
        # back in use without a restart
        before = [status(n)["counters"]["memcached_hits"] for n in (n1, n2)]
        time.sleep(1.5)
        for n in (n1, n2):
            for h in hosts:
                assert n.get(h)[0] == 200
        after = [status(n)["counters"]["memcached_hits"] for n in (n1, n2)]
        assert after[0] > before[0] and after[1] > before[1]
    finally:
        mc.stop()
        db.stop()


def test_fleet_database_down_serves_known_and_503_for_unknown(w4a):
    tree = w4a.tree
    sites(tree)
    db = Mariadb(w4a.root).start(first=True)
    mc = Memcached().start()
    try:
        put(db, tree, "a.example", A, "a.example")
        put(db, tree, "b.example", B, "b.example")
        n1 = node(w4a, db, mc).start()
        n1.expect_error(r"W4A00131: database lookup of '[^']+' failed")
        n1.expect_error(r"AH0\d+: .*(dbd|mysql|DBD|MySQL|MariaDB|connect)")
        n1.expect_error(r"W4A00130: memcached [^ ]+: .* failed")  # killed below
        for h in ("a.example", "b.example"):
            assert n1.get(h)[0] == 200
        assert n1.get("unknown.example")[0] == 404     # before the outage

        stop, results, threads = start_hammers((n1,), ["a.example",
                                                       "b.example"])
        time.sleep(1)
        db.kill()
        time.sleep(3)
        # memcached still has the known ones; an unknown name is a 503
        st, hd, _ = n1.get("unknown.example")
        assert st == 503 and hd.get("retry-after") == "5"
        assert n1.wait_log(r"W4A00133: host 'unknown\.example' unknown while "
                           r"the database is unavailable; answered 503")
        # memcached gone too: the processes' last known records still serve
        mc.kill()
        time.sleep(2)
        mc.start()
        db.start()
        put(db, tree, "added.example", C, "c.example")
        assert eventually(lambda: n1.get("added.example")[0] == 200, 10)
        stop_hammers(stop, threads)
        bad = [s for s in results if s != 200]
        # a process that never saw a record cannot serve it with both
        # backends down: those are the only 503s allowed
        assert not [s for s in bad if s != 503], bad
        assert results.count(200) > 20 * max(1, len(bad))
        c = status(n1)["counters"]
        assert c["db_errors"] >= 1 and c["unavailable"] >= 1
        assert n1.wait_log(r"W4A00131: database lookup of '[^']+' failed")
    finally:
        mc.stop()
        db.stop()


def test_fleet_memcached_value_is_checked_like_the_database(w4a):
    tree = w4a.tree
    sites(tree)
    db = Sqlite(w4a.root)
    mc = Memcached().start()
    try:
        put(db, tree, "a.example", A, "a.example")
        # plain values (a node told so): their records are still checked;
        # sealed ones are test_hostile_memcached's
        h = node(w4a, db, mc, driver="sqlite3", key="none").start()
        assert h.wait_log(r"W4A00144: W4AVhostMemcached 127\.0\.0\.1:\d+ "
                          r"without a key")
        assert h.get("a.example")[2] == b"site a\n"
        value = mc.get("w4a:0:a.example")
        assert value and value.split()[:3] == ["a.example", "a.example", A]
        # someone writes another tenant's docroot, or /etc, into memcached
        mc.set("w4a:0:a.example", value.replace(
            tree.docroot(A, "a.example"), "/etc"))
        time.sleep(1.2)
        st, _, body = h.get("a.example")
        assert (st, body) == (200, b"site a\n")          # from the database
        assert h.wait_log(r"W4A00135: memcached value of 'a\.example' refused "
                          r"\(document root /etc is outside the allowed bases\)")
        assert status(h)["counters"]["bad_cache_values"] >= 1
    finally:
        mc.stop()


def test_fleet_configuration_errors_are_refused_at_start(w4a):
    tree = w4a.tree
    sites(tree)
    h = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostDBDQuery "SELECT 1"
""")
    r = subprocess.run([HTTPD, "-t", "-f", h.conf],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "W4AVhostDBDQuery: mod_dbd is not loaded" in r.stderr
    h2 = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostDBDQuery "SELECT 1"
""", modules=("dbd",))
    r = subprocess.run([HTTPD, "-t", "-f", h2.conf],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "W4AVhostDBDQuery: the query must take the name as %s" in r.stderr
    h3 = w4a.httpd(f"""
W4AVhostMemcached 127.0.0.1:99999
""", modules=("dbd",))
    r = subprocess.run([HTTPD, "-t", "-f", h3.conf],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "port is not a number from 1 to 65535" in r.stderr


def test_fleet_postgresql_source_serves_and_rides_out_a_crash(w4a):
    tree = w4a.tree
    sites(tree)
    db = Postgres(w4a.root).start(first=True)
    try:
        put(db, tree, "a.example", A, "a.example")
        put(db, tree, "*.b.example", B, "b.example", php="7.4")
        db.put("evil.example", "evil.example", C, UID[C], "/etc")
        h = node(w4a, db, driver="pgsql").start()
        h.expect_error(r"W4A00134: database record of 'evil\.example' refused")
        h.expect_error(r"W4A00131: database lookup of '[^']+' failed")
        h.expect_error(r"AH0\d+: .*(dbd|DBD|pgsql|connect|server)")
        st, hd, body = h.get("a.example")
        assert (st, body, hd["x-hosting"]) == (200, b"site a\n", A)
        st, hd, body = h.get("x.b.example")
        assert (st, body, hd["x-php"]) == (200, b"site b\n", "7.4")
        assert h.get("evil.example")[0] == 404
        assert h.get("nope.example")[0] == 404

        stop, results, threads = start_hammers((h,), ["a.example",
                                                      "x.b.example"])
        time.sleep(1.5)
        db.kill()
        time.sleep(2.5)
        # no memcached here: the processes' own last known records serve
        assert h.get("unknown.example")[0] == 503
        db.start()
        put(db, tree, "late.example", C, "c.example")
        assert eventually(lambda: h.get("late.example")[0] == 200, 15)
        stop_hammers(stop, threads)
        assert results and not [s for s in results if s not in (200, 503)]
        # a process that never saw a record cannot serve it with the
        # database down; the rest is served
        assert results.count(200) > 20 * max(1, len(results) - results.count(200))
        c = status(h)["counters"]
        assert c["db_errors"] >= 1 and c["stale_serves"] >= 1
    finally:
        db.stop()


def test_fleet_two_memcached_servers_share_the_keys_and_one_can_die(w4a):
    tree = w4a.tree
    sites(tree)
    db = Sqlite(w4a.root)
    mc1, mc2 = Memcached().start(), Memcached().start()
    try:
        names = ["n%d.example" % i for i in range(40)]
        for name in names:
            put(db, tree, name, A, "a.example")

        class Both:                       # node() takes one server object
            server = "%s %s" % (mc1.server, mc2.server)
        n1 = node(w4a, db, Both, driver="sqlite3").start()
        n1.expect_error(r"W4A00130: memcached .* failed")
        for name in names:
            assert n1.get(name)[2] == b"site a\n"
        items = [int(m.stats()["curr_items"]) for m in (mc1, mc2)]
        # consistent hashing spreads 40 names over both servers
        assert all(n >= 5 for n in items) and sum(items) >= 40, items
        stop, results, threads = start_hammers((n1,), names[:20])
        time.sleep(1.5)
        mc2.kill()
        time.sleep(3)
        stop_hammers(stop, threads)
        assert results and set(results) == {200}, set(results)
        c = status(n1)["counters"]
        assert c["memcached_errors"] >= 1 and c["memcached_hits"] >= 1
    finally:
        mc1.stop()
        mc2.stop()


class _Params:
    """db with other DBDParams."""

    def __init__(self, db, extra):
        self.dbd_params = db.dbd_params + extra


def test_fleet_mariadb_restart_every_lookup_works_after_it(w4a):
    """apr_dbd_mysql reconnects a dropped connection by itself unless
    told not to (reconnect=0), and a reconnected connection has lost
    mod_dbd's prepared statements: after a database restart, the lookups
    that land on it fail (503 for a name not cached) until the process
    exits.  With reconnect=0, as conf/w4a-vhost-fleet.conf has it, mod_dbd
    drops the dead connection and opens a new one: once the database is
    back, every lookup works."""
    tree = w4a.tree
    sites(tree)
    db = Mariadb(w4a.root).start(first=True)
    try:
        put(db, tree, "a.example", A, "a.example")
        extra = os.environ.get("W4A_TEST_DBD_EXTRA", ",reconnect=0")
        n1 = node(w4a, _Params(db, extra), ttl="1 1").start()
        n1.expect_error(r"W4A00131: database lookup of '[^']+' failed")
        n1.expect_error(r"AH0\d+: .*(dbd|mysql|DBD|MySQL|MariaDB|connect)")
        n1.expect_error(r"W4A00133: ")
        names = iter("n%d.unknown.example" % i for i in range(100000))
        # every name new: each is a database query
        assert [n1.get(next(names))[0] for _ in range(40)] == [404] * 40
        db.stop()
        db.start()
        assert eventually(lambda: n1.get(next(names))[0] == 404, 15)
        codes = [n1.get(next(names))[0] for _ in range(300)]
        assert codes == [404] * 300, collections.Counter(codes)
        assert n1.get("a.example")[2] == b"site a\n"
    finally:
        db.stop()
