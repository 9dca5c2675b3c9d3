/* text_normalize.c - see text_normalize.h. The rules are those of ftfy 6
 * (fix_text / fix_and_explain and its fixers), CPython's html.unescape,
 * str.lower and unicodedata.normalize("NFC"), re-implemented over the
 * generated tables of unicode_data.h (unicode_data_*.c). */
#include "text_normalize.h"

#include <stdlib.h>
#include <string.h>

#include "unicode_data.h"

/* ---- buffers ---------------------------------------------------------------- */
void sd_u32_free(sd_u32 *b)
{
    free(b->v);
    b->v = NULL;
    b->n = b->cap = 0;
}

static int reserve(sd_u32 *b, size_t n)
{
    if (n <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 16;
    while (cap < n) cap *= 2;
    uint32_t *nv = realloc(b->v, cap * sizeof *nv);
    if (!nv) return -1;
    b->v = nv;
    b->cap = cap;
    return 0;
}

int sd_u32_push(sd_u32 *b, uint32_t c)
{
    if (reserve(b, b->n + 1)) return -1;
    b->v[b->n++] = c;
    return 0;
}

static int push_utf8(sd_u32 *b, const char *s)
{
    return sd_utf8_decode(s, strlen(s), b);
}

/* Replaces b's contents with o's (o is consumed). */
static void take(sd_u32 *b, sd_u32 *o)
{
    free(b->v);
    *b = *o;
    memset(o, 0, sizeof *o);
}

static bool same(const sd_u32 *a, const sd_u32 *b)
{
    return a->n == b->n && (a->n == 0 || memcmp(a->v, b->v, a->n * sizeof *a->v) == 0);
}

static int copy(sd_u32 *dst, const sd_u32 *src)
{
    dst->n = 0;
    if (reserve(dst, src->n)) return -1;
    if (src->n) memcpy(dst->v, src->v, src->n * sizeof *src->v);
    dst->n = src->n;
    return 0;
}

/* ---- UTF-8 -------------------------------------------------------------------- */
int sd_utf8_decode(const char *str, size_t len, sd_u32 *out)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        uint32_t cp;
        int need;
        uint32_t min;
        if (c < 0x80) { cp = c; need = 0; min = 0; }
        else if (c >= 0xc2 && c <= 0xdf) { cp = c & 0x1f; need = 1; min = 0x80; }
        else if (c >= 0xe0 && c <= 0xef) { cp = c & 0x0f; need = 2; min = 0x800; }
        else if (c >= 0xf0 && c <= 0xf4) { cp = c & 0x07; need = 3; min = 0x10000; }
        else { if (sd_u32_push(out, 0xfffd)) return -1; i++; continue; }
        size_t j = 1;
        bool ok = true;
        for (; j <= (size_t)need; j++) {
            if (i + j >= len || (s[i + j] & 0xc0) != 0x80) { ok = false; break; }
            cp = (cp << 6) | (s[i + j] & 0x3f);
            /* reject overlongs / surrogates / > U+10FFFF as soon as the second byte shows it */
            if (j == 1) {
                if ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] > 0x9f) ||
                    (c == 0xf0 && s[i + 1] < 0x90) || (c == 0xf4 && s[i + 1] > 0x8f)) { ok = false; break; }
            }
        }
        if (!ok || cp < min) {
            /* one U+FFFD for the maximal valid prefix, like Python's "replace" */
            if (sd_u32_push(out, 0xfffd)) return -1;
            i += j > 1 ? j : 1;
            continue;
        }
        if (sd_u32_push(out, cp)) return -1;
        i += (size_t)need + 1;
    }
    return 0;
}

int sd_utf8_put(uint32_t c, unsigned char *o)
{
    if (c < 0x80) { o[0] = (unsigned char)c; return 1; }
    if (c < 0x800) { o[0] = (unsigned char)(0xc0 | (c >> 6)); o[1] = (unsigned char)(0x80 | (c & 0x3f)); return 2; }
    if (c < 0x10000) {
        o[0] = (unsigned char)(0xe0 | (c >> 12));
        o[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3f));
        o[2] = (unsigned char)(0x80 | (c & 0x3f));
        return 3;
    }
    o[0] = (unsigned char)(0xf0 | (c >> 18));
    o[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3f));
    o[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3f));
    o[3] = (unsigned char)(0x80 | (c & 0x3f));
    return 4;
}

int sd_utf8_encode(const uint32_t *v, size_t n, char **out, size_t *len)
{
    unsigned char *s = malloc(n * 4 + 1);
    if (!s) return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += (size_t)sd_utf8_put(v[i], s + k);
    s[k] = '\0';
    *out = (char *)s;
    if (len) *len = k;
    return 0;
}

/* ---- table lookups -------------------------------------------------------------- */
static bool in_ranges(const uint32_t (*r)[2], size_t n, uint32_t c)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < r[mid][0]) hi = mid;
        else if (c > r[mid][1]) lo = mid + 1;
        else return true;
    }
    return false;
}

bool sd_uc_is_letter(uint32_t c)
{
    if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
    return in_ranges(sd_uc_letter, sd_uc_letter_count, c);
}

bool sd_uc_is_number(uint32_t c)
{
    if (c < 0x80) return c >= '0' && c <= '9';
    return in_ranges(sd_uc_number, sd_uc_number_count, c);
}

bool sd_uc_is_space(uint32_t c) { return in_ranges(sd_uc_space, sd_uc_space_count, c); }

static uint32_t lower1(uint32_t c)
{
    if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    size_t lo = 0, hi = sd_uc_lower_count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (sd_uc_lower[mid][0] == c) return sd_uc_lower[mid][1];
        if (sd_uc_lower[mid][0] < c) lo = mid + 1;
        else hi = mid;
    }
    return c;
}

static const uint32_t *decomp_of(uint32_t c)
{
    size_t lo = 0, hi = sd_uc_decomp_count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (sd_uc_decomp[mid][0] == c) return sd_uc_decomp[mid];
        if (sd_uc_decomp[mid][0] < c) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static int ccc_of(uint32_t c)
{
    if (c < 0x300) return 0;
    size_t lo = 0, hi = sd_uc_ccc_count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < sd_uc_ccc[mid][0]) hi = mid;
        else if (c > sd_uc_ccc[mid][1]) lo = mid + 1;
        else return (int)sd_uc_ccc[mid][2];
    }
    return 0;
}

/* Hangul syllable constants (Unicode §3.12) */
enum { S_BASE = 0xAC00, L_BASE = 0x1100, V_BASE = 0x1161, T_BASE = 0x11A7, L_COUNT = 19, V_COUNT = 21,
       T_COUNT = 28, N_COUNT = V_COUNT * T_COUNT, S_COUNT = L_COUNT * N_COUNT };

static uint32_t compose_pair(uint32_t a, uint32_t b)
{
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE && b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    size_t lo = 0, hi = sd_uc_compose_count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint32_t *e = sd_uc_compose[mid];
        if (e[0] == a && e[1] == b) return e[2];
        if (e[0] < a || (e[0] == a && e[1] < b)) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

static int decompose_into(uint32_t c, sd_u32 *out, int depth)
{
    if (c >= S_BASE && c < S_BASE + S_COUNT) {
        uint32_t s = c - S_BASE;
        if (sd_u32_push(out, L_BASE + s / N_COUNT) || sd_u32_push(out, V_BASE + (s % N_COUNT) / T_COUNT)) return -1;
        if (s % T_COUNT && sd_u32_push(out, T_BASE + s % T_COUNT)) return -1;
        return 0;
    }
    const uint32_t *d = depth < 8 && c >= 0xC0 ? decomp_of(c) : NULL;
    if (!d) return sd_u32_push(out, c);
    if (decompose_into(d[1], out, depth + 1)) return -1;
    return d[2] ? decompose_into(d[2], out, depth + 1) : 0;
}

int sd_text_nfc(sd_u32 *b)
{
    bool plain = true;                   /* fast path: nothing below could change */
    for (size_t i = 0; i < b->n && plain; i++) plain = b->v[i] < 0xC0;
    if (plain) return 0;
    sd_u32 d = {0};
    for (size_t i = 0; i < b->n; i++)
        if (decompose_into(b->v[i], &d, 0)) { sd_u32_free(&d); return -1; }
    /* canonical ordering: stable sort of each run of non-starters by ccc */
    for (size_t i = 1; i < d.n; i++) {
        int cc = ccc_of(d.v[i]);
        if (cc == 0) continue;
        size_t j = i;
        while (j > 0 && ccc_of(d.v[j - 1]) > cc) {
            uint32_t t = d.v[j - 1];
            d.v[j - 1] = d.v[j];
            d.v[j] = t;
            j--;
        }
    }
    /* canonical composition */
    size_t out = 0, starter = (size_t)-1;
    int last_cc = -1;                    /* -1: nothing since the starter */
    for (size_t i = 0; i < d.n; i++) {
        uint32_t c = d.v[i];
        int cc = ccc_of(c);
        /* not blocked: nothing since the starter, or only lower classes */
        if (starter != (size_t)-1 && (last_cc == -1 || last_cc < cc)) {
            uint32_t comp = compose_pair(d.v[starter], c);
            if (comp) {
                d.v[starter] = comp;
                continue;
            }
        }
        if (cc == 0) {
            starter = out;
            last_cc = -1;
        } else {
            last_cc = cc;
        }
        d.v[out++] = c;
    }
    d.n = out;
    take(b, &d);
    return 0;
}

/* ---- lower case ------------------------------------------------------------------ */
static bool is_cased(uint32_t c)
{
    if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
    return in_ranges(sd_uc_cased, sd_uc_cased_count, c);
}

static bool is_case_ignorable(uint32_t c) { return in_ranges(sd_uc_case_ignorable, sd_uc_case_ignorable_count, c); }

/* CPython's handle_capital_sigma: final form when a cased letter precedes
 * (skipping case-ignorables) and none follows. */
static uint32_t lower_sigma(const sd_u32 *b, size_t i)
{
    size_t j = i;
    while (j > 0 && is_case_ignorable(b->v[j - 1])) j--;
    bool final_sigma = j > 0 && is_cased(b->v[j - 1]);
    if (final_sigma) {
        size_t k = i + 1;
        while (k < b->n && is_case_ignorable(b->v[k])) k++;
        final_sigma = k == b->n || !is_cased(b->v[k]);
    }
    return final_sigma ? 0x3C2 : 0x3C3;
}

int sd_text_lower(sd_u32 *b)
{
    sd_u32 o = {0};
    if (reserve(&o, b->n + 1)) return -1;
    for (size_t i = 0; i < b->n; i++) {
        uint32_t c = b->v[i];
        int rc;
        if (c == 0x130) rc = sd_u32_push(&o, 'i') || sd_u32_push(&o, 0x307);  /* I WITH DOT ABOVE */
        else if (c == 0x3A3) rc = sd_u32_push(&o, lower_sigma(b, i));
        else rc = sd_u32_push(&o, lower1(c));
        if (rc) { sd_u32_free(&o); return -1; }
    }
    take(b, &o);
    return 0;
}

int sd_text_whitespace_clean(sd_u32 *b)
{
    size_t out = 0;
    bool pending_space = false;
    for (size_t i = 0; i < b->n; i++) {
        if (sd_uc_is_space(b->v[i])) {
            pending_space = out > 0;     /* leading whitespace is stripped */
            continue;
        }
        if (pending_space) b->v[out++] = ' ';
        pending_space = false;
        b->v[out++] = b->v[i];
    }
    b->n = out;                          /* trailing whitespace dropped */
    return 0;
}

/* ---- HTML ------------------------------------------------------------------------- */
static const sd_uc_entity *entity_lookup(const char *name)
{
    size_t lo = 0, hi = sd_uc_html5_count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(sd_uc_html5[mid].name, name);
        if (c == 0) return &sd_uc_html5[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* cp1252 for 0x80..0x9F; the five undefined bytes map to themselves
 * ("sloppy" codec, and Python's html._invalid_charrefs). */
static const uint16_t cp1252_c1[32] = {
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178};

/* Python html._replace_charref for a numeric reference; appends the
 * result (possibly nothing). */
static int numeric_charref(uint64_t num, bool overflow, sd_u32 *o)
{
    if (overflow || num > 0x10FFFF || (num >= 0xD800 && num <= 0xDFFF)) return sd_u32_push(o, 0xFFFD);
    if (num == 0) return sd_u32_push(o, 0xFFFD);
    if (num == 0x0d) return sd_u32_push(o, '\r');
    if (num >= 0x80 && num <= 0x9f) return sd_u32_push(o, cp1252_c1[num - 0x80]);
    if ((num >= 0x1 && num <= 0x8) || (num >= 0xe && num <= 0x1f) || (num >= 0x7f && num <= 0x9f) ||
        (num >= 0xfdd0 && num <= 0xfdef) || num == 0xb || (num & 0xfffe) == 0xfffe)
        return 0;                        /* _invalid_codepoints: dropped */
    return sd_u32_push(o, (uint32_t)num);
}

static bool is_hex(uint32_t c) { return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }
static bool is_digit(uint32_t c) { return c >= '0' && c <= '9'; }
static bool is_alnum_ascii(uint32_t c) { return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'); }

/* Parses "#123" / "#x1F" at v[i..]; returns chars consumed (without the
 * optional ';'), 0 if none. */
static size_t parse_numeric(const uint32_t *v, size_t n, size_t i, uint64_t *num, bool *overflow)
{
    if (i >= n || v[i] != '#') return 0;
    size_t j = i + 1;
    bool hex = j < n && (v[j] == 'x' || v[j] == 'X');
    if (hex) j++;
    size_t start = j;
    *num = 0;
    *overflow = false;
    while (j < n && (hex ? is_hex(v[j]) : is_digit(v[j]))) {
        uint32_t c = v[j];
        uint32_t d = is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10;
        if (*num > 0x10FFFF) *overflow = true;
        else *num = *num * (hex ? 16 : 10) + d;
        j++;
    }
    return j > start ? j - i : 0;
}

int sd_text_html_unescape(sd_u32 *b)
{
    bool any = false;
    for (size_t i = 0; i < b->n && !any; i++) any = b->v[i] == '&';
    if (!any) return 0;
    sd_u32 o = {0};
    size_t i = 0;
    while (i < b->n) {
        if (b->v[i] != '&') {
            if (sd_u32_push(&o, b->v[i++])) goto oom;
            continue;
        }
        uint64_t num;
        bool ovf;
        size_t k = parse_numeric(b->v, b->n, i + 1, &num, &ovf);
        if (k) {
            size_t end = i + 1 + k;
            if (end < b->n && b->v[end] == ';') end++;
            if (numeric_charref(num, ovf, &o)) goto oom;
            i = end;
            continue;
        }
        /* named: [^\t\n\f <&#;]{1,32};? */
        size_t j = i + 1;
        while (j < b->n && j - (i + 1) < 32) {
            uint32_t c = b->v[j];
            if (c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' || c == ';') break;
            j++;
        }
        if (j == i + 1) {
            if (sd_u32_push(&o, b->v[i++])) goto oom;
            continue;
        }
        if (j < b->n && b->v[j] == ';') j++;
        /* entity names are ASCII: only the ASCII prefix of the candidate can
         * match (whole, or - Python's legacy rule - its longest prefix of at
         * least 2 characters that is a known name) */
        char name[40];
        size_t nl = 0, ascii_len = 0;
        bool ascii = true;
        for (size_t q = i + 1; q < j; q++) {
            if (b->v[q] >= 0x80) ascii = false;
            if (ascii) ascii_len++;
            name[nl++] = (char)(b->v[q] < 0x80 ? b->v[q] : '?');
        }
        name[nl] = '\0';
        const sd_uc_entity *e = ascii ? entity_lookup(name) : NULL;
        size_t used = j;
        for (size_t x = nl - 1; !e && x >= 2; x--) {
            if (x <= ascii_len) {
                char save = name[x];
                name[x] = '\0';
                e = entity_lookup(name);
                name[x] = save;
                if (e) used = i + 1 + x;
            }
        }
        if (e) {
            if (push_utf8(&o, e->utf8)) goto oom;
            i = used;
        } else {
            if (sd_u32_push(&o, b->v[i++])) goto oom;  /* '&' stays; the rest copies on */
        }
    }
    take(b, &o);
    return 0;
oom:
    sd_u32_free(&o);
    return -1;
}

/* ftfy's unescape_html: "&#?[0-9A-Za-z]{1,24};" - named entities that end
 * in ';', numeric ones only when Python decodes them completely. */
static int ftfy_unescape_html(sd_u32 *b)
{
    sd_u32 o = {0};
    size_t i = 0;
    while (i < b->n) {
        if (b->v[i] == '&') {
            size_t j = i + 1;
            bool hash = j < b->n && b->v[j] == '#';
            if (hash) j++;
            size_t start = j;
            while (j < b->n && j - start < 25 && is_alnum_ascii(b->v[j])) j++;
            size_t len = j - start;
            if (len >= 1 && len <= 24 && j < b->n && b->v[j] == ';') {
                size_t end = j + 1;
                bool done = false;
                if (!hash) {
                    char name[32];
                    for (size_t q = 0; q < len; q++) name[q] = (char)b->v[start + q];
                    name[len] = ';';
                    name[len + 1] = '\0';
                    const sd_uc_entity *e = entity_lookup(name);
                    if (e) {
                        if (push_utf8(&o, e->utf8)) goto oom;
                        done = true;
                    }
                } else {
                    uint64_t num;
                    bool ovf;
                    size_t k = parse_numeric(b->v, b->n, i + 1, &num, &ovf);
                    if (k && i + 1 + k == j) {       /* decoded up to the ';' */
                        if (numeric_charref(num, ovf, &o)) goto oom;
                        done = true;
                    }
                }
                if (done) {
                    i = end;
                    continue;
                }
            }
        }
        if (sd_u32_push(&o, b->v[i++])) goto oom;
    }
    take(b, &o);
    return 0;
oom:
    sd_u32_free(&o);
    return -1;
}

/* ---- ftfy: mojibake ------------------------------------------------------------------ */
/* The byte a code point encodes to in Latin-1 (sloppy=false) or in
 * sloppy-windows-1252 (sloppy=true); -1 when it cannot. */
static int encode_1byte(uint32_t c, bool sloppy)
{
    if (c < 0x80) return (int)c;
    if (!sloppy) return c < 0x100 ? (int)c : -1;
    if (c >= 0xA0 && c < 0x100) return (int)c;
    for (int k = 0; k < 32; k++)
        if (cp1252_c1[k] == c) return 0x80 + k;
    return -1;
}

/* Length of the valid UTF-8 sequence starting at bytes[i], or 0. */
static size_t utf8_seq_len(const unsigned char *s, size_t n, size_t i)
{
    unsigned char c = s[i];
    size_t need;
    if (c >= 0xc2 && c <= 0xdf) need = 1;
    else if (c >= 0xe0 && c <= 0xef) need = 2;
    else if (c >= 0xf0 && c <= 0xf4) need = 3;
    else return 0;
    for (size_t j = 1; j <= need; j++)
        if (i + j >= n || (s[i + j] & 0xc0) != 0x80) return 0;
    unsigned char d = s[i + 1];
    if ((c == 0xe0 && d < 0xa0) || (c == 0xed && d > 0x9f) || (c == 0xf0 && d < 0x90) || (c == 0xf4 && d > 0x8f))
        return 0;
    return need + 1;
}

/* Encodes b as single bytes; false if some character cannot be. */
static bool encode_all(const sd_u32 *b, bool sloppy, unsigned char *bytes)
{
    for (size_t i = 0; i < b->n; i++) {
        int e = encode_1byte(b->v[i], sloppy);
        if (e < 0) return false;
        bytes[i] = (unsigned char)e;
    }
    return true;
}

/* Whether the text holds at least one multi-byte UTF-8 sequence spelled in
 * Latin-1/Windows-1252 characters: ftfy's "is_bad", reduced to the
 * pattern that this module can repair. */
static bool looks_like_mojibake(const sd_u32 *b)
{
    for (size_t i = 0; i + 1 < b->n; i++) {
        int lead = encode_1byte(b->v[i], true);
        if (lead < 0xc2 || lead > 0xf4) continue;
        unsigned char seq[4];
        size_t k = 0;
        for (; k < 4 && i + k < b->n; k++) {
            int e = encode_1byte(b->v[i + k], true);
            if (e < 0) break;
            seq[k] = (unsigned char)e;
        }
        if (k >= 2 && utf8_seq_len(seq, k, 0)) return true;
    }
    return false;
}

/* Strict UTF-8 decode of bytes; false if invalid. */
static bool decode_strict(const unsigned char *s, size_t n, sd_u32 *out)
{
    out->n = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] < 0x80) {
            if (sd_u32_push(out, s[i])) return false;
            i++;
            continue;
        }
        size_t l = utf8_seq_len(s, n, i);
        if (!l) return false;
        sd_u32 one = {0};
        if (sd_utf8_decode((const char *)s + i, l, &one) || one.n != 1) { sd_u32_free(&one); return false; }
        int rc = sd_u32_push(out, one.v[0]);
        sd_u32_free(&one);
        if (rc) return false;
        i += l;
    }
    return true;
}

/* One step of ftfy's fix_encoding. Returns 1 if b changed, 0 if not, -1. */
static int fix_encoding_step(sd_u32 *b)
{
    bool ascii = true;
    for (size_t i = 0; i < b->n && ascii; i++) ascii = b->v[i] < 0x80;
    if (ascii || !looks_like_mojibake(b)) return 0;
    unsigned char *bytes = malloc(b->n ? b->n : 1);
    if (!bytes) return -1;
    sd_u32 fixed = {0};
    for (int sloppy = 0; sloppy <= 1; sloppy++) {
        if (encode_all(b, sloppy, bytes) && decode_strict(bytes, b->n, &fixed)) {
            free(bytes);
            take(b, &fixed);
            return 1;
        }
    }
    free(bytes);
    /* decode_inconsistent_utf8: repair each mojibake sequence on its own */
    bool changed = false;
    for (size_t i = 0; i < b->n; i++) {
        int lead = encode_1byte(b->v[i], true);
        if (lead >= 0xc2 && lead <= 0xf4) {
            unsigned char seq[4];
            size_t k = 0;
            for (; k < 4 && i + k < b->n; k++) {
                int e = encode_1byte(b->v[i + k], true);
                if (e < 0) break;
                seq[k] = (unsigned char)e;
            }
            size_t l = k >= 2 ? utf8_seq_len(seq, k, 0) : 0;
            if (l) {
                sd_u32 one = {0};
                if (sd_utf8_decode((const char *)seq, l, &one)) { sd_u32_free(&fixed); return -1; }
                if (sd_u32_push(&fixed, one.v[0])) { sd_u32_free(&one); sd_u32_free(&fixed); return -1; }
                sd_u32_free(&one);
                i += l - 1;
                changed = true;
                continue;
            }
        }
        if (sd_u32_push(&fixed, b->v[i])) { sd_u32_free(&fixed); return -1; }
    }
    if (changed) take(b, &fixed);
    else sd_u32_free(&fixed);
    return changed ? 1 : 0;
}

static int fix_encoding(sd_u32 *b)
{
    for (int step = 0; step < 16; step++) {   /* ftfy repeats until stable */
        int rc = fix_encoding_step(b);
        if (rc <= 0) return rc;
    }
    return 0;
}

/* ---- ftfy: the per-character fixers ---------------------------------------------------- */
static const struct { uint32_t cp; const char *to; } ligatures[] = {
    {0x132, "IJ"}, {0x133, "ij"}, {0x149, "\xca\xbcn"}, {0x1C4, "D\xc5\xbd"}, {0x1C5, "D\xc5\xbe"},
    {0x1C6, "d\xc5\xbe"}, {0x1C7, "LJ"}, {0x1C8, "Lj"}, {0x1C9, "lj"}, {0x1CA, "NJ"}, {0x1CB, "Nj"},
    {0x1CC, "nj"}, {0x1F1, "DZ"}, {0x1F2, "Dz"}, {0x1F3, "dz"}, {0xFB00, "ff"}, {0xFB01, "fi"},
    {0xFB02, "fl"}, {0xFB03, "ffi"}, {0xFB04, "ffl"}, {0xFB05, "\xc5\xbft"}, {0xFB06, "st"},
};

static const char *width_of(uint32_t c)
{
    if (c != 0x3000 && (c < 0xFF01 || c > 0xFFEF)) return NULL;
    for (size_t i = 0; i < sd_uc_width_count; i++)
        if (sd_uc_width[i].cp == c) return sd_uc_width[i].utf8;
    return NULL;
}

static bool is_control_removed(uint32_t c)
{
    return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
           c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

/* fix_c1_controls, fix_latin_ligatures, fix_character_width, uncurl_quotes,
 * fix_line_breaks, fix_surrogates (nothing to do on code points),
 * remove_terminal_escapes, remove_control_chars - in that order, as
 * separate passes where order matters. */
static int char_fixers(sd_u32 *b)
{
    sd_u32 o = {0};
    /* pass 1: C1 controls, ligatures, width, quotes */
    for (size_t i = 0; i < b->n; i++) {
        uint32_t c = b->v[i];
        int rc = 0;
        if (c >= 0x80 && c <= 0x9f) c = cp1252_c1[c - 0x80];
        const char *rep = NULL;
        for (size_t k = 0; k < sizeof ligatures / sizeof ligatures[0] && !rep; k++)
            if (ligatures[k].cp == c) rep = ligatures[k].to;
        if (!rep) rep = width_of(c);
        if (rep) rc = push_utf8(&o, rep);
        else if (c == 0x2BC || (c >= 0x2018 && c <= 0x201B)) rc = sd_u32_push(&o, '\'');
        else if (c >= 0x201C && c <= 0x201F) rc = sd_u32_push(&o, '"');
        else rc = sd_u32_push(&o, c);
        if (rc) goto oom;
    }
    take(b, &o);
    /* pass 2: line breaks (uncurl ran first, as in ftfy; the width map can
     * produce no line breaks, so one pass suffices) */
    for (size_t i = 0; i < b->n; i++) {
        uint32_t c = b->v[i];
        int rc;
        if (c == '\r') {
            rc = sd_u32_push(&o, '\n');
            if (i + 1 < b->n && b->v[i + 1] == '\n') i++;
        } else if (c == 0x2028 || c == 0x2029 || c == 0x85) {
            rc = sd_u32_push(&o, '\n');
        } else {
            rc = sd_u32_push(&o, c);
        }
        if (rc) goto oom;
    }
    take(b, &o);
    /* pass 3: terminal escapes  \033\[((?:\d|;)*)([a-zA-Z]) */
    for (size_t i = 0; i < b->n; i++) {
        if (b->v[i] == 0x1b && i + 1 < b->n && b->v[i + 1] == '[') {
            size_t j = i + 2;
            while (j < b->n && (is_digit(b->v[j]) || b->v[j] == ';')) j++;
            if (j < b->n && ((b->v[j] | 0x20) >= 'a' && (b->v[j] | 0x20) <= 'z')) {
                i = j;
                continue;
            }
        }
        if (sd_u32_push(&o, b->v[i])) goto oom;
    }
    take(b, &o);
    /* pass 4: control characters */
    size_t out = 0;
    for (size_t i = 0; i < b->n; i++)
        if (!is_control_removed(b->v[i])) b->v[out++] = b->v[i];
    b->n = out;
    return 0;
oom:
    sd_u32_free(&o);
    return -1;
}

/* fix_and_explain on one segment, until nothing changes. */
static int fix_segment(sd_u32 *b, bool unescape)
{
    sd_u32 before = {0};
    for (int round = 0; round < 32; round++) {
        if (copy(&before, b)) goto oom;
        if (unescape && ftfy_unescape_html(b)) goto oom;
        if (fix_encoding(b)) goto oom;
        if (char_fixers(b)) goto oom;
        if (sd_text_nfc(b)) goto oom;
        if (same(&before, b)) break;
    }
    sd_u32_free(&before);
    return 0;
oom:
    sd_u32_free(&before);
    return -1;
}

int sd_text_ftfy(sd_u32 *b)
{
    sd_u32 out = {0}, seg = {0};
    bool unescape = true;                 /* "auto": off for good once a segment has '<' */
    size_t pos = 0;
    while (pos < b->n) {
        size_t end = pos;
        while (end < b->n && b->v[end] != '\n') end++;
        if (end < b->n) end++;            /* the segment keeps its '\n' */
        seg.n = 0;
        for (size_t i = pos; i < end; i++) {
            if (b->v[i] == '<') unescape = false;
            if (sd_u32_push(&seg, b->v[i])) goto oom;
        }
        if (fix_segment(&seg, unescape)) goto oom;
        for (size_t i = 0; i < seg.n; i++)
            if (sd_u32_push(&out, seg.v[i])) goto oom;
        pos = end;
    }
    sd_u32_free(&seg);
    take(b, &out);
    return 0;
oom:
    sd_u32_free(&seg);
    sd_u32_free(&out);
    return -1;
}
