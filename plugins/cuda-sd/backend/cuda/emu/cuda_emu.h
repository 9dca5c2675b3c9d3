/* cuda_emu.h - a small CPU emulation of the CUDA runtime, cuBLAS GEMMs and
 * WMMA that the CUDA backend's sources use, so that the very same kernels
 * can be built with g++ (-DSD_CUDA_EMU) and run on machines without a GPU:
 * the unit tests check the backend's kernels, launch geometry, cuBLAS
 * argument conventions and shared-memory layouts against the CPU backend in
 * CI, and a real GPU then only has to confirm what the emulator cannot know
 * (real cuBLAS/tensor-core behaviour, timing, device limits).
 *
 * What it models:
 *   - a kernel launch runs every block in turn on the calling thread; each
 *     CUDA thread of a block is a fiber (ucontext) with its own stack, so
 *     per-thread locals are private and __shared__ variables (static here)
 *     are shared; __syncthreads() and warp-wide operations (__syncwarp,
 *     __shfl_xor_sync) are real barriers between the fibers, and a barrier
 *     that can never complete is reported as an error instead of hanging;
 *   - dynamic shared memory is filled with 0xff bytes (NaN) at each block
 *     so kernels that read it before writing produce NaN, and more than
 *     48 KB needs cudaFuncSetAttribute first, as on a GPU;
 *   - launch geometry limits (1024 threads per block, grid y/z <= 65535,
 *     227 KB of shared memory) are checked;
 *   - mma.sync m16n8k16 (sd_emu::mma_m16n8k16, used through ../mma.h) with
 *     the real per-lane register layout, lanes exchanging their fragments;
 *     cp.async as an immediate copy;
 *   - WMMA fragments hold whole 16x16 tiles (every lane of a warp computes
 *     the full tile; the results are the same as the lane-distributed ones),
 *     with the alignment and leading-dimension rules of the real API;
 *   - cublasGemmEx / cublasGemmStridedBatchedEx with cuBLAS's column-major
 *     conventions and argument checks; TF32 inputs are rounded to 10
 *     mantissa bits, fp16 and bf16 inputs are exact (16-bit A and B need
 *     CUBLAS_COMPUTE_32F and a float32 C, as the backend asks), products
 *     and accumulation in float32 - what a GPU's tensor cores give up to the
 *     order of the sums, since the kernels round to fp16/bf16 to nearest
 *     even as the GPU's conversions do;
 *   - device memory is host memory (no separate address space: a host
 *     dereference of a device pointer is not caught here); frees are
 *     immediate, so the bytes in use and their high-water mark are exact
 *     (sd_emu_memory_high, sd_emu_memory_report in cuda_emu.cpp, exported
 *     by the library; SD_EMU_MEMTRACE=1 also keeps what is live at the
 *     mark). SD_EMU_DRY_RUN=1 checks launches and GEMM shapes without
 *     running them (memory zeroed): every allocation of a full-size pass
 *     in seconds, for bench_cuda --memory-plan.
 * Everything runs synchronously; streams are just handles.
 */
#ifndef SD_CUDA_EMU_H
#define SD_CUDA_EMU_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <tuple>
#include <utility>
#include <type_traits>

#include "engine/half.h"

/* ---- qualifiers ---------------------------------------------------------- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)

/* ---- vector types ---------------------------------------------------------- */
struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct float2 {
    float x, y;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) ushort4 {
    unsigned short x, y, z, w;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
static inline float2 make_float2(float x, float y) { float2 r = { x, y }; return r; }
static inline float4 make_float4(float x, float y, float z, float w)
{
    float4 r = { x, y, z, w };
    return r;
}
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }

/* ---- half ------------------------------------------------------------------ */
struct __half {
    uint16_t bits;
};
typedef __half half;
static inline __half __float2half(float f) { __half h; h.bits = sd_f32_to_f16(f); return h; }
static inline __half __float2half_rn(float f) { return __float2half(f); }
static inline float __half2float(__half h) { return sd_f16_to_f32(h.bits); }

/* ---- runtime types ---------------------------------------------------------- */
typedef int cudaError_t;
enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDeviceFunction = 98,
    cudaErrorNoDevice = 100,
    cudaErrorLaunchFailure = 719,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorGraphExecUpdateFailure = 910
};
typedef struct sd_emu_stream *cudaStream_t;
typedef struct sd_emu_pool *cudaMemPool_t;
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
};
#define cudaStreamNonBlocking 0x01
struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    int major, minor;
    int multiProcessorCount;
    size_t sharedMemPerBlockOptin;
};
enum cudaMemAllocationType { cudaMemAllocationTypePinned = 1 };
enum cudaMemAllocationHandleType { cudaMemHandleTypeNone = 0 };
enum cudaMemLocationType { cudaMemLocationTypeDevice = 1 };
struct cudaMemLocation {
    cudaMemLocationType type;
    int id;
};
struct cudaMemPoolProps {
    cudaMemAllocationType allocType;
    cudaMemAllocationHandleType handleTypes;
    cudaMemLocation location;
    void *win32SecurityAttributes;
    size_t maxSize;
};
enum cudaMemPoolAttr {
    cudaMemPoolAttrReleaseThreshold = 4,
    cudaMemPoolAttrReservedMemCurrent = 5,
    cudaMemPoolAttrReservedMemHigh = 6,
    cudaMemPoolAttrUsedMemCurrent = 7,
    cudaMemPoolAttrUsedMemHigh = 8
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int dev);
cudaError_t cudaRuntimeGetVersion(int *v);
cudaError_t cudaDriverGetVersion(int *v);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMemPoolCreate(cudaMemPool_t *pool, const cudaMemPoolProps *props);
cudaError_t cudaMemPoolDestroy(cudaMemPool_t pool);
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void *value);
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void *value);
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t pool, size_t keep);
cudaError_t cudaMallocFromPoolAsync(void **p, size_t bytes, cudaMemPool_t pool, cudaStream_t s);
cudaError_t cudaFreeAsync(void *p, cudaStream_t s);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s);
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b);
/* Device limits: only the per-thread stack exists (backend.cu lowers it);
 * the emulation runs kernels on host threads and keeps the value only. */
enum cudaLimit { cudaLimitStackSize = 0 };
cudaError_t cudaDeviceSetLimit(cudaLimit limit, size_t value);
cudaError_t cudaDeviceGetLimit(size_t *value, cudaLimit limit);
/* Page-locking host memory: nothing to do on the CPU; the calls only
 * check their arguments (weights.cu's pin_host). */
#define cudaHostRegisterDefault 0x00
#define cudaHostRegisterPortable 0x01
#define cudaHostRegisterReadOnly 0x08
cudaError_t cudaHostRegister(void *p, size_t bytes, unsigned flags);
cudaError_t cudaHostUnregister(void *p);

/* CUDA graphs by stream capture, emulated as the real API behaves for
 * graph.cu: between cudaStreamBeginCapture and cudaStreamEndCapture the
 * kernel launches, cuBLAS/cuBLASLt GEMMs and async copies queued on the
 * stream do NOT run; they are recorded as closures over their arguments
 * (pointers baked in, as in a real graph) and run at each cudaGraphLaunch.
 * Pool allocations made during the capture become the graph's memory (kept
 * until the graph or its exec is destroyed; frees of them inside the
 * capture are no-ops), a cudaStreamSynchronize of the capturing stream
 * fails and invalidates the capture. Only the relaxed mode exists. */
typedef struct sd_emu_graph *cudaGraph_t;
typedef struct sd_emu_graph *cudaGraphExec_t;
enum cudaStreamCaptureMode { cudaStreamCaptureModeRelaxed = 2 };
struct cudaGraphExecUpdateResultInfo {
    int result;
};
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t g, unsigned long long flags);
cudaError_t cudaGraphExecUpdate(cudaGraphExec_t exec, cudaGraph_t g,
                                cudaGraphExecUpdateResultInfo *info);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaGraphDestroy(cudaGraph_t g);
cudaError_t cudaDeviceGraphMemTrim(int device);

namespace sd_emu {
cudaError_t set_func_attr(const void *fn, int attr, int value);
template <class F> const void *fn_id(F *f) { return reinterpret_cast<const void *>(f); }
}  // namespace sd_emu

template <class F> cudaError_t cudaFuncSetAttribute(F *fn, cudaFuncAttribute attr, int value)
{
    return sd_emu::set_func_attr(sd_emu::fn_id(fn), (int)attr, value);
}

/* ---- kernels: launch, thread indices, barriers ------------------------------ */
namespace sd_emu {
struct fiber_ids {
    uint3 thread_idx;
    int linear;                 /* thread index within the block */
    unsigned shuffles;          /* shuffles done (picks the slot set) */
    unsigned mmas;              /* mma_m16n8k16 calls done (picks the staging set) */
};
struct launch_ids {
    uint3 block_idx;
    dim3 block_dim, grid_dim;
};
extern thread_local fiber_ids *cur_fiber;
extern thread_local launch_ids cur_launch;

void launch_impl(const char *name, const void *fn, dim3 grid, dim3 block, size_t smem,
                 const std::function<void()> &body);
/* Runs the launch, or records it when `s` is capturing (a graph node). */
void launch_on(cudaStream_t s, const char *name, const void *fn, dim3 grid, dim3 block,
               size_t smem, const std::function<void()> &body);
/* The kernel call with its arguments bound by value (see SD_LAUNCH). */
template <class... P, class... A> auto bind_launch_args(void (*kernel)(P...), A &&...a)
{
    return [kernel, args = std::tuple<std::decay_t<P>...>(std::forward<A>(a)...)] {
        std::apply(kernel, args);
    };
}
template <class F, class B>
void launch(const char *name, F *fn, dim3 grid, dim3 block, size_t smem, cudaStream_t s,
            const B &body)
{
    launch_on(s, name, fn_id(fn), grid, block, smem, std::function<void()>(body));
}
unsigned char *dynamic_smem(void);
void block_barrier(void);
void warp_barrier(void);
uint64_t *exchange_slots(int set);  /* one 8-byte slot per thread of the block */
}  // namespace sd_emu

#define threadIdx (sd_emu::cur_fiber->thread_idx)
#define blockIdx (sd_emu::cur_launch.block_idx)
#define blockDim (sd_emu::cur_launch.block_dim)
#define gridDim (sd_emu::cur_launch.grid_dim)

static inline void __syncthreads(void) { sd_emu::block_barrier(); }
static inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)mask; sd_emu::warp_barrier(); }

template <class T> T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32)
{
    static_assert(sizeof(T) <= 8, "shuffle of a large type");
    (void)mask;
    /* two slot sets used alternately: a lane can be at most one shuffle
     * ahead of the others (the next shuffle's barrier waits for them), so
     * one barrier per shuffle suffices */
    const int me = sd_emu::cur_fiber->linear;
    uint64_t *slot = sd_emu::exchange_slots(sd_emu::cur_fiber->shuffles++ & 1);
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    slot[me] = bits;
    sd_emu::warp_barrier();
    int lane = me & 31;
    int src_lane = (lane & ~(width - 1)) | ((lane ^ lane_mask) & (width - 1));
    int src = (me & ~31) | src_lane;
    int n = (int)(blockDim.x * blockDim.y * blockDim.z);
    if (src >= n) src = me;
    T r;
    memcpy(&r, &slot[src], sizeof r);
    return r;
}

/* ---- WMMA (16x16x16, fp16 inputs, float accumulators) ------------------------ */
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

/* Every *_sync call is warp-collective on a GPU: all lanes arrive before
 * any lane touches memory (a lane's store cannot overtake another lane's
 * load of the same tile). Also checks the API's alignment rules. */
void collective_enter(const void *p, unsigned ldm, size_t elem);

template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
    static const int num_elements = 256;
    T x[256];                   /* the whole tile, row-major [16][16] */
};

template <class Use, class Layout>
static inline void load_matrix_sync(fragment<Use, 16, 16, 16, half, Layout> &f, const half *p,
                                    unsigned ldm)
{
    collective_enter(p, ldm, sizeof(half));
    /* matrix_a is [m][k], matrix_b is [k][n]: element (r, c) of the tile */
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++)
            f.x[r * 16 + c] =
                std::is_same<Layout, row_major>::value ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
}

static inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p,
                                    unsigned ldm, layout_t layout)
{
    collective_enter(p, ldm, sizeof(float));
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++)
            f.x[r * 16 + c] =
                layout == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
}

static inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f,
                                     unsigned ldm, layout_t layout)
{
    collective_enter(p, ldm, sizeof(float));
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) {
            if (layout == mem_row_major) p[(size_t)r * ldm + c] = f.x[r * 16 + c];
            else p[(size_t)c * ldm + r] = f.x[r * 16 + c];
        }
}

static inline void fill_fragment(fragment<accumulator, 16, 16, 16, float> &f, float v)
{
    for (int i = 0; i < 256; i++) f.x[i] = v;
}

/* The 32 lanes of a warp multiply identical tiles: the first computes,
 * the others find the same inputs in the warp's memo and copy the result
 * (a 30x speed-up of emulated tensor-core kernels). */
bool mma_memo_get(const void *a, const void *b, const float *c, float *d);
void mma_memo_put(const void *a, const void *b, const float *c, const float *d);

template <class LA, class LB>
static inline void mma_sync(fragment<accumulator, 16, 16, 16, float> &d,
                            const fragment<matrix_a, 16, 16, 16, half, LA> &a,
                            const fragment<matrix_b, 16, 16, 16, half, LB> &b,
                            const fragment<accumulator, 16, 16, 16, float> &c)
{
    float out[256];
    if (mma_memo_get(a.x, b.x, c.x, out)) {
        memcpy(d.x, out, sizeof out);
        return;
    }
    for (int m = 0; m < 16; m++)
        for (int n = 0; n < 16; n++) {
            float acc = c.x[m * 16 + n];
            for (int k = 0; k < 16; k++)
                acc += __half2float(a.x[m * 16 + k]) * __half2float(b.x[k * 16 + n]);
            out[m * 16 + n] = acc;
        }
    mma_memo_put(a.x, b.x, c.x, out);
    memcpy(d.x, out, sizeof out);
}
}  // namespace wmma
}  // namespace nvcuda

/* ---- mma.sync.m16n8k16 (row.col, fp16 inputs, float32 accumulators) ---------
 * The PTX instruction with its real per-lane register layout (see
 * backend/cuda/mma.h): every lane of the warp passes its own fragment
 * registers; the lanes meet, then each computes its own four outputs from
 * all the lanes' inputs. */
namespace sd_emu {
void mma_m16n8k16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1);
}  // namespace sd_emu

/* ---- cuBLAS ---------------------------------------------------------------- */
typedef struct sd_emu_blas *cublasHandle_t;
typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_NOT_SUPPORTED = 15
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 } cudaDataType_t;
typedef cudaDataType_t cudaDataType;
typedef enum { CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_FAST_TF32 = 77 } cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;

cublasStatus_t cublasCreate(cublasHandle_t *h);
cublasStatus_t cublasDestroy(cublasHandle_t h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t bytes);
const char *cublasGetStatusString(cublasStatus_t st);
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType_t at,
                            int lda, const void *B, cudaDataType_t bt, int ldb, const void *beta,
                            void *C, cudaDataType_t ct, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t algo);
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta,
                                          cublasOperation_t tb, int m, int n, int k,
                                          const void *alpha, const void *A, cudaDataType_t at,
                                          int lda, long long sa, const void *B,
                                          cudaDataType_t bt, int ldb, long long sb,
                                          const void *beta, void *C, cudaDataType_t ct, int ldc,
                                          long long sc, int batch, cublasComputeType_t compute,
                                          cublasGemmAlgo_t algo);

/* ---- cuBLASLt (the subset gemm.cu uses) --------------------------------------
 * cublasLtMatmul D = alpha op(A) op(B) + beta C (C and D may differ) with
 * float32 C/D, fp16/bf16/float32 A and B, and the BIAS epilogue (a float32
 * vector over D's rows, added after beta C). Descriptors are plain structs;
 * the heuristic returns one algorithm with no workspace. */
typedef struct sd_emu_lt *cublasLtHandle_t;
typedef struct sd_emu_lt_matmul_desc *cublasLtMatmulDesc_t;
typedef struct sd_emu_lt_layout *cublasLtMatrixLayout_t;
typedef struct sd_emu_lt_pref *cublasLtMatmulPreference_t;
typedef struct {
    uint64_t data[8];
} cublasLtMatmulAlgo_t;
typedef struct {
    cublasLtMatmulAlgo_t algo;
    size_t workspaceSize;
    cublasStatus_t state;
    float wavesCount;
    int reserved[4];
} cublasLtMatmulHeuristicResult_t;
typedef enum {
    CUBLASLT_MATMUL_DESC_TRANSA = 3,
    CUBLASLT_MATMUL_DESC_TRANSB = 4,
    CUBLASLT_MATMUL_DESC_EPILOGUE = 7,
    CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8,
    CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE = 26
} cublasLtMatmulDescAttributes_t;
typedef enum { CUBLASLT_EPILOGUE_DEFAULT = 1, CUBLASLT_EPILOGUE_BIAS = 4 } cublasLtEpilogue_t;
typedef enum { CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1 } cublasLtMatmulPreferenceAttributes_t;

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h);
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h);
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute,
                                        cudaDataType_t scale);
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d);
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                              cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size);
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t type,
                                          uint64_t rows, uint64_t cols, int64_t ld);
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l);
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p);
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p);
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t size);
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t op,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t *results,
                                              int *returned);
cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t op, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t a, const void *B,
                              cublasLtMatrixLayout_t b, const void *beta, const void *C,
                              cublasLtMatrixLayout_t c, void *D, cublasLtMatrixLayout_t d,
                              const cublasLtMatmulAlgo_t *algo, void *workspace,
                              size_t workspace_size, cudaStream_t stream);

#endif
