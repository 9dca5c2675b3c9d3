/* norm.cu - GroupNorm (+ fused SiLU) and LayerNorm on NHWC tensors,
 * statistics in float32 with Welford's update (no cancellation, unlike
 * sum/sum-of-squares), population variance as PyTorch.
 * Input and output are float32 or fp16 in any mix (ops.h sd_act_type; in
 * place only with one type): fp16 values are read as floats, so the
 * statistics and the normalisation are float32 whatever the types; only the
 * output is rounded to fp16. The kernels are templated on the types
 * (act_io.h), the float32 instantiations being the plain float code.
 *
 * GroupNorm: a (sample, group) holds H*W*C/G values, from 40k (UNet at 64x64)
 * to a million (VAE at 512x512): too many for one block to be quick, so
 * (1) blocks each reduce a slice of one group to a Welford triple, (2) one
 * thread per group merges its slices into mean and 1/std, (3) an
 * element-wise pass normalises, applies gamma/beta and SiLU.
 * LayerNorm: rows are short (<= a few thousand): one block per row.
 */
#include "backend/cuda/act_io.h"

struct welford {
    float n, mean, m2;
};

__device__ static inline welford welford_merge(welford a, welford b)
{
    float n = a.n + b.n;
    if (n == 0.0f) return a;
    float d = b.mean - a.mean, fb = b.n / n;
    welford r;
    r.n = n;
    r.mean = a.mean + d * fb;
    r.m2 = a.m2 + b.m2 + d * d * a.n * fb;
    return r;
}

/* Channels j*V .. j*V+V-1 of the pixel at p as floats: float32 one at a
 * time (the float32 path as it always was), fp16 also 2 (4-byte load) or 4
 * (8-byte load) at a time; p + j*V aligned to V elements. */
__device__ static inline void ld_vec(const float *p, int j, float (&v)[1]) { v[0] = p[j]; }
__device__ static inline void ld_vec(const h16 *p, int j, float (&v)[1]) { v[0] = cu_h2f(p[j]); }
__device__ static inline void ld_vec(const h16 *p, int j, float (&v)[2])
{
    const uint32_t u = ((const uint32_t *)p)[j];   /* little endian: channel 2j is the low half */
    v[0] = cu_h2f((h16)(u & 0xffffu));
    v[1] = cu_h2f((h16)(u >> 16));
}
__device__ static inline void ld_vec(const h16 *p, int j, float (&v)[4])
{
    const float4 f = ld4(p, j);
    v[0] = f.x;
    v[1] = f.y;
    v[2] = f.z;
    v[3] = f.w;
}

/* grid (N*G, S): block (ng, s) reduces slice s of group ng. The items a
 * thread walks are vectors of V channels of one pixel (V divides C/G; V > 1
 * only for fp16 inputs: the UNet's groups of 10/20/40 channels take V = 2
 * or 4, the VAE's of 4/8/16 V = 4), each adding its V values in turn. */
template <typename TX, int V>
__global__ void gn_stats_kernel(const void *__restrict__ x_, welford *__restrict__ part, int HW,
                                int C, int G, int S)
{
    const TX *__restrict__ x = (const TX *)x_;
    __shared__ welford wpart[32];
    const int ng = blockIdx.x, s = blockIdx.y;
    const int n = ng / G, g = ng % G;
    const int cg = C / G / V;   /* vectors per pixel of the group */
    const int64_t per = (int64_t)HW * cg;
    const int64_t chunk = (per + S - 1) / S;
    const int64_t b0 = (int64_t)s * chunk;
    const int64_t b1 = b0 + chunk < per ? b0 + chunk : per;
    const TX *base = x + (int64_t)n * HW * C + (int64_t)g * (C / G);
    welford w = { 0.0f, 0.0f, 0.0f };
    /* item e is (pixel e / cg, vector e % cg): divide once, then step
     * both by blockDim.x with a carry instead of two 64-bit divisions per
     * item */
    const int64_t e0 = b0 + threadIdx.x;
    int64_t pix = e0 / cg;
    int j = (int)(e0 % cg);
    const int step_pix = (int)blockDim.x / cg, step_j = (int)blockDim.x % cg;
    for (int64_t e = e0; e < b1; e += blockDim.x) {
        float v[V];
        ld_vec(base + pix * C, j, v);
        pix += step_pix;
        j += step_j;
        if (j >= cg) {
            j -= cg;
            pix++;
        }
        for (int k = 0; k < V; k++) {
            w.n += 1.0f;
            float d = v[k] - w.mean;
            w.mean += d / w.n;
            w.m2 += d * (v[k] - w.mean);
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        welford other;
        other.n = __shfl_xor_sync(CU_FULL_MASK, w.n, o);
        other.mean = __shfl_xor_sync(CU_FULL_MASK, w.mean, o);
        other.m2 = __shfl_xor_sync(CU_FULL_MASK, w.m2, o);
        w = welford_merge(w, other);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) wpart[warp] = w;
    __syncthreads();
    if (threadIdx.x == 0) {
        welford t = wpart[0];
        for (int i = 1; i < (int)(blockDim.x >> 5); i++) t = welford_merge(t, wpart[i]);
        part[(int64_t)ng * S + s] = t;
    }
}

/* One thread per (sample, group): stats[ng] = (mean, 1/sqrt(var + eps)). */
__global__ void gn_finalize_kernel(const welford *__restrict__ part, float2 *__restrict__ stats,
                                   int NG, int S, float eps)
{
    int ng = blockIdx.x * blockDim.x + threadIdx.x;
    if (ng >= NG) return;
    welford t = part[(int64_t)ng * S];
    for (int s = 1; s < S; s++) t = welford_merge(t, part[(int64_t)ng * S + s]);
    float var = t.n > 0.0f ? t.m2 / t.n : 0.0f;
    stats[ng] = make_float2(t.mean, rsqrtf(fmaxf(var, 0.0f) + eps));
}

/* x and out float32 or fp16 (x16, o16): the scalar path (C % 4 != 0 or
 * unaligned data) */
__global__ void gn_apply_kernel(const void *x, bool x16, void *out, bool o16,
                                const float2 *__restrict__ stats, const float *__restrict__ gamma,
                                const float *__restrict__ beta, int64_t total, int64_t hwc, int C,
                                int cg, int G, int silu)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int c = (int)(i % C);
        int64_t n = i / hwc;
        float2 st = stats[n * G + c / cg];
        float y = (cu_ld(x, x16, i) - st.x) * st.y;
        if (gamma) y *= gamma[c];
        if (beta) y += beta[c];
        cu_st(out, o16, i, silu ? sd_silu_f(y) : y);
    }
}

/* The same, 4 channels per thread (C % 4 == 0, both aligned to 4 elements:
 * 16-byte float32 / 8-byte fp16 accesses): grid (blocks, N), blockIdx.y =
 * sample, so the index arithmetic is 32-bit and once per 4 values (64-bit
 * divisions cost more than the memory access). hwc4 = H*W*C/4, below 2^31
 * (checked by the caller). */
template <typename TX, typename TO>
__global__ void gn_apply4_kernel(const void *x, void *out, const float2 *__restrict__ stats,
                                 const float *__restrict__ gamma, const float *__restrict__ beta,
                                 int hwc4, int C, int cg, int G, int silu)
{
    const int n = blockIdx.y, C4 = C / 4;
    const TX *xs = (const TX *)x + (int64_t)n * hwc4 * 4;
    TO *os = (TO *)out + (int64_t)n * hwc4 * 4;
    const float2 *st = stats + (int64_t)n * G;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < hwc4; i += gridDim.x * blockDim.x) {
        const int c0 = (i % C4) * 4;
        const float4 v = ld4(xs, i);
        float y[4] = { v.x, v.y, v.z, v.w };
        for (int k = 0; k < 4; k++) {
            const int c = c0 + k;
            const float2 s = st[c / cg];   /* the 4 may straddle groups (cg = 10 in SD) */
            float t = (y[k] - s.x) * s.y;
            if (gamma) t *= gamma[c];
            if (beta) t += beta[c];
            y[k] = silu ? sd_silu_f(t) : t;
        }
        st4(os, i, make_float4(y[0], y[1], y[2], y[3]));
    }
}

int cu_group_norm(sd_backend *be, const sd_tensor *x, int groups, float eps,
                  const sd_tensor_info *gamma, const sd_tensor_info *beta, bool silu,
                  sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    if (cu_types_ok(cb, "group_norm", x, out, NULL, NULL)) return -1;
    const int C = x->c, HW = x->h * x->w, N = x->n;
    if (groups < 1 || C % groups != 0)
        return cu_fail(cb, "group_norm: %d channels do not split into %d groups", C, groups);
    if (!cu_same_shape(x, out)) return cu_fail(cb, "group_norm: output shape differs from input");
    if (cu_inplace_ok(cb, "group_norm", x, out)) return -1;
    const float *g = NULL, *bt = NULL;
    if (gamma && !(g = (const float *)cu_weight_get(cb, gamma, CU_W_VEC32, C, "group_norm weight")))
        return -1;
    if (beta && !(bt = (const float *)cu_weight_get(cb, beta, CU_W_VEC32, C, "group_norm bias")))
        return -1;
    const int cg = C / groups, NG = N * groups;
    const int64_t per = (int64_t)HW * cg;
    /* slices of >= 4096 values, enough blocks to fill the GPU, at most 64 */
    int64_t want = (int64_t)cb->sm_count * 4 / (NG > 0 ? NG : 1);
    int64_t S = per / 4096;
    if (S > want) S = want;
    if (S > 64) S = 64;
    if (S < 1) S = 1;
    size_t part_bytes = (size_t)NG * (size_t)S * sizeof(welford);
    size_t stats_off = (part_bytes + 255) & ~(size_t)255;
    char *tmp = (char *)cu_malloc(cb, stats_off + (size_t)NG * sizeof(float2));
    if (!tmp) return cu_fail(cb, "out of GPU memory for group_norm statistics");
    welford *part = (welford *)tmp;
    float2 *stats = (float2 *)(tmp + stats_off);
    int rc = 0;
    /* ~16 values per thread, 32..256 threads: small groups (the UNet's
     * deep levels hold a few hundred values) need no 256-thread blocks */
    int64_t slice = (per + S - 1) / S;
    int threads = (int)((slice / 16 + 31) / 32 * 32);
    if (threads < 32) threads = 32;
    if (threads > 256) threads = 256;
    void (*gn_stats)(const void *, welford *, int, int, int, int) = gn_stats_kernel<float, 1>;
    if (cu_is_f16(x)) {
        const uintptr_t at = (uintptr_t)x->data;
        gn_stats = cg % 4 == 0 && at % 8 == 0   ? gn_stats_kernel<h16, 4>
                   : cg % 2 == 0 && at % 4 == 0 ? gn_stats_kernel<h16, 2>
                                                : gn_stats_kernel<h16, 1>;
    }
    SD_LAUNCH(gn_stats, dim3((unsigned)NG, (unsigned)S), threads, 0, cb->stream,
              (const void *)x->data, part, HW, C, groups, (int)S);
    rc = cu_launched(cb, "group_norm statistics");
    if (rc == 0) {
        SD_LAUNCH(gn_finalize_kernel, (unsigned)((NG + 127) / 128), 128, 0, cb->stream,
                  (const welford *)part, stats, NG, (int)S, eps);
        rc = cu_launched(cb, "group_norm statistics");
    }
    if (rc == 0) {
        int64_t total = (int64_t)sd_tensor_numel_of(x);
        const int64_t hwc = (int64_t)HW * C;
        if (C % 4 == 0 && hwc / 4 < 0x7fffffff && N <= 65535 && cu_aligned4(x) &&
            cu_aligned4(out)) {
            static void (*const table[4])(const void *, void *, const float2 *, const float *,
                                          const float *, int, int, int, int, int) =
                CU_T2_TABLE(gn_apply4_kernel);
            void (*gn_apply4)(const void *, void *, const float2 *, const float *, const float *,
                              int, int, int, int, int) = table[cu_ti2(x, out)];
            unsigned blocks = cu_grid(cb, (size_t)(hwc / 4), 256);
            /* the samples already multiply the blocks: keep the total near
             * what cu_grid would give the whole tensor */
            if (N > 1) blocks = (blocks + (unsigned)N - 1) / (unsigned)N;
            SD_LAUNCH(gn_apply4, dim3(blocks, (unsigned)N), 256, 0, cb->stream,
                      (const void *)x->data, (void *)out->data, (const float2 *)stats, g, bt,
                      (int)(hwc / 4), C, cg, groups, (int)silu);
        } else {
            SD_LAUNCH(gn_apply_kernel, cu_grid(cb, (size_t)total, 256), 256, 0, cb->stream,
                      (const void *)x->data, cu_is_f16(x), (void *)out->data, cu_is_f16(out),
                      (const float2 *)stats, g, bt, total, hwc, C, cg, groups, (int)silu);
        }
        rc = cu_launched(cb, "group_norm");
    }
    cu_free(cb, tmp);
    return rc;
}

/* One block per row of C values; x and out float32 or fp16 (x16, o16). */
__global__ void ln_kernel(const void *x, bool x16, void *out, bool o16,
                          const float *__restrict__ gamma, const float *__restrict__ beta, int C,
                          float eps)
{
    const int64_t row = (int64_t)blockIdx.x * C;
    float s = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) s += cu_ld(x, x16, row + i);
    const float mean = cu_block_sum(s) / (float)C;
    float q = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float d = cu_ld(x, x16, row + i) - mean;
        q += d * d;
    }
    const float rstd = rsqrtf(cu_block_sum(q) / (float)C + eps);
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float y = (cu_ld(x, x16, row + i) - mean) * rstd;
        if (gamma) y *= gamma[i];
        if (beta) y += beta[i];
        cu_st(out, o16, row + i, y);
    }
}

/* One warp per row, 4 values per lane per step (C % 4 == 0, rows aligned
 * to 4 elements: 16-byte float32 / 8-byte fp16 accesses), 8 rows per
 * 256-thread block: the transformer's rows (320 to
 * 1280 values) are too short to keep a block of 128 threads and its three
 * block-wide barriers busy; a warp reduces with shuffles alone. The row is
 * read three times (mean, variance, output); after the first it comes from
 * the L1 cache. */
#define LN_ROWS_PER_BLOCK 8
template <typename TX, typename TO>
__global__ void __launch_bounds__(LN_ROWS_PER_BLOCK * 32)
    ln_warp_kernel(const void *x, void *out, const float *__restrict__ gamma,
                   const float *__restrict__ beta, int64_t rows, int C, float eps)
{
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * LN_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    if (r >= rows) return;      /* whole warps leave: the shuffles stay warp-uniform */
    const int C4 = C / 4;
    const TX *row = (const TX *)x + r * C;
    TO *orow = (TO *)out + r * C;
    float s = 0.0f;
    for (int i = lane; i < C4; i += 32) {
        const float4 v = ld4(row, i);
        s += (v.x + v.y) + (v.z + v.w);
    }
    const float mean = cu_warp_sum(s) / (float)C;
    float q = 0.0f;
    for (int i = lane; i < C4; i += 32) {
        const float4 v = ld4(row, i);
        const float a = v.x - mean, b = v.y - mean, c = v.z - mean, d = v.w - mean;
        q += (a * a + b * b) + (c * c + d * d);
    }
    const float rstd = rsqrtf(cu_warp_sum(q) / (float)C + eps);
    for (int i = lane; i < C4; i += 32) {
        const float4 v = ld4(row, i);
        float y[4] = { (v.x - mean) * rstd, (v.y - mean) * rstd, (v.z - mean) * rstd,
                       (v.w - mean) * rstd };
        for (int k = 0; k < 4; k++) {
            if (gamma) y[k] *= gamma[4 * i + k];
            if (beta) y[k] += beta[4 * i + k];
        }
        st4(orow, i, make_float4(y[0], y[1], y[2], y[3]));
    }
}

int cu_layer_norm(sd_backend *be, const sd_tensor *x, const sd_tensor_info *gamma,
                  const sd_tensor_info *beta, float eps, sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    if (cu_types_ok(cb, "layer_norm", x, out, NULL, NULL)) return -1;
    const int C = x->c;
    if (!cu_same_shape(x, out)) return cu_fail(cb, "layer_norm: output shape differs from input");
    if (cu_inplace_ok(cb, "layer_norm", x, out)) return -1;
    const float *g = NULL, *bt = NULL;
    if (gamma && !(g = (const float *)cu_weight_get(cb, gamma, CU_W_VEC32, C, "layer_norm weight")))
        return -1;
    if (beta && !(bt = (const float *)cu_weight_get(cb, beta, CU_W_VEC32, C, "layer_norm bias")))
        return -1;
    const int64_t rows = (int64_t)x->n * x->h * x->w;
    if (rows > 0x7fffffff) return cu_fail(cb, "layer_norm: too many rows");
    if (C % 4 == 0 && cu_aligned4(x) && cu_aligned4(out)) {
        const unsigned blocks = (unsigned)((rows + LN_ROWS_PER_BLOCK - 1) / LN_ROWS_PER_BLOCK);
        static void (*const table[4])(const void *, void *, const float *, const float *, int64_t,
                                      int, float) = CU_T2_TABLE(ln_warp_kernel);
        void (*ln_warp)(const void *, void *, const float *, const float *, int64_t, int, float) =
            table[cu_ti2(x, out)];
        SD_LAUNCH(ln_warp, blocks, LN_ROWS_PER_BLOCK * 32, 0, cb->stream, (const void *)x->data,
                  (void *)out->data, g, bt, rows, C, eps);
        return cu_launched(cb, "layer_norm");
    }
    const int threads = C >= 1024 ? 256 : C >= 256 ? 128 : 32;
    SD_LAUNCH(ln_kernel, (unsigned)rows, threads, 0, cb->stream, (const void *)x->data,
              cu_is_f16(x), (void *)out->data, cu_is_f16(out), g, bt, C, eps);
    return cu_launched(cb, "layer_norm");
}
