/* broker: durable rows and group commit.
 *
 * Every change of the index that must survive a restart becomes a br_op: a
 * list of SQL statements (with copied arguments), image files to delete after
 * the commit, and optionally a suspended HTTP request to answer once the
 * change is durable. Handlers queue ops while holding b->lock, so ops reach
 * the database in the order the index changed. One writer thread takes every
 * op queued so far (up to `commit_batch`), runs them in one transaction and
 * commits once: N concurrent requests cost one fsync instead of N (group
 * commit). It then hands each answer back to the request's loop thread with
 * api->req_post.
 *
 * If a batch fails, it is rolled back and each op is retried in its own
 * transaction, so one bad op cannot fail its neighbours; an op that still
 * fails is answered with a 500 StorageError and its on_fail callback undoes
 * its effect on the index. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker.h"
#include "cluster.h"

#define OP_MAX_ARGS 16

typedef struct op_stmt {
    const char *sql; /* a string literal: not owned */
    size_t nargs;
    hn_value args[OP_MAX_ARGS];
    /* br_op_guard_max: sql is a query whose first column must stay <= max */
    bool guard;
    /* br_op_lock: sql takes the advisory lock args[0] (an integer key) */
    bool lock;
    long long max;
    int status;
    const char *rc, *fmt; /* string literals */
} op_stmt;

struct br_op {
    br_op *next;
    broker *b;
    op_stmt *stmts;
    int n_stmts, cap_stmts;
    void **owned; /* copies of TEXT/BLOB arguments */
    int n_owned, cap_owned;
    char **removes;
    int n_removes, cap_removes;
    hn_request *req;
    int status;
    json_t *body;
    int hook_id;
    json_t *hook_info;
    json_t *also; /* [[hook_id, info], ...]: more notifications after hook_id */
    json_t *requeued; /* ids of requests whose unsynced_n this op holds */
    void (*on_fail)(broker *b, void *arg);
    void *fail_arg;
    bool failed;
    bool transient;    /* it failed because the database was unavailable (503) */
    bool retry;        /* br_op_retry: kept and committed later instead of failing */
    bool guard_failed; /* a br_op_guard_max limit refused it: err is the answer */
    hn_error err;
    atomic_int refs; /* the writer's, plus one per br_op_hold */
};

/* ---- building ops -------------------------------------------------------------- */

br_op *br_op_new(broker *b) {
    br_op *op = calloc(1, sizeof(*op));
    if (op) {
        op->b = b;
        op->hook_id = -1;
        atomic_init(&op->refs, 1);
    }
    return op;
}

static void op_free(br_op *op) {
    if (!op || atomic_fetch_sub(&op->refs, 1) > 1)
        return;
    for (int i = 0; i < op->n_owned; i++)
        free(op->owned[i]);
    free(op->owned);
    free(op->stmts);
    for (int i = 0; i < op->n_removes; i++)
        free(op->removes[i]);
    free(op->removes);
    json_decref(op->body);
    json_decref(op->hook_info);
    json_decref(op->also);
    json_decref(op->requeued);
    free(op->fail_arg);
    free(op);
}

static int grow(void **arr, int *cap, int need, size_t elem) {
    if (need <= *cap)
        return 0;
    int nc = *cap ? *cap * 2 : 4;
    while (nc < need)
        nc *= 2;
    void *p = realloc(*arr, (size_t)nc * elem);
    if (!p)
        return -1;
    *arr = p;
    *cap = nc;
    return 0;
}

static int op_own(br_op *op, void *p) {
    if (!p || grow((void **)&op->owned, &op->cap_owned, op->n_owned + 1, sizeof(void *)) != 0) {
        free(p);
        return -1;
    }
    op->owned[op->n_owned++] = p;
    return 0;
}

int br_op_sql(br_op *op, const char *sql, const hn_value *args, size_t nargs) {
    if (!op || nargs > OP_MAX_ARGS ||
        grow((void **)&op->stmts, &op->cap_stmts, op->n_stmts + 1, sizeof(op_stmt)) != 0)
        return -1;
    op_stmt *st = &op->stmts[op->n_stmts];
    memset(st, 0, sizeof(*st));
    st->sql = sql;
    st->nargs = nargs;
    for (size_t i = 0; i < nargs; i++) {
        st->args[i] = args[i];
        if (args[i].type == HN_V_TEXT_T && args[i].u.b.p) {
            size_t len = args[i].u.b.len == (size_t)-1 ? strlen(args[i].u.b.p) : args[i].u.b.len;
            char *copy = malloc(len + 1);
            if (copy) {
                memcpy(copy, args[i].u.b.p, len);
                copy[len] = '\0';
            }
            if (op_own(op, copy) != 0)
                return -1;
            st->args[i].u.b.p = copy;
            st->args[i].u.b.len = len;
        } else if (args[i].type == HN_V_BLOB_T && args[i].u.b.p) {
            void *copy = malloc(args[i].u.b.len ? args[i].u.b.len : 1);
            if (copy)
                memcpy(copy, args[i].u.b.p, args[i].u.b.len);
            if (op_own(op, copy) != 0)
                return -1;
            st->args[i].u.b.p = copy;
        }
    }
    op->n_stmts++;
    return 0;
}

int br_op_guard_max(br_op *op, const char *sql, const hn_value *args, size_t nargs,
                    long long max, int status, const char *rc, const char *fmt) {
    if (br_op_sql(op, sql, args, nargs) != 0)
        return -1;
    op_stmt *st = &op->stmts[op->n_stmts - 1];
    st->guard = true;
    st->max = max;
    st->status = status;
    st->rc = rc;
    st->fmt = fmt;
    return 0;
}

int br_op_lock(br_op *op, long long key) {
    hn_value k[] = {HN_V_INT(key)};
    if (br_op_sql(op, "SELECT pg_advisory_xact_lock(?)", k, 1) != 0)
        return -1;
    op->stmts[op->n_stmts - 1].lock = true;
    return 0;
}

void br_op_retry(br_op *op) {
    op->retry = true;
}

int br_op_track_requeue(br_op *op, br_request *r) {
    if (!op->requeued && !(op->requeued = json_array()))
        return -1;
    if (json_array_append_new(op->requeued, json_string(r->id)) != 0)
        return -1;
    r->unsynced_n++;
    return 0;
}

int br_op_remove_image(br_op *op, const char *key) {
    if (grow((void **)&op->removes, &op->cap_removes, op->n_removes + 1, sizeof(char *)) != 0)
        return -1;
    char *k = strdup(key);
    if (!k)
        return -1;
    op->removes[op->n_removes++] = k;
    return 0;
}

void br_op_reply(br_op *op, hn_request *req, int status, json_t *body, int hook_id,
                 json_t *info) {
    op->req = req;
    op->status = status;
    json_decref(op->body);
    op->body = body;
    op->hook_id = hook_id;
    json_decref(op->hook_info);
    op->hook_info = info;
}

void br_op_notify(br_op *op, int hook_id, json_t *info) {
    if (!info)
        return;
    if (!op->also)
        op->also = json_array();
    json_array_append_new(op->also, json_pack("[i, o]", hook_id, info));
}

void br_op_hold(br_op *op) {
    atomic_fetch_add(&op->refs, 1);
}

void br_op_set_body(br_op *op, json_t *body) {
    json_decref(op->body);
    op->body = body;
    op_free(op);
}

void br_op_discard(br_op *op) {
    op_free(op);
}

void br_op_on_fail(br_op *op, void (*fn)(broker *b, void *arg), void *arg) {
    op->on_fail = fn;
    op->fail_arg = arg;
}

void br_op_submit(broker *b, br_op *op) {
    pthread_mutex_lock(&b->wq_lock);
    op->next = NULL;
    if (b->wq_tail)
        b->wq_tail->next = op;
    else
        b->wq_head = op;
    b->wq_tail = op;
    b->wq_len++;
    pthread_cond_signal(&b->wq_cond);
    pthread_mutex_unlock(&b->wq_lock);
}

/* ---- row writers ------------------------------------------------------------------ */

int br_store_request_insert(br_op *op, br_request *r) {
    r->stored_consumed = r->consumed;
    hn_value a[] = {
        HN_V_TEXT(r->id),          HN_V_INT(r->user_id),    HN_V_INT(r->user_roles),
        HN_V_INT(r->seq),          HN_V_INT(r->created_ms), HN_V_INT(r->expiry_ms),
        HN_V_DOUBLE(r->priority),  HN_V_INT(r->n),          HN_V_INT(r->jobs),
        HN_V_INT(r->state),        HN_V_DOUBLE(r->kudos),   HN_V_DOUBLE(r->consumed),
        HN_V_TEXT(r->client_ip ? r->client_ip : ""),        HN_V_TEXT(r->body),
    };
    return br_op_sql(op,
                     "INSERT INTO broker_requests (id, user_id, user_roles, seq, created, expiry, "
                     "priority, n, jobs, state, kudos, consumed, client_ip, body) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     a, sizeof(a) / sizeof(a[0]));
}

int br_store_request_update(br_op *op, br_request *r) {
    hn_value a[] = {HN_V_INT(r->n),        HN_V_INT(r->jobs),         HN_V_INT(r->state),
                    HN_V_INT(r->expiry_ms), HN_V_DOUBLE(r->consumed), HN_V_DOUBLE(r->priority),
                    HN_V_INT(r->seq)};
    if (op->b->conf->cluster) {
        /* cluster.h: n belongs to the database (pops claim it, faults add to
         * it); a state only leaves 0 once; expiry only grows */
        /* consumed is a counter two nodes add to: the difference */
        hn_value c[] = {HN_V_INT(r->state),     HN_V_INT(r->jobs),     HN_V_INT(r->state),
                        HN_V_INT(r->expiry_ms),
                        HN_V_DOUBLE(r->consumed - r->stored_consumed),
                        HN_V_DOUBLE(r->priority), HN_V_INT(r->seq)};
        int rc = br_op_sql(op,
                           "UPDATE broker_requests SET n = CASE WHEN ? <> 0 THEN 0 ELSE n END, "
                           "jobs = ?, state = CASE WHEN state = 0 THEN ? ELSE state END, "
                           "expiry = GREATEST(expiry, ?), consumed = consumed + ?, "
                           "priority = ? WHERE seq = ?",
                           c, sizeof(c) / sizeof(c[0]));
        if (rc == 0)
            r->stored_consumed = r->consumed;
        return rc;
    }
    return br_op_sql(op,
                     "UPDATE broker_requests SET n = ?, jobs = ?, state = ?, expiry = ?, "
                     "consumed = ?, priority = ? WHERE seq = ?",
                     a, sizeof(a) / sizeof(a[0]));
}

int br_store_job_insert(br_op *op, const br_job *j) {
    hn_value a[] = {
        HN_V_INT(j->seq),          HN_V_TEXT(j->id),
        HN_V_INT(j->req->seq),     HN_V_TEXT(j->req->id),
        HN_V_TEXT(j->worker ? j->worker->id : ""),
        HN_V_TEXT(j->model ? j->model : ""),
        HN_V_INT(j->seed),         HN_V_INT(j->state),
        HN_V_INT(j->censored),     HN_V_INT(j->aborted),
        HN_V_INT(j->start_ms),     HN_V_INT(j->ttl_s),
        HN_V_INT(j->finish_ms),    HN_V_TEXT(j->gen_metadata ? j->gen_metadata : "[]"),
        HN_V_DOUBLE(j->reward),
    };
    return br_op_sql(op,
                     "INSERT INTO broker_jobs (seq, id, request_seq, request_id, worker_id, model, "
                     "seed, state, censored, aborted, started, ttl, finished, gen_metadata, "
                     "reward) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     a, sizeof(a) / sizeof(a[0]));
}

int br_store_job_update(br_op *op, const br_job *j) {
    hn_value a[] = {HN_V_INT(j->state),     HN_V_INT(j->censored),
                    HN_V_INT(j->aborted),   HN_V_INT(j->finish_ms),
                    HN_V_INT(j->seed),      HN_V_TEXT(j->gen_metadata ? j->gen_metadata : "[]"),
                    HN_V_DOUBLE(j->reward), HN_V_INT(j->seq)};
    if (op->b->conf->cluster) {
        /* cluster.h: the first node to finish a job wins (a submit racing a
         * stale sweep on another node) */
        hn_value c[] = {HN_V_INT(j->state),     HN_V_INT(j->censored),
                        HN_V_INT(j->aborted),   HN_V_INT(j->finish_ms),
                        HN_V_INT(j->seed),      HN_V_TEXT(j->gen_metadata ? j->gen_metadata : "[]"),
                        HN_V_DOUBLE(j->reward), HN_V_INT(j->seq), HN_V_INT(j->state)};
        return br_op_sql(op,
                         "UPDATE broker_jobs SET state = ?, censored = ?, aborted = ?, "
                         "finished = ?, seed = ?, gen_metadata = ?, reward = ? "
                         "WHERE seq = ? AND (state = 0 OR state = ?)",
                         c, sizeof(c) / sizeof(c[0]));
    }
    return br_op_sql(op,
                     "UPDATE broker_jobs SET state = ?, censored = ?, aborted = ?, finished = ?, "
                     "seed = ?, gen_metadata = ?, reward = ? WHERE seq = ?",
                     a, sizeof(a) / sizeof(a[0]));
}

static json_t *str_list_json(char **items, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_string(items[i]));
    return a;
}

static json_t *worker_attrs_json(const br_worker_attrs *a) {
    return json_pack(
        "{s:s, s:o, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:I, s:i, s:o, s:s}",
        "bridge_agent", a->bridge_agent ? a->bridge_agent : "unknown:0:unknown", "models",
        str_list_json(a->models, a->n_models), "nsfw", a->nsfw, "allow_img2img",
        a->allow_img2img, "allow_painting", a->allow_painting, "allow_unsafe_ipaddr",
        a->allow_unsafe_ipaddr, "allow_post_processing", a->allow_post_processing,
        "allow_controlnet", a->allow_controlnet, "allow_sdxl_controlnet",
        a->allow_sdxl_controlnet, "allow_lora", a->allow_lora, "limit_max_steps",
        a->limit_max_steps, "extra_slow_worker", a->extra_slow, "require_upfront_kudos",
        a->require_upfront_kudos, "max_pixels", (json_int_t)a->max_pixels, "threads",
        a->threads, "blacklist", str_list_json(a->blacklist, a->n_blacklist), "ipaddr",
        a->ipaddr ? a->ipaddr : "");
}

/* What of the worker's state is not a counter (the counters have columns of
 * their own, written relatively). */
static json_t *worker_stats_json(const br_worker *w) {
    json_t *samples = json_array();
    for (int i = 0; i < w->n_samples; i++)
        json_array_append_new(samples, json_real(w->samples[i]));
    return json_pack("{s:o, s:i, s:b, s:I}", "samples", samples, "sample_pos", w->sample_pos,
                     "paused", w->paused, "suspicion_reasons", (json_int_t)w->suspicion_reasons);
}

static void worker_counts_now(const br_worker *w, br_worker_counts *c) {
    c->requests_fulfilled = w->requests_fulfilled;
    c->uncompleted_jobs = w->uncompleted_jobs;
    c->uptime_s = w->uptime_s;
    c->suspicion = w->suspicion;
    c->kudos_generated = w->kudos_generated;
    c->mps_generated = w->mps_generated;
}

/* The whole row; the counters add `add` (ON CONFLICT: to what the table has,
 * whichever node wrote it). Same SQL on SQLite and PostgreSQL. */
static int worker_upsert(br_op *op, const br_worker *w, const br_worker_counts *add) {
    json_t *attrs = worker_attrs_json(&w->a);
    json_t *stats = worker_stats_json(w);
    char *as = attrs ? json_dumps(attrs, JSON_COMPACT) : NULL;
    char *ss = stats ? json_dumps(stats, JSON_COMPACT) : NULL;
    json_decref(attrs);
    json_decref(stats);
    int rc = -1;
    if (as && ss) {
        hn_value a[] = {HN_V_TEXT(w->id),
                        HN_V_TEXT(w->name),
                        HN_V_INT(w->user_id),
                        HN_V_TEXT(w->owner),
                        HN_V_INT(w->owner_roles),
                        HN_V_INT(w->created_ms),
                        HN_V_INT(w->last_checkin_ms),
                        HN_V_TEXT(as),
                        HN_V_TEXT(ss),
                        HN_V_INT(w->maintenance),
                        HN_V_TEXT(w->maintenance_msg ? w->maintenance_msg : ""),
                        HN_V_TEXT(w->info ? w->info : ""),
                        HN_V_INT(add->requests_fulfilled),
                        HN_V_INT(add->uncompleted_jobs),
                        HN_V_DOUBLE(add->kudos_generated),
                        HN_V_DOUBLE(add->mps_generated)};
        /* at most OP_MAX_ARGS (16) arguments a statement: uptime and
         * suspicion go in a second, relative UPDATE */
        rc = br_op_sql(
            op,
            "INSERT INTO broker_workers (id, name, user_id, owner, owner_roles, created, "
            "last_checkin, attrs, stats, maintenance, maintenance_msg, info, "
            "requests_fulfilled, uncompleted_jobs, kudos_generated, mps_generated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "name = excluded.name, owner = excluded.owner, owner_roles = excluded.owner_roles, "
            "last_checkin = excluded.last_checkin, attrs = excluded.attrs, "
            "stats = excluded.stats, maintenance = excluded.maintenance, "
            "maintenance_msg = excluded.maintenance_msg, info = excluded.info, "
            "requests_fulfilled = broker_workers.requests_fulfilled + excluded.requests_fulfilled, "
            "uncompleted_jobs = broker_workers.uncompleted_jobs + excluded.uncompleted_jobs, "
            "kudos_generated = broker_workers.kudos_generated + excluded.kudos_generated, "
            "mps_generated = broker_workers.mps_generated + excluded.mps_generated",
            a, sizeof(a) / sizeof(a[0]));
        if (rc == 0 && (add->uptime_s || add->suspicion)) {
            hn_value u[] = {HN_V_INT(add->uptime_s), HN_V_INT(add->suspicion), HN_V_TEXT(w->id)};
            rc = br_op_sql(op,
                           "UPDATE broker_workers SET uptime = uptime + ?, "
                           "suspicion = suspicion + ? WHERE id = ?",
                           u, 3);
        }
    }
    free(as);
    free(ss);
    return rc;
}

int br_store_worker_save(br_op *op, const br_worker *w) {
    br_worker_counts none = {0};
    return worker_upsert(op, w, &none);
}

int br_store_worker_flush(br_op *op, br_worker *w) {
    br_worker_counts now, add;
    worker_counts_now(w, &now);
    add.requests_fulfilled = now.requests_fulfilled - w->stored.requests_fulfilled;
    add.uncompleted_jobs = now.uncompleted_jobs - w->stored.uncompleted_jobs;
    add.uptime_s = now.uptime_s - w->stored.uptime_s;
    add.suspicion = now.suspicion - w->stored.suspicion;
    add.kudos_generated = now.kudos_generated - w->stored.kudos_generated;
    add.mps_generated = now.mps_generated - w->stored.mps_generated;
    int rc = worker_upsert(op, w, &add);
    if (rc == 0)
        w->stored = now;
    return rc;
}

/* counters only grow: a table value below ours lags a write still in flight */
#define MERGE_COUNTER(value, stored, table)                                                  \
    do {                                                                                     \
        __typeof__(value) unwritten_ = (value) - (stored);                                   \
        if ((table) + unwritten_ > (value))                                                  \
            (value) = (table) + unwritten_;                                                  \
        (stored) = (value) - unwritten_;                                                     \
    } while (0)

void br_worker_counts_merge(br_worker *w, const br_worker_counts *t) {
    MERGE_COUNTER(w->requests_fulfilled, w->stored.requests_fulfilled, t->requests_fulfilled);
    MERGE_COUNTER(w->uncompleted_jobs, w->stored.uncompleted_jobs, t->uncompleted_jobs);
    MERGE_COUNTER(w->uptime_s, w->stored.uptime_s, t->uptime_s);
    MERGE_COUNTER(w->suspicion, w->stored.suspicion, t->suspicion);
    MERGE_COUNTER(w->kudos_generated, w->stored.kudos_generated, t->kudos_generated);
    MERGE_COUNTER(w->mps_generated, w->stored.mps_generated, t->mps_generated);
}

void br_user_counts_merge(br_user *u, int64_t requested, int64_t fulfilled, double usage,
                          double contribution) {
    MERGE_COUNTER(u->images_requested, u->stored_requested, requested);
    MERGE_COUNTER(u->images_fulfilled, u->stored_fulfilled, fulfilled);
    MERGE_COUNTER(u->usage_mps, u->stored_usage, usage);
    MERGE_COUNTER(u->contribution_mps, u->stored_contribution, contribution);
}

int br_store_user_stats(br_op *op, br_user *u) {
    hn_value a[] = {HN_V_INT(u->id), HN_V_INT(u->images_requested - u->stored_requested),
                    HN_V_INT(u->images_fulfilled - u->stored_fulfilled),
                    HN_V_DOUBLE(u->usage_mps - u->stored_usage),
                    HN_V_DOUBLE(u->contribution_mps - u->stored_contribution)};
    /* relative: two nodes counting for the same user both count */
    int rc = br_op_sql(
        op,
        "INSERT INTO broker_user_stats (user_id, images_requested, images_fulfilled, "
        "usage_mps, contribution_mps) VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id) "
        "DO UPDATE SET images_requested = broker_user_stats.images_requested + "
        "excluded.images_requested, images_fulfilled = broker_user_stats.images_fulfilled + "
        "excluded.images_fulfilled, usage_mps = broker_user_stats.usage_mps + "
        "excluded.usage_mps, contribution_mps = broker_user_stats.contribution_mps + "
        "excluded.contribution_mps",
        a, sizeof(a) / sizeof(a[0]));
    if (rc == 0) {
        u->stored_requested = u->images_requested;
        u->stored_fulfilled = u->images_fulfilled;
        u->stored_usage = u->usage_mps;
        u->stored_contribution = u->contribution_mps;
    }
    return rc;
}

/* ---- schema ------------------------------------------------------------------------- */

/* The tables. Requests and jobs are keyed by the broker's sequence numbers,
 * not their random UUIDs: new rows append at the end of the table instead of
 * landing on random index pages, which cuts what each commit writes; lookups
 * by UUID are the in-memory index's and never reach SQL. KEY is the type of
 * those keys: SQLite's INTEGER PRIMARY KEY is the table's rowid itself (no
 * second index), PostgreSQL needs BIGINT (its INTEGER is 32 bits). */
#define BROKER_SCHEMA_V1(KEY) \
     "CREATE TABLE broker_requests (" \
     " seq " KEY " PRIMARY KEY, id TEXT NOT NULL, user_id BIGINT NOT NULL," \
     " user_roles BIGINT NOT NULL, created BIGINT NOT NULL, expiry BIGINT NOT NULL," \
     " priority DOUBLE PRECISION NOT NULL, n INTEGER NOT NULL, jobs INTEGER NOT NULL," \
     " state INTEGER NOT NULL, kudos DOUBLE PRECISION NOT NULL," \
     " consumed DOUBLE PRECISION NOT NULL, client_ip TEXT NOT NULL, body TEXT NOT NULL);" \
     "CREATE TABLE broker_jobs (" \
     " seq " KEY " PRIMARY KEY, id TEXT NOT NULL, request_seq BIGINT NOT NULL," \
     " request_id TEXT NOT NULL, worker_id TEXT NOT NULL," \
     " model TEXT NOT NULL, seed BIGINT NOT NULL, state INTEGER NOT NULL," \
     " censored INTEGER NOT NULL, aborted INTEGER NOT NULL, started BIGINT NOT NULL," \
     " ttl INTEGER NOT NULL, finished BIGINT NOT NULL, gen_metadata TEXT NOT NULL," \
     " reward DOUBLE PRECISION NOT NULL);" \
     "CREATE INDEX broker_jobs_request ON broker_jobs (request_seq);" \
     "CREATE TABLE broker_workers (" \
     " id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, user_id BIGINT NOT NULL," \
     " owner TEXT NOT NULL, owner_roles BIGINT NOT NULL, created BIGINT NOT NULL," \
     " last_checkin BIGINT NOT NULL, attrs TEXT NOT NULL, stats TEXT NOT NULL," \
     " maintenance INTEGER NOT NULL, maintenance_msg TEXT NOT NULL, info TEXT NOT NULL);" \
     "CREATE TABLE broker_user_stats (" \
     " user_id BIGINT PRIMARY KEY, images_requested BIGINT NOT NULL," \
     " images_fulfilled BIGINT NOT NULL, usage_mps DOUBLE PRECISION NOT NULL," \
     " contribution_mps DOUBLE PRECISION NOT NULL)"

/* v2: a worker's counters get columns of their own, so rows can take them
 * relatively (`col = col + ?`) and nodes sharing a database add up; they move
 * out of the stats JSON. Reading the old JSON is the one place the dialects
 * differ (json_extract vs ->>). */
#define BROKER_WORKER_COUNTERS_V2 \
     "ALTER TABLE broker_workers ADD COLUMN requests_fulfilled BIGINT NOT NULL DEFAULT 0;" \
     "ALTER TABLE broker_workers ADD COLUMN uncompleted_jobs BIGINT NOT NULL DEFAULT 0;" \
     "ALTER TABLE broker_workers ADD COLUMN kudos_generated DOUBLE PRECISION NOT NULL DEFAULT 0;" \
     "ALTER TABLE broker_workers ADD COLUMN mps_generated DOUBLE PRECISION NOT NULL DEFAULT 0;" \
     "ALTER TABLE broker_workers ADD COLUMN uptime BIGINT NOT NULL DEFAULT 0;" \
     "ALTER TABLE broker_workers ADD COLUMN suspicion BIGINT NOT NULL DEFAULT 0;"
#define JSON_SQLITE(key) "COALESCE(json_extract(stats, '$." key "'), 0)"
#define JSON_PG(key, type) "COALESCE((stats::json->>'" key "')::" type ", 0)"

static const hn_migration migrations_sqlite[] = {
    {1, BROKER_SCHEMA_V1("INTEGER")},
    {2, BROKER_WORKER_COUNTERS_V2
        "UPDATE broker_workers SET requests_fulfilled = " JSON_SQLITE("requests_fulfilled") ","
        " uncompleted_jobs = " JSON_SQLITE("uncompleted_jobs") ","
        " kudos_generated = " JSON_SQLITE("kudos_generated") ","
        " mps_generated = " JSON_SQLITE("mps_generated") ","
        " uptime = " JSON_SQLITE("uptime") ", suspicion = " JSON_SQLITE("suspicion")},
};
static const hn_migration migrations_postgres[] = {
    {1, BROKER_SCHEMA_V1("BIGINT")},
    {2, BROKER_WORKER_COUNTERS_V2
        "UPDATE broker_workers SET requests_fulfilled = " JSON_PG("requests_fulfilled", "bigint") ","
        " uncompleted_jobs = " JSON_PG("uncompleted_jobs", "bigint") ","
        " kudos_generated = " JSON_PG("kudos_generated", "double precision") ","
        " mps_generated = " JSON_PG("mps_generated", "double precision") ","
        " uptime = " JSON_PG("uptime", "bigint") ", suspicion = " JSON_PG("suspicion", "bigint")},
};

/* ---- loading the index at start ----------------------------------------------------- */

static char **json_str_list(const json_t *arr, int *n, bool lower) {
    size_t len = json_array_size(arr);
    char **out = calloc(len ? len : 1, sizeof(char *));
    *n = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        const char *s = json_string_value(json_array_get(arr, i));
        if (s && (out[*n] = lower ? br_lower(s) : strdup(s)))
            (*n)++;
    }
    return out;
}

static void attrs_from_json(br_worker_attrs *a, const json_t *j) {
    a->bridge_agent = br_strdup(br_jstr(j, "bridge_agent"));
    a->caps = br_bridge_caps(a->bridge_agent, &a->samplers_karras, &a->samplers_plain);
    a->models = json_str_list(json_object_get(j, "models"), &a->n_models, false);
    a->nsfw = br_jbool(j, "nsfw", true);
    a->allow_img2img = br_jbool(j, "allow_img2img", true);
    a->allow_painting = br_jbool(j, "allow_painting", true);
    a->allow_unsafe_ipaddr = br_jbool(j, "allow_unsafe_ipaddr", true);
    a->allow_post_processing = br_jbool(j, "allow_post_processing", true);
    a->allow_controlnet = br_jbool(j, "allow_controlnet", false);
    a->allow_sdxl_controlnet = br_jbool(j, "allow_sdxl_controlnet", false);
    a->allow_lora = br_jbool(j, "allow_lora", false);
    a->limit_max_steps = br_jbool(j, "limit_max_steps", false);
    a->extra_slow = br_jbool(j, "extra_slow_worker", false);
    a->require_upfront_kudos = br_jbool(j, "require_upfront_kudos", false);
    a->max_pixels = br_jint(j, "max_pixels", 262144);
    a->threads = (int)br_jint(j, "threads", 1);
    a->blacklist = json_str_list(json_object_get(j, "blacklist"), &a->n_blacklist, true);
    a->ipaddr = br_strdup(br_jstr(j, "ipaddr"));
}

static hn_rc load_workers(broker *b, hn_db *db, hn_error *err) {
    hn_stmt *st = b->db->query(db,
                               "SELECT id, name, user_id, owner, owner_roles, created, "
                               "last_checkin, attrs, stats, maintenance, maintenance_msg, info, "
                               "requests_fulfilled, uncompleted_jobs, kudos_generated, "
                               "mps_generated, uptime, suspicion FROM broker_workers",
                               NULL, 0, err);
    if (!st)
        return HN_ERROR;
    int rc;
    while ((rc = b->db->step(st, err)) == 1) {
        br_worker *w = calloc(1, sizeof(*w));
        if (!w)
            break;
        snprintf(w->id, sizeof(w->id), "%s", b->db->col_text(st, 0));
        w->name = strdup(b->db->col_text(st, 1));
        w->user_id = b->db->col_int(st, 2);
        snprintf(w->owner, sizeof(w->owner), "%s", b->db->col_text(st, 3));
        w->owner_roles = (uint32_t)b->db->col_int(st, 4);
        w->created_ms = b->db->col_int(st, 5);
        w->last_checkin_ms = w->last_saved_ms = b->db->col_int(st, 6);
        json_t *attrs = json_loads(b->db->col_text(st, 7), 0, NULL);
        json_t *stats = json_loads(b->db->col_text(st, 8), 0, NULL);
        attrs_from_json(&w->a, attrs);
        w->requests_fulfilled = b->db->col_int(st, 12);
        w->uncompleted_jobs = b->db->col_int(st, 13);
        w->kudos_generated = b->db->col_double(st, 14);
        w->mps_generated = b->db->col_double(st, 15);
        w->uptime_s = b->db->col_int(st, 16);
        w->suspicion = b->db->col_int(st, 17);
        worker_counts_now(w, &w->stored); /* all of it is in the table */
        w->paused = br_jbool(stats, "paused", false);
        w->suspicion_reasons = (uint32_t)br_jint(stats, "suspicion_reasons", 0);
        const json_t *samples = json_object_get(stats, "samples");
        w->speed = BR_DEFAULT_SPEED;
        for (size_t i = 0; i < json_array_size(samples) && i < BR_SPEED_SAMPLES; i++)
            br_worker_add_sample(w, json_number_value(json_array_get(samples, i)));
        w->sample_pos = (int)br_jint(stats, "sample_pos", w->sample_pos) % BR_SPEED_SAMPLES;
        json_decref(attrs);
        json_decref(stats);
        w->maintenance = b->db->col_int(st, 9) != 0;
        const char *mm = b->db->col_text(st, 10);
        w->maintenance_msg = *mm ? strdup(mm) : NULL;
        const char *info = b->db->col_text(st, 11);
        w->info = *info ? strdup(info) : NULL;
        if (!w->name) {
            br_worker_free(w);
            continue;
        }
        br_worker_add(b, w);
    }
    b->db->finish(st);
    return rc < 0 ? HN_ERROR : HN_OK;
}

static hn_rc load_user_stats(broker *b, hn_db *db, hn_error *err) {
    hn_stmt *st = b->db->query(db,
                               "SELECT user_id, images_requested, images_fulfilled, usage_mps, "
                               "contribution_mps FROM broker_user_stats",
                               NULL, 0, err);
    if (!st)
        return HN_ERROR;
    int rc;
    while ((rc = b->db->step(st, err)) == 1) {
        br_user *u = br_user_get(b, b->db->col_int(st, 0), true);
        if (!u)
            continue;
        u->images_requested = u->stored_requested = b->db->col_int(st, 1);
        u->images_fulfilled = u->stored_fulfilled = b->db->col_int(st, 2);
        u->usage_mps = u->stored_usage = b->db->col_double(st, 3);
        u->contribution_mps = u->stored_contribution = b->db->col_double(st, 4);
    }
    b->db->finish(st);
    return rc < 0 ? HN_ERROR : HN_OK;
}

static hn_rc load_requests(broker *b, hn_db *db, hn_error *err) {
    hn_stmt *st = b->db->query(db,
                               "SELECT id, user_id, user_roles, seq, created, expiry, priority, "
                               "n, jobs, state, kudos, consumed, client_ip, body "
                               "FROM broker_requests ORDER BY seq",
                               NULL, 0, err);
    if (!st)
        return HN_ERROR;
    int rc;
    while ((rc = b->db->step(st, err)) == 1) {
        br_request *r = calloc(1, sizeof(*r));
        if (!r)
            break;
        snprintf(r->id, sizeof(r->id), "%s", b->db->col_text(st, 0));
        r->user_id = b->db->col_int(st, 1);
        r->user_roles = (uint32_t)b->db->col_int(st, 2);
        r->seq = b->db->col_int(st, 3);
        r->created_ms = b->db->col_int(st, 4);
        r->expiry_ms = b->db->col_int(st, 5);
        r->priority = b->db->col_double(st, 6);
        r->n = (int)b->db->col_int(st, 7);
        r->jobs = (int)b->db->col_int(st, 8);
        r->state = (br_req_state)b->db->col_int(st, 9);
        r->kudos = b->db->col_double(st, 10);
        r->consumed = r->stored_consumed = b->db->col_double(st, 11);
        r->client_ip = strdup(b->db->col_text(st, 12));
        r->body = strdup(b->db->col_text(st, 13));
        json_t *body = r->body ? json_loads(r->body, 0, NULL) : NULL;
        if (!body || br_request_parse(b, body, &r->s) != 0) {
            b->api->log(b->self, HN_LOG_WARN, "request %s: unreadable stored body, skipped",
                        r->id);
            json_decref(body);
            br_request_free(r);
            continue;
        }
        json_decref(body);
        br_request_add(b, r);
    }
    b->db->finish(st);
    return rc < 0 ? HN_ERROR : HN_OK;
}

static hn_rc load_jobs(broker *b, hn_db *db, hn_error *err) {
    hn_stmt *st = b->db->query(db,
                               "SELECT id, request_id, worker_id, model, seed, state, censored, "
                               "aborted, started, ttl, finished, gen_metadata, reward, seq "
                               "FROM broker_jobs ORDER BY seq",
                               NULL, 0, err);
    if (!st)
        return HN_ERROR;
    int rc;
    while ((rc = b->db->step(st, err)) == 1) {
        br_request *r = br_request_find(b, b->db->col_text(st, 1));
        if (!r)
            continue;
        br_job *j = calloc(1, sizeof(*j));
        if (!j)
            break;
        snprintf(j->id, sizeof(j->id), "%s", b->db->col_text(st, 0));
        j->req = r;
        j->worker = br_worker_find(b, b->db->col_text(st, 2));
        j->model = strdup(b->db->col_text(st, 3));
        j->seed = b->db->col_int(st, 4);
        j->state = (br_job_state)b->db->col_int(st, 5);
        j->censored = b->db->col_int(st, 6) != 0;
        j->aborted = b->db->col_int(st, 7) != 0;
        j->start_ms = b->db->col_int(st, 8);
        j->ttl_s = (int)b->db->col_int(st, 9);
        j->finish_ms = b->db->col_int(st, 10);
        j->gen_metadata = strdup(b->db->col_text(st, 11));
        j->reward = b->db->col_double(st, 12);
        j->seq = b->db->col_int(st, 13);
        br_job_add(b, j);
    }
    b->db->finish(st);
    return rc < 0 ? HN_ERROR : HN_OK;
}

/* ---- the writer thread -------------------------------------------------------------- */

/* A br_op_guard_max statement: HN_ERROR when the count is over the limit
 * (op->guard_failed, err is the answer) or the query failed. */
static hn_rc run_guard(broker *b, hn_db *db, br_op *op, const op_stmt *st, hn_error *err) {
    hn_stmt *q = b->db->query(db, st->sql, st->args, st->nargs, err);
    if (!q)
        return HN_ERROR;
    int rc = b->db->step(q, err);
    long long count = rc == 1 ? (long long)b->db->col_int(q, 0) : 0;
    b->db->finish(q);
    if (rc < 0)
        return HN_ERROR;
    if (count <= st->max)
        return HN_OK;
    b->api->error(err, st->status, st->rc, st->fmt, count, st->max);
    op->guard_failed = true;
    return HN_ERROR;
}

static hn_rc apply_op(broker *b, hn_db *db, br_op *op, hn_error *err) {
    op->guard_failed = false;
    for (int i = 0; i < op->n_stmts; i++) {
        op_stmt *st = &op->stmts[i];
        if (st->guard) {
            if (run_guard(b, db, op, st, err) != HN_OK)
                return HN_ERROR;
        } else if (b->db->exec(db, st->sql, st->args, st->nargs, NULL, err) != HN_OK) {
            return HN_ERROR;
        }
    }
    return HN_OK;
}

static int key_order(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* Takes every advisory lock the batch's ops ask for (br_op_lock), in key
 * order, before any of their statements: two nodes' batches that lock the
 * same keys then queue behind each other instead of deadlocking (PostgreSQL
 * would break the tie only after its deadlock_timeout, 1 s). The ops' own lock
 * statements then re-take locks already held, which returns at once. */
static hn_rc take_batch_locks(broker *b, hn_db *db, br_op *first, br_op *stop, hn_error *err) {
    long long *keys = NULL;
    int n = 0, cap = 0;
    hn_rc rc = HN_OK;
    for (br_op *op = first; op != stop; op = op->next)
        for (int i = 0; i < op->n_stmts; i++) {
            if (!op->stmts[i].lock)
                continue;
            if (grow((void **)&keys, &cap, n + 1, sizeof(*keys)) != 0) {
                free(keys);
                b->api->error(err, 500, "StorageError", "out of memory");
                return HN_ERROR;
            }
            keys[n++] = op->stmts[i].args[0].u.i;
        }
    if (n > 1) /* one lock alone needs no ordering: its op takes it */
        qsort(keys, (size_t)n, sizeof(*keys), key_order);
    for (int i = 0; n > 1 && i < n && rc == HN_OK; i++) {
        if (i > 0 && keys[i] == keys[i - 1])
            continue;
        hn_value k[] = {HN_V_INT(keys[i])};
        rc = b->db->exec(db, "SELECT pg_advisory_xact_lock(?)", k, 1, NULL, err);
    }
    free(keys);
    return rc;
}

static hn_rc run_batch(broker *b, hn_db *db, br_op *first, br_op *stop, hn_error *err) {
    if (b->db->begin(db, err) != HN_OK)
        return HN_ERROR;
    if (take_batch_locks(b, db, first, stop, err) != HN_OK) {
        hn_error ignored;
        b->db->rollback(db, &ignored);
        return HN_ERROR;
    }
    for (br_op *op = first; op != stop; op = op->next) {
        if (apply_op(b, db, op, err) != HN_OK) {
            hn_error ignored;
            b->db->rollback(db, &ignored);
            return HN_ERROR;
        }
    }
    if (b->db->commit(db, err) != HN_OK) {
        hn_error ignored;
        b->db->rollback(db, &ignored);
        return HN_ERROR;
    }
    return HN_OK;
}

static void op_fail(br_op *op, const hn_error *err) {
    op->failed = true;
    op->err = *err;
    if (op->guard_failed)
        return; /* a limit's own answer (br_op_guard_max) */
    op->transient = err->status == 503;
    op->err.status = 500;
    snprintf(op->err.rc, sizeof(op->err.rc), "StorageError");
}

static void run_hook(broker *b, int hook_id, const json_t *info) {
    switch (hook_id) {
    case HN_HOOK_ID_generation_enqueued:
        hn_run_generation_enqueued(b->api, info);
        break;
    case HN_HOOK_ID_job_popped:
        hn_run_job_popped(b->api, info);
        break;
    case HN_HOOK_ID_job_submitted:
        hn_run_job_submitted(b->api, info);
        break;
    case HN_HOOK_ID_job_faulted:
        hn_run_job_faulted(b->api, info);
        break;
    case HN_HOOK_ID_worker_checked_in:
        hn_run_worker_checked_in(b->api, info);
        break;
    case HN_HOOK_ID_generation_ended:
        hn_run_generation_ended(b->api, info);
        break;
    default:
        break;
    }
}

/* The main notification, then those added with br_op_notify. */
static void run_hooks(broker *b, br_op *op) {
    if (op->hook_id >= 0 && op->hook_info)
        run_hook(b, op->hook_id, op->hook_info);
    size_t i;
    json_t *pair;
    json_array_foreach(op->also, i, pair) {
        run_hook(b, (int)json_integer_value(json_array_get(pair, 0)), json_array_get(pair, 1));
    }
}

/* Runs on the request's loop thread once its op is durable (or failed). */
static void op_answer(void *arg) {
    br_op *op = arg;
    broker *b = op->b;
    if (op->failed) {
        b->api->respond_error(op->req, &op->err);
    } else {
        b->api->respond_json(op->req, op->status, op->body);
        op->body = NULL;
        run_hooks(b, op);
    }
    op_free(op);
}

static void finish_op(broker *b, br_op *op) {
    if ((op->failed && op->on_fail) || op->requeued) {
        pthread_mutex_lock(&b->lock);
        /* committed: the table's n has them; failed: on_fail takes them back */
        size_t i;
        json_t *id;
        json_array_foreach(op->requeued, i, id) {
            br_request *r = br_request_find(b, json_string_value(id));
            if (r && r->unsynced_n > 0)
                r->unsynced_n--;
        }
        if (op->failed && op->on_fail)
            op->on_fail(b, op->fail_arg);
        pthread_mutex_unlock(&b->lock);
    }
    if (!op->failed) {
        for (int i = 0; i < op->n_removes; i++) {
            hn_error e;
            b->img->remove(b->images->state, op->removes[i], &e);
        }
    }
    if (op->req) {
        if (b->api->req_post(op->req, op_answer, op) != 0)
            op_free(op); /* the node is stopping: nobody to answer */
        return;
    }
    if (!op->failed)
        run_hooks(b, op);
    op_free(op);
}

/* How long the writer waits before trying again ops kept by br_op_retry. */
#define RETRY_PAUSE_MS 500

static void wait_until_ms(broker *b, int64_t at_ms) {
    while (!b->wq_stop) {
        int64_t now = br_now_ms();
        if (now >= at_ms)
            return;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        long long ns = until.tv_nsec + (at_ms - now) * 1000000LL;
        until.tv_sec += (time_t)(ns / 1000000000LL);
        until.tv_nsec = (long)(ns % 1000000000LL);
        pthread_cond_timedwait(&b->wq_cond, &b->wq_lock, &until);
    }
}

/* Runs the batch first..NULL (count ops) on db; marks each op that failed. */
static void run_ops(broker *b, hn_db **db, br_op *first, long long count) {
    hn_error err;
    /* ops with nothing left to write (a cluster pop committed its own,
     * cluster.h) are answered without the database */
    bool empty = true;
    for (br_op *op = first; op && empty; op = op->next)
        empty = op->n_stmts == 0;
    if (!*db && !empty) {
        *db = b->db->acquire(b->storage->state, &err);
        if (!*db)
            b->api->log(b->self, HN_LOG_ERROR, "writer: no database connection: %s", err.message);
    }
    hn_rc rc = empty ? HN_OK : *db ? run_batch(b, *db, first, NULL, &err) : HN_ERROR;
    if (rc != HN_OK && *db && count > 1) {
        /* isolate the culprit: each op alone */
        b->api->log(b->self, HN_LOG_WARN, "writer: batch of %lld failed (%s), retrying one by one",
                    count, err.message);
        const hn_error *give_up = NULL;
        hn_error e2;
        for (br_op *op = first; op; op = op->next) {
            if (op->n_stmts == 0)
                continue;
            if (give_up) {
                op_fail(op, give_up);
                continue;
            }
            br_op *next = op->next;
            op->next = NULL;
            op->guard_failed = false;
            if (run_batch(b, *db, op, NULL, &e2) != HN_OK) {
                op_fail(op, &e2);
                /* a kept op (br_op_retry) must stay before everything newer:
                 * what follows it fails too and is retried or answered */
                if (op->retry && op->transient)
                    give_up = &e2;
            }
            op->next = next;
        }
    } else if (rc != HN_OK) {
        if (!*db)
            snprintf(err.message, sizeof(err.message), "no database connection");
        b->api->log(b->self, HN_LOG_ERROR, "writer: commit failed: %s", err.message);
        for (br_op *op = first; op; op = op->next)
            if (op->n_stmts > 0) /* an empty op has nothing that failed */
                op_fail(op, &err);
    }
}

static void *writer_main(void *arg) {
    broker *b = arg;
    hn_db *db = NULL;
    /* br_op_retry ops whose commit failed while the database was away: tried
     * again, ahead of newer ops, every RETRY_PAUSE_MS (the writer thread's
     * own list) */
    br_op *kept = NULL, *kept_tail = NULL;
    long long n_kept = 0;
    int64_t retry_at = 0;
    for (;;) {
        pthread_mutex_lock(&b->wq_lock);
        if (kept)
            wait_until_ms(b, retry_at); /* newer ops wait behind the kept ones */
        else
            while (!b->wq_head && !b->wq_stop)
                pthread_cond_wait(&b->wq_cond, &b->wq_lock);
        bool stopping = b->wq_stop;
        if (!b->wq_head && !kept) {
            pthread_mutex_unlock(&b->wq_lock);
            break;
        }
        /* take up to commit_batch ops as one batch, after the kept ones */
        br_op *taken = b->wq_head, *last = taken;
        long long count = 0;
        if (taken) {
            count = 1;
            while (last->next && count < b->conf->commit_batch) {
                last = last->next;
                count++;
            }
            b->wq_head = last->next;
            if (!b->wq_head)
                b->wq_tail = NULL;
            b->wq_len -= (int)count;
            last->next = NULL;
        }
        pthread_mutex_unlock(&b->wq_lock);

        br_op *first = taken;
        if (kept) {
            kept_tail->next = taken;
            first = kept;
            count += n_kept;
            kept = kept_tail = NULL;
            n_kept = 0;
        }
        run_ops(b, &db, first, count);
        b->batches++;
        b->batched_ops += (uint64_t)count;
        for (br_op *op = first, *next; op; op = next) {
            next = op->next;
            if (op->failed && op->retry && op->transient && !stopping) {
                /* kept for later, in order; not undone, not answered */
                op->failed = op->transient = false;
                op->next = NULL;
                if (kept_tail)
                    kept_tail->next = op;
                else
                    kept = op;
                kept_tail = op;
                n_kept++;
                continue;
            }
            if (op->failed && op->retry)
                b->api->log(b->self, HN_LOG_ERROR,
                            "writer: a lifecycle change could not be committed (%s); the "
                            "database keeps its earlier state",
                            op->err.message);
            finish_op(b, op);
        }
        if (kept) {
            if (retry_at == 0)
                b->api->log(b->self, HN_LOG_WARN,
                            "writer: %lld changes kept until the database is back", n_kept);
            retry_at = br_now_ms() + RETRY_PAUSE_MS;
        } else {
            if (retry_at != 0)
                b->api->log(b->self, HN_LOG_INFO, "writer: kept changes committed");
            retry_at = 0;
        }
    }
    if (db)
        b->db->release(b->storage->state, db);
    return NULL;
}

int br_store_start(broker *b, hn_error *err) {
    bool sqlite = !b->db->dialect || strcmp(b->db->dialect, "postgres") != 0;
    if (b->db->migrate(b->storage->state, "broker", sqlite ? migrations_sqlite : migrations_postgres,
                       2, err) != HN_OK)
        return -1;
    hn_db *db = b->db->acquire(b->storage->state, err);
    if (!db)
        return -1;
    pthread_mutex_lock(&b->lock);
    hn_rc rc = load_workers(b, db, err);
    if (rc == HN_OK)
        rc = load_user_stats(b, db, err);
    if (rc == HN_OK)
        rc = load_requests(b, db, err);
    if (rc == HN_OK)
        rc = load_jobs(b, db, err);
    pthread_mutex_unlock(&b->lock);
    b->db->release(b->storage->state, db);
    if (rc != HN_OK)
        return -1;
    pthread_mutex_init(&b->wq_lock, NULL);
    pthread_cond_init(&b->wq_cond, NULL);
    b->wq_stop = false;
    if (pthread_create(&b->writer, NULL, writer_main, b) != 0) {
        b->api->error(err, 500, "StorageError", "cannot start the broker's writer thread");
        return -1;
    }
    b->writer_running = true;
    return 0;
}

void br_store_stop(broker *b) {
    if (!b->writer_running)
        return;
    pthread_mutex_lock(&b->wq_lock);
    b->wq_stop = true;
    pthread_cond_signal(&b->wq_cond);
    pthread_mutex_unlock(&b->wq_lock);
    pthread_join(b->writer, NULL); /* drains what was queued first */
    b->writer_running = false;
    pthread_mutex_destroy(&b->wq_lock);
    pthread_cond_destroy(&b->wq_cond);
}

/* ---- cluster mode (cluster.h) ------------------------------------------------------ */

int br_op_commit_now(broker *b, br_op *op, const char *guard, const hn_value *args, size_t nargs,
                     hn_error *err) {
    hn_db *db = b->db->acquire(b->storage->state, err);
    if (!db)
        return -1;
    int64_t changes = 0;
    int rc = -1;
    if (b->db->begin(db, err) != HN_OK)
        goto out;
    /* no guard: op's statements only (their own br_op_guard_max limits) */
    hn_rc step = guard ? b->db->exec(db, guard, args, nargs, &changes, err) : HN_OK;
    if (guard && step == HN_OK && changes != 1)
        rc = 0; /* another node claimed it first */
    else if (step == HN_OK && apply_op(b, db, op, err) == HN_OK &&
             b->db->commit(db, err) == HN_OK)
        rc = 1;
    if (rc != 1) {
        hn_error ignored;
        b->db->rollback(db, &ignored);
        goto out;
    }
    op->n_stmts = 0; /* done: the writer only answers (the copies go with the op) */
out:
    b->db->release(b->storage->state, db);
    return rc;
}

void br_store_attrs_from_json(br_worker_attrs *a, const json_t *j) {
    attrs_from_json(a, j);
}
