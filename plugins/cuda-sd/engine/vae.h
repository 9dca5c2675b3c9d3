/* vae.h - the AutoencoderKL of SD1/SD2 ("first_stage_model."): encoder +
 * quant_conv and post_quant_conv + decoder, as in ldm.
 *
 * Scale: these functions work in the VAE's own latent space. The 0.18215
 * (SD1/SD2) scale factor between that space and the diffusion latents
 * belongs to the pipeline: latents = sd_vae_scale_factor() * mean (encode),
 * decode(latents / sd_vae_scale_factor()). sd_vae_scale_factor() returns the
 * family's value so the pipeline never hard-codes it.
 *
 * Sizes come from the weight shapes (channels per level, res blocks per
 * level), so the tiny golden VAEs and the real one share the code path.
 *
 * Ownership: borrows the model file (must stay open) and the backend.
 */
#ifndef SD_ENGINE_VAE_H
#define SD_ENGINE_VAE_H

#include <stdbool.h>
#include <stddef.h>

#include "backend/ops.h"
#include "engine/family.h"
#include "engine/model_file.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sd_vae sd_vae;

/* 0, or -1 with err naming the file and the missing/misshapen tensor. The
 * encoder half is optional (decode-only files); sd_vae_encode then fails. */
int sd_vae_create(const sd_model_file *f, const sd_family_info *fam, sd_backend *be,
                  sd_vae **out, char *err, size_t errlen);
void sd_vae_destroy(sd_vae *v);                             /* NULL is fine */

float sd_vae_scale_factor(const sd_vae *v);   /* 0.18215 for SD1/SD2 */
int sd_vae_latent_channels(const sd_vae *v);  /* 4 */
int sd_vae_downscale(const sd_vae *v);        /* 8: image size / latent size */
bool sd_vae_has_encoder(const sd_vae *v);

/* Circular padding in the 3x3 convolutions (seamless tiling), off by
 * default. The encoder's asymmetric downsample padding stays zeros, as in
 * A1111's tiling mode. */
void sd_vae_set_circular(sd_vae *v, bool circular);

/* CUDA: hand the memory pool's unused blocks back to the device before each
 * decoder upsample (sd_backend_cuda_trim), off by default. The maps grow 4x
 * there (SD1.5 at 512x512: 64 MB maps before the last upsample, 256 MB after)
 * and a pool cannot serve the larger requests from the smaller freed blocks
 * it keeps, so without it the device holds both sizes at the decode's peak.
 * Costs a synchronisation per level; no effect on other backends. */
void sd_vae_set_trim_between_levels(sd_vae *v, bool on);

/* z [B, 4, h, w] (VAE space: latents / scale) -> img [B, 3, 8h, 8w],
 * unclamped (about [-1, 1]). NCHW host floats. */
int sd_vae_decode(sd_vae *v, const float *z, int B, int h, int w, float *img, char *err,
                  size_t errlen);

/* img [B, 3, H, W] in [-1, 1], H and W multiples of sd_vae_downscale() ->
 * moments [B, 2*4, H/8, W/8] = quant_conv(encoder(img)): channels 0-3 the
 * mean, 4-7 the log-variance (unclamped). */
int sd_vae_encode_moments(sd_vae *v, const float *img, int B, int H, int W, float *moments,
                          char *err, size_t errlen);

/* Same, split: mean [B,4,H/8,W/8] and (when logvar != NULL) the
 * log-variance clamped to [-30, 20] as ldm's DiagonalGaussianDistribution
 * does. The pipeline samples mean + exp(logvar/2) * noise itself, or uses
 * the mean. */
int sd_vae_encode(sd_vae *v, const float *img, int B, int H, int W, float *mean, float *logvar,
                  char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
