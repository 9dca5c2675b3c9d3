/* images-db: the `images` provider "db" (core/include/hn/images.h). Every
 * function blocks on the database (as images-fs blocks on the disk). */
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "images_db.h"

static hn_rc not_started(hn_error *err) {
    return images_fail(err, 503, "ImageStoreError", "images-db: not started");
}

static hn_rc vt_put(void *state, const char *key, const void *data, size_t len, hn_error *err) {
    images_db *s = state;
    return s->started ? images_store_put(&s->store, key, data, len, err) : not_started(err);
}

static hn_rc vt_get(void *state, const char *key, void **data, size_t *len, hn_error *err) {
    images_db *s = state;
    return s->started ? images_store_get(&s->store, key, data, len, NULL, err)
                      : not_started(err);
}

static hn_rc vt_exists(void *state, const char *key, hn_error *err) {
    images_db *s = state;
    return s->started ? images_store_exists(&s->store, key, err) : not_started(err);
}

static hn_rc vt_remove(void *state, const char *key, hn_error *err) {
    images_db *s = state;
    return s->started ? images_store_remove(&s->store, key, err) : not_started(err);
}

/* "<public_url>/<route>/<key>?expires=..&sig=..", as images-fs builds it. */
static hn_rc signed_url(images_db *s, const char *method, const char *route, const char *key,
                        int ttl_s, char *out, size_t out_len, hn_error *err) {
    if (!s->started)
        return not_started(err);
    if (!images_key_valid(key))
        return images_fail(err, 400, "InvalidImageKey", "images-db: invalid image key");
    if (ttl_s <= 0)
        return images_fail(err, 400, "BadRequest", "images-db: a URL needs a positive ttl");
    int64_t expires = (int64_t)time(NULL) + ttl_s;
    char sig[IMAGES_SIG_HEX + 1];
    images_sign(s->secret, method, key, expires, sig);
    int n = snprintf(out, out_len, "%s/%s/%s?expires=%" PRId64 "&sig=%s", s->api->public_url(),
                     route, key, expires, sig);
    if (n < 0 || (size_t)n >= out_len)
        return images_fail(err, 500, "ImageStoreError", "images-db: URL buffer too small");
    return HN_OK;
}

static hn_rc vt_url_get(void *state, const char *key, int ttl_s, char *out, size_t out_len,
                        hn_error *err) {
    return signed_url(state, "GET", "images", key, ttl_s, out, out_len, err);
}

static hn_rc vt_url_put(void *state, const char *key, int ttl_s, char *out, size_t out_len,
                        hn_error *err) {
    return signed_url(state, "PUT", "upload", key, ttl_s, out, out_len, err);
}

const hn_images_vt images_db_vt = {
    .size = sizeof(hn_images_vt),
    .version = HN_IMAGES_VERSION,
    .put = vt_put,
    .get = vt_get,
    .exists = vt_exists,
    .remove = vt_remove,
    .url_get = vt_url_get,
    .url_put = vt_url_put,
};
