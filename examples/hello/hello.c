/* hello: the smallest useful horde-node plugin, built out of tree against
 * the installed SDK (see Makefile beside it and docs/PLUGINS.md).
 *
 * It serves GET /api/v2/hello/{name} -> {"hello": name, "greeting": ...},
 * counts the requests it answered, and adds a `hello` command. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include <hn/hn.h>

struct hello_conf {
    const char *greeting;
    long long repeat;
};

static const hn_conf_spec hello_conf_spec[] = {
    {"greeting", HN_CONF_STRING, offsetof(struct hello_conf, greeting), "Hello", 0, 0, 0,
     "what to say"},
    {"repeat", HN_CONF_INT, offsetof(struct hello_conf, repeat), "1", 1, 10, 0,
     "how many times the command says it"},
    HN_CONF_END,
};

/* The plugin's state: everything it owns, handed back to every callback. */
struct hello {
    const hn_api *api;
    hn_plugin *self;
    const struct hello_conf *conf;
    atomic_long answered; /* handlers run on several HTTP threads at once */
};

static void hello_route(hn_request *req, void *state) {
    struct hello *h = state;
    const char *name = h->api->req_param(req, "name");
    long n = atomic_fetch_add(&h->answered, 1) + 1;
    json_t *body = json_pack("{s:s, s:s, s:i}", "hello", name, "greeting", h->conf->greeting,
                             "answered", (json_int_t)n);
    h->api->respond_json(req, 200, body);
}

static int hello_command(int argc, char **argv, void *state) {
    struct hello *h = state;
    const char *who = argc > 1 ? argv[1] : "world";
    for (long long i = 0; i < h->conf->repeat; i++)
        printf("%s, %s!\n", h->conf->greeting, who);
    return 0;
}

static hn_rc hello_init(hn_plugin *self, const hn_api *api, void *conf, void **state,
                        hn_error *err) {
    struct hello *h = calloc(1, sizeof *h);
    if (h == NULL)
        return api->error(err, 500, "InternalError", "out of memory");
    h->api = api;
    h->self = self;
    h->conf = conf;
    if (api->route_add(self, HN_GET, "/api/v2/hello/{name}", hello_route, h) != 0 ||
        api->command_add(self, "hello", "[NAME]: print a greeting", 0, hello_command, h) != 0) {
        free(h);
        return api->error(err, 500, "InternalError", "registration failed");
    }
    *state = h;
    return HN_OK;
}

static void hello_fini(void *state) { free(state); }

static const hn_plugin_desc hello_desc = {
    HN_PLUGIN_DESC_INIT,
    .name = "hello",
    .version = "1.0.0",
    .description = "example plugin: GET /api/v2/hello/{name}",
    .conf = hello_conf_spec,
    .conf_size = sizeof(struct hello_conf),
    .init = hello_init,
    .fini = hello_fini,
};

HN_PLUGIN_EXPORT const hn_plugin_desc *hn_plugin_entry(void) { return &hello_desc; }
