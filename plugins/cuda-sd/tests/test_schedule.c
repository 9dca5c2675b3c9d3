/* test_schedule.c - the noise schedule and sigma lists against
 * golden/samplers (every file index.json names), plus the ComfyUI
 * convention's lists. */
#include "golden.h"

#include "engine/samplers.h"
#include "engine/schedule.h"

/* |got - want| <= rel * |want| + abs for every element. */
static void assert_rel(const char *what, const float *got, const float *want, size_t n,
                       double rel, double abs_tol)
{
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (!(d <= rel * fabs((double)want[i]) + abs_tol))
            fail_msg("%s[%zu]: got %.9g, want %.9g", what, i, (double)got[i], (double)want[i]);
    }
}

/* The model kinds that have a {kind}_schedules.safetensors, from index.json. */
static size_t model_kinds(const json_t *index, const char *kinds[8])
{
    size_t n = 0, i;
    json_t *e;
    json_array_foreach(json_object_get(index, "samplers"), i, e) {
        const char *m = json_string_value(json_object_get(e, "model"));
        size_t k;
        for (k = 0; k < n; k++)
            if (strcmp(kinds[k], m) == 0)
                break;
        if (k == n && n < 8)
            kinds[n++] = m;
    }
    return n;
}

static void test_schedule_tables(void **state)
{
    (void)state;
    json_t *index = golden_json("samplers/index.json");
    const char *kinds[8];
    size_t nk = model_kinds(index, kinds);
    assert_true(nk >= 1);
    sd_schedule s;
    sd_schedule_init(&s, SD_CONV_KDIFFUSION);
    for (size_t k = 0; k < nk; k++) {
        char rel[256], what[300];
        snprintf(rel, sizeof rel, "samplers/%s_schedules.safetensors", kinds[k]);
        sd_model_file *f = golden_open(rel);
        int64_t n;
        float *ac = golden_f32(f, "alphas_cumprod", &n);
        assert_int_equal(n, SD_SCHEDULE_STEPS);
        snprintf(what, sizeof what, "%s alphas_cumprod", kinds[k]);
        assert_rel(what, s.alphas_cumprod, ac, (size_t)n, 1e-7, 0);
        float *ms = golden_f32(f, "model_sigmas_1000", &n);
        snprintf(what, sizeof what, "%s model_sigmas_1000", kinds[k]);
        assert_rel(what, s.sigmas, ms, (size_t)n, 2e-7, 0);

        float *disc = golden_f32(f, "sigmas_discrete", &n);
        float *mine = malloc(sizeof(float) * (size_t)n);
        sd_sigmas_discrete(&s, (int)n - 1, mine);
        snprintf(what, sizeof what, "%s sigmas_discrete", kinds[k]);
        assert_rel(what, mine, disc, (size_t)n, 1e-6, 0);
        float *kar = golden_f32(f, "sigmas_karras", &n);
        sd_sigmas_karras(&s, (int)n - 1, mine);
        snprintf(what, sizeof what, "%s sigmas_karras", kinds[k]);
        assert_rel(what, mine, kar, (size_t)n, 1e-6, 0);
        free(ac);
        free(ms);
        free(disc);
        free(kar);
        free(mine);
        sd_model_file_close(f);
    }
    json_decref(index);
}

/* Every sampler run's sigma list is what sd_sampler_sigmas() builds for its
 * sampler/schedule/steps, and every model call got t = sigma_to_t(sigma). */
static void test_sampler_sigma_lists_and_timesteps(void **state)
{
    (void)state;
    json_t *index = golden_json("samplers/index.json");
    sd_schedule s;
    sd_schedule_init(&s, SD_CONV_KDIFFUSION);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(index, "samplers"), i, e) {
        const char *file = json_string_value(json_object_get(e, "file"));
        const char *sampler = json_string_value(json_object_get(e, "sampler"));
        const char *schedule = json_string_value(json_object_get(e, "schedule"));
        int steps = (int)json_integer_value(json_object_get(e, "steps"));
        char rel[256], what[300];
        snprintf(rel, sizeof rel, "samplers/%s", file);
        sd_model_file *f = golden_open(rel);
        sd_sampler smp;
        assert_int_equal(sd_sampler_from_name(sampler, &smp), 0);
        sd_scheduler sched = strcmp(schedule, "karras") == 0 ? SD_SCHED_KARRAS : SD_SCHED_NORMAL;
        int64_t n;
        float *want = golden_f32(f, "sigmas", &n);
        float got[64];
        int len = sd_sampler_sigmas(&s, smp, sched, steps, 1.0, got, 64);
        assert_int_equal(len, (int)n);
        snprintf(what, sizeof what, "%s sigmas", file);
        assert_rel(what, got, want, (size_t)n, 1e-6, 0);

        int64_t nc;
        float *cs = golden_f32(f, "calls_sigma", &nc);
        float *ct = golden_f32(f, "calls_t", &nc);
        for (int64_t c = 0; c < nc; c++) {
            float t = sd_schedule_model_t(&s, cs[c]);
            if (!(fabs((double)t - (double)ct[c]) <= 2e-4))
                fail_msg("%s call %lld: t(%.9g) = %.9g, want %.9g", file, (long long)c,
                         (double)cs[c], (double)t, (double)ct[c]);
        }
        free(want);
        free(cs);
        free(ct);
        sd_model_file_close(f);
    }
    json_decref(index);
}

/* DDIM: diffusers' leading timesteps and the Euler-equivalent sigmas. */
static void test_ddim_timesteps(void **state)
{
    (void)state;
    json_t *index = golden_json("samplers/index.json");
    sd_schedule s;
    sd_schedule_init(&s, SD_CONV_KDIFFUSION);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(index, "ddim"), i, e) {
        const char *file = json_string_value(json_object_get(e, "file"));
        int steps = (int)json_integer_value(json_object_get(e, "steps"));
        char rel[256];
        snprintf(rel, sizeof rel, "samplers/%s", file);
        sd_model_file *f = golden_open(rel);
        int64_t n;
        int64_t *ts = golden_i64(f, "timesteps", &n);
        assert_int_equal(n, steps);
        int mine[1000];
        sd_ddim_timesteps(steps, mine);
        for (int k = 0; k < steps; k++)
            assert_int_equal(mine[k], (int)ts[k]);
        json_t *jts = json_object_get(e, "timesteps");
        for (int k = 0; k < steps; k++)
            assert_int_equal(mine[k], (int)json_integer_value(json_array_get(jts, (size_t)k)));

        float *eq = golden_f32(f, "euler_equivalent_sigmas", &n);
        float sig[1001];
        assert_int_equal(n, steps + 1);
        sd_sigmas_ddim(&s, steps, sig);
        /* diffusers builds its alphas in float32 (README: up to 4.8e-7 off
         * the float64 schedule), so allow a little more than rounding. */
        assert_rel("euler_equivalent_sigmas", sig, eq, (size_t)n, 1e-3, 0);
        free(ts);
        free(eq);
        sd_model_file_close(f);
    }
    json_decref(index);
}

static void test_sigma_t_roundtrip(void **state)
{
    (void)state;
    for (int conv = 0; conv < 2; conv++) {
        sd_schedule s;
        sd_schedule_init(&s, (sd_conventions)conv);
        for (int i = 0; i < SD_SCHEDULE_STEPS; i++) {
            /* integer timesteps map to the table (exp(log) rounding aside)
             * and back exactly */
            assert_true(fabsf(sd_schedule_t_to_sigma(&s, (float)i) - s.sigmas[i]) <=
                        4e-7f * s.sigmas[i]);
            assert_int_equal(sd_schedule_sigma_to_t_quantized(&s, s.sigmas[i]), i);
            /* exact where log_sigmas = logf(sigmas) (k-diffusion); ComfyUI
             * rounds log(sigma) from float64, an ulp away at times */
            float t = sd_schedule_sigma_to_t(&s, s.sigmas[i]);
            if (conv == SD_CONV_KDIFFUSION)
                assert_true(t == (float)i);
            else
                assert_true(fabsf(t - (float)i) < 1e-3f);
        }
        for (float t = 0.25f; t < 999.0f; t += 17.37f) {
            float back = sd_schedule_sigma_to_t(&s, sd_schedule_t_to_sigma(&s, t));
            assert_true(fabsf(back - t) < 2e-3f);
        }
        /* out of range sigmas clamp to the table ends */
        assert_true(sd_schedule_sigma_to_t(&s, 100.0f) == 999.0f);
        assert_true(sd_schedule_sigma_to_t(&s, 1e-4f) == 0.0f);
        assert_int_equal(sd_schedule_sigma_to_t_quantized(&s, 100.0f), 999);
        assert_int_equal(sd_schedule_sigma_to_t_quantized(&s, 1e-4f), 0);
    }
}

/* ComfyUI's schedule is the float64 one rounded once; k-diffusion's comes
 * from float32 alphas, which loses digits of 1 - a near a = 1 (sigma_min
 * differs by 1.3e-5 relative). ComfyUI's end points are those of
 * spec/sd-engine.md §3.1 (float32 model values). */
static void test_comfyui_schedule(void **state)
{
    (void)state;
    sd_schedule kd, cu;
    sd_schedule_init(&kd, SD_CONV_KDIFFUSION);
    sd_schedule_init(&cu, SD_CONV_COMFYUI);
    assert_rel("comfyui sigmas", cu.sigmas, kd.sigmas, SD_SCHEDULE_STEPS, 5e-5, 0);
    assert_true(fabsf(sd_schedule_sigma_min(&cu) - 0.0291671585f) < 1e-9f);
    assert_true(fabsf(sd_schedule_sigma_max(&cu) - 14.6146412f) < 2e-6f);
    /* spec §3.1, 20 steps (values printed to 4 decimals there) */
    float n20[21], k20[21];
    sd_sigmas_discrete(&cu, 20, n20);
    sd_sigmas_karras(&cu, 20, k20);
    const float want_n[] = {14.6146f, 10.7468f, 8.0815f};
    const float want_k[] = {14.6146f, 11.7254f, 9.3402f};
    for (int i = 0; i < 3; i++) {
        assert_true(fabsf(n20[i] - want_n[i]) < 1e-4f);
        assert_true(fabsf(k20[i] - want_k[i]) < 1e-4f);
    }
    assert_true(fabsf(n20[18] - 0.2322f) < 1e-4f);
    assert_true(fabsf(n20[19] - 0.0292f) < 1e-4f);
    assert_true(fabsf(k20[18] - 0.0485f) < 1e-4f);
    assert_true(fabsf(k20[19] - 0.0292f) < 1e-4f);
    assert_true(n20[20] == 0.0f && k20[20] == 0.0f);
}

/* ComfyUI KSampler: dpm_2/dpm_2_a get one more step with the penultimate
 * sigma dropped; denoise < 1 walks the tail of int(steps/denoise) steps. */
static void test_comfyui_sigma_lists(void **state)
{
    (void)state;
    sd_schedule s;
    sd_schedule_init(&s, SD_CONV_COMFYUI);
    float got[64], full[64];
    int len = sd_sampler_sigmas(&s, SD_SAMPLER_DPM_2, SD_SCHED_KARRAS, 10, 1.0, got, 64);
    assert_int_equal(len, 11);
    sd_sigmas_karras(&s, 11, full);
    for (int i = 0; i < 10; i++) /* full[10], the penultimate of 12, is dropped */
        assert_true(got[i] == full[i]);
    assert_true(got[10] == 0.0f);

    len = sd_sampler_sigmas(&s, SD_SAMPLER_EULER, SD_SCHED_NORMAL, 10, 0.5, got, 64);
    assert_int_equal(len, 11);
    sd_sigmas_discrete(&s, 20, full);
    for (int i = 0; i < 11; i++)
        assert_true(got[i] == full[10 + i]);

    /* kdiffusion img2img (A1111): t_enc = int(0.5 * 10) = 5 -> 7 sigmas */
    sd_schedule kd;
    sd_schedule_init(&kd, SD_CONV_KDIFFUSION);
    len = sd_sampler_sigmas(&kd, SD_SAMPLER_EULER, SD_SCHED_NORMAL, 10, 0.5, got, 64);
    assert_int_equal(len, 7);
    sd_sigmas_discrete(&kd, 10, full);
    for (int i = 0; i < 7; i++)
        assert_true(got[i] == full[4 + i]);

    assert_int_equal(sd_sampler_sigmas(&s, SD_SAMPLER_EULER, SD_SCHED_NORMAL, 10, 0.0, got, 64),
                     0);
    assert_int_equal(sd_sampler_sigmas(&s, SD_SAMPLER_EULER, SD_SCHED_NORMAL, 0, 1.0, got, 64),
                     -1);
    assert_int_equal(sd_sampler_sigmas(&s, SD_SAMPLER_EULER, SD_SCHED_NORMAL, 10, 1.0, got, 5),
                     -1);
}

static void test_linspace_matches_torch_formula(void **state)
{
    (void)state;
    float v[7];
    sd_linspace_f32(999.0f, 0.0f, 6, v);
    /* torch: step = -199.8f; first half start + step*i, second end - step*(n-1-i) */
    assert_true(v[0] == 999.0f && v[5] == 0.0f);
    assert_true(v[1] == 999.0f + -199.8f * 1.0f);
    assert_true(v[4] == 0.0f - -199.8f * 1.0f);
    sd_linspace_f32(3.0f, 5.0f, 1, v);
    assert_true(v[0] == 3.0f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule_tables),
        cmocka_unit_test(test_sampler_sigma_lists_and_timesteps),
        cmocka_unit_test(test_ddim_timesteps),
        cmocka_unit_test(test_sigma_t_roundtrip),
        cmocka_unit_test(test_comfyui_schedule),
        cmocka_unit_test(test_comfyui_sigma_lists),
        cmocka_unit_test(test_linspace_matches_torch_formula),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
