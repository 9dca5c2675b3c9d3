/* kudos: a promotion to trusted (§3.5) reaches auth's roles through hook
 * user_set_roles, so that everything reading roles (the broker's
 * trusted-worker matching, /users details, team creation) sees it, not only
 * the kudos plugin's escrow rule.
 *
 * The ledger commits the promotion first (escrow released, promoted = 1);
 * the role change follows, and kudos_accounts.role_synced records that it
 * went through. A crash in between, or auth not loaded, leaves role_synced 0
 * and kd_roles_resync (at start) tries again: the role is set at least once,
 * and setting a bit twice is harmless. */
#include <stdint.h>

#include "kudos.h"

#define RESYNC_MAX 1024 /* per start; more wait for the next one */

void kd_roles_promote(kudos *k, int64_t user_id) {
    hn_error err = {0};
    hn_rc rc = hn_run_user_set_roles(k->api, user_id, HN_ROLE_TRUSTED, 0, &err);
    if (rc == HN_DECLINED) {
        k->api->log(k->self, HN_LOG_WARN,
                    "user %lld passed evaluation, but no plugin keeps roles (load auth)",
                    (long long)user_id);
        return;
    }
    if (rc != HN_OK) {
        k->api->log(k->self, HN_LOG_ERROR, "user %lld: the trusted role was not set: %s",
                    (long long)user_id, err.message);
        return;
    }
    if (kd_op_mark_role_synced(&k->ledger, user_id, &err) != HN_OK)
        k->api->log(k->self, HN_LOG_WARN, "user %lld: trusted, not recorded as such: %s",
                    (long long)user_id, err.message);
}

void kd_roles_resync(kudos *k) {
    int64_t ids[RESYNC_MAX];
    size_t n = 0;
    hn_error err = {0};
    if (kd_op_unsynced_promotions(&k->ledger, ids, RESYNC_MAX, &n, &err) != HN_OK) {
        k->api->log(k->self, HN_LOG_WARN, "promotions to re-apply: %s", err.message);
        return;
    }
    for (size_t i = 0; i < n; i++)
        kd_roles_promote(k, ids[i]);
}
