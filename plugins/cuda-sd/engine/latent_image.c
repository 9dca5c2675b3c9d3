/* latent_image.c - image/latent/mask conversions (see latent_image.h). */
#include "latent_image.h"

#include <math.h>
#include <string.h>

void sd_image_to_tensor(const sd_image *img, float *out)
{
    size_t hw = (size_t)img->width * (size_t)img->height;
    int c = img->channels;
    for (size_t i = 0; i < hw; i++)
        for (int ch = 0; ch < 3; ch++)
            out[(size_t)ch * hw + i] =
                (float)img->pixels[i * (size_t)c + (size_t)ch] / 255.0f * 2.0f - 1.0f;
}

void sd_tensor_to_rgb(const float *x, int h, int w, sd_pixel_rounding r, unsigned char *rgb)
{
    size_t hw = (size_t)h * (size_t)w;
    for (size_t i = 0; i < hw; i++) {
        for (int ch = 0; ch < 3; ch++) {
            float v = (x[(size_t)ch * hw + i] + 1.0f) / 2.0f;
            if (!(v > 0.0f)) /* NaN -> 0 as well */
                v = 0.0f;
            if (v > 1.0f)
                v = 1.0f;
            v = v * 255.0f;
            /* rintf: the current rounding mode, round-half-even by default */
            float q = r == SD_ROUND_HALF_EVEN ? rintf(v) : truncf(v);
            rgb[i * 3 + (size_t)ch] = (unsigned char)q;
        }
    }
}

void sd_resize_nearest_exact(const float *in, int n, int c, int h, int w, int oh, int ow,
                             float *out)
{
    float sy = (float)h / (float)oh, sx = (float)w / (float)ow;
    for (int p = 0; p < n * c; p++) {
        const float *src = in + (size_t)p * (size_t)h * (size_t)w;
        float *dst = out + (size_t)p * (size_t)oh * (size_t)ow;
        for (int y = 0; y < oh; y++) {
            int iy = (int)floorf(((float)y + 0.5f) * sy);
            if (iy > h - 1)
                iy = h - 1;
            for (int x = 0; x < ow; x++) {
                int ix = (int)floorf(((float)x + 0.5f) * sx);
                if (ix > w - 1)
                    ix = w - 1;
                dst[(size_t)y * (size_t)ow + (size_t)x] = src[(size_t)iy * (size_t)w + (size_t)ix];
            }
        }
    }
}

/* torch area_pixel_compute_source_index(align_corners=False, cubic=False). */
static void bilinear_index(int dst, float scale, int in, int *i0, int *i1, float *l1)
{
    float src = scale * ((float)dst + 0.5f) - 0.5f;
    if (src < 0.0f)
        src = 0.0f;
    int a = (int)src;
    if (a > in - 1)
        a = in - 1;
    *i0 = a;
    *i1 = a < in - 1 ? a + 1 : a;
    *l1 = src - (float)a;
}

void sd_resize_bilinear(const float *in, int n, int c, int h, int w, int oh, int ow, float *out)
{
    float sy = (float)h / (float)oh, sx = (float)w / (float)ow;
    for (int p = 0; p < n * c; p++) {
        const float *src = in + (size_t)p * (size_t)h * (size_t)w;
        float *dst = out + (size_t)p * (size_t)oh * (size_t)ow;
        for (int y = 0; y < oh; y++) {
            int y0, y1;
            float ly;
            bilinear_index(y, sy, h, &y0, &y1, &ly);
            for (int x = 0; x < ow; x++) {
                int x0, x1;
                float lx;
                bilinear_index(x, sx, w, &x0, &x1, &lx);
                const float *r0 = src + (size_t)y0 * (size_t)w, *r1 = src + (size_t)y1 * (size_t)w;
                float v = (1.0f - ly) * ((1.0f - lx) * r0[x0] + lx * r0[x1]) +
                          ly * ((1.0f - lx) * r1[x0] + lx * r1[x1]);
                dst[(size_t)y * (size_t)ow + (size_t)x] = v;
            }
        }
    }
}

void sd_mask_grow(const float *in, int h, int w, int k, float *out)
{
    if (k <= 0) {
        memcpy(out, in, sizeof(float) * (size_t)h * (size_t)w);
        return;
    }
    /* conv2d with a k x k ones kernel and padding p: output (y, x) sums
     * inputs rows y-p .. y-p+k-1 (and the same for columns). */
    int pad = k / 2; /* = ceil((k-1)/2) */
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            float acc = 0.0f;
            for (int dy = 0; dy < k; dy++) {
                int iy = y - pad + dy;
                if (iy < 0 || iy >= h)
                    continue;
                for (int dx = 0; dx < k; dx++) {
                    int ix = x - pad + dx;
                    if (ix < 0 || ix >= w)
                        continue;
                    acc += rintf(in[(size_t)iy * (size_t)w + (size_t)ix]);
                }
            }
            out[(size_t)y * (size_t)w + (size_t)x] = acc > 0.0f ? 1.0f : 0.0f;
        }
    }
}

void sd_mask_to_float(const sd_image *mask, float *out)
{
    size_t n = (size_t)mask->width * (size_t)mask->height;
    for (size_t i = 0; i < n; i++)
        out[i] = (float)mask->pixels[i] / 255.0f;
}
