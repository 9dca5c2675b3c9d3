/* internal.h - state and helpers shared by the CUDA backend's sources
 * (backend.cu: lifecycle, memory, transfers; weights.cu: the weight cache;
 * gemm.cu: conv2d/linear; norm.cu; attention.cu; elementwise.cu).
 *
 * Execution model: every op is queued on the backend's one stream and
 * returns without waiting; download() (and sd_backend_cuda_synchronize)
 * wait. Activations and scratch come from the backend's own stream-ordered
 * memory pool (cudaMallocFromPoolAsync), which keeps freed blocks, so a
 * network pass allocates no device memory after its first run. Weights are
 * uploaded once and cached by their sd_tensor_info data pointer.
 */
#ifndef SD_CUDA_INTERNAL_H
#define SD_CUDA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "backend/cuda/compat.h"
#include "backend/cuda_backend.h"
#include "backend/ops_math.h"
#include "engine/half.h"

/* How a cached weight is stored on the device. */
enum cu_wkind {
    CU_W_ROWS16 = 0,    /* fp16, the file's element order ([N,K] linear, 1x1 conv) */
    CU_W_CONV16,        /* fp16, conv reordered to [Cout][kh][kw][Cin] */
    CU_W_ROWS32,        /* float32, file order */
    CU_W_CONV32,        /* float32, conv reordered */
    CU_W_VEC32,         /* float32 vector (bias, norm gamma/beta, positions) */
    CU_W_TABLE,         /* embedding table: fp16 when the file has F16, else float32 */
    CU_W_ROWSBF16,      /* bf16, file order (the VAE's linears and 1x1 convs, AUTO_VAE_BF16) */
    CU_W_CONVBF16,      /* bf16, conv reordered (the VAE's convs, AUTO_VAE_BF16) */
    CU_W_VEC16          /* fp16 vector: the bias of a GEMM with fp16 output
                           (cuBLASLt's bias epilogue takes the output's type) */
};

/* The element type of a GEMM's A and W inputs (C is always float32). */
enum cu_gemm_type {
    CU_GEMM_F32 = 0,    /* float32 inputs: TF32 tensor cores, or plain F32 */
    CU_GEMM_F16 = 1,    /* fp16 inputs, float32 accumulation */
    CU_GEMM_BF16 = 2    /* bf16 inputs, float32 accumulation */
};

typedef struct cu_weight {
    const void *key;             /* sd_tensor_info.data; NULL = empty slot */
    int kind;
    void *dev;
    size_t bytes;                /* device bytes */
    size_t src_nbytes;
    uint64_t last_use;           /* the cache's clock at the last lookup (LRU) */
    unsigned char fp[48];        /* bytes from the start, middle and end of the
                                    source: a reused address with other
                                    contents (another model mapped where a
                                    closed one was) is re-uploaded */
} cu_weight;

/* One GEMM shape's cuBLASLt algorithm (gemm.cu), found once by the
 * heuristic: shapes repeat every step, the heuristic costs tens of us. */
typedef struct cu_lt_plan {
    int M, N, K, flags;          /* flags: 1 bias epilogue, 2 C (residual),
                                    4 bf16 inputs (else fp16) */
    int state;                   /* 0 free slot, 1 algo found, 2 unsupported */
    cublasLtMatmulAlgo_t algo;
} cu_lt_plan;
#define CU_LT_PLANS 128

typedef struct cuda_backend {
    sd_cuda_backend_head head;   /* must be first: sd_backend + api table */
    sd_backend_ops ops;          /* filled at creation; head.base.ops points here */
    int device;
    sd_cuda_precision precision;
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasLtHandle_t lt;         /* NULL: cuBLASLt unavailable, GemmEx only */
    void *lt_ws;                 /* cuBLASLt workspace, allocated on first use */
    cu_lt_plan lt_plans[CU_LT_PLANS];
    int lt_nplans;
    cudaMemPool_t pool;          /* activations and scratch */
    cudaMemPool_t wpool;         /* weights (weights.cu): packed, where
                                    cudaMalloc rounds each big tensor up to
                                    2 MB pages (~225 MB for SD1.5) */
    int sm_count;
    size_t smem_optin;           /* max dynamic shared memory per block */
    size_t device_total;
    size_t device_used_peak;
    /* weight cache: open addressing on (key, kind) */
    cu_weight *wtab;
    size_t wcap, wcount, wbytes;
    size_t wbudget;              /* VRAM budget for weights, 0 = none */
    size_t wpeak;
    uint64_t wclock;             /* lookups so far: the LRU's clock */
    uint64_t n_uploads, n_evictions, bytes_uploaded;
    /* host ranges page-locked by pin_host */
    struct cu_pin { const void *user; void *start; size_t bytes; } pins[32];
    int npins;
    /* scratch for im2col, fp16 copies of GEMM inputs and attention scores */
    void *ws;
    size_t ws_size, ws_limit;
    size_t ws_default;           /* ws_limit at creation */
    unsigned flash_ready;        /* bit i: the flash kernel variant i may use
                                    its shared memory (attribute set) */
    /* CUDA graphs (graph.cu) */
    bool graphs;                 /* graph_run captures (sd_cuda_options.graphs) */
    bool capturing;              /* a capture is open on `stream`: no uploads,
                                    no workspace growth, no synchronisation */
    uint64_t wgen;               /* bumped whenever a cached weight is freed */
    uint64_t wsgen;              /* bumped whenever the scratch `ws` is freed
                                    (growth, trim, limit): a graph bakes its
                                    address in, so it is stale then */
    void *blas_ws;               /* cuBLAS workspace set for capture */
    unsigned long long graph_captures, graph_launches, graph_eager;
    /* implicit-GEMM convolutions (conv_igemm.cu, API version 4) */
    bool conv_implicit;          /* sd_cuda_options.conv_implicit */
    unsigned igemm_ready;        /* bit i: variant i may use its shared memory */
    unsigned long long conv_implicit_calls;
    int igemm_force, igemm_force_splits;   /* $SD_CUDA_IGEMM (tuning: a forced
                                              shape); -1 / 0: chosen per shape */
    /* fp16 activations (API version 5): head.base.inner_type follows it */
    bool f16_activations;        /* sd_cuda_options.f16_activations */
} cuda_backend;

static inline cuda_backend *cu_of(sd_backend *be) { return (cuda_backend *)be; }

/* ---- errors (backend.cu) -------------------------------------------------- */
int cu_fail(cuda_backend *cb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* 0 when e is cudaSuccess, else -1 with "<what>: <CUDA message>". */
int cu_check(cuda_backend *cb, cudaError_t e, const char *what);
/* After a kernel launch: reports a launch failure as cu_check does. */
int cu_launched(cuda_backend *cb, const char *what);

/* ---- memory (backend.cu) -------------------------------------------------- */
/* Stream-ordered device memory from the backend's pool; NULL on failure
 * (after one retry with the pool trimmed). */
void *cu_malloc(cuda_backend *cb, size_t bytes);
void cu_free(cuda_backend *cb, void *p);
/* The shared scratch, at least `bytes` (grown as needed). NULL with the
 * error set on failure. Valid until the next call that asks for more. */
void *cu_workspace(cuda_backend *cb, size_t bytes);
/* Grid size for a grid-stride loop over n items with `threads` per block. */
static inline unsigned cu_grid(const cuda_backend *cb, size_t n, int threads)
{
    size_t blocks = (n + (size_t)threads - 1) / (size_t)threads;
    size_t cap = (size_t)(cb->sm_count > 0 ? cb->sm_count : 16) * 16;
    if (blocks > cap) blocks = cap;
    return blocks ? (unsigned)blocks : 1u;
}

/* ---- CUDA graphs (graph.cu) ------------------------------------------------ */
int cu_graph_run(sd_backend *be, sd_cuda_graph **slot, int (*fn)(void *ud), void *ud);
void cu_graph_free(sd_backend *be, sd_cuda_graph *slot);

/* ---- weights (weights.cu) ------------------------------------------------- */
/* Device copy of t in the given storage kind, uploaded on first use. Checks
 * dtype (F32/F16/BF16), expect_numel (>= 0) and, for conv kinds, 4-D shape.
 * NULL with the error set on failure. */
const void *cu_weight_get(cuda_backend *cb, const sd_tensor_info *t, int kind,
                          int64_t expect_numel, const char *what);
/* The input type of GEMMs with this weight (enum cu_gemm_type), by the
 * backend's precision and, in the AUTO precisions, the weight's name (VAE:
 * float32/TF32 in AUTO, bf16 in AUTO_VAE_BF16; the rest fp16). */
int cu_weight_gemm_type(const cuda_backend *cb, const sd_tensor_info *t);
/* The cache kind of a GEMM weight of input type gt: conv (reordered to
 * [Cout][kh][kw][Cin], kernels larger than 1x1) or rows (file order). */
int cu_gemm_weight_kind(int gt, bool conv);
int64_t cu_numel(const sd_tensor_info *t);
void cu_weights_free(cuda_backend *cb);
/* Frees cached weights whose host data lies in [lo, hi); bytes freed or -1. */
long long cu_weights_drop_range(cuda_backend *cb, const void *lo, const void *hi);
/* Evicts least recently used weights until `need` more bytes fit the
 * budget (or nothing evictable is left). 0 or -1. */
int cu_weights_fit(cuda_backend *cb, size_t need);

/* ---- GEMM (gemm.cu) --------------------------------------------------------- */
/* Row-major C[M,N] (ldc) = A[M,K] (lda) * W[N,K]^T (ldw) + beta * C, float32
 * accumulation; C float32, or fp16 (c16, fp16 GEMMs only). A and W are both
 * of type gt (enum cu_gemm_type: fp16, bf16 or float32); float32 inputs use
 * TF32 tensor cores unless the backend's precision is F32. */
int cu_gemm_nt(cuda_backend *cb, int M, int N, int K, const void *A, int lda, const void *W,
               int ldw, int gt, float beta, void *C, bool c16, int ldc);

/* ---- implicit-GEMM convolution (conv_igemm.cu) ------------------------------ */
/* conv2d with fp16 weights w16 ([Cout][kh][kw][Cin], CU_W_CONV16; or
 * CU_W_ROWS16 for 1x1) on tensor cores without a patch matrix; bias and
 * residual (may be out itself) in the epilogue. x, residual and out float32
 * or fp16 (an fp16 x is read in place, a float32 one copied to fp16).
 * Shapes already checked by cu_conv2d. Returns 1 when it does not apply
 * (Cin % 8 != 0, sizes past 32-bit indices, the fp16 input copy over the
 * workspace limit): the caller runs im2col; 0 done; -1 error. */
int cu_conv2d_implicit(cuda_backend *cb, const sd_tensor *x, const void *w16, const float *bias,
                       const sd_tensor *residual, const sd_conv_params *p, int kh, int kw,
                       sd_tensor *out);
/* Reads $SD_CUDA_IGEMM into cb->igemm_force*; called once by api_create. */
void cu_conv_implicit_init(cuda_backend *cb);

/* ---- op entry points -------------------------------------------------------- */
int cu_conv2d(sd_backend *be, const sd_tensor *x, const sd_tensor_info *w,
              const sd_tensor_info *b, const sd_conv_params *p, const sd_tensor *residual,
              sd_tensor *out);
int cu_linear(sd_backend *be, const sd_tensor *x, const sd_tensor_info *w,
              const sd_tensor_info *b, const sd_tensor *residual, sd_tensor *out);
int cu_group_norm(sd_backend *be, const sd_tensor *x, int groups, float eps,
                  const sd_tensor_info *gamma, const sd_tensor_info *beta, bool silu,
                  sd_tensor *out);
int cu_layer_norm(sd_backend *be, const sd_tensor *x, const sd_tensor_info *gamma,
                  const sd_tensor_info *beta, float eps, sd_tensor *out);
int cu_attention(sd_backend *be, const sd_tensor *q, const sd_tensor *k, const sd_tensor *v,
                 int heads, float scale, bool causal, sd_tensor *out);
int cu_activation(sd_backend *be, sd_activation act, const sd_tensor *x, sd_tensor *out);
int cu_geglu(sd_backend *be, const sd_tensor *x, sd_tensor *out);
int cu_add(sd_backend *be, const sd_tensor *a, const sd_tensor *b, sd_tensor *out);
int cu_add_per_channel(sd_backend *be, const sd_tensor *x, const sd_tensor *v, sd_tensor *out);
int cu_concat_channels(sd_backend *be, const sd_tensor *a, const sd_tensor *b, sd_tensor *out);
int cu_upsample_nearest2x(sd_backend *be, const sd_tensor *x, sd_tensor *out);
int cu_timestep_embedding(sd_backend *be, const float *t_host, sd_tensor *out);
int cu_embedding(sd_backend *be, const sd_tensor_info *table, const int *ids_host,
                 const sd_tensor_info *pos, sd_tensor *out);
/* NCHW <-> NHWC on the device (elementwise.cu), for upload/download: the
 * host side is always float32, the tensor side float32 or fp16 (f16). */
int cu_nchw_to_nhwc(cuda_backend *cb, const float *src, void *dst, bool dst_f16, int n, int c,
                    int hw);
int cu_nhwc_to_nchw(cuda_backend *cb, const void *src, bool src_f16, float *dst, int n, int c,
                    int hw);
/* dst[i] = src[i] for n elements, each side float32 or fp16 bits (gemm.cu);
 * src == dst is fine only when both types are the same. */
int cu_convert(cuda_backend *cb, const void *src, bool src_f16, void *dst, bool dst_f16,
               size_t n);

static inline bool cu_same_shape(const sd_tensor *a, const sd_tensor *b)
{
    return a->n == b->n && a->h == b->h && a->w == b->w && a->c == b->c;
}

/* ---- activation element types (ops.h sd_act_type) --------------------------
 * Every op takes float32 and fp16 operands in any mix: kernels read with
 * cu_ld and write with cu_st (or templates on the types), math in float32. */
static inline bool cu_is_f16(const sd_tensor *t) { return t->type == SD_ACT_F16; }
/* 0 when each of the (up to 4, NULL = none) tensors has a known type, else
 * -1 with "<op>: unknown activation type N". */
int cu_types_ok(cuda_backend *cb, const char *op, const sd_tensor *a, const sd_tensor *b,
                const sd_tensor *c, const sd_tensor *d);
/* A float32 stand-in for an operand of an op that only computes on float32
 * (the fallbacks: GEMMs that are not fp16, cuBLAS attention). *f32 starts
 * as *t; an fp16 t gets a float32 copy from the pool, converted from t when
 * copy_in (inputs, and outputs whose old contents are read). 0 or -1. */
int cu_f32_view(cuda_backend *cb, const sd_tensor *t, bool copy_in, sd_tensor *f32);
/* Ends a cu_f32_view (also one that failed): with copy_out (an output, the
 * op done), converts the copy back into t; frees the copy. 0 or -1. */
int cu_f32_release(cuda_backend *cb, const sd_tensor *t, sd_tensor *f32, bool copy_out);

/* The backend's inner type from its precision and f16_activations switch
 * (backend.cu): fp16 when the switch is on and GEMMs run in fp16. */
void cu_update_inner_type(cuda_backend *cb);

/* ---- device helpers ------------------------------------------------------- */
#define CU_FULL_MASK 0xffffffffu

/* float -> fp16 bits, round to nearest even (as half.h and torch). */
__device__ static inline uint16_t cu_f2h(float v)
{
#ifdef SD_CUDA_EMU
    return sd_f32_to_f16(v);
#else
    return __half_as_ushort(__float2half_rn(v));
#endif
}

/* float -> bf16 bits, round to nearest even (as half.h and torch; the
 * emulated cuBLAS reads bf16 inputs exactly, so the GEMM rounds like a GPU's). */
__device__ static inline uint16_t cu_f2bf(float v)
{
#ifdef SD_CUDA_EMU
    return sd_f32_to_bf16(v);
#else
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
#endif
}

__device__ static inline float cu_h2f(uint16_t h)
{
#ifdef SD_CUDA_EMU
    return sd_f16_to_f32(h);
#else
    return __half2float(__ushort_as_half(h));
#endif
}

/* Element i of an activation buffer: float32, or fp16 bits when f16. The
 * branch is uniform over a launch, so it costs next to nothing. */
__device__ static inline float cu_ld(const void *p, bool f16, int64_t i)
{
    return f16 ? cu_h2f(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

__device__ static inline void cu_st(void *p, bool f16, int64_t i, float v)
{
    if (f16) ((uint16_t *)p)[i] = cu_f2h(v);
    else ((float *)p)[i] = v;
}

__device__ static inline float cu_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(CU_FULL_MASK, v, o);
    return v;
}

__device__ static inline float cu_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(CU_FULL_MASK, v, o));
    return v;
}

/* Sum over the block, returned to every thread. Every thread of the block
 * must call it; blockDim.x is a multiple of 32. */
__device__ static inline float cu_block_sum(float v)
{
    __shared__ float part[32];
    __shared__ float total;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = cu_warp_sum(v);
    __syncthreads();            /* an earlier call's readers are done with part/total */
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < nw ? part[lane] : 0.0f;
        t = cu_warp_sum(t);
        if (lane == 0) total = t;
    }
    __syncthreads();
    return total;
}

/* Max over the block, as cu_block_sum. */
__device__ static inline float cu_block_max(float v)
{
    __shared__ float part[32];
    __shared__ float total;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = cu_warp_max(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < nw ? part[lane] : -INFINITY;
        t = cu_warp_max(t);
        if (lane == 0) total = t;
    }
    __syncthreads();
    return total;
}

#endif
