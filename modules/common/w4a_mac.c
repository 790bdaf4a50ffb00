/*
 * w4a_mac: sealed cache values, HMAC-SHA256 from OpenSSL's libcrypto.
 * See w4a_mac.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <apr_strings.h>

#include "w4a_mac.h"

#define MAGIC      "w4a1 "
#define MAGIC_LEN  5
#define DOMAIN     "w4a-mc-1"
#define MAC_HEX    64           /* SHA-256: 32 bytes */
#define EXP_DIGITS 19           /* an apr_int64_t */

struct w4a_mac_key_t {
    unsigned char *bytes;
    apr_size_t     len;
};

static apr_status_t key_cleanup(void *data)
{
    w4a_mac_key_t *k = data;
    OPENSSL_cleanse(k->bytes, k->len);
    return APR_SUCCESS;
}

apr_status_t w4a_mac_key_make(w4a_mac_key_t **key, const void *bytes,
                              apr_size_t len, apr_pool_t *p)
{
    w4a_mac_key_t *k;

    if (len < W4A_MAC_KEY_MIN || len > W4A_MAC_KEY_MAX) {
        return APR_EINVAL;
    }
    k = apr_palloc(p, sizeof(*k));
    k->bytes = apr_palloc(p, len);
    memcpy(k->bytes, bytes, len);
    k->len = len;
    apr_pool_cleanup_register(p, k, key_cleanup, apr_pool_cleanup_null);
    *key = k;
    return APR_SUCCESS;
}

apr_status_t w4a_mac_key_load(w4a_mac_key_t **key, const char *path,
                              const char **err, apr_pool_t *p)
{
    unsigned char buf[W4A_MAC_KEY_MAX + 1];
    struct stat st;
    apr_size_t n = 0;
    apr_status_t rv;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

    if (fd < 0) {
        rv = errno;
        *err = apr_psprintf(p, "cannot open it: %s", strerror(rv));
        return rv;
    }
    if (fstat(fd, &st) != 0) {
        rv = errno;
        close(fd);
        *err = apr_psprintf(p, "cannot stat it: %s", strerror(rv));
        return rv;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        *err = "not a regular file";
        return APR_EINVAL;
    }
    if (st.st_mode & 027) {
        close(fd);
        *err = apr_psprintf(p, "mode %04o: a key must not be writable by its "
                            "group or readable by others (install -m 0640 "
                            "-o root -g <httpd's group>)",
                            (unsigned)(st.st_mode & 07777));
        return APR_EACCES;
    }
    if (st.st_uid != 0 && st.st_uid != geteuid()) {
        close(fd);
        *err = apr_psprintf(p, "owned by uid %lu: a key must belong to root",
                            (unsigned long)st.st_uid);
        return APR_EACCES;
    }
    for (;;) {
        ssize_t got = read(fd, buf + n, sizeof(buf) - n);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            rv = errno;
            close(fd);
            OPENSSL_cleanse(buf, sizeof(buf));
            *err = apr_psprintf(p, "cannot read it: %s", strerror(rv));
            return rv;
        }
        if (got == 0 || (n += (apr_size_t)got) == sizeof(buf)) {
            break;
        }
    }
    close(fd);
    if (n > W4A_MAC_KEY_MAX) {
        OPENSSL_cleanse(buf, sizeof(buf));
        *err = "larger than 4096 bytes";
        return APR_EINVAL;
    }
    /* the key as written by a text editor or by keygen: no trailing blank */
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'
                     || buf[n - 1] == ' ' || buf[n - 1] == '\t')) {
        n--;
    }
    if (n < W4A_MAC_KEY_MIN) {
        OPENSSL_cleanse(buf, sizeof(buf));
        *err = apr_psprintf(p, "%lu bytes: a key has at least %d (w4a-vhostmap "
                            "keygen writes one)", (unsigned long)n,
                            W4A_MAC_KEY_MIN);
        return APR_EINVAL;
    }
    rv = w4a_mac_key_make(key, buf, n, p);
    OPENSSL_cleanse(buf, sizeof(buf));
    return rv;
}

/* HMAC of the name, the expiry and the value, in lower-case hex; 0 when
 * libcrypto failed (no memory). */
static int mac_hex(const w4a_mac_key_t *key, const char *name,
                   const char *exp, const char *value, char hex[MAC_HEX + 1])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0, i;
    apr_size_t nl = strlen(name) + 1, el = strlen(exp) + 1,
               vl = strlen(value), n = sizeof(DOMAIN) + nl + el + vl;
    unsigned char *msg = malloc(n), *at = msg;
    int ok;

    if (!msg) {
        return 0;
    }
    memcpy(at, DOMAIN, sizeof(DOMAIN));
    at += sizeof(DOMAIN);
    memcpy(at, name, nl);
    at += nl;
    memcpy(at, exp, el);
    at += el;
    memcpy(at, value, vl);
    ok = HMAC(EVP_sha256(), key->bytes, (int)key->len, msg, n, md, &mdlen)
         != NULL && mdlen == MAC_HEX / 2;
    free(msg);
    if (!ok) {
        return 0;
    }
    for (i = 0; i < MAC_HEX / 2; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[MAC_HEX] = '\0';
    OPENSSL_cleanse(md, sizeof(md));
    return 1;
}

const char *w4a_mac_seal(const w4a_mac_key_t *key, const char *name,
                         const char *value, apr_int64_t expires,
                         apr_pool_t *p)
{
    char hex[MAC_HEX + 1];
    const char *exp = apr_psprintf(p, "%" APR_INT64_T_FMT,
                                   expires > 0 ? expires : 0);

    if (!mac_hex(key, name, exp, value, hex)) {
        return NULL;
    }
    return apr_pstrcat(p, MAGIC, exp, " ", hex, " ", value, NULL);
}

/* Splits "w4a1 EXP MAC VALUE"; 0 when it is not of that form. */
static int split(const char *v, char exp[EXP_DIGITS + 1], const char **mac,
                 const char **value)
{
    const char *q;
    apr_size_t n;

    if (strncmp(v, MAGIC, MAGIC_LEN)) {
        return 0;
    }
    q = v + MAGIC_LEN;
    for (n = 0; q[n] >= '0' && q[n] <= '9'; n++) {
        if (n == EXP_DIGITS) {
            return 0;
        }
    }
    if (n == 0 || q[n] != ' ' || (n > 1 && q[0] == '0')) {
        return 0;
    }
    memcpy(exp, q, n);
    exp[n] = '\0';
    q += n + 1;
    for (n = 0; n < MAC_HEX; n++) {
        if (!((q[n] >= '0' && q[n] <= '9') || (q[n] >= 'a' && q[n] <= 'f'))) {
            return 0;
        }
    }
    if (q[MAC_HEX] != ' ') {
        return 0;
    }
    *mac = q;
    *value = q + MAC_HEX + 1;
    return 1;
}

int w4a_mac_looks_sealed(const char *v)
{
    char exp[EXP_DIGITS + 1];
    const char *mac, *value;
    return v && split(v, exp, &mac, &value);
}

apr_status_t w4a_mac_open(const w4a_mac_key_t *key, const char *name,
                          const char *sealed, apr_int64_t now,
                          const char **value)
{
    char exp[EXP_DIGITS + 1], want[MAC_HEX + 1];
    const char *mac, *v;
    apr_int64_t e = 0;
    const char *q;

    if (!sealed || !split(sealed, exp, &mac, &v)) {
        return W4A_MAC_EFORGED;
    }
    if (!mac_hex(key, name, exp, v, want)
        || CRYPTO_memcmp(want, mac, MAC_HEX) != 0) {
        return W4A_MAC_EFORGED;
    }
    for (q = exp; *q; q++) {
        if (e > (APR_INT64_MAX - 9) / 10) {
            return W4A_MAC_EFORGED;
        }
        e = e * 10 + (*q - '0');
    }
    if (e != 0 && now >= e) {
        return W4A_MAC_EEXPIRED;
    }
    *value = v;
    return APR_SUCCESS;
}
