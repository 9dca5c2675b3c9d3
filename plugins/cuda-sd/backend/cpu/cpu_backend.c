/* cpu_backend.c - creation, memory, parameter conversion and the GEMM
 * splitter of the CPU backend; the ops live in conv.c, linear.c, norm.c,
 * attention.c and elementwise.c. */
#include "backend/cpu_backend.h"

#include <cblas.h>  /* openblas_set_num_threads */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/cpu/cpu_internal.h"
#include "backend/cpu/vec_math.h"
#include "engine/half.h"

/* Keep at most this many floats (512 MiB) of freed blocks for reuse, and
 * none bigger than 128 MiB: those (VAE full-resolution maps) are rare, the
 * page faults of a fresh one cost little next to the work on it, and keeping
 * them would only raise the peak RSS. A 512x512 UNet step cycles through
 * ~60 blocks (~500 MB) that all hit the cache from the second step on;
 * evicting on misses instead was measured to thrash (page faults on ~2 GB
 * of fresh blocks per step). */
#define CPU_CACHE_LIMIT ((size_t)128 << 20)
#define CPU_CACHE_BLOCK_MAX ((size_t)32 << 20)

/* ---- memory ------------------------------------------------------------- */

static float *aligned_floats(size_t n)
{
    void *p = NULL;
    if (n == 0) n = 1;
    if (n > SIZE_MAX / sizeof(float) - 64) return NULL;
    if (posix_memalign(&p, 64, n * sizeof(float)) != 0) return NULL;
    return p;
}

static void cache_flush(cpu_backend *cb)
{
    for (int i = 0; i < cb->n_cached; i++) free(cb->cache[i].p);
    cb->n_cached = 0;
    cb->cached_floats = 0;
}

static void evict_oldest(cpu_backend *cb)
{
    free(cb->cache[0].p);
    cb->cached_floats -= cb->cache[0].n;
    memmove(&cb->cache[0], &cb->cache[1], (size_t)(cb->n_cached - 1) * sizeof(cpu_block));
    cb->n_cached--;
}

static float *cpu_alloc(sd_backend *be, size_t n)
{
    cpu_backend *cb = cpu_of(be);
    for (int i = 0; i < cb->n_cached; i++) {
        if (cb->cache[i].n == n) {
            float *p = cb->cache[i].p;
            cb->cached_floats -= n;
            memmove(&cb->cache[i], &cb->cache[i + 1],
                    (size_t)(cb->n_cached - i - 1) * sizeof(cpu_block));
            cb->n_cached--;
            return p;
        }
    }
    float *p = aligned_floats(n);
    if (!p && cb->n_cached) {
        cache_flush(cb);
        p = aligned_floats(n);
    }
    return p;
}

/* The block's size is needed to cache it; blocks come back through
 * sd_tensor_free, which knows the tensor shape, but release() only gets the
 * pointer. malloc_usable_size would be glibc-specific, so the size is
 * recorded in a small header in front of the data instead. */
typedef struct block_header {
    size_t n;
    size_t pad[7];              /* keeps the data 64-byte aligned */
} block_header;

static float *cpu_alloc_hdr(sd_backend *be, size_t n)
{
    size_t extra = sizeof(block_header) / sizeof(float);
    float *raw = cpu_alloc(be, n + extra);
    if (!raw) return NULL;
    ((block_header *)raw)->n = n + extra;
    return raw + extra;
}

static void cpu_release(sd_backend *be, float *p)
{
    if (!p) return;
    cpu_backend *cb = cpu_of(be);
    float *raw = p - sizeof(block_header) / sizeof(float);
    size_t n = ((block_header *)raw)->n;
    if (n > CPU_CACHE_BLOCK_MAX) {
        free(raw);
        return;
    }
    while (cb->n_cached > 0 &&
           (cb->n_cached == CPU_CACHE_MAX || cb->cached_floats + n > CPU_CACHE_LIMIT))
        evict_oldest(cb);
    cb->cache[cb->n_cached].p = raw;
    cb->cache[cb->n_cached].n = n;
    cb->n_cached++;
    cb->cached_floats += n;
}

float *cpu_slot(cpu_backend *cb, int slot, size_t n)
{
    if (cb->slot_cap[slot] < n) {
        free(cb->slot[slot]);
        cb->slot[slot] = aligned_floats(n);
        cb->slot_cap[slot] = cb->slot[slot] ? n : 0;
        if (!cb->slot[slot]) {
            sd_backend_fail(&cb->base, "out of memory converting weights (%zu MB)",
                            n * sizeof(float) >> 20);
            return NULL;
        }
    }
    return cb->slot[slot];
}

int cpu_reserve_scratch(cpu_backend *cb, size_t n)
{
    for (int t = 0; t < cb->n_threads; t++) {
        if (cb->tscratch_cap[t] >= n) continue;
        free(cb->tscratch[t]);
        cb->tscratch[t] = aligned_floats(n);
        cb->tscratch_cap[t] = cb->tscratch[t] ? n : 0;
        if (!cb->tscratch[t])
            return sd_backend_fail(&cb->base, "out of memory for %zu MB of scratch per thread",
                                   n * sizeof(float) >> 20);
    }
    return 0;
}

/* ---- parameter conversion ----------------------------------------------- */

#ifdef SD_HAVE_X86
__attribute__((target("avx,f16c"))) static void f16_to_f32_f16c(const unsigned char *src,
                                                                 float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(src + 2 * i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    if (i < n) sd_f16_to_f32_n(src + 2 * i, dst + i, n - i);
}
#endif

void cpu_convert_serial(const cpu_backend *cb, const sd_tensor_info *t, int64_t first,
                        int64_t count, float *out)
{
    const unsigned char *src = (const unsigned char *)t->data;
    switch (t->dtype) {
    case SD_DTYPE_F32:
        memcpy(out, src + (size_t)first * 4, (size_t)count * 4);
        break;
    case SD_DTYPE_F16:
#ifdef SD_HAVE_X86
        if (cb->f16c) {
            f16_to_f32_f16c(src + (size_t)first * 2, out, (size_t)count);
            break;
        }
#endif
        sd_f16_to_f32_n(src + (size_t)first * 2, out, (size_t)count);
        break;
    case SD_DTYPE_BF16:
        sd_bf16_to_f32_n(src + (size_t)first * 2, out, (size_t)count);
        break;
    default:
        sd_tensor_range_to_f32(t, first, count, out);
        break;
    }
}

typedef struct convert_ctx {
    const cpu_backend *cb;
    const sd_tensor_info *t;
    int64_t first;
    float *out;
} convert_ctx;

static void convert_range_task(void *arg, int64_t b, int64_t e, int thread)
{
    (void)thread;
    convert_ctx *c = arg;
    cpu_convert_serial(c->cb, c->t, c->first + b, e - b, c->out + b);
}

void cpu_convert(const cpu_backend *cb, const sd_tensor_info *t, int64_t first, int64_t count,
                 float *out)
{
    if (count < (1 << 16)) {
        cpu_convert_serial(cb, t, first, count, out);
        return;
    }
    convert_ctx c = { cb, t, first, out };
    sd_pool_for(cb->pool, count, 1 << 15, convert_range_task, &c);
}

const float *cpu_param(cpu_backend *cb, int slot, const sd_tensor_info *t, int64_t expect_numel,
                       const char *what)
{
    if (!t) {
        sd_backend_fail(&cb->base, "missing %s tensor", what);
        return NULL;
    }
    int64_t n = sd_tensor_numel(t);
    if (expect_numel >= 0 && n != expect_numel) {
        sd_backend_fail(&cb->base, "%s '%s' has %lld elements, expected %lld", what, t->name,
                        (long long)n, (long long)expect_numel);
        return NULL;
    }
    if (t->dtype != SD_DTYPE_F32 && t->dtype != SD_DTYPE_F16 && t->dtype != SD_DTYPE_BF16) {
        sd_backend_fail(&cb->base, "%s '%s' has dtype %s, expected F32, F16 or BF16", what,
                        t->name, sd_dtype_name(t->dtype));
        return NULL;
    }
    if (t->dtype == SD_DTYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0)
        return (const float *)t->data;
    float *buf = cpu_slot(cb, slot, (size_t)n);
    if (!buf) return NULL;
    cpu_convert(cb, t, 0, n, buf);
    return buf;
}

/* ---- transfers ---------------------------------------------------------- */

static int cpu_upload(sd_backend *be, const float *host, sd_tensor *t)
{
    (void)be;
    memcpy(t->data, host, sd_tensor_numel_of(t) * sizeof(float));
    return 0;
}

static int cpu_download(sd_backend *be, const sd_tensor *t, float *host)
{
    (void)be;
    memcpy(host, t->data, sd_tensor_numel_of(t) * sizeof(float));
    return 0;
}

typedef struct layout_ctx {
    const float *src;
    float *dst;
    int c, hw;
    bool to_nhwc;
} layout_ctx;

/* One task per (image, channel block): transposes [C, HW] <-> [HW, C]. */
static void layout_task(void *arg, int64_t b, int64_t e, int thread)
{
    (void)thread;
    layout_ctx *l = arg;
    size_t plane = (size_t)l->c * l->hw;
    for (int64_t img = b; img < e; img++) {
        const float *s = l->src + img * plane;
        float *d = l->dst + img * plane;
        for (int p0 = 0; p0 < l->hw; p0 += 64) {
            int p1 = p0 + 64 < l->hw ? p0 + 64 : l->hw;
            for (int ch = 0; ch < l->c; ch++)
                for (int p = p0; p < p1; p++) {
                    if (l->to_nhwc) d[(size_t)p * l->c + ch] = s[(size_t)ch * l->hw + p];
                    else d[(size_t)ch * l->hw + p] = s[(size_t)p * l->c + ch];
                }
        }
    }
}

static int cpu_upload_nchw(sd_backend *be, const float *host, sd_tensor *t)
{
    layout_ctx l = { host, t->data, t->c, t->h * t->w, true };
    sd_pool_for(cpu_of(be)->pool, t->n, 1, layout_task, &l);
    return 0;
}

static int cpu_download_nchw(sd_backend *be, const sd_tensor *t, float *host)
{
    layout_ctx l = { t->data, host, t->c, t->h * t->w, false };
    sd_pool_for(cpu_of(be)->pool, t->n, 1, layout_task, &l);
    return 0;
}

/* ---- lifecycle ---------------------------------------------------------- */

static void cpu_destroy(sd_backend *be)
{
    cpu_backend *cb = cpu_of(be);
    sd_pool_destroy(cb->pool);
    cache_flush(cb);
    for (int i = 0; i < CPU_SLOTS; i++) free(cb->slot[i]);
    if (cb->tscratch)
        for (int t = 0; t < cb->n_threads; t++) free(cb->tscratch[t]);
    free(cb->tscratch);
    free(cb->tscratch_cap);
    free(cb);
}

static const sd_backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc_hdr,
    .release = cpu_release,
    .upload_nchw = cpu_upload_nchw,
    .download_nchw = cpu_download_nchw,
    .upload = cpu_upload,
    .download = cpu_download,
    .conv2d = cpu_conv2d,
    .linear = cpu_linear,
    .group_norm = cpu_group_norm,
    .layer_norm = cpu_layer_norm,
    .attention = cpu_attention,
    .activation = cpu_activation,
    .geglu = cpu_geglu,
    .add = cpu_add,
    .add_per_channel = cpu_add_per_channel,
    .concat_channels = cpu_concat_channels,
    .upsample_nearest2x = cpu_upsample_nearest2x,
    .timestep_embedding = cpu_timestep_embedding,
    .embedding = cpu_embedding,
};

sd_backend *sd_backend_cpu_create(int n_threads, char *err, size_t errlen)
{
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > 256) n_threads = 256;
    cpu_backend *cb = calloc(1, sizeof *cb);
    if (!cb) goto oom;
    cb->base.ops = &cpu_ops;
    cb->n_threads = n_threads;
    cb->tscratch = calloc((size_t)n_threads, sizeof *cb->tscratch);
    cb->tscratch_cap = calloc((size_t)n_threads, sizeof *cb->tscratch_cap);
    if (!cb->tscratch || !cb->tscratch_cap) goto oom;
    cb->pool = sd_pool_create(n_threads);
    if (!cb->pool) {
        if (err) snprintf(err, errlen, "cpu backend: cannot start %d threads", n_threads);
        cpu_destroy(&cb->base);
        return NULL;
    }
#ifdef SD_HAVE_X86
    __builtin_cpu_init();
    cb->avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    cb->f16c = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
#endif
    /* The pool parallelises every GEMM; OpenBLAS's own threads would
     * oversubscribe the cores. */
    openblas_set_num_threads(1);
    return &cb->base;
oom:
    if (err) snprintf(err, errlen, "cpu backend: out of memory");
    if (cb) {
        free(cb->tscratch);
        free(cb->tscratch_cap);
        free(cb);
    }
    return NULL;
}

int sd_backend_cpu_threads(const sd_backend *be)
{
    return ((const cpu_backend *)be)->n_threads;
}
