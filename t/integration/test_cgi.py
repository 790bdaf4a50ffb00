"""CGI in a hosting's cgi-bin runs through suEXEC as the hosting's user:
mod_w4a_vhost gives suEXEC the hosting's identity from the map."""
import os

import pytest

from w4a_harness import hostings_dir_block


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
{hostings_dir_block(tree.base)}
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


def test_cgi_of_one_hosting_cannot_read_another_hostings_files(w4a,
                                                              suexec_docroot):
    """A's CGI runs as A: with the homes closed to other hostings (0750,
    group www-data, as scripts/node.sh and the harness make them), B's
    files are out of its reach, while httpd still serves them."""
    httpd = cgi_server(w4a)
    secret = w4a.tree.write(B, "b.example", "secret.txt", "B's secret\n")
    path = w4a.tree.write(A, "a.example", "cgi-bin/peek.cgi",
                          "#!/bin/sh\necho 'Content-Type: text/plain'\necho\n"
                          "cat %s 2>&1 || echo refused\n" % secret)
    os.chmod(path, 0o755)
    st, h, body = httpd.get("a.example", "/cgi-bin/peek.cgi")
    assert st == 200 and b"B's secret" not in body and b"refused" in body, body
    assert httpd.get("b.example", "/secret.txt")[::2] == (200, b"B's secret\n")
