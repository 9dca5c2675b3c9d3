/* Loading plugins: dlopen, the descriptor checks, and their lifecycle. */
#ifndef HN_PLUGIN_LOADER_H
#define HN_PLUGIN_LOADER_H

#include "core.h"

struct hn_plugin {
    char *path;                 /* the .so actually opened */
    const hn_plugin_desc *desc; /* static data inside the .so */
    void *handle;               /* never dlclose'd: hooks may point into it */
    void *conf;                 /* conf_size bytes, filled from the config */
    void *state;                /* what init returned */
    bool inited, started;
};

/* Checks a descriptor in the documented order: magic, ABI major, ABI minor,
 * descriptor size, build signature, name. The message names the field that
 * differs and what the host expected. `where` names the file for messages. */
int hn_plugin_check_desc(const hn_plugin_desc *d, const char *where, char *err, size_t errlen);

/* Resolves `spec` (a plugin name, or a path containing '/') against
 * plugin_dir, opens it and checks its descriptor. */
int hn_plugin_open(const char *spec, const char *plugin_dir, const char *config_dir,
                   hn_plugin **out, char *err, size_t errlen);
/* Frees the loader's record; the library stays mapped. */
void hn_plugin_free(hn_plugin *p);

#endif
