/* kudos: the per-image price; see price.h. */
#include "price.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- reading a request ------------------------------------------------------------ */

static long long jint(const json_t *o, const char *key, long long def) {
    const json_t *v = json_object_get(o, key);
    if (json_is_integer(v))
        return json_integer_value(v);
    if (json_is_real(v))
        return (long long)json_real_value(v);
    return def;
}

static double jnum(const json_t *o, const char *key, double def, bool *present) {
    const json_t *v = json_object_get(o, key);
    if (present)
        *present = json_is_number(v);
    return json_is_number(v) ? json_number_value(v) : def;
}

static bool jbool(const json_t *o, const char *key, bool def) {
    const json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

static void jcopy(char *dst, size_t len, const json_t *o, const char *key, const char *def) {
    const char *s = json_string_value(json_object_get(o, key));
    snprintf(dst, len, "%s", s ? s : def);
}

/* The horde's KNOWN_LCM_LORA_IDS and KNOWN_LCM_LORA_VERSIONS (§3.3 b). */
static bool lcm_lora(const json_t *lora) {
    static const char *const ids[] = {"195519", "216190", "324115"};
    static const char *const versions[] = {"246747", "247778", "268475", "243643",
                                           "225222", "219782", "363353"};
    const char *name = json_string_value(json_object_get(lora, "name"));
    if (!name)
        return false;
    bool is_version = jbool(lora, "is_version", false);
    const char *const *list = is_version ? versions : ids;
    size_t n = is_version ? sizeof(versions) / sizeof(*versions) : sizeof(ids) / sizeof(*ids);
    for (size_t i = 0; i < n; i++)
        if (strcmp(name, list[i]) == 0)
            return true;
    return false;
}

int kd_gen_from_request(const json_t *request, kd_gen *g) {
    memset(g, 0, sizeof(*g));
    if (!json_is_object(request))
        return -1;
    const json_t *p = json_object_get(request, "params");
    if (!json_is_object(p))
        p = NULL; /* every lookup below then gives its default */
    g->width = (int)jint(p, "width", 512);
    g->height = (int)jint(p, "height", 512);
    jcopy(g->control_type, sizeof(g->control_type), p, "control_type", "");
    bool control = g->control_type[0] != '\0';
    long long steps = jint(p, "steps", control ? 20 : 30);
    if (control && steps > 40)
        steps = 40; /* the horde caps ControlNet steps silently */
    g->steps = (int)steps;
    g->n = (int)jint(p, "n", 1);
    g->cfg_scale = jnum(p, "cfg_scale", 5.0, NULL);
    g->denoising = jnum(p, "denoising_strength", 1.0, &g->has_denoising);
    g->control_strength = jnum(p, "control_strength", 1.0, &g->has_control_strength);
    g->karras = jbool(p, "karras", true);
    g->hires_fix = jbool(p, "hires_fix", false);
    g->return_control_map = jbool(p, "return_control_map", false);
    jcopy(g->sampler, sizeof(g->sampler), p, "sampler_name", "k_euler_a");
    const char *workflow = json_string_value(json_object_get(p, "workflow"));
    g->qr_code = workflow && strcmp(workflow, "qr_code") == 0;

    size_t i;
    const json_t *x;
    json_array_foreach(json_object_get(p, "post_processing"), i, x) {
        const char *name = json_string_value(x);
        if (!name || strlen(name) >= sizeof(g->pp[0]) || g->n_pp == KD_MAX_PP) {
            g->pp_overflow = true;
            continue;
        }
        snprintf(g->pp[g->n_pp++], sizeof(g->pp[0]), "%s", name);
    }
    const json_t *loras = json_object_get(p, "loras");
    g->n_loras = (int)json_array_size(loras);
    json_array_foreach(loras, i, x) {
        if (lcm_lora(x))
            g->lcm_lora = true;
    }
    g->has_tis = json_array_size(json_object_get(p, "tis")) > 0;

    /* source images: the broker's stored form has flags, a raw body the images */
    const json_t *hs = json_object_get(request, "_has_source");
    if (json_is_boolean(hs)) {
        g->has_source = json_is_true(hs);
        g->has_mask = jbool(request, "_has_mask", false);
        g->n_extra_src = (int)json_array_size(json_object_get(request, "_extra_strengths"));
    } else {
        const char *src = json_string_value(json_object_get(request, "source_image"));
        const char *msk = json_string_value(json_object_get(request, "source_mask"));
        g->has_source = src && *src;
        g->has_mask = g->has_source && msk && *msk;
        g->n_extra_src = (int)json_array_size(json_object_get(request, "extra_source_images"));
    }
    jcopy(g->source_processing, sizeof(g->source_processing), request, "source_processing",
          "img2img");
    g->slow_workers = jbool(request, "slow_workers", true);
    g->worker_blacklist = jbool(request, "worker_blacklist", false);
    g->models = json_object_get(request, "models");
    if (!json_is_array(g->models))
        g->models = NULL;
    return 0;
}

int kd_accurate_steps(const kd_gen *g) {
    static const char *const second_order[] = {"k_heun", "k_dpm_2", "k_dpm_2_a", "k_dpmpp_2s_a",
                                               "k_dpmpp_sde"};
    if (strcmp(g->sampler, "k_dpm_adaptive") == 0)
        return 40; /* it picks its own step count; the horde assumes 40 */
    for (size_t i = 0; i < sizeof(second_order) / sizeof(*second_order); i++)
        if (strcmp(g->sampler, second_order[i]) == 0)
            return g->steps * 2;
    return g->steps;
}

bool kd_uses_lcm(const kd_gen *g) {
    return strcmp(g->sampler, "lcm") == 0 || g->lcm_lora;
}

double kd_py_round(double x, int ndigits) {
    if (!isfinite(x))
        return x;
    /* printf's %.Nf rounds the exact binary value correctly (ties to even),
     * which is what Python's round() does */
    char buf[512];
    snprintf(buf, sizeof(buf), "%.*f", ndigits, x);
    return strtod(buf, NULL);
}

/* ---- the legacy formula ------------------------------------------------------------ */

double kd_price_legacy(const kd_gen *g) {
    double px = (double)g->width * g->height;
    double r = pow(px - 64.0 * 64.0, 1.75) / pow(1024.0 * 1024.0 - 64.0 * 64.0, 1.75);
    /* the horde's legacy formula reads params.steps, not the accurate steps */
    double steps = g->steps;
    double cost = kd_py_round(0.1232 * steps + r * (0.1232 * steps * 8.75), 2);
    for (int i = 0; i < g->n_pp; i++)
        cost = kd_py_round(cost * 1.2, 2);
    if (g->control_type[0] && !g->return_control_map)
        cost = kd_py_round(cost * 3, 2);
    return cost;
}

/* ---- the neural model ----------------------------------------------------------------- */

#define KD_LAYERS 4
#define KD_INPUTS 47

struct kd_price_model {
    int in[KD_LAYERS], out[KD_LAYERS];
    float *w[KD_LAYERS]; /* out x in, row-major */
    float *b[KD_LAYERS];
    double basis;        /* seconds of the basis job, rounded to 2 decimals */
};

/* The one-hot vocabularies, sorted as the horde sorts them (Python's sort). */
static const char *const SAMPLERS[] = {"ddim",      "k_dpm_2",      "k_dpm_2_a",   "k_dpm_adaptive",
                                       "k_dpm_fast", "k_dpmpp_2m",  "k_dpmpp_2s_a", "k_dpmpp_sde",
                                       "k_euler",   "k_euler_a",    "k_heun",      "k_lms",
                                       "plms",      "uni_pc",       "uni_pc_bh2"};
static const char *const CONTROLS[] = {"None",   "canny",  "depth",    "fakescribbles", "hed",
                                       "hough",  "normal", "openpose", "scribble",      "seg"};
static const char *const SOURCES[] = {"img2img", "inpainting", "outpainting", "txt2img"};
static const char *const PPS[] = {"4x_AnimeSharp",     "CodeFormers",       "GFPGAN",
                                  "NMKD_Siax",         "RealESRGAN_x2plus", "RealESRGAN_x4plus",
                                  "RealESRGAN_x4plus_anime_6B", "strip_background"};
#define COUNT(a) ((int)(sizeof(a) / sizeof(*(a))))

static int index_of(const char *const *list, int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0)
            return i;
    return -1;
}

static float *read_tensor(const json_t *root, const char *key, int rows, int cols, char *err,
                          size_t errlen) {
    const json_t *t = json_object_get(root, key);
    const json_t *shape = json_object_get(t, "shape");
    const json_t *data = json_object_get(t, "data");
    size_t want_dims = cols ? 2 : 1;
    bool ok = json_is_array(shape) && json_array_size(shape) == want_dims &&
              json_integer_value(json_array_get(shape, 0)) == rows &&
              (!cols || json_integer_value(json_array_get(shape, 1)) == cols);
    size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
    if (!ok || json_array_size(data) != n) {
        snprintf(err, errlen, "price model: tensor %s missing or not %dx%d", key, rows,
                 cols ? cols : 1);
        return NULL;
    }
    float *v = malloc(n * sizeof(float));
    if (!v) {
        snprintf(err, errlen, "price model: out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *x = json_array_get(data, i);
        if (!json_is_number(x)) {
            snprintf(err, errlen, "price model: %s[%zu] is not a number", key, i);
            free(v);
            return NULL;
        }
        v[i] = (float)json_number_value(x); /* the values are float32, exact */
    }
    return v;
}

/* Encodes g as the 47 inputs. Returns -1 for what the model cannot encode. */
static int encode(const kd_gen *g, float *x) {
    memset(x, 0, KD_INPUTS * sizeof(float));
    double denoising = 1.0, control_strength = 1.0;
    bool control = g->control_type[0] != '\0';
    if (g->has_source) {
        denoising = g->has_denoising ? g->denoising : 1.0;
        if (control) {
            control_strength = g->has_control_strength ? g->control_strength
                               : g->has_denoising      ? g->denoising
                                                       : 1.0;
            denoising = 1.0;
        }
    }
    /* computed in double, then stored as float32, as torch.tensor(...).float() */
    x[0] = (float)(g->height / 1024.0);
    x[1] = (float)(g->width / 1024.0);
    x[2] = (float)(g->steps / 100.0); /* raw steps, not accurate steps */
    x[3] = (float)(g->cfg_scale / 30.0);
    x[4] = (float)denoising;
    x[5] = (float)control_strength;
    x[6] = g->karras ? 1.0f : 0.0f;
    x[7] = g->hires_fix ? 1.0f : 0.0f;
    x[8] = g->has_source ? 1.0f : 0.0f;
    x[9] = g->has_mask ? 1.0f : 0.0f;
    int at = 10;
    int s = index_of(SAMPLERS, COUNT(SAMPLERS), g->sampler);
    if (s < 0)
        s = index_of(SAMPLERS, COUNT(SAMPLERS), "k_euler"); /* DDIM, lcm, dpmsolver, ... */
    x[at + s] = 1.0f;
    at += COUNT(SAMPLERS);
    int c = index_of(CONTROLS, COUNT(CONTROLS), control ? g->control_type : "None");
    if (c < 0)
        return -1;
    x[at + c] = 1.0f;
    at += COUNT(CONTROLS);
    const char *proc = "txt2img";
    if (g->has_source)
        proc = strcmp(g->source_processing, "remix") == 0 ? "img2img" : g->source_processing;
    int sp = index_of(SOURCES, COUNT(SOURCES), proc);
    if (sp < 0)
        return -1;
    x[at + sp] = 1.0f;
    at += COUNT(SOURCES);
    if (g->pp_overflow)
        return -1;
    for (int i = 0; i < g->n_pp; i++) {
        int k = index_of(PPS, COUNT(PPS), g->pp[i]);
        if (k < 0)
            return -1; /* the newer post-processors: the horde's model throws */
        x[at + k] += 1.0f;
    }
    return 0;
}

static double run(const kd_price_model *m, const float *input) {
    float buf_a[128], buf_b[128];
    const float *in = input;
    float *out = buf_a;
    for (int l = 0; l < KD_LAYERS; l++) {
        for (int o = 0; o < m->out[l]; o++) {
            const float *row = m->w[l] + (size_t)o * (size_t)m->in[l];
            double acc = 0;
            for (int i = 0; i < m->in[l]; i++)
                acc += (double)row[i] * (double)in[i];
            acc += m->b[l][o];
            if (l < KD_LAYERS - 1 && acc < 0)
                acc = 0; /* ReLU after the hidden layers */
            out[o] = (float)acc; /* activations are float32 between layers */
        }
        in = out;
        out = out == buf_a ? buf_b : buf_a;
    }
    return (double)in[0];
}

static const kd_gen *basis_job(kd_gen *g) {
    memset(g, 0, sizeof(*g));
    g->width = g->height = 512;
    g->steps = 50;
    g->n = 1;
    g->cfg_scale = 7.5;
    g->karras = true;
    snprintf(g->sampler, sizeof(g->sampler), "k_euler");
    snprintf(g->source_processing, sizeof(g->source_processing), "txt2img");
    return g;
}

kd_price_model *kd_price_model_load(const char *path, char *err, size_t errlen) {
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) {
        snprintf(err, errlen, "price model %s: %s", path, jerr.text);
        return NULL;
    }
    static const int widths[KD_LAYERS + 1] = {KD_INPUTS, 79, 101, 104, 1};
    kd_price_model *m = calloc(1, sizeof(*m));
    if (!m) {
        snprintf(err, errlen, "price model: out of memory");
        json_decref(root);
        return NULL;
    }
    for (int l = 0; l < KD_LAYERS; l++) {
        char wk[16], bk[16];
        snprintf(wk, sizeof(wk), "w%d", l);
        snprintf(bk, sizeof(bk), "b%d", l);
        m->in[l] = widths[l];
        m->out[l] = widths[l + 1];
        m->w[l] = read_tensor(root, wk, m->out[l], m->in[l], err, errlen);
        m->b[l] = m->w[l] ? read_tensor(root, bk, m->out[l], 0, err, errlen) : NULL;
        if (!m->b[l]) {
            json_decref(root);
            kd_price_model_free(m);
            return NULL;
        }
    }
    json_decref(root);
    kd_gen g;
    float x[KD_INPUTS];
    encode(basis_job(&g), x);
    m->basis = kd_py_round(run(m, x), 2);
    if (!(m->basis > 0)) {
        snprintf(err, errlen, "price model %s: the basis job takes %g s, not a usable model", path,
                 m->basis);
        kd_price_model_free(m);
        return NULL;
    }
    return m;
}

void kd_price_model_free(kd_price_model *m) {
    if (!m)
        return;
    for (int l = 0; l < KD_LAYERS; l++) {
        free(m->w[l]);
        free(m->b[l]);
    }
    free(m);
}

int kd_price_model_seconds(const kd_price_model *m, const kd_gen *g, double *seconds) {
    float x[KD_INPUTS];
    if (encode(g, x) != 0)
        return -1;
    *seconds = kd_py_round(run(m, x), 2);
    return 0;
}

double kd_price_model_basis(const kd_price_model *m) {
    return m->basis;
}

/* ---- the price ----------------------------------------------------------------------- */

/* The horde's KUDOS_BASIS (10) plus its default basis_adjustment (1). */
#define KD_KUDOS_BASIS 11.0

double kd_price(const kd_price_model *m, const kd_gen *g) {
    double kudos;
    double t;
    if (m && kd_price_model_seconds(m, g, &t) == 0)
        kudos = kd_py_round(t / m->basis * KD_KUDOS_BASIS, 2);
    else
        kudos = kd_price_legacy(g);
    /* LoRAs cost download time, TIs a little */
    kudos += g->n_loras * 3;
    if (g->has_tis)
        kudos += 1;
    return kudos;
}
