/* storage-sqlite: the store (pool of connections) and the provider vtable. */
#include "sqlite_store.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sqlite_conn.h"
#include "sqlite_sync.h"
#include "storage-sqlite/shared/storage_migrate.h"
#include "storage-sqlite/shared/storage_pool.h"

struct sq_store {
    sq_options opt;          /* opt.path points to path_copy */
    char *path_copy;
    storage_pool pool;       /* storage-sqlite/shared: LIFO, opened on demand up to max_connections */
    sq_group_sync sync;      /* used in SQ_SYNC_GROUP mode only */
    sq_write_gate gate;      /* one writer at a time within this process */
};

/* ---- lifecycle ------------------------------------------------------------ */

static struct hn_db *open_conn(sq_store *s, hn_error *err) {
    return sq_conn_open(&s->opt, s->opt.sync_mode == SQ_SYNC_GROUP ? &s->sync : NULL, &s->gate,
                        err);
}

static hn_db *pool_open(void *ctx, hn_error *err) { return open_conn(ctx, err); }
static void pool_close(hn_db *c) { sq_conn_close(c); }

sq_store *sq_store_new(const sq_options *opt) {
    sq_store *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->opt = *opt;
    s->path_copy = strdup(opt->path ? opt->path : "");
    if (!s->path_copy) {
        free(s);
        return NULL;
    }
    s->opt.path = s->path_copy;
    if (s->opt.max_connections <= 0)
        s->opt.max_connections = 64;
    if (s->opt.busy_timeout_ms < 0)
        s->opt.busy_timeout_ms = 0;
    s->pool = (storage_pool){.name = "sqlite",
                             .max_connections = s->opt.max_connections,
                             .busy_timeout_ms = s->opt.busy_timeout_ms,
                             .open = pool_open,
                             .close = pool_close,
                             .ctx = s};
    if (storage_pool_init(&s->pool) != 0) {
        free(s->path_copy);
        free(s);
        return NULL;
    }
    sq_group_sync_init(&s->sync);
    sq_write_gate_init(&s->gate);
    return s;
}

/* fsync the directory holding the database so the file's own directory entry
 * survives a power cut right after it was created. */
static void sync_parent_dir(const char *path) {
    char *copy = strdup(path);
    if (!copy)
        return;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(copy);
}

hn_rc sq_store_open(sq_store *s, hn_error *err) {
    if (storage_pool_opened(&s->pool))
        return HN_OK;
    if (!s->opt.path[0])
        return sq_fail_msg(err, "storage: no database path");
    struct hn_db *c = open_conn(s, err);
    if (!c)
        return HN_ERROR;
    /* The version table is ours (not a plugin's): created here, never migrated. */
    if (sq_conn_exec_script(c,
                            "CREATE TABLE IF NOT EXISTS " SQ_VERSION_TABLE " ("
                            " owner TEXT PRIMARY KEY,"
                            " version INTEGER NOT NULL)",
                            err) != HN_OK ||
        sq_conn_settle(c, err) != HN_OK) {
        sq_conn_close(c);
        return HN_ERROR;
    }
    sync_parent_dir(s->opt.path);
    storage_pool_start(&s->pool, c);
    return HN_OK;
}

int sq_store_shutdown(sq_store *s) {
    return storage_pool_shutdown(&s->pool);
}

void sq_store_free(sq_store *s) {
    if (!s)
        return;
    sq_store_shutdown(s);
    sq_group_sync_destroy(&s->sync);
    sq_write_gate_destroy(&s->gate);
    storage_pool_destroy(&s->pool);
    free(s->path_copy);
    free(s);
}

/* ---- pool ----------------------------------------------------------------- */

static hn_db *vt_acquire(void *state, hn_error *err) {
    return storage_pool_acquire(&((sq_store *)state)->pool, err);
}

static void vt_release(void *state, hn_db *c) {
    sq_store *s = state;
    if (!c)
        return;
    /* A connection must come back clean: roll back a transaction left open
     * (a caller's error path) so the next user does not inherit it. */
    for (int i = 0; i < c->cache_size; i++) {
        if (c->cache[i].busy)
            sq_stmt_release(&c->cache[i].handle);
    }
    if (!sqlite3_get_autocommit(c->db))
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    c->dirty = false;
    sq_conn_settle(c, NULL); /* leaves the write gate if it still held it */
    storage_pool_release(&s->pool, c);
}

/* ---- statements ----------------------------------------------------------- */

static hn_rc vt_exec(hn_db *c, const char *sql, const hn_value *args, size_t nargs,
                     int64_t *changes, hn_error *err) {
    struct hn_stmt *st = sq_conn_prepare(c, sql, err);
    if (!st)
        return HN_ERROR;
    /* no copies: the statement runs to completion within this call */
    if (sq_stmt_bind(st, args, nargs, false, err) != HN_OK) {
        sq_stmt_release(st);
        return HN_ERROR;
    }
    int r;
    while ((r = sq_stmt_step(st, err)) == 1) {
        /* rows of e.g. INSERT ... RETURNING are dropped */
    }
    if (r == 0 && changes)
        *changes = sqlite3_changes64(c->db);
    sq_stmt_release(st);
    /* settle even after an error: it leaves the write gate */
    hn_rc settled = sq_conn_settle(c, r < 0 ? NULL : err);
    return r < 0 ? HN_ERROR : settled;
}

static hn_stmt *vt_query(hn_db *c, const char *sql, const hn_value *args, size_t nargs,
                         hn_error *err) {
    struct hn_stmt *st = sq_conn_prepare(c, sql, err);
    if (!st)
        return NULL;
    /* copies: the caller's buffers are only borrowed for this call */
    if (sq_stmt_bind(st, args, nargs, true, err) != HN_OK) {
        sq_stmt_release(st);
        return NULL;
    }
    return st;
}

static int vt_step(hn_stmt *st, hn_error *err) {
    int r = sq_stmt_step(st, err);
    if (r == 0 && sq_conn_settle(st->conn, err) != HN_OK)
        return -1;
    return r;
}

static void vt_finish(hn_stmt *st) {
    if (!st)
        return;
    struct hn_db *c = st->conn;
    sq_stmt_release(st);
    /* A write that was not stepped to the end commits on reset; make it
     * durable before returning. finish cannot report an error: a failed group
     * fsync poisons the store, so the next commit reports it. */
    sq_conn_settle(c, NULL);
}

static int vt_col_count(hn_stmt *st) { return sqlite3_column_count(st->st); }

static bool vt_col_is_null(hn_stmt *st, int col) {
    return sqlite3_column_type(st->st, col) == SQLITE_NULL;
}

static int64_t vt_col_int(hn_stmt *st, int col) { return sqlite3_column_int64(st->st, col); }

static double vt_col_double(hn_stmt *st, int col) { return sqlite3_column_double(st->st, col); }

static const char *vt_col_text(hn_stmt *st, int col) {
    const unsigned char *t = sqlite3_column_text(st->st, col);
    return t ? (const char *)t : "";
}

static const void *vt_col_blob(hn_stmt *st, int col, size_t *len) {
    const void *p = sqlite3_column_blob(st->st, col);
    if (len)
        *len = (size_t)sqlite3_column_bytes(st->st, col);
    return p ? p : ""; /* zero-length and NULL blobs: a valid pointer to nothing */
}

/* ---- transactions --------------------------------------------------------- */

static hn_rc run_simple(hn_db *c, const char *sql, hn_error *err) {
    return vt_exec(c, sql, NULL, 0, NULL, err);
}

/* IMMEDIATE: take the write lock at BEGIN (waiting up to busy_timeout) rather
 * than at the first write. A deferred transaction that reads and then writes
 * can fail with SQLITE_BUSY_SNAPSHOT at once when another writer got in
 * between, which PostgreSQL callers would never see. */
static hn_rc vt_begin(hn_db *c, hn_error *err) {
    /* queue at the gate first (wakes at once), then take SQLite's lock (polls) */
    if (sq_conn_enter_gate(c, err) != HN_OK)
        return HN_ERROR;
    return run_simple(c, "BEGIN IMMEDIATE", err); /* on failure settle left the gate */
}

static hn_rc vt_commit(hn_db *c, hn_error *err) { return run_simple(c, "COMMIT", err); }

static hn_rc vt_rollback(hn_db *c, hn_error *err) {
    c->dirty = false; /* nothing of this transaction will need an fsync */
    if (sqlite3_get_autocommit(c->db)) /* SQLite already rolled back (e.g. SQLITE_FULL) */
        return sq_conn_settle(c, err);
    return run_simple(c, "ROLLBACK", err);
}

/* ---- migrations (storage-sqlite/shared, shared with storage-pg) ---------------------- */

/* Each step runs in its own IMMEDIATE transaction (vt_begin), which already
 * keeps a second process out until it ends: no lock statement needed. */
static const storage_migrator *migrator(void *state, storage_migrator *m) {
    *m = (storage_migrator){.vt = &sq_storage_vt,
                            .state = state,
                            .table = SQ_VERSION_TABLE,
                            .exec_script = sq_conn_exec_script};
    return m;
}

static int vt_schema_version(void *state, const char *owner, hn_error *err) {
    storage_migrator m;
    return storage_schema_version(migrator(state, &m), owner, err);
}

static hn_rc vt_migrate(void *state, const char *owner, const hn_migration *steps, size_t n,
                        hn_error *err) {
    storage_migrator m;
    return storage_migrate(migrator(state, &m), owner, steps, n, err);
}

const hn_storage_vt sq_storage_vt = {
    .size = sizeof(hn_storage_vt),
    .version = HN_STORAGE_VERSION,
    .dialect = "sqlite",
    .migrate = vt_migrate,
    .schema_version = vt_schema_version,
    .acquire = vt_acquire,
    .release = vt_release,
    .begin = vt_begin,
    .commit = vt_commit,
    .rollback = vt_rollback,
    .exec = vt_exec,
    .query = vt_query,
    .step = vt_step,
    .col_count = vt_col_count,
    .col_is_null = vt_col_is_null,
    .col_int = vt_col_int,
    .col_double = vt_col_double,
    .col_text = vt_col_text,
    .col_blob = vt_col_blob,
    .finish = vt_finish,
};
