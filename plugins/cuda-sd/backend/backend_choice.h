/* backend_choice.h - which backend a generation runs on when the user did
 * not say: CUDA when a usable GPU answers the probe, else the CPU.
 *
 * "Usable" = libhn-sd-cuda.so loads (cuda_backend.h's search order, so
 * $HN_SD_CUDA_LIB can point it at another build), the CUDA runtime reports
 * a device, and device 0's compute capability is at least 7.5 (the oldest
 * PTX the library carries, plugin.mk CUDA_SD_GENCODE). An explicit "cpu" or
 * "cuda" always wins, even when the probe would say otherwise.
 */
#ifndef SD_BACKEND_CHOICE_H
#define SD_BACKEND_CHOICE_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SD_CUDA_MIN_CC_MAJOR 7
#define SD_CUDA_MIN_CC_MINOR 5

typedef struct sd_backend_choice {
    char name[8];       /* "cpu" or "cuda" */
    bool automatic;     /* chosen by the probe ("auto", NULL or "") */
    char why[512];      /* the GPU found, or why the probe said no */
} sd_backend_choice;

/* requested: "cpu", "cuda", "auto", NULL or "" (= auto). Fills *out; 0, or
 * -1 with err for an unknown name. Never fails for "auto". */
int sd_backend_choose(const char *requested, sd_backend_choice *out, char *err, size_t errlen);

/* "cuda (auto: NVIDIA H200, compute 9.0, 143771 MB)" / "cpu (explicit)":
 * one line for logs and `sd info`. */
void sd_backend_choice_describe(const sd_backend_choice *c, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
