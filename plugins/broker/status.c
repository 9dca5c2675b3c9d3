/* broker: request status numbers (§4.5) and the /status endpoints. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"

/* ---- is_possible ------------------------------------------------------------- */

bool br_request_possible(broker *b, br_request *r, int64_t now_ms) {
    /* cached like the horde's 60 s cache, but dropped as soon as any worker's
     * matching inputs change, and after 10 s (workers going offline) */
    if (r->possible_at_ms && r->possible_ver == b->workers_ver &&
        now_ms - r->possible_at_ms < 10000)
        return r->possible;
    bool possible = false;
    size_t i = 0;
    void *v;
    while (!possible && br_map_next(&b->workers, &i, NULL, &v)) {
        br_worker *w = v;
        if (!br_worker_online(b, w, now_ms))
            continue;
        if (w->maintenance && w->user_id != r->user_id)
            continue;
        if (br_match_worker(b, w, r) == BR_SKIP_NONE)
            possible = true;
    }
    r->possible = possible;
    r->possible_at_ms = now_ms;
    r->possible_ver = b->workers_ver;
    return possible;
}

/* ---- queue snapshot ---------------------------------------------------------- */

void br_queue_snapshot(broker *b) {
    int64_t gen = ++b->snap_gen;
    double mps = 0;
    int n = 0, pos = 0;
    for (br_request *r = b->q_head; r; r = r->qnext) {
        mps += r->s.things * r->n / 1e6;
        n += r->n;
        r->snap_gen = gen;
        r->q_pos = ++pos;
        r->q_mps = mps;
        r->q_n = n;
    }
    b->snap_count = pos;
    b->snap_mps = mps;
    b->snap_n = n;
    b->post_count = 0;
    b->post_n = 0;
    b->post_mps = 0;
    /* speeds: mean over every worker's samples (the horde's avg_speed) */
    int64_t now = br_now_ms();
    double sum = 0;
    int samples = 0, threads = 0;
    size_t i = 0;
    void *v;
    while (br_map_next(&b->workers, &i, NULL, &v)) {
        br_worker *w = v;
        for (int k = 0; k < w->n_samples; k++)
            sum += w->samples[k];
        samples += w->n_samples;
        if (br_worker_online(b, w, now))
            threads += w->a.threads;
    }
    b->snap_avg_speed = samples ? sum / samples : BR_DEFAULT_SPEED;
    b->snap_threads = threads;
}

/* ---- status numbers ---------------------------------------------------------- */

void br_status_compute(broker *b, br_request *r, int64_t now_ms, br_status *st) {
    memset(st, 0, sizeof(*st));
    st->finished = r->finished;
    st->processing = r->processing;
    st->restarted = r->restarted;
    int n = r->n > 0 ? r->n : 0;
    int rem = r->jobs - r->processing - r->finished;
    if (rem < 0)
        rem = 0;
    st->waiting = n < rem ? n : rem;
    st->faulted = r->state == BR_REQ_FAULTED;
    if (st->faulted)
        st->done = true;
    else if (r->n > 0)
        st->done = false;
    else
        st->done = (r->finished + r->restarted) - r->processing >= r->jobs;
    /* queue position and wait time, from the last snapshot (rebuilt every
     * tick); a request newer than the snapshot counts as last in line */
    double q_mps = 0;
    int q_n = 0;
    if (r->queued && r->counted_n > 0) {
        if (r->snap_gen == b->snap_gen && r->snap_gen != 0) {
            st->queue_position = r->q_pos;
            q_mps = r->q_mps;
            q_n = r->q_n;
        } else if (r->post_gen == b->snap_gen) {
            st->queue_position = b->snap_count + r->post_pos;
            q_mps = b->snap_mps + r->post_mps;
            q_n = b->snap_n + r->post_n;
        } else {
            st->queue_position = b->snap_count + 1;
            q_mps = b->snap_mps + r->s.things * r->n / 1e6;
            q_n = b->snap_n + r->n;
        }
    }
    double avg = b->snap_avg_speed > 0 ? b->snap_avg_speed / 1e6 : 1.0;
    int threads = b->snap_threads < q_n ? b->snap_threads : q_n;
    double d = avg * threads;
    if (d <= 0)
        d = 1;
    double max_remaining = 0;
    for (br_job *j = r->jobs_head; j; j = j->rnext) {
        if (j->state != BR_JOB_PROCESSING)
            continue;
        double speed = j->worker && j->worker->speed > 0 ? j->worker->speed : BR_DEFAULT_SPEED;
        double left = r->s.things / speed - (double)(now_ms - j->start_ms) / 1000.0;
        if (left > max_remaining)
            max_remaining = left;
    }
    st->wait_time = (int)br_round(q_mps / d + max_remaining, 0);
    st->kudos = br_round(r->consumed, 0);
    st->is_possible = r->processing > 0 || br_request_possible(b, r, now_ms);
}

json_t *br_status_json(const br_status *st) {
    return json_pack("{s:i, s:i, s:i, s:i, s:b, s:b, s:i, s:i, s:f, s:b}", "finished",
                     st->finished, "processing", st->processing, "restarted", st->restarted,
                     "waiting", st->waiting, "done", st->done, "faulted", st->faulted,
                     "wait_time", st->wait_time, "queue_position", st->queue_position, "kudos",
                     st->kudos, "is_possible", st->is_possible);
}

/* ---- /status/heartbeat --------------------------------------------------------- */

void br_route_heartbeat(hn_request *req, void *state) {
    broker *b = state;
    int pending = 0;
    if (b->started) {
        pthread_mutex_lock(&b->wq_lock);
        pending = b->wq_len;
        pthread_mutex_unlock(&b->wq_lock);
    }
    /* OVERLOADED when writes pile up faster than the disk takes them */
    const char *msg = !b->started ? "DOWN" : pending > 10000 ? "OVERLOADED" : "OK";
    b->api->respond_json(req, 200,
                         json_pack("{s:s, s:s, s:i, s:i, s:i, s:b}", "message", msg, "version",
                                   BR_HORDE_VERSION, "queue", pending, "threads", 1,
                                   "active_count", 0, "db_connection", b->started));
}

/* ---- /status/models -------------------------------------------------------------- */

typedef struct model_row {
    const char *name; /* borrowed from a worker or request, valid under the lock */
    int count;
    double queued;
    int jobs;
} model_row;

typedef struct model_rows {
    model_row *rows;
    int n, cap;
    br_map index;
} model_rows;

static model_row *row_get(model_rows *m, const char *name) {
    model_row *r = br_map_get(&m->index, name);
    if (r)
        return &m->rows[(size_t)r - 1];
    if (m->n == m->cap) {
        int nc = m->cap ? m->cap * 2 : 32;
        model_row *nr = realloc(m->rows, (size_t)nc * sizeof(*nr));
        if (!nr)
            return NULL;
        m->rows = nr;
        m->cap = nc;
    }
    model_row *row = &m->rows[m->n++];
    memset(row, 0, sizeof(*row));
    row->name = name;
    /* the map stores index+1 so that 0 (NULL) means absent */
    br_map_put(&m->index, name, (void *)(size_t)m->n);
    return row;
}

static void collect_models(broker *b, model_rows *m, int64_t now) {
    size_t i = 0;
    void *v;
    while (br_map_next(&b->workers, &i, NULL, &v)) {
        br_worker *w = v;
        if (!br_worker_online(b, w, now) || w->maintenance)
            continue;
        for (int k = 0; k < w->a.n_models; k++) {
            model_row *row = row_get(m, w->a.models[k]);
            if (row)
                row->count += w->a.threads;
        }
    }
    for (br_request *r = b->q_head; r; r = r->qnext) {
        for (int k = 0; k < r->s.n_models; k++) {
            const char *name = r->s.models[k];
            /* a requested model nobody serves is listed only if the reference
             * knows it (with count 0) */
            if (!br_map_get(&m->index, name) && !br_model_known(b->ref, name))
                continue;
            model_row *row = row_get(m, name);
            if (row) {
                row->queued += r->s.things;
                row->jobs += r->n + r->processing;
            }
        }
    }
}

static json_t *model_json(broker *b, const model_row *row) {
    double perf = br_model_performance(b, row->name);
    double denom = row->count * perf;
    long long eta = denom > 0 ? (long long)(row->queued / denom) : 10000;
    return json_pack("{s:s, s:i, s:f, s:f, s:i, s:I, s:s}", "name", row->name, "count",
                     row->count, "performance", perf, "queued", row->queued, "jobs", row->jobs,
                     "eta", (json_int_t)eta, "type", "image");
}

void br_route_models(hn_request *req, void *state) {
    broker *b = state;
    const hn_api *api = b->api;
    const char *type = api->req_query(req, "type");
    const char *mstate = api->req_query(req, "model_state");
    const char *min_s = api->req_query(req, "min_count");
    const char *max_s = api->req_query(req, "max_count");
    if (mstate && strcmp(mstate, "known") != 0 && strcmp(mstate, "custom") != 0 &&
        strcmp(mstate, "all") != 0) {
        br_fail(b, req, 400, "BadRequest", "'%.64s' is not a valid model_state: known, custom or all",
                mstate);
        return;
    }
    long min_count = -1, max_count = -1;
    char *end;
    if (min_s) {
        min_count = strtol(min_s, &end, 10);
        if (*end || end == min_s) {
            br_fail(b, req, 400, "BadRequest", "min_count must be an integer");
            return;
        }
    }
    if (max_s) {
        max_count = strtol(max_s, &end, 10);
        if (*end || end == max_s) {
            br_fail(b, req, 400, "BadRequest", "max_count must be an integer");
            return;
        }
    }
    json_t *out = json_array();
    if (type && strcmp(type, "image") != 0) {
        api->respond_json(req, 200, out);
        return;
    }
    model_rows m = {0};
    br_map_init(&m.index);
    pthread_mutex_lock(&b->lock);
    collect_models(b, &m, br_now_ms());
    for (int i = 0; i < m.n; i++) {
        model_row *row = &m.rows[i];
        bool known = br_model_known(b->ref, row->name);
        if (mstate && strcmp(mstate, "known") == 0 && !known)
            continue;
        if (mstate && strcmp(mstate, "custom") == 0 && known)
            continue;
        if (min_count >= 0 && row->count < min_count)
            continue;
        if (max_count >= 0 && row->count > max_count)
            continue;
        json_array_append_new(out, model_json(b, row));
    }
    pthread_mutex_unlock(&b->lock);
    free(m.rows);
    br_map_free(&m.index);
    api->respond_json(req, 200, out);
}

void br_route_model_single(hn_request *req, void *state) {
    broker *b = state;
    const char *name = b->api->req_param(req, "name");
    json_t *out = json_array();
    model_rows m = {0};
    br_map_init(&m.index);
    pthread_mutex_lock(&b->lock);
    collect_models(b, &m, br_now_ms());
    model_row *row = name ? br_map_get(&m.index, name) : NULL;
    if (row)
        json_array_append_new(out, model_json(b, &m.rows[(size_t)row - 1]));
    else if (name && br_model_known(b->ref, name)) {
        model_row zero = {name, 0, 0, 0};
        json_array_append_new(out, model_json(b, &zero));
    }
    pthread_mutex_unlock(&b->lock);
    free(m.rows);
    br_map_free(&m.index);
    b->api->respond_json(req, 200, out);
}

/* ---- /status/performance --------------------------------------------------------- */

void br_route_performance(hn_request *req, void *state) {
    broker *b = state;
    int64_t now = br_now_ms();
    long long queued = 0;
    double queued_mps = 0;
    int workers = 0, threads = 0;
    pthread_mutex_lock(&b->lock);
    for (br_request *r = b->q_head; r; r = r->qnext) {
        queued += r->n;
        queued_mps += r->s.things * r->n / 1e6;
    }
    for (br_job *j = b->inflight_head; j; j = j->inext)
        queued++;
    size_t i = 0;
    void *v;
    while (br_map_next(&b->workers, &i, NULL, &v)) {
        br_worker *w = v;
        if (br_worker_online(b, w, now)) {
            workers++;
            threads += w->a.threads;
        }
    }
    double past = br_past_minute_total(b, now) / 1e6;
    pthread_mutex_unlock(&b->lock);
    b->api->respond_json(
        req, 200,
        json_pack("{s:I, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:i, s:i, s:f, s:i}",
                  "queued_requests", (json_int_t)queued, "queued_text_requests", 0,
                  "worker_count", workers, "thread_count", threads, "text_worker_count", 0,
                  "text_thread_count", 0, "interrogator_count", 0, "interrogator_thread_count", 0,
                  "queued_megapixelsteps", br_round(queued_mps, 2), "queued_tokens", 0,
                  "queued_forms", 0, "past_minute_megapixelsteps", br_round(past, 2),
                  "past_minute_tokens", 0));
}
