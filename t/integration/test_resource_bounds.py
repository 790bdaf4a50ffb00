"""Resource bounds: a cache the modules keep, filled past its bound
(docs/testing.md, "Resource bounds")."""
from fleet_servers import Sqlite
from test_fleet import A, node, put, sites, status


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
            n = status(h)["source"]["cached_names"]
            assert n <= 16, "a process caches %d names (bound 16)" % n
            most = max(most, n)
            st, _, body = h.get("a.example")
            assert (st, body) == (200, b"site a\n")
    # the bound was reached, not merely never approached
    assert most >= 10, most
