/* broker: shared keys (§2, §5). PUT /api/v2/sharedkeys, GET|PATCH|DELETE
 * /api/v2/sharedkeys/{id}. A shared key is a UUID its owner hands out: sent
 * as the `apikey` of POST /generate/async it acts as its owner (who pays),
 * within the key's limits: kudos (what requests through it may cost in all;
 * -1 unlimited), expiry, max_image_pixels and max_image_steps (-1 unlimited).
 * It is accepted on generate only: elsewhere a shared key is not a user's key.
 *
 * Rcs: expired 403 SharedKeyExpired, used up 403 SharedKeyEmpty, a request
 * costing more than what is left 403 SharedKeyInsufficientKudos, over the
 * pixel/step limits 400 BadRequest (the horde's class; its text names the
 * limit). The request's whole estimated cost (price x images) is counted when
 * it is accepted. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accounts.h"

static json_t *skey_json(const br_skey *k) {
    json_t *expiry = json_null();
    if (k->expiry_ms > 0) {
        char d[64];
        br_rfc822(k->expiry_ms, d, sizeof(d));
        expiry = json_string(d);
    }
    return json_pack("{s:s, s:s, s:s, s:I, s:o, s:f, s:I, s:I, s:I}", "id", k->id, "username",
                     k->username, "name", k->name, "kudos", (json_int_t)k->kudos, "expiry", expiry,
                     "utilized", br_round(k->utilized, 2), "max_image_pixels",
                     (json_int_t)k->max_image_pixels, "max_image_steps",
                     (json_int_t)k->max_image_steps, "max_text_tokens",
                     (json_int_t)k->max_text_tokens);
}

static long long clamp(long long v, long long lo, long long hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

/* The fields of a PUT/PATCH body. Types are checked (400 schema errors); the
 * ranges are clamped, the horde does not validate them. Returns the number of
 * fields present, or -1 after answering. */
static int read_fields(broker *b, hn_request *req, const json_t *body, br_skey *k,
                       char **name_out) {
    static const struct {
        const char *key;
        long long lo, hi;
    } ints[] = {{"kudos", -1, 50000000},
                {"expiry", -1, 1000000},
                {"max_image_pixels", -1, 4194304},
                {"max_image_steps", -1, 500},
                {"max_text_tokens", -1, 500}};
    int n = 0;
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        const json_t *v = json_object_get(body, ints[i].key);
        if (!v || json_is_null(v))
            continue;
        if (!json_is_integer(v)) {
            br_respond_schema_errors(b, req,
                                     json_pack("{s:s}", ints[i].key, "value is not of type 'integer'"));
            return -1;
        }
        long long x = clamp(json_integer_value(v), ints[i].lo, ints[i].hi);
        n++;
        switch (i) {
        case 0: k->kudos = x; break;
        case 1: k->expiry_ms = x < 0 ? 0 : br_now_ms() + x * 86400 * 1000; break;
        case 2: k->max_image_pixels = x; break;
        case 3: k->max_image_steps = x; break;
        default: k->max_text_tokens = x; break;
        }
    }
    const json_t *name = json_object_get(body, "name");
    if (name && !json_is_null(name)) {
        size_t len = json_is_string(name) ? strlen(json_string_value(name)) : 0;
        if (!json_is_string(name) || len < 3 || len > 255) {
            br_respond_schema_errors(b, req,
                                     json_pack("{s:s}", "name", "a string of 3 to 255 characters"));
            return -1;
        }
        *name_out = strdup(json_string_value(name));
        n++;
    }
    return n;
}

static int keys_of(broker *b, int64_t user_id) {
    int n = 0;
    size_t i = 0;
    void *v;
    while (br_map_next(&b->acc->skeys, &i, NULL, &v))
        n += ((br_skey *)v)->user_id == user_id;
    return n;
}

static void skeys_put(broker *b, hn_request *req) {
    hn_error err;
    json_t *body = b->api->req_json(req, &err);
    if (!body) {
        b->api->respond_error(req, &err);
        return;
    }
    br_skey *k = calloc(1, sizeof(*k));
    if (!k) {
        br_fail(b, req, 500, "InternalServerError", "out of memory");
        return;
    }
    k->kudos = 5000;
    k->max_image_pixels = k->max_image_steps = k->max_text_tokens = -1;
    char *name = NULL;
    if (read_fields(b, req, body, k, &name) < 0) {
        free(name);
        br_skey_free(k);
        return;
    }
    k->name = name ? name : strdup("");
    hn_user u;
    if (!k->name || !br_require_user(b, req, "The API key of the key's owner.", &u)) {
        if (!k->name)
            br_fail(b, req, 500, "InternalServerError", "out of memory");
        br_skey_free(k);
        return;
    }
    if (u.id == 0) {
        br_skey_free(k);
        br_fail(b, req, 403, "AnonForbidden", "Anonymous users cannot create shared keys.");
        return;
    }
    br_op *op = br_op_new(b);
    if (!op) {
        br_skey_free(k);
        br_fail(b, req, 500, "InternalServerError", "out of memory");
        return;
    }
    br_uuid4(k->id);
    k->user_id = u.id;
    snprintf(k->username, sizeof(k->username), "%s", u.username);
    int max = (u.roles & HN_ROLE_EDUCATION)                                   ? BR_SKEY_MAX_EDUCATION
              : (u.roles & (HN_ROLE_TRUSTED | HN_ROLE_MODERATOR | HN_ROLE_ADMIN)) ? BR_SKEY_MAX_TRUSTED
                                                                              : BR_SKEY_MAX_DEFAULT;
    pthread_mutex_lock(&b->lock);
    if (keys_of(b, u.id) >= max) {
        pthread_mutex_unlock(&b->lock);
        br_op_discard(op);
        br_skey_free(k);
        br_fail(b, req, 403, "Forbidden", "You cannot have more than %d shared keys.", max);
        return;
    }
    br_map_put(&b->acc->skeys, k->id, k);
    br_acc_store_skey(op, k);
    br_acc_commit(b, op, req, 200, skey_json(k));
    pthread_mutex_unlock(&b->lock);
}

void br_route_sharedkeys(hn_request *req, void *state) {
    broker *b = state;
    if (!br_ready(b, req))
        return;
    skeys_put(b, req);
}

static void invalid_skey(broker *b, hn_request *req) {
    br_fail(b, req, 401, "InvalidAPIKey", "No shared key matching the sent ID.");
}

void br_route_sharedkey_single(hn_request *req, void *state) {
    broker *b = state;
    const hn_api *api = b->api;
    if (!br_ready(b, req))
        return;
    unsigned method = api->req_method(req);
    char id[BR_ID_LEN];
    bool valid = br_uuid_parse(api->req_param(req, "id"), id);
    if (method == HN_GET) {
        pthread_mutex_lock(&b->lock);
        br_skey *k = valid ? br_map_get(&b->acc->skeys, id) : NULL;
        json_t *j = k ? skey_json(k) : NULL;
        pthread_mutex_unlock(&b->lock);
        if (!j)
            invalid_skey(b, req);
        else
            api->respond_json(req, 200, j);
        return;
    }
    json_t *body = NULL;
    br_skey patch = {.kudos = -2};
    patch.max_image_pixels = patch.max_image_steps = patch.max_text_tokens = -2;
    patch.expiry_ms = -2;
    char *name = NULL;
    int n_fields = 0;
    if (method == HN_PATCH) {
        hn_error err;
        body = api->req_json(req, &err);
        if (!body) {
            api->respond_error(req, &err);
            return;
        }
        n_fields = read_fields(b, req, body, &patch, &name);
        if (n_fields < 0)
            return;
    }
    hn_user u;
    if (!br_require_user(b, req, "The API key of the key's owner.", &u)) {
        free(name);
        return;
    }
    pthread_mutex_lock(&b->lock);
    br_skey *k = valid ? br_map_get(&b->acc->skeys, id) : NULL;
    const char *rc = !k ? "InvalidAPIKey" : k->user_id != u.id ? "NotOwner"
                     : (method == HN_PATCH && n_fields == 0) ? "NoSharedKeyModSelected" : NULL;
    br_op *op = rc ? NULL : br_op_new(b);
    if (rc || !op) {
        pthread_mutex_unlock(&b->lock);
        free(name);
        if (!rc)
            br_fail(b, req, 500, "InternalServerError", "out of memory");
        else if (!k)
            invalid_skey(b, req);
        else if (strcmp(rc, "NotOwner") == 0)
            br_fail(b, req, 403, rc, "You are not the owner of this shared key.");
        else
            br_fail(b, req, 400, rc, "No shared key modification selected!");
        return;
    }
    if (method == HN_DELETE) {
        br_map_del(&b->acc->skeys, k->id);
        br_acc_store_skey_delete(op, k->id);
        br_skey_free(k);
        br_acc_commit(b, op, req, 200, json_pack("{s:s}", "message", "OK"));
        pthread_mutex_unlock(&b->lock);
        return;
    }
    if (patch.kudos != -2)
        k->kudos = patch.kudos;
    if (patch.expiry_ms != -2)
        k->expiry_ms = patch.expiry_ms;
    if (patch.max_image_pixels != -2)
        k->max_image_pixels = patch.max_image_pixels;
    if (patch.max_image_steps != -2)
        k->max_image_steps = patch.max_image_steps;
    if (patch.max_text_tokens != -2)
        k->max_text_tokens = patch.max_text_tokens;
    if (name) {
        free(k->name);
        k->name = name;
    }
    br_acc_store_skey(op, k);
    br_acc_commit(b, op, req, 200, skey_json(k));
    pthread_mutex_unlock(&b->lock);
}

/* ---- hook sharedkey_owner ------------------------------------------------------------------ */

hn_rc br_hook_sharedkey_owner(void *state, const char *key, bool check_expiry, int64_t *user_id,
                              char *name, size_t name_size, hn_error *err) {
    broker *b = state;
    char id[BR_ID_LEN];
    if (!b->acc || !key || !br_uuid_parse(key, id))
        return HN_DECLINED;
    pthread_mutex_lock(&b->lock);
    br_skey *k = br_map_get(&b->acc->skeys, id);
    bool expired = k && k->expiry_ms > 0 && k->expiry_ms <= br_now_ms();
    if (k) {
        *user_id = k->user_id;
        if (name && name_size)
            snprintf(name, name_size, "%s", k->name);
    }
    pthread_mutex_unlock(&b->lock);
    if (!k)
        return HN_DECLINED;
    if (check_expiry && expired)
        return b->api->error(err, 403, "SharedKeyExpired", "This shared key has expired.");
    return HN_OK;
}

hn_rc br_hook_sharedkey_credit(void *state, const char *key, double amount, hn_error *err) {
    broker *b = state;
    char id[BR_ID_LEN];
    if (!b->acc || !key || !br_uuid_parse(key, id))
        return HN_DECLINED;
    pthread_mutex_lock(&b->lock);
    br_skey *k = br_map_get(&b->acc->skeys, id);
    if (!k) {
        pthread_mutex_unlock(&b->lock);
        return HN_DECLINED;
    }
    if (k->kudos < 0 || amount <= 0) { /* unlimited keys stay unlimited */
        pthread_mutex_unlock(&b->lock);
        return HN_OK;
    }
    br_op *op = br_op_new(b);
    if (!op) {
        pthread_mutex_unlock(&b->lock);
        return b->api->error(err, 500, "InternalServerError", "out of memory");
    }
    k->kudos += (int64_t)amount;
    br_acc_store_skey(op, k);
    br_op_submit(b, op); /* no request waits on it: the writer commits it in order */
    pthread_mutex_unlock(&b->lock);
    return HN_OK;
}

/* ---- on generate ------------------------------------------------------------------------- */

hn_rc br_sharedkey_authenticate(broker *b, hn_request *req, hn_user *user,
                                char skey_id[BR_ID_LEN], hn_error *err) {
    const char *key = b->api->req_header(req, "apikey");
    char id[BR_ID_LEN];
    if (!b->acc || !key || !br_uuid_parse(key, id))
        return HN_DECLINED;
    pthread_mutex_lock(&b->lock);
    br_skey *k = br_map_get(&b->acc->skeys, id);
    int64_t owner = k ? k->user_id : -1;
    bool expired = k && k->expiry_ms > 0 && k->expiry_ms <= br_now_ms();
    pthread_mutex_unlock(&b->lock);
    if (!k)
        return HN_DECLINED;
    if (expired)
        return b->api->error(err, 403, "SharedKeyExpired", "This shared key has expired.");
    memset(user, 0, sizeof(*user));
    user->size = sizeof(*user);
    hn_rc rc = hn_run_user_lookup(b->api, owner, user, err);
    if (rc != HN_OK)
        return b->api->error(err, 401, "InvalidAPIKey", "The owner of this shared key is gone.");
    memcpy(skey_id, id, BR_ID_LEN);
    return HN_OK;
}

hn_rc br_sharedkey_charge(broker *b, const char *skey_id, const br_req_spec *s, double cost,
                          hn_error *err) {
    hn_rc rc = HN_OK;
    br_op *op = br_op_new(b);
    if (!op)
        return b->api->error(err, 500, "InternalServerError", "out of memory");
    pthread_mutex_lock(&b->lock);
    br_skey *k = br_map_get(&b->acc->skeys, skey_id);
    if (!k)
        rc = b->api->error(err, 401, "InvalidAPIKey", "This shared key was deleted.");
    else if (k->max_image_pixels >= 0 && (int64_t)s->width * s->height > k->max_image_pixels)
        rc = b->api->error(err, 400, "BadRequest",
                           "This shared key does not allow images of more than %lld pixels.",
                           (long long)k->max_image_pixels);
    else if (k->max_image_steps >= 0 && s->steps > k->max_image_steps)
        rc = b->api->error(err, 400, "BadRequest",
                           "This shared key does not allow more than %lld steps.",
                           (long long)k->max_image_steps);
    else if (k->kudos >= 0 && k->utilized >= (double)k->kudos)
        rc = b->api->error(err, 403, "SharedKeyEmpty", "This shared key has no kudos left.");
    else if (k->kudos >= 0 && k->utilized + cost > (double)k->kudos)
        rc = b->api->error(err, 403, "SharedKeyInsufficientKudos",
                           "This shared key does not have enough kudos for this request.");
    if (rc == HN_OK) {
        k->utilized += cost;
        br_acc_store_skey(op, k);
        br_op_submit(b, op);
    } else {
        br_op_discard(op);
    }
    pthread_mutex_unlock(&b->lock);
    return rc;
}
