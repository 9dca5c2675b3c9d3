/* storage-sqlite: the plugin. Registers the `storage` provider "sqlite" in
 * init and opens the database in start (sqlite_store.c does the work). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hn/hn.h>

#include "sqlite_store.h"

typedef struct sqlite_conf {
    const char *path;
    long long busy_timeout_ms;
    long long max_connections;
    long long statement_cache;
    const char *sync;
} sqlite_conf;

static const hn_conf_spec sqlite_conf_spec[] = {
    {"path", HN_CONF_STRING, offsetof(sqlite_conf, path), NULL, 0, 0, 0,
     "database file; relative paths are under the data dir (default <data_dir>/horde.db)"},
    {"busy_timeout_ms", HN_CONF_INT, offsetof(sqlite_conf, busy_timeout_ms), "5000", 0, 600000,
     0, "how long a writer waits for the write lock, and a caller for a free connection"},
    {"max_connections", HN_CONF_INT, offsetof(sqlite_conf, max_connections), "64", 1, 4096, 0,
     "most connections open at once (one per thread using the database)"},
    {"statement_cache", HN_CONF_INT, offsetof(sqlite_conf, statement_cache), "64", 0, 4096, 0,
     "prepared statements kept per connection"},
    {"sync", HN_CONF_STRING, offsetof(sqlite_conf, sync), "full", 0, 0, 0,
     "\"full\": fsync on every commit (synchronous=FULL); \"group\": concurrent commits share "
     "one fsync; both return from commit only once it is durable"},
    HN_CONF_END,
};

typedef struct sqlite_plugin {
    hn_plugin *self;
    const hn_api *api;
    char *path;
    sq_store *store;
} sqlite_plugin;

static char *resolve_path(const char *data_dir, const char *path) {
    const char *p = path && path[0] ? path : "horde.db";
    if (p[0] == '/')
        return strdup(p);
    size_t n = strlen(data_dir) + 1 + strlen(p) + 1;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s/%s", data_dir, p);
    return out;
}

static hn_rc sqlite_init(hn_plugin *self, const hn_api *api, void *confp, void **state,
                         hn_error *err) {
    const sqlite_conf *conf = confp;
    sq_sync_mode mode;
    if (!conf->sync || strcmp(conf->sync, "full") == 0)
        mode = SQ_SYNC_FULL;
    else if (strcmp(conf->sync, "group") == 0)
        mode = SQ_SYNC_GROUP;
    else
        return api->error(err, 500, "ConfigError",
                          "storage-sqlite: sync must be \"full\" or \"group\", not \"%s\"",
                          conf->sync);
    if (conf->path && strcmp(conf->path, ":memory:") == 0)
        return api->error(err, 500, "ConfigError",
                          "storage-sqlite: an in-memory database cannot be shared by a pool; "
                          "give a file");
    sqlite_plugin *p = calloc(1, sizeof *p);
    if (!p)
        return api->error(err, 500, "OutOfMemory", "storage-sqlite: out of memory");
    p->self = self;
    p->api = api;
    p->path = resolve_path(api->data_dir(), conf->path);
    sq_options opt = {
        .path = p->path,
        .busy_timeout_ms = (int)conf->busy_timeout_ms,
        .max_connections = (int)conf->max_connections,
        .stmt_cache_size = (int)conf->statement_cache,
        .sync_mode = mode,
    };
    p->store = p->path ? sq_store_new(&opt) : NULL;
    if (!p->store) {
        free(p->path);
        free(p);
        return api->error(err, 500, "OutOfMemory", "storage-sqlite: out of memory");
    }
    *state = p;
    if (api->provider_add(self, "storage", "sqlite", HN_STORAGE_VERSION, &sq_storage_vt,
                          p->store) != 0)
        return api->error(err, 500, "InitError", "storage-sqlite: cannot register provider");
    return HN_OK;
}

static hn_rc sqlite_start(void *state, hn_error *err) {
    sqlite_plugin *p = state;
    if (sq_store_open(p->store, err) != HN_OK)
        return HN_ERROR;
    p->api->log(p->self, HN_LOG_INFO, "database %s (WAL)", p->path);
    return HN_OK;
}

static void sqlite_stop(void *state) {
    sqlite_plugin *p = state;
    int lent = sq_store_shutdown(p->store);
    if (lent > 0)
        p->api->log(p->self, HN_LOG_WARN,
                    "%d connection(s) still in use at stop; closed when released", lent);
}

static void sqlite_fini(void *state) {
    sqlite_plugin *p = state;
    if (!p)
        return;
    sq_store_free(p->store);
    free(p->path);
    free(p);
}

static const hn_plugin_desc sqlite_desc = {
    HN_PLUGIN_DESC_INIT,
    .name = "storage-sqlite",
    .version = "1.0.0",
    .description = "the storage provider \"sqlite\": SQLite in WAL mode, durable commits",
    .conf = sqlite_conf_spec,
    .conf_size = sizeof(sqlite_conf),
    .init = sqlite_init,
    .start = sqlite_start,
    .stop = sqlite_stop,
    .fini = sqlite_fini,
};

HN_PLUGIN_EXPORT const hn_plugin_desc *hn_plugin_entry(void) { return &sqlite_desc; }
