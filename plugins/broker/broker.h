/* broker: the AI Horde v2 image flow (requests, pops, submits, workers,
 * status). Declarations shared by the broker's files; nothing here is seen by
 * other plugins.
 *
 * Shape of the plugin:
 *   - one in-memory index (requests, jobs, workers, users, the priority queue)
 *     under one mutex, `broker.lock`: every read (check, status, pop matching)
 *     is served from it;
 *   - one writer thread (store.c) that turns the index's changes into SQL and
 *     commits them in batches (group commit); a handler whose answer must be
 *     durable suspends its request and is answered after the commit;
 *   - timers on the main loop (lifecycle.c) for stale jobs, expiry and the
 *     queue snapshot behind queue_position/wait_time.
 *
 * Ownership: the broker owns every br_request, br_job, br_worker and br_user;
 * they live in the index maps and are freed only by index.c (expiry) or at
 * fini. Pointers to them are valid while `lock` is held. */
#ifndef BR_BROKER_H
#define BR_BROKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include <hn/hn.h>

#include "bridge.h"
#include "map.h"
#include "model_ref.h"
#include "moderation.h"

#define BR_ID_LEN 37            /* a UUID as text plus NUL */
#define BR_HORDE_VERSION "5.1.5" /* what clients see as the horde's version */
#define BR_MAX_TARGET_WORKERS 5  /* only the first 5 `workers` are kept */
#define BR_SPEED_SAMPLES 20      /* worker speed = mean of the last 20 */
#define BR_SLOW_SPEED 500000.0   /* below this a worker is "slow" (pixelsteps/s) */
#define BR_DEFAULT_SPEED 1000000.0

/* ---- configuration (the hn_conf_spec in broker.c fills this) -------------- */
typedef struct br_conf {
    const char *model_reference;      /* path of stable_diffusion.json, optional */
    bool accept_unknown_models;       /* workers may serve names not in the reference */
    long long request_expiry_s;       /* WP expiry after the last pop (horde: 20 min) */
    long long job_ttl_s;              /* 0: the horde's formula; else every job's TTL */
    long long lifecycle_interval_ms;  /* how often stale jobs/expiry are checked */
    long long worker_online_s;        /* a worker is online this long after a pop */
    long long url_ttl_s;              /* signed image URLs (horde: 1800) */
    long long max_untrusted_workers;  /* horde: refuse a new worker when > 3 exist */
    long long abort_limit_per_hour;   /* more aborts put a worker in maintenance */
    long long unreasonably_fast_mps;  /* faster images are a worker suspicion; 0 off */
    long long max_faults;             /* a request faults after more faulted jobs */
    long long commit_batch;           /* most changes per group commit */
    bool maintenance_mode;            /* refuse new requests (400 MaintenanceMode) */
    /* moderation (moderation.h) */
    bool rate_limits;                 /* the horde's rate limits (false: off, for tests) */
    bool rate_limit_loopback;         /* also limit loopback clients */
    long long rate_limit_default;     /* per minute, per IP and route without its own */
    bool dev_test_user;               /* route POST /api/v2/dev/test-user (loopback only) */
    const char *news_file;            /* JSON array served by /status/news */
    /* cluster.c: several nodes on one PostgreSQL database */
    bool cluster;                     /* sync with other nodes, claim pops in the database */
    long long cluster_sync_ms;        /* how often other nodes' changes are read */
} br_conf;

/* ---- requests, jobs, workers, users --------------------------------------- */

typedef enum br_req_state { BR_REQ_ACTIVE = 0, BR_REQ_FAULTED = 1, BR_REQ_CANCELLED = 2 } br_req_state;
typedef enum br_job_state { BR_JOB_PROCESSING = 0, BR_JOB_DONE = 1, BR_JOB_FAULTED = 2 } br_job_state;
typedef enum br_srcproc {
    BR_SRC_IMG2IMG = 0, BR_SRC_INPAINTING, BR_SRC_OUTPAINTING, BR_SRC_REMIX
} br_srcproc;

/* ---- match.c: can this worker take this request (§4.2) ----------------------- */
typedef enum br_skip {
    BR_SKIP_NONE = 0,
    BR_SKIP_SILENT,          /* not counted (maintenance, targeting of others) */
    BR_SKIP_MAX_PIXELS, BR_SKIP_MODELS, BR_SKIP_IMG2IMG, BR_SKIP_PAINTING,
    BR_SKIP_UNSAFE_IP, BR_SKIP_NSFW, BR_SKIP_BRIDGE_VERSION, BR_SKIP_LORA,
    BR_SKIP_CONTROLNET, BR_SKIP_PERFORMANCE, BR_SKIP_WORKER_ID, BR_SKIP_UNTRUSTED,
    BR_SKIP_BLACKLIST, BR_SKIP_POST_PROCESSING, BR_SKIP_STEP_COUNT, BR_SKIP_KUDOS,
    BR_SKIP_COUNT
} br_skip;
typedef struct br_request br_request;
typedef struct br_job br_job;

/* The waiting queue per model: every queued request is also linked into the
 * list of each model it names (or the any-model list when it names none), in
 * the same (priority, arrival) order, so that a pop looks only at requests it
 * could serve instead of the whole queue. */
typedef struct br_mqueue br_mqueue;
typedef struct br_qlink {
    br_request *r;
    struct br_qlink *prev, *next;
    br_mqueue *q;
} br_qlink;
struct br_mqueue {
    char *name;              /* the map key (owned); NULL for the any-model list */
    br_qlink *head, *tail;
    int len;
};
typedef struct br_worker br_worker;
typedef struct br_user br_user;

/* What a request asks for, extracted from its normalised body so that matching
 * never parses JSON. Filled by br_request_parse (request.c). */
typedef struct br_req_spec {
    char **models;          /* owned strings */
    int n_models;
    char (*workers)[BR_ID_LEN];
    int n_workers;
    bool worker_blacklist;
    int width, height, steps, accurate_steps, n;
    double things;          /* width * height * accurate steps */
    bool nsfw, censor_nsfw, trusted_workers, slow_workers, extra_slow_workers, r2;
    bool disable_batching, shared;
    bool has_source, has_mask;
    br_srcproc source_processing;
    int n_extra_src;
    int n_loras;
    bool has_loras, lora_versions, has_tis, control_type, image_is_control;
    bool return_control_map, tiling, hires_fix, transparent, qr_code, clip_skip_gt1, karras;
    bool stable_cascade_2pass;
    int sampler;            /* index into br_samplers[] */
    uint64_t pp_caps;       /* capabilities its post-processors need */
    int n_pp, n_upscalers;
    bool heavy_pp;
    double pp_multiplier;   /* product of the post-processors' burn multipliers */
    bool has_seed;
    int64_t seed;           /* already reduced below 2^32 */
    int seed_variation;
    char *prompt_lc;        /* lower-cased prompt, for worker blacklists */
} br_req_spec;

struct br_request {
    char id[BR_ID_LEN];
    int64_t user_id;
    uint32_t user_roles;
    /* the requester's usage_multiplier when it asked (§2, admin-set): scales
     * its usage record, as the horde's record_usage; 0 (a request reloaded
     * after a restart, where it is not stored) counts as 1 */
    double usage_multiplier;
    int64_t seq;            /* arrival order: ties in priority pop first-come */
    int64_t created_ms, expiry_ms;
    double priority;        /* from generation_priority; higher pops first */
    int n;                  /* images still to hand out */
    int jobs;               /* images asked for (after a cancel: those finished) */
    int finished, processing, restarted; /* counts over its jobs */
    br_req_state state;
    double kudos;           /* per-image price (wp.kudos) */
    double consumed;        /* kudos consumed so far */
    double stored_consumed; /* as far as it is in the table (cluster mode writes the
                             * difference: several nodes finish its jobs) */
    int unsynced_n;         /* cluster: images re-queued here whose commit is pending
                             * (the sync adds them to the table's n) */
    char *body;             /* normalised request JSON (owned); pops build payloads from it */
    char *client_ip;
    br_req_spec s;
    /* queue links (valid while `queued`) */
    br_request *qprev, *qnext;
    bool queued;
    br_qlink *links;        /* its places in the per-model queues (while queued) */
    int n_links;
    uint64_t visit;         /* pop.c: last pop that looked at it */
    int counted_n;          /* what this request adds to its user's waiting_n */
    /* the owner's requests */
    br_request *uprev, *unext;
    br_job *jobs_head, *jobs_tail; /* in pop order */
    /* queue snapshot (lifecycle.c); a request queued after the snapshot
     * carries its place among those queued since (post_*) */
    int64_t snap_gen, post_gen;
    int post_pos, post_n;
    double post_mps;
    int q_pos;
    double q_mps;
    int q_n;
    /* is_possible cache */
    int64_t possible_at_ms;
    uint64_t possible_ver;
    bool possible;
    bool deleted;           /* dropped from the index, waiting to be freed */
};

struct br_job {
    char id[BR_ID_LEN];
    int64_t seq;             /* its row's key (sequential: cheap appends) */
    br_request *req;
    br_worker *worker;
    char *model;
    int64_t seed;
    br_job_state state;
    bool censored;
    bool aborted;            /* faulted by the lifecycle (stale), not the worker */
    int64_t start_ms, finish_ms;
    int ttl_s;
    char *gen_metadata;      /* JSON array text, owned; NULL = [] */
    double reward;
    br_job *rnext;           /* next job of the same request */
    br_job *iprev, *inext;   /* in-flight list (state PROCESSING) */
};

/* A worker's counters. Rows take them relatively (store.c writes `col = col +
 * the difference since the last write`), so several nodes counting the same
 * worker add up instead of overwriting each other. */
typedef struct br_worker_counts {
    int64_t requests_fulfilled, uncompleted_jobs, uptime_s, suspicion;
    double kudos_generated, mps_generated; /* mps: megapixelsteps */
} br_worker_counts;

typedef struct br_worker_attrs {
    char *bridge_agent;
    uint64_t caps;
    uint32_t samplers_karras, samplers_plain; /* bit i = br_samplers[i] supported */
    char **models;
    int n_models;
    bool nsfw, allow_img2img, allow_painting, allow_unsafe_ipaddr, allow_post_processing;
    bool allow_controlnet, allow_sdxl_controlnet, allow_lora, limit_max_steps;
    bool extra_slow, require_upfront_kudos;
    int64_t max_pixels;
    int threads;
    char **blacklist;        /* lower-cased words */
    int n_blacklist;
    char *ipaddr;
} br_worker_attrs;

struct br_worker {
    char id[BR_ID_LEN];
    char *name;
    int64_t user_id;
    char owner[128];
    uint32_t owner_roles;
    int64_t created_ms, last_checkin_ms, last_saved_ms;
    br_worker_attrs a;
    bool maintenance, paused;
    char *maintenance_msg, *info;
    int64_t requests_fulfilled, uncompleted_jobs;
    double kudos_generated;
    double mps_generated;    /* megapixelsteps */
    int64_t uptime_s;
    /* the counters (above and `suspicion`) as far as they are in the table:
     * what changed since is written as a difference (store.c) */
    br_worker_counts stored;
    double samples[BR_SPEED_SAMPLES];
    int n_samples, sample_pos;
    double speed;            /* pixelsteps per second */
    int64_t abort_window_start_ms;
    int aborts_in_window;
    /* §5 worker suspicion (suspicion.c): the count and the once-only
     * HN_SUSPICION_* reasons already counted (bit = code) */
    int64_t suspicion;
    uint32_t suspicion_reasons;
    bool dirty;              /* its row needs writing (lifecycle.c flushes) */
    /* the last pop that found nothing: while no request was queued since and
     * no worker changed, the next one finds nothing either (pop.c) */
    bool idle_valid;
    uint64_t idle_queue_ver, idle_workers_ver, idle_models_hash;
    int idle_counts[BR_SKIP_COUNT];
};

struct br_user {
    int64_t id;
    char key[24];            /* decimal id, the map key */
    int waiting_n;           /* sum of n over its active requests */
    int waiting_reqs;        /* its requests in the queue */
    int worker_count;
    br_request *reqs;        /* all its requests in memory */
    /* anonymous user only: waiting images per requested model (the horde
     * limits anonymous requests per model) */
    br_map model_waiting;
    /* durable counters (broker_user_stats) */
    int64_t images_requested, images_fulfilled;
    double usage_mps, contribution_mps;
    bool stats_dirty;        /* broker_user_stats needs writing */
    /* the counters as far as they are in the table: written as differences
     * (store.c), so nodes sharing the table add up */
    int64_t stored_requested, stored_fulfilled;
    double stored_usage, stored_contribution;
};

/* Per-model speed samples (for /status/models performance). */
typedef struct br_model_stat {
    char *name;
    double samples[BR_SPEED_SAMPLES];
    int n_samples, pos;
} br_model_stat;

/* An entry of the expiry heap: a request id and a time it may expire at. The
 * heap is lazy: a pop pushes a request's expiry later without touching its
 * entry; when the entry comes due, the request is re-queued at its new
 * expiry instead of expiring. Ids, not pointers, so a request freed by
 * other means leaves nothing dangling. */
typedef struct br_exp_entry {
    int64_t at;
    char id[BR_ID_LEN];
} br_exp_entry;

/* The writer queue (store.c). */
typedef struct br_op br_op;

typedef struct broker {
    hn_plugin *self;
    const hn_api *api;
    const br_conf *conf;
    br_model_ref *ref;                  /* NULL when none configured */
    const hn_provider *storage, *images;
    const hn_storage_vt *db;
    const hn_images_vt *img;
    atomic_bool started;                /* read by handlers on any thread */
    struct br_accounts *acc;            /* accounts.h: modes, teams, messages, shared keys
                                         * (guarded by `lock`; set in start) */
    br_mod *mod;                        /* moderation state (own lock; moderation.h) */
    struct br_cluster *cluster;         /* cluster.h: NULL unless conf->cluster */

    pthread_mutex_t lock;               /* guards everything below */
    br_map requests, jobs, workers, workers_by_name, users, model_stats;
    br_request *q_head, *q_tail;        /* waiting requests, priority order */
    int q_len;
    br_map model_queues;                /* model name -> br_mqueue */
    br_mqueue any_queue;                /* requests naming no model */
    uint64_t visit_stamp;
    br_job *inflight_head;              /* jobs in state PROCESSING */
    br_exp_entry *exp_heap;             /* min-heap by `at` */
    size_t exp_len, exp_cap;
    int64_t next_seq, next_job_seq;
    uint64_t workers_ver;               /* bumps when a worker's matching inputs change */
    uint64_t queue_ver;                 /* bumps when a request enters the queue */
    int64_t snap_gen;                   /* queue snapshot generation */
    int snap_count;
    double snap_mps;
    int snap_n;
    int post_count, post_n;             /* queued since the snapshot */
    double post_mps;
    double snap_avg_speed;              /* mean of all workers' speed samples */
    int snap_threads;                   /* threads of workers online */
    double past_minute[60];             /* pixelsteps finished per second slot */
    int64_t past_minute_sec[60];

    /* writer thread (store.c) */
    pthread_t writer;
    bool writer_running;
    pthread_mutex_t wq_lock;
    pthread_cond_t wq_cond;
    br_op *wq_head, *wq_tail;
    int wq_len;
    bool wq_stop;
    uint64_t batches, batched_ops;      /* for logs and benchmarks */
} broker;

/* ---- request.c: parsing and normalising a generation request -------------- */

/* Fills spec from a normalised body. Returns 0, or -1 (out of memory or a body
 * that was not normalised by br_request_normalise). */
int br_request_parse(broker *b, const json_t *body, br_req_spec *spec);
void br_req_spec_free(br_req_spec *spec);

/* ---- validate.c: POST /generate/async checks ------------------------------ */

/* Validates the body against the GenerationInputStable schema. Returns NULL
 * when valid, else a new {"<path>": "<reason>"} object. */
json_t *br_validate_async_schema(const json_t *body);
/* Validates a pop / submit body. */
json_t *br_validate_pop_schema(const json_t *body);
json_t *br_validate_submit_schema(const json_t *body);
json_t *br_validate_worker_put_schema(const json_t *body);
/* Responds 400 {"message": "Input payload validation failed", "errors": ...}.
 * Steals errors. */
void br_respond_schema_errors(broker *b, hn_request *req, json_t *errors);
/* The JSON body of a worker or generation request, checked in the horde's
 * order: broker started (503), JSON (400), the schema `validate` (400 with its
 * errors), then an apikey header (400; apikey_what describes the key in the
 * message, e.g. "A User API key."). Borrowed (owned by the request); NULL
 * when answered. */
json_t *br_checked_body(broker *b, hn_request *req, json_t *(*validate)(const json_t *body),
                        const char *apikey_what);

/* ---- util.c ------------------------------------------------------------------ */
int64_t br_now_ms(void);
void br_uuid4(char out[BR_ID_LEN]);
/* True for a canonical 8-4-4-4-12 hex UUID; writes it lower-cased to out. */
bool br_uuid_parse(const char *s, char out[BR_ID_LEN]);
uint32_t br_random_u32(void);
/* The horde's seed rule: digits -> integer, other text -> its UTF-8 bytes read
 * little-endian; absolute value; shifted right 32 bits while >= 2^32. */
int64_t br_seed_from_text(const char *text);
int64_t br_seed_reduce(int64_t v);
/* Python's round(): half to even. */
double br_round(double v, int digits);
char *br_strdup(const char *s); /* NULL-safe, aborts on OOM never: returns NULL */
char *br_lower(const char *s);
/* Base64. encode: malloc'd NUL-terminated text. decode: malloc'd bytes, NULL
 * when the text is not base64 (whitespace and missing padding are accepted). */
char *br_b64_encode(const void *data, size_t len);
void *br_b64_decode(const char *text, size_t text_len, size_t *out_len);
/* Responds {"message", "rc"} with status. */
void br_fail(broker *b, hn_request *req, int status, const char *rc, const char *fmt, ...)
    HN_PRINTF(5, 6);
/* Authenticates the request's apikey header. HN_OK with *user filled;
 * HN_ERROR with err filled (401 InvalidAPIKey for an unknown key). */
hn_rc br_authenticate(broker *b, hn_request *req, hn_user *user, hn_error *err);
/* Does any plugin handle this hook? (the info JSON of a NOTIFY hook is only
 * built when someone will read it) */
bool br_hooked(broker *b, unsigned hook_id);
/* jansson helpers: booleans/ints with defaults. */
bool br_jbool(const json_t *o, const char *key, bool def);
long long br_jint(const json_t *o, const char *key, long long def);
double br_jnum(const json_t *o, const char *key, double def);
const char *br_jstr(const json_t *o, const char *key);

/* ---- image_check.c: what a submitted or source image is ------------------------ */
typedef struct br_image_info {
    const char *format; /* "webp", "png", "jpeg", "gif" */
    int width, height;
    bool alpha;
} br_image_info;
/* Reads the header of an image file. Returns 0, or -1 if not a known format. */
int br_image_sniff(const void *data, size_t len, br_image_info *info);

/* ---- price.c: kudos arithmetic of §3 that the broker itself needs ------------ */
/* The legacy per-image price (the kudos plugin's generation_price replaces it). */
double br_price_legacy(const br_req_spec *s);
/* What the requester pays for one image of gen kudos k (§3.2). */
double br_price_burn(const br_req_spec *s, double k);
/* Baseline multiplier of a model (§3.2): sdxl 2, cascade 4, flux 8, ... */
double br_price_model_multiplier(broker *b, const char *model, const br_req_spec *s);
/* The dry-run estimate (§3.3). */
double br_price_dry_run(broker *b, const br_req_spec *s, double kudos);

/* ---- index.c: the in-memory index (caller holds b->lock) ------------------------ */
int br_index_init(broker *b);
void br_index_free(broker *b);
br_user *br_user_get(broker *b, int64_t id, bool create);
/* The anonymous user's waiting images for one model. */
int br_user_model_waiting(br_user *u, const char *model);
void br_request_add(broker *b, br_request *r); /* takes ownership; queues it when n > 0 */
void br_request_free(br_request *r);
/* Call after changing r->n or r->state: queues/unqueues, updates user sums. */
void br_request_requeue(broker *b, br_request *r);
/* Drops an expired request and its jobs from the index and frees them. */
void br_request_drop(broker *b, br_request *r);
br_request *br_request_find(broker *b, const char *id);
/* Queue order: true when a pops before b (priority desc, then arrival). */
bool br_queue_before(const br_request *a, const br_request *b);
/* The per-model queue of a model name, or NULL when nothing waits for it. */
br_mqueue *br_model_queue(broker *b, const char *model);
/* The next request whose expiry has passed (removed from the heap), or NULL. */
br_request *br_request_next_expired(broker *b, int64_t now_ms);
void br_job_add(broker *b, br_job *j);
br_job *br_job_find(broker *b, const char *id);
void br_job_finish(broker *b, br_job *j, br_job_state st); /* leaves the in-flight list */
br_worker *br_worker_find(broker *b, const char *id);
br_worker *br_worker_find_name(broker *b, const char *name);
void br_worker_add(broker *b, br_worker *w);
void br_worker_attrs_free(br_worker_attrs *a);
void br_worker_free(br_worker *w);
void br_worker_add_sample(br_worker *w, double pixelsteps_per_s);
bool br_worker_online(broker *b, const br_worker *w, int64_t now_ms);
void br_model_add_sample(broker *b, const char *model, double pixelsteps_per_s);
double br_model_performance(broker *b, const char *model);
void br_past_minute_add(broker *b, int64_t now_ms, double pixelsteps);
double br_past_minute_total(broker *b, int64_t now_ms);

/* ---- status.c: status numbers (§4.5), /status endpoints --------------------------- */
typedef struct br_status {
    int finished, processing, restarted, waiting;
    bool done, faulted, is_possible;
    int wait_time, queue_position;
    double kudos;
} br_status;
void br_status_compute(broker *b, br_request *r, int64_t now_ms, br_status *st);
json_t *br_status_json(const br_status *st);
/* True when some online worker could serve r (the horde's wp_has_valid_workers). */
bool br_request_possible(broker *b, br_request *r, int64_t now_ms);
/* Rebuilds queue positions (lifecycle timer, every second). */
void br_queue_snapshot(broker *b);
void br_route_heartbeat(hn_request *req, void *state);
void br_route_models(hn_request *req, void *state);
void br_route_model_single(hn_request *req, void *state);
void br_route_performance(hn_request *req, void *state);

extern const char *const br_skip_names[BR_SKIP_COUNT];
/* models: the pop's model list (used verbatim, §4.2). `chosen` (may be NULL)
 * gets the model the job would run (borrowed from r or w). */
br_skip br_match(broker *b, const br_worker *w, const char *const *models, int n_models,
                 const br_request *r, const char **chosen);
/* Same, for is_possible checks: any of w's models. */
br_skip br_match_worker(broker *b, const br_worker *w, const br_request *r);

/* ---- store.c: durable rows and group commit ------------------------------------ */
int br_store_start(broker *b, hn_error *err);   /* migrate, load, start the writer */
void br_store_stop(broker *b);                   /* drain and join the writer */
/* A batch of changes: SQL statements and image files, plus who to answer. */
br_op *br_op_new(broker *b);
/* Adds a statement; args are copied (TEXT/BLOB included). Returns 0 or -1. */
int br_op_sql(br_op *op, const char *sql, const hn_value *args, size_t nargs);
/* Image files to delete once the transaction committed. */
int br_op_remove_image(br_op *op, const char *key);
/* Answer `req` with status/body (stolen) once committed; then run the hook
 * `hook_id` (one of the HN_HOOK_ID_* NOTIFY hooks, or -1) with info (stolen). */
void br_op_reply(br_op *op, hn_request *req, int status, json_t *body, int hook_id,
                 json_t *info);
/* For a handler that queues its op before its answer is ready (the op must
 * reach the writer while b->lock is held, the payload is built after): hold
 * the op before br_op_submit, then set the answer with br_op_set_body, which
 * drops the hold. Safe because the answer runs on the request's loop thread,
 * which is the thread still inside the handler. */
void br_op_hold(br_op *op);
void br_op_set_body(br_op *op, json_t *body); /* steals body; drops the hold */
/* Frees an op that was never submitted. */
void br_op_discard(br_op *op);
/* fn(b, arg) runs under b->lock if the op could not be committed. arg is
 * malloc'd (or NULL) and freed with the op. */
void br_op_on_fail(br_op *op, void (*fn)(broker *b, void *arg), void *arg);
/* Also run NOTIFY hook `hook_id` with info (stolen; NULL: nothing) once the op
 * is durable, after its br_op_reply hook. */
void br_op_notify(br_op *op, int hook_id, json_t *info);
/* Queues op (call with b->lock held, so rows are written in index order). The
 * request in op, if any, must already be suspended. */
void br_op_submit(broker *b, br_op *op);
/* Row writers used by several files. Each adds statements to op. */
int br_store_request_insert(br_op *op, br_request *r);
int br_store_request_update(br_op *op, br_request *r);
int br_store_job_insert(br_op *op, const br_job *j);
int br_store_job_update(br_op *op, const br_job *j);
/* The worker's row without its counters (a new row starts them at 0). */
int br_store_worker_save(br_op *op, const br_worker *w);
/* The row with what its counters gained since the last flush (relative:
 * `col = col + ?`); w->stored catches up. */
int br_store_worker_flush(br_op *op, br_worker *w);
/* Same for a user's counters (broker_user_stats). */
int br_store_user_stats(br_op *op, br_user *u);
/* Another node's counters read from the table (cluster.c): the counters
 * become the table's plus what this node has not written yet, never less
 * than now (counters only grow; the table may lag a write in flight). */
void br_worker_counts_merge(br_worker *w, const br_worker_counts *table);
void br_user_counts_merge(br_user *u, int64_t requested, int64_t fulfilled, double usage,
                          double contribution);
/* An op that must not be lost (the lifecycle's stale faults, expiry and
 * counter flushes; no HTTP answer): if its commit fails because the database
 * is unavailable (503), the writer keeps it and commits it, before anything
 * newer, once the database is back. Its statements must be safe to run again
 * after a commit whose outcome was unknown. */
void br_op_retry(br_op *op);
/* Cluster mode: op re-queues an image of r (n + 1 in the table once it
 * commits). Until op is committed or given up, r->unsynced_n counts it, so a
 * sync round in between does not take the image back. Caller holds b->lock. */
int br_op_track_requeue(br_op *op, br_request *r);
/* Cluster mode (PostgreSQL): op takes the transaction-scoped advisory lock
 * `key` at this point; the writer takes all the locks of a batch first, in
 * key order, so that two nodes never deadlock on them. */
int br_op_lock(br_op *op, long long key);
/* A statement that must leave its count (one row, one integer: the first
 * column of sql's result) at most max, run after op's other statements so
 * far; otherwise the op fails with status/rc and message `fmt` (given the
 * count and max as two long long). Cluster mode's cluster-wide limits. */
int br_op_guard_max(br_op *op, const char *sql, const hn_value *args, size_t nargs,
                    long long max, int status, const char *rc, const char *fmt);

/* ---- route handlers -------------------------------------------------------------- */
void br_route_async(hn_request *req, void *state);     /* generate.c */
void br_route_check(hn_request *req, void *state);     /* generate.c */
void br_route_status(hn_request *req, void *state);    /* generate.c (GET and DELETE) */
void br_route_pop(hn_request *req, void *state);       /* pop.c */
void br_route_submit(hn_request *req, void *state);    /* submit.c */
void br_route_workers(hn_request *req, void *state);   /* workers.c */
void br_route_worker_single(hn_request *req, void *state);
void br_route_worker_by_name(hn_request *req, void *state);
void br_route_worker_put(hn_request *req, void *state);
json_t *br_worker_json(broker *b, const br_worker *w, int privilege, int64_t now_ms);

/* ---- lifecycle.c ------------------------------------------------------------------ */
void br_lifecycle_tick(void *state);  /* timer: stale jobs, expiry, snapshot */
/* Writes the rows of workers and users whose counters changed (they are
 * flushed on every tick rather than with each submit: counters may lag a
 * crash by one tick, jobs and requests never do). Caller holds the lock.
 * Returns true if it added statements to op. */
bool br_flush_dirty(broker *b, br_op *op, int64_t now_ms);
/* Faults a job (worker said faulted, or it went stale) and re-queues an image.
 * Caller holds the lock; adds the rows to op. */
void br_job_fault(broker *b, br_job *j, bool stale, int64_t now_ms, br_op *op);

/* ---- ended.c: hook generation_ended ------------------------------------------------- */
/* True once nothing more will happen to r: cancelled, faulted, or every image
 * finished. Caller holds the lock. */
bool br_request_ended(const br_request *r);
/* The info of generation_ended for r ("done", "cancelled", "expired",
 * "faulted"), or NULL when nobody handles the hook. */
json_t *br_ended_info(broker *b, const br_request *r, const char *reason);

/* ---- replay.c: hook generation_replay ------------------------------------------------- */
/* Re-announces the loaded requests and finished jobs (from start). */
void br_replay(broker *b);

/* ---- users.c ------------------------------------------------------------------------ */
hn_rc br_hook_user_details(void *state, const hn_user *user, int privilege, json_t *details);

#endif
