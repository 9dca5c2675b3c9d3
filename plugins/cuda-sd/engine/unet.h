/* unet.h - the ldm UNetModel of SD1/SD2 (epsilon or v prediction, 4- or
 * 9-channel input), built from the tensors under "model.diffusion_model.".
 *
 * Topology is read from the checkpoint's keys (res blocks, spatial
 * transformers and their depth, down/upsamplers), channel counts from the
 * weight shapes, heads from the family info (fam->unet.num_heads, or
 * channels / fam->unet.head_dim), so tiny test models and real ones share
 * one code path. The forward pass returns the raw model output (eps or v,
 * see sd_unet_prediction); the denoiser wrapper (c_in scaling, CFG) is the
 * pipeline's.
 *
 * Ownership: borrows the model file (must stay open) and the backend (must
 * outlive the UNet). One forward at a time per UNet/backend.
 */
#ifndef SD_ENGINE_UNET_H
#define SD_ENGINE_UNET_H

#include <stdbool.h>
#include <stddef.h>

#include "backend/ops.h"
#include "engine/family.h"
#include "engine/model_file.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sd_unet sd_unet;

/* 0, or -1 with err naming the file and the missing/misshapen tensor. */
int sd_unet_create(const sd_model_file *f, const sd_family_info *fam, sd_backend *be,
                   sd_unet **out, char *err, size_t errlen);
void sd_unet_destroy(sd_unet *u);                           /* NULL is fine */

int sd_unet_in_channels(const sd_unet *u);                  /* 4, or 9 (inpainting) */
int sd_unet_out_channels(const sd_unet *u);                 /* 4 */
int sd_unet_context_dim(const sd_unet *u);                  /* 768 SD1, 1024 SD2 */
sd_prediction sd_unet_prediction(const sd_unet *u);         /* from the family info */
/* 2^(downsamplers): 8 for SD1/SD2. Latents of any size work; for sizes
 * that are not a multiple of this, stride-2 convs round up and the
 * upsamplers resize to the matching skip (as diffusers does: 96x96 images,
 * 12x12 latents, are in golden/), where ldm itself would fail. */
int sd_unet_size_multiple(const sd_unet *u);

/* Circular padding in every 3x3 convolution (seamless tiling). Off by
 * default. */
void sd_unet_set_circular(sd_unet *u, bool circular);

/* Cross-attention K/V cache, on by default: the K and V projections of the
 * text context are the same at every sampler step, so the first pass with a
 * context computes them and keeps them (on the backend, a few MB for SD1.5
 * at batch 2) together with a host copy of that context; a later pass whose
 * batch, length and context bytes are equal uses them instead of
 * recomputing 2 linears per transformer block. Outputs are identical with
 * or without it. Off frees the cache; clear frees it and keeps it on. */
void sd_unet_set_kv_cache(sd_unet *u, bool on);
void sd_unet_kv_cache_clear(sd_unet *u);
/* On a CUDA backend with graphs on (sd_backend_cuda_set_graphs), each pass
 * that does not fill the K/V cache runs as one CUDA graph (captured at its
 * first such pass, per shape and K/V set; inputs uploaded and output
 * downloaded outside it). Frees that graph and its input/output tensors:
 * the next pass captures again. Called by sd_unet_destroy. */
void sd_unet_graph_reset(sd_unet *u);
/* Passes that reused the cache, and passes that (re)built it. */
void sd_unet_kv_cache_stats(const sd_unet *u, unsigned long long *hits,
                            unsigned long long *misses);

/* One forward pass over a batch.
 *   x        [B, in_channels, H, W] (NCHW, host floats). For inpainting
 *            models: [noisy latent (4), mask (1, 1 = repaint), masked-image
 *            latent (4)] along channels.
 *   t        [B] timesteps (fractional allowed)
 *   context  [B, L, context_dim] (text-encoder output; L any, e.g. 77*k)
 *   out      [B, out_channels, H, W]
 * H and W: any size >= 1 (see sd_unet_size_multiple).
 * 0, or -1 with err (shape problems, cancelled, out of memory). */
int sd_unet_forward(sd_unet *u, const float *x, const float *t, const float *context, int L,
                    int B, int H, int W, float *out, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
