/* broker: rows of the accounts side (accounts.h) and the helpers its route
 * files share. Migration owner "broker_accounts". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "accounts.h"

/* ---- schema ------------------------------------------------------------------------------- */

#define ACCOUNTS_SCHEMA_V1                                                                      \
    "CREATE TABLE broker_modes (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"               \
    "CREATE TABLE broker_teams (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,"                \
    " info TEXT NOT NULL, creator_id BIGINT NOT NULL, creator TEXT NOT NULL,"                  \
    " created BIGINT NOT NULL);"                                                               \
    "CREATE TABLE broker_worker_teams (worker_id TEXT PRIMARY KEY, team_id TEXT NOT NULL);"    \
    "CREATE TABLE broker_worker_messages (id TEXT PRIMARY KEY, worker_id TEXT NOT NULL,"        \
    " user_id BIGINT NOT NULL, message TEXT NOT NULL, origin TEXT NOT NULL,"                   \
    " expiry BIGINT NOT NULL, created BIGINT NOT NULL);"                                       \
    "CREATE TABLE broker_sharedkeys (id TEXT PRIMARY KEY, user_id BIGINT NOT NULL,"             \
    " username TEXT NOT NULL, name TEXT NOT NULL, kudos BIGINT NOT NULL,"                      \
    " expiry BIGINT NOT NULL, utilized DOUBLE PRECISION NOT NULL,"                             \
    " max_image_pixels BIGINT NOT NULL, max_image_steps BIGINT NOT NULL,"                      \
    " max_text_tokens BIGINT NOT NULL);"                                                      \
    "CREATE TABLE broker_worker_invites (user_id BIGINT PRIMARY KEY, invited BIGINT NOT NULL)"

static const hn_migration accounts_migrations[] = {{1, ACCOUNTS_SCHEMA_V1}};

/* ---- row writers --------------------------------------------------------------------------- */

int br_acc_store_mode(br_op *op, const char *name, bool on) {
    hn_value a[] = {HN_V_TEXT(name), HN_V_INT(on)};
    return br_op_sql(op,
                     "INSERT INTO broker_modes (name, value) VALUES (?, ?) ON CONFLICT (name) "
                     "DO UPDATE SET value = excluded.value",
                     a, 2);
}

int br_acc_store_team(br_op *op, const br_team *t) {
    hn_value a[] = {HN_V_TEXT(t->id),         HN_V_TEXT(t->name),    HN_V_TEXT(t->info),
                    HN_V_INT(t->creator_id), HN_V_TEXT(t->creator), HN_V_INT(t->created_ms)};
    return br_op_sql(op,
                     "INSERT INTO broker_teams (id, name, info, creator_id, creator, created) "
                     "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                     "name = excluded.name, info = excluded.info",
                     a, 6);
}

int br_acc_store_team_delete(br_op *op, const char *team_id) {
    hn_value a[] = {HN_V_TEXT(team_id)};
    int rc = br_op_sql(op, "DELETE FROM broker_worker_teams WHERE team_id = ?", a, 1);
    return rc | br_op_sql(op, "DELETE FROM broker_teams WHERE id = ?", a, 1);
}

int br_acc_store_worker_team(br_op *op, const char *worker_id, const br_team *t) {
    hn_value a[] = {HN_V_TEXT(worker_id), HN_V_TEXT(t ? t->id : "")};
    if (!t)
        return br_op_sql(op, "DELETE FROM broker_worker_teams WHERE worker_id = ?", a, 1);
    return br_op_sql(op,
                     "INSERT INTO broker_worker_teams (worker_id, team_id) VALUES (?, ?) "
                     "ON CONFLICT (worker_id) DO UPDATE SET team_id = excluded.team_id",
                     a, 2);
}

int br_acc_store_message(br_op *op, const br_wmsg *m) {
    hn_value a[] = {HN_V_TEXT(m->id),        HN_V_TEXT(m->worker_id), HN_V_INT(m->user_id),
                    HN_V_TEXT(m->message),   HN_V_TEXT(m->origin),    HN_V_INT(m->expiry_ms),
                    HN_V_INT(m->created_ms)};
    return br_op_sql(op,
                     "INSERT INTO broker_worker_messages (id, worker_id, user_id, message, "
                     "origin, expiry, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     a, 7);
}

int br_acc_store_message_delete(br_op *op, const char *id) {
    hn_value a[] = {HN_V_TEXT(id)};
    return br_op_sql(op, "DELETE FROM broker_worker_messages WHERE id = ?", a, 1);
}

int br_acc_store_skey(br_op *op, const br_skey *k) {
    hn_value a[] = {HN_V_TEXT(k->id),
                    HN_V_INT(k->user_id),
                    HN_V_TEXT(k->username),
                    HN_V_TEXT(k->name),
                    HN_V_INT(k->kudos),
                    HN_V_INT(k->expiry_ms),
                    HN_V_DOUBLE(k->utilized),
                    HN_V_INT(k->max_image_pixels),
                    HN_V_INT(k->max_image_steps),
                    HN_V_INT(k->max_text_tokens)};
    return br_op_sql(op,
                     "INSERT INTO broker_sharedkeys (id, user_id, username, name, kudos, expiry, "
                     "utilized, max_image_pixels, max_image_steps, max_text_tokens) VALUES "
                     "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                     "name = excluded.name, kudos = excluded.kudos, expiry = excluded.expiry, "
                     "utilized = excluded.utilized, max_image_pixels = excluded.max_image_pixels, "
                     "max_image_steps = excluded.max_image_steps, "
                     "max_text_tokens = excluded.max_text_tokens",
                     a, 10);
}

int br_acc_store_skey_delete(br_op *op, const char *id) {
    hn_value a[] = {HN_V_TEXT(id)};
    return br_op_sql(op, "DELETE FROM broker_sharedkeys WHERE id = ?", a, 1);
}

int br_acc_store_invite(br_op *op, int64_t user_id, int64_t invited) {
    hn_value a[] = {HN_V_INT(user_id), HN_V_INT(invited)};
    return br_op_sql(op,
                     "INSERT INTO broker_worker_invites (user_id, invited) VALUES (?, ?) "
                     "ON CONFLICT (user_id) DO UPDATE SET invited = excluded.invited",
                     a, 2);
}

br_invite *br_acc_invite(broker *b, int64_t user_id, bool create) {
    char key[24];
    snprintf(key, sizeof(key), "%lld", (long long)user_id);
    br_invite *inv = br_map_get(&b->acc->invites, key);
    if (inv || !create)
        return inv;
    inv = calloc(1, sizeof(*inv));
    if (!inv)
        return NULL;
    memcpy(inv->key, key, sizeof(key));
    if (br_map_put(&b->acc->invites, inv->key, inv) != 0) {
        free(inv);
        return NULL;
    }
    return inv;
}

void br_team_free(br_team *t) {
    if (!t)
        return;
    free(t->name);
    free(t->info);
    free(t);
}

void br_wmsg_free(br_wmsg *m) {
    if (!m)
        return;
    free(m->message);
    free(m->origin);
    free(m);
}

void br_skey_free(br_skey *k) {
    if (!k)
        return;
    free(k->name);
    free(k);
}

/* ---- loading ----------------------------------------------------------------------------- */

static hn_rc load_rows(broker *b, hn_db *db, const char *sql,
                       void (*row)(broker *b, const hn_storage_vt *vt, hn_stmt *st),
                       hn_error *err) {
    hn_stmt *st = b->db->query(db, sql, NULL, 0, err);
    if (!st)
        return HN_ERROR;
    int r;
    while ((r = b->db->step(st, err)) == 1)
        row(b, b->db, st);
    b->db->finish(st);
    return r < 0 ? HN_ERROR : HN_OK;
}

static void mode_row(broker *b, const hn_storage_vt *vt, hn_stmt *st) {
    const char *name = vt->col_text(st, 0);
    bool on = vt->col_int(st, 1) != 0;
    if (strcmp(name, "maintenance") == 0)
        b->acc->maintenance = on;
    else if (strcmp(name, "invite_only") == 0)
        b->acc->invite_only = on;
    else if (strcmp(name, "raid") == 0)
        b->acc->raid = on;
}

static void team_row(broker *b, const hn_storage_vt *vt, hn_stmt *st) {
    br_team *t = calloc(1, sizeof(*t));
    if (!t)
        return;
    snprintf(t->id, sizeof(t->id), "%s", vt->col_text(st, 0));
    t->name = strdup(vt->col_text(st, 1));
    t->info = strdup(vt->col_text(st, 2));
    t->creator_id = vt->col_int(st, 3);
    snprintf(t->creator, sizeof(t->creator), "%s", vt->col_text(st, 4));
    t->created_ms = vt->col_int(st, 5);
    if (!t->name || !t->info || br_map_put(&b->acc->teams, t->id, t) != 0)
        br_team_free(t);
}

static void worker_team_row(broker *b, const hn_storage_vt *vt, hn_stmt *st) {
    br_worker *w = br_worker_find(b, vt->col_text(st, 0));
    br_team *t = br_map_get(&b->acc->teams, vt->col_text(st, 1));
    if (w && t)
        br_map_put(&b->acc->worker_team, w->id, t);
}

static void message_row(broker *b, const hn_storage_vt *vt, hn_stmt *st) {
    br_wmsg *m = calloc(1, sizeof(*m));
    if (!m)
        return;
    snprintf(m->id, sizeof(m->id), "%s", vt->col_text(st, 0));
    snprintf(m->worker_id, sizeof(m->worker_id), "%s", vt->col_text(st, 1));
    m->user_id = vt->col_int(st, 2);
    m->message = strdup(vt->col_text(st, 3));
    m->origin = strdup(vt->col_text(st, 4));
    m->expiry_ms = vt->col_int(st, 5);
    m->created_ms = vt->col_int(st, 6);
    if (!m->message || !m->origin || br_map_put(&b->acc->messages, m->id, m) != 0)
        br_wmsg_free(m);
}

static void invite_row(broker *b, const hn_storage_vt *vt, hn_stmt *st) {
    br_invite *inv = br_acc_invite(b, vt->col_int(st, 0), true);
    if (inv)
        inv->invited = vt->col_int(st, 1);
}

static void skey_row(broker *b, const hn_storage_vt *vt, hn_stmt *st) {
    br_skey *k = calloc(1, sizeof(*k));
    if (!k)
        return;
    snprintf(k->id, sizeof(k->id), "%s", vt->col_text(st, 0));
    k->user_id = vt->col_int(st, 1);
    snprintf(k->username, sizeof(k->username), "%s", vt->col_text(st, 2));
    k->name = strdup(vt->col_text(st, 3));
    k->kudos = vt->col_int(st, 4);
    k->expiry_ms = vt->col_int(st, 5);
    k->utilized = vt->col_double(st, 6);
    k->max_image_pixels = vt->col_int(st, 7);
    k->max_image_steps = vt->col_int(st, 8);
    k->max_text_tokens = vt->col_int(st, 9);
    if (!k->name || br_map_put(&b->acc->skeys, k->id, k) != 0)
        br_skey_free(k);
}

int br_accounts_start(broker *b, hn_error *err) {
    if (!b->acc) {
        b->acc = calloc(1, sizeof(*b->acc));
        if (!b->acc) {
            b->api->error(err, 500, "InternalServerError", "out of memory");
            return -1;
        }
        br_map_init(&b->acc->teams);
        br_map_init(&b->acc->worker_team);
        br_map_init(&b->acc->messages);
        br_map_init(&b->acc->skeys);
        br_map_init(&b->acc->invites);
    }
    /* the config's maintenance_mode is the default until a moderator sets it */
    b->acc->maintenance = b->conf->maintenance_mode;
    if (b->db->migrate(b->storage->state, "broker_accounts", accounts_migrations, 1, err) !=
        HN_OK)
        return -1;
    hn_db *db = b->db->acquire(b->storage->state, err);
    if (!db)
        return -1;
    pthread_mutex_lock(&b->lock);
    hn_rc rc = load_rows(b, db, "SELECT name, value FROM broker_modes", mode_row, err);
    if (rc == HN_OK)
        rc = load_rows(b, db,
                       "SELECT id, name, info, creator_id, creator, created FROM broker_teams",
                       team_row, err);
    if (rc == HN_OK)
        rc = load_rows(b, db, "SELECT worker_id, team_id FROM broker_worker_teams",
                       worker_team_row, err);
    if (rc == HN_OK)
        rc = load_rows(b, db,
                       "SELECT id, worker_id, user_id, message, origin, expiry, created FROM "
                       "broker_worker_messages",
                       message_row, err);
    if (rc == HN_OK)
        rc = load_rows(b, db,
                       "SELECT id, user_id, username, name, kudos, expiry, utilized, "
                       "max_image_pixels, max_image_steps, max_text_tokens FROM broker_sharedkeys",
                       skey_row, err);
    if (rc == HN_OK)
        rc = load_rows(b, db, "SELECT user_id, invited FROM broker_worker_invites", invite_row,
                       err);
    pthread_mutex_unlock(&b->lock);
    b->db->release(b->storage->state, db);
    return rc == HN_OK ? 0 : -1;
}

void br_accounts_free(broker *b) {
    br_accounts *a = b->acc;
    if (!a)
        return;
    size_t i = 0;
    void *v;
    while (br_map_next(&a->teams, &i, NULL, &v))
        br_team_free(v);
    i = 0;
    while (br_map_next(&a->messages, &i, NULL, &v))
        br_wmsg_free(v);
    i = 0;
    while (br_map_next(&a->skeys, &i, NULL, &v))
        br_skey_free(v);
    i = 0;
    while (br_map_next(&a->invites, &i, NULL, &v))
        free(v);
    br_map_free(&a->invites);
    br_map_free(&a->teams);
    br_map_free(&a->worker_team);
    br_map_free(&a->messages);
    br_map_free(&a->skeys);
    free(a);
    b->acc = NULL;
}

/* ---- helpers shared by the accounts routes ------------------------------------------------ */

bool br_is_mod(const hn_user *u) {
    return (u->roles & (HN_ROLE_MODERATOR | HN_ROLE_ADMIN)) != 0;
}

bool br_ready(broker *b, hn_request *req) {
    if (b->started && b->acc)
        return true;
    br_fail(b, req, 503, "ServiceUnavailable", "The broker is starting.");
    return false;
}

bool br_require_user(broker *b, hn_request *req, const char *what, hn_user *user) {
    if (!b->api->req_header(req, "apikey")) {
        char why[200];
        snprintf(why, sizeof(why), "%s Missing required parameter in the HTTP headers", what);
        br_respond_schema_errors(b, req, json_pack("{s:s}", "apikey", why));
        return false;
    }
    hn_error err;
    if (br_authenticate(b, req, user, &err) != HN_OK) {
        b->api->respond_error(req, &err);
        return false;
    }
    return true;
}

void br_acc_commit(broker *b, br_op *op, hn_request *req, int status, json_t *body) {
    br_op_reply(op, req, status, body, -1, NULL);
    b->api->req_suspend(req);
    br_op_submit(b, op);
}

void br_rfc822(int64_t ms, char *out, size_t n) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    snprintf(out, n, "%s, %02d %s %04d %02d:%02d:%02d -0000", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}
