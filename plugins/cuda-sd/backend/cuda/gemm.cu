/* gemm.cu - the GEMM-shaped layers on the GPU: conv2d as im2col + cuBLAS
 * GEMM over NHWC tensors, and linear layers.
 *
 * Output pixels of the whole batch are the GEMM's M rows (M = N*OH*OW);
 * K = kh*kw*Cin in NHWC patch order, which the reordered weights match
 * (weights.cu). The patch matrix is built in slices of rows that fit the
 * workspace (a 512x512 VAE layer would need gigabytes at once), written
 * directly in the GEMM's input type (fp16 for tensor-core GEMMs, bf16 for
 * the VAE's in AUTO_VAE_BF16, float32 for TF32/F32), and each
 * slice's GEMM accumulates into the output rows that were pre-filled with
 * bias (+ residual) — beta = 1 — so bias and residual cost no extra pass
 * over the GEMM's result. 1x1 stride-1 convolutions need no patches: the
 * input rows are the patches (converted to fp16/bf16 when the GEMM is).
 */
#include "backend/cuda/internal.h"

int cu_gemm_nt(cuda_backend *cb, int M, int N, int K, const void *A, int lda, const void *W,
               int ldw, int gt, float beta, void *C, bool c16, int ldc)
{
    if (c16 && gt != CU_GEMM_F16) return cu_fail(cb, "fp16 GEMM output needs fp16 inputs");
    const float one = 1.0f;
    cudaDataType_t t = gt == CU_GEMM_F16    ? CUDA_R_16F
                       : gt == CU_GEMM_BF16 ? CUDA_R_16BF
                                            : CUDA_R_32F;
    /* 16-bit inputs: products exact in float32, float32 accumulation */
    cublasComputeType_t ct = gt != CU_GEMM_F32 || cb->precision == SD_CUDA_PREC_F32
                                 ? CUBLAS_COMPUTE_32F
                                 : CUBLAS_COMPUTE_32F_FAST_TF32;
    /* Row-major C[M,N] = A[M,K] W[N,K]^T is, in cuBLAS's column-major view,
     * C^T[N,M] = W^T... i.e. op(W)=T (W is K x N column-major), op(A)=N. */
    cublasStatus_t st = cublasGemmEx(cb->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, W, t, ldw,
                                     A, t, lda, &beta, C, c16 ? CUDA_R_16F : CUDA_R_32F, ldc, ct,
                                     CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
        return cu_fail(cb, "cuBLAS GEMM (M=%d N=%d K=%d) failed: %s", M, N, K,
                       cublasGetStatusString(st));
    return 0;
}

/* cuBLASLt's workspace: what its heuristic may use (32 MB is what NVIDIA
 * suggests for Hopper). */
#define LT_WORKSPACE ((size_t)32 << 20)

static bool lt_aligned(const void *p) { return ((uintptr_t)p & 255) == 0; }

/* out[M,N] = A16[M,K] W16[N,K]^T + bias (+ C), fp16 inputs (bf16 ones when
 * bf16), float32 accumulation, by cublasLtMatmul with the bias added in its
 * epilogue and the residual C read by the GEMM itself (beta = 1, C may be
 * the output), so nothing pre-fills the output: one pass over it instead of
 * three. out and C are float32 (bias float32) or, with out16 (fp16 inputs
 * only), fp16 (bias fp16: the epilogue takes the output's type, as
 * PyTorch's fp16 addmm uses it). Returns 1 where cuBLASLt is missing or has
 * no algorithm for the shape (the caller falls back to a pre-fill and
 * GemmEx), 0 done, -1 error. */
static int lt_gemm(cuda_backend *cb, int M, int N, int K, const uint16_t *A, const void *W,
                   const void *bias, const void *C, void *out, bool bf16, bool out16)
{
    if (out16 && bf16) return 1;
    /* the heuristic assumes 256-byte aligned pointers (pool and weight
     * allocations are); anything else takes the GemmEx path */
    if (!cb->lt || !lt_aligned(A) || !lt_aligned(W) || !lt_aligned(out) ||
        (bias && !lt_aligned(bias)) || (C && !lt_aligned(C)))
        return 1;
    /* the types are part of the plan's key: 4 = bf16 inputs, 8 = fp16 output */
    const int flags = (bias ? 1 : 0) | (C ? 2 : 0) | (bf16 ? 4 : 0) | (out16 ? 8 : 0);
    const cudaDataType_t in_type = bf16 ? CUDA_R_16BF : CUDA_R_16F;
    cu_lt_plan *plan = NULL;
    for (int i = 0; i < cb->lt_nplans; i++) {
        cu_lt_plan *p = &cb->lt_plans[i];
        if (p->M == M && p->N == N && p->K == K && p->flags == flags) {
            plan = p;
            break;
        }
    }
    if (plan && plan->state == 2) return 1;
    if (!plan && cb->lt_nplans == CU_LT_PLANS) return 1;   /* table full: GemmEx */
    if (!cb->lt_ws && cb->capturing)   /* would become the graph's memory */
        return cu_fail(cb, "cuBLASLt workspace first needed during a graph capture");
    if (!cb->lt_ws && !(cb->lt_ws = cu_malloc(cb, LT_WORKSPACE)))
        return cu_fail(cb, "out of device memory for the cuBLASLt workspace");

    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t wl = NULL, al = NULL, cl = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    /* Row-major out[M,N] = A[M,K] W[N,K]^T is column-major out^T[N,M] =
     * op(W)=T (W is K x N column-major, ld K) times A^T (K x M, ld K): the
     * TN layout, as cu_gemm_nt */
    const int32_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const int32_t bias_type = CUDA_R_32F;
    const cublasLtEpilogue_t epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    const float one = 1.0f, beta = C ? 1.0f : 0.0f;
    int ret = 1;
    cublasStatus_t st = cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
    if (st == CUBLAS_STATUS_SUCCESS && bias)
        st = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                            sizeof bias);
    if (st == CUBLAS_STATUS_SUCCESS && bias && !out16)
        st = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                            sizeof bias_type);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatrixLayoutCreate(&wl, in_type, (uint64_t)K, (uint64_t)N, K);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatrixLayoutCreate(&al, in_type, (uint64_t)K, (uint64_t)M, K);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatrixLayoutCreate(&cl, out16 ? CUDA_R_16F : CUDA_R_32F, (uint64_t)N,
                                        (uint64_t)M, N);
    if (st == CUBLAS_STATUS_SUCCESS && !plan) {
        /* first time for this shape: ask the heuristic once */
        const uint64_t max_ws = LT_WORKSPACE;
        cublasLtMatmulHeuristicResult_t res;
        int found = 0;
        plan = &cb->lt_plans[cb->lt_nplans++];
        plan->M = M;
        plan->N = N;
        plan->K = K;
        plan->flags = flags;
        plan->state = 2;
        st = cublasLtMatmulPreferenceCreate(&pref);
        if (st == CUBLAS_STATUS_SUCCESS)
            st = cublasLtMatmulPreferenceSetAttribute(
                pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_ws, sizeof max_ws);
        if (st == CUBLAS_STATUS_SUCCESS)
            st = cublasLtMatmulAlgoGetHeuristic(cb->lt, op, wl, al, cl, cl, pref, 1, &res,
                                                &found);
        if (st == CUBLAS_STATUS_SUCCESS && found > 0 && res.workspaceSize <= LT_WORKSPACE) {
            plan->algo = res.algo;
            plan->state = 1;
        }
        st = CUBLAS_STATUS_SUCCESS;   /* no algorithm: state 2, GemmEx from now on */
    }
    if (st == CUBLAS_STATUS_SUCCESS && plan->state == 1) {
        st = cublasLtMatmul(cb->lt, op, &one, W, wl, A, al, &beta, C ? C : out, cl, out, cl,
                            &plan->algo, cb->lt_ws, LT_WORKSPACE, cb->stream);
        if (st == CUBLAS_STATUS_SUCCESS) ret = 0;
        else plan->state = 2;   /* refused (before touching out): GemmEx for this shape */
    }
    if (pref) (void)cublasLtMatmulPreferenceDestroy(pref);
    if (cl) (void)cublasLtMatrixLayoutDestroy(cl);
    if (al) (void)cublasLtMatrixLayoutDestroy(al);
    if (wl) (void)cublasLtMatrixLayoutDestroy(wl);
    if (op) (void)cublasLtMatmulDescDestroy(op);
    return ret;
}

/* out[r, c] = bias[c] + residual[r, c] (either may be NULL); out and
 * residual float32 or fp16 (o16, r16). */
__global__ void gemm_prefill_kernel(void *out, bool o16, const float *bias, const void *residual,
                                    bool r16, int64_t total, int N)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = residual ? cu_ld(residual, r16, i) : 0.0f;
        if (bias) v += bias[i % N];
        cu_st(out, o16, i, v);
    }
}

/* The same, 4 columns per thread (N % 4 == 0, 16-byte aligned rows): a
 * quarter of the index arithmetic (the 64-bit modulo costs more than the
 * memory access) and 16-byte loads and stores. total4 = total / 4. */
__global__ void gemm_prefill4_kernel(float4 *out, const float4 *bias, const float4 *residual,
                                     int64_t total4, int N4)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total4;
         i += (int64_t)gridDim.x * blockDim.x) {
        float4 v = residual ? residual[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (bias) {
            const float4 b = bias[i % N4];
            v.x += b.x;
            v.y += b.y;
            v.z += b.z;
            v.w += b.w;
        }
        out[i] = v;
    }
}

/* float -> a 16-bit GEMM input: fp16 bits (BF 0) or bf16 bits (BF 1). */
template <int BF>
__device__ static inline uint16_t cu_f2h16(float v)
{
    return BF ? cu_f2bf(v) : cu_f2h(v);
}

template <int BF>
__global__ void to_h16_kernel(const float *src, uint16_t *dst, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = cu_f2h16<BF>(src[i]);
}

/* 4 values per thread: 16-byte loads, 8-byte stores. n4 = n / 4. */
template <int BF>
__global__ void to_h16x4_kernel(const float4 *src, ushort4 *dst, int64_t n4)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float4 v = src[i];
        ushort4 h;
        h.x = cu_f2h16<BF>(v.x);
        h.y = cu_f2h16<BF>(v.y);
        h.z = cu_f2h16<BF>(v.z);
        h.w = cu_f2h16<BF>(v.w);
        dst[i] = h;
    }
}

/* Both preparations of a one-slice 16-bit GEMM in one launch (one launch
 * fewer for every linear and 1x1 convolution): items [0, n4) convert the
 * input to fp16/bf16 as to_h16x4_kernel, items [n4, n4 + total4) pre-fill the
 * output as gemm_prefill4_kernel. */
template <int BF>
__global__ void to_h16x4_prefill4_kernel(const float4 *src, ushort4 *dst, int64_t n4,
                                         float4 *out, const float4 *bias,
                                         const float4 *residual, int64_t total4, int N4)
{
    const int64_t items = n4 + total4;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < items;
         i += (int64_t)gridDim.x * blockDim.x) {
        if (i < n4) {
            const float4 v = src[i];
            ushort4 h;
            h.x = cu_f2h16<BF>(v.x);
            h.y = cu_f2h16<BF>(v.y);
            h.z = cu_f2h16<BF>(v.z);
            h.w = cu_f2h16<BF>(v.w);
            dst[i] = h;
        } else {
            const int64_t j = i - n4;
            float4 v = residual ? residual[j] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (bias) {
                const float4 b = bias[j % N4];
                v.x += b.x;
                v.y += b.y;
                v.z += b.z;
                v.w += b.w;
            }
            out[j] = v;
        }
    }
}

static inline bool cu_aligned(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

/* dst = src as fp16 (bf16 false) or bf16 bits, n values. */
static int to_h16(cuda_backend *cb, const float *src, uint16_t *dst, size_t n, bool bf16)
{
    if (n % 4 == 0 && cu_aligned(src, 16) && cu_aligned(dst, 8)) {
        void (*k4)(const float4 *, ushort4 *, int64_t) =
            bf16 ? to_h16x4_kernel<1> : to_h16x4_kernel<0>;
        SD_LAUNCH(k4, cu_grid(cb, n / 4, 256), 256, 0, cb->stream, (const float4 *)src,
                  (ushort4 *)dst, (int64_t)(n / 4));
    } else {
        void (*k1)(const float *, uint16_t *, int64_t) = bf16 ? to_h16_kernel<1> : to_h16_kernel<0>;
        SD_LAUNCH(k1, cu_grid(cb, n, 256), 256, 0, cb->stream, src, dst, (int64_t)n);
    }
    return cu_launched(cb, bf16 ? "bf16 conversion" : "fp16 conversion");
}

__global__ void convert_kernel(const void *__restrict__ src, bool src_f16, void *__restrict__ dst,
                               bool dst_f16, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        cu_st(dst, dst_f16, i, cu_ld(src, src_f16, i));
}

int cu_convert(cuda_backend *cb, const void *src, bool src_f16, void *dst, bool dst_f16, size_t n)
{
    if (n == 0) return 0;
    if (src_f16 == dst_f16)
        return cu_check(cb, cudaMemcpyAsync(dst, src, n * (src_f16 ? 2 : 4),
                                            cudaMemcpyDeviceToDevice, cb->stream),
                        "activation copy");
    if (!src_f16) return to_h16(cb, (const float *)src, (uint16_t *)dst, n, false);
    SD_LAUNCH(convert_kernel, cu_grid(cb, n, 256), 256, 0, cb->stream, src, src_f16, dst, dst_f16,
              (int64_t)n);
    return cu_launched(cb, "fp16 -> float32 conversion");
}

__device__ static inline int wrap_index(int i, int n)
{
    i %= n;
    return i < 0 ? i + n : i;
}

struct im2col_geom {
    int H, W, C;                /* input */
    int kh, kw, stride, pad_top, pad_left, circular;
    int oh, ow;                 /* output */
    int K;                      /* kh*kw*C */
};

/* One value of the patch matrix: row m (output pixel), column k. */
template <typename I>
__device__ static inline float patch_value(const void *x, bool xh, const im2col_geom g, I m, int k)
{
    int ci = k % g.C, tap = k / g.C;
    int kx = tap % g.kw, ky = tap / g.kw;
    int plane = g.oh * g.ow;
    I img = m / plane;
    int rem = (int)(m % plane);
    int oy = rem / g.ow, ox = rem % g.ow;
    int iy = oy * g.stride - g.pad_top + ky;
    int ix = ox * g.stride - g.pad_left + kx;
    if (g.circular) {
        iy = wrap_index(iy, g.H);
        ix = wrap_index(ix, g.W);
    } else if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) {
        return 0.0f;
    }
    return cu_ld(x, xh, (((int64_t)img * g.H + iy) * g.W + ix) * g.C + ci);
}

/* Rows [m0, m0+rows) of the patch matrix into col[rows][K], as float (OUT
 * 0), fp16 bits (OUT 1) or bf16 bits (OUT 2: the VAE in AUTO_VAE_BF16). VEC: 4 or 8
 * channels per thread (C % VEC == 0), which
 * keeps them inside one tap and makes the loads 16 bytes and the stores
 * 8 (VEC 4) or 16 bytes (VEC 8, 16-bit only: 8 halves are one 16-byte store,
 * and half the index divisions per value). Consecutive threads take
 * consecutive channel groups of one patch row, so both the reads (NHWC:
 * channels are contiguous within a tap) and the writes are coalesced.
 * I: the index type, int where the slice and the output rows fit (always,
 * in practice: the workspace bounds a slice), as the kernel's cost is its
 * index divisions and 64-bit ones are several times slower. */
/* The output pre-fill (bias + residual, float4s) that a one-slice
 * convolution does in its im2col launch (one launch fewer per conv);
 * total4 = 0: none. */
struct conv_fill {
    float4 *out;
    const float4 *bias, *residual;
    int64_t total4;
    int N4;
};

/* XH: x holds fp16 activations (only with OUT 1: their bits are copied
 * into fp16 patches as they are); else float32. */
template <int OUT, int VEC, typename I, int XH>
__global__ void im2col_kernel(const void *__restrict__ x, void *__restrict__ col, im2col_geom g,
                              int64_t m0_, int64_t rows, conv_fill fill)
{
    const int kv = g.K / VEC;
    const I total = (I)(rows * kv), m0 = (I)m0_, items = total + (I)fill.total4;
    for (I e = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; e < items;
         e += (I)gridDim.x * (I)blockDim.x) {
        if (e >= total) {
            const I j = e - total;
            float4 v = fill.residual ? fill.residual[j] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (fill.bias) {
                const float4 b = fill.bias[j % fill.N4];
                v.x += b.x;
                v.y += b.y;
                v.z += b.z;
                v.w += b.w;
            }
            fill.out[j] = v;
            continue;
        }
        I r = e / kv;
        int k = (int)(e % kv) * VEC;
        I m = m0 + r;
        if (VEC == 1) {
            float v = patch_value(x, XH != 0, g, m, k);
            if (OUT) ((uint16_t *)col)[e] = cu_f2h16<OUT == 2>(v);
            else ((float *)col)[e] = v;
        } else {
            /* the 4 channels share one tap: locate it once */
            int ci = k % g.C, tap = k / g.C;
            int kx = tap % g.kw, ky = tap / g.kw;
            int plane = g.oh * g.ow;
            I img = m / plane;
            int rem = (int)(m % plane);
            int oy = rem / g.ow, ox = rem % g.ow;
            int iy = oy * g.stride - g.pad_top + ky;
            int ix = ox * g.stride - g.pad_left + kx;
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f), v2 = v;
            bool inside = true;
            if (g.circular) {
                iy = wrap_index(iy, g.H);
                ix = wrap_index(ix, g.W);
            } else {
                inside = iy >= 0 && iy < g.H && ix >= 0 && ix < g.W;
            }
            size_t off = (size_t)r * g.K + k;
            const int64_t at = (((int64_t)img * g.H + iy) * g.W + ix) * g.C + ci;
            if (XH) {
                /* fp16 in, fp16 out: 8 or 4 halves copied as bits (zeros
                 * for padding taps) */
                uint16_t *dst = (uint16_t *)col + off;
                const uint16_t *src = (const uint16_t *)x + at;
                if (VEC == 8) {
                    uint4 z = { 0u, 0u, 0u, 0u };
                    *(uint4 *)dst = inside ? *(const uint4 *)src : z;
                } else {
                    ushort4 z = { 0, 0, 0, 0 };
                    *(ushort4 *)dst = inside ? *(const ushort4 *)src : z;
                }
                continue;
            }
            if (inside) {
                const float *src = (const float *)x + at;
                v = *(const float4 *)src;
                if (VEC == 8) v2 = *(const float4 *)(src + 4);
            }
            if (OUT && VEC == 8) {
                uint4 h;
                h.x = (unsigned)cu_f2h16<OUT == 2>(v.x) | (unsigned)cu_f2h16<OUT == 2>(v.y) << 16;
                h.y = (unsigned)cu_f2h16<OUT == 2>(v.z) | (unsigned)cu_f2h16<OUT == 2>(v.w) << 16;
                h.z = (unsigned)cu_f2h16<OUT == 2>(v2.x) | (unsigned)cu_f2h16<OUT == 2>(v2.y) << 16;
                h.w = (unsigned)cu_f2h16<OUT == 2>(v2.z) | (unsigned)cu_f2h16<OUT == 2>(v2.w) << 16;
                *(uint4 *)((uint16_t *)col + off) = h;
            } else if (OUT) {
                ushort4 h;
                h.x = cu_f2h16<OUT == 2>(v.x);
                h.y = cu_f2h16<OUT == 2>(v.y);
                h.z = cu_f2h16<OUT == 2>(v.z);
                h.w = cu_f2h16<OUT == 2>(v.w);
                *(ushort4 *)((uint16_t *)col + off) = h;
            } else {
                *(float4 *)((float *)col + off) = v;
            }
        }
    }
}

typedef void (*im2col_fn)(const void *, void *, im2col_geom, int64_t, int64_t, conv_fill);

/* The im2col instantiation for patches of type OUT from an input of type
 * XH: 32- or 64-bit indices, 8, 4 or 1 channels per thread (8 only for
 * 16-bit patches). */
template <int OUT, int XH> static im2col_fn pick_im2col(bool i32, bool vec8, bool vec)
{
    if (i32)
        return vec8 && OUT ? im2col_kernel<OUT, OUT ? 8 : 4, int, XH>
               : vec       ? im2col_kernel<OUT, 4, int, XH>
                           : im2col_kernel<OUT, 1, int, XH>;
    return vec8 && OUT ? im2col_kernel<OUT, OUT ? 8 : 4, int64_t, XH>
           : vec       ? im2col_kernel<OUT, 4, int64_t, XH>
                       : im2col_kernel<OUT, 1, int64_t, XH>;
}

/* gt: the patches' type (enum cu_gemm_type); xh: x is fp16 (gt must be
 * CU_GEMM_F16 then). */
static int launch_im2col(cuda_backend *cb, const void *x, bool xh, void *col,
                         const im2col_geom &g, int64_t m0, int64_t rows, int gt,
                         const conv_fill &fill)
{
    if (xh && gt != CU_GEMM_F16) return cu_fail(cb, "im2col: fp16 input needs fp16 patches");
    /* 4 channels per thread: 16-byte float32 loads, or 8-byte fp16 ones */
    bool vec = g.C % 4 == 0 && (!xh || (cu_aligned(x, 8) && cu_aligned(col, 8)));
    /* 8 channels per thread for 16-bit patches (K % 8 == 0 then keeps every
     * 16-byte store aligned, given 16-byte aligned x and col) */
    bool vec8 = gt != CU_GEMM_F32 && g.C % 8 == 0 && cu_aligned(x, 16) && cu_aligned(col, 16);
    size_t items = (size_t)rows * (size_t)(g.K / (vec8 ? 8 : vec ? 4 : 1)) +
                   (size_t)fill.total4;
    unsigned grid = cu_grid(cb, items, 256);
    /* 32-bit indices when every index, the grid stride's overshoot and the
     * last output row included, stays below 2^31 */
    const bool i32 = items + (size_t)grid * 256 < 0x7fffffffu &&
                     (size_t)(m0 + rows) < 0x7fffffffu;
    im2col_fn kern = xh                  ? pick_im2col<1, 1>(i32, vec8, vec)
                     : gt == CU_GEMM_F16  ? pick_im2col<1, 0>(i32, vec8, vec)
                     : gt == CU_GEMM_BF16 ? pick_im2col<2, 0>(i32, vec8, vec)
                                          : pick_im2col<0, 0>(i32, false, vec);
    SD_LAUNCH(kern, grid, 256, 0, cb->stream, x, col, g, m0, rows, fill);
    return cu_launched(cb, "im2col");
}

/* Pre-fills out with bias (+ residual), out and residual float32 or fp16
 * (o16, r16); sets the GEMM's beta (0 when there is nothing to add).
 * 0 or -1. */
static int prefill_typed(cuda_backend *cb, void *out, bool o16, const float *bias,
                         const void *residual, bool r16, int64_t rows, int N, float *beta)
{
    *beta = 0.0f;
    if (!bias && !residual) return 0;
    int64_t total = rows * N;
    if (!o16 && !r16 && N % 4 == 0 && cu_aligned(out, 16) && cu_aligned(bias, 16) &&
        cu_aligned(residual, 16)) {
        SD_LAUNCH(gemm_prefill4_kernel, cu_grid(cb, (size_t)total / 4, 256), 256, 0, cb->stream,
                  (float4 *)out, (const float4 *)bias, (const float4 *)residual, total / 4, N / 4);
    } else {
        SD_LAUNCH(gemm_prefill_kernel, cu_grid(cb, (size_t)total, 256), 256, 0, cb->stream, out,
                  o16, bias, residual, r16, total, N);
    }
    *beta = 1.0f;
    return cu_launched(cb, "bias/residual");
}

static int prefill(cuda_backend *cb, float *out, const float *bias, const float *residual,
                   int64_t rows, int N, float *beta)
{
    return prefill_typed(cb, out, false, bias, residual, false, rows, N, beta);
}

/* out[M,N] = A16[M,K] W16[N,K]^T + bias (+ residual) for an fp16 GEMM whose
 * output and residual are float32 or fp16 (o16, r16; residual may be out):
 * cuBLASLt with bias and residual in the GEMM where it can (bias16: the
 * bias in fp16, for fp16 outputs), else a pre-fill and GemmEx. */
static int gemm16_out(cuda_backend *cb, const uint16_t *A16, int M, int N, int K, const void *W,
                      const float *bias32, const uint16_t *bias16, const void *res, bool r16,
                      void *out, bool o16)
{
    if (cb->lt && (!res || r16 == o16)) {
        int r = lt_gemm(cb, M, N, K, A16, W, o16 ? (const void *)bias16 : (const void *)bias32,
                        res, out, false, o16);
        if (r <= 0) return r;
    }
    float beta = 0.0f;
    if (prefill_typed(cb, out, o16, bias32, res, r16, M, N, &beta)) return -1;
    return cu_gemm_nt(cb, M, N, K, A16, K, W, K, CU_GEMM_F16, beta, out, o16, N);
}

/* The biases an fp16 GEMM may need: float32 always (pre-fills), fp16 for
 * an fp16 output through cuBLASLt. 0 or -1. */
static int gemm16_biases(cuda_backend *cb, const sd_tensor_info *b, int N, bool o16,
                         const float **bias32, const uint16_t **bias16, const char *what)
{
    *bias32 = NULL;
    *bias16 = NULL;
    if (!b) return 0;
    if (!(*bias32 = (const float *)cu_weight_get(cb, b, CU_W_VEC32, N, what))) return -1;
    if (o16 && cb->lt && !(*bias16 = (const uint16_t *)cu_weight_get(cb, b, CU_W_VEC16, N, what)))
        return -1;
    return 0;
}

/* out = x[M,K] W^T + bias (+ residual), an fp16 GEMM with any of x, residual
 * and out in fp16: fp16 x is the GEMM's A as it is; float32 x is converted
 * in row slices that fit the workspace. */
static int gemm_rows16(cuda_backend *cb, const sd_tensor *x, int64_t M, int N, int K,
                       const void *W, const sd_tensor_info *b, const sd_tensor *residual,
                       sd_tensor *out, const char *what)
{
    const bool x16 = cu_is_f16(x), o16 = cu_is_f16(out), r16 = residual && cu_is_f16(residual);
    const float *bias32;
    const uint16_t *bias16;
    if (gemm16_biases(cb, b, N, o16, &bias32, &bias16, what)) return -1;
    const size_t oes = o16 ? 2 : 4, res_es = r16 ? 2 : 4;
    int64_t rows = x16 ? M : (int64_t)(cb->ws_limit / ((size_t)K * 2));
    if (rows < 1) rows = 1;
    if (rows > M) rows = M;
    /* M stays an int per GEMM */
    if (rows > ((int64_t)1 << 30)) rows = (int64_t)1 << 30;
    uint16_t *ws = NULL;
    if (!x16 && !(ws = (uint16_t *)cu_workspace(cb, (size_t)rows * K * 2))) return -1;
    for (int64_t m0 = 0; m0 < M; m0 += rows) {
        const int mc = (int)(M - m0 < rows ? M - m0 : rows);
        const uint16_t *A16 = (const uint16_t *)x->data + m0 * K;
        if (!x16) {
            if (to_h16(cb, x->data + m0 * K, ws, (size_t)mc * K, false)) return -1;
            A16 = ws;
        }
        const void *res = residual ? (const char *)residual->data + (size_t)m0 * N * res_es : NULL;
        void *o = (char *)out->data + (size_t)m0 * N * oes;
        if (gemm16_out(cb, A16, mc, N, K, W, bias32, bias16, res, r16, o, o16)) return -1;
    }
    return 0;
}

/* out = A (float32, [M,K]) times W^T + bias (+ residual), in row slices
 * that fit the workspace; fp16/bf16 GEMMs (gt, enum cu_gemm_type) convert
 * each slice first. When the whole of A is one slice (the usual case) and
 * everything is 16-byte aligned, the conversion and the bias/residual
 * pre-fill share a launch. */
static int gemm_rows_sliced(cuda_backend *cb, const float *A, int64_t M, int N, int K,
                            const void *W, int gt, const float *bias,
                            const float *residual, float *out)
{
    const bool h16 = gt != CU_GEMM_F32, bf16 = gt == CU_GEMM_BF16;   /* h16: 16-bit inputs */
    float beta = 0.0f;
    int64_t rows = (int64_t)(cb->ws_limit / ((size_t)K * 2));
    if (rows < 1) rows = 1;
    if (rows > M) rows = M;
    if (h16 && rows == M && (bias || residual) && cb->lt) {
        uint16_t *ws = (uint16_t *)cu_workspace(cb, (size_t)M * K * 2);
        if (!ws) return -1;
        if (to_h16(cb, A, ws, (size_t)M * K, bf16)) return -1;
        int r = lt_gemm(cb, (int)M, N, K, ws, W, bias, residual, out, bf16, false);
        if (r <= 0) return r;
        if (prefill(cb, out, bias, residual, M, N, &beta)) return -1;
        return cu_gemm_nt(cb, (int)M, N, K, ws, K, W, K, gt, beta, out, false, N);
    }
    if (h16 && rows == M && (bias || residual) && N % 4 == 0 && K % 4 == 0 &&
        cu_aligned(out, 16) && cu_aligned(bias, 16) && cu_aligned(residual, 16) &&
        cu_aligned(A, 16)) {
        uint16_t *ws = (uint16_t *)cu_workspace(cb, (size_t)M * K * 2);
        if (!ws) return -1;
        const int64_t n4 = M * K / 4, total4 = M * N / 4;
        void (*kern)(const float4 *, ushort4 *, int64_t, float4 *, const float4 *,
                     const float4 *, int64_t, int) =
            bf16 ? to_h16x4_prefill4_kernel<1> : to_h16x4_prefill4_kernel<0>;
        SD_LAUNCH(kern, cu_grid(cb, (size_t)(n4 + total4), 256), 256, 0,
                  cb->stream, (const float4 *)A, (ushort4 *)ws, n4, (float4 *)out,
                  (const float4 *)bias, (const float4 *)residual, total4, N / 4);
        if (cu_launched(cb, "16-bit conversion + bias/residual")) return -1;
        return cu_gemm_nt(cb, (int)M, N, K, ws, K, W, K, gt, 1.0f, out, false, N);
    }
    if (prefill(cb, out, bias, residual, M, N, &beta)) return -1;
    if (!h16) {
        /* float32 inputs are used in place, in slices that keep M an int */
        const int64_t step = (int64_t)1 << 30;
        for (int64_t m0 = 0; m0 < M; m0 += step) {
            int mc = (int)(M - m0 < step ? M - m0 : step);
            if (cu_gemm_nt(cb, mc, N, K, A + m0 * K, K, W, K, CU_GEMM_F32, beta, out + m0 * N,
                           false, N))
                return -1;
        }
        return 0;
    }
    uint16_t *ws = (uint16_t *)cu_workspace(cb, (size_t)rows * K * 2);
    if (!ws) return -1;
    for (int64_t m0 = 0; m0 < M; m0 += rows) {
        int mc = (int)(M - m0 < rows ? M - m0 : rows);
        if (to_h16(cb, A + m0 * K, ws, (size_t)mc * K, bf16)) return -1;
        if (cu_gemm_nt(cb, mc, N, K, ws, K, W, K, gt, beta, out + m0 * N, false, N)) return -1;
    }
    return 0;
}

/* The float32 stand-in for a GEMM layer with fp16 operands whose GEMM is
 * not fp16 (TF32/F32 precisions, the VAE's TF32/bf16 weights): widens the
 * fp16 operands into float32 copies, runs the layer on those, narrows the
 * output back. Correct, not fast: fp16 activations come from the fp16
 * precisions, where these GEMMs do not occur. conv NULL: a linear. */
static int gemm_layer_widened(cuda_backend *cb, const sd_tensor *x, const sd_tensor_info *w,
                              const sd_tensor_info *b, const sd_conv_params *conv,
                              const sd_tensor *residual, sd_tensor *out)
{
    /* in place, the residual is the output's old contents (same type) */
    const bool in_place = residual && residual->data == out->data;
    sd_tensor x32 = *x, o32 = *out, r32 = residual ? *residual : *out;
    int rc = cu_f32_view(cb, x, true, &x32);
    if (rc == 0) rc = cu_f32_view(cb, out, in_place, &o32);
    if (rc == 0 && residual && !in_place) rc = cu_f32_view(cb, residual, true, &r32);
    const sd_tensor *res = !residual ? NULL : in_place ? &o32 : &r32;
    if (rc == 0)
        rc = conv ? cu_conv2d(&cb->head.base, &x32, w, b, conv, res, &o32)
                  : cu_linear(&cb->head.base, &x32, w, b, res, &o32);
    if (cu_f32_release(cb, x, &x32, false)) rc = -1;
    if (cu_f32_release(cb, out, &o32, rc == 0)) rc = -1;
    if (residual && !in_place && cu_f32_release(cb, residual, &r32, false)) rc = -1;
    return rc;
}

/* The operand checks conv2d and linear share: known types, and a residual
 * that is the output itself has its type. Sets *any16 when an operand is
 * fp16. 0 or -1. */
static int gemm_layer_types(cuda_backend *cb, const char *op, const sd_tensor *x,
                            const sd_tensor *residual, const sd_tensor *out, bool *any16)
{
    if (cu_types_ok(cb, op, x, residual, out, NULL)) return -1;
    if (residual && residual->data == out->data && residual->type != out->type)
        return cu_fail(cb, "%s: an in-place residual must have the output's type", op);
    *any16 = cu_is_f16(x) || cu_is_f16(out) || (residual && cu_is_f16(residual));
    return 0;
}

int cu_conv2d(sd_backend *be, const sd_tensor *x, const sd_tensor_info *w,
              const sd_tensor_info *b, const sd_conv_params *p, const sd_tensor *residual,
              sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    bool any16 = false;
    if (gemm_layer_types(cb, "conv2d", x, residual, out, &any16)) return -1;
    if (!w || w->ndim != 4)
        return cu_fail(cb, "conv2d: weight '%s' is not 4-D", w ? w->name : "(null)");
    int cout = (int)w->shape[0], cin = (int)w->shape[1];
    int kh = (int)w->shape[2], kw = (int)w->shape[3];
    if (cin != x->c)
        return cu_fail(cb, "conv2d '%s': input has %d channels, weight expects %d", w->name,
                       x->c, cin);
    if (p->stride < 1 || p->pad_top < 0 || p->pad_left < 0 || p->pad_bottom < 0 ||
        p->pad_right < 0)
        return cu_fail(cb, "conv2d '%s': bad stride or padding", w->name);
    if (p->pad_mode == SD_PAD_CIRCULAR &&
        (p->pad_top > x->h || p->pad_bottom > x->h || p->pad_left > x->w || p->pad_right > x->w))
        return cu_fail(cb, "conv2d '%s': circular padding larger than the input", w->name);
    int oh = sd_conv_out_size(x->h, kh, p->stride, p->pad_top, p->pad_bottom);
    int ow = sd_conv_out_size(x->w, kw, p->stride, p->pad_left, p->pad_right);
    if (oh < 1 || ow < 1 || out->n != x->n || out->h != oh || out->w != ow || out->c != cout)
        return cu_fail(cb, "conv2d '%s': output must be [%d,%d,%d,%d], got [%d,%d,%d,%d]",
                       w->name, x->n, oh, ow, cout, out->n, out->h, out->w, out->c);
    if (residual && !cu_same_shape(residual, out))
        return cu_fail(cb, "conv2d '%s': residual shape differs from the output", w->name);
    if (out->data == x->data)
        return cu_fail(cb, "conv2d '%s': output must not alias the input", w->name);

    /* gt: the GEMM's input type; h16: 16-bit (fp16 or bf16) patches */
    const int gt = cu_weight_gemm_type(cb, w);
    if (any16 && gt != CU_GEMM_F16) return gemm_layer_widened(cb, x, w, b, p, residual, out);
    const bool h16 = gt != CU_GEMM_F32;
    const int taps = kh * kw, K = taps * cin;
    const int64_t M = (int64_t)x->n * oh * ow;
    const void *W = cu_weight_get(cb, w, cu_gemm_weight_kind(gt, taps > 1), (int64_t)cout * K,
                                  "conv2d weight");
    if (!W) return -1;
    const float *bias = NULL;
    if (b && !(bias = (const float *)cu_weight_get(cb, b, CU_W_VEC32, cout, "conv2d bias")))
        return -1;
    const bool direct = taps == 1 && p->stride == 1 && p->pad_top == 0 && p->pad_left == 0 &&
                        p->pad_bottom == 0 && p->pad_right == 0;
    if (direct && any16) return gemm_rows16(cb, x, M, cout, K, W, b, residual, out, "conv2d bias");
    const float *res = residual ? residual->data : NULL;
    if (direct) return gemm_rows_sliced(cb, x->data, M, cout, K, W, gt, bias, res, out->data);
    if (gt == CU_GEMM_F16 && cb->conv_implicit) {
        /* no patch matrix (conv_igemm.cu); 1 = not applicable: im2col below */
        const int r = cu_conv2d_implicit(cb, x, W, bias, residual, p, kh, kw, out);
        if (r <= 0) return r;
    }

    im2col_geom g;
    g.H = x->h;
    g.W = x->w;
    g.C = cin;
    g.kh = kh;
    g.kw = kw;
    g.stride = p->stride;
    g.pad_top = p->pad_top;
    g.pad_left = p->pad_left;
    g.circular = p->pad_mode == SD_PAD_CIRCULAR;
    g.oh = oh;
    g.ow = ow;
    g.K = K;
    const size_t esz = h16 ? 2 : 4;
    int64_t rows = (int64_t)(cb->ws_limit / ((size_t)K * esz));
    if (rows < 1) rows = 1;
    if (rows > M) rows = M;
    void *col = cu_workspace(cb, (size_t)rows * K * esz);
    if (!col) return -1;
    /* one slice with float4-aligned rows: the pre-fill rides in the im2col
     * launch (it is ordered before the GEMM either way) */
    conv_fill fill = { NULL, NULL, NULL, 0, 1 };
    float beta = 0.0f;
    const bool x16 = cu_is_f16(x);
    if (any16) {
        /* fp16 operands (an fp16 GEMM): one slice goes through gemm16_out
         * (cuBLASLt adds bias and residual); slices share one typed pre-fill */
        const bool o16 = cu_is_f16(out), r16 = residual && cu_is_f16(residual);
        const float *bias32;
        const uint16_t *bias16;
        if (gemm16_biases(cb, b, cout, o16, &bias32, &bias16, "conv2d bias")) return -1;
        const void *rv = residual ? residual->data : NULL;
        if (rows == M) {
            if (launch_im2col(cb, x->data, x16, col, g, 0, M, gt, fill)) return -1;
            return gemm16_out(cb, (const uint16_t *)col, (int)M, cout, K, W, bias32, bias16, rv,
                              r16, out->data, o16);
        }
        if (prefill_typed(cb, out->data, o16, bias32, rv, r16, M, cout, &beta)) return -1;
        for (int64_t m0 = 0; m0 < M; m0 += rows) {
            int mc = (int)(M - m0 < rows ? M - m0 : rows);
            if (launch_im2col(cb, x->data, x16, col, g, m0, mc, gt, fill)) return -1;
            if (cu_gemm_nt(cb, mc, cout, K, col, K, W, K, gt, beta,
                           (char *)out->data + (size_t)m0 * cout * (o16 ? 2 : 4), o16, cout))
                return -1;
        }
        return 0;
    }
    if (h16 && rows == M && cb->lt) {
        /* one slice: patches, then cuBLASLt adds bias and residual itself */
        if (launch_im2col(cb, x->data, false, col, g, 0, M, gt, fill)) return -1;
        int r = lt_gemm(cb, (int)M, cout, K, (const uint16_t *)col, W, bias, res, out->data,
                        gt == CU_GEMM_BF16, false);
        if (r <= 0) return r;
        if (prefill(cb, out->data, bias, res, M, cout, &beta)) return -1;
        return cu_gemm_nt(cb, (int)M, cout, K, col, K, W, K, gt, beta, out->data, false, cout);
    }
    if ((bias || res) && rows == M && cout % 4 == 0 && cu_aligned(out->data, 16) &&
        cu_aligned(bias, 16) && cu_aligned(res, 16)) {
        fill.out = (float4 *)out->data;
        fill.bias = (const float4 *)bias;
        fill.residual = (const float4 *)res;
        fill.total4 = M * cout / 4;
        fill.N4 = cout / 4;
        beta = 1.0f;
    } else if (prefill(cb, out->data, bias, res, M, cout, &beta)) {
        return -1;
    }
    for (int64_t m0 = 0; m0 < M; m0 += rows) {
        int mc = (int)(M - m0 < rows ? M - m0 : rows);
        if (launch_im2col(cb, x->data, false, col, g, m0, mc, gt, fill)) return -1;
        fill.total4 = 0;
        if (cu_gemm_nt(cb, mc, cout, K, col, K, W, K, gt, beta, out->data + m0 * cout, false,
                       cout))
            return -1;
    }
    return 0;
}

int cu_linear(sd_backend *be, const sd_tensor *x, const sd_tensor_info *w,
              const sd_tensor_info *b, const sd_tensor *residual, sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    bool any16 = false;
    if (gemm_layer_types(cb, "linear", x, residual, out, &any16)) return -1;
    const int K = x->c, N = out->c;
    const int64_t M = (int64_t)x->n * x->h * x->w;
    if (M != (int64_t)out->n * out->h * out->w)
        return cu_fail(cb, "linear '%s': input and output have different row counts",
                       w ? w->name : "(null)");
    if (residual && !cu_same_shape(residual, out))
        return cu_fail(cb, "linear '%s': residual shape differs from the output",
                       w ? w->name : "(null)");
    if (out->data == x->data)
        return cu_fail(cb, "linear '%s': output must not alias the input", w ? w->name : "(null)");
    const int gt = cu_weight_gemm_type(cb, w);
    if (any16 && gt != CU_GEMM_F16) return gemm_layer_widened(cb, x, w, b, NULL, residual, out);
    const void *W =
        cu_weight_get(cb, w, cu_gemm_weight_kind(gt, false), (int64_t)N * K, "linear weight");
    if (!W) return -1;
    if (any16) return gemm_rows16(cb, x, M, N, K, W, b, residual, out, "linear bias");
    const float *bias = NULL;
    if (b && !(bias = (const float *)cu_weight_get(cb, b, CU_W_VEC32, N, "linear bias")))
        return -1;
    return gemm_rows_sliced(cb, x->data, M, N, K, W, gt, bias,
                            residual ? residual->data : NULL, out->data);
}
