/*
 * The index loader (w4a_map_open in modules/common/w4a_map.c) on a file
 * (a memfd) of any content.
 *
 * Input: one byte of fix-ups, then the file.  So that mutations get past
 * the header and reach the structure checks, the target repairs, before
 * opening, what a random file gets wrong first:
 *   bit 0 clear: magic, format, header size, reserved and file size;
 *   bit 1 clear: the section offsets and lengths, from the counts;
 *   bit 2 clear: the checksum (w4a-sum64 of the file but its own 8 bytes).
 * A set bit leaves those bytes as the fuzzer wrote them.
 *
 * Invariants: w4a_map_open never reads outside the file; an index it
 * accepts is safe to use: every lookup of every stored name and every
 * iterated record gives strings inside the mapping, terminated, a known
 * state and consistent flags.
 */
#include "fuzz_map_common.h"

static void put32(unsigned char *b, size_t off, apr_uint32_t v)
{
    v = LE32(v);
    memcpy(b + off, &v, 4);
}

static void put64(unsigned char *b, size_t off, apr_uint64_t v)
{
    v = LE64(v);
    memcpy(b + off, &v, 8);
}

static apr_uint32_t get32(const unsigned char *b, size_t off)
{
    apr_uint32_t v;
    memcpy(&v, b + off, 4);
    return LE32(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[32];
    unsigned char *b;
    size_t n;
    unsigned fix;
    apr_pool_t *p;
    w4a_map_t *m = NULL;
    const char *err = NULL;
    apr_status_t rv;

    if (size < 1) {
        return 0;
    }
    fix = data[0];
    n = size - 1;
    b = malloc(n ? n : 1);
    memcpy(b, data + 1, n);
    if (n >= sizeof(map_header_t)) {
        if (!(fix & 1)) {
            memcpy(b, MAGIC, 8);
            put32(b, offsetof(map_header_t, format), FORMAT);
            put32(b, offsetof(map_header_t, header_size), sizeof(map_header_t));
            put32(b, offsetof(map_header_t, reserved), 0);
            put64(b, offsetof(map_header_t, file_size), n);
        }
        if (!(fix & 2)) {
            apr_uint64_t slots = sizeof(map_header_t)
                + (apr_uint64_t)get32(b, offsetof(map_header_t, nslots)) * 16;
            apr_uint64_t recs = slots
                + (apr_uint64_t)get32(b, offsetof(map_header_t, nrecords)) * 40;
            put64(b, offsetof(map_header_t, slots_off), sizeof(map_header_t));
            put64(b, offsetof(map_header_t, slots_len),
                  slots - sizeof(map_header_t));
            put64(b, offsetof(map_header_t, records_off), slots);
            put64(b, offsetof(map_header_t, records_len), recs - slots);
            put64(b, offsetof(map_header_t, strings_off), recs);
            put64(b, offsetof(map_header_t, strings_len),
                  recs <= n ? n - recs : 0);
        }
        if (!(fix & 4)) {
            sum64_t sum;
            sum_init(&sum);
            sum_update(&sum, b, CHECKSUM_AT);
            sum_update(&sum, b + sizeof(map_header_t),
                       n - sizeof(map_header_t));
            put64(b, CHECKSUM_AT, sum_final(&sum));
        }
    }
    fuzz_file(b, n, path);
    free(b);

    apr_pool_create(&p, fuzz_pool());
    rv = w4a_map_open(&m, path, &err, p);
    if (rv == APR_SUCCESS) {
        FUZZ_CHECK(m->size == n, "mapped %zu of %zu bytes", m->size, n);
        check_index(m, NULL, NULL);
        w4a_map_close(m);
    }
    else {
        FUZZ_CHECK(err && *err, "refused without a reason");
    }
    apr_pool_destroy(p);
    return 0;
}
