/* storage-pg: one connection to PostgreSQL, its prepared statements, and the
 * mapping of PostgreSQL's errors onto the SDK's.
 *
 * A connection (struct hn_db) is used by one thread at a time (the pool in
 * pg_store.c guarantees it), so nothing here locks. libpq is used in its
 * blocking mode: every call here waits for the server.
 *
 * Lost connections. Before each call outside a transaction the connection is
 * checked without blocking (a server that shut down has left a FATAL message
 * and an end of file on the socket) and re-opened if it is dead, so a restart
 * of PostgreSQL between two calls costs nothing but a reconnect. A
 * connection that dies during a call makes that call fail with 503
 * StorageUnavailable (a write outside a transaction may or may not have been
 * applied: the server did not say). Inside a transaction the loss is sticky:
 * every call fails until the caller rolls back (the server has rolled the
 * transaction back already), and commit says nothing was committed. The next
 * call after that reconnects.
 *
 * Prepared statements. Each connection prepares a statement once per SQL text
 * and parameter type signature and keeps up to `stmt_cache_size` of them
 * (LRU, DEALLOCATE on eviction). Parameter types: INT is bigint, DOUBLE is
 * double precision, BLOB is bytea (sent in binary), TEXT and NULL are left
 * for PostgreSQL to infer from the context (so '42' can go into an INTEGER
 * column as it does in SQLite); where it cannot infer one (`? IS NULL`) they
 * are text. Results come back in text form, all rows at once (so queries can
 * nest on one connection, as in SQLite).
 *
 * Pipelining (round trips). Inside a transaction, BEGIN and every exec that
 * does not ask for `changes` (and whose statement is already prepared) are
 * sent without waiting for their answers (libpq's pipeline mode); the next
 * call that needs an answer (an exec with `changes`, a query, commit) sends
 * its own command behind them and reads every answer at once. A writer's
 * transaction of N such statements costs one round trip instead of N + 2:
 * on a loaded machine each round trip waits for the server process to be
 * scheduled, which made the broker's single writer thread the bottleneck.
 * A queued statement that fails is reported by that next call, or by
 * commit, with its own status and rc (the transaction is aborted either
 * way: PostgreSQL's rule). Outside a transaction every call waits, so a
 * statement is durable when it returns. */
#ifndef PG_CONN_H
#define PG_CONN_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include <hn/storage.h>

/* What every connection of a store is opened with (owned by the store). */
typedef struct pg_conn_config {
    const char *const *keywords; /* libpq PQconnectdbParams arrays, NULL-terminated; */
    const char *const *values;   /* the dsn is the expanded "dbname" entry */
    int busy_timeout_ms;         /* lock_timeout of every session (0: wait forever) */
    int stmt_cache_size;         /* prepared statements kept per connection */
} pg_conn_config;

typedef struct pg_cached {
    uint64_t hash;  /* of sql and sig, to skip most strcmp calls */
    char *sql;      /* owned copy of the SDK text; NULL = free slot */
    char *sig;      /* owned: one letter per parameter (N I D T B) */
    char name[24];  /* server-side name, "hn_<n>" */
    int nparams;
    uint64_t last_used;
} pg_cached;

struct hn_db {
    PGconn *pg;                 /* NULL or dead: reopened by the next call */
    const pg_conn_config *cfg;
    pg_cached *cache;           /* cfg->stmt_cache_size slots */
    uint64_t tick;              /* LRU clock */
    uint64_t next_name;         /* statement names are never reused on one session */
    bool in_tx;                 /* the caller's transaction is open */
    bool pipeline;              /* in libpq's pipeline mode (only inside a transaction) */
    int queued;                 /* commands sent in it whose answers are not read yet */
    bool tx_lost;               /* the connection died inside it */
};

struct hn_stmt {
    struct hn_db *conn;
    PGresult *res;              /* every row of the result */
    int row, nrows, ncols;      /* row: current row, -1 before the first step */
    char **decoded;             /* per column: bytea of the current row, unescaped, NUL added */
    size_t *decoded_len;
};

/* Opens a connection (one attempt, bounded by libpq's connect_timeout) and
 * sets the session up (synchronous_commit on, lock_timeout, UTF-8). NULL with
 * err filled (503 StorageUnavailable) when the server cannot be reached. */
struct hn_db *pg_conn_open(const pg_conn_config *cfg, hn_error *err);
void pg_conn_close(struct hn_db *c);
/* True when the connection is usable as far as the client knows. */
bool pg_conn_alive(const struct hn_db *c);

/* The SDK's calls on one connection (see storage.h). */
hn_rc pg_conn_exec(struct hn_db *c, const char *sql, const hn_value *args, size_t nargs,
                   int64_t *changes, hn_error *err);
struct hn_stmt *pg_conn_query(struct hn_db *c, const char *sql, const hn_value *args,
                              size_t nargs, hn_error *err);
hn_rc pg_conn_begin(struct hn_db *c, hn_error *err);
hn_rc pg_conn_commit(struct hn_db *c, hn_error *err);
hn_rc pg_conn_rollback(struct hn_db *c, hn_error *err);
/* Runs SQL that may hold several statements, no parameters, no rows (the
 * simple query protocol). */
hn_rc pg_conn_exec_script(struct hn_db *c, const char *sql, hn_error *err);
/* Ends whatever the caller left open (a transaction) so the connection goes
 * back to the pool clean. */
void pg_conn_reset_for_pool(struct hn_db *c);

int pg_stmt_step(struct hn_stmt *st);
int pg_stmt_col_count(struct hn_stmt *st);
bool pg_stmt_col_is_null(struct hn_stmt *st, int col);
int64_t pg_stmt_col_int(struct hn_stmt *st, int col);
double pg_stmt_col_double(struct hn_stmt *st, int col);
const char *pg_stmt_col_text(struct hn_stmt *st, int col);
const void *pg_stmt_col_blob(struct hn_stmt *st, int col, size_t *len);
void pg_stmt_finish(struct hn_stmt *st);

/* Fills err with status/rc and "storage: <message>"; returns HN_ERROR. */
hn_rc pg_fail(hn_error *err, int status, const char *rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
