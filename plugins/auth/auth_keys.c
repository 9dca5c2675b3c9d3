/* auth: API key generation, hashing and verification (see auth_keys.h). */
#include "auth_keys.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

static const char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

bool auth_random_bytes(void *buf, size_t n) {
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        p += got;
        n -= (size_t)got;
    }
    return true;
}

bool auth_key_generate(char out[AUTH_KEY_LEN + 1]) {
    unsigned char r[AUTH_KEY_LEN];
    if (!auth_random_bytes(r, sizeof r))
        return false;
    /* 256 is a multiple of 64, so `& 63` keeps every character uniform */
    for (int i = 0; i < AUTH_KEY_LEN; i++)
        out[i] = alphabet[r[i] & 63];
    out[AUTH_KEY_LEN] = '\0';
    return true;
}

static void to_hex(const unsigned char *b, size_t n, char *out) {
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool auth_salt_generate(char salt_hex[AUTH_SALT_HEX + 1]) {
    unsigned char salt[AUTH_SALT_BYTES];
    if (!auth_random_bytes(salt, sizeof salt))
        return false;
    to_hex(salt, sizeof salt, salt_hex);
    return true;
}

bool auth_key_well_formed(const char *s) {
    if (!s)
        return false;
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok || n >= AUTH_KEY_LEN)
            return false;
    }
    return n == AUTH_KEY_LEN;
}

void auth_key_id(const char *key, char id[AUTH_KEY_ID_LEN + 1]) {
    memcpy(id, key, AUTH_KEY_ID_LEN);
    id[AUTH_KEY_ID_LEN] = '\0';
}

bool auth_key_hash(const char *salt_hex, const char *key, char hash_hex[AUTH_HASH_HEX + 1]) {
    if (!salt_hex || strlen(salt_hex) != AUTH_SALT_HEX || !key)
        return false;
    size_t klen = strlen(key);
    if (klen > 256)
        return false;
    unsigned char buf[AUTH_SALT_BYTES + 256];
    for (int i = 0; i < AUTH_SALT_BYTES; i++) {
        int hi = hex_value(salt_hex[2 * i]), lo = hex_value(salt_hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        buf[i] = (unsigned char)(hi << 4 | lo);
    }
    memcpy(buf + AUTH_SALT_BYTES, key, klen);
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(buf, AUTH_SALT_BYTES + klen, md);
    OPENSSL_cleanse(buf, sizeof buf);
    to_hex(md, sizeof md, hash_hex);
    return true;
}

bool auth_key_verify(const char *key, const char *salt_hex, const char *hash_hex) {
    char got[AUTH_HASH_HEX + 1];
    if (!hash_hex || strlen(hash_hex) != AUTH_HASH_HEX || !auth_key_hash(salt_hex, key, got))
        return false;
    return CRYPTO_memcmp(got, hash_hex, AUTH_HASH_HEX) == 0;
}
