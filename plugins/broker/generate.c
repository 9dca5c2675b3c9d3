/* broker: POST /generate/async, GET /generate/check/{id},
 * GET and DELETE /generate/status/{id} (§1.1-1.3).
 *
 * Async runs the horde's checks in the horde's order (validate_order below),
 * stores the body with the server's effective defaults, and answers 202 only
 * once the new request is committed (store.c's group commit). Source images
 * are written to the images provider on a pool thread first. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "accounts.h"
#include "cluster.h"

#define NO_WORKER_MESSAGE                                                                  \
    "Warning: No available workers can fulfill this request. It will expire in 20 minutes " \
    "unless a worker appears. Please confider reducing its size of the request or choosing " \
    "a different model."

/* One async request on its way from validation to the commit. */
typedef struct async_ctx {
    broker *b;
    hn_request *req;
    hn_user user;
    char id[BR_ID_LEN];
    json_t *stored;        /* normalised body */
    json_t *warnings;      /* [{"code","message"}] */
    br_req_spec spec;
    double kudos, priority;
    char *client_ip;
    /* images to write before the request is committed */
    int n_images;
    char keys[8][BR_ID_LEN + 16];
    void *data[8];
    size_t len[8];
    bool images_failed;
    hn_error img_err;
    char skey_id[BR_ID_LEN]; /* the shared key used as apikey, "" for none */
} async_ctx;

static void ctx_free(async_ctx *c) {
    if (!c)
        return;
    json_decref(c->stored);
    json_decref(c->warnings);
    br_req_spec_free(&c->spec);
    free(c->client_ip);
    for (int i = 0; i < c->n_images; i++)
        free(c->data[i]);
    free(c);
}

static void add_warning(json_t *warnings, const char *code, const char *message) {
    size_t i;
    json_t *w;
    json_array_foreach(warnings, i, w) {
        if (strcmp(br_jstr(w, "code") ? br_jstr(w, "code") : "", code) == 0)
            return;
    }
    json_array_append_new(warnings, json_pack("{s:s, s:s}", "code", code, "message", message));
}

static bool any_baseline(broker *b, const json_t *models, const char *prefix) {
    size_t i;
    json_t *m;
    json_array_foreach(models, i, m) {
        const char *base = br_model_baseline(b->ref, json_string_value(m));
        if (strncmp(base, prefix, strlen(prefix)) == 0)
            return true;
    }
    return false;
}

static bool any_model_named(const json_t *models, const char *name) {
    size_t i;
    json_t *m;
    json_array_foreach(models, i, m) {
        if (json_string_value(m) && strcmp(json_string_value(m), name) == 0)
            return true;
    }
    return false;
}

static size_t count_words(const char *s) {
    size_t n = 0;
    bool in = false;
    for (; *s; s++) {
        if (isspace((unsigned char)*s))
            in = false;
        else if (!in) {
            in = true;
            n++;
        }
    }
    return n;
}

/* Model-reference soft warnings (§1.1), compared with the request's own
 * values and the horde's fallbacks for absent ones. */
static void reference_warnings(broker *b, const json_t *models, const json_t *params,
                               json_t *warnings) {
    size_t i;
    json_t *m;
    double cfg = br_jnum(params, "cfg_scale", 7.5);
    long long steps = br_jint(params, "steps", 30);
    long long clip_skip = br_jint(params, "clip_skip", 1);
    const char *sampler = br_jstr(params, "sampler_name");
    if (!sampler)
        sampler = "k_euler_a";
    const char *scheduler = br_jbool(params, "karras", true) ? "karras" : "simple";
    json_array_foreach(models, i, m) {
        const json_t *rq = br_model_requirements(b->ref, json_string_value(m));
        if (!rq)
            continue;
        const json_t *v;
        if ((v = json_object_get(rq, "clip_skip")) && json_number_value(v) != (double)clip_skip)
            add_warning(warnings, "ClipSkipMismatch",
                        "The clip skip specified for this generation does not match the "
                        "requirements of one of the requested models.");
        if ((v = json_object_get(rq, "min_steps")) && json_number_value(v) > (double)steps)
            add_warning(warnings, "StepsTooFew",
                        "The steps specified for this generation are too few for this model.");
        if ((v = json_object_get(rq, "max_steps")) && json_number_value(v) < (double)steps)
            add_warning(warnings, "StepsTooMany",
                        "The steps specified for this generation are too many for this model.");
        if ((v = json_object_get(rq, "cfg_scale")) && json_number_value(v) != cfg)
            add_warning(warnings, "CfgScaleMismatch",
                        "The cfg scale specified for this generation does not match the "
                        "requirements of one of the requested models.");
        if ((v = json_object_get(rq, "min_cfg_scale")) && json_number_value(v) > cfg)
            add_warning(warnings, "CfgScaleTooSmall",
                        "The cfg scale specified for this generation is too small for this "
                        "model.");
        if ((v = json_object_get(rq, "max_cfg_scale")) && json_number_value(v) < cfg)
            add_warning(warnings, "CfgScaleTooLarge",
                        "The cfg scale specified for this generation is too large for this "
                        "model.");
        if ((v = json_object_get(rq, "samplers")) && json_is_array(v)) {
            bool found = false;
            size_t k;
            json_t *x;
            json_array_foreach(v, k, x) {
                if (json_string_value(x) && strcmp(json_string_value(x), sampler) == 0)
                    found = true;
            }
            if (!found)
                add_warning(warnings, "SamplerMismatch",
                            "The sampler specified for this generation does not match the "
                            "requirements of one of the requested models.");
        }
        if ((v = json_object_get(rq, "schedulers")) && json_is_array(v)) {
            bool found = false;
            size_t k;
            json_t *x;
            json_array_foreach(v, k, x) {
                if (json_string_value(x) && strcmp(json_string_value(x), scheduler) == 0)
                    found = true;
            }
            if (!found)
                add_warning(warnings, "SchedulerMismatch",
                            "The scheduler specified for this generation does not match the "
                            "requirements of one of the requested models.");
        }
    }
}

/* The waiting images that count against the user's concurrency: all of them,
 * or for the anonymous user those of requests naming one of the asked models
 * (the horde sums n over a join with the models, so a request naming two of
 * them counts twice; requests without models do not count). */
static int waiting_for_user(broker *b, int64_t user_id, const json_t *models) {
    br_user *u = br_user_get(b, user_id, false);
    if (!u)
        return 0;
    if (user_id != 0 || json_array_size(models) == 0)
        return u->waiting_n;
    int sum = 0;
    size_t i;
    json_t *m;
    json_array_foreach(models, i, m) {
        if (json_string_value(m))
            sum += br_user_model_waiting(u, json_string_value(m));
    }
    return sum;
}

static bool concurrency_exceeded(broker *b, const hn_user *u, const json_t *models, int n,
                                 hn_error *err) {
    int count = waiting_for_user(b, u->id, models) + n;
    if (count > u->concurrency) {
        b->api->error(err, 429, "TooManyPrompts",
                      "Parallel requests (%d) exceeded user limit (%d). Please try again later "
                      "or request to increase your concurrency.",
                      count, u->concurrency);
        return true;
    }
    return false;
}

/* Decodes a base64 source image or mask and checks it (§1.1). */
static int take_image(async_ctx *c, const char *text, const char *suffix, bool *has_alpha,
                      hn_error *err) {
    broker *b = c->b;
    if (strncmp(text, "http://", 7) == 0 || strncmp(text, "https://", 8) == 0) {
        b->api->error(err, 400, "ImageValidationFailed",
                      "Image validation failed. This horde does not fetch source images from "
                      "URLs; send the image as base64.");
        return -1;
    }
    size_t len = 0;
    void *data = br_b64_decode(text, strlen(text), &len);
    br_image_info info;
    if (!data || br_image_sniff(data, len, &info) != 0) {
        free(data);
        b->api->error(err, 400, "ImageValidationFailed",
                      "Image validation failed. Please ensure the source image payload is "
                      "either a URL containing an image or a valid base64 encoded image.");
        return -1;
    }
    if ((long long)info.width * info.height > 3072LL * 3072LL) {
        free(data);
        b->api->error(err, 400, "SourceImageResolutionExceeded",
                      "Image validation failed. Image size cannot exceed 3072*3072 pixels");
        return -1;
    }
    if (c->n_images >= 8) {
        free(data);
        b->api->error(err, 400, "TooManyExtraSourceImages",
                      "You can send a maximum of 5 extra source images.");
        return -1;
    }
    if (has_alpha)
        *has_alpha = info.alpha;
    snprintf(c->keys[c->n_images], sizeof(c->keys[0]), "%s%s", c->id, suffix);
    c->data[c->n_images] = data;
    c->len[c->n_images] = len;
    c->n_images++;
    return 0;
}

/* The horde's checks after authentication, in its order. Returns 0 or -1 with
 * err filled. */
static int validate_order(async_ctx *c, const json_t *body, hn_error *err) {
    broker *b = c->b;
    const hn_api *api = b->api;
    const hn_user *u = &c->user;
    const json_t *params = json_object_get(body, "params");
    const json_t *models = json_object_get(body, "models");
    json_t *no_models = NULL;
    if (!models)
        models = no_models = json_pack("[s]", "stable_diffusion");
    int rc = -1;
    const char *prompt = br_jstr(body, "prompt");
    const char *srcproc = br_jstr(body, "source_processing");
    if (!srcproc)
        srcproc = "img2img";
    bool has_source = br_jstr(body, "source_image") && *br_jstr(body, "source_image");
    bool has_mask = br_jstr(body, "source_mask") && *br_jstr(body, "source_mask");
    const char *control = br_jstr(params, "control_type");
    int n = (int)br_jint(params, "n", 1);
    bool trusted = (u->roles & (HN_ROLE_TRUSTED | HN_ROLE_ADMIN | HN_ROLE_MODERATOR)) != 0;

    if (br_jstr(body, "proxied_account") && !(u->roles & HN_ROLE_SERVICE)) {
        api->error(err, 400, "OnlyServiceAccountProxy",
                   "Only service accounts can proxy other users' requests.");
        goto out;
    }
    if (HN_USER_HAS(u, deleted) && u->deleted) { /* §1.1 validation order */
        api->error(err, 403, "DeletedUser", "This user has been deleted.");
        goto out;
    }
    {
        bool blank = true;
        for (const char *p = prompt; p && *p; p++)
            if (!isspace((unsigned char)*p))
                blank = false;
        if (blank) {
            api->error(err, 400, "MissingPrompt", "You cannot specify an empty prompt.");
            goto out;
        }
    }
    if (br_jbool(body, "disable_batching", false) && n > 1 && !trusted) {
        api->error(err, 400, "RequiresTrust",
                   "Only trusted users can disable batching for more than one image.");
        goto out;
    }
    {
        const json_t *workers = json_object_get(body, "workers");
        for (size_t i = 0; i < json_array_size(workers) && i < BR_MAX_TARGET_WORKERS; i++) {
            const char *wid = json_string_value(json_array_get(workers, i));
            char id[BR_ID_LEN];
            bool found = false;
            if (br_uuid_parse(wid, id)) {
                pthread_mutex_lock(&b->lock);
                found = br_worker_find(b, id) != NULL;
                pthread_mutex_unlock(&b->lock);
            }
            if (!found) {
                api->error(err, 404, "WorkerNotFound", "Worker with ID '%.100s' not found.", wid);
                goto out;
            }
        }
    }
    pthread_mutex_lock(&b->lock);
    bool too_many = concurrency_exceeded(b, u, models, n, err);
    pthread_mutex_unlock(&b->lock);
    if (too_many)
        goto out;
    if (json_object_get(params, "special") && !(u->roles & HN_ROLE_SPECIAL)) {
        api->error(err, 400, "SpecialFieldNeedsSpecialUser",
                   "Only special users can send a special field.");
        goto out;
    }
    {
        size_t i;
        json_t *m;
        json_array_foreach(models, i, m) {
            const char *name = json_string_value(m);
            if (!name || !strstr(name, "horde_special"))
                continue;
            if (!(u->roles & HN_ROLE_SPECIAL)) {
                api->error(err, 403, "SpecialModelNeedsSpecialUser",
                           "Only special users can request a special model.");
                goto out;
            }
            const char *alias = strstr(name, "::");
            if (!alias) {
                api->error(err, 400, "SpecialMissingUsername",
                           "Special models must always include the username, in the form of "
                           "'horde_special::user#id'");
                goto out;
            }
            if (strcmp(alias + 2, u->username) != 0) {
                api->error(err, 403, "SpecialForbidden", "This model can only be requested by %s",
                           alias + 2);
                goto out;
            }
            if (!json_object_get(params, "special")) {
                api->error(err, 400, "SpecialMissingPayload",
                           "Special models have to include a special payload");
                goto out;
            }
        }
    }
    if (!has_source && has_mask) {
        api->error(err, 400, "SourceMaskUnnecessary",
                   "Please do not pass a source_mask unless you are sending a source_image as "
                   "well");
        goto out;
    }
    if (control &&
        (strcmp(control, "normal") == 0 || strcmp(control, "mlsd") == 0 ||
         strcmp(control, "hough") == 0) &&
        any_baseline(b, models, "stable diffusion 2")) {
        api->error(err, 400, "ControlNetUnsupported",
                   "No current model available for this particular ControlNet for SD2.x");
        goto out;
    }
    reference_warnings(b, models, params, c->warnings);
    if (control && any_model_named(models, "pix2pix")) {
        api->error(err, 400, "ControlNetUnsupported", "You cannot use ControlNet with these models.");
        goto out;
    }
    if (control && !has_source) {
        api->error(err, 400, "ControlNetSourceMissing", "Controlnet Requires a source image.");
        goto out;
    }
    if (control && strcmp(srcproc, "inpainting") == 0) {
        api->error(err, 400, "ControlNetInpaintingMismatch",
                   "ControlNet cannot be used with inpainting at this time");
        goto out;
    }
    bool hires = br_jbool(params, "hires_fix", false);
    if (any_baseline(b, models, "stable_diffusion_xl") || any_baseline(b, models, "stable_cascade")) {
        if (hires && any_baseline(b, models, "stable_diffusion_xl")) {
            api->error(err, 400, "HiResFixMismatch", "hires fix does not work with SDXL currently.");
            goto out;
        }
        if (control) {
            api->error(err, 400, "ControlNetMismatch",
                       "ControlNet does not work with SDXL or Stable Cascade currently.");
            goto out;
        }
        if (hires && any_baseline(b, models, "stable_cascade")) {
            /* Stable Cascade runs hires_fix as a second pass (bridge capability) */
        }
    }
    if (hires && (any_baseline(b, models, "flux_1") || any_baseline(b, models, "qwen_image") ||
                  any_baseline(b, models, "z_image_turbo"))) {
        api->error(err, 400, "HiResMismatch", "hires fix does not work with this model currently.");
        goto out;
    }
    {
        const json_t *loras = json_object_get(params, "loras");
        if (json_array_size(loras) > 5) {
            api->error(err, 400, "TooManyLoras",
                       "You cannot request more than 5 loras per generation.");
            goto out;
        }
        size_t i;
        json_t *l;
        json_array_foreach(loras, i, l) {
            const char *name = br_jstr(l, "name");
            if (br_jbool(l, "is_version", false)) {
                bool digits = name && *name;
                for (const char *p = name; p && *p; p++)
                    if (!isdigit((unsigned char)*p))
                        digits = false;
                if (!digits) {
                    api->error(err, 400, "BadLoraVersion",
                               "explicit LoRa version requests have to be a version ID (i.e "
                               "integer).");
                    goto out;
                }
            }
        }
        if (json_array_size(json_object_get(params, "tis")) > 20) {
            api->error(err, 400, "TooManyTIs",
                       "You cannot request more than 20 Textual Inversions per generation.");
            goto out;
        }
    }
    if (strcmp(srcproc, "remix") == 0) {
        size_t i;
        json_t *m;
        json_array_foreach(models, i, m) {
            if (strncmp(br_model_baseline(b->ref, json_string_value(m)), "stable_cascade", 14) != 0) {
                api->error(err, 400, "InvalidRemix",
                           "Image Remix is only available for Stable Cascade models.");
                goto out;
            }
        }
    }
    {
        size_t extras = json_array_size(json_object_get(body, "extra_source_images"));
        if (extras > 0) {
            /* the horde spells these rcs with a trailing dot by mistake; we do not */
            if (extras > 5) {
                api->error(err, 400, "TooManyExtraSourceImages",
                           "You can send a maximum of 5 extra source images.");
                goto out;
            }
            if (strcmp(srcproc, "remix") != 0) {
                api->error(err, 400, "InvalidExtraSourceImages",
                           "This request type does not accept extra source images.");
                goto out;
            }
            if (extras > 1 && !trusted) {
                api->error(err, 400, "MoreThanMinExtraSourceImage",
                           "Only trusted users can send more than one extra source image.");
                goto out;
            }
        }
    }
    if (br_jbool(params, "image_is_control", false) &&
        br_jbool(params, "return_control_map", false)) {
        api->error(err, 400, "ControlNetInvalidPayload",
                   "Invalid ControlNet parameters - cannot send inital map and return the same "
                   "map");
        goto out;
    }
    if (br_jbool(params, "transparent", false)) {
        size_t i;
        json_t *m;
        json_array_foreach(models, i, m) {
            const char *base = br_model_baseline(b->ref, json_string_value(m));
            if (strcmp(base, "stable diffusion 1") != 0 && strcmp(base, "stable_diffusion_xl") != 0) {
                api->error(err, 400, "InvalidTransparencyModel",
                           "Generating transparent images is only possible with SD1.5 or SDXL "
                           "models.");
                goto out;
            }
        }
        if (has_source) {
            api->error(err, 400, "InvalidTransparencyImg2Img",
                       "Generating transparent images is not possible with img2img.");
            goto out;
        }
        if (control) {
            api->error(err, 400, "InvalidTransparencyCN",
                       "Generating transparent images is not possible with ControlNet.");
            goto out;
        }
    }
    {
        const char *wf = br_jstr(params, "workflow");
        const json_t *texts = json_object_get(params, "extra_texts");
        if (wf && strcmp(wf, "qr_code") == 0) {
            bool has_qr = false;
            size_t i;
            json_t *t;
            json_array_foreach(texts, i, t) {
                const char *ref = br_jstr(t, "reference");
                if (ref && strcmp(ref, "qr_code") == 0)
                    has_qr = true;
            }
            if (!has_qr) {
                api->error(err, 400, "MissingExtraTexts",
                           "This workflow requires an extra text with the reference 'qr_code'.");
                goto out;
            }
            json_t *m;
            json_array_foreach(models, i, m) {
                const char *base = br_model_baseline(b->ref, json_string_value(m));
                if (strcmp(base, "stable diffusion 1") != 0 &&
                    strcmp(base, "stable_diffusion_xl") != 0) {
                    api->error(err, 400, "ControlNetMismatch",
                               "QR Code controlnet only works with SD 1.5 and SDXL models");
                    goto out;
                }
            }
        } else if (json_array_size(texts) > 0) {
            api->error(err, 400, "InvalidExtraTexts",
                       "Extra texts are only accepted with a workflow that uses them.");
            goto out;
        }
    }
    if (!has_source && (any_model_named(models, "Stable Diffusion 2 Depth") ||
                        any_model_named(models, "pix2pix"))) {
        api->error(err, 400, "SourceImageRequiredForModel",
                   "This model is not supported in this mode the moment");
        goto out;
    }
    if (count_words(prompt) > 7500) {
        api->error(err, 400, "InvalidPromptSize",
                   "Too large prompt. Please reduce the amount of tokens contained.");
        goto out;
    }
    {
        size_t i;
        json_t *m;
        json_array_foreach(models, i, m) {
            if (json_string_value(m) && br_pp_find(json_string_value(m))) {
                api->error(err, 400, "UnexpectedModelName",
                           "This model is not supported in this mode the moment");
                goto out;
            }
        }
    }
    {
        int upscalers = 0;
        const json_t *pps = json_object_get(params, "post_processing");
        for (size_t i = 0; i < json_array_size(pps); i++) {
            const br_pp *pp = br_pp_find(json_string_value(json_array_get(pps, i)));
            if (pp && pp->upscaler)
                upscalers++;
        }
        if (upscalers > 1) {
            api->error(err, 400, "TooManyUpscalers", "Cannot use more than 1 upscaler at a time.");
            goto out;
        }
    }
    {
        const json_t *cfg = json_object_get(params, "cfg_scale");
        if (cfg) {
            double v = json_number_value(cfg);
            double r = br_round(v, 2);
            /* compare with a tolerance of far less than 0.005: 7.3 is 7.3 */
            if (fabs(r - v) > 1e-9) {
                api->error(err, 400, "BadCFGDecimals", "cfg_scale must be rounded to 2 decimal places");
                goto out;
            }
        }
    }
    {
        const char *agent = api->req_header(c->req, "Client-Agent");
        if (agent && strcmp(agent, "My-Project:v0.0.1:My-Contact") == 0) {
            api->error(err, 403, "BannedClientAgent",
                       "This Client-Agent appears badly designed and is causing too many "
                       "warnings. First ensure it provides a proper name and contact details. "
                       "Then contact us on Discord to discuss the issue it's creating.");
            goto out;
        }
    }
    /* the images themselves (§1.1 source_image, source_mask, extra_source_images) */
    if (has_source) {
        bool alpha = false;
        if (take_image(c, br_jstr(body, "source_image"), "_src", &alpha, err) != 0)
            goto out;
        if (has_mask) {
            if (take_image(c, br_jstr(body, "source_mask"), "_msk", NULL, err) != 0)
                goto out;
        } else if (strcmp(srcproc, "inpainting") == 0 && !alpha) {
            api->error(err, 400, "InpaintingMissingMask",
                       "Inpainting requests must either include a mask, or an alpha channel.");
            goto out;
        }
    }
    {
        const json_t *extras = json_object_get(body, "extra_source_images");
        for (size_t i = 0; i < json_array_size(extras); i++) {
            char suffix[32];
            snprintf(suffix, sizeof(suffix), "_exsrc%d", (int)(i % 100));
            if (take_image(c, br_jstr(json_array_get(extras, i), "image"), suffix, NULL, err) != 0)
                goto out;
        }
    }
    rc = 0;
out:
    json_decref(no_models);
    return rc;
}

/* The stored body: the request with the server's effective defaults (§7.1),
 * image data replaced by flags (the images live in the images provider). */
static json_t *normalise(async_ctx *c, const json_t *body) {
    json_t *st = json_object();
    json_t *params = json_deep_copy(json_object_get(body, "params"));
    if (!params)
        params = json_object();
    if (!st || !params) {
        json_decref(st);
        json_decref(params);
        return NULL;
    }
    json_object_set_new(st, "prompt", json_string(br_jstr(body, "prompt")));
    /* The kudos plugin's upfront rule (generation_validate) needs these two
     * flags to estimate instead of refusing, and to downgrade. */
    if (br_jbool(body, "dry_run", false))
        json_object_set_new(st, "dry_run", json_true());
    if (br_jbool(body, "allow_downgrade", false))
        json_object_set_new(st, "allow_downgrade", json_true());
    if (!json_object_get(params, "sampler_name"))
        json_object_set_new(params, "sampler_name", json_string("k_euler_a"));
    if (!json_object_get(params, "cfg_scale"))
        json_object_set_new(params, "cfg_scale", json_real(5.0));
    if (!json_object_get(params, "height"))
        json_object_set_new(params, "height", json_integer(512));
    if (!json_object_get(params, "width"))
        json_object_set_new(params, "width", json_integer(512));
    bool control = json_object_get(params, "control_type") != NULL;
    long long steps = br_jint(params, "steps", control ? 20 : 30);
    if (control && steps > 40)
        steps = 40; /* the horde silently caps ControlNet steps */
    json_object_set_new(params, "steps", json_integer(steps));
    if (!json_object_get(params, "n"))
        json_object_set_new(params, "n", json_integer(1));
    if (!json_object_get(params, "karras"))
        json_object_set_new(params, "karras", json_true());
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(params, "loras"), i, x) {
        if (!json_object_get(x, "model"))
            json_object_set_new(x, "model", json_real(1.0));
        if (!json_object_get(x, "clip"))
            json_object_set_new(x, "clip", json_real(1.0));
        if (!json_object_get(x, "is_version"))
            json_object_set_new(x, "is_version", json_false());
    }
    json_array_foreach(json_object_get(params, "tis"), i, x) {
        if (!json_object_get(x, "strength"))
            json_object_set_new(x, "strength", json_real(1.0));
    }
    json_object_set_new(st, "params", params);
    bool education = (c->user.roles & HN_ROLE_EDUCATION) != 0;
    json_object_set_new(st, "nsfw", json_boolean(!education && br_jbool(body, "nsfw", true)));
    json_object_set_new(st, "censor_nsfw", json_boolean(br_jbool(body, "censor_nsfw", true)));
    json_object_set_new(st, "trusted_workers",
                        json_boolean(br_jbool(body, "trusted_workers", false)));
    json_object_set_new(st, "slow_workers", json_boolean(br_jbool(body, "slow_workers", true)));
    json_object_set_new(st, "extra_slow_workers",
                        json_boolean(br_jbool(body, "extra_slow_workers", false)));
    json_object_set_new(st, "worker_blacklist",
                        json_boolean(br_jbool(body, "worker_blacklist", false)));
    const json_t *models = json_object_get(body, "models");
    /* quirk kept: no `models` means ["stable_diffusion"]; [] means any model */
    json_object_set_new(st, "models",
                        models ? json_deep_copy(models) : json_pack("[s]", "stable_diffusion"));
    json_t *workers = json_array();
    json_array_foreach(json_object_get(body, "workers"), i, x) {
        char id[BR_ID_LEN];
        if (i < BR_MAX_TARGET_WORKERS && br_uuid_parse(json_string_value(x), id))
            json_array_append_new(workers, json_string(id));
    }
    json_object_set_new(st, "workers", workers);
    json_object_set_new(st, "r2", json_boolean(br_jbool(body, "r2", true)));
    /* quirk not kept: the horde forces `shared` off since 2023-03; here a
     * request may share its images with the ratings pool (plugins/ratings),
     * except img2img and education accounts, as the horde's first rules had */
    json_object_set_new(st, "shared", json_boolean(br_jbool(body, "shared", false) &&
                                                   !br_jstr(body, "source_image") &&
                                                   !(c->user.roles & HN_ROLE_EDUCATION)));
    json_object_set_new(st, "disable_batching",
                        json_boolean(br_jbool(body, "disable_batching", false)));
    const char *sp = br_jstr(body, "source_processing");
    json_object_set_new(st, "source_processing", json_string(sp ? sp : "img2img"));
    const char *src = br_jstr(body, "source_image");
    const char *msk = br_jstr(body, "source_mask");
    json_object_set_new(st, "_has_source", json_boolean(src && *src));
    json_object_set_new(st, "_has_mask", json_boolean(src && *src && msk && *msk));
    json_t *strengths = json_array();
    json_array_foreach(json_object_get(body, "extra_source_images"), i, x) {
        json_array_append_new(strengths, json_real(br_jnum(x, "strength", 1.0)));
    }
    json_object_set_new(st, "_extra_strengths", strengths);
    const char *webhook = br_jstr(body, "webhook");
    if (webhook)
        json_object_set_new(st, "webhook", json_string(webhook));
    const char *proxied = br_jstr(body, "proxied_account");
    if (proxied)
        json_object_set_new(st, "proxied_account", json_string(proxied));
    const char *agent = c->b->api->req_header(c->req, "Client-Agent");
    json_object_set_new(st, "client_agent", json_string(agent ? agent : "unknown:0:unknown"));
    return st;
}

/* What async_commit's op undoes when its commit fails or a limit refuses it
 * (the cluster-wide 429, br_cluster_guard_concurrency). */
typedef struct async_undo {
    char id[BR_ID_LEN];
    int64_t user_id;
    int images; /* added to the user's "images requested" */
} async_undo;

/* Undo of a request whose row could not be committed. */
static void async_rollback(broker *b, void *arg) {
    const async_undo *u = arg;
    if (!u)
        return; /* out of memory when it was made */
    br_request *r = br_request_find(b, u->id);
    if (r)
        br_request_drop(b, r);
    /* the request never existed: it must not count as requested (the
     * counter is flushed as a difference, so a flush in between writes the
     * take-back too) */
    br_user *user = br_user_get(b, u->user_id, false);
    if (user && u->images > 0) {
        user->images_requested -= u->images;
        user->stats_dirty = true;
    }
}

/* Last step, on the request's loop thread: index the request and queue its
 * row; the 202 goes out once the row is committed. */
static void async_commit(async_ctx *c) {
    broker *b = c->b;
    const hn_api *api = b->api;
    hn_error err;
    int64_t now = br_now_ms();
    br_request *r = calloc(1, sizeof(*r));
    char *body_text = json_dumps(c->stored, JSON_COMPACT);
    if (!r || !body_text) {
        free(r);
        free(body_text);
        br_fail(b, c->req, 500, "InternalServerError", "out of memory");
        ctx_free(c);
        return;
    }
    memcpy(r->id, c->id, sizeof(r->id));
    r->user_id = c->user.id;
    r->user_roles = c->user.roles;
    r->usage_multiplier = HN_USER_HAS(&c->user, usage_multiplier) ? c->user.usage_multiplier : 1;
    r->created_ms = now;
    r->expiry_ms = now + b->conf->request_expiry_s * 1000;
    r->priority = c->priority;
    r->n = r->jobs = c->spec.n;
    r->state = BR_REQ_ACTIVE;
    r->kudos = c->kudos;
    r->consumed = 1; /* the activation tax */
    r->body = body_text;
    r->client_ip = c->client_ip;
    c->client_ip = NULL;
    r->s = c->spec;
    memset(&c->spec, 0, sizeof(c->spec));

    br_op *op = br_op_new(b);
    pthread_mutex_lock(&b->lock);
    /* the definitive concurrency check, atomic with the insert */
    json_t *models = json_object_get(c->stored, "models");
    if (!op || concurrency_exceeded(b, &c->user, models, r->n, &err)) {
        pthread_mutex_unlock(&b->lock);
        if (!op)
            api->error(&err, 500, "InternalServerError", "out of memory");
        br_op_discard(op);
        br_request_free(r);
        api->respond_error(c->req, &err);
        ctx_free(c);
        return;
    }
    r->seq = b->next_seq++;
    bool possible = br_request_possible(b, r, now);
    br_request_add(b, r);
    br_user *u = br_user_get(b, r->user_id, true);
    if (u)
        u->images_requested += r->jobs;
    int ok = br_store_request_insert(op, r);
    if (ok == 0) /* cluster: the same limit against the whole cluster (cluster.h) */
        ok = br_cluster_guard_concurrency(b, op, r, c->user.concurrency);
    if (u)
        u->stats_dirty = true;
    json_t *resp = json_pack("{s:s, s:f}", "id", r->id, "kudos", br_round(r->kudos, 0));
    if (!possible) {
        json_object_set_new(resp, "message", json_string(NO_WORKER_MESSAGE));
        add_warning(c->warnings, "NoAvailableWorker", NO_WORKER_MESSAGE);
    }
    if (json_array_size(c->warnings) > 0)
        json_object_set(resp, "warnings", c->warnings);
    json_t *info = !br_hooked(b, HN_HOOK_ID_generation_enqueued)
                       ? NULL
                       : json_pack("{s:s, s:I, s:i, s:f, s:O}", "id", r->id, "user_id",
                                   (json_int_t)r->user_id, "n", r->n, "kudos", r->kudos,
                                   "request", c->stored);
    if (ok != 0) {
        br_request_drop(b, r);
        pthread_mutex_unlock(&b->lock);
        br_op_discard(op);
        json_decref(resp);
        json_decref(info);
        br_fail(b, c->req, 500, "InternalServerError", "out of memory");
        ctx_free(c);
        return;
    }
    br_op_reply(op, c->req, 202, resp, HN_HOOK_ID_generation_enqueued, info);
    async_undo *undo = calloc(1, sizeof(*undo));
    if (undo) {
        memcpy(undo->id, r->id, sizeof(undo->id));
        undo->user_id = r->user_id;
        undo->images = u ? r->jobs : 0;
    }
    br_op_on_fail(op, async_rollback, undo);
    api->req_suspend(c->req);
    br_op_submit(b, op);
    pthread_mutex_unlock(&b->lock);
    ctx_free(c);
}

static void put_images_work(void *arg) {
    async_ctx *c = arg;
    broker *b = c->b;
    for (int i = 0; i < c->n_images; i++) {
        if (b->img->put(b->images->state, c->keys[i], c->data[i], c->len[i], &c->img_err) !=
            HN_OK) {
            c->images_failed = true;
            return;
        }
    }
}

static void put_images_done(void *arg) {
    async_ctx *c = arg;
    if (c->images_failed) {
        c->img_err.status = c->img_err.status ? c->img_err.status : 500;
        c->b->api->respond_error(c->req, &c->img_err);
        ctx_free(c);
        return;
    }
    async_commit(c);
}

void br_route_async(hn_request *req, void *state) {
    broker *b = state;
    const hn_api *api = b->api;
    hn_error err;
    json_t *body = br_checked_body(b, req, br_validate_async_schema,
                                   "The API Key corresponding to a registered user.");
    if (!body)
        return;
    /* a style (styles.c) rewrites prompt, params and models first, as on the horde */
    int64_t style_owner = -1;
    if (br_styles_apply(b, body, &style_owner, &err) != 0) {
        api->respond_error(req, &err);
        return;
    }
    if (br_mode_maintenance(b)) { /* PUT /status/modes (modes.c) */
        br_fail(b, req, 400, "MaintenanceMode",
                "AI Horde has entered maintenance mode. Please try again later.");
        return;
    }
    const char *webhook = br_jstr(body, "webhook");
    if (webhook && strncmp(webhook, "https://", 8) != 0) {
        br_fail(b, req, 400, "BadRequest", "Webhook URLs must use https.");
        return;
    }
    async_ctx *c = calloc(1, sizeof(*c));
    if (!c) {
        br_fail(b, req, 500, "InternalServerError", "out of memory");
        return;
    }
    c->b = b;
    c->req = req;
    c->warnings = json_array();
    br_uuid4(c->id);
    const char *ip = api->req_client_ip(req);
    c->client_ip = strdup(ip ? ip : "");
    /* a shared key (sharedkeys.c) acts as its owner, within its limits */
    hn_rc skrc = br_sharedkey_authenticate(b, req, &c->user, c->skey_id, &err);
    if (skrc == HN_ERROR ||
        (skrc == HN_DECLINED && br_authenticate(b, req, &c->user, &err) != HN_OK) ||
        validate_order(c, body, &err) != 0 ||
        br_ip_check(b, c->client_ip, &err) != 0) {
        api->respond_error(req, &err);
        ctx_free(c);
        return;
    }
    c->stored = normalise(c, body);
    if (!c->stored) {
        br_fail(b, req, 500, "InternalServerError", "out of memory");
        ctx_free(c);
        return;
    }
    /* the prompt filters (§5): may rewrite the stored prompt or refuse; a
     * user a moderator marked `filtered` always gets the replacement filter */
    bool replace = br_jbool(body, "replacement_filter", true) ||
                   (HN_USER_HAS(&c->user, filtered) && c->user.filtered);
    if (br_filters_apply(b, &c->user, c->client_ip, replace, c->stored, &err) != 0) {
        api->respond_error(req, &err);
        ctx_free(c);
        return;
    }
    memset(&err, 0, sizeof(err));
    if (hn_run_generation_validate(api, &c->user, c->stored, c->warnings, &err) == HN_ERROR) {
        if (!err.status)
            api->error(&err, 400, "BadRequest", "The request was refused.");
        api->respond_error(req, &err);
        ctx_free(c);
        return;
    }
    if (br_request_parse(b, c->stored, &c->spec) != 0) {
        br_fail(b, req, 500, "InternalServerError", "out of memory");
        ctx_free(c);
        return;
    }
    double kudos = 0;
    memset(&err, 0, sizeof(err));
    hn_rc prc = hn_run_generation_price(api, &c->user, c->stored, &kudos, &err);
    if (prc == HN_ERROR) {
        api->respond_error(req, &err);
        ctx_free(c);
        return;
    }
    c->kudos = prc == HN_DECLINED ? br_price_legacy(&c->spec) : kudos;
    if (br_jbool(body, "dry_run", false)) {
        double est = br_round(br_price_dry_run(b, &c->spec, c->kudos), 0);
        api->respond_json(req, 200, json_pack("{s:f}", "kudos", est));
        ctx_free(c);
        return;
    }
    if (c->skey_id[0] &&
        br_sharedkey_charge(b, c->skey_id, &c->spec, c->kudos * c->spec.n, &err) != HN_OK) {
        api->respond_error(req, &err);
        ctx_free(c);
        return;
    }
    double prio = 0;
    memset(&err, 0, sizeof(err));
    hn_rc qrc = hn_run_generation_priority(api, &c->user, c->stored, &prio, &err);
    if (qrc == HN_ERROR) {
        api->respond_error(req, &err);
        ctx_free(c);
        return;
    }
    c->priority = qrc == HN_DECLINED ? 0 : prio;
    /* Another user's style: the kudos plugin charges the requester the horde's
     * +2 activation tax and pays the style's owner 2 ("styled") with the
     * activation's own exactly-once event, so a crash can neither lose nor
     * repeat them (and a request that fails to commit moves nothing). */
    if (style_owner > 0 && style_owner != c->user.id)
        json_object_set_new(c->stored, "_style_owner_id", json_integer(style_owner));
    if (c->n_images > 0) {
        api->req_suspend(req);
        if (api->work_submit(put_images_work, put_images_done, c) != 0) {
            br_fail(b, req, 503, "ServiceUnavailable", "The node is stopping.");
            ctx_free(c);
        }
        return;
    }
    async_commit(c);
}

/* ---- check and status ---------------------------------------------------------------- */

static bool find_request(broker *b, hn_request *req, const char *what, char id[BR_ID_LEN]) {
    const char *raw = b->api->req_param(req, "id");
    if (!br_uuid_parse(raw, id)) {
        br_fail(b, req, 404, "RequestNotFound", "Image Waiting Prompt (%s) with ID '%.100s' not found.",
                what, raw ? raw : "");
        return false;
    }
    br_cluster_ensure_request(b, id); /* made on another node just now (cluster.h) */
    return true;
}

void br_route_check(hn_request *req, void *state) {
    broker *b = state;
    char id[BR_ID_LEN];
    if (!b->started) {
        br_fail(b, req, 503, "ServiceUnavailable", "The broker is starting.");
        return;
    }
    /* the horde refuses a timed-out IP here only when it does not say who it is */
    const char *agent = b->api->req_header(req, "Client-Agent");
    hn_error ip_err;
    if ((!agent || strcmp(agent, "unknown:0:unknown") == 0) &&
        br_ip_check(b, b->api->req_client_ip(req), &ip_err) != 0) {
        b->api->respond_error(req, &ip_err);
        return;
    }
    if (!find_request(b, req, "Check", id))
        return;
    br_status st;
    pthread_mutex_lock(&b->lock);
    br_request *r = br_request_find(b, id);
    if (r)
        br_status_compute(b, r, br_now_ms(), &st);
    pthread_mutex_unlock(&b->lock);
    if (!r) {
        br_fail(b, req, 404, "RequestNotFound", "Image Waiting Prompt (Check) with ID '%s' not found.",
                id);
        return;
    }
    b->api->respond_json(req, 200, br_status_json(&st));
}

/* A finished generation, copied out of the index so that the images can be
 * read without the lock. */
typedef struct gen_copy {
    char id[BR_ID_LEN];
    char worker_id[BR_ID_LEN];
    char *worker_name, *model, *gen_metadata;
    int64_t seed;
    bool censored;
} gen_copy;

static json_t *generations_json(broker *b, gen_copy *g, int n, bool r2) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) {
        char key[BR_ID_LEN + 8];
        snprintf(key, sizeof(key), "%s.webp", g[i].id);
        json_t *img = NULL;
        hn_error err;
        if (r2) {
            char url[2048];
            if (b->img->url_get(b->images->state, key, (int)b->conf->url_ttl_s, url, sizeof(url),
                                &err) == HN_OK)
                img = json_string(url);
        } else {
            void *data = NULL;
            size_t len = 0;
            if (b->img->get(b->images->state, key, &data, &len, &err) == HN_OK) {
                char *b64 = br_b64_encode(data, len);
                img = b64 ? json_string(b64) : NULL;
                free(b64);
                free(data);
            }
        }
        if (!img)
            img = json_string("N/A");
        char seed[32];
        snprintf(seed, sizeof(seed), "%lld", (long long)g[i].seed);
        json_t *meta = g[i].gen_metadata ? json_loads(g[i].gen_metadata, 0, NULL) : NULL;
        if (!json_is_array(meta)) {
            json_decref(meta);
            meta = json_array();
        }
        json_array_append_new(
            arr, json_pack("{s:o, s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:o}", "img", img, "seed", seed,
                           "id", g[i].id, "worker_id", g[i].worker_id, "worker_name",
                           g[i].worker_name ? g[i].worker_name : "", "model",
                           g[i].model ? g[i].model : "", "state", "ok", "censored", g[i].censored,
                           "gen_metadata", meta));
    }
    return arr;
}

static gen_copy *copy_generations(br_request *r, int *n) {
    int count = 0;
    for (br_job *j = r->jobs_head; j; j = j->rnext)
        if (j->state == BR_JOB_DONE)
            count++;
    gen_copy *g = calloc(count ? (size_t)count : 1, sizeof(*g));
    *n = 0;
    if (!g)
        return NULL;
    for (br_job *j = r->jobs_head; j; j = j->rnext) {
        if (j->state != BR_JOB_DONE)
            continue;
        gen_copy *c = &g[(*n)++];
        memcpy(c->id, j->id, sizeof(c->id));
        if (j->worker) {
            memcpy(c->worker_id, j->worker->id, sizeof(c->worker_id));
            c->worker_name = br_strdup(j->worker->name);
        }
        c->model = br_strdup(j->model);
        c->gen_metadata = br_strdup(j->gen_metadata);
        c->seed = j->seed;
        c->censored = j->censored;
    }
    return g;
}

static void free_generations(gen_copy *g, int n) {
    for (int i = 0; i < n; i++) {
        free(g[i].worker_name);
        free(g[i].model);
        free(g[i].gen_metadata);
    }
    free(g);
}

void br_route_status(hn_request *req, void *state) {
    broker *b = state;
    const hn_api *api = b->api;
    char id[BR_ID_LEN];
    if (!b->started) {
        br_fail(b, req, 503, "ServiceUnavailable", "The broker is starting.");
        return;
    }
    if (!find_request(b, req, "Status", id))
        return;
    bool cancel = api->req_method(req) == HN_DELETE;
    br_status st;
    gen_copy *gens = NULL;
    int n_gens = 0;
    bool r2 = true, shared = false;
    br_op *op = cancel ? br_op_new(b) : NULL;
    pthread_mutex_lock(&b->lock);
    br_request *r = br_request_find(b, id);
    if (r) {
        br_status_compute(b, r, br_now_ms(), &st);
        gens = copy_generations(r, &n_gens);
        r2 = r->s.r2;
        shared = r->s.shared;
    }
    if (r && cancel && op) {
        /* the answer is the status from before the cancel; in-flight jobs
         * may still be submitted and count as usual */
        bool was_ended = br_request_ended(r);
        r->n = 0;
        r->jobs = r->finished;
        if (r->state == BR_REQ_ACTIVE)
            r->state = BR_REQ_CANCELLED;
        br_request_requeue(b, r);
        br_store_request_update(op, r);
        if (!was_ended)
            br_op_notify(op, HN_HOOK_ID_generation_ended, br_ended_info(b, r, "cancelled"));
        br_op_hold(op);
        br_op_reply(op, req, 200, NULL, -1, NULL);
        api->req_suspend(req);
        br_op_submit(b, op);
    }
    pthread_mutex_unlock(&b->lock);
    if (!r) {
        br_op_discard(op);
        br_fail(b, req, 404, "RequestNotFound", "Image Waiting Prompt (Status) with ID '%s' not found.",
                id);
        return;
    }
    json_t *resp = br_status_json(&st);
    json_object_set_new(resp, "generations", gens ? generations_json(b, gens, n_gens, r2) : json_array());
    json_object_set_new(resp, "shared", json_boolean(shared));
    free_generations(gens, n_gens);
    if (cancel && op)
        br_op_set_body(op, resp);
    else
        api->respond_json(req, 200, resp);
}
