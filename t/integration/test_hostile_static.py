"""Hostile tenants against the static files of hostings: a file swapped for
a symlink to another tenant's file between our check and the open
(renameat2 RENAME_EXCHANGE in a loop), hard links, FIFOs, files truncated
while they are served, and the same race on a PHP script and on the media
host.  A is the attacker, B the victim, C a bystander that must stay
served.  See docs/security.md, section 4.
"""
import os
import pwd
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from w4a_harness import MEDIA_SO, hostings_dir_block

A, B, C = "w4a100010", "w4a100011", "w4a100012"
MEDIA = [("w4a_media_module", MEDIA_SO)]
SECRET = "B-SECRET-CONTENT\n"
MINE = "a-own-content\n"

# Run as the attacker: swap two names of its own directory with
# renameat2(RENAME_EXCHANGE) until the deadline; print the swap count.
SWAPPER = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
a, b, secs = sys.argv[1].encode(), sys.argv[2].encode(), float(sys.argv[3])
AT_FDCWD, RENAME_EXCHANGE = -100, 2
end, n = time.time() + secs, 0
print("ready", flush=True)
while time.time() < end:
    for _ in range(200):
        if libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) != 0:
            sys.exit("renameat2: " + os.strerror(ctypes.get_errno()))
        n += 1
if n % 2:
    libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE)
print(n, flush=True)
"""

# Run as the attacker: truncate a file and fill it again until the
# deadline.
TRUNCATOR = r"""
import os, sys, time
path, size, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
block = b"x" * size
end, n = time.time() + secs, 0
print("ready", flush=True)
while time.time() < end:
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(block)
    n += 1
print(n, flush=True)
"""


def as_user(name):
    uid = pwd.getpwnam(name).pw_uid

    def drop():
        os.setgid(uid)
        os.setuid(uid)
    return drop


def start_attacker(script, user, *args):
    """The helper as the tenant; returns once it says it is running."""
    p = subprocess.Popen([sys.executable, "-c", script, *map(str, args)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, preexec_fn=as_user(user))
    line = p.stdout.readline()
    assert line.strip() == "ready", "attacker did not start: %s%s" % (
        line, p.stderr.read())
    return p


def finish_attacker(p):
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    return int(out.split()[-1])


def hammer(httpd, host, path, seconds, threads=4, headers=None):
    """GET host/path from several threads until the deadline; returns the
    list of (status, body)."""
    results, lock = [], threading.Lock()
    end = time.time() + seconds

    def run():
        while time.time() < end:
            try:
                st, h, b = httpd.get(host, path, headers=headers)
            except OSError as e:
                st, b = -1, repr(e).encode()
            with lock:
                results.append((st, b))
    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return results


def sites(tree, files_a=None, files_b=None):
    tree.site(A, "a.example", dict({"index.html": "site a\n",
                                    "race.html": MINE}, **(files_a or {})))
    tree.site(B, "b.example", dict({"index.html": "site b\n",
                                    "secret.html": SECRET}, **(files_b or {})))
    tree.site(C, "c.example", {"index.html": "site c\n"})


def server(w4a, conf="", overrides=None, files_a=None, files_b=None,
           modules=(), ours=(), php=False, vhost_extra=""):
    tree = w4a.tree
    sites(tree, files_a, files_b)
    rc, out, index = tree.compile_map([
        tree.line("a.example", A, "a.example"),
        tree.line("b.example", B, "b.example"),
        tree.line("c.example", C, "c.example")])
    assert rc == 0, out
    php_conf = ""
    if php:
        fpm = w4a.fpm()
        rc, out = fpm.generate(index)
        assert rc in (0, 1), out
        fpm.start()
        php_conf = "W4APHPEngine on\nW4APHPSocket %s\n" % fpm.socket_pattern
    httpd = w4a.httpd(f"""
DirectoryIndex index.html
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
{vhost_extra}
{php_conf}
{hostings_dir_block(tree.base, overrides=overrides)}
{conf}
""", modules=modules, ours=ours, with_php=php).start()
    return tree, httpd


def assert_others_served(httpd):
    for host, body in (("b.example", b"site b\n"), ("c.example", b"site c\n")):
        st, h, b = httpd.get(host, "/")
        assert (st, b) == (200, body), host


def children(ppid):
    """{pid: state} of the processes whose parent is ppid."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == ppid:
            out[int(d)] = fields[0]
    return out


# --- the race on a static file -----------------------------------------------

def test_swapping_a_file_for_a_symlink_never_serves_the_other_tenants_file(w4a):
    tree, httpd = server(w4a)
    da, db = tree.docroot(A, "a.example"), tree.docroot(B, "b.example")
    os.symlink(os.path.join(db, "secret.html"), os.path.join(da, "swap"))
    os.lchown(os.path.join(da, "swap"), *(pwd.getpwnam(A).pw_uid,) * 2)
    httpd.expect_error(r"W4A0010[6]: hosting w4a100010: .* belongs to uid "
                       r"100011")
    httpd.expect_error(r"W4A00160: hosting w4a100010: .* belongs to uid "
                       r"100011")
    swapper = start_attacker(SWAPPER, A, os.path.join(da, "race.html"),
                             os.path.join(da, "swap"), 4)
    results = hammer(httpd, "a.example", "/race.html", 4)
    swaps = finish_attacker(swapper)
    leaked = [b for st, b in results if b"B-SECRET" in b]
    served = [b for st, b in results if st == 200]
    statuses = sorted(set(st for st, b in results))
    assert swaps > 1000, swaps
    assert not leaked, "%d of %d responses carried B's file (statuses %s)" % (
        len(leaked), len(results), statuses)
    assert len(served) > 50 and all(b == MINE.encode() for b in served), \
        statuses
    assert set(statuses) <= {200, 403}, statuses
    # the descriptor check (not only the early one in fixups) refused some
    assert "W4A00160" in httpd.log(), statuses
    assert_others_served(httpd)


def test_symlink_to_another_tenants_file_is_refused(w4a):
    tree, httpd = server(w4a)
    da, db = tree.docroot(A, "a.example"), tree.docroot(B, "b.example")
    os.symlink(os.path.join(db, "secret.html"), os.path.join(da, "steal.html"))
    httpd.expect_error(r"W4A00106: hosting w4a100010: .*/steal.html belongs "
                       r"to uid 100011")
    st, h, b = httpd.get("a.example", "/steal.html")
    assert st == 403 and b"B-SECRET" not in b
    assert re.search(r"W4A00106: hosting w4a100010: %s belongs to uid 100011"
                     % re.escape(da + "/steal.html"), httpd.log())
    assert_others_served(httpd)


def test_hard_link_to_another_tenants_file_is_refused(w4a):
    tree, httpd = server(w4a)
    da, db = tree.docroot(A, "a.example"), tree.docroot(B, "b.example")
    # as root: protected_hardlinks stops A itself, not a tenant whose old
    # files (or a kernel without the sysctl) allow it
    os.link(os.path.join(db, "secret.html"), os.path.join(da, "hard.html"))
    httpd.expect_error(r"W4A00106: hosting w4a100010: .*/hard.html belongs "
                       r"to uid 100011")
    st, h, b = httpd.get("a.example", "/hard.html")
    assert st == 403 and b"B-SECRET" not in b
    assert "hard.html belongs to uid 100011" in httpd.log()
    assert_others_served(httpd)


# --- FIFOs, sockets, devices ---------------------------------------------------

def raw_get(httpd, host, path, timeout):
    return httpd.raw(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close"
                      "\r\n\r\n" % (path, host)).encode(), timeout=timeout)


def release_fifo(path):
    """Unblock whatever is stuck opening the FIFO for reading (the old code)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


def test_fifo_is_refused_at_once_and_blocks_no_worker(w4a):
    tree, httpd = server(w4a)
    da = tree.docroot(A, "a.example")
    fifo = os.path.join(da, "feed.txt")
    os.mkfifo(fifo)
    os.chown(fifo, *(pwd.getpwnam(A).pw_uid,) * 2)
    httpd.expect_error(r"W4A00161: hosting w4a100010: .*/feed.txt is a fifo")
    try:
        t0 = time.time()
        st, h, b = raw_get(httpd, "a.example", "/feed.txt", 3)
        assert st == 403, "status %d after %.1fs" % (st, time.time() - t0)
        assert re.search(r"W4A00161: hosting w4a100010: %s is a fifo, not a "
                         r"regular file or directory; answered 403"
                         % re.escape(fifo), httpd.log())
        # more requests for it than httpd has worker threads (64)
        socks = []
        for _ in range(70):
            s = socket.create_connection(("127.0.0.1", httpd.port), timeout=5)
            s.sendall(b"GET /feed.txt HTTP/1.1\r\nHost: a.example\r\n\r\n")
            socks.append(s)
        t0 = time.time()
        st, h, b = raw_get(httpd, "c.example", "/", 3)
        assert (st, b) == (200, b"site c\n"), \
            "another hosting answered %d after %.1fs" % (st, time.time() - t0)
        answered = 0
        for s in socks:
            try:
                if s.recv(64).startswith(b"HTTP/1.1 403"):
                    answered += 1
            except OSError:
                pass
            s.close()
        assert answered == 70, answered
    finally:
        release_fifo(fifo)
    assert_others_served(httpd)


def test_socket_in_a_hosting_is_refused(w4a):
    tree, httpd = server(w4a)
    da = tree.docroot(A, "a.example")
    path = os.path.join(da, "sock.txt")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    os.chown(path, *(pwd.getpwnam(A).pw_uid,) * 2)
    httpd.expect_error(r"W4A00161: hosting w4a100010: .*/sock.txt is a socket")
    st, h, b = raw_get(httpd, "a.example", "/sock.txt", 3)
    s.close()
    assert st == 403
    assert "sock.txt is a socket, not a regular file" in httpd.log()
    assert_others_served(httpd)


def test_file_swapped_for_a_fifo_after_the_check_blocks_nothing(w4a):
    """The early check sees a file; the open in the handler finds a FIFO."""
    tree, httpd = server(w4a)
    da = tree.docroot(A, "a.example")
    fifo = os.path.join(da, "fifo")
    os.mkfifo(fifo)
    os.chown(fifo, *(pwd.getpwnam(A).pw_uid,) * 2)
    httpd.expect_error(r"W4A0016[01]: hosting w4a100010: .*race.html is a fifo")
    swapper = start_attacker(SWAPPER, A, os.path.join(da, "race.html"), fifo,
                             3)
    try:
        results = hammer(httpd, "a.example", "/race.html", 3, threads=8)
    finally:
        swaps = finish_attacker(swapper)
        release_fifo(fifo)
        release_fifo(os.path.join(da, "race.html"))
    statuses = sorted(set(st for st, b in results))
    assert swaps > 1000
    assert set(statuses) <= {200, 403}, statuses   # no timeout (-1), no 0
    assert all(b == MINE.encode() for st, b in results if st == 200)
    assert_others_served(httpd)


# --- files truncated while served ----------------------------------------------

def test_file_truncated_while_served_crashes_no_child(w4a):
    size = 2 * 1024 * 1024
    # EnableMMAP on and a filter that reads every byte, on a node configured
    # with AllowOverride All: the mapping of a file A truncates would
    # SIGBUS the child; FileETag Digest reads the file too
    tree, httpd = server(w4a, overrides="All", modules=["deflate"], files_a={
        "big.bin": "x" * size,
        ".htaccess": "EnableMMAP on\nSetOutputFilter DEFLATE\n",
        "d/big.bin": "x" * size,
        "d/.htaccess": "EnableMMAP on\nFileETag Digest\n"})
    da = tree.docroot(A, "a.example")
    # the file shrank under the reader: the response is cut short
    httpd.expect_error(r"AH10298: failed reading from")
    parent = httpd.pid()
    before = children(parent)
    for rel in ("big.bin", "d/big.bin"):
        trunc = start_attacker(TRUNCATOR, A, os.path.join(da, rel), size, 4)
        results = hammer(httpd, "a.example", "/" + rel, 4,
                         headers={"Accept-Encoding": "gzip"})
        assert finish_attacker(trunc) > 100
        assert len(results) > 20, rel
    after = children(parent)
    dead = [p for p in before if p not in after or after[p] == "Z"]
    assert not dead, "children %s died; %s" % (dead, re.findall(
        r".*exit signal.*", httpd.log()))
    assert "exit signal" not in httpd.log()
    assert_others_served(httpd)


# --- the same race on a PHP script and on the media host ------------------------

def php_race(w4a, b_home_private):
    """A swaps its script with a symlink to B's while requesting it;
    returns (responses with B's output, all responses, A's own answers)."""
    tree, httpd = server(w4a, php=True, files_a={
        "a.php": "<?php echo 'A-CODE';\n"}, files_b={
        "b.php": "<?php echo 'B-CODE-RAN';\n"})
    da, db = tree.docroot(A, "a.example"), tree.docroot(B, "b.example")
    if b_home_private:
        # docs/security.md, section 4: a hosting's home is not readable
        # by the other hostings' uids, only by its own and httpd's group
        os.chown(tree.home(B), pwd.getpwnam(B).pw_uid,
                 pwd.getpwnam("www-data").pw_gid)
        os.chmod(tree.home(B), 0o750)
    os.symlink(os.path.join(db, "b.php"), os.path.join(da, "swap.php"))
    os.lchown(os.path.join(da, "swap.php"), *(pwd.getpwnam(A).pw_uid,) * 2)
    httpd.expect_error(r"W4A00106: hosting w4a100010: .*/a.php belongs to "
                       r"uid 100011")
    httpd.expect_error(r"W4A00204: hosting w4a100010: script .* belongs to "
                       r"uid 100011")
    httpd.expect_error(r"W4A0023[01]: hosting w4a100010: ")
    # FPM finds the symlink to a file A's uid cannot reach
    httpd.expect_error(r"AH01071: Got error '(Primary script unknown|Unable "
                       r"to open primary script)")
    swapper = start_attacker(SWAPPER, A, os.path.join(da, "a.php"),
                             os.path.join(da, "swap.php"), 4)
    results = hammer(httpd, "a.example", "/a.php", 4)
    swaps = finish_attacker(swapper)
    assert swaps > 1000
    st, h, b = httpd.get("b.example", "/b.php")
    assert (st, b) == (200, b"B-CODE-RAN")
    ran_b = [b for st, b in results if b"B-CODE-RAN" in b]
    mine = [b for st, b in results if b == b"A-CODE"]
    assert len(mine) > 20, sorted(set(st for st, b in results))
    # the early check and the one on a descriptor refused some
    assert re.search(r"W4A00(106|204)", httpd.log())
    return ran_b, results


def test_php_script_swap_never_runs_the_other_tenants_code_when_homes_are_private(w4a):
    ran_b, results = php_race(w4a, b_home_private=True)
    assert not ran_b, "B's script ran %d times of %d" % (len(ran_b),
                                                         len(results))


def test_swapping_a_media_file_for_a_symlink_never_serves_the_other_tenants_file(w4a):
    tree, httpd = server(w4a, ours=MEDIA, vhost_extra="W4AVhostMediaPrefix media.",
                         files_a={"img/x.png": MINE},
                         files_b={"img/b.png": SECRET})
    da, db = tree.docroot(A, "a.example"), tree.docroot(B, "b.example")
    os.symlink(os.path.join(db, "img/b.png"), os.path.join(da, "img/swap.png"))
    os.lchown(os.path.join(da, "img/swap.png"), *(pwd.getpwnam(A).pw_uid,) * 2)
    httpd.expect_error(r"W4A001(06|60): hosting w4a100010: .* belongs to uid "
                       r"100011")
    st, h, b = httpd.get("media.a.example", "/img/x.png")
    assert (st, b) == (200, MINE.encode())
    swapper = start_attacker(SWAPPER, A, os.path.join(da, "img/x.png"),
                             os.path.join(da, "img/swap.png"), 3)
    results = hammer(httpd, "media.a.example", "/img/x.png", 3)
    swaps = finish_attacker(swapper)
    statuses = sorted(set(st for st, b in results))
    assert swaps > 1000
    assert not [b for st, b in results if b"B-SECRET" in b], statuses
    assert sum(1 for st, b in results if st == 200) > 20, statuses
    assert set(statuses) <= {200, 403}, statuses
    assert_others_served(httpd)
