/* Fuzz target: what a client controls in a request line and body, run
 * through the core exactly as a request is: the %XX path decoding
 * (hn_req_set_path), route matching with {param} captures (router.c), the
 * query-string splitter behind req_query, and the JSON body reader behind
 * req_json (size limit aside: evhttp enforces that before), and the
 * X-Forwarded-For reading behind req_client_ip (the header's value is the
 * query's "xff" parameter, from a loopback peer so that it is believed).
 *
 * Input: METHOD_BYTE PATH ['?' QUERY] ['\n' BODY]. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "http_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void handler(hn_request *req, void *state) {
    (void)req;
    (void)state;
}

/* The shapes of the routes plugins register (literal, one and two params,
 * params at the end and in the middle). */
static const char *const ROUTES[] = {
    "/api/v2/generate/async",        "/api/v2/generate/status/{id}",
    "/api/v2/generate/check/{id}",   "/api/v2/generate/pop",
    "/api/v2/workers/{id}",          "/api/v2/users/{user_id}",
    "/api/v2/images/{key}",          "/api/v2/teams/{team_id}/members/{user_id}",
    "/api/v2/status/heartbeat",      "/api/v2/status/models/{model_name}",
};

static hn_api g_api;

static void setup_once(void) {
    static int done;
    if (done)
        return;
    done = 1;
    char err[256];
    for (size_t i = 0; i < sizeof ROUTES / sizeof ROUTES[0]; i++)
        if (hn_router_add("fuzz", HN_GET | HN_POST, ROUTES[i], handler, NULL, err, sizeof err) != 0)
            abort();
    hn_router_freeze();
    hn_req_fill_api(&g_api);
}

static void request_free(hn_request *r) {
    hn_route_match_clear(&r->match);
    evhttp_clear_headers(&r->local_headers);
    free(r->query_buf);
    free(r->query);
    json_decref(r->json);
    free(r->json_err);
    free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup_once();
    if (size < 1)
        return 0;
    unsigned method = (data[0] & 1) ? HN_POST : HN_GET;
    /* one NUL-terminated copy; the parts below point into it */
    char *text = malloc(size);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    size_t text_len = size - 1;
    char *nl = memchr(text, '\n', text_len);
    const char *body = nl != NULL ? nl + 1 : NULL;
    size_t body_len = nl != NULL ? text_len - (size_t)(nl + 1 - text) : 0;
    size_t line_len = nl != NULL ? (size_t)(nl - text) : strnlen(text, text_len);
    char *q = memchr(text, '?', line_len);
    size_t path_len = q != NULL ? (size_t)(q - text) : line_len;
    if (nl != NULL)
        *nl = '\0';

    hn_request *r = hn_req_new(path_len);
    r->method = method;
    hn_req_set_path(r, text, path_len);
    r->query_raw = q != NULL ? q + 1 : NULL;
    r->body = body;
    r->body_len = body_len;
    r->flags |= REQ_BODY_DONE;

    if (!(r->flags & REQ_BAD_PATH) && hn_router_match(method, r->path, &r->match) == 0) {
        for (int i = 0; i < r->match.nparams; i++) {
            const char *v = g_api.req_param(r, r->match.names[i]);
            if (v == NULL || strlen(v) > path_len)
                abort(); /* a capture can only come from the path */
        }
    }
    (void)hn_router_methods(r->path);
    static const char *const KEYS[] = {"sig", "expires", "id", "", "a b", "%"};
    for (size_t i = 0; i < sizeof KEYS / sizeof KEYS[0]; i++)
        (void)g_api.req_query(r, KEYS[i]);
    const char *xff = g_api.req_query(r, "xff");
    snprintf(r->peer, sizeof r->peer, "127.0.0.1");
    r->in_headers = &r->local_headers;
    if (xff != NULL)
        evhttp_add_header(&r->local_headers, "X-Forwarded-For", xff);
    const char *ip = g_api.req_client_ip(r);
    if (ip == NULL || strlen(ip) >= sizeof r->ip)
        abort();
    hn_error err;
    (void)g_api.req_json(r, &err);
    request_free(r);
    free(text);
    return 0;
}
