/* Descriptor checks in the documented order, each naming the field. The
 * same checks on real .so files are in tests/integration/test_abi.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "plugin.h"

static hn_rc ok_init(hn_plugin *self, const hn_api *api, void *conf, void **state,
                     hn_error *err) {
    (void)self, (void)api, (void)conf, (void)state, (void)err;
    return HN_OK;
}

static hn_plugin_desc good(void) {
    return (hn_plugin_desc){HN_PLUGIN_DESC_INIT, .name = "good", .version = "1",
                            .init = ok_init};
}

static void expect_refused(const hn_plugin_desc *d, const char *fragment) {
    char err[512] = "";
    assert_int_not_equal(hn_plugin_check_desc(d, "x.so", err, sizeof err), 0);
    if (strstr(err, fragment) == NULL || strstr(err, "x.so") == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, fragment);
}

static void test_good(void **unused) {
    (void)unused;
    hn_plugin_desc d = good();
    char err[512] = "";
    assert_int_equal(hn_plugin_check_desc(&d, "x.so", err, sizeof err), 0);
    d.abi_minor = 0; /* an older minor is fine */
    assert_int_equal(hn_plugin_check_desc(&d, "x.so", err, sizeof err), 0);
}

static void test_each_field(void **unused) {
    (void)unused;
    hn_plugin_desc d = good();
    d.magic = 0x1234;
    expect_refused(&d, "magic");
    d = good();
    d.abi_major = HN_ABI_MAJOR + 1;
    expect_refused(&d, "abi_major is 2");
    d = good();
    d.abi_minor = HN_ABI_MINOR + 1;
    expect_refused(&d, "abi_minor");
    d = good();
    d.desc_size = 16;
    expect_refused(&d, "desc_size");
    d = good();
    d.build_sig = "ptr4";
    expect_refused(&d, "build_sig");
    d = good();
    d.name = "bad name!";
    expect_refused(&d, "plugin name");
    d = good();
    d.init = NULL;
    expect_refused(&d, "init");
    expect_refused(NULL, "magic");
}

static void test_magic_checked_first(void **unused) {
    (void)unused;
    /* Everything is wrong: the first check (magic) is the one reported. */
    hn_plugin_desc d = {0};
    d.abi_major = 9;
    expect_refused(&d, "magic");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_each_field),
        cmocka_unit_test(test_magic_checked_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
