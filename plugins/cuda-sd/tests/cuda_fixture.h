/* cuda_fixture.h - the cmocka group fixture shared by the CUDA test programs
 * (test_cuda_backend.c, test_cuda_networks.c): a CPU backend as reference
 * and the CUDA backend in two precisions, from either
 *   - the real library (group "cuda"; skipped without a GPU or without the
 *     library, failed instead when HN_SD_REQUIRE_GPU=1, as `make gpu-check`
 *     sets), or
 *   - the emulated build libhn-sd-cuda-emu.so (group "cuda-emu"; the CUDA
 *     kernels run on the CPU, see backend/cuda/emu/cuda_emu.h), found beside
 *     the test program in ../../lib/ or at $HN_SD_CUDA_EMU_LIB.
 * Header-only, for test programs; setup_gpu/setup_emu/teardown are cmocka
 * group setup/teardown functions whose state is a fixture *.
 */
#ifndef CUDA_SD_TESTS_CUDA_FIXTURE_H
#define CUDA_SD_TESTS_CUDA_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/cpu_backend.h"
#include "backend/cuda_backend.h"

enum { PREC_AUTO = 0, PREC_F32, N_PREC };

typedef struct fixture {
    const char *label;
    sd_backend *cpu;
    sd_backend *cuda[N_PREC];
    char why[512];              /* why the CUDA backend is unavailable */
    char lib[PATH_MAX + 64];    /* the library loaded ("" = the default search) */
    bool require;               /* unavailable = failure */
} fixture;


/* Skips (or fails, under HN_SD_REQUIRE_GPU=1) when the backend is missing. */
#define NEED_CUDA(f)                                                                         \
    do {                                                                                     \
        if (!(f)->cuda[0]) {                                                                 \
            if ((f)->require) fail_msg("%s backend unavailable: %s", (f)->label, (f)->why);   \
            print_message("[  SKIP    ] %s: %s\n", (f)->label, (f)->why);                    \
            skip();                                                                          \
        }                                                                                    \
    } while (0)

/* Directory of this test program. */
static inline void exe_dir(char *dir, size_t len)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) {
        snprintf(dir, len, ".");
        return;
    }
    buf[n] = '\0';
    char *slash = strrchr(buf, '/');
    if (slash) *slash = '\0';
    snprintf(dir, len, "%s", buf);
}

static inline int setup_common(fixture *f, const char *lib_path)
{
    char err[512];
    snprintf(f->lib, sizeof f->lib, "%s", lib_path ? lib_path : "");
    f->cpu = sd_backend_cpu_create(0, err, sizeof err);
    if (!f->cpu) {
        fprintf(stderr, "cpu backend: %s\n", err);
        return -1;
    }
    sd_cuda_info info;
    if (sd_cuda_probe(lib_path, &info, f->why, sizeof f->why) != 0) return 0;
    const sd_cuda_precision precs[N_PREC] = { SD_CUDA_PREC_AUTO, SD_CUDA_PREC_F32 };
    for (int i = 0; i < N_PREC; i++) {
        sd_cuda_options opt = { 0, precs[i], 0, lib_path, 0, false, false, false };
        /* a small workspace makes the sliced paths run on small tensors */
        opt.workspace_mb = 1;
        f->cuda[i] = sd_backend_cuda_create(&opt, f->why, sizeof f->why);
        if (!f->cuda[i]) {
            for (int j = 0; j < i; j++) sd_backend_destroy(f->cuda[j]);
            memset(f->cuda, 0, sizeof f->cuda);
            return 0;
        }
    }
    printf("%s: %s (compute %d.%d, %zu MB, runtime %d, driver %d) from %s\n", f->label, info.name,
           info.cc_major, info.cc_minor, info.total_mem >> 20, info.runtime_version,
           info.driver_version, info.lib_path);
    return 0;
}

static inline int setup_gpu(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    f->label = "cuda";
    const char *req = getenv("HN_SD_REQUIRE_GPU");
    f->require = req && strcmp(req, "1") == 0;
    *state = f;
    return setup_common(f, NULL);
}

static inline int setup_emu(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    f->label = "cuda-emu";
    *state = f;
    char dir[PATH_MAX], path[PATH_MAX + 64];
    const char *env = getenv("HN_SD_CUDA_EMU_LIB");
    if (env && *env) {
        snprintf(path, sizeof path, "%s", env);
    } else {
        exe_dir(dir, sizeof dir);
        snprintf(path, sizeof path, "%s/../../lib/libhn-sd-cuda-emu.so", dir);
    }
    if (access(path, R_OK) != 0) {
        snprintf(f->why, sizeof f->why, "%.400s not built", path);
        return 0;
    }
    return setup_common(f, path);
}

static inline int teardown(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < N_PREC; i++) sd_backend_destroy(f->cuda[i]);
    sd_backend_destroy(f->cpu);
    free(f);
    return 0;
}

#endif
