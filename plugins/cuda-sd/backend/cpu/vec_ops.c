/* vec_ops.c - see vec_ops.h. */
#include "backend/cpu/vec_ops.h"

#include "backend/cpu/vec_math.h"

#ifdef SD_HAVE_X86
SD_AVX2 static float sum_avx2(const float *x, size_t n)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + i));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(x + i + 8));
    }
    float s = sd_hsum8(_mm256_add_ps(a0, a1));
    for (; i < n; i++) s += x[i];
    return s;
}

SD_AVX2 static float sum_sq_dev_avx2(const float *x, float m, size_t n)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, vm = _mm256_set1_ps(m);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), vm);
        __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vm);
        a0 = _mm256_fmadd_ps(d0, d0, a0);
        a1 = _mm256_fmadd_ps(d1, d1, a1);
    }
    float s = sd_hsum8(_mm256_add_ps(a0, a1));
    for (; i < n; i++) s += (x[i] - m) * (x[i] - m);
    return s;
}

SD_AVX2 static void acc_avx2(float *acc, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(acc + i, _mm256_add_ps(_mm256_loadu_ps(acc + i), _mm256_loadu_ps(x + i)));
    for (; i < n; i++) acc[i] += x[i];
}

SD_AVX2 static void acc_sq_dev_avx2(float *acc, const float *x, const float *m, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(m + i));
        _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(d, d, _mm256_loadu_ps(acc + i)));
    }
    for (; i < n; i++) acc[i] += (x[i] - m[i]) * (x[i] - m[i]);
}

SD_AVX2 static void norm_apply_avx2(float *o, const float *x, const float *m, const float *a,
                                    const float *b, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(m + i));
        _mm256_storeu_ps(o + i, _mm256_fmadd_ps(d, _mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    }
    for (; i < n; i++) o[i] = (x[i] - m[i]) * a[i] + b[i];
}

SD_AVX2 static void norm_apply_scalar_avx2(float *o, const float *x, float m, float r,
                                           const float *g, const float *b, size_t n)
{
    __m256 vm = _mm256_set1_ps(m), vr = _mm256_set1_ps(r);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vr);
        _mm256_storeu_ps(o + i, _mm256_fmadd_ps(d, _mm256_loadu_ps(g + i), _mm256_loadu_ps(b + i)));
    }
    for (; i < n; i++) o[i] = (x[i] - m) * r * g[i] + b[i];
}

SD_AVX2 static void mul_avx2(float *o, const float *a, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(o + i), _mm256_loadu_ps(a + i)));
    for (; i < n; i++) o[i] *= a[i];
}

SD_AVX2 static void add_avx2(float *o, const float *a, const float *b, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(o + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    for (; i < n; i++) o[i] = a[i] + b[i];
}
#define AVX2_OR(call) \
    if (avx2) {       \
        call;         \
    }
#else
#define AVX2_OR(call) (void)avx2;
#endif

float vec_sum(bool avx2, const float *x, size_t n)
{
#ifdef SD_HAVE_X86
    if (avx2) return sum_avx2(x, n);
#endif
    (void)avx2;
    float s = 0.0f;
    for (size_t i = 0; i < n; i++) s += x[i];
    return s;
}

float vec_sum_sq_dev(bool avx2, const float *x, float m, size_t n)
{
#ifdef SD_HAVE_X86
    if (avx2) return sum_sq_dev_avx2(x, m, n);
#endif
    (void)avx2;
    float s = 0.0f;
    for (size_t i = 0; i < n; i++) s += (x[i] - m) * (x[i] - m);
    return s;
}

void vec_acc(bool avx2, float *acc, const float *x, size_t n)
{
    AVX2_OR(acc_avx2(acc, x, n); return)
    for (size_t i = 0; i < n; i++) acc[i] += x[i];
}

void vec_acc_sq_dev(bool avx2, float *acc, const float *x, const float *m, size_t n)
{
    AVX2_OR(acc_sq_dev_avx2(acc, x, m, n); return)
    for (size_t i = 0; i < n; i++) acc[i] += (x[i] - m[i]) * (x[i] - m[i]);
}

void vec_norm_apply(bool avx2, float *o, const float *x, const float *m, const float *a,
                    const float *b, size_t n)
{
    AVX2_OR(norm_apply_avx2(o, x, m, a, b, n); return)
    for (size_t i = 0; i < n; i++) o[i] = (x[i] - m[i]) * a[i] + b[i];
}

void vec_norm_apply_scalar(bool avx2, float *o, const float *x, float m, float r, const float *g,
                           const float *b, size_t n)
{
    AVX2_OR(norm_apply_scalar_avx2(o, x, m, r, g, b, n); return)
    for (size_t i = 0; i < n; i++) o[i] = (x[i] - m) * r * g[i] + b[i];
}

void vec_mul(bool avx2, float *o, const float *a, size_t n)
{
    AVX2_OR(mul_avx2(o, a, n); return)
    for (size_t i = 0; i < n; i++) o[i] *= a[i];
}

void vec_add(bool avx2, float *o, const float *a, const float *b, size_t n)
{
    AVX2_OR(add_avx2(o, a, b, n); return)
    for (size_t i = 0; i < n; i++) o[i] = a[i] + b[i];
}
