/* compat.h - the few constructs the CUDA backend's sources use that differ
 * between a real nvcc build and the CPU emulation build (SD_CUDA_EMU, see
 * emu/cuda_emu.h): kernel launches and dynamic shared memory. Everything
 * else in the backend's .cu files is written in the subset of CUDA C++ that the
 * emulator also understands (__global__, __shared__, __syncthreads,
 * __shfl_xor_sync, atomicAdd, half, nvcuda::wmma 16x16x16, cuBLAS GemmEx, the
 * cuBLASLt matmul subset of gemm.cu).
 */
#ifndef SD_CUDA_COMPAT_H
#define SD_CUDA_COMPAT_H

#ifdef SD_CUDA_EMU

#include "backend/cuda/emu/cuda_emu.h"

/* Runs the kernel on the CPU, block by block, one fiber per thread. The
 * arguments are evaluated and converted to the kernel's parameter types
 * here, at the launch, as `<<<>>>` does: a launch recorded by a stream
 * capture (a graph node) keeps those values, not the expressions (tensor
 * structs the host frees after the capture). */
#define SD_LAUNCH(kernel, grid, block, smem, stream, ...)                                   \
    sd_emu::launch(#kernel, kernel, (grid), (block), (smem), (stream),                     \
                   sd_emu::bind_launch_args(kernel, __VA_ARGS__))
/* A kernel's dynamic shared memory, 128-byte aligned. */
#define SD_DYN_SMEM(name) unsigned char *name = sd_emu::dynamic_smem()

#else

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#define SD_LAUNCH(kernel, grid, block, smem, stream, ...)                                   \
    kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#define SD_DYN_SMEM(name) extern __shared__ __align__(128) unsigned char name[]

#endif

#endif
