/* kudos: the model reference; see models.h. The parsing and the rules are
 * broker/shared/modelref, shared with the broker; kudos loads leniently. */
#include "models.h"

kd_model_ref *kd_model_ref_load(const char *path, char *err, size_t errlen) {
    return modelref_load(path, false, err, errlen);
}

void kd_model_ref_free(kd_model_ref *ref) { modelref_free(ref); }

const char *kd_model_baseline(const kd_model_ref *ref, const char *name) {
    return modelref_baseline(ref, name);
}

int kd_model_max_steps(const kd_model_ref *ref, const char *name, int def) {
    return modelref_max_steps(ref, name, def);
}
