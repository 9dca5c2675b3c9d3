/* attention_avx2.c - the fast path of cpu_attention (non-causal, head width
 * a multiple of 8, AVX2+FMA CPUs): register-blocked kernels instead of
 * SGEMM calls, because attention's GEMMs are badly shaped for a library
 * (inner dimension 40-160 for q k^T, output width 40-160 for p v).
 *
 * Per (batch, head) K and V are first packed into 16-key / 16-column panels
 * ([Lk/16][d][16] and [d/16][Lk][16], zero padded) so each kernel streams
 * contiguous memory. Then each task takes a block of up to ATT_ROWS query
 * rows of one head:
 *   1. S = q k^T * scale with a 6x16 kernel (12 accumulators), every key
 *      panel reused by all row groups of the block while it sits in L1;
 *   2. per row: exp(s - max) vectorised (as 2^x: the scores come out of
 *      step 1 in log2 units, with each row's max tracked on the way), sum;
 *   3. O = P V with a 6x16 (or 6x8 for the last 8 columns) kernel, scaled
 *      by 1/sum on the store.
 * The S block (ATT_ROWS x Lk floats, 384 KB at 4096 keys) stays in L2; no
 * [L, L] matrix ever exists.
 */
#include "backend/cpu/attention_fast.h"

#include <math.h>
#include <string.h>

#include "backend/cpu/vec_math.h"

#ifdef SD_HAVE_X86

#define ATT_ROWS 24             /* query rows per task (multiple of 6) */

/* ---- packing ------------------------------------------------------------ */

/* kp[panel][e][16] = k[(panel*16 + t) * C + e] for t < 16 (0 beyond Lk). */
static void pack_k(const float *k, int C, int Lk, int d, float *kp)
{
    int panels = (Lk + 15) / 16;
    for (int p = 0; p < panels; p++) {
        float *dst = kp + (size_t)p * d * 16;
        for (int t = 0; t < 16; t++) {
            int j = p * 16 + t;
            if (j < Lk) {
                const float *row = k + (size_t)j * C;
                for (int e = 0; e < d; e++) dst[e * 16 + t] = row[e];
            } else {
                for (int e = 0; e < d; e++) dst[e * 16 + t] = 0.0f;
            }
        }
    }
}

/* vp[cp][j][16] = v[j * C + cp*16 + t] (0 beyond d or Lk rows up to the
 * padded length). */
static void pack_v(const float *v, int C, int Lk, int lk_pad, int d, float *vp)
{
    int cpanels = (d + 15) / 16;
    for (int cp = 0; cp < cpanels; cp++) {
        float *dst = vp + (size_t)cp * lk_pad * 16;
        int w = d - cp * 16 < 16 ? d - cp * 16 : 16;
        for (int j = 0; j < lk_pad; j++) {
            float *o = dst + (size_t)j * 16;
            if (j < Lk) {
                const float *row = v + (size_t)j * C + cp * 16;
                for (int t = 0; t < w; t++) o[t] = row[t];
                for (int t = w; t < 16; t++) o[t] = 0.0f;
            } else {
                memset(o, 0, 16 * sizeof(float));
            }
        }
    }
}

/* ---- kernels ------------------------------------------------------------ */

/* s[r][0..15] = scale * sum_e q[r][e] kp[e][0..15], r < 6; q rows at stride
 * qs, s rows at stride ss; rmax[r*8..] keeps each row's running max (8
 * lanes). */
SD_AVX2 static void qk_6x16(const float *q, int qs, const float *kp, int d, float scale,
                            float *s, int ss, float *rmax)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *q0 = q, *q1 = q + qs, *q2 = q + 2 * qs, *q3 = q + 3 * qs, *q4 = q + 4 * qs,
                *q5 = q + 5 * qs;
    for (int e = 0; e < d; e++) {
        __m256 b0 = _mm256_load_ps(kp + e * 16), b1 = _mm256_load_ps(kp + e * 16 + 8);
        __m256 a = _mm256_broadcast_ss(q0 + e);
        c00 = _mm256_fmadd_ps(a, b0, c00);
        c01 = _mm256_fmadd_ps(a, b1, c01);
        a = _mm256_broadcast_ss(q1 + e);
        c10 = _mm256_fmadd_ps(a, b0, c10);
        c11 = _mm256_fmadd_ps(a, b1, c11);
        a = _mm256_broadcast_ss(q2 + e);
        c20 = _mm256_fmadd_ps(a, b0, c20);
        c21 = _mm256_fmadd_ps(a, b1, c21);
        a = _mm256_broadcast_ss(q3 + e);
        c30 = _mm256_fmadd_ps(a, b0, c30);
        c31 = _mm256_fmadd_ps(a, b1, c31);
        a = _mm256_broadcast_ss(q4 + e);
        c40 = _mm256_fmadd_ps(a, b0, c40);
        c41 = _mm256_fmadd_ps(a, b1, c41);
        a = _mm256_broadcast_ss(q5 + e);
        c50 = _mm256_fmadd_ps(a, b0, c50);
        c51 = _mm256_fmadd_ps(a, b1, c51);
    }
    __m256 sc = _mm256_set1_ps(scale);
    __m256 acc[12] = { c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51 };
    for (int r = 0; r < 6; r++) {
        __m256 lo = _mm256_mul_ps(acc[2 * r], sc), hi = _mm256_mul_ps(acc[2 * r + 1], sc);
        _mm256_storeu_ps(s + (size_t)r * ss, lo);
        _mm256_storeu_ps(s + (size_t)r * ss + 8, hi);
        __m256 m = _mm256_max_ps(_mm256_load_ps(rmax + 8 * r), _mm256_max_ps(lo, hi));
        _mm256_store_ps(rmax + 8 * r, m);
    }
}

/* acc[r][0..15] = sum_j p[r][j] vp[j][0..15] for j < n, r < 6; the result
 * times inv[r] goes to o[r * os + t] for t < w. */
SD_AVX2 static void pv_6x16(const float *p, int ps, const float *vp, int n, const float *inv,
                            float *o, int os, int w)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *p0 = p, *p1 = p + ps, *p2 = p + 2 * ps, *p3 = p + 3 * ps, *p4 = p + 4 * ps,
                *p5 = p + 5 * ps;
    for (int j = 0; j < n; j++) {
        __m256 b0 = _mm256_load_ps(vp + (size_t)j * 16), b1 = _mm256_load_ps(vp + (size_t)j * 16 + 8);
        __m256 a = _mm256_broadcast_ss(p0 + j);
        c00 = _mm256_fmadd_ps(a, b0, c00);
        c01 = _mm256_fmadd_ps(a, b1, c01);
        a = _mm256_broadcast_ss(p1 + j);
        c10 = _mm256_fmadd_ps(a, b0, c10);
        c11 = _mm256_fmadd_ps(a, b1, c11);
        a = _mm256_broadcast_ss(p2 + j);
        c20 = _mm256_fmadd_ps(a, b0, c20);
        c21 = _mm256_fmadd_ps(a, b1, c21);
        a = _mm256_broadcast_ss(p3 + j);
        c30 = _mm256_fmadd_ps(a, b0, c30);
        c31 = _mm256_fmadd_ps(a, b1, c31);
        a = _mm256_broadcast_ss(p4 + j);
        c40 = _mm256_fmadd_ps(a, b0, c40);
        c41 = _mm256_fmadd_ps(a, b1, c41);
        a = _mm256_broadcast_ss(p5 + j);
        c50 = _mm256_fmadd_ps(a, b0, c50);
        c51 = _mm256_fmadd_ps(a, b1, c51);
    }
    __m256 acc[12] = { c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51 };
    for (int r = 0; r < 6; r++) {
        __m256 sc = _mm256_set1_ps(inv[r]);
        __m256 lo = _mm256_mul_ps(acc[2 * r], sc), hi = _mm256_mul_ps(acc[2 * r + 1], sc);
        float *dst = o + (size_t)r * os;
        if (w == 16) {
            _mm256_storeu_ps(dst, lo);
            _mm256_storeu_ps(dst + 8, hi);
        } else {
            float tmp[16];
            _mm256_storeu_ps(tmp, lo);
            _mm256_storeu_ps(tmp + 8, hi);
            memcpy(dst, tmp, (size_t)w * sizeof(float));
        }
    }
}

/* 2^x for x <= 0 (scores are in log2 units, max subtracted): Cephes exp2f
 * polynomial on [-0.5, 0.5] (relative error ~2e-7), exponent added as an
 * integer; below -126 the result flushes to ~1e-38. */
SD_AVX2 static inline __m256 exp2_nonpos8(__m256 x)
{
    x = _mm256_max_ps(x, _mm256_set1_ps(-126.0f));
    __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_sub_ps(x, n);
    __m256 p = _mm256_set1_ps(1.535336188319500E-4f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.339887440266574E-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.618437357674640E-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.550332471162809E-2f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.402264791363012E-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931472028550421E-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}

/* 2^(row - m) in place over n entries (n_pad - n zeros follow); returns the
 * sum. */
SD_AVX2 static float softmax_row(float *row, int n, int n_pad, float m)
{
    __m256 vmax = _mm256_set1_ps(m), vs = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 e = exp2_nonpos8(_mm256_sub_ps(_mm256_loadu_ps(row + j), vmax));
        _mm256_storeu_ps(row + j, e);
        vs = _mm256_add_ps(vs, e);
    }
    float s = sd_hsum8(vs);
    for (; j < n; j++) {
        row[j] = exp2f(row[j] - m);
        s += row[j];
    }
    for (; j < n_pad; j++) row[j] = 0.0f;
    return s;
}

/* ---- driver ------------------------------------------------------------- */

typedef struct fast_ctx {
    const sd_tensor *q, *k, *v;
    sd_tensor *out;
    int heads, d, Lq, Lk, lk_pad, C, blocks;
    float scale;
    float *kpack, *vpack;       /* [B][heads][...] */
    float **scratch;            /* per thread: S block + q copy */
} fast_ctx;

static size_t kpack_floats(const fast_ctx *f) { return (size_t)f->lk_pad * f->d; }
static size_t vpack_floats(const fast_ctx *f) { return (size_t)((f->d + 15) / 16) * f->lk_pad * 16; }

static void pack_task(void *arg, int64_t task, int thread)
{
    (void)thread;
    fast_ctx *f = arg;
    int b = (int)(task / f->heads), h = (int)(task % f->heads);
    const float *k = f->k->data + (size_t)b * f->Lk * f->C + (size_t)h * f->d;
    const float *v = f->v->data + (size_t)b * f->Lk * f->C + (size_t)h * f->d;
    pack_k(k, f->C, f->Lk, f->d, f->kpack + (size_t)task * kpack_floats(f));
    pack_v(v, f->C, f->Lk, f->lk_pad, f->d, f->vpack + (size_t)task * vpack_floats(f));
}

SD_AVX2 static void block_task(void *arg, int64_t task, int thread)
{
    fast_ctx *f = arg;
    int blk = (int)(task % f->blocks);
    int bh = (int)(task / f->blocks);
    int b = bh / f->heads, h = bh % f->heads;
    int q0 = blk * ATT_ROWS;
    int rows = f->Lq - q0 < ATT_ROWS ? f->Lq - q0 : ATT_ROWS;
    int groups = (rows + 5) / 6;
    const int C = f->C, d = f->d, lk = f->lk_pad;
    const float *kp = f->kpack + (size_t)bh * kpack_floats(f);
    const float *vp = f->vpack + (size_t)bh * vpack_floats(f);
    float *S = f->scratch[thread];
    /* query rows copied contiguously (rows beyond the end repeat the last
     * one, so every kernel call has 6 valid rows) */
    float *Q = S + (size_t)ATT_ROWS * lk;
    for (int r = 0; r < groups * 6; r++) {
        int src = q0 + (r < rows ? r : rows - 1);
        memcpy(Q + (size_t)r * d, f->q->data + ((size_t)b * f->Lq + src) * C + (size_t)h * d,
               (size_t)d * sizeof(float));
    }
    /* 1. scores in log2 units (scale * log2 e), key panel outer so each
     * panel is reused from L1; padded keys (zeros) must not raise the max,
     * so the last panel's padding is handled after the fact */
    _Alignas(32) float rmax[ATT_ROWS * 8], junk[6 * 8];
    for (int i = 0; i < ATT_ROWS * 8; i++) rmax[i] = -INFINITY;
    for (int i = 0; i < 6 * 8; i++) junk[i] = -INFINITY;
    int full_panels = f->Lk / 16;
    float scale2 = f->scale * 1.44269504088896341f;
    for (int p = 0; p < lk / 16; p++) {
        /* a partial last panel writes its max into a scratch copy */
        bool partial = p >= full_panels;
        for (int g = 0; g < groups; g++)
            qk_6x16(Q + (size_t)g * 6 * d, d, kp + (size_t)p * d * 16, d, scale2,
                    S + (size_t)g * 6 * lk + p * 16, lk, partial ? junk : rmax + g * 48);
    }
    /* 2. softmax numerators and sums */
    float inv[ATT_ROWS];
    for (int r = 0; r < groups * 6; r++) {
        float *row = S + (size_t)r * lk;
        float m = sd_hmax8(_mm256_load_ps(rmax + 8 * r));
        for (int j = full_panels * 16; j < f->Lk; j++) m = row[j] > m ? row[j] : m;
        inv[r] = 1.0f / softmax_row(row, f->Lk, lk, m);
    }
    /* 3. output; rows beyond the end go to a dummy buffer */
    float dummy[6 * 16];
    float *O = f->out->data + ((size_t)b * f->Lq + q0) * C + (size_t)h * d;
    for (int cp = 0; cp * 16 < d; cp++) {
        int w = d - cp * 16 < 16 ? d - cp * 16 : 16;
        for (int g = 0; g < groups; g++) {
            bool full = g * 6 + 6 <= rows;
            float *dst = full ? O + (size_t)g * 6 * C + cp * 16 : dummy;
            pv_6x16(S + (size_t)g * 6 * lk, lk, vp + (size_t)cp * lk * 16, f->Lk, inv + g * 6,
                    dst, full ? C : 16, w);
            if (!full)
                for (int r = 0; g * 6 + r < rows; r++)
                    memcpy(O + (size_t)(g * 6 + r) * C + cp * 16, dummy + r * 16,
                           (size_t)w * sizeof(float));
        }
    }
}

bool cpu_attention_fast_supported(int head_dim, bool causal)
{
    return !causal && head_dim % 8 == 0 && head_dim <= 4096;
}

int cpu_attention_fast(cpu_backend *cb, const sd_tensor *q, const sd_tensor *k,
                       const sd_tensor *v, int heads, float scale, sd_tensor *out)
{
    fast_ctx f = { 0 };
    f.q = q;
    f.k = k;
    f.v = v;
    f.out = out;
    f.heads = heads;
    f.C = q->c;
    f.d = q->c / heads;
    f.Lq = q->h * q->w;
    f.Lk = k->h * k->w;
    f.lk_pad = (f.Lk + 15) / 16 * 16;
    f.scale = scale;
    f.blocks = (f.Lq + ATT_ROWS - 1) / ATT_ROWS;
    size_t per_head = kpack_floats(&f) + vpack_floats(&f);
    size_t pack_n = (size_t)q->n * heads * per_head;
    float *pack = cb->base.ops->alloc(&cb->base, pack_n);
    if (!pack) return sd_backend_fail(&cb->base, "attention: out of memory packing k/v");
    f.kpack = pack;
    f.vpack = pack + (size_t)q->n * heads * kpack_floats(&f);
    if (cpu_reserve_scratch(cb, (size_t)ATT_ROWS * f.lk_pad + (size_t)ATT_ROWS * f.d) != 0) {
        cb->base.ops->release(&cb->base, pack);
        return -1;
    }
    f.scratch = cb->tscratch;
    sd_pool_run(cb->pool, (int64_t)q->n * heads, pack_task, &f);
    sd_pool_run(cb->pool, (int64_t)q->n * heads * f.blocks, block_task, &f);
    cb->base.ops->release(&cb->base, pack);
    return 0;
}

#else /* not x86 */

bool cpu_attention_fast_supported(int head_dim, bool causal)
{
    (void)head_dim;
    (void)causal;
    return false;
}

int cpu_attention_fast(cpu_backend *cb, const sd_tensor *q, const sd_tensor *k,
                       const sd_tensor *v, int heads, float scale, sd_tensor *out)
{
    (void)q; (void)k; (void)v; (void)heads; (void)scale; (void)out;
    return sd_backend_fail(&cb->base, "attention: no fast path on this CPU");
}

#endif
