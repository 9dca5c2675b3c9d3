/* The hn_request object: routing one request, what a handler reads from it,
 * and the one answer it gets.
 *
 * A request belongs to the loop thread that dispatched it. Handlers answer
 * on that thread; an answer from another thread (a plugin bug the api
 * forbids) is not trusted to be safe: it is logged and carried over to the
 * owning loop through its inbox, so libevent is only ever touched by its own
 * thread. The object is freed once answered, or after its handler returns if
 * the handler answered from inside.
 *
 * Every answer carries the horde's permissive CORS headers, Horde-Node and
 * its Content-Type (JSON: application/json; charset=utf-8). */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "http_internal.h"

static const char JSON_TYPE[] = "application/json; charset=utf-8";

/* ---- life ---------------------------------------------------------------------- */

hn_request *hn_req_new(size_t pathcap) {
    hn_request *r = calloc(1, sizeof *r + pathcap + 1);
    if (r != NULL)
        TAILQ_INIT(&r->local_headers);
    return r;
}

static void req_free(hn_request *r) {
    hn_route_match_clear(&r->match);
    evhttp_clear_headers(&r->local_headers);
    free(r->query_buf);
    free(r->query);
    free(r->local_body);
    json_decref(r->json);
    free(r->json_err);
    free(r);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* %XX-decodes src into dst (room for len + 1); '+' becomes ' ' if plus.
 * A '%' not followed by two hex digits stays as it is (werkzeug does the
 * same). Returns the decoded length; *nul is set when a NUL byte came out. */
static size_t pct_decode(char *dst, const char *src, size_t len, bool plus, bool *nul) {
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        if (c == '%' && i + 2 < len) {
            int hi = hexval(src[i + 1]), lo = hexval(src[i + 2]);
            if (hi >= 0 && lo >= 0) {
                c = (char)(hi * 16 + lo);
                i += 2;
                if (c == '\0' && nul != NULL)
                    *nul = true;
            }
        } else if (c == '+' && plus) {
            c = ' ';
        }
        dst[o++] = c;
    }
    dst[o] = '\0';
    return o;
}

void hn_req_set_path(hn_request *r, const char *raw, size_t len) {
    bool nul = false;
    pct_decode(r->path, raw, len, false, &nul);
    if (nul)
        r->flags |= REQ_BAD_PATH;
}

static bool on_owner_thread(const hn_request *r) {
    return pthread_equal(pthread_self(), r->thread) != 0;
}

/* ---- answering ---------------------------------------------------------------------- */

/* An answer body: `data` (len bytes + a NUL) is freed with free_fn. */
typedef struct answer_msg {
    hn_request *r;
    int status;
    const char *ctype; /* static, or points into extra */
    char *data;
    size_t len;
    void (*free_fn)(void *);
    char extra[];
} answer_msg;

static void cleanup_ref(const void *data, size_t len, void *free_fn) {
    (void)len;
    ((void (*)(void *))free_fn)((void *)data);
}

static void add_common_headers(hn_request *r, struct evkeyvalq *h, const char *ctype) {
    (void)r;
    evhttp_remove_header(h, "Content-Type");
    evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "Horde-Node", hn_http_settings.node_name);
    evhttp_add_header(h, "Access-Control-Allow-Origin", "*");
    evhttp_add_header(h, "Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE, PATCH");
    evhttp_add_header(h, "Access-Control-Allow-Headers",
                      "Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token, "
                      "apikey, Client-Agent, X-Fields, X-Forwarded-For, Proxied-For, "
                      "Proxy-Authorization, Idempotency-Key");
}

static void unlink_live(hn_request *r) {
    if (!(r->flags & REQ_LIVE))
        return;
    http_loop *L = r->loop;
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        L->live = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    r->flags &= ~REQ_LIVE;
}

static void local_deliver(local_call *c, int status, char *data, size_t len,
                          void (*free_fn)(void *)) {
    char *body = data;
    if (data == NULL || free_fn != free) { /* the caller frees with free() */
        if (data == NULL)
            len = 0;
        body = malloc(len + 1);
        if (body != NULL) {
            if (len > 0)
                memcpy(body, data, len);
            body[len] = '\0';
        }
        if (data != NULL)
            free_fn(data);
    }
    pthread_mutex_lock(&c->lock);
    c->status = status;
    c->body = body;
    c->len = body != NULL ? len : 0;
    c->done = true;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock); /* c may be gone from here on */
}

static void answer_written(struct evhttp_request *ev, void *arg) {
    (void)ev;
    http_loop *L = arg;
    L->unsent--;
    hn_http_request_done(L);
}

/* On the owning thread: sends, then frees r unless its handler is running. */
static void answer_now(hn_request *r, int status, const char *ctype, char *data, size_t len,
                       void (*free_fn)(void *)) {
    if (status < 100 || status > 599) {
        hn_logf(NULL, HN_LOG_ERROR, "%s: answer with HTTP status %d sent as 500", r->path, status);
        status = 500;
    }
    if (r->flags & REQ_ANSWERED) {
        hn_logf(NULL, HN_LOG_ERROR,
                "%s: answered twice (route of plugin %s); second answer %d dropped", r->path,
                r->match.plugin ? r->match.plugin : "core", status);
        if (data != NULL)
            free_fn(data);
        return;
    }
    r->flags |= REQ_ANSWERED;
    if (r->ev != NULL) {
        struct evhttp_request *ev = r->ev;
        r->ev = NULL;
        struct evkeyvalq *h = evhttp_request_get_output_headers(ev);
        add_common_headers(r, h, ctype);
        http_loop *L = r->loop;
        if (L != NULL && L->stopping) {
            evhttp_add_header(h, "Connection", "close");
            L->unsent++;
            evhttp_request_set_on_complete_cb(ev, answer_written, L);
        }
        /* evhttp 2.1 would send a body even where HTTP has none. */
        bool bodyless = r->method == HN_HEAD || status == 204 || status == 304 ||
                        (status >= 100 && status < 200);
        if (r->method == HN_HEAD) {
            char n[24];
            snprintf(n, sizeof n, "%zu", len);
            evhttp_add_header(h, "Content-Length", n);
        }
        if (data != NULL) {
            if (len == 0 || bodyless ||
                evbuffer_add_reference(evhttp_request_get_output_buffer(ev), data, len, cleanup_ref,
                                       (void *)free_fn) != 0)
                free_fn(data);
        }
        evhttp_send_reply(ev, status, NULL, NULL);
    } else if (r->call != NULL) {
        local_deliver(r->call, status, data, len, free_fn);
        r->call = NULL;
    } else if (data != NULL) { /* orphaned: nobody to tell */
        free_fn(data);
    }
    http_loop *L = r->loop;
    if (r->flags & REQ_LIVE) {
        unlink_live(r);
        L->inflight--;
    }
    if (!(r->flags & REQ_IN_HANDLER))
        req_free(r);
    if (L != NULL)
        hn_http_request_done(L);
}

static void answer_task(void *arg) {
    answer_msg *a = arg;
    answer_now(a->r, a->status, a->ctype, a->data, a->len, a->free_fn);
    free(a);
}

/* Any thread. Takes `data` (freed with free_fn; may be NULL). */
static void answer(hn_request *r, int status, const char *ctype, char *data, size_t len,
                   void (*free_fn)(void *)) {
    if (r == NULL) {
        if (data != NULL)
            free_fn(data);
        return;
    }
    if (on_owner_thread(r)) {
        answer_now(r, status, ctype, data, len, free_fn);
        return;
    }
    /* Not the owner: carry the answer over. If the owner has gone, r is an
     * orphan (the loop orphans its requests before closing its inbox), and
     * nobody else holds it: free it here. */
    size_t clen = strlen(ctype) + 1;
    answer_msg *a = malloc(sizeof *a + clen);
    if (a != NULL) {
        a->r = r;
        a->status = status;
        a->ctype = a->extra;
        a->data = data;
        a->len = len;
        a->free_fn = free_fn;
        memcpy(a->extra, ctype, clen);
        static _Atomic int warned;
        if (!warned++)
            hn_logf(NULL, HN_LOG_WARN,
                    "%s: answered off its loop thread (route of plugin %s); use req_post", r->path,
                    r->match.plugin ? r->match.plugin : "core");
        if (hn_loop_post(r->home, answer_task, a) == 0)
            return;
        free(a);
    }
    if (data != NULL)
        free_fn(data);
    req_free(r);
}

static char *envelope(const char *rc, const char *message, size_t *len) {
    json_t *o = json_pack("{s:s,s:s}", "message", message, "rc", rc);
    char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    *len = s != NULL ? strlen(s) : 0;
    return s;
}

static void (*json_free_fn(void))(void *) {
    json_malloc_t m;
    json_free_t f;
    json_get_alloc_funcs(&m, &f);
    return f;
}

void hn_req_answer_error(hn_request *r, int status, const char *rc, const char *message) {
    size_t len;
    char *s = envelope(rc, message, &len);
    answer(r, status, JSON_TYPE, s, len, json_free_fn());
}

/* Reals: %.15g prints every value that has a 15-digit or shorter decimal
 * form exactly as Python's repr does ("0.1", "12.35", "5.0"); jansson's
 * default of 17 digits would print 0.1 as 0.10000000000000001. */
#define DUMP_FLAGS (JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15))

static void api_respond_json(hn_request *req, int status, json_t *body) {
    char *s = body != NULL ? json_dumps(body, DUMP_FLAGS) : NULL;
    json_decref(body);
    if (s == NULL && body != NULL) {
        hn_req_answer_error(req, 500, "InternalServerError", "response could not be encoded");
        return;
    }
    if (s == NULL) { /* a NULL body is JSON null */
        char *n = strdup("null");
        answer(req, status, JSON_TYPE, n, n ? 4 : 0, free);
        return;
    }
    answer(req, status, JSON_TYPE, s, strlen(s), json_free_fn());
}

static void api_respond_error(hn_request *req, const hn_error *err) {
    int status = err->status >= 400 && err->status <= 599 ? err->status : 500;
    hn_req_answer_error(req, status, err->rc[0] ? err->rc : "InternalServerError", err->message);
}

static void api_respond(hn_request *req, int status, const char *content_type, const void *data,
                        size_t len) {
    char *copy = malloc(len + 1);
    if (copy == NULL) {
        answer(req, 500, JSON_TYPE, NULL, 0, free);
        return;
    }
    if (len > 0)
        memcpy(copy, data, len);
    copy[len] = '\0';
    answer(req, status, content_type ? content_type : "application/octet-stream", copy, len, free);
}

static int api_resp_header(hn_request *req, const char *name, const char *value) {
    if (req == NULL || (req->flags & (REQ_ANSWERED | REQ_ORPHAN)) || !on_owner_thread(req))
        return -1;
    if (req->ev == NULL)
        return 0; /* in-process: the caller gets status and body only */
    return evhttp_add_header(evhttp_request_get_output_headers(req->ev), name, value);
}

static void api_req_suspend(hn_request *req) {
    if (req != NULL)
        req->flags |= REQ_SUSPENDED;
}

static int api_req_post(hn_request *req, hn_work_fn *fn, void *arg) {
    if (req == NULL || fn == NULL)
        return -1;
    return hn_loop_post(req->home, fn, arg);
}

void hn_req_orphan(hn_request *r) {
    if (r->call != NULL) {
        size_t len;
        char *s = envelope("ServiceUnavailable", "The node is stopping.", &len);
        local_deliver(r->call, 503, s, len, json_free_fn());
        r->call = NULL;
    }
    unlink_live(r);
    r->flags |= REQ_ORPHAN;
    r->loop = NULL;
    r->ev = NULL;
    r->in_headers = NULL;
    r->query_raw = NULL;
    if (r->local_body == NULL) { /* evhttp's buffer goes with evhttp */
        r->body = NULL;
        r->body_len = 0;
    }
}

/* ---- dispatch -------------------------------------------------------------------------- */

static void allow_header(unsigned methods, char *out, size_t n) {
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {{HN_GET, "GET"},        {HN_HEAD, "HEAD"},   {HN_POST, "POST"},
                 {HN_PUT, "PUT"},        {HN_PATCH, "PATCH"}, {HN_DELETE, "DELETE"},
                 {HN_OPTIONS, "OPTIONS"}};
    out[0] = '\0';
    size_t o = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (methods & names[i].bit)
            o += (size_t)snprintf(out + o, o < n ? n - o : 0, "%s%s", o ? ", " : "", names[i].name);
}

/* The host table, for running hook http_request (set by hn_req_fill_api,
 * before any request exists; read-only afterwards). */
static const hn_api *g_req_api;

void hn_req_dispatch(hn_request *r) {
    http_loop *L = r->loop;
    if (L != NULL) {
        r->next = L->live;
        if (L->live != NULL)
            L->live->prev = r;
        L->live = r;
        r->flags |= REQ_LIVE;
        L->inflight++;
    }
    if (r->flags & REQ_BAD_PATH) {
        hn_req_answer_error(r, 400, "BadRequest", "The path contains a NUL byte.");
        return;
    }
    int rc = r->method != 0 ? hn_router_match(r->method, r->path, &r->match) : 1;
    if (rc == 0) {
        /* hook http_request may refuse it first (rate limits) */
        hn_error herr = {0};
        if (g_req_api != NULL && g_req_api->hook_handlers != NULL &&
            hn_run_http_request(g_req_api, r, r->match.pattern, &herr) == HN_ERROR) {
            hn_req_answer_error(r, herr.status ? herr.status : 403,
                                herr.rc[0] ? herr.rc : "Forbidden", herr.message);
            return;
        }
        r->flags |= REQ_IN_HANDLER;
        r->match.fn(r, r->match.state);
        r->flags &= ~REQ_IN_HANDLER;
        if (r->flags & REQ_ANSWERED) {
            req_free(r);
        } else if (!(r->flags & REQ_SUSPENDED)) {
            hn_logf(NULL, HN_LOG_ERROR,
                    "%s: the handler of plugin %s returned without answering or suspending",
                    r->path, r->match.plugin);
            hn_req_answer_error(r, 500, "InternalServerError", "handler did not answer");
        }
        return;
    }
    unsigned methods = rc == 1 ? hn_router_methods(r->path) : 0;
    if (methods == 0) {
        hn_req_answer_error(r, 404, "NotFound",
                            "The requested URL was not found on the server. If you entered the "
                            "URL manually please check your spelling and try again.");
        return;
    }
    char allow[96];
    allow_header(methods, allow, sizeof allow);
    if (r->ev != NULL)
        evhttp_add_header(evhttp_request_get_output_headers(r->ev), "Allow", allow);
    if (r->method == HN_OPTIONS) { /* CORS preflight, answered by the core */
        answer(r, 200, "text/html; charset=utf-8", NULL, 0, free);
        return;
    }
    hn_req_answer_error(r, 405, "MethodNotAllowed",
                        "The method is not allowed for the requested URL.");
}

/* ---- what a handler reads ---------------------------------------------------------------- */

static unsigned api_req_method(hn_request *req) { return req->method; }

static const char *api_req_path(hn_request *req) { return req->path; }

static const char *api_req_param(hn_request *req, const char *name) {
    for (int i = 0; i < req->match.nparams; i++)
        if (strcmp(req->match.names[i], name) == 0)
            return req->match.values[i];
    return NULL;
}

/* Splits the query into decoded key/value pairs, once. "a&b=" gives a="" and
 * b=""; '+' is a space, as in werkzeug. */
static void parse_query(hn_request *r) {
    r->flags |= REQ_QUERY_DONE;
    if (r->query_raw == NULL || r->query_raw[0] == '\0')
        return;
    size_t len = strlen(r->query_raw);
    int n = 1;
    for (size_t i = 0; i < len; i++)
        n += r->query_raw[i] == '&';
    r->query_buf = malloc(2 * len + 2);
    r->query = calloc((size_t)n, sizeof *r->query);
    if (r->query_buf == NULL || r->query == NULL)
        return;
    char *out = r->query_buf;
    const char *p = r->query_raw;
    while (*p != '\0' || p == r->query_raw) {
        const char *amp = strchrnul(p, '&');
        const char *eq = memchr(p, '=', (size_t)(amp - p));
        const char *kend = eq != NULL ? eq : amp;
        if (kend > p) {
            query_pair *q = &r->query[r->nquery++];
            q->key = out;
            out += pct_decode(out, p, (size_t)(kend - p), true, NULL) + 1;
            q->value = out;
            if (eq != NULL)
                out += pct_decode(out, eq + 1, (size_t)(amp - eq - 1), true, NULL) + 1;
            else
                *out++ = '\0';
        }
        if (*amp == '\0')
            break;
        p = amp + 1;
    }
}

static const char *api_req_query(hn_request *req, const char *name) {
    if (!(req->flags & REQ_QUERY_DONE))
        parse_query(req);
    for (int i = 0; i < req->nquery; i++)
        if (strcmp(req->query[i].key, name) == 0)
            return req->query[i].value;
    return NULL;
}

static const char *api_req_header(hn_request *req, const char *name) {
    return req->in_headers != NULL ? evhttp_find_header(req->in_headers, name) : NULL;
}

static bool is_loopback(const char *ip) {
    return strncmp(ip, "127.", 4) == 0 || strcmp(ip, "::1") == 0;
}

/* The socket peer, except behind a reverse proxy on this machine: when the
 * peer is loopback and X-Forwarded-For is present, its last hop (what the
 * horde's ProxyFix(x_for=1) takes). A remote peer's X-Forwarded-For is not
 * believed, so clients cannot choose their own address. */
static const char *api_req_client_ip(hn_request *req) {
    if (req->flags & REQ_IP_DONE)
        return req->ip;
    req->flags |= REQ_IP_DONE;
    memcpy(req->ip, req->peer, sizeof req->ip);
    const char *xff = is_loopback(req->peer) ? api_req_header(req, "X-Forwarded-For") : NULL;
    if (xff != NULL) {
        const char *last = strrchr(xff, ',');
        last = last != NULL ? last + 1 : xff;
        while (*last == ' ' || *last == '\t')
            last++;
        size_t n = strcspn(last, " \t");
        if (n > 0 && n < sizeof req->ip) {
            memcpy(req->ip, last, n);
            req->ip[n] = '\0';
        }
    }
    return req->ip;
}

static void api_req_set_client_ip(hn_request *req, const char *ip) {
    size_t n = ip != NULL ? strlen(ip) : 0;
    if (n == 0 || n >= sizeof req->ip)
        return;
    memcpy(req->ip, ip, n + 1);
    req->flags |= REQ_IP_DONE;
}

static const void *api_req_body(hn_request *req, size_t *len) {
    if (!(req->flags & REQ_BODY_DONE) && req->ev != NULL) {
        req->flags |= REQ_BODY_DONE;
        /* Terminate in place: append a NUL to evhttp's buffer and make it one
         * block, so the body is not copied once more. */
        struct evbuffer *b = evhttp_request_get_input_buffer(req->ev);
        size_t n = evbuffer_get_length(b);
        if (evbuffer_add(b, "", 1) == 0) {
            req->body = (const char *)evbuffer_pullup(b, -1);
            req->body_len = req->body != NULL ? n : 0;
        }
    }
    if (len != NULL)
        *len = req->body != NULL ? req->body_len : 0;
    return req->body != NULL ? req->body : "";
}

static json_t *api_req_json(hn_request *req, hn_error *err) {
    if (!(req->flags & REQ_JSON_DONE)) {
        req->flags |= REQ_JSON_DONE;
        size_t len;
        const char *body = api_req_body(req, &len);
        json_error_t je;
        int status = 400;
        const char *rc = "BadRequest";
        char msg[300];
        if (len == 0) {
            req->json = json_object();
        } else if (memchr(body, '\0', len) != NULL) {
            rc = "NulByteInPayload";
            snprintf(msg, sizeof msg, "The payload contains a NUL byte.");
        } else if ((req->json = json_loadb(body, len, 0, &je)) == NULL) {
            enum json_error_code code = json_error_code(&je);
            if (code == json_error_null_character || code == json_error_null_byte_in_key) {
                rc = "NulByteInPayload";
                snprintf(msg, sizeof msg, "The payload contains a NUL character.");
            } else {
                snprintf(msg, sizeof msg, "The body is not valid JSON: %s (line %d, column %d).",
                         je.text, je.line, je.column);
            }
        }
        if (req->json == NULL && (req->json_err = calloc(1, sizeof *req->json_err)) != NULL) {
            req->json_err->status = status;
            snprintf(req->json_err->rc, sizeof req->json_err->rc, "%s", rc);
            snprintf(req->json_err->message, sizeof req->json_err->message, "%s", msg);
        }
    }
    if (req->json == NULL && err != NULL) {
        if (req->json_err != NULL)
            *err = *req->json_err;
        else
            *err =
                (hn_error){.status = 500, .rc = "InternalServerError", .message = "out of memory"};
    }
    return req->json;
}

void hn_req_fill_api(hn_api *api) {
    g_req_api = api;
    api->req_method = api_req_method;
    api->req_path = api_req_path;
    api->req_param = api_req_param;
    api->req_query = api_req_query;
    api->req_header = api_req_header;
    api->req_client_ip = api_req_client_ip;
    api->req_set_client_ip = api_req_set_client_ip;
    api->req_body = api_req_body;
    api->req_json = api_req_json;
    api->resp_header = api_resp_header;
    api->respond_json = api_respond_json;
    api->respond_error = api_respond_error;
    api->respond = api_respond;
    api->req_suspend = api_req_suspend;
    api->req_post = api_req_post;
}
