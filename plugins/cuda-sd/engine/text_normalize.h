/* text_normalize.h - the text clean-up the CLIP tokenizers apply before BPE,
 * on code-point buffers:
 *   - ftfy.fix_text (the subset CLIP prompts meet: HTML entities unless the
 *     line has '<', UTF-8 mojibake read as Latin-1/Windows-1252, C1
 *     controls, Latin ligatures, full/half-width forms, curly quotes, line
 *     breaks, terminal escapes, control characters, NFC), repeated until
 *     nothing changes, line by line, as ftfy does;
 *   - Python's html.unescape (open_clip applies it twice after ftfy);
 *   - whitespace_clean (runs of Python-whitespace -> one space, stripped);
 *   - Python's str.lower() (full mapping incl. U+0130 and final sigma).
 * Known gaps against ftfy: only the Latin-1 and Windows-1252 mojibake
 * decodings (not 1250/1251/1253/1254/MacRoman/cp437), no "restore byte
 * A0" / lossy-sequence repair, no decoding of upper-cased entity names.
 *
 * Buffers own their arrays (free with sd_u32_free). Functions return 0, or
 * -1 on allocation failure.
 */
#ifndef SD_ENGINE_TEXT_NORMALIZE_H
#define SD_ENGINE_TEXT_NORMALIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sd_u32 {
    uint32_t *v;
    size_t n, cap;
} sd_u32;

void sd_u32_free(sd_u32 *b);
int sd_u32_push(sd_u32 *b, uint32_t c);

/* UTF-8 -> code points (appended). Invalid sequences become U+FFFD, one per
 * maximal invalid subpart, as Python's decode(errors="replace"). */
int sd_utf8_decode(const char *s, size_t len, sd_u32 *out);
/* Code points -> a malloc'd NUL-terminated UTF-8 string (*len bytes). */
int sd_utf8_encode(const uint32_t *v, size_t n, char **out, size_t *len);
/* Appends the UTF-8 bytes of one code point to out (4 bytes max); returns
 * the byte count. */
int sd_utf8_put(uint32_t c, unsigned char *out);

bool sd_uc_is_letter(uint32_t c);     /* \p{L} */
bool sd_uc_is_number(uint32_t c);     /* \p{N} */
bool sd_uc_is_space(uint32_t c);      /* Python str.isspace() */

int sd_text_nfc(sd_u32 *b);
int sd_text_lower(sd_u32 *b);
int sd_text_whitespace_clean(sd_u32 *b);
int sd_text_html_unescape(sd_u32 *b);  /* Python html.unescape */
int sd_text_ftfy(sd_u32 *b);           /* ftfy.fix_text (subset above) */

#endif
