/* images-db: image rows through the storage provider (see images_store.h). */
#include "images_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define OWNER "images-db"

/* The blob column is the one spelling that differs between the dialects. */
static const hn_migration migrations_sqlite[] = {
    {1, "CREATE TABLE hn_images (key TEXT PRIMARY KEY, content_type TEXT NOT NULL,"
        " bytes BLOB NOT NULL, size BIGINT NOT NULL, created BIGINT NOT NULL);"
        "CREATE TABLE hn_images_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"},
};
static const hn_migration migrations_postgres[] = {
    {1, "CREATE TABLE hn_images (key TEXT PRIMARY KEY, content_type TEXT NOT NULL,"
        " bytes BYTEA NOT NULL, size BIGINT NOT NULL, created BIGINT NOT NULL);"
        "CREATE TABLE hn_images_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"},
};

hn_rc images_store_open(images_store *s, const hn_provider *storage, hn_error *err) {
    if (!storage)
        return images_fail(err, 500, "ConfigError",
                           "images-db: needs a storage provider (load storage-sqlite or "
                           "storage-pg before images-db)");
    const hn_storage_vt *db = storage->vt;
    if (db->size < sizeof(hn_storage_vt) || db->version != HN_STORAGE_VERSION)
        return images_fail(err, 500, "ConfigError",
                           "images-db: the storage provider's interface version is unknown");
    s->storage = storage;
    s->db = db;
    bool pg = db->dialect && strcmp(db->dialect, "postgres") == 0;
    return db->migrate(storage->state, OWNER, pg ? migrations_postgres : migrations_sqlite, 1,
                       err);
}

/* One statement on a pooled connection. */
static hn_rc exec1(images_store *s, const char *sql, const hn_value *args, size_t n,
                   int64_t *changes, hn_error *err) {
    hn_db *c = s->db->acquire(s->storage->state, err);
    if (!c)
        return HN_ERROR;
    hn_rc rc = s->db->exec(c, sql, args, n, changes, err);
    s->db->release(s->storage->state, c);
    return rc;
}

hn_rc images_store_secret(images_store *s, char *out, hn_error *err) {
    unsigned char rnd[32];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        return images_fail(err, 500, "ConfigError", "images-db: no randomness for the secret");
    char fresh[2 * sizeof rnd + 1];
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(fresh + 2 * i, 3, "%02x", rnd[i]);
    memset(rnd, 0, sizeof rnd);
    hn_value args[] = {HN_V_TEXT(fresh)};
    /* the first node's secret wins; every node reads the winner back */
    hn_rc rc = exec1(s,
                     "INSERT INTO hn_images_meta (name, value) VALUES ('secret', ?) "
                     "ON CONFLICT (name) DO NOTHING",
                     args, 1, NULL, err);
    memset(fresh, 0, sizeof fresh);
    if (rc != HN_OK)
        return rc;
    hn_db *c = s->db->acquire(s->storage->state, err);
    if (!c)
        return HN_ERROR;
    hn_stmt *st = s->db->query(c, "SELECT value FROM hn_images_meta WHERE name = 'secret'", NULL,
                               0, err);
    rc = HN_ERROR;
    if (st) {
        int r = s->db->step(st, err);
        const char *v = r == 1 ? s->db->col_text(st, 0) : "";
        if (r == 1 && strlen(v) >= IMAGES_SECRET_MIN && strlen(v) <= IMAGES_SECRET_MAX) {
            snprintf(out, IMAGES_SECRET_MAX + 1, "%s", v);
            rc = HN_OK;
        } else if (r >= 0) {
            images_fail(err, 500, "ConfigError",
                        "images-db: the stored secret is missing or not 16 to 256 characters");
        }
        s->db->finish(st);
    }
    s->db->release(s->storage->state, c);
    return rc;
}

hn_rc images_store_put(images_store *s, const char *key, const void *data, size_t len,
                       hn_error *err) {
    if (!images_key_valid(key))
        return images_bad_key(err);
    hn_value args[] = {HN_V_TEXT(key), HN_V_TEXT(images_content_type(data, len)),
                       HN_V_BLOB(data, len), HN_V_INT((int64_t)len),
                       HN_V_INT((int64_t)time(NULL))};
    return exec1(s,
                 "INSERT INTO hn_images (key, content_type, bytes, size, created) "
                 "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                 "content_type = excluded.content_type, bytes = excluded.bytes, "
                 "size = excluded.size, created = excluded.created",
                 args, 5, NULL, err);
}

hn_rc images_store_get(images_store *s, const char *key, void **data, size_t *len,
                       char content_type[64], hn_error *err) {
    *data = NULL;
    *len = 0;
    if (!images_key_valid(key))
        return images_bad_key(err);
    hn_db *c = s->db->acquire(s->storage->state, err);
    if (!c)
        return HN_ERROR;
    hn_value args[] = {HN_V_TEXT(key)};
    hn_stmt *st =
        s->db->query(c, "SELECT bytes, content_type FROM hn_images WHERE key = ?", args, 1, err);
    hn_rc rc = HN_ERROR;
    if (st) {
        int r = s->db->step(st, err);
        if (r == 0) {
            rc = HN_DECLINED;
        } else if (r == 1) {
            size_t n = 0;
            const void *b = s->db->col_blob(st, 0, &n);
            void *copy = malloc(n ? n : 1);
            if (copy) {
                memcpy(copy, b, n);
                *data = copy;
                *len = n;
                if (content_type)
                    snprintf(content_type, 64, "%s", s->db->col_text(st, 1));
                rc = HN_OK;
            } else {
                images_fail(err, 500, "OutOfMemory", "images-db: out of memory");
            }
        }
        s->db->finish(st);
    }
    s->db->release(s->storage->state, c);
    return rc;
}

hn_rc images_store_exists(images_store *s, const char *key, hn_error *err) {
    if (!images_key_valid(key))
        return images_bad_key(err);
    hn_db *c = s->db->acquire(s->storage->state, err);
    if (!c)
        return HN_ERROR;
    hn_value args[] = {HN_V_TEXT(key)};
    hn_stmt *st = s->db->query(c, "SELECT 1 FROM hn_images WHERE key = ?", args, 1, err);
    hn_rc rc = HN_ERROR;
    if (st) {
        int r = s->db->step(st, err);
        rc = r == 1 ? HN_OK : r == 0 ? HN_DECLINED : HN_ERROR;
        s->db->finish(st);
    }
    s->db->release(s->storage->state, c);
    return rc;
}

hn_rc images_store_remove(images_store *s, const char *key, hn_error *err) {
    if (!images_key_valid(key))
        return images_bad_key(err);
    hn_value args[] = {HN_V_TEXT(key)};
    int64_t changes = 0;
    if (exec1(s, "DELETE FROM hn_images WHERE key = ?", args, 1, &changes, err) != HN_OK)
        return HN_ERROR;
    return changes > 0 ? HN_OK : HN_DECLINED;
}
