/* images-db: the plugin glue. Registers the `images` provider "db" and the
 * routes its signed URLs point to; in start binds to the storage provider,
 * migrates its tables and loads (or creates) the shared secret. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "images_db.h"

static const hn_conf_spec images_db_conf_spec[] = {
    {"secret", HN_CONF_STRING, offsetof(images_db_conf, secret), NULL, 0, 0, HN_CONF_SECRET,
     "key the URLs are signed with (16 to 256 characters); default: generated once and kept "
     "in the database, so every node on it agrees"},
    {"max_upload", HN_CONF_INT, offsetof(images_db_conf, max_upload), "10485760", 1, 1073741824,
     0, "largest upload in bytes (413 beyond); the node's max_body must be at least this"},
    HN_CONF_END,
};

static hn_rc images_db_init(hn_plugin *self, const hn_api *api, void *confp, void **state,
                            hn_error *err) {
    const images_db_conf *conf = confp;
    if (conf->secret && (strlen(conf->secret) < IMAGES_SECRET_MIN ||
                         strlen(conf->secret) > IMAGES_SECRET_MAX))
        return api->error(err, 500, "ConfigError",
                          "images-db: secret must be %d to %d characters", IMAGES_SECRET_MIN,
                          IMAGES_SECRET_MAX);
    images_db *s = calloc(1, sizeof *s);
    if (!s)
        return api->error(err, 500, "OutOfMemory", "images-db: out of memory");
    s->self = self;
    s->api = api;
    s->conf = conf;
    s->svc = (images_service){.api = api, .name = "images-db", .backend = &images_db_backend,
                              .store = &s->store, .max_upload = conf->max_upload};
    *state = s;
    if (images_service_register(self, &s->svc, "db") != 0)
        return api->error(err, 500, "InitError", "images-db: a registration failed");
    return HN_OK;
}

static hn_rc images_db_start(void *state, hn_error *err) {
    images_db *s = state;
    if (images_store_open(&s->store, s->api->provider_get("storage"), err) != HN_OK)
        return HN_ERROR;
    if (s->conf->secret)
        snprintf(s->svc.secret, sizeof s->svc.secret, "%s", s->conf->secret);
    else if (images_store_secret(&s->store, s->svc.secret, err) != HN_OK)
        return HN_ERROR;
    s->svc.started = true;
    s->api->log(s->self, HN_LOG_INFO, "images in the %s database%s", s->store.storage->name,
                s->conf->secret ? "" : " (URL secret shared through it)");
    return HN_OK;
}

static void images_db_stop(void *state) {
    images_db *s = state;
    s->svc.started = false;
}

static void images_db_fini(void *state) {
    images_db *s = state;
    if (!s)
        return;
    memset(s->svc.secret, 0, sizeof s->svc.secret);
    free(s);
}

static const hn_plugin_desc images_db_desc = {
    HN_PLUGIN_DESC_INIT,
    .name = "images-db",
    .version = "1.0.0",
    .description = "the images provider \"db\": images in the storage database, signed URLs any "
                   "node can serve",
    .conf = images_db_conf_spec,
    .conf_size = sizeof(images_db_conf),
    .init = images_db_init,
    .start = images_db_start,
    .stop = images_db_stop,
    .fini = images_db_fini,
};

HN_PLUGIN_EXPORT const hn_plugin_desc *hn_plugin_entry(void) { return &images_db_desc; }
