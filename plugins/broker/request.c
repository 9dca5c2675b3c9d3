/* broker: a generation request's normalised body and what matching needs of it.
 *
 * POST /generate/async stores the request body with the horde's effective
 * defaults applied (generate.c does that) and without image data (kept by the
 * images provider). br_request_parse reads that stored body back into a
 * br_req_spec, both when a request arrives and when the node restarts. */
#include <stdlib.h>
#include <string.h>

#include "broker.h"

static char **str_array(const json_t *arr, int *n, int limit) {
    *n = 0;
    size_t len = json_array_size(arr);
    if (limit > 0 && len > (size_t)limit)
        len = (size_t)limit;
    char **out = calloc(len ? len : 1, sizeof(char *));
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        const char *s = json_string_value(json_array_get(arr, i));
        if (!s)
            continue;
        out[*n] = strdup(s);
        if (!out[*n])
            break;
        (*n)++;
    }
    return out;
}

static int accurate_steps(int steps, int sampler) {
    const char *name = sampler >= 0 ? br_samplers[sampler] : "";
    if (strcmp(name, "k_dpm_adaptive") == 0)
        return 40;
    if (strcmp(name, "k_heun") == 0 || strcmp(name, "k_dpm_2") == 0 ||
        strcmp(name, "k_dpm_2_a") == 0 || strcmp(name, "k_dpmpp_2s_a") == 0 ||
        strcmp(name, "k_dpmpp_sde") == 0)
        return steps * 2;
    return steps;
}

int br_request_parse(broker *b, const json_t *body, br_req_spec *s) {
    (void)b;
    memset(s, 0, sizeof(*s));
    const json_t *params = json_object_get(body, "params");
    if (!json_is_object(params))
        return -1;
    s->models = str_array(json_object_get(body, "models"), &s->n_models, 0);
    const json_t *workers = json_object_get(body, "workers");
    size_t nw = json_array_size(workers);
    s->workers = calloc(nw ? nw : 1, sizeof(*s->workers));
    if (!s->models || !s->workers)
        return -1;
    for (size_t i = 0; i < nw && s->n_workers < BR_MAX_TARGET_WORKERS; i++) {
        const char *w = json_string_value(json_array_get(workers, i));
        if (w && br_uuid_parse(w, s->workers[s->n_workers]))
            s->n_workers++;
    }
    s->worker_blacklist = br_jbool(body, "worker_blacklist", false);
    s->width = (int)br_jint(params, "width", 512);
    s->height = (int)br_jint(params, "height", 512);
    s->steps = (int)br_jint(params, "steps", 30);
    s->n = (int)br_jint(params, "n", 1);
    const char *sampler = br_jstr(params, "sampler_name");
    s->sampler = br_sampler_index(sampler ? sampler : "k_euler_a");
    s->accurate_steps = accurate_steps(s->steps, s->sampler);
    s->things = (double)s->width * s->height * s->accurate_steps;
    s->nsfw = br_jbool(body, "nsfw", true);
    s->censor_nsfw = br_jbool(body, "censor_nsfw", true);
    s->trusted_workers = br_jbool(body, "trusted_workers", false);
    s->slow_workers = br_jbool(body, "slow_workers", true);
    s->extra_slow_workers = br_jbool(body, "extra_slow_workers", false);
    s->r2 = br_jbool(body, "r2", true);
    s->disable_batching = br_jbool(body, "disable_batching", false);
    s->shared = br_jbool(body, "shared", false);
    s->has_source = br_jbool(body, "_has_source", false);
    s->has_mask = br_jbool(body, "_has_mask", false);
    s->n_extra_src = (int)json_array_size(json_object_get(body, "_extra_strengths"));
    const char *sp = br_jstr(body, "source_processing");
    s->source_processing = !sp || strcmp(sp, "img2img") == 0 ? BR_SRC_IMG2IMG
                           : strcmp(sp, "inpainting") == 0   ? BR_SRC_INPAINTING
                           : strcmp(sp, "outpainting") == 0  ? BR_SRC_OUTPAINTING
                                                             : BR_SRC_REMIX;
    const json_t *loras = json_object_get(params, "loras");
    s->n_loras = (int)json_array_size(loras);
    s->has_loras = s->n_loras > 0;
    for (int i = 0; i < s->n_loras; i++)
        if (br_jbool(json_array_get(loras, (size_t)i), "is_version", false))
            s->lora_versions = true;
    s->has_tis = json_array_size(json_object_get(params, "tis")) > 0;
    s->control_type = br_jstr(params, "control_type") != NULL;
    s->image_is_control = br_jbool(params, "image_is_control", false);
    s->return_control_map = br_jbool(params, "return_control_map", false);
    s->tiling = br_jbool(params, "tiling", false);
    s->hires_fix = br_jbool(params, "hires_fix", false);
    s->transparent = br_jbool(params, "transparent", false);
    s->karras = br_jbool(params, "karras", true);
    s->clip_skip_gt1 = br_jint(params, "clip_skip", 1) > 1;
    const char *wf = br_jstr(params, "workflow");
    s->qr_code = wf && strcmp(wf, "qr_code") == 0;
    s->pp_multiplier = 1.0;
    const json_t *pps = json_object_get(params, "post_processing");
    for (size_t i = 0; i < json_array_size(pps); i++) {
        const br_pp *pp = br_pp_find(json_string_value(json_array_get(pps, i)));
        if (!pp)
            continue;
        s->pp_caps |= BR_CAPBIT(pp->cap);
        s->n_pp++;
        if (pp->upscaler)
            s->n_upscalers++;
        if (pp->heavy)
            s->heavy_pp = true;
        s->pp_multiplier *= pp->multiplier;
    }
    /* Stable Cascade with hires_fix runs as a second pass (bridge capability) */
    for (int i = 0; i < s->n_models; i++)
        if (s->hires_fix &&
            strcmp(br_model_baseline(b ? b->ref : NULL, s->models[i]), "stable_cascade") == 0)
            s->stable_cascade_2pass = true;
    const char *seed = br_jstr(params, "seed");
    if (seed && *seed) {
        s->has_seed = true;
        s->seed = br_seed_from_text(seed);
    }
    s->seed_variation = (int)br_jint(params, "seed_variation", 0);
    s->prompt_lc = br_lower(br_jstr(body, "prompt"));
    if (!s->prompt_lc)
        return -1;
    return 0;
}

void br_req_spec_free(br_req_spec *s) {
    for (int i = 0; i < s->n_models; i++)
        free(s->models[i]);
    free(s->models);
    free(s->workers);
    free(s->prompt_lc);
    memset(s, 0, sizeof(*s));
}
