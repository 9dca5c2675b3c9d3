/* Core-private declarations shared between the files of core/. Never
 * included by plugins (they see only include/hn/). Each section belongs to
 * one file of core/. */
#ifndef HN_CORE_H
#define HN_CORE_H

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

#include "hn/hn.h"

struct event_base;

/* ---- log.c ---------------------------------------------------------------- */
void hn_log_set_level(hn_log_level level);
hn_log_level hn_log_get_level(void);
/* Log to `path` (append) instead of stderr; NULL or "" = stderr. */
int hn_log_open(const char *path, char *err, size_t errlen);
int hn_log_parse_level(const char *name, hn_log_level *out);
void hn_logv(const char *who, hn_log_level level, const char *fmt, va_list ap);
void hn_logf(const char *who, hn_log_level level, const char *fmt, ...) HN_PRINTF(3, 4);
void hn_log_close(void);

/* ---- loop.c: main event loop, thread pool, timers, signals -------------- */
/* Creates the main event base and a pool of `pool_threads` workers. */
int hn_loop_init(int pool_threads, char *err, size_t errlen);
struct event_base *hn_loop_main_base(void);
/* Registers a timer; allowed before hn_loop_run (armed then) and after. */
int hn_loop_timer_add(unsigned interval_ms, hn_timer_fn *fn, void *state);
/* Called on the main loop when SIGTERM/SIGINT (on_stop) or SIGHUP
 * (on_reload) arrives. */
void hn_loop_on_signals(void (*on_stop)(void *), void (*on_reload)(void *), void *arg);
/* Runs the main loop until hn_loop_stop. */
int hn_loop_run(void);
/* Thread-safe: makes hn_loop_run return. */
void hn_loop_stop(void);
/* Waits for queued work, joins the pool and runs the completions that came
 * back to the main loop; work_submit fails from then on. Idempotent. The
 * node calls it before stopping plugins, so no completion runs against a
 * plugin's freed state. */
void hn_loop_drain(void);
/* hn_loop_drain, then frees timers, signals and the base. */
void hn_loop_fini(void);
/* Fills the thread members of the api table (work_submit). */
void hn_loop_fill_api(hn_api *api);
/* Lets another loop thread (an HTTP loop) receive work_submit completions:
 * registers `base` for the calling thread until hn_loop_detach_thread. */
int hn_loop_attach_thread(struct event_base *base);
/* Refuses further posts to the thread's inbox and runs what it still holds;
 * call on the thread, before freeing its base. */
void hn_loop_detach_thread(void);
/* A loop's inbox: tasks posted from any thread run on that loop's thread. */
typedef struct hn_loop_inbox hn_loop_inbox;
/* The calling thread's inbox: the main loop's while hn_loop_run runs on it,
 * an attached loop's; NULL on any other thread. */
hn_loop_inbox *hn_loop_current(void);
/* From any thread: runs fn(arg) on the loop of `to` (NULL: the main loop).
 * Returns 0, or -1 if that loop is gone or not made yet (fn not run). */
int hn_loop_post(hn_loop_inbox *to, hn_work_fn *fn, void *arg);
/* pthread_create with every signal blocked in the new thread (signals are
 * the main loop's business). Returns pthread_create's result. */
int hn_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg);

/* ---- router.c: routes, pattern matching ----------------------------------- */
#define HN_ROUTE_MAX_PARAMS 8
typedef struct hn_route_match {
    hn_route_fn *fn;
    void *state;
    const char *plugin;
    const char *pattern; /* the route's pattern (owned by the router) */
    int nparams;
    const char *names[HN_ROUTE_MAX_PARAMS];
    char *values[HN_ROUTE_MAX_PARAMS]; /* malloc'd; hn_route_match_clear frees */
} hn_route_match;
int hn_router_add(const char *plugin, unsigned methods, const char *pattern, hn_route_fn *fn,
                  void *state, char *err, size_t errlen);
void hn_router_freeze(void);
/* 0: matched; 1: path known but not for this method (405); -1: no route. */
int hn_router_match(unsigned method, const char *path, hn_route_match *out);
/* Methods registered for a path (for 405 Allow and CORS preflight). */
unsigned hn_router_methods(const char *path);
void hn_route_match_clear(hn_route_match *m);
void hn_router_dump(FILE *out);
/* Calls fn for every route in registration order (after the freeze). */
void hn_router_each(void (*fn)(void *arg, unsigned methods, const char *pattern,
                               const char *plugin),
                    void *arg);
void hn_router_reset(void); /* tests only */

/* ---- profanity.c: api->text_profane --------------------------------------- */
bool hn_text_profane(const char *text);

/* ---- http.c: the HTTP server ---------------------------------------------- */
typedef struct hn_http_config {
    const char *listen;   /* "127.0.0.1:7001", "[::1]:7001", "0.0.0.0:80" */
    int threads;          /* HTTP loop threads sharing the socket */
    size_t max_body;      /* bytes; larger bodies get 413 */
    size_t max_headers;   /* bytes of all headers; larger get 431/400 */
    int timeout_s;        /* read/write timeout per connection (slow clients) */
    const char *node_name;/* value of the Horde-Node response header */
} hn_http_config;
int hn_http_start(const hn_http_config *cfg, char *err, size_t errlen);
/* Stops accepting, lets in-flight requests finish (bounded), joins threads. */
void hn_http_stop(void);
/* Fills the request/response/local_request/req_post members of the table. */
void hn_http_fill_api(hn_api *api);
/* The port actually bound (after hn_http_start; useful with port 0). */
int hn_http_port(void);

/* ---- hooks.c ---------------------------------------------------------------- */
int hn_hooks_add(const char *plugin, unsigned hook_id, hn_hook_fn_generic fn, void *state,
                 const hn_hook_order *order, char *err, size_t errlen);
/* Sorts every hook's handlers (bucket, then before/after, then load order);
 * a cycle is an error naming the hook and plugins. */
int hn_hooks_freeze(char *err, size_t errlen);
const hn_hook_entry *hn_hooks_handlers(unsigned hook_id, size_t *n);
const char *hn_hook_name(unsigned hook_id);
void hn_hooks_dump(FILE *out);
void hn_hooks_reset(void); /* tests only */

/* ---- providers.c ------------------------------------------------------------ */
int hn_providers_add(const char *plugin, const char *kind, const char *name, uint32_t version,
                     const void *vt, void *state, char *err, size_t errlen);
/* Checks each configured choice (providers.<kind> = name) exists and picks
 * one per kind. `choices` is NULL-terminated pairs kind, name. */
int hn_providers_freeze(const char *const *choices, char *err, size_t errlen);
const hn_provider *hn_providers_get(const char *kind);
void hn_providers_dump(FILE *out);
void hn_providers_reset(void); /* tests only */

#endif
