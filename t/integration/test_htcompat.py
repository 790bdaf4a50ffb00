"""mod_w4a_htcompat: the mod_php era's .htaccess lines keep working, checked
against the real PHP's INI table, delivered to FPM without leaks."""
import json
import os
import re
import struct
import subprocess
import time

from w4a_harness import HTCOMPAT_SO, REPO, hostings_dir_block, wait_until

A, B = "w4a100010", "w4a100011"
HTCHECK = os.path.join(REPO, "support/w4a-htcheck")

SETTINGS = ["memory_limit", "upload_max_filesize", "post_max_size",
            "max_execution_time", "max_input_time", "display_errors",
            "output_buffering", "default_charset", "include_path",
            "session.name", "open_basedir", "allow_url_fopen",
            "session.auto_start", "short_open_tag", "error_reporting"]

INI_PHP = r"""<?php
header('Content-Type: text/plain');
echo 'user=', posix_getpwuid(posix_geteuid())['name'], "\n";
echo 'pid=', getmypid(), "\n";
echo 'pool=', getenv('W4A_POOL') ?: '-', "\n";
foreach (%s as $n) {
    $v = ini_get($n);
    echo $n, '=', $v === false ? '(none)' : $v, "\n";
}
""" % ("[" + ", ".join("'%s'" % s for s in SETTINGS) + "]")


def vals(body):
    return dict(ln.split("=", 1) for ln in body.decode().splitlines()
                if "=" in ln)


def dump_table(root):
    path = os.path.join(root, "php8.2.table")
    r = subprocess.run([HTCHECK, "--dump-table", "8.2", "-o", path],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return path


def server(w4a, files_a=None, files_b=None, conf="", max_children=1,
           log_level="info", pool_extra=None):
    """Hostings A (a.example) and B (b.example), each an FPM pool of
    max_children workers, httpd with mod_w4a_htcompat."""
    tree = w4a.tree
    tree.site(A, "a.example", dict({"ini.php": INI_PHP}, **(files_a or {})))
    tree.site(B, "b.example", dict({"ini.php": INI_PHP}, **(files_b or {})))
    rc, out, index = tree.compile_map([
        tree.line("a.example", A, "a.example"),
        tree.line("b.example", B, "b.example")])
    assert rc == 0, out
    fpm = w4a.fpm()
    rc, out = fpm.generate(index, extra=("--max-children", str(max_children)))
    assert rc in (0, 1), out
    if pool_extra:
        pool_extra(fpm)
    fpm.start()
    table = dump_table(w4a.root)
    httpd = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4APHPEngine on
W4APHPSocket {fpm.socket_pattern}
W4AHtcompatIniTable 8.2 {table}
DirectoryIndex index.php index.html
{hostings_dir_block(tree.base)}
<Location /htcompat-status>
    SetHandler w4a-htcompat-status
    Require local
</Location>
{conf}
""", with_php=True, log_level=log_level,
        ours=[("w4a_htcompat_module", HTCOMPAT_SO)]).start()
    return tree, fpm, httpd


def status(httpd):
    st, h, body = httpd.get("localhost", "/htcompat-status")
    assert st == 200 and h["content-type"].startswith("application/json")
    return json.loads(body)


def get_vals(httpd, host, path, expect=200):
    st, h, body = httpd.get(host, path)
    assert st == expect, (host, path, st, body[:300])
    return vals(body)


# --- applications as they ship -----------------------------------------

WORDPRESS = r"""# BEGIN WordPress
<IfModule mod_rewrite.c>
RewriteEngine On
RewriteBase /
RewriteRule ^index\.php$ - [L]
RewriteCond %{REQUEST_FILENAME} !-f
RewriteCond %{REQUEST_FILENAME} !-d
RewriteRule . /index.php [L]
</IfModule>
# END WordPress
php_value upload_max_filesize 64M
php_value post_max_size 64M
php_value max_execution_time 300
php_value max_input_time 300
php_value memory_limit 256M
"""

DRUPAL = r"""# Protect files and directories from prying eyes.
<FilesMatch "\.(engine|inc|install|make|module|profile|po|sh|.*sql|theme|twig|tpl(\.php)?|xtmpl|yml)(~|\.sw[op]|\.bak|\.orig|\.save)?$|^(\.(?!well-known).*|Entries.*|Repository|Root|Tag|Template|composer\.(json|lock)|web\.config)$|^#.*#$|\.php(~|\.sw[op]|\.bak|\.orig|\.save)$">
  Require all denied
</FilesMatch>
Options -Indexes
Options +FollowSymLinks
ErrorDocument 404 /index.php
DirectoryIndex index.php index.html index.htm
<IfModule mod_php5.c>
  php_value assert.active                   0
  php_flag session.auto_start               off
  php_value mbstring.http_input             pass
  php_value mbstring.http_output            pass
  php_flag mbstring.encoding_translation    off
  php_flag magic_quotes_gpc                 off
  php_flag register_globals                 off
</IfModule>
<IfModule mod_php7.c>
  php_flag session.auto_start               off
</IfModule>
<IfModule mod_rewrite.c>
  RewriteEngine on
  RewriteRule "/\.|^\.(?!well-known/)" - [F]
  RewriteCond %{REQUEST_FILENAME} !-f
  RewriteCond %{REQUEST_FILENAME} !-d
  RewriteCond %{REQUEST_URI} !=/favicon.ico
  RewriteRule ^ index.php [L]
</IfModule>
"""

JOOMLA = r"""## Joomla-style front controller
Options +FollowSymlinks
Options -Indexes
<IfModule mod_php7.c>
  php_flag display_errors Off
</IfModule>
RewriteEngine On
RewriteCond %{QUERY_STRING} base64_encode[^(]*\([^)]*\) [OR]
RewriteCond %{QUERY_STRING} (<|%3C)([^s]*s)+cript.*(>|%3E) [NC,OR]
RewriteCond %{QUERY_STRING} GLOBALS(=|\[|\%[0-9A-Z]{0,2}) [OR]
RewriteCond %{QUERY_STRING} _REQUEST(=|\[|\%[0-9A-Z]{0,2})
RewriteRule .* index.php [F]
RewriteRule .* - [E=HTTP_AUTHORIZATION:%{HTTP:Authorization}]
RewriteCond %{REQUEST_URI} !^/index\.php
RewriteCond %{REQUEST_FILENAME} !-f
RewriteCond %{REQUEST_FILENAME} !-d
RewriteRule .* index.php [L]
"""

NEXTCLOUD = r"""<IfModule mod_headers.c>
  <IfModule mod_setenvif.c>
    SetEnvIf X-Requested-With "XMLHttpRequest" modHeadersAvailable=true
  </IfModule>
  Header onsuccess unset X-Content-Type-Options
  Header always set X-Content-Type-Options "nosniff"
</IfModule>
<IfModule mod_php5.c>
  php_value upload_max_filesize 511M
  php_value post_max_size 511M
  php_value memory_limit 512M
  php_value mbstring.func_overload 0
  php_value always_populate_raw_post_data -1
  php_value default_charset 'UTF-8'
  php_value output_buffering 0
  <IfModule mod_env.c>
    SetEnv htaccessWorking true
  </IfModule>
</IfModule>
<IfModule mod_php7.c>
  php_value upload_max_filesize 511M
  php_value post_max_size 511M
  php_value memory_limit 512M
  php_value mbstring.func_overload 0
  php_value default_charset 'UTF-8'
  php_value output_buffering 0
  <IfModule mod_env.c>
    SetEnv htaccessWorking true
  </IfModule>
</IfModule>
<IfModule mod_php.c>
  php_value upload_max_filesize 511M
  php_value post_max_size 511M
  php_value memory_limit 512M
  php_value default_charset 'UTF-8'
  php_value output_buffering 0
  <IfModule mod_env.c>
    SetEnv htaccessWorking true
  </IfModule>
</IfModule>
<IfModule mod_rewrite.c>
  RewriteEngine on
  RewriteRule .* - [env=HTTP_AUTHORIZATION:%{HTTP:Authorization}]
  RewriteRule ^\.well-known/carddav /remote.php/dav/ [R=301,L]
</IfModule>
AddDefaultCharset utf-8
Options -Indexes
"""


def app_files(name, ht):
    return {name + "/.htaccess": ht,
            name + "/index.php": INI_PHP,
            name + "/static.txt": "static " + name + "\n"}


def test_htcompat_popular_apps_htaccess_work_unchanged(w4a):
    files = {}
    for name, ht in (("wp", WORDPRESS), ("drupal", DRUPAL),
                     ("joomla", JOOMLA), ("nextcloud", NEXTCLOUD)):
        files.update(app_files(name, ht))
    # WordPress sits at the domain's top: its rules use RewriteBase /
    files[".htaccess"] = WORDPRESS
    files["index.php"] = INI_PHP
    tree, fpm, httpd = server(w4a, files_a=files)
    httpd.expect_error(r"AH01630|client denied")      # Drupal's FilesMatch
    # WordPress: pretty URL through the front controller, its php_values on
    v = get_vals(httpd, "a.example", "/2026/12/hello-world/")
    assert v["user"] == A
    assert (v["upload_max_filesize"], v["post_max_size"], v["memory_limit"],
            v["max_execution_time"], v["max_input_time"]) == \
        ("64M", "64M", "256M", "300", "300")
    # Drupal, Joomla, Nextcloud: pages and static files served; mod_php
    # blocks are inactive (mod_php is not loaded), so PHP's defaults hold,
    # and the parent's (WordPress's) values are inherited as under mod_php.
    for app in ("drupal", "joomla", "nextcloud"):
        v = get_vals(httpd, "a.example", "/%s/index.php" % app)
        assert v["user"] == A and v["memory_limit"] == "256M", (app, v)
        st, h, body = httpd.get("a.example", "/%s/static.txt" % app)
        assert (st, body) == (200, ("static %s\n" % app).encode()), app
    v = get_vals(httpd, "a.example", "/drupal/node/1")
    assert v["user"] == A
    st, h, body = httpd.get("a.example", "/drupal/x.module")
    assert st == 403
    v = get_vals(httpd, "a.example", "/joomla/component/content")
    assert v["user"] == A
    st, h, body = httpd.get("a.example", "/joomla/?x=base64_encode(1)")
    assert st == 403
    st, h, body = httpd.get("a.example", "/nextcloud/.well-known/carddav")
    assert st == 301 and h["location"].endswith("/remote.php/dav/")
    st, h, body = httpd.get("a.example", "/nextcloud/index.php")
    assert h.get("x-content-type-options") == "nosniff"
    assert "Invalid command" not in httpd.log()


def test_htcompat_php_value_applied_and_never_leaks_on_one_worker(w4a):
    """One FPM worker per pool: requests alternate between a directory with
    php_value lines, one without, one with other values, and another
    hosting; each sees exactly its own directory's settings."""
    set_ht = ("php_value memory_limit 200M\n"
              "php_value upload_max_filesize 33M\n"
              "php_value post_max_size 34M\n"
              "php_flag display_errors on\n"
              "php_value max_execution_time 77\n"
              "php_value session.name W4ASESS\n"
              "php_value default_charset \"ISO-8859-1\"\n")
    files_a = {"set/.htaccess": set_ht, "set/ini.php": INI_PHP,
               "set/index.php": INI_PHP,
               "set/deeper/ini.php": INI_PHP,
               "set/deeper/.htaccess": "php_value memory_limit 210M\n",
               "other/.htaccess": "php_value memory_limit 300M\n",
               "other/ini.php": INI_PHP,
               "plain/ini.php": INI_PHP}
    tree, fpm, httpd = server(w4a, files_a=files_a)
    base = get_vals(httpd, "a.example", "/plain/ini.php")
    assert base["memory_limit"] == "128M" and base["display_errors"] == ""
    want_set = {"memory_limit": "200M", "upload_max_filesize": "33M",
                "post_max_size": "34M", "display_errors": "1",
                "max_execution_time": "77", "session.name": "W4ASESS",
                "default_charset": "ISO-8859-1"}
    pids = set()
    for rnd in range(3):
        v = get_vals(httpd, "a.example", "/set/ini.php")
        assert {k: v[k] for k in want_set} == want_set, v
        pids.add(v["pid"])
        v = get_vals(httpd, "a.example", "/plain/ini.php")
        assert {k: v[k] for k in want_set} == {k: base[k] for k in want_set}, v
        pids.add(v["pid"])
        v = get_vals(httpd, "a.example", "/set/")    # DirectoryIndex index.php
        assert {k: v[k] for k in want_set} == want_set, v
        pids.add(v["pid"])
        v = get_vals(httpd, "a.example", "/set/deeper/ini.php")
        assert v["memory_limit"] == "210M" and v["session.name"] == "W4ASESS"
        pids.add(v["pid"])
        v = get_vals(httpd, "a.example", "/other/ini.php")
        assert v["memory_limit"] == "300M" and v["session.name"] == "PHPSESSID"
        assert v["display_errors"] == "" and v["upload_max_filesize"] == "2M"
        pids.add(v["pid"])
        vb = get_vals(httpd, "b.example", "/ini.php")
        assert vb["user"] == B
        assert {k: vb[k] for k in want_set} == {k: base[k] for k in want_set}
    assert len(pids) == 1, pids      # all of A's requests: the same worker
    s = status(httpd)
    # per round: /set/ini.php, /set/ and /set/deeper (7 each), /other (1)
    assert s["applied"] == 3 * (7 + 7 + 7 + 1) and s["tracked_slots"] >= 7, s
    assert all(n == 0 for n in s["refused"].values()), s


def test_htcompat_refused_settings_are_logged_skipped_and_counted(w4a):
    ht = ("php_value memory_limit 99M\n"                 # 1 applied
          "php_value allow_url_fopen 0\n"                # 2 system-only
          "php_value w4a.no_such_setting 1\n"            # 3 unknown
          "php_flag register_globals on\n"               # 4 removed: quiet
          "php_admin_value memory_limit 1G\n"            # 5 admin in .htaccess
          "php_value open_basedir /\n"                   # 6 locked by the pool
          "php_flag display_errors maybe\n"              # 7 bad flag
          "php_value error_reporting E_ALL & ~E_NOTICE\n"  # 8 syntax
          "php_value disable_functions \"\"\n"           # 9 irreversible
          "php_admin_flag engine on\n"                  # 10 admin
          "suPHP_ConfigPath /home/x/etc\n")             # 11 suphp: ignored
    files_a = {"bad/.htaccess": ht, "bad/ini.php": INI_PHP}
    tree, fpm, httpd = server(w4a, files_a=files_a,
                              log_level="info w4a_htcompat:debug")
    path = os.path.join(tree.docroot(A, "a.example"), "bad/.htaccess")
    v = get_vals(httpd, "a.example", "/bad/ini.php")
    assert v["memory_limit"] == "99M"
    assert v["allow_url_fopen"] == "1"
    assert v["open_basedir"] == tree.home(A) + "/:/usr/share/php/"
    assert v["display_errors"] == ""
    log = httpd.log()
    for line, what, reason in ((2, "php_value allow_url_fopen", "system"),
                               (3, "php_value w4a.no_such_setting", "unknown"),
                               (5, "php_admin_value memory_limit", "admin"),
                               (6, "php_value open_basedir", "locked"),
                               (7, "php_flag display_errors", "badflag"),
                               (8, "php_value error_reporting", "syntax"),
                               (9, "php_value disable_functions", "irreversible"),
                               (10, "php_admin_flag engine", "admin")):
        assert re.search(r"\[w4a_htcompat:warn\].*W4A00401: %s:%d: %s skipped "
                         r"\(%s\)" % (re.escape(path), line, re.escape(what),
                                      reason), log), (line, log[-3000:])
    assert re.search(r"\[w4a_htcompat:warn\].*W4A00403: %s:11: suPHP_ConfigPath "
                     r"ignored: mod_suphp's directive" % re.escape(path), log)
    assert re.search(r"\[w4a_htcompat:debug\].*W4A00402: %s:4: php_flag "
                     r"register_globals dropped" % re.escape(path), log)
    assert "[w4a_htcompat:warn]" not in "".join(
        ln for ln in log.splitlines() if "register_globals" in ln)
    s = status(httpd)
    assert s["applied"] == 1
    assert s["refused"] == {"unknown": 1, "removed": 1, "system": 1,
                            "admin": 2, "locked": 1, "unsafe": 0,
                            "badflag": 1, "nodefault": 0, "notable": 0,
                            "irreversible": 1, "syntax": 1, "suphp": 1}, s
    # the server keeps serving, the other directories untouched
    v = get_vals(httpd, "a.example", "/ini.php")
    assert v["memory_limit"] == "128M"
    vb = get_vals(httpd, "b.example", "/ini.php")
    assert vb["user"] == B


def test_htcompat_values_cannot_smuggle_another_setting(w4a):
    """Quotes, ';', '=', '$', backslashes, continuation lines: a value is
    either sent as one quoted INI string or refused; open_basedir and
    memory_limit never move."""
    cases = {
        "semicolon": "php_value include_path \".;open_basedir=/\"\n",
        "quote": "php_value include_path '.\" open_basedir=\"/'\n",
        "equals": "php_value session.name \"x open_basedir=/\"\n",
        "dollar": "php_value include_path \"${W4A_UNDEFINED}\"\n",
        "backslash": "php_value include_path 'a\\\" memory_limit=1'\n",
        "cont": "php_value include_path \".\\\nopen_basedir=/\"\n",
    }
    files = {}
    for name, ht in cases.items():
        files[name + "/.htaccess"] = ht
        files[name + "/ini.php"] = INI_PHP
    tree, fpm, httpd = server(w4a, files_a=files)
    home = tree.home(A)
    results = {}
    for name in cases:
        v = get_vals(httpd, "a.example", "/%s/ini.php" % name)
        assert v["open_basedir"] == home + "/:/usr/share/php/", (name, v)
        assert v["memory_limit"] == "128M", (name, v)
        results[name] = v
    # ';' and '=' inside the quoted value are just characters
    assert results["semicolon"]["include_path"] == ".;open_basedir=/"
    assert results["equals"]["session.name"] == "x open_basedir=/"
    # '"', '$' and '\' are refused, with the reason
    for name in ("quote", "dollar", "backslash"):
        assert results[name]["include_path"] == ".:/usr/share/php", name
    assert len(re.findall(r"W4A00401: .*/(quote|dollar|backslash)/\.htaccess:1: "
                          r"php_value include_path skipped \(unsafe\)",
                          httpd.log())) == 3, httpd.log()[-2000:]
    # httpd joins a continuation line: one value, no newline in it
    assert results["cont"]["include_path"] == ".open_basedir=/"
    assert status(httpd)["refused"]["unsafe"] == 3


def test_htcompat_engine_off_never_runs_or_serves_source(w4a):
    files = {"uploads/.htaccess": "php_flag engine off\n"
                                  "AddHandler application/x-httpd-php .html\n",
             "uploads/shell.php": "<?php echo 'RAN';\n",
             "uploads/page.html": "<?php echo 'RAN';\n",
             "uploads/photo.txt": "just a file\n",
             "uploads/ok/.htaccess": "php_flag engine on\n",
             "uploads/ok/run.php": "<?php echo 'RAN-OK';\n"}
    tree, fpm, httpd = server(w4a, files_a=files)
    httpd.expect_error(r"W4A00213: hosting w4a100010: PHP engine off")
    for path in ("/uploads/shell.php", "/uploads/page.html",
                 "/uploads/shell.php/x"):
        st, h, body = httpd.get("a.example", path)
        assert st == 403, (path, st)
        assert b"<?php" not in body and b"RAN" not in body, path
    assert re.search(r"W4A00213: hosting w4a100010: PHP engine off in this "
                     r"directory \(php_flag engine off\); \S+/uploads/shell\.php "
                     r"neither run nor served", httpd.log())
    st, h, body = httpd.get("a.example", "/uploads/photo.txt")
    assert (st, body) == (200, b"just a file\n")
    st, h, body = httpd.get("a.example", "/uploads/ok/run.php")
    assert (st, body) == (200, b"RAN-OK")
    assert get_vals(httpd, "a.example", "/ini.php")["user"] == A
    assert status(httpd)["engine_off"] == 3


def test_htcompat_engine_off_status_is_configurable_and_admin_lock_holds(w4a):
    tree = w4a.tree
    dr = tree.docroot(A, "a.example")
    files = {"up/.htaccess": "php_flag engine off\n",
             "up/x.php": "<?php echo 'RAN';\n",
             "locked/.htaccess": "php_flag engine on\n"
                                 "php_value memory_limit 1G\n",
             "locked/x.php": "<?php echo 'RAN';\n",
             "locked/ini.php": INI_PHP,
             "adm/ini.php": INI_PHP,
             "adm/.htaccess": "php_value memory_limit 2G\n",
             "deny/.htaccess": "php_value max_input_vars 9999\n"
                               "php_value max_input_time 99\n",
             "deny/ini.php": INI_PHP.replace("'error_reporting'",
                                             "'max_input_vars'")}
    tree, fpm, httpd = server(w4a, files_a=files, conf=f"""
W4APHPCheckStatus engine 404
W4AHtcompatDeny max_input_vars memory_limit
<Directory {dr}/locked>
    php_admin_flag engine off
    php_admin_value memory_limit 64M
</Directory>
<Directory {dr}/adm>
    php_admin_value memory_limit 65M
    php_admin_value allow_url_fopen 0
</Directory>
""")
    httpd.expect_error(r"W4A00213: hosting w4a100010: PHP engine off")
    for path in ("/up/x.php", "/locked/x.php"):
        st, h, body = httpd.get("a.example", path)
        assert st == 404 and b"RAN" not in body and b"<?php" not in body, path
    v = get_vals(httpd, "a.example", "/adm/ini.php")
    assert v["memory_limit"] == "65M"         # the server's admin value wins
    assert v["allow_url_fopen"] == "0"        # system setting, by the server
    assert re.search(r"W4A00401: \S+/adm/\.htaccess:1: php_value memory_limit "
                     r"skipped \(locked\)", httpd.log())
    v = get_vals(httpd, "a.example", "/ini.php")
    assert v["memory_limit"] == "128M" and v["allow_url_fopen"] == "1"
    # W4AHtcompatDeny: the operator's list, refused as locked
    v = get_vals(httpd, "a.example", "/deny/ini.php")
    assert v["max_input_vars"] == "1000" and v["max_input_time"] == "99"
    assert re.search(r"W4A00401: \S+/deny/\.htaccess:1: php_value "
                     r"max_input_vars skipped \(locked\)", httpd.log())


def add_pool_74(fpm):
    """A second pool of hosting A, as if it had PHP 7.4 (the FPM binary is
    8.2, the only one Debian 12 has): marked by env[W4A_POOL]."""
    src = os.path.join(fpm.pool_dir, "w4a-%s.conf" % A)
    text = open(src).read()
    text = text.replace("[%s]" % A, "[%s-74]" % A)
    text = text.replace(fpm.socket(A), os.path.join(fpm.sock_dir,
                                                    "7.4-%s.sock" % A))
    text += "env[W4A_POOL] = 74\n"
    with open(os.path.join(fpm.pool_dir, "w4a-%s-74.conf" % A), "w") as f:
        f.write(text)
    with open(src, "a") as f:
        f.write("env[W4A_POOL] = 82\n")


def test_htcompat_php_in_other_extensions_and_versioned_types(w4a):
    files = {"h1/.htaccess": "AddHandler application/x-httpd-php .html .htm\n",
             "h1/page.html": INI_PHP, "h1/page.htm": INI_PHP,
             "h2/.htaccess": "AddType application/x-httpd-php74 .html\n",
             "h2/page.html": INI_PHP,
             "h3/.htaccess": "SetHandler application/x-httpd-ea-php83\n",
             "h3/page.phtml": INI_PHP,
             "h4/.htaccess": "<FilesMatch \"\\.html$\">\n"
                             "SetHandler x-httpd-php5\n</FilesMatch>\n",
             "h4/page.html": INI_PHP,
             "h5/.htaccess": "AddType x-mapp-php5 .php4 .html\n",
             "h5/page.html": INI_PHP,
             "h6/.htaccess": "AddHandler php5-script .htm\n",
             "h6/page.htm": INI_PHP,
             "src/.htaccess": "AddType application/x-httpd-php-source .phps\n",
             "src/a.phps": "<?php echo 1;\n",
             "static.html": "<?php not run ?>\n"}
    tree, fpm, httpd = server(w4a, files_a=files, pool_extra=add_pool_74,
                              log_level="info w4a_php:debug")
    for path, pool in (("/h1/page.html", "82"), ("/h1/page.htm", "82"),
                       ("/h2/page.html", "74"), ("/h3/page.phtml", "82"),
                       ("/h4/page.html", "82"), ("/h5/page.html", "82"),
                       ("/h6/page.htm", "82"), ("/ini.php", "82")):
        v = get_vals(httpd, "a.example", path)
        assert v["user"] == A and v["pool"] == pool, (path, v)
    assert re.search(r"W4A00214: hosting w4a100010: \S+/h3/page\.phtml asks "
                     r"for PHP 8\.3, which the hosting has no pool of; PHP "
                     r"8\.2 used", httpd.log())
    assert re.search(r"W4A00214: .*/h4/page\.html asks for PHP 5,", httpd.log())
    # no handler: a .html stays static; x-httpd-php-source is not PHP
    st, h, body = httpd.get("a.example", "/static.html")
    assert (st, body) == (200, b"<?php not run ?>\n")
    st, h, body = httpd.get("a.example", "/src/a.phps")
    assert st == 200 and b"<?php echo 1;" in body
    conf = open(os.path.join(fpm.pool_dir, "w4a-%s.conf" % A)).read()
    assert ("security.limit_extensions = .php .php5 .php7 .php8 .phtml "
            ".html .htm\n") in conf


def test_htcompat_htaccess_env_php_value_removed_with_htcompat_loaded(w4a):
    """With mod_w4a_htcompat delivering its own PHP_VALUE, a customer's
    SetEnv PHP_VALUE still never reaches FPM, and the module's values do."""
    files = {"mix/.htaccess": 'SetEnv PHP_VALUE "memory_limit=77M"\n'
                              "php_value upload_max_filesize 5M\n",
             "mix/ini.php": INI_PHP}
    tree, fpm, httpd = server(w4a, files_a=files)
    v = get_vals(httpd, "a.example", "/mix/ini.php")
    assert v["memory_limit"] == "128M" and v["upload_max_filesize"] == "5M"
    assert re.search(r"W4A00215: \S+/mix/ini\.php: environment variable "
                     r"PHP_VALUE set by configuration removed", httpd.log())


def test_htcompat_without_table_skips_settings_and_serves(w4a):
    """No W4AHtcompatIniTable for the pool's version: nothing delivered,
    each line logged with the reason, pages served."""
    tree = w4a.tree
    tree.site(A, "a.example", {"ini.php": INI_PHP,
                               ".htaccess": "php_value memory_limit 300M\n"})
    rc, out, index = tree.compile_map([tree.line("a.example", A, "a.example")])
    assert rc == 0, out
    fpm = w4a.fpm()
    fpm.generate(index)
    fpm.start()
    httpd = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4APHPEngine on
W4APHPSocket {fpm.socket_pattern}
{hostings_dir_block(tree.base)}
""", with_php=True, ours=[("w4a_htcompat_module", HTCOMPAT_SO)]).start()
    v = get_vals(httpd, "a.example", "/ini.php")
    assert v["memory_limit"] == "128M"
    assert re.search(r"W4A00401: \S+/\.htaccess:1: php_value memory_limit "
                     r"skipped \(notable\)", httpd.log())


def test_htcompat_bad_ini_table_is_refused_at_config_time(w4a):
    bad = os.path.join(w4a.root, "bad.table")
    with open(bad, "w") as f:
        f.write("version 8.2\nmemory_limit 9 =1\n")
    httpd = w4a.httpd(f"W4AHtcompatIniTable 8.2 {bad}\n",
                      ours=[("w4a_htcompat_module", HTCOMPAT_SO)])
    from w4a_harness import HTTPD
    r = subprocess.run([HTTPD, "-f", httpd.conf, "-t"], capture_output=True,
                       text=True)
    assert r.returncode != 0
    assert ("W4AHtcompatIniTable: %s:2: expected 'name access =default'" % bad
            in r.stderr), r.stderr
    good = dump_table(w4a.root)
    httpd2 = w4a.httpd(f"W4AHtcompatIniTable 7.4 {good}\n",
                       ours=[("w4a_htcompat_module", HTCOMPAT_SO)])
    r = subprocess.run([HTTPD, "-f", httpd2.conf, "-t"], capture_output=True,
                       text=True)
    assert r.returncode != 0 and "is the table of PHP 8.2, not 7.4" in r.stderr


def test_htcompat_resets_survive_an_httpd_restart(w4a):
    """FPM workers outlive httpd: after a restart, a setting delivered
    before it is still reset for other directories (the state file keeps
    the set of settings ever delivered)."""
    files = {"set/.htaccess": "php_value memory_limit 222M\n",
             "set/ini.php": INI_PHP, "plain/ini.php": INI_PHP}
    tree, fpm, httpd = server(w4a, files_a=files)
    v = get_vals(httpd, "a.example", "/set/ini.php")
    assert v["memory_limit"] == "222M"
    pid = v["pid"]
    # Stopping right after a request can catch its connection in lingering
    # close: the event MPM then logs AH03092 while it shuts down (httpd's
    # own, harmless); wait until the connection is closed, and allow
    # the line.
    httpd.expect_error(r"AH03092: process_lingering_close")
    httpd.wait_connections_closed()
    httpd.stop()
    httpd.start()
    v = get_vals(httpd, "a.example", "/plain/ini.php")
    assert v["pid"] == pid                  # the same FPM worker
    assert v["memory_limit"] == "128M"
    assert status(httpd)["tracked_slots"] == 1


def test_htcompat_state_file_that_cannot_be_made_stops_httpd(w4a):
    httpd = w4a.httpd("W4AHtcompatStateFile /nonexistent/dir/state\n",
                      ours=[("w4a_htcompat_module", HTCOMPAT_SO)])
    from w4a_harness import HTTPD
    r = subprocess.run([HTTPD, "-f", httpd.conf, "-k", "start"],
                       capture_output=True, text=True)
    httpd.expect_error(r"W4A00410: W4AHtcompatStateFile /nonexistent/dir/state "
                       r"cannot be opened and mapped")
    assert r.returncode != 0 or not httpd.wait_log("resuming normal", 2)
    assert httpd.wait_log(r"W4A00410", 5), r.stderr + httpd.log()


def test_htcompat_track_all_resets_every_per_directory_setting(w4a):
    """W4AHtcompatTrack all: every per-directory setting is reset on every
    PHP request from the start (no first-delivery window); PHP keeps
    working with all of them sent, and values still apply per directory."""
    files = {"set/.htaccess": "php_value memory_limit 201M\n"
                              "php_flag short_open_tag off\n",
             "set/ini.php": INI_PHP, "plain/ini.php": INI_PHP}
    tree, fpm, httpd = server(w4a, files_a=files,
                              conf="W4AHtcompatTrack all\n")
    before = status(httpd)["tracked_slots"]
    assert before > 100, before
    base = get_vals(httpd, "a.example", "/plain/ini.php")
    assert base["memory_limit"] == "128M" and base["short_open_tag"] == ""
    for _ in range(2):
        v = get_vals(httpd, "a.example", "/set/ini.php")
        assert v["memory_limit"] == "201M" and v["short_open_tag"] == "0"
        assert get_vals(httpd, "a.example", "/plain/ini.php") == \
            dict(base, pid=v["pid"])
    assert status(httpd)["tracked_slots"] == before
    # no warning from PHP about any value sent (the hosting's PHP error log)
    phplog = os.path.join(tree.home(A), "log/php/error.log")
    text = open(phplog).read() if os.path.exists(phplog) else ""
    assert "PHP " not in text, text[-2000:]


def test_htcompat_skipped_line_logged_once_per_interval_counted_always(w4a):
    """A busy site's skipped line is logged once per W4AHtcompatLogInterval
    and httpd process, not on every request; the counters count them all."""
    files = {"x/.htaccess": "php_value allow_url_fopen 0\n",
             "x/ini.php": INI_PHP,
             "y/.htaccess": "php_value allow_url_fopen 0\n",
             "y/ini.php": INI_PHP}
    tree, fpm, httpd = server(w4a, files_a=files)
    for _ in range(12):
        get_vals(httpd, "a.example", "/x/ini.php")
    lines = re.findall(r"W4A00401: \S+/x/\.htaccess:1: php_value "
                       r"allow_url_fopen skipped", httpd.log())
    assert 1 <= len(lines) <= 4, len(lines)     # at most one per process (ServerLimit 4)
    assert status(httpd)["refused"]["system"] == 12
    # another file's line has its own entry
    get_vals(httpd, "a.example", "/y/ini.php")
    assert re.search(r"W4A00401: \S+/y/\.htaccess:1:", httpd.log())


def test_htcompat_log_interval_zero_logs_every_request(w4a):
    files = {"x/.htaccess": "php_value allow_url_fopen 0\n",
             "x/ini.php": INI_PHP}
    tree, fpm, httpd = server(w4a, files_a=files,
                              conf="W4AHtcompatLogInterval 0\n")
    for _ in range(5):
        get_vals(httpd, "a.example", "/x/ini.php")
    assert len(re.findall(r"W4A00401: \S+/x/\.htaccess:1:", httpd.log())) == 5


def test_htcompat_a_file_of_refused_lines_logs_a_bounded_number_per_request(w4a):
    """A hostile .htaccess of many refused lines logs at most 16 of them per
    request (and one W4A00441 saying the rest are counted), not one line of
    the node's error log per line of the file and request; the counters
    count them all and the other hostings are served."""
    ht = "".join("php_value w4a.no_such_%d 1\n" % i for i in range(40))
    files = {"x/.htaccess": ht, "x/ini.php": INI_PHP}
    tree, fpm, httpd = server(w4a, files_a=files,
                              conf="W4AHtcompatLogInterval 0\n")
    for n in range(1, 4):
        get_vals(httpd, "a.example", "/x/ini.php")
        log = httpd.log()
        assert len(re.findall(r"\[w4a_htcompat:warn\].*W4A00401: \S+/x/"
                              r"\.htaccess:\d+: php_value w4a\.no_such_\d+ "
                              r"skipped \(unknown\)", log)) == 16 * n
        caps = re.findall(r".*W4A00441.*", log)
        assert len(caps) == n, caps
        assert re.search(r"\[w4a_htcompat:warn\].*W4A00441: \S+/x/\.htaccess: "
                         r"more skipped lines than the 16 one request logs: "
                         r"the others are counted", caps[0]), caps[0]
    assert status(httpd)["refused"]["unknown"] == 3 * 40
    vb = get_vals(httpd, "b.example", "/ini.php")
    assert vb["user"] == B


def htc_bit(name):
    """htcompat_table.c's htc_bit(): FNV-1a of the name, modulo 4096."""
    h = 2166136261
    for c in name.encode():
        h = ((h ^ c) * 16777619) & 0xffffffff
    return h % 4096


def php_values_sent(httpd):
    """The PHP_VALUE texts mod_proxy_fcgi sent, in order (its trace8)."""
    return [v.replace("\\n", "\n").strip() for v in
            re.findall(r"AH01062: sending env var 'PHP_VALUE' value '([^']*)'",
                       httpd.log())]


def test_a_php_value_is_never_sent_to_b_pool_but_always_reset_in_a(w4a):
    """Issue 17: the set to reset is per pool. A's php_value reaches A's
    pool and is reset there on every later request; B's requests carry no
    PHP_VALUE at all."""
    tree, fpm, httpd = server(
        w4a, files_a={"big/ini.php": INI_PHP,
                      "big/.htaccess": "php_value memory_limit 256M\n"},
        log_level="info proxy_fcgi:trace8")
    assert get_vals(httpd, "a.example", "/big/ini.php")["memory_limit"] == "256M"
    assert get_vals(httpd, "b.example", "/ini.php")["memory_limit"] == "128M"
    assert get_vals(httpd, "a.example", "/ini.php")["memory_limit"] == "128M"
    wait_until(lambda: len(php_values_sent(httpd)) >= 2, "two PHP_VALUE traced", 5)
    sent = php_values_sent(httpd)
    assert sent == ['memory_limit="256M"', 'memory_limit="128M"'], sent
    j = status(httpd)
    assert j["pool_sets"] == 1 and j["pool_sets_full"] == 0, j


def test_format_1_state_file_is_upgraded_and_its_set_reset_for_every_pool(w4a):
    """A state file of the node-wide format 1 (before issue 17): its set
    was sent to pools nobody knows, so every pool now resets it; its
    counters stay."""
    state = os.path.join(w4a.root, "old.state")
    bit = htc_bit("memory_limit")
    words = [0] * 128
    words[bit // 32] |= 1 << (bit % 32)
    counters = [0] * 32
    with open(state, "wb") as f:
        f.write(struct.pack("<2I128I32I", 0x57344843, 1, *(words + counters)))
    os.chmod(state, 0o600)
    tree, fpm, httpd = server(w4a, conf="W4AHtcompatStateFile %s\n" % state,
                              log_level="info proxy_fcgi:trace8")
    assert httpd.wait_log(r"W4A00440: W4AHtcompatStateFile %s: format 1 "
                          r"upgraded" % re.escape(state))
    assert get_vals(httpd, "b.example", "/ini.php")["memory_limit"] == "128M"
    assert get_vals(httpd, "a.example", "/ini.php")["memory_limit"] == "128M"
    wait_until(lambda: len(php_values_sent(httpd)) >= 2, "two PHP_VALUE traced", 5)
    assert php_values_sent(httpd) == ['memory_limit="128M"'] * 2, \
        php_values_sent(httpd)
    assert status(httpd)["tracked_slots"] == 1
    assert os.path.getsize(state) > 656
