/* image_io.c - PNG/WebP decode and encode, channel conversion, Lanczos
 * resize (see image_io.h). PNG goes through libpng's "simplified" API
 * (png_image), which handles every colour type and bit depth and reports
 * errors as text instead of longjmp-ing into our frames. */
#include "image_io.h"
#include "error_text.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <webp/decode.h>
#include <webp/encode.h>


static bool size_ok(long w, long h)
{
    return w > 0 && h > 0 && w <= SD_IMAGE_MAX_SIDE && h <= SD_IMAGE_MAX_SIDE;
}

int sd_image_alloc(sd_image *img, int width, int height, int channels)
{
    memset(img, 0, sizeof *img);
    if (!size_ok(width, height) || (channels != 1 && channels != 3 && channels != 4))
        return -1;
    img->pixels = calloc((size_t)width * (size_t)height, (size_t)channels);
    if (!img->pixels)
        return -1;
    img->width = width;
    img->height = height;
    img->channels = channels;
    return 0;
}

void sd_image_free(sd_image *img)
{
    if (!img)
        return;
    free(img->pixels);
    memset(img, 0, sizeof *img);
}

sd_image_format sd_image_sniff(const void *data, size_t len)
{
    const unsigned char *p = data;
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len >= 8 && memcmp(p, png_sig, 8) == 0)
        return SD_IMAGE_PNG;
    if (len >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
        return SD_IMAGE_WEBP;
    return SD_IMAGE_UNKNOWN;
}

sd_image_format sd_image_format_from_path(const char *path)
{
    const char *dot = path ? strrchr(path, '.') : NULL;
    if (!dot)
        return SD_IMAGE_UNKNOWN;
    if (strcasecmp(dot, ".png") == 0)
        return SD_IMAGE_PNG;
    if (strcasecmp(dot, ".webp") == 0)
        return SD_IMAGE_WEBP;
    return SD_IMAGE_UNKNOWN;
}

/* PIL's convert("L"): L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16. */
static unsigned char luma(const unsigned char *rgb)
{
    return (unsigned char)((rgb[0] * 19595u + rgb[1] * 38470u + rgb[2] * 7471u + 0x8000u) >> 16);
}

int sd_image_convert(const sd_image *src, int channels, sd_image *out, char *err, size_t errlen)
{
    if (!src || !src->pixels || !out)
        return sd_fail(err, errlen, "image convert: no image");
    if (sd_image_alloc(out, src->width, src->height, channels) != 0)
        return sd_fail(err, errlen, "image convert: cannot allocate %dx%dx%d", src->width,
                    src->height, channels);
    size_t n = (size_t)src->width * (size_t)src->height;
    int sc = src->channels;
    for (size_t i = 0; i < n; i++) {
        const unsigned char *s = src->pixels + i * (size_t)sc;
        unsigned char *d = out->pixels + i * (size_t)channels;
        unsigned char rgb[3], a = 255;
        if (sc == 1) {
            rgb[0] = rgb[1] = rgb[2] = s[0];
        } else {
            memcpy(rgb, s, 3);
            if (sc == 4)
                a = s[3];
        }
        if (channels == 1) {
            d[0] = sc == 1 ? s[0] : luma(rgb);
        } else {
            memcpy(d, rgb, 3);
            if (channels == 4)
                d[3] = a;
        }
    }
    return 0;
}

/* Takes ownership of a decoded RGBA image and converts it as asked. */
static int finish_decode(sd_image *rgba, bool has_alpha, int want, sd_image *out, char *err,
                         size_t errlen)
{
    if (want == 0)
        want = has_alpha ? 4 : 3;
    if (want == 4) {
        *out = *rgba;
        return 0;
    }
    int rc = sd_image_convert(rgba, want, out, err, errlen);
    sd_image_free(rgba);
    return rc;
}

static int decode_png(const void *data, size_t len, int want, sd_image *out, char *err,
                      size_t errlen)
{
    png_image png;
    memset(&png, 0, sizeof png);
    png.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&png, data, len))
        return sd_fail(err, errlen, "PNG: %s", png.message);
    if (!size_ok((long)png.width, (long)png.height)) {
        png_image_free(&png);
        return sd_fail(err, errlen, "PNG: unsupported size %ux%u", png.width, png.height);
    }
    bool has_alpha = (png.format & PNG_FORMAT_FLAG_ALPHA) != 0;
    png.format = PNG_FORMAT_RGBA;
    sd_image rgba;
    if (sd_image_alloc(&rgba, (int)png.width, (int)png.height, 4) != 0) {
        png_image_free(&png);
        return sd_fail(err, errlen, "PNG: cannot allocate %ux%u", png.width, png.height);
    }
    if (!png_image_finish_read(&png, NULL, rgba.pixels, 0, NULL)) {
        char msg[80];
        snprintf(msg, sizeof msg, "%s", png.message);
        png_image_free(&png);
        sd_image_free(&rgba);
        return sd_fail(err, errlen, "PNG: %s", msg);
    }
    png_image_free(&png);
    return finish_decode(&rgba, has_alpha, want, out, err, errlen);
}

static int decode_webp(const void *data, size_t len, int want, sd_image *out, char *err,
                       size_t errlen)
{
    WebPBitstreamFeatures feat;
    if (WebPGetFeatures(data, len, &feat) != VP8_STATUS_OK)
        return sd_fail(err, errlen, "WebP: not a valid WebP bitstream");
    if (!size_ok(feat.width, feat.height))
        return sd_fail(err, errlen, "WebP: unsupported size %dx%d", feat.width, feat.height);
    sd_image rgba;
    if (sd_image_alloc(&rgba, feat.width, feat.height, 4) != 0)
        return sd_fail(err, errlen, "WebP: cannot allocate %dx%d", feat.width, feat.height);
    size_t stride = (size_t)feat.width * 4;
    if (!WebPDecodeRGBAInto(data, len, rgba.pixels, stride * (size_t)feat.height, (int)stride)) {
        sd_image_free(&rgba);
        return sd_fail(err, errlen, "WebP: corrupt or truncated image data");
    }
    return finish_decode(&rgba, feat.has_alpha != 0, want, out, err, errlen);
}

int sd_image_decode(const void *data, size_t len, int want_channels, sd_image *out, char *err,
                    size_t errlen)
{
    if (!out)
        return sd_fail(err, errlen, "image decode: no output");
    memset(out, 0, sizeof *out);
    if (!data)
        return sd_fail(err, errlen, "image decode: no data");
    if (want_channels != 0 && want_channels != 1 && want_channels != 3 && want_channels != 4)
        return sd_fail(err, errlen, "image decode: bad channel count %d", want_channels);
    switch (sd_image_sniff(data, len)) {
    case SD_IMAGE_PNG:
        return decode_png(data, len, want_channels, out, err, errlen);
    case SD_IMAGE_WEBP:
        return decode_webp(data, len, want_channels, out, err, errlen);
    default:
        return sd_fail(err, errlen, "not a PNG or WebP image");
    }
}

static int read_file(const char *path, unsigned char **data, size_t *len, char *err,
                     size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return sd_fail(err, errlen, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap)
            break;
        if (cap >= ((size_t)1 << 30)) { /* 1 GiB: not an image we take */
            free(buf);
            buf = NULL;
            break;
        }
        unsigned char *bigger = realloc(buf, cap * 2);
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    int read_error = ferror(f);
    fclose(f);
    if (!buf)
        return sd_fail(err, errlen, "%s: too large or out of memory", path);
    if (read_error) {
        free(buf);
        return sd_fail(err, errlen, "%s: read error", path);
    }
    *data = buf;
    *len = n;
    return 0;
}

int sd_image_load(const char *path, int want_channels, sd_image *out, char *err, size_t errlen)
{
    unsigned char *data = NULL;
    size_t len = 0;
    if (out)
        memset(out, 0, sizeof *out);
    if (read_file(path, &data, &len, err, errlen) != 0)
        return -1;
    char inner[400];
    int rc = sd_image_decode(data, len, want_channels, out, inner, sizeof inner);
    free(data);
    if (rc != 0)
        return sd_fail(err, errlen, "%s: %s", path, inner);
    return 0;
}

static bool image_ok(const sd_image *img)
{
    return img && img->pixels && size_ok(img->width, img->height) &&
           (img->channels == 1 || img->channels == 3 || img->channels == 4);
}

int sd_image_encode_png(const sd_image *img, unsigned char **out, size_t *len, char *err,
                        size_t errlen)
{
    if (!image_ok(img) || !out || !len)
        return sd_fail(err, errlen, "PNG encode: invalid image");
    png_image png;
    memset(&png, 0, sizeof png);
    png.version = PNG_IMAGE_VERSION;
    png.width = (png_uint_32)img->width;
    png.height = (png_uint_32)img->height;
    png.format = img->channels == 1 ? PNG_FORMAT_GRAY
                 : img->channels == 3 ? PNG_FORMAT_RGB
                                      : PNG_FORMAT_RGBA;
    png_alloc_size_t size = 0;
    if (!png_image_write_to_memory(&png, NULL, &size, 0, img->pixels, 0, NULL))
        return sd_fail(err, errlen, "PNG encode: %s", png.message);
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf) {
        png_image_free(&png);
        return sd_fail(err, errlen, "PNG encode: out of memory");
    }
    if (!png_image_write_to_memory(&png, buf, &size, 0, img->pixels, 0, NULL)) {
        free(buf);
        return sd_fail(err, errlen, "PNG encode: %s", png.message);
    }
    *out = buf;
    *len = size;
    return 0;
}

int sd_image_encode_webp(const sd_image *img, float quality, unsigned char **out, size_t *len,
                         char *err, size_t errlen)
{
    if (!image_ok(img) || img->channels == 1 || !out || !len)
        return sd_fail(err, errlen, "WebP encode: invalid image (RGB or RGBA needed)");
    if (img->width > WEBP_MAX_DIMENSION || img->height > WEBP_MAX_DIMENSION)
        return sd_fail(err, errlen, "WebP encode: %dx%d exceeds WebP's limit", img->width,
                    img->height);
    WebPConfig config;
    WebPPicture pic;
    if (!WebPConfigInit(&config) || !WebPPictureInit(&pic))
        return sd_fail(err, errlen, "WebP encode: library version mismatch");
    if (quality < 0) {
        /* lossless, keeping the colour of fully transparent pixels too */
        config.lossless = 1;
        config.exact = 1;
        config.quality = 75.0f;
    } else {
        config.quality = quality > 100.0f ? 100.0f : quality;
    }
    pic.use_argb = config.lossless;
    pic.width = img->width;
    pic.height = img->height;
    int stride = img->width * img->channels;
    int ok = img->channels == 3 ? WebPPictureImportRGB(&pic, img->pixels, stride)
                                : WebPPictureImportRGBA(&pic, img->pixels, stride);
    if (!ok) {
        WebPPictureFree(&pic);
        return sd_fail(err, errlen, "WebP encode: out of memory");
    }
    WebPMemoryWriter writer;
    WebPMemoryWriterInit(&writer);
    pic.writer = WebPMemoryWrite;
    pic.custom_ptr = &writer;
    ok = WebPEncode(&config, &pic);
    int code = pic.error_code;
    WebPPictureFree(&pic);
    if (!ok || writer.size == 0) {
        WebPMemoryWriterClear(&writer);
        return sd_fail(err, errlen, "WebP encode failed (error %d)", code);
    }
    /* Hand back malloc memory so callers free() every buffer the same way. */
    unsigned char *buf = malloc(writer.size);
    if (!buf) {
        WebPMemoryWriterClear(&writer);
        return sd_fail(err, errlen, "WebP encode: out of memory");
    }
    memcpy(buf, writer.mem, writer.size);
    *out = buf;
    *len = writer.size;
    WebPMemoryWriterClear(&writer);
    return 0;
}

int sd_image_save(const char *path, const sd_image *img, float webp_quality, char *err,
                  size_t errlen)
{
    unsigned char *data = NULL;
    size_t len = 0;
    char inner[400];
    int rc;
    switch (sd_image_format_from_path(path)) {
    case SD_IMAGE_PNG:
        rc = sd_image_encode_png(img, &data, &len, inner, sizeof inner);
        break;
    case SD_IMAGE_WEBP:
        rc = sd_image_encode_webp(img, webp_quality, &data, &len, inner, sizeof inner);
        break;
    default:
        return sd_fail(err, errlen, "%s: unknown image type (use .png or .webp)", path);
    }
    if (rc != 0)
        return sd_fail(err, errlen, "%s: %s", path, inner);
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(data);
        return sd_fail(err, errlen, "%s: %s", path, strerror(errno));
    }
    size_t put = fwrite(data, 1, len, f);
    int close_rc = fclose(f);
    free(data);
    if (put != len || close_rc != 0)
        return sd_fail(err, errlen, "%s: write failed", path);
    return 0;
}

/* ---- Lanczos resize -------------------------------------------------------- */

static double sinc(double x)
{
    if (x == 0.0)
        return 1.0;
    x *= M_PI;
    return sin(x) / x;
}

static double lanczos3(double x)
{
    if (x <= -3.0 || x >= 3.0)
        return 0.0;
    return sinc(x) * sinc(x / 3.0);
}

/* Per output index: first input index, count, and normalised weights
 * (PIL's precompute_coeffs, in double). */
typedef struct taps {
    int *first, *count;
    double *w; /* [out_size * max_taps] */
    int max_taps;
} taps;

static int taps_make(int in_size, int out_size, taps *t)
{
    double scale = (double)in_size / (double)out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 3.0 * filterscale;
    t->max_taps = (int)ceil(support) * 2 + 1;
    t->first = malloc(sizeof(int) * (size_t)out_size);
    t->count = malloc(sizeof(int) * (size_t)out_size);
    t->w = malloc(sizeof(double) * (size_t)out_size * (size_t)t->max_taps);
    if (!t->first || !t->count || !t->w)
        return -1;
    for (int o = 0; o < out_size; o++) {
        double center = (o + 0.5) * scale;
        int lo = (int)(center - support + 0.5);
        int hi = (int)(center + support + 0.5);
        if (lo < 0)
            lo = 0;
        if (hi > in_size)
            hi = in_size;
        int n = hi - lo;
        if (n > t->max_taps)
            n = t->max_taps;
        double *w = t->w + (size_t)o * (size_t)t->max_taps, sum = 0.0;
        for (int k = 0; k < n; k++) {
            w[k] = lanczos3((k + lo - center + 0.5) / filterscale);
            sum += w[k];
        }
        for (int k = 0; k < n; k++)
            w[k] = sum != 0.0 ? w[k] / sum : 0.0;
        t->first[o] = lo;
        t->count[o] = n;
    }
    return 0;
}

static void taps_free(taps *t)
{
    free(t->first);
    free(t->count);
    free(t->w);
}

static unsigned char clip_u8(double v)
{
    if (v <= 0.0)
        return 0;
    if (v >= 255.0)
        return 255;
    return (unsigned char)(v + 0.5);
}

int sd_image_resize_lanczos(const sd_image *src, int width, int height, sd_image *out,
                            char *err, size_t errlen)
{
    if (!image_ok(src) || !out || !size_ok(width, height))
        return sd_fail(err, errlen, "resize: invalid image or size %dx%d", width, height);
    int c = src->channels;
    if (sd_image_alloc(out, width, height, c) != 0)
        return sd_fail(err, errlen, "resize: out of memory");
    if (width == src->width && height == src->height) {
        memcpy(out->pixels, src->pixels, (size_t)width * (size_t)height * (size_t)c);
        return 0;
    }
    taps th = {0}, tv = {0};
    /* Horizontal pass into a float buffer [src->height][width][c]. */
    float *mid = malloc(sizeof(float) * (size_t)src->height * (size_t)width * (size_t)c);
    if (!mid || taps_make(src->width, width, &th) || taps_make(src->height, height, &tv)) {
        free(mid);
        taps_free(&th);
        taps_free(&tv);
        sd_image_free(out);
        return sd_fail(err, errlen, "resize: out of memory");
    }
    for (int y = 0; y < src->height; y++) {
        const unsigned char *row = src->pixels + (size_t)y * (size_t)src->width * (size_t)c;
        for (int x = 0; x < width; x++) {
            const double *w = th.w + (size_t)x * (size_t)th.max_taps;
            for (int ch = 0; ch < c; ch++) {
                double acc = 0.0;
                for (int k = 0; k < th.count[x]; k++)
                    acc += w[k] * row[(size_t)(th.first[x] + k) * (size_t)c + (size_t)ch];
                mid[((size_t)y * (size_t)width + (size_t)x) * (size_t)c + (size_t)ch] = (float)acc;
            }
        }
    }
    for (int y = 0; y < height; y++) {
        const double *w = tv.w + (size_t)y * (size_t)tv.max_taps;
        for (int x = 0; x < width; x++) {
            for (int ch = 0; ch < c; ch++) {
                double acc = 0.0;
                for (int k = 0; k < tv.count[y]; k++)
                    acc += w[k] * mid[((size_t)(tv.first[y] + k) * (size_t)width + (size_t)x) *
                                          (size_t)c +
                                      (size_t)ch];
                out->pixels[((size_t)y * (size_t)width + (size_t)x) * (size_t)c + (size_t)ch] =
                    clip_u8(acc);
            }
        }
    }
    free(mid);
    taps_free(&th);
    taps_free(&tv);
    return 0;
}
