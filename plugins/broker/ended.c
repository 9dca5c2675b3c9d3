/* broker: when a request has ended, for hook generation_ended (contract in
 * hooks.def). The emitters are the places that end a request: submit.c (the
 * last image, "done"), br_job_fault (too many faults, "faulted"), the DELETE
 * of generate.c ("cancelled") and the lifecycle's expiry ("expired", only for
 * a request that had not ended before, so each request is reported once). */
#include "broker.h"

bool br_request_ended(const br_request *r) {
    if (r->state != BR_REQ_ACTIVE)
        return true;
    return r->n <= 0 && r->processing == 0 && r->finished >= r->jobs;
}

json_t *br_ended_info(broker *b, const br_request *r, const char *reason) {
    if (!br_hooked(b, HN_HOOK_ID_generation_ended) && !br_hooked(b, HN_HOOK_ID_generation_replay))
        return NULL;
    return json_pack("{s:s, s:I, s:s}", "id", r->id, "user_id", (json_int_t)r->user_id, "reason",
                     reason);
}
