/* Providers: one per kind, chosen by config or by being alone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core.h"

static const int vt_sqlite = 1, vt_pg = 2, vt_fs = 3;

static int reset(void **unused) {
    (void)unused;
    hn_providers_reset();
    return 0;
}

static void add(const char *plugin, const char *kind, const char *name, const void *vt) {
    char err[256];
    assert_int_equal(hn_providers_add(plugin, kind, name, 1, vt, NULL, err, sizeof err), 0);
}

static void test_choice_by_config(void **unused) {
    (void)unused;
    add("storage-sqlite", "storage", "sqlite", &vt_sqlite);
    add("storage-pg", "storage", "postgres", &vt_pg);
    add("images-fs", "images", "fs", &vt_fs);
    const char *choices[] = {"storage", "postgres", NULL};
    char err[256];
    assert_int_equal(hn_providers_freeze(choices, err, sizeof err), 0);
    assert_ptr_equal(hn_providers_get("storage")->vt, &vt_pg);
    assert_string_equal(hn_providers_get("storage")->plugin, "storage-pg");
    assert_ptr_equal(hn_providers_get("images")->vt, &vt_fs); /* the only one */
    assert_null(hn_providers_get("generator"));
}

static void test_ambiguous_without_choice(void **unused) {
    (void)unused;
    add("storage-sqlite", "storage", "sqlite", &vt_sqlite);
    add("storage-pg", "storage", "postgres", &vt_pg);
    char err[256] = "";
    assert_int_not_equal(hn_providers_freeze(NULL, err, sizeof err), 0);
    assert_non_null(strstr(err, "providers.storage"));
}

static void test_unknown_choice(void **unused) {
    (void)unused;
    add("storage-sqlite", "storage", "sqlite", &vt_sqlite);
    const char *choices[] = {"storage", "mysql", NULL};
    char err[256] = "";
    assert_int_not_equal(hn_providers_freeze(choices, err, sizeof err), 0);
    assert_non_null(strstr(err, "providers.storage = \"mysql\""));
    assert_non_null(strstr(err, "available: sqlite"));
}

static void test_duplicate_name(void **unused) {
    (void)unused;
    add("a", "storage", "sqlite", &vt_sqlite);
    char err[256] = "";
    assert_int_not_equal(hn_providers_add("b", "storage", "sqlite", 1, &vt_pg, NULL, err,
                                          sizeof err),
                         0);
    assert_non_null(strstr(err, "already registered by plugin \"a\""));
}

static void test_not_visible_before_freeze(void **unused) {
    (void)unused;
    add("a", "storage", "sqlite", &vt_sqlite);
    assert_null(hn_providers_get("storage"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_choice_by_config, reset),
        cmocka_unit_test_setup(test_ambiguous_without_choice, reset),
        cmocka_unit_test_setup(test_unknown_choice, reset),
        cmocka_unit_test_setup(test_duplicate_name, reset),
        cmocka_unit_test_setup(test_not_visible_before_freeze, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
