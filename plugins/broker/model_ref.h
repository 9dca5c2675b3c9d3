/* broker: the public horde's image model reference (stable_diffusion.json):
 * baselines, nsfw and inpainting flags, step/cfg/sampler requirements.
 *
 * The broker's names for broker/shared/modelref (modelref.h: threads, ownership, the
 * rules for unknown names), loaded strictly: an entry that is not an object
 * makes the file invalid. Loaded once at init from the path in config key
 * `model_reference`; every query accepts a NULL reference (no file). */
#ifndef BR_MODEL_REF_H
#define BR_MODEL_REF_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "broker/shared/modelref.h"

typedef modelref br_model_ref;

/* NULL with err filled when the file cannot be read or is not a reference. */
br_model_ref *br_model_ref_load(const char *path, char *err, size_t errlen);
void br_model_ref_free(br_model_ref *ref);
size_t br_model_ref_count(const br_model_ref *ref);

bool br_model_known(const br_model_ref *ref, const char *name);
/* "stable diffusion 1", "stable_diffusion_xl", "stable_cascade", "flux_1", ...
 * Unknown names: by tag in the name ("[SDXL]", "[Flux]", "[Qwen]", "[ZImage]"),
 * else "stable diffusion 1" (as the horde does). Never NULL. */
const char *br_model_baseline(const br_model_ref *ref, const char *name);
bool br_model_nsfw(const br_model_ref *ref, const char *name);
/* The reference's flag; for unknown names, whether the name says "inpainting". */
bool br_model_inpainting(const br_model_ref *ref, const char *name);
/* The model's "requirements" object (borrowed) or NULL. */
const json_t *br_model_requirements(const br_model_ref *ref, const char *name);

#endif
