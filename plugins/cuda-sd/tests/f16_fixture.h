/* f16_fixture.h - what the fp16-activation tests of the CUDA backend share
 * (test_cuda_f16_*.c): a backend with fp16 activations on, tensors of
 * either type filled from host floats, and the comparison.
 *
 * How those tests check an op: the same op runs on float32 operands (the
 * reference, the backend's float32 path that test_cuda_backend.c checks
 * against the CPU backend) and on every mix of float32 and fp16 operands,
 * with inputs rounded to fp16 values first, so that an fp16 operand holds
 * exactly what its float32 twin holds. What may differ is then only the
 * rounding of fp16 outputs (and of intermediates an op keeps in its
 * output's type), so the tolerances are tight: a few fp16 ulps of the
 * output's largest magnitude.
 * Header-only, for test programs; uses cuda_fixture.h's groups.
 */
#ifndef CUDA_SD_TESTS_F16_FIXTURE_H
#define CUDA_SD_TESTS_F16_FIXTURE_H

#include "cuda_fixture.h"
#include "test_data.h"

#include <math.h>

#include "backend/ops.h"
#include "engine/half.h"
#include "engine/model_file.h"

static uint64_t f16_rng_state = 0x9e3779b97f4a7c15ull;

/* Uniform in [-1, 1). */
static inline float f16_frand(void)
{
    f16_rng_state = f16_rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((f16_rng_state >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

/* n random values in [-scale, scale), already fp16 values (exactly
 * representable), so float32 and fp16 tensors of them hold the same. */
static inline float *f16_rand_vec(size_t n, float scale)
{
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) v[i] = sd_f16_to_f32(sd_f32_to_f16(f16_frand() * scale));
    return v;
}

/* A CUDA backend in AUTO precision with fp16 activations on (its inner
 * type is fp16), from the same library as the fixture's. */
static inline sd_backend *f16_backend(const fixture *f)
{
    sd_cuda_options opt = { 0 };
    opt.precision = SD_CUDA_PREC_AUTO;
    opt.lib_path = f->lib[0] ? f->lib : NULL;
    opt.workspace_mb = 1;       /* small: the sliced paths run on small tensors */
    opt.f16_activations = true;
    char err[512];
    sd_backend *be = sd_backend_cuda_create(&opt, err, sizeof err);
    if (!be) fail_msg("cuda backend with fp16 activations: %s", err);
    assert_int_equal(be->inner_type, SD_ACT_F16);
    return be;
}

/* A tensor of the given type on be (which must have fp16 activations on
 * for SD_ACT_F16), filled from host floats when host is not NULL. */
static inline sd_tensor f16_tensor(sd_backend *be, sd_act_type type, int n, int h, int w, int c,
                                   const float *host)
{
    sd_tensor t;
    int rc = type == SD_ACT_F16 ? sd_tensor_new_inner(be, &t, n, h, w, c)
                                : sd_tensor_new(be, &t, n, h, w, c);
    if (rc != 0) fail_msg("alloc: %s", sd_backend_error(be));
    assert_int_equal(t.type, type);
    if (host && sd_upload(be, host, &t) != 0) fail_msg("upload: %s", sd_backend_error(be));
    return t;
}

/* The tensor's values as host floats (caller frees). */
static inline float *f16_get(sd_backend *be, const sd_tensor *t)
{
    float *h = malloc(sd_tensor_numel_of(t) * sizeof *h);
    assert_non_null(h);
    if (sd_download(be, t, h) != 0) fail_msg("download: %s", sd_backend_error(be));
    return h;
}

/* max |got - want| <= tol * max |want| (test_data.h). */
static inline void f16_check_close(const float *got, const float *want, size_t n, double tol,
                                   const char *what)
{
    test_check_close(got, want, n, tol, what);
}

/* An F16 weight of random values in [-scale, scale) (test_data.h).
 * Free with test_weight_free. */
static inline test_weight *f16_weight_new(const char *name, int ndim, const int64_t *shape,
                                          float scale)
{
    return test_weight_new(name, SD_DTYPE_F16, ndim, shape, scale, 0.0f, false, f16_frand);
}

/* "f32" / "f16", for messages. */
static inline const char *f16_type_name(sd_act_type t) { return t == SD_ACT_F16 ? "f16" : "f32"; }

#endif
