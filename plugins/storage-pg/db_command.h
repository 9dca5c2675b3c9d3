/* storage-pg: the `db` command (`horde-node -c FILE db migrate|status`).
 *
 * It works through the storage provider in use (api->provider_get), so it
 * reports on storage-sqlite just as well when both plugins are loaded. The
 * command is registered with HN_CMD_START: the node starts every plugin
 * first, and each plugin applies its own migrations in start, so by the time
 * the command runs the schema is current; `migrate` says so and lists the
 * versions, `status` lists them. */
#ifndef DB_COMMAND_H
#define DB_COMMAND_H

#include <hn/hn.h>

/* What the command needs; lives in the registering plugin's state. */
typedef struct db_command_ctx {
    const hn_api *api;
} db_command_ctx;

/* Registers `db` (from init); ctx must live until fini. */
int db_command_register(hn_plugin *self, db_command_ctx *ctx);

#endif
