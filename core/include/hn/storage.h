/* horde-node plugin SDK: the `storage` provider interface.
 *
 * A small portable SQL interface. Implementations: storage-sqlite (embedded
 * default) and storage-pg. Plugins write SQL with `?` placeholders in the
 * common subset of SQLite and PostgreSQL (both support RETURNING, ON CONFLICT,
 * and the types INTEGER/BIGINT, DOUBLE PRECISION, TEXT, BLOB/BYTEA via
 * hn_storage_vt.dialect where they differ). Each plugin owns its tables and
 * brings its migrations.
 *
 * Threads: a connection (hn_db) is used by one thread at a time. Get one with
 * acquire, give it back with release; calls on it block, so call them from a
 * pool thread or, for short statements, from a route handler.
 *
 * Durability: commit (and a statement outside a transaction) returns only
 * once the data survives kill -9 and a power cut.
 *
 * Usage:
 *     const hn_provider *p = api->provider_get("storage");
 *     const hn_storage_vt *db = p->vt;
 *     hn_db *c = db->acquire(p->state, &err);
 *     hn_value args[] = { HN_V_TEXT(name) };
 *     hn_stmt *st = db->query(c, "SELECT id FROM users WHERE name = ?", args, 1, &err);
 *     while (db->step(st, &err) == 1) id = db->col_int(st, 0);
 *     db->finish(st);
 *     db->release(p->state, c);
 */
#ifndef HN_STORAGE_H
#define HN_STORAGE_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HN_STORAGE_VERSION 1

typedef struct hn_db hn_db;     /* a connection */
typedef struct hn_stmt hn_stmt; /* a running query */

typedef enum hn_value_type {
    HN_V_NULL_T, HN_V_INT_T, HN_V_DOUBLE_T, HN_V_TEXT_T, HN_V_BLOB_T
} hn_value_type;

/* A bound parameter. Pointers are borrowed for the duration of the call. */
typedef struct hn_value {
    hn_value_type type;
    union {
        int64_t i;
        double d;
        struct {
            const void *p;
            size_t len; /* for TEXT: (size_t)-1 means NUL-terminated */
        } b;
    } u;
} hn_value;

#define HN_V_NULL ((hn_value){.type = HN_V_NULL_T})
#define HN_V_INT(x) ((hn_value){.type = HN_V_INT_T, .u.i = (int64_t)(x)})
#define HN_V_DOUBLE(x) ((hn_value){.type = HN_V_DOUBLE_T, .u.d = (double)(x)})
#define HN_V_TEXT(s) ((hn_value){.type = HN_V_TEXT_T, .u.b = {(s), (size_t)-1}})
#define HN_V_BLOB(p, n) ((hn_value){.type = HN_V_BLOB_T, .u.b = {(p), (n)}})

/* One migration step of a plugin's schema. Steps are applied in order, each
 * in its own transaction, and recorded in a version table keyed by owner. */
typedef struct hn_migration {
    int version;     /* 1, 2, 3, ... */
    const char *sql; /* one or more statements separated by ';' */
} hn_migration;

typedef struct hn_storage_vt {
    uint32_t size;    /* sizeof(hn_storage_vt) */
    uint32_t version; /* HN_STORAGE_VERSION */
    const char *dialect; /* "sqlite" or "postgres" */

    /* Brings owner's schema to the newest step. Safe to call from several
     * processes at once. */
    hn_rc (*migrate)(void *state, const char *owner, const hn_migration *steps, size_t n,
                     hn_error *err);
    /* Current schema version of owner (0 = none). */
    int (*schema_version)(void *state, const char *owner, hn_error *err);

    hn_db *(*acquire)(void *state, hn_error *err);
    void (*release)(void *state, hn_db *db);

    hn_rc (*begin)(hn_db *db, hn_error *err);
    hn_rc (*commit)(hn_db *db, hn_error *err);
    hn_rc (*rollback)(hn_db *db, hn_error *err);

    /* Runs a statement that returns no rows; *changes (may be NULL) gets the
     * number of rows changed. Inside a transaction with changes == NULL a
     * provider may send it without waiting (storage-pg pipelines): its
     * failure then comes from a later call of the transaction or commit. */
    hn_rc (*exec)(hn_db *db, const char *sql, const hn_value *args, size_t nargs,
                  int64_t *changes, hn_error *err);
    /* Starts a query; NULL with err on failure. Free with finish. */
    hn_stmt *(*query)(hn_db *db, const char *sql, const hn_value *args, size_t nargs,
                      hn_error *err);
    /* 1: a row is ready; 0: no more rows; -1: error (err filled). */
    int (*step)(hn_stmt *st, hn_error *err);
    int (*col_count)(hn_stmt *st);
    bool (*col_is_null)(hn_stmt *st, int col);
    int64_t (*col_int)(hn_stmt *st, int col);
    double (*col_double)(hn_stmt *st, int col);
    /* Valid until the next step or finish; never NULL ("" for NULL). */
    const char *(*col_text)(hn_stmt *st, int col);
    const void *(*col_blob)(hn_stmt *st, int col, size_t *len);
    void (*finish)(hn_stmt *st);
} hn_storage_vt;

#ifdef __cplusplus
}
#endif
#endif
