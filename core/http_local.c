/* In-process requests (hn_api.local_request): the worker's `local` horde
 * talks to the broker plugin in the same process with the same JSON and no
 * socket.
 *
 * The caller is on a thread of its own (a pool or plugin thread): the
 * request is built there, handed to one of the HTTP loops (round robin)
 * through its inbox, routed and answered there exactly as a socket request
 * would be (handlers may suspend it), and the caller waits on a condition
 * variable for the answer. Called from a loop thread it would block that
 * loop, maybe on itself: it refuses. */
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "http_internal.h"

static void local_dispatch(void *arg) {
    hn_request *r = arg;
    http_loop *L = hn_http_current_loop();
    r->thread = pthread_self();
    if (L == NULL || L->closed) { /* posted just before its loop went */
        hn_req_answer_error(r, 503, "ServiceUnavailable", "The node is stopping.");
        return;
    }
    r->loop = L;
    r->home = L->inbox;
    hn_req_dispatch(r);
}

static unsigned one_method(unsigned method) {
    /* A single known method bit; anything else is a method no route has. */
    return method != 0 && (method & (method - 1)) == 0 && method <= HN_OPTIONS ? method : 0;
}

int hn_http_local_request(unsigned method, const char *path, const char *const *headers,
                          const void *body, size_t len, int *status, char **resp_body,
                          size_t *resp_len) {
    if (path == NULL || status == NULL || resp_body == NULL || (body == NULL && len > 0))
        return -1;
    if (hn_loop_current() != NULL) {
        hn_logf(NULL, HN_LOG_ERROR,
                "local_request %s called on a loop thread: it would block the loop", path);
        return -1;
    }
    const char *q = strchr(path, '?');
    size_t plen = q != NULL ? (size_t)(q - path) : strlen(path);
    size_t qlen = q != NULL ? strlen(q + 1) : 0;
    /* path[] holds the decoded path, then a copy of the raw query. */
    hn_request *r = hn_req_new(plen + 1 + qlen + 1);
    if (r == NULL)
        return -1;
    r->thread = pthread_self(); /* until a loop takes it */
    hn_req_set_path(r, path, plen);
    if (q != NULL) {
        char *query = r->path + plen + 1;
        memcpy(query, q + 1, qlen + 1);
        r->query_raw = query;
    }
    r->method = one_method(method);
    for (size_t i = 0; headers != NULL && headers[i] != NULL && headers[i + 1] != NULL; i += 2)
        evhttp_add_header(&r->local_headers, headers[i], headers[i + 1]);
    r->in_headers = &r->local_headers;
    snprintf(r->peer, sizeof r->peer, "127.0.0.1");

    local_call call = {.done = false};
    pthread_mutex_init(&call.lock, NULL);
    pthread_cond_init(&call.cond, NULL);
    r->call = &call;

    size_t max = hn_http_settings.max_body;
    r->local_body = malloc(len + 1);
    if (r->local_body != NULL) {
        if (len > 0)
            memcpy(r->local_body, body, len);
        r->local_body[len] = '\0';
        r->body = r->local_body;
        r->body_len = len;
        r->flags |= REQ_BODY_DONE;
    }
    int rc = -1;
    if (r->local_body == NULL) {
        hn_req_answer_error(r, 500, "InternalServerError", "out of memory");
    } else if (max > 0 && len > max) {
        /* The limit a socket request meets in evhttp, here with the envelope. */
        char msg[128];
        snprintf(msg, sizeof msg, "The request body is larger than %zu bytes.", max);
        hn_req_answer_error(r, 413, "RequestEntityTooLarge", msg);
    } else if (hn_http_post_any(local_dispatch, r) != 0) {
        r->call = NULL;
        hn_req_answer_error(r, 503, "ServiceUnavailable", "The node is not serving."); /* frees r */
        goto out;
    }
    pthread_mutex_lock(&call.lock);
    while (!call.done)
        pthread_cond_wait(&call.cond, &call.lock);
    pthread_mutex_unlock(&call.lock);
    if (call.body != NULL) {
        *status = call.status;
        *resp_body = call.body;
        if (resp_len != NULL)
            *resp_len = call.len;
        rc = 0;
    }
out:
    pthread_cond_destroy(&call.cond);
    pthread_mutex_destroy(&call.lock);
    return rc;
}
