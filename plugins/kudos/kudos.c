/* kudos: the plugin glue: config, loading the price model and the model
 * reference, registrations, start/stop. See kudos.h for the shape. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kudos.h"

static const hn_conf_spec kd_conf_spec[] = {
    {"price_model", HN_CONF_STRING, offsetof(kd_conf, price_model), NULL, 0, 0, 0,
     "JSON weights of the public horde's neural price model (kudos-v21-206.json); unset: the "
     "legacy formula"},
    {"model_reference", HN_CONF_STRING, offsetof(kd_conf, model_reference), NULL, 0, 0, 0,
     "the horde's image model reference (stable_diffusion.json): baselines and max_steps"},
    {"upfront", HN_CONF_BOOL, offsetof(kd_conf, upfront), "true", 0, 0, 0,
     "big requests need the kudos up front (the horde's rule under load)"},
    {"upfront_on_workerlist", HN_CONF_BOOL, offsetof(kd_conf, upfront_on_workerlist), "false", 0,
     0, 0,
     "requests that name `workers` need their kudos up front, without downgrade (the horde's "
     "HORDE_UPFRONT_KUDOS_ON_WORKERLIST)"},
    {"trust_threshold", HN_CONF_FLOAT, offsetof(kd_conf, trust_threshold), "0", 0, 1e12, 0,
     "escrowed kudos above which an untrusted worker owner becomes trusted (0: never)"},
    {"trust_min_age_s", HN_CONF_INT, offsetof(kd_conf, trust_min_age_s), "604800", 0, 1e9, 0,
     "account age needed before promotion to trusted (horde: 7 days)"},
    {"uptime_interval_s", HN_CONF_INT, offsetof(kd_conf, uptime_interval_s), "600", 1, 1e7, 0,
     "worker uptime between two uptime rewards (horde: 600)"},
    {"worker_stale_s", HN_CONF_INT, offsetof(kd_conf, worker_stale_s), "300", 1, 1e7, 0,
     "a worker that has not popped for this long is stale: its uptime restarts"},
    {"stats_refresh_ms", HN_CONF_INT, offsetof(kd_conf, stats_refresh_ms), "2000", 100, 3.6e6, 0,
     "how often the queue size and worker threads (for the upfront rule) are read"},
    {"request_ttl_s", HN_CONF_INT, offsetof(kd_conf, request_ttl_s), "1800", 60, 1e7, 0,
     "a request's reservation is released this long after its last pop or image"},
    {"unbound_reservation_s", HN_CONF_INT, offsetof(kd_conf, unbound_reservation_s), "120", 1,
     1e6, 0, "a reservation whose request was refused after validation is dropped after this"},
    {"award_user_id", HN_CONF_INT, offsetof(kd_conf, award_user_id), "1", 0, 9.2e18, 0,
     "the only user who may POST /api/v2/kudos/award (horde: user 1)"},
    {"floor_anonymous", HN_CONF_FLOAT, offsetof(kd_conf, floor_anonymous), "-50", -1e9, 1e9, 0,
     "balance floor of the anonymous user"},
    {"floor_pseudonymous", HN_CONF_FLOAT, offsetof(kd_conf, floor_pseudonymous), "14", -1e9, 1e9,
     0, "balance floor of users who registered pseudonymously"},
    {"floor_registered", HN_CONF_FLOAT, offsetof(kd_conf, floor_registered), "25", -1e9, 1e9, 0,
     "balance floor of other users"},
    {"writer_delay_ms", HN_CONF_INT, offsetof(kd_conf, writer_delay_ms), "0", 0, 3.6e6, 0,
     "test aid: the ledger writer waits this long before applying each batch (crash tests "
     "widen the window between the broker's commit and the ledger's); 0 in production"},
    {"monthly_check_s", HN_CONF_INT, offsetof(kd_conf, monthly_check_s), "3600", 1, 86400, 0,
     "how often users whose monthly kudos are due are paid (the horde: hourly)"},
    {"moderator_monthly_kudos", HN_CONF_FLOAT, offsetof(kd_conf, moderator_monthly_kudos), "0", 0,
     1e9, 0, "monthly kudos every moderator receives on top of their own (the horde: 300000)"},
    HN_CONF_END,
};

/* A relative path in the config is relative to the config file's folder. */
static void resolve(const hn_api *api, const char *path, char *out, size_t len) {
    if (path[0] == '/' || !api->config_dir())
        snprintf(out, len, "%s", path);
    else
        snprintf(out, len, "%s/%s", api->config_dir(), path);
}

static void kd_free(kudos *k) {
    if (!k)
        return;
    kd_tracker_free(k);
    /* events posted before a start that never came */
    for (kd_event *ev = k->wq_head, *next; ev; ev = next) {
        next = ev->next;
        free(ev);
    }
    kd_price_model_free(k->model);
    kd_model_ref_free(k->ref);
    pthread_mutex_destroy(&k->lock);
    pthread_mutex_destroy(&k->wq_lock);
    pthread_cond_destroy(&k->wq_cond);
    free(k);
}

static hn_rc kd_init(hn_plugin *self, const hn_api *api, void *confp, void **state, hn_error *err) {
    kudos *k = calloc(1, sizeof(*k));
    if (!k)
        return api->error(err, 500, "OutOfMemory", "kudos: out of memory");
    k->self = self;
    k->api = api;
    k->conf = confp;
    pthread_mutex_init(&k->lock, NULL);
    pthread_mutex_init(&k->wq_lock, NULL);
    pthread_cond_init(&k->wq_cond, NULL);
    k->trust = (kd_trust){k->conf->trust_threshold, k->conf->trust_min_age_s};
    char path[PATH_MAX], msg[512];
    if (k->conf->price_model && k->conf->price_model[0]) {
        resolve(api, k->conf->price_model, path, sizeof(path));
        k->model = kd_price_model_load(path, msg, sizeof(msg));
        if (!k->model) {
            kd_free(k);
            return api->error(err, 500, "ConfigError", "kudos: %s", msg);
        }
        api->log(self, HN_LOG_INFO, "price model %s loaded (basis job %.2f s)", path,
                 kd_price_model_basis(k->model));
    }
    if (k->conf->model_reference && k->conf->model_reference[0]) {
        resolve(api, k->conf->model_reference, path, sizeof(path));
        k->ref = kd_model_ref_load(path, msg, sizeof(msg));
        if (!k->ref) {
            kd_free(k);
            return api->error(err, 500, "ConfigError", "kudos: %s", msg);
        }
    }
    if (kd_tracker_init(k) != 0 || kd_hooks_register(k) != 0 || kd_routes_register(k) != 0 ||
        kd_grant_hook_register(k) != 0) {
        kd_free(k);
        return api->error(err, 500, "InitError", "kudos: a registration failed");
    }
    *state = k;
    return HN_OK;
}

static hn_rc kd_start(void *state, hn_error *err) {
    kudos *k = state;
    const hn_provider *p = k->api->provider_get("storage");
    if (!p)
        return k->api->error(err, 500, "ConfigError",
                             "kudos: no storage provider; load storage-sqlite (or another storage "
                             "plugin) and auth before kudos");
    const hn_storage_vt *vt = p->vt;
    if (vt->size < sizeof(hn_storage_vt) || vt->version != HN_STORAGE_VERSION)
        return k->api->error(err, 500, "ConfigError",
                             "kudos: storage provider \"%s\" has interface version %u, kudos "
                             "needs %d",
                             p->name, (unsigned)vt->version, HN_STORAGE_VERSION);
    kd_floors floors = {kd_cents(k->conf->floor_anonymous), kd_cents(k->conf->floor_pseudonymous),
                        kd_cents(k->conf->floor_registered)};
    if (kd_ledger_open(&k->ledger, vt, p->state, &floors, err) != HN_OK)
        return HN_ERROR;
    if (!k->ledger.have_users)
        k->api->log(k->self, HN_LOG_WARN,
                    "no users table (load auth before kudos): opening balances start at 0");
    k->started = true;
    if (kd_writer_start(k) != 0) {
        k->started = false;
        return k->api->error(err, 500, "StartError", "kudos: cannot start the ledger writer");
    }
    kd_roles_resync(k); /* promotions whose role change a crash lost */
    return HN_OK;
}

static void kd_stop(void *state) {
    kudos *k = state;
    kd_writer_stop(k); /* everything queued is written before storage stops */
    k->started = false;
}

static void kd_fini(void *state) {
    kd_free(state);
}

static const hn_plugin_desc kd_desc = {
    HN_PLUGIN_DESC_INIT,
    .name = "kudos",
    .version = "1.0.0",
    .description = "the kudos economy: prices, ledger, burn/earn rules, escrow, upfront rule, "
                   "queue priority, transfers and awards",
    .conf = kd_conf_spec,
    .conf_size = sizeof(kd_conf),
    .init = kd_init,
    .start = kd_start,
    .stop = kd_stop,
    .fini = kd_fini,
};

HN_PLUGIN_EXPORT const hn_plugin_desc *hn_plugin_entry(void) { return &kd_desc; }
