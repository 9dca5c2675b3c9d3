/* images-fs: the plugin's state, shared by the provider (images_provider.c)
 * and the routes (images_routes.c).
 *
 * Ownership: the core owns conf; the plugin owns images_fs (freed in fini),
 * the directory descriptor (opened in start, closed in stop) and the secret. */
#ifndef IMAGES_FS_H
#define IMAGES_FS_H

#include <hn/hn.h>

#include "images_files.h"
#include "images_sign.h"

typedef struct images_conf {
    const char *dir;       /* default <data_dir>/images; relative = under the data dir */
    const char *secret;    /* default: <data_dir>/images.secret, generated */
    long long max_upload;  /* bytes */
} images_conf;

typedef struct images_fs {
    hn_plugin *self;
    const hn_api *api;
    const images_conf *conf;
    char *dir_path;                       /* resolved, owned */
    images_dir dir;                       /* open between start and stop */
    char secret[IMAGES_SECRET_MAX + 1];   /* loaded in start */
    bool started;
} images_fs;

/* images_provider.c: the `images` vtable; state is an images_fs *. */
extern const hn_images_vt images_fs_vt;
/* Builds "<public_url>/<route>/<key>?expires=..&sig=..". */
hn_rc images_signed_url(images_fs *s, const char *method, const char *route, const char *key,
                        int ttl_s, char *out, size_t out_len, hn_error *err);

/* images_routes.c */
void images_route_get(hn_request *req, void *state);
void images_route_put(hn_request *req, void *state);

#endif
