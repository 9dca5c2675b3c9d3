/* Private to the HTTP files of core/: http.c (server, loops, listening),
 * http_request.c (the hn_request object: dispatch, accessors, answers) and
 * http_local.c (in-process requests). */
#ifndef HN_HTTP_INTERNAL_H
#define HN_HTTP_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>

#include <event2/keyvalq_struct.h>

#include "core.h"

struct evhttp;
struct evhttp_request;
struct evhttp_bound_socket;
struct event;

/* One HTTP loop thread: its own base and evhttp on the shared port. Every
 * member is touched only by its thread, except those said otherwise. */
typedef struct http_loop {
    int index;
    pthread_t thread; /* written before the thread starts */
    bool started;     /* thread created (start/stop thread only) */
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    hn_loop_inbox *inbox;    /* written by the thread before it reports ready */
    struct hn_request *live; /* dispatched, not yet answered (suspended) */
    int inflight;            /* dispatched, not answered */
    int unsent;              /* answered while stopping, not yet written out */
    bool stopping;           /* draining: no new connections, Connection: close */
    bool closed;             /* torn down: requests that still arrive are refused */
    struct event *drain_ev;
} http_loop;

/* An in-process request's caller, waiting in local_request. Lives on the
 * caller's stack: never touched after `done` is set under `lock`. */
typedef struct local_call {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    int status;
    char *body; /* malloc'd, NUL-terminated; handed to the caller */
    size_t len;
} local_call;

typedef struct query_pair {
    char *key, *value; /* decoded, point into hn_request.query_buf */
} query_pair;

enum {
    REQ_IN_HANDLER = 1u << 0,
    REQ_SUSPENDED = 1u << 1,
    REQ_ANSWERED = 1u << 2,
    REQ_ORPHAN = 1u << 3,   /* its loop has gone: answering only frees it */
    REQ_BAD_PATH = 1u << 4, /* the decoded path holds a NUL byte */
    REQ_QUERY_DONE = 1u << 5,
    REQ_BODY_DONE = 1u << 6,
    REQ_JSON_DONE = 1u << 7,
    REQ_IP_DONE = 1u << 8,
    REQ_LIVE = 1u << 9 /* on loop->live */
};

struct hn_request {
    http_loop *loop;           /* NULL once orphaned */
    hn_loop_inbox *home;       /* inbox of the owning loop (req_post) */
    pthread_t thread;          /* the owning loop's thread */
    struct evhttp_request *ev; /* NULL for in-process requests and after the answer */
    local_call *call;          /* in-process requests until answered */
    unsigned method;           /* HN_GET ...; 0 for a method no route can have */
    unsigned flags;
    struct hn_request *prev, *next; /* loop->live */
    struct evkeyvalq *in_headers;   /* evhttp's, or &local_headers; NULL when orphaned */
    struct evkeyvalq local_headers;
    const char *query_raw; /* undecoded query, NULL if none */
    char *query_buf;       /* decoded copy the pairs point into */
    query_pair *query;
    int nquery;
    const char *body; /* NUL-terminated, body_len bytes before the NUL */
    size_t body_len;
    char *local_body;   /* in-process requests: owned copy of the body */
    json_t *json;       /* cached req_json result */
    hn_error *json_err; /* cached req_json failure (malloc'd) */
    char peer[64];      /* socket peer address */
    char ip[64];        /* client address after X-Forwarded-For */
    hn_route_match match;
    char path[]; /* decoded path */
};

/* The one config of the running server (read-only while it runs). */
typedef struct http_settings {
    size_t max_body;
    int drain_ms; /* how long hn_http_stop waits for suspended requests */
    char *node_name;
} http_settings;
extern http_settings hn_http_settings;

/* http_request.c */
hn_request *hn_req_new(size_t pathcap);
/* Decodes %XX of `raw` (len bytes) into r->path; a NUL byte marks it bad. */
void hn_req_set_path(hn_request *r, const char *raw, size_t len);
/* Routes r and runs its handler on the calling (owning) loop thread. */
void hn_req_dispatch(hn_request *r);
/* Answers with the horde envelope {"message","rc"}. */
void hn_req_answer_error(hn_request *r, int status, const char *rc, const char *message);
/* The loop is going: answers in-process callers 503, detaches the rest from
 * evhttp so that a late answer only frees them. */
void hn_req_orphan(hn_request *r);
void hn_req_fill_api(hn_api *api);

/* http.c: the HTTP loop of the calling thread, NULL off the HTTP loops. */
http_loop *hn_http_current_loop(void);
/* http.c: a request of `loop` was answered or its answer written out. */
void hn_http_request_done(http_loop *loop);
/* Picks a running loop for an in-process request and posts fn(arg) to it.
 * Returns 0, or -1 when the server is not running. */
int hn_http_post_any(hn_work_fn *fn, void *arg);

/* http_local.c */
int hn_http_local_request(unsigned method, const char *path, const char *const *headers,
                          const void *body, size_t len, int *status, char **resp_body,
                          size_t *resp_len);

#endif
