/* samplers.c - k-diffusion / ComfyUI samplers on a denoiser callback.
 *
 * Formulas: crowsonkb/k-diffusion k_diffusion/sampling.py (MIT) and the
 * behaviour of ComfyUI's variants, as summarised in spec/sd-engine.md §3.2.
 * Scalars (sigmas, step sizes) are float32 with the operation order of the
 * torch code, element-wise updates are float32: replaying the golden
 * denoiser outputs reproduces the golden trajectories to rounding. */
#include "samplers.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* ---- names ------------------------------------------------------------- */

static const char *const k_names[SD_SAMPLER_COUNT] = {
    [SD_SAMPLER_EULER] = "k_euler",
    [SD_SAMPLER_EULER_A] = "k_euler_a",
    [SD_SAMPLER_HEUN] = "k_heun",
    [SD_SAMPLER_DPM_2] = "k_dpm_2",
    [SD_SAMPLER_DPM_2_A] = "k_dpm_2_a",
    [SD_SAMPLER_LMS] = "k_lms",
    [SD_SAMPLER_DPMPP_2M] = "k_dpmpp_2m",
    [SD_SAMPLER_DPMPP_2S_A] = "k_dpmpp_2s_a",
    [SD_SAMPLER_DPMPP_SDE] = "k_dpmpp_sde",
    [SD_SAMPLER_DPM_FAST] = "k_dpm_fast",
    [SD_SAMPLER_DPM_ADAPTIVE] = "k_dpm_adaptive",
    [SD_SAMPLER_LCM] = "lcm",
    [SD_SAMPLER_DDIM] = "DDIM",
};

int sd_sampler_from_name(const char *name, sd_sampler *out)
{
    if (!name || !out)
        return -1;
    for (int i = 0; i < SD_SAMPLER_COUNT; i++) {
        if (strcasecmp(name, k_names[i]) == 0) {
            *out = (sd_sampler)i;
            return 0;
        }
    }
    if (strcasecmp(name, "dpmsolver") == 0 || strcasecmp(name, "plms") == 0) {
        *out = SD_SAMPLER_EULER;
        return 0;
    }
    return -1;
}

const char *sd_sampler_name(sd_sampler s)
{
    return (unsigned)s < SD_SAMPLER_COUNT ? k_names[s] : "unknown";
}

int sd_sampler_nfe(sd_sampler s, int steps)
{
    switch (s) {
    case SD_SAMPLER_HEUN:
    case SD_SAMPLER_DPM_2:
    case SD_SAMPLER_DPM_2_A:
    case SD_SAMPLER_DPMPP_2S_A:
    case SD_SAMPLER_DPMPP_SDE:
        return steps > 0 ? 2 * steps - 1 : 0;
    case SD_SAMPLER_DPM_ADAPTIVE:
        return -1;
    default:
        return steps;
    }
}

bool sd_sampler_is_stochastic(sd_sampler s)
{
    return s == SD_SAMPLER_EULER_A || s == SD_SAMPLER_DPM_2_A || s == SD_SAMPLER_DPMPP_2S_A ||
           s == SD_SAMPLER_DPMPP_SDE || s == SD_SAMPLER_LCM;
}

/* ---- sigma lists -------------------------------------------------------- */

static void schedule_list(const sd_schedule *sch, sd_scheduler sched, int n, float *out)
{
    if (sched == SD_SCHED_KARRAS)
        sd_sigmas_karras(sch, n, out);
    else
        sd_sigmas_discrete(sch, n, out);
}

int sd_sampler_sigmas(const sd_schedule *sch, sd_sampler s, sd_scheduler sched, int steps,
                      double denoise, float *out, int cap)
{
    if (steps < 1 || cap < 2)
        return -1;
    if (!(denoise > 0.0))
        return 0;
    if (denoise > 0.9999)
        denoise = 1.0;

    if (sch->conventions == SD_CONV_KDIFFUSION) {
        int n_keep = steps + 1;
        if (denoise < 1.0) {
            /* A1111 img2img: t_enc = int(min(d, 0.999) * steps), walk the
             * last t_enc + 2 sigmas of the full list. */
            int t_enc = (int)(fmin(denoise, 0.999) * steps);
            n_keep = t_enc + 2;
        }
        if (n_keep > steps + 1)
            n_keep = steps + 1;
        float *full = malloc(sizeof(float) * (size_t)(steps + 1));
        if (!full)
            return -1;
        if (s == SD_SAMPLER_DDIM)
            sd_sigmas_ddim(sch, steps, full);
        else
            schedule_list(sch, sched, steps, full);
        if (n_keep > cap) {
            free(full);
            return -1;
        }
        memcpy(out, full + (steps + 1 - n_keep), sizeof(float) * (size_t)n_keep);
        free(full);
        return n_keep;
    }

    /* ComfyUI KSampler.set_steps / calculate_sigmas. */
    int total = denoise < 1.0 ? (int)(steps / denoise) : steps;
    bool discard_penultimate = s == SD_SAMPLER_DPM_2 || s == SD_SAMPLER_DPM_2_A;
    int n = total + (discard_penultimate ? 1 : 0);
    float *full = malloc(sizeof(float) * (size_t)(n + 1));
    if (!full)
        return -1;
    schedule_list(sch, sched, n, full);
    int len = n + 1;
    if (discard_penultimate && len >= 2) {
        full[len - 2] = full[len - 1];
        len--;
    }
    int n_keep = denoise < 1.0 ? steps + 1 : len;
    if (n_keep > len)
        n_keep = len;
    if (n_keep > cap) {
        free(full);
        return -1;
    }
    memcpy(out, full + (len - n_keep), sizeof(float) * (size_t)n_keep);
    free(full);
    return n_keep;
}

/* ---- LMS coefficients ---------------------------------------------------- */

double sd_lms_coeff(int order, const float *sigmas, int i, int j)
{
    /* Lagrange basis of node j through nodes sigmas[i-k], k < order, as a
     * polynomial (coefficients in ascending powers), integrated exactly. */
    double poly[8] = {1.0};
    int deg = 0;
    double xj = sigmas[i - j];
    for (int k = 0; k < order; k++) {
        if (k == j)
            continue;
        double xk = sigmas[i - k];
        double denom = xj - xk;
        /* poly *= (tau - xk) / denom */
        double next[8] = {0};
        for (int p = 0; p <= deg; p++) {
            next[p + 1] += poly[p] / denom;
            next[p] -= poly[p] * xk / denom;
        }
        deg++;
        memcpy(poly, next, sizeof poly);
    }
    double a = sigmas[i], b = sigmas[i + 1];
    double result = 0.0;
    /* Horner on the antiderivative at b minus at a. */
    double fa = 0.0, fb = 0.0;
    for (int p = deg; p >= 0; p--) {
        fb = fb * b + poly[p] / (double)(p + 1);
        fa = fa * a + poly[p] / (double)(p + 1);
    }
    result = fb * b - fa * a;
    return result;
}

/* ---- helpers ------------------------------------------------------------ */

typedef struct run {
    const sd_sample_opts *o;
    size_t n;
    char *err;
    size_t errlen;
} run;

static int call_model(const run *r, const float *x, float sigma, float *out)
{
    return r->o->denoise(r->o->denoise_ud, x, sigma, out);
}

static int draw_noise(const run *r, float *out)
{
    if (!r->o->noise)
        return fail(r->err, r->errlen, -1, "sampler needs a noise source");
    return r->o->noise(r->o->noise_ud, out, r->n);
}

static void on_step(const run *r, int i, int total, float sigma, const float *x, const float *d)
{
    if (r->o->on_step)
        r->o->on_step(r->o->step_ud, i, total, sigma, x, d);
}

/* k-diffusion get_ancestral_step with eta = 1 (float32 as torch). */
static void ancestral_step(float from, float to, float *down, float *up)
{
    float up_ = sqrtf(to * to * (from * from - to * to) / (from * from));
    if (to < up_)
        up_ = to;
    *up = up_;
    *down = sqrtf(to * to - up_ * up_);
}

/* torch.lerp(a, b, 0.5) as torch computes it (weight >= 0.5 branch). */
static float lerp_half(float a, float b) { return b - (b - a) * 0.5f; }

/* x += (x - den) / sigma * dt, element-wise like to_d + update. */
static void euler_update(float *x, const float *den, float sigma, float dt, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        float d = (x[k] - den[k]) / sigma;
        x[k] = x[k] + d * dt;
    }
}

static void add_noise(float *x, const float *noise, float scale, size_t n)
{
    for (size_t k = 0; k < n; k++)
        x[k] = x[k] + noise[k] * scale;
}

static float *alloc_f(size_t n) { return malloc(sizeof(float) * (n ? n : 1)); }

/* ---- the samplers --------------------------------------------------------- */

/* The loop every fixed-step sampler shares: its work buffers (buf[0] is
 * the denoised estimate D(x, sigma_i), the others the sampler's own), then
 * per step the model call, the step callback, and the sampler's update of
 * x from buf[0]. A step may swap buf[] pointers (history rings); the driver
 * frees whatever the slots hold at the end. */
enum { MAX_STEP_BUFS = 5 };
typedef int (*step_fn)(const run *r, const float *sig, int i, float *x, float **buf);

static int sample_steps(const run *r, const float *sig, int ns, float *x, int nbufs, step_fn step)
{
    float *buf[MAX_STEP_BUFS] = {0};
    int rc = 0;
    for (int b = 0; b < nbufs && rc == 0; b++)
        if (!(buf[b] = alloc_f(r->n)))
            rc = fail(r->err, r->errlen, -1, "out of memory");
    for (int i = 0; i < ns - 1 && rc == 0; i++) {
        if ((rc = call_model(r, x, sig[i], buf[0])))
            break;
        on_step(r, i, ns - 1, sig[i], x, buf[0]);
        rc = step(r, sig, i, x, buf);
    }
    for (int b = 0; b < nbufs; b++)
        free(buf[b]);
    return rc;
}

/* euler, ddim, dpmsolver: x += d (s' - s). */
static int step_euler(const run *r, const float *sig, int i, float *x, float **buf)
{
    euler_update(x, buf[0], sig[i], sig[i + 1] - sig[i], r->n);
    return 0;
}

/* buf: den, noise */
static int step_euler_a(const run *r, const float *sig, int i, float *x, float **buf)
{
    float *den = buf[0], *noise = buf[1];
    float down, up;
    ancestral_step(sig[i], sig[i + 1], &down, &up);
    if (r->o->conventions == SD_CONV_COMFYUI && down == 0.0f) {
        memcpy(x, den, sizeof(float) * r->n);
        return 0;
    }
    euler_update(x, den, sig[i], down - sig[i], r->n);
    if (sig[i + 1] > 0.0f) {
        int rc = draw_noise(r, noise);
        if (rc)
            return rc;
        add_noise(x, noise, up, r->n);
    }
    return 0;
}

/* The second-order samplers' probe: an Euler step of dt from (x, sigma s)
 * into x2, and the model's estimate there (at sigma s2) into den2. */
static int euler_probe(const run *r, const float *x, const float *den, float s, float dt,
                       float *x2, float s2, float *den2)
{
    for (size_t k = 0; k < r->n; k++)
        x2[k] = x[k] + (x[k] - den[k]) / s * dt;
    return call_model(r, x2, s2, den2);
}

/* buf: den, den2, x2 */
static int step_heun(const run *r, const float *sig, int i, float *x, float **buf)
{
    size_t n = r->n;
    float *den = buf[0], *den2 = buf[1], *x2 = buf[2];
    float s = sig[i], sn = sig[i + 1], dt = sn - s;
    if (sn == 0.0f) {
        euler_update(x, den, s, dt, n);
        return 0;
    }
    int rc = euler_probe(r, x, den, s, dt, x2, sn, den2);
    if (rc)
        return rc;
    for (size_t k = 0; k < n; k++) {
        float d = (x[k] - den[k]) / s;
        float d2 = (x2[k] - den2[k]) / sn;
        x[k] = x[k] + (d + d2) / 2.0f * dt;
    }
    return 0;
}

/* dpm_2 and dpm_2_a (ancestral: target sigma_down, then noise).
 * buf: den, den2, x2, noise */
static int step_dpm_2_either(const run *r, const float *sig, int i, float *x, float **buf,
                             bool ancestral)
{
    size_t n = r->n;
    float *den = buf[0], *den2 = buf[1], *x2 = buf[2], *noise = buf[3];
    float s = sig[i], target = sig[i + 1], up = 0.0f;
    if (ancestral)
        ancestral_step(s, sig[i + 1], &target, &up);
    if (target == 0.0f) {
        euler_update(x, den, s, target - s, n);
        return 0;
    }
    float mid = expf(lerp_half(logf(s), logf(target)));
    float dt1 = mid - s, dt2 = target - s;
    int rc = euler_probe(r, x, den, s, dt1, x2, mid, den2);
    if (rc)
        return rc;
    for (size_t k = 0; k < n; k++) {
        float d2 = (x2[k] - den2[k]) / mid;
        x[k] = x[k] + d2 * dt2;
    }
    if (ancestral) {
        if ((rc = draw_noise(r, noise)))
            return rc;
        add_noise(x, noise, up, n);
    }
    return 0;
}

static int step_dpm_2(const run *r, const float *sig, int i, float *x, float **buf)
{
    return step_dpm_2_either(r, sig, i, x, buf, false);
}

static int step_dpm_2_a(const run *r, const float *sig, int i, float *x, float **buf)
{
    return step_dpm_2_either(r, sig, i, x, buf, true);
}

/* buf: den, then the ORDER derivatives, newest first (a ring of pointers). */
enum { LMS_ORDER = 4 };
_Static_assert(1 + LMS_ORDER <= MAX_STEP_BUFS, "k_lms needs den + LMS_ORDER buffers");
static int step_lms(const run *r, const float *sig, int i, float *x, float **buf)
{
    size_t n = r->n;
    float *den = buf[0], **ds = buf + 1;
    float s = sig[i];
    /* ds[0] newest: rotate the ring so the oldest buffer is reused. */
    float *oldest = ds[LMS_ORDER - 1];
    memmove(&ds[1], &ds[0], sizeof(float *) * (LMS_ORDER - 1));
    ds[0] = oldest;
    for (size_t k = 0; k < n; k++)
        ds[0][k] = (x[k] - den[k]) / s;
    if (r->o->conventions == SD_CONV_COMFYUI && sig[i + 1] == 0.0f) {
        memcpy(x, den, sizeof(float) * n);
        return 0;
    }
    int order = i + 1 < LMS_ORDER ? i + 1 : LMS_ORDER;
    float c[LMS_ORDER];
    for (int j = 0; j < order; j++)
        c[j] = (float)sd_lms_coeff(order, sig, i, j);
    for (size_t k = 0; k < n; k++) {
        float acc = c[0] * ds[0][k];
        for (int j = 1; j < order; j++)
            acc = acc + c[j] * ds[j][k];
        x[k] = x[k] + acc;
    }
    return 0;
}

static float t_of(float sigma) { return -logf(sigma); }
static float sigma_of(float t) { return expf(-t); }

/* buf: den, the previous step's den (swapped after each step). */
static int step_dpmpp_2m(const run *r, const float *sig, int i, float *x, float **buf)
{
    size_t n = r->n;
    float *den = buf[0], *old = buf[1];
    float t = t_of(sig[i]), tn = t_of(sig[i + 1]);
    float h = tn - t;
    float ratio = sigma_of(tn) / sigma_of(t);
    float em1 = expm1f(-h);
    if (i == 0 || sig[i + 1] == 0.0f) {   /* no previous step yet, or the last */
        for (size_t k = 0; k < n; k++)
            x[k] = ratio * x[k] - em1 * den[k];
    } else {
        float h_last = t - t_of(sig[i - 1]);
        float rr = h_last / h;
        float inv2r = 1.0f / (2.0f * rr);
        float c_new = 1.0f + inv2r;
        for (size_t k = 0; k < n; k++) {
            float dd = c_new * den[k] - inv2r * old[k];
            x[k] = ratio * x[k] - em1 * dd;
        }
    }
    buf[0] = old;
    buf[1] = den;
    return 0;
}

/* buf: den, den2, x2, noise */
static int step_dpmpp_2s_a(const run *r, const float *sig, int i, float *x, float **buf)
{
    size_t n = r->n;
    float *den = buf[0], *den2 = buf[1], *x2 = buf[2], *noise = buf[3];
    float s = sig[i];
    float down, up;
    int rc;
    ancestral_step(s, sig[i + 1], &down, &up);
    if (down == 0.0f) {
        euler_update(x, den, s, down - s, n);
    } else {
        float t = t_of(s), tn = t_of(down);
        float h = tn - t;
        float st = t + 0.5f * h;
        float r1 = sigma_of(st) / sigma_of(t), e1 = expm1f(-h * 0.5f);
        for (size_t k = 0; k < n; k++)
            x2[k] = r1 * x[k] - e1 * den[k];
        if ((rc = call_model(r, x2, sigma_of(st), den2)))
            return rc;
        float r2 = sigma_of(tn) / sigma_of(t), e2 = expm1f(-h);
        for (size_t k = 0; k < n; k++)
            x[k] = r2 * x[k] - e2 * den2[k];
    }
    if (sig[i + 1] > 0.0f) {
        if ((rc = draw_noise(r, noise)))
            return rc;
        add_noise(x, noise, up, n);
    }
    return 0;
}

/* DPM-Solver++ (stochastic), r = 1/2, eta = 1. The two Brownian queries of
 * a step share their start (sigma_i): W(sigma_i -> sigma_mid) = sqrt(L1) z1
 * and W(sigma_i -> sigma_next) = that + sqrt(L2 - L1) z2, each divided by
 * the square root of its interval length. buf: den, den2, x2, z1, z2 */
static int step_dpmpp_sde(const run *r, const float *sig, int i, float *x, float **buf)
{
    size_t n = r->n;
    float *den = buf[0], *den2 = buf[1], *x2 = buf[2], *z1 = buf[3], *z2 = buf[4];
    float s = sig[i], sn = sig[i + 1];
    int rc;
    if (sn == 0.0f) {
        if (r->o->conventions == SD_CONV_COMFYUI)
            memcpy(x, den, sizeof(float) * n);
        else
            euler_update(x, den, s, sn - s, n);
        return 0;
    }
    float t = t_of(s), tn = t_of(sn);
    float h = tn - t;
    float tm = t + h * 0.5f;
    float s_mid = sigma_of(tm);
    if ((rc = draw_noise(r, z1)) || (rc = draw_noise(r, z2)))
        return rc;
    double l1 = fabs((double)s - (double)s_mid), l2 = fabs((double)s - (double)sn);
    float a = l2 > 0 ? (float)sqrt(l1 / l2) : 0.0f;
    float b = l2 > 0 ? (float)sqrt(fmax(l2 - l1, 0.0) / l2) : 0.0f;

    /* stage 1: to sigma_mid */
    float sd, su;
    ancestral_step(sigma_of(t), s_mid, &sd, &su);
    float t_ = t_of(sd);
    float c1 = sigma_of(t_) / sigma_of(t), e1 = expm1f(t - t_);
    for (size_t k = 0; k < n; k++)
        x2[k] = c1 * x[k] - e1 * den[k] + z1[k] * su;
    if ((rc = call_model(r, x2, s_mid, den2)))
        return rc;

    /* stage 2: to sigma_next with D_d = D2 (fac = 1) */
    ancestral_step(sigma_of(t), sigma_of(tn), &sd, &su);
    float tn_ = t_of(sd);
    float c2 = sigma_of(tn_) / sigma_of(t), e2 = expm1f(t - tn_);
    for (size_t k = 0; k < n; k++) {
        float dd = 0.0f * den[k] + 1.0f * den2[k];
        float w = a * z1[k] + b * z2[k];
        x[k] = c2 * x[k] - e2 * dd + w * su;
    }
    return 0;
}

/* buf: den, noise */
static int step_lcm(const run *r, const float *sig, int i, float *x, float **buf)
{
    float *den = buf[0], *noise = buf[1];
    memcpy(x, den, sizeof(float) * r->n);
    if (sig[i + 1] > 0.0f) {
        int rc = draw_noise(r, noise);
        if (rc)
            return rc;
        for (size_t k = 0; k < r->n; k++)
            x[k] = noise[k] * sig[i + 1] + x[k];
    }
    return 0;
}

/* ---- DPM-Solver (k_dpm_fast, k_dpm_adaptive), eta 0 ------------------------ */

typedef struct dpm {
    const run *r;
    float *eps, *eps_r1, *eps_r2, *u, *den;
    bool have_eps, have_r1, have_r2;
    int calls;
} dpm;

/* eps(x, t) = (x - D(x, sigma(t))) / sigma(t) into out. */
static int dpm_eps(dpm *d, const float *x, float t, float *out)
{
    float sg = sigma_of(t);
    int rc = call_model(d->r, x, sg, d->den);
    if (rc)
        return rc;
    d->calls++;
    for (size_t k = 0; k < d->r->n; k++)
        out[k] = (x[k] - d->den[k]) / sigma_of(t);
    return 0;
}

static int dpm_first_eps(dpm *d, const float *x, float t)
{
    if (d->have_eps)
        return 0;
    int rc = dpm_eps(d, x, t, d->eps);
    if (rc == 0)
        d->have_eps = true;
    return rc;
}

static int dpm_1_step(dpm *d, const float *x, float t, float tn, float *out)
{
    int rc = dpm_first_eps(d, x, t);
    if (rc)
        return rc;
    float h = tn - t;
    float c = sigma_of(tn) * expm1f(h);
    for (size_t k = 0; k < d->r->n; k++)
        out[k] = x[k] - c * d->eps[k];
    return 0;
}

static int dpm_eps_r1(dpm *d, const float *x, float t, float h, float r1)
{
    if (d->have_r1)
        return 0;
    float s1 = t + r1 * h;
    float c = sigma_of(s1) * expm1f(r1 * h);
    for (size_t k = 0; k < d->r->n; k++)
        d->u[k] = x[k] - c * d->eps[k];
    int rc = dpm_eps(d, d->u, s1, d->eps_r1);
    if (rc == 0)
        d->have_r1 = true;
    return rc;
}

static int dpm_2_step(dpm *d, const float *x, float t, float tn, float r1, float *out)
{
    int rc = dpm_first_eps(d, x, t);
    if (rc)
        return rc;
    float h = tn - t;
    if ((rc = dpm_eps_r1(d, x, t, h, r1)))
        return rc;
    float em1 = expm1f(h);
    float c1 = sigma_of(tn) * em1;
    float c2 = sigma_of(tn) / (2.0f * r1) * em1;
    for (size_t k = 0; k < d->r->n; k++)
        out[k] = x[k] - c1 * d->eps[k] - c2 * (d->eps_r1[k] - d->eps[k]);
    return 0;
}

static int dpm_3_step(dpm *d, const float *x, float t, float tn, float *out)
{
    const float r1 = 1.0f / 3.0f, r2 = 2.0f / 3.0f;
    int rc = dpm_first_eps(d, x, t);
    if (rc)
        return rc;
    float h = tn - t;
    if ((rc = dpm_eps_r1(d, x, t, h, r1)))
        return rc;
    if (!d->have_r2) {
        float s2 = t + r2 * h;
        float e2 = expm1f(r2 * h);
        float ca = sigma_of(s2) * e2;
        float cb = sigma_of(s2) * (r2 / r1) * (e2 / (r2 * h) - 1.0f);
        for (size_t k = 0; k < d->r->n; k++)
            d->u[k] = x[k] - ca * d->eps[k] - cb * (d->eps_r1[k] - d->eps[k]);
        if ((rc = dpm_eps(d, d->u, s2, d->eps_r2)))
            return rc;
        d->have_r2 = true;
    }
    float em1 = expm1f(h);
    float c1 = sigma_of(tn) * em1;
    float c2 = sigma_of(tn) / r2 * (em1 / h - 1.0f);
    for (size_t k = 0; k < d->r->n; k++)
        out[k] = x[k] - c1 * d->eps[k] - c2 * (d->eps_r2[k] - d->eps[k]);
    return 0;
}

static void dpm_reset(dpm *d) { d->have_eps = d->have_r1 = d->have_r2 = false; }

/* The denoised estimate of the step start (for the step callback). */
static void dpm_report(dpm *d, int i, int total, const float *x, float t)
{
    if (!d->r->o->on_step)
        return;
    float sg = sigma_of(t);
    for (size_t k = 0; k < d->r->n; k++)
        d->den[k] = x[k] - sg * d->eps[k];
    on_step(d->r, i, total, sg, x, d->den);
}

static int dpm_alloc(dpm *d, const run *r)
{
    memset(d, 0, sizeof *d);
    d->r = r;
    d->eps = alloc_f(r->n);
    d->eps_r1 = alloc_f(r->n);
    d->eps_r2 = alloc_f(r->n);
    d->u = alloc_f(r->n);
    d->den = alloc_f(r->n);
    return (d->eps && d->eps_r1 && d->eps_r2 && d->u && d->den) ? 0 : -1;
}

static void dpm_free(dpm *d)
{
    free(d->eps);
    free(d->eps_r1);
    free(d->eps_r2);
    free(d->u);
    free(d->den);
}

/* ComfyUI wraps both: sigma_min = the last sigma, or the one before it when
 * the last is 0; sigma_max = sigmas[0]; dpm_fast gets n = len - 1. */
static float dpm_sigma_min(const float *sig, int ns)
{
    float m = sig[ns - 1];
    if (m == 0.0f && ns >= 2)
        m = sig[ns - 2];
    return m;
}

static int sample_dpm_fast(const run *r, const float *sig, int ns, float *x)
{
    int nfe = ns - 1;
    float smin = dpm_sigma_min(sig, ns), smax = sig[0];
    if (!(smin > 0.0f) || !(smax > 0.0f))
        return fail(r->err, r->errlen, -1, "k_dpm_fast: sigma_min and sigma_max must not be 0");
    dpm d;
    float *xn = alloc_f(r->n);
    int rc = 0;
    if (dpm_alloc(&d, r) || !xn) {
        rc = fail(r->err, r->errlen, -1, "out of memory");
        goto out;
    }
    int m = nfe / 3 + 1;
    float *ts = alloc_f((size_t)m + 1);
    int *orders = malloc(sizeof(int) * (size_t)m);
    if (!ts || !orders) {
        free(ts);
        free(orders);
        rc = fail(r->err, r->errlen, -1, "out of memory");
        goto out;
    }
    sd_linspace_f32(t_of(smax), t_of(smin), m + 1, ts);
    int n_orders = 0;
    if (nfe % 3 == 0) {
        for (int i = 0; i < m - 2; i++)
            orders[n_orders++] = 3;
        orders[n_orders++] = 2;
        orders[n_orders++] = 1;
    } else {
        for (int i = 0; i < m - 1; i++)
            orders[n_orders++] = 3;
        orders[n_orders++] = nfe % 3;
    }
    for (int i = 0; i < n_orders && rc == 0; i++) {
        dpm_reset(&d);
        float t = ts[i], tn = ts[i + 1];
        if ((rc = dpm_first_eps(&d, x, t)))
            break;
        dpm_report(&d, i, n_orders, x, t);
        if (orders[i] == 1)
            rc = dpm_1_step(&d, x, t, tn, xn);
        else if (orders[i] == 2)
            rc = dpm_2_step(&d, x, t, tn, 0.5f, xn);
        else
            rc = dpm_3_step(&d, x, t, tn, xn);
        if (rc == 0)
            memcpy(x, xn, sizeof(float) * r->n);
    }
    free(ts);
    free(orders);
out:
    dpm_free(&d);
    free(xn);
    return rc;
}

static int sample_dpm_adaptive(const run *r, const float *sig, int ns, float *x)
{
    /* k-diffusion defaults: order 3, rtol 0.05, atol 0.0078, h_init 0.05,
     * PID (0, 1, 0), accept_safety 0.81, eta 0. */
    const float rtol = 0.05f, atol = 0.0078f;
    const double accept_safety = 0.81, pid_eps = 1e-8, b1 = 1.0 / 3.0;
    const int max_attempts = 1000; /* a NaN-producing model must not loop forever */
    float smin = dpm_sigma_min(sig, ns), smax = sig[0];
    if (!(smin > 0.0f) || !(smax > 0.0f))
        return fail(r->err, r->errlen, -1,
                    "k_dpm_adaptive: sigma_min and sigma_max must not be 0");
    size_t n = r->n;
    dpm d;
    float *x_low = alloc_f(n), *x_high = alloc_f(n), *x_prev = alloc_f(n);
    int rc = 0;
    if (dpm_alloc(&d, r) || !x_low || !x_high || !x_prev) {
        rc = fail(r->err, r->errlen, -1, "out of memory");
        goto out;
    }
    float t_start = t_of(smax), t_end = t_of(smin);
    float s = t_start;
    double hstep = 0.05;
    double errs[3] = {0, 0, 0};
    bool have_errs = false;
    memcpy(x_prev, x, sizeof(float) * n);
    int attempts = 0;
    while (s < t_end - 1e-5f) {
        if (++attempts > max_attempts) {
            rc = fail(r->err, r->errlen, -1,
                      "k_dpm_adaptive: no convergence after %d steps", max_attempts);
            break;
        }
        dpm_reset(&d);
        float t = s + (float)hstep;
        if (t_end < t)
            t = t_end;
        if ((rc = dpm_first_eps(&d, x, s)))
            break;
        dpm_report(&d, attempts - 1, -1, x, s);
        if ((rc = dpm_2_step(&d, x, s, t, 1.0f / 3.0f, x_low)))
            break;
        if ((rc = dpm_3_step(&d, x, s, t, x_high)))
            break;
        double sum = 0.0;
        for (size_t k = 0; k < n; k++) {
            float m = fabsf(x_low[k]) > fabsf(x_prev[k]) ? fabsf(x_low[k]) : fabsf(x_prev[k]);
            float delta = rtol * m;
            if (delta < atol)
                delta = atol;
            double q = ((double)x_low[k] - (double)x_high[k]) / delta;
            sum += q * q;
        }
        double error = sqrt(sum) / sqrt((double)n);
        if (!isfinite(error)) {
            rc = fail(r->err, r->errlen, -1, "k_dpm_adaptive: the model produced non-finite values");
            break;
        }
        /* PIDStepSizeController.propose_step with pcoeff = dcoeff = 0. */
        double inv_error = 1.0 / (error + pid_eps);
        if (!have_errs) {
            errs[0] = errs[1] = errs[2] = inv_error;
            have_errs = true;
        }
        errs[0] = inv_error;
        double factor = pow(errs[0], b1);
        factor = 1.0 + atan(factor - 1.0);
        bool accept = factor >= accept_safety;
        if (accept) {
            errs[2] = errs[1];
            errs[1] = errs[0];
        }
        hstep *= factor;
        if (accept) {
            memcpy(x_prev, x_low, sizeof(float) * n);
            memcpy(x, x_high, sizeof(float) * n);
            s = t;
        }
    }
out:
    dpm_free(&d);
    free(x_low);
    free(x_high);
    free(x_prev);
    return rc;
}

/* ---- dispatch ------------------------------------------------------------- */

int sd_sample(sd_sampler s, const sd_sample_opts *o, const float *sigmas, int n_sigmas,
              float *x, size_t numel, char *err, size_t errlen)
{
    if (!o || !o->denoise || !sigmas || !x)
        return fail(err, errlen, -1, "sd_sample: missing argument");
    if (n_sigmas < 1)
        return fail(err, errlen, -1, "sd_sample: empty sigma list");
    if ((unsigned)s >= SD_SAMPLER_COUNT)
        return fail(err, errlen, -1, "sd_sample: unknown sampler %d", (int)s);
    if (sd_sampler_is_stochastic(s) && !o->noise)
        return fail(err, errlen, -1, "%s needs a noise source", sd_sampler_name(s));
    for (int i = 0; i < n_sigmas; i++)
        if (!(sigmas[i] >= 0.0f) || !isfinite(sigmas[i]))
            return fail(err, errlen, -1, "sd_sample: sigma %d is not a finite value >= 0", i);
    if (n_sigmas == 1)
        return 0;
    run r = {o, numel, err, errlen};
    switch (s) {
    case SD_SAMPLER_EULER:
    case SD_SAMPLER_DDIM:
        return sample_steps(&r, sigmas, n_sigmas, x, 1, step_euler);
    case SD_SAMPLER_EULER_A:
        return sample_steps(&r, sigmas, n_sigmas, x, 2, step_euler_a);
    case SD_SAMPLER_HEUN:
        return sample_steps(&r, sigmas, n_sigmas, x, 3, step_heun);
    case SD_SAMPLER_DPM_2:
        return sample_steps(&r, sigmas, n_sigmas, x, 4, step_dpm_2);
    case SD_SAMPLER_DPM_2_A:
        return sample_steps(&r, sigmas, n_sigmas, x, 4, step_dpm_2_a);
    case SD_SAMPLER_LMS:
        return sample_steps(&r, sigmas, n_sigmas, x, 1 + LMS_ORDER, step_lms);
    case SD_SAMPLER_DPMPP_2M:
        return sample_steps(&r, sigmas, n_sigmas, x, 2, step_dpmpp_2m);
    case SD_SAMPLER_DPMPP_2S_A:
        return sample_steps(&r, sigmas, n_sigmas, x, 4, step_dpmpp_2s_a);
    case SD_SAMPLER_DPMPP_SDE:
        return sample_steps(&r, sigmas, n_sigmas, x, 5, step_dpmpp_sde);
    case SD_SAMPLER_DPM_FAST:
        return sample_dpm_fast(&r, sigmas, n_sigmas, x);
    case SD_SAMPLER_DPM_ADAPTIVE:
        return sample_dpm_adaptive(&r, sigmas, n_sigmas, x);
    case SD_SAMPLER_LCM:
        return sample_steps(&r, sigmas, n_sigmas, x, 2, step_lcm);
    default:
        return fail(err, errlen, -1, "sd_sample: unknown sampler %d", (int)s);
    }
}
