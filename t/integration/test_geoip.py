"""mod_w4a_geoip: client address -> GEOIP_COUNTRY_CODE and friends, at
every level of the configuration, from real .mmdb databases."""
import http.client
import json
import os
import pwd
import re
import socket
import subprocess

import pytest

from w4a_harness import HTTPD, hostings_dir_block
from geoip_mmdb import (OURS, FR, US, UA, BR, DE, IP, IP6, NET, NET6, CITY,
                        CONTINENT, ASN, PROXY_NET, PROXY_IP,
                        LOOPBACK_COUNTRY, LOOPBACK6_COUNTRY, make_mmdb, xff,
                        echo_headers)

A = "w4a100010"

# The rules of the issue, verbatim.
ISSUE_HTACCESS = """SetEnvIf GEOIP_COUNTRY_CODE FR VISITOR_COUNTRY=FR
SetEnvIf GEOIP_COUNTRY_CODE US VISITOR_COUNTRY=US
RewriteEngine On
RewriteCond %{HTTP_HOST} !^www.example.fr$
RewriteCond %{ENV:VISITOR_COUNTRY} ^FR$
RewriteCond %{ENV:BTW_FORBIDDEN_GEOIP} ^0$
RewriteRule ^(.*)$ http://www.example.fr/$1 [L,R=302]

SetEnvIf GEOIP_COUNTRY_CODE ^(UA|BR) BlockCountry
Deny from env=BlockCountry
"""

STATUS = """<Location /w4a-geoip-status>
    SetHandler w4a-geoip-status
    Require local
</Location>
"""

SUPERVISOR_IP = "192.0.2.200"      # a monitoring probe, in France


def dbs(w4a, **kinds):
    """Write test databases {name: kind or (kind, ip_version)}."""
    out = {}
    for name, kind in kinds.items():
        kind, ipv = kind if isinstance(kind, tuple) else (kind, 6)
        out[name] = make_mmdb(os.path.join(w4a.root, name + ".mmdb"), kind,
                              ipv)
    return out


def geo_conf(paths, extra=""):
    lines = ["W4AGeoIPDatabase %s %s" % kv for kv in paths.items()]
    return "\n".join(lines) + "\n" + extra


def status(httpd):
    st, h, b = httpd.get("localhost", "/w4a-geoip-status")
    assert st == 200, b
    assert h["content-type"].startswith("application/json")
    return json.loads(b)


def hdr(h, name):
    return h.get("x-" + name.lower())


def hosting_server(w4a, htaccess, geo_extra="", log_level="info"):
    """One hosting with two domains, the customer's .htaccess, the
    module preconfigured by the host (zero customer setup)."""
    tree = w4a.tree
    tree.site(A, "example.com", {"index.html": "welcome\n",
                                 ".htaccess": htaccess})
    rc, out, index = tree.compile_map([
        tree.line("example.com,www.example.com,www.example.fr", A,
                  "example.com")])
    assert rc == 0, out
    paths = dbs(w4a, country="country")
    httpd = w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
{hostings_dir_block(tree.base)}
{geo_conf(paths)}
W4AGeoIPTrustedProxy 127.0.0.1 {PROXY_NET}
W4AGeoIPSupervisor {SUPERVISOR_IP}/32
{geo_extra}
{STATUS}
""", ours=OURS, log_level=log_level)
    return httpd.start()


# --- the issue's rules, verbatim, in a customer's .htaccess -----------------

def test_geoip_issue_rules_verbatim_redirect_french_visitors(w4a):
    httpd = hosting_server(w4a, ISSUE_HTACCESS)
    st, h, b = httpd.get("example.com", "/page.html?x=1", xff(IP[FR]))
    assert st == 302, b
    assert h["location"] == "http://www.example.fr/page.html?x=1"
    # IPv6 French visitor too
    st, h, b = httpd.get("www.example.com", "/", xff(IP6[FR]))
    assert st == 302 and h["location"] == "http://www.example.fr/"
    # already on www.example.fr: served
    st, h, b = httpd.get("www.example.fr", "/", xff(IP[FR]))
    assert (st, b) == (200, b"welcome\n")
    # other countries: served
    for cc in (US, DE):
        st, h, b = httpd.get("example.com", "/", xff(IP[cc]))
        assert (st, b) == (200, b"welcome\n"), cc


def test_geoip_issue_rules_verbatim_block_ua_and_br(w4a):
    httpd = hosting_server(w4a, ISSUE_HTACCESS)
    for ip in (IP[UA], IP[BR], IP6[UA], IP6[BR]):
        st, h, b = httpd.get("example.com", "/", xff(ip))
        assert st == 403, ip
        assert b"welcome" not in b
    assert httpd.wait_log(r"AH01797: client denied by server configuration")
    httpd.expect_error(r"AH01797: client denied by server configuration")
    st, h, b = httpd.get("example.com", "/", xff(IP[US]))
    assert (st, b) == (200, b"welcome\n")


def test_geoip_supervisor_is_not_redirected(w4a):
    httpd = hosting_server(w4a, ISSUE_HTACCESS + "Header always set X-Exempt "
                           '"%{BTW_FORBIDDEN_GEOIP}e"\n')
    st, h, b = httpd.get("example.com", "/", xff(SUPERVISOR_IP))
    assert (st, b) == (200, b"welcome\n")
    assert h["x-exempt"] == "1"
    st, h, b = httpd.get("example.com", "/", xff(IP[FR]))
    assert st == 302 and h["x-exempt"] == "0"


def test_geoip_client_headers_cannot_set_our_variables(w4a):
    """mod_setenvif reads a request header of the same name before the
    environment: GEOIP_COUNTRY_CODE, MM_COUNTRY_CODE and
    BTW_FORBIDDEN_GEOIP sent by the client are removed."""
    httpd = hosting_server(w4a, ISSUE_HTACCESS
                           + 'Header always set X-CC "%{GEOIP_COUNTRY_CODE}e"\n'
                           + 'Header always set X-MM "%{MM_COUNTRY_CODE}e"\n'
                           + 'Header always set X-Ex "%{BTW_FORBIDDEN_GEOIP}e"\n',
                           log_level="info w4a_geoip:debug")
    # a US visitor claiming to be French: not redirected
    st, h, b = httpd.get("example.com", "/", dict(xff(IP[US]), **{
        "GEOIP_COUNTRY_CODE": "FR", "MM_COUNTRY_CODE": "FR"}))
    assert (st, h["x-cc"], h["x-mm"]) == (200, US, US)
    assert httpd.wait_log(r"W4A00302: request header GEOIP_COUNTRY_CODE "
                          r"removed")
    # a French visitor claiming to be a supervisor: still redirected
    st, h, b = httpd.get("example.com", "/", dict(xff(IP[FR]), **{
        "BTW_FORBIDDEN_GEOIP": "1", "btw_forbidden_geoip": "1"}))
    assert st == 302 and h["x-ex"] == "0"
    # a Ukrainian visitor claiming to be American: still blocked
    st, h, b = httpd.get("example.com", "/", dict(xff(IP[UA]), **{
        "GEOIP_COUNTRY_CODE": "US"}))
    assert st == 403
    httpd.expect_error(r"AH01797")
    # a visitor with no known address claiming a country: no variable
    st, h, b = httpd.get("example.com", "/", dict(xff("198.18.0.1"), **{
        "GEOIP_COUNTRY_CODE": "UA"}))
    assert (st, h["x-cc"], h["x-ex"]) == (200, "(null)", "0")


def test_geoip_htaccess_cannot_override_our_variables(w4a):
    """A customer's SetEnv/SetEnvIf/RewriteRule [E=] of our names is undone
    before the handler (what PHP, CGI and logs see is the lookup's)."""
    httpd = hosting_server(w4a, """SetEnv GEOIP_COUNTRY_CODE XX
SetEnv BTW_FORBIDDEN_GEOIP 1
SetEnvIf Remote_Addr . MM_COUNTRY_CODE=YY
RewriteEngine On
RewriteRule ^ - [E=GEOIP_COUNTRY_CODE:ZZ]
Header always set X-CC "%{GEOIP_COUNTRY_CODE}e"
Header always set X-MM "%{MM_COUNTRY_CODE}e"
Header always set X-Ex "%{BTW_FORBIDDEN_GEOIP}e"
""")
    st, h, b = httpd.get("example.com", "/", xff(IP[BR]))
    assert st == 200
    assert (h["x-cc"], h["x-mm"], h["x-ex"]) == (BR, BR, "0")


# --- variables at every level of the configuration --------------------------

LEVELS_HTACCESS = """SetEnvIf GEOIP_COUNTRY_CODE (.+) HT_SAW=$1
RewriteEngine On
RewriteCond %{ENV:GEOIP_COUNTRY_CODE} (.+)
RewriteRule ^ - [E=RW_SAW:%1]
<If "env('GEOIP_COUNTRY_CODE') == 'FR'">
    Header always set X-If "fr"
</If>
Header always set X-HT "%{HT_SAW}e"
Header always set X-RW "%{RW_SAW}e"
"""


def levels_server(w4a):
    paths = dbs(w4a, country="country", city="city")
    docs = os.path.join(w4a.root, "levels")
    os.makedirs(os.path.join(docs, "sub"))
    for rel, text in (("index.html", "levels\n"), ("sub/index.html", "sub\n"),
                      (".htaccess", LEVELS_HTACCESS)):
        with open(os.path.join(docs, rel), "w") as f:
            f.write(text)
    httpd = w4a.httpd(f"""
{geo_conf(paths)}
W4AGeoIPTrustedProxy 127.0.0.1
SetEnvIf GEOIP_COUNTRY_CODE (.+) SRV_SAW=$1
RewriteEngine On
RewriteCond %{{ENV:GEOIP_COUNTRY_CODE}} (.+)
RewriteRule ^ - [E=SRV_RW_SAW:%1]
{echo_headers("SRV_SAW", "SRV_RW_SAW", "GEOIP_COUNTRY_CODE",
              "MM_COUNTRY_CODE", "GEOIP_CONTINENT", "GEOIP_CITY",
              "GEOIP_NET", "BTW_FORBIDDEN_GEOIP")}
<VirtualHost *:*>
    ServerName default.example
    DocumentRoot {w4a.root}/htdocs
</VirtualHost>
<VirtualHost *:*>
    ServerName geo.example
    DocumentRoot {docs}
    W4AGeoIPEnv GEOIP_CONTINENT continent/code
    W4AGeoIPEnv GEOIP_CITY city/names/en city
    W4AGeoIPNetworkEnv GEOIP_NET
    RewriteEngine On
    RewriteOptions Inherit
    SetEnvIf GEOIP_CITY (.+) VH_SAW=$1
    Header always set X-VH "%{{VH_SAW}}e"
    <Directory {docs}>
        AllowOverride All
        SetEnvIf GEOIP_CONTINENT (.+) DIR_SAW=$1
        Header always set X-DIR "%{{DIR_SAW}}e"
    </Directory>
</VirtualHost>
{STATUS}
""", ours=OURS)
    return httpd.start()


def test_geoip_variables_seen_at_server_vhost_directory_and_htaccess(w4a):
    httpd = levels_server(w4a)
    for cc, ip, net in ((FR, IP[FR], NET[FR]), (UA, IP6[UA], NET6[UA])):
        st, h, b = httpd.get("geo.example", "/", xff(ip))
        assert (st, b) == (200, b"levels\n")
        assert hdr(h, "SRV_SAW") == cc
        assert hdr(h, "SRV_RW_SAW") == cc
        assert hdr(h, "VH") == CITY[cc]
        assert hdr(h, "DIR") == CONTINENT[cc]
        assert hdr(h, "HT") == cc
        assert hdr(h, "RW") == cc
        assert h.get("x-if") == ("fr" if cc == FR else None)
        assert hdr(h, "GEOIP_COUNTRY_CODE") == cc
        assert hdr(h, "MM_COUNTRY_CODE") == cc
        assert hdr(h, "GEOIP_CITY") == CITY[cc]
        assert hdr(h, "GEOIP_NET") == net
        assert hdr(h, "BTW_FORBIDDEN_GEOIP") == "0"
    # the other virtual host has the main server's variables only
    st, h, b = httpd.get("default.example", "/", xff(IP[FR]))
    assert st == 200 and hdr(h, "SRV_SAW") == FR
    assert hdr(h, "GEOIP_CITY") == "(null)"
    assert hdr(h, "GEOIP_NET") == "(null)"


def test_geoip_variables_survive_internal_redirects_and_subrequests(w4a):
    """DirectoryIndex (a sub-request and an internal redirect) and a
    front-controller rewrite: the served request still has our variables,
    not only REDIRECT_GEOIP_COUNTRY_CODE."""
    httpd = levels_server(w4a)
    with open(os.path.join(w4a.root, "levels/sub/.htaccess"), "w") as f:
        f.write("RewriteEngine On\nRewriteCond %{REQUEST_FILENAME} !-f\n"
                "RewriteRule ^ index.html [L]\n"
                "SetEnvIf GEOIP_COUNTRY_CODE (.+) HT2_SAW=$1\n"
                'Header always set X-HT2 "%{HT2_SAW}e"\n')
    st, h, b = httpd.get("geo.example", "/sub/no/such/page", xff(IP[DE]))
    assert (st, b) == (200, b"sub\n")
    assert hdr(h, "GEOIP_COUNTRY_CODE") == DE
    assert hdr(h, "HT2") == DE
    assert hdr(h, "GEOIP_CITY") == CITY[DE]
    st, h, b = httpd.get("geo.example", "/sub/", xff(IP[US]))
    assert (st, b) == (200, b"sub\n")
    assert hdr(h, "GEOIP_COUNTRY_CODE") == US


def test_geoip_city_asn_and_ipv4_databases_with_any_data_path(w4a):
    paths = dbs(w4a, country=("country", 4), city="city", asn="asn")
    httpd = w4a.httpd(f"""
{geo_conf(paths)}
W4AGeoIPTrustedProxy 127.0.0.1
W4AGeoIPEnv GEOIP_CITY city/names/en city
W4AGeoIPEnv GEOIP_REGION subdivisions/0/iso_code city
W4AGeoIPEnv GEOIP_LAT location/latitude city
W4AGeoIPEnv GEOIP_RADIUS location/accuracy_radius city
W4AGeoIPEnv GEOIP_EU country/is_in_european_union city
W4AGeoIPEnv GEOIP_CITY_CC country/iso_code city
W4AGeoIPEnv GEOIP_ASN autonomous_system_number asn
W4AGeoIPEnv GEOIP_ASORG autonomous_system_organization asn
W4AGeoIPEnv GEOIP_MAP country city
W4AGeoIPEnv GEOIP_NONE no/such/path city
W4AGeoIPNetworkEnv GEOIP_NET4 country
W4AGeoIPNetworkEnv GEOIP_NET6 city
{echo_headers("GEOIP_COUNTRY_CODE", "GEOIP_CITY", "GEOIP_REGION",
              "GEOIP_LAT", "GEOIP_RADIUS", "GEOIP_EU", "GEOIP_CITY_CC",
              "GEOIP_ASN", "GEOIP_ASORG", "GEOIP_MAP", "GEOIP_NONE",
              "GEOIP_NET4", "GEOIP_NET6")}
{STATUS}
""", ours=OURS).start()
    st, h, b = httpd.get("localhost", "/", xff(IP[FR]))
    assert st == 200
    got = {k[2:].upper(): v for k, v in h.items() if k.startswith("x-")}
    assert got == {
        "GEOIP_COUNTRY_CODE": FR, "GEOIP_CITY": CITY[FR],
        "GEOIP_REGION": "SFR", "GEOIP_LAT": "48.500000",
        "GEOIP_RADIUS": "50", "GEOIP_EU": "1", "GEOIP_CITY_CC": FR,
        "GEOIP_ASN": str(ASN[FR]), "GEOIP_ASORG": "AS of FR",
        "GEOIP_MAP": "(null)", "GEOIP_NONE": "(null)",
        "GEOIP_NET4": NET[FR], "GEOIP_NET6": NET[FR]}
    # IPv6 client: the IPv4-only database has nothing (a miss, not an
    # error), the IPv6 ones answer
    st, h, b = httpd.get("localhost", "/", xff(IP6[BR]))
    assert hdr(h, "GEOIP_COUNTRY_CODE") == "(null)"
    assert hdr(h, "GEOIP_CITY") == CITY[BR]
    assert hdr(h, "GEOIP_ASN") == str(ASN[BR])
    assert hdr(h, "GEOIP_NET6") == NET6[BR]
    # one lookup per request per database, however many variables (the
    # status request is the third)
    s = {d["name"]: d for d in status(httpd)["databases"]}
    assert (s["country"]["lookups"], s["city"]["lookups"],
            s["asn"]["lookups"]) == (3, 3, 3)
    assert (s["country"]["misses"], s["country"]["errors"]) == (1, 0)
    assert s["country"]["this_process"]["ip_version"] == 4
    assert s["city"]["this_process"]["ip_version"] == 6
    assert s["city"]["this_process"]["type"] == "W4A-Test-City"


# --- IPv4, IPv6 and IPv4-mapped clients -------------------------------------

def test_geoip_ipv4_mapped_clients_find_ipv4_networks(w4a):
    paths = dbs(w4a, v6="country", v4=("country", 4))
    httpd = w4a.httpd(f"""
{geo_conf(paths)}
W4AGeoIPTrustedProxy 127.0.0.1
W4AGeoIPEnv CC4 country/iso_code v4
W4AGeoIPNetworkEnv NET4 v4
W4AGeoIPNetworkEnv NET6 v6
{echo_headers("GEOIP_COUNTRY_CODE", "CC4", "NET4", "NET6")}
""", ours=OURS).start()
    st, h, b = httpd.get("localhost", "/", xff("::ffff:" + IP[UA]))
    assert st == 200
    assert (hdr(h, "GEOIP_COUNTRY_CODE"), hdr(h, "CC4")) == (UA, UA)
    assert (hdr(h, "NET4"), hdr(h, "NET6")) == (NET[UA], NET[UA])


def test_geoip_direct_clients_over_ipv4_ipv6_and_mapped_listeners(w4a):
    """No proxy: the peer address itself, on 127.0.0.1, on [::1], and on
    a [::] listener that takes IPv4 as ::ffff:127.0.0.1."""
    paths = dbs(w4a, v6="country", v4=("country", 4))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port6 = s.getsockname()[1]
    httpd = w4a.httpd(f"""
Listen [::]:{port6}
{geo_conf(paths)}
W4AGeoIPEnv CC4 country/iso_code v4
{echo_headers("GEOIP_COUNTRY_CODE", "CC4", "BTW_FORBIDDEN_GEOIP")}
""", ours=OURS).start()
    st, h, b = httpd.get("localhost", "/", xff(IP[FR]))  # not trusted: ignored
    assert (hdr(h, "GEOIP_COUNTRY_CODE"), hdr(h, "CC4")) == \
        (LOOPBACK_COUNTRY, LOOPBACK_COUNTRY)

    def get_on(family, addr, extra=""):
        with socket.socket(family) as c:
            c.settimeout(5)
            c.connect((addr, port6))
            c.sendall(("GET / HTTP/1.1\r\nHost: localhost\r\n%s"
                       "Connection: close\r\n\r\n" % extra).encode())
            data = b""
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
        head = data.split(b"\r\n\r\n")[0].decode()
        return dict((k.lower(), v.strip()) for k, _, v in
                    (ln.partition(":") for ln in head.split("\r\n")[1:]))
    h = get_on(socket.AF_INET6, "::1")
    assert (hdr(h, "GEOIP_COUNTRY_CODE"), hdr(h, "CC4")) == \
        (LOOPBACK6_COUNTRY, "(null)")
    # ::1 is not a trusted proxy here: its X-Forwarded-For is ignored
    h = get_on(socket.AF_INET6, "::1", "X-Forwarded-For: %s\r\n" % IP[UA])
    assert hdr(h, "GEOIP_COUNTRY_CODE") == LOOPBACK6_COUNTRY
    h = get_on(socket.AF_INET, "127.0.0.1")     # ::ffff:127.0.0.1
    assert (hdr(h, "GEOIP_COUNTRY_CODE"), hdr(h, "CC4")) == \
        (LOOPBACK_COUNTRY, LOOPBACK_COUNTRY)
    assert hdr(h, "BTW_FORBIDDEN_GEOIP") == "0"


def test_geoip_trusted_ipv6_proxy_over_an_ipv6_connection(w4a):
    paths = dbs(w4a, country="country")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port6 = s.getsockname()[1]
    w4a.httpd(f"""
Listen [::1]:{port6}
{geo_conf(paths)}
W4AGeoIPTrustedProxy ::1
{echo_headers("GEOIP_COUNTRY_CODE")}
""", ours=OURS).start()
    for fwd, want in ((IP6[BR], BR), (IP[FR], FR), ("::ffff:" + IP[UA], UA),
                      ("%s, ::1" % IP[DE], DE)):
        c = http.client.HTTPConnection("::1", port6, timeout=5)
        c.request("GET", "/", headers={"X-Forwarded-For": fwd})
        resp = c.getresponse()
        resp.read()
        assert resp.status == 200
        assert resp.getheader("X-GEOIP_COUNTRY_CODE") == want, fwd
        c.close()


def test_geoip_engine_off_in_a_vhost_no_variables_and_no_spoofing(w4a):
    paths = dbs(w4a, country="country")
    httpd = w4a.httpd(f"""
{geo_conf(paths)}
W4AGeoIPTrustedProxy 127.0.0.1
SetEnvIf GEOIP_COUNTRY_CODE (.+) SAW=$1
{echo_headers("GEOIP_COUNTRY_CODE", "BTW_FORBIDDEN_GEOIP", "SAW")}
<VirtualHost *:*>
    ServerName on.example
</VirtualHost>
<VirtualHost *:*>
    ServerName off.example
    W4AGeoIPEngine off
</VirtualHost>
""", ours=OURS).start()
    st, h, b = httpd.get("on.example", "/", xff(IP[FR]))
    assert (hdr(h, "GEOIP_COUNTRY_CODE"), hdr(h, "SAW")) == (FR, FR)
    st, h, b = httpd.get("off.example", "/", dict(xff(IP[FR]),
                                                  GEOIP_COUNTRY_CODE="UA"))
    assert st == 200
    assert (hdr(h, "GEOIP_COUNTRY_CODE"), hdr(h, "SAW"),
            hdr(h, "BTW_FORBIDDEN_GEOIP")) == ("(null)", "(null)", "(null)")


# --- client address: trusted and untrusted proxies, mod_remoteip -------------

def proxy_server(w4a, body, modules=(), log_level="info"):
    paths = dbs(w4a, country="country")
    return w4a.httpd(f"""
{geo_conf(paths)}
W4AGeoIPNetworkEnv GEOIP_NET
{body}
{echo_headers("GEOIP_COUNTRY_CODE", "GEOIP_NET")}
""", ours=OURS, modules=modules, log_level=log_level).start()


def cc_of(httpd, headers):
    st, h, b = httpd.get("localhost", "/", headers)
    assert st == 200
    return hdr(h, "GEOIP_COUNTRY_CODE")


def test_geoip_trusted_proxies_walked_right_to_left(w4a):
    httpd = proxy_server(w4a, f"W4AGeoIPTrustedProxy 127.0.0.1 {PROXY_NET} "
                              "2001:db8:ff::/48")
    # the client behind our proxy
    assert cc_of(httpd, xff(IP[FR])) == FR
    # behind two trusted proxies (an edge and an internal balancer)
    assert cc_of(httpd, xff("%s, %s" % (IP[US], PROXY_IP))) == US
    assert cc_of(httpd, xff("%s,2001:db8:ff::7 , %s" % (IP6[UA], PROXY_IP))) \
        == UA
    # the first entry is whatever the client wrote: never believed
    assert cc_of(httpd, xff("%s, %s" % (IP[FR], IP[BR]))) == BR
    assert cc_of(httpd, xff("%s, %s, %s" % (IP[FR], IP[BR], PROXY_IP))) == BR
    # two X-Forwarded-For headers are one list
    st, h, b = httpd.raw(("GET / HTTP/1.1\r\nHost: localhost\r\n"
                          "X-Forwarded-For: %s\r\nX-Forwarded-For: %s\r\n"
                          "Connection: close\r\n\r\n" % (IP[FR], IP[DE]))
                         .encode())
    assert hdr(h, "GEOIP_COUNTRY_CODE") == DE
    # no header: the peer itself
    assert cc_of(httpd, {}) == LOOPBACK_COUNTRY


def test_geoip_malformed_forwarded_entry_stops_at_last_trusted_hop(w4a):
    httpd = proxy_server(w4a, f"W4AGeoIPTrustedProxy 127.0.0.1 {PROXY_NET}",
                         log_level="info w4a_geoip:debug")
    # "garbage" stops the walk at PROXY_IP (no record): not FR
    for bad in ("garbage", "", "192.0.2.10:80", "[2001:db8:1::10]",
                "example.com", "1.2.3", "192.0.2.300"):
        st, h, b = httpd.get("localhost", "/", xff("%s, %s, %s"
                                                 % (IP[FR], bad, PROXY_IP)))
        assert st == 200, bad
        assert hdr(h, "GEOIP_COUNTRY_CODE") == "(null)", bad
        assert hdr(h, "GEOIP_NET") == "(null)", bad
    assert httpd.wait_log(r"W4A00301: X-Forwarded-For entry 'garbage' is not "
                          r"an address; the client is the last trusted hop "
                          + re.escape(PROXY_IP))
    # malformed right behind the peer: the peer (loopback)
    assert cc_of(httpd, xff("%s, nonsense" % IP[FR])) == LOOPBACK_COUNTRY
    # and the server keeps serving
    assert cc_of(httpd, xff(IP[UA])) == UA


def test_geoip_untrusted_peer_forwarded_header_ignored(w4a):
    # 127.0.0.1 is not a trusted proxy: its X-Forwarded-For is not believed
    httpd = proxy_server(w4a, f"W4AGeoIPTrustedProxy {PROXY_NET} ::1")
    assert cc_of(httpd, xff(IP[FR])) == LOOPBACK_COUNTRY
    st, h, b = httpd.get("localhost", "/", xff(IP[FR]))
    assert hdr(h, "GEOIP_NET") == "127.0.0.0/8"
    # and without any trusted proxy
    httpd2 = proxy_server(w4a, "")
    assert cc_of(httpd2, xff(IP[FR])) == LOOPBACK_COUNTRY


def test_geoip_uses_the_address_mod_remoteip_established(w4a):
    httpd = proxy_server(w4a, """RemoteIPHeader X-Real-Client
RemoteIPInternalProxy 127.0.0.1
""", modules=["remoteip"])
    assert cc_of(httpd, {"X-Real-Client": IP[US]}) == US
    assert cc_of(httpd, {"X-Real-Client": IP6[FR]}) == FR
    # mod_remoteip does not trust our X-Forwarded-For (not its header)
    assert cc_of(httpd, xff(IP[FR])) == LOOPBACK_COUNTRY
    # mod_remoteip with X-Forwarded-For and proxies of its own
    httpd2 = proxy_server(w4a, f"""RemoteIPHeader X-Forwarded-For
RemoteIPInternalProxy 127.0.0.1 {PROXY_NET}
""", modules=["remoteip"])
    assert cc_of(httpd2, xff("%s, %s" % (IP[BR], PROXY_IP))) == BR
    assert cc_of(httpd2, xff("%s, %s" % (IP[FR], IP[UA]))) == UA


# --- the supervisor exemption ------------------------------------------------

def test_geoip_supervisor_networks_inline_ipv4_ipv6_and_custom_name(w4a):
    paths = dbs(w4a, country="country")
    httpd = w4a.httpd(f"""
{geo_conf(paths)}
W4AGeoIPTrustedProxy 127.0.0.1
W4AGeoIPSupervisor 198.51.100.0/28 2001:db8:2::/64
W4AGeoIPSupervisorEnv W4A_SUPERVISOR
{echo_headers("W4A_SUPERVISOR", "BTW_FORBIDDEN_GEOIP", "GEOIP_COUNTRY_CODE")}
""", ours=OURS).start()
    for ip, want, cc in (("198.51.100.5", "1", US), ("198.51.100.20", "0", US),
                         ("2001:db8:2::5", "1", US),
                         ("2001:db8:2:1::5", "0", US),
                         ("::ffff:198.51.100.5", "1", US), (IP[FR], "0", FR)):
        st, h, b = httpd.get("localhost", "/", dict(xff(ip), W4A_SUPERVISOR="1"))
        assert hdr(h, "W4A_SUPERVISOR") == want, ip
        assert hdr(h, "BTW_FORBIDDEN_GEOIP") == "(null)"
        assert hdr(h, "GEOIP_COUNTRY_CODE") == cc, ip


def test_geoip_supervisor_file_reloaded_and_broken_file_kept_out(w4a):
    paths = dbs(w4a, country="country")
    sup = os.path.join(w4a.root, "supervisors.txt")
    with open(sup, "w") as f:
        f.write("# monitoring\n%s/32  # probe 1\n2001:db8:1::/64\n"
                % IP[US])
    httpd = w4a.httpd(f"""
{geo_conf(paths)}
W4AGeoIPTrustedProxy 127.0.0.1
W4AGeoIPSupervisorFile {sup}
W4AGeoIPCheckInterval 1
{echo_headers("BTW_FORBIDDEN_GEOIP")}
{STATUS}
""", ours=OURS).start()

    def exempt(ip):
        st, h, b = httpd.get("localhost", "/", xff(ip))
        assert st == 200
        return hdr(h, "BTW_FORBIDDEN_GEOIP")
    assert (exempt(IP[US]), exempt(IP6[FR]), exempt(IP[FR])) == ("1", "1", "0")
    # at start-up: every child has the parent's list
    assert status(httpd)["supervisors"]["this_process"]["file_networks"] == 2
    # a new probe: picked up without a restart (in every child)
    tmp = sup + ".new"
    with open(tmp, "w") as f:
        f.write("%s\n%s\n" % (IP[US], IP[FR]))
    os.rename(tmp, sup)
    assert wait_for(lambda: all(exempt(IP[FR]) == "1" for _ in range(8)))
    assert httpd.wait_log(r"W4A00322: supervisor file .* reloaded: 2 networks")
    # a broken file: refused, the list in use stays
    with open(sup, "w") as f:
        f.write("%s\n10.0.0.0/33\n" % IP[UA])
    assert httpd.wait_log(r"W4A00321: supervisor file .* refused: line 2: "
                          r"10.0.0.0/33: the prefix length must be 1 to 32; "
                          r"the list in use stays", 10)
    httpd.expect_error(r"W4A00321")
    assert (exempt(IP[FR]), exempt(IP[UA])) == ("1", "0")
    # node-wide: the new file once, the broken one once, whichever child
    # answers (the error text is the answering child's own)
    sup = status(httpd)["supervisors"]
    assert (sup["file_reloads"], sup["file_refused"]) == (1, 1), sup


def wait_for(pred, timeout=15.0):
    import time
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.2)
    return False


def test_geoip_keepalive_connection_reuses_result_per_client_only(w4a):
    """Requests on one connection from the same client reuse the last
    result; another client, another virtual host or another database
    version on the same connection are looked up again."""
    paths = dbs(w4a, country="country")
    httpd = w4a.httpd(f"""
{geo_conf(paths)}
W4AGeoIPTrustedProxy 127.0.0.1
W4AGeoIPNetworkEnv GEOIP_NET
{echo_headers("GEOIP_COUNTRY_CODE", "GEOIP_NET", "GEOIP_CONTINENT")}
KeepAlive On
<VirtualHost *:*>
    ServerName a.example
</VirtualHost>
<VirtualHost *:*>
    ServerName b.example
    W4AGeoIPEnv GEOIP_CONTINENT continent/code
</VirtualHost>
{STATUS}
""", ours=OURS).start()
    conn = http.client.HTTPConnection("127.0.0.1", httpd.port, timeout=5)

    def get(host, ip):
        conn.request("GET", "/", headers={"Host": host,
                                          "X-Forwarded-For": ip})
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        return (r.getheader("X-GEOIP_COUNTRY_CODE"),
                r.getheader("X-GEOIP_NET"), r.getheader("X-GEOIP_CONTINENT"))
    seq = [("a.example", FR), ("a.example", FR), ("a.example", FR),
           ("a.example", UA), ("a.example", FR), ("b.example", FR),
           ("b.example", BR), ("a.example", BR), ("a.example", BR)]
    for host, cc in seq:
        want = (cc, NET[cc], CONTINENT[cc] if host == "b.example"
                else "(null)")
        assert get(host, IP[cc]) == want, (host, cc)
    conn.close()
    # 9 requests, 6 lookups (the 2nd and 3rd FR and the last BR reused),
    # + the status request itself
    d = status(httpd)["databases"][0]
    assert d["lookups"] == 6 + 1


# --- status and configuration errors -----------------------------------------

def test_geoip_status_json(w4a):
    paths = dbs(w4a, country="country")
    httpd = w4a.httpd(f"""
{geo_conf(paths)}
W4AGeoIPTrustedProxy 127.0.0.1
W4AGeoIPSupervisor 192.0.2.0/24
{STATUS}
""", ours=OURS).start()
    for ip in (IP[FR], "198.18.0.1", IP6[DE]):
        httpd.get("localhost", "/", xff(ip))
    s = status(httpd)
    d = s["databases"][0]
    assert d["name"] == "country" and d["path"] == paths["country"]
    # node-wide (shared memory): the status request itself is looked up
    assert (d["lookups"], d["misses"], d["errors"]) == (4, 1, 0)
    assert (d["reloads"], d["refused"]) == (0, 0)
    assert d["last_reload"] > 1600000000
    # the answering process's own, labelled with its pid
    me = d["this_process"]
    assert me["pid"] == s["this_process"]["pid"] > 0
    assert me["loaded"] is True and me["last_error"] is None
    assert me["type"] == "W4A-Test-Country" and me["ip_version"] == 6
    assert me["build_epoch"] > 1600000000
    assert me["loaded_at"] > 1600000000 and me["loaded_at_http"]
    assert me["copy"].startswith(os.path.join(httpd.root, "w4a-geoip/"))
    assert not me["copy"].startswith(paths["country"])
    assert s["supervisors"] == {
        "variable": "BTW_FORBIDDEN_GEOIP", "inline": 1, "file": None,
        "file_reloads": 0, "file_refused": 0,
        "this_process": {"pid": me["pid"], "file_networks": 0,
                         "file_loaded": 0, "file_error": None}}
    st, h, b = httpd.get("localhost", "/w4a-geoip-status", method="POST")
    assert st == 405


def config_check(w4a, body):
    h = w4a.httpd(body, ours=OURS)
    r = subprocess.run([HTTPD, "-t", "-f", h.conf], capture_output=True,
                       text=True)
    return r.returncode, r.stdout + r.stderr


def test_geoip_bad_directives_refused_at_config_time(w4a):
    db = dbs(w4a, country="country")["country"]
    cases = [
        ("W4AGeoIPTrustedProxy 10.0.0.0/40",
         r"W4AGeoIPTrustedProxy: 10.0.0.0/40: the prefix length must be 1 to 32"),
        ("W4AGeoIPTrustedProxy proxy.example",
         r"proxy.example: not an IPv4 or IPv6 address"),
        ("W4AGeoIPTrustedProxy 10.0.0.1/8",
         r"10.0.0.1/8: not a network"),
        ("W4AGeoIPSupervisor 2001:db8::/129",
         r"the prefix length must be 1 to 128"),
        ("W4AGeoIPEnv 1BAD country/iso_code",
         r"W4AGeoIPEnv: '1BAD' is not a variable name"),
        ("W4AGeoIPEnv GOOD country//iso_code",
         r"'country//iso_code' is not a data path"),
        ("W4AGeoIPCheckInterval soon",
         r"W4AGeoIPCheckInterval: expected seconds"),
        ("W4AGeoIPSupervisorEnv BAD-NAME",
         r"W4AGeoIPSupervisorEnv: expected a variable name"),
        ("W4AGeoIPDatabase country %s" % db,
         r"W4AGeoIPDatabase: country is declared twice"),
        ("<VirtualHost *:*>\nW4AGeoIPDatabase other %s\n</VirtualHost>" % db,
         r"W4AGeoIPDatabase cannot occur within <VirtualHost> section"),
        ("W4AGeoIPEnv X city/names/en nosuchdb",
         r"W4A00340: W4AGeoIPEnv: X: no W4AGeoIPDatabase named nosuchdb"),
        ("W4AGeoIPEnv BTW_FORBIDDEN_GEOIP country/iso_code",
         r"W4A00340: .*is the supervisor variable"),
    ]
    for line, err in cases:
        rc, out = config_check(w4a, "W4AGeoIPDatabase country %s\n%s\n"
                               % (db, line))
        assert rc != 0, line
        assert re.search(err, out), (line, out)
    rc, out = config_check(w4a, "W4AGeoIPDatabase country %s\n" % db)
    assert rc == 0, out


def test_geoip_directives_refused_in_htaccess_server_keeps_serving(w4a):
    """Our directives are server configuration only: in a customer's
    .htaccess they are a 500 with httpd's "not allowed here" line, and
    the other pages (and hostings) keep being served."""
    httpd = hosting_server(w4a, "W4AGeoIPEnv GEOIP_CITY city/names/en\n")
    w4a.tree.write(A, "example.com", "ok/index.html", "fine\n")
    w4a.tree.write(A, "example.com", "ok/.htaccess", "")
    w4a.tree.chown_tree(w4a.tree.home(A), pwd.getpwnam(A).pw_uid)
    httpd.expect_error(r"W4AGeoIPEnv not allowed here")
    st, h, b = httpd.get("example.com", "/", xff(IP[FR]))
    assert st == 500
    assert httpd.wait_log(r"\.htaccess: W4AGeoIPEnv not allowed here")
    w4a.tree.write(A, "example.com", ".htaccess", "")
    st, h, b = httpd.get("example.com", "/ok/", xff(IP[FR]))
    assert (st, b) == (200, b"fine\n")
    for line in ("W4AGeoIPDatabase x /etc/passwd",
                 "W4AGeoIPSupervisor 0.0.0.0/1",
                 "W4AGeoIPTrustedProxy 0.0.0.0/1"):
        w4a.tree.write(A, "example.com", "ok/.htaccess", line + "\n")
        httpd.expect_error(line.split()[0] + " not allowed here")
        st, h, b = httpd.get("example.com", "/ok/", xff(IP[FR]))
        assert st == 500, line
    w4a.tree.write(A, "example.com", "ok/.htaccess", "")
    st, h, b = httpd.get("example.com", "/ok/", xff(IP[FR]))
    assert (st, b) == (200, b"fine\n")


# --- request headers standing for our variables (issue 12, vector 9) --------

B = "w4a100011"

# A customer's rules that read our names the ways httpd allows: by name
# (a header of that name wins over the environment), by a regex over the
# header names, and as HTTP_* (what CGI and PHP see, here through SSI).
FORGE_HTACCESS = r"""Options +IncludesNOEXEC
AddType text/html .shtml
AddOutputFilter INCLUDES .shtml
SetEnvIf GEOIP_COUNTRY_CODE FR BY_NAME=1
SetEnvIfNoCase ^geoip.country.code$ FR BY_REGEX=1
SetEnvIfNoCase ^btw.forbidden.geoip$ 1 EXEMPT_REGEX=1
SetEnvIfNoCase ^mm.city$ . MM_REGEX=1
SetEnvIfNoCase ^visitor.asn$ . ASN_REGEX=1
Header always set X-By-Name "%{BY_NAME}e"
Header always set X-By-Regex "%{BY_REGEX}e"
Header always set X-Exempt-Regex "%{EXEMPT_REGEX}e"
Header always set X-MM-Regex "%{MM_REGEX}e"
Header always set X-Asn-Regex "%{ASN_REGEX}e"
Header always set X-CC "%{GEOIP_COUNTRY_CODE}e"
Header always set X-Ex "%{BTW_FORBIDDEN_GEOIP}e"
"""
SSI_PAGE = ('<!--#echo var="HTTP_GEOIP_COUNTRY_CODE" -->|'
            '<!--#echo var="HTTP_BTW_FORBIDDEN_GEOIP" -->|'
            '<!--#echo var="HTTP_MM_CITY" -->|'
            '<!--#echo var="HTTP_VISITOR_ASN" -->|'
            '<!--#echo var="HTTP_X_KEEP" -->\n')
NONE = "(null)"
FORGED = {"Geoip-Country-Code": "FR", "geoip.country.code": "FR",
          "GEOIP_COUNTRY_CODE": "FR", "Btw-Forbidden-Geoip": "1",
          "MM-City": "Paris", "Visitor-Asn": "1", "X-Keep": "kept"}


def forge_server(w4a, geo, log_level="info w4a_geoip:debug"):
    """Hostings A (the customer's rules) and B, the module configured by
    `geo` (database lines or nothing)."""
    tree = w4a.tree
    tree.site(A, "example.com", {"index.html": "welcome\n",
                                 ".htaccess": FORGE_HTACCESS,
                                 "p.shtml": SSI_PAGE})
    tree.site(B, "b.example", {"index.html": "b site\n"})
    rc, out, index = tree.compile_map([
        tree.line("example.com", A, "example.com"),
        tree.line("b.example", B, "b.example")])
    assert rc == 0, out
    return w4a.httpd(f"""
W4AVhostEngine on
W4AVhostMap {index}
W4AVhostDocRootBase {tree.base}
{hostings_dir_block(tree.base)}
{geo}
W4AGeoIPTrustedProxy 127.0.0.1
{STATUS}
""", ours=OURS, modules=["include"], log_level=log_level)


def raw_headers(pairs):
    """A request with these headers, in this order (a dict cannot hold
    two of one name)."""
    return "".join("%s: %s\r\n" % kv for kv in pairs)


def assert_not_forged(h, cc, ex):
    assert (h["x-by-name"], h["x-by-regex"], h["x-exempt-regex"],
            h["x-mm-regex"], h["x-asn-regex"]) == (NONE,) * 5, h
    assert (h["x-cc"], h["x-ex"]) == (cc, ex)


def test_geoip_headers_spelled_like_our_variables_removed_and_counted(w4a):
    paths = dbs(w4a, country="country", asn="asn")
    httpd = forge_server(w4a, geo_conf(paths) + "W4AGeoIPEnv VISITOR_ASN "
                         "autonomous_system_number asn\n").start()
    before = status(httpd).get("headers_removed", 0)
    # a US visitor claiming France and the exemption, in every spelling
    st, h, b = httpd.get("example.com", "/", dict(xff(IP[US]), **FORGED))
    assert (st, b) == (200, b"welcome\n")
    assert_not_forged(h, US, "0")
    assert httpd.wait_log(r"W4A00302: request header Geoip-Country-Code "
                          r"removed: it stands for GEOIP_COUNTRY_CODE")
    assert httpd.wait_log(r"W4A00302: request header MM-City removed: it "
                          r"stands for MM_\*")
    assert httpd.wait_log(r"W4A00302: request header Visitor-Asn removed: "
                          r"it stands for VISITOR_ASN")
    # six headers of ours (X-Keep is not), counted node-wide
    assert status(httpd)["headers_removed"] - before == 6
    # what CGI and PHP would see (HTTP_*): nothing of ours, the rest intact
    st, h, b = httpd.get("example.com", "/p.shtml",
                         dict(xff(IP[US]), **FORGED))
    assert (st, b) == (200, b"(none)|(none)|(none)|(none)|kept\n")
    # another hosting is served meanwhile
    assert httpd.get("b.example", "/", xff(IP[FR]))[:3:2] == (200, b"b site\n")


def test_geoip_repeated_and_mixed_case_headers_all_removed(w4a):
    paths = dbs(w4a, country="country")
    httpd = forge_server(w4a, geo_conf(paths)).start()
    req = ("GET / HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: %s\r\n"
           "%sConnection: close\r\n\r\n" % (IP[UA], raw_headers([
               ("geoip-country-code", "FR"), ("X-Keep", "1"),
               ("GEOIP-COUNTRY-CODE", "FR"), ("Geoip_Country.Code", "FR"),
               ("btw_forbidden_geoip", "1"), ("BTW-FORBIDDEN-GEOIP", "1")])))
    st, h, b = httpd.raw(req.encode())
    assert st == 200
    assert_not_forged(h, UA, "0")
    assert httpd.wait_log(r"W4A00302: request header Geoip_Country\.Code "
                          r"removed")
    assert httpd.get("b.example", "/")[0] == 200


@pytest.mark.parametrize("state", ["no-database-line", "missing", "corrupt"])
def test_geoip_headers_removed_without_a_usable_database(w4a, state):
    """No database (none declared, the file missing, the file corrupt):
    a customer's SetEnvIf GEOIP_COUNTRY_CODE FR must not match what the
    client sent."""
    path = os.path.join(w4a.root, "country.mmdb")
    if state == "corrupt":
        with open(path, "wb") as f:
            f.write(b"\xab\xcd\xefMaxMind.com" + b"\0" * 64)
    geo = "" if state == "no-database-line" else \
        "W4AGeoIPDatabase country %s\n" % path
    httpd = forge_server(w4a, geo)
    if state == "missing":
        httpd.expect_error(r"W4A00313: database country: .* is missing")
    if state == "corrupt":
        httpd.expect_error(r"W4A00314: database country: .* refused")
    httpd.start()
    st, h, b = httpd.get("example.com", "/", dict(xff(IP[US]), **FORGED))
    assert (st, b) == (200, b"welcome\n")
    # VISITOR_ASN is not a variable of this server: its header is left,
    # and the customer's rule matches it (the rules do read headers)
    assert h["x-asn-regex"] == "1"
    h["x-asn-regex"] = NONE
    # no variable at all; with a database line the exemption variable is
    # still set ("0"), without any configuration nothing is
    assert_not_forged(h, NONE, NONE if state == "no-database-line" else "0")
    assert httpd.wait_log(r"W4A00302: request header Geoip-Country-Code "
                          r"removed")
    st, h, b = httpd.get("example.com", "/p.shtml", dict(xff(IP[US]),
                                                         **FORGED))
    assert (st, b) == (200, b"(none)|(none)|(none)|1|kept\n")
    assert status(httpd)["headers_removed"] == 10
    assert httpd.get("b.example", "/")[0] == 200


def test_geoip_loaded_but_not_configured_sets_nothing(w4a):
    """The docs: nothing happens without a database.  Today's slip:
    BTW_FORBIDDEN_GEOIP=0 on every request of a server with no GeoIP
    configuration."""
    httpd = w4a.httpd(f"""
{echo_headers("GEOIP_COUNTRY_CODE", "BTW_FORBIDDEN_GEOIP")}
<VirtualHost *:*>
    ServerName sup.example
</VirtualHost>
""", ours=OURS).start()
    st, h, b = httpd.get("localhost", "/")
    assert st == 200
    assert (hdr(h, "GEOIP_COUNTRY_CODE"), hdr(h, "BTW_FORBIDDEN_GEOIP")) \
        == (NONE, NONE)
    # supervisors alone are a configuration: the exemption is set
    httpd2 = w4a.httpd(f"""
W4AGeoIPSupervisor 127.0.0.1
{echo_headers("GEOIP_COUNTRY_CODE", "BTW_FORBIDDEN_GEOIP")}
""", ours=OURS).start()
    st, h, b = httpd2.get("localhost", "/")
    assert (st, hdr(h, "BTW_FORBIDDEN_GEOIP")) == (200, "1")
    assert hdr(h, "GEOIP_COUNTRY_CODE") == NONE
