/* vae_decode.h - one image's VAE decode as the pipeline runs it, on any
 * backend: whole or in overlapping tiles, with a NaN/Inf check.
 *
 * Tiling: the latent is cut into tiles of `tile` latent pixels that overlap
 * by `overlap`; each tile is decoded alone and the pixels are blended with
 * linear ramps across each overlap (weights normalised, so every pixel is a
 * convex mix). The decoder's GroupNorm statistics and mid-block attention
 * are per tile, so the result is close to, not equal to, a whole decode
 * (the test holds a tiny model to a tolerance); a tile that covers the
 * whole latent is exactly the whole decode. Tiles are used
 *   - when forced (opts.force_tiles),
 *   - above opts.tile_above pixels (default SD_VAE_TILE_ABOVE_PX),
 *   - on CUDA when the estimated activations of a whole decode do not fit
 *     the device's free memory (after returning the pool's unused blocks),
 *   - when a whole decode fails for lack of device memory.
 *
 * NaN check: a result with a NaN or Inf (fp16 overflow) is decoded again in
 * a stricter precision on CUDA (F16 -> TF32; AUTO, AUTO_VAE_BF16 and TF32
 * -> F32), then the
 * backend's precision is restored. The CPU computes in float32 already and
 * has nothing stricter. Whatever stays non-finite is reported
 * (info.nan_left); the pipeline turns it into 0 (grey).
 */
#ifndef SD_ENGINE_VAE_DECODE_H
#define SD_ENGINE_VAE_DECODE_H

#include <stdbool.h>
#include <stddef.h>

#include "backend/ops.h"
#include "engine/vae.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SD_VAE_TILE_LATENT 64            /* 512 px with the SD VAE */
#define SD_VAE_TILE_OVERLAP 8            /* 64 px */
#define SD_VAE_TILE_ABOVE_PX (1024LL * 1024LL)

typedef struct sd_vae_decode_opts {
    int tile;                /* latent tile side; <= 0: SD_VAE_TILE_LATENT */
    int overlap;             /* latent overlap; <= 0: SD_VAE_TILE_OVERLAP
                                (clamped below tile / 2) */
    long long tile_above;    /* tile images with more pixels; 0: default,
                                < 0: never for size alone */
    bool force_tiles;
    bool no_nan_check;
} sd_vae_decode_opts;

typedef struct sd_vae_decode_info {
    int tiles;               /* tiles decoded; 0 = one whole decode */
    const char *why_tiled;   /* "forced", "size", "memory", "out of memory" or NULL */
    bool nan_fallback;       /* the first result had NaN/Inf and was redone */
    bool nan_left;           /* still non-finite values in img */
} sd_vae_decode_info;

/* z [4, h, w] in the VAE's latent space (latents / scale) -> img [3, H, W]
 * (H = h * downscale), NCHW host floats. be must be the backend the VAE
 * was built on. opts and info may be NULL. 0, or -1 with err. */
int sd_vae_decode_image(sd_vae *v, sd_backend *be, const float *z, int h, int w, float *img,
                        const sd_vae_decode_opts *opts, sd_vae_decode_info *info, char *err,
                        size_t errlen);

/* Tile starts along one axis of n latent pixels (tile t, overlap o): 0,
 * t - o, ..., the last one n - t, ascending and distinct. Returns how
 * many (at most max). Exposed for tests. */
int sd_vae_tile_starts(int n, int t, int o, int *starts, int max);

#ifdef __cplusplus
}
#endif
#endif
