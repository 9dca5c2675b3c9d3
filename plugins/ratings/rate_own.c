/* ratings: POST /api/v2/generate/rate/{id}: a requester rates the images of
 * their own shared request (horde-api.md §1.6, ratings.md §2.1).
 *
 * The horde relays such ratings to the ratings server; here the server is in
 * the same process, so the checks run in the horde's order against the
 * broker's status of the request (read in process, on a pool thread) and the
 * ratings are stored like any others, under the requester's name.
 * Rewards: 5 per rating, +5 per rating with artifacts; `best` alone 15; one
 * rating below 7 plus a best +15; never more than the request's consumed
 * kudos - 1. Paid to the requester through kudos_grant (ref
 * "rate:<request>"), as the horde credits them as "awarded". No apikey is
 * needed, as on the horde: the kudos go to the request's owner whoever asks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ratings.h"

#define MAX_SET 64

typedef struct own_call {
    ratings *r;
    hn_request *req;
    char id[RT_ID_LEN];
    char *body_text;  /* copy of the request body */
    char agent[256];
    int status;       /* the answer, made on the pool thread */
    json_t *answer;
} own_call;

static void answer_error(own_call *o, int status, const char *rc, const char *msg) {
    o->status = status;
    o->answer = json_pack("{s:s, s:s}", "message", msg, "rc", rc);
}

static bool in_set(const json_t *set, const char *id) {
    size_t i;
    json_t *x;
    json_array_foreach(set, i, x) {
        if (strcmp(json_string_value(json_object_get(x, "id")), id) == 0)
            return true;
    }
    return false;
}

static bool schema_ok(const json_t *body, char *why, size_t len) {
    const json_t *best = json_object_get(body, "best");
    if (best && !json_is_null(best) &&
        (!json_is_string(best) || strlen(json_string_value(best)) != 36)) {
        snprintf(why, len, "best: must be an image id of 36 characters");
        return false;
    }
    const json_t *ratings = json_object_get(body, "ratings");
    if (ratings && !json_is_null(ratings) && !json_is_array(ratings)) {
        snprintf(why, len, "ratings: must be a list");
        return false;
    }
    size_t i;
    json_t *x;
    json_array_foreach(ratings, i, x) {
        const json_t *id = json_object_get(x, "id"), *rt = json_object_get(x, "rating"),
                     *ar = json_object_get(x, "artifacts");
        if (!json_is_string(id) || strlen(json_string_value(id)) != 36 || !json_is_integer(rt) ||
            json_integer_value(rt) < 1 || json_integer_value(rt) > 10 ||
            (ar && !json_is_null(ar) &&
             (!json_is_integer(ar) || json_integer_value(ar) < 0 || json_integer_value(ar) > 5))) {
            snprintf(why, len,
                     "ratings.%zu: needs id (36 characters), rating 1..10, artifacts 0..5", i);
            return false;
        }
    }
    return true;
}

/* The checks and the store, on a pool thread. */
static void own_work(void *arg) {
    own_call *o = arg;
    ratings *r = o->r;
    json_t *body = json_loads(o->body_text && *o->body_text ? o->body_text : "{}", 0, NULL);
    if (!json_is_object(body)) {
        json_decref(body);
        answer_error(o, 400, "BadRequest", "The body is not a JSON object.");
        return;
    }
    char why[200], path[96];
    if (!schema_ok(body, why, sizeof(why))) {
        o->status = 400;
        o->answer = json_pack("{s:s, s:s, s:{s:s}}", "message", "Input payload validation failed",
                              "rc", "BadRequest", "errors", "payload", why);
        json_decref(body);
        return;
    }
    snprintf(path, sizeof(path), "/api/v2/generate/status/%s", o->id);
    int status = 0;
    char *text = NULL;
    size_t len = 0;
    if (r->api->local_request(HN_GET, path, NULL, NULL, 0, &status, &text, &len) != 0) {
        free(text);
        json_decref(body);
        answer_error(o, 503, "ServiceUnavailable", "The node is stopping.");
        return;
    }
    json_t *st = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    if (status != 200 || !json_is_object(st)) {
        /* RequestNotFound and friends pass through as the broker said them */
        o->status = status ? status : 500;
        o->answer = st ? st : json_pack("{s:s, s:s}", "message", "The broker did not answer.",
                                        "rc", "InternalServerError");
        json_decref(body);
        return;
    }
    const json_t *set = json_object_get(st, "generations");
    const json_t *ratings_in = json_object_get(body, "ratings");
    const char *best = json_string_value(json_object_get(body, "best"));
    size_t n_ratings = json_array_size(ratings_in), n_set = json_array_size(set);
    double consumed = json_number_value(json_object_get(st, "kudos"));
    size_t i, j;
    json_t *x;
    if (!json_is_true(json_object_get(st, "done")) || n_set == 0) {
        answer_error(o, 400, "AestheticsNotCompleted",
                     "You cannot rate a generation before it is completed.");
        goto out;
    }
    if (!json_is_true(json_object_get(st, "shared"))) {
        answer_error(o, 400, "AestheticsNotPublic",
                     "You can only aesthetically rate generations that are shared.");
        goto out;
    }
    json_array_foreach(ratings_in, i, x) {
        const char *id = json_string_value(json_object_get(x, "id"));
        if (!in_set(set, id)) {
            answer_error(o, 400, "ProcGenNotFound", "Image ID not found in this generation.");
            goto out;
        }
        for (j = 0; j < i; j++)
            if (strcmp(json_string_value(json_object_get(json_array_get(ratings_in, j), "id")),
                       id) == 0) {
                answer_error(o, 400, "AestheticsDuplicate", "Duplicate image ID in ratings.");
                goto out;
            }
    }
    if (best && !in_set(set, best)) {
        answer_error(o, 400, "ProcGenNotFound", "Best image ID not found in this generation.");
        goto out;
    }
    if (!best && n_ratings == 0) {
        answer_error(o, 400, "AestheticsMissing", "You must provide a best image or ratings.");
        goto out;
    }
    if (best && n_ratings == 0 && n_set == 1) {
        answer_error(o, 400, "AestheticsSolo",
                     "You cannot pick a best image from a generation of one image.");
        goto out;
    }
    /* the top rating; ties need a best among them */
    int top = 0, n_top = 0;
    const char *top_id = NULL;
    bool best_is_top = false;
    json_array_foreach(ratings_in, i, x) {
        int v = (int)json_integer_value(json_object_get(x, "rating"));
        if (v > top)
            top = v, n_top = 0;
        if (v == top)
            n_top++, top_id = json_string_value(json_object_get(x, "id"));
    }
    json_array_foreach(ratings_in, i, x) {
        if (best && (int)json_integer_value(json_object_get(x, "rating")) == top &&
            strcmp(json_string_value(json_object_get(x, "id")), best) == 0)
            best_is_top = true;
    }
    if (n_top > 1 && best && !best_is_top) {
        answer_error(o, 400, "AestheticsConfused",
                     "Your best image is not one of your highest rated images.");
        goto out;
    }
    if (!best && n_set > 1 && n_ratings == 1 && top >= 7)
        best = top_id; /* one high rating in a set: taken as the best */
    else if (!best && n_ratings > 1 && n_top == 1)
        best = top_id;
    /* the reward */
    double reward = 0;
    json_array_foreach(ratings_in, i, x) {
        reward += 5;
        const json_t *a = json_object_get(x, "artifacts");
        if (a && !json_is_null(a))
            reward += 5;
    }
    if (json_object_get(body, "best") && json_is_string(json_object_get(body, "best"))) {
        if (n_ratings == 0)
            reward = 15;
        else if (n_ratings == 1 && top < 7)
            reward += 15;
    }
    if (reward > consumed - 1)
        reward = consumed - 1 > 0 ? consumed - 1 : 0;
    size_t payers = 0;
    r->api->hook_handlers(HN_HOOK_ID_kudos_grant, &payers);
    if (payers == 0)
        reward = 0; /* no plugin keeps kudos: nothing is paid */
    /* the store: the set once, then each rating of a pool image */
    hn_error err = {0};
    hn_db *c = r->db->acquire(r->db_state, &err);
    if (!c)
        goto storage;
    int64_t owner = 0;
    hn_value q[] = {HN_V_TEXT(o->id)};
    hn_stmt *s = r->db->query(c, "SELECT user_id FROM ratings_images WHERE request_id = ? LIMIT 1",
                              q, 1, &err);
    if (s && r->db->step(s, &err) == 1)
        owner = r->db->col_int(s, 0);
    if (s)
        r->db->finish(s);
    int64_t changes = 0, now = rt_now();
    bool ok = r->db->begin(c, &err) == HN_OK;
    hn_value set_row[] = {HN_V_TEXT(o->id), HN_V_INT(owner), best ? HN_V_TEXT(best) : HN_V_NULL,
                          HN_V_DOUBLE(reward), HN_V_INT(owner > 0 && reward > 0 ? 0 : 1),
                          HN_V_INT(now)};
    ok = ok && r->db->exec(c,
                           "INSERT INTO ratings_own_sets (request_id, user_id, best, reward, paid,"
                           " created) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                           set_row, 6, &changes, &err) == HN_OK;
    if (ok && changes == 0) {
        r->db->rollback(c, &err);
        r->db->release(r->db_state, c);
        answer_error(o, 400, "AestheticsAlreadyExist", "This generation appears already rated.");
        goto out;
    }
    char key[40], username[160];
    snprintf(key, sizeof(key), "u:%lld", (long long)owner);
    hn_user u = {0};
    u.size = sizeof(u);
    if (owner > 0 && hn_run_user_lookup(r->api, owner, &u, &err) == HN_OK)
        snprintf(username, sizeof(username), "%s", u.username);
    else
        snprintf(username, sizeof(username), "%s", owner > 0 ? "unknown" : "Anonymous#0");
    json_array_foreach(ratings_in, i, x) {
        if (!ok)
            break;
        char rid[RT_ID_LEN];
        rt_uuid(rid);
        const char *img = json_string_value(json_object_get(x, "id"));
        int v = (int)json_integer_value(json_object_get(x, "rating"));
        const json_t *a = json_object_get(x, "artifacts");
        int64_t added = 0;
        hn_value row[] = {HN_V_TEXT(rid), HN_V_TEXT(img), HN_V_TEXT(key), HN_V_INT(owner),
                          HN_V_TEXT(username), HN_V_INT(v),
                          json_is_integer(a) ? HN_V_INT(json_integer_value(a)) : HN_V_NULL,
                          HN_V_TEXT(o->agent), HN_V_INT(now)};
        /* images not in the pool (censored ones) are not stored */
        bool found = false;
        hn_value which[] = {HN_V_TEXT(img)};
        hn_stmt *q1 = r->db->query(c, "SELECT 1 FROM ratings_images WHERE id = ?", which, 1, &err);
        int got = q1 ? r->db->step(q1, &err) : -1;
        found = got == 1;
        if (q1)
            r->db->finish(q1);
        ok = got >= 0;
        if (ok && found)
            ok = r->db->exec(c,
                             "INSERT INTO ratings_ratings (id, image_id, rater, user_id, username,"
                             " rating, artifacts, source, client_agent, paid, created)"
                             " VALUES (?, ?, ?, ?, ?, ?, ?, 'own', ?, 1, ?) ON CONFLICT DO NOTHING",
                             row, 9, &added, &err) == HN_OK;
        hn_value upd[] = {HN_V_INT(v), HN_V_TEXT(img)};
        if (ok && added == 1)
            ok = r->db->exec(c,
                             "UPDATE ratings_images SET ratings_count = ratings_count + 1,"
                             " rating_sum = rating_sum + ? WHERE id = ?",
                             upd, 2, NULL, &err) == HN_OK;
    }
    ok = ok && r->db->commit(c, &err) == HN_OK;
    if (!ok) {
        hn_error ignored;
        r->db->rollback(c, &ignored);
        r->db->release(r->db_state, c);
        goto storage;
    }
    r->db->release(r->db_state, c);
    if (owner > 0 && reward > 0) {
        char ref[64];
        snprintf(ref, sizeof(ref), "rate:%s", o->id);
        hn_rc rc = hn_run_kudos_grant(r->api, owner, reward, "aesthetics", ref, &err);
        if (rc == HN_OK || rc == HN_DECLINED) {
            c = r->db->acquire(r->db_state, &err);
            if (c) {
                r->db->exec(c, "UPDATE ratings_own_sets SET paid = 1 WHERE request_id = ?", q, 1,
                            NULL, &err);
                r->db->release(r->db_state, c);
            }
        } else {
            r->api->log(r->self, HN_LOG_WARN, "paying the ratings of %s failed (retried): %s",
                        o->id, err.message);
        }
    }
    o->status = 200;
    o->answer = json_pack("{s:f}", "reward", reward);
    goto out;
storage:
    r->api->log(r->self, HN_LOG_ERROR, "storage: %s", err.message);
    answer_error(o, 500, "InternalServerError", "The ratings store failed.");
out:
    json_decref(st);
    json_decref(body);
}

static void own_done(void *arg) {
    own_call *o = arg;
    o->r->api->respond_json(o->req, o->status, o->answer);
    free(o->body_text);
    free(o);
}

static void route_rate_own(hn_request *req, void *state) {
    ratings *r = state;
    if (!rt_ready(r, req))
        return;
    const char *id = r->api->req_param(req, "id");
    if (!rt_uuid_ok(id)) {
        rt_fail(r, req, 404, "RequestNotFound",
                "Image Waiting Prompt (Status) with ID '%.64s' not found.", id ? id : "");
        return;
    }
    own_call *o = calloc(1, sizeof(*o));
    size_t len = 0;
    const void *body = r->api->req_body(req, &len);
    if (!o || !(o->body_text = strndup(body ? body : "", len))) {
        free(o);
        rt_fail(r, req, 500, "InternalServerError", "out of memory");
        return;
    }
    o->r = r;
    o->req = req;
    snprintf(o->id, sizeof(o->id), "%s", id);
    for (char *p = o->id; *p; p++)
        if (*p >= 'A' && *p <= 'F')
            *p = (char)(*p - 'A' + 'a');
    const char *agent = r->api->req_header(req, "Client-Agent");
    snprintf(o->agent, sizeof(o->agent), "%s", agent && *agent ? agent : "unknown:0:unknown");
    r->api->req_suspend(req);
    if (r->api->work_submit(own_work, own_done, o) != 0) {
        answer_error(o, 503, "ServiceUnavailable", "The node is stopping.");
        own_done(o);
    }
}

/* Sets rated whose payment failed: paid again with the same ref. */
void rt_pay_pending_own(ratings *r) {
    hn_error err = {0};
    hn_db *c = r->db->acquire(r->db_state, &err);
    if (!c)
        return;
    char ids[16][RT_ID_LEN];
    int64_t users[16];
    double rewards[16];
    int n = 0;
    hn_stmt *st = r->db->query(c,
                               "SELECT request_id, user_id, reward FROM ratings_own_sets"
                               " WHERE paid = 0 LIMIT 16",
                               NULL, 0, &err);
    while (st && n < 16 && r->db->step(st, &err) == 1) {
        snprintf(ids[n], RT_ID_LEN, "%s", r->db->col_text(st, 0));
        users[n] = r->db->col_int(st, 1);
        rewards[n] = r->db->col_double(st, 2);
        n++;
    }
    if (st)
        r->db->finish(st);
    r->db->release(r->db_state, c); /* never held across a grant */
    for (int i = 0; i < n; i++) {
        char ref[64];
        snprintf(ref, sizeof(ref), "rate:%.36s", ids[i]);
        hn_rc rc = hn_run_kudos_grant(r->api, users[i], rewards[i], "aesthetics", ref, &err);
        if (rc != HN_OK && rc != HN_DECLINED)
            break;
        hn_value a[] = {HN_V_TEXT(ids[i])};
        c = r->db->acquire(r->db_state, &err);
        if (!c)
            break;
        r->db->exec(c, "UPDATE ratings_own_sets SET paid = 1 WHERE request_id = ?", a, 1, NULL,
                    &err);
        r->db->release(r->db_state, c);
    }
}

int rt_rate_own_register(ratings *r) {
    return r->api->route_add(r->self, HN_POST, "/api/v2/generate/rate/{id}", route_rate_own, r);
}
