/* vec_math.h - AVX2/FMA versions of the element-wise math the CPU kernels
 * spend time in (exp for softmax, SiLU, GELU), 8 floats at a time.
 *
 * Every function here carries __attribute__((target("avx2,fma"))): the
 * plugin is built for baseline x86-64, and the kernels that call these pick
 * them at run time (cpu_has_avx2()) with the scalar ops_math.h formulas as
 * the fallback. Accuracy: exp within 2 ulp (Cephes polynomial), erf within
 * 1.5e-7 absolute (Abramowitz-Stegun 7.1.26) - far inside the engine's 1e-4
 * single-pass tolerance.
 */
#ifndef SD_CPU_VEC_MATH_H
#define SD_CPU_VEC_MATH_H

#include <stdbool.h>

#if defined(__x86_64__) || defined(__i386__)
#define SD_HAVE_X86 1
#include <immintrin.h>
#define SD_AVX2 __attribute__((target("avx2,fma")))

/* exp(x) for 8 floats; inputs below -87.3 give ~1e-38, above 88.7 inf-free
 * huge values. */
SD_AVX2 static inline __m256 sd_exp8(__m256 x)
{
    const __m256 hi = _mm256_set1_ps(88.3762626647949f);
    const __m256 lo = _mm256_set1_ps(-87.3365478515625f);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
    fx = _mm256_floor_ps(fx);
    /* r = x - n ln2 in two pieces for accuracy */
    __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201E-1f));
    __m256 r2 = _mm256_mul_ps(r, r);
    y = _mm256_fmadd_ps(y, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i n = _mm256_cvtps_epi32(fx);
    n = _mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

SD_AVX2 static inline __m256 sd_silu8(__m256 x)
{
    __m256 e = sd_exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

SD_AVX2 static inline __m256 sd_quick_gelu8(__m256 x)
{
    __m256 e = sd_exp8(_mm256_mul_ps(x, _mm256_set1_ps(-1.702f)));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

/* erf(x), odd extension of the x >= 0 approximation. */
SD_AVX2 static inline __m256 sd_erf8(__m256 x)
{
    const __m256 sign_mask = _mm256_set1_ps(-0.0f);
    __m256 sign = _mm256_and_ps(x, sign_mask);
    __m256 a = _mm256_andnot_ps(sign_mask, x);
    __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f),
                             _mm256_fmadd_ps(a, _mm256_set1_ps(0.3275911f), _mm256_set1_ps(1.0f)));
    __m256 p = _mm256_set1_ps(1.061405429f);
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
    p = _mm256_mul_ps(p, t);
    __m256 e = sd_exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(a, a)));
    __m256 y = _mm256_fnmadd_ps(p, e, _mm256_set1_ps(1.0f));
    return _mm256_or_ps(y, sign);
}

SD_AVX2 static inline __m256 sd_gelu8(__m256 x)
{
    __m256 e = sd_erf8(_mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f)));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x),
                         _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

/* Horizontal sum / max of 8 floats. */
SD_AVX2 static inline float sd_hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

SD_AVX2 static inline float sd_hmax8(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif /* x86 */

#endif
