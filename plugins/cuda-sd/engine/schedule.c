/* schedule.c - SD noise schedule and sigma lists (see schedule.h).
 *
 * The float32 arithmetic below follows the order of operations of the torch
 * code it mirrors (k-diffusion external.py DiscreteSchedule, ComfyUI
 * model_sampling.py ModelSamplingDiscrete), so results agree to the last bit
 * or two; the golden tests check them against the reference values. */
#include "schedule.h"

#include <math.h>
#include <string.h>

int sd_conventions_parse(const char *name, sd_conventions *out)
{
    if (!name || !out)
        return -1;
    if (strcmp(name, "comfyui") == 0) {
        *out = SD_CONV_COMFYUI;
        return 0;
    }
    if (strcmp(name, "kdiffusion") == 0 || strcmp(name, "k-diffusion") == 0) {
        *out = SD_CONV_KDIFFUSION;
        return 0;
    }
    return -1;
}

const char *sd_conventions_name(sd_conventions c)
{
    return c == SD_CONV_KDIFFUSION ? "kdiffusion" : "comfyui";
}

/* torch.linspace in float64 (scalar formula, as sd_linspace_f32). */
static double linspace_f64_at(double start, double end, int n, int i)
{
    if (n == 1)
        return start;
    double step = (end - start) / (double)(n - 1);
    if (i < n / 2)
        return start + step * (double)i;
    return end - step * (double)(n - i - 1);
}

void sd_linspace_f32(float start, float end, int n, float *out)
{
    if (n <= 0)
        return;
    if (n == 1) {
        out[0] = start;
        return;
    }
    float step = (end - start) / (float)(n - 1);
    int halfway = n / 2;
    for (int i = 0; i < n; i++)
        out[i] = i < halfway ? start + step * (float)i : end - step * (float)(n - i - 1);
}

void sd_schedule_init(sd_schedule *s, sd_conventions conv)
{
    s->conventions = conv;
    const double b0 = sqrt(0.00085), b1 = sqrt(0.012);
    double cum = 1.0;
    for (int i = 0; i < SD_SCHEDULE_STEPS; i++) {
        double b = linspace_f64_at(b0, b1, SD_SCHEDULE_STEPS, i);
        cum *= 1.0 - b * b;
        float a = (float)cum;
        s->alphas_cumprod[i] = a;
        if (conv == SD_CONV_KDIFFUSION) {
            /* ldm registers alphas_cumprod as float32; k-diffusion's
             * CompVisDenoiser derives sigmas from that in float32. */
            s->sigmas[i] = sqrtf((1.0f - a) / a);
            s->log_sigmas[i] = logf(s->sigmas[i]);
        } else {
            /* ComfyUI keeps the schedule in float64 until the sigmas. */
            double sg = sqrt((1.0 - cum) / cum);
            s->sigmas[i] = (float)sg;
            s->log_sigmas[i] = (float)log(sg);
        }
    }
}

float sd_schedule_t_to_sigma(const sd_schedule *s, float t)
{
    if (!(t > 0.0f))
        t = 0.0f; /* also maps NaN to 0 */
    if (t > (float)(SD_SCHEDULE_STEPS - 1))
        t = (float)(SD_SCHEDULE_STEPS - 1);
    float lo_f = floorf(t);
    int lo = (int)lo_f, hi = (int)ceilf(t);
    float w = t - lo_f;
    float log_sigma = (1.0f - w) * s->log_sigmas[lo] + w * s->log_sigmas[hi];
    return expf(log_sigma);
}

float sd_schedule_sigma_to_t(const sd_schedule *s, float sigma)
{
    float log_sigma = logf(sigma);
    /* k-diffusion: dists.ge(0).cumsum().argmax() = the last index whose
     * ln sigma is <= ours (0 when none), clamped to 998. */
    int lo = 0;
    for (int i = 0; i < SD_SCHEDULE_STEPS; i++)
        if (log_sigma - s->log_sigmas[i] >= 0.0f)
            lo = i;
    if (lo > SD_SCHEDULE_STEPS - 2)
        lo = SD_SCHEDULE_STEPS - 2;
    int hi = lo + 1;
    float low = s->log_sigmas[lo], high = s->log_sigmas[hi];
    float w = (low - log_sigma) / (low - high);
    if (w < 0.0f)
        w = 0.0f;
    if (w > 1.0f)
        w = 1.0f;
    return (1.0f - w) * (float)lo + w * (float)hi;
}

int sd_schedule_sigma_to_t_quantized(const sd_schedule *s, float sigma)
{
    float log_sigma = logf(sigma);
    int best = 0;
    float best_d = fabsf(log_sigma - s->log_sigmas[0]);
    for (int i = 1; i < SD_SCHEDULE_STEPS; i++) {
        float d = fabsf(log_sigma - s->log_sigmas[i]);
        if (d < best_d) { /* strict: torch.argmin returns the first minimum */
            best_d = d;
            best = i;
        }
    }
    return best;
}

float sd_schedule_model_t(const sd_schedule *s, float sigma)
{
    if (s->conventions == SD_CONV_COMFYUI)
        return (float)sd_schedule_sigma_to_t_quantized(s, sigma);
    return sd_schedule_sigma_to_t(s, sigma);
}

void sd_sigmas_discrete(const sd_schedule *s, int n, float *out)
{
    if (n < 1)
        return;
    /* ComfyUI's "normal" scheduler takes linspace(timestep(sigma_max),
     * timestep(sigma_min), n) = linspace(999, 0, n): the same list. */
    sd_linspace_f32((float)(SD_SCHEDULE_STEPS - 1), 0.0f, n, out);
    for (int i = 0; i < n; i++)
        out[i] = sd_schedule_t_to_sigma(s, out[i]);
    out[n] = 0.0f;
}

void sd_sigmas_karras(const sd_schedule *s, int n, float *out)
{
    if (n < 1)
        return;
    const double rho = 7.0;
    /* sigma_min/max are Python floats (the float32 table values); the
     * 1/rho powers are taken in double, the ramp arithmetic in float32. */
    double min_inv_rho = pow((double)sd_schedule_sigma_min(s), 1.0 / rho);
    double max_inv_rho = pow((double)sd_schedule_sigma_max(s), 1.0 / rho);
    float span = (float)(min_inv_rho - max_inv_rho);
    float base = (float)max_inv_rho;
    sd_linspace_f32(0.0f, 1.0f, n, out);
    for (int i = 0; i < n; i++)
        out[i] = powf(out[i] * span + base, (float)rho);
    out[n] = 0.0f;
}

void sd_ddim_timesteps(int n, int *out)
{
    if (n < 1)
        return;
    if (n > SD_SCHEDULE_STEPS)
        n = SD_SCHEDULE_STEPS;
    int ratio = SD_SCHEDULE_STEPS / n;
    for (int k = 0; k < n; k++)
        out[k] = (n - 1 - k) * ratio + 1;
}

void sd_sigmas_ddim(const sd_schedule *s, int n, float *out)
{
    if (n < 1)
        return;
    int ts[SD_SCHEDULE_STEPS];
    sd_ddim_timesteps(n, ts);
    for (int k = 0; k < n; k++) {
        int t = ts[k] > SD_SCHEDULE_STEPS - 1 ? SD_SCHEDULE_STEPS - 1 : ts[k];
        out[k] = s->sigmas[t];
    }
    out[n] = s->sigmas[0];
}
