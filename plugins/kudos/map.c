/* kudos: string map; see map.h. */
#include "map.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t hash(const char *s) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

int kd_map_init(kd_map *m) {
    m->n_buckets = 64;
    m->count = 0;
    m->buckets = calloc(m->n_buckets, sizeof(*m->buckets));
    return m->buckets ? 0 : -1;
}

static kd_map_node **slot(const kd_map *m, const char *key) {
    kd_map_node **p = &m->buckets[hash(key) & (m->n_buckets - 1)];
    while (*p && strcmp((*p)->key, key) != 0)
        p = &(*p)->next;
    return p;
}

void *kd_map_get(const kd_map *m, const char *key) {
    kd_map_node *n = *slot(m, key);
    return n ? n->value : NULL;
}

static void grow(kd_map *m) {
    size_t nb = m->n_buckets * 2;
    kd_map_node **b = calloc(nb, sizeof(*b));
    if (!b)
        return; /* stays correct, only slower */
    for (size_t i = 0; i < m->n_buckets; i++) {
        kd_map_node *n = m->buckets[i];
        while (n) {
            kd_map_node *next = n->next;
            size_t at = hash(n->key) & (nb - 1);
            n->next = b[at];
            b[at] = n;
            n = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->n_buckets = nb;
}

int kd_map_put(kd_map *m, const char *key, void *value) {
    kd_map_node **p = slot(m, key);
    if (*p) {
        (*p)->value = value;
        return 0;
    }
    kd_map_node *n = malloc(sizeof(*n));
    char *k = strdup(key);
    if (!n || !k) {
        free(n);
        free(k);
        return -1;
    }
    n->key = k;
    n->value = value;
    n->next = NULL;
    *p = n;
    if (++m->count > m->n_buckets * 2)
        grow(m);
    return 0;
}

void *kd_map_remove(kd_map *m, const char *key) {
    kd_map_node **p = slot(m, key);
    kd_map_node *n = *p;
    if (!n)
        return NULL;
    *p = n->next;
    void *v = n->value;
    free(n->key);
    free(n);
    m->count--;
    return v;
}

void kd_map_sweep(kd_map *m, int (*fn)(const char *key, void *value, void *ctx), void *ctx) {
    for (size_t i = 0; i < m->n_buckets; i++) {
        kd_map_node **p = &m->buckets[i];
        while (*p) {
            kd_map_node *n = *p;
            if (fn(n->key, n->value, ctx)) {
                *p = n->next;
                free(n->key);
                free(n);
                m->count--;
            } else {
                p = &n->next;
            }
        }
    }
}

void kd_map_free(kd_map *m, void (*free_value)(void *)) {
    if (!m->buckets)
        return;
    for (size_t i = 0; i < m->n_buckets; i++) {
        kd_map_node *n = m->buckets[i];
        while (n) {
            kd_map_node *next = n->next;
            if (free_value)
                free_value(n->value);
            free(n->key);
            free(n);
            n = next;
        }
    }
    free(m->buckets);
    m->buckets = NULL;
    m->count = 0;
}
