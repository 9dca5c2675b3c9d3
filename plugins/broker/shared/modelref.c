/* broker/shared/modelref: the model reference; see modelref.h. */
#include "modelref.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct modelref {
    json_t *root; /* object: name -> record */
};

modelref *modelref_load(const char *path, bool strict, char *err, size_t errlen) {
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
        if (strict && !json_is_object(rec)) {
            snprintf(err, errlen, "model reference %s: entry '%s' is not an object", path, name);
            json_decref(root);
            return NULL;
        }
    }
    modelref *ref = calloc(1, sizeof(*ref));
    if (!ref) {
        snprintf(err, errlen, "out of memory");
        json_decref(root);
        return NULL;
    }
    ref->root = root;
    return ref;
}

void modelref_free(modelref *ref) {
    if (!ref)
        return;
    json_decref(ref->root);
    free(ref);
}

size_t modelref_count(const modelref *ref) {
    return ref ? json_object_size(ref->root) : 0;
}

const json_t *modelref_record(const modelref *ref, const char *name) {
    if (!ref || !name)
        return NULL;
    const json_t *rec = json_object_get(ref->root, name);
    return json_is_object(rec) ? rec : NULL;
}

const char *modelref_baseline(const modelref *ref, const char *name) {
    const char *b = json_string_value(json_object_get(modelref_record(ref, name), "baseline"));
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

bool modelref_nsfw(const modelref *ref, const char *name) {
    return json_is_true(json_object_get(modelref_record(ref, name), "nsfw"));
}

bool modelref_inpainting(const modelref *ref, const char *name) {
    const json_t *rec = modelref_record(ref, name);
    if (rec)
        return json_is_true(json_object_get(rec, "inpainting"));
    return name && strcasestr(name, "inpainting") != NULL;
}

const json_t *modelref_requirements(const modelref *ref, const char *name) {
    const json_t *req = json_object_get(modelref_record(ref, name), "requirements");
    return json_is_object(req) ? req : NULL;
}

int modelref_max_steps(const modelref *ref, const char *name, int def) {
    const json_t *v = json_object_get(modelref_requirements(ref, name), "max_steps");
    return json_is_integer(v) ? (int)json_integer_value(v) : def;
}
