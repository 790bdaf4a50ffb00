"""mod_w4a_php: each hosting's PHP runs in its own FPM pool, as its user."""
import os
import pwd
import re
import subprocess

from w4a_harness import hostings_dir_block, socket_listens, wait_until

A, B = "w4a100010", "w4a100011"

INFO_PHP = r"""<?php
header('Content-Type: text/plain');
$k = ['SCRIPT_FILENAME','SCRIPT_NAME','PATH_INFO','PATH_TRANSLATED',
      'DOCUMENT_ROOT','REQUEST_URI','QUERY_STRING','HTTP_AUTHORIZATION',
      'HTTP_PROXY','HTTPS'];
echo 'user=', posix_getpwuid(posix_geteuid())['name'], "\n";
foreach ($k as $n) { echo $n, '=', $_SERVER[$n] ?? '-', "\n"; }
"""


def vars_of(body):
    return dict(ln.split("=", 1) for ln in body.decode().splitlines()
                if "=" in ln)


def php_server(w4a, extra_lines=(), body_extra="", files_a=None, files_b=None):
    tree = w4a.tree
    tree.site(A, "a.example", dict({"info.php": INFO_PHP,
                                    "index.html": "static a\n"},
                                   **(files_a or {})))
    tree.site(B, "b.example", dict({"info.php": INFO_PHP}, **(files_b or {})))
    rc, out, index = tree.compile_map([
        tree.line("a.example,www.a.example", A, "a.example"),
        tree.line("b.example", B, "b.example"),
        *extra_lines])
    assert rc == 0, out
    fpm = w4a.fpm()
    rc, out = fpm.generate(index)
    assert rc in (0, 1), out            # 1: no master to reload yet
    fpm.start()
    httpd = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
W4APHPEngine on
W4APHPSocket {fpm.socket_pattern}
DirectoryIndex index.php index.html
{hostings_dir_block(tree.base)}{body_extra}
""", with_php=True).start()
    return tree, fpm, httpd


def test_php_runs_in_each_hostings_own_pool_as_its_user(w4a):
    tree, fpm, httpd = php_server(w4a)
    for host, user in (("a.example", A), ("www.a.example", A),
                       ("b.example", B)):
        st, h, body = httpd.get(host, "/info.php")
        assert st == 200, body
        v = vars_of(body)
        assert v["user"] == user
        assert v["SCRIPT_FILENAME"].endswith("/" + host.replace("www.", "")
                                             + "/info.php")


def test_php_cgi_variables_and_path_info(w4a):
    tree, fpm, httpd = php_server(w4a)
    st, h, body = httpd.get("a.example", "/info.php/extra/path?x=1")
    assert st == 200, body
    v = vars_of(body)
    dr = tree.docroot(A, "a.example")
    assert v["SCRIPT_FILENAME"] == dr + "/info.php"
    assert v["SCRIPT_NAME"] == "/info.php"
    assert v["PATH_INFO"] == "/extra/path"
    assert v["PATH_TRANSLATED"] == dr + "/extra/path"
    assert v["DOCUMENT_ROOT"] == dr
    assert v["REQUEST_URI"] == "/info.php/extra/path?x=1"
    assert v["QUERY_STRING"] == "x=1"


def test_php_front_controller_rewrite_forms_all_work(w4a):
    """index.php/$1, index.php?/$1 and the !-f front controller."""
    files = {"index.php": INFO_PHP, "static.txt": "plain\n",
             "slash/.htaccess": "RewriteEngine On\nRewriteBase /slash/\n"
             "RewriteRule ^(.*)$ /index.php/$1 [L]\n",
             "query/.htaccess": "RewriteEngine On\nRewriteBase /query/\n"
             "RewriteRule ^(.*)$ /index.php?/$1 [L]\n",
             ".htaccess": "RewriteEngine On\n"
             "RewriteCond %{REQUEST_FILENAME} !-f\n"
             "RewriteCond %{REQUEST_FILENAME} !-d\n"
             "RewriteRule . /index.php [L]\n"}
    tree, fpm, httpd = php_server(w4a, files_a=files)
    st, h, body = httpd.get("a.example", "/slash/blog/post-1")
    assert st == 200, body
    assert vars_of(body)["PATH_INFO"] == "/blog/post-1"
    st, h, body = httpd.get("a.example", "/query/blog/post-2")
    assert st == 200, body
    assert vars_of(body)["QUERY_STRING"] == "/blog/post-2"
    st, h, body = httpd.get("a.example", "/some/pretty/url")
    assert st == 200, body
    v = vars_of(body)
    assert v["SCRIPT_NAME"] == "/index.php"
    assert v["REQUEST_URI"] == "/some/pretty/url"
    st, h, body = httpd.get("a.example", "/static.txt")
    assert (st, body) == (200, b"plain\n")
    st, h, body = httpd.get("a.example", "/")
    assert st == 200 and vars_of(body)["user"] == A   # DirectoryIndex index.php


def test_php_rewrite_of_an_existing_file_to_a_script_runs_it(w4a):
    """RewriteRule ^old.html$ /new.php: the per-directory rewrite of a file
    that exists is an internal redirect ("redirect:/new.php" until it is
    followed), which must run the script, not be refused as outside the
    document root."""
    files = {"old.html": "old static page\n", "new.php": INFO_PHP,
             "sub/.htaccess": "RewriteEngine On\n"
             "RewriteRule ^page\\.html$ /new.php?from=sub [L]\n",
             "sub/page.html": "sub static page\n",
             ".htaccess": "RewriteEngine On\n"
             "RewriteRule ^old\\.html$ /new.php [L]\n"}
    tree, fpm, httpd = php_server(w4a, files_a=files)
    st, h, body = httpd.get("a.example", "/old.html")
    assert st == 200, body
    v = vars_of(body)
    assert v["user"] == A and v["SCRIPT_NAME"] == "/new.php"
    st, h, body = httpd.get("a.example", "/sub/page.html")
    assert st == 200, body
    assert vars_of(body)["QUERY_STRING"] == "from=sub"
    assert "W4A00203" not in httpd.log()


def test_php_authorization_reaches_php_and_proxy_header_does_not(w4a):
    tree, fpm, httpd = php_server(w4a)
    st, h, body = httpd.get("a.example", "/info.php",
                            headers={"Authorization": "Basic dTpw",
                                     "Proxy": "http://evil.example:3128"})
    assert st == 200
    v = vars_of(body)
    assert v["HTTP_AUTHORIZATION"] == "Basic dTpw"
    assert v["HTTP_PROXY"] == "-"


def test_php_missing_script_gets_sites_404_without_fastcgi(w4a):
    files = {".htaccess": "ErrorDocument 404 /notfound.html\n",
             "notfound.html": "site 404 page\n"}
    tree, fpm, httpd = php_server(w4a, files_a=files)
    fpm.stop()      # no pool at all: a round trip would be a 503
    st, h, body = httpd.get("a.example", "/missing.php")
    assert st == 404
    assert body == b"site 404 page\n"
    st, h, body = httpd.get("a.example", "/dir/missing.php/x")
    assert st == 404


def test_php_pool_down_is_503_with_retry_after_and_others_keep_serving(w4a):
    tree, fpm, httpd = php_server(w4a)
    os.unlink(fpm.socket(B))        # b's pool gone
    httpd.expect_error(r"W4A00210: hosting w4a100011: PHP 8.2 pool socket "
                       + re.escape(fpm.socket(B)) + " is missing; answered 503")
    st, h, body = httpd.get("b.example", "/info.php")
    assert st == 503
    assert h.get("retry-after") == "10"
    assert httpd.wait_log(r"W4A00210: hosting w4a100011")
    st, h, body = httpd.get("a.example", "/info.php")
    assert st == 200 and vars_of(body)["user"] == A


def test_php_pool_dead_behind_existing_socket_is_503_with_retry_after(w4a):
    tree, fpm, httpd = php_server(w4a)
    fpm.stop()
    # a socket file with nobody listening: connect() is refused
    import socket as so
    s = so.socket(so.AF_UNIX)
    path = fpm.socket(A)
    if os.path.exists(path):
        os.unlink(path)
    s.bind(path)
    os.chmod(path, 0o666)
    s.close()
    httpd.expect_error(r"AH0\d+|W4A00211|attempt to connect|failed to make "
                       r"connection|disabled connection")
    st, h, body = httpd.get("a.example", "/info.php")
    assert st == 503
    assert h.get("retry-after") == "10"
    assert httpd.wait_log(r"W4A00211: PHP pool at " + re.escape(path))
    st, h, body = httpd.get("a.example", "/index.html")
    assert (st, body) == (200, b"static a\n")


def test_php_tenant_cannot_reach_another_hostings_pool(w4a):
    """Every .htaccess route to B's socket from A's tree is refused."""
    tree, fpm, httpd = php_server(w4a)
    sock_b = fpm.socket(B)
    vectors = {
        "sethandler": 'SetHandler "proxy:unix:%s|fcgi://localhost"\n' % sock_b,
        "filesmatch": '<FilesMatch "\\.php$">\nSetHandler '
                      '"proxy:unix:%s|fcgi://localhost"\n</FilesMatch>\n'
                      % sock_b,
        "rewritep": "RewriteEngine On\nRewriteRule ^(.*)$ "
                    "unix:%s|fcgi://localhost/%s/info.php [P]\n"
                    % (sock_b, tree.docroot(B, "b.example")),
        "rewriteh": "RewriteEngine On\nRewriteRule \\.php$ - "
                    "[H=proxy:unix:%s|fcgi://localhost]\n" % sock_b,
        "addhandler": 'AddHandler "proxy:unix:%s|fcgi://localhost" .php\n'
                      % sock_b,
    }
    for name, ht in vectors.items():
        tree.write(A, "a.example", name + "/.htaccess", ht)
        tree.write(A, "a.example", name + "/info.php", INFO_PHP)
    httpd.expect_error(r"W4A00201: hosting w4a100010: per-directory "
                       r"configuration asked to proxy")
    httpd.expect_error(r"AH01144|No protocol handler")
    for name in vectors:
        st, h, body = httpd.get("a.example", "/%s/info.php" % name)
        assert st in (403, 500), (name, st, body)
        assert b"user=" + B.encode() not in body, name
        assert b"user=" not in body, name
    assert "W4A00201" in httpd.log()
    # A symlink in A's tree to B's script: owner check, never B's pool.
    os.symlink(os.path.join(tree.docroot(B, "b.example"), "info.php"),
               os.path.join(tree.docroot(A, "a.example"), "link.php"))
    httpd.expect_error(r"W4A0010[6]|W4A00204")
    st, h, body = httpd.get("a.example", "/link.php")
    assert st == 403 and b"user=" not in body
    # A still runs its own PHP.
    st, h, body = httpd.get("a.example", "/info.php")
    assert st == 200 and vars_of(body)["user"] == A


def test_php_script_owned_by_another_user_is_refused(w4a):
    tree, fpm, httpd = php_server(w4a)
    tree.write(A, "a.example", "foreign.php", INFO_PHP, owner=B)
    httpd.expect_error(r"W4A0010[6].*foreign\.php|W4A00204.*foreign\.php")
    st, h, body = httpd.get("a.example", "/foreign.php")
    assert st == 403
    assert b"<?php" not in body


def test_php_domain_without_php_never_runs_or_serves_source(w4a):
    tree = w4a.tree
    tree.site("w4a100012", "static.example", {"x.php": INFO_PHP})
    tree, fpm, httpd = php_server(w4a, extra_lines=[
        tree.line("static.example", "w4a100012", "static.example", php="-")])
    httpd.expect_error(r"W4A00202: hosting w4a100012: domain static.example "
                       r"has no PHP version")
    st, h, body = httpd.get("static.example", "/x.php")
    assert st == 403
    assert b"<?php" not in body and b"posix_getpwuid" not in body


def test_fpm_pools_written_once_removed_when_gone_and_master_reloaded(w4a):
    tree, fpm, httpd = php_server(w4a)
    files = sorted(os.listdir(fpm.pool_dir))
    # each pool file, and beside it the pool's settings for mod_w4a_htcompat
    assert files == ["w4a-%s.%s" % (h, ext) for h in (A, B)
                     for ext in ("conf", "settings")]
    conf = open(os.path.join(fpm.pool_dir, files[0])).read()
    assert "user = 100010" in conf and "pm = ondemand" in conf
    assert "listen.mode = 0600" in conf
    assert "open_basedir] = %s/" % tree.home(A) in conf
    index = os.path.join(tree.root, "map.index")
    rc, out = fpm.generate(index)
    assert rc == 0 and "0 written, 2 unchanged, 0 removed; 0 FPM" in out, out
    # B leaves the map: its pool goes, the master reloads, B's socket goes.
    rc, out, _ = tree.compile_map([tree.line("a.example", A, "a.example")])
    assert rc == 0, out
    rc, out = fpm.generate(index)
    assert rc == 0 and "1 removed; 1 FPM master(s) reloaded" in out, out
    assert sorted(os.listdir(fpm.pool_dir)) == ["w4a-%s.conf" % A,
                                                "w4a-%s.settings" % A]
    wait_until(lambda: not os.path.exists(fpm.socket(B)),
               "B's FPM socket %s to go" % fpm.socket(B), 5)
    assert fpm.pid()        # SIGUSR2 re-executes the master (a new pid when daemonized)
    st, h, body = httpd.get("a.example", "/info.php")
    assert st == 200 and vars_of(body)["user"] == A


def test_fpm_pools_of_two_versions_in_one_pool_dir_never_remove_each_other(w4a):
    """--pool-dir without %v (one master for every version, as the tests
    and docs/w4a-fpm-pools.md's second example run it): a version's run
    once removed every other version's pool files as "gone" from the map,
    so moving one hosting to 8.3 took all the 8.2 pools off the node."""
    tree, fpm, httpd = php_server(w4a)
    tree.site(A, "new.a.example", {"info.php": INFO_PHP})
    rc, out, index = tree.compile_map([
        tree.line("a.example", A, "a.example", php="8.3"),
        tree.line("b.example", B, "b.example"),
        # one hosting in two versions: one file name in a shared directory
        tree.line("new.a.example", A, "new.a.example", php="8.2")])
    assert rc == 0, out
    rc, out = fpm.generate(index)
    # the lowest version keeps the name; the other is skipped and said
    assert rc == 0 and "W4A00909: PHP 8.3: %s/w4a-%s.conf is another PHP " \
        "version's already (--pool-dir has no %%v); the PHP 8.3 one is " \
        "skipped" % (fpm.pool_dir, A) in out, out
    assert "2 pools: 0 written, 2 unchanged, 0 removed; 0 FPM" in out, out
    files = ["w4a-%s.%s" % (h, ext) for h in (A, B)
             for ext in ("conf", "settings")]
    assert sorted(os.listdir(fpm.pool_dir)) == files
    # A moves to 8.3 alone while every pool changes: each version writes
    # its own file, removes none of the other's, and the one master they
    # share is signalled once, after both are written
    rc, out, index = tree.compile_map([
        tree.line("a.example,new.a.example", A, "a.example", php="8.3"),
        tree.line("b.example", B, "b.example")])
    assert rc == 0, out
    more = ("--max-children", "4")
    rc, out = fpm.generate(index, more)
    assert rc == 0 and "W4A00909" not in out, out
    assert "2 pools: 2 written, 0 unchanged, 0 removed; 1 FPM master(s) " \
        "reloaded" in out, out
    assert sorted(os.listdir(fpm.pool_dir)) == files
    rc, out = fpm.generate(index, more)
    assert rc == 0 and "0 written, 2 unchanged, 0 removed; 0 FPM" in out, out
    sock83 = os.path.join(fpm.sock_dir, "8.3-%s.sock" % A)
    wait_until(lambda: socket_listens(sock83), "A's 8.3 pool", 60)
    for host, user in (("b.example", B), ("a.example", A)):
        st, h, body = httpd.get(host, "/info.php")
        assert st == 200 and vars_of(body)["user"] == user, (host, body)


def test_fpm_pools_refuse_a_docroot_fpm_would_parse_as_an_ini_expression(w4a):
    """A docroot holding ( ) ! ~ | & ^ was written unquoted into the pool's
    php_admin_value lines: FPM's INI parser fails on ( ) ! ~ (a master that
    reloads on it loses every pool of the version) and turns a value with
    | & ^ into "0" (open_basedir 0).  Such a pool is skipped (W4A00901); the
    other hostings' pools are written and keep serving."""
    tree, fpm, httpd = php_server(w4a)
    uid = pwd.getpwnam(B).pw_uid
    for k, odd in enumerate(("b(x)", "b|x", "b&x", "b^x", "b!x", "b~x")):
        docroot = os.path.join(tree.home(B), "var/www", odd)
        rc, out, index = tree.compile_map([
            tree.line("a.example", A, "a.example"),
            "b.example %s %d %d %s 8.2 active -" % (B, uid, uid, docroot)])
        assert rc == 0, out
        rc, out = fpm.generate(index)
        assert "W4A00901: hosting '%s' (domain b.example): name, version or " \
            "docroot holds characters unsafe in a pool file; skipped" % B \
            in out, (odd, out)
        # B's pool goes on the first run; A's stays as it was
        assert "1 pools: 0 written, 1 unchanged, %d removed" \
            % (1 if k == 0 else 0) in out, (odd, out)
        assert sorted(os.listdir(fpm.pool_dir)) == ["w4a-%s.conf" % A,
                                                    "w4a-%s.settings" % A]
    st, h, body = httpd.get("a.example", "/info.php")
    assert st == 200 and vars_of(body)["user"] == A


def test_php_backend_timeout_is_504_and_logged(w4a):
    tree, fpm, httpd = php_server(
        w4a, files_a={"slow.php": "<?php sleep(4); echo 'late';\n"},
        body_extra="ProxyTimeout 1")
    httpd.expect_error(r"AH01075|AH01068|AH01069|timed out|Timeout")
    httpd.expect_error(r"W4A00211: PHP pool at .* timed out; answered 504")
    st, h, body = httpd.get("a.example", "/slow.php")
    assert st == 504 and b"late" not in body
    assert httpd.wait_log(r"W4A00211: PHP pool at %s timed out; answered 504"
                          % re.escape(fpm.socket(A)))
    st, h, body = httpd.get("b.example", "/info.php")
    assert st == 200 and vars_of(body)["user"] == B


def test_php_busy_pool_answers_503_with_retry_after_at_once(w4a):
    """W4APHPPoolLimit: past the requests in flight allowed per pool (and
    httpd process), 503 + Retry-After at once, never a hang; other
    hostings keep being served."""
    import threading
    import time
    tree = w4a.tree
    tree.site(A, "a.example", {"slow.php": "<?php usleep(1500000); echo 'done';\n"})
    tree.site(B, "b.example", {"info.php": INFO_PHP})
    rc, out, index = tree.compile_map([tree.line("a.example", A, "a.example"),
                                       tree.line("b.example", B, "b.example")])
    assert rc == 0, out
    fpm = w4a.fpm()
    rc, out = fpm.generate(index, extra=("--max-children", "8"))
    assert rc in (0, 1), out
    fpm.start()
    httpd = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4APHPEngine on
W4APHPSocket {fpm.socket_pattern}
W4APHPRetryAfter 3
W4APHPPoolLimit 1
<Directory {tree.base}>
    Require all granted
</Directory>
""", with_php=True).start()
    httpd.expect_error(r"W4A00212: hosting w4a100010: PHP pool .* is busy "
                       r"\(1 requests in flight in this process, "
                       r"W4APHPPoolLimit 1\); answered 503")
    results = []

    def one():
        t0 = time.time()
        st, h, body = httpd.get("a.example", "/slow.php")
        results.append((st, h.get("retry-after"), body, time.time() - t0))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: any(r[0] == 503 for r in results),
               "a's pool to be full (a 503 for one of its requests)")
    st, h, body = httpd.get("b.example", "/info.php")      # b is not held up
    assert st == 200 and vars_of(body)["user"] == B
    for t in threads:
        t.join()
    codes = sorted(r[0] for r in results)
    assert set(codes) == {200, 503}, codes
    assert codes.count(200) <= 4       # at most 1 per httpd process (ServerLimit 4)
    for st, retry, body, took in results:
        if st == 503:
            assert retry == "3"
            assert took < 1.0          # refused at once, not queued
        else:
            assert body == b"done"
    assert "W4A00212" in httpd.log()


def test_php_https_variable_over_tls(w4a):
    """Over TLS (mod_ssl), PHP sees HTTPS=on; over plain HTTP it does not."""
    import socket
    import ssl
    from w4a_harness import free_port
    key = os.path.join(w4a.root, "tls.key")
    crt = os.path.join(w4a.root, "tls.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", key, "-out", crt, "-days", "1", "-subj",
                    "/CN=a.example"], check=True, capture_output=True)
    tls_port = free_port()
    tree, fpm, httpd = php_server(w4a, body_extra=f"""
LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so
LoadModule socache_shmcb_module /usr/lib/apache2/modules/mod_socache_shmcb.so
Listen 127.0.0.1:{tls_port}
<VirtualHost 127.0.0.1:{tls_port}>
    SSLEngine on
    SSLCertificateFile {crt}
    SSLCertificateKeyFile {key}
</VirtualHost>
""")
    st, h, body = httpd.get("a.example", "/info.php")
    assert st == 200 and vars_of(body)["HTTPS"] == "-"
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="a.example") as s:
            s.sendall(b"GET /info.php HTTP/1.1\r\nHost: a.example\r\n"
                      b"Connection: close\r\n\r\n")
            data = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    if b"chunked" in head.lower():
        from w4a_harness import dechunk
        body = dechunk(body)
    v = vars_of(body)
    assert v["HTTPS"] == "on"
    assert v["user"] == A


def test_php_script_outside_docroot_is_refused_with_its_status(w4a):
    """A server-level Alias can map a hosting's URL outside its document
    root: PHP there is refused (W4APHPCheckStatus outside)."""
    shared = os.path.join(w4a.root, "shared")
    os.makedirs(shared)
    with open(os.path.join(shared, "x.php"), "w") as f:
        f.write(INFO_PHP)
    os.chown(os.path.join(shared, "x.php"), 100010, 100010)
    tree, fpm, httpd = php_server(w4a, body_extra=f"""
W4APHPCheckStatus outside 451
Alias /shared {shared}
<Directory {shared}>
    Require all granted
</Directory>
""")
    httpd.expect_error(r"W4A00203: hosting w4a100010: script %s/x\.php is "
                       r"outside the document root" % re.escape(shared))
    st, h, body = httpd.get("a.example", "/shared/x.php")
    assert st == 451 and b"user=" not in body and b"<?php" not in body


def test_php_hosting_uid_below_minimum_never_runs_php(w4a):
    tree = w4a.tree
    dr = tree.site(A, "a.example", {"info.php": INFO_PHP})
    # uid 33 (www-data) owns a copy of the tree's script
    tree.write(A, "a.example", "low/info.php", INFO_PHP, owner="www-data")
    rc, out, index = tree.compile_map([
        tree.line("a.example", A, "a.example"),
        "low.example www-data 33 33 %s/low 8.2 active -" % dr], extra=("--min-uid", "0"))
    assert rc == 0, out
    fpm = w4a.fpm()
    fpm.generate(index)
    fpm.start()
    httpd = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostMinUid 0
W4APHPEngine on
W4APHPSocket {fpm.socket_pattern}
W4APHPMinUid 1000
W4APHPCheckStatus uid 403
<Directory {tree.base}>
    Require all granted
</Directory>
""", with_php=True).start()
    httpd.expect_error(r"W4A00205: hosting www-data: uid 33 below W4APHPMinUid "
                       r"1000; PHP not run")
    st, h, body = httpd.get("low.example", "/info.php")
    assert st == 403 and b"user=" not in body
    st, h, body = httpd.get("a.example", "/info.php")
    assert st == 200 and vars_of(body)["user"] == A


INI_PHP = r"""<?php
header('Content-Type: text/plain');
foreach (['memory_limit', 'open_basedir', 'max_execution_time',
          'display_errors', 'upload_max_filesize'] as $n) {
    echo $n, '=', var_export(ini_get($n), true), "\n";
}
"""


def test_php_value_set_from_htaccess_env_never_reaches_fpm(w4a):
    """SetEnv / SetEnvIf / RewriteRule [E=] / mod_headers-driven env named
    PHP_VALUE or PHP_ADMIN_VALUE (any case) in a customer's .htaccess never
    reach FPM: FPM would write them into the worker for good, unchecked.
    Checked with a pool of one worker, so that a leak into the next request
    would show."""
    vectors = {
        "setenv": 'SetEnv PHP_VALUE "memory_limit=77M"\n'
                  'SetEnv PHP_ADMIN_VALUE "open_basedir=/"\n',
        "lower": 'SetEnv php_value "memory_limit=77M"\n'
                 'SetEnv Php_Admin_Value "open_basedir=/"\n',
        "setenvif": 'SetEnvIf Request_URI . PHP_VALUE=memory_limit=77M\n'
                    'SetEnvIf Request_URI . PHP_ADMIN_VALUE=open_basedir=/\n',
        "rewrite": "RewriteEngine On\n"
                   "RewriteRule ^ - [E=PHP_VALUE:memory_limit=77M,"
                   "E=PHP_ADMIN_VALUE:open_basedir=/]\n",
        "header": "SetEnvIf X-Ini (.*) PHP_VALUE=$1\n",
    }
    files = {"plain/ini.php": INI_PHP}
    for name, ht in vectors.items():
        files[name + "/.htaccess"] = ht
        files[name + "/ini.php"] = INI_PHP
    tree = w4a.tree
    tree.site(A, "a.example", files)
    rc, out, index = tree.compile_map([tree.line("a.example", A, "a.example")])
    assert rc == 0, out
    fpm = w4a.fpm()
    rc, out = fpm.generate(index, extra=("--max-children", "1"))
    assert rc in (0, 1), out
    fpm.start()
    httpd = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4APHPEngine on
W4APHPSocket {fpm.socket_pattern}
{hostings_dir_block(tree.base)}
""", with_php=True).start()
    home = tree.home(A)
    for name in vectors:
        st, h, body = httpd.get("a.example", "/%s/ini.php" % name,
                                headers={"X-Ini": "memory_limit=77M"})
        assert st == 200, (name, body)
        v = vars_of(body)
        assert v["memory_limit"] == "'128M'", (name, v)
        assert v["open_basedir"] == "'%s/:/usr/share/php/'" % home, (name, v)
        # the next request of the one worker, from a clean directory
        st, h, body = httpd.get("a.example", "/plain/ini.php")
        v = vars_of(body)
        assert st == 200 and v["memory_limit"] == "'128M'", (name, v)
        assert v["open_basedir"] == "'%s/:/usr/share/php/'" % home, (name, v)
