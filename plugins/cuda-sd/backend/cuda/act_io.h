/* act_io.h - typed access to activation elements for the kernels that take
 * float32 and fp16 operands in any mix (elementwise.cu, norm.cu).
 *
 * A kernel templated on its operands' element types (T = float, or h16 for
 * fp16 bits) reads and writes them with ld1/st1 (one element) or ld4/st4
 * (four consecutive elements: one 16-byte access for float32, one 8-byte
 * access for fp16); the math is float32 either way. The float32
 * instantiations compile to exactly the plain float code. A launch picks an
 * instantiation from a table indexed by the operands' types (CU_T2_TABLE,
 * CU_T3_TABLE with cu_ti2/cu_ti3), so every instantiation of one kernel
 * must take its pointers as void.
 */
#ifndef SD_CUDA_ACT_IO_H
#define SD_CUDA_ACT_IO_H

#include "backend/cuda/internal.h"

typedef uint16_t h16;   /* an fp16 activation element (its bits) */

__device__ static inline float ld1(const float *p, int64_t i) { return p[i]; }
__device__ static inline float ld1(const h16 *p, int64_t i) { return cu_h2f(p[i]); }
__device__ static inline void st1(float *p, int64_t i, float v) { p[i] = v; }
__device__ static inline void st1(h16 *p, int64_t i, float v) { p[i] = cu_f2h(v); }

/* Elements 4 i4 .. 4 i4 + 3; p must be aligned to 4 elements (cu_aligned4). */
__device__ static inline float4 ld4(const float *p, int64_t i4) { return ((const float4 *)p)[i4]; }
__device__ static inline float4 ld4(const h16 *p, int64_t i4)
{
    const ushort4 u = ((const ushort4 *)p)[i4];
    return make_float4(cu_h2f(u.x), cu_h2f(u.y), cu_h2f(u.z), cu_h2f(u.w));
}
__device__ static inline void st4(float *p, int64_t i4, float4 v) { ((float4 *)p)[i4] = v; }
__device__ static inline void st4(h16 *p, int64_t i4, float4 v)
{
    ushort4 u;
    u.x = cu_f2h(v.x);
    u.y = cu_f2h(v.y);
    u.z = cu_f2h(v.z);
    u.w = cu_f2h(v.w);
    ((ushort4 *)p)[i4] = u;
}

/* Instantiations of a kernel template by operand types, in the order of
 * cu_ti2(a, out) / cu_ti3(a, b, out): bit set = fp16, the output lowest. */
#define CU_T2_TABLE(K) { K<float, float>, K<float, h16>, K<h16, float>, K<h16, h16> }
#define CU_T3_TABLE(K)                                                                       \
    {                                                                                        \
        K<float, float, float>, K<float, float, h16>, K<float, h16, float>,                  \
            K<float, h16, h16>, K<h16, float, float>, K<h16, float, h16>,                    \
            K<h16, h16, float>, K<h16, h16, h16>                                             \
    }
static inline int cu_ti2(const sd_tensor *a, const sd_tensor *out)
{
    return (cu_is_f16(a) ? 2 : 0) | (cu_is_f16(out) ? 1 : 0);
}
static inline int cu_ti3(const sd_tensor *a, const sd_tensor *b, const sd_tensor *out)
{
    return (cu_is_f16(a) ? 4 : 0) | (cu_is_f16(b) ? 2 : 0) | (cu_is_f16(out) ? 1 : 0);
}

/* t's data may be accessed 4 elements at a time (ld4/st4). */
static inline bool cu_aligned4(const sd_tensor *t)
{
    return (uintptr_t)t->data % (4 * sd_tensor_elem_size(t)) == 0;
}

static inline const char *cu_type_name(const sd_tensor *t) { return cu_is_f16(t) ? "fp16" : "float32"; }

/* An op computing in place (out's data is in's) needs both of one element
 * type: each element is rewritten where it was read, which an fp16 output
 * over a float32 input (or the reverse) would not be. 0, or -1 with the
 * error set. */
static inline int cu_inplace_ok(cuda_backend *cb, const char *op, const sd_tensor *in,
                                const sd_tensor *out)
{
    if (in->data != out->data || in->type == out->type) return 0;
    return cu_fail(cb, "%s: in place (output aliases an input) needs one element type, not %s "
                       "input and %s output",
                   op, cu_type_name(in), cu_type_name(out));
}

#endif
