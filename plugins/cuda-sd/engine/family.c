/* family.c - see family.h. Shapes are read the way ComfyUI's
 * detect_unet_config walks a state dict (spec/sd-engine.md §2): levels
 * start at a downsampler ("input_blocks.N.0.op"), res blocks give the
 * channel multipliers, "input_blocks.N.1.transformer_blocks.K" the
 * transformer depth. */
#include "family.h"

#include "error_text.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define UNET "model.diffusion_model."
#define VAE "first_stage_model."
#define TEXT_HF "cond_stage_model.transformer.text_model."
#define TEXT_HF_OLD "cond_stage_model.transformer."
#define TEXT_OPENCLIP "cond_stage_model.model."

/* errors about one file: "<file>: ...", "(model): ..." when it has no name */
#define failf(err, errlen, fname, ...) \
    sd_fail_in(err, errlen, (fname) ? (fname) : "(model)", __VA_ARGS__)

/* Tensor by printf-formatted name, or NULL. */
static const sd_tensor_info *findf(const sd_model_file *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const sd_tensor_info *findf(const sd_model_file *f, const char *fmt, ...)
{
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return sd_model_file_find(f, name);
}

static bool starts(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static bool is_float(sd_dtype t)
{
    return t == SD_DTYPE_F32 || t == SD_DTYPE_F16 || t == SD_DTYPE_BF16 || t == SD_DTYPE_F64;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* ---- counting -------------------------------------------------------------- */
static void count_params(const sd_model_file *f, sd_family_info *info)
{
    int64_t unet_by_dtype[SD_DTYPE_COUNT] = {0};
    for (size_t i = 0; i < sd_model_file_count(f); i++) {
        const sd_tensor_info *t = sd_model_file_at(f, i);
        int64_t n = sd_tensor_numel(t);
        info->dtype_tensors[t->dtype]++;
        info->dtype_elements[t->dtype] += n;
        /* position_ids is an index buffer, not a parameter (float in old files) */
        if (!is_float(t->dtype) || ends_with(t->name, "position_ids")) continue;
        if (starts(t->name, UNET)) {
            info->params_unet += n;
            info->tensors_unet++;
            unet_by_dtype[t->dtype] += n;
        } else if (starts(t->name, VAE)) {
            info->params_vae += n;
            info->tensors_vae++;
        } else if (starts(t->name, "cond_stage_model.") || starts(t->name, "conditioner.")) {
            info->params_text += n;
            info->tensors_text++;
        } else {
            info->params_other += n;
            info->tensors_other++;
        }
    }
    sd_dtype best = SD_DTYPE_F32;
    for (int d = 0; d < SD_DTYPE_COUNT; d++)
        if (unet_by_dtype[d] > unet_by_dtype[best]) best = (sd_dtype)d;
    info->unet_dtype = best;
}

/* ---- UNet ------------------------------------------------------------------ */
static int detect_unet(const sd_model_file *f, sd_unet_config *u, char *err, size_t errlen)
{
    const char *fn = sd_model_file_path(f);
    const sd_tensor_info *t = findf(f, UNET "input_blocks.0.0.weight");
    if (!t) {
        /* is there any UNet tensor at all? */
        for (size_t i = 0; i < sd_model_file_count(f); i++)
            if (starts(sd_model_file_at(f, i)->name, UNET))
                return failf(err, errlen, fn, "UNet tensors present but %sinput_blocks.0.0.weight is missing", UNET);
        return 0;
    }
    if (t->ndim != 4) return failf(err, errlen, fn, "%sinput_blocks.0.0.weight is not a 4-D conv weight", UNET);
    u->present = true;
    u->model_channels = (int)t->shape[0];
    u->in_channels = (int)t->shape[1];
    if (u->model_channels <= 0) return failf(err, errlen, fn, "UNet conv_in has no output channels");
    const sd_tensor_info *o = findf(f, UNET "out.2.weight");
    if (!o || o->ndim != 4) return failf(err, errlen, fn, "UNet output conv %sout.2.weight is missing", UNET);
    u->out_channels = (int)o->shape[0];
    const sd_tensor_info *te = findf(f, UNET "time_embed.0.weight");
    if (!te || te->ndim != 2) return failf(err, errlen, fn, "UNet %stime_embed.0.weight is missing", UNET);
    u->time_embed_dim = (int)te->shape[0];

    int level = 0, res_in_level = 0;
    u->num_res_blocks = 0;
    u->context_dim = 0;
    for (int n = 1; n < 1000; n++) {
        if (findf(f, UNET "input_blocks.%d.0.op.weight", n)) {
            if (level == 0) u->num_res_blocks = res_in_level;
            level++;
            res_in_level = 0;
            if (level >= SD_MAX_LEVELS) return failf(err, errlen, fn, "UNet has more than %d levels", SD_MAX_LEVELS);
            continue;
        }
        if (!findf(f, UNET "input_blocks.%d.0.in_layers.0.weight", n)) break;
        const sd_tensor_info *ol = findf(f, UNET "input_blocks.%d.0.out_layers.3.weight", n);
        if (!ol || ol->ndim < 1) return failf(err, errlen, fn, "UNet res block input_blocks.%d lacks out_layers.3", n);
        if (res_in_level == 0) u->channel_mult[level] = (int)(ol->shape[0] / u->model_channels);
        res_in_level++;
        int depth = 0;
        while (findf(f, UNET "input_blocks.%d.1.transformer_blocks.%d.attn2.to_k.weight", n, depth)) depth++;
        if (depth > 0) {
            u->attention[level] = true;
            u->transformer_depth[level] = depth;
            const sd_tensor_info *k = findf(f, UNET "input_blocks.%d.1.transformer_blocks.0.attn2.to_k.weight", n);
            if (k->ndim != 2) return failf(err, errlen, fn, "UNet attn2.to_k of input_blocks.%d is not 2-D", n);
            if (u->context_dim == 0) u->context_dim = (int)k->shape[1];
            const sd_tensor_info *pi = findf(f, UNET "input_blocks.%d.1.proj_in.weight", n);
            if (!pi) return failf(err, errlen, fn, "UNet transformer input_blocks.%d.1 lacks proj_in", n);
            u->linear_proj = pi->ndim == 2;
        }
    }
    if (level == 0 && u->num_res_blocks == 0) u->num_res_blocks = res_in_level;
    u->num_levels = level + 1;
    if (u->num_res_blocks <= 0) return failf(err, errlen, fn, "UNet has no res blocks in its first level");
    int depth = 0;
    while (findf(f, UNET "middle_block.1.transformer_blocks.%d.attn2.to_k.weight", depth)) depth++;
    u->middle_transformer_depth = depth;
    if (u->context_dim == 0 && depth > 0) {
        const sd_tensor_info *k = findf(f, UNET "middle_block.1.transformer_blocks.0.attn2.to_k.weight");
        u->context_dim = k->ndim == 2 ? (int)k->shape[1] : 0;
    }
    u->num_heads = -1;
    u->head_dim = -1;
    return 0;
}

/* ---- VAE ------------------------------------------------------------------- */
static int detect_vae(const sd_model_file *f, sd_vae_config *v, char *err, size_t errlen)
{
    const char *fn = sd_model_file_path(f);
    const sd_tensor_info *ci = findf(f, VAE "encoder.conv_in.weight");
    const sd_tensor_info *di = findf(f, VAE "decoder.conv_in.weight");
    if (!ci && !di) return 0;
    if (!ci || !di || ci->ndim != 4 || di->ndim != 4)
        return failf(err, errlen, fn, "VAE is incomplete: needs both %sencoder.conv_in.weight and "
                     "%sdecoder.conv_in.weight (4-D)", VAE, VAE);
    v->present = true;
    v->ch = (int)ci->shape[0];
    v->in_channels = (int)ci->shape[1];
    v->z_channels = (int)di->shape[1];
    if (v->ch <= 0) return failf(err, errlen, fn, "VAE encoder.conv_in has no output channels");
    int lv = 0;
    while (lv < SD_MAX_LEVELS && findf(f, VAE "encoder.down.%d.block.0.conv1.weight", lv)) {
        const sd_tensor_info *c2 = findf(f, VAE "encoder.down.%d.block.0.conv2.weight", lv);
        if (!c2 || c2->ndim != 4) return failf(err, errlen, fn, "VAE encoder.down.%d.block.0 lacks conv2", lv);
        v->ch_mult[lv] = (int)(c2->shape[0] / v->ch);
        lv++;
    }
    if (lv == 0) return failf(err, errlen, fn, "VAE encoder has no down blocks");
    v->num_levels = lv;
    int rb = 0;
    while (findf(f, VAE "encoder.down.0.block.%d.conv1.weight", rb)) rb++;
    v->num_res_blocks = rb;
    v->scale_factor = 0.18215f;
    return 0;
}

/* ---- text encoder ---------------------------------------------------------- */
static int detect_text(const sd_model_file *f, sd_text_config *t, char *err, size_t errlen)
{
    const char *fn = sd_model_file_path(f);
    const sd_tensor_info *tok;
    if ((tok = findf(f, TEXT_HF "embeddings.token_embedding.weight")) ||
        (tok = findf(f, TEXT_HF_OLD "embeddings.token_embedding.weight"))) {
        bool new_layout = findf(f, TEXT_HF "embeddings.token_embedding.weight") != NULL;
        t->layout = SD_TEXT_CLIP_HF;
        t->prefix = new_layout ? TEXT_HF : TEXT_HF_OLD;
        const char *p = t->prefix;
        const sd_tensor_info *pos = findf(f, "%sembeddings.position_embedding.weight", p);
        const sd_tensor_info *fc1 = findf(f, "%sencoder.layers.0.mlp.fc1.weight", p);
        if (tok->ndim != 2 || !pos || pos->ndim != 2 || !fc1 || fc1->ndim != 2)
            return failf(err, errlen, fn, "CLIP text encoder under '%s' is incomplete (embeddings or layer 0 missing)", p);
        t->vocab_size = (int)tok->shape[0];
        t->width = (int)tok->shape[1];
        t->max_positions = (int)pos->shape[0];
        t->intermediate = (int)fc1->shape[0];
        int n = 0;
        while (findf(f, "%sencoder.layers.%d.self_attn.q_proj.weight", p, n)) n++;
        t->layers = n;
        t->quick_gelu = true;
        t->default_clip_skip = 1;
        t->pad_id = 49407;
    } else if ((tok = findf(f, TEXT_OPENCLIP "token_embedding.weight"))) {
        t->layout = SD_TEXT_OPENCLIP;
        t->prefix = TEXT_OPENCLIP;
        const sd_tensor_info *pos = findf(f, TEXT_OPENCLIP "positional_embedding");
        const sd_tensor_info *fc = findf(f, TEXT_OPENCLIP "transformer.resblocks.0.mlp.c_fc.weight");
        if (tok->ndim != 2 || !pos || pos->ndim != 2 || !fc || fc->ndim != 2)
            return failf(err, errlen, fn, "OpenCLIP text encoder under '%s' is incomplete", TEXT_OPENCLIP);
        t->vocab_size = (int)tok->shape[0];
        t->width = (int)tok->shape[1];
        t->max_positions = (int)pos->shape[0];
        t->intermediate = (int)fc->shape[0];
        int n = 0;
        while (findf(f, TEXT_OPENCLIP "transformer.resblocks.%d.attn.in_proj_weight", n)) n++;
        t->layers = n;
        t->quick_gelu = false;
        t->default_clip_skip = 2;
        t->pad_id = 0;
    } else {
        t->layout = SD_TEXT_NONE;
        return 0;
    }
    if (t->layers <= 0) return failf(err, errlen, fn, "text encoder has no transformer layers");
    /* real CLIP-L and OpenCLIP-H use 64-wide heads */
    t->heads = t->width >= 64 ? t->width / 64 : 1;
    return 0;
}

/* ---- sidecar configs --------------------------------------------------------- */
typedef struct sidecar {
    int prediction;             /* -1 unknown, else sd_prediction */
    int unet_heads, unet_head_dim, text_heads;  /* -1 unknown */
    float scale_factor;         /* 0 unknown */
} sidecar;

static int json_int_or(json_t *j, int dflt)
{
    return json_is_integer(j) ? (int)json_integer_value(j) : dflt;
}

static int pred_from_text(const char *s)
{
    if (!s) return -1;
    if (strcmp(s, "v") == 0 || strcmp(s, "v_prediction") == 0) return SD_PRED_V;
    if (strcmp(s, "eps") == 0 || strcmp(s, "epsilon") == 0) return SD_PRED_EPS;
    return -1;
}

static int read_json_sidecar(const char *path, sidecar *sc, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    if (!j) return failf(err, errlen, path, "model config is not valid JSON: %s (line %d)", jerr.text, jerr.line);
    if (!json_is_object(j)) {
        json_decref(j);
        return failf(err, errlen, path, "model config is not a JSON object");
    }
    json_t *ldm = json_object_get(j, "ldm_config");
    if (!json_is_object(ldm)) ldm = j;                 /* a bare ldm config */
    json_t *params = json_object_get(json_object_get(ldm, "model"), "params");
    json_t *unet = json_object_get(json_object_get(params, "unet_config"), "params");
    sc->prediction = pred_from_text(json_string_value(json_object_get(j, "prediction_type")));
    if (sc->prediction < 0) sc->prediction = pred_from_text(json_string_value(json_object_get(params, "parameterization")));
    sc->unet_heads = json_int_or(json_object_get(unet, "num_heads"), -1);
    sc->unet_head_dim = json_int_or(json_object_get(unet, "num_head_channels"), -1);
    json_t *te = json_object_get(j, "text_encoder");
    json_t *tiny = json_object_get(json_object_get(params, "cond_stage_config"), "tiny_text_cfg");
    sc->text_heads = json_int_or(json_object_get(te, "num_attention_heads"),
                     json_int_or(json_object_get(te, "heads"),
                     json_int_or(json_object_get(tiny, "num_attention_heads"),
                     json_int_or(json_object_get(tiny, "heads"), -1))));
    json_t *sf = json_object_get(j, "scale_factor");
    if (!json_is_number(sf)) sf = json_object_get(params, "scale_factor");
    if (json_is_number(sf)) sc->scale_factor = (float)json_number_value(sf);
    json_decref(j);
    return 0;
}

/* Line-based: "key: value" with any indentation; comments after '#'. */
static int read_yaml_sidecar(const char *path, sidecar *sc, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "r");
    if (!fp) return failf(err, errlen, path, "cannot read model config");
    char line[1024];
    while (fgets(line, sizeof line, fp)) {
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        char *colon = strchr(p, ':');
        if (!colon) continue;
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t') v++;
        char *e = v + strlen(v);
        while (e > v && isspace((unsigned char)e[-1])) *--e = '\0';
        if (*v == '"' || *v == '\'') {                     /* quoted scalar */
            v++;
            if (e > v && (e[-1] == '"' || e[-1] == '\'')) *--e = '\0';
        }
        if (strcmp(p, "parameterization") == 0) sc->prediction = pred_from_text(v);
        else if (strcmp(p, "num_heads") == 0 && *v) sc->unet_heads = atoi(v);
        else if (strcmp(p, "num_head_channels") == 0 && *v) sc->unet_head_dim = atoi(v);
        else if (strcmp(p, "scale_factor") == 0 && *v) sc->scale_factor = strtof(v, NULL);
    }
    fclose(fp);
    return 0;
}

static bool file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Tries "<stem>.json", "<stem>.yaml" for the model path with its extensions
 * removed one at a time. */
static bool find_sidecar(const char *model_path, char *out, size_t outlen)
{
    char stem[1024];
    if (!model_path || strlen(model_path) >= sizeof stem - 8) return false;
    snprintf(stem, sizeof stem, "%s", model_path);
    const char *base = strrchr(stem, '/');
    base = base ? base + 1 : stem;
    for (;;) {
        char *dot = strrchr(base, '.');
        if (!dot || dot == base) {
            /* nothing found: callers treat a non-empty out as a config path */
            if (outlen > 0) out[0] = '\0';
            return false;
        }
        *dot = '\0';
        static const char *const ext[] = {".json", ".yaml", ".yml"};
        for (int i = 0; i < 3; i++) {
            snprintf(out, outlen, "%s%s", stem, ext[i]);
            if (file_exists(out)) return true;
        }
    }
}

/* biased standard deviation of a tensor's elements */
static double tensor_std(const sd_tensor_info *t)
{
    int64_t n = sd_tensor_numel(t);
    if (n <= 0) return 0;
    double *v = malloc((size_t)n * sizeof *v);
    if (!v) return 0;
    sd_tensor_to_f64(t, v);
    double mean = 0, var = 0;
    for (int64_t i = 0; i < n; i++) mean += v[i];
    mean /= (double)n;
    for (int64_t i = 0; i < n; i++) var += (v[i] - mean) * (v[i] - mean);
    free(v);
    return sqrt(var / (double)n);
}

/* ---- detection --------------------------------------------------------------- */
int sd_family_detect_with_config(const sd_model_file *f, const char *config_path, sd_family_info *out, char *err,
                                 size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!f) return failf(err, errlen, "(null)", "no model file");
    const char *fn = sd_model_file_path(f);
    count_params(f, out);
    if (detect_unet(f, &out->unet, err, errlen) || detect_vae(f, &out->vae, err, errlen) ||
        detect_text(f, &out->text, err, errlen))
        return -1;

    out->context_dim = out->unet.context_dim;
    out->inpainting = out->unet.present && out->unet.in_channels == 9;
    /* SDXL base and refiner keep their text encoders under "conditioner." */
    bool sdxl = false;
    for (size_t i = 0; i < sd_model_file_count(f) && !sdxl; i++)
        sdxl = starts(sd_model_file_at(f, i)->name, "conditioner.embedders.");
    const sd_tensor_info *adm = findf(f, UNET "label_emb.0.0.weight");
    bool label_emb = adm != NULL;
    int adm_in = adm && adm->ndim == 2 ? (int)adm->shape[1] : 0;

    if (sdxl || adm_in == 2816 || adm_in == 2560) {
        out->family = SD_FAMILY_SDXL;
        snprintf(out->note, sizeof out->note, "SDXL checkpoints are not supported yet");
    } else if (label_emb) {
        out->family = SD_FAMILY_UNKNOWN;
        snprintf(out->note, sizeof out->note, "UNet with a class/ADM embedding (unCLIP or similar) is not supported");
    } else if (!out->unet.present) {
        out->family = SD_FAMILY_UNKNOWN;
        snprintf(out->note, sizeof out->note, "no UNet (%s*) in this file: not a Stable Diffusion checkpoint", UNET);
    } else if (out->text.layout == SD_TEXT_CLIP_HF || (out->text.layout == SD_TEXT_NONE && out->context_dim == 768)) {
        out->family = SD_FAMILY_SD1;
    } else if (out->text.layout == SD_TEXT_OPENCLIP || (out->text.layout == SD_TEXT_NONE && out->context_dim == 1024)) {
        out->family = SD_FAMILY_SD2;
    } else {
        out->family = SD_FAMILY_UNKNOWN;
        snprintf(out->note, sizeof out->note, "UNet with context dim %d and no known text encoder", out->context_dim);
    }
    if (out->family == SD_FAMILY_SD1 || out->family == SD_FAMILY_SD2) {
        if (out->text.layout != SD_TEXT_NONE && out->text.width != out->context_dim)
            return failf(err, errlen, fn, "text encoder width %d does not match the UNet context dim %d", out->text.width,
                         out->context_dim);
        if (out->unet.in_channels != 4 && out->unet.in_channels != 9)
            snprintf(out->note, sizeof out->note,
                     "UNet with %d input channels (depth / instruct-pix2pix conditioning) is not supported",
                     out->unet.in_channels);
        else if (!out->vae.present || out->text.layout == SD_TEXT_NONE)
            snprintf(out->note, sizeof out->note, "incomplete checkpoint: %s%s missing",
                     out->vae.present ? "" : "VAE (first_stage_model.*)",
                     out->text.layout != SD_TEXT_NONE ? "" : out->vae.present ? "text encoder" : " and text encoder");
        else
            out->supported = true;
        if (out->family == SD_FAMILY_SD1) out->unet.num_heads = 8;
        else out->unet.head_dim = 64;
    }

    /* sidecar config */
    sidecar sc = {-1, -1, -1, -1, 0.0f};
    char path[1024] = "";
    if (config_path && *config_path) {
        if (!file_exists(config_path)) return failf(err, errlen, config_path, "model config file not found");
        snprintf(path, sizeof path, "%s", config_path);
    } else if (!config_path) {
        find_sidecar(fn, path, sizeof path);
    }
    if (*path) {
        int rc = ends_with(path, ".json") ? read_json_sidecar(path, &sc, err, errlen)
                                          : read_yaml_sidecar(path, &sc, err, errlen);
        if (rc) return -1;
        snprintf(out->config_path, sizeof out->config_path, "%.*s", (int)sizeof out->config_path - 1, path);
        if (sc.unet_heads > 0) { out->unet.num_heads = sc.unet_heads; out->unet.head_dim = -1; }
        else if (sc.unet_head_dim > 0) { out->unet.head_dim = sc.unet_head_dim; out->unet.num_heads = -1; }
        if (sc.text_heads > 0) out->text.heads = sc.text_heads;
        if (sc.scale_factor > 0) out->vae.scale_factor = sc.scale_factor;
    }

    /* prediction type, in the order family.h documents */
    const char *gs = sd_model_file_metadata(f, "global_step");
    if (sc.prediction >= 0) {
        out->prediction = (sd_prediction)sc.prediction;
        const char *base = strrchr(path, '/');
        snprintf(out->prediction_source, sizeof out->prediction_source, "from the model config %.160s",
                 base ? base + 1 : path);
    } else if (out->family == SD_FAMILY_SD2 && gs) {
        bool base512 = strcmp(gs, "875000") == 0;
        out->prediction = base512 ? SD_PRED_EPS : SD_PRED_V;
        snprintf(out->prediction_source, sizeof out->prediction_source,
                 "checkpoint global_step %.24s (875000 = SD2 512-base, eps; others v)", gs);
    } else if (out->family == SD_FAMILY_SD2 && out->unet.in_channels == 4 &&
               findf(f, UNET "output_blocks.11.1.transformer_blocks.0.norm1.bias")) {
        double sd = tensor_std(findf(f, UNET "output_blocks.11.1.transformer_blocks.0.norm1.bias"));
        out->prediction = sd > 0.09 ? SD_PRED_V : SD_PRED_EPS;
        snprintf(out->prediction_source, sizeof out->prediction_source,
                 "ComfyUI heuristic: std of output_blocks.11.1 norm1.bias = %.4f %s 0.09", sd, sd > 0.09 ? ">" : "<=");
    } else {
        out->prediction = SD_PRED_EPS;
        snprintf(out->prediction_source, sizeof out->prediction_source, "default for %s%s",
                 sd_family_name(out->family), out->inpainting ? " inpainting" : "");
    }
    return 0;
}

int sd_family_detect(const sd_model_file *f, sd_family_info *out, char *err, size_t errlen)
{
    return sd_family_detect_with_config(f, NULL, out, err, errlen);
}

int sd_family_check_supported(const sd_model_file *f, const sd_family_info *info, char *err, size_t errlen)
{
    if (info->supported) return 0;
    return failf(err, errlen, f ? sd_model_file_path(f) : "(model)", "%s",
                 info->note[0] ? info->note : "unsupported checkpoint");
}

const char *sd_family_name(sd_family fam)
{
    switch (fam) {
    case SD_FAMILY_SD1: return "SD1";
    case SD_FAMILY_SD2: return "SD2";
    case SD_FAMILY_SDXL: return "SDXL";
    default: return "unknown";
    }
}

const char *sd_prediction_name(sd_prediction p) { return p == SD_PRED_V ? "v" : "eps"; }

/* ---- description ------------------------------------------------------------- */
typedef struct text_buf {
    char *buf;
    size_t len, used;           /* used may exceed len: the length needed */
} text_buf;

static void tb_printf(text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tb_printf(text_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = b->used < b->len ? b->len - b->used : 0;
    int n = vsnprintf(room ? b->buf + b->used : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0) b->used += (size_t)n;
}

/* 859520964 -> "859,520,964" */
static const char *grouped(int64_t v, char *out, size_t len)
{
    char digits[32];
    snprintf(digits, sizeof digits, "%lld", (long long)(v < 0 ? -v : v));
    size_t nd = strlen(digits), k = 0;
    if (v < 0 && k + 1 < len) out[k++] = '-';
    for (size_t i = 0; i < nd && k + 2 < len; i++) {
        if (i > 0 && (nd - i) % 3 == 0) out[k++] = ',';
        out[k++] = digits[i];
    }
    out[k] = '\0';
    return out;
}

static void tb_ints(text_buf *b, const int *v, int n)
{
    tb_printf(b, "[");
    for (int i = 0; i < n; i++) tb_printf(b, "%s%d", i ? "," : "", v[i]);
    tb_printf(b, "]");
}

size_t sd_family_describe(const sd_model_file *f, const sd_family_info *info, char *buf, size_t len)
{
    text_buf b = {buf, len, 0};
    if (buf && len) buf[0] = '\0';
    char g1[40], g2[40], g3[40], g4[40], g5[40];
    tb_printf(&b, "file:        %s\n", sd_model_file_path(f));
    tb_printf(&b, "format:      %s\n", sd_model_file_format(f));
    tb_printf(&b, "family:      %s%s%s%s\n", sd_family_name(info->family),
              info->supported ? " (supported)" : " (not supported: ", info->supported ? "" : info->note,
              info->supported ? "" : ")");
    tb_printf(&b, "prediction:  %s (%s)\n", info->prediction == SD_PRED_V ? "v (v-prediction)" : "eps (epsilon)",
              info->prediction_source);
    tb_printf(&b, "inpainting:  %s\n", info->inpainting ? "yes (9 input channels)" : "no");
    tb_printf(&b, "tensors:     %zu (", sd_model_file_count(f));
    bool first = true;
    for (int d = 0; d < SD_DTYPE_COUNT; d++) {
        if (!info->dtype_tensors[d]) continue;
        tb_printf(&b, "%s%s %zu", first ? "" : ", ", sd_dtype_name((sd_dtype)d), info->dtype_tensors[d]);
        first = false;
    }
    tb_printf(&b, ")\n");
    tb_printf(&b, "parameters:  unet %s, vae %s, text encoder %s (total %s); other tensors %s\n",
              grouped(info->params_unet, g1, sizeof g1), grouped(info->params_vae, g2, sizeof g2),
              grouped(info->params_text, g3, sizeof g3),
              grouped(info->params_unet + info->params_vae + info->params_text, g4, sizeof g4),
              grouped(info->params_other, g5, sizeof g5));
    if (info->unet.present) {
        const sd_unet_config *u = &info->unet;
        tb_printf(&b, "unet:        %s weights, in %d, out %d, channels %d x ", sd_dtype_name(info->unet_dtype),
                  u->in_channels, u->out_channels, u->model_channels);
        tb_ints(&b, u->channel_mult, u->num_levels);
        int att[SD_MAX_LEVELS];
        for (int i = 0; i < u->num_levels; i++) att[i] = u->attention[i] ? u->transformer_depth[i] : 0;
        tb_printf(&b, ", %d res blocks/level, transformer depth ", u->num_res_blocks);
        tb_ints(&b, att, u->num_levels);
        tb_printf(&b, ", context %d, proj %s, ", u->context_dim, u->linear_proj ? "linear" : "conv");
        if (u->num_heads > 0) tb_printf(&b, "%d heads\n", u->num_heads);
        else tb_printf(&b, "head dim %d\n", u->head_dim);
    }
    if (info->vae.present) {
        tb_printf(&b, "vae:         channels %d x ", info->vae.ch);
        tb_ints(&b, info->vae.ch_mult, info->vae.num_levels);
        tb_printf(&b, ", %d res blocks, z %d, scale factor %g\n", info->vae.num_res_blocks, info->vae.z_channels,
                  (double)info->vae.scale_factor);
    }
    if (info->text.layout != SD_TEXT_NONE) {
        const sd_text_config *t = &info->text;
        tb_printf(&b, "text:        %s, width %d, %d layers, %d heads, mlp %d, vocab %d, uses %s layer, pad id %d\n",
                  t->layout == SD_TEXT_CLIP_HF ? "CLIP (HF layout)" : "OpenCLIP", t->width, t->layers, t->heads,
                  t->intermediate, t->vocab_size, t->default_clip_skip == 1 ? "the last" : "the penultimate",
                  t->pad_id);
    }
    if (info->config_path[0]) tb_printf(&b, "config:      %s\n", info->config_path);
    const char *gs = sd_model_file_metadata(f, "global_step");
    if (gs) tb_printf(&b, "global_step: %s\n", gs);
    return b.used;
}
