/* cuda_sd.h - the cuda-sd plugin's own state, shared by its glue files:
 * cuda_sd.c (descriptor, config, lifecycle), cli.c (`horde-node sd ...`)
 * and provider.c (the `generator` provider). Not part of the engine. */
#ifndef CUDA_SD_H
#define CUDA_SD_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>

#include <hn/hn.h>

#include "engine/pipeline.h"

/* plugins.cuda-sd in the config file (filled by the core from the schema in
 * cuda_sd.c; strings are core-owned). */
typedef struct cuda_sd_conf {
    const char *models_dir;  /* checkpoints the generator serves; relative to
                                the data dir; default "models/sd" */
    const char *vocab;       /* CLIP vocabulary file; default: beside the
                                model, else <data>/models/clip/ */
    long long threads;       /* CPU threads, 0 = one per core */
    const char *conventions; /* "comfyui" (default) or "kdiffusion" */
    const char *backend;     /* "auto" (default: cuda when a usable GPU is
                                found, else cpu), "cpu" or "cuda" */
    long long vram_budget_mb; /* CUDA weight cache budget: 0 auto, -1 none */
    long long models_in_ram;  /* models kept open (engine/model_cache.h) */
    long long cuda_offload;   /* sd_offload: 0 none, 1 encoders, 2 sequential */
    bool cuda_graphs;         /* CUDA graphs of the UNet step */
    bool cuda_conv_implicit;  /* implicit-GEMM convolutions (no im2col) */
    bool cuda_vae_bf16;       /* the VAE's GEMMs in bf16 instead of TF32 */
    bool cuda_f16_activations; /* the UNet's activations in fp16 */
    long long vae_tile_px;    /* side of a VAE decode tile, image pixels */
    long long vae_tile_above_pixels; /* decodes of more pixels go in tiles;
                                 -1: never for size alone */
} cuda_sd_conf;

typedef struct cuda_sd {
    hn_plugin *self;
    const hn_api *api;
    const cuda_sd_conf *conf;
    sd_conventions conventions;
    char models_dir[PATH_MAX];
    char data_dir[PATH_MAX];

    /* generator: models_in_ram open models on one backend (the model cache,
     * created on first use), one generation at a time */
    pthread_mutex_t lock;
    struct sd_model_cache *cache;
    sd_pipeline *pipe; /* borrowed from cache: the model of the current job */
    char loaded[256];  /* horde model name of pipe */
    /* what the worker said through configure (under lock): horde model name
     * -> checkpoint path, and the CLIP vocabulary it found */
    json_t *worker_models;
    char worker_vocab[PATH_MAX];
} cuda_sd;

/* cli.c: the `sd` command (argv[0] = "sd"). */
int cuda_sd_cli(int argc, char **argv, void *state);
extern const char cuda_sd_cli_usage[];

/* provider.c: the generator vtable. */
extern const hn_generator_vt cuda_sd_generator_vt;
/* Frees the loaded model (from stop/fini). */
void cuda_sd_generator_release(cuda_sd *sd);

/* provider.c: horde seed text -> seed (digits, optional sign -> |n|; other
 * text: the horde's bytes rule); NULL/"" -> a random seed below 2^32.
 * Exposed for the CLI, which takes seeds the same way. */
uint64_t cuda_sd_seed(const char *text);

#endif
