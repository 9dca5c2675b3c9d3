/* broker: the job lifecycle on a main-loop timer (§4.4): stale jobs are
 * aborted and their image re-queued, requests with too many faults fault,
 * expired requests are deleted with their images, and the queue snapshot
 * behind queue_position/wait_time is rebuilt. The horde runs its cleanup
 * every 60 s; ours runs every `lifecycle_interval_ms` (1 s by default), which
 * is cheap because it walks memory, not tables. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "accounts.h"
#include "cluster.h"

#define TOO_MANY_ABORTS_MSG                                                                  \
    "Maintenance mode activated because worker is dropping too many jobs. Please investigate " \
    "if your performance has been impacted and consider reducing your max_power or your "      \
    "max_threads"

void br_job_fault(broker *b, br_job *j, bool stale, int64_t now_ms, br_op *op) {
    br_request *r = j->req;
    bool was_ended = br_request_ended(r);
    br_job_finish(b, j, BR_JOB_FAULTED);
    j->aborted = stale;
    j->finish_ms = now_ms;
    br_worker *w = j->worker;
    if (w && stale) {
        w->uncompleted_jobs++;
        if (now_ms - w->abort_window_start_ms > 3600 * 1000) {
            w->abort_window_start_ms = now_ms;
            w->aborts_in_window = 0;
        }
        /* over the limit (raid mode, modes.c: a lower one): the horde's
         * TOO_MANY_JOBS_ABORTED suspicion (suspicion.c; it pauses the worker
         * at 5) and a new count; maintenance too, except in raid mode, where
         * the worker must not learn it was noticed */
        bool raid = b->acc && b->acc->raid;
        if (++w->aborts_in_window > br_abort_limit(b)) {
            w->aborts_in_window = 0;
            bool was_paused = w->paused;
            br_worker_suspect(b, w, HN_SUSPICION_TOO_MANY_JOBS_ABORTED);
            if (!raid && !w->maintenance) {
                w->maintenance = true;
                free(w->maintenance_msg);
                w->maintenance_msg = strdup(TOO_MANY_ABORTS_MSG);
                b->workers_ver++;
            } else if (w->paused != was_paused) {
                b->workers_ver++;
            }
        }
        w->dirty = true;
    }
    /* the image goes back to the queue while it is still wanted (not after a
     * cancel, which set jobs to what was finished) */
    bool requeued =
        r->state == BR_REQ_ACTIVE && r->finished + r->processing + (r->n > 0 ? r->n : 0) < r->jobs;
    if (requeued)
        r->n += 1;
    if (r->restarted > b->conf->max_faults && r->state == BR_REQ_ACTIVE) {
        /* nothing more will be handed out: report waiting 0 (the horde
         * leaves n as it was, which shows a faulted request as waiting) */
        r->state = BR_REQ_FAULTED;
        r->n = 0;
    }
    br_request_requeue(b, r);
    if (b->cluster) { /* the job only if still processing, n + 1 only then (cluster.h) */
        br_cluster_job_fault(b, j, requeued, op);
        if (requeued)
            br_op_track_requeue(op, r);
        if (!stale) /* the sweep's op is kept instead (br_op_retry) */
            br_cluster_fault_on_fail(b, op, j, requeued);
    } else {
        br_store_job_update(op, j);
    }
    br_store_request_update(op, r);
    if (!was_ended && br_request_ended(r))
        br_op_notify(op, HN_HOOK_ID_generation_ended,
                     br_ended_info(b, r, r->state == BR_REQ_FAULTED ? "faulted" : "done"));
}

static void delete_request_rows(broker *b, br_request *r, br_op *op) {
    hn_value a[] = {HN_V_INT(r->seq)};
    br_op_sql(op, "DELETE FROM broker_jobs WHERE request_seq = ?", a, 1);
    br_op_sql(op, "DELETE FROM broker_requests WHERE seq = ?", a, 1);
    char key[BR_ID_LEN + 32];
    if (r->s.has_source) {
        snprintf(key, sizeof(key), "%s_src", r->id);
        br_op_remove_image(op, key);
    }
    if (r->s.has_mask) {
        snprintf(key, sizeof(key), "%s_msk", r->id);
        br_op_remove_image(op, key);
    }
    for (int i = 0; i < r->s.n_extra_src; i++) {
        snprintf(key, sizeof(key), "%s_exsrc%d", r->id, i);
        br_op_remove_image(op, key);
    }
    for (br_job *j = r->jobs_head; j; j = j->rnext) {
        snprintf(key, sizeof(key), "%s.webp", j->id);
        br_op_remove_image(op, key);
    }
    (void)b;
}

static int worker_id_order(const void *x, const void *y) {
    const br_worker *a = *(void *const *)x, *c = *(void *const *)y;
    return strcmp(a->id, c->id);
}

static int user_id_order(const void *x, const void *y) {
    const br_user *ux = *(void *const *)x, *uy = *(void *const *)y;
    int64_t a = ux->id, c = uy->id;
    return (a > c) - (a < c);
}

/* The dirty entries of a map (workers or users), in a fresh array (NULL when
 * none or out of memory). */
static void **dirty_entries(br_map *m, bool users, size_t *n) {
    *n = 0;
    size_t i = 0, cap = 0;
    void *v, **out = NULL;
    while (br_map_next(m, &i, NULL, &v)) {
        if (users ? !((br_user *)v)->stats_dirty : !((br_worker *)v)->dirty)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            void **grown = realloc(out, cap * sizeof(*out));
            if (!grown)
                break; /* the rest stay dirty: the next tick writes them */
            out = grown;
        }
        out[(*n)++] = v;
    }
    return out;
}

/* Rows are written in key order (workers by id, users by id), never in the
 * hash maps' order: two nodes' flush transactions that touch the same rows
 * then lock them in the same order, so one waits for the other instead of
 * both deadlocking (PostgreSQL would break the tie only after its
 * deadlock_timeout, failing one of them). */
bool br_flush_dirty(broker *b, br_op *op, int64_t now_ms) {
    bool wrote = false;
    size_t n;
    void **ws = dirty_entries(&b->workers, false, &n);
    if (ws)
        qsort(ws, n, sizeof(*ws), worker_id_order);
    for (size_t k = 0; ws && k < n; k++) {
        br_worker *w = ws[k];
        br_store_worker_flush(op, w); /* the counters as differences */
        w->dirty = false;
        w->last_saved_ms = now_ms;
        wrote = true;
    }
    free(ws);
    void **us = dirty_entries(&b->users, true, &n);
    if (us)
        qsort(us, n, sizeof(*us), user_id_order);
    for (size_t k = 0; us && k < n; k++) {
        br_user *u = us[k];
        br_store_user_stats(op, u);
        u->stats_dirty = false;
        wrote = true;
    }
    free(us);
    return wrote;
}

void br_lifecycle_tick(void *state) {
    broker *b = state;
    if (!b->started)
        return;
    int64_t now = br_now_ms();
    json_t *faults = json_array();
    br_op *op = br_op_new(b);
    /* the counters in an op of their own: a row that cannot be written (a
     * worker's name taken on another node) does not hold back the sweep */
    br_op *flush = br_op_new(b);
    if (!op || !flush || !faults) {
        br_op_discard(op);
        br_op_discard(flush);
        json_decref(faults);
        return;
    }
    bool wrote = false;
    pthread_mutex_lock(&b->lock);
    /* stale jobs (in a cluster: on the leader only, cluster.h) */
    bool leads = br_cluster_leads(b);
    for (br_job *j = leads ? b->inflight_head : NULL, *next; j; j = next) {
        next = j->inext;
        if (now - j->start_ms <= (int64_t)j->ttl_s * 1000)
            continue;
        br_job_fault(b, j, true, now, op);
        json_array_append_new(faults, json_pack("{s:s, s:s, s:s, s:I, s:b}", "job", j->id,
                                                "request", j->req->id, "worker",
                                                j->worker ? j->worker->id : "", "user_id",
                                                (json_int_t)j->req->user_id, "stale", 1));
        wrote = true;
    }
    /* expired requests, earliest first, from the expiry heap */
    br_request *r;
    while ((r = br_request_next_expired(b, now)) != NULL) {
        if (!leads) { /* cluster: the leader deletes the rows; we only forget it */
            br_request_drop(b, r);
            continue;
        }
        if (!br_request_ended(r)) /* one that ended was reported then */
            br_op_notify(op, HN_HOOK_ID_generation_ended, br_ended_info(b, r, "expired"));
        delete_request_rows(b, r, op);
        br_request_drop(b, r);
        wrote = true;
    }
    bool flushed = br_flush_dirty(b, flush, now);
    br_queue_snapshot(b);
    /* stale faults, expiry and counters are already in memory: a commit that
     * fails while the database is away is kept and made once it is back */
    br_op_retry(op);
    br_op_retry(flush);
    if (wrote)
        br_op_submit(b, op);
    if (flushed)
        br_op_submit(b, flush);
    pthread_mutex_unlock(&b->lock);
    if (!wrote)
        br_op_discard(op);
    if (!flushed)
        br_op_discard(flush);
    size_t k;
    json_t *info;
    json_array_foreach(faults, k, info) {
        hn_run_job_faulted(b->api, info);
    }
    json_decref(faults);
}
