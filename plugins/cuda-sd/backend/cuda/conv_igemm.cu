/* conv_igemm.cu - convolution as an implicit GEMM on fp16 tensor cores
 * (mma.sync m16n8k16 through mma.h, float32 accumulation), without a patch
 * matrix. Opt-in (sd_cuda_options.conv_implicit,
 * sd_backend_cuda_set_conv_implicit); gemm.cu's cu_conv2d dispatches here
 * for fp16 weights and any conv that is not 1x1 stride 1 unpadded.
 *
 * out[m][n] = sum_k patch(m, k) W[n][k] (+ bias[n]) (+ residual[m][n]),
 * m = output pixel of the whole batch (M = N*OH*OW), n = output channel,
 * k = (ky, kx, ci) in the order of the cached CU_W_CONV16 weights
 * ([Cout][kh][kw][Cin], weights.cu), K = kh*kw*Cin.
 *
 * Design:
 * - The input is converted once to fp16 NHWC in the scratch workspace
 *   (input size: the im2col path writes and reads 9x the input for a 3x3
 *   conv, and its scratch is up to 128 MB).
 * - One block computes a BM x BN tile of out, K in steps of 32 (IG_BK).
 *   A k step's 32 values of a patch row are 4 chunks of 8 channels (16
 *   bytes), each inside one tap because Cin % 8 == 0 (other channel counts,
 *   the UNet's conv_in with Cin = 4, keep im2col). A thread owns one chunk
 *   column (tid % 4) of several rows for the whole kernel, so it finds its
 *   rows' pixels once and walks (tap, channel) incrementally: no division
 *   in the main loop. Taps outside the image (zero padding, asymmetric
 *   included) and rows past M, columns past Cout or k past K are filled
 *   with zeros by cp.async's zfill form; circular padding wraps the
 *   indices (the padding is at most the input size: one wrap suffices).
 * - A and B tiles go global -> shared with 16-byte cp.async copies into
 *   rows padded to 40 halves (80 bytes): the 8 rows a fragment load reads
 *   start 20 words apart, so the 32 lanes of a 32-bit fragment load hit 32
 *   different banks. IG_STAGES (3) stages: the copies of step j+2 are in
 *   flight while step j is multiplied.
 * - Each warp computes a WM x WN sub-tile as (WM/16) x (WN/8) m16n8k16
 *   MMAs per k16 with 32-bit shared loads of the fragments (mma.h's
 *   layout). 4 warps a block (2 x 2). Block shapes (ig_variants, ig_pick):
 *   128x160 (64x80 warp tiles), 128x128, 128x64 and 64x64. Large blocks
 *   and warp tiles matter twice: a block reads (BM + BN) x K operands from
 *   L2 for its 2 BM BN K flops, and a warp's fragment loads per MMA shrink
 *   with its tile (about one 128-byte shared load per MMA at 64x64 or
 *   64x80, 1.5 at 64x32), which otherwise limits mma.sync on an H100 as
 *   much as the tensor cores do.
 * - Grids that would cover less than 3/4 of the SMs (the UNet's 32x32,
 *   16x16 and 8x8 levels on an H100) split K over blockIdx.z: each split
 *   writes float32 partials into the workspace and a second kernel sums
 *   them in a fixed order (deterministic, unlike atomics: graph replays
 *   stay bit-equal to eager passes) and adds bias and residual.
 * - Otherwise bias and residual are added in the epilogue (no pre-fill);
 *   residual may be the output itself (same element, same thread).
 * Turing (compute_75 PTX): mma.h splits each MMA into two k8 ones and
 * cp.async into plain copies (the pipeline then runs synchronously).
 */
#include <stdio.h>
#include <stdlib.h>

#include "backend/cuda/internal.h"
#include "backend/cuda/mma.h"

#define IG_BK 32                 /* K per pipeline step: 4 chunks of 8 */
#define IG_SK (IG_BK + 8)        /* shared row stride in halves (bank padding) */
#define IG_STAGES 3
#define IG_WARPS_M 2
#define IG_WARPS_N 2
#define IG_THREADS (32 * IG_WARPS_M * IG_WARPS_N)
/* Fixed-count loops over fragments and accumulators must be unrolled, or
 * the accumulators live in local memory (g++ builds the emulation). */
#ifdef SD_CUDA_EMU
#define IG_UNROLL
#else
#define IG_UNROLL _Pragma("unroll")
#endif

struct ig_geom {
    int H, W, C;                 /* input (per image) */
    int kw, stride, pad_top, pad_left, circular;
    int oh, ow, cout;
    int M, K;                    /* GEMM sizes: M = N*oh*ow, K = kh*kw*C */
    int steps;                   /* IG_BK steps of one split */
    int pair;                    /* even cout and an aligned output: the
                                    epilogue stores value pairs (float2s, or
                                    two halves as one 32-bit word) */
    int out16, res16;            /* output / residual in fp16 (else float32) */
};

template <int BM, int BN> struct ig_smem {
    static const size_t bytes = (size_t)IG_STAGES * (BM + BN) * IG_SK * sizeof(uint16_t);
};

/* grid (ceil(M/BM), ceil(cout/BN), splits), IG_THREADS threads, ig_smem
 * bytes of dynamic shared memory. x16: the input as fp16 NHWC; w16:
 * [cout][K] fp16. partial == NULL: out = acc + bias + residual; else split
 * z writes its acc to partial + z*M*cout. */
template <int BM, int BN, int MINB>
__global__ void __launch_bounds__(IG_THREADS, MINB)
    conv_igemm_kernel(const uint16_t *__restrict__ x16, const uint16_t *__restrict__ w16,
                      const float *bias, const void *residual, void *out,
                      float *__restrict__ partial, ig_geom g)
{
    const int WM = BM / IG_WARPS_M, WN = BN / IG_WARPS_N, MT = WM / 16, NT = WN / 8;
    const int A_PER = BM * 4 / IG_THREADS, B_PER = BN * 4 / IG_THREADS;
    const int ROWS_PER_PASS = IG_THREADS / 4;
    SD_DYN_SMEM(smem);
    uint16_t *As = (uint16_t *)smem;                     /* [STAGES][BM][SK] */
    uint16_t *Bs = As + IG_STAGES * BM * IG_SK;          /* [STAGES][BN][SK] */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int gq = lane >> 2, tq = lane & 3;             /* fragment row group, pair */
    const int warp_m = warp / IG_WARPS_N, warp_n = warp % IG_WARPS_N;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int cc = tid & 3;                              /* this thread's 8-channel chunk */
    const int row0 = tid >> 2;                           /* its first row of a tile */

    /* the pixels of this thread's A rows: image row base (img*H, -1 past
     * M) and the tap (0, 0) input position */
    int a_img[A_PER], a_iy[A_PER], a_ix[A_PER];
    const int plane = g.oh * g.ow;
    IG_UNROLL
    for (int i = 0; i < A_PER; i++) {
        const int m = m0 + row0 + i * ROWS_PER_PASS;
        if (m < g.M) {
            const int img = m / plane, rem = m - img * plane;
            const int oy = rem / g.ow, ox = rem - oy * g.ow;
            a_img[i] = img * g.H;
            a_iy[i] = oy * g.stride - g.pad_top;
            a_ix[i] = ox * g.stride - g.pad_left;
        } else {
            a_img[i] = -1;
            a_iy[i] = a_ix[i] = 0;
        }
    }
    /* the k of this thread's chunk at the split's first step, as (tap
     * ky/kx, channel ci); advanced by IG_BK per step without division */
    const int step0 = blockIdx.z * g.steps;
    int kk = step0 * IG_BK + cc * 8;
    int ci = kk % g.C, tap = kk / g.C;
    int ky = tap / g.kw, kx = tap - ky * g.kw;
    int steps = (g.K + IG_BK - 1) / IG_BK - step0;       /* this split's steps */
    if (steps > g.steps) steps = g.steps;

    /* Queues the copies of the next k step into stage s. */
    auto load_step = [&](int s) {
        uint16_t *as = As + s * BM * IG_SK, *bs = Bs + s * BN * IG_SK;
        const bool k_in = kk < g.K;
        IG_UNROLL
        for (int i = 0; i < A_PER; i++) {
            int iy = a_iy[i] + ky, ix = a_ix[i] + kx;
            bool ok = k_in && a_img[i] >= 0;
            if (g.circular) {
                iy = iy < 0 ? iy + g.H : iy >= g.H ? iy - g.H : iy;
                ix = ix < 0 ? ix + g.W : ix >= g.W ? ix - g.W : ix;
            } else {
                ok = ok && (unsigned)iy < (unsigned)g.H && (unsigned)ix < (unsigned)g.W;
            }
            const uint16_t *src =
                ok ? x16 + ((size_t)(a_img[i] + iy) * g.W + ix) * g.C + ci : x16;
            cu_cp_async16_zfill(as + (row0 + i * ROWS_PER_PASS) * IG_SK + cc * 8, src, ok);
        }
        IG_UNROLL
        for (int i = 0; i < B_PER; i++) {
            const int n = n0 + row0 + i * ROWS_PER_PASS;
            const bool ok = k_in && n < g.cout;
            const uint16_t *src = ok ? w16 + (size_t)n * g.K + kk : w16;
            cu_cp_async16_zfill(bs + (row0 + i * ROWS_PER_PASS) * IG_SK + cc * 8, src, ok);
        }
        cu_cp_async_commit();
        kk += IG_BK;
        ci += IG_BK;
        while (ci >= g.C) {       /* C >= 8: at most 4 taps a step */
            ci -= g.C;
            if (++kx == g.kw) {
                kx = 0;
                ++ky;
            }
        }
    };

    float acc[MT][NT][4];
    IG_UNROLL
    for (int mt = 0; mt < MT; mt++)
        IG_UNROLL
        for (int nt = 0; nt < NT; nt++)
            acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;

    for (int s = 0; s < IG_STAGES - 1; s++) {
        if (s < steps) load_step(s);
        else cu_cp_async_commit();                       /* uniform group count */
    }
    for (int j = 0; j < steps; j++) {
        cu_cp_async_wait<IG_STAGES - 2>();               /* step j's copies are done ... */
        __syncthreads();                                 /* ... everyone's; stage of j-1 free */
        if (j + IG_STAGES - 1 < steps) load_step((j + IG_STAGES - 1) % IG_STAGES);
        else cu_cp_async_commit();
        const int s = j % IG_STAGES;
        const uint16_t *as = As + s * BM * IG_SK + (warp_m * WM + gq) * IG_SK + tq * 2;
        const uint16_t *bs = Bs + s * BN * IG_SK + (warp_n * WN + gq) * IG_SK + tq * 2;
        IG_UNROLL
        for (int ks = 0; ks < IG_BK / 16; ks++) {
            uint32_t af[MT][4];
            IG_UNROLL
            for (int mt = 0; mt < MT; mt++) {
                const uint16_t *ap = as + mt * 16 * IG_SK + ks * 16;
                af[mt][0] = cu_ld_h2(ap);
                af[mt][1] = cu_ld_h2(ap + 8 * IG_SK);
                af[mt][2] = cu_ld_h2(ap + 8);
                af[mt][3] = cu_ld_h2(ap + 8 * IG_SK + 8);
            }
            IG_UNROLL
            for (int nt = 0; nt < NT; nt++) {
                /* B[k][n] = W[n][k]: a pair of consecutive k of row n */
                const uint16_t *bp = bs + nt * 8 * IG_SK + ks * 16;
                const uint32_t b0 = cu_ld_h2(bp), b1 = cu_ld_h2(bp + 8);
                IG_UNROLL
                for (int mt = 0; mt < MT; mt++) cu_mma_16816(acc[mt][nt], af[mt], b0, b1);
            }
        }
    }
    cu_cp_async_wait<0>();       /* no copy may land in freed shared memory */

    /* epilogue: c[0..1] = rows gq, c[2..3] = row gq + 8; columns 2tq, +1 */
    const bool pair = g.pair != 0;
    /* split K: float32 partials; else the output in its own type */
    float *part_base = partial ? partial + (size_t)blockIdx.z * g.M * g.cout : NULL;
    const bool out16 = !partial && g.out16, res16 = g.res16 != 0;
    IG_UNROLL
    for (int mt = 0; mt < MT; mt++)
        IG_UNROLL
        for (int hr = 0; hr < 2; hr++) {
            const int m = m0 + warp_m * WM + mt * 16 + gq + 8 * hr;
            if (m >= g.M) continue;
            const size_t row = (size_t)m * g.cout;
            IG_UNROLL
            for (int nt = 0; nt < NT; nt++) {
                const int n = n0 + warp_n * WN + nt * 8 + tq * 2;
                if (n >= g.cout) continue;
                float v0 = acc[mt][nt][2 * hr], v1 = acc[mt][nt][2 * hr + 1];
                const bool two = n + 1 < g.cout;
                if (!partial) {
                    if (bias) {
                        v0 += bias[n];
                        if (two) v1 += bias[n + 1];
                    }
                    if (residual) {
                        v0 += cu_ld(residual, res16, (int64_t)(row + n));
                        if (two) v1 += cu_ld(residual, res16, (int64_t)(row + n + 1));
                    }
                }
                if (out16) {
                    uint16_t *d = (uint16_t *)out + row + n;
                    if (pair) {
                        *(uint32_t *)d = (uint32_t)cu_f2h(v0) | (uint32_t)cu_f2h(v1) << 16;
                    } else {
                        d[0] = cu_f2h(v0);
                        if (two) d[1] = cu_f2h(v1);
                    }
                    continue;
                }
                float *d = (part_base ? part_base : (float *)out) + row + n;
                if (pair) {
                    *(float2 *)d = make_float2(v0, v1);
                } else {
                    d[0] = v0;
                    if (two) d[1] = v1;
                }
            }
        }
}

/* out[i] = sum over splits of partial[s][i] (in split order) + bias +
 * residual; residual and out float32 or fp16 (res16, out16). */
__global__ void conv_igemm_reduce_kernel(const float *__restrict__ partial, int splits,
                                         int64_t total, int cout, const float *bias,
                                         const void *residual, bool res16, void *out, bool out16)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = partial[i];
        for (int s = 1; s < splits; s++) v += partial[(int64_t)s * total + i];
        if (bias) v += bias[i % cout];
        if (residual) v += cu_ld(residual, res16, i);
        cu_st(out, out16, i, v);
    }
}

typedef void (*ig_kernel_fn)(const uint16_t *, const uint16_t *, const float *, const void *,
                             void *, float *, ig_geom);

/* The block shapes, by preference. A block reads (BM + BN) x K operands
 * from L2 for 2 BM BN K flops, so large blocks matter as much as the MMAs:
 * 128x160 (64x80 warp tiles: 71 flop/byte; every SD channel count, 320 ...
 * 2560, is a multiple of 160), 128x128 (64x64 warp tiles), both ~2 blocks a
 * SM by registers; 128x64 and 64x64 (4 a SM) for other channel counts. */
static const struct ig_variant {
    int bm, bn;
    ig_kernel_fn fn;
    size_t smem;
} ig_variants[] = {
    { 128, 160, conv_igemm_kernel<128, 160, 2>, ig_smem<128, 160>::bytes },
    { 128, 128, conv_igemm_kernel<128, 128, 2>, ig_smem<128, 128>::bytes },
    { 128, 64, conv_igemm_kernel<128, 64, 4>, ig_smem<128, 64>::bytes },
    { 64, 64, conv_igemm_kernel<64, 64, 4>, ig_smem<64, 64>::bytes },
};
#define IG_VARIANTS ((int)(sizeof ig_variants / sizeof ig_variants[0]))

/* K splits for a grid of `tiles` blocks: when it would cover less than 3/4
 * of the SMs (the UNet's 32x32, 16x16 and 8x8 levels on an H100), about
 * one block a SM, at most 16 ways and >= 8 steps of 32 a split. */
static int ig_splits(int sms, int64_t tiles, int steps_total)
{
    if (tiles * 4 >= (int64_t)sms * 3) return 1;
    int64_t s = (sms + tiles - 1) / tiles;
    const int64_t most = steps_total / 8;
    if (s > most) s = most;
    if (s > 16) s = 16;
    return s > 1 ? (int)s : 1;
}

/* Picks the block shape (index into ig_variants) and the K splits: the
 * first (largest) shape that pads Cout by at most 1/8, else 64x64; or the
 * shape and splits SD_CUDA_IGEMM forces. -1: none fits the shared memory. */
static int ig_pick(const cuda_backend *cb, int M, int cout, int steps_total, int *splits)
{
    const int sms = cb->sm_count > 0 ? cb->sm_count : 16;
    for (int v = 0; v < IG_VARIANTS; v++) {
        const int bm = ig_variants[v].bm, bn = ig_variants[v].bn;
        if (cb->igemm_force >= 0 && v != cb->igemm_force) continue;
        if (ig_variants[v].smem > cb->smem_optin) continue;
        const int64_t tn = (cout + bn - 1) / bn, tiles = (int64_t)((M + bm - 1) / bm) * tn;
        if (cb->igemm_force < 0 && v < IG_VARIANTS - 1 && tn * bn * 8 > (int64_t)cout * 9)
            continue;
        *splits = ig_splits(sms, tiles, steps_total);
        if (cb->igemm_force_splits > 0)
            *splits = cb->igemm_force_splits < 16 ? cb->igemm_force_splits : 16;
        return v;
    }
    return -1;
}

/* SD_CUDA_IGEMM=<BM>x<BN>[/<splits>] (e.g. 128x64/2) forces one block
 * shape, and the K splits (absent: the rule above), for every
 * implicit-GEMM conv of a backend: a tuning knob for GPU sessions
 * (bench_cuda's per-shape sweep, the tests), read when the backend is
 * created (api_create, once smem_optin is known). */
void cu_conv_implicit_init(cuda_backend *cb)
{
    cb->igemm_force = -1;
    cb->igemm_force_splits = 0;
    const char *e = getenv("SD_CUDA_IGEMM");
    int bm = 0, bn = 0, s = 0;
    if (!e || sscanf(e, "%dx%d/%d", &bm, &bn, &s) < 2) return;
    for (int v = 0; v < IG_VARIANTS; v++)
        if (ig_variants[v].bm == bm && ig_variants[v].bn == bn &&
            ig_variants[v].smem <= cb->smem_optin)
            cb->igemm_force = v;
    cb->igemm_force_splits = s;
}

int cu_conv2d_implicit(cuda_backend *cb, const sd_tensor *x, const void *w16, const float *bias,
                       const sd_tensor *residual, const sd_conv_params *p, int kh, int kw,
                       sd_tensor *out)
{
    const bool x16 = cu_is_f16(x);
    const int C = x->c, cout = out->c;
    if (C % 8 != 0) return 1;                    /* chunks of 8 channels inside one tap */
    if (x16 && ((uintptr_t)x->data & 15) != 0) return 1;   /* its 16-byte copies */
    const int64_t in_n = (int64_t)x->n * x->h * x->w * C;
    const int64_t M = (int64_t)out->n * out->h * out->w;
    const int64_t K = (int64_t)kh * kw * C;
    /* 32-bit row and pixel indices in the kernel */
    if (in_n >= INT32_MAX || M * cout >= INT32_MAX || K >= INT32_MAX / 2) return 1;
    const int steps_total = (int)((K + IG_BK - 1) / IG_BK);
    int splits = 1;
    const int v = ig_pick(cb, (int)M, cout, steps_total, &splits);
    if (v < 0) return 1;
    const ig_variant &var = ig_variants[v];
    /* fp16 activations are read where they are; float32 ones get an fp16 copy */
    const size_t in_bytes = x16 ? 0 : ((size_t)in_n * 2 + 255) & ~(size_t)255;
    const size_t part_bytes = splits > 1 ? (size_t)splits * M * cout * sizeof(float) : 0;
    if (in_bytes + part_bytes > cb->ws_limit) return 1;   /* im2col slices it */
    unsigned char *ws = NULL;
    if (in_bytes + part_bytes > 0 &&
        !(ws = (unsigned char *)cu_workspace(cb, in_bytes + part_bytes)))
        return -1;
    const uint16_t *xin = x16 ? (const uint16_t *)x->data : (const uint16_t *)ws;
    float *partial = splits > 1 ? (float *)(ws + in_bytes) : NULL;
    if (!(cb->igemm_ready & (1u << v))) {
        if (cu_check(cb, cudaFuncSetAttribute(var.fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              (int)var.smem),
                     "implicit-GEMM conv shared memory"))
            return -1;
        cb->igemm_ready |= 1u << v;
    }
    if (!x16 && cu_convert(cb, x->data, false, ws, true, (size_t)in_n)) return -1;

    ig_geom g;
    g.H = x->h;
    g.W = x->w;
    g.C = C;
    g.kw = kw;
    g.stride = p->stride;
    g.pad_top = p->pad_top;
    g.pad_left = p->pad_left;
    g.circular = p->pad_mode == SD_PAD_CIRCULAR;
    g.oh = out->h;
    g.ow = out->w;
    g.cout = cout;
    g.M = (int)M;
    g.K = (int)K;
    g.steps = (steps_total + splits - 1) / splits;
    splits = (steps_total + g.steps - 1) / g.steps;   /* no empty split */
    /* a tensor may be a view at any float offset; the partials are aligned */
    g.out16 = cu_is_f16(out);
    g.res16 = residual && cu_is_f16(residual);
    g.pair = cout % 2 == 0 &&
             (splits > 1 || ((uintptr_t)out->data & (g.out16 ? 3 : 7)) == 0);
    const void *res = residual ? residual->data : NULL;
    dim3 grid((unsigned)((M + var.bm - 1) / var.bm), (unsigned)((cout + var.bn - 1) / var.bn),
              (unsigned)splits);
    const ig_kernel_fn conv_igemm = var.fn;   /* the emulation's profile names it so */
    SD_LAUNCH(conv_igemm, grid, IG_THREADS, var.smem, cb->stream, xin,
              (const uint16_t *)w16, bias, res, (void *)out->data, splits > 1 ? partial : NULL,
              g);
    if (cu_launched(cb, "implicit-GEMM conv")) return -1;
    if (splits > 1) {
        const int64_t total = M * cout;
        SD_LAUNCH(conv_igemm_reduce_kernel, cu_grid(cb, (size_t)total, 256), 256, 0, cb->stream,
                  (const float *)partial, splits, total, cout, bias, res, (bool)g.res16,
                  (void *)out->data, (bool)g.out16);
        if (cu_launched(cb, "implicit-GEMM conv split-K sum")) return -1;
    }
    cb->conv_implicit_calls++;
    return 0;
}
