/* auth: the plugin's state, shared by its parts (hooks, routes, commands).
 *
 * Ownership: the core owns `conf` (valid until after fini); the plugin owns
 * auth_state (freed in fini). `db` is the storage provider, looked up in start
 * and owned by the storage plugin. */
#ifndef AUTH_H
#define AUTH_H

#include <pthread.h>

#include <hn/hn.h>

#include "auth_users.h"

typedef struct auth_conf {
    bool registration;          /* serve /register (off: 404) */
    long long concurrency;      /* concurrency of new users */
    long long register_per_hour; /* registrations per client IP per hour; 0 = unlimited */
} auth_conf;

/* Open registration's per-IP limit: a small fixed table, oldest slot reused. */
#define AUTH_REG_SLOTS 256
typedef struct auth_reg_slot {
    char ip[64];
    int64_t window_start; /* unix seconds */
    int count;
} auth_reg_slot;

typedef struct auth_state {
    hn_plugin *self;
    const hn_api *api;
    const auth_conf *conf;
    auth_db db;
    pthread_mutex_t reg_mu; /* guards reg_slots: registrations arrive on any HTTP loop */
    auth_reg_slot reg_slots[AUTH_REG_SLOTS];
    /* service-account proxy passkeys (auth_proxy.c), guarded by proxy_mu */
    pthread_mutex_t proxy_mu;
    char (*proxy_keys)[64];
    size_t n_proxy_keys, cap_proxy_keys;
    int64_t proxy_loaded_ms; /* monotonic; 0 = reload at the next use */
} auth_state;

/* auth_hooks.c */
hn_hook_http_authenticate_fn auth_http_authenticate;
hn_hook_user_lookup_fn auth_user_lookup;
hn_hook_user_ensure_fn auth_user_ensure;
hn_hook_user_set_roles_fn auth_user_set_roles; /* auth_roles_hook.c */
hn_hook_user_suspicion_fn auth_user_suspicion; /* auth_suspicion.c */
/* auth_proxy.c: Proxy-Authorization + Proxied-For (hook http_request) */
hn_hook_http_request_fn auth_proxy_http_request;
/* Forgets the cached passkeys (a passkey was just made). */
void auth_proxy_invalidate(auth_state *a);
/* Resolves the apikey header of req through hook http_authenticate (so other
 * plugins' keys count too). HN_OK with *user, or HN_ERROR with err (401). */
hn_rc auth_resolve(auth_state *a, hn_request *req, hn_user *user, hn_error *err);
/* The horde's 401 for a key nobody knows. */
hn_rc auth_invalid_key(auth_state *a, hn_error *err);

/* auth_routes.c */
void auth_route_user(hn_request *req, void *state);
void auth_route_find_user(hn_request *req, void *state);

/* auth_manage.c: GET /users, PUT|DELETE /users/{id}, hook user_update */
void auth_route_users(hn_request *req, void *state);
void auth_route_user_manage(hn_request *req, void *state);
hn_hook_user_update_fn auth_user_update;

/* auth_register.c */
void auth_route_register_form(hn_request *req, void *state);
void auth_route_register_post(hn_request *req, void *state);

/* auth_commands.c */
hn_command_fn auth_command_user;

#endif
