/* broker: style collections (spec/horde-api.md §1.7):
 *   GET POST           /api/v2/collections
 *   GET PATCH DELETE   /api/v2/collections/{collection_id}
 *   GET                /api/v2/collection_by_name/{collection_name}
 *
 * A collection is a named list of styles, shown as [{name, id}]; using one as
 * `style` on generate picks one of its styles at random (styles.c). Only image
 * collections exist here (type "text" lists none). Storage, lookup and paging
 * are shared with the styles (style_catalog.c). */
#include <string.h>

#include "broker.h"
#include "moderation.h"
#include "style_catalog.h"

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
        json_t *st = key ? br_catalog_find_locked(m->styles, key, "style") : NULL;
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

/* Checks the name, info and public of a collection body (POST: creating, a
 * name is required; else PATCH). */
static bool collection_body_ok(broker *b, hn_request *req, const json_t *body, bool creating) {
    return br_mod_text_ok(b, req, body, "name", 1, 100, creating) &&
           br_mod_text_ok(b, req, body, "info", 1, 1000, false) &&
           br_mod_bool_ok(b, req, body, "public");
}

/* Copies the name, info and public of a checked body into co (absent or
 * null: unchanged). */
static void collection_set_fields(json_t *co, const json_t *body) {
    if (br_jstr(body, "name"))
        json_object_set_new(co, "name", json_string(br_jstr(body, "name")));
    if (br_jstr(body, "info"))
        json_object_set_new(co, "info", json_string(br_jstr(body, "info")));
    if (json_is_boolean(json_object_get(body, "public")))
        json_object_set(co, "public", json_object_get(body, "public"));
}

static void collection_create(broker *b, hn_request *req) {
    hn_user u;
    if (!br_catalog_user(b, req, &u))
        return;
    if (u.id == 0) {
        br_fail(b, req, 403, "StylesAnonForbidden", "Anonymous users cannot create collections");
        return;
    }
    json_t *body = br_mod_body(b, req);
    if (!body || !collection_body_ok(b, req, body, true))
        return;
    json_t *styles = resolve_styles(b, req, json_object_get(body, "styles"));
    if (!styles)
        return;
    char id[BR_ID_LEN];
    br_uuid4(id);
    /* the defaults (info "", public), then what the body sets */
    json_t *co = json_pack("{s:s, s:s, s:s, s:s, s:b, s:o, s:i, s:s, s:I, s:I}", "id", id,
                           "name", "", "type", "image", "info", "", "public", 1, "styles",
                           styles, "use_count", 0, "creator", u.username, "_user_id",
                           (json_int_t)u.id, "_created", (json_int_t)br_now_ms());
    collection_set_fields(co, body);
    if (br_catalog_put(b, req, BR_CATALOG_COLLECTIONS, id, co))
        br_catalog_respond_modified(b, req, id);
    json_decref(co);
}

void br_route_collections(hn_request *req, void *state) {
    broker *b = state;
    if (b->api->req_method(req) != HN_GET) {
        collection_create(b, req);
        return;
    }
    int page;
    const char *sort;
    if (!br_catalog_page_args(b, req, &page, &sort))
        return;
    const char *type = b->api->req_query(req, "type");
    if (type && *type && strcmp(type, "all") && strcmp(type, "image") && strcmp(type, "text")) {
        br_fail(b, req, 400, "BadRequest", "'type' needs to be one of ['all', 'image', 'text']");
        return;
    }
    if (type && !strcmp(type, "text"))
        b->api->respond_json(req, 200, json_array());
    else
        br_catalog_respond_page(b, req, BR_CATALOG_COLLECTIONS, sort, page, NULL, NULL);
}

/* PATCH /collections/{collection_id} of co (owned by the caller). */
static void collection_patch(broker *b, hn_request *req, const char *id, json_t *co) {
    json_t *body = br_mod_body(b, req);
    if (!body || !collection_body_ok(b, req, body, false))
        return;
    if (json_object_get(body, "styles")) {
        json_t *styles = resolve_styles(b, req, json_object_get(body, "styles"));
        if (!styles)
            return;
        json_object_set_new(co, "styles", styles);
    }
    collection_set_fields(co, body);
    if (br_catalog_put(b, req, BR_CATALOG_COLLECTIONS, id, co))
        br_catalog_respond_modified(b, req, id);
}

void br_route_collection_single(hn_request *req, void *state) {
    broker *b = state;
    unsigned method = b->api->req_method(req);
    hn_user u;
    if (method != HN_GET && !br_catalog_user(b, req, &u))
        return;
    char id[BR_ID_LEN];
    json_t *co = br_catalog_copy(b, req, BR_CATALOG_COLLECTIONS, "collection_id", id);
    if (!co)
        return;
    if (method == HN_GET) {
        b->api->respond_json(req, 200, br_catalog_public(co));
    } else if (br_catalog_may_edit(b, req, BR_CATALOG_COLLECTIONS, &u, co, true)) {
        if (method == HN_DELETE)
            br_catalog_delete(b, req, BR_CATALOG_COLLECTIONS, id);
        else
            collection_patch(b, req, id, co);
    }
    json_decref(co);
}

void br_route_collection_by_name(hn_request *req, void *state) {
    br_catalog_respond_by_name(state, req, BR_CATALOG_COLLECTIONS, "collection_name");
}
