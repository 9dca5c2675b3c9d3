/* weights.cu - the device copies of checkpoint tensors.
 *
 * A weight is uploaded the first time an op uses it: its raw bytes (F32,
 * F16 or BF16, straight from the mapped file) go to a staging buffer and a
 * kernel converts them to the storage the ops want (fp16, bf16 or float32, conv
 * weights reordered from [Cout][Cin][kh][kw] to [Cout][kh][kw][Cin] so a
 * row of the im2col matrix, which follows NHWC memory order, meets its
 * weights contiguously). Entries are keyed by (data pointer, kind, size):
 * the fp16, bf16 and float32 copies of one tensor are distinct entries. They stay
 * until evicted (VRAM budget), dropped (offload) or the backend is destroyed;
 * the pointer stays valid while the model file is open (ops.h), and a
 * fingerprint of the bytes guards against a later file mapped at the same
 * address. Their memory comes from the backend's weight pool (cb->wpool), in
 * stream order.
 */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/internal.h"

enum { SRC_F32 = 0, SRC_F16 = 1, SRC_BF16 = 2 };

__device__ static inline float load_src(const void *src, int dtype, int64_t i)
{
    if (dtype == SRC_F32) return ((const float *)src)[i];
    uint16_t h = ((const uint16_t *)src)[i];
    return dtype == SRC_F16 ? sd_f16_to_f32(h) : sd_bf16_to_f32(h);
}

/* What weight_convert_kernel writes. */
enum { OUT_F32 = 0, OUT_F16 = 1, OUT_BF16 = 2 };

/* dst[i] for i < n; taps > 1: dst is [co][tap][ci], src [co][ci][tap]. */
__global__ void weight_convert_kernel(const void *src, int dtype, void *dst, int out_type,
                                      int64_t n, int cin, int taps)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t s = i;
        if (taps > 1) {
            int64_t per = (int64_t)taps * cin;
            int64_t co = i / per, r = i % per;
            int64_t t = r / cin, ci = r % cin;
            s = (co * cin + ci) * taps + t;
        }
        float v = load_src(src, dtype, s);
        if (out_type == OUT_F16) ((uint16_t *)dst)[i] = sd_f32_to_f16(v);
        else if (out_type == OUT_BF16) ((uint16_t *)dst)[i] = sd_f32_to_bf16(v);
        else ((float *)dst)[i] = v;
    }
}

int64_t cu_numel(const sd_tensor_info *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The VAE's tensors, in a single-file checkpoint or a separate VAE file. */
static bool is_vae_weight(const char *name)
{
    if (!name) return false;
    return strstr(name, "first_stage_model.") != NULL || starts_with(name, "encoder.") ||
           starts_with(name, "decoder.") || starts_with(name, "quant_conv.") ||
           starts_with(name, "post_quant_conv.");
}

int cu_weight_gemm_type(const cuda_backend *cb, const sd_tensor_info *t)
{
    switch (cb->precision) {
    case SD_CUDA_PREC_F16: return CU_GEMM_F16;
    case SD_CUDA_PREC_TF32:
    case SD_CUDA_PREC_F32: return CU_GEMM_F32;
    case SD_CUDA_PREC_AUTO_VAE_BF16:
        /* bf16 has float32's exponent range: no fp16 overflow, half the
         * weight memory and the tensor-core speed of fp16 */
        return is_vae_weight(t ? t->name : NULL) ? CU_GEMM_BF16 : CU_GEMM_F16;
    case SD_CUDA_PREC_AUTO:
    default:
        /* the VAE overflows fp16; TF32 keeps 10 mantissa bits */
        return is_vae_weight(t ? t->name : NULL) ? CU_GEMM_F32 : CU_GEMM_F16;
    }
}

int cu_gemm_weight_kind(int gt, bool conv)
{
    switch (gt) {
    case CU_GEMM_F16: return conv ? CU_W_CONV16 : CU_W_ROWS16;
    case CU_GEMM_BF16: return conv ? CU_W_CONVBF16 : CU_W_ROWSBF16;
    default: return conv ? CU_W_CONV32 : CU_W_ROWS32;
    }
}

static void fingerprint(const sd_tensor_info *t, unsigned char fp[48])
{
    const unsigned char *p = (const unsigned char *)t->data;
    size_t n = t->nbytes;
    memset(fp, 0, 48);
    if (n <= 48) {
        memcpy(fp, p, n);
        return;
    }
    memcpy(fp, p, 16);
    memcpy(fp + 16, p + n / 2 - 8, 16);
    memcpy(fp + 32, p + n - 16, 16);
}

static size_t slot_of(const void *key, int kind, size_t nbytes, size_t cap)
{
    uint64_t x = (uint64_t)(uintptr_t)key * 0x9E3779B97F4A7C15ull +
                 (uint64_t)kind * 0xBF58476D1CE4E5B9ull + (uint64_t)nbytes * 0x94D049BB133111EBull;
    x ^= x >> 29;
    return (size_t)x & (cap - 1);
}

/* Key: (data pointer, kind, byte size) - a view of a tensor's first rows
 * (engine/clip.c's q slice of OpenCLIP's in_proj) shares the pointer with
 * the whole tensor. */
static cu_weight *find_slot(cuda_backend *cb, const void *key, int kind, size_t nbytes)
{
    size_t i = slot_of(key, kind, nbytes, cb->wcap);
    while (cb->wtab[i].key && !(cb->wtab[i].key == key && cb->wtab[i].kind == kind &&
                                cb->wtab[i].src_nbytes == nbytes))
        i = (i + 1) & (cb->wcap - 1);
    return &cb->wtab[i];
}

/* Empties a slot and re-inserts the rest of its probe chain (linear probing
 * has no tombstones). */
static void drop_slot(cuda_backend *cb, cu_weight *e)
{
    e->key = NULL;
    cb->wcount--;
    size_t i = (size_t)(e - cb->wtab);
    for (size_t j = (i + 1) & (cb->wcap - 1); cb->wtab[j].key; j = (j + 1) & (cb->wcap - 1)) {
        cu_weight moved = cb->wtab[j];
        cb->wtab[j].key = NULL;
        *find_slot(cb, moved.key, moved.kind, moved.src_nbytes) = moved;
    }
}

static int grow_table(cuda_backend *cb)
{
    size_t ncap = cb->wcap ? cb->wcap * 2 : 1024;
    cu_weight *old = cb->wtab;
    size_t ocap = cb->wcap;
    cb->wtab = (cu_weight *)calloc(ncap, sizeof *cb->wtab);
    if (!cb->wtab) {
        cb->wtab = old;
        return cu_fail(cb, "out of host memory for the weight cache");
    }
    cb->wcap = ncap;
    for (size_t i = 0; i < ocap; i++)
        if (old[i].key) *find_slot(cb, old[i].key, old[i].kind, old[i].src_nbytes) = old[i];
    free(old);
    return 0;
}

const void *cu_weight_get(cuda_backend *cb, const sd_tensor_info *t, int kind,
                          int64_t expect_numel, const char *what)
{
    if (!t) {
        cu_fail(cb, "missing %s tensor", what);
        return NULL;
    }
    int dtype;
    switch (t->dtype) {
    case SD_DTYPE_F32: dtype = SRC_F32; break;
    case SD_DTYPE_F16: dtype = SRC_F16; break;
    case SD_DTYPE_BF16: dtype = SRC_BF16; break;
    default:
        cu_fail(cb, "%s '%s' has an element type other than F32, F16 or BF16", what, t->name);
        return NULL;
    }
    int64_t n = cu_numel(t);
    if (expect_numel >= 0 && n != expect_numel) {
        cu_fail(cb, "%s '%s' has %lld elements, expected %lld", what, t->name, (long long)n,
                (long long)expect_numel);
        return NULL;
    }
    size_t esz = dtype == SRC_F32 ? 4 : 2;
    if (!t->data || t->nbytes != (size_t)n * esz) {
        cu_fail(cb, "%s '%s': data size does not match its shape", what, t->name);
        return NULL;
    }
    int cin = 1, taps = 1;
    if (kind == CU_W_CONV16 || kind == CU_W_CONV32 || kind == CU_W_CONVBF16) {
        if (t->ndim != 4) {
            cu_fail(cb, "%s '%s' is not a 4-D conv weight", what, t->name);
            return NULL;
        }
        cin = (int)t->shape[1];
        taps = (int)(t->shape[2] * t->shape[3]);
    }

    if ((cb->wcount + 1) * 2 > cb->wcap && grow_table(cb) != 0) return NULL;
    unsigned char fp[48];
    fingerprint(t, fp);
    cu_weight *e = find_slot(cb, t->data, kind, t->nbytes);
    cb->wclock++;
    if (e->key && memcmp(e->fp, fp, sizeof fp) == 0) {
        e->last_use = cb->wclock;
        return e->dev;
    }
    /* an upload is not capturable (graph.cu): the capture fails and the
     * pass runs eagerly, uploading then */
    if (cb->capturing) {
        cu_fail(cb, "weight '%s' is not on the device during a graph capture", t->name);
        return NULL;
    }
    if (e->key) {
        /* same address, other contents: the old copy may still be in use by
         * queued kernels */
        if (cu_check(cb, cudaStreamSynchronize(cb->stream), "weight cache")) return NULL;
        (void)cudaFreeAsync(e->dev, cb->stream);
        cb->wbytes -= e->bytes;
        drop_slot(cb, e);
        cb->wgen++;
    }

    const int out_type = kind == CU_W_ROWS16 || kind == CU_W_CONV16 || kind == CU_W_VEC16 ||
                                 (kind == CU_W_TABLE && dtype == SRC_F16)
                             ? OUT_F16
                         : kind == CU_W_ROWSBF16 || kind == CU_W_CONVBF16 ? OUT_BF16
                                                                           : OUT_F32;
    size_t bytes = (size_t)n * (out_type == OUT_F32 ? 4 : 2);
    /* over the VRAM budget: make room first (may move table entries) */
    if (cu_weights_fit(cb, bytes) != 0) return NULL;
    e = find_slot(cb, t->data, kind, t->nbytes);
    void *dev = NULL;
    /* from the weights' own pool, in stream order (never during a capture:
     * refused above) */
    if (cudaMallocFromPoolAsync(&dev, bytes ? bytes : 1, cb->wpool, cb->stream) != cudaSuccess) {
        (void)cudaGetLastError();
        /* cached activation blocks may be what is in the way */
        (void)cudaStreamSynchronize(cb->stream);
        (void)cudaMemPoolTrimTo(cb->pool, 0);
        if (cudaMallocFromPoolAsync(&dev, bytes ? bytes : 1, cb->wpool, cb->stream) !=
            cudaSuccess) {
            (void)cudaGetLastError();
            cu_fail(cb, "out of GPU memory for weight '%s' (%zu MB; %zu MB of weights cached)",
                    t->name, bytes >> 20, cb->wbytes >> 20);
            return NULL;
        }
    }
    int rc = 0;
    if (dtype == SRC_F32 && out_type == OUT_F32 && taps == 1) {
        rc = cu_check(cb, cudaMemcpyAsync(dev, t->data, t->nbytes, cudaMemcpyHostToDevice,
                                          cb->stream),
                      "weight upload");
    } else {
        void *stage = cu_malloc(cb, t->nbytes);
        if (!stage) {
            rc = cu_fail(cb, "out of GPU memory staging weight '%s'", t->name);
        } else {
            rc = cu_check(cb, cudaMemcpyAsync(stage, t->data, t->nbytes, cudaMemcpyHostToDevice,
                                              cb->stream),
                          "weight upload");
            if (rc == 0) {
                SD_LAUNCH(weight_convert_kernel, cu_grid(cb, (size_t)n, 256), 256, 0, cb->stream,
                          (const void *)stage, dtype, dev, out_type, n, cin, taps);
                rc = cu_launched(cb, "weight conversion");
            }
            cu_free(cb, stage);
        }
    }
    if (rc != 0) {
        (void)cudaFreeAsync(dev, cb->stream);
        (void)cudaStreamSynchronize(cb->stream);
        return NULL;
    }
    cb->wcount++;
    e->key = t->data;
    e->kind = kind;
    e->dev = dev;
    e->bytes = bytes;
    e->src_nbytes = t->nbytes;
    e->last_use = cb->wclock;
    memcpy(e->fp, fp, sizeof fp);
    cb->wbytes += bytes;
    if (cb->wbytes > cb->wpeak) cb->wpeak = cb->wbytes;
    cb->n_uploads++;
    cb->bytes_uploaded += t->nbytes;
    return dev;
}

void cu_weights_free(cuda_backend *cb)
{
    for (size_t i = 0; i < cb->wcap; i++)
        if (cb->wtab[i].key) (void)cudaFreeAsync(cb->wtab[i].dev, cb->stream);
    if (cb->stream) (void)cudaStreamSynchronize(cb->stream);
    free(cb->wtab);
    cb->wtab = NULL;
    cb->wcap = cb->wcount = cb->wbytes = 0;
}

/* ---- eviction (VRAM budget, model swaps) -------------------------------- */

typedef struct victim {
    const void *key;
    int kind;
    size_t src_nbytes;
    uint64_t last_use;
} victim;

static victim victim_of(const cu_weight *e)
{
    victim v;
    v.key = e->key;
    v.kind = e->kind;
    v.src_nbytes = e->src_nbytes;
    v.last_use = e->last_use;
    return v;
}

static int by_last_use(const void *a, const void *b)
{
    uint64_t x = ((const victim *)a)->last_use, y = ((const victim *)b)->last_use;
    return x < y ? -1 : x > y;
}

/* Frees the listed entries, in stream order (the callers have synchronised
 * already, so nothing queued reads them). */
static size_t drop_victims(cuda_backend *cb, const victim *v, size_t n)
{
    size_t freed = 0;
    for (size_t i = 0; i < n; i++) {
        cu_weight *e = find_slot(cb, v[i].key, v[i].kind, v[i].src_nbytes);
        if (!e->key) continue;
        (void)cudaFreeAsync(e->dev, cb->stream);
        cb->wbytes -= e->bytes;
        freed += e->bytes;
        drop_slot(cb, e);
        cb->wgen++;             /* captured graphs that read it are stale */
    }
    return freed;
}

/* An op looks up at most two weights (weight + bias, gamma + beta, table +
 * positions): while the second is being uploaded the first, looked up one
 * tick before, must stay. Everything older may go (queued kernels that
 * still read it are waited for before the free). */
#define CU_RECENT_LOOKUPS 2

int cu_weights_fit(cuda_backend *cb, size_t need)
{
    if (!cb->wbudget || cb->wbytes + need <= cb->wbudget || cb->wcount == 0) return 0;
    victim *v = (victim *)malloc(cb->wcount * sizeof *v);
    if (!v) return cu_fail(cb, "out of host memory evicting weights");
    size_t n = 0;
    for (size_t i = 0; i < cb->wcap; i++) {
        const cu_weight *e = &cb->wtab[i];
        if (!e->key || e->last_use + CU_RECENT_LOOKUPS > cb->wclock) continue;
        v[n++] = victim_of(e);
    }
    qsort(v, n, sizeof *v, by_last_use);
    /* how many of the oldest must go */
    size_t take = 0, bytes = cb->wbytes;
    while (take < n && bytes + need > cb->wbudget) {
        cu_weight *e = find_slot(cb, v[take].key, v[take].kind, v[take].src_nbytes);
        bytes -= e->bytes;
        take++;
    }
    int rc = 0;
    if (take > 0) {
        /* queued kernels may still read them */
        rc = cu_check(cb, cudaStreamSynchronize(cb->stream), "weight eviction");
        if (rc == 0) {
            drop_victims(cb, v, take);
            cb->n_evictions += take;
        }
    }
    free(v);
    return rc;
}

long long cu_weights_drop_range(cuda_backend *cb, const void *lo, const void *hi)
{
    if (cb->wcount == 0) return 0;
    victim *v = (victim *)malloc(cb->wcount * sizeof *v);
    if (!v) return cu_fail(cb, "out of host memory dropping weights");
    size_t n = 0;
    const unsigned char *l = (const unsigned char *)lo, *h = (const unsigned char *)hi;
    for (size_t i = 0; i < cb->wcap; i++) {
        const cu_weight *e = &cb->wtab[i];
        const unsigned char *k = (const unsigned char *)e->key;
        if (e->key && k >= l && k < h)
            v[n++] = victim_of(e);
    }
    long long freed = 0;
    if (n > 0) {
        if (cu_check(cb, cudaStreamSynchronize(cb->stream), "dropping weights")) {
            free(v);
            return -1;
        }
        freed = (long long)drop_victims(cb, v, n);
        /* the device gets the pages back now, for the next phase (offload) */
        if (cu_check(cb, cudaStreamSynchronize(cb->stream), "dropping weights") ||
            cu_check(cb, cudaMemPoolTrimTo(cb->wpool, 0), "dropping weights")) {
            free(v);
            return -1;
        }
    }
    free(v);
    return freed;
}
