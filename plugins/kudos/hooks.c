/* kudos: the broker's hooks and user_details.
 *
 * Synchronous answers (the broker waits for them before its 202):
 *   generation_validate  the upfront rule: reserve, downgrade or refuse (§3.3)
 *   generation_price     wp.kudos (§3.1)
 *   generation_priority  kudos-based queue priority with ageing (§3.8)
 * Notifications (after the broker committed; the ledger write is queued to
 * the writer thread so no loop waits for it):
 *   generation_enqueued  activation tax, the request's burn inputs, its reservation
 *   job_popped / job_faulted  keep a reservation alive
 *   job_submitted        the requester pays, the worker's owner earns (§3.2)
 *   worker_checked_in    uptime rewards (§3.5)
 *   generation_ended     the request's reservation is released at once
 *   generation_replay    the broker's durable record at its start: what a
 *                        crash kept from the ledger is applied now (the
 *                        event keys make the rest a no-op)
 * and user_details (kudos, kudos_details, evaluating_kudos, trusted) and
 * worker_details (kudos_rewards, kudos_details). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "kudos.h"

#define ID_LEN 64 /* = sizeof(kd_event.id) */

static int64_t now_s(void) {
    return (int64_t)time(NULL);
}

static void copy_id(char *dst, const json_t *o, const char *key) {
    const char *s = json_string_value(json_object_get(o, key));
    snprintf(dst, ID_LEN, "%s", s ? s : "");
}

/* ---- generation_validate: the upfront rule ------------------------------------------------ */

static bool random_token(char out[33]) {
    unsigned char b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        return false;
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
    return true;
}

/* Writes a downgraded size/steps back into the request the broker will queue. */
static void apply_downgrade(json_t *request, const kd_gen *g) {
    json_t *params = json_object_get(request, "params");
    if (!json_is_object(params)) {
        params = json_object();
        json_object_set_new(request, "params", params);
    }
    json_object_set_new(params, "width", json_integer(g->width));
    json_object_set_new(params, "height", json_integer(g->height));
    json_object_set_new(params, "steps", json_integer(g->steps));
    json_object_set_new(request, "slow_workers", json_true());
}

static hn_rc on_validate(void *state, const hn_user *user, json_t *request, json_t *warnings,
                         hn_error *err) {
    (void)warnings;
    kudos *k = state;
    /* a dry run only asks what it would cost */
    if (!k->started || !k->conf->upfront || json_is_true(json_object_get(request, "dry_run")))
        return HN_OK;
    kd_gen g;
    if (kd_gen_from_request(request, &g) != 0)
        return HN_OK;
    long long queue, threads;
    kd_tracker_load(k, &queue, &threads);
    kd_upfront u = kd_upfront_check(k->ref, &g, queue, threads);
    /* §3.3 f: naming workers costs the kudos up front, and no downgrade helps */
    bool on_list = k->conf->upfront_on_workerlist &&
                   json_array_size(json_object_get(request, "workers")) > 0;
    if (on_list)
        u.required = true;
    if (!u.required)
        return HN_OK;
    double required = kd_estimate(k->ref, &g, kd_price(k->model, &g));
    char token[33];
    if (!random_token(token))
        return k->api->error(err, 503, "ServiceUnavailable", "No randomness for a reservation.");
    bool granted = false;
    int64_t available = 0;
    if (kd_op_reserve(&k->ledger, user->id, kd_cents(required), token, now_s(), &granted,
                      &available, err) != HN_OK)
        return HN_ERROR;
    if (granted) {
        json_object_set_new(request, "_kudos_reservation", json_string(token));
        return HN_OK;
    }
    if (!on_list && json_is_true(json_object_get(request, "allow_downgrade"))) {
        kd_downgrade(k->ref, &g, u.max_res);
        apply_downgrade(request, &g);
        return HN_OK;
    }
    char amount[64];
    kd_py_repr(required, amount, sizeof(amount));
    return k->api->error(
        err, 403, "KudosUpfront",
        "Due to heavy demand, for requests over %dx%d or over 50 steps (10 steps for LCM work, 30 "
        "steps for Stable Cascade, and half those steps for k_heun, dpmpp_sde, and dpm_2*) the "
        "client needs to already have the required kudos. This request requires %s kudos to "
        "fulfil.",
        u.max_res, u.max_res, amount);
}

/* ---- generation_price, generation_priority -------------------------------------------------- */

static hn_rc on_price(void *state, const hn_user *user, const json_t *request, double *price,
                      hn_error *err) {
    (void)user;
    (void)err;
    kudos *k = state;
    kd_gen g;
    if (kd_gen_from_request(request, &g) != 0)
        return HN_DECLINED;
    *price = kd_price(k->model, &g);
    return HN_OK;
}

static hn_rc on_priority(void *state, const hn_user *user, const json_t *request, double *priority,
                         hn_error *err) {
    (void)request;
    kudos *k = state;
    if (!k->started)
        return HN_DECLINED;
    kd_account a;
    hn_error e = {0};
    if (kd_ledger_account(&k->ledger, user->id, &a, &e) != HN_OK) {
        /* a storage hiccup costs the request its kudos priority, not its place */
        k->api->log(k->self, HN_LOG_WARN, "priority of user %lld: %s", (long long)user->id,
                    e.message);
        a.balance = 0;
    }
    (void)err;
    *priority = kd_priority((double)a.balance / 100.0, (user->roles & HN_ROLE_FLAGGED) != 0,
                            now_s());
    return HN_OK;
}

/* ---- generation_enqueued: activation -------------------------------------------------------- */

static hn_rc on_enqueued(void *state, const json_t *info) {
    kudos *k = state;
    const json_t *request = json_object_get(info, "request");
    kd_gen g;
    kd_event *ev = kd_event_new(KD_EV_ACTIVATE);
    if (!ev || kd_gen_from_request(request, &g) != 0) {
        free(ev);
        return HN_OK;
    }
    copy_id(ev->id, info, "id");
    const char *token = json_string_value(json_object_get(request, "_kudos_reservation"));
    snprintf(ev->token, sizeof(ev->token), "%s", token ? token : "");
    ev->user_id = json_integer_value(json_object_get(info, "user_id"));
    ev->amount = json_number_value(json_object_get(info, "kudos"));
    ev->burn = kd_burn_flags_of(&g);
    ev->n = (int)json_integer_value(json_object_get(info, "n"));
    /* the activation tax: 1, +5 per extra source image (+2 for another
     * user's style, added by the ledger, which knows who that is) */
    ev->tax = 1 + 5.0 * g.n_extra_src;
    ev->style_owner = json_integer_value(json_object_get(request, "_style_owner_id"));
    if (token && ev->id[0]) {
        pthread_mutex_lock(&k->lock);
        kd_map_put(&k->reserved, ev->id, (void *)(intptr_t)ev->now);
        pthread_mutex_unlock(&k->lock);
    }
    kd_writer_post(k, ev);
    return HN_OK;
}

/* ---- job_popped / job_faulted: keep reservations alive ----------------------------------------- */

static hn_rc on_activity(void *state, const json_t *info) {
    kudos *k = state;
    char id[ID_LEN];
    copy_id(id, info, "request");
    if (!id[0])
        return HN_OK;
    int64_t now = now_s();
    /* only requests holding a reservation need it; the rest cost no write */
    pthread_mutex_lock(&k->lock);
    bool held = kd_map_get(&k->reserved, id) != NULL;
    if (held)
        kd_map_put(&k->reserved, id, (void *)(intptr_t)now);
    pthread_mutex_unlock(&k->lock);
    if (!held)
        return HN_OK;
    kd_event *ev = kd_event_new(KD_EV_TOUCH);
    if (ev) {
        ev->now = now;
        snprintf(ev->id, sizeof(ev->id), "%s", id);
        kd_writer_post(k, ev);
    }
    return HN_OK;
}

/* ---- job_submitted: settle ------------------------------------------------------------------- */

static hn_rc on_submitted(void *state, const json_t *info) {
    kudos *k = state;
    kd_event *ev = kd_event_new(KD_EV_SETTLE);
    if (!ev)
        return HN_OK;
    copy_id(ev->id, info, "job");
    copy_id(ev->request, info, "request");
    copy_id(ev->worker, info, "worker");
    ev->user_id = json_integer_value(json_object_get(info, "user_id"));
    ev->owner_id = json_integer_value(json_object_get(info, "worker_user_id"));
    ev->amount = json_number_value(json_object_get(info, "kudos"));
    ev->censored = json_is_true(json_object_get(info, "censored"));
    if (!ev->id[0]) {
        free(ev);
        return HN_OK;
    }
    /* a replay says which bridge ran it; live, the last check-in knows */
    const char *bridge = json_string_value(json_object_get(info, "bridge_agent"));
    if (bridge && *bridge)
        snprintf(ev->bridge, sizeof(ev->bridge), "%s", bridge);
    else
        kd_tracker_bridge(k, ev->worker, ev->bridge, sizeof(ev->bridge));
    kd_writer_post(k, ev);
    return HN_OK;
}

/* ---- generation_ended, generation_replay ------------------------------------------------------ */

static hn_rc on_ended(void *state, const json_t *info) {
    kudos *k = state;
    char id[ID_LEN];
    copy_id(id, info, "id");
    if (!id[0])
        return HN_OK;
    /* requests without a reservation (most of them) cost no write; after a
     * restart the map is rebuilt by the replay before any of this runs */
    pthread_mutex_lock(&k->lock);
    bool held = kd_map_get(&k->reserved, id) != NULL;
    if (held)
        kd_map_remove(&k->reserved, id);
    pthread_mutex_unlock(&k->lock);
    kd_event *ev = held ? kd_event_new(KD_EV_END) : NULL;
    if (ev) {
        snprintf(ev->id, sizeof(ev->id), "%s", id);
        kd_writer_post(k, ev);
    }
    return HN_OK;
}

static hn_rc on_replay(void *state, const char *event, const json_t *info) {
    if (!event)
        return HN_OK;
    if (strcmp(event, "generation_enqueued") == 0)
        return on_enqueued(state, info);
    if (strcmp(event, "job_submitted") == 0)
        return on_submitted(state, info);
    if (strcmp(event, "generation_ended") == 0)
        return on_ended(state, info);
    return HN_OK;
}

static hn_rc on_checked_in(void *state, const json_t *info) {
    kd_tracker_checkin(state, info);
    return HN_OK;
}

/* ---- user_details ---------------------------------------------------------------------------- */

static hn_rc on_user_details(void *state, const hn_user *user, int privilege, json_t *details) {
    kudos *k = state;
    if (!k->started || !user || !json_is_object(details))
        return HN_OK;
    kd_account a;
    hn_error err = {0};
    if (kd_ledger_account(&k->ledger, user->id, &a, &err) != HN_OK) {
        k->api->log(k->self, HN_LOG_WARN, "details of user %lld: %s", (long long)user->id,
                    err.message);
        return HN_OK;
    }
    json_object_set_new(details, "kudos", json_real((double)a.balance / 100.0));
    json_t *kd = json_object_get(details, "kudos_details");
    if (!json_is_object(kd)) {
        kd = json_object();
        json_object_set_new(details, "kudos_details", kd);
    }
    if (a.exists)
        kd_ledger_details(&k->ledger, user->id, kd, &err);
    else if (a.balance != 0) /* the opening balance counts as an admin grant once booked */
        json_object_set_new(kd, "admin", json_real((double)a.balance / 100.0));
    if (kd_trusted_pending(&a)) /* else auth's role says it */
        json_object_set_new(details, "trusted", json_true());
    if (privilege >= 2) {
        json_object_set_new(details, "evaluating_kudos", json_real((double)a.escrow / 100.0));
        /* auth shows the amount; when it was last received is the ledger's */
        json_t *monthly = json_object_get(details, "monthly_kudos");
        int64_t last = 0;
        if (json_is_object(monthly) &&
            kd_op_monthly_last(&k->ledger, user->id, &last, &err) == HN_OK) {
            char when[32];
            time_t t = (time_t)last;
            struct tm tm;
            if (last > 0 && gmtime_r(&t, &tm) &&
                strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm))
                json_object_set_new(monthly, "last_received", json_string(when));
            else
                json_object_set_new(monthly, "last_received", json_null());
        }
    }
    return HN_OK;
}

/* ---- worker_details ---------------------------------------------------------------------------- */

/* The horde's kudos_rewards = generated + uptime; the broker knows only the
 * generated part, the ledger both. Workers it never paid keep the broker's. */
static hn_rc on_worker_details(void *state, const json_t *worker, int privilege, json_t *details) {
    (void)privilege;
    kudos *k = state;
    const char *id = json_string_value(json_object_get(worker, "id"));
    if (!k->started || !id || !json_is_object(details))
        return HN_OK;
    double generated = 0, uptime = 0;
    hn_error err = {0};
    hn_rc rc = kd_op_worker_kudos(&k->ledger, id, &generated, &uptime, &err);
    if (rc == HN_ERROR)
        k->api->log(k->self, HN_LOG_WARN, "details of worker %s: %s", id, err.message);
    if (rc != HN_OK)
        return HN_OK;
    json_object_set_new(details, "kudos_rewards", json_real(generated + uptime));
    json_object_set_new(details, "kudos_details",
                        json_pack("{s:f, s:f}", "generated", generated, "uptime", uptime));
    return HN_OK;
}

int kd_hooks_register(kudos *k) {
    static const hn_hook_order last = {HN_ORDER_LAST, NULL, NULL};
    const hn_api *api = k->api;
    int bad = 0;
    /* last: reserve only for requests every other check let through */
    bad |= hn_hook_add_generation_validate(api, k->self, on_validate, k, &last);
    bad |= hn_hook_add_generation_price(api, k->self, on_price, k, NULL);
    bad |= hn_hook_add_generation_priority(api, k->self, on_priority, k, NULL);
    bad |= hn_hook_add_generation_enqueued(api, k->self, on_enqueued, k, NULL);
    bad |= hn_hook_add_job_popped(api, k->self, on_activity, k, NULL);
    bad |= hn_hook_add_job_faulted(api, k->self, on_activity, k, NULL);
    bad |= hn_hook_add_job_submitted(api, k->self, on_submitted, k, NULL);
    bad |= hn_hook_add_worker_checked_in(api, k->self, on_checked_in, k, NULL);
    bad |= hn_hook_add_user_details(api, k->self, on_user_details, k, NULL);
    bad |= hn_hook_add_generation_ended(api, k->self, on_ended, k, NULL);
    bad |= hn_hook_add_generation_replay(api, k->self, on_replay, k, NULL);
    bad |= hn_hook_add_worker_details(api, k->self, on_worker_details, k, NULL);
    return bad ? -1 : 0;
}
