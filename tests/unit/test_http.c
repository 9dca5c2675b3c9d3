/* The HTTP server in-process on 127.0.0.1:0 with a few routes, driven by a
 * plain socket client: envelopes for 404/405, CORS and Horde-Node on every
 * answer, JSON round trip and its errors (NUL byte, bad JSON), limits,
 * decoding of path and query, client address, suspended requests answered
 * from work_submit and req_post, in-process requests from other threads,
 * and a stop that lets an in-flight request finish. */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "core.h"

#define MAX_BODY 1024

static hn_api api;
static int port;

/* Handlers run on the server's threads, where cmocka's asserts cannot jump
 * back to the test: a failed check there ends the program loudly. */
#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* ---- routes ------------------------------------------------------------------------- */

static void route_echo(hn_request *req, void *state) {
    (void)state;
    const char *q = api.req_query(req, "q");
    const char *flag = api.req_query(req, "flag");
    const char *agent = api.req_header(req, "client-agent");
    json_t *o = json_pack("{s:s,s:s?,s:s?,s:s?,s:s,s:i,s:s}", "name", api.req_param(req, "name"),
                          "q", q, "flag", flag, "agent", agent, "ip", api.req_client_ip(req),
                          "method", (int)api.req_method(req), "path", api.req_path(req));
    api.respond_json(req, 200, o);
}

static void route_json(hn_request *req, void *state) {
    (void)state;
    hn_error err;
    json_t *body = api.req_json(req, &err);
    if (body == NULL) {
        api.respond_error(req, &err);
        return;
    }
    /* Cached and owned by the request: the same object comes back. */
    CHECK(api.req_json(req, &err) == body);
    size_t len;
    const char *raw = api.req_body(req, &len);
    CHECK(raw[len] == '\0');
    api.respond_json(req, 201, json_pack("{s:O,s:I}", "got", body, "len", (json_int_t)len));
}

typedef struct slow_job {
    hn_request *req;
    pthread_t handler_thread;
    pthread_t done_thread;
} slow_job;

static void slow_work(void *arg) {
    (void)arg;
    usleep(50 * 1000);
}

static void slow_done(void *arg) {
    slow_job *j = arg;
    j->done_thread = pthread_self();
    api.respond_json(
        j->req, 200,
        json_pack("{s:b}", "same_thread", pthread_equal(j->done_thread, j->handler_thread)));
    free(j);
}

static void route_slow(hn_request *req, void *state) {
    (void)state;
    slow_job *j = calloc(1, sizeof *j);
    j->req = req;
    j->handler_thread = pthread_self();
    api.req_suspend(req);
    CHECK(api.work_submit(slow_work, slow_done, j) == 0);
}

static void posted_answer(void *arg) {
    slow_job *j = arg;
    slow_done(j);
}

static void *poster(void *arg) {
    slow_job *j = arg;
    usleep(10 * 1000);
    if (api.req_post(j->req, posted_answer, j) != 0)
        abort();
    return NULL;
}

static void route_posted(hn_request *req, void *state) {
    (void)state;
    slow_job *j = calloc(1, sizeof *j);
    j->req = req;
    j->handler_thread = pthread_self();
    api.req_suspend(req);
    pthread_t t;
    pthread_create(&t, NULL, poster, j);
    pthread_detach(t);
}

static void route_forgot(hn_request *req, void *state) { (void)req, (void)state; }

/* Never answered by the server: the test answers it after the stop. */
static hn_request *_Atomic never[2];
static atomic_int nnever;

static void route_never(hn_request *req, void *state) {
    (void)state;
    api.req_suspend(req);
    never[atomic_fetch_add(&nnever, 1) % 2] = req;
}

static void route_bytes(hn_request *req, void *state) {
    (void)state;
    CHECK(api.resp_header(req, "X-Test", "yes") == 0);
    api.respond(req, 200, "text/plain; charset=utf-8", "hello", 5);
    /* A second answer is dropped (and logged), not sent. */
    api.respond(req, 500, "text/plain", "again", 5);
}

/* ---- a plain socket client --------------------------------------------------------------- */

typedef struct response {
    int status;
    char head[4096]; /* status line and headers, lower-cased */
    char *body;
    size_t body_len;
    bool closed; /* the server closed the connection after it */
} response;

static int connect_local(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void send_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0)
            return; /* the server may close early (413) */
        p += n;
        len -= (size_t)n;
    }
}

/* Reads one response from fd (Content-Length framed, or up to close). */
static void read_response(int fd, response *r) {
    memset(r, 0, sizeof *r);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    char *body = NULL;
    size_t need = (size_t)-1;
    for (;;) {
        if (body != NULL && (size_t)(buf + len - body) >= need)
            break;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 5000) <= 0)
            fail_msg("no answer within 5 s");
        if (len + 1 >= cap)
            buf = realloc(buf, cap *= 2);
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n <= 0) {
            r->closed = true;
            break;
        }
        len += (size_t)n;
        buf[len] = '\0';
        if (body == NULL) {
            char *end = strstr(buf, "\r\n\r\n");
            if (end == NULL)
                continue;
            body = end + 4;
            size_t hl = (size_t)(end - buf) + 2;
            assert_true(hl < sizeof r->head);
            for (size_t i = 0; i < hl; i++)
                r->head[i] = (char)tolower((unsigned char)buf[i]);
            r->status = atoi(buf + 9);
            const char *cl = strstr(r->head, "\r\ncontent-length:");
            if (cl != NULL)
                need = strtoul(cl + 17, NULL, 10);
        }
    }
    assert_non_null(body);
    r->body_len = (size_t)(buf + len - body);
    if (need != (size_t)-1 && r->body_len > need)
        r->body_len = need;
    r->body = malloc(r->body_len + 1);
    memcpy(r->body, body, r->body_len);
    r->body[r->body_len] = '\0';
    free(buf);
}

static void request(const char *raw, size_t len, response *r) {
    int fd = connect_local();
    send_all(fd, raw, len);
    read_response(fd, r);
    close(fd);
}

static void get(const char *raw, response *r) { request(raw, strlen(raw), r); }

static const char *header(const response *r, const char *name) {
    static char value[1024];
    char key[128];
    snprintf(key, sizeof key, "\r\n%s:", name);
    for (char *k = key; *k; k++)
        *k = (char)tolower((unsigned char)*k);
    const char *h = strstr(r->head, key);
    if (h == NULL)
        return NULL;
    h += strlen(key);
    while (*h == ' ')
        h++;
    size_t n = strcspn(h, "\r");
    snprintf(value, sizeof value, "%.*s", (int)n, h);
    return value;
}

static json_t *body_json(const response *r) {
    json_error_t e;
    json_t *j = json_loadb(r->body, r->body_len, 0, &e);
    if (j == NULL)
        fail_msg("not JSON: %s (%s)", r->body, e.text);
    return j;
}

static void assert_envelope(const response *r, int status, const char *rc) {
    assert_int_equal(r->status, status);
    assert_string_equal(header(r, "Content-Type"), "application/json; charset=utf-8");
    json_t *j = body_json(r);
    assert_string_equal(json_string_value(json_object_get(j, "rc")), rc);
    assert_true(json_is_string(json_object_get(j, "message")));
    assert_int_equal(json_object_size(j), 2);
    json_decref(j);
}

static void assert_common_headers(const response *r) {
    assert_string_equal(header(r, "Access-Control-Allow-Origin"), "*");
    const char *allowed = header(r, "Access-Control-Allow-Headers");
    assert_non_null(allowed);
    const char *need[] = {"apikey",      "client-agent",        "x-fields",
                          "proxied-for", "proxy-authorization", "idempotency-key",
                          "content-type"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        assert_non_null(strstr(allowed, need[i]));
    assert_non_null(strstr(header(r, "Access-Control-Allow-Methods"), "post"));
    assert_string_equal(header(r, "Horde-Node"), "test-node"); /* values are lower-cased */
}

static void response_free(response *r) { free(r->body); }

/* ---- set-up ------------------------------------------------------------------------------ */

static int start_server(void) {
    hn_http_config cfg = {.listen = "127.0.0.1:0",
                          .threads = 2,
                          .max_body = MAX_BODY,
                          .max_headers = 2048,
                          .timeout_s = 1,
                          .node_name = "Test-Node"};
    char err[256] = "";
    if (hn_http_start(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "hn_http_start: %s\n", err);
        return -1;
    }
    port = hn_http_port();
    return port > 0 ? 0 : -1;
}

static int group_setup(void **st) {
    (void)st;
    char err[256];
    if (hn_loop_init(2, err, sizeof err) != 0)
        return -1;
    hn_loop_fill_api(&api);
    hn_http_fill_api(&api);
    hn_router_reset();
    struct {
        unsigned m;
        const char *p;
        hn_route_fn *fn;
    } routes[] = {{HN_GET | HN_DELETE, "/echo/{name}", route_echo},
                  {HN_POST, "/json", route_json},
                  {HN_GET, "/slow", route_slow},
                  {HN_GET, "/posted", route_posted},
                  {HN_GET, "/forgot", route_forgot},
                  {HN_GET, "/never", route_never},
                  {HN_GET, "/bytes", route_bytes}};
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (hn_router_add("test", routes[i].m, routes[i].p, routes[i].fn, NULL, err, sizeof err))
            return -1;
    hn_router_freeze();
    hn_log_set_level(HN_LOG_ERROR);
    return start_server();
}

static int group_teardown(void **st) {
    (void)st;
    hn_http_stop();
    hn_loop_fini();
    hn_router_reset();
    return 0;
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_json_round_trip(void **st) {
    (void)st;
    const char body[] = "{\"a\":[1,2.5,{\"b\":\"\xc3\xbc\"}],\"k\":0.1}";
    char raw[512];
    int n = snprintf(raw, sizeof raw,
                     "POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    response r;
    request(raw, (size_t)n, &r);
    assert_int_equal(r.status, 201);
    assert_string_equal(header(&r, "Content-Type"), "application/json; charset=utf-8");
    assert_common_headers(&r);
    json_t *got = body_json(&r);
    json_t *want = json_loads(body, 0, NULL);
    assert_true(json_equal(json_object_get(got, "got"), want));
    assert_int_equal(json_integer_value(json_object_get(got, "len")), strlen(body));
    /* Reals print as Python prints them. */
    assert_non_null(strstr(r.body, "\"k\":0.1}"));
    json_decref(got);
    json_decref(want);
    response_free(&r);
}

static void test_json_errors(void **st) {
    (void)st;
    response r;
    /* An empty body is an empty object. */
    get("POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &r);
    assert_int_equal(r.status, 201);
    assert_non_null(strstr(r.body, "\"got\":{}"));
    response_free(&r);
    /* A raw NUL byte. */
    static const char nul[] =
        "POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{\"a\":\"\0\"}";
    request(nul, sizeof nul - 1, &r);
    assert_envelope(&r, 400, "NulByteInPayload");
    assert_common_headers(&r);
    response_free(&r);
    /* An escaped one. */
    get("POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 14\r\n\r\n{\"a\":\"\\u0000\"}", &r);
    assert_envelope(&r, 400, "NulByteInPayload");
    response_free(&r);
    get("POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n{\"a\":1", &r);
    assert_envelope(&r, 400, "BadRequest");
    response_free(&r);
}

static void test_404_405_and_preflight(void **st) {
    (void)st;
    response r;
    get("GET /nothing/here HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_envelope(&r, 404, "NotFound");
    assert_common_headers(&r);
    response_free(&r);
    get("POST /echo/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &r);
    assert_envelope(&r, 405, "MethodNotAllowed");
    assert_common_headers(&r);
    assert_string_equal(header(&r, "Allow"), "get, head, delete, options");
    response_free(&r);
    get("TRACE /echo/x HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_envelope(&r, 405, "MethodNotAllowed");
    response_free(&r);
    /* The core answers the CORS preflight of any routed path. */
    get("OPTIONS /echo/x HTTP/1.1\r\nHost: x\r\nOrigin: https://example.org\r\n"
        "Access-Control-Request-Method: DELETE\r\n"
        "Access-Control-Request-Headers: apikey\r\n\r\n",
        &r);
    assert_int_equal(r.status, 200);
    assert_common_headers(&r);
    assert_non_null(strstr(header(&r, "Allow"), "delete"));
    response_free(&r);
    get("OPTIONS /nothing HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_envelope(&r, 404, "NotFound");
    response_free(&r);
    /* HEAD is served by the GET route, without a body. */
    get("HEAD /echo/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    response_free(&r);
}

static void test_decoding_and_client_ip(void **st) {
    (void)st;
    response r;
    /* %2F decodes to '/' before routing (as in werkzeug): two segments. */
    get("GET /echo/a%2Fb HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_envelope(&r, 404, "NotFound");
    response_free(&r);

    get("GET /echo/a%20b?q=x+y%26z&flag&q=second HTTP/1.1\r\nHost: x\r\n"
        "Client-Agent: tester:1:me\r\n\r\n",
        &r);
    assert_int_equal(r.status, 200);
    json_t *j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "name")), "a b");
    assert_string_equal(json_string_value(json_object_get(j, "path")), "/echo/a b");
    assert_string_equal(json_string_value(json_object_get(j, "q")), "x y&z"); /* first wins */
    assert_string_equal(json_string_value(json_object_get(j, "flag")), "");
    assert_string_equal(json_string_value(json_object_get(j, "agent")), "tester:1:me");
    assert_string_equal(json_string_value(json_object_get(j, "ip")), "127.0.0.1");
    assert_int_equal(json_integer_value(json_object_get(j, "method")), HN_GET);
    json_decref(j);
    response_free(&r);

    /* From a loopback peer (a local reverse proxy) the last hop is believed. */
    get("DELETE /echo/x HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1, 203.0.113.7\r\n\r\n", &r);
    j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "ip")), "203.0.113.7");
    assert_int_equal(json_integer_value(json_object_get(j, "method")), HN_DELETE);
    json_decref(j);
    response_free(&r);

    /* A NUL byte in the path is refused, not routed. */
    get("GET /echo/a%00b HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_envelope(&r, 400, "BadRequest");
    response_free(&r);
}

static void test_limits(void **st) {
    (void)st;
    response r;
    /* Body over max_body: 413 (libevent's page; see http.c) and close. */
    static char big[MAX_BODY * 2 + 256];
    int n =
        sprintf(big, "POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", MAX_BODY * 2);
    memset(big + n, 'a', MAX_BODY * 2);
    request(big, (size_t)n + MAX_BODY * 2, &r);
    assert_int_equal(r.status, 413);
    response_free(&r);
    /* Exactly max_body is fine (and not JSON here). */
    n = sprintf(big, "POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", MAX_BODY);
    memset(big + n, ' ', MAX_BODY);
    big[n + MAX_BODY - 1] = '1';
    request(big, (size_t)n + MAX_BODY, &r);
    assert_envelope(&r, 400, "BadRequest"); /* "   1" is a number, not an object */
    response_free(&r);
    /* Headers over max_headers. */
    char hdr[4096];
    n = snprintf(hdr, sizeof hdr, "GET /echo/x HTTP/1.1\r\nHost: x\r\nX-Big: %03000d\r\n\r\n", 0);
    request(hdr, (size_t)n, &r);
    assert_true(r.status == 400 || r.status == 431);
    response_free(&r);
    /* Garbage is a 4xx, never a 5xx. */
    get("WHAT\r\n\r\n", &r);
    assert_true(r.status >= 400 && r.status < 500);
    response_free(&r);
    get("GET x HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_envelope(&r, 404, "NotFound");
    response_free(&r);
}

static void test_slow_client_is_dropped(void **st) {
    (void)st;
    /* A request that never completes is cut by the 1 s read timeout. */
    int fd = connect_local();
    send_all(fd, "GET /echo/x HTTP/1.1\r\nHo", 24);
    struct pollfd p = {fd, POLLIN, 0};
    assert_int_equal(poll(&p, 1, 4000), 1);
    char c;
    assert_true(recv(fd, &c, 1, 0) <= 0);
    close(fd);
}

static void test_handler_answers(void **st) {
    (void)st;
    response r;
    /* Several requests on one keep-alive connection, answered from the
     * handler, from a work_submit completion and from req_post. */
    int fd = connect_local();
    const char *paths[] = {"/bytes", "/slow", "/posted", "/forgot", "/bytes"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        char raw[128];
        int n = snprintf(raw, sizeof raw, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", paths[i]);
        send_all(fd, raw, (size_t)n);
        read_response(fd, &r);
        assert_false(r.closed);
        assert_common_headers(&r);
        if (strcmp(paths[i], "/bytes") == 0) {
            assert_int_equal(r.status, 200);
            assert_string_equal(r.body, "hello");
            assert_string_equal(header(&r, "Content-Type"), "text/plain; charset=utf-8");
            assert_string_equal(header(&r, "X-Test"), "yes");
        } else if (strcmp(paths[i], "/forgot") == 0) {
            assert_envelope(&r, 500, "InternalServerError");
            assert_non_null(strstr(r.body, "handler did not answer"));
        } else {
            assert_int_equal(r.status, 200);
            assert_string_equal(r.body, "{\"same_thread\":true}");
        }
        response_free(&r);
    }
    close(fd);
}

typedef struct local_result {
    int rc, status;
    char *body;
    size_t len;
    const char *path;
    const char *payload;
    unsigned method;
} local_result;

static void *local_thread(void *arg) {
    local_result *l = arg;
    const char *headers[] = {"Client-Agent", "local:1:me", NULL};
    l->rc = api.local_request(l->method, l->path, headers, l->payload,
                              l->payload ? strlen(l->payload) : 0, &l->status, &l->body, &l->len);
    return NULL;
}

static void test_local_requests(void **st) {
    (void)st;
    local_result l[5] = {
        {.method = HN_POST, .path = "/json?x=1", .payload = "{\"n\":[1,2]}"},
        {.method = HN_GET, .path = "/echo/loc%20al?q=a+b"},
        {.method = HN_GET, .path = "/slow"},
        {.method = HN_GET, .path = "/missing"},
        {.method = HN_POST, .path = "/json", .payload = "{\"a\":\"\\u0000\"}"},
    };
    pthread_t t[5];
    for (int i = 0; i < 5; i++)
        assert_int_equal(pthread_create(&t[i], NULL, local_thread, &l[i]), 0);
    for (int i = 0; i < 5; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(l[i].rc, 0);
        assert_non_null(l[i].body);
        assert_int_equal(l[i].body[l[i].len], '\0');
    }
    assert_int_equal(l[0].status, 201);
    assert_string_equal(l[0].body, "{\"got\":{\"n\":[1,2]},\"len\":11}");
    assert_int_equal(l[1].status, 200);
    json_t *j = json_loads(l[1].body, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "name")), "loc al");
    assert_string_equal(json_string_value(json_object_get(j, "q")), "a b");
    assert_string_equal(json_string_value(json_object_get(j, "agent")), "local:1:me");
    assert_string_equal(json_string_value(json_object_get(j, "ip")), "127.0.0.1");
    json_decref(j);
    assert_int_equal(l[2].status, 200);
    assert_string_equal(l[2].body, "{\"same_thread\":true}");
    assert_int_equal(l[3].status, 404);
    assert_non_null(strstr(l[3].body, "\"NotFound\""));
    assert_int_equal(l[4].status, 400);
    assert_non_null(strstr(l[4].body, "\"NulByteInPayload\""));
    for (int i = 0; i < 5; i++)
        free(l[i].body);

    /* The limit applies in-process too, with the envelope. */
    static char big[MAX_BODY + 2];
    memset(big, 'x', MAX_BODY + 1);
    big[MAX_BODY + 1] = '\0';
    local_result b = {.method = HN_POST, .path = "/json", .payload = big};
    local_thread(&b); /* the test thread is no loop thread either */
    assert_int_equal(b.rc, 0);
    assert_int_equal(b.status, 413);
    assert_non_null(strstr(b.body, "\"RequestEntityTooLarge\""));
    free(b.body);
}

static void *stop_server(void *arg) {
    (void)arg;
    hn_http_stop();
    return NULL;
}

static void test_stop_lets_inflight_finish(void **st) {
    (void)st;
    int fd = connect_local();
    send_all(fd, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n", 32);
    usleep(20 * 1000); /* dispatched and suspended by now */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, stop_server, NULL), 0);
    response r;
    read_response(fd, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"same_thread\":true}");
    assert_string_equal(header(&r, "Connection"), "close");
    response_free(&r);
    close(fd);
    pthread_join(t, NULL);
    /* Stopped: no socket, and in-process requests are refused. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_not_equal(connect(s, (struct sockaddr *)&a, sizeof a), 0);
    close(s);
    local_result l = {.method = HN_GET, .path = "/echo/x"};
    local_thread(&l);
    assert_int_equal(l.rc, -1);
    /* It starts again (the group teardown stops it). */
    assert_int_equal(start_server(), 0);
    get("GET /echo/again HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    response_free(&r);
}

static void test_stop_gives_up_on_unanswered(void **st) {
    (void)st;
    atomic_store(&nnever, 0);
    int fd = connect_local();
    send_all(fd, "GET /never HTTP/1.1\r\nHost: x\r\n\r\n", 33);
    local_result l = {.method = HN_GET, .path = "/never"};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, local_thread, &l), 0);
    while (atomic_load(&nnever) < 2)
        usleep(1000);
    hn_http_stop(); /* waits the 1 s timeout, then gives up on both */
    /* The socket client sees the connection close without an answer. */
    struct pollfd p = {fd, POLLIN, 0};
    assert_int_equal(poll(&p, 1, 2000), 1);
    char c;
    assert_true(recv(fd, &c, 1, 0) <= 0);
    close(fd);
    /* The in-process caller is told the node stopped. */
    pthread_join(t, NULL);
    assert_int_equal(l.rc, 0);
    assert_int_equal(l.status, 503);
    assert_non_null(strstr(l.body, "\"ServiceUnavailable\""));
    free(l.body);
    /* A late answer (here from this thread) only frees the requests. */
    for (int i = 0; i < 2; i++) {
        hn_error e = {.status = 404, .rc = "Late", .message = "too late"};
        api.respond_error(never[i], &e);
        never[i] = NULL;
    }
    assert_int_equal(start_server(), 0);
}

static void test_port_in_use_is_an_error(void **st) {
    (void)st;
    char addr[64], err[256] = "";
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    /* Another server (as a second node would be) on the same port. */
    hn_http_stop();
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s, 8), 0);
    hn_http_config cfg = {.listen = addr, .threads = 2, .node_name = "x"};
    assert_int_equal(hn_http_start(&cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "in use"));
    close(s);
    cfg.listen = "nonsense";
    assert_int_equal(hn_http_start(&cfg, err, sizeof err), -1);
    cfg.listen = "127.0.0.1:99999";
    assert_int_equal(hn_http_start(&cfg, err, sizeof err), -1);
    /* IPv6 loopback, when the machine has it. */
    cfg.listen = "[::1]:0";
    if (hn_http_start(&cfg, err, sizeof err) == 0) {
        assert_true(hn_http_port() > 0);
        hn_http_stop();
    }
    assert_int_equal(start_server(), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_round_trip),
        cmocka_unit_test(test_json_errors),
        cmocka_unit_test(test_404_405_and_preflight),
        cmocka_unit_test(test_decoding_and_client_ip),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_slow_client_is_dropped),
        cmocka_unit_test(test_handler_answers),
        cmocka_unit_test(test_local_requests),
        cmocka_unit_test(test_stop_lets_inflight_finish),
        cmocka_unit_test(test_stop_gives_up_on_unanswered),
        cmocka_unit_test(test_port_in_use_is_an_error),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
