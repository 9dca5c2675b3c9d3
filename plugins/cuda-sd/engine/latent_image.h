/* latent_image.h - conversions between 8-bit images, float image tensors,
 * masks and latents, as the reference pipelines do them (torch
 * F.interpolate modes, ComfyUI's mask handling, the two uint8 rounding
 * rules). Pure functions on caller-owned NCHW float buffers; no allocation
 * unless stated.
 */
#ifndef SD_ENGINE_LATENT_IMAGE_H
#define SD_ENGINE_LATENT_IMAGE_H

#include <stddef.h>

#include "image_io.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    /* round(clamp((x+1)/2, 0, 1) * 255) half to even, float32: diffusers,
     * the golden PNGs (kdiffusion convention) */
    SD_ROUND_HALF_EVEN = 0,
    /* truncation (numpy astype(uint8)): ComfyUI SaveImage, A1111 */
    SD_ROUND_TRUNCATE = 1
} sd_pixel_rounding;

/* RGB(A) image -> one NCHW [3,H,W] float tensor in [-1, 1]:
 * x = (v / 255) * 2 - 1 (alpha ignored). img->channels must be 3 or 4. */
void sd_image_to_tensor(const sd_image *img, float *out);

/* One decoded NCHW [3,H,W] tensor (about [-1,1]) -> interleaved RGB bytes
 * [H*W*3]: pixel = clamp((x + 1) / 2, 0, 1) * 255, then rounded. */
void sd_tensor_to_rgb(const float *x, int h, int w, sd_pixel_rounding r, unsigned char *rgb);

/* torch.nn.functional.interpolate(mode="nearest-exact") from [n,c,h,w] to
 * [n,c,oh,ow]: src = min(floor((dst + 0.5) * in/out), in - 1). */
void sd_resize_nearest_exact(const float *in, int n, int c, int h, int w, int oh, int ow,
                             float *out);

/* torch.nn.functional.interpolate(mode="bilinear", align_corners=False),
 * no antialiasing: src = max((dst + 0.5) * in/out - 0.5, 0). */
void sd_resize_bilinear(const float *in, int n, int c, int h, int w, int oh, int ow, float *out);

/* ComfyUI VAEEncodeForInpaint's mask growth: clamp(conv2d(round(m),
 * ones(k,k), padding=ceil((k-1)/2)), 0, 1) cropped to [h,w], then round.
 * in/out [h,w] in [0,1]; k >= 1 (k = 0: copy). out must not alias in. */
void sd_mask_grow(const float *in, int h, int w, int k, float *out);

/* A gray mask image -> [h,w] floats in [0,1] (v / 255), white = 1 =
 * repaint. The image must be 1 channel. */
void sd_mask_to_float(const sd_image *mask, float *out);

#ifdef __cplusplus
}
#endif
#endif
