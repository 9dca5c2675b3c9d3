/* broker: POST /generate/submit — a worker returns a result (§1.5).
 *
 * The order of checks is the horde's: unknown job 404 InvalidJobID, then the
 * key (401), then ownership (403 WrongCredentials), then the job's state
 * (DuplicateGen / AbortedGen). A base64 generation is decoded here and written
 * to the images provider on a pool thread (so image I/O runs in parallel and
 * never on a loop thread); "R2" means the worker already PUT it to its
 * r2_upload URL. The job's new state is committed before {"reward"} goes out. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "cluster.h"
#include "accounts.h"

#define MAX_GEN_METADATA 50

typedef struct submit_ctx {
    broker *b;
    hn_request *req;
    hn_user user;
    char job_id[BR_ID_LEN];
    bool faulted;          /* the worker says it failed */
    int64_t seed;
    char *gen_metadata;    /* JSON text */
    bool censored;
    void *image;
    size_t image_len;
    bool image_failed;
    hn_error err;
} submit_ctx;

static void ctx_free(submit_ctx *c) {
    free(c->gen_metadata);
    free(c->image);
    free(c);
}

static void finalize(submit_ctx *c);

static void put_work(void *arg) {
    submit_ctx *c = arg;
    char key[BR_ID_LEN + 8];
    snprintf(key, sizeof(key), "%s.webp", c->job_id);
    if (c->b->img->put(c->b->images->state, key, c->image, c->image_len, &c->err) != HN_OK)
        c->image_failed = true;
}

static void put_done(void *arg) {
    submit_ctx *c = arg;
    if (c->image_failed) {
        if (!c->err.status)
            c->err.status = 500;
        c->b->api->respond_error(c->req, &c->err);
        ctx_free(c);
        return;
    }
    finalize(c);
}

/* Answers the states that are not "still processing"; returns true if it did. */
static bool answer_settled(submit_ctx *c, br_job_state st, bool worker_maintenance) {
    broker *b = c->b;
    if (st == BR_JOB_DONE) {
        if (worker_maintenance) {
            b->api->respond_json(c->req, 200, json_pack("{s:i}", "reward", 0));
            return true;
        }
        br_fail(b, c->req, 400, "DuplicateGen", "Processing Generation with ID %s already submitted.",
                c->job_id);
        return true;
    }
    if (st == BR_JOB_FAULTED) {
        if (c->faulted) {
            b->api->respond_json(c->req, 200, json_pack("{s:i}", "reward", 0));
            return true;
        }
        br_fail(b, c->req, 400, "AbortedGen",
                "Processing Generation with ID %s took too long to process and has been aborted! "
                "Please check your worker speed and do not onboard worker which generate slower "
                "than 1 it/s!",
                c->job_id);
        return true;
    }
    return false;
}

/* A shared request's images go to the ratings pool: its hook info also
 * carries what a dataset row needs (prompt, params, client agent). */
static void add_shared_info(json_t *info, const br_request *r) {
    json_t *body = json_loads(r->body, 0, NULL);
    json_object_set_new(info, "shared", json_true());
    const char *prompt = br_jstr(body, "prompt");
    json_object_set_new(info, "prompt", json_string(prompt ? prompt : ""));
    json_t *params = json_object_get(body, "params");
    json_object_set_new(info, "params", params ? json_incref(params) : json_object());
    const char *agent = br_jstr(body, "client_agent");
    json_object_set_new(info, "client_agent", json_string(agent ? agent : "unknown:0:unknown"));
    json_decref(body);
}

static void finalize(submit_ctx *c) {
    broker *b = c->b;
    const hn_api *api = b->api;
    int64_t now = br_now_ms();
    br_op *op = br_op_new(b);
    if (!op) {
        br_fail(b, c->req, 500, "InternalServerError", "out of memory");
        ctx_free(c);
        return;
    }
    pthread_mutex_lock(&b->lock);
    br_job *j = br_job_find(b, c->job_id);
    if (!j) {
        /* its request expired in the meantime */
        pthread_mutex_unlock(&b->lock);
        br_op_discard(op);
        br_fail(b, c->req, 404, "InvalidJobID", "Processing Job with ID %s does not exist.",
                c->job_id);
        ctx_free(c);
        return;
    }
    br_worker *w = j->worker;
    if (answer_settled(c, j->state, w && w->maintenance)) {
        pthread_mutex_unlock(&b->lock);
        br_op_discard(op);
        ctx_free(c);
        return;
    }
    br_request *r = j->req;
    json_t *info;
    if (c->faulted) {
        br_job_fault(b, j, false, now, op);
        info = !br_hooked(b, HN_HOOK_ID_job_faulted) ? NULL :
               json_pack("{s:s, s:s, s:s, s:I, s:b}", "job", j->id, "request", r->id, "worker",
                         w ? w->id : "", "user_id", (json_int_t)r->user_id, "stale", 0);
        br_op_reply(op, c->req, 200, json_pack("{s:i}", "reward", 0), HN_HOOK_ID_job_faulted,
                    info);
    } else {
        double g = br_round(r->kudos * br_price_model_multiplier(b, j->model, &r->s), 2);
        br_job_finish(b, j, BR_JOB_DONE);
        j->seed = c->seed;
        j->censored = c->censored;
        free(j->gen_metadata);
        j->gen_metadata = c->gen_metadata;
        c->gen_metadata = NULL;
        j->finish_ms = now;
        j->reward = g;
        r->consumed += br_price_burn(&r->s, c->censored ? 0 : g);
        double secs = (double)(now - j->start_ms) / 1000.0;
        if (secs < 0.001)
            secs = 0.001;
        double per_s = r->s.things / secs;
        if (w) {
            w->requests_fulfilled++;
            w->kudos_generated += g * br_bridge_multiplier(w->a.bridge_agent);
            w->mps_generated += r->s.things / 1e6;
            br_worker_add_sample(w, per_s);
            w->dirty = true;
        }
        br_model_add_sample(b, j->model, per_s);
        /* §4.6: faster than any GPU is the worker's suspicion (suspicion.c) */
        if (w && b->conf->unreasonably_fast_mps > 0 &&
            per_s / 1e6 > (double)b->conf->unreasonably_fast_mps) {
            bool was_paused = w->paused;
            br_worker_suspect(b, w, HN_SUSPICION_UNREASONABLY_FAST);
            if (w->paused != was_paused)
                b->workers_ver++;
        }
        br_past_minute_add(b, now, r->s.things);
        br_stats_record(b, op, j->model, r->s.things, now); /* /stats/img (stats.c) */
        br_user *requester = br_user_get(b, r->user_id, true);
        if (requester) {
            /* the horde's record_usage: raw things x usage_multiplier */
            double mult = r->usage_multiplier > 0 ? r->usage_multiplier : 1;
            requester->usage_mps += r->s.things * mult / 1e6;
            requester->stats_dirty = true;
        }
        br_user *owner = w ? br_user_get(b, w->user_id, true) : NULL;
        if (owner) {
            owner->images_fulfilled++;
            owner->contribution_mps += r->s.things / 1e6;
            owner->stats_dirty = true;
        }
        br_store_job_update(op, j);
        br_store_request_update(op, r);
        br_cluster_submit_on_fail(b, op, j); /* a failed commit can be submitted again */
        info = !br_hooked(b, HN_HOOK_ID_job_submitted) ? NULL :
               json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:f, s:I, s:s, s:f, s:b}", "job", j->id,
                         "request", r->id, "worker", w ? w->id : "", "user_id",
                         (json_int_t)r->user_id, "worker_user_id",
                         (json_int_t)(w ? w->user_id : 0), "state", "ok", "kudos", g, "seed",
                         (json_int_t)j->seed, "model", j->model ? j->model : "", "things",
                         r->s.things, "censored", j->censored);
        if (info && r->s.shared)
            add_shared_info(info, r);
        br_op_reply(op, c->req, 200, json_pack("{s:f}", "reward", g), HN_HOOK_ID_job_submitted,
                    info);
        /* its last image: the request is done (a cancelled one ended before) */
        if (r->state == BR_REQ_ACTIVE && br_request_ended(r))
            br_op_notify(op, HN_HOOK_ID_generation_ended, br_ended_info(b, r, "done"));
    }
    api->req_suspend(c->req);
    br_op_submit(b, op);
    pthread_mutex_unlock(&b->lock);
    ctx_free(c);
}

void br_route_submit(hn_request *req, void *state) {
    broker *b = state;
    const hn_api *api = b->api;
    hn_error err;
    json_t *body = br_checked_body(b, req, br_validate_submit_schema,
                                   "The worker's owner API key.");
    if (!body)
        return;
    const char *raw_id = br_jstr(body, "id");
    submit_ctx *c = calloc(1, sizeof(*c));
    if (!c) {
        br_fail(b, req, 500, "InternalServerError", "out of memory");
        return;
    }
    c->b = b;
    c->req = req;
    if (!br_uuid_parse(raw_id, c->job_id)) {
        br_fail(b, req, 404, "InvalidJobID", "Processing Job with ID %.100s does not exist.",
                raw_id);
        ctx_free(c);
        return;
    }
    const char *st = br_jstr(body, "state");
    c->faulted = st && strcmp(st, "faulted") == 0;
    c->seed = br_jint(body, "seed", 0);

    /* 1: the job must exist; 2: the key; 3: the worker's owner */
    br_cluster_ensure_job(b, c->job_id); /* popped on another node just now (cluster.h) */
    pthread_mutex_lock(&b->lock);
    br_job *j = br_job_find(b, c->job_id);
    int64_t owner = j && j->worker ? j->worker->user_id : -1;
    br_job_state jst = j ? j->state : BR_JOB_PROCESSING;
    bool maint = j && j->worker && j->worker->maintenance;
    pthread_mutex_unlock(&b->lock);
    if (!j) {
        br_fail(b, req, 404, "InvalidJobID", "Processing Job with ID %s does not exist.",
                c->job_id);
        ctx_free(c);
        return;
    }
    if (br_authenticate(b, req, &c->user, &err) != HN_OK) {
        api->respond_error(req, &err);
        ctx_free(c);
        return;
    }
    if (c->user.id != owner) {
        br_fail(b, req, 403, "WrongCredentials", "Wrong credentials to submit as this worker.");
        ctx_free(c);
        return;
    }
    if (answer_settled(c, jst, maint)) {
        ctx_free(c);
        return;
    }
    const json_t *meta = json_object_get(body, "gen_metadata");
    if (json_array_size(meta) > MAX_GEN_METADATA) {
        br_fail(b, req, 400, "BadRequest", "Too many gen_metadata entries (at most %d).",
                MAX_GEN_METADATA);
        ctx_free(c);
        return;
    }
    size_t i;
    json_t *m;
    json_array_foreach(meta, i, m) {
        /* only a censorship entry marks the image censored (§1.5) */
        const char *type = br_jstr(m, "type");
        if (type && strcmp(type, "censorship") == 0)
            c->censored = true;
    }
    c->gen_metadata = meta ? json_dumps(meta, JSON_COMPACT) : strdup("[]");
    if (!c->gen_metadata) {
        br_fail(b, req, 500, "InternalServerError", "out of memory");
        ctx_free(c);
        return;
    }
    const char *gen = br_jstr(body, "generation");
    if (!c->faulted && gen && strcmp(gen, "R2") != 0 && *gen) {
        c->image = br_b64_decode(gen, strlen(gen), &c->image_len);
        if (!c->image || c->image_len == 0) {
            br_fail(b, req, 400, "ImageValidationFailed",
                    "Image validation failed. The generation is neither \"R2\" nor valid base64.");
            ctx_free(c);
            return;
        }
        api->req_suspend(req);
        if (api->work_submit(put_work, put_done, c) != 0) {
            br_fail(b, req, 503, "ServiceUnavailable", "The node is stopping.");
            ctx_free(c);
        }
        return;
    }
    finalize(c);
}
