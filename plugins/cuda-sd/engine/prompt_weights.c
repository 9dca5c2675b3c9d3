/* prompt_weights.c - the A1111/ComfyUI emphasis syntax (tokenizer.h).
 *
 * Follows ComfyUI's token_weights()/parse_parentheses() step by step,
 * including how it treats unbalanced brackets, and adds A1111's [text]
 * (weight / 1.1), which ComfyUI leaves as text. Escaped brackets are turned
 * into private marker bytes first (ComfyUI's escape_important) and back
 * into literal brackets at the end. */
#include "tokenizer.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* markers for \( \) \[ \]: control bytes that ftfy would delete anyway,
 * so real ones are dropped from the prompt before parsing */
#define ESC_OPEN_PAREN '\x01'
#define ESC_CLOSE_PAREN '\x02'
#define ESC_OPEN_BRACKET '\x03'
#define ESC_CLOSE_BRACKET '\x04'

typedef struct seg_list {
    sd_weighted_text *v;
    size_t n, cap;
} seg_list;

static int seg_add(seg_list *l, const char *s, size_t len, float w)
{
    if (len == 0) return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        sd_weighted_text *nv = realloc(l->v, cap * sizeof *nv);
        if (!nv) return -1;
        l->v = nv;
        l->cap = cap;
    }
    char *t = malloc(len + 1);
    if (!t) return -1;
    /* markers back to literal brackets */
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        t[i] = c == ESC_OPEN_PAREN ? '(' : c == ESC_CLOSE_PAREN ? ')' : c == ESC_OPEN_BRACKET ? '[' :
               c == ESC_CLOSE_BRACKET ? ']' : c;
    }
    t[len] = '\0';
    l->v[l->n].text = t;
    l->v[l->n].weight = w;
    l->n++;
    return 0;
}

/* Python float(text): optional whitespace, sign, digits (single '_'
 * between digits allowed), fraction, exponent; or inf/infinity/nan. */
static int python_float(const char *s, size_t len, double *out)
{
    char buf[64];
    while (len && isspace((unsigned char)*s)) { s++; len--; }
    while (len && isspace((unsigned char)s[len - 1])) len--;
    if (len == 0 || len >= sizeof buf) return -1;
    size_t k = 0, i = 0;
    if (s[i] == '+' || s[i] == '-') buf[k++] = s[i++];
    const char *word = s + i;
    size_t wl = len - i;
    if ((wl == 3 && strncasecmp(word, "inf", 3) == 0) || (wl == 8 && strncasecmp(word, "infinity", 8) == 0)) {
        *out = (k && buf[0] == '-') ? -INFINITY : INFINITY;
        return 0;
    }
    if (wl == 3 && strncasecmp(word, "nan", 3) == 0) {
        *out = NAN;
        return 0;
    }
    int digits = 0;
    bool exp = false, dot = false;
    for (; i < len; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9') { buf[k++] = c; digits++; }
        else if (c == '_' && i > 0 && i + 1 < len && isdigit((unsigned char)s[i - 1]) && isdigit((unsigned char)s[i + 1])) continue;
        else if (c == '.' && !dot && !exp) { buf[k++] = c; dot = true; }
        else if ((c == 'e' || c == 'E') && !exp && digits) {
            buf[k++] = c;
            exp = true;
            if (i + 1 < len && (s[i + 1] == '+' || s[i + 1] == '-')) buf[k++] = s[++i];
            if (i + 1 >= len || !isdigit((unsigned char)s[i + 1])) return -1;
        } else return -1;
    }
    if (!digits) return -1;
    buf[k] = '\0';
    char *end;
    *out = strtod(buf, &end);
    return *end ? -1 : 0;
}

static bool is_open(char c) { return c == '(' || c == '['; }
static bool is_close(char c) { return c == ')' || c == ']'; }

/* ComfyUI token_weights(string, current_weight) */
static int token_weights(const char *s, size_t len, double weight, seg_list *out, int depth)
{
    if (depth > 200) return seg_add(out, s, len, (float)weight);   /* absurd nesting: keep as text */
    /* parse_parentheses: top-level items, groups kept with their brackets */
    size_t i = 0, item_start = 0;
    int nesting = 0;
    for (; i <= len; i++) {
        bool at_end = i == len;
        char c = at_end ? 0 : s[i];
        size_t item_end = 0;
        bool emit = false;
        if (at_end) {
            item_end = len;
            emit = item_end > item_start;
        } else if (is_open(c)) {
            if (nesting == 0 && i > item_start) {
                item_end = i;
                emit = true;
            }
            nesting++;
        } else if (is_close(c)) {
            nesting--;
            if (nesting == 0) {
                item_end = i + 1;
                emit = true;
            }
        }
        if (!emit) continue;
        const char *x = s + item_start;
        size_t xl = item_end - item_start;
        if (xl >= 2 && x[0] == '(' && x[xl - 1] == ')') {
            const char *inner = x + 1;
            size_t il = xl - 2;
            double w = weight * 1.1;
            const char *colon = NULL;
            for (size_t k = il; k-- > 0;)
                if (inner[k] == ':') { colon = inner + k; break; }
            if (colon && colon > inner) {
                double v;
                if (python_float(colon + 1, il - (size_t)(colon + 1 - inner), &v) == 0) {
                    w = v;
                    il = (size_t)(colon - inner);
                }
            }
            if (token_weights(inner, il, w, out, depth + 1)) return -1;
        } else if (xl >= 2 && x[0] == '[' && x[xl - 1] == ']') {
            if (token_weights(x + 1, xl - 2, weight / 1.1, out, depth + 1)) return -1;
        } else if (seg_add(out, x, xl, (float)weight)) {
            return -1;
        }
        item_start = item_end;
    }
    return 0;
}

int sd_prompt_parse_weights(const char *prompt, sd_weighted_text **segs, size_t *n, char *err, size_t errlen)
{
    *segs = NULL;
    *n = 0;
    size_t len = strlen(prompt);
    char *s = malloc(len + 1);
    if (!s) goto oom;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        char c = prompt[i];
        if (c >= ESC_OPEN_PAREN && c <= ESC_CLOSE_BRACKET) continue;
        if (c == '\\' && i + 1 < len && strchr("()[]", prompt[i + 1])) {
            char e = prompt[++i];
            s[k++] = e == '(' ? ESC_OPEN_PAREN : e == ')' ? ESC_CLOSE_PAREN : e == '[' ? ESC_OPEN_BRACKET : ESC_CLOSE_BRACKET;
            continue;
        }
        s[k++] = c;
    }
    s[k] = '\0';
    seg_list out = {0};
    if (token_weights(s, k, 1.0, &out, 0)) {
        free(s);
        sd_weighted_text_free(out.v, out.n);
        goto oom;
    }
    free(s);
    *segs = out.v;
    *n = out.n;
    return 0;
oom:
    if (err && errlen) snprintf(err, errlen, "prompt: out of memory");
    return -1;
}

void sd_weighted_text_free(sd_weighted_text *segs, size_t n)
{
    for (size_t i = 0; i < n; i++) free(segs[i].text);
    free(segs);
}
