/* storage-sqlite: one connection, its prepared-statement cache, and errors.
 *
 * A connection (struct hn_db) is used by one thread at a time (the pool in
 * sqlite_store.c guarantees it), so nothing here locks; SQLite itself is opened
 * in multi-thread mode (SQLITE_OPEN_NOMUTEX) for the same reason.
 *
 * Statement cache: each connection keeps up to `stmt_cache_size` prepared
 * statements keyed by their SQL text. A cached statement in use by a running
 * query is marked busy; asking for the same SQL again while it is busy (a
 * nested query) prepares a private one-off statement instead. */
#ifndef SQ_CONN_H
#define SQ_CONN_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include <hn/storage.h>

#include "sqlite_store.h"

struct sq_group_sync; /* sqlite_sync.h */
struct sq_write_gate; /* sqlite_sync.h */

struct hn_stmt {
    sqlite3_stmt *st;
    struct hn_db *conn;
    bool cached; /* lives in conn's cache: finish resets it instead of finalizing */
};

typedef struct sq_cached {
    uint64_t hash;  /* of sql, to skip most strcmp calls */
    char *sql;      /* owned copy of the statement's text; NULL = free slot */
    uint64_t last_used;
    bool busy;      /* handed out by query/exec and not finished yet */
    struct hn_stmt handle;
} sq_cached;

struct hn_db {
    sqlite3 *db;
    struct sq_group_sync *sync; /* the store's group-commit coordinator; NULL in FULL mode */
    struct sq_write_gate *gate; /* the store's write gate (sqlite_sync.h) */
    int gate_timeout_ms;
    bool holds_gate;            /* this connection is the store's writer right now */
    sq_cached *cache;           /* cache_size slots, allocated once (handles never move) */
    int cache_size;
    uint64_t tick;              /* LRU clock */
    bool dirty;                 /* a write ran that is not yet known durable (group mode) */
};

/* Opens a connection to `path` with the store's pragmas (WAL, synchronous,
 * busy_timeout, foreign_keys). `sync` is NULL in FULL mode; `gate` is the
 * store's write gate. NULL with err filled on failure. */
struct hn_db *sq_conn_open(const sq_options *opt, struct sq_group_sync *sync,
                           struct sq_write_gate *gate, hn_error *err);

/* Becomes the store's writer (waits at the gate up to busy_timeout); no-op
 * when this connection already is. HN_ERROR (503 StorageBusy) on timeout. */
hn_rc sq_conn_enter_gate(struct hn_db *c, hn_error *err);
void sq_conn_close(struct hn_db *c);

/* A statement for `sql`, reset and ready to bind: the cached one when it is
 * free, else a new one-off. Refuses SQL holding more than one statement (use
 * sq_conn_exec_script for those) so that nothing is silently skipped. */
struct hn_stmt *sq_conn_prepare(struct hn_db *c, const char *sql, hn_error *err);

/* Binds args to st. `copy`: SQLite copies text/blob (the caller's buffers may
 * go away before the statement has run); otherwise they must outlive it. */
hn_rc sq_stmt_bind(struct hn_stmt *st, const hn_value *args, size_t nargs, bool copy,
                   hn_error *err);
/* Steps once: 1 row, 0 done, -1 error (err filled). A statement that writes
 * marks the connection dirty and, outside a transaction, enters the gate. */
int sq_stmt_step(struct hn_stmt *st, hn_error *err);
/* Resets (cached) or finalizes (one-off) st. */
void sq_stmt_release(struct hn_stmt *st);

/* Call once a statement or transaction has ended. When the connection is
 * back in autocommit it leaves the gate and, in group mode, if something was
 * written, waits until that write is durable. */
hn_rc sq_conn_settle(struct hn_db *c, hn_error *err);

/* Runs SQL that may hold several statements, no parameters, no rows. */
hn_rc sq_conn_exec_script(struct hn_db *c, const char *sql, hn_error *err);

/* Fills err from a SQLite result code: busy/locked -> 503 StorageBusy,
 * constraint -> 409 StorageConstraint, anything else -> 500 StorageError.
 * Returns HN_ERROR. `db` may be NULL. */
hn_rc sq_fail(hn_error *err, sqlite3 *db, int rc, const char *what);
/* Fills err with a 500 StorageError and the given message. */
hn_rc sq_fail_msg(hn_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
