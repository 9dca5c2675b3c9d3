/* broker: the parts of the kudos arithmetic (§3) the broker needs on its own.
 *
 * The price of a request (wp.kudos) normally comes from the kudos plugin
 * through the generation_price hook (the public horde's neural price model);
 * without it the broker uses the horde's own legacy formula below, so that a
 * node without kudos still answers with sensible `kudos` numbers. */
#include <math.h>
#include <string.h>

#include "broker.h"

double br_price_legacy(const br_req_spec *s) {
    double px = (double)s->width * s->height;
    double r = pow(px - 4096.0, 1.75) / pow(1048576.0 - 4096.0, 1.75);
    double steps = s->accurate_steps;
    double cost = br_round(0.1232 * steps + r * 0.1232 * steps * 8.75, 2);
    for (int i = 0; i < s->n_pp; i++)
        cost = br_round(cost * 1.2, 2);
    if (s->control_type && !s->return_control_map)
        cost *= 3;
    cost += 3.0 * s->n_loras;
    if (s->has_tis)
        cost += 1;
    return cost;
}

double br_price_burn(const br_req_spec *s, double k) {
    double v = k;
    if (s->has_source)
        v *= 1.3;
    v *= s->pp_multiplier;
    v += 1; /* the per-image horde tax */
    if (!s->slow_workers)
        v *= 1.2;
    if (s->worker_blacklist)
        v *= 1.1;
    return v;
}

static double baseline_multiplier(const char *baseline, const br_req_spec *s) {
    if (strcmp(baseline, "stable_diffusion_xl") == 0)
        return s->qr_code ? 4 : 2;
    if (strcmp(baseline, "stable_cascade") == 0)
        return s->hires_fix ? 7 : 4;
    if (strcmp(baseline, "flux_1") == 0 || strcmp(baseline, "z_image_turbo") == 0)
        return 8;
    if (strcmp(baseline, "qwen_image") == 0)
        return 12;
    return 1;
}

double br_price_model_multiplier(broker *b, const char *model, const br_req_spec *s) {
    return baseline_multiplier(br_model_baseline(b->ref, model), s);
}

double br_price_dry_run(broker *b, const br_req_spec *s, double kudos) {
    /* the estimate uses the first requested model; none: as if SDXL (x2) */
    double m = 2;
    if (s->n_models > 0) {
        const char *base = br_model_baseline(b->ref, s->models[0]);
        if (strcmp(base, "stable_diffusion_xl") == 0)
            m = 2;
        else if (strcmp(base, "stable_cascade") == 0)
            m = 4;
        else if (strcmp(base, "flux_1") == 0 || strcmp(base, "z_image_turbo") == 0)
            m = 8;
        else if (strcmp(base, "qwen_image") == 0)
            m = 12;
        else
            m = 1;
    }
    return br_price_burn(s, kudos) * s->n * m + 1;
}
