/* broker: what image styles (styles.c) and style collections (collections.c)
 * share, implemented in style_catalog.c.
 *
 * Both are catalogs of JSON objects kept in memory as the API shows them plus
 * "_user_id" (the owner) and "_created" (ms), keyed by id in br_mod.styles /
 * br_mod.collections (guarded by br_mod.lock), and written through to one
 * table each (mod_styles, mod_collections) on every change.
 *
 * Functions taking a request answer it themselves when they fail (false or
 * NULL returned); the others return errors. Internal to the broker plugin. */
#ifndef BR_STYLE_CATALOG_H
#define BR_STYLE_CATALOG_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include <hn/hn.h>

#include "broker.h"

typedef enum br_catalog { BR_CATALOG_STYLES, BR_CATALOG_COLLECTIONS } br_catalog;

/* ---- reading (caller holds m->lock; results borrowed from the catalog) ---- */

/* The catalog's id -> object map; NULL before br_styles_load. */
json_t *br_catalog_items_locked(br_mod *m, br_catalog c);
/* An item by id, or by "name" / "alias#id::<kind>::name" / "alias#id::name"
 * (kind: "style" or "collection"). NULL when none. */
json_t *br_catalog_find_locked(json_t *all, const char *key, const char *kind);

/* ---- objects -------------------------------------------------------------------------------- */

/* The object as the API shows it (keys starting with '_' dropped). New reference. */
json_t *br_catalog_public(const json_t *o);
/* "_user_id" of an item. */
int64_t br_catalog_owner(const json_t *o);

/* ---- request checks (false: answered) --------------------------------------------------- */

/* An apikey header, a known user and a started broker; *u filled. */
bool br_catalog_user(broker *b, hn_request *req, hn_user *u);
/* The `sort` (popular|age, default popular) and `page` (from 1) query arguments.
 * *sort is borrowed from the request. */
bool br_catalog_page_args(broker *b, hn_request *req, int *page, const char **sort);
/* u owns o, or (moderators_too) is a moderator; else answered 403 Forbidden. */
bool br_catalog_may_edit(broker *b, hn_request *req, br_catalog c, const hn_user *u,
                         const json_t *o, bool moderators_too);

/* ---- answers -------------------------------------------------------------------------------- */

/* 200 with one page of the public items matching tag and model (NULL or "":
 * any), sorted by sort. */
void br_catalog_respond_page(broker *b, hn_request *req, br_catalog c, const char *sort, int page,
                             const char *tag, const char *model);
/* 200 with the public view of the item named by the path parameter param, else 404. */
void br_catalog_respond_by_name(broker *b, hn_request *req, br_catalog c, const char *param);
/* 200 {"id", "message": "OK", "warnings": []}, the answer to a create or a change. */
void br_catalog_respond_modified(broker *b, hn_request *req, const char *id);

/* ---- changes -------------------------------------------------------------------------------- */

/* A deep copy (owned by the caller) of the item whose id is the path
 * parameter param, its id in id; NULL when answered 404. */
json_t *br_catalog_copy(broker *b, hn_request *req, br_catalog c, const char *param,
                        char id[BR_ID_LEN]);
/* Writes o (owner: its "_user_id") to storage, then puts it in memory under id
 * (a new reference; the caller keeps its own). Caller holds m->lock. */
hn_rc br_catalog_put_locked(broker *b, br_catalog c, const char *id, json_t *o, hn_error *err);
/* br_catalog_put_locked under the lock; false when answered with the error. */
bool br_catalog_put(broker *b, hn_request *req, br_catalog c, const char *id, json_t *o);
/* Deletes the item from storage and memory; answers 200 {"message": "OK"} or the error. */
void br_catalog_delete(broker *b, hn_request *req, br_catalog c, const char *id);

#endif
