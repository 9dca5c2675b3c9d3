/* worker: the `horde` provider "local": the same horde API v2 JSON handed
 * to the broker plugin of this process through api->local_request (no
 * socket). local_request blocks until the broker answers, so it is only
 * called from the worker's own threads (the core refuses loop threads).
 * Upload URLs and source image URLs that point at this node are served the
 * same way; any other URL goes out over libcurl. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_client.h"
#include "worker.h"

typedef struct horde_local {
    const hn_api *api;
    char client_agent[256];
} horde_local;

void *wk_horde_local_new(const hn_api *api, const char *client_agent) {
    horde_local *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->api = api;
    wk_copy(l->client_agent, sizeof l->client_agent, client_agent);
    return l;
}

void wk_horde_local_free(void *state) {
    free(state);
}

static unsigned method_bit(const char *m) {
    static const struct {
        const char *name;
        unsigned bit;
    } t[] = {{"GET", HN_GET},       {"POST", HN_POST},   {"PUT", HN_PUT},
             {"DELETE", HN_DELETE}, {"PATCH", HN_PATCH}, {"HEAD", HN_HEAD}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (strcmp(t[i].name, m) == 0)
            return t[i].bit;
    return 0;
}

static hn_rc local_call(void *state, const char *method, const char *path, const char *apikey,
                        const json_t *body, int *status, json_t **response, hn_error *err) {
    horde_local *l = state;
    *response = NULL;
    char full[2048];
    snprintf(full, sizeof full, "/api%s", path); /* paths are below /api, like horde_url */
    const char *headers[9] = {"Client-Agent", l->client_agent, "Content-Type", "application/json",
                              NULL, NULL, NULL, NULL, NULL};
    if (apikey) {
        headers[4] = "apikey";
        headers[5] = apikey;
    }
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (body && !text)
        return l->api->error(err, 500, "OutOfMemory", "out of memory");
    char *resp = NULL;
    size_t resp_len = 0;
    int rc = l->api->local_request(method_bit(method), full, headers, text,
                                   text ? strlen(text) : 0, status, &resp, &resp_len);
    free(text);
    if (rc != 0)
        return l->api->error(err, 503, "HordeUnreachable",
                             "the local broker did not answer %s %s (is the node stopping?)",
                             method, path);
    *response = json_loadb(resp, resp_len, 0, NULL);
    free(resp);
    return HN_OK;
}

/* The path (with query) of url when it points at this node, else NULL. */
static const char *own_path(const hn_api *api, const char *url) {
    const char *base = api->public_url ? api->public_url() : NULL;
    size_t n = base ? strlen(base) : 0;
    if (n == 0 || strncmp(url, base, n) != 0 || url[n] != '/')
        return NULL;
    return url + n;
}

static hn_rc local_upload(void *state, const char *url, const void *data, size_t len, int *status,
                          hn_error *err) {
    horde_local *l = state;
    const char *path = own_path(l->api, url);
    if (!path) {
        /* an image store elsewhere (a bucket): a plain PUT */
        wk_http_req req = {.method = "PUT", .url = url, .body = data, .body_len = len,
                           .timeout_s = 60};
        char *resp = NULL;
        int rc = wk_http_do(&req, status, &resp, NULL, err->message, sizeof err->message);
        free(resp);
        if (rc != 0) {
            err->status = 503;
            snprintf(err->rc, sizeof err->rc, "UploadFailed");
            return HN_ERROR;
        }
        return HN_OK;
    }
    char *resp = NULL;
    size_t resp_len = 0;
    if (l->api->local_request(HN_PUT, path, NULL, data, len, status, &resp, &resp_len) != 0)
        return l->api->error(err, 503, "UploadFailed", "the local node did not take the upload");
    free(resp);
    return HN_OK;
}

const hn_horde_vt wk_horde_local_vt = {
    .size = sizeof(hn_horde_vt),
    .version = HN_HORDE_VERSION,
    .call = local_call,
    .upload = local_upload,
};

int wk_fetch_url(wk_state *w, const char *url, void **data, size_t *len, char *err,
                 size_t errlen) {
    *data = NULL;
    *len = 0;
    int status = 0;
    char *resp = NULL;
    size_t resp_len = 0;
    const char *path = w->horde_is_local ? own_path(w->api, url) : NULL;
    if (path) {
        if (w->api->local_request(HN_GET, path, NULL, NULL, 0, &status, &resp, &resp_len) != 0) {
            snprintf(err, errlen, "GET %s: the local node did not answer", url);
            return -1;
        }
    } else {
        wk_http_req req = {.method = "GET", .url = url, .timeout_s = 30,
                           .max_response = (size_t)32 << 20};
        if (wk_http_do(&req, &status, &resp, &resp_len, err, errlen) != 0)
            return -1;
    }
    if (status != 200) {
        free(resp);
        snprintf(err, errlen, "GET %s: HTTP %d", url, status);
        return -1;
    }
    *data = resp;
    *len = resp_len;
    return 0;
}
