/* attention.cu - multi-head scaled dot-product attention, two ways:
 *
 * 1. flash_attn_kernel: fp16 tensor cores (mma.sync m16n8k16, see mma.h)
 *    with float32 accumulation and an online softmax in float32; the score
 *    matrix never leaves registers. For head dims up to 160 (SD1: 40/80/160,
 *    SD2 and CLIP: 64) in the fp16 precisions. Scores are scaled in float32
 *    after the product (which accumulates in float32), so SD2's large
 *    logits cannot overflow fp16 (the reason SD2 needs "upcast attention"
 *    in PyTorch). Design, FlashAttention-2 style:
 *    - Q, K, V and the output are each float32 or fp16 (sd_act_type, any
 *      mix). fp16 Q and K are read in place from the [B][L][C] tensors
 *      (Q fragments straight from global memory, K tiles by cp.async),
 *      with the head dim zero-filled up to DP (a multiple of 16: 40 -> 48,
 *      not 64) and keys past Lk zero-filled (cp.async's src-size-0 form);
 *      float32 Q/K (or fp16 ones too misaligned for those loads: head dims
 *      not a multiple of 8 for K, odd for Q) get a pre-pass (fa_pack_*) into
 *      the same fp16 layout, padded per head. V always gets the pre-pass
 *      into [dim][key] (transposed; from fp16 it only moves halves), once
 *      per call, so P V's B fragments are one 32-bit shared load each.
 *      Row-major V tiles would cost every query block either two 16-bit
 *      loads a register (the main loop is bound by shared loads) or its
 *      own transposition of each tile, more than one pass over V
 *      (ldmatrix.trans would avoid both; it needs a GPU to verify its lane
 *      mapping, the emulator has none). Every operand fragment is one
 *      32-bit shared-memory (or, for Q, global) load;
 *    - one block = 128 (head dim <= 64) or 64 queries of one (sample,
 *      head), 8 or 4 warps of 16 query rows; each warp keeps its Q fragments, its 16 x DP output and its
 *      16 x 64 score tile in registers for the whole key loop;
 *    - K and V tiles of 64 keys are double-buffered in shared memory with
 *      cp.async: tile j+1 is in flight while tile j is multiplied;
 *    - the score accumulators are exactly the A fragments of P V once
 *      rounded to fp16 (C's layout of two adjacent n8 tiles = A's layout of
 *      one k16 step), so P never goes through shared memory;
 *    - softmax in the log2 domain (scale * log2(e) folded into one multiply,
 *      exp2f); each thread keeps a partial row sum, reduced over the four
 *      threads of a row once at the end.
 * 2. blas_attention: cuBLAS strided-batched GEMMs over the heads for
 *    S = scale * Q K^T in float32, a row softmax kernel, then O = P V; query
 *    rows in slices so S fits the workspace. Used for big head dims (the
 *    VAE's single 512-wide head) and the TF32/F32 precisions. fp16 operands
 *    are converted to float32 copies from the pool first (and an fp16
 *    output written through one): a fallback, not the UNet's path. Its GEMMs read
 *    the float32 tensors in place in TF32 (plain F32 in the F32 precision),
 *    also where AUTO_VAE_BF16 runs the VAE's other GEMMs in bf16: bf16 operands would
 *    need copies of Q, K, V and P in the scratch, for one small layer.
 */
#include "backend/cuda/internal.h"
#include "backend/cuda/mma.h"

#define FA_BN 64     /* keys per shared-memory tile */
/* Unrolled loops (nvcc; g++ builds the emulation and has no such pragma). */
#ifdef SD_CUDA_EMU
#define FA_UNROLL
#else
#define FA_UNROLL _Pragma("unroll")
#endif
/* Warps per block, 16 query rows each. Every warp of a block reuses the
 * block's K/V tiles, so more warps = less K/V traffic from L2 per query:
 * 8 for the small head dims (SD's 4096 x 40 level: 512 blocks of 128
 * queries, two per SM at <= 128 registers a thread, ~2 full waves on an
 * H100), 4 for the large ones, which have few queries (SD's 1024 x 80 and
 * 256 x 160 levels) and need the blocks to spread over the SMs. */
#define FA_WARPS(DP) ((DP) <= 64 ? 8 : 4)
#define FA_BM(DP) (16 * FA_WARPS(DP))        /* queries per block */
#define FA_THREADS(DP) (32 * FA_WARPS(DP))
/* Blocks per SM to keep resident (a register budget for ptxas): 16 warps
 * per SM for the small head dims (at most 128 registers), 12 for 80/96,
 * 8 for 128/160, where the output tile needs the registers. */
#define FA_MIN_BLOCKS(DP) ((DP) <= 64 ? 2 : (DP) <= 96 ? 3 : 2)
/* Row strides of the shared tiles, in fp16 elements: 8 more than the data,
 * so the 8 rows a fragment load touches (lane / 4) start 4 banks apart and
 * the 32 lanes hit 32 different banks; rows stay 16-byte aligned for
 * cp.async. */
#define FA_KSTRIDE(DP) ((DP) + 8)
#define FA_VSTRIDE (FA_BN + 8)

/* Shared memory of one block: K [2][BN][DP+8] then V^T [2][DP][BN+8], fp16. */
template <int DP> struct fa_layout {
    static const int k_tile = FA_BN * FA_KSTRIDE(DP);   /* elements per K buffer */
    static const int v_tile = DP * FA_VSTRIDE;          /* elements per V^T buffer */
    static const size_t total = (size_t)2 * (k_tile + v_tile) * sizeof(uint16_t);
};

static inline int fa_round_up(int n, int m) { return (n + m - 1) / m * m; }

/* Pre-pass: src [B][L][C] (float32, or fp16 when src_f16) -> dst
 * [B*heads][Lp][DP] fp16, head h taking channels [h*d, h*d+d), zeros past d
 * and past L. Q and K when they cannot be read in place. Each thread
 * writes 8 consecutive elements (one 16-byte store; DP is a multiple of 16,
 * so the 8 never straddle two rows); n8 = number of such chunks. */
__global__ void fa_pack_rows_kernel(const void *__restrict__ src, bool src_f16,
                                    uint16_t *__restrict__ dst, int L, int Lp, int C, int d,
                                    int heads, int DP, int64_t n8)
{
    const int chunks = DP / 8;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n8;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int c0 = (int)(i % chunks) * 8;
        const int64_t rest = i / chunks;
        const int r = (int)(rest % Lp);
        const int bh = (int)(rest / Lp), b = bh / heads, h = bh % heads;
        const int64_t row = ((int64_t)b * L + r) * C + (int64_t)h * d;
        float f[8];
        for (int e = 0; e < 8; e++)
            f[e] = (r < L && c0 + e < d) ? cu_ld(src, src_f16, row + c0 + e) : 0.0f;
        const uint32_t w0 = cu_pack_h2(f[0], f[1]), w1 = cu_pack_h2(f[2], f[3]);
        const uint32_t w2 = cu_pack_h2(f[4], f[5]), w3 = cu_pack_h2(f[6], f[7]);
#ifdef SD_CUDA_EMU
        const uint32_t w[4] = { w0, w1, w2, w3 };
        memcpy(dst + i * 8, w, sizeof w);
#else
        *(uint4 *)(dst + i * 8) = make_uint4(w0, w1, w2, w3);   /* one 16-byte store */
#endif
    }
}

/* Pre-pass for V: src [B][L][C] (float32, or fp16 when src_f16) -> dst
 * [B*heads][DP][Lp] fp16 (transposed, so P V's B fragments are pairs of
 * adjacent keys). 32x32 tiles through shared memory keep both the reads
 * and the writes coalesced. grid (Lp/32, DP/32 rounded up, B*heads), 256
 * threads. */
__global__ void __launch_bounds__(256)
    fa_pack_vt_kernel(const void *__restrict__ src, bool src_f16, uint16_t *__restrict__ dst,
                      int L, int Lp, int C, int d, int heads, int DP)
{
    __shared__ float tile[32][33];   /* +1: the transposed reads avoid bank conflicts */
    const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
    const int bh = blockIdx.z, b = bh / heads, h = bh % heads;
    const int r0 = blockIdx.x * 32, c0 = blockIdx.y * 32;
    for (int y = ty; y < 32; y += 8) {
        const int r = r0 + y, c = c0 + tx;
        tile[y][tx] = (r < L && c < d)
                          ? cu_ld(src, src_f16, ((int64_t)b * L + r) * C + (int64_t)h * d + c)
                          : 0.0f;
    }
    __syncthreads();
    for (int y = ty; y < 32; y += 8) {
        const int c = c0 + y, r = r0 + tx;
        if (c < DP && r < Lp) dst[((int64_t)bh * DP + c) * Lp + r] = cu_f2h(tile[tx][y]);
    }
}

/* Where the flash kernel finds the rows of Q or K of (sample b, head h):
 * row r, head channel c at p[b*sb + h*sh + r*rs + c], and zeros where
 * r >= rows or c >= cols. In place ([B][L][C] fp16: sb = L*C, sh = d,
 * rs = C, rows = L, cols = d) or packed by fa_pack_rows_kernel (sb =
 * heads*Lp*DP, sh = Lp*DP, rs = DP, rows = Lp, cols = DP: nothing to
 * zero). */
struct fa_rows {
    const uint16_t *p;
    long long sb, sh;
    int rs, rows, cols;
};

/* How the flash kernel writes its output. */
enum { FA_OUT_F32 = 0, FA_OUT_F16 = 1, FA_OUT_F16_PAIRS = 2 /* fp16, pairs as 32-bit stores */ };

/* Two adjacent fp16 outputs as one 32-bit store (4-byte aligned). */
__device__ static inline void fa_st_h2(uint16_t *p, uint32_t v)
{
#ifdef SD_CUDA_EMU
    cu_emu_check_align(p, 4, "fp16 pair store");
    memcpy(p, &v, sizeof v);
#else
    *(uint32_t *)p = v;
#endif
}

/* grid (Lqp/FA_BM, heads, batch), FA_THREADS threads. q, k: see fa_rows
 * (Q's rows cover Lqp = Lq padded to whole blocks, K's Lkp = Lk padded to
 * whole tiles; zeros past the real ones); vt [B*heads][DP][Lkp] from the
 * pre-pass; out [B,Lq,C] float32 or fp16 (out_mode, FA_OUT_*), head h at
 * channels [h*d, h*d+d). scale_log2 = scale * log2(e). */
template <int DP>
__global__ void __launch_bounds__(FA_THREADS(DP), FA_MIN_BLOCKS(DP))
    flash_attn_kernel(const fa_rows q, const fa_rows k, const uint16_t *__restrict__ vt,
                      void *__restrict__ out, int out_mode, int Lq, int Lk, int Lkp, int C, int d,
                      float scale_log2, int causal)
{
    typedef fa_layout<DP> L;
    const int KS = FA_KSTRIDE(DP), VS = FA_VSTRIDE;
    SD_DYN_SMEM(smem);
    uint16_t *Ks = (uint16_t *)smem;          /* [2][k_tile] */
    uint16_t *Vs = Ks + 2 * L::k_tile;        /* [2][v_tile] */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int g = lane >> 2, t = lane & 3;    /* fragment row group, column pair */
    const int heads = gridDim.y, h = blockIdx.y, b = blockIdx.z, bh = b * heads + h;
    const int BM = FA_BM(DP), THREADS = FA_THREADS(DP);
    const int q0 = blockIdx.x * BM;
    const int qrow = q0 + warp * 16 + g;      /* this thread's rows: qrow, qrow + 8 */

    const uint16_t *kb = k.p + b * k.sb + h * k.sh;
    const uint16_t *vb = vt + (int64_t)bh * DP * Lkp;

    /* causal: keys past this block's last query are masked for every row */
    const int kv_end = causal ? (Lk < q0 + BM ? Lk : q0 + BM) : Lk;
    const int n_tiles = (kv_end + FA_BN - 1) / FA_BN;

    /* Queues the copy of key tile jt into buffer `buf` (16-byte chunks).
     * K chunks past the real keys or head channels (in-place fp16 K: head
     * dims that are not a multiple of 16, the last tile's keys) are
     * zero-filled, never read: 8 channels a chunk, d a multiple of 8, so a
     * chunk is all in or all out. V^T's padding is part of its packed data. */
    auto load_tile = [&](int jt, int buf) {
        const int j0 = jt * FA_BN;
        uint16_t *kd = Ks + buf * L::k_tile, *vd = Vs + buf * L::v_tile;
        for (int i = tid; i < FA_BN * DP / 8; i += THREADS) {
            const int r = i / (DP / 8), c = (i % (DP / 8)) * 8;
            const bool in = j0 + r < k.rows && c < k.cols;
            cu_cp_async16_zfill(kd + r * KS + c, in ? kb + (int64_t)(j0 + r) * k.rs + c : k.p, in);
        }
        for (int i = tid; i < DP * FA_BN / 8; i += THREADS) {
            const int r = i / (FA_BN / 8), c = (i % (FA_BN / 8)) * 8;
            cu_cp_async16(vd + r * VS + c, vb + (int64_t)r * Lkp + j0 + c);
        }
        cu_cp_async_commit();
    };
    load_tile(0, 0);

    /* Q fragments straight from global memory, once; zeros past the real
     * rows and head channels (pairs: d is even for in-place fp16 Q) */
    uint32_t qa[DP / 16][4];
    {
        const uint16_t *qb = q.p + b * q.sb + h * q.sh;
        const bool r0_in = qrow < q.rows, r1_in = qrow + 8 < q.rows;
        const uint16_t *qr0 = qb + (int64_t)qrow * q.rs, *qr1 = qr0 + (int64_t)8 * q.rs;
        for (int kt = 0; kt < DP / 16; kt++) {
            const int c0 = kt * 16 + t * 2, c1 = c0 + 8;
            qa[kt][0] = r0_in && c0 < q.cols ? cu_ld_h2(qr0 + c0) : 0u;
            qa[kt][1] = r1_in && c0 < q.cols ? cu_ld_h2(qr1 + c0) : 0u;
            qa[kt][2] = r0_in && c1 < q.cols ? cu_ld_h2(qr0 + c1) : 0u;
            qa[kt][3] = r1_in && c1 < q.cols ? cu_ld_h2(qr1 + c1) : 0u;
        }
    }
    float o[DP / 8][4];
    for (int dt = 0; dt < DP / 8; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
    /* running max (log2 domain) and this thread's partial sum, rows g, g+8 */
    float m_run[2] = { -INFINITY, -INFINITY }, l_run[2] = { 0.0f, 0.0f };

    for (int jt = 0; jt < n_tiles; jt++) {
        const int buf = jt & 1, j0 = jt * FA_BN;
        /* the other buffer was released by the __syncthreads ending the last
         * iteration: fetch the next tile into it while this one is used */
        if (jt + 1 < n_tiles) load_tile(jt + 1, buf ^ 1);
        else cu_cp_async_commit();            /* keeps the group count uniform */
        cu_cp_async_wait<1>();                /* this thread's copies of tile jt are done */
        __syncthreads();                      /* ... and everyone else's */
        const uint16_t *kt_s = Ks + buf * L::k_tile, *vt_s = Vs + buf * L::v_tile;

        /* S[16][64] = Q K^T: 8 n-tiles of 8 keys */
        float s[FA_BN / 8][4];
        for (int nt = 0; nt < FA_BN / 8; nt++) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
            const uint16_t *kr = kt_s + (nt * 8 + g) * KS + t * 2;
            for (int kt = 0; kt < DP / 16; kt++)
                cu_mma_16816(s[nt], qa[kt], cu_ld_h2(kr + kt * 16), cu_ld_h2(kr + kt * 16 + 8));
        }

        /* scale into the log2 domain; mask keys past Lk (zero padding) and,
         * causal, keys after the query. Only tiles that can hold such keys
         * pay for the test. */
        const bool need_mask = causal || j0 + FA_BN > Lk;
        for (int nt = 0; nt < FA_BN / 8; nt++)
            for (int e = 0; e < 4; e++) {
                float x = s[nt][e] * scale_log2;
                if (need_mask) {
                    const int kj = j0 + nt * 8 + t * 2 + (e & 1), qi = qrow + 8 * (e >> 1);
                    if (kj >= Lk || (causal && kj > qi)) x = -INFINITY;
                }
                s[nt][e] = x;
            }

        /* online softmax: rows g (e = 0, 1) and g + 8 (e = 2, 3); a row's 64
         * scores are spread over the 4 threads with the same g */
        float alpha[2];
        for (int hr = 0; hr < 2; hr++) {
            float mx = -INFINITY;
            for (int nt = 0; nt < FA_BN / 8; nt++)
                mx = fmaxf(mx, fmaxf(s[nt][2 * hr], s[nt][2 * hr + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(CU_FULL_MASK, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(CU_FULL_MASK, mx, 2));
            const float m_new = fmaxf(m_run[hr], mx);
            const float base = m_new == -INFINITY ? 0.0f : m_new;   /* all masked so far */
            alpha[hr] = exp2f(m_run[hr] - base);
            m_run[hr] = m_new;
            float sum = 0.0f;
            for (int nt = 0; nt < FA_BN / 8; nt++) {
                s[nt][2 * hr] = exp2f(s[nt][2 * hr] - base);
                s[nt][2 * hr + 1] = exp2f(s[nt][2 * hr + 1] - base);
                sum += s[nt][2 * hr] + s[nt][2 * hr + 1];
            }
            l_run[hr] = l_run[hr] * alpha[hr] + sum;
        }
        for (int dt = 0; dt < DP / 8; dt++) {
            o[dt][0] *= alpha[0];
            o[dt][1] *= alpha[0];
            o[dt][2] *= alpha[1];
            o[dt][3] *= alpha[1];
        }

        /* O[16][DP] += P[16][64] V[64][DP]: key step kk's A fragment is
         * score n-tiles 2kk (columns 0..7) and 2kk+1 (8..15) */
        for (int kk = 0; kk < FA_BN / 16; kk++) {
            const uint32_t pa[4] = { cu_pack_h2(s[2 * kk][0], s[2 * kk][1]),
                                     cu_pack_h2(s[2 * kk][2], s[2 * kk][3]),
                                     cu_pack_h2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                     cu_pack_h2(s[2 * kk + 1][2], s[2 * kk + 1][3]) };
            const uint16_t *vr = vt_s + g * VS + kk * 16 + t * 2;
            for (int dt = 0; dt < DP / 8; dt++)
                cu_mma_16816(o[dt], pa, cu_ld_h2(vr + dt * 8 * VS),
                             cu_ld_h2(vr + dt * 8 * VS + 8));
        }
        __syncthreads();                      /* buffer `buf` may be refilled */
    }

    /* whole-row sums, then O / l for the real rows and head channels */
    float inv[2];
    for (int hr = 0; hr < 2; hr++) {
        float l = l_run[hr];
        l += __shfl_xor_sync(CU_FULL_MASK, l, 1);
        l += __shfl_xor_sync(CU_FULL_MASK, l, 2);
        inv[hr] = l > 0.0f ? 1.0f / l : 0.0f;
    }
    /* (the loops are unrolled: o[] must stay in registers, and a loop
     * over dt that the compiler keeps indexes it, which puts it in local
     * memory for the whole kernel) */
    const int h_off = h * d;
    FA_UNROLL
    for (int hr = 0; hr < 2; hr++) {
        const int qi = qrow + 8 * hr;
        if (qi >= Lq) continue;
        const int64_t orow = ((int64_t)b * Lq + qi) * C + h_off;
        if (out_mode == FA_OUT_F32) {
            float *op = (float *)out + orow;
            FA_UNROLL
            for (int dt = 0; dt < DP / 8; dt++) {
                const int c = dt * 8 + t * 2;
                if (c < d) op[c] = o[dt][2 * hr] * inv[hr];
                if (c + 1 < d) op[c + 1] = o[dt][2 * hr + 1] * inv[hr];
            }
        } else if (out_mode == FA_OUT_F16_PAIRS) {   /* C, d even: (c, c+1) both in or out */
            uint16_t *op = (uint16_t *)out + orow;
            FA_UNROLL
            for (int dt = 0; dt < DP / 8; dt++) {
                const int c = dt * 8 + t * 2;
                if (c < d)
                    fa_st_h2(op + c,
                             cu_pack_h2(o[dt][2 * hr] * inv[hr], o[dt][2 * hr + 1] * inv[hr]));
            }
        } else {
            uint16_t *op = (uint16_t *)out + orow;
            FA_UNROLL
            for (int dt = 0; dt < DP / 8; dt++) {
                const int c = dt * 8 + t * 2;
                if (c < d) op[c] = cu_f2h(o[dt][2 * hr] * inv[hr]);
                if (c + 1 < d) op[c + 1] = cu_f2h(o[dt][2 * hr + 1] * inv[hr]);
            }
        }
    }
}

/* The instantiated head-dim paddings, smallest first. */
static const int fa_dims[] = { 16, 32, 48, 64, 80, 96, 128, 160 };
#define FA_VARIANTS ((int)(sizeof fa_dims / sizeof fa_dims[0]))

typedef void (*fa_kernel_fn)(const fa_rows, const fa_rows, const uint16_t *, void *, int, int,
                             int, int, int, int, float, int);

static fa_kernel_fn fa_kernel(int variant, size_t *smem)
{
    switch (fa_dims[variant]) {
#define FA_CASE(D)                                                                              \
    case D: *smem = fa_layout<D>::total; return flash_attn_kernel<D>;
    FA_CASE(16)
    FA_CASE(32)
    FA_CASE(48)
    FA_CASE(64)
    FA_CASE(80)
    FA_CASE(96)
    FA_CASE(128)
    FA_CASE(160)
#undef FA_CASE
    default: return NULL;
    }
}

/* Queries per block of a variant. */
static int fa_bm(int variant) { return FA_BM(fa_dims[variant]); }

/* Variant index for head dim d, or -1 when flash does not apply. */
static int fa_variant(const cuda_backend *cb, int d)
{
    for (int i = 0; i < FA_VARIANTS; i++) {
        if (fa_dims[i] < d) continue;
        size_t smem = 0;
        if (!fa_kernel(i, &smem) || smem > cb->smem_optin) return -1;
        return i;
    }
    return -1;
}

static int flash_attention(cuda_backend *cb, int variant, const sd_tensor *q, const sd_tensor *k,
                           const sd_tensor *v, int heads, float scale, bool causal, sd_tensor *out)
{
    size_t smem = 0;
    fa_kernel_fn kern = fa_kernel(variant, &smem);
    if (!(cb->flash_ready & (1u << variant))) {
        if (cu_check(cb, cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              (int)smem),
                     "flash attention shared memory"))
            return -1;
        cb->flash_ready |= 1u << variant;
    }
    const int DP = fa_dims[variant];
    const int B = q->n, Lq = q->h * q->w, Lk = k->h * k->w, C = q->c, d = C / heads;
    /* queries padded to whole blocks, keys to whole tiles */
    const int bm = fa_bm(variant);
    const int Lqp = fa_round_up(Lq, bm), Lkp = fa_round_up(Lk, FA_BN);
    const int64_t nq = (int64_t)B * heads * Lqp * DP, nk = (int64_t)B * heads * Lkp * DP;
    /* fp16 Q is read in place with 32-bit loads (pairs of head channels:
     * even d and C, 4-byte aligned), fp16 K with 16-byte cp.async (8
     * channels: d and C multiples of 8, 16-byte aligned); anything else is
     * packed first */
    const bool q_direct = cu_is_f16(q) && d % 2 == 0 && C % 2 == 0 &&
                          ((uintptr_t)q->data & 3u) == 0;
    const bool k_direct = cu_is_f16(k) && d % 8 == 0 && C % 8 == 0 &&
                          ((uintptr_t)k->data & 15u) == 0;
    const int64_t nq_packed = q_direct ? 0 : nq, nk_packed = k_direct ? 0 : nk;
    /* fp16 copies from the stream-ordered pool (the same sizes come back
     * every step, so the pool serves them without allocating); freed in
     * stream order after the kernel. Every part is a multiple of 64 * 16
     * elements, so each starts 16-byte aligned for cp.async. */
    const size_t packed_bytes = (size_t)(nq_packed + nk_packed + nk) * sizeof(uint16_t);
    uint16_t *packed = (uint16_t *)cu_malloc(cb, packed_bytes);
    if (!packed)
        return cu_fail(cb, "out of GPU memory for %zu MB of attention operands",
                       packed_bytes >> 20);
    uint16_t *qh = packed, *kh = qh + nq_packed, *vt = kh + nk_packed;
    fa_rows qr, kr;
    if (q_direct)
        qr = { (const uint16_t *)q->data, (long long)Lq * C, d, C, Lq, d };
    else
        qr = { qh, (long long)heads * Lqp * DP, (long long)Lqp * DP, DP, Lqp, DP };
    if (k_direct)
        kr = { (const uint16_t *)k->data, (long long)Lk * C, d, C, Lk, d };
    else
        kr = { kh, (long long)heads * Lkp * DP, (long long)Lkp * DP, DP, Lkp, DP };
    const int out_mode = !cu_is_f16(out) ? FA_OUT_F32
                         : (C % 2 == 0 && d % 2 == 0 && ((uintptr_t)out->data & 3u) == 0)
                             ? FA_OUT_F16_PAIRS
                             : FA_OUT_F16;
    int rc = -1;
    if (!q_direct) {
        SD_LAUNCH(fa_pack_rows_kernel, cu_grid(cb, (size_t)nq / 8, 256), 256, 0, cb->stream,
                  (const void *)q->data, cu_is_f16(q), qh, Lq, Lqp, C, d, heads, DP, nq / 8);
        if (cu_launched(cb, "attention fp16 packing")) goto done;
    }
    if (!k_direct) {
        SD_LAUNCH(fa_pack_rows_kernel, cu_grid(cb, (size_t)nk / 8, 256), 256, 0, cb->stream,
                  (const void *)k->data, cu_is_f16(k), kh, Lk, Lkp, C, d, heads, DP, nk / 8);
        if (cu_launched(cb, "attention fp16 packing")) goto done;
    }
    {
        dim3 vgrid((unsigned)(Lkp / 32), (unsigned)((DP + 31) / 32), (unsigned)(B * heads));
        SD_LAUNCH(fa_pack_vt_kernel, vgrid, 256, 0, cb->stream, (const void *)v->data,
                  cu_is_f16(v), vt, Lk, Lkp, C, d, heads, DP);
        if (cu_launched(cb, "attention fp16 packing")) goto done;
    }
    {
        dim3 grid((unsigned)(Lqp / bm), (unsigned)heads, (unsigned)B);
        SD_LAUNCH(kern, grid, FA_THREADS(DP), smem, cb->stream, qr, kr, (const uint16_t *)vt,
                  (void *)out->data, out_mode, Lq, Lk, Lkp, C, d, scale * 1.4426950408889634f,
                  (int)causal);
        if (cu_launched(cb, "flash attention")) goto done;
    }
    rc = 0;
done:
    cu_free(cb, packed);
    return rc;
}

/* Softmax over rows of S [rows][Lk] in place. Causal: row r is query
 * q0 + r % qn, which sees keys j <= q0 + r % qn. */
__global__ void softmax_rows_kernel(float *S, int Lk, int causal, int q0, int qn)
{
    float *row = S + (int64_t)blockIdx.x * Lk;
    const int last = causal ? q0 + (int)(blockIdx.x % qn) : Lk - 1;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < Lk; j += blockDim.x)
        if (j <= last) mx = fmaxf(mx, row[j]);
    mx = cu_block_max(mx);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < Lk; j += blockDim.x) {
        float e = j <= last ? expf(row[j] - mx) : 0.0f;
        row[j] = e;
        sum += e;
    }
    const float inv = 1.0f / cu_block_sum(sum);
    for (int j = threadIdx.x; j < Lk; j += blockDim.x) row[j] *= inv;
}

static int blas_attention(cuda_backend *cb, const sd_tensor *q, const sd_tensor *k,
                          const sd_tensor *v, int heads, float scale, bool causal, sd_tensor *out)
{
    const int Lq = q->h * q->w, Lk = k->h * k->w, C = q->c, d = C / heads;
    const cublasComputeType_t ct =
        cb->precision == SD_CUDA_PREC_F32 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32;
    const size_t row_bytes = (size_t)heads * Lk * sizeof(float);
    int64_t qc = (int64_t)(cb->ws_limit / row_bytes);
    if (qc < 1) qc = 1;
    if (qc > Lq) qc = Lq;
    float *S = (float *)cu_workspace(cb, (size_t)qc * row_bytes);
    if (!S) return -1;
    const float one = 1.0f, zero = 0.0f;
    const int threads = Lk >= 1024 ? 256 : Lk >= 256 ? 128 : 32;
    for (int b = 0; b < q->n; b++) {
        const float *qb = q->data + (int64_t)b * Lq * C;
        const float *kb = k->data + (int64_t)b * Lk * C;
        const float *vb = v->data + (int64_t)b * Lk * C;
        float *ob = out->data + (int64_t)b * Lq * C;
        for (int q0 = 0; q0 < Lq; q0 += (int)qc) {
            const int qn = (int)(Lq - q0 < qc ? Lq - q0 : qc);
            /* per head, column-major S^T[Lk][qn] = K_h Q_h^T: A = K (d x Lk
             * column-major, ld C, transposed), B = Q (d x qn, ld C) */
            cublasStatus_t st = cublasGemmStridedBatchedEx(
                cb->blas, CUBLAS_OP_T, CUBLAS_OP_N, Lk, qn, d, &scale, kb, CUDA_R_32F, C,
                (long long)d, qb + (int64_t)q0 * C, CUDA_R_32F, C, (long long)d, &zero, S,
                CUDA_R_32F, Lk, (long long)qn * Lk, heads, ct, CUBLAS_GEMM_DEFAULT);
            if (st != CUBLAS_STATUS_SUCCESS)
                return cu_fail(cb, "attention scores (cuBLAS): %s", cublasGetStatusString(st));
            SD_LAUNCH(softmax_rows_kernel, (unsigned)(heads * qn), threads, 0, cb->stream, S, Lk,
                      (int)causal, q0, qn);
            if (cu_launched(cb, "attention softmax")) return -1;
            /* per head, column-major O^T[d][qn] = V_h^T (d x Lk, ld C) P^T (Lk x qn) */
            st = cublasGemmStridedBatchedEx(cb->blas, CUBLAS_OP_N, CUBLAS_OP_N, d, qn, Lk, &one,
                                            vb, CUDA_R_32F, C, (long long)d, S, CUDA_R_32F, Lk,
                                            (long long)qn * Lk, &zero, ob + (int64_t)q0 * C,
                                            CUDA_R_32F, C, (long long)d, heads, ct,
                                            CUBLAS_GEMM_DEFAULT);
            if (st != CUBLAS_STATUS_SUCCESS)
                return cu_fail(cb, "attention values (cuBLAS): %s", cublasGetStatusString(st));
        }
    }
    return 0;
}

/* blas_attention for any operand types: fp16 operands are converted to
 * float32 copies from the pool first, an fp16 output is written through a
 * float32 one (the fallback paths: head dims past 160, TF32/F32). */
static int blas_attention_any(cuda_backend *cb, const sd_tensor *q, const sd_tensor *k,
                              const sd_tensor *v, int heads, float scale, bool causal,
                              sd_tensor *out)
{
    if (!cu_is_f16(q) && !cu_is_f16(k) && !cu_is_f16(v) && !cu_is_f16(out))
        return blas_attention(cb, q, k, v, heads, scale, causal, out);
    const sd_tensor *orig[4] = { q, k, v, out };
    sd_tensor f32[4] = { *q, *k, *v, *out };
    int rc = 0;
    for (int i = 0; i < 4 && rc == 0; i++) rc = cu_f32_view(cb, orig[i], i < 3, &f32[i]);
    if (rc == 0) rc = blas_attention(cb, &f32[0], &f32[1], &f32[2], heads, scale, causal, &f32[3]);
    for (int i = 0; i < 4; i++)
        if (cu_f32_release(cb, orig[i], &f32[i], i == 3 && rc == 0)) rc = -1;
    return rc;
}

int cu_attention(sd_backend *be, const sd_tensor *q, const sd_tensor *k, const sd_tensor *v,
                 int heads, float scale, bool causal, sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    if (cu_types_ok(cb, "attention", q, k, v, out)) return -1;
    const int C = q->c;
    if (heads < 1 || C % heads != 0)
        return cu_fail(cb, "attention: %d channels do not split into %d heads", C, heads);
    if (k->n != q->n || v->n != q->n || k->c != C || v->c != C || !cu_same_shape(k, v) ||
        !cu_same_shape(q, out))
        return cu_fail(cb, "attention: q/k/v/out shapes do not fit");
    const int Lk = k->h * k->w;
    if (Lk < 1 || q->h * q->w < 1) return cu_fail(cb, "attention: empty sequence");
    if (out->data == q->data || out->data == k->data || out->data == v->data)
        return cu_fail(cb, "attention: output must not alias an input");
    const int d = C / heads;
    if (scale <= 0.0f) scale = 1.0f / sqrtf((float)d);
    if (cb->precision == SD_CUDA_PREC_AUTO || cb->precision == SD_CUDA_PREC_F16 ||
        cb->precision == SD_CUDA_PREC_AUTO_VAE_BF16) {
        int variant = fa_variant(cb, d);
        if (variant >= 0) return flash_attention(cb, variant, q, k, v, heads, scale, causal, out);
    }
    return blas_attention_any(cb, q, k, v, heads, scale, causal, out);
}
