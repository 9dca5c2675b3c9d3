/* kudos: the arithmetic of the horde's economy (spec §3.2-§3.5, §3.8) that is
 * not the price itself: what a requester burns, what a worker earns, the
 * dry-run estimate, the upfront rule and downgrades, floors, uptime rewards and
 * queue priority. Pure functions, safe from any thread. */
#ifndef KD_RULES_H
#define KD_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "models.h"
#include "price.h"

/* What the burn of one image depends on (captured when a request is queued). */
typedef struct kd_burn_flags {
    bool has_source;       /* x1.3 */
    double pp_multiplier;  /* product of the post-processors' multipliers */
    bool slow_workers;     /* false: x1.2 */
    bool worker_blacklist; /* true: x1.1 */
} kd_burn_flags;

kd_burn_flags kd_burn_flags_of(const kd_gen *g);

/* KNOWN_POST_PROCESSORS: 1.05 for an upscaler, 1 for face fixers and
 * strip_background (and for a name it does not know). */
double kd_pp_multiplier(const char *name);

/* burn(k) = (k x1.3 [source] x pp + 1 [per-image horde tax]) x1.2 [!slow]
 *           x1.1 [blacklist]. */
double kd_burn(const kd_burn_flags *f, double k);

/* Gen kudos multiplier of the baseline a worker ran (§3.2): SDXL 2 (4 with
 * qr_code), stable_cascade 4 (7 with hires_fix), flux_1 and z_image_turbo 8,
 * qwen_image 12, else 1. */
double kd_baseline_multiplier(const char *baseline, bool qr_code, bool hires_fix);

/* Multiplier the estimate uses (§3.3): the first requested model's baseline
 * (SDXL 2, cascade 4, flux/z-image 8, qwen 12, else 1); no models: as SDXL. */
double kd_estimate_multiplier(const kd_model_ref *ref, const kd_gen *g);

/* The dry-run estimate and the upfront amount: burn(price) x n x M + 1. */
double kd_estimate(const kd_model_ref *ref, const kd_gen *g, double price);

/* Owner earnings multiplier of a bridge (`name:version:url`): 1.0 for the
 * latest official bridges (reGen >= 13, AI Horde Worker >= 24) and for our own
 * `horde-node`; 0.9 for older official ones; 0.75 for anything else. */
double kd_bridge_multiplier(const char *bridge_agent);

/* ---- the upfront rule (§3.3) --------------------------------------------------------- */

typedef struct kd_upfront {
    bool required;
    int max_res;   /* the resolution in the refusal message (unclamped when
                    * slow_workers=false, as the horde reports it) */
} kd_upfront;

/* queue: queued_requests; threads: threads of the image workers online. */
kd_upfront kd_upfront_check(const kd_model_ref *ref, const kd_gen *g, long long queue,
                            long long threads);

/* allow_downgrade: shrinks w,h to fit max_res^2 (multiples of 64, not below
 * 512), lowers steps until the accurate steps fit the models' max_steps (30
 * by default, 20 with ControlNet, 10 for LCM; stops below 5), and sets
 * slow_workers. Changes g in place. */
void kd_downgrade(const kd_model_ref *ref, kd_gen *g, int max_res);

/* ---- balances, escrow, uptime, priority ------------------------------------------------ */

/* Floors in centi-kudos (§3.4): anonymous -50, pseudonymous 14, others 25. */
typedef struct kd_floors {
    int64_t anon, pseudonymous, registered;
} kd_floors;
int64_t kd_floor_for(const kd_floors *f, int64_t user_id, bool pseudonymous);

/* Kudos in centi-kudos as the horde rounds them (round(x, 2)). */
int64_t kd_cents(double kudos);

/* Untrusted owners: round(k/2, 2) into escrow, the rest spendable. */
void kd_escrow_split(double kudos, double *spendable, double *escrow);

/* Image workers' uptime reward per 10 minutes: 50 + 2 per model (+30 with
 * LoRAs allowed). */
double kd_uptime_reward(int n_models, bool allow_lora);

/* Queue priority (§3.8): the requester's kudos at activation (flagged:
 * round(kudos/1000) when kudos > 10, else -100), aged by +50 every 10 s.
 * Ageing adds the same amount to every waiting request, so the order it gives
 * equals a fixed key of kudos - 50 x (10-second ticks since an epoch at the
 * request's arrival): that key is what this returns. */
double kd_priority(double kudos, bool flagged, int64_t now_s);

/* Python's repr() of a float ("57.2", "57.0", "1e+16"), for messages that
 * the horde formats with f-strings. */
void kd_py_repr(double x, char *out, size_t len);

#endif
