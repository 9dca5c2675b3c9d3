/* horde-node plugin SDK: the plugin descriptor and its config schema.
 *
 * A plugin exports exactly one symbol, the function hn_plugin_entry(), which
 * returns a pointer to a static const descriptor. Build one with
 * HN_PLUGIN_DESC_INIT so that the fixed head (magic, ABI, size, build
 * signature) is always filled in:
 *
 *     static const hn_plugin_desc desc = {
 *         HN_PLUGIN_DESC_INIT,
 *         .name = "example", .version = "1.0.0", .description = "...",
 *         .conf = example_conf, .conf_size = sizeof(struct example_conf),
 *         .init = example_init, .fini = example_fini,
 *     };
 *     HN_PLUGIN_EXPORT const hn_plugin_desc *hn_plugin_entry(void) { return &desc; }
 *
 * ABI changelog (bump minor for additions, major for anything else):
 *   1.0  first release: descriptor, api table, hooks.def, providers.
 *   1.1  api: req_post (answer a suspended request from any thread).
 *   1.2  api: conf_where; hooks: user_ensure; generator: configure.
 */
#ifndef HN_PLUGIN_H
#define HN_PLUGIN_H

#include <jansson.h>

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HN_PLUGIN_MAGIC 0x484e504cu /* "HNPL" */
#define HN_ABI_MAJOR 1
#define HN_ABI_MINOR 3

/* Options that change the layout of structs crossing the boundary. The loader
 * refuses a plugin whose signature differs from the host's (nginx's idea). */
#define HN_STR2_(x) #x
#define HN_STR_(x) HN_STR2_(x)
#define HN_BUILD_SIG \
    "ptr" HN_STR_(__SIZEOF_POINTER__) ",long" HN_STR_(__SIZEOF_LONG__) \
    ",jansson" HN_STR_(JANSSON_MAJOR_VERSION)

#if defined(__GNUC__)
#define HN_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define HN_PLUGIN_EXPORT
#endif

/* ---- config schema ---------------------------------------------------- */

typedef enum hn_conf_type {
    HN_CONF_BOOL,        /* field type: bool */
    HN_CONF_INT,         /* field type: long long */
    HN_CONF_FLOAT,       /* field type: double (an integer literal is accepted) */
    HN_CONF_STRING,      /* field type: const char * (owned by the core) */
    HN_CONF_STRING_LIST  /* field type: const char ** NULL-terminated (core-owned) */
} hn_conf_type;

enum {
    HN_CONF_REQUIRED = 1u << 0, /* the key must be present */
    HN_CONF_SECRET = 1u << 1,   /* never printed by -t or in logs */
    HN_CONF_RELOADABLE = 1u << 2
};

/* One key of a plugin's section plugins.<name> in the config file. The core
 * checks type and range, then writes the value into the plugin's conf struct
 * at `offset` before calling init. `def` is the default written as it would be
 * in the config file ("30", "0.5", "true", "\"text\"" or just "text" for
 * strings); NULL means no default (the field stays zero/NULL). For INT and
 * FLOAT, min/max are checked unless both are 0. */
typedef struct hn_conf_spec {
    const char *key;
    hn_conf_type type;
    size_t offset;
    const char *def;
    double min, max;
    unsigned flags;
    const char *help;
} hn_conf_spec;

#define HN_CONF_END {NULL, HN_CONF_BOOL, 0, NULL, 0, 0, 0, NULL}

/* ---- descriptor -------------------------------------------------------- */

struct hn_api;

typedef struct hn_plugin_desc {
    /* fixed head: never moves, checked before anything else is read */
    uint32_t magic;        /* HN_PLUGIN_MAGIC */
    uint16_t abi_major;    /* must equal the host's */
    uint16_t abi_minor;    /* must be <= the host's */
    uint32_t desc_size;    /* sizeof(hn_plugin_desc) the plugin was built with */
    const char *build_sig; /* HN_BUILD_SIG the plugin was built with */

    const char *name;        /* unique; also the config section plugins.<name> */
    const char *version;
    const char *description;

    const hn_conf_spec *conf; /* terminated by HN_CONF_END; NULL = no keys */
    size_t conf_size;         /* size of the struct the schema's offsets point into */

    /* init: parse/derive config, register hooks, providers, routes, commands
     * and timers. `conf` points to a zeroed struct of conf_size bytes filled
     * from the config file, owned by the core and valid until after fini.
     * Set *state to the plugin's own state; it is handed back to every other
     * callback. Registrations are only allowed here. On failure fill err. */
    hn_rc (*init)(hn_plugin *self, const struct hn_api *api, void *conf, void **state,
                  hn_error *err);
    /* start: take resources (threads, DB connections, sockets, GPU). Providers
     * of other plugins can be looked up from here on. Optional. */
    hn_rc (*start)(void *state, hn_error *err);
    /* stop: give back what start took; called in reverse load order. Optional. */
    void (*stop)(void *state);
    /* fini: free state. Optional. The plugin stays mapped (no dlclose). */
    void (*fini)(void *state);

    void *reserved[4]; /* for additions within the same major; keep NULL */
} hn_plugin_desc;

#define HN_PLUGIN_DESC_INIT                                               \
    .magic = HN_PLUGIN_MAGIC, .abi_major = HN_ABI_MAJOR, .abi_minor = HN_ABI_MINOR, \
    .desc_size = (uint32_t)sizeof(hn_plugin_desc), .build_sig = HN_BUILD_SIG

/* The one symbol the loader looks up. */
#define HN_PLUGIN_ENTRY_SYMBOL "hn_plugin_entry"
typedef const hn_plugin_desc *(*hn_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif
#endif
