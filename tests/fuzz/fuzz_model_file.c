/* Fuzz target: checkpoint files as the engine opens them (model_file.c):
 * safetensors headers (JSON, dtypes, shapes, offsets), and .ckpt zip
 * archives holding the restricted pickle (zip.c, pickle.c), then reads every
 * small tensor back as F32, which walks shapes, strides and storages. */
#include <stdint.h>
#include <stdlib.h>

#include "engine/model_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sd_model_file *f = NULL;
    char err[512];
    if (sd_model_file_open_memory(data, size, "fuzz", &f, err, sizeof err) != 0)
        return 0;
    (void)sd_model_file_format(f);
    (void)sd_model_file_metadata(f, "format");
    for (size_t i = 0; i < sd_model_file_count(f); i++) {
        const sd_tensor_info *t = sd_model_file_at(f, i);
        (void)sd_model_file_find(f, t->name);
        int64_t n = sd_tensor_numel(t);
        if (n < 0 || n > 4096)
            continue;
        float *out = malloc((size_t)(n ? n : 1) * sizeof *out);
        if (out != NULL) {
            (void)sd_tensor_to_f32(t, out);
            if (n > 1)
                (void)sd_tensor_range_to_f32(t, 1, n - 1, out);
        }
        free(out);
    }
    sd_model_file_close(f);
    return 0;
}
