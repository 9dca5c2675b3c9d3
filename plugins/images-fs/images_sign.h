/* images-fs: the node secret the URLs are signed with (the signatures
 * themselves are plugins/images-fs/shared/images_url.h). The secret is the node's: config
 * `secret`, or 32 random bytes (hex) generated once into
 * <data_dir>/images.secret with mode 0600. Nothing here keeps state between
 * calls. */
#ifndef IMAGES_SIGN_H
#define IMAGES_SIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hn/types.h>

#include "images-fs/shared/images_url.h"

/* Reads the secret from path, or creates it there (mode 0600, written to a
 * temp file and linked into place, so two processes starting at once agree on
 * one secret). *loose is set when an existing file is readable by others. */
hn_rc images_secret_load(const char *path, char out[IMAGES_SECRET_MAX + 1], bool *loose,
                         hn_error *err);

#endif
