/* Config file reading and schema checking (see config.h).
 *
 * Layout of a config file:
 *   node: { listen = "127.0.0.1:7001"; data_dir = "data"; ... };
 *   load = [ "storage-sqlite", "auth", "/opt/x/example.so" ];
 *   providers: { storage = "sqlite"; images = "fs"; };
 *   plugins: { broker: { ... }; auth: { ... }; };
 * Anything else at the top level is an error, like an unknown key inside a
 * section: a typo must never silently become a default. */
#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"

struct hn_config {
    config_t lc;
    char *path;
    char *dir;
    hn_node_settings node;
    hn_load_entry *loads;
    size_t nloads;
    const char **choices; /* kind, name, ..., NULL */
    char **strings;       /* every string handed out, freed with the config */
    size_t nstrings, capstrings;
};

static const char *keep(hn_config *cfg, const char *s) {
    if (s == NULL)
        return NULL;
    if (cfg->nstrings == cfg->capstrings) {
        size_t cap = cfg->capstrings ? cfg->capstrings * 2 : 32;
        char **p = realloc(cfg->strings, cap * sizeof *p);
        if (p == NULL)
            return NULL;
        cfg->strings = p;
        cfg->capstrings = cap;
    }
    char *copy = strdup(s);
    if (copy != NULL)
        cfg->strings[cfg->nstrings++] = copy;
    return copy;
}

static const hn_conf_spec node_spec[] = {
    {"listen", HN_CONF_STRING, offsetof(hn_node_settings, listen), "127.0.0.1:7001", 0, 0, 0,
     "address:port the HTTP API listens on"},
    {"data_dir", HN_CONF_STRING, offsetof(hn_node_settings, data_dir), "data", 0, 0, 0,
     "where plugins keep their data (relative to the working directory)"},
    {"public_url", HN_CONF_STRING, offsetof(hn_node_settings, public_url), "", 0, 0, 0,
     "base URL clients reach the node at (default: from listen)"},
    {"name", HN_CONF_STRING, offsetof(hn_node_settings, name), "horde-node", 0, 0, 0,
     "node name, sent in the Horde-Node header"},
    {"log_level", HN_CONF_STRING, offsetof(hn_node_settings, log_level), "info", 0, 0, 0,
     "error, warn, info or debug"},
    {"log_file", HN_CONF_STRING, offsetof(hn_node_settings, log_file), "", 0, 0, 0,
     "log to this file instead of stderr"},
    {"plugin_path", HN_CONF_STRING, offsetof(hn_node_settings, plugin_path), "", 0, 0, 0,
     "folder of plugin .so files (relative to this file); default: beside the binary"},
    {"http_threads", HN_CONF_INT, offsetof(hn_node_settings, http_threads), "0", 0, 256, 0,
     "HTTP event loops (0 = one per core)"},
    {"pool_threads", HN_CONF_INT, offsetof(hn_node_settings, pool_threads), "0", 0, 1024, 0,
     "threads for blocking work (0 = two per core)"},
    {"max_body", HN_CONF_INT, offsetof(hn_node_settings, max_body), "20971520", 1024, 1e9, 0,
     "largest request body in bytes (413 beyond)"},
    {"max_headers", HN_CONF_INT, offsetof(hn_node_settings, max_headers), "16384", 1024, 1e6,
     0, "largest request header block in bytes"},
    {"timeout", HN_CONF_INT, offsetof(hn_node_settings, timeout), "30", 1, 3600, 0,
     "seconds a client may take to send a request or read an answer"},
    HN_CONF_END,
};

static void loc(const config_setting_t *s, const hn_config *cfg, char *buf, size_t len) {
    const char *file = s ? config_setting_source_file(s) : NULL;
    unsigned line = s ? config_setting_source_line(s) : 0;
    snprintf(buf, len, "%s:%u", file ? file : cfg->path, line);
}

static const char *type_word(hn_conf_type t) {
    switch (t) {
    case HN_CONF_BOOL: return "a boolean (true or false)";
    case HN_CONF_INT: return "an integer";
    case HN_CONF_FLOAT: return "a number";
    case HN_CONF_STRING: return "a string";
    case HN_CONF_STRING_LIST: return "a list of strings";
    }
    return "?";
}

/* Parses a schema default given as text. */
static int parse_default(hn_config *cfg, const hn_conf_spec *s, void *conf, char *err,
                         size_t errlen, const char *what) {
    char *field = (char *)conf + s->offset;
    const char *d = s->def;
    char *end = NULL;
    switch (s->type) {
    case HN_CONF_BOOL:
        *(bool *)field = strcasecmp(d, "true") == 0 || strcmp(d, "1") == 0;
        return 0;
    case HN_CONF_INT:
        errno = 0;
        *(long long *)field = strtoll(d, &end, 0);
        if (errno == 0 && end != d && *end == '\0')
            return 0;
        break;
    case HN_CONF_FLOAT:
        *(double *)field = strtod(d, &end);
        if (end != d && *end == '\0')
            return 0;
        break;
    case HN_CONF_STRING: {
        size_t n = strlen(d);
        if (n >= 2 && d[0] == '"' && d[n - 1] == '"') {
            char tmp[1024];
            snprintf(tmp, sizeof tmp, "%.*s", (int)(n - 2), d + 1);
            *(const char **)field = keep(cfg, tmp);
        } else {
            *(const char **)field = keep(cfg, d);
        }
        return 0;
    }
    case HN_CONF_STRING_LIST: {
        /* A list default is written as comma-separated items ("" = empty). */
        size_t n = 1;
        for (const char *c = d; *c; c++)
            n += *c == ',';
        char *copy = strdup(d);
        const char **list = calloc(n + 1, sizeof *list);
        if (copy == NULL || list == NULL || keep(cfg, "") == NULL) {
            free(copy);
            free(list);
            break;
        }
        free(cfg->strings[--cfg->nstrings]);
        cfg->strings[cfg->nstrings++] = (char *)list; /* owned through the pool */
        size_t i = 0;
        for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save))
            list[i++] = keep(cfg, tok);
        free(copy);
        *(const char ***)field = list;
        return 0;
    }
    }
    snprintf(err, errlen, "%s: key \"%s\": bad default \"%s\" in its schema (plugin bug)", what,
             s->key, d);
    return -1;
}

static int range_ok(const hn_conf_spec *s, double v) {
    if (s->min == 0 && s->max == 0)
        return 1;
    return v >= s->min && v <= s->max;
}

static int apply_one(hn_config *cfg, const char *what, const hn_conf_spec *s,
                     const config_setting_t *set, void *conf, char *err, size_t errlen) {
    char where[PATH_MAX + 32];
    loc(set, cfg, where, sizeof where);
    char *field = (char *)conf + s->offset;
    int t = config_setting_type(set);
    switch (s->type) {
    case HN_CONF_BOOL:
        if (t != CONFIG_TYPE_BOOL)
            goto wrong_type;
        *(bool *)field = config_setting_get_bool(set) != 0;
        return 0;
    case HN_CONF_INT: {
        if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
            goto wrong_type;
        long long v = config_setting_get_int64(set);
        if (!range_ok(s, (double)v)) {
            snprintf(err, errlen, "%s: \"%s\" must be an integer in [%.0f, %.0f], not %lld (%s)",
                     what, s->key, s->min, s->max, v, where);
            return -1;
        }
        *(long long *)field = v;
        return 0;
    }
    case HN_CONF_FLOAT: {
        double v;
        if (t == CONFIG_TYPE_FLOAT)
            v = config_setting_get_float(set);
        else if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64)
            v = (double)config_setting_get_int64(set);
        else
            goto wrong_type;
        if (!range_ok(s, v) || isnan(v)) {
            snprintf(err, errlen, "%s: \"%s\" must be a number in [%g, %g], not %g (%s)", what,
                     s->key, s->min, s->max, v, where);
            return -1;
        }
        *(double *)field = v;
        return 0;
    }
    case HN_CONF_STRING:
        if (t != CONFIG_TYPE_STRING)
            goto wrong_type;
        *(const char **)field = keep(cfg, config_setting_get_string(set));
        return 0;
    case HN_CONF_STRING_LIST: {
        if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
            goto wrong_type;
        int n = config_setting_length(set);
        const char **list = calloc((size_t)n + 1, sizeof *list);
        if (list == NULL || keep(cfg, "") == NULL) {
            free(list);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        /* The list itself is owned through the strings pool. */
        free(cfg->strings[--cfg->nstrings]);
        cfg->strings[cfg->nstrings++] = (char *)list;
        for (int i = 0; i < n; i++) {
            const config_setting_t *e = config_setting_get_elem(set, (unsigned)i);
            if (config_setting_type(e) != CONFIG_TYPE_STRING)
                goto wrong_type;
            list[i] = keep(cfg, config_setting_get_string(e));
        }
        *(const char ***)field = list;
        return 0;
    }
    }
wrong_type:
    snprintf(err, errlen, "%s: \"%s\" must be %s (%s)", what, s->key, type_word(s->type), where);
    return -1;
}

int hn_config_apply_section(hn_config *cfg, const char *what, const char *section_path,
                            const hn_conf_spec *spec, void *conf, char *err, size_t errlen) {
    const config_setting_t *section = config_lookup(&cfg->lc, section_path);
    char where[PATH_MAX + 32];
    if (section != NULL && !config_setting_is_group(section)) {
        loc(section, cfg, where, sizeof where);
        snprintf(err, errlen, "%s: section must be a group { ... } (%s)", what, where);
        return -1;
    }
    /* Unknown keys first: they are the likeliest mistake (a typo). */
    int n = section ? config_setting_length(section) : 0;
    for (int i = 0; i < n; i++) {
        const config_setting_t *set = config_setting_get_elem(section, (unsigned)i);
        const char *name = config_setting_name(set);
        bool known = false;
        for (const hn_conf_spec *s = spec; s && s->key; s++)
            if (strcmp(s->key, name) == 0)
                known = true;
        if (!known) {
            loc(set, cfg, where, sizeof where);
            size_t off = (size_t)snprintf(err, errlen, "%s: unknown key \"%s\" (%s)", what, name,
                                          where);
            const char *sep = "; known keys:";
            for (const hn_conf_spec *s = spec; s && s->key && off < errlen; s++) {
                off += (size_t)snprintf(err + off, errlen - off, "%s %s", sep, s->key);
                sep = ",";
            }
            if (spec == NULL || spec->key == NULL)
                snprintf(err + off, errlen - off, "; this plugin takes no keys");
            return -1;
        }
    }
    for (const hn_conf_spec *s = spec; s && s->key; s++) {
        const config_setting_t *set = section ? config_setting_get_member(section, s->key) : NULL;
        if (set == NULL) {
            if (s->flags & HN_CONF_REQUIRED) {
                if (section != NULL)
                    loc(section, cfg, where, sizeof where);
                else
                    snprintf(where, sizeof where, "%s", cfg->path);
                snprintf(err, errlen, "%s: required key \"%s\" is missing (%s)", what, s->key,
                         where);
                return -1;
            }
            if (s->def != NULL && parse_default(cfg, s, conf, err, errlen, what) != 0)
                return -1;
            continue;
        }
        if (apply_one(cfg, what, s, set, conf, err, errlen) != 0)
            return -1;
    }
    return 0;
}

static char *dir_of(const char *path) {
    char *abs = realpath(path, NULL);
    if (abs == NULL)
        return NULL;
    char *slash = strrchr(abs, '/');
    if (slash == abs)
        slash[1] = '\0';
    else if (slash != NULL)
        *slash = '\0';
    return abs;
}

int hn_config_load(const char *path, hn_config **out, char *err, size_t errlen) {
    *out = NULL;
    hn_config *cfg = calloc(1, sizeof *cfg);
    if (cfg == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    config_init(&cfg->lc);
    cfg->path = strdup(path);
    if (cfg->path == NULL)
        goto oom;
    if (config_read_file(&cfg->lc, path) != CONFIG_TRUE) {
        if (config_error_type(&cfg->lc) == CONFIG_ERR_FILE_IO)
            snprintf(err, errlen, "cannot read config file %s: %s", path, strerror(errno));
        else
            snprintf(err, errlen, "%s:%d: %s", config_error_file(&cfg->lc)
                         ? config_error_file(&cfg->lc) : path,
                     config_error_line(&cfg->lc), config_error_text(&cfg->lc));
        hn_config_free(cfg);
        return -1;
    }
    cfg->dir = dir_of(path);
    if (cfg->dir == NULL)
        goto oom;

    const config_setting_t *root = config_root_setting(&cfg->lc);
    char where[PATH_MAX + 32];
    for (int i = 0; i < config_setting_length(root); i++) {
        const config_setting_t *s = config_setting_get_elem(root, (unsigned)i);
        const char *name = config_setting_name(s);
        if (strcmp(name, "node") && strcmp(name, "load") && strcmp(name, "providers") &&
            strcmp(name, "plugins")) {
            loc(s, cfg, where, sizeof where);
            snprintf(err, errlen,
                     "unknown top-level setting \"%s\" (%s); expected node, load, providers, "
                     "plugins",
                     name, where);
            goto fail;
        }
    }

    if (hn_config_apply_section(cfg, "node", "node", node_spec, &cfg->node, err, errlen) != 0)
        goto fail;
    hn_log_level lvl;
    if (hn_log_parse_level(cfg->node.log_level, &lvl) != 0) {
        loc(config_lookup(&cfg->lc, "node.log_level"), cfg, where, sizeof where);
        snprintf(err, errlen, "node: \"log_level\" must be error, warn, info or debug (%s)",
                 where);
        goto fail;
    }

    const config_setting_t *load = config_lookup(&cfg->lc, "load");
    if (load != NULL) {
        if (!config_setting_is_array(load) && !config_setting_is_list(load)) {
            loc(load, cfg, where, sizeof where);
            snprintf(err, errlen, "\"load\" must be a list of plugin names or paths (%s)", where);
            goto fail;
        }
        int n = config_setting_length(load);
        cfg->loads = calloc((size_t)n + 1, sizeof *cfg->loads);
        if (cfg->loads == NULL)
            goto oom;
        for (int i = 0; i < n; i++) {
            const config_setting_t *e = config_setting_get_elem(load, (unsigned)i);
            if (config_setting_type(e) != CONFIG_TYPE_STRING ||
                config_setting_get_string(e)[0] == '\0') {
                loc(e, cfg, where, sizeof where);
                snprintf(err, errlen, "\"load\" entry %d must be a non-empty string (%s)", i + 1,
                         where);
                goto fail;
            }
            cfg->loads[cfg->nloads].spec = keep(cfg, config_setting_get_string(e));
            cfg->loads[cfg->nloads].line = (int)config_setting_source_line(e);
            cfg->nloads++;
        }
    }

    const config_setting_t *prov = config_lookup(&cfg->lc, "providers");
    int np = prov ? config_setting_length(prov) : 0;
    if (prov != NULL && !config_setting_is_group(prov)) {
        loc(prov, cfg, where, sizeof where);
        snprintf(err, errlen, "\"providers\" must be a group { kind = \"name\"; } (%s)", where);
        goto fail;
    }
    cfg->choices = calloc((size_t)np * 2 + 1, sizeof *cfg->choices);
    if (cfg->choices == NULL)
        goto oom;
    for (int i = 0; i < np; i++) {
        const config_setting_t *e = config_setting_get_elem(prov, (unsigned)i);
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            loc(e, cfg, where, sizeof where);
            snprintf(err, errlen, "providers: \"%s\" must be a string naming a provider (%s)",
                     config_setting_name(e), where);
            goto fail;
        }
        cfg->choices[2 * i] = keep(cfg, config_setting_name(e));
        cfg->choices[2 * i + 1] = keep(cfg, config_setting_get_string(e));
    }

    const config_setting_t *plugins = config_lookup(&cfg->lc, "plugins");
    if (plugins != NULL && !config_setting_is_group(plugins)) {
        loc(plugins, cfg, where, sizeof where);
        snprintf(err, errlen, "\"plugins\" must be a group of sections { name: { ... }; } (%s)",
                 where);
        goto fail;
    }
    *out = cfg;
    return 0;
oom:
    snprintf(err, errlen, "out of memory reading %s", path);
fail:
    hn_config_free(cfg);
    return -1;
}

void hn_config_free(hn_config *cfg) {
    if (cfg == NULL)
        return;
    config_destroy(&cfg->lc);
    for (size_t i = 0; i < cfg->nstrings; i++)
        free(cfg->strings[i]);
    free(cfg->strings);
    free(cfg->loads);
    free(cfg->choices);
    free(cfg->path);
    free(cfg->dir);
    free(cfg);
}

const char *hn_config_path(const hn_config *cfg) { return cfg->path; }
const char *hn_config_dir(const hn_config *cfg) { return cfg->dir; }
hn_node_settings *hn_config_node(hn_config *cfg) { return &cfg->node; }
size_t hn_config_load_count(const hn_config *cfg) { return cfg->nloads; }
const hn_load_entry *hn_config_load_at(const hn_config *cfg, size_t i) {
    return i < cfg->nloads ? &cfg->loads[i] : NULL;
}
const char *const *hn_config_provider_choices(const hn_config *cfg) { return cfg->choices; }

int hn_config_apply(hn_config *cfg, const char *plugin, const hn_conf_spec *spec, void *conf,
                    char *err, size_t errlen) {
    char what[160], path[160];
    snprintf(what, sizeof what, "plugin \"%s\"", plugin);
    snprintf(path, sizeof path, "plugins.%s", plugin);
    return hn_config_apply_section(cfg, what, path, spec, conf, err, errlen);
}

int hn_config_check_sections(const hn_config *cfg, const char *const *loaded, char *err,
                             size_t errlen) {
    const config_setting_t *plugins = config_lookup((config_t *)&cfg->lc, "plugins");
    int n = plugins ? config_setting_length(plugins) : 0;
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(plugins, (unsigned)i);
        const char *name = config_setting_name(s);
        bool found = false;
        for (size_t j = 0; loaded && loaded[j]; j++)
            if (strcmp(loaded[j], name) == 0)
                found = true;
        if (!found) {
            char where[PATH_MAX + 32];
            loc(s, cfg, where, sizeof where);
            snprintf(err, errlen,
                     "plugins.%s: section for plugin \"%s\", which is not loaded (add it to "
                     "\"load\" or remove the section) (%s)",
                     name, name, where);
            return -1;
        }
    }
    return 0;
}

void hn_config_dump_plugin(FILE *out, const hn_conf_spec *spec, const void *conf) {
    for (const hn_conf_spec *s = spec; s && s->key; s++) {
        const char *field = (const char *)conf + s->offset;
        fprintf(out, "    %s = ", s->key);
        if (s->flags & HN_CONF_SECRET) {
            fprintf(out, "(secret)\n");
            continue;
        }
        switch (s->type) {
        case HN_CONF_BOOL: fprintf(out, "%s\n", *(const bool *)field ? "true" : "false"); break;
        case HN_CONF_INT: fprintf(out, "%lld\n", *(const long long *)field); break;
        case HN_CONF_FLOAT: fprintf(out, "%g\n", *(const double *)field); break;
        case HN_CONF_STRING: {
            const char *v = *(const char *const *)field;
            fprintf(out, "\"%s\"\n", v ? v : "");
            break;
        }
        case HN_CONF_STRING_LIST: {
            const char *const *v = *(const char *const *const *)field;
            fprintf(out, "[");
            for (size_t i = 0; v && v[i]; i++)
                fprintf(out, "%s\"%s\"", i ? ", " : "", v[i]);
            fprintf(out, "]\n");
            break;
        }
        }
    }
}

int hn_config_where(const hn_config *cfg, const char *path, char *buf, size_t len) {
    const config_setting_t *s = config_lookup((config_t *)&cfg->lc, path);
    if (s == NULL)
        return -1;
    loc(s, cfg, buf, len);
    return 0;
}
