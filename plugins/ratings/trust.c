/* ratings: what the service knows of each rater, and how much it trusts them.
 *
 * The rules (thresholds in the config, README "Trust"):
 *   - captchas: some served images have a known answer; a rating further than
 *     captcha_tolerance from it fails. captcha_fail_limit failures time the
 *     rater out and exclude every rating of theirs from exports and means;
 *   - speed: more than max_per_minute ratings a minute are refused (429);
 *     fast_limit ratings in a row sent sooner than min_rating_s after their
 *     image was served time the rater out;
 *   - divergence: a rating at least `divergence` away from the mean of an
 *     image's other ratings (once there are divergence_min_ratings of them) is
 *     suspect; after min_trust_ratings ratings the suspect share lowers trust.
 * Trust is 1 - failed/limit for captchas, times 1 - suspect share, 0 when
 * excluded; exports leave out raters below min_export_trust and carry each
 * rating's rater trust so dataset builders can weight. */
#include <string.h>

#include "ratings.h"

hn_rc rt_rater_load(ratings *r, hn_db *c, const char *key, rt_rater_state *out, hn_error *err) {
    memset(out, 0, sizeof(*out));
    hn_value q[] = {HN_V_TEXT(key)};
    hn_stmt *st = r->db->query(c,
                               "SELECT captchas_failed, captchas_passed, fast_streak, suspect,"
                               " timeout_until, excluded, ratings FROM ratings_raters"
                               " WHERE rater = ?",
                               q, 1, err);
    if (!st)
        return HN_ERROR;
    int got = r->db->step(st, err);
    if (got == 1) {
        out->captchas_failed = (int)r->db->col_int(st, 0);
        out->captchas_passed = (int)r->db->col_int(st, 1);
        out->fast_streak = (int)r->db->col_int(st, 2);
        out->suspect = (int)r->db->col_int(st, 3);
        out->timeout_until = r->db->col_int(st, 4);
        out->excluded = r->db->col_int(st, 5) != 0;
        out->ratings = r->db->col_int(st, 6);
    }
    r->db->finish(st);
    return got < 0 ? HN_ERROR : HN_OK;
}

double rt_trust(const rt_conf *conf, const rt_rater_state *s) {
    if (s->excluded)
        return 0.0;
    double t = 1.0 - (double)s->captchas_failed / (double)conf->captcha_fail_limit;
    if (s->ratings >= conf->min_trust_ratings && s->ratings > 0)
        t *= 1.0 - (double)s->suspect / (double)s->ratings;
    if (t < 0)
        t = 0;
    if (t > 1)
        t = 1;
    return t;
}
