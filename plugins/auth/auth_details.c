/* auth: UserDetails (see auth_details.h). */
#include "auth_details.h"

static json_t *zeros(const char *const *keys) {
    json_t *o = json_object();
    for (; *keys; keys++)
        json_object_set_new(o, *keys, json_integer(0));
    return o;
}

static json_t *records(void) {
    static const char *const things[] = {"megapixelsteps", "tokens", NULL};
    static const char *const amounts[] = {"image", "text", "interrogation", NULL};
    json_t *r = json_object();
    json_object_set_new(r, "usage", zeros(things));
    json_object_set_new(r, "contribution", zeros(things));
    json_object_set_new(r, "fulfillment", zeros(amounts));
    json_object_set_new(r, "request", zeros(amounts));
    return r;
}

json_t *auth_user_details(const auth_account *a, int privilege, int64_t now) {
    static const char *const kudos_keys[] = {"accumulated", "gifted",   "donated", "admin",
                                             "received",    "recurring", "awarded", "styled",
                                             NULL};
    static const char *const usage_keys[] = {"megapixelsteps", "requests", NULL};
    static const char *const contrib_keys[] = {"megapixelsteps", "fulfillments", NULL};
    uint32_t roles = a->user.roles;
    json_t *d = json_object();
    json_object_set_new(d, "username", json_string(a->user.username));
    json_object_set_new(d, "id", json_integer(a->user.id));
    json_object_set_new(d, "kudos", json_real(a->kudos));
    json_object_set_new(d, "kudos_details", zeros(kudos_keys));
    json_object_set_new(d, "usage", zeros(usage_keys));          /* obsolete in the horde */
    json_object_set_new(d, "contributions", zeros(contrib_keys)); /* obsolete in the horde */
    json_object_set_new(d, "records", records());
    json_object_set_new(d, "concurrency", json_integer(a->user.concurrency));
    json_object_set_new(d, "worker_invited", json_integer(a->worker_invited));
    json_object_set_new(d, "moderator", json_boolean(roles & HN_ROLE_MODERATOR));
    json_object_set_new(d, "trusted", json_boolean(roles & HN_ROLE_TRUSTED));
    json_object_set_new(d, "flagged", json_boolean(roles & HN_ROLE_FLAGGED));
    json_object_set_new(d, "pseudonymous", json_boolean(a->pseudonymous));
    json_object_set_new(d, "worker_count", json_integer(0));
    int64_t age = now - a->user.created;
    json_object_set_new(d, "account_age", json_integer(age > 0 ? age : 0));
    json_object_set_new(d, "service", json_boolean(roles & HN_ROLE_SERVICE));
    json_object_set_new(d, "education", json_boolean(roles & HN_ROLE_EDUCATION));
    json_object_set_new(d, "customizer", json_boolean(roles & HN_ROLE_CUSTOMIZER));
    json_object_set_new(d, "deleted", json_boolean(a->deleted));
    json_object_set_new(d, "styles", json_array());
    if (a->public_workers || privilege >= 1)
        json_object_set_new(d, "worker_ids", json_array());
    if (privilege >= 1) {
        json_object_set_new(d, "sharedkey_ids", json_array());
        if (a->contact[0])
            json_object_set_new(d, "contact", json_string(a->contact));
        json_object_set_new(d, "vpn", json_boolean(roles & HN_ROLE_VPN));
        json_object_set_new(d, "special", json_boolean(roles & HN_ROLE_SPECIAL));
        json_object_set_new(d, "active_generations", json_object());
    }
    if (privilege >= 2) {
        json_t *monthly = json_object();
        json_object_set_new(monthly, "amount", json_integer(a->monthly_kudos));
        json_object_set_new(d, "evaluating_kudos", json_integer(0));
        json_object_set_new(d, "monthly_kudos", monthly);
        json_object_set_new(d, "suspicious", json_integer(a->suspicion));
        if (a->admin_comment[0])
            json_object_set_new(d, "admin_comment", json_string(a->admin_comment));
        if (a->proxy_passkey[0])
            json_object_set_new(d, "proxy_passkey", json_string(a->proxy_passkey));
    }
    return d;
}
