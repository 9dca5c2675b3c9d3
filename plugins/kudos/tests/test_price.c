/* kudos: the formulas of spec §3 against numbers worked out by hand (and the
 * public horde's golden prices for its neural price model, whose weights are
 * read from the shared data folder: HN_SHARED or ../shared). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "models.h"
#include "price.h"
#include "rules.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static json_t *request_of(const char *text) {
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (!j)
        fail_msg("bad test JSON: %s: %s", text, e.text);
    return j;
}

/* Parses `text` into g; the JSON stays alive in *keep (g borrows models). */
static void gen_of(const char *text, kd_gen *g, json_t **keep) {
    *keep = request_of(text);
    assert_int_equal(kd_gen_from_request(*keep, g), 0);
}

static const char *shared_dir(void) {
    const char *env = getenv("HN_SHARED");
    return env && *env ? env : "../shared";
}

static kd_price_model *load_model(void) {
    char path[1024], err[512];
    snprintf(path, sizeof(path), "%s/data/kudos-model/kudos-v21-206.json", shared_dir());
    if (access(path, R_OK) != 0)
        return NULL;
    kd_price_model *m = kd_price_model_load(path, err, sizeof(err));
    if (!m)
        fail_msg("%s", err);
    return m;
}

static kd_model_ref *load_ref(void) {
    char path[1024], err[512];
    snprintf(path, sizeof(path), "%s/data/model-reference/stable_diffusion.json", shared_dir());
    if (access(path, R_OK) != 0)
        return NULL;
    kd_model_ref *r = kd_model_ref_load(path, err, sizeof(err));
    if (!r)
        fail_msg("%s", err);
    return r;
}

static double model_price(const kd_price_model *m, const char *text) {
    kd_gen g;
    json_t *keep;
    gen_of(text, &g, &keep);
    double p = kd_price(m, &g);
    json_decref(keep);
    return p;
}

/* ---- the neural price model ------------------------------------------------------------------ */

static void test_golden_model_prices(void **state) {
    (void)state;
    kd_price_model *m = load_model();
    if (!m) {
        print_message("price model not found under %s (set HN_SHARED)\n", shared_dir());
        skip();
    }
    assert_true(kd_price_model_basis(m) == 6.45);
    /* the basis job is worth exactly KUDOS_BASIS + 1 */
    assert_true(model_price(m, "{\"params\": {\"width\": 512, \"height\": 512, \"steps\": 50,"
                               " \"cfg_scale\": 7.5, \"sampler_name\": \"k_euler\", \"karras\": true}}") ==
                11.0);
    assert_true(model_price(m, "{\"params\": {\"width\": 1024, \"height\": 1024, \"steps\": 50,"
                               " \"cfg_scale\": 7.5, \"sampler_name\": \"k_euler\"}}") == 29.03);
    /* img2img + ControlNet: control_strength, denoising forced to 1 */
    assert_true(model_price(m, "{\"params\": {\"width\": 768, \"height\": 512, \"steps\": 30,"
                               " \"cfg_scale\": 8.5, \"sampler_name\": \"k_dpmpp_2m\","
                               " \"control_type\": \"canny\", \"control_strength\": 0.72,"
                               " \"denoising_strength\": 0.42},"
                               " \"_has_source\": true, \"source_processing\": \"img2img\"}") ==
                15.13);
    assert_true(model_price(m, "{\"params\": {\"width\": 512, \"height\": 512, \"steps\": 35,"
                               " \"cfg_scale\": 7.5, \"sampler_name\": \"uni_pc\","
                               " \"post_processing\": [\"GFPGAN\", \"RealESRGAN_x4plus\"]}}") ==
                25.46);
    /* the server defaults (cfg 5, k_euler_a, karras) of a bare request */
    assert_true(model_price(m, "{\"params\": {}}") == 7.61);
    assert_true(model_price(m, "{\"params\": {\"width\": 1024, \"height\": 1024}}") == 20.99);
    assert_true(model_price(m, "{\"params\": {\"width\": 1024, \"height\": 1024, \"steps\": 8,"
                               " \"cfg_scale\": 1.5}}") == 12.11);
    /* LoRAs +3 each, TIs +1 once, on top of the model's price */
    assert_true(fabs(model_price(m, "{\"params\": {\"loras\": [{\"name\": \"a\"}, {\"name\": \"b\"}],"
                                    " \"tis\": [{\"name\": \"x\"}, {\"name\": \"y\"}]}}") -
                     (7.61 + 6 + 1)) < 1e-9);
    /* a post-processor the model does not know: the legacy formula, as the
     * horde falls back when its model throws (512x512, 30 steps, 1 pp) */
    assert_true(model_price(m, "{\"params\": {\"post_processing\": [\"4xNomos8kSC\"]}}") == 7.8);
    kd_price_model_free(m);
}

static void test_model_file_is_checked(void **state) {
    (void)state;
    char err[512];
    assert_null(kd_price_model_load("/nonexistent/kudos.json", err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/kudos.json"));
    char path[] = "/tmp/kd-model-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *bad = "{\"w0\": {\"shape\": [2, 2], \"data\": [1, 2, 3, 4]}}";
    assert_int_equal(write(fd, bad, strlen(bad)), (ssize_t)strlen(bad));
    close(fd);
    assert_null(kd_price_model_load(path, err, sizeof(err)));
    assert_non_null(strstr(err, "w0"));
    unlink(path);
}

/* ---- the legacy formula (worked out by hand from §3.1 point 2) ------------------------------------ */

static void test_legacy_prices(void **state) {
    (void)state;
    /* no model: everything is legacy */
    assert_true(model_price(NULL, "{\"params\": {}}") == 6.5);
    assert_true(model_price(NULL, "{\"params\": {\"width\": 1024, \"height\": 1024, \"steps\": 50}}") ==
                60.06);
    assert_true(model_price(NULL, "{\"params\": {\"post_processing\": [\"GFPGAN\"]}}") == 7.8);
    assert_true(model_price(NULL, "{\"params\": {\"post_processing\": [\"GFPGAN\","
                                  " \"RealESRGAN_x4plus\"]}}") == 9.36);
    /* ControlNet x3 (20 steps is its default) unless only the map is returned */
    assert_true(model_price(NULL, "{\"params\": {\"width\": 768, \"control_type\": \"canny\"},"
                                  " \"_has_source\": true}") == 18.87);
    assert_true(model_price(NULL, "{\"params\": {\"width\": 768, \"control_type\": \"canny\","
                                  " \"return_control_map\": true}, \"_has_source\": true}") == 6.29);
    assert_true(model_price(NULL, "{\"params\": {\"width\": 64, \"height\": 64, \"steps\": 10}}") ==
                1.23);
    /* legacy reads raw steps: a second-order sampler costs the same */
    assert_true(model_price(NULL, "{\"params\": {\"sampler_name\": \"k_heun\"}}") == 6.5);
    assert_true(fabs(model_price(NULL, "{\"params\": {\"loras\": [{\"name\": \"1\"}]}}") - 9.5) <
                1e-9);
}

static void test_accurate_steps_and_lcm(void **state) {
    (void)state;
    kd_gen g;
    json_t *keep;
    gen_of("{\"params\": {\"steps\": 25, \"sampler_name\": \"k_heun\"}}", &g, &keep);
    assert_int_equal(kd_accurate_steps(&g), 50);
    json_decref(keep);
    gen_of("{\"params\": {\"steps\": 25, \"sampler_name\": \"k_dpmpp_sde\"}}", &g, &keep);
    assert_int_equal(kd_accurate_steps(&g), 50);
    json_decref(keep);
    gen_of("{\"params\": {\"steps\": 7, \"sampler_name\": \"k_dpm_adaptive\"}}", &g, &keep);
    assert_int_equal(kd_accurate_steps(&g), 40);
    json_decref(keep);
    gen_of("{\"params\": {\"steps\": 25, \"sampler_name\": \"k_euler\"}}", &g, &keep);
    assert_int_equal(kd_accurate_steps(&g), 25);
    assert_false(kd_uses_lcm(&g));
    json_decref(keep);
    gen_of("{\"params\": {\"sampler_name\": \"lcm\"}}", &g, &keep);
    assert_true(kd_uses_lcm(&g));
    json_decref(keep);
    /* LCM LoRAs by id, or by version only when is_version */
    gen_of("{\"params\": {\"loras\": [{\"name\": \"216190\"}]}}", &g, &keep);
    assert_true(kd_uses_lcm(&g));
    json_decref(keep);
    gen_of("{\"params\": {\"loras\": [{\"name\": \"246747\"}]}}", &g, &keep);
    assert_false(kd_uses_lcm(&g));
    json_decref(keep);
    gen_of("{\"params\": {\"loras\": [{\"name\": \"246747\", \"is_version\": true}]}}", &g, &keep);
    assert_true(kd_uses_lcm(&g));
    json_decref(keep);
    /* ControlNet: default 20 steps, capped at 40 */
    gen_of("{\"params\": {\"control_type\": \"hed\"}}", &g, &keep);
    assert_int_equal(g.steps, 20);
    json_decref(keep);
    gen_of("{\"params\": {\"control_type\": \"hed\", \"steps\": 90}}", &g, &keep);
    assert_int_equal(g.steps, 40);
    json_decref(keep);
}

static void test_py_round_and_repr(void **state) {
    (void)state;
    assert_true(kd_py_round(2.675, 2) == 2.67); /* 2.67499999... in binary */
    assert_true(kd_py_round(7.615, 2) == 7.62); /* 7.61500000...02 */
    assert_true(kd_py_round(0.125, 2) == 0.12); /* an exact tie: to even */
    assert_true(kd_py_round(0.375, 2) == 0.38);
    assert_true(kd_py_round(-1.005, 2) == -1.0);
    char s[64];
    kd_py_repr(57.2, s, sizeof(s));
    assert_string_equal(s, "57.2");
    kd_py_repr(57.0, s, sizeof(s));
    assert_string_equal(s, "57.0");
    kd_py_repr(114.39999999999999, s, sizeof(s));
    assert_string_equal(s, "114.39999999999999");
    kd_py_repr(1e16, s, sizeof(s));
    assert_string_equal(s, "1e+16");
    kd_py_repr(1.5e-05, s, sizeof(s));
    assert_string_equal(s, "1.5e-05");
    kd_py_repr(0.0001, s, sizeof(s));
    assert_string_equal(s, "0.0001");
    kd_py_repr(123456789012.5, s, sizeof(s));
    assert_string_equal(s, "123456789012.5");
    kd_py_repr(-3.25, s, sizeof(s));
    assert_string_equal(s, "-3.25");
}

/* ---- burn, multipliers, estimates ------------------------------------------------------------------ */

static void test_burn(void **state) {
    (void)state;
    kd_burn_flags plain = {false, 1.0, true, false};
    assert_true(fabs(kd_burn(&plain, 10) - 11) < 1e-12);
    /* censored: nothing for the image, the per-image tax still, with the
     * slow-worker and blacklist multipliers on top */
    kd_burn_flags strict = {false, 1.0, false, true};
    assert_true(fabs(kd_burn(&strict, 0) - 1.32) < 1e-12);
    kd_gen g;
    json_t *keep;
    gen_of("{\"params\": {\"post_processing\": [\"RealESRGAN_x4plus\", \"GFPGAN\"]},"
           " \"_has_source\": true}",
           &g, &keep);
    kd_burn_flags f = kd_burn_flags_of(&g);
    assert_true(f.has_source);
    assert_true(fabs(f.pp_multiplier - 1.05) < 1e-12);
    assert_true(fabs(kd_burn(&f, 10) - 14.65) < 1e-12);
    json_decref(keep);
    assert_true(kd_pp_multiplier("4xNomos2_hq_dat2") == 1.05);
    assert_true(kd_pp_multiplier("CodeFormers") == 1.0);
    assert_true(kd_pp_multiplier("RestoreFormer") == 1.0);
    assert_true(kd_pp_multiplier("strip_background") == 1.0);
}

static void test_baseline_and_bridge_multipliers(void **state) {
    (void)state;
    assert_true(kd_baseline_multiplier("stable diffusion 1", false, false) == 1);
    assert_true(kd_baseline_multiplier("stable_diffusion_xl", false, false) == 2);
    assert_true(kd_baseline_multiplier("stable_diffusion_xl", true, false) == 4);
    assert_true(kd_baseline_multiplier("stable_cascade", false, false) == 4);
    assert_true(kd_baseline_multiplier("stable_cascade", false, true) == 7);
    assert_true(kd_baseline_multiplier("flux_1", false, false) == 8);
    assert_true(kd_baseline_multiplier("z_image_turbo", false, false) == 8);
    assert_true(kd_baseline_multiplier("qwen_image", false, false) == 12);

    assert_true(kd_bridge_multiplier("AI Horde Worker reGen:13.0.1:https://x") == 1.0);
    assert_true(kd_bridge_multiplier("AI Horde Worker reGen:9.0.1-citests:https://x") == 0.9);
    assert_true(kd_bridge_multiplier("AI Horde Worker:24:https://x") == 1.0);
    assert_true(kd_bridge_multiplier("AI Horde Worker:23:https://x") == 0.9);
    assert_true(kd_bridge_multiplier("horde-node:0.1.0:https://x") == 1.0);
    assert_true(kd_bridge_multiplier("horde-node") == 1.0);
    assert_true(kd_bridge_multiplier("My Bridge:99:https://x") == 0.75);
    assert_true(kd_bridge_multiplier("AI Horde Worker reGenX:13:y") == 0.75);
    assert_true(kd_bridge_multiplier(NULL) == 0.75);
}

static void test_estimates(void **state) {
    (void)state;
    kd_model_ref *ref = load_ref();
    kd_gen g;
    json_t *keep;
    /* n=2 of a 7.61 image, no models given: estimated as SDXL (x2) */
    gen_of("{\"params\": {\"n\": 2}, \"models\": []}", &g, &keep);
    assert_true(kd_estimate_multiplier(ref, &g) == 2);
    assert_true(fabs(kd_estimate(ref, &g, 7.61) - 35.44) < 1e-9);
    json_decref(keep);
    /* a tag in an unknown name picks the baseline */
    gen_of("{\"params\": {}, \"models\": [\"My Model [Flux]\", \"other\"]}", &g, &keep);
    assert_true(kd_estimate_multiplier(ref, &g) == 8);
    json_decref(keep);
    gen_of("{\"params\": {}, \"models\": [\"stable_diffusion\"]}", &g, &keep);
    assert_true(kd_estimate_multiplier(ref, &g) == 1);
    assert_true(fabs(kd_estimate(ref, &g, 11.0) - 13) < 1e-9);
    json_decref(keep);
    if (ref) {
        /* from the reference file: the first model decides */
        gen_of("{\"params\": {}, \"models\": [\"AlbedoBase XL (SDXL)\", \"stable_diffusion\"]}", &g,
               &keep);
        assert_true(kd_estimate_multiplier(ref, &g) == 2);
        json_decref(keep);
        gen_of("{\"params\": {}, \"models\": [\"Stable Cascade 1.0\"]}", &g, &keep);
        assert_true(kd_estimate_multiplier(ref, &g) == 4);
        json_decref(keep);
    }
    kd_model_ref_free(ref);
}

/* ---- the upfront rule and downgrades ---------------------------------------------------------------- */

static kd_upfront upfront(const kd_model_ref *ref, const char *text, long long q, long long t) {
    kd_gen g;
    json_t *keep;
    gen_of(text, &g, &keep);
    kd_upfront u = kd_upfront_check(ref, &g, q, t);
    json_decref(keep);
    return u;
}

static void test_upfront_rule(void **state) {
    (void)state;
    kd_model_ref *ref = load_ref();
    const char *sd = "\"models\": [\"stable_diffusion\"]";
    char text[512];
    /* an idle horde: max_res 1024 */
    snprintf(text, sizeof(text), "{\"params\": {\"width\": 1024, \"height\": 1024}, %s}", sd);
    kd_upfront u = upfront(ref, text, 0, 0);
    assert_false(u.required);
    assert_int_equal(u.max_res, 1024);
    snprintf(text, sizeof(text), "{\"params\": {\"width\": 1088, \"height\": 1024}, %s}", sd);
    assert_true(upfront(ref, text, 0, 0).required);
    /* a queue shrinks it: 1024 + 2*10 - round(100*0.9) = 954; 960x960 > 954^2 */
    snprintf(text, sizeof(text), "{\"params\": {\"width\": 960, \"height\": 960}, %s}", sd);
    u = upfront(ref, text, 100, 2);
    assert_int_equal(u.max_res, 954);
    assert_true(u.required);
    /* round() of queue*0.9 ties to even: 5*0.9 = 4.5 -> 4 */
    assert_int_equal(upfront(ref, text, 5, 0).max_res, 1020);
    /* never below 576 */
    assert_int_equal(upfront(ref, text, 100000, 0).max_res, 576);
    /* slow_workers=false: always, with the unclamped resolution */
    snprintf(text, sizeof(text), "{\"params\": {}, \"slow_workers\": false, %s}", sd);
    u = upfront(ref, text, 0, 10);
    assert_true(u.required);
    assert_int_equal(u.max_res, 1124);
    /* accurate steps above the models' max_steps (40 when they say none) */
    snprintf(text, sizeof(text), "{\"params\": {\"steps\": 41}, %s}", sd);
    assert_true(upfront(ref, text, 0, 0).required);
    snprintf(text, sizeof(text), "{\"params\": {\"steps\": 40}, %s}", sd);
    assert_false(upfront(ref, text, 0, 0).required);
    snprintf(text, sizeof(text), "{\"params\": {\"steps\": 21, \"sampler_name\": \"k_heun\"}, %s}",
             sd);
    assert_true(upfront(ref, text, 0, 0).required);
    /* without models there is nothing to compare steps with */
    assert_false(upfront(ref, "{\"params\": {\"steps\": 45}, \"models\": []}", 0, 0).required);
    /* LCM over 10 steps, ControlNet over 20 */
    snprintf(text, sizeof(text), "{\"params\": {\"sampler_name\": \"lcm\", \"steps\": 11}, %s}", sd);
    assert_true(upfront(ref, text, 0, 0).required);
    snprintf(text, sizeof(text), "{\"params\": {\"sampler_name\": \"lcm\", \"steps\": 10}, %s}", sd);
    assert_false(upfront(ref, text, 0, 0).required);
    snprintf(text, sizeof(text),
             "{\"params\": {\"control_type\": \"canny\", \"steps\": 21}, \"_has_source\": true, %s}",
             sd);
    assert_true(upfront(ref, text, 0, 0).required);
    if (ref) {
        /* SDXL may always go to 1024 */
        u = upfront(ref,
                    "{\"params\": {\"width\": 1024, \"height\": 1024},"
                    " \"models\": [\"AlbedoBase XL (SDXL)\"]}",
                    2000, 0);
        assert_int_equal(u.max_res, 1024);
        assert_false(u.required);
        /* Flux.1-Schnell's reference max_steps is 8 */
        assert_true(upfront(ref,
                            "{\"params\": {\"steps\": 9},"
                            " \"models\": [\"Flux.1-Schnell fp8 (Compact)\"]}",
                            0, 0)
                        .required);
    }
    kd_model_ref_free(ref);
}

static void test_downgrade(void **state) {
    (void)state;
    kd_gen g;
    json_t *keep;
    gen_of("{\"params\": {\"width\": 1536, \"height\": 1536, \"steps\": 50},"
           " \"slow_workers\": false, \"models\": [\"stable_diffusion\"]}",
           &g, &keep);
    kd_downgrade(NULL, &g, 576);
    assert_int_equal(g.width, 576);
    assert_int_equal(g.height, 576);
    assert_int_equal(g.steps, 30);
    assert_true(g.slow_workers);
    json_decref(keep);
    gen_of("{\"params\": {\"width\": 1536, \"height\": 1536}}", &g, &keep);
    kd_downgrade(NULL, &g, 1024);
    assert_int_equal(g.width, 1024);
    assert_int_equal(g.height, 1024);
    json_decref(keep);
    /* aspect kept, multiples of 64, not below 512 */
    gen_of("{\"params\": {\"width\": 2048, \"height\": 1024, \"steps\": 20}}", &g, &keep);
    kd_downgrade(NULL, &g, 1024);
    assert_int_equal(g.width, 1408);
    assert_int_equal(g.height, 704);
    assert_true((long long)g.width * g.height <= 1024LL * 1024);
    assert_int_equal(g.steps, 20);
    json_decref(keep);
    gen_of("{\"params\": {\"width\": 3072, \"height\": 640}}", &g, &keep);
    kd_downgrade(NULL, &g, 576);
    assert_int_equal(g.height, 512);
    assert_int_equal(g.width, 1216);
    json_decref(keep);
    /* second-order samplers: accurate steps must fit, so half the steps */
    gen_of("{\"params\": {\"steps\": 40, \"sampler_name\": \"k_heun\"}}", &g, &keep);
    kd_downgrade(NULL, &g, 1024);
    assert_int_equal(g.steps, 15);
    json_decref(keep);
    /* ControlNet 20, LCM 10 */
    gen_of("{\"params\": {\"steps\": 30, \"control_type\": \"canny\"}}", &g, &keep);
    kd_downgrade(NULL, &g, 1024);
    assert_int_equal(g.steps, 20);
    json_decref(keep);
    gen_of("{\"params\": {\"steps\": 30, \"sampler_name\": \"lcm\"}}", &g, &keep);
    kd_downgrade(NULL, &g, 1024);
    assert_int_equal(g.steps, 10);
    json_decref(keep);
}

/* ---- floors, escrow, uptime, priority ---------------------------------------------------------------- */

static void test_floors_cents_escrow_uptime(void **state) {
    (void)state;
    kd_floors f = {-5000, 1400, 2500};
    assert_int_equal(kd_floor_for(&f, 0, false), -5000);
    assert_int_equal(kd_floor_for(&f, 7, true), 1400);
    assert_int_equal(kd_floor_for(&f, 7, false), 2500);
    assert_int_equal(kd_cents(12.345), 1235); /* 12.3450000000000006... */
    assert_int_equal(kd_cents(2.675), 267);   /* 2.67499999999999982... */
    assert_int_equal(kd_cents(-1.5), -150);
    assert_int_equal(kd_cents(0.125), 12);
    double sp, esc;
    kd_escrow_split(15.23, &sp, &esc);
    assert_true(esc == 7.62);
    assert_true(fabs(sp - 7.61) < 1e-9);
    assert_true(kd_uptime_reward(3, false) == 56);
    assert_true(kd_uptime_reward(3, true) == 86);
}

static void test_priority_ageing(void **state) {
    (void)state;
    int64_t t0 = 1800000000;
    /* A (100 kudos) waits 100 s before B (400 kudos) arrives: the horde has
     * aged A by 10 ticks (+500) by then, so A stays ahead */
    double a = kd_priority(100, false, t0);
    double b = kd_priority(400, false, t0 + 100);
    assert_true(a > b);
    /* 30 s head start is only +150: B wins */
    assert_true(kd_priority(400, false, t0 + 30) > a);
    /* ticks are 10 s: arrivals within the same tick compare on kudos alone */
    assert_true(kd_priority(100, false, t0 + 1) == kd_priority(100, false, t0));
    /* flagged users: round(kudos/1000) above 10 kudos, else -100 */
    assert_true(kd_priority(5000, true, t0) == kd_priority(5, false, t0));
    assert_true(kd_priority(2500, true, t0) == kd_priority(2, false, t0)); /* 2.5 -> 2 */
    assert_true(kd_priority(10, true, t0) == kd_priority(-100, false, t0));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_model_prices),
        cmocka_unit_test(test_model_file_is_checked),
        cmocka_unit_test(test_legacy_prices),
        cmocka_unit_test(test_accurate_steps_and_lcm),
        cmocka_unit_test(test_py_round_and_repr),
        cmocka_unit_test(test_burn),
        cmocka_unit_test(test_baseline_and_bridge_multipliers),
        cmocka_unit_test(test_estimates),
        cmocka_unit_test(test_upfront_rule),
        cmocka_unit_test(test_downgrade),
        cmocka_unit_test(test_floors_cents_escrow_uptime),
        cmocka_unit_test(test_priority_ageing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
