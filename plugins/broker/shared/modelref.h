/* broker/shared/modelref: the public horde's image model reference
 * (stable_diffusion.json: an object of model name -> record with
 * "baseline", "nsfw", "inpainting", "requirements"), read by the broker and
 * the kudos plugin alike.
 *
 * Loaded once (at init); read-only afterwards, so any thread may query it
 * without a lock. Every query accepts a NULL reference (no file configured)
 * and a NULL name: then no model is known and the baseline follows the
 * horde's rules for unknown names.
 *
 * Ownership: modelref_load returns a reference the caller owns and frees
 * with modelref_free. Strings and JSON values a query returns are borrowed
 * from the reference (valid until it is freed) or static; never free them.
 * Compiled into each plugin that lists plugins/broker/shared/modelref.c (needs
 * jansson). */
#ifndef LIB_MODELREF_H
#define LIB_MODELREF_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

typedef struct modelref modelref;

/* NULL with err filled when the file cannot be read or is not an object of
 * models. strict: an entry that is not an object is an error too; otherwise
 * such entries are ignored (the model is unknown). */
modelref *modelref_load(const char *path, bool strict, char *err, size_t errlen);
void modelref_free(modelref *ref);
size_t modelref_count(const modelref *ref);

/* The model's record (an object), or NULL when the model is not known. */
const json_t *modelref_record(const modelref *ref, const char *name);
/* "stable diffusion 1", "stable_diffusion_xl", "stable_cascade", "flux_1", ...
 * Unknown names: guessed from a tag in the name ("[SDXL]", "[Flux]", "[Qwen]",
 * "[ZImage]"), else "stable diffusion 1", as the horde does. Never NULL. */
const char *modelref_baseline(const modelref *ref, const char *name);
bool modelref_nsfw(const modelref *ref, const char *name);
/* The reference's flag; for unknown names, whether the name says "inpainting". */
bool modelref_inpainting(const modelref *ref, const char *name);
/* The model's "requirements" object, or NULL. */
const json_t *modelref_requirements(const modelref *ref, const char *name);
/* requirements.max_steps of a known model, or def when it has none. */
int modelref_max_steps(const modelref *ref, const char *name, int def);

#endif
