/* rng.h - torch-compatible CPU random numbers (torch.manual_seed +
 * torch.randn / torch.rand, float32, the default CPU generator), and the
 * horde's seed-string rule.
 *
 * Bit-exact against torch's scalar ("default" CPU capability) kernels: the
 * golden/rng/torch_rng_scalar_kernels.safetensors values. Optionally
 * SD_RNG_MATH_AVX2 emulates the AVX2 kernel that x86 torch builds run by
 * default (Cephes log/sincos polynomials with GCC's FMA contractions,
 * spec/sd-engine.md §4.1); it is written with fmaf() so it runs anywhere.
 *
 * Conventions (golden/README.md §1): the seed is a 64-bit value (negative
 * seeds wrap, -1 = 2^64-1) but only its low 32 bits seed MT19937. randn with
 * numel >= 16 uses the 16-block Box-Muller path; numel < 16 the
 * per-element double path with a cached spare that survives between calls
 * and is cleared by seeding.
 *
 * The generator is a plain value: no global state, no allocation. Not
 * thread-safe per instance (each thread uses its own).
 */
#ifndef SD_ENGINE_RNG_H
#define SD_ENGINE_RNG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SD_RNG_MATH_SCALAR = 0,     /* torch "default" kernels: glibc logf/cosf/sinf */
    SD_RNG_MATH_AVX2            /* emulation of torch's AVX2 normal_fill */
} sd_rng_math;

typedef struct sd_rng {
    uint32_t state[624];
    int next;                   /* index of the next state word */
    int left;                   /* words left before the next twist (torch naming) */
    bool has_spare;             /* cached second normal of the double path */
    double spare;
    sd_rng_math math;
} sd_rng;

/* torch.manual_seed(seed): also clears the cached spare normal. math picks
 * the randn kernel emulated for numel >= 16. */
void sd_rng_seed(sd_rng *r, uint64_t seed, sd_rng_math math);

/* One raw 32-bit MT19937 output. */
uint32_t sd_rng_u32(sd_rng *r);

/* torch.rand(n) (float32): each element (w & 0xFFFFFF) * 2^-24. */
void sd_rng_rand(sd_rng *r, float *out, size_t n);

/* torch.randn(n) (float32, contiguous) of any shape with numel n. */
void sd_rng_randn(sd_rng *r, float *out, size_t n);

/* The horde's seed rule (AI-Horde seed_to_int, spec/horde-api.md §1.1):
 * a string of ASCII digits is a decimal number; any other text is the
 * little-endian integer of its UTF-8 bytes; then the absolute value is
 * shifted right by 32 while it is >= 2^32 (so the result is < 2^32; this
 * works on arbitrarily long strings). Returns 0 and *seed, or -1 for NULL
 * or "" (the horde then picks a random seed: the caller's choice). */
int sd_seed_from_string(const char *text, uint64_t *seed);

/* Parses a seed as the golden files and torch.manual_seed take it: a
 * decimal integer in [-2^63, 2^64), negative values wrapping (two's
 * complement). Returns 0, or -1 for anything else (torch rejects >= 2^64). */
int sd_seed_parse_u64(const char *text, uint64_t *seed);

#ifdef __cplusplus
}
#endif
#endif
