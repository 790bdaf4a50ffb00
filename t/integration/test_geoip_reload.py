"""mod_w4a_geoip: database updates without a restart and without failing a
request, whatever way the file is replaced; missing and corrupt databases
at start-up and at reload."""
import http.client
import json
import os
import re
import subprocess
import threading
import time

from geoip_mmdb import OURS, FR, US, UA, IP, IP6, make_mmdb, mmdb_bytes, xff
from w4a_harness import wait_until

INTERVAL = 1


class Hammer:
    """Threads sending requests on keep-alive connections until stopped;
    every answer is recorded as (time, status, X-CC) and every failure
    (exception, status other than 200) kept."""

    def __init__(self, port, ip, threads=4):
        self.port, self.ip = port, ip
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.results, self.failures = [], []
        self.threads = [threading.Thread(target=self.run, daemon=True)
                        for _ in range(threads)]

    def run(self):
        conn = None
        while not self.stop_flag.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                      timeout=10)
                conn.request("GET", "/", headers={
                    "Host": "localhost", "X-Forwarded-For": self.ip})
                resp = conn.getresponse()
                resp.read()
                cc = resp.getheader("X-CC")
                with self.lock:
                    self.results.append((time.time(), resp.status, cc))
                    if resp.status != 200:
                        self.failures.append(("status", resp.status))
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:       # noqa: BLE001 - every failure counts
                with self.lock:
                    self.failures.append(("exception", repr(e)))
                conn = None
        if conn:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(20)

    def since(self, t0):
        with self.lock:
            return [r for r in self.results if r[0] >= t0]

    def wait_all(self, cc, settle=1.5, timeout=20):
        """Wait until every answer for `settle` seconds says cc; return the
        time the last other answer was seen."""
        end = time.time() + timeout
        while time.time() < end:
            time.sleep(0.25)
            with self.lock:
                last_other = max([r[0] for r in self.results if r[2] != cc],
                                 default=0)
                newest = self.results[-1][0] if self.results else 0
            if newest - last_other >= settle and newest > last_other:
                return last_other
        raise AssertionError("answers did not all become %s" % cc)


def wait_log_after(httpd, n, regex, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if re.search(regex, httpd.log()[n:]):
            return True
        time.sleep(0.05)
    return False


def server(w4a, db_path, log_level="info"):
    return w4a.httpd(f"""
W4AGeoIPDatabase country {db_path}
W4AGeoIPCheckInterval {INTERVAL}
W4AGeoIPTrustedProxy 127.0.0.1
Header always set X-CC "%{{GEOIP_COUNTRY_CODE}}e"
Header always set X-Ex "%{{BTW_FORBIDDEN_GEOIP}}e"
KeepAlive On
MaxKeepAliveRequests 0
<Location /w4a-geoip-status>
    SetHandler w4a-geoip-status
</Location>
""", ours=OURS, log_level=log_level).start()


def status(httpd):
    """The database's figures: node-wide at the top, those of the process
    that answered under "this_process" (see mine())."""
    st, h, b = httpd.get("localhost", "/w4a-geoip-status")
    assert st == 200, b
    return json.loads(b)["databases"][0]


def mine(httpd):
    """What the answering process has loaded: true of that child only."""
    return status(httpd)["this_process"]


def cc(httpd, ip=IP[FR]):
    st, h, b = httpd.get("localhost", "/", xff(ip))
    assert st == 200, b
    return h.get("x-cc"), h.get("x-ex")


def replace_rename(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def replace_cp(path, data):
    src = path + ".src"
    with open(src, "wb") as f:
        f.write(data)
    subprocess.run(["cp", src, path], check=True)     # in place, O_TRUNC


def replace_slowly(path, data, pieces=12, pause=0.15, long_pause_at=None,
                   long_pause=0):
    """Truncate the live file and write it back in pieces."""
    step = max(1, len(data) // pieces)
    with open(path, "r+b") as f:
        f.truncate(0)
        f.flush()
        for i, off in enumerate(range(0, len(data), step)):
            f.write(data[off:off + step])
            f.flush()
            os.fsync(f.fileno())
            time.sleep(long_pause if i == long_pause_at else pause)


def reload_under_load(w4a, replace, **kw):
    path = make_mmdb(os.path.join(w4a.root, "country.mmdb"))
    new = mmdb_bytes(w4a.root, swap={FR: US})          # FR block resold to US
    httpd = server(w4a, path)
    assert cc(httpd) == (FR, "0")
    with Hammer(httpd.port, IP[FR]) as hammer:
        wait_until(lambda: len(hammer.since(0)) > 20,
                   "20 answers before the database is replaced")
        t0 = time.time()
        replace(path, new, **kw)
        t1 = time.time()
        last_fr = hammer.wait_all(US)
        wait_until(lambda: len(hammer.since(last_fr + 1e-6)) > 40,
                   "40 answers after the last FR one")
    assert hammer.failures == []
    before = [r for r in hammer.results if r[0] < t0]
    after = [r for r in hammer.results if r[0] > last_fr]
    assert before and all(r[2] == FR for r in before)
    assert len(after) > 20 and all(r[2] == US for r in after)
    # nothing but FR and US, ever: no garbage, no missing variable
    assert {r[2] for r in hammer.results} == {FR, US}
    assert last_fr - t1 < 4 * INTERVAL + 2
    assert httpd.wait_log(r"W4A00311: database country: reloaded from "
                          + path)
    # node-wide: one new file, one reload, whichever child answers
    assert [s["reloads"] for s in (status(httpd) for _ in range(6))] \
        == [1] * 6
    s = mine(httpd)
    assert s["loaded"] and s["copy"] != path
    return httpd, hammer


def test_geoip_reload_by_rename_under_load(w4a):
    httpd, hammer = reload_under_load(w4a, replace_rename)
    assert "W4A00310" not in httpd.log()
    assert status(httpd)["refused"] == 0


def test_geoip_reload_by_copy_over_under_load(w4a):
    httpd, hammer = reload_under_load(w4a, replace_cp)
    assert "W4A00310" not in httpd.log()
    assert status(httpd)["refused"] == 0


def test_geoip_reload_by_truncate_and_slow_write_under_load(w4a):
    httpd, hammer = reload_under_load(w4a, replace_slowly)
    assert "W4A00310" not in httpd.log()
    assert status(httpd)["refused"] == 0


def test_geoip_reload_slow_write_with_long_stall_refuses_the_half_file(w4a):
    """The writer stalls longer than the check interval with half a file:
    the half file is stable, copied, found invalid and refused (the old
    database stays); the finished file is then picked up."""
    httpd, hammer = reload_under_load(w4a, replace_slowly, pieces=6,
                                      long_pause_at=2,
                                      long_pause=3 * INTERVAL + 1)
    assert httpd.wait_log(r"W4A00310: database country: new file .* "
                          r"refused: .*; the database in use stays")
    httpd.expect_error(r"W4A00310")
    # the half file is one version: refused once for the node
    assert status(httpd)["refused"] == 1


def corrupt_variants(good):
    tree_smashed = b"\xff" * 2048 + good[2048:]
    return [
        ("garbage", os.urandom(len(good))),
        ("truncated", good[:len(good) // 2]),
        ("empty", b""),
        ("tree smashed", tree_smashed),
    ]


def test_geoip_corrupt_file_at_reload_refused_old_database_stays(w4a):
    path = make_mmdb(os.path.join(w4a.root, "country.mmdb"))
    good_us = mmdb_bytes(w4a.root, swap={FR: US})
    good_ua = mmdb_bytes(w4a.root, swap={FR: UA})
    httpd = server(w4a, path)
    httpd.expect_error(r"W4A00310")
    with Hammer(httpd.port, IP[FR]) as hammer:
        for i, (what, data) in enumerate(corrupt_variants(good_us)):
            n = len(httpd.log())
            (replace_rename if i % 2 == 0 else replace_cp)(path, data)
            assert wait_log_after(httpd, n, r"W4A00310: database country: new "
                                  r"file %s refused: .*the database in use "
                                  r"stays" % path, 4 * INTERVAL + 5), what
            time.sleep(2 * INTERVAL + 0.5)        # every child
            assert "W4A00311" not in httpd.log()[n:], what
            assert cc(httpd) == (FR, "0"), what
            # node-wide: this version refused once, whichever child
            # answers
            wait_until(lambda: status(httpd)["refused"] == i + 1,
                       "the node's refused count to be %d" % (i + 1))
        # a good file after the bad ones: taken
        replace_rename(path, good_ua)
        hammer.wait_all(UA)
    assert hammer.failures == []
    assert {r[2] for r in hammer.results} == {FR, UA}
    s = status(httpd)
    assert (s["refused"], s["reloads"]) == (4, 1), s


def test_geoip_missing_database_at_startup_serves_then_picks_it_up(w4a):
    path = os.path.join(w4a.root, "country.mmdb")
    httpd = server(w4a, path)
    httpd.expect_error(r"W4A00313: database country: .* is missing")
    assert httpd.wait_log(r"W4A00313: database country: %s is missing; "
                          r"httpd serves without its variables" % path)
    # serving, variables absent, the exemption variable still set
    assert cc(httpd) == ("(null)", "0")
    s = status(httpd)
    assert s["lookups"] == 0 and s["reloads"] == 0
    # every child starts with the parent's state
    s = s["this_process"]
    assert s["loaded"] is False and "missing at start-up" in s["last_error"]
    make_mmdb(path)
    end = time.time() + 4 * INTERVAL + 5
    while time.time() < end and cc(httpd) != (FR, "0"):
        time.sleep(0.2)
    wait_until(lambda: all(cc(httpd) == (FR, "0") for _ in range(10)),
               "10 answers in a row with the new database")
    assert status(httpd)["reloads"] == 1


def test_geoip_corrupt_database_at_startup_serves_then_picks_up_good(w4a):
    path = os.path.join(w4a.root, "country.mmdb")
    good = mmdb_bytes(w4a.root)
    for what, data in corrupt_variants(good):
        with open(path, "wb") as f:
            f.write(data)
        httpd = server(w4a, path)
        httpd.expect_error(r"W4A00314: database country: .* refused at "
                           r"start-up")
        assert httpd.wait_log(r"W4A00314: database country: %s refused at "
                              r"start-up: .*; httpd serves without its "
                              r"variables" % path), what
        assert cc(httpd) == ("(null)", "0"), what
        s = mine(httpd)        # every child starts with the parent's state
        assert s["loaded"] is False and "refused at start-up" in \
            s["last_error"], what
        httpd.stop()
    # the last server, then a good file
    httpd = server(w4a, path)
    httpd.expect_error(r"W4A00314")
    replace_rename(path, good)
    end = time.time() + 4 * INTERVAL + 5
    while time.time() < end and cc(httpd) != (FR, "0"):
        time.sleep(0.2)
    assert cc(httpd) == (FR, "0")


def test_geoip_database_removed_keeps_the_one_in_use(w4a):
    path = make_mmdb(os.path.join(w4a.root, "country.mmdb"))
    httpd = server(w4a, path)
    os.unlink(path)
    assert httpd.wait_log(r"W4A00312: database country: %s is gone; the "
                          r"database in use stays" % path, 4 * INTERVAL + 3)
    assert all(cc(httpd) == (FR, "0") for _ in range(5))
    # graceful restart with the file still gone: serves, variables absent
    httpd.graceful()
    httpd.expect_error(r"W4A00313")
    assert httpd.wait_log(r"W4A00313")
    assert cc(httpd)[1] == "0"


def test_geoip_private_copies_do_not_pile_up(w4a):
    path = make_mmdb(os.path.join(w4a.root, "country.mmdb"))
    httpd = server(w4a, path)
    private = os.path.join(httpd.root, "w4a-geoip")
    for i, cc_new in enumerate((US, UA, FR)):
        replace_rename(path, mmdb_bytes(w4a.root, swap={FR: cc_new}))
        end = time.time() + 4 * INTERVAL + 5
        while time.time() < end and cc(httpd)[0] != cc_new:
            time.sleep(0.2)
        time.sleep(2 * INTERVAL + 0.5)
    files = os.listdir(private)
    # one current copy (shared by the processes), maybe one a slow child
    # has not let go of yet
    assert 1 <= len(files) <= 2, files
    assert not [f for f in files if f.endswith(".tmp")]
    assert oct(os.stat(private).st_mode & 0o777) == "0o700"


def test_geoip_unusable_private_directory_serves_without_database(w4a):
    """The private directory cannot be made (a file is in the way): httpd
    still starts and serves, the variables are absent, the status says
    why."""
    path = make_mmdb(os.path.join(w4a.root, "country.mmdb"))
    h = w4a.httpd(f"""
W4AGeoIPDatabase country {path}
W4AGeoIPTrustedProxy 127.0.0.1
Header always set X-CC "%{{GEOIP_COUNTRY_CODE}}e"
Header always set X-Ex "%{{BTW_FORBIDDEN_GEOIP}}e"
<Location /w4a-geoip-status>
    SetHandler w4a-geoip-status
</Location>
""", ours=OURS)
    with open(os.path.join(h.root, "w4a-geoip"), "w") as f:
        f.write("in the way\n")
    h.expect_error(r"W4A00314: database country: .* refused at start-up: "
                   r"cannot create the private copy")
    h.start()
    assert h.wait_log(r"W4A00314")
    assert cc(h) == ("(null)", "0")
    s = mine(h)            # every child starts with the parent's state
    assert s["loaded"] is False and "private copy" in s["last_error"]


def statuses_from_two_children(httpd, timeout=30):
    """Status answers over separate connections, sent in parallel bursts
    until at least two children have answered; each is (pid, figures)."""
    seen, lock = [], threading.Lock()

    def one():
        s = status(httpd)
        with lock:
            seen.append((s["this_process"]["pid"], s))

    end = time.time() + timeout
    while len({pid for pid, _ in seen}) < 2:
        assert time.time() < end, ("timed out waiting for a second child "
                                   "to answer the status (pids %s)"
                                   % sorted({p for p, _ in seen}))
        threads = [threading.Thread(target=one) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    return seen


def test_geoip_status_reload_counts_are_the_same_whichever_child_answers(w4a):
    """Each child reloads a new file by itself; the node's reloads and
    refused count each new version once, so every child's status says the
    same (issue 14: a figure must not depend on which child answers)."""
    path = make_mmdb(os.path.join(w4a.root, "country.mmdb"))
    httpd = server(w4a, path)
    httpd.expect_error(r"W4A00310")
    new = mmdb_bytes(w4a.root, swap={FR: US})
    # statuses polled in parallel while the children take the new file
    # one after the other: once one answer says 1 reload, no answer to a
    # request sent later says 0 (a per-process count would, from a child
    # that has not checked yet)
    polls, lock, done = [], threading.Lock(), threading.Event()

    def poll():
        while not done.is_set():
            t0 = time.time()
            s = status(httpd)
            with lock:
                polls.append((t0, time.time(), s["this_process"]["pid"],
                              s["reloads"]))

    pollers = [threading.Thread(target=poll) for _ in range(4)]
    for t in pollers:
        t.start()
    try:
        replace_rename(path, new)
        wait_until(lambda: status(httpd)["reloads"] == 1,
                   "the node's first reload of the new file")
        wait_until(lambda: all(cc(httpd)[0] == US for _ in range(10)),
                   "10 answers in a row with the new database")
    finally:
        done.set()
        for t in pollers:
            t.join(20)
    first = min(t1 for t0, t1, pid, n in polls if n == 1)
    late = [p for p in polls if p[3] == 0 and p[0] > first]
    assert not late, late[:5]
    assert {n for _, _, _, n in polls} <= {0, 1}
    seen = statuses_from_two_children(httpd)
    assert {(s["reloads"], s["refused"]) for _, s in seen} == {(1, 0)}, seen
    # a broken file: refused once for the node, the database in use stays
    replace_rename(path, b"\xff" * 4096)
    wait_until(lambda: status(httpd)["refused"] == 1,
               "the node's refusal of the broken file")
    seen = statuses_from_two_children(httpd)
    assert {(s["reloads"], s["refused"]) for _, s in seen} == {(1, 1)}, seen
    assert len({s["last_reload"] for _, s in seen}) == 1, seen
    assert all(cc(httpd)[0] == US for _ in range(10))
