"""Per-hosting access logs: mod_w4a_vhost's log flag + w4a-logsplit."""
import os
import pwd
import subprocess
import threading

from w4a_harness import w4a, LOGSPLIT  # noqa: F401  (fixture)

A, B = "w4a100010", "w4a100011"


def log_server(w4a):
    tree = w4a.tree
    tree.site(A, "a.example", {"index.html": "a\n"})
    tree.site(B, "b.example", {"index.html": "b\n"})
    rc, out, index = tree.compile_map([
        tree.line("a.example", A, "a.example", flags="log"),
        tree.line("b.example", B, "b.example")])
    assert rc == 0, out
    httpd = w4a.httpd(f"""
DirectoryIndex index.html
W4AVhostEngine on
W4AVhostMap {index}
<Directory {tree.base}>
    Require all granted
</Directory>
CustomLog "|{LOGSPLIT} --base {tree.base}" "%{{w4a-log}}n %h %>s \\"%r\\"" env=W4A_LOG
""").start()
    return tree, httpd


def test_logsplit_hosting_with_log_flag_gets_every_line_under_load(w4a):
    tree, httpd = log_server(w4a)
    n_threads, per = 8, 250

    def load(i):
        for j in range(per):
            st, h, b = httpd.get("a.example", "/?t=%d-%d" % (i, j))
            assert st == 200
            httpd.get("b.example", "/")

    threads = [threading.Thread(target=load, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    httpd.stop()            # the piped logger drains and exits
    path = os.path.join(tree.home(A), "log/apache2/access.log")
    lines = open(path).read().splitlines()
    assert len(lines) == n_threads * per
    assert all(ln.startswith("127.0.0.1 200 \"GET /?t=") for ln in lines)
    assert len(set(lines)) == n_threads * per          # none torn, none doubled
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (100010, 100010)
    assert oct(st.st_mode & 0o777) == "0o640"
    # b has no log flag: nothing written for it
    assert not os.path.exists(os.path.join(tree.home(B), "log/apache2/access.log"))


def run_split(base, lines, *extra):
    return subprocess.run([LOGSPLIT, "--base", base, *extra],
                          input="".join(l + "\n" for l in lines),
                          capture_output=True, text=True)


def test_logsplit_symlink_cannot_redirect_roots_write(w4a):
    tree = w4a.tree
    tree.site(A, "a.example")
    logdir = os.path.join(tree.home(A), "log/apache2")
    victim = os.path.join(w4a.root, "root-owned.txt")
    with open(victim, "w") as f:
        f.write("precious\n")
    os.chmod(victim, 0o644)
    os.symlink(victim, os.path.join(logdir, "access.log"))
    r = run_split(tree.base, ["100010:100010:%s GET /evil" % logdir])
    assert r.returncode == 0
    assert open(victim).read() == "precious\n"
    assert "W4A00910: cannot open access.log in %s" % logdir in r.stderr


def test_logsplit_refuses_dirs_outside_bases_and_low_uids(w4a):
    tree = w4a.tree
    tree.site(A, "a.example")
    logdir = os.path.join(tree.home(A), "log/apache2")
    outside = os.path.join(w4a.root, "elsewhere")
    os.makedirs(outside)
    r = run_split(tree.base, [
        "100010:100010:%s line-outside" % outside,
        "100010:100010:%s/../../elsewhere line-dotdot" % logdir,
        "0:0:%s line-root" % logdir,
        "garbage-without-prefix",
        "- not-ours",
        "100010:100010:%s good-line" % logdir,
    ])
    assert r.returncode == 0
    assert os.listdir(outside) == []
    assert open(os.path.join(logdir, "access.log")).read() == "good-line\n"
    assert r.stderr.count("W4A00910") == 4
    assert "outside every --base" in r.stderr
    assert "uid below --min-uid" in r.stderr


def test_logsplit_reopens_a_rotated_file(w4a):
    tree = w4a.tree
    tree.site(A, "a.example")
    logdir = os.path.join(tree.home(A), "log/apache2")
    p = subprocess.Popen([LOGSPLIT, "--base", tree.base, "--check-every", "0"],
                         stdin=subprocess.PIPE, text=True)
    p.stdin.write("100010:100010:%s one\n" % logdir)
    p.stdin.flush()
    import time
    time.sleep(0.3)
    os.rename(os.path.join(logdir, "access.log"), os.path.join(logdir, "access.log.1"))
    p.stdin.write("100010:100010:%s two\n" % logdir)
    p.stdin.close()
    assert p.wait(10) == 0
    assert open(os.path.join(logdir, "access.log.1")).read() == "one\n"
    assert open(os.path.join(logdir, "access.log")).read() == "two\n"
    assert pwd.getpwuid(os.stat(os.path.join(logdir, "access.log")).st_uid).pw_name == A
