/* vec_ops.h - row-level float kernels of the CPU backend's norms and
 * element-wise ops, each with an AVX2 body (chosen when avx2 is true: the
 * caller passes cpu_backend.avx2) and a portable scalar body. */
#ifndef SD_CPU_VEC_OPS_H
#define SD_CPU_VEC_OPS_H

#include <stdbool.h>
#include <stddef.h>

/* sum of x[0..n) */
float vec_sum(bool avx2, const float *x, size_t n);
/* sum of (x[i] - m)^2 */
float vec_sum_sq_dev(bool avx2, const float *x, float m, size_t n);
/* acc[i] += x[i] */
void vec_acc(bool avx2, float *acc, const float *x, size_t n);
/* acc[i] += (x[i] - m[i])^2 */
void vec_acc_sq_dev(bool avx2, float *acc, const float *x, const float *m, size_t n);
/* o[i] = (x[i] - m[i]) * a[i] + b[i]  (GroupNorm apply, per-channel m, a) */
void vec_norm_apply(bool avx2, float *o, const float *x, const float *m, const float *a,
                    const float *b, size_t n);
/* o[i] = (x[i] - m) * r * g[i] + b[i]  (LayerNorm apply) */
void vec_norm_apply_scalar(bool avx2, float *o, const float *x, float m, float r, const float *g,
                           const float *b, size_t n);
/* o[i] *= a[i] */
void vec_mul(bool avx2, float *o, const float *a, size_t n);
/* o[i] = a[i] + b[i] */
void vec_add(bool avx2, float *o, const float *a, const float *b, size_t n);

#endif
