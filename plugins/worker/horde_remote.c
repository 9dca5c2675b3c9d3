/* worker: the `horde` provider "remote": the horde API v2 over HTTP(S) with
 * libcurl, to a horde-node broker or the public AI Horde. Stateless apart
 * from its base URL, so any thread may call it at once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_client.h"
#include "worker.h"

typedef struct horde_remote {
    char base[1024];        /* horde_url without a trailing '/' ("https://aihorde.net/api") */
    char client_agent[300]; /* "Client-Agent: ..." header line */
    long timeout_s;
} horde_remote;

void *wk_horde_remote_new(const char *base, const char *client_agent, long timeout_s, char *err,
                          size_t errlen) {
    size_t n = base ? strlen(base) : 0;
    if (n == 0 || n >= 1000) {
        snprintf(err, errlen, "horde_url is empty or too long");
        return NULL;
    }
    horde_remote *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    while (n > 0 && base[n - 1] == '/')
        n--;
    snprintf(r->base, sizeof r->base, "%.*s", (int)n, base);
    snprintf(r->client_agent, sizeof r->client_agent, "Client-Agent: %s", client_agent);
    r->timeout_s = timeout_s;
    return r;
}

void wk_horde_remote_free(void *state) {
    free(state);
}

static hn_rc remote_call(void *state, const char *method, const char *path, const char *apikey,
                         const json_t *body, int *status, json_t **response, hn_error *err) {
    horde_remote *r = state;
    *response = NULL;
    char url[2048];
    snprintf(url, sizeof url, "%s%s", r->base, path);
    char key_hdr[200];
    snprintf(key_hdr, sizeof key_hdr, "apikey: %s", apikey ? apikey : "");
    const char *headers[5] = {r->client_agent, "Accept: application/json", NULL, NULL, NULL};
    size_t h = 2;
    if (apikey)
        headers[h++] = key_hdr;
    char *text = NULL;
    if (body) {
        headers[h++] = "Content-Type: application/json";
        text = json_dumps(body, JSON_COMPACT);
        if (!text) {
            snprintf(err->message, sizeof err->message, "out of memory");
            return HN_ERROR;
        }
    }
    wk_http_req req = {.method = method,
                       .url = url,
                       .headers = headers,
                       .body = text,
                       .body_len = text ? strlen(text) : 0,
                       .timeout_s = r->timeout_s};
    char *resp = NULL;
    size_t resp_len = 0;
    int rc = wk_http_do(&req, status, &resp, &resp_len, err->message, sizeof err->message);
    free(text);
    if (rc != 0) {
        err->status = 503;
        snprintf(err->rc, sizeof err->rc, "HordeUnreachable");
        return HN_ERROR;
    }
    *response = json_loadb(resp, resp_len, 0, NULL);
    free(resp);
    return HN_OK;
}

static hn_rc remote_upload(void *state, const char *url, const void *data, size_t len,
                           int *status, hn_error *err) {
    horde_remote *r = state;
    (void)r;
    /* presigned URLs: raw bytes, no Content-Type (the public workers send none) */
    wk_http_req req = {.method = "PUT",
                       .url = url,
                       .body = data,
                       .body_len = len,
                       .timeout_s = r->timeout_s > 0 ? r->timeout_s : 30};
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

const hn_horde_vt wk_horde_remote_vt = {
    .size = sizeof(hn_horde_vt),
    .version = HN_HORDE_VERSION,
    .call = remote_call,
    .upload = remote_upload,
};
