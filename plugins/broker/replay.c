/* broker: hook generation_replay. At start the broker re-announces what its
 * durable record holds: each request it loaded ("generation_enqueued"), the
 * request's finished jobs ("job_submitted") and, if it ended,
 * "generation_ended". A plugin whose writes follow the broker's commits (the
 * kudos ledger writes after the broker answered) can thus apply what a crash
 * between the two commits made it miss; its handlers are idempotent, so
 * announcing everything at every start is harmless.
 *
 * The infos are built under the lock and the hooks run after it is released
 * (handlers may queue work or take their own locks). */
#include <stdlib.h>

#include "broker.h"

static json_t *enqueued_info(const br_request *r) {
    json_t *body = json_loads(r->body, 0, NULL);
    if (!body)
        return NULL;
    return json_pack("{s:s, s:I, s:i, s:f, s:o, s:b}", "id", r->id, "user_id",
                     (json_int_t)r->user_id, "n", r->jobs, "kudos", r->kudos, "request", body,
                     "replay", 1);
}

static json_t *submitted_info(const br_job *j) {
    const br_request *r = j->req;
    const br_worker *w = j->worker;
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:f, s:I, s:s, s:f, s:b, s:s, s:b}", "job",
                     j->id, "request", r->id, "worker", w ? w->id : "", "user_id",
                     (json_int_t)r->user_id, "worker_user_id", (json_int_t)(w ? w->user_id : 0),
                     "state", "ok", "kudos", j->reward, "seed", (json_int_t)j->seed, "model",
                     j->model ? j->model : "", "things", r->s.things, "censored", j->censored,
                     "bridge_agent",
                     w && w->a.bridge_agent ? w->a.bridge_agent : "", "replay", 1);
}

static const char *end_reason(const br_request *r) {
    if (r->state == BR_REQ_FAULTED)
        return "faulted";
    if (r->state == BR_REQ_CANCELLED)
        return "cancelled";
    return "done";
}

static int by_seq(const void *a, const void *b) {
    int64_t x = (*(br_request *const *)a)->seq, y = (*(br_request *const *)b)->seq;
    return (x > y) - (x < y);
}

/* Appends [event, info] (info stolen; NULL is skipped). */
static void add(json_t *list, const char *event, json_t *info) {
    if (info)
        json_array_append_new(list, json_pack("[s, o]", event, info));
}

void br_replay(broker *b) {
    if (!br_hooked(b, HN_HOOK_ID_generation_replay))
        return;
    json_t *list = json_array();
    if (!list)
        return;
    pthread_mutex_lock(&b->lock);
    /* in arrival order, so that a consumer applies them as they happened */
    br_request **reqs = calloc(b->requests.len ? b->requests.len : 1, sizeof(*reqs));
    size_t n = 0, i = 0;
    void *v;
    while (reqs && br_map_next(&b->requests, &i, NULL, &v))
        reqs[n++] = v;
    if (n > 1)
        qsort(reqs, n, sizeof(*reqs), by_seq);
    for (size_t k = 0; k < n; k++) {
        br_request *r = reqs[k];
        add(list, "generation_enqueued", enqueued_info(r));
        for (br_job *j = r->jobs_head; j; j = j->rnext)
            if (j->state == BR_JOB_DONE)
                add(list, "job_submitted", submitted_info(j));
        if (br_request_ended(r)) {
            json_t *info = br_ended_info(b, r, end_reason(r));
            if (info)
                json_object_set_new(info, "replay", json_true());
            add(list, "generation_ended", info);
        }
    }
    pthread_mutex_unlock(&b->lock);
    free(reqs);
    size_t idx;
    json_t *pair;
    json_array_foreach(list, idx, pair) {
        hn_run_generation_replay(b->api, json_string_value(json_array_get(pair, 0)),
                                 json_array_get(pair, 1));
    }
    b->api->log(b->self, HN_LOG_INFO, "broker: %zu records re-announced (generation_replay)",
                json_array_size(list));
    json_decref(list);
}
