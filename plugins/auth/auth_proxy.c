/* auth: service-account proxies (spec §0 headers). A request carrying
 * `Proxy-Authorization: <passkey>` and `Proxied-For: <ip>`, where the passkey
 * is some non-flagged user's `proxy_passkey` (PUT /users/{id}
 * generate_proxy_passkey, service accounts only), counts as coming from that
 * ip: rate limits, IP timeouts and everything else see it (hook
 * http_request, registered first, so it runs before the broker's limits).
 * Otherwise the headers are ignored, as on the horde.
 *
 * The horde keeps the passkeys in a cache refreshed every 5 s; so does auth
 * (a request with the header reloads a cache older than that, on its loop
 * thread: one small query at most every 5 s, and only proxies pay it). A
 * passkey made on this node resets the cache at once. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"

#define PROXY_CACHE_MS 5000

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reloads the passkeys of non-flagged users (caller holds proxy_mu). */
static void reload_locked(auth_state *a) {
    a->n_proxy_keys = 0;
    a->proxy_loaded_ms = now_ms();
    hn_error err;
    hn_db *db = a->db.vt ? a->db.vt->acquire(a->db.state, &err) : NULL;
    if (!db)
        return;
    hn_value args[] = {HN_V_INT(HN_ROLE_FLAGGED)};
    hn_stmt *st = a->db.vt->query(db,
                                  "SELECT proxy_passkey FROM users WHERE proxy_passkey IS NOT "
                                  "NULL AND proxy_passkey <> '' AND (roles & ?) = 0",
                                  args, 1, &err);
    while (st && a->db.vt->step(st, &err) == 1) {
        const char *k = a->db.vt->col_text(st, 0);
        if (strlen(k) >= sizeof a->proxy_keys[0])
            continue;
        if (a->n_proxy_keys == a->cap_proxy_keys) {
            size_t cap = a->cap_proxy_keys ? a->cap_proxy_keys * 2 : 8;
            void *grown = realloc(a->proxy_keys, cap * sizeof a->proxy_keys[0]);
            if (!grown)
                break;
            a->proxy_keys = grown;
            a->cap_proxy_keys = cap;
        }
        strcpy(a->proxy_keys[a->n_proxy_keys++], k);
    }
    if (st)
        a->db.vt->finish(st);
    a->db.vt->release(a->db.state, db);
}

/* Constant-time comparison: a passkey is a secret. */
static bool same_key(const char *x, const char *y) {
    size_t n = strlen(x);
    if (n != strlen(y))
        return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(x[i] ^ y[i]);
    return diff == 0;
}

static bool known_passkey(auth_state *a, const char *key) {
    bool found = false;
    pthread_mutex_lock(&a->proxy_mu);
    if (a->proxy_loaded_ms == 0 || now_ms() - a->proxy_loaded_ms > PROXY_CACHE_MS)
        reload_locked(a);
    for (size_t i = 0; i < a->n_proxy_keys; i++)
        found |= same_key(a->proxy_keys[i], key);
    pthread_mutex_unlock(&a->proxy_mu);
    return found;
}

hn_rc auth_proxy_http_request(void *state, hn_request *req, const char *route, hn_error *err) {
    auth_state *a = state;
    (void)route, (void)err;
    const char *key = a->api->req_header(req, "Proxy-Authorization");
    const char *ip = a->api->req_header(req, "Proxied-For");
    if (!key || !*key || !ip || !*ip || !HN_API_HAS(a->api, req_set_client_ip))
        return HN_OK;
    while (*ip == ' ')
        ip++;
    unsigned char addr[16];
    if (inet_pton(AF_INET, ip, addr) != 1 && inet_pton(AF_INET6, ip, addr) != 1)
        return HN_OK; /* not an address: ignored */
    if (known_passkey(a, key))
        a->api->req_set_client_ip(req, ip);
    return HN_OK;
}

void auth_proxy_invalidate(auth_state *a) {
    pthread_mutex_lock(&a->proxy_mu);
    a->proxy_loaded_ms = 0;
    pthread_mutex_unlock(&a->proxy_mu);
}
