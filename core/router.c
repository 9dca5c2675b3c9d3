/* Routes: "/api/v2/generate/check/{id}" patterns in a segment tree.
 *
 * Each node is one path segment: literal children, at most one parameter
 * child ({name} matches one non-empty segment), and a handler per method.
 * Matching walks the tree depth first, literal children before the parameter
 * child, and backs up when a branch dead-ends, so an exact segment beats a
 * parameter but never hides a route that only the parameter branch has:
 * with /a/b/{x} (POST) and /a/{y}/c (GET), GET /a/b/c finds the second.
 * When no route takes the method, the methods of every route that matched
 * the path make up the 405's Allow (as werkzeug does).
 *
 * The path is matched as decoded (werkzeug decodes before routing, so %2F is
 * a separator). A trailing slash is significant: "/x/" is the segments "x"
 * and "", and "/x" does not match it (werkzeug answers 404 there too).
 *
 * Routes are added only during init; hn_router_freeze ends that, after which
 * the tree is read-only and matched from every HTTP thread without locks. */
#include <stdlib.h>
#include <string.h>

#include "core.h"

#define NMETHODS 7

typedef struct route {
    struct route *next; /* registration order, for the dump */
    hn_route_fn *fn;
    void *state;
    char *plugin;
    char *pattern;
    unsigned methods;
    int nparams;
    char *names[HN_ROUTE_MAX_PARAMS];
} route;

typedef struct rnode {
    char *seg; /* literal text; NULL for a parameter node */
    size_t seglen;
    struct rnode **lits;
    size_t nlits;
    struct rnode *param;
    unsigned methods;         /* methods with a handler here */
    route *handler[NMETHODS]; /* by method bit index */
} rnode;

static rnode g_root;
static route *g_routes, **g_routes_tail = &g_routes;
static bool g_frozen;

static int method_index(unsigned method) {
    for (int i = 0; i < NMETHODS; i++)
        if (method == (1u << i))
            return i;
    return -1;
}

static const char *const method_names[NMETHODS] = {"GET",   "POST", "PUT",    "DELETE",
                                                   "PATCH", "HEAD", "OPTIONS"};

/* ---- registration ------------------------------------------------------------- */

static void node_free(rnode *n) {
    for (size_t i = 0; i < n->nlits; i++) {
        node_free(n->lits[i]);
        free(n->lits[i]);
    }
    free(n->lits);
    if (n->param != NULL) {
        node_free(n->param);
        free(n->param);
    }
    free(n->seg);
    memset(n, 0, sizeof *n);
}

static rnode *child_literal(rnode *n, const char *seg, size_t len) {
    for (size_t i = 0; i < n->nlits; i++)
        if (n->lits[i]->seglen == len && memcmp(n->lits[i]->seg, seg, len) == 0)
            return n->lits[i];
    rnode **lits = realloc(n->lits, (n->nlits + 1) * sizeof *lits);
    if (lits == NULL)
        return NULL;
    n->lits = lits;
    rnode *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->seg = strndup(seg, len);
    if (c->seg == NULL) {
        free(c);
        return NULL;
    }
    c->seglen = len;
    n->lits[n->nlits++] = c;
    return c;
}

static rnode *child_param(rnode *n) {
    if (n->param == NULL)
        n->param = calloc(1, sizeof *n->param);
    return n->param;
}

static bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static void route_free(route *r) {
    free(r->plugin);
    free(r->pattern);
    for (int i = 0; i < r->nparams; i++)
        free(r->names[i]);
    free(r);
}

int hn_router_add(const char *plugin, unsigned methods, const char *pattern, hn_route_fn *fn,
                  void *state, char *err, size_t errlen) {
    if (g_frozen) {
        snprintf(err, errlen, "routes can only be added during init (%s)", pattern);
        return -1;
    }
    if (fn == NULL || pattern == NULL || pattern[0] != '/') {
        snprintf(err, errlen, "route \"%s\": a pattern starts with '/' and has a handler",
                 pattern ? pattern : "(null)");
        return -1;
    }
    if (methods == 0 || (methods & ~((1u << NMETHODS) - 1)) != 0) {
        snprintf(err, errlen, "route %s: bad methods 0x%x", pattern, methods);
        return -1;
    }
    route *r = calloc(1, sizeof *r);
    if (r == NULL || (r->pattern = strdup(pattern)) == NULL ||
        (r->plugin = strdup(plugin ? plugin : "core")) == NULL)
        goto oom;
    r->fn = fn;
    r->state = state;
    r->methods = methods;

    /* Walk (and grow) the tree segment by segment. */
    rnode *n = &g_root;
    const char *seg = pattern + 1;
    for (;;) {
        const char *end = strchrnul(seg, '/');
        size_t len = (size_t)(end - seg);
        bool open = memchr(seg, '{', len) != NULL, close = memchr(seg, '}', len) != NULL;
        if (open || close) {
            bool ok = len > 2 && seg[0] == '{' && seg[len - 1] == '}';
            for (size_t i = 1; ok && i + 1 < len; i++)
                ok = is_name_char(seg[i]);
            if (!ok) {
                snprintf(err, errlen,
                         "route %s: a parameter is a whole segment {name} of letters, digits "
                         "and _",
                         pattern);
                goto fail;
            }
            if (r->nparams == HN_ROUTE_MAX_PARAMS) {
                snprintf(err, errlen, "route %s: more than %d parameters", pattern,
                         HN_ROUTE_MAX_PARAMS);
                goto fail;
            }
            for (int i = 0; i < r->nparams; i++) {
                if (strlen(r->names[i]) == len - 2 && memcmp(r->names[i], seg + 1, len - 2) == 0) {
                    snprintf(err, errlen, "route %s: parameter {%s} appears twice", pattern,
                             r->names[i]);
                    goto fail;
                }
            }
            if ((r->names[r->nparams] = strndup(seg + 1, len - 2)) == NULL)
                goto oom;
            r->nparams++;
            n = child_param(n);
        } else {
            n = child_literal(n, seg, len);
        }
        if (n == NULL)
            goto oom;
        if (*end == '\0')
            break;
        seg = end + 1;
    }
    for (int i = 0; i < NMETHODS; i++) {
        if ((methods & (1u << i)) && n->handler[i] != NULL) {
            snprintf(err, errlen, "route %s %s is registered twice (by %s and %s)", method_names[i],
                     pattern, n->handler[i]->plugin, r->plugin);
            goto fail; /* nodes made on the way stay, empty: harmless */
        }
    }
    for (int i = 0; i < NMETHODS; i++)
        if (methods & (1u << i))
            n->handler[i] = r;
    n->methods |= methods;
    *g_routes_tail = r;
    g_routes_tail = &r->next;
    return 0;
oom:
    snprintf(err, errlen, "out of memory adding route %s", pattern);
fail:
    if (r != NULL)
        route_free(r);
    return -1;
}

void hn_router_freeze(void) { g_frozen = true; }

void hn_router_reset(void) {
    node_free(&g_root);
    for (route *r = g_routes; r != NULL;) {
        route *next = r->next;
        route_free(r);
        r = next;
    }
    g_routes = NULL;
    g_routes_tail = &g_routes;
    g_frozen = false;
}

/* ---- matching ----------------------------------------------------------------- */

typedef struct span {
    const char *p;
    size_t len;
} span;

typedef struct walk_state {
    int midx;         /* method wanted; -1 when only collecting methods */
    unsigned allowed; /* methods of every node that matched the path */
    const route *found;
    span caps[HN_ROUTE_MAX_PARAMS];
    int ncaps;
} walk_state;

/* The route of `n` for the wanted method; HEAD falls back to GET. */
static const route *node_route(const rnode *n, int midx) {
    if (midx < 0)
        return NULL;
    if (n->handler[midx] != NULL)
        return n->handler[midx];
    if ((1u << midx) == HN_HEAD)
        return n->handler[method_index(HN_GET)];
    return NULL;
}

static bool walk(const rnode *n, const char *seg, walk_state *w);

static bool visit(const rnode *c, const char *end, walk_state *w) {
    if (*end != '\0')
        return walk(c, end + 1, w);
    if (c->methods == 0)
        return false;
    w->allowed |= c->methods;
    w->found = node_route(c, w->midx);
    return w->found != NULL;
}

static bool walk(const rnode *n, const char *seg, walk_state *w) {
    const char *end = strchrnul(seg, '/');
    size_t len = (size_t)(end - seg);
    for (size_t i = 0; i < n->nlits; i++) {
        const rnode *c = n->lits[i];
        if (c->seglen == len && memcmp(c->seg, seg, len) == 0 && visit(c, end, w))
            return true;
    }
    if (n->param != NULL && len > 0 && w->ncaps < HN_ROUTE_MAX_PARAMS) {
        w->caps[w->ncaps++] = (span){seg, len};
        if (visit(n->param, end, w))
            return true;
        w->ncaps--;
    }
    return false;
}

int hn_router_match(unsigned method, const char *path, hn_route_match *out) {
    memset(out, 0, sizeof *out);
    if (path == NULL || path[0] != '/')
        return -1;
    walk_state w = {.midx = method_index(method)};
    if (walk(&g_root, path + 1, &w)) {
        const route *r = w.found;
        /* Captures are in path order, as the route's names are. */
        for (int i = 0; i < w.ncaps; i++) {
            out->names[i] = r->names[i];
            out->values[i] = strndup(w.caps[i].p, w.caps[i].len);
            if (out->values[i] == NULL) {
                hn_route_match_clear(out);
                return -1;
            }
            out->nparams = i + 1;
        }
        out->fn = r->fn;
        out->state = r->state;
        out->plugin = r->plugin;
        out->pattern = r->pattern;
        return 0;
    }
    return w.allowed != 0 ? 1 : -1;
}

unsigned hn_router_methods(const char *path) {
    if (path == NULL || path[0] != '/')
        return 0;
    walk_state w = {.midx = -1};
    walk(&g_root, path + 1, &w);
    if (w.allowed == 0)
        return 0;
    /* What the core adds: HEAD wherever GET is, and the CORS preflight. */
    if (w.allowed & HN_GET)
        w.allowed |= HN_HEAD;
    return w.allowed | HN_OPTIONS;
}

void hn_route_match_clear(hn_route_match *m) {
    for (int i = 0; i < m->nparams; i++)
        free(m->values[i]);
    memset(m, 0, sizeof *m);
}

void hn_router_dump(FILE *out) {
    fprintf(out, "routes:\n");
    if (g_routes == NULL)
        fprintf(out, "  (none)\n");
    for (const route *r = g_routes; r != NULL; r = r->next) {
        char methods[64] = "";
        for (int i = 0; i < NMETHODS; i++) {
            if (r->methods & (1u << i)) {
                if (methods[0] != '\0')
                    strcat(methods, ",");
                strcat(methods, method_names[i]);
            }
        }
        fprintf(out, "  %-12s %-44s from %s\n", methods, r->pattern, r->plugin);
    }
}

void hn_router_each(void (*fn)(void *arg, unsigned methods, const char *pattern,
                               const char *plugin),
                    void *arg) {
    for (const route *r = g_routes; r != NULL; r = r->next)
        fn(arg, r->methods, r->pattern, r->plugin);
}
