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

struct sq_store {
    sq_options opt;          /* opt.path points to path_copy */
    char *path_copy;
    bool opened;
    pthread_mutex_t mu;      /* guards the pool fields below */
    pthread_cond_t returned; /* a connection came back to the pool */
    struct hn_db *idle;      /* LIFO: the most recently used (warmest cache) goes out first */
    int open_count;          /* connections that exist, idle or lent out */
    bool shutting_down;
    sq_group_sync sync;      /* used in SQ_SYNC_GROUP mode only */
    sq_write_gate gate;      /* one writer at a time within this process */
};

/* ---- lifecycle ------------------------------------------------------------ */

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
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->returned, NULL);
    sq_group_sync_init(&s->sync);
    sq_write_gate_init(&s->gate);
    return s;
}

static struct hn_db *open_conn(sq_store *s, hn_error *err) {
    return sq_conn_open(&s->opt, s->opt.sync_mode == SQ_SYNC_GROUP ? &s->sync : NULL, &s->gate,
                        err);
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
    if (s->opened)
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
    pthread_mutex_lock(&s->mu);
    s->open_count = 1;
    s->idle = c;
    s->shutting_down = false;
    s->opened = true;
    pthread_mutex_unlock(&s->mu);
    return HN_OK;
}

int sq_store_shutdown(sq_store *s) {
    pthread_mutex_lock(&s->mu);
    s->shutting_down = true;
    struct hn_db *c = s->idle;
    s->idle = NULL;
    while (c) {
        struct hn_db *next = c->next_idle;
        sq_conn_close(c);
        s->open_count--;
        c = next;
    }
    int lent = s->open_count;
    s->opened = false;
    pthread_mutex_unlock(&s->mu);
    return lent;
}

void sq_store_free(sq_store *s) {
    if (!s)
        return;
    sq_store_shutdown(s);
    sq_group_sync_destroy(&s->sync);
    sq_write_gate_destroy(&s->gate);
    pthread_cond_destroy(&s->returned);
    pthread_mutex_destroy(&s->mu);
    free(s->path_copy);
    free(s);
}

/* ---- pool ----------------------------------------------------------------- */

static hn_db *vt_acquire(void *state, hn_error *err) {
    sq_store *s = state;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += s->opt.busy_timeout_ms / 1000;
    deadline.tv_nsec += (long)(s->opt.busy_timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (!s->opened || s->shutting_down) {
            pthread_mutex_unlock(&s->mu);
            sq_fail_msg(err, "storage: the sqlite store is not running");
            return NULL;
        }
        if (s->idle) {
            struct hn_db *c = s->idle;
            s->idle = c->next_idle;
            c->next_idle = NULL;
            pthread_mutex_unlock(&s->mu);
            return c;
        }
        if (s->open_count < s->opt.max_connections)
            break;
        if (pthread_cond_timedwait(&s->returned, &s->mu, &deadline) == ETIMEDOUT) {
            pthread_mutex_unlock(&s->mu);
            if (err) {
                err->status = 503;
                snprintf(err->rc, sizeof err->rc, "StorageBusy");
                snprintf(err->message, sizeof err->message,
                         "storage: all %d connections are in use", s->opt.max_connections);
            }
            return NULL;
        }
    }
    s->open_count++; /* reserve the slot, open outside the lock */
    pthread_mutex_unlock(&s->mu);
    struct hn_db *c = open_conn(s, err);
    if (!c) {
        pthread_mutex_lock(&s->mu);
        s->open_count--;
        pthread_cond_signal(&s->returned);
        pthread_mutex_unlock(&s->mu);
    }
    return c;
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
    pthread_mutex_lock(&s->mu);
    if (s->shutting_down) {
        s->open_count--;
        pthread_mutex_unlock(&s->mu);
        sq_conn_close(c);
        return;
    }
    c->next_idle = s->idle;
    s->idle = c;
    pthread_cond_signal(&s->returned);
    pthread_mutex_unlock(&s->mu);
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

/* ---- migrations ----------------------------------------------------------- */

static int read_version(hn_db *c, const char *owner, hn_error *err) {
    hn_value args[] = {HN_V_TEXT(owner)};
    hn_stmt *st = vt_query(c, "SELECT version FROM " SQ_VERSION_TABLE " WHERE owner = ?", args,
                           1, err);
    if (!st)
        return -1;
    int v = 0;
    int r = vt_step(st, err);
    if (r == 1)
        v = (int)vt_col_int(st, 0);
    vt_finish(st);
    return r < 0 ? -1 : v;
}

static int vt_schema_version(void *state, const char *owner, hn_error *err) {
    hn_db *c = vt_acquire(state, err);
    if (!c)
        return -1;
    int v = read_version(c, owner, err);
    vt_release(state, c);
    return v;
}

/* One step in its own IMMEDIATE transaction. The version is read again inside
 * it, so two processes migrating at once apply each step exactly once. */
static hn_rc apply_step(hn_db *c, const char *owner, const hn_migration *m, hn_error *err) {
    if (vt_begin(c, err) != HN_OK)
        return HN_ERROR;
    int cur = read_version(c, owner, err);
    if (cur < 0)
        goto fail;
    if (cur >= m->version)
        return vt_commit(c, err); /* someone else got here first */
    if (sq_conn_exec_script(c, m->sql, err) != HN_OK) {
        char what[sizeof err->message];
        snprintf(what, sizeof what, "%s", err ? err->message : "");
        if (err)
            snprintf(err->message, sizeof err->message, "migration %s %d: %.400s", owner,
                     m->version, what);
        goto fail;
    }
    hn_value args[] = {HN_V_TEXT(owner), HN_V_INT(m->version)};
    if (vt_exec(c,
                "INSERT INTO " SQ_VERSION_TABLE " (owner, version) VALUES (?, ?) "
                "ON CONFLICT (owner) DO UPDATE SET version = excluded.version",
                args, 2, NULL, err) != HN_OK)
        goto fail;
    if (vt_commit(c, err) != HN_OK)
        goto fail;
    return HN_OK;
fail:
    vt_rollback(c, NULL);
    return HN_ERROR;
}

static hn_rc vt_migrate(void *state, const char *owner, const hn_migration *steps, size_t n,
                        hn_error *err) {
    if (!owner || !owner[0])
        return sq_fail_msg(err, "storage: migrate: no owner");
    for (size_t i = 0; i < n; i++) {
        if (steps[i].version <= 0 || (i > 0 && steps[i].version <= steps[i - 1].version) ||
            !steps[i].sql)
            return sq_fail_msg(err,
                               "storage: migrate %s: step %zu: versions must be 1, 2, ... "
                               "in increasing order, each with SQL",
                               owner, i);
    }
    hn_db *c = vt_acquire(state, err);
    if (!c)
        return HN_ERROR;
    hn_rc rc = HN_OK;
    int cur = read_version(c, owner, err);
    if (cur < 0)
        rc = HN_ERROR;
    for (size_t i = 0; rc == HN_OK && i < n; i++) {
        if (steps[i].version > cur)
            rc = apply_step(c, owner, &steps[i], err);
    }
    vt_release(state, c);
    return rc;
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
