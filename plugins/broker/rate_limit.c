/* broker: rate limits (spec/horde-api.md §0 "Rate limits", §1, §2), on hook
 * http_request so that every plugin's routes are covered.
 *
 * Fixed windows as flask-limiter counts them: a counter per (limit, key)
 * that restarts when its window has passed. The key is the client IP, or the
 * IP plus the request path ("per IP+path": each request id its own counter),
 * or a hash of the API key plus the path. Routes without their own limit get
 * the default (90 a minute per IP and route); the heartbeat has none.
 *
 * Switches (plugins.broker): rate_limits = false turns everything off (the
 * horde's HORDE_TEST_RATELIMIT_DISABLED); loopback clients (the in-process
 * worker, tools on the node's own machine) are exempt unless
 * rate_limit_loopback = true; behind a local reverse proxy the client IP is
 * X-Forwarded-For's last hop, so real clients are limited. Over the limit:
 * 429 {"message": "Rate limit exceeded: N per P", "rc": "TooManyRequests"}
 * (the horde's limiter sends no rc; every 4xx of the node carries one). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "moderation.h"

typedef enum rl_scope { RL_IP, RL_IP_PATH, RL_KEY_PATH } rl_scope;

typedef struct rl_limit {
    unsigned methods;    /* 0: every method */
    const char *route;   /* the route pattern */
    rl_scope scope;
    int count;
    int period_s;
    const char *text;    /* "2 per 1 second" */
} rl_limit;

/* The horde's per-route limits (anything else: DEFAULT_LIMIT per IP+route). */
static const rl_limit limits[] = {
    {HN_POST, "/api/v2/generate/async", RL_IP_PATH, 90, 60, "90 per 1 minute"},
    {HN_POST, "/api/v2/generate/async", RL_IP_PATH, 2, 1, "2 per 1 second"},
    {HN_POST, "/api/v2/generate/async", RL_KEY_PATH, 2, 1, "2 per 1 second"},
    {HN_GET, "/api/v2/generate/check/{id}", RL_IP_PATH, 10, 1, "10 per 1 second"},
    {0, "/api/v2/generate/status/{id}", RL_IP_PATH, 10, 60, "10 per 1 minute"},
    {HN_POST, "/api/v2/generate/pop", RL_IP, 60, 1, "60 per 1 second"},
    {HN_POST, "/api/v2/generate/submit", RL_IP, 60, 1, "60 per 1 second"},
    {HN_POST, "/api/v2/generate/rate/{id}", RL_IP_PATH, 5, 60, "5 per 1 minute"},
    {HN_GET, "/api/v2/users/{id}", RL_IP_PATH, 60, 60, "60 per 1 minute"},
    {HN_POST, "/api/v2/kudos/transfer", RL_KEY_PATH, 1, 1, "1 per 1 second"},
    {HN_POST, "/api/v2/kudos/transfer", RL_KEY_PATH, 90, 3600, "90 per 1 hour"},
    {HN_PUT, "/api/v2/workers/{id}", RL_IP_PATH, 30, 60, "30 per 1 minute"},
    {HN_PUT, "/api/v2/sharedkeys", RL_IP_PATH, 5, 60, "5 per 1 minute"},
    {HN_PUT, "/api/v2/status/modes", RL_IP_PATH, 30, 60, "30 per 1 minute"},
};

/* The anonymous key's generate limit per key is 60/s (its IP limits still
 * hold), as is every key's from a whitelisted IP. */
#define ANON_KEY "0000000000"
#define ANON_KEY_LIMIT 60
#define SWEEP_EVERY 4096 /* puts between sweeps of finished windows */

typedef struct rl_window {
    int64_t start_s;
    int period_s;
    int count;
    char key[]; /* the map key */
} rl_window;

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static bool is_loopback(const char *ip) {
    return !ip || strncmp(ip, "127.", 4) == 0 || strcmp(ip, "::1") == 0 ||
           strncmp(ip, "::ffff:127.", 11) == 0;
}

/* Drops windows that have ended (caller holds rl_lock): collected first,
 * then deleted, since the map must not change during a walk. */
static void sweep(br_mod *m, int64_t now) {
    rl_window **dead = malloc((m->windows.len + 1) * sizeof(*dead));
    if (!dead)
        return;
    size_t n = 0, pos = 0;
    const char *k;
    void *v;
    while (br_map_next(&m->windows, &pos, &k, &v)) {
        rl_window *w = v;
        if (now - w->start_s >= w->period_s)
            dead[n++] = w;
    }
    for (size_t i = 0; i < n; i++) {
        br_map_del(&m->windows, dead[i]->key);
        free(dead[i]);
    }
    free(dead);
}

/* Counts one hit; true when it is over the limit. */
static bool hit(br_mod *m, const char *key, int count, int period_s, int64_t now) {
    bool over = false;
    pthread_mutex_lock(&m->rl_lock);
    rl_window *w = br_map_get(&m->windows, key);
    if (!w) {
        size_t len = strlen(key) + 1;
        w = malloc(sizeof(*w) + len);
        if (!w) {
            pthread_mutex_unlock(&m->rl_lock);
            return false;
        }
        memcpy(w->key, key, len);
        w->start_s = now;
        w->period_s = period_s;
        w->count = 0;
        if (br_map_put(&m->windows, w->key, w) != 0) {
            free(w);
            pthread_mutex_unlock(&m->rl_lock);
            return false;
        }
        if (++m->rl_puts % SWEEP_EVERY == 0)
            sweep(m, now);
    }
    if (now - w->start_s >= w->period_s) {
        w->start_s = now;
        w->count = 0;
    }
    if (w->count >= count)
        over = true;
    else
        w->count++;
    pthread_mutex_unlock(&m->rl_lock);
    return over;
}

static hn_rc refuse(broker *b, hn_request *req, const char *text, int period_s, hn_error *err) {
    char retry[16];
    snprintf(retry, sizeof(retry), "%d", period_s);
    b->api->resp_header(req, "Retry-After", retry);
    return b->api->error(err, 429, "TooManyRequests", "Rate limit exceeded: %s", text);
}

hn_rc br_rate_limit_hook(void *state, hn_request *req, const char *route, hn_error *err) {
    broker *b = state;
    br_mod *m = b->mod;
    if (!b->conf->rate_limits || !route)
        return HN_OK;
    if (strcmp(route, "/api/v2/status/heartbeat") == 0)
        return HN_OK;
    const hn_api *api = b->api;
    const char *ip = api->req_client_ip(req);
    if (is_loopback(ip) && !b->conf->rate_limit_loopback)
        return HN_OK;
    unsigned method = api->req_method(req);
    const char *path = api->req_path(req);
    int64_t now = br_now_ms() / 1000;
    char key[600];
    bool own = false;
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        const rl_limit *l = &limits[i];
        if (strcmp(l->route, route) != 0)
            continue;
        own = true; /* the route has limits of its own: no default */
        if (l->methods && !(l->methods & method))
            continue;
        int count = l->count;
        switch (l->scope) {
        case RL_IP:
            snprintf(key, sizeof(key), "%zu|%s", i, ip ? ip : "");
            break;
        case RL_IP_PATH:
            snprintf(key, sizeof(key), "%zu|%s|%.400s", i, ip ? ip : "", path);
            break;
        case RL_KEY_PATH: {
            const char *apikey = api->req_header(req, "apikey");
            if (!apikey || !*apikey)
                continue;
            if (strcmp(apikey, ANON_KEY) == 0 && count < ANON_KEY_LIMIT)
                count = ANON_KEY_LIMIT;
            /* a hash: raw keys are never kept */
            snprintf(key, sizeof(key), "%zu|k%016llx|%.400s", i,
                     (unsigned long long)fnv1a(apikey), path);
            break;
        }
        }
        if (hit(m, key, count, l->period_s, now))
            return refuse(b, req, l->text, l->period_s, err);
    }
    if (!own && b->conf->rate_limit_default > 0) {
        snprintf(key, sizeof(key), "d|%s|%.400s", ip ? ip : "", route);
        char text[48];
        snprintf(text, sizeof(text), "%lld per 1 minute", b->conf->rate_limit_default);
        if (hit(m, key, (int)b->conf->rate_limit_default, 60, now))
            return refuse(b, req, text, 60, err);
    }
    return HN_OK;
}

void br_rate_limit_free(br_mod *m) {
    size_t pos = 0;
    const char *k;
    void *v;
    while (br_map_next(&m->windows, &pos, &k, &v))
        free(v);
    br_map_free(&m->windows);
}
