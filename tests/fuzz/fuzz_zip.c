/* Fuzz target: the zip reader (zip.c): central directory, local headers,
 * stored and deflated entries with their CRC. */
#include <stdint.h>
#include <stdlib.h>

#include "engine/zip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    (void)sd_zip_looks_like(data, size);
    sd_zip z;
    char err[512];
    if (sd_zip_open(&z, data, size, "fuzz.zip", err, sizeof err) != 0)
        return 0;
    for (size_t i = 0; i < z.n_entries && i < 64; i++) {
        const sd_zip_entry *e = &z.entries[i];
        const unsigned char *bytes = NULL;
        unsigned char *owned = NULL;
        if (sd_zip_read(&z, e, 1, &bytes, &owned, err, sizeof err) == 0)
            free(owned);
    }
    sd_zip_close(&z);
    return 0;
}
