/* images-fs: the plugin's state. The provider vtable, the signed URLs and
 * the routes they point to are images-fs/shared (images_service.h), shared with
 * images-db; this plugin gives them a backend of files (images_provider.c
 * over images_files.c) and keeps its secret in a file (images_sign.c).
 *
 * Ownership: the core owns conf; the plugin owns images_fs (freed in fini),
 * with the service inside it, dir_path, the directory descriptor (opened in
 * start, closed in stop) and the secret (in svc, zeroed in fini). */
#ifndef IMAGES_FS_H
#define IMAGES_FS_H

#include <hn/hn.h>

#include "images-fs/shared/images_service.h"
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
    images_service svc;                   /* store = &dir; secret and started live here */
} images_fs;

/* images_provider.c: the backend of files; store is an images_dir *. */
extern const images_backend images_fs_backend;

#endif
