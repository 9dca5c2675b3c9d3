/* auth: hook user_suspicion — another plugin (the broker's prompt filter,
 * its worker checks) reports a suspicion against a user (spec §5,
 * horde/suspicions.py).
 *
 * The count lives in users.suspicion, the once-only reasons already counted
 * in users.suspicion_reasons (bit = HN_SUSPICION_* code). One conditional
 * UPDATE adds the reason and the count together, so two reports of the same
 * once-only reason at the same time count once. `reset_suspicion` (PUT
 * /users/{id}, auth_manage.c) clears both. */
#include <inttypes.h>

#include "auth.h"

/* The reasons the horde counts every time; the others count once. */
static bool repeatable(int reason) {
    return reason == HN_SUSPICION_UNREASONABLY_FAST ||
           reason == HN_SUSPICION_TOO_MANY_JOBS_ABORTED;
}

hn_rc auth_user_suspicion(void *state, int64_t user_id, int reason, int64_t *count,
                          hn_error *err) {
    auth_state *a = state;
    if (count)
        *count = 0;
    if (!a->db.vt)
        return auth_fail(err, 503, "StorageError", "auth: not started");
    if (reason < HN_SUSPICION_WORKER_NAME_LONG || reason > HN_SUSPICION_TOO_MANY_JOBS_ABORTED)
        return auth_fail(err, 400, "BadRequest", "Unknown suspicion reason %d.", reason);
    if (user_id == 0) /* the anonymous user is everyone: never suspected */
        return HN_OK;
    int64_t bit = (int64_t)1 << reason;
    hn_db *db = a->db.vt->acquire(a->db.state, err);
    if (!db)
        return HN_ERROR;
    hn_value args[] = {HN_V_INT(bit), HN_V_INT(user_id), HN_V_INT(bit)};
    int64_t changes = 0;
    hn_rc rc = repeatable(reason)
                   ? a->db.vt->exec(db,
                                    "UPDATE users SET suspicion = suspicion + 1, "
                                    "suspicion_reasons = suspicion_reasons | ? WHERE id = ?",
                                    args, 2, &changes, err)
                   : a->db.vt->exec(db,
                                    "UPDATE users SET suspicion = suspicion + 1, "
                                    "suspicion_reasons = suspicion_reasons | ? WHERE id = ? "
                                    "AND (suspicion_reasons & ?) = 0",
                                    args, 3, &changes, err);
    a->db.vt->release(a->db.state, db);
    if (rc != HN_OK)
        return HN_ERROR;
    /* no change: already counted for this reason, or no such user */
    auth_account acc;
    rc = auth_users_get(&a->db, user_id, &acc, err);
    if (rc == HN_DECLINED)
        return auth_fail(err, 404, "UserNotFound", "User with ID '%" PRId64 "' not found.",
                         user_id);
    if (rc != HN_OK)
        return HN_ERROR;
    if (count)
        *count = acc.suspicion;
    return HN_OK;
}
