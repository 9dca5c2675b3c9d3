/* storage-sqlite/shared: the connection pool of a storage provider (storage-sqlite and
 * storage-pg): connections opened on demand up to a limit, lent out LIFO
 * (the most recently used, with the warmest statement cache, goes out
 * first); past the limit `acquire` waits up to busy_timeout_ms for one to
 * come back, then fails with 503 StorageBusy.
 *
 * The pool knows connections only as hn_db pointers; the provider opens and
 * closes them (callbacks) and cleans a connection before giving it back.
 *
 * Threads: every call may come from any thread (one mutex inside).
 * Ownership: the pool owns the idle connections (closes them at shutdown);
 * a lent connection belongs to its borrower until release. */
#ifndef LIB_STORAGE_POOL_H
#define LIB_STORAGE_POOL_H

#include <pthread.h>
#include <stdbool.h>

#include <hn/storage.h>

typedef struct storage_pool {
    const char *name;       /* "sqlite", "postgres": for messages */
    int max_connections;    /* >= 1 */
    int busy_timeout_ms;    /* acquire's wait for a free connection */
    /* Opens one connection (outside the pool's lock), or NULL with err. */
    hn_db *(*open)(void *ctx, hn_error *err);
    void (*close)(hn_db *c);
    void *ctx;
    /* ---- inside (guarded by mu) ---- */
    pthread_mutex_t mu;
    pthread_cond_t returned; /* a connection came back, or a slot freed */
    hn_db **idle;            /* stack of max_connections slots, top = warmest */
    int n_idle;
    int open_count;          /* connections that exist, idle or lent out */
    bool opened, shutting_down;
} storage_pool;

/* Sets the pool up (fill name, max_connections, busy_timeout_ms, open,
 * close and ctx first). Returns 0, or -1 when out of memory. Not opened. */
int storage_pool_init(storage_pool *p);
/* Opens the pool for business with `first` (already open) as its idle
 * connection. */
void storage_pool_start(storage_pool *p, hn_db *first);
bool storage_pool_opened(storage_pool *p);
/* A connection, or NULL with err (500 StorageError when the pool is not
 * running, 503 StorageBusy after busy_timeout_ms, or open's error). */
hn_db *storage_pool_acquire(storage_pool *p, hn_error *err);
/* Takes c back (the caller has cleaned it); closes it when shutting down. */
void storage_pool_release(storage_pool *p, hn_db *c);
/* Closes every idle connection and refuses new acquires; connections still
 * lent out are closed when they come back. Returns how many are lent out. */
int storage_pool_shutdown(storage_pool *p);
/* After shutdown: frees the pool's insides. */
void storage_pool_destroy(storage_pool *p);

#endif
