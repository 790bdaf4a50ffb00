/**
 * @file media_types.h
 * @brief The media host's content types, decided by the extension alone
 *        (httpd-free).
 */
#ifndef MOD_W4A_MEDIA_TYPES_H
#define MOD_W4A_MEDIA_TYPES_H

#include <apr.h>

/**
 * The built-in type of an extension (case ignored): every extension of
 * the default list, and the usual document types an operator might add
 * (html, xml, json...).
 * @return the type, or NULL when the extension is not known
 */
const char *media_type_builtin(const char *ext);

/**
 * Whether a browser may run @a type as a document of the media origin
 * (script in HTML, XHTML, SVG, any XML with a stylesheet...), parameters
 * ignored.
 * @return 1 or 0
 */
int media_type_active(const char *type);

#endif /* MOD_W4A_MEDIA_TYPES_H */
