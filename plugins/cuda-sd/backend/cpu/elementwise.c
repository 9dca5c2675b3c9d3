/* elementwise.c - activations, GEGLU, adds, concat, upsampling, timestep and
 * token embeddings for the CPU backend (NHWC, parallel over rows). */
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu_internal.h"
#include "backend/cpu/vec_math.h"
#include "backend/cpu/vec_ops.h"
#include "backend/ops_math.h"

/* ---- activations -------------------------------------------------------- */

#ifdef SD_HAVE_X86
SD_AVX2 static void act_avx2(sd_activation act, float *x, size_t n)
{
    size_t i = 0;
    switch (act) {
    case SD_ACT_SILU:
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, sd_silu8(_mm256_loadu_ps(x + i)));
        for (; i < n; i++) x[i] = sd_silu_f(x[i]);
        break;
    case SD_ACT_GELU:
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, sd_gelu8(_mm256_loadu_ps(x + i)));
        for (; i < n; i++) x[i] = sd_gelu_f(x[i]);
        break;
    case SD_ACT_QUICK_GELU:
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(x + i, sd_quick_gelu8(_mm256_loadu_ps(x + i)));
        for (; i < n; i++) x[i] = sd_quick_gelu_f(x[i]);
        break;
    }
}
#endif

void cpu_activation_inplace(const cpu_backend *cb, sd_activation act, float *x, size_t n)
{
#ifdef SD_HAVE_X86
    if (cb->avx2) {
        act_avx2(act, x, n);
        return;
    }
#else
    (void)cb;
#endif
    switch (act) {
    case SD_ACT_SILU:
        for (size_t i = 0; i < n; i++) x[i] = sd_silu_f(x[i]);
        break;
    case SD_ACT_GELU:
        for (size_t i = 0; i < n; i++) x[i] = sd_gelu_f(x[i]);
        break;
    case SD_ACT_QUICK_GELU:
        for (size_t i = 0; i < n; i++) x[i] = sd_quick_gelu_f(x[i]);
        break;
    }
}

typedef struct ew_ctx {
    const cpu_backend *cb;
    const sd_tensor *a, *b;
    sd_tensor *out;
    sd_activation act;
    const float *t;
} ew_ctx;

#define EW_GRAIN 4096

static void act_task(void *arg, int64_t b, int64_t e, int thread)
{
    (void)thread;
    ew_ctx *c = arg;
    if (c->out->data != c->a->data)
        memcpy(c->out->data + b, c->a->data + b, (size_t)(e - b) * sizeof(float));
    cpu_activation_inplace(c->cb, c->act, c->out->data + b, (size_t)(e - b));
}

int cpu_activation(sd_backend *be, sd_activation act, const sd_tensor *x, sd_tensor *out)
{
    if (!cpu_same_shape(x, out))
        return sd_backend_fail(be, "activation: output shape differs from the input");
    ew_ctx c = { cpu_of(be), x, NULL, out, act, NULL };
    sd_pool_for(cpu_of(be)->pool, (int64_t)sd_tensor_numel_of(x), EW_GRAIN, act_task, &c);
    return 0;
}

/* ---- GEGLU -------------------------------------------------------------- */

static void geglu_task(void *arg, int64_t b, int64_t e, int thread)
{
    (void)thread;
    ew_ctx *c = arg;
    int F = c->out->c;
    for (int64_t r = b; r < e; r++) {
        const float *in = c->a->data + (size_t)r * 2 * F;
        float *o = c->out->data + (size_t)r * F;
        memcpy(o, in + F, (size_t)F * sizeof(float));
        cpu_activation_inplace(c->cb, SD_ACT_GELU, o, (size_t)F);
        vec_mul(c->cb->avx2, o, in, (size_t)F);
    }
}

int cpu_geglu(sd_backend *be, const sd_tensor *x, sd_tensor *out)
{
    if (out->n != x->n || out->h != x->h || out->w != x->w || x->c != 2 * out->c)
        return sd_backend_fail(be, "geglu: input must have twice the output's channels");
    if (out->data == x->data)
        return sd_backend_fail(be, "geglu: output must not alias the input");
    ew_ctx c = { cpu_of(be), x, NULL, out, SD_ACT_GELU, NULL };
    sd_pool_for(cpu_of(be)->pool, (int64_t)x->n * x->h * x->w, 16, geglu_task, &c);
    return 0;
}

/* ---- adds --------------------------------------------------------------- */

static void add_task(void *arg, int64_t b, int64_t e, int thread)
{
    (void)thread;
    ew_ctx *c = arg;
    const float *x = c->a->data, *y = c->b->data;
    float *o = c->out->data;
    vec_add(c->cb->avx2, o + b, x + b, y + b, (size_t)(e - b));
}

int cpu_add(sd_backend *be, const sd_tensor *a, const sd_tensor *b, sd_tensor *out)
{
    if (!cpu_same_shape(a, b) || !cpu_same_shape(a, out))
        return sd_backend_fail(be, "add: operand shapes differ");
    ew_ctx c = { cpu_of(be), a, b, out, SD_ACT_SILU, NULL };
    sd_pool_for(cpu_of(be)->pool, (int64_t)sd_tensor_numel_of(a), EW_GRAIN, add_task, &c);
    return 0;
}

static void add_pc_task(void *arg, int64_t b, int64_t e, int thread)
{
    (void)thread;
    ew_ctx *c = arg;
    int C = c->a->c, HW = c->a->h * c->a->w;
    for (int64_t r = b; r < e; r++) {
        const float *v = c->b->data + (size_t)(r / HW) * C;
        const float *x = c->a->data + (size_t)r * C;
        float *o = c->out->data + (size_t)r * C;
        vec_add(c->cb->avx2, o, x, v, (size_t)C);
    }
}

int cpu_add_per_channel(sd_backend *be, const sd_tensor *x, const sd_tensor *v, sd_tensor *out)
{
    if (!cpu_same_shape(x, out) || v->n != x->n || v->c != x->c || v->h * v->w != 1)
        return sd_backend_fail(be, "add_per_channel: shapes do not fit");
    ew_ctx c = { cpu_of(be), x, v, out, SD_ACT_SILU, NULL };
    sd_pool_for(cpu_of(be)->pool, (int64_t)x->n * x->h * x->w, 64, add_pc_task, &c);
    return 0;
}

/* ---- layout ------------------------------------------------------------- */

static void concat_task(void *arg, int64_t b, int64_t e, int thread)
{
    (void)thread;
    ew_ctx *c = arg;
    int ca = c->a->c, cbc = c->b->c;
    for (int64_t r = b; r < e; r++) {
        float *o = c->out->data + (size_t)r * (ca + cbc);
        memcpy(o, c->a->data + (size_t)r * ca, (size_t)ca * sizeof(float));
        memcpy(o + ca, c->b->data + (size_t)r * cbc, (size_t)cbc * sizeof(float));
    }
}

int cpu_concat_channels(sd_backend *be, const sd_tensor *a, const sd_tensor *b, sd_tensor *out)
{
    if (a->n != b->n || a->h != b->h || a->w != b->w || out->n != a->n || out->h != a->h ||
        out->w != a->w || out->c != a->c + b->c)
        return sd_backend_fail(be, "concat_channels: shapes do not fit");
    if (out->data == a->data || out->data == b->data)
        return sd_backend_fail(be, "concat_channels: output must not alias an input");
    ew_ctx c = { cpu_of(be), a, b, out, SD_ACT_SILU, NULL };
    sd_pool_for(cpu_of(be)->pool, (int64_t)a->n * a->h * a->w, 64, concat_task, &c);
    return 0;
}

/* one task item = one output row (n, oy) */
static void up_task(void *arg, int64_t b, int64_t e, int thread)
{
    (void)thread;
    ew_ctx *c = arg;
    const sd_tensor *x = c->a;
    const sd_tensor *o = c->out;
    int C = x->c, W = x->w, OH = o->h, OW = o->w;
    size_t bytes = (size_t)C * sizeof(float);
    bool exact = OH == 2 * x->h && OW == 2 * W;
    float sh = (float)x->h / (float)OH, sw = (float)W / (float)OW;
    for (int64_t r = b; r < e; r++) {
        int img = (int)(r / OH), oy = (int)(r % OH);
        int iy = exact ? oy / 2 : (int)floorf((float)oy * sh);
        if (iy > x->h - 1) iy = x->h - 1;
        const float *in = x->data + (((size_t)img * x->h + iy) * W) * C;
        float *dst = o->data + (size_t)r * OW * C;
        if (exact) {
            for (int ix = 0; ix < W; ix++) {
                memcpy(dst + (size_t)(2 * ix) * C, in + (size_t)ix * C, bytes);
                memcpy(dst + (size_t)(2 * ix + 1) * C, in + (size_t)ix * C, bytes);
            }
            continue;
        }
        for (int ox = 0; ox < OW; ox++) {
            int ix = (int)floorf((float)ox * sw);
            if (ix > W - 1) ix = W - 1;
            memcpy(dst + (size_t)ox * C, in + (size_t)ix * C, bytes);
        }
    }
}

int cpu_upsample_nearest2x(sd_backend *be, const sd_tensor *x, sd_tensor *out)
{
    if (out->n != x->n || out->c != x->c || out->h < x->h || out->w < x->w)
        return sd_backend_fail(be, "upsample_nearest: output [%d,%d,%d,%d] does not enlarge "
                                   "[%d,%d,%d,%d]", out->n, out->h, out->w, out->c, x->n, x->h,
                               x->w, x->c);
    ew_ctx c = { cpu_of(be), x, NULL, out, SD_ACT_SILU, NULL };
    sd_pool_for(cpu_of(be)->pool, (int64_t)x->n * out->h, 4, up_task, &c);
    return 0;
}

/* ---- embeddings --------------------------------------------------------- */

int cpu_timestep_embedding(sd_backend *be, const float *t_host, sd_tensor *out)
{
    int dim = out->c, half = dim / 2;
    if (dim % 2 != 0 || out->h * out->w != 1)
        return sd_backend_fail(be, "timestep_embedding: output must be [N,1,1,even]");
    for (int i = 0; i < out->n; i++) {
        float *o = out->data + (size_t)i * dim;
        for (int k = 0; k < half; k++) {
            float arg = t_host[i] * sd_timestep_freq(k, half);
            o[k] = cosf(arg);
            o[half + k] = sinf(arg);
        }
    }
    return 0;
}

int cpu_embedding(sd_backend *be, const sd_tensor_info *table, const int *ids_host,
                  const sd_tensor_info *pos, sd_tensor *out)
{
    cpu_backend *cb = cpu_of(be);
    int C = out->c, L = out->h * out->w;
    if (!table || table->ndim != 2 || table->shape[1] != C)
        return sd_backend_fail(be, "embedding: table '%s' is not [vocab, %d]",
                               table ? table->name : "(null)", C);
    if (pos && (pos->ndim != 2 || pos->shape[1] != C || pos->shape[0] < L))
        return sd_backend_fail(be, "embedding: positions '%s' are not [>=%d, %d]", pos->name, L,
                               C);
    int64_t vocab = table->shape[0];
    float *prow = NULL;
    if (pos) {
        prow = cpu_slot(cb, CPU_SLOT_B, (size_t)L * C);
        if (!prow) return -1;
        cpu_convert(cb, pos, 0, (int64_t)L * C, prow);
    }
    for (int b = 0; b < out->n; b++) {
        for (int i = 0; i < L; i++) {
            int id = ids_host[(size_t)b * L + i];
            if (id < 0 || id >= vocab)
                return sd_backend_fail(be, "embedding: token id %d outside [0, %lld)", id,
                                       (long long)vocab);
            float *o = out->data + ((size_t)b * L + i) * C;
            cpu_convert(cb, table, (int64_t)id * C, C, o);
            if (prow)
                for (int j = 0; j < C; j++) o[j] += prow[(size_t)i * C + j];
        }
    }
    return 0;
}
