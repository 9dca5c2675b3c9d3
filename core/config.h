/* The node's config file (libconfig), checked against schemas: the core's
 * own `node` section and each plugin's hn_conf_spec. Every error names the
 * plugin (or section), the key, the file and the line. */
#ifndef HN_CONFIG_H
#define HN_CONFIG_H

#include "core.h"

/* The `node` section, after defaults and command-line overrides. Strings are
 * owned by the hn_config they came from. */
typedef struct hn_node_settings {
    const char *listen;
    const char *data_dir;
    const char *public_url;
    const char *name;
    const char *log_level;
    const char *log_file;
    const char *plugin_path;
    long long http_threads; /* 0 = one per core */
    long long pool_threads; /* 0 = two per core */
    long long max_body;
    long long max_headers;
    long long timeout;
} hn_node_settings;

typedef struct hn_load_entry {
    const char *spec; /* as written: a plugin name or a path to a .so */
    int line;
} hn_load_entry;

typedef struct hn_config hn_config;

/* Reads and checks the file's structure and the node section. */
int hn_config_load(const char *path, hn_config **out, char *err, size_t errlen);
void hn_config_free(hn_config *cfg);

const char *hn_config_path(const hn_config *cfg);
/* Absolute directory of the file, for resolving relative paths in it. */
const char *hn_config_dir(const hn_config *cfg);
hn_node_settings *hn_config_node(hn_config *cfg);
size_t hn_config_load_count(const hn_config *cfg);
const hn_load_entry *hn_config_load_at(const hn_config *cfg, size_t i);
/* NULL-terminated pairs kind, name from the providers section. */
const char *const *hn_config_provider_choices(const hn_config *cfg);

/* Fills `conf` (zeroed by the caller) from defaults and plugins.<plugin>,
 * checking unknown keys, types, ranges and required keys. Strings written
 * into conf are owned by cfg. */
int hn_config_apply(hn_config *cfg, const char *plugin, const hn_conf_spec *spec, void *conf,
                    char *err, size_t errlen);
/* Fails if plugins.<name> exists for a name not in `loaded` (NULL-terminated). */
int hn_config_check_sections(const hn_config *cfg, const char *const *loaded, char *err,
                             size_t errlen);
/* "file:line" of the setting at `path` ("plugins.worker.api_key"); -1 if absent. */
int hn_config_where(const hn_config *cfg, const char *path, char *buf, size_t len);
/* Writes the plugin's effective settings, secrets masked (for -t). */
void hn_config_dump_plugin(FILE *out, const hn_conf_spec *spec, const void *conf);

/* Validates one setting of a schema against a libconfig tree: exposed for
 * the node section and for tests. Also used internally. */
int hn_config_apply_section(hn_config *cfg, const char *what, const char *section_path,
                            const hn_conf_spec *spec, void *conf, char *err, size_t errlen);

#endif
