/* schedule.h - the SD1/SD2 noise schedule: alphas_cumprod, the 1000 model
 * sigmas, sigma <-> timestep conversion, and the sigma lists a sampler walks
 * (spec/sd-engine.md §1.5 and §3.1, golden/README.md §5 "Conventions").
 *
 * Everything is computed, never read from a checkpoint: F16 files round the
 * stored DDPM buffers by up to 0.011 (golden/README.md).
 *
 * Two conventions (sd_conventions) differ in a few last bits and in how a
 * sigma becomes the timestep the UNet sees:
 *   - SD_CONV_KDIFFUSION (k-diffusion + ldm, what golden/ uses): the sigma
 *     table is sqrt((1-a)/a) computed in float32 from the float32
 *     alphas_cumprod; sigma -> t is fractional (log-linear interpolation).
 *   - SD_CONV_COMFYUI (what horde workers run): the sigma table is computed in
 *     float64 and rounded to float32 once; sigma -> t is the nearest table
 *     index in log space (ComfyUI ModelSamplingDiscrete.timestep).
 *
 * Pure functions on caller-owned memory; no allocation, thread-safe.
 */
#ifndef SD_ENGINE_SCHEDULE_H
#define SD_ENGINE_SCHEDULE_H

#ifdef __cplusplus
extern "C" {
#endif

#define SD_SCHEDULE_STEPS 1000

typedef enum {
    SD_CONV_COMFYUI = 0,   /* default: ComfyUI / horde reGen workers */
    SD_CONV_KDIFFUSION = 1 /* k-diffusion / A1111 / diffusers: golden data */
} sd_conventions;

/* "comfyui" / "kdiffusion" -> 0 and *out, else -1. */
int sd_conventions_parse(const char *name, sd_conventions *out);
const char *sd_conventions_name(sd_conventions c);

typedef struct sd_schedule {
    sd_conventions conventions;
    float alphas_cumprod[SD_SCHEDULE_STEPS]; /* float64 product cast to f32 */
    float sigmas[SD_SCHEDULE_STEPS];         /* increasing: sigma_0 ~ 0.0292 */
    float log_sigmas[SD_SCHEDULE_STEPS];
} sd_schedule;

/* The "scaled linear" schedule of SD1/SD2: betas = linspace(sqrt(0.00085),
 * sqrt(0.012), 1000)^2 in float64, alphas_cumprod = prod(1 - beta). */
void sd_schedule_init(sd_schedule *s, sd_conventions conv);

static inline float sd_schedule_sigma_min(const sd_schedule *s) { return s->sigmas[0]; }
static inline float sd_schedule_sigma_max(const sd_schedule *s)
{
    return s->sigmas[SD_SCHEDULE_STEPS - 1];
}

/* t in [0, 999] (fractional allowed) -> sigma, interpolating ln(sigma)
 * between the neighbouring integer timesteps (both conventions). */
float sd_schedule_t_to_sigma(const sd_schedule *s, float t);
/* sigma -> fractional t, the inverse of the above (k-diffusion, quantize
 * off): lo = largest index with ln sigma_lo <= ln sigma (at most 998, 0 if
 * none), w = clamp((ln sigma_lo - ln sigma) / (ln sigma_lo - ln sigma_hi)). */
float sd_schedule_sigma_to_t(const sd_schedule *s, float sigma);
/* sigma -> the table index nearest in ln sigma (ComfyUI; ties: lower). */
int sd_schedule_sigma_to_t_quantized(const sd_schedule *s, float sigma);
/* The timestep the UNet receives for sigma under the schedule's convention. */
float sd_schedule_model_t(const sd_schedule *s, float sigma);

/* float32 torch.linspace(start, end, n) (scalar-kernel formula: the first
 * half counts from start, the second half back from end). n >= 1. */
void sd_linspace_f32(float start, float end, int n, float *out);

/* Sigma lists: n steps give n+1 values, the last 0. n >= 1; out has n+1
 * floats. "discrete"/"normal": t_i = linspace(999, 0, n), sigma(t_i).
 * "karras": rho 7 between sigma_max and sigma_min (float32, as torch). */
void sd_sigmas_discrete(const sd_schedule *s, int n, float *out);
void sd_sigmas_karras(const sd_schedule *s, int n, float *out);

/* diffusers DDIMScheduler "leading" spacing with steps_offset 1 (the golden
 * DDIM): t_k = (n-1-k) * (1000/n) + 1 for k < n. out has n ints. n in
 * [1, 1000]. */
void sd_ddim_timesteps(int n, int *out);
/* The DDIM run expressed as sigmas (see samplers.h, SD_SAMPLER_DDIM):
 * sigma(t_k) for each DDIM timestep, then the sigma of the final alpha
 * (alphas_cumprod[0], "set_alpha_to_one" false) instead of 0. out has n+1. */
void sd_sigmas_ddim(const sd_schedule *s, int n, float *out);

#ifdef __cplusplus
}
#endif
#endif
