/* auth: hook user_set_roles — another plugin changes a user's roles (the
 * kudos plugin promotes a worker owner to trusted, §3.5).
 *
 * One UPDATE sets and clears the bits in the row itself, so two concurrent
 * changes of different bits cannot undo each other (no read-modify-write in
 * C). Keys are resolved from the table on every request (auth keeps no
 * cache), so the next authenticated call sees the new roles: the broker's
 * trusted-worker matching takes the owner's roles from each pop. */
#include <inttypes.h>

#include "auth.h"

hn_rc auth_user_set_roles(void *state, int64_t user_id, uint32_t add_roles, uint32_t remove_roles,
                          hn_error *err) {
    auth_state *a = state;
    if (!a->db.vt)
        return auth_fail(err, 503, "StorageError", "auth: not started");
    if (user_id == 0) /* the anonymous user's roles are fixed */
        return auth_fail(err, 400, "AnonForbidden", "The anonymous user's roles cannot change.");
    hn_db *db = a->db.vt->acquire(a->db.state, err);
    if (!db)
        return HN_ERROR;
    hn_value args[] = {HN_V_INT((int64_t)add_roles), HN_V_INT((int64_t)remove_roles),
                       HN_V_INT(user_id)};
    int64_t changes = 0;
    hn_rc rc = a->db.vt->exec(db, "UPDATE users SET roles = (roles | ?) & ~? WHERE id = ?", args,
                              3, &changes, err);
    a->db.vt->release(a->db.state, db);
    if (rc != HN_OK)
        return HN_ERROR;
    if (changes == 0)
        return auth_fail(err, 404, "UserNotFound", "User with ID '%" PRId64 "' not found.",
                         user_id);
    return HN_OK;
}
