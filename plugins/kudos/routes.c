/* kudos: POST /api/v2/kudos/transfer (§3.6), POST /api/v2/kudos/award, and
 * the admin `kudos` field of PUT /api/v2/users/{id}.
 *
 * Each answer needs one short transaction, run on the request's loop thread
 * as auth does for its lookups (transfers and awards are rare next to the
 * image flow). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kudos.h"

#define MAX_IDEMPOTENCY_KEY 255

static void fail(kudos *k, hn_request *req, int status, const char *rc, const char *msg) {
    hn_error err;
    k->api->error(&err, status, rc, "%s", msg);
    k->api->respond_error(req, &err);
}

/* flask-restx's answer to a missing or malformed argument. */
static void schema_error(kudos *k, hn_request *req, const char *field, const char *reason) {
    json_t *body = json_pack("{s:s, s:{s:s}}", "message", "Input payload validation failed",
                             "errors", field, reason);
    k->api->respond_json(req, 400, body);
}

/* reqparse type=int: integers, reals (truncated, as Python's int()), numeric
 * strings; absent or null: the default. Returns false for anything else. */
static bool parse_int(const json_t *body, const char *key, long long def, long long *out) {
    const json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return true;
    }
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != d || d > 9e15 || d < -9e15)
            return false;
        *out = (long long)d;
        return true;
    }
    const char *s = json_string_value(v);
    if (!s)
        return false;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno)
        return false;
    *out = x;
    return true;
}

/* Authenticates the apikey header; answers and returns false when it cannot. */
static bool authenticate(kudos *k, hn_request *req, const char *what, hn_user *user) {
    const char *apikey = k->api->req_header(req, "apikey");
    if (!apikey) {
        char reason[160];
        snprintf(reason, sizeof(reason), "%s Missing required parameter in the HTTP headers", what);
        schema_error(k, req, "apikey", reason);
        return false;
    }
    hn_error err = {0};
    memset(user, 0, sizeof(*user));
    user->size = sizeof(*user);
    hn_rc rc = hn_run_http_authenticate(k->api, req, apikey, user, &err);
    if (rc == HN_OK)
        return true;
    if (rc == HN_DECLINED || !err.status)
        k->api->error(&err, 401, "InvalidAPIKey",
                      "No user matching sent API Key. Have you remembered to register?");
    k->api->respond_error(req, &err);
    return false;
}

/* "alias#id" -> the user with that id (the horde trusts only the id). */
static bool find_by_username(kudos *k, const char *username, hn_user *out) {
    const char *hash = username ? strrchr(username, '#') : NULL;
    const char *digits = hash ? hash + 1 : NULL;
    if (!digits || !*digits || strlen(digits) > 18)
        return false;
    for (const char *p = digits; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return kd_lookup_user(k, strtoll(digits, NULL, 10), out);
}

static bool ready(kudos *k, hn_request *req) {
    if (k->started)
        return true;
    fail(k, req, 503, "ServiceUnavailable", "The kudos ledger is not ready.");
    return false;
}

/* ---- POST /api/v2/kudos/transfer -------------------------------------------------------------- */

static void route_transfer(hn_request *req, void *state) {
    kudos *k = state;
    const hn_api *api = k->api;
    hn_error err = {0};
    if (!ready(k, req))
        return;
    json_t *body = api->req_json(req, &err);
    if (!body) {
        api->respond_error(req, &err);
        return;
    }
    hn_user source, target;
    if (!authenticate(k, req, "The sending user's API key.", &source))
        return;
    const char *username = json_string_value(json_object_get(body, "username"));
    long long amount;
    if (!username) {
        schema_error(k, req, "username",
                     "The user ID which will receive the kudos Missing required parameter in "
                     "the JSON body");
        return;
    }
    if (!parse_int(body, "amount", 100, &amount)) {
        schema_error(k, req, "amount", "The amount of kudos to transfer invalid literal for int()");
        return;
    }
    if (source.id == 0) {
        fail(k, req, 400, "KudosTransferFromAnon",
             "You cannot transfer Kudos from Anonymous, smart-ass.");
        return;
    }
    if (!find_by_username(k, username, &target)) {
        fail(k, req, 400, "InvalidTargetUsername", "Invalid target username.");
        return;
    }
    if (target.id == 0) {
        fail(k, req, 400, "KudosTransferToAnon",
             "Tried to burn kudos via sending to Anonymous. Assuming PEBKAC and aborting.");
        return;
    }
    if (target.id == source.id) {
        fail(k, req, 400, "KudosTransferToSelf", "Cannot send kudos to yourself, ya monkey!");
        return;
    }
    const char *key = api->req_header(req, "Idempotency-Key");
    if (key && (!*key || strlen(key) > MAX_IDEMPOTENCY_KEY)) {
        fail(k, req, 400, "BadRequest", "Idempotency-Key must be 1 to 255 characters.");
        return;
    }
    kd_transfer t = {{source.id, source.roles}, {target.id, target.roles}, amount, key};
    bool replayed;
    if (kd_op_transfer(&k->ledger, &t, (int64_t)time(NULL), &replayed, &err) != HN_OK) {
        api->respond_error(req, &err);
        return;
    }
    api->respond_json(req, 200, json_pack("{s:I}", "transferred", (json_int_t)amount));
}

/* ---- POST /api/v2/kudos/award ----------------------------------------------------------------- */

static void route_award(hn_request *req, void *state) {
    kudos *k = state;
    const hn_api *api = k->api;
    hn_error err = {0};
    if (!ready(k, req))
        return;
    json_t *body = api->req_json(req, &err);
    if (!body) {
        api->respond_error(req, &err);
        return;
    }
    hn_user who, target;
    if (!authenticate(k, req, "The sending user's API key.", &who))
        return;
    const char *username = json_string_value(json_object_get(body, "username"));
    long long amount;
    if (!username) {
        schema_error(k, req, "username",
                     "The user ID which will receive the kudos. Missing required parameter in "
                     "the JSON body");
        return;
    }
    if (!parse_int(body, "amount", 100, &amount)) {
        schema_error(k, req, "amount", "The amount of kudos to award. invalid literal for int()");
        return;
    }
    if (who.id != k->conf->award_user_id) {
        fail(k, req, 403, "NotAllowedAwards",
             "Only special people can award kudos. Now you're very special as well, just not the "
             "right kind.");
        return;
    }
    if (!find_by_username(k, username, &target)) {
        fail(k, req, 400, "InvalidAwardUsername", "Invalid target username.");
        return;
    }
    if (target.id == 0) {
        fail(k, req, 400, "KudosAwardToAnon", "Cannot award anon. No go.");
        return;
    }
    if (target.roles & HN_ROLE_FLAGGED) {
        /* the horde answers this with a malformed 200; a 400 says what happened */
        fail(k, req, 400, "TargetAccountFlagged", "Target user is rejected.");
        return;
    }
    kd_account after;
    if (kd_op_grant(&k->ledger, target.id, (double)amount, "award", "awarded", (int64_t)time(NULL),
                    &after, &err) != HN_OK) {
        api->respond_error(req, &err);
        return;
    }
    api->respond_json(req, 200, json_pack("{s:I}", "awarded", (json_int_t)amount));
}

/* ---- PUT /api/v2/users/{id}: the admin `kudos` field ---------------------------------------------- */

static void route_user_put(hn_request *req, void *state) {
    kudos *k = state;
    const hn_api *api = k->api;
    hn_error err = {0};
    if (!ready(k, req))
        return;
    const char *param = api->req_param(req, "id");
    bool digits = param && *param && strlen(param) <= 18;
    for (const char *p = param; digits && *p; p++)
        digits = *p >= '0' && *p <= '9';
    if (!digits) {
        fail(k, req, 404, "UserNotFound",
             "Please use only the numerical part of the userID. E.g. the '1' in 'db0#1'");
        return;
    }
    hn_user target, who;
    if (!kd_lookup_user(k, strtoll(param, NULL, 10), &target)) {
        char msg[96];
        snprintf(msg, sizeof(msg), "User with ID '%s' not found.", param);
        fail(k, req, 404, "UserNotFound", msg);
        return;
    }
    json_t *body = api->req_json(req, &err);
    if (!body) {
        api->respond_error(req, &err);
        return;
    }
    if (!authenticate(k, req, "The Admin or Owner API key.", &who))
        return;
    if (!json_object_get(body, "kudos") || json_is_null(json_object_get(body, "kudos"))) {
        fail(k, req, 400, "NoUserModSelected", "No usermod operations selected!");
        return;
    }
    long long delta;
    if (!parse_int(body, "kudos", 0, &delta)) {
        schema_error(k, req, "kudos",
                     "The amount of kudos to modify (can be negative) invalid literal for int()");
        return;
    }
    if (!(who.roles & HN_ROLE_ADMIN)) {
        fail(k, req, 403, "NotAdmin", "You're not an admin. Sneaky.");
        return;
    }
    kd_account after;
    if (kd_op_grant(&k->ledger, target.id, (double)delta, "admin", "admin", (int64_t)time(NULL),
                    &after, &err) != HN_OK) {
        api->respond_error(req, &err);
        return;
    }
    api->respond_json(req, 200, json_pack("{s:f}", "new_kudos", (double)after.balance / 100.0));
}

int kd_routes_register(kudos *k) {
    int bad = 0;
    bad |= k->api->route_add(k->self, HN_POST, "/api/v2/kudos/transfer", route_transfer, k);
    bad |= k->api->route_add(k->self, HN_POST, "/api/v2/kudos/award", route_award, k);
    if (k->conf->users_put_route)
        bad |= k->api->route_add(k->self, HN_PUT, "/api/v2/users/{id}", route_user_put, k);
    return bad ? -1 : 0;
}
