/* kudos: the per-image price of a request (spec §3.1).
 *
 * Two formulas: the public horde's neural price model (a 4-layer MLP whose
 * weights are read from a JSON file named by config `price_model`), and its
 * legacy closed-form formula, used when no model is loaded or when the model
 * cannot encode the request (a post-processor it does not know, as the horde
 * falls back when its model throws). Both then add the LoRA and TI surcharges.
 *
 * Everything here is pure: no state beyond the loaded weights, which are
 * read-only after loading, so any thread may price at any time. */
#ifndef KD_PRICE_H
#define KD_PRICE_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#define KD_MAX_PP 16 /* post-processors kept per request (the API has 16 names) */

/* What pricing and the burn rules need from a (normalised) request. Filled by
 * kd_gen_from_request; plain data, nothing to free. `models` is borrowed from
 * the request JSON and valid while it is. */
typedef struct kd_gen {
    int width, height, steps, n;
    double cfg_scale;
    bool has_denoising;      /* params.denoising_strength present */
    double denoising;
    bool has_control_strength;
    double control_strength;
    bool karras, hires_fix, has_source, has_mask, return_control_map;
    char sampler[32];
    char control_type[32];   /* "" when none */
    char source_processing[16];
    char pp[KD_MAX_PP][40];
    int n_pp;
    bool pp_overflow;        /* more post-processors than KD_MAX_PP, or a name too long */
    int n_loras;
    bool lcm_lora;           /* a LoRA the horde knows to be an LCM LoRA */
    bool has_tis;
    int n_extra_src;
    bool slow_workers, worker_blacklist, qr_code;
    const json_t *models;    /* array of model names (borrowed), may be NULL */
} kd_gen;

/* Reads a request as the broker stores it (params with server defaults filled,
 * `_has_source`/`_has_mask` flags, `_extra_strengths`); tolerates a raw
 * request too (defaults: 512x512, 30 steps, cfg 5, k_euler_a, karras, n 1).
 * Returns 0, or -1 when `request` is not an object. */
int kd_gen_from_request(const json_t *request, kd_gen *g);

/* Steps as the horde counts work: x2 for second-order samplers, 40 for
 * k_dpm_adaptive. */
int kd_accurate_steps(const kd_gen *g);

/* True for sampler `lcm` or a known LCM LoRA. */
bool kd_uses_lcm(const kd_gen *g);

/* Python's round(x, ndigits): correctly rounded, ties to even on the exact
 * binary value (what printf does too). */
double kd_py_round(double x, int ndigits);

/* The legacy formula (§3.1 point 2), without LoRA/TI surcharges. */
double kd_price_legacy(const kd_gen *g);

/* ---- the neural price model -------------------------------------------------- */

typedef struct kd_price_model kd_price_model;

/* Loads weights from a JSON file {"w0": {"shape": [79, 47], "data": [...]}, ...}
 * (the layout of the horde's kudos-v21-206.npz). NULL with err filled when the
 * file is missing or its shapes are not the model's. The caller owns the
 * result (kd_price_model_free). */
kd_price_model *kd_price_model_load(const char *path, char *err, size_t errlen);
void kd_price_model_free(kd_price_model *m);

/* The model's predicted seconds for g, rounded to 2 decimals as the horde
 * does. Returns 0, or -1 when the request has something the model cannot
 * encode (the horde then uses the legacy formula). */
int kd_price_model_seconds(const kd_price_model *m, const kd_gen *g, double *seconds);

/* Seconds of the basis job (512x512, 50 steps, cfg 7.5, k_euler, karras,
 * txt2img), rounded: 6.45 for kudos-v21-206. */
double kd_price_model_basis(const kd_price_model *m);

/* ---- the price ------------------------------------------------------------------ */

/* wp.kudos: model price (or legacy when m is NULL or cannot encode g), then
 * +3 per LoRA and +1 if any TI. */
double kd_price(const kd_price_model *m, const kd_gen *g);

#endif
