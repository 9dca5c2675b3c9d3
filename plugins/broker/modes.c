/* broker: horde modes, GET|PUT /api/v2/status/modes (§2, §5).
 *   maintenance_mode  (admin)  new requests 400 MaintenanceMode; entering it
 *                              sets n = 0 on every waiting request
 *   invite_only_mode  (mod)    a user may add a worker only while it has fewer
 *                              than `worker_invited` (403 WorkerInviteOnly)
 *   raid_mode         (mod)    a worker is flagged after 10 aborts an hour
 *                              instead of abort_limit_per_hour, and is not
 *                              put in maintenance for it
 * The flags persist (table broker_modes); the config's maintenance_mode is
 * the default until someone sets the flag. */
#include <string.h>

#include "accounts.h"

bool br_mode_maintenance(broker *b) {
    if (!b->acc)
        return b->conf->maintenance_mode;
    pthread_mutex_lock(&b->lock);
    bool on = b->acc->maintenance;
    pthread_mutex_unlock(&b->lock);
    return on;
}

bool br_mode_invite_only(broker *b) {
    return b->acc && b->acc->invite_only;
}

long long br_abort_limit(broker *b) {
    return b->acc && b->acc->raid ? BR_RAID_ABORT_LIMIT : b->conf->abort_limit_per_hour;
}

int64_t br_invite_allowance(broker *b, const hn_user *user, const char *worker_name) {
    if (!b->acc)
        return -1;
    pthread_mutex_lock(&b->lock);
    int64_t invited = -1;
    if (b->acc->invite_only && !br_worker_find_name(b, worker_name)) {
        const br_invite *inv = br_acc_invite(b, user->id, false);
        invited = inv ? inv->invited : 0;
    }
    pthread_mutex_unlock(&b->lock);
    return invited;
}

static void modes_get(broker *b, hn_request *req) {
    bool show_raid = false;
    if (b->api->req_header(req, "apikey")) {
        hn_user u;
        hn_error err;
        if (br_authenticate(b, req, &u, &err) != HN_OK) {
            b->api->respond_error(req, &err);
            return;
        }
        if (!br_is_mod(&u)) {
            br_fail(b, req, 403, "NotModerator", "You're not a mod. BTFO!");
            return;
        }
        show_raid = true;
    }
    pthread_mutex_lock(&b->lock);
    json_t *o = json_pack("{s:b, s:b}", "maintenance_mode", b->acc->maintenance,
                          "invite_only_mode", b->acc->invite_only);
    if (show_raid)
        json_object_set_new(o, "raid_mode", json_boolean(b->acc->raid));
    pthread_mutex_unlock(&b->lock);
    b->api->respond_json(req, 200, o);
}

/* Entering maintenance: nothing more is handed out (the horde sets n = 0 on
 * every active request; what is being generated still finishes). */
static void stop_waiting_requests(broker *b, br_op *op) {
    size_t i = 0;
    void *v;
    while (br_map_next(&b->requests, &i, NULL, &v)) {
        br_request *r = v;
        if (r->state != BR_REQ_ACTIVE || r->n <= 0)
            continue;
        r->n = 0;
        br_request_requeue(b, r);
        br_store_request_update(op, r);
    }
}

static void modes_put(broker *b, hn_request *req) {
    hn_error err;
    json_t *body = b->api->req_json(req, &err);
    if (!body) {
        b->api->respond_error(req, &err);
        return;
    }
    static const char *const fields[] = {"maintenance_mode", "invite_only_mode", "raid_mode"};
    for (size_t i = 0; i < 3; i++) {
        const json_t *v = json_object_get(body, fields[i]);
        if (v && !json_is_null(v) && !json_is_boolean(v)) {
            br_respond_schema_errors(b, req,
                                     json_pack("{s:s}", fields[i], "value is not of type 'boolean'"));
            return;
        }
    }
    hn_user u;
    if (!br_require_user(b, req, "The Moderator or Admin API key.", &u))
        return;
    const json_t *maint = json_object_get(body, "maintenance_mode");
    const json_t *invite = json_object_get(body, "invite_only_mode");
    const json_t *raid = json_object_get(body, "raid_mode");
    maint = json_is_boolean(maint) ? maint : NULL;
    invite = json_is_boolean(invite) ? invite : NULL;
    raid = json_is_boolean(raid) ? raid : NULL;
    if (maint && !(u.roles & HN_ROLE_ADMIN)) {
        br_fail(b, req, 403, "NotAdmin", "You're not an admin. Sneaky.");
        return;
    }
    if ((invite || raid) && !br_is_mod(&u)) {
        br_fail(b, req, 403, "NotModerator", "You're not a mod. BTFO!");
        return;
    }
    if (!maint && !invite && !raid) {
        br_fail(b, req, 400, "NoHordeModSelected", "No horde mod selected!");
        return;
    }
    br_op *op = br_op_new(b);
    if (!op) {
        br_fail(b, req, 500, "InternalServerError", "out of memory");
        return;
    }
    json_t *out = json_object();
    pthread_mutex_lock(&b->lock);
    if (maint) {
        bool on = json_is_true(maint);
        if (on && !b->acc->maintenance)
            stop_waiting_requests(b, op);
        b->acc->maintenance = on;
        br_acc_store_mode(op, "maintenance", on);
        json_object_set_new(out, "maintenance_mode", json_boolean(on));
    }
    if (invite) {
        b->acc->invite_only = json_is_true(invite);
        br_acc_store_mode(op, "invite_only", b->acc->invite_only);
        json_object_set_new(out, "invite_only_mode", json_boolean(b->acc->invite_only));
    }
    if (raid) {
        b->acc->raid = json_is_true(raid);
        br_acc_store_mode(op, "raid", b->acc->raid);
        json_object_set_new(out, "raid_mode", json_boolean(b->acc->raid));
    }
    br_acc_commit(b, op, req, 200, out);
    pthread_mutex_unlock(&b->lock);
}

void br_route_modes(hn_request *req, void *state) {
    broker *b = state;
    if (!br_ready(b, req))
        return;
    if (b->api->req_method(req) == HN_PUT)
        modes_put(b, req);
    else
        modes_get(b, req);
}
