/**
 * @file w4a_inflight_httpd.h
 * @brief The httpd side of a w4a_inflight table (header only, as
 *        w4a_httpd.h: the including module's LogLevel applies): made
 *        once per httpd process, kept across graceful restarts, a row
 *        claimed per child, the rows of children that are gone cleared by
 *        the parent.  mod_w4a_php's PHP limit and mod_w4a_guard's limit
 *        of all requests are two such tables.
 */
#ifndef W4A_INFLIGHT_HTTPD_H
#define W4A_INFLIGHT_HTTPD_H

#include <unistd.h>

#include <httpd.h>
#include <http_log.h>
#include <ap_mpm.h>

#include "w4a_inflight.h"

/** What differs between two tables: names, sizes and log tags. */
typedef struct w4a_inflight_glue_t {
    const char *key;        /**< process pool userdata key */
    apr_size_t  bytes;      /**< count areas at most this */
    const char *table;      /**< "per-hosting PHP limit" */
    const char *counted;    /**< "PHP requests" */
    const char *off;        /**< what is not enforced without the table */
    const char *tag_create; /**< W4ALOGNO(...) of each line */
    const char *tag_norow;
    const char *tag_exit;
    const char *tag_reap;
} w4a_inflight_glue_t;

/**
 * post_config: the table of @a g, made at the first start of this httpd
 * process with ServerLimit x 2 + 2 rows (a graceful restart cannot change
 * ServerLimit; a child of an old generation may still hold a row while a
 * new one squats its scoreboard slot: twice the slots, and a little
 * more).  @return the table, or NULL (logged: not enforced).
 */
static APR_INLINE w4a_inflight_t *
w4a_inflight_httpd_table(server_rec *s, const w4a_inflight_glue_t *g)
{
    apr_pool_t *pglobal = s->process->pool;
    w4a_inflight_t *t = NULL;
    int daemons = 0;
    apr_size_t size = 0;
    apr_status_t rv;

    apr_pool_userdata_get((void **)&t, g->key, pglobal);
    if (t) {
        return t;
    }
    if (ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &daemons) != APR_SUCCESS
        || daemons < 1) {
        daemons = 16;
    }
    rv = w4a_inflight_create(&t, (apr_uint32_t)daemons * 2 + 2, g->bytes,
                             &size, pglobal);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, "%scannot create the "
                     "shared memory of the %s (%" APR_SIZE_T_FMT " bytes): "
                     "%s", g->tag_create, g->table, size, g->off);
        return NULL;
    }
    apr_pool_userdata_set(t, g->key, apr_pool_cleanup_null, pglobal);
    return t;
}

/** child_init: claim this child's row (cannot fail with the rows above;
 * the child then counts for itself only, and says so). */
static APR_INLINE void
w4a_inflight_httpd_child_init(w4a_inflight_t *t, apr_pool_t *pchild,
                              server_rec *s, const w4a_inflight_glue_t *g)
{
    w4a_inflight_stats_t st;

    if (!t || w4a_inflight_claim(t, (apr_uint32_t)getpid(), pchild)
              == APR_SUCCESS) {
        return;
    }
    w4a_inflight_stats(t, &st);
    ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "%sno free row in the %s "
                 "table (%u rows): the %s of this child (pid %u) are not "
                 "seen by the others", g->tag_norow, g->table, st.rows,
                 g->counted, (apr_uint32_t)getpid());
}

/** child_status (parent): clear the row of a child that has exited; when
 * a child starts, free the rows of processes gone though no exit was
 * seen for them (a parent restarted by hand in between). */
static APR_INLINE void
w4a_inflight_httpd_child_status(w4a_inflight_t *t, server_rec *s, pid_t pid,
                                mpm_child_status state,
                                const w4a_inflight_glue_t *g)
{
    apr_uint64_t held;

    if (!t) {
        return;
    }
    if (state == MPM_CHILD_EXITED) {
        held = w4a_inflight_release_pid(t, (apr_uint32_t)pid);
        if (held) {
            ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "%schild %ld exited "
                         "with %" APR_UINT64_T_FMT " %s counted in flight; "
                         "its counts cleared", g->tag_exit, (long)pid, held,
                         g->counted);
        }
    }
    else if (state == MPM_CHILD_STARTED) {
        apr_uint32_t freed = w4a_inflight_reap(t, (apr_uint32_t)pid, &held);
        if (freed) {
            ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "%s%u rows of "
                         "processes gone without an exit seen freed; %"
                         APR_UINT64_T_FMT " %s counted in flight cleared",
                         g->tag_reap, freed, held, g->counted);
        }
    }
}

#endif
