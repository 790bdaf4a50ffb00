/*
 * Shared helpers of the libFuzzer targets (t/fuzz/fuzz_*.c): APR set up
 * once, a pool per input, inputs as C strings or as files (a memfd, read
 * through /proc/self/fd/N, since the parsers take paths).
 *
 * A target calls FUZZ_CHECK() for its invariants: a failed one aborts,
 * which libFuzzer reports as a crash and saves the input.
 */
#ifndef W4A_FUZZ_COMMON_H
#define W4A_FUZZ_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <apr_general.h>
#include <apr_pools.h>

#define FUZZ_CHECK(cond, ...)                                           \
    do {                                                                \
        if (!(cond)) {                                                  \
            fprintf(stderr, "fuzz invariant failed at %s:%d: %s: ",     \
                    __FILE__, __LINE__, #cond);                         \
            fprintf(stderr, __VA_ARGS__);                               \
            fputc('\n', stderr);                                        \
            abort();                                                    \
        }                                                               \
    } while (0)

/* The process pool: APR initialised on the first call. */
static apr_pool_t *fuzz_pool(void)
{
    static apr_pool_t *root;

    if (!root) {
        if (apr_initialize() != APR_SUCCESS
            || apr_pool_create(&root, NULL) != APR_SUCCESS) {
            abort();
        }
    }
    return root;
}

/* A NUL-terminated copy of the input (malloc'ed, so ASan sees its end). */
static char *fuzz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);

    if (!s) {
        abort();
    }
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* A memfd holding exactly data[0, size); its path in path (>= 32 bytes).
 * One per process, reused: truncated and rewritten for each input. */
static int fuzz_file(const void *data, size_t size, char *path)
{
    static int fd = -1;
    const char *p = data;

    if (fd < 0) {
        fd = memfd_create("w4a-fuzz", MFD_CLOEXEC);
        if (fd < 0) {
            perror("memfd_create");
            abort();
        }
    }
    if (ftruncate(fd, 0) != 0) {
        abort();
    }
    while (size) {
        ssize_t w = pwrite(fd, p, size, p - (const char *)data);
        if (w <= 0) {
            abort();
        }
        p += w;
        size -= (size_t)w;
    }
    snprintf(path, 32, "/proc/self/fd/%d", fd);
    return fd;
}

#endif /* W4A_FUZZ_COMMON_H */
