/* test_cuda_backend.c - the CUDA backend (backend/cuda/) op by op against the
 * CPU backend, the numerical reference, on random inputs.
 *
 * Runs the same tests on up to two builds of the CUDA backend:
 *   - "cuda": the real library (libhn-sd-cuda.so, found as the loader finds
 *     it). Without a GPU (or without the library: no nvcc at build time)
 *     every test is skipped, unless HN_SD_REQUIRE_GPU=1 (make gpu-check),
 *     which turns that into a failure.
 *   - "cuda-emu": the same sources built with g++ against the CPU emulation
 *     of CUDA (backend/cuda/emu), libhn-sd-cuda-emu.so beside the real one;
 *     it checks kernel logic, launch geometry and cuBLAS conventions on any
 *     machine. Skipped when that library was not built.
 *
 * Each CUDA build is checked in two precisions: AUTO (fp16 tensor-core
 * GEMMs, flash attention; fp16 tolerances, ~5e-3 of the output's largest
 * magnitude) and F32 (plain float32 GEMMs and attention: 2e-5), with weight
 * names that select both of AUTO's paths (UNet-like fp16, VAE-like TF32);
 * the VAE's bf16 path (SD_CUDA_PREC_AUTO_VAE_BF16) on a backend of its own.
 */
#include "cuda_fixture.h"
#include "test_data.h"

#include <math.h>

#include "backend/ops.h"
#include "engine/half.h"
#include "engine/model_file.h"

/* ---- data helpers ----------------------------------------------------------- */

static uint64_t rng_state = 0x1234567887654321ull;

static float frand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

static float *rand_vec(size_t n, float scale)
{
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) v[i] = frand() * scale;
    return v;
}

/* A weight tensor as a model file would present it, at an unaligned
 * address as mapped tensors may be. Free with weight_free. */
static test_weight *weight_new(const char *name, sd_dtype dt, int ndim, const int64_t *shape,
                               float scale)
{
    return test_weight_new(name, dt, ndim, shape, scale, 0.0f, true, frand);
}

static test_weight *weight_1d(const char *name, sd_dtype dt, int64_t n, float scale)
{
    return weight_new(name, dt, 1, &n, scale);
}

static void weight_free(test_weight *w) { test_weight_free(w); }

static sd_tensor tensor_from(sd_backend *be, int n, int h, int w, int c, const float *host)
{
    sd_tensor t;
    if (sd_tensor_new(be, &t, n, h, w, c) != 0) fail_msg("alloc: %s", sd_backend_error(be));
    if (host && sd_upload(be, host, &t) != 0) fail_msg("upload: %s", sd_backend_error(be));
    return t;
}

static float *tensor_get(sd_backend *be, const sd_tensor *t)
{
    float *h = malloc(sd_tensor_numel_of(t) * sizeof *h);
    assert_non_null(h);
    if (sd_download(be, t, h) != 0) fail_msg("download: %s", sd_backend_error(be));
    return h;
}

static void check_close(const float *got, const float *want, size_t n, double tol,
                        const char *what)
{
    test_check_close(got, want, n, tol, what);
}

static double tol_of(int prec, double f16_tol)
{
    return prec == PREC_F32 ? 2e-5 : f16_tol;
}

static const char *prec_name(int prec) { return prec == PREC_F32 ? "F32" : "AUTO"; }

/* ---- probe and loader --------------------------------------------------------- */

static void test_probe(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    assert_true(sd_backend_is_cuda(f->cuda[0]));
    assert_false(sd_backend_is_cuda(f->cpu));
    const sd_backend_ops *o = f->cuda[0]->ops;
    assert_string_equal(o->name, "cuda");
    /* every op of the interface is implemented */
    assert_true(o->destroy && o->alloc && o->release && o->upload_nchw && o->download_nchw &&
                o->upload && o->download && o->conv2d && o->linear && o->group_norm &&
                o->layer_norm && o->attention && o->activation && o->geglu && o->add &&
                o->add_per_channel && o->concat_channels && o->upsample_nearest2x &&
                o->timestep_embedding && o->embedding);
}

static void test_missing_library(void **state)
{
    (void)state;
    char err[512] = "";
    sd_cuda_options opt = { 0, SD_CUDA_PREC_AUTO, 0, "/nonexistent/libhn-sd-cuda.so",
                            0, false, false, false };
    assert_null(sd_backend_cuda_create(&opt, err, sizeof err));
    assert_non_null(strstr(err, "nonexistent"));
    assert_int_equal(sd_cuda_probe("/nonexistent/libhn-sd-cuda.so", NULL, err, sizeof err), -1);
}

/* ---- conv2d ------------------------------------------------------------------- */

typedef struct conv_case {
    int n, h, w, cin, cout, k;
    sd_conv_params p;
    bool bias, residual;
    sd_dtype dt;
    const char *name;           /* selects AUTO's fp16 (UNet) or TF32 (VAE) path */
} conv_case;

static void run_conv(fixture *f, const conv_case *cc)
{
    int64_t wshape[4] = { cc->cout, cc->cin, cc->k, cc->k };
    test_weight *w = weight_new(cc->name, cc->dt, 4, wshape, 0.3f);
    test_weight *b = cc->bias ? weight_1d("b", cc->dt, cc->cout, 0.5f) : NULL;
    int oh = sd_conv_out_size(cc->h, cc->k, cc->p.stride, cc->p.pad_top, cc->p.pad_bottom);
    int ow = sd_conv_out_size(cc->w, cc->k, cc->p.stride, cc->p.pad_left, cc->p.pad_right);
    size_t nin = (size_t)cc->n * cc->h * cc->w * cc->cin, nout = (size_t)cc->n * oh * ow * cc->cout;
    float *xin = rand_vec(nin, 1.0f), *res = rand_vec(nout, 1.0f);

    sd_tensor x = tensor_from(f->cpu, cc->n, cc->h, cc->w, cc->cin, xin);
    sd_tensor r = tensor_from(f->cpu, cc->n, oh, ow, cc->cout, res);
    sd_tensor o = tensor_from(f->cpu, cc->n, oh, ow, cc->cout, NULL);
    if (sd_conv2d(f->cpu, &x, &w->info, b ? &b->info : NULL, &cc->p, cc->residual ? &r : NULL, &o))
        fail_msg("cpu conv: %s", sd_backend_error(f->cpu));
    float *want = tensor_get(f->cpu, &o);
    sd_tensor_free(f->cpu, &x);
    sd_tensor_free(f->cpu, &r);
    sd_tensor_free(f->cpu, &o);

    for (int pi = 0; pi < N_PREC; pi++) {
        sd_backend *be = f->cuda[pi];
        x = tensor_from(be, cc->n, cc->h, cc->w, cc->cin, xin);
        r = tensor_from(be, cc->n, oh, ow, cc->cout, res);
        o = tensor_from(be, cc->n, oh, ow, cc->cout, NULL);
        if (sd_conv2d(be, &x, &w->info, b ? &b->info : NULL, &cc->p, cc->residual ? &r : NULL, &o))
            fail_msg("cuda conv: %s", sd_backend_error(be));
        float *got = tensor_get(be, &o);
        char what[256];
        snprintf(what, sizeof what, "%s conv %s %dx%d k%d s%d pad %d,%d,%d,%d%s cin %d (%s)",
                 f->label, cc->name, cc->h, cc->w, cc->k, cc->p.stride, cc->p.pad_top,
                 cc->p.pad_left, cc->p.pad_bottom, cc->p.pad_right,
                 cc->p.pad_mode == SD_PAD_CIRCULAR ? " circular" : "", cc->cin, prec_name(pi));
        check_close(got, want, nout, tol_of(pi, 4e-3), what);
        free(got);
        sd_tensor_free(be, &x);
        sd_tensor_free(be, &r);
        sd_tensor_free(be, &o);
    }
    free(want);
    free(xin);
    free(res);
    weight_free(w);
    weight_free(b);
}

static void test_conv2d(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    const char *unet = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight";
    const char *vae = "first_stage_model.decoder.up.1.block.0.conv1.weight";
    const conv_case cases[] = {
        /* 3x3 same padding, bias + residual, channels a multiple of 4 */
        { 2, 9, 7, 8, 12, 3, { 1, 1, 1, 1, 1, SD_PAD_ZEROS }, true, true, SD_DTYPE_F16, unet },
        /* odd channel count (scalar im2col), F32 and BF16 weights */
        { 1, 8, 8, 3, 5, 3, { 1, 1, 1, 1, 1, SD_PAD_ZEROS }, true, false, SD_DTYPE_F32, unet },
        { 1, 6, 10, 5, 4, 3, { 1, 1, 1, 1, 1, SD_PAD_ZEROS }, false, true, SD_DTYPE_BF16, vae },
        /* UNet downsample: stride 2, pad 1 */
        { 2, 9, 8, 8, 8, 3, { 2, 1, 1, 1, 1, SD_PAD_ZEROS }, true, false, SD_DTYPE_F16, unet },
        /* VAE encoder downsample: pad right/bottom only, stride 2 */
        { 1, 8, 8, 4, 4, 3, { 2, 0, 0, 1, 1, SD_PAD_ZEROS }, true, false, SD_DTYPE_F16, vae },
        /* 1x1 (direct GEMM, no patches) with bias and residual */
        { 2, 5, 6, 16, 8, 1, { 1, 0, 0, 0, 0, SD_PAD_ZEROS }, true, true, SD_DTYPE_F16, unet },
        { 1, 5, 6, 12, 4, 1, { 1, 0, 0, 0, 0, SD_PAD_ZEROS }, true, false, SD_DTYPE_F32, vae },
        /* tiling: circular padding */
        { 1, 6, 5, 4, 4, 3, { 1, 1, 1, 1, 1, SD_PAD_CIRCULAR }, true, false, SD_DTYPE_F16, unet },
        /* big enough for several workspace slices (1 MB workspace) */
        { 2, 24, 24, 64, 32, 3, { 1, 1, 1, 1, 1, SD_PAD_ZEROS }, true, true, SD_DTYPE_F16, unet },
        { 1, 24, 24, 64, 16, 3, { 1, 1, 1, 1, 1, SD_PAD_ZEROS }, true, false, SD_DTYPE_F16, vae },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_conv(f, &cases[i]);
}

/* ---- implicit-GEMM convolution (API version 4, conv_igemm.cu) ------------------ */

/* Implicit GEMM vs im2col: the same fp16-rounded operands summed in
 * float32 in another order. 2e-5 of the largest value on the emulation
 * (IEEE float sums); 2e-4 on a GPU, whose tensor cores align the addends
 * of their float32 sums with less rounding care (still 20x under the fp16
 * tolerance: a wrong tap or channel costs O(1)). */
static double same_sums_tol(const fixture *f)
{
    return strcmp(f->label, "cuda-emu") == 0 ? 2e-5 : 2e-4;
}

static unsigned long long implicit_calls(sd_backend *be)
{
    sd_cuda_memory m;
    assert_int_equal(sd_backend_cuda_memory(be, &m, false), 0);
    return m.conv_implicit_calls;
}

/* One conv on be with conv_implicit on or off (be's setting restored to
 * off); in_place: the residual is the output tensor itself (the VAE's
 * ResnetBlocks add into x). Returns the downloaded output. */
static float *conv_on(sd_backend *be, const conv_case *cc, const test_weight *w,
                      const test_weight *b, const float *xin, const float *res, bool implicit,
                      bool in_place)
{
    int oh = sd_conv_out_size(cc->h, cc->k, cc->p.stride, cc->p.pad_top, cc->p.pad_bottom);
    int ow = sd_conv_out_size(cc->w, cc->k, cc->p.stride, cc->p.pad_left, cc->p.pad_right);
    assert_int_equal(sd_backend_cuda_set_conv_implicit(be, implicit), 0);
    sd_tensor x = tensor_from(be, cc->n, cc->h, cc->w, cc->cin, xin);
    sd_tensor r = tensor_from(be, cc->n, oh, ow, cc->cout, res);
    sd_tensor o = in_place ? r : tensor_from(be, cc->n, oh, ow, cc->cout, NULL);
    if (sd_conv2d(be, &x, &w->info, b ? &b->info : NULL, &cc->p,
                  cc->residual || in_place ? &r : NULL, &o))
        fail_msg("cuda conv: %s", sd_backend_error(be));
    float *got = tensor_get(be, &o);
    assert_int_equal(sd_backend_cuda_set_conv_implicit(be, false), 0);
    sd_tensor_free(be, &x);
    sd_tensor_free(be, &r);
    if (!in_place) sd_tensor_free(be, &o);
    return got;
}

/* The implicit-GEMM convolution against the CPU backend (fp16 tolerance)
 * and against the im2col path of the same backend (which rounds the same
 * fp16 inputs and weights and also accumulates in float32: only the order
 * of the sums differs, same_sums_tol). The cases pick every
 * block shape and the split-K path on the emulation (4 SMs; ig_pick in
 * conv_igemm.cu), cover Cout that is not a multiple of the block (40, 72),
 * M that is not (126, 30, 40 rows), Cin 8 and 16 (a K step of 32 spans
 * 4 and 2 taps), 32, 64 and 320, stride 2, the VAE's asymmetric padding,
 * circular padding, 1x1 stride 2, bias and residual each on and off,
 * batch 2, and the residual being the output. The implicit path must run
 * (conv_implicit_calls + 1) where it applies and leave the others to
 * im2col bit for bit: Cin 4 (UNet conv_in), a VAE weight (not fp16 in AUTO),
 * the F32 backend, and an fp16 input copy larger than the workspace. */
static void test_conv_implicit(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    const char *unet = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight";
    const char *vae = "first_stage_model.decoder.up.1.block.0.conv1.weight";
    const sd_conv_params same = { 1, 1, 1, 1, 1, SD_PAD_ZEROS };
    const struct {
        conv_case cc;
        bool applies, in_place;
    } cases[] = {
        /* 64x64 blocks, M 126 and Cout 40 not whole blocks */
        { { 2, 9, 7, 32, 40, 3, same, true, true, SD_DTYPE_F16, unet }, true, false },
        /* 128x160 blocks (Cout 160: SD's channel counts are multiples of 160) */
        { { 2, 16, 16, 32, 160, 3, same, true, true, SD_DTYPE_F16, unet }, true, false },
        /* 128x160 blocks, K split in 2 (two blocks for 4 SMs), the residual
         * being the output, BF16 weights */
        { { 1, 8, 8, 64, 320, 3, same, true, true, SD_DTYPE_BF16, unet }, true, true },
        /* 128x128 blocks (M 512, Cout 128), no residual */
        { { 2, 16, 16, 32, 128, 3, same, true, false, SD_DTYPE_F16, unet }, true, false },
        /* 128x64 blocks (Cout 64), Cin 64, no bias */
        { { 2, 16, 16, 64, 64, 3, same, false, true, SD_DTYPE_F16, unet }, true, false },
        /* Cin 320 (90 K steps, split in 2), Cout 72: two blocks, the second partial */
        { { 1, 6, 5, 320, 72, 3, same, true, true, SD_DTYPE_F16, unet }, true, false },
        /* UNet downsample: stride 2, pad 1, batch 2; neither bias nor residual */
        { { 2, 9, 8, 32, 32, 3, { 2, 1, 1, 1, 1, SD_PAD_ZEROS }, false, false, SD_DTYPE_F16,
            unet }, true, false },
        /* the VAE's downsample geometry: pad right/bottom only, stride 2; Cin 16 */
        { { 1, 8, 8, 16, 24, 3, { 2, 0, 0, 1, 1, SD_PAD_ZEROS }, true, false, SD_DTYPE_F16,
            unet }, true, false },
        /* padding that differs on every side (top 2, left 0, bottom 1, right 2) */
        { { 1, 7, 9, 16, 8, 3, { 1, 2, 0, 1, 2, SD_PAD_ZEROS }, true, true, SD_DTYPE_F16, unet },
          true, false },
        /* circular padding (tiling), Cin 8: a K step spans 4 taps */
        { { 1, 6, 5, 8, 16, 3, { 1, 1, 1, 1, 1, SD_PAD_CIRCULAR }, true, true, SD_DTYPE_F16,
            unet }, true, false },
        /* circular with stride 2 and an odd Cout */
        { { 2, 7, 6, 16, 13, 3, { 2, 1, 1, 1, 1, SD_PAD_CIRCULAR }, true, false, SD_DTYPE_F16,
            unet }, true, false },
        /* 1x1 stride 2 (a strided plain GEMM), F32 weights converted to fp16 */
        { { 2, 8, 8, 16, 24, 1, { 2, 0, 0, 0, 0, SD_PAD_ZEROS }, true, false, SD_DTYPE_F32,
            unet }, true, false },
        /* the residual is the output (added in place, no split), BF16 weights */
        { { 1, 9, 7, 32, 32, 3, same, true, true, SD_DTYPE_BF16, unet }, true, true },
        /* not applicable: Cin 4 (conv_in), a VAE weight (not fp16 in AUTO) */
        { { 2, 8, 8, 4, 32, 3, same, true, true, SD_DTYPE_F16, unet }, false, false },
        { { 1, 8, 8, 32, 16, 3, same, true, true, SD_DTYPE_F16, vae }, false, false },
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const conv_case *cc = &cases[ci].cc;
        const bool in_place = cases[ci].in_place;
        int64_t wshape[4] = { cc->cout, cc->cin, cc->k, cc->k };
        test_weight *w = weight_new(cc->name, cc->dt, 4, wshape, 0.3f);
        test_weight *b = cc->bias ? weight_1d("b", cc->dt, cc->cout, 0.5f) : NULL;
        int oh = sd_conv_out_size(cc->h, cc->k, cc->p.stride, cc->p.pad_top, cc->p.pad_bottom);
        int ow = sd_conv_out_size(cc->w, cc->k, cc->p.stride, cc->p.pad_left, cc->p.pad_right);
        size_t nin = (size_t)cc->n * cc->h * cc->w * cc->cin;
        size_t nout = (size_t)cc->n * oh * ow * cc->cout;
        float *xin = rand_vec(nin, 1.0f), *res = rand_vec(nout, 1.0f);
        const bool with_res = cc->residual || in_place;

        sd_tensor x = tensor_from(f->cpu, cc->n, cc->h, cc->w, cc->cin, xin);
        sd_tensor r = tensor_from(f->cpu, cc->n, oh, ow, cc->cout, res);
        sd_tensor o = tensor_from(f->cpu, cc->n, oh, ow, cc->cout, NULL);
        if (sd_conv2d(f->cpu, &x, &w->info, b ? &b->info : NULL, &cc->p, with_res ? &r : NULL,
                      &o))
            fail_msg("cpu conv: %s", sd_backend_error(f->cpu));
        float *want = tensor_get(f->cpu, &o);
        sd_tensor_free(f->cpu, &x);
        sd_tensor_free(f->cpu, &r);
        sd_tensor_free(f->cpu, &o);

        char what[300];
        snprintf(what, sizeof what,
                 "%s implicit conv case %zu: %dx%dx%d k%d s%d pad %d,%d,%d,%d%s cin %d cout %d",
                 f->label, ci, cc->n, cc->h, cc->w, cc->k, cc->p.stride, cc->p.pad_top,
                 cc->p.pad_left, cc->p.pad_bottom, cc->p.pad_right,
                 cc->p.pad_mode == SD_PAD_CIRCULAR ? " circular" : "", cc->cin, cc->cout);
        sd_backend *be = f->cuda[PREC_AUTO];
        float *im2col = conv_on(be, cc, w, b, xin, res, false, in_place);
        const unsigned long long calls = implicit_calls(be);
        float *got = conv_on(be, cc, w, b, xin, res, true, in_place);
        const unsigned long long ran = implicit_calls(be) - calls;
        if (ran != (cases[ci].applies ? 1u : 0u))
            fail_msg("%s: the implicit path ran %llu times", what, ran);
        check_close(got, want, nout, 4e-3, what);
        if (cases[ci].applies) check_close(got, im2col, nout, same_sums_tol(f), what);
        else assert_memory_equal(got, im2col, nout * sizeof *got);
        free(got);
        free(im2col);
        if (ci == 0) {
            /* the F32 backend: float32 GEMMs, the switch changes nothing */
            sd_backend *be32 = f->cuda[PREC_F32];
            const unsigned long long c32 = implicit_calls(be32);
            float *a = conv_on(be32, cc, w, b, xin, res, false, in_place);
            float *bb = conv_on(be32, cc, w, b, xin, res, true, in_place);
            assert_true(implicit_calls(be32) == c32);
            assert_memory_equal(a, bb, nout * sizeof *a);
            check_close(bb, want, nout, 2e-5, what);
            free(a);
            free(bb);
            /* an fp16 copy of the input larger than the workspace limit:
             * im2col (in slices) instead */
            size_t old = 0;
            assert_int_equal(sd_backend_cuda_set_workspace_limit(be, nin, &old), 0);
            float *sliced = conv_on(be, cc, w, b, xin, res, true, in_place);
            assert_true(implicit_calls(be) == calls + 1);
            assert_int_equal(sd_backend_cuda_set_workspace_limit(be, old, NULL), 0);
            check_close(sliced, want, nout, 4e-3, what);
            free(sliced);
        }
        free(want);
        free(xin);
        free(res);
        weight_free(w);
        weight_free(b);
    }
}

/* Every block shape with forced K splits (SD_CUDA_IGEMM, read by a new
 * backend), on a conv whose M and Cout are not whole blocks of any shape
 * and one with Cin 320, stride 2 and an odd Cout: against the CPU backend
 * and the im2col path. */
static void test_conv_implicit_forced_shapes(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    const char *unet = "model.diffusion_model.output_blocks.2.0.in_layers.2.weight";
    const sd_conv_params same = { 1, 1, 1, 1, 1, SD_PAD_ZEROS };
    const conv_case cases[] = {
        { 2, 9, 7, 32, 40, 3, same, true, true, SD_DTYPE_F16, unet },
        { 1, 5, 6, 320, 37, 3, { 2, 1, 1, 1, 1, SD_PAD_ZEROS }, true, false, SD_DTYPE_F16, unet },
    };
    static const char *const forced[] = { "128x160/3", "128x128/2", "128x64", "64x64/5",
                                          "128x160/16" };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const conv_case *cc = &cases[ci];
        int64_t wshape[4] = { cc->cout, cc->cin, cc->k, cc->k };
        test_weight *w = weight_new(cc->name, cc->dt, 4, wshape, 0.3f);
        test_weight *b = weight_1d("b", cc->dt, cc->cout, 0.5f);
        int oh = sd_conv_out_size(cc->h, cc->k, cc->p.stride, cc->p.pad_top, cc->p.pad_bottom);
        int ow = sd_conv_out_size(cc->w, cc->k, cc->p.stride, cc->p.pad_left, cc->p.pad_right);
        size_t nin = (size_t)cc->n * cc->h * cc->w * cc->cin;
        size_t nout = (size_t)cc->n * oh * ow * cc->cout;
        float *xin = rand_vec(nin, 1.0f), *res = rand_vec(nout, 1.0f);
        sd_tensor x = tensor_from(f->cpu, cc->n, cc->h, cc->w, cc->cin, xin);
        sd_tensor r = tensor_from(f->cpu, cc->n, oh, ow, cc->cout, res);
        sd_tensor o = tensor_from(f->cpu, cc->n, oh, ow, cc->cout, NULL);
        if (sd_conv2d(f->cpu, &x, &w->info, &b->info, &cc->p, cc->residual ? &r : NULL, &o))
            fail_msg("cpu conv: %s", sd_backend_error(f->cpu));
        float *want = tensor_get(f->cpu, &o);
        sd_tensor_free(f->cpu, &x);
        sd_tensor_free(f->cpu, &r);
        sd_tensor_free(f->cpu, &o);
        float *im2col = conv_on(f->cuda[PREC_AUTO], cc, w, b, xin, res, false, false);
        for (size_t fi = 0; fi < sizeof forced / sizeof forced[0]; fi++) {
            char err[512], what[200];
            setenv("SD_CUDA_IGEMM", forced[fi], 1);
            sd_cuda_options o2 = { 0, SD_CUDA_PREC_AUTO, 1, f->lib[0] ? f->lib : NULL, 0,
                                   false, false, false };
            sd_backend *be = sd_backend_cuda_create(&o2, err, sizeof err);
            if (!be) fail_msg("%s", err);
            float *got = conv_on(be, cc, w, b, xin, res, true, false);
            unsetenv("SD_CUDA_IGEMM");
            assert_true(implicit_calls(be) == 1);
            snprintf(what, sizeof what, "%s implicit conv, SD_CUDA_IGEMM=%s, case %zu", f->label,
                     forced[fi], ci);
            check_close(got, want, nout, 4e-3, what);
            check_close(got, im2col, nout, same_sums_tol(f), what);
            free(got);
            sd_backend_destroy(be);
        }
        free(im2col);
        free(want);
        free(xin);
        free(res);
        weight_free(w);
        weight_free(b);
    }
}

/* ---- linear ------------------------------------------------------------------ */

static void run_linear(fixture *f, int rows, int K, int N, bool conv_shaped, bool bias,
                       bool residual, const char *name)
{
    int64_t shape4[4] = { N, K, 1, 1 };
    test_weight *w = weight_new(name, SD_DTYPE_F16, conv_shaped ? 4 : 2, shape4, 0.2f);
    test_weight *b = bias ? weight_1d("bias", SD_DTYPE_F32, N, 0.5f) : NULL;
    float *xin = rand_vec((size_t)rows * K, 1.0f), *res = rand_vec((size_t)rows * N, 1.0f);
    float *want = NULL;
    for (int pi = -1; pi < N_PREC; pi++) {
        sd_backend *be = pi < 0 ? f->cpu : f->cuda[pi];
        sd_tensor x = tensor_from(be, 1, 1, rows, K, xin);
        sd_tensor r = tensor_from(be, 1, 1, rows, N, res);
        sd_tensor o = tensor_from(be, 1, 1, rows, N, NULL);
        if (sd_linear(be, &x, &w->info, b ? &b->info : NULL, residual ? &r : NULL, &o))
            fail_msg("%s linear: %s", be->ops->name, sd_backend_error(be));
        float *got = tensor_get(be, &o);
        if (pi < 0) {
            want = got;
        } else {
            char what[160];
            snprintf(what, sizeof what, "%s linear %s %dx%d->%d (%s)", f->label, name, rows, K, N,
                     prec_name(pi));
            check_close(got, want, (size_t)rows * N, tol_of(pi, 4e-3), what);
            free(got);
        }
        sd_tensor_free(be, &x);
        sd_tensor_free(be, &r);
        sd_tensor_free(be, &o);
    }
    free(want);
    free(xin);
    free(res);
    weight_free(w);
    weight_free(b);
}

static void test_linear(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    run_linear(f, 37, 24, 40, false, true, true, "model.diffusion_model.x.ff.net.2.weight");
    run_linear(f, 10, 33, 7, true, true, false, "first_stage_model.decoder.mid.attn_1.q.weight");
    run_linear(f, 77, 32, 96, false, false, false,
               "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight");
    /* more rows than one 1 MB fp16 workspace slice */
    run_linear(f, 3000, 256, 16, false, true, true, "model.diffusion_model.proj_in.weight");
}

/* ---- the VAE in bf16 (SD_CUDA_PREC_AUTO_VAE_BF16) ------------------------------ */

/* A backend of the fixture's build in another precision, with the
 * fixture's 1 MB workspace (so the sliced paths run on small tensors). */
static sd_backend *cuda_in(fixture *f, sd_cuda_precision prec)
{
    sd_cuda_options o = { 0, prec, 1, f->lib[0] ? f->lib : NULL, 0, false, false, false };
    char err[512];
    sd_backend *be = sd_backend_cuda_create(&o, err, sizeof err);
    if (!be) fail_msg("%s backend (precision %d): %s", f->label, (int)prec, err);
    return be;
}

static float bf16_round(float v) { return sd_bf16_to_f32(sd_f32_to_bf16(v)); }

/* Element i of a test weight as a float, whatever its dtype. */
static float weight_at(const test_weight *w, size_t i)
{
    const unsigned char *p = w->info.data;
    if (w->info.dtype == SD_DTYPE_F32) {
        float v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return w->info.dtype == SD_DTYPE_F16 ? sd_f16_to_f32(h) : sd_bf16_to_f32(h);
}

/* The same tensor as F32 with every value rounded to bf16 (round to nearest
 * even): the weight a bf16 GEMM multiplies with. */
static test_weight *weight_bf16_rounded(const test_weight *w)
{
    size_t n = 1;
    for (int i = 0; i < w->info.ndim; i++) n *= (size_t)w->info.shape[i];
    test_weight *r = calloc(1, sizeof *r);
    assert_non_null(r);
    *r = *w;
    r->info.name = r->name;
    float *data = malloc(n * sizeof *data);
    assert_non_null(data);
    for (size_t i = 0; i < n; i++) data[i] = bf16_round(weight_at(w, i));
    r->bytes = data;
    r->info.data = data;
    r->info.dtype = SD_DTYPE_F32;
    r->info.nbytes = n * 4;
    return r;
}

typedef struct bf16_case {
    bool conv;                  /* conv2d (k x k) or linear */
    int n, h, w, cin, cout, k;  /* linears: k 1 = a [N,K,1,1] weight, 0 = [N,K] */
    sd_conv_params p;
    bool bias, residual;
    sd_dtype dt;
    const char *name;
} bf16_case;

/* conv2d or linear of the case on be; the output, downloaded. */
static float *bf16_case_run(sd_backend *be, const bf16_case *c, const test_weight *w,
                            const test_weight *b, const float *xin, const float *res, int oh,
                            int ow)
{
    sd_tensor x = tensor_from(be, c->n, c->h, c->w, c->cin, xin);
    sd_tensor r = tensor_from(be, c->n, oh, ow, c->cout, res);
    sd_tensor o = tensor_from(be, c->n, oh, ow, c->cout, NULL);
    int rc = c->conv ? sd_conv2d(be, &x, &w->info, b ? &b->info : NULL, &c->p,
                                 c->residual ? &r : NULL, &o)
                     : sd_linear(be, &x, &w->info, b ? &b->info : NULL, c->residual ? &r : NULL,
                                 &o);
    if (rc) fail_msg("%s %s: %s", be->ops->name, c->name, sd_backend_error(be));
    float *got = tensor_get(be, &o);
    sd_tensor_free(be, &x);
    sd_tensor_free(be, &r);
    sd_tensor_free(be, &o);
    return got;
}

/* VAE-named conv2d/linear in AUTO_VAE_BF16 against the CPU twice:
 *  - on the exact data, at a bf16 tolerance (1e-2 of the largest output);
 *  - on inputs and weights rounded to bf16 first (bias and residual are
 *    float32 in both), at 1e-4: what a bf16 GEMM with float32 accumulation
 *    computes, up to the order of the float32 sums. fp16, TF32 or float32
 *    operands would miss it: the two references differ by more than 4x
 *    that bound (checked), so this fails unless both operands really are
 *    rounded to bf16 to nearest even. */
static void run_bf16_case(fixture *f, sd_backend *be, const bf16_case *c)
{
    int64_t shape[4] = { c->cout, c->cin, c->k, c->k };
    test_weight *w = weight_new(c->name, c->dt, c->k > 0 ? 4 : 2, shape, 0.3f);
    test_weight *wr = weight_bf16_rounded(w);
    test_weight *b = c->bias ? weight_1d("first_stage_model.b", SD_DTYPE_F32, c->cout, 0.5f) : NULL;
    int oh = c->h, ow = c->w;
    if (c->conv) {
        oh = sd_conv_out_size(c->h, c->k, c->p.stride, c->p.pad_top, c->p.pad_bottom);
        ow = sd_conv_out_size(c->w, c->k, c->p.stride, c->p.pad_left, c->p.pad_right);
    }
    size_t nin = (size_t)c->n * c->h * c->w * c->cin, nout = (size_t)c->n * oh * ow * c->cout;
    float *xin = rand_vec(nin, 1.0f), *res = rand_vec(nout, 1.0f);
    float *xr = malloc(nin * sizeof *xr);
    assert_non_null(xr);
    for (size_t i = 0; i < nin; i++) xr[i] = bf16_round(xin[i]);

    float *exact = bf16_case_run(f->cpu, c, w, b, xin, res, oh, ow);
    float *rounded = bf16_case_run(f->cpu, c, wr, b, xr, res, oh, ow);
    float *got = bf16_case_run(be, c, w, b, xin, res, oh, ow);
    char what[256];
    double maxref = 0.0, gap = 0.0;
    for (size_t i = 0; i < nout; i++) {
        if (fabs(rounded[i]) > maxref) maxref = fabs(rounded[i]);
        if (fabs(exact[i] - rounded[i]) > gap) gap = fabs(exact[i] - rounded[i]);
    }
    snprintf(what, sizeof what, "%s %s %s %dx%dx%d k%d -> %d, bf16 operands", f->label,
             c->conv ? "conv" : "linear", c->name, c->h, c->w, c->cin, c->k, c->cout);
    if (!(gap > 4e-4 * maxref))
        fail_msg("%s: bf16 rounding moves the output too little (%.3g of %.3g) to tell", what,
                 gap, maxref);
    check_close(got, rounded, nout, 1e-4, what);
    snprintf(what, sizeof what, "%s %s %s %dx%dx%d k%d -> %d, exact data", f->label,
             c->conv ? "conv" : "linear", c->name, c->h, c->w, c->cin, c->k, c->cout);
    check_close(got, exact, nout, 1e-2, what);
    free(exact);
    free(rounded);
    free(got);
    free(xin);
    free(xr);
    free(res);
    weight_free(w);
    weight_free(wr);
    weight_free(b);
}

static void test_vae_bf16_gemms(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    sd_backend *be = cuda_in(f, SD_CUDA_PREC_AUTO_VAE_BF16);
    const char *conv = "first_stage_model.decoder.up.1.block.0.conv1.weight";
    const char *enc = "encoder.down.0.downsample.conv.weight";
    const char *attn = "first_stage_model.decoder.mid.attn_1.q.weight";
    const sd_conv_params same = { 1, 1, 1, 1, 1, SD_PAD_ZEROS };
    const sd_conv_params none = { 1, 0, 0, 0, 0, SD_PAD_ZEROS };
    const bf16_case cases[] = {
        /* 3x3, C % 8 == 0 (8 channels a thread, one 16-byte store), cuBLASLt's
         * bias epilogue + residual; F32, F16 and BF16 files */
        { true, 2, 9, 7, 16, 12, 3, same, true, true, SD_DTYPE_F32, conv },
        { true, 1, 8, 6, 12, 8, 3, same, true, false, SD_DTYPE_F16, conv },
        /* odd channels (one value a thread), no bias: GemmEx */
        { true, 1, 6, 10, 5, 4, 3, same, false, true, SD_DTYPE_BF16, conv },
        /* the encoder's downsample: stride 2, padding right/bottom only */
        { true, 1, 8, 8, 8, 8, 3, { 2, 0, 0, 1, 1, SD_PAD_ZEROS }, true, false, SD_DTYPE_F32, enc },
        /* 1x1 (no patches: the input converted to bf16) */
        { true, 2, 5, 6, 32, 16, 1, none, true, true, SD_DTYPE_F32, "post_quant_conv.weight" },
        /* several 1 MB workspace slices: 1600 rows of 576 bf16 values */
        { true, 1, 40, 40, 64, 16, 3, same, true, true, SD_DTYPE_F16, conv },
        /* linears: conv-shaped [N,K,1,1] with odd K, 2-D with bias +
         * residual, and more rows than one slice */
        { false, 1, 1, 10, 33, 7, 1, none, true, false, SD_DTYPE_F32, attn },
        { false, 1, 1, 37, 24, 40, 0, none, true, true, SD_DTYPE_F16, attn },
        { false, 1, 1, 2100, 256, 24, 0, none, false, false, SD_DTYPE_F32, attn },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_bf16_case(f, be, &cases[i]);
    sd_backend_destroy(be);
}

/* The device copy of a VAE weight in AUTO_VAE_BF16 is bf16 (2 bytes an
 * element, sd_cuda_memory.weights), the TF32 copy of AUTO float32 (4), and
 * the fp16, bf16 and float32 copies of one tensor are separate cache
 * entries: after all three, the bf16 one is used again without an upload
 * and gives the first result bit for bit. */
static void test_vae_bf16_weight_memory(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    sd_backend *be = cuda_in(f, SD_CUDA_PREC_AUTO_VAE_BF16);
    const int64_t shape[4] = { 16, 8, 3, 3 };
    const size_t n = 16 * 8 * 9;
    test_weight *w = weight_new("first_stage_model.decoder.conv_in.weight", SD_DTYPE_F32, 4,
                                shape, 0.3f);
    const sd_conv_params p = { 1, 1, 1, 1, 1, SD_PAD_ZEROS };
    float *xin = rand_vec((size_t)6 * 6 * 8, 1.0f);
    sd_tensor x = tensor_from(be, 1, 6, 6, 8, xin), o = tensor_from(be, 1, 6, 6, 16, NULL);
    const size_t nout = (size_t)6 * 6 * 16;
    float *out[4];
    static const sd_cuda_precision precs[4] = { SD_CUDA_PREC_AUTO_VAE_BF16, SD_CUDA_PREC_AUTO,
                                                SD_CUDA_PREC_F16, SD_CUDA_PREC_AUTO_VAE_BF16 };
    static const size_t bytes_per[4] = { 2, 4, 2, 0 };   /* new device bytes per element */
    sd_cuda_memory m0, m1;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(sd_backend_cuda_set_precision(be, precs[i], NULL), 0);
        assert_int_equal(sd_backend_cuda_memory(be, &m0, false), 0);
        if (sd_conv2d(be, &x, &w->info, NULL, &p, NULL, &o))
            fail_msg("conv: %s", sd_backend_error(be));
        out[i] = tensor_get(be, &o);
        assert_int_equal(sd_backend_cuda_memory(be, &m1, false), 0);
        assert_int_equal(m1.weights - m0.weights, bytes_per[i] * n);
        assert_int_equal(m1.weight_uploads - m0.weight_uploads, bytes_per[i] ? 1 : 0);
    }
    /* three different roundings of the same weight and input */
    assert_true(memcmp(out[0], out[1], nout * sizeof(float)) != 0);
    assert_true(memcmp(out[0], out[2], nout * sizeof(float)) != 0);
    assert_memory_equal(out[0], out[3], nout * sizeof(float));
    /* a UNet-named weight stays fp16 in AUTO_VAE_BF16 */
    test_weight *u = weight_new("model.diffusion_model.input_blocks.1.0.in_layers.2.weight",
                                SD_DTYPE_F32, 4, shape, 0.3f);
    assert_int_equal(sd_backend_cuda_memory(be, &m0, false), 0);
    assert_int_equal(sd_conv2d(be, &x, &u->info, NULL, &p, NULL, &o), 0);
    assert_int_equal(sd_backend_cuda_memory(be, &m1, false), 0);
    assert_int_equal(m1.weights - m0.weights, 2 * n);
    /* the precision switch knows the new value and nothing past it */
    sd_cuda_precision old;
    assert_int_equal(sd_backend_cuda_set_precision(be, SD_CUDA_PREC_AUTO, &old), 0);
    assert_int_equal(old, SD_CUDA_PREC_AUTO_VAE_BF16);
    const sd_cuda_precision past = (sd_cuda_precision)(SD_CUDA_PREC_AUTO_VAE_BF16 + 1);
    assert_int_equal(sd_backend_cuda_set_precision(be, past, NULL), -1);
    for (int i = 0; i < 4; i++) free(out[i]);
    sd_tensor_free(be, &x);
    sd_tensor_free(be, &o);
    free(xin);
    weight_free(w);
    weight_free(u);
    sd_backend_destroy(be);
}

/* ---- norms ------------------------------------------------------------------- */

static void test_group_norm(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    const struct { int n, h, w, c, groups; bool silu, in_place; float offset; } cases[] = {
        { 2, 8, 8, 64, 32, true, false, 0.0f },
        { 1, 5, 7, 12, 4, false, true, 3.0f },   /* mean far from 0 */
        { 2, 40, 40, 32, 8, true, true, -1.0f }, /* several slices per group */
        { 1, 1, 1, 6, 3, false, false, 0.0f },
        { 2, 4, 4, 40, 4, true, false, 0.5f },   /* 10 channels a group, as SD's 320/32 */
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int n = cases[ci].n, h = cases[ci].h, w = cases[ci].w, c = cases[ci].c;
        size_t total = (size_t)n * h * w * c;
        float *xin = rand_vec(total, 2.0f);
        for (size_t i = 0; i < total; i++) xin[i] += cases[ci].offset;
        test_weight *g = weight_1d("norm.weight", SD_DTYPE_F16, c, 1.0f);
        test_weight *b = weight_1d("norm.bias", SD_DTYPE_F32, c, 1.0f);
        float *want = NULL;
        for (int pi = -1; pi < N_PREC; pi++) {
            sd_backend *be = pi < 0 ? f->cpu : f->cuda[pi];
            sd_tensor x = tensor_from(be, n, h, w, c, xin);
            sd_tensor o = cases[ci].in_place ? x : tensor_from(be, n, h, w, c, NULL);
            if (sd_group_norm(be, &x, cases[ci].groups, 1e-5f, &g->info, &b->info,
                              cases[ci].silu, &o))
                fail_msg("%s group_norm: %s", be->ops->name, sd_backend_error(be));
            float *got = tensor_get(be, &o);
            if (pi < 0) {
                want = got;
            } else {
                char what[128];
                snprintf(what, sizeof what, "%s group_norm case %zu (%s)", f->label, ci,
                         prec_name(pi));
                check_close(got, want, total, 2e-5, what);
                free(got);
            }
            if (!cases[ci].in_place) sd_tensor_free(be, &o);
            sd_tensor_free(be, &x);
        }
        free(want);
        free(xin);
        weight_free(g);
        weight_free(b);
    }
}

static void test_layer_norm(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    const int shapes[][3] = { { 2, 77, 32 }, { 1, 64, 320 }, { 1, 9, 1280 }, { 3, 5, 7 } };
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int n = shapes[si][0], L = shapes[si][1], c = shapes[si][2];
        size_t total = (size_t)n * L * c;
        float *xin = rand_vec(total, 3.0f);
        for (size_t i = 0; i < total; i++) xin[i] += 5.0f;
        test_weight *g = weight_1d("ln.weight", SD_DTYPE_F32, c, 1.0f);
        test_weight *b = weight_1d("ln.bias", SD_DTYPE_BF16, c, 1.0f);
        float *want = NULL;
        for (int pi = -1; pi < N_PREC; pi++) {
            sd_backend *be = pi < 0 ? f->cpu : f->cuda[pi];
            sd_tensor x = tensor_from(be, n, 1, L, c, xin);
            if (sd_layer_norm(be, &x, &g->info, &b->info, 1e-5f, &x))  /* in place */
                fail_msg("%s layer_norm: %s", be->ops->name, sd_backend_error(be));
            float *got = tensor_get(be, &x);
            if (pi < 0) {
                want = got;
            } else {
                char what[128];
                snprintf(what, sizeof what, "%s layer_norm C=%d (%s)", f->label, c, prec_name(pi));
                check_close(got, want, total, 2e-5, what);
                free(got);
            }
            sd_tensor_free(be, &x);
        }
        free(want);
        free(xin);
        weight_free(g);
        weight_free(b);
    }
}

/* ---- attention ------------------------------------------------------------------ */

static void run_attention(fixture *f, int B, int Lq, int Lk, int C, int heads, bool causal,
                          float qscale)
{
    float *qh = rand_vec((size_t)B * Lq * C, qscale), *kh = rand_vec((size_t)B * Lk * C, 1.0f);
    float *vh = rand_vec((size_t)B * Lk * C, 1.0f);
    float *want = NULL;
    for (int pi = -1; pi < N_PREC; pi++) {
        sd_backend *be = pi < 0 ? f->cpu : f->cuda[pi];
        sd_tensor q = tensor_from(be, B, 1, Lq, C, qh);
        sd_tensor k = tensor_from(be, B, 1, Lk, C, kh);
        sd_tensor v = tensor_from(be, B, 1, Lk, C, vh);
        sd_tensor o = tensor_from(be, B, 1, Lq, C, NULL);
        if (sd_attention(be, &q, &k, &v, heads, 0.0f, causal, &o))
            fail_msg("%s attention: %s", be->ops->name, sd_backend_error(be));
        float *got = tensor_get(be, &o);
        if (pi < 0) {
            want = got;
        } else {
            char what[160];
            snprintf(what, sizeof what, "%s attention B%d Lq%d Lk%d C%d h%d%s (%s)", f->label, B,
                     Lq, Lk, C, heads, causal ? " causal" : "", prec_name(pi));
            check_close(got, want, (size_t)B * Lq * C, tol_of(pi, 6e-3), what);
            free(got);
        }
        sd_tensor_free(be, &q);
        sd_tensor_free(be, &k);
        sd_tensor_free(be, &v);
        sd_tensor_free(be, &o);
    }
    free(want);
    free(qh);
    free(kh);
    free(vh);
}

static void test_attention(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    run_attention(f, 2, 100, 77, 64, 4, false, 1.0f);   /* cross-attention, d 16 */
    run_attention(f, 1, 130, 130, 80, 2, false, 2.0f);  /* self, d 40 (padded to 48) */
    /* SD1.5's first level in small: d 40, five key tiles through the flash
     * kernel's double buffer, queries in several blocks */
    run_attention(f, 1, 300, 300, 80, 2, false, 1.0f);
    run_attention(f, 2, 77, 77, 64, 2, true, 1.0f);     /* CLIP: causal, d 32 */
    run_attention(f, 1, 70, 70, 320, 2, false, 1.0f);   /* d 160: > 48 KB of shared memory */
    run_attention(f, 2, 90, 77, 160, 2, false, 1.0f);   /* d 80: the 4-warp blocks, 2 per head */
    run_attention(f, 1, 33, 33, 512, 1, false, 0.5f);   /* VAE: d 512, cuBLAS path */
    run_attention(f, 1, 20, 9, 24, 3, true, 1.0f);      /* causal with Lk < Lq */
    /* large logits (SD2's overflow case for fp16 scores) */
    run_attention(f, 1, 64, 64, 64, 1, false, 40.0f);
}

/* ---- element-wise ---------------------------------------------------------------- */

typedef int (*unary_fn)(sd_backend *, const sd_tensor *, sd_tensor *);

static void test_elementwise(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    const int n = 2, h = 5, w = 6, c = 8;
    const size_t total = (size_t)n * h * w * c;
    float *a = rand_vec(total, 4.0f), *b = rand_vec(total, 4.0f);
    float *v = rand_vec((size_t)n * c, 1.0f), *g = rand_vec(total * 2, 3.0f);
    float *c2 = rand_vec((size_t)n * h * w * 5, 1.0f);
    float t_host[2] = { 999.0f, 1.5f };
    int ids[2 * 7] = { 0, 5, 9, 3, 3, 1, 8, 2, 2, 7, 0, 9, 4, 6 };
    test_weight *tab16 = weight_new("token_embedding.weight", SD_DTYPE_F16, 2,
                                    (const int64_t[]){ 10, 12 }, 1.0f);
    test_weight *tab32 = weight_new("token_embedding.weight", SD_DTYPE_F32, 2,
                                    (const int64_t[]){ 10, 12 }, 1.0f);
    test_weight *pos = weight_new("position_embedding.weight", SD_DTYPE_F16, 2,
                                  (const int64_t[]){ 9, 12 }, 1.0f);
    enum { N_RESULTS = 11 };
    float *want[N_RESULTS] = { 0 };
    size_t sizes[N_RESULTS];
    const char *names[N_RESULTS] = { "silu", "gelu", "quick_gelu", "geglu", "add",
                                     "add_per_channel", "concat", "upsample", "timestep",
                                     "embedding f16+pos", "embedding f32" };
    for (int pi = -1; pi < N_PREC; pi++) {
        sd_backend *be = pi < 0 ? f->cpu : f->cuda[pi];
        float *got[N_RESULTS];
        sd_tensor ta = tensor_from(be, n, h, w, c, a), tb = tensor_from(be, n, h, w, c, b);
        for (int act = 0; act < 3; act++) {
            sd_tensor o = tensor_from(be, n, h, w, c, NULL);
            assert_int_equal(sd_activation_op(be, (sd_activation)act, &ta, &o), 0);
            got[act] = tensor_get(be, &o);
            sizes[act] = total;
            sd_tensor_free(be, &o);
        }
        sd_tensor tg = tensor_from(be, n, h, w, 2 * c, g), o = tensor_from(be, n, h, w, c, NULL);
        assert_int_equal(sd_geglu(be, &tg, &o), 0);
        got[3] = tensor_get(be, &o);
        sizes[3] = total;
        sd_tensor o2 = tensor_from(be, n, h, w, c, a);
        assert_int_equal(sd_add(be, &o2, &tb, &o2), 0);   /* in place */
        got[4] = tensor_get(be, &o2);
        sizes[4] = total;
        sd_tensor tv = tensor_from(be, n, 1, 1, c, v);
        assert_int_equal(sd_add_per_channel(be, &ta, &tv, &o), 0);
        got[5] = tensor_get(be, &o);
        sizes[5] = total;
        sd_tensor tc2 = tensor_from(be, n, h, w, 5, c2), tcat = tensor_from(be, n, h, w, c + 5, NULL);
        assert_int_equal(sd_concat_channels(be, &ta, &tc2, &tcat), 0);
        got[6] = tensor_get(be, &tcat);
        sizes[6] = (size_t)n * h * w * (c + 5);
        sd_tensor up = tensor_from(be, n, 2 * h, 2 * w, c, NULL);
        assert_int_equal(sd_upsample_nearest2x(be, &ta, &up), 0);
        got[7] = tensor_get(be, &up);
        sizes[7] = total * 4;
        sd_tensor temb = tensor_from(be, 2, 1, 1, 320, NULL);
        assert_int_equal(sd_timestep_embedding(be, t_host, &temb), 0);
        got[8] = tensor_get(be, &temb);
        sizes[8] = 640;
        sd_tensor emb = tensor_from(be, 2, 1, 7, 12, NULL);
        if (sd_embedding(be, &tab16->info, ids, &pos->info, &emb))
            fail_msg("%s embedding: %s", be->ops->name, sd_backend_error(be));
        got[9] = tensor_get(be, &emb);
        sizes[9] = 2 * 7 * 12;
        assert_int_equal(sd_embedding(be, &tab32->info, ids, NULL, &emb), 0);
        got[10] = tensor_get(be, &emb);
        sizes[10] = 2 * 7 * 12;
        /* an id outside the table is an error, not a read out of bounds */
        int bad[2 * 7];
        memcpy(bad, ids, sizeof bad);
        bad[5] = 10;
        assert_int_equal(sd_embedding(be, &tab16->info, bad, NULL, &emb), -1);
        assert_non_null(strstr(sd_backend_error(be), "10"));

        sd_tensor *all[] = { &ta, &tb, &tg, &o, &o2, &tv, &tc2, &tcat, &up, &temb, &emb };
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) sd_tensor_free(be, all[i]);
        for (int r = 0; r < N_RESULTS; r++) {
            if (pi < 0) {
                want[r] = got[r];
                continue;
            }
            char what[128];
            snprintf(what, sizeof what, "%s %s (%s)", f->label, names[r], prec_name(pi));
            /* sin/cos of arguments near 1000 differ by a few ulp of 1000 */
            check_close(got[r], want[r], sizes[r], r == 8 ? 1e-4 : 2e-6, what);
            free(got[r]);
        }
    }
    for (int r = 0; r < N_RESULTS; r++) free(want[r]);
    free(a);
    free(b);
    free(v);
    free(g);
    free(c2);
    weight_free(tab16);
    weight_free(tab32);
    weight_free(pos);
}

/* Nearest upsampling to any larger size (PyTorch's explicit-size rule), as
 * the UNet needs for latents that are not a multiple of 8: 12x12 latents go
 * 12 -> 6 -> 3 -> 2 down and 2 -> 3 -> 6 -> 12 up. Exact against the CPU. */
static void test_upsample_any_size(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    static const int sizes[][4] = { { 2, 2, 3, 3 }, { 3, 3, 6, 6 }, { 5, 7, 9, 13 },
                                    { 4, 6, 8, 12 }, { 1, 1, 3, 2 }, { 6, 6, 6, 7 } };
    const int n = 2, c = 5;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int h = sizes[k][0], w = sizes[k][1], oh = sizes[k][2], ow = sizes[k][3];
        float *in = rand_vec((size_t)n * h * w * c, 2.0f);
        float *want = NULL;
        for (int pi = -1; pi < 1; pi++) {
            sd_backend *be = pi < 0 ? f->cpu : f->cuda[0];
            sd_tensor x = tensor_from(be, n, h, w, c, in), o = tensor_from(be, n, oh, ow, c, NULL);
            if (sd_upsample_nearest2x(be, &x, &o) != 0)
                fail_msg("%s upsample %dx%d -> %dx%d: %s", be->ops->name, h, w, oh, ow,
                         sd_backend_error(be));
            float *got = tensor_get(be, &o);
            if (pi < 0) {
                want = got;
            } else {
                assert_memory_equal(got, want, (size_t)n * oh * ow * c * sizeof(float));
                free(got);
            }
            sd_tensor_free(be, &x);
            sd_tensor_free(be, &o);
        }
        free(want);
        free(in);
    }
    /* shrinking is an error, not a read out of bounds */
    sd_tensor x = tensor_from(f->cuda[0], 1, 4, 4, 2, NULL), o = tensor_from(f->cuda[0], 1, 3, 8, 2, NULL);
    assert_int_equal(sd_upsample_nearest2x(f->cuda[0], &x, &o), -1);
    sd_tensor_free(f->cuda[0], &x);
    sd_tensor_free(f->cuda[0], &o);
}

/* ---- transfers, errors, weight cache, memory ---------------------------------------- */

static void test_layouts(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    const int n = 2, c = 3, h = 5, w = 7;
    size_t total = (size_t)n * c * h * w;
    float *nchw = rand_vec(total, 1.0f);
    float *back = malloc(total * sizeof *back), *nhwc_cpu = NULL;
    assert_non_null(back);
    for (int pi = -1; pi < 1; pi++) {
        sd_backend *be = pi < 0 ? f->cpu : f->cuda[0];
        sd_tensor t = tensor_from(be, n, h, w, c, NULL);
        assert_int_equal(sd_upload_nchw(be, nchw, &t), 0);
        float *nhwc = tensor_get(be, &t);
        assert_int_equal(sd_download_nchw(be, &t, back), 0);
        assert_memory_equal(back, nchw, total * sizeof *back);
        if (pi < 0) {
            nhwc_cpu = nhwc;
        } else {
            assert_memory_equal(nhwc, nhwc_cpu, total * sizeof *back);
            free(nhwc);
        }
        sd_tensor_free(be, &t);
    }
    free(nhwc_cpu);
    free(nchw);
    free(back);
}

static void test_shape_errors(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    sd_backend *be = f->cuda[0];
    int64_t wshape[4] = { 4, 3, 3, 3 };
    test_weight *w = weight_new("conv.weight", SD_DTYPE_F16, 4, wshape, 1.0f);
    sd_tensor x = tensor_from(be, 1, 4, 4, 5, NULL);   /* 5 channels, weight wants 3 */
    sd_tensor o = tensor_from(be, 1, 4, 4, 4, NULL);
    sd_conv_params p = { 1, 1, 1, 1, 1, SD_PAD_ZEROS };
    assert_int_equal(sd_conv2d(be, &x, &w->info, NULL, &p, NULL, &o), -1);
    assert_non_null(strstr(sd_backend_error(be), "channels"));
    /* a weight whose element count does not fit the linear */
    sd_tensor y = tensor_from(be, 1, 4, 4, 7, NULL);
    assert_int_equal(sd_linear(be, &o, &w->info, NULL, NULL, &y), -1);
    assert_non_null(strstr(sd_backend_error(be), "elements"));
    /* attention heads must divide the channels */
    assert_int_equal(sd_attention(be, &y, &y, &y, 2, 0.0f, false, &y), -1);
    sd_tensor_free(be, &x);
    sd_tensor_free(be, &o);
    sd_tensor_free(be, &y);
    weight_free(w);
}

/* The cache is keyed by the data pointer; different bytes at the same
 * address (another model mapped where a closed one was) must not reuse the
 * old copy. */
static void test_weight_cache_refresh(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    sd_backend *be = f->cuda[0];
    int64_t shape[2] = { 4, 8 };
    test_weight *w = weight_new("model.diffusion_model.l.weight", SD_DTYPE_F32, 2, shape, 1.0f);
    float *xin = rand_vec(8, 1.0f);
    sd_tensor x = tensor_from(be, 1, 1, 1, 8, xin), o = tensor_from(be, 1, 1, 1, 4, NULL);
    float first[4], second[4], wv[32];
    assert_int_equal(sd_linear(be, &x, &w->info, NULL, NULL, &o), 0);
    assert_int_equal(sd_download(be, &o, first), 0);
    memcpy(wv, w->info.data, sizeof wv);
    for (int i = 0; i < 32; i++) wv[i] = -wv[i];
    memcpy((void *)w->info.data, wv, sizeof wv);
    assert_int_equal(sd_linear(be, &x, &w->info, NULL, NULL, &o), 0);
    assert_int_equal(sd_download(be, &o, second), 0);
    for (int i = 0; i < 4; i++) assert_true(fabsf(second[i] + first[i]) <= 1e-2f * (1.0f + fabsf(first[i])));
    sd_tensor_free(be, &x);
    sd_tensor_free(be, &o);
    free(xin);
    weight_free(w);
}

static void test_memory_stats(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    sd_backend *be = f->cuda[0];
    sd_cuda_memory m;
    assert_int_equal(sd_backend_cuda_memory(be, &m, true), 0);
    sd_tensor t = tensor_from(be, 1, 64, 64, 64, NULL);
    assert_int_equal(sd_backend_cuda_synchronize(be), 0);
    assert_int_equal(sd_backend_cuda_memory(be, &m, false), 0);
    assert_true(m.activations_peak >= (size_t)64 * 64 * 64 * 4);
    assert_true(m.device_total > 0);
    sd_tensor_free(be, &t);
    assert_int_equal(sd_backend_cuda_memory(f->cpu, &m, false), -1);   /* not CUDA */
    assert_int_equal(sd_backend_cuda_trim(be), 0);
    assert_int_equal(sd_backend_cuda_trim(f->cpu), -1);
}

/* API version 3: the scratch limit and the graph switch (graph runs
 * themselves: test_cuda_engine's test_unet_graphs_equal_eager). */
static int add_one(void *ud)
{
    ++*(int *)ud;
    return 0;
}

/* A conv whose patch matrix does not fit the workspace runs in slices of
 * output rows: the same output as in one slice (the default 128 MB), with
 * slices that do not divide the rows (13x11 = 143 output rows; 10 rows a
 * slice for fp16 patches, 5 for float32 ones: 14 + 3 and 28 + 3), for the
 * fp16 (UNet-named) and TF32/F32 (VAE-named) weights, with bias and
 * residual. Not bit for bit: one slice adds bias and residual in another
 * order (or the GEMM's epilogue does); within float32 rounding. */
static void test_conv_slices_equal_one_slice(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    const int H = 13, W = 11, C = 24, CO = 20;
    const size_t K = (size_t)9 * C, nout = (size_t)H * W * CO;
    const char *names[2] = { "model.diffusion_model.input_blocks.1.0.in_layers.2.weight",
                             "first_stage_model.decoder.up.0.block.1.conv1.weight" };
    sd_conv_params p = { 1, 1, 1, 1, 1, SD_PAD_ZEROS };
    float *xin = rand_vec((size_t)H * W * C, 1.0f), *res = rand_vec(nout, 1.0f);
    for (int wi = 0; wi < 2; wi++) {
        int64_t shape[4] = { CO, C, 3, 3 };
        test_weight *w = weight_new(names[wi], SD_DTYPE_F16, 4, shape, 0.2f);
        test_weight *b = weight_1d("bias", SD_DTYPE_F32, CO, 0.5f);
        for (int pi = 0; pi < N_PREC; pi++) {
            sd_backend *be = f->cuda[pi];
            /* 10 rows of fp16 patches, or 5 of float32 ones */
            const size_t small = K * 2 * 10;
            float *out[2];
            for (int sliced = 0; sliced < 2; sliced++) {
                size_t old = 0;
                assert_int_equal(sd_backend_cuda_set_workspace_limit(be, sliced ? small : 0, &old), 0);
                sd_tensor x = tensor_from(be, 1, H, W, C, xin);
                sd_tensor r = tensor_from(be, 1, H, W, CO, res);
                sd_tensor o = tensor_from(be, 1, H, W, CO, NULL);
                if (sd_conv2d(be, &x, &w->info, &b->info, &p, &r, &o))
                    fail_msg("conv: %s", sd_backend_error(be));
                out[sliced] = tensor_get(be, &o);
                sd_tensor_free(be, &x);
                sd_tensor_free(be, &r);
                sd_tensor_free(be, &o);
                assert_int_equal(sd_backend_cuda_set_workspace_limit(be, old, NULL), 0);
            }
            char what[200];
            snprintf(what, sizeof what, "%s conv %s in %zu-byte slices vs one slice (%s)", f->label,
                     wi ? "VAE" : "UNet", small, prec_name(pi));
            check_close(out[1], out[0], nout, 1e-5, what);
            free(out[0]);
            free(out[1]);
        }
        weight_free(w);
        weight_free(b);
    }
    free(xin);
    free(res);
}

static void test_workspace_limit_and_graph_switch(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    char err[512];
    sd_cuda_options o = { 0, SD_CUDA_PREC_AUTO, 0, f->lib[0] ? f->lib : NULL, 0, false, false, false };
    sd_backend *be = sd_backend_cuda_create(&o, err, sizeof err);
    if (!be) fail_msg("%s", err);
    size_t old = 0;
    assert_int_equal(sd_backend_cuda_set_workspace_limit(be, 1 << 20, &old), 0);
    assert_int_equal((int)(old >> 20), 128);   /* the default */
    assert_int_equal(sd_backend_cuda_set_workspace_limit(be, 0, &old), 0);
    assert_int_equal((int)(old >> 20), 1);
    assert_int_equal(sd_backend_cuda_set_workspace_limit(be, 0, &old), 0);
    assert_int_equal((int)(old >> 20), 128);   /* 0 restored the creation value */
    /* graphs off: graph_run just calls the function, every time */
    assert_false(sd_backend_cuda_graphs_on(be));
    sd_cuda_graph *slot = NULL;
    int calls = 0;
    assert_int_equal(sd_backend_cuda_graph_run(be, &slot, add_one, &calls), 0);
    assert_int_equal(sd_backend_cuda_graph_run(be, &slot, add_one, &calls), 0);
    assert_int_equal(calls, 2);
    assert_int_equal(sd_backend_cuda_set_graphs(be, true), 0);
    assert_true(sd_backend_cuda_graphs_on(be));
    assert_int_equal(sd_backend_cuda_set_graphs(be, false), 0);
    assert_false(sd_backend_cuda_graphs_on(be));
    sd_backend_cuda_graph_free(be, slot);
    /* not CUDA */
    assert_false(sd_backend_cuda_graphs_on(f->cpu));
    assert_int_equal(sd_backend_cuda_set_graphs(f->cpu, true), -1);
    assert_int_equal(sd_backend_cuda_set_workspace_limit(f->cpu, 1, NULL), -1);
    sd_backend_destroy(be);
}

/* API version 2: precision switch, VRAM budget with LRU eviction, dropping
 * one model's copies, pinning host memory. */
static void test_weight_budget_and_drop(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    char err[512];
    sd_cuda_options o = { 0, SD_CUDA_PREC_AUTO, 0, f->lib[0] ? f->lib : NULL, 0, false, false, false };
    sd_backend *be = sd_backend_cuda_create(&o, err, sizeof err);
    if (!be) fail_msg("%s", err);
    sd_cuda_precision old;
    assert_int_equal(sd_backend_cuda_set_precision(be, SD_CUDA_PREC_TF32, &old), 0);
    assert_int_equal(old, SD_CUDA_PREC_AUTO);
    assert_int_equal(sd_backend_cuda_set_precision(be, (sd_cuda_precision)9, NULL), -1);
    assert_int_equal(sd_backend_cuda_set_precision(be, SD_CUDA_PREC_AUTO, NULL), 0);
    /* four 64x64 F32 linear weights of 16 KB each on the device (fp16: 8 KB) */
    enum { NW = 4 };
    test_weight *w[NW];
    int64_t shape[2] = { 64, 64 };
    for (int i = 0; i < NW; i++) {
        char name[64];
        snprintf(name, sizeof name, "model.diffusion_model.l%d.weight", i);
        w[i] = weight_new(name, SD_DTYPE_F32, 2, shape, 1.0f);
    }
    float *xin = rand_vec(64, 1.0f);
    sd_tensor x = tensor_from(be, 1, 1, 1, 64, xin), y = tensor_from(be, 1, 1, 1, 64, NULL);
    float first[64], again[64];
    assert_int_equal(sd_linear(be, &x, &w[0]->info, NULL, NULL, &y), 0);
    assert_int_equal(sd_download(be, &y, first), 0);
    sd_cuda_memory m;
    assert_int_equal(sd_backend_cuda_memory(be, &m, false), 0);
    size_t one = m.weights;
    assert_true(one > 0 && m.weight_uploads == 1);
    /* a budget of two weights: using all four evicts the oldest */
    assert_int_equal(sd_backend_cuda_set_vram_budget(be, 2 * one), 0);
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < NW; i++)
            assert_int_equal(sd_linear(be, &x, &w[i]->info, NULL, NULL, &y), 0);
    assert_int_equal(sd_backend_cuda_memory(be, &m, false), 0);
    assert_true(m.weights <= 2 * one);
    assert_true(m.weight_evictions >= 6);
    assert_int_equal((int)m.weights_budget, (int)(2 * one));
    /* w[0] was evicted; used again it is uploaded again, same result */
    assert_int_equal(sd_linear(be, &x, &w[0]->info, NULL, NULL, &y), 0);
    assert_int_equal(sd_download(be, &y, again), 0);
    assert_memory_equal(first, again, sizeof first);
    /* dropping one tensor's range frees exactly its copy */
    assert_int_equal(sd_backend_cuda_memory(be, &m, false), 0);
    size_t before = m.weights;
    const char *lo = w[0]->info.data;
    assert_true(sd_backend_cuda_drop_weights(be, lo, lo + w[0]->info.nbytes) == (long long)one);
    assert_int_equal(sd_backend_cuda_memory(be, &m, false), 0);
    assert_int_equal((int)(before - m.weights), (int)one);
    /* no budget: nothing is evicted any more */
    assert_int_equal(sd_backend_cuda_set_vram_budget(be, 0), 0);
    unsigned long long ev = m.weight_evictions;
    for (int i = 0; i < NW; i++) assert_int_equal(sd_linear(be, &x, &w[i]->info, NULL, NULL, &y), 0);
    assert_int_equal(sd_backend_cuda_memory(be, &m, false), 0);
    assert_true(m.weight_evictions == ev && m.weights == NW * one);
    /* page-locking host memory, and undoing it */
    assert_int_equal(sd_backend_cuda_pin_host(be, w[1]->info.data, w[1]->info.nbytes), 0);
    assert_int_equal(sd_backend_cuda_memory(be, &m, false), 0);
    assert_true(m.host_pinned >= w[1]->info.nbytes);
    sd_backend_cuda_unpin_host(be, w[1]->info.data);
    assert_int_equal(sd_backend_cuda_memory(be, &m, false), 0);
    assert_int_equal((int)m.host_pinned, 0);
    sd_tensor_free(be, &x);
    sd_tensor_free(be, &y);
    sd_backend_destroy(be);
    for (int i = 0; i < NW; i++) weight_free(w[i]);
    free(xin);
}

#define FX_TESTS                                                                             \
    cmocka_unit_test(test_probe), cmocka_unit_test(test_conv2d), cmocka_unit_test(test_linear), \
        cmocka_unit_test(test_group_norm), cmocka_unit_test(test_layer_norm),                \
        cmocka_unit_test(test_attention), cmocka_unit_test(test_elementwise),                \
        cmocka_unit_test(test_upsample_any_size),                                            \
        cmocka_unit_test(test_layouts), cmocka_unit_test(test_shape_errors),                 \
        cmocka_unit_test(test_weight_cache_refresh), cmocka_unit_test(test_memory_stats),      \
        cmocka_unit_test(test_weight_budget_and_drop),                                        \
        cmocka_unit_test(test_conv_slices_equal_one_slice),                                   \
        cmocka_unit_test(test_workspace_limit_and_graph_switch),                              \
        cmocka_unit_test(test_conv_implicit), cmocka_unit_test(test_conv_implicit_forced_shapes), \
        cmocka_unit_test(test_vae_bf16_gemms), cmocka_unit_test(test_vae_bf16_weight_memory)

int main(void)
{
    const struct CMUnitTest common[] = { cmocka_unit_test(test_missing_library) };
    const struct CMUnitTest gpu[] = { FX_TESTS };
    const struct CMUnitTest emu[] = { FX_TESTS };
    int failed = cmocka_run_group_tests_name("cuda loader", common, NULL, NULL);
    failed += cmocka_run_group_tests_name("cuda (GPU)", gpu, setup_gpu, teardown);
    failed += cmocka_run_group_tests_name("cuda-emu (CUDA kernels emulated on the CPU)", emu,
                                          setup_emu, teardown);
    return failed ? 1 : 0;
}
