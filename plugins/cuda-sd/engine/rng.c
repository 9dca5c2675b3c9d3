/* rng.c - see rng.h. Algorithms from PyTorch's CPU generator (MT19937
 * engine, uniform transformation, normal_fill / normal_fill_16 and the
 * AVX2 variant with avx_mathfun's Cephes log/sincos), re-written from their
 * description in spec/sd-engine.md §4.1 and golden/README.md §1.
 *
 * Floating-point notes: the project compiles with -std=c11, which turns
 * off FMA contraction, so every float operation below rounds exactly where
 * it is written; the AVX2 emulation spells the contractions torch's build
 * made as explicit fmaf() calls. */
#include "rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MT_N 624
#define MT_M 397
#define MATRIX_A 0x9908b0dfu
#define UMASK 0x80000000u
#define LMASK 0x7fffffffu

void sd_rng_seed(sd_rng *r, uint64_t seed, sd_rng_math math)
{
    r->state[0] = (uint32_t)(seed & 0xffffffffu);   /* only the low 32 bits count */
    for (int j = 1; j < MT_N; j++)
        r->state[j] = 1812433253u * (r->state[j - 1] ^ (r->state[j - 1] >> 30)) + (uint32_t)j;
    r->left = 1;
    r->next = 0;
    r->has_spare = false;
    r->spare = 0.0;
    r->math = math;
}

static uint32_t mix_twist(uint32_t u, uint32_t v)
{
    return (((u & UMASK) | (v & LMASK)) >> 1) ^ ((v & 1u) ? MATRIX_A : 0u);
}

static void twist(sd_rng *r)
{
    uint32_t *s = r->state;
    r->left = MT_N;
    r->next = 0;
    int j = 0;
    for (; j < MT_N - MT_M; j++) s[j] = s[j + MT_M] ^ mix_twist(s[j], s[j + 1]);
    for (; j < MT_N - 1; j++) s[j] = s[j + MT_M - MT_N] ^ mix_twist(s[j], s[j + 1]);
    s[MT_N - 1] = s[MT_M - 1] ^ mix_twist(s[MT_N - 1], s[0]);
}

uint32_t sd_rng_u32(sd_rng *r)
{
    if (--r->left <= 0) twist(r);
    uint32_t y = r->state[r->next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

static float uniform_f32(sd_rng *r)
{
    return (float)(sd_rng_u32(r) & 0xffffffu) * (1.0f / 16777216.0f);
}

static double uniform_f64(sd_rng *r)
{
    uint64_t hi = sd_rng_u32(r), lo = sd_rng_u32(r);
    uint64_t x = (hi << 32) | lo;
    return (double)(x & ((UINT64_C(1) << 53) - 1)) * (1.0 / 9007199254740992.0);
}

void sd_rng_rand(sd_rng *r, float *out, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = uniform_f32(r);
}

/* ---- the scalar kernel ------------------------------------------------------ */
static void box_muller16_scalar(float *d)
{
    const float stdv = 1.0f, mean = 0.0f;
    for (int j = 0; j < 8; j++) {
        const float u1 = 1.0f - d[j];
        const float u2 = d[j + 8];
        const float radius = sqrtf(-2.0f * logf(u1));
        const float theta = (float)(2.0 * 3.14159265358979323846 * (double)u2);
        float c = radius * cosf(theta), s = radius * sinf(theta);
        d[j] = c * stdv + mean;                 /* + 0.0f turns -0 into +0, as torch does */
        d[j + 8] = s * stdv + mean;
    }
}

/* ---- emulation of torch's AVX2 kernel (Cephes, avx_mathfun.h) ---------------- */
static float bits_to_f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t f_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static float cephes_logf(float x)
{
    const float min_norm = bits_to_f(0x00800000u);
    if (x < min_norm) x = min_norm;             /* _mm256_max_ps(x, min_norm_pos) */
    uint32_t bits = f_to_bits(x);
    float e = (float)((int32_t)(bits >> 23) - 127);
    e = e + 1.0f;
    float m = bits_to_f((bits & ~0x7f800000u) | f_to_bits(0.5f));
    if (m < 0.707106781186547524f) {
        e = e - 1.0f;
        x = (m - 1.0f) + m;
    } else {
        x = m - 1.0f;
    }
    float z = x * x;
    float y = 7.0376836292e-2f;
    y = fmaf(y, x, -1.1514610310e-1f);
    y = fmaf(y, x, 1.1676998740e-1f);
    y = fmaf(y, x, -1.2420140846e-1f);
    y = fmaf(y, x, 1.4249322787e-1f);
    y = fmaf(y, x, -1.6668057665e-1f);
    y = fmaf(y, x, 2.0000714765e-1f);
    y = fmaf(y, x, -2.4999993993e-1f);
    y = fmaf(y, x, 3.3333331174e-1f);
    y = y * x;
    y = fmaf(y, z, e * -2.12194440e-4f);
    y = fmaf(z, -0.5f, y);
    x = x + y;
    x = fmaf(e, 0.693359375f, x);
    return x;
}

static void cephes_sincosf(float theta, float *s_out, float *c_out)
{
    float x = fabsf(theta);                     /* theta >= 0 here */
    int32_t j = (int32_t)(x * 1.27323954473516f);
    j = (j + 1) & ~1;
    float y = (float)j;
    x = fmaf(y, -0.78515625f, x);
    x = fmaf(y, -2.4187564849853515625e-4f, x);
    x = fmaf(y, -3.77489497744594108e-8f, x);
    float z = x * x;
    float c = fmaf(fmaf(2.443315711809948e-5f, z, -1.388731625493765e-3f), z, 4.166664568298827e-2f);
    c = c * z;
    c = fmaf(c, z, -(0.5f * z));
    c = c + 1.0f;
    float s = fmaf(fmaf(-1.9515295891e-4f, z, 8.3321608736e-3f), z, -1.6666654611e-1f);
    s = s * z;
    s = fmaf(s, x, x);
    float sn, cs;
    if ((j & 2) == 0) { sn = s + 0.0f; cs = c + 0.0f; }   /* the blend adds a zero */
    else { sn = c + 0.0f; cs = s + 0.0f; }
    if (j & 4) sn = -sn;
    if ((~(j - 2)) & 4) cs = -cs;
    *s_out = sn;
    *c_out = cs;
}

static void box_muller16_avx2(float *d)
{
    const float two_pi = (float)(2.0 * 3.14159265358979323846);
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j];
        float u2 = d[j + 8];
        float radius = sqrtf(-2.0f * cephes_logf(u1));
        float theta = two_pi * u2;
        float sn, cs;
        cephes_sincosf(theta, &sn, &cs);
        d[j] = fmaf(radius * cs, 1.0f, 0.0f);
        d[j + 8] = fmaf(radius * sn, 1.0f, 0.0f);
    }
}

/* ---- randn -------------------------------------------------------------------- */
static float normal_double_path(sd_rng *r)
{
    if (r->has_spare) {
        r->has_spare = false;
        return (float)(r->spare * 1.0 + 0.0);
    }
    const double u1 = uniform_f64(r);
    const double u2 = uniform_f64(r);
    const double radius = sqrt(-2.0 * log1p(-u2));
    const double theta = 2.0 * 3.14159265358979323846 * u1;
    r->spare = radius * sin(theta);
    r->has_spare = true;
    return (float)(radius * cos(theta) * 1.0 + 0.0);
}

void sd_rng_randn(sd_rng *r, float *out, size_t n)
{
    if (n < 16) {
        for (size_t i = 0; i < n; i++) out[i] = normal_double_path(r);
        return;
    }
    void (*block)(float *) = r->math == SD_RNG_MATH_AVX2 ? box_muller16_avx2 : box_muller16_scalar;
    for (size_t i = 0; i < n; i++) out[i] = uniform_f32(r);
    for (size_t i = 0; i + 16 <= n; i += 16) block(out + i);
    if (n % 16 != 0) {
        /* fresh uniforms for the last 16 slots, transformed again */
        float *tail = out + n - 16;
        for (int i = 0; i < 16; i++) tail[i] = uniform_f32(r);
        block(tail);
    }
}

/* ---- seeds -------------------------------------------------------------------- */
int sd_seed_parse_u64(const char *text, uint64_t *seed)
{
    if (!text || !*text) return -1;
    const char *p = text;
    bool neg = false;
    if (*p == '-' || *p == '+') neg = *p++ == '-';
    if (!*p) return -1;
    uint64_t v = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;           /* >= 2^64 */
        v = v * 10 + d;
    }
    if (neg) {
        if (v > (UINT64_C(1) << 63)) return -1;
        v = (uint64_t)0 - v;                                 /* two's complement wrap */
    }
    *seed = v;
    return 0;
}

int sd_seed_from_string(const char *text, uint64_t *seed)
{
    if (!text || !*text) return -1;
    size_t len = strlen(text);
    bool digits = true;
    for (size_t i = 0; i < len && digits; i++) digits = text[i] >= '0' && text[i] <= '9';
    if (!digits) {
        /* int.from_bytes(utf8, "little"); then "while >= 2^32: >>= 32"
         * leaves the most significant 32-bit group that is non-zero. A C
         * string's last byte is non-zero, so that is the group holding it. */
        const unsigned char *b = (const unsigned char *)text;
        size_t g = ((len - 1) / 4) * 4;
        uint64_t v = 0;
        for (size_t i = 0; i < 4 && g + i < len; i++) v |= (uint64_t)b[g + i] << (8 * i);
        *seed = v;
        return 0;
    }
    /* decimal digits of any length: base-2^32 limbs, least significant first */
    size_t cap = len / 9 + 2, n = 1;
    uint32_t *limb = calloc(cap, sizeof *limb);
    if (!limb) return -1;
    for (size_t i = 0; i < len; i++) {
        uint64_t carry = (uint64_t)(text[i] - '0');
        for (size_t j = 0; j < n; j++) {
            uint64_t v = (uint64_t)limb[j] * 10u + carry;
            limb[j] = (uint32_t)v;
            carry = v >> 32;
        }
        if (carry) limb[n++] = (uint32_t)carry;
    }
    while (n > 1 && limb[n - 1] == 0) n--;
    *seed = limb[n - 1];
    free(limb);
    return 0;
}
