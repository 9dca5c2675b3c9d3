/* cpu_internal.h - shared state and helpers of the CPU backend's files. */
#ifndef SD_CPU_INTERNAL_H
#define SD_CPU_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/cpu/thread_pool.h"
#include "backend/ops.h"

/* Slots of converted weights an op can hold at once (weight, bias, ...). */
enum { CPU_SLOT_W = 0, CPU_SLOT_B, CPU_SLOT_G, CPU_SLOT_BETA, CPU_SLOTS };

#define CPU_CACHE_MAX 64

typedef struct cpu_block {
    float *p;
    size_t n;
} cpu_block;

typedef struct cpu_backend {
    sd_backend base;            /* must be first */
    sd_pool *pool;
    int n_threads;
    bool avx2;                  /* AVX2 + FMA usable */
    bool f16c;                  /* F16C usable */
    float *slot[CPU_SLOTS];     /* converted parameters, grown on demand */
    size_t slot_cap[CPU_SLOTS];
    float **tscratch;           /* per-thread scratch, grown on demand */
    size_t *tscratch_cap;
    /* Freed activation blocks kept for reuse: the networks allocate the
     * same shapes every pass, and fresh large blocks cost page faults. */
    cpu_block cache[CPU_CACHE_MAX];
    int n_cached;
    size_t cached_floats;
} cpu_backend;

static inline cpu_backend *cpu_of(sd_backend *be) { return (cpu_backend *)be; }

/* float32 view of a parameter tensor: the mapped data itself when it is
 * 4-byte aligned F32, else a conversion into slot `slot`. expect_numel >= 0
 * checks the element count. NULL (with be->err set) on error. */
const float *cpu_param(cpu_backend *cb, int slot, const sd_tensor_info *t, int64_t expect_numel,
                       const char *what);
/* A writable slot buffer of n floats (grown as needed); NULL on OOM. */
float *cpu_slot(cpu_backend *cb, int slot, size_t n);
/* Converts t's elements [first, first+count) to float (F32/F16/BF16, any
 * alignment), vectorised where the CPU allows. */
void cpu_convert(const cpu_backend *cb, const sd_tensor_info *t, int64_t first, int64_t count,
                 float *out);
/* Same on the calling thread only (for use inside pool tasks). */
void cpu_convert_serial(const cpu_backend *cb, const sd_tensor_info *t, int64_t first,
                        int64_t count, float *out);
/* Makes every thread's scratch at least n floats; 0 or -1 (error set). */
int cpu_reserve_scratch(cpu_backend *cb, size_t n);

/* op entry points (vtable) */
int cpu_conv2d(sd_backend *be, const sd_tensor *x, const sd_tensor_info *w,
               const sd_tensor_info *b, const sd_conv_params *p, const sd_tensor *residual,
               sd_tensor *out);
int cpu_linear(sd_backend *be, const sd_tensor *x, const sd_tensor_info *w,
               const sd_tensor_info *b, const sd_tensor *residual, sd_tensor *out);
int cpu_group_norm(sd_backend *be, const sd_tensor *x, int groups, float eps,
                   const sd_tensor_info *gamma, const sd_tensor_info *beta, bool silu,
                   sd_tensor *out);
int cpu_layer_norm(sd_backend *be, const sd_tensor *x, const sd_tensor_info *gamma,
                   const sd_tensor_info *beta, float eps, sd_tensor *out);
int cpu_attention(sd_backend *be, const sd_tensor *q, const sd_tensor *k, const sd_tensor *v,
                  int heads, float scale, bool causal, sd_tensor *out);
int cpu_activation(sd_backend *be, sd_activation act, const sd_tensor *x, sd_tensor *out);
int cpu_geglu(sd_backend *be, const sd_tensor *x, sd_tensor *out);
int cpu_add(sd_backend *be, const sd_tensor *a, const sd_tensor *b, sd_tensor *out);
int cpu_add_per_channel(sd_backend *be, const sd_tensor *x, const sd_tensor *v, sd_tensor *out);
int cpu_concat_channels(sd_backend *be, const sd_tensor *a, const sd_tensor *b, sd_tensor *out);
int cpu_upsample_nearest2x(sd_backend *be, const sd_tensor *x, sd_tensor *out);
int cpu_timestep_embedding(sd_backend *be, const float *t_host, sd_tensor *out);
int cpu_embedding(sd_backend *be, const sd_tensor_info *table, const int *ids_host,
                  const sd_tensor_info *pos, sd_tensor *out);

/* Apply an activation to n floats in place (vectorised when possible). */
void cpu_activation_inplace(const cpu_backend *cb, sd_activation act, float *x, size_t n);

static inline bool cpu_same_shape(const sd_tensor *a, const sd_tensor *b)
{
    return a->n == b->n && a->h == b->h && a->w == b->w && a->c == b->c;
}

#endif
