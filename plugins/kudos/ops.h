/* kudos: the business operations on the ledger, one transaction each: request
 * activation, settling a submitted job, uptime rewards, transfers, awards and
 * admin grants, upfront reservations, and pruning.
 *
 * They take plain data (no hn_api), so the C tests run them on a real SQLite
 * store exactly as the plugin does. Operations triggered by broker events
 * carry an event key ("job:<id>", "activate:<id>", ...): applying one twice
 * changes nothing the second time. */
#ifndef KD_OPS_H
#define KD_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "ledger.h"
#include "rules.h"

/* Trust promotion (§3.5). threshold 0 disables it. */
typedef struct kd_trust {
    double threshold;  /* escrow must exceed this many kudos */
    int64_t min_age_s; /* account age needed (horde: 7 days) */
} kd_trust;

/* A worker's owner as the earning rules see them. */
typedef struct kd_owner {
    int64_t id;
    bool trusted;    /* trusted, moderator or admin role */
    int64_t created; /* account creation, unix seconds */
    bool suspicious; /* §5: never promoted to trusted while suspicious */
} kd_owner;

/* ---- requests ------------------------------------------------------------------------- */

typedef struct kd_request_info {
    const char *id;
    int64_t user_id;
    double price;              /* wp.kudos */
    kd_burn_flags burn;
    int n;
    double activation_tax;     /* 1 (+5 per extra source image) */
    const char *reservation;   /* token from kd_op_reserve, or NULL */
    int64_t style_owner;       /* creator of the style it uses (0: none): +2 tax, 2 to them */
} kd_request_info;

/* Records the request's burn inputs, binds its reservation, and charges the
 * activation tax (event "activate:<id>"). Using another user's style adds 2
 * to the tax and pays that user 2, counted as `styled` (§3.2). */
hn_rc kd_op_activate(kd_ledger *l, const kd_request_info *r, int64_t now, hn_error *err);

/* A request ended (done, cancelled, expired, faulted): its reservation is
 * released at once. Jobs still in flight settle as usual. */
hn_rc kd_op_release_request(kd_ledger *l, const char *request_id, int64_t now, hn_error *err);

/* Keeps a request's reservation alive (a pop happened). */
hn_rc kd_op_touch_request(kd_ledger *l, const char *request_id, int64_t now, hn_error *err);

typedef struct kd_job_settle {
    const char *job_id, *request_id, *worker_id;
    const char *bridge_agent; /* NULL: the one recorded for the worker */
    int64_t requester_id;
    kd_owner owner;
    double gen_kudos;         /* G = wp.kudos x baseline multiplier of the model run */
    bool censored;
} kd_job_settle;

typedef struct kd_settled {
    bool duplicate;       /* this job was settled before: nothing done */
    bool request_known;   /* the request's burn inputs were on record */
    double charged;       /* burned from the requester */
    double earned;        /* G x bridge multiplier, to the owner */
    double escrowed;      /* the part of `earned` that went to escrow */
    bool promoted;        /* the owner became trusted */
} kd_settled;

/* A worker submitted an image (event "job:<id>"): the requester pays
 * burn(censored ? 0 : G), the owner earns G x bridge multiplier (half into
 * escrow while untrusted), the request's reservation shrinks by the charge and
 * is released once all its images are paid. */
hn_rc kd_op_settle_job(kd_ledger *l, const kd_job_settle *s, const kd_trust *t, int64_t now,
                       kd_settled *out, hn_error *err);

/* ---- workers --------------------------------------------------------------------------- */

/* Remembers a worker's owner and bridge agent (for settling after a restart). */
hn_rc kd_op_worker_seen(kd_ledger *l, const char *worker_id, int64_t user_id,
                        const char *bridge_agent, int64_t now, hn_error *err);

/* An uptime reward (all into escrow for untrusted owners). */
hn_rc kd_op_uptime(kd_ledger *l, const char *worker_id, const kd_owner *owner, double amount,
                   const kd_trust *t, const char *event, int64_t now, bool *promoted,
                   hn_error *err);

/* A worker's kudos_rewards split: generated and uptime (kudos). HN_DECLINED if
 * never seen. */
hn_rc kd_op_worker_kudos(kd_ledger *l, const char *worker_id, double *generated, double *uptime,
                         hn_error *err);

/* ---- the same, inside a transaction the caller holds (the writer thread
 * batches many events into one commit). Each returns HN_OK also when its event
 * was applied before (then it wrote nothing), HN_ERROR with tx->err filled. */
hn_rc kd_apply_activate(kd_tx *tx, const kd_request_info *r);
hn_rc kd_apply_touch(kd_tx *tx, const char *request_id);
hn_rc kd_apply_release(kd_tx *tx, const char *request_id);
hn_rc kd_apply_settle_job(kd_tx *tx, const kd_job_settle *s, const kd_trust *t, kd_settled *out);
hn_rc kd_apply_worker_seen(kd_tx *tx, const char *worker_id, int64_t user_id,
                          const char *bridge_agent);
hn_rc kd_apply_uptime(kd_tx *tx, const char *worker_id, const kd_owner *owner, double amount,
                      const kd_trust *t, const char *event, bool *promoted);

/* ---- user to user ------------------------------------------------------------------------ */

typedef struct kd_party {
    int64_t id;
    uint32_t roles;  /* HN_ROLE_* */
    bool suspicious; /* hn_user_suspicious(): §5 count at the limit, not trusted */
    bool deleted;    /* marked deleted by a moderator (ABI 1.3 hn_user.deleted) */
} kd_party;

typedef struct kd_transfer {
    kd_party source, target;       /* resolved, distinct, neither anonymous */
    long long amount;
    const char *idempotency_key;   /* NULL: none */
} kd_transfer;

/* The checks of §3.6 from TooFastKudosTransfers on, in the horde's order;
 * refusals are HN_ERROR with err = 400 + the rc. A replay of an
 * Idempotency-Key with the same parameters succeeds with *replayed set and
 * moves nothing. */
hn_rc kd_op_transfer(kd_ledger *l, const kd_transfer *t, int64_t now, bool *replayed,
                     hn_error *err);

/* Awards and admin grants: amount (may be negative) with `reason`, counted
 * towards kudos_details[detail]. *after gets the account afterwards. */
hn_rc kd_op_grant(kd_ledger *l, int64_t user_id, double amount, const char *reason,
                  const char *detail, int64_t now, kd_account *after, hn_error *err);

/* ---- promotion and auth's roles ---------------------------------------------------------- */

/* Promoted by the ledger and the role change not yet through: counts as
 * trusted until it is (then the role alone decides). */
bool kd_trusted_pending(const kd_account *a);

/* Up to `max` users promoted here whose role has not reached auth yet. */
hn_rc kd_op_unsynced_promotions(kd_ledger *l, int64_t *ids, size_t max, size_t *n,
                                hn_error *err);
/* Records that user_id's promotion reached auth's roles. */
hn_rc kd_op_mark_role_synced(kd_ledger *l, int64_t user_id, hn_error *err);

/* ---- monthly kudos (§3.7) ------------------------------------------------------------------ */

/* One calendar month after `t` (unix seconds, UTC), the day clamped to that
 * month's last day (Jan 31 -> Feb 28/29), as the horde's relativedelta. */
int64_t kd_month_after(int64_t t);

/* Pays every user whose monthly kudos are due (never received, or a calendar
 * month has passed since): auth's users.monthly_kudos, plus moderator_amount
 * for moderators, counted as `recurring` (event "recurring:<id>:<last>", so a
 * retried payment moves nothing twice). *paid gets the number of users paid.
 * Does nothing without the monthly_kudos column. */
hn_rc kd_op_monthly(kd_ledger *l, int64_t now, double moderator_amount, int *paid, hn_error *err);

/* When user_id last received monthly kudos (0: never). */
hn_rc kd_op_monthly_last(kd_ledger *l, int64_t user_id, int64_t *last, hn_error *err);

/* ---- upfront reservations (§3.3) --------------------------------------------------------- */

/* Reserves `cents` of the user's available kudos under `token` if they are
 * there. *granted false: nothing reserved (*available says what there was). */
hn_rc kd_op_reserve(kd_ledger *l, int64_t user_id, int64_t cents, const char *token, int64_t now,
                    bool *granted, int64_t *available, hn_error *err);

/* Drops reservations not bound to a request within unbound_ttl_s (its request
 * was refused after validation), and requests (with their reservations) with
 * no activity for request_ttl_s (expired or cancelled), and old event keys. */
hn_rc kd_op_prune(kd_ledger *l, int64_t now, int64_t unbound_ttl_s, int64_t request_ttl_s,
                  hn_error *err);

#endif
