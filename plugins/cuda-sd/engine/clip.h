/* clip.h - the text encoders of SD1 (OpenAI CLIP ViT-L/14 text model, HF
 * layout "cond_stage_model.transformer.text_model.*") and SD2 (OpenCLIP
 * ViT-H/14 text tower, "cond_stage_model.model.*").
 *
 * Both are pre-LayerNorm transformers with a causal mask over 77 positions
 * (no padding mask); SD1 uses quick-GELU, SD2 exact GELU. Sizes (width,
 * layers, heads, MLP width) come from the family info (engine/family.h), so
 * the tiny golden models work the same as real ones.
 *
 * Which layer: clip_skip N >= 1 takes the hidden state after block
 * (layers - N + 1), then applies the final LayerNorm (SD1 "final_layer_norm",
 * SD2 "ln_final"). N = 1 is the last block (SD1's usual output); N = 2 the
 * penultimate (A1111/ComfyUI "CLIP skip 2" for SD1, and what SD2 always uses:
 * ldm's FrozenOpenCLIPEmbedder layer="penultimate"). The family's
 * default_clip_skip (1 for SD1, 2 for SD2) is what the reference pipelines
 * use. Prompt weights are applied by the pipeline, not here.
 *
 * Ownership: the encoder borrows the model file (which must stay open) and
 * the backend (which must outlive it).
 */
#ifndef SD_ENGINE_CLIP_H
#define SD_ENGINE_CLIP_H

#include <stdbool.h>
#include <stddef.h>

#include "backend/ops.h"
#include "engine/family.h"
#include "engine/model_file.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sd_text_encoder sd_text_encoder;

/* Builds the encoder from fam->text (layout SD_TEXT_CLIP_HF or
 * SD_TEXT_OPENCLIP); checks every tensor's presence and shape. 0, or -1 with
 * err naming the file and the missing/misshapen tensor. */
int sd_text_encoder_create(const sd_model_file *f, const sd_family_info *fam, sd_backend *be,
                           sd_text_encoder **out, char *err, size_t errlen);
void sd_text_encoder_destroy(sd_text_encoder *enc);        /* NULL is fine */

int sd_text_encoder_width(const sd_text_encoder *enc);     /* output features D */
int sd_text_encoder_layers(const sd_text_encoder *enc);    /* stored blocks */
int sd_text_encoder_context(const sd_text_encoder *enc);   /* 77 */

/* Encodes n_tokens ids (a multiple of the context length 77: each 77-id
 * chunk is encoded on its own, as ComfyUI does for long prompts, and the
 * results are concatenated) into out[n_tokens * D]. clip_skip as above
 * (1..layers). 0, or -1 with err (bad ids, clip_skip out of range,
 * cancelled, out of memory). */
int sd_text_encode(sd_text_encoder *enc, const int *ids, int n_tokens, int clip_skip,
                   float *out, char *err, size_t errlen);

/* Lower level: the hidden state after `layer` blocks (0 = token + position
 * embeddings, layers = all blocks), with or without the final LayerNorm.
 * out[n_tokens * D]. */
int sd_text_encode_hidden(sd_text_encoder *enc, const int *ids, int n_tokens, int layer,
                          bool final_norm, float *out, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
