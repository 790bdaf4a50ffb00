"""Node files and the hostings (issue 12, vector 10).

A hosting's code runs as its own uid: it must not read the map (text or
index: every hosting's domains, users and document roots), the FPM pool
files, nor connect to another hosting's FPM socket (a FastCGI request of
its own to B's pool would run B's code, as B, with the PHP_VALUE it
chose). And nothing an operator does to the live index (cp over it,
truncate it) may crash a child: httpd maps a private copy, never the file.
"""
import grp
import os
import re
import shutil
import socket
import subprocess
import threading
import time

from w4a_harness import VHOSTMAP, hostings_dir_block

A, B, C = "w4a100010", "w4a100011", "w4a100012"


def uid_of(hosting):
    return int(hosting[3:])


def as_hosting(hosting, code):
    """Run python code as the hosting's uid/gid, no other group; returns
    (exit status, output)."""
    uid = uid_of(hosting)
    r = subprocess.run(["/usr/bin/python3", "-c", code], user=uid, group=uid,
                       extra_groups=[], capture_output=True, text=True,
                       timeout=20)
    return r.returncode, r.stdout + r.stderr


def readable_by(hosting, path):
    rc, out = as_hosting(hosting, "try:\n"
                         "    open(%r, 'rb').read(1)\n"
                         "    print('READ')\n"
                         "except OSError as e:\n"
                         "    print('DENIED', e.errno)\n" % path)
    assert rc == 0, out
    return out.startswith("READ")


def listable_by(hosting, path):
    rc, out = as_hosting(hosting, "import os\n"
                         "try:\n"
                         "    os.listdir(%r)\n"
                         "    print('LISTED')\n"
                         "except OSError as e:\n"
                         "    print('DENIED', e.errno)\n" % path)
    assert rc == 0, out
    return out.startswith("LISTED")


def server(w4a, interval=2, lines=None, extra_body=""):
    tree = w4a.tree
    tree.site(A, "a.example", {"index.html": "site a\n"})
    tree.site(B, "b.example", {"index.html": "site b\n"})
    tree.site(C, "c.example", {"index.html": "site c\n"})
    rc, out, index = tree.compile_map(lines or [
        tree.line("a.example", A, "a.example"),
        tree.line("b.example", B, "b.example")])
    assert rc == 0, out
    httpd = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostMapCheckInterval {interval}
W4AVhostDocRootBase {tree.base}
{hostings_dir_block(tree.base)}
<Location /w4a-vhost-status>
    SetHandler w4a-vhost-status
</Location>
{extra_body}
""").start()
    return tree, index, httpd


def no_child_died(httpd):
    died = [ln for ln in httpd.log().splitlines()
            if re.search(r"exit signal|Segmentation|Bus error", ln)]
    assert died == [], "children died:\n" + "\n".join(died)


def wait_for(cond, what, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


# --- who reads what --------------------------------------------------------

def test_index_is_0640_group_www_data_not_readable_by_a_hosting(w4a):
    tree, index, httpd = server(w4a)
    st = os.stat(index)
    assert st.st_mode & 0o777 == 0o640
    import grp
    assert grp.getgrgid(st.st_gid).gr_name == "www-data"
    assert not readable_by(A, index)
    # httpd's children (www-data) still read it: a new index is served
    rc, out, _ = tree.compile_map([tree.line("a.example", A, "a.example"),
                                   tree.line("b.example", B, "b.example"),
                                   tree.line("c.example", C, "c.example")])
    assert rc == 0, out
    wait_for(lambda: httpd.get("c.example")[0] == 200,
             "c.example from the new index")
    assert httpd.get("a.example")[2] == b"site a\n"


def test_index_group_option_and_unknown_group_refused(w4a):
    tree = w4a.tree
    rc, out, index = tree.compile_map([], extra=("--group", "nogroup"))
    assert rc == 0, out
    import grp
    assert grp.getgrgid(os.stat(index).st_gid).gr_name == "nogroup"
    rc, out, _ = tree.compile_map([], extra=("--group", "no-such-group-w4a"))
    assert rc == 2 and "no group 'no-such-group-w4a'" in out, out
    assert grp.getgrgid(os.stat(index).st_gid).gr_name == "nogroup"


def test_world_readable_text_map_is_warned_about(w4a):
    tree = w4a.tree
    text = os.path.join(tree.root, "open.map")
    with open(text, "w") as f:
        f.write("# nothing\n")
    os.chmod(text, 0o644)
    assert readable_by(A, text)
    for cmd in (["compile", text, os.path.join(tree.root, "o.index")],
                ["check", text]):
        r = subprocess.run([VHOSTMAP, *cmd], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert re.search(r"W4A00173: .*open\.map is readable by every user "
                         r"\(mode 0644\)", r.stderr), r.stderr
    os.chmod(text, 0o640)
    r = subprocess.run([VHOSTMAP, "check", text], capture_output=True,
                       text=True)
    assert "W4A00173" not in r.stderr
    assert not readable_by(A, text)


def test_world_readable_index_is_warned_about_at_start(w4a):
    tree, index, httpd = server(w4a)
    assert "W4A00170" not in httpd.log()
    httpd.stop()
    os.chmod(index, 0o644)
    httpd.start()
    assert httpd.wait_log(r"W4A00170: map index .* is readable by every user "
                          r"\(mode 0644\)")
    assert httpd.get("b.example")[2] == b"site b\n"


def test_private_copies_not_readable_by_a_hosting(w4a):
    tree, index, httpd = server(w4a)
    copies = os.path.join(httpd.root, "w4a-vhost")
    st = os.stat(copies)
    assert st.st_mode & 0o777 == 0o700
    import pwd
    assert pwd.getpwuid(st.st_uid).pw_name == "www-data"
    names = os.listdir(copies)
    assert len([n for n in names if n.startswith("map-")]) == 1, names
    assert not listable_by(A, copies)
    assert not readable_by(A, os.path.join(copies, names[0]))


def test_pool_files_not_readable_by_a_hosting(w4a):
    tree = w4a.tree
    tree.site(A, "a.example", {"index.php": "<?php echo 1;"})
    tree.site(B, "b.example", {"index.php": "<?php echo 2;"})
    rc, out, index = tree.compile_map([tree.line("a.example", A, "a.example"),
                                       tree.line("b.example", B, "b.example")])
    assert rc == 0, out
    fpm = w4a.fpm()
    shutil.rmtree(fpm.pool_dir)             # the tool makes it
    rc, out = fpm.generate(index)
    assert rc in (0, 1), out
    names = sorted(os.listdir(fpm.pool_dir))
    pools = [n for n in names if n.endswith(".conf")]
    assert pools == ["w4a-%s.conf" % A, "w4a-%s.conf" % B]
    # beside each pool, its settings for mod_w4a_htcompat (httpd's group)
    assert sorted(set(names) - set(pools)) == ["w4a-%s.settings" % A,
                                               "w4a-%s.settings" % B]
    www = grp.getgrnam("www-data").gr_gid
    st = os.stat(fpm.pool_dir)
    assert st.st_mode & 0o777 == 0o750 and st.st_gid == www
    for name in names:
        path = os.path.join(fpm.pool_dir, name)
        st = os.stat(path)
        assert st.st_mode & 0o777 == 0o640, oct(st.st_mode)
        assert st.st_uid == 0
        assert st.st_gid == (www if name.endswith(".settings") else 0), name
        assert not readable_by(A, path)
    assert not listable_by(A, fpm.pool_dir)
    # a pool rewritten (content changed) keeps the mode
    rc, out = fpm.generate(index, extra=("--max-children", "7"))
    assert rc in (0, 1), out
    for name in pools:
        assert os.stat(os.path.join(fpm.pool_dir, name)).st_mode & 0o777 \
            == 0o640
    # one left 0644 by an older version, unchanged: made 0640 again
    first = os.path.join(fpm.pool_dir, pools[0])
    os.chmod(first, 0o644)
    rc, out = fpm.generate(index, extra=("--max-children", "7"))
    assert rc in (0, 1) and "0 written" in out, out
    assert os.stat(first).st_mode & 0o777 == 0o640
    # FPM (a root master) still reads them
    fpm.start()
    wait_for(lambda: os.path.exists(fpm.socket(B)), "B's pool socket")


# --- another hosting's FPM socket ------------------------------------------

CONNECT_PHP = r"""<?php
header('Content-Type: text/plain');
$s = @stream_socket_client('unix://' . $_GET['s'], $errno, $errstr, 2);
echo $s ? "CONNECTED\n" : "REFUSED $errno $errstr\n";
"""


def test_hosting_cannot_connect_to_another_hostings_fpm_socket(w4a):
    """A direct FastCGI request to B's pool would run B's code as B with
    the PHP_VALUE/PHP_ADMIN_VALUE A writes: A's processes must not be able
    to connect. httpd (www-data) can: B is served."""
    tree = w4a.tree
    tree.site(A, "a.example", {"connect.php": CONNECT_PHP})
    tree.site(B, "b.example", {"index.php": "<?php echo 'b as ', "
                                            "posix_getpwuid(posix_geteuid())"
                                            "['name'];"})
    rc, out, index = tree.compile_map([tree.line("a.example", A, "a.example"),
                                       tree.line("b.example", B, "b.example")])
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
DirectoryIndex index.php
{hostings_dir_block(tree.base)}
""", with_php=True).start()
    st, h, body = httpd.get("b.example", "/")
    assert (st, body) == (200, b"b as " + B.encode()), body
    sock_b = fpm.socket(B)
    st_b = os.stat(sock_b)
    assert st_b.st_mode & 0o777 == 0o600, oct(st_b.st_mode)

    # A's process (its uid, no other group)
    rc, out = as_hosting(A, "import socket, sys\n"
                         "s = socket.socket(socket.AF_UNIX)\n"
                         "try:\n"
                         "    s.connect(%r)\n"
                         "    print('CONNECTED')\n"
                         "except OSError as e:\n"
                         "    print('REFUSED', e.errno)\n" % sock_b)
    assert rc == 0, out
    assert out.startswith("REFUSED 13"), out          # EACCES
    # A's PHP, in A's pool
    st, h, body = httpd.get("a.example", "/connect.php?s=" + sock_b)
    assert st == 200, body
    assert body.startswith(b"REFUSED"), body
    # nor its own pool's socket (it would bypass what httpd sets)
    st, h, body = httpd.get("a.example", "/connect.php?s=" + fpm.socket(A))
    assert body.startswith(b"REFUSED"), body
    assert httpd.get("b.example", "/")[0] == 200


# --- the live index changed in place ----------------------------------------

def many_lines(tree, n, with_c=False):
    lines = [tree.line("a.example", A, "a.example"),
             tree.line("b.example", B, "b.example")]
    if with_c:
        lines.append(tree.line("c.example", C, "c.example"))
    lines += [tree.line("filler%d.example" % i, C, "c.example")
              for i in range(n)]
    return lines


def test_cp_over_the_live_index_under_load_no_child_dies(w4a):
    """cp writes the live file in place (truncate, then write): a child
    that mapped it took a SIGBUS. Now each version is copied privately."""
    tree, index, httpd = server(w4a, interval=0,
                                lines=many_lines(w4a.tree, 3000))
    httpd.expect_error(r"W4A00110: map index .* refused: ")
    old = index + ".old"
    shutil.copy(index, old)
    rc, out, new = tree.compile_map(many_lines(tree, 2000, with_c=True),
                                    index=index + ".new")
    assert rc == 0, out
    failures, done = [], threading.Event()

    def hammer():
        while not done.is_set():
            for host, body in (("a.example", b"site a\n"),
                               ("b.example", b"site b\n")):
                try:
                    st, h, b = httpd.get(host)
                except OSError as e:
                    failures.append((host, repr(e)))
                    continue
                if (st, b) != (200, body):
                    failures.append((host, st, b[:80]))

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        end = time.time() + 6
        n = 0
        while time.time() < end:
            subprocess.run(["cp", new if n % 2 else old, index], check=True)
            n += 1
    finally:
        subprocess.run(["cp", new, index], check=True)
        try:
            # keep hammering until the final copy is in use
            wait_for(lambda: httpd.get("c.example")[2] == b"site c\n",
                     "the final index copy (with c.example) to be served")
        finally:
            done.set()
        for t in threads:
            t.join()
    no_child_died(httpd)
    assert failures == [], failures[:10]
    wait_for(lambda: httpd.get("c.example")[2] == b"site c\n",
             "the last index copied (with c.example) to be served")
    # one copy per version, not one per child
    copies = [f for f in os.listdir(os.path.join(httpd.root, "w4a-vhost"))
              if f.startswith("map-")]
    assert 1 <= len(copies) <= 4, copies
    no_child_died(httpd)


def test_live_index_truncated_to_half_old_kept_and_logged(w4a):
    tree, index, httpd = server(w4a, interval=0,
                                lines=many_lines(w4a.tree, 2000))
    httpd.expect_error(r"W4A00110: map index .* refused: ")
    assert httpd.get("a.example")[2] == b"site a\n"
    size = os.path.getsize(index)
    os.truncate(index, size // 2)           # in place: same inode
    for _ in range(50):                     # every child sees it
        st, h, b = httpd.get("a.example")
        assert (st, b) == (200, b"site a\n")
    assert httpd.wait_log(r"W4A00110: map index .* refused: index is %d "
                          r"bytes, header says %d" % (size // 2, size))
    assert httpd.get("b.example")[2] == b"site b\n"
    no_child_died(httpd)
    # the full file back (in place again): taken
    rc, out, _ = tree.compile_map(many_lines(tree, 2000, with_c=True),
                                  index=index + ".new")
    assert rc == 0, out
    subprocess.run(["cp", index + ".new", index], check=True)
    wait_for(lambda: httpd.get("c.example")[2] == b"site c\n",
             "the good index copied in place to be served")
    no_child_died(httpd)
