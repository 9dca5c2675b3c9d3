/* storage-pg: the plugin. Registers the `storage` provider "postgres" and the
 * `db` command in init, and connects in start (pg_store.c does the work). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hn/hn.h>

#include "db_command.h"
#include "pg_store.h"

typedef struct pg_conf {
    const char *dsn;
    long long max_connections;
    long long connect_timeout_s;
    long long start_timeout_s;
    long long busy_timeout_ms;
    long long statement_cache;
} pg_conf;

static const hn_conf_spec pg_conf_spec[] = {
    {"dsn", HN_CONF_STRING, offsetof(pg_conf, dsn), NULL, 0, 0,
     HN_CONF_REQUIRED | HN_CONF_SECRET,
     "libpq connection string (\"host=... dbname=... user=...\") or URI "
     "(\"postgresql://user@host/db\")"},
    {"max_connections", HN_CONF_INT, offsetof(pg_conf, max_connections), "16", 1, 1000, 0,
     "most connections this node opens (one per thread using the database at once)"},
    {"connect_timeout_s", HN_CONF_INT, offsetof(pg_conf, connect_timeout_s), "5", 2, 600, 0,
     "how long one connection attempt may take"},
    {"start_timeout_s", HN_CONF_INT, offsetof(pg_conf, start_timeout_s), "30", 0, 86400, 0,
     "how long start keeps retrying an unreachable server before the node gives up"},
    {"busy_timeout_ms", HN_CONF_INT, offsetof(pg_conf, busy_timeout_ms), "5000", 0, 600000, 0,
     "how long a statement waits for a row lock (lock_timeout), and a caller for a free "
     "connection, before failing with 503 StorageBusy"},
    {"statement_cache", HN_CONF_INT, offsetof(pg_conf, statement_cache), "64", 0, 4096, 0,
     "prepared statements kept per connection"},
    HN_CONF_END,
};

typedef struct pg_plugin {
    db_command_ctx cmd;
    hn_plugin *self;
    const hn_api *api;
    pg_store *store;
} pg_plugin;

static void log_retry(void *ctx, const char *message) {
    pg_plugin *p = ctx;
    p->api->log(p->self, HN_LOG_WARN, "%s", message);
}

static hn_rc pg_init(hn_plugin *self, const hn_api *api, void *confp, void **state,
                     hn_error *err) {
    const pg_conf *conf = confp;
    if (!conf->dsn || !conf->dsn[0])
        return api->error(err, 500, "ConfigError", "storage-pg: dsn is empty");
    pg_plugin *p = calloc(1, sizeof *p);
    if (!p)
        return api->error(err, 500, "OutOfMemory", "storage-pg: out of memory");
    p->self = self;
    p->api = api;
    p->cmd.api = api;
    *state = p;
    pg_options opt = {
        .dsn = conf->dsn,
        .max_connections = (int)conf->max_connections,
        .connect_timeout_s = (int)conf->connect_timeout_s,
        .start_timeout_s = (int)conf->start_timeout_s,
        .busy_timeout_ms = (int)conf->busy_timeout_ms,
        .stmt_cache_size = (int)conf->statement_cache,
        .log = log_retry,
        .log_ctx = p,
    };
    p->store = pg_store_new(&opt);
    if (!p->store)
        return api->error(err, 500, "OutOfMemory", "storage-pg: out of memory");
    if (api->provider_add(self, "storage", "postgres", HN_STORAGE_VERSION, &pg_storage_vt,
                          p->store) != 0 ||
        db_command_register(self, &p->cmd) != 0)
        return api->error(err, 500, "InitError", "storage-pg: a registration failed");
    return HN_OK;
}

static hn_rc pg_start(void *state, hn_error *err) {
    pg_plugin *p = state;
    if (pg_store_open(p->store, err) != HN_OK)
        return HN_ERROR;
    p->api->log(p->self, HN_LOG_INFO, "connected to PostgreSQL");
    return HN_OK;
}

static void pg_stop(void *state) {
    pg_plugin *p = state;
    int lent = pg_store_shutdown(p->store);
    if (lent > 0)
        p->api->log(p->self, HN_LOG_WARN,
                    "%d connection(s) still in use at stop; closed when released", lent);
}

static void pg_fini(void *state) {
    pg_plugin *p = state;
    if (!p)
        return;
    pg_store_free(p->store);
    free(p);
}

static const hn_plugin_desc pg_desc = {
    HN_PLUGIN_DESC_INIT,
    .name = "storage-pg",
    .version = "1.0.0",
    .description = "the storage provider \"postgres\": PostgreSQL through libpq, pooled",
    .conf = pg_conf_spec,
    .conf_size = sizeof(pg_conf),
    .init = pg_init,
    .start = pg_start,
    .stop = pg_stop,
    .fini = pg_fini,
};

HN_PLUGIN_EXPORT const hn_plugin_desc *hn_plugin_entry(void) { return &pg_desc; }
