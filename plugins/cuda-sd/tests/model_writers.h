/* model_writers.h - test helpers that build checkpoint files in memory:
 *   - st_*: a safetensors image from (name, dtype, shape, data) entries;
 *   - zipw_*: a ZIP archive (stored or deflated entries, CRC-32) - the
 *     container of PyTorch .ckpt files;
 *   - pk_*: pickle opcodes, to spell out a torch.save()-style state dict
 *     (or a malicious one) byte by byte.
 * Header-only, for tests. All buffers are malloc'd and grow as needed;
 * free them with mw_buf_free(). Allocation failures abort the test. */
#ifndef CUDA_SD_TESTS_MODEL_WRITERS_H
#define CUDA_SD_TESTS_MODEL_WRITERS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

typedef struct mw_buf {
    unsigned char *p;
    size_t n, cap;
} mw_buf;

static inline void mw_put(mw_buf *b, const void *data, size_t len)
{
    if (b->n + len > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + len) cap *= 2;
        b->p = (unsigned char *)realloc(b->p, cap);
        if (!b->p) abort();
        b->cap = cap;
    }
    if (len) memcpy(b->p + b->n, data, len);
    b->n += len;
}

static inline void mw_u8(mw_buf *b, unsigned v) { unsigned char c = (unsigned char)v; mw_put(b, &c, 1); }
static inline void mw_le(mw_buf *b, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++) mw_u8(b, (unsigned)(v >> (8 * i)) & 0xff);
}
static inline void mw_str(mw_buf *b, const char *s) { mw_put(b, s, strlen(s)); }
static inline void mw_buf_free(mw_buf *b) { free(b->p); memset(b, 0, sizeof *b); }

/* ---- safetensors ------------------------------------------------------------ */
typedef struct st_entry {
    const char *name;
    const char *dtype;          /* "F32", "F16", ... as written in the header */
    int ndim;
    int64_t shape[8];
    const void *data;           /* NULL: zero bytes */
    size_t nbytes;
} st_entry;

/* Writes a safetensors image; metadata_json (may be NULL) is the JSON
 * object text for "__metadata__". */
static inline void st_build(mw_buf *out, const st_entry *e, size_t n, const char *metadata_json)
{
    mw_buf hdr = {0}, data = {0};
    mw_str(&hdr, "{");
    if (metadata_json) {
        mw_str(&hdr, "\"__metadata__\":");
        mw_str(&hdr, metadata_json);
    }
    for (size_t i = 0; i < n; i++) {
        char tmp[512];
        size_t begin = data.n;
        if (e[i].data) mw_put(&data, e[i].data, e[i].nbytes);
        else for (size_t k = 0; k < e[i].nbytes; k++) mw_u8(&data, 0);
        snprintf(tmp, sizeof tmp, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", (i || metadata_json) ? "," : "", e[i].name,
                 e[i].dtype);
        mw_str(&hdr, tmp);
        for (int d = 0; d < e[i].ndim; d++) {
            snprintf(tmp, sizeof tmp, "%s%lld", d ? "," : "", (long long)e[i].shape[d]);
            mw_str(&hdr, tmp);
        }
        snprintf(tmp, sizeof tmp, "],\"data_offsets\":[%zu,%zu]}", begin, data.n);
        mw_str(&hdr, tmp);
    }
    mw_str(&hdr, "}");
    while (hdr.n % 8) mw_u8(&hdr, ' ');
    out->n = 0;
    mw_le(out, hdr.n, 8);
    mw_put(out, hdr.p, hdr.n);
    mw_put(out, data.p, data.n);
    mw_buf_free(&hdr);
    mw_buf_free(&data);
}

/* Writes raw header text (for malformed-header tests) followed by data. */
static inline void st_build_raw(mw_buf *out, const char *header, const void *data, size_t nbytes)
{
    out->n = 0;
    mw_le(out, strlen(header), 8);
    mw_str(out, header);
    mw_put(out, data, nbytes);
}

static inline int mw_write_file(const char *path, const mw_buf *b)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(b->p, 1, b->n, f);
    fclose(f);
    return w == b->n ? 0 : -1;
}

/* ---- zip -------------------------------------------------------------------- */
typedef struct zipw {
    mw_buf out;
    mw_buf central;
    unsigned n;
} zipw;

/* Adds an entry; deflate != 0 compresses it with zlib (raw deflate). */
static inline void zipw_add(zipw *z, const char *name, const void *data, size_t len, int compress)
{
    uint32_t crc = (uint32_t)crc32(0L, (const Bytef *)data, (uInt)len);
    unsigned char *comp = NULL;
    size_t clen = len;
    if (compress) {
        z_stream s;
        memset(&s, 0, sizeof s);
        deflateInit2(&s, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
        size_t cap = deflateBound(&s, (uLong)len);
        comp = (unsigned char *)malloc(cap);
        s.next_in = (Bytef *)(uintptr_t)data;
        s.avail_in = (uInt)len;
        s.next_out = comp;
        s.avail_out = (uInt)cap;
        deflate(&s, Z_FINISH);
        clen = cap - s.avail_out;
        deflateEnd(&s);
    }
    uint32_t off = (uint32_t)z->out.n;
    uint16_t method = compress ? 8 : 0;
    mw_le(&z->out, 0x04034b50u, 4);
    mw_le(&z->out, 20, 2); mw_le(&z->out, 0, 2); mw_le(&z->out, method, 2);
    mw_le(&z->out, 0, 2); mw_le(&z->out, 0, 2);
    mw_le(&z->out, crc, 4); mw_le(&z->out, clen, 4); mw_le(&z->out, len, 4);
    mw_le(&z->out, strlen(name), 2); mw_le(&z->out, 0, 2);
    mw_str(&z->out, name);
    mw_put(&z->out, compress ? comp : data, clen);
    free(comp);

    mw_le(&z->central, 0x02014b50u, 4);
    mw_le(&z->central, 20, 2); mw_le(&z->central, 20, 2); mw_le(&z->central, 0, 2); mw_le(&z->central, method, 2);
    mw_le(&z->central, 0, 2); mw_le(&z->central, 0, 2);
    mw_le(&z->central, crc, 4); mw_le(&z->central, clen, 4); mw_le(&z->central, len, 4);
    mw_le(&z->central, strlen(name), 2); mw_le(&z->central, 0, 2); mw_le(&z->central, 0, 2);
    mw_le(&z->central, 0, 2); mw_le(&z->central, 0, 2); mw_le(&z->central, 0, 4);
    mw_le(&z->central, off, 4);
    mw_str(&z->central, name);
    z->n++;
}

/* Appends the central directory and end record; the archive is z->out
 * (the caller frees it). */
static inline void zipw_finish(zipw *z)
{
    uint32_t cd_off = (uint32_t)z->out.n;
    mw_put(&z->out, z->central.p, z->central.n);
    mw_le(&z->out, 0x06054b50u, 4);
    mw_le(&z->out, 0, 2); mw_le(&z->out, 0, 2);
    mw_le(&z->out, z->n, 2); mw_le(&z->out, z->n, 2);
    mw_le(&z->out, z->central.n, 4); mw_le(&z->out, cd_off, 4);
    mw_le(&z->out, 0, 2);
    mw_buf_free(&z->central);
}

/* ---- pickle opcodes (protocol 2) ---------------------------------------------- */
static inline void pk_op(mw_buf *b, char op) { mw_u8(b, (unsigned char)op); }
static inline void pk_proto(mw_buf *b) { mw_u8(b, 0x80); mw_u8(b, 2); }
static inline void pk_str(mw_buf *b, const char *s)        /* BINUNICODE */
{
    pk_op(b, 'X');
    mw_le(b, strlen(s), 4);
    mw_str(b, s);
}
static inline void pk_int(mw_buf *b, int32_t v)            /* BININT */
{
    pk_op(b, 'J');
    mw_le(b, (uint32_t)v, 4);
}
static inline void pk_global(mw_buf *b, const char *module, const char *name)
{
    pk_op(b, 'c');
    mw_str(b, module); mw_u8(b, '\n');
    mw_str(b, name); mw_u8(b, '\n');
}
/* A tuple of ints: MARK ints TUPLE */
static inline void pk_int_tuple(mw_buf *b, const int64_t *v, int n)
{
    pk_op(b, '(');
    for (int i = 0; i < n; i++) pk_int(b, (int32_t)v[i]);
    pk_op(b, 't');
}
/* torch._utils._rebuild_tensor_v2(persistent storage, offset, size, stride,
 * False, OrderedDict()) - exactly how torch.save spells a tensor */
static inline void pk_tensor(mw_buf *b, const char *storage_type, const char *key, int64_t numel, int64_t offset,
                             const int64_t *shape, const int64_t *stride, int ndim)
{
    pk_global(b, "torch._utils", "_rebuild_tensor_v2");
    pk_op(b, '(');
    pk_op(b, '(');
    pk_str(b, "storage");
    pk_global(b, "torch", storage_type);
    pk_str(b, key);
    pk_str(b, "cpu");
    pk_int(b, (int32_t)numel);
    pk_op(b, 't');
    pk_op(b, 'Q');
    pk_int(b, (int32_t)offset);
    pk_int_tuple(b, shape, ndim);
    pk_int_tuple(b, stride, ndim);
    mw_u8(b, 0x89);                                        /* NEWFALSE */
    pk_global(b, "collections", "OrderedDict");
    pk_op(b, ')');
    pk_op(b, 'R');
    pk_op(b, 't');
    pk_op(b, 'R');
}

#endif
