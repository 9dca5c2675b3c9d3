/* horde-node plugin SDK: basic types shared by every header.
 *
 * This header, like every header under include/hn/, is self-contained and is
 * the whole contract between the core and a plugin. Nothing in the core sources is
 * visible to plugins (the core exports no symbols; plugins link -z defs). */
#ifndef HN_TYPES_H
#define HN_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes of hooks, lifecycle callbacks and most API calls. */
typedef enum hn_rc {
    HN_OK = 0,        /* handled, go on with the next handler (RUN_ALL) */
    HN_DECLINED = 1,  /* not mine: the next handler is tried (RUN_FIRST) */
    HN_DONE = 2,      /* handled, stop running further handlers */
    HN_ERROR = -1     /* failed: details are in the hn_error passed along */
} hn_rc;

/* An error that can travel to an HTTP client unchanged as the horde's
 * envelope {"message": ..., "rc": ...}. Fixed-size buffers so that no one has
 * to own or free anything: a caller puts one on its stack and passes it down. */
typedef struct hn_error {
    int status;          /* HTTP status to answer with (400, 401, 403, 404, ...) */
    char rc[64];         /* the horde's rc code, e.g. "InvalidAPIKey" */
    char message[512];   /* human readable, never contains secrets */
} hn_error;

/* Opaque handles. */
typedef struct hn_plugin hn_plugin;     /* one loaded plugin, owned by the core */
typedef struct hn_request hn_request;   /* one HTTP request, owned by the core */

/* Who made a request, as the auth plugin resolved it (hook http_authenticate).
 * Plain data with fixed buffers: copied freely, nothing to free. */
enum {
    HN_ROLE_ADMIN = 1u << 0,
    HN_ROLE_MODERATOR = 1u << 1,
    HN_ROLE_TRUSTED = 1u << 2,
    HN_ROLE_FLAGGED = 1u << 3,
    HN_ROLE_CUSTOMIZER = 1u << 4,
    HN_ROLE_SERVICE = 1u << 5,
    HN_ROLE_EDUCATION = 1u << 6,
    HN_ROLE_VPN = 1u << 7,
    HN_ROLE_SPECIAL = 1u << 8
};

typedef struct hn_user {
    uint32_t size;         /* sizeof(hn_user) as the filler knew it */
    int64_t id;            /* 0 is the anonymous user */
    char username[128];    /* "name#id", as the horde shows it */
    uint32_t roles;        /* HN_ROLE_* bits */
    int concurrency;       /* max requests in flight, horde default 30 */
    int64_t created;       /* unix seconds */
    /* ---- added in ABI 1.3: read only where `size` covers them (HN_USER_HAS) ---- */
    bool deleted;            /* marked deleted: pop and generate answer 403 DeletedUser */
    bool filtered;           /* moderators' flag: its prompts always get the replacement filter */
    bool public_workers;     /* its workers' owner and messages are shown publicly */
    int64_t suspicion;       /* §5 suspicion count (hook user_suspicion raises it) */
    double usage_multiplier; /* admin-set 0.1..10; scales the user's usage records (1 default) */
} hn_user;

/* True when the filler of `u` knew field `f` (appended after ABI 1.2). */
#define HN_USER_HAS(u, f) ((u)->size >= offsetof(hn_user, f) + sizeof((u)->f))

/* The horde's suspicion reasons (horde/suspicions.py, spec §5), for hook
 * user_suspicion and worker suspicion. Each counts once per account, except
 * UNREASONABLY_FAST and TOO_MANY_JOBS_ABORTED, which count every time. */
enum {
    HN_SUSPICION_WORKER_NAME_LONG = 0,
    HN_SUSPICION_WORKER_NAME_EXTREME = 1,
    HN_SUSPICION_WORKER_PROFANITY = 2,
    HN_SUSPICION_UNSAFE_IP = 3,
    HN_SUSPICION_EXTREME_MAX_PIXELS = 4,
    HN_SUSPICION_UNREASONABLY_FAST = 5,
    HN_SUSPICION_USERNAME_LONG = 6,
    HN_SUSPICION_USERNAME_PROFANITY = 7,
    HN_SUSPICION_CORRUPT_PROMPT = 8,
    HN_SUSPICION_TOO_MANY_JOBS_ABORTED = 9
};
/* A user (never a trusted one) or a worker is suspicious from this count on:
 * a suspicious user cannot send or receive kudos and is not auto-trusted; a
 * suspicious worker is paused. */
#define HN_SUSPICIOUS_AT 5

/* Whether the user counts as suspicious (§5). */
static inline bool hn_user_suspicious(const hn_user *u) {
    return HN_USER_HAS(u, suspicion) && u->suspicion >= HN_SUSPICIOUS_AT &&
           !(u->roles & HN_ROLE_TRUSTED);
}

#ifdef __cplusplus
}
#endif
#endif
