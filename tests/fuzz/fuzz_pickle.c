/* Fuzz target: the restricted pickle reader (pickle.c) on its own, as it
 * reads archive/data.pkl of a .ckpt: only the opcodes and globals a PyTorch
 * state dict needs, everything else refused. */
#include <stdint.h>

#include "engine/pickle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sd_pickle_result r;
    char err[512];
    if (sd_pickle_read_state_dict(data, size, "fuzz.pkl", &r, err, sizeof err) == 0)
        sd_pickle_result_free(&r);
    return 0;
}
