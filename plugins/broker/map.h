/* broker: a string-keyed hash map (open addressing, linear probing,
 * backward-shift deletion, so there are no tombstones to clean up).
 *
 * Keys are borrowed: the map stores the key pointer it was given, which must
 * stay valid and unchanged while the entry is in the map (the broker points it
 * into the object the entry holds, e.g. request->id). Values are borrowed too.
 * Not thread-safe: the broker's lock guards every map. */
#ifndef BR_MAP_H
#define BR_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct br_map_slot {
    const char *key; /* NULL = empty */
    uint64_t hash;
    void *value;
} br_map_slot;

typedef struct br_map {
    br_map_slot *slots;
    size_t cap;   /* power of two, or 0 before the first put */
    size_t len;
} br_map;

void br_map_init(br_map *m);
void br_map_free(br_map *m); /* frees the table, not keys or values */
void *br_map_get(const br_map *m, const char *key);
/* Inserts or replaces. Returns 0, or -1 when out of memory. */
int br_map_put(br_map *m, const char *key, void *value);
/* Removes key; returns its value or NULL. */
void *br_map_del(br_map *m, const char *key);

/* Iteration: for (size_t i = 0; br_map_next(m, &i, &k, &v);) ...
 * The map must not change during the walk. */
int br_map_next(const br_map *m, size_t *pos, const char **key, void **value);

#endif
