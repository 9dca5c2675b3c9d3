/* horde-node plugin SDK: the `images` provider interface.
 *
 * Stores generated and source images by key and hands out signed, expiring
 * URLs: a GET URL for clients (what `r2: true` gives) and a PUT URL workers
 * upload to (`r2_upload`). Implementations: images-fs (files under the data
 * dir, served by the node), later images-db. Keys are [A-Za-z0-9._-]{1,128};
 * anything else is refused. All functions are thread-safe and may block. */
#ifndef HN_IMAGES_H
#define HN_IMAGES_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HN_IMAGES_VERSION 1

typedef struct hn_images_vt {
    uint32_t size;
    uint32_t version;
    hn_rc (*put)(void *state, const char *key, const void *data, size_t len, hn_error *err);
    /* *data is malloc'd; the caller frees it. HN_DECLINED when absent. */
    hn_rc (*get)(void *state, const char *key, void **data, size_t *len, hn_error *err);
    hn_rc (*exists)(void *state, const char *key, hn_error *err); /* HN_OK / HN_DECLINED */
    hn_rc (*remove)(void *state, const char *key, hn_error *err);
    /* Signed URLs valid for ttl_s seconds, written to out (NUL-terminated). */
    hn_rc (*url_get)(void *state, const char *key, int ttl_s, char *out, size_t out_len,
                     hn_error *err);
    hn_rc (*url_put)(void *state, const char *key, int ttl_s, char *out, size_t out_len,
                     hn_error *err);
} hn_images_vt;

#ifdef __cplusplus
}
#endif
#endif
