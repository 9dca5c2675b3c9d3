/* broker: bridge capabilities; see bridge.h. The tables are the public
 * horde's horde/bridge_reference.py, written out as data. */
#include "bridge.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const br_cap_names[BR_CAP_COUNT] = {
    "img2img", "inpainting", "karras", "post-processing", "GFPGAN", "RealESRGAN_x4plus", "r2",
    "CodeFormers", "clip_skip", "r2_source", "controlnet", "strip_background",
    "return_control_map", "RealESRGAN_x4plus_anime_6B", "NMKD_Siax", "4x_AnimeSharp",
    "image_is_control", "RealESRGAN_x2plus", "hires_fix", "tiling", "textual_inversion", "lora",
    "lora_versions", "extra_source_images", "stable_cascade_2pass", "qr_code", "extra_texts",
    "workflow", "layer_diffuse", "flux", "4xNomos8kSC", "4xLSDIRplus",
    "4xNomosWebPhoto_RealPLKSR", "4xNomos2_realplksr_dysample", "4xNomos2_hq_dat2",
    "2xModernSpanimationV1", "GFPGANv1.3", "RestoreFormer", "painting",
};

const char *const br_samplers[BR_N_SAMPLERS] = {
    "k_lms", "k_heun", "k_euler", "k_euler_a", "k_dpm_2", "k_dpm_2_a", "k_dpm_fast",
    "k_dpm_adaptive", "k_dpmpp_2s_a", "k_dpmpp_2m", "dpmsolver", "k_dpmpp_sde", "DDIM", "lcm",
};

int br_sampler_index(const char *name) {
    for (int i = 0; i < BR_N_SAMPLERS; i++)
        if (strcmp(br_samplers[i], name) == 0)
            return i;
    return -1;
}

const br_pp br_pps[BR_N_PP] = {
    {"GFPGAN", BR_CAP_GFPGAN, false, false, 1.0},
    {"RealESRGAN_x4plus", BR_CAP_REALESRGAN_X4PLUS, true, true, 1.05},
    {"RealESRGAN_x2plus", BR_CAP_REALESRGAN_X2PLUS, true, false, 1.05},
    {"RealESRGAN_x4plus_anime_6B", BR_CAP_REALESRGAN_X4PLUS_ANIME_6B, true, true, 1.05},
    {"NMKD_Siax", BR_CAP_NMKD_SIAX, true, true, 1.05},
    {"4x_AnimeSharp", BR_CAP_4X_ANIMESHARP, true, true, 1.05},
    {"CodeFormers", BR_CAP_CODEFORMERS, false, true, 1.0},
    {"strip_background", BR_CAP_STRIP_BACKGROUND, false, false, 1.0},
    {"4xNomos8kSC", BR_CAP_4XNOMOS8KSC, true, true, 1.05},
    {"4xLSDIRplus", BR_CAP_4XLSDIRPLUS, true, true, 1.05},
    {"4xNomosWebPhoto_RealPLKSR", BR_CAP_4XNOMOSWEBPHOTO_REALPLKSR, true, false, 1.05},
    {"4xNomos2_realplksr_dysample", BR_CAP_4XNOMOS2_REALPLKSR_DYSAMPLE, true, false, 1.05},
    {"4xNomos2_hq_dat2", BR_CAP_4XNOMOS2_HQ_DAT2, true, true, 1.05},
    {"2xModernSpanimationV1", BR_CAP_2XMODERNSPANIMATIONV1, true, false, 1.05},
    {"GFPGANv1.3", BR_CAP_GFPGANV1_3, false, false, 1.0},
    {"RestoreFormer", BR_CAP_RESTOREFORMER, false, true, 1.0},
};

const br_pp *br_pp_find(const char *name) {
    for (int i = 0; i < BR_N_PP; i++)
        if (strcmp(br_pps[i].name, name) == 0)
            return &br_pps[i];
    return NULL;
}

/* Our own worker's agent name: it implements the whole reGen feature set. */
#define BR_OWN_BRIDGE "horde-node"

/* One row of a bridge's table: from `version` on, these capabilities. */
typedef struct cap_row {
    int version;
    uint64_t caps;
} cap_row;

#define C(x) BR_CAPBIT(BR_CAP_##x)

static const cap_row regen_caps[] = {
    {1, C(IMG2IMG) | C(INPAINTING) | C(KARRAS) | C(POST_PROCESSING) | C(GFPGAN) |
            C(REALESRGAN_X4PLUS) | C(R2) | C(CODEFORMERS) | C(CLIP_SKIP) | C(R2_SOURCE) |
            C(CONTROLNET) | C(STRIP_BACKGROUND) | C(RETURN_CONTROL_MAP) |
            C(REALESRGAN_X4PLUS_ANIME_6B) | C(NMKD_SIAX) | C(4X_ANIMESHARP) | C(IMAGE_IS_CONTROL) |
            C(REALESRGAN_X2PLUS) | C(HIRES_FIX) | C(TILING)},
    {2, C(TEXTUAL_INVERSION) | C(LORA)},
    {3, C(LORA_VERSIONS)},
    {5, C(EXTRA_SOURCE_IMAGES)},
    {6, C(STABLE_CASCADE_2PASS)},
    {7, C(QR_CODE) | C(EXTRA_TEXTS) | C(WORKFLOW)},
    {8, C(LAYER_DIFFUSE)},
    {9, C(FLUX)},
    {13, C(4XNOMOS8KSC) | C(4XLSDIRPLUS) | C(4XNOMOSWEBPHOTO_REALPLKSR) |
             C(4XNOMOS2_REALPLKSR_DYSAMPLE) | C(4XNOMOS2_HQ_DAT2) | C(2XMODERNSPANIMATIONV1) |
             C(GFPGANV1_3) | C(RESTOREFORMER)},
    {0, 0},
};

static const cap_row worker_caps[] = {
    {3, C(IMG2IMG)},
    {4, C(INPAINTING)},
    {6, C(KARRAS)},
    {7, C(POST_PROCESSING) | C(GFPGAN) | C(REALESRGAN_X4PLUS)},
    {8, C(R2)},
    {9, C(CODEFORMERS)},
    {13, C(HIRES_FIX) | C(CLIP_SKIP)},
    {14, C(R2_SOURCE)},
    {15, C(CONTROLNET)},
    {18, C(STRIP_BACKGROUND) | C(RETURN_CONTROL_MAP) | C(REALESRGAN_X4PLUS_ANIME_6B)},
    {19, C(NMKD_SIAX) | C(4X_ANIMESHARP)},
    {21, C(REALESRGAN_X2PLUS)},
    {22, C(LORA)},
    {23, C(IMAGE_IS_CONTROL)},
    {24, C(TEXTUAL_INVERSION)},
    {0, 0},
};

static const cap_row webui_caps[] = {
    {1, C(INPAINTING) | C(KARRAS) | C(R2) | C(CODEFORMERS)},
    {2, C(TILING)},
    {3, C(R2_SOURCE)},
    {4, C(CLIP_SKIP)},
    {0, 0},
};

static const cap_row autoweb_caps[] = {
    {1, C(PAINTING) | C(IMG2IMG) | C(KARRAS)},
    {2, C(TILING)},
    {0, 0},
};

#undef C

/* Sampler rows: from `version` on, these samplers (bit masks over br_samplers). */
typedef struct sampler_row {
    int version;
    uint32_t karras, plain_only; /* plain_only: usable only with karras off */
} sampler_row;

#define S(x) (1u << (x))
enum {
    S_LMS, S_HEUN, S_EULER, S_EULER_A, S_DPM_2, S_DPM_2_A, S_DPM_FAST, S_DPM_ADAPTIVE,
    S_DPMPP_2S_A, S_DPMPP_2M, S_DPMSOLVER, S_DPMPP_SDE, S_DDIM, S_LCM
};
#define ALL_SAMPLERS ((1u << BR_N_SAMPLERS) - 1)

static const sampler_row regen_samplers[] = {
    {1, ALL_SAMPLERS & ~S(S_LCM), 0},
    {3, S(S_LCM), 0},
    {0, 0, 0},
};
static const sampler_row worker_samplers[] = {
    {11, S(S_LMS) | S(S_HEUN) | S(S_EULER) | S(S_EULER_A) | S(S_DPM_2) | S(S_DPM_2_A) |
             S(S_DPM_FAST) | S(S_DPM_ADAPTIVE) | S(S_DPMPP_2S_A) | S(S_DPMPP_2M) | S(S_DPMSOLVER),
     0},
    {12, S(S_DPMPP_SDE), 0},
    {17, 0, S(S_DDIM)},
    {0, 0, 0},
};
static const sampler_row webui_samplers[] = {
    {1, S(S_LMS) | S(S_HEUN) | S(S_EULER) | S(S_EULER_A) | S(S_DPM_2) | S(S_DPM_2_A) |
            S(S_DPM_FAST) | S(S_DPM_ADAPTIVE) | S(S_DPMPP_2S_A) | S(S_DPMPP_2M) | S(S_DPMPP_SDE),
     S(S_DDIM)},
    {0, 0, 0},
};
static const sampler_row autoweb_samplers[] = {
    {1, S(S_LMS) | S(S_DPM_2) | S(S_DPM_2_A) | S(S_DPMPP_2S_A) | S(S_DPMPP_2M) | S(S_DPMSOLVER),
     S(S_HEUN) | S(S_EULER) | S(S_EULER_A) | S(S_DPM_FAST) | S(S_DPM_ADAPTIVE)},
    {0, 0, 0},
};
#undef S

typedef struct bridge_def {
    const char *name;
    const cap_row *caps;
    const sampler_row *samplers;
} bridge_def;

static const bridge_def bridges[] = {
    {"AI Horde Worker reGen", regen_caps, regen_samplers},
    {"AI Horde Worker", worker_caps, worker_samplers},
    {"SD-WebUI Stable Horde Worker Bridge", webui_caps, webui_samplers},
    {"HordeAutoWebBridge", autoweb_caps, autoweb_samplers},
};

static void sum_samplers(const sampler_row *rows, int version, uint32_t *k, uint32_t *p) {
    *k = 0;
    *p = 0;
    for (const sampler_row *r = rows; r->version; r++) {
        if (r->version <= version) {
            *k |= r->karras;
            *p |= r->karras | r->plain_only;
        }
    }
}

static void parse_agent(const char *agent, char *name, size_t name_len, int *version) {
    *version = 0;
    name[0] = '\0';
    const char *c1 = agent ? strchr(agent, ':') : NULL;
    if (c1 && strchr(c1 + 1, ':')) {
        size_t nl = (size_t)(c1 - agent);
        if (nl >= name_len)
            nl = name_len - 1;
        memcpy(name, agent, nl);
        name[nl] = '\0';
        const char *v = c1 + 1;
        if (isdigit((unsigned char)*v)) {
            long lv = strtol(v, NULL, 10);
            *version = lv > 100000 ? 100000 : (int)lv;
        }
    } else if (agent && strcmp(agent, BR_OWN_BRIDGE) == 0) {
        snprintf(name, name_len, "%s", agent);
    }
}

double br_bridge_multiplier(const char *agent) {
    char name[256];
    int version;
    parse_agent(agent, name, sizeof(name), &version);
    if (strcmp(name, BR_OWN_BRIDGE) == 0)
        return 1.0;
    if (strcmp(name, "AI Horde Worker reGen") == 0)
        return version >= 13 ? 1.0 : 0.9;
    if (strcmp(name, "AI Horde Worker") == 0)
        return version >= 24 ? 1.0 : 0.9;
    return 0.75;
}

uint64_t br_bridge_caps(const char *agent, uint32_t *samplers_karras, uint32_t *samplers_plain) {
    /* "name:version:url"; the version's leading integer is the major (semver
     * "9.0.1" is 9); anything unparseable is version 0. */
    char name[256];
    int version;
    parse_agent(agent, name, sizeof(name), &version);
    if (strcmp(name, BR_OWN_BRIDGE) == 0) {
        *samplers_karras = ALL_SAMPLERS;
        *samplers_plain = ALL_SAMPLERS;
        return BR_CAPBIT(BR_CAP_COUNT) - 1;
    }
    for (size_t i = 0; i < sizeof(bridges) / sizeof(bridges[0]); i++) {
        if (strcmp(bridges[i].name, name) != 0)
            continue;
        uint64_t caps = 0;
        for (const cap_row *r = bridges[i].caps; r->version; r++)
            if (r->version <= version)
                caps |= r->caps;
        sum_samplers(bridges[i].samplers, version, samplers_karras, samplers_plain);
        return caps;
    }
    /* unknown bridge: no capabilities, the samplers of AI Horde Worker v23 */
    sum_samplers(worker_samplers, 23, samplers_karras, samplers_plain);
    return 0;
}
