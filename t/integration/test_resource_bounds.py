"""Resource bounds: a cache the modules keep, filled past its bound
(docs/testing.md, "Resource bounds")."""
import http.client
import json
import os
import pwd
import re
import subprocess

from fleet_servers import Sqlite
from geoip_mmdb import (FR, IP, MKMMDB, NET, OURS as GEOIP_OURS, UA, US, BR,
                        echo_headers, networks)
from test_fleet import A, node, put, sites, status
from w4a_harness import wait_until


def test_vhost_sql_cache_stays_within_W4AVhostCacheSize_when_filled(w4a):
    """Every name asked for is cached by the process that asked (found or
    not found): 300 distinct unknown names with W4AVhostCacheSize 16 and
    a long TTL. Whichever child answers the status, its cache never holds
    more than 16 names, and a known name is still served right after (it
    is fetched again when it was trimmed)."""
    tree = w4a.tree
    sites(tree)
    db = Sqlite(w4a.root)
    put(db, tree, "a.example", A, "a.example")
    h = node(w4a, db, driver="sqlite3", ttl="600 600",
             extra="W4AVhostCacheSize 16").start()
    assert h.get("a.example")[2] == b"site a\n"
    most = 0
    for i in range(300):
        assert h.get("n%d.unknown.example" % i)[0] == 404
        if i % 25 == 24:
            n = status(h)["source"]["this_process"]["cached_names"]
            assert n <= 16, "a process caches %d names (bound 16)" % n
            most = max(most, n)
            st, _, body = h.get("a.example")
            assert (st, body) == (200, b"site a\n")
    # the bound was reached, not merely never approached
    assert most >= 10, most


# --- mod_w4a_geoip: the per-connection copy of the last result ------------

def geoip_lookups(h):
    """The node-wide lookup count (shared memory), less the status
    request's own lookup."""
    st, _, body = h.get("localhost", "/w4a-geoip-status")
    assert st == 200, body
    return json.loads(body)["databases"][0]["lookups"] - 1


LONG_NAME = "Republique " * 30          # 330 bytes: more than the 256 kept


def test_geoip_connection_cache_bound_9_vars_or_256_bytes_not_kept(w4a):
    """CONN_CACHE_VARS 8, CONN_CACHE_BYTES 256: on one keep-alive
    connection from one client, a result of 8 variables is kept (looked
    up once), one of 9 variables or of more than 256 bytes is looked up on
    every request; every answer is right either way, also when the
    client changes on the connection."""
    spec = {"ip_version": 6, "database_type": "W4A-Test-Country",
            "networks": networks("country")}
    for cidr, rec in spec["networks"]:
        if cidr == NET[FR]:
            rec["country"]["names"]["en"] = LONG_NAME
    path = os.path.join(w4a.root, "country.mmdb")
    with open(path + ".json", "w") as f:
        json.dump(spec, f)
    subprocess.run(["perl", MKMMDB, path, path + ".json"], check=True)
    os.chmod(path, 0o644)
    eight = ["X%d" % i for i in range(1, 7)]          # + the 2 country vars
    nine = eight + ["X7"]
    env = lambda names: "\n".join("    W4AGeoIPEnv %s country/iso_code" % n
                                  for n in names)
    h = w4a.httpd(f"""
W4AGeoIPDatabase country {path}
W4AGeoIPTrustedProxy 127.0.0.1
{echo_headers("GEOIP_COUNTRY_CODE", "MM_COUNTRY_CODE", "GEOIP_NAME", *nine)}
KeepAlive On
MaxKeepAliveRequests 0
<VirtualHost *:*>
    ServerName eight.example
{env(eight)}
</VirtualHost>
<VirtualHost *:*>
    ServerName nine.example
{env(nine)}
</VirtualHost>
<VirtualHost *:*>
    ServerName long.example
    W4AGeoIPEnv GEOIP_NAME country/names/en
</VirtualHost>
<Location /w4a-geoip-status>
    SetHandler w4a-geoip-status
</Location>
""", ours=GEOIP_OURS).start()

    def run(host, clients):
        """Requests on one keep-alive connection; the lookups they cost."""
        before = geoip_lookups(h)
        conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)
        for cc in clients:
            conn.request("GET", "/", headers={"Host": host,
                                              "X-Forwarded-For": IP[cc]})
            r = conn.getresponse()
            r.read()
            assert r.status == 200 and not r.will_close, (host, cc)
            got = {n: r.getheader("X-" + n) for n in
                   ["GEOIP_COUNTRY_CODE", "MM_COUNTRY_CODE"] + nine}
            names = {"eight.example": eight, "nine.example": nine}.get(
                host, [])
            assert got == {n: cc if n in names or "COUNTRY" in n
                           else "(null)" for n in got}, (host, cc, got)
            want_name = ((LONG_NAME if cc == FR else "Country " + cc)
                         if host == "long.example" else "(null)")
            assert r.getheader("X-GEOIP_NAME") == want_name, (host, cc)
        conn.close()
        return geoip_lookups(h) - before - 1    # less the first status's

    # within the bound: one lookup for five requests
    assert run("eight.example", [FR] * 5) == 1
    assert run("long.example", [US] * 5) == 1
    # past it (9 variables; 330 bytes): looked up every time, still right
    assert run("nine.example", [FR] * 5) == 5
    assert run("long.example", [FR] * 5) == 5
    # the client changes on the connection: right every time either way
    assert run("nine.example", [FR, UA, FR, UA, BR]) == 5
    assert run("eight.example", [FR, FR, UA, UA, BR]) == 3


# --- mod_w4a_htcompat: the per-process cache of pools' settings files -----

def test_htcompat_pool_cache_trims_at_W4AHtcompatPoolCacheSize(w4a):
    """W4AHtcompatPoolCacheSize 1: on one keep-alive connection (one
    child), A's and B's requests alternate, each needing its pool's
    settings file: each new file trims the other (counted node-wide,
    exactly), the child never holds more than 1, and every answer is
    right: B's pool admin value holds, A's settings apply and are reset."""
    from test_hostile_php import B as HB, B_POOL, server, vals
    status_loc = """<Location /w4a-htcompat-status>
    SetHandler w4a-htcompat-status
</Location>
W4AHtcompatPoolCacheSize 1
"""
    # B's own php_value too: since issue 17 only what a pool was sent is
    # reset there, so B's pool needs its settings file only once B's own
    # directory delivered something
    tree, fpm, httpd = server(
        w4a, b_pool_settings=B_POOL, conf=status_loc, dirs_a=("big",),
        dirs_b=("own",),
        files_a={"big/.htaccess": "php_value max_execution_time 99\n"},
        files_b={"own/.htaccess": "php_value upload_max_filesize 9M\n"})
    assert HB

    def htc_status():
        st, _, body = httpd.get("a.example", "/w4a-htcompat-status")
        assert st == 200, body
        return json.loads(body)
    s = htc_status()
    assert s["this_process"]["pool_cache_size"] == 1, s
    before = s["pool_cache_trimmed"]
    seq = [("b.example", "/own/see.php", "512M", "45"),
           ("a.example", "/big/see.php", None, "99"),
           ("b.example", "/see.php", "512M", "45"),
           ("a.example", "/see.php", "128M", "30"),
           ("b.example", "/see.php", "512M", "45")] * 2
    conn = http.client.HTTPConnection("127.0.0.1", httpd.port, timeout=20)
    for host, path, mem, met in seq:
        conn.request("GET", path, headers={"Host": host})
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200 and not r.will_close, (host, path, body[:300])
        v = vals(body)
        assert v["max_execution_time"] == met, (host, path, v)
        if host == "b.example":
            assert v["memory_limit"] == mem, (host, path, v)
    conn.close()
    # one child did them all: each change of pool trimmed the other's file
    changes = sum(1 for x, y in zip(seq, seq[1:]) if x[0] != y[0])
    assert changes == 8
    s = htc_status()
    assert s["pool_cache_trimmed"] - before == changes, s
    assert s["this_process"]["pool_cache_files"] <= 1, s


# --- mod_w4a_guard: the node's shared client table -------------------------

def test_guard_full_client_table_still_serves_keeps_bans_and_whitelist(w4a):
    """W4AGuardTableSize 64 (the least), 200 fresh clients (one request
    each) after one client was banned: every fresh client is served (a
    slot is reused: the quietest first, bans last), the reuse is counted
    ("evicted"), the banned client stays banned, and a whitelisted client
    over its budget still passes (counted "whitelisted_over")."""
    import test_guard as tg
    h = tg.node(w4a, guard="W4AGuardTableSize 64\n"
                           "W4AGuardWhitelist 127.0.3.1")
    st = tg.status(h)
    assert st["slots"] == 64, st
    codes = tg.flood(h, "127.0.0.2", 30)
    assert codes[-1] == 429, codes
    fresh = ["127.0.%d.%d" % (1 + i // 100, 1 + i % 100) for i in range(200)]
    assert [tg.req(h, ip)[0] for ip in fresh] == [200] * 200
    c = tg.status(h)["counters"]
    # 202 keys went through 64 slots: at least 138 reuses
    assert c["evicted"] >= 202 - 64, c
    # the ban outlived the flood of fresh addresses
    assert tg.req(h, "127.0.0.2")[0] == 429
    # the first fresh clients lost their slot: served, with a new bucket
    assert [tg.req(h, ip)[0] for ip in fresh[:5]] == [200] * 5
    # a whitelisted client over its budget (burst 10) is never refused
    assert tg.flood(h, "127.0.3.1", 30) == [200] * 30
    c2 = tg.status(h)["counters"]
    assert c2["whitelisted_over"] >= 1 and c2["refused"] == c["refused"] + 1, c2


# --- mod_w4a_vhost: map indexes retained across restarts ------------------

def parent_map_mappings(h):
    """Mappings of private index copies in the parent's address space."""
    with open("/proc/%d/maps" % h.pid()) as f:
        return sum(1 for ln in f if "/w4a-vhost/" in ln)


def test_vhost_retained_maps_bound_16_paths_17th_loaded_anew(w4a):
    """MAX_RETAINED 16: 17 W4AVhostMap paths (one per virtual host).  The
    17th is said at start-up (W4A00180) and not retained: across graceful
    restarts the parent maps each index once (no mapping piles up, the
    17th's included), and when every index is broken at a restart, the 16
    retained ones keep serving their hosts while the 17th's hosts are
    unknown (404) until a good index appears."""
    from w4a_harness import hostings_dir_block
    tree = w4a.tree
    n = 17
    vhosts, indexes = [], []
    for i in range(n):
        dom = "d%d.example" % i
        tree.site(A, dom, {"index.html": "site %d\n" % i})
        rc, out, index = tree.compile_map(
            [tree.line(dom, A, dom)],
            index=os.path.join(w4a.root, "map%d.index" % i))
        assert rc == 0, out
        indexes.append(index)
        vhosts.append(f"""<VirtualHost *:*>
    ServerName {dom}
    W4AVhostEngine on
    W4AVhostMap {index}
    W4AVhostMapCheckInterval 0
    W4AVhostUnknown 404
    W4AVhostDocRootBase {tree.base}
</VirtualHost>""")
    h = w4a.httpd("DirectoryIndex index.html\n"
                  + hostings_dir_block(tree.base) + "\n"
                  + "\n".join(vhosts) + "\n")
    h.expect_error(r"W4A00180|W4A00110")
    h.start()

    def served():
        return [h.get("d%d.example" % i)[2] == b"site %d\n" % i
                for i in range(n)]
    assert served() == [True] * n
    m = re.findall(r"W4A00180: map index (\S+) not retained", h.log())
    assert len(set(m)) == 1 and m[0] in indexes, m
    lost = indexes.index(m[0])
    mapped = parent_map_mappings(h)
    assert mapped == n, mapped
    for _ in range(3):
        h.graceful()
        assert served() == [True] * n
        assert parent_map_mappings(h) == mapped
    # every index broken, then a restart
    for index in indexes:
        with open(index, "r+b") as f:
            f.seek(64)
            f.write(b"\xff" * 64)
    h.graceful()
    want = [i != lost for i in range(n)]
    assert served() == want
    assert h.get("d%d.example" % lost)[0] == 404
    assert re.search(r"W4A00110: map index %s refused" % re.escape(m[0]),
                     h.log())
    # a good index again: picked up (checked on every request here)
    dom = "d%d.example" % lost
    rc, out, _ = tree.compile_map([tree.line(dom, A, dom)],
                                  index=indexes[lost])
    assert rc == 0, out
    wait_until(lambda: h.get(dom)[2] == b"site %d\n" % lost,
               "%s served again from its good index" % dom)


# --- mod_w4a_php: the node-wide per-hosting PHP limit table ---------------

def php_limit_bucket(name, buckets):
    """php_limit.c's bucket_of(): FNV-1a, folded, masked."""
    h = 2166136261
    for ch in name.encode():
        h = ((h ^ ch) * 16777619) & 0xffffffff
    h ^= h >> 15
    return h & (buckets - 1)


def test_php_limit_table_a_hosting_of_as_hash_bucket_has_its_own_limit(w4a):
    """The table tracks every hosting in a fixed number of buckets (a
    power of two, 1,024 to 16,384; rows for twice ServerLimit children).
    A bucket belongs to the first name that claims it, in a window of 32
    from its hash: a hosting whose name hashes to A's bucket (the twin)
    takes the next free one, and is served while A holds its limit.
    (Before, it shared A's count and was refused: a tenant held another
    at 503.)  Names share a bucket only when all 32 of a window are
    taken: t/unit/check_guard.c."""
    import test_hostile_limits as hl
    from w4a_harness import hostings_dir_block
    buckets = 16384         # ServerLimit 4: 16,384 x 10 rows fit in 8 MiB
    a = php_limit_bucket(hl.A, buckets)
    twin = next("w4a%d" % i for i in range(200000, 10 ** 7)
                if php_limit_bucket("w4a%d" % i, buckets) == a)
    other = next("w4a%d" % i for i in range(200000, 10 ** 7)
                 if php_limit_bucket("w4a%d" % i, buckets) != a)
    tree = w4a.tree
    tree.site(hl.A, "a.example", {"slow.php": hl.SLOW % 2000000})
    tree.site(hl.B, "b.example", {"slow.php": hl.SLOW % 2000000})
    uid = pwd.getpwnam(hl.B).pw_uid
    # the twin: another hosting record (B's user and tree), A's bucket
    twin_line = "twin.example %s %d %d %s 8.2 active -" % (
        twin, uid, uid, tree.docroot(hl.B, "b.example"))
    rc, out, index = tree.compile_map([
        tree.line("a.example", hl.A, "a.example"),
        tree.line("b.example", hl.B, "b.example"), twin_line])
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
W4APHPHostingLimit 2
# one client holds A's limit here: no share
W4APHPHostingClientShare off
<Location /w4a-php-status>
    SetHandler w4a-php-status
</Location>
{hostings_dir_block(tree.base)}
""", with_php=True)
    httpd.start()
    s = hl.status(httpd)
    assert (s["buckets"], s["rows"]) == (buckets, 2 * 4 + 2), s
    flood = hl.Flood(httpd, "a.example", "/slow.php", 2)
    hl.wait_status(httpd, lambda s: s["hosting"]["inflight"] == 2,
                   "A's 2 slow requests in flight", hl.A)
    # the twin has its own count and is served; so is another name
    assert hl.status(httpd, twin)["hosting"]["inflight"] == 0
    assert hl.status(httpd, other)["hosting"]["inflight"] == 0
    st, h, body = httpd.get("twin.example", "/slow.php")
    assert (st, body) == (200, b"done"), (st, body)
    assert hl.status(httpd, twin)["hosting"]["refused"] == 0
    assert "W4A00260" not in httpd.log()
    # B, in its own bucket, is served meanwhile
    assert php_limit_bucket(hl.B, buckets) != a
    st, h, body = httpd.get("b.example", "/slow.php")
    assert (st, body) == (200, b"done"), (st, body)
    results = flood.join()
    assert sorted(r[0] for r in results) == [200, 200], results


def test_geoip_databases_bound_32_a_33rd_is_a_configuration_error(w4a):
    """MAX_DATABASES 32: 32 W4AGeoIPDatabase lines start (each its own
    name, the same file); a 33rd is refused at start-up, saying the bound,
    and the server does not start on it."""
    spec = {"ip_version": 6, "database_type": "W4A-Test-Country",
            "networks": networks("country")}
    path = os.path.join(w4a.root, "country.mmdb")
    with open(path + ".json", "w") as f:
        json.dump(spec, f)
    subprocess.run(["perl", MKMMDB, path, path + ".json"], check=True)
    os.chmod(path, 0o644)
    lines = lambda n: "\n".join("W4AGeoIPDatabase db%d %s" % (i, path)
                                for i in range(n))
    h = w4a.httpd(lines(32) + "\n", ours=GEOIP_OURS)
    r = h.ctl("-t")
    assert r.returncode == 0, r.stdout + r.stderr
    with open(h.conf, "a") as f:
        f.write("W4AGeoIPDatabase db32 %s\n" % path)
    r = h.ctl("-t")
    assert r.returncode != 0
    assert "W4AGeoIPDatabase: at most 32 databases" in r.stdout + r.stderr, \
        r.stdout + r.stderr


def test_memcached_full_evicts_keys_the_next_lookup_asks_the_database(w4a):
    """The fleet's memcached is bounded by its own memory (its LRU): with
    8 MB filled past full by other keys, a hosting's key is evicted; the
    node keeps serving the hosting (every answer right), asks the
    database on the miss and puts the key back."""
    from fleet_servers import Memcached
    tree = w4a.tree
    sites(tree)
    db = Sqlite(w4a.root)
    put(db, tree, "a.example", A, "a.example")
    # one plain LRU (no_lru_maintainer): memcached's default segmented LRU
    # keeps a key read twice in its warm segment, out of reach of a flood
    # of keys never read, so filling it would not evict ours
    mc = Memcached(mem_mb=8, opts=("-o", "no_lru_maintainer")).start()
    try:
        h = node(w4a, db, mc=mc, driver="sqlite3", ttl="1 1").start()
        key = "w4a:0:a.example"
        assert h.get("a.example")[2] == b"site a\n"
        wait_until(lambda: mc.get(key) is not None, "the key stored", 10)
        # fill: 3 times memcached's memory, values of the key's size class
        size = len(mc.get(key))
        mc.fill("junk", 3 * 8 * 1024 * 1024 // (size + 80), size)
        assert mc.get(key) is None, "still there after filling memcached"
        assert int(mc.stats()["evictions"]) > 0
        for _ in range(3):
            st, _, body = h.get("a.example")
            assert (st, body) == (200, b"site a\n")

        def back():
            st, _, body = h.get("a.example")
            assert (st, body) == (200, b"site a\n")
            return mc.get(key) is not None
        wait_until(back, "the evicted key put back by a lookup", 15)
    finally:
        mc.stop()
