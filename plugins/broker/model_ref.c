/* broker: the model reference; see model_ref.h. */
#include "model_ref.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct br_model_ref {
    json_t *root; /* object: name -> record */
};

br_model_ref *br_model_ref_load(const char *path, char *err, size_t errlen) {
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) {
        snprintf(err, errlen, "model reference %s: %s (line %d)", path, jerr.text, jerr.line);
        return NULL;
    }
    if (!json_is_object(root)) {
        snprintf(err, errlen, "model reference %s: not an object of models", path);
        json_decref(root);
        return NULL;
    }
    const char *name;
    json_t *rec;
    json_object_foreach(root, name, rec) {
        if (!json_is_object(rec)) {
            snprintf(err, errlen, "model reference %s: entry '%s' is not an object", path, name);
            json_decref(root);
            return NULL;
        }
    }
    br_model_ref *ref = calloc(1, sizeof(*ref));
    if (!ref) {
        snprintf(err, errlen, "out of memory");
        json_decref(root);
        return NULL;
    }
    ref->root = root;
    return ref;
}

void br_model_ref_free(br_model_ref *ref) {
    if (!ref)
        return;
    json_decref(ref->root);
    free(ref);
}

size_t br_model_ref_count(const br_model_ref *ref) {
    return ref ? json_object_size(ref->root) : 0;
}

static const json_t *record(const br_model_ref *ref, const char *name) {
    if (!ref || !name)
        return NULL;
    return json_object_get(ref->root, name);
}

bool br_model_known(const br_model_ref *ref, const char *name) {
    return record(ref, name) != NULL;
}

const char *br_model_baseline(const br_model_ref *ref, const char *name) {
    const json_t *rec = record(ref, name);
    const char *b = rec ? json_string_value(json_object_get(rec, "baseline")) : NULL;
    if (b)
        return b;
    if (name) {
        /* the horde guesses the baseline of unknown names from a tag */
        if (strcasestr(name, "[sdxl]"))
            return "stable_diffusion_xl";
        if (strcasestr(name, "[flux]"))
            return "flux_1";
        if (strcasestr(name, "[qwen]"))
            return "qwen_image";
        if (strcasestr(name, "[zimage]"))
            return "z_image_turbo";
    }
    return "stable diffusion 1";
}

bool br_model_nsfw(const br_model_ref *ref, const char *name) {
    const json_t *rec = record(ref, name);
    return rec && json_is_true(json_object_get(rec, "nsfw"));
}

bool br_model_inpainting(const br_model_ref *ref, const char *name) {
    const json_t *rec = record(ref, name);
    if (rec)
        return json_is_true(json_object_get(rec, "inpainting"));
    return name && strcasestr(name, "inpainting") != NULL;
}

const json_t *br_model_requirements(const br_model_ref *ref, const char *name) {
    const json_t *rec = record(ref, name);
    const json_t *req = rec ? json_object_get(rec, "requirements") : NULL;
    return json_is_object(req) ? req : NULL;
}
