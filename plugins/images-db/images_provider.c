/* images-db: the backend images-fs/shared's provider and routes call
 * (images_service.h): images as rows of the storage provider
 * (images_store.c). Every function blocks on the database. */
#include "images_db.h"

static hn_rc db_put(void *store, const char *key, const void *data, size_t len, hn_error *err) {
    return images_store_put(store, key, data, len, err);
}

/* the content type is the one sniffed and stored at upload */
static hn_rc db_get(void *store, const char *key, void **data, size_t *len, char *content_type,
                    hn_error *err) {
    return images_store_get(store, key, data, len, content_type, err);
}

static hn_rc db_exists(void *store, const char *key, hn_error *err) {
    return images_store_exists(store, key, err);
}

static hn_rc db_remove(void *store, const char *key, hn_error *err) {
    return images_store_remove(store, key, err);
}

const images_backend images_db_backend = {
    .put = db_put,
    .get = db_get,
    .exists = db_exists,
    .remove = db_remove,
};
