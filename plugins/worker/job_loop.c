/* worker: the job loop.
 *
 * One control thread sets up (owner key, model reference, CLIP vocabulary,
 * model table) and then pops: whenever fewer than max_threads + queue_size
 * jobs are queued or running (the public worker's gate, spec/worker.md
 * §2.2), it pops up to max_batch images with the fields of spec/horde-api.md
 * §1.4. A job goes on the queue; max_threads job threads take jobs off it
 * and run them (job_run.c). Waits: pop_interval_ms after a pop that found
 * nothing; a doubling back-off (1 s .. max_backoff_s) while the horde cannot
 * be reached or answers 429/5xx; max_backoff_s while it refuses the worker
 * (bad key, name taken, unknown models); at most 30 s between pops in
 * maintenance mode (the owner's own requests still come). Three failed jobs
 * in a row pause pops for 3 x max_backoff_s (the public worker: 180 s).
 *
 * Stop: nothing new is popped; queued and running jobs finish (a remote
 * horde is still there to take them) for up to stop_timeout_s, then running
 * ones are cancelled and reported faulted. With the local horde the node's
 * HTTP side is already down when plugins stop, so jobs are cancelled at once
 * and the broker re-queues them when their TTL runs out. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "worker.h"

int64_t wk_max_pixels(long long max_power) {
    return (int64_t)max_power * 8 * 64 * 64;
}

static json_t *str_list(const char *const *l) {
    json_t *a = json_array();
    for (size_t i = 0; l && l[i]; i++)
        json_array_append_new(a, json_string(l[i]));
    return a;
}

json_t *wk_pop_body(wk_state *w, json_t *models) {
    const wk_conf *c = w->conf;
    json_t *b = json_pack(
        "{s:s, s:s, s:o, s:o, s:b, s:I, s:I, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, "
        "s:I}",
        "name", w->name, "bridge_agent", w->bridge_agent, "models", models, "blacklist",
        str_list(c->blacklist), "nsfw", c->nsfw, "threads", (json_int_t)c->max_threads,
        "max_pixels", (json_int_t)wk_max_pixels(c->max_power), "require_upfront_kudos",
        c->require_upfront_kudos, "allow_img2img", c->allow_img2img, "allow_painting",
        c->allow_painting, "allow_unsafe_ipaddr", c->allow_unsafe_ip, "allow_post_processing",
        c->allow_post_processing, "allow_controlnet", c->allow_controlnet && c->allow_img2img,
        "allow_sdxl_controlnet",
        c->allow_sdxl_controlnet && c->allow_controlnet && c->allow_img2img, "extra_slow_worker",
        c->extra_slow_worker, "limit_max_steps", c->limit_max_steps, "allow_lora", c->allow_lora,
        "amount", (json_int_t)c->max_batch);
    if (b && c->priority_usernames && c->priority_usernames[0])
        json_object_set_new(b, "priority_usernames", str_list(c->priority_usernames));
    return b;
}

static void set_phase(wk_state *w, wk_phase p) {
    pthread_mutex_lock(&w->lock);
    if (w->phase != WK_PHASE_STOPPING)
        w->phase = p;
    pthread_mutex_unlock(&w->lock);
}

/* Logs msg unless it repeats the last one (a down horde would flood the log). */
static void note(wk_state *w, hn_log_level lvl, const char *msg) {
    pthread_mutex_lock(&w->lock);
    bool same = strcmp(w->stats.last_error, msg) == 0;
    if (!same)
        wk_copy(w->stats.last_error, sizeof w->stats.last_error, msg);
    pthread_mutex_unlock(&w->lock);
    if (!same)
        w->api->log(w->self, lvl, "%s", msg);
}

static void clear_note(wk_state *w) {
    pthread_mutex_lock(&w->lock);
    w->stats.last_error[0] = '\0';
    pthread_mutex_unlock(&w->lock);
}

static const char *resp_message(const json_t *resp) {
    const char *m = json_string_value(json_object_get(resp, "message"));
    return m ? m : "";
}

static const char *resp_rc(const json_t *resp) {
    const char *m = json_string_value(json_object_get(resp, "rc"));
    return m ? m : "";
}

/* Keeps the horde's messages[] for the operator view. */
static void keep_messages(wk_state *w, const json_t *resp) {
    const json_t *msgs = json_object_get(resp, "messages");
    const char *text = json_string_value(json_object_get(json_array_get(msgs, 0), "message"));
    if (!text)
        return;
    pthread_mutex_lock(&w->lock);
    bool fresh = strcmp(w->stats.horde_message, text) != 0;
    wk_copy(w->stats.horde_message, sizeof w->stats.horde_message, text);
    pthread_mutex_unlock(&w->lock);
    if (fresh)
        w->api->log(w->self, HN_LOG_WARN, "message from the horde: %s", text);
}

static bool wants_popularity(const wk_conf *c) {
    for (size_t i = 0; c->models_to_load && c->models_to_load[i]; i++)
        if (strncasecmp(c->models_to_load[i], "top ", 4) == 0 ||
            strncasecmp(c->models_to_load[i], "bottom ", 7) == 0)
            return true;
    return false;
}

/* {name: count} of the month's image model statistics, or NULL. */
static json_t *fetch_popularity(wk_state *w) {
    json_t *resp = NULL;
    int st = wk_horde_call(w, "GET", "/v2/stats/img/models?model_state=known", NULL, 2, &resp);
    json_t *month = st == 200 ? json_incref(json_object_get(resp, "month")) : NULL;
    json_decref(resp);
    if (!json_is_object(month)) {
        json_decref(month);
        w->api->log(w->self, HN_LOG_WARN,
                    "the horde's model statistics (for top/bottom N) could not be read (HTTP %d)",
                    st);
        return NULL;
    }
    return month;
}

static void refresh_models(wk_state *w) {
    json_t *pop = wants_popularity(w->conf) ? fetch_popularity(w) : NULL;
    wk_models_refresh(w, pop);
    json_decref(pop);
}

/* PUT /v2/workers/{id} maintenance=false, when asked to at start. */
static void leave_maintenance(wk_state *w) {
    char *enc = NULL;
    /* the name goes into a path: escape everything but unreserved characters */
    size_t n = strlen(w->name);
    enc = malloc(n * 3 + 1);
    if (!enc)
        return;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)w->name[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~')
            enc[j++] = (char)ch;
        else
            j += (size_t)sprintf(enc + j, "%%%02X", ch);
    }
    enc[j] = '\0';
    char path[1200];
    snprintf(path, sizeof path, "/v2/workers/name/%s", enc);
    free(enc);
    json_t *resp = NULL;
    int st = wk_horde_call(w, "GET", path, NULL, 2, &resp);
    const char *id = json_string_value(json_object_get(resp, "id"));
    if (st == 200 && id) {
        snprintf(path, sizeof path, "/v2/workers/%s", id);
        json_t *body = json_pack("{s:b}", "maintenance", 0);
        json_t *r2 = NULL;
        int st2 = wk_horde_call(w, "PUT", path, body, 2, &r2);
        json_decref(body);
        w->api->log(w->self, st2 == 200 ? HN_LOG_INFO : HN_LOG_WARN,
                    "remove_maintenance_on_init: HTTP %d %s", st2, resp_message(r2));
        json_decref(r2);
    }
    json_decref(resp);
}

/* The first model, loaded before the first pop when only one is offered (the
 * first job would pay for it otherwise). */
static void preload_single(wk_state *w) {
    json_t *models = wk_models_offered(w);
    if (json_array_size(models) == 1 && w->gen->load) {
        const char *name = json_string_value(json_array_get(models, 0));
        hn_error e = {0};
        if (w->gen->load(w->gen_state, name, &e) == HN_OK) {
            pthread_mutex_lock(&w->lock);
            wk_copy(w->current_model, sizeof w->current_model, name);
            pthread_mutex_unlock(&w->lock);
        } else if (strcmp(e.rc, "ModelNotFound") == 0 || strcmp(e.rc, "ModelLoadFailed") == 0) {
            wk_model_mark_failed(w, name, e.message);
        } else {
            w->api->log(w->self, HN_LOG_WARN, "preloading %s: %s", name, e.message);
        }
    }
    json_decref(models);
}

static bool setup(wk_state *w) {
    char err[512];
    int64_t wait = 1000;
    while (!w->apikey[0]) {
        if (wk_owner_key(w, err, sizeof err) == 0)
            break;
        note(w, HN_LOG_ERROR, err);
        if (wk_sleep(w, wait))
            return false;
        wait = wait * 2 > w->conf->max_backoff_s * 1000 ? w->conf->max_backoff_s * 1000 : wait * 2;
    }
    clear_note(w);
    int rc = wk_reference_load(w, err, sizeof err);
    if (rc < 0)
        w->api->log(w->self, HN_LOG_ERROR, "model reference: %s (only local checkpoints will be "
                                           "offered)", err);
    wk_vocab_ensure(w);
    refresh_models(w);
    if (w->conf->remove_maintenance_on_init)
        leave_maintenance(w);
    preload_single(w);
    return true;
}

static wk_job *job_new(json_t *resp) {
    wk_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->pop = json_incref(resp);
    const char *id = json_string_value(json_object_get(resp, "id"));
    const char *model = json_string_value(json_object_get(resp, "model"));
    wk_copy(j->id, sizeof j->id, id ? id : "?");
    wk_copy(j->model, sizeof j->model, model ? model : "");
    size_t n = json_array_size(json_object_get(resp, "ids"));
    j->n_ids = n ? n : 1;
    j->popped_ms = wk_now_ms();
    return j;
}

static void enqueue(wk_state *w, wk_job *j) {
    pthread_mutex_lock(&w->lock);
    if (w->q_tail)
        w->q_tail->next = j;
    else
        w->q_head = j;
    w->q_tail = j;
    w->q_len++;
    w->stats.jobs_popped++;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static int64_t grow(int64_t backoff, const wk_conf *c) {
    int64_t next = backoff < 1000 ? 1000 : backoff * 2;
    int64_t cap = c->max_backoff_s * 1000;
    return next > cap ? cap : next;
}

static void *control_main(void *arg) {
    wk_state *w = arg;
    const wk_conf *c = w->conf;
    if (!setup(w))
        return NULL;
    set_phase(w, WK_PHASE_RUNNING);
    int64_t backoff = 0;
    int64_t last_refresh = wk_now_ms();
    bool logged_models = false;
    for (;;) {
        /* the public worker's gate: queue_size + max_threads jobs in hand */
        pthread_mutex_lock(&w->lock);
        while (!w->stopping && w->q_len + w->n_running >= (size_t)(c->max_threads + c->queue_size))
            pthread_cond_wait(&w->cond, &w->lock);
        bool stopping = w->stopping;
        int fails = w->stats.consecutive_failures;
        pthread_mutex_unlock(&w->lock);
        if (stopping)
            break;
        if (fails >= 3) {
            set_phase(w, WK_PHASE_PAUSED);
            w->api->log(w->self, HN_LOG_WARN,
                        "%d jobs failed in a row: no pops for %lld s", fails,
                        3 * (long long)c->max_backoff_s);
            if (wk_sleep(w, 3 * c->max_backoff_s * 1000))
                break;
            pthread_mutex_lock(&w->lock);
            w->stats.consecutive_failures = 0;
            pthread_mutex_unlock(&w->lock);
            set_phase(w, WK_PHASE_RUNNING);
            continue;
        }
        json_t *models = wk_models_offered(w);
        int64_t now = wk_now_ms();
        if (now - last_refresh > (json_array_size(models) ? 300000 : 10000)) {
            /* new files in the models folder are picked up without a restart */
            json_decref(models);
            refresh_models(w);
            last_refresh = wk_now_ms();
            models = wk_models_offered(w);
        }
        if (json_array_size(models) == 0) {
            json_decref(models);
            set_phase(w, WK_PHASE_NO_MODELS);
            if (!logged_models)
                w->api->log(w->self, HN_LOG_WARN,
                            "no model to offer: put a checkpoint in %s or name reference models in "
                            "models_to_load (rechecked every 10 s)",
                            w->cache_home);
            logged_models = true;
            if (wk_sleep(w, 10000))
                break;
            continue;
        }
        logged_models = false;
        json_t *body = wk_pop_body(w, models);
        json_t *resp = NULL;
        int status = 0;
        hn_error e = {0};
        hn_rc rc = body ? w->horde->call(w->horde_state, "POST", "/v2/generate/pop", w->apikey,
                                         body, &status, &resp, &e)
                        : HN_ERROR;
        json_decref(body);
        pthread_mutex_lock(&w->lock);
        w->stats.pops++;
        pthread_mutex_unlock(&w->lock);
        char msg[700];
        int64_t wait = 0;
        if (rc != HN_OK) {
            set_phase(w, WK_PHASE_UNREACHABLE);
            snprintf(msg, sizeof msg, "cannot reach the horde: %s", e.message);
            note(w, HN_LOG_WARN, msg);
            wait = backoff = grow(backoff, c);
        } else if (status == 200) {
            keep_messages(w, resp);
            backoff = 0;
            clear_note(w);
            set_phase(w, WK_PHASE_RUNNING);
            const char *id = json_string_value(json_object_get(resp, "id"));
            if (id && json_is_object(json_object_get(resp, "payload"))) {
                wk_job *j = job_new(resp);
                if (j) {
                    w->api->log(w->self, HN_LOG_INFO, "popped job %s (%s, %zu image%s)", j->id,
                                j->model, j->n_ids, j->n_ids == 1 ? "" : "s");
                    enqueue(w, j);
                }
            } else {
                pthread_mutex_lock(&w->lock);
                w->stats.pops_empty++;
                pthread_mutex_unlock(&w->lock);
                wait = c->pop_interval_ms;
            }
        } else {
            pthread_mutex_lock(&w->lock);
            w->stats.pop_errors++;
            pthread_mutex_unlock(&w->lock);
            const char *rcs = resp_rc(resp), *m = resp_message(resp);
            snprintf(msg, sizeof msg, "pop refused (HTTP %d %s): %s", status, rcs, m);
            if (strcmp(rcs, "WorkerMaintenance") == 0 || strcasestr(m, "maintenance")) {
                set_phase(w, WK_PHASE_MAINTENANCE);
                pthread_mutex_lock(&w->lock);
                wk_copy(w->stats.horde_message, sizeof w->stats.horde_message, m);
                pthread_mutex_unlock(&w->lock);
                note(w, HN_LOG_WARN, msg);
                wait = c->max_backoff_s < 30 ? c->max_backoff_s * 1000 : 30000;
            } else if (status == 429 || status >= 500) {
                set_phase(w, WK_PHASE_UNREACHABLE);
                note(w, HN_LOG_WARN, msg);
                wait = backoff = grow(backoff, c); /* transient: pop again soon */
            } else {
                set_phase(w, WK_PHASE_RUNNING);
                note(w, HN_LOG_ERROR, msg);
                wait = backoff = c->max_backoff_s * 1000;
                if (status == 401 && w->horde_is_local && !c->api_key) {
                    /* the owner's key was reset meanwhile: get a new one */
                    char err[512];
                    if (wk_owner_key(w, err, sizeof err) != 0)
                        note(w, HN_LOG_ERROR, err);
                    else
                        wait = backoff = 0; /* pop again with it now */
                }
            }
        }
        json_decref(resp);
        if (wait > 0 && wk_sleep(w, wait))
            break;
    }
    set_phase(w, WK_PHASE_STOPPING);
    return NULL;
}

static void *job_main(void *arg) {
    wk_state *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        /* a pop in flight when the stop came may still queue a job: wait for
         * the control thread to end before leaving */
        while (!w->q_head && !(w->stopping && w->control_done))
            pthread_cond_wait(&w->cond, &w->lock);
        wk_job *j = w->q_head;
        if (!j) {
            pthread_mutex_unlock(&w->lock);
            break; /* stopping and nothing left */
        }
        w->q_head = j->next;
        if (!w->q_head)
            w->q_tail = NULL;
        w->q_len--;
        j->next = w->running;
        w->running = j;
        w->n_running++;
        j->running = true;
        if (w->abandon)
            j->cancel = 1;
        pthread_mutex_unlock(&w->lock);

        wk_job_run(w, j);

        pthread_mutex_lock(&w->lock);
        for (wk_job **p = &w->running; *p; p = &(*p)->next) {
            if (*p == j) {
                *p = j->next;
                break;
            }
        }
        w->n_running--;
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
        json_decref(j->pop);
        free(j);
    }
    return NULL;
}

int wk_threads_start(wk_state *w, hn_error *err) {
    size_t n = (size_t)w->conf->max_threads;
    w->job_threads = calloc(n, sizeof *w->job_threads);
    if (!w->job_threads)
        return w->api->error(err, 500, "OutOfMemory", "worker: out of memory");
    for (size_t i = 0; i < n; i++) {
        if (pthread_create(&w->job_threads[i], NULL, job_main, w) != 0)
            goto fail;
        w->n_job_threads++;
    }
    if (pthread_create(&w->downloader, NULL, wk_download_thread, w) != 0)
        goto fail;
    w->downloader_started = true;
    if (pthread_create(&w->control, NULL, control_main, w) != 0)
        goto fail;
    w->control_started = true;
    w->api->log(w->self, HN_LOG_INFO, "worker \"%s\" serving %s horde%s%s as %s", w->name,
                w->horde_is_local ? "the local" : "the remote", w->horde_is_local ? "" : " ",
                w->horde_is_local ? "" : w->conf->horde_url, w->bridge_agent);
    return HN_OK;
fail:
    wk_threads_stop(w);
    return w->api->error(err, 500, "InitError", "worker: cannot start its threads");
}

void wk_threads_stop(wk_state *w) {
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    w->phase = WK_PHASE_STOPPING;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    if (w->control_started)
        pthread_join(w->control, NULL);
    w->control_started = false;

    pthread_mutex_lock(&w->lock);
    w->control_done = true;
    pthread_cond_broadcast(&w->cond);
    /* with the local horde nobody could take a result any more */
    int64_t limit = w->horde_is_local ? 0 : w->conf->stop_timeout_s * 1000;
    int64_t until = wk_now_ms() + limit;
    if (w->q_len + w->n_running > 0 && limit > 0)
        w->api->log(w->self, HN_LOG_INFO, "stopping: finishing %zu job(s) (up to %lld s)",
                    w->q_len + w->n_running, (long long)w->conf->stop_timeout_s);
    while (w->q_len + w->n_running > 0 && wk_now_ms() < until) {
        struct timespec ts = {until / 1000, (long)(until % 1000) * 1000000L};
        pthread_cond_timedwait(&w->cond, &w->lock, &ts);
    }
    if (w->q_len + w->n_running > 0) {
        w->abandon = true;
        for (wk_job *j = w->running; j; j = j->next)
            j->cancel = 1;
        w->api->log(w->self, HN_LOG_WARN, "stopping: cancelling %zu job(s)",
                    w->q_len + w->n_running);
    }
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);

    for (size_t i = 0; i < w->n_job_threads; i++)
        pthread_join(w->job_threads[i], NULL);
    w->n_job_threads = 0;
    free(w->job_threads);
    w->job_threads = NULL;
    if (w->downloader_started)
        pthread_join(w->downloader, NULL);
    w->downloader_started = false;
}
