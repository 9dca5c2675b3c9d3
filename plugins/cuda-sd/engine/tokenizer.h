/* tokenizer.h - CLIP byte-level BPE tokenizer (openai/CLIP vocabulary
 * bpe_simple_vocab_16e6.txt.gz) for the SD1 and SD2 text encoders, plus the
 * A1111/ComfyUI prompt-weight syntax and ComfyUI's 77-token chunking.
 *
 * Two entry points:
 *   - sd_tokenize_77(): one 77-id row exactly as golden/tokenizer gives it
 *     (what `horde-node sd tokenize` prints): [49406] + first 75 ids +
 *     [49407], padded with 49407 (SD1) or 0 (SD2); weights are NOT parsed.
 *     SD1 normalises text like transformers' CLIPTokenizer (+ftfy), SD2 like
 *     open_clip (additionally HTML-unescapes twice; "<start_of_text>" /
 *     "<end_of_text>" are its literal special tokens instead of
 *     "<|startoftext|>" / "<|endoftext|>").
 *   - sd_tokenize_weighted(): the prompt as the pipeline encodes it: weight
 *     syntax parsed, split into words on spaces, any length, in chunks of 77
 *     (start, up to 75 tokens, end, padding) as ComfyUI's SDTokenizer does -
 *     a word of fewer than 8 tokens that would cross a chunk boundary moves
 *     whole to the next chunk; longer words are split. As in ComfyUI, each
 *     word is normalised like transformers' CLIPTokenizer in both forms
 *     (only the padding differs), and a word spelled exactly like a
 *     vocabulary entry is taken as that entry without normalisation (so
 *     "A" is the token "A</w>", 288, where the plain path gives "a</w>").
 *
 * Weight syntax (ComfyUI rules, plus A1111 brackets):
 *   (text)      weight x 1.1 (nesting multiplies)
 *   (text:1.3)  weight = 1.3 (sets, as ComfyUI does, replacing the outer one)
 *   [text]      weight / 1.1 (nesting divides again)
 *   \( \) \[ \] literal brackets; unbalanced brackets are literal text
 * Start, end and pad tokens always have weight 1.0. ComfyUI applies weights
 * after encoding: z = (z - z_empty) * w + z_empty per token position, with
 * z_empty the encoding of the empty prompt (a chunk of start, end, pad...).
 *
 * Ownership: sd_tokenizer is immutable after load and may be shared by
 * threads. sd_token_chunks arrays are owned by the struct; free them with
 * sd_token_chunks_free().
 */
#ifndef SD_ENGINE_TOKENIZER_H
#define SD_ENGINE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SD_TOKEN_BOS 49406
#define SD_TOKEN_EOS 49407
#define SD_TOKEN_CONTEXT 77     /* ids per chunk, BOS and EOS included */

typedef enum {
    SD_TOKENS_SD1 = 0,          /* transformers CLIPTokenizer; pad 49407 */
    SD_TOKENS_SD2               /* open_clip tokenizer; pad 0 */
} sd_token_form;

typedef struct sd_tokenizer sd_tokenizer;

/* Loads the gzip'd (or plain) vocabulary file. 0, or -1 with err naming the
 * file and the problem. *out is freed with sd_tokenizer_free(). */
int sd_tokenizer_load(const char *vocab_path, sd_tokenizer **out, char *err, size_t errlen);
void sd_tokenizer_free(sd_tokenizer *t);                 /* NULL is fine */

/* Finds the vocabulary by the CLI's rule: explicit (when not NULL) must
 * exist; else "bpe_simple_vocab_16e6.txt.gz" in the model file's folder
 * (model_path may be NULL); else <data_dir>/models/clip/ (data_dir may be
 * NULL). Writes the path into out. 0, or -1 with err listing where it
 * looked. */
int sd_tokenizer_find_vocab(const char *explicit_path, const char *model_path,
                            const char *data_dir, char *out, size_t outlen,
                            char *err, size_t errlen);

/* Raw BPE ids of a text (no BOS/EOS, no weights, no truncation), with the
 * normalisation of `form`. *ids is malloc'd (caller frees; may be NULL when
 * *n == 0). 0, or -1 on allocation failure / invalid UTF-8 handling error. */
int sd_tokenize_raw(const sd_tokenizer *t, const char *text, sd_token_form form,
                    int **ids, size_t *n, char *err, size_t errlen);

/* One golden-style 77-id row. *n_content (may be NULL) receives the number
 * of raw ids before truncation; *truncated (may be NULL) whether more than
 * 75 were cut. */
int sd_tokenize_77(const sd_tokenizer *t, const char *text, sd_token_form form,
                   int ids[SD_TOKEN_CONTEXT], size_t *n_content, bool *truncated,
                   char *err, size_t errlen);

typedef struct sd_token_chunks {
    size_t n_chunks;            /* >= 1 */
    int *ids;                   /* [n_chunks * 77] */
    float *weights;             /* [n_chunks * 77] */
    bool has_weights;           /* some weight != 1.0 */
} sd_token_chunks;

/* The prompt with weights, in ComfyUI-style 77-token chunks (see above). */
int sd_tokenize_weighted(const sd_tokenizer *t, const char *prompt, sd_token_form form,
                         sd_token_chunks *out, char *err, size_t errlen);
void sd_token_chunks_free(sd_token_chunks *c);           /* frees arrays, keeps struct */

/* A prompt segment with its weight, as the weight parser splits it. */
typedef struct sd_weighted_text {
    char *text;                 /* malloc'd, escapes resolved */
    float weight;
} sd_weighted_text;
/* Parses the weight syntax only (exposed for tests and debugging).
 * *segs is a malloc'd array of *n entries; free with sd_weighted_text_free. */
int sd_prompt_parse_weights(const char *prompt, sd_weighted_text **segs, size_t *n,
                            char *err, size_t errlen);
void sd_weighted_text_free(sd_weighted_text *segs, size_t n);

/* Writes ids as a JSON array "[49406, 320, ...]" (", " separated) like
 * snprintf: at most len bytes, returns the length needed. */
size_t sd_token_ids_json(const int *ids, size_t n, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
