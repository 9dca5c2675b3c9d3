/* broker: the accounts side of the horde (spec/horde-api.md §2): horde modes,
 * teams, worker messages, shared keys, and worker deletion.
 *
 * State lives in `br_accounts` (one per broker, b->acc), guarded by the
 * broker's own lock like the rest of the index. Rows go through the broker's
 * writer (br_op, group commit) in tables of the migration owner
 * "broker_accounts" (accounts_store.c), so that these tables never collide
 * with the image flow's migrations of owner "broker".
 *
 * Ownership: br_accounts owns every br_team, br_wmsg and br_skey in its maps;
 * pointers to them are valid while b->lock is held. */
#ifndef BR_ACCOUNTS_H
#define BR_ACCOUNTS_H

#include "broker.h"

#define BR_RAID_ABORT_LIMIT 10        /* aborts/hour that flag a worker in raid mode */
#define BR_MSG_MAX_EXPIRY_H 720       /* worker messages live at most 30 days */
#define BR_SKEY_MAX_DEFAULT 3         /* shared keys per user */
#define BR_SKEY_MAX_TRUSTED 10
#define BR_SKEY_MAX_EDUCATION 1000

typedef struct br_team {
    char id[BR_ID_LEN];
    char *name, *info;
    int64_t creator_id;
    char creator[128];      /* "alias#id" */
    int64_t created_ms;
} br_team;

typedef struct br_wmsg {
    char id[BR_ID_LEN];
    char worker_id[BR_ID_LEN]; /* "" = every worker (a global message) */
    int64_t user_id;           /* who wrote it */
    char *message, *origin;
    int64_t expiry_ms, created_ms;
} br_wmsg;

typedef struct br_skey {
    char id[BR_ID_LEN];
    int64_t user_id;
    char username[128];
    char *name;
    int64_t kudos;            /* -1: unlimited */
    int64_t expiry_ms;        /* 0: never */
    double utilized;          /* kudos spent through the key */
    int64_t max_image_pixels, max_image_steps, max_text_tokens; /* -1: unlimited */
} br_skey;

/* A user's worker_invited (auth's field, mirrored here through hook
 * user_update for invite-only mode). */
typedef struct br_invite {
    char key[24]; /* decimal user id, the map key */
    int64_t invited;
} br_invite;

typedef struct br_accounts {
    bool maintenance, invite_only, raid; /* horde modes (GET|PUT /status/modes) */
    br_map teams;                        /* id -> br_team */
    br_map worker_team;                  /* worker id -> br_team (borrowed) */
    br_map messages;                     /* id -> br_wmsg */
    br_map skeys;                        /* id -> br_skey */
    br_map invites;                      /* user id -> br_invite */
} br_accounts;

/* accounts_store.c: migrate and load (from broker_start, after br_store_start);
 * free at fini. */
int br_accounts_start(broker *b, hn_error *err);
void br_accounts_free(broker *b);
/* Row writers (add statements to op). */
int br_acc_store_mode(br_op *op, const char *name, bool on);
int br_acc_store_team(br_op *op, const br_team *t);
int br_acc_store_team_delete(br_op *op, const char *team_id);
int br_acc_store_worker_team(br_op *op, const char *worker_id, const br_team *t);
int br_acc_store_message(br_op *op, const br_wmsg *m);
int br_acc_store_message_delete(br_op *op, const char *id);
int br_acc_store_skey(br_op *op, const br_skey *k);
int br_acc_store_skey_delete(br_op *op, const char *id);
int br_acc_store_invite(br_op *op, int64_t user_id, int64_t invited);
/* The user's br_invite (made when create is true). Caller holds the lock. */
br_invite *br_acc_invite(broker *b, int64_t user_id, bool create);
void br_team_free(br_team *t);
void br_wmsg_free(br_wmsg *m);
void br_skey_free(br_skey *k);

/* modes.c */
bool br_mode_maintenance(broker *b);        /* caller need not hold the lock */
bool br_mode_invite_only(broker *b);        /* caller holds the lock */
long long br_abort_limit(broker *b);        /* caller holds the lock */
/* In invite-only mode, for a worker name not yet known: the user's
 * worker_invited (it may own that many workers); else -1 (no limit). Takes
 * the lock. */
int64_t br_invite_allowance(broker *b, const hn_user *user, const char *worker_name);
void br_route_modes(hn_request *req, void *state);

/* teams.c */
void br_route_teams(hn_request *req, void *state);
void br_route_team_single(hn_request *req, void *state);
/* {"id","name"} of w's team, or NULL (caller holds the lock). */
const br_team *br_worker_team(broker *b, const br_worker *w);

/* messages.c */
void br_route_worker_messages(hn_request *req, void *state);
void br_route_worker_message_single(hn_request *req, void *state);
/* The active messages for worker w (its own and the global ones), as the
 * pop answer's "messages" list; a new reference. Caller holds the lock. */
json_t *br_worker_messages_json(broker *b, const br_worker *w, int64_t now_ms);

/* sharedkeys.c */
void br_route_sharedkeys(hn_request *req, void *state);
void br_route_sharedkey_single(hn_request *req, void *state);
/* On generate: when the apikey header is a shared key, fills *user with its
 * owner and skey_id with the key; HN_DECLINED when it is not a shared key. */
hn_rc br_sharedkey_authenticate(broker *b, hn_request *req, hn_user *user,
                                char skey_id[BR_ID_LEN], hn_error *err);
/* Hook sharedkey_owner (see hooks.def). */
hn_rc br_hook_sharedkey_owner(void *state, const char *key, bool check_expiry, int64_t *user_id,
                              char *name, size_t name_size, hn_error *err);
/* Hook sharedkey_credit: a transfer's kudos raise a finite key's budget. */
hn_rc br_hook_sharedkey_credit(void *state, const char *key, double amount, hn_error *err);
/* Checks a request against the key's limits and adds its cost to the key's
 * use. HN_OK, or HN_ERROR with the horde's rc. */
hn_rc br_sharedkey_charge(broker *b, const char *skey_id, const br_req_spec *s, double cost,
                          hn_error *err);

/* workers_manage.c: DELETE /workers/{id}; hook user_update (owner roles). */
void br_route_worker_delete(hn_request *req, void *state);
hn_rc br_hook_user_update(void *state, const hn_user *actor, int64_t user_id,
                          const json_t *changes, json_t *result, hn_error *err);

/* suspicion.c: worker suspicion (§5). Counts `reason` (HN_SUSPICION_*) on w
 * (once per reason, except UNREASONABLY_FAST and TOO_MANY_JOBS_ABORTED) and
 * pauses it at HN_SUSPICIOUS_AT; true when it counted. Caller holds the lock
 * and commits w (it is marked dirty). */
bool br_worker_suspect(broker *b, br_worker *w, int reason);
/* Cuts name (in place) to its first max_chars UTF-8 characters; returns how
 * many it had. */
size_t br_worker_name_cut(char *name, size_t max_chars);
#define BR_WORKER_NAME_MAX 100     /* longer names are cut: WORKER_NAME_LONG */
#define BR_WORKER_NAME_EXTREME 200 /* and beyond this, WORKER_NAME_EXTREME */
#define BR_EXTREME_MAX_PIXELS (3072LL * 3072) /* untrusted max_pixels beyond: suspicion */
/* Owner bits kept in br_worker.owner_roles: the HN_ROLE_* bits plus this
 * broker-private one (never an HN_ROLE_*), so that it persists with them. */
#define BR_OWNER_PUBLIC_WORKERS (1u << 31)
/* The owner_roles value for a worker of user u. */
uint32_t br_owner_bits(const hn_user *u);

/* Shared by the files above (accounts_util in accounts_store.c). */
bool br_is_mod(const hn_user *u);
/* The apikey header is required: answers the horde's 400 and returns false
 * when it is missing, 401 when unknown. */
bool br_require_user(broker *b, hn_request *req, const char *what, hn_user *user);
/* Answers 503 and returns false while the broker is starting. */
bool br_ready(broker *b, hn_request *req);
/* Commits op and answers req with status/body afterwards (b->lock held). */
void br_acc_commit(broker *b, br_op *op, hn_request *req, int status, json_t *body);
/* RFC 822 date of unix ms, as flask-restx writes dates. */
void br_rfc822(int64_t ms, char *out, size_t n);

#endif
