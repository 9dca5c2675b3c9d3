/* kudos: the kudos_grant hook (ABI 1.3): other plugins (ratings) give a user
 * kudos for work that is not a generation. One ledger transaction per grant,
 * counted as "awarded" in kudos_details (where the horde shows rating kudos).
 * The caller's `ref` becomes the event key "grant:<ref>", so a grant repeated
 * with the same ref (a retry after a crash, say) moves nothing the second
 * time. Event keys are pruned after a day (kd_op_prune); callers that may
 * retry later than that keep their own "paid" mark, as ratings does. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kudos.h"

static hn_rc on_grant(void *state, int64_t user_id, double amount, const char *reason,
                      const char *ref, hn_error *err) {
    kudos *k = state;
    if (!k->started)
        return k->api->error(err, 503, "ServiceUnavailable", "The kudos ledger is not ready.");
    if (user_id <= 0)
        return k->api->error(err, 400, "KudosAwardToAnon", "Cannot award anon. No go.");
    if (!ref || !*ref || strlen(ref) > 200)
        return k->api->error(err, 400, "BadRequest", "kudos_grant needs a ref of 1..200 bytes");
    char event[224];
    snprintf(event, sizeof(event), "grant:%s", ref);
    kd_tx tx;
    if (kd_tx_begin(&k->ledger, &tx, (int64_t)time(NULL), err) != HN_OK)
        return HN_ERROR;
    hn_rc seen = kd_tx_event(&tx, event);
    if (seen == HN_DONE) { /* granted before */
        kd_tx_abort(&tx);
        return HN_OK;
    }
    kd_account a;
    kd_posting p = {KD_BALANCE, kd_cents(amount), reason && *reason ? reason : "award",
                    "awarded", ref, -1, event};
    if (seen != HN_OK || kd_tx_lock(&tx, user_id, &a) != HN_OK ||
        kd_tx_post(&tx, &a, &p) != HN_OK ||
        (p.cents < 0 && kd_tx_clamp(&tx, &a, event) != HN_OK)) {
        kd_tx_abort(&tx);
        return HN_ERROR;
    }
    return kd_tx_commit(&tx);
}

int kd_grant_hook_register(kudos *k) {
    return hn_hook_add_kudos_grant(k->api, k->self, on_grant, k, NULL);
}
