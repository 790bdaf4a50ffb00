"""mod_w4a_media: the media host (static only, no cookies, CORS, caching)
and the rewriting of static asset URLs to it in HTML pages."""
import gzip
import json
import os
import re
import subprocess

import pytest

from w4a_harness import HTTPD, MEDIA_SO, REPO, hostings_dir_block

A, B = "w4a100010", "w4a100011"
MEDIA = [("w4a_media_module", MEDIA_SO)]
SUEXEC_CONF = "/etc/apache2/suexec/www-data"

PNG = "PNG fake image bytes\n"
# A PHP script that leaves a mark when it runs: proof that PHP ran or not.
MARK_PHP = "<?php file_put_contents(__DIR__ . '/ran.txt', basename(__FILE__) " \
           ". \"\\n\", FILE_APPEND); echo 'php ran';\n"
MARK_CGI = "#!/bin/sh\ntouch \"$(dirname \"$SCRIPT_FILENAME\")/cgi-ran.txt\"\n" \
           "echo 'Content-Type: text/plain'\necho\necho cgi ran\n"


def media_server(w4a, body_extra="", files_a=None, with_php=False,
                 modules=(), map_flags="-", head="", extra_lines=(),
                 overrides=None, log_level="info"):
    tree = w4a.tree
    tree.site(A, "a.example", dict({"img/x.png": PNG, "css/site.css": "body{}\n",
                                    "fonts/f.woff2": "wOF2 font\n",
                                    "index.html": "<p>home</p>\n",
                                    "m.php": MARK_PHP},
                                   **(files_a or {})))
    tree.site(B, "b.example", {"img/b.png": PNG})
    rc, out, index = tree.compile_map([
        tree.line("a.example,www.a.example", A, "a.example", flags=map_flags),
        tree.line("b.example", B, "b.example"), *extra_lines])
    assert rc == 0, out
    php = ""
    fpm = None
    if with_php:
        fpm = w4a.fpm()
        rc, out = fpm.generate(index)
        assert rc in (0, 1), out
        fpm.start()
        php = "W4APHPEngine on\nW4APHPSocket %s\n" % fpm.socket_pattern
    httpd = w4a.httpd(f"""{head}
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
W4AVhostMediaPrefix media.
{php}
{hostings_dir_block(tree.base, overrides)}
<Location /w4a-media-status>
    SetHandler w4a-media-status
    Require local
</Location>
{body_extra}
""", with_php=with_php, ours=MEDIA, modules=modules,
                      log_level=log_level).start()
    return tree, fpm, httpd


def docroot_a(tree):
    return tree.docroot(A, "a.example")


def ran(tree, name="ran.txt", sub=""):
    return os.path.exists(os.path.join(docroot_a(tree), sub, name))


# ---------------------------------------------------------------------------
# the media host


def test_media_host_serves_static_file_with_cache_and_validators(w4a):
    tree, fpm, httpd = media_server(w4a)
    st, h, body = httpd.get("media.a.example", "/img/x.png")
    assert (st, body) == (200, PNG.encode("latin-1"))
    assert h["cache-control"] == "public, max-age=2592000"
    assert h["content-type"] == "image/png"
    assert h.get("etag") and h.get("last-modified")
    assert "Origin" in h["vary"]
    assert h["x-content-type-options"] == "nosniff"
    # the same through a cache-busting query
    st2, h2, body2 = httpd.get("media.a.example", "/img/x.png?t=8f3a91")
    assert (st2, body2, h2["etag"]) == (200, body, h["etag"])
    # validators work: 304 with the same caching headers
    st3, h3, body3 = httpd.get("media.a.example", "/img/x.png",
                               headers={"If-None-Match": h["etag"]})
    assert (st3, body3) == (304, b"")
    assert h3["cache-control"] == "public, max-age=2592000"
    # the main site itself has no such headers
    st4, h4, body4 = httpd.get("a.example", "/img/x.png")
    assert st4 == 200 and "cache-control" not in h4


def test_media_cache_control_is_configurable(w4a):
    tree, fpm, httpd = media_server(
        w4a, 'W4AMediaCacheControl "public, max-age=31536000, immutable"\n')
    st, h, body = httpd.get("media.a.example", "/css/site.css")
    assert st == 200
    assert h["cache-control"] == "public, max-age=31536000, immutable"


def test_media_cors_for_the_hostings_own_origins_only(w4a):
    tree, fpm, httpd = media_server(w4a, "W4AMediaCORSOrigin https://www.%d "
                                         "http://localhost:3000\n")
    for origin in ("https://a.example", "http://a.example",
                   "https://www.a.example", "http://localhost:3000"):
        st, h, body = httpd.get("media.a.example", "/css/site.css",
                                headers={"Origin": origin})
        assert st == 200
        assert h.get("access-control-allow-origin") == origin, origin
        assert "Origin" in h["vary"]
    for origin in ("https://b.example", "https://evil.example",
                   "https://a.example.evil.example", "null",
                   "https://media.a.example:1"):
        st, h, body = httpd.get("media.a.example", "/css/site.css",
                                headers={"Origin": origin})
        assert st == 200
        assert "access-control-allow-origin" not in h, origin
        assert "Origin" in h["vary"]
    # b's media host does not allow a's origin
    st, h, body = httpd.get("media.b.example", "/img/b.png",
                            headers={"Origin": "https://a.example"})
    assert st == 200 and "access-control-allow-origin" not in h


def test_media_fonts_allow_any_origin(w4a):
    tree, fpm, httpd = media_server(w4a)
    st, h, body = httpd.get("media.a.example", "/fonts/f.woff2",
                            headers={"Origin": "https://evil.example"})
    assert st == 200 and h["access-control-allow-origin"] == "*"
    st, h, body = httpd.get("media.a.example", "/css/site.css",
                            headers={"Origin": "https://evil.example"})
    assert st == 200 and "access-control-allow-origin" not in h


def test_media_fonts_any_origin_can_be_turned_off(w4a):
    tree, fpm, httpd = media_server(w4a, "W4AMediaCORSFontsAny off\n")
    st, h, body = httpd.get("media.a.example", "/fonts/f.woff2",
                            headers={"Origin": "https://evil.example"})
    assert st == 200 and "access-control-allow-origin" not in h
    st, h, body = httpd.get("media.a.example", "/fonts/f.woff2",
                            headers={"Origin": "https://a.example"})
    assert h["access-control-allow-origin"] == "https://a.example"


def test_media_set_cookie_never_leaves_even_when_htaccess_sets_it(w4a):
    files = {".htaccess": 'Header always set Set-Cookie "always=1"\n'
                          'Header set Set-Cookie "onsuccess=1"\n'
                          'Header always set Access-Control-Allow-Origin "*"\n'}
    tree, fpm, httpd = media_server(w4a, files_a=files)
    for path, want in (("/img/x.png", 200), ("/missing.png", 404),
                       ("/m.php", 403)):
        st, h, body = httpd.get("media.a.example", path,
                                headers={"Origin": "https://evil.example"})
        assert st == want, path
        assert "set-cookie" not in h, (path, h)
        assert "access-control-allow-origin" not in h, (path, h)
    # the same .htaccess on the main site does set it: the test can fail
    st, h, body = httpd.get("a.example", "/img/x.png")
    assert st == 200 and "=1" in h.get("set-cookie", "")


def test_media_refuses_php_and_the_pool_gets_no_request(w4a):
    tree, fpm, httpd = media_server(w4a, with_php=True)
    st, h, body = httpd.get("media.a.example", "/m.php")
    assert st == 403 and b"php ran" not in body
    assert httpd.wait_log(r"W4A00501: media host media\.a\.example: .*/m\.php "
                          r"is not an allow-listed static file; answered 403")
    st, h, body = httpd.get("media.a.example", "/m.php/x.png")
    assert st in (403, 404) and b"php ran" not in body
    assert not ran(tree)
    # the same script on the main site runs: PHP works, the mark appears
    st, h, body = httpd.get("a.example", "/m.php")
    assert (st, body) == (200, b"php ran")
    assert ran(tree)
    # and the media host keeps serving
    st, h, body = httpd.get("media.a.example", "/img/x.png")
    assert st == 200


@pytest.mark.parametrize("htaccess", [
    'SetHandler "proxy:unix:{sock}|fcgi://localhost"',
    '<Files "evil.jpg">\nSetHandler "proxy:unix:{sock}|fcgi://localhost"\n</Files>',
    'AddHandler "proxy:unix:{sock}|fcgi://localhost" .jpg',
    'RewriteEngine On\nRewriteRule ^evil\\.jpg$ - [H=proxy:unix:{sock}|fcgi://localhost]',
    'RewriteEngine On\nRewriteRule ^evil\\.jpg$ http://127.0.0.1:{port}/m.php [P]',
], ids=["sethandler", "files-sethandler", "addhandler", "rewrite-H", "rewrite-P"])
def test_media_htaccess_handlers_never_run_php(w4a, htaccess):
    tree, fpm, httpd = media_server(
        w4a, with_php=True,
        head="LoadModule proxy_http_module /usr/lib/apache2/modules/mod_proxy_http.so\n")
    text = htaccess.format(sock=fpm.socket(A), port=httpd.port)
    tree.write(A, "a.example", "evil/.htaccess", text + "\n")
    tree.write(A, "a.example", "evil/evil.jpg", MARK_PHP)
    tree.write(A, "a.example", "evil/ok.png", PNG)
    httpd.expect_error(r"W4A00502: media host media\.a\.example: .*asks for "
                       r"(proxying, )?handler .*; the media host serves static "
                       r"files only; refused")
    st, h, body = httpd.get("media.a.example", "/evil/evil.jpg")
    assert st == 403, body
    assert b"php ran" not in body
    assert httpd.wait_log(r"W4A00502: ")
    assert not ran(tree, sub="evil") and not ran(tree)
    st, h, body = httpd.get("media.a.example", "/img/x.png")
    assert (st, body) == (200, PNG.encode("latin-1"))


def test_media_rewrite_to_php_is_refused_after_the_internal_redirect(w4a):
    # (a path-info target: mod_w4a_php refuses "redirect:/m.php", an
    # existing file rewritten to a .php path, on the main site too)
    files = {"r/.htaccess": "RewriteEngine On\n"
                            "RewriteRule ^pic\\.jpg$ /m.php/pic [L]\n"
                            "RewriteRule ^pic2\\.jpg$ /m.php [L]\n"
                            "RewriteRule ^webp\\.jpg$ /img/x.png [L]\n"
                            "RewriteCond %{REQUEST_FILENAME} !-f\n"
                            "RewriteRule . /m.php [L]\n",
             "r/pic.jpg": PNG, "r/pic2.jpg": PNG, "r/webp.jpg": PNG}
    tree, fpm, httpd = media_server(w4a, with_php=True, files_a=files)
    st, h, body = httpd.get("media.a.example", "/r/pic.jpg")
    assert st == 403 and b"php ran" not in body
    assert httpd.wait_log(r"W4A00501: media host media\.a\.example: a rewrite "
                          r"to /m\.php/pic, not an allow-listed static file")
    st, h, body = httpd.get("media.a.example", "/r/pic2.jpg")
    assert st == 403 and b"php ran" not in body
    assert httpd.wait_log(r"W4A00501: media host media\.a\.example: a rewrite "
                          r"to /m\.php, not an allow-listed static file")
    # a rewrite from one static file to another is fine
    st, h, body = httpd.get("media.a.example", "/r/webp.jpg")
    assert (st, body) == (200, PNG.encode())
    st, h, body = httpd.get("media.a.example", "/r/missing.jpg")
    assert st == 404 and b"php ran" not in body
    assert not ran(tree)
    st, h, body = httpd.get("a.example", "/r/pic.jpg")
    assert (st, body) == (200, b"php ran")          # main site: it does run


@pytest.fixture
def suexec_docroot(w4a):
    """apache2-suexec-custom reads its document root from SUEXEC_CONF: point
    it at this test's tree, and put the operator's back afterwards."""
    old = open(SUEXEC_CONF).read() if os.path.exists(SUEXEC_CONF) else None
    with open(SUEXEC_CONF, "w") as f:
        f.write("%s\npublic_html/cgi-bin\n" % w4a.tree.base)
    yield
    if old is not None:
        with open(SUEXEC_CONF, "w") as f:
            f.write(old)


def test_media_cgi_never_runs_with_mod_cgid(w4a, suexec_docroot):
    files = {"cgi/.htaccess": "Options +ExecCGI\nAddHandler cgi-script .jpg .cgi\n",
             "cgi/run.jpg": MARK_CGI, "cgi/run.cgi": MARK_CGI,
             "cgi2/.htaccess": "Options +ExecCGI\nSetHandler cgi-script\n",
             "cgi2/run.jpg": MARK_CGI}
    tree, fpm, httpd = media_server(
        w4a, head=f"LoadModule cgid_module /usr/lib/apache2/modules/mod_cgid.so\n"
                  f"ScriptSock {w4a.root}/cgid.sock\n", files_a=files)
    for f in ("cgi/run.jpg", "cgi/run.cgi", "cgi2/run.jpg"):
        os.chmod(os.path.join(docroot_a(tree), f), 0o755)
    httpd.expect_error(r"W4A00502: media host media\.a\.example: configuration "
                       r"asks for handler cgi-script")
    for path in ("/cgi/run.jpg", "/cgi2/run.jpg"):
        st, h, body = httpd.get("media.a.example", path)
        assert st == 403 and b"cgi ran" not in body, path
    st, h, body = httpd.get("media.a.example", "/cgi/run.cgi")
    assert st == 403 and b"cgi ran" not in body
    assert not ran(tree, "cgi-ran.txt", "cgi") and not ran(tree, "cgi-ran.txt", "cgi2")
    # on the main site the CGI runs (through suEXEC): the mark appears
    st, h, body = httpd.get("a.example", "/cgi/run.jpg")
    assert (st, body) == (200, b"cgi ran\n")
    assert ran(tree, "cgi-ran.txt", "cgi")


def test_media_ssi_and_other_resource_filters_are_removed(w4a):
    files = {"ssi/.htaccess": "Options +IncludesNOEXEC\nAddOutputFilter INCLUDES .css\n",
             "ssi/s.css": "a{}<!--#echo var=\"DOCUMENT_ROOT\" -->\n"}
    tree, fpm, httpd = media_server(w4a, files_a=files, modules=["include"])
    st, h, body = httpd.get("media.a.example", "/ssi/s.css")
    assert (st, body) == (200, files["ssi/s.css"].encode())
    st, h, body = httpd.get("a.example", "/ssi/s.css")
    assert st == 200 and docroot_a(tree).encode() in body   # SSI works there


def test_media_directories_dotfiles_other_types_missing_and_methods(w4a):
    files = {".htaccess": "# customer\n", "notes.html": "<p>x</p>\n",
             "data.sql": "secret\n", "dir/y.png": PNG}
    tree, fpm, httpd = media_server(w4a, files_a=files)
    # the harness, like Debian's apache2.conf, denies .ht* files first
    httpd.expect_error(r"AH01630: client denied by server configuration: "
                       r".*/\.htaccess$")
    for path, want in (("/", 403), ("/dir/", 403), ("/dir", 403),
                       ("/.htaccess", 403), ("/notes.html", 403),
                       ("/data.sql", 403), ("/img/x.png/extra", 403),
                       ("/missing.png", 404)):
        st, h, body = httpd.get("media.a.example", path)
        assert st == want, (path, st)
    assert httpd.wait_log(r"W4A00501: media host media\.a\.example: .*/data\.sql "
                          r"is not an allow-listed static file; answered 403")
    assert httpd.wait_log(r"W4A00504: media host media\.a\.example: .*missing\.png "
                          r"not found; answered 404")
    st, h, body = httpd.get("media.a.example", "/img/x.png", method="POST",
                            body=b"x=1")
    assert st == 405 and "GET" in h.get("allow", "")
    assert httpd.wait_log(r"W4A00503: media host media\.a\.example: method POST")
    st, h, body = httpd.get("media.a.example", "/img/x.png", method="HEAD")
    assert st == 200 and body == b"" and h["cache-control"]
    st, h, body = httpd.get("media.a.example", "/dir/y.png")
    assert st == 200
    # the main site is untouched by all this
    st, h, body = httpd.get("a.example", "/notes.html")
    assert (st, body) == (200, b"<p>x</p>\n")


def test_media_extensions_are_configurable(w4a):
    files = {"doc.sql": "data\n"}
    tree, fpm, httpd = media_server(w4a, "W4AMediaExtensions sql .PNG\n",
                                    files_a=files)
    assert httpd.get("media.a.example", "/doc.sql")[0] == 200
    assert httpd.get("media.a.example", "/img/x.png")[0] == 200
    assert httpd.get("media.a.example", "/css/site.css")[0] == 403


@pytest.mark.parametrize("line,message", [
    ("W4AMediaExtensions php", "is a script, never served by the media host"),
    ("W4AMediaExtensions .ph/p", "is not an extension"),
    ("W4AMediaCORSOrigin example.com", "is not an origin like"),
    ("W4AMediaCORSOrigin https://a.example/path", "has more than scheme://host"),
    ("W4AMediaCORSOrigin https://%h.example", "only %d"),
    ("W4AMediaURLScheme ftp", "expected relative, http or https"),
    ("W4AMediaMaxToken 10", "expected bytes from 256 to 16777216"),
    ("W4AMediaRewrite maybe", "W4AMediaRewrite"),
    ("W4AMediaInflate 1", "W4AMediaInflate"),
    ("W4AMediaSameSite www.%h", "only %d"),
    ("W4AMediaSameSite http://www.%d", "is not a host name"),
])
def test_media_bad_directives_refused_at_config_time(w4a, line, message):
    tree = w4a.tree
    h = w4a.httpd(line + "\n", ours=MEDIA)
    r = subprocess.run([HTTPD, "-t", "-f", h.conf], capture_output=True,
                       text=True)
    assert r.returncode != 0
    assert message in r.stdout + r.stderr, r.stdout + r.stderr


# ---------------------------------------------------------------------------
# the rewriting filter

PAGE = """<!DOCTYPE html>
<html><head><title>t</title>
<link rel="stylesheet" href="/css/site.css?v=3">
<link rel=icon href=favicon.png>
<link rel="canonical" href="/page.png">
<style>body{background:url("/img/bg.png")}</style>
<script src="/js/app.js"></script>
<script>var s = "<img src='/img/in-script.png'>";</script>
</head><body>
<img src="img/a.png" srcset="img/a.png 1x, /img/a2.png 2x, https://a.example/img/a3.png 3x">
<picture><source srcset="/img/p.webp"><img src="http://a.example/img/p.jpg"></picture>
<img data-src="/lazy.jpg" data-srcset="/l1.jpg 1x"><video poster="/v/p.jpg"></video>
<div style="background:url(/img/st.png)"></div>
<a href="/img/link.png">l</a><form action="/x.js"></form>
<img src="https://b.example/x.png"><img src="//media.a.example/done.png">
<img src="/a/../b/./c.png?x=1&amp;y=2#f"><img src="/nope.php">
</body></html>
"""
M = "//media.a.example"
PAGE_WANT = (PAGE.replace('"/css/site.css', '"' + M + '/css/site.css')
             .replace("href=favicon.png", "href=%s/blog/favicon.png" % M)
             .replace('url("/img/bg.png")', 'url("%s/img/bg.png")' % M)
             .replace('"/js/app.js"', '"%s/js/app.js"' % M)
             .replace('src="img/a.png" srcset="img/a.png 1x, /img/a2.png 2x, '
                      'https://a.example/img/a3.png 3x"',
                      'src="{m}/blog/img/a.png" srcset="{m}/blog/img/a.png 1x, '
                      '{m}/img/a2.png 2x, {m}/img/a3.png 3x"'.format(m=M))
             .replace('"/img/p.webp"', '"%s/img/p.webp"' % M)
             .replace('"http://a.example/img/p.jpg"', '"%s/img/p.jpg"' % M)
             .replace('"/lazy.jpg"', '"%s/lazy.jpg"' % M)
             .replace('"/l1.jpg 1x"', '"%s/l1.jpg 1x"' % M)
             .replace('"/v/p.jpg"', '"%s/v/p.jpg"' % M)
             .replace("url(/img/st.png)", "url(%s/img/st.png)" % M)
             .replace('"/a/../b/./c.png?', '"%s/b/c.png?' % M))
PAGE_URLS = 15

CHUNKED_PHP = r"""<?php
while (ob_get_level()) { ob_end_flush(); }
$page = file_get_contents(__DIR__ . '/post.html');
$cut = isset($_GET['cut']) ? (int)$_GET['cut'] : -1;
$step = isset($_GET['step']) ? (int)$_GET['step'] : 0;
if ($step > 0) {
    for ($i = 0; $i < strlen($page); $i += $step) {
        echo substr($page, $i, $step); flush(); usleep(300);
    }
} elseif ($cut >= 0) {
    echo substr($page, 0, $cut); flush(); usleep(1000);
    echo substr($page, $cut); flush();
} else {
    echo $page;
}
"""


def rewrite_server(w4a, body_extra="W4AMediaRewrite on\n", files_a=None,
                   with_php=True, **kw):
    files = {"blog/post.html": PAGE, "blog/page.php": CHUNKED_PHP}
    files.update(files_a or {})
    return media_server(w4a, body_extra, files_a=files, with_php=with_php, **kw)


def test_rewrite_static_page_every_attribute_form(w4a):
    tree, fpm, httpd = rewrite_server(w4a, with_php=False)
    st, h, body = httpd.get("a.example", "/blog/post.html")
    assert st == 200
    assert body.decode() == PAGE_WANT
    assert "content-length" not in h or int(h["content-length"]) == len(body)
    # the same page on another of the domain's names: same-site too
    st, h, body = httpd.get("www.a.example", "/blog/post.html")
    assert body.decode() == PAGE_WANT
    # and the media host serves what the page now points at
    st, h, body = httpd.get("media.a.example", "/css/site.css?v=3")
    assert st == 200


def test_rewrite_same_site_names(w4a):
    page = ('<img src="http://www.a.example/1.png"><img src="//cdn.a.example/2.png">'
            '<img src="https://b.example/3.png">')
    files = {"names.html": page}
    tree, fpm, httpd = rewrite_server(w4a, files_a=files, with_php=False)
    # the record knows the domain and the requested name, not every alias
    st, h, body = httpd.get("a.example", "/names.html")
    assert body.decode() == page
    st, h, body = httpd.get("www.a.example", "/names.html")
    assert body.decode() == page.replace("http://www.a.example", M)
    httpd.stop()
    tree, fpm, httpd2 = rewrite_server(w4a, "W4AMediaRewrite on\n"
                                            "W4AMediaSameSite www.%d cdn.%d\n",
                                       files_a=files, with_php=False)
    st, h, body = httpd2.get("a.example", "/names.html")
    assert body.decode() == page.replace("http://www.a.example", M).replace(
        "//cdn.a.example", M)


def test_rewrite_scheme_https_and_off_by_default(w4a):
    tree, fpm, httpd = rewrite_server(w4a, "W4AMediaRewrite on\n"
                                           "W4AMediaURLScheme https\n",
                                      with_php=False)
    st, h, body = httpd.get("a.example", "/blog/post.html")
    assert body.decode() == PAGE_WANT.replace('"//media', '"https://media') \
        .replace("=//media", "=https://media").replace("(//media", "(https://media") \
        .replace(", //media", ", https://media") \
        .replace('"https://media.a.example/done.png"', '"//media.a.example/done.png"')
    httpd.stop()
    tree, fpm, httpd2 = rewrite_server(w4a, "", with_php=False)
    st, h, body = httpd2.get("a.example", "/blog/post.html")
    assert body.decode() == PAGE


def test_rewrite_per_hosting_by_the_records_rewrite_flag(w4a):
    # no directive: the record's "rewrite" flag turns it on for a.example
    tree, fpm, httpd = rewrite_server(w4a, "", with_php=False,
                                      map_flags="rewrite")
    st, h, body = httpd.get("a.example", "/blog/post.html")
    assert (st, body.decode()) == (200, PAGE_WANT)
    s = json.loads(httpd.get("a.example", "/w4a-media-status")[2])
    assert s["rewrite"] == "record" and s["counters"]["pages_rewritten"] == 1
    httpd.stop()
    # W4AMediaRewrite off wins over the record
    tree, fpm, httpd2 = rewrite_server(w4a, "W4AMediaRewrite off\n",
                                       with_php=False, map_flags="rewrite")
    st, h, body = httpd2.get("a.example", "/blog/post.html")
    assert (st, body.decode()) == (200, PAGE)


def test_rewrite_never_points_at_a_media_name_that_is_another_tenants_site(w4a):
    # media.a.example is b.example's hosting's own site in the map: a's
    # pages must not load their assets (scripts) from another tenant
    tree, fpm, httpd = rewrite_server(
        w4a, with_php=False,
        extra_lines=[w4a.tree.line("media.a.example", B, "b.example")])
    st, h, body = httpd.get("a.example", "/blog/post.html")
    assert (st, body.decode()) == (200, PAGE)
    st, h, body = httpd.get("media.a.example", "/img/b.png")
    assert st == 200                          # b's own site, not a's media
    assert httpd.get("media.a.example", "/img/x.png")[0] == 404
    httpd.stop()
    # the same name as a site of a's own hosting and docroot: rewritten
    tree, fpm, httpd2 = rewrite_server(
        w4a, with_php=False,
        extra_lines=[w4a.tree.line("media.a.example", A, "a.example")])
    st, h, body = httpd2.get("a.example", "/blog/post.html")
    assert (st, body.decode()) == (200, PAGE_WANT)


def test_media_host_named_by_the_record_is_served_and_rewritten_to(w4a):
    # media=cdn.a.example in a.example's record: that name (no site of its
    # own) is a.example's media host, and media.a.example is not
    tree, fpm, httpd = rewrite_server(w4a, with_php=True,
                                      map_flags="media=cdn.a.example")
    st, h, body = httpd.get("cdn.a.example", "/img/x.png")
    assert (st, body) == (200, PNG.encode()) and "set-cookie" not in h
    assert h["vary"] == "Origin"
    assert httpd.get("cdn.a.example", "/m.php")[0] == 403
    assert not os.path.exists(os.path.join(tree.docroot(A, "a.example"),
                                           "ran.txt"))
    assert httpd.get("a.example", "/m.php")[0] == 200     # PHP works there
    st, h, body = httpd.get("media.a.example", "/img/x.png")
    assert body != PNG.encode()               # not a.example's media host
    st, h, body = httpd.get("a.example", "/blog/post.html")
    want = PAGE_WANT.replace(M, "//cdn.a.example").replace(
        "//cdn.a.example/done.png", M + "/done.png")   # the page's own
    assert (st, body.decode()) == (200, want)


def test_rewrite_php_page_every_split_position_of_flushed_chunks(w4a):
    tree, fpm, httpd = rewrite_server(w4a)
    st, h, body = httpd.get("a.example", "/blog/page.php")
    assert (st, body.decode()) == (200, PAGE_WANT)
    for cut in range(len(PAGE) + 1):
        st, h, body = httpd.get("a.example", "/blog/page.php?cut=%d" % cut)
        assert st == 200
        assert body.decode() == PAGE_WANT, "cut at %d" % cut
    for step in (1, 2, 3, 5, 8, 13):
        st, h, body = httpd.get("a.example", "/blog/page.php?step=%d" % step)
        assert body.decode() == PAGE_WANT, "chunks of %d" % step
    status = json.loads(httpd.get("a.example", "/w4a-media-status")[2])
    assert status["counters"]["pages_rewritten"] >= len(PAGE) + 8


GZ_FILES = {
    "blog/gz.php": "<?php ob_start('ob_gzhandler'); "
                   "readfile(__DIR__ . '/post.html');\n",
    "blog/bad.php": "<?php header('Content-Type: text/html'); "
                    "header('Content-Encoding: gzip'); "
                    "echo str_repeat('not gzip at all ', 100);\n",
    "blog/cut.php": "<?php header('Content-Encoding: gzip'); "
                    "$z = gzencode(file_get_contents(__DIR__ . '/post.html')); "
                    "echo substr($z, 0, intdiv(strlen($z), 2));\n",
    "blog/mid.php": "<?php while (ob_get_level()) ob_end_flush(); "
                    "header('Content-Encoding: gzip'); "
                    "$z = gzencode(file_get_contents(__DIR__ . '/post.html') "
                    ". bin2hex(random_bytes(20000))); "
                    "echo substr($z, 0, 4000); flush(); usleep(100000); "
                    "echo str_repeat(chr(255), 4000); flush();\n",
    "blog/chunks.php": "<?php while (ob_get_level()) ob_end_flush(); "
                       "header('Content-Encoding: gzip'); "
                       "$z = gzencode(file_get_contents(__DIR__ . '/post.html')); "
                       "foreach (str_split($z, 5) as $c) { echo $c; flush(); }\n",
}


def test_rewrite_gzip_from_php_is_inflated_and_rewritten(w4a):
    tree, fpm, httpd = rewrite_server(w4a, files_a=GZ_FILES)
    for path in ("/blog/gz.php", "/blog/chunks.php"):
        st, h, body = httpd.get("a.example", path,
                                headers={"Accept-Encoding": "gzip"})
        assert st == 200 and "content-encoding" not in h, path
        assert body.decode() == PAGE_WANT, path
    st, h, body = httpd.get("a.example", "/blog/gz.php")   # PHP: no gzip
    assert st == 200 and body.decode() == PAGE_WANT
    status = json.loads(httpd.get("a.example", "/w4a-media-status")[2])
    assert status["counters"]["pages_inflated"] == 2


def test_rewrite_inflated_page_is_compressed_again_by_mod_deflate(w4a):
    files = dict(GZ_FILES, **{"blog/.htaccess":
                              "AddOutputFilterByType DEFLATE text/html\n"})
    tree, fpm, httpd = rewrite_server(w4a, files_a=files,
                                      modules=["filter", "deflate"])
    st, h, body = httpd.get("a.example", "/blog/gz.php",
                            headers={"Accept-Encoding": "gzip"})
    assert st == 200 and h.get("content-encoding") == "gzip"
    assert gzip.decompress(body).decode() == PAGE_WANT


def test_rewrite_gzip_left_alone_and_intact_with_inflate_off(w4a):
    tree, fpm, httpd = rewrite_server(w4a, "W4AMediaRewrite on\n"
                                           "W4AMediaInflate off\n",
                                      files_a=GZ_FILES)
    st, h, body = httpd.get("a.example", "/blog/gz.php",
                            headers={"Accept-Encoding": "gzip"})
    assert st == 200 and h.get("content-encoding") == "gzip"
    assert gzip.decompress(body).decode() == PAGE        # not corrupted
    st, h, body = httpd.get("a.example", "/blog/gz.php")
    assert st == 200 and body.decode() == PAGE_WANT      # identity: rewritten


def test_rewrite_gzip_bomb_is_cut_at_the_ratio_with_a_log_line(w4a):
    """A tenant's PHP answers 32 KiB of gzip that inflate to 32 MiB: the
    rewriter inflated and parsed all of it in httpd (a thousand times the
    bytes the pool sent, on httpd's CPU).  Now an answer inflating past
    200 times its gzip size, once past 1 MiB, is cut (W4A00516); a real
    page (about 4 times) and the other hostings are served."""
    files = dict(GZ_FILES, **{
        "blog/bomb.php": "<?php header('Content-Type: text/html'); "
                         "header('Content-Encoding: gzip'); "
                         "echo gzencode('<p>' . str_repeat('a', 32 << 20));\n"})
    tree, fpm, httpd = rewrite_server(w4a, files_a=files)
    httpd.expect_error(r"W4A00516: gzip answer of /blog/bomb\.php inflates")
    httpd.expect_error(r"AH01075: Error dispatching request")   # proxy_fcgi's
    cut, st, raw = answer_cut(httpd, "/blog/bomb.php")
    assert cut, (st, len(raw))
    assert len(raw) < 4 << 20, len(raw)
    assert httpd.wait_log(r"W4A00516: gzip answer of /blog/bomb\.php inflates "
                          r"to more than 200 times its size \(\d+ bytes from "
                          r"\d+: a gzip bomb\?\); answer cut short")
    st, h, body = httpd.get("a.example", "/blog/gz.php",
                            headers={"Accept-Encoding": "gzip"})
    assert st == 200 and body.decode() == PAGE_WANT
    st, h, body = httpd.get("b.example", "/img/b.png")
    assert st == 200 and body == PNG.encode()


def answer_cut(httpd, path):
    """(status, raw body): a 500, or a chunked answer without its last
    chunk (the connection closed): what a client can tell is incomplete."""
    st, h, raw = httpd.raw(("GET %s HTTP/1.1\r\nHost: a.example\r\n"
                            "Connection: close\r\n\r\n" % path).encode())
    cut = st == 500 or (st == 200 and h.get("transfer-encoding") == "chunked"
                        and not raw.endswith(b"0\r\n\r\n"))
    return cut, st, raw


def test_rewrite_corrupt_or_truncated_gzip_is_cut_with_a_log_line(w4a):
    tree, fpm, httpd = rewrite_server(w4a, files_a=GZ_FILES)
    httpd.expect_error(r"W4A00513: gzip answer of /blog/bad\.php is corrupt")
    httpd.expect_error(r"AH01075: Error dispatching request")   # proxy_fcgi's
    # corrupt from the first byte: nothing sent yet, so a clean 500
    st, h, body = httpd.get("a.example", "/blog/bad.php")
    assert st == 500 and b"not gzip at all" not in body
    assert httpd.wait_log(r"W4A00513: gzip answer of /blog/bad\.php is "
                          r"corrupt \(.*\); answered 500")
    # broken after the answer started (4000 bytes of a gzip stream of
    # random content, then 4000 bytes of 0xff, then the end): no last
    # chunk, the connection closed.  Whether zlib takes the 0xff bytes for
    # a corrupt stream (W4A00513) or for more of a stream that then ends
    # too soon (W4A00514) depends on where the cut falls in the random
    # stream: either, cut short
    httpd.expect_error(r"W4A00513: gzip answer of /blog/mid\.php is corrupt "
                       r"\(.*\); answer cut short")
    cut, st, raw = answer_cut(httpd, "/blog/mid.php")
    assert cut and st == 200, raw[-60:]
    assert PAGE_WANT[:200].encode() in raw
    assert httpd.wait_log(r"W4A0051[34]: gzip answer of /blog/mid\.php "
                          r"(ends before its gzip stream does|is corrupt "
                          r"\(.*\)); answer cut short")
    cut, st, raw = answer_cut(httpd, "/blog/cut.php")
    assert cut, raw[-60:]
    assert httpd.wait_log(r"W4A00514: gzip answer of /blog/cut\.php ends before")
    st, h, body = httpd.get("a.example", "/blog/post.html")   # still serving
    assert (st, body.decode()) == (200, PAGE_WANT)
    st, h, body = httpd.get("a.example", "/blog/gz.php",
                            headers={"Accept-Encoding": "gzip"})
    assert (st, body.decode()) == (200, PAGE_WANT)


def test_rewrite_skips_head_range_no_transform_errors_other_types(w4a):
    files = {"blog/nt.php": "<?php header('Cache-Control: no-transform'); "
                            "readfile(__DIR__ . '/post.html');\n",
             "blog/e404.php": "<?php http_response_code(404); "
                              "readfile(__DIR__ . '/post.html');\n",
             "blog/json.php": "<?php header('Content-Type: application/json'); "
                              "echo json_encode(['<img src=\"/x.png\">']);\n",
             "blog/u16.php": "<?php header('Content-Type: text/html; charset=UTF-16'); "
                             "readfile(__DIR__ . '/post.html');\n",
             "blog/l1.php": "<?php header('Content-Type: text/html; charset=iso-8859-1'); "
                            "readfile(__DIR__ . '/post.html');\n",
             "blog/page.txt": PAGE}
    tree, fpm, httpd = rewrite_server(w4a, files_a=files)
    st, h, body = httpd.get("a.example", "/blog/post.html", method="HEAD")
    assert st == 200 and body == b""
    # not the file's length, which GET does not have
    assert h.get("content-length") in (None, str(len(PAGE_WANT))), h
    st, h, body = httpd.get("a.example", "/blog/post.html",
                            headers={"Range": "bytes=0-99"})
    assert (st, body) == (206, PAGE.encode()[:100])
    for path in ("/blog/nt.php", "/blog/u16.php", "/blog/page.txt"):
        st, h, body = httpd.get("a.example", path)
        assert (st, body.decode()) == (200, PAGE), path
    st, h, body = httpd.get("a.example", "/blog/e404.php")
    assert (st, body.decode()) == (404, PAGE)
    st, h, body = httpd.get("a.example", "/blog/json.php")
    assert st == 200 and b"//media" not in body
    st, h, body = httpd.get("a.example", "/blog/l1.php")
    assert (st, body.decode()) == (200, PAGE_WANT)
    # the media host's own HTML-ish files are never rewritten (nor served)
    st, h, body = httpd.get("media.a.example", "/blog/post.html")
    assert st == 403


def test_rewrite_multi_megabyte_attribute_passes_unchanged(w4a):
    big = "x" * (3 * 1024 * 1024)
    page = ('<p><img src="/a.png" alt="%s"><img src="/b.png">\n' % big) + PAGE
    files = {"blog/big.html": page,
             "blog/big.php": "<?php while (ob_get_level()) ob_end_flush(); "
                             "$p = file_get_contents(__DIR__ . '/big.html'); "
                             "foreach (str_split($p, 7777) as $c) { echo $c; flush(); }\n"}
    tree, fpm, httpd = rewrite_server(w4a, files_a=files)
    want = page.replace('<img src="/b.png">', '<img src="%s/b.png">' % M) \
        .replace(PAGE, PAGE_WANT)
    for path in ("/blog/big.html", "/blog/big.php"):
        st, h, body = httpd.get("a.example", path)
        assert st == 200
        assert body.decode() == want, path
    status = json.loads(httpd.get("a.example", "/w4a-media-status")[2])
    assert status["counters"]["tokens_overlong"] == 2
    st, h, body = httpd.get("a.example", "/blog/post.html")
    assert body.decode() == PAGE_WANT                    # still serving


def test_rewrite_malformed_html_is_passed_and_server_keeps_serving(w4a):
    # one tag from "<img" to the first ">", as browsers parse it: both its
    # src attributes are rewritten; the unterminated tag is left alone
    bad = ('<<<>>> <img src="/x.png" <3 </ <!-- <img src=/c.png> '
           '<img src="/a.png" alt="unterminated')
    bad_want = bad.replace('"/x.png"', '"%s/x.png"' % M).replace(
        "=/c.png", "=%s/c.png" % M)
    files = {"blog/bad.html": bad, "blog/nul.html": "\0<img src=/x.png>\0\xff"}
    tree, fpm, httpd = rewrite_server(w4a, files_a=files, with_php=False)
    st, h, body = httpd.get("a.example", "/blog/bad.html")
    assert (st, body.decode()) == (200, bad_want)
    st, h, body = httpd.get("a.example", "/blog/nul.html")
    assert st == 200 and body == "\0<img src=%s/x.png>\0\xff".encode() % M.encode()
    st, h, body = httpd.get("a.example", "/blog/post.html")
    assert body.decode() == PAGE_WANT


def test_rewrite_status_counters_json(w4a):
    tree, fpm, httpd = rewrite_server(w4a, with_php=False)
    for _ in range(3):
        assert httpd.get("a.example", "/blog/post.html")[0] == 200
    assert httpd.get("a.example", "/img/x.png")[0] == 200
    assert httpd.get("media.a.example", "/img/x.png")[0] == 200
    assert httpd.get("media.a.example", "/nope.sql")[0] == 404
    st, h, body = httpd.get("a.example", "/w4a-media-status")
    assert st == 200 and h["content-type"] == "application/json"
    s = json.loads(body)
    c = s["counters"]
    assert s["module"] == "mod_w4a_media" and s["rewrite"] == "on"
    assert c["pages_filtered"] == 3 and c["pages_rewritten"] == 3
    assert c["urls_rewritten"] == 3 * PAGE_URLS
    assert c["bytes_in"] == 3 * len(PAGE)
    assert c["bytes_out"] == 3 * len(PAGE_WANT)
    assert c["media_served"] == 1 and c["media_refused"] == 1


def test_rewrite_output_is_compressed_by_mod_deflate_after_it(w4a):
    files = {"blog/.htaccess": "AddOutputFilterByType DEFLATE text/html\n"}
    tree, fpm, httpd = rewrite_server(w4a, files_a=files, modules=["filter", "deflate"])
    for path in ("/blog/post.html", "/blog/page.php?step=64"):
        st, h, body = httpd.get("a.example", path,
                                headers={"Accept-Encoding": "gzip"})
        assert st == 200 and h.get("content-encoding") == "gzip", path
        assert gzip.decompress(body).decode() == PAGE_WANT, path


def test_rewrite_uses_the_records_own_media_host(w4a):
    # media=HOST in the map names the media host (here one that the prefix
    # also resolves: media.<an alias>); media.<domain> is then not one
    tree, fpm, httpd = rewrite_server(w4a, with_php=False,
                                      map_flags="media=media.www.a.example")
    st, h, body = httpd.get("a.example", "/blog/post.html")
    assert body.decode() == PAGE_WANT.replace("//media.a.example/",
                                              "//media.www.a.example/") \
        .replace('"//media.www.a.example/done.png"', '"//media.a.example/done.png"')
    st, h, body = httpd.get("media.www.a.example", "/img/x.png")
    assert (st, body) == (200, PNG.encode())
    assert h["cache-control"] == "public, max-age=2592000"
    st, h, body = httpd.get("media.a.example", "/img/x.png")
    assert st == 404


def test_media_example_conf_files_are_valid(w4a):
    load = open(os.path.join(REPO, "conf/w4a_media.load")).read()
    conf = open(os.path.join(REPO, "conf/w4a_media.conf")).read()
    assert "LoadModule w4a_media_module" in load
    h = w4a.httpd(conf, ours=MEDIA)
    r = subprocess.run([HTTPD, "-t", "-f", h.conf], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_rewrite_sees_what_ssi_produced(w4a):
    files = {"ssi/.htaccess": "Options +IncludesNOEXEC\nAddType text/html .shtml\n"
                              "AddOutputFilter INCLUDES .shtml\n",
             "ssi/page.shtml": '<img src="/a.png"><!--#include virtual="part.html" -->\n',
             "ssi/part.html": '<img src="b.png">\n'}
    tree, fpm, httpd = rewrite_server(w4a, with_php=False, files_a=files,
                                      modules=["include"])
    st, h, body = httpd.get("a.example", "/ssi/page.shtml")
    assert (st, body.decode()) == (200, '<img src="%s/a.png"><img src="%s/ssi/b.png">\n\n'
                                   % (M, M))


def test_media_error_document_cannot_run_php_and_symlinks_stay_in_the_hosting(w4a):
    files = {".htaccess": "ErrorDocument 404 /m.php\n"}
    tree, fpm, httpd = media_server(w4a, with_php=True, files_a=files)
    other = os.path.join(tree.docroot(B, "b.example"), "img/b.png")
    os.symlink(other, os.path.join(docroot_a(tree), "img/theirs.png"))
    httpd.expect_error(r"W4A00106: hosting w4a100010: .*theirs\.png")
    st, h, body = httpd.get("media.a.example", "/missing.png")
    assert st == 404 and b"php ran" not in body
    assert not ran(tree)
    st, h, body = httpd.get("media.a.example", "/img/theirs.png")
    assert st == 403 and body != PNG.encode()
    st, h, body = httpd.get("a.example", "/missing.png")      # main site:
    assert (st, body) == (404, b"php ran")                    # it does run
    st, h, body = httpd.get("media.a.example", "/img/x.png")
    assert st == 200


def test_rewrite_directory_index_resolves_relative_urls_against_the_url(w4a):
    files = {"blog/index.html": '<img src="i.png"><img src="../r.png">'}
    tree, fpm, httpd = rewrite_server(w4a, with_php=False, files_a=files)
    st, h, body = httpd.get("a.example", "/blog/")
    assert (st, body.decode()) == (200, '<img src="%s/blog/i.png"><img src="%s/r.png">'
                                   % (M, M))


def test_media_range_requests_keep_the_media_headers(w4a):
    tree, fpm, httpd = media_server(w4a)
    st, h, body = httpd.get("media.a.example", "/img/x.png",
                            headers={"Range": "bytes=0-2"})
    assert (st, body) == (206, PNG.encode()[:3])
    assert h["cache-control"] == "public, max-age=2592000"
    assert "Origin" in h["vary"]


def test_rewrite_each_hosting_gets_its_own_media_host_only(w4a):
    tree, fpm, httpd = rewrite_server(w4a, with_php=False)
    page = ('<img src="/img/b.png"><img src="https://a.example/img/x.png">'
            '<img src="//media.a.example/img/x.png">')
    tree.write(B, "b.example", "p.html", page)
    st, h, body = httpd.get("b.example", "/p.html")
    assert (st, body.decode()) == (200, page.replace(
        '"/img/b.png"', '"//media.b.example/img/b.png"'))
    # and b's media host serves b's files only
    assert httpd.get("media.b.example", "/img/b.png")[0] == 200
    assert httpd.get("media.b.example", "/img/x.png")[0] == 404


def test_media_directives_cannot_be_set_in_htaccess(w4a):
    files = {"h/.htaccess": "W4AMediaExtensions php\n", "h/x.png": PNG,
             "h2/.htaccess": "W4AMediaRewrite off\n", "h2/x.png": PNG}
    tree, fpm, httpd = media_server(w4a, files_a=files)
    httpd.expect_error(r"W4AMediaExtensions not allowed here")
    httpd.expect_error(r"W4AMediaRewrite not allowed here")
    for path in ("/h/x.png", "/h2/x.png"):
        st, h, body = httpd.get("media.a.example", path)
        assert st == 500, path
    assert httpd.wait_log(r"W4AMediaExtensions not allowed here")
    assert httpd.get("media.a.example", "/img/x.png")[0] == 200


# ---------------------------------------------------------------------------
# content filters and types on the media host (issue 12, vector 8)

SSI_TXT = 'plain <!--#echo var="DOCUMENT_ROOT" --> text\n'
SVG = ('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script>'
       '</svg>\n')
HTML_TXT = "<script>alert(document.domain)</script>\n"


def ssi_ran(tree, body):
    return docroot_a(tree).encode() in body


@pytest.mark.parametrize("htaccess", [
    "Options +IncludesNOEXEC\nAddOutputFilterByType INCLUDES text/plain\n",
    "Options +IncludesNOEXEC\nSetOutputFilter INCLUDES\n",
    "Options +IncludesNOEXEC\nAddOutputFilter INCLUDES .txt\n",
], ids=["bytype", "setoutputfilter", "addoutputfilter"])
def test_media_ssi_never_runs_with_the_shipped_overrides(w4a, htaccess):
    files = {"s/.htaccess": htaccess, "s/p.txt": SSI_TXT}
    tree, fpm, httpd = media_server(w4a, files_a=files,
                                    modules=["include", "filter"])
    st, h, body = httpd.get("media.a.example", "/s/p.txt")
    assert (st, body) == (200, SSI_TXT.encode())
    assert h["content-type"].startswith("text/plain")
    # the same .htaccess runs SSI on the main site: the test can fail
    st, h, body = httpd.get("a.example", "/s/p.txt")
    assert st == 200 and ssi_ran(tree, body)
    # another hosting is served meanwhile
    assert httpd.get("media.b.example", "/img/b.png")[0] == 200


@pytest.mark.parametrize("overrides", [None, "All"], ids=["shipped", "all"])
@pytest.mark.parametrize("declare", [
    "FilterDeclare SSI CONTENT_SET",
    "FilterDeclare SSI RESOURCE",
    "FilterDeclare SSI PROTOCOL",
    "FilterDeclare DEFLATE CONTENT_SET",        # a name we allow
    "FilterDeclare FIXUP_HEADERS_OUT PROTOCOL",
], ids=["content-set", "resource", "protocol", "named-deflate",
        "named-headers"])
def test_media_filter_provider_dispatch_never_runs_ssi(w4a, declare,
                                                       overrides):
    """mod_filter's directives are of the Options class (OR_OPTIONS): a
    node granting that class hands them to customers.  Either they are
    refused (500, "not allowed here"), or the harness they declare, under
    any name and at any level, never runs on the media host."""
    name = declare.split()[1]
    files = {"s/.htaccess": "Options +IncludesNOEXEC\n%s\n"
                            "FilterProvider %s INCLUDES \"true\"\n"
                            "FilterChain %s\n" % (declare, name, name),
             "s/p.txt": SSI_TXT}
    tree, fpm, httpd = media_server(w4a, files_a=files, overrides=overrides,
                                    modules=["include", "filter", "deflate"],
                                    log_level="info w4a_media:debug")
    httpd.expect_error(r"FilterDeclare not allowed here")
    st, h, body = httpd.get("media.a.example", "/s/p.txt")
    assert not ssi_ran(tree, body)
    st2, h2, body2 = httpd.get("a.example", "/s/p.txt")
    if st == 500:
        assert overrides is None
        assert httpd.wait_log(r"FilterDeclare not allowed here")
        assert st2 == 500
    else:
        assert (st, body) == (200, SSI_TXT.encode())
        assert httpd.wait_log(r"(?i)W4A00531: media host media\.a\.example: "
                              r"output filter %s removed" % re.escape(name))
        assert st2 == 200 and ssi_ran(tree, body2)    # SSI works there
    assert httpd.get("media.b.example", "/img/b.png")[0] == 200


@pytest.mark.parametrize("overrides", [None, "All"], ids=["shipped", "all"])
@pytest.mark.parametrize("htaccess", [
    "ForceType text/html\n",
    "AddType text/html .txt\n",
    "AddType image/svg+xml .txt\n",
    'Header set Content-Type "text/html"\n',
    'Header always set Content-Type "text/html"\n',
    "AddType application/xhtml+xml .png\nForceType text/xml\n",
], ids=["forcetype", "addtype", "addtype-svg", "header", "header-always",
        "xml"])
def test_media_type_is_the_extensions_whatever_htaccess_says(w4a, htaccess,
                                                             overrides):
    files = {"t/.htaccess": htaccess, "t/x.txt": HTML_TXT, "t/x.png": PNG}
    tree, fpm, httpd = media_server(w4a, files_a=files, overrides=overrides)
    for path, want in (("/t/x.txt", "text/plain"), ("/t/x.png", "image/png")):
        st, h, body = httpd.get("media.a.example", path)
        assert st == 200, path
        assert h["content-type"].split(";")[0] == want, (path, h)
        assert h["x-content-type-options"] == "nosniff"
        assert "content-security-policy" not in h
    # the main site does what the .htaccess says: the test can fail
    st, h, body = httpd.get("a.example", "/t/x.txt")
    assert st == 200 and not h["content-type"].startswith("text/plain")


def test_media_svg_is_sandboxed_and_error_pages_too(w4a):
    files = {"i/x.svg": SVG, "i/.htaccess":
             'Header set Content-Security-Policy "sandbox allow-scripts"\n'
             'ErrorDocument 404 "<script>alert(1)</script>"\n'}
    tree, fpm, httpd = media_server(w4a, files_a=files)
    st, h, body = httpd.get("media.a.example", "/i/x.svg")
    assert (st, body) == (200, SVG.encode())
    assert h["content-type"] == "image/svg+xml"
    assert h["content-security-policy"] == "sandbox"
    assert h["x-content-type-options"] == "nosniff"
    assert "content-disposition" not in h
    # a customer's ErrorDocument string is HTML from the media origin
    st, h, body = httpd.get("media.a.example", "/i/missing.png")
    assert st == 404 and b"<script>" in body
    assert h["content-type"].startswith("text/html")
    assert h["content-security-policy"] == "sandbox"
    # ordinary files: their types, CORS and caching, no sandbox needed
    for path, ctype in (("/img/x.png", "image/png"),
                        ("/css/site.css", "text/css"),
                        ("/fonts/f.woff2", "font/woff2")):
        st, h, body = httpd.get("media.a.example", path,
                                headers={"Origin": "https://a.example"})
        assert st == 200
        assert h["content-type"].split(";")[0] == ctype, path
        assert "content-security-policy" not in h
        assert h["cache-control"] == "public, max-age=2592000"
        assert h["access-control-allow-origin"] in ("https://a.example", "*")
    # on the main site the SVG is as the customer serves it
    st, h, body = httpd.get("a.example", "/i/x.svg")
    assert st == 200 and h.get("content-security-policy") != "sandbox"


def test_media_documents_refused_unless_the_operator_allows_them(w4a):
    files = {"d/p.html": "<p>x</p>\n", "d/f.xml": "<a/>\n",
             "d/r.sql": "select 1;\n"}
    ext = "W4AMediaExtensions png css woff2 html xml sql svg\n"
    tree, fpm, httpd = media_server(w4a, ext, files_a=files)
    for path in ("/d/p.html", "/d/f.xml"):
        st, h, body = httpd.get("media.a.example", path)
        assert st == 403 and b"<p>x</p>" not in body and b"<a/>" not in body
    assert httpd.wait_log(r"W4A00530: media host media\.a\.example: .*/d/p"
                          r"\.html would be text/html, a document browsers "
                          r"run; refused")
    # an extension the operator added without a known type: octet-stream
    st, h, body = httpd.get("media.a.example", "/d/r.sql")
    assert st == 200 and h["content-type"] == "application/octet-stream"
    assert httpd.get("media.b.example", "/img/b.png")[0] == 200


@pytest.mark.parametrize("mode", ["sandbox", "attachment"])
def test_media_allowed_documents_are_sandboxed_or_attachments(w4a, mode):
    files = {"d/p.html": "<p>x</p>\n", "d/r.sql": "select 1;\n",
             "d/x.svg": SVG}
    tree, fpm, httpd = media_server(
        w4a, "W4AMediaExtensions png html sql svg\n"
             "W4AMediaType application/sql .sql\n"
             "W4AMediaActiveTypes %s\n" % mode, files_a=files)
    for path, ctype in (("/d/p.html", "text/html"),
                        ("/d/x.svg", "image/svg+xml")):
        st, h, body = httpd.get("media.a.example", path)
        assert st == 200, path
        assert h["content-type"].split(";")[0] == ctype
        assert h["content-security-policy"] == "sandbox"
        assert h.get("content-disposition") == (
            "attachment" if mode == "attachment" else None)
    st, h, body = httpd.get("media.a.example", "/d/r.sql")
    assert st == 200 and h["content-type"] == "application/sql"
    assert "content-security-policy" not in h


def test_media_allowed_filters_still_run_deflate_and_headers(w4a):
    files = {"c/.htaccess": "AddOutputFilter DEFLATE .css\n"
                            "Header set X-Customer yes\n",
             "c/big.css": "body { color: red; }\n" * 200}
    tree, fpm, httpd = media_server(w4a, files_a=files, modules=["deflate"])
    st, h, body = httpd.get("media.a.example", "/c/big.css",
                            headers={"Accept-Encoding": "gzip"})
    assert st == 200 and h.get("content-encoding") == "gzip"
    assert gzip.decompress(body) == files["c/big.css"].encode()
    assert h["x-customer"] == "yes"
    assert h["content-type"].startswith("text/css")


@pytest.mark.parametrize("line,message", [
    ("W4AMediaType text/html; .txt", "is not a type like image/png"),
    ("W4AMediaType html .t-x", "is not a type like image/png"),
    ("W4AMediaType text/plain .t-x", "is not an extension"),
    ("W4AMediaActiveTypes allow", "expected refuse, sandbox or attachment"),
])
def test_media_type_directives_refused_at_config_time(w4a, line, message):
    h = w4a.httpd(line + "\n", ours=MEDIA)
    r = subprocess.run([HTTPD, "-t", "-f", h.conf], capture_output=True,
                       text=True)
    assert r.returncode != 0 and message in r.stdout + r.stderr
