/* Fuzz target: source images (img2img, inpainting masks) as the engine
 * decodes them (image_io.c: PNG via libpng, WebP via libwebp), then the
 * conversions the pipeline applies. */
#include <stdint.h>

#include "engine/image_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    (void)sd_image_sniff(data, size);
    sd_image img = {0};
    char err[512];
    if (sd_image_decode(data, size, 0, &img, err, sizeof err) != 0)
        return 0;
    sd_image gray = {0};
    if (sd_image_convert(&img, 1, &gray, err, sizeof err) == 0)
        sd_image_free(&gray);
    if ((int64_t)img.width * img.height <= 256 * 256) {
        sd_image small = {0};
        if (sd_image_resize_lanczos(&img, 8, 8, &small, err, sizeof err) == 0)
            sd_image_free(&small);
    }
    sd_image_free(&img);
    return 0;
}
