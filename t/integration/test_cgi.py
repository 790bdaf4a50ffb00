"""CGI in a hosting's cgi-bin runs through suEXEC as the hosting's user:
mod_w4a_vhost gives suEXEC the hosting's identity from the map."""
import os

import pytest


A, B = "w4a100010", "w4a100011"
SUEXEC_CONF = "/etc/apache2/suexec/www-data"
CGI = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"user=$(id -un)\"\n"


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


def cgi_server(w4a):
    tree = w4a.tree
    for h, d in ((A, "a.example"), (B, "b.example")):
        tree.site(h, d, {"cgi-bin/whoami.cgi": CGI,
                         "cgi-bin/.htaccess": "Options +ExecCGI\nSetHandler cgi-script\n"})
        os.chmod(os.path.join(tree.docroot(h, d), "cgi-bin/whoami.cgi"), 0o755)
    rc, out, index = tree.compile_map([tree.line("a.example", A, "a.example"),
                                       tree.line("b.example", B, "b.example")])
    assert rc == 0, out
    return w4a.httpd(f"""
LoadModule cgid_module /usr/lib/apache2/modules/mod_cgid.so
ScriptSock {w4a.root}/cgid.sock
W4AVhostEngine on
W4AVhostMap {index}
<Directory {tree.base}>
    AllowOverride All
    Require all granted
</Directory>
""").start()


def test_cgi_runs_through_suexec_as_each_hostings_user(w4a, suexec_docroot):
    httpd = cgi_server(w4a)
    for host, user in (("a.example", A), ("b.example", B)):
        st, h, body = httpd.get(host, "/cgi-bin/whoami.cgi")
        assert (st, body) == (200, ("user=%s\n" % user).encode()), (host, body)


def test_cgi_owned_by_another_hosting_is_refused(w4a, suexec_docroot):
    httpd = cgi_server(w4a)
    path = w4a.tree.write(A, "a.example", "cgi-bin/foreign.cgi", CGI, owner=B)
    os.chmod(path, 0o755)
    httpd.expect_error(r"W4A00106: hosting w4a100010: .*foreign\.cgi belongs to uid 100011")
    st, h, body = httpd.get("a.example", "/cgi-bin/foreign.cgi")
    assert st == 403 and b"user=" not in body
