/* storage-pg: `db migrate` and `db status` (see db_command.h). */
#include "db_command.h"

#include <stdio.h>
#include <string.h>

/* Prints every owner's schema version from the version table, which both
 * storage providers keep under the same name. Returns the exit status. */
static int print_versions(const hn_provider *p) {
    const hn_storage_vt *db = p->vt;
    hn_error err = {0};
    hn_db *c = db->acquire(p->state, &err);
    if (!c) {
        fprintf(stderr, "db: %s\n", err.message);
        return 1;
    }
    hn_stmt *st = db->query(c, "SELECT owner, version FROM hn_schema_version ORDER BY owner",
                            NULL, 0, &err);
    int rc = 0;
    if (!st) {
        fprintf(stderr, "db: %s\n", err.message);
        rc = 1;
    } else {
        printf("storage: %s (dialect %s, plugin %s)\n", p->name, db->dialect, p->plugin);
        printf("%-24s %s\n", "owner", "version");
        int rows = 0, r;
        while ((r = db->step(st, &err)) == 1) {
            printf("%-24s %lld\n", db->col_text(st, 0), (long long)db->col_int(st, 1));
            rows++;
        }
        if (r < 0) {
            fprintf(stderr, "db: %s\n", err.message);
            rc = 1;
        } else if (rows == 0) {
            printf("(no plugin has a schema yet)\n");
        }
        db->finish(st);
    }
    db->release(p->state, c);
    return rc;
}

static int db_command_run(int argc, char **argv, void *state) {
    const hn_api *api = ((const db_command_ctx *)state)->api;
    const char *sub = argc > 1 ? argv[1] : NULL;
    if (!sub || argc > 2 || (strcmp(sub, "migrate") != 0 && strcmp(sub, "status") != 0)) {
        fprintf(stderr, "usage: horde-node -c FILE db migrate|status\n");
        return 2;
    }
    const hn_provider *p = api->provider_get("storage");
    if (!p) {
        fprintf(stderr, "db: no storage provider is loaded\n");
        return 1;
    }
    const hn_storage_vt *db = p->vt;
    if (db->size < sizeof(hn_storage_vt) || db->version != HN_STORAGE_VERSION) {
        fprintf(stderr, "db: the storage provider %s has an unknown interface version\n",
                p->name);
        return 1;
    }
    /* Plugins migrated in start, before we were called: failing migrations
     * stopped the node there with their error. */
    if (strcmp(sub, "migrate") == 0)
        printf("every loaded plugin's migrations are applied\n");
    return print_versions(p);
}

int db_command_register(hn_plugin *self, db_command_ctx *ctx) {
    return ctx->api->command_add(self, "db",
                            "migrate|status  apply the loaded plugins' schema migrations / list "
                            "schema versions",
                            HN_CMD_START, db_command_run, ctx);
}
