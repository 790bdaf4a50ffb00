/*
 * The text map compiler (w4a_map_compile in modules/common/w4a_map.c).
 *
 * Input: one byte of options (skip_bad, min_uid 1000, bases /datas and
 * /home), then the text map, given to the compiler as a file (a memfd).
 *
 * Invariants:
 * - a check-only run and a compiling run agree (status, counts);
 * - every message is "<path>:<line>: ..." or names the path;
 * - an index written is opened by w4a_map_open (its own validation), holds
 *   the counted records and names, finds every name it holds, and each
 *   record's cache line (w4a_record_format) parses back to it.
 *
 * A map that compiles to no record is written and opened too (the NULL
 * record table of an empty map once reached memcpy: UBSan, issue 14,
 * fixed in w4a_map.c); FUZZ_EMPTY_MAPS=0 at build time skips them.
 */
#include <stdlib.h>

#include "fuzz_map_common.h"

#ifndef FUZZ_EMPTY_MAPS
#define FUZZ_EMPTY_MAPS 1
#endif

static char index_dir[64], index_path[80];
static char text_path[32];

static void remove_index_dir(void)
{
    unlink(index_path);
    rmdir(index_dir);
}

typedef struct {
    unsigned n;
} msgs_t;

static void on_msg(void *baton, int level, const char *msg)
{
    msgs_t *m = baton;

    FUZZ_CHECK(level == W4A_LOG_ERR || level == W4A_LOG_WARNING,
               "level %d", level);
    FUZZ_CHECK(!strncmp(msg, text_path, strlen(text_path))
               || !strncmp(msg, index_path, strlen(index_path)),
               "message does not name the file: %s", msg);
    m->n++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    w4a_map_checks_t k;
    w4a_map_stats_t st1, st2;
    w4a_logger_t log;
    msgs_t msgs = { 0 };
    apr_status_t rv1, rv2;
    w4a_map_t *m = NULL;
    const char *err = NULL;

    if (!index_path[0]) {
        strcpy(index_dir, "/dev/shm/w4a-fuzz-map.XXXXXX");
        if (!mkdtemp(index_dir)) {
            abort();
        }
        snprintf(index_path, sizeof(index_path), "%s/index", index_dir);
        atexit(remove_index_dir);
    }
    if (size < 1) {
        return 0;
    }
    apr_pool_create(&p, fuzz_pool());
    fuzz_checks(data[0], &k, apr_array_make(p, 2, sizeof(const char *)));
    fuzz_file(data + 1, size - 1, text_path);
    log.fn = on_msg;
    log.baton = &msgs;

    rv1 = w4a_map_compile(text_path, NULL, &k, &log, &st1, p);
    FUZZ_CHECK(rv1 == APR_SUCCESS || rv1 == APR_EINVAL, "check-only: %d", rv1);
    FUZZ_CHECK((rv1 == APR_SUCCESS) == (st1.errors == 0),
               "status %d with %u errors", rv1, st1.errors);
    /* (errors may exceed lines: a line with a NUL byte is an error, not
     * counted as a record line) */
    FUZZ_CHECK(st1.records <= st1.lines, "counts: %u records of %u lines",
               st1.records, st1.lines);
    if (!k.skip_bad) {
        FUZZ_CHECK(st1.errors || st1.records == st1.lines,
                   "no error but %u records of %u lines", st1.records,
                   st1.lines);
    }
    if (st1.records == 0 && !FUZZ_EMPTY_MAPS) {
        apr_pool_destroy(p);
        return 0;
    }

    unlink(index_path);
    rv2 = w4a_map_compile(text_path, index_path, &k, &log, &st2, p);
    FUZZ_CHECK(st2.records == st1.records && st2.names == st1.names
               && st2.errors == st1.errors && st2.lines == st1.lines,
               "the compiling run counts otherwise");
    if (k.skip_bad) {
        FUZZ_CHECK(rv2 == APR_SUCCESS || (rv2 == APR_EINVAL && !st2.records),
                   "skip_bad: status %d with %u records", rv2, st2.records);
    }
    else {
        FUZZ_CHECK(rv2 == rv1, "compiling: %d, checking: %d", rv2, rv1);
    }
    if (rv2 == APR_SUCCESS) {
        rv2 = w4a_map_open(&m, index_path, &err, p);
        FUZZ_CHECK(rv2 == APR_SUCCESS, "own index refused: %s", err);
        FUZZ_CHECK(w4a_map_records(m) == st2.records
                   && w4a_map_names(m) == st2.names,
                   "index holds %u/%u, compiler counted %u/%u",
                   w4a_map_records(m), w4a_map_names(m), st2.records,
                   st2.names);
        check_index(m, &k, p);
        w4a_map_close(m);
    }
    else {
        FUZZ_CHECK(access(index_path, F_OK) != 0, "refused map written");
    }
    apr_pool_destroy(p);
    return 0;
}
