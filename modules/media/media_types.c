/*
 * The media host's content types: see media_types.h.
 */
#include <string.h>

#include <apr_lib.h>
#include <apr_strings.h>

#include "media_types.h"

static const struct {
    const char *ext, *type;
} builtin[] = {
    { "css", "text/css" },           { "js", "text/javascript" },
    { "mjs", "text/javascript" },    { "map", "application/json" },
    { "jpg", "image/jpeg" },         { "jpeg", "image/jpeg" },
    { "png", "image/png" },          { "gif", "image/gif" },
    { "webp", "image/webp" },        { "avif", "image/avif" },
    { "svg", "image/svg+xml" },      { "svgz", "image/svg+xml" },
    { "ico", "image/vnd.microsoft.icon" },
    { "bmp", "image/bmp" },          { "tif", "image/tiff" },
    { "tiff", "image/tiff" },        { "jxl", "image/jxl" },
    { "woff", "font/woff" },         { "woff2", "font/woff2" },
    { "ttf", "font/ttf" },           { "otf", "font/otf" },
    { "eot", "application/vnd.ms-fontobject" },
    { "mp4", "video/mp4" },          { "webm", "video/webm" },
    { "ogv", "video/ogg" },          { "ogg", "audio/ogg" },
    { "mp3", "audio/mpeg" },         { "m4a", "audio/mp4" },
    { "wav", "audio/wav" },          { "flac", "audio/flac" },
    { "vtt", "text/vtt" },           { "pdf", "application/pdf" },
    { "txt", "text/plain" },         { "csv", "text/csv" },
    { "json", "application/json" },  { "wasm", "application/wasm" },
    { "zip", "application/zip" },    { "gz", "application/gzip" },
    { "webmanifest", "application/manifest+json" },
    /* documents: served only as W4AMediaActiveTypes says */
    { "html", "text/html" },         { "htm", "text/html" },
    { "shtml", "text/html" },        { "xhtml", "application/xhtml+xml" },
    { "xht", "application/xhtml+xml" },
    { "xml", "application/xml" },    { "xsl", "application/xslt+xml" },
    { "xslt", "application/xslt+xml" },
    { "rss", "application/rss+xml" }, { "atom", "application/atom+xml" },
    { "mht", "multipart/related" },  { "mhtml", "multipart/related" },
    { NULL, NULL }
};

const char *media_type_builtin(const char *ext)
{
    int i;
    for (i = 0; ext && builtin[i].ext; i++) {
        if (!strcasecmp(builtin[i].ext, ext)) {
            return builtin[i].type;
        }
    }
    return NULL;
}

static int type_is(const char *type, apr_size_t len, const char *what)
{
    return strlen(what) == len && !strncasecmp(type, what, len);
}

int media_type_active(const char *type)
{
    apr_size_t len;

    if (!type) {
        return 0;
    }
    while (*type == ' ' || *type == '\t') {
        type++;
    }
    len = strcspn(type, "; \t");
    /* (PDF is not: browsers' viewers run its scripts apart from the
     * origin.  JavaScript runs only where a page includes it.) */
    return type_is(type, len, "text/html")
           || type_is(type, len, "application/xhtml+xml")
           || type_is(type, len, "image/svg+xml")
           || type_is(type, len, "text/xml")
           || type_is(type, len, "application/xml")
           || type_is(type, len, "text/xsl")
           || type_is(type, len, "application/xslt+xml")
           || type_is(type, len, "application/vnd.wap.xhtml+xml")
           || type_is(type, len, "multipart/related")
           || type_is(type, len, "multipart/x-mixed-replace")
           || type_is(type, len, "message/rfc822")
           || (len > 4 && !strncasecmp(type + len - 4, "+xml", 4))
           || (len > 4 && !strncasecmp(type + len - 4, "/xml", 4));
}
