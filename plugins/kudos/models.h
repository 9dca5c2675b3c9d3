/* kudos: what the kudos rules need from the public horde's image model
 * reference (stable_diffusion.json): each model's baseline (for the baseline
 * multipliers of §3.2/§3.3) and its requirements.max_steps (the upfront rule).
 *
 * The kudos plugin's names for broker/shared/modelref (modelref.h: threads, ownership,
 * the rules for unknown names), loaded leniently: an entry that is not an
 * object is ignored (that model is unknown). Loaded once at init from config
 * `model_reference`; every query accepts a NULL reference (no file). */
#ifndef KD_MODELS_H
#define KD_MODELS_H

#include <stdbool.h>
#include <stddef.h>

#include "broker/shared/modelref.h"

typedef modelref kd_model_ref;

/* NULL with err filled when the file cannot be read or is not a reference. */
kd_model_ref *kd_model_ref_load(const char *path, char *err, size_t errlen);
void kd_model_ref_free(kd_model_ref *ref);

/* "stable diffusion 1", "stable_diffusion_xl", "stable_cascade", "flux_1", ...
 * Unknown names: guessed from a tag in the name ("[SDXL]", "[Flux]", "[Qwen]",
 * "[ZImage]"), else "stable diffusion 1", as the horde does. Never NULL;
 * borrowed from ref or static. */
const char *kd_model_baseline(const kd_model_ref *ref, const char *name);

/* requirements.max_steps of a known model, or `def` when it has none. */
int kd_model_max_steps(const kd_model_ref *ref, const char *name, int def);

#endif
