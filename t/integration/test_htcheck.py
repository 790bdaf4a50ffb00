"""w4a-htcheck: every .htaccess line that breaks or changes meaning here,
with the reason and the fix; --fix rewrites, keeps the original, and a
second run changes nothing."""
import os
import pwd
import re
import resource
import subprocess

import pytest

from w4a_harness import HTCOMPAT_SO, SANITIZE, hostings_dir_block
from test_htcompat import A, B, HTCHECK, INI_PHP, dump_table, vals

# Every known breakage, one per line (line numbers matter below).
BROKEN = """Options +FollowSymLinks -Indexes Includes
php_value memory_limit 256M
php_value allow_url_fopen 0
php_value w4a.no_such_setting 1
php_flag register_globals off
php_admin_value open_basedir /
<IfModule mod_php7.c>
  php_value upload_max_filesize 40M
</IfModule>
<IfModule !mod_php.c>
  php_value post_max_size 41M
</IfModule>
SetEnv PHP_VALUE "memory_limit=1G"
SetEnvIf Request_URI . PHP_ADMIN_VALUE=open_basedir=/
suPHP_ConfigPath /home/x/php.ini
DefaultType text/html
AddHandler application/x-httpd-php .html
RewriteEngine On
RewriteRule ^blog/(.*)$ index.php/$1 [L]
Order allow,deny
Allow from all
php_value error_log /tmp/mine.log
"""

FIXED = """Options +FollowSymLinks -Indexes +IncludesNOEXEC
php_value memory_limit 256M
# w4a-htcheck: system: php_value allow_url_fopen 0
# w4a-htcheck: unknown: php_value w4a.no_such_setting 1
# w4a-htcheck: removed: php_flag register_globals off
# w4a-htcheck: admin: php_admin_value open_basedir /
<IfModule mod_w4a_htcompat.c>
  php_value upload_max_filesize 40M
</IfModule>
<IfModule !mod_w4a_htcompat.c>
  php_value post_max_size 41M
</IfModule>
# w4a-htcheck: env: SetEnv PHP_VALUE "memory_limit=1G"
# w4a-htcheck: env: SetEnvIf Request_URI . PHP_ADMIN_VALUE=open_basedir=/
# w4a-htcheck: suphp: suPHP_ConfigPath /home/x/php.ini
# w4a-htcheck: defaulttype: DefaultType text/html
AddHandler application/x-httpd-php .html
RewriteEngine On
RewriteRule ^blog/(.*)$ index.php/$1 [L]
Order allow,deny
Allow from all
# w4a-htcheck: locked: php_value error_log /tmp/mine.log
"""

# Lines the checker reports but cannot fix by itself.
BY_HAND = """Options None +Indexes
RewriteEngine On
RewriteRule ^ - [E=PHP_VALUE:memory_limit=1G]
Require all granted
Order deny,allow
"""


def run(*args):
    r = subprocess.run([HTCHECK, *args], capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def snapshot(top):
    out = {}
    for d, dirs, files in os.walk(top):
        for f in files:
            p = os.path.join(d, f)
            st = os.lstat(p)
            with open(p, "rb") as fh:
                out[p] = (fh.read(), st.st_mtime_ns, st.st_uid, st.st_mode)
    return out


def test_htcheck_reports_every_breakage_fixes_and_second_run_changes_nothing(w4a):
    tree = w4a.tree
    dr = tree.site(A, "a.example", {"app/.htaccess": BROKEN,
                                    "app/index.php": INI_PHP,
                                    "app/page.html": INI_PHP,
                                    "hand/.htaccess": BY_HAND,
                                    "clean/.htaccess": "Require all granted\n"})
    os.chmod(os.path.join(dr, "app/.htaccess"), 0o664)
    table = dump_table(w4a.root)
    pattern = table.replace("8.2", "%v")
    rc, out = run("--table", pattern, dr)
    assert rc == 1, out
    app = os.path.join(dr, "app/.htaccess")
    hand = os.path.join(dr, "hand/.htaccess")
    expect = [
        (app, 1, "break: Options: Includes (SSI #exec, run as httpd's user) "
         "is not offered to hostings",
         "fix: Options +FollowSymLinks -Indexes +IncludesNOEXEC"),
        (app, 3, "break: php_value allow_url_fopen: skipped by "
         "mod_w4a_htcompat: system-only setting", "fix: ask support"),
        (app, 4, "break: php_value w4a.no_such_setting: skipped by "
         "mod_w4a_htcompat: not a setting of this PHP", "line commented out"),
        (app, 5, "break: php_flag register_globals: skipped by "
         "mod_w4a_htcompat: removed from PHP", "line commented out"),
        (app, 6, "break: php_admin_value: only for the server's "
         "configuration", "use php_value"),
        (app, 7, "break: <IfModule mod_php7.c>: mod_php is never loaded here, "
         "so the lines in this block are silently skipped",
         "fix: <IfModule mod_w4a_htcompat.c>"),
        (app, 10, "break: <IfModule !mod_php.c>: mod_php is never loaded",
         "fix: <IfModule !mod_w4a_htcompat.c>"),
        (app, 13, "break: SetEnv PHP_VALUE: removed before PHP", "php_value"),
        (app, 14, "break: SetEnvIf: sets PHP_VALUE/PHP_ADMIN_VALUE", "php_value"),
        (app, 15, "break: suPHP_ConfigPath: mod_suphp is not loaded",
         "line commented out"),
        (app, 16, "break: DefaultType: has no effect since httpd 2.4",
         "ForceType"),
        (app, 17, "note: AddHandler application/x-httpd-php: works", ""),
        (app, 19, "note: RewriteRule … index.php/: works: PATH_INFO", ""),
        (app, 20, "note: Order: works (mod_access_compat is loaded)", ""),
        (app, 22, "break: php_value error_log: skipped by mod_w4a_htcompat: "
         "locked", ""),
        (hand, 1, "break: Options: mixes +/- options with None or All",
         "by hand"),
        (hand, 3, "break: RewriteRule: sets PHP_VALUE/PHP_ADMIN_VALUE",
         "by hand"),
        (hand, 4, "break: Require with Order/Allow/Deny: mixing", "by hand"),
    ]
    lines = out.splitlines()
    for path, n, what, fix in expect:
        hit = [ln for ln in lines if ln.startswith("%s:%d: " % (path, n))]
        assert hit and what in hit[0] and fix in hit[0], (path, n, what, out)
    assert "clean/.htaccess" not in out
    assert lines[-1] == ("3 .htaccess file(s): 15 line(s) to fix (run with "
                         "--fix), 4 note(s)"), lines[-1]

    # What httpd makes of the tree before the fix: the Options line is a 500.
    rc_, out_, index = tree.compile_map([tree.line("a.example", A, "a.example")])
    fpm = w4a.fpm()
    fpm.generate(index)
    fpm.start()
    httpd = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4APHPEngine on
W4APHPSocket {fpm.socket_pattern}
W4AHtcompatIniTable 8.2 {table}
{hostings_dir_block(tree.base)}
""", with_php=True, ours=[("w4a_htcompat_module", HTCOMPAT_SO)]).start()
    httpd.expect_error(r"Either all Options must start with \+ or -")
    st, h, body = httpd.get("a.example", "/app/index.php")
    assert st == 500

    before = snapshot(dr)
    rc, out = run("--fix", "--table", pattern, dr)
    assert rc == 1, out
    assert "%s: fixed 12 line(s), original kept in .htaccess.w4a-orig" % app \
        in out, out
    assert open(app).read() == FIXED
    orig = app + ".w4a-orig"
    assert open(orig).read() == BROKEN
    for p in (app, orig):
        st_ = os.stat(p)
        assert st_.st_uid == 100010 and st_.st_mode & 0o777 == 0o664, p
    assert open(hand).read() == BY_HAND             # nothing it could fix
    assert not os.path.exists(hand + ".w4a-orig")
    assert before[hand] == snapshot(dr)[hand]

    # After the fix, httpd serves the page, and the mod_php block is applied.
    st, h, body = httpd.get("a.example", "/app/index.php")
    assert st == 200, body
    v = vals(body)
    assert v["memory_limit"] == "256M" and v["upload_max_filesize"] == "40M"
    assert v["post_max_size"] == "8M"          # the !mod_php block is off
    assert v["allow_url_fopen"] == "1"
    st, h, body = httpd.get("a.example", "/app/page.html")
    assert st == 200 and vals(body)["user"] == A

    # A second run changes nothing, and only the by-hand lines remain.
    after = snapshot(dr)
    rc, out = run("--fix", "--table", pattern, dr)
    assert rc == 1, out
    assert snapshot(dr) == after
    assert out.splitlines()[-1] == ("3 .htaccess file(s): 3 line(s) to fix, "
                                    "4 note(s); 0 line(s) fixed in 0 file(s)")
    assert app + ":" not in "\n".join(ln for ln in out.splitlines()
                                      if ": break: " in ln)
    # A tree where everything could be fixed now reports nothing: exit 0.
    os.unlink(hand)
    rc, out = run("--fix", "-q", "--table", pattern, dr)
    assert rc == 0, out


def test_htcheck_map_walks_every_hosting_and_never_follows_symlinks(w4a):
    tree = w4a.tree
    dra = tree.site(A, "a.example", {".htaccess": "php_flag magic_quotes_gpc off\n"})
    drb = tree.site(B, "b.example", {"sub/.htaccess": "Options Indexes -MultiViews\n"})
    outside = os.path.join(w4a.root, "outside")
    os.makedirs(outside)
    with open(os.path.join(outside, ".htaccess"), "w") as f:
        f.write("php_admin_value open_basedir /\n")
    # A's tree points into B's and outside: neither is walked through A.
    os.symlink(drb, os.path.join(dra, "to-b"))
    os.symlink(outside, os.path.join(dra, "to-outside"))
    os.symlink(os.path.join(outside, ".htaccess"), os.path.join(dra, "x.htaccess"))
    linkdir = os.path.join(dra, "linked")
    os.makedirs(linkdir)
    os.symlink(os.path.join(outside, ".htaccess"), os.path.join(linkdir, ".htaccess"))
    rc, out, index = tree.compile_map([tree.line("a.example", A, "a.example"),
                                       tree.line("b.example", B, "b.example")])
    assert rc == 0, out
    table = dump_table(w4a.root)
    rc, out = run("--map", index, "--table", table.replace("8.2", "%v"))
    assert rc == 1, out
    assert "%s/.htaccess:1: break: php_flag magic_quotes_gpc" % dra in out
    assert "%s/sub/.htaccess:1: break: Options" % drb in out
    assert "to-b" not in out and "outside" not in out and "linked" not in out
    assert out.splitlines()[-1].startswith("2 .htaccess file(s): 2 line(s)")
    before = open(os.path.join(outside, ".htaccess")).read()
    rc, out = run("--fix", "--map", index, "--table", table.replace("8.2", "%v"))
    assert rc == 1
    assert open(os.path.join(outside, ".htaccess")).read() == before
    assert not os.path.exists(os.path.join(outside, ".htaccess.w4a-orig"))
    assert os.path.islink(os.path.join(linkdir, ".htaccess"))
    assert open(os.path.join(drb, "sub/.htaccess")).read() == \
        "Options +Indexes -MultiViews\n"
    rc, out = run("--fix", "--map", index, "--table", table.replace("8.2", "%v"))
    assert rc == 0, out


C = "w4a100012"


def test_htcheck_fix_never_follows_a_docroot_the_tenant_swapped(w4a):
    """A docroot's name sits in the tenant's var/www: A swaps it for a
    symlink to C's docroot (C: a hosting of the node, not in this map).
    --fix as root followed it and rewrote C's .htaccess.  Now the docroot
    is reached without a symlink of anyone's but root's up to its home,
    and below it by symlinks that stay in the home only: refused
    (W4A00967), C's file untouched, B checked as usual; a symlink of A's
    inside A's home still works."""
    tree = w4a.tree
    dra = tree.site(A, "a.example", {"index.html": "a\n"})
    tree.site(B, "b.example", {".htaccess": "Options Indexes -MultiViews\n"})
    drc = tree.site(C, "c.example", {".htaccess": "Options Indexes -FollowSymLinks\n"})
    rc, out, index = tree.compile_map([tree.line("a.example", A, "a.example"),
                                       tree.line("b.example", B, "b.example")])
    assert rc == 0, out
    subprocess.run(["rm", "-rf", dra], check=True)
    os.symlink(drc, dra)
    uid_a = pwd.getpwnam(A).pw_uid
    os.lchown(dra, uid_a, uid_a)
    before = snapshot(drc)
    table = dump_table(w4a.root)
    rc, out = run("--fix", "--map", index, "--table", table.replace("8.2", "%v"))
    assert rc == 1, out
    assert snapshot(drc) == before
    assert ("W4A00967: %s: a symlink below its home leads out of it: not "
            "checked" % dra) in out, out
    assert "b.example/.htaccess: fixed 1 line(s)" in out, out
    assert "c.example" not in out, out
    # a symlink that stays in the home (a deploy's current -> releases/2)
    # is the hosting's own business: followed
    release = os.path.join(tree.home(A), "var/www/releases/2")
    os.makedirs(release)
    with open(os.path.join(release, ".htaccess"), "w") as f:
        f.write("php_flag magic_quotes_gpc off\n")
    subprocess.run(["chown", "-R", "%d:%d" % (uid_a, uid_a),
                    os.path.join(tree.home(A), "var/www/releases")], check=True)
    os.unlink(dra)
    os.symlink("releases/2", dra)
    os.lchown(dra, uid_a, uid_a)
    rc, out = run("--map", index, "--table", table.replace("8.2", "%v"))
    assert "%s/.htaccess:1: break: php_flag magic_quotes_gpc" % dra in out, out
    assert "W4A00967" not in out, out


def test_htcheck_prints_a_tenants_names_and_words_escaped(w4a):
    """Directory names and .htaccess words are the tenant's: a name with
    ESC, CSI and a newline printed raw moved the operator's cursor or
    forged a report line."""
    tree = w4a.tree
    dra = tree.site(A, "a.example", {"index.html": "a\n"})
    evil = os.path.join(dra.encode(), b"x\x1b[2J\nforged:1: note: \xc2\x9b31m")
    os.makedirs(evil)
    with open(os.path.join(evil, b".htaccess"), "wb") as f:
        f.write(b"php_flag magic_quotes_gpc\x1b]0;owned\x07 off\n")
    table = dump_table(w4a.root)
    r = subprocess.run([HTCHECK, "--php-version", "8.2", "--table", table, dra],
                       capture_output=True)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 1, out
    assert b"\x1b" not in r.stdout and b"\xc2\x9b" not in r.stdout, r.stdout
    assert not any(ln.startswith("forged") for ln in out.splitlines()), out
    assert "x\\x1b[2J\\x0aforged:1: note: \\xc2\\x9b31m/.htaccess:1: break: " \
        "php_flag magic_quotes_gpc\\x1b]0;owned\\x07" in out, out


def test_htcheck_keeps_no_file_in_memory_past_it(w4a):
    """100 hard links of one 4 MiB .htaccess in A's tree: every file read
    was kept to the end of the run (about 12 MiB each, 1.2 GiB in all),
    and each link read and parsed again.  Now each file's memory goes
    with it (the run fits in 256 MiB of address space), and a file of
    several links is read once; a file of its own is still read."""
    if SANITIZE:
        pytest.skip("ASan's shadow memory does not fit in RLIMIT_AS")
    tree = w4a.tree
    dra = tree.site(A, "a.example", {"index.html": "a\n"})
    big = os.path.join(w4a.root, "big.htaccess")
    with open(big, "w") as f:
        line = "# " + "x" * 1021 + "\n"
        f.write(line * (4 * 1024 - 1))
    for i in range(100):
        d = os.path.join(dra, "d%03d" % i)
        os.makedirs(d)
        os.link(big, os.path.join(d, ".htaccess"))
    with open(os.path.join(dra, ".htaccess"), "w") as f:
        f.write("# a file of its own\n")
    table = dump_table(w4a.root)

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (256 << 20, 256 << 20))

    r = subprocess.run([HTCHECK, "--php-version", "8.2", "--table", table, dra],
                       capture_output=True, text=True, preexec_fn=cap,
                       timeout=120)
    assert r.returncode == 0, (r.returncode, r.stderr[-500:])
    assert r.stdout.splitlines()[-1].startswith("2 .htaccess file(s): 0 line(s)"), \
        r.stdout[-500:]


def test_htcheck_dump_table_reads_the_fpm_ini_and_bad_usage_is_an_error(w4a):
    table = dump_table(w4a.root)
    text = open(table).read()
    assert re.search(r"^version 8\.2$", text, re.M)
    assert re.search(r"^memory_limit 7 =128M$", text, re.M)
    assert re.search(r"^allow_url_fopen 4 =1$", text, re.M)
    assert re.search(r"^max_execution_time 7 =30$", text, re.M)   # FPM's php.ini, not the CLI's 0
    assert re.search(r"^arg_separator\.output 7 =%26$", text, re.M)
    rc, out = run("--dump-table", "8.2", "--php", "/bin/false", "-o",
                  os.path.join(w4a.root, "x.table"))
    assert rc == 2 and "W4A00962" in out
    assert not os.path.exists(os.path.join(w4a.root, "x.table"))
    rc, out = run("/nonexistent/dir")
    assert rc == 2 and "W4A00967" in out
    rc, out = run()
    assert rc == 2 and "Usage:" in out
