/* auth: hooks http_authenticate and user_lookup. */
#include <string.h>
#include <time.h>

#include "auth.h"

hn_rc auth_invalid_key(auth_state *a, hn_error *err) {
    /* The horde's message points at its /register page; ours at this node's
     * when open registration is on. */
    if (a->conf->registration)
        return auth_fail(err, 401, "InvalidAPIKey",
                         "No user matching sent API Key. Have you remembered to register at "
                         "%s/register ?",
                         a->api->public_url());
    return auth_fail(err, 401, "InvalidAPIKey",
                     "No user matching sent API Key. Ask the operator of this horde for one.");
}

/* Registered LAST: plugins with other kinds of keys (shared keys, ...) see the
 * key first; whatever reaches auth and is not a user's key is refused. */
hn_rc auth_http_authenticate(void *state, hn_request *req, const char *apikey, hn_user *user,
                             hn_error *err) {
    auth_state *a = state;
    (void)req;
    if (!a->db.vt)
        return auth_fail(err, 503, "StorageError", "auth: not started");
    auth_account acc;
    hn_rc rc;
    if (!apikey || !apikey[0]) /* no key: the anonymous user, as the horde does */
        rc = auth_users_get(&a->db, 0, &acc, err);
    else
        rc = auth_users_find_key(&a->db, apikey, &acc, err);
    if (rc == HN_DECLINED)
        return auth_invalid_key(a, err);
    if (rc != HN_OK)
        return HN_ERROR;
    auth_users_touch(&a->db, &acc, time(NULL));
    *user = acc.user;
    return HN_OK;
}

hn_rc auth_user_lookup(void *state, int64_t id, hn_user *user, hn_error *err) {
    auth_state *a = state;
    if (!a->db.vt)
        return auth_fail(err, 503, "StorageError", "auth: not started");
    auth_account acc;
    hn_rc rc = auth_users_get(&a->db, id, &acc, err);
    if (rc == HN_OK)
        *user = acc.user;
    return rc;
}

hn_rc auth_resolve(auth_state *a, hn_request *req, hn_user *user, hn_error *err) {
    const char *apikey = a->api->req_header(req, "apikey");
    memset(user, 0, sizeof *user);
    user->size = sizeof *user;
    hn_rc rc = hn_run_http_authenticate(a->api, req, apikey, user, err);
    if (rc == HN_DECLINED) /* nobody knew it (auth itself not in the chain?) */
        return auth_invalid_key(a, err);
    return rc == HN_ERROR ? HN_ERROR : HN_OK;
}

/* user_ensure: find the user of an alias, or make it (the all-in-one node's
 * local worker runs as such a user). Race-safe across processes: a create
 * that loses to another creator (NameAlreadyExists) falls back to the find. */
hn_rc auth_user_ensure(void *state, const char *alias, uint32_t roles, bool new_key,
                       hn_user *user, char *apikey, size_t apikey_size, hn_error *err) {
    auth_state *a = state;
    if (!a->db.vt)
        return auth_fail(err, 503, "StorageError", "auth: not started");
    if (apikey == NULL || apikey_size < AUTH_KEY_LEN + 1)
        return auth_fail(err, 500, "BadRequest", "user_ensure: key buffer too small");
    apikey[0] = '\0';
    auth_account acc;
    char key[AUTH_KEY_LEN + 1] = "";
    hn_rc rc = auth_users_find_alias(&a->db, alias, &acc, err);
    if (rc == HN_DECLINED) {
        auth_new_user nu = {.alias = alias,
                            .roles = roles,
                            .concurrency = (int)a->conf->concurrency};
        rc = auth_users_create(&a->db, &nu, &acc, key, err);
        if (rc == HN_ERROR && strcmp(err->rc, "NameAlreadyExists") == 0) {
            new_key = true; /* someone else made it: we never saw its key */
            rc = auth_users_find_alias(&a->db, alias, &acc, err);
        } else if (rc == HN_OK) {
            new_key = false; /* the key made with the user is fresh */
        }
    }
    if (rc != HN_OK)
        return rc == HN_DECLINED ? auth_fail(err, 500, "StorageError",
                                             "user_ensure: user vanished while being made")
                                 : HN_ERROR;
    if (new_key && auth_users_reset_key(&a->db, acc.user.id, key, err) != HN_OK)
        return HN_ERROR;
    *user = acc.user;
    snprintf(apikey, apikey_size, "%s", key);
    return HN_OK;
}
