/* ratings: the aesthetic ratings service as a plugin. Declarations shared by
 * the plugin's files; other plugins reach it only over HTTP and hooks.
 *
 * Shape:
 *   - ratings.c: config, registrations, start/stop;
 *   - store.c:   the schema (owner "ratings") and the queries on the
 *                `storage` provider: datasets, images, pops, ratings, raters;
 *   - pool.c:    what feeds the pool: shared generations (hook job_submitted)
 *                and `horde-node ratings import`;
 *   - trust.c:   captchas, divergence, speed, timeouts, each rater's trust;
 *   - api_v1.c:  the public ratings API (/api/v1/...), wire-compatible with
 *                ratings.aihorde.net's clients;
 *   - moderation.c: the moderators' listings (/api/v1/user/...);
 *   - rate_own.c: POST /api/v2/generate/rate/{id} (rate your own generation);
 *   - export.c:  `horde-node ratings export` and /api/v1/download/{file};
 *   - page.c:    the rating page /rate (page.html, compiled in).
 *
 * Threads: route handlers run on HTTP loop threads and make short blocking
 * storage calls (one transaction per rating); hooks that arrive from the
 * broker's writer hand their work to the pool (work_submit). Kudos are paid
 * through the kudos_grant hook after the rating's own commit, never inside
 * it; a rating whose payment failed stays marked unpaid and a timer retries
 * it with the same ref, so each accepted rating pays exactly once.
 * Ownership: the plugin owns everything in `ratings`; conf is the core's. */
#ifndef RT_RATINGS_H
#define RT_RATINGS_H

#include <stdbool.h>
#include <stdint.h>

#include <hn/hn.h>

#define RT_ID_LEN 37 /* a UUID and its NUL */

typedef struct rt_conf {
    long long ratings_per_image;  /* an image is served until it has this many ratings */
    double kudos_per_rating;      /* paid to registered raters (anonymous: none) */
    long long captcha_every;      /* every Nth image a rater is served is a captcha (0: never) */
    long long captcha_tolerance;  /* |rating - expected| allowed on a captcha */
    long long captcha_fail_limit; /* failed captchas that time a rater out and exclude them */
    long long timeout_s;          /* length of a rating timeout */
    long long max_per_minute;     /* ratings per rater per minute; more: 429 */
    long long max_pops_per_minute; /* images served per rater per minute; more: 429 */
    long long min_rating_s;       /* a rating sooner than this after its pop is "fast" */
    long long fast_limit;         /* this many fast ratings in a row: a timeout */
    double divergence;            /* |rating - mean of the others| that counts as suspect */
    long long divergence_min_ratings; /* others needed before divergence is judged */
    double min_export_trust;      /* raters below this trust are left out of exports */
    long long min_trust_ratings;  /* ratings before divergence lowers a rater's trust */
    const char *shared_dataset;   /* name of the dataset shared generations go to */
    const char *export_salt;      /* salt of the hashed user ids in exports */
    const char *export_license;   /* written into the export's README */
} rt_conf;

typedef struct ratings {
    hn_plugin *self;
    const hn_api *api;
    const rt_conf *conf;
    const hn_storage_vt *db;   /* from start */
    void *db_state;
    const hn_images_vt *img;   /* from start */
    void *img_state;
    bool started;
    char shared_dataset_id[RT_ID_LEN];
} ratings;

/* A rater: a registered user ("u:<id>") or an anonymous client ("a:<ip>"). */
typedef struct rt_rater {
    char key[80];
    hn_user user;
    const char *client_agent;
} rt_rater;

/* ---- util (ratings.c) ---- */
int64_t rt_now(void);
void rt_uuid(char out[RT_ID_LEN]);
bool rt_uuid_ok(const char *s);
/* {"message","rc"} with status. */
void rt_fail(ratings *r, hn_request *req, int status, const char *rc, const char *fmt, ...)
    HN_PRINTF(5, 6);
/* The user of the request's apikey (no key: anonymous). false: answered 401. */
bool rt_authenticate(ratings *r, hn_request *req, rt_rater *out);
/* Public URL of a pool image. */
void rt_image_url(ratings *r, const char *image_id, char *out, size_t len);
bool rt_ready(ratings *r, hn_request *req);

/* ---- store.c ---- */
hn_rc rt_store_open(ratings *r, hn_error *err);
/* Finds or creates a dataset by name; id out. */
hn_rc rt_dataset_ensure(ratings *r, const char *name, const char *description, bool captcha,
                        char id[RT_ID_LEN], hn_error *err);

typedef struct rt_image {
    char id[RT_ID_LEN];
    const char *dataset_id;
    const char *image_key;     /* key in the images provider */
    const char *source;        /* "shared", "import", "captcha" */
    const char *request_id, *job_id;
    int64_t user_id;           /* requester of a shared generation, else 0 */
    const char *prompt, *model, *seed, *sampler, *client_agent;
    int width, height, steps;
    double cfg_scale;
    int expected_rating;       /* captcha answer; 0: not a captcha */
} rt_image;
hn_rc rt_image_insert(ratings *r, const rt_image *im, hn_error *err);

/* ---- pool.c ---- */
int rt_pool_register(ratings *r);
/* Sniffs an image's content type from its bytes. */
const char *rt_image_type(const void *data, size_t len);

/* ---- trust.c ---- */
typedef struct rt_rater_state {
    int captchas_failed, captchas_passed, fast_streak, suspect;
    int64_t timeout_until;
    bool excluded;
    long long ratings;
} rt_rater_state;
hn_rc rt_rater_load(ratings *r, hn_db *c, const char *key, rt_rater_state *out, hn_error *err);
/* Trust in [0,1] from the rater's record (1: no reason for doubt). */
double rt_trust(const rt_conf *conf, const rt_rater_state *s);

/* ---- api_v1.c, rate_own.c, export.c, page.c ---- */
int rt_api_v1_register(ratings *r);
int rt_rate_own_register(ratings *r);
int rt_export_register(ratings *r);
int rt_page_register(ratings *r);
/* Pays ratings whose kudos were not paid yet (timer and after each rating). */
void rt_pay_pending(ratings *r);
void rt_pay_pending_own(ratings *r);
/* `horde-node ratings import ...` (pool.c) */
int rt_import(ratings *r, int argc, char **argv);

#endif
