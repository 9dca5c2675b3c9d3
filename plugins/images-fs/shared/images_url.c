/* images-fs/shared: key rules, URL signatures, content types (see images_url.h). */
#include "images_url.h"

#include <hn/error.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

bool images_key_valid(const char *key) {
    if (!key || !key[0] || key[0] == '.' || strstr(key, ".."))
        return false;
    size_t n = 0;
    for (const char *p = key; *p; p++, n++) {
        char c = *p;
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok || n >= IMAGES_KEY_MAX)
            return false;
    }
    return true;
}

void images_sign(const char *secret, const char *method, const char *key, int64_t expires,
                 char out[IMAGES_SIG_HEX + 1]) {
    char msg[IMAGES_KEY_MAX + 64];
    int n = snprintf(msg, sizeof msg, "%s\n%s\n%" PRId64, method, key, expires);
    if (n < 0 || (size_t)n >= sizeof msg)
        n = (int)sizeof msg - 1; /* keys are at most 128 characters: never */
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)msg, (size_t)n, md,
         &md_len);
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[IMAGES_SIG_HEX] = '\0';
}

images_sig_rc images_verify(const char *secret, const char *method, const char *key,
                            const char *expires, const char *sig, int64_t now) {
    if (!expires || !sig || strlen(sig) != IMAGES_SIG_HEX)
        return IMAGES_SIG_BAD;
    size_t n = strlen(expires);
    if (n == 0 || n > 15)
        return IMAGES_SIG_BAD;
    for (size_t i = 0; i < n; i++) {
        if (expires[i] < '0' || expires[i] > '9')
            return IMAGES_SIG_BAD;
    }
    int64_t when = strtoll(expires, NULL, 10);
    /* only the canonical decimal verifies: "0123" and "123" must not both */
    char canon[24];
    snprintf(canon, sizeof canon, "%" PRId64, when);
    if (strcmp(canon, expires) != 0)
        return IMAGES_SIG_BAD;
    char want[IMAGES_SIG_HEX + 1], got[IMAGES_SIG_HEX + 1];
    images_sign(secret, method, key, when, want);
    for (size_t i = 0; i < IMAGES_SIG_HEX; i++) /* accept upper-case hex too */
        got[i] = (char)((sig[i] >= 'A' && sig[i] <= 'F') ? sig[i] - 'A' + 'a' : sig[i]);
    got[IMAGES_SIG_HEX] = '\0';
    if (CRYPTO_memcmp(want, got, IMAGES_SIG_HEX) != 0)
        return IMAGES_SIG_BAD;
    return when < now ? IMAGES_SIG_EXPIRED : IMAGES_SIG_OK;
}

const char *images_content_type(const void *data, size_t len) {
    const unsigned char *b = data;
    if (len >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0)
        return "image/webp";
    if (len >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0)
        return "image/png";
    if (len >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff)
        return "image/jpeg";
    if (len >= 6 && (memcmp(b, "GIF87a", 6) == 0 || memcmp(b, "GIF89a", 6) == 0))
        return "image/gif";
    return "application/octet-stream";
}

hn_rc images_fail(hn_error *err, int status, const char *rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    hn_rc r = hn_error_setv(err, status, rc, fmt, ap);
    va_end(ap);
    return r;
}

hn_rc images_bad_key(hn_error *err) {
    return images_fail(err, 400, "InvalidImageKey",
                       "image keys are 1 to 128 of A-Z a-z 0-9 . _ -, not starting with '.' "
                       "and without '..'");
}
