/* ratings: the public ratings API, /api/v1/... (spec ratings.md §1), with
 * the public service's status codes: 201 on a rating, 403 on a duplicate or a
 * timed-out rater, 429 when a rater goes too fast, {"message","rc"} errors.
 *
 * Pop: a rater is served an image of the wanted dataset (and model) that has
 * fewer than ratings_per_image ratings and that they were never served,
 * least-served first, so each image reaches enough different raters; every
 * captcha_every-th pop is a captcha instead, when one is left to show them.
 * Rate: only an image served to the rater, once. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ratings.h"

/* ---- small storage helpers ------------------------------------------------------------- */

/* First column of the first row as an integer; *found false when no row. */
static hn_rc q_int(ratings *r, hn_db *c, const char *sql, const hn_value *a, size_t n,
                   int64_t *out, bool *found, hn_error *err) {
    hn_stmt *st = r->db->query(c, sql, a, n, err);
    if (!st)
        return HN_ERROR;
    int got = r->db->step(st, err);
    if (got == 1)
        *out = r->db->col_int(st, 0);
    if (found)
        *found = got == 1;
    r->db->finish(st);
    return got < 0 ? HN_ERROR : HN_OK;
}

static void storage_fail(ratings *r, hn_request *req, const hn_error *err) {
    r->api->log(r->self, HN_LOG_ERROR, "storage: %s", err->message);
    rt_fail(r, req, 500, "InternalServerError", "The ratings store failed.");
}

/* A connection for a route; NULL when answered 500 (storage_fail). */
static hn_db *acquire_or_fail(ratings *r, hn_request *req, hn_error *err) {
    hn_db *c = r->db->acquire(r->db_state, err);
    if (!c)
        storage_fail(r, req, err);
    return c;
}

/* A route's storage failure on connection c: rolls back the open
 * transaction (in_tx), releases c and answers 500. */
static void release_and_fail(ratings *r, hn_request *req, hn_db *c, bool in_tx,
                             const hn_error *err) {
    if (in_tx) {
        hn_error ignored;
        r->db->rollback(c, &ignored);
    }
    r->db->release(r->db_state, c);
    storage_fail(r, req, err);
}

static void timeout_fail(ratings *r, hn_request *req, int64_t until) {
    rt_fail(r, req, 403, "RatingTimeout",
            "You have been timed out from rating for %lld more seconds. Please pay more "
            "attention to the images you rate.",
            (long long)(until - rt_now()));
}

/* ---- GET /rating/new[/{dataset_id}[/{model_name}]] --------------------------------------- */

static hn_rc pick(ratings *r, hn_db *c, const char *sql, const hn_value *a, size_t n,
                  char id[RT_ID_LEN], char dataset[RT_ID_LEN], bool *found, hn_error *err) {
    hn_stmt *st = r->db->query(c, sql, a, n, err);
    if (!st)
        return HN_ERROR;
    int got = r->db->step(st, err);
    *found = got == 1;
    if (got == 1) {
        snprintf(id, RT_ID_LEN, "%s", r->db->col_text(st, 0));
        snprintf(dataset, RT_ID_LEN, "%s", r->db->col_text(st, 1));
    }
    r->db->finish(st);
    return got < 0 ? HN_ERROR : HN_OK;
}

static void route_pop(hn_request *req, void *state) {
    ratings *r = state;
    if (!rt_ready(r, req))
        return;
    rt_rater who;
    if (!rt_authenticate(r, req, &who))
        return;
    const char *want_ds = r->api->req_param(req, "dataset_id");
    const char *want_model = r->api->req_param(req, "model_name");
    hn_error err = {0};
    hn_db *c = acquire_or_fail(r, req, &err);
    if (!c)
        return;
    char dataset[RT_ID_LEN] = "", id[RT_ID_LEN] = "";
    int64_t now = rt_now();
    rt_rater_state rs;
    bool found = false, in_tx = false;
    if (want_ds) {
        hn_value a[] = {HN_V_TEXT(want_ds), HN_V_TEXT(want_ds)};
        hn_stmt *st = r->db->query(c,
                                   "SELECT id FROM ratings_datasets WHERE (id = ? OR name = ?)"
                                   " AND captcha = 0",
                                   a, 2, &err);
        if (!st)
            goto fail;
        int got = r->db->step(st, &err);
        if (got == 1)
            snprintf(dataset, sizeof(dataset), "%s", r->db->col_text(st, 0));
        r->db->finish(st);
        if (got < 0)
            goto fail;
        if (got == 0) {
            r->db->release(r->db_state, c);
            rt_fail(r, req, 404, "DatasetNotFound", "Dataset %.100s not found.", want_ds);
            return;
        }
    }
    if (rt_rater_load(r, c, who.key, &rs, &err) != HN_OK)
        goto fail;
    if (rs.timeout_until > now) {
        r->db->release(r->db_state, c);
        timeout_fail(r, req, rs.timeout_until);
        return;
    }
    int64_t recent = 0;
    hn_value window[] = {HN_V_TEXT(who.key), HN_V_INT(now - 60)};
    if (q_int(r, c, "SELECT COUNT(*) FROM ratings_pops WHERE rater = ? AND created >= ?", window,
              2, &recent, NULL, &err) != HN_OK)
        goto fail;
    if (recent >= r->conf->max_pops_per_minute) {
        r->db->release(r->db_state, c);
        rt_fail(r, req, 429, "TooManyRequests", "Too many requests. Try again in a minute.");
        return;
    }
    if (r->db->begin(c, &err) != HN_OK)
        goto fail;
    in_tx = true;
    hn_value ins[] = {HN_V_TEXT(who.key), HN_V_INT(who.user.id)};
    hn_value key[] = {HN_V_TEXT(who.key)};
    int64_t pops = 0;
    if (r->db->exec(c,
                    "INSERT INTO ratings_raters (rater, user_id) VALUES (?, ?)"
                    " ON CONFLICT (rater) DO NOTHING",
                    ins, 2, NULL, &err) != HN_OK ||
        r->db->exec(c, "UPDATE ratings_raters SET pops = pops + 1 WHERE rater = ?", key, 1, NULL,
                    &err) != HN_OK ||
        q_int(r, c, "SELECT pops FROM ratings_raters WHERE rater = ?", key, 1, &pops, NULL,
              &err) != HN_OK)
        goto fail;
    if (r->conf->captcha_every > 0 && pops % r->conf->captcha_every == 0) {
        hn_value a[] = {HN_V_TEXT(who.key)};
        if (pick(r, c,
                 "SELECT i.id, i.dataset_id FROM ratings_images i WHERE i.expected_rating > 0"
                 " AND NOT EXISTS (SELECT 1 FROM ratings_pops p WHERE p.rater = ?"
                 " AND p.image_id = i.id) ORDER BY i.served, i.created LIMIT 1",
                 a, 1, id, dataset, &found, &err) != HN_OK)
            goto fail;
    }
    if (!found) {
        char sql[768];
        hn_value a[5];
        size_t n = 0;
        a[n++] = HN_V_INT(r->conf->ratings_per_image);
        /* a requester is not served their own shared images (they rate those
         * through /api/v2/generate/rate) */
        snprintf(sql, sizeof(sql),
                 "SELECT i.id, i.dataset_id FROM ratings_images i WHERE i.expected_rating = 0"
                 " AND i.ratings_count < ?%s%s%s AND NOT EXISTS (SELECT 1 FROM ratings_pops p"
                 " WHERE p.rater = ? AND p.image_id = i.id) ORDER BY i.served, i.created LIMIT 1",
                 dataset[0] ? " AND i.dataset_id = ?" : "", want_model ? " AND i.model = ?" : "",
                 who.user.id > 0 ? " AND i.user_id <> ?" : "");
        if (dataset[0])
            a[n++] = HN_V_TEXT(dataset);
        if (want_model)
            a[n++] = HN_V_TEXT(want_model);
        if (who.user.id > 0)
            a[n++] = HN_V_INT(who.user.id);
        a[n++] = HN_V_TEXT(who.key);
        if (pick(r, c, sql, a, n, id, dataset, &found, &err) != HN_OK)
            goto fail;
    }
    if (!found) {
        r->db->rollback(c, &err);
        r->db->release(r->db_state, c);
        rt_fail(r, req, 404, "NoImagesToRate",
                "There are no images left for you to rate. Please try again later.");
        return;
    }
    hn_value pop[] = {HN_V_TEXT(who.key), HN_V_TEXT(id), HN_V_INT(now)};
    hn_value img[] = {HN_V_TEXT(id)};
    if (r->db->exec(c, "INSERT INTO ratings_pops (rater, image_id, created) VALUES (?, ?, ?)",
                    pop, 3, NULL, &err) != HN_OK ||
        r->db->exec(c, "UPDATE ratings_images SET served = served + 1 WHERE id = ?", img, 1, NULL,
                    &err) != HN_OK ||
        r->db->commit(c, &err) != HN_OK)
        goto fail;
    r->db->release(r->db_state, c);
    char url[512];
    rt_image_url(r, id, url, sizeof(url));
    r->api->respond_json(req, 200,
                         json_pack("{s:s, s:s, s:s}", "id", id, "url", url, "dataset_id", dataset));
    return;
fail:
    release_and_fail(r, req, c, in_tx, &err);
}

/* ---- POST /rating/{image_id} ------------------------------------------------------------- */

static const char *const artifact_names[] = {"FLAWLESS",      "LITTLE_FLAWS",  "SOME_FLAWS",
                                             "OBVIOUS_FLAWS", "HARMFUL_FLAWS", "GARBAGE"};

/* rating 1..10 (required), artifacts 0..5, a level name, or null. Returns an
 * "errors" object when invalid. */
static json_t *parse_rating(const json_t *body, int *rating, int *artifacts) {
    json_t *errors = json_object();
    const json_t *v = json_object_get(body, "rating");
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 10)
        json_object_set_new(errors, "rating",
                            json_string(v ? "must be an integer from 1 to 10"
                                          : "'rating' is a required property"));
    else
        *rating = (int)json_integer_value(v);
    *artifacts = -1;
    const json_t *a = json_object_get(body, "artifacts");
    if (json_is_integer(a) && json_integer_value(a) >= 0 && json_integer_value(a) <= 5) {
        *artifacts = (int)json_integer_value(a);
    } else if (json_is_string(a)) {
        for (int i = 0; i < 6; i++)
            if (strcmp(json_string_value(a), artifact_names[i]) == 0)
                *artifacts = i;
        if (*artifacts < 0)
            json_object_set_new(errors, "artifacts",
                                json_string("must be 0..5 or one of FLAWLESS, LITTLE_FLAWS, "
                                            "SOME_FLAWS, OBVIOUS_FLAWS, HARMFUL_FLAWS, GARBAGE"));
    } else if (a && !json_is_null(a)) {
        json_object_set_new(errors, "artifacts", json_string("must be an integer from 0 to 5"));
    }
    if (json_object_size(errors) == 0) {
        json_decref(errors);
        return NULL;
    }
    return errors;
}

/* Pays one rating through kudos_grant and marks it paid; false when the
 * payment did not happen (the timer retries it). */
static bool pay(ratings *r, const char *rating_id, int64_t user_id, double amount) {
    hn_error err = {0};
    char ref[64];
    snprintf(ref, sizeof(ref), "rating:%s", rating_id);
    hn_rc rc = hn_run_kudos_grant(r->api, user_id, amount, "rating", ref, &err);
    if (rc == HN_DECLINED) {
        /* no kudos plugin: there is nothing to pay with; do not retry */
        rc = HN_OK;
    }
    if (rc != HN_OK) {
        r->api->log(r->self, HN_LOG_WARN, "paying rating %s failed (retried later): %s",
                    rating_id, err.message);
        return false;
    }
    hn_db *c = r->db->acquire(r->db_state, &err);
    if (!c)
        return false;
    hn_value a[] = {HN_V_TEXT(rating_id)};
    rc = r->db->exec(c, "UPDATE ratings_ratings SET paid = 1 WHERE id = ?", a, 1, NULL, &err);
    r->db->release(r->db_state, c);
    return rc == HN_OK;
}

void rt_pay_pending(ratings *r) {
    hn_error err = {0};
    hn_db *c = r->db->acquire(r->db_state, &err);
    if (!c)
        return;
    enum { MAX_BATCH = 64 };
    char ids[MAX_BATCH][RT_ID_LEN];
    int64_t users[MAX_BATCH];
    double amounts[MAX_BATCH];
    int n = 0;
    hn_stmt *st = r->db->query(c,
                               "SELECT id, user_id, reward FROM ratings_ratings WHERE paid = 0"
                               " LIMIT 64",
                               NULL, 0, &err);
    while (st && n < MAX_BATCH && r->db->step(st, &err) == 1) {
        snprintf(ids[n], RT_ID_LEN, "%s", r->db->col_text(st, 0));
        users[n] = r->db->col_int(st, 1);
        amounts[n] = r->db->col_double(st, 2);
        n++;
    }
    if (st)
        r->db->finish(st);
    r->db->release(r->db_state, c);
    for (int i = 0; i < n; i++)
        if (!pay(r, ids[i], users[i], amounts[i]))
            break;
}

typedef struct img_row {
    int expected;
    int64_t count, sum;
    bool found;
} img_row;

static void route_rate(hn_request *req, void *state) {
    ratings *r = state;
    const rt_conf *conf = r->conf;
    if (!rt_ready(r, req))
        return;
    rt_rater who;
    if (!rt_authenticate(r, req, &who))
        return;
    hn_error err = {0};
    json_t *body = r->api->req_json(req, &err);
    if (!body) {
        r->api->respond_error(req, &err);
        return;
    }
    int rating = 0, artifacts = -1;
    json_t *errors = parse_rating(body, &rating, &artifacts);
    if (errors) {
        r->api->respond_json(req, 400,
                             json_pack("{s:s, s:s, s:o}", "message",
                                       "Input payload validation failed", "rc", "BadRequest",
                                       "errors", errors));
        return;
    }
    const char *image_id = r->api->req_param(req, "image_id");
    int64_t now = rt_now();
    hn_db *c = acquire_or_fail(r, req, &err);
    if (!c)
        return;
    bool in_tx = false;
    if (r->db->begin(c, &err) != HN_OK)
        goto fail;
    in_tx = true;
    img_row im = {0};
    hn_value one[] = {HN_V_TEXT(image_id)};
    hn_stmt *st = r->db->query(c,
                               "SELECT expected_rating, ratings_count, rating_sum FROM"
                               " ratings_images WHERE id = ?",
                               one, 1, &err);
    if (!st)
        goto fail;
    int got = r->db->step(st, &err);
    if (got == 1) {
        im.found = true;
        im.expected = (int)r->db->col_int(st, 0);
        im.count = r->db->col_int(st, 1);
        im.sum = r->db->col_int(st, 2);
    }
    r->db->finish(st);
    if (got < 0)
        goto fail;
    int status = 0;
    const char *rc = NULL, *msg = NULL;
    rt_rater_state rs;
    int64_t pop_at = 0;
    bool popped = false, dup = false;
    int64_t recent = 0;
    if (im.found) {
        hn_value pr[] = {HN_V_TEXT(who.key), HN_V_TEXT(image_id)};
        hn_value rt[] = {HN_V_TEXT(who.key), HN_V_INT(now - 60)};
        int64_t ignored;
        if (rt_rater_load(r, c, who.key, &rs, &err) != HN_OK ||
            q_int(r, c, "SELECT created FROM ratings_pops WHERE rater = ? AND image_id = ?", pr,
                  2, &pop_at, &popped, &err) != HN_OK ||
            q_int(r, c, "SELECT 1 FROM ratings_ratings WHERE rater = ? AND image_id = ?", pr, 2,
                  &ignored, &dup, &err) != HN_OK ||
            q_int(r, c, "SELECT COUNT(*) FROM ratings_ratings WHERE rater = ? AND created >= ?",
                  rt, 2, &recent, NULL, &err) != HN_OK)
            goto fail;
    }
    if (!im.found) {
        status = 404, rc = "ImageNotFound", msg = "Image not found.";
    } else if (rs.timeout_until > now) {
        r->db->rollback(c, &err);
        r->db->release(r->db_state, c);
        timeout_fail(r, req, rs.timeout_until);
        return;
    } else if (dup) {
        status = 403, rc = "RatingDuplicate", msg = "You have already rated this image.";
    } else if (!popped) {
        status = 403, rc = "ImageNotServed",
        msg = "This image was not served to you. Get images to rate from /api/v1/rating/new.";
    } else if (recent >= conf->max_per_minute) {
        status = 429, rc = "TooManyRatings", msg = "Too many ratings. Try again in a minute.";
    }
    if (status) {
        r->db->rollback(c, &err);
        r->db->release(r->db_state, c);
        rt_fail(r, req, status, rc, "%s", msg);
        return;
    }
    /* the trust rules */
    bool captcha = im.expected > 0;
    bool passed = captcha && abs(rating - im.expected) <= conf->captcha_tolerance;
    bool fast = now - pop_at < conf->min_rating_s;
    bool suspect = !captcha && im.count >= conf->divergence_min_ratings &&
                   fabs((double)rating - (double)im.sum / (double)im.count) >= conf->divergence;
    int failed = rs.captchas_failed + (captcha && !passed ? 1 : 0);
    int streak = fast ? rs.fast_streak + 1 : 0;
    int64_t timeout_until = rs.timeout_until;
    bool excluded = rs.excluded;
    if (captcha && !passed && failed >= conf->captcha_fail_limit) {
        timeout_until = now + conf->timeout_s;
        excluded = true; /* their ratings no longer count anywhere */
    }
    if (streak >= conf->fast_limit) {
        timeout_until = now + conf->timeout_s;
        streak = 0;
    }
    /* the reward is what is paid: nothing without a plugin that keeps kudos */
    size_t payers = 0;
    r->api->hook_handlers(HN_HOOK_ID_kudos_grant, &payers);
    double reward = payers > 0 && who.user.id > 0 && !(captcha && !passed)
                        ? conf->kudos_per_rating
                        : 0;
    char rid[RT_ID_LEN];
    rt_uuid(rid);
    bool trusted = (who.user.roles & (HN_ROLE_TRUSTED | HN_ROLE_MODERATOR | HN_ROLE_ADMIN)) != 0;
    int64_t age = who.user.id > 0 && who.user.created > 0 ? now - who.user.created : 0;
    hn_value row[] = {HN_V_TEXT(rid),
                      HN_V_TEXT(image_id),
                      HN_V_TEXT(who.key),
                      HN_V_INT(who.user.id),
                      HN_V_TEXT(who.user.username[0] ? who.user.username : "Anonymous#0"),
                      HN_V_INT(rating),
                      artifacts >= 0 ? HN_V_INT(artifacts) : HN_V_NULL,
                      HN_V_TEXT(who.client_agent),
                      HN_V_DOUBLE(reward),
                      HN_V_INT(reward > 0 ? 0 : 1),
                      HN_V_INT(captcha),
                      HN_V_INT(passed),
                      HN_V_INT(suspect),
                      HN_V_INT(fast),
                      HN_V_INT(trusted),
                      HN_V_INT(age),
                      HN_V_INT(now)};
    hn_value counts[] = {HN_V_INT(rating), HN_V_TEXT(image_id)};
    hn_value rater[] = {HN_V_INT(captcha && !passed ? 1 : 0), HN_V_INT(passed ? 1 : 0),
                        HN_V_INT(streak), HN_V_INT(suspect ? 1 : 0), HN_V_INT(timeout_until),
                        HN_V_INT(excluded ? 1 : 0), HN_V_TEXT(who.key)};
    hn_value ensure[] = {HN_V_TEXT(who.key), HN_V_INT(who.user.id)};
    if (r->db->exec(c,
                    "INSERT INTO ratings_ratings (id, image_id, rater, user_id, username, rating,"
                    " artifacts, source, client_agent, reward, paid, captcha, passed, suspect,"
                    " fast, trusted, account_age, created) VALUES (?, ?, ?, ?, ?, ?, ?, 'v1', ?,"
                    " ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row, sizeof(row) / sizeof(row[0]), NULL, &err) != HN_OK ||
        (!captcha &&
         r->db->exec(c,
                     "UPDATE ratings_images SET ratings_count = ratings_count + 1,"
                     " rating_sum = rating_sum + ? WHERE id = ?",
                     counts, 2, NULL, &err) != HN_OK) ||
        r->db->exec(c,
                    "INSERT INTO ratings_raters (rater, user_id) VALUES (?, ?)"
                    " ON CONFLICT (rater) DO NOTHING",
                    ensure, 2, NULL, &err) != HN_OK ||
        r->db->exec(c,
                    "UPDATE ratings_raters SET ratings = ratings + 1,"
                    " captchas_failed = captchas_failed + ?, captchas_passed = captchas_passed + ?,"
                    " fast_streak = ?, suspect = suspect + ?, timeout_until = ?, excluded = ?"
                    " WHERE rater = ?",
                    rater, 7, NULL, &err) != HN_OK ||
        r->db->commit(c, &err) != HN_OK)
        goto fail;
    r->db->release(r->db_state, c);
    /* paid after the rating's own commit; a failure leaves it to the timer */
    if (reward > 0)
        pay(r, rid, who.user.id, reward);
    r->api->respond_json(req, 201,
                         json_pack("{s:f, s:s}", "reward", reward, "message", "Rating submitted"));
    return;
fail:
    release_and_fail(r, req, c, in_tx, &err);
}

/* ---- GET /datasets --------------------------------------------------------------------- */

static void route_datasets(hn_request *req, void *state) {
    ratings *r = state;
    if (!rt_ready(r, req))
        return;
    hn_error err = {0};
    hn_db *c = acquire_or_fail(r, req, &err);
    if (!c)
        return;
    hn_stmt *st = r->db->query(c,
                               "SELECT d.id, d.name, d.description, COUNT(i.id) FROM"
                               " ratings_datasets d LEFT JOIN ratings_images i ON"
                               " i.dataset_id = d.id WHERE d.captcha = 0 GROUP BY d.id, d.name,"
                               " d.description, d.created ORDER BY d.created, d.name",
                               NULL, 0, &err);
    json_t *out = json_array();
    int got = 0;
    while (st && (got = r->db->step(st, &err)) == 1)
        json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:I}", "id", r->db->col_text(st, 0),
                                             "name", r->db->col_text(st, 1), "description",
                                             r->db->col_text(st, 2), "image_count",
                                             (json_int_t)r->db->col_int(st, 3)));
    if (st)
        r->db->finish(st);
    r->db->release(r->db_state, c);
    if (!st || got < 0) {
        json_decref(out);
        storage_fail(r, req, &err);
        return;
    }
    r->api->respond_json(req, 200, out);
}

/* ---- GET /teams: the horde's teams (the broker's /api/v2/teams, in process) ------------ */

typedef struct teams_call {
    ratings *r;
    hn_request *req;
    int status;
    char *body;
    size_t len;
} teams_call;

static void teams_work(void *arg) {
    teams_call *t = arg;
    const char *const headers[] = {"Accept", "application/json", NULL};
    if (t->r->api->local_request(HN_GET, "/api/v2/teams", headers, NULL, 0, &t->status, &t->body,
                                 &t->len) != 0)
        t->status = 0;
}

static void teams_done(void *arg) {
    teams_call *t = arg;
    json_t *out = json_array();
    json_t *teams = t->status == 200 && t->body ? json_loads(t->body, 0, NULL) : NULL;
    size_t i;
    json_t *team;
    json_array_foreach(teams, i, team) {
        const char *id = json_string_value(json_object_get(team, "id"));
        const char *name = json_string_value(json_object_get(team, "name"));
        if (id && name)
            json_array_append_new(out, json_pack("{s:s, s:s, s:b}", "id", id, "team_name", name,
                                                 "is_private", 0));
    }
    json_decref(teams);
    /* no teams plugin on this node (404): no teams */
    t->r->api->respond_json(t->req, 200, out);
    free(t->body);
    free(t);
}

static void route_teams(hn_request *req, void *state) {
    ratings *r = state;
    teams_call *t = calloc(1, sizeof(*t));
    if (!t) {
        rt_fail(r, req, 500, "InternalServerError", "out of memory");
        return;
    }
    t->r = r;
    t->req = req;
    r->api->req_suspend(req);
    if (r->api->work_submit(teams_work, teams_done, t) != 0) {
        t->status = 0;
        teams_done(t);
    }
}

/* ---- GET /image/ratings/{image_id} and the image itself ----------------------------------- */

/* The start of both routes: the store ready, {image_id} (borrowed from the
 * request) and a connection; NULL when answered. */
static hn_db *open_image_route(ratings *r, hn_request *req, const char **image_id,
                               hn_error *err) {
    if (!rt_ready(r, req))
        return NULL;
    *image_id = r->api->req_param(req, "image_id");
    return acquire_or_fail(r, req, err);
}

static void route_image_ratings(hn_request *req, void *state) {
    ratings *r = state;
    const char *image_id;
    hn_error err = {0};
    hn_db *c = open_image_route(r, req, &image_id, &err);
    if (!c)
        return;
    int64_t one;
    bool found = false;
    hn_value a[] = {HN_V_TEXT(image_id)};
    if (q_int(r, c, "SELECT 1 FROM ratings_images WHERE id = ?", a, 1, &one, &found, &err) !=
        HN_OK) {
        release_and_fail(r, req, c, false, &err);
        return;
    }
    if (!found) {
        r->db->release(r->db_state, c);
        rt_fail(r, req, 404, "ImageNotFound", "Image not found.");
        return;
    }
    hn_stmt *st = r->db->query(c,
                               "SELECT username, rating, artifacts FROM ratings_ratings"
                               " WHERE image_id = ? ORDER BY created, id",
                               a, 1, &err);
    json_t *list = json_array();
    double sum = 0;
    int n = 0, got = 0;
    while (st && (got = r->db->step(st, &err)) == 1) {
        int rating = (int)r->db->col_int(st, 1);
        json_array_append_new(list, json_pack("{s:s, s:i, s:o}", "username",
                                              r->db->col_text(st, 0), "rating", rating,
                                              "artifacts",
                                              r->db->col_is_null(st, 2)
                                                  ? json_null()
                                                  : json_integer(r->db->col_int(st, 2))));
        sum += rating;
        n++;
    }
    if (st)
        r->db->finish(st);
    r->db->release(r->db_state, c);
    if (!st || got < 0) {
        json_decref(list);
        storage_fail(r, req, &err);
        return;
    }
    char url[512];
    rt_image_url(r, image_id, url, sizeof(url));
    double average = n ? round(sum / n * 100.0) / 100.0 : 0.0;
    r->api->respond_json(req, 200,
                         json_pack("{s:i, s:s, s:s, s:f, s:i, s:o}", "total", n, "image", url,
                                   "image_id", image_id, "average", average, "times_rated", n,
                                   "ratings", list));
}

static void route_image_file(hn_request *req, void *state) {
    ratings *r = state;
    const char *image_id;
    hn_error err = {0};
    hn_db *c = open_image_route(r, req, &image_id, &err);
    if (!c)
        return;
    char key[160] = "";
    hn_value a[] = {HN_V_TEXT(image_id)};
    hn_stmt *st = r->db->query(c, "SELECT image_key FROM ratings_images WHERE id = ?", a, 1, &err);
    int got = st ? r->db->step(st, &err) : -1;
    if (got == 1)
        snprintf(key, sizeof(key), "%s", r->db->col_text(st, 0));
    if (st)
        r->db->finish(st);
    r->db->release(r->db_state, c);
    if (got < 0) {
        storage_fail(r, req, &err);
        return;
    }
    void *data = NULL;
    size_t len = 0;
    if (got == 0 || r->img->get(r->img_state, key, &data, &len, &err) != HN_OK) {
        rt_fail(r, req, 404, "ImageNotFound", "Image not found.");
        return;
    }
    r->api->resp_header(req, "Cache-Control", "public, max-age=86400");
    r->api->respond(req, 200, rt_image_type(data, len), data, len);
    free(data);
}

int rt_moderation_register(ratings *r);

int rt_api_v1_register(ratings *r) {
    const hn_api *api = r->api;
    hn_plugin *self = r->self;
    int bad = 0;
    bad |= api->route_add(self, HN_GET, "/api/v1/rating/new", route_pop, r);
    bad |= api->route_add(self, HN_GET, "/api/v1/rating/new/{dataset_id}", route_pop, r);
    bad |= api->route_add(self, HN_GET, "/api/v1/rating/new/{dataset_id}/{model_name}", route_pop,
                          r);
    bad |= api->route_add(self, HN_POST, "/api/v1/rating/{image_id}", route_rate, r);
    bad |= api->route_add(self, HN_GET, "/api/v1/datasets", route_datasets, r);
    bad |= api->route_add(self, HN_GET, "/api/v1/teams", route_teams, r);
    bad |= api->route_add(self, HN_GET, "/api/v1/image/ratings/{image_id}", route_image_ratings, r);
    bad |= api->route_add(self, HN_GET, "/api/v1/image/file/{image_id}", route_image_file, r);
    bad |= rt_moderation_register(r);
    return bad ? -1 : 0;
}
