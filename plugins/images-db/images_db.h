/* images-db: the plugin's state. The provider vtable, the signed URLs and
 * the routes they point to are images-fs/shared (images_service.h), shared with
 * images-fs; this plugin gives them a backend of database rows
 * (images_provider.c over images_store.c).
 *
 * Ownership: the core owns conf; the plugin owns images_db (freed in fini),
 * with the service inside it and the service's secret (loaded in start,
 * zeroed in fini). The storage provider is borrowed from start to stop. */
#ifndef IMAGES_DB_H
#define IMAGES_DB_H

#include <hn/hn.h>

#include "images-fs/shared/images_service.h"
#include "images_store.h"

typedef struct images_db_conf {
    const char *secret;    /* default: generated once, kept in the database */
    long long max_upload;  /* bytes */
} images_db_conf;

typedef struct images_db {
    hn_plugin *self;
    const hn_api *api;
    const images_db_conf *conf;
    images_store store;
    images_service svc; /* store = &store; secret and started live here */
} images_db;

/* images_provider.c: the backend of rows; store is an images_store *. */
extern const images_backend images_db_backend;

#endif
