/* images-fs: the backend images-fs/shared's provider and routes call
 * (images_service.h): one file per key in the images folder
 * (images_files.c). Every function blocks on the disk. */
#include <stdio.h>

#include "images_fs.h"

static hn_rc fs_put(void *store, const char *key, const void *data, size_t len, hn_error *err) {
    return images_file_put(store, key, data, len, err);
}

/* files keep no type: it is sniffed from the bytes at every read */
static hn_rc fs_get(void *store, const char *key, void **data, size_t *len, char *content_type,
                    hn_error *err) {
    hn_rc rc = images_file_get(store, key, data, len, err);
    if (rc == HN_OK && content_type)
        snprintf(content_type, 64, "%s", images_content_type(*data, *len));
    return rc;
}

static hn_rc fs_exists(void *store, const char *key, hn_error *err) {
    return images_file_exists(store, key, err);
}

static hn_rc fs_remove(void *store, const char *key, hn_error *err) {
    return images_file_remove(store, key, err);
}

const images_backend images_fs_backend = {
    .put = fs_put,
    .get = fs_get,
    .exists = fs_exists,
    .remove = fs_remove,
};
