/* vae_decode.c - whole or tiled VAE decode with a NaN check (see
 * vae_decode.h). */
#include "engine/vae_decode.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_backend.h"

/* Device bytes a whole decode needs per output pixel, roughly: the last
 * level holds up to three 256/128-channel float32 maps at full size (SD1.5
 * at 512x512: 512 MB of activations, vae.c's res_forward) plus the bounded
 * scratch and a margin for the pool's rounding. */
#define VAE_BYTES_PER_PIXEL 2560ULL

int sd_vae_tile_starts(int n, int t, int o, int *starts, int max)
{
    int k = 0;
    if (n <= t || max < 1) {
        if (max >= 1) starts[k++] = 0;
        return k;
    }
    int stride = t - o > 0 ? t - o : 1;
    for (int s = 0; s + t < n && k < max - 1; s += stride) starts[k++] = s;
    if (k == 0 || starts[k - 1] != n - t) starts[k++] = n - t;
    return k;
}

static bool all_finite(const float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(p[i])) return false;
    return true;
}

/* Blend weight of pixel p (0..len-1) along an axis: a linear ramp over
 * `ramp` pixels at each side that meets a neighbouring tile, 1 inside. */
static float ramp_weight(int p, int len, int ramp, bool lo_edge, bool hi_edge)
{
    float w = 1.0f;
    if (lo_edge && ramp > 0) {
        float r = ((float)p + 0.5f) / (float)ramp;
        if (r < w) w = r;
    }
    if (hi_edge && ramp > 0) {
        float r = ((float)(len - p) - 0.5f) / (float)ramp;
        if (r < w) w = r;
    }
    return w;
}

static int decode_tiled(sd_vae *v, const float *z, int h, int w, int tile, int overlap,
                        float *img, int *ntiles, char *err, size_t errlen)
{
    const int ds = sd_vae_downscale(v), zc = sd_vae_latent_channels(v);
    const int H = h * ds, W = w * ds;
    int ys[512], xs[512];
    int ny = sd_vae_tile_starts(h, tile, overlap, ys, 512);
    int nx = sd_vae_tile_starts(w, tile, overlap, xs, 512);
    int th = h < tile ? h : tile, tw = w < tile ? w : tile;
    size_t plane = (size_t)H * (size_t)W;
    float *wsum = calloc(plane, sizeof *wsum);
    float *zt = malloc(sizeof(float) * (size_t)zc * (size_t)th * (size_t)tw);
    float *pt = malloc(sizeof(float) * 3 * (size_t)th * ds * (size_t)tw * ds);
    int rc = -1;
    if (!wsum || !zt || !pt) {
        snprintf(err, errlen, "vae decode: out of memory for tiles");
        goto out;
    }
    memset(img, 0, sizeof(float) * 3 * plane);
    const int ramp = overlap * ds;
    for (int iy = 0; iy < ny; iy++)
        for (int ix = 0; ix < nx; ix++) {
            int y0 = ys[iy], x0 = xs[ix];
            for (int c = 0; c < zc; c++)
                for (int y = 0; y < th; y++)
                    memcpy(zt + ((size_t)c * th + y) * tw,
                           z + ((size_t)c * h + (size_t)(y0 + y)) * w + x0, sizeof(float) * tw);
            if (sd_vae_decode(v, zt, 1, th, tw, pt, err, errlen) != 0) goto out;
            const int PH = th * ds, PW = tw * ds, Y0 = y0 * ds, X0 = x0 * ds;
            for (int y = 0; y < PH; y++) {
                float wy = ramp_weight(y, PH, ramp, iy > 0, iy < ny - 1);
                for (int x = 0; x < PW; x++) {
                    float wt = wy * ramp_weight(x, PW, ramp, ix > 0, ix < nx - 1);
                    size_t o = (size_t)(Y0 + y) * W + (size_t)(X0 + x);
                    size_t s = (size_t)y * PW + (size_t)x;
                    wsum[o] += wt;
                    for (int c = 0; c < 3; c++)
                        img[(size_t)c * plane + o] += wt * pt[(size_t)c * PH * PW + s];
                }
            }
        }
    for (size_t i = 0; i < plane; i++) {
        float inv = wsum[i] > 0.0f ? 1.0f / wsum[i] : 0.0f;
        for (int c = 0; c < 3; c++) img[(size_t)c * plane + i] *= inv;
    }
    *ntiles = ny * nx;
    rc = 0;
out:
    free(wsum);
    free(zt);
    free(pt);
    return rc;
}

/* Whether a whole decode of H x W pixels fits the CUDA device now; returns
 * the pool's unused blocks to the device first when it looks tight. */
static bool cuda_fits(sd_backend *be, long long pixels)
{
    unsigned long long need = (unsigned long long)pixels * VAE_BYTES_PER_PIXEL;
    for (int attempt = 0; attempt < 2; attempt++) {
        sd_cuda_memory m;
        if (sd_backend_cuda_memory(be, &m, false) != 0 || m.device_total == 0) return true;
        unsigned long long avail =
            m.device_total > m.device_used ? m.device_total - m.device_used : 0;
        if (need <= avail) return true;
        if (attempt == 0 && sd_backend_cuda_trim(be) != 0) return false;
    }
    return false;
}

static int decode_once(sd_vae *v, const float *z, int h, int w, float *img, int tile,
                       int overlap, bool tiled, sd_vae_decode_info *info, char *err,
                       size_t errlen)
{
    if (tiled) return decode_tiled(v, z, h, w, tile, overlap, img, &info->tiles, err, errlen);
    int rc = sd_vae_decode(v, z, 1, h, w, img, err, errlen);
    if (rc != 0 && (h > tile || w > tile) && strstr(err, "out of") && strstr(err, "memory")) {
        /* the whole decode did not fit: tiles need a fraction of it */
        info->why_tiled = "out of memory";
        return decode_tiled(v, z, h, w, tile, overlap, img, &info->tiles, err, errlen);
    }
    return rc;
}

int sd_vae_decode_image(sd_vae *v, sd_backend *be, const float *z, int h, int w, float *img,
                        const sd_vae_decode_opts *opts, sd_vae_decode_info *info, char *err,
                        size_t errlen)
{
    char local_err[256];
    if (!err || !errlen) {
        err = local_err;
        errlen = sizeof local_err;
    }
    err[0] = '\0';
    sd_vae_decode_opts o = {0};
    if (opts) o = *opts;
    sd_vae_decode_info local;
    if (!info) info = &local;
    memset(info, 0, sizeof *info);
    int tile = o.tile > 0 ? o.tile : SD_VAE_TILE_LATENT;
    int overlap = o.overlap > 0 ? o.overlap : SD_VAE_TILE_OVERLAP;
    if (overlap > tile / 2) overlap = tile / 2;
    const int ds = sd_vae_downscale(v);
    long long pixels = (long long)h * ds * (long long)w * ds;
    long long above = o.tile_above ? o.tile_above : SD_VAE_TILE_ABOVE_PX;
    bool splits = h > tile || w > tile;
    bool tiled = false;
    if (o.force_tiles) {
        tiled = true;
        info->why_tiled = "forced";
    } else if (splits && above > 0 && pixels > above) {
        tiled = true;
        info->why_tiled = "size";
    } else if (splits && sd_backend_is_cuda(be) && !cuda_fits(be, pixels)) {
        tiled = true;
        info->why_tiled = "memory";
    }
    if (decode_once(v, z, h, w, img, tile, overlap, tiled, info, err, errlen) != 0) return -1;
    if (info->tiles > 0) tiled = true;   /* incl. the out-of-memory retry */
    size_t n = (size_t)3 * (size_t)pixels;
    if (o.no_nan_check || all_finite(img, n)) return 0;

    /* NaN/Inf: fp16 overflow somewhere; redo in a stricter precision */
    sd_cuda_precision old = SD_CUDA_PREC_AUTO, strict;
    if (sd_backend_is_cuda(be) && sd_backend_cuda_set_precision(be, SD_CUDA_PREC_AUTO, &old) == 0) {
        strict = old == SD_CUDA_PREC_F16 ? SD_CUDA_PREC_TF32 : SD_CUDA_PREC_F32;
        if (old != SD_CUDA_PREC_F32 && sd_backend_cuda_set_precision(be, strict, NULL) == 0) {
            info->nan_fallback = true;
            info->tiles = 0;
            int rc = decode_once(v, z, h, w, img, tile, overlap, tiled, info, err, errlen);
            sd_backend_cuda_set_precision(be, old, NULL);
            if (rc != 0) return -1;
            if (all_finite(img, n)) return 0;
        } else {
            sd_backend_cuda_set_precision(be, old, NULL);
        }
    }
    info->nan_left = true;
    return 0;
}
