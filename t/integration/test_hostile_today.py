"""A hostile tenant against today's features: a client's share of a
hosting's limits (W4AGuardHostingClientShare, W4APHPHostingClientShare,
modules/common/w4a_inflight.c), login bans scoped per hosting, and
w4a-fpm-pools --copy-slow-logs.

A is the attacking hosting, B the victim.  A test either shows a hole
(strict xfail while it is open, with the reason) or an attack that does
not work.
"""
import socket

import pytest

from w4a_harness import hostings_dir_block, wait_until
from test_guard_hosting_limit import GUARD_SO, safe_status
from test_hostile_tonight import SlowPost, slow_post_answer

A, B = "w4a100010", "w4a100011"


def free_port_v6():
    s = socket.socket(socket.AF_INET6)
    s.bind(("::1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get_v6(port, host, path="/index.html", timeout=5.0):
    """One GET from ::1: its status."""
    s = socket.socket(socket.AF_INET6)
    s.settimeout(timeout)
    try:
        s.connect(("::1", port))
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                   % (path, host)).encode())
        buf = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            buf += b
    finally:
        s.close()
    return int(buf.split(b" ", 2)[1])


def test_a_tenants_php_cannot_escape_the_client_share_by_loopback_addresses(w4a):
    """A's PHP connects to B on the node itself, from a loopback source
    of its choice (any of 127.0.0.0/8 is local): with one slow POST from
    each of 4 addresses it holds B at its W4AGuardHostingLimit 4, the
    share of 2 per client notwithstanding, and B's visitor gets 503 for
    as long as A likes.  Fixed: every loopback address (127.0.0.0/8, ::1)
    is one client for the share (w4a_client_fold_local); B's visitor here
    is a public address behind the trusted proxy 127.0.0.1."""
    tree = w4a.tree
    tree.site(A, "a.example", {"index.html": "a\n"})
    tree.site(B, "b.example", {"index.html": "static b\n"})
    rc, out, index = tree.compile_map([
        tree.line("a.example", A, "a.example"),
        tree.line("b.example", B, "b.example")])
    assert rc == 0, out
    v6 = free_port_v6()
    h = w4a.httpd(f"""
Listen [::1]:{v6}
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
DirectoryIndex index.html
W4AGuardEngine on
RemoteIPHeader X-Client
RemoteIPInternalProxy 127.0.0.1
W4AGuardWhitelist 127.0.0.1
W4AGuardHostingLimit 4
<Location /w4a-guard-status>
    SetHandler w4a-guard-status
    Require local
</Location>
{hostings_dir_block(tree.base)}
""", ours=[("w4a_guard_module", GUARD_SO)], modules=["remoteip"]).start()

    def visit(host):
        from test_guard import req
        return req(h, "127.0.0.1", host=host, path="/index.html",
                   headers={"X-Client": "192.0.2.9"})[0]
    assert visit("b.example") == 200
    held = []
    try:
        # what A's PHP does with bindto 127.0.0.6N:0, one request each
        for src in ("127.0.0.61", "127.0.0.62"):
            held.append(SlowPost(h, src, "b.example"))
        wait_until(lambda: (safe_status(h, B) or {}).get("inflight") == 2,
                   "A's first 2 requests to B in flight")
        answers = []
        for src in ("127.0.0.63", "127.0.0.64"):
            x = SlowPost(h, src, "b.example")
            held.append(x)
            answers.append(slow_post_answer(x))
        # as one client: its share, 2 of 4, and the rest answered 503
        assert all(a is not None and " 503 " in a for a in answers), answers
        assert (safe_status(h, B) or {}).get("inflight") == 2
        # ::1 is loopback too: the same client, no share of its own
        assert get_v6(v6, "b.example") == 503
        # B's other visitor keeps B's other places
        assert visit("b.example") == 200
        # other hostings served all along
        assert visit("a.example") == 200
    finally:
        for x in held:
            x.close()
    wait_until(lambda: (safe_status(h, B) or {}).get("inflight") == 0,
               "B's places given back")


# ---------------------------------------------------------------------
# --copy-slow-logs: O_NOFOLLOW does not stop a hard link.  With
# fs.protected_hardlinks=0 (or a file the tenant may read and write) A can
# link any file of the same file system at its log/php/slow.log; root
# links them here for it.  The copy's child, as A, refuses on the
# descriptor a file that is not A's, so it writes into none of them.

def test_slowlog_hard_links_to_other_owners_files_are_not_written(w4a):
    import os
    import pwd
    import stat
    from test_slowlog import Node, read, as_user
    n = Node(w4a, [A, B], with_fpm=False)
    n.write_source(A, b"A's trace\n")
    n.write_source(B, b"B's trace\n")
    rc, out, err = n.copy()
    assert rc == 0 and err == "", out + err
    assert read(n.dest(B)) == b"B's trace\n"
    root_file = os.path.join(os.path.dirname(n.tree.home(A)), "root-owned")
    with open(root_file, "wb") as f:
        f.write(b"root's own file\n")
    os.chmod(root_file, 0o666)          # even one A could write itself
    # B's 0640 file: A cannot even open it; root's 0666 one: opened, and
    # refused on the descriptor as not A's
    for victim, why in ((n.dest(B), "Permission denied"),
                        (root_file, "is not the hosting's")):
        os.unlink(n.dest(A))
        os.link(victim, n.dest(A))
        before = read(victim)
        n.write_source(A, b"A's next trace\n")
        rc, out, err = n.copy()
        assert rc == 1, out + err
        assert "W4A00924" in err and ("hosting %s" % A) in err \
            and why in err, err
        assert read(victim) == before, victim
        # B is copied all the same
        n.write_source(B, b"B again\n")
    # A's bytes waited: once A has its own file again, they arrive, and
    # B's file holds B's traces only
    os.unlink(n.dest(A))
    rc, out, err = n.copy()
    assert rc == 0 and err == "", out + err
    assert read(n.dest(A)).endswith(b"A's next trace\nA's next trace\n")
    assert read(n.dest(B)) == b"B's trace\nB again\nB again\n"
    assert read(root_file) == b"root's own file\n"
    # a set-id bit A puts on its own slow.log is dropped by the append
    # (written by A, not root): the copy makes no set-id file
    as_user(A, "chmod", "06755", n.dest(A))
    n.write_source(A, b"A's last trace\n")
    rc, out, err = n.copy()
    assert rc == 0 and err == "", out + err
    mode = os.stat(n.dest(A)).st_mode
    assert not mode & (stat.S_ISUID | stat.S_ISGID), oct(mode)
    assert os.stat(n.dest(A)).st_uid == pwd.getpwnam(A).pw_uid


def test_a_tenants_php_picks_its_loopback_source_address(w4a):
    """The premise of the loopback escape above, on real pools: A's PHP
    (its own uid, the node's pool settings) connects to B on this node
    from a source address of its choice in 127.0.0.0/8, and B sees that
    address as the client."""
    tree = w4a.tree
    tree.site(A, "a.example", {"via.php": """<?php
$port = (int)$_GET['port'];
$ctx = stream_context_create(['socket' => ['bindto' => '127.0.0.77:0']]);
$s = stream_socket_client("tcp://127.0.0.1:$port", $no, $str, 5,
                          STREAM_CLIENT_CONNECT, $ctx);
if (!$s) { echo "connect: $str"; exit; }
fwrite($s, "GET /ip.php HTTP/1.0\\r\\nHost: b.example\\r\\n\\r\\n");
$r = stream_get_contents($s);
echo substr($r, strpos($r, "\\r\\n\\r\\n") + 4);
"""})
    tree.site(B, "b.example", {"ip.php": "<?php echo $_SERVER['REMOTE_ADDR'];"})
    rc, out, index = tree.compile_map([
        tree.line("a.example", A, "a.example"),
        tree.line("b.example", B, "b.example")])
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
{hostings_dir_block(tree.base)}
""", with_php=True).start()
    st, _, body = h.get("a.example", "/via.php?port=%d" % h.port)
    assert st == 200 and body == b"127.0.0.77", (st, body[:300])


# ---------------------------------------------------------------------
# Login bans scoped per hosting: a client keeps at most 4 of them
# (GUARD_SCOPED_MAX), and the strikes that lengthen a repeated ban are
# kept in the scoped entry itself.

@pytest.mark.parametrize("spray", [False, True])
def test_a_login_brute_forcer_cannot_reset_its_ban_growth_by_other_hostings(
        w4a, spray):
    """Hole (fixed): a brute-forcer of B that earned login bans on 4
    other hostings of the node (any WordPress sites there) had B's scoped
    entry, and with it B's strikes, replaced: each new ban on B was at
    strike 1 again (W4AGuardBanTime's first figure) instead of doubling
    up to its max.  Now the strikes are kept in the login quota's own
    slot of (client, hosting) too (guard_table.c guard_charge), which no
    ban elsewhere replaces; w4a-ban remove --hosting clears them there as
    well.  spray False: the control, the ban grows without other bans."""
    h = login_node(w4a)
    src = "127.0.0.31"
    post, bans_on, served = login_probes(h, src)
    # the brute-forcer's first guesses at B: banned, strike 1
    assert post(B + ".example") != 429     # (404: no such page)
    assert post(B + ".example") == 429
    wait_until(lambda: bans_on(B) == [("1", "1")], "B's first ban")
    wait_until(lambda: served(B), "B's first ban over")
    # it earns a ban on each of 4 other hostings
    for o in (OTHERS if spray else []):
        assert post(o + ".example") != 429
        assert post(o + ".example") == 429
    wait_until(lambda: all(bans_on(o) for o in OTHERS) or not spray,
               "a ban on each other hosting")
    # the other hostings are served once those bans end
    for o in OTHERS:
        wait_until(lambda: served(o), "%s served again" % o)
    # its next guess at B: the ban grows (strike 2, 2 s)
    assert post(B + ".example") == 429
    wait_until(lambda: len(bans_on(B)) == 2, "B's second ban")
    assert bans_on(B)[1] == ("2", "2"), bans_on(B)


OTHERS = ["w4a100010", "w4a100012", "w4a100013", "w4a100014"]


def login_node(w4a, mc=None, ban="1 3600 86400"):
    """B and 4 other hostings; login quota 1 an hour, bans from 1 s."""
    from test_guard import key_file
    fleet = ""
    if mc:
        fleet = "W4AGuardMemcached %s\nW4AGuardMemcachedKey %s\n" % (
            mc.server, key_file(w4a))
    tree = w4a.tree
    lines = []
    for h in [B] + OTHERS:
        tree.site(h, h + ".example", {"index.html": h + "\n"})
        lines.append(tree.line(h + ".example", h, h + ".example"))
    rc, out, index = tree.compile_map(lines)
    assert rc == 0, out
    h = w4a.httpd(f"""
DirectoryIndex index.html
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
{hostings_dir_block(tree.base)}
W4AGuardEngine on
W4AGuardRate 100000 200000
W4AGuardWhitelist 127.0.0.1
W4AGuardLoginQuota 1 3600
W4AGuardBanTime {ban}
{fleet}
""", ours=[("w4a_guard_module", GUARD_SO)]).start()
    return h


def login_probes(h, src):
    from test_guard import req

    def post(host):
        return req(h, src, host=host, path="/wp-login.php", method="POST")[0]

    def bans_on(hosting):
        import re
        return re.findall(r"W4A00670: client %s banned from hosting %s only "
                          r"for (\d+) s \(strike (\d+)" % (re.escape(src),
                                                           hosting), h.log())

    def served(host):
        return req(h, src, host=host + ".example", path="/index.html")[0] \
            == 200
    return post, bans_on, served


def test_w4a_ban_remove_for_a_hosting_still_forgets_the_strikes(w4a):
    """The strikes kept in the login quota's slot (above) are cleared by
    w4a-ban remove --hosting as the scoped entry's are: the client starts
    again at strike 1."""
    import subprocess
    from fleet_servers import Memcached
    from test_guard import BAN, key_file
    mc = Memcached().start()
    try:
        h = login_node(w4a, mc=mc, ban="3 3600 86400")
        src = "127.0.0.32"
        post, bans_on, served = login_probes(h, src)
        for n in (1, 2):
            wait_until(lambda: served(B), "B served")
            assert post(B + ".example") == (429 if n == 2 else 404)
            if n == 1:
                assert post(B + ".example") == 429
            wait_until(lambda: len(bans_on(B)) == n, "ban %d on B" % n)
        assert bans_on(B) == [("3", "1"), ("6", "2")], bans_on(B)
        r = subprocess.run([BAN, "remove", "--memcached", mc.server, "--key",
                            key_file(w4a), "--hosting", B, src],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        wait_until(lambda: served(B), "B served after the removal")
        assert post(B + ".example") == 429     # the quota is still in debt
        wait_until(lambda: len(bans_on(B)) == 3, "ban 3 on B")
        # strike 1 again (not applied, it would be strike 3, 12 s)
        assert bans_on(B)[2] == ("3", "1"), bans_on(B)
        assert served("w4a100010")
    finally:
        mc.stop()


def test_slowlog_copy_with_a_relative_pattern_is_refused_not_a_crash(w4a):
    """Crash (fixed): --copy-slow-logs with a --slowlog holding no '/'
    (a typo in a cron line) died of SIGSEGV on the first pool (a NULL
    strrchr taken as the directory's end).  Now: refused at once, exit
    status 2, W4A00985; an absolute one still copies."""
    from test_slowlog import Node, read
    n = Node(w4a, [A, B], with_fpm=False)
    n.write_source(A, b"A's trace\n")
    n.write_source(B, b"B's trace\n")
    import subprocess
    from w4a_harness import FPM_POOLS
    r = subprocess.run([FPM_POOLS, "--copy-slow-logs", "--slowlog",
                        "%h-%v.log", "--slow-state", n.state, n.index],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "W4A00985: --slowlog %h-%v.log is not an absolute path" \
        in r.stderr, r.stderr
    rc, out, err = n.copy()
    assert rc == 0 and err == "", out + err
    assert read(n.dest(A)) == b"A's trace\n"
    assert read(n.dest(B)) == b"B's trace\n"
