/* ratings: the schema (owner "ratings") and the shared queries. SQL is the
 * common subset of SQLite and PostgreSQL (storage.h). */
#include <stdio.h>
#include <string.h>

#include "ratings.h"

static const hn_migration rt_migrations[] = {
    {1,
     "CREATE TABLE ratings_datasets (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
     " description TEXT NOT NULL, captcha INTEGER NOT NULL DEFAULT 0, created BIGINT NOT NULL);"
     /* one row per image in the pool; ratings_count/rating_sum count every
      * stored rating (exports recompute means without distrusted raters) */
     "CREATE TABLE ratings_images (id TEXT PRIMARY KEY, dataset_id TEXT NOT NULL,"
     " image_key TEXT NOT NULL, source TEXT NOT NULL, request_id TEXT, job_id TEXT UNIQUE,"
     " user_id BIGINT NOT NULL DEFAULT 0, prompt TEXT NOT NULL DEFAULT '',"
     " model TEXT NOT NULL DEFAULT '', seed TEXT NOT NULL DEFAULT '',"
     " sampler TEXT NOT NULL DEFAULT '', client_agent TEXT NOT NULL DEFAULT '',"
     " width INTEGER NOT NULL DEFAULT 0, height INTEGER NOT NULL DEFAULT 0,"
     " steps INTEGER NOT NULL DEFAULT 0, cfg_scale DOUBLE PRECISION NOT NULL DEFAULT 0,"
     " expected_rating INTEGER NOT NULL DEFAULT 0, served INTEGER NOT NULL DEFAULT 0,"
     " ratings_count INTEGER NOT NULL DEFAULT 0, rating_sum BIGINT NOT NULL DEFAULT 0,"
     " created BIGINT NOT NULL);"
     "CREATE INDEX ratings_images_pick ON ratings_images (dataset_id, ratings_count, served);"
     "CREATE INDEX ratings_images_request ON ratings_images (request_id);"
     /* what each rater was served: never twice, and a rating needs its pop */
     "CREATE TABLE ratings_pops (rater TEXT NOT NULL, image_id TEXT NOT NULL,"
     " created BIGINT NOT NULL, PRIMARY KEY (rater, image_id));"
     "CREATE TABLE ratings_ratings (id TEXT PRIMARY KEY, image_id TEXT NOT NULL,"
     " rater TEXT NOT NULL, user_id BIGINT NOT NULL, username TEXT NOT NULL,"
     " rating INTEGER NOT NULL, artifacts INTEGER, source TEXT NOT NULL,"
     " client_agent TEXT NOT NULL, reward DOUBLE PRECISION NOT NULL DEFAULT 0,"
     " paid INTEGER NOT NULL DEFAULT 0, captcha INTEGER NOT NULL DEFAULT 0,"
     " passed INTEGER NOT NULL DEFAULT 0, suspect INTEGER NOT NULL DEFAULT 0,"
     " fast INTEGER NOT NULL DEFAULT 0, trusted INTEGER NOT NULL DEFAULT 0,"
     " account_age BIGINT NOT NULL DEFAULT 0, created BIGINT NOT NULL,"
     " UNIQUE (image_id, rater));"
     "CREATE INDEX ratings_ratings_rater ON ratings_ratings (rater, created);"
     "CREATE INDEX ratings_ratings_unpaid ON ratings_ratings (paid);"
     "CREATE TABLE ratings_raters (rater TEXT PRIMARY KEY, user_id BIGINT NOT NULL,"
     " pops INTEGER NOT NULL DEFAULT 0, ratings INTEGER NOT NULL DEFAULT 0,"
     " captchas_failed INTEGER NOT NULL DEFAULT 0, captchas_passed INTEGER NOT NULL DEFAULT 0,"
     " fast_streak INTEGER NOT NULL DEFAULT 0, suspect INTEGER NOT NULL DEFAULT 0,"
     " timeout_until BIGINT NOT NULL DEFAULT 0, excluded INTEGER NOT NULL DEFAULT 0);"
     /* requests rated by their requester (POST /api/v2/generate/rate) */
     "CREATE TABLE ratings_own_sets (request_id TEXT PRIMARY KEY, user_id BIGINT NOT NULL,"
     " best TEXT, reward DOUBLE PRECISION NOT NULL, paid INTEGER NOT NULL DEFAULT 0,"
     " created BIGINT NOT NULL)"},
};

hn_rc rt_store_open(ratings *r, hn_error *err) {
    return r->db->migrate(r->db_state, "ratings", rt_migrations,
                          sizeof(rt_migrations) / sizeof(rt_migrations[0]), err);
}

hn_rc rt_dataset_ensure(ratings *r, const char *name, const char *description, bool captcha,
                        char id[RT_ID_LEN], hn_error *err) {
    hn_db *c = r->db->acquire(r->db_state, err);
    if (!c)
        return HN_ERROR;
    char fresh[RT_ID_LEN];
    rt_uuid(fresh);
    hn_value ins[] = {HN_V_TEXT(fresh), HN_V_TEXT(name), HN_V_TEXT(description),
                      HN_V_INT(captcha ? 1 : 0), HN_V_INT(rt_now())};
    hn_rc rc = r->db->exec(c,
                           "INSERT INTO ratings_datasets (id, name, description, captcha, created)"
                           " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                           ins, 5, NULL, err);
    if (rc == HN_OK) {
        hn_value q[] = {HN_V_TEXT(name)};
        hn_stmt *st = r->db->query(c, "SELECT id FROM ratings_datasets WHERE name = ?", q, 1, err);
        rc = HN_ERROR;
        if (st) {
            if (r->db->step(st, err) == 1) {
                snprintf(id, RT_ID_LEN, "%s", r->db->col_text(st, 0));
                rc = HN_OK;
            }
            r->db->finish(st);
        }
    }
    r->db->release(r->db_state, c);
    return rc;
}

hn_rc rt_image_insert(ratings *r, const rt_image *im, hn_error *err) {
    hn_db *c = r->db->acquire(r->db_state, err);
    if (!c)
        return HN_ERROR;
#define OPT_TEXT(s) ((s) ? HN_V_TEXT(s) : HN_V_NULL)
#define TEXT_OR_EMPTY(s) HN_V_TEXT((s) ? (s) : "")
    hn_value v[] = {HN_V_TEXT(im->id),           HN_V_TEXT(im->dataset_id),
                    HN_V_TEXT(im->image_key),    HN_V_TEXT(im->source),
                    OPT_TEXT(im->request_id),    OPT_TEXT(im->job_id),
                    HN_V_INT(im->user_id),       TEXT_OR_EMPTY(im->prompt),
                    TEXT_OR_EMPTY(im->model),    TEXT_OR_EMPTY(im->seed),
                    TEXT_OR_EMPTY(im->sampler),  TEXT_OR_EMPTY(im->client_agent),
                    HN_V_INT(im->width),         HN_V_INT(im->height),
                    HN_V_INT(im->steps),         HN_V_DOUBLE(im->cfg_scale),
                    HN_V_INT(im->expected_rating), HN_V_INT(rt_now())};
#undef OPT_TEXT
#undef TEXT_OR_EMPTY
    hn_rc rc = r->db->exec(
        c,
        "INSERT INTO ratings_images (id, dataset_id, image_key, source, request_id, job_id,"
        " user_id, prompt, model, seed, sampler, client_agent, width, height, steps, cfg_scale,"
        " expected_rating, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        v, sizeof(v) / sizeof(v[0]), NULL, err);
    r->db->release(r->db_state, c);
    return rc;
}
