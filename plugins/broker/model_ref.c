/* broker: the model reference; see model_ref.h. The parsing and the rules
 * are broker/shared/modelref, shared with the kudos plugin; the broker loads strictly. */
#include "model_ref.h"

br_model_ref *br_model_ref_load(const char *path, char *err, size_t errlen) {
    return modelref_load(path, true, err, errlen);
}

void br_model_ref_free(br_model_ref *ref) { modelref_free(ref); }

size_t br_model_ref_count(const br_model_ref *ref) { return modelref_count(ref); }

bool br_model_known(const br_model_ref *ref, const char *name) {
    return modelref_record(ref, name) != NULL;
}

const char *br_model_baseline(const br_model_ref *ref, const char *name) {
    return modelref_baseline(ref, name);
}

bool br_model_nsfw(const br_model_ref *ref, const char *name) {
    return modelref_nsfw(ref, name);
}

bool br_model_inpainting(const br_model_ref *ref, const char *name) {
    return modelref_inpainting(ref, name);
}

const json_t *br_model_requirements(const br_model_ref *ref, const char *name) {
    return modelref_requirements(ref, name);
}
