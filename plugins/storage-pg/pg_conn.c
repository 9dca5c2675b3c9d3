/* storage-pg: one connection, its prepared statements, binding and errors. */
#include "pg_conn.h"

#include <hn/error.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_sql.h"

/* Type OIDs from PostgreSQL's catalog (pg_type.dat); stable across versions. */
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_TEXT 25
#define OID_FLOAT8 701

#define MAX_PARAMS 65535 /* the protocol's limit */
/* Most commands sent in one pipeline before their answers are read. Their
 * answers are small (a CommandComplete each), but a client that only writes
 * while the server's answers pile up could deadlock both; this bound keeps
 * the answers far below the socket buffers. */
#define PIPELINE_MAX 128

/* ---- errors -------------------------------------------------------------- */

hn_rc pg_fail(hn_error *err, int status, const char *rc, const char *fmt, ...) {
    if (!err)
        return HN_ERROR;
    va_list ap;
    va_start(ap, fmt);
    hn_error_setv(err, status, rc, fmt, ap);
    va_end(ap);
    /* libpq's messages end with a newline (or two lines): keep one line */
    for (char *p = err->message; *p; p++) {
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    }
    size_t n = strlen(err->message);
    while (n > 0 && err->message[n - 1] == ' ')
        err->message[--n] = '\0';
    return HN_ERROR;
}

bool pg_conn_alive(const struct hn_db *c) {
    return c->pg && PQstatus(c->pg) == CONNECTION_OK;
}

/* The connection broke during (or before) a call. Inside the caller's
 * transaction that is sticky until rollback (see pg_conn.h). */
static hn_rc fail_lost(struct hn_db *c, const char *what, hn_error *err) {
    char why[256];
    snprintf(why, sizeof why, "%s", c->pg ? PQerrorMessage(c->pg) : "not connected");
    if (c->in_tx) {
        c->tx_lost = true;
        return pg_fail(err, 503, "StorageUnavailable",
                       "storage: %s: the connection to PostgreSQL was lost inside a "
                       "transaction (rolled back by the server): %s",
                       what, why);
    }
    return pg_fail(err, 503, "StorageUnavailable",
                   "storage: %s: the connection to PostgreSQL was lost, the statement's "
                   "outcome is unknown: %s",
                   what, why);
}

/* Maps a failed result onto the SDK's errors by SQLSTATE: integrity (class
 * 23) -> 409 StorageConstraint, lock/serialization/resource trouble -> 503
 * StorageBusy (try again), a lost server -> 503 StorageUnavailable, anything
 * else -> 500 StorageError. Only PostgreSQL's primary message is kept (the
 * detail can quote row values). */
static hn_rc fail_result(struct hn_db *c, const PGresult *res, const char *what,
                         hn_error *err) {
    if (!pg_conn_alive(c))
        return fail_lost(c, what, err);
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!msg)
        msg = PQerrorMessage(c->pg);
    if (!state)
        state = "";
    if (strncmp(state, "23", 2) == 0)
        return pg_fail(err, 409, "StorageConstraint", "storage: %s: %s", what, msg);
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
        strcmp(state, "55P03") == 0 || strcmp(state, "57014") == 0 ||
        strncmp(state, "53", 2) == 0)
        return pg_fail(err, 503, "StorageBusy", "storage: %s: %s (SQLSTATE %s)", what, msg,
                       state);
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0)
        return pg_fail(err, 503, "StorageUnavailable", "storage: %s: %s", what, msg);
    return pg_fail(err, 500, "StorageError", "storage: %s: %s", what, msg);
}

/* ---- open / close -------------------------------------------------------- */

/* Notices (and a FATAL that arrives while idle) would go to stderr by
 * default; library code prints nothing. */
static void quiet_notices(void *arg, const PGresult *res) {
    (void)arg;
    (void)res;
}

static hn_rc setup_session(struct hn_db *c, hn_error *err) {
    char sql[256];
    /* synchronous_commit: the contract says commit returns once durable, even
     * where the server's default was relaxed. lock_timeout: like SQLite's
     * busy_timeout, a writer waits this long for a row lock, then 503. */
    snprintf(sql, sizeof sql,
             "SET synchronous_commit = on; SET lock_timeout = %d; SET client_encoding = 'UTF8'",
             c->cfg->busy_timeout_ms);
    PGresult *res = PQexec(c->pg, sql);
    hn_rc rc = HN_OK;
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = fail_result(c, res, "session set-up", err);
    PQclear(res);
    return rc;
}

static void clear_cache(struct hn_db *c) {
    for (int i = 0; i < c->cfg->stmt_cache_size; i++) {
        free(c->cache[i].sql);
        free(c->cache[i].sig);
        c->cache[i] = (pg_cached){0};
    }
}

/* (Re)connects c->pg. Server-side statements die with the old session. */
static hn_rc connect_pg(struct hn_db *c, hn_error *err) {
    if (c->pg)
        PQfinish(c->pg);
    c->pipeline = false; /* whatever was queued died with the old session */
    c->queued = 0;
    if (c->cache)
        clear_cache(c);
    c->pg = PQconnectdbParams(c->cfg->keywords, c->cfg->values, 1);
    if (!c->pg)
        return pg_fail(err, 503, "StorageUnavailable", "storage: out of memory connecting");
    if (PQstatus(c->pg) != CONNECTION_OK) {
        pg_fail(err, 503, "StorageUnavailable", "storage: cannot connect to PostgreSQL: %s",
                PQerrorMessage(c->pg));
        PQfinish(c->pg);
        c->pg = NULL;
        return HN_ERROR;
    }
    PQsetNoticeReceiver(c->pg, quiet_notices, NULL);
    if (PQserverVersion(c->pg) < 100000) {
        pg_fail(err, 500, "StorageError",
                "storage: PostgreSQL %d is too old: version 10 or newer is needed",
                PQserverVersion(c->pg) / 10000);
        PQfinish(c->pg);
        c->pg = NULL;
        return HN_ERROR;
    }
    if (setup_session(c, err) != HN_OK) {
        PQfinish(c->pg);
        c->pg = NULL;
        return HN_ERROR;
    }
    return HN_OK;
}

struct hn_db *pg_conn_open(const pg_conn_config *cfg, hn_error *err) {
    struct hn_db *c = calloc(1, sizeof *c);
    if (!c) {
        pg_fail(err, 500, "StorageError", "storage: out of memory");
        return NULL;
    }
    c->cfg = cfg;
    if (cfg->stmt_cache_size > 0) {
        c->cache = calloc((size_t)cfg->stmt_cache_size, sizeof *c->cache);
        if (!c->cache) {
            free(c);
            pg_fail(err, 500, "StorageError", "storage: out of memory");
            return NULL;
        }
    }
    if (connect_pg(c, err) != HN_OK) {
        pg_conn_close(c);
        return NULL;
    }
    return c;
}

void pg_conn_close(struct hn_db *c) {
    if (!c)
        return;
    if (c->cache)
        clear_cache(c);
    free(c->cache);
    if (c->pg)
        PQfinish(c->pg);
    free(c);
}

/* True when the connection is still usable. Between calls nothing should
 * arrive on the socket; when something has, it is a server that went away
 * while we were idle: a FATAL message and then the end of the file. Reading
 * them (without blocking) turns the connection's status to bad. */
static bool probe(struct hn_db *c) {
    if (!pg_conn_alive(c))
        return false;
    struct pollfd pfd = {.fd = PQsocket(c->pg), .events = POLLIN};
    if (poll(&pfd, 1, 0) <= 0)
        return true; /* nothing pending: the usual case, one system call */
    /* the first read takes the message (PQisBusy parses it), the next the EOF */
    for (int i = 0; i < 3 && pg_conn_alive(c); i++) {
        if (!PQconsumeInput(c->pg))
            break;
        PQisBusy(c->pg);
    }
    return pg_conn_alive(c);
}

/* Called before every call. Outside a transaction a dead connection is
 * replaced; inside one, the loss is reported (and sticks until rollback). */
static hn_rc ensure_live(struct hn_db *c, const char *what, hn_error *err) {
    if (c->tx_lost)
        return pg_fail(err, 503, "StorageUnavailable",
                       "storage: %s: the connection to PostgreSQL was lost inside this "
                       "transaction; roll it back and try again",
                       what);
    if (c->pipeline) { /* answers may be arriving: the socket is not idle */
        if (pg_conn_alive(c))
            return HN_OK;
        c->pipeline = false; /* dead: nothing queued will be answered */
        c->queued = 0;
    }
    if (probe(c))
        return HN_OK;
    if (c->in_tx)
        return fail_lost(c, what, err);
    return connect_pg(c, err);
}

/* ---- statements ---------------------------------------------------------- */

static uint64_t hash2(const char *a, const char *b) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *a; a++)
        h = (h ^ (unsigned char)*a) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
    for (; *b; b++)
        h = (h ^ (unsigned char)*b) * 1099511628211ull;
    return h;
}

static char type_letter(hn_value_type t) {
    switch (t) {
    case HN_V_INT_T: return 'I';
    case HN_V_DOUBLE_T: return 'D';
    case HN_V_TEXT_T: return 'T';
    case HN_V_BLOB_T: return 'B';
    default: return 'N';
    }
}

/* Parameter types for the server. `text_for_unknown`: the retry when the
 * server could not infer a TEXT/NULL parameter's type (SQLSTATE 42P18). */
static Oid *param_types(const char *sig, int n, bool text_for_unknown) {
    Oid *t = calloc((size_t)(n > 0 ? n : 1), sizeof *t);
    if (!t)
        return NULL;
    for (int i = 0; i < n; i++) {
        switch (sig[i]) {
        case 'I': t[i] = OID_INT8; break;
        case 'D': t[i] = OID_FLOAT8; break;
        case 'B': t[i] = OID_BYTEA; break;
        default: t[i] = text_for_unknown ? OID_TEXT : 0; break;
        }
    }
    return t;
}

static bool is_indeterminate(const PGresult *res) {
    const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    return st && strcmp(st, "42P18") == 0;
}

static hn_rc simple(struct hn_db *c, const char *sql, hn_error *err) {
    PGresult *res = PQexec(c->pg, sql);
    hn_rc rc = HN_OK;
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = fail_result(c, res, sql, err);
    PQclear(res);
    return rc;
}

/* PREPARE, retrying with text for untyped parameters on 42P18. Inside a
 * transaction it runs under a savepoint, so a statement that does not
 * prepare (a typo, the retry above) leaves the transaction usable, as a
 * failed prepare does in SQLite. */
static hn_rc prepare(struct hn_db *c, const char *name, const char *pgsql, const char *sig,
                     int n, hn_error *err) {
    bool guarded = c->in_tx;
    if (guarded && simple(c, "SAVEPOINT hn_prepare", err) != HN_OK)
        return HN_ERROR;
    hn_rc rc = HN_ERROR;
    for (int attempt = 0; attempt < 2; attempt++) {
        Oid *types = param_types(sig, n, attempt == 1);
        if (!types)
            return pg_fail(err, 500, "StorageError", "storage: out of memory");
        PGresult *res = PQprepare(c->pg, name, pgsql, n, types);
        free(types);
        if (PQresultStatus(res) == PGRES_COMMAND_OK) {
            PQclear(res);
            rc = HN_OK;
            break;
        }
        bool retry = attempt == 0 && is_indeterminate(res);
        fail_result(c, res, "prepare", err);
        PQclear(res);
        if (!retry || !pg_conn_alive(c))
            break;
        if (guarded && simple(c, "ROLLBACK TO SAVEPOINT hn_prepare", err) != HN_OK)
            return HN_ERROR;
    }
    if (!guarded || !pg_conn_alive(c))
        return rc;
    hn_error ignored;
    if (rc != HN_OK)
        simple(c, "ROLLBACK TO SAVEPOINT hn_prepare", &ignored);
    if (simple(c, "RELEASE SAVEPOINT hn_prepare", rc == HN_OK ? err : &ignored) != HN_OK)
        return HN_ERROR;
    return rc;
}

/* The cached statement for (sql, sig), prepared now if it is not; NULL with
 * err on failure. With no cache, NULL and *uncached = the rewritten SQL. */
static pg_cached *statement(struct hn_db *c, const char *sql, const char *sig, size_t nargs,
                            char **uncached, hn_error *err) {
    *uncached = NULL;
    int cap = c->cfg->stmt_cache_size;
    uint64_t h = hash2(sql, sig);
    pg_cached *victim = NULL;
    for (int i = 0; i < cap; i++) {
        pg_cached *e = &c->cache[i];
        if (e->sql && e->hash == h && strcmp(e->sql, sql) == 0 && strcmp(e->sig, sig) == 0) {
            e->last_used = ++c->tick;
            return e;
        }
        if (!victim || !e->sql || (victim->sql && e->last_used < victim->last_used))
            victim = e;
    }
    int n = 0;
    char *pgsql = pg_sql_number_params(sql, &n);
    if (!pgsql) {
        pg_fail(err, 500, "StorageError", "storage: out of memory");
        return NULL;
    }
    if ((size_t)n != nargs) {
        pg_fail(err, 500, "StorageError", "storage: statement has %d parameters, %zu given", n,
                nargs);
        free(pgsql);
        return NULL;
    }
    if (!victim) {
        *uncached = pgsql;
        return NULL;
    }
    if (victim->sql) { /* evict: the server forgets it too */
        char dealloc[48];
        snprintf(dealloc, sizeof dealloc, "DEALLOCATE %s", victim->name);
        hn_error ignored;
        if (PQtransactionStatus(c->pg) != PQTRANS_INERROR)
            simple(c, dealloc, &ignored);
        free(victim->sql);
        free(victim->sig);
        *victim = (pg_cached){0};
    }
    pg_cached e = {.hash = h, .nparams = n};
    snprintf(e.name, sizeof e.name, "hn_%" PRIu64, ++c->next_name);
    e.sql = strdup(sql);
    e.sig = strdup(sig);
    if (!e.sql || !e.sig) {
        free(e.sql);
        free(e.sig);
        free(pgsql);
        pg_fail(err, 500, "StorageError", "storage: out of memory");
        return NULL;
    }
    hn_rc rc = prepare(c, e.name, pgsql, sig, n, err);
    free(pgsql);
    if (rc != HN_OK) {
        free(e.sql);
        free(e.sig);
        return NULL;
    }
    e.last_used = ++c->tick;
    *victim = e;
    return victim;
}

/* The parameters in libpq's form. Numbers travel as text; blobs in binary. */
typedef struct bound {
    const char **values;
    int *lengths, *formats;
    char *text;       /* numbers' text and NUL-terminated copies of sized text */
} bound;

static void bound_free(bound *b) {
    free(b->values);
    free(b->lengths);
    free(b->formats);
    free(b->text);
}

static hn_rc bind(const hn_value *args, size_t n, bound *b, hn_error *err) {
    memset(b, 0, sizeof *b);
    size_t room = 0;
    for (size_t i = 0; i < n; i++) {
        if (args[i].type == HN_V_INT_T || args[i].type == HN_V_DOUBLE_T)
            room += 32;
        else if (args[i].type == HN_V_TEXT_T && args[i].u.b.p && args[i].u.b.len != (size_t)-1)
            room += args[i].u.b.len + 1;
    }
    size_t k = n ? n : 1;
    b->values = calloc(k, sizeof *b->values);
    b->lengths = calloc(k, sizeof *b->lengths);
    b->formats = calloc(k, sizeof *b->formats);
    b->text = malloc(room ? room : 1);
    if (!b->values || !b->lengths || !b->formats || !b->text) {
        bound_free(b);
        return pg_fail(err, 500, "StorageError", "storage: out of memory");
    }
    char *t = b->text;
    for (size_t i = 0; i < n; i++) {
        const hn_value *v = &args[i];
        switch (v->type) {
        case HN_V_NULL_T:
            break;
        case HN_V_INT_T:
            b->values[i] = t;
            t += sprintf(t, "%" PRId64, v->u.i) + 1;
            break;
        case HN_V_DOUBLE_T:
            b->values[i] = t;
            if (isnan(v->u.d))
                t += sprintf(t, "NaN") + 1;
            else if (isinf(v->u.d))
                t += sprintf(t, "%sInfinity", v->u.d < 0 ? "-" : "") + 1;
            else
                t += sprintf(t, "%.17g", v->u.d) + 1;
            break;
        case HN_V_TEXT_T:
            if (!v->u.b.p)
                break;
            if (v->u.b.len == (size_t)-1) {
                b->values[i] = v->u.b.p;
            } else {
                if (memchr(v->u.b.p, '\0', v->u.b.len)) {
                    bound_free(b);
                    return pg_fail(err, 500, "StorageError",
                                   "storage: parameter %zu: text cannot hold a NUL byte "
                                   "(use a blob)",
                                   i + 1);
                }
                memcpy(t, v->u.b.p, v->u.b.len);
                t[v->u.b.len] = '\0';
                b->values[i] = t;
                t += v->u.b.len + 1;
            }
            break;
        case HN_V_BLOB_T:
            if (v->u.b.len > INT32_MAX) {
                bound_free(b);
                return pg_fail(err, 500, "StorageError", "storage: parameter %zu: blob too large",
                               i + 1);
            }
            /* a zero-length blob is a blob, not NULL: any non-NULL pointer */
            b->values[i] = v->u.b.p ? v->u.b.p : (v->u.b.len == 0 ? "" : NULL);
            b->lengths[i] = (int)v->u.b.len;
            b->formats[i] = 1;
            break;
        default:
            bound_free(b);
            return pg_fail(err, 500, "StorageError", "storage: parameter %zu has an unknown type %d",
                           i + 1, (int)v->type);
        }
    }
    return HN_OK;
}

/* The cached statement for (sql, sig), or NULL; never prepares. */
static pg_cached *find_cached(struct hn_db *c, const char *sql, const char *sig) {
    uint64_t h = hash2(sql, sig);
    for (int i = 0; i < c->cfg->stmt_cache_size; i++) {
        pg_cached *e = &c->cache[i];
        if (e->sql && e->hash == h && strcmp(e->sql, sql) == 0 && strcmp(e->sig, sig) == 0) {
            e->last_used = ++c->tick;
            return e;
        }
    }
    return NULL;
}

/* ---- pipelining (pg_conn.h) ------------------------------------------------ */

/* Ends pipeline mode: sends a Sync and reads every queued command's answer.
 * The first failure is the one reported (the server skips what follows it
 * until the Sync). With `last`, the last queued command's result is handed
 * back (only when every command succeeded). A lost connection is reported
 * as fail_lost reports it. */
static hn_rc settle(struct hn_db *c, PGresult **last, const char *what, hn_error *err) {
    if (last)
        *last = NULL;
    if (!c->pipeline)
        return HN_OK;
    int expected = c->queued, seen = 0, empty = 0;
    bool failed = false, lost = !PQpipelineSync(c->pg);
    hn_error first;
    memset(&first, 0, sizeof first);
    while (!lost) {
        PGresult *r = PQgetResult(c->pg);
        if (!r) {
            /* one NULL ends each command's answer; more than that, or a dead
             * socket, means the stream is broken */
            if (!pg_conn_alive(c) || ++empty > expected + 1)
                lost = true;
            continue;
        }
        empty = 0;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            break;
        }
        seen++;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            if (last && seen == expected && !failed) {
                *last = r;
                continue;
            }
        } else if (st != PGRES_PIPELINE_ABORTED && !failed) {
            if (!pg_conn_alive(c))
                lost = true;
            else
                fail_result(c, r, what, &first);
            failed = true;
        }
        PQclear(r);
    }
    c->queued = 0;
    /* back to one command at a time (a last NULL may still be due) */
    for (int i = 0; !lost && !PQexitPipelineMode(c->pg) && i < 3; i++) {
        PGresult *r = PQgetResult(c->pg);
        PQclear(r);
        if (i == 2)
            lost = true;
    }
    if (lost) {
        if (last && *last) {
            PQclear(*last);
            *last = NULL;
        }
        hn_rc rc = fail_lost(c, what, err);
        if (c->pg && PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF) {
            /* the session is unusable in this state: drop it (the next call
             * outside a transaction reconnects) */
            PQfinish(c->pg);
            c->pg = NULL;
        }
        c->pipeline = false;
        return rc;
    }
    c->pipeline = false;
    if (failed) {
        if (last && *last) {
            PQclear(*last);
            *last = NULL;
        }
        if (err)
            *err = first;
        return HN_ERROR;
    }
    return HN_OK;
}

/* Sends a prepared statement into the pipeline (entering it if needed). */
static hn_rc send_queued(struct hn_db *c, const pg_cached *e, const hn_value *args, size_t nargs,
                         hn_error *err) {
    bound b;
    if (bind(args, nargs, &b, err) != HN_OK)
        return HN_ERROR;
    if (!c->pipeline) {
        if (!PQenterPipelineMode(c->pg)) {
            bound_free(&b);
            return fail_result(c, NULL, "pipeline", err);
        }
        c->pipeline = true;
        c->queued = 0;
    }
    int sent = PQsendQueryPrepared(c->pg, e->name, (int)nargs, b.values, b.lengths, b.formats, 0);
    bound_free(&b);
    if (!sent) /* the socket broke: settle says how */
        return settle(c, NULL, "statement", err) == HN_OK
                   ? fail_result(c, NULL, "statement", err)
                   : HN_ERROR;
    c->queued++;
    return HN_OK;
}

/* exec without `changes` inside a transaction: queued when its statement is
 * prepared already. 1: queued; 0: run it the usual way; -1: error. */
static int try_queue(struct hn_db *c, const char *sql, const hn_value *args, size_t nargs,
                     hn_error *err) {
    if (!c->in_tx || c->tx_lost || !c->pg || !sql || nargs > MAX_PARAMS || (nargs && !args))
        return 0;
    char sigbuf[64];
    if (nargs >= sizeof sigbuf)
        return 0;
    for (size_t i = 0; i < nargs; i++)
        sigbuf[i] = type_letter(args[i].type);
    sigbuf[nargs] = '\0';
    pg_cached *e = find_cached(c, sql, sigbuf);
    if (!e || e->nparams != (int)nargs)
        return 0;
    if (ensure_live(c, "statement", err) != HN_OK)
        return -1;
    if (c->pipeline && c->queued >= PIPELINE_MAX && settle(c, NULL, "statement", err) != HN_OK)
        return -1;
    return send_queued(c, e, args, nargs, err) == HN_OK ? 1 : -1;
}

/* Runs one statement; the result (tuples or command) or NULL with err. */
static PGresult *run(struct hn_db *c, const char *sql, const hn_value *args, size_t nargs,
                     hn_error *err) {
    if (!sql)
        return pg_fail(err, 500, "StorageError", "storage: NULL sql"), NULL;
    if (nargs > MAX_PARAMS || (nargs && !args))
        return pg_fail(err, 500, "StorageError", "storage: bad parameter list"), NULL;
    if (ensure_live(c, "statement", err) != HN_OK)
        return NULL;
    char sigbuf[64];
    char *sig = nargs < sizeof sigbuf ? sigbuf : malloc(nargs + 1);
    if (!sig)
        return pg_fail(err, 500, "StorageError", "storage: out of memory"), NULL;
    for (size_t i = 0; i < nargs; i++)
        sig[i] = type_letter(args[i].type);
    sig[nargs] = '\0';
    PGresult *res = NULL;
    char *uncached = NULL;
    bound b;
    if (c->pipeline) {
        /* queued commands first; a prepared statement rides along with them */
        pg_cached *q = find_cached(c, sql, sig);
        bool ok = !q || send_queued(c, q, args, nargs, err) == HN_OK;
        if (!ok || settle(c, q ? &res : NULL, "statement", err) != HN_OK || q) {
            if (sig != sigbuf)
                free(sig);
            return res;
        }
    }
    pg_cached *e = statement(c, sql, sig, nargs, &uncached, err);
    if ((e || uncached) && bind(args, nargs, &b, err) == HN_OK) {
        if (e) {
            res = PQexecPrepared(c->pg, e->name, (int)nargs, b.values, b.lengths, b.formats, 0);
        } else {
            /* no free cache slot: the unnamed statement, one round trip */
            Oid *types = param_types(sig, (int)nargs, false);
            res = types ? PQexecParams(c->pg, uncached, (int)nargs, types, b.values, b.lengths,
                                       b.formats, 0)
                        : NULL;
            if (res && is_indeterminate(res) && !c->in_tx) {
                PQclear(res);
                free(types);
                types = param_types(sig, (int)nargs, true);
                res = types ? PQexecParams(c->pg, uncached, (int)nargs, types, b.values,
                                           b.lengths, b.formats, 0)
                            : NULL;
            }
            free(types);
        }
        bound_free(&b);
        ExecStatusType st = PQresultStatus(res);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            fail_result(c, res, "statement", err);
            PQclear(res);
            res = NULL;
        }
    }
    free(uncached);
    if (sig != sigbuf)
        free(sig);
    return res;
}

static int64_t parse_changes(const PGresult *res) {
    const char *status = PQcmdStatus((PGresult *)res);
    if (strncmp(status, "SELECT", 6) == 0)
        return 0; /* rows read, not changed */
    const char *n = PQcmdTuples((PGresult *)res);
    return n && *n ? strtoll(n, NULL, 10) : 0;
}

hn_rc pg_conn_exec(struct hn_db *c, const char *sql, const hn_value *args, size_t nargs,
                   int64_t *changes, hn_error *err) {
    if (!changes) {
        int queued = try_queue(c, sql, args, nargs, err);
        if (queued != 0)
            return queued > 0 ? HN_OK : HN_ERROR;
    }
    PGresult *res = run(c, sql, args, nargs, err);
    if (!res)
        return HN_ERROR;
    if (changes)
        *changes = parse_changes(res);
    PQclear(res);
    return HN_OK;
}

struct hn_stmt *pg_conn_query(struct hn_db *c, const char *sql, const hn_value *args,
                              size_t nargs, hn_error *err) {
    PGresult *res = run(c, sql, args, nargs, err);
    if (!res)
        return NULL;
    struct hn_stmt *st = calloc(1, sizeof *st);
    int ncols = PQnfields(res);
    if (st) {
        st->decoded = calloc((size_t)(ncols > 0 ? ncols : 1), sizeof *st->decoded);
        st->decoded_len = calloc((size_t)(ncols > 0 ? ncols : 1), sizeof *st->decoded_len);
    }
    if (!st || !st->decoded || !st->decoded_len) {
        if (st) {
            free(st->decoded);
            free(st->decoded_len);
        }
        free(st);
        PQclear(res);
        pg_fail(err, 500, "StorageError", "storage: out of memory");
        return NULL;
    }
    st->conn = c;
    st->res = res;
    st->row = -1;
    st->nrows = PQntuples(res);
    st->ncols = ncols;
    return st;
}

hn_rc pg_conn_exec_script(struct hn_db *c, const char *sql, hn_error *err) {
    if (ensure_live(c, "script", err) != HN_OK || settle(c, NULL, "script", err) != HN_OK)
        return HN_ERROR;
    PGresult *res = PQexec(c->pg, sql);
    ExecStatusType st = PQresultStatus(res);
    hn_rc rc = HN_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY)
        rc = fail_result(c, res, "script", err);
    PQclear(res);
    return rc;
}

/* ---- transactions --------------------------------------------------------- */

static bool server_in_tx(const struct hn_db *c) {
    if (!c->pg)
        return false;
    PGTransactionStatusType t = PQtransactionStatus(c->pg);
    return t == PQTRANS_INTRANS || t == PQTRANS_INERROR;
}

hn_rc pg_conn_begin(struct hn_db *c, hn_error *err) {
    if (c->in_tx || c->tx_lost || (pg_conn_alive(c) && server_in_tx(c)))
        return pg_fail(err, 500, "StorageError",
                       "storage: cannot start a transaction within a transaction");
    if (ensure_live(c, "begin", err) != HN_OK)
        return HN_ERROR;
    /* BEGIN goes out with the transaction's first command that needs an
     * answer (or with COMMIT) */
    if (PQenterPipelineMode(c->pg)) {
        c->pipeline = true;
        c->queued = 0;
        if (PQsendQueryParams(c->pg, "BEGIN", 0, NULL, NULL, NULL, NULL, 0)) {
            c->queued = 1;
            c->in_tx = true;
            return HN_OK;
        }
        if (settle(c, NULL, "begin", err) != HN_OK)
            return HN_ERROR;
    }
    if (simple(c, "BEGIN", err) != HN_OK)
        return HN_ERROR;
    c->in_tx = true;
    return HN_OK;
}

/* Commit of a pipelined transaction: COMMIT joins the queued commands. */
static hn_rc commit_queued(struct hn_db *c, hn_error *err) {
    PGresult *res = NULL;
    bool sent = PQsendQueryParams(c->pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) != 0;
    if (sent)
        c->queued++;
    hn_error e;
    memset(&e, 0, sizeof e);
    hn_rc rc = settle(c, sent ? &res : NULL, "commit", &e);
    if (rc == HN_OK && !sent)
        rc = fail_result(c, NULL, "commit", &e);
    if (rc != HN_OK) {
        if (c->tx_lost || !pg_conn_alive(c)) {
            c->tx_lost = c->in_tx = false;
            return pg_fail(err, 503, "StorageUnavailable",
                           "storage: commit: the connection to PostgreSQL was lost while the "
                           "transaction was being sent and committed; whether it committed is "
                           "unknown");
        }
        /* a statement failed: the server skipped the rest and COMMIT, and the
         * transaction waits for a ROLLBACK; the statement's own error is the
         * answer (409 StorageConstraint stays 409) */
        hn_error ignored;
        simple(c, "ROLLBACK", &ignored);
        c->in_tx = false;
        if (err)
            *err = e;
        return HN_ERROR;
    }
    c->in_tx = false;
    if (strcmp(PQcmdStatus(res), "ROLLBACK") == 0)
        rc = pg_fail(err, 500, "StorageError",
                     "storage: commit: PostgreSQL rolled the transaction back");
    PQclear(res);
    return rc;
}

hn_rc pg_conn_commit(struct hn_db *c, hn_error *err) {
    if (c->tx_lost) {
        c->tx_lost = c->in_tx = false;
        return pg_fail(err, 503, "StorageUnavailable",
                       "storage: commit: the connection to PostgreSQL was lost inside the "
                       "transaction; nothing of it was committed");
    }
    if (c->pipeline)
        return commit_queued(c, err);
    if (!c->in_tx && !(pg_conn_alive(c) && server_in_tx(c)))
        return pg_fail(err, 500, "StorageError",
                       "storage: cannot commit - no transaction is active");
    if (pg_conn_alive(c) && PQtransactionStatus(c->pg) == PQTRANS_INERROR) {
        /* PostgreSQL would answer COMMIT with ROLLBACK and no error */
        hn_error ignored;
        simple(c, "ROLLBACK", &ignored);
        c->in_tx = false;
        return pg_fail(err, 500, "StorageError",
                       "storage: commit: a statement of this transaction failed, so PostgreSQL "
                       "rolled all of it back");
    }
    if (!probe(c)) {
        c->in_tx = false;
        return pg_fail(err, 503, "StorageUnavailable",
                       "storage: commit: the connection to PostgreSQL was lost inside the "
                       "transaction; nothing of it was committed");
    }
    PGresult *res = PQexec(c->pg, "COMMIT");
    hn_rc rc = HN_OK;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        if (!pg_conn_alive(c))
            rc = pg_fail(err, 503, "StorageUnavailable",
                         "storage: commit: the connection to PostgreSQL was lost during COMMIT; "
                         "whether the transaction committed is unknown: %s",
                         PQerrorMessage(c->pg));
        else
            rc = fail_result(c, res, "commit", err);
    } else if (strcmp(PQcmdStatus(res), "ROLLBACK") == 0) {
        rc = pg_fail(err, 500, "StorageError",
                     "storage: commit: PostgreSQL rolled the transaction back");
    }
    PQclear(res);
    c->in_tx = false; /* COMMIT ends the transaction whatever it answered */
    return rc;
}

hn_rc pg_conn_rollback(struct hn_db *c, hn_error *err) {
    if (c->pipeline) { /* what was queued is rolled back with the rest */
        hn_error ignored;
        settle(c, NULL, "rollback", &ignored);
    }
    bool lost = c->tx_lost;
    c->tx_lost = false;
    c->in_tx = false;
    if (lost || !pg_conn_alive(c))
        return HN_OK; /* the server rolled it back when the connection died */
    if (!server_in_tx(c))
        return HN_OK; /* nothing to roll back, as in SQLite */
    return simple(c, "ROLLBACK", err);
}

void pg_conn_reset_for_pool(struct hn_db *c) {
    if (c->in_tx || c->tx_lost || c->pipeline || (pg_conn_alive(c) && server_in_tx(c))) {
        hn_error ignored;
        pg_conn_rollback(c, &ignored);
    }
}

/* ---- rows ----------------------------------------------------------------- */

static void drop_decoded(struct hn_stmt *st) {
    for (int i = 0; i < st->ncols; i++) {
        free(st->decoded[i]);
        st->decoded[i] = NULL;
        st->decoded_len[i] = 0;
    }
}

int pg_stmt_step(struct hn_stmt *st) {
    drop_decoded(st);
    if (st->row < st->nrows)
        st->row++;
    return st->row < st->nrows ? 1 : 0;
}

int pg_stmt_col_count(struct hn_stmt *st) { return st->ncols; }

static bool has_cell(const struct hn_stmt *st, int col) {
    return st->row >= 0 && st->row < st->nrows && col >= 0 && col < st->ncols;
}

bool pg_stmt_col_is_null(struct hn_stmt *st, int col) {
    return !has_cell(st, col) || PQgetisnull(st->res, st->row, col);
}

static const char *cell(const struct hn_stmt *st, int col) {
    if (!has_cell(st, col) || PQgetisnull(st->res, st->row, col))
        return NULL;
    return PQgetvalue(st->res, st->row, col);
}

int64_t pg_stmt_col_int(struct hn_stmt *st, int col) {
    const char *v = cell(st, col);
    if (!v)
        return 0;
    if (v[0] && !v[1] && (v[0] == 't' || v[0] == 'f')) /* boolean */
        return v[0] == 't';
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end == '.' || *end == 'e' || *end == 'E' || *end == 'I' || *end == 'N') {
        /* a real (or numeric) asked for as an integer: truncated, as SQLite does */
        double d = strtod(v, NULL);
        if (isnan(d))
            return 0;
        if (d >= 9223372036854775807.0)
            return INT64_MAX;
        if (d <= -9223372036854775808.0)
            return INT64_MIN;
        return (int64_t)d;
    }
    return (int64_t)x; /* out of range: clamped by strtoll, as SQLite clamps */
}

double pg_stmt_col_double(struct hn_stmt *st, int col) {
    const char *v = cell(st, col);
    if (!v)
        return 0.0;
    if (v[0] && !v[1] && (v[0] == 't' || v[0] == 'f'))
        return v[0] == 't' ? 1.0 : 0.0;
    return strtod(v, NULL);
}

/* bytea arrives as text ("\x..." hex); unescaped once per row and column. */
static const char *decoded(struct hn_stmt *st, int col, size_t *len) {
    if (st->decoded[col]) {
        *len = st->decoded_len[col];
        return st->decoded[col];
    }
    size_t n = 0;
    unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(st->res, st->row, col),
                                         &n);
    if (!raw)
        return NULL;
    char *copy = malloc(n + 1); /* NUL-terminated, for col_text */
    if (copy) {
        memcpy(copy, raw, n);
        copy[n] = '\0';
    }
    PQfreemem(raw);
    if (!copy)
        return NULL;
    st->decoded[col] = copy;
    st->decoded_len[col] = n;
    *len = n;
    return copy;
}

const char *pg_stmt_col_text(struct hn_stmt *st, int col) {
    const char *v = cell(st, col);
    if (!v)
        return "";
    if (PQftype(st->res, col) == OID_BYTEA) {
        size_t n;
        const char *d = decoded(st, col, &n);
        return d ? d : "";
    }
    return v;
}

const void *pg_stmt_col_blob(struct hn_stmt *st, int col, size_t *len) {
    size_t n = 0;
    const char *out = "";
    const char *v = cell(st, col);
    if (v && PQftype(st->res, col) == OID_BYTEA) {
        const char *d = decoded(st, col, &n);
        if (d)
            out = d;
        else
            n = 0;
    } else if (v) {
        out = v;
        n = (size_t)PQgetlength(st->res, st->row, col);
    }
    if (len)
        *len = n;
    return out; /* zero-length and NULL blobs: a valid pointer to nothing */
}

void pg_stmt_finish(struct hn_stmt *st) {
    if (!st)
        return;
    drop_decoded(st);
    free(st->decoded);
    free(st->decoded_len);
    PQclear(st->res);
    free(st);
}
