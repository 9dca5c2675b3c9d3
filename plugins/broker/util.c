/* broker: small helpers (time, ids, seeds, rounding, base64, errors, auth). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "broker.h"

int64_t br_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fill_random(void *buf, size_t len) {
    /* Request ids are capabilities (check/status/cancel need nothing else),
     * so they come from the kernel's CSPRNG. */
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t got = getrandom(p, len, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            /* getrandom cannot fail on Linux >= 3.17 with a valid buffer;
             * fall back to something rather than a fixed value */
            for (size_t i = 0; i < len; i++)
                p[i] = (unsigned char)(rand() >> 7);
            return;
        }
        p += got;
        len -= (size_t)got;
    }
}

void br_uuid4(char out[BR_ID_LEN]) {
    unsigned char u[16];
    fill_random(u, sizeof(u));
    u[6] = (unsigned char)((u[6] & 0x0f) | 0x40);
    u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
    static const char hex[] = "0123456789abcdef";
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[u[i] >> 4];
        out[o++] = hex[u[i] & 15];
    }
    out[o] = '\0';
}

bool br_uuid_parse(const char *s, char out[BR_ID_LEN]) {
    if (!s || strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
            out[i] = c;
        } else {
            if (!isxdigit((unsigned char)c))
                return false;
            out[i] = (char)tolower((unsigned char)c);
        }
    }
    out[36] = '\0';
    return true;
}

uint32_t br_random_u32(void) {
    uint32_t v;
    fill_random(&v, sizeof(v));
    return v;
}

int64_t br_seed_reduce(int64_t v) {
    if (v < 0)
        v = v == INT64_MIN ? INT64_MAX : -v;
    while (v >= ((int64_t)1 << 32))
        v >>= 32;
    return v;
}

/* Is text a Python int() literal: optional spaces, sign, digits with single
 * underscores between them? Writes the digits (no sign, no underscores). */
static bool python_int_digits(const char *text, char **digits) {
    const char *p = text;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '+' || *p == '-')
        p++;
    size_t len = strlen(p);
    char *d = malloc(len + 1);
    if (!d)
        return false;
    size_t n = 0;
    bool last_digit = false;
    for (; *p && !isspace((unsigned char)*p); p++) {
        if (isdigit((unsigned char)*p)) {
            d[n++] = *p;
            last_digit = true;
        } else if (*p == '_' && last_digit && isdigit((unsigned char)p[1])) {
            last_digit = false;
        } else {
            free(d);
            return false;
        }
    }
    while (isspace((unsigned char)*p))
        p++;
    if (*p || n == 0) {
        free(d);
        return false;
    }
    d[n] = '\0';
    *digits = d;
    return true;
}

int64_t br_seed_from_text(const char *text) {
    /* The value is reduced by dropping 32 low bits while it is >= 2^32, which
     * leaves exactly its most significant non-zero 32-bit limb. */
    char *digits = NULL;
    /* decimal seeds longer than this take the bytes path: the limb arithmetic
     * is quadratic and a seed is no place for megabytes of digits */
    if (strlen(text) <= 20000 && python_int_digits(text, &digits)) {
        size_t nd = strlen(digits);
        size_t cap = nd / 9 + 2;
        uint32_t *limbs = calloc(cap, sizeof(uint32_t));
        size_t nl = 0;
        if (!limbs) {
            free(digits);
            return 0;
        }
        for (size_t i = 0; i < nd; i++) {
            uint64_t carry = (uint64_t)(digits[i] - '0');
            for (size_t k = 0; k < nl; k++) {
                uint64_t v = (uint64_t)limbs[k] * 10u + carry;
                limbs[k] = (uint32_t)v;
                carry = v >> 32;
            }
            if (carry)
                limbs[nl++] = (uint32_t)carry;
        }
        int64_t top = 0;
        for (size_t k = nl; k > 0; k--)
            if (limbs[k - 1]) {
                top = limbs[k - 1];
                break;
            }
        free(limbs);
        free(digits);
        return top;
    }
    /* int.from_bytes(text.encode(), "little"): the top non-zero limb is made
     * of the last bytes of the text */
    const unsigned char *u = (const unsigned char *)text;
    size_t len = strlen(text);
    while (len > 0 && u[len - 1] == 0)
        len--;
    if (len == 0)
        return 0;
    size_t top_start = ((len - 1) / 4) * 4;
    uint32_t v = 0;
    for (size_t i = len; i > top_start; i--)
        v = (v << 8) | u[i - 1];
    return v;
}

double br_round(double v, int digits) {
    /* Python rounds the exact decimal value of the double, half to even:
     * round(2.675, 2) is 2.67 because 2.675 is really 2.67499999... glibc's
     * printf rounds the same exact value the same way; v * 100 would not. */
    if (!isfinite(v) || fabs(v) > 1e15)
        return v;
    char buf[64];
    snprintf(buf, sizeof(buf), "%.*f", digits, v);
    return strtod(buf, NULL);
}

char *br_strdup(const char *s) {
    return s ? strdup(s) : NULL;
}

char *br_lower(const char *s) {
    char *d = br_strdup(s);
    if (d)
        for (char *p = d; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    return d;
}

char *br_b64_encode(const void *data, size_t len) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *in = data;
    size_t olen = 4 * ((len + 2) / 3);
    char *out = malloc(olen + 1);
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
        out[o++] = tbl[v >> 18];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = tbl[(v >> 6) & 63];
        out[o++] = tbl[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        out[o++] = tbl[v >> 18];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return out;
}

static int b64_val(unsigned char c) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

void *br_b64_decode(const char *text, size_t text_len, size_t *out_len) {
    unsigned char *out = malloc(text_len / 4 * 3 + 4);
    if (!out)
        return NULL;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    for (size_t i = 0; i < text_len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '\n' || c == '\r' || c == ' ' || c == '\t')
            continue;
        if (c == '=') {
            pad++;
            continue;
        }
        int v = b64_val(c);
        if (v < 0 || pad > 0) { /* junk, or data after padding */
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (bits >= 6 || pad > 2) { /* a lone 6-bit group cannot encode a byte */
        free(out);
        return NULL;
    }
    *out_len = o;
    return out;
}

void br_fail(broker *b, hn_request *req, int status, const char *rc, const char *fmt, ...) {
    hn_error err;
    memset(&err, 0, sizeof(err));
    err.status = status;
    snprintf(err.rc, sizeof(err.rc), "%s", rc);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.message, sizeof(err.message), fmt, ap);
    va_end(ap);
    b->api->respond_error(req, &err);
}

hn_rc br_authenticate(broker *b, hn_request *req, hn_user *user, hn_error *err) {
    const char *key = b->api->req_header(req, "apikey");
    memset(user, 0, sizeof(*user));
    user->size = sizeof(*user);
    user->concurrency = 30;
    memset(err, 0, sizeof(*err));
    hn_rc rc = hn_run_http_authenticate(b->api, req, key, user, err);
    if (rc == HN_OK || rc == HN_DONE)
        return HN_OK;
    if (rc == HN_ERROR && err->status)
        return HN_ERROR;
    b->api->error(err, 401, "InvalidAPIKey",
                  "No user matching sent API Key. Have you remembered to register at "
                  "https://stablehorde.net/register ?");
    return HN_ERROR;
}

bool br_jbool(const json_t *o, const char *key, bool def) {
    const json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

long long br_jint(const json_t *o, const char *key, long long def) {
    const json_t *v = json_object_get(o, key);
    if (json_is_integer(v))
        return json_integer_value(v);
    if (json_is_real(v))
        return (long long)json_real_value(v);
    return def;
}

double br_jnum(const json_t *o, const char *key, double def) {
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : def;
}

const char *br_jstr(const json_t *o, const char *key) {
    return json_string_value(json_object_get(o, key));
}

bool br_hooked(broker *b, unsigned hook_id) {
    size_t n = 0;
    b->api->hook_handlers(hook_id, &n);
    return n > 0;
}
