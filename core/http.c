/* The HTTP server: `threads` loop threads, each with its own event base and
 * evhttp, all serving one port.
 *
 * Sharing the port: each loop has its own listening socket bound with
 * SO_REUSEPORT, so the kernel spreads new connections over the loops. The
 * alternative, one socket accepted by every loop (a dup'ed fd per evhttp),
 * wakes every loop for each connection and lets whichever wins accept a
 * whole burst. Measured on a 2-core AMD EPYC VM, wrk -t2 -c64 -d5s on the
 * same machine, 2 loops, a GET with a param answered with a 12-key JSON
 * object: SO_REUSEPORT 48.3k and 49.7k req/s, shared socket 46.1k and
 * 40.8k req/s (heartbeat-sized answer: 54.3k/47.6k vs 51.9k). The gap is
 * near the noise, but never in the shared socket's favour, and it has the
 * wake-up herd. SO_REUSEPORT alone would let a second node started by the
 * same user on the same port silently take half the connections, so the
 * port is first bound by a probe socket without SO_REUSEPORT: if anything
 * listens there, start fails with "Address already in use" as usual.
 *
 * The bases are created without libevent's locks (EVENT_BASE_FLAG_NOLOCK):
 * only their own thread touches them; other threads reach a loop through its
 * inbox (loop.c), so the hot path takes no lock at all.
 *
 * Limits are evhttp's: max_body (413), max_headers (400), and a read/write
 * timeout per connection. libevent 2.1 answers those itself, with its own
 * small HTML page and Connection: close; it has no hook to put the horde's
 * JSON envelope there (evhttp_set_errorcb arrived in 2.2). Lingering close
 * is on, so a client still sending a too-large body reads the 413 rather
 * than a connection reset.
 *
 * Stopping: each loop closes its listening socket, answers what it is
 * still given with Connection: close, waits for its suspended requests as
 * long as the connection timeout (at most 10 s, 5 s without a timeout)
 * and then orphans the rest (in-process callers get 503), frees its
 * evhttp (closing idle keep-alive connections) and exits. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/http.h>

#include "http_internal.h"

http_settings hn_http_settings;

static struct {
    http_loop *loops;
    int nloops;
    int port;
    /* Guards `running` and the loops array against in-process requests
     * arriving while the server starts or stops (not the hot path). */
    pthread_mutex_t lock;
    bool running;
    atomic_uint next_loop;
    /* start-up handshake with the loop threads */
    pthread_mutex_t ready_lock;
    pthread_cond_t ready_cond;
    int nready, nfailed;
} g_http = {.lock = PTHREAD_MUTEX_INITIALIZER,
            .ready_lock = PTHREAD_MUTEX_INITIALIZER,
            .ready_cond = PTHREAD_COND_INITIALIZER};

static _Thread_local http_loop *tl_loop;

/* ---- requests from evhttp ---------------------------------------------------------- */

static unsigned method_bit(enum evhttp_cmd_type cmd) {
    switch (cmd) {
    case EVHTTP_REQ_GET:
        return HN_GET;
    case EVHTTP_REQ_POST:
        return HN_POST;
    case EVHTTP_REQ_PUT:
        return HN_PUT;
    case EVHTTP_REQ_DELETE:
        return HN_DELETE;
    case EVHTTP_REQ_PATCH:
        return HN_PATCH;
    case EVHTTP_REQ_HEAD:
        return HN_HEAD;
    case EVHTTP_REQ_OPTIONS:
        return HN_OPTIONS;
    default:
        return 0; /* TRACE, CONNECT: no route takes them (405) */
    }
}

/* IPv4 peers of a dual-stack socket show as ::ffff:a.b.c.d. */
static void set_peer(hn_request *r, struct evhttp_request *ev) {
    struct evhttp_connection *con = evhttp_request_get_connection(ev);
    char *addr = NULL;
    ev_uint16_t port;
    if (con != NULL)
        evhttp_connection_get_peer(con, &addr, &port);
    if (addr == NULL)
        addr = "0.0.0.0";
    if (strncmp(addr, "::ffff:", 7) == 0 && strchr(addr + 7, '.') != NULL)
        addr += 7;
    snprintf(r->peer, sizeof r->peer, "%s", addr);
}

static void on_request(struct evhttp_request *ev, void *arg) {
    http_loop *L = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(ev);
    const char *raw = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    if (raw == NULL || raw[0] == '\0')
        raw = "/"; /* "GET http://host HTTP/1.1" */
    size_t rawlen = strlen(raw);
    hn_request *r = hn_req_new(rawlen);
    if (r == NULL) {
        evhttp_send_error(ev, 503, NULL);
        return;
    }
    r->loop = L;
    r->home = L->inbox;
    r->thread = pthread_self();
    r->ev = ev;
    r->method = method_bit(evhttp_request_get_command(ev));
    r->in_headers = evhttp_request_get_input_headers(ev);
    r->query_raw = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
    hn_req_set_path(r, raw, rawlen);
    set_peer(r, ev);
    hn_req_dispatch(r);
}

/* ---- stopping ------------------------------------------------------------------------ */

/* Drained once every request is answered and, for answers given while
 * stopping, written out. The short loopexit delay lets answers given just
 * before the stop leave the socket buffers too. */
void hn_http_request_done(http_loop *L) {
    if (L->stopping && L->inflight == 0 && L->unsent == 0) {
        struct timeval flush = {0, 20 * 1000};
        event_base_loopexit(L->base, &flush);
    }
}

static void drain_timeout(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    http_loop *L = arg;
    hn_logf(NULL, HN_LOG_WARN, "http loop %d: %d request(s) still unanswered after %d ms", L->index,
            L->inflight, hn_http_settings.drain_ms);
    event_base_loopbreak(L->base);
}

static void begin_stop(void *arg) {
    http_loop *L = arg;
    L->stopping = true;
    if (L->bound != NULL) {
        evhttp_del_accept_socket(L->http, L->bound); /* closes the socket */
        L->bound = NULL;
    }
    if (L->inflight == 0) {
        hn_http_request_done(L);
        return;
    }
    int ms = hn_http_settings.drain_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    L->drain_ev = evtimer_new(L->base, drain_timeout, L);
    if (L->drain_ev == NULL || evtimer_add(L->drain_ev, &tv) != 0)
        event_base_loopbreak(L->base);
}

/* ---- loop threads ------------------------------------------------------------------------ */

static void report_ready(bool ok) {
    pthread_mutex_lock(&g_http.ready_lock);
    if (ok)
        g_http.nready++;
    else
        g_http.nfailed++;
    pthread_cond_broadcast(&g_http.ready_cond);
    pthread_mutex_unlock(&g_http.ready_lock);
}

static void *loop_main(void *arg) {
    http_loop *L = arg;
    tl_loop = L;
    if (hn_loop_attach_thread(L->base) != 0) {
        report_ready(false);
        return NULL;
    }
    L->inbox = hn_loop_current();
    report_ready(true);
    event_base_loop(L->base, EVLOOP_NO_EXIT_ON_EMPTY);

    /* Tear down on this thread, in this order: requests first (evhttp_free
     * frees the evhttp_requests under them), then evhttp, then the inbox
     * (whatever it still holds runs here and finds orphans). */
    L->closed = true;
    while (L->live != NULL)
        hn_req_orphan(L->live);
    L->inflight = L->unsent = 0;
    evhttp_free(L->http);
    L->http = NULL;
    hn_loop_detach_thread();
    if (L->drain_ev != NULL)
        event_free(L->drain_ev);
    L->drain_ev = NULL;
    tl_loop = NULL;
    return NULL;
}

http_loop *hn_http_current_loop(void) { return tl_loop; }

int hn_http_post_any(hn_work_fn *fn, void *arg) {
    int rc = -1;
    pthread_mutex_lock(&g_http.lock);
    if (g_http.running) {
        unsigned i = atomic_fetch_add(&g_http.next_loop, 1) % (unsigned)g_http.nloops;
        rc = hn_loop_post(g_http.loops[i].inbox, fn, arg);
    }
    pthread_mutex_unlock(&g_http.lock);
    return rc;
}

/* ---- listening ------------------------------------------------------------------------- */

/* "host:port", "[v6]:port", ":port" or "*:port" (any IPv4 address). */
static int resolve(const char *listen, struct addrinfo **out, char *err, size_t errlen) {
    char host[256];
    const char *port;
    if (listen == NULL || listen[0] == '\0') {
        snprintf(err, errlen, "no listen address");
        return -1;
    }
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - listen - 1) >= sizeof host) {
            snprintf(err, errlen, "listen \"%s\": expected [IPv6]:port", listen);
            return -1;
        }
        snprintf(host, sizeof host, "%.*s", (int)(close - listen - 1), listen + 1);
        port = close + 2;
    } else {
        const char *colon = strrchr(listen, ':');
        if (colon == NULL || (size_t)(colon - listen) >= sizeof host) {
            snprintf(err, errlen, "listen \"%s\": expected host:port", listen);
            return -1;
        }
        snprintf(host, sizeof host, "%.*s", (int)(colon - listen), listen);
        port = colon + 1;
    }
    char *end;
    long p = strtol(port, &end, 10);
    if (port[0] == '\0' || *end != '\0' || p < 0 || p > 65535) {
        snprintf(err, errlen, "listen \"%s\": bad port", listen);
        return -1;
    }
    if (host[0] == '\0' || strcmp(host, "*") == 0)
        snprintf(host, sizeof host, "0.0.0.0");
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    int rc = getaddrinfo(host, port, &hints, out);
    if (rc != 0) {
        snprintf(err, errlen, "listen \"%s\": %s", listen, gai_strerror(rc));
        return -1;
    }
    return 0;
}

static int bound_socket(const struct sockaddr *sa, socklen_t salen, bool reuseport, bool listening,
                        const char *listen_addr, char *err, size_t errlen) {
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* Linux hands TCP_NODELAY on to accepted sockets. Without it a reply
     * larger than one segment waits for the client's delayed ACK (~40 ms):
     * a 200 KB image went from 731 to ~3,000 req/s with it. */
    if (listening)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
        snprintf(err, errlen, "SO_REUSEPORT: %s", strerror(errno));
        close(fd);
        return -1;
    }
    if (bind(fd, sa, salen) != 0 || (listening && listen(fd, SOMAXCONN) != 0)) {
        snprintf(err, errlen, "cannot listen on %s: %s", listen_addr, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int sockaddr_port(int fd, struct sockaddr_storage *ss, socklen_t *len) {
    *len = sizeof *ss;
    if (getsockname(fd, (struct sockaddr *)ss, len) != 0)
        return -1;
    if (ss->ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)ss)->sin6_port);
}

/* ---- start and stop ---------------------------------------------------------------------- */

static void free_loops(void) {
    for (int i = 0; i < g_http.nloops; i++) {
        http_loop *L = &g_http.loops[i];
        if (L->http != NULL)
            evhttp_free(L->http);
        if (L->base != NULL)
            event_base_free(L->base);
    }
    free(g_http.loops);
    g_http.loops = NULL;
    g_http.nloops = 0;
    free(hn_http_settings.node_name);
    hn_http_settings.node_name = NULL;
}

static int setup_loop(http_loop *L, const hn_http_config *cfg, int fd, char *err, size_t errlen) {
    struct event_config *ec = event_config_new();
    if (ec == NULL) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    L->base = event_base_new_with_config(ec);
    event_config_free(ec);
    L->http = L->base != NULL ? evhttp_new(L->base) : NULL;
    if (L->http == NULL) {
        close(fd);
        snprintf(err, errlen, "cannot create an HTTP loop");
        return -1;
    }
    evhttp_set_allowed_methods(L->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    if (cfg->max_body > 0)
        evhttp_set_max_body_size(L->http, (ev_ssize_t)cfg->max_body);
    if (cfg->max_headers > 0)
        evhttp_set_max_headers_size(L->http, (ev_ssize_t)cfg->max_headers);
    if (cfg->timeout_s > 0)
        evhttp_set_timeout(L->http, cfg->timeout_s);
    evhttp_set_flags(L->http, EVHTTP_SERVER_LINGERING_CLOSE);
    evhttp_set_gencb(L->http, on_request, L);
    /* evhttp owns fd from here (closes it with the bound socket). */
    L->bound = evhttp_accept_socket_with_handle(L->http, fd);
    if (L->bound == NULL) {
        close(fd);
        snprintf(err, errlen, "cannot accept on the listening socket");
        return -1;
    }
    return 0;
}

int hn_http_start(const hn_http_config *cfg, char *err, size_t errlen) {
    pthread_mutex_lock(&g_http.lock);
    bool running = g_http.running || g_http.loops != NULL;
    pthread_mutex_unlock(&g_http.lock);
    if (running) {
        snprintf(err, errlen, "the HTTP server is already running");
        return -1;
    }
    struct addrinfo *ai;
    if (resolve(cfg->listen, &ai, err, errlen) != 0)
        return -1;
    int n = cfg->threads > 0 ? cfg->threads : 1;
    hn_http_settings.max_body = cfg->max_body;
    hn_http_settings.drain_ms =
        cfg->timeout_s > 0 ? (cfg->timeout_s < 10 ? cfg->timeout_s : 10) * 1000 : 5000;
    hn_http_settings.node_name = strdup(cfg->node_name != NULL ? cfg->node_name : "horde-node");
    g_http.loops = calloc((size_t)n, sizeof *g_http.loops);
    if (g_http.loops == NULL || hn_http_settings.node_name == NULL) {
        freeaddrinfo(ai);
        free_loops();
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    g_http.nloops = n;
    g_http.nready = g_http.nfailed = 0;

    /* The probe: a plain bind that fails if anyone listens on the port, and
     * that picks the port when 0 was asked for. */
    struct sockaddr_storage ss;
    socklen_t sslen;
    int probe = bound_socket(ai->ai_addr, ai->ai_addrlen, false, false, cfg->listen, err, errlen);
    freeaddrinfo(ai);
    if (probe < 0) {
        free_loops();
        return -1;
    }
    g_http.port = sockaddr_port(probe, &ss, &sslen);
    close(probe);

    for (int i = 0; i < n; i++) {
        http_loop *L = &g_http.loops[i];
        L->index = i;
        int fd = bound_socket((struct sockaddr *)&ss, sslen, true, true, cfg->listen, err, errlen);
        if (fd < 0 || setup_loop(L, cfg, fd, err, errlen) != 0) {
            free_loops();
            return -1;
        }
    }
    for (int i = 0; i < n; i++) {
        http_loop *L = &g_http.loops[i];
        if (hn_thread_start(&L->thread, loop_main, L) != 0) {
            snprintf(err, errlen, "cannot start HTTP thread %d: %s", i, strerror(errno));
            report_ready(false);
            break;
        }
        L->started = true;
    }
    pthread_mutex_lock(&g_http.ready_lock);
    int started = 0;
    for (int i = 0; i < n; i++)
        started += g_http.loops[i].started;
    while (g_http.nready + g_http.nfailed < started + (started < n))
        pthread_cond_wait(&g_http.ready_cond, &g_http.ready_lock);
    bool ok = g_http.nfailed == 0;
    pthread_mutex_unlock(&g_http.ready_lock);
    if (!ok) {
        if (err[0] == '\0')
            snprintf(err, errlen, "an HTTP loop could not start");
        pthread_mutex_lock(&g_http.lock);
        g_http.running = true; /* so that hn_http_stop tears down what started */
        pthread_mutex_unlock(&g_http.lock);
        hn_http_stop();
        return -1;
    }
    pthread_mutex_lock(&g_http.lock);
    g_http.running = true;
    pthread_mutex_unlock(&g_http.lock);
    return 0;
}

void hn_http_stop(void) {
    pthread_mutex_lock(&g_http.lock);
    bool was = g_http.running;
    g_http.running = false;
    pthread_mutex_unlock(&g_http.lock);
    if (!was)
        return;
    for (int i = 0; i < g_http.nloops; i++) {
        http_loop *L = &g_http.loops[i];
        if (L->started && L->inbox != NULL && hn_loop_post(L->inbox, begin_stop, L) != 0)
            hn_logf(NULL, HN_LOG_ERROR, "http loop %d cannot be told to stop", i);
    }
    for (int i = 0; i < g_http.nloops; i++) {
        http_loop *L = &g_http.loops[i];
        if (L->started)
            pthread_join(L->thread, NULL);
        L->started = false;
        L->bound = NULL;
    }
    free_loops();
    g_http.port = 0;
}

int hn_http_port(void) { return g_http.port; }

void hn_http_fill_api(hn_api *api) {
    hn_req_fill_api(api);
    api->local_request = hn_http_local_request;
}
