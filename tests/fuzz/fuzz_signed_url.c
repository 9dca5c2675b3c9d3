/* Fuzz target: the signed image URLs of images-fs and images-db
 * (plugins/images-fs/shared/images_url.c): the image key from the path (which
 * must never name anything outside the images folder) and the expires/sig
 * query values checked against the node secret.
 *
 * Input: KEY '\n' EXPIRES '\n' SIG ['\n' METHOD]. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "images-fs/shared/images_url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char SECRET[] = "fuzz-secret-0123456789abcdef";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    char *part[4] = {text, NULL, NULL, NULL};
    for (int i = 1; i < 4 && part[i - 1] != NULL; i++) {
        char *nl = strchr(part[i - 1], '\n');
        if (nl != NULL) {
            *nl = '\0';
            part[i] = nl + 1;
        }
    }
    const char *key = part[0];
    const char *method = part[3] != NULL ? part[3] : "GET";
    bool valid = images_key_valid(key);
    if (valid && (strstr(key, "..") != NULL || strchr(key, '/') != NULL || key[0] == '.'))
        abort(); /* a key that could leave the folder was accepted */
    images_sig_rc rc = images_verify(SECRET, method, key, part[1], part[2], 1700000000);
    /* the fuzzer cannot know HMAC-SHA256 under the secret: nothing it makes
     * up may pass */
    if (rc == IMAGES_SIG_OK)
        abort();
    free(text);
    return 0;
}
