/* broker: cluster mode (see cluster.h for the design). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"

/* Rows read again from before the last round: a transaction stamps `changed`
 * when it writes and becomes visible when it commits, so a row committed
 * late may carry a stamp older than our last read. Merging is idempotent. */
#define SYNC_OVERLAP_MS 2000
/* Each node run takes a fresh range of request/job keys (its slot << 36):
 * keys stay unique across nodes without asking the database per row. */
#define SLOT_SHIFT 36
/* pg_try_advisory_lock key of the leader (the periodic jobs): "hn:leadr". */
#define LEADER_LOCK_KEY 0x686e3a6c65616472LL

typedef struct br_cluster {
    pthread_t thread;
    bool running, stop;
    pthread_mutex_t sync_lock; /* one sync round at a time; guards db, since_ms */
    pthread_mutex_t wait_lock; /* the thread's sleep */
    pthread_cond_t wait_cond;
    hn_db *db;                 /* held by the sync rounds; the leader lock lives on it */
    int64_t since_ms;          /* database clock of the last round's start */
    atomic_bool leader;
    bool failing;              /* the last round failed (logged once, not every round) */
} br_cluster;

/* The database stamps every row it writes (PostgreSQL only). */
static const hn_migration cluster_migrations[] = {
    {1,
     "ALTER TABLE broker_requests ADD COLUMN changed BIGINT NOT NULL DEFAULT 0;"
     "ALTER TABLE broker_jobs ADD COLUMN changed BIGINT NOT NULL DEFAULT 0;"
     "ALTER TABLE broker_workers ADD COLUMN changed BIGINT NOT NULL DEFAULT 0;"
     "CREATE INDEX broker_requests_changed ON broker_requests (changed);"
     "CREATE INDEX broker_jobs_changed ON broker_jobs (changed);"
     "CREATE INDEX broker_workers_changed ON broker_workers (changed);"
     "CREATE SEQUENCE broker_node_slot;"
     "CREATE FUNCTION broker_stamp_changed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
     "NEW.changed := (extract(epoch from clock_timestamp()) * 1000)::bigint; RETURN NEW; "
     "END $$;"
     "CREATE TRIGGER broker_requests_changed BEFORE INSERT OR UPDATE ON broker_requests "
     "FOR EACH ROW EXECUTE FUNCTION broker_stamp_changed();"
     "CREATE TRIGGER broker_jobs_changed BEFORE INSERT OR UPDATE ON broker_jobs "
     "FOR EACH ROW EXECUTE FUNCTION broker_stamp_changed();"
     "CREATE TRIGGER broker_workers_changed BEFORE INSERT OR UPDATE ON broker_workers "
     "FOR EACH ROW EXECUTE FUNCTION broker_stamp_changed()"},
    /* 2: users' counters sync too (store.c writes them relatively) */
    {2,
     "ALTER TABLE broker_user_stats ADD COLUMN changed BIGINT NOT NULL DEFAULT 0;"
     "CREATE INDEX broker_user_stats_changed ON broker_user_stats (changed);"
     /* the cluster-wide concurrency check (br_cluster_guard_concurrency) */
     "CREATE INDEX broker_requests_user_active ON broker_requests (user_id) WHERE state = 0;"
     "CREATE TRIGGER broker_user_stats_changed BEFORE INSERT OR UPDATE ON broker_user_stats "
     "FOR EACH ROW EXECUTE FUNCTION broker_stamp_changed()"},
    /* 3: every node's finished images per second and node, for the stats'
     * "minute" and "hour" (stats.c; rows older than two hours are dropped) */
    {3,
     "CREATE TABLE mod_stats_recent (sec BIGINT NOT NULL, writer BIGINT NOT NULL, "
     "images BIGINT NOT NULL, ps DOUBLE PRECISION NOT NULL, PRIMARY KEY (sec, writer))"},
};
/* pg_advisory_xact_lock key of a user's concurrency check: "hn:u" and the id */
#define USER_LOCK_BASE 0x686e3a7500000000LL
/* pg_advisory_xact_lock key of a user's worker count (br_cluster_reserve_worker):
 * "hn:w" and the id */
#define WORKER_LOCK_BASE 0x686e3a7700000000LL

/* ---- reading rows (no b->lock held: rows become JSON, merged after) ---------- */

static int64_t db_now_ms(broker *b, hn_db *db, hn_error *err) {
    hn_stmt *st = b->db->query(
        db, "SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint", NULL, 0, err);
    if (!st)
        return -1;
    int64_t v = b->db->step(st, err) == 1 ? b->db->col_int(st, 0) : -1;
    b->db->finish(st);
    return v;
}

/* Each row as a JSON array of its columns: text columns as strings, the
 * others as integers or reals (kinds: 's', 'i', 'd'). */
static json_t *read_rows(broker *b, hn_db *db, const char *sql, const char *kinds, int64_t since,
                         hn_error *err) {
    hn_value a[] = {HN_V_INT(since)};
    hn_stmt *st = b->db->query(db, sql, a, 1, err);
    if (!st)
        return NULL;
    json_t *rows = json_array();
    int rc;
    while ((rc = b->db->step(st, err)) == 1) {
        json_t *row = json_array();
        for (int i = 0; kinds[i]; i++) {
            if (kinds[i] == 's')
                json_array_append_new(row, json_string(b->db->col_text(st, i)));
            else if (kinds[i] == 'd')
                json_array_append_new(row, json_real(b->db->col_double(st, i)));
            else
                json_array_append_new(row, json_integer(b->db->col_int(st, i)));
        }
        json_array_append_new(rows, row);
    }
    b->db->finish(st);
    if (rc < 0) {
        json_decref(rows);
        return NULL;
    }
    return rows;
}

#define COL_S(row, i) json_string_value(json_array_get(row, i))
#define COL_I(row, i) ((int64_t)json_integer_value(json_array_get(row, i)))
#define COL_D(row, i) json_real_value(json_array_get(row, i))

static const char SQL_WORKERS[] =
    "SELECT id, name, user_id, owner, owner_roles, created, last_checkin, attrs, maintenance, "
    "requests_fulfilled, uncompleted_jobs, uptime, suspicion, kudos_generated, mps_generated "
    "FROM broker_workers WHERE changed > ?";
static const char KINDS_WORKERS[] = "ssisiiisiiiiidd";
static const char SQL_USER_STATS[] =
    "SELECT user_id, images_requested, images_fulfilled, usage_mps, contribution_mps "
    "FROM broker_user_stats WHERE changed > ?";
static const char KINDS_USER_STATS[] = "iiidd";
static const char SQL_REQUESTS[] =
    "SELECT id, user_id, user_roles, seq, created, expiry, priority, n, jobs, state, kudos, "
    "consumed, client_ip, body FROM broker_requests WHERE changed > ? ORDER BY seq";
static const char KINDS_REQUESTS[] = "siiiiidiiiddss";
/* The counts, read again under b->lock just before merging: a pop claims
 * under that lock, so these are never older than this node's own claims
 * (the full rows above, read without the lock, may be). */
static const char SQL_COUNTS[] =
    "SELECT id, n, state, jobs, expiry, consumed FROM broker_requests WHERE changed > ?";
static const char KINDS_COUNTS[] = "siiiid";
static const char SQL_JOBS[] =
    "SELECT id, request_id, worker_id, model, seed, state, censored, aborted, started, ttl, "
    "finished, gen_metadata, reward, seq FROM broker_jobs WHERE changed > ? ORDER BY seq";
static const char KINDS_JOBS[] = "ssssiiiiiiisdi";

/* ---- merging (b->lock held) --------------------------------------------------- */

static void merge_worker(broker *b, const json_t *row) {
    const char *id = COL_S(row, 0), *name = COL_S(row, 1);
    br_worker *w = br_worker_find(b, id);
    if (!w && (w = br_worker_find_name(b, name)) != NULL) {
        /* two nodes made this worker at once and the other's row won the
         * name: take its id, so jobs and rows agree */
        br_map_del(&b->workers, w->id);
        snprintf(w->id, sizeof(w->id), "%s", id);
        br_map_put(&b->workers, w->id, w);
    }
    br_worker_counts table = {.requests_fulfilled = COL_I(row, 9),
                              .uncompleted_jobs = COL_I(row, 10),
                              .uptime_s = COL_I(row, 11),
                              .suspicion = COL_I(row, 12),
                              .kudos_generated = COL_D(row, 13),
                              .mps_generated = COL_D(row, 14)};
    if (w) {
        if (COL_I(row, 6) > w->last_checkin_ms)
            w->last_checkin_ms = COL_I(row, 6); /* online as seen by any node */
        br_worker_counts_merge(w, &table); /* every node's counts (store.c) */
        return;
    }
    w = calloc(1, sizeof(*w));
    if (!w || !(w->name = strdup(name))) {
        free(w);
        return;
    }
    snprintf(w->id, sizeof(w->id), "%s", id);
    w->user_id = COL_I(row, 2);
    snprintf(w->owner, sizeof(w->owner), "%s", COL_S(row, 3));
    w->owner_roles = (uint32_t)COL_I(row, 4);
    w->created_ms = COL_I(row, 5);
    w->last_checkin_ms = w->last_saved_ms = COL_I(row, 6);
    json_t *attrs = json_loads(COL_S(row, 7), 0, NULL);
    br_store_attrs_from_json(&w->a, attrs);
    json_decref(attrs);
    w->maintenance = COL_I(row, 8) != 0;
    w->speed = BR_DEFAULT_SPEED;
    br_worker_counts_merge(w, &table);
    br_worker_add(b, w);
    b->workers_ver++;
}

/* A row of SQL_USER_STATS. */
static void merge_user_stats(broker *b, const json_t *row) {
    br_user *u = br_user_get(b, COL_I(row, 0), true);
    if (u)
        br_user_counts_merge(u, COL_I(row, 1), COL_I(row, 2), COL_D(row, 3), COL_D(row, 4));
}

/* A row of SQL_COUNTS: id, n, state, jobs, expiry, consumed. */
static void merge_counts(broker *b, const json_t *row) {
    br_request *r = br_request_find(b, COL_S(row, 0));
    if (!r)
        return;
    /* kudos consumed: every node's submits (only grows, like store.c's
     * counters; the table may lag a write in flight) */
    double unwritten = r->consumed - r->stored_consumed;
    if (COL_D(row, 5) + unwritten > r->consumed)
        r->consumed = COL_D(row, 5) + unwritten;
    r->stored_consumed = r->consumed - unwritten;
    if (r->state != BR_REQ_ACTIVE)
        return; /* ended states are final */
    int state = (int)COL_I(row, 2);
    if (state != BR_REQ_ACTIVE) {
        r->state = (br_req_state)state;
        r->n = 0;
        r->jobs = (int)COL_I(row, 3);
    } else {
        /* the database's count is the truth, plus our re-queues not yet
         * committed (br_op_track_requeue) */
        r->n = (int)COL_I(row, 1) + r->unsynced_n;
    }
    if (COL_I(row, 4) > r->expiry_ms)
        r->expiry_ms = COL_I(row, 4); /* the expiry heap is lazy: it re-reads this */
    br_request_requeue(b, r);
}

/* A full row of SQL_REQUESTS: adds the requests this node does not know
 * (their counts come from merge_counts). */
static void merge_request(broker *b, const json_t *row) {
    br_request *r = br_request_find(b, COL_S(row, 0));
    if (r)
        return;
    r = calloc(1, sizeof(*r));
    if (!r)
        return;
    snprintf(r->id, sizeof(r->id), "%s", COL_S(row, 0));
    r->user_id = COL_I(row, 1);
    r->user_roles = (uint32_t)COL_I(row, 2);
    r->seq = COL_I(row, 3);
    r->created_ms = COL_I(row, 4);
    r->expiry_ms = COL_I(row, 5);
    r->priority = COL_D(row, 6);
    r->n = (int)COL_I(row, 7);
    r->jobs = (int)COL_I(row, 8);
    r->state = (br_req_state)COL_I(row, 9);
    if (r->state != BR_REQ_ACTIVE)
        r->n = 0;
    r->kudos = COL_D(row, 10);
    r->consumed = r->stored_consumed = COL_D(row, 11);
    r->client_ip = strdup(COL_S(row, 12));
    r->body = strdup(COL_S(row, 13));
    json_t *body = r->body ? json_loads(r->body, 0, NULL) : NULL;
    if (!body || br_request_parse(b, body, &r->s) != 0) {
        json_decref(body);
        br_request_free(r);
        return;
    }
    json_decref(body);
    int64_t keep = b->next_seq; /* keys of our own range only (SLOT_SHIFT) */
    br_request_add(b, r);
    b->next_seq = keep;
    b->queue_ver++;
}

static void merge_job(broker *b, const json_t *row) {
    br_job *j = br_job_find(b, COL_S(row, 0));
    int state = (int)COL_I(row, 5);
    if (j) {
        if (j->state != BR_JOB_PROCESSING || state == BR_JOB_PROCESSING)
            return; /* our own change, or nothing new */
        br_job_finish(b, j, (br_job_state)state);
    } else {
        br_request *r = br_request_find(b, COL_S(row, 1));
        if (!r || !(j = calloc(1, sizeof(*j))))
            return;
        snprintf(j->id, sizeof(j->id), "%s", COL_S(row, 0));
        j->req = r;
        j->worker = br_worker_find(b, COL_S(row, 2));
        if (!(j->model = strdup(COL_S(row, 3)))) {
            free(j);
            return;
        }
        j->state = (br_job_state)state;
        j->start_ms = COL_I(row, 8);
        j->ttl_s = (int)COL_I(row, 9);
        j->seq = COL_I(row, 13);
        int64_t keep = b->next_job_seq;
        br_job_add(b, j);
        b->next_job_seq = keep;
    }
    j->seed = COL_I(row, 4);
    j->censored = COL_I(row, 6) != 0;
    j->aborted = COL_I(row, 7) != 0;
    j->finish_ms = COL_I(row, 10);
    free(j->gen_metadata);
    j->gen_metadata = strdup(COL_S(row, 11));
    j->reward = COL_D(row, 12);
}

/* ---- one sync round --------------------------------------------------------------- */

static void drop_db(broker *b, br_cluster *c) {
    if (!c->db)
        return;
    hn_error ignored;
    /* a connection going back to the pool must not keep the leader lock */
    b->db->exec(c->db, "SELECT pg_advisory_unlock_all()", NULL, 0, NULL, &ignored);
    b->db->release(b->storage->state, c->db);
    c->db = NULL;
    atomic_store(&c->leader, false);
}

/* Caller holds c->sync_lock. Returns 0, or -1 (logged; the next round retries
 * on a fresh connection). */
static int sync_round(broker *b, br_cluster *c) {
    hn_error err;
    if (!c->db && !(c->db = b->db->acquire(b->storage->state, &err)))
        return -1;
    int64_t now = db_now_ms(b, c->db, &err);
    json_t *workers = NULL, *requests = NULL, *jobs = NULL, *counts = NULL, *users = NULL;
    if (now < 0)
        goto fail;
    if (!atomic_load(&c->leader)) {
        hn_value k[] = {HN_V_INT(LEADER_LOCK_KEY)};
        hn_stmt *st = b->db->query(c->db, "SELECT pg_try_advisory_lock(?)", k, 1, &err);
        if (!st)
            goto fail;
        /* a boolean comes back as text "t"/"f" or 1/0 depending on the provider */
        if (b->db->step(st, &err) == 1) {
            const char *v = b->db->col_text(st, 0);
            if (v[0] == 't' || v[0] == '1') {
                atomic_store(&c->leader, true);
                b->api->log(b->self, HN_LOG_INFO, "cluster: this node runs the periodic jobs");
            }
        }
        b->db->finish(st);
    }
    int64_t since = c->since_ms - SYNC_OVERLAP_MS;
    if (!(workers = read_rows(b, c->db, SQL_WORKERS, KINDS_WORKERS, since, &err)) ||
        !(requests = read_rows(b, c->db, SQL_REQUESTS, KINDS_REQUESTS, since, &err)) ||
        !(jobs = read_rows(b, c->db, SQL_JOBS, KINDS_JOBS, since, &err)) ||
        !(users = read_rows(b, c->db, SQL_USER_STATS, KINDS_USER_STATS, since, &err)))
        goto fail;
    size_t i;
    json_t *row;
    pthread_mutex_lock(&b->lock);
    counts = read_rows(b, c->db, SQL_COUNTS, KINDS_COUNTS, since, &err);
    if (!counts) {
        pthread_mutex_unlock(&b->lock);
        goto fail;
    }
    json_array_foreach(workers, i, row) merge_worker(b, row);
    json_array_foreach(requests, i, row) merge_request(b, row);
    json_array_foreach(counts, i, row) merge_counts(b, row);
    json_array_foreach(jobs, i, row) merge_job(b, row);
    json_array_foreach(users, i, row) merge_user_stats(b, row);
    pthread_mutex_unlock(&b->lock);
    json_decref(users);
    json_decref(workers);
    json_decref(requests);
    json_decref(jobs);
    json_decref(counts);
    c->since_ms = now;
    if (c->failing)
        b->api->log(b->self, HN_LOG_INFO, "cluster: sync works again");
    c->failing = false;
    return 0;
fail:
    json_decref(users);
    json_decref(workers);
    json_decref(requests);
    json_decref(jobs);
    json_decref(counts);
    if (!c->failing)
        b->api->log(b->self, HN_LOG_WARN, "cluster: sync failed (retrying every round): %s",
                    err.message);
    c->failing = true;
    drop_db(b, c);
    return -1;
}

static void *sync_main(void *arg) {
    broker *b = arg;
    br_cluster *c = b->cluster;
    for (;;) {
        pthread_mutex_lock(&c->wait_lock);
        if (!c->stop) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            long long ns = until.tv_nsec + (b->conf->cluster_sync_ms % 1000) * 1000000LL;
            until.tv_sec += (time_t)(b->conf->cluster_sync_ms / 1000 + ns / 1000000000LL);
            until.tv_nsec = (long)(ns % 1000000000LL);
            while (!c->stop && pthread_cond_timedwait(&c->wait_cond, &c->wait_lock, &until) == 0)
                ;
        }
        bool stop = c->stop;
        pthread_mutex_unlock(&c->wait_lock);
        if (stop)
            break;
        pthread_mutex_lock(&c->sync_lock);
        sync_round(b, c);
        pthread_mutex_unlock(&c->sync_lock);
    }
    return NULL;
}

/* ---- public ----------------------------------------------------------------------- */

int br_cluster_start(broker *b, hn_error *err) {
    if (!b->conf->cluster)
        return 0;
    if (!b->db->dialect || strcmp(b->db->dialect, "postgres") != 0) {
        b->api->error(err, 500, "BadConfig",
                      "broker: cluster = true needs storage-pg (several nodes on one "
                      "PostgreSQL database)");
        return -1;
    }
    if (b->db->migrate(b->storage->state, "broker_cluster", cluster_migrations,
                       sizeof(cluster_migrations) / sizeof(cluster_migrations[0]), err) != HN_OK)
        return -1;
    br_cluster *c = calloc(1, sizeof(*c));
    if (!c) {
        b->api->error(err, 500, "InternalServerError", "out of memory");
        return -1;
    }
    pthread_mutex_init(&c->sync_lock, NULL);
    pthread_mutex_init(&c->wait_lock, NULL);
    pthread_cond_init(&c->wait_cond, NULL);
    atomic_init(&c->leader, false);
    b->cluster = c;
    c->db = b->db->acquire(b->storage->state, err);
    if (!c->db)
        return -1;
    int64_t slot = -1;
    hn_stmt *st = b->db->query(c->db, "SELECT nextval('broker_node_slot')", NULL, 0, err);
    if (st) {
        if (b->db->step(st, err) == 1)
            slot = b->db->col_int(st, 0);
        b->db->finish(st);
    }
    c->since_ms = db_now_ms(b, c->db, err);
    if (slot <= 0 || c->since_ms < 0)
        return -1;
    /* rows written between the load (br_store_start) and now are read by the
     * first round */
    c->since_ms -= 10000;
    pthread_mutex_lock(&b->lock);
    int64_t base = slot << SLOT_SHIFT;
    if (b->next_seq < base)
        b->next_seq = base;
    if (b->next_job_seq < base)
        b->next_job_seq = base;
    pthread_mutex_unlock(&b->lock);
    pthread_mutex_lock(&c->sync_lock);
    sync_round(b, c);
    pthread_mutex_unlock(&c->sync_lock);
    if (pthread_create(&c->thread, NULL, sync_main, b) != 0) {
        b->api->error(err, 500, "InternalServerError", "cannot start the cluster sync thread");
        return -1;
    }
    c->running = true;
    b->api->log(b->self, HN_LOG_INFO, "cluster: node slot %lld, sync every %lld ms",
                (long long)slot, b->conf->cluster_sync_ms);
    return 0;
}

void br_cluster_stop(broker *b) {
    br_cluster *c = b->cluster;
    if (!c)
        return;
    if (c->running) {
        pthread_mutex_lock(&c->wait_lock);
        c->stop = true;
        pthread_cond_signal(&c->wait_cond);
        pthread_mutex_unlock(&c->wait_lock);
        pthread_join(c->thread, NULL);
        c->running = false;
    }
    drop_db(b, c);
    pthread_mutex_destroy(&c->sync_lock);
    pthread_mutex_destroy(&c->wait_lock);
    pthread_cond_destroy(&c->wait_cond);
    free(c);
    b->cluster = NULL;
}

bool br_cluster_leads(broker *b) {
    return !b->cluster || atomic_load(&b->cluster->leader);
}

static void refresh_if_missing(broker *b, const char *id, bool job) {
    br_cluster *c = b->cluster;
    if (!c)
        return;
    pthread_mutex_lock(&b->lock);
    bool known = job ? br_job_find(b, id) != NULL : br_request_find(b, id) != NULL;
    pthread_mutex_unlock(&b->lock);
    if (known)
        return;
    pthread_mutex_lock(&c->sync_lock);
    sync_round(b, c);
    pthread_mutex_unlock(&c->sync_lock);
}

void br_cluster_ensure_request(broker *b, const char *id) {
    refresh_if_missing(b, id, false);
}

void br_cluster_ensure_job(broker *b, const char *id) {
    refresh_if_missing(b, id, true);
}

int br_cluster_claim(broker *b, br_op *op, br_request *r, int n, hn_error *err) {
    hn_value a[] = {HN_V_INT(n), HN_V_INT(r->seq), HN_V_INT(n)};
    return br_op_commit_now(b, op,
                            "UPDATE broker_requests SET n = n - ? "
                            "WHERE seq = ? AND state = 0 AND n >= ?",
                            a, 3, err);
}

void br_cluster_unpop(broker *b, br_request *r, int n_jobs, bool taken) {
    int total = 0;
    for (br_job *j = r->jobs_head; j; j = j->rnext)
        total++;
    br_job *prev = NULL, *j = r->jobs_head;
    for (int i = 0; i < total - n_jobs; i++) {
        prev = j;
        j = j->rnext;
    }
    if (prev)
        prev->rnext = NULL;
    else
        r->jobs_head = NULL;
    r->jobs_tail = prev;
    while (j) {
        br_job *next = j->rnext;
        br_job_finish(b, j, BR_JOB_FAULTED); /* leaves the in-flight list */
        r->restarted--;
        br_map_del(&b->jobs, j->id);
        free(j->model);
        free(j->gen_metadata);
        free(j);
        j = next;
    }
    /* taken: the database has fewer left than we thought; the next sync
     * round says how many */
    r->n = taken ? 0 : r->n + n_jobs;
    br_request_requeue(b, r);
}

void br_cluster_job_fault(broker *b, const br_job *j, bool requeued, br_op *op) {
    (void)b;
    hn_value a[] = {HN_V_INT(j->censored),   HN_V_INT(j->aborted),
                    HN_V_INT(j->finish_ms),  HN_V_INT(j->seed),
                    HN_V_TEXT(j->gen_metadata ? j->gen_metadata : "[]"),
                    HN_V_DOUBLE(j->reward),  HN_V_INT(j->seq),
                    HN_V_INT(requeued ? 1 : 0)};
    br_op_sql(op,
              "WITH f AS (UPDATE broker_jobs SET state = 2, censored = ?, aborted = ?, "
              "finished = ?, seed = ?, gen_metadata = ?, reward = ? WHERE seq = ? AND state = 0 "
              "RETURNING request_seq) "
              "UPDATE broker_requests SET n = n + ? WHERE seq IN (SELECT request_seq FROM f) "
              "AND state = 0",
              a, sizeof(a) / sizeof(a[0]));
}

int br_cluster_guard_concurrency(broker *b, br_op *op, const br_request *r,
                                 long long concurrency) {
    /* the anonymous user's limit is per model (generate.c): checked against
     * this node's index only */
    if (!b->cluster || r->user_id == 0)
        return 0;
    /* one check per user at a time in the whole cluster: the lock waits for
     * another node's insert of the same user to commit, and the count (a
     * statement of its own, so with a snapshot taken after the lock) then
     * sees it. Held until this transaction ends. */
    hn_value a[] = {HN_V_INT(r->user_id)};
    if (br_op_lock(op, USER_LOCK_BASE ^ r->user_id) != 0)
        return -1;
    return br_op_guard_max(op,
                           "SELECT COALESCE(SUM(n), 0) FROM broker_requests "
                           "WHERE user_id = ? AND state = 0",
                           a, 1, concurrency, 429, "TooManyPrompts",
                           "Parallel requests (%lld) exceeded user limit (%lld). Please try "
                           "again later or request to increase your concurrency.");
}

int br_cluster_reserve_worker(broker *b, const br_worker *w, hn_error *err) {
    if (!b->cluster)
        return 0;
    br_op *op = br_op_new(b);
    hn_value a[] = {HN_V_INT(w->user_id)};
    /* the lock: two nodes creating workers for one user count one after the
     * other; the count is a statement of its own, so it sees the other's
     * committed row */
    if (!op || br_op_lock(op, WORKER_LOCK_BASE ^ w->user_id) != 0 ||
        br_store_worker_save(op, w) != 0 ||
        br_op_guard_max(op, "SELECT COUNT(*) FROM broker_workers WHERE user_id = ?", a, 1,
                        b->conf->max_untrusted_workers + 1, 403, "TooManyWorkers",
                        "%lld workers, limit %lld") != 0) {
        br_op_discard(op);
        b->api->error(err, 500, "InternalServerError", "out of memory");
        return -1;
    }
    int rc = br_op_commit_now(b, op, NULL, NULL, 0, err);
    br_op_discard(op);
    if (rc == 1)
        return 0;
    if (err->status == 403) /* the limit: the horde's own words */
        b->api->error(err, 403, "TooManyWorkers",
                      "To avoid abuse, untrusted users can only have up to %lld distinct workers.",
                      b->conf->max_untrusted_workers);
    return -1;
}

static void submit_failed(broker *b, void *arg) {
    br_job *j = br_job_find(b, arg);
    if (!j || j->state != BR_JOB_DONE)
        return;
    br_request *r = j->req;
    j->state = BR_JOB_PROCESSING;
    r->finished--;
    r->processing++;
    /* the counters submit.c added for this image: the worker's retry adds
     * them again (same arithmetic as there) */
    double burn = br_price_burn(&r->s, j->censored ? 0 : j->reward);
    r->consumed -= burn; /* and that difference never reached the table */
    r->stored_consumed -= burn;
    br_worker *w = j->worker;
    if (w) {
        w->requests_fulfilled--;
        w->kudos_generated -= j->reward * br_bridge_multiplier(w->a.bridge_agent);
        w->mps_generated -= r->s.things / 1e6;
        w->dirty = true;
    }
    br_user *requester = br_user_get(b, r->user_id, false);
    if (requester) {
        double mult = r->usage_multiplier > 0 ? r->usage_multiplier : 1;
        requester->usage_mps -= r->s.things * mult / 1e6;
        requester->stats_dirty = true;
    }
    br_user *owner = w ? br_user_get(b, w->user_id, false) : NULL;
    if (owner) {
        owner->images_fulfilled--;
        owner->contribution_mps -= r->s.things / 1e6;
        owner->stats_dirty = true;
    }
    j->iprev = NULL; /* back into the in-flight list (stale sweep) */
    j->inext = b->inflight_head;
    if (b->inflight_head)
        b->inflight_head->iprev = j;
    b->inflight_head = j;
}

typedef struct fault_undo {
    char id[BR_ID_LEN];
    bool requeued;
} fault_undo;

/* A worker's fault of j whose commit failed: j is processing again (as in the
 * table), so the leader's sweep faults it later if nobody submits it. */
static void fault_failed(broker *b, void *arg) {
    const fault_undo *u = arg;
    br_job *j = br_job_find(b, u->id);
    if (!j || j->state != BR_JOB_FAULTED || j->req->state != BR_REQ_ACTIVE)
        return;
    br_request *r = j->req;
    j->state = BR_JOB_PROCESSING;
    j->finish_ms = 0;
    r->restarted--;
    r->processing++;
    if (u->requeued && r->n > 0)
        r->n--;
    j->iprev = NULL; /* back into the in-flight list (stale sweep) */
    j->inext = b->inflight_head;
    if (b->inflight_head)
        b->inflight_head->iprev = j;
    b->inflight_head = j;
    br_request_requeue(b, r);
}

void br_cluster_fault_on_fail(broker *b, br_op *op, const br_job *j, bool requeued) {
    if (!b->cluster)
        return;
    fault_undo *u = calloc(1, sizeof(*u));
    if (!u)
        return;
    memcpy(u->id, j->id, sizeof(u->id));
    u->requeued = requeued;
    br_op_on_fail(op, fault_failed, u);
}

void br_cluster_submit_on_fail(broker *b, br_op *op, const br_job *j) {
    if (!b->cluster)
        return;
    char *id = strdup(j->id);
    if (id)
        br_op_on_fail(op, submit_failed, id);
}
