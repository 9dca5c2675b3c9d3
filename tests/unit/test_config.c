/* Config checking: every error names the plugin or section, the key, the
 * file and the line; defaults, types and ranges land in the plugin's struct. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

struct demo_conf {
    bool enabled;
    long long rate;
    double ratio;
    const char *name;
    const char **models;
    const char *secret;
};

static const hn_conf_spec demo_spec[] = {
    {"enabled", HN_CONF_BOOL, offsetof(struct demo_conf, enabled), "true", 0, 0, 0, "on/off"},
    {"rate", HN_CONF_INT, offsetof(struct demo_conf, rate), "30", 0, 1000, 0, "per minute"},
    {"ratio", HN_CONF_FLOAT, offsetof(struct demo_conf, ratio), "0.5", 0, 1, 0, "a ratio"},
    {"name", HN_CONF_STRING, offsetof(struct demo_conf, name), "demo", 0, 0, 0, "a name"},
    {"models", HN_CONF_STRING_LIST, offsetof(struct demo_conf, models), "a,b", 0, 0, 0, "list"},
    {"secret", HN_CONF_STRING, offsetof(struct demo_conf, secret), NULL, 0, 0,
     HN_CONF_SECRET, "a secret"},
    HN_CONF_END,
};

static const hn_conf_spec required_spec[] = {
    {"dsn", HN_CONF_STRING, 0, NULL, 0, 0, HN_CONF_REQUIRED, "connection string"},
    HN_CONF_END,
};

/* Writes text to a temp file; the path is returned in buf. */
static const char *write_conf(char *buf, size_t len, const char *text) {
    snprintf(buf, len, "/tmp/hn-test-config-XXXXXX");
    int fd = mkstemp(buf);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return buf;
}

static hn_config *load_ok(const char *text, char *path, size_t len) {
    char err[1024] = "";
    hn_config *cfg = NULL;
    write_conf(path, len, text);
    int rc = hn_config_load(path, &cfg, err, sizeof err);
    if (rc != 0)
        fail_msg("unexpected error: %s", err);
    return cfg;
}

static void test_defaults_and_values(void **unused) {
    (void)unused;
    char path[64];
    hn_config *cfg = load_ok("load = [\"demo\"];\n"
                             "plugins: { demo: { rate = 60; ratio = 1; models = [\"x\", \"y\", \"z\"]; }; };\n",
                             path, sizeof path);
    struct demo_conf c = {0};
    char err[1024] = "";
    assert_int_equal(hn_config_apply(cfg, "demo", demo_spec, &c, err, sizeof err), 0);
    assert_true(c.enabled);            /* default */
    assert_int_equal(c.rate, 60);      /* from the file */
    assert_true(c.ratio == 1.0);       /* an integer accepted for a float */
    assert_string_equal(c.name, "demo");
    assert_string_equal(c.models[0], "x");
    assert_string_equal(c.models[2], "z");
    assert_null(c.models[3]);
    assert_null(c.secret);
    /* node section defaults */
    hn_node_settings *ns = hn_config_node(cfg);
    assert_string_equal(ns->listen, "127.0.0.1:7001");
    assert_int_equal(ns->max_body, 20971520);
    assert_int_equal(hn_config_load_count(cfg), 1);
    assert_string_equal(hn_config_load_at(cfg, 0)->spec, "demo");
    hn_config_free(cfg);
    unlink(path);
}

static void test_list_default(void **unused) {
    (void)unused;
    char path[64];
    hn_config *cfg = load_ok("load = [\"demo\"];\n", path, sizeof path);
    struct demo_conf c = {0};
    char err[1024];
    assert_int_equal(hn_config_apply(cfg, "demo", demo_spec, &c, err, sizeof err), 0);
    assert_string_equal(c.models[0], "a");
    assert_string_equal(c.models[1], "b");
    assert_null(c.models[2]);
    hn_config_free(cfg);
    unlink(path);
}

/* Applies `text`'s plugins.demo to demo_spec and expects an error that
 * contains every one of the fragments. */
static void expect_apply_error(const char *text, const hn_conf_spec *spec, const char *f1,
                               const char *f2, const char *f3) {
    char path[64];
    hn_config *cfg = load_ok(text, path, sizeof path);
    char c[256] = {0};
    char err[1024] = "";
    assert_int_not_equal(hn_config_apply(cfg, "demo", spec, c, err, sizeof err), 0);
    char line_ref[128];
    snprintf(line_ref, sizeof line_ref, "%s:%s", path, f3);
    if (strstr(err, f1) == NULL || strstr(err, f2) == NULL || strstr(err, line_ref) == NULL)
        fail_msg("error \"%s\" lacks \"%s\", \"%s\" or \"%s\"", err, f1, f2, line_ref);
    hn_config_free(cfg);
    unlink(path);
}

static void test_unknown_key_names_key_file_line(void **unused) {
    (void)unused;
    expect_apply_error("load = [\"demo\"];\nplugins: {\n  demo: {\n    rat = 5;\n  };\n};\n",
                       demo_spec, "plugin \"demo\"", "unknown key \"rat\"", "4");
}

static void test_wrong_type(void **unused) {
    (void)unused;
    expect_apply_error("plugins: { demo: {\n rate = \"fast\"; }; };\n", demo_spec,
                       "\"rate\" must be an integer", "demo", "2");
    expect_apply_error("plugins: { demo: {\n\n enabled = 1; }; };\n", demo_spec,
                       "\"enabled\" must be a boolean", "demo", "3");
    expect_apply_error("plugins: { demo: { models = [\"a\", \"b\"];\n name = 5; }; };\n",
                       demo_spec, "\"name\" must be a string", "demo", "2");
}

static void test_out_of_range(void **unused) {
    (void)unused;
    expect_apply_error("plugins: { demo: {\n rate = 5000; }; };\n", demo_spec,
                       "\"rate\" must be an integer in [0, 1000]", "5000", "2");
    expect_apply_error("plugins: { demo: {\n ratio = 1.5; }; };\n", demo_spec,
                       "\"ratio\" must be a number in [0, 1]", "demo", "2");
}

static void test_missing_required(void **unused) {
    (void)unused;
    expect_apply_error("plugins: {\n demo: { }; };\n", required_spec,
                       "required key \"dsn\" is missing", "plugin \"demo\"", "2");
}

static void test_section_for_unloaded_plugin(void **unused) {
    (void)unused;
    char path[64];
    hn_config *cfg = load_ok("load = [\"demo\"];\nplugins: {\n  demo: { };\n  kudos: { };\n};\n",
                             path, sizeof path);
    const char *loaded[] = {"demo", NULL};
    char err[1024] = "";
    assert_int_not_equal(hn_config_check_sections(cfg, loaded, err, sizeof err), 0);
    assert_non_null(strstr(err, "\"kudos\", which is not loaded"));
    char ref[96];
    snprintf(ref, sizeof ref, "%s:4", path);
    assert_non_null(strstr(err, ref));
    hn_config_free(cfg);
    unlink(path);
}

static void test_file_errors(void **unused) {
    (void)unused;
    char path[64], err[1024] = "";
    hn_config *cfg = NULL;
    /* a syntax error names file and line */
    write_conf(path, sizeof path, "node: {\n listen = ;\n};\n");
    assert_int_not_equal(hn_config_load(path, &cfg, err, sizeof err), 0);
    char ref[96];
    snprintf(ref, sizeof ref, "%s:2", path);
    assert_non_null(strstr(err, ref));
    unlink(path);
    /* an unknown top-level setting */
    write_conf(path, sizeof path, "node: { };\n\nplugin: { };\n");
    assert_int_not_equal(hn_config_load(path, &cfg, err, sizeof err), 0);
    assert_non_null(strstr(err, "unknown top-level setting \"plugin\""));
    snprintf(ref, sizeof ref, "%s:3", path);
    assert_non_null(strstr(err, ref));
    unlink(path);
    /* a misspelt node key */
    write_conf(path, sizeof path, "node: {\n  listn = \"127.0.0.1:1\";\n};\n");
    assert_int_not_equal(hn_config_load(path, &cfg, err, sizeof err), 0);
    assert_non_null(strstr(err, "node: unknown key \"listn\""));
    unlink(path);
    /* a bad log level */
    write_conf(path, sizeof path, "node: { log_level = \"loud\"; };\n");
    assert_int_not_equal(hn_config_load(path, &cfg, err, sizeof err), 0);
    assert_non_null(strstr(err, "log_level"));
    unlink(path);
    /* a missing file */
    assert_int_not_equal(hn_config_load("/nonexistent/x.conf", &cfg, err, sizeof err), 0);
    assert_non_null(strstr(err, "/nonexistent/x.conf"));
    assert_null(cfg);
}

static void test_providers_section(void **unused) {
    (void)unused;
    char path[64];
    hn_config *cfg = load_ok("providers: { storage = \"sqlite\"; images = \"fs\"; };\n", path,
                             sizeof path);
    const char *const *c = hn_config_provider_choices(cfg);
    assert_string_equal(c[0], "storage");
    assert_string_equal(c[1], "sqlite");
    assert_string_equal(c[2], "images");
    assert_string_equal(c[3], "fs");
    assert_null(c[4]);
    hn_config_free(cfg);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_values),
        cmocka_unit_test(test_list_default),
        cmocka_unit_test(test_unknown_key_names_key_file_line),
        cmocka_unit_test(test_wrong_type),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_section_for_unloaded_plugin),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_providers_section),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
