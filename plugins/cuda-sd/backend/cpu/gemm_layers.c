/* gemm_layers.c - the GEMM-shaped layers: 2-D convolution on NHWC tensors
 * as blocked im2col + SGEMM, and linear layers (the same code path with the
 * input rows as the patches).
 *
 * The output pixels (all images of the batch together, M = N*OH*OW rows)
 * are cut into tiles; each task gathers its tile's input patches into a
 * per-thread buffer [rows, kh*kw*Cin] (bounded at ~32 MB so a 512x512 VAE
 * layer never needs a gigabyte-sized im2col matrix), pre-fills its output
 * rows with bias (+ residual) and lets a single-threaded SGEMM accumulate
 * patches x weights^T into them. When there are fewer rows than output
 * channels (16x16 and 8x8 UNet levels) the threads split the channels
 * instead, over patches gathered once (see run_tiles). Weights are converted
 * and reordered once per call to [Cout][kh][kw][Cin] so patch rows match
 * NHWC memory order. 1x1 stride-1 convolutions skip the gather: the input
 * rows are the patches.
 */
#include <cblas.h>
#include <string.h>

#include "backend/cpu/cpu_internal.h"
#include "backend/cpu/vec_ops.h"

/* im2col tile budget per thread, in floats. */
#define TILE_FLOATS ((size_t)8 << 20)
/* largest shared patch matrix (few rows, many channels), in floats */
#define SHARED_COL_FLOATS ((size_t)64 << 20)

typedef struct conv_ctx {
    const sd_tensor *x;
    const sd_conv_params *p;
    int kh, kw;
    int oh, ow;
    int M, N, K;
    int tile_rows, n_tiles, n_parts, part_cols;
    bool direct;                /* 1x1 stride 1: A is x itself */
    const float *w;             /* [N][K] */
    const float *bias;          /* [N] or NULL */
    const float *residual;      /* [M][N] or NULL */
    float *out;                 /* [M][N] */
    float **scratch;
    float *shared_col;          /* all patches [M][K], gathered up front */
    bool avx2;
} conv_ctx;

static inline int wrap(int i, int n)
{
    i %= n;
    return i < 0 ? i + n : i;
}

static void gather_rows(const conv_ctx *c, int r0, int r1, float *col)
{
    const sd_tensor *x = c->x;
    const int cin = x->c, H = x->h, W = x->w, s = c->p->stride;
    const bool circ = c->p->pad_mode == SD_PAD_CIRCULAR;
    const size_t row_bytes = (size_t)cin * sizeof(float);
    const int plane = c->oh * c->ow;
    for (int r = r0; r < r1; r++) {
        int img = r / plane, rem = r % plane;
        int oy = rem / c->ow, ox = rem % c->ow;
        float *dst = col + (size_t)(r - r0) * c->K;
        const float *base = x->data + (size_t)img * H * W * cin;
        for (int ky = 0; ky < c->kh; ky++) {
            int iy = oy * s - c->p->pad_top + ky;
            bool row_in = iy >= 0 && iy < H;
            if (!row_in && circ) {
                iy = wrap(iy, H);
                row_in = true;
            }
            int ix0 = ox * s - c->p->pad_left;
            if (row_in && ix0 >= 0 && ix0 + c->kw <= W) {
                /* the whole kernel row is inside: one contiguous copy */
                memcpy(dst, base + ((size_t)iy * W + ix0) * cin, row_bytes * (size_t)c->kw);
                dst += (size_t)cin * c->kw;
                continue;
            }
            for (int kx = 0; kx < c->kw; kx++, dst += cin) {
                int ix = ix0 + kx;
                bool in = row_in && ix >= 0 && ix < W;
                if (!in && circ && row_in) {
                    ix = wrap(ix, W);
                    in = true;
                }
                if (in) memcpy(dst, base + ((size_t)iy * W + ix) * cin, row_bytes);
                else memset(dst, 0, row_bytes);
            }
        }
    }
}

static void gather_task(void *arg, int64_t b, int64_t e, int thread)
{
    (void)thread;
    const conv_ctx *c = arg;
    gather_rows(c, (int)b, (int)e, c->shared_col + (size_t)b * c->K);
}

static void conv_task(void *arg, int64_t task, int thread)
{
    const conv_ctx *c = arg;
    int tile = (int)(task / c->n_parts), part = (int)(task % c->n_parts);
    int r0 = tile * c->tile_rows;
    int r1 = r0 + c->tile_rows < c->M ? r0 + c->tile_rows : c->M;
    int c0 = part * c->part_cols;
    int c1 = c0 + c->part_cols < c->N ? c0 + c->part_cols : c->N;
    if (r1 <= r0 || c1 <= c0) return;

    /* pre-fill: bias (+ residual), then accumulate with beta = 1 */
    size_t w = (size_t)(c1 - c0);
    for (int r = r0; r < r1; r++) {
        float *o = c->out + (size_t)r * c->N + c0;
        const float *res = c->residual ? c->residual + (size_t)r * c->N + c0 : NULL;
        if (c->bias && res) vec_add(c->avx2, o, c->bias + c0, res, w);
        else if (c->bias) memcpy(o, c->bias + c0, w * sizeof(float));
        else if (res && res != o) memcpy(o, res, w * sizeof(float));
    }
    float beta = c->bias || c->residual ? 1.0f : 0.0f;
    const float *A;
    if (c->direct) {
        A = c->x->data + (size_t)r0 * c->K;
    } else if (c->shared_col) {
        A = c->shared_col + (size_t)r0 * c->K;
    } else {
        float *col = c->scratch[thread];
        gather_rows(c, r0, r1, col);
        A = col;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, c1 - c0, c->K, 1.0f, A, c->K,
                c->w + (size_t)c0 * c->K, c->K, beta, c->out + (size_t)r0 * c->N + c0, c->N);
}

static int run_tiles(cpu_backend *cb, conv_ctx *cp);

typedef struct reorder_ctx {
    const cpu_backend *cb;
    const sd_tensor_info *w;
    float *dst;
    int cin, taps;
    float **scratch;
} reorder_ctx;

/* [Cout][Cin][taps] (file) -> [Cout][taps][Cin], one output channel per
 * item. */
static void reorder_task(void *arg, int64_t b, int64_t e, int thread)
{
    reorder_ctx *r = arg;
    int64_t k = (int64_t)r->cin * r->taps;
    float *tmp = r->scratch[thread];
    for (int64_t co = b; co < e; co++) {
        cpu_convert_serial(r->cb, r->w, co * k, k, tmp);
        float *d = r->dst + co * k;
        for (int ci = 0; ci < r->cin; ci++)
            for (int t = 0; t < r->taps; t++) d[(size_t)t * r->cin + ci] = tmp[(size_t)ci * r->taps + t];
    }
}

int cpu_conv2d(sd_backend *be, const sd_tensor *x, const sd_tensor_info *w,
               const sd_tensor_info *b, const sd_conv_params *p, const sd_tensor *residual,
               sd_tensor *out)
{
    cpu_backend *cb = cpu_of(be);
    if (!w || w->ndim != 4)
        return sd_backend_fail(be, "conv2d: weight '%s' is not 4-D", w ? w->name : "(null)");
    int cout = (int)w->shape[0], cin = (int)w->shape[1];
    int kh = (int)w->shape[2], kw = (int)w->shape[3];
    if (cin != x->c)
        return sd_backend_fail(be, "conv2d '%s': input has %d channels, weight expects %d",
                               w->name, x->c, cin);
    if (p->stride < 1 || p->pad_top < 0 || p->pad_left < 0 || p->pad_bottom < 0 ||
        p->pad_right < 0)
        return sd_backend_fail(be, "conv2d '%s': bad stride/padding", w->name);
    int oh = sd_conv_out_size(x->h, kh, p->stride, p->pad_top, p->pad_bottom);
    int ow = sd_conv_out_size(x->w, kw, p->stride, p->pad_left, p->pad_right);
    if (oh < 1 || ow < 1 || out->n != x->n || out->h != oh || out->w != ow || out->c != cout)
        return sd_backend_fail(be,
                               "conv2d '%s': output is [%d,%d,%d,%d], expected [%d,%d,%d,%d]",
                               w->name, out->n, out->h, out->w, out->c, x->n, oh, ow, cout);
    if (residual && !cpu_same_shape(residual, out))
        return sd_backend_fail(be, "conv2d '%s': residual shape differs from the output",
                               w->name);
    if (out->data == x->data)
        return sd_backend_fail(be, "conv2d '%s': output must not alias the input", w->name);

    conv_ctx c = { 0 };
    c.x = x;
    c.p = p;
    c.kh = kh;
    c.kw = kw;
    c.oh = oh;
    c.ow = ow;
    c.M = x->n * oh * ow;
    c.N = cout;
    c.K = kh * kw * cin;
    c.direct = kh == 1 && kw == 1 && p->stride == 1 && p->pad_top == 0 && p->pad_left == 0 &&
               p->pad_bottom == 0 && p->pad_right == 0;
    c.residual = residual ? residual->data : NULL;
    c.out = out->data;

    if (b) {
        c.bias = cpu_param(cb, CPU_SLOT_B, b, cout, "conv2d bias");
        if (!c.bias) return -1;
    }
    if (kh * kw == 1) {
        c.w = cpu_param(cb, CPU_SLOT_W, w, (int64_t)cout * cin, "conv2d weight");
        if (!c.w) return -1;
    } else {
        float *wr = cpu_slot(cb, CPU_SLOT_W, (size_t)cout * c.K);
        if (!wr || cpu_reserve_scratch(cb, (size_t)c.K) != 0) return -1;
        if (w->dtype != SD_DTYPE_F32 && w->dtype != SD_DTYPE_F16 && w->dtype != SD_DTYPE_BF16)
            return sd_backend_fail(be, "conv2d weight '%s' has dtype %s", w->name,
                                   sd_dtype_name(w->dtype));
        reorder_ctx r = { cb, w, wr, cin, kh * kw, cb->tscratch };
        sd_pool_for(cb->pool, cout, 8, reorder_task, &r);
        c.w = wr;
    }

    return run_tiles(cb, &c);
}

/* Cuts c->M x c->N into tasks and runs them. Each thread packs (inside
 * SGEMM) the part of A and B it uses, so the bigger operand is the one to
 * split: many output rows (high-resolution levels) -> tiles of rows, each
 * gathering its own bounded im2col block; few rows and many channels (the
 * 16x16 and 8x8 levels, where a weight matrix is up to 59 MB) -> the patches
 * are gathered once into a shared buffer and the threads split the output
 * channels, so no thread packs the whole weight matrix. */
static int run_tiles(cpu_backend *cb, conv_ctx *cp)
{
    conv_ctx c = *cp;
    int T = cb->n_threads;
    c.avx2 = cb->avx2;
    c.n_parts = 1;
    if (T > 1 && c.M < c.N && c.N >= 32 * T &&
        (c.direct || (size_t)c.M * c.K <= SHARED_COL_FLOATS)) {
        /* phase 1 (convs): all patches, gathered in parallel by row chunks */
        float *col = NULL;
        if (!c.direct) {
            col = cb->base.ops->alloc(&cb->base, (size_t)c.M * c.K);
            if (!col) return sd_backend_fail(&cb->base, "conv2d: out of memory for patches");
            c.shared_col = col;
            sd_pool_for(cb->pool, c.M, 16, gather_task, &c);
        }
        /* phase 2: output-channel parts over all rows */
        c.tile_rows = c.M;
        c.n_tiles = 1;
        c.n_parts = T;
        c.part_cols = ((c.N + T - 1) / T + 15) / 16 * 16;
        sd_pool_run(cb->pool, T, conv_task, &c);
        if (col) cb->base.ops->release(&cb->base, col);
        return 0;
    }
    size_t rows_cap = TILE_FLOATS / (size_t)c.K;
    if (rows_cap < 64) rows_cap = 64;
    int n_tiles = (int)(((size_t)c.M + rows_cap - 1) / rows_cap);
    n_tiles = (n_tiles + T - 1) / T * T;       /* balanced over the threads */
    c.tile_rows = (c.M + n_tiles - 1) / n_tiles;
    c.n_tiles = (c.M + c.tile_rows - 1) / c.tile_rows;
    c.part_cols = c.N;
    if (!c.direct && cpu_reserve_scratch(cb, (size_t)c.tile_rows * c.K) != 0) return -1;
    c.scratch = cb->tscratch;
    sd_pool_run(cb->pool, (int64_t)c.n_tiles * c.n_parts, conv_task, &c);
    return 0;
}

int cpu_linear(sd_backend *be, const sd_tensor *x, const sd_tensor_info *w,
               const sd_tensor_info *b, const sd_tensor *residual, sd_tensor *out)
{
    cpu_backend *cb = cpu_of(be);
    if (!w) return sd_backend_fail(be, "linear: missing weight");
    int K = x->c, N = out->c;
    /* rows are n*h*w on both sides; how they are split into h and w may differ
     * (tokens [B,1,L,C] vs pixels [B,H,W,C]) */
    if (out->n != x->n || (int64_t)out->h * out->w != (int64_t)x->h * x->w)
        return sd_backend_fail(be, "linear '%s': output rows differ from the input rows", w->name);
    if (residual && !cpu_same_shape(residual, out))
        return sd_backend_fail(be, "linear '%s': residual shape differs from the output", w->name);
    if (w->ndim < 2 || w->shape[0] != N)
        return sd_backend_fail(be, "linear '%s': weight has %lld rows, output has %d features",
                               w->name, (long long)(w->ndim ? w->shape[0] : 0), N);
    if (out->data == x->data)
        return sd_backend_fail(be, "linear '%s': output must not alias the input", w->name);
    sd_conv_params p = { 1, 0, 0, 0, 0, SD_PAD_ZEROS };
    conv_ctx c = { 0 };
    c.x = x;
    c.p = &p;
    c.kh = c.kw = 1;
    c.oh = x->h;
    c.ow = x->w;
    c.M = x->n * x->h * x->w;
    c.N = N;
    c.K = K;
    c.direct = true;
    c.residual = residual ? residual->data : NULL;
    c.out = out->data;
    c.w = cpu_param(cb, CPU_SLOT_W, w, (int64_t)N * K, "linear weight");
    if (!c.w) return -1;
    if (b) {
        c.bias = cpu_param(cb, CPU_SLOT_B, b, N, "linear bias");
        if (!c.bias) return -1;
    }
    return run_tiles(cb, &c);
}
