/* kudos: the horde's economy as a plugin. Declarations shared by the plugin's
 * glue files (kudos.c, hooks.c, routes.c, tracker.c); nothing here is seen by
 * other plugins, which reach the kudos plugin only through hooks and HTTP.
 *
 * Shape:
 *   - price.c / rules.c: pure formulas (§3.1-§3.8);
 *   - ledger.c / ops.c: every movement of kudos as a ledger row, one storage
 *     transaction per operation;
 *   - hooks.c: the broker's hooks (validate, price, priority, enqueued,
 *     popped, submitted, faulted, checked_in, generation_ended,
 *     generation_replay), user_details and worker_details;
 *   - roles.c: a promotion to trusted reaches auth's roles (user_set_roles);
 *   - routes.c: /kudos/transfer, /kudos/award, hook user_update (`kudos`);
 *   - writer.c: the thread that applies queued ledger events;
 *   - tracker.c: what the rules need from outside the ledger (queue size and
 *     worker threads from /status/performance, each worker's uptime and
 *     bridge) and the timers.
 *
 * Threads: hooks run on HTTP loop threads or the main loop; ledger writes
 * caused by notify hooks are queued to the plugin's writer thread, which
 * applies them in order, many per transaction (group commit), so loops never
 * wait on a commit and a busy broker does not pay one commit per event. The
 * in-memory tracker state is guarded by `lock`, the queue by `wq_lock`.
 * Ownership: the plugin owns everything in `kudos`; conf is the core's. */
#ifndef KD_KUDOS_H
#define KD_KUDOS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <hn/hn.h>

#include "ledger.h"
#include "map.h"
#include "models.h"
#include "ops.h"
#include "price.h"
#include "rules.h"

typedef struct kd_conf {
    const char *price_model;        /* JSON weights of the neural price model; NULL: legacy */
    const char *model_reference;    /* stable_diffusion.json; NULL: baselines by name tags */
    bool upfront;                   /* apply the upfront-kudos rule (§3.3) */
    bool upfront_on_workerlist;     /* §3.3 f: requests naming workers pay up front */
    double trust_threshold;         /* escrow above this promotes (0: never) */
    long long trust_min_age_s;      /* account age needed for promotion */
    long long uptime_interval_s;    /* uptime between rewards (horde: 600) */
    long long worker_stale_s;       /* a worker silent this long is stale (horde: 300) */
    long long stats_refresh_ms;     /* how often queue/threads are read */
    long long request_ttl_s;        /* a reservation lives this long after its last activity */
    long long unbound_reservation_s;/* a reservation whose request never came */
    long long award_user_id;        /* who may POST /kudos/award (horde: user 1) */
    double floor_anonymous, floor_pseudonymous, floor_registered;
    long long writer_delay_ms;      /* test aid: the writer waits this long before each batch */
    long long monthly_check_s;      /* how often monthly kudos are looked for (horde: hourly) */
    double moderator_monthly_kudos; /* moderators' monthly extra (horde: 300000) */
} kd_conf;

/* What the plugin knows of a worker between check-ins. */
typedef struct kd_worker {
    int64_t user_id;
    char bridge[256];
    int64_t last_seen;    /* unix seconds of the last check-in */
    int64_t unrewarded;   /* uptime since the last reward, seconds */
    bool recorded;        /* owner/bridge written to kudos_workers */
} kd_worker;

/* A ledger write caused by a broker notification, queued for the writer
 * thread. Plain data; freed by the writer. */
typedef enum kd_event_kind {
    KD_EV_ACTIVATE, /* a request was queued: activation tax, burn inputs, reservation */
    KD_EV_SETTLE,   /* a job was submitted */
    KD_EV_UPTIME,   /* an uptime reward */
    KD_EV_SEEN,     /* a worker's owner/bridge changed */
    KD_EV_TOUCH,    /* a request with a reservation was popped */
    KD_EV_END       /* a request ended: release its reservation */
} kd_event_kind;

typedef struct kd_event {
    struct kd_event *next;
    kd_event_kind kind;
    int64_t now;
    char id[64];        /* request (ACTIVATE, TOUCH, END), job (SETTLE), worker (UPTIME, SEEN) */
    char request[64];   /* SETTLE */
    char worker[64];    /* SETTLE */
    char token[40];     /* ACTIVATE: the reservation, "" for none */
    char bridge[256];   /* SETTLE ("" = as recorded), SEEN */
    int64_t user_id;    /* the requester (ACTIVATE, SETTLE), the owner (UPTIME, SEEN) */
    int64_t owner_id;   /* SETTLE */
    double amount;      /* ACTIVATE: price; SETTLE: G; UPTIME: the reward */
    double tax;         /* ACTIVATE */
    kd_burn_flags burn; /* ACTIVATE */
    int n;              /* ACTIVATE */
    bool censored;      /* SETTLE */
    kd_owner owner;     /* SETTLE, UPTIME: looked up by the writer before its transaction */
    int64_t style_owner;/* ACTIVATE: the creator of the style it uses, 0 for none */
    bool promoted;      /* SETTLE, UPTIME: set by the writer when the owner became trusted */
} kd_event;

typedef struct kudos {
    hn_plugin *self;
    const hn_api *api;
    const kd_conf *conf;
    kd_price_model *model;   /* NULL: legacy prices */
    kd_model_ref *ref;       /* NULL: no model reference */
    kd_ledger ledger;
    kd_trust trust;
    bool started;

    pthread_mutex_t lock;    /* guards everything below */
    kd_map workers;          /* worker id -> kd_worker */
    kd_map reserved;         /* request id -> (void *)1 for requests holding a reservation */
    long long queued_requests; /* from /status/performance */
    long long thread_count;
    bool stats_busy, prune_busy, monthly_busy;

    /* the writer thread (writer.c): one transaction per batch of events */
    pthread_t writer;
    pthread_mutex_t wq_lock;       /* guards the queue and the flags below */
    pthread_cond_t wq_cond;
    kd_event *wq_head, *wq_tail;
    bool writer_running, wq_stop;
    uint64_t batches, events;      /* for the log at stop */
} kudos;

/* ---- hooks.c -------------------------------------------------------------------------- */
int kd_hooks_register(kudos *k);
/* grant_hook.c: kudos_grant (awards from other plugins, e.g. ratings) */
int kd_grant_hook_register(kudos *k);

/* ---- routes.c ------------------------------------------------------------------------- */
int kd_routes_register(kudos *k);

/* ---- tracker.c ------------------------------------------------------------------------ */
int kd_tracker_init(kudos *k);      /* maps and timers (from init) */
void kd_tracker_free(kudos *k);
/* Queue size and worker threads as last read. */
void kd_tracker_load(kudos *k, long long *queue, long long *threads);
/* A worker popped: uptime bookkeeping, maybe an uptime reward (on the pool). */
void kd_tracker_checkin(kudos *k, const json_t *info);
/* The worker's bridge agent as last seen (out: "" when unknown). */
void kd_tracker_bridge(kudos *k, const char *worker_id, char *out, size_t len);

/* ---- roles.c: promotion reaches auth's roles (hook user_set_roles) -------------------- */
/* Gives user_id the trusted role; on success records it in the ledger.
 * Blocks on storage: the writer thread or start only. */
void kd_roles_promote(kudos *k, int64_t user_id);
/* Retries promotions whose role change was lost (a crash, auth not loaded). */
void kd_roles_resync(kudos *k);

/* ---- writer.c --------------------------------------------------------------------------- */
int kd_writer_start(kudos *k);  /* from start */
void kd_writer_stop(kudos *k);  /* drains the queue, joins */
/* Queues ev (taking ownership); applied in order of posting. Without a running
 * writer (commands, stopping) it is applied here and now. */
void kd_writer_post(kudos *k, kd_event *ev);
/* A zeroed event of `kind` stamped with the current time; NULL when out of memory. */
kd_event *kd_event_new(kd_event_kind kind);

/* Looks a user up through the user_lookup hook. */
bool kd_lookup_user(kudos *k, int64_t id, hn_user *out);
/* Trusted for the escrow rule: trusted, moderator, admin, or promoted here. */
kd_owner kd_owner_of(const hn_user *u);

#endif
