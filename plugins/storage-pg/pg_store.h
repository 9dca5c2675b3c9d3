/* storage-pg: the store behind the `storage` provider (name "postgres").
 *
 * A store is a connection string plus a pool of connections to that
 * database. The provider's vtable (pg_storage_vt) takes the store as its
 * `state`.
 *
 * Lifecycle (mirrors the plugin's): pg_store_new in init (no connection),
 * pg_store_open in start (connects, retrying with back-off for up to
 * start_timeout_s, then creates the version table), pg_store_shutdown in stop
 * (closes idle connections), pg_store_free in fini. The vtable functions fail
 * with a StorageError before open.
 *
 * Calls block (libpq's blocking mode on the calling thread): make them from a
 * pool thread (api->work_submit) or, for a few short statements, from a route
 * handler; never from a timer on the main loop. A pool of threads, each
 * holding a connection while it works, is how the node talks to PostgreSQL in
 * parallel; PostgreSQL's own locks do the rest.
 *
 * Ownership: the store copies everything it is given; it owns its connections
 * and statements. hn_db handles belong to the store and are lent out by
 * acquire until release. */
#ifndef PG_STORE_H
#define PG_STORE_H

#include <hn/storage.h>

typedef struct pg_options {
    const char *dsn;          /* libpq connection string or URI (copied; secret) */
    int max_connections;      /* pool size limit */
    int connect_timeout_s;    /* one connection attempt (libpq connect_timeout) */
    int start_timeout_s;      /* how long open keeps retrying before it fails */
    int busy_timeout_ms;      /* lock_timeout per session, and acquire's wait for a connection */
    int stmt_cache_size;      /* prepared statements kept per connection */
    /* Where open reports its retries (may be NULL). */
    void (*log)(void *ctx, const char *message);
    void *log_ctx;
} pg_options;

typedef struct pg_store pg_store;

/* Returns NULL only when out of memory. */
pg_store *pg_store_new(const pg_options *opt);
/* Connects (retrying while the server is unreachable, for start_timeout_s)
 * and creates the version table. Idempotent. */
hn_rc pg_store_open(pg_store *s, hn_error *err);
/* Closes every idle connection; connections still lent out are closed when
 * they come back. Returns how many were still lent out. */
int pg_store_shutdown(pg_store *s);
void pg_store_free(pg_store *s);

/* The provider's function table; `state` is a pg_store *. */
extern const hn_storage_vt pg_storage_vt;

/* The table that records each owner's schema version (same as storage-sqlite). */
#define PG_VERSION_TABLE "hn_schema_version"
/* The advisory lock key that serialises migrations across processes. */
#define PG_MIGRATE_LOCK 0x686e2d6d69677261LL /* "hn-migra" */

#endif
