/* Router: patterns with {name} segments, precedence of exact segments over
 * parameters (with backtracking), 404 vs 405 and the methods of a path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core.h"

/* Handlers are never called here; distinct functions tell routes apart. */
static void h_check(hn_request *r, void *s) { (void)r, (void)s; }
static void h_status(hn_request *r, void *s) { (void)r, (void)s; }
static void h_status_delete(hn_request *r, void *s) { (void)r, (void)s; }
static void h_models(hn_request *r, void *s) { (void)r, (void)s; }
static void h_model(hn_request *r, void *s) { (void)r, (void)s; }
static void h_ab(hn_request *r, void *s) { (void)r, (void)s; }
static void h_yc(hn_request *r, void *s) { (void)r, (void)s; }
static void h_root(hn_request *r, void *s) { (void)r, (void)s; }
static void h_slash(hn_request *r, void *s) { (void)r, (void)s; }

static int add(unsigned methods, const char *pattern, hn_route_fn *fn) {
    char err[256];
    return hn_router_add("test", methods, pattern, fn, NULL, err, sizeof err);
}

static int setup(void **st) {
    (void)st;
    hn_router_reset();
    return 0;
}

static void test_params_are_decoded_segments(void **st) {
    (void)st;
    int x = 7;
    char err[256];
    assert_int_equal(hn_router_add("broker", HN_GET, "/api/v2/generate/check/{id}", h_check, &x,
                                   err, sizeof err),
                     0);
    hn_router_freeze();
    hn_route_match m;
    assert_int_equal(hn_router_match(HN_GET, "/api/v2/generate/check/abc-123", &m), 0);
    assert_ptr_equal(m.fn, h_check);
    assert_ptr_equal(m.state, &x);
    assert_string_equal(m.plugin, "broker");
    assert_int_equal(m.nparams, 1);
    assert_string_equal(m.names[0], "id");
    assert_string_equal(m.values[0], "abc-123");
    hn_route_match_clear(&m);
    /* A parameter is one non-empty segment. */
    assert_int_equal(hn_router_match(HN_GET, "/api/v2/generate/check/", &m), -1);
    assert_int_equal(hn_router_match(HN_GET, "/api/v2/generate/check/a/b", &m), -1);
    assert_int_equal(hn_router_match(HN_GET, "/api/v2/generate/check", &m), -1);
}

static void test_two_params(void **st) {
    (void)st;
    assert_int_equal(add(HN_PUT, "/teams/{team}/workers/{worker}", h_check), 0);
    hn_route_match m;
    assert_int_equal(hn_router_match(HN_PUT, "/teams/t1/workers/w9", &m), 0);
    assert_int_equal(m.nparams, 2);
    assert_string_equal(m.names[0], "team");
    assert_string_equal(m.values[0], "t1");
    assert_string_equal(m.names[1], "worker");
    assert_string_equal(m.values[1], "w9");
    hn_route_match_clear(&m);
    assert_int_equal(m.nparams, 0);
}

static void test_exact_segment_beats_param(void **st) {
    (void)st;
    /* Registered param first, so order of registration is not what wins. */
    assert_int_equal(add(HN_GET, "/status/models/{name}", h_model), 0);
    assert_int_equal(add(HN_GET, "/status/models/all", h_models), 0);
    hn_route_match m;
    assert_int_equal(hn_router_match(HN_GET, "/status/models/all", &m), 0);
    assert_ptr_equal(m.fn, h_models);
    assert_int_equal(m.nparams, 0);
    hn_route_match_clear(&m);
    assert_int_equal(hn_router_match(HN_GET, "/status/models/alle", &m), 0);
    assert_ptr_equal(m.fn, h_model);
    assert_string_equal(m.values[0], "alle");
    hn_route_match_clear(&m);
}

static void test_backtracks_to_param_branch(void **st) {
    (void)st;
    assert_int_equal(add(HN_GET, "/a/b/{x}", h_ab), 0);
    assert_int_equal(add(HN_GET, "/a/{y}/c", h_yc), 0);
    hn_route_match m;
    /* Both match /a/b/c: the exact segment b wins. */
    assert_int_equal(hn_router_match(HN_GET, "/a/b/c", &m), 0);
    assert_ptr_equal(m.fn, h_ab);
    assert_string_equal(m.names[0], "x");
    assert_string_equal(m.values[0], "c");
    hn_route_match_clear(&m);
    /* /a/b/ dead-ends in the exact branch's param (empty), and {y}/c needs c. */
    assert_int_equal(hn_router_match(HN_GET, "/a/b/", &m), -1);
    assert_int_equal(hn_router_match(HN_GET, "/a/z/c", &m), 0);
    assert_ptr_equal(m.fn, h_yc);
    assert_string_equal(m.values[0], "z");
    hn_route_match_clear(&m);
}

static void test_backtracks_on_method(void **st) {
    (void)st;
    assert_int_equal(add(HN_POST, "/a/b/{x}", h_ab), 0);
    assert_int_equal(add(HN_GET, "/a/{y}/c", h_yc), 0);
    hn_route_match m;
    assert_int_equal(hn_router_match(HN_GET, "/a/b/c", &m), 0);
    assert_ptr_equal(m.fn, h_yc);
    assert_string_equal(m.names[0], "y");
    assert_string_equal(m.values[0], "b");
    hn_route_match_clear(&m);
    assert_int_equal(hn_router_match(HN_POST, "/a/b/c", &m), 0);
    assert_ptr_equal(m.fn, h_ab);
    hn_route_match_clear(&m);
    /* DELETE: both match the path, neither takes it. Allow is the union. */
    assert_int_equal(hn_router_match(HN_DELETE, "/a/b/c", &m), 1);
    assert_int_equal(hn_router_methods("/a/b/c"), HN_GET | HN_HEAD | HN_POST | HN_OPTIONS);
}

static void test_404_and_405(void **st) {
    (void)st;
    assert_int_equal(add(HN_GET, "/api/v2/generate/status/{id}", h_status), 0);
    assert_int_equal(add(HN_DELETE, "/api/v2/generate/status/{id}", h_status_delete), 0);
    hn_route_match m;
    assert_int_equal(hn_router_match(HN_GET, "/api/v2/nothing", &m), -1);
    assert_int_equal(hn_router_methods("/api/v2/nothing"), 0);
    assert_int_equal(hn_router_match(HN_POST, "/api/v2/generate/status/x", &m), 1);
    assert_int_equal(hn_router_methods("/api/v2/generate/status/x"),
                     HN_GET | HN_HEAD | HN_DELETE | HN_OPTIONS);
    assert_int_equal(hn_router_match(HN_DELETE, "/api/v2/generate/status/x", &m), 0);
    assert_ptr_equal(m.fn, h_status_delete);
    hn_route_match_clear(&m);
    /* An inner node of the tree is not a route. */
    assert_int_equal(hn_router_match(HN_GET, "/api/v2/generate/status", &m), -1);
    assert_int_equal(hn_router_methods("/api/v2/generate"), 0);
    /* Not a path at all. */
    assert_int_equal(hn_router_match(HN_GET, "api/v2/generate/status/x", &m), -1);
    assert_int_equal(hn_router_match(HN_GET, "", &m), -1);
}

static void test_methods_bits_and_head(void **st) {
    (void)st;
    assert_int_equal(add(HN_GET | HN_POST, "/both", h_check), 0);
    hn_route_match m;
    assert_int_equal(hn_router_match(HN_GET, "/both", &m), 0);
    hn_route_match_clear(&m);
    assert_int_equal(hn_router_match(HN_POST, "/both", &m), 0);
    hn_route_match_clear(&m);
    /* HEAD is served by the GET handler unless a HEAD route exists. */
    assert_int_equal(hn_router_match(HN_HEAD, "/both", &m), 0);
    assert_ptr_equal(m.fn, h_check);
    hn_route_match_clear(&m);
    assert_int_equal(hn_router_match(HN_PUT, "/both", &m), 1);
    /* OPTIONS without a route of its own: 405 from the router, which the
     * HTTP layer turns into the CORS preflight answer. */
    assert_int_equal(hn_router_match(HN_OPTIONS, "/both", &m), 1);
    assert_int_equal(add(HN_HEAD, "/both", h_status), 0);
    assert_int_equal(hn_router_match(HN_HEAD, "/both", &m), 0);
    assert_ptr_equal(m.fn, h_status);
    hn_route_match_clear(&m);
}

static void test_root_and_trailing_slash(void **st) {
    (void)st;
    assert_int_equal(add(HN_GET, "/", h_root), 0);
    assert_int_equal(add(HN_GET, "/x/", h_slash), 0);
    hn_route_match m;
    assert_int_equal(hn_router_match(HN_GET, "/", &m), 0);
    assert_ptr_equal(m.fn, h_root);
    hn_route_match_clear(&m);
    assert_int_equal(hn_router_match(HN_GET, "/x/", &m), 0);
    assert_ptr_equal(m.fn, h_slash);
    hn_route_match_clear(&m);
    assert_int_equal(hn_router_match(HN_GET, "/x", &m), -1);
    assert_int_equal(hn_router_match(HN_GET, "//", &m), -1);
}

static void test_bad_registrations(void **st) {
    (void)st;
    char err[256];
    assert_int_equal(add(HN_GET, "/w/{id}", h_check), 0);
    /* Same node and method, whatever the parameter's name. */
    assert_int_equal(
        hn_router_add("other", HN_GET | HN_POST, "/w/{name}", h_status, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "twice"));
    assert_non_null(strstr(err, "test"));
    assert_non_null(strstr(err, "other"));
    /* ... and the failed registration left nothing behind. */
    hn_route_match m;
    assert_int_equal(hn_router_match(HN_POST, "/w/1", &m), 1);
    /* Another method on the same node is fine, with its own names. */
    assert_int_equal(add(HN_POST, "/w/{name}", h_status), 0);
    assert_int_equal(hn_router_match(HN_POST, "/w/1", &m), 0);
    assert_string_equal(m.names[0], "name");
    hn_route_match_clear(&m);
    assert_int_equal(add(HN_GET, "no-slash", h_check), -1);
    assert_int_equal(add(HN_GET, "/a{id}", h_check), -1);
    assert_int_equal(add(HN_GET, "/{id", h_check), -1);
    assert_int_equal(add(HN_GET, "/{}", h_check), -1);
    assert_int_equal(add(HN_GET, "/{a-b}", h_check), -1);
    assert_int_equal(add(HN_GET, "/{a}/{a}", h_check), -1);
    assert_int_equal(add(HN_GET, "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}", h_check), -1);
    assert_int_equal(add(0, "/zero", h_check), -1);
    assert_int_equal(add(1u << 7, "/weird", h_check), -1);
    assert_int_equal(hn_router_add("t", HN_GET, "/nofn", NULL, NULL, err, sizeof err), -1);
}

static void test_frozen_refuses_additions(void **st) {
    (void)st;
    assert_int_equal(add(HN_GET, "/before", h_check), 0);
    hn_router_freeze();
    char err[256] = "";
    assert_int_equal(hn_router_add("late", HN_GET, "/after", h_check, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "init"));
    hn_route_match m;
    assert_int_equal(hn_router_match(HN_GET, "/before", &m), 0);
    hn_route_match_clear(&m);
    hn_router_reset();
    assert_int_equal(add(HN_GET, "/after", h_check), 0);
}

static void test_dump_lists_routes(void **st) {
    (void)st;
    assert_int_equal(add(HN_GET | HN_DELETE, "/api/v2/generate/status/{id}", h_status), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    hn_router_dump(f);
    fclose(f);
    assert_non_null(strstr(buf, "GET,DELETE"));
    assert_non_null(strstr(buf, "/api/v2/generate/status/{id}"));
    assert_non_null(strstr(buf, "test"));
    free(buf);
}

/* hn_router_each (api->routes_each, ABI 1.3) walks every route in
 * registration order; a match names its route's pattern (hook http_request). */
static void collect(void *arg, unsigned methods, const char *pattern, const char *plugin) {
    char *out = arg;
    char line[160];
    snprintf(line, sizeof line, "%u %s %s;", methods, pattern, plugin);
    strcat(out, line);
}

static void test_each_and_match_pattern(void **st) {
    (void)st;
    assert_int_equal(add(HN_GET | HN_DELETE, "/api/v2/generate/status/{id}", h_status), 0);
    assert_int_equal(add(HN_POST, "/api/v2/generate/async", h_check), 0);
    char out[512] = "";
    hn_router_each(collect, out);
    char want[256];
    snprintf(want, sizeof want, "%u /api/v2/generate/status/{id} test;%u /api/v2/generate/async test;",
             (unsigned)(HN_GET | HN_DELETE), (unsigned)HN_POST);
    assert_string_equal(out, want);
    hn_route_match m;
    assert_int_equal(hn_router_match(HN_DELETE, "/api/v2/generate/status/abc", &m), 0);
    assert_string_equal(m.pattern, "/api/v2/generate/status/{id}");
    hn_route_match_clear(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_params_are_decoded_segments, setup),
        cmocka_unit_test_setup(test_two_params, setup),
        cmocka_unit_test_setup(test_exact_segment_beats_param, setup),
        cmocka_unit_test_setup(test_backtracks_to_param_branch, setup),
        cmocka_unit_test_setup(test_backtracks_on_method, setup),
        cmocka_unit_test_setup(test_404_and_405, setup),
        cmocka_unit_test_setup(test_methods_bits_and_head, setup),
        cmocka_unit_test_setup(test_root_and_trailing_slash, setup),
        cmocka_unit_test_setup(test_bad_registrations, setup),
        cmocka_unit_test_setup(test_frozen_refuses_additions, setup),
        cmocka_unit_test_setup(test_dump_lists_routes, setup),
        cmocka_unit_test_setup(test_each_and_match_pattern, setup),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    hn_router_reset();
    return rc;
}
