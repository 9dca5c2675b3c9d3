/* Named providers: one implementation of an interface chosen per kind by
 * config (providers.<kind> = "name"), or the only one registered. Registered
 * during init, resolved once by hn_providers_freeze, read-only afterwards. */
#include <stdlib.h>
#include <string.h>

#include "core.h"

typedef struct provider_reg {
    hn_provider p;
    bool chosen;
} provider_reg;

static provider_reg *g_regs;
static size_t g_n, g_cap;
static bool g_frozen;

int hn_providers_add(const char *plugin, const char *kind, const char *name, uint32_t version,
                     const void *vt, void *state, char *err, size_t errlen) {
    if (g_frozen) {
        snprintf(err, errlen, "plugin \"%s\": providers can only be added during init", plugin);
        return -1;
    }
    if (kind == NULL || name == NULL || vt == NULL) {
        snprintf(err, errlen, "plugin \"%s\": provider needs a kind, a name and a table", plugin);
        return -1;
    }
    for (size_t i = 0; i < g_n; i++) {
        if (strcmp(g_regs[i].p.kind, kind) == 0 && strcmp(g_regs[i].p.name, name) == 0) {
            snprintf(err, errlen,
                     "plugin \"%s\": provider %s \"%s\" is already registered by plugin \"%s\"",
                     plugin, kind, name, g_regs[i].p.plugin);
            return -1;
        }
    }
    if (g_n == g_cap) {
        size_t cap = g_cap ? g_cap * 2 : 8;
        provider_reg *r = realloc(g_regs, cap * sizeof *r);
        if (r == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        g_regs = r;
        g_cap = cap;
    }
    provider_reg *r = &g_regs[g_n++];
    memset(r, 0, sizeof *r);
    r->p.kind = kind;
    r->p.name = name;
    r->p.version = version;
    r->p.vt = vt;
    r->p.state = state;
    r->p.plugin = plugin;
    return 0;
}

static const char *choice_for(const char *const *choices, const char *kind) {
    for (size_t i = 0; choices != NULL && choices[i] != NULL; i += 2)
        if (strcmp(choices[i], kind) == 0)
            return choices[i + 1];
    return NULL;
}

int hn_providers_freeze(const char *const *choices, char *err, size_t errlen) {
    /* Every configured choice must name a registered provider. */
    for (size_t c = 0; choices != NULL && choices[c] != NULL; c += 2) {
        bool found = false;
        for (size_t i = 0; i < g_n; i++) {
            if (strcmp(g_regs[i].p.kind, choices[c]) == 0 &&
                strcmp(g_regs[i].p.name, choices[c + 1]) == 0) {
                g_regs[i].chosen = true;
                found = true;
            }
        }
        if (!found) {
            size_t off = (size_t)snprintf(err, errlen,
                                          "providers.%s = \"%s\": no loaded plugin provides it",
                                          choices[c], choices[c + 1]);
            const char *sep = " (available:";
            for (size_t i = 0; i < g_n && off < errlen; i++) {
                if (strcmp(g_regs[i].p.kind, choices[c]) == 0) {
                    off += (size_t)snprintf(err + off, errlen - off, "%s %s", sep,
                                            g_regs[i].p.name);
                    sep = ",";
                }
            }
            if (sep[0] == ',' && off < errlen)
                snprintf(err + off, errlen - off, ")");
            return -1;
        }
    }
    /* Kinds without a choice: exactly one registration is taken; several are
     * ambiguous and the config must choose. */
    for (size_t i = 0; i < g_n; i++) {
        if (choice_for(choices, g_regs[i].p.kind) != NULL)
            continue;
        for (size_t j = 0; j < g_n; j++) {
            if (j != i && strcmp(g_regs[j].p.kind, g_regs[i].p.kind) == 0) {
                snprintf(err, errlen,
                         "several providers of kind \"%s\" (%s, %s): choose one with "
                         "providers.%s = \"name\"",
                         g_regs[i].p.kind, g_regs[i].p.name, g_regs[j].p.name, g_regs[i].p.kind);
                return -1;
            }
        }
        g_regs[i].chosen = true;
    }
    g_frozen = true;
    return 0;
}

const hn_provider *hn_providers_get(const char *kind) {
    if (!g_frozen || kind == NULL)
        return NULL;
    for (size_t i = 0; i < g_n; i++)
        if (g_regs[i].chosen && strcmp(g_regs[i].p.kind, kind) == 0)
            return &g_regs[i].p;
    return NULL;
}

void hn_providers_dump(FILE *out) {
    fprintf(out, "providers:\n");
    if (g_n == 0)
        fprintf(out, "  (none)\n");
    for (size_t i = 0; i < g_n; i++)
        fprintf(out, "  %-10s %-10s v%u from %s%s\n", g_regs[i].p.kind, g_regs[i].p.name,
                g_regs[i].p.version, g_regs[i].p.plugin, g_regs[i].chosen ? " (chosen)" : "");
}

void hn_providers_reset(void) {
    free(g_regs);
    g_regs = NULL;
    g_n = g_cap = 0;
    g_frozen = false;
}
