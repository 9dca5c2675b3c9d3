/* broker: moderation and public extras (spec/horde-api.md §1, §2, §5):
 * prompt filters (filters.c), IP timeouts (ip_timeouts.c), rate limits
 * (rate_limit.c), image statistics and news (stats.c), styles (styles.c) and
 * collections (collections.c, sharing style_catalog.c), the dev test-user
 * bootstrap (dev_user.c) and
 * /api/swagger.json (swagger.c). moderation.c ties them to the broker: state,
 * routes, migrations.
 *
 * State: one br_mod per broker (broker.mod), guarded by its own mutex
 * `br_mod.lock`, never held while taking broker.lock (the broker's code may
 * call in here with broker.lock held: the order is broker.lock -> mod.lock).
 * Rate-limit windows have their own lock (`rl_lock`): every request takes it.
 *
 * Storage: tables mod_* in the storage provider, migration owner
 * "broker_moderation". Filters, timeouts and styles are read once at start
 * and written through on every change (small, moderator-paced writes on the
 * handler's thread); image stats go out with the broker's group commit. */
#ifndef BR_MODERATION_H
#define BR_MODERATION_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include <hn/hn.h>

#include "map.h"

typedef struct broker broker;
typedef struct br_op br_op;

/* ---- filters.c ------------------------------------------------------------------ */
typedef struct br_filter {
    int64_t id;
    char *regex;
    int filter_type;  /* 10..29; 10 and 11 are suspicion group 1, 20 group 2 */
    char *description;
    char *replacement;
    char *user;       /* creator, "alias#id" */
    void *code;       /* pcre2_code *, compiled once */
} br_filter;

/* ---- ip_timeouts.c ---------------------------------------------------------------- */
typedef struct br_cidr {
    uint8_t addr[16];  /* IPv4 as ::ffff:a.b.c.d */
    int prefix;        /* 0..128 (IPv4: 96 + its prefix) */
} br_cidr;

typedef struct br_ip_timeout {
    char key[64];      /* canonical text: "1.2.3.4" or "1.2.3.0/24" */
    br_cidr net;
    bool block;        /* a CIDR block (listed by GET /operations/ipaddr) */
    int64_t expires_ms;
} br_ip_timeout;

typedef struct br_ip_suspicion {
    char ip[64];
    int count;          /* reports in the current 24 h window */
    int64_t window_start_ms;
} br_ip_suspicion;

/* ---- stats.c ------------------------------------------------------------------------ */
typedef struct br_stat_bucket {
    int64_t hour;       /* unix hour (seconds / 3600) */
    char *model;
    int64_t images;
    double ps;
} br_stat_bucket;

typedef struct br_stat_total {
    char *model;        /* map key */
    int64_t images;
    double ps;
} br_stat_total;

/* Cluster mode: one second of every node's finished images (mod_stats_recent). */
typedef struct br_stat_sec {
    int64_t sec;        /* unix second */
    int64_t images;
    double ps;
} br_stat_sec;

typedef struct br_mod {
    pthread_mutex_t lock;
    br_filter *filters;
    size_t n_filters, cap_filters;
    void *group_code[2];      /* pcre2_code *: types 10|11 joined, type 20 */
    void *youth_code[3];      /* pcre2_code *: the youth words of nsfw models (filters.c) */
    br_ip_timeout *timeouts;
    size_t n_timeouts, cap_timeouts;
    br_ip_suspicion *suspicions;
    size_t n_suspicions, cap_suspicions;
    br_stat_bucket *buckets;  /* last 31 days, unordered */
    size_t n_buckets, cap_buckets;
    br_map totals;            /* model -> br_stat_total */
    int64_t stats_writer;     /* this process's key in mod_stats_img (random) */
    int64_t sec_slot[60], min_slot[60];
    int64_t sec_images[60], min_images[60];
    double sec_ps[60], min_ps[60];
    /* cluster mode: the last hour of every node's images, per second, as read
     * by the last reload (replaces the rings above for "minute" and "hour") */
    br_stat_sec *recent;
    size_t n_recent;
    bool recent_loaded;
    json_t *styles;           /* id -> StyleStable object plus "_user_id", "_created" */
    json_t *collections;      /* id -> collection object plus "_user_id", "_created" */
    json_t *news;             /* the news list (owned) */
    bool started;
    atomic_bool reloading;    /* a cluster-mode reload is running (moderation.c) */

    pthread_mutex_t rl_lock;  /* rate-limit windows */
    br_map windows;
    size_t rl_puts;
} br_mod;

/* ---- moderation.c --------------------------------------------------------------------- */
/* In broker_init: state, routes, the http_request hook. */
int br_mod_init(broker *b, hn_error *err);
/* In broker_start (storage ready): migrations and loading. */
int br_mod_start(broker *b, hn_error *err);
void br_mod_fini(broker *b);
/* The caller must be a moderator (or admin): true with *user filled, else
 * answered (400 without apikey, 401 bad key, 403 NotModerator). */
bool br_mod_require_moderator(broker *b, hn_request *req, hn_user *user, const char *action);
bool br_mod_is_moderator(const hn_user *u);
/* JSON body as an object, else answered 400. */
json_t *br_mod_body(broker *b, hn_request *req);
/* body[key] absent or null (allowed unless required), or a string of min to
 * max characters; else answered 400 with the schema's message. */
bool br_mod_text_ok(broker *b, hn_request *req, const json_t *body, const char *key, size_t min,
                    size_t max, bool required);
/* body[key] absent, null or a boolean; else answered 400. */
bool br_mod_bool_ok(broker *b, hn_request *req, const json_t *body, const char *key);
/* Answers 200 {"message": "OK"}. */
void br_mod_respond_ok(broker *b, hn_request *req);
/* Room for one more item in a growing array: items is the address of the
 * array pointer (T **), n the items used, *cap the items allocated; doubles
 * *cap (from 16) when full. 0, or -1 out of memory (array unchanged). */
int br_mod_reserve(void *items, size_t n, size_t *cap, size_t item_size);
/* The storage connection for a short write-through; NULL with err. */
hn_db *br_mod_db(broker *b, hn_error *err);
void br_mod_db_release(broker *b, hn_db *db);
bool br_mod_sqlite(broker *b);

/* ---- filters.c ---------------------------------------------------------------------------- */
int br_filters_load(broker *b, hn_db *db, hn_error *err);
void br_filters_free(br_mod *m);
/* Applies the prompt filter to a normalised request (§5): may rewrite
 * "prompt". Returns 0, or -1 with err (400 CorruptPrompt; the client IP is
 * then reported as suspicious unless the user is a moderator). */
int br_filters_apply(broker *b, const hn_user *u, const char *client_ip, bool replacement_filter,
                     json_t *stored, hn_error *err);
void br_route_filters(hn_request *req, void *state);        /* GET PUT POST /filters */
void br_route_filters_regex(hn_request *req, void *state);  /* GET /filters/regex */
void br_route_filter_single(hn_request *req, void *state);  /* GET PATCH DELETE /filters/{id} */

/* ---- ip_timeouts.c ------------------------------------------------------------------------- */
int br_ip_parse(const char *text, br_cidr *out, bool allow_prefix, char *canon, size_t len);
int br_ip_timeouts_load(broker *b, hn_db *db, hn_error *err);
/* 0 when ip may go on; -1 with err 403 TimeoutIP. */
int br_ip_check(broker *b, const char *ip, hn_error *err);
/* The horde's report_suspicion: a 24 h counter s and a timeout of (2s+1)*3
 * minutes. */
void br_ip_report_suspicion(broker *b, const char *ip);
void br_route_ipaddr(hn_request *req, void *state);          /* GET POST DELETE */
void br_route_ipaddr_single(hn_request *req, void *state);   /* GET /operations/ipaddr/{ip} */
void br_route_block_worker_ip(hn_request *req, void *state); /* PUT DELETE */

/* ---- rate_limit.c ---------------------------------------------------------------------------- */
hn_rc br_rate_limit_hook(void *state, hn_request *req, const char *route, hn_error *err);
void br_rate_limit_free(br_mod *m);

/* ---- stats.c --------------------------------------------------------------------------------- */
int br_stats_load(broker *b, hn_db *db, hn_error *err);
/* Cluster mode: reads the last hour of every node's images per second (what
 * "minute" and "hour" report; the leader also drops older rows). */
int br_stats_load_recent(broker *b, hn_db *db, hn_error *err);
void br_stats_free(br_mod *m);
/* A finished image (submit.c, b->lock held): counted and its row queued in op. */
void br_stats_record(broker *b, br_op *op, const char *model, double pixelsteps, int64_t now_ms);
void br_route_stats_totals(hn_request *req, void *state);
void br_route_stats_models(hn_request *req, void *state);
void br_route_news(hn_request *req, void *state);
int br_news_load(broker *b, hn_error *err);

/* ---- styles.c, collections.c, style_catalog.c ----------------------------------------------- */
/* Loads (or reloads) styles and collections (style_catalog.c). */
int br_styles_load(broker *b, hn_db *db, hn_error *err);
void br_styles_free(br_mod *m);
/* POST /generate/async: applies `style` (id or name) to body in place.
 * Returns 0 (no style, or applied; *owner_id gets the style's owner, else
 * -1), or -1 with err (404 StyleNotFound). */
int br_styles_apply(broker *b, json_t *body, int64_t *owner_id, hn_error *err);
void br_route_styles(hn_request *req, void *state);          /* GET POST /styles/image */
void br_route_style_single(hn_request *req, void *state);    /* GET PATCH DELETE /{id} */
void br_route_style_by_name(hn_request *req, void *state);   /* GET /styles/image_by_name/{name} */
void br_route_style_example(hn_request *req, void *state);   /* POST /{id}/example */
void br_route_style_example_single(hn_request *req, void *state); /* PATCH DELETE */
void br_route_collections(hn_request *req, void *state);     /* GET POST /collections */
void br_route_collection_single(hn_request *req, void *state); /* GET PATCH DELETE */
void br_route_collection_by_name(hn_request *req, void *state); /* GET */

/* ---- dev_user.c ------------------------------------------------------------------------------ */
void br_route_dev_test_user(hn_request *req, void *state);

/* ---- swagger.c ------------------------------------------------------------------------------- */
void br_route_swagger(hn_request *req, void *state);

/* ---- validate.c (the schema tables as Swagger definitions) ----------------------------------- */
/* Adds the request models the validators use (GenerationInputStable,
 * ModelGenerationInputStable, PopInputStable, SubmitInputStable, ...) to
 * definitions. */
void br_schema_definitions(json_t *definitions);

#endif
