/* auth: managing users over HTTP (spec/horde-api.md §2):
 *   GET    /api/v2/users          the user list (paging, sort kudos|age)
 *   PUT    /api/v2/users/{id}     ModifyUser: runs hook user_update; auth's own
 *                                 handler applies the fields of the users table
 *   DELETE /api/v2/users/{id}     mark deleted, then wipe once inactive 30 days
 *
 * Role rules of PUT, as the horde checks them: admin-only fields (`kudos` in
 * the kudos plugin, `monthly_kudos`, `usage_multiplier`, `moderator`) 403
 * NotAdmin; moderator fields 403 NotModerator; owner-or-moderator fields 403
 * NotModerator too (the horde's answer for someone else's account). auth checks
 * every field it owns before writing any, so one refused field changes nothing
 * of auth's. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "auth_details.h"

#define USERS_PER_PAGE 25
#define USERS_MAX_PAGE 10000
#define EDUCATION_CONCURRENCY 200
#define WIPE_INACTIVE_S (30 * 86400)

/* ---- small helpers ----------------------------------------------------------------- */

static void respond_fail(auth_state *a, hn_request *req, int status, const char *rc,
                         const char *msg) {
    hn_error err;
    auth_fail(&err, status, rc, "%s", msg);
    a->api->respond_error(req, &err);
}

/* flask-restx's 400 for a bad argument (no rc). */
static void respond_schema(auth_state *a, hn_request *req, const char *field, const char *why) {
    a->api->respond_json(req, 400,
                         json_pack("{s:s, s:{s:s}}", "message", "Input payload validation failed",
                                   "errors", field, why));
}

static bool parse_user_id(const char *s, int64_t *id) {
    if (!s || !s[0] || strlen(s) > 18)
        return false;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
    }
    *id = strtoll(s, NULL, 10);
    return true;
}

/* A present, non-null member. */
static const json_t *field(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    return v && !json_is_null(v) ? v : NULL;
}

static long utf8_len(const char *s) {
    long n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        n += (*p & 0xc0) != 0x80;
    return n;
}

/* Copies at most max_chars UTF-8 characters of s. */
static void utf8_truncate(const char *s, long max_chars, char *out, size_t size) {
    size_t i = 0;
    long chars = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (p[i] && i + 1 < size) {
        if ((p[i] & 0xc0) != 0x80) {
            if (chars == max_chars)
                break;
            chars++;
        }
        i++;
    }
    /* never end inside a character */
    while (i > 0 && i < strlen(s) && (p[i] & 0xc0) == 0x80)
        i--;
    memcpy(out, s, i);
    out[i] = '\0';
}

/* ---- the body's shape (checked before the hook runs) ------------------------------------ */

typedef enum { F_BOOL, F_INT, F_NUM, F_STR } field_kind;
static const struct {
    const char *name;
    field_kind kind;
    double min, max; /* numbers: value range; strings: length in characters; 0,0 = none */
} put_fields[] = {
    {"kudos", F_INT, 0, 0},
    {"monthly_kudos", F_INT, 0, 0},
    {"usage_multiplier", F_NUM, 0.1, 10},
    {"moderator", F_BOOL, 0, 0},
    {"concurrency", F_INT, 0, 500},
    {"worker_invited", F_INT, 0, 0},
    {"trusted", F_BOOL, 0, 0},
    {"flagged", F_BOOL, 0, 0},
    {"customizer", F_BOOL, 0, 0},
    {"vpn", F_BOOL, 0, 0},
    {"service", F_BOOL, 0, 0},
    {"education", F_BOOL, 0, 0},
    {"special", F_BOOL, 0, 0},
    {"filtered", F_BOOL, 0, 0},
    {"reset_suspicion", F_BOOL, 0, 0},
    {"admin_comment", F_STR, 5, 500},
    {"public_workers", F_BOOL, 0, 0},
    {"username", F_STR, 3, 100},
    {"contact", F_STR, 5, 500},
    {"generate_proxy_passkey", F_BOOL, 0, 0},
    {"undelete", F_BOOL, 0, 0},
};

/* NULL when body's known fields have the right types; else the field name,
 * with the reason in why. */
static const char *check_shape(const json_t *body, char *why, size_t n) {
    for (size_t i = 0; i < sizeof put_fields / sizeof *put_fields; i++) {
        const json_t *v = field(body, put_fields[i].name);
        if (!v)
            continue;
        double lo = put_fields[i].min, hi = put_fields[i].max;
        switch (put_fields[i].kind) {
        case F_BOOL:
            if (!json_is_boolean(v)) {
                snprintf(why, n, "%s is not of type 'boolean'", "value");
                return put_fields[i].name;
            }
            break;
        case F_INT:
        case F_NUM: {
            if (!json_is_number(v) || (put_fields[i].kind == F_INT && !json_is_integer(v))) {
                snprintf(why, n, "value is not of type '%s'",
                         put_fields[i].kind == F_INT ? "integer" : "number");
                return put_fields[i].name;
            }
            double d = json_number_value(v);
            if ((lo != 0 || hi != 0) && (d < lo || d > hi)) {
                snprintf(why, n, "%g is out of range %g..%g", d, lo, hi);
                return put_fields[i].name;
            }
            break;
        }
        case F_STR: {
            if (!json_is_string(v)) {
                snprintf(why, n, "value is not of type 'string'");
                return put_fields[i].name;
            }
            long len = utf8_len(json_string_value(v));
            if (len < (long)lo || len > (long)hi) {
                snprintf(why, n, "must be %g to %g characters long", lo, hi);
                return put_fields[i].name;
            }
            break;
        }
        }
    }
    return NULL;
}

/* ---- hook user_update: auth's fields ------------------------------------------------------ */

static const struct {
    const char *field;
    uint32_t bit;
    bool admin_only;
} role_fields[] = {
    {"moderator", HN_ROLE_MODERATOR, true}, {"trusted", HN_ROLE_TRUSTED, false},
    {"flagged", HN_ROLE_FLAGGED, false},    {"customizer", HN_ROLE_CUSTOMIZER, false},
    {"vpn", HN_ROLE_VPN, false},            {"service", HN_ROLE_SERVICE, false},
    {"education", HN_ROLE_EDUCATION, false}, {"special", HN_ROLE_SPECIAL, false},
};

/* Which fields need which role; the first refused one answers. */
static hn_rc check_roles(const hn_user *actor, const auth_account *target, const json_t *ch,
                         hn_error *err) {
    bool admin = actor->roles & HN_ROLE_ADMIN;
    bool mod = admin || (actor->roles & HN_ROLE_MODERATOR);
    bool self = actor->id != 0 && actor->id == target->user.id;
    static const char *const admin_fields[] = {"monthly_kudos", "usage_multiplier", "moderator",
                                               NULL};
    static const char *const mod_fields[] = {
        "concurrency", "worker_invited", "trusted", "flagged", "customizer", "vpn", "service",
        "education", "special", "filtered", "reset_suspicion", "admin_comment", NULL};
    static const char *const owner_fields[] = {"public_workers", "username", "contact",
                                               "generate_proxy_passkey", "undelete", NULL};
    for (const char *const *f = admin_fields; *f; f++)
        if (field(ch, *f) && !admin)
            return auth_fail(err, 403, "NotAdmin", "You're not an admin. Sneaky.");
    for (const char *const *f = mod_fields; *f; f++)
        if (field(ch, *f) && !mod)
            return auth_fail(err, 403, "NotModerator", "You're not a mod. BTFO!");
    for (const char *const *f = owner_fields; *f; f++)
        if (field(ch, *f) && !mod && !self)
            return auth_fail(err, 403, "NotModerator",
                             "Only the user themself or a moderator can change %s.", *f);
    const json_t *gp = field(ch, "generate_proxy_passkey");
    if (gp && json_is_true(gp) && !(target->user.roles & HN_ROLE_SERVICE))
        return auth_fail(err, 403, "NonServiceForbidden",
                         "Only service accounts can have a proxy passkey.");
    const json_t *ud = field(ch, "undelete");
    if (ud && json_is_true(ud) && !target->deleted)
        return auth_fail(err, 400, "UserNotDeleted", "This user is not deleted.");
    return HN_OK;
}

#define MAX_SETS 24
typedef struct update_plan {
    auth_column_set sets[MAX_SETS];
    size_t n;
    char username[AUTH_ALIAS_MAX_BYTES * 2];
    char passkey[AUTH_KEY_LEN + 1];
} update_plan;

static void plan_set(update_plan *p, const char *column, hn_value v) {
    if (p->n < MAX_SETS)
        p->sets[p->n++] = (auth_column_set){column, v};
}

hn_rc auth_user_update(void *state, const hn_user *actor, int64_t user_id, const json_t *ch,
                       json_t *result, hn_error *err) {
    auth_state *a = state;
    if (!a->db.vt)
        return auth_fail(err, 503, "StorageError", "auth: not started");
    auth_account t;
    hn_rc rc = auth_users_get(&a->db, user_id, &t, err);
    if (rc == HN_DECLINED)
        return auth_fail(err, 404, "UserNotFound", "User with ID '%" PRId64 "' not found.",
                         user_id);
    if (rc != HN_OK || check_roles(actor, &t, ch, err) != HN_OK)
        return HN_ERROR;
    update_plan p = {.n = 0};
    bool username_cut = false;
    json_t *out = json_object();
    const json_t *v;
    if ((v = field(ch, "monthly_kudos"))) {
        plan_set(&p, "monthly_kudos", HN_V_INT(json_integer_value(v)));
        json_object_set_new(out, "monthly_kudos", json_integer(json_integer_value(v)));
    }
    if ((v = field(ch, "usage_multiplier"))) {
        plan_set(&p, "usage_multiplier", HN_V_DOUBLE(json_number_value(v)));
        json_object_set_new(out, "usage_multiplier", json_real(json_number_value(v)));
    }
    uint32_t roles = t.user.roles;
    int concurrency = t.user.concurrency;
    if ((v = field(ch, "concurrency"))) {
        concurrency = (int)json_integer_value(v);
        json_object_set_new(out, "concurrency", json_integer(concurrency));
    }
    if ((v = field(ch, "worker_invited"))) {
        plan_set(&p, "worker_invited", HN_V_INT(json_integer_value(v)));
        json_object_set_new(out, "worker_invited", json_integer(json_integer_value(v)));
    }
    for (size_t i = 0; i < sizeof role_fields / sizeof *role_fields; i++) {
        if (!(v = field(ch, role_fields[i].field)))
            continue;
        bool on = json_is_true(v);
        roles = on ? roles | role_fields[i].bit : roles & ~role_fields[i].bit;
        json_object_set_new(out, role_fields[i].field, json_boolean(on));
        /* education users get the horde's bigger concurrency, and back */
        if (role_fields[i].bit == HN_ROLE_EDUCATION && !field(ch, "concurrency"))
            concurrency = on ? EDUCATION_CONCURRENCY : (int)a->conf->concurrency;
    }
    if (roles != t.user.roles)
        plan_set(&p, "roles", HN_V_INT(roles));
    if (concurrency != t.user.concurrency)
        plan_set(&p, "concurrency", HN_V_INT(concurrency));
    if ((v = field(ch, "filtered"))) {
        plan_set(&p, "filtered", HN_V_INT(json_is_true(v)));
        json_object_set_new(out, "filtered", json_boolean(json_is_true(v)));
    }
    if ((v = field(ch, "reset_suspicion")) && json_is_true(v)) {
        plan_set(&p, "suspicion", HN_V_INT(0));
        plan_set(&p, "suspicion_reasons", HN_V_INT(0)); /* once-only reasons count again */
        json_object_set_new(out, "new_suspicion", json_integer(0));
    }
    if ((v = field(ch, "admin_comment"))) {
        plan_set(&p, "admin_comment", HN_V_TEXT(json_string_value(v)));
        json_object_set_new(out, "admin_comment", json_string(json_string_value(v)));
    }
    if ((v = field(ch, "public_workers"))) {
        plan_set(&p, "public_workers", HN_V_INT(json_is_true(v)));
        json_object_set_new(out, "public_workers", json_boolean(json_is_true(v)));
    }
    if ((v = field(ch, "username"))) {
        /* the horde keeps the first 30 characters */
        utf8_truncate(json_string_value(v), AUTH_ALIAS_MAX, p.username, sizeof p.username);
        /* a name cut to 30 is the horde's USERNAME_LONG suspicion (§5) */
        username_cut = strcmp(p.username, json_string_value(v)) != 0;
        const char *why = user_id == 0 ? "the anonymous user cannot be renamed"
                                       : auth_alias_check(p.username);
        if (why) {
            json_decref(out);
            return auth_fail(err, 400, "BadUsername", "%s", why);
        }
        if (a->api->text_profane(json_string_value(v))) { /* §5 profanity checks */
            json_decref(out);
            return auth_fail(err, 400, "Profanity",
                             "%s tried to use a profane username. Please use a different one.",
                             t.user.username);
        }
        plan_set(&p, "username", HN_V_TEXT(p.username));
        json_object_set_new(out, "username", json_string(p.username));
    }
    if ((v = field(ch, "contact"))) {
        if (a->api->text_profane(json_string_value(v))) {
            json_decref(out);
            return auth_fail(err, 400, "Profanity",
                             "%s tried to use a profane contact. Please use a different one.",
                             t.user.username);
        }
        plan_set(&p, "contact", HN_V_TEXT(json_string_value(v)));
        json_object_set_new(out, "contact", json_string(json_string_value(v)));
    }
    if ((v = field(ch, "generate_proxy_passkey")) && json_is_true(v)) {
        if (!auth_key_generate(p.passkey)) {
            json_decref(out);
            return auth_fail(err, 500, "InternalError", "auth: the system random source failed");
        }
        plan_set(&p, "proxy_passkey", HN_V_TEXT(p.passkey));
        json_object_set_new(out, "proxy_passkey", json_string(p.passkey));
    }
    if ((v = field(ch, "undelete")) && json_is_true(v)) {
        plan_set(&p, "deleted", HN_V_INT(0));
        plan_set(&p, "deleted_at", HN_V_INT(0));
        json_object_set_new(out, "undeleted", json_true());
    }
    if (auth_users_update(&a->db, user_id, p.sets, p.n, err) != HN_OK) {
        json_decref(out);
        return HN_ERROR;
    }
    if (json_object_get(out, "proxy_passkey") || json_object_get(out, "flagged"))
        auth_proxy_invalidate(a); /* which passkeys count changed */
    if (username_cut) { /* best effort: the rename itself succeeded */
        hn_error serr;
        auth_user_suspicion(a, user_id, HN_SUSPICION_USERNAME_LONG, NULL, &serr);
    }
    json_object_update(result, out);
    json_decref(out);
    return HN_OK;
}

/* ---- the routes ---------------------------------------------------------------------------- */

/* The caller of a route that needs a key: HN_OK with *who, else answered. */
static bool require_key(auth_state *a, hn_request *req, const char *what, hn_user *who) {
    const char *apikey = a->api->req_header(req, "apikey");
    if (!apikey || !apikey[0]) {
        char why[160];
        snprintf(why, sizeof why, "%s Missing required parameter in the HTTP headers", what);
        respond_schema(a, req, "apikey", why);
        return false;
    }
    hn_error err = {0};
    if (auth_resolve(a, req, who, &err) != HN_OK) {
        a->api->respond_error(req, &err);
        return false;
    }
    return true;
}

/* Target of /users/{id}: true with *acc, else answered 404. */
static bool target_user(auth_state *a, hn_request *req, auth_account *acc) {
    hn_error err = {0};
    int64_t id;
    if (!parse_user_id(a->api->req_param(req, "id"), &id)) {
        respond_fail(a, req, 404, "UserNotFound",
                     "Please use only the numerical part of the userID. E.g. the '1' in 'db0#1'");
        return false;
    }
    hn_rc rc = auth_users_get(&a->db, id, acc, &err);
    if (rc == HN_DECLINED)
        auth_fail(&err, 404, "UserNotFound", "User with ID '%" PRId64 "' not found.", id);
    if (rc != HN_OK) {
        a->api->respond_error(req, &err);
        return false;
    }
    return true;
}

static void route_user_put(auth_state *a, hn_request *req) {
    hn_error err = {0};
    auth_account target;
    if (!target_user(a, req, &target))
        return;
    json_t *body = a->api->req_json(req, &err);
    if (!body) {
        a->api->respond_error(req, &err);
        return;
    }
    if (!json_is_object(body)) {
        respond_fail(a, req, 400, "BadRequest", "The body must be a JSON object.");
        return;
    }
    char why[160];
    const char *bad = check_shape(body, why, sizeof why);
    if (bad) {
        respond_schema(a, req, bad, why);
        return;
    }
    hn_user who;
    if (!require_key(a, req, "The Admin, Mod or Owner API key.", &who))
        return;
    json_t *result = json_object();
    if (hn_run_user_update(a->api, &who, target.user.id, body, result, &err) == HN_ERROR) {
        json_decref(result);
        a->api->respond_error(req, &err);
        return;
    }
    if (json_object_size(result) == 0) {
        json_decref(result);
        respond_fail(a, req, 400, "NoUserModSelected", "No usermod operations selected!");
        return;
    }
    a->api->respond_json(req, 200, result);
}

static void route_user_delete(auth_state *a, hn_request *req) {
    hn_error err = {0};
    auth_account t;
    if (!target_user(a, req, &t))
        return;
    hn_user who;
    if (!require_key(a, req, "The Moderator or Owner API key.", &who))
        return;
    bool mod = who.roles & (HN_ROLE_MODERATOR | HN_ROLE_ADMIN);
    if (who.id == 0 || t.user.id == 0) {
        respond_fail(a, req, 403, "AnonForbiddenUser",
                     "The anonymous user cannot delete or be deleted.");
        return;
    }
    if ((t.user.roles & (HN_ROLE_MODERATOR | HN_ROLE_ADMIN)) && who.id != t.user.id) {
        respond_fail(a, req, 403, "CannotDeleteMod",
                     "You cannot delete a moderator. Remove their role first.");
        return;
    }
    if (!mod && who.id != t.user.id) {
        respond_fail(a, req, 403, "NotUserOrMod",
                     "Only the user themself or a moderator can delete this user.");
        return;
    }
    int64_t now = time(NULL);
    hn_rc rc;
    if (!t.deleted) {
        auth_column_set sets[] = {{"deleted", HN_V_INT(1)}, {"deleted_at", HN_V_INT(now)}};
        rc = auth_users_update(&a->db, t.user.id, sets, 2, &err);
    } else {
        /* activity: its last authenticated call, or its creation */
        int64_t last = t.last_active > t.user.created ? t.last_active : t.user.created;
        if (now - last < WIPE_INACTIVE_S) {
            respond_fail(a, req, 403, "CannotWipeActiveUser",
                         "This user has been active in the last 30 days and cannot be wiped.");
            return;
        }
        rc = auth_users_wipe(&a->db, t.user.id, &err);
    }
    if (rc != HN_OK) {
        a->api->respond_error(req, &err);
        return;
    }
    a->api->respond_json(req, 200, json_pack("{s:s}", "message", "OK"));
}

void auth_route_user_manage(hn_request *req, void *state) {
    auth_state *a = state;
    if (!a->db.vt) {
        respond_fail(a, req, 503, "StorageError", "auth: not started");
        return;
    }
    if (a->api->req_method(req) == HN_PUT)
        route_user_put(a, req);
    else
        route_user_delete(a, req);
}

/* GET /api/v2/users: public details (privilege 0), 25 a page. */
typedef struct list_ctx {
    auth_state *a;
    json_t *out;
    int64_t now;
} list_ctx;

static void add_details(const auth_account *acc, void *p) {
    list_ctx *c = p;
    json_t *d = auth_user_details(acc, 0, c->now);
    hn_run_user_details(c->a->api, &acc->user, 0, d);
    json_array_append_new(c->out, d);
}

static int by_kudos_desc(const void *x, const void *y) {
    double kx = json_number_value(json_object_get(*(json_t *const *)x, "kudos"));
    double ky = json_number_value(json_object_get(*(json_t *const *)y, "kudos"));
    if (kx != ky)
        return kx < ky ? 1 : -1;
    json_int_t ix = json_integer_value(json_object_get(*(json_t *const *)x, "id"));
    json_int_t iy = json_integer_value(json_object_get(*(json_t *const *)y, "id"));
    return ix < iy ? -1 : ix > iy;
}

void auth_route_users(hn_request *req, void *state) {
    auth_state *a = state;
    hn_error err = {0};
    if (!a->db.vt) {
        respond_fail(a, req, 503, "StorageError", "auth: not started");
        return;
    }
    const char *page_s = a->api->req_query(req, "page");
    const char *sort = a->api->req_query(req, "sort");
    long long page = 1;
    if (page_s) {
        char *end = NULL;
        page = strtoll(page_s, &end, 10);
        if (!page_s[0] || *end || page < 1) {
            respond_schema(a, req, "page", "Which page of results to return. invalid literal");
            return;
        }
    }
    if (!sort)
        sort = "kudos";
    if (strcmp(sort, "kudos") != 0 && strcmp(sort, "age") != 0) {
        respond_schema(a, req, "sort", "The value is not a valid choice: kudos, age");
        return;
    }
    list_ctx c = {a, json_array(), time(NULL)};
    if (page > USERS_MAX_PAGE) {
        a->api->respond_json(req, 200, c.out);
        return;
    }
    int64_t offset = (page - 1) * USERS_PER_PAGE;
    hn_rc rc;
    if (strcmp(sort, "age") == 0) {
        rc = auth_users_page(&a->db, offset, USERS_PER_PAGE, add_details, &c, &err);
    } else {
        /* kudos live in the kudos plugin: every user's details are built and
         * sorted here (fine for a self-hosted horde's thousands of users) */
        rc = auth_users_list(&a->db, add_details, &c, &err);
        if (rc == HN_OK) {
            size_t n = json_array_size(c.out);
            json_t **all = calloc(n ? n : 1, sizeof *all);
            json_t *paged = json_array();
            if (!all) {
                json_decref(paged);
                rc = auth_fail(&err, 500, "OutOfMemory", "auth: out of memory");
            } else {
                for (size_t i = 0; i < n; i++)
                    all[i] = json_array_get(c.out, i);
                qsort(all, n, sizeof *all, by_kudos_desc);
                for (size_t i = (size_t)offset; i < n && i < (size_t)offset + USERS_PER_PAGE; i++)
                    json_array_append(paged, all[i]);
                free(all);
                json_decref(c.out);
                c.out = paged;
            }
        }
    }
    if (rc != HN_OK) {
        json_decref(c.out);
        a->api->respond_error(req, &err);
        return;
    }
    a->api->respond_json(req, 200, c.out);
}
