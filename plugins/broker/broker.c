/* broker: the plugin itself — configuration, registration, start and stop.
 * The work is done in the other files (see broker.h for the map). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "accounts.h"
#include "cluster.h"

#define OFF(f) offsetof(br_conf, f)

static const hn_conf_spec broker_conf[] = {
    {"model_reference", HN_CONF_STRING, OFF(model_reference), NULL, 0, 0, 0,
     "path of the public horde's stable_diffusion.json (relative to the config file); "
     "gives baselines, nsfw flags and step limits"},
    {"accept_unknown_models", HN_CONF_BOOL, OFF(accept_unknown_models), "true", 0, 0, 0,
     "let workers serve model names the reference does not know"},
    {"request_expiry_s", HN_CONF_INT, OFF(request_expiry_s), "1200", 1, 604800, 0,
     "a request expires this long after its last pop (the horde: 20 minutes)"},
    {"job_ttl_s", HN_CONF_INT, OFF(job_ttl_s), "0", 0, 86400, 0,
     "seconds a worker has for a job before it is re-queued; 0 = the horde's formula"},
    {"lifecycle_interval_ms", HN_CONF_INT, OFF(lifecycle_interval_ms), "1000", 50, 600000, 0,
     "how often stale jobs and expired requests are looked for"},
    {"worker_online_s", HN_CONF_INT, OFF(worker_online_s), "300", 1, 86400, 0,
     "a worker counts as online this long after its last pop"},
    {"url_ttl_s", HN_CONF_INT, OFF(url_ttl_s), "1800", 10, 604800, 0,
     "lifetime of signed image download/upload URLs"},
    {"max_untrusted_workers", HN_CONF_INT, OFF(max_untrusted_workers), "3", 0, 1000000, 0,
     "an untrusted user with more workers than this cannot add another"},
    {"abort_limit_per_hour", HN_CONF_INT, OFF(abort_limit_per_hour), "20", 1, 1000000, 0,
     "a worker dropping more jobs than this in an hour goes into maintenance (raid mode: 10, "
     "and it is paused instead)"},
    {"unreasonably_fast_mps", HN_CONF_INT, OFF(unreasonably_fast_mps), "0", 0, 1000000, 0,
     "a finished image faster than this many megapixelsteps per second is the worker's "
     "UNREASONABLY_FAST suspicion (the horde uses 20); 0 = never (the default: a node's own "
     "test generators and test clients finish images at once)"},
    {"max_faults", HN_CONF_INT, OFF(max_faults), "2", 0, 1000, 0,
     "a request faults once more of its jobs than this have faulted"},
    {"commit_batch", HN_CONF_INT, OFF(commit_batch), "1024", 1, 1000000, 0,
     "most changes committed together in one transaction (group commit)"},
    {"maintenance_mode", HN_CONF_BOOL, OFF(maintenance_mode), "false", 0, 0, 0,
     "refuse new generation requests (400 MaintenanceMode); the default until an admin sets "
     "the mode with PUT /api/v2/status/modes, which persists"},
    {"rate_limits", HN_CONF_BOOL, OFF(rate_limits), "true", 0, 0, 0,
     "apply the public horde's per-IP and per-key rate limits (429)"},
    {"rate_limit_loopback", HN_CONF_BOOL, OFF(rate_limit_loopback), "false", 0, 0, 0,
     "also rate-limit clients on the loopback address (the local worker, local tools)"},
    {"rate_limit_default", HN_CONF_INT, OFF(rate_limit_default), "90", 0, 1000000, 0,
     "requests a minute per IP on routes without their own limit (0: none)"},
    {"dev_test_user", HN_CONF_BOOL, OFF(dev_test_user), "false", 0, 0, 0,
     "serve POST /api/v2/dev/test-user to loopback clients (test nodes only)"},
    {"news_file", HN_CONF_STRING, OFF(news_file), NULL, 0, 0, 0,
     "JSON array of news pieces for /status/news (relative to the config file)"},
    {"cluster", HN_CONF_BOOL, OFF(cluster), "false", 0, 0, 0,
     "several broker nodes share one PostgreSQL database (storage-pg; docs/DEPLOY.md)"},
    {"cluster_sync_ms", HN_CONF_INT, OFF(cluster_sync_ms), "200", 20, 60000, 0,
     "cluster: how often a node reads the requests, jobs and workers other nodes changed"},
    HN_CONF_END,
};

static hn_rc broker_init(hn_plugin *self, const hn_api *api, void *conf, void **state,
                         hn_error *err) {
    broker *b = calloc(1, sizeof(*b));
    if (!b)
        return api->error(err, 500, "InternalServerError", "out of memory");
    b->self = self;
    b->api = api;
    b->conf = conf;
    if (br_index_init(b) != 0) {
        free(b);
        return api->error(err, 500, "InternalServerError", "cannot create the broker's lock");
    }
    *state = b;
    const char *ref = b->conf->model_reference;
    if (ref && *ref) {
        char path[4096], msg[512];
        if (ref[0] == '/')
            snprintf(path, sizeof(path), "%s", ref);
        else
            snprintf(path, sizeof(path), "%s/%s", api->config_dir(), ref);
        b->ref = br_model_ref_load(path, msg, sizeof(msg));
        if (!b->ref)
            return api->error(err, 400, "BadConfig", "%s", msg);
        api->log(self, HN_LOG_INFO, "model reference %s: %zu models", path,
                 br_model_ref_count(b->ref));
    }
    static const struct {
        unsigned methods;
        const char *pattern;
        hn_route_fn *fn;
    } routes[] = {
        {HN_POST, "/api/v2/generate/async", br_route_async},
        {HN_GET, "/api/v2/generate/check/{id}", br_route_check},
        {HN_GET | HN_DELETE, "/api/v2/generate/status/{id}", br_route_status},
        {HN_POST, "/api/v2/generate/pop", br_route_pop},
        {HN_POST, "/api/v2/generate/submit", br_route_submit},
        {HN_GET, "/api/v2/workers", br_route_workers},
        {HN_GET, "/api/v2/workers/{id}", br_route_worker_single},
        {HN_PUT, "/api/v2/workers/{id}", br_route_worker_put},
        {HN_GET, "/api/v2/workers/name/{name}", br_route_worker_by_name},
        {HN_GET, "/api/v2/status/heartbeat", br_route_heartbeat},
        {HN_GET, "/api/v2/status/models", br_route_models},
        {HN_GET, "/api/v2/status/models/{name}", br_route_model_single},
        {HN_GET, "/api/v2/status/performance", br_route_performance},
        /* accounts (accounts.h) */
        {HN_DELETE, "/api/v2/workers/{id}", br_route_worker_delete},
        {HN_GET | HN_POST, "/api/v2/workers/messages", br_route_worker_messages},
        {HN_GET | HN_DELETE, "/api/v2/workers/messages/{id}", br_route_worker_message_single},
        {HN_GET | HN_PUT, "/api/v2/status/modes", br_route_modes},
        {HN_GET | HN_POST, "/api/v2/teams", br_route_teams},
        {HN_GET | HN_PATCH | HN_DELETE, "/api/v2/teams/{id}", br_route_team_single},
        {HN_PUT, "/api/v2/sharedkeys", br_route_sharedkeys},
        {HN_GET | HN_PATCH | HN_DELETE, "/api/v2/sharedkeys/{id}", br_route_sharedkey_single},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (api->route_add(self, routes[i].methods, routes[i].pattern, routes[i].fn, b) != 0)
            return api->error(err, 500, "InternalServerError", "cannot register route %s",
                              routes[i].pattern);
    if (br_mod_init(b, err) != 0)
        return HN_ERROR;
    if (hn_hook_add_user_details(api, self, br_hook_user_details, b, NULL) != 0)
        return api->error(err, 500, "InternalServerError", "cannot register hook user_details");
    static const hn_hook_order after_owners = {HN_ORDER_LAST, NULL, NULL};
    if (hn_hook_add_user_update(api, self, br_hook_user_update, b, &after_owners) != 0)
        return api->error(err, 500, "InternalServerError", "cannot register hook user_update");
    if (hn_hook_add_sharedkey_owner(api, self, br_hook_sharedkey_owner, b, NULL) != 0)
        return api->error(err, 500, "InternalServerError", "cannot register hook sharedkey_owner");
    if (hn_hook_add_sharedkey_credit(api, self, br_hook_sharedkey_credit, b, NULL) != 0)
        return api->error(err, 500, "InternalServerError", "cannot register hook sharedkey_credit");
    if (api->timer_add(self, (unsigned)b->conf->lifecycle_interval_ms, br_lifecycle_tick, b) != 0)
        return api->error(err, 500, "InternalServerError", "cannot register the lifecycle timer");
    return HN_OK;
}

static hn_rc broker_start(void *state, hn_error *err) {
    broker *b = state;
    const hn_api *api = b->api;
    b->storage = api->provider_get("storage");
    b->images = api->provider_get("images");
    if (!b->storage)
        return api->error(err, 500, "BadConfig",
                          "the broker needs a storage provider (load storage-sqlite)");
    if (!b->images)
        return api->error(err, 500, "BadConfig",
                          "the broker needs an images provider (load images-fs)");
    b->db = b->storage->vt;
    b->img = b->images->vt;
    if (b->db->size < sizeof(hn_storage_vt) || b->img->size < sizeof(hn_images_vt))
        return api->error(err, 500, "BadConfig", "storage or images provider is too old");
    if (br_store_start(b, err) != 0 || br_mod_start(b, err) != 0)
        return HN_ERROR;
    if (br_accounts_start(b, err) != 0)
        return HN_ERROR;
    if (br_cluster_start(b, err) != 0)
        return HN_ERROR;
    pthread_mutex_lock(&b->lock);
    br_queue_snapshot(b);
    api->log(b->self, HN_LOG_INFO, "broker: %zu requests, %zu jobs, %zu workers loaded",
             b->requests.len, b->jobs.len, b->workers.len);
    pthread_mutex_unlock(&b->lock);
    b->started = true;
    br_replay(b); /* before the node listens: consumers catch up first */
    return HN_OK;
}

static void broker_stop(void *state) {
    broker *b = state;
    /* the counters changed since the last tick go out with the last batch */
    br_op *op = br_op_new(b);
    if (op) {
        pthread_mutex_lock(&b->lock);
        if (br_flush_dirty(b, op, br_now_ms()))
            br_op_submit(b, op);
        else
            br_op_discard(op);
        pthread_mutex_unlock(&b->lock);
    }
    b->started = false;
    br_cluster_stop(b); /* no more merges while the writer drains */
    br_store_stop(b);
    b->api->log(b->self, HN_LOG_INFO, "broker: %llu commits of %llu changes",
                (unsigned long long)b->batches, (unsigned long long)b->batched_ops);
}

static void broker_fini(void *state) {
    broker *b = state;
    if (!b)
        return;
    br_mod_fini(b);
    br_accounts_free(b);
    br_index_free(b);
    br_model_ref_free(b->ref);
    free(b);
}

static const hn_plugin_desc desc = {
    HN_PLUGIN_DESC_INIT,
    .name = "broker",
    .version = "0.1.0",
    .description = "the AI Horde v2 image API: requests, pops, submits, workers, status",
    .conf = broker_conf,
    .conf_size = sizeof(br_conf),
    .init = broker_init,
    .start = broker_start,
    .stop = broker_stop,
    .fini = broker_fini,
};

HN_PLUGIN_EXPORT const hn_plugin_desc *hn_plugin_entry(void) {
    return &desc;
}
