/*
 * mod_w4a_vhost: the static files of hostings, served from the descriptor
 * that was checked.
 *
 * A tenant can swap any two names of its own tree at any moment
 * (renameat2 RENAME_EXCHANGE), so a check made on a path (core's directory
 * walk, our fixup) says nothing about what a later open() of that path
 * finds.  For a hosting's file, this handler, ordered just before core's
 * default handler (so it takes exactly what core would have served),
 * opens the path once, without blocking (a FIFO swapped in after the
 * fixup opens at once and is refused), checks the descriptor with fstat
 * (a regular file, owned by the hosting's uid) and sends that very
 * descriptor, as core would: validators, ranges, conditional requests.
 *
 * The file bucket never maps the file: a tenant truncating a file while it
 * is read through a mapping would kill the child with SIGBUS.  FileETag
 * Digest reads the file too, through the request's EnableMMAP: that
 * request gets EnableMMAP off first.
 */

#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>
#include <util_md5.h>

#include <apr_buckets.h>
#include <apr_file_io.h>
#include <apr_strings.h>

#include "vhost_private.h"
#include "w4a_util.h"

/* core.c's AP_CONTENT_MD5_ON (ContentDigest on), not in http_core.h */
#define CONTENT_MD5_ON 1

const char *vhost_filetype_name(apr_filetype_e t)
{
    switch (t) {
    case APR_REG:  return "regular file";
    case APR_DIR:  return "directory";
    case APR_CHR:  return "character device";
    case APR_BLK:  return "block device";
    case APR_PIPE: return "fifo";
    case APR_LNK:  return "symlink";
    case APR_SOCK: return "socket";
    default:       return "special file";
    }
}

int vhost_refuse_type(request_rec *r, const w4a_hosting_t *rec,
                      apr_filetype_e t)
{
    vhost_refused(r, CNT_SPECIAL_DENIED);
    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00161)
                  "hosting %s: %s is a %s, not a regular file or directory; "
                  "answered 403", rec->hosting, r->filename,
                  vhost_filetype_name(t));
    return HTTP_FORBIDDEN;
}

/* This request's core configuration, with EnableMMAP off: a per-request
 * copy, the merged configuration being shared with other requests. */
static void mmap_off(request_rec *r)
{
    ap_conf_vector_t *add = ap_create_per_dir_config(r->pool);
    core_dir_config *d = core_module.create_dir_config(r->pool, NULL);

    d->enable_mmap = ENABLE_MMAP_OFF;
    ap_set_core_module_config(add, d);
    r->per_dir_config = ap_merge_per_dir_configs(r->pool, r->per_dir_config,
                                                 add);
}

/* 1 when ap_set_etag_fd() will read the file for a digest. */
static int etag_reads_file(const request_rec *r, const core_dir_config *d)
{
    etag_components_t bits = (d->etag_bits & ~d->etag_remove) | d->etag_add;
    return (bits & ETAG_DIGEST) || AP_REQUEST_IS_STRONG_ETAG(r);
}

static int vhost_static_handler(request_rec *r)
{
    const w4a_hosting_t *rec;
    core_dir_config *d;
    apr_file_t *fd;
    apr_finfo_t fi;
    apr_bucket_brigade *bb;
    apr_bucket *e;
    apr_int32_t flags = APR_FOPEN_READ | APR_FOPEN_BINARY | APR_FOPEN_NONBLOCK;
    apr_status_t rv;
    int errstatus;

    /* What core would open; what it answers without opening (no file, a
     * directory, refused path info, a method it refuses) stays its own. */
    if ((r->method_number != M_GET && r->method_number != M_POST)
        || !r->filename || r->finfo.filetype == APR_NOFILE
        || r->finfo.filetype == APR_DIR
        || !(rec = vhost_request_hosting(r))
        || !w4a_path_under(r->filename, rec->docroot)) {
        return DECLINED;
    }
    if (r->used_path_info != AP_REQ_ACCEPT_PATH_INFO && r->path_info
        && *r->path_info) {
        return DECLINED;
    }
    if (r->method_number == M_POST) {
        core_request_config *rc = ap_get_core_module_config(r->request_config);
        if (!rc->deliver_script) {
            return DECLINED;
        }
    }

    d = ap_get_core_module_config(r->per_dir_config);
    ap_allow_standard_methods(r, MERGE_ALLOW, M_GET, M_OPTIONS, M_POST, -1);
    if ((errstatus = ap_discard_request_body(r)) != OK) {
        return errstatus;
    }
#if APR_HAS_SENDFILE
    flags |= AP_SENDFILE_ENABLED(d->enable_sendfile);
#endif
    /* Once, without blocking on a FIFO; a tty never becomes the child's
     * controlling terminal (children are no session leaders). */
    rv = apr_file_open(&fd, r->filename, flags, 0, r->pool);
    if (rv != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, W4ALOGNO(00162)
                      "hosting %s: cannot open %s; answered 403",
                      rec->hosting, r->filename);
        return HTTP_FORBIDDEN;
    }
    rv = apr_file_info_get(&fi, APR_FINFO_MIN | APR_FINFO_OWNER
                           | APR_FINFO_IDENT | APR_FINFO_PROT, fd);
    if (rv != APR_SUCCESS && rv != APR_INCOMPLETE) {
        apr_file_close(fd);
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, W4ALOGNO(00162)
                      "hosting %s: cannot fstat %s; answered 403",
                      rec->hosting, r->filename);
        return HTTP_FORBIDDEN;
    }
    if (fi.filetype != APR_REG) {
        apr_file_close(fd);
        return vhost_refuse_type(r, rec, fi.filetype);
    }
    if (vhost_owner_check_on(r) && (apr_uint32_t)fi.user != rec->uid) {
        apr_file_close(fd);
        vhost_refused(r, CNT_OWNER_DENIED);
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, W4ALOGNO(00160)
                      "hosting %s: %s (the file opened) belongs to uid %ld, "
                      "not the hosting's uid %u; answered 403", rec->hosting,
                      r->filename, (long)fi.user, rec->uid);
        return HTTP_FORBIDDEN;
    }
    /* From here on, what the response says is what the descriptor is. */
    fi.fname = r->finfo.fname;
    r->finfo = fi;

    ap_update_mtime(r, r->finfo.mtime);
    ap_set_last_modified(r);
    if (etag_reads_file(r, d) && d->enable_mmap != ENABLE_MMAP_OFF) {
        mmap_off(r);
    }
    ap_set_etag_fd(r, fd);
    ap_set_accept_ranges(r);
    ap_set_content_length(r, r->finfo.size);
    if (d->content_md5 == CONTENT_MD5_ON
        && r->output_filters->frec->ftype != AP_FTYPE_RESOURCE) {
        apr_table_setn(r->headers_out, "Content-MD5",
                       ap_md5digest(r->pool, fd));
    }

    bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    if ((errstatus = ap_meets_conditions(r)) != OK) {
        apr_file_close(fd);
        r->status = errstatus;
    }
    else {
        e = apr_brigade_insert_file(bb, fd, 0, r->finfo.size, r->pool);
#if APR_HAS_MMAP
        /* the pieces of a large file share this setting */
        apr_bucket_file_enable_mmap(e, 0);
#endif
    }
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(r->connection->bucket_alloc));
    return ap_pass_brigade_fchk(r, bb, NULL);
}

void vhost_static_register_hooks(void)
{
    /* Just before core's default handler (APR_HOOK_REALLY_LAST): every
     * module that serves a handler of its own had its turn. */
    ap_hook_handler(vhost_static_handler, NULL, NULL, APR_HOOK_REALLY_LAST - 1);
}
