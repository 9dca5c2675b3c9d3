/* worker: the horde bridge. Pops jobs from a horde (the `horde` provider:
 * `remote` over HTTP, `local` into the broker of this process), runs them on
 * the `generator` provider, uploads WebP and submits. Manages model files.
 *
 * The parts, one concern each:
 *   worker.c        plugin glue: config schema, init/start/stop, registrations
 *   http_client.c   libcurl requests and resumable downloads (http_client.h)
 *   horde_remote.c  the `horde` provider "remote"
 *   horde_local.c   the `horde` provider "local" (api->local_request)
 *   owner.c         the node-owner user and its key for the local horde
 *   models.c        model reference, models_to_load, local checkpoints (models.h)
 *   model_files.c   downloads, sha256, sidecars, the model table (this header)
 *   job_loop.c      the control thread (pop, back-off), job threads, queue, stop
 *   job_run.c       one job: sources, generator, WebP, upload, submit
 *   image_codec.c   WebP encode, WebP/PNG decode, base64 (image_codec.h)
 *   status.c        counters, the status line, GET /api/v2/node/worker
 *   commands.c      `horde-node worker models|download`
 *
 * Threads: the control thread (job_loop.c) and max_threads job threads and one
 * download thread belong to the plugin; everything they share lives in
 * wk_state under `lock`. The status timer (main loop) and the status route
 * (an HTTP loop) only read under `lock`. Horde calls block, so they are made
 * from the plugin's threads only (never from a loop thread). */
#ifndef WK_WORKER_H
#define WK_WORKER_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <hn/hn.h>

#include "models.h"

/* bridge_agent "horde-node:<version>:<project url>" (spec/horde-api.md §4.3:
 * the broker of horde-node gives this name the whole reGen capability set). */
#define WK_BRIDGE_NAME "horde-node"
#define WK_PROJECT_URL "https://github.com/horde-node/horde-node"

/* plugins.worker in the config file; filled by the core from the schema in
 * worker.c. Strings and lists are owned by the core. Key names are the
 * public worker's (bridgeData.yaml, spec/worker.md §1) where one exists. */
typedef struct wk_conf {
    /* identity and horde */
    const char *api_key;
    const char *horde_url;
    const char *dreamer_name;
    const char **priority_usernames;
    const char *owner_name;
    /* what to pop */
    const char **models_to_load;
    const char **models_to_skip;
    long long max_power;
    long long max_threads;
    long long queue_size;
    long long max_batch;
    bool nsfw;
    const char **blacklist;
    bool allow_img2img, allow_painting, allow_post_processing, allow_controlnet;
    bool allow_sdxl_controlnet, allow_lora, allow_unsafe_ip, require_upfront_kudos;
    bool extra_slow_worker, limit_max_steps, load_large_models;
    bool remove_maintenance_on_init;
    /* models */
    const char *cache_home;
    const char *model_reference;
    const char *civitai_api_token;
    const char *clip_vocab_url;
    const char *clip_vocab_sha256;
    long long max_models_in_ram;
    long long max_models_in_vram;
    long long download_retries;
    /* pacing */
    long long stats_output_frequency;
    long long pop_interval_ms;
    long long max_backoff_s;
    long long request_timeout_s;
    long long stop_timeout_s;
} wk_conf;

/* A model the worker knows of, and where its file stands. */
typedef enum wk_model_state {
    WK_MODEL_READY = 0,     /* file present and verified (or the generator's own) */
    WK_MODEL_WAITING,       /* to be downloaded */
    WK_MODEL_DOWNLOADING,
    WK_MODEL_FAILED         /* missing, corrupt, or the generator cannot load it */
} wk_model_state;

typedef enum wk_model_origin {
    WK_ORIGIN_LOCAL = 0,    /* a checkpoint in cache_home, offered under its file name */
    WK_ORIGIN_REFERENCE,    /* from the model reference, in cache_home/compvis */
    WK_ORIGIN_GENERATOR     /* the generator lists it itself (its own folder) */
} wk_model_origin;

typedef struct wk_model {
    char *name;             /* horde model name */
    char *path;             /* absolute checkpoint path; NULL for WK_ORIGIN_GENERATOR */
    const wk_ref_model *ref; /* reference record (borrowed from wk_state.ref), or NULL */
    wk_model_origin origin;
    wk_model_state state;
    char error[256];        /* why FAILED */
    uint64_t done, total;   /* download progress in bytes */
} wk_model;

/* One popped job (one pop answer: n ids, run as one generate call). */
typedef struct wk_job {
    json_t *pop;            /* the pop response, owned */
    char id[64];            /* first id, for logs */
    char model[256];
    size_t n_ids;
    int64_t popped_ms;
    int step, total;        /* progress (under wk_state.lock) */
    bool running;
    volatile int cancel;    /* the generator checks it */
    struct wk_job *next;    /* queue / running list link */
} wk_job;

typedef enum wk_phase {
    WK_PHASE_STARTING = 0,
    WK_PHASE_RUNNING,
    WK_PHASE_NO_MODELS,
    WK_PHASE_MAINTENANCE,
    WK_PHASE_PAUSED,        /* too many failed jobs in a row */
    WK_PHASE_UNREACHABLE,   /* the horde cannot be reached: backing off */
    WK_PHASE_STOPPING
} wk_phase;

typedef struct wk_stats {
    int64_t started_ms;
    int64_t jobs_popped, jobs_done, jobs_faulted, images_done;
    int64_t pops, pops_empty, pop_errors, submit_errors;
    double kudos;           /* sum of submit rewards */
    double megapixelsteps;  /* of the images done */
    double busy_s;          /* seconds spent generating (for MPS/s) */
    int consecutive_failures;
    char last_error[256];
    char horde_message[512]; /* last pop `messages[]` text or maintenance message */
} wk_stats;

typedef struct wk_state {
    hn_plugin *self;
    const hn_api *api;
    const wk_conf *conf;
    char data_dir[PATH_MAX];
    char cache_home[PATH_MAX];   /* absolute */
    char name[256];              /* worker name actually used */
    char bridge_agent[256];
    bool is_tty;                 /* stderr is a terminal: progress bars */

    /* horde transports: both are ours; `horde` is the one chosen at start */
    void *remote;                /* horde_remote state */
    void *local;                 /* horde_local state */
    const hn_horde_vt *horde;
    void *horde_state;
    bool horde_is_local;
    const hn_generator_vt *gen;
    void *gen_state;

    /* the key pops and submits use: api_key, or the node owner's (owner.c) */
    char apikey[128];

    /* models (models.h / model_files.c); the reference is immutable once loaded */
    wk_reference ref;
    bool have_ref;
    char vocab_path[PATH_MAX + 64]; /* CLIP vocabulary, "" when not found */

    pthread_mutex_t lock;        /* guards everything below */
    pthread_cond_t cond;         /* queue, stop and model changes */
    wk_model *models;
    size_t n_models;
    uint64_t models_ver;         /* bumps on every change of the offered set */
    wk_job *q_head, *q_tail;     /* popped, waiting for a job thread */
    size_t q_len;
    wk_job *running;             /* jobs on job threads */
    size_t n_running;
    bool stopping;               /* pop nothing new */
    bool control_done;           /* the control thread has ended: nothing more is queued */
    bool abandon;                /* give up: cancel running jobs, drop the queue */
    wk_phase phase;
    wk_stats stats;
    char current_model[256];     /* last model the generator loaded */

    /* threads */
    pthread_t control;
    bool control_started;
    pthread_t downloader;
    bool downloader_started;
    pthread_t *job_threads;
    size_t n_job_threads;
} wk_state;

/* Copies src into dst of n bytes, cut to fit, always terminated. */
static inline void wk_copy(char *dst, size_t n, const char *src) {
    size_t l = 0;
    while (src && src[l] && l + 1 < n)
        l++;
    if (n == 0)
        return;
    for (size_t i = 0; i < l; i++)
        dst[i] = src[i];
    dst[l] = '\0';
}

/* ---- worker.c ------------------------------------------------------------- */
/* Milliseconds on the monotonic clock (durations and deadlines only). */
int64_t wk_now_ms(void);
/* Sleeps up to ms, waking early when the worker stops. Caller holds no lock.
 * Returns true when the worker is stopping. */
bool wk_sleep(wk_state *w, int64_t ms);

/* ---- horde_remote.c / horde_local.c -------------------------------------- */
extern const hn_horde_vt wk_horde_remote_vt;
extern const hn_horde_vt wk_horde_local_vt;
/* remote: base is horde_url ("https://aihorde.net/api/"); the path of a call
 * ("/v2/generate/pop") is appended. NULL on a bad URL (err filled). */
void *wk_horde_remote_new(const char *base, const char *client_agent, long timeout_s,
                          char *err, size_t errlen);
void wk_horde_remote_free(void *state);
void *wk_horde_local_new(const hn_api *api, const char *client_agent);
void wk_horde_local_free(void *state);
/* GET of an absolute URL (a source image): through local_request when the
 * URL is this node's and the local horde is in use, else libcurl.
 * *data is malloc'd. Returns 0, or -1 with err. */
int wk_fetch_url(wk_state *w, const char *url, void **data, size_t *len, char *err,
                 size_t errlen);

/* ---- owner.c ---------------------------------------------------------------- */
/* Fills w->apikey for the local horde when no api_key is configured: the
 * node-owner user's key from <data>/worker/owner.key, checked, else a new one
 * through hook user_ensure. Runs on the control thread. 0 or -1 with err. */
int wk_owner_key(wk_state *w, char *err, size_t errlen);

/* ---- model_files.c ---------------------------------------------------------- */
/* Builds the model table: local checkpoints, the resolved models_to_load and
 * the generator's own models; queues the downloads. Control thread, at start
 * and on rescans. */
void wk_models_refresh(wk_state *w, const json_t *popularity);
/* Tells the generator the model files (configure) after a change. */
void wk_models_push_to_generator(wk_state *w);
/* The models to pop for, a new JSON array (under no lock: it takes it). */
json_t *wk_models_offered(wk_state *w);
/* The generator failed to load `name`: stop offering it. */
void wk_model_mark_failed(wk_state *w, const char *name, const char *why);
/* Download thread body. */
void *wk_download_thread(void *arg);
/* Makes sure the CLIP vocabulary is in cache_home/clip (fetched when missing
 * and clip_vocab_url is set). Fills w->vocab_path. */
void wk_vocab_ensure(wk_state *w);
/* Loads the reference named by model_reference (a path, or an http(s) URL
 * cached in cache_home). 0, 1 when none is configured, -1 with err. */
int wk_reference_load(wk_state *w, char *err, size_t errlen);
/* Downloads (or verifies) every file of the resolved reference models now,
 * on the calling thread, with progress on stderr (the `download` command).
 * Returns the number of models that failed. */
int wk_models_download_all(wk_state *w, bool print);

/* ---- job_loop.c -------------------------------------------------------------- */
int wk_threads_start(wk_state *w, hn_error *err);
/* Graceful stop: pop nothing new, finish running jobs (up to stop_timeout_s),
 * then join every thread. */
void wk_threads_stop(wk_state *w);
/* The pop body of spec/horde-api.md §1.4 (new reference). */
json_t *wk_pop_body(wk_state *w, json_t *models);
/* max_pixels from max_power, as the public workers compute it. */
int64_t wk_max_pixels(long long max_power);

/* ---- job_run.c --------------------------------------------------------------- */
/* Runs one popped job to the end: generate, encode, upload, submit. */
void wk_job_run(wk_state *w, wk_job *job);
/* Submits every id of a job as faulted (nothing generated). */
void wk_job_fault_all(wk_state *w, wk_job *job, const char *why);
/* One horde call with retries on transient failures (network, 5xx, 429).
 * Returns the final HTTP status (0: unreachable), *resp a new reference or
 * NULL. attempts >= 1. */
int wk_horde_call(wk_state *w, const char *method, const char *path, const json_t *body,
                  int attempts, json_t **resp);

/* ---- status.c ----------------------------------------------------------------- */
/* The operator view (GET /api/v2/node/worker): new reference. Takes the lock. */
json_t *wk_status_json(wk_state *w);
void wk_status_route(hn_request *req, void *state);
void wk_status_timer(void *state);
/* "[#####.....]" of width chars into buf. */
void wk_progress_bar(char *buf, size_t len, int width, double fraction);

/* ---- commands.c --------------------------------------------------------------- */
int wk_command(int argc, char **argv, void *state);
extern const char wk_command_usage[];

#endif
