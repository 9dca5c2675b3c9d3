/* broker: POST /api/v2/dev/test-user, the horde's test-only user bootstrap
 * (spec/horde-api.md §2, last paragraph), so that the ecosystem's own test
 * tools (the horde's Locust suite, the horde SDK's server-backed tests) can
 * get a key from a horde-node.
 *
 * Routed only when plugins.broker.dev_test_user = true (else 404), and only
 * for loopback clients (else 403). Body {username, oauth_id, moderator,
 * trusted, kudos}; answers 201 for a new user, 200 for an existing one (whose
 * key is replaced, since keys are stored hashed), with {api_key, user_id,
 * username, alias, kudos, trusted, moderator, created}. Users come from hook
 * user_ensure (auth); roles and kudos of an existing user, and the kudos of
 * a new one, go through hook user_update as an admin would send them
 * (`trusted`, `moderator`, `kudos`). oauth_id is accepted and ignored. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "moderation.h"

typedef struct dev_ctx {
    broker *b;
    hn_request *req;
    char alias[128];
    bool moderator, trusted;
    long long kudos;
    hn_user user;
    char apikey[128];
    bool created;
    hn_rc rc;
    hn_error err;
    json_t *changed; /* what user_update reported */
} dev_ctx;

static bool is_loopback(const char *ip) {
    return ip && (strncmp(ip, "127.", 4) == 0 || strcmp(ip, "::1") == 0);
}

/* On a pool thread: user_ensure blocks on storage. */
static void dev_work(void *arg) {
    dev_ctx *c = arg;
    const hn_api *api = c->b->api;
    uint32_t roles = (c->moderator ? HN_ROLE_MODERATOR : 0) | (c->trusted ? HN_ROLE_TRUSTED : 0);
    memset(&c->err, 0, sizeof(c->err));
    /* new_key = false first, to learn whether the user exists (a new user's
     * key comes back; an existing one's does not, so ask for a fresh key) */
    c->rc = hn_run_user_ensure(api, c->alias, roles, false, &c->user, c->apikey,
                               sizeof(c->apikey), &c->err);
    if (c->rc != HN_OK)
        return;
    c->created = c->apikey[0] != '\0';
    if (!c->created) {
        c->rc = hn_run_user_ensure(api, c->alias, roles, true, &c->user, c->apikey,
                                   sizeof(c->apikey), &c->err);
        if (c->rc != HN_OK)
            return;
    }
    /* roles of an existing user and the kudos, as an admin's PUT /users/{id} */
    json_t *changes = json_object();
    if (!c->created) {
        json_object_set_new(changes, "trusted", json_boolean(c->trusted));
        json_object_set_new(changes, "moderator", json_boolean(c->moderator));
    }
    if (c->kudos > 0)
        json_object_set_new(changes, "kudos", json_integer(c->kudos));
    c->changed = json_object();
    if (json_object_size(changes) > 0) {
        hn_user admin = {.size = sizeof(hn_user), .id = 0, .roles = HN_ROLE_ADMIN};
        snprintf(admin.username, sizeof(admin.username), "dev-test-user#0");
        hn_error uerr = {0};
        if (hn_run_user_update(api, &admin, c->user.id, changes, c->changed, &uerr) == HN_ERROR)
            api->log(c->b->self, HN_LOG_WARN, "dev test-user %s: user_update: %s", c->alias,
                     uerr.message);
    }
    json_decref(changes);
}

static void dev_done(void *arg) {
    dev_ctx *c = arg;
    broker *b = c->b;
    if (c->rc == HN_DECLINED) {
        br_fail(b, c->req, 500, "BadConfig", "No plugin makes users (load auth).");
    } else if (c->rc != HN_OK) {
        if (!c->err.status)
            c->err.status = 400;
        b->api->respond_error(c->req, &c->err);
    } else {
        const json_t *nk = json_object_get(c->changed, "new_kudos");
        double kudos = nk ? json_number_value(nk) : (double)c->kudos;
        char alias[128];
        snprintf(alias, sizeof(alias), "%s", c->user.username);
        char *hash = strchr(alias, '#');
        if (hash)
            *hash = '\0';
        b->api->respond_json(
            c->req, c->created ? 201 : 200,
            json_pack("{s:s, s:I, s:s, s:s, s:f, s:b, s:b, s:b}", "api_key", c->apikey,
                      "user_id", (json_int_t)c->user.id, "username", c->user.username, "alias",
                      alias, "kudos", kudos, "trusted", c->trusted, "moderator", c->moderator,
                      "created", c->created));
    }
    json_decref(c->changed);
    free(c);
}

void br_route_dev_test_user(hn_request *req, void *state) {
    broker *b = state;
    if (!is_loopback(b->api->req_client_ip(req))) {
        br_fail(b, req, 403, "Forbidden", "The test-user bootstrap answers loopback clients only.");
        return;
    }
    json_t *body = br_mod_body(b, req);
    if (!body)
        return;
    const char *name = br_jstr(body, "username");
    if (!name || !*name) {
        br_respond_schema_errors(
            b, req, json_pack("{s:s}", "username", "Missing required parameter in the JSON body"));
        return;
    }
    const json_t *jk = json_object_get(body, "kudos");
    if (jk && (!json_is_integer(jk) || json_integer_value(jk) < 0)) {
        br_respond_schema_errors(b, req,
                                 json_pack("{s:s}", "kudos", "kudos must be an integer >= 0"));
        return;
    }
    dev_ctx *c = calloc(1, sizeof(*c));
    if (!c) {
        br_fail(b, req, 500, "InternalServerError", "out of memory");
        return;
    }
    c->b = b;
    c->req = req;
    snprintf(c->alias, sizeof(c->alias), "%s", name);
    char *hash = strchr(c->alias, '#'); /* "name#id" is accepted: the alias is the name */
    if (hash)
        *hash = '\0';
    c->moderator = br_jbool(body, "moderator", false);
    c->trusted = br_jbool(body, "trusted", false);
    c->kudos = jk ? (long long)json_integer_value(jk) : 0;
    b->api->req_suspend(req);
    if (b->api->work_submit(dev_work, dev_done, c) != 0) {
        br_fail(b, req, 503, "ServiceUnavailable", "The node is stopping.");
        free(c);
    }
}
