/* images-fs: signed, expiring URLs and the node secret they are signed with.
 *
 * sig = hex(HMAC-SHA256(secret, METHOD "\n" key "\n" expires)) where expires
 * is unix seconds in decimal. The method is part of what is signed, so a GET
 * URL cannot be used to upload and a PUT URL cannot be used to read. The
 * secret is the node's: config `secret`, or 32 random bytes (hex) generated
 * once into <data_dir>/images.secret with mode 0600. Nothing here keeps state
 * between calls. */
#ifndef IMAGES_SIGN_H
#define IMAGES_SIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hn/types.h>

#define IMAGES_SIG_HEX 64
#define IMAGES_SECRET_MIN 16  /* characters a configured secret must have */
#define IMAGES_SECRET_MAX 256

/* out[IMAGES_SIG_HEX + 1] */
void images_sign(const char *secret, const char *method, const char *key, int64_t expires,
                 char out[IMAGES_SIG_HEX + 1]);

typedef enum images_sig_rc {
    IMAGES_SIG_OK,
    IMAGES_SIG_BAD,     /* missing, malformed or not ours */
    IMAGES_SIG_EXPIRED  /* ours, but expires < now */
} images_sig_rc;

/* Checks the query values of a signed URL (either may be NULL) at time now.
 * The comparison is constant-time. */
images_sig_rc images_verify(const char *secret, const char *method, const char *key,
                            const char *expires, const char *sig, int64_t now);

/* Reads the secret from path, or creates it there (mode 0600, written to a
 * temp file and linked into place, so two processes starting at once agree on
 * one secret). *loose is set when an existing file is readable by others. */
hn_rc images_secret_load(const char *path, char out[IMAGES_SECRET_MAX + 1], bool *loose,
                         hn_error *err);

#endif
