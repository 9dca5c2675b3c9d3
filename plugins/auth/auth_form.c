/* auth: form decoding and HTML escaping (see auth_form.h). */
#include "auth_form.h"

#include <string.h>

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes src[0..n) into out; the same rules for names and values. */
static auth_form_rc decode(const char *src, size_t n, char *out, size_t out_size) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)src[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (i + 2 >= n) /* needs two hex digits after it */
                return AUTH_FORM_MALFORMED;
            int hi = hexval(src[i + 1]), lo = hexval(src[i + 2]);
            if (hi < 0 || lo < 0)
                return AUTH_FORM_MALFORMED;
            c = hi << 4 | lo;
            i += 2;
        }
        if (c == 0)
            return AUTH_FORM_MALFORMED;
        if (o + 1 >= out_size)
            return AUTH_FORM_TOO_LONG;
        out[o++] = (char)c;
    }
    if (out_size == 0)
        return AUTH_FORM_TOO_LONG;
    out[o] = '\0';
    return AUTH_FORM_OK;
}

auth_form_rc auth_form_field(const char *body, size_t len, const char *name, char *out,
                             size_t out_size) {
    size_t i = 0;
    while (body && i < len) {
        size_t end = i;
        while (end < len && body[end] != '&')
            end++;
        const char *eq = memchr(body + i, '=', end - i);
        size_t key_len = eq ? (size_t)(eq - (body + i)) : end - i;
        char key[64];
        if (decode(body + i, key_len, key, sizeof key) == AUTH_FORM_OK && strcmp(key, name) == 0) {
            if (!eq)
                return decode("", 0, out, out_size);
            return decode(eq + 1, (size_t)(body + end - (eq + 1)), out, out_size);
        }
        i = end + 1;
    }
    return AUTH_FORM_ABSENT;
}

void auth_html_write(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}
