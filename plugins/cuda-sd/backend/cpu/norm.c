/* norm.c - GroupNorm (+ fused SiLU) and LayerNorm on NHWC tensors.
 *
 * Statistics: two passes (mean, then the mean squared deviation), each
 * accumulated per channel over pixel chunks in double and combined into
 * groups afterwards, so long reductions (a 64x64 group holds 40k values) and
 * data far from zero stay as accurate as PyTorch's. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_internal.h"
#include "backend/cpu/vec_ops.h"

/* ---- GroupNorm ---------------------------------------------------------- */

#define GN_CHUNK 256            /* pixels per statistics task */

typedef struct gn_ctx {
    const sd_tensor *x;
    sd_tensor *out;
    int chunks_per_image;
    double *partial;            /* [n][chunks][C] */
    const float *center;        /* [n][C] group mean per channel (pass 2), or NULL */
    /* y = (x - mean[n][c]) * scale[n][c] + beta[c], the order PyTorch uses:
     * a group of one value (1x1 maps, one channel per group) gives exactly
     * beta, where folding the mean into a shift would leave rounding noise
     * that the following layers amplify by 1/sqrt(eps) */
    const float *scale, *shift; /* [n][C]: rstd * gamma, and the group mean */
    const float *beta;
    bool silu;
    const cpu_backend *cb;
} gn_ctx;

/* Per-channel sums over one chunk of pixels: of x (pass 1, center NULL) or
 * of (x - group mean)^2 (pass 2). Two passes keep the variance exact for
 * data with a large mean, where E[x^2] - mean^2 would cancel. */
static void gn_stats_task(void *arg, int64_t task, int thread)
{
    (void)thread;
    gn_ctx *g = arg;
    const sd_tensor *x = g->x;
    int C = x->c, HW = x->h * x->w;
    int img = (int)(task / g->chunks_per_image), chunk = (int)(task % g->chunks_per_image);
    int p0 = chunk * GN_CHUNK, p1 = p0 + GN_CHUNK < HW ? p0 + GN_CHUNK : HW;
    double *sum = g->partial + (size_t)task * C;
    for (int c = 0; c < C; c++) sum[c] = 0.0;
    const float *base = x->data + (size_t)img * HW * C;
    const float *m = g->center ? g->center + (size_t)img * C : NULL;
    /* float partial sums over at most 16 pixels, then into double */
    float fs[2048];
    for (int c0 = 0; c0 < C; c0 += 2048) {
        int cn = C - c0 < 2048 ? C - c0 : 2048;
        for (int q0 = p0; q0 < p1; q0 += 16) {
            int q1 = q0 + 16 < p1 ? q0 + 16 : p1;
            for (int c = 0; c < cn; c++) fs[c] = 0.0f;
            for (int p = q0; p < q1; p++) {
                const float *row = base + (size_t)p * C + c0;
                if (m) vec_acc_sq_dev(g->cb->avx2, fs, row, m + c0, (size_t)cn);
                else vec_acc(g->cb->avx2, fs, row, (size_t)cn);
            }
            for (int c = 0; c < cn; c++) sum[c0 + c] += fs[c];
        }
    }
}

/* Sum of the partials of group gi of image img. */
static double gn_group_sum(const gn_ctx *g, int img, int gi, int cg)
{
    int C = g->x->c;
    double s = 0.0;
    for (int ch = 0; ch < g->chunks_per_image; ch++) {
        const double *ps = g->partial + ((size_t)img * g->chunks_per_image + ch) * C;
        for (int c = gi * cg; c < (gi + 1) * cg; c++) s += ps[c];
    }
    return s;
}

static void gn_apply_task(void *arg, int64_t b, int64_t e, int thread)
{
    (void)thread;
    gn_ctx *g = arg;
    int C = g->x->c, HW = g->x->h * g->x->w;
    for (int64_t r = b; r < e; r++) {
        int img = (int)(r / HW);
        const float *a = g->scale + (size_t)img * C, *s = g->shift + (size_t)img * C;
        const float *in = g->x->data + (size_t)r * C;
        float *o = g->out->data + (size_t)r * C;
        const float *bt = g->beta;
        vec_norm_apply(g->cb->avx2, o, in, s, a, bt, (size_t)C);
        if (g->silu) cpu_activation_inplace(g->cb, SD_ACT_SILU, o, (size_t)C);
    }
}

int cpu_group_norm(sd_backend *be, const sd_tensor *x, int groups, float eps,
                   const sd_tensor_info *gamma, const sd_tensor_info *beta, bool silu,
                   sd_tensor *out)
{
    cpu_backend *cb = cpu_of(be);
    int C = x->c, HW = x->h * x->w;
    if (groups < 1 || C % groups != 0)
        return sd_backend_fail(be, "group_norm: %d channels do not split into %d groups", C,
                               groups);
    if (!cpu_same_shape(x, out))
        return sd_backend_fail(be, "group_norm: output shape differs from the input");
    const float *g = cpu_param(cb, CPU_SLOT_G, gamma, C, "group_norm weight");
    if (!g) return -1;
    const float *bt = cpu_param(cb, CPU_SLOT_BETA, beta, C, "group_norm bias");
    if (!bt) return -1;

    gn_ctx ctx = { 0 };
    ctx.x = x;
    ctx.out = out;
    ctx.silu = silu;
    ctx.cb = cb;
    ctx.chunks_per_image = (HW + GN_CHUNK - 1) / GN_CHUNK;
    size_t tasks = (size_t)x->n * ctx.chunks_per_image;
    ctx.partial = malloc(tasks * C * sizeof(double));
    float *affine = malloc((size_t)x->n * C * 2 * sizeof(float));
    if (!ctx.partial || !affine) {
        free(ctx.partial);
        free(affine);
        return sd_backend_fail(be, "group_norm: out of memory");
    }
    int cg = C / groups;
    double count = (double)HW * cg;
    float *scale = affine, *shift = affine + (size_t)x->n * C;
    /* pass 1: means */
    sd_pool_run(cb->pool, (int64_t)tasks, gn_stats_task, &ctx);
    for (int img = 0; img < x->n; img++)
        for (int gi = 0; gi < groups; gi++) {
            float mean = (float)(gn_group_sum(&ctx, img, gi, cg) / count);
            for (int c = gi * cg; c < (gi + 1) * cg; c++) shift[(size_t)img * C + c] = mean;
        }
    /* pass 2: variances around them */
    ctx.center = shift;
    sd_pool_run(cb->pool, (int64_t)tasks, gn_stats_task, &ctx);
    for (int img = 0; img < x->n; img++)
        for (int gi = 0; gi < groups; gi++) {
            double var = gn_group_sum(&ctx, img, gi, cg) / count;
            double rstd = 1.0 / sqrt(var + (double)eps);
            for (int c = gi * cg; c < (gi + 1) * cg; c++)
                scale[(size_t)img * C + c] = (float)(rstd * g[c]);
        }
    ctx.scale = scale;
    ctx.shift = shift;
    ctx.beta = bt;
    sd_pool_for(cb->pool, (int64_t)x->n * HW, 64, gn_apply_task, &ctx);
    free(ctx.partial);
    free(affine);
    return 0;
}

/* ---- LayerNorm ---------------------------------------------------------- */

typedef struct ln_ctx {
    const sd_tensor *x;
    sd_tensor *out;
    const float *g, *b;
    float eps;
    bool avx2;
} ln_ctx;

static void ln_task(void *arg, int64_t b, int64_t e, int thread)
{
    (void)thread;
    ln_ctx *l = arg;
    int C = l->x->c;
    for (int64_t r = b; r < e; r++) {
        const float *in = l->x->data + (size_t)r * C;
        float *o = l->out->data + (size_t)r * C;
        /* two passes in float (8-lane partial sums), as PyTorch's LayerNorm */
        float m = vec_sum(l->avx2, in, (size_t)C) / (float)C;
        float q = vec_sum_sq_dev(l->avx2, in, m, (size_t)C);
        float rstd = (float)(1.0 / sqrt((double)q / C + (double)l->eps));
        vec_norm_apply_scalar(l->avx2, o, in, m, rstd, l->g, l->b, (size_t)C);
    }
}

int cpu_layer_norm(sd_backend *be, const sd_tensor *x, const sd_tensor_info *gamma,
                   const sd_tensor_info *beta, float eps, sd_tensor *out)
{
    cpu_backend *cb = cpu_of(be);
    if (!cpu_same_shape(x, out))
        return sd_backend_fail(be, "layer_norm: output shape differs from the input");
    ln_ctx l = { x, out, NULL, NULL, eps, cb->avx2 };
    l.g = cpu_param(cb, CPU_SLOT_G, gamma, x->c, "layer_norm weight");
    if (!l.g) return -1;
    l.b = cpu_param(cb, CPU_SLOT_BETA, beta, x->c, "layer_norm bias");
    if (!l.b) return -1;
    sd_pool_for(cb->pool, (int64_t)x->n * x->h * x->w, 16, ln_task, &l);
    return 0;
}
