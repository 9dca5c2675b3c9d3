/* tokenizer.c - see tokenizer.h. Vocabulary and BPE as openai/CLIP's
 * simple_tokenizer.py defines them (spec/sd-engine.md §8): 256 byte
 * symbols in bytes_to_unicode order, the same with "</w>", one symbol per
 * merge (id 512 + rank), then <|startoftext|> and <|endoftext|>. */
#include "tokenizer.h"

#include "error_text.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "text_normalize.h"

#define N_MERGES 48894                  /* merges[1 : 49152-256-2+1] */
#define VOCAB_SIZE (512 + N_MERGES + 2)
#define VOCAB_FILE_NAME "bpe_simple_vocab_16e6.txt.gz"

typedef struct str_slot { const char *s; int id; } str_slot;
typedef struct pair_slot { uint64_t key; int rank; } pair_slot;   /* key 0 = empty */

struct sd_tokenizer {
    char *strings[VOCAB_SIZE];          /* byte-level symbol text per id */
    str_slot *smap;                     /* open addressing, string -> id */
    size_t smap_cap;
    pair_slot *pmap;                    /* (left id, right id) -> merge rank */
    size_t pmap_cap;
    int byte_id[256];                   /* byte -> id of its symbol */
};

/* errors about one file: "<file>: ...", "(tokenizer): ..." when it has no name */
#define failf(err, errlen, fname, ...) \
    sd_fail_in(err, errlen, (fname) ? (fname) : "(tokenizer)", __VA_ARGS__)

/* ---- hash maps ----------------------------------------------------------------- */
static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;           /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static void smap_put(sd_tokenizer *t, const char *s, int id)
{
    size_t i = hash_str(s) & (t->smap_cap - 1);
    while (t->smap[i].s && strcmp(t->smap[i].s, s) != 0) i = (i + 1) & (t->smap_cap - 1);
    t->smap[i].s = s;
    t->smap[i].id = id;                 /* later ids win, as dict(zip(vocab, range)) */
}

static int smap_get(const sd_tokenizer *t, const char *s)
{
    size_t i = hash_str(s) & (t->smap_cap - 1);
    while (t->smap[i].s) {
        if (strcmp(t->smap[i].s, s) == 0) return t->smap[i].id;
        i = (i + 1) & (t->smap_cap - 1);
    }
    return -1;
}

static uint64_t pair_key(int a, int b) { return ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1; }

static void pmap_put(sd_tokenizer *t, int a, int b, int rank)
{
    uint64_t k = pair_key(a, b);
    size_t i = hash_u64(k) & (t->pmap_cap - 1);
    while (t->pmap[i].key && t->pmap[i].key != k) i = (i + 1) & (t->pmap_cap - 1);
    if (!t->pmap[i].key) {              /* the first (lowest) rank of a pair wins */
        t->pmap[i].key = k;
        t->pmap[i].rank = rank;
    }
}

static int pmap_get(const sd_tokenizer *t, int a, int b)
{
    uint64_t k = pair_key(a, b);
    size_t i = hash_u64(k) & (t->pmap_cap - 1);
    while (t->pmap[i].key) {
        if (t->pmap[i].key == k) return t->pmap[i].rank;
        i = (i + 1) & (t->pmap_cap - 1);
    }
    return -1;
}

/* ---- loading ---------------------------------------------------------------------- */
void sd_tokenizer_free(sd_tokenizer *t)
{
    if (!t) return;
    for (int i = 0; i < VOCAB_SIZE; i++) free(t->strings[i]);
    free(t->smap);
    free(t->pmap);
    free(t);
}

/* Reads a gzip'd or plain file whole (zlib's gz* read both). */
static char *read_all(const char *path, size_t *len, char *err, size_t errlen)
{
    gzFile gz = gzopen(path, "rb");
    if (!gz) { failf(err, errlen, path, "cannot open vocabulary file"); return NULL; }
    size_t cap = 4u << 20, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) { gzclose(gz); failf(err, errlen, path, "out of memory"); return NULL; }
    for (;;) {
        if (n == cap) {
            if (cap > (64u << 20)) { free(buf); gzclose(gz); failf(err, errlen, path, "vocabulary file is too large"); return NULL; }
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) { free(buf); gzclose(gz); failf(err, errlen, path, "out of memory"); return NULL; }
            buf = nb;
        }
        int got = gzread(gz, buf + n, (unsigned)(cap - n));
        if (got < 0) {
            int zerr;
            const char *msg = gzerror(gz, &zerr);
            failf(err, errlen, path, "cannot read vocabulary (%s)", msg ? msg : "gzip error");
            free(buf);
            gzclose(gz);
            return NULL;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    gzclose(gz);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* GPT-2 bytes_to_unicode(): printable bytes map to themselves, the rest
 * to U+0100 + n in byte order; ids follow the list order. */
static void byte_table(int order[256], uint32_t cp[256])
{
    int k = 0;
    bool used[256] = {false};
    for (int b = '!'; b <= '~'; b++) { order[k] = b; cp[k++] = (uint32_t)b; used[b] = true; }
    for (int b = 0xA1; b <= 0xAC; b++) { order[k] = b; cp[k++] = (uint32_t)b; used[b] = true; }
    for (int b = 0xAE; b <= 0xFF; b++) { order[k] = b; cp[k++] = (uint32_t)b; used[b] = true; }
    int n = 0;
    for (int b = 0; b < 256; b++)
        if (!used[b]) { order[k] = b; cp[k++] = 256u + (uint32_t)n++; }
}

static char *cp_str(uint32_t c, const char *suffix)
{
    unsigned char u[5];
    int l = sd_utf8_put(c, u);
    size_t sl = strlen(suffix);
    char *s = malloc((size_t)l + sl + 1);
    if (!s) return NULL;
    memcpy(s, u, (size_t)l);
    memcpy(s + l, suffix, sl + 1);
    return s;
}

int sd_tokenizer_load(const char *path, sd_tokenizer **out, char *err, size_t errlen)
{
    *out = NULL;
    size_t len = 0;
    char *text = read_all(path, &len, err, errlen);
    if (!text) return -1;
    sd_tokenizer *t = calloc(1, sizeof *t);
    if (!t) { free(text); return failf(err, errlen, path, "out of memory"); }
    t->smap_cap = 1u << 17;
    t->pmap_cap = 1u << 17;
    t->smap = calloc(t->smap_cap, sizeof *t->smap);
    t->pmap = calloc(t->pmap_cap, sizeof *t->pmap);
    if (!t->smap || !t->pmap) goto oom;

    int order[256];
    uint32_t cps[256];
    byte_table(order, cps);
    for (int k = 0; k < 256; k++) {
        t->byte_id[order[k]] = k;
        if (!(t->strings[k] = cp_str(cps[k], ""))) goto oom;
        if (!(t->strings[256 + k] = cp_str(cps[k], "</w>"))) goto oom;
    }
    for (int k = 0; k < 512; k++) smap_put(t, t->strings[k], k);

    /* line 0 is the header; the next N_MERGES lines are "left right" */
    char *p = strchr(text, '\n');
    if (!p) { free(text); sd_tokenizer_free(t); return failf(err, errlen, path, "not a CLIP BPE vocabulary (no lines)"); }
    p++;
    for (int r = 0; r < N_MERGES; r++) {
        char *nl = strchr(p, '\n');
        if (!nl) {
            free(text);
            sd_tokenizer_free(t);
            return failf(err, errlen, path, "vocabulary ends after %d merges (needs %d): truncated or not the CLIP file",
                         r, N_MERGES);
        }
        *nl = '\0';
        if (nl > p && nl[-1] == '\r') nl[-1] = '\0';
        char *sp = strchr(p, ' ');
        if (!sp || sp == p || !sp[1] || strchr(sp + 1, ' ')) {
            free(text);
            sd_tokenizer_free(t);
            return failf(err, errlen, path, "merge line %d is not \"left right\"", r + 2);
        }
        *sp = '\0';
        int a = smap_get(t, p), b = smap_get(t, sp + 1);
        if (a < 0 || b < 0) {
            free(text);
            sd_tokenizer_free(t);
            return failf(err, errlen, path, "merge line %d uses a symbol not defined before it", r + 2);
        }
        size_t la = strlen(p), lb = strlen(sp + 1);
        char *m = malloc(la + lb + 1);
        if (!m) goto oom;
        memcpy(m, p, la);
        memcpy(m + la, sp + 1, lb + 1);
        t->strings[512 + r] = m;
        smap_put(t, m, 512 + r);
        pmap_put(t, a, b, r);
        p = nl + 1;
    }
    if (!(t->strings[SD_TOKEN_BOS] = strdup("<|startoftext|>")) || !(t->strings[SD_TOKEN_EOS] = strdup("<|endoftext|>")))
        goto oom;
    smap_put(t, t->strings[SD_TOKEN_BOS], SD_TOKEN_BOS);
    smap_put(t, t->strings[SD_TOKEN_EOS], SD_TOKEN_EOS);
    free(text);
    *out = t;
    return 0;
oom:
    free(text);
    sd_tokenizer_free(t);
    return failf(err, errlen, path, "out of memory");
}

int sd_tokenizer_find_vocab(const char *explicit_path, const char *model_path, const char *data_dir, char *out,
                            size_t outlen, char *err, size_t errlen)
{
    struct stat st;
    if (explicit_path && *explicit_path) {
        if (stat(explicit_path, &st) != 0) return failf(err, errlen, explicit_path, "vocabulary file not found");
        snprintf(out, outlen, "%s", explicit_path);
        return 0;
    }
    char tried[2][1024] = {"", ""};
    if (model_path && *model_path) {
        const char *slash = strrchr(model_path, '/');
        if (slash) snprintf(tried[0], sizeof tried[0], "%.*s/%s", (int)(slash - model_path), model_path, VOCAB_FILE_NAME);
        else snprintf(tried[0], sizeof tried[0], "%s", VOCAB_FILE_NAME);
        if (stat(tried[0], &st) == 0) { snprintf(out, outlen, "%s", tried[0]); return 0; }
    }
    if (data_dir && *data_dir) {
        snprintf(tried[1], sizeof tried[1], "%s/models/clip/%s", data_dir, VOCAB_FILE_NAME);
        if (stat(tried[1], &st) == 0) { snprintf(out, outlen, "%s", tried[1]); return 0; }
    }
    return failf(err, errlen, VOCAB_FILE_NAME, "CLIP vocabulary not found (give --vocab; looked at '%s' and '%s')",
                 tried[0][0] ? tried[0] : "(no model folder)", tried[1][0] ? tried[1] : "(no data dir)");
}

/* ---- BPE ---------------------------------------------------------------------------- */
typedef struct ids { int *v; size_t n, cap; } ids;

static int ids_push(ids *x, int id)
{
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 64;
        int *nv = realloc(x->v, cap * sizeof *nv);
        if (!nv) return -1;
        x->v = nv;
        x->cap = cap;
    }
    x->v[x->n++] = id;
    return 0;
}

/* One pre-token (its UTF-8 bytes) -> ids appended. */
static int bpe(const sd_tokenizer *t, const unsigned char *bytes, size_t n, ids *out)
{
    if (n == 0) return 0;
    int *w = malloc(n * sizeof *w);
    if (!w) return -1;
    for (size_t i = 0; i < n; i++) w[i] = t->byte_id[bytes[i]];
    w[n - 1] += 256;                    /* last symbol carries "</w>" */
    size_t len = n;
    while (len > 1) {
        int best = -1;
        for (size_t i = 0; i + 1 < len; i++) {
            int r = pmap_get(t, w[i], w[i + 1]);
            if (r >= 0 && (best < 0 || r < best)) best = r;
        }
        if (best < 0) break;
        /* merge every occurrence of that pair, left to right */
        int a = -1, b = -1;
        for (size_t i = 0; i + 1 < len; i++)
            if (pmap_get(t, w[i], w[i + 1]) == best) { a = w[i]; b = w[i + 1]; break; }
        size_t o = 0;
        for (size_t i = 0; i < len;) {
            if (i + 1 < len && w[i] == a && w[i + 1] == b) {
                w[o++] = 512 + best;
                i += 2;
            } else {
                w[o++] = w[i++];
            }
        }
        len = o;
    }
    int rc = 0;
    for (size_t i = 0; i < len && rc == 0; i++) rc = ids_push(out, w[i]);
    free(w);
    return rc;
}

/* ---- pre-tokenisation ---------------------------------------------------------------- */
static bool starts_with_ascii(const sd_u32 *b, size_t i, const char *s)
{
    for (size_t k = 0; s[k]; k++)
        if (i + k >= b->n || b->v[i + k] != (unsigned char)s[k]) return false;
    return true;
}

/* The CLIP pattern over normalised text:
 *   <special>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * tried in that order at each position (IGNORECASE; on lower-cased text
 * only U+017F LONG S folds onto a contraction letter). */
static int pretokenize(const sd_tokenizer *t, const sd_u32 *b, sd_token_form form, ids *out)
{
    const char *bos = form == SD_TOKENS_SD2 ? "<start_of_text>" : "<|startoftext|>";
    const char *eos = form == SD_TOKENS_SD2 ? "<end_of_text>" : "<|endoftext|>";
    unsigned char *buf = malloc(b->n * 4 + 1);
    if (!buf && b->n) return -1;
    size_t i = 0;
    int rc = 0;
    while (i < b->n && rc == 0) {
        uint32_t c = b->v[i];
        if (sd_uc_is_space(c)) { i++; continue; }
        size_t end = i + 1;
        if (starts_with_ascii(b, i, bos)) { rc = ids_push(out, SD_TOKEN_BOS); i += strlen(bos); continue; }
        if (starts_with_ascii(b, i, eos)) { rc = ids_push(out, SD_TOKEN_EOS); i += strlen(eos); continue; }
        if (c == '\'' && i + 1 < b->n) {
            uint32_t d = b->v[i + 1] == 0x17F ? 's' : b->v[i + 1];
            uint32_t e = i + 2 < b->n ? b->v[i + 2] : 0;
            if (d == 's' || d == 't' || d == 'm' || d == 'd') end = i + 2;
            else if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e') || (d == 'l' && e == 'l')) end = i + 3;
        }
        if (end == i + 1) {
            if (sd_uc_is_letter(c)) {
                while (end < b->n && sd_uc_is_letter(b->v[end])) end++;
            } else if (!sd_uc_is_number(c)) {
                while (end < b->n && !sd_uc_is_space(b->v[end]) && !sd_uc_is_letter(b->v[end]) &&
                       !sd_uc_is_number(b->v[end]))
                    end++;
            }
        }
        size_t nb = 0;
        for (size_t k = i; k < end; k++) nb += (size_t)sd_utf8_put(b->v[k], buf + nb);
        rc = bpe(t, buf, nb, out);
        i = end;
    }
    free(buf);
    return rc;
}

/* ---- normalisation per form ------------------------------------------------------------ */
/* transformers CLIPTokenizer._tokenize: whitespace_clean(ftfy(text)).lower() */
static int encode_piece_hf(const sd_tokenizer *t, const char *s, size_t len, ids *out)
{
    sd_u32 b = {0};
    int rc = sd_utf8_decode(s, len, &b);
    if (!rc) rc = sd_text_ftfy(&b);
    if (!rc) rc = sd_text_whitespace_clean(&b);
    if (!rc) rc = sd_text_lower(&b);
    if (!rc) rc = pretokenize(t, &b, SD_TOKENS_SD1, out);
    sd_u32_free(&b);
    return rc;
}

/* transformers splits the raw text on its special tokens first */
static int encode_hf(const sd_tokenizer *t, const char *text, ids *out)
{
    const char *p = text;
    for (;;) {
        const char *s1 = strstr(p, "<|startoftext|>"), *s2 = strstr(p, "<|endoftext|>");
        const char *s = s1 && (!s2 || s1 < s2) ? s1 : s2;
        if (!s) return encode_piece_hf(t, p, strlen(p), out);
        if (encode_piece_hf(t, p, (size_t)(s - p), out)) return -1;
        if (ids_push(out, s == s1 ? SD_TOKEN_BOS : SD_TOKEN_EOS)) return -1;
        p = s + (s == s1 ? strlen("<|startoftext|>") : strlen("<|endoftext|>"));
    }
}

/* open_clip SimpleTokenizer.encode:
 * whitespace_clean(html.unescape(html.unescape(ftfy(text))).strip()).lower() */
static int encode_open_clip(const sd_tokenizer *t, const char *text, ids *out)
{
    sd_u32 b = {0};
    int rc = sd_utf8_decode(text, strlen(text), &b);
    if (!rc) rc = sd_text_ftfy(&b);
    if (!rc) rc = sd_text_html_unescape(&b);
    if (!rc) rc = sd_text_html_unescape(&b);
    if (!rc) rc = sd_text_whitespace_clean(&b);
    if (!rc) rc = sd_text_lower(&b);
    if (!rc) rc = pretokenize(t, &b, SD_TOKENS_SD2, out);
    sd_u32_free(&b);
    return rc;
}

int sd_tokenize_raw(const sd_tokenizer *t, const char *text, sd_token_form form, int **out_ids, size_t *n, char *err,
                    size_t errlen)
{
    *out_ids = NULL;
    *n = 0;
    if (!t || !text) return failf(err, errlen, "tokenizer", "no tokenizer or text");
    ids x = {0};
    int rc = form == SD_TOKENS_SD2 ? encode_open_clip(t, text, &x) : encode_hf(t, text, &x);
    if (rc) {
        free(x.v);
        return failf(err, errlen, "tokenizer", "out of memory");
    }
    *out_ids = x.v;
    *n = x.n;
    return 0;
}

int sd_tokenize_77(const sd_tokenizer *t, const char *text, sd_token_form form, int row[SD_TOKEN_CONTEXT],
                   size_t *n_content, bool *truncated, char *err, size_t errlen)
{
    int *v;
    size_t n;
    if (sd_tokenize_raw(t, text, form, &v, &n, err, errlen)) return -1;
    size_t keep = n > SD_TOKEN_CONTEXT - 2 ? SD_TOKEN_CONTEXT - 2 : n;
    int pad = form == SD_TOKENS_SD2 ? 0 : SD_TOKEN_EOS;
    row[0] = SD_TOKEN_BOS;
    for (size_t i = 0; i < keep; i++) row[1 + i] = v[i];
    row[1 + keep] = SD_TOKEN_EOS;
    for (size_t i = keep + 2; i < SD_TOKEN_CONTEXT; i++) row[i] = pad;
    if (n_content) *n_content = n;
    if (truncated) *truncated = n > keep;
    free(v);
    return 0;
}

/* ---- ComfyUI-style weighted chunks -------------------------------------------------------- */
#define MAX_WORD_LENGTH 8               /* ComfyUI SDTokenizer.max_word_length */

typedef struct chunk_builder {
    sd_token_chunks *c;
    size_t len;                         /* tokens in the current chunk */
    int pad;
} chunk_builder;

static int new_chunk(chunk_builder *cb)
{
    sd_token_chunks *c = cb->c;
    size_t n = c->n_chunks + 1;
    int *ni = realloc(c->ids, n * SD_TOKEN_CONTEXT * sizeof *ni);
    if (!ni) return -1;
    c->ids = ni;
    float *nw = realloc(c->weights, n * SD_TOKEN_CONTEXT * sizeof *nw);
    if (!nw) return -1;
    c->weights = nw;
    c->n_chunks = n;
    cb->len = 0;
    return 0;
}

static void chunk_add(chunk_builder *cb, int id, float w)
{
    size_t at = (cb->c->n_chunks - 1) * SD_TOKEN_CONTEXT + cb->len++;
    cb->c->ids[at] = id;
    cb->c->weights[at] = w;
}

static void chunk_close(chunk_builder *cb)
{
    chunk_add(cb, SD_TOKEN_EOS, 1.0f);
    while (cb->len < SD_TOKEN_CONTEXT) chunk_add(cb, cb->pad, 1.0f);
}

/* Adds one word's tokens, moving to a new chunk as ComfyUI does. */
static int add_word(chunk_builder *cb, const int *v, size_t n, float w)
{
    bool large = n >= MAX_WORD_LENGTH;
    while (n > 0) {
        if (n + cb->len > SD_TOKEN_CONTEXT - 1) {
            size_t room = SD_TOKEN_CONTEXT - cb->len - 1;
            if (large) {
                for (size_t i = 0; i < room; i++) chunk_add(cb, v[i], w);
                v += room;
                n -= room;
            }
            chunk_close(cb);
            if (new_chunk(cb)) return -1;
            chunk_add(cb, SD_TOKEN_BOS, 1.0f);
        } else {
            for (size_t i = 0; i < n; i++) chunk_add(cb, v[i], w);
            n = 0;
        }
    }
    return 0;
}

int sd_tokenize_weighted(const sd_tokenizer *t, const char *prompt, sd_token_form form, sd_token_chunks *out,
                         char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    sd_weighted_text *segs = NULL;
    size_t n_segs = 0;
    if (sd_prompt_parse_weights(prompt ? prompt : "", &segs, &n_segs, err, errlen)) return -1;
    chunk_builder cb = {out, 0, form == SD_TOKENS_SD2 ? 0 : SD_TOKEN_EOS};
    int rc = new_chunk(&cb);
    if (!rc) chunk_add(&cb, SD_TOKEN_BOS, 1.0f);
    for (size_t s = 0; s < n_segs && rc == 0; s++) {
        /* words are split on spaces after "\n" -> " " */
        char *text = segs[s].text;
        for (char *q = text; *q; q++)
            if (*q == '\n') *q = ' ';
        char *save = NULL;
        for (char *word = strtok_r(text, " ", &save); word && rc == 0; word = strtok_r(NULL, " ", &save)) {
            /* a word spelled exactly like a vocabulary entry skips normalisation */
            size_t wl = strlen(word);
            char *exact = malloc(wl + 5);
            if (!exact) { rc = -1; break; }
            memcpy(exact, word, wl);
            memcpy(exact + wl, "</w>", 5);
            int id = smap_get(t, exact);
            free(exact);
            if (id >= 0) {
                rc = add_word(&cb, &id, 1, segs[s].weight);
                if (segs[s].weight != 1.0f) out->has_weights = true;
                continue;
            }
            /* ComfyUI tokenises words with transformers' CLIPTokenizer for both families */
            ids x = {0};
            rc = encode_hf(t, word, &x);
            if (!rc) rc = add_word(&cb, x.v, x.n, segs[s].weight);
            if (x.n && segs[s].weight != 1.0f) out->has_weights = true;
            free(x.v);
        }
    }
    if (!rc) chunk_close(&cb);
    sd_weighted_text_free(segs, n_segs);
    if (rc) {
        sd_token_chunks_free(out);
        return failf(err, errlen, "tokenizer", "out of memory");
    }
    return 0;
}

void sd_token_chunks_free(sd_token_chunks *c)
{
    if (!c) return;
    free(c->ids);
    free(c->weights);
    memset(c, 0, sizeof *c);
}

size_t sd_token_ids_json(const int *v, size_t n, char *buf, size_t len)
{
    size_t used = 0, written = 0;
    char tmp[24];
    for (size_t i = 0; i <= n + 1; i++) {
        if (i == 0) snprintf(tmp, sizeof tmp, "[");
        else if (i == n + 1) snprintf(tmp, sizeof tmp, "]");
        else snprintf(tmp, sizeof tmp, "%s%d", i > 1 ? ", " : "", v[i - 1]);
        for (const char *q = tmp; *q; q++, used++)
            if (buf && written + 1 < len) buf[written++] = *q;
    }
    if (buf && len) buf[written] = '\0';
    return used;
}
