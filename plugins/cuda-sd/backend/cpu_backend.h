/* cpu_backend.h - the CPU implementation of backend/ops.h.
 *
 * float32 everywhere; GEMMs (convolutions via blocked im2col, linears,
 * attention tiles) through OpenBLAS's cblas_sgemm, called single-threaded
 * from this backend's own thread pool so that one set of threads (one per
 * core) does all the work; element-wise math vectorised with AVX2 where the
 * CPU has it (checked at run time). Weights are converted from the mapped
 * file per op call into scratch memory. */
#ifndef SD_BACKEND_CPU_BACKEND_H
#define SD_BACKEND_CPU_BACKEND_H

#include <stddef.h>

#include "backend/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* n_threads <= 0: one per online CPU. Returns NULL with a message in err on
 * failure. Destroy with sd_backend_destroy(). Note: sets OpenBLAS to one
 * thread per call (openblas_set_num_threads(1), process-wide) because the
 * backend parallelises its GEMMs itself. */
sd_backend *sd_backend_cpu_create(int n_threads, char *err, size_t errlen);

/* Threads the backend uses. */
int sd_backend_cpu_threads(const sd_backend *be);

#ifdef __cplusplus
}
#endif
#endif
