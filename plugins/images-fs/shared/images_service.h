/* images-fs/shared: the part of an `images` provider (core/include/hn/images.h)
 * that does not depend on where the bytes live, shared by images-fs (files)
 * and images-db (database rows):
 *   - the provider vtable images_service_vt: put/get/exists/remove answer
 *     503 ImageStoreError before start and otherwise call the backend;
 *     url_get/url_put sign "<public_url>/images|upload/<key>?expires=&sig=";
 *   - the routes those URLs point to, GET /images/{key} and PUT
 *     /upload/{key}: an invalid key or a missing image 404 ImageNotFound, a
 *     bad signature 403 InvalidSignature, an expired one 403
 *     ExpiredSignature, a body over max_upload 413 PayloadTooLarge, an empty
 *     one 400 BadRequest, a backend failure its own error; a GET answers 200
 *     with the bytes, their content type and "Cache-Control: private,
 *     max-age=<seconds the URL has left>", a PUT 200 with an empty body.
 *     Backend work runs on the node's pool: the request is suspended and
 *     answered on its loop from the done callback (the request's body stays
 *     valid while it is suspended).
 * What differs between the providers is the images_backend a plugin fills.
 *
 * Ownership: the plugin owns its images_service (usually a member of its
 * state; it must outlive the node's serving, i.e. be freed in fini) and
 * everything it points to: api, name and backend are borrowed for the
 * service's life, store is the backend's state. The service owns nothing
 * and allocates nothing that outlives a call or a request. */
#ifndef LIB_IMAGES_SERVICE_H
#define LIB_IMAGES_SERVICE_H

#include <stdbool.h>

#include <hn/hn.h>

#include "images_url.h"

/* Where the bytes live. Every function may block (it is called from pool
 * threads and from provider callers), must be thread-safe, and gets keys
 * that may be invalid: a bad key is 400 InvalidImageKey (images_bad_key).
 * HN_DECLINED means "no such image". */
typedef struct images_backend {
    hn_rc (*put)(void *store, const char *key, const void *data, size_t len, hn_error *err);
    /* *data is malloc'd (the caller frees). content_type, when not NULL,
     * gets the image's type (images_content_type's words, < 64 chars). */
    hn_rc (*get)(void *store, const char *key, void **data, size_t *len,
                 char *content_type, hn_error *err);
    hn_rc (*exists)(void *store, const char *key, hn_error *err);
    hn_rc (*remove)(void *store, const char *key, hn_error *err);
} images_backend;

typedef struct images_service {
    const hn_api *api;             /* borrowed: the host table */
    const char *name;              /* borrowed: the plugin's name, prefixes messages */
    const images_backend *backend; /* borrowed, usually static */
    void *store;                   /* borrowed: the backend's state */
    long long max_upload;          /* bytes a PUT may carry */
    char secret[IMAGES_SECRET_MAX + 1]; /* set before started; zeroed by the plugin */
    bool started;                  /* the plugin sets it in start, clears it in stop */
} images_service;

/* The `images` vtable; its state is an images_service *. */
extern const hn_images_vt images_service_vt;

/* Registers (in init) the provider images/<provider> with state svc and the
 * two routes. 0 on success, nonzero when a registration failed. */
int images_service_register(hn_plugin *self, images_service *svc, const char *provider);

/* The route handlers (state: an images_service *); exposed for tests. */
void images_route_get(hn_request *req, void *state);
void images_route_put(hn_request *req, void *state);

#endif
