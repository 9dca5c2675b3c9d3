/* cuda_sd.c - the cuda-sd plugin: descriptor, config schema and lifecycle.
 * It registers the `sd` command (cli.c) and the `generator` provider
 * (provider.c); the engine itself (engine/, backend/) knows nothing of the
 * node. Loading a model is deferred to the first command or job, so a node
 * that lists cuda-sd but never generates pays nothing. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_sd.h"

static const hn_conf_spec cuda_sd_schema[] = {
    {"models_dir", HN_CONF_STRING, offsetof(cuda_sd_conf, models_dir), "models/sd", 0, 0, 0,
     "folder of .safetensors/.ckpt checkpoints the generator serves (relative to the data "
     "dir); a job's model name is the file name without extension"},
    {"vocab", HN_CONF_STRING, offsetof(cuda_sd_conf, vocab), NULL, 0, 0, 0,
     "CLIP vocabulary bpe_simple_vocab_16e6.txt.gz (default: beside the model, else "
     "<data>/models/clip/)"},
    {"threads", HN_CONF_INT, offsetof(cuda_sd_conf, threads), "0", 0, 1024, 0,
     "CPU threads for the CPU backend (0 = one per core)"},
    {"conventions", HN_CONF_STRING, offsetof(cuda_sd_conf, conventions), "comfyui", 0, 0, 0,
     "sampling conventions: comfyui (what horde workers do) or kdiffusion (the reference "
     "libraries, as in golden/)"},
    {"backend", HN_CONF_STRING, offsetof(cuda_sd_conf, backend), "auto", 0, 0, 0,
     "compute backend: auto (cuda when a usable GPU answers the probe, else cpu), cpu, or "
     "cuda (needs libhn-sd-cuda.so and a GPU)"},
    {"vram_budget_mb", HN_CONF_INT, offsetof(cuda_sd_conf, vram_budget_mb), "0", -1, 1 << 24, 0,
     "CUDA: device memory the cached model weights may use; past it the least recently used "
     "models' weights are evicted and uploaded again from host RAM when needed (0 = device "
     "memory minus 3 GB, -1 = no limit)"},
    {"models_in_ram", HN_CONF_INT, offsetof(cuda_sd_conf, models_in_ram), "2", 1, 16, 0,
     "models kept loaded in host RAM (page-locked on CUDA) for fast switching"},
    {"cuda_offload", HN_CONF_INT, offsetof(cuda_sd_conf, cuda_offload), "1", 0, 2, 0,
     "CUDA: device weights dropped between the phases of an image to lower its peak memory: "
     "0 none (fastest), 1 the text encoder's and VAE's after use (SD1.5 512x512 on an H100: "
     "under 3 GB at ~0.25 s an image), 2 also the UNet's before the VAE decode (one network "
     "on the device at a time; re-uploaded from host RAM)"},
    {"cuda_graphs", HN_CONF_BOOL, offsetof(cuda_sd_conf, cuda_graphs), "true", 0, 0, 0,
     "CUDA: run each UNet step as one CUDA graph (captured once per prompt and size; "
     "falls back to op-by-op launches if capture fails)"},
    {"cuda_conv_implicit", HN_CONF_BOOL, offsetof(cuda_sd_conf, cuda_conv_implicit), "false", 0,
     0, 0,
     "CUDA: run the fp16 convolutions as an implicit GEMM on tensor cores instead of im2col + "
     "cuBLAS (no patch matrix: a smaller scratch); off until measured on a GPU"},
    {"cuda_f16_activations", HN_CONF_BOOL, offsetof(cuda_sd_conf, cuda_f16_activations),
     "true", 0, 0, 0,
     "CUDA: keep the UNet's intermediate activations in fp16 instead of float32 (half the "
     "bytes between ops; math stays float32 inside each op; on an H100 a CFG step takes "
     "8.0 instead of 9.6 ms with graphs)"},
    {"cuda_vae_bf16", HN_CONF_BOOL, offsetof(cuda_sd_conf, cuda_vae_bf16), "false", 0, 0, 0,
     "CUDA: run the VAE's convolutions and linears in bf16 instead of TF32 (half the VAE's "
     "weight memory, about 10x the error)"},
    {"vae_tile_px", HN_CONF_INT, offsetof(cuda_sd_conf, vae_tile_px), "512", 64, 4096, 0,
     "side of a tile, in image pixels (a multiple of 8), when a VAE decode goes in tiles; "
     "smaller tiles lower the decode's memory and cost time"},
    {"vae_tile_above_pixels", HN_CONF_INT, offsetof(cuda_sd_conf, vae_tile_above_pixels),
     "1048576", -1, 1LL << 40, 0,
     "VAE decodes of images with more pixels (width x height) go in tiles of vae_tile_px; "
     "1 = every image larger than a tile, -1 = never for size alone (a CUDA decode still goes "
     "in tiles when it would not fit the free device memory)"},
    HN_CONF_END,
};

/* Joins a relative path to base (absolute paths stay). -1 if too long. */
static int resolve(char *out, size_t len, const char *base, const char *path)
{
    int n;
    if (path[0] == '/' || !base || !base[0])
        n = snprintf(out, len, "%s", path);
    else
        n = snprintf(out, len, "%s/%s", base, path);
    return n >= 0 && (size_t)n < len ? 0 : -1;
}

static hn_rc cuda_sd_init(hn_plugin *self, const hn_api *api, void *conf, void **state,
                          hn_error *err)
{
    const cuda_sd_conf *c = conf;
    cuda_sd *sd = calloc(1, sizeof *sd);
    if (!sd)
        return api->error(err, 500, "InternalError", "cuda-sd: out of memory");
    sd->self = self;
    sd->api = api;
    sd->conf = c;
    if (sd_conventions_parse(c->conventions ? c->conventions : "comfyui", &sd->conventions) !=
        0) {
        free(sd);
        return api->error(err, 500, "BadConfig",
                          "plugins.cuda-sd.conventions: \"%s\" is not comfyui or kdiffusion",
                          c->conventions);
    }
    if (c->backend && strcmp(c->backend, "cpu") != 0 && strcmp(c->backend, "cuda") != 0 &&
        strcmp(c->backend, "auto") != 0) {
        free(sd);
        return api->error(err, 500, "BadConfig",
                          "plugins.cuda-sd.backend: \"%s\" is not auto, cpu or cuda",
                          c->backend);
    }
    if (c->vae_tile_px % 8 != 0 || c->vae_tile_above_pixels == 0) {
        free(sd);
        return api->error(err, 500, "BadConfig",
                          c->vae_tile_px % 8 != 0
                              ? "plugins.cuda-sd.vae_tile_px: %lld is not a multiple of 8 (the "
                                "VAE's latent pixel)"
                              : "plugins.cuda-sd.vae_tile_above_pixels: %lld: give a pixel "
                                "count, or -1 for never",
                          c->vae_tile_px % 8 != 0 ? c->vae_tile_px : c->vae_tile_above_pixels);
    }
    const char *data = api->data_dir ? api->data_dir() : NULL;
    snprintf(sd->data_dir, sizeof sd->data_dir, "%s", data ? data : "");
    if (resolve(sd->models_dir, sizeof sd->models_dir, sd->data_dir,
                c->models_dir ? c->models_dir : "models/sd") != 0) {
        free(sd);
        return api->error(err, 500, "BadConfig", "plugins.cuda-sd.models_dir: path too long");
    }
    if (pthread_mutex_init(&sd->lock, NULL) != 0) {
        free(sd);
        return api->error(err, 500, "InternalError", "cuda-sd: mutex init failed");
    }
    if (api->command_add(self, "sd", cuda_sd_cli_usage, 0, cuda_sd_cli, sd) != 0 ||
        api->provider_add(self, "generator", "sd", HN_GENERATOR_VERSION, &cuda_sd_generator_vt,
                          sd) != 0) {
        pthread_mutex_destroy(&sd->lock);
        free(sd);
        return api->error(err, 500, "InternalError",
                          "cuda-sd: cannot register the sd command or the generator");
    }
    *state = sd;
    return HN_OK;
}

static void cuda_sd_stop(void *state)
{
    cuda_sd_generator_release(state);
}

static void cuda_sd_fini(void *state)
{
    cuda_sd *sd = state;
    if (!sd)
        return;
    cuda_sd_generator_release(sd);
    json_decref(sd->worker_models);
    pthread_mutex_destroy(&sd->lock);
    free(sd);
}

static const hn_plugin_desc cuda_sd_desc = {
    HN_PLUGIN_DESC_INIT,
    .name = "cuda-sd",
    .version = "0.1.0",
    .description = "Stable Diffusion engine (CPU backend): the generator provider and the "
                   "`horde-node sd` commands",
    .conf = cuda_sd_schema,
    .conf_size = sizeof(cuda_sd_conf),
    .init = cuda_sd_init,
    .stop = cuda_sd_stop,
    .fini = cuda_sd_fini,
};

HN_PLUGIN_EXPORT const hn_plugin_desc *hn_plugin_entry(void)
{
    return &cuda_sd_desc;
}
