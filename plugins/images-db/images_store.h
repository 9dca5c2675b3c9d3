/* images-db: images as rows of the `storage` provider (SQLite or PostgreSQL).
 *
 * Table hn_images (key TEXT PRIMARY KEY, content_type TEXT, bytes BLOB/BYTEA,
 * size BIGINT, created BIGINT), owned by the plugin "images-db" (migrations
 * through the provider). A put is one autocommit upsert: durable when it
 * returns, and readers see the old image or the new one, never a part.
 *
 * The URL secret, when the config gives none, lives in hn_images_meta: the
 * first node to start writes a random one (INSERT ... ON CONFLICT DO NOTHING)
 * and every node reads the row back, so all nodes on one database sign and
 * verify alike.
 *
 * Thread-safe: each call takes a connection from the provider's pool and gives
 * it back. Calls block on the database: call from a pool thread. */
#ifndef IMAGES_STORE_H
#define IMAGES_STORE_H

#include <hn/hn.h>

#include "images-fs/shared/images_url.h"

typedef struct images_store {
    const hn_provider *storage; /* borrowed, valid from start to stop */
    const hn_storage_vt *db;
} images_store;

/* Binds to the storage provider and brings the tables up to date. */
hn_rc images_store_open(images_store *s, const hn_provider *storage, hn_error *err);
/* The shared secret, created on first use. out[IMAGES_SECRET_MAX + 1]. */
hn_rc images_store_secret(images_store *s, char *out, hn_error *err);

/* key must be valid (images_key_valid): a bad key is 400 InvalidImageKey. */
hn_rc images_store_put(images_store *s, const char *key, const void *data, size_t len,
                       hn_error *err);
/* *data is malloc'd (the caller frees). content_type (may be NULL) gets the
 * stored type, at most 63 characters. HN_DECLINED when there is no such key. */
hn_rc images_store_get(images_store *s, const char *key, void **data, size_t *len,
                       char content_type[64], hn_error *err);
hn_rc images_store_exists(images_store *s, const char *key, hn_error *err);
/* HN_DECLINED when there was nothing to remove. */
hn_rc images_store_remove(images_store *s, const char *key, hn_error *err);

#endif
