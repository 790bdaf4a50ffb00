"""w4a-logsplit, the per-hosting access-log splitter (docs/w4a-logsplit.md).

These tests run support/w4a-logsplit directly, feeding it
lines on standard input the way httpd's piped-log pipe does, for two fake
hostings in a temporary tree owned by test users (created when absent).
The last test runs it under a real httpd with mod_w4a_vhost. conftest.py
stops the session before any test when not root or not built.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import http.client

import pytest

from w4a_harness import wait_until
from w4a_harness import (LOGSPLIT, VHOSTMAP, VHOST_SO, HTTPD,  # noqa: F401
                         MODDIR, ensure_users)

UID_A, UID_B = 100010, 100011


def ensure_user(uid):
    """The harness's test users (w4a100010..w4a100014, uid = gid)."""
    assert 100010 <= uid <= 100014, uid
    ensure_users()


class Tree:
    """<root>/datas/vol1/w4a<uid>/log/apache2 for each hosting, owned by
    it; <root> is traversable by everybody (the tool opens as the user)."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="w4a-logsplit-", dir="/var/tmp")
        self.base = os.path.join(self.root, "datas")
        os.makedirs(os.path.join(self.base, "vol1"))
        for d in (self.root, self.base, os.path.join(self.base, "vol1")):
            os.chmod(d, 0o755)

    def home(self, uid):
        return os.path.join(self.base, "vol1", "w4a%d" % uid)

    def logdir(self, uid):
        return os.path.join(self.home(uid), "log", "apache2")

    def hosting(self, uid):
        ensure_user(uid)
        os.makedirs(self.logdir(uid), exist_ok=True)
        for d, _, files in os.walk(self.home(uid)):
            os.chown(d, uid, uid)
            os.chmod(d, 0o755)
        return self.logdir(uid)

    def access_log(self, uid):
        return os.path.join(self.logdir(uid), "access.log")

    def remove(self):
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def tree():
    t = Tree()
    t.hosting(UID_A)
    t.hosting(UID_B)
    yield t
    t.remove()


def prefix(uid, logdir, gid=None):
    return "%d:%d:%s" % (uid, uid if gid is None else gid, logdir)


def split(tree, lines, *extra):
    """Run the tool over lines (str, newline added); return the result."""
    return subprocess.run([LOGSPLIT, "--base", tree.base, *extra],
                          input="".join(ln + "\n" for ln in lines),
                          capture_output=True, text=True, timeout=60)


def read(path):
    with open(path) as f:
        return f.read()


def tags(stderr, tag):
    return [ln for ln in stderr.splitlines() if tag + ":" in ln]


# ---------------------------------------------------------------------------

def test_logsplit_help_says_how_to_use_it():
    r = subprocess.run([LOGSPLIT, "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for word in ("--base", "--min-uid", "--max-files", "--check-every",
                 "CustomLog", "w4a-log", "env=W4A_LOG"):
        assert word in r.stdout
    r = subprocess.run([LOGSPLIT], capture_output=True, text=True)
    assert r.returncode == 2 and "--base" in r.stderr
    r = subprocess.run([LOGSPLIT, "--base", "/"], capture_output=True, text=True)
    assert r.returncode == 2


def test_logsplit_each_hosting_gets_its_lines_in_a_file_it_owns(tree):
    a, b = tree.logdir(UID_A), tree.logdir(UID_B)
    lines = []
    for i in range(50):
        lines.append("%s 10.0.0.%d - - \"GET /a/%d HTTP/1.1\" 200 12" % (prefix(UID_A, a), i, i))
        lines.append("%s 10.0.1.%d - - \"GET /b/%d HTTP/1.1\" 404 0" % (prefix(UID_B, b + "/"), i, i))
    r = split(tree, lines)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert read(tree.access_log(UID_A)) == "".join(
        "10.0.0.%d - - \"GET /a/%d HTTP/1.1\" 200 12\n" % (i, i) for i in range(50))
    assert read(tree.access_log(UID_B)) == "".join(
        "10.0.1.%d - - \"GET /b/%d HTTP/1.1\" 404 0\n" % (i, i) for i in range(50))
    for uid in (UID_A, UID_B):
        st = os.stat(tree.access_log(uid))
        assert (st.st_uid, st.st_gid) == (uid, uid)
        assert st.st_mode & 0o777 == 0o640
    # appended to, not truncated, by the next run
    r = split(tree, ["%s again" % prefix(UID_A, a)])
    assert r.returncode == 0
    assert read(tree.access_log(UID_A)).endswith("200 12\nagain\n")


def test_logsplit_symlinked_access_log_does_not_redirect_roots_write(tree):
    a = tree.logdir(UID_A)
    victim = os.path.join(tree.root, "root-owned.txt")
    with open(victim, "w") as f:
        f.write("precious\n")
    os.chmod(victim, 0o666)         # even a file everybody may write
    os.symlink(victim, tree.access_log(UID_A))
    os.lchown(tree.access_log(UID_A), UID_A, UID_A)
    r = split(tree, ["%s GET /evil" % prefix(UID_A, a)] * 3
              + ["%s GET /fine" % prefix(UID_B, tree.logdir(UID_B))])
    assert r.returncode == 0
    assert read(victim) == "precious\n"
    assert os.stat(victim).st_uid == 0
    err = tags(r.stderr, "W4A00912")
    assert len(err) == 1, r.stderr           # once per directory per minute
    assert a + "/access.log" in err[0] and "symbolic link" in err[0]
    assert re.search(r"W4A00911: .*1 lines written, 0 refused, 3 dropped", r.stderr)
    # the other hosting is served all the same
    assert read(tree.access_log(UID_B)) == "GET /fine\n"


def test_logsplit_symlinked_log_directory_is_not_followed(tree):
    elsewhere = os.path.join(tree.root, "elsewhere")
    os.makedirs(elsewhere)
    os.chmod(elsewhere, 0o1777)     # a /tmp-like directory anyone can write
    logs = os.path.join(tree.home(UID_A), "logs2")
    os.symlink(elsewhere, logs)
    os.lchown(logs, UID_A, UID_A)
    r = split(tree, ["%s GET /evil" % prefix(UID_A, logs)])
    assert r.returncode == 0
    assert os.listdir(elsewhere) == []
    assert "symbolic link" in tags(r.stderr, "W4A00912")[0]


def test_logsplit_another_hostings_directory_is_not_writable(tree):
    # uid A claiming B's directory: opened as A, so refused by the kernel
    r = split(tree, ["%s GET /cross" % prefix(UID_A, tree.logdir(UID_B))])
    assert r.returncode == 0
    assert not os.path.exists(tree.access_log(UID_B))
    assert "Permission denied" in tags(r.stderr, "W4A00912")[0]


def test_logsplit_refuses_lines_outside_the_bases_and_bad_prefixes(tree):
    a = tree.logdir(UID_A)
    outside = os.path.join(tree.root, "outside")
    os.makedirs(outside)
    os.chmod(outside, 0o777)
    bad = [
        "%s line-outside" % prefix(UID_A, outside),
        "%s line-sibling" % prefix(UID_A, tree.base + "X/vol1"),
        "%s line-base-itself" % prefix(UID_A, tree.base),
        "%s/../../../outside line-dotdot" % prefix(UID_A, a),
        "%s/./x line-dot" % prefix(UID_A, a),
        "%s line-relative" % prefix(UID_A, "datas/vol1/w4a100010/log"),
        "0:0:%s line-root" % a,
        "%s line-low-gid" % prefix(UID_A, a, gid=33),
        "999:100010:%s line-low-uid" % a,
        "-1:100010:%s line-negative" % a,
        "x:100010:%s line-nan" % a,
        "100010:%s line-two-fields" % a,
        "garbage-without-prefix",
        "- line-without-note",
        "",
    ]
    r = split(tree, bad + ["%s good-line" % prefix(UID_A, a)])
    assert r.returncode == 0
    assert os.listdir(outside) == []
    assert read(tree.access_log(UID_A)) == "good-line\n"
    refused = tags(r.stderr, "W4A00910")
    assert len(refused) == len(bad), r.stderr
    assert all("not written" in ln for ln in refused)
    text = "\n".join(refused)
    assert "not below any --base" in text
    assert "below --min-uid" in text
    assert "'..' component" in text
    assert "CustomLog without env=W4A_LOG" in text
    assert "line-outside" in text               # the line itself is shown
    assert re.search(r"W4A00911: .*1 lines written, %d refused" % len(bad),
                     r.stderr)


def test_logsplit_min_uid_and_several_bases(tree):
    other = os.path.join(tree.root, "other")
    os.makedirs(os.path.join(other, "h"))
    os.chmod(other, 0o755)
    os.chown(os.path.join(other, "h"), UID_B, UID_B)
    r = subprocess.run([LOGSPLIT, "--base", tree.base, "--base", other + "/",
                        "--min-uid", "100011"],
                       input="%s a\n%s b\n" % (prefix(UID_A, tree.logdir(UID_A)),
                                              prefix(UID_B, other + "/h")),
                       capture_output=True, text=True)
    assert r.returncode == 0
    assert not os.path.exists(tree.access_log(UID_A))
    assert "below --min-uid" in r.stderr
    assert read(os.path.join(other, "h", "access.log")) == "b\n"


def test_logsplit_never_writes_as_root_even_with_min_uid_0(tree):
    a = tree.logdir(UID_A)
    r = split(tree, ["0:0:%s as-root" % a, "%d:0:%s gid-root" % (UID_A, a)],
              "--min-uid", "0")
    assert r.returncode == 0
    assert not os.path.exists(tree.access_log(UID_A))
    assert len(tags(r.stderr, "W4A00910")) == 2


def test_logsplit_missing_directory_is_said_once_and_lines_dropped(tree):
    gone = os.path.join(tree.home(UID_A), "no", "such")
    r = split(tree, ["%s l%d" % (prefix(UID_A, gone), i) for i in range(100)]
              + ["%s ok" % prefix(UID_A, tree.logdir(UID_A))])
    assert r.returncode == 0
    msgs = tags(r.stderr, "W4A00912")
    assert len(msgs) == 1 and "no such log directory" in msgs[0], r.stderr
    assert re.search(r"1 lines written, 0 refused, 100 dropped", r.stderr)
    assert not os.path.exists(gone)
    assert read(tree.access_log(UID_A)) == "ok\n"


def test_logsplit_long_line_is_cut_not_split(tree):
    a = tree.logdir(UID_A)
    long_rest = "GET /" + "x" * 40000
    r = split(tree, ["%s %s" % (prefix(UID_A, a), long_rest),
                     "%s after" % prefix(UID_A, a)])
    assert r.returncode == 0
    lines = read(tree.access_log(UID_A)).split("\n")
    assert lines[1:] == ["after", ""]
    # the whole input line, prefix included, is cut to 16 KiB
    assert len(prefix(UID_A, a)) + 1 + len(lines[0]) == 16384
    assert long_rest.startswith(lines[0])
    assert len(tags(r.stderr, "W4A00913")) == 1


def test_logsplit_last_line_without_newline_is_kept(tree):
    a = tree.logdir(UID_A)
    r = subprocess.run([LOGSPLIT, "--base", tree.base],
                       input="%s one\n%s two" % (prefix(UID_A, a), prefix(UID_A, a)),
                       capture_output=True, text=True)
    assert r.returncode == 0
    assert read(tree.access_log(UID_A)) == "one\ntwo\n"


def test_logsplit_four_writers_10000_lines_none_lost_none_torn(tree):
    """4 writers (like httpd's children) share one pipe, each line one
    write(); 10,000 lines of varied length over both hostings arrive whole
    and exactly once."""
    a, b = tree.logdir(UID_A), tree.logdir(UID_B)
    p = subprocess.Popen([LOGSPLIT, "--base", tree.base], stdin=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    fd = p.stdin.fileno()
    writers, per = 4, 2500

    def writer(w):
        for i in range(per):
            uid, d = (UID_A, a) if (w + i) % 2 else (UID_B, b)
            pad = "p" * ((i * 37 + w * 11) % 900)
            line = ("%s w%d-i%05d %s end\n" % (prefix(uid, d), w, i, pad)).encode()
            assert len(line) < 4096                 # PIPE_BUF: atomic
            assert os.write(fd, line) == len(line)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p.stdin.close()
    assert p.wait(60) == 0
    assert p.stderr.read() == b""
    seen = set()
    for uid in (UID_A, UID_B):
        for ln in read(tree.access_log(uid)).split("\n")[:-1]:
            m = re.fullmatch(r"w(\d)-i(\d{5}) (p*) end", ln)
            assert m, "torn line: %r" % ln[:100]
            w, i = int(m.group(1)), int(m.group(2))
            assert len(m.group(3)) == (i * 37 + w * 11) % 900
            assert ((w + i) % 2 == 1) == (uid == UID_A)
            assert (w, i) not in seen
            seen.add((w, i))
    assert len(seen) == writers * per


def test_logsplit_lru_keeps_at_most_max_files_open_and_loses_nothing(tree):
    dirs = []
    for i in range(20):
        d = os.path.join(tree.home(UID_A), "site%d" % i)
        os.makedirs(d)
        os.chown(d, UID_A, UID_A)
        dirs.append(d)
    p = subprocess.Popen([LOGSPLIT, "--base", tree.base, "--max-files", "4"],
                         stdin=subprocess.PIPE, text=True)

    def open_logs():
        return [x for x in open_files(p.pid) if x.endswith("/access.log")]

    want = ""
    seen = []                       # open logs at each look, never above 4

    def round_written():
        seen.append(open_logs())
        return all(read_or_empty(os.path.join(d, "access.log")) == want
                   for d in dirs)

    for rnd in range(5):
        for i, d in enumerate(dirs):
            p.stdin.write("%s r%d\n" % (prefix(UID_A, d), rnd))
        p.stdin.flush()
        want += "r%d\n" % rnd
        # every line of the round written (each file reopened in turn)
        wait_until(round_written, "round %d in all 20 files" % rnd, 20)
        seen.append(open_logs())
        assert max(len(x) for x in seen) <= 4, [x for x in seen if len(x) > 4][:1]
    p.stdin.close()
    assert p.wait(30) == 0
    for d in dirs:
        assert read(os.path.join(d, "access.log")) == "r0\nr1\nr2\nr3\nr4\n"


def test_logsplit_reopens_a_rotated_file_and_on_sighup(tree):
    a = tree.logdir(UID_A)
    log = tree.access_log(UID_A)
    p = subprocess.Popen([LOGSPLIT, "--base", tree.base, "--check-every", "1"],
                         stdin=subprocess.PIPE, text=True)

    def send(s, into):
        p.stdin.write("%s %s\n" % (prefix(UID_A, a), s))
        p.stdin.flush()
        wait_until(lambda: read_or_empty(into).endswith(s + "\n"),
                   "line %r in %s" % (s, into), 5)

    send("one", log)
    os.rename(log, log + ".1")              # logrotate, no postrotate
    # Lines go on into the renamed file until the --check-every 1 s check
    # sees the rename: send one line at a time, each waited for in one of
    # the two files, until one lands in a new access.log.
    ticks = []
    def tick_lands_in_new_log():
        s = "two-%d" % len(ticks)
        ticks.append(s)
        p.stdin.write("%s %s\n" % (prefix(UID_A, a), s))
        p.stdin.flush()
        wait_until(lambda: any(read_or_empty(f).endswith(s + "\n")
                               for f in (log, log + ".1")),
                   "line %r written" % s, 5)
        return read_or_empty(log) == s + "\n"
    wait_until(tick_lands_in_new_log, "the rotated file reopened by the "
               "periodic check", 10)
    os.rename(log, log + ".2")
    p.send_signal(signal.SIGHUP)            # logrotate with postrotate
    wait_until(lambda: not [x for x in open_files(p.pid)
                            if x.endswith(".2")],
               "w4a-logsplit to close the rotated file on SIGHUP", 5)
    send("three", log)
    p.stdin.close()
    assert p.wait(10) == 0
    assert read(log + ".1") == "one\n" + "".join(t + "\n" for t in ticks[:-1])
    assert read(log + ".2") == ticks[-1] + "\n"
    assert read(log) == "three\n"
    assert os.stat(log).st_uid == UID_A


def test_logsplit_sigterm_still_writes_what_is_in_the_pipe(tree):
    """httpd sends SIGTERM to its piped loggers on stop and restart, while
    its (old) children may still write: nothing sent is lost."""
    a = tree.logdir(UID_A)
    p = subprocess.Popen([LOGSPLIT, "--base", tree.base], stdin=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    p.stdin.write("%s before\n" % prefix(UID_A, a))
    p.stdin.flush()
    wait_until(lambda: read_or_empty(tree.access_log(UID_A)) == "before\n",
               "the line sent before SIGTERM in the log")
    p.send_signal(signal.SIGTERM)
    time.sleep(0.2)                         # a window to exit in: it must not
    assert p.poll() is None                 # still draining
    p.stdin.write("%s after\n" % prefix(UID_A, a))
    p.stdin.close()
    assert p.wait(10) == 0
    assert read(tree.access_log(UID_A)) == "before\nafter\n"
    assert "W4A00915" in p.stderr.read()


# ---------------------------------------------------------------------------
# Under httpd, with mod_w4a_vhost's log flag.

def open_files(pid):
    """What process pid has open, by /proc; a descriptor closed between the
    listing and its readlink is left out."""
    out = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            out.append(os.readlink("/proc/%d/fd/%s" % (pid, fd)))
        except FileNotFoundError:
            pass
    return out


def read_or_empty(path):
    """The file's text, "" while it does not exist yet."""
    try:
        return read(path)
    except FileNotFoundError:
        return ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_logsplit_under_httpd_gets_every_line_across_a_graceful_restart(tree):
    a_home, b_home = tree.home(UID_A), tree.home(UID_B)
    for home, uid, text in ((a_home, UID_A, "a\n"), (b_home, UID_B, "b\n")):
        dr = os.path.join(home, "var", "www", "site")
        os.makedirs(dr)
        with open(os.path.join(dr, "index.html"), "w") as f:
            f.write(text)
        for d, _, files in os.walk(home):
            os.chown(d, uid, uid)
            os.chmod(d, 0o755)
            for fn in files:
                os.chown(os.path.join(d, fn), uid, uid)
    text_map = os.path.join(tree.root, "map.txt")
    index = os.path.join(tree.root, "map.index")
    with open(text_map, "w") as f:
        f.write("a.example w4a%d %d %d %s/var/www/site 8.2 active log\n"
                % (UID_A, UID_A, UID_A, a_home))
        f.write("b.example w4a%d %d %d %s/var/www/site 8.2 active -\n"
                % (UID_B, UID_B, UID_B, b_home))
    r = subprocess.run([VHOSTMAP, "compile", "--base", tree.base, text_map, index],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

    srv = os.path.join(tree.root, "httpd")
    os.makedirs(srv)
    os.chmod(srv, 0o755)
    port = free_port()
    conf = os.path.join(srv, "httpd.conf")
    error_log = os.path.join(srv, "error.log")
    mods = "\n".join("LoadModule %s_module %s/mod_%s.so" % (m, MODDIR, m)
                     for m in ("mpm_event", "authz_core", "mime", "dir",
                               "log_config") if os.path.exists(
                                   "%s/mod_%s.so" % (MODDIR, m)))
    with open(conf, "w") as f:
        f.write(f"""ServerRoot {srv}
Listen 127.0.0.1:{port}
ServerName localhost
PidFile {srv}/httpd.pid
DefaultRuntimeDir {srv}
Mutex file:{srv} default
ErrorLog {error_log}
LogLevel warn
User www-data
Group www-data
{mods}
LoadModule w4a_vhost_module {VHOST_SO}
StartServers 2
ServerLimit 4
ThreadsPerChild 16
MaxRequestWorkers 64
TypesConfig /etc/mime.types
DocumentRoot {srv}
DirectoryIndex index.html
<Directory />
    Require all granted
</Directory>
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
CustomLog "|{LOGSPLIT} --base {tree.base}" "%{{w4a-log}}n %h %>s \\"%r\\"" env=W4A_LOG
""")
    r = subprocess.run([HTTPD, "-f", conf, "-k", "start"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr

    def elog():
        try:
            return read(error_log)
        except OSError:
            return ""

    try:
        assert wait_for(lambda: "resuming normal operations" in elog()), elog()
        ok = {"a": 0, "b": 0}
        lock = threading.Lock()
        stop = threading.Event()

        def load(t):
            i = 0
            while not stop.is_set() or i < 100:
                for host in ("a", "b"):
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    try:
                        c.request("GET", "/?t=%d-%d" % (t, i),
                                  headers={"Host": host + ".example"})
                        resp = c.getresponse()
                        body = resp.read()
                        if resp.status == 200:
                            assert body == (host + "\n").encode()
                            with lock:
                                ok[host] += 1
                    except OSError:
                        pass
                    finally:
                        c.close()
                i += 1

        threads = [threading.Thread(target=load, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()

        def served(n):
            with lock:
                return ok["a"] >= n
        try:
            wait_until(lambda: served(200), "200 requests of a before the "
                       "graceful restart", 30)
            subprocess.run([HTTPD, "-f", conf, "-k", "graceful"], check=True)
            wait_until(lambda: elog().count("resuming normal operations") >= 2,
                       "the new generation after the graceful restart", 15)
            with lock:
                after = ok["a"]
            wait_until(lambda: served(after + 200), "200 more requests of a "
                       "after the graceful restart", 30)
        finally:
            stop.set()
        for t in threads:
            t.join()
    finally:
        subprocess.run([HTTPD, "-f", conf, "-k", "stop"], capture_output=True)
    # every logged request of a (and none of b) reaches a's file, once
    log = tree.access_log(UID_A)
    assert wait_for(lambda: os.path.exists(log) and
                    len(read(log).splitlines()) >= ok["a"], 15), \
        "%d of %d lines" % (len(read(log).splitlines()) if os.path.exists(log)
                            else 0, ok["a"])
    time.sleep(0.5)
    lines = read(log).splitlines()
    assert ok["a"] >= 400
    assert len(lines) == ok["a"], elog()
    assert len(set(lines)) == len(lines)
    assert all(re.fullmatch(r'127\.0\.0\.1 200 "GET /\?t=\d+-\d+ HTTP/1\.1"', ln)
               for ln in lines)
    st = os.stat(log)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (UID_A, UID_A, 0o640)
    assert not os.path.exists(tree.access_log(UID_B))
    assert "W4A0091" not in elog().replace("W4A00915", "").replace(
        "W4A00916", ""), elog()
