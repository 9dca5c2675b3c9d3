/* horde-node plugin SDK: the host API table.
 *
 * The core hands every plugin one `const hn_api *` in init. It is the whole
 * way into the core: plugins are linked -Wl,-z,defs and the core exports no
 * symbols. The table is append-only: new functions go at the end and bump
 * HN_ABI_MINOR; a plugin that uses a newer function checks HN_API_HAS first.
 *
 * Threads: the node runs one main loop (timers, lifecycle, work completions)
 * and one or more HTTP loops. Route handlers run on an HTTP loop thread and
 * must answer on that same thread; blocking work goes to work_submit. The
 * registries (hooks, providers, routes) are frozen after every init, so
 * lookups and hook runs need no locks from any thread.
 */
#ifndef HN_API_H
#define HN_API_H

#include <stdarg.h>

#include <jansson.h>

#include "plugin.h"
#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define HN_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define HN_PRINTF(fmt, args)
#endif

/* HTTP methods, as bits so a route can take several. */
enum {
    HN_GET = 1u << 0,
    HN_POST = 1u << 1,
    HN_PUT = 1u << 2,
    HN_DELETE = 1u << 3,
    HN_PATCH = 1u << 4,
    HN_HEAD = 1u << 5,
    HN_OPTIONS = 1u << 6
};

typedef enum hn_log_level {
    HN_LOG_ERROR = 0,
    HN_LOG_WARN = 1,
    HN_LOG_INFO = 2,
    HN_LOG_DEBUG = 3
} hn_log_level;

/* Hook ordering: a bucket, then optional plugin names to run before/after.
 * The arrays are NULL-terminated and must outlive init (use static data). */
enum { HN_ORDER_FIRST = -100, HN_ORDER_MIDDLE = 0, HN_ORDER_LAST = 100 };
typedef struct hn_hook_order {
    int bucket;
    const char *const *before; /* run before these plugins' handlers */
    const char *const *after;  /* run after these plugins' handlers */
} hn_hook_order;

/* A registered handler as the runners in hooks.h see it. */
typedef void (*hn_hook_fn_generic)(void);
typedef struct hn_hook_entry {
    hn_hook_fn_generic fn;
    void *state;
    const char *plugin; /* name of the plugin that registered it */
} hn_hook_entry;

/* A provider: one named implementation of an interface (see storage.h,
 * images.h, generator.h, horde.h). `vt` points to the interface's function
 * table, which starts with uint32_t size, uint32_t version; `state` is passed
 * back as the first argument of every function in it. Owned by the plugin
 * that registered it; valid until that plugin's fini. */
typedef struct hn_provider {
    const char *kind;
    const char *name;
    uint32_t version;
    const void *vt;
    void *state;
    const char *plugin;
} hn_provider;

typedef void hn_route_fn(hn_request *req, void *state);
/* A command-line command. argv[0] is the command's name. Returns the exit
 * status. Messages go to stdout/stderr: a command is a user interface. */
typedef int hn_command_fn(int argc, char **argv, void *state);
typedef void hn_timer_fn(void *state);
typedef void hn_work_fn(void *arg);

/* command flags */
enum {
    /* start every plugin (storage, ...) before running the command, stop
     * them afterwards. Without it only init has run. */
    HN_CMD_START = 1u << 0
};

typedef struct hn_api {
    uint32_t size; /* sizeof(hn_api) of the host */
    uint16_t abi_major;
    uint16_t abi_minor;

    /* ---- node facts (valid from init on) ---- */
    const char *(*version)(void);
    /* Absolute data directory (created by the core). */
    const char *(*data_dir)(void);
    /* Base URL clients reach this node at, no trailing slash
     * ("http://127.0.0.1:7001"), from node.public_url or the listen address. */
    const char *(*public_url)(void);
    /* Directory of the config file in use (for resolving relative paths). */
    const char *(*config_dir)(void);

    /* ---- logging and errors ---- */
    void (*log)(hn_plugin *self, hn_log_level level, const char *fmt, ...) HN_PRINTF(3, 4);
    /* Fills err and returns HN_ERROR, so `return api->error(err, ...)` reads well. */
    hn_rc (*error)(hn_error *err, int status, const char *rc, const char *fmt, ...)
        HN_PRINTF(4, 5);

    /* ---- registration: only from init, else they fail with -1 ---- */
    int (*hook_add)(hn_plugin *self, unsigned hook_id, hn_hook_fn_generic fn, void *state,
                    const hn_hook_order *order);
    int (*provider_add)(hn_plugin *self, const char *kind, const char *name, uint32_t version,
                        const void *vt, void *state);
    /* pattern: "/api/v2/generate/check/{id}"; {name} matches one segment.
     * A route registered twice for the same method is an init error. */
    int (*route_add)(hn_plugin *self, unsigned methods, const char *pattern, hn_route_fn *fn,
                     void *state);
    int (*command_add)(hn_plugin *self, const char *name, const char *usage, unsigned flags,
                       hn_command_fn *fn, void *state);
    /* Runs fn on the main loop every interval_ms once the node runs. */
    int (*timer_add)(hn_plugin *self, unsigned interval_ms, hn_timer_fn *fn, void *state);

    /* ---- lookups (after init) ---- */
    const hn_hook_entry *(*hook_handlers)(unsigned hook_id, size_t *n);
    /* The provider of `kind` chosen by config (providers.<kind> = "name"), or
     * the only one registered; NULL if none. Valid from start on. */
    const hn_provider *(*provider_get)(const char *kind);

    /* ---- threads ---- */
    /* Runs work(arg) on a pool thread, then done(arg) on the loop thread that
     * called work_submit (the main loop when called from elsewhere). done may
     * be NULL. Returns 0, or -1 when the node is stopping. */
    int (*work_submit)(hn_work_fn *work, hn_work_fn *done, void *arg);

    /* ---- HTTP requests (on the request's loop thread) ---- */
    unsigned (*req_method)(hn_request *req);
    const char *(*req_path)(hn_request *req); /* decoded path, no query */
    const char *(*req_param)(hn_request *req, const char *name);  /* {name} in the route */
    const char *(*req_query)(hn_request *req, const char *name);  /* decoded; NULL if absent */
    const char *(*req_header)(hn_request *req, const char *name); /* NULL if absent */
    const char *(*req_client_ip)(hn_request *req);
    /* Body bytes, NUL-terminated for convenience; owned by the request and
     * valid until it is answered (also while it is suspended). */
    const void *(*req_body)(hn_request *req, size_t *len);
    /* Parsed JSON body, borrowed (owned by the request). NULL with err set to
     * a 400 (rc BadRequest, or NulByteInPayload) when the body is not JSON.
     * An empty body gives an empty object. */
    json_t *(*req_json)(hn_request *req, hn_error *err);

    /* ---- HTTP responses: exactly one per request ---- */
    int (*resp_header)(hn_request *req, const char *name, const char *value);
    /* Steals the reference to body. */
    void (*respond_json)(hn_request *req, int status, json_t *body);
    /* {"message": err->message, "rc": err->rc} with err->status. */
    void (*respond_error)(hn_request *req, const hn_error *err);
    /* Copies data. */
    void (*respond)(hn_request *req, int status, const char *content_type, const void *data,
                    size_t len);
    /* Keeps the request open after the handler returns; the plugin answers
     * later on the same loop thread (from a work_submit done callback). */
    void (*req_suspend)(hn_request *req);
    /* From any thread: runs fn(arg) on the loop thread that owns the
     * (suspended) request, typically to answer it once a background write
     * committed. Returns 0, or -1 if the node is stopping (fn not run). */
    int (*req_post)(hn_request *req, hn_work_fn *fn, void *arg);

    /* ---- in-process HTTP ---- */
    /* Runs a request through the router with no socket, as if it came from
     * 127.0.0.1 (the worker's `local` horde). headers: name, value pairs,
     * NULL-terminated. On return *resp_body (malloc'd, NUL-terminated; the
     * caller frees it) holds the answer. Blocks: call it off the loop threads
     * (from a pool or the plugin's own thread). Returns 0, or -1 if the node
     * is not running. */
    int (*local_request)(unsigned method, const char *path, const char *const *headers,
                         const void *body, size_t len, int *status, char **resp_body,
                         size_t *resp_len);

    /* ---- added in ABI 1.2 ---- */
    /* Where a setting is written in the config file, for errors about values
     * the schema cannot check: path like "plugins.worker.api_key"; writes
     * "file:line" to buf and returns 0, or -1 when the setting is absent. */
    int (*conf_where)(const char *path, char *buf, size_t len);

    /* ---- added in ABI 1.3 ---- */
    /* Calls fn(arg, methods, pattern, plugin) for every registered route, in
     * registration order (HN_GET | HN_POST ... bits; strings owned by the
     * core). Valid once every init has run (e.g. in a route handler): the
     * broker's /api/swagger.json lists what the node really serves. */
    void (*routes_each)(void (*fn)(void *arg, unsigned methods, const char *pattern,
                                   const char *plugin),
                        void *arg);
    /* Whether text holds a profane word (spec §5's profanity checks of
     * usernames, contacts, worker names/info and team names): a small fixed
     * word list, whole words, case-insensitive. NULL text is not profane. */
    bool (*text_profane)(const char *text);
    /* Replaces what req_client_ip answers for this request (the horde's
     * service-account proxies: Proxy-Authorization + Proxied-For). Call it
     * from hook http_request, before handlers read the address; an ip of 64
     * bytes or more is ignored. */
    void (*req_set_client_ip)(hn_request *req, const char *ip);
} hn_api;

/* True when the host's table has member `fn` (for plugins built against a
 * newer minor than the host they run in). */
#define HN_API_HAS(api, fn) \
    ((api)->size >= offsetof(hn_api, fn) + sizeof((api)->fn) && (api)->fn != NULL)

#ifdef __cplusplus
}
#endif

#include "hooks.h"

#endif
