/* images-fs: the plugin glue. Registers the `images` provider "fs" and the
 * routes its signed URLs point to; opens the directory and loads (or makes)
 * the secret in start. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "images_fs.h"

static const hn_conf_spec images_conf_spec[] = {
    {"dir", HN_CONF_STRING, offsetof(images_conf, dir), NULL, 0, 0, 0,
     "folder of the image files; relative paths are under the data dir (default "
     "<data_dir>/images)"},
    {"secret", HN_CONF_STRING, offsetof(images_conf, secret), NULL, 0, 0, HN_CONF_SECRET,
     "key the URLs are signed with (16+ characters); default: generated once into "
     "<data_dir>/images.secret"},
    {"max_upload", HN_CONF_INT, offsetof(images_conf, max_upload), "10485760", 1, 1073741824, 0,
     "largest upload in bytes (413 beyond); the node's max_body must be at least this"},
    HN_CONF_END,
};

static char *under_data_dir(const hn_api *api, const char *path, const char *fallback) {
    const char *p = path && path[0] ? path : fallback;
    if (p[0] == '/')
        return strdup(p);
    size_t n = strlen(api->data_dir()) + strlen(p) + 2;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s/%s", api->data_dir(), p);
    return out;
}

static hn_rc images_init(hn_plugin *self, const hn_api *api, void *confp, void **state,
                         hn_error *err) {
    const images_conf *conf = confp;
    if (conf->secret && strlen(conf->secret) < IMAGES_SECRET_MIN)
        return api->error(err, 500, "ConfigError", "images-fs: secret must be at least %d characters",
                          IMAGES_SECRET_MIN);
    if (conf->secret && strlen(conf->secret) > IMAGES_SECRET_MAX)
        return api->error(err, 500, "ConfigError", "images-fs: secret is longer than %d characters",
                          IMAGES_SECRET_MAX);
    images_fs *s = calloc(1, sizeof *s);
    if (!s)
        return api->error(err, 500, "OutOfMemory", "images-fs: out of memory");
    s->self = self;
    s->api = api;
    s->conf = conf;
    s->dir.fd = -1;
    s->svc = (images_service){.api = api, .name = "images-fs", .backend = &images_fs_backend,
                              .store = &s->dir, .max_upload = conf->max_upload};
    *state = s;
    s->dir_path = under_data_dir(api, conf->dir, "images");
    if (!s->dir_path)
        return api->error(err, 500, "OutOfMemory", "images-fs: out of memory");
    if (images_service_register(self, &s->svc, "fs") != 0)
        return api->error(err, 500, "InitError", "images-fs: a registration failed");
    return HN_OK;
}

static hn_rc images_start(void *state, hn_error *err) {
    images_fs *s = state;
    if (s->conf->secret) {
        snprintf(s->svc.secret, sizeof s->svc.secret, "%s", s->conf->secret);
    } else {
        char *path = under_data_dir(s->api, "images.secret", "images.secret");
        bool loose = false;
        hn_rc rc = path ? images_secret_load(path, s->svc.secret, &loose, err)
                        : s->api->error(err, 500, "OutOfMemory", "images-fs: out of memory");
        if (rc == HN_OK && loose)
            s->api->log(s->self, HN_LOG_WARN, "%s is readable by other users; chmod 600 it",
                        path);
        free(path);
        if (rc != HN_OK)
            return rc;
    }
    if (images_dir_open(&s->dir, s->dir_path, err) != HN_OK) {
        images_dir_close(&s->dir);
        return HN_ERROR;
    }
    s->svc.started = true;
    s->api->log(s->self, HN_LOG_INFO, "images in %s", s->dir_path);
    return HN_OK;
}

static void images_stop(void *state) {
    images_fs *s = state;
    s->svc.started = false;
    images_dir_close(&s->dir);
}

static void images_fini(void *state) {
    images_fs *s = state;
    if (!s)
        return;
    memset(s->svc.secret, 0, sizeof s->svc.secret);
    free(s->dir_path);
    free(s);
}

static const hn_plugin_desc images_desc = {
    HN_PLUGIN_DESC_INIT,
    .name = "images-fs",
    .version = "1.0.0",
    .description = "the images provider \"fs\": files under the data dir, signed expiring URLs",
    .conf = images_conf_spec,
    .conf_size = sizeof(images_conf),
    .init = images_init,
    .start = images_start,
    .stop = images_stop,
    .fini = images_fini,
};

HN_PLUGIN_EXPORT const hn_plugin_desc *hn_plugin_entry(void) { return &images_desc; }
