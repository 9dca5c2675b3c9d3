/* family.h - what kind of Stable Diffusion checkpoint a file holds, and the
 * architecture numbers a network builder needs, read from tensor names and
 * shapes (spec/sd-engine.md §2).
 *
 * Detection rules (all from the tensors, no file names):
 *   - UNet prefix "model.diffusion_model."; in_channels = input_blocks.0.0
 *     weight shape[1] (9 = inpainting); context_dim = attn2.to_k shape[1];
 *     linear proj_in (2-D weight) = SD2 style.
 *   - SDXL: any "conditioner.embedders.*" tensor, or a UNet "label_emb" taking
 *     2816 (base) / 2560 (refiner) features -> SD_FAMILY_SDXL
 *     (detected, reported unsupported). Other UNets with a label_emb
 *     (unCLIP) -> unknown/unsupported.
 *   - SD1: HF CLIP text encoder under "cond_stage_model.transformer." and
 *     context 768 (any width for the tiny test models: the text-encoder
 *     layout decides). SD2: OpenCLIP text encoder under
 *     "cond_stage_model.model." (context 1024 for real models).
 *   - Prediction (eps or v) cannot in general be read from weights. Order:
 *     1. a sidecar config beside the model (see below) saying
 *        "parameterization: v" (ldm yaml) or "prediction_type" (golden .json);
 *     2. .ckpt "global_step" metadata for SD2: 875000 = 512-base (eps),
 *        other known SD2 steps = v (diffusers' rule);
 *     3. SD2 with 4 input channels: ComfyUI's heuristic, v when the biased
 *        std of output_blocks.11.1.transformer_blocks.0.norm1.bias > 0.09;
 *     4. otherwise eps (SD1 and inpainting models are eps).
 *     prediction_source says which rule decided.
 *   - Attention heads are not stored in weights either: real defaults are
 *     8 heads (SD1 UNet), head dim 64 (SD2 UNet), head dim 64 (both text
 *     encoders); a sidecar config overrides them (the tiny golden models
 *     need it).
 * Sidecar config: for "dir/name.a.b.safetensors" the files
 * "dir/name.a.b.{json,yaml}", "dir/name.a.{json,yaml}", "dir/name.{json,yaml}"
 * are tried in that order (A1111 reads "<model>.yaml" the same way); the
 * first that exists is used. JSON: the golden model description
 * (prediction_type, ldm_config.model.params..., text_encoder.heads). YAML:
 * only the keys "parameterization", "num_heads", "num_head_channels" and
 * "context_dim" of an ldm config are read (line-based, no YAML library).
 *
 * Parameter counts: floating-point elements per component prefix (UNet
 * "model.diffusion_model.", VAE "first_stage_model.", text encoder
 * "cond_stage_model."/"conditioner." minus the integer/float position_ids
 * buffer); everything else (DDPM buffers, model_ema.*) is "other".
 */
#ifndef SD_ENGINE_FAMILY_H
#define SD_ENGINE_FAMILY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model_file.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SD_FAMILY_UNKNOWN = 0,
    SD_FAMILY_SD1,
    SD_FAMILY_SD2,
    SD_FAMILY_SDXL      /* detected only: not supported yet */
} sd_family;

typedef enum { SD_PRED_EPS = 0, SD_PRED_V } sd_prediction;

typedef enum {
    SD_TEXT_NONE = 0,
    SD_TEXT_CLIP_HF,    /* SD1: cond_stage_model.transformer.text_model.* (HF names) */
    SD_TEXT_OPENCLIP    /* SD2: cond_stage_model.model.* (OpenCLIP names) */
} sd_text_layout;

#define SD_MAX_LEVELS 8

typedef struct sd_unet_config {
    bool present;
    int in_channels;            /* 4, or 9 for inpainting */
    int out_channels;
    int model_channels;         /* 320 real, 32 tiny */
    int num_levels;             /* len(channel_mult) */
    int channel_mult[SD_MAX_LEVELS];
    int num_res_blocks;         /* per level (input side) */
    bool attention[SD_MAX_LEVELS];      /* level has SpatialTransformers */
    int transformer_depth[SD_MAX_LEVELS];
    int middle_transformer_depth;       /* 0: no middle_block.1 */
    int context_dim;            /* attn2.to_k in-features: 768 SD1, 1024 SD2 */
    bool linear_proj;           /* proj_in/out linear (SD2) vs 1x1 conv (SD1) */
    int num_heads;              /* fixed head count, or -1 when head_dim rules */
    int head_dim;               /* fixed head width, or -1 when num_heads rules */
    int time_embed_dim;         /* time_embed.0 out-features (4*model_channels) */
} sd_unet_config;

typedef struct sd_vae_config {
    bool present;
    int ch;                     /* encoder.conv_in out channels */
    int num_levels;
    int ch_mult[SD_MAX_LEVELS];
    int num_res_blocks;         /* encoder side; the decoder has one more */
    int z_channels;             /* 4 */
    int in_channels;            /* 3 */
    float scale_factor;         /* 0.18215 for SD1/SD2 */
} sd_vae_config;

typedef struct sd_text_config {
    sd_text_layout layout;
    const char *prefix;         /* "cond_stage_model.transformer.text_model."
                                   or "cond_stage_model.model."; static */
    int vocab_size;             /* 49408 */
    int width;                  /* 768 CLIP-L, 1024 OpenCLIP-H */
    int layers;                 /* stored blocks (SD2 keeps its unused last one) */
    int heads;                  /* width / 64 unless a sidecar says otherwise */
    int max_positions;          /* 77 */
    int intermediate;           /* MLP hidden width */
    bool quick_gelu;            /* SD1 CLIP: x*sigmoid(1.702x); SD2: erf GELU */
    int default_clip_skip;      /* 1 = last layer (SD1), 2 = penultimate (SD2) */
    int pad_id;                 /* 49407 SD1, 0 SD2 */
} sd_text_config;

typedef struct sd_family_info {
    sd_family family;
    bool supported;             /* SD1/SD2 with all three components */
    sd_prediction prediction;
    char prediction_source[192];/* which rule decided, in words */
    bool inpainting;            /* UNet takes 9 input channels */
    int context_dim;            /* = unet.context_dim */
    sd_unet_config unet;
    sd_vae_config vae;
    sd_text_config text;

    int64_t params_unet, params_vae, params_text, params_other;
    size_t tensors_unet, tensors_vae, tensors_text, tensors_other;
    /* over all tensors of the file */
    size_t dtype_tensors[SD_DTYPE_COUNT];
    int64_t dtype_elements[SD_DTYPE_COUNT];
    sd_dtype unet_dtype;        /* dtype of most UNet elements */

    char config_path[1024];     /* sidecar config used, or "" */
    char note[256];             /* why unsupported/unknown, or "" */
} sd_family_info;

/* Detects the family from the tensors, then applies a sidecar config found
 * beside the file (rules above). Returns 0 and fills *out for any file -
 * unknown and SDXL included (check ->supported); -1 (err names the file and
 * problem) when the UNet/VAE/text tensors present are inconsistent (missing
 * or oddly shaped key tensors) or a sidecar config exists but is unreadable. */
int sd_family_detect(const sd_model_file *f, sd_family_info *out, char *err, size_t errlen);

/* Same with an explicit sidecar: config_path NULL = search beside the file
 * as above, "" = no sidecar, else that .json/.yaml file (must exist). */
int sd_family_detect_with_config(const sd_model_file *f, const char *config_path,
                                 sd_family_info *out, char *err, size_t errlen);

/* 0 when info->supported, else -1 with a message such as
 * "x.safetensors: SDXL checkpoints are not supported yet". */
int sd_family_check_supported(const sd_model_file *f, const sd_family_info *info,
                              char *err, size_t errlen);

const char *sd_family_name(sd_family fam);          /* "SD1", "SD2", "SDXL", "unknown" */
const char *sd_prediction_name(sd_prediction p);    /* "eps", "v" */

/* Human-readable summary for `horde-node sd info`: file, format, family,
 * prediction (and why), inpainting, dtypes, parameter counts per component,
 * architecture numbers. Writes at most len bytes (NUL-terminated) and, like
 * snprintf, returns the length the full text needs. */
size_t sd_family_describe(const sd_model_file *f, const sd_family_info *info,
                          char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
