/* A test plugin for the broker's hooks (built by test_broker_hooks.py, loaded
 * by path). It stands in for the kudos plugin and friends:
 *   generation_validate  prompt "probe-refuse" -> 400 ProbeRefused;
 *                        "probe-warn" -> adds warning ProbeWarning;
 *                        "probe-steps" -> rewrites params.steps to 7
 *   generation_price     "probe-price" -> 42 kudos, else declines
 *   generation_priority  "prio=N" -> priority N, else declines
 *   every NOTIFY hook    counted; the last info kept
 * GET /probe/counts answers {"<hook>": count, ...};
 * GET /probe/last/{hook} the last info object that hook received. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <hn/hn.h>

typedef struct probe {
    const hn_api *api;
    pthread_mutex_t mu;
    int counts[5];
    json_t *last[5];
} probe;

static const char *const names[5] = {"generation_enqueued", "job_popped", "job_submitted",
                                     "job_faulted", "worker_checked_in"};

static const char *prompt_of(const json_t *request) {
    const char *p = json_string_value(json_object_get(request, "prompt"));
    return p ? p : "";
}

static hn_rc on_validate(void *state, const hn_user *user, json_t *request, json_t *warnings,
                         hn_error *err) {
    probe *p = state;
    (void)user;
    const char *prompt = prompt_of(request);
    if (strstr(prompt, "probe-refuse"))
        return p->api->error(err, 400, "ProbeRefused", "the probe refused this prompt");
    if (strstr(prompt, "probe-warn"))
        json_array_append_new(warnings, json_pack("{s:s, s:s}", "code", "ProbeWarning",
                                                  "message", "the probe warns"));
    if (strstr(prompt, "probe-steps"))
        json_object_set_new(json_object_get(request, "params"), "steps", json_integer(7));
    return HN_OK;
}

static hn_rc on_price(void *state, const hn_user *user, const json_t *request, double *kudos,
                      hn_error *err) {
    (void)state;
    (void)user;
    (void)err;
    if (!strstr(prompt_of(request), "probe-price"))
        return HN_DECLINED;
    *kudos = 42.0;
    return HN_OK;
}

static hn_rc on_priority(void *state, const hn_user *user, const json_t *request,
                         double *priority, hn_error *err) {
    (void)state;
    (void)user;
    (void)err;
    const char *at = strstr(prompt_of(request), "prio=");
    if (!at)
        return HN_DECLINED;
    *priority = strtod(at + 5, NULL);
    return HN_OK;
}

static void record(probe *p, int i, const json_t *info) {
    pthread_mutex_lock(&p->mu);
    p->counts[i]++;
    json_decref(p->last[i]);
    p->last[i] = json_deep_copy(info);
    pthread_mutex_unlock(&p->mu);
}

static hn_rc on_enqueued(void *s, const json_t *info) { record(s, 0, info); return HN_OK; }
static hn_rc on_popped(void *s, const json_t *info) { record(s, 1, info); return HN_OK; }
static hn_rc on_submitted(void *s, const json_t *info) { record(s, 2, info); return HN_OK; }
static hn_rc on_faulted(void *s, const json_t *info) { record(s, 3, info); return HN_OK; }
static hn_rc on_checked_in(void *s, const json_t *info) { record(s, 4, info); return HN_OK; }

static void route_counts(hn_request *req, void *state) {
    probe *p = state;
    json_t *o = json_object();
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < 5; i++)
        json_object_set_new(o, names[i], json_integer(p->counts[i]));
    pthread_mutex_unlock(&p->mu);
    p->api->respond_json(req, 200, o);
}

static void route_last(hn_request *req, void *state) {
    probe *p = state;
    const char *name = p->api->req_param(req, "hook");
    json_t *o = NULL;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < 5; i++)
        if (name && strcmp(name, names[i]) == 0 && p->last[i])
            o = json_deep_copy(p->last[i]);
    pthread_mutex_unlock(&p->mu);
    p->api->respond_json(req, o ? 200 : 404, o ? o : json_pack("{s:s, s:s}", "message", "none",
                                                                 "rc", "NotFound"));
}

static hn_rc probe_init(hn_plugin *self, const hn_api *api, void *conf, void **state,
                        hn_error *err) {
    (void)conf;
    probe *p = calloc(1, sizeof(*p));
    if (!p)
        return api->error(err, 500, "NoMemory", "out of memory");
    p->api = api;
    pthread_mutex_init(&p->mu, NULL);
    *state = p;
    if (hn_hook_add_generation_validate(api, self, on_validate, p, NULL) ||
        hn_hook_add_generation_price(api, self, on_price, p, NULL) ||
        hn_hook_add_generation_priority(api, self, on_priority, p, NULL) ||
        hn_hook_add_generation_enqueued(api, self, on_enqueued, p, NULL) ||
        hn_hook_add_job_popped(api, self, on_popped, p, NULL) ||
        hn_hook_add_job_submitted(api, self, on_submitted, p, NULL) ||
        hn_hook_add_job_faulted(api, self, on_faulted, p, NULL) ||
        hn_hook_add_worker_checked_in(api, self, on_checked_in, p, NULL) ||
        api->route_add(self, HN_GET, "/probe/counts", route_counts, p) ||
        api->route_add(self, HN_GET, "/probe/last/{hook}", route_last, p))
        return api->error(err, 500, "ProbeInit", "registration failed");
    return HN_OK;
}

static void probe_fini(void *state) {
    probe *p = state;
    for (int i = 0; i < 5; i++)
        json_decref(p->last[i]);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static const hn_plugin_desc desc = {
    HN_PLUGIN_DESC_INIT,
    .name = "hook-probe",
    .version = "0.0.1",
    .description = "test plugin for the broker's hooks",
    .init = probe_init,
    .fini = probe_fini,
};

HN_PLUGIN_EXPORT const hn_plugin_desc *hn_plugin_entry(void) {
    return &desc;
}
