/* broker: can this worker take this request? (§4.2 steps 2 and 3)
 *
 * One function covers both the horde's SQL pre-filter and its can_generate():
 * the first failing check decides the skip reason that pop counts in
 * `skipped`. Silent reasons (maintenance, stale) are not counted, as in the
 * horde. Reads only; caller holds b->lock. */
#include <string.h>

#include "broker.h"

const char *const br_skip_names[BR_SKIP_COUNT] = {
    "", "", "max_pixels", "models", "img2img", "painting", "unsafe_ip", "nsfw",
    "bridge_version", "lora", "controlnet", "performance", "worker_id", "untrusted",
    "blacklist", "post-processing", "step_count", "kudos",
};

static bool req_has_model(const br_request *r, const char *m) {
    for (int i = 0; i < r->s.n_models; i++)
        if (strcmp(r->s.models[i], m) == 0)
            return true;
    return false;
}

/* Is model m one this worker may run for r? (requested or r asks for any;
 * inpainting models only for in/outpainting and the reverse) */
static bool model_fits(broker *b, const br_request *r, const char *m, bool painting) {
    if (r->s.n_models > 0 && !req_has_model(r, m))
        return false;
    return br_model_inpainting(b->ref, m) == painting;
}

static bool is_flux(broker *b, const char *model) {
    return strcmp(br_model_baseline(b->ref, model), "flux_1") == 0;
}

br_skip br_match(broker *b, const br_worker *w, const char *const *models, int n_models,
                 const br_request *r, const char **chosen) {
    const br_worker_attrs *a = &w->a;
    const br_req_spec *s = &r->s;
    uint64_t caps = a->caps;
    bool painting = s->has_source && (s->source_processing == BR_SRC_INPAINTING ||
                                      s->source_processing == BR_SRC_OUTPAINTING);

    /* a worker in maintenance serves only its owner's requests; so does a
     * paused one (the horde gives it fake jobs for the others instead) */
    if ((w->maintenance || w->paused) && w->user_id != r->user_id)
        return BR_SKIP_SILENT;
    /* ---- the horde's SQL pre-filter ---- */
    if ((int64_t)s->width * s->height > a->max_pixels)
        return BR_SKIP_MAX_PIXELS;
    int fits = 0;
    bool any_requested = s->n_models == 0;
    for (int i = 0; i < n_models; i++) {
        if (s->n_models > 0 && req_has_model(r, models[i]))
            any_requested = true;
        if (model_fits(b, r, models[i], painting))
            fits++;
    }
    if (!any_requested)
        return BR_SKIP_MODELS;
    if (s->has_source && !a->allow_img2img)
        return BR_SKIP_IMG2IMG;
    if (painting && !a->allow_painting)
        return BR_SKIP_PAINTING;
    if (s->n_extra_src > 0 && !(caps & BR_CAPBIT(BR_CAP_EXTRA_SOURCE_IMAGES)))
        return BR_SKIP_BRIDGE_VERSION;
    /* every client IP counts as safe here (no IP reputation service), so
     * allow_unsafe_ipaddr never excludes anything */
    if (s->nsfw && !a->nsfw)
        return BR_SKIP_NSFW;
    if (s->r2 && !(caps & BR_CAPBIT(BR_CAP_R2)))
        return BR_SKIP_BRIDGE_VERSION;
    if (s->has_loras && (!a->allow_lora || !(caps & BR_CAPBIT(BR_CAP_LORA))))
        return BR_SKIP_LORA;
    if (s->has_tis && !(caps & BR_CAPBIT(BR_CAP_TEXTUAL_INVERSION)))
        return BR_SKIP_BRIDGE_VERSION;
    if (s->control_type && (!a->allow_controlnet || !(caps & BR_CAPBIT(BR_CAP_CONTROLNET))))
        return BR_SKIP_CONTROLNET;
    if (!s->slow_workers && w->speed < BR_SLOW_SPEED)
        return BR_SKIP_PERFORMANCE;
    if (a->extra_slow && !s->extra_slow_workers)
        return BR_SKIP_PERFORMANCE;
    if (s->transparent &&
        (!(caps & BR_CAPBIT(BR_CAP_LAYER_DIFFUSE)) || !a->allow_sdxl_controlnet))
        return BR_SKIP_BRIDGE_VERSION;
    if (s->n_workers > 0) {
        bool listed = false;
        for (int i = 0; i < s->n_workers; i++)
            if (strcmp(s->workers[i], w->id) == 0)
                listed = true;
        if (s->worker_blacklist ? listed : !listed)
            return BR_SKIP_WORKER_ID;
    }
    /* ---- can_generate ---- */
    if (s->trusted_workers && !(w->owner_roles & HN_ROLE_TRUSTED))
        return BR_SKIP_UNTRUSTED;
    for (int i = 0; i < a->n_blacklist; i++)
        if (a->blacklist[i][0] && strstr(s->prompt_lc, a->blacklist[i]))
            return BR_SKIP_BLACKLIST;
    if (s->has_source && !(caps & BR_CAPBIT(BR_CAP_IMG2IMG)))
        return BR_SKIP_IMG2IMG;
    if (painting && !(caps & (BR_CAPBIT(BR_CAP_INPAINTING) | BR_CAPBIT(BR_CAP_PAINTING))))
        return BR_SKIP_PAINTING;
    if (fits == 0)
        return BR_SKIP_MODELS;
    uint32_t samplers = s->karras ? a->samplers_karras : a->samplers_plain;
    if (s->sampler < 0 || !(samplers & (1u << s->sampler)))
        return BR_SKIP_BRIDGE_VERSION;
    if (s->karras && !(caps & BR_CAPBIT(BR_CAP_KARRAS)))
        return BR_SKIP_BRIDGE_VERSION;
    if (s->n_pp > 0 && (!(caps & BR_CAPBIT(BR_CAP_POST_PROCESSING)) || (s->pp_caps & ~caps)))
        return BR_SKIP_BRIDGE_VERSION;
    if ((s->tiling && !(caps & BR_CAPBIT(BR_CAP_TILING))) ||
        (s->return_control_map && !(caps & BR_CAPBIT(BR_CAP_RETURN_CONTROL_MAP))) ||
        (s->control_type && s->image_is_control && !(caps & BR_CAPBIT(BR_CAP_IMAGE_IS_CONTROL))) ||
        (s->qr_code && !(caps & BR_CAPBIT(BR_CAP_QR_CODE))) ||
        (s->hires_fix && !(caps & BR_CAPBIT(BR_CAP_HIRES_FIX))) ||
        (s->stable_cascade_2pass && !(caps & BR_CAPBIT(BR_CAP_STABLE_CASCADE_2PASS))) ||
        (s->clip_skip_gt1 && !(caps & BR_CAPBIT(BR_CAP_CLIP_SKIP))) ||
        (s->lora_versions && !(caps & BR_CAPBIT(BR_CAP_LORA_VERSIONS))))
        return BR_SKIP_BRIDGE_VERSION;
    if (!(caps & BR_CAPBIT(BR_CAP_FLUX))) {
        /* a worker serving flux without the capability gets nothing */
        for (int i = 0; i < n_models; i++)
            if (is_flux(b, models[i]))
                return BR_SKIP_BRIDGE_VERSION;
    }
    if (s->n_pp > 0 && !a->allow_post_processing)
        return BR_SKIP_POST_PROCESSING;
    if (a->limit_max_steps) {
        /* accurate steps above the middle of the model's range (20..40 by default) */
        bool use_req = s->n_models > 1;
        int nm = use_req ? s->n_models : n_models;
        for (int i = 0; i < nm; i++) {
            const char *m = use_req ? s->models[i] : models[i];
            const json_t *rq = br_model_requirements(b->ref, m);
            double lo = rq && json_is_number(json_object_get(rq, "min_steps"))
                            ? json_number_value(json_object_get(rq, "min_steps"))
                            : 20;
            double hi = rq && json_is_number(json_object_get(rq, "max_steps"))
                            ? json_number_value(json_object_get(rq, "max_steps"))
                            : 40;
            if (s->accurate_steps > (lo + hi) / 2)
                return BR_SKIP_STEP_COUNT;
        }
    }
    if (chosen) {
        /* one of the fitting models at random, as the horde picks */
        int pick = (int)(br_random_u32() % (uint32_t)fits);
        for (int i = 0; i < n_models; i++) {
            if (!model_fits(b, r, models[i], painting))
                continue;
            if (pick-- == 0) {
                *chosen = models[i];
                break;
            }
        }
    }
    return BR_SKIP_NONE;
}

br_skip br_match_worker(broker *b, const br_worker *w, const br_request *r) {
    return br_match(b, w, (const char *const *)w->a.models, w->a.n_models, r, NULL);
}
