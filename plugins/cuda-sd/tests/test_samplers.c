/* test_samplers.c - sampler update rules.
 *
 * 1. Replay: every golden trajectory of golden/samplers/index.json is re-run
 *    with a denoiser that hands back the recorded CFG-denoised outputs
 *    (calls_denoised, checking each call's sigma) and the recorded
 *    ancestral noises, so the sampler arithmetic is checked independently
 *    of the UNet: per-step x and D, number of calls and noise draws, final.
 * 2. The closed-form denoiser of spec/sd-engine.md §10: for data N(0, 1),
 *    D(x, sigma) = x / (1 + sigma^2) exactly, and the probability-flow ODE
 *    has the solution x(sigma) = x(sigma_0) sqrt((1 + sigma^2) / (1 +
 *    sigma_0^2)). Deterministic samplers must converge to it at their
 *    order; stochastic ones must produce N(0, 1) samples.
 */
#include "golden.h"

#include "engine/samplers.h"
#include "engine/schedule.h"

/* ---- replay ---------------------------------------------------------------- */

typedef struct replay {
    const char *file;
    const float *calls_sigma, *calls_denoised;
    int64_t n_calls;
    int64_t calls;
    const float *noise;
    int64_t n_noise, noises;
    size_t numel;
    /* per-step records */
    const float *steps_x, *steps_denoised;
    int64_t n_steps, steps;
    double worst_step_x, worst_step_d;
} replay;

static int replay_denoise(void *ud, const float *x, float sigma, float *out)
{
    replay *r = ud;
    (void)x;
    if (r->calls >= r->n_calls)
        fail_msg("%s: more model calls than the %lld recorded", r->file, (long long)r->n_calls);
    float want = r->calls_sigma[r->calls];
    if (!(fabsf(sigma - want) <= 2e-6f * want + 1e-7f))
        fail_msg("%s: call %lld at sigma %.9g, recorded %.9g", r->file, (long long)r->calls,
                 (double)sigma, (double)want);
    memcpy(out, r->calls_denoised + (size_t)r->calls * r->numel, sizeof(float) * r->numel);
    r->calls++;
    return 0;
}

static int replay_noise(void *ud, float *out, size_t n)
{
    replay *r = ud;
    assert_int_equal(n, r->numel);
    if (r->noises >= r->n_noise)
        fail_msg("%s: more noise draws than the %lld recorded", r->file, (long long)r->n_noise);
    memcpy(out, r->noise + (size_t)r->noises * n, sizeof(float) * n);
    r->noises++;
    return 0;
}

static void replay_step(void *ud, int step, int total, float sigma, const float *x,
                        const float *d)
{
    replay *r = ud;
    (void)total;
    (void)sigma;
    assert_int_equal(step, r->steps);
    if (r->steps < r->n_steps) {
        double dx = golden_max_abs_diff(x, r->steps_x + (size_t)step * r->numel, r->numel, NULL);
        double dd = golden_max_abs_diff(d, r->steps_denoised + (size_t)step * r->numel, r->numel,
                                        NULL);
        if (dx > r->worst_step_x)
            r->worst_step_x = dx;
        if (dd > r->worst_step_d)
            r->worst_step_d = dd;
    }
    r->steps++;
}

static double max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(a[i]) > m)
            m = fabs(a[i]);
    return m;
}

static void test_replay_golden_trajectories(void **state)
{
    (void)state;
    json_t *index = golden_json("samplers/index.json");
    size_t i;
    json_t *e;
    int n_cases = 0;
    json_array_foreach(json_object_get(index, "samplers"), i, e) {
        const char *file = json_string_value(json_object_get(e, "file"));
        const char *sampler = json_string_value(json_object_get(e, "sampler"));
        char rel[256];
        snprintf(rel, sizeof rel, "samplers/%s", file);
        sd_model_file *f = golden_open(rel);
        sd_sampler smp;
        assert_int_equal(sd_sampler_from_name(sampler, &smp), 0);

        int64_t n_sig, numel, n, n_calls;
        float *sigmas = golden_f32(f, "sigmas", &n_sig);
        float *noise0 = golden_f32(f, "initial_noise", &numel);
        float *x_init = golden_f32(f, "x_init", &n);
        float *final = golden_f32(f, "final", &n);
        float *cs = golden_f32(f, "calls_sigma", &n_calls);
        float *cd = golden_f32(f, "calls_denoised", &n);
        float *sx = golden_f32(f, "steps_x", &n);
        float *sdn = golden_f32(f, "steps_denoised", NULL);
        int64_t n_noise_el = 0;
        float *anc = golden_has(f, "ancestral_noise") ? golden_f32(f, "ancestral_noise", &n_noise_el)
                                                      : NULL;

        /* x_init = initial_noise * sigmas[0] (k-diffusion's start) */
        float *x = malloc(sizeof(float) * (size_t)numel);
        for (int64_t k = 0; k < numel; k++)
            x[k] = noise0[k] * sigmas[0];
        golden_assert_close("x_init", x, x_init, (size_t)numel, 1e-6 * max_abs(x_init, (size_t)numel));

        replay r = {.file = file,
                    .calls_sigma = cs,
                    .calls_denoised = cd,
                    .n_calls = n_calls,
                    .noise = anc,
                    .n_noise = anc ? n_noise_el / numel : 0,
                    .numel = (size_t)numel,
                    .steps_x = sx,
                    .steps_denoised = sdn,
                    .n_steps = n / numel};
        sd_sample_opts o = {.conventions = SD_CONV_KDIFFUSION,
                            .denoise = replay_denoise,
                            .denoise_ud = &r,
                            .noise = replay_noise,
                            .noise_ud = &r,
                            .on_step = replay_step,
                            .step_ud = &r};
        char err[256] = "";
        int rc = sd_sample(smp, &o, sigmas, (int)n_sig, x, (size_t)numel, err, sizeof err);
        if (rc != 0)
            fail_msg("%s: sd_sample failed: %s", file, err);

        assert_int_equal(r.calls, json_integer_value(json_object_get(e, "n_model_calls")));
        assert_int_equal(r.calls, n_calls);
        assert_int_equal(r.noises, json_integer_value(json_object_get(e, "n_ancestral_noises")));
        assert_int_equal(r.steps, n_sig - 1);
        assert_int_equal(sd_sampler_nfe(smp, (int)n_sig - 1), (int)n_calls);
        /* Replaying the recorded D values removes the model from the loop:
         * what remains is float32 rounding of the update arithmetic. */
        double scale = max_abs(final, (size_t)numel) + 1.0;
        if (r.worst_step_x > 1e-5 * scale || r.worst_step_d > 1e-5 * scale)
            fail_msg("%s: per-step x off by %.3g, D by %.3g", file, r.worst_step_x,
                     r.worst_step_d);
        char what[300];
        snprintf(what, sizeof what, "%s final", file);
        golden_assert_close(what, x, final, (size_t)numel, 1e-5 * scale);
        n_cases++;

        free(sigmas);
        free(noise0);
        free(x_init);
        free(final);
        free(cs);
        free(cd);
        free(sx);
        free(sdn);
        free(anc);
        free(x);
        sd_model_file_close(f);
    }
    assert_true(n_cases > 0);
    json_decref(index);
}

/* k-diffusion integrates the LMS Lagrange polynomials with scipy quad; our
 * closed form must agree (README: within 8.9e-16 of the exact integrals). */
static void test_lms_coefficients(void **state)
{
    (void)state;
    json_t *index = golden_json("samplers/index.json");
    size_t i;
    json_t *e;
    int checked = 0;
    json_array_foreach(json_object_get(index, "samplers"), i, e) {
        const char *file = json_string_value(json_object_get(e, "file"));
        char rel[256];
        snprintf(rel, sizeof rel, "samplers/%s", file);
        sd_model_file *f = golden_open(rel);
        if (!golden_has(f, "lms_coeffs_quad")) {
            sd_model_file_close(f);
            continue;
        }
        int64_t n_sig, nq;
        float *sig = golden_f32(f, "sigmas", &n_sig);
        double *q = golden_f64(f, "lms_coeffs_quad", &nq);
        int rows = (int)(nq / 4);
        assert_int_equal(rows, n_sig - 1);
        for (int r = 0; r < rows; r++) {
            int order = r + 1 < 4 ? r + 1 : 4;
            for (int j = 0; j < 4; j++) {
                double want = q[r * 4 + j];
                double got = j < order ? sd_lms_coeff(order, sig, r, j) : 0.0;
                if (!(fabs(got - want) <= 1e-9 * (fabs(want) + 1.0)))
                    fail_msg("%s: lms coeff [%d][%d] = %.17g, want %.17g", file, r, j, got, want);
            }
        }
        checked++;
        free(sig);
        free(q);
        sd_model_file_close(f);
    }
    assert_true(checked > 0);
    json_decref(index);
}

/* ---- closed-form denoiser ---------------------------------------------------- */

typedef struct closed {
    int calls;
    float last_sigma;
    float *last_d;
    size_t n;
} closed;

static int closed_denoise(void *ud, const float *x, float sigma, float *out)
{
    closed *c = ud;
    for (size_t k = 0; k < c->n; k++)
        out[k] = x[k] / (1.0f + sigma * sigma);
    c->calls++;
    c->last_sigma = sigma;
    if (c->last_d)
        memcpy(c->last_d, out, sizeof(float) * c->n);
    return 0;
}

/* A small seeded normal generator (Box-Muller over xorshift64*), enough for
 * statistics; the sampler only sees the callback. */
typedef struct gauss {
    uint64_t s;
    int draws;
} gauss;

static double uniform01(gauss *g)
{
    g->s ^= g->s >> 12;
    g->s ^= g->s << 25;
    g->s ^= g->s >> 27;
    uint64_t v = g->s * 2685821657736338717ull;
    return ((double)(v >> 11) + 0.5) / 9007199254740992.0;
}

static int gauss_noise(void *ud, float *out, size_t n)
{
    gauss *g = ud;
    for (size_t k = 0; k < n; k++) {
        double u1 = uniform01(g), u2 = uniform01(g);
        out[k] = (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
    }
    g->draws++;
    return 0;
}

/* Relative error of a deterministic run from sigma_max to 0 with n steps. */
static double ode_error(sd_sampler smp, sd_scheduler sched, int steps, int *calls)
{
    sd_schedule s;
    sd_schedule_init(&s, SD_CONV_KDIFFUSION);
    float sig[512];
    int ns = sd_sampler_sigmas(&s, smp, sched, steps, 1.0, sig, 512);
    assert_true(ns == steps + 1);
    float x[4] = {1.0f, -2.0f, 0.5f, 3.0f};
    float x0[4];
    for (int k = 0; k < 4; k++)
        x0[k] = x[k] = x[k] * sig[0];
    closed c = {.n = 4};
    sd_sample_opts o = {.conventions = SD_CONV_KDIFFUSION,
                        .denoise = closed_denoise,
                        .denoise_ud = &c};
    char err[256];
    assert_int_equal(sd_sample(smp, &o, sig, ns, x, 4, err, sizeof err), 0);
    /* exact: x(sigma_end) = x0 sqrt((1 + end^2) / (1 + sigma_0^2)) */
    double end = sig[ns - 1];
    if (smp == SD_SAMPLER_DPM_FAST || smp == SD_SAMPLER_DPM_ADAPTIVE)
        end = sig[ns - 2]; /* DPM-Solver stops at sigma_min */
    double f = sqrt((1.0 + end * end) / (1.0 + (double)sig[0] * sig[0]));
    double worst = 0;
    for (int k = 0; k < 4; k++) {
        double want = x0[k] * f;
        double rel = fabs(x[k] - want) / fabs(want);
        if (rel > worst)
            worst = rel;
    }
    if (calls)
        *calls = c.calls;
    return worst;
}

static void test_closed_form_convergence(void **state)
{
    (void)state;
    /* {sampler, order, bound at 20 steps}: the error must shrink by at
     * least 2^order / 1.6 from 10 to 20 (karras) steps. (More steps hit the
     * floor of the final Euler step to sigma 0, sigma_min^2 / 2 = 4e-4.) */
    const struct {
        sd_sampler s;
        int order;
        double tol20;
    } cases[] = {
        {SD_SAMPLER_EULER, 1, 0.1},     {SD_SAMPLER_HEUN, 2, 2e-2},
        {SD_SAMPLER_DPM_2, 2, 2e-2},    {SD_SAMPLER_LMS, 2, 2e-2},
        {SD_SAMPLER_DPMPP_2M, 2, 2e-2}, {SD_SAMPLER_DDIM, 1, 0.1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int calls10, calls20;
        double e10 = ode_error(cases[i].s, SD_SCHED_KARRAS, 10, &calls10);
        double e20 = ode_error(cases[i].s, SD_SCHED_KARRAS, 20, &calls20);
        if (!(e20 <= cases[i].tol20))
            fail_msg("%s: relative error %.3g at 20 steps", sd_sampler_name(cases[i].s), e20);
        double want_ratio = (double)(1 << cases[i].order) / 1.6;
        if (!(e10 / e20 >= want_ratio))
            fail_msg("%s: error %.3g at 10 steps, %.3g at 20: not order %d",
                     sd_sampler_name(cases[i].s), e10, e20, cases[i].order);
        assert_int_equal(calls10, sd_sampler_nfe(cases[i].s, 10));
        assert_int_equal(calls20, sd_sampler_nfe(cases[i].s, 20));
    }
}

/* DPM-Solver fast (third order) and adaptive (rtol 0.05). */
static void test_closed_form_dpm_solver(void **state)
{
    (void)state;
    int calls;
    double e20 = ode_error(SD_SAMPLER_DPM_FAST, SD_SCHED_KARRAS, 20, &calls);
    assert_int_equal(calls, 20); /* nfe = steps: ComfyUI passes len(sigmas) - 1 */
    double e40 = ode_error(SD_SAMPLER_DPM_FAST, SD_SCHED_KARRAS, 40, &calls);
    assert_int_equal(calls, 40);
    if (!(e20 < 5e-3 && e40 < 1e-4))
        fail_msg("k_dpm_fast: relative error %.3g at 20 NFE, %.3g at 40", e20, e40);

    double e = ode_error(SD_SAMPLER_DPM_ADAPTIVE, SD_SCHED_KARRAS, 20, &calls);
    if (!(e < 5e-2))
        fail_msg("k_dpm_adaptive: relative error %.3g", e);
    assert_true(calls >= 3 && calls % 3 == 0); /* three evaluations per attempt */
}

/* Variance of a stochastic run on N(0,1) data with the exact denoiser. */
static double stochastic_variance(sd_sampler smp, sd_conventions conv, int steps, float *x,
                                  size_t n, double *mean_out)
{
    sd_schedule s;
    sd_schedule_init(&s, SD_CONV_COMFYUI);
    float sig[512];
    int ns = sd_sampler_sigmas(&s, smp, SD_SCHED_KARRAS, steps, 1.0, sig, 512);
    gauss g = {.s = 0x9e3779b97f4a7c15ull + (uint64_t)smp};
    gauss_noise(&g, x, n);
    for (size_t k = 0; k < n; k++)
        x[k] *= sig[0];
    g.draws = 0;
    closed c = {.n = n};
    sd_sample_opts o = {.conventions = conv,
                        .denoise = closed_denoise,
                        .denoise_ud = &c,
                        .noise = gauss_noise,
                        .noise_ud = &g};
    char err[256];
    assert_int_equal(sd_sample(smp, &o, sig, ns, x, n, err, sizeof err), 0);
    int st = ns - 1;
    assert_int_equal(g.draws, smp == SD_SAMPLER_DPMPP_SDE ? 2 * (st - 1) : st - 1);
    assert_int_equal(c.calls, sd_sampler_nfe(smp, st));
    double mean = 0, var = 0;
    for (size_t k = 0; k < n; k++)
        mean += x[k];
    mean /= (double)n;
    for (size_t k = 0; k < n; k++)
        var += (x[k] - mean) * (x[k] - mean);
    *mean_out = mean;
    return var / (double)n;
}

/* Stochastic samplers with the exact denoiser of N(0,1) data converge to
 * N(0,1) samples as the steps grow (noise scaled and drawn right). */
static void test_closed_form_stochastic_statistics(void **state)
{
    (void)state;
    const sd_sampler list[] = {SD_SAMPLER_EULER_A, SD_SAMPLER_DPM_2_A, SD_SAMPLER_DPMPP_2S_A,
                               SD_SAMPLER_DPMPP_SDE};
    const size_t n = 40000; /* standard error of the variance ~ 0.007 */
    float *x = malloc(sizeof(float) * n);
    for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) {
        for (int conv = 0; conv < 2; conv++) {
            double m10, m160;
            double v10 = stochastic_variance(list[i], (sd_conventions)conv, 10, x, n, &m10);
            double v160 = stochastic_variance(list[i], (sd_conventions)conv, 160, x, n, &m160);
            if (!(fabs(m160) < 0.03 && fabs(v160 - 1.0) < 0.05 &&
                  fabs(v160 - 1.0) < fabs(v10 - 1.0)))
                fail_msg("%s (%s): variance %.4f at 10 steps, %.4f (mean %.4f) at 160; "
                         "want -> N(0,1)",
                         sd_sampler_name(list[i]), sd_conventions_name((sd_conventions)conv),
                         v10, v160, m160);
        }
    }
    free(x);
}

/* LCM: x = D, renoised to the next sigma; the result is the last D. */
static void test_lcm(void **state)
{
    (void)state;
    sd_schedule s;
    sd_schedule_init(&s, SD_CONV_COMFYUI);
    float sig[16];
    int ns = sd_sampler_sigmas(&s, SD_SAMPLER_LCM, SD_SCHED_NORMAL, 4, 1.0, sig, 16);
    float x[8], last[8];
    gauss g = {.s = 42};
    gauss_noise(&g, x, 8);
    g.draws = 0;
    closed c = {.n = 8, .last_d = last};
    sd_sample_opts o = {.denoise = closed_denoise, .denoise_ud = &c, .noise = gauss_noise,
                        .noise_ud = &g};
    assert_int_equal(sd_sample(SD_SAMPLER_LCM, &o, sig, ns, x, 8, NULL, 0), 0);
    assert_int_equal(c.calls, 4);
    assert_int_equal(g.draws, 3);
    assert_memory_equal(x, last, sizeof x);
}

/* ComfyUI's last-step rules: euler_a, lms and dpmpp_sde end with x = D. */
static void test_comfyui_last_step_is_denoised(void **state)
{
    (void)state;
    const sd_sampler list[] = {SD_SAMPLER_EULER_A, SD_SAMPLER_LMS, SD_SAMPLER_DPMPP_SDE};
    sd_schedule s;
    sd_schedule_init(&s, SD_CONV_COMFYUI);
    for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) {
        float sig[16];
        int ns = sd_sampler_sigmas(&s, list[i], SD_SCHED_KARRAS, 5, 1.0, sig, 16);
        float x[8], last[8];
        gauss g = {.s = 7};
        gauss_noise(&g, x, 8);
        closed c = {.n = 8, .last_d = last};
        sd_sample_opts o = {.conventions = SD_CONV_COMFYUI, .denoise = closed_denoise,
                            .denoise_ud = &c, .noise = gauss_noise, .noise_ud = &g};
        assert_int_equal(sd_sample(list[i], &o, sig, ns, x, 8, NULL, 0), 0);
        assert_memory_equal(x, last, sizeof x);
    }
}

static int stop_at_third(void *ud, const float *x, float sigma, float *out)
{
    int *n = ud;
    (void)x;
    (void)sigma;
    (void)out;
    return ++*n == 3 ? 42 : 0;
}

/* A denoiser's non-zero return (cancellation) stops every sampler at once
 * and comes back unchanged; bad arguments are refused with a message. */
static void test_stop_and_errors(void **state)
{
    (void)state;
    sd_schedule s;
    sd_schedule_init(&s, SD_CONV_COMFYUI);
    float sig[64], x[4] = {0};
    for (int smp = 0; smp < SD_SAMPLER_COUNT; smp++) {
        int ns = sd_sampler_sigmas(&s, (sd_sampler)smp, SD_SCHED_KARRAS, 10, 1.0, sig, 64);
        int n = 0;
        gauss g = {.s = 1};
        sd_sample_opts o = {.denoise = stop_at_third, .denoise_ud = &n, .noise = gauss_noise,
                            .noise_ud = &g};
        assert_int_equal(sd_sample((sd_sampler)smp, &o, sig, ns, x, 4, NULL, 0), 42);
        assert_int_equal(n, 3);
    }
    char err[256] = "";
    int n = 0;
    sd_sample_opts no_noise = {.denoise = stop_at_third, .denoise_ud = &n};
    assert_int_equal(sd_sample(SD_SAMPLER_EULER_A, &no_noise, sig, 5, x, 4, err, sizeof err), -1);
    assert_non_null(strstr(err, "noise"));
    float bad[3] = {1.0f, NAN, 0.0f};
    assert_int_equal(sd_sample(SD_SAMPLER_EULER, &no_noise, bad, 3, x, 4, err, sizeof err), -1);
    assert_int_equal(n, 0);
}

static void test_names(void **state)
{
    (void)state;
    /* every horde sampler_name (spec/horde-api.md §1.1) is accepted */
    const char *horde[] = {"k_lms", "k_heun", "k_euler", "k_euler_a", "k_dpm_2", "k_dpm_2_a",
                           "k_dpm_fast", "k_dpm_adaptive", "k_dpmpp_2s_a", "k_dpmpp_2m",
                           "dpmsolver", "k_dpmpp_sde", "DDIM", "lcm"};
    for (size_t i = 0; i < sizeof horde / sizeof horde[0]; i++) {
        sd_sampler s;
        assert_int_equal(sd_sampler_from_name(horde[i], &s), 0);
        if (strcmp(horde[i], "dpmsolver") != 0)
            assert_string_equal(sd_sampler_name(s), horde[i]);
    }
    sd_sampler s;
    assert_int_equal(sd_sampler_from_name("ddim", &s), 0);
    assert_int_equal(s, SD_SAMPLER_DDIM);
    assert_int_equal(sd_sampler_from_name("dpmsolver", &s), 0);
    assert_int_equal(s, SD_SAMPLER_EULER);
    assert_int_equal(sd_sampler_from_name("k_nope", &s), -1);
    assert_int_equal(sd_sampler_from_name(NULL, &s), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay_golden_trajectories),
        cmocka_unit_test(test_lms_coefficients),
        cmocka_unit_test(test_closed_form_convergence),
        cmocka_unit_test(test_closed_form_dpm_solver),
        cmocka_unit_test(test_closed_form_stochastic_statistics),
        cmocka_unit_test(test_lcm),
        cmocka_unit_test(test_comfyui_last_step_is_denoised),
        cmocka_unit_test(test_stop_and_errors),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
