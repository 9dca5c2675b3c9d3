/* images-db: the plugin's state, shared by the provider (images_provider.c)
 * and the routes (images_routes.c).
 *
 * Ownership: the core owns conf; the plugin owns images_db (freed in fini) and
 * the secret (loaded in start). The storage provider is borrowed from start
 * to stop. */
#ifndef IMAGES_DB_H
#define IMAGES_DB_H

#include <hn/hn.h>

#include "images_store.h"
#include "images_url.h"

typedef struct images_db_conf {
    const char *secret;    /* default: generated once, kept in the database */
    long long max_upload;  /* bytes */
} images_db_conf;

typedef struct images_db {
    hn_plugin *self;
    const hn_api *api;
    const images_db_conf *conf;
    images_store store;
    char secret[IMAGES_SECRET_MAX + 1];
    bool started;
} images_db;

/* images_provider.c: the `images` vtable; state is an images_db *. */
extern const hn_images_vt images_db_vt;

/* images_routes.c: the targets of the signed URLs. */
void images_db_route_get(hn_request *req, void *state);
void images_db_route_put(hn_request *req, void *state);

#endif
