/* auth: GET /api/v2/users/{id} and GET /api/v2/find_user. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "auth_details.h"

static void respond_details(auth_state *a, hn_request *req, const auth_account *acc,
                            int privilege) {
    json_t *details = auth_user_details(acc, privilege, time(NULL));
    hn_run_user_details(a->api, &acc->user, privilege, details);
    a->api->respond_json(req, 200, details);
}

/* Only digits, as the horde (which answers 404 for "db0#1"). */
static bool parse_user_id(const char *s, int64_t *id) {
    if (!s || !s[0] || strlen(s) > 18)
        return false;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
    }
    *id = strtoll(s, NULL, 10);
    return true;
}

void auth_route_user(hn_request *req, void *state) {
    auth_state *a = state;
    hn_error err = {0};
    int64_t id;
    const char *param = a->api->req_param(req, "id");
    if (!parse_user_id(param, &id)) {
        auth_fail(&err, 404, "UserNotFound",
                  "Please use only the numerical part of the userID. E.g. the '1' in 'db0#1'");
        a->api->respond_error(req, &err);
        return;
    }
    /* an apikey only raises what is shown: moderators see all, users themselves */
    int privilege = 0;
    const char *apikey = a->api->req_header(req, "apikey");
    if (apikey && apikey[0]) {
        hn_user who;
        if (auth_resolve(a, req, &who, &err) != HN_OK) {
            a->api->respond_error(req, &err);
            return;
        }
        if (who.roles & (HN_ROLE_MODERATOR | HN_ROLE_ADMIN))
            privilege = 2;
        else if (who.id == id)
            privilege = 1;
    }
    auth_account acc;
    hn_rc rc = auth_users_get(&a->db, id, &acc, &err);
    if (rc == HN_DECLINED)
        auth_fail(&err, 404, "UserNotFound", "User with ID '%" PRId64 "' not found.", id);
    if (rc != HN_OK) {
        a->api->respond_error(req, &err);
        return;
    }
    respond_details(a, req, &acc, privilege);
}

void auth_route_find_user(hn_request *req, void *state) {
    auth_state *a = state;
    hn_error err = {0};
    const char *apikey = a->api->req_header(req, "apikey");
    if (!apikey || !apikey[0]) {
        auth_invalid_key(a, &err);
        a->api->respond_error(req, &err);
        return;
    }
    /* a shared key (hook sharedkey_owner, the broker's): its owner's public
     * details, named after the key */
    int64_t owner_id = -1;
    char key_name[256] = "";
    hn_rc skrc = hn_run_sharedkey_owner(a->api, apikey, false, &owner_id, key_name,
                                        sizeof key_name, &err);
    if (skrc == HN_ERROR) {
        a->api->respond_error(req, &err);
        return;
    }
    if (skrc == HN_OK) {
        auth_account owner;
        hn_rc rc = auth_users_get(&a->db, owner_id, &owner, &err);
        if (rc == HN_DECLINED)
            auth_fail(&err, 404, "UserNotFound", "User with API Key not found.");
        if (rc != HN_OK) {
            a->api->respond_error(req, &err);
            return;
        }
        json_t *details = auth_user_details(&owner, 0, time(NULL));
        hn_run_user_details(a->api, &owner.user, 0, details);
        char shown[512];
        snprintf(shown, sizeof shown, "%s (Shared Key: %s)", owner.user.username, key_name);
        json_object_set_new(details, "username", json_string(shown));
        a->api->respond_json(req, 200, details);
        return;
    }
    hn_user who;
    if (auth_resolve(a, req, &who, &err) != HN_OK) {
        /* an unknown key is "user not found" here, not 401 (the horde's way);
         * the key itself is not echoed back */
        if (err.status == 401)
            auth_fail(&err, 404, "UserNotFound", "User with API Key not found.");
        a->api->respond_error(req, &err);
        return;
    }
    auth_account acc;
    hn_rc rc = auth_users_get(&a->db, who.id, &acc, &err);
    if (rc == HN_DECLINED)
        auth_fail(&err, 404, "UserNotFound", "User with API Key not found.");
    if (rc != HN_OK) {
        a->api->respond_error(req, &err);
        return;
    }
    respond_details(a, req, &acc, 1);
}
