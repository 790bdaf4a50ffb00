"""Hostile hostings against PHP dispatch: no per-directory configuration of
hosting A decides a FastCGI parameter (PHP_VALUE, PHP_ADMIN_VALUE, our
W4A_*/GEOIP_* variables) of its requests, nor makes its own proxying look
like ours; and no reset of mod_w4a_htcompat undoes a setting of hosting B's
pool (issue 12, vectors 1 and 7; issue 14's false W4A00215)."""
import os
import pwd
import re
import subprocess
import threading
import time

import pytest

from w4a_harness import FPM_POOLS, HTCOMPAT_SO, hostings_dir_block, wait_until
from geoip_mmdb import OURS as GEOIP, make_mmdb
from test_htcompat import dump_table

A, B = "w4a100010", "w4a100011"

# What PHP sees of the settings and variables an attacker aims at.
SEE_PHP = r"""<?php
header('Content-Type: text/plain');
if (isset($_GET['slow'])) { usleep(150000); }   // let requests overlap
echo 'user=', posix_getpwuid(posix_geteuid())['name'], "\n";
echo 'pid=', getmypid(), "\n";
foreach (['open_basedir', 'auto_prepend_file', 'memory_limit',
          'max_execution_time', 'upload_max_filesize'] as $n) {
    echo $n, '=', ini_get($n), "\n";
}
foreach (['W4A_HOSTING', 'W4A_DOMAIN', 'GEOIP_COUNTRY_CODE',
          'BTW_FORBIDDEN_GEOIP', 'SCRIPT_FILENAME'] as $n) {
    echo $n, '=', $_SERVER[$n] ?? '-', "\n";
}
$s = @file_get_contents('%s');
echo 'secret=', $s === false ? 'unreadable' : trim($s), "\n";
"""

B_SECRET = "B-DATABASE-PASSWORD"


def vals(body):
    return dict(ln.split("=", 1) for ln in body.decode().splitlines()
                if "=" in ln)


def server(w4a, files_a=None, files_b=None, overrides=None, max_children=1,
           b_pool_settings=None, conf="", log_level="info", dirs_a=(),
           dirs_b=()):
    """Hostings A (a.example) and B (b.example) with PHP pools, httpd with
    mod_w4a_htcompat (INI table, pool settings read from the pool
    directory) and mod_w4a_geoip (loopback clients are DE); see.php in
    the top directory and in each of dirs_a/dirs_b."""
    tree = w4a.tree
    secret = os.path.join(tree.docroot(B, "b.example"), "secret.txt")
    php = SEE_PHP % secret
    files_a = dict(files_a or {}, **{d + "/see.php": php for d in dirs_a})
    files_b = dict(files_b or {}, **{d + "/see.php": php for d in dirs_b})
    tree.site(A, "a.example", dict({"see.php": php}, **(files_a or {})))
    tree.site(B, "b.example", dict({"see.php": php,
                                    "secret.txt": B_SECRET + "\n",
                                    "secret.php": "<?php echo '%s';\n"
                                                  % B_SECRET},
                                   **(files_b or {})))
    rc, out, index = tree.compile_map([
        tree.line("a.example", A, "a.example"),
        tree.line("b.example", B, "b.example")])
    assert rc == 0, out
    fpm = w4a.fpm()
    extra = ["--max-children", str(max_children)]
    if b_pool_settings is not None:
        sdir = os.path.join(w4a.root, "pool-settings")
        os.makedirs(sdir, exist_ok=True)
        os.chmod(sdir, 0o755)
        with open(os.path.join(sdir, B + ".conf"), "w") as f:
            f.write(b_pool_settings)
        extra += ["--pool-settings", sdir]
    rc, out = fpm.generate(index, extra=extra)
    assert rc in (0, 1), out
    fpm.start()
    table = dump_table(w4a.root)
    db = make_mmdb(os.path.join(w4a.root, "country.mmdb"), "country")
    httpd = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4APHPEngine on
W4APHPSocket {fpm.socket_pattern}
W4AHtcompatIniTable 8.2 {table}
W4AHtcompatPoolSettings {fpm.pool_dir}/w4a-%h.settings
W4AGeoIPDatabase country {db}
DirectoryIndex index.php index.html
{hostings_dir_block(tree.base, overrides=overrides)}
{conf}
""", with_php=True, log_level=log_level,
        ours=[("w4a_htcompat_module", HTCOMPAT_SO)] + GEOIP).start()
    return tree, fpm, httpd


def see(httpd, host, path, expect=200):
    st, h, body = httpd.get(host, path)
    assert st == expect, (host, path, st, body[:400])
    return vals(body)


def b_is_served(httpd):
    v = see(httpd, "b.example", "/see.php")
    assert v["user"] == B and v["W4A_HOSTING"] == B
    return v


# --- vector 1: FastCGI parameters through mod_proxy_fcgi's directives -------

FCGI_ATTACK = """ProxyFCGISetEnvIf "true" PHP_VALUE "open_basedir=/"
ProxyFCGISetEnvIf "true" PHP_ADMIN_VALUE "auto_prepend_file=%(prepend)s"
ProxyFCGISetEnvIf "true" W4A_HOSTING "w4a100011"
ProxyFCGISetEnvIf "true" !W4A_DOMAIN
ProxyFCGISetEnvIf "true" GEOIP_COUNTRY_CODE "XX"
ProxyFCGISetEnvIf "true" BTW_FORBIDDEN_GEOIP "1"
ProxyFCGISetEnvIf "true" SCRIPT_FILENAME "%(prepend)s"
ProxyFCGIBackendType GENERIC
"""


def test_proxyfcgi_directives_in_htaccess_are_a_500_with_shipped_overrides(w4a):
    prepend = os.path.join(w4a.tree.docroot(B, "b.example"), "secret.php")
    tree, fpm, httpd = server(w4a, files_a={
        "evil/.htaccess": FCGI_ATTACK % {"prepend": prepend},
        "evil/see.php": "<?php echo 'RAN';\n",
        "type/.htaccess": "ProxyFCGIBackendType GENERIC\n",
        "type/see.php": "<?php echo 'RAN';\n"})
    httpd.expect_error(r"ProxyFCGI(SetEnvIf|BackendType) not allowed here")
    for path in ("/evil/see.php", "/type/see.php"):
        st, h, body = httpd.get("a.example", path)
        assert st == 500 and b"RAN" not in body, (path, st, body)
    assert re.search(r"/evil/\.htaccess: ProxyFCGISetEnvIf not allowed here",
                     httpd.log())
    assert re.search(r"/type/\.htaccess: ProxyFCGIBackendType not allowed "
                     r"here", httpd.log())
    b_is_served(httpd)
    assert see(httpd, "a.example", "/see.php")["user"] == A


def test_proxyfcgi_setenvif_never_decides_a_fastcgi_parameter_even_with_allowoverride_all(w4a):
    """AllowOverride All (a misconfigured node): A's ProxyFCGISetEnvIf
    lines, applied by mod_proxy_fcgi while it builds the request, would lift
    open_basedir for good, prepend B's file, and overwrite our variables;
    none of it reaches FPM, on that request or the worker's next one."""
    prepend = os.path.join(w4a.tree.docroot(B, "b.example"), "secret.php")
    tree, fpm, httpd = server(w4a, overrides="All", dirs_a=("evil",),
                              files_a={"evil/.htaccess":
                                       FCGI_ATTACK % {"prepend": prepend}})
    home_a = tree.home(A) + "/:/usr/share/php/"
    pids = set()
    for _ in range(3):
        for path in ("/evil/see.php", "/see.php"):
            st, h, body = httpd.get("a.example", path)
            assert st == 200, (path, st, body[:300])
            assert B_SECRET.encode() not in body, body
            v = vals(body)
            pids.add(v["pid"])
            assert v["open_basedir"] == home_a, v
            assert v["auto_prepend_file"] == "", v
            assert v["secret"] == "unreadable", v
            assert (v["W4A_HOSTING"], v["W4A_DOMAIN"]) == (A, "a.example"), v
            assert (v["GEOIP_COUNTRY_CODE"], v["BTW_FORBIDDEN_GEOIP"]) == \
                ("DE", "0"), v
        assert v["SCRIPT_FILENAME"].endswith("/see.php")
    assert len(pids) == 1, pids             # the same FPM worker every time
    b_is_served(httpd)


@pytest.mark.parametrize("overrides", [None, "All"])
def test_our_variables_reach_php_as_ours_whatever_htaccess_sets(w4a, overrides):
    ht = ("SetEnv W4A_HOSTING w4a100011\n"
          "SetEnv GEOIP_COUNTRY_CODE XX\n"
          "SetEnvIf Request_URI . BTW_FORBIDDEN_GEOIP=1\n"
          "SetEnvIfNoCase Request_URI . w4a_domain=b.example\n"
          "RewriteEngine On\n"
          "RewriteRule ^ - [E=GEOIP_COUNTRY_CODE:YY,E=W4A_HOSTING:w4a100011]\n")
    if overrides == "All":
        ht += ('ProxyFCGISetEnvIf "true" W4A_HOSTING "w4a100011"\n'
               'ProxyFCGISetEnvIf "true" GEOIP_COUNTRY_CODE "ZZ"\n')
    tree, fpm, httpd = server(w4a, overrides=overrides, dirs_a=("env",),
                              files_a={"env/.htaccess": ht})
    v = see(httpd, "a.example", "/env/see.php")
    assert (v["user"], v["W4A_HOSTING"], v["W4A_DOMAIN"]) == \
        (A, A, "a.example"), v
    assert (v["GEOIP_COUNTRY_CODE"], v["BTW_FORBIDDEN_GEOIP"]) == ("DE", "0")
    b_is_served(httpd)


@pytest.mark.parametrize("how", ["request-header-note", "header-note"])
def test_a_note_cannot_make_a_customer_proxy_look_like_ours(w4a, how):
    """mod_w4a_php once told its own dispatch and the operator's proxying
    by request notes, which mod_headers writes (Header note; this httpd
    refuses RequestHeader note): now by its own request configuration, so
    A's SetHandler to B's pool is refused whatever notes say."""
    sock_b = os.path.join(w4a.root, "fpm", "sock", "8.2-%s.sock" % B)
    notes = ""
    for note, value in (("w4a-php-server-proxy", "1"),
                        ("w4a-php-socket", sock_b)):
        if how == "request-header-note":
            notes += "RequestHeader note X-%s %s\n" % (note, note)
        else:
            notes += ('Header always set X-%s "%s"\n'
                      "Header always note X-%s %s\n" % (note, value, note,
                                                         note))
    ht = 'SetHandler "proxy:unix:%s|fcgi://localhost"\n' % sock_b + notes
    tree, fpm, httpd = server(w4a, files_a={
        "px/.htaccess": ht,
        "px/run.php": "<?php echo 'RAN-AS-', "
                      "posix_getpwuid(posix_geteuid())['name'];\n"})
    assert fpm.socket(B) == sock_b
    headers = {"X-w4a-php-server-proxy": "1", "X-w4a-php-socket": sock_b}
    st, h, body = httpd.get("a.example", "/px/run.php", headers)
    assert b"RAN-AS" not in body, (st, body)
    if how == "request-header-note":
        httpd.expect_error(r"RequestHeader does not support the 'note'")
        assert st == 500
    else:
        httpd.expect_error(r"W4A00201: hosting w4a100010: per-directory "
                           r"configuration asked to proxy")
        assert st == 403
        assert re.search(r"W4A00201: hosting w4a100010: per-directory "
                         r"configuration asked to proxy \S+/px/run\.php",
                         httpd.log())
        # twice: the first answer's notes are not the second request's
        st, h, body = httpd.get("a.example", "/px/run.php", headers)
        assert st == 403 and b"RAN-AS" not in body
    b_is_served(httpd)


# --- issue 14: a tag means what it says ------------------------------------

def test_directory_index_with_php_values_logs_no_false_php_value_warning(w4a):
    files = {"site/.htaccess": "php_value memory_limit 200M\n",
             "setenv/.htaccess": 'SetEnv PHP_VALUE "memory_limit=77M"\n'}
    tree, fpm, httpd = server(w4a, files_a=files)
    php = open(os.path.join(tree.docroot(A, "a.example"), "see.php")).read()
    for d in ("site", "setenv"):
        tree.write(A, "a.example", d + "/index.php", php)
    for path in ("/site/", "/site/index.php", "/site/"):
        v = see(httpd, "a.example", path)
        assert v["memory_limit"] == "200M", (path, v)
    assert "W4A00215" not in httpd.log(), httpd.log()[-2000:]
    # a static file there reaches no FPM worker: nothing removed, no line
    tree.write(A, "a.example", "setenv/plain.txt", "plain\n")
    st, h, body = httpd.get("a.example", "/setenv/plain.txt")
    assert st == 200 and body == b"plain\n"
    assert "W4A00215" not in httpd.log(), httpd.log()[-2000:]
    # who did set PHP_VALUE by hand is still told so, through / as well
    v = see(httpd, "a.example", "/setenv/")
    assert v["memory_limit"] == "128M"
    assert re.search(r"W4A00215: \S+/setenv/index\.php: environment variable "
                     r"PHP_VALUE set by configuration removed", httpd.log())


# --- vector 7: resets restore the pool's own values -------------------------

B_POOL = ("php_admin_value memory_limit 512M\n"
          "php_value max_execution_time 45\n"
          "php_flag display_errors on\n")


def parallel_gets(httpd, host, path, n, threads=4):
    out, lock = [], threading.Lock()

    def run():
        for _ in range(n // threads):
            st, h, body = httpd.get(host, path)
            with lock:
                out.append((st, vals(body)))

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def test_a_php_value_never_undoes_b_pools_admin_value_on_any_worker(w4a):
    files_a = {"big/.htaccess": "php_value memory_limit 200M\n"
                                "php_value max_execution_time 99\n"
                                "php_flag display_errors off\n"}
    files_b = {"own/.htaccess": "php_value memory_limit 1G\n"
                                "php_value max_execution_time 77\n"
                                "php_value upload_max_filesize 9M\n"}
    tree, fpm, httpd = server(w4a, files_a=files_a, files_b=files_b,
                              max_children=3, b_pool_settings=B_POOL,
                              dirs_a=("big",), dirs_b=("own",))
    settings = os.path.join(fpm.pool_dir, "w4a-%s.settings" % B)
    assert os.path.exists(settings)
    conf = open(os.path.join(fpm.pool_dir, "w4a-%s.conf" % B)).read()
    assert 'php_admin_value[memory_limit] = "512M"\n' in conf, conf
    assert 'php_value[max_execution_time] = "45"\n' in conf, conf
    v = see(httpd, "a.example", "/big/see.php")
    assert (v["memory_limit"], v["max_execution_time"]) == ("200M", "99")
    pids = set()
    for st, v in parallel_gets(httpd, "b.example", "/see.php?slow=1", 24):
        assert st == 200 and v["user"] == B, v
        assert v["memory_limit"] == "512M", v
        assert v["max_execution_time"] == "45", v       # the pool's, not 30
        pids.add(v["pid"])
    assert len(pids) >= 2, pids             # more than one worker answered
    # B's own directory: its php_value applies where the pool allows it,
    # never over the pool's admin value
    v = see(httpd, "b.example", "/own/see.php")
    assert (v["memory_limit"], v["max_execution_time"],
            v["upload_max_filesize"]) == ("512M", "77", "9M"), v
    assert re.search(r"W4A00401: \S+/own/\.htaccess:1: php_value memory_limit "
                     r"skipped \(locked\)", httpd.log())
    # and back: the pool's php_value, not the table's start value
    for st, v in parallel_gets(httpd, "b.example", "/see.php?slow=1", 12):
        assert (v["memory_limit"], v["max_execution_time"],
                v["upload_max_filesize"]) == ("512M", "45", "2M"), v
    # A is reset to A's pool, which sets nothing: the table's start values
    v = see(httpd, "a.example", "/see.php")
    assert (v["memory_limit"], v["max_execution_time"]) == ("128M", "30"), v


def test_a_php_value_is_reset_in_a_pool_and_never_sent_to_b_pool(w4a):
    """The set of settings to reset is per pool (issue 17): after A's
    php_value, B's pool is sent nothing at all, so B's pool settings are
    not even needed (a file B could have written does not stop B's PHP:
    nothing reaches B's pool that it could undo), while A's pool is reset
    on every request."""
    tree, fpm, httpd = server(w4a, b_pool_settings=B_POOL, dirs_a=("big",),
                              files_a={"big/.htaccess":
                                       "php_value max_execution_time 99\n"})
    settings = os.path.join(fpm.pool_dir, "w4a-%s.settings" % B)
    assert see(httpd, "a.example", "/big/see.php")["max_execution_time"] == "99"
    os.chown(settings, pwd.getpwnam(B).pw_uid, pwd.getpwnam(B).pw_uid)
    for _ in range(3):
        v = see(httpd, "b.example", "/see.php")
        assert (v["memory_limit"], v["max_execution_time"]) == ("512M", "45")
        # A's one worker (max_children=1) got 99 and gets it reset
        assert see(httpd, "a.example", "/see.php")["max_execution_time"] == "30"
        assert see(httpd, "a.example",
                   "/big/see.php")["max_execution_time"] == "99"
    assert "W4A00420" not in httpd.log()


@pytest.mark.parametrize("how", ["tenant-owned", "group-writable",
                                 "writable-dir", "symlink"])
def test_pool_settings_file_a_tenant_could_write_is_refused(w4a, how):
    """Once something is sent to B's pool (here: resets, since B's own
    directory delivered a setting to it), B's pool settings must be known:
    a settings file someone else than root could have written is not
    used, and B's PHP is refused (500) rather than sent resets that could
    undo its pool."""
    tree, fpm, httpd = server(w4a, b_pool_settings=B_POOL, dirs_a=("big",),
                              dirs_b=("own",),
                              files_a={"big/.htaccess":
                                       "php_value max_execution_time 99\n",
                                       "static.txt": "static\n"},
                              files_b={"own/.htaccess":
                                       "php_value upload_max_filesize 9M\n"})
    settings = os.path.join(fpm.pool_dir, "w4a-%s.settings" % B)
    assert see(httpd, "a.example", "/big/see.php")["max_execution_time"] == "99"
    assert see(httpd, "b.example", "/own/see.php")["upload_max_filesize"] == "9M"
    v = see(httpd, "b.example", "/see.php")
    assert (v["memory_limit"], v["max_execution_time"],
            v["upload_max_filesize"]) == ("512M", "45", "2M"), v
    uid = pwd.getpwnam(B).pw_uid
    if how == "tenant-owned":
        os.chown(settings, uid, uid)
    elif how == "group-writable":
        os.chmod(settings, 0o664)
    elif how == "writable-dir":
        os.chmod(fpm.pool_dir, 0o777)
    else:
        real = settings + ".real"
        os.rename(settings, real)
        os.symlink(real, settings)
    httpd.expect_error(r"W4A00420: |W4A00240: ")
    # the module looks at the file again at most once a second: poll
    deadline, st = time.time() + 5, None
    while time.time() < deadline:
        st, h, body = httpd.get("b.example", "/see.php")
        if st != 200:
            break
    assert st == 500, "B's PHP still answered %s 5 s after the change" % st
    assert re.search(r"W4A00420: PHP pool settings %s " % re.escape(settings),
                     httpd.log()), httpd.log()[-2000:]
    assert re.search(r"W4A00240: hosting w4a100011: ", httpd.log())
    if how != "writable-dir":
        assert see(httpd, "a.example", "/see.php")["user"] == A
        return
    # the directory holds every pool's file: A's PHP is refused as well
    # (once its own entry is looked at again), its static files served
    deadline = time.time() + 5
    while time.time() < deadline:
        st, h, body = httpd.get("a.example", "/see.php")
        if st != 200:
            break
    assert st == 500, "A's PHP still answered %s 5 s after the change" % st
    st, h, body = httpd.get("a.example", "/static.txt")
    assert (st, body) == (200, b"static\n")


def test_fpm_pools_refuses_pool_settings_that_would_undo_isolation(w4a):
    """The operator's per-hosting settings cannot replace the settings
    every pool fixes (open_basedir, …), nor carry unsafe values."""
    tree = w4a.tree
    tree.site(A, "a.example", {"x.php": "<?php\n"})
    rc, out, index = tree.compile_map([tree.line("a.example", A, "a.example")])
    assert rc == 0, out
    sdir = os.path.join(w4a.root, "ps")
    os.makedirs(sdir)
    pool_dir = os.path.join(w4a.root, "pools")
    for text, msg in (("php_admin_value open_basedir /\n",
                       r"W4A00250: .*open_basedir.* fixed by w4a-fpm-pools"),
                      ("php_value include_path \".:$HOME\"\n",
                       r"W4A00250: .*value of include_path"),
                      ("env[X] = 1\n", r"W4A00250: .*expected"),
                      ("php_value memory_limit\n", r"W4A00250: .*expected")):
        with open(os.path.join(sdir, A + ".conf"), "w") as f:
            f.write(text)
        r = subprocess.run([FPM_POOLS, "--pool-dir", pool_dir,
                            "--pid-file", "", "--pool-settings", sdir, index],
                           capture_output=True, text=True)
        assert r.returncode == 2 and re.search(msg, r.stderr), (text, r.stderr)
        assert not os.path.exists(os.path.join(pool_dir, "w4a-%s.conf" % A))


def test_mail_says_its_hosting_and_script_and_lands_in_the_hostings_mail_log(w4a):
    """w4a-fpm-pools sets mail.add_x_header and a per-hosting mail.log
    (php_admin: locked, .htaccess cannot move it): a mail sent by B's PHP
    carries B's uid and script, and B's own mail log (written by B's
    worker, as B) names the script; A's mail log stays empty."""
    home_b = w4a.tree.home(B)
    out = os.path.join(home_b, "tmp", "mail.out")
    tree, fpm, httpd = server(
        w4a, files_b={"send.php": "<?php var_dump(mail('to@example.com', "
                                  "'hi', 'body'));\n",
                      ".htaccess": "php_value mail.log /tmp/elsewhere.log\n"},
        b_pool_settings="php_admin_value sendmail_path /usr/bin/tee %s\n" % out)
    st, _, body = httpd.get("b.example", "/send.php")
    assert st == 200 and b"bool(true)" in body, (st, body)
    uid_b = pwd.getpwnam(B).pw_uid
    wait_until(lambda: os.path.exists(out) and b"body" in open(out, "rb").read(),
               "the mail in " + out, 10)
    mail = open(out).read()
    assert re.search(r"(?m)^X-PHP-Originating-Script: %d:send\.php$" % uid_b,
                     mail), mail
    log = os.path.join(home_b, "log/php/mail.log")
    wait_until(lambda: os.path.exists(log), "B's mail log", 10)
    text = open(log).read()
    assert "send.php" in text and "to@example.com" in text, text
    assert os.stat(log).st_uid == uid_b
    assert not os.path.exists("/tmp/elsewhere.log")
    assert not os.path.exists(os.path.join(w4a.tree.home(A), "log/php/mail.log"))
    assert re.search(r"W4A004\d\d: .*mail\.log", httpd.log()), httpd.log()[-2000:]


def test_fpm_pools_never_makes_dirs_through_a_symlinked_home_the_tenant_made(w4a):
    """A record whose docroot has no /var/www/ has the docroot for home,
    and its name sits in a directory of the tenant's: A swaps it for a
    symlink to B's home.  Root made log/, log/php/ and tmp/ there, A's:
    A's directories in B's home (and A's pool writing its logs and
    uploads there).  Now a symlink is followed only where nobody but root
    can change it: nothing is made (W4A00928), A's pool is still written,
    B's home is untouched."""
    tree = w4a.tree
    tree.site(A, "a.example", {"x.php": "<?php\n"})
    tree.site(B, "b.example", {"x.php": "<?php\n"})
    uid_a = pwd.getpwnam(A).pw_uid
    home_a, home_b = tree.home(A), tree.home(B)
    for name in ("log", "tmp"):
        subprocess.run(["rm", "-rf", os.path.join(home_b, name)], check=True)
    www = os.path.join(home_a, "www")
    os.makedirs(www)
    os.chown(www, uid_a, uid_a)
    line = tree.line("a.example", A, "a.example").replace(
        tree.docroot(A, "a.example"), www)
    rc, out, index = tree.compile_map([line])
    assert rc == 0, out
    # after the compiler's checks: the tenant's swap
    os.rmdir(www)
    os.symlink(home_b, www)
    os.lchown(www, uid_a, uid_a)
    pool_dir = os.path.join(w4a.root, "pools")
    r = subprocess.run([FPM_POOLS, "--pool-dir", pool_dir, "--pid-file", "",
                        "--slowlog", os.path.join(w4a.root, "slow/%h-%v.log"),
                        index], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.path.exists(os.path.join(pool_dir, "w4a-%s.conf" % A)), \
        r.stdout + r.stderr
    assert sorted(os.listdir(home_b)) == ["var"], os.listdir(home_b)
    assert re.search(r"W4A00928: hosting %s: home %s is reached through "
                     r"a symlink \(%s\) in a directory others than root "
                     r"can change: log/ and tmp/ not made"
                     % (A, re.escape(www), re.escape(www)), r.stderr), r.stderr
    # the operator's own symlinks (a volume moved to another disk) are
    # followed: B's home through a root-owned link in a root-owned dir
    vol = os.path.join(w4a.root, "vol-link")
    os.symlink(os.path.dirname(home_b), vol)
    line_b = tree.line("b.example", B, "b.example").replace(
        os.path.dirname(home_b), vol)
    rc, out, index = tree.compile_map([line_b], extra=["--base", w4a.root])
    assert rc == 0, out
    r = subprocess.run([FPM_POOLS, "--pool-dir", pool_dir, "--pid-file", "",
                        "--slowlog", os.path.join(w4a.root, "slow/%h-%v.log"),
                        index], capture_output=True, text=True)
    assert r.returncode == 0 and "W4A0092" not in r.stderr, r.stderr
    assert os.stat(os.path.join(home_b, "tmp")).st_uid == \
        pwd.getpwnam(B).pw_uid


def test_fpm_pools_never_chowns_through_a_symlink_the_tenant_put_in_its_home(w4a):
    """The home is the tenant's: it can replace <home>/log with a symlink
    at any moment, e.g. between w4a-fpm-pools making a directory and
    giving it to the hosting. Here the symlink is already there, to a
    root-owned directory: nothing is made in it, nothing there becomes
    A's (a chown by path would follow it and hand A a directory anywhere
    on the machine); the tool says so (W4A00908) and still writes A's
    pool."""
    tree = w4a.tree
    tree.site(A, "a.example", {"x.php": "<?php\n"})
    rc, out, index = tree.compile_map([tree.line("a.example", A, "a.example")])
    assert rc == 0, out
    home = tree.home(A)
    uid_a = pwd.getpwnam(A).pw_uid
    targets = {}
    for name in ("log", "tmp"):
        target = os.path.join(w4a.root, "elsewhere-" + name)
        os.makedirs(target)
        path = os.path.join(home, name)
        if os.path.isdir(path) and not os.path.islink(path):
            subprocess.run(["rm", "-rf", path], check=True)
        os.symlink(target, path)
        os.lchown(path, uid_a, uid_a)
        targets[name] = target
    pool_dir = os.path.join(w4a.root, "pools")
    r = subprocess.run([FPM_POOLS, "--pool-dir", pool_dir, "--pid-file", "",
                        "--slowlog", os.path.join(w4a.root, "slow/%h-%v.log"),
                        index], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.path.exists(os.path.join(pool_dir, "w4a-%s.conf" % A))
    for name, target in targets.items():
        assert os.listdir(target) == [], (name, os.listdir(target))
        assert os.stat(target).st_uid == 0
    assert len(re.findall(r"W4A00908: hosting %s: " % A, r.stderr)) == 2, r.stderr
