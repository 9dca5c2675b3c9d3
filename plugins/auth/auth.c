/* auth: users and API keys. The plugin glue: config, registrations, start.
 * The parts: auth_keys (keys), auth_users (the table), auth_hooks,
 * auth_routes (/users/{id}, /find_user), auth_register (/register),
 * auth_commands (`horde-node user ...`), auth_details (UserDetails). */
#include <stdlib.h>
#include <string.h>

#include "auth.h"

static const hn_conf_spec auth_conf_spec[] = {
    {"registration", HN_CONF_BOOL, offsetof(auth_conf, registration), "false", 0, 0, 0,
     "serve /register, where anyone can create a pseudonymous user and get a key"},
    {"concurrency", HN_CONF_INT, offsetof(auth_conf, concurrency), "30", 0, 500, 0,
     "requests in flight a new user may have (the horde's default is 30)"},
    {"register_per_hour", HN_CONF_INT, offsetof(auth_conf, register_per_hour), "10", 0, 100000, 0,
     "registrations a client IP may make per hour (0 = no limit)"},
    HN_CONF_END,
};

/* Other kinds of keys (shared keys, ...) get the first look; auth answers last. */
static const hn_hook_order auth_last = {HN_ORDER_LAST, NULL, NULL};
static const hn_hook_order auth_first = {HN_ORDER_FIRST, NULL, NULL};

static hn_rc auth_init(hn_plugin *self, const hn_api *api, void *confp, void **state,
                       hn_error *err) {
    auth_state *a = calloc(1, sizeof *a);
    if (!a)
        return api->error(err, 500, "OutOfMemory", "auth: out of memory");
    a->self = self;
    a->api = api;
    a->conf = confp;
    pthread_mutex_init(&a->reg_mu, NULL);
    pthread_mutex_init(&a->proxy_mu, NULL);
    *state = a;
    int bad = 0;
    bad |= hn_hook_add_http_authenticate(api, self, auth_http_authenticate, a, &auth_last);
    bad |= hn_hook_add_user_lookup(api, self, auth_user_lookup, a, &auth_last);
    bad |= hn_hook_add_user_ensure(api, self, auth_user_ensure, a, &auth_last);
    bad |= hn_hook_add_user_set_roles(api, self, auth_user_set_roles, a, &auth_last);
    bad |= hn_hook_add_user_suspicion(api, self, auth_user_suspicion, a, &auth_last);
    bad |= api->route_add(self, HN_GET, "/api/v2/users/{id}", auth_route_user, a);
    bad |= api->route_add(self, HN_GET, "/api/v2/find_user", auth_route_find_user, a);
    bad |= api->route_add(self, HN_GET, "/api/v2/users", auth_route_users, a);
    bad |= api->route_add(self, HN_PUT | HN_DELETE, "/api/v2/users/{id}", auth_route_user_manage,
                          a);
    /* auth's fields first: a refused auth field stops the run before any
     * other plugin (kudos) applied its own */
    bad |= hn_hook_add_user_update(api, self, auth_user_update, a, &auth_first);
    /* first: the proxied address must be in place before rate limits look */
    bad |= hn_hook_add_http_request(api, self, auth_proxy_http_request, a, &auth_first);
    if (a->conf->registration) { /* off: not routed at all, so the node answers 404 */
        bad |= api->route_add(self, HN_GET, "/register", auth_route_register_form, a);
        bad |= api->route_add(self, HN_POST, "/register", auth_route_register_post, a);
    }
    bad |= api->command_add(self, "user",
                            "create NAME [--admin] [--moderator] [--trusted] [--kudos N] | list | "
                            "key-reset NAME",
                            HN_CMD_START, auth_command_user, a);
    if (bad)
        return api->error(err, 500, "InitError", "auth: a registration failed");
    return HN_OK;
}

static hn_rc auth_start(void *state, hn_error *err) {
    auth_state *a = state;
    const hn_provider *p = a->api->provider_get("storage");
    if (!p)
        return a->api->error(err, 500, "ConfigError",
                             "auth: no storage provider; load storage-sqlite (or another storage "
                             "plugin) before auth");
    const hn_storage_vt *vt = p->vt;
    if (vt->size < sizeof(hn_storage_vt) || vt->version != HN_STORAGE_VERSION)
        return a->api->error(err, 500, "ConfigError",
                             "auth: storage provider \"%s\" has interface version %u, auth "
                             "needs %d",
                             p->name, (unsigned)vt->version, HN_STORAGE_VERSION);
    a->db = (auth_db){vt, p->state};
    if (auth_users_migrate(&a->db, err) != HN_OK) {
        a->db = (auth_db){0};
        return HN_ERROR;
    }
    return HN_OK;
}

static void auth_stop(void *state) {
    auth_state *a = state;
    a->db = (auth_db){0};
}

static void auth_fini(void *state) {
    auth_state *a = state;
    if (!a)
        return;
    pthread_mutex_destroy(&a->reg_mu);
    pthread_mutex_destroy(&a->proxy_mu);
    free(a->proxy_keys);
    free(a);
}

static const hn_plugin_desc auth_desc = {
    HN_PLUGIN_DESC_INIT,
    .name = "auth",
    .version = "1.0.0",
    .description = "users and API keys: http_authenticate, /users[/{id}], /find_user, /register",
    .conf = auth_conf_spec,
    .conf_size = sizeof(auth_conf),
    .init = auth_init,
    .start = auth_start,
    .stop = auth_stop,
    .fini = auth_fini,
};

HN_PLUGIN_EXPORT const hn_plugin_desc *hn_plugin_entry(void) { return &auth_desc; }
