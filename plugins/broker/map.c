/* broker: string-keyed hash map; see map.h. */
#include "map.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static uint64_t map_hash(const char *s) {
    /* FNV-1a, 64 bit: keys are short (UUIDs, names), this is plenty. */
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= 1099511628211ull;
    }
    return h;
}

void br_map_init(br_map *m) {
    m->slots = NULL;
    m->cap = 0;
    m->len = 0;
}

void br_map_free(br_map *m) {
    free(m->slots);
    br_map_init(m);
}

static br_map_slot *map_find(const br_map *m, const char *key, uint64_t h) {
    if (m->cap == 0)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        br_map_slot *s = &m->slots[i];
        if (!s->key)
            return NULL;
        if (s->hash == h && strcmp(s->key, key) == 0)
            return s;
    }
}

void *br_map_get(const br_map *m, const char *key) {
    br_map_slot *s = map_find(m, key, map_hash(key));
    return s ? s->value : NULL;
}

static void map_insert_slot(br_map_slot *slots, size_t cap, const char *key, uint64_t h,
                            void *value) {
    size_t mask = cap - 1;
    size_t i = h & mask;
    while (slots[i].key)
        i = (i + 1) & mask;
    slots[i].key = key;
    slots[i].hash = h;
    slots[i].value = value;
}

static int map_grow(br_map *m) {
    size_t ncap = m->cap ? m->cap * 2 : 64;
    br_map_slot *ns = calloc(ncap, sizeof(*ns));
    if (!ns)
        return -1;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key)
            map_insert_slot(ns, ncap, m->slots[i].key, m->slots[i].hash, m->slots[i].value);
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return 0;
}

int br_map_put(br_map *m, const char *key, void *value) {
    uint64_t h = map_hash(key);
    br_map_slot *s = map_find(m, key, h);
    if (s) {
        s->key = key;
        s->value = value;
        return 0;
    }
    /* keep the load factor under 0.7 so probe chains stay short */
    if ((m->len + 1) * 10 > m->cap * 7 && map_grow(m) != 0)
        return -1;
    map_insert_slot(m->slots, m->cap, key, h, value);
    m->len++;
    return 0;
}

void *br_map_del(br_map *m, const char *key) {
    uint64_t h = map_hash(key);
    br_map_slot *s = map_find(m, key, h);
    if (!s)
        return NULL;
    void *value = s->value;
    size_t mask = m->cap - 1;
    size_t i = (size_t)(s - m->slots);
    /* backward-shift: move later entries of the probe chain into the hole */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!m->slots[j].key)
            break;
        size_t home = m->slots[j].hash & mask;
        /* the entry at j may move to i when i lies cyclically in [home, j) */
        bool movable = (i <= j) ? (home <= i || home > j) : (home <= i && home > j);
        if (movable) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].key = NULL;
    m->slots[i].value = NULL;
    m->len--;
    return value;
}

int br_map_next(const br_map *m, size_t *pos, const char **key, void **value) {
    while (*pos < m->cap) {
        br_map_slot *s = &m->slots[(*pos)++];
        if (s->key) {
            if (key)
                *key = s->key;
            if (value)
                *value = s->value;
            return 1;
        }
    }
    return 0;
}
