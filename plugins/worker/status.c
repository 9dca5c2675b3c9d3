/* worker: the operator view. A status line in the log every
 * stats_output_frequency seconds (timer on the main loop) and the same facts
 * as JSON at GET /api/v2/node/worker (an HTTP loop). Both only read the
 * shared state, under the lock, and do no I/O while holding it. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "worker.h"

static const char *phase_name(wk_phase p) {
    switch (p) {
    case WK_PHASE_STARTING: return "starting";
    case WK_PHASE_RUNNING: return "running";
    case WK_PHASE_NO_MODELS: return "no_models";
    case WK_PHASE_MAINTENANCE: return "maintenance";
    case WK_PHASE_PAUSED: return "paused";
    case WK_PHASE_UNREACHABLE: return "horde_unreachable";
    case WK_PHASE_STOPPING: return "stopping";
    }
    return "?";
}

static const char *state_name(wk_model_state s) {
    switch (s) {
    case WK_MODEL_READY: return "ready";
    case WK_MODEL_WAITING: return "waiting_download";
    case WK_MODEL_DOWNLOADING: return "downloading";
    case WK_MODEL_FAILED: return "failed";
    }
    return "?";
}

static const char *origin_name(wk_model_origin o) {
    switch (o) {
    case WK_ORIGIN_LOCAL: return "local";
    case WK_ORIGIN_REFERENCE: return "reference";
    case WK_ORIGIN_GENERATOR: return "generator";
    }
    return "?";
}

void wk_progress_bar(char *buf, size_t len, int width, double fraction) {
    if (len < 3) {
        if (len)
            buf[0] = '\0';
        return;
    }
    if (width > (int)len - 3)
        width = (int)len - 3;
    if (fraction < 0)
        fraction = 0;
    if (fraction > 1)
        fraction = 1;
    int full = (int)(fraction * width + 0.5);
    buf[0] = '[';
    for (int i = 0; i < width; i++)
        buf[1 + i] = i < full ? '#' : '.';
    buf[1 + width] = ']';
    buf[2 + width] = '\0';
}

/* Derived rates; caller holds the lock. */
static void rates(const wk_state *w, int64_t now, double *elapsed_s, double *kudos_h,
                  double *mps_s) {
    double el = (double)(now - w->stats.started_ms) / 1000.0;
    *elapsed_s = el > 0 ? el : 0;
    *kudos_h = el > 1 ? w->stats.kudos / el * 3600.0 : 0;
    *mps_s = w->stats.busy_s > 0 ? w->stats.megapixelsteps / w->stats.busy_s : 0;
}

json_t *wk_status_json(wk_state *w) {
    int64_t now = wk_now_ms();
    pthread_mutex_lock(&w->lock);
    double elapsed, kudos_h, mps_s;
    rates(w, now, &elapsed, &kudos_h, &mps_s);
    json_t *models = json_array(), *offered = json_array();
    for (size_t i = 0; i < w->n_models; i++) {
        const wk_model *m = &w->models[i];
        json_t *o = json_pack("{s:s, s:s, s:s}", "name", m->name, "origin", origin_name(m->origin),
                              "state", state_name(m->state));
        if (m->state == WK_MODEL_FAILED)
            json_object_set_new(o, "error", json_string(m->error));
        if (m->state == WK_MODEL_DOWNLOADING || m->state == WK_MODEL_WAITING) {
            json_object_set_new(o, "downloaded_bytes", json_integer((json_int_t)m->done));
            json_object_set_new(o, "total_bytes", json_integer((json_int_t)m->total));
        }
        json_array_append_new(models, o);
        if (m->state == WK_MODEL_READY)
            json_array_append_new(offered, json_string(m->name));
    }
    json_t *jobs = json_array();
    for (const wk_job *j = w->running; j; j = j->next)
        json_array_append_new(jobs, json_pack("{s:s, s:s, s:I, s:i, s:i, s:f}", "id", j->id,
                                              "model", j->model, "images", (json_int_t)j->n_ids,
                                              "step", j->step, "total_steps", j->total, "seconds",
                                              (double)(now - j->popped_ms) / 1000.0));
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:s, s:f, s:{s:I, s:I, s:I, s:I, s:I}, s:I, s:f, s:f, s:f, s:f, "
        "s:o, s:o, s:s, s:o, s:{s:I, s:I, s:I, s:I, s:I, s:b}}",
        "name", w->name, "horde", w->horde_is_local ? "local" : "remote", "bridge_agent",
        w->bridge_agent, "state", phase_name(w->phase), "uptime_s", elapsed, "jobs", "popped",
        (json_int_t)w->stats.jobs_popped, "done", (json_int_t)w->stats.jobs_done, "faulted",
        (json_int_t)w->stats.jobs_faulted, "queued", (json_int_t)w->q_len, "running",
        (json_int_t)w->n_running, "images_done", (json_int_t)w->stats.images_done, "kudos",
        w->stats.kudos, "kudos_per_hour", kudos_h, "megapixelsteps", w->stats.megapixelsteps,
        "megapixelsteps_per_second", mps_s, "models", models, "models_offered", offered,
        "model_loaded", w->current_model, "current_jobs", jobs, "settings", "max_power",
        (json_int_t)w->conf->max_power, "max_pixels",
        (json_int_t)wk_max_pixels(w->conf->max_power), "max_threads",
        (json_int_t)w->conf->max_threads, "queue_size", (json_int_t)w->conf->queue_size,
        "max_batch", (json_int_t)w->conf->max_batch, "nsfw", w->conf->nsfw);
    if (o && !w->horde_is_local)
        json_object_set_new(o, "horde_url", json_string(w->conf->horde_url));
    if (o && w->stats.last_error[0])
        json_object_set_new(o, "last_error", json_string(w->stats.last_error));
    if (o && w->stats.horde_message[0])
        json_object_set_new(o, "horde_message", json_string(w->stats.horde_message));
    pthread_mutex_unlock(&w->lock);
    return o;
}

void wk_status_route(hn_request *req, void *state) {
    wk_state *w = state;
    json_t *o = wk_status_json(w);
    if (!o) {
        hn_error e;
        w->api->error(&e, 500, "InternalServerError", "out of memory");
        w->api->respond_error(req, &e);
        return;
    }
    w->api->respond_json(req, 200, o);
}

void wk_status_timer(void *state) {
    wk_state *w = state;
    int64_t now = wk_now_ms();
    char line[1024];
    pthread_mutex_lock(&w->lock);
    double elapsed, kudos_h, mps_s;
    rates(w, now, &elapsed, &kudos_h, &mps_s);
    size_t ready = 0, downloading = 0, failed = 0;
    for (size_t i = 0; i < w->n_models; i++) {
        ready += w->models[i].state == WK_MODEL_READY;
        downloading += w->models[i].state == WK_MODEL_DOWNLOADING ||
                       w->models[i].state == WK_MODEL_WAITING;
        failed += w->models[i].state == WK_MODEL_FAILED;
    }
    int n = snprintf(line, sizeof line,
                     "%s: %s | %lld jobs done, %lld faulted, %lld images | %.2f kudos (%.1f/h) | "
                     "%.3f MPS/s | models: %zu ready, %zu downloading, %zu failed, loaded: %s",
                     w->name, phase_name(w->phase), (long long)w->stats.jobs_done,
                     (long long)w->stats.jobs_faulted, (long long)w->stats.images_done,
                     w->stats.kudos, kudos_h, mps_s, ready, downloading, failed,
                     w->current_model[0] ? w->current_model : "-");
    for (const wk_job *j = w->running; j && n > 0 && (size_t)n < sizeof line; j = j->next) {
        char bar[48] = "";
        if (j->total > 0 && w->is_tty)
            wk_progress_bar(bar, sizeof bar, 20, (double)j->step / j->total);
        n += snprintf(line + n, sizeof line - (size_t)n, " | job %.8s %s %s %d/%d", j->id,
                      j->model, bar, j->step, j->total);
    }
    if (w->q_len && n > 0 && (size_t)n < sizeof line)
        snprintf(line + n, sizeof line - (size_t)n, " | %zu queued", w->q_len);
    pthread_mutex_unlock(&w->lock);
    w->api->log(w->self, HN_LOG_INFO, "%s", line);
}
