/* kudos: the model reference; see models.h. */
#include "models.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

struct kd_model_ref {
    json_t *root; /* object: name -> record */
};

kd_model_ref *kd_model_ref_load(const char *path, char *err, size_t errlen) {
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
    kd_model_ref *ref = calloc(1, sizeof(*ref));
    if (!ref) {
        snprintf(err, errlen, "out of memory");
        json_decref(root);
        return NULL;
    }
    ref->root = root;
    return ref;
}

void kd_model_ref_free(kd_model_ref *ref) {
    if (!ref)
        return;
    json_decref(ref->root);
    free(ref);
}

static const json_t *record(const kd_model_ref *ref, const char *name) {
    if (!ref || !name)
        return NULL;
    const json_t *r = json_object_get(ref->root, name);
    return json_is_object(r) ? r : NULL;
}

const char *kd_model_baseline(const kd_model_ref *ref, const char *name) {
    const char *b = json_string_value(json_object_get(record(ref, name), "baseline"));
    if (b)
        return b;
    if (name) {
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

int kd_model_max_steps(const kd_model_ref *ref, const char *name, int def) {
    const json_t *req = json_object_get(record(ref, name), "requirements");
    const json_t *v = json_object_get(req, "max_steps");
    return json_is_integer(v) ? (int)json_integer_value(v) : def;
}
