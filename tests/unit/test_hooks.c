/* The hook registry: order (buckets, before/after, load order), the three
 * policies as the generated runners apply them, cycles refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core.h"

/* A tiny host table: just what the runners in hooks.h call. */
static hn_api test_api = {.size = sizeof(hn_api), .hook_handlers = hn_hooks_handlers};

static char trace[256];

/* Each handler appends its state's letter and returns what the letter says:
 * lower case OK, upper case DECLINED, '!' ERROR, '#' DONE. */
static hn_rc record(void *state, int64_t now) {
    (void)now;
    const char *tag = state;
    strncat(trace, tag, sizeof trace - strlen(trace) - 1);
    if (tag[0] == '!')
        return HN_ERROR;
    if (tag[0] == '#')
        return HN_DONE;
    return (tag[0] >= 'A' && tag[0] <= 'Z') ? HN_DECLINED : HN_OK;
}

static hn_rc first_user(void *state, int64_t id, hn_user *user, hn_error *err) {
    (void)err;
    const char *tag = state;
    strncat(trace, tag, sizeof trace - strlen(trace) - 1);
    if (tag[0] >= 'A' && tag[0] <= 'Z')
        return HN_DECLINED;
    user->id = id;
    snprintf(user->username, sizeof user->username, "%s#%lld", tag, (long long)id);
    return HN_OK;
}

static hn_rc all_validate(void *state, const hn_user *u, json_t *r, json_t *w, hn_error *err) {
    (void)u;
    (void)r;
    (void)w;
    const char *tag = state;
    strncat(trace, tag, sizeof trace - strlen(trace) - 1);
    if (tag[0] == '!') {
        err->status = 400;
        snprintf(err->rc, sizeof err->rc, "Refused");
        return HN_ERROR;
    }
    return HN_OK;
}

static int reset(void **unused) {
    (void)unused;
    hn_hooks_reset();
    trace[0] = '\0';
    return 0;
}

static void add(const char *plugin, unsigned id, hn_hook_fn_generic fn, const char *tag,
                const hn_hook_order *order) {
    char err[256];
    assert_int_equal(hn_hooks_add(plugin, id, fn, (void *)tag, order, err, sizeof err), 0);
}

static void test_buckets_then_load_order(void **unused) {
    (void)unused;
    hn_hook_order last = {HN_ORDER_LAST, NULL, NULL}, first = {HN_ORDER_FIRST, NULL, NULL};
    add("p1", HN_HOOK_ID_node_tick, (hn_hook_fn_generic)record, "c", &last);
    add("p2", HN_HOOK_ID_node_tick, (hn_hook_fn_generic)record, "a", NULL);
    add("p3", HN_HOOK_ID_node_tick, (hn_hook_fn_generic)record, "b", NULL);
    add("p4", HN_HOOK_ID_node_tick, (hn_hook_fn_generic)record, "z", &first);
    char err[256];
    assert_int_equal(hn_hooks_freeze(err, sizeof err), 0);
    assert_int_equal(hn_run_node_tick(&test_api, 0), HN_OK);
    assert_string_equal(trace, "zabc");
}

static void test_before_after_names(void **unused) {
    (void)unused;
    static const char *const before_auth[] = {"auth", NULL};
    static const char *const after_kudos[] = {"kudos", NULL};
    hn_hook_order o1 = {HN_ORDER_MIDDLE, NULL, after_kudos};
    hn_hook_order o2 = {HN_ORDER_LAST, before_auth, NULL};
    add("ratings", HN_HOOK_ID_node_tick, (hn_hook_fn_generic)record, "r", &o1);
    add("auth", HN_HOOK_ID_node_tick, (hn_hook_fn_generic)record, "a", NULL);
    add("kudos", HN_HOOK_ID_node_tick, (hn_hook_fn_generic)record, "k", &o2);
    char err[256];
    assert_int_equal(hn_hooks_freeze(err, sizeof err), 0);
    hn_run_node_tick(&test_api, 0);
    /* kudos must precede auth despite its LAST bucket, ratings must follow
     * kudos; then ratings and auth are both free and MIDDLE: load order. */
    assert_string_equal(trace, "kra");
}

static void test_cycle_is_an_error(void **unused) {
    (void)unused;
    static const char *const before_b[] = {"b", NULL};
    static const char *const before_a[] = {"a", NULL};
    hn_hook_order oa = {0, before_b, NULL}, ob = {0, before_a, NULL};
    add("a", HN_HOOK_ID_job_popped, (hn_hook_fn_generic)record, "a", &oa);
    add("b", HN_HOOK_ID_job_popped, (hn_hook_fn_generic)record, "b", &ob);
    char err[256] = "";
    assert_int_not_equal(hn_hooks_freeze(err, sizeof err), 0);
    assert_non_null(strstr(err, "job_popped"));
    assert_non_null(strstr(err, "cycle"));
    assert_non_null(strstr(err, " a"));
    assert_non_null(strstr(err, " b"));
}

static void test_run_first(void **unused) {
    (void)unused;
    add("p1", HN_HOOK_ID_user_lookup, (hn_hook_fn_generic)first_user, "X", NULL);
    add("p2", HN_HOOK_ID_user_lookup, (hn_hook_fn_generic)first_user, "y", NULL);
    add("p3", HN_HOOK_ID_user_lookup, (hn_hook_fn_generic)first_user, "z", NULL);
    char err[256];
    assert_int_equal(hn_hooks_freeze(err, sizeof err), 0);
    hn_user u = {0};
    hn_error e = {0};
    assert_int_equal(hn_run_user_lookup(&test_api, 7, &u, &e), HN_OK);
    assert_string_equal(trace, "Xy"); /* z never ran */
    assert_string_equal(u.username, "y#7");
}

static void test_run_first_all_decline(void **unused) {
    (void)unused;
    add("p1", HN_HOOK_ID_user_lookup, (hn_hook_fn_generic)first_user, "X", NULL);
    char err[256];
    assert_int_equal(hn_hooks_freeze(err, sizeof err), 0);
    hn_user u = {0};
    hn_error e = {0};
    assert_int_equal(hn_run_user_lookup(&test_api, 7, &u, &e), HN_DECLINED);
}

static void test_run_all_stops_at_error(void **unused) {
    (void)unused;
    add("p1", HN_HOOK_ID_generation_validate, (hn_hook_fn_generic)all_validate, "a", NULL);
    add("p2", HN_HOOK_ID_generation_validate, (hn_hook_fn_generic)all_validate, "!", NULL);
    add("p3", HN_HOOK_ID_generation_validate, (hn_hook_fn_generic)all_validate, "c", NULL);
    char err[256];
    assert_int_equal(hn_hooks_freeze(err, sizeof err), 0);
    hn_error e = {0};
    assert_int_equal(hn_run_generation_validate(&test_api, NULL, NULL, NULL, &e), HN_ERROR);
    assert_string_equal(trace, "a!");
    assert_string_equal(e.rc, "Refused");
}

static void test_notify_runs_all(void **unused) {
    (void)unused;
    add("p1", HN_HOOK_ID_node_tick, (hn_hook_fn_generic)record, "!", NULL);
    add("p2", HN_HOOK_ID_node_tick, (hn_hook_fn_generic)record, "#", NULL);
    add("p3", HN_HOOK_ID_node_tick, (hn_hook_fn_generic)record, "c", NULL);
    char err[256];
    assert_int_equal(hn_hooks_freeze(err, sizeof err), 0);
    assert_int_equal(hn_run_node_tick(&test_api, 0), HN_OK);
    assert_string_equal(trace, "!#c");
}

static void test_no_handlers_and_frozen(void **unused) {
    (void)unused;
    char err[256];
    assert_int_equal(hn_hooks_freeze(err, sizeof err), 0);
    hn_user u = {0};
    hn_error e = {0};
    assert_int_equal(hn_run_user_lookup(&test_api, 1, &u, &e), HN_DECLINED);
    assert_int_equal(hn_run_node_tick(&test_api, 0), HN_OK);
    /* registration after freeze is refused */
    assert_int_not_equal(hn_hooks_add("late", HN_HOOK_ID_node_tick, (hn_hook_fn_generic)record,
                                      "x", NULL, err, sizeof err),
                         0);
    assert_non_null(strstr(err, "only be added during init"));
    assert_string_equal(hn_hook_name(HN_HOOK_ID_http_authenticate), "http_authenticate");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_buckets_then_load_order, reset),
        cmocka_unit_test_setup(test_before_after_names, reset),
        cmocka_unit_test_setup(test_cycle_is_an_error, reset),
        cmocka_unit_test_setup(test_run_first, reset),
        cmocka_unit_test_setup(test_run_first_all_decline, reset),
        cmocka_unit_test_setup(test_run_all_stops_at_error, reset),
        cmocka_unit_test_setup(test_notify_runs_all, reset),
        cmocka_unit_test_setup(test_no_handlers_and_frozen, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
