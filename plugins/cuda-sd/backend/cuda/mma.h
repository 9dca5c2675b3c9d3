/* mma.h - register-level tensor-core and async-copy helpers for the flash
 * attention kernel (attention.cu) and the implicit-GEMM convolution
 * (conv_igemm.cu), with their CPU emulation (SD_CUDA_EMU).
 *
 * Unlike WMMA, whose fragment layout is opaque, mma.sync's per-lane layout
 * is documented (PTX ISA, "Matrix fragments for mma.m16n8k16"), so a kernel
 * can keep score tiles in registers, do the softmax on them there and feed
 * them straight back as the A operand of the next product. With
 * g = lane / 4 and t = lane % 4, every 32-bit register holds two fp16
 * values, the lower-indexed one in the low half:
 *   A (16x16, row-major): a[0] = A[g][2t..2t+1],   a[1] = A[g+8][2t..2t+1],
 *                         a[2] = A[g][2t+8..+9],   a[3] = A[g+8][2t+8..+9]
 *   B (16x8, "col": B[k][n] read along k): b0 = B[2t..2t+1][g],
 *                                          b1 = B[2t+8..+9][g]
 *   C (16x8 float):       c[0..1] = C[g][2t..2t+1], c[2..3] = C[g+8][2t..2t+1]
 */
#ifndef SD_CUDA_MMA_H
#define SD_CUDA_MMA_H

#include <stdint.h>

#include "backend/cuda/compat.h"

#ifdef SD_CUDA_EMU
#include <stdio.h>
#include <stdlib.h>
/* The GPU faults on a misaligned vector access; the emulator's memcpy would
 * not, so it checks what the hardware requires. */
static inline void cu_emu_check_align(const void *p, uintptr_t align, const char *what)
{
    if (((uintptr_t)p & (align - 1)) != 0) {
        fprintf(stderr, "cuda emulator: %s at %p is not %u-byte aligned\n", what, p,
                (unsigned)align);
        abort();
    }
}
#endif

/* c[16x8] += A[16x16] B[16x8], fp16 inputs, float32 accumulation. */
__device__ static inline void cu_mma_16816(float c[4], const uint32_t a[4], uint32_t b0,
                                           uint32_t b1)
{
#ifdef SD_CUDA_EMU
    sd_emu::mma_m16n8k16(c, a, b0, b1);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#elif defined(__CUDA_ARCH__)
    /* Turing (the compute_75 PTX) has only k = 8: the k = 16 product is two
     * of them, the first on A's columns 0..7 (a[0], a[1]) and B's rows 0..7
     * (b0), the second on the rest */
    asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(b0));
    asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[2]), "r"(a[3]), "r"(b1));
#else
    (void)c, (void)a, (void)b0, (void)b1;   /* host pass: never called */
#endif
}

/* Two fp16 values (as uint16_t, 4-byte aligned) as one fragment register. */
__device__ static inline uint32_t cu_ld_h2(const uint16_t *p)
{
#ifdef SD_CUDA_EMU
    uint32_t r;
    cu_emu_check_align(p, 4, "fp16 pair load");
    memcpy(&r, p, sizeof r);
    return r;
#else
    return *(const uint32_t *)p;
#endif
}

/* (lo, hi) rounded to fp16 and packed into one fragment register. */
__device__ static inline uint32_t cu_pack_h2(float lo, float hi)
{
#ifdef SD_CUDA_EMU
    return (uint32_t)sd_f32_to_f16(lo) | (uint32_t)sd_f32_to_f16(hi) << 16;
#else
    return (uint32_t)__half_as_ushort(__float2half_rn(lo)) |
           (uint32_t)__half_as_ushort(__float2half_rn(hi)) << 16;
#endif
}

/* 16 bytes global -> shared without passing through registers (cp.async,
 * Ampere and later; a plain copy before). Both addresses 16-byte aligned.
 * The copy is complete for this thread after cu_cp_async_wait; other
 * threads see it after a __syncthreads that follows the wait. */
__device__ static inline void cu_cp_async16(void *smem_dst, const void *gmem_src)
{
#ifdef SD_CUDA_EMU
    cu_emu_check_align(smem_dst, 16, "cp.async destination");
    cu_emu_check_align(gmem_src, 16, "cp.async source");
    memcpy(smem_dst, gmem_src, 16);         /* the emulator runs it at once */
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem_dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem_src));
#else
    *(uint4 *)smem_dst = *(const uint4 *)gmem_src;
#endif
}

/* cu_cp_async16, or 16 zero bytes when !valid (cp.async's src-size 0
 * "zfill" form: nothing is read, so gmem_src may then point anywhere
 * mapped; the callers pass the tensor's base). The implicit-GEMM
 * convolution (conv_igemm.cu) uses it for padding taps and for rows past
 * the matrix. */
__device__ static inline void cu_cp_async16_zfill(void *smem_dst, const void *gmem_src,
                                                  bool valid)
{
#ifdef SD_CUDA_EMU
    cu_emu_check_align(smem_dst, 16, "cp.async destination");
    cu_emu_check_align(gmem_src, 16, "cp.async source");
    if (valid) memcpy(smem_dst, gmem_src, 16);
    else memset(smem_dst, 0, 16);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem_dst);
    const unsigned n = valid ? 16u : 0u;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem_src),
                 "r"(n));
#else
    *(uint4 *)smem_dst = valid ? *(const uint4 *)gmem_src : make_uint4(0u, 0u, 0u, 0u);
#endif
}

/* Closes the group of cp.async copies issued since the last commit. */
__device__ static inline void cu_cp_async_commit(void)
{
#if !defined(SD_CUDA_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}

/* Waits until at most `pending` committed groups are still in flight. */
template <int pending> __device__ static inline void cu_cp_async_wait(void)
{
#if !defined(SD_CUDA_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(pending));
#endif
}

#endif
