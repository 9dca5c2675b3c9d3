/* A test plugin (built by test_accounts_suspicion.py, loaded by path) that
 * stands in for the prompt filter and the kudos plugin:
 *   POST /probe/suspect/{user_id}/{reason}  runs hook user_suspicion and
 *        answers {"count": n}, or the hook's error;
 *   GET  /probe/whoami  authenticates the apikey header and answers the
 *        ABI 1.3 fields of hn_user ({id, deleted, filtered, public_workers,
 *        suspicion, suspicious, usage_multiplier}). */
#include <stdlib.h>
#include <string.h>

#include <hn/hn.h>

static void route_suspect(hn_request *req, void *state) {
    const hn_api *api = state;
    int64_t id = strtoll(api->req_param(req, "id"), NULL, 10);
    int reason = atoi(api->req_param(req, "reason"));
    int64_t count = -1;
    hn_error err;
    memset(&err, 0, sizeof err);
    hn_rc rc = hn_run_user_suspicion(api, id, reason, &count, &err);
    if (rc == HN_ERROR) {
        api->respond_error(req, &err);
        return;
    }
    api->respond_json(req, rc == HN_OK ? 200 : 501, json_pack("{s:I}", "count",
                                                              (json_int_t)count));
}

static void route_whoami(hn_request *req, void *state) {
    const hn_api *api = state;
    hn_user u;
    memset(&u, 0, sizeof u);
    u.size = sizeof u;
    hn_error err;
    memset(&err, 0, sizeof err);
    if (hn_run_http_authenticate(api, req, api->req_header(req, "apikey"), &u, &err) != HN_OK) {
        api->respond_error(req, &err);
        return;
    }
    api->respond_json(req, 200,
                      json_pack("{s:I, s:b, s:b, s:b, s:I, s:b, s:f}", "id", (json_int_t)u.id,
                                "deleted", u.deleted, "filtered", u.filtered, "public_workers",
                                u.public_workers, "suspicion", (json_int_t)u.suspicion,
                                "suspicious", hn_user_suspicious(&u), "usage_multiplier",
                                u.usage_multiplier));
}

static hn_rc probe_init(hn_plugin *self, const hn_api *api, void *conf, void **state,
                        hn_error *err) {
    (void)conf;
    *state = (void *)api;
    if (api->route_add(self, HN_POST, "/probe/suspect/{id}/{reason}", route_suspect,
                       (void *)api) ||
        api->route_add(self, HN_GET, "/probe/whoami", route_whoami, (void *)api))
        return api->error(err, 500, "ProbeInit", "registration failed");
    return HN_OK;
}

static void probe_fini(void *state) {
    (void)state;
}

static const hn_plugin_desc desc = {
    HN_PLUGIN_DESC_INIT,
    .name = "suspicion-probe",
    .version = "0.0.1",
    .description = "test plugin for hook user_suspicion and hn_user's ABI 1.3 fields",
    .init = probe_init,
    .fini = probe_fini,
};

HN_PLUGIN_EXPORT const hn_plugin_desc *hn_plugin_entry(void) {
    return &desc;
}
