"""w4a-logrotate-hostings: each hosting's access log rotated as the
hosting, in a logrotate run of its own with a deadline.

A hostile tenant owns its log directory.  Hole (fixed, 2026-12-03): the
stanzas of every hosting were run in the system's one logrotate run; a
FIFO named access.log.1 (logrotate opens it read-write, so the open does
not block, then the hosting's gzip waits on it for ever), a stopped gzip
or a 16 TB sparse file held that run with no deadline: no log of the node
rotated again (the next runs find the state file locked).  Real
logrotate, real gzip, the hostings' real users.
"""
import os
import pwd
import re
import subprocess
import time

import pytest

from w4a_harness import SOURCE, wait_until

TOOL = os.path.join(SOURCE, "support/w4a-logrotate-hostings")
A, B = "w4a100010", "w4a100011"


def make_sites(w4a):
    """A and B with the log flag, one line in each access.log."""
    tree = w4a.tree
    for h, d in ((A, "a.example"), (B, "b.example")):
        tree.site(h, d, {"index.html": "x\n"})
        log = os.path.join(tree.home(h), "log/apache2/access.log")
        with open(log, "w") as f:
            f.write("a line of %s\n" % h)
        uid = pwd.getpwnam(h).pw_uid
        os.chown(log, uid, uid)
    text = os.path.join(w4a.root, "map.txt")
    with open(text, "w") as f:
        f.write("%s\n%s\n"
                % (tree.line("a.example", A, "a.example", flags="log"),
                   tree.line("b.example", B, "b.example", flags="log")))
    conf = os.path.join(w4a.root, "logrotate-hostings")
    r = subprocess.run([TOOL, text, conf], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return text, conf


def holders(path):
    """The processes with path open."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink("/proc/%s/fd/%s" % (pid, fd)) == path:
                    out.append(int(pid))
                    break
            except OSError:
                pass
    return out


def rotate(w4a, conf, *opts, env=None):
    t0 = time.time()
    r = subprocess.run([TOOL, "--rotate", "--force", "--state",
                        os.path.join(w4a.root, "state"), *opts, conf],
                       capture_output=True, text=True, timeout=120, env=env)
    return r, time.time() - t0


# The tenant: every gzip of its uid stopped as soon as it shows.
STOPPER = r"""
import os, signal, sys, time
end = time.time() + float(sys.argv[1])
while time.time() < end:
    for pid in os.listdir("/proc"):
        try:
            if open("/proc/%s/comm" % pid).read().strip() == "gzip":
                os.kill(int(pid), signal.SIGSTOP)
        except (OSError, ValueError):
            pass
    time.sleep(0.005)
"""


def gzips_of(uid):
    out = []
    for pid in os.listdir("/proc"):
        try:
            if (open("/proc/%s/comm" % pid).read().strip() == "gzip"
                    and os.stat("/proc/%s" % pid).st_uid == uid):
                out.append(int(pid))
        except (OSError, ValueError):
            pass
    return out


def test_logrotate_hostings_one_file_per_hosting_rotated_as_the_hosting(w4a):
    text, conf = make_sites(w4a)
    assert sorted(os.listdir(conf)) == [A + ".conf", B + ".conf"]
    stanza = open(os.path.join(conf, B + ".conf")).read()
    assert "su %s %s" % (B, B) in stanza and A not in stanza, stanza
    # as cron runs it: PATH=/usr/bin:/bin, no sbin (where logrotate is)
    r, _ = rotate(w4a, conf, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    for h in (A, B):
        one = os.path.join(w4a.tree.home(h), "log/apache2/access.log.1")
        st = os.stat(one)
        assert st.st_uid == pwd.getpwnam(h).pw_uid, h
        assert open(one).read() == "a line of %s\n" % h
    # B leaves the map: its file goes, A's stays
    with open(text) as f:
        lines = [ln for ln in f if not ln.startswith("b.example")]
    with open(text, "w") as f:
        f.writelines(lines)
    r = subprocess.run([TOOL, text, conf], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.listdir(conf) == [A + ".conf"]


def test_logrotate_hostings_a_fifo_in_one_log_dir_holds_that_hosting_only(w4a):
    """A's access.log.1 is a FIFO: the compression of A waits on it.  A's
    run is stopped at the deadline (W4A00970), no process of A's is left,
    and B, after A in the order, is rotated in the same run, and again in
    the next run (no lock left behind)."""
    _, conf = make_sites(w4a)
    logdir = os.path.join(w4a.tree.home(A), "log/apache2")
    fifo = os.path.join(logdir, "access.log.1")
    os.mkfifo(fifo)
    uid = pwd.getpwnam(A).pw_uid
    os.chown(fifo, uid, uid)
    b_one = os.path.join(w4a.tree.home(B), "log/apache2/access.log.1")
    r, took = rotate(w4a, conf, "--deadline", "2")
    assert r.returncode == 1, r.stderr
    # Debian 12's logrotate (3.21) waits on the FIFO: W4A00970; from 3.22
    # it refuses a FIFO (W4A00971): either way A's run alone
    assert re.search(r"W4A0097[01]: hosting %s: logrotate (stopped after 2 "
                     r"s \(--deadline\)|failed)" % A, r.stderr), r.stderr
    assert B not in r.stderr, r.stderr
    assert took < 20, took
    assert open(b_one).read() == "a line of %s\n" % B
    # the run's gzip (A's) goes with it: polled, as it takes its SIGTERM
    # a moment after logrotate's end
    wait_until(lambda: not holders(fifo), "no process holding A's FIFO "
               "(left: %s)" % holders(fifo), 10)
    # the next run: A held again, B rotated again
    with open(os.path.join(w4a.tree.home(B), "log/apache2/access.log"),
              "w") as f:
        f.write("the second line of B\n")
    r, _ = rotate(w4a, conf, "--deadline", "2")
    assert r.returncode == 1 and len(re.findall("W4A0097[01]", r.stderr)) \
        == 1, r.stderr
    assert open(b_one).read() == "the second line of B\n"
    assert os.path.exists(b_one.replace(".1", ".2.gz"))


def test_logrotate_hostings_bad_arguments_refused_with_a_reason(w4a):
    for args, want in ((["--rotate", "--deadline", "x"], "--deadline x: "
                        "expected whole seconds"),
                       (["--rotate", "--deadline", "0"], "--deadline 0"),
                       (["--rotate", "--budget", "1h"], "--budget 1h: "
                        "expected whole seconds"),
                       (["--rotate", "/nonexistent"], "cannot read "
                        "/nonexistent"),
                       (["/nonexistent.map"], "cannot read "
                        "/nonexistent.map"),
                       (["--bogus"], "usage:")):
        r = subprocess.run([TOOL, *args], capture_output=True, text=True)
        assert r.returncode == 2 and want in r.stderr, (args, r.stderr)


def test_logrotate_hostings_never_writes_a_rotation_as_a_system_user(w4a):
    """The text map is read without the compiler: a record the compiler
    refuses (root, uid 0, or a system user's name with a hosting's uid)
    would have root or a system user rotate in a hosting's directory."""
    text, conf = make_sites(w4a)
    docroot = w4a.tree.docroot(A, "a.example")
    with open(text, "a") as f:
        f.write("r.example root 0 0 %s 8.2 active log\n" % docroot)
        f.write("d.example daemon 100010 100010 %s 8.2 active log\n" % docroot)
        f.write("u.example w4a100010 100010 100010 %s 8.2 active "
                "log=/datas/../etc\n" % docroot)
    r = subprocess.run([TOOL, text, conf], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(conf)) == [A + ".conf", B + ".conf"], r.stderr
    assert "daemon: no such user, or a system user" in r.stderr, r.stderr
    assert "/etc" not in open(os.path.join(conf, A + ".conf")).read()


def test_logrotate_hostings_a_stopped_gzip_is_killed_and_holds_no_lock(w4a):
    """A's access.log.1 is a 4 GiB sparse file, and A stops its own gzip
    (same uid) as soon as it starts.  The run stops A's logrotate at the
    deadline and kills its whole process group: no gzip of A's is left,
    stopped, holding the run's lock (its descriptor is not inherited
    either), so the next run rotates B again, A last."""
    _, conf = make_sites(w4a)
    uid = pwd.getpwnam(A).pw_uid
    one = os.path.join(w4a.tree.home(A), "log/apache2/access.log.1")
    with open(one, "w") as f:
        f.truncate(4 << 30)
    os.chown(one, uid, uid)
    script = os.path.join(w4a.root, "stopper.py")
    with open(script, "w") as f:
        f.write(STOPPER)
    os.chmod(script, 0o644)

    def as_a():
        os.setgid(uid)
        os.setuid(uid)

    stopper = subprocess.Popen(["/usr/bin/python3", script, "60"],
                               preexec_fn=as_a)
    try:
        r, took = rotate(w4a, conf, "--deadline", "2")
    finally:
        stopper.kill()
        stopper.wait()
    assert r.returncode == 1, r.stderr
    assert "W4A00970: hosting %s: logrotate stopped after 2 s" % A \
        in r.stderr, r.stderr
    assert took < 20, took
    wait_until(lambda: not gzips_of(uid), "no gzip of A's left", 10)
    lock = os.path.join(w4a.root, "state/.lock")
    assert holders(lock) == [], holders(lock)
    assert os.path.exists(os.path.join(w4a.root, "state", A + ".held"))
    b_log = os.path.join(w4a.tree.home(B), "log/apache2/access.log")
    with open(b_log, "w") as f:
        f.write("B again\n")
    r, _ = rotate(w4a, conf, "--deadline", "2")
    assert "W4A00972" not in r.stderr, r.stderr
    assert open(b_log + ".1").read() == "B again\n"


def test_logrotate_hostings_a_held_hosting_goes_last_within_the_budget(w4a):
    """A (first in the order) holds its run (a FIFO) for the 2 s
    deadline; --budget 1: B waits for the next run (W4A00973), where A,
    held last time, goes after B: B rotates.  A runs once a run."""
    _, conf = make_sites(w4a)
    logdir = os.path.join(w4a.tree.home(A), "log/apache2")
    uid = pwd.getpwnam(A).pw_uid
    fifo = os.path.join(logdir, "access.log.1")
    os.mkfifo(fifo)
    os.chown(fifo, uid, uid)
    b_one = os.path.join(w4a.tree.home(B), "log/apache2/access.log.1")
    r, _ = rotate(w4a, conf, "--deadline", "2", "--budget", "1")
    assert r.returncode == 1, r.stderr
    assert len(re.findall(r"W4A0097[01]: hosting %s" % A, r.stderr)) == 1, \
        r.stderr
    assert "W4A00973: --budget 1 s spent: 1 hosting(s) left for the next " \
        "run" in r.stderr, r.stderr
    assert not os.path.exists(b_one)
    if "W4A00971" in r.stderr:
        pytest.skip("this logrotate refuses a FIFO: A is not held")
    r, _ = rotate(w4a, conf, "--deadline", "2", "--budget", "1")
    assert open(b_one).read() == "a line of %s\n" % B, r.stderr
    assert r.stderr.count("W4A00970: hosting %s" % A) == 1, r.stderr
