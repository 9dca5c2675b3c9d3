/* worker: the image formats a worker handles. Results go out as WebP
 * (libwebp); source images and masks come in as WebP or PNG (libpng).
 * Pure functions, thread-safe. */
#ifndef WK_IMAGE_CODEC_H
#define WK_IMAGE_CODEC_H

#include <stddef.h>

#include <hn/generator.h>

/* WebP of a 3/4-channel image at quality 0..100 (lossy). Encoder settings are
 * libwebp's defaults plus the quality, the same as cuda-sd's
 * sd_image_encode_webp (engine/image_io.h), so a worker's upload is
 * byte-identical to `horde-node sd txt2img -o X.webp` for the same image.
 * *out is malloc'd. 0 or -1 with err. */
int wk_webp_encode(const hn_image *img, float quality, unsigned char **out, size_t *len,
                   char *err, size_t errlen);

/* Decodes WebP or PNG (by signature) into 8-bit RGB, or RGBA when the image
 * has alpha. img->pixels is malloc'd. 0 or -1 with err. Images larger than
 * 8192 px a side are refused. */
int wk_image_decode(const void *data, size_t len, hn_image *img, char *err, size_t errlen);
void wk_image_free(hn_image *img);

/* Base64 (standard alphabet, padded). encode: malloc'd text. decode:
 * malloc'd bytes, NULL when the text is not base64 (whitespace is skipped,
 * missing padding accepted). */
char *wk_b64_encode(const void *data, size_t len);
void *wk_b64_decode(const char *text, size_t *out_len);

#endif
