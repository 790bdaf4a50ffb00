/*
 * w4a-ban: list, add and remove the bans of mod_w4a_guard, and show a
 * client's counters.  See docs/w4a-ban.md.
 *
 *   fleet-wide (the fleet's ban list in memcached, sealed with the key of
 *   W4AGuardMemcachedKey; every node applies it within W4AGuardFleetPoll):
 *     w4a-ban list   --memcached S (--key F | --no-key) [--prefix P]
 *     w4a-ban add    --memcached S (--key F | --no-key) [--prefix P]
 *                    [--for SECONDS] [--hosting H] ADDRESS...
 *     w4a-ban remove --memcached S (--key F | --no-key) [--prefix P]
 *                    [--hosting H] ADDRESS...
 *   (--hosting H: the ban holds for the hosting H only, as a login
 *   quota's does; without it, for every hosting)
 *   node-wide (the node's status page, read only):
 *     w4a-ban show   --url http://127.0.0.1:PORT/w4a-guard-status [ADDRESS]
 *   the node's bans for every hosting at the firewall (root, nftables):
 *     w4a-ban firewall --url URL [--interval MS] [--ports 80,443]
 *                      [--table w4a] [--never CIDR]... [--max N] [--once]
 *     w4a-ban firewall --remove [--table w4a]
 *
 * Exit status: 0 done; 1 memcached or the node did not answer (firewall:
 * nft failed); 2 usage.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <apr_general.h>
#include <apr_getopt.h>
#include <apr_hash.h>
#include <apr_lib.h>
#include <apr_network_io.h>
#include <apr_strings.h>
#include <apr_time.h>
#include <apr_uri.h>

#include "w4a_mac.h"
#include "w4a_mc.h"
#include "w4a_util.h"
#include "guard_table.h"
#include "guard_fleet.h"

#define PROG "w4a-ban"
#define DEF_PREFIX "w4a-guard:"

enum { OPT_MC = 1001, OPT_KEY, OPT_NO_KEY, OPT_PREFIX, OPT_FOR, OPT_HOSTING,
       OPT_URL, OPT_V6, OPT_INTERVAL, OPT_PORTS, OPT_TABLE, OPT_NEVER,
       OPT_ONCE, OPT_REMOVE, OPT_MAX, OPT_NFT };

static const apr_getopt_option_t options[] = {
    { "memcached", OPT_MC, 1, "memcached servers host:port[,...]" },
    { "key", OPT_KEY, 1, "key file (W4AGuardMemcachedKey)" },
    { "no-key", OPT_NO_KEY, 0, "values not sealed (W4AGuardMemcachedKey none)" },
    { "prefix", OPT_PREFIX, 1, "key prefix (W4AGuardMemcachedPrefix)" },
    { "for", OPT_FOR, 1, "seconds of the ban (add; 600)" },
    { "hosting", OPT_HOSTING, 1, "the one hosting the ban holds for "
                                 "(add, remove)" },
    { "url", OPT_URL, 1, "the node's w4a-guard-status URL (show)" },
    { "ipv6-prefix", OPT_V6, 1, "IPv6 prefix length (W4AGuardIPv6Prefix; 64)" },
    { "interval", OPT_INTERVAL, 1, "ms between reads (firewall; 500)" },
    { "ports", OPT_PORTS, 1, "TCP ports (firewall; 80,443)" },
    { "table", OPT_TABLE, 1, "nftables table, family inet (firewall; w4a)" },
    { "never", OPT_NEVER, 1, "network never in the firewall (repeatable)" },
    { "once", OPT_ONCE, 0, "one read and write, table left (firewall)" },
    { "remove", OPT_REMOVE, 0, "remove the table and exit (firewall)" },
    { "max", OPT_MAX, 1, "elements per set at most (firewall; 65536)" },
    { "nft", OPT_NFT, 1, "the nft program (firewall; nft)" },
    { "help", 'h', 0, "this text" },
    { NULL, 0, 0, NULL }
};

static int usage(int rc)
{
    fprintf(rc ? stderr : stdout,
"usage: " PROG " list   --memcached SERVERS (--key FILE | --no-key) [--prefix P]\n"
"       " PROG " add    --memcached SERVERS (--key FILE | --no-key) [--prefix P]\n"
"                      [--for SECONDS] [--hosting H] ADDRESS...\n"
"       " PROG " remove --memcached SERVERS (--key FILE | --no-key) [--prefix P]\n"
"                      [--hosting H] ADDRESS...\n"
"       " PROG " show   --url http://127.0.0.1:PORT/w4a-guard-status [ADDRESS]\n"
"       " PROG " firewall --url http://127.0.0.1:PORT/w4a-guard-status\n"
"                      [--interval MS] [--ports 80,443] [--table w4a]\n"
"                      [--never CIDR]... [--max N] [--nft PATH] [--once]\n"
"                      [--ipv6-prefix 64]\n"
"       " PROG " firewall --remove [--table w4a] [--nft PATH]\n"
"list, add and remove write the fleet's ban list (every node applies it\n"
"within W4AGuardFleetPoll); show prints the node's status, or one client's\n"
"counters, as JSON.  --hosting H: a ban (or its removal) for the hosting H\n"
"only; without it, for every hosting.  firewall mirrors the node's bans\n"
"for every hosting into nftables sets (root; docs/w4a-ban.md).\n");
    return rc;
}

#define HTTP_MAX_BODY (16 << 20)     /* 65,536 bans are about 8 MiB */

/* The TCP sockets of this machine listening where a connection to sa
 * can land, in /proc/net/tcp and tcp6: for an IPv4 sa, IPv4 sockets on
 * its address or 0.0.0.0, and IPv6 ones on :: or ::ffff:its address
 * (dual-stack); for an IPv6 sa, IPv6 sockets on its address or :: only
 * (0.0.0.0 takes no IPv6).  Their inodes as a text, or NULL with *why
 * when there is none or one is not root's.  httpd binds its ports as
 * root; a tenant's process binding the port while httpd does not hold
 * it (a restart, another Listen) would answer in its place, and while a
 * root socket holds it, the kernel lets no one else bind it.  (Not
 * covered: an IPv4 URL whose port httpd holds with an IPv6-only ::
 * socket alone; give the URL the address httpd listens on.) */
static const char *http_listeners(const apr_sockaddr_t *sa, const char **why,
                                  apr_pool_t *p)
{
    static const char *files[2] = { "/proc/net/tcp", "/proc/net/tcp6" };
    unsigned char want[16] = { 0 };
    const unsigned char v4any[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff,
                                      0xff, 0, 0, 0, 0 };
    const unsigned char any[16] = { 0 };
    apr_array_header_t *ids = apr_array_make(p, 4, sizeof(const char *));
    int i, v4, root_v4 = 0;
    unsigned long bad_uid = 0, v6any_uid = 0;

    /* (::ffff:a.b.c.d is an IPv4 connection, as the guard's keys say) */
    w4a_client_bytes(sa->family, sa->ipaddr_ptr, 128, want);
    v4 = !memcmp(want, v4any, 12);
    for (i = 0; i < 2; i++) {
        FILE *f = fopen(files[i], "r");
        char line[512];

        if (!f) {
            continue;
        }
        while (fgets(line, sizeof(line), f)) {
            char hex[40];
            unsigned int port, st;
            unsigned long uid, inode;
            unsigned char got[16] = { 0 };
            int w, words = i ? 4 : 1;

            if (sscanf(line, " %*u: %32[0-9A-Fa-f]:%x %*s %x %*s %*s %*s "
                       "%lu %*d %lu", hex, &port, &st, &uid, &inode) != 5
                || st != 0x0A || port != sa->port
                || strlen(hex) != (size_t)words * 8) {
                continue;
            }
            for (w = 0; w < words; w++) {
                char part[9];
                apr_uint32_t v;
                memcpy(part, hex + w * 8, 8);
                part[8] = '\0';
                v = (apr_uint32_t)strtoul(part, NULL, 16);
                memcpy(got + (i ? w * 4 : 12), &v, 4);   /* as in memory */
            }
            if (!i) {
                got[10] = got[11] = 0xff;
            }
            if (memcmp(got, want, 16)
                && !(i == 0 && v4 && !memcmp(got, v4any, 16))
                && !(i == 1 && !memcmp(got, any, 16))) {
                continue;       /* (::ffff:x in tcp6 is "want" already) */
            }
            if (i == 0 && !v4) {
                continue;       /* an IPv4 socket takes no IPv6 */
            }
            if (v4 && i == 1 && !memcmp(got, any, 16)) {
                /* a :: socket takes IPv4 only when dual-stack, and none
                 * is bound while a root IPv4 socket holds the port: an
                 * IPv6-only one of a tenant's must not stop the reads */
                if (uid != 0) {
                    v6any_uid = uid;
                    continue;
                }
            }
            else if (i == 0 && uid == 0) {
                root_v4 = 1;
            }
            if (uid != 0) {
                bad_uid = uid;
                break;
            }
            APR_ARRAY_PUSH(ids, const char *) = apr_psprintf(p, "%lu", inode);
        }
        fclose(f);
        if (bad_uid) {
            break;
        }
    }
    if (!bad_uid && !root_v4) {
        bad_uid = v6any_uid;
    }
    if (bad_uid) {
        *why = apr_psprintf(p, "the socket listening on port %u belongs to "
                            "uid %lu, not root: not httpd's (a tenant's "
                            "process, bound while httpd did not hold the "
                            "port?): not read", (unsigned int)sa->port,
                            bad_uid);
        return NULL;
    }
    if (!ids->nelts) {
        *why = "no socket of this machine listens there (the URL must be "
               "the node's own httpd)";
        return NULL;
    }
    return apr_array_pstrcat(p, ids, ',');
}

/* A GET of url (http://host:port/path?query), all of it within
 * timeout_ms and HTTP_MAX_BODY bytes: *body is the answer's body (a
 * 200's only).  With own_node, the listener must be root's before the
 * connection and the same one after the answer (http_listeners).
 * Returns 0, 1 (no answer, not a 200; *err says why) or 2 (not an
 * http:// URL). */
static int http_get(const char *url, const char *query, int timeout_ms,
                    int own_node, char **body, const char **err,
                    apr_pool_t *p)
{
    apr_uri_t u;
    apr_sockaddr_t *sa;
    apr_socket_t *s = NULL;
    apr_status_t rv;
    const char *path, *req, *before = NULL;
    char *buf, *eoh;
    apr_size_t len, used = 0, cap = 65536;
    apr_time_t end = apr_time_now() + apr_time_from_msec(timeout_ms);

    if (apr_uri_parse(p, url, &u) != APR_SUCCESS || !u.scheme
        || strcmp(u.scheme, "http") || !u.hostname) {
        *err = "expected http://HOST:PORT/PATH";
        return 2;
    }
    path = u.path ? u.path : "/";
    if (query) {
        path = apr_pstrcat(p, path, "?", query, NULL);
    }
    req = apr_psprintf(p, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path,
                       u.hostname);
    rv = apr_sockaddr_info_get(&sa, u.hostname, APR_UNSPEC,
                               u.port ? u.port : 80, 0, p);
    if (rv == APR_SUCCESS && own_node
        && (before = http_listeners(sa, err, p)) == NULL) {
        return 1;
    }
    if (rv == APR_SUCCESS) {
        rv = apr_socket_create(&s, sa->family, SOCK_STREAM, APR_PROTO_TCP, p);
    }
    if (rv == APR_SUCCESS) {
        apr_socket_timeout_set(s, apr_time_from_msec(timeout_ms));
        rv = apr_socket_connect(s, sa);
    }
    if (rv == APR_SUCCESS) {
        len = strlen(req);
        rv = apr_socket_send(s, req, &len);
    }
    buf = apr_palloc(p, cap);
    while (rv == APR_SUCCESS) {
        apr_time_t left = end - apr_time_now();
        if (left <= 0) {
            rv = APR_TIMEUP;
            break;
        }
        if (used > HTTP_MAX_BODY) {
            break;
        }
        if (cap - used < 4096) {
            char *nb = apr_palloc(p, cap * 2);
            memcpy(nb, buf, used);
            buf = nb;
            cap *= 2;
        }
        apr_socket_timeout_set(s, left);
        len = cap - used - 1;
        rv = apr_socket_recv(s, buf + used, &len);
        used += len;
    }
    buf[used] = '\0';
    if (s) {
        apr_socket_close(s);
    }
    if (used > HTTP_MAX_BODY) {
        *err = apr_psprintf(p, "the answer is larger than %d bytes: not read",
                            HTTP_MAX_BODY);
        return 1;
    }
    if (rv == APR_TIMEUP || APR_STATUS_IS_TIMEUP(rv)) {
        *err = apr_psprintf(p, "no whole answer within %d ms", timeout_ms);
        return 1;
    }
    if (rv != APR_EOF) {
        *err = apr_psprintf(p, "%pm", &rv);
        return 1;
    }
    if (own_node) {
        const char *after = http_listeners(sa, err, p);
        if (!after) {
            return 1;
        }
        if (strcmp(after, before)) {
            *err = "the socket listening there changed during the read: "
                   "not used";
            return 1;
        }
    }
    if (strncmp(buf, "HTTP/1.", 7) || used < 12 || strncmp(buf + 9, "200", 3)
        || !(eoh = strstr(buf, "\r\n\r\n"))) {
        *err = apr_psprintf(p, "%.*s", (int)strcspn(buf, "\r\n"), buf);
        return 1;
    }
    *body = eoh + 4;
    return 0;
}

/* show: prints the body of the status page (or of one client's slot). */
static int http_show(const char *url, const char *client, apr_pool_t *p)
{
    char *body;
    const char *err = NULL;
    int rc = http_get(url, client ? apr_pstrcat(p, "client=", client, NULL)
                                  : NULL, 5000, 0, &body, &err, p);
    if (rc) {
        fprintf(stderr, PROG ": %s: %s\n", url, err);
        return rc;
    }
    fputs(body, stdout);
    return 0;
}

/* ---- firewall: the node's bans for every hosting as nftables sets ----
 *
 * Every --interval ms the daemon reads the node's status page (the bans
 * of its shared table: its own, the fleet's, w4a-ban add's), keeps those
 * for every hosting (scope "all"; a login quota's ban holds for one
 * hosting and must not cost the client the others), leaves out the
 * never-list (the node's own addresses, 127.0.0.1, ::1, --never), and
 * when that list changed, writes the sets of its own table in one nft
 * transaction: each element with the ban's remaining time as its
 * timeout, so the kernel ends it with the ban even if the daemon dies. */

#define FW_TAG PROG " firewall: "
#define FW_DEF_TABLE "w4a"
#define FW_DEF_PORTS "80,443"
#define FW_DEF_MAX 65536
#define FW_MAX_PORTS 16
#define FW_CHUNK 512

/* An address or network: 16 bytes (IPv4 as ::ffff:a.b.c.d), the prefix
 * length over those 16 bytes (IPv4 /32 is 128). */
typedef struct fw_net {
    unsigned char a[16];
    int bits;
} fw_net;

typedef struct fw_ban {
    fw_net net;
    apr_int64_t until_ms;
} fw_ban;

typedef struct fw_conf {
    const char *url, *table, *nft;
    char ports[FW_MAX_PORTS * 7];
    apr_array_header_t *never;      /* fw_net: defaults and --never */
    int interval_ms, max;
    int v6bits;                     /* --ipv6-prefix: the widest IPv6 ban */
} fw_conf;

static const unsigned char fw_v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0,
                                               0, 0, 0xff, 0xff };

static volatile sig_atomic_t fw_stop;

static void fw_on_signal(int sig)
{
    fw_stop = sig;
}

static void fw_log(const char *fmt, ...)
{
    char ts[APR_RFC822_DATE_LEN];
    va_list ap;

    apr_rfc822_date(ts, apr_time_now());
    fprintf(stderr, "[%s] " FW_TAG, ts);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

/* A repeated failure (at every poll) is logged when it changes, and once
 * a minute while it lasts. */
static int fw_quiet(char **last, apr_int64_t *at, const char *msg,
                    apr_int64_t now_ms)
{
    if (*last && !strcmp(*last, msg) && now_ms - *at < 60000) {
        return 1;
    }
    free(*last);
    *last = strdup(msg);
    *at = now_ms;
    return 0;
}

static void fw_mask(fw_net *n)
{
    int i;
    for (i = 0; i < 16; i++) {
        int keep = n->bits - i * 8;
        if (keep <= 0) {
            n->a[i] = 0;
        }
        else if (keep < 8) {
            n->a[i] &= (unsigned char)(0xff << (8 - keep));
        }
    }
}

/* "a.b.c.d[/n]" or "x::y[/n]"; @a def6 the length of an IPv6 address
 * without one.  Returns 1, or 0 when it is neither. */
static int fw_net_parse(fw_net *n, const char *text, int def6)
{
    char buf[64], *slash;
    apr_int64_t bits;
    int v4;

    if (strlen(text) >= sizeof(buf)) {
        return 0;
    }
    strcpy(buf, text);
    if ((slash = strchr(buf, '/')) != NULL) {
        *slash++ = '\0';
    }
    memset(n, 0, sizeof(*n));
    if (inet_pton(AF_INET, buf, n->a + 12) == 1) {
        memcpy(n->a, fw_v4mapped, 12);
        v4 = 1;
    }
    else if (inet_pton(AF_INET6, buf, n->a) == 1) {
        v4 = 0;
    }
    else {
        return 0;
    }
    if (slash && !w4a_parse_number(slash, 0, v4 ? 32 : 128, &bits)) {
        return 0;
    }
    n->bits = v4 ? 96 + (int)(slash ? bits : 32)
                 : (int)(slash ? bits : def6);
    if (!v4 && !memcmp(n->a, fw_v4mapped, 12) && n->bits >= 96) {
        v4 = 1;     /* ::ffff:a.b.c.d: the guard's key of an IPv4 client */
    }
    fw_mask(n);
    return 1;
}

static int fw_is_v4(const fw_net *n)
{
    return n->bits >= 96 && !memcmp(n->a, fw_v4mapped, 12);
}

static const char *fw_net_text(const fw_net *n, apr_pool_t *p)
{
    char buf[INET6_ADDRSTRLEN];
    if (fw_is_v4(n)) {
        inet_ntop(AF_INET, n->a + 12, buf, sizeof(buf));
        return n->bits == 128 ? apr_pstrdup(p, buf)
                              : apr_psprintf(p, "%s/%d", buf, n->bits - 96);
    }
    inet_ntop(AF_INET6, n->a, buf, sizeof(buf));
    return apr_psprintf(p, "%s/%d", buf, n->bits);
}

/* Whether a and b have an address in common (one holds the other). */
static int fw_overlap(const fw_net *a, const fw_net *b)
{
    int bits = a->bits < b->bits ? a->bits : b->bits, i;
    for (i = 0; i < 16; i++, bits -= 8) {
        unsigned char m = bits >= 8 ? 0xff
                          : bits <= 0 ? 0 : (unsigned char)(0xff << (8 - bits));
        if ((a->a[i] ^ b->a[i]) & m) {
            return 0;
        }
    }
    return 1;
}

/* The node's own addresses (each /32 or /128), read again at every poll:
 * a tenant's PHP reaches the node through them as it does through
 * loopback. */
static void fw_own_addrs(apr_array_header_t *out)
{
    struct ifaddrs *ifa, *i;

    if (getifaddrs(&ifa) != 0) {
        return;
    }
    for (i = ifa; i; i = i->ifa_next) {
        fw_net *n;
        if (!i->ifa_addr) {
            continue;
        }
        if (i->ifa_addr->sa_family == AF_INET) {
            n = apr_array_push(out);
            memcpy(n->a, fw_v4mapped, 12);
            memcpy(n->a + 12, &((struct sockaddr_in *)i->ifa_addr)->sin_addr,
                   4);
            n->bits = 128;
        }
        else if (i->ifa_addr->sa_family == AF_INET6) {
            n = apr_array_push(out);
            memcpy(n->a, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr,
                   16);
            n->bits = 128;
        }
    }
    freeifaddrs(ifa);
}

/* JSON of the status page: the value of "key" in the object [o, end)
 * (a string's text, or a number's), or NULL.  The page is our module's
 * own, flat objects; strings may hold \-escapes (a hosting's name). */
static const char *fw_json_field(const char *o, const char *end,
                                 const char *key, apr_pool_t *p)
{
    size_t kl = strlen(key);
    const char *c = o;

    while (c < end) {
        if (*c == '"') {
            const char *s = ++c;
            while (c < end && *c != '"') {
                c += (*c == '\\' && c + 1 < end) ? 2 : 1;
            }
            if (c >= end) {
                return NULL;
            }
            if ((size_t)(c - s) == kl && !memcmp(s, key, kl)
                && c[1] == ':') {
                const char *v = c + 2, *ve;
                if (*v == '"') {
                    ve = ++v;
                    while (ve < end && *ve != '"' && *ve != '\\') {
                        ve++;
                    }
                    return ve < end && *ve == '"'
                           ? apr_pstrmemdup(p, v, ve - v) : NULL;
                }
                ve = v;
                while (ve < end && (*ve == '-' || (*ve >= '0' && *ve <= '9'))) {
                    ve++;
                }
                return ve > v ? apr_pstrmemdup(p, v, ve - v) : NULL;
            }
        }
        c++;
    }
    return NULL;
}

/* The bans of the page for every hosting, still holding at now_ms.
 * Returns the number of entries not understood, or -1: no "bans" list. */
static int fw_read_bans(const char *body, apr_int64_t now_ms, int v6bits,
                        apr_array_header_t *bans, apr_pool_t *p)
{
    const char *c = strstr(body, "\"bans\":[");
    int bad = 0;

    if (!c) {
        return -1;
    }
    c += 8;
    while (*c == '{' || *c == ',') {
        const char *o = c, *e = c + 1, *client, *scope, *until;
        apr_int64_t u;
        fw_ban b;
        if (*c == ',') {
            c++;
            continue;
        }
        while (*e && *e != '}') {         /* flat objects, escapes skipped */
            if (*e == '"') {
                e++;
                while (*e && *e != '"') {
                    e += (*e == '\\' && e[1]) ? 2 : 1;
                }
            }
            if (*e) {
                e++;
            }
        }
        if (!*e) {
            return -1;
        }
        c = e + 1;
        client = fw_json_field(o, e, "client", p);
        scope = fw_json_field(o, e, "scope", p);
        until = fw_json_field(o, e, "until_ms", p);
        /* the guard bans one IPv4 address, or an IPv6 prefix of
         * W4AGuardIPv6Prefix (--ipv6-prefix, 64): anything wider is not
         * one of its bans (2000::/3 would cut the node off the IPv6
         * Internet) */
        if (!client || !scope || !until
            || !w4a_parse_number(until, 0, APR_INT64_MAX, &u)
            || !fw_net_parse(&b.net, client, v6bits)
            || (fw_is_v4(&b.net) ? b.net.bits != 128
                                 : b.net.bits < v6bits)) {
            bad++;
            continue;
        }
        if (strcmp(scope, "all") || u <= now_ms) {
            continue;       /* one hosting's ban (login quota): not here */
        }
        b.until_ms = u;
        *(fw_ban *)apr_array_push(bans) = b;
    }
    return *c == ']' ? bad : -1;
}

static int fw_cmp_net(const void *x, const void *y)
{
    const fw_ban *a = x, *b = y;
    int c = memcmp(a->net.a, b->net.a, 16);
    return c ? c : a->net.bits - b->net.bits;
}

static int fw_cmp_until_desc(const void *x, const void *y)
{
    const fw_ban *a = x, *b = y;
    return a->until_ms < b->until_ms ? 1 : a->until_ms > b->until_ms ? -1
           : fw_cmp_net(x, y);
}

/* Run nft -f - with @a rules; 0, or 1 with *err its first line. */
static int fw_nft(const fw_conf *c, const char *rules, const char **err,
                  apr_pool_t *p)
{
    int in[2], st;
    FILE *errf = tmpfile();
    pid_t pid;
    size_t len = strlen(rules), off = 0;
    char line[512];

    *err = "nft could not be started";
    if (!errf || pipe(in) != 0) {
        if (errf) {
            fclose(errf);
        }
        return 1;
    }
    pid = fork();
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(fileno(errf), 1);
        dup2(fileno(errf), 2);
        close(in[0]);
        close(in[1]);
        execlp(c->nft, c->nft, "-f", "-", (char *)NULL);
        fprintf(stderr, "%s: %s\n", c->nft, strerror(errno));
        _exit(127);
    }
    close(in[0]);
    while (pid > 0 && off < len) {
        ssize_t n = write(in[1], rules + off, len - off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        off += (size_t)n;
    }
    close(in[1]);
    if (pid < 0) {
        fclose(errf);
        return 1;
    }
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        fclose(errf);
        return 0;
    }
    rewind(errf);
    line[0] = '\0';
    while (fgets(line, sizeof(line), errf)) {    /* nft: the error line */
        if (strstr(line, "rror") || strstr(line, ": ")) {
            break;
        }
    }
    line[strcspn(line, "\n")] = '\0';
    *err = apr_psprintf(p, "nft exit %d: %s", WIFEXITED(st)
                        ? WEXITSTATUS(st) : -1, line[0] ? line : "-");
    fclose(errf);
    return 1;
}

static const char *fw_remove_rules(const fw_conf *c, apr_pool_t *p)
{
    return apr_psprintf(p, "add table inet %s\ndelete table inet %s\n",
                        c->table, c->table);
}

/* The whole table, idempotent (so that a table deleted by hand comes
 * back at the next write), and the sets' elements. */
static const char *fw_rules(const fw_conf *c, const apr_array_header_t *bans,
                            apr_int64_t now_ms, apr_pool_t *p)
{
    const char *t = c->table;
    const char *match = "tcp dport { %s } tcp flags & (syn | ack) == syn";
    apr_array_header_t *out = apr_array_make(p, 64, sizeof(char *));
    int fam, i;

#define FW_OUT(...) (*(const char **)apr_array_push(out) = \
                     apr_psprintf(p, __VA_ARGS__))
    FW_OUT("add table inet %s\n", t);
    FW_OUT("add set inet %s ban4 { type ipv4_addr; flags timeout; size %d; }\n",
           t, c->max);
    FW_OUT("add set inet %s ban6 { type ipv6_addr; flags interval, timeout; "
           "size %d; }\n", t, c->max);
    FW_OUT("add chain inet %s input { type filter hook input priority -10; "
           "policy accept; }\n", t);
    FW_OUT("flush chain inet %s input\n", t);
    FW_OUT("add rule inet %s input %s ip saddr @ban4 drop\n", t,
           apr_psprintf(p, match, c->ports));
    FW_OUT("add rule inet %s input %s ip6 saddr @ban6 drop\n", t,
           apr_psprintf(p, match, c->ports));
    FW_OUT("flush set inet %s ban4\nflush set inet %s ban6\n", t, t);
    for (fam = 4; fam <= 6; fam += 2) {
        int n = 0;
        for (i = 0; i < bans->nelts; i++) {
            const fw_ban *b = &APR_ARRAY_IDX(bans, i, fw_ban);
            apr_int64_t left = b->until_ms - now_ms;
            if (fw_is_v4(&b->net) != (fam == 4)) {
                continue;
            }
            FW_OUT("%s%s timeout %" APR_INT64_T_FMT "ms",
                   n % FW_CHUNK ? ", "
                   : apr_psprintf(p, "%sadd element inet %s ban%d { ",
                                  n ? " }\n" : "", t, fam),
                   fw_net_text(&b->net, p), left > 0 ? left : 1);
            n++;
        }
        if (n) {
            FW_OUT(" }\n");
        }
    }
#undef FW_OUT
    return apr_array_pstrcat(p, out, 0);
}

static int fw_run(const fw_conf *c, int once, apr_pool_t *pool)
{
    apr_pool_t *p, *keep[2];
    apr_hash_t *skipped_prev, *skipped;
    const char *err;
    char *sig_prev = NULL, *last82 = NULL, *last83 = NULL;
    apr_int64_t at82 = 0, at83 = 0;
    apr_int64_t last_write = 0;
    int down = 0, k = 0, i;

    apr_pool_create(&p, pool);
    apr_pool_create(&keep[0], pool);
    apr_pool_create(&keep[1], pool);
    skipped_prev = apr_hash_make(keep[1]);
    if (fw_nft(c, fw_remove_rules(c, p), &err, p)
        || fw_nft(c, fw_rules(c, apr_array_make(p, 0, sizeof(fw_ban)), 0, p),
                  &err, p)) {
        fw_log("W4A00689: table inet %s could not be created (nft, "
               "CAP_NET_ADMIN): %s", c->table, err);
        return 1;
    }
    fw_log("W4A00680: started: table inet %s, sets ban4 ban6 (at most %d "
           "each), new TCP connections to ports %s dropped, bans of %s every "
           "%d ms%s", c->table, c->max, c->ports, c->url, c->interval_ms,
           once ? " (once)" : "");
    while (!fw_stop) {
        apr_array_header_t *bans = apr_array_make(p, 64, sizeof(fw_ban));
        apr_array_header_t *never = apr_array_copy(p, c->never);
        apr_array_header_t *kept = apr_array_make(p, 64, sizeof(fw_ban));
        apr_int64_t now = apr_time_now() / 1000;
        char *body;
        const char *sig;
        int rc, bad, left_out = 0;
        struct timespec ts;

        rc = http_get(c->url, NULL, 2000, 1, &body, &err, p);
        if (rc) {
            if (!down++ || once) {
                fw_log("W4A00681: the node's status %s not read: %s (the "
                       "elements in place end with their bans)", c->url, err);
            }
            if (once) {
                return 1;
            }
            goto next;
        }
        if (down) {
            fw_log("W4A00681: the node's status %s read again", c->url);
            down = 0;
        }
        bad = fw_read_bans(body, now, c->v6bits, bans, p);
        if (bad) {
            const char *m = bad < 0
                ? "no list of bans in the answer (not a w4a-guard-status "
                  "page? W4AGuardEngine off?): nothing changed"
                : apr_psprintf(p, "%d ban(s) not understood, left out", bad);
            if (!fw_quiet(&last82, &at82, m, now) || once) {
                fw_log("W4A00682: %s: %s", c->url, m);
            }
            if (bad < 0) {
                if (once) {
                    return 1;
                }
                goto next;
            }
        }
        /* never: the node's own addresses, loopback, --never */
        fw_own_addrs(never);
        skipped = apr_hash_make(keep[k]);
        qsort(bans->elts, bans->nelts, sizeof(fw_ban), fw_cmp_net);
        for (i = 0; i < bans->nelts; i++) {
            fw_ban *b = &APR_ARRAY_IDX(bans, i, fw_ban);
            int j, never_hit = 0;
            for (j = 0; j < never->nelts && !never_hit; j++) {
                never_hit = fw_overlap(&b->net, &APR_ARRAY_IDX(never, j,
                                                               fw_net));
            }
            if (never_hit) {
                const char *a = fw_net_text(&b->net, keep[k]);
                apr_hash_set(skipped, a, APR_HASH_KEY_STRING, a);
                if (!apr_hash_get(skipped_prev, a, APR_HASH_KEY_STRING)) {
                    fw_log("W4A00684: %s banned by the node, not put in the "
                           "firewall: on the never-list (the node's own "
                           "address, loopback, --never)", a);
                }
                continue;
            }
            /* sorted by address then length: a network comes before the
             * ones it holds (an interval set refuses overlaps) */
            if (kept->nelts
                && fw_overlap(&b->net, &APR_ARRAY_IDX(kept, kept->nelts - 1,
                                                      fw_ban).net)) {
                fw_ban *w = &APR_ARRAY_IDX(kept, kept->nelts - 1, fw_ban);
                if (w->net.bits == b->net.bits && b->until_ms > w->until_ms) {
                    w->until_ms = b->until_ms;
                }
                continue;
            }
            *(fw_ban *)apr_array_push(kept) = *b;
        }
        apr_pool_clear(keep[1 - k]);
        skipped_prev = skipped;
        k = 1 - k;
        if (kept->nelts > c->max) {
            left_out = kept->nelts - c->max;
            qsort(kept->elts, kept->nelts, sizeof(fw_ban), fw_cmp_until_desc);
            kept->nelts = c->max;
        }
        {
            apr_array_header_t *parts = apr_array_make(p, kept->nelts + 1,
                                                       sizeof(char *));
            for (i = 0; i < kept->nelts; i++) {
                const fw_ban *b = &APR_ARRAY_IDX(kept, i, fw_ban);
                *(const char **)apr_array_push(parts) = apr_psprintf(p,
                    "%s %" APR_INT64_T_FMT ";", fw_net_text(&b->net, p),
                    b->until_ms);
            }
            sig = apr_array_pstrcat(p, parts, 0);
        }
        /* written when the list changed, and every 30 s (a table deleted
         * by hand comes back) */
        if (sig_prev && !strcmp(sig, sig_prev) && now - last_write < 30000) {
            goto next;
        }
        if (left_out) {
            fw_log("W4A00685: %d bans for every hosting, at most %d in the "
                   "firewall (--max): the %d ending first left out",
                   kept->nelts + left_out, c->max, left_out);
        }
        if (fw_nft(c, fw_rules(c, kept, now, p), &err, p)) {
            if (!fw_quiet(&last83, &at83, err, now) || once) {
                fw_log("W4A00683: the sets of table inet %s not written "
                       "(again at the next read): %s", c->table, err);
            }
            free(sig_prev);
            sig_prev = NULL;
            if (once) {
                return 1;
            }
            goto next;
        }
        if (!sig_prev || strcmp(sig, sig_prev)) {
            fw_log("W4A00686: %d ban(s) in table inet %s", kept->nelts,
                   c->table);
        }
        free(sig_prev);
        sig_prev = strdup(sig);
        last_write = now;
    next:
        if (once) {
            return 0;
        }
        apr_pool_clear(p);
        ts.tv_sec = c->interval_ms / 1000;
        ts.tv_nsec = (long)(c->interval_ms % 1000) * 1000000L;
        while (!fw_stop && nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
    free(sig_prev);
    free(last82);
    free(last83);
    if (fw_nft(c, fw_remove_rules(c, p), &err, p)) {
        fw_log("W4A00683: table inet %s not removed: %s", c->table, err);
        return 1;
    }
    fw_log("W4A00687: stopped (signal %d): table inet %s removed",
           (int)fw_stop, c->table);
    return 0;
}

/* --ports: 1 to FW_MAX_PORTS TCP ports, "80,443". */
static int fw_ports(fw_conf *c, const char *arg)
{
    char *list = strdup(arg), *tok, *last = NULL, *out = c->ports;
    int n = 0, rc = 0;
    apr_int64_t port;

    for (tok = apr_strtok(list, ",", &last); tok && !rc;
         tok = apr_strtok(NULL, ",", &last)) {
        if (++n > FW_MAX_PORTS || !w4a_parse_number(tok, 1, 65535, &port)) {
            rc = 2;
            break;
        }
        out += sprintf(out, "%s%d", n > 1 ? ", " : "", (int)port);
    }
    if (!n || rc) {
        fprintf(stderr, FW_TAG "W4A00688: --ports %s: 1 to %d TCP ports "
                "(1 to 65535), comma-separated\n", arg, FW_MAX_PORTS);
        rc = 2;
    }
    free(list);
    return rc;
}

static int fw_name_ok(const char *s)
{
    size_t i, n = strlen(s);
    if (n < 1 || n > 32 || !apr_isalpha(s[0])) {
        return 0;
    }
    for (i = 1; i < n; i++) {
        if (!apr_isalnum(s[i]) && s[i] != '_') {
            return 0;
        }
    }
    return 1;
}

static int fw_main(fw_conf *c, apr_getopt_t *os, int once, int remove_table,
                   apr_pool_t *p)
{
    struct sigaction sa;
    const char *err;

    if (os->ind < os->argc) {
        fprintf(stderr, FW_TAG "W4A00688: %s: no argument expected\n",
                os->argv[os->ind]);
        return 2;
    }
    if (geteuid() != 0) {
        fprintf(stderr, FW_TAG "W4A00688: needs root (CAP_NET_ADMIN: nft)\n");
        return 2;
    }
    if (remove_table) {
        if (fw_nft(c, fw_remove_rules(c, p), &err, p)) {
            fw_log("W4A00683: table inet %s not removed: %s", c->table, err);
            return 1;
        }
        fw_log("W4A00687: table inet %s removed (--remove)", c->table);
        return 0;
    }
    if (!c->url) {
        fprintf(stderr, FW_TAG "W4A00688: which --url (the node's "
                "w4a-guard-status)?\n");
        return 2;
    }
    if (strncmp(c->url, "http://", 7)) {
        fprintf(stderr, FW_TAG "W4A00688: --url %s: expected "
                "http://HOST:PORT/PATH\n", c->url);
        return 2;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = fw_on_signal;     /* no SA_RESTART: the sleep ends */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    return fw_run(c, once, p);
}

int main(int argc, const char *const *argv)
{
    apr_pool_t *p;
    apr_getopt_t *os;
    apr_status_t rv;
    int ch, i, no_key = 0, v6 = 64, rc = 0;
    apr_pool_t *ap;
    const char *arg, *servers = NULL, *keyfile = NULL, *prefix = DEF_PREFIX;
    const char *hosting = NULL, *url = NULL, *cmd, *err = NULL;
    apr_int64_t secs = 600, n;
    w4a_mac_key_t *key = NULL;
    w4a_mc_t *mc;
    w4a_mc_opts_t o;
    apr_int64_t now;
    fw_conf fw;
    int once = 0, remove_table = 0;

    memset(&fw, 0, sizeof(fw));
    fw.table = FW_DEF_TABLE;
    fw.nft = "nft";
    fw.interval_ms = 500;
    fw.max = FW_DEF_MAX;
    apr_app_initialize(&argc, &argv, NULL);
    atexit(apr_terminate);
    apr_pool_create(&p, NULL);
    if (argc < 2) {
        return usage(2);
    }
    cmd = argv[1];
    if (!strcmp(cmd, "help") || !strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
        return usage(0);
    }
    fw.never = apr_array_make(p, 8, sizeof(fw_net));
    fw_net_parse(apr_array_push(fw.never), "127.0.0.1", 128);
    fw_net_parse(apr_array_push(fw.never), "::1", 128);
    if (fw_ports(&fw, FW_DEF_PORTS) != 0) {
        return 2;
    }
    apr_getopt_init(&os, p, argc - 1, argv + 1);
    while ((rv = apr_getopt_long(os, options, &ch, &arg)) == APR_SUCCESS) {
        switch (ch) {
        case OPT_MC: servers = arg; break;
        case OPT_KEY: keyfile = arg; break;
        case OPT_NO_KEY: no_key = 1; break;
        case OPT_PREFIX: prefix = arg; break;
        case OPT_HOSTING:
            if (!guard_fleet_name_ok(arg)) {
                fprintf(stderr, PROG ": W4A00675: --hosting %s: expected a "
                        "hosting name (letters, digits, '.', '_', '-'; 1 to "
                        "%d bytes)\n", arg, GUARD_FLEET_NAME_MAX);
                return 2;
            }
            hosting = arg;
            break;
        case OPT_URL: url = arg; break;
        case OPT_FOR:
            if (!w4a_parse_number(arg, 1, 7 * 86400, &secs)) {
                fprintf(stderr, PROG ": --for %s: 1 to 604800 seconds\n", arg);
                return 2;
            }
            break;
        case OPT_V6:
            if (!w4a_parse_number(arg, 16, 128, &n)) {
                fprintf(stderr, PROG ": --ipv6-prefix %s: 16 to 128\n", arg);
                return 2;
            }
            v6 = (int)n;
            break;
        case OPT_INTERVAL:
            if (!w4a_parse_number(arg, 50, 60000, &n)) {
                fprintf(stderr, FW_TAG "W4A00688: --interval %s: 50 to 60000 "
                        "ms\n", arg);
                return 2;
            }
            fw.interval_ms = (int)n;
            break;
        case OPT_MAX:
            if (!w4a_parse_number(arg, 1, 1048576, &n)) {
                fprintf(stderr, FW_TAG "W4A00688: --max %s: 1 to 1048576\n",
                        arg);
                return 2;
            }
            fw.max = (int)n;
            break;
        case OPT_PORTS:
            if (fw_ports(&fw, arg) != 0) {
                return 2;
            }
            break;
        case OPT_TABLE:
            if (!fw_name_ok(arg)) {
                fprintf(stderr, FW_TAG "W4A00688: --table %s: a letter, then "
                        "letters, digits, '_' (at most 32)\n", arg);
                return 2;
            }
            fw.table = arg;
            break;
        case OPT_NEVER:
            if (!fw_net_parse(apr_array_push(fw.never), arg, 128)) {
                fprintf(stderr, FW_TAG "W4A00688: --never %s: expected an "
                        "IPv4 or IPv6 address or network (CIDR)\n", arg);
                return 2;
            }
            break;
        case OPT_NFT: fw.nft = arg; break;
        case OPT_ONCE: once = 1; break;
        case OPT_REMOVE: remove_table = 1; break;
        case 'h': return usage(0);
        }
    }
    if (rv != APR_EOF) {
        return usage(2);
    }
    if (!strcmp(cmd, "firewall")) {
        fw.v6bits = v6;
        fw.url = url;
        return fw_main(&fw, os, once, remove_table, p);
    }
    if (!strcmp(cmd, "show")) {
        if (!url || os->ind < os->argc - 1) {
            return usage(2);
        }
        return http_show(url, os->ind < os->argc ? os->argv[os->ind] : NULL,
                         p);
    }
    if (strcmp(cmd, "list") && strcmp(cmd, "add") && strcmp(cmd, "remove")) {
        fprintf(stderr, PROG ": unknown command %s\n", cmd);
        return usage(2);
    }
    if (!servers || (!keyfile == !no_key)) {
        fprintf(stderr, PROG ": %s needs --memcached and one of --key, "
                "--no-key\n", cmd);
        return 2;
    }
    if (strcmp(cmd, "list") && os->ind >= os->argc) {
        fprintf(stderr, PROG ": %s: which ADDRESS?\n", cmd);
        return 2;
    }
    if (keyfile && w4a_mac_key_load(&key, keyfile, &err, p) != APR_SUCCESS) {
        fprintf(stderr, PROG ": W4A00650: %s: %s\n", keyfile, err);
        return 2;
    }
    memset(&o, 0, sizeof(o));
    o.prefix = prefix;
    o.key = key;
    o.timeout_ms = 1000;
    if (w4a_mc_create(&mc, servers, &o, &err, p) != APR_SUCCESS) {
        fprintf(stderr, PROG ": W4A00651: memcached %s: %s\n", servers, err);
        return 2;
    }
    now = apr_time_now() / 1000;
    if (!strcmp(cmd, "list")) {
        apr_array_header_t *bans;
        rv = guard_fleet_read(mc, &bans, &err, p);
        if (rv != APR_SUCCESS) {
            fprintf(stderr, PROG ": W4A00652: the fleet list in memcached "
                    "%s: %s\n", servers, rv == W4A_MAC_EFORGED
                    ? "not sealed by this key" : rv == W4A_MAC_EEXPIRED
                    ? "expired" : err ? err : "no answer");
            return 1;
        }
        for (i = 0; i < bans->nelts; i++) {
            guard_fleet_ban_t *b = &APR_ARRAY_IDX(bans, i, guard_fleet_ban_t);
            const char *scope = b->scope
                                ? apr_pstrcat(p, "hosting ", b->scope, NULL)
                                : "all";
            if (b->until_ms == 0) {
                printf("%s removed %" APR_INT64_T_FMT " s ago, scope %s\n",
                       b->addr, (now - b->since_ms) / 1000, scope);
            }
            else if (b->until_ms > now) {
                printf("%s banned %" APR_INT64_T_FMT " s more, reason %s, "
                       "hosting %s, scope %s\n", b->addr,
                       (b->until_ms - now + 999) / 1000, b->reason,
                       b->scope ? b->scope : b->hosting, scope);
            }
        }
        return 0;
    }
    /* one pool per address: each publish reads and writes the whole list
     * (up to GUARD_FLEET_BYTES), which must not pile up over 1000 of them */
    apr_pool_create(&ap, p);
    for (i = os->ind; i < os->argc; i++, apr_pool_clear(ap)) {
        guard_key_t k;
        guard_fleet_ban_t b;
        if (guard_key_parse(&k, os->argv[i], v6) != APR_SUCCESS) {
            fprintf(stderr, PROG ": %s: not an IPv4 or IPv6 address\n",
                    os->argv[i]);
            rc = 2;
            continue;
        }
        b.addr = guard_key_text(&k, ap);
        b.since_ms = now;
        b.until_ms = strcmp(cmd, "add") ? 0 : now + secs * 1000;
        b.reason = "admin";
        b.hosting = hosting ? hosting : "-";
        b.scope = hosting;
        rv = guard_fleet_publish(mc, &b, now, &err, ap);
        if (rv != APR_SUCCESS) {
            fprintf(stderr, PROG ": W4A00653: %s %s: memcached %s: %s\n", cmd,
                    b.addr, servers, err ? err : "no answer");
            return 1;
        }
        printf("%s %s%s%s\n", b.addr, b.until_ms ? "banned fleet-wide"
                                                 : "ban removed fleet-wide",
               hosting ? " for hosting " : "", hosting ? hosting : "");
    }
    return rc;
}
