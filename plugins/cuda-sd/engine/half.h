/* half.h - IEEE fp16 and bfloat16 <-> float32 conversion, header-only.
 *
 * Exact: every fp16/bf16 value converts to the identical float (subnormals,
 * infinities and NaN payloads included). float -> half/bf16 rounds to nearest
 * even, overflowing to infinity and keeping NaN a (quiet) NaN, as torch's
 * .half() / .bfloat16() do. Pure integer code, usable from CUDA device code
 * later (SD_HALF_FN adds __host__ __device__ under nvcc).
 */
#ifndef SD_ENGINE_HALF_H
#define SD_ENGINE_HALF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define SD_HALF_FN static inline __host__ __device__
#else
#define SD_HALF_FN static inline
#endif

SD_HALF_FN uint32_t sd_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
SD_HALF_FN float sd_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* fp16 -> f32 */
SD_HALF_FN float sd_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {                       /* inf / NaN: keep the payload */
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {                   /* normal */
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {                   /* signed zero */
        bits = sign;
    } else {                                 /* subnormal: normalise */
        uint32_t e = 113u;                   /* 127 - 15 + 1 */
        while (!(man & 0x400u)) { man <<= 1; e--; }
        bits = sign | (e << 23) | ((man & 0x3ffu) << 13);
    }
    return sd_bits_f32(bits);
}

/* f32 -> fp16, round to nearest even */
SD_HALF_FN uint16_t sd_f32_to_f16(float f)
{
    uint32_t x = sd_f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) {               /* inf or NaN */
        if (absx == 0x7f800000u) return (uint16_t)(sign | 0x7c00u);
        return (uint16_t)(sign | 0x7e00u | ((absx >> 13) & 0x3ffu));
    }
    if (absx >= 0x477ff000u)                 /* rounds to >= 65520: inf */
        return (uint16_t)(sign | 0x7c00u);
    if (absx < 0x38800000u) {                /* below 2^-14: subnormal or 0 */
        if (absx < 0x33000000u) return sign; /* < 2^-25: rounds to zero */
        uint32_t e = absx >> 23;
        uint32_t man = (absx & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e;           /* 14..24 */
        uint32_t half_val = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1u);
        uint32_t halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (half_val & 1u))) half_val++;
        return (uint16_t)(sign | half_val);
    }
    /* normal: rebias exponent, round the 13 dropped bits */
    uint32_t v = absx - 0x38000000u;         /* exponent 127 -> 15 */
    uint32_t rem = v & 0x1fffu;
    v >>= 13;
    if (rem > 0x1000u || (rem == 0x1000u && (v & 1u))) v++;
    return (uint16_t)(sign | v);
}

/* bf16 -> f32: the top half of the float */
SD_HALF_FN float sd_bf16_to_f32(uint16_t b) { return sd_bits_f32((uint32_t)b << 16); }

/* f32 -> bf16, round to nearest even; NaN stays a quiet NaN */
SD_HALF_FN uint16_t sd_f32_to_bf16(float f)
{
    uint32_t x = sd_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    uint32_t lsb = (x >> 16) & 1u;
    x += 0x7fffu + lsb;
    return (uint16_t)(x >> 16);
}

/* Bulk conversions; src may be unaligned (read byte-wise via memcpy). */
static inline void sd_f16_to_f32_n(const void *src, float *dst, size_t n)
{
    const unsigned char *p = (const unsigned char *)src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = sd_f16_to_f32(h);
    }
}

static inline void sd_bf16_to_f32_n(const void *src, float *dst, size_t n)
{
    const unsigned char *p = (const unsigned char *)src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = sd_bf16_to_f32(h);
    }
}

static inline void sd_f32_to_f16_n(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = sd_f32_to_f16(src[i]);
}

#endif
