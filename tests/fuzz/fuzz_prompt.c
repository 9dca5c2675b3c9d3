/* Fuzz target: the prompt as the engine reads it: the weight syntax parser
 * ("(word:1.2)", nesting, escapes) and, when the CLIP vocabulary is found
 * (HN_FUZZ_VOCAB, else ../shared/models/clip/), the CLIP tokenizer in both
 * normalisation forms (UTF-8 decoding, NFC, BPE) and 77-token chunking. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const sd_tokenizer *vocab(void) {
    static int tried;
    static sd_tokenizer *tok;
    if (!tried) {
        tried = 1;
        const char *path = getenv("HN_FUZZ_VOCAB");
        if (path == NULL)
            path = "../shared/models/clip/bpe_simple_vocab_16e6.txt.gz";
        char err[512];
        if (sd_tokenizer_load(path, &tok, err, sizeof err) != 0)
            tok = NULL; /* weights only */
    }
    return tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096)
        return 0; /* prompts are capped far below this by the broker */
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    char err[512];
    sd_weighted_text *segs = NULL;
    size_t n = 0;
    if (sd_prompt_parse_weights(text, &segs, &n, err, sizeof err) == 0)
        sd_weighted_text_free(segs, n);
    const sd_tokenizer *tok = vocab();
    if (tok != NULL) {
        for (int form = SD_TOKENS_SD1; form <= SD_TOKENS_SD2; form++) {
            sd_token_chunks chunks;
            memset(&chunks, 0, sizeof chunks);
            if (sd_tokenize_weighted(tok, text, (sd_token_form)form, &chunks, err, sizeof err) == 0)
                sd_token_chunks_free(&chunks);
            int ids[SD_TOKEN_CONTEXT];
            (void)sd_tokenize_77(tok, text, (sd_token_form)form, ids, NULL, NULL, err, sizeof err);
        }
    }
    free(text);
    return 0;
}
