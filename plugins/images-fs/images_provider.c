/* images-fs: the `images` provider "fs" (core/include/hn/images.h). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "images_fs.h"

static hn_rc not_started(hn_error *err) {
    return images_fail(err, 503, "ImageStoreError", "images-fs: not started");
}

static hn_rc vt_put(void *state, const char *key, const void *data, size_t len, hn_error *err) {
    images_fs *s = state;
    return s->started ? images_file_put(&s->dir, key, data, len, err) : not_started(err);
}

static hn_rc vt_get(void *state, const char *key, void **data, size_t *len, hn_error *err) {
    images_fs *s = state;
    return s->started ? images_file_get(&s->dir, key, data, len, err) : not_started(err);
}

static hn_rc vt_exists(void *state, const char *key, hn_error *err) {
    images_fs *s = state;
    return s->started ? images_file_exists(&s->dir, key, err) : not_started(err);
}

static hn_rc vt_remove(void *state, const char *key, hn_error *err) {
    images_fs *s = state;
    return s->started ? images_file_remove(&s->dir, key, err) : not_started(err);
}

hn_rc images_signed_url(images_fs *s, const char *method, const char *route, const char *key,
                        int ttl_s, char *out, size_t out_len, hn_error *err) {
    if (!s->started)
        return not_started(err);
    if (!images_key_valid(key))
        return images_fail(err, 400, "InvalidImageKey", "images-fs: invalid image key");
    if (ttl_s <= 0)
        return images_fail(err, 400, "BadRequest", "images-fs: a URL needs a positive ttl");
    int64_t expires = (int64_t)time(NULL) + ttl_s;
    char sig[IMAGES_SIG_HEX + 1];
    images_sign(s->secret, method, key, expires, sig);
    int n = snprintf(out, out_len, "%s/%s/%s?expires=%" PRId64 "&sig=%s", s->api->public_url(),
                     route, key, expires, sig);
    if (n < 0 || (size_t)n >= out_len)
        return images_fail(err, 500, "ImageStoreError", "images-fs: URL buffer too small");
    return HN_OK;
}

static hn_rc vt_url_get(void *state, const char *key, int ttl_s, char *out, size_t out_len,
                        hn_error *err) {
    return images_signed_url(state, "GET", "images", key, ttl_s, out, out_len, err);
}

static hn_rc vt_url_put(void *state, const char *key, int ttl_s, char *out, size_t out_len,
                        hn_error *err) {
    return images_signed_url(state, "PUT", "upload", key, ttl_s, out, out_len, err);
}

const hn_images_vt images_fs_vt = {
    .size = sizeof(hn_images_vt),
    .version = HN_IMAGES_VERSION,
    .put = vt_put,
    .get = vt_get,
    .exists = vt_exists,
    .remove = vt_remove,
    .url_get = vt_url_get,
    .url_put = vt_url_put,
};
