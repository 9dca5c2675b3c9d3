/* kudos: what the rules need from outside the ledger, and the timers.
 *
 * - Queue size and worker threads (the upfront rule's `queue` and `threads`)
 *   are read from the broker's own GET /api/v2/status/performance through the
 *   core's in-process HTTP every stats_refresh_ms, on a pool thread. The horde
 *   reads both from caches refreshed every few seconds too.
 * - Each worker's uptime since its last reward and its bridge agent come from
 *   the worker_checked_in hook and live in memory; a reward is written to the
 *   ledger (through the writer) when due. The owner and bridge are also
 *   recorded in kudos_workers
 *   so that a submit after a restart still knows the bridge.
 * - A prune timer drops stale reservations, request rows and event keys.
 * - A monthly timer (every monthly_check_s) pays the monthly kudos that are
 *   due (§3.7). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kudos.h"

#define PRUNE_INTERVAL_MS 60000
#define WORKER_FORGET_S 86400 /* a worker silent for a day is dropped from memory */

bool kd_lookup_user(kudos *k, int64_t id, hn_user *out) {
    hn_error err = {0};
    memset(out, 0, sizeof(*out));
    out->size = sizeof(*out);
    return hn_run_user_lookup(k->api, id, out, &err) == HN_OK;
}

kd_owner kd_owner_of(const hn_user *u) {
    kd_owner o = {u->id, (u->roles & (HN_ROLE_TRUSTED | HN_ROLE_MODERATOR | HN_ROLE_ADMIN)) != 0,
                  u->created, hn_user_suspicious(u)};
    return o;
}

/* ---- queue and threads --------------------------------------------------------------------- */

static void stats_work(void *arg) {
    kudos *k = arg;
    static const char *const headers[] = {NULL};
    int status = 0;
    char *body = NULL;
    size_t len = 0;
    long long queue = -1, threads = -1;
    if (k->api->local_request(HN_GET, "/api/v2/status/performance", headers, NULL, 0, &status,
                              &body, &len) == 0 &&
        status == 200 && body) {
        json_t *j = json_loads(body, 0, NULL);
        if (json_is_integer(json_object_get(j, "queued_requests")))
            queue = json_integer_value(json_object_get(j, "queued_requests"));
        if (json_is_integer(json_object_get(j, "thread_count")))
            threads = json_integer_value(json_object_get(j, "thread_count"));
        json_decref(j);
    }
    free(body);
    pthread_mutex_lock(&k->lock);
    /* without a broker (404) both stay 0: max_res is then 1024 */
    if (queue >= 0)
        k->queued_requests = queue;
    if (threads >= 0)
        k->thread_count = threads;
    k->stats_busy = false;
    pthread_mutex_unlock(&k->lock);
}

static void stats_timer(void *state) {
    kudos *k = state;
    pthread_mutex_lock(&k->lock);
    bool go = k->started && !k->stats_busy;
    if (go)
        k->stats_busy = true;
    pthread_mutex_unlock(&k->lock);
    /* never inline: local_request must not run on a loop thread */
    if (go && k->api->work_submit(stats_work, NULL, k) != 0) {
        pthread_mutex_lock(&k->lock);
        k->stats_busy = false;
        pthread_mutex_unlock(&k->lock);
    }
}

void kd_tracker_load(kudos *k, long long *queue, long long *threads) {
    pthread_mutex_lock(&k->lock);
    *queue = k->queued_requests;
    *threads = k->thread_count;
    pthread_mutex_unlock(&k->lock);
}

/* ---- workers ---------------------------------------------------------------------------------- */

void kd_tracker_checkin(kudos *k, const json_t *info) {
    const char *wid = json_string_value(json_object_get(info, "worker_id"));
    if (!wid || strlen(wid) >= sizeof(((kd_event *)0)->id))
        return;
    int64_t uid = json_integer_value(json_object_get(info, "user_id"));
    const char *bridge = json_string_value(json_object_get(info, "bridge_agent"));
    if (!bridge)
        bridge = "";
    const json_t *models = json_object_get(info, "models");
    int n_models = json_is_array(models) ? (int)json_array_size(models)
                                         : (int)json_integer_value(models);
    /* absent flags (an older broker) read as false */
    bool allow_lora = json_is_true(json_object_get(info, "allow_lora"));
    bool idle = json_is_true(json_object_get(info, "paused")) ||
                json_is_true(json_object_get(info, "maintenance"));
    int64_t now = (int64_t)time(NULL);

    double reward = 0;
    bool record = false;
    pthread_mutex_lock(&k->lock);
    kd_worker *w = kd_map_get(&k->workers, wid);
    if (!w && (w = calloc(1, sizeof(*w))) != NULL && kd_map_put(&k->workers, wid, w) != 0) {
        free(w);
        w = NULL;
    }
    if (w) {
        record = !w->recorded || w->user_id != uid || strcmp(w->bridge, bridge) != 0;
        w->user_id = uid;
        snprintf(w->bridge, sizeof(w->bridge), "%s", bridge);
        w->recorded = true;
        bool stale = w->last_seen == 0 || now - w->last_seen > k->conf->worker_stale_s;
        if (!stale && !idle) {
            w->unrewarded += now - w->last_seen;
            if (w->unrewarded > k->conf->uptime_interval_s) {
                reward = kd_uptime_reward(n_models, allow_lora);
                w->unrewarded = 0;
            }
        } else {
            /* back from stale (or idle): it has to stay up a whole interval again */
            w->unrewarded = 0;
        }
        w->last_seen = now;
    }
    pthread_mutex_unlock(&k->lock);
    kd_event *ev;
    if (record && (ev = kd_event_new(KD_EV_SEEN)) != NULL) {
        ev->now = now;
        ev->user_id = uid;
        snprintf(ev->id, sizeof(ev->id), "%s", wid);
        snprintf(ev->bridge, sizeof(ev->bridge), "%s", bridge);
        kd_writer_post(k, ev);
    }
    if (reward > 0 && (ev = kd_event_new(KD_EV_UPTIME)) != NULL) {
        ev->now = now;
        ev->user_id = uid;
        ev->amount = reward;
        snprintf(ev->id, sizeof(ev->id), "%s", wid);
        kd_writer_post(k, ev);
    }
}

void kd_tracker_bridge(kudos *k, const char *worker_id, char *out, size_t len) {
    out[0] = '\0';
    if (!worker_id)
        return;
    pthread_mutex_lock(&k->lock);
    kd_worker *w = kd_map_get(&k->workers, worker_id);
    if (w)
        snprintf(out, len, "%s", w->bridge);
    pthread_mutex_unlock(&k->lock);
}

/* ---- pruning ------------------------------------------------------------------------------------ */

static int forget_worker(const char *key, void *value, void *ctx) {
    (void)key;
    kd_worker *w = value;
    int64_t now = *(const int64_t *)ctx;
    if (now - w->last_seen > WORKER_FORGET_S) {
        free(w);
        return 1;
    }
    return 0;
}

/* `reserved` holds the time of the request's last activity in the pointer. */
static int forget_reserved(const char *key, void *value, void *ctx) {
    (void)key;
    const int64_t *limits = ctx; /* [0] now, [1] ttl */
    return limits[0] - (int64_t)(intptr_t)value > limits[1];
}

static void prune_work(void *arg) {
    kudos *k = arg;
    hn_error err = {0};
    int64_t now = (int64_t)time(NULL);
    if (k->started && kd_op_prune(&k->ledger, now, k->conf->unbound_reservation_s,
                                  k->conf->request_ttl_s, &err) != HN_OK)
        k->api->log(k->self, HN_LOG_WARN, "pruning reservations: %s", err.message);
    int64_t limits[2] = {now, k->conf->request_ttl_s};
    pthread_mutex_lock(&k->lock);
    kd_map_sweep(&k->workers, forget_worker, &now);
    kd_map_sweep(&k->reserved, forget_reserved, limits);
    k->prune_busy = false;
    pthread_mutex_unlock(&k->lock);
}

static void prune_timer(void *state) {
    kudos *k = state;
    pthread_mutex_lock(&k->lock);
    bool go = k->started && !k->prune_busy;
    if (go)
        k->prune_busy = true;
    pthread_mutex_unlock(&k->lock);
    if (go && k->api->work_submit(prune_work, NULL, k) != 0) {
        pthread_mutex_lock(&k->lock);
        k->prune_busy = false;
        pthread_mutex_unlock(&k->lock);
    }
}

/* ---- monthly kudos ------------------------------------------------------------------------------ */

static void monthly_work(void *arg) {
    kudos *k = arg;
    hn_error err = {0};
    int paid = 0;
    if (k->started && kd_op_monthly(&k->ledger, (int64_t)time(NULL),
                                    k->conf->moderator_monthly_kudos, &paid, &err) != HN_OK)
        k->api->log(k->self, HN_LOG_WARN, "monthly kudos: %s", err.message);
    else if (paid > 0)
        k->api->log(k->self, HN_LOG_INFO, "monthly kudos paid to %d user(s)", paid);
    pthread_mutex_lock(&k->lock);
    k->monthly_busy = false;
    pthread_mutex_unlock(&k->lock);
}

static void monthly_timer(void *state) {
    kudos *k = state;
    pthread_mutex_lock(&k->lock);
    bool go = k->started && !k->monthly_busy;
    if (go)
        k->monthly_busy = true;
    pthread_mutex_unlock(&k->lock);
    if (go && k->api->work_submit(monthly_work, NULL, k) != 0) {
        pthread_mutex_lock(&k->lock);
        k->monthly_busy = false;
        pthread_mutex_unlock(&k->lock);
    }
}

int kd_tracker_init(kudos *k) {
    if (kd_map_init(&k->workers) != 0 || kd_map_init(&k->reserved) != 0)
        return -1;
    int bad = 0;
    bad |= k->api->timer_add(k->self, (unsigned)k->conf->stats_refresh_ms, stats_timer, k);
    bad |= k->api->timer_add(k->self, PRUNE_INTERVAL_MS, prune_timer, k);
    bad |= k->api->timer_add(k->self, (unsigned)(k->conf->monthly_check_s * 1000), monthly_timer,
                             k);
    return bad ? -1 : 0;
}

void kd_tracker_free(kudos *k) {
    kd_map_free(&k->workers, free);
    kd_map_free(&k->reserved, NULL);
}
