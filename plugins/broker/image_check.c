/* broker: reads image headers (format, size, alpha) without decoding pixels.
 * Used to validate source images and masks on /generate/async; the broker
 * stores images as they come (any format a worker's PIL reads) instead of
 * re-encoding them to WebP as the public horde does. */
#include <string.h>

#include "broker.h"

static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static uint32_t le32(const unsigned char *p) {
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}

static int sniff_png(const unsigned char *d, size_t len, br_image_info *info) {
    if (len < 33 || memcmp(d + 12, "IHDR", 4) != 0)
        return -1;
    info->format = "png";
    info->width = (int)(be32(d + 16) & 0x7fffffff);
    info->height = (int)(be32(d + 20) & 0x7fffffff);
    unsigned color = d[25];
    info->alpha = color == 4 || color == 6;
    /* palette/grey images get alpha from a tRNS chunk before the pixel data */
    size_t off = 8;
    while (!info->alpha && off + 8 <= len) {
        uint32_t clen = be32(d + off);
        if (memcmp(d + off + 4, "tRNS", 4) == 0)
            info->alpha = true;
        if (memcmp(d + off + 4, "IDAT", 4) == 0 || clen > len)
            break;
        off += 12 + (size_t)clen;
    }
    return 0;
}

static int sniff_webp(const unsigned char *d, size_t len, br_image_info *info) {
    if (len < 30)
        return -1;
    const unsigned char *c = d + 12, *data = d + 20;
    info->format = "webp";
    info->alpha = false;
    if (memcmp(c, "VP8 ", 4) == 0) {
        if (data[3] != 0x9d || data[4] != 0x01 || data[5] != 0x2a)
            return -1;
        info->width = (data[6] | (data[7] << 8)) & 0x3fff;
        info->height = (data[8] | (data[9] << 8)) & 0x3fff;
        return 0;
    }
    if (memcmp(c, "VP8L", 4) == 0) {
        if (data[0] != 0x2f)
            return -1;
        uint32_t b = le32(data + 1);
        info->width = (int)(b & 0x3fff) + 1;
        info->height = (int)((b >> 14) & 0x3fff) + 1;
        info->alpha = (b >> 28) & 1;
        return 0;
    }
    if (memcmp(c, "VP8X", 4) == 0) {
        info->alpha = (data[0] & 0x10) != 0;
        info->width = (int)(data[4] | (data[5] << 8) | (data[6] << 16)) + 1;
        info->height = (int)(data[7] | (data[8] << 8) | (data[9] << 16)) + 1;
        return 0;
    }
    return -1;
}

static int sniff_jpeg(const unsigned char *d, size_t len, br_image_info *info) {
    size_t off = 2;
    while (off + 9 < len) {
        if (d[off] != 0xff)
            return -1;
        unsigned m = d[off + 1];
        if (m == 0xff) { /* fill byte */
            off++;
            continue;
        }
        size_t seglen = ((size_t)d[off + 2] << 8) | d[off + 3];
        bool sof = m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc;
        if (sof) {
            info->format = "jpeg";
            info->height = (d[off + 5] << 8) | d[off + 6];
            info->width = (d[off + 7] << 8) | d[off + 8];
            info->alpha = false;
            return 0;
        }
        if (seglen < 2)
            return -1;
        off += 2 + seglen;
    }
    return -1;
}

int br_image_sniff(const void *data, size_t len, br_image_info *info) {
    const unsigned char *d = data;
    memset(info, 0, sizeof(*info));
    int rc = -1;
    if (len >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0)
        rc = sniff_png(d, len, info);
    else if (len >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0)
        rc = sniff_webp(d, len, info);
    else if (len >= 4 && d[0] == 0xff && d[1] == 0xd8)
        rc = sniff_jpeg(d, len, info);
    else if (len >= 10 && (memcmp(d, "GIF87a", 6) == 0 || memcmp(d, "GIF89a", 6) == 0)) {
        info->format = "gif";
        info->width = d[6] | (d[7] << 8);
        info->height = d[8] | (d[9] << 8);
        rc = 0;
    }
    if (rc == 0 && (info->width <= 0 || info->height <= 0))
        rc = -1;
    return rc;
}
