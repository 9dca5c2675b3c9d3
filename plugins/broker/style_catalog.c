/* broker: what styles and style collections share (style_catalog.h): their
 * storage and loading, lookup by id or name, paging, and the request checks
 * and answers both sets of routes use. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accounts.h"
#include "broker.h"
#include "moderation.h"
#include "style_catalog.h"

#define PAGE_SIZE 25

/* What differs between the two catalogs, as the horde words it. */
static const struct {
    const char *table;
    const char *noun;         /* in messages: "Style with ID ..." */
    const char *not_found_rc;
} catalogs[] = {
    [BR_CATALOG_STYLES] = {"mod_styles", "Style", "StyleNotFound"},
    [BR_CATALOG_COLLECTIONS] = {"mod_collections", "Collection", "CollectionNotFound"},
};

json_t *br_catalog_items_locked(br_mod *m, br_catalog c) {
    return c == BR_CATALOG_STYLES ? m->styles : m->collections;
}

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

hn_rc br_catalog_put_locked(broker *b, br_catalog c, const char *id, json_t *o, hn_error *err) {
    hn_rc rc = save_row(b, catalogs[c].table, id, br_catalog_owner(o), o, err);
    if (rc == HN_OK)
        json_object_set(br_catalog_items_locked(b->mod, c), id, o);
    return rc;
}

bool br_catalog_put(broker *b, hn_request *req, br_catalog c, const char *id, json_t *o) {
    br_mod *m = b->mod;
    hn_error err;
    /* the write-through happens under the lock so two changes land in order */
    pthread_mutex_lock(&m->lock);
    hn_rc rc = br_catalog_put_locked(b, c, id, o, &err);
    pthread_mutex_unlock(&m->lock);
    if (rc != HN_OK)
        b->api->respond_error(req, &err);
    return rc == HN_OK;
}

void br_catalog_delete(broker *b, hn_request *req, br_catalog c, const char *id) {
    br_mod *m = b->mod;
    hn_error err;
    pthread_mutex_lock(&m->lock);
    hn_rc rc = save_row(b, catalogs[c].table, id, 0, NULL, &err);
    if (rc == HN_OK)
        json_object_del(br_catalog_items_locked(m, c), id);
    pthread_mutex_unlock(&m->lock);
    if (rc != HN_OK) {
        b->api->respond_error(req, &err);
        return;
    }
    br_mod_respond_ok(b, req);
}

/* ---- objects and lookup ------------------------------------------------------------------- */

json_t *br_catalog_public(const json_t *o) {
    json_t *out = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v) {
        if (k[0] != '_')
            json_object_set(out, k, v);
    }
    return out;
}

int64_t br_catalog_owner(const json_t *o) {
    return (int64_t)json_integer_value(json_object_get(o, "_user_id"));
}

json_t *br_catalog_find_locked(json_t *all, const char *key, const char *kind) {
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

json_t *br_catalog_copy(broker *b, hn_request *req, br_catalog c, const char *param,
                        char id[BR_ID_LEN]) {
    br_mod *m = b->mod;
    const char *raw = b->api->req_param(req, param);
    json_t *copy = NULL;
    if (br_uuid_parse(raw, id)) {
        pthread_mutex_lock(&m->lock);
        json_t *all = br_catalog_items_locked(m, c);
        json_t *o = all ? json_object_get(all, id) : NULL;
        copy = o ? json_deep_copy(o) : NULL;
        pthread_mutex_unlock(&m->lock);
    }
    if (!copy)
        br_fail(b, req, 404, catalogs[c].not_found_rc, "%s with ID '%.100s' not found.",
                catalogs[c].noun, raw);
    return copy;
}

void br_catalog_respond_by_name(broker *b, hn_request *req, br_catalog c, const char *param) {
    br_mod *m = b->mod;
    const char *name = b->api->req_param(req, param);
    const char *kind = c == BR_CATALOG_STYLES ? "style" : "collection";
    pthread_mutex_lock(&m->lock);
    json_t *all = br_catalog_items_locked(m, c);
    json_t *o = all ? br_catalog_find_locked(all, name, kind) : NULL;
    json_t *out = o ? br_catalog_public(o) : NULL;
    pthread_mutex_unlock(&m->lock);
    if (!out) {
        /* the horde says "ID" here too */
        br_fail(b, req, 404, catalogs[c].not_found_rc, "%s with ID '%.100s' not found.",
                catalogs[c].noun, name);
        return;
    }
    b->api->respond_json(req, 200, out);
}

/* ---- request checks ----------------------------------------------------------------------- */

bool br_catalog_user(broker *b, hn_request *req, hn_user *u) {
    if (!br_require_user(b, req, "A User API key.", u))
        return false;
    if (!b->mod->started) {
        br_fail(b, req, 503, "ServiceUnavailable", "The broker is starting.");
        return false;
    }
    return true;
}

bool br_catalog_page_args(broker *b, hn_request *req, int *page, const char **sort) {
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

bool br_catalog_may_edit(broker *b, hn_request *req, br_catalog c, const hn_user *u,
                         const json_t *o, bool moderators_too) {
    if (br_catalog_owner(o) == u->id || (moderators_too && br_mod_is_moderator(u)))
        return true;
    br_fail(b, req, 403, "Forbidden", "This %s is not owned by user %s", catalogs[c].noun,
            u->username);
    return false;
}

/* ---- answers ------------------------------------------------------------------------------ */

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
        json_array_append_new(out, br_catalog_public(items[i]));
    free(items);
    return out;
}

void br_catalog_respond_page(broker *b, hn_request *req, br_catalog c, const char *sort, int page,
                             const char *tag, const char *model) {
    br_mod *m = b->mod;
    pthread_mutex_lock(&m->lock);
    json_t *all = br_catalog_items_locked(m, c);
    json_t *out = all ? page_of(all, sort, page, tag, model) : json_array();
    pthread_mutex_unlock(&m->lock);
    b->api->respond_json(req, 200, out);
}

void br_catalog_respond_modified(broker *b, hn_request *req, const char *id) {
    b->api->respond_json(req, 200, json_pack("{s:s, s:s, s:[]}", "id", id, "message", "OK",
                                             "warnings"));
}
