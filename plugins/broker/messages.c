/* broker: messages to workers (§2). GET|POST /api/v2/workers/messages,
 * GET|DELETE /api/v2/workers/messages/{id}. A moderator may write to any
 * worker or, without worker_id, to every worker; others only to their own
 * workers (403 MessagesOnlyOwnWorkers). Active messages (the worker's own and
 * the global ones) are attached to every pop answer ("messages"). Expired
 * messages are no longer shown and are dropped the next time one is written. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accounts.h"

#define MSG_MAX_CHARS 10240
#define MSG_DEFAULT_EXPIRY_H 12

static long utf8_len(const char *s) {
    long n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        n += (*p & 0xc0) != 0x80;
    return n;
}

static json_t *message_json(const br_wmsg *m) {
    char expiry[64], created[64];
    br_rfc822(m->expiry_ms, expiry, sizeof(expiry));
    br_rfc822(m->created_ms, created, sizeof(created));
    return json_pack("{s:s, s:o, s:I, s:s, s:s, s:s, s:s}", "id", m->id, "worker_id",
                     m->worker_id[0] ? json_string(m->worker_id) : json_null(), "user_id",
                     (json_int_t)m->user_id, "message", m->message, "origin", m->origin, "expiry",
                     expiry, "created", created);
}

json_t *br_worker_messages_json(broker *b, const br_worker *w, int64_t now_ms) {
    json_t *out = json_array();
    if (!b->acc)
        return out;
    size_t i = 0;
    void *v;
    while (br_map_next(&b->acc->messages, &i, NULL, &v)) {
        const br_wmsg *m = v;
        if (m->expiry_ms <= now_ms || (m->worker_id[0] && strcmp(m->worker_id, w->id) != 0))
            continue;
        char expiry[64];
        br_rfc822(m->expiry_ms, expiry, sizeof(expiry));
        json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:s}", "id", m->id, "message",
                                             m->message, "origin", m->origin, "expiry", expiry));
    }
    return out;
}

/* May u see message m? Moderators: all; others: those of their own workers. */
static bool may_see(broker *b, const hn_user *u, const br_wmsg *m) {
    if (br_is_mod(u))
        return true;
    const br_worker *w = m->worker_id[0] ? br_worker_find(b, m->worker_id) : NULL;
    return w && w->user_id == u->id;
}

/* Drops expired messages (b->lock held). */
static void prune(broker *b, br_op *op, int64_t now_ms) {
    for (;;) {
        size_t i = 0;
        void *v;
        br_wmsg *dead = NULL;
        while (br_map_next(&b->acc->messages, &i, NULL, &v)) {
            br_wmsg *m = v;
            if (m->expiry_ms <= now_ms) {
                dead = m;
                break;
            }
        }
        if (!dead)
            return;
        br_map_del(&b->acc->messages, dead->id);
        br_acc_store_message_delete(op, dead->id);
        br_wmsg_free(dead);
    }
}

static void messages_post(broker *b, hn_request *req, const hn_user *u) {
    hn_error err;
    json_t *body = b->api->req_json(req, &err);
    if (!body) {
        b->api->respond_error(req, &err);
        return;
    }
    const json_t *jm = json_object_get(body, "message");
    const json_t *jo = json_object_get(body, "origin");
    const json_t *je = json_object_get(body, "expiry");
    const json_t *jw = json_object_get(body, "worker_id");
    const char *bad = NULL, *why = NULL;
    if (!json_is_string(jm) || utf8_len(json_string_value(jm)) < 1 ||
        utf8_len(json_string_value(jm)) > MSG_MAX_CHARS)
        bad = "message", why = "'message' is required: a string of 1 to 10240 characters";
    else if (jo && !json_is_null(jo) && !json_is_string(jo))
        bad = "origin", why = "value is not of type 'string'";
    else if (je && !json_is_null(je) && (!json_is_integer(je) || json_integer_value(je) < 1))
        bad = "expiry", why = "an integer of hours, at least 1";
    else if (jw && !json_is_null(jw) && !json_is_string(jw))
        bad = "worker_id", why = "value is not of type 'string'";
    if (bad) {
        br_respond_schema_errors(b, req, json_pack("{s:s}", bad, why));
        return;
    }
    char wid[BR_ID_LEN] = "";
    const char *raw_w = json_string_value(jw);
    if (raw_w && !br_uuid_parse(raw_w, wid)) {
        br_fail(b, req, 404, "WorkerNotFound", "Worker with ID '%.100s' not found.", raw_w);
        return;
    }
    long long hours = je && json_is_integer(je) ? json_integer_value(je) : MSG_DEFAULT_EXPIRY_H;
    if (hours > BR_MSG_MAX_EXPIRY_H)
        hours = BR_MSG_MAX_EXPIRY_H;
    br_wmsg *m = calloc(1, sizeof(*m));
    br_op *op = br_op_new(b);
    if (m) {
        m->message = strdup(json_string_value(jm));
        m->origin = strdup(json_is_string(jo) ? json_string_value(jo) : "");
    }
    if (!m || !m->message || !m->origin || !op) {
        br_wmsg_free(m);
        br_op_discard(op);
        br_fail(b, req, 500, "InternalServerError", "out of memory");
        return;
    }
    br_uuid4(m->id);
    snprintf(m->worker_id, sizeof(m->worker_id), "%s", wid);
    m->user_id = u->id;
    m->created_ms = br_now_ms();
    m->expiry_ms = m->created_ms + hours * 3600 * 1000;
    pthread_mutex_lock(&b->lock);
    const br_worker *w = wid[0] ? br_worker_find(b, wid) : NULL;
    const char *rc = NULL;
    int status = 0;
    if (wid[0] && !w)
        status = 404, rc = "WorkerNotFound";
    else if (!br_is_mod(u) && (!w || w->user_id != u->id))
        status = 403, rc = "MessagesOnlyOwnWorkers";
    if (rc) {
        pthread_mutex_unlock(&b->lock);
        br_wmsg_free(m);
        br_op_discard(op);
        if (status == 404)
            br_fail(b, req, 404, rc, "Worker with ID '%s' not found.", wid);
        else
            br_fail(b, req, 403, rc, "You can only send messages to your own workers.");
        return;
    }
    prune(b, op, m->created_ms);
    br_map_put(&b->acc->messages, m->id, m);
    br_acc_store_message(op, m);
    br_acc_commit(b, op, req, 200, message_json(m));
    pthread_mutex_unlock(&b->lock);
}

void br_route_worker_messages(hn_request *req, void *state) {
    broker *b = state;
    if (!br_ready(b, req))
        return;
    hn_user u;
    if (!br_require_user(b, req, "A moderator or worker owner API key.", &u))
        return;
    if (b->api->req_method(req) == HN_POST) {
        messages_post(b, req, &u);
        return;
    }
    const char *raw_w = b->api->req_query(req, "worker_id");
    char wid[BR_ID_LEN] = "";
    if (raw_w && !br_uuid_parse(raw_w, wid)) {
        br_fail(b, req, 404, "WorkerNotFound", "Worker with ID '%.100s' not found.", raw_w);
        return;
    }
    int64_t now = br_now_ms();
    pthread_mutex_lock(&b->lock);
    if (wid[0]) {
        const br_worker *w = br_worker_find(b, wid);
        if (!w || (!br_is_mod(&u) && w->user_id != u.id)) {
            pthread_mutex_unlock(&b->lock);
            if (!w)
                br_fail(b, req, 404, "WorkerNotFound", "Worker with ID '%s' not found.", wid);
            else
                br_fail(b, req, 403, "MessagesOnlyOwnWorkers",
                        "You can only see messages of your own workers.");
            return;
        }
    }
    json_t *out = json_array();
    size_t i = 0;
    void *v;
    while (br_map_next(&b->acc->messages, &i, NULL, &v)) {
        const br_wmsg *m = v;
        if (m->expiry_ms <= now || !may_see(b, &u, m))
            continue;
        if (wid[0] && strcmp(m->worker_id, wid) != 0)
            continue;
        json_array_append_new(out, message_json(m));
    }
    pthread_mutex_unlock(&b->lock);
    b->api->respond_json(req, 200, out);
}

void br_route_worker_message_single(hn_request *req, void *state) {
    broker *b = state;
    if (!br_ready(b, req))
        return;
    hn_user u;
    if (!br_require_user(b, req, "A moderator or worker owner API key.", &u))
        return;
    const char *raw = b->api->req_param(req, "id");
    char id[BR_ID_LEN];
    bool valid = br_uuid_parse(raw, id);
    br_op *op = NULL;
    pthread_mutex_lock(&b->lock);
    br_wmsg *m = valid ? br_map_get(&b->acc->messages, id) : NULL;
    if (!m) {
        pthread_mutex_unlock(&b->lock);
        br_fail(b, req, 404, "WorkermessageNotFound", "Workermessage with ID '%.100s' not found.",
                raw ? raw : "");
        return;
    }
    if (!may_see(b, &u, m)) {
        pthread_mutex_unlock(&b->lock);
        br_fail(b, req, 403, "MessagesOnlyOwnWorkers",
                "You can only see messages of your own workers.");
        return;
    }
    if (b->api->req_method(req) == HN_GET) {
        json_t *j = message_json(m);
        pthread_mutex_unlock(&b->lock);
        b->api->respond_json(req, 200, j);
        return;
    }
    op = br_op_new(b);
    if (!op) {
        pthread_mutex_unlock(&b->lock);
        br_fail(b, req, 500, "InternalServerError", "out of memory");
        return;
    }
    br_map_del(&b->acc->messages, m->id);
    br_acc_store_message_delete(op, m->id);
    br_wmsg_free(m);
    br_acc_commit(b, op, req, 200, json_pack("{s:s}", "message", "OK"));
    pthread_mutex_unlock(&b->lock);
}
