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
    const char *backend;     /* "cpu" */
} cuda_sd_conf;

typedef struct cuda_sd {
    hn_plugin *self;
    const hn_api *api;
    const cuda_sd_conf *conf;
    sd_conventions conventions;
    char models_dir[PATH_MAX];
    char data_dir[PATH_MAX];

    /* generator: one loaded model at a time, one generation at a time */
    pthread_mutex_t lock;
    sd_pipeline *pipe;
    char loaded[256]; /* horde model name of pipe */
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
