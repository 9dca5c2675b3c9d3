/* zip.c - see zip.h. Format: PKWARE APPNOTE (EOCD, zip64 EOCD locator and
 * record, central directory headers with the 0x0001 zip64 extra field,
 * local headers). Only what PyTorch's writer produces is needed, but any
 * well-formed archive with stored/deflated entries is read. */
#include "zip.h"

#include "error_text.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_EOCD64_LOC 0x07064b50u

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

/* errors about one file: "<file>: ...", "(zip): ..." when it has no name */
#define fail(err, errlen, fname, ...) \
    sd_fail_in(err, errlen, (fname) ? (fname) : "(zip)", __VA_ARGS__)

int sd_zip_looks_like(const void *base, size_t len)
{
    const unsigned char *p = (const unsigned char *)base;
    return len >= 4 && rd32(p) == SIG_LOCAL;
}

/* Finds the end-of-central-directory record: scanning back over at most a
 * 64 KiB comment. Returns its offset or -1. */
static int64_t find_eocd(const unsigned char *b, size_t len)
{
    if (len < 22) return -1;
    size_t lowest = len > 22 + 65535 ? len - 22 - 65535 : 0;
    for (size_t off = len - 22 + 1; off-- > lowest;) {
        if (rd32(b + off) == SIG_EOCD && off + 22 + rd16(b + off + 20) <= len) return (int64_t)off;
    }
    return -1;
}

void sd_zip_close(sd_zip *z)
{
    if (!z) return;
    for (size_t i = 0; i < z->n_entries; i++) free(z->entries[i].name);
    free(z->entries);
    z->entries = NULL;
    z->n_entries = 0;
}

int sd_zip_open(sd_zip *z, const void *base, size_t len, const char *fname, char *err, size_t errlen)
{
    const unsigned char *b = (const unsigned char *)base;
    memset(z, 0, sizeof *z);
    z->base = b;
    z->len = len;
    z->fname = fname;

    int64_t eocd = find_eocd(b, len);
    if (eocd < 0) return fail(err, errlen, fname, "zip archive has no end-of-central-directory record (truncated?)");
    uint64_t n_entries = rd16(b + eocd + 10);
    uint64_t cd_size = rd32(b + eocd + 12);
    uint64_t cd_off = rd32(b + eocd + 16);

    /* zip64: the locator sits right before the EOCD */
    if (eocd >= 20 && rd32(b + eocd - 20) == SIG_EOCD64_LOC) {
        uint64_t rec = rd64(b + eocd - 20 + 8);
        if (rec > len || len - rec < 56 || rd32(b + rec) != SIG_EOCD64)
            return fail(err, errlen, fname, "zip64 end-of-central-directory record at %llu is missing or truncated",
                        (unsigned long long)rec);
        n_entries = rd64(b + rec + 32);
        cd_size = rd64(b + rec + 40);
        cd_off = rd64(b + rec + 48);
    }
    if (cd_off > len || cd_size > len - cd_off)
        return fail(err, errlen, fname, "zip central directory [%llu, +%llu) lies outside the %zu-byte file",
                    (unsigned long long)cd_off, (unsigned long long)cd_size, len);
    /* each central header takes at least 46 bytes: bounds the count */
    if (n_entries > cd_size / 46)
        return fail(err, errlen, fname, "zip central directory claims %llu entries in %llu bytes",
                    (unsigned long long)n_entries, (unsigned long long)cd_size);

    z->entries = calloc(n_entries ? n_entries : 1, sizeof *z->entries);
    if (!z->entries) return fail(err, errlen, fname, "out of memory");

    const unsigned char *p = b + cd_off, *end = b + cd_off + cd_size;
    for (uint64_t i = 0; i < n_entries; i++) {
        if (end - p < 46 || rd32(p) != SIG_CENTRAL) {
            sd_zip_close(z);
            return fail(err, errlen, fname, "zip central directory entry %llu is malformed", (unsigned long long)i);
        }
        uint16_t flags = rd16(p + 8), method = rd16(p + 10);
        uint32_t crc = rd32(p + 16);
        uint64_t csize = rd32(p + 20), usize = rd32(p + 24);
        uint16_t nlen = rd16(p + 28), xlen = rd16(p + 30), clen = rd16(p + 32);
        uint64_t loff = rd32(p + 42);
        if ((size_t)(end - p) < 46u + nlen + xlen + clen) {
            sd_zip_close(z);
            return fail(err, errlen, fname, "zip central directory entry %llu runs past the directory",
                        (unsigned long long)i);
        }
        /* zip64 extra field: 64-bit values for the fields saturated above */
        const unsigned char *x = p + 46 + nlen, *xend = x + xlen;
        while (xend - x >= 4) {
            uint16_t id = rd16(x), sz = rd16(x + 2);
            if (xend - x - 4 < sz) break;
            if (id == 0x0001) {
                const unsigned char *q = x + 4, *qend = x + 4 + sz;
                if (usize == 0xffffffffu && qend - q >= 8) { usize = rd64(q); q += 8; }
                if (csize == 0xffffffffu && qend - q >= 8) { csize = rd64(q); q += 8; }
                if (loff == 0xffffffffu && qend - q >= 8) { loff = rd64(q); q += 8; }
            }
            x += 4 + sz;
        }
        sd_zip_entry *e = &z->entries[i];
        e->name = malloc((size_t)nlen + 1);
        if (!e->name) {
            sd_zip_close(z);
            return fail(err, errlen, fname, "out of memory");
        }
        memcpy(e->name, p + 46, nlen);
        e->name[nlen] = '\0';
        z->n_entries = (size_t)i + 1;
        if (flags & 1u) {
            /* copy the name first: sd_zip_close frees it (found by fuzz_model_file) */
            char name[128];
            snprintf(name, sizeof name, "%s", e->name);
            sd_zip_close(z);
            return fail(err, errlen, fname, "zip entry '%s' is encrypted", name);
        }
        e->method = method;
        e->crc32 = crc;
        e->comp_size = csize;
        e->size = usize;
        /* local header: its own name/extra lengths decide where data starts */
        if (loff > len || len - loff < 30 || rd32(b + loff) != SIG_LOCAL) {
            char name[128];
            snprintf(name, sizeof name, "%s", e->name);
            sd_zip_close(z);
            return fail(err, errlen, fname, "zip entry '%s': local header at %llu is missing or truncated", name,
                        (unsigned long long)loff);
        }
        uint64_t data = loff + 30 + rd16(b + loff + 26) + rd16(b + loff + 28);
        if (data > len || csize > len - data) {
            char name[128];
            snprintf(name, sizeof name, "%s", e->name);
            sd_zip_close(z);
            return fail(err, errlen, fname, "zip entry '%s': data [%llu, +%llu) lies outside the %zu-byte file (truncated?)",
                        name, (unsigned long long)data, (unsigned long long)csize, len);
        }
        e->data_offset = data;
        p += 46 + nlen + xlen + clen;
    }
    return 0;
}

const sd_zip_entry *sd_zip_find(const sd_zip *z, const char *name)
{
    for (size_t i = 0; i < z->n_entries; i++)
        if (strcmp(z->entries[i].name, name) == 0) return &z->entries[i];
    return NULL;
}

/* crc32 over more than 4 GiB: zlib's length argument is a uInt */
static uint32_t crc_of(const unsigned char *p, uint64_t n)
{
    uLong c = crc32(0L, Z_NULL, 0);
    while (n > 0) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return (uint32_t)c;
}

int sd_zip_read(const sd_zip *z, const sd_zip_entry *e, int verify_crc, const unsigned char **data,
                unsigned char **owned, char *err, size_t errlen)
{
    *data = NULL;
    *owned = NULL;
    const unsigned char *src = z->base + e->data_offset;
    if (e->method == 0) {
        if (e->comp_size != e->size)
            return fail(err, errlen, z->fname, "zip entry '%s' is stored but its sizes differ (%llu vs %llu)", e->name,
                        (unsigned long long)e->comp_size, (unsigned long long)e->size);
        if (verify_crc && crc_of(src, e->size) != e->crc32)
            return fail(err, errlen, z->fname, "zip entry '%s' fails its CRC-32 check (corrupt file)", e->name);
        *data = src;
        return 0;
    }
    if (e->method != 8)
        return fail(err, errlen, z->fname, "zip entry '%s' uses compression method %u (only stored and deflate are supported)",
                    e->name, e->method);
    /* deflate cannot expand data more than ~1032:1; a larger claim is a lie */
    if (e->size > ((uint64_t)1 << 40) || e->size / 1032 > e->comp_size + 1)
        return fail(err, errlen, z->fname, "zip entry '%s' claims an implausible size %llu", e->name,
                    (unsigned long long)e->size);
    unsigned char *out = malloc(e->size ? (size_t)e->size : 1);
    if (!out) return fail(err, errlen, z->fname, "out of memory inflating '%s'", e->name);
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, -MAX_WBITS) != Z_OK) {
        free(out);
        return fail(err, errlen, z->fname, "zlib init failed for '%s'", e->name);
    }
    uint64_t in_left = e->comp_size, out_done = 0;
    const unsigned char *in = src;
    int rc = Z_OK;
    while (rc == Z_OK) {
        uInt in_chunk = in_left > (1u << 30) ? (1u << 30) : (uInt)in_left;
        uint64_t out_left = e->size - out_done;
        uInt out_chunk = out_left > (1u << 30) ? (1u << 30) : (uInt)out_left;
        s.next_in = (Bytef *)(uintptr_t)in;
        s.avail_in = in_chunk;
        s.next_out = out + out_done;
        s.avail_out = out_chunk;
        rc = inflate(&s, Z_NO_FLUSH);
        uint64_t used_in = in_chunk - s.avail_in, made = out_chunk - s.avail_out;
        in += used_in;
        in_left -= used_in;
        out_done += made;
        if (rc == Z_OK && used_in == 0 && made == 0) rc = Z_BUF_ERROR; /* no progress */
    }
    inflateEnd(&s);
    if (rc != Z_STREAM_END || out_done != e->size) {
        free(out);
        return fail(err, errlen, z->fname, "zip entry '%s' does not inflate to its %llu bytes (corrupt or truncated)",
                    e->name, (unsigned long long)e->size);
    }
    if (crc_of(out, e->size) != e->crc32) {
        free(out);
        return fail(err, errlen, z->fname, "zip entry '%s' fails its CRC-32 check (corrupt file)", e->name);
    }
    *data = out;
    *owned = out;
    return 0;
}
