/* ops_math.h - the scalar element-wise functions of the networks, written
 * once so every backend computes the same formulas: the CPU backend uses them
 * for tails and as the reference of its vector kernels, a CUDA backend can
 * call them from device code (SD_OPS_FN adds __host__ __device__ there). */
#ifndef SD_BACKEND_OPS_MATH_H
#define SD_BACKEND_OPS_MATH_H

#include <math.h>

#ifdef __CUDACC__
#define SD_OPS_FN static inline __host__ __device__
#else
#define SD_OPS_FN static inline
#endif

/* SiLU / swish: x * sigmoid(x). */
SD_OPS_FN float sd_silu_f(float x) { return x / (1.0f + expf(-x)); }

/* Exact GELU (PyTorch's default): 0.5 x (1 + erf(x / sqrt(2))). */
SD_OPS_FN float sd_gelu_f(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

/* OpenAI CLIP's quick GELU: x * sigmoid(1.702 x). */
SD_OPS_FN float sd_quick_gelu_f(float x) { return x / (1.0f + expf(-1.702f * x)); }

/* Frequency k of the sinusoidal timestep embedding with `half` frequencies
 * (ldm timestep_embedding, max_period 10000). Computed as torch does:
 * exp(-ln(10000) * k / half) in float32. */
SD_OPS_FN float sd_timestep_freq(int k, int half)
{
    return expf(-9.21034037197618f * (float)k / (float)half);
}

#endif
