/* broker: bridge capabilities (§4.3) and the sampler and post-processor
 * tables they refer to.
 *
 * A worker's bridge_agent "name:version:url" decides what it can do: the
 * union of every capability listed for its bridge at versions <= its major
 * version. Unknown bridge names have no capabilities (and the samplers of
 * "AI Horde Worker" v23). Our own bridge, "horde-node", has all of them.
 * Everything here is constant data: thread-safe. */
#ifndef BR_BRIDGE_H
#define BR_BRIDGE_H

#include <stdbool.h>
#include <stdint.h>

typedef enum br_cap {
    BR_CAP_IMG2IMG, BR_CAP_INPAINTING, BR_CAP_KARRAS, BR_CAP_POST_PROCESSING,
    BR_CAP_GFPGAN, BR_CAP_REALESRGAN_X4PLUS, BR_CAP_R2, BR_CAP_CODEFORMERS,
    BR_CAP_CLIP_SKIP, BR_CAP_R2_SOURCE, BR_CAP_CONTROLNET, BR_CAP_STRIP_BACKGROUND,
    BR_CAP_RETURN_CONTROL_MAP, BR_CAP_REALESRGAN_X4PLUS_ANIME_6B, BR_CAP_NMKD_SIAX,
    BR_CAP_4X_ANIMESHARP, BR_CAP_IMAGE_IS_CONTROL, BR_CAP_REALESRGAN_X2PLUS,
    BR_CAP_HIRES_FIX, BR_CAP_TILING, BR_CAP_TEXTUAL_INVERSION, BR_CAP_LORA,
    BR_CAP_LORA_VERSIONS, BR_CAP_EXTRA_SOURCE_IMAGES, BR_CAP_STABLE_CASCADE_2PASS,
    BR_CAP_QR_CODE, BR_CAP_EXTRA_TEXTS, BR_CAP_WORKFLOW, BR_CAP_LAYER_DIFFUSE,
    BR_CAP_FLUX, BR_CAP_4XNOMOS8KSC, BR_CAP_4XLSDIRPLUS, BR_CAP_4XNOMOSWEBPHOTO_REALPLKSR,
    BR_CAP_4XNOMOS2_REALPLKSR_DYSAMPLE, BR_CAP_4XNOMOS2_HQ_DAT2, BR_CAP_2XMODERNSPANIMATIONV1,
    BR_CAP_GFPGANV1_3, BR_CAP_RESTOREFORMER, BR_CAP_PAINTING,
    BR_CAP_COUNT
} br_cap;

#define BR_CAPBIT(c) (UINT64_C(1) << (c))

/* The capability names, indexed by br_cap (as the horde spells them). */
extern const char *const br_cap_names[BR_CAP_COUNT];

/* Samplers in params.sampler_name's enum order; bit i of a sampler mask is
 * br_samplers[i]. */
#define BR_N_SAMPLERS 14
extern const char *const br_samplers[BR_N_SAMPLERS];
int br_sampler_index(const char *name); /* -1 if unknown */

/* Post-processors (params.post_processing's enum). */
typedef struct br_pp {
    const char *name;
    br_cap cap;          /* the capability a worker needs for it */
    bool upscaler;       /* at most one per request (TooManyUpscalers) */
    bool heavy;          /* batching counts it heavier (§4.2 step 5) */
    double multiplier;   /* burn multiplier (§3.2) */
} br_pp;
#define BR_N_PP 16
extern const br_pp br_pps[BR_N_PP];
const br_pp *br_pp_find(const char *name);

/* Capabilities and supported samplers of a bridge agent. samplers_karras:
 * usable by requests with karras on; samplers_plain: with karras off. */
uint64_t br_bridge_caps(const char *agent, uint32_t *samplers_karras, uint32_t *samplers_plain);

/* What a worker owner earns per kudos of generation (§3.2): 1.0 for the latest
 * official bridges (reGen >= 13, AI Horde Worker >= 24, and horde-node), 0.9
 * for older official ones, 0.75 for any other bridge. */
double br_bridge_multiplier(const char *agent);

#endif
