/* attention_fast.h - register-blocked AVX2 attention (attention_avx2.c),
 * used by cpu_attention when the CPU and the shapes allow it. */
#ifndef SD_CPU_ATTENTION_FAST_H
#define SD_CPU_ATTENTION_FAST_H

#include <stdbool.h>

#include "backend/cpu/cpu_internal.h"

/* Whether the fast path handles this head width / masking (the caller also
 * checks cb->avx2). */
bool cpu_attention_fast_supported(int head_dim, bool causal);

/* Same contract as cpu_attention (shapes already checked, scale resolved). */
int cpu_attention_fast(cpu_backend *cb, const sd_tensor *q, const sd_tensor *k,
                       const sd_tensor *v, int heads, float scale, sd_tensor *out);

#endif
