/* ratings: the moderation and analysis listings (ratings.md §1.4), for
 * moderators and admins only (403 NotModerator otherwise):
 *   GET /api/v1/user/ratings/            ratings of every rater, filtered
 *   GET /api/v1/user/validate/{user_id}  one user's ratings, filtered
 *   GET /api/v1/user/check/{user_id}     one user's rate and trust numbers
 * Filters: rating + rating_comparison (ge|le|eq), artifacts +
 * artifacts_comparison, min_ratings (the image's times_rated), diverge
 * (|rating - image average| at least this), client_agent, limit, offset.
 * `format=html` is answered as JSON (noted in the README). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ratings.h"

typedef struct filters {
    int rating, artifacts;           /* -1: no filter */
    char rating_cmp, artifacts_cmp;  /* 'g' ge, 'l' le, 'e' eq */
    long long min_ratings;
    double diverge;                  /* < 0: no filter */
    const char *client_agent;
    long long limit, offset;
} filters;

static bool number(const char *s, double lo, double hi, double *out) {
    if (!s || !*s)
        return false;
    char *end;
    double v = strtod(s, &end);
    if (*end || v < lo || v > hi || v != v)
        return false;
    *out = v;
    return true;
}

/* Reads the query; false: answered 400 naming the parameter. */
static bool read_filters(ratings *r, hn_request *req, filters *f) {
    const hn_api *api = r->api;
    memset(f, 0, sizeof(*f));
    f->rating = f->artifacts = -1;
    f->diverge = -1;
    f->limit = 50;
    f->rating_cmp = f->artifacts_cmp = 'e';
    struct {
        const char *name;
        double lo, hi;
    } nums[] = {{"rating", 1, 10}, {"artifacts", 0, 5}, {"min_ratings", 0, 1e9},
                {"diverge", 0, 10}, {"limit", 1, 1000}, {"offset", 0, 1e12}};
    double v[6] = {-1, -1, 0, -1, 50, 0};
    for (int i = 0; i < 6; i++) {
        const char *s = api->req_query(req, nums[i].name);
        if (s && !number(s, nums[i].lo, nums[i].hi, &v[i])) {
            rt_fail(r, req, 400, "BadRequest",
                    "Query parameter '%s' must be a number from %g to %g.", nums[i].name,
                    nums[i].lo, nums[i].hi);
            return false;
        }
    }
    f->rating = (int)v[0];
    f->artifacts = (int)v[1];
    f->min_ratings = (long long)v[2];
    f->diverge = v[3];
    f->limit = (long long)v[4];
    f->offset = (long long)v[5];
    const char *cmps[2] = {"rating_comparison", "artifacts_comparison"};
    char *outs[2] = {&f->rating_cmp, &f->artifacts_cmp};
    for (int i = 0; i < 2; i++) {
        const char *s = api->req_query(req, cmps[i]);
        if (!s)
            continue;
        if (strcmp(s, "ge") && strcmp(s, "le") && strcmp(s, "eq")) {
            rt_fail(r, req, 400, "BadRequest", "Query parameter '%s' must be ge, le or eq.",
                    cmps[i]);
            return false;
        }
        *outs[i] = s[0] == 'g' ? 'g' : s[0] == 'l' ? 'l' : 'e';
    }
    f->client_agent = api->req_query(req, "client_agent");
    return true;
}

static bool compare(int value, char cmp, int want) {
    return cmp == 'g' ? value >= want : cmp == 'l' ? value <= want : value == want;
}

static bool moderator(ratings *r, hn_request *req) {
    rt_rater who;
    if (!rt_authenticate(r, req, &who))
        return false;
    if (!(who.user.roles & (HN_ROLE_MODERATOR | HN_ROLE_ADMIN))) {
        rt_fail(r, req, 403, "NotModerator", "Only moderators can see this.");
        return false;
    }
    return true;
}

static bool user_id_param(ratings *r, hn_request *req, long long *id) {
    const char *s = r->api->req_param(req, "user_id");
    char *end;
    long long v = s ? strtoll(s, &end, 10) : -1;
    if (!s || !*s || *end || v < 0) {
        rt_fail(r, req, 400, "BadRequest", "user_id must be a number.");
        return false;
    }
    *id = v;
    return true;
}

/* Runs the listing; user_id < 0: everyone. with_username: the /user/ratings form. */
static void listing(ratings *r, hn_request *req, long long user_id, bool with_username) {
    filters f;
    if (!read_filters(r, req, &f))
        return;
    hn_error err = {0};
    hn_db *c = r->db->acquire(r->db_state, &err);
    if (!c) {
        rt_fail(r, req, 500, "InternalServerError", "The ratings store failed.");
        return;
    }
    hn_value a[] = {HN_V_INT(user_id)};
    hn_stmt *st = r->db->query(
        c,
        user_id >= 0
            ? "SELECT r.username, r.image_id, r.rating, r.artifacts, i.rating_sum,"
              " i.ratings_count, r.client_agent FROM ratings_ratings r JOIN ratings_images i"
              " ON i.id = r.image_id WHERE r.user_id = ? AND r.user_id > 0"
              " ORDER BY r.created DESC, r.id"
            : "SELECT r.username, r.image_id, r.rating, r.artifacts, i.rating_sum,"
              " i.ratings_count, r.client_agent FROM ratings_ratings r JOIN ratings_images i"
              " ON i.id = r.image_id ORDER BY r.created DESC, r.id",
        a, user_id >= 0 ? 1 : 0, &err);
    json_t *rows = json_array();
    long long total = 0;
    int got = 0;
    while (st && (got = r->db->step(st, &err)) == 1) {
        int rating = (int)r->db->col_int(st, 2);
        bool no_artifacts = r->db->col_is_null(st, 3);
        int artifacts = no_artifacts ? -1 : (int)r->db->col_int(st, 3);
        int64_t sum = r->db->col_int(st, 4), count = r->db->col_int(st, 5);
        double average = count ? (double)sum / (double)count : 0;
        if ((f.rating >= 0 && !compare(rating, f.rating_cmp, f.rating)) ||
            (f.artifacts >= 0 &&
             (no_artifacts || !compare(artifacts, f.artifacts_cmp, f.artifacts))) ||
            count < f.min_ratings || (f.diverge >= 0 && fabs(rating - average) < f.diverge) ||
            (f.client_agent && strcmp(f.client_agent, r->db->col_text(st, 6)) != 0))
            continue;
        total++;
        if (total <= f.offset || (long long)json_array_size(rows) >= f.limit)
            continue;
        char url[512];
        rt_image_url(r, r->db->col_text(st, 1), url, sizeof(url));
        json_t *row = json_pack("{s:s, s:i, s:o, s:f, s:I}", "image", url, "rating", rating,
                                "artifacts", no_artifacts ? json_null() : json_integer(artifacts),
                                "average", round(average * 100) / 100, "times_rated",
                                (json_int_t)count);
        if (with_username)
            json_object_set_new(row, "username", json_string(r->db->col_text(st, 0)));
        json_array_append_new(rows, row);
    }
    if (st)
        r->db->finish(st);
    r->db->release(r->db_state, c);
    if (!st || got < 0) {
        json_decref(rows);
        rt_fail(r, req, 500, "InternalServerError", "The ratings store failed.");
        return;
    }
    r->api->respond_json(req, 200, json_pack("{s:I, s:o}", "total", (json_int_t)total, "ratings",
                                             rows));
}

static void route_user_ratings(hn_request *req, void *state) {
    ratings *r = state;
    if (rt_ready(r, req) && moderator(r, req))
        listing(r, req, -1, true);
}

static void route_validate(hn_request *req, void *state) {
    ratings *r = state;
    long long id;
    if (rt_ready(r, req) && moderator(r, req) && user_id_param(r, req, &id))
        listing(r, req, id, false);
}

static void route_check(hn_request *req, void *state) {
    ratings *r = state;
    long long id;
    if (!rt_ready(r, req) || !moderator(r, req) || !user_id_param(r, req, &id))
        return;
    double minutes = 60, divergence = r->conf->divergence;
    const char *m = r->api->req_query(req, "minutes"), *d = r->api->req_query(req, "divergence");
    if ((m && !number(m, 1, 1e7, &minutes)) || (d && !number(d, 0, 10, &divergence))) {
        rt_fail(r, req, 400, "BadRequest", "minutes must be >= 1 and divergence >= 0.");
        return;
    }
    int64_t now = rt_now();
    int64_t since = now - (int64_t)(minutes * 60), since3h = now - 3 * 3600;
    hn_error err = {0};
    hn_db *c = r->db->acquire(r->db_state, &err);
    if (!c) {
        rt_fail(r, req, 500, "InternalServerError", "The ratings store failed.");
        return;
    }
    char key[40];
    snprintf(key, sizeof(key), "u:%lld", id);
    hn_value a[] = {HN_V_TEXT(key)};
    hn_stmt *st = r->db->query(c,
                               "SELECT r.created, r.rating, i.rating_sum, i.ratings_count,"
                               " r.captcha FROM ratings_ratings r JOIN ratings_images i"
                               " ON i.id = r.image_id WHERE r.rater = ?",
                               a, 1, &err);
    long long in_frame = 0, in_3h = 0, suspect = 0;
    int got = 0;
    while (st && (got = r->db->step(st, &err)) == 1) {
        int64_t created = r->db->col_int(st, 0);
        int64_t count = r->db->col_int(st, 3);
        double average = count ? (double)r->db->col_int(st, 2) / (double)count : 0;
        if (created >= since) {
            in_frame++;
            if (!r->db->col_int(st, 4) && count > 1 &&
                fabs((double)r->db->col_int(st, 1) - average) > divergence)
                suspect++;
        }
        if (created >= since3h)
            in_3h++;
    }
    if (st)
        r->db->finish(st);
    rt_rater_state rs;
    hn_rc rc = rt_rater_load(r, c, key, &rs, &err);
    r->db->release(r->db_state, c);
    if (!st || got < 0 || rc != HN_OK) {
        rt_fail(r, req, 500, "InternalServerError", "The ratings store failed.");
        return;
    }
    r->api->respond_json(
        req, 200,
        json_pack("{s:I, s:f, s:I, s:f, s:I, s:i, s:f, s:b, s:I}", "ratings_in_timeframe",
                  (json_int_t)in_frame, "ratings_per_minute_in_timeframe",
                  round((double)in_frame / minutes * 10000) / 10000, "ratings_past_three_hours",
                  (json_int_t)in_3h, "ratings_per_minute_for_past_three_hours",
                  round((double)in_3h / 180.0 * 10000) / 10000, "suspect_divergences",
                  (json_int_t)suspect, "captchas_failed", rs.captchas_failed, "trust",
                  rt_trust(r->conf, &rs), "excluded", rs.excluded, "timeout_until",
                  (json_int_t)rs.timeout_until));
}

int rt_moderation_register(ratings *r) {
    const hn_api *api = r->api;
    int bad = 0;
    bad |= api->route_add(r->self, HN_GET, "/api/v1/user/ratings/", route_user_ratings, r);
    bad |= api->route_add(r->self, HN_GET, "/api/v1/user/ratings", route_user_ratings, r);
    bad |= api->route_add(r->self, HN_GET, "/api/v1/user/validate/{user_id}", route_validate, r);
    bad |= api->route_add(r->self, HN_GET, "/api/v1/user/check/{user_id}", route_check, r);
    return bad ? -1 : 0;
}
