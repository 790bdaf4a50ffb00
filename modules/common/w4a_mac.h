/**
 * @file w4a_mac.h
 * @brief Signed values for a cache others can write (httpd-free): an
 *        HMAC-SHA256 (OpenSSL's libcrypto) over the value, the name it is
 *        stored under and an expiry time, with a key file that only the
 *        nodes and the tools can read.
 *
 * A sealed value is one line of text:
 *
 *     w4a1 EXPIRES MAC VALUE
 *
 * EXPIRES is a Unix time in seconds (0: never), MAC 64 lower-case hex
 * digits of HMAC-SHA256(key, "w4a-mc-1" NUL NAME NUL EXPIRES NUL VALUE).
 * Binding NAME stops a signed value being copied under another name (the
 * record of a.example into b.example's key); EXPIRES stops an old signed
 * value being put back after its time.
 */
#ifndef W4A_MAC_H
#define W4A_MAC_H

#include <apr.h>
#include <apr_errno.h>
#include <apr_pools.h>

#define W4A_MAC_KEY_MIN   32        /**< bytes of a key, at least */
#define W4A_MAC_KEY_MAX   4096      /**< bytes of a key file, at most */

/** A value whose MAC is wrong, or that is not a sealed value at all. */
#define W4A_MAC_EFORGED   (APR_OS_START_USERERR + 101)
/** A value with a good MAC whose expiry time has passed. */
#define W4A_MAC_EEXPIRED  (APR_OS_START_USERERR + 102)

typedef struct w4a_mac_key_t w4a_mac_key_t;

/**
 * Read a key file.  Refused when it is not a regular file, is writable by
 * its group or others or readable by others (mode & 027), belongs to
 * neither root nor the caller, or holds fewer than W4A_MAC_KEY_MIN bytes
 * (trailing blanks and newlines not counted) or more than W4A_MAC_KEY_MAX.
 * @param err  on failure, why (allocated from @a p)
 * @return APR_SUCCESS; APR_EACCES (modes, owner); APR_EINVAL (size, type);
 *         an open or read error.
 */
apr_status_t w4a_mac_key_load(w4a_mac_key_t **key, const char *path,
                              const char **err, apr_pool_t *p);

/** A key from bytes (at least W4A_MAC_KEY_MIN of them), for tests. */
apr_status_t w4a_mac_key_make(w4a_mac_key_t **key, const void *bytes,
                              apr_size_t len, apr_pool_t *p);

/**
 * Seal @a value for storing under @a name until @a expires (Unix seconds,
 * 0: never).  @return the sealed line, allocated from @a p; NULL when
 * libcrypto failed (out of memory).
 */
const char *w4a_mac_seal(const w4a_mac_key_t *key, const char *name,
                         const char *value, apr_int64_t expires,
                         apr_pool_t *p);

/**
 * Check a sealed value read under @a name at time @a now (Unix seconds).
 * @param value  on APR_SUCCESS, the value (points into @a sealed)
 * @return APR_SUCCESS; W4A_MAC_EFORGED (not sealed, or bad MAC);
 *         W4A_MAC_EEXPIRED (good MAC, now >= expiry).
 */
apr_status_t w4a_mac_open(const w4a_mac_key_t *key, const char *name,
                          const char *sealed, apr_int64_t now,
                          const char **value);

/** 1 when @a v has the form of a sealed value (whatever its MAC). */
int w4a_mac_looks_sealed(const char *v);

#endif /* W4A_MAC_H */
