"""Test MaxMind databases for mod_w4a_geoip, written by mkmmdb.pl
(Debian's libmaxmind-db-writer-perl), and small helpers of its tests."""
import json
import os
import subprocess

from w4a_harness import REPO

MKMMDB = os.path.join(REPO, "t/integration/mkmmdb.pl")
GEOIP_SO = os.path.join(REPO, "modules/geoip/.libs/mod_w4a_geoip.so")
OURS = [("w4a_geoip_module", GEOIP_SO)]

# Client addresses of each country (documentation and shared ranges, never
# routed), IPv4 and IPv6.
FR, US, UA, BR, DE = "FR", "US", "UA", "BR", "DE"
IP = {
    FR: "192.0.2.10", US: "198.51.100.10", UA: "203.0.113.10",
    BR: "100.64.1.10", DE: "10.20.0.10",
}
IP6 = {
    FR: "2001:db8:1::10", US: "2001:db8:2::10", UA: "2001:db8:3::10",
    BR: "2001:db8:4::10", DE: "2001:db8:5::10",
}
NET = {
    FR: "192.0.2.0/24", US: "198.51.100.0/24", UA: "203.0.113.0/24",
    BR: "100.64.1.0/24", DE: "10.20.0.0/16",
}
NET6 = {
    FR: "2001:db8:1::/48", US: "2001:db8:2::/48", UA: "2001:db8:3::/48",
    BR: "2001:db8:4::/48", DE: "2001:db8:5::/48",
}
CONTINENT = {FR: "EU", US: "NA", UA: "EU", BR: "SA", DE: "EU"}
CITY = {FR: "Paris", US: "Boston", UA: "Kyiv", BR: "Recife", DE: "Berlin"}
ASN = {FR: 64501, US: 64502, UA: 64503, BR: 64504, DE: 64505}
# Trusted proxies of the tests: no record in any database.
PROXY_NET = "172.16.0.0/12"
PROXY_IP = "172.16.0.1"
# Loopback: the direct path (no proxy) of a client of the tests.
LOOPBACK_COUNTRY = DE
LOOPBACK6_COUNTRY = US


def country_record(cc, city=False):
    rec = {"country": {"iso_code": cc, "names": {"en": "Country " + cc}},
           "continent": {"code": CONTINENT[cc]},
           "registered_country": {"iso_code": cc}}
    if city:
        rec["city"] = {"names": {"en": CITY[cc]}, "geoname_id": 1000 + ASN[cc]}
        rec["location"] = {"latitude": 48.5, "longitude": -2.25,
                           "accuracy_radius": 50}
        rec["subdivisions"] = [{"iso_code": "S" + cc}]
        rec["country"]["is_in_european_union"] = CONTINENT[cc] == "EU"
    return rec


def networks(kind="country", ip_version=6, swap=None):
    """The (CIDR, record) list of a test database. swap {a: b}: the
    networks of country a carry country b's record (a resold block)."""
    swap = swap or {}
    out = []
    for cc in (FR, US, UA, BR, DE):
        rc = swap.get(cc, cc)
        if kind == "asn":
            rec = {"autonomous_system_number": ASN[rc],
                   "autonomous_system_organization": "AS of " + rc}
        else:
            rec = country_record(rc, city=(kind == "city"))
        out.append([NET[cc], rec])
        if ip_version == 6:
            out.append([NET6[cc], rec])
    lo = swap.get(LOOPBACK_COUNTRY, LOOPBACK_COUNTRY)
    out.append(["127.0.0.0/8", country_record(lo, kind == "city")
                if kind != "asn" else {"autonomous_system_number": 1}])
    if ip_version == 6:
        out.append(["::1/128", country_record(LOOPBACK6_COUNTRY,
                                              kind == "city")
                    if kind != "asn" else {"autonomous_system_number": 1}])
    return out


def make_mmdb(path, kind="country", ip_version=6, swap=None, epoch=None):
    """Write a test database at path (atomically: mkmmdb.pl renames)."""
    spec = {"ip_version": ip_version,
            "database_type": {"country": "W4A-Test-Country",
                              "city": "W4A-Test-City",
                              "asn": "W4A-Test-ASN"}[kind],
            "networks": networks(kind, ip_version, swap)}
    if epoch:
        spec["build_epoch"] = epoch
    spec_path = path + ".json"
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    subprocess.run(["perl", MKMMDB, path, spec_path], check=True)
    os.unlink(spec_path)
    os.chmod(path, 0o644)
    return path


def mmdb_bytes(tmpdir, **kw):
    """The bytes of a test database."""
    p = os.path.join(tmpdir, "bytes-%d.mmdb" % os.getpid())
    make_mmdb(p, **kw)
    with open(p, "rb") as f:
        data = f.read()
    os.unlink(p)
    return data


def xff(ip):
    return {"X-Forwarded-For": ip}


def echo_headers(*names):
    """Server-level mod_headers lines echoing variables as X-<name>: they
    are read when the response goes out, after every phase."""
    return "\n".join('Header always set "X-%s" "%%{%s}e"' % (n, n)
                     for n in names)
