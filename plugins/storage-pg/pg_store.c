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

#define KEYWORDS 8

struct pg_store {
    pg_options opt;          /* opt.dsn points to dsn_copy */
    char *dsn_copy;
    char connect_timeout[16];
    const char *keywords[KEYWORDS + 1];
    const char *values[KEYWORDS + 1];
    pg_conn_config cfg;      /* what every connection is opened with */
    bool opened;
    pthread_mutex_t mu;      /* guards the pool fields below */
    pthread_cond_t returned; /* a connection came back to the pool */
    struct hn_db *idle;      /* LIFO: the most recently used (warmest cache) goes out first */
    int open_count;          /* connections that exist, idle or lent out */
    bool shutting_down;
};

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
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->returned, NULL);
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
    if (s->opened)
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
    pthread_mutex_lock(&s->mu);
    s->open_count = 1;
    s->idle = c;
    s->shutting_down = false;
    s->opened = true;
    pthread_mutex_unlock(&s->mu);
    return HN_OK;
}

int pg_store_shutdown(pg_store *s) {
    pthread_mutex_lock(&s->mu);
    s->shutting_down = true;
    struct hn_db *c = s->idle;
    s->idle = NULL;
    while (c) {
        struct hn_db *next = c->next_idle;
        pg_conn_close(c);
        s->open_count--;
        c = next;
    }
    int lent = s->open_count;
    s->opened = false;
    pthread_cond_broadcast(&s->returned);
    pthread_mutex_unlock(&s->mu);
    return lent;
}

void pg_store_free(pg_store *s) {
    if (!s)
        return;
    pg_store_shutdown(s);
    pthread_cond_destroy(&s->returned);
    pthread_mutex_destroy(&s->mu);
    memset(s->dsn_copy, 0, strlen(s->dsn_copy)); /* it may hold a password */
    free(s->dsn_copy);
    free(s);
}

/* ---- pool ----------------------------------------------------------------- */

static hn_db *vt_acquire(void *state, hn_error *err) {
    pg_store *s = state;
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
            pg_fail(err, 500, "StorageError", "storage: the postgres store is not running");
            return NULL;
        }
        if (s->idle) {
            struct hn_db *c = s->idle;
            s->idle = c->next_idle;
            c->next_idle = NULL;
            pthread_mutex_unlock(&s->mu);
            return c; /* a dead one is reopened by its next call */
        }
        if (s->open_count < s->opt.max_connections)
            break;
        if (pthread_cond_timedwait(&s->returned, &s->mu, &deadline) == ETIMEDOUT) {
            pthread_mutex_unlock(&s->mu);
            pg_fail(err, 503, "StorageBusy", "storage: all %d connections are in use",
                    s->opt.max_connections);
            return NULL;
        }
    }
    s->open_count++; /* reserve the slot, connect outside the lock */
    pthread_mutex_unlock(&s->mu);
    struct hn_db *c = pg_conn_open(&s->cfg, err);
    if (!c) {
        pthread_mutex_lock(&s->mu);
        s->open_count--;
        pthread_cond_signal(&s->returned);
        pthread_mutex_unlock(&s->mu);
    }
    return c;
}

static void vt_release(void *state, hn_db *c) {
    pg_store *s = state;
    if (!c)
        return;
    /* A connection must come back clean: roll back a transaction left open
     * (a caller's error path) so the next user does not inherit it. */
    pg_conn_reset_for_pool(c);
    pthread_mutex_lock(&s->mu);
    if (s->shutting_down) {
        s->open_count--;
        pthread_mutex_unlock(&s->mu);
        pg_conn_close(c);
        return;
    }
    c->next_idle = s->idle;
    s->idle = c;
    pthread_cond_signal(&s->returned);
    pthread_mutex_unlock(&s->mu);
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

/* ---- migrations ----------------------------------------------------------- */

static int read_version(hn_db *c, const char *owner, hn_error *err) {
    hn_value args[] = {HN_V_TEXT(owner)};
    hn_stmt *st = pg_conn_query(c, "SELECT version FROM " PG_VERSION_TABLE " WHERE owner = ?",
                                args, 1, err);
    if (!st)
        return -1;
    int v = pg_stmt_step(st) == 1 ? (int)pg_stmt_col_int(st, 0) : 0;
    pg_stmt_finish(st);
    return v;
}

static int vt_schema_version(void *state, const char *owner, hn_error *err) {
    hn_db *c = vt_acquire(state, err);
    if (!c)
        return -1;
    int v = read_version(c, owner, err);
    vt_release(state, c);
    return v;
}

/* One step in its own transaction, under a transaction-level advisory lock
 * shared by every process on this database: the version is read again
 * inside it, so processes migrating at once apply each step exactly once,
 * and the lock goes away with the transaction whatever happens. */
static hn_rc apply_step(hn_db *c, const char *owner, const hn_migration *m, hn_error *err) {
    if (pg_conn_begin(c, err) != HN_OK)
        return HN_ERROR;
    hn_value key[] = {HN_V_INT(PG_MIGRATE_LOCK)};
    if (pg_conn_exec(c, "SELECT pg_advisory_xact_lock(?)", key, 1, NULL, err) != HN_OK)
        goto fail;
    int cur = read_version(c, owner, err);
    if (cur < 0)
        goto fail;
    if (cur >= m->version)
        return pg_conn_commit(c, err); /* someone else got here first */
    if (pg_conn_exec_script(c, m->sql, err) != HN_OK) {
        if (err) {
            char what[sizeof err->message];
            snprintf(what, sizeof what, "%s", err->message);
            snprintf(err->message, sizeof err->message, "migration %s %d: %.400s", owner,
                     m->version, what);
        }
        goto fail;
    }
    hn_value args[] = {HN_V_TEXT(owner), HN_V_INT(m->version)};
    if (pg_conn_exec(c,
                     "INSERT INTO " PG_VERSION_TABLE " (owner, version) VALUES (?, ?) "
                     "ON CONFLICT (owner) DO UPDATE SET version = excluded.version",
                     args, 2, NULL, err) != HN_OK)
        goto fail;
    return pg_conn_commit(c, err);
fail:
    pg_conn_rollback(c, NULL);
    return HN_ERROR;
}

static hn_rc vt_migrate(void *state, const char *owner, const hn_migration *steps, size_t n,
                        hn_error *err) {
    if (!owner || !owner[0])
        return pg_fail(err, 500, "StorageError", "storage: migrate: no owner");
    for (size_t i = 0; i < n; i++) {
        if (steps[i].version <= 0 || (i > 0 && steps[i].version <= steps[i - 1].version) ||
            !steps[i].sql)
            return pg_fail(err, 500, "StorageError",
                           "storage: migrate %s: step %zu: versions must be 1, 2, ... in "
                           "increasing order, each with SQL",
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
