/* images-fs/shared: image keys, signed expiring URLs, content types, and the
 * error filler; the rules images-fs and images-db share, so a client or a
 * worker cannot tell the two providers apart:
 *   GET <public_url>/images/<key>?expires=<unix s>&sig=<hex>
 *   PUT <public_url>/upload/<key>?expires=<unix s>&sig=<hex>
 *   sig = hex(HMAC-SHA256(secret, METHOD "\n" key "\n" expires))
 * The method is signed, so a GET URL cannot upload and a PUT URL cannot
 * read. expires is canonical decimal (no leading zeros); a URL is valid up
 * to and including its expires second; upper-case hex is accepted;
 * signatures compare in constant time. Keys are [A-Za-z0-9._-]{1,128}, not
 * starting with '.', without "..": always a plain file name, never a path.
 *
 * Pure functions, no state: safe from any thread. Every pointer argument is
 * borrowed for the call; nothing returned needs freeing. Compiled into each
 * plugin that lists plugins/images-fs/shared/images_url.c (needs -lcrypto). */
#ifndef LIB_IMAGES_URL_H
#define LIB_IMAGES_URL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hn/types.h>

#define IMAGES_KEY_MAX 128
#define IMAGES_SIG_HEX 64
#define IMAGES_SECRET_MIN 16 /* characters a secret must have */
#define IMAGES_SECRET_MAX 256

/* true when key may name an image (see above). NULL is not a key. */
bool images_key_valid(const char *key);

/* out[IMAGES_SIG_HEX + 1]: the hex signature of one URL. */
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

/* "image/webp", "image/png", "image/jpeg", "image/gif" by the first bytes,
 * else "application/octet-stream". A static string. */
const char *images_content_type(const void *data, size_t len);

/* Fills err (may be NULL) and returns HN_ERROR. */
hn_rc images_fail(hn_error *err, int status, const char *rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* 400 InvalidImageKey with the key rules in the message; HN_ERROR. */
hn_rc images_bad_key(hn_error *err);

#endif
