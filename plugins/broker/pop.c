/* broker: POST /generate/pop — a worker checks in and asks for work (§1.4, §4.2).
 *
 * Under the lock: create or check in the worker, walk the priority queue
 * (first the requests of the worker's owner and its priority_usernames, then
 * everyone's) and take the first request it can serve, creating up to
 * `amount` jobs. The jobs' rows are queued for the writer before the lock is
 * released, and the answer waits for their commit, so that a job handed out
 * is a job the node remembers after a crash. Two workers can never receive
 * the same job: taking images off a request (n -= k) happens under the lock.
 * The payload (JSON, signed URLs, base64 source images) is built after the
 * lock is released. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "broker.h"
#include "cluster.h"
#include "accounts.h"

#define MAX_WORKER_MODELS 300
#define MAX_BLACKLIST 200
#define BLACKLIST_WORD_MAX 15
#define MAX_PRIORITY_USERS 64

static char *trimmed(const char *s) {
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    char *out = malloc(n + 1);
    if (out) {
        memcpy(out, s, n);
        out[n] = '\0';
    }
    return out;
}

/* The worker's advertised abilities, from the pop body and the horde's
 * effective defaults (§1.4: nsfw true, controlnet/lora false...). */
static int attrs_from_pop(broker *b, const json_t *body, const hn_user *u, const char *ip,
                          br_worker_attrs *a) {
    memset(a, 0, sizeof(*a));
    const char *agent = br_jstr(body, "bridge_agent");
    a->bridge_agent = strdup(agent ? agent : "unknown:0:unknown");
    a->caps = br_bridge_caps(a->bridge_agent, &a->samplers_karras, &a->samplers_plain);
    a->nsfw = br_jbool(body, "nsfw", true);
    a->allow_img2img = br_jbool(body, "allow_img2img", true);
    a->allow_painting = br_jbool(body, "allow_painting", true);
    a->allow_unsafe_ipaddr = br_jbool(body, "allow_unsafe_ipaddr", true);
    a->allow_post_processing = br_jbool(body, "allow_post_processing", true);
    a->allow_controlnet = br_jbool(body, "allow_controlnet", false);
    a->allow_sdxl_controlnet = br_jbool(body, "allow_sdxl_controlnet", false);
    a->allow_lora = br_jbool(body, "allow_lora", false);
    a->limit_max_steps = br_jbool(body, "limit_max_steps", false);
    a->extra_slow = br_jbool(body, "extra_slow_worker", false);
    a->require_upfront_kudos = br_jbool(body, "require_upfront_kudos", false);
    a->max_pixels = br_jint(body, "max_pixels", 262144);
    a->threads = (int)br_jint(body, "threads", 1);
    a->ipaddr = strdup(ip ? ip : "");
    /* models kept: names the reference knows, or any with accept_unknown_models
     * (a customizer may always serve custom names) */
    const json_t *models = json_object_get(body, "models");
    size_t nm = json_array_size(models);
    a->models = calloc(nm ? nm : 1, sizeof(char *));
    bool any = b->conf->accept_unknown_models || (u->roles & HN_ROLE_CUSTOMIZER);
    for (size_t i = 0; a->models && i < nm && a->n_models < MAX_WORKER_MODELS; i++) {
        const char *m = json_string_value(json_array_get(models, i));
        if (!m || !(any || br_model_known(b->ref, m)))
            continue;
        if ((a->models[a->n_models] = strdup(m)))
            a->n_models++;
    }
    const json_t *bl = json_object_get(body, "blacklist");
    size_t nb = json_array_size(bl);
    if (nb > MAX_BLACKLIST)
        nb = MAX_BLACKLIST;
    a->blacklist = calloc(nb ? nb : 1, sizeof(char *));
    for (size_t i = 0; a->blacklist && i < nb; i++) {
        const char *word = json_string_value(json_array_get(bl, i));
        if (!word)
            continue;
        char *lw = br_lower(word);
        if (lw && strlen(lw) > BLACKLIST_WORD_MAX)
            lw[BLACKLIST_WORD_MAX] = '\0';
        if (lw)
            a->blacklist[a->n_blacklist++] = lw;
    }
    return (a->bridge_agent && a->models && a->blacklist && a->ipaddr) ? 0 : -1;
}

/* Did anything change that decides what the worker can take? */
static bool attrs_differ(const br_worker_attrs *x, const br_worker_attrs *y) {
    if (x->caps != y->caps || x->samplers_karras != y->samplers_karras ||
        x->samplers_plain != y->samplers_plain || x->nsfw != y->nsfw ||
        x->allow_img2img != y->allow_img2img || x->allow_painting != y->allow_painting ||
        x->allow_post_processing != y->allow_post_processing ||
        x->allow_controlnet != y->allow_controlnet ||
        x->allow_sdxl_controlnet != y->allow_sdxl_controlnet || x->allow_lora != y->allow_lora ||
        x->limit_max_steps != y->limit_max_steps || x->extra_slow != y->extra_slow ||
        x->max_pixels != y->max_pixels || x->threads != y->threads ||
        x->n_models != y->n_models || x->n_blacklist != y->n_blacklist ||
        strcmp(x->bridge_agent ? x->bridge_agent : "", y->bridge_agent ? y->bridge_agent : ""))
        return true;
    for (int i = 0; i < x->n_models; i++)
        if (strcmp(x->models[i], y->models[i]) != 0)
            return true;
    for (int i = 0; i < x->n_blacklist; i++)
        if (strcmp(x->blacklist[i], y->blacklist[i]) != 0)
            return true;
    return false;
}

static int safe_amount(const br_worker *w, const br_request *r, int amount) {
    if (r->s.disable_batching)
        return 1;
    double denom = (double)r->s.width * r->s.height * (1 + 0.4 * r->s.n_pp) *
                   ((r->s.heavy_pp || r->s.transparent) ? 1.8 : 1.0);
    int safe = (int)br_round((double)w->a.max_pixels / 3.5 * amount / denom, 0);
    if (safe > amount)
        safe = amount;
    if (safe > r->n)
        safe = r->n;
    if (safe < 1)
        safe = 1;
    return safe;
}

static int job_ttl(broker *b, const br_request *r, const br_worker *w) {
    if (b->conf->job_ttl_s > 0)
        return (int)b->conf->job_ttl_s;
    double ttl = 30 + r->s.accurate_steps * 2 * ((double)r->s.width * r->s.height / 262144.0);
    if (r->s.control_type)
        ttl *= 2;
    for (int i = 0; i < r->s.n_models; i++) {
        const char *base = br_model_baseline(b->ref, r->s.models[i]);
        if (strcmp(base, "flux_1") == 0 || strcmp(base, "qwen_image") == 0 ||
            strcmp(base, "z_image_turbo") == 0) {
            ttl *= 3;
            break;
        }
    }
    if (ttl < 150)
        ttl = 150;
    if (w->a.extra_slow)
        ttl *= 3;
    return (int)ttl;
}

static json_t *skipped_json(const int *counts) {
    static const br_skip always[] = {
        BR_SKIP_BRIDGE_VERSION, BR_SKIP_UNTRUSTED, BR_SKIP_PERFORMANCE,  BR_SKIP_CONTROLNET,
        BR_SKIP_POST_PROCESSING, BR_SKIP_LORA,   BR_SKIP_NSFW,         BR_SKIP_UNSAFE_IP,
        BR_SKIP_PAINTING,       BR_SKIP_IMG2IMG, BR_SKIP_WORKER_ID,    BR_SKIP_MODELS,
    };
    static const br_skip if_any[] = {BR_SKIP_MAX_PIXELS, BR_SKIP_KUDOS, BR_SKIP_BLACKLIST,
                                     BR_SKIP_STEP_COUNT};
    json_t *o = json_object();
    for (size_t i = 0; i < sizeof(always) / sizeof(always[0]); i++)
        json_object_set_new(o, br_skip_names[always[i]], json_integer(counts[always[i]]));
    for (size_t i = 0; i < sizeof(if_any) / sizeof(if_any[0]); i++)
        if (counts[if_any[i]])
            json_object_set_new(o, br_skip_names[if_any[i]], json_integer(counts[if_any[i]]));
    return o;
}

/* The answer when there is nothing to do (not skip_none in the horde: every
 * key present, a payload of defaults). */
static json_t *no_job_json(const int *counts) {
    json_t *payload = json_pack(
        "{s:i, s:i, s:s, s:f, s:i, s:i, s:b, s:b, s:b, s:b, s:b, s:b}", "ddim_steps", 30,
        "n_iter", 1, "sampler_name", "k_euler_a", "cfg_scale", 7.5, "height", 512, "width", 512,
        "karras", 0, "tiling", 0, "hires_fix", 0, "transparent", 0, "image_is_control", 0,
        "return_control_map", 0);
    return json_pack("{s:o, s:n, s:[], s:o, s:[], s:n, s:n, s:n, s:s, s:n, s:n, s:n, s:n}",
                     "payload", payload, "id", "ids", "skipped", skipped_json(counts), "messages",
                     "ttl", "model", "source_image", "source_processing", "img2img",
                     "source_mask", "extra_source_images", "r2_upload", "r2_uploads");
}

/* What the payload needs, copied out of the index under the lock. */
typedef struct pop_result {
    char rid[BR_ID_LEN];
    char *body;       /* the stored request body */
    char (*ids)[BR_ID_LEN];
    int n_ids;
    char *model;
    int64_t seed;
    int ttl;
    bool r2, r2_source;
} pop_result;

static json_t *image_ref(broker *b, const char *key, bool as_url) {
    hn_error err;
    if (as_url) {
        char url[2048];
        if (b->img->url_get(b->images->state, key, (int)b->conf->url_ttl_s, url, sizeof(url),
                            &err) == HN_OK)
            return json_string(url);
        return json_null();
    }
    void *data = NULL;
    size_t len = 0;
    if (b->img->get(b->images->state, key, &data, &len, &err) != HN_OK)
        return json_null();
    char *b64 = br_b64_encode(data, len);
    free(data);
    json_t *s = b64 ? json_string(b64) : json_null();
    free(b64);
    return s;
}

static json_t *payload_json(broker *b, const pop_result *p) {
    json_t *stored = json_loads(p->body, 0, NULL);
    if (!stored)
        return NULL;
    json_t *params = json_deep_copy(json_object_get(stored, "params"));
    if (!params) {
        json_decref(stored);
        return NULL;
    }
    json_object_set_new(params, "prompt", json_string(br_jstr(stored, "prompt")));
    json_object_set_new(params, "ddim_steps", json_integer(br_jint(params, "steps", 30)));
    json_object_del(params, "steps");
    json_object_del(params, "n");
    json_object_set_new(params, "n_iter", json_integer(p->n_ids));
    char seed[32];
    snprintf(seed, sizeof(seed), "%lld", (long long)p->seed);
    json_object_set_new(params, "seed", json_string(seed));
    if (!br_jbool(stored, "nsfw", true) && br_jbool(stored, "censor_nsfw", true))
        json_object_set_new(params, "use_nsfw_censor", json_true());
    static const char *const falses[] = {"karras",     "tiling",           "hires_fix",
                                         "transparent", "image_is_control", "return_control_map"};
    for (size_t i = 0; i < sizeof(falses) / sizeof(falses[0]); i++)
        if (!json_object_get(params, falses[i]))
            json_object_set_new(params, falses[i], json_false());

    json_t *ids = json_array();
    for (int i = 0; i < p->n_ids; i++)
        json_array_append_new(ids, json_string(p->ids[i]));
    char key[BR_ID_LEN + 32];
    json_t *source = json_null(), *mask = json_null(), *extras = json_null();
    if (br_jbool(stored, "_has_source", false)) {
        snprintf(key, sizeof(key), "%s_src", p->rid);
        json_decref(source);
        source = image_ref(b, key, p->r2_source);
    }
    if (br_jbool(stored, "_has_mask", false)) {
        snprintf(key, sizeof(key), "%s_msk", p->rid);
        json_decref(mask);
        mask = image_ref(b, key, p->r2_source);
    }
    const json_t *strengths = json_object_get(stored, "_extra_strengths");
    if (json_array_size(strengths) > 0) {
        json_decref(extras);
        extras = json_array();
        for (size_t i = 0; i < json_array_size(strengths); i++) {
            snprintf(key, sizeof(key), "%s_exsrc%zu", p->rid, i);
            json_array_append_new(extras, json_pack("{s:o, s:O}", "image",
                                                    image_ref(b, key, p->r2_source), "strength",
                                                    json_array_get(strengths, i)));
        }
    }
    json_t *r2_upload = json_null(), *r2_uploads = json_null();
    if (p->r2) {
        json_decref(r2_uploads);
        r2_uploads = json_array();
        for (int i = 0; i < p->n_ids; i++) {
            char url[2048];
            hn_error err;
            snprintf(key, sizeof(key), "%s.webp", p->ids[i]);
            if (b->img->url_put(b->images->state, key, (int)b->conf->url_ttl_s, url, sizeof(url),
                                &err) == HN_OK)
                json_array_append_new(r2_uploads, json_string(url));
        }
        if (json_array_size(r2_uploads) > 0) {
            json_decref(r2_upload);
            r2_upload = json_incref(json_array_get(r2_uploads, 0));
        }
    }
    const char *sp = br_jstr(stored, "source_processing");
    json_t *resp = json_pack(
        "{s:o, s:s, s:o, s:s, s:i, s:o, s:s, s:o, s:o, s:o, s:o, s:[], s:{}}", "payload", params,
        "id", p->ids[0], "ids", ids, "model", p->model, "ttl", p->ttl, "source_image", source,
        "source_processing", sp ? sp : "img2img", "source_mask", mask, "extra_source_images",
        extras, "r2_upload", r2_upload, "r2_uploads", r2_uploads, "messages", "skipped");
    json_decref(stored);
    return resp;
}

static void pop_result_free(pop_result *p) {
    free(p->body);
    free(p->ids);
    free(p->model);
}

/* Parses "alias#id" names into the ids of existing users (the horde checks
 * only the '#'; the rest of the name is not compared). */
static int priority_ids(broker *b, hn_request *req, const json_t *body, int64_t *ids, int *n) {
    const json_t *names = json_object_get(body, "priority_usernames");
    size_t i;
    json_t *x;
    json_array_foreach(names, i, x) {
        const char *s = json_string_value(x);
        const char *hash = s ? strrchr(s, '#') : NULL;
        if (!hash) {
            br_fail(b, req, 400, "InvalidPriorityUsername",
                    "Priority usernames need to be provided in the form of 'alias#number'. "
                    "Example: 'db0#1'");
            return -1;
        }
        char *end;
        long long id = strtoll(hash + 1, &end, 10);
        if (*end != '\0' || end == hash + 1 || *n >= MAX_PRIORITY_USERS)
            continue;
        /* only users that exist count (the horde filters the ids by its users
         * table); unknown ones are ignored, not an error */
        hn_user u;
        hn_error err;
        memset(&u, 0, sizeof(u));
        u.size = sizeof(u);
        if (hn_run_user_lookup(b->api, id, &u, &err) == HN_OK)
            ids[(*n)++] = id;
    }
    return 0;
}

/* The requests a worker might serve, in queue order: a merge of the
 * per-model queues of its models and the any-model queue. A request naming
 * several of the worker's models comes up once per list; callers skip
 * repeats with the visit stamp. */
typedef struct cand_iter {
    br_qlink **cur;
    int n;
} cand_iter;

static int cand_init(broker *b, cand_iter *it, const char *const *models, size_t n_models) {
    it->n = 0;
    it->cur = calloc(n_models + 1, sizeof(*it->cur));
    if (!it->cur)
        return -1;
    for (size_t i = 0; i < n_models; i++) {
        br_mqueue *q = models[i] ? br_model_queue(b, models[i]) : NULL;
        if (!q || !q->head)
            continue;
        bool seen = false;
        for (int k = 0; k < it->n && !seen; k++)
            seen = it->cur[k]->q == q;
        if (!seen)
            it->cur[it->n++] = q->head;
    }
    if (b->any_queue.head)
        it->cur[it->n++] = b->any_queue.head;
    return 0;
}

static br_request *cand_next(cand_iter *it) {
    int best = -1;
    for (int i = 0; i < it->n; i++)
        if (it->cur[i] && (best < 0 || br_queue_before(it->cur[i]->r, it->cur[best]->r)))
            best = i;
    if (best < 0)
        return NULL;
    br_request *r = it->cur[best]->r;
    it->cur[best] = it->cur[best]->next;
    return r;
}

static bool in_ids(const int64_t *ids, int n, int64_t id) {
    for (int i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

void br_route_pop(hn_request *req, void *state) {
    broker *b = state;
    const hn_api *api = b->api;
    hn_error err;
    hn_user user;
    json_t *body = br_checked_body(b, req, br_validate_pop_schema, "A User API key.");
    if (!body)
        return;
    if (br_authenticate(b, req, &user, &err) != HN_OK) {
        api->respond_error(req, &err);
        return;
    }
    if (HN_USER_HAS(&user, deleted) && user.deleted) { /* §1.4: right after the key */
        br_fail(b, req, 403, "DeletedUser", "This user has been deleted.");
        return;
    }
    if (user.roles & HN_ROLE_FLAGGED) {
        br_fail(b, req, 403, "WorkerFlaggedMaintenance",
                "Your user has been flagged by our community for suspicious activity. Please "
                "contact us on discord: https://discord.gg/3DxrhksKzn");
        return;
    }
    if (user.id == 0) {
        br_fail(b, req, 403, "AnonForbiddenWorker",
                "Anonymous user is forbidden from performing this operation");
        return;
    }
    if (br_ip_check(b, api->req_client_ip(req), &err) != 0) { /* §5 IP timeouts */
        api->respond_error(req, &err);
        return;
    }
    int64_t prio[MAX_PRIORITY_USERS + 1];
    int n_prio = 0;
    prio[n_prio++] = user.id;
    if (priority_ids(b, req, body, prio, &n_prio) != 0)
        return;
    char *name = trimmed(br_jstr(body, "name"));
    if (!name || !*name) {
        free(name);
        br_fail(b, req, 400, "BadRequest", "A worker needs a name.");
        return;
    }
    /* §5 onboarding: profane names and bridge agents are refused */
    if (api->text_profane(name)) {
        free(name);
        br_fail(b, req, 400, "ProfaneWorkerName",
                "This worker's name contains profanity. Please use a different name.");
        return;
    }
    if (api->text_profane(br_jstr(body, "bridge_agent"))) {
        free(name);
        br_fail(b, req, 400, "ProfaneBridgeAgent",
                "This worker's bridge agent contains profanity. Please use a different one.");
        return;
    }
    /* the horde keeps the first 100 characters of a long name (suspicion.c) */
    size_t name_chars = br_worker_name_cut(name, BR_WORKER_NAME_MAX);
    br_worker_attrs attrs;
    if (attrs_from_pop(b, body, &user, api->req_client_ip(req), &attrs) != 0) {
        br_worker_attrs_free(&attrs);
        free(name);
        br_fail(b, req, 500, "InternalServerError", "out of memory");
        return;
    }
    if (attrs.n_models == 0) {
        br_worker_attrs_free(&attrs);
        free(name);
        br_fail(b, req, 400, "BadRequest",
                "Unfortunately we cannot accept workers serving unrecognised models at this "
                "time");
        return;
    }
    /* the pop's own model list, used verbatim for matching (§1.4) */
    const json_t *jm = json_object_get(body, "models");
    size_t n_models = json_array_size(jm);
    const char **models = calloc(n_models ? n_models : 1, sizeof(char *));
    if (!models) {
        br_worker_attrs_free(&attrs);
        free(name);
        br_fail(b, req, 500, "InternalServerError", "out of memory");
        return;
    }
    for (size_t i = 0; i < n_models; i++)
        models[i] = json_string_value(json_array_get(jm, i));
    int amount = (int)br_jint(body, "amount", 1);
    int64_t now = br_now_ms();

    /* invite-only mode (modes.c): a new worker needs an invitation left */
    int64_t invited = br_invite_allowance(b, &user, name);
    pthread_mutex_lock(&b->lock);
    br_worker *w = br_worker_find_name(b, name);
    bool created = false;
    if (!w) {
        static const char *const banned[] = {"colab", "tpu", "google"};
        for (size_t i = 0; i < 3; i++) {
            if (strcasestr(name, banned[i])) {
                pthread_mutex_unlock(&b->lock);
                br_fail(b, req, 400, "BadRequest",
                        "To avoid unwanted attention, please do not use '%s' in your worker "
                        "names.",
                        banned[i]);
                goto done_early;
            }
        }
        br_user *u = br_user_get(b, user.id, true);
        bool trusted = (user.roles & (HN_ROLE_TRUSTED | HN_ROLE_ADMIN | HN_ROLE_MODERATOR)) != 0;
        if (!trusted && u && u->worker_count > b->conf->max_untrusted_workers) {
            pthread_mutex_unlock(&b->lock);
            br_fail(b, req, 403, "TooManyWorkers",
                    "To avoid abuse, untrusted users can only have up to %lld distinct workers.",
                    b->conf->max_untrusted_workers);
            goto done_early;
        }
        if (invited >= 0 && u && u->worker_count >= invited) {
            pthread_mutex_unlock(&b->lock);
            br_fail(b, req, 403, "WorkerInviteOnly",
                    "This horde is in worker invite-only mode. Please ask a moderator for an "
                    "invitation.");
            goto done_early;
        }
        w = calloc(1, sizeof(*w));
        if (w)
            w->name = strdup(name);
        if (!w || !w->name) {
            br_worker_free(w);
            pthread_mutex_unlock(&b->lock);
            br_fail(b, req, 500, "InternalServerError", "out of memory");
            goto done_early;
        }
        br_uuid4(w->id);
        w->user_id = user.id;
        w->created_ms = now;
        w->speed = BR_DEFAULT_SPEED;
        br_worker_add(b, w);
        created = true;
        if (name_chars > BR_WORKER_NAME_MAX)
            br_worker_suspect(b, w, HN_SUSPICION_WORKER_NAME_LONG);
        if (name_chars > BR_WORKER_NAME_EXTREME)
            br_worker_suspect(b, w, HN_SUSPICION_WORKER_NAME_EXTREME);
    } else if (w->user_id != user.id) {
        pthread_mutex_unlock(&b->lock);
        br_fail(b, req, 403, "WrongCredentials", "Wrong credentials to submit as this worker.");
        goto done_early;
    }
    /* check-in (§3.5): uptime grows while the worker keeps popping */
    int64_t uptime_added = 0;
    if (!created && w->last_checkin_ms && now - w->last_checkin_ms <= b->conf->worker_online_s * 1000)
        uptime_added = (now - w->last_checkin_ms) / 1000;
    w->uptime_s += uptime_added;
    bool changed = created || attrs_differ(&w->a, &attrs) ||
                   !br_worker_online(b, w, now) || w->owner_roles != br_owner_bits(&user);
    br_worker_attrs_free(&w->a);
    w->a = attrs;
    memset(&attrs, 0, sizeof(attrs));
    snprintf(w->owner, sizeof(w->owner), "%s", user.username);
    /* the owner became trusted since the last pop (the kudos plugin's
     * promotion, a moderator): the horde unpauses the owner's workers (§3.5) */
    if (!created && w->paused && !(w->owner_roles & HN_ROLE_TRUSTED) &&
        (user.roles & HN_ROLE_TRUSTED)) {
        w->paused = false;
        w->dirty = true;
        changed = true;
    }
    w->owner_roles = br_owner_bits(&user);
    w->last_checkin_ms = now;
    /* cluster: the untrusted limit above counted this node's workers only;
     * the table counts every node's (cluster.h) */
    if (created && b->cluster &&
        !(user.roles & (HN_ROLE_TRUSTED | HN_ROLE_ADMIN | HN_ROLE_MODERATOR))) {
        hn_error werr;
        if (br_cluster_reserve_worker(b, w, &werr) != 0) {
            br_map_del(&b->workers, w->id);
            br_map_del(&b->workers_by_name, w->name);
            br_user *owner = br_user_get(b, w->user_id, false);
            if (owner && owner->worker_count > 0)
                owner->worker_count--;
            b->workers_ver++;
            br_worker_free(w);
            pthread_mutex_unlock(&b->lock);
            api->respond_error(req, &werr);
            goto done_early;
        }
    }
    /* §4.2 check-in: an untrusted owner asking for huge images is suspicious */
    if (w->a.max_pixels > BR_EXTREME_MAX_PIXELS &&
        !(user.roles & (HN_ROLE_TRUSTED | HN_ROLE_ADMIN | HN_ROLE_MODERATOR)) &&
        br_worker_suspect(b, w, HN_SUSPICION_EXTREME_MAX_PIXELS))
        changed = true;
    if (changed)
        b->workers_ver++;
    /* a new worker's row is written with this pop; later the row is
     * rewritten (by the next lifecycle tick) when something changed, else at
     * most every 30 s (the horde's check-in debounce) */
    bool save = created;
    if (!created && (changed || now - w->last_saved_ms >= 30000))
        w->dirty = true;
    if (save)
        w->last_saved_ms = now;
    json_t *checkin = !br_hooked(b, HN_HOOK_ID_worker_checked_in) ? NULL : json_pack("{s:s, s:s, s:I, s:i, s:b, s:s, s:I, s:b, s:i, s:b, s:b, s:b}", "worker_id",
                                w->id, "name", w->name, "user_id", (json_int_t)w->user_id,
                                "threads", w->a.threads, "nsfw", w->a.nsfw, "bridge_agent",
                                w->a.bridge_agent, "uptime_added", (json_int_t)uptime_added,
                                "new", created, "models", w->a.n_models,
                                /* kudos: the LoRA part of uptime; no uptime while idle */
                                "allow_lora", w->a.allow_lora, "maintenance", w->maintenance,
                                "paused", w->paused);

    /* cluster.h: a claim another node won sends us back here for the next
     * candidate, a few times at most */
    int claim_tries = 0;
find_work:;
    /* ---- find work ---- */
    int counts[BR_SKIP_COUNT] = {0};
    br_request *found = NULL;
    const char *chosen = NULL;
    bool prio_pass = false;
    for (int i = 0; i < n_prio && !prio_pass; i++) {
        br_user *pu = br_user_get(b, prio[i], false);
        if (pu && pu->waiting_reqs > 0)
            prio_pass = true;
    }
    /* an idle worker polling an unchanged queue: the answer is the last one
     * (the queue is not walked again; skip counts may lag removals, which the
     * horde's own recount does too, §7.8) */
    uint64_t models_hash = 1469598103934665603ull; /* the pop's own list counts too */
    for (size_t i = 0; i < n_models; i++)
        for (const unsigned char *p = (const unsigned char *)(models[i] ? models[i] : "");; p++) {
            models_hash = (models_hash ^ *p) * 1099511628211ull;
            if (!*p)
                break;
        }
    bool cached = w->idle_valid && w->idle_queue_ver == b->queue_ver &&
                  w->idle_workers_ver == b->workers_ver && w->idle_models_hash == models_hash;
    if (cached) {
        memcpy(counts, w->idle_counts, sizeof(counts));
        prio_pass = false;
    }
    cand_iter it = {0};
    if (prio_pass && cand_init(b, &it, models, n_models) == 0) {
        uint64_t stamp = ++b->visit_stamp;
        for (br_request *r; !found && (r = cand_next(&it)) != NULL;) {
            if (r->visit == stamp)
                continue;
            r->visit = stamp;
            if (in_ids(prio, n_prio, r->user_id) &&
                br_match(b, w, models, (int)n_models, r, &chosen) == BR_SKIP_NONE)
                found = r;
        }
        free(it.cur);
    }
    if (!cached && !found && cand_init(b, &it, models, n_models) == 0) {
        uint64_t stamp = ++b->visit_stamp;
        int visited = 0;
        for (br_request *r; !found && (r = cand_next(&it)) != NULL;) {
            if (r->visit == stamp)
                continue;
            r->visit = stamp;
            visited++;
            br_skip sk = br_match(b, w, models, (int)n_models, r, &chosen);
            if (sk == BR_SKIP_NONE)
                found = r;
            else
                counts[sk]++;
        }
        free(it.cur);
        /* the requests no list led to name none of the worker's models */
        if (!found)
            counts[BR_SKIP_MODELS] += b->q_len - visited;
    }
    w->idle_valid = !found;
    if (!found) {
        w->idle_queue_ver = b->queue_ver;
        w->idle_workers_ver = b->workers_ver;
        w->idle_models_hash = models_hash;
        memcpy(w->idle_counts, counts, sizeof(counts));
    }

    br_op *op = NULL;
    if (!found) {
        /* a new worker's row is committed before it learns it exists; later
         * check-ins need not be waited for */
        bool wait = false;
        if (save && (op = br_op_new(b)) != NULL) {
            br_store_worker_save(op, w);
            if (created) {
                wait = true;
                br_op_hold(op);
                br_op_reply(op, req, 200, NULL, -1, NULL);
                api->req_suspend(req);
            }
            br_op_submit(b, op);
        }
        bool maint = w->maintenance;
        char *msg = br_strdup(w->maintenance_msg);
        json_t *wmsgs = br_worker_messages_json(b, w, now); /* messages.c */
        pthread_mutex_unlock(&b->lock);
        if (checkin)
            hn_run_worker_checked_in(api, checkin);
        json_t *nj = maint && !wait ? NULL : no_job_json(counts);
        if (nj)
            json_object_set(nj, "messages", wmsgs);
        json_decref(wmsgs);
        if (wait)
            br_op_set_body(op, nj);
        else if (maint)
            br_fail(b, req, 403, "WorkerMaintenance", "%s",
                    msg ? msg : "This worker has been put into maintenance mode by its owner");
        else
            api->respond_json(req, 200, nj);
        free(msg);
        json_decref(checkin);
        goto done_early;
    }

    /* ---- hand out jobs ---- */
    br_request *r = found;
    pop_result res;
    memset(&res, 0, sizeof(res));
    int safe = safe_amount(w, r, amount);
    int n_before = r->n;
    res.ids = calloc((size_t)safe, sizeof(*res.ids));
    res.body = strdup(r->body);
    res.model = strdup(chosen);
    op = br_op_new(b);
    if (!res.ids || !res.body || !res.model || !op) {
        pthread_mutex_unlock(&b->lock);
        pop_result_free(&res);
        br_op_discard(op);
        json_decref(checkin);
        br_fail(b, req, 500, "InternalServerError", "out of memory");
        goto done_early;
    }
    int64_t seed = r->s.has_seed ? r->s.seed : (int64_t)br_random_u32();
    if (r->s.has_seed && r->s.seed_variation > 0)
        seed = br_seed_reduce(r->s.seed + (int64_t)r->s.seed_variation * n_before);
    res.seed = seed;
    res.ttl = job_ttl(b, r, w);
    res.r2 = r->s.r2;
    res.r2_source = (w->a.caps & BR_CAPBIT(BR_CAP_R2_SOURCE)) != 0;
    memcpy(res.rid, r->id, sizeof(res.rid));
    r->n -= safe;
    int64_t expiry = now + b->conf->request_expiry_s * 1000 * (w->a.extra_slow ? 3 : 1);
    if (expiry > r->expiry_ms)
        r->expiry_ms = expiry;
    json_t *job_ids = json_array();
    for (int k = 0; k < safe; k++) {
        br_job *j = calloc(1, sizeof(*j));
        if (!j || !(j->model = strdup(chosen))) {
            free(j);
            r->n += safe - k; /* give the images we could not hand out back */
            safe = k;
            break;
        }
        br_uuid4(j->id);
        j->req = r;
        j->worker = w;
        j->seed = seed;
        j->state = BR_JOB_PROCESSING;
        j->start_ms = now;
        j->ttl_s = res.ttl;
        br_job_add(b, j);
        br_store_job_insert(op, j);
        memcpy(res.ids[k], j->id, BR_ID_LEN);
        json_array_append_new(job_ids, json_string(j->id));
    }
    res.n_ids = safe;
    br_request_requeue(b, r);
    br_store_request_update(op, r);
    if (save)
        br_store_worker_save(op, w);
    if (b->cluster) { /* the database decides who gets the images (cluster.h) */
        hn_error cerr;
        int claimed = br_cluster_claim(b, op, r, res.n_ids, &cerr);
        if (claimed != 1) {
            br_cluster_unpop(b, r, res.n_ids, claimed == 0);
            pop_result_free(&res);
            br_op_discard(op);
            json_decref(job_ids);
            if (claimed == 0 && ++claim_tries < 8)
                goto find_work;
            pthread_mutex_unlock(&b->lock);
            json_decref(checkin);
            if (claimed == 0)
                api->respond_json(req, 200, no_job_json(counts));
            else
                api->respond_error(req, &cerr);
            goto done_early;
        }
    }
    json_t *info = !br_hooked(b, HN_HOOK_ID_job_popped) ? NULL :
                   json_pack("{s:s, s:O, s:s, s:I, s:I, s:s, s:i, s:f}", "request", r->id, "jobs",
                             job_ids, "worker", w->id, "user_id", (json_int_t)r->user_id,
                             "worker_user_id", (json_int_t)w->user_id, "model", chosen, "n", safe,
                             "kudos", r->kudos);
    br_op_hold(op);
    br_op_reply(op, req, 200, NULL, HN_HOOK_ID_job_popped, info);
    api->req_suspend(req);
    br_op_submit(b, op);
    json_t *job_msgs = br_worker_messages_json(b, w, now); /* messages.c */
    pthread_mutex_unlock(&b->lock);

    if (checkin)
        hn_run_worker_checked_in(api, checkin);
    json_decref(checkin);
    json_decref(job_ids);
    json_t *resp = res.n_ids > 0 ? payload_json(b, &res) : NULL;
    if (resp)
        json_object_set(resp, "messages", job_msgs);
    json_decref(job_msgs);
    if (!resp)
        resp = json_pack("{s:s, s:s}", "message", "internal error building the job payload", "rc",
                         "InternalServerError");
    br_op_set_body(op, resp);
    pop_result_free(&res);
done_early:
    br_worker_attrs_free(&attrs);
    free(models);
    free(name);
}
