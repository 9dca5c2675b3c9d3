/* storage-pg: the store (pool of connections), migrations and the provider
 * vtable. */
#include "pg_store.h"

#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pg_conn.h"
#include "storage-sqlite/shared/storage_migrate.h"
#include "storage-sqlite/shared/storage_pool.h"

#define KEYWORDS 8

struct pg_store {
    pg_options opt;          /* opt.dsn points to dsn_copy */
    char *dsn_copy;
    char connect_timeout[16];
    const char *keywords[KEYWORDS + 1];
    const char *values[KEYWORDS + 1];
    pg_conn_config cfg;      /* what every connection is opened with */
    storage_pool pool;       /* storage-sqlite/shared: LIFO, opened on demand up to max_connections */
};

static hn_db *pool_open(void *ctx, hn_error *err) {
    return pg_conn_open(&((pg_store *)ctx)->cfg, err);
}

static void pool_close(hn_db *c) { pg_conn_close(c); }

/* ---- lifecycle ------------------------------------------------------------ */

pg_store *pg_store_new(const pg_options *opt) {
    pg_store *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->opt = *opt;
    s->dsn_copy = strdup(opt->dsn ? opt->dsn : "");
    if (!s->dsn_copy) {
        free(s);
        return NULL;
    }
    s->opt.dsn = s->dsn_copy;
    if (s->opt.max_connections <= 0)
        s->opt.max_connections = 16;
    if (s->opt.busy_timeout_ms < 0)
        s->opt.busy_timeout_ms = 0;
    if (s->opt.stmt_cache_size < 0)
        s->opt.stmt_cache_size = 0;
    /* libpq (connect_timeout) takes at least 2 s; 0 would mean forever */
    snprintf(s->connect_timeout, sizeof s->connect_timeout, "%d",
             s->opt.connect_timeout_s > 2 ? s->opt.connect_timeout_s : 2);
    /* Our defaults first; the dsn (expanded from "dbname", last) overrides
     * any of them it names. Keepalives notice a server that vanished without
     * closing the connection (a network cut) within about a minute. */
    const char *kv[][2] = {
        {"fallback_application_name", "horde-node"},
        {"connect_timeout", s->connect_timeout},
        {"client_encoding", "UTF8"},
        {"keepalives_idle", "30"},
        {"keepalives_interval", "10"},
        {"keepalives_count", "3"},
        {"dbname", s->dsn_copy},
    };
    size_t n = sizeof kv / sizeof kv[0];
    for (size_t i = 0; i < n; i++) {
        s->keywords[i] = kv[i][0];
        s->values[i] = kv[i][1];
    }
    s->keywords[n] = s->values[n] = NULL;
    s->cfg = (pg_conn_config){
        .keywords = s->keywords,
        .values = s->values,
        .busy_timeout_ms = s->opt.busy_timeout_ms,
        .stmt_cache_size = s->opt.stmt_cache_size,
    };
    s->pool = (storage_pool){.name = "postgres",
                             .max_connections = s->opt.max_connections,
                             .busy_timeout_ms = s->opt.busy_timeout_ms,
                             .open = pool_open,
                             .close = pool_close,
                             .ctx = s};
    if (storage_pool_init(&s->pool) != 0) {
        free(s->dsn_copy);
        free(s);
        return NULL;
    }
    return s;
}

static void say(const pg_store *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const pg_store *s, const char *fmt, ...) {
    if (!s->opt.log)
        return;
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->opt.log(s->opt.log_ctx, msg);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void sleep_s(double s) {
    struct timespec t = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

/* One connection, retried with back-off (0.25 s doubling to 5 s) while the
 * server cannot be reached, for up to start_timeout_s. */
static struct hn_db *connect_with_retries(pg_store *s, hn_error *err) {
    double start = now_s(), delay = 0.25;
    for (int attempt = 1;; attempt++) {
        struct hn_db *c = pg_conn_open(&s->cfg, err);
        if (c) {
            if (attempt > 1)
                say(s, "connected to PostgreSQL after %d attempts", attempt);
            return c;
        }
        double left = s->opt.start_timeout_s - (now_s() - start);
        if (left <= 0) {
            if (err) {
                char why[sizeof err->message];
                snprintf(why, sizeof why, "%s", err->message);
                pg_fail(err, 503, "StorageUnavailable",
                        "storage-pg: gave up after %d attempts in %d s: %.400s", attempt,
                        s->opt.start_timeout_s, why);
            }
            return NULL;
        }
        double wait = delay < left ? delay : left;
        say(s, "%s; retrying in %.2f s (giving up in %.0f s)", err ? err->message : "no connection",
            wait, left);
        sleep_s(wait);
        delay = delay * 2 < 5 ? delay * 2 : 5;
    }
}

hn_rc pg_store_open(pg_store *s, hn_error *err) {
    if (storage_pool_opened(&s->pool))
        return HN_OK;
    if (!s->opt.dsn[0])
        return pg_fail(err, 500, "ConfigError", "storage-pg: no dsn");
    if (!PQisthreadsafe())
        return pg_fail(err, 500, "StorageError", "storage-pg: this libpq is not thread-safe");
    struct hn_db *c = connect_with_retries(s, err);
    if (!c)
        return HN_ERROR;
    /* The version table is ours (not a plugin's): created here, never
     * migrated. Under the migration lock: two processes running CREATE TABLE
     * IF NOT EXISTS at once can otherwise collide in the catalog. */
    hn_rc rc = pg_conn_begin(c, err);
    if (rc == HN_OK) {
        hn_value key[] = {HN_V_INT(PG_MIGRATE_LOCK)};
        rc = pg_conn_exec(c, "SELECT pg_advisory_xact_lock(?)", key, 1, NULL, err);
    }
    if (rc == HN_OK)
        rc = pg_conn_exec_script(c,
                                 "CREATE TABLE IF NOT EXISTS " PG_VERSION_TABLE " ("
                                 " owner TEXT PRIMARY KEY,"
                                 " version INTEGER NOT NULL)",
                                 err);
    if (rc == HN_OK)
        rc = pg_conn_commit(c, err);
    if (rc != HN_OK) {
        pg_conn_close(c);
        return HN_ERROR;
    }
    storage_pool_start(&s->pool, c);
    return HN_OK;
}

int pg_store_shutdown(pg_store *s) {
    return storage_pool_shutdown(&s->pool);
}

void pg_store_free(pg_store *s) {
    if (!s)
        return;
    pg_store_shutdown(s);
    storage_pool_destroy(&s->pool);
    memset(s->dsn_copy, 0, strlen(s->dsn_copy)); /* it may hold a password */
    free(s->dsn_copy);
    free(s);
}

/* ---- pool ----------------------------------------------------------------- */

static hn_db *vt_acquire(void *state, hn_error *err) {
    /* a dead connection is reopened by its next call (pg_conn.h) */
    return storage_pool_acquire(&((pg_store *)state)->pool, err);
}

static void vt_release(void *state, hn_db *c) {
    if (!c)
        return;
    /* A connection must come back clean: roll back a transaction left open
     * (a caller's error path) so the next user does not inherit it. */
    pg_conn_reset_for_pool(c);
    storage_pool_release(&((pg_store *)state)->pool, c);
}

/* ---- statements and transactions ------------------------------------------ */

static hn_rc vt_exec(hn_db *c, const char *sql, const hn_value *args, size_t nargs,
                     int64_t *changes, hn_error *err) {
    return pg_conn_exec(c, sql, args, nargs, changes, err);
}

static hn_stmt *vt_query(hn_db *c, const char *sql, const hn_value *args, size_t nargs,
                         hn_error *err) {
    return pg_conn_query(c, sql, args, nargs, err);
}

/* Every row arrived with the query, so a step cannot fail. */
static int vt_step(hn_stmt *st, hn_error *err) {
    (void)err;
    return pg_stmt_step(st);
}

static hn_rc vt_begin(hn_db *c, hn_error *err) { return pg_conn_begin(c, err); }
static hn_rc vt_commit(hn_db *c, hn_error *err) { return pg_conn_commit(c, err); }
static hn_rc vt_rollback(hn_db *c, hn_error *err) { return pg_conn_rollback(c, err); }

/* ---- migrations (storage-sqlite/shared, shared with storage-sqlite) ------------------ */

static hn_rc exec_script(hn_db *c, const char *sql, hn_error *err) {
    return pg_conn_exec_script(c, sql, err);
}

/* Each step takes the transaction-level advisory lock shared by every process
 * on this database before it reads the version again: processes migrating at
 * once apply each step exactly once, and the lock goes away with the
 * transaction whatever happens. */
static const hn_value migrate_lock_key[] = {HN_V_INT(PG_MIGRATE_LOCK)};

static const storage_migrator *migrator(void *state, storage_migrator *m) {
    *m = (storage_migrator){.vt = &pg_storage_vt,
                            .state = state,
                            .table = PG_VERSION_TABLE,
                            .exec_script = exec_script,
                            .lock_sql = "SELECT pg_advisory_xact_lock(?)",
                            .lock_args = migrate_lock_key,
                            .n_lock_args = 1};
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

const hn_storage_vt pg_storage_vt = {
    .size = sizeof(hn_storage_vt),
    .version = HN_STORAGE_VERSION,
    .dialect = "postgres",
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
    .col_count = pg_stmt_col_count,
    .col_is_null = pg_stmt_col_is_null,
    .col_int = pg_stmt_col_int,
    .col_double = pg_stmt_col_double,
    .col_text = pg_stmt_col_text,
    .col_blob = pg_stmt_col_blob,
    .finish = pg_stmt_finish,
};
