/* broker: image styles (spec/horde-api.md §1.7):
 *   GET POST           /api/v2/styles/image
 *   GET PATCH DELETE   /api/v2/styles/image/{style_id}
 *   GET                /api/v2/styles/image_by_name/{style_name}
 *   POST               /api/v2/styles/image/{style_id}/example
 *   PATCH DELETE       /api/v2/styles/image/{style_id}/example/{example_id}
 * and `style` on POST /generate/async (br_styles_apply). Collections are in
 * collections.c; what both share (storage, lookup, paging) in style_catalog.c.
 *
 * A style is a prompt template with {p} and {np}, params and 1 to 5 models.
 * Creating one needs a trusted or customizer user (moderators too); its
 * params are checked with the generation schema itself (validate.c), so a
 * style can never carry what a request could not. Names are unique per user;
 * by name a style is "name" or "alias#id::style::name". Using a collection as
 * `style` picks one of its styles at random (as the horde does).
 *
 * Using someone else's style pays its owner 2 kudos and costs the requester
 * 2 more (hook kudos_grant, implemented by the kudos plugin; without it
 * nothing moves). Shared keys bound to styles are not supported (a
 * `sharedkey` field is refused). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "moderation.h"
#include "style_catalog.h"

#define MAX_MODELS 5
#define MAX_TAGS 10
#define MAX_EXAMPLES 4

/* ---- checks -------------------------------------------------------------------------------- */

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
    if (!br_mod_text_ok(b, req, body, "name", 1, 100, creating) ||
        !br_mod_text_ok(b, req, body, "info", 1, 1000, false) ||
        !br_mod_text_ok(b, req, body, "prompt", 7, 10000, false) ||
        !br_mod_bool_ok(b, req, body, "public") || !br_mod_bool_ok(b, req, body, "nsfw"))
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
static bool name_taken(json_t *all, int64_t user_id, const char *name, const char *except_id) {
    const char *k;
    json_t *o;
    json_object_foreach(all, k, o) {
        if (br_catalog_owner(o) == user_id &&
            !strcmp(json_string_value(json_object_get(o, "name")), name) &&
            (!except_id || strcmp(k, except_id) != 0))
            return true;
    }
    return false;
}

/* ---- styles -------------------------------------------------------------------------------- */

static void style_create(broker *b, hn_request *req) {
    br_mod *m = b->mod;
    hn_user u;
    if (!br_catalog_user(b, req, &u))
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
    /* the name check and the write under one lock: two POSTs cannot both take a name */
    pthread_mutex_lock(&m->lock);
    if (name_taken(m->styles, u.id, br_jstr(body, "name"), NULL)) {
        pthread_mutex_unlock(&m->lock);
        json_decref(st);
        br_fail(b, req, 400, "BadRequest",
                "Style with name '%.100s' already exists for user '%s'. Please use PATCH to "
                "modify an existing style.",
                br_jstr(body, "name"), u.username);
        return;
    }
    hn_rc rc = br_catalog_put_locked(b, BR_CATALOG_STYLES, id, st, &err);
    pthread_mutex_unlock(&m->lock);
    json_decref(st);
    if (rc != HN_OK) {
        b->api->respond_error(req, &err);
        return;
    }
    br_catalog_respond_modified(b, req, id);
}

void br_route_styles(hn_request *req, void *state) {
    broker *b = state;
    if (b->api->req_method(req) != HN_GET) {
        style_create(b, req);
        return;
    }
    int page;
    const char *sort;
    if (br_catalog_page_args(b, req, &page, &sort))
        br_catalog_respond_page(b, req, BR_CATALOG_STYLES, sort, page,
                                b->api->req_query(req, "tag"), b->api->req_query(req, "model"));
}

/* PATCH /styles/image/{style_id} of the style st (owned by the caller). */
static void style_patch(broker *b, hn_request *req, const hn_user *u, const char *id,
                        json_t *st) {
    br_mod *m = b->mod;
    json_t *body = br_mod_body(b, req);
    if (!body || !style_body_ok(b, req, body, false))
        return;
    const char *name = br_jstr(body, "name");
    if (name) {
        pthread_mutex_lock(&m->lock);
        bool taken = name_taken(m->styles, u->id, name, id);
        pthread_mutex_unlock(&m->lock);
        if (taken) {
            br_fail(b, req, 400, "BadRequest",
                    "Style with name '%.100s' already exists for user '%s'. Please use a "
                    "different name if you want to rename.",
                    name, u->username);
            return;
        }
    }
    style_set_fields(st, body);
    if (br_catalog_put(b, req, BR_CATALOG_STYLES, id, st))
        br_catalog_respond_modified(b, req, id);
}

void br_route_style_single(hn_request *req, void *state) {
    broker *b = state;
    unsigned method = b->api->req_method(req);
    hn_user u;
    if (method != HN_GET && !br_catalog_user(b, req, &u))
        return;
    if (method == HN_DELETE && u.id == 0) {
        br_fail(b, req, 403, "StylesAnonForbidden", "Anonymous users cannot delete styles");
        return;
    }
    char id[BR_ID_LEN];
    json_t *st = br_catalog_copy(b, req, BR_CATALOG_STYLES, "style_id", id);
    if (!st)
        return;
    if (method == HN_GET) {
        b->api->respond_json(req, 200, br_catalog_public(st));
    } else if (br_catalog_may_edit(b, req, BR_CATALOG_STYLES, &u, st, method == HN_DELETE)) {
        /* PATCH: the owner only (as the horde); DELETE: the owner or a moderator */
        if (method == HN_DELETE)
            br_catalog_delete(b, req, BR_CATALOG_STYLES, id);
        else
            style_patch(b, req, &u, id, st);
    }
    json_decref(st);
}

void br_route_style_by_name(hn_request *req, void *state) {
    br_catalog_respond_by_name(state, req, BR_CATALOG_STYLES, "style_name");
}

/* ---- examples ------------------------------------------------------------------------------ */

/* Owner or moderator of {style_id}: the style copy, else answered. */
static json_t *style_for_edit(broker *b, hn_request *req, hn_user *u, char id[BR_ID_LEN]) {
    if (!br_catalog_user(b, req, u))
        return NULL;
    json_t *st = br_catalog_copy(b, req, BR_CATALOG_STYLES, "style_id", id);
    if (st && !br_catalog_may_edit(b, req, BR_CATALOG_STYLES, u, st, true)) {
        json_decref(st);
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

/* Does an example other than the one at index except use url? Answered 400
 * ExampleURLAlreadyInUse when one does. */
static bool url_taken(broker *b, hn_request *req, const json_t *examples, const char *url,
                      size_t except) {
    size_t i;
    json_t *x;
    json_array_foreach(examples, i, x) {
        if (i != except && !strcmp(br_jstr(x, "url") ? br_jstr(x, "url") : "", url)) {
            br_fail(b, req, 400, "ExampleURLAlreadyInUse",
                    "The url '%.200s'is already used for this style.", url);
            return true;
        }
    }
    return false;
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
    if (url_taken(b, req, examples, url, (size_t)-1)) {
        json_decref(st);
        return;
    }
    char eid[BR_ID_LEN];
    br_uuid4(eid);
    /* the first example is the primary one until another asks to be */
    bool primary = br_jbool(body, "primary", false) || json_array_size(examples) == 0;
    json_array_append_new(examples, json_pack("{s:s, s:s, s:b}", "id", eid, "url", url,
                                              "primary", primary));
    if (primary)
        set_primary(examples, eid);
    if (br_catalog_put(b, req, BR_CATALOG_STYLES, id, st))
        br_catalog_respond_modified(b, req, eid);
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
        if (br_catalog_put(b, req, BR_CATALOG_STYLES, id, st))
            br_mod_respond_ok(b, req);
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
        if (url_taken(b, req, examples, url, at)) {
            json_decref(st);
            return;
        }
        json_object_set_new(ex, "url", json_string(url));
    }
    if (br_jbool(body, "primary", false))
        set_primary(examples, raw);
    if (br_catalog_put(b, req, BR_CATALOG_STYLES, id, st))
        br_catalog_respond_modified(b, req, raw);
    json_decref(st);
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
    json_t *st = m->styles ? br_catalog_find_locked(m->styles, key, "style") : NULL;
    if (!st && m->collections) {
        /* a collection: one of its styles, at random */
        json_t *co = br_catalog_find_locked(m->collections, key, "collection");
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
    *owner_id = br_catalog_owner(style);
    json_decref(style);
    return 0;
}


