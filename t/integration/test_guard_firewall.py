"""w4a-ban firewall: the node's bans for every hosting mirrored into
nftables sets, so that a banned client's new connections are dropped at
the SYN (it sees timeouts) instead of costing the node an accept and a 429
each (issue 13, the noisy neighbour).

Everything is real: an httpd node with mod_w4a_guard (test_guard.py's
node(): 127.0.0.1 whitelisted, the status page on localhost), the daemon
running nft against this machine's kernel, clients told apart by their
loopback source address.  Each test has its own table, whose drop rule
matches its own httpd's port only, and removes it in teardown whatever
happened.
"""
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from fleet_servers import Memcached
from test_guard import BAN, key_file, node, req, status, until

_seq = [0]


def nft(*args, stdin=None):
    return subprocess.run(["nft"] + list(args), input=stdin,
                          capture_output=True, text=True)


def nft_usable():
    """Why nft cannot work here, or None."""
    try:
        r = nft("-f", "-", stdin="add table inet w4aprobe%d\n"
                "delete table inet w4aprobe%d\n" % (os.getpid(),
                                                    os.getpid()))
    except FileNotFoundError:
        return "nft not installed (apt-get install nftables)"
    if r.returncode != 0:
        return "nft cannot change the ruleset here (no CAP_NET_ADMIN?): " \
            + r.stderr.strip()
    return None


def elements(table, name):
    """The set's elements: {address or network: (timeout_s, expires_s)}."""
    r = nft("-j", "list", "set", "inet", table, name)
    assert r.returncode == 0, r.stderr
    out = {}
    for item in json.loads(r.stdout)["nftables"]:
        for e in item.get("set", {}).get("elem", []):
            e = e.get("elem", e)
            val = e["val"] if isinstance(e, dict) else e
            if isinstance(val, dict) and "prefix" in val:
                val = "%s/%d" % (val["prefix"]["addr"], val["prefix"]["len"])
            out[val] = (e.get("timeout"), e.get("expires")) \
                if isinstance(e, dict) else (None, None)
    return out


def table_exists(table):
    return nft("list", "table", "inet", table).returncode == 0


def syn_dropped(h, src, timeout=1.0):
    """Whether a new connection from src gets no answer at all."""
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.bind((src, 0))
        s.connect(("127.0.0.1", h.port))
        return False
    except socket.timeout:
        return True
    finally:
        s.close()


class Daemon:
    def __init__(self, w4a, h, *extra):
        _seq[0] += 1
        self.table = "w4at%d_%d" % (os.getpid(), _seq[0])
        self.errlog = os.path.join(w4a.root, "firewall-%d.log" % _seq[0])
        self.args = [BAN, "firewall", "--url",
                     "http://127.0.0.1:%d/w4a-guard-status" % h.port,
                     "--ports", str(h.port), "--table", self.table,
                     "--interval", "100"] + list(extra)
        self.proc = None

    def start(self):
        self.f = open(self.errlog, "w")
        self.proc = subprocess.Popen(self.args, stderr=self.f)
        until("the daemon's table", lambda: "W4A00680" in self.log()
              or self.proc.poll() is not None)
        assert self.proc.poll() is None, self.log()
        return self

    def log(self):
        with open(self.errlog, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        return self.proc.returncode if self.proc else None


@pytest.fixture
def fw(w4a):
    why = nft_usable()
    if why:
        pytest.skip(why)
    made = []

    def make(h, *extra):
        d = Daemon(w4a, h, *extra)
        made.append(d)
        return d

    yield make
    for d in made:
        try:
            d.stop()
        finally:
            nft("delete", "table", "inet", d.table)


def ban(h, src, most=40, **kw):
    """Requests from src until the guard answers 429 (the firewall may drop
    the next connection at once): @return the statuses."""
    codes = []
    while len(codes) < most and 429 not in codes:
        codes.append(req(h, src, **kw)[0])
    assert codes[-1] == 429, codes
    return codes


def banned_in_status(h, client):
    return [b for b in status(h)["bans"] if b["client"] == client]


def test_firewall_flooder_dropped_at_syn_other_served_element_ends(w4a, fw):
    h = node(w4a, guard="W4AGuardBanTime 3 10 60")
    d = fw(h).start()
    ban(h, "127.0.0.61")
    t0 = time.time()
    until("127.0.0.61 in the set",
          lambda: "127.0.0.61" in elements(d.table, "ban4"), timeout=3.0)
    took = time.time() - t0
    timeout, expires = elements(d.table, "ban4")["127.0.0.61"]
    # the element's timeout is the ban's remaining time (3 s ban)
    assert timeout is not None and 0 < timeout <= 3, (timeout, expires)
    assert syn_dropped(h, "127.0.0.61")
    # another client is served, on the same port, meanwhile
    assert req(h, "127.0.0.62")[0] == 200
    assert req(h, "127.0.0.62", host="b.example")[0] == 200
    assert "W4A00686: 1 ban(s) in table inet %s" % d.table in d.log()
    # the element ends with the ban: the client is served again
    until("127.0.0.61's element gone",
          lambda: "127.0.0.61" not in elements(d.table, "ban4"),
          timeout=6.0, step=0.1)
    until("127.0.0.61 served after its ban",
          lambda: not syn_dropped(h, "127.0.0.61")
          and req(h, "127.0.0.61")[0] == 200, timeout=3.0, step=0.1)
    assert d.stop() == 0
    assert not table_exists(d.table)
    assert "W4A00687" in d.log(), d.log()
    print("set within %.2f s" % took)


def test_firewall_login_ban_of_one_hosting_never_in_the_set(w4a, fw):
    h = node(w4a, guard="W4AGuardLoginQuota 2 60")
    d = fw(h).start()
    codes = [req(h, "127.0.0.63", path="/wp-login.php", method="POST")[0]
             for _ in range(3)]
    assert codes == [200, 200, 429], codes
    st = banned_in_status(h, "127.0.0.63")
    assert [b["scope"] for b in st] == ["hosting"], st
    # a rate ban after it: once that one is in the set, the daemon has
    # read a page listing both
    ban(h, "127.0.0.65")
    until("127.0.0.65 in the set",
          lambda: "127.0.0.65" in elements(d.table, "ban4"), timeout=3.0)
    assert banned_in_status(h, "127.0.0.63")
    assert "127.0.0.63" not in elements(d.table, "ban4")
    assert not syn_dropped(h, "127.0.0.63")
    # served by the other hostings, refused by A (the guard, not the wall)
    assert req(h, "127.0.0.63", host="b.example")[0] == 200
    assert req(h, "127.0.0.63")[0] == 429


def test_firewall_never_list_loopback_and_own_addresses(w4a, fw):
    mc = Memcached().start()
    try:
        h = node(w4a, mc=mc, rate="1 4",
                 guard="W4AGuardBanTime 30 60 60\nW4AGuardFleetPoll 100")
        d = fw(h, "--never", "127.0.0.66/32").start()
        # 127.0.0.1 banned for every hosting (fleet: as a tenant flooding
        # through localhost would have it): never in the firewall
        r = subprocess.run([BAN, "add", "--memcached", mc.server, "--key",
                            key_file(w4a), "--for", "30", "127.0.0.1"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        req(h, "127.0.0.67")        # a request: the node reads the list
        until("127.0.0.1 banned on the node",
              lambda: banned_in_status(h, "127.0.0.1"), timeout=3.0)
        # --never: a flooder banned by the node, not in the firewall
        ban(h, "127.0.0.66")
        # and one that is: the daemon wrote the set after the others
        ban(h, "127.0.0.68")
        until("127.0.0.68 in the set",
              lambda: "127.0.0.68" in elements(d.table, "ban4"), timeout=3.0)
        until("127.0.0.1 and 127.0.0.66 skipped, logged",
              lambda: "W4A00684: 127.0.0.1 banned" in d.log()
              and "W4A00684: 127.0.0.66 banned" in d.log(), timeout=3.0)
        els = elements(d.table, "ban4")
        assert "127.0.0.1" not in els and "127.0.0.66" not in els, els
        assert not syn_dropped(h, "127.0.0.1")
        assert h.get("localhost", "/w4a-guard-status")[0] == 200
        # still refused by the guard, at the application
        assert req(h, "127.0.0.66")[0] == 429
        # logged once per ban, not at every poll
        assert d.log().count("W4A00684: 127.0.0.1 banned") == 1, d.log()
        # IPv6 bans are prefixes (the node's W4AGuardIPv6Prefix, 64), in
        # the interval set; two addresses of one /64 are one element
        for extra in (["2001:db8:1::7"], ["2001:db8:1::9"],
                      ["2001:db8:2::1"]):
            r = subprocess.run([BAN, "add", "--memcached", mc.server,
                                "--key", key_file(w4a), "--for", "30"]
                               + extra, capture_output=True, text=True)
            assert r.returncode == 0, r.stdout + r.stderr
        req(h, "127.0.0.67")
        until("the IPv6 bans in ban6",
              lambda: set(elements(d.table, "ban6")) == {
                  "2001:db8:1::/64", "2001:db8:2::/64"}, timeout=3.0)
        assert "W4A00683" not in d.log(), d.log()
    finally:
        mc.kill()


def test_firewall_max_keeps_the_bans_ending_last(w4a, fw):
    h = node(w4a, guard="W4AGuardBanTime 20 60 60")
    d = fw(h, "--max", "1").start()
    ban(h, "127.0.0.71")
    until("127.0.0.71 in the set",
          lambda: "127.0.0.71" in elements(d.table, "ban4"), timeout=3.0)
    ban(h, "127.0.0.72")     # ends after .71's
    until("127.0.0.72 in its place",
          lambda: set(elements(d.table, "ban4")) == {"127.0.0.72"},
          timeout=3.0)
    assert "W4A00685: 2 bans for every hosting, at most 1" in d.log(), \
        d.log()
    assert not syn_dropped(h, "127.0.0.71")
    assert req(h, "127.0.0.71")[0] == 429        # the guard's, still
    assert req(h, "127.0.0.73")[0] == 200


def test_firewall_remove_and_sigterm_leave_no_table(w4a, fw):
    h = node(w4a)
    d = fw(h, "--once")
    r = subprocess.run(d.args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert table_exists(d.table)
    r = subprocess.run([BAN, "firewall", "--remove", "--table", d.table],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "W4A00687" in r.stderr, r.stderr
    assert not table_exists(d.table)
    # idempotent
    r = subprocess.run([BAN, "firewall", "--remove", "--table", d.table],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # the daemon, stopped by SIGTERM
    d.args.remove("--once")
    d.start()
    assert table_exists(d.table)
    assert d.stop() == 0
    assert not table_exists(d.table), nft("list", "ruleset").stdout


@pytest.mark.parametrize("args,what", [
    (["--ports", "0"], "--ports 0"),
    (["--ports", "80,x"], "--ports 80,x"),
    (["--table", "w4a;flush ruleset"], "--table"),
    (["--never", "example.com"], "--never example.com"),
    (["--interval", "1"], "--interval 1"),
    (["--max", "0"], "--max 0"),
])
def test_firewall_bad_options_exit_2_nothing_written(w4a, fw, args, what):
    h = node(w4a)
    d = fw(h)
    r = subprocess.run(d.args + args, capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "W4A00688: " + what in r.stderr, r.stderr
    assert not table_exists(d.table)
    assert req(h, "127.0.0.69")[0] == 200


def test_firewall_status_not_read_once_exits_1(w4a, fw):
    h = node(w4a)
    d = fw(h, "--once")
    args = list(d.args)
    args[args.index("--url") + 1] = "http://127.0.0.1:%d/nothing-here" % h.port
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "W4A00681: the node's status" in r.stderr, r.stderr
    assert req(h, "127.0.0.69")[0] == 200


# A status page of our own, for what the daemon does with a page it should
# not trust: served by a process of this test (root) or of a tenant.
PAGE_SERVER = r"""
import socket, sys, time
mode, port, body = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(16)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(30)
    try:
        c.recv(65536)
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n")
        if mode == "page":
            c.sendall(body)
        elif mode == "trickle":
            for _ in range(600):
                c.sendall(b" ")
                time.sleep(0.05)
        elif mode == "endless":
            chunk = b" " * 65536
            for _ in range(1024):
                c.sendall(chunk)
    except OSError:
        pass
    c.close()
"""


def page(*clients):
    until_ms = int(time.time() * 1000) + 600000
    return json.dumps({"bans": [{"client": c, "scope": "all",
                                 "until_ms": until_ms} for c in clients]},
                      separators=(",", ":"))


class PageServer:
    def __init__(self, w4a, mode, body="", uid=None):
        from w4a_harness import free_port
        self.port = free_port()
        script = os.path.join(w4a.root, "page_server.py")
        with open(script, "w") as f:
            f.write(PAGE_SERVER)
        os.chmod(script, 0o644)

        def drop():
            if uid is not None:
                os.setgid(uid)
                os.setuid(uid)

        self.proc = subprocess.Popen(["/usr/bin/python3", script, mode,
                                      str(self.port), body],
                                     stdout=subprocess.PIPE, text=True,
                                     preexec_fn=drop)
        assert self.proc.stdout.readline().strip() == "listening"

    def url(self):
        return "http://127.0.0.1:%d/w4a-guard-status" % self.port

    def stop(self):
        self.proc.kill()
        self.proc.wait(10)


def once(d, url):
    args = list(d.args)
    args[args.index("--url") + 1] = url
    args.append("--once")
    t0 = time.time()
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return r, time.time() - t0


def test_firewall_refuses_a_page_from_a_listener_not_roots(w4a, fw):
    """A tenant binds the page's port while httpd does not hold it (a
    restart, a Listen that failed) and serves a page banning whom it
    likes: root's firewall dropped them.  Now the daemon reads only from
    a root-owned listener (httpd binds as root)."""
    import pwd
    h = node(w4a)
    d = fw(h)
    srv = PageServer(w4a, "page", page("192.0.2.81"),
                     uid=pwd.getpwnam("w4a100010").pw_uid)
    try:
        r, _ = once(d, srv.url())
    finally:
        srv.stop()
    assert r.returncode == 1, r.stderr
    assert ("W4A00681: the node's status %s not read: the socket listening "
            "on port %d belongs to uid 100010, not root" % (srv.url(),
                                                            srv.port)) \
        in r.stderr, r.stderr
    assert not table_exists(d.table) or not elements(d.table, "ban4")
    assert req(h, "127.0.0.69")[0] == 200
    # and a tenant's IPv6-only [::]:PORT beside root's IPv4 socket (which
    # it cannot take) does not stop the reads either
    srv = PageServer(w4a, "page", page("192.0.2.83"))
    uid = pwd.getpwnam("w4a100010").pw_uid
    squat = subprocess.Popen(
        ["/usr/bin/python3", "-c",
         "import signal, socket\n"
         "s = socket.socket(socket.AF_INET6)\n"
         "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n"
         "s.bind(('::', %d)); s.listen(1)\n"
         "print('listening', flush=True); signal.pause()\n" % srv.port],
        stdout=subprocess.PIPE, text=True,
        preexec_fn=lambda: (os.setgid(uid), os.setuid(uid)))
    try:
        assert squat.stdout.readline().strip() == "listening"
        r, _ = once(d, srv.url())
    finally:
        squat.kill()
        squat.wait()
        srv.stop()
    assert r.returncode == 0, r.stderr
    assert set(elements(d.table, "ban4")) == {"192.0.2.83"}


def test_firewall_bounds_a_pages_prefixes_size_and_time(w4a, fw):
    """Even a root listener's page is bounded: the guard bans one IPv4
    address or an IPv6 /48 or longer, so 2000::/3 or 10.0.0.0/8 are left
    out (W4A00682); a body without end, or one that trickles, is dropped
    (W4A00681) within the read's 2 s, and the daemon goes on."""
    h = node(w4a)
    d = fw(h)
    srv = PageServer(w4a, "page", page("2000::/3", "10.0.0.0/8",
                                       "2001:db8::/64", "192.0.2.82"))
    try:
        r, _ = once(d, srv.url())
    finally:
        srv.stop()
    assert r.returncode == 0, r.stderr
    assert "W4A00682: %s: 2 ban(s) not understood, left out" % srv.url() \
        in r.stderr, r.stderr
    assert set(elements(d.table, "ban4")) == {"192.0.2.82"}
    assert set(elements(d.table, "ban6")) == {"2001:db8::/64"}
    # the widest IPv6 ban is the guard's prefix, as --ipv6-prefix says
    srv = PageServer(w4a, "page", page("2001:db8:4000::/40", "2000::/3"))
    try:
        d.args += ["--ipv6-prefix", "40"]
        r, _ = once(d, srv.url())
    finally:
        srv.stop()
    assert r.returncode == 0, r.stderr
    assert "1 ban(s) not understood" in r.stderr, r.stderr
    assert set(elements(d.table, "ban6")) == {"2001:db8:4000::/40"}
    for mode, why in (("trickle", "no whole answer within 2000 ms"),
                      ("endless", "the answer is larger than 16777216 "
                       "bytes")):
        srv = PageServer(w4a, mode)
        try:
            r, took = once(d, srv.url())
        finally:
            srv.stop()
        assert r.returncode == 1, (mode, r.stderr)
        assert why in r.stderr, (mode, r.stderr)
        assert took < 15, (mode, took)
    assert req(h, "127.0.0.69")[0] == 200
