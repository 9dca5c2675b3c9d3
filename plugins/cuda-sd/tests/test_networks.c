/* test_networks.c - the CPU backend's ops and the three networks.
 *
 * 1. Ops against naive double-precision loops on random data: conv2d (3x3,
 *    1x1, stride 2, asymmetric and circular padding, bias, residual in
 *    place, F32/F16/BF16 weights, tiles spanning images), linear, group norm
 *    (+SiLU), layer norm, attention (self, cross, causal, several heads and
 *    query blocks), activations, GEGLU, upsampling, concat, timestep
 *    embedding.
 * 2. Every file of golden/models_golden/ ({kind}_{text_encoder,unet,vae})
 *    against every checkpoint golden/models/tiny_{kind}.*.safetensors,
 *    within the README's single-pass tolerance (1e-4 absolute). The files
 *    are found by listing the folder, the tensors compared are the ones the
 *    file holds.
 */
#include "golden.h"

#include <dirent.h>

#include "backend/cpu_backend.h"
#include "backend/ops.h"
#include "backend/ops_math.h"
#include "engine/clip.h"
#include "engine/family.h"
#include "engine/half.h"
#include "engine/unet.h"
#include "engine/vae.h"

#define GOLDEN_TOL 1e-4

/* ---- helpers --------------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static float frand(void)    /* uniform in [-1, 1) */
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static float *rand_array(size_t n, float scale)
{
    float *a = malloc(n * sizeof(float));
    assert_non_null(a);
    for (size_t i = 0; i < n; i++) a[i] = frand() * scale;
    return a;
}

/* A weight tensor over caller-owned bytes (F32, or F16/BF16 converted from
 * the given floats, which are then rounded to what the tensor holds). */
typedef struct test_weight {
    sd_tensor_info info;
    void *bytes;
} test_weight;

static void make_weight(test_weight *tw, const char *name, sd_dtype dt, float *values, int ndim,
                        int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    memset(tw, 0, sizeof *tw);
    int64_t dims[4] = { d0, d1, d2, d3 };
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        tw->info.shape[i] = dims[i];
        n *= dims[i];
    }
    tw->info.name = name;
    tw->info.dtype = dt;
    tw->info.ndim = ndim;
    if (dt == SD_DTYPE_F32) {
        tw->bytes = malloc((size_t)n * 4);
        memcpy(tw->bytes, values, (size_t)n * 4);
        tw->info.nbytes = (size_t)n * 4;
    } else {
        uint16_t *h = malloc((size_t)n * 2);
        for (int64_t i = 0; i < n; i++) {
            h[i] = dt == SD_DTYPE_F16 ? sd_f32_to_f16(values[i]) : sd_f32_to_bf16(values[i]);
            values[i] = dt == SD_DTYPE_F16 ? sd_f16_to_f32(h[i]) : sd_bf16_to_f32(h[i]);
        }
        tw->bytes = h;
        tw->info.nbytes = (size_t)n * 2;
    }
    tw->info.data = tw->bytes;
}

static sd_backend *backend(void)
{
    char err[256];
    sd_backend *be = sd_backend_cpu_create(2, err, sizeof err);
    if (!be) fail_msg("%s", err);
    return be;
}

static void new_tensor(sd_backend *be, sd_tensor *t, int n, int h, int w, int c)
{
    if (sd_tensor_new(be, t, n, h, w, c) != 0) fail_msg("%s", sd_backend_error(be));
}

static void ok(sd_backend *be, int rc)
{
    if (rc != 0) fail_msg("op failed: %s", sd_backend_error(be));
}

static void assert_close(const char *what, const float *got, const double *want, size_t n,
                         double tol)
{
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= tol * (1.0 + fabs(want[i]))))
            fail_msg("%s: element %zu is %.9g, expected %.9g", what, i, (double)got[i], want[i]);
    }
}

/* ---- conv2d ---------------------------------------------------------------- */

typedef struct conv_case {
    int n, h, w, cin, cout, k, stride, pt, pl, pb, pr;
    sd_pad_mode mode;
    sd_dtype dt;
    bool bias, residual;
} conv_case;

static void run_conv_case(sd_backend *be, const conv_case *cc)
{
    int oh = sd_conv_out_size(cc->h, cc->k, cc->stride, cc->pt, cc->pb);
    int ow = sd_conv_out_size(cc->w, cc->k, cc->stride, cc->pl, cc->pr);
    size_t nin = (size_t)cc->n * cc->h * cc->w * cc->cin;
    size_t nout = (size_t)cc->n * oh * ow * cc->cout;
    float *x = rand_array(nin, 1.0f);
    float *wv = rand_array((size_t)cc->cout * cc->cin * cc->k * cc->k, 0.5f);
    float *bv = rand_array((size_t)cc->cout, 0.5f);
    float *rv = rand_array(nout, 1.0f);
    test_weight w, b;
    make_weight(&w, "w", cc->dt, wv, 4, cc->cout, cc->cin, cc->k, cc->k);
    make_weight(&b, "b", cc->dt, bv, 1, cc->cout, 0, 0, 0);

    double *want = calloc(nout, sizeof(double));
    for (int img = 0; img < cc->n; img++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++)
                for (int co = 0; co < cc->cout; co++) {
                    double s = cc->bias ? bv[co] : 0.0;
                    for (int ky = 0; ky < cc->k; ky++)
                        for (int kx = 0; kx < cc->k; kx++) {
                            int iy = oy * cc->stride - cc->pt + ky;
                            int ix = ox * cc->stride - cc->pl + kx;
                            if (cc->mode == SD_PAD_CIRCULAR) {
                                iy = (iy % cc->h + cc->h) % cc->h;
                                ix = (ix % cc->w + cc->w) % cc->w;
                            } else if (iy < 0 || iy >= cc->h || ix < 0 || ix >= cc->w) {
                                continue;
                            }
                            for (int ci = 0; ci < cc->cin; ci++)
                                s += (double)x[(((size_t)img * cc->h + iy) * cc->w + ix) * cc->cin + ci] *
                                     wv[(((size_t)co * cc->cin + ci) * cc->k + ky) * cc->k + kx];
                        }
                    size_t o = (((size_t)img * oh + oy) * ow + ox) * cc->cout + co;
                    want[o] = s + (cc->residual ? rv[o] : 0.0);
                }

    sd_tensor tx, tout;
    new_tensor(be, &tx, cc->n, cc->h, cc->w, cc->cin);
    new_tensor(be, &tout, cc->n, oh, ow, cc->cout);
    ok(be, sd_upload(be, x, &tx));
    if (cc->residual) ok(be, sd_upload(be, rv, &tout));   /* residual in place */
    sd_conv_params p = { cc->stride, cc->pt, cc->pl, cc->pb, cc->pr, cc->mode };
    ok(be, sd_conv2d(be, &tx, &w.info, cc->bias ? &b.info : NULL, &p,
                     cc->residual ? &tout : NULL, &tout));
    float *got = malloc(nout * sizeof(float));
    ok(be, sd_download(be, &tout, got));
    char what[160];
    snprintf(what, sizeof what, "conv %dx%d s%d pad %d,%d,%d,%d %s %s cin %d cout %d", cc->k,
             cc->k, cc->stride, cc->pt, cc->pl, cc->pb, cc->pr,
             cc->mode == SD_PAD_CIRCULAR ? "circular" : "zeros", sd_dtype_name(cc->dt), cc->cin,
             cc->cout);
    assert_close(what, got, want, nout, 2e-5);
    sd_tensor_free(be, &tx);
    sd_tensor_free(be, &tout);
    free(x); free(wv); free(bv); free(rv); free(want); free(got);
    free(w.bytes); free(b.bytes);
}

static void test_conv2d(void **state)
{
    (void)state;
    sd_backend *be = backend();
    const conv_case cases[] = {
        /* n  h   w  cin cout k s pt pl pb pr */
        { 2, 9, 7, 5, 6, 3, 1, 1, 1, 1, 1, SD_PAD_ZEROS, SD_DTYPE_F32, true, false },
        { 2, 9, 7, 5, 6, 3, 1, 1, 1, 1, 1, SD_PAD_ZEROS, SD_DTYPE_F16, true, true },
        { 1, 8, 8, 4, 3, 3, 2, 1, 1, 1, 1, SD_PAD_ZEROS, SD_DTYPE_BF16, false, false },
        { 1, 8, 10, 3, 4, 3, 2, 0, 0, 1, 1, SD_PAD_ZEROS, SD_DTYPE_F32, true, false },
        { 2, 6, 5, 3, 4, 3, 1, 1, 1, 1, 1, SD_PAD_CIRCULAR, SD_DTYPE_F32, false, true },
        { 2, 6, 6, 7, 9, 1, 1, 0, 0, 0, 0, SD_PAD_ZEROS, SD_DTYPE_F16, true, true },
        /* enough rows and channels for several tiles and N-split parts */
        { 2, 24, 20, 40, 70, 3, 1, 1, 1, 1, 1, SD_PAD_ZEROS, SD_DTYPE_F32, true, true },
        { 1, 2, 2, 64, 96, 3, 1, 1, 1, 1, 1, SD_PAD_ZEROS, SD_DTYPE_F16, true, false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_conv_case(be, &cases[i]);
    sd_backend_destroy(be);
}

static void test_conv2d_rejects_bad_shapes(void **state)
{
    (void)state;
    sd_backend *be = backend();
    float wv[2 * 3 * 9] = { 0 };
    test_weight w;
    make_weight(&w, "conv.weight", SD_DTYPE_F32, wv, 4, 2, 3, 3, 3);
    sd_tensor x, out;
    new_tensor(be, &x, 1, 4, 4, 4);         /* 4 channels, weight wants 3 */
    new_tensor(be, &out, 1, 4, 4, 2);
    sd_conv_params p = { 1, 1, 1, 1, 1, SD_PAD_ZEROS };
    assert_int_equal(sd_conv2d(be, &x, &w.info, NULL, &p, NULL, &out), -1);
    assert_non_null(strstr(sd_backend_error(be), "conv.weight"));
    sd_tensor_free(be, &x);
    sd_tensor_free(be, &out);
    free(w.bytes);
    sd_backend_destroy(be);
}

/* ---- linear ---------------------------------------------------------------- */

static void test_linear(void **state)
{
    (void)state;
    sd_backend *be = backend();
    int rows = 150, K = 37, N = 53;
    float *x = rand_array((size_t)rows * K, 1.0f), *wv = rand_array((size_t)N * K, 0.5f);
    float *bv = rand_array((size_t)N, 0.5f), *rv = rand_array((size_t)rows * N, 1.0f);
    test_weight w, b;
    make_weight(&w, "w", SD_DTYPE_F16, wv, 2, N, K, 0, 0);
    make_weight(&b, "b", SD_DTYPE_F32, bv, 1, N, 0, 0, 0);
    double *want = malloc((size_t)rows * N * sizeof(double));
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < N; j++) {
            double s = bv[j] + rv[(size_t)r * N + j];
            for (int k = 0; k < K; k++) s += (double)x[(size_t)r * K + k] * wv[(size_t)j * K + k];
            want[(size_t)r * N + j] = s;
        }
    sd_tensor tx, to;
    new_tensor(be, &tx, 2, 5, 15, K);       /* rows as pixels in, tokens out */
    new_tensor(be, &to, 2, 1, 75, N);
    ok(be, sd_upload(be, x, &tx));
    ok(be, sd_upload(be, rv, &to));
    ok(be, sd_linear(be, &tx, &w.info, &b.info, &to, &to));
    float *got = malloc((size_t)rows * N * sizeof(float));
    ok(be, sd_download(be, &to, got));
    assert_close("linear", got, want, (size_t)rows * N, 2e-5);
    sd_tensor_free(be, &tx);
    sd_tensor_free(be, &to);
    free(x); free(wv); free(bv); free(rv); free(want); free(got);
    free(w.bytes); free(b.bytes);
    sd_backend_destroy(be);
}

/* ---- norms ----------------------------------------------------------------- */

static void check_group_norm(sd_backend *be, int n, int h, int w, int C, int G, bool silu,
                             float offset)
{
    size_t numel = (size_t)n * h * w * C;
    float *x = rand_array(numel, 3.0f);
    for (size_t i = 0; i < numel; i++) x[i] += offset;   /* large mean: stability */
    float *gv = rand_array((size_t)C, 1.0f), *bv = rand_array((size_t)C, 1.0f);
    test_weight g, b;
    make_weight(&g, "gn.weight", SD_DTYPE_F32, gv, 1, C, 0, 0, 0);
    make_weight(&b, "gn.bias", SD_DTYPE_F16, bv, 1, C, 0, 0, 0);
    double *want = malloc(numel * sizeof(double));
    int cg = C / G;
    for (int img = 0; img < n; img++)
        for (int gi = 0; gi < G; gi++) {
            double s = 0, q = 0, cnt = (double)h * w * cg;
            for (int p = 0; p < h * w; p++)
                for (int c = gi * cg; c < (gi + 1) * cg; c++) s += x[((size_t)img * h * w + p) * C + c];
            double mean = s / cnt;
            for (int p = 0; p < h * w; p++)
                for (int c = gi * cg; c < (gi + 1) * cg; c++) {
                    double d = x[((size_t)img * h * w + p) * C + c] - mean;
                    q += d * d;
                }
            double rstd = 1.0 / sqrt(q / cnt + 1e-5);
            for (int p = 0; p < h * w; p++)
                for (int c = gi * cg; c < (gi + 1) * cg; c++) {
                    size_t i = ((size_t)img * h * w + p) * C + c;
                    double y = (x[i] - mean) * rstd * gv[c] + bv[c];
                    want[i] = silu ? y / (1.0 + exp(-y)) : y;
                }
        }
    sd_tensor t;
    new_tensor(be, &t, n, h, w, C);
    ok(be, sd_upload(be, x, &t));
    ok(be, sd_group_norm(be, &t, G, 1e-5f, &g.info, &b.info, silu, &t));   /* in place */
    float *got = malloc(numel * sizeof(float));
    ok(be, sd_download(be, &t, got));
    assert_close(silu ? "group_norm+silu" : "group_norm", got, want, numel, 1e-5);
    sd_tensor_free(be, &t);
    free(x); free(gv); free(bv); free(want); free(got);
    free(g.bytes); free(b.bytes);
}

static void test_group_norm(void **state)
{
    (void)state;
    sd_backend *be = backend();
    check_group_norm(be, 2, 17, 19, 64, 32, false, 0.0f);   /* > one stats chunk */
    check_group_norm(be, 2, 17, 19, 64, 32, true, 0.0f);
    check_group_norm(be, 1, 3, 5, 12, 4, true, 100.0f);
    check_group_norm(be, 2, 1, 1, 32, 32, false, 0.0f);      /* one value per group: beta */
    sd_backend_destroy(be);
}

static void test_layer_norm(void **state)
{
    (void)state;
    sd_backend *be = backend();
    int rows = 40, C = 48;
    float *x = rand_array((size_t)rows * C, 2.0f);
    float *gv = rand_array((size_t)C, 1.0f), *bv = rand_array((size_t)C, 1.0f);
    test_weight g, b;
    make_weight(&g, "ln.weight", SD_DTYPE_F16, gv, 1, C, 0, 0, 0);
    make_weight(&b, "ln.bias", SD_DTYPE_F32, bv, 1, C, 0, 0, 0);
    double *want = malloc((size_t)rows * C * sizeof(double));
    for (int r = 0; r < rows; r++) {
        double s = 0, q = 0;
        for (int c = 0; c < C; c++) s += x[r * C + c];
        double mean = s / C;
        for (int c = 0; c < C; c++) q += (x[r * C + c] - mean) * (x[r * C + c] - mean);
        double rstd = 1.0 / sqrt(q / C + 1e-5);
        for (int c = 0; c < C; c++) want[r * C + c] = (x[r * C + c] - mean) * rstd * gv[c] + bv[c];
    }
    sd_tensor t, o;
    new_tensor(be, &t, 2, 1, rows / 2, C);
    new_tensor(be, &o, 2, 1, rows / 2, C);
    ok(be, sd_upload(be, x, &t));
    ok(be, sd_layer_norm(be, &t, &g.info, &b.info, 1e-5f, &o));
    float *got = malloc((size_t)rows * C * sizeof(float));
    ok(be, sd_download(be, &o, got));
    assert_close("layer_norm", got, want, (size_t)rows * C, 1e-5);
    sd_tensor_free(be, &t);
    sd_tensor_free(be, &o);
    free(x); free(gv); free(bv); free(want); free(got);
    free(g.bytes); free(b.bytes);
    sd_backend_destroy(be);
}

/* ---- attention ------------------------------------------------------------- */

static void check_attention(sd_backend *be, int B, int Lq, int Lk, int C, int heads, bool causal)
{
    float *q = rand_array((size_t)B * Lq * C, 2.0f);
    float *k = rand_array((size_t)B * Lk * C, 2.0f);
    float *v = rand_array((size_t)B * Lk * C, 1.0f);
    size_t nout = (size_t)B * Lq * C;
    double *want = malloc(nout * sizeof(double));
    double *s = malloc((size_t)Lk * sizeof(double));
    int d = C / heads;
    double scale = 1.0 / sqrt((double)d);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < Lq; i++) {
                int n = causal ? i + 1 : Lk;
                double m = -INFINITY, sum = 0;
                for (int j = 0; j < n; j++) {
                    double dot = 0;
                    for (int e = 0; e < d; e++)
                        dot += (double)q[((size_t)b * Lq + i) * C + h * d + e] *
                               k[((size_t)b * Lk + j) * C + h * d + e];
                    s[j] = dot * scale;
                    if (s[j] > m) m = s[j];
                }
                for (int j = 0; j < n; j++) sum += (s[j] = exp(s[j] - m));
                for (int e = 0; e < d; e++) {
                    double o = 0;
                    for (int j = 0; j < n; j++) o += s[j] * v[((size_t)b * Lk + j) * C + h * d + e];
                    want[((size_t)b * Lq + i) * C + h * d + e] = o / sum;
                }
            }
    sd_tensor tq, tk, tv, to;
    new_tensor(be, &tq, B, 1, Lq, C);
    new_tensor(be, &tk, B, 1, Lk, C);
    new_tensor(be, &tv, B, 1, Lk, C);
    new_tensor(be, &to, B, 1, Lq, C);
    ok(be, sd_upload(be, q, &tq));
    ok(be, sd_upload(be, k, &tk));
    ok(be, sd_upload(be, v, &tv));
    ok(be, sd_attention(be, &tq, &tk, &tv, heads, 0.0f, causal, &to));
    float *got = malloc(nout * sizeof(float));
    ok(be, sd_download(be, &to, got));
    char what[96];
    snprintf(what, sizeof what, "attention B%d Lq%d Lk%d C%d heads%d%s", B, Lq, Lk, C, heads,
             causal ? " causal" : "");
    assert_close(what, got, want, nout, 2e-5);
    sd_tensor_free(be, &tq);
    sd_tensor_free(be, &tk);
    sd_tensor_free(be, &tv);
    sd_tensor_free(be, &to);
    free(q); free(k); free(v); free(want); free(s); free(got);
}

static void test_attention(void **state)
{
    (void)state;
    sd_backend *be = backend();
    check_attention(be, 2, 64, 64, 32, 2, false);     /* self */
    check_attention(be, 2, 64, 77, 40, 5, false);     /* cross, odd head width */
    check_attention(be, 2, 50, 77, 80, 2, false);     /* head width 40 = 16+16+8 */
    check_attention(be, 2, 30, 30, 24, 2, false);     /* width 12: the general path */
    check_attention(be, 3, 77, 77, 16, 4, true);      /* text encoder */
    check_attention(be, 1, 700, 700, 8, 1, false);    /* several query blocks */
    check_attention(be, 1, 600, 600, 8, 2, true);     /* causal across blocks */
    sd_backend_destroy(be);
}

/* ---- element-wise ---------------------------------------------------------- */

static void test_elementwise(void **state)
{
    (void)state;
    sd_backend *be = backend();
    int n = 2, h = 3, w = 5, C = 24;
    size_t numel = (size_t)n * h * w * C;
    float *x = rand_array(numel, 6.0f);
    float *got = malloc(2 * numel * 4 * sizeof(float));
    double *want = malloc(numel * 4 * sizeof(double));
    sd_tensor t, o;
    new_tensor(be, &t, n, h, w, C);
    new_tensor(be, &o, n, h, w, C);
    ok(be, sd_upload(be, x, &t));

    /* activations against the scalar formulas in double */
    const sd_activation acts[] = { SD_ACT_SILU, SD_ACT_GELU, SD_ACT_QUICK_GELU };
    for (int a = 0; a < 3; a++) {
        ok(be, sd_activation_op(be, acts[a], &t, &o));
        ok(be, sd_download(be, &o, got));
        for (size_t i = 0; i < numel; i++) {
            double v = x[i];
            want[i] = acts[a] == SD_ACT_SILU ? v / (1 + exp(-v))
                    : acts[a] == SD_ACT_GELU ? 0.5 * v * (1 + erf(v / sqrt(2.0)))
                                             : v / (1 + exp(-1.702 * v));
        }
        assert_close("activation", got, want, numel, 1e-6);
    }

    /* GEGLU: first half * gelu(second half) */
    sd_tensor half;
    new_tensor(be, &half, n, h, w, C / 2);
    ok(be, sd_geglu(be, &t, &half));
    ok(be, sd_download(be, &half, got));
    for (size_t r = 0; r < numel / C; r++)
        for (int j = 0; j < C / 2; j++) {
            double a = x[r * C + j], g = x[r * C + C / 2 + j];
            want[r * (C / 2) + j] = a * 0.5 * g * (1 + erf(g / sqrt(2.0)));
        }
    /* the vectorised erf is within 1.5e-7 absolute; a (up to 6) scales it */
    assert_close("geglu", got, want, numel / 2, 2e-6);

    /* add, add_per_channel, concat, upsample */
    ok(be, sd_add(be, &t, &t, &o));
    ok(be, sd_download(be, &o, got));
    for (size_t i = 0; i < numel; i++) want[i] = 2.0 * x[i];
    assert_close("add", got, want, numel, 0);

    sd_tensor vec;
    new_tensor(be, &vec, n, 1, 1, C);
    float *vv = rand_array((size_t)n * C, 1.0f);
    ok(be, sd_upload(be, vv, &vec));
    ok(be, sd_add_per_channel(be, &t, &vec, &o));
    ok(be, sd_download(be, &o, got));
    for (size_t i = 0; i < numel; i++)
        want[i] = (double)x[i] + vv[(i / ((size_t)h * w * C)) * C + i % C];
    assert_close("add_per_channel", got, want, numel, 1e-7);

    sd_tensor cat;
    new_tensor(be, &cat, n, h, w, C + C / 2);
    ok(be, sd_concat_channels(be, &t, &half, &cat));
    float *halfv = malloc(numel / 2 * sizeof(float));
    ok(be, sd_download(be, &half, halfv));
    ok(be, sd_download(be, &cat, got));
    for (size_t r = 0; r < numel / C; r++)
        for (int j = 0; j < C + C / 2; j++)
            want[r * (C + C / 2) + j] = j < C ? x[r * C + j] : halfv[r * (C / 2) + j - C];
    assert_close("concat", got, want, numel * 3 / 2, 0);

    sd_tensor up;
    new_tensor(be, &up, n, 2 * h, 2 * w, C);
    ok(be, sd_upsample_nearest2x(be, &t, &up));
    ok(be, sd_download(be, &up, got));
    for (int img = 0; img < n; img++)
        for (int y = 0; y < 2 * h; y++)
            for (int xx = 0; xx < 2 * w; xx++)
                for (int c = 0; c < C; c++)
                    want[(((size_t)img * 2 * h + y) * 2 * w + xx) * C + c] =
                        x[(((size_t)img * h + y / 2) * w + xx / 2) * C + c];
    assert_close("upsample", got, want, numel * 4, 0);

    /* uneven sizes (UNet latents not a multiple of 8): PyTorch's nearest
     * with an explicit size, src = floor(dst * in / out) */
    sd_tensor odd;
    new_tensor(be, &odd, n, h + 2, w + 3, C);          /* 3x5 -> 5x8 */
    ok(be, sd_upsample_nearest2x(be, &t, &odd));
    ok(be, sd_download(be, &odd, got));
    for (int img = 0; img < n; img++)
        for (int y = 0; y < h + 2; y++)
            for (int xx = 0; xx < w + 3; xx++) {
                int sy = (int)floorf((float)y * ((float)h / (float)(h + 2)));
                int sx = (int)floorf((float)xx * ((float)w / (float)(w + 3)));
                for (int c = 0; c < C; c++)
                    want[(((size_t)img * (h + 2) + y) * (w + 3) + xx) * C + c] =
                        x[(((size_t)img * h + sy) * w + sx) * C + c];
            }
    assert_close("upsample to an uneven size", got, want, (size_t)n * (h + 2) * (w + 3) * C, 0);
    sd_tensor_free(be, &odd);

    /* NCHW round trip */
    float *nchw = malloc(numel * sizeof(float));
    ok(be, sd_download_nchw(be, &t, nchw));
    for (int img = 0; img < n; img++)
        for (int c = 0; c < C; c++)
            for (int p = 0; p < h * w; p++)
                assert_true(nchw[((size_t)img * C + c) * h * w + p] == x[((size_t)img * h * w + p) * C + c]);

    /* timestep embedding: cos first, frequencies exp(-ln(1e4) k / half) */
    sd_tensor te;
    new_tensor(be, &te, 2, 1, 1, 32);
    const float ts[2] = { 999.0f, 12.625f };
    ok(be, sd_timestep_embedding(be, ts, &te));
    ok(be, sd_download(be, &te, got));
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 16; k++) {
            double f = exp(-log(10000.0) * k / 16.0);
            want[i * 32 + k] = cos(ts[i] * f);
            want[i * 32 + 16 + k] = sin(ts[i] * f);
        }
    /* the argument t*f carries float rounding: ~1e-4 relative at t = 999 */
    assert_close("timestep_embedding", got, want, 64, 2e-4);

    sd_tensor_free(be, &t); sd_tensor_free(be, &o); sd_tensor_free(be, &half);
    sd_tensor_free(be, &vec); sd_tensor_free(be, &cat); sd_tensor_free(be, &up);
    sd_tensor_free(be, &te);
    free(x); free(got); free(want); free(vv); free(halfv); free(nchw);
    sd_backend_destroy(be);
}

/* ---- golden networks ------------------------------------------------------- */

typedef struct golden_model {
    sd_model_file *file;
    sd_family_info fam;
} golden_model;

/* The checkpoints golden/models/tiny_<kind>.*.safetensors, opened. Returns
 * how many (at most max). */
static int open_models(const char *kind, golden_model *out, int max)
{
    char dir[1024], prefix[128], path[1400], err[512];
    golden_path(dir, sizeof dir, "models");
    snprintf(prefix, sizeof prefix, "tiny_%s.", kind);
    DIR *d = opendir(dir);
    if (!d) fail_msg("cannot list %s", dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 || len < 12 ||
            strcmp(e->d_name + len - 12, ".safetensors") != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (sd_model_file_open(path, &out[n].file, err, sizeof err) != 0) fail_msg("%s", err);
        if (sd_family_detect(out[n].file, &out[n].fam, err, sizeof err) != 0) fail_msg("%s", err);
        if (sd_family_check_supported(out[n].file, &out[n].fam, err, sizeof err) != 0)
            fail_msg("%s", err);
        n++;
    }
    closedir(d);
    if (n == 0) fail_msg("no checkpoint %s/tiny_%s.*.safetensors", dir, kind);
    return n;
}

static void close_models(golden_model *m, int n)
{
    for (int i = 0; i < n; i++) sd_model_file_close(m[i].file);
}

static int *golden_ids(const sd_model_file *g, int64_t *n)
{
    int64_t *ids64 = golden_i64(g, "input_ids", n);
    int *ids = malloc((size_t)*n * sizeof(int));
    for (int64_t i = 0; i < *n; i++) ids[i] = (int)ids64[i];
    free(ids64);
    return ids;
}

static void compare(const char *file, const char *model, const char *what, const float *got,
                    const float *want, size_t n)
{
    char label[512];
    const char *base = strrchr(model, '/');
    snprintf(label, sizeof label, "%s vs %s: %s", file, base ? base + 1 : model, what);
    print_message("%-70s max abs diff %.2e\n", label, golden_max_abs_diff(got, want, n, NULL));
    golden_assert_close(label, got, want, n, GOLDEN_TOL);
}

static void check_text_encoder(const char *kind, const char *rel, int *checked)
{
    sd_model_file *g = golden_open(rel);
    golden_model models[4];
    int nm = open_models(kind, models, 4);
    sd_backend *be = backend();
    char err[512];
    for (int mi = 0; mi < nm; mi++) {
        const char *mname = sd_model_file_path(models[mi].file);
        sd_text_encoder *enc;
        if (sd_text_encoder_create(models[mi].file, &models[mi].fam, be, &enc, err, sizeof err))
            fail_msg("%s", err);
        int64_t n;
        int *ids = golden_ids(g, &n);
        int D = sd_text_encoder_width(enc), L = sd_text_encoder_layers(enc);
        float *out = malloc((size_t)n * D * sizeof(float));
        struct { const char *name; int layer; bool norm; } outs[] = {
            { "last_hidden_state", L, true },       /* clip_skip 1 */
            { "clip_skip2_ln", L - 1, true },       /* clip_skip 2, SD1 */
            { "penultimate_ln", L - 1, true },      /* SD2's output */
            { "clip_skip2_raw", L - 1, false },
        };
        for (size_t k = 0; k < sizeof outs / sizeof outs[0]; k++) {
            if (!golden_has(g, outs[k].name)) continue;
            float *want = golden_f32(g, outs[k].name, NULL);
            if (outs[k].norm) {   /* through the public clip_skip entry point */
                if (sd_text_encode(enc, ids, (int)n, L - outs[k].layer + 1, out, err, sizeof err))
                    fail_msg("%s", err);
            } else if (sd_text_encode_hidden(enc, ids, (int)n, outs[k].layer, false, out, err,
                                             sizeof err)) {
                fail_msg("%s", err);
            }
            compare(rel, mname, outs[k].name, out, want, (size_t)n * D);
            free(want);
            (*checked)++;
        }
        if (golden_has(g, "hidden_states")) {
            int64_t total;
            float *hs = golden_f32(g, "hidden_states", &total);
            assert_int_equal(total, (int64_t)(L + 1) * n * D);
            for (int layer = 0; layer <= L; layer++) {
                if (sd_text_encode_hidden(enc, ids, (int)n, layer, false, out, err, sizeof err))
                    fail_msg("%s", err);
                char what[64];
                snprintf(what, sizeof what, "hidden_states[%d]", layer);
                compare(rel, mname, what, out, hs + (size_t)layer * n * D, (size_t)n * D);
            }
            free(hs);
            (*checked)++;
        }
        free(ids);
        free(out);
        sd_text_encoder_destroy(enc);
    }
    sd_backend_destroy(be);
    close_models(models, nm);
    sd_model_file_close(g);
}

static void check_unet(const char *kind, const char *rel, int *checked)
{
    sd_model_file *g = golden_open(rel);
    golden_model models[4];
    int nm = open_models(kind, models, 4);
    sd_backend *be = backend();
    char err[512];
    const sd_tensor_info *xi = golden_tensor(g, "x");
    const sd_tensor_info *ci = golden_tensor(g, "context");
    int B = (int)xi->shape[0], C = (int)xi->shape[1], H = (int)xi->shape[2], W = (int)xi->shape[3];
    int L = (int)ci->shape[1];
    float *x = golden_f32(g, "x", NULL), *ctx = golden_f32(g, "context", NULL);
    for (int mi = 0; mi < nm; mi++) {
        const char *mname = sd_model_file_path(models[mi].file);
        sd_unet *u;
        if (sd_unet_create(models[mi].file, &models[mi].fam, be, &u, err, sizeof err))
            fail_msg("%s", err);
        assert_int_equal(sd_unet_in_channels(u), C);
        assert_int_equal(sd_unet_context_dim(u), (int)ci->shape[2]);
        /* every (timesteps_X, out_X) pair the file holds */
        for (size_t i = 0; i < sd_model_file_count(g); i++) {
            const sd_tensor_info *t = sd_model_file_at(g, i);
            if (strncmp(t->name, "timesteps_", 10) != 0) continue;
            char oname[128];
            snprintf(oname, sizeof oname, "out_%s", t->name + 10);
            if (!golden_has(g, oname)) continue;
            float *ts = golden_f32(g, t->name, NULL);
            int64_t n;
            float *want = golden_f32(g, oname, &n);
            float *out = malloc((size_t)n * sizeof(float));
            if (sd_unet_forward(u, x, ts, ctx, L, B, H, W, out, err, sizeof err))
                fail_msg("%s", err);
            compare(rel, mname, oname, out, want, (size_t)n);
            free(ts); free(want); free(out);
            (*checked)++;
        }
        sd_unet_destroy(u);
    }
    free(x);
    free(ctx);
    sd_backend_destroy(be);
    close_models(models, nm);
    sd_model_file_close(g);
}

static void check_vae(const char *kind, const char *rel, int *checked)
{
    sd_model_file *g = golden_open(rel);
    golden_model models[4];
    int nm = open_models(kind, models, 4);
    sd_backend *be = backend();
    char err[512];
    for (int mi = 0; mi < nm; mi++) {
        const char *mname = sd_model_file_path(models[mi].file);
        sd_vae *v;
        if (sd_vae_create(models[mi].file, &models[mi].fam, be, &v, err, sizeof err))
            fail_msg("%s", err);
        if (golden_has(g, "dec_z") && golden_has(g, "dec_out")) {
            const sd_tensor_info *zi = golden_tensor(g, "dec_z");
            int B = (int)zi->shape[0], h = (int)zi->shape[2], w = (int)zi->shape[3];
            int64_t nz, n;
            float *z = golden_f32(g, "dec_z", &nz), *want = golden_f32(g, "dec_out", &n);
            assert_int_equal(n, (int64_t)B * 3 * h * w * 64);
            float *img = malloc((size_t)n * sizeof(float));
            if (sd_vae_decode(v, z, B, h, w, img, err, sizeof err)) fail_msg("%s", err);
            compare(rel, mname, "dec_out", img, want, (size_t)n);
            if (golden_has(g, "dec_latents")) {   /* the pipeline's scale factor */
                float *lat = golden_f32(g, "dec_latents", NULL);
                for (int64_t i = 0; i < nz; i++) lat[i] /= sd_vae_scale_factor(v);
                compare(rel, mname, "dec_latents / scale factor", lat, z, (size_t)nz);
                free(lat);
            }
            free(z); free(want); free(img);
            (*checked)++;
        }
        if (golden_has(g, "enc_image")) {
            assert_true(sd_vae_has_encoder(v));
            const sd_tensor_info *ii = golden_tensor(g, "enc_image");
            int B = (int)ii->shape[0], H = (int)ii->shape[2], W = (int)ii->shape[3];
            float *im = golden_f32(g, "enc_image", NULL);
            size_t half = (size_t)B * 4 * (H / 8) * (W / 8);
            float *mom = malloc(2 * half * sizeof(float)), *mean = malloc(half * sizeof(float));
            float *lv = malloc(half * sizeof(float));
            if (sd_vae_encode_moments(v, im, B, H, W, mom, err, sizeof err)) fail_msg("%s", err);
            if (golden_has(g, "enc_moments")) {
                float *want = golden_f32(g, "enc_moments", NULL);
                compare(rel, mname, "enc_moments", mom, want, 2 * half);
                free(want);
            }
            if (sd_vae_encode(v, im, B, H, W, mean, lv, err, sizeof err)) fail_msg("%s", err);
            if (golden_has(g, "enc_mean")) {
                float *want = golden_f32(g, "enc_mean", NULL);
                compare(rel, mname, "enc_mean", mean, want, half);
                free(want);
            }
            if (golden_has(g, "enc_logvar")) {
                float *want = golden_f32(g, "enc_logvar", NULL);
                compare(rel, mname, "enc_logvar", lv, want, half);
                free(want);
            }
            if (golden_has(g, "enc_eps") && golden_has(g, "enc_sample_z")) {
                float *eps = golden_f32(g, "enc_eps", NULL), *want = golden_f32(g, "enc_sample_z", NULL);
                for (size_t i = 0; i < half; i++) mean[i] += expf(0.5f * lv[i]) * eps[i];
                compare(rel, mname, "enc_sample_z", mean, want, half);
                free(eps); free(want);
            }
            free(im); free(mom); free(mean); free(lv);
            (*checked)++;
        }
        sd_vae_destroy(v);
    }
    sd_backend_destroy(be);
    close_models(models, nm);
    sd_model_file_close(g);
}

static void test_golden_networks(void **state)
{
    (void)state;
    char dir[1024];
    golden_path(dir, sizeof dir, "models_golden");
    DIR *d = opendir(dir);
    if (!d) fail_msg("cannot list %s", dir);
    int files = 0, checked = 0;
    struct dirent *e;
    static const char *const components[] = { "_text_encoder.safetensors", "_unet.safetensors",
                                               "_vae.safetensors" };
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        for (int c = 0; c < 3; c++) {
            size_t sl = strlen(components[c]);
            if (len <= sl || strcmp(e->d_name + len - sl, components[c]) != 0) continue;
            char kind[128], rel[400];
            snprintf(kind, sizeof kind, "%.*s", (int)(len - sl), e->d_name);
            snprintf(rel, sizeof rel, "models_golden/%s", e->d_name);
            if (c == 0) check_text_encoder(kind, rel, &checked);
            else if (c == 1) check_unet(kind, rel, &checked);
            else check_vae(kind, rel, &checked);
            files++;
        }
    }
    closedir(d);
    if (files == 0) fail_msg("no golden network files in %s", dir);
    assert_true(checked >= files);
}

/* Missing tensors are reported by name, not crashed on. */
static void test_missing_tensor_is_reported(void **state)
{
    (void)state;
    /* a safetensors file with one unrelated tensor */
    const char *json = "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    size_t jl = strlen(json), hl = (jl + 7) / 8 * 8;
    unsigned char *buf = calloc(1, 8 + hl + 4);
    uint64_t h64 = hl;
    memcpy(buf, &h64, 8);
    memset(buf + 8, ' ', hl);
    memcpy(buf + 8, json, jl);
    char err[512];
    sd_model_file *f;
    if (sd_model_file_open_memory(buf, 8 + hl + 4, "empty.safetensors", &f, err, sizeof err))
        fail_msg("%s", err);
    sd_family_info fam;
    memset(&fam, 0, sizeof fam);
    fam.unet.context_dim = 32;
    fam.unet.num_heads = 2;
    fam.text.layout = SD_TEXT_CLIP_HF;
    fam.text.prefix = "cond_stage_model.transformer.text_model.";
    fam.text.width = 32;
    fam.text.layers = 1;
    fam.text.heads = 2;
    fam.text.intermediate = 64;
    sd_backend *be = backend();
    sd_unet *u = NULL;
    sd_vae *v = NULL;
    sd_text_encoder *t = NULL;
    assert_int_equal(sd_unet_create(f, &fam, be, &u, err, sizeof err), -1);
    assert_non_null(strstr(err, "model.diffusion_model."));
    assert_int_equal(sd_vae_create(f, &fam, be, &v, err, sizeof err), -1);
    assert_non_null(strstr(err, "first_stage_model."));
    assert_int_equal(sd_text_encoder_create(f, &fam, be, &t, err, sizeof err), -1);
    assert_non_null(strstr(err, "cond_stage_model."));
    assert_null(u);
    assert_null(v);
    assert_null(t);
    sd_backend_destroy(be);
    sd_model_file_close(f);
    free(buf);
}

/* A set cancel flag stops a forward pass with "cancelled"; cleared, the
 * same networks run again. */
static void test_cancel(void **state)
{
    (void)state;
    golden_model m;
    open_models("sd1", &m, 1);
    sd_backend *be = backend();
    char err[512];
    sd_unet *u;
    sd_vae *v;
    if (sd_unet_create(m.file, &m.fam, be, &u, err, sizeof err)) fail_msg("%s", err);
    if (sd_vae_create(m.file, &m.fam, be, &v, err, sizeof err)) fail_msg("%s", err);
    int C = sd_unet_in_channels(u), D = sd_unet_context_dim(u);
    float *x = rand_array((size_t)C * 8 * 8, 1.0f), *ctx = rand_array((size_t)77 * D, 1.0f);
    float *out = malloc((size_t)4 * 8 * 8 * sizeof(float)), *img = malloc(3 * 64 * 64 * sizeof(float));
    float t = 500.0f;
    volatile int cancel = 1;
    sd_backend_set_cancel_flag(be, &cancel);
    assert_int_equal(sd_unet_forward(u, x, &t, ctx, 77, 1, 8, 8, out, err, sizeof err), -1);
    assert_non_null(strstr(err, "cancelled"));
    assert_int_equal(sd_vae_decode(v, x, 1, 8, 8, img, err, sizeof err), -1);
    assert_non_null(strstr(err, "cancelled"));
    cancel = 0;
    assert_int_equal(sd_unet_forward(u, x, &t, ctx, 77, 1, 8, 8, out, err, sizeof err), 0);
    sd_backend_set_cancel_flag(be, NULL);
    free(x); free(ctx); free(out); free(img);
    sd_vae_destroy(v);
    sd_unet_destroy(u);
    sd_backend_destroy(be);
    close_models(&m, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv2d),
        cmocka_unit_test(test_conv2d_rejects_bad_shapes),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_group_norm),
        cmocka_unit_test(test_layer_norm),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_elementwise),
        cmocka_unit_test(test_golden_networks),
        cmocka_unit_test(test_missing_tensor_is_reported),
        cmocka_unit_test(test_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
