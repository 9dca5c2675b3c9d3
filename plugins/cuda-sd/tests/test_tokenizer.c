/* test_tokenizer.c - the CLIP BPE tokenizer against golden/tokenizer, the
 * prompt-weight syntax and ComfyUI-style chunking, vocabulary errors. */
#include "golden.h"

#include <unistd.h>
#include <zlib.h>

#include "engine/tokenizer.h"

typedef struct tok_fixture {
    sd_tokenizer *tok;
    json_t *golden;
} tok_fixture;

static int setup(void **state)
{
    tok_fixture *fx = calloc(1, sizeof *fx);
    char path[1024], err[512];
    golden_shared_path(path, sizeof path, "models/clip/bpe_simple_vocab_16e6.txt.gz");
    if (sd_tokenizer_load(path, &fx->tok, err, sizeof err)) fail_msg("%s", err);
    fx->golden = golden_json("tokenizer/clip_tokenizer.json");
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    tok_fixture *fx = *state;
    sd_tokenizer_free(fx->tok);
    json_decref(fx->golden);
    free(fx);
    return 0;
}

/* The case text from its exact UTF-8 bytes. */
static char *case_text(json_t *c)
{
    const char *hex = json_string_value(json_object_get(c, "utf8_hex"));
    assert_non_null(hex);
    size_t n = strlen(hex) / 2;
    char *s = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        s[i] = (char)v;
    }
    s[n] = '\0';
    return s;
}

static void assert_ids(const char *what, const char *text, const int *got, size_t n, json_t *want)
{
    bool ok = n == json_array_size(want);
    for (size_t i = 0; ok && i < n; i++) ok = got[i] == json_integer_value(json_array_get(want, i));
    if (ok) return;
    char g[4096], w[4096];
    sd_token_ids_json(got, n, g, sizeof g);
    char *wj = json_dumps(want, JSON_COMPACT);
    snprintf(w, sizeof w, "%s", wj);
    free(wj);
    fail_msg("%s for \"%s\":\n  got  %s\n  want %s", what, text, g, w);
}

/* Every golden case: raw ids of both tokenizers and both 77-id rows. */
static void test_golden_cases(void **state)
{
    tok_fixture *fx = *state;
    json_t *cases = json_object_get(fx->golden, "cases");
    assert_true(json_array_size(cases) > 0);
    size_t i;
    json_t *c;
    char err[512];
    json_array_foreach(cases, i, c) {
        char *text = case_text(c);
        static const struct { sd_token_form form; const char *raw, *row; } forms[] = {
            {SD_TOKENS_SD1, "ids_transformers", "sd1_input_ids_77"},
            {SD_TOKENS_SD2, "ids_open_clip", "sd2_input_ids_77"},
        };
        for (int f = 0; f < 2; f++) {
            int *ids;
            size_t n;
            assert_int_equal(sd_tokenize_raw(fx->tok, text, forms[f].form, &ids, &n, err, sizeof err), 0);
            assert_ids(forms[f].raw, text, ids, n, json_object_get(c, forms[f].raw));
            free(ids);
            int row[SD_TOKEN_CONTEXT];
            size_t n_content;
            bool truncated;
            assert_int_equal(sd_tokenize_77(fx->tok, text, forms[f].form, row, &n_content, &truncated, err, sizeof err), 0);
            assert_ids(forms[f].row, text, row, SD_TOKEN_CONTEXT, json_object_get(c, forms[f].row));
            if (forms[f].form == SD_TOKENS_SD1) {
                assert_int_equal(n_content, (size_t)json_integer_value(json_object_get(c, "n_tokens")));
                assert_int_equal(truncated, json_is_true(json_object_get(c, "truncated")));
            }
        }
        free(text);
    }
}

static int weighted_find(const sd_weighted_text *s, size_t n, const char *text, float *w)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s[i].text, text) == 0) { *w = s[i].weight; return 1; }
    return 0;
}

static void expect_weight(const char *prompt, const char *seg, double want)
{
    sd_weighted_text *s;
    size_t n;
    char err[256];
    assert_int_equal(sd_prompt_parse_weights(prompt, &s, &n, err, sizeof err), 0);
    float w = 0;
    if (!weighted_find(s, n, seg, &w)) {
        sd_weighted_text_free(s, n);
        fail_msg("prompt \"%s\": no segment \"%s\"", prompt, seg);
    }
    sd_weighted_text_free(s, n);
    if (fabs(w - want) > 1e-6) fail_msg("prompt \"%s\": segment \"%s\" weight %g, want %g", prompt, seg, w, want);
}

static void test_weight_syntax(void **state)
{
    (void)state;
    expect_weight("a (red:1.3) car", "red", 1.3);
    expect_weight("a (red:1.3) car", "a ", 1.0);
    expect_weight("a (red:1.3) car", " car", 1.0);
    expect_weight("(word)", "word", 1.1);
    expect_weight("((word))", "word", 1.1 * 1.1);
    expect_weight("[word]", "word", 1.0 / 1.1);
    expect_weight("[[word]]", "word", 1.0 / 1.1 / 1.1);
    expect_weight("(word: 0.5 )", "word", 0.5);              /* Python float() trims */
    expect_weight("(a (b:1.5) c)", "b", 1.5);                 /* ComfyUI: inner weight replaces */
    expect_weight("(a (b:1.5) c)", "a ", 1.1);
    expect_weight("(a:b)", "a:b", 1.1);                       /* not a number: kept as text */
    expect_weight("\\(literal\\) text", "(literal) text", 1.0);
    expect_weight("\\[x\\]", "[x]", 1.0);
    expect_weight("(unclosed", "(unclosed", 1.0);             /* unbalanced: plain text */
    expect_weight("((masterpiece)), (best quality:1.2), [[low quality]]", "best quality", 1.2);
    expect_weight("((masterpiece)), (best quality:1.2), [[low quality]]", "low quality", 1.0 / 1.1 / 1.1);
}

static int chunk_content(const sd_token_chunks *c, int pad, int **out, size_t *n)
{
    *out = malloc(c->n_chunks * SD_TOKEN_CONTEXT * sizeof **out);
    *n = 0;
    for (size_t k = 0; k < c->n_chunks; k++) {
        const int *row = c->ids + k * SD_TOKEN_CONTEXT;
        if (row[0] != SD_TOKEN_BOS) return -1;
        size_t end = 1;
        while (end < SD_TOKEN_CONTEXT && row[end] != SD_TOKEN_EOS) (*out)[(*n)++] = row[end++];
        if (end == SD_TOKEN_CONTEXT) return -1;        /* no EOS */
        for (size_t j = end + 1; j < SD_TOKEN_CONTEXT; j++)
            if (row[j] != pad) return -1;
    }
    return 0;
}

/* Unweighted prompts: the chunks hold the same ids as the plain
 * tokenisation (ComfyUI tokenises word by word; for these prompts that
 * agrees), start/end/pad per chunk, and short prompts give exactly the
 * golden 77-id row. */
static void test_chunks_match_golden(void **state)
{
    tok_fixture *fx = *state;
    json_t *cases = json_object_get(fx->golden, "cases");
    size_t i, long_prompts = 0;
    json_t *c;
    char err[512];
    json_array_foreach(cases, i, c) {
        char *text = case_text(c);
        /* weight syntax and literal special tokens change the meaning; and
         * ComfyUI looks a whole word up in the byte-level vocabulary before
         * normalising it, so a capital "A" stays the token "A</w>" (see
         * test_weighted_tokens): skip those */
        bool upper = false;
        for (const char *q = text; *q; q++) upper |= *q >= 'A' && *q <= 'Z';
        if (upper || strpbrk(text, "()[]\\") || strchr(text, '<') || strchr(text, '&')) {
            free(text);
            continue;
        }
        for (int f = 0; f < 2; f++) {
            sd_token_form form = f ? SD_TOKENS_SD2 : SD_TOKENS_SD1;
            int pad = f ? 0 : SD_TOKEN_EOS;
            sd_token_chunks ch;
            assert_int_equal(sd_tokenize_weighted(fx->tok, text, form, &ch, err, sizeof err), 0);
            assert_false(ch.has_weights);
            for (size_t k = 0; k < ch.n_chunks * SD_TOKEN_CONTEXT; k++) assert_true(ch.weights[k] == 1.0f);
            int *content;
            size_t n;
            if (chunk_content(&ch, pad, &content, &n)) fail_msg("\"%s\": malformed chunk", text);
            json_t *want = json_object_get(c, "ids_transformers");
            assert_ids("chunked content", text, content, n, want);
            if (!json_is_true(json_object_get(c, "truncated"))) {
                assert_int_equal(ch.n_chunks, 1);
                assert_ids("single chunk", text, ch.ids, SD_TOKEN_CONTEXT,
                           json_object_get(c, f ? "sd2_input_ids_77" : "sd1_input_ids_77"));
            } else {
                assert_true(ch.n_chunks >= 2);
                long_prompts++;
            }
            free(content);
            sd_token_chunks_free(&ch);
        }
        free(text);
    }
    assert_true(long_prompts > 0);
}

/* ComfyUI moves a short word that would cross the 75-token boundary whole
 * into the next chunk (padding the first), and splits words of 8+ tokens. */
static void test_chunk_boundaries(void **state)
{
    tok_fixture *fx = *state;
    char err[256];
    /* 74 x "cat" (1 token each) then "astronaut" (1 token) and a 3-token word */
    char prompt[1024] = "";
    for (int i = 0; i < 74; i++) strcat(prompt, "cat ");
    int *w3;
    size_t n3;
    assert_int_equal(sd_tokenize_raw(fx->tok, "supercalifragilistic", SD_TOKENS_SD1, &w3, &n3, err, sizeof err), 0);
    assert_true(n3 >= 2 && n3 < 8);
    strcat(prompt, "supercalifragilistic");
    sd_token_chunks ch;
    assert_int_equal(sd_tokenize_weighted(fx->tok, prompt, SD_TOKENS_SD1, &ch, err, sizeof err), 0);
    assert_int_equal(ch.n_chunks, 2);
    /* chunk 0: BOS, 74 cats, EOS, pad */
    assert_int_equal(ch.ids[75], SD_TOKEN_EOS);
    assert_int_equal(ch.ids[76], SD_TOKEN_EOS);
    /* chunk 1: BOS, the whole word */
    for (size_t k = 0; k < n3; k++) assert_int_equal(ch.ids[SD_TOKEN_CONTEXT + 1 + k], w3[k]);
    assert_int_equal(ch.ids[SD_TOKEN_CONTEXT + 1 + n3], SD_TOKEN_EOS);
    sd_token_chunks_free(&ch);
    free(w3);

    /* a long word (>= 8 tokens) is split at the boundary instead */
    int *wl;
    size_t nl;
    const char *longword = "pneumonoultramicroscopicsilicovolcanoconiosis";
    assert_int_equal(sd_tokenize_raw(fx->tok, longword, SD_TOKENS_SD1, &wl, &nl, err, sizeof err), 0);
    assert_true(nl >= 8);
    strcpy(prompt, "");
    for (int i = 0; i < 74; i++) strcat(prompt, "cat ");
    strcat(prompt, longword);
    assert_int_equal(sd_tokenize_weighted(fx->tok, prompt, SD_TOKENS_SD2, &ch, err, sizeof err), 0);
    assert_int_equal(ch.n_chunks, 2);
    assert_int_equal(ch.ids[75], wl[0]);                /* first piece fills the last slot */
    assert_int_equal(ch.ids[76], SD_TOKEN_EOS);
    assert_int_equal(ch.ids[SD_TOKEN_CONTEXT + 1], wl[1]);
    assert_int_equal(ch.ids[SD_TOKEN_CONTEXT + nl], SD_TOKEN_EOS);
    assert_int_equal(ch.ids[SD_TOKEN_CONTEXT + nl + 1], 0);  /* SD2 pads with 0 */
    sd_token_chunks_free(&ch);
    free(wl);
}

static void test_weighted_tokens(void **state)
{
    tok_fixture *fx = *state;
    char err[256];
    sd_token_chunks ch;
    assert_int_equal(sd_tokenize_weighted(fx->tok, "a (red:1.3) car, [blue] sky", SD_TOKENS_SD1, &ch, err, sizeof err), 0);
    assert_true(ch.has_weights);
    int *ids;
    size_t n;
    assert_int_equal(sd_tokenize_raw(fx->tok, "a red car, blue sky", SD_TOKENS_SD1, &ids, &n, err, sizeof err), 0);
    /* same ids as without the syntax; weights per token */
    for (size_t k = 0; k < n; k++) assert_int_equal(ch.ids[1 + k], ids[k]);
    assert_true(ch.weights[0] == 1.0f);                  /* BOS */
    assert_true(fabsf(ch.weights[1] - 1.0f) < 1e-6f);    /* a */
    assert_true(fabsf(ch.weights[2] - 1.3f) < 1e-6f);    /* red */
    assert_true(fabsf(ch.weights[3] - 1.0f) < 1e-6f);    /* car */
    assert_true(fabsf(ch.weights[5] - 1.0f / 1.1f) < 1e-6f); /* blue */
    assert_true(ch.weights[1 + n] == 1.0f);              /* EOS */
    free(ids);
    sd_token_chunks_free(&ch);

    /* ComfyUI's exact-vocabulary shortcut: a word spelled like a vocabulary
     * entry skips normalisation, so "A" is "A</w>" (288), not "a</w>" (320) */
    assert_int_equal(sd_tokenize_weighted(fx->tok, "A cat", SD_TOKENS_SD1, &ch, err, sizeof err), 0);
    assert_int_equal(ch.ids[1], 288);
    assert_int_equal(ch.ids[2], 2368);
    sd_token_chunks_free(&ch);
    int row[SD_TOKEN_CONTEXT];
    assert_int_equal(sd_tokenize_77(fx->tok, "A cat", SD_TOKENS_SD1, row, NULL, NULL, err, sizeof err), 0);
    assert_int_equal(row[1], 320);

    /* the empty prompt: one chunk of BOS, EOS, padding */
    assert_int_equal(sd_tokenize_weighted(fx->tok, "", SD_TOKENS_SD2, &ch, err, sizeof err), 0);
    assert_int_equal(ch.n_chunks, 1);
    assert_int_equal(ch.ids[0], SD_TOKEN_BOS);
    assert_int_equal(ch.ids[1], SD_TOKEN_EOS);
    assert_int_equal(ch.ids[2], 0);
    sd_token_chunks_free(&ch);
}

static void expect_same_ids(const sd_tokenizer *t, sd_token_form form, const char *a, const char *b, bool same)
{
    int *x, *y;
    size_t nx, ny;
    char err[256];
    assert_int_equal(sd_tokenize_raw(t, a, form, &x, &nx, err, sizeof err), 0);
    assert_int_equal(sd_tokenize_raw(t, b, form, &y, &ny, err, sizeof err), 0);
    bool eq = nx == ny && memcmp(x, y, nx * sizeof *x) == 0;
    free(x);
    free(y);
    if (eq != same) fail_msg("\"%s\" and \"%s\" should tokenize %s", a, b, same ? "alike" : "differently");
}

/* Normalisation rules the golden prompts do not reach. */
static void test_normalisation_rules(void **state)
{
    tok_fixture *fx = *state;
    /* NFC: decomposed accents and Hangul jamo compose (ftfy normalises) */
    expect_same_ids(fx->tok, SD_TOKENS_SD1, "cafe\xcc\x81 cre\xcc\x80me", "caf\xc3\xa9 cr\xc3\xa8me", true);
    expect_same_ids(fx->tok, SD_TOKENS_SD2, "\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab", "\xed\x95\x9c", true);
    /* Python str.lower(): final sigma */
    expect_same_ids(fx->tok, SD_TOKENS_SD1, "\xce\x9f\xce\x94\xce\x9f\xce\xa3",
                    "\xce\xbf\xce\xb4\xce\xbf\xcf\x82", true);
    expect_same_ids(fx->tok, SD_TOKENS_SD1, "\xce\x9f\xce\x94\xce\x9f\xce\xa3",
                    "\xce\xbf\xce\xb4\xce\xbf\xcf\x83", false);
    /* open_clip's html.unescape knows legacy entities without ';', ftfy does not */
    expect_same_ids(fx->tok, SD_TOKENS_SD2, "tom &ampjerry", "tom &jerry", true);
    expect_same_ids(fx->tok, SD_TOKENS_SD1, "tom &ampjerry", "tom &jerry", false);
    /* ftfy: numeric entities, C1 controls as Windows-1252, ligatures */
    expect_same_ids(fx->tok, SD_TOKENS_SD1, "it&#x2019;s", "it's", true);
    expect_same_ids(fx->tok, SD_TOKENS_SD1, "doo\xc2\x85", "doo\xe2\x80\xa6", true);
    expect_same_ids(fx->tok, SD_TOKENS_SD1, "\xef\xac\x81ne", "fine", true);
    /* terminal escapes and control characters vanish */
    expect_same_ids(fx->tok, SD_TOKENS_SD1, "\x1b[36;44mblue\x1b[0m\x01", "blue", true);
    /* invalid UTF-8 does not crash and is not dropped silently */
    expect_same_ids(fx->tok, SD_TOKENS_SD1, "a\xff\xfe" "b", "ab", false);
}

static void test_json(void **state)
{
    (void)state;
    int ids[3] = {49406, 320, 49407};
    char buf[64];
    size_t need = sd_token_ids_json(ids, 3, buf, sizeof buf);
    assert_string_equal(buf, "[49406, 320, 49407]");
    assert_int_equal(need, strlen(buf));
    char small[8];
    assert_int_equal(sd_token_ids_json(ids, 3, small, sizeof small), need);
    assert_int_equal(strlen(small), sizeof small - 1);
}

static void test_vocab_errors(void **state)
{
    (void)state;
    sd_tokenizer *t = NULL;
    char err[512];
    assert_int_equal(sd_tokenizer_load("/nonexistent/vocab.txt.gz", &t, err, sizeof err), -1);
    assert_null(t);
    assert_non_null(strstr(err, "/nonexistent/vocab.txt.gz"));

    /* a truncated vocabulary: the header and a few merges */
    char dir[] = "/tmp/test_tokenizer_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/short.txt.gz", dir);
    gzFile gz = gzopen(path, "wb");
    assert_non_null(gz);
    gzputs(gz, "\"bpe_simple_vocab_16e6.txt#version: 0.2\ni n\nt h\n");
    gzclose(gz);
    assert_int_equal(sd_tokenizer_load(path, &t, err, sizeof err), -1);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "truncated"));
    unlink(path);

    /* vocabulary search order */
    char found[512];
    assert_int_equal(sd_tokenizer_find_vocab(NULL, "/nonexistent/model.safetensors", "/nonexistent", found,
                                             sizeof found, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/models/clip/bpe_simple_vocab_16e6.txt.gz"));
    char shared[512];
    golden_shared_path(shared, sizeof shared, "");
    assert_int_equal(sd_tokenizer_find_vocab(NULL, NULL, shared, found, sizeof found, err, sizeof err), 0);
    assert_non_null(strstr(found, "models/clip/bpe_simple_vocab_16e6.txt.gz"));
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_golden_cases, setup, teardown),
        cmocka_unit_test(test_weight_syntax),
        cmocka_unit_test_setup_teardown(test_chunks_match_golden, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunk_boundaries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_weighted_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_normalisation_rules, setup, teardown),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_vocab_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
