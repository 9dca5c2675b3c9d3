/* worker: one job, from the pop answer to the submits.
 *
 * Source image and mask: a URL (fetched) or base64, WebP or PNG; one that
 * cannot be fetched or read is left out and reported in gen_metadata
 * (download_failed / parse_failed) as the public worker does, and the job
 * runs without it. The generator makes n images in one call; each is
 * encoded as WebP q95 and PUT to its r2_uploads[i] (submitted as "R2"), or
 * sent inline as base64 when the horde gave no upload URL. Anything that
 * fails is submitted as `faulted` at once, so the horde re-queues the image
 * now instead of when its TTL runs out (the public worker's quirk, spec/
 * worker.md §2.6). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "image_codec.h"
#include "worker.h"

#define WEBP_QUALITY 95.0f
#define UPLOAD_TRIES 3
#define SUBMIT_TRIES 10

int wk_horde_call(wk_state *w, const char *method, const char *path, const json_t *body,
                  int attempts, json_t **resp) {
    *resp = NULL;
    int64_t pause = 500;
    for (int i = 0; i < attempts; i++) {
        if (i > 0) {
            pthread_mutex_lock(&w->lock);
            bool give_up = w->abandon;
            pthread_mutex_unlock(&w->lock);
            if (give_up)
                break;
            struct timespec ts = {pause / 1000, (long)(pause % 1000) * 1000000L};
            nanosleep(&ts, NULL);
            pause = pause * 2 > 8000 ? 8000 : pause * 2;
        }
        int status = 0;
        hn_error e = {0};
        json_decref(*resp);
        *resp = NULL;
        char key[sizeof w->apikey];
        pthread_mutex_lock(&w->lock); /* the control thread may renew it */
        memcpy(key, w->apikey, sizeof key);
        pthread_mutex_unlock(&w->lock);
        if (w->horde->call(w->horde_state, method, path, key, body, &status, resp, &e) != HN_OK)
            continue; /* unreachable: try again */
        if (status == 429 || status >= 500)
            continue;
        return status;
    }
    return 0;
}

static void add_meta(json_t *meta, const char *type, const char *value, const char *ref) {
    json_t *e = json_pack("{s:s, s:s}", "type", type, "value", value);
    if (e && ref)
        json_object_set_new(e, "ref", json_string(ref));
    json_array_append_new(meta, e);
}

/* Reads pop[key] (URL or base64) into img. false when absent or unusable
 * (then gen_metadata says why). */
static bool load_source(wk_state *w, const json_t *pop, const char *key, hn_image *img,
                        json_t *meta) {
    const char *v = json_string_value(json_object_get(pop, key));
    if (!v || !v[0])
        return false;
    void *data = NULL;
    size_t len = 0;
    char err[512] = "";
    if (strncmp(v, "http://", 7) == 0 || strncmp(v, "https://", 8) == 0) {
        if (wk_fetch_url(w, v, &data, &len, err, sizeof err) != 0) {
            w->api->log(w->self, HN_LOG_WARN, "%s: %s", key, err);
            add_meta(meta, key, "download_failed", NULL);
            return false;
        }
    } else if (!(data = wk_b64_decode(v, &len))) {
        add_meta(meta, key, "parse_failed", NULL);
        return false;
    }
    int rc = wk_image_decode(data, len, img, err, sizeof err);
    free(data);
    if (rc != 0) {
        w->api->log(w->self, HN_LOG_WARN, "%s: %s", key, err);
        add_meta(meta, key, "parse_failed", NULL);
        return false;
    }
    return true;
}

typedef struct step_ctx {
    wk_state *w;
    wk_job *job;
} step_ctx;

static void on_step(void *ud, int step, int total) {
    step_ctx *s = ud;
    pthread_mutex_lock(&s->w->lock);
    s->job->step = step;
    s->job->total = total;
    pthread_mutex_unlock(&s->w->lock);
}

static const char *id_at(const json_t *pop, size_t i) {
    const json_t *ids = json_object_get(pop, "ids");
    const char *id = json_string_value(json_array_get(ids, i));
    if (!id && i == 0)
        id = json_string_value(json_object_get(pop, "id"));
    return id;
}

static const char *upload_url_at(const json_t *pop, size_t i) {
    const char *u = json_string_value(json_array_get(json_object_get(pop, "r2_uploads"), i));
    if (!u && i == 0)
        u = json_string_value(json_object_get(pop, "r2_upload"));
    return u;
}

/* POSTs one submit; returns the reward, or -1 when the horde did not take it. */
static double submit(wk_state *w, const char *id, const char *generation, const char *state,
                     int64_t seed, const json_t *meta) {
    json_t *body = json_pack("{s:s, s:s, s:s, s:I}", "id", id, "generation", generation, "state",
                             state, "seed", (json_int_t)seed);
    if (!body)
        return -1;
    if (json_array_size(meta) > 0)
        json_object_set(body, "gen_metadata", (json_t *)meta);
    json_t *resp = NULL;
    int st = wk_horde_call(w, "POST", "/v2/generate/submit", body, SUBMIT_TRIES, &resp);
    json_decref(body);
    double reward = -1;
    if (st == 200) {
        const json_t *r = json_object_get(resp, "reward");
        reward = json_is_number(r) ? json_number_value(r) : 0;
    } else {
        /* "does not exist", "already submitted", "took too long": nothing to
         * retry (spec/worker.md §2.6) */
        const char *m = json_string_value(json_object_get(resp, "message"));
        w->api->log(w->self, HN_LOG_WARN, "submit of %s (%s) refused: HTTP %d %s", id, state, st,
                    m ? m : st ? "" : "(horde unreachable)");
        pthread_mutex_lock(&w->lock);
        w->stats.submit_errors++;
        pthread_mutex_unlock(&w->lock);
    }
    json_decref(resp);
    return reward;
}

static int64_t payload_seed(const json_t *payload) {
    const json_t *s = json_object_get(payload, "seed");
    if (json_is_integer(s))
        return json_integer_value(s);
    const char *t = json_string_value(s);
    return t ? strtoll(t, NULL, 10) : 0;
}

static bool can_report(wk_state *w) {
    pthread_mutex_lock(&w->lock);
    bool ok = !(w->abandon && w->horde_is_local);
    pthread_mutex_unlock(&w->lock);
    return ok;
}

void wk_job_fault_all(wk_state *w, wk_job *job, const char *why) {
    w->api->log(w->self, HN_LOG_WARN, "job %s (%s) faulted: %s", job->id, job->model, why);
    pthread_mutex_lock(&w->lock);
    w->stats.jobs_faulted++;
    w->stats.consecutive_failures++;
    pthread_mutex_unlock(&w->lock);
    if (!can_report(w))
        return; /* the local broker is gone; it re-queues the job after its TTL */
    int64_t seed = payload_seed(json_object_get(job->pop, "payload"));
    for (size_t i = 0; i < job->n_ids; i++) {
        const char *id = id_at(job->pop, i);
        if (id)
            submit(w, id, "", "faulted", seed, NULL);
    }
}

/* Encodes, uploads and submits image i. Returns the reward or -1. */
static double deliver(wk_state *w, wk_job *job, size_t i, const hn_image *img, int64_t seed,
                      const json_t *meta) {
    const char *id = id_at(job->pop, i);
    if (!id)
        return -1;
    unsigned char *webp = NULL;
    size_t len = 0;
    char err[512] = "";
    if (wk_webp_encode(img, WEBP_QUALITY, &webp, &len, err, sizeof err) != 0) {
        w->api->log(w->self, HN_LOG_ERROR, "job %s: %s", id, err);
        submit(w, id, "", "faulted", seed, meta);
        return -1;
    }
    const char *url = upload_url_at(job->pop, i);
    char *generation = NULL;
    const char *state = "ok";
    if (url) {
        bool ok = false;
        for (int t = 0; t < UPLOAD_TRIES && !ok; t++) {
            int status = 0;
            hn_error e = {0};
            hn_rc rc = w->horde->upload(w->horde_state, url, webp, len, &status, &e);
            ok = rc == HN_OK && status >= 200 && status < 300;
            if (!ok)
                wk_copy(err, sizeof err, rc == HN_OK ? "" : e.message);
            if (!ok && rc == HN_OK)
                snprintf(err, sizeof err, "HTTP %d", status);
        }
        if (!ok) {
            w->api->log(w->self, HN_LOG_ERROR, "job %s: upload failed: %s", id, err);
            state = "faulted";
        }
        generation = strdup(ok ? "R2" : "");
    } else {
        generation = wk_b64_encode(webp, len);
    }
    free(webp);
    if (!generation)
        return -1;
    double reward = submit(w, id, generation, state, seed, meta);
    free(generation);
    return strcmp(state, "ok") == 0 ? reward : -1;
}

void wk_job_run(wk_state *w, wk_job *job) {
    const json_t *pop = job->pop;
    const json_t *payload = json_object_get(pop, "payload");
    if (job->cancel) {
        wk_job_fault_all(w, job, "the worker is stopping");
        return;
    }
    json_t *meta = json_array();
    hn_image src = {0}, mask = {0};
    bool has_src = load_source(w, pop, "source_image", &src, meta);
    bool has_mask = has_src && load_source(w, pop, "source_mask", &mask, meta);
    const char *proc = json_string_value(json_object_get(pop, "source_processing"));

    step_ctx sc = {w, job};
    hn_gen_job gj = {.size = sizeof gj,
                     .model = job->model,
                     .payload = payload,
                     .source = has_src ? &src : NULL,
                     .mask = has_mask ? &mask : NULL,
                     .source_processing = proc ? proc : "img2img",
                     .progress = on_step,
                     .ud = &sc,
                     .cancel = &job->cancel};
    hn_gen_result res;
    memset(&res, 0, sizeof res);
    hn_error e = {0};
    int64_t t0 = wk_now_ms();
    hn_rc rc = w->gen->generate(w->gen_state, &gj, &res, &e);
    double secs = (double)(wk_now_ms() - t0) / 1000.0;
    wk_image_free(&src);
    wk_image_free(&mask);
    if (rc != HN_OK) {
        if (rc == HN_ERROR && (strcmp(e.rc, "ModelNotFound") == 0 ||
                               strcmp(e.rc, "ModelLoadFailed") == 0))
            wk_model_mark_failed(w, job->model, e.message);
        wk_job_fault_all(w, job, rc == HN_DECLINED ? "cancelled" : e.message);
        json_decref(meta);
        return;
    }
    pthread_mutex_lock(&w->lock);
    wk_copy(w->current_model, sizeof w->current_model, job->model);
    pthread_mutex_unlock(&w->lock);

    /* gen_metadata: ours (sources) + the generator's, + batch_index for n > 1 */
    size_t k;
    json_t *m;
    json_array_foreach(res.gen_metadata, k, m) json_array_append(meta, m);
    int64_t seed = res.seed;
    double steps = json_number_value(json_object_get(payload, "ddim_steps"));
    if (steps <= 0)
        steps = (double)json_integer_value(json_object_get(payload, "ddim_steps"));
    double kudos = 0, mps = 0;
    int ok = 0;
    for (size_t i = 0; i < job->n_ids; i++) {
        if (!can_report(w))
            break;
        json_t *img_meta = json_deep_copy(meta);
        if (job->n_ids > 1) {
            char ref[32];
            snprintf(ref, sizeof ref, "%zu", i);
            add_meta(img_meta, "batch_index", "see_ref", ref);
        }
        double reward = -1;
        if (i < res.n) {
            reward = deliver(w, job, i, &res.images[i], seed, img_meta);
        } else {
            const char *id = id_at(pop, i);
            if (id)
                submit(w, id, "", "faulted", seed, img_meta);
        }
        json_decref(img_meta);
        if (reward >= 0) {
            ok++;
            kudos += reward;
            if (i < res.n)
                mps += (double)res.images[i].width * res.images[i].height * steps / 1e6;
        }
    }
    w->gen->result_free(w->gen_state, &res);
    json_decref(meta);

    pthread_mutex_lock(&w->lock);
    w->stats.images_done += ok;
    w->stats.kudos += kudos;
    w->stats.megapixelsteps += mps;
    w->stats.busy_s += secs;
    if (ok > 0) {
        w->stats.jobs_done++;
        w->stats.consecutive_failures = 0;
    } else {
        w->stats.jobs_faulted++;
        w->stats.consecutive_failures++;
    }
    pthread_mutex_unlock(&w->lock);
    w->api->log(w->self, HN_LOG_INFO, "job %s done: %d/%zu image%s, %.1f s, %.2f kudos", job->id,
                ok, job->n_ids, job->n_ids == 1 ? "" : "s", secs, kudos);
}
