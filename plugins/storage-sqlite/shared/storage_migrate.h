/* storage-sqlite/shared: the `migrate` and `schema_version` calls of a storage
 * provider, written once over the provider's own vtable (storage-sqlite and
 * storage-pg share them; core/include/hn/storage.h says what they promise).
 *
 * Each owner's version lives in one table (owner TEXT PRIMARY KEY, version
 * INTEGER) that the provider creates when it opens. migrate applies every
 * step above the owner's version, each in its own transaction together with
 * the new version; the version is read again inside that transaction (after
 * `lock_sql`, when given), so processes migrating at once apply each step
 * exactly once. What differs between providers comes in storage_migrator.
 *
 * Threads: any thread that may call the provider (the calls block).
 * Ownership: nothing is kept; every pointer is borrowed for the call. */
#ifndef LIB_STORAGE_MIGRATE_H
#define LIB_STORAGE_MIGRATE_H

#include <hn/storage.h>

typedef struct storage_migrator {
    const hn_storage_vt *vt; /* the provider's table: acquire, begin, query, exec, ... */
    void *state;             /* the provider's state (vt's `state` argument) */
    const char *table;       /* the version table's name (trusted: pasted into SQL) */
    /* Runs a step's SQL: several statements, no parameters, no rows. */
    hn_rc (*exec_script)(hn_db *c, const char *sql, hn_error *err);
    /* Run first in each step's transaction, or NULL: PostgreSQL's advisory
     * lock (SQLite's BEGIN IMMEDIATE already serialises writers). */
    const char *lock_sql;
    const hn_value *lock_args;
    size_t n_lock_args;
} storage_migrator;

/* The vtable's migrate: steps must be versions 1, 2, ... in increasing
 * order, each with SQL (else 500 StorageError and nothing is applied). */
hn_rc storage_migrate(const storage_migrator *m, const char *owner, const hn_migration *steps,
                      size_t n, hn_error *err);
/* The vtable's schema_version: owner's version, 0 for none, -1 with err. */
int storage_schema_version(const storage_migrator *m, const char *owner, hn_error *err);

#endif
