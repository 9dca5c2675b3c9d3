/* image_io.h - 8-bit images in and out: PNG (libpng) and WebP (libwebp),
 * decode and encode, plus the few pixel operations the pipelines need
 * (channel conversion, Lanczos resize as the horde resizes sources).
 *
 * Ownership: an sd_image owns its malloc'd pixels (free with
 * sd_image_free()). Encoders return a malloc'd buffer the caller free()s.
 * Errors: 0 on success, -1 with a message in err (naming the file when one
 * is involved); malformed or truncated input never crashes.
 */
#ifndef SD_ENGINE_IMAGE_IO_H
#define SD_ENGINE_IMAGE_IO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Interleaved 8-bit pixels, rows top to bottom, no padding. channels: 1
 * (gray), 3 (RGB) or 4 (RGBA). */
typedef struct sd_image {
    int width, height, channels;
    unsigned char *pixels;
} sd_image;

typedef enum { SD_IMAGE_UNKNOWN = 0, SD_IMAGE_PNG, SD_IMAGE_WEBP } sd_image_format;

/* Largest accepted width or height (and width*height <= this squared);
 * bigger images are refused before any allocation. */
#define SD_IMAGE_MAX_SIDE 16384

/* Format from the first bytes (signature), not the name. */
sd_image_format sd_image_sniff(const void *data, size_t len);
/* From a file name's extension (".png", ".webp", case-insensitive). */
sd_image_format sd_image_format_from_path(const char *path);

/* Decodes PNG or WebP. want_channels: 0 = as stored (3, or 4 when the image
 * has alpha; gray PNGs become 3), or 1, 3, 4 to convert (1 = luminance as
 * PIL's convert("L"); 4 adds opaque alpha). */
int sd_image_decode(const void *data, size_t len, int want_channels, sd_image *out, char *err,
                    size_t errlen);
int sd_image_load(const char *path, int want_channels, sd_image *out, char *err, size_t errlen);

/* PNG of a 1/3/4-channel image. */
int sd_image_encode_png(const sd_image *img, unsigned char **out, size_t *len, char *err,
                        size_t errlen);
/* WebP of a 3/4-channel image; quality 0..100 (lossy; the worker uses 95),
 * or a negative quality for lossless. */
int sd_image_encode_webp(const sd_image *img, float quality, unsigned char **out, size_t *len,
                         char *err, size_t errlen);
/* Writes PNG or WebP by the path's extension (WebP at webp_quality). */
int sd_image_save(const char *path, const sd_image *img, float webp_quality, char *err,
                  size_t errlen);

/* Allocates an image (pixels zeroed). 0 or -1. */
int sd_image_alloc(sd_image *img, int width, int height, int channels);
void sd_image_free(sd_image *img); /* frees pixels, zeroes the struct */

/* Channel conversion into a new image (1 <-> 3 <-> 4 as in decode). */
int sd_image_convert(const sd_image *src, int channels, sd_image *out, char *err, size_t errlen);

/* Separable Lanczos-3 resize (antialiased when shrinking, as PIL's
 * Image.resize(LANCZOS)) into a new image with the same channels. */
int sd_image_resize_lanczos(const sd_image *src, int width, int height, sd_image *out,
                            char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
