/* kudos: a small string-keyed hash map (chained, grows as it fills).
 * Not thread-safe: the plugin guards its maps with its lock. The map copies
 * keys and owns the copies; values are the caller's. */
#ifndef KD_MAP_H
#define KD_MAP_H

#include <stddef.h>

typedef struct kd_map_node {
    struct kd_map_node *next;
    char *key;
    void *value;
} kd_map_node;

typedef struct kd_map {
    kd_map_node **buckets;
    size_t n_buckets, count;
} kd_map;

int kd_map_init(kd_map *m);
void *kd_map_get(const kd_map *m, const char *key);
/* Adds or replaces; returns 0, or -1 when out of memory. */
int kd_map_put(kd_map *m, const char *key, void *value);
/* Removes key; returns its value (NULL if absent). */
void *kd_map_remove(kd_map *m, const char *key);
/* Calls fn for every entry; fn returns nonzero to remove the entry (its value
 * is then the caller's to free inside fn). */
void kd_map_sweep(kd_map *m, int (*fn)(const char *key, void *value, void *ctx), void *ctx);
/* Frees the map, and every value with free_value when not NULL. */
void kd_map_free(kd_map *m, void (*free_value)(void *));

#endif
