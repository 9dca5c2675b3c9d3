/* broker: image styles and style collections (spec/horde-api.md §1.7):
 *   GET POST           /api/v2/styles/image
 *   GET PATCH DELETE   /api/v2/styles/image/{style_id}
 *   GET                /api/v2/styles/image_by_name/{style_name}
 *   POST               /api/v2/styles/image/{style_id}/example
 *   PATCH DELETE       /api/v2/styles/image/{style_id}/example/{example_id}
 *   GET POST           /api/v2/collections
 *   GET PATCH DELETE   /api/v2/collections/{collection_id}
 *   GET                /api/v2/collection_by_name/{collection_name}
 * and `style` on POST /generate/async (br_styles_apply).
 *
 * A style is a prompt template with {p} and {np}, params and 1 to 5 models.
 * Creating one needs a trusted or customizer user (moderators too); its
 * params are checked with the generation schema itself (validate.c), so a
 * style can never carry what a request could not. Names are unique per user;
 * by name a style is "name" or "alias#id::style::name". A collection is a
 * named list of styles; using a collection as `style` picks one of its
 * styles at random (as the horde does).
 *
 * Using someone else's style pays its owner 2 kudos and costs the requester
 * 2 more (hook kudos_grant, implemented by the kudos plugin; without it
 * nothing moves). Styles and collections are kept in memory as the JSON the
 * API shows (plus "_user_id" and "_created"), written through to mod_styles
 * and mod_collections on every change. Shared keys bound to styles are not
 * supported (a `sharedkey` field is refused). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker.h"
#include "moderation.h"

#define PAGE_SIZE 25
#define MAX_MODELS 5
#define MAX_TAGS 10
#define MAX_EXAMPLES 4

/* ---- storage ------------------------------------------------------------------------------- */

static int load_table(broker *b, hn_db *db, const char *sql, json_t *into, hn_error *err) {
    hn_stmt *st = b->db->query(db, sql, NULL, 0, err);
    if (!st)
        return -1;
    int rc;
    while ((rc = b->db->step(st, err)) == 1) {
        json_t *o = json_loads(b->db->col_text(st, 1), 0, NULL);
        if (json_is_object(o))
            json_object_set_new(into, b->db->col_text(st, 0), o);
        else
            json_decref(o);
    }
    b->db->finish(st);
    return rc < 0 ? -1 : 0;
}

/* Keeps the higher use_count of the copy in memory (counted since the
 * style's last write) when a reload replaces it. */
static void keep_use_counts(json_t *fresh, json_t *old) {
    const char *id;
    json_t *o;
    json_object_foreach(fresh, id, o) {
        json_int_t was = json_integer_value(json_object_get(json_object_get(old, id), "use_count"));
        if (was > json_integer_value(json_object_get(o, "use_count")))
            json_object_set_new(o, "use_count", json_integer(was));
    }
}

int br_styles_load(broker *b, hn_db *db, hn_error *err) {
    br_mod *m = b->mod;
    /* read into objects of our own, then swap them in (also a reload in cluster mode) */
    json_t *styles = json_object(), *collections = json_object();
    if (load_table(b, db, "SELECT id, body FROM mod_styles", styles, err) != 0 ||
        load_table(b, db, "SELECT id, body FROM mod_collections", collections, err) != 0) {
        json_decref(styles);
        json_decref(collections);
        return -1;
    }
    pthread_mutex_lock(&m->lock);
    json_t *old_styles = m->styles, *old_collections = m->collections;
    if (old_styles)
        keep_use_counts(styles, old_styles);
    if (old_collections)
        keep_use_counts(collections, old_collections);
    m->styles = styles;
    m->collections = collections;
    pthread_mutex_unlock(&m->lock);
    json_decref(old_styles);
    json_decref(old_collections);
    return 0;
}

void br_styles_free(br_mod *m) {
    json_decref(m->styles);
    json_decref(m->collections);
    m->styles = m->collections = NULL;
}

/* Upserts (o != NULL) or deletes a row of table. */
static hn_rc save_row(broker *b, const char *table, const char *id, int64_t user_id,
                      const json_t *o, hn_error *err) {
    hn_db *db = br_mod_db(b, err);
    if (!db)
        return HN_ERROR;
    char sql[256];
    hn_rc rc;
    if (o) {
        char *text = json_dumps(o, JSON_COMPACT);
        if (!text) {
            br_mod_db_release(b, db);
            return b->api->error(err, 500, "InternalServerError", "out of memory");
        }
        snprintf(sql, sizeof(sql),
                 "INSERT INTO %s (id, user_id, body) VALUES (?, ?, ?) ON CONFLICT (id) DO "
                 "UPDATE SET body = excluded.body",
                 table);
        hn_value args[] = {HN_V_TEXT(id), HN_V_INT(user_id), HN_V_TEXT(text)};
        rc = b->db->exec(db, sql, args, 3, NULL, err);
        free(text);
    } else {
        snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE id = ?", table);
        hn_value args[] = {HN_V_TEXT(id)};
        rc = b->db->exec(db, sql, args, 1, NULL, err);
    }
    br_mod_db_release(b, db);
    return rc;
}

/* ---- helpers ------------------------------------------------------------------------------- */

/* The object as the API shows it (keys starting with '_' are ours). */
static json_t *public_copy(const json_t *o) {
    json_t *out = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v) {
        if (k[0] != '_')
            json_object_set(out, k, v);
    }
    return out;
}

static int64_t owner_of(const json_t *o) {
    return (int64_t)json_integer_value(json_object_get(o, "_user_id"));
}

/* A style or collection by id, or by "name" / "alias#id::style::name" /
 * "alias#id::name" (caller holds m->lock). Borrowed. */
static json_t *find_in(json_t *all, const char *key, const char *kind) {
    char id[BR_ID_LEN];
    if (br_uuid_parse(key, id)) {
        json_t *o = json_object_get(all, id);
        if (o)
            return o;
    }
    char creator[160] = "";
    const char *name = key;
    const char *sep = strstr(key, "::");
    if (sep && (size_t)(sep - key) < sizeof(creator)) {
        memcpy(creator, key, (size_t)(sep - key));
        creator[sep - key] = '\0';
        name = sep + 2;
        size_t kl = strlen(kind);
        if (strncmp(name, kind, kl) == 0 && strncmp(name + kl, "::", 2) == 0)
            name += kl + 2;
    }
    json_t *found = NULL;
    const char *k;
    json_t *o;
    json_object_foreach(all, k, o) {
        const char *n = json_string_value(json_object_get(o, "name"));
        if (!n || strcmp(n, name) != 0)
            continue;
        const char *c = json_string_value(json_object_get(o, "creator"));
        if (creator[0] && (!c || strcmp(c, creator) != 0))
            continue;
        /* several users may use one name: the oldest public one wins */
        if (!found || (json_is_true(json_object_get(o, "public")) &&
                       (!json_is_true(json_object_get(found, "public")) ||
                        json_integer_value(json_object_get(o, "_created")) <
                            json_integer_value(json_object_get(found, "_created")))))
            found = o;
    }
    return found;
}

static bool require_user(broker *b, hn_request *req, hn_user *u) {
    hn_error err;
    if (!b->api->req_header(req, "apikey")) {
        br_respond_schema_errors(
            b, req,
            json_pack("{s:s}", "apikey",
                      "A User API key. Missing required parameter in the HTTP headers"));
        return false;
    }
    if (br_authenticate(b, req, u, &err) != HN_OK) {
        b->api->respond_error(req, &err);
        return false;
    }
    if (!b->mod->started) {
        br_fail(b, req, 503, "ServiceUnavailable", "The broker is starting.");
        return false;
    }
    return true;
}

static bool text_ok(broker *b, hn_request *req, const json_t *body, const char *key, size_t min,
                    size_t max, bool required) {
    const json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v)) {
        if (!required)
            return true;
        br_respond_schema_errors(
            b, req, json_pack("{s:s}", key, "Missing required parameter in the JSON body"));
        return false;
    }
    if (!json_is_string(v) || json_string_length(v) < min || json_string_length(v) > max) {
        char msg[128];
        snprintf(msg, sizeof(msg), "%s must be a string of %zu to %zu characters", key, min, max);
        br_respond_schema_errors(b, req, json_pack("{s:s}", key, msg));
        return false;
    }
    return true;
}

static bool bool_ok(broker *b, hn_request *req, const json_t *body, const char *key) {
    const json_t *v = json_object_get(body, key);
    if (v && !json_is_boolean(v) && !json_is_null(v)) {
        br_respond_schema_errors(b, req, json_pack("{s:s}", key, "must be a boolean"));
        return false;
    }
    return true;
}

/* A list of 1..max strings of 1..255 characters (max_items 0: may be empty). */
static bool list_ok(broker *b, hn_request *req, const json_t *v, const char *key, size_t min_items,
                    size_t max_items, const char *too_few, const char *too_many) {
    if (!json_is_array(v)) {
        br_respond_schema_errors(b, req, json_pack("{s:s}", key, "must be a list of strings"));
        return false;
    }
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
        if (!json_is_string(x) || json_string_length(x) < 1 || json_string_length(x) > 255) {
            br_respond_schema_errors(b, req,
                                     json_pack("{s:s}", key, "items must be strings of 1..255"));
            return false;
        }
    }
    if (json_array_size(v) < min_items) {
        br_fail(b, req, 400, "BadRequest", "%s", too_few);
        return false;
    }
    if (json_array_size(v) > max_items) {
        br_fail(b, req, 400, "BadRequest", "%s", too_many);
        return false;
    }
    return true;
}

/* Checks a style body (POST: creating, else PATCH). The params go through
 * the generation schema. */
static bool style_body_ok(broker *b, hn_request *req, const json_t *body, bool creating) {
    if (json_object_get(body, "sharedkey")) {
        br_fail(b, req, 400, "BadRequest", "Shared keys bound to styles are not supported here.");
        return false;
    }
    if (!text_ok(b, req, body, "name", 1, 100, creating) ||
        !text_ok(b, req, body, "info", 1, 1000, false) ||
        !text_ok(b, req, body, "prompt", 7, 10000, false) || !bool_ok(b, req, body, "public") ||
        !bool_ok(b, req, body, "nsfw"))
        return false;
    const char *prompt = br_jstr(body, "prompt");
    if (prompt && (!strstr(prompt, "{p}") || !strstr(prompt, "{np}"))) {
        br_fail(b, req, 400, "StylePromptMissingVars",
                "Style prompts must contain the {p} and {np} variables.");
        return false;
    }
    const json_t *models = json_object_get(body, "models");
    if ((creating || models) &&
        !list_ok(b, req, models ? models : json_null(), "models", 1, MAX_MODELS,
                 "A style has to specify at least one model.",
                 "A style can only use a maximum of 5 models."))
        return false;
    const json_t *tags = json_object_get(body, "tags");
    if (tags && !list_ok(b, req, tags, "tags", 0, MAX_TAGS, "",
                         "A style can be tagged a maximum of 10 times."))
        return false;
    const json_t *params = json_object_get(body, "params");
    if (params) {
        json_t *probe = json_pack("{s:s, s:O}", "prompt", "probe", "params", params);
        json_t *errors = br_validate_async_schema(probe);
        json_decref(probe);
        if (errors) {
            br_respond_schema_errors(b, req, errors);
            return false;
        }
    }
    return true;
}

/* Copies the style fields of body into st. */
static void style_set_fields(json_t *st, const json_t *body) {
    static const char *const keys[] = {"name", "info", "prompt", "public", "nsfw", "models",
                                       "tags"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        json_t *v = json_object_get(body, keys[i]);
        if (v && !json_is_null(v))
            json_object_set_new(st, keys[i], json_deep_copy(v));
    }
    json_t *params = json_object_get(body, "params");
    if (params) {
        json_t *p = json_deep_copy(params);
        json_object_del(p, "n"); /* the requester's n always wins */
        json_object_set_new(st, "params", p);
    }
}

/* Another style of this user with this name? (caller holds m->lock) */
static bool name_taken(br_mod *m, json_t *all, int64_t user_id, const char *name,
                       const char *except_id) {
    (void)m;
    const char *k;
    json_t *o;
    json_object_foreach(all, k, o) {
        if (owner_of(o) == user_id && !strcmp(json_string_value(json_object_get(o, "name")), name) &&
            (!except_id || strcmp(k, except_id) != 0))
            return true;
    }
    return false;
}

static bool page_args(broker *b, hn_request *req, int *page, const char **sort) {
    const char *s = b->api->req_query(req, "sort");
    *sort = s && *s ? s : "popular";
    if (strcmp(*sort, "popular") != 0 && strcmp(*sort, "age") != 0) {
        br_fail(b, req, 400, "BadRequest", "'sort' needs to be one of ['popular', 'age']");
        return false;
    }
    const char *p = b->api->req_query(req, "page");
    *page = 1;
    if (p && *p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (*end || v < 1 || v > 1000000) {
            br_fail(b, req, 400, "BadRequest", "'page' must be a number from 1.");
            return false;
        }
        *page = (int)v;
    }
    return true;
}

static int cmp_sort_popular(const void *a, const void *b) {
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    json_int_t ux = json_integer_value(json_object_get(x, "use_count"));
    json_int_t uy = json_integer_value(json_object_get(y, "use_count"));
    if (ux != uy)
        return ux > uy ? -1 : 1;
    json_int_t cx = json_integer_value(json_object_get(x, "_created"));
    json_int_t cy = json_integer_value(json_object_get(y, "_created"));
    return cx < cy ? -1 : cx > cy;
}

static int cmp_sort_age(const void *a, const void *b) {
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    json_int_t cx = json_integer_value(json_object_get(x, "_created"));
    json_int_t cy = json_integer_value(json_object_get(y, "_created"));
    return cx > cy ? -1 : cx < cy; /* newest first */
}

static bool list_has(const json_t *list, const char *s) {
    size_t i;
    json_t *x;
    json_array_foreach(list, i, x) {
        if (json_is_string(x) && strcmp(json_string_value(x), s) == 0)
            return true;
    }
    return false;
}

/* Public items of `all` matching tag/model, sorted, one page. */
static json_t *page_of(json_t *all, const char *sort, int page, const char *tag,
                       const char *model) {
    size_t n = json_object_size(all), k = 0;
    json_t **items = calloc(n ? n : 1, sizeof(*items));
    json_t *out = json_array();
    if (!items)
        return out;
    const char *key;
    json_t *o;
    json_object_foreach(all, key, o) {
        if (!json_is_true(json_object_get(o, "public")))
            continue;
        if (tag && *tag && !list_has(json_object_get(o, "tags"), tag))
            continue;
        if (model && *model && !list_has(json_object_get(o, "models"), model))
            continue;
        items[k++] = o;
    }
    qsort(items, k, sizeof(*items), strcmp(sort, "age") == 0 ? cmp_sort_age : cmp_sort_popular);
    for (size_t i = (size_t)(page - 1) * PAGE_SIZE; i < k && i < (size_t)page * PAGE_SIZE; i++)
        json_array_append_new(out, public_copy(items[i]));
    free(items);
    return out;
}

static void respond_modified(broker *b, hn_request *req, const char *id) {
    b->api->respond_json(req, 200, json_pack("{s:s, s:s, s:[]}", "id", id, "message", "OK",
                                             "warnings"));
}

/* ---- styles -------------------------------------------------------------------------------- */

void br_route_styles(hn_request *req, void *state) {
    broker *b = state;
    br_mod *m = b->mod;
    if (b->api->req_method(req) == HN_GET) {
        int page;
        const char *sort;
        if (!page_args(b, req, &page, &sort))
            return;
        pthread_mutex_lock(&m->lock);
        json_t *out = m->styles ? page_of(m->styles, sort, page, b->api->req_query(req, "tag"),
                                          b->api->req_query(req, "model"))
                                : json_array();
        pthread_mutex_unlock(&m->lock);
        b->api->respond_json(req, 200, out);
        return;
    }
    hn_user u;
    if (!require_user(b, req, &u))
        return;
    if (u.id == 0) {
        br_fail(b, req, 403, "StylesAnonForbidden", "Anonymous users cannot create styles");
        return;
    }
    if (!(u.roles & (HN_ROLE_TRUSTED | HN_ROLE_CUSTOMIZER | HN_ROLE_MODERATOR | HN_ROLE_ADMIN))) {
        br_fail(b, req, 403, "StylesRequiresCustomizer",
                "Only customizers and trusted users can create new styles. You can request the "
                "customizer role in our channels.");
        return;
    }
    json_t *body = br_mod_body(b, req);
    if (!body || !style_body_ok(b, req, body, true))
        return;
    char id[BR_ID_LEN];
    br_uuid4(id);
    json_t *st = json_pack("{s:s, s:s, s:s, s:o, s:b, s:b, s:[], s:[], s:s, s:i, s:[], s:I, s:I}",
                           "id", id, "name", br_jstr(body, "name"), "prompt", "{p}{np}",
                           "params", json_object(), "public", 1, "nsfw", 0, "tags", "models",
                           "creator", u.username, "use_count", 0, "examples", "_user_id",
                           (json_int_t)u.id, "_created", (json_int_t)br_now_ms());
    style_set_fields(st, body);
    hn_error err;
    pthread_mutex_lock(&m->lock);
    if (name_taken(m, m->styles, u.id, br_jstr(body, "name"), NULL)) {
        pthread_mutex_unlock(&m->lock);
        json_decref(st);
        br_fail(b, req, 400, "BadRequest",
                "Style with name '%.100s' already exists for user '%s'. Please use PATCH to "
                "modify an existing style.",
                br_jstr(body, "name"), u.username);
        return;
    }
    hn_rc rc = save_row(b, "mod_styles", id, u.id, st, &err);
    if (rc == HN_OK)
        json_object_set(m->styles, id, st);
    pthread_mutex_unlock(&m->lock);
    json_decref(st);
    if (rc != HN_OK) {
        b->api->respond_error(req, &err);
        return;
    }
    respond_modified(b, req, id);
}

/* The style of {style_id}: a deep copy, or NULL when answered 404. */
static json_t *style_copy(broker *b, hn_request *req, char id[BR_ID_LEN]) {
    br_mod *m = b->mod;
    const char *raw = b->api->req_param(req, "style_id");
    json_t *copy = NULL;
    if (br_uuid_parse(raw, id)) {
        pthread_mutex_lock(&m->lock);
        json_t *st = m->styles ? json_object_get(m->styles, id) : NULL;
        copy = st ? json_deep_copy(st) : NULL;
        pthread_mutex_unlock(&m->lock);
    }
    if (!copy)
        br_fail(b, req, 404, "StyleNotFound", "Style with ID '%.100s' not found.", raw);
    return copy;
}

/* Replaces a style in memory and storage; answers err on failure. */
static bool style_store(broker *b, hn_request *req, const char *id, json_t *st) {
    br_mod *m = b->mod;
    hn_error err;
    pthread_mutex_lock(&m->lock);
    hn_rc rc = save_row(b, "mod_styles", id, owner_of(st), st, &err);
    if (rc == HN_OK)
        json_object_set(m->styles, id, st);
    pthread_mutex_unlock(&m->lock);
    if (rc != HN_OK)
        b->api->respond_error(req, &err);
    return rc == HN_OK;
}

void br_route_style_single(hn_request *req, void *state) {
    broker *b = state;
    br_mod *m = b->mod;
    unsigned method = b->api->req_method(req);
    hn_user u;
    if (method != HN_GET && !require_user(b, req, &u))
        return;
    if (method == HN_DELETE && u.id == 0) {
        br_fail(b, req, 403, "StylesAnonForbidden", "Anonymous users cannot delete styles");
        return;
    }
    char id[BR_ID_LEN];
    json_t *st = style_copy(b, req, id);
    if (!st)
        return;
    if (method == HN_GET) {
        b->api->respond_json(req, 200, public_copy(st));
        json_decref(st);
        return;
    }
    bool owner = owner_of(st) == u.id;
    /* PATCH: the owner only (as the horde); DELETE: the owner or a moderator */
    if (!owner && (method == HN_PATCH || !br_mod_is_moderator(&u))) {
        json_decref(st);
        br_fail(b, req, 403, "Forbidden", "This Style is not owned by user %s", u.username);
        return;
    }
    if (method == HN_DELETE) {
        json_decref(st);
        hn_error err;
        pthread_mutex_lock(&m->lock);
        hn_rc rc = save_row(b, "mod_styles", id, 0, NULL, &err);
        if (rc == HN_OK)
            json_object_del(m->styles, id);
        pthread_mutex_unlock(&m->lock);
        if (rc != HN_OK) {
            b->api->respond_error(req, &err);
            return;
        }
        b->api->respond_json(req, 200, json_pack("{s:s}", "message", "OK"));
        return;
    }
    json_t *body = br_mod_body(b, req);
    if (!body || !style_body_ok(b, req, body, false)) {
        json_decref(st);
        return;
    }
    const char *name = br_jstr(body, "name");
    if (name) {
        pthread_mutex_lock(&m->lock);
        bool taken = name_taken(m, m->styles, u.id, name, id);
        pthread_mutex_unlock(&m->lock);
        if (taken) {
            json_decref(st);
            br_fail(b, req, 400, "BadRequest",
                    "Style with name '%.100s' already exists for user '%s'. Please use a "
                    "different name if you want to rename.",
                    name, u.username);
            return;
        }
    }
    style_set_fields(st, body);
    if (style_store(b, req, id, st))
        respond_modified(b, req, id);
    json_decref(st);
}

void br_route_style_by_name(hn_request *req, void *state) {
    broker *b = state;
    br_mod *m = b->mod;
    const char *name = b->api->req_param(req, "style_name");
    pthread_mutex_lock(&m->lock);
    json_t *st = m->styles ? find_in(m->styles, name, "style") : NULL;
    json_t *out = st ? public_copy(st) : NULL;
    pthread_mutex_unlock(&m->lock);
    if (!out) {
        br_fail(b, req, 404, "StyleNotFound", "Style with ID '%.100s' not found.", name);
        return;
    }
    b->api->respond_json(req, 200, out);
}

/* ---- examples ------------------------------------------------------------------------------ */

/* Owner or moderator of {style_id}: the style copy, else answered. */
static json_t *style_for_edit(broker *b, hn_request *req, hn_user *u, char id[BR_ID_LEN]) {
    if (!require_user(b, req, u))
        return NULL;
    json_t *st = style_copy(b, req, id);
    if (st && owner_of(st) != u->id && !br_mod_is_moderator(u)) {
        json_decref(st);
        br_fail(b, req, 403, "Forbidden", "This Style is not owned by user %s", u->username);
        return NULL;
    }
    return st;
}

static bool url_ok(broker *b, hn_request *req, const char *url) {
    if (!url || strlen(url) < 10 || strlen(url) > 1024) {
        br_respond_schema_errors(b, req,
                                 json_pack("{s:s}", "url", "url must be 10 to 1024 characters"));
        return false;
    }
    if (strncmp(url, "https://", 8) != 0) {
        br_fail(b, req, 400, "BadRequest", "The url has to start with 'https://'");
        return false;
    }
    return true;
}

static void set_primary(json_t *examples, const char *example_id) {
    size_t i;
    json_t *x;
    json_array_foreach(examples, i, x) {
        json_object_set_new(x, "primary",
                            json_boolean(!strcmp(br_jstr(x, "id") ? br_jstr(x, "id") : "",
                                                 example_id)));
    }
}

void br_route_style_example(hn_request *req, void *state) {
    broker *b = state;
    hn_user u;
    char id[BR_ID_LEN];
    json_t *st = style_for_edit(b, req, &u, id);
    if (!st)
        return;
    json_t *body = br_mod_body(b, req);
    const char *url = body ? br_jstr(body, "url") : NULL;
    if (!body || !url_ok(b, req, url)) {
        json_decref(st);
        return;
    }
    json_t *examples = json_object_get(st, "examples");
    if (!json_is_array(examples)) {
        examples = json_array();
        json_object_set_new(st, "examples", examples);
    }
    if (json_array_size(examples) >= MAX_EXAMPLES) {
        json_decref(st);
        br_fail(b, req, 403, "TooManyStyleExamples",
                "You cannot have more than 4 examples for each style");
        return;
    }
    size_t i;
    json_t *x;
    json_array_foreach(examples, i, x) {
        if (!strcmp(br_jstr(x, "url") ? br_jstr(x, "url") : "", url)) {
            json_decref(st);
            br_fail(b, req, 400, "ExampleURLAlreadyInUse",
                    "The url '%.200s'is already used for this style.", url);
            return;
        }
    }
    char eid[BR_ID_LEN];
    br_uuid4(eid);
    /* the first example is the primary one until another asks to be */
    bool primary = br_jbool(body, "primary", false) || json_array_size(examples) == 0;
    json_array_append_new(examples, json_pack("{s:s, s:s, s:b}", "id", eid, "url", url,
                                              "primary", primary));
    if (primary)
        set_primary(examples, eid);
    if (style_store(b, req, id, st))
        respond_modified(b, req, eid);
    json_decref(st);
}

void br_route_style_example_single(hn_request *req, void *state) {
    broker *b = state;
    hn_user u;
    char id[BR_ID_LEN];
    json_t *st = style_for_edit(b, req, &u, id);
    if (!st)
        return;
    const char *raw = b->api->req_param(req, "example_id");
    json_t *examples = json_object_get(st, "examples");
    size_t at = (size_t)-1, i;
    json_t *x;
    json_array_foreach(examples, i, x) {
        if (raw && !strcmp(br_jstr(x, "id") ? br_jstr(x, "id") : "", raw))
            at = i;
    }
    if (at == (size_t)-1) {
        json_decref(st);
        br_fail(b, req, 404, "StyleExampleNotFound", "Style Example with ID '%.100s' not found.",
                raw);
        return;
    }
    if (b->api->req_method(req) == HN_DELETE) {
        bool was_primary = json_is_true(json_object_get(json_array_get(examples, at), "primary"));
        json_array_remove(examples, at);
        if (was_primary && json_array_size(examples) > 0)
            set_primary(examples, br_jstr(json_array_get(examples, 0), "id"));
        if (style_store(b, req, id, st))
            b->api->respond_json(req, 200, json_pack("{s:s}", "message", "OK"));
        json_decref(st);
        return;
    }
    json_t *body = br_mod_body(b, req);
    if (!body) {
        json_decref(st);
        return;
    }
    json_t *ex = json_array_get(examples, at);
    const char *url = br_jstr(body, "url");
    if (url) {
        if (!url_ok(b, req, url)) {
            json_decref(st);
            return;
        }
        json_array_foreach(examples, i, x) {
            if (i != at && !strcmp(br_jstr(x, "url") ? br_jstr(x, "url") : "", url)) {
                json_decref(st);
                br_fail(b, req, 400, "ExampleURLAlreadyInUse",
                        "The url '%.200s'is already used for this style.", url);
                return;
            }
        }
        json_object_set_new(ex, "url", json_string(url));
    }
    if (br_jbool(body, "primary", false))
        set_primary(examples, raw);
    if (style_store(b, req, id, st))
        respond_modified(b, req, raw);
    json_decref(st);
}

/* ---- collections -------------------------------------------------------------------------- */

/* Resolves a list of style ids/names into [{name, id}]; NULL when answered. */
static json_t *resolve_styles(broker *b, hn_request *req, const json_t *list) {
    br_mod *m = b->mod;
    if (!json_is_array(list) || json_array_size(list) < 1) {
        br_fail(b, req, 400, "BadRequest", "A collection has to include at least 1 style");
        return NULL;
    }
    json_t *out = json_array();
    size_t i;
    json_t *x;
    pthread_mutex_lock(&m->lock);
    json_array_foreach(list, i, x) {
        const char *key = json_string_value(x);
        json_t *st = key ? find_in(m->styles, key, "style") : NULL;
        if (!st) {
            pthread_mutex_unlock(&m->lock);
            json_decref(out);
            br_fail(b, req, 400, "BadRequest", "A style with name '%.100s' cannot be found",
                    key ? key : "?");
            return NULL;
        }
        json_array_append_new(out, json_pack("{s:O, s:O}", "name", json_object_get(st, "name"),
                                             "id", json_object_get(st, "id")));
    }
    pthread_mutex_unlock(&m->lock);
    return out;
}

void br_route_collections(hn_request *req, void *state) {
    broker *b = state;
    br_mod *m = b->mod;
    if (b->api->req_method(req) == HN_GET) {
        int page;
        const char *sort;
        if (!page_args(b, req, &page, &sort))
            return;
        const char *type = b->api->req_query(req, "type");
        if (type && *type && strcmp(type, "all") && strcmp(type, "image") && strcmp(type, "text")) {
            br_fail(b, req, 400, "BadRequest", "'type' needs to be one of ['all', 'image', 'text']");
            return;
        }
        pthread_mutex_lock(&m->lock);
        json_t *out = (type && !strcmp(type, "text")) || !m->collections
                          ? json_array()
                          : page_of(m->collections, sort, page, NULL, NULL);
        pthread_mutex_unlock(&m->lock);
        b->api->respond_json(req, 200, out);
        return;
    }
    hn_user u;
    if (!require_user(b, req, &u))
        return;
    if (u.id == 0) {
        br_fail(b, req, 403, "StylesAnonForbidden", "Anonymous users cannot create collections");
        return;
    }
    json_t *body = br_mod_body(b, req);
    if (!body || !text_ok(b, req, body, "name", 1, 100, true) ||
        !text_ok(b, req, body, "info", 1, 1000, false) || !bool_ok(b, req, body, "public"))
        return;
    json_t *styles = resolve_styles(b, req, json_object_get(body, "styles"));
    if (!styles)
        return;
    char id[BR_ID_LEN];
    br_uuid4(id);
    json_t *co = json_pack("{s:s, s:s, s:s, s:s, s:b, s:o, s:i, s:s, s:I, s:I}", "id", id,
                           "name", br_jstr(body, "name"), "type", "image", "info",
                           br_jstr(body, "info") ? br_jstr(body, "info") : "", "public",
                           br_jbool(body, "public", true), "styles", styles, "use_count", 0,
                           "creator", u.username, "_user_id", (json_int_t)u.id, "_created",
                           (json_int_t)br_now_ms());
    hn_error err;
    pthread_mutex_lock(&m->lock);
    hn_rc rc = save_row(b, "mod_collections", id, u.id, co, &err);
    if (rc == HN_OK)
        json_object_set(m->collections, id, co);
    pthread_mutex_unlock(&m->lock);
    json_decref(co);
    if (rc != HN_OK) {
        b->api->respond_error(req, &err);
        return;
    }
    respond_modified(b, req, id);
}

void br_route_collection_single(hn_request *req, void *state) {
    broker *b = state;
    br_mod *m = b->mod;
    unsigned method = b->api->req_method(req);
    hn_user u;
    if (method != HN_GET && !require_user(b, req, &u))
        return;
    const char *raw = b->api->req_param(req, "collection_id");
    char id[BR_ID_LEN];
    json_t *co = NULL;
    if (br_uuid_parse(raw, id)) {
        pthread_mutex_lock(&m->lock);
        json_t *c = m->collections ? json_object_get(m->collections, id) : NULL;
        co = c ? json_deep_copy(c) : NULL;
        pthread_mutex_unlock(&m->lock);
    }
    if (!co) {
        br_fail(b, req, 404, "CollectionNotFound", "Collection with ID '%.100s' not found.", raw);
        return;
    }
    if (method == HN_GET) {
        b->api->respond_json(req, 200, public_copy(co));
        json_decref(co);
        return;
    }
    if (owner_of(co) != u.id && !br_mod_is_moderator(&u)) {
        json_decref(co);
        br_fail(b, req, 403, "Forbidden", "This Collection is not owned by user %s", u.username);
        return;
    }
    hn_error err;
    if (method == HN_DELETE) {
        json_decref(co);
        pthread_mutex_lock(&m->lock);
        hn_rc rc = save_row(b, "mod_collections", id, 0, NULL, &err);
        if (rc == HN_OK)
            json_object_del(m->collections, id);
        pthread_mutex_unlock(&m->lock);
        if (rc != HN_OK) {
            b->api->respond_error(req, &err);
            return;
        }
        b->api->respond_json(req, 200, json_pack("{s:s}", "message", "OK"));
        return;
    }
    json_t *body = br_mod_body(b, req);
    if (!body || !text_ok(b, req, body, "name", 1, 100, false) ||
        !text_ok(b, req, body, "info", 1, 1000, false) || !bool_ok(b, req, body, "public")) {
        json_decref(co);
        return;
    }
    if (json_object_get(body, "styles")) {
        json_t *styles = resolve_styles(b, req, json_object_get(body, "styles"));
        if (!styles) {
            json_decref(co);
            return;
        }
        json_object_set_new(co, "styles", styles);
    }
    if (br_jstr(body, "name"))
        json_object_set_new(co, "name", json_string(br_jstr(body, "name")));
    if (br_jstr(body, "info"))
        json_object_set_new(co, "info", json_string(br_jstr(body, "info")));
    if (json_is_boolean(json_object_get(body, "public")))
        json_object_set(co, "public", json_object_get(body, "public"));
    pthread_mutex_lock(&m->lock);
    hn_rc rc = save_row(b, "mod_collections", id, owner_of(co), co, &err);
    if (rc == HN_OK)
        json_object_set(m->collections, id, co);
    pthread_mutex_unlock(&m->lock);
    json_decref(co);
    if (rc != HN_OK) {
        b->api->respond_error(req, &err);
        return;
    }
    respond_modified(b, req, id);
}

void br_route_collection_by_name(hn_request *req, void *state) {
    broker *b = state;
    br_mod *m = b->mod;
    const char *name = b->api->req_param(req, "collection_name");
    pthread_mutex_lock(&m->lock);
    json_t *co = m->collections ? find_in(m->collections, name, "collection") : NULL;
    json_t *out = co ? public_copy(co) : NULL;
    pthread_mutex_unlock(&m->lock);
    if (!out) {
        br_fail(b, req, 404, "CollectionNotFound", "Collection with ID '%.100s' not found.", name);
        return;
    }
    b->api->respond_json(req, 200, out);
}

/* ---- on generate --------------------------------------------------------------------------- */

/* "{p}" and "{np}" filled: np goes after "###" (added when the template has
 * none). Returns malloc'd text. */
static char *fill_template(const char *tpl, const char *prompt) {
    const char *sep = strstr(prompt, "###");
    size_t plen = sep ? (size_t)(sep - prompt) : strlen(prompt);
    const char *neg = sep ? sep + 3 : "";
    bool tpl_has_neg = strstr(tpl, "###") != NULL;
    size_t vars = 0;
    for (const char *t = strchr(tpl, '{'); t; t = strchr(t + 1, '{'))
        vars++;
    size_t cap = strlen(tpl) + vars * (strlen(prompt) + 8) + 16;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    size_t o = 0;
    for (const char *t = tpl; *t;) {
        if (!strncmp(t, "{p}", 3)) {
            memcpy(out + o, prompt, plen);
            o += plen;
            t += 3;
        } else if (!strncmp(t, "{np}", 4)) {
            if (*neg) {
                /* after the template's own "###": joined with ", " unless
                 * "{np}" comes right after it */
                const char *lead = !tpl_has_neg ? "###" : (t - tpl >= 3 && !strncmp(t - 3, "###", 3))
                                                              ? "" : ", ";
                o += (size_t)snprintf(out + o, cap - o, "%s%s", lead, neg);
            }
            t += 4;
        } else {
            out[o++] = *t++;
        }
    }
    out[o] = '\0';
    return out;
}

int br_styles_apply(broker *b, json_t *body, int64_t *owner_id, hn_error *err) {
    br_mod *m = b->mod;
    *owner_id = -1;
    const char *key = br_jstr(body, "style");
    if (!key)
        return 0;
    pthread_mutex_lock(&m->lock);
    json_t *st = m->styles ? find_in(m->styles, key, "style") : NULL;
    if (!st && m->collections) {
        /* a collection: one of its styles, at random */
        json_t *co = find_in(m->collections, key, "collection");
        json_t *list = json_object_get(co, "styles");
        size_t n = json_array_size(list);
        if (n > 0) {
            const char *sid = br_jstr(json_array_get(list, br_random_u32() % n), "id");
            st = sid ? json_object_get(m->styles, sid) : NULL;
        }
    }
    json_t *style = st ? json_deep_copy(st) : NULL;
    if (st) /* counted in memory; written with the style's next change */
        json_object_set_new(st, "use_count",
                            json_integer(json_integer_value(json_object_get(st, "use_count")) + 1));
    pthread_mutex_unlock(&m->lock);
    if (!style) {
        b->api->error(err, 404, "StyleNotFound", "Style with ID '%.100s' not found.", key);
        return -1;
    }
    char *prompt = fill_template(br_jstr(style, "prompt") ? br_jstr(style, "prompt") : "{p}{np}",
                                 br_jstr(body, "prompt") ? br_jstr(body, "prompt") : "");
    if (prompt) {
        json_object_set_new(body, "prompt", json_string(prompt));
        free(prompt);
    }
    /* params: the style's, keeping the requester's n, and width/height when
     * the style has none */
    json_t *user_params = json_object_get(body, "params");
    json_t *params = json_deep_copy(json_object_get(style, "params"));
    if (!json_is_object(params)) {
        json_decref(params);
        params = json_object();
    }
    static const char *const kept[] = {"n", "width", "height"};
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++) {
        json_t *v = json_object_get(user_params, kept[i]);
        if (v && (i == 0 || !json_object_get(params, kept[i])))
            json_object_set(params, kept[i], v);
    }
    json_object_set_new(body, "params", params);
    json_t *models = json_object_get(style, "models");
    if (json_array_size(models) > 0)
        json_object_set(body, "models", models);
    *owner_id = owner_of(style);
    json_decref(style);
    return 0;
}

