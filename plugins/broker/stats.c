/* broker: image statistics and news (spec/horde-api.md §2):
 *   GET /api/v2/stats/img/totals   {"minute"|"hour"|"day"|"month"|"total": {"images","ps"}}
 *   GET /api/v2/stats/img/models   {"day"|"month"|"total": {model: images}}, model_state
 *   GET /api/v2/status/news        [{date_published, newspiece, importance, tags, title,
 *                                    more_info_urls}]
 *
 * Every finished image (submit.c) adds to an hourly row per model and
 * process (mod_stats_img, upserted in the same group commit as the job; each
 * broker process has its own rows, so brokers sharing a database never wait
 * on each other's row locks; reads sum them), to
 * per-second and per-minute rings for "minute" and "hour", and to the
 * all-time totals. "day" is the last 24 hourly rows, "month" the last 30
 * days; the rings start empty after a restart (the horde precompiles these
 * numbers every few minutes, so they lag too). In cluster mode every node's
 * images count: the hourly rows and totals are read again with the
 * moderation reload (moderation.c), and "minute" and "hour" come from
 * mod_stats_recent, one row per second and node, read by that reload too
 * (so they lag it by up to its period, a few seconds). News comes from the JSON file
 * named by `news_file` (an array of news pieces), else none. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "cluster.h"
#include "moderation.h"

#define KEEP_HOURS (31 * 24)

static int bucket_add(br_mod *m, int64_t hour, const char *model, int64_t images, double ps) {
    /* newest buckets are at the end: the current hour is found at once */
    for (size_t i = m->n_buckets; i-- > 0;) {
        br_stat_bucket *s = &m->buckets[i];
        if (s->hour == hour && strcmp(s->model, model) == 0) {
            s->images += images;
            s->ps += ps;
            return 0;
        }
    }
    /* drop buckets older than a month (their numbers stay in the totals) */
    size_t w = 0;
    for (size_t i = 0; i < m->n_buckets; i++) {
        if (m->buckets[i].hour > hour - KEEP_HOURS)
            m->buckets[w++] = m->buckets[i];
        else
            free(m->buckets[i].model);
    }
    m->n_buckets = w;
    if (br_mod_reserve(&m->buckets, m->n_buckets, &m->cap_buckets, sizeof(*m->buckets)) != 0)
        return -1;
    char *name = strdup(model);
    if (!name)
        return -1;
    m->buckets[m->n_buckets++] = (br_stat_bucket){hour, name, images, ps};
    return 0;
}

static void total_add(br_mod *m, const char *model, int64_t images, double ps) {
    br_stat_total *t = br_map_get(&m->totals, model);
    if (!t) {
        t = calloc(1, sizeof(*t));
        if (!t || !(t->model = strdup(model)) || br_map_put(&m->totals, t->model, t) != 0) {
            if (t)
                free(t->model);
            free(t);
            return;
        }
    }
    t->images += images;
    t->ps += ps;
}

int br_stats_load(broker *b, hn_db *db, hn_error *err) {
    br_mod *m = b->mod;
    int64_t hour_now = br_now_ms() / 3600000;
    hn_value args[] = {HN_V_INT(hour_now - KEEP_HOURS)};
    hn_stmt *st = b->db->query(db,
                               "SELECT hour, model, SUM(images), SUM(ps) FROM mod_stats_img "
                               "WHERE hour > ? GROUP BY hour, model",
                               args, 1, err);
    if (!st)
        return -1;
    /* read into buckets and totals of our own, then swap them in (also a
     * reload in cluster mode: the database holds every broker's rows) */
    br_mod fresh;
    memset(&fresh, 0, sizeof(fresh));
    br_map_init(&fresh.totals);
    int rc;
    while ((rc = b->db->step(st, err)) == 1)
        bucket_add(&fresh, b->db->col_int(st, 0), b->db->col_text(st, 1), b->db->col_int(st, 2),
                   b->db->col_double(st, 3));
    b->db->finish(st);
    if (rc == 0) {
        st = b->db->query(db, "SELECT model, SUM(images), SUM(ps) FROM mod_stats_img GROUP BY model",
                          NULL, 0, err);
        if (!st) {
            br_stats_free(&fresh);
            return -1;
        }
        while ((rc = b->db->step(st, err)) == 1)
            total_add(&fresh, b->db->col_text(st, 0), b->db->col_int(st, 1),
                      b->db->col_double(st, 2));
        b->db->finish(st);
    }
    if (rc < 0) {
        br_stats_free(&fresh);
        return -1;
    }
    pthread_mutex_lock(&m->lock);
    br_stat_bucket *old_buckets = m->buckets;
    size_t n_old = m->n_buckets;
    br_map old_totals = m->totals;
    m->buckets = fresh.buckets;
    m->n_buckets = fresh.n_buckets;
    m->cap_buckets = fresh.cap_buckets;
    m->totals = fresh.totals;
    pthread_mutex_unlock(&m->lock);
    fresh.buckets = old_buckets;
    fresh.n_buckets = n_old;
    fresh.totals = old_totals;
    br_stats_free(&fresh);
    return 0;
}

/* Rows of mod_stats_recent older than this are dropped (the leader, at each
 * reload): "hour" reads the last 3600 s. */
#define RECENT_KEEP_S 7200

int br_stats_load_recent(broker *b, hn_db *db, hn_error *err) {
    br_mod *m = b->mod;
    int64_t now_s = br_now_ms() / 1000;
    if (br_cluster_leads(b)) {
        hn_value old[] = {HN_V_INT(now_s - RECENT_KEEP_S)};
        if (b->db->exec(db, "DELETE FROM mod_stats_recent WHERE sec < ?", old, 1, NULL, err) !=
            HN_OK)
            return -1;
    }
    hn_value since[] = {HN_V_INT(now_s - 3600)};
    hn_stmt *st = b->db->query(db,
                               "SELECT sec, SUM(images), SUM(ps) FROM mod_stats_recent "
                               "WHERE sec > ? GROUP BY sec",
                               since, 1, err);
    if (!st)
        return -1;
    br_stat_sec *rows = NULL;
    size_t n = 0, cap = 0;
    int rc;
    while ((rc = b->db->step(st, err)) == 1) {
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            br_stat_sec *grown = realloc(rows, nc * sizeof(*rows));
            if (!grown) {
                b->api->error(err, 500, "InternalServerError", "out of memory");
                rc = -1;
                break;
            }
            rows = grown;
            cap = nc;
        }
        rows[n++] = (br_stat_sec){b->db->col_int(st, 0), b->db->col_int(st, 1),
                                  b->db->col_double(st, 2)};
    }
    b->db->finish(st);
    if (rc < 0) {
        free(rows);
        return -1;
    }
    pthread_mutex_lock(&m->lock);
    br_stat_sec *old_rows = m->recent;
    m->recent = rows;
    m->n_recent = n;
    m->recent_loaded = true;
    pthread_mutex_unlock(&m->lock);
    free(old_rows);
    return 0;
}

/* Cluster mode: the images of the seconds in (from, to] (caller holds m->lock). */
static void recent_sum(const br_mod *m, int64_t from, int64_t to, int64_t *images, double *ps) {
    *images = 0;
    *ps = 0;
    for (size_t i = 0; i < m->n_recent; i++) {
        if (m->recent[i].sec > from && m->recent[i].sec <= to) {
            *images += m->recent[i].images;
            *ps += m->recent[i].ps;
        }
    }
}

void br_stats_free(br_mod *m) {
    free(m->recent);
    m->recent = NULL;
    m->n_recent = 0;
    for (size_t i = 0; i < m->n_buckets; i++)
        free(m->buckets[i].model);
    free(m->buckets);
    m->buckets = NULL;
    m->n_buckets = 0;
    size_t pos = 0;
    const char *k;
    void *v;
    while (br_map_next(&m->totals, &pos, &k, &v)) {
        br_stat_total *t = v;
        free(t->model);
        free(t);
    }
    br_map_free(&m->totals);
}

/* Adds to a ring slot of `unit` seconds (caller holds m->lock). */
static void ring_add(int64_t *slot, int64_t *images, double *ps, int64_t t, double things) {
    int i = (int)(t % 60);
    if (slot[i] != t) {
        slot[i] = t;
        images[i] = 0;
        ps[i] = 0;
    }
    images[i]++;
    ps[i] += things;
}

static void ring_sum(const int64_t *slot, const int64_t *images, const double *ps, int64_t t,
                     int64_t *out_images, double *out_ps) {
    *out_images = 0;
    *out_ps = 0;
    for (int i = 0; i < 60; i++) {
        if (slot[i] > t - 60 && slot[i] <= t) {
            *out_images += images[i];
            *out_ps += ps[i];
        }
    }
}

void br_stats_record(broker *b, br_op *op, const char *model, double pixelsteps, int64_t now_ms) {
    br_mod *m = b->mod;
    if (!m || !model)
        return;
    int64_t hour = now_ms / 3600000;
    pthread_mutex_lock(&m->lock);
    bucket_add(m, hour, model, 1, pixelsteps);
    total_add(m, model, 1, pixelsteps);
    ring_add(m->sec_slot, m->sec_images, m->sec_ps, now_ms / 1000, pixelsteps);
    ring_add(m->min_slot, m->min_images, m->min_ps, now_ms / 60000, pixelsteps);
    pthread_mutex_unlock(&m->lock);
    hn_value args[] = {HN_V_INT(hour), HN_V_TEXT(model), HN_V_INT(m->stats_writer),
                       HN_V_DOUBLE(pixelsteps)};
    br_op_sql(op,
              "INSERT INTO mod_stats_img (hour, model, writer, images, ps) VALUES (?, ?, ?, 1, ?) "
              "ON CONFLICT (hour, model, writer) DO UPDATE SET images = mod_stats_img.images + 1, "
              "ps = mod_stats_img.ps + excluded.ps",
              args, 4);
    if (!b->cluster)
        return;
    /* this node's row of this second (other nodes write rows of their own) */
    hn_value rec[] = {HN_V_INT(now_ms / 1000), HN_V_INT(m->stats_writer),
                      HN_V_DOUBLE(pixelsteps)};
    br_op_sql(op,
              "INSERT INTO mod_stats_recent (sec, writer, images, ps) VALUES (?, ?, 1, ?) "
              "ON CONFLICT (sec, writer) DO UPDATE SET images = mod_stats_recent.images + 1, "
              "ps = mod_stats_recent.ps + excluded.ps",
              rec, 3);
}

static json_t *pair(int64_t images, double ps) {
    return json_pack("{s:I, s:I}", "images", (json_int_t)images, "ps", (json_int_t)ps);
}

void br_route_stats_totals(hn_request *req, void *state) {
    broker *b = state;
    br_mod *m = b->mod;
    int64_t now = br_now_ms();
    int64_t hour = now / 3600000;
    int64_t mi, hi, di = 0, moi = 0, ti = 0;
    double mp, hp, dp = 0, mop = 0, tp = 0;
    pthread_mutex_lock(&m->lock);
    if (b->cluster && m->recent_loaded) { /* every node's (cluster mode) */
        int64_t now_s = now / 1000, now_min = now / 60000;
        recent_sum(m, now_s - 60, now_s, &mi, &mp);
        /* the minute ring's window: the last 60 whole minutes */
        recent_sum(m, (now_min - 60) * 60 + 59, now_min * 60 + 59, &hi, &hp);
    } else {
        ring_sum(m->sec_slot, m->sec_images, m->sec_ps, now / 1000, &mi, &mp);
        ring_sum(m->min_slot, m->min_images, m->min_ps, now / 60000, &hi, &hp);
    }
    for (size_t i = 0; i < m->n_buckets; i++) {
        const br_stat_bucket *s = &m->buckets[i];
        if (s->hour > hour - 24) {
            di += s->images;
            dp += s->ps;
        }
        if (s->hour > hour - 30 * 24) {
            moi += s->images;
            mop += s->ps;
        }
    }
    size_t pos = 0;
    const char *k;
    void *v;
    while (br_map_next(&m->totals, &pos, &k, &v)) {
        const br_stat_total *t = v;
        ti += t->images;
        tp += t->ps;
    }
    pthread_mutex_unlock(&m->lock);
    b->api->respond_json(req, 200,
                         json_pack("{s:o, s:o, s:o, s:o, s:o}", "minute", pair(mi, mp), "hour",
                                   pair(hi, hp), "day", pair(di, dp), "month", pair(moi, mop),
                                   "total", pair(ti, tp)));
}

/* model_state: known (in the model reference), custom (not in it), all. */
static bool state_keeps(broker *b, const char *st, const char *model) {
    if (strcmp(st, "all") == 0)
        return true;
    bool known = b->ref ? br_model_known(b->ref, model) : true;
    return strcmp(st, "known") == 0 ? known : !known;
}

static void add_count(json_t *o, const char *model, int64_t n) {
    json_int_t have = json_integer_value(json_object_get(o, model));
    json_object_set_new(o, model, json_integer(have + (json_int_t)n));
}

void br_route_stats_models(hn_request *req, void *state) {
    broker *b = state;
    br_mod *m = b->mod;
    const char *st = b->api->req_query(req, "model_state");
    if (!st || !*st)
        st = "known";
    if (strcmp(st, "known") != 0 && strcmp(st, "custom") != 0 && strcmp(st, "all") != 0) {
        br_fail(b, req, 400, "BadRequest",
                "model_state must be one of 'known', 'custom' or 'all'.");
        return;
    }
    int64_t hour = br_now_ms() / 3600000;
    json_t *day = json_object(), *month = json_object(), *total = json_object();
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n_buckets; i++) {
        const br_stat_bucket *s = &m->buckets[i];
        if (!state_keeps(b, st, s->model))
            continue;
        if (s->hour > hour - 24)
            add_count(day, s->model, s->images);
        if (s->hour > hour - 30 * 24)
            add_count(month, s->model, s->images);
    }
    size_t pos = 0;
    const char *k;
    void *v;
    while (br_map_next(&m->totals, &pos, &k, &v)) {
        const br_stat_total *t = v;
        if (state_keeps(b, st, t->model))
            add_count(total, t->model, t->images);
    }
    pthread_mutex_unlock(&m->lock);
    b->api->respond_json(req, 200,
                         json_pack("{s:o, s:o, s:o}", "day", day, "month", month, "total", total));
}

/* ---- news ------------------------------------------------------------------------------- */

int br_news_load(broker *b, hn_error *err) {
    br_mod *m = b->mod;
    const char *file = b->conf->news_file;
    if (!file || !*file) {
        m->news = json_array();
        return 0;
    }
    char path[4096];
    if (file[0] == '/')
        snprintf(path, sizeof(path), "%s", file);
    else
        snprintf(path, sizeof(path), "%s/%s", b->api->config_dir(), file);
    json_error_t je;
    json_t *news = json_load_file(path, 0, &je);
    if (!news || !json_is_array(news)) {
        json_decref(news);
        b->api->error(err, 400, "BadConfig", "news_file %s: %s", path,
                      news ? "not a JSON array" : je.text);
        return -1;
    }
    /* each piece gets the horde's fields, with defaults for missing ones */
    size_t i;
    json_t *piece;
    json_array_foreach(news, i, piece) {
        if (!json_is_object(piece)) {
            json_decref(news);
            b->api->error(err, 400, "BadConfig", "news_file %s: piece %zu is not an object", path,
                          i);
            return -1;
        }
        if (!json_object_get(piece, "importance"))
            json_object_set_new(piece, "importance", json_string("Information"));
        if (!json_object_get(piece, "tags"))
            json_object_set_new(piece, "tags", json_array());
        if (!json_object_get(piece, "more_info_urls"))
            json_object_set_new(piece, "more_info_urls", json_array());
    }
    m->news = news;
    return 0;
}

void br_route_news(hn_request *req, void *state) {
    broker *b = state;
    b->api->respond_json(req, 200, json_deep_copy(b->mod->news));
}
