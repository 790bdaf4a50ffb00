/**
 * @file w4a_prom.h
 * @brief Writing the Prometheus text exposition format 0.0.4 (httpd-free,
 *        APR only), and the optional hook through which every module adds
 *        its node-wide counters to mod_w4a_metrics' page.
 *
 * A page is a sequence of families: w4a_prom_family() writes a family's
 * "# HELP" and "# TYPE" lines, then w4a_prom_u64() / w4a_prom_scaled()
 * write its samples, which therefore always follow their own family's
 * header (the format wants a family's lines together).  The writer checks
 * what a module gives it, so a slip in one module cannot make the page
 * unreadable for the whole node:
 * - names: "w4a_" then [a-z0-9_], at most W4A_PROM_NAME_MAX bytes; a
 *   counter's ends in "_total", a gauge's does not; a family is declared
 *   once per page (a second declaration is refused);
 * - labels: at most W4A_PROM_MAX_LABELS per sample, names [a-z_][a-z0-9_]*
 *   (not "__..."), each once; values valid UTF-8 of at most
 *   W4A_PROM_VALUE_MAX bytes, escaped as the format says (\\, \", \n);
 * - a budget of samples (w4a_prom_budget), so that no module can make the
 *   page unbounded.
 * What is refused is not written: the sample (or the family and all its
 * samples) is dropped and counted (w4a_prom_dropped), the first reason
 * kept (w4a_prom_error).  Output goes through a small buffer to a write
 * callback (ap_rwrite in the module, a string in the unit tests): memory
 * stays bounded whatever the page's size.
 */
#ifndef W4A_PROM_H
#define W4A_PROM_H

#include <apr.h>
#include <apr_errno.h>
#include <apr_pools.h>
#include <apr_hooks.h>
#include <apr_optional_hooks.h>

#define W4A_PROM_NAME_MAX     128   /**< bytes of a metric name */
#define W4A_PROM_LABEL_MAX    64    /**< bytes of a label name */
#define W4A_PROM_VALUE_MAX    256   /**< bytes of a label value */
#define W4A_PROM_HELP_MAX     512   /**< bytes of a HELP text (cut beyond) */
#define W4A_PROM_MAX_LABELS   4     /**< labels of one sample */
#define W4A_PROM_MAX_FAMILIES 1024  /**< families of one page */

typedef enum {
    W4A_PROM_COUNTER,
    W4A_PROM_GAUGE
} w4a_prom_type_e;

typedef struct w4a_prom_t w4a_prom_t;

/** Where the page goes. @return APR_SUCCESS or why not (then the writer
 * writes nothing more). */
typedef apr_status_t w4a_prom_write_fn(void *baton, const char *data,
                                       apr_size_t len);

/** A writer to @a write, from @a p. */
w4a_prom_t *w4a_prom_make(w4a_prom_write_fn *write, void *baton,
                          apr_pool_t *p);

/**
 * Samples the writer takes from now on: @a n (0: no limit).  Samples over
 * it are dropped and counted.
 */
void w4a_prom_budget(w4a_prom_t *o, apr_uint32_t n);

/**
 * Begin family @a name: its # HELP and # TYPE lines.
 * @return APR_SUCCESS; APR_EINVAL (a name the rules above refuse),
 *         APR_EEXIST (declared already on this page), APR_ENOSPC (too
 *         many families): then the family's samples are dropped.
 */
apr_status_t w4a_prom_family(w4a_prom_t *o, const char *name,
                             w4a_prom_type_e type, const char *help);

/**
 * A sample of the current family, of value @a v; then label name, label
 * value pairs, ended by NULL: w4a_prom_u64(o, 3, "hosting", h, NULL).
 * @return APR_SUCCESS; APR_EINVAL (no family, a label refused),
 *         APR_ENOSPC (over the budget): the sample is dropped.
 */
apr_status_t w4a_prom_u64(w4a_prom_t *o, apr_uint64_t v, ...);

/**
 * Like w4a_prom_u64, of value @a v / @a scale, written exactly in decimal
 * (e.g. microseconds as seconds: scale 1000000); @a scale is a power of
 * ten from 1 to 10^18.
 */
apr_status_t w4a_prom_scaled(w4a_prom_t *o, apr_uint64_t v,
                             apr_uint64_t scale, ...);

/** A family of one sample without labels: the common case. */
apr_status_t w4a_prom_one(w4a_prom_t *o, const char *name,
                          w4a_prom_type_e type, const char *help,
                          apr_uint64_t v);

/** Write out what is buffered. @return the first write error, if any. */
apr_status_t w4a_prom_flush(w4a_prom_t *o);

/** Samples dropped so far (a dropped family counts 1, and each of its
 * samples 1). */
apr_uint32_t w4a_prom_dropped(const w4a_prom_t *o);

/** Samples written so far. */
apr_uint32_t w4a_prom_samples(const w4a_prom_t *o);

/** Why the first thing was dropped, or NULL. */
const char *w4a_prom_error(const w4a_prom_t *o);

/**
 * Whether @a name is a metric name these rules take for @a type.
 * @return 1 or 0.
 */
int w4a_prom_name_ok(const char *name, w4a_prom_type_e type);

/* ------------------------------------------------------------------ */
/* The hook.                                                          */

#define W4A_DECLARE(type) type

struct request_rec;

/**
 * Optional hook w4a_metrics_collect, run by mod_w4a_metrics when it serves
 * its page (handler "w4a-metrics"), after the per-hosting families.  A
 * module registers with
 *
 *     APR_OPTIONAL_HOOK(w4a, metrics_collect, my_collect, NULL, NULL,
 *                       APR_HOOK_MIDDLE);
 *
 * and writes its node-wide figures only (shared memory, the same whichever
 * child answers; never what only the answering process knows), as
 * families named w4a_<module>_<what>[_total], each family once.
 * @param r the request of the page (its pool for scratch memory)
 * @param out the page
 * @return OK (or DECLINED: nothing to say); either way the next module
 *         runs.
 */
APR_DECLARE_EXTERNAL_HOOK(w4a, W4A, int, metrics_collect,
                          (struct request_rec *r, w4a_prom_t *out))

#endif /* W4A_PROM_H */
