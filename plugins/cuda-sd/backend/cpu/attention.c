/* attention.c - multi-head scaled dot-product attention on token tensors.
 *
 * Non-causal attention with head widths that are multiples of 8 goes to the
 * register-blocked AVX2 kernels of attention_avx2.c when the CPU has AVX2;
 * this file is the general path (causal masks, other widths, other CPUs).
 * Flash-style tiling on the CPU: each task takes one (batch, head, block of
 * query rows), computes the block's scores S = q k^T * scale with an SGEMM
 * into a per-thread buffer of at most ~1 MB, exponentiates in place (row max
 * subtracted), multiplies by v with a second SGEMM and divides each output
 * row by its sum. No [L, L] score matrix per head ever exists: at 512x512
 * (4096 tokens) a block of 64 query rows needs 1 MB where the full matrix of
 * one head would need 64 MB. Heads are strided column slices of q/k/v, which
 * the GEMMs read in place (lda = C).
 */
#include <cblas.h>
#include <math.h>

#include "backend/cpu/attention_fast.h"
#include "backend/cpu/cpu_internal.h"
#include "backend/cpu/vec_math.h"

#define SCORE_FLOATS (256 * 1024)   /* per-thread score block budget */

typedef struct att_ctx {
    const sd_tensor *q, *k, *v;
    sd_tensor *out;
    int heads, d, Lq, Lk, C, block, blocks_per_head;
    float scale;
    bool causal;
    bool avx2;
    float **scratch;
} att_ctx;

#ifdef SD_HAVE_X86
/* exp(row - max) in place, returns the sum. */
SD_AVX2 static float softmax_row_avx2(float *row, int n)
{
    __m256 vm = _mm256_set1_ps(-INFINITY);
    int j = 0;
    for (; j + 8 <= n; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(row + j));
    float m = sd_hmax8(vm);
    for (; j < n; j++) m = row[j] > m ? row[j] : m;
    __m256 vmax = _mm256_set1_ps(m), vs = _mm256_setzero_ps();
    for (j = 0; j + 8 <= n; j += 8) {
        __m256 e = sd_exp8(_mm256_sub_ps(_mm256_loadu_ps(row + j), vmax));
        _mm256_storeu_ps(row + j, e);
        vs = _mm256_add_ps(vs, e);
    }
    float s = sd_hsum8(vs);
    for (; j < n; j++) {
        row[j] = expf(row[j] - m);
        s += row[j];
    }
    return s;
}
#endif

static float softmax_row(float *row, int n)
{
    float m = row[0];
    for (int j = 1; j < n; j++) m = row[j] > m ? row[j] : m;
    float s = 0.0f;
    for (int j = 0; j < n; j++) {
        row[j] = expf(row[j] - m);
        s += row[j];
    }
    return s;
}

static void att_task(void *arg, int64_t task, int thread)
{
    const att_ctx *a = arg;
    int blk = (int)(task % a->blocks_per_head);
    int h = (int)((task / a->blocks_per_head) % a->heads);
    int b = (int)(task / ((int64_t)a->blocks_per_head * a->heads));
    int q0 = blk * a->block;
    int rows = a->Lq - q0 < a->block ? a->Lq - q0 : a->block;
    /* causal: keys beyond the block's last query are never needed */
    int lk = a->causal ? (q0 + rows < a->Lk ? q0 + rows : a->Lk) : a->Lk;
    float *S = a->scratch[thread];
    const int C = a->C;
    const float *Q = a->q->data + ((size_t)b * a->Lq + q0) * C + (size_t)h * a->d;
    const float *K = a->k->data + (size_t)b * a->Lk * C + (size_t)h * a->d;
    const float *V = a->v->data + (size_t)b * a->Lk * C + (size_t)h * a->d;
    float *O = a->out->data + ((size_t)b * a->Lq + q0) * C + (size_t)h * a->d;

    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, lk, a->d, a->scale, Q, C, K, C,
                0.0f, S, lk);
    float inv[512];
    for (int i = 0; i < rows; i++) {
        float *row = S + (size_t)i * lk;
        int valid = lk;
        if (a->causal) {
            valid = q0 + i + 1 < lk ? q0 + i + 1 : lk;
            for (int j = valid; j < lk; j++) row[j] = 0.0f;
        }
        float s;
#ifdef SD_HAVE_X86
        if (a->avx2) s = softmax_row_avx2(row, valid);
        else
#endif
            s = softmax_row(row, valid);
        inv[i] = 1.0f / s;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, a->d, lk, 1.0f, S, lk, V, C,
                0.0f, O, C);
    for (int i = 0; i < rows; i++) {
        float *o = O + (size_t)i * C;
        for (int j = 0; j < a->d; j++) o[j] *= inv[i];
    }
}

int cpu_attention(sd_backend *be, const sd_tensor *q, const sd_tensor *k, const sd_tensor *v,
                  int heads, float scale, bool causal, sd_tensor *out)
{
    cpu_backend *cb = cpu_of(be);
    if (heads < 1 || q->c % heads != 0)
        return sd_backend_fail(be, "attention: %d channels do not split into %d heads", q->c,
                               heads);
    if (k->c != q->c || v->c != q->c || k->n != q->n || v->n != q->n ||
        (size_t)k->h * k->w != (size_t)v->h * v->w || !cpu_same_shape(q, out))
        return sd_backend_fail(be, "attention: q/k/v/out shapes do not fit");
    if (out->data == q->data || out->data == k->data || out->data == v->data)
        return sd_backend_fail(be, "attention: output must not alias an input");
    att_ctx a = { 0 };
    a.q = q;
    a.k = k;
    a.v = v;
    a.out = out;
    a.heads = heads;
    a.C = q->c;
    a.d = q->c / heads;
    a.Lq = q->h * q->w;
    a.Lk = k->h * k->w;
    a.scale = scale > 0.0f ? scale : 1.0f / sqrtf((float)a.d);
    a.causal = causal;
    a.avx2 = cb->avx2;
    if (cb->avx2 && cpu_attention_fast_supported(a.d, causal))
        return cpu_attention_fast(cb, q, k, v, heads, a.scale, out);
    int block = SCORE_FLOATS / a.Lk;
    if (block > 512) block = 512;
    if (block < 16) block = 16;
    if (block > a.Lq) block = a.Lq;
    a.block = block;
    a.blocks_per_head = (a.Lq + block - 1) / block;
    if (cpu_reserve_scratch(cb, (size_t)block * a.Lk) != 0) return -1;
    a.scratch = cb->tscratch;
    sd_pool_run(cb->pool, (int64_t)q->n * heads * a.blocks_per_head, att_task, &a);
    return 0;
}
