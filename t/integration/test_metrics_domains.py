"""mod_w4a_metrics: the bounded "domain" label (issue 16).

A request is counted for the canonical domain of the record it was served
for (the map's, never the request's Host): an alias counts as its domain,
a Host not in the map creates nothing.  A hosting counts at most
W4AMetricsDomains domains on their own, the rest as its domain "(other)";
a full domain table counts in hosting "(other)" domain "(other)" and says
so once (W4A00706).  Real httpd (two children or more) and FPM pools.
"""
import re

from prometheus_client.parser import text_string_to_metric_families

from test_metrics import A, B, OTHER, assert_httpd_t_refuses, \
    metrics_server, until, wait_requests

DOMAIN_FAMILIES = ("w4a_domain_requests", "w4a_domain_sent_bytes",
                   "w4a_domain_responses", "w4a_domain_php_requests",
                   "w4a_domain_php_seconds")


def dscrape(httpd):
    """{(sample name, hosting, domain[, code]): value} of the domain
    families, plus {(sample name,): value} of the unlabelled ones."""
    st, h, body = httpd.get("localhost", "/w4a-metrics")
    assert st == 200, body
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if "domain" in s.labels:
                key = (s.name, s.labels["hosting"], s.labels["domain"]) + \
                    ((s.labels["code"],) if "code" in s.labels else ())
            elif not s.labels:
                key = (s.name,)
            else:
                key = (s.name, s.labels.get("hosting"))
            out[key] = s.value
    return out


def domain_requests(m):
    return {(k[1], k[2]): v for k, v in m.items()
            if k[0] == "w4a_domain_requests_total"}


def wait_domains(httpd, want):
    """Scrape until the domains' request counts are exactly want
    {(hosting, domain): n}."""
    def done():
        m = dscrape(httpd)
        return m if domain_requests(m) == want else None
    try:
        return until("domain counts %s" % want, done)
    except AssertionError:
        raise AssertionError("wanted %s, have %s" % (
            want, domain_requests(dscrape(httpd))))


def two_domain_server(w4a, extra="", domains_a=("a2.example",)):
    """A serves a.example (alias www.a.example) and domains_a, B
    b.example."""
    def more(tree):
        lines = []
        for d in domains_a:
            tree.site(A, d, {"index.html": "static %s\n" % d})
            lines.append(tree.line(d, A, d))
        return lines
    return metrics_server(w4a, extra=extra, map_lines=more,
                          names_a="a.example,www.a.example")


def test_domain_counts_exact_alias_as_its_domain_none_has_no_domain(w4a):
    tree, fpm, httpd = two_domain_server(w4a)
    plan = [("a.example", "/index.html", 200)] * 3 \
        + [("www.a.example", "/index.html", 200)] * 2 \
        + [("a.example", "/hello.php", 200)] * 2 \
        + [("a2.example", "/index.html", 200),
           ("a2.example", "/missing.html", 404),
           ("b.example", "/index.html", 200),
           ("unknown.example", "/index.html", None)]
    for host, path, want in plan:
        st = httpd.get(host, path)[0]
        if want:
            assert st == want, (host, path, st)
    m = wait_domains(httpd, {(A, "a.example"): 7, (A, "a2.example"): 2,
                             (B, "b.example"): 1})
    hm = wait_requests(httpd, {A: 9, B: 1})
    assert m[("w4a_domain_responses_total", A, "a.example", "2xx")] == 7
    assert m[("w4a_domain_responses_total", A, "a2.example", "4xx")] == 1
    assert m[("w4a_domain_responses_total", A, "a2.example", "2xx")] == 1
    assert m[("w4a_domain_php_requests_total", A, "a.example")] == 2
    assert m[("w4a_domain_php_requests_total", A, "a2.example")] == 0
    assert m[("w4a_domain_php_seconds_total", A, "a.example")] > 0
    # the domains of a hosting add up to it, bytes too
    bytes_a = sum(v for k, v in m.items()
                  if k[0] == "w4a_domain_sent_bytes_total" and k[1] == A)
    assert bytes_a == hm[("w4a_hosting_sent_bytes_total", A)] > 0
    # an alias is its domain; a Host not in the map makes no domain row
    assert not any(k[2] in ("www.a.example", "unknown.example")
                   for k in m if len(k) >= 3)
    assert not any(k[1] == "(none)" for k in m if len(k) >= 3)
    assert m[("w4a_metrics_domain_table_used_rows",)] == 3
    assert m[("w4a_metrics_domain_table_rows",)] == 16384
    assert m[("w4a_metrics_domains_per_hosting",)] == 16


def test_domain_cap_per_hosting_counts_the_rest_as_other(w4a):
    extra = "W4AMetricsDomains 2\n"
    tree, fpm, httpd = two_domain_server(
        w4a, extra=extra,
        domains_a=("a2.example", "a3.example", "a4.example"))
    for host in ("a.example", "a2.example", "a3.example", "a4.example",
                 "a4.example", "b.example", "b.example"):
        assert httpd.get(host, "/index.html")[0] == 200, host
    # A's first two domains on their own, its third and fourth as (other);
    # B, another hosting, has its own cap
    m = wait_domains(httpd, {(A, "a.example"): 1, (A, "a2.example"): 1,
                             (A, OTHER): 3, (B, "b.example"): 2})
    assert m[("w4a_metrics_domains_per_hosting",)] == 2
    # the cap is not a bound a hostile client can move: random Hosts
    # resolve to nothing and make no row
    for i in range(20):
        httpd.get("x%d.unknown.example" % i, "/")
    assert httpd.get("a3.example", "/index.html")[0] == 200
    m = wait_domains(httpd, {(A, "a.example"): 1, (A, "a2.example"): 1,
                             (A, OTHER): 4, (B, "b.example"): 2})
    assert m[("w4a_metrics_domain_table_used_rows",)] == 4


def test_domain_table_full_counts_other_of_other_logs_once_serves_all(w4a):
    tree, fpm, httpd = two_domain_server(
        w4a, extra="W4AMetricsDomainTableSize 1\n")
    assert httpd.get("a.example", "/index.html")[0] == 200
    wait_domains(httpd, {(A, "a.example"): 1})
    for host in ("a2.example", "b.example", "b.example"):
        assert httpd.get(host, "/index.html")[0] == 200, host
    assert httpd.get("a.example", "/hello.php")[0] == 200
    m = wait_domains(httpd, {(A, "a.example"): 2, (OTHER, OTHER): 3})
    assert m[("w4a_metrics_domain_table_full_total",)] == 3
    # the per-hosting figures are whole whatever the domain table holds
    wait_requests(httpd, {A: 3, B: 2})
    logged = re.findall(r"W4A00706: metrics domain table full \(1 rows, "
                        r"W4AMetricsDomainTableSize\): domain (\S+) of "
                        r"hosting (w4a\d+) is counted as domain \(other\) "
                        r"of hosting \(other\)", httpd.log())
    assert logged == [("a2.example", A)], httpd.log()   # once per 60 s


def test_domains_off_no_domain_family_and_no_memory(w4a):
    tree, fpm, httpd = two_domain_server(w4a, extra="W4AMetricsDomains 0\n")
    assert httpd.get("a.example", "/index.html")[0] == 200
    hm = wait_requests(httpd, {A: 1})
    st, h, body = httpd.get("localhost", "/w4a-metrics")
    assert st == 200
    text = body.decode()
    assert "w4a_hosting_requests_total" in text
    assert not any(f in text for f in DOMAIN_FAMILIES), text
    assert "w4a_metrics_domain_table" not in text
    assert httpd.wait_log(r"W4A00704: per-hosting metrics: 4096 rows, 0 "
                          r"domain rows \(0 domains per hosting\)"), \
        httpd.log()


def test_domain_directives_checked(w4a):
    tree, fpm, httpd = metrics_server(w4a, start=False)
    assert_httpd_t_refuses(httpd, (
            ("<VirtualHost *:*>\nW4AMetricsDomains 8\n</VirtualHost>\n",
             r"cannot occur within <VirtualHost> section"),
            ("W4AMetricsDomains 1025\n", r"W4AMetricsDomains: '1025' is not"),
            ("W4AMetricsDomains many\n", r"W4AMetricsDomains: 'many' is not"),
            ("W4AMetricsDomainTableSize 0\n",
             r"W4AMetricsDomainTableSize: '0' is not")))
