/* ratings: the plugin glue: config, registrations, start/stop, and the small
 * helpers every file uses (ids, errors, authentication). See ratings.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "ratings.h"

static const hn_conf_spec rt_conf_spec[] = {
    {"ratings_per_image", HN_CONF_INT, offsetof(rt_conf, ratings_per_image), "5", 1, 1000, 0,
     "an image is served to raters until it has this many ratings (the horde aimed at 5)"},
    {"kudos_per_rating", HN_CONF_FLOAT, offsetof(rt_conf, kudos_per_rating), "5", 0, 1e6, 0,
     "kudos paid for each accepted rating (anonymous raters get none)"},
    {"captcha_every", HN_CONF_INT, offsetof(rt_conf, captcha_every), "10", 0, 1e6, 0,
     "every Nth image served to a rater is a captcha with a known answer (0: never)"},
    {"captcha_tolerance", HN_CONF_INT, offsetof(rt_conf, captcha_tolerance), "0", 0, 9, 0,
     "how far a captcha's rating may be from its answer and still pass"},
    {"captcha_fail_limit", HN_CONF_INT, offsetof(rt_conf, captcha_fail_limit), "2", 1, 1e6, 0,
     "failed captchas that time a rater out and leave their ratings out of exports"},
    {"timeout_s", HN_CONF_INT, offsetof(rt_conf, timeout_s), "86400", 1, 1e9, 0,
     "length of a rating timeout in seconds"},
    {"max_per_minute", HN_CONF_INT, offsetof(rt_conf, max_per_minute), "30", 1, 1e6, 0,
     "ratings per rater per minute; more are refused with 429"},
    {"max_pops_per_minute", HN_CONF_INT, offsetof(rt_conf, max_pops_per_minute), "60", 1, 1e6, 0,
     "images served per rater per minute; more are refused with 429"},
    {"min_rating_s", HN_CONF_INT, offsetof(rt_conf, min_rating_s), "2", 0, 3600, 0,
     "a rating sent sooner than this after its image was served counts as fast"},
    {"fast_limit", HN_CONF_INT, offsetof(rt_conf, fast_limit), "10", 1, 1e6, 0,
     "this many fast ratings in a row time a rater out"},
    {"divergence", HN_CONF_FLOAT, offsetof(rt_conf, divergence), "5", 0, 9, 0,
     "a rating this far from the mean of the image's other ratings is suspect"},
    {"divergence_min_ratings", HN_CONF_INT, offsetof(rt_conf, divergence_min_ratings), "3", 1,
     1000, 0, "other ratings an image needs before a rating of it can be suspect"},
    {"min_trust_ratings", HN_CONF_INT, offsetof(rt_conf, min_trust_ratings), "10", 1, 1e6, 0,
     "ratings a rater needs before suspect ratings lower their trust"},
    {"min_export_trust", HN_CONF_FLOAT, offsetof(rt_conf, min_export_trust), "0.5", 0, 1, 0,
     "ratings of raters whose trust is below this are left out of exports and means"},
    {"shared_dataset", HN_CONF_STRING, offsetof(rt_conf, shared_dataset), "horde-shared", 0, 0, 0,
     "name of the dataset that generations requested with shared: true go to"},
    {"export_salt", HN_CONF_STRING, offsetof(rt_conf, export_salt), "", 0, 0, HN_CONF_SECRET,
     "salt of the hashed user ids in exports (empty: one is made and kept in the data dir)"},
    {"export_license", HN_CONF_STRING, offsetof(rt_conf, export_license), "CC-BY-SA-4.0", 0, 0, 0,
     "licence named in the export's README"},
    HN_CONF_END,
};

int64_t rt_now(void) {
    return (int64_t)time(NULL);
}

void rt_uuid(char out[RT_ID_LEN]) {
    unsigned char b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
        /* getrandom on Linux does not fail for 16 bytes once booted; mix
         * the clock in rather than abort if it ever does */
        for (size_t i = 0; i < sizeof(b); i++)
            b[i] = (unsigned char)(rand() ^ (int)(clock() >> (i % 8)));
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, RT_ID_LEN, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
             b[13], b[14], b[15]);
}

bool rt_uuid_ok(const char *s) {
    if (!s || strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        char ch = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (ch != '-')
                return false;
        } else if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
                     (ch >= 'A' && ch <= 'F'))) {
            return false;
        }
    }
    return true;
}

void rt_fail(ratings *r, hn_request *req, int status, const char *rc, const char *fmt, ...) {
    hn_error err = {0};
    err.status = status;
    snprintf(err.rc, sizeof(err.rc), "%s", rc);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.message, sizeof(err.message), fmt, ap);
    va_end(ap);
    r->api->respond_error(req, &err);
}

bool rt_authenticate(ratings *r, hn_request *req, rt_rater *out) {
    memset(out, 0, sizeof(*out));
    out->user.size = sizeof(out->user);
    const char *apikey = r->api->req_header(req, "apikey");
    hn_error err = {0};
    hn_rc rc = hn_run_http_authenticate(r->api, req, apikey, &out->user, &err);
    if (rc == HN_DECLINED && (!apikey || !*apikey || strcmp(apikey, "0000000000") == 0)) {
        /* no auth plugin answered for the anonymous key: anonymous */
        memset(&out->user, 0, sizeof(out->user));
        out->user.size = sizeof(out->user);
        snprintf(out->user.username, sizeof(out->user.username), "Anonymous#0");
        rc = HN_OK;
    }
    if (rc != HN_OK && rc != HN_DONE) {
        if (rc == HN_DECLINED || !err.status)
            r->api->error(&err, 401, "InvalidAPIKey",
                          "No user matching sent API Key. Have you remembered to register?");
        r->api->respond_error(req, &err);
        return false;
    }
    if (out->user.id > 0) {
        snprintf(out->key, sizeof(out->key), "u:%lld", (long long)out->user.id);
    } else {
        /* anonymous raters are told apart by address */
        const char *ip = r->api->req_client_ip(req);
        snprintf(out->key, sizeof(out->key), "a:%.64s", ip ? ip : "?");
    }
    const char *agent = r->api->req_header(req, "Client-Agent");
    out->client_agent = agent && *agent ? agent : "unknown:0:unknown";
    return true;
}

void rt_image_url(ratings *r, const char *image_id, char *out, size_t len) {
    snprintf(out, len, "%s/api/v1/image/file/%s", r->api->public_url(), image_id);
}

bool rt_ready(ratings *r, hn_request *req) {
    if (r->started)
        return true;
    rt_fail(r, req, 503, "ServiceUnavailable", "The ratings service is starting.");
    return false;
}

static hn_rc rt_init(hn_plugin *self, const hn_api *api, void *confp, void **state,
                     hn_error *err) {
    ratings *r = calloc(1, sizeof(*r));
    if (!r)
        return api->error(err, 500, "OutOfMemory", "ratings: out of memory");
    r->self = self;
    r->api = api;
    r->conf = confp;
    if (rt_pool_register(r) != 0 || rt_api_v1_register(r) != 0 || rt_rate_own_register(r) != 0 ||
        rt_export_register(r) != 0 || rt_page_register(r) != 0) {
        free(r);
        return api->error(err, 500, "InitError", "ratings: a registration failed");
    }
    *state = r;
    return HN_OK;
}

static hn_rc rt_start(void *state, hn_error *err) {
    ratings *r = state;
    const hn_provider *p = r->api->provider_get("storage");
    if (!p)
        return r->api->error(err, 500, "ConfigError",
                             "ratings: no storage provider; load storage-sqlite (or storage-pg)");
    const hn_storage_vt *vt = p->vt;
    if (vt->size < sizeof(hn_storage_vt) || vt->version != HN_STORAGE_VERSION)
        return r->api->error(err, 500, "ConfigError",
                             "ratings: storage provider \"%s\" has interface version %u, "
                             "ratings needs %d",
                             p->name, (unsigned)vt->version, HN_STORAGE_VERSION);
    const hn_provider *ip = r->api->provider_get("images");
    if (!ip)
        return r->api->error(err, 500, "ConfigError",
                             "ratings: no images provider; load images-fs (or images-db)");
    const hn_images_vt *ivt = ip->vt;
    if (ivt->size < sizeof(hn_images_vt) || ivt->version != HN_IMAGES_VERSION)
        return r->api->error(err, 500, "ConfigError",
                             "ratings: images provider \"%s\" has interface version %u",
                             ip->name, (unsigned)ivt->version);
    r->db = vt;
    r->db_state = p->state;
    r->img = ivt;
    r->img_state = ip->state;
    if (rt_store_open(r, err) != HN_OK)
        return HN_ERROR;
    if (rt_dataset_ensure(r, r->conf->shared_dataset,
                          "Generations this node's users chose to share", false,
                          r->shared_dataset_id, err) != HN_OK)
        return HN_ERROR;
    r->started = true;
    return HN_OK;
}

static void rt_stop(void *state) {
    ratings *r = state;
    r->started = false;
}

static void rt_fini(void *state) {
    free(state);
}

static const hn_plugin_desc rt_desc = {
    HN_PLUGIN_DESC_INIT,
    .name = "ratings",
    .version = "1.0.0",
    .description = "aesthetic image ratings: the ratings API v1, an image pool of shared "
                   "generations and imported datasets, captchas and rater trust, kudos for "
                   "ratings, dataset export and a rating page",
    .conf = rt_conf_spec,
    .conf_size = sizeof(rt_conf),
    .init = rt_init,
    .start = rt_start,
    .stop = rt_stop,
    .fini = rt_fini,
};

HN_PLUGIN_EXPORT const hn_plugin_desc *hn_plugin_entry(void) { return &rt_desc; }
