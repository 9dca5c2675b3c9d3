/* test_cuda_f16_gemm.c - conv2d and linear of the CUDA backend with fp16
 * activations: every mix of float32 and fp16 input, residual (none, either
 * type, the output itself) and output, against the all-float32 result on
 * the same backend (f16_fixture.h: the difference is the fp16 output's
 * rounding only), through each GEMM path:
 *   - cuBLASLt with bias and residual in the GEMM (fp16 or float32 output),
 *   - row slices that outgrow the 1 MB workspace (typed pre-fill + GemmEx),
 *   - im2col with 8, 4 and 1 channels per thread, circular padding,
 *   - 1x1 convolutions as plain GEMMs,
 *   - the implicit-GEMM kernel (conv_implicit on),
 *   - the float32 stand-in for GEMMs that are not fp16 (F32/TF32 precision),
 * plus the type errors. Groups "cuda (GPU)" (skipped without a GPU) and
 * "cuda-emu" (the kernels on the CPU emulation), as test_cuda_backend.c.
 */
#include "f16_fixture.h"

enum { RES_NONE = 0, RES_F32, RES_F16, RES_INPLACE, N_RES };
static const char *const res_names[N_RES] = { "none", "f32", "f16", "in-place" };

typedef struct gemm_case {
    const char *what;
    bool conv;              /* else a linear over [n, 1, w, cin] */
    int n, h, w, cin, cout;
    int k, stride, pad;     /* conv only */
    bool circular;
} gemm_case;

static void out_size(const gemm_case *c, int *oh, int *ow)
{
    *oh = c->conv ? sd_conv_out_size(c->h, c->k, c->stride, c->pad, c->pad) : c->h;
    *ow = c->conv ? sd_conv_out_size(c->w, c->k, c->stride, c->pad, c->pad) : c->w;
}

static sd_conv_params params_of(const gemm_case *c)
{
    sd_conv_params p = { c->stride, c->pad, c->pad, c->pad, c->pad,
                         c->circular ? SD_PAD_CIRCULAR : SD_PAD_ZEROS };
    return p;
}

/* One call of the layer with the given operand types; the output as host
 * floats (caller frees). */
static float *run_layer(sd_backend *be, const gemm_case *c, const test_weight *w,
                        const test_weight *b, const float *xin, const float *rin, sd_act_type xt,
                        int res, sd_act_type ot)
{
    int oh, ow;
    out_size(c, &oh, &ow);
    sd_tensor x = f16_tensor(be, xt, c->n, c->h, c->w, c->cin, xin);
    sd_tensor out = f16_tensor(be, ot, c->n, oh, ow, c->cout, res == RES_INPLACE ? rin : NULL);
    sd_tensor r = { 0 };
    const sd_tensor *rp = NULL;
    if (res == RES_F32 || res == RES_F16) {
        r = f16_tensor(be, res == RES_F16 ? SD_ACT_F16 : SD_ACT_F32, c->n, oh, ow, c->cout, rin);
        rp = &r;
    } else if (res == RES_INPLACE) {
        rp = &out;
    }
    sd_conv_params p = params_of(c);
    int rc = c->conv ? sd_conv2d(be, &x, &w->info, &b->info, &p, rp, &out)
                     : sd_linear(be, &x, &w->info, &b->info, rp, &out);
    if (rc != 0)
        fail_msg("%s (x %s, residual %s, out %s): %s", c->what, f16_type_name(xt),
                 res_names[res], f16_type_name(ot), sd_backend_error(be));
    float *host = f16_get(be, &out);
    sd_tensor_free(be, &x);
    sd_tensor_free(be, &out);
    sd_tensor_free(be, &r);
    return host;
}

static test_weight *case_weight(const gemm_case *c)
{
    /* "model.diffusion_model." names: the UNet's fp16 GEMMs in AUTO */
    if (c->conv) {
        const int64_t shape[4] = { c->cout, c->cin, c->k, c->k };
        return f16_weight_new("model.diffusion_model.conv.weight", 4, shape,
                              1.0f / sqrtf((float)(c->cin * c->k * c->k)));
    }
    const int64_t shape[2] = { c->cout, c->cin };
    return f16_weight_new("model.diffusion_model.proj.weight", 2, shape,
                          1.0f / sqrtf((float)c->cin));
}

/* A case's weight, bias, input and residual values (fp16-exact) and the
 * output's size. */
typedef struct case_data {
    test_weight *w, *b;
    float *xin, *rin;
    int oh, ow;
    size_t out_n;
} case_data;

static case_data case_data_new(const gemm_case *c)
{
    case_data d;
    out_size(c, &d.oh, &d.ow);
    d.out_n = (size_t)c->n * d.oh * d.ow * c->cout;
    const int64_t bshape[1] = { c->cout };
    d.w = case_weight(c);
    d.b = f16_weight_new("model.diffusion_model.proj.bias", 1, bshape, 0.5f);
    d.xin = f16_rand_vec((size_t)c->n * c->h * c->w * c->cin, 1.0f);
    d.rin = f16_rand_vec(d.out_n, 1.0f);
    return d;
}

static void case_data_free(case_data *d)
{
    free(d->xin);
    free(d->rin);
    test_weight_free(d->w);
    test_weight_free(d->b);
}

/* Every type mix of one case against the float32 reference. */
static void check_case(sd_backend *be, const gemm_case *c)
{
    case_data d = case_data_new(c);
    const test_weight *w = d.w, *b = d.b;
    const float *xin = d.xin, *rin = d.rin;
    const size_t out_n = d.out_n;
    for (int res = 0; res < N_RES; res++) {
        float *want = run_layer(be, c, w, b, xin, rin, SD_ACT_F32,
                                res == RES_NONE ? RES_NONE : RES_F32, SD_ACT_F32);
        for (int xt = 0; xt < 2; xt++)
            for (int ot = 0; ot < 2; ot++) {
                if (res == RES_INPLACE && ot == SD_ACT_F32 && xt == SD_ACT_F32) continue;
                float *got = run_layer(be, c, w, b, xin, rin, (sd_act_type)xt, res,
                                       (sd_act_type)ot);
                char what[160];
                snprintf(what, sizeof what, "%s: x %s, residual %s, out %s", c->what,
                         f16_type_name((sd_act_type)xt), res_names[res],
                         f16_type_name((sd_act_type)ot));
                /* float32 outputs: the same GEMM on the same fp16 values
                 * (summation order aside); fp16 ones: their rounding (and
                 * the bias's, which cuBLASLt takes in the output's type) */
                f16_check_close(got, want, out_n, ot == SD_ACT_F16 ? 2e-3 : 1e-5, what);
                free(got);
            }
        free(want);
    }
    case_data_free(&d);
}

static const gemm_case linear_cases[] = {
    { "linear, one cuBLASLt GEMM", false, 2, 1, 77, 64, 48, 0, 0, 0, false },
    /* 4096 rows x K 256 in fp16 = 2 MB > the 1 MB workspace: two slices */
    { "linear, two row slices", false, 1, 1, 4096, 256, 32, 0, 0, 0, false },
    { "linear, odd sizes", false, 3, 1, 5, 13, 7, 0, 0, 0, false },
};

static const gemm_case conv_cases[] = {
    { "conv 3x3, 8 channels per thread", true, 2, 9, 7, 16, 24, 3, 1, 1, false },
    { "conv 3x3 stride 2, 4 channels per thread", true, 1, 8, 8, 4, 8, 3, 2, 1, false },
    { "conv 3x3 circular, 1 channel per thread", true, 1, 6, 6, 3, 5, 3, 1, 1, true },
    { "conv 1x1 (a plain GEMM)", true, 2, 5, 5, 16, 8, 1, 1, 0, false },
    /* K 288 x 2304 rows in fp16 = 1.3 MB > 1 MB: im2col in two slices */
    { "conv 3x3, two im2col slices", true, 1, 48, 48, 32, 16, 3, 1, 1, false },
};

/* Every case of a table on a backend with fp16 activations. */
static void check_cases(const fixture *f, const gemm_case *cases, size_t n)
{
    sd_backend *be = f16_backend(f);
    for (size_t i = 0; i < n; i++) check_case(be, &cases[i]);
    sd_backend_destroy(be);
}

static void test_linear_f16(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    check_cases(f, linear_cases, sizeof linear_cases / sizeof *linear_cases);
}

static void test_conv_f16(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    check_cases(f, conv_cases, sizeof conv_cases / sizeof *conv_cases);
}

/* The implicit-GEMM kernel reads fp16 inputs where they are and writes
 * fp16 outputs in its epilogue and its split-K sum. */
static void test_conv_implicit_f16(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    sd_backend *be = f16_backend(f);
    assert_int_equal(sd_backend_cuda_set_conv_implicit(be, true), 0);
    static const gemm_case cases[] = {
        { "implicit conv 3x3", true, 2, 9, 7, 16, 24, 3, 1, 1, false },
        { "implicit conv 3x3 stride 2, odd cout", true, 1, 10, 10, 8, 13, 3, 2, 1, false },
        { "implicit conv 3x3, deep K (split K)", true, 1, 4, 4, 64, 16, 3, 1, 1, false },
    };
    sd_cuda_memory m0, m1;
    assert_int_equal(sd_backend_cuda_memory(be, &m0, false), 0);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_case(be, &cases[i]);
    assert_int_equal(sd_backend_cuda_memory(be, &m1, false), 0);
    /* the kernel ran (not im2col) */
    assert_true(m1.conv_implicit_calls > m0.conv_implicit_calls);
    sd_backend_destroy(be);
}

/* GEMMs that are not fp16 (the F32 and TF32 precisions) take fp16
 * operands through float32 copies. The tensors are made in AUTO (the inner
 * type is float32 in the other precisions). */
static void test_widened_precisions(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    sd_backend *be = f16_backend(f);
    const gemm_case *cases[2] = { &linear_cases[0], &conv_cases[0] };
    const sd_cuda_precision precs[2] = { SD_CUDA_PREC_F32, SD_CUDA_PREC_TF32 };
    for (int pi = 0; pi < 2; pi++)
        for (int ci = 0; ci < 2; ci++) {
            const gemm_case *c = cases[ci];
            case_data d = case_data_new(c);
            const test_weight *w = d.w, *b = d.b;
            const int oh = d.oh, ow = d.ow;
            const float *xin = d.xin, *rin = d.rin;
            const size_t out_n = d.out_n;
            sd_tensor x32 = f16_tensor(be, SD_ACT_F32, c->n, c->h, c->w, c->cin, xin);
            sd_tensor r32 = f16_tensor(be, SD_ACT_F32, c->n, oh, ow, c->cout, rin);
            sd_tensor o32 = f16_tensor(be, SD_ACT_F32, c->n, oh, ow, c->cout, NULL);
            sd_tensor x16 = f16_tensor(be, SD_ACT_F16, c->n, c->h, c->w, c->cin, xin);
            sd_tensor o16 = f16_tensor(be, SD_ACT_F16, c->n, oh, ow, c->cout, rin);
            sd_conv_params p = params_of(c);
            assert_int_equal(sd_backend_cuda_set_precision(be, precs[pi], NULL), 0);
            assert_int_equal(be->inner_type, SD_ACT_F32);
            int rc = c->conv ? sd_conv2d(be, &x32, &w->info, &b->info, &p, &r32, &o32)
                             : sd_linear(be, &x32, &w->info, &b->info, &r32, &o32);
            if (rc == 0)   /* fp16 in, fp16 out, the residual in place */
                rc = c->conv ? sd_conv2d(be, &x16, &w->info, &b->info, &p, &o16, &o16)
                             : sd_linear(be, &x16, &w->info, &b->info, &o16, &o16);
            if (rc) fail_msg("%s: %s", c->what, sd_backend_error(be));
            assert_int_equal(sd_backend_cuda_set_precision(be, SD_CUDA_PREC_AUTO, NULL), 0);
            assert_int_equal(be->inner_type, SD_ACT_F16);
            float *want = f16_get(be, &o32), *got = f16_get(be, &o16);
            f16_check_close(got, want, out_n, 2e-3, c->what);
            free(want);
            free(got);
            sd_tensor_free(be, &x32);
            sd_tensor_free(be, &r32);
            sd_tensor_free(be, &o32);
            sd_tensor_free(be, &x16);
            sd_tensor_free(be, &o16);
            case_data_free(&d);
        }
    sd_backend_destroy(be);
}

/* An in-place residual must have the output's type; unknown types are
 * refused. Errors, not crashes. */
static void test_type_errors(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    sd_backend *be = f16_backend(f);
    const gemm_case *c = &linear_cases[0];
    test_weight *w = case_weight(c);
    sd_tensor x = f16_tensor(be, SD_ACT_F16, c->n, c->h, c->w, c->cin, NULL);
    sd_tensor out = f16_tensor(be, SD_ACT_F16, c->n, c->h, c->w, c->cout, NULL);
    sd_tensor as_f32 = out;
    as_f32.type = SD_ACT_F32;
    assert_int_equal(sd_linear(be, &x, &w->info, NULL, &as_f32, &out), -1);
    assert_non_null(strstr(sd_backend_error(be), "in-place residual"));
    sd_tensor bad = x;
    bad.type = (sd_act_type)7;
    assert_int_equal(sd_linear(be, &bad, &w->info, NULL, NULL, &out), -1);
    assert_non_null(strstr(sd_backend_error(be), "unknown activation type 7"));
    float host[4] = { 0 };
    sd_tensor small = f16_tensor(be, SD_ACT_F32, 1, 1, 1, 4, host);
    small.type = (sd_act_type)7;
    assert_int_equal(sd_download(be, &small, host), -1);
    small.type = SD_ACT_F32;
    sd_tensor_free(be, &small);
    sd_tensor_free(be, &x);
    sd_tensor_free(be, &out);
    test_weight_free(w);
    sd_backend_destroy(be);
}

/* The switch: inner type fp16 only in the fp16 precisions and while on. */
static void test_inner_type_switch(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    sd_backend *be = f->cuda[PREC_AUTO];
    assert_int_equal(be->inner_type, SD_ACT_F32);
    assert_int_equal(sd_backend_cuda_set_f16_activations(be, true), 0);
    assert_int_equal(be->inner_type, SD_ACT_F16);
    sd_tensor t;
    assert_int_equal(sd_tensor_new_inner(be, &t, 1, 3, 3, 5), 0);
    assert_int_equal(t.type, SD_ACT_F16);
    const float host[45] = { 1.0f, -2.5f, 65504.0f, 1e-3f };
    float back[45];
    assert_int_equal(sd_upload(be, host, &t), 0);
    assert_int_equal(sd_download(be, &t, back), 0);
    assert_true(back[0] == 1.0f && back[1] == -2.5f && back[2] == 65504.0f);
    assert_true(back[3] == sd_f16_to_f32(sd_f32_to_f16(1e-3f)));
    sd_tensor_free(be, &t);
    assert_int_equal(sd_backend_cuda_set_precision(be, SD_CUDA_PREC_TF32, NULL), 0);
    assert_int_equal(be->inner_type, SD_ACT_F32);
    assert_int_equal(sd_backend_cuda_set_precision(be, SD_CUDA_PREC_AUTO_VAE_BF16, NULL), 0);
    assert_int_equal(be->inner_type, SD_ACT_F16);
    assert_int_equal(sd_backend_cuda_set_precision(be, SD_CUDA_PREC_AUTO, NULL), 0);
    assert_int_equal(sd_backend_cuda_set_f16_activations(be, false), 0);
    assert_int_equal(be->inner_type, SD_ACT_F32);
    /* the CPU backend has no fp16 tensors */
    assert_int_equal(f->cpu->inner_type, SD_ACT_F32);
}

#define F16_GEMM_TESTS                                                                        \
    cmocka_unit_test(test_inner_type_switch), cmocka_unit_test(test_linear_f16),             \
        cmocka_unit_test(test_conv_f16), cmocka_unit_test(test_conv_implicit_f16),           \
        cmocka_unit_test(test_widened_precisions), cmocka_unit_test(test_type_errors)

int main(void)
{
    const struct CMUnitTest gpu[] = { F16_GEMM_TESTS };
    const struct CMUnitTest emu[] = { F16_GEMM_TESTS };
    int failed = cmocka_run_group_tests_name("cuda (GPU): fp16 activations in GEMMs", gpu,
                                             setup_gpu, teardown);
    failed += cmocka_run_group_tests_name("cuda-emu: fp16 activations in GEMMs", emu, setup_emu,
                                          teardown);
    return failed ? 1 : 0;
}
