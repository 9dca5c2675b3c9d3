/* kudos: POST /api/v2/kudos/transfer (§3.6), POST /api/v2/kudos/award, and
 * the admin `kudos` field of PUT /api/v2/users/{id} (hook user_update; auth serves the route).
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

/* What a transfer needs to know of a user (fields past ABI 1.2 only where
 * the filler of `u` knew them). */
static kd_party party_of(const hn_user *u) {
    return (kd_party){.id = u->id,
                      .roles = u->roles,
                      .suspicious = hn_user_suspicious(u),
                      .deleted = HN_USER_HAS(u, deleted) && u->deleted};
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

/* Not a user: maybe a shared key (§3.6), whose owner receives (hook
 * sharedkey_owner, the broker's). 1 found, 0 no such key, -1 with err (an
 * expired key: 400 with the hook's rc, as every transfer refusal). */
static int find_by_shared_key(kudos *k, const char *key, hn_user *out, hn_error *err) {
    int64_t owner = 0;
    char name[256];
    hn_rc rc = hn_run_sharedkey_owner(k->api, key, true, &owner, name, sizeof(name), err);
    if (rc == HN_ERROR) {
        err->status = 400;
        return -1;
    }
    return rc == HN_OK && kd_lookup_user(k, owner, out) ? 1 : 0;
}

static bool ready(kudos *k, hn_request *req) {
    if (k->started)
        return true;
    fail(k, req, 503, "ServiceUnavailable", "The kudos ledger is not ready.");
    return false;
}

/* The arguments of a transfer or an award: the sender (the apikey), the
 * receiver's `username` and the `amount` (default 100). */
typedef struct kudos_move {
    hn_user sender;
    const char *username; /* borrowed from the request's body */
    long long amount;
} kudos_move;

/* Reads a kudos_move in the horde's order (ledger ready, JSON body, apikey,
 * username, amount); false when answered. username_why and amount_why end the
 * schema messages: the horde words them differently per route. */
static bool read_move(kudos *k, hn_request *req, const char *username_why,
                      const char *amount_why, kudos_move *out) {
    hn_error err = {0};
    if (!ready(k, req))
        return false;
    json_t *body = k->api->req_json(req, &err);
    if (!body) {
        k->api->respond_error(req, &err);
        return false;
    }
    if (!authenticate(k, req, "The sending user's API key.", &out->sender))
        return false;
    out->username = json_string_value(json_object_get(body, "username"));
    if (!out->username) {
        schema_error(k, req, "username", username_why);
        return false;
    }
    if (!parse_int(body, "amount", 100, &out->amount)) {
        schema_error(k, req, "amount", amount_why);
        return false;
    }
    return true;
}

/* ---- POST /api/v2/kudos/transfer -------------------------------------------------------------- */

static void route_transfer(hn_request *req, void *state) {
    kudos *k = state;
    const hn_api *api = k->api;
    hn_error err = {0};
    kudos_move move;
    if (!read_move(k, req,
                   "The user ID which will receive the kudos Missing required parameter in the "
                   "JSON body",
                   "The amount of kudos to transfer invalid literal for int()", &move))
        return;
    const hn_user *source = &move.sender;
    const char *username = move.username;
    long long amount = move.amount;
    hn_user target;
    bool to_shared_key = false; /* the target was named by a shared key */
    if (source->id == 0) {
        fail(k, req, 400, "KudosTransferFromAnon",
             "You cannot transfer Kudos from Anonymous, smart-ass.");
        return;
    }
    if (!find_by_username(k, username, &target)) {
        to_shared_key = true;
        int found = find_by_shared_key(k, username, &target, &err);
        if (found < 0) {
            api->respond_error(req, &err);
            return;
        }
        if (found == 0) {
            fail(k, req, 400, "InvalidTargetUsername", "Invalid target username.");
            return;
        }
    }
    if (target.id == 0) {
        fail(k, req, 400, "KudosTransferToAnon",
             "Tried to burn kudos via sending to Anonymous. Assuming PEBKAC and aborting.");
        return;
    }
    if (target.id == source->id) {
        fail(k, req, 400, "KudosTransferToSelf", "Cannot send kudos to yourself, ya monkey!");
        return;
    }
    const char *key = api->req_header(req, "Idempotency-Key");
    if (key && (!*key || strlen(key) > MAX_IDEMPOTENCY_KEY)) {
        fail(k, req, 400, "BadRequest", "Idempotency-Key must be 1 to 255 characters.");
        return;
    }
    kd_transfer t = {party_of(source), party_of(&target), amount, key};
    bool replayed;
    if (kd_op_transfer(&k->ledger, &t, (int64_t)time(NULL), &replayed, &err) != HN_OK) {
        api->respond_error(req, &err);
        return;
    }
    /* §3.6: a shared key named as the target also gets the kudos in its own
     * budget (not on an idempotent replay: the first answer did that) */
    if (to_shared_key && !replayed) {
        hn_error kerr = {0};
        if (hn_run_sharedkey_credit(api, username, (double)amount, &kerr) == HN_ERROR)
            api->log(k->self, HN_LOG_WARN, "transfer to shared key: budget not raised: %s",
                     kerr.message);
    }
    api->respond_json(req, 200, json_pack("{s:I}", "transferred", (json_int_t)amount));
}

/* ---- POST /api/v2/kudos/award ----------------------------------------------------------------- */

static void route_award(hn_request *req, void *state) {
    kudos *k = state;
    const hn_api *api = k->api;
    hn_error err = {0};
    kudos_move move;
    if (!read_move(k, req,
                   "The user ID which will receive the kudos. Missing required parameter in the "
                   "JSON body",
                   "The amount of kudos to award. invalid literal for int()", &move))
        return;
    const char *username = move.username;
    long long amount = move.amount;
    hn_user target;
    if (move.sender.id != k->conf->award_user_id) {
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

/* ---- PUT /api/v2/users/{id}: the admin `kudos` field (hook user_update) ----------------------- */

/* auth serves the route and checks the body's shape (kudos: an integer);
 * this handler applies the field the kudos plugin owns. */
static hn_rc user_update(void *state, const hn_user *actor, int64_t user_id, const json_t *changes,
                         json_t *result, hn_error *err) {
    kudos *k = state;
    const json_t *v = json_object_get(changes, "kudos");
    if (!v || json_is_null(v))
        return HN_OK;
    if (!(actor->roles & HN_ROLE_ADMIN))
        return k->api->error(err, 403, "NotAdmin", "You're not an admin. Sneaky.");
    long long delta;
    if (!parse_int(changes, "kudos", 0, &delta))
        return k->api->error(err, 400, "BadRequest",
                             "The amount of kudos to modify (can be negative): invalid integer");
    if (!k->started)
        return k->api->error(err, 503, "ServiceUnavailable", "The kudos ledger is not ready.");
    kd_account after;
    if (kd_op_grant(&k->ledger, user_id, (double)delta, "admin", "admin", (int64_t)time(NULL),
                    &after, err) != HN_OK)
        return HN_ERROR;
    json_object_set_new(result, "new_kudos", json_real((double)after.balance / 100.0));
    return HN_OK;
}

int kd_routes_register(kudos *k) {
    int bad = 0;
    bad |= k->api->route_add(k->self, HN_POST, "/api/v2/kudos/transfer", route_transfer, k);
    bad |= k->api->route_add(k->self, HN_POST, "/api/v2/kudos/award", route_award, k);
    /* after auth's fields (auth registers first): see hooks.def user_update */
    bad |= hn_hook_add_user_update(k->api, k->self, user_update, k, NULL);
    return bad ? -1 : 0;
}
