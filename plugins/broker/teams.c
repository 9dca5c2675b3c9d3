/* broker: teams (§2). GET|POST /api/v2/teams, GET|PATCH|DELETE
 * /api/v2/teams/{id}; a worker joins one with PUT /workers/{id} {"team"}.
 * TeamDetailsStable sums its workers' numbers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accounts.h"

const br_team *br_worker_team(broker *b, const br_worker *w) {
    return b->acc ? br_map_get(&b->acc->worker_team, w->id) : NULL;
}

static long utf8_len(const char *s) {
    long n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        n += (*p & 0xc0) != 0x80;
    return n;
}

static br_team *team_by_name(broker *b, const char *name) {
    size_t i = 0;
    void *v;
    while (br_map_next(&b->acc->teams, &i, NULL, &v)) {
        br_team *t = v;
        if (strcmp(t->name, name) == 0)
            return t;
    }
    return NULL;
}

/* TeamDetailsStable. Caller holds the lock. */
static json_t *team_json(broker *b, const br_team *t, int64_t now_ms) {
    json_t *workers = json_array();
    json_t *models = json_object(); /* name -> count, turned into a list below */
    double mps = 0, kudos = 0, speed = 0;
    int64_t fulfilled = 0, uptime = 0;
    int count = 0, online_count = 0;
    size_t i = 0;
    const char *wid;
    void *v;
    while (br_map_next(&b->acc->worker_team, &i, &wid, &v)) {
        if (v != t)
            continue;
        br_worker *w = br_worker_find(b, wid);
        if (!w)
            continue;
        bool online = br_worker_online(b, w, now_ms);
        count++;
        mps += w->mps_generated;
        kudos += w->kudos_generated;
        fulfilled += w->requests_fulfilled;
        uptime += w->uptime_s;
        json_array_append_new(workers, json_pack("{s:s, s:s, s:s, s:b}", "type", "image", "name",
                                                 w->name, "id", w->id, "online", online));
        if (!online)
            continue;
        online_count++;
        speed += w->speed;
        for (int m = 0; m < w->a.n_models; m++) {
            json_t *c = json_object_get(models, w->a.models[m]);
            json_object_set_new(models, w->a.models[m],
                                json_integer((c ? json_integer_value(c) : 0) + 1));
        }
    }
    json_t *model_list = json_array();
    const char *name;
    json_t *c;
    json_object_foreach(models, name, c) {
        json_array_append_new(model_list, json_pack("{s:s, s:O}", "name", name, "count", c));
    }
    json_decref(models);
    double perf = online_count ? speed / online_count / 1e6 : 0;
    return json_pack("{s:s, s:s, s:s, s:f, s:I, s:f, s:f, s:f, s:I, s:s, s:i, s:o, s:o}", "name",
                     t->name, "id", t->id, "creator", t->creator, "contributions",
                     br_round(mps, 2), "requests_fulfilled", (json_int_t)fulfilled, "kudos",
                     br_round(kudos, 2), "performance", br_round(perf, 2), "speed",
                     br_round(speed / 1e6, 2), "uptime", (json_int_t)uptime, "info", t->info,
                     "worker_count", count, "workers", workers, "models", model_list);
}

/* name 3..100, info 3..1000 characters (info optional on PATCH and POST). */
static bool check_fields(broker *b, hn_request *req, const json_t *body, bool name_required) {
    const json_t *name = json_object_get(body, "name");
    const json_t *info = json_object_get(body, "info");
    const char *bad = NULL, *why = NULL;
    if (name_required && (!name || json_is_null(name)))
        bad = "name", why = "'name' is a required property";
    else if (name && !json_is_null(name) &&
             (!json_is_string(name) || utf8_len(json_string_value(name)) < 3 ||
              utf8_len(json_string_value(name)) > 100))
        bad = "name", why = "must be a string of 3 to 100 characters";
    else if (info && !json_is_null(info) &&
             (!json_is_string(info) || utf8_len(json_string_value(info)) < 3 ||
              utf8_len(json_string_value(info)) > 1000))
        bad = "info", why = "must be a string of 3 to 1000 characters";
    if (bad)
        br_respond_schema_errors(b, req, json_pack("{s:s}", bad, why));
    return bad == NULL;
}

/* §5 profanity checks of a team's name and info: answers 400 Profanity and
 * returns true when one is profane. */
static bool profane_fields(broker *b, hn_request *req, const hn_user *u, const json_t *body) {
    static const char *const keys[] = {"name", "info"};
    for (size_t i = 0; i < 2; i++) {
        if (b->api->text_profane(br_jstr(body, keys[i]))) {
            br_fail(b, req, 400, "Profanity", "%s tried to use a profane team %s.", u->username,
                    keys[i]);
            return true;
        }
    }
    return false;
}

static void teams_post(broker *b, hn_request *req) {
    hn_error err;
    json_t *body = b->api->req_json(req, &err);
    if (!body) {
        b->api->respond_error(req, &err);
        return;
    }
    if (!check_fields(b, req, body, true))
        return;
    hn_user u;
    if (!br_require_user(b, req, "The API key of a trusted user.", &u))
        return;
    if (u.id == 0) {
        br_fail(b, req, 403, "AnonForbidden", "Anonymous users cannot create teams.");
        return;
    }
    if (!(u.roles & (HN_ROLE_TRUSTED | HN_ROLE_MODERATOR | HN_ROLE_ADMIN))) {
        br_fail(b, req, 403, "UntrustedTeamCreation", "Only trusted users can create teams.");
        return;
    }
    if (profane_fields(b, req, &u, body))
        return;
    const char *name = br_jstr(body, "name");
    const char *info = br_jstr(body, "info");
    br_team *t = calloc(1, sizeof(*t));
    br_op *op = br_op_new(b);
    if (t) {
        t->name = strdup(name);
        t->info = strdup(info ? info : "");
    }
    if (!t || !t->name || !t->info || !op) {
        br_team_free(t);
        br_op_discard(op);
        br_fail(b, req, 500, "InternalServerError", "out of memory");
        return;
    }
    br_uuid4(t->id);
    t->creator_id = u.id;
    snprintf(t->creator, sizeof(t->creator), "%s", u.username);
    t->created_ms = br_now_ms();
    pthread_mutex_lock(&b->lock);
    if (team_by_name(b, name)) {
        pthread_mutex_unlock(&b->lock);
        br_team_free(t);
        br_op_discard(op);
        br_fail(b, req, 400, "TeamNameAlreadyExists", "A team named '%.100s' already exists.",
                name);
        return;
    }
    br_map_put(&b->acc->teams, t->id, t);
    br_acc_store_team(op, t);
    br_acc_commit(b, op, req, 200,
                  json_pack("{s:s, s:s, s:s}", "id", t->id, "name", t->name, "info", t->info));
    pthread_mutex_unlock(&b->lock);
}

void br_route_teams(hn_request *req, void *state) {
    broker *b = state;
    if (!br_ready(b, req))
        return;
    if (b->api->req_method(req) == HN_POST) {
        teams_post(b, req);
        return;
    }
    json_t *out = json_array();
    int64_t now = br_now_ms();
    pthread_mutex_lock(&b->lock);
    size_t i = 0;
    void *v;
    while (br_map_next(&b->acc->teams, &i, NULL, &v))
        json_array_append_new(out, team_json(b, v, now));
    pthread_mutex_unlock(&b->lock);
    b->api->respond_json(req, 200, out);
}

/* Drops every worker's membership of t (b->lock held). */
static void team_unlink_workers(broker *b, const br_team *t) {
    for (;;) {
        size_t i = 0;
        const char *wid;
        void *v;
        const char *found = NULL;
        while (br_map_next(&b->acc->worker_team, &i, &wid, &v)) {
            if (v == t) {
                found = wid;
                break;
            }
        }
        if (!found)
            return;
        br_map_del(&b->acc->worker_team, found);
    }
}

void br_route_team_single(hn_request *req, void *state) {
    broker *b = state;
    const hn_api *api = b->api;
    if (!br_ready(b, req))
        return;
    unsigned method = api->req_method(req);
    const char *raw = api->req_param(req, "id");
    char id[BR_ID_LEN];
    bool valid_id = br_uuid_parse(raw, id);
    hn_user u = {0};
    json_t *body = NULL;
    if (method == HN_PATCH) {
        hn_error err;
        body = api->req_json(req, &err);
        if (!body) {
            api->respond_error(req, &err);
            return;
        }
        if (!check_fields(b, req, body, false))
            return;
    }
    if (method == HN_GET) {
        /* a key is optional, but only a moderator's is accepted */
        if (api->req_header(req, "apikey")) {
            hn_error err;
            if (br_authenticate(b, req, &u, &err) != HN_OK) {
                api->respond_error(req, &err);
                return;
            }
            if (!br_is_mod(&u)) {
                br_fail(b, req, 403, "NotModerator", "You're not a mod. BTFO!");
                return;
            }
        }
    } else if (!br_require_user(b, req, "The Moderator or Owner API key.", &u)) {
        return;
    }
    pthread_mutex_lock(&b->lock);
    br_team *t = valid_id ? br_map_get(&b->acc->teams, id) : NULL;
    if (!t) {
        pthread_mutex_unlock(&b->lock);
        br_fail(b, req, 404, "TeamNotFound", "Team with ID '%.100s' not found.", raw ? raw : "");
        return;
    }
    if (method == HN_GET) {
        json_t *j = team_json(b, t, br_now_ms());
        pthread_mutex_unlock(&b->lock);
        api->respond_json(req, 200, j);
        return;
    }
    if (!br_is_mod(&u) && u.id != t->creator_id) {
        pthread_mutex_unlock(&b->lock);
        br_fail(b, req, 403, "NotOwner", "You're not the owner of this team.");
        return;
    }
    br_op *op = br_op_new(b);
    if (!op) {
        pthread_mutex_unlock(&b->lock);
        br_fail(b, req, 500, "InternalServerError", "out of memory");
        return;
    }
    if (method == HN_DELETE) {
        json_t *out = json_pack("{s:s, s:s}", "deleted_id", t->id, "deleted_name", t->name);
        br_map_del(&b->acc->teams, t->id);
        team_unlink_workers(b, t);
        br_acc_store_team_delete(op, t->id);
        br_team_free(t);
        b->workers_ver++;
        br_acc_commit(b, op, req, 200, out);
        pthread_mutex_unlock(&b->lock);
        return;
    }
    /* PATCH */
    const char *name = br_jstr(body, "name");
    const char *info = br_jstr(body, "info");
    if (!name && !info) {
        pthread_mutex_unlock(&b->lock);
        br_op_discard(op);
        br_fail(b, req, 400, "NoTeamModSelected", "No team modification selected!");
        return;
    }
    if (profane_fields(b, req, &u, body)) {
        pthread_mutex_unlock(&b->lock);
        br_op_discard(op);
        return;
    }
    if (name && strcmp(name, t->name) != 0 && team_by_name(b, name)) {
        pthread_mutex_unlock(&b->lock);
        br_op_discard(op);
        br_fail(b, req, 400, "TeamNameAlreadyExists", "A team named '%.100s' already exists.",
                name);
        return;
    }
    char *nn = name ? strdup(name) : NULL;
    char *ni = info ? strdup(info) : NULL;
    if ((name && !nn) || (info && !ni)) {
        free(nn);
        free(ni);
        pthread_mutex_unlock(&b->lock);
        br_op_discard(op);
        br_fail(b, req, 500, "InternalServerError", "out of memory");
        return;
    }
    if (nn) {
        free(t->name);
        t->name = nn;
    }
    if (ni) {
        free(t->info);
        t->info = ni;
    }
    br_acc_store_team(op, t);
    br_acc_commit(b, op, req, 200,
                  json_pack("{s:s, s:s, s:s}", "id", t->id, "name", t->name, "info", t->info));
    pthread_mutex_unlock(&b->lock);
}
