"""A hostile tenant's .htaccess against the node (issue 12, vectors 2, 3
and 6): the overrides we ship, the handlers a hosting may name, the node's
status pages, and where access-log lines go.

A is the attacking hosting, B the victim. Each test also shows that the
other hostings keep being served.
"""
import os
import re
import subprocess
import time

from w4a_harness import (LOGSPLIT, MODDIR, OVERRIDES_CONF, VHOSTMAP,
                         STATUS_BLOCK, hostings_dir_block)

A, B = "w4a100010", "w4a100011"


def map_server(w4a, a_files=None, conf="", modules=(), overrides=None,
               a_flags="-", b_flags="-", log_level="info"):
    """A and B, each with a domain, resolved through a compiled map."""
    tree = w4a.tree
    tree.site(A, "a.example", dict({"index.html": "site a\n"},
                                   **(a_files or {})))
    tree.site(B, "b.example", {"index.html": "site b\n",
                               "secret.txt": "B's secret\n"})
    rc, out, index = tree.compile_map([
        tree.line("a.example", A, "a.example", flags=a_flags),
        tree.line("b.example", B, "b.example", flags=b_flags),
    ])
    assert rc == 0, out
    httpd = w4a.httpd(f"""
DirectoryIndex index.html
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
{hostings_dir_block(tree.base, overrides)}{STATUS_BLOCK}
{conf}
""", modules=modules, log_level=log_level)
    return tree, index, httpd


def assert_b_served(httpd):
    assert httpd.get("b.example", "/")[:3:2] == (200, b"site b\n")


# -- vector 2: the overrides we ship ----------------------------------

def test_shipped_overrides_keep_mod_php_era_htaccess_working(w4a):
    """What a WordPress/Joomla/h5bp-era .htaccess says keeps working."""
    ht = """Options -Indexes +FollowSymLinks -MultiViews
ServerSignature Off
FileETag None
AddDefaultCharset UTF-8
<IfModule mod_rewrite.c>
RewriteEngine On
RewriteBase /
RewriteRule ^index\\.html$ - [L]
RewriteCond %{REQUEST_FILENAME} !-f
RewriteRule . /index.html [L]
</IfModule>
<IfModule mod_headers.c>
Header set X-Frame-Options "SAMEORIGIN"
</IfModule>
<IfModule mod_expires.c>
ExpiresActive On
ExpiresByType text/html "access plus 1 minute"
</IfModule>
<Files "wp-config.php">
Order allow,deny
Deny from all
</Files>
<FilesMatch "\\.(bak|sql)$">
Require all denied
</FilesMatch>
SetEnvIf User-Agent "BadBot" bad_bot
ErrorDocument 404 /index.html
AddType text/plain .log
DirectoryIndex index.html
"""
    tree, _, httpd = map_server(w4a, {".htaccess": ht, "wp-config.php": "x",
                                      "dump.sql": "x"},
                                modules=["expires"])
    httpd.expect_error(r"AH0(1797|1630): client denied by server configuration")
    httpd.start()
    st, h, b = httpd.get("a.example", "/some/pretty/permalink")
    assert (st, b) == (200, b"site a\n")
    assert h.get("x-frame-options") == "SAMEORIGIN"
    assert "cache-control" in h or "expires" in h
    assert httpd.get("a.example", "/wp-config.php")[0] == 403
    assert httpd.get("a.example", "/dump.sql")[0] == 403
    assert_b_served(httpd)


def test_shipped_overrides_refuse_what_runs_code_or_reaches_a_backend(w4a):
    """Each of these lines in A's .htaccess is a 500 with httpd's own
    "not allowed here", and B is served meanwhile."""
    lines = [
        'ProxyFCGISetEnvIf "true" PHP_ADMIN_VALUE "open_basedir=/"',
        'ProxyFCGIBackendType GENERIC',
        "EnableMMAP On",
        "EnableSendfile On",
        "PassEnv PATH",
        "Options +Includes",
        "Options All",
        "Action x-foo /cgi-bin/foo",
    ]
    tree, _, httpd = map_server(w4a, modules=["proxy", "proxy_fcgi",
                                              "actions", "include"])
    httpd.expect_error(r"not allowed here")
    httpd.start()
    for line in lines:
        tree.write(A, "a.example", ".htaccess", line + "\n")
        st, _, _ = httpd.get("a.example", "/")
        assert st == 500, line
        name = line.split()[0] if not line.startswith("Options") \
            else "Option " + line.split()[1].lstrip("+")
        assert httpd.wait_log(re.escape(name) + r" not allowed here"), \
            "no 'not allowed here' for %r:\n%s" % (line, httpd.log())
        assert_b_served(httpd)


def test_shipped_overrides_fit_httpds_64_name_limit():
    """httpd reads 64 names of an AllowOverrideList at most and drops the
    rest without a word: the shipped list must stay within it."""
    with open(OVERRIDES_CONF) as f:
        text = f.read().replace("\\\n", " ")
    lists = [ln.split()[1:] for ln in text.splitlines()
             if ln.strip().startswith("AllowOverrideList")]
    assert len(lists) == 1, "a second AllowOverrideList replaces the first"
    assert 0 < len(lists[0]) <= 64, len(lists[0])
    overrides = [ln for ln in text.splitlines()
                 if ln.strip().startswith("AllowOverride ")]
    assert overrides and not any(re.search(r"\b(All|FileInfo)\b", ln)
                                 for ln in overrides), overrides


def test_startup_names_every_dangerous_override_of_the_hostings_tree(w4a):
    """With mod_lua loaded, the override classes hand LuaHookFixups to every
    customer: mod_w4a_vhost says so at start-up, naming the directive."""
    _, _, httpd = map_server(w4a, modules=["lua"])
    httpd.start()
    assert httpd.wait_log(r"W4A00153: <Directory [^>]*> reaches the "
                          r"hostings' tree and lets a customer's \.htaccess "
                          r"use LuaHookFixups \(mod_lua\.c"), httpd.log()
    assert "W4A00154" not in httpd.log()
    assert_b_served(httpd)


def test_startup_says_allowoverride_all_hands_out_proxy_fcgi(w4a):
    _, _, httpd = map_server(w4a, overrides="All",
                             modules=["proxy", "proxy_fcgi"])
    httpd.start()
    assert httpd.wait_log(r"W4A00154: <Directory [^>]*> reaches the "
                          r"hostings' tree with AllowOverride All"), httpd.log()
    assert httpd.wait_log(r"W4A00153: .*use ProxyFCGISetEnvIf "
                          r"\(mod_proxy_fcgi\.c"), httpd.log()
    assert httpd.wait_log(r"W4A00153: .*use EnableMMAP"), httpd.log()


def test_startup_is_quiet_for_the_shipped_overrides(w4a):
    _, _, httpd = map_server(w4a, modules=["proxy", "proxy_fcgi", "status",
                                           "info", "include", "actions"])
    httpd.start()
    assert_b_served(httpd)
    assert not re.search(r"W4A0015[34]", httpd.log()), httpd.log()


# -- handlers a hosting may name --------------------------------------

def test_lua_handler_from_htaccess_is_refused_and_never_runs(w4a):
    marker = os.path.join(w4a.root, "lua-ran")
    lua = f"""function handle(r)
    local f = io.open("{marker}", "w")
    f:write("ran as www-data")
    f:close()
    r:puts("lua")
    return apache2.OK
end
"""
    _, _, httpd = map_server(w4a, {".htaccess": "AddHandler lua-script .lua\n",
                                   "x.lua": lua}, modules=["lua"])
    httpd.expect_error(r"W4A00151")
    httpd.start()
    st, _, body = httpd.get("a.example", "/x.lua")
    assert st == 403, body
    assert httpd.wait_log(r"W4A00151: hosting w4a100010: handler 'lua-script' "
                          r"for /x\.lua was not set by the operator"), httpd.log()
    assert not os.path.exists(marker)
    assert_b_served(httpd)


def test_node_handlers_named_by_a_customer_are_refused(w4a):
    """server-status, server-info, balancer-manager, a proxy: handler to
    another hosting's socket (with mod_w4a_php off), by SetHandler,
    AddHandler, RewriteRule [H=], or a ForceType/AddType content type that
    httpd makes the handler: 403 and W4A00151 each time."""
    cases = [
        ("SetHandler server-status\n", "/"),
        ("SetHandler server-info\n", "/"),
        ("SetHandler balancer-manager\n", "/"),
        ("AddHandler server-status .txt\n", "/x.txt"),
        ("RewriteEngine on\nRewriteRule ^x\\.txt$ - [H=server-info]\n",
         "/x.txt"),
        ('SetHandler "proxy:unix:/run/php/w4a/8.2/w4a100011.sock'
         '|fcgi://localhost"\n', "/x.txt"),
        ("RewriteEngine on\nRewriteRule ^x\\.txt$ "
         "http://127.0.0.1:1/ [P]\n", "/x.txt"),
        # a content type with no handler set becomes the handler (httpd
        # does that after the fixups): still one of ours to refuse
        ('ForceType "proxy:unix:/run/php/w4a/8.2/w4a100011.sock'
         '|fcgi://localhost"\n', "/x.txt"),
        ('AddType "proxy:unix:/run/php/w4a/8.2/w4a100011.sock'
         '|fcgi://localhost" .txt\n', "/x.txt"),
        ("ForceType server-status\n", "/x.txt"),
    ]
    tree, _, httpd = map_server(
        w4a, {"x.txt": "x\n"},
        modules=["status", "info", "proxy", "proxy_fcgi", "proxy_http",
                 "proxy_balancer", "slotmem_shm", "lbmethod_byrequests"],
        conf="""<Location /server-status>
    SetHandler server-status
    Require local
</Location>
""")
    httpd.expect_error(r"W4A00151")
    httpd.start()
    for ht, path in cases:
        before = len(re.findall(r"W4A00151", httpd.log()))
        tree.write(A, "a.example", ".htaccess", ht)
        st, _, body = httpd.get("a.example", path)
        assert st == 403, (ht, st, body[:300])
        assert b"Scoreboard" not in body and b"Server Version" not in body
        # this case's own refusal line (the error log is written before
        # the response is sent)
        assert len(re.findall(r"W4A00151", httpd.log())) > before, ht
        assert_b_served(httpd)
    # The operator's own <Location> keeps answering.
    st, _, body = httpd.get("localhost", "/server-status?auto")
    assert st == 200 and b"Scoreboard" in body


def test_customers_own_handlers_keep_working(w4a):
    """Handlers that serve the hosting's own files stay allowed from
    .htaccess: content types, server-parsed (SSI without exec),
    default-handler, type-map, and what W4AVhostHandler adds."""
    ht = """AddHandler text/html .page
AddType text/html .shtml
AddOutputFilter INCLUDES .shtml
Options +IncludesNOEXEC
<Files "raw.txt">
SetHandler default-handler
</Files>
<Files "extra.txt">
SetHandler my-operator-handler
</Files>
"""
    _, _, httpd = map_server(w4a, {".htaccess": ht, "p.page": "<p>page</p>",
                                   "s.shtml": "<!--#echo var=\"DOCUMENT_NAME\" -->",
                                   "raw.txt": "raw\n", "extra.txt": "extra\n"},
                             modules=["include"],
                             conf="W4AVhostHandler my-operator-handler\n")
    httpd.start()
    assert httpd.get("a.example", "/p.page")[::2] == (200, b"<p>page</p>")
    assert httpd.get("a.example", "/s.shtml")[::2] == (200, b"s.shtml")
    assert httpd.get("a.example", "/raw.txt")[::2] == (200, b"raw\n")
    # no module serves my-operator-handler: core's answer, not our 403
    assert httpd.get("a.example", "/extra.txt")[0] != 403
    assert "W4A00151" not in httpd.log()


# -- vector 3: node status pages --------------------------------------

def test_status_pages_set_from_htaccess_are_refused(w4a):
    cases = [
        ("SetHandler w4a-vhost-status\n", "/"),
        ("AddHandler w4a-vhost-status .txt\n", "/x.txt"),
        ("RewriteEngine on\nRewriteRule ^x\\.txt$ - [H=w4a-vhost-status]\n",
         "/x.txt"),
        ("ErrorDocument 404 /w4a-vhost-status\n", "/missing"),
    ]
    tree, _, httpd = map_server(w4a, {"x.txt": "x\n"})
    httpd.expect_error(r"W4A00150")
    httpd.start()
    for ht, path in cases[:3]:
        tree.write(A, "a.example", ".htaccess", ht)
        st, _, body = httpd.get("a.example", path)
        assert st == 403, (ht, body)
        assert b"counters" not in body
        assert_b_served(httpd)
    assert httpd.wait_log(r"W4A00150: hosting w4a100010: handler "
                          r"w4a-vhost-status \(node status\) was set by "
                          r"per-directory configuration"), httpd.log()
    # An ErrorDocument pointing at the operator's <Location> is that
    # Location's: it answers only where its Require lets the client in.
    tree.write(A, "a.example", ".htaccess", cases[3][0])
    st, _, _ = httpd.get("a.example", "/missing")
    assert st in (404, 200)
    # The operator's Location answers, on the node's name and a hosting's.
    for host in ("localhost", "b.example"):
        st, h, body = httpd.get(host, "/w4a-vhost-status")
        assert st == 200 and b'"counters"' in body, (host, body)
        assert h["cache-control"] == "no-store"
    assert httpd.get("localhost", "/w4a-vhost-status", method="POST")[0] == 405


# -- vector 6: access-log lines ---------------------------------------

def lookup_log_dir(index, host):
    r = subprocess.run([VHOSTMAP, "lookup", index, host],
                       capture_output=True, text=True, check=True)
    return dict(ln.split("=", 1) for ln in r.stdout.split())["log_dir"]


def wait_for(pred, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def test_forged_log_routing_never_reaches_another_hostings_log(w4a):
    """A's .htaccess sets the note w4a-log (mod_headers' Header note) and
    W4A_LOG to B's uid:gid:logdir: A's lines still go to A's own log (A has
    the log flag) or nowhere, never to B's."""
    tree = w4a.tree
    conf_tail = (f'CustomLog "|{LOGSPLIT} --base {tree.base}" '
                 '"%{w4a-log}n %h %t \\"%r\\" %>s" env=W4A_LOG\n')
    _, index, httpd = map_server(w4a, conf=conf_tail, a_flags="log",
                                 b_flags="log")
    b_dir = lookup_log_dir(index, "b.example")
    a_dir = lookup_log_dir(index, "a.example")
    forged = "%d:%d:%s" % (100011, 100011, b_dir)
    tree.write(A, "a.example", ".htaccess", f"""SetEnv W4A_LOG 1
Header always set X-L "{forged}"
Header always note X-L w4a-log
RewriteEngine on
RewriteRule ^forged-env$ /index.html [E=W4A_LOG:1]
""")
    tree.site(A, "nolog.example", {"index.html": "no log\n",
                                   ".htaccess": "SetEnv W4A_LOG 1\n"
                                   f'Header always set X-L "{forged}"\n'
                                   "Header always note X-L w4a-log\n"})
    rc, out, _ = tree.compile_map([
        tree.line("a.example", A, "a.example", flags="log"),
        tree.line("nolog.example", A, "nolog.example"),
        tree.line("b.example", B, "b.example", flags="log"),
    ], index=index)
    assert rc == 0, out
    httpd.start()
    for path in ("/", "/index.html?forged-a", "/forged-env"):
        assert httpd.get("a.example", path)[0] == 200
    assert httpd.get("nolog.example", "/?forged-nolog")[0] == 200
    assert httpd.get("b.example", "/?b-itself")[0] == 200
    b_log = os.path.join(b_dir, "access.log")
    a_log = os.path.join(a_dir, "access.log")
    wait_for(lambda: "b-itself" in read(b_log), 10, "B's own line in "
             + b_log)
    wait_for(lambda: "forged-a" in read(a_log), 10, "A's line in " + a_log)
    assert "forged" not in read(b_log), read(b_log)
    assert "forged-nolog" not in read(a_log)
    assert_b_served(httpd)


# -- a hosting's .htaccess files --------------------------------------

def test_fifo_htaccess_never_holds_a_thread(w4a):
    """mkfifo .htaccess in A's tree: core's blocking open() would hold every
    thread that serves the directory until a writer comes. Answered 403 at
    once, many times over, while B is served."""
    import concurrent.futures
    tree, _, httpd = map_server(w4a, {"sub/index.html": "sub\n"})
    fifo = os.path.join(tree.docroot(A, "a.example"), "sub", ".htaccess")
    os.mkfifo(fifo)
    os.chown(fifo, 100010, 100010)
    httpd.expect_error(r"W4A00155|AH00529")
    httpd.start()

    def one(_):
        return httpd.get("a.example", "/sub/")[0]

    with concurrent.futures.ThreadPoolExecutor(80) as ex:
        statuses = list(ex.map(one, range(80)))
    assert set(statuses) == {403}, statuses
    assert httpd.wait_log(r"W4A00155: hosting w4a100010: \S+/sub/\.htaccess "
                          r"is a FIFO; not read, answered 403"), httpd.log()
    start = time.time()
    assert_b_served(httpd)
    assert time.time() - start < 2


def test_htaccess_of_another_owner_is_not_read(w4a):
    """A's .htaccess a symlink to B's (read as www-data, it would apply B's
    file, or test passwords against B's .htpasswd): 403, W4A00155."""
    tree, _, httpd = map_server(w4a, {
        "sub/index.html": "sub\n",
        "own/.htaccess": "Header set X-Own 1\n", "own/index.html": "own\n",
        "big/.htaccess": "# padding\n" * (1024 * 1024 // 10 + 1),
        "big/index.html": "big\n"})
    b_ht = tree.write(B, "b.example", ".htaccess", "Header set X-B 1\n")
    os.symlink(b_ht, os.path.join(tree.docroot(A, "a.example"), "sub",
                                  ".htaccess"))
    os.lchown(os.path.join(tree.docroot(A, "a.example"), "sub", ".htaccess"),
              100010, 100010)
    big = os.path.join(tree.docroot(A, "a.example"), "big/.htaccess")
    assert os.path.getsize(big) > 1024 * 1024
    httpd.expect_error(r"W4A00155|AH00529")
    httpd.start()
    st, h, _ = httpd.get("a.example", "/sub/")
    assert st == 403 and "x-b" not in h
    assert httpd.wait_log(r"W4A00155: .*/sub/\.htaccess belongs to uid 100011"
                          r", neither the hosting's \(100010\) nor root"), \
        httpd.log()
    assert httpd.get("a.example", "/big/")[0] == 403
    assert httpd.wait_log(r"W4A00155: .*/big/\.htaccess has \d+ bytes")
    # A's own .htaccess files are read as before.
    assert httpd.get("a.example", "/own/")[1].get("x-own") == "1"
    assert_b_served(httpd)
    assert httpd.get("b.example", "/")[1].get("x-b") == "1"


# -- request headers that stand for our variables ---------------------

def test_headers_named_like_our_variables_are_removed(w4a):
    """A client's W4A-Hosting / w4a.log / W4A_DOMAIN headers never reach a
    customer's SetEnvIfNoCase (nor PHP as HTTP_W4A_*): removed, counted."""
    import json
    ht = """SetEnvIfNoCase ^w4a.hosting$ "(.+)" SEEN_HOSTING=$1
SetEnvIfNoCase ^w4a.log$ "(.+)" SEEN_LOG=$1
SetEnvIfNoCase ^w4a.domain$ "(.+)" SEEN_DOMAIN=$1
SetEnvIfNoCase ^x.other$ "(.+)" SEEN_OTHER=$1
Header always set X-Seen "%{SEEN_HOSTING}e/%{SEEN_LOG}e/%{SEEN_DOMAIN}e/%{SEEN_OTHER}e"
Header always set X-Hosting "%{W4A_HOSTING}e"
"""
    _, _, httpd = map_server(w4a, {".htaccess": ht}, log_level="debug")
    httpd.start()
    st, h, _ = httpd.get("a.example", "/", headers={
        "W4A-Hosting": "w4a100011", "w4a.log": "1",
        "W4A_DOMAIN": "b.example", "X-Other": "kept"})
    assert st == 200
    assert h["x-seen"] == "(null)/(null)/(null)/kept", h["x-seen"]
    assert h["x-hosting"] == "w4a100010"
    assert httpd.wait_log(r"W4A00156: request header 'W4A-Hosting' stands "
                          r"for our variable W4A_\*: removed"), httpd.log()
    s = json.loads(httpd.get("localhost", "/w4a-vhost-status")[2])
    assert s["counters"]["headers_removed"] == 3
    assert_b_served(httpd)


def test_operator_sethandler_none_or_a_file_handler_keeps_the_htaccess(w4a):
    """Only a node page (the operator's handler serves no hosting files)
    skips the directory walk: under the operator's SetHandler None or
    default-handler, the hosting's .htaccess still applies (here its
    Require all denied), and the operator's status page on the hosting's
    name is still the operator's to grant."""
    tree, _, httpd = map_server(
        w4a, {"none/x.txt": "x\n", "none/.htaccess": "Require all denied\n",
              "dflt/x.txt": "x\n", "dflt/.htaccess": "Require all denied\n",
              ".htaccess": '<If "true">\n    Require all denied\n</If>\n'},
        conf="""<Location /none>
    SetHandler None
</Location>
<Location /dflt>
    SetHandler default-handler
</Location>
<Location /w4a-vhost-status>
    SetHandler w4a-vhost-status
    Require local
</Location>
""")
    httpd.expect_error(r"AH01630")
    httpd.start()
    assert httpd.get("a.example", "/none/x.txt")[0] == 403
    assert httpd.get("a.example", "/dflt/x.txt")[0] == 403
    assert httpd.get("a.example", "/index.html")[0] == 403
    st, _, body = httpd.get("a.example", "/w4a-vhost-status")
    assert st == 200 and b'"lookups"' in body, (st, body[:300])
    assert_b_served(httpd)
