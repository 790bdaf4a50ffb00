"""The Debian packages, as an operator uses them (docs/install.md).

Builds libapache2-mod-w4a and w4a-tools once (dpkg-buildpackage from a
copy of the tree, so the source tree stays clean), installs them with
apt-get, enables the modules with a2enmod, writes a map of two hostings,
runs w4a-fpm-pools with its defaults, starts Debian's own apache2 and
php8.2-fpm services and checks that both hostings' static and PHP pages
are served, each PHP as its own user. Then: reinstalling the packages
(an upgrade) restarts apache2 gracefully, apt remove leaves the map and
the pools alone, apt purge says what it removes.

The machine is left as it was found: Debian's services stopped (by their
own pid files: `service php8.2-fpm stop` would end every php-fpm8.2 on
the machine, other tests' included), the packages purged, ports.conf,
/etc/w4a, mods-enabled and the pool directory restored.
"""
import glob
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from w4a_harness import REPO, free_port, wait_gone, wait_port

PHPV = "8.2"
POOL_DIR = "/etc/php/%s/fpm/pool.d" % PHPV
FPM_PID = "/run/php/php%s-fpm.pid" % PHPV
APACHE_PID = "/run/apache2/apache2.pid"
BASE = "/datas/w4a-pkgtest"
USERS = [("w4apkg1", 100901, "pkg-one.example"),
         ("w4apkg2", 100902, "pkg-two.example")]
MODS = ["w4a_vhost", "w4a_php", "w4a_geoip", "w4a_htcompat", "w4a_media"]
PKGS = ["libapache2-mod-w4a", "w4a-tools"]

pytestmark = pytest.mark.skipif(
    not shutil.which("dpkg-buildpackage") or not os.path.exists("/etc/debian_version")
    or not os.path.exists("/usr/bin/dh_apache2") or not os.path.exists("/usr/sbin/php-fpm" + PHPV),
    reason="needs Debian with dpkg-dev, debhelper, apache2-dev and php%s-fpm (scripts/deps.sh)" % PHPV)


def run(cmd, check=True, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, **kw)
    if check and r.returncode != 0:
        raise AssertionError("%s: exit %d\n%s" % (" ".join(cmd), r.returncode, r.stdout[-4000:]))
    return r


def alive(pidfile):
    try:
        pid = int(open(pidfile).read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def http(port, host, path):
    r = run(["curl", "-sS", "-m", "10", "-H", "Host: " + host,
             "-o", "-", "-w", "\n%{http_code}", "http://127.0.0.1:%d%s" % (port, path)])
    body, _, code = r.stdout.rpartition("\n")
    return int(code), body


def wait_for(what, cond, timeout=15.0):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))


def stop_by_pidfile(pidfile, sig=3):
    pid = alive(pidfile)
    if pid:
        os.kill(pid, sig)
        wait_gone(pid, 30)


@pytest.fixture(scope="module")
def debs():
    """Build the packages once, from a copy of the tree."""
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix="w4a-deb-")
    src = os.path.join(tmp, "w4a-httpd")
    files = run(["git", "-C", REPO, "ls-files", "-co", "--exclude-standard", "-z"]).stdout
    os.makedirs(src)
    for f in files.split("\0"):
        if not f or not os.path.isfile(os.path.join(REPO, f)):
            continue
        # build products of the tree's own build are left behind
        if re.search(r"(\.o|\.lo|\.la|\.so)$|(^|/)\.libs/|(^|/)\.deps/", f):
            continue
        os.makedirs(os.path.dirname(os.path.join(src, f)), exist_ok=True)
        shutil.copy2(os.path.join(REPO, f), os.path.join(src, f))
    env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck parallel=%d" % (os.cpu_count() or 2))
    run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env)
    out = {p: glob.glob(os.path.join(tmp, "%s_*.deb" % p))[0] for p in PKGS}
    print("packages built in %.1f s" % (time.time() - t0))
    yield out
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def node(debs):
    """Install, configure and start, as docs/install.md says; undo it all."""
    for p in PKGS:
        st = run(["dpkg-query", "-W", "-f=${Status}", p], check=False).stdout
        if "installed" in st and "not-installed" not in st:
            pytest.skip("%s is installed on this machine: not touching it" % p)
    if alive(APACHE_PID) or alive(FPM_PID):
        pytest.skip("Debian's apache2 or php%s-fpm is running: not touching it" % PHPV)
    saved = tempfile.mkdtemp(prefix="w4a-deb-saved-")
    shutil.copy2("/etc/apache2/ports.conf", saved)
    had_w4a = os.path.isdir("/etc/w4a")
    if had_w4a:
        # (a node-dev.sh run's /etc/w4a: the packages' conffiles there
        # would make dpkg ask; it comes back afterwards)
        shutil.copytree("/etc/w4a", os.path.join(saved, "w4a"), symlinks=True)
        shutil.rmtree("/etc/w4a")
    mods_before = set(os.listdir("/etc/apache2/mods-enabled"))
    confs_before = set(os.listdir("/etc/apache2/conf-enabled"))
    pools_before = set(os.listdir(POOL_DIR))
    made = [d for d in ("/datas", "/run/w4a-php") if not os.path.exists(d)]
    port = free_port()
    log = []
    try:
        with open("/etc/apache2/ports.conf", "w") as f:
            f.write("# test_debian_package.py (restored afterwards)\nListen 127.0.0.1:%d\n" % port)
        t = time.time()
        r = run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                 debs["libapache2-mod-w4a"], debs["w4a-tools"]],
                env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        log.append(r.stdout)
        # the hostings: the panel's job (users, homes 0750 hosting:www-data)
        for user, uid, domain in USERS:
            if run(["getent", "group", user], check=False).returncode != 0:
                run(["groupadd", "-g", str(uid), user])
            if run(["getent", "passwd", user], check=False).returncode != 0:
                run(["useradd", "-u", str(uid), "-g", str(uid), "-M", "-d",
                     "%s/%s" % (BASE, user), "-s", "/usr/sbin/nologin", user])
            home = "%s/%s" % (BASE, user)
            docroot = "%s/var/www/%s" % (home, domain)
            os.makedirs(docroot, exist_ok=True)
            os.makedirs(home + "/log/apache2", exist_ok=True)
            with open(docroot + "/index.html", "w") as f:
                f.write("static page of %s\n" % domain)
            # a mod_php-era .htaccess: what w4a-overrides.conf grants needs
            # rewrite, headers and expires (a2enmod w4a_vhost enables them)
            with open(docroot + "/.htaccess", "w") as f:
                f.write("RewriteEngine On\nRewriteRule ^old-page$ index.html [L]\n"
                        "Header set X-W4A-Test yes\nExpiresActive On\n"
                        "ExpiresDefault \"access plus 1 hour\"\n")
            with open(docroot + "/info.php", "w") as f:
                f.write('<?php echo "php of ", $_SERVER["HTTP_HOST"], " as ", '
                        'posix_getpwuid(posix_geteuid())["name"], "\\n";\n')
            run(["chown", "-R", "%d:%d" % (uid, uid), home])
            os.chmod(BASE, 0o755)
            run(["chown", "%s:www-data" % user, home])
            os.chmod(home, 0o750)
        with open("/etc/w4a/hostings.map", "w") as f:
            for user, uid, domain in USERS:
                f.write("%s,www.%s %s %d %d %s/%s/var/www/%s %s active log\n"
                        % (domain, domain, user, uid, uid, BASE, user, domain, PHPV))
        os.chmod("/etc/w4a/hostings.map", 0o640)
        run(["w4a-vhostmap", "compile", "--base", "/datas", "--check-dirs", "--group",
             "www-data", "/etc/w4a/hostings.map", "/etc/w4a/hostings.index"])
        run(["w4a-htcheck", "--dump-table", PHPV, "-o", "/etc/w4a/php/%s.table" % PHPV])
        run(["w4a-logrotate-hostings"])
        r = run(["a2enmod"] + MODS)
        log.append(r.stdout)
        # slow clients, noisy neighbours: the package's conf-available
        r = run(["a2enconf", "w4a-node"])
        log.append(r.stdout)
        assert os.path.exists("/etc/apache2/conf-enabled/w4a-node.conf"), r.stdout
        # FPM is not running yet: pools written, no reload (exit 1, W4A00904)
        r = run(["w4a-fpm-pools", "/etc/w4a/hostings.index"], check=False)
        assert r.returncode in (0, 1), r.stdout
        run(["service", "php%s-fpm" % PHPV, "start"])
        wait_for("php%s-fpm's pid file" % PHPV, lambda: alive(FPM_PID))
        run(["apache2ctl", "configtest"])
        errlog = "/var/log/apache2/error.log"
        errlog_at = os.path.getsize(errlog) if os.path.exists(errlog) else 0
        run(["service", "apache2", "start"])
        wait_for("Debian's apache2 on port %d" % port, lambda: alive(APACHE_PID))
        wait_port(port)
        print("installed and started in %.1f s" % (time.time() - t))
        yield {"port": port, "log": log, "debs": debs, "errlog_at": errlog_at}
    finally:
        if alive(APACHE_PID):
            run(["apache2ctl", "stop"], check=False)
            wait_for("apache2 to stop", lambda: not alive(APACHE_PID), 30)
        stop_by_pidfile(FPM_PID)
        run(["apt-get", "purge", "-y", "-q"] + PKGS, check=False,
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        for m in set(os.listdir("/etc/apache2/mods-enabled")) - mods_before:
            os.unlink(os.path.join("/etc/apache2/mods-enabled", m))
        for c in set(os.listdir("/etc/apache2/conf-enabled")) - confs_before:
            os.unlink(os.path.join("/etc/apache2/conf-enabled", c))
        for p in set(os.listdir(POOL_DIR)) - pools_before:
            os.unlink(os.path.join(POOL_DIR, p))
        shutil.copy2(os.path.join(saved, "ports.conf"), "/etc/apache2/ports.conf")
        shutil.rmtree("/etc/w4a", ignore_errors=True)
        if had_w4a:
            shutil.copytree(os.path.join(saved, "w4a"), "/etc/w4a", symlinks=True)
        shutil.rmtree(saved, ignore_errors=True)
        shutil.rmtree(BASE, ignore_errors=True)
        for d in made:
            shutil.rmtree(d, ignore_errors=True)
        for user, _, _ in USERS:
            run(["userdel", user], check=False)
            run(["groupdel", user], check=False)


def test_two_hostings_served_by_debians_apache2_and_php_fpm_each_as_its_user(node):
    port = node["port"]
    for user, _, domain in USERS:
        code, body = http(port, domain, "/")
        assert (code, body) == (200, "static page of %s\n" % domain)
        code, body = http(port, "www." + domain, "/info.php")
        assert (code, body) == (200, "php of www.%s as %s\n" % (domain, user))
    code, _ = http(port, "unknown.example", "/")
    assert code == 404


def test_mod_php_era_htaccess_rewrite_headers_expires_work(node):
    """The overrides the package grants are usable on a stock Debian
    apache2: RewriteRule, Header and Expires* in a hosting's .htaccess
    (their modules come with a2enmod w4a_vhost); none of the granted
    directive names was discarded at start-up (AH00116)."""
    port = node["port"]
    for _, _, domain in USERS:
        r = run(["curl", "-sS", "-m", "10", "-D", "-", "-H", "Host: " + domain,
                 "http://127.0.0.1:%d/old-page" % port])
        # (run() reads text: curl's CRLFs arrive as newlines)
        head, _, body = r.stdout.partition("\n\n")
        assert head.startswith("HTTP/1.1 200"), r.stdout
        assert body == "static page of %s\n" % domain, r.stdout
        assert re.search(r"(?mi)^X-W4A-Test: yes$", head), head
        assert re.search(r"(?mi)^Cache-Control: max-age=3600$", head), head
    with open("/var/log/apache2/error.log", errors="replace") as f:
        f.seek(node["errlog_at"])
        errors = f.read()
    assert "AH00116" not in errors, [l for l in errors.splitlines() if "AH00116" in l]


def test_node_conf_from_conf_available_is_read_by_debians_apache2(node):
    """a2enconf w4a-node: Debian's apache2 reads the package's
    /etc/apache2/conf-available/w4a-node.conf (reqtimeout, Timeout 60,
    the per-hosting PHP limit) after its own apache2.conf."""
    r = run(["apache2ctl", "-t", "-D", "DUMP_INCLUDES"])
    assert re.search(r"\(\d+\)\s+/etc/apache2/conf-enabled/w4a-node\.conf", r.stdout), r.stdout
    text = open("/etc/apache2/conf-available/w4a-node.conf").read()
    assert "RequestReadTimeout" in text and "W4APHPHostingLimit" in text


def test_debians_server_status_not_for_the_hostings_php(node):
    """Debian enables mod_status with /server-status "Require local"; every
    hosting's PHP is local, and the page lists every tenant's requests
    (URLs with their query strings, clients). The shipped w4a_vhost.conf
    answers it to the monitoring host only."""
    port = node["port"]
    assert os.path.exists("/etc/apache2/mods-enabled/status.load")
    user, uid, domain = USERS[0]
    probe = "%s/%s/var/www/%s/probe.php" % (BASE, user, domain)
    with open(probe, "w") as f:
        f.write('<?php $c = curl_init("http://127.0.0.1:%d/server-status?auto");'
                ' curl_setopt($c, CURLOPT_RETURNTRANSFER, 1);'
                ' curl_setopt($c, CURLOPT_HTTPHEADER, ["Host: %s"]); curl_exec($c);'
                ' echo curl_getinfo($c, CURLINFO_HTTP_CODE), "\\n";\n' % (port, domain)
                if os.path.exists("/etc/php/%s/mods-available/curl.ini" % PHPV) else
                '<?php $s = fsockopen("127.0.0.1", %d); fwrite($s, "GET /server-status?auto'
                ' HTTP/1.0\\r\\nHost: %s\\r\\n\\r\\n");'
                ' echo explode(" ", fgets($s))[1], "\\n";\n' % (port, domain))
    os.chown(probe, uid, uid)
    code, body = http(port, domain, "/probe.php")
    assert (code, body) == (200, "403\n")
    code, _ = http(port, USERS[1][2], "/server-status")
    assert code == 403
    with open("/var/log/apache2/error.log") as f:
        assert "AH01630: client denied by server configuration" in f.read()


def test_packaged_files_have_the_modes_security_md_asks(node):
    www = int(run(["getent", "group", "www-data"]).stdout.split(":")[2])
    st = os.stat("/etc/w4a/hostings.index")
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 0, www)
    for user, _, _ in USERS:
        st = os.stat("%s/w4a-%s.conf" % (POOL_DIR, user))
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 0, 0)
        st = os.stat("%s/w4a-%s.settings" % (POOL_DIR, user))
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 0, www)
    for d in ("/run/w4a-php", "/run/w4a-php/" + PHPV):
        st = os.stat(d)
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o710, 0, www), d
    # a boot without systemd: /run is empty, the package's init script
    # (before php-fpm's) makes the socket directories again
    os.rename("/run/w4a-php", "/run/w4a-php.moved")
    try:
        run(["/etc/init.d/w4a-tools", "start"])
        st = os.stat("/run/w4a-php/" + PHPV)
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o710, 0, www)
    finally:
        shutil.rmtree("/run/w4a-php", ignore_errors=True)
        os.rename("/run/w4a-php.moved", "/run/w4a-php")
    assert os.path.exists("/etc/rcS.d") and any(
        n.endswith("w4a-tools") for n in os.listdir("/etc/rcS.d")), "not enabled at boot"
    st = os.stat("/var/log/w4a")
    assert st.st_mode & 0o777 == 0o750
    # the key, as docs/security.md says it is made
    run(["w4a-vhostmap", "keygen", "--group", "www-data", "/etc/w4a/memcached.key"])
    st = os.stat("/etc/w4a/memcached.key")
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 0, www)
    # what the package itself installs
    for p in ("/etc/w4a/w4a-overrides.conf", "/etc/apache2/mods-available/w4a_vhost.conf"):
        st = os.stat(p)
        assert (st.st_mode & 0o777, st.st_uid) == (0o644, 0), p


def test_per_hosting_logs_rotate_as_the_hosting_without_losing_lines(node):
    port = node["port"]
    user, uid, domain = USERS[0]
    logf = "%s/%s/log/apache2/access.log" % (BASE, user)
    http(port, domain, "/?before")
    wait_for("the line of /?before in " + logf,
             lambda: os.path.exists(logf) and "/?before" in open(logf).read())
    # Debian's daily logrotate run does not touch it (one hosting could
    # hold that run for ever): the package's cron job rotates each hosting
    # in a run of its own
    r = run(["logrotate", "-d", "-s", "/run/w4a-pkgtest-logrotate.state", "/etc/logrotate.conf"])
    assert logf not in r.stdout, r.stdout[-3000:]
    assert "w4a-logrotate-hostings --rotate" in open("/etc/cron.d/w4a-tools").read()
    stanza = open("/etc/w4a/logrotate-hostings/%s.conf" % user).read()
    assert logf + " {" in stanza and "su %s " % user in stanza, stanza
    r = run(["w4a-logrotate-hostings", "--rotate", "--force", "--state",
             "/run/w4a-pkgtest-logrotate"])
    assert os.path.exists(logf + ".1"), r.stdout
    st = os.stat(logf + ".1")
    assert st.st_uid == uid
    for i in range(20):
        http(port, domain, "/?after%d" % i)
    both = lambda: "".join(open(p).read() for p in (logf, logf + ".1") if os.path.exists(p))
    wait_for("the 20 lines after rotation in access.log or access.log.1",
             lambda: all("/?after%d " % i in both() for i in range(20)))
    wait_for("w4a-logsplit to reopen a new access.log (within --check-every)",
             lambda: (http(port, domain, "/?new"), os.path.exists(logf)
                      and "/?new" in open(logf).read())[1], 20)
    shutil.rmtree("/run/w4a-pkgtest-logrotate")


def test_upgrade_restarts_apache2_gracefully_and_keeps_serving(node):
    port = node["port"]
    pid = alive(APACHE_PID)
    errlog = "/var/log/apache2/error.log"
    before = open(errlog).read().count("SIGUSR1 received.  Doing graceful restart")
    r = run(["dpkg", "-i", node["debs"]["libapache2-mod-w4a"], node["debs"]["w4a-tools"]])
    wait_for("the graceful restart in " + errlog,
             lambda: open(errlog).read().count("SIGUSR1 received.  Doing graceful restart") > before)
    assert alive(APACHE_PID) == pid, r.stdout
    user, _, domain = USERS[1]
    wait_for("PHP of %s after the upgrade" % domain,
             lambda: http(port, domain, "/info.php") == (200, "php of %s as %s\n" % (domain, user)))


def test_remove_keeps_map_and_pools_purge_says_what_it_removes(node):
    run(["apache2ctl", "stop"])
    wait_for("apache2 to stop", lambda: not alive(APACHE_PID), 30)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "remove", "-y", "-q"] + PKGS, env=env)
    for p in ["/etc/w4a/hostings.map", "/etc/w4a/hostings.index",
              "%s/w4a-%s.conf" % (POOL_DIR, USERS[0][0])]:
        assert os.path.exists(p), p
    assert not os.path.exists("/etc/apache2/mods-enabled/w4a_vhost.load")
    r = run(["apt-get", "purge", "-y", "-q"] + PKGS, env=env)
    assert "kept" in r.stdout and "/etc/w4a/hostings.map" in r.stdout, r.stdout
    assert "purged /etc/apache2/mods-available/w4a_*.load" in r.stdout, r.stdout
    assert os.path.exists("/etc/w4a/hostings.map")
    assert not os.path.exists("/etc/apache2/mods-available/w4a_vhost.load")
