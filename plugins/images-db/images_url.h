/* images-db: image keys and signed, expiring URLs.
 *
 * The same rules as images-fs (plugins/images-fs/README.md), so a client or
 * worker cannot tell the two apart:
 *   GET <public_url>/images/<key>?expires=<unix s>&sig=<hex>
 *   PUT <public_url>/upload/<key>?expires=<unix s>&sig=<hex>
 *   sig = hex(HMAC-SHA256(secret, METHOD "\n" key "\n" expires))
 * expires is canonical decimal (no leading zeros); a URL is valid up to and
 * including its expires second; upper-case hex is accepted; signatures
 * compare in constant time. Keys are [A-Za-z0-9._-]{1,128}, not starting
 * with '.', without "..".
 *
 * Pure functions: safe from any thread. */
#ifndef IMAGES_URL_H
#define IMAGES_URL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IMAGES_KEY_MAX 128
#define IMAGES_SIG_HEX 64
#define IMAGES_SECRET_MIN 16
#define IMAGES_SECRET_MAX 256

bool images_key_valid(const char *key);

/* out[IMAGES_SIG_HEX + 1] */
void images_sign(const char *secret, const char *method, const char *key, int64_t expires,
                 char out[IMAGES_SIG_HEX + 1]);

typedef enum images_sig_rc {
    IMAGES_SIG_OK,
    IMAGES_SIG_BAD,     /* missing, malformed or not ours */
    IMAGES_SIG_EXPIRED  /* ours, but expires < now */
} images_sig_rc;

/* Checks the query values of a signed URL (either may be NULL) at time now. */
images_sig_rc images_verify(const char *secret, const char *method, const char *key,
                            const char *expires, const char *sig, int64_t now);

/* "image/webp", "image/png", "image/jpeg", "image/gif" by the first bytes, else
 * "application/octet-stream" (the same sniffing as images-fs). */
const char *images_content_type(const void *data, size_t len);

#endif
