/* storage-sqlite: one connection, its statement cache, binding and errors. */
#include "sqlite_conn.h"

#include <hn/error.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite_sync.h"

/* ---- errors -------------------------------------------------------------- */


hn_rc sq_fail_msg(hn_error *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    hn_error_setv(err, 500, "StorageError", fmt, ap);
    va_end(ap);
    return HN_ERROR;
}

static hn_rc fail_with(hn_error *err, int status, const char *rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static hn_rc fail_with(hn_error *err, int status, const char *rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    hn_error_setv(err, status, rc, fmt, ap);
    va_end(ap);
    return HN_ERROR;
}

hn_rc sq_fail(hn_error *err, sqlite3 *db, int rc, const char *what) {
    const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return fail_with(err, 503, "StorageBusy", "storage: %s: %s", what, msg);
    case SQLITE_CONSTRAINT:
        return fail_with(err, 409, "StorageConstraint", "storage: %s: %s", what, msg);
    default:
        return fail_with(err, 500, "StorageError", "storage: %s: %s", what, msg);
    }
}

/* ---- open / close -------------------------------------------------------- */

static hn_rc pragma(sqlite3 *db, const char *sql, const char *expect, hn_error *err) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_fail(err, db, rc, sql);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        sq_fail(err, db, rc, sql);
        sqlite3_finalize(st);
        return HN_ERROR;
    }
    if (expect) {
        const char *got = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
        if (!got || strcmp(got, expect) != 0) {
            sq_fail_msg(err, "storage: %s gave \"%s\", expected \"%s\"", sql, got ? got : "",
                        expect);
            sqlite3_finalize(st);
            return HN_ERROR;
        }
    }
    sqlite3_finalize(st);
    return HN_OK;
}

struct hn_db *sq_conn_open(const sq_options *opt, struct sq_group_sync *sync,
                           struct sq_write_gate *gate, hn_error *err) {
    struct hn_db *c = calloc(1, sizeof *c);
    if (!c) {
        sq_fail_msg(err, "storage: out of memory");
        return NULL;
    }
    c->sync = sync;
    c->gate = gate;
    c->gate_timeout_ms = opt->busy_timeout_ms;
    c->cache_size = opt->stmt_cache_size > 0 ? opt->stmt_cache_size : 0;
    if (c->cache_size) {
        c->cache = calloc((size_t)c->cache_size, sizeof *c->cache);
        if (!c->cache) {
            free(c);
            sq_fail_msg(err, "storage: out of memory");
            return NULL;
        }
    }
    /* NOMUTEX: the pool hands a connection to one thread at a time. */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(opt->path, &c->db, flags, NULL);
    if (rc != SQLITE_OK) {
        sq_fail(err, c->db, rc, "open");
        goto fail;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, opt->busy_timeout_ms);
    /* WAL: readers never block the writer nor each other. The change is
     * persistent in the file; later connections just confirm it. */
    if (pragma(c->db, "PRAGMA journal_mode=WAL", "wal", err) != HN_OK)
        goto fail;
    /* FULL: the WAL is fsynced on every commit, before COMMIT returns.
     * NORMAL (group mode): sqlite_sync.c does that fsync, shared. */
    if (pragma(c->db, sync ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=FULL", NULL,
               err) != HN_OK)
        goto fail;
    /* PostgreSQL always enforces foreign keys; do the same so SQL behaves alike. */
    if (pragma(c->db, "PRAGMA foreign_keys=ON", NULL, err) != HN_OK)
        goto fail;
    /* Keep the WAL from staying huge after a burst (it is truncated to this on
     * checkpoint). */
    if (pragma(c->db, "PRAGMA journal_size_limit=67108864", NULL, err) != HN_OK)
        goto fail;
    return c;
fail:
    sq_conn_close(c);
    return NULL;
}

void sq_conn_close(struct hn_db *c) {
    if (!c)
        return;
    for (int i = 0; i < c->cache_size; i++) {
        sqlite3_finalize(c->cache[i].handle.st);
        free(c->cache[i].sql);
    }
    free(c->cache);
    /* close_v2: a statement leaked by a caller does not keep the file open forever */
    sqlite3_close_v2(c->db);
    free(c);
}

/* ---- statements ---------------------------------------------------------- */

static uint64_t hash_sql(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static bool only_blanks(const char *s) {
    for (; s && *s; s++) {
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r' && *s != ';')
            return false;
    }
    return true;
}

static sqlite3_stmt *prepare_one(struct hn_db *c, const char *sql, bool persistent,
                                 hn_error *err) {
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v3(c->db, sql, -1, persistent ? SQLITE_PREPARE_PERSISTENT : 0,
                                &st, &tail);
    if (rc != SQLITE_OK) {
        sq_fail(err, c->db, rc, "prepare");
        return NULL;
    }
    if (!st) {
        sq_fail_msg(err, "storage: prepare: empty statement");
        return NULL;
    }
    if (!only_blanks(tail)) {
        sqlite3_finalize(st);
        sq_fail_msg(err, "storage: prepare: more than one statement in one call");
        return NULL;
    }
    return st;
}

static struct hn_stmt *one_off(struct hn_db *c, const char *sql, hn_error *err) {
    struct hn_stmt *h = calloc(1, sizeof *h);
    if (!h) {
        sq_fail_msg(err, "storage: out of memory");
        return NULL;
    }
    h->st = prepare_one(c, sql, false, err);
    if (!h->st) {
        free(h);
        return NULL;
    }
    h->conn = c;
    return h;
}

struct hn_stmt *sq_conn_prepare(struct hn_db *c, const char *sql, hn_error *err) {
    if (!sql) {
        sq_fail_msg(err, "storage: prepare: NULL sql");
        return NULL;
    }
    if (c->cache_size == 0)
        return one_off(c, sql, err);
    uint64_t h = hash_sql(sql);
    sq_cached *victim = NULL;
    for (int i = 0; i < c->cache_size; i++) {
        sq_cached *e = &c->cache[i];
        if (e->sql && e->hash == h && strcmp(e->sql, sql) == 0) {
            if (e->busy) /* nested use of the same SQL: a private statement */
                return one_off(c, sql, err);
            e->busy = true;
            e->last_used = ++c->tick;
            return &e->handle;
        }
        if (!e->busy && (!victim || !e->sql || (victim->sql && e->last_used < victim->last_used)))
            victim = e;
    }
    if (!victim) /* every slot is busy: do not grow, just run uncached */
        return one_off(c, sql, err);
    char *copy = strdup(sql);
    if (!copy) {
        sq_fail_msg(err, "storage: out of memory");
        return NULL;
    }
    sqlite3_stmt *st = prepare_one(c, sql, true, err);
    if (!st) {
        free(copy);
        return NULL;
    }
    sqlite3_finalize(victim->handle.st);
    free(victim->sql);
    victim->sql = copy;
    victim->hash = h;
    victim->busy = true;
    victim->last_used = ++c->tick;
    victim->handle = (struct hn_stmt){.st = st, .conn = c, .cached = true};
    return &victim->handle;
}

void sq_stmt_release(struct hn_stmt *st) {
    if (!st)
        return;
    if (!st->cached) {
        sqlite3_finalize(st->st);
        free(st);
        return;
    }
    sqlite3_reset(st->st);
    sqlite3_clear_bindings(st->st);
    /* the handle is the `handle` member of its cache slot */
    sq_cached *e = (sq_cached *)((char *)st - offsetof(sq_cached, handle));
    e->busy = false;
}

hn_rc sq_stmt_bind(struct hn_stmt *st, const hn_value *args, size_t nargs, bool copy,
                   hn_error *err) {
    sqlite3 *db = st->conn->db;
    int want = sqlite3_bind_parameter_count(st->st);
    if ((size_t)want != nargs)
        return sq_fail_msg(err, "storage: statement has %d parameters, %zu given", want, nargs);
    sqlite3_destructor_type how = copy ? SQLITE_TRANSIENT : SQLITE_STATIC;
    for (size_t i = 0; i < nargs; i++) {
        int col = (int)i + 1, rc;
        const hn_value *v = &args[i];
        switch (v->type) {
        case HN_V_NULL_T:
            rc = sqlite3_bind_null(st->st, col);
            break;
        case HN_V_INT_T:
            rc = sqlite3_bind_int64(st->st, col, v->u.i);
            break;
        case HN_V_DOUBLE_T:
            rc = sqlite3_bind_double(st->st, col, v->u.d);
            break;
        case HN_V_TEXT_T:
            if (!v->u.b.p)
                rc = sqlite3_bind_null(st->st, col);
            else if (v->u.b.len == (size_t)-1)
                rc = sqlite3_bind_text(st->st, col, v->u.b.p, -1, how);
            else
                rc = sqlite3_bind_text64(st->st, col, v->u.b.p, v->u.b.len, how, SQLITE_UTF8);
            break;
        case HN_V_BLOB_T:
            /* a zero-length blob is a blob, not NULL (bind_blob(NULL) would be NULL) */
            if (v->u.b.len == 0)
                rc = sqlite3_bind_zeroblob(st->st, col, 0);
            else if (!v->u.b.p)
                rc = sqlite3_bind_null(st->st, col);
            else
                rc = sqlite3_bind_blob64(st->st, col, v->u.b.p, v->u.b.len, how);
            break;
        default:
            return sq_fail_msg(err, "storage: parameter %d has an unknown type %d", col,
                               (int)v->type);
        }
        if (rc != SQLITE_OK)
            return sq_fail(err, db, rc, "bind");
    }
    return HN_OK;
}

hn_rc sq_conn_enter_gate(struct hn_db *c, hn_error *err) {
    if (c->holds_gate)
        return HN_OK;
    if (!sq_write_gate_enter(c->gate, c->gate_timeout_ms))
        return fail_with(err, 503, "StorageBusy",
                         "storage: another writer held the database for over %d ms",
                         c->gate_timeout_ms);
    c->holds_gate = true;
    return HN_OK;
}

int sq_stmt_step(struct hn_stmt *st, hn_error *err) {
    struct hn_db *c = st->conn;
    if (!sqlite3_stmt_readonly(st->st)) {
        c->dirty = true;
        /* a write outside a transaction is its own transaction: be the writer */
        if (sqlite3_get_autocommit(c->db) && sq_conn_enter_gate(c, err) != HN_OK)
            return -1;
    }
    int rc = sqlite3_step(st->st);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    sq_fail(err, c->db, rc, "step");
    return -1;
}

hn_rc sq_conn_settle(struct hn_db *c, hn_error *err) {
    if (!sqlite3_get_autocommit(c->db))
        return HN_OK; /* still inside a transaction */
    /* leave the gate before the (group) fsync: the next writer can write
     * its frames while we wait for ours to reach the disk */
    if (c->holds_gate) {
        c->holds_gate = false;
        sq_write_gate_leave(c->gate);
    }
    if (!c->dirty)
        return HN_OK;
    c->dirty = false;
    if (!c->sync)
        return HN_OK; /* synchronous=FULL: SQLite synced before COMMIT returned */
    return sq_group_sync_wait(c->sync, c->db, err);
}

hn_rc sq_conn_exec_script(struct hn_db *c, const char *sql, hn_error *err) {
    char *msg = NULL;
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        sq_fail(err, NULL, rc, "exec");
        if (err && msg)
            snprintf(err->message, sizeof err->message, "storage: %s", msg);
        sqlite3_free(msg);
        return HN_ERROR;
    }
    c->dirty = true; /* a script may write; settle decides whether to sync */
    return HN_OK;
}
