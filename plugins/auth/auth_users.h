/* auth: the users table (owner "auth" in the storage provider).
 *
 * One row per user: the alias, roles (HN_ROLE_* bits), concurrency, an
 * initial kudos balance, and the API key as key_id (clear, indexed) + salt +
 * hash (see auth_keys.h). User 0 is the anonymous user "Anonymous" with the
 * well-known key 0000000000 (no row key: that key is matched by value).
 *
 * `kudos` is only the balance given at creation (`user create --kudos N`) for
 * now; the kudos plugin is expected to take the column over.
 *
 * All functions block on the database; they are short (indexed lookups). */
#ifndef AUTH_USERS_H
#define AUTH_USERS_H

#include <hn/hn.h>

#include "auth_keys.h"

#define AUTH_ALIAS_MIN 3   /* characters */
#define AUTH_ALIAS_MAX 30  /* characters, as the horde truncates */
#define AUTH_ALIAS_MAX_BYTES 96 /* so that "alias#id" fits hn_user.username */
#define AUTH_DEFAULT_CONCURRENCY 30
#define AUTH_ANON_CONCURRENCY 500
#define AUTH_ANON_NAME "Anonymous"

/* The storage provider as auth uses it (borrowed from the storage plugin). */
typedef struct auth_db {
    const hn_storage_vt *vt;
    void *state;
} auth_db;

typedef struct auth_account {
    hn_user user;          /* what hooks hand out: id, "alias#id", roles, concurrency, created */
    char alias[128];       /* the name without "#id" (UTF-8, up to 30 characters) */
    double kudos;
    bool pseudonymous;     /* created through open registration */
    bool public_workers;
    int64_t worker_invited;
    char contact[2048];    /* "" when none (up to 500 characters) */
    /* added by migration 2 (PUT /users/{id}, DELETE /users/{id}) */
    double usage_multiplier;   /* admin-set, 0.1..10 (default 1) */
    int64_t monthly_kudos;     /* admin-set monthly grant amount */
    char admin_comment[2048];  /* moderators' note, "" when none */
    bool deleted;              /* marked deleted (first DELETE) */
    int64_t deleted_at;        /* unix seconds it was marked, 0 when not */
    int64_t suspicion;         /* suspicion count (§5); reset by moderators */
    char proxy_passkey[64];    /* service accounts' proxy passkey, "" when none */
    int64_t last_active;       /* unix seconds of its last authenticated call (hourly) */
    bool filtered;             /* moderators' flag: its prompts always get the replacement filter */
} auth_account;

typedef struct auth_new_user {
    const char *alias;
    uint32_t roles;
    int concurrency;
    double kudos;
    bool pseudonymous;
} auth_new_user;

/* Creates/updates the schema and makes sure user 0 exists. */
hn_rc auth_users_migrate(const auth_db *db, hn_error *err);

/* Lookups: HN_OK with *out, HN_DECLINED when there is no such user. */
hn_rc auth_users_get(const auth_db *db, int64_t id, auth_account *out, hn_error *err);
hn_rc auth_users_find_alias(const auth_db *db, const char *alias, auth_account *out,
                            hn_error *err);
/* Finds the user whose key this is: the anonymous key, or a well-formed key
 * whose id and hash match. Anything else is HN_DECLINED. */
hn_rc auth_users_find_key(const auth_db *db, const char *key, auth_account *out, hn_error *err);
/* A user named by "alias", "alias#id" or a numeric id (for the commands). */
hn_rc auth_users_find_ref(const auth_db *db, const char *ref, auth_account *out, hn_error *err);

/* Creates a user and its key (written to key[], shown once, never stored).
 * 400 NameAlreadyExists when the alias is taken, 400 BadUsername when it is
 * not acceptable (see auth_alias_check). */
hn_rc auth_users_create(const auth_db *db, const auth_new_user *nu, auth_account *out,
                        char key[AUTH_KEY_LEN + 1], hn_error *err);
/* Replaces user id's key; the old key stops working at once. The anonymous
 * user's key cannot be changed (400 AnonForbidden). */
hn_rc auth_users_reset_key(const auth_db *db, int64_t id, char key[AUTH_KEY_LEN + 1],
                           hn_error *err);

typedef void auth_user_visit_fn(const auth_account *acc, void *ctx);

/* One changed column of a users row (auth_users_update). */
typedef struct auth_column_set {
    const char *column; /* a users column name (trusted text, never user input) */
    hn_value value;
} auth_column_set;

/* Writes the given columns of user id in one statement. A taken username is
 * 400 NameAlreadyExists; an unknown id 404 UserNotFound. */
hn_rc auth_users_update(const auth_db *db, int64_t id, const auth_column_set *sets, size_t n,
                        hn_error *err);
/* Removes user id's row for good (the second DELETE /users/{id}). */
hn_rc auth_users_wipe(const auth_db *db, int64_t id, hn_error *err);
/* Records that user id was active now when its last record is older than an
 * hour (one write per user per hour at most). */
void auth_users_touch(const auth_db *db, const auth_account *acc, int64_t now);

/* A page of users in id order (oldest first): offset rows skipped, at most
 * limit visited. */
hn_rc auth_users_page(const auth_db *db, int64_t offset, int64_t limit, auth_user_visit_fn *fn,
                      void *ctx, hn_error *err);

/* Calls fn for every user, by id. */
hn_rc auth_users_list(const auth_db *db, auth_user_visit_fn *fn, void *ctx, hn_error *err);

/* NULL when alias is acceptable: 3..30 UTF-8 characters, no control
 * characters, at most 96 bytes, no '#' (it separates alias and id), no leading/trailing space,
 * not the anonymous user's name. Otherwise a static reason. */
const char *auth_alias_check(const char *alias);

/* Fills err (if not NULL) and returns HN_ERROR. */
hn_rc auth_fail(hn_error *err, int status, const char *rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
