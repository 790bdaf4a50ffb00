/*
 * mod_w4a_geoip's X-Forwarded-For walk (client_addr) and network parser
 * (parse_cidr), both static in modules/geoip/mod_w4a_geoip.c: the module's
 * source is included here and linked with httpd_stubs.c, on a request_rec
 * made by hand (pool, headers_in, useragent_addr, a debug log level so
 * that the log path runs too).
 *
 * Input, lines: 1) the trusted proxies, blank-separated, each through
 * parse_cidr (W4AGeoIPProxy); 2) the peer address; 3...) one
 * X-Forwarded-For header each (apr_table_getm joins them as httpd would).
 *
 * Invariants:
 * - parse_cidr accepts only an address, or an address/prefix in range
 *   with no bit set past the prefix, and the network holds its address;
 * - the client is what this reference walk gives: the peer unless it is a
 *   trusted proxy; then the entries right to left, each trimmed of blanks:
 *   stop at the last trusted hop on a malformed entry, at the first
 *   untrusted one, or at the leftmost.  So the client is never an entry
 *   left of a malformed or an untrusted one, and every hop right of it,
 *   the peer included, is trusted.
 *
 * Not reached: the rest of the request path (geoip_post_read_request,
 * database lookups, the connection cache) needs httpd's request cycle;
 * the integration tests cover it.  netlist_read (the supervisor file) is
 * the same parse_cidr per token.
 */
#include "fuzz_common.h"
#include "../../modules/geoip/mod_w4a_geoip.c"

static const char *first_line(char **s)
{
    char *l = *s, *nl;

    if (!l) {
        return NULL;
    }
    nl = strchr(l, '\n');
    if (nl) {
        *nl = '\0';
        *s = nl + 1;
    }
    else {
        *s = NULL;
    }
    return l;
}

/* The entry's address as APR builds it, or NULL when malformed. */
static apr_sockaddr_t *entry_addr(const char *e, apr_pool_t *p)
{
    struct sockaddr_storage ss;
    apr_sockaddr_t *sa;

    if (!w4a_geoip_addr_parse(e, &ss)
        || apr_sockaddr_info_get(&sa, e, APR_UNSPEC, 0, 0, p) != APR_SUCCESS) {
        return NULL;
    }
    return sa;
}

static int same_addr(const apr_sockaddr_t *a, const apr_sockaddr_t *b)
{
    return a->family == b->family && a->ipaddr_len == b->ipaddr_len
           && !memcmp(a->ipaddr_ptr, b->ipaddr_ptr, a->ipaddr_len);
}

static apr_sockaddr_t *reference_walk(const char *hdr, apr_sockaddr_t *peer,
                                      const apr_array_header_t *nets,
                                      apr_pool_t *p)
{
    apr_array_header_t *e = apr_array_make(p, 8, sizeof(char *));
    char *copy = apr_pstrdup(p, hdr), *s = copy, *comma;
    apr_sockaddr_t *cur = peer;
    int i;

    if (!in_nets(nets, peer)) {
        return peer;
    }
    for (;;) {
        char *a, *b;
        comma = strchr(s, ',');
        if (comma) {
            *comma = '\0';
        }
        for (a = s; *a == ' ' || *a == '\t'; a++) {
            ;
        }
        for (b = a + strlen(a); b > a && (b[-1] == ' ' || b[-1] == '\t');) {
            *--b = '\0';
        }
        APR_ARRAY_PUSH(e, char *) = a;
        if (!comma) {
            break;
        }
        s = comma + 1;
    }
    for (i = e->nelts - 1; i >= 0; i--) {
        apr_sockaddr_t *sa = entry_addr(APR_ARRAY_IDX(e, i, char *), p);
        if (!sa) {
            return cur;
        }
        cur = sa;
        if (!in_nets(nets, cur)) {
            return cur;
        }
    }
    return cur;
}

static void check_cidr(const char *tok, const apr_ipsubnet_t *net,
                       apr_pool_t *p)
{
    char *ip = apr_pstrdup(p, tok), *slash = strchr(ip, '/');
    apr_sockaddr_t *sa;
    apr_int64_t bits;

    if (slash) {
        *slash++ = '\0';
        FUZZ_CHECK(w4a_parse_number(slash, 1, strchr(ip, ':') ? 128 : 32,
                                    &bits), "prefix '%s' accepted", slash);
    }
    sa = entry_addr(ip, p);
    FUZZ_CHECK(sa || !w4a_geoip_addr_parse(ip, &(struct sockaddr_storage){0}),
               "'%s' accepted, APR cannot build it", ip);
    if (sa) {
        FUZZ_CHECK(apr_ipsubnet_test((apr_ipsubnet_t *)net, sa),
                   "network '%s' does not hold its own address", tok);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    request_rec r;
    server_rec srv;
    struct ap_logconf logc;
    geoip_conf c;
    char *in, *rest;
    const char *line, *hdr;
    apr_sockaddr_t *peer, *got, *want;

    apr_pool_create(&p, fuzz_pool());
    in = apr_pstrmemdup(p, (const char *)data, size);
    rest = in;

    memset(&c, 0, sizeof(c));
    c.proxies = apr_array_make(p, 4, sizeof(apr_ipsubnet_t *));
    line = first_line(&rest);
    if (line) {
        char *last, *tok, *l = apr_pstrdup(p, line);
        for (tok = apr_strtok(l, " \t\r", &last); tok;
             tok = apr_strtok(NULL, " \t\r", &last)) {
            apr_ipsubnet_t *net;
            if (parse_cidr(tok, &net, p) == NULL) {
                check_cidr(tok, net, p);
                APR_ARRAY_PUSH(c.proxies, apr_ipsubnet_t *) = net;
            }
        }
    }
    line = first_line(&rest);
    peer = line ? entry_addr(line, p) : NULL;
    if (!peer && apr_sockaddr_info_get(&peer, "10.0.0.1", APR_INET, 0, 0, p)
                 != APR_SUCCESS) {
        abort();
    }

    memset(&r, 0, sizeof(r));
    memset(&srv, 0, sizeof(srv));
    memset(&logc, 0, sizeof(logc));
    logc.level = APLOG_DEBUG;
    srv.log = logc;
    r.pool = p;
    r.server = &srv;
    r.log = &logc;
    r.headers_in = apr_table_make(p, 4);
    r.useragent_addr = peer;
    while ((line = first_line(&rest)) != NULL) {
        apr_table_addn(r.headers_in, DEFAULT_PROXY_HDR, line);
    }

    got = client_addr(&r, &c);
    hdr = apr_table_getm(p, r.headers_in, DEFAULT_PROXY_HDR);
    want = hdr ? reference_walk(hdr, peer, c.proxies, p) : peer;
    FUZZ_CHECK(got && same_addr(got, want), "the walk stops elsewhere than "
               "the reference (peer trusted: %d)", in_nets(c.proxies, peer));
    if (got != peer) {
        FUZZ_CHECK(in_nets(c.proxies, peer), "an entry used, the peer is not "
                   "a trusted proxy");
    }
    apr_pool_destroy(p);
    return 0;
}
