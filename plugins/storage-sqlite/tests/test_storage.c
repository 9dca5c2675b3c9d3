/* storage-sqlite: the provider through its vtable, on a real file in a temp dir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sqlite_store.h"

static const hn_storage_vt *const vt = &sq_storage_vt;

typedef struct fixture {
    char dir[64];
    char path[128];
    sq_store *store;
} fixture;

static sq_store *open_store(const char *path, sq_sync_mode mode, int max_conns, int timeout_ms) {
    sq_options opt = {.path = path,
                      .busy_timeout_ms = timeout_ms,
                      .max_connections = max_conns,
                      .stmt_cache_size = 16,
                      .sync_mode = mode};
    sq_store *s = sq_store_new(&opt);
    assert_non_null(s);
    hn_error err = {0};
    if (sq_store_open(s, &err) != HN_OK)
        fail_msg("open %s: %s", path, err.message);
    return s;
}

static int setup_mode(void **state, sq_sync_mode mode) {
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/hn-sqlite-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/test.db", f->dir);
    f->store = open_store(f->path, mode, 64, 10000);
    *state = f;
    return 0;
}
static int setup_full(void **state) { return setup_mode(state, SQ_SYNC_FULL); }
static int setup_group(void **state) { return setup_mode(state, SQ_SYNC_GROUP); }

static int teardown(void **state) {
    fixture *f = *state;
    sq_store_free(f->store);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* ---- helpers -------------------------------------------------------------- */

static void must_exec(sq_store *s, hn_db *c, const char *sql, const hn_value *args, size_t n) {
    (void)s;
    hn_error err = {0};
    if (vt->exec(c, sql, args, n, NULL, &err) != HN_OK)
        fail_msg("%s: %s", sql, err.message);
}

static int64_t scalar(hn_db *c, const char *sql, const hn_value *args, size_t n) {
    hn_error err = {0};
    hn_stmt *st = vt->query(c, sql, args, n, &err);
    if (!st)
        fail_msg("%s: %s", sql, err.message);
    assert_int_equal(vt->step(st, &err), 1);
    int64_t v = vt->col_int(st, 0);
    assert_int_equal(vt->step(st, &err), 0);
    vt->finish(st);
    return v;
}

static int64_t count_rows(sq_store *s, const char *table) {
    hn_error err = {0};
    hn_db *c = vt->acquire(s, &err);
    assert_non_null(c);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s", table);
    int64_t n = scalar(c, sql, NULL, 0);
    vt->release(s, c);
    return n;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_pragmas_make_commits_durable(void **state) {
    fixture *f = *state;
    hn_error err = {0};
    hn_db *c = vt->acquire(f->store, &err);
    assert_non_null(c);
    hn_stmt *st = vt->query(c, "PRAGMA journal_mode", NULL, 0, &err);
    assert_int_equal(vt->step(st, &err), 1);
    assert_string_equal(vt->col_text(st, 0), "wal");
    vt->finish(st);
    /* FULL (2) fsyncs the WAL on every commit; group mode runs NORMAL (1)
     * and does the fsync itself */
    assert_int_equal(scalar(c, "PRAGMA synchronous", NULL, 0), 2);
    assert_int_equal(scalar(c, "PRAGMA foreign_keys", NULL, 0), 1);
    vt->release(f->store, c);
    assert_string_equal(vt->dialect, "sqlite");
    assert_int_equal(vt->version, HN_STORAGE_VERSION);
}

static void test_types_round_trip(void **state) {
    fixture *f = *state;
    hn_error err = {0};
    hn_db *c = vt->acquire(f->store, &err);
    must_exec(f->store, c,
              "CREATE TABLE t (i BIGINT, d DOUBLE PRECISION, s TEXT, b BLOB, n TEXT)", NULL, 0);
    static const unsigned char blob[] = {0, 1, 2, 0, 255};
    const char *text = "caf\xc3\xa9 \xe2\x98\x95"; /* UTF-8 */
    hn_value args[] = {HN_V_INT(INT64_MIN), HN_V_DOUBLE(-1.5e300), HN_V_TEXT(text),
                       HN_V_BLOB(blob, sizeof blob), HN_V_NULL};
    int64_t changes = -1;
    assert_int_equal(vt->exec(c, "INSERT INTO t VALUES (?, ?, ?, ?, ?)", args, 5, &changes, &err),
                     HN_OK);
    assert_int_equal(changes, 1);
    /* a TEXT with an explicit length takes just that many bytes */
    hn_value part[] = {HN_V_INT(INT64_MAX), HN_V_DOUBLE(0.25),
                       {.type = HN_V_TEXT_T, .u.b = {"abcdef", 3}}, HN_V_BLOB(NULL, 0),
                       HN_V_TEXT("x")};
    must_exec(f->store, c, "INSERT INTO t VALUES (?, ?, ?, ?, ?)", part, 5);

    hn_stmt *st = vt->query(c, "SELECT i, d, s, b, n FROM t ORDER BY i", NULL, 0, &err);
    assert_non_null(st);
    assert_int_equal(vt->col_count(st), 5);
    assert_int_equal(vt->step(st, &err), 1);
    assert_true(vt->col_int(st, 0) == INT64_MIN);
    assert_true(vt->col_double(st, 1) == -1.5e300);
    assert_string_equal(vt->col_text(st, 2), text);
    size_t len = 0;
    const void *p = vt->col_blob(st, 3, &len);
    assert_int_equal(len, sizeof blob);
    assert_memory_equal(p, blob, sizeof blob);
    assert_true(vt->col_is_null(st, 4));
    assert_string_equal(vt->col_text(st, 4), ""); /* never NULL */
    assert_false(vt->col_is_null(st, 0));

    assert_int_equal(vt->step(st, &err), 1);
    assert_true(vt->col_int(st, 0) == INT64_MAX);
    assert_true(vt->col_double(st, 1) == 0.25);
    assert_string_equal(vt->col_text(st, 2), "abc");
    p = vt->col_blob(st, 3, &len);
    assert_int_equal(len, 0);
    assert_non_null(p);
    assert_false(vt->col_is_null(st, 3)); /* an empty blob is not NULL */
    assert_int_equal(vt->step(st, &err), 0);
    vt->finish(st);

    /* RETURNING through query, and `changes` of an UPDATE */
    hn_value ret_args[] = {HN_V_INT(7)};
    st = vt->query(c, "INSERT INTO t (i) VALUES (?) RETURNING i * 2", ret_args, 1, &err);
    assert_int_equal(vt->step(st, &err), 1);
    assert_int_equal(vt->col_int(st, 0), 14);
    vt->finish(st);
    assert_int_equal(vt->exec(c, "UPDATE t SET n = 'y'", NULL, 0, &changes, &err), HN_OK);
    assert_int_equal(changes, 3);
    vt->release(f->store, c);
}

static void test_errors_are_reported_not_crashes(void **state) {
    fixture *f = *state;
    hn_error err = {0};
    hn_db *c = vt->acquire(f->store, &err);
    must_exec(f->store, c, "CREATE TABLE u (name TEXT PRIMARY KEY)", NULL, 0);
    hn_value a[] = {HN_V_TEXT("x")};
    must_exec(f->store, c, "INSERT INTO u VALUES (?)", a, 1);

    memset(&err, 0, sizeof err);
    assert_int_equal(vt->exec(c, "INSERT INTO u VALUES (?)", a, 1, NULL, &err), HN_ERROR);
    assert_string_equal(err.rc, "StorageConstraint");
    assert_int_equal(err.status, 409);

    memset(&err, 0, sizeof err);
    assert_null(vt->query(c, "SELEC nonsense", NULL, 0, &err));
    assert_string_equal(err.rc, "StorageError");
    assert_int_equal(err.status, 500);

    /* wrong parameter count */
    memset(&err, 0, sizeof err);
    assert_int_equal(vt->exec(c, "INSERT INTO u VALUES (?)", NULL, 0, NULL, &err), HN_ERROR);
    assert_non_null(strstr(err.message, "parameters"));

    /* two statements in one call would silently drop the second: refused */
    memset(&err, 0, sizeof err);
    assert_int_equal(vt->exec(c, "INSERT INTO u VALUES ('a'); INSERT INTO u VALUES ('b')",
                              NULL, 0, NULL, &err),
                     HN_ERROR);
    assert_int_equal(count_rows(f->store, "u"), 1);
    /* a trailing semicolon is fine */
    must_exec(f->store, c, "INSERT INTO u VALUES ('c');  ", NULL, 0);
    assert_int_equal(count_rows(f->store, "u"), 2);
    vt->release(f->store, c);
}

static void test_rollback_and_abandoned_transaction(void **state) {
    fixture *f = *state;
    hn_error err = {0};
    hn_db *c = vt->acquire(f->store, &err);
    must_exec(f->store, c, "CREATE TABLE r (x INTEGER)", NULL, 0);

    assert_int_equal(vt->begin(c, &err), HN_OK);
    must_exec(f->store, c, "INSERT INTO r VALUES (1)", NULL, 0);
    assert_int_equal(scalar(c, "SELECT COUNT(*) FROM r", NULL, 0), 1); /* own write visible */
    assert_int_equal(vt->rollback(c, &err), HN_OK);
    assert_int_equal(scalar(c, "SELECT COUNT(*) FROM r", NULL, 0), 0);

    assert_int_equal(vt->begin(c, &err), HN_OK);
    must_exec(f->store, c, "INSERT INTO r VALUES (2)", NULL, 0);
    assert_int_equal(vt->commit(c, &err), HN_OK);

    /* a transaction left open when the connection goes back is rolled back */
    assert_int_equal(vt->begin(c, &err), HN_OK);
    must_exec(f->store, c, "INSERT INTO r VALUES (3)", NULL, 0);
    vt->release(f->store, c);
    assert_int_equal(count_rows(f->store, "r"), 1);

    /* and the connection that comes back next is usable for a new one */
    c = vt->acquire(f->store, &err);
    assert_int_equal(vt->begin(c, &err), HN_OK);
    assert_int_equal(vt->commit(c, &err), HN_OK);
    vt->release(f->store, c);
}

static void test_nested_queries_with_same_sql(void **state) {
    fixture *f = *state;
    hn_error err = {0};
    hn_db *c = vt->acquire(f->store, &err);
    must_exec(f->store, c, "CREATE TABLE n (x INTEGER)", NULL, 0);
    must_exec(f->store, c, "INSERT INTO n VALUES (1), (2), (3)", NULL, 0);
    const char *sql = "SELECT x FROM n WHERE x >= ? ORDER BY x";
    hn_value a1[] = {HN_V_INT(1)}, a2[] = {HN_V_INT(2)};
    hn_stmt *outer = vt->query(c, sql, a1, 1, &err);
    int64_t pairs = 0;
    while (vt->step(outer, &err) == 1) {
        hn_stmt *inner = vt->query(c, sql, a2, 1, &err); /* same SQL while outer runs */
        assert_non_null(inner);
        while (vt->step(inner, &err) == 1)
            pairs += vt->col_int(inner, 0) * 10 + vt->col_int(outer, 0);
        vt->finish(inner);
    }
    vt->finish(outer);
    /* outer 1,2,3 x inner 2,3: sum(10*i) * 3 + sum(o) * 2 = 150 + 12 */
    assert_int_equal(pairs, 162);
    /* many distinct statements: more than the cache holds */
    for (int i = 0; i < 40; i++) {
        char q[64];
        snprintf(q, sizeof q, "SELECT %d + COUNT(*) FROM n", i);
        assert_int_equal(scalar(c, q, NULL, 0), i + 3);
    }
    vt->release(f->store, c);
}

static const hn_migration steps_v3[] = {
    {1, "CREATE TABLE m (x INTEGER); INSERT INTO m VALUES (1)"},
    {2, "CREATE TABLE m2 (y TEXT NOT NULL DEFAULT 'a'); INSERT INTO m VALUES (2);"},
    {3, "INSERT INTO m VALUES (3)"},
};

static void test_migrations_applied_once(void **state) {
    fixture *f = *state;
    hn_error err = {0};
    assert_int_equal(vt->schema_version(f->store, "plug", &err), 0);
    assert_int_equal(vt->migrate(f->store, "plug", steps_v3, 2, &err), HN_OK);
    assert_int_equal(vt->schema_version(f->store, "plug", &err), 2);
    assert_int_equal(count_rows(f->store, "m"), 2);
    /* again: nothing re-applied (CREATE TABLE would fail, rows would double) */
    assert_int_equal(vt->migrate(f->store, "plug", steps_v3, 2, &err), HN_OK);
    assert_int_equal(count_rows(f->store, "m"), 2);
    /* a new step later: only it runs */
    assert_int_equal(vt->migrate(f->store, "plug", steps_v3, 3, &err), HN_OK);
    assert_int_equal(vt->schema_version(f->store, "plug", &err), 3);
    assert_int_equal(count_rows(f->store, "m"), 3);
    /* owners are independent */
    assert_int_equal(vt->schema_version(f->store, "other", &err), 0);

    /* a failing step leaves no trace and the version where it was */
    const hn_migration bad[] = {
        steps_v3[0], steps_v3[1], steps_v3[2],
        {4, "CREATE TABLE half (z INTEGER); INSERT INTO no_such_table VALUES (1)"},
    };
    memset(&err, 0, sizeof err);
    assert_int_equal(vt->migrate(f->store, "plug", bad, 4, &err), HN_ERROR);
    assert_non_null(strstr(err.message, "migration plug 4"));
    assert_int_equal(vt->schema_version(f->store, "plug", &err), 3);
    hn_db *c = vt->acquire(f->store, &err);
    hn_value name[] = {HN_V_TEXT("half")};
    assert_int_equal(scalar(c, "SELECT COUNT(*) FROM sqlite_master WHERE name = ?", name, 1), 0);
    vt->release(f->store, c);

    /* out-of-order steps are refused before anything runs */
    const hn_migration unordered[] = {{2, "SELECT 1"}, {1, "SELECT 1"}};
    assert_int_equal(vt->migrate(f->store, "x", unordered, 2, &err), HN_ERROR);
    assert_int_equal(vt->schema_version(f->store, "x", &err), 0);
}

/* Several processes migrating the same owner at once apply each step once. */
static void test_migrations_from_several_processes(void **state) {
    fixture *f = *state;
    enum { N = 4 };
    pid_t kids[N];
    for (int i = 0; i < N; i++) {
        kids[i] = fork();
        assert_true(kids[i] >= 0);
        if (kids[i] == 0) {
            sq_store *s = open_store(f->path, SQ_SYNC_FULL, 4, 10000);
            hn_error err = {0};
            int rc = vt->migrate(s, "multi", steps_v3, 3, &err);
            sq_store_free(s);
            _exit(rc == HN_OK ? 0 : 1);
        }
    }
    for (int i = 0; i < N; i++) {
        int st = 0;
        assert_int_equal(waitpid(kids[i], &st, 0), kids[i]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    assert_int_equal(count_rows(f->store, "m"), 3);
    hn_error err = {0};
    assert_int_equal(vt->schema_version(f->store, "multi", &err), 3);
}

/* ---- concurrency ---------------------------------------------------------- */

enum { WRITERS = 8, TXNS_PER_WRITER = 60 };

typedef struct writer_arg {
    sq_store *store;
    int id;
    int failures;
    char first_error[sizeof(((hn_error *)0)->message)];
} writer_arg;

static void *writer(void *p) {
    writer_arg *w = p;
    for (int i = 0; i < TXNS_PER_WRITER; i++) {
        hn_error err = {0};
        hn_db *c = vt->acquire(w->store, &err);
        bool ok = c != NULL;
        /* even: a transaction that reads then writes (the classic SQLite
         * BUSY_SNAPSHOT trap), odd: two autocommit statements */
        if (ok && i % 2 == 0) {
            ok = vt->begin(c, &err) == HN_OK;
            hn_stmt *st = ok ? vt->query(c, "SELECT COUNT(*) FROM w", NULL, 0, &err) : NULL;
            ok = st && vt->step(st, &err) == 1;
            int64_t seen = ok ? vt->col_int(st, 0) : 0;
            vt->finish(st);
            hn_value a[] = {HN_V_INT(w->id), HN_V_INT(i), HN_V_INT(seen)};
            ok = ok && vt->exec(c, "INSERT INTO w VALUES (?, ?, ?)", a, 3, NULL, &err) == HN_OK;
            ok = ok && vt->exec(c, "INSERT INTO w VALUES (?, ?, ?)", a, 3, NULL, &err) == HN_OK;
            ok = ok && vt->commit(c, &err) == HN_OK;
            if (!ok && c)
                vt->rollback(c, NULL);
        } else if (ok) {
            hn_value a[] = {HN_V_INT(w->id), HN_V_INT(i), HN_V_INT(-1)};
            ok = vt->exec(c, "INSERT INTO w VALUES (?, ?, ?)", a, 3, NULL, &err) == HN_OK &&
                 vt->exec(c, "INSERT INTO w VALUES (?, ?, ?)", a, 3, NULL, &err) == HN_OK;
        }
        if (c)
            vt->release(w->store, c);
        if (!ok && w->failures++ == 0)
            snprintf(w->first_error, sizeof w->first_error, "%s", err.message);
    }
    return NULL;
}

static void test_concurrent_writers(void **state) {
    fixture *f = *state;
    hn_error err = {0};
    hn_db *c = vt->acquire(f->store, &err);
    must_exec(f->store, c, "CREATE TABLE w (writer INTEGER, i INTEGER, seen INTEGER)", NULL, 0);
    vt->release(f->store, c);
    pthread_t th[WRITERS];
    writer_arg args[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        args[i] = (writer_arg){.store = f->store, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, writer, &args[i]), 0);
    }
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(th[i], NULL);
        if (args[i].failures)
            fail_msg("writer %d: %d failures, first: %s", i, args[i].failures,
                     args[i].first_error);
    }
    assert_int_equal(count_rows(f->store, "w"), WRITERS * TXNS_PER_WRITER * 2);
}

static void test_pool_limit_waits_then_fails(void **state) {
    fixture *f = *state;
    sq_store *s = open_store(f->path, SQ_SYNC_FULL, 2, 100);
    hn_error err = {0};
    hn_db *a = vt->acquire(s, &err), *b = vt->acquire(s, &err);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    memset(&err, 0, sizeof err);
    assert_null(vt->acquire(s, &err));
    assert_string_equal(err.rc, "StorageBusy");
    assert_int_equal(err.status, 503);
    vt->release(s, a);
    hn_db *again = vt->acquire(s, &err);
    assert_ptr_equal(again, a); /* the warm connection is reused */
    vt->release(s, again);
    vt->release(s, b);
    sq_store_free(s);
    /* a stopped store refuses instead of crashing */
    sq_store *stopped = open_store(f->path, SQ_SYNC_FULL, 2, 100);
    sq_store_shutdown(stopped);
    assert_null(vt->acquire(stopped, &err));
    assert_int_equal(vt->schema_version(stopped, "x", &err), -1);
    sq_store_free(stopped);
}

/* ---- durability ----------------------------------------------------------- */

/* A child commits rows one by one and reports each id on a pipe only after
 * commit returned; the parent SIGKILLs it mid-stream. Every reported id must
 * be in the file afterwards. */
static void kill9_after_commit(fixture *f, sq_sync_mode mode) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t kid = fork();
    assert_true(kid >= 0);
    if (kid == 0) {
        close(fds[0]);
        sq_store *s = open_store(f->path, mode, 4, 10000);
        hn_error err = {0};
        const hn_migration m[] = {{1, "CREATE TABLE k (id INTEGER PRIMARY KEY)"}};
        if (vt->migrate(s, "kill9", m, 1, &err) != HN_OK)
            _exit(2);
        hn_db *c = vt->acquire(s, &err);
        for (int32_t id = 1;; id++) {
            hn_value a[] = {HN_V_INT(id)};
            if (id % 2) { /* both kinds of commit: explicit and autocommit */
                if (vt->begin(c, &err) != HN_OK ||
                    vt->exec(c, "INSERT INTO k VALUES (?)", a, 1, NULL, &err) != HN_OK ||
                    vt->commit(c, &err) != HN_OK)
                    _exit(3);
            } else if (vt->exec(c, "INSERT INTO k VALUES (?)", a, 1, NULL, &err) != HN_OK) {
                _exit(3);
            }
            if (write(fds[1], &id, sizeof id) != sizeof id)
                _exit(4);
        }
    }
    close(fds[1]);
    int32_t last = 0, id;
    while (last < 300 && read(fds[0], &id, sizeof id) == sizeof id)
        last = id;
    kill(kid, SIGKILL);
    int st = 0;
    assert_int_equal(waitpid(kid, &st, 0), kid);
    close(fds[0]);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    assert_int_equal(last, 300);

    sq_store *s = open_store(f->path, mode, 4, 10000);
    hn_error err = {0};
    hn_db *c = vt->acquire(s, &err);
    hn_value a[] = {HN_V_INT(last)};
    assert_int_equal(scalar(c, "SELECT COUNT(*) FROM k WHERE id <= ?", a, 1), last);
    /* and the database is intact after the crash */
    hn_stmt *q = vt->query(c, "PRAGMA integrity_check", NULL, 0, &err);
    assert_int_equal(vt->step(q, &err), 1);
    assert_string_equal(vt->col_text(q, 0), "ok");
    vt->finish(q);
    vt->release(s, c);
    sq_store_free(s);
}

static void test_kill9_right_after_commit(void **state) { kill9_after_commit(*state, SQ_SYNC_FULL); }

static void test_kill9_right_after_group_commit(void **state) {
    kill9_after_commit(*state, SQ_SYNC_GROUP);
}

static void test_group_mode_runs_normal_and_syncs_itself(void **state) {
    fixture *f = *state;
    hn_error err = {0};
    hn_db *c = vt->acquire(f->store, &err);
    assert_int_equal(scalar(c, "PRAGMA synchronous", NULL, 0), 1);
    vt->release(f->store, c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pragmas_make_commits_durable, setup_full, teardown),
        cmocka_unit_test_setup_teardown(test_types_round_trip, setup_full, teardown),
        cmocka_unit_test_setup_teardown(test_errors_are_reported_not_crashes, setup_full,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rollback_and_abandoned_transaction, setup_full,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rollback_and_abandoned_transaction, setup_group,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_nested_queries_with_same_sql, setup_full, teardown),
        cmocka_unit_test_setup_teardown(test_migrations_applied_once, setup_full, teardown),
        cmocka_unit_test_setup_teardown(test_migrations_applied_once, setup_group, teardown),
        cmocka_unit_test_setup_teardown(test_migrations_from_several_processes, setup_full,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_writers, setup_full, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_writers, setup_group, teardown),
        cmocka_unit_test_setup_teardown(test_pool_limit_waits_then_fails, setup_full, teardown),
        cmocka_unit_test_setup_teardown(test_kill9_right_after_commit, setup_full, teardown),
        cmocka_unit_test_setup_teardown(test_kill9_right_after_group_commit, setup_group,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_group_mode_runs_normal_and_syncs_itself,
                                        setup_group, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
