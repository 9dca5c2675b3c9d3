/* horde-node plugin SDK: the `generator` provider interface.
 *
 * Turns one horde job (the pop payload) into images. Implementation: cuda-sd
 * (CPU and CUDA backends). The worker calls it from its own threads; one
 * generate call at a time per provider unless `max_parallel` says more. */
#ifndef HN_GENERATOR_H
#define HN_GENERATOR_H

#include <stddef.h>

#include <jansson.h>

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HN_GENERATOR_VERSION 1

/* An 8-bit RGB image, rows top to bottom. pixels is malloc'd. */
typedef struct hn_image {
    int width, height;
    int channels; /* 3 (RGB) or 4 (RGBA) */
    unsigned char *pixels;
} hn_image;

typedef struct hn_gen_job {
    uint32_t size;            /* sizeof(hn_gen_job) */
    const char *model;        /* horde model name, as popped */
    const json_t *payload;    /* the pop's "payload" object, borrowed */
    const hn_image *source;   /* decoded source_image or NULL */
    const hn_image *mask;     /* decoded source_mask or NULL */
    const char *source_processing; /* "img2img", "inpainting", "outpainting" */
    /* Called after each sampler step, from the generating thread. */
    void (*progress)(void *ud, int step, int total);
    void *ud;
    /* Set to non-zero from any thread to stop early (result: HN_DECLINED). */
    volatile int *cancel;
} hn_gen_job;

typedef struct hn_gen_result {
    hn_image *images; /* n images, malloc'd; free with the vt's result_free */
    size_t n;
    int64_t seed;     /* the seed actually used */
    json_t *gen_metadata; /* array for submit's gen_metadata, owned, may be NULL */
} hn_gen_result;

typedef struct hn_generator_vt {
    uint32_t size;
    uint32_t version;
    /* JSON array of the model names this generator can serve now (new ref). */
    json_t *(*models)(void *state);
    /* Make sure a model is ready (loads it, may take long). */
    hn_rc (*load)(void *state, const char *model, hn_error *err);
    hn_rc (*generate)(void *state, const hn_gen_job *job, hn_gen_result *out, hn_error *err);
    void (*result_free)(void *state, hn_gen_result *res);

    /* ---- appended (worker issue); may be absent: check with
     * HN_GENERATOR_HAS(vt, configure) before calling ---- */

    /* The worker's model decisions. The worker owns model FILES (download,
     * sha256, folder); the generator only loads them. settings (borrowed),
     * every key optional:
     *   "models":  {"<horde model name>": "<absolute checkpoint path>", ...}
     *              replaces the set the worker gave before; the generator
     *              serves these names besides its own (models() lists them,
     *              load/generate find the file by name)
     *   "vocab":   absolute path of the CLIP vocabulary
     *              (bpe_simple_vocab_16e6.txt.gz) the worker found or fetched
     *   "max_models_in_ram", "max_models_in_vram": integers >= 1, how many
     *              loaded models the generator may keep (it evicts the least
     *              recently used beyond that)
     * Called from the worker's threads, possibly while a generate runs on
     * another thread. Unknown keys are ignored. */
    hn_rc (*configure)(void *state, const json_t *settings, hn_error *err);
} hn_generator_vt;

/* True when a generator's table has member `fn` (tables from older builds are
 * shorter). */
#define HN_GENERATOR_HAS(vt, fn) \
    ((vt)->size >= offsetof(hn_generator_vt, fn) + sizeof((vt)->fn) && (vt)->fn != NULL)

#ifdef __cplusplus
}
#endif
#endif
