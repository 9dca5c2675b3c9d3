/* worker: WebP out, WebP/PNG in, base64. See image_codec.h. */
#include "image_codec.h"

#include <png.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <webp/decode.h>
#include <webp/encode.h>

#define MAX_SIDE 8192

int wk_webp_encode(const hn_image *img, float quality, unsigned char **out, size_t *len,
                   char *err, size_t errlen) {
    *out = NULL;
    *len = 0;
    if (!img || !img->pixels || img->width <= 0 || img->height <= 0 ||
        (img->channels != 3 && img->channels != 4)) {
        snprintf(err, errlen, "WebP encode: not an RGB or RGBA image");
        return -1;
    }
    if (img->width > WEBP_MAX_DIMENSION || img->height > WEBP_MAX_DIMENSION) {
        snprintf(err, errlen, "WebP encode: %dx%d exceeds WebP's limit", img->width,
                 img->height);
        return -1;
    }
    WebPConfig config;
    WebPPicture pic;
    if (!WebPConfigInit(&config) || !WebPPictureInit(&pic)) {
        snprintf(err, errlen, "WebP encode: libwebp version mismatch");
        return -1;
    }
    /* Only the quality differs from the defaults (method 4): the public
     * workers use method 6, which makes smaller files of the same pixels;
     * matching cuda-sd's encoder makes results checkable byte for byte. */
    config.quality = quality < 0 ? 0 : quality > 100 ? 100 : quality;
    pic.width = img->width;
    pic.height = img->height;
    int stride = img->width * img->channels;
    int ok = img->channels == 3 ? WebPPictureImportRGB(&pic, img->pixels, stride)
                                : WebPPictureImportRGBA(&pic, img->pixels, stride);
    if (!ok) {
        WebPPictureFree(&pic);
        snprintf(err, errlen, "WebP encode: out of memory");
        return -1;
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
        snprintf(err, errlen, "WebP encode failed (libwebp error %d)", code);
        return -1;
    }
    unsigned char *buf = malloc(writer.size);
    if (!buf) {
        WebPMemoryWriterClear(&writer);
        snprintf(err, errlen, "WebP encode: out of memory");
        return -1;
    }
    memcpy(buf, writer.mem, writer.size);
    *out = buf;
    *len = writer.size;
    WebPMemoryWriterClear(&writer);
    return 0;
}

void wk_image_free(hn_image *img) {
    if (!img)
        return;
    free(img->pixels);
    memset(img, 0, sizeof *img);
}

static int decode_webp(const void *data, size_t len, hn_image *img, char *err, size_t errlen) {
    WebPBitstreamFeatures f;
    if (WebPGetFeatures(data, len, &f) != VP8_STATUS_OK) {
        snprintf(err, errlen, "not a readable WebP image");
        return -1;
    }
    if (f.width <= 0 || f.height <= 0 || f.width > MAX_SIDE || f.height > MAX_SIDE) {
        snprintf(err, errlen, "WebP image of %dx%d is out of range", f.width, f.height);
        return -1;
    }
    int w = 0, h = 0;
    uint8_t *px = f.has_alpha ? WebPDecodeRGBA(data, len, &w, &h) : WebPDecodeRGB(data, len, &w, &h);
    if (!px) {
        snprintf(err, errlen, "WebP image could not be decoded");
        return -1;
    }
    int ch = f.has_alpha ? 4 : 3;
    size_t n = (size_t)w * (size_t)h * (size_t)ch;
    img->pixels = malloc(n);
    if (!img->pixels) {
        WebPFree(px);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* copy so that every hn_image is freed with free() */
    memcpy(img->pixels, px, n);
    WebPFree(px);
    img->width = w;
    img->height = h;
    img->channels = ch;
    return 0;
}

static int decode_png(const void *data, size_t len, hn_image *img, char *err, size_t errlen) {
    png_image p;
    memset(&p, 0, sizeof p);
    p.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&p, data, len)) {
        snprintf(err, errlen, "PNG: %s", p.message);
        return -1;
    }
    if (p.width == 0 || p.height == 0 || p.width > MAX_SIDE || p.height > MAX_SIDE) {
        png_image_free(&p);
        snprintf(err, errlen, "PNG image of %ux%u is out of range", p.width, p.height);
        return -1;
    }
    bool alpha = (p.format & PNG_FORMAT_FLAG_ALPHA) != 0;
    p.format = alpha ? PNG_FORMAT_RGBA : PNG_FORMAT_RGB;
    size_t n = PNG_IMAGE_SIZE(p);
    img->pixels = malloc(n);
    if (!img->pixels) {
        png_image_free(&p);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (!png_image_finish_read(&p, NULL, img->pixels, 0, NULL)) {
        snprintf(err, errlen, "PNG: %s", p.message);
        png_image_free(&p);
        wk_image_free(img);
        return -1;
    }
    img->width = (int)p.width;
    img->height = (int)p.height;
    img->channels = alpha ? 4 : 3;
    return 0;
}

int wk_image_decode(const void *data, size_t len, hn_image *img, char *err, size_t errlen) {
    memset(img, 0, sizeof *img);
    const unsigned char *b = data;
    if (len >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0)
        return decode_webp(data, len, img, err, errlen);
    if (len >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0)
        return decode_png(data, len, img, err, errlen);
    snprintf(err, errlen, "not a WebP or PNG image");
    return -1;
}

/* ---- base64 -------------------------------------------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *wk_b64_encode(const void *data, size_t len) {
    const unsigned char *p = data;
    size_t olen = (len + 2) / 3 * 4;
    char *o = malloc(olen + 1);
    if (!o)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < len)
            v |= p[i + 2];
        o[j++] = b64[v >> 18 & 63];
        o[j++] = b64[v >> 12 & 63];
        o[j++] = i + 1 < len ? b64[v >> 6 & 63] : '=';
        o[j++] = i + 2 < len ? b64[v & 63] : '=';
    }
    o[j] = '\0';
    return o;
}

static int b64_val(int c) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

void *wk_b64_decode(const char *text, size_t *out_len) {
    size_t n = strlen(text);
    unsigned char *o = malloc(n / 4 * 3 + 3);
    if (!o)
        return NULL;
    uint32_t acc = 0;
    int bits = 0;
    size_t j = 0;
    bool pad = false;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)text[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
            continue;
        if (c == '=') {
            pad = true;
            continue;
        }
        int v = b64_val(c);
        if (v < 0 || pad) {
            free(o);
            return NULL;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[j++] = (unsigned char)(acc >> bits & 0xff);
        }
    }
    *out_len = j;
    return o;
}
