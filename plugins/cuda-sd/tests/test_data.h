/* test_data.h - what the CUDA backend's op tests (test_cuda_backend.c,
 * test_cuda_f16_*.c) share: weights as a model file presents them (host
 * bytes in F32, F16 or BF16 holding offset + scale * rnd() values, PyTorch
 * shape) and the closeness check of their results.
 * Header-only, for test programs.
 */
#ifndef CUDA_SD_TESTS_TEST_DATA_H
#define CUDA_SD_TESTS_TEST_DATA_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/half.h"
#include "engine/model_file.h"

typedef struct test_weight {
    sd_tensor_info info;
    void *bytes;                /* what info.data points into (owned) */
    char name[128];
} test_weight;

/* rnd: the test's generator (values in [-1, 1)). misalign: the data starts
 * one byte into its allocation, as a memory-mapped tensor may. Free with
 * test_weight_free. */
static inline test_weight *test_weight_new(const char *name, sd_dtype dt, int ndim,
                                           const int64_t *shape, float scale, float offset,
                                           bool misalign, float (*rnd)(void))
{
    test_weight *w = calloc(1, sizeof *w);
    assert_non_null(w);
    snprintf(w->name, sizeof w->name, "%s", name);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        w->info.shape[i] = shape[i];
        n *= (size_t)shape[i];
    }
    w->info.name = w->name;
    w->info.dtype = dt;
    w->info.ndim = ndim;
    const size_t esz = dt == SD_DTYPE_F32 ? 4 : 2;
    unsigned char *raw = malloc(n * esz + 1);
    assert_non_null(raw);
    w->bytes = raw;
    unsigned char *data = raw + (misalign ? 1 : 0);
    for (size_t i = 0; i < n; i++) {
        const float v = offset + rnd() * scale;
        if (dt == SD_DTYPE_F32) {
            memcpy(data + 4 * i, &v, 4);
        } else {
            const uint16_t h = dt == SD_DTYPE_F16 ? sd_f32_to_f16(v) : sd_f32_to_bf16(v);
            memcpy(data + 2 * i, &h, 2);
        }
    }
    w->info.data = data;
    w->info.nbytes = n * esz;
    return w;
}

static inline void test_weight_free(test_weight *w)
{
    if (!w) return;
    free(w->bytes);
    free(w);
}

/* max |got - want| <= tol * max |want| (a floor for all-zero references);
 * NaN fails. */
static inline void test_check_close(const float *got, const float *want, size_t n, double tol,
                                    const char *what)
{
    double maxref = 0.0, maxdiff = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(want[i]) > maxref) maxref = fabs(want[i]);
        double d = fabs((double)got[i] - (double)want[i]);
        if (!(d <= maxdiff)) {  /* also catches NaN */
            maxdiff = isnan(d) ? INFINITY : d;
            at = i;
        }
    }
    double bound = tol * (maxref > 1e-6 ? maxref : 1e-6);
    if (!(maxdiff <= bound))
        fail_msg("%s: max |diff| %.3g at %zu (got %.6g, want %.6g) > %.3g (tol %.1e of max %.4g)",
                 what, maxdiff, at, got[at], want[at], bound, tol, maxref);
}

#endif
