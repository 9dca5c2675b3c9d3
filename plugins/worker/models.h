/* worker: the public horde's image model reference and models_to_load.
 *
 * Pure functions (no node, no threads): parse stable_diffusion.json
 * (spec/worker.md §3.1), resolve models_to_load with its meta instructions
 * (§1.4), and list local checkpoints. Unit-tested in tests/test_models.c. */
#ifndef WK_MODELS_H
#define WK_MODELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* One file of a reference model: the weights, or a companion (a yaml
 * config) that is fetched only when the reference gives a URL for it. */
typedef struct wk_ref_file {
    char *path;     /* file name under compvis/ (no '/' or "..": checked) */
    bool weight;    /* .safetensors / .ckpt */
    char *sha256;   /* lower-case hex, or NULL when the reference has none */
    char *url;      /* download URL, or NULL */
} wk_ref_file;

typedef struct wk_ref_model {
    char *name;
    char *baseline; /* "stable diffusion 1", "stable_diffusion_xl", ... */
    bool inpainting, nsfw;
    uint64_t size_on_disk; /* 0 when unknown */
    wk_ref_file *files; /* weights first */
    size_t n_files;
    size_t n_weights;
} wk_ref_model;

typedef struct wk_reference {
    wk_ref_model *models; /* sorted by name */
    size_t n;
} wk_reference;

/* Parses the legacy reference (an object name -> record). Records without a
 * usable weight file are kept (they cannot be downloaded; n_weights is 0). Returns 0, or -1
 * with err when root is not an object. */
int wk_reference_parse(const json_t *root, wk_reference *out, char *err, size_t errlen);
void wk_reference_free(wk_reference *ref);
const wk_ref_model *wk_reference_find(const wk_reference *ref, const char *name);

/* True for a file name that stays inside its folder. */
bool wk_safe_file_name(const char *name);

/* A name list: malloc'd strings in a malloc'd array. */
typedef struct wk_names {
    char **v;
    size_t n;
} wk_names;
void wk_names_free(wk_names *l);
bool wk_names_has(const wk_names *l, const char *name);
/* Adds a copy unless present. 0 or -1 (out of memory). */
int wk_names_add(wk_names *l, const char *name);

/* Resolves models_to_load (spec/worker.md §1.4): explicit names and meta
 * instructions ("all", "all sdxl", "all sd15", "all sd21", "all sfw",
 * "all nsfw", "all inpainting", "top N", "bottom N"; case-insensitive).
 * popularity: {name: count} of the horde's image model stats (month), or
 * NULL (then TOP/BOTTOM resolve to nothing and a warning says so). Unless
 * load_large, stable_cascade and flux_1 models are dropped from meta results.
 * Explicit names are kept when they are in the reference or in `local`
 * (local checkpoints and the generator's own models); others are warned
 * about. Then models_to_skip (and "SDXL_beta::stability.ai#6901") removed.
 * `warn(ud, message)` is called for each problem (may be NULL). */
typedef void wk_warn_fn(void *ud, const char *message);
int wk_models_resolve(const wk_reference *ref, const char *const *load, const char *const *skip,
                      const json_t *popularity, bool load_large, const wk_names *local,
                      wk_names *out, wk_warn_fn *warn, void *ud);

/* Checkpoints in dir (not recursive): *.safetensors and *.ckpt, named by the
 * file name without extension (a .safetensors wins over a .ckpt of the same
 * name). paths[i] is the absolute file of names[i]. Hidden files skipped.
 * Returns 0 (an absent folder is empty), -1 on out of memory. */
int wk_scan_checkpoints(const char *dir, wk_names *names, wk_names *paths);

/* Cheap sanity check of a checkpoint file's head: a .safetensors header that
 * fits the file and starts with '{', a .ckpt that is a zip or a pickle.
 * NULL when it looks right, else a static reason. */
const char *wk_checkpoint_sane(const char *path);

#endif
