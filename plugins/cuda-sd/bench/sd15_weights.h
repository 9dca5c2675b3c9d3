/* sd15_weights.h - a Stable Diffusion 1.5 checkpoint with random weights,
 * for benchmarks: every tensor of the real single-file layout (UNet
 * 859,520,964 parameters, VAE 83,653,863, CLIP text encoder 123,060,480,
 * plus the position_ids buffer), stored as F16 in a safetensors file.
 *
 * Values are deterministic (a fixed generator seeded per tensor name) and
 * scaled like a trained network's initialisation (weights ~ U(+-sqrt(3 /
 * fan_in)), norms ~ 1, biases small), so activations stay finite and
 * normal-sized through all layers: the timings are those of real weights.
 */
#ifndef SD_BENCH_SD15_WEIGHTS_H
#define SD_BENCH_SD15_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

typedef struct sd15_counts {
    int64_t unet, vae, text;     /* float parameters per component */
    size_t tensors;
} sd15_counts;

/* Writes the checkpoint to path (replacing it). 0, or -1 with err. counts
 * (may be NULL) receives the parameter counts written. */
int sd15_write_random(const char *path, sd15_counts *counts, char *err, size_t errlen);

/* Parameter counts of the real SD1.5 components (for checks). */
#define SD15_UNET_PARAMS 859520964LL
#define SD15_VAE_PARAMS 83653863LL
#define SD15_TEXT_PARAMS 123060480LL

#endif
