/* The plugin loader. Plugins are only ever loaded because the config lists
 * them (no folder scans), with RTLD_NOW so a missing symbol fails at load
 * time rather than at first call, and RTLD_LOCAL so two plugins' libraries
 * (libpq, sqlite) cannot collide. They are never unloaded: a hook, a timer or
 * a thread may still point into them (PostgreSQL's reasoning). */
#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plugin.h"

/* The descriptor fields a plugin must at least have: everything up to fini. */
#define DESC_MIN_SIZE (offsetof(hn_plugin_desc, fini) + sizeof(void (*)(void *)))

static bool valid_name(const char *n) {
    if (n == NULL || n[0] == '\0' || strlen(n) > 64)
        return false;
    if (!((n[0] >= 'a' && n[0] <= 'z') || (n[0] >= 'A' && n[0] <= 'Z')))
        return false;
    for (const char *c = n; *c; c++) {
        bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                  (*c >= '0' && *c <= '9') || *c == '-' || *c == '_';
        if (!ok)
            return false;
    }
    return true;
}

int hn_plugin_check_desc(const hn_plugin_desc *d, const char *where, char *err, size_t errlen) {
    if (d == NULL || d->magic != HN_PLUGIN_MAGIC) {
        snprintf(err, errlen,
                 "%s: not a horde-node plugin: magic is 0x%08x, expected 0x%08x "
                 "(build the descriptor with HN_PLUGIN_DESC_INIT)",
                 where, d ? d->magic : 0u, HN_PLUGIN_MAGIC);
        return -1;
    }
    if (d->abi_major != HN_ABI_MAJOR) {
        snprintf(err, errlen,
                 "%s: incompatible plugin: abi_major is %u, this node's is %u "
                 "(rebuild the plugin against this node's SDK)",
                 where, d->abi_major, HN_ABI_MAJOR);
        return -1;
    }
    if (d->abi_minor > HN_ABI_MINOR) {
        snprintf(err, errlen,
                 "%s: plugin needs a newer node: abi_minor is %u, this node's is %u "
                 "(upgrade horde-node or rebuild the plugin against this SDK)",
                 where, d->abi_minor, HN_ABI_MINOR);
        return -1;
    }
    if (d->desc_size < DESC_MIN_SIZE) {
        snprintf(err, errlen, "%s: incompatible plugin: desc_size is %u, at least %zu expected",
                 where, d->desc_size, (size_t)DESC_MIN_SIZE);
        return -1;
    }
    if (d->build_sig == NULL || strcmp(d->build_sig, HN_BUILD_SIG) != 0) {
        snprintf(err, errlen,
                 "%s: incompatible plugin: build_sig is \"%s\", this node's is \"%s\"", where,
                 d->build_sig ? d->build_sig : "(null)", HN_BUILD_SIG);
        return -1;
    }
    if (!valid_name(d->name)) {
        snprintf(err, errlen,
                 "%s: bad plugin name \"%s\" (letters, digits, '-' and '_', starting with a "
                 "letter, at most 64)",
                 where, d->name ? d->name : "(null)");
        return -1;
    }
    if (d->init == NULL) {
        snprintf(err, errlen, "plugin \"%s\" (%s): init callback is missing", d->name, where);
        return -1;
    }
    if (d->conf != NULL && d->conf_size == 0) {
        snprintf(err, errlen, "plugin \"%s\" (%s): has a config schema but conf_size is 0",
                 d->name, where);
        return -1;
    }
    for (const hn_conf_spec *s = d->conf; s && s->key; s++) {
        if (s->offset >= d->conf_size) {
            snprintf(err, errlen,
                     "plugin \"%s\" (%s): config key \"%s\" has offset %zu outside conf_size %zu",
                     d->name, where, s->key, s->offset, d->conf_size);
            return -1;
        }
    }
    return 0;
}

static int resolve_path(const char *spec, const char *plugin_dir, const char *config_dir,
                        char *out, size_t len) {
    int n;
    if (strchr(spec, '/') != NULL) {
        /* A path: relative ones are relative to the config file. */
        if (spec[0] == '/')
            n = snprintf(out, len, "%s", spec);
        else
            n = snprintf(out, len, "%s/%s", config_dir, spec);
    } else {
        n = snprintf(out, len, "%s/%s.so", plugin_dir, spec);
    }
    return n > 0 && (size_t)n < len ? 0 : -1;
}

int hn_plugin_open(const char *spec, const char *plugin_dir, const char *config_dir,
                   hn_plugin **out, char *err, size_t errlen) {
    *out = NULL;
    char path[PATH_MAX];
    if (resolve_path(spec, plugin_dir, config_dir, path, sizeof path) != 0) {
        snprintf(err, errlen, "plugin \"%s\": path too long", spec);
        return -1;
    }
    if (access(path, R_OK) != 0) {
        snprintf(err, errlen, "plugin \"%s\": no such file %s", spec, path);
        return -1;
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        snprintf(err, errlen, "plugin \"%s\": cannot load %s: %s", spec, path, dlerror());
        return -1;
    }
    hn_plugin_entry_fn entry;
    /* POSIX's sanctioned way to turn dlsym's void * into a function pointer. */
    *(void **)&entry = dlsym(h, HN_PLUGIN_ENTRY_SYMBOL);
    if (entry == NULL) {
        snprintf(err, errlen,
                 "plugin \"%s\": %s is not a horde-node plugin: it does not export %s() "
                 "(missing magic descriptor)",
                 spec, path, HN_PLUGIN_ENTRY_SYMBOL);
        return -1;
    }
    const hn_plugin_desc *d = entry();
    if (hn_plugin_check_desc(d, path, err, errlen) != 0)
        return -1;
    hn_plugin *p = calloc(1, sizeof *p);
    if (p == NULL || (p->path = strdup(path)) == NULL) {
        free(p);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->desc = d;
    p->handle = h;
    if (d->conf_size > 0 && (p->conf = calloc(1, d->conf_size)) == NULL) {
        hn_plugin_free(p);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    *out = p;
    return 0;
}

void hn_plugin_free(hn_plugin *p) {
    if (p == NULL)
        return;
    free(p->conf);
    free(p->path);
    free(p);
}
