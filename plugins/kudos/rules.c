/* kudos: the rules of the economy; see rules.h. */
#include "rules.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- burn ---------------------------------------------------------------------------- */

double kd_pp_multiplier(const char *name) {
    /* face fixers and background removal cost nothing extra; every upscaler
     * (KNOWN_UPSCALERS) burns 5% more */
    static const char *const plain[] = {"GFPGAN", "CodeFormers", "strip_background", "GFPGANv1.3",
                                        "RestoreFormer"};
    static const char *const upscalers[] = {
        "RealESRGAN_x4plus",  "RealESRGAN_x2plus",         "RealESRGAN_x4plus_anime_6B",
        "NMKD_Siax",          "4x_AnimeSharp",             "4xNomos8kSC",
        "4xLSDIRplus",        "4xNomosWebPhoto_RealPLKSR", "4xNomos2_realplksr_dysample",
        "4xNomos2_hq_dat2",   "2xModernSpanimationV1"};
    for (size_t i = 0; i < sizeof(plain) / sizeof(*plain); i++)
        if (strcmp(name, plain[i]) == 0)
            return 1.0;
    for (size_t i = 0; i < sizeof(upscalers) / sizeof(*upscalers); i++)
        if (strcmp(name, upscalers[i]) == 0)
            return 1.05;
    return 1.0;
}

kd_burn_flags kd_burn_flags_of(const kd_gen *g) {
    kd_burn_flags f = {.has_source = g->has_source, .pp_multiplier = 1.0,
                       .slow_workers = g->slow_workers, .worker_blacklist = g->worker_blacklist};
    for (int i = 0; i < g->n_pp; i++)
        f.pp_multiplier *= kd_pp_multiplier(g->pp[i]);
    return f;
}

double kd_burn(const kd_burn_flags *f, double k) {
    /* the order of the horde's calculate_extra_kudos_burn */
    double v = k;
    if (f->has_source)
        v = v * 1.3;
    v = v * f->pp_multiplier;
    v += 1; /* the per-image horde tax (the sharing discount is disabled) */
    if (!f->slow_workers)
        v = v * 1.2;
    if (f->worker_blacklist)
        v = v * 1.1;
    return v;
}

/* ---- multipliers ------------------------------------------------------------------------ */

double kd_baseline_multiplier(const char *baseline, bool qr_code, bool hires_fix) {
    if (strcmp(baseline, "stable_diffusion_xl") == 0)
        return qr_code ? 4 : 2;
    if (strcmp(baseline, "stable_cascade") == 0)
        return hires_fix ? 7 : 4;
    if (strcmp(baseline, "flux_1") == 0 || strcmp(baseline, "z_image_turbo") == 0)
        return 8;
    if (strcmp(baseline, "qwen_image") == 0)
        return 12;
    return 1;
}

double kd_estimate_multiplier(const kd_model_ref *ref, const kd_gen *g) {
    const char *first = json_string_value(json_array_get(g->models, 0));
    /* no models: the horde estimates as if "SDXL 1.0" had been asked for */
    const char *baseline = first ? kd_model_baseline(ref, first) : "stable_diffusion_xl";
    if (strcmp(baseline, "stable_diffusion_xl") == 0)
        return 2;
    if (strcmp(baseline, "stable_cascade") == 0)
        return 4;
    if (strcmp(baseline, "flux_1") == 0 || strcmp(baseline, "z_image_turbo") == 0)
        return 8;
    if (strcmp(baseline, "qwen_image") == 0)
        return 12;
    return 1;
}

double kd_estimate(const kd_model_ref *ref, const kd_gen *g, double price) {
    kd_burn_flags f = kd_burn_flags_of(g);
    return kd_burn(&f, price) * g->n * kd_estimate_multiplier(ref, g) + 1;
}

double kd_bridge_multiplier(const char *agent) {
    if (!agent)
        return 0.75;
    if (strcmp(agent, "horde-node") == 0)
        return 1.0; /* our own worker, which may announce itself without a version */
    const char *c1 = strchr(agent, ':');
    size_t nl = c1 ? (size_t)(c1 - agent) : strlen(agent);
    int version = 0;
    if (c1 && isdigit((unsigned char)c1[1])) {
        long v = strtol(c1 + 1, NULL, 10);
        version = v > 100000 ? 100000 : (int)v;
    }
#define NAME_IS(s) (nl == strlen(s) && strncmp(agent, (s), nl) == 0)
    if (NAME_IS("horde-node"))
        return 1.0; /* earns like the latest official bridge */
    if (NAME_IS("AI Horde Worker reGen"))
        return version >= 13 ? 1.0 : 0.9;
    if (NAME_IS("AI Horde Worker"))
        return version >= 24 ? 1.0 : 0.9;
#undef NAME_IS
    return 0.75;
}

/* ---- the upfront rule ------------------------------------------------------------------- */

static bool any_big_baseline(const kd_model_ref *ref, const kd_gen *g) {
    size_t i;
    const json_t *m;
    json_array_foreach(g->models, i, m) {
        const char *b = kd_model_baseline(ref, json_string_value(m));
        if (strcmp(b, "stable_diffusion_xl") == 0 || strcmp(b, "stable_cascade") == 0 ||
            strcmp(b, "flux_1") == 0)
            return true;
    }
    return false;
}

kd_upfront kd_upfront_check(const kd_model_ref *ref, const kd_gen *g, long long queue,
                            long long threads) {
    kd_upfront u = {false, 0};
    /* Python's round() on a float: ties to even, which rint does */
    long long res = 1024 + threads * 10 - (long long)rint((double)queue * 0.9);
    u.max_res = res > 100000 ? 100000 : res < -100000 ? -100000 : (int)res;
    if (!g->slow_workers) {
        u.required = true; /* checked before clamping, as the horde does */
        return u;
    }
    if (u.max_res < 576)
        u.max_res = 576;
    if (u.max_res < 1024 && any_big_baseline(ref, g))
        u.max_res = 1024;
    if (u.max_res > 1024)
        u.max_res = 1024;
    int acc = kd_accurate_steps(g);
    if (kd_uses_lcm(g) && acc > 10)
        u.required = true;
    size_t i;
    const json_t *m;
    json_array_foreach(g->models, i, m) {
        if (kd_model_max_steps(ref, json_string_value(m), 40) < acc)
            u.required = true;
    }
    if ((long long)g->width * g->height > (long long)u.max_res * u.max_res)
        u.required = true;
    if (g->control_type[0] && acc > 20)
        u.required = true;
    return u;
}

void kd_downgrade(const kd_model_ref *ref, kd_gen *g, int max_res) {
    long long limit = (long long)max_res * max_res;
    if (max_res > 0 && (long long)g->width * g->height > limit) {
        /* keep the aspect ratio, snap down to multiples of 64, not below 512
         * (a side already below 512 stays as it was) */
        double scale = sqrt((double)limit / ((double)g->width * g->height));
        /* the epsilon: a product that lands a hair under a multiple of 64
         * (rounding of scale) must not lose a whole step of 64 */
        int w = (int)(g->width * scale + 1e-6) / 64 * 64;
        int h = (int)(g->height * scale + 1e-6) / 64 * 64;
        if (w < 512)
            w = g->width < 512 ? g->width : 512;
        if (h < 512)
            h = g->height < 512 ? g->height : 512;
        g->width = w;
        g->height = h;
    }
    int target = 30;
    size_t i;
    const json_t *m;
    json_array_foreach(g->models, i, m) {
        int ms = kd_model_max_steps(ref, json_string_value(m), 30);
        if (ms < target)
            target = ms;
    }
    if (g->control_type[0] && target > 20)
        target = 20;
    if (kd_uses_lcm(g) && target > 10)
        target = 10;
    while (kd_accurate_steps(g) > target) {
        g->steps -= 1;
        if (g->steps < 5)
            break;
    }
    g->slow_workers = true;
}

/* ---- balances, escrow, uptime, priority ------------------------------------------------------ */

int64_t kd_floor_for(const kd_floors *f, int64_t user_id, bool pseudonymous) {
    if (user_id == 0)
        return f->anon;
    return pseudonymous ? f->pseudonymous : f->registered;
}

int64_t kd_cents(double kudos) {
    return (int64_t)llrint(kd_py_round(kudos, 2) * 100.0);
}

void kd_escrow_split(double kudos, double *spendable, double *escrow) {
    *escrow = kd_py_round(kudos / 2, 2);
    *spendable = kudos - *escrow;
}

double kd_uptime_reward(int n_models, bool allow_lora) {
    return 50 + 2.0 * n_models + (allow_lora ? 30 : 0);
}

/* Any fixed instant works (only differences matter); a recent one keeps the
 * numbers small. 2024-01-01T00:00:00Z. */
#define KD_AGEING_EPOCH 1704067200LL

double kd_priority(double kudos, bool flagged, int64_t now_s) {
    double base = kudos;
    if (flagged)
        base = kudos > 10 ? rint(kudos / 1000) : -100;
    int64_t ticks = (now_s - KD_AGEING_EPOCH) / 10;
    return base - 50.0 * (double)ticks;
}

void kd_py_repr(double x, char *out, size_t len) {
    if (isnan(x)) {
        snprintf(out, len, "nan");
        return;
    }
    if (isinf(x)) {
        snprintf(out, len, x < 0 ? "-inf" : "inf");
        return;
    }
    /* the shortest digits that read back as x */
    char e[64];
    for (int p = 1; p <= 17; p++) {
        snprintf(e, sizeof(e), "%.*e", p - 1, x);
        if (strtod(e, NULL) == x)
            break;
    }
    /* e = "[-]d[.ddd]e[+-]XX" */
    bool neg = e[0] == '-';
    const char *s = e + (neg ? 1 : 0);
    char digits[32];
    size_t nd = 0;
    const char *q = s;
    for (; *q && *q != 'e'; q++)
        if (isdigit((unsigned char)*q) && nd < sizeof(digits) - 1)
            digits[nd++] = *q;
    digits[nd] = '\0';
    int exp10 = *q == 'e' ? atoi(q + 1) : 0;
    while (nd > 1 && digits[nd - 1] == '0')
        digits[--nd] = '\0';
    char body[64];
    if (exp10 < -4 || exp10 >= 16) {
        /* Python: 1e+16, 1.5e-05 */
        if (nd == 1)
            snprintf(body, sizeof(body), "%se%c%02d", digits, exp10 < 0 ? '-' : '+', abs(exp10));
        else
            snprintf(body, sizeof(body), "%c.%se%c%02d", digits[0], digits + 1, exp10 < 0 ? '-' : '+',
                     abs(exp10));
    } else if (exp10 < 0) {
        size_t at = 0;
        at += (size_t)snprintf(body + at, sizeof(body) - at, "0.");
        for (int i = 0; i < -exp10 - 1; i++)
            body[at++] = '0';
        snprintf(body + at, sizeof(body) - at, "%s", digits);
    } else {
        /* integer part = first exp10+1 digits (padded with zeros) */
        size_t at = 0;
        for (int i = 0; i <= exp10; i++)
            body[at++] = (size_t)i < nd ? digits[i] : '0';
        body[at++] = '.';
        if ((size_t)exp10 + 1 < nd)
            snprintf(body + at, sizeof(body) - at, "%s", digits + exp10 + 1);
        else
            snprintf(body + at, sizeof(body) - at, "0");
    }
    snprintf(out, len, "%s%s", neg ? "-" : "", body);
}
