/* images-fs/shared: the `images` provider vtable over a backend, and its signed
 * URLs (see images_service.h). */
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "images_service.h"

static hn_rc not_started(const images_service *svc, hn_error *err) {
    return images_fail(err, 503, "ImageStoreError", "%s: not started", svc->name);
}

static hn_rc vt_put(void *state, const char *key, const void *data, size_t len, hn_error *err) {
    images_service *svc = state;
    return svc->started ? svc->backend->put(svc->store, key, data, len, err)
                        : not_started(svc, err);
}

static hn_rc vt_get(void *state, const char *key, void **data, size_t *len, hn_error *err) {
    images_service *svc = state;
    return svc->started ? svc->backend->get(svc->store, key, data, len, NULL, err)
                        : not_started(svc, err);
}

static hn_rc vt_exists(void *state, const char *key, hn_error *err) {
    images_service *svc = state;
    return svc->started ? svc->backend->exists(svc->store, key, err) : not_started(svc, err);
}

static hn_rc vt_remove(void *state, const char *key, hn_error *err) {
    images_service *svc = state;
    return svc->started ? svc->backend->remove(svc->store, key, err) : not_started(svc, err);
}

/* "<public_url>/<route>/<key>?expires=..&sig=..". */
static hn_rc signed_url(images_service *svc, const char *method, const char *route,
                        const char *key, int ttl_s, char *out, size_t out_len, hn_error *err) {
    if (!svc->started)
        return not_started(svc, err);
    if (!images_key_valid(key))
        return images_fail(err, 400, "InvalidImageKey", "%s: invalid image key", svc->name);
    if (ttl_s <= 0)
        return images_fail(err, 400, "BadRequest", "%s: a URL needs a positive ttl", svc->name);
    int64_t expires = (int64_t)time(NULL) + ttl_s;
    char sig[IMAGES_SIG_HEX + 1];
    images_sign(svc->secret, method, key, expires, sig);
    int n = snprintf(out, out_len, "%s/%s/%s?expires=%" PRId64 "&sig=%s", svc->api->public_url(),
                     route, key, expires, sig);
    if (n < 0 || (size_t)n >= out_len)
        return images_fail(err, 500, "ImageStoreError", "%s: URL buffer too small", svc->name);
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

const hn_images_vt images_service_vt = {
    .size = sizeof(hn_images_vt),
    .version = HN_IMAGES_VERSION,
    .put = vt_put,
    .get = vt_get,
    .exists = vt_exists,
    .remove = vt_remove,
    .url_get = vt_url_get,
    .url_put = vt_url_put,
};

int images_service_register(hn_plugin *self, images_service *svc, const char *provider) {
    const hn_api *api = svc->api;
    int bad = api->provider_add(self, "images", provider, HN_IMAGES_VERSION, &images_service_vt,
                                svc);
    bad |= api->route_add(self, HN_GET, "/images/{key}", images_route_get, svc);
    bad |= api->route_add(self, HN_PUT, "/upload/{key}", images_route_put, svc);
    return bad;
}
