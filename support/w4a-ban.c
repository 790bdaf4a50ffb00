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
 *
 * Exit status: 0 done; 1 memcached or the node did not answer; 2 usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_getopt.h>
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
       OPT_URL, OPT_V6 };

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
"list, add and remove write the fleet's ban list (every node applies it\n"
"within W4AGuardFleetPoll); show prints the node's status, or one client's\n"
"counters, as JSON.  --hosting H: a ban (or its removal) for the hosting H\n"
"only; without it, for every hosting.\n");
    return rc;
}

/* A GET of url (http://host:port/path?query); prints the body. */
static int http_show(const char *url, const char *client, apr_pool_t *p)
{
    apr_uri_t u;
    apr_sockaddr_t *sa;
    apr_socket_t *s;
    apr_status_t rv;
    const char *path, *req;
    char buf[8192], *resp = "";
    apr_size_t len;

    if (apr_uri_parse(p, url, &u) != APR_SUCCESS || !u.scheme
        || strcmp(u.scheme, "http") || !u.hostname) {
        fprintf(stderr, PROG ": %s: expected http://HOST:PORT/PATH\n", url);
        return 2;
    }
    path = u.path ? u.path : "/";
    if (client) {
        path = apr_pstrcat(p, path, "?client=", client, NULL);
    }
    req = apr_psprintf(p, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path,
                       u.hostname);
    rv = apr_sockaddr_info_get(&sa, u.hostname, APR_UNSPEC,
                               u.port ? u.port : 80, 0, p);
    if (rv == APR_SUCCESS) {
        rv = apr_socket_create(&s, sa->family, SOCK_STREAM, APR_PROTO_TCP, p);
    }
    if (rv == APR_SUCCESS) {
        apr_socket_timeout_set(s, apr_time_from_sec(5));
        rv = apr_socket_connect(s, sa);
    }
    if (rv == APR_SUCCESS) {
        len = strlen(req);
        rv = apr_socket_send(s, req, &len);
    }
    while (rv == APR_SUCCESS) {
        len = sizeof(buf) - 1;
        rv = apr_socket_recv(s, buf, &len);
        buf[len] = '\0';
        resp = apr_pstrcat(p, resp, buf, NULL);
    }
    if (rv != APR_EOF) {
        fprintf(stderr, PROG ": %s: %pm\n", url, &rv);
        return 1;
    }
    if (strncmp(resp, "HTTP/1.", 7) || strncmp(resp + 9, "200", 3)
        || !strstr(resp, "\r\n\r\n")) {
        fprintf(stderr, PROG ": %s: %.*s\n", url,
                (int)strcspn(resp, "\r\n"), resp);
        return 1;
    }
    fputs(strstr(resp, "\r\n\r\n") + 4, stdout);
    return 0;
}

int main(int argc, const char *const *argv)
{
    apr_pool_t *p;
    apr_getopt_t *os;
    apr_status_t rv;
    int ch, i, no_key = 0, v6 = 64, rc = 0;
    const char *arg, *servers = NULL, *keyfile = NULL, *prefix = DEF_PREFIX;
    const char *hosting = NULL, *url = NULL, *cmd, *err = NULL;
    apr_int64_t secs = 600, n;
    w4a_mac_key_t *key = NULL;
    w4a_mc_t *mc;
    w4a_mc_opts_t o;
    apr_int64_t now;

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
        case 'h': return usage(0);
        }
    }
    if (rv != APR_EOF) {
        return usage(2);
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
    for (i = os->ind; i < os->argc; i++) {
        guard_key_t k;
        guard_fleet_ban_t b;
        if (guard_key_parse(&k, os->argv[i], v6) != APR_SUCCESS) {
            fprintf(stderr, PROG ": %s: not an IPv4 or IPv6 address\n",
                    os->argv[i]);
            rc = 2;
            continue;
        }
        b.addr = guard_key_text(&k, p);
        b.since_ms = now;
        b.until_ms = strcmp(cmd, "add") ? 0 : now + secs * 1000;
        b.reason = "admin";
        b.hosting = hosting ? hosting : "-";
        b.scope = hosting;
        rv = guard_fleet_publish(mc, &b, now, &err, p);
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
