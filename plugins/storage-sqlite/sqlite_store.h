/* storage-sqlite: the store behind the `storage` provider (name "sqlite").
 *
 * A store is one SQLite database file in WAL mode plus a pool of connections
 * to it. The provider's vtable (sq_storage_vt) takes the store as its `state`.
 *
 * Lifecycle (mirrors the plugin's): sq_store_new in init (no file touched),
 * sq_store_open in start (opens the file, sets WAL, creates the version
 * table), sq_store_shutdown in stop (closes idle connections), sq_store_free in
 * fini. The vtable functions fail with a StorageError before open.
 *
 * Ownership: the store copies everything it is given; it owns its connections
 * and statements. hn_db handles belong to the store and are lent out by
 * acquire until release. */
#ifndef SQ_STORE_H
#define SQ_STORE_H

#include <hn/storage.h>

typedef enum sq_sync_mode {
    /* synchronous=FULL: every commit fsyncs the WAL while holding the write lock */
    SQ_SYNC_FULL,
    /* group commit: synchronous=NORMAL, then commit waits for one shared fsync of
     * the WAL that covers every commit written before it started (see README) */
    SQ_SYNC_GROUP
} sq_sync_mode;

typedef struct sq_options {
    const char *path;         /* database file (copied) */
    int busy_timeout_ms;      /* how long a writer waits for the lock (and acquire for a connection) */
    int max_connections;      /* pool size limit */
    int stmt_cache_size;      /* prepared statements kept per connection */
    sq_sync_mode sync_mode;
} sq_options;

typedef struct sq_store sq_store;

/* Returns NULL only when out of memory. */
sq_store *sq_store_new(const sq_options *opt);
/* Opens the database (creating it if needed). Idempotent. */
hn_rc sq_store_open(sq_store *s, hn_error *err);
/* Closes every idle connection; connections still lent out are closed when
 * they come back. Returns how many were still lent out (0 when all is well). */
int sq_store_shutdown(sq_store *s);
void sq_store_free(sq_store *s);

/* The provider's function table; `state` is a sq_store *. */
extern const hn_storage_vt sq_storage_vt;

/* Name of the table that records each owner's schema version. */
#define SQ_VERSION_TABLE "hn_schema_version"

#endif
