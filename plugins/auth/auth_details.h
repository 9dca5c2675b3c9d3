/* auth: the horde's UserDetails object (spec/horde-api.md §2) for one user.
 *
 * auth fills every field it owns and zero/empty defaults for the fields other
 * plugins own, then GET /users/{id} and /find_user run hook user_details so
 * those plugins overwrite them (broker: worker_count, worker_ids, records,
 * active_generations; kudos plugin: kudos, kudos_details, ...). Keys that
 * would be null are left out (the horde marshals with skip_none). Keys present
 * only at some privilege are only present then: a handler should fill
 * `worker_ids`, `sharedkey_ids`, `active_generations` only when auth put them
 * there. */
#ifndef AUTH_DETAILS_H
#define AUTH_DETAILS_H

#include <jansson.h>

#include "auth_users.h"

/* privilege: 0 public, 1 the user themself, 2 moderator/admin. Returns a new
 * reference. */
json_t *auth_user_details(const auth_account *a, int privilege, int64_t now);

#endif
