/* broker: DELETE /api/v2/workers/{id} (§2), and the broker's part of hook
 * user_update: a user's new roles or name reach the workers they own (trusted
 * and flagged in WorkerDetails, trusted-workers matching). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accounts.h"

/* Forgets worker w everywhere (b->lock held): jobs that ran on it keep no
 * pointer to it, its team membership and messages go. */
static void worker_forget(broker *b, br_worker *w, br_op *op) {
    size_t i = 0;
    void *v;
    while (br_map_next(&b->jobs, &i, NULL, &v)) {
        br_job *j = v;
        if (j->worker == w)
            j->worker = NULL;
    }
    br_map_del(&b->acc->worker_team, w->id);
    for (;;) {
        i = 0;
        br_wmsg *dead = NULL;
        while (br_map_next(&b->acc->messages, &i, NULL, &v)) {
            if (strcmp(((br_wmsg *)v)->worker_id, w->id) == 0) {
                dead = v;
                break;
            }
        }
        if (!dead)
            break;
        br_map_del(&b->acc->messages, dead->id);
        br_acc_store_message_delete(op, dead->id);
        br_wmsg_free(dead);
    }
    br_map_del(&b->workers, w->id);
    br_map_del(&b->workers_by_name, w->name);
    br_user *u = br_user_get(b, w->user_id, false);
    if (u && u->worker_count > 0)
        u->worker_count--;
    b->workers_ver++;
    hn_value a[] = {HN_V_TEXT(w->id)};
    br_op_sql(op, "DELETE FROM broker_worker_teams WHERE worker_id = ?", a, 1);
    br_op_sql(op, "DELETE FROM broker_workers WHERE id = ?", a, 1);
}

void br_route_worker_delete(hn_request *req, void *state) {
    broker *b = state;
    if (!br_ready(b, req))
        return;
    hn_user u;
    if (!br_require_user(b, req, "The Moderator or Owner API key.", &u))
        return;
    if (u.id == 0) {
        br_fail(b, req, 403, "AnonForbidden", "Anonymous users cannot delete workers.");
        return;
    }
    const char *raw = b->api->req_param(req, "id");
    char id[BR_ID_LEN];
    bool valid = br_uuid_parse(raw, id);
    br_op *op = br_op_new(b);
    if (!op) {
        br_fail(b, req, 500, "InternalServerError", "out of memory");
        return;
    }
    pthread_mutex_lock(&b->lock);
    br_worker *w = valid ? br_worker_find(b, id) : NULL;
    int status = 0;
    const char *rc = NULL;
    if (!w) {
        status = 404, rc = "WorkerNotFound";
    } else if (!br_is_mod(&u) && w->user_id != u.id) {
        status = 403, rc = "NotOwner";
    } else {
        for (br_job *j = b->inflight_head; j; j = j->inext) {
            if (j->worker == w) {
                status = 423, rc = "Locked";
                break;
            }
        }
    }
    if (rc) {
        pthread_mutex_unlock(&b->lock);
        br_op_discard(op);
        if (status == 404)
            br_fail(b, req, 404, rc, "Worker with ID '%.100s' not found.", raw ? raw : "");
        else if (status == 403)
            br_fail(b, req, 403, rc, "You're not the owner of this worker.");
        else
            br_fail(b, req, 423, rc,
                    "This worker has jobs in progress; try again once they are done.");
        return;
    }
    json_t *out = json_pack("{s:s, s:s}", "deleted_id", w->id, "deleted_name", w->name);
    worker_forget(b, w, op);
    br_worker_free(w);
    br_acc_commit(b, op, req, 200, out);
    pthread_mutex_unlock(&b->lock);
}

hn_rc br_hook_user_update(void *state, const hn_user *actor, int64_t user_id,
                          const json_t *changes, json_t *result, hn_error *err) {
    broker *b = state;
    (void)actor, (void)changes, (void)err;
    if (!b->started || !b->acc || json_object_size(result) == 0)
        return HN_OK;
    const json_t *inv = json_object_get(result, "worker_invited");
    if (json_is_integer(inv)) {
        /* mirrored for invite-only mode (modes.c); committed with the next batch */
        br_op *op = br_op_new(b);
        pthread_mutex_lock(&b->lock);
        br_invite *i = br_acc_invite(b, user_id, true);
        if (i)
            i->invited = json_integer_value(inv);
        if (op) {
            br_acc_store_invite(op, user_id, json_integer_value(inv));
            br_op_submit(b, op);
        }
        pthread_mutex_unlock(&b->lock);
    }
    hn_user u;
    hn_error lerr;
    memset(&u, 0, sizeof(u));
    u.size = sizeof(u);
    if (hn_run_user_lookup(b->api, user_id, &u, &lerr) != HN_OK)
        return HN_OK; /* nothing to refresh from */
    pthread_mutex_lock(&b->lock);
    size_t i = 0;
    void *v;
    bool changed = false;
    while (br_map_next(&b->workers, &i, NULL, &v)) {
        br_worker *w = v;
        if (w->user_id != user_id)
            continue;
        w->owner_roles = br_owner_bits(&u); /* roles and public_workers */
        snprintf(w->owner, sizeof(w->owner), "%s", u.username);
        w->dirty = true;
        changed = true;
    }
    if (changed)
        b->workers_ver++;
    pthread_mutex_unlock(&b->lock);
    return HN_OK;
}
