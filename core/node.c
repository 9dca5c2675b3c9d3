/* The node's lifecycle and the host API table handed to plugins.
 *
 * Phases: LOAD (config, dlopen, checks) -> INIT (plugins register hooks,
 * providers, routes, commands, timers) -> FROZEN (registries sorted, read-only)
 * -> then one of: print (-t), run a command, or serve. Registration outside
 * INIT is refused, which is what lets every lookup run lock-free. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "hn/error.h"
#include "node.h"
#include "plugin.h"

#ifndef HN_VERSION
#define HN_VERSION "0.0.0"
#endif
#ifndef HN_PREFIX
#define HN_PREFIX "/usr/local"
#endif

typedef enum { PHASE_LOAD, PHASE_INIT, PHASE_FROZEN } node_phase;

typedef struct command_reg {
    const char *name;
    const char *usage;
    unsigned flags;
    hn_command_fn *fn;
    void *state;
    const char *plugin;
} command_reg;

static struct {
    node_phase phase;
    hn_config *cfg;
    hn_plugin **plugins;
    size_t nplugins;
    hn_plugin *current; /* the plugin whose init is running */
    char data_dir[PATH_MAX];
    char public_url[512];
    command_reg *commands;
    size_t ncommands;
    hn_api api;
} g_node;

/* ---- api: node facts, logging, errors ------------------------------------ */

static const char *api_version(void) { return HN_VERSION; }
static const char *api_data_dir(void) { return g_node.data_dir; }
static const char *api_config_dir(void) { return g_node.cfg ? hn_config_dir(g_node.cfg) : "."; }

static const char *api_public_url(void) {
    const hn_node_settings *ns = hn_config_node(g_node.cfg);
    if (ns->public_url && ns->public_url[0]) {
        snprintf(g_node.public_url, sizeof g_node.public_url, "%s", ns->public_url);
    } else {
        /* From the listen address; a wildcard host is reached on loopback. */
        const char *listen = ns->listen;
        int port = hn_http_port();
        const char *colon = strrchr(listen, ':');
        char host[256];
        snprintf(host, sizeof host, "%.*s", colon ? (int)(colon - listen) : (int)strlen(listen),
                 listen);
        if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "") == 0)
            snprintf(host, sizeof host, "127.0.0.1");
        else if (strcmp(host, "[::]") == 0)
            snprintf(host, sizeof host, "[::1]");
        if (port > 0)
            snprintf(g_node.public_url, sizeof g_node.public_url, "http://%s:%d", host, port);
        else
            snprintf(g_node.public_url, sizeof g_node.public_url, "http://%s:%s", host,
                     colon ? colon + 1 : "80");
    }
    size_t n = strlen(g_node.public_url);
    while (n > 0 && g_node.public_url[n - 1] == '/')
        g_node.public_url[--n] = '\0';
    return g_node.public_url;
}

static const char *plugin_name(const hn_plugin *p) { return p ? p->desc->name : "core"; }

static void api_log(hn_plugin *self, hn_log_level level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    hn_logv(plugin_name(self), level, fmt, ap);
    va_end(ap);
}

static hn_rc api_error(hn_error *err, int status, const char *rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    hn_rc r = hn_error_setv(err, status, rc, fmt, ap);
    va_end(ap);
    return r;
}

/* ---- api: registration ----------------------------------------------------- */

static bool registering(hn_plugin *self, const char *what) {
    if (g_node.phase != PHASE_INIT || self == NULL || self != g_node.current) {
        hn_logf(plugin_name(self), HN_LOG_ERROR,
                "%s refused: registrations are only allowed in the plugin's own init", what);
        return false;
    }
    return true;
}

static int api_hook_add(hn_plugin *self, unsigned hook_id, hn_hook_fn_generic fn, void *state,
                        const hn_hook_order *order) {
    if (!registering(self, "hook_add"))
        return -1;
    char err[256];
    if (hn_hooks_add(self->desc->name, hook_id, fn, state, order, err, sizeof err) != 0) {
        hn_logf(self->desc->name, HN_LOG_ERROR, "%s", err);
        return -1;
    }
    return 0;
}

static int api_provider_add(hn_plugin *self, const char *kind, const char *name,
                            uint32_t version, const void *vt, void *state) {
    if (!registering(self, "provider_add"))
        return -1;
    char err[512];
    if (hn_providers_add(self->desc->name, kind, name, version, vt, state, err, sizeof err)) {
        hn_logf(self->desc->name, HN_LOG_ERROR, "%s", err);
        return -1;
    }
    return 0;
}

static int api_route_add(hn_plugin *self, unsigned methods, const char *pattern,
                         hn_route_fn *fn, void *state) {
    if (!registering(self, "route_add"))
        return -1;
    char err[512];
    if (hn_router_add(self->desc->name, methods, pattern, fn, state, err, sizeof err) != 0) {
        hn_logf(self->desc->name, HN_LOG_ERROR, "%s", err);
        return -1;
    }
    return 0;
}

static int api_command_add(hn_plugin *self, const char *name, const char *usage,
                           unsigned flags, hn_command_fn *fn, void *state) {
    if (!registering(self, "command_add"))
        return -1;
    for (size_t i = 0; i < g_node.ncommands; i++) {
        if (strcmp(g_node.commands[i].name, name) == 0) {
            hn_logf(self->desc->name, HN_LOG_ERROR,
                    "command \"%s\" is already registered by plugin \"%s\"", name,
                    g_node.commands[i].plugin);
            return -1;
        }
    }
    command_reg *c = realloc(g_node.commands, (g_node.ncommands + 1) * sizeof *c);
    if (c == NULL)
        return -1;
    g_node.commands = c;
    c[g_node.ncommands++] = (command_reg){name, usage ? usage : "", flags, fn, state,
                                          self->desc->name};
    return 0;
}

static int api_timer_add(hn_plugin *self, unsigned interval_ms, hn_timer_fn *fn, void *state) {
    if (!registering(self, "timer_add"))
        return -1;
    if (interval_ms == 0 || fn == NULL)
        return -1;
    return hn_loop_timer_add(interval_ms, fn, state);
}

static const hn_provider *api_provider_get(const char *kind) { return hn_providers_get(kind); }

static int api_conf_where(const char *path, char *buf, size_t len) {
    if (g_node.cfg == NULL || path == NULL || buf == NULL || len == 0)
        return -1;
    return hn_config_where(g_node.cfg, path, buf, len);
}

static void fill_api(void) {
    hn_api *a = &g_node.api;
    memset(a, 0, sizeof *a);
    a->size = sizeof *a;
    a->abi_major = HN_ABI_MAJOR;
    a->abi_minor = HN_ABI_MINOR;
    a->version = api_version;
    a->data_dir = api_data_dir;
    a->public_url = api_public_url;
    a->config_dir = api_config_dir;
    a->log = api_log;
    a->error = api_error;
    a->hook_add = api_hook_add;
    a->provider_add = api_provider_add;
    a->route_add = api_route_add;
    a->command_add = api_command_add;
    a->timer_add = api_timer_add;
    a->hook_handlers = hn_hooks_handlers;
    a->provider_get = api_provider_get;
    a->conf_where = api_conf_where;
    a->routes_each = hn_router_each;
    a->text_profane = hn_text_profane;
    hn_loop_fill_api(a);
    hn_http_fill_api(a);
}

/* ---- paths ---------------------------------------------------------------- */

/* snprintf for paths: false when the result did not fit. (Through a va_list
 * so that -Wformat-truncation does not second-guess every call.) */
static bool pathf(char *out, size_t len, const char *fmt, ...) HN_PRINTF(3, 4);
static bool pathf(char *out, size_t len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, len, fmt, ap);
    va_end(ap);
    return n >= 0 && (size_t)n < len;
}

static int exe_dir(char *out, size_t len) {
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *slash = strrchr(buf, '/');
    if (slash == NULL)
        return -1;
    *slash = '\0';
    pathf(out, len, "%s", buf);
    return 0;
}

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int hn_node_default_config(char *out, size_t len) {
    char dir[PATH_MAX];
    if (exe_dir(dir, sizeof dir) == 0) {
        /* build/horde-node -> etc/horde-node.conf in the source tree;
         * PREFIX/bin/horde-node -> PREFIX/etc/horde-node.conf. */
        pathf(out, len, "%s/../etc/horde-node.conf", dir);
        if (is_file(out))
            return 0;
    }
    pathf(out, len, "%s/etc/horde-node.conf", HN_PREFIX);
    return is_file(out) ? 0 : -1;
}

static int plugin_dir(char *out, size_t len) {
    const hn_node_settings *ns = hn_config_node(g_node.cfg);
    if (ns->plugin_path && ns->plugin_path[0]) {
        if (ns->plugin_path[0] == '/')
            pathf(out, len, "%s", ns->plugin_path);
        else
            pathf(out, len, "%s/%s", hn_config_dir(g_node.cfg), ns->plugin_path);
        return 0;
    }
    char dir[PATH_MAX];
    if (exe_dir(dir, sizeof dir) == 0) {
        pathf(out, len, "%s/plugins", dir); /* the build tree */
        if (is_dir(out))
            return 0;
        pathf(out, len, "%s/../lib/horde-node/plugins", dir); /* installed */
        if (is_dir(out))
            return 0;
    }
    pathf(out, len, "%s/lib/horde-node/plugins", HN_PREFIX);
    return 0;
}

static int make_dirs(const char *path) {
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* ---- lifecycle ------------------------------------------------------------- */

static int load_plugins(char *err, size_t errlen) {
    char dir[PATH_MAX];
    plugin_dir(dir, sizeof dir);
    size_t n = hn_config_load_count(g_node.cfg);
    g_node.plugins = calloc(n + 1, sizeof *g_node.plugins);
    const char **names = calloc(n + 1, sizeof *names);
    if (g_node.plugins == NULL || names == NULL) {
        free(names);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const hn_load_entry *e = hn_config_load_at(g_node.cfg, i);
        hn_plugin *p;
        char msg[1024];
        if (hn_plugin_open(e->spec, dir, hn_config_dir(g_node.cfg), &p, msg, sizeof msg) != 0) {
            snprintf(err, errlen, "%s (%s:%d)", msg, hn_config_path(g_node.cfg), e->line);
            rc = -1;
            break;
        }
        for (size_t j = 0; j < g_node.nplugins; j++) {
            if (strcmp(g_node.plugins[j]->desc->name, p->desc->name) == 0) {
                snprintf(err, errlen,
                         "plugin name \"%s\" of %s is already taken by %s: names must be "
                         "unique (%s:%d)",
                         p->desc->name, p->path, g_node.plugins[j]->path,
                         hn_config_path(g_node.cfg), e->line);
                hn_plugin_free(p);
                rc = -1;
                break;
            }
        }
        if (rc != 0)
            break;
        g_node.plugins[g_node.nplugins++] = p;
        names[i] = p->desc->name;
    }
    if (rc == 0)
        rc = hn_config_check_sections(g_node.cfg, names, err, errlen);
    for (size_t i = 0; rc == 0 && i < g_node.nplugins; i++) {
        hn_plugin *p = g_node.plugins[i];
        rc = hn_config_apply(g_node.cfg, p->desc->name, p->desc->conf, p->conf, err, errlen);
    }
    free(names);
    return rc;
}

static int init_plugins(char *err, size_t errlen) {
    g_node.phase = PHASE_INIT;
    for (size_t i = 0; i < g_node.nplugins; i++) {
        hn_plugin *p = g_node.plugins[i];
        hn_error e = {0};
        g_node.current = p;
        hn_rc rc = p->desc->init(p, &g_node.api, p->conf, &p->state, &e);
        g_node.current = NULL;
        if (rc != HN_OK) {
            snprintf(err, errlen, "plugin \"%s\": init failed: %s", p->desc->name,
                     e.message[0] ? e.message : "(no message)");
            return -1;
        }
        p->inited = true;
    }
    if (hn_hooks_freeze(err, errlen) != 0)
        return -1;
    if (hn_providers_freeze(hn_config_provider_choices(g_node.cfg), err, errlen) != 0)
        return -1;
    hn_router_freeze();
    g_node.phase = PHASE_FROZEN;
    return 0;
}

static int start_plugins(char *err, size_t errlen) {
    for (size_t i = 0; i < g_node.nplugins; i++) {
        hn_plugin *p = g_node.plugins[i];
        if (p->desc->start == NULL) {
            p->started = true;
            continue;
        }
        hn_error e = {0};
        if (p->desc->start(p->state, &e) != HN_OK) {
            snprintf(err, errlen, "plugin \"%s\": start failed: %s", p->desc->name,
                     e.message[0] ? e.message : "(no message)");
            return -1;
        }
        p->started = true;
    }
    return 0;
}

static void stop_plugins(void) {
    for (size_t i = g_node.nplugins; i-- > 0;) {
        hn_plugin *p = g_node.plugins[i];
        if (p->started && p->desc->stop)
            p->desc->stop(p->state);
        p->started = false;
    }
}

static void fini_plugins(void) {
    for (size_t i = g_node.nplugins; i-- > 0;) {
        hn_plugin *p = g_node.plugins[i];
        if (p->inited && p->desc->fini)
            p->desc->fini(p->state);
        p->inited = false;
        hn_plugin_free(p);
    }
    free(g_node.plugins);
    g_node.plugins = NULL;
    g_node.nplugins = 0;
}

static void print_test(FILE *out) {
    fprintf(out, "config %s: ok\n", hn_config_path(g_node.cfg));
    fprintf(out, "plugins:\n");
    if (g_node.nplugins == 0)
        fprintf(out, "  (none)\n");
    for (size_t i = 0; i < g_node.nplugins; i++) {
        const hn_plugin *p = g_node.plugins[i];
        fprintf(out, "  %-16s %-8s abi %u.%u  %s\n", p->desc->name,
                p->desc->version ? p->desc->version : "?", p->desc->abi_major,
                p->desc->abi_minor, p->path);
        hn_config_dump_plugin(out, p->desc->conf, p->conf);
    }
    hn_providers_dump(out);
    hn_hooks_dump(out);
    hn_router_dump(out);
    fprintf(out, "commands:\n");
    for (size_t i = 0; i < g_node.ncommands; i++)
        fprintf(out, "  %-10s from %s\n", g_node.commands[i].name, g_node.commands[i].plugin);
}

static void print_help(FILE *out) {
    fprintf(out,
            "usage: horde-node [-c FILE] [--listen ADDR:PORT] [--data-dir DIR] [-t] "
            "[COMMAND ARGS...]\n\ncommands:\n  help       this list\n");
    for (size_t i = 0; i < g_node.ncommands; i++)
        fprintf(out, "  %-10s %s  (plugin %s)\n", g_node.commands[i].name,
                g_node.commands[i].usage, g_node.commands[i].plugin);
}

static void on_stop(void *arg) {
    (void)arg;
    hn_logf(NULL, HN_LOG_INFO, "stopping");
    hn_loop_stop();
}

static void on_reload(void *arg) {
    (void)arg;
    hn_logf(NULL, HN_LOG_INFO, "reload requested (SIGHUP)");
    hn_run_config_reload(&g_node.api, hn_config_path(g_node.cfg));
}

static void tick(void *arg) {
    (void)arg;
    hn_run_node_tick(&g_node.api, (int64_t)time(NULL));
}

static int run_command(int argc, char **argv) {
    if (strcmp(argv[0], "help") == 0) {
        print_help(stdout);
        return 0;
    }
    for (size_t i = 0; i < g_node.ncommands; i++) {
        command_reg *c = &g_node.commands[i];
        if (strcmp(c->name, argv[0]) != 0)
            continue;
        char err[1024];
        if ((c->flags & HN_CMD_START) && start_plugins(err, sizeof err) != 0) {
            fprintf(stderr, "horde-node: %s\n", err);
            stop_plugins();
            return 1;
        }
        int rc = c->fn(argc, argv, c->state);
        hn_loop_drain();
        stop_plugins();
        return rc;
    }
    fprintf(stderr, "horde-node: unknown command \"%s\" (try: horde-node help)\n", argv[0]);
    return 2;
}

static int serve(char *err, size_t errlen) {
    const hn_node_settings *ns = hn_config_node(g_node.cfg);
    /* Watch signals before anything can be told we are up: a SIGHUP sent
     * the moment the port answers must reload, not kill (libevent queues
     * it until the loop runs). */
    hn_loop_on_signals(on_stop, on_reload, NULL);
    if (start_plugins(err, errlen) != 0)
        return -1;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    /* The public horde sends Horde-Node: <host>:<port>:<version>. */
    const char *colon = strrchr(ns->listen, ':');
    char node_header[320];
    snprintf(node_header, sizeof node_header, "%.200s:%.10s:%s", ns->name,
             colon ? colon + 1 : "", HN_VERSION);
    hn_http_config hc = {
        .listen = ns->listen,
        .threads = ns->http_threads > 0 ? (int)ns->http_threads : (int)(cores > 0 ? cores : 1),
        .max_body = (size_t)ns->max_body,
        .max_headers = (size_t)ns->max_headers,
        .timeout_s = (int)ns->timeout,
        .node_name = node_header,
    };
    if (hn_http_start(&hc, err, errlen) != 0)
        return -1;
    hn_loop_timer_add(1000, tick, NULL);
    hn_logf(NULL, HN_LOG_INFO, "horde-node %s listening on %s (data in %s)", HN_VERSION,
            api_public_url(), g_node.data_dir);
    hn_loop_run();
    hn_http_stop();
    hn_loop_drain(); /* before any plugin stops: completions need their state */
    return 0;
}

int hn_node_main(const hn_node_opts *o) {
    char err[2048];
    char path[PATH_MAX];
    int status = 1;
    const char *cfg_path = o->config_path;
    if (cfg_path == NULL) {
        if (hn_node_default_config(path, sizeof path) != 0) {
            fprintf(stderr, "horde-node: no config given (-c FILE) and no default config found "
                            "(etc/horde-node.conf)\n");
            return 1;
        }
        cfg_path = path;
    }
    if (hn_config_load(cfg_path, &g_node.cfg, err, sizeof err) != 0) {
        fprintf(stderr, "horde-node: %s\n", err);
        return 1;
    }
    hn_node_settings *ns = hn_config_node(g_node.cfg);
    if (o->listen)
        ns->listen = o->listen;
    if (o->data_dir)
        ns->data_dir = o->data_dir;
    hn_log_level lvl = HN_LOG_INFO;
    hn_log_parse_level(ns->log_level, &lvl);
    hn_log_set_level(lvl);
    if (hn_log_open(ns->log_file, err, sizeof err) != 0) {
        fprintf(stderr, "horde-node: %s\n", err);
        goto out;
    }
    if (make_dirs(ns->data_dir) != 0 || realpath(ns->data_dir, g_node.data_dir) == NULL) {
        fprintf(stderr, "horde-node: cannot create data dir %s: %s\n", ns->data_dir,
                strerror(errno));
        goto out;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int pool = ns->pool_threads > 0 ? (int)ns->pool_threads : 2 * (int)(cores > 0 ? cores : 1);
    if (hn_loop_init(pool, err, sizeof err) != 0) {
        fprintf(stderr, "horde-node: %s\n", err);
        goto out;
    }
    fill_api();
    if (load_plugins(err, sizeof err) != 0 || init_plugins(err, sizeof err) != 0) {
        fprintf(stderr, "horde-node: %s\n", err);
        goto out_plugins;
    }
    if (o->test_only) {
        print_test(stdout);
        status = 0;
    } else if (o->argc > 0) {
        status = run_command(o->argc, o->argv);
    } else if (serve(err, sizeof err) != 0) {
        fprintf(stderr, "horde-node: %s\n", err);
        status = 1;
    } else {
        status = 0;
    }
    stop_plugins();
out_plugins:
    fini_plugins();
    hn_loop_fini();
out:
    free(g_node.commands);
    g_node.commands = NULL;
    g_node.ncommands = 0;
    hn_config_free(g_node.cfg);
    g_node.cfg = NULL;
    hn_log_close();
    return status;
}
