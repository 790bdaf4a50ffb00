/**
 * @file w4a_map_private.h
 * @brief Between w4a_map.c (the index) and w4a_map_copy.c (its private
 *        copies): not for the modules or tools.
 */
#ifndef W4A_MAP_PRIVATE_H
#define W4A_MAP_PRIVATE_H

#include "w4a_map.h"

/**
 * Load and validate the index open as @a fd (a regular file): @a shared
 * maps the file itself read-only (only for a file nothing writes again:
 * a private copy), else it is read into private memory.
 * @param name  the file, for the messages
 * @return as w4a_map_open().
 */
apr_status_t w4a_map__load_fd(w4a_map_t **map, int fd, int shared,
                              const char *name, const char **err,
                              apr_pool_t *p);

/** The map's private copy (malloc'ed; the map frees it), for
 *  w4a_map_discard(). */
void w4a_map__set_copy(w4a_map_t *map, char *copy_path);
const char *w4a_map__copy_path(const w4a_map_t *map);

#endif /* W4A_MAP_PRIVATE_H */
