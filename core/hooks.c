/* The hook registry. Handlers are added during init (tagged with their
 * plugin), sorted once by hn_hooks_freeze and never change afterwards, so
 * hn_hooks_handlers needs no lock from any thread.
 *
 * Order: a topological sort of the before/after constraints (plugin names);
 * among handlers free to run next, the lower bucket first, then the earlier
 * registration (load order). Buckets are preferences, the named constraints
 * are rules: a cycle among them is a start-up error. */
#include <stdlib.h>
#include <string.h>

#include "core.h"

typedef struct hook_reg {
    hn_hook_entry entry;
    int bucket;
    const char *const *before;
    const char *const *after;
    unsigned seq; /* registration order */
} hook_reg;

typedef struct hook_list {
    hook_reg *regs;
    size_t n, cap;
    hn_hook_entry *sorted; /* after freeze */
} hook_list;

static const struct {
    const char *name;
    hn_hook_policy policy;
} hook_info[HN_HOOK_COUNT] = {
#define HN_HOOK(name, policy, params, args) {#name, policy},
#include "hn/hooks.def"
#undef HN_HOOK
};

static hook_list g_hooks[HN_HOOK_COUNT];
static bool g_frozen;
static unsigned g_seq;

const char *hn_hook_name(unsigned hook_id) {
    return hook_id < HN_HOOK_COUNT ? hook_info[hook_id].name : "?";
}

int hn_hooks_add(const char *plugin, unsigned hook_id, hn_hook_fn_generic fn, void *state,
                 const hn_hook_order *order, char *err, size_t errlen) {
    if (g_frozen) {
        snprintf(err, errlen, "plugin \"%s\": hooks can only be added during init", plugin);
        return -1;
    }
    if (hook_id >= HN_HOOK_COUNT || fn == NULL) {
        snprintf(err, errlen, "plugin \"%s\": unknown hook id %u or NULL handler", plugin,
                 hook_id);
        return -1;
    }
    hook_list *l = &g_hooks[hook_id];
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        hook_reg *r = realloc(l->regs, cap * sizeof *r);
        if (r == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        l->regs = r;
        l->cap = cap;
    }
    hook_reg *r = &l->regs[l->n++];
    memset(r, 0, sizeof *r);
    r->entry.fn = fn;
    r->entry.state = state;
    r->entry.plugin = plugin;
    r->bucket = order ? order->bucket : HN_ORDER_MIDDLE;
    r->before = order ? order->before : NULL;
    r->after = order ? order->after : NULL;
    r->seq = g_seq++;
    return 0;
}

static bool names_contain(const char *const *names, const char *name) {
    for (size_t i = 0; names != NULL && names[i] != NULL; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

/* Must a run before b? */
static bool must_precede(const hook_reg *a, const hook_reg *b) {
    return names_contain(a->before, b->entry.plugin) || names_contain(b->after, a->entry.plugin);
}

static int sort_one(unsigned id, char *err, size_t errlen) {
    hook_list *l = &g_hooks[id];
    size_t n = l->n;
    free(l->sorted);
    l->sorted = NULL;
    if (n == 0)
        return 0;
    l->sorted = calloc(n, sizeof *l->sorted);
    bool *done = calloc(n, sizeof *done);
    if (l->sorted == NULL || done == NULL) {
        free(done);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* Kahn's algorithm, O(n^3) in the worst case: n is a handful per hook. */
    for (size_t out = 0; out < n; out++) {
        size_t best = n;
        for (size_t i = 0; i < n; i++) {
            if (done[i])
                continue;
            bool blocked = false;
            for (size_t j = 0; j < n && !blocked; j++)
                if (!done[j] && j != i && must_precede(&l->regs[j], &l->regs[i]))
                    blocked = true;
            if (blocked)
                continue;
            if (best == n || l->regs[i].bucket < l->regs[best].bucket ||
                (l->regs[i].bucket == l->regs[best].bucket &&
                 l->regs[i].seq < l->regs[best].seq))
                best = i;
        }
        if (best == n) {
            /* Everything left waits on something left: a cycle. */
            size_t off = (size_t)snprintf(err, errlen,
                                          "hook \"%s\": before/after cycle between plugins",
                                          hook_info[id].name);
            for (size_t i = 0; i < n && off < errlen; i++)
                if (!done[i])
                    off += (size_t)snprintf(err + off, errlen - off, " %s",
                                            l->regs[i].entry.plugin);
            free(done);
            return -1;
        }
        done[best] = true;
        l->sorted[out] = l->regs[best].entry;
    }
    free(done);
    return 0;
}

int hn_hooks_freeze(char *err, size_t errlen) {
    for (unsigned id = 0; id < HN_HOOK_COUNT; id++)
        if (sort_one(id, err, errlen) != 0)
            return -1;
    g_frozen = true;
    return 0;
}

const hn_hook_entry *hn_hooks_handlers(unsigned hook_id, size_t *n) {
    if (hook_id >= HN_HOOK_COUNT || !g_frozen) {
        *n = 0;
        return NULL;
    }
    *n = g_hooks[hook_id].n;
    return g_hooks[hook_id].sorted;
}

void hn_hooks_dump(FILE *out) {
    static const char *const policies[] = {"RUN_ALL", "RUN_FIRST", "NOTIFY"};
    fprintf(out, "hooks:\n");
    for (unsigned id = 0; id < HN_HOOK_COUNT; id++) {
        const hook_list *l = &g_hooks[id];
        fprintf(out, "  %-22s %-9s", hook_info[id].name, policies[hook_info[id].policy]);
        if (l->n == 0)
            fprintf(out, " (none)");
        for (size_t i = 0; i < l->n; i++)
            fprintf(out, "%s%s", i ? " -> " : " ",
                    g_frozen ? l->sorted[i].plugin : l->regs[i].entry.plugin);
        fprintf(out, "\n");
    }
}

void hn_hooks_reset(void) {
    for (unsigned id = 0; id < HN_HOOK_COUNT; id++) {
        free(g_hooks[id].regs);
        free(g_hooks[id].sorted);
        memset(&g_hooks[id], 0, sizeof g_hooks[id]);
    }
    g_frozen = false;
    g_seq = 0;
}
