/* broker: the broker's part of a user's details (hook user_details, run by the
 * auth plugin for GET /users/{id} and /find_user): worker_count, worker_ids,
 * active generations and the image request/fulfilment records. */
#include "accounts.h"

static json_t *object_at(json_t *parent, const char *key) {
    json_t *o = json_object_get(parent, key);
    if (!json_is_object(o)) {
        o = json_object();
        json_object_set_new(parent, key, o);
    }
    return o;
}

hn_rc br_hook_user_details(void *state, const hn_user *user, int privilege, json_t *details) {
    broker *b = state;
    if (!b->started || !user || !json_is_object(details))
        return HN_OK;
    json_t *worker_ids = json_array();
    json_t *active = json_array();
    int worker_count = 0;
    int64_t requested = 0, fulfilled = 0;
    double usage = 0, contribution = 0;
    pthread_mutex_lock(&b->lock);
    size_t i = 0;
    void *v;
    while (br_map_next(&b->workers, &i, NULL, &v)) {
        br_worker *w = v;
        if (w->user_id != user->id)
            continue;
        worker_count++;
        json_array_append_new(worker_ids, json_string(w->id));
    }
    br_user *u = br_user_get(b, user->id, false);
    if (u) {
        for (br_request *r = u->reqs; r; r = r->unext) {
            br_status st;
            br_status_compute(b, r, br_now_ms(), &st);
            if (!st.done)
                json_array_append_new(active, json_string(r->id));
        }
        requested = u->images_requested;
        fulfilled = u->images_fulfilled;
        usage = u->usage_mps;
        contribution = u->contribution_mps;
    }
    pthread_mutex_unlock(&b->lock);
    json_object_set_new(details, "worker_count", json_integer(worker_count));
    /* auth puts worker_ids only where they may be seen: public_workers, the
     * owner, a moderator */
    if (json_object_get(details, "worker_ids"))
        json_object_set_new(details, "worker_ids", worker_ids);
    else
        json_decref(worker_ids);
    if (json_object_get(details, "sharedkey_ids") && b->acc) {
        json_t *keys = json_array();
        pthread_mutex_lock(&b->lock);
        size_t k = 0;
        void *kv;
        while (br_map_next(&b->acc->skeys, &k, NULL, &kv)) {
            const br_skey *sk = kv;
            if (sk->user_id == user->id)
                json_array_append_new(keys, json_string(sk->id));
        }
        pthread_mutex_unlock(&b->lock);
        json_object_set_new(details, "sharedkey_ids", keys);
    }
    if (privilege >= 1) {
        json_t *ag = object_at(details, "active_generations");
        json_object_set_new(ag, "image", active);
        if (!json_object_get(ag, "text"))
            json_object_set_new(ag, "text", json_array());
        if (!json_object_get(ag, "alchemy"))
            json_object_set_new(ag, "alchemy", json_array());
    } else {
        json_decref(active);
    }
    json_t *records = object_at(details, "records");
    json_object_set_new(object_at(records, "usage"), "megapixelsteps",
                        json_real(br_round(usage, 2)));
    json_object_set_new(object_at(records, "contribution"), "megapixelsteps",
                        json_real(br_round(contribution, 2)));
    json_object_set_new(object_at(records, "fulfillment"), "image", json_integer(fulfilled));
    json_object_set_new(object_at(records, "request"), "image", json_integer(requested));
    return HN_OK;
}
