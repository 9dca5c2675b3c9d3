/* net_common.h - small pieces the network builders (clip.c, unet.c, vae.c)
 * share: weight lookup by formatted name with a sticky first error, the
 * weight-pair structs, and an owned copy of a host-side error message.
 *
 * Weights are borrowed `const sd_tensor_info *` from the open model file;
 * the networks never own them, so the file must outlive every network built
 * from it.
 */
#ifndef SD_ENGINE_NET_COMMON_H
#define SD_ENGINE_NET_COMMON_H

#include <stdbool.h>
#include <stddef.h>

#include "backend/ops.h"
#include "engine/model_file.h"

/* A linear / conv layer, or a norm's gamma (w) and beta (b). b may be NULL. */
typedef struct sd_layer_w {
    const sd_tensor_info *w;
    const sd_tensor_info *b;
} sd_layer_w;

/* Lookup context: the first missing or misshapen tensor is remembered. */
typedef struct sd_net_loader {
    const sd_model_file *file;
    char *err;
    size_t errlen;
    bool failed;
} sd_net_loader;

/* Tensor by printf-formatted name; NULL (and a sticky error) when absent. */
const sd_tensor_info *sd_net_get(sd_net_loader *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Same, but absence is not an error. */
const sd_tensor_info *sd_net_opt(sd_net_loader *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* "<name>.weight" and "<name>.bias" (bias optional when !need_bias). */
sd_layer_w sd_net_layer(sd_net_loader *l, bool need_bias, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Records a shape error (first one wins); returns false. */
bool sd_net_fail(sd_net_loader *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Checks ndim and leading dims (-1 = any); false + sticky error otherwise. */
bool sd_net_check(sd_net_loader *l, const sd_tensor_info *t, int ndim, long long d0,
                  long long d1);

/* Copies the backend's last error into err with a prefix; returns -1. */
int sd_net_backend_error(sd_backend *be, const char *what, char *err, size_t errlen);

/* Conv parameters for a kxk kernel with symmetric padding. */
static inline sd_conv_params sd_conv_same(int k, int stride, bool circular)
{
    sd_conv_params p = { stride, k / 2, k / 2, k / 2, k / 2,
                         circular ? SD_PAD_CIRCULAR : SD_PAD_ZEROS };
    return p;
}

#endif
