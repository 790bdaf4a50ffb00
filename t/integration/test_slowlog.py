"""w4a-fpm-pools --copy-slow-logs: the slow log each FPM master writes as
root, outside every hosting's tree, reaches the hosting's own
<home>/log/php/slow.log, appended by a child running as the hosting (root
never opens a path in a tenant's tree); bytes are copied once (offset kept
in a root-owned state file), bounded per run, and the customer's file is
bounded too (issue 16, item 4)."""
import os
import pwd
import stat
import subprocess
import threading

import pytest

from w4a_harness import (FPM_POOLS, ensure_user, hostings_dir_block,
                         wait_until)

A, B, C = "w4a100010", "w4a100011", "w4a100012"

# Past request_slowlog_timeout (1 s here): FPM traces it into the slow log.
SLOW_PHP = "<?php\nusleep(3000000);\necho 'slept';\n"

TARGET = "/etc/w4a-test-target"


class Node:
    """Hostings with PHP pools (slow logs in the FPM root's slow/), httpd,
    and the copy tool with its state directory under the test root."""

    def __init__(self, w4a, hostings, with_fpm=True):
        self.w4a = w4a
        self.tree = tree = w4a.tree
        self.hostings = hostings
        for h in hostings:
            tree.site(h, h + ".example", {"slow.php": SLOW_PHP})
        rc, out, self.index = tree.compile_map(
            [tree.line(h + ".example", h, h + ".example") for h in hostings])
        assert rc == 0, out
        self.fpm = w4a.fpm()
        self.slow_pattern = os.path.join(self.fpm.root, "slow/%h-%v.log")
        self.state = os.path.join(w4a.root, "slow-state")
        rc, out = self.fpm.generate(self.index,
                                    extra=["--slowlog-timeout", "1"])
        assert rc in (0, 1), out
        self.httpd = None
        if with_fpm:
            self.fpm.start()
            self.httpd = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {self.index}
W4APHPEngine on
W4APHPSocket {self.fpm.socket_pattern}
{hostings_dir_block(tree.base)}
""", with_php=True).start()

    def source(self, h):
        return self.slow_pattern.replace("%h", h).replace("%v", "8.2")

    def dest(self, h):
        return os.path.join(self.tree.home(h), "log/php/slow.log")

    def source_bytes(self, h):
        try:
            with open(self.source(h), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def slow_requests(self, hostings):
        """One slow request to each hosting at once; returns once each
        hosting's FPM slow log has a trace of it."""
        before = {h: self.source_bytes(h).count(b"usleep") for h in hostings}
        results = {}

        def one(h):
            results[h] = self.httpd.get(h + ".example", "/slow.php")

        threads = [threading.Thread(target=one, args=(h,)) for h in hostings]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for h in hostings:
            st, _, body = results[h]
            assert st == 200 and body == b"slept", (h, st, body[:300])
            wait_until(lambda: self.source_bytes(h).count(b"usleep")
                       > before[h], "a slow-log trace of %s" % h)
            assert b"slow.php" in self.source_bytes(h)

    def copy(self, *extra):
        r = subprocess.run([FPM_POOLS, "--copy-slow-logs",
                            "--slowlog", self.slow_pattern,
                            "--slow-state", self.state, *extra, self.index],
                           capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout, r.stderr

    def write_source(self, h, data, mode="ab"):
        """What the FPM master would write (tests without FPM)."""
        os.makedirs(os.path.dirname(self.source(h)), exist_ok=True)
        with open(self.source(h), mode) as f:
            f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def as_user(h, *cmd):
    """A command run as the hosting (the tenant's own shell, cron, SSH)."""
    u = pwd.getpwnam(h)
    subprocess.run(list(cmd), check=True, user=u.pw_uid, group=u.pw_gid,
                   extra_groups=[])


def test_slowlog_slow_script_reaches_the_hostings_log_once(w4a):
    n = Node(w4a, [A, B])
    n.slow_requests([A])
    src = n.source_bytes(A)
    assert os.stat(n.source(A)).st_uid == 0
    assert b"[pool %s]" % A.encode() in src and b"usleep" in src
    assert not os.path.exists(n.dest(A))

    rc, out, err = n.copy()
    assert rc == 0, out + err
    assert err == ""
    st = os.lstat(n.dest(A))
    assert stat.S_ISREG(st.st_mode)
    assert (st.st_uid, st.st_gid) == (pwd.getpwnam(A).pw_uid,
                                      pwd.getpwnam(A).pw_gid)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert read(n.dest(A)) == src
    assert not os.path.exists(n.dest(B))         # B had no slow request
    assert "1 copied (%d bytes)" % len(src) in out, out

    # A second run copies nothing again: the offset is kept.
    rc, out, err = n.copy()
    assert rc == 0 and err == "", out + err
    assert "0 copied (0 bytes)" in out, out
    assert read(n.dest(A)) == src

    # A new trace: only it is appended; B's first one reaches B.
    n.slow_requests([A, B])
    src2 = n.source_bytes(A)
    assert src2.startswith(src) and len(src2) > len(src)
    rc, out, err = n.copy()
    assert rc == 0 and err == "", out + err
    assert read(n.dest(A)) == src2
    assert read(n.dest(B)) == n.source_bytes(B)
    assert os.stat(n.dest(B)).st_uid == pwd.getpwnam(B).pw_uid

    # The state is root's, in root's directory, out of every tenant's reach.
    st = os.stat(n.state)
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) & 0o077 == 0


def test_slowlog_copy_is_bounded_per_run_and_the_customer_file_too(w4a):
    n = Node(w4a, [A], with_fpm=False)
    data = b"".join(b"trace %04d ......................\n" % i
                    for i in range(30))          # 30 x 34 bytes = 1020
    n.write_source(A, data)
    limit = ["--slow-copy-limit", "400", "--slow-log-size", "800"]
    rc, out, err = n.copy(*limit)
    assert rc == 0 and err == "", out + err
    assert read(n.dest(A)) == data[:400]
    assert "620 bytes left for the next run" in out, out
    rc, out, err = n.copy(*limit)
    assert rc == 0 and err == "", out + err
    assert read(n.dest(A)) == data[:800]
    # 800 + 220 > 800: the customer's file becomes slow.log.1 (as the
    # hosting), the rest starts a new slow.log.
    rc, out, err = n.copy(*limit)
    assert rc == 0, out + err
    assert "W4A00927" in err and A in err and n.dest(A) in err, err
    assert read(n.dest(A) + ".1") == data[:800]
    assert read(n.dest(A)) == data[800:]
    st = os.stat(n.dest(A) + ".1")
    assert st.st_uid == pwd.getpwnam(A).pw_uid
    rc, out, err = n.copy(*limit)
    assert rc == 0 and err == "" and "0 copied" in out, out + err

    # A per-run limit above the customer's cap could never be written.
    rc, out, err = n.copy("--slow-copy-limit", "900", "--slow-log-size", "800")
    assert rc == 2, out + err


def test_slowlog_source_rotated_or_truncated_is_followed(w4a):
    n = Node(w4a, [A], with_fpm=False)
    n.write_source(A, b"one\n")
    rc, out, err = n.copy()
    assert rc == 0 and err == "", out + err
    # Written after the last run, then rotated (logrotate: rename, a new
    # file, FPM reopens): the old file's tail is copied from .1, then the
    # new file from its start.
    n.write_source(A, b"two\n")
    os.rename(n.source(A), n.source(A) + ".1")
    n.write_source(A, b"three\n")
    rc, out, err = n.copy()
    assert rc == 0 and err == "", out + err
    assert read(n.dest(A)) == b"one\ntwo\nthree\n"
    # Truncated in place below the offset: copied from its start.
    n.write_source(A, b"4\n", mode="wb")
    rc, out, err = n.copy()
    assert rc == 0 and err == "", out + err
    assert read(n.dest(A)) == b"one\ntwo\nthree\n4\n"
    # Gone (rotated, no new file yet): nothing, no error.
    os.unlink(n.source(A))
    os.unlink(n.source(A) + ".1")
    rc, out, err = n.copy()
    assert rc == 0 and err == "", out + err


@pytest.fixture
def target():
    with open(TARGET, "w") as f:
        f.write("root's own file\n")
    os.chmod(TARGET, 0o644)
    yield TARGET
    os.unlink(TARGET)


def test_slowlog_tenant_symlink_to_a_root_file_is_not_followed(w4a, target):
    n = Node(w4a, [A, B])
    as_user(A, "ln", "-s", target, n.dest(A))
    n.slow_requests([A, B])
    rc, out, err = n.copy()
    assert rc == 1, out + err
    assert "W4A00924" in err and ("hosting %s" % A) in err \
        and n.dest(A) in err and "symbolic links" in err, err
    assert read(target) == b"root's own file\n"
    assert os.stat(target).st_uid == 0
    assert os.path.islink(n.dest(A))
    # B is copied all the same.
    assert read(n.dest(B)) == n.source_bytes(B)
    # A's bytes wait: once the customer puts a file back, they arrive.
    as_user(A, "rm", n.dest(A))
    rc, out, err = n.copy()
    assert rc == 0 and err == "", out + err
    assert read(n.dest(A)) == n.source_bytes(A)
    assert read(target) == b"root's own file\n"


def test_slowlog_tenant_fifo_is_refused_without_hanging(w4a):
    n = Node(w4a, [A, B], with_fpm=False)
    n.write_source(A, b"A's trace\n")
    n.write_source(B, b"B's trace\n")
    as_user(A, "mkfifo", "-m", "0666", n.dest(A))
    # No reader: opening it for writing would block; it does not.
    rc, out, err = n.copy()
    assert rc == 1, out + err
    assert "W4A00924" in err and ("hosting %s" % A) in err \
        and n.dest(A) in err, err
    assert read(n.dest(B)) == b"B's trace\n"
    # A reader holding it open (the tenant waiting for bytes): opened, seen
    # not to be a regular file on the descriptor, nothing written.
    rfd = os.open(n.dest(A), os.O_RDONLY | os.O_NONBLOCK)
    try:
        rc, out, err = n.copy()
        assert rc == 1, out + err
        assert "W4A00924" in err and "not a regular file" in err, err
        try:
            got = os.read(rfd, 100)             # EOF: the writer has gone
        except BlockingIOError:
            got = b""
        assert got == b""                       # nothing came through
    finally:
        os.close(rfd)
    assert stat.S_ISFIFO(os.lstat(n.dest(A)).st_mode)
    # log/php itself a FIFO: refused as no directory, without blocking.
    a_dir = os.path.dirname(n.dest(A))
    as_user(A, "rm", "-r", a_dir)
    as_user(A, "mkfifo", "-m", "0666", a_dir)
    rc, out, err = n.copy()
    assert rc == 1, out + err
    assert "W4A00924" in err and a_dir in err \
        and "Not a directory" in err, err
    # log/php gone: made again, as the hosting, and A's bytes arrive.
    as_user(A, "rm", a_dir)
    rc, out, err = n.copy()
    assert rc == 0 and err == "", out + err
    assert read(n.dest(A)) == b"A's trace\n"
    assert os.stat(a_dir).st_uid == pwd.getpwnam(A).pw_uid
    assert read(n.dest(B)) == b"B's trace\n"       # once only


def test_slowlog_tenant_log_dir_pointed_at_another_hosting_writes_nothing(w4a):
    n = Node(w4a, [A, B])
    n.slow_requests([A, B])
    rc, out, err = n.copy()
    assert rc == 0 and err == "", out + err
    b_before = read(n.dest(B))
    b_dir = os.path.dirname(n.dest(B))
    b_files = sorted(os.listdir(b_dir))
    a_dir = os.path.dirname(n.dest(A))
    # A swaps its log/php for a symlink to B's.
    as_user(A, "mv", a_dir, a_dir + ".old")
    as_user(A, "ln", "-s", b_dir, a_dir)
    n.slow_requests([A])
    rc, out, err = n.copy()
    assert rc == 1, out + err
    assert "W4A00924" in err and ("hosting %s" % A) in err \
        and "Permission denied" in err, err
    assert read(n.dest(B)) == b_before
    assert sorted(os.listdir(b_dir)) == b_files
    assert all(os.stat(os.path.join(b_dir, f)).st_uid
               == pwd.getpwnam(B).pw_uid for f in os.listdir(b_dir))
    # Even with B's home opened to all, B's own modes stop A's process:
    # what root could have written, the hosting cannot.
    os.chmod(n.tree.home(B), 0o755)
    rc, out, err = n.copy()
    assert rc == 1 and "Permission denied" in err, out + err
    assert read(n.dest(B)) == b_before
    assert not os.path.exists(os.path.join(b_dir, "slow.log.1"))


LEASE_HOLDER = r"""
import fcntl, os, signal, sys
signal.signal(signal.SIGIO, signal.SIG_IGN)     # no release on a break
fd = os.open(sys.argv[1], os.O_WRONLY)
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
print("held", flush=True)
sys.stdin.read()            # until the test closes our stdin
"""


def test_slowlog_tenant_lease_on_its_file_does_not_hold_the_copy(w4a):
    """A file lease the hosting takes on its own slow.log makes a plain
    open() by anyone else wait for the lease break (45 s by default): the
    child opens it O_NONBLOCK, so it is refused at once instead."""
    n = Node(w4a, [A, B], with_fpm=False)
    n.write_source(A, b"A's trace\n")
    n.write_source(B, b"B's trace\n")
    as_user(A, "touch", n.dest(A))
    u = pwd.getpwnam(A)
    holder = subprocess.Popen(["/usr/bin/python3", "-c", LEASE_HOLDER,
                               n.dest(A)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True,
                              user=u.pw_uid, group=u.pw_gid, extra_groups=[])
    try:
        assert holder.stdout.readline() == "held\n"
        rc, out, err = n.copy()
        assert rc == 1, out + err
        assert "W4A00924" in err and ("hosting %s" % A) in err \
            and "Resource temporarily unavailable" in err, err
        assert read(n.dest(B)) == b"B's trace\n"
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert read(n.dest(A)) == b""
    rc, out, err = n.copy()
    assert rc == 0 and err == "", out + err
    assert read(n.dest(A)) == b"A's trace\n"


STOPPER = r"""
import os, signal, sys, time
end = time.time() + float(sys.argv[1])
print("go", flush=True)
while time.time() < end:
    try:
        os.kill(-1, signal.SIGSTOP)     # every process of this uid but us
    except ProcessLookupError:
        pass
"""


# The stopping tenant of the test below: a uid no other test uses, since
# its kill(-1) stops every process of its uid on the machine (the FPM
# workers of A in a run alongside, were it A).
STOPPER_H, STOPPER_UID = "w4a100077", 100077


def test_slowlog_tenant_stopping_its_copy_child_does_not_hold_the_run(w4a):
    """The copy child runs as the hosting, so the hosting may SIGSTOP it
    (here a loop stopping every process of its uid).  The run used to wait
    its whole 10 s timeout for each stopped child (serially, so a tenant
    with a few pools made runs miss their minute), and for ever for a
    child stopped after its report.  Now a stopped child is seen and
    killed at once; B's copy is whole, the stopper's bytes come with a
    later run."""
    import time
    ensure_user(STOPPER_H, STOPPER_UID)
    A = STOPPER_H                       # the stopping tenant, in this test
    n = Node(w4a, [A, B], with_fpm=False)
    u = pwd.getpwnam(A)
    stopper = subprocess.Popen(["/usr/bin/python3", "-c", STOPPER, "120"],
                               stdout=subprocess.PIPE, text=True,
                               user=u.pw_uid, group=u.pw_gid, extra_groups=[])
    caught, b_sent = 0, b""
    try:
        assert stopper.stdout.readline() == "go\n"
        # the stopper races the short-lived child: run until it wins once
        for i in range(300):
            n.write_source(A, b"A's trace %d\n" % i)
            n.write_source(B, b"B's trace %d\n" % i)
            b_sent += b"B's trace %d\n" % i
            t0 = time.time()
            rc, out, err = n.copy()
            took = time.time() - t0
            assert took < 4.0, (i, took, err)
            if "W4A00926" in err:
                assert ("hosting %s" % A) in err and "was stopped" in err, err
                assert rc == 1, out + err
                caught += 1
                if caught == 3:
                    break
            else:
                assert rc == 0, out + err
    finally:
        stopper.kill()
        stopper.wait()
    assert caught == 3, "the stopper never stopped a copy child"
    assert read(n.dest(B)) == b_sent
    # nothing of A's lost: the next run, unstopped, brings the rest (a
    # child stopped after its write, before its report, has its bytes
    # written again: a line may be there twice, none is missing)
    rc, out, err = n.copy()
    assert rc == 0 and err == "", out + err
    assert set(read(n.source(A)).splitlines()) \
        <= set(read(n.dest(A)).splitlines())
