"""mod_w4a_guard: a login-quota ban holds for the hosting it was earned on
only, on the node that decided it and on every node of the fleet (issue
13: a hosting whose pages make its visitors POST to a login path must not
ban them from another hosting).  Rate bans stay for every hosting.

Real parts: two httpd nodes, the fleet's memcached, the key file of
w4a-vhostmap keygen, the w4a-ban tool.  Helpers and hostings (A, B, D and
localhost for the status page) are test_guard.py's.
"""
import json
import re
import subprocess
import time

from fleet_servers import Memcached, seal
from test_guard import (A, B, BAN, D, key_file, login_bans_logged, node,
                        req, status, until)

LOGIN = "W4AGuardLoginQuota 3 60\nW4AGuardFleetPoll 100"


def login_ban(h, src, host="a.example"):
    """Three login POSTs pass, the fourth is refused: @return its status."""
    codes = [req(h, src, host=host, path="/wp-login.php",
                 method="POST")[0] for _ in range(4)]
    assert codes[:3] == [200] * 3, codes
    return codes[3]


def scoped(h, src):
    return {e["hosting"]: e for e in status(h, src).get("scoped", [])}


def test_login_ban_scoped_on_node1_is_applied_on_node2_for_a_only(w4a):
    mc = Memcached().start()
    try:
        n1 = node(w4a, mc=mc, rate="100 200", guard=LOGIN)
        n2 = node(w4a, mc=mc, rate="100 200", guard=LOGIN)
        src = "127.0.0.31"
        assert req(n2, src)[0] == 200
        assert login_ban(n1, src) == 429
        logged = login_bans_logged(n1, src)
        assert len(logged) == 1 and "hosting %s only" % A in logged[0], \
            n1.log()
        # node 2 refuses the client for A, every page of it...
        until("node 2 refusing %s for A (banned on node 1)" % src,
              lambda: req(n2, src)[0] == 429, timeout=3.0)
        st, hd = req(n2, src, path="/index.html")
        assert st == 429 and 1 <= int(hd["retry-after"]) <= 10, (st, hd)
        assert n2.wait_log(r"W4A00671: client 127\.0\.0\.31 banned from "
                           r"hosting %s only for \d+ s by the fleet list "
                           r"\(reason login\)" % A), n2.log()
        # ...and serves it B, B's login included, on both nodes
        for h in (n1, n2):
            assert req(h, src, host="b.example")[0] == 200
            assert req(h, src, host="b.example", path="/wp-login.php",
                       method="POST")[0] == 200
        # the status says the scope, node 2's as node 1's
        for h, reason in ((n1, "login"), (n2, "fleet")):
            st = status(h)
            bans = [b for b in st["bans"] if b["client"] == src]
            assert len(bans) == 1, st
            assert bans[0]["scope"] == "hosting" \
                and bans[0]["hosting"] == A \
                and bans[0]["reason"] == reason, bans
            one = status(h, src)
            assert one["banned"] is False, one       # not for all hostings
            assert list(scoped(h, src)) == [A], one
        assert status(n1)["counters"]["fleet_published"] == 1
        assert status(n2)["counters"]["fleet_applied"] == 1
        # the fleet's line carries the scope, in the sealed value
        raw = mc.get("w4a-guard:bans")
        assert raw.startswith("w4a1 ") and "127.0.0.31@%s " % A in raw, raw
        # not a single ban of every hosting was decided or applied
        assert "W4A00600: client 127.0.0.31" not in n1.log()
        assert "W4A00601: client 127.0.0.31" not in n2.log()
    finally:
        mc.stop()


def test_rate_ban_still_holds_for_every_hosting_node_and_fleet(w4a):
    mc = Memcached().start()
    try:
        n1 = node(w4a, mc=mc, rate="1 10", guard=LOGIN)
        n2 = node(w4a, mc=mc, rate="100 200", guard=LOGIN)
        src = "127.0.0.32"
        codes = [req(n1, src)[0] for _ in range(15)]
        assert 429 in codes, codes
        assert n1.wait_log(r"W4A00600: client 127\.0\.0\.32 banned for \d+ "
                           r"s \(strike 1, reason rate"), n1.log()
        until("node 2 refusing %s (rate ban of node 1)" % src,
              lambda: req(n2, src, host="b.example")[0] == 429, timeout=3.0)
        for h in (n1, n2):
            for host in ("a.example", "b.example", "d.example"):
                assert req(h, src, host=host)[0] == 429, (h.port, host)
            bans = [b for b in status(h)["bans"] if b["client"] == src]
            assert len(bans) == 1 and bans[0]["scope"] == "all", bans
        raw = mc.get("w4a-guard:bans")
        assert "127.0.0.32 " in raw and "127.0.0.32@" not in raw, raw
        # another client is served
        assert req(n2, "127.0.0.33", host="b.example")[0] == 200
    finally:
        mc.stop()


def test_w4a_ban_adds_lists_shows_and_removes_a_hosting_scoped_ban(w4a):
    mc = Memcached().start()
    try:
        n1 = node(w4a, mc=mc, rate="100 200", guard=LOGIN)
        base = ["--memcached", mc.server, "--key", key_file(w4a)]
        src = "127.0.0.34"
        assert req(n1, src)[0] == 200

        r = subprocess.run([BAN, "add", *base, "--for", "120", "--hosting",
                            A, src], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "%s banned fleet-wide for hosting %s\n" % (src, A)
        until("the node applying w4a-ban add --hosting",
              lambda: req(n1, src)[0] == 429, timeout=2.0)
        assert req(n1, src, host="b.example")[0] == 200
        assert n1.wait_log(r"W4A00671: client 127\.0\.0\.34 banned from "
                           r"hosting %s only .*\(reason admin\)" % A)
        r = subprocess.run([BAN, "list", *base], capture_output=True,
                           text=True)
        assert re.search(r"^127\.0\.0\.34 banned 1[12]\d s more, reason "
                         r"admin, hosting %s, scope hosting %s$" % (A, A),
                         r.stdout, re.M), r.stdout + r.stderr
        url = "http://127.0.0.1:%d/w4a-guard-status" % n1.port
        r = subprocess.run([BAN, "show", "--url", url, src],
                           capture_output=True, text=True)
        one = json.loads(r.stdout)
        assert one["banned"] is False and [(e["hosting"], e["reason"])
                                           for e in one["scoped"]] \
            == [(A, "admin")], one
        r = subprocess.run([BAN, "show", "--url", url], capture_output=True,
                           text=True)
        bans = [b for b in json.loads(r.stdout)["bans"]
                if b["client"] == src]
        assert [(b["scope"], b["hosting"]) for b in bans] \
            == [("hosting", A)], bans

        # a removal for every hosting is another line: the scoped ban stays
        r = subprocess.run([BAN, "remove", *base, src], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([BAN, "list", *base], capture_output=True,
                           text=True)
        assert re.search(r"^127\.0\.0\.34 removed \d+ s ago, scope all$",
                         r.stdout, re.M), r.stdout
        assert re.search(r"^127\.0\.0\.34 banned .* scope hosting %s$" % A,
                         r.stdout, re.M), r.stdout

        r = subprocess.run([BAN, "remove", *base, "--hosting", A, src],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        until("the node applying w4a-ban remove --hosting",
              lambda: req(n1, src)[0] == 200, timeout=2.0)
        assert n1.wait_log(r"W4A00672: client 127\.0\.0\.34: ban for "
                           r"hosting %s removed by the fleet list" % A)
        assert status(n1, src)["scoped"] == []
        assert status(n1)["counters"]["fleet_removed"] == 1
        r = subprocess.run([BAN, "list", *base], capture_output=True,
                           text=True)
        assert re.search(r"^127\.0\.0\.34 removed \d+ s ago, scope hosting "
                         r"%s$" % A, r.stdout, re.M), r.stdout

        # a hosting that is not a name: refused, nothing written
        before = mc.get("w4a-guard:bans")
        for bad in ("a b", "x" * 64, "a@b", ""):
            r = subprocess.run([BAN, "add", *base, "--hosting", bad, src],
                               capture_output=True, text=True)
            assert r.returncode == 2 and "W4A00675" in r.stderr, \
                (bad, r.stderr)
        assert mc.get("w4a-guard:bans") == before
        assert req(n1, "127.0.0.35", host="b.example")[0] == 200
    finally:
        mc.stop()


def test_old_format_login_line_is_narrowed_never_widened(w4a):
    """A list line of before the scope (a node not yet upgraded): reason
    login without "@HOSTING".  Its ban held for every hosting there; here
    it holds for its HOSTING only, and without one it bans nobody.  A
    scope that is not a name bans nobody either."""
    mc = Memcached().start()
    try:
        n1 = node(w4a, mc=mc, rate="100 200", guard=LOGIN)
        with open(key_file(w4a), "rb") as f:
            key = f.read().rstrip(b"\r\n\t ")
        now = int(time.time() * 1000)
        lines = ["127.0.0.36 %d %d login %s" % (now, now + 60000, A),
                 "127.0.0.37 %d %d login -" % (now, now + 60000),
                 "127.0.0.38@a!b %d %d login %s" % (now, now + 60000, A),
                 "127.0.0.39 %d %d rate -" % (now, now + 60000)]
        mc.set("w4a-guard:bans", seal(key, "w4a-guard:bans",
                                      "\n".join(lines) + "\n",
                                      time.time() + 120))
        # the rate line is for every hosting: the list was read
        until("the sealed list applied",
              lambda: req(n1, "127.0.0.39", host="b.example")[0] == 429,
              timeout=3.0)
        assert req(n1, "127.0.0.36")[0] == 429
        assert req(n1, "127.0.0.36", host="b.example")[0] == 200, n1.log()
        assert n1.wait_log(r"W4A00671: client 127\.0\.0\.36 banned from "
                           r"hosting %s only" % A), n1.log()
        for src in ("127.0.0.37", "127.0.0.38"):
            for host in ("a.example", "b.example"):
                assert req(n1, src, host=host)[0] == 200, (src, host)
        assert status(n1)["counters"]["fleet_applied"] == 2
    finally:
        mc.stop()


def test_scoped_bans_of_one_client_are_bounded_to_four_in_its_own_slot(w4a):
    """A tenant with many hostings (or a brute force over many) gives a
    client a ban per hosting: they live in the client's one slot, four at
    most (the four ending last), so they cannot fill the table."""
    mc = Memcached().start()
    try:
        n1 = node(w4a, mc=mc, rate="100 200", guard=LOGIN)
        base = ["--memcached", mc.server, "--key", key_file(w4a)]
        src = "127.0.0.40"
        used = status(n1)["used"]
        for i in range(1, 6):
            r = subprocess.run([BAN, "add", *base, "--for", str(100 * i),
                                "--hosting", "h%d" % i, src],
                               capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
        until("four scoped bans applied",
              lambda: sorted(scoped(n1, src)) == ["h2", "h3", "h4", "h5"],
              timeout=3.0)
        # the fifth, ending first, is not kept; no other ban was replaced
        c = status(n1)["counters"]
        assert c["scoped_replaced"] == 0 and c["fleet_applied"] == 4, c
        assert status(n1)["used"] == used + 1
        # one ending later replaces the one ending first
        r = subprocess.run([BAN, "add", *base, "--for", "600", "--hosting",
                            "h6", src], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        until("h6 applied in place of h2",
              lambda: sorted(scoped(n1, src)) == ["h3", "h4", "h5", "h6"],
              timeout=3.0)
        c = status(n1)["counters"]
        assert c["scoped_replaced"] == 1 and c["fleet_applied"] == 5, c
        assert status(n1)["used"] == used + 1
        # none of them is a ban of the node's hostings A, B, D
        for host in ("a.example", "b.example", "d.example"):
            assert req(n1, src, host=host)[0] == 200, host
    finally:
        mc.stop()
