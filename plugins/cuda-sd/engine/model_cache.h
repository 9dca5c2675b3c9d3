/* model_cache.h - several checkpoints loaded at once on one backend, for a
 * worker that serves more models than its GPU holds (the public horde's
 * sponsored workers serve SD 1.5, SD 2.1 and finetunes from one 8 GB card).
 *
 * Two levels:
 *   - host RAM: up to max_models pipelines stay open (their checkpoint
 *     files mapped; on CUDA the tensor bytes page-locked, "pinned", so an
 *     upload runs at full PCIe speed). Opening one more closes the least
 *     recently used (its device copies are dropped, its pages unpinned).
 *   - VRAM (CUDA): all pipelines share one backend whose weight cache has a
 *     budget (backend/cuda_backend.h vram_budget_mb). A model's weights are
 *     uploaded ("swapped in") as its passes use them; past the budget the
 *     least recently used weights, i.e. the models not used lately, are
 *     evicted. Outputs do not depend on what was evicted.
 * The CPU backend has no device memory: only the host level applies.
 *
 * Threads: not thread-safe; the provider calls it under its lock.
 */
#ifndef SD_ENGINE_MODEL_CACHE_H
#define SD_ENGINE_MODEL_CACHE_H

#include <stdbool.h>
#include <stddef.h>

#include "backend/ops.h"
#include "engine/pipeline.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sd_model_cache sd_model_cache;

typedef struct sd_model_cache_opts {
    const char *backend;      /* "auto" (NULL), "cpu" or "cuda" */
    sd_backend *use_backend;  /* optional: run on this one instead (borrowed,
                                 must outlive the cache; tests) */
    int threads;              /* CPU backend threads, <= 0 one per core */
    long long vram_budget_mb; /* CUDA weight budget; 0 = auto (device memory
                                 minus 3 GB for activations, at least half
                                 of it); < 0 = no limit */
    int max_models;           /* pipelines kept open; <= 0: 2 */
    bool no_pin;              /* do not page-lock model files (CUDA) */
    const char *vocab_path;   /* as sd_pipeline_opts */
    const char *data_dir;
    long long vae_tile_above; /* as sd_pipeline_opts */
    int vae_tile;             /* as sd_pipeline_opts (latent pixels) */
    bool keep_pool;           /* as sd_pipeline_opts */
    int offload;              /* as sd_pipeline_opts (sd_offload) */
    bool cuda_graphs;         /* CUDA graphs of the UNet step on the cache's
                                 own backend (not use_backend); default off */
    bool cuda_conv_implicit;  /* implicit-GEMM convolutions on the cache's
                                 own backend (not use_backend); default off */
    bool cuda_vae_bf16;       /* the VAE in bf16 on the cache's own backend
                                 (as sd_pipeline_opts); default off */
    bool cuda_f16_activations; /* the UNet's activations in fp16 on the
                                 cache's own backend (as sd_pipeline_opts);
                                 default off */
} sd_model_cache_opts;

typedef struct sd_model_cache_stats {
    unsigned long long loads;     /* checkpoints opened */
    unsigned long long hits;      /* gets answered by an open pipeline */
    unsigned long long closed;    /* pipelines closed for max_models */
    int open;                     /* pipelines open now */
    int pinned;                   /* of which page-locked */
} sd_model_cache_stats;

/* Creates the backend (or takes use_backend). 0, or -1 with err. */
int sd_model_cache_create(const sd_model_cache_opts *o, sd_model_cache **out, char *err,
                          size_t errlen);
void sd_model_cache_destroy(sd_model_cache *c);   /* NULL is fine */

/* The pipeline for this checkpoint (+ optional sidecar config), opened on
 * first use. Borrowed: valid until a later get opens another model past
 * max_models, or destroy. 0, or -1 with err. */
int sd_model_cache_get(sd_model_cache *c, const char *model_path, const char *config_path,
                       sd_pipeline **out, char *err, size_t errlen);

sd_backend *sd_model_cache_backend(sd_model_cache *c);
/* "cuda (auto: ...), VRAM budget 5120 MB" - for logs. */
void sd_model_cache_describe(const sd_model_cache *c, char *buf, size_t len);
void sd_model_cache_stats_get(const sd_model_cache *c, sd_model_cache_stats *out);

#ifdef __cplusplus
}
#endif
#endif
