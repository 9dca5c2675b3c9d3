/* broker: GET /workers, /workers/{id}, /workers/name/{name} (§2 WorkerDetails). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "accounts.h"

json_t *br_worker_json(broker *b, const br_worker *w, int privilege, int64_t now_ms) {
    const br_worker_attrs *a = &w->a;
    char perf[64];
    snprintf(perf, sizeof(perf), "%.1f megapixelsteps per second", br_round(w->speed / 1e6, 1));
    json_t *models = json_array();
    for (int i = 0; i < a->n_models; i++)
        json_array_append_new(models, json_string(a->models[i]));
    bool img2img = a->allow_img2img && (a->caps & BR_CAPBIT(BR_CAP_IMG2IMG));
    bool painting = a->allow_painting &&
                    (a->caps & (BR_CAPBIT(BR_CAP_INPAINTING) | BR_CAPBIT(BR_CAP_PAINTING)));
    bool pp = a->allow_post_processing && (a->caps & BR_CAPBIT(BR_CAP_POST_PROCESSING));
    bool cn = a->allow_controlnet && (a->caps & BR_CAPBIT(BR_CAP_CONTROLNET));
    bool lora = a->allow_lora && (a->caps & BR_CAPBIT(BR_CAP_LORA));
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:I, s:I, s:f, s:{s:f, s:i}, s:s, s:i, s:I, s:b, s:s, s:b, s:b, s:b, "
        "s:{}, s:s, s:b, s:o, s:I, s:f, s:b, s:b, s:b, s:b, s:b, s:b}",
        "name", w->name, "id", w->id, "type", "image", "requests_fulfilled",
        (json_int_t)w->requests_fulfilled, "uncompleted_jobs", (json_int_t)w->uncompleted_jobs,
        "kudos_rewards", w->kudos_generated, "kudos_details", "generated", w->kudos_generated,
        "uptime", 0, "performance", perf, "threads", a->threads, "uptime",
        (json_int_t)w->uptime_s, "maintenance_mode", w->maintenance, "info",
        w->info ? w->info : "", "trusted", (w->owner_roles & HN_ROLE_TRUSTED) != 0, "flagged",
        (w->owner_roles & HN_ROLE_FLAGGED) != 0, "online", br_worker_online(b, w, now_ms),
        "team", "bridge_agent", a->bridge_agent ? a->bridge_agent : "unknown:0:unknown", "nsfw",
        a->nsfw, "models", models, "max_pixels", (json_int_t)a->max_pixels,
        "megapixelsteps_generated", br_round(w->mps_generated, 2), "img2img", img2img, "painting",
        painting, "post-processing", pp, "controlnet", cn, "sdxl_controlnet",
        a->allow_sdxl_controlnet && cn, "lora", lora);
    if (!o)
        return NULL;
    const br_team *team = br_worker_team(b, w);
    if (team)
        json_object_set_new(o, "team", json_pack("{s:s, s:s}", "id", team->id, "name", team->name));
    /* owner and messages: public when the owner set public_workers (§2) */
    if (privilege >= 1 || (w->owner_roles & BR_OWNER_PUBLIC_WORKERS)) {
        json_object_set_new(o, "owner", json_string(w->owner));
        json_object_set_new(o, "messages", br_worker_messages_json(b, w, now_ms));
    }
    if (privilege >= 1)
        json_object_set_new(o, "ipaddr", json_string(a->ipaddr ? a->ipaddr : ""));
    if (privilege >= 2) {
        json_object_set_new(o, "paused", json_boolean(w->paused));
        json_object_set_new(o, "suspicious", json_integer(w->suspicion));
    }
    return o;
}

/* Who a worker is, for hook worker_details (caller holds the lock). */
static json_t *worker_ident(broker *b, const br_worker *w) {
    if (!br_hooked(b, HN_HOOK_ID_worker_details))
        return NULL;
    return json_pack("{s:s, s:s, s:I}", "id", w->id, "name", w->name, "user_id",
                     (json_int_t)w->user_id);
}

/* Lets other plugins add to each details[i] (the kudos plugin: kudos_rewards
 * and kudos_details), outside the lock: handlers may read storage. */
static void run_worker_details(broker *b, const json_t *idents, json_t *details, int priv) {
    for (size_t i = 0; i < json_array_size(idents) && i < json_array_size(details); i++)
        hn_run_worker_details(b->api, json_array_get(idents, i), priv, json_array_get(details, i));
}

/* Privilege of the caller: 2 for moderators and admins, else 0 (the horde:
 * "only a mod raises privilege"). A bad key is simply no privilege. */
static int caller_privilege(broker *b, hn_request *req) {
    if (!b->api->req_header(req, "apikey"))
        return 0;
    hn_user u;
    hn_error err;
    if (br_authenticate(b, req, &u, &err) != HN_OK)
        return 0;
    return (u.roles & (HN_ROLE_MODERATOR | HN_ROLE_ADMIN)) ? 2 : 0;
}

void br_route_workers(hn_request *req, void *state) {
    broker *b = state;
    const hn_api *api = b->api;
    const char *type = api->req_query(req, "type");
    const char *name = api->req_query(req, "name");
    int priv = caller_privilege(b, req);
    json_t *out = json_array();
    if (type && strcmp(type, "image") != 0) {
        if (strcmp(type, "text") != 0 && strcmp(type, "interrogation") != 0) {
            json_decref(out);
            char msg[200];
            snprintf(msg, sizeof(msg), "The value '%.64s' is not a valid choice for 'type'.", type);
            br_respond_schema_errors(b, req, json_pack("{s:s}", "type", msg));
            return;
        }
        api->respond_json(req, 200, out);
        return;
    }
    int64_t now = br_now_ms();
    json_t *idents = json_array();
    if (b->started) {
        pthread_mutex_lock(&b->lock);
        size_t i = 0;
        void *v;
        while (br_map_next(&b->workers, &i, NULL, &v)) {
            br_worker *w = v;
            if (!br_worker_online(b, w, now))
                continue;
            if (name && strcasecmp(name, w->name) != 0)
                continue;
            json_t *j = br_worker_json(b, w, priv, now);
            json_t *ident = j ? worker_ident(b, w) : NULL;
            if (ident) {
                json_array_append_new(out, j);
                json_array_append_new(idents, ident);
            } else if (j) {
                json_array_append_new(out, j);
            }
        }
        pthread_mutex_unlock(&b->lock);
    }
    /* idents is empty (nobody hooked) or parallel to out */
    if (json_array_size(idents) == json_array_size(out))
        run_worker_details(b, idents, out, priv);
    json_decref(idents);
    api->respond_json(req, 200, out);
}

static void respond_worker(broker *b, hn_request *req, br_worker *(*find)(broker *, const char *),
                           const char *key, const char *shown) {
    int priv = caller_privilege(b, req);
    json_t *j = NULL, *ident = NULL;
    if (b->started && key) {
        pthread_mutex_lock(&b->lock);
        br_worker *w = find(b, key);
        if (w)
            j = br_worker_json(b, w, priv, br_now_ms());
        if (j)
            ident = worker_ident(b, w);
        pthread_mutex_unlock(&b->lock);
    }
    if (j && ident)
        hn_run_worker_details(b->api, ident, priv, j);
    json_decref(ident);
    if (!j) {
        br_fail(b, req, 404, "WorkerNotFound", "Worker with ID '%.100s' not found.",
                shown ? shown : "");
        return;
    }
    b->api->respond_json(req, 200, j);
}

void br_route_worker_single(hn_request *req, void *state) {
    broker *b = state;
    const char *raw = b->api->req_param(req, "id");
    char id[BR_ID_LEN];
    respond_worker(b, req, br_worker_find, br_uuid_parse(raw, id) ? id : NULL, raw);
}

void br_route_worker_by_name(hn_request *req, void *state) {
    broker *b = state;
    const char *name = b->api->req_param(req, "name");
    respond_worker(b, req, br_worker_find_name, name, name);
}

/* PUT /workers/{id} (§2): maintenance, maintenance_msg, info, name (owner or
 * moderator), paused (moderator). Answers the changed keys. */
void br_route_worker_put(hn_request *req, void *state) {
    broker *b = state;
    const hn_api *api = b->api;
    hn_error err;
    hn_user user;
    if (!br_ready(b, req))
        return;
    json_t *body = br_checked_body(b, req, br_validate_worker_put_schema,
                                   "A mod or owner API key.");
    if (!body)
        return;
    if (br_authenticate(b, req, &user, &err) != HN_OK) {
        api->respond_error(req, &err);
        return;
    }
    const char *raw = api->req_param(req, "id");
    char id[BR_ID_LEN];
    const json_t *maint = json_object_get(body, "maintenance");
    const char *maint_msg = br_jstr(body, "maintenance_msg");
    const json_t *paused = json_object_get(body, "paused");
    const char *info = br_jstr(body, "info");
    const char *name = br_jstr(body, "name");
    const char *team = br_jstr(body, "team");
    char team_id[BR_ID_LEN] = "";
    if (team && *team && !br_uuid_parse(team, team_id)) {
        br_fail(b, req, 404, "TeamNotFound", "Team with ID '%.64s' not found.", team);
        return;
    }
    bool mod = (user.roles & (HN_ROLE_MODERATOR | HN_ROLE_ADMIN)) != 0;
    br_op *op = br_op_new(b);
    if (!op) {
        br_fail(b, req, 500, "InternalServerError", "out of memory");
        return;
    }
    pthread_mutex_lock(&b->lock);
    br_worker *w = br_uuid_parse(raw, id) ? br_worker_find(b, id) : NULL;
    const char *rc = NULL;
    int status = 0;
    char msg[200] = "";
    if (!w) {
        status = 404, rc = "WorkerNotFound";
        snprintf(msg, sizeof(msg), "Worker with ID '%.100s' not found.", raw ? raw : "");
    } else if (paused && !mod) {
        status = 403, rc = "NotModerator";
        snprintf(msg, sizeof(msg), "You're not a mod. BTFO!");
    } else if ((maint || maint_msg || info || name || team) && !mod && user.id != w->user_id) {
        status = 403, rc = "NotOwner";
        snprintf(msg, sizeof(msg), "You're not the owner of this worker.");
    } else if (info && api->text_profane(info)) { /* §2, §5 profanity checks */
        status = 400, rc = "ProfaneWorkerInfo";
        snprintf(msg, sizeof(msg), "This worker info contains profanity.");
    } else if (name && api->text_profane(name)) {
        status = 400, rc = "ProfaneWorkerName";
        snprintf(msg, sizeof(msg), "This worker name contains profanity.");
    } else if (name && strcmp(name, w->name) != 0 && br_worker_find_name(b, name)) {
        status = 400, rc = "WorkerNameAlreadyExists";
        snprintf(msg, sizeof(msg), "The specified worker name '%.64s' is already taken!", name);
    } else if (!maint && !paused && !info && !name && !team) {
        status = 400, rc = "NoWorkerModSelected";
        snprintf(msg, sizeof(msg), "No worker modification selected!");
    } else if (team_id[0] && !br_map_get(&b->acc->teams, team_id)) {
        status = 404, rc = "TeamNotFound";
        snprintf(msg, sizeof(msg), "Team with ID '%.64s' not found.", team_id);
    }
    if (rc) {
        pthread_mutex_unlock(&b->lock);
        br_op_discard(op);
        br_fail(b, req, status, rc, "%s", msg);
        return;
    }
    json_t *resp = json_object();
    if (maint) {
        w->maintenance = json_is_true(maint);
        free(w->maintenance_msg);
        w->maintenance_msg = NULL;
        if (w->maintenance && maint_msg)
            w->maintenance_msg = strdup(maint_msg);
        if (!w->maintenance) /* a fresh start for the dropped-jobs count */
            w->aborts_in_window = 0;
        json_object_set_new(resp, "maintenance", json_boolean(w->maintenance));
    }
    if (paused) {
        w->paused = json_is_true(paused);
        json_object_set_new(resp, "paused", json_boolean(w->paused));
    }
    if (info) {
        free(w->info);
        w->info = strdup(info);
        json_object_set_new(resp, "info", json_string(info));
    }
    if (name && strcmp(name, w->name) != 0) {
        char *nn = strdup(name);
        if (nn) {
            br_map_del(&b->workers_by_name, w->name);
            free(w->name);
            w->name = nn;
            br_map_put(&b->workers_by_name, w->name, w);
        }
        json_object_set_new(resp, "name", json_string(w->name));
    }
    if (team) {
        br_team *t = team_id[0] ? br_map_get(&b->acc->teams, team_id) : NULL;
        if (t)
            br_map_put(&b->acc->worker_team, w->id, t);
        else
            br_map_del(&b->acc->worker_team, w->id);
        br_acc_store_worker_team(op, w->id, t);
        json_object_set_new(resp, "team", json_string(t ? t->name : "None"));
    }
    b->workers_ver++;
    br_store_worker_save(op, w);
    br_op_reply(op, req, 200, resp, -1, NULL);
    api->req_suspend(req);
    br_op_submit(b, op);
    pthread_mutex_unlock(&b->lock);
}
