/* broker/shared/modelref through the kudos plugin's names (models.h) and directly:
 * lenient loading (kudos) ignores entries that are not objects, strict
 * loading (the broker's) refuses the file; baselines of known and unknown
 * names; max_steps, nsfw, inpainting and requirements; a NULL reference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "models.h"

static const char REFERENCE[] =
    "{\"Deliberate\": {\"baseline\": \"stable diffusion 1\", \"nsfw\": true,"
    "  \"requirements\": {\"max_steps\": 30}},"
    " \"SDXL 1.0\": {\"baseline\": \"stable_diffusion_xl\", \"inpainting\": false},"
    " \"Fill\": {\"baseline\": \"stable diffusion 1\", \"inpainting\": true,"
    "  \"requirements\": \"not an object\"},"
    " \"broken\": 42}";

static void write_reference(char *path, size_t len, const char *text) {
    snprintf(path, len, "/tmp/hn-modelref-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void test_lenient_and_strict_loading(void **state) {
    (void)state;
    char path[64], err[512] = "";
    write_reference(path, sizeof path, REFERENCE);
    kd_model_ref *ref = kd_model_ref_load(path, err, sizeof err);
    assert_non_null(ref);
    assert_int_equal(modelref_count(ref), 4);
    assert_null(modelref_record(ref, "broken")); /* ignored: unknown */
    kd_model_ref_free(ref);
    assert_null(modelref_load(path, true, err, sizeof err));
    assert_non_null(strstr(err, "entry 'broken' is not an object"));
    unlink(path);

    write_reference(path, sizeof path, "[1, 2]");
    assert_null(kd_model_ref_load(path, err, sizeof err));
    assert_non_null(strstr(err, "not an object of models"));
    unlink(path);
    assert_null(kd_model_ref_load("/nonexistent/stable_diffusion.json", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/stable_diffusion.json"));
}

static void test_queries(void **state) {
    (void)state;
    char path[64], err[512] = "";
    write_reference(path, sizeof path, REFERENCE);
    kd_model_ref *ref = kd_model_ref_load(path, err, sizeof err);
    unlink(path);
    assert_non_null(ref);
    assert_string_equal(kd_model_baseline(ref, "SDXL 1.0"), "stable_diffusion_xl");
    assert_string_equal(kd_model_baseline(ref, "Deliberate"), "stable diffusion 1");
    /* unknown names: the horde's tags, case-insensitive, else SD 1 */
    assert_string_equal(kd_model_baseline(ref, "mine [sdxl]"), "stable_diffusion_xl");
    assert_string_equal(kd_model_baseline(ref, "x [Flux]"), "flux_1");
    assert_string_equal(kd_model_baseline(ref, "x [QWEN]"), "qwen_image");
    assert_string_equal(kd_model_baseline(ref, "x [ZImage]"), "z_image_turbo");
    assert_string_equal(kd_model_baseline(ref, "broken"), "stable diffusion 1");
    assert_string_equal(kd_model_baseline(ref, NULL), "stable diffusion 1");
    assert_int_equal(kd_model_max_steps(ref, "Deliberate", 7), 30);
    assert_int_equal(kd_model_max_steps(ref, "SDXL 1.0", 7), 7);
    assert_int_equal(kd_model_max_steps(ref, "Fill", 7), 7); /* requirements not an object */
    assert_null(modelref_requirements(ref, "Fill"));
    assert_non_null(modelref_requirements(ref, "Deliberate"));
    assert_true(modelref_nsfw(ref, "Deliberate"));
    assert_false(modelref_nsfw(ref, "SDXL 1.0"));
    assert_true(modelref_inpainting(ref, "Fill"));
    assert_false(modelref_inpainting(ref, "SDXL 1.0"));
    assert_true(modelref_inpainting(ref, "my inpainting model")); /* unknown: by name */
    assert_false(modelref_inpainting(ref, "my model"));
    kd_model_ref_free(ref);
}

static void test_no_reference(void **state) {
    (void)state;
    assert_int_equal(modelref_count(NULL), 0);
    assert_null(modelref_record(NULL, "Deliberate"));
    assert_string_equal(kd_model_baseline(NULL, "Deliberate"), "stable diffusion 1");
    assert_string_equal(kd_model_baseline(NULL, "a [SDXL] b"), "stable_diffusion_xl");
    assert_int_equal(kd_model_max_steps(NULL, "Deliberate", 50), 50);
    assert_false(modelref_nsfw(NULL, "Deliberate"));
    assert_true(modelref_inpainting(NULL, "Inpainting-v2"));
    kd_model_ref_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lenient_and_strict_loading),
        cmocka_unit_test(test_queries),
        cmocka_unit_test(test_no_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
