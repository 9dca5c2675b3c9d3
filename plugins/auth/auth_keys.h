/* auth: API keys.
 *
 * A key is AUTH_KEY_LEN (22) characters of the URL-safe base64 alphabet, each
 * drawn from getrandom(): 132 random bits, the shape of the public horde's
 * keys (token_urlsafe(16)). Its first AUTH_KEY_ID_LEN (8) characters are the
 * key id: stored in clear and indexed, so finding a key's row is one indexed
 * lookup. The whole key is stored only as SHA-256(salt || key) with a random
 * per-key salt; the 14 characters after the id (84 bits) stay secret, far
 * beyond brute force, so a fast hash is enough (no KDF needed for random keys).
 * Comparison is constant-time.
 *
 * Everything here works on caller-provided fixed buffers; nothing to free. */
#ifndef AUTH_KEYS_H
#define AUTH_KEYS_H

#include <stdbool.h>
#include <stddef.h>

#define AUTH_KEY_LEN 22
#define AUTH_KEY_ID_LEN 8
#define AUTH_SALT_BYTES 16
#define AUTH_SALT_HEX (AUTH_SALT_BYTES * 2)
#define AUTH_HASH_HEX 64
#define AUTH_ANON_KEY "0000000000"

/* Fills out[AUTH_KEY_LEN + 1] with a new key. false if the CSPRNG failed. */
bool auth_key_generate(char out[AUTH_KEY_LEN + 1]);
/* Fills salt_hex[AUTH_SALT_HEX + 1] with a new random salt. */
bool auth_salt_generate(char salt_hex[AUTH_SALT_HEX + 1]);
/* true when s has the shape of a key we issue (length and alphabet). */
bool auth_key_well_formed(const char *s);
/* Copies the key id (first AUTH_KEY_ID_LEN chars) of a well-formed key. */
void auth_key_id(const char *key, char id[AUTH_KEY_ID_LEN + 1]);
/* hash_hex[AUTH_HASH_HEX + 1] = hex(SHA-256(salt bytes || key)). false when
 * salt_hex is not AUTH_SALT_HEX hex digits. */
bool auth_key_hash(const char *salt_hex, const char *key, char hash_hex[AUTH_HASH_HEX + 1]);
/* Constant-time check of key against a stored salt and hash. */
bool auth_key_verify(const char *key, const char *salt_hex, const char *hash_hex);
/* Fills buf with n bytes from getrandom(). */
bool auth_random_bytes(void *buf, size_t n);

#endif
