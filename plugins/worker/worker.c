/* worker: the plugin glue. Config schema (the public worker's key names where
 * one exists, spec/worker.md §1), checks the schema cannot express, the two
 * `horde` providers, the status route and timer, the `worker` command, and
 * the lifecycle: start picks the horde and the generator and starts the
 * threads (job_loop.c); stop finishes what runs and joins them. */
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "http_client.h"
#include "worker.h"

#define OFF(f) offsetof(wk_conf, f)

static const hn_conf_spec wk_schema[] = {
    /* identity and horde */
    {"api_key", HN_CONF_STRING, OFF(api_key), NULL, 0, 0, HN_CONF_SECRET,
     "API key of the worker's owner (22 characters). Needed for the remote horde; with the "
     "local horde the node-owner user's key is made on first start when this is unset"},
    {"horde_url", HN_CONF_STRING, OFF(horde_url), "https://aihorde.net/api/", 0, 0, 0,
     "the remote horde's API base (a horde-node broker: http://HOST:PORT/api/)"},
    {"dreamer_name", HN_CONF_STRING, OFF(dreamer_name), NULL, 0, 0, 0,
     "worker name, unique on the horde (default: \"horde-node <host name>\")"},
    {"priority_usernames", HN_CONF_STRING_LIST, OFF(priority_usernames), NULL, 0, 0, 0,
     "users (alias#id) whose requests this worker takes first"},
    {"owner_name", HN_CONF_STRING, OFF(owner_name), "node-owner", 0, 0, 0,
     "local horde without api_key: alias of the node-owner user the worker runs as"},
    /* what to pop */
    {"models_to_load", HN_CONF_STRING_LIST, OFF(models_to_load), NULL, 0, 0, 0,
     "reference model names or meta instructions (all, all sd15, top N, ...); local "
     "checkpoints are offered anyway"},
    {"models_to_skip", HN_CONF_STRING_LIST, OFF(models_to_skip), NULL, 0, 0, 0,
     "model names never offered"},
    {"max_power", HN_CONF_INT, OFF(max_power), "8", 1, 512, 0,
     "largest image: max_pixels = max_power * 8 * 64 * 64 (8: 512x512, 32: 1024x1024)"},
    {"max_threads", HN_CONF_INT, OFF(max_threads), "1", 1, 16, 0,
     "jobs generated at the same time (pop field threads)"},
    {"queue_size", HN_CONF_INT, OFF(queue_size), "1", 0, 4, 0,
     "jobs popped ahead and held locally"},
    {"max_batch", HN_CONF_INT, OFF(max_batch), "1", 1, 20, 0,
     "images popped together and generated as one batch (pop field amount)"},
    {"nsfw", HN_CONF_BOOL, OFF(nsfw), "true", 0, 0, 0, "accept NSFW requests"},
    {"blacklist", HN_CONF_STRING_LIST, OFF(blacklist), NULL, 0, 0, 0,
     "words: requests whose prompt has one are not given to this worker"},
    {"allow_img2img", HN_CONF_BOOL, OFF(allow_img2img), "true", 0, 0, 0, "img2img jobs"},
    {"allow_painting", HN_CONF_BOOL, OFF(allow_painting), "true", 0, 0, 0,
     "inpainting and outpainting jobs"},
    {"allow_post_processing", HN_CONF_BOOL, OFF(allow_post_processing), "false", 0, 0, 0,
     "upscaler/face-fixer jobs (the generator has none yet: keep false)"},
    {"allow_controlnet", HN_CONF_BOOL, OFF(allow_controlnet), "false", 0, 0, 0,
     "ControlNet jobs (not supported by cuda-sd yet)"},
    {"allow_sdxl_controlnet", HN_CONF_BOOL, OFF(allow_sdxl_controlnet), "false", 0, 0, 0,
     "SDXL ControlNet jobs"},
    {"allow_lora", HN_CONF_BOOL, OFF(allow_lora), "false", 0, 0, 0, "LoRA and TI jobs"},
    {"allow_unsafe_ip", HN_CONF_BOOL, OFF(allow_unsafe_ip), "true", 0, 0, 0,
     "requests from VPN/unsafe IPs (pop field allow_unsafe_ipaddr)"},
    {"require_upfront_kudos", HN_CONF_BOOL, OFF(require_upfront_kudos), "false", 0, 0, 0,
     "only requests whose user already has the kudos"},
    {"extra_slow_worker", HN_CONF_BOOL, OFF(extra_slow_worker), "false", 0, 0, 0,
     "a slow worker: only requests that opted in, TTL x3"},
    {"limit_max_steps", HN_CONF_BOOL, OFF(limit_max_steps), "false", 0, 0, 0,
     "skip requests with more steps than the model's average"},
    {"load_large_models", HN_CONF_BOOL, OFF(load_large_models), "false", 0, 0, 0,
     "let meta instructions (all, top N) include Stable Cascade and Flux"},
    {"remove_maintenance_on_init", HN_CONF_BOOL, OFF(remove_maintenance_on_init), "false", 0, 0,
     0, "take the worker out of maintenance mode at start"},
    /* models */
    {"cache_home", HN_CONF_STRING, OFF(cache_home), "models", 0, 0, 0,
     "models folder (relative to the data dir): local checkpoints in it, reference downloads "
     "in compvis/, the CLIP vocabulary in clip/"},
    {"model_reference", HN_CONF_STRING, OFF(model_reference), NULL, 0, 0, 0,
     "the horde's stable_diffusion.json: a path (relative to the config file) or an http(s) "
     "URL; unset: only local checkpoints"},
    {"civitai_api_token", HN_CONF_STRING, OFF(civitai_api_token), NULL, 0, 0, HN_CONF_SECRET,
     "appended as ?token= to civitai.com downloads"},
    {"clip_vocab_url", HN_CONF_STRING, OFF(clip_vocab_url),
     "https://github.com/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz", 0, 0, 0,
     "where the CLIP vocabulary is fetched from when cache_home/clip/ lacks it (\"\": never)"},
    {"clip_vocab_sha256", HN_CONF_STRING, OFF(clip_vocab_sha256),
     "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a", 0, 0, 0,
     "sha256 the fetched vocabulary must have (\"\": not checked)"},
    {"max_models_in_ram", HN_CONF_INT, OFF(max_models_in_ram), "1", 1, 64, 0,
     "loaded models the generator may keep in RAM"},
    {"max_models_in_vram", HN_CONF_INT, OFF(max_models_in_vram), "1", 1, 64, 0,
     "loaded models the generator may keep in VRAM"},
    {"download_retries", HN_CONF_INT, OFF(download_retries), "5", 1, 100, 0,
     "tries per model file, each resuming the last"},
    /* pacing */
    {"stats_output_frequency", HN_CONF_INT, OFF(stats_output_frequency), "30", 0, 86400, 0,
     "seconds between status lines in the log (0: none)"},
    {"pop_interval_ms", HN_CONF_INT, OFF(pop_interval_ms), "1000", 20, 60000, 0,
     "wait after a pop that found no job"},
    {"max_backoff_s", HN_CONF_INT, OFF(max_backoff_s), "60", 1, 3600, 0,
     "longest wait between pops while the horde is down or refuses"},
    {"request_timeout_s", HN_CONF_INT, OFF(request_timeout_s), "40", 1, 600, 0,
     "timeout of one horde API call"},
    {"stop_timeout_s", HN_CONF_INT, OFF(stop_timeout_s), "120", 0, 86400, 0,
     "on stop, how long running jobs may take to finish before they are cancelled"},
    HN_CONF_END,
};

int64_t wk_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool wk_sleep(wk_state *w, int64_t ms) {
    pthread_mutex_lock(&w->lock);
    int64_t until = wk_now_ms() + ms;
    while (!w->stopping) {
        int64_t now = wk_now_ms();
        if (now >= until)
            break;
        struct timespec ts = {until / 1000, (long)(until % 1000) * 1000000L};
        pthread_cond_timedwait(&w->cond, &w->lock, &ts);
    }
    bool stopping = w->stopping;
    pthread_mutex_unlock(&w->lock);
    return stopping;
}

/* ---- config checks the schema cannot express ----------------------------------- */

static hn_rc bad(const hn_api *api, hn_error *err, const char *key, const char *fmt,
                 const char *value) {
    char msg[400], path[128], where[300] = "";
    snprintf(msg, sizeof msg, fmt, value);
    snprintf(path, sizeof path, "plugins.worker.%s", key);
    /* file:line of the offending value, where the node can tell */
    if (HN_API_HAS(api, conf_where) && api->conf_where(path, where + 2, sizeof where - 3) == 0) {
        where[0] = ' ';
        where[1] = '(';
        strcat(where, ")");
    }
    return api->error(err, 500, "BadConfig", "%s: %s%s", path, msg, where);
}

static bool url_ok(const char *u) {
    const char *host = strncmp(u, "http://", 7) == 0    ? u + 7
                       : strncmp(u, "https://", 8) == 0 ? u + 8
                                                        : NULL;
    return host && *host && *host != '/' && *host != ':' && !strpbrk(u, " \t\r\n");
}

static bool printable(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

static hn_rc check_conf(const hn_api *api, const wk_conf *c, hn_error *err) {
    if (c->api_key) {
        size_t n = strlen(c->api_key);
        bool chars = true;
        for (const char *p = c->api_key; *p; p++)
            chars = chars && (isalnum((unsigned char)*p) || *p == '-' || *p == '_');
        if (strcmp(c->api_key, "0000000000") == 0)
            return bad(api, err, "api_key", "%sthe anonymous key cannot run a worker (the horde "
                                            "refuses anonymous workers)", "");
        if (n != 22 || !chars)
            return bad(api, err, "api_key", "%smust be a 22-character API key", "");
    }
    if (!c->horde_url || !url_ok(c->horde_url))
        return bad(api, err, "horde_url", "\"%s\" is not an http:// or https:// URL with a host",
                   c->horde_url ? c->horde_url : "");
    if (c->dreamer_name &&
        (!c->dreamer_name[0] || strlen(c->dreamer_name) > 100 || !printable(c->dreamer_name)))
        return bad(api, err, "dreamer_name",
                   "\"%s\" must be 1 to 100 printable characters", c->dreamer_name);
    const char *o = c->owner_name ? c->owner_name : "";
    if (strlen(o) < 3 || strlen(o) > 30 || strchr(o, '#') || !printable(o))
        return bad(api, err, "owner_name",
                   "\"%s\" must be 3 to 30 printable characters without '#'", o);
    const char **lists[] = {c->models_to_load, c->models_to_skip, c->blacklist,
                            c->priority_usernames};
    const char *names[] = {"models_to_load", "models_to_skip", "blacklist", "priority_usernames"};
    for (size_t l = 0; l < 4; l++)
        for (size_t i = 0; lists[l] && lists[l][i]; i++)
            if (!lists[l][i][0] || strlen(lists[l][i]) > 255 || !printable(lists[l][i]))
                return bad(api, err, names[l], "entry \"%s\" must be 1 to 255 printable characters",
                           lists[l][i]);
    for (size_t i = 0; c->priority_usernames && c->priority_usernames[i]; i++) {
        const char *hash = strrchr(c->priority_usernames[i], '#');
        char *end = NULL;
        if (!hash || !hash[1] || (strtoll(hash + 1, &end, 10), *end != '\0'))
            return bad(api, err, "priority_usernames", "\"%s\" is not alias#id",
                       c->priority_usernames[i]);
    }
    if (!c->cache_home || !c->cache_home[0])
        return bad(api, err, "cache_home", "%smust name a folder", "");
    if (c->model_reference && !c->model_reference[0])
        return bad(api, err, "model_reference", "%sis empty (leave it out for none)", "");
    if (c->model_reference && strstr(c->model_reference, "://") && !url_ok(c->model_reference))
        return bad(api, err, "model_reference", "\"%s\" is not an http(s) URL",
                   c->model_reference);
    if (c->clip_vocab_url && c->clip_vocab_url[0] && !url_ok(c->clip_vocab_url))
        return bad(api, err, "clip_vocab_url", "\"%s\" is not an http(s) URL", c->clip_vocab_url);
    if (c->clip_vocab_sha256 && c->clip_vocab_sha256[0]) {
        bool hex = strlen(c->clip_vocab_sha256) == 64;
        for (const char *p = c->clip_vocab_sha256; hex && *p; p++)
            hex = isxdigit((unsigned char)*p);
        if (!hex)
            return bad(api, err, "clip_vocab_sha256", "\"%s\" is not 64 hex digits",
                       c->clip_vocab_sha256);
    }
    return HN_OK;
}

/* ---- lifecycle ----------------------------------------------------------------------- */

static void wk_free(wk_state *w) {
    if (!w)
        return;
    wk_horde_remote_free(w->remote);
    wk_horde_local_free(w->local);
    for (size_t i = 0; i < w->n_models; i++) {
        free(w->models[i].name);
        free(w->models[i].path);
    }
    free(w->models);
    wk_reference_free(&w->ref);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

static int join_path(char *out, size_t len, const char *base, const char *path) {
    int n = path[0] == '/' ? snprintf(out, len, "%s", path) : snprintf(out, len, "%s/%s", base, path);
    return n > 0 && (size_t)n < len ? 0 : -1;
}

static hn_rc wk_init(hn_plugin *self, const hn_api *api, void *confp, void **state,
                     hn_error *err) {
    const wk_conf *c = confp;
    if (check_conf(api, c, err) != HN_OK)
        return HN_ERROR;
    if (wk_http_global_init() != 0)
        return api->error(err, 500, "InitError", "worker: libcurl could not be initialised");
    wk_state *w = calloc(1, sizeof *w);
    if (!w)
        return api->error(err, 500, "OutOfMemory", "worker: out of memory");
    w->self = self;
    w->api = api;
    w->conf = c;
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* timed waits use wk_now_ms */
    pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);
    w->is_tty = isatty(STDERR_FILENO) == 1;
    wk_copy(w->data_dir, sizeof w->data_dir, api->data_dir ? api->data_dir() : ".");
    if (join_path(w->cache_home, sizeof w->cache_home, w->data_dir, c->cache_home) != 0) {
        wk_free(w);
        return api->error(err, 500, "BadConfig", "plugins.worker.cache_home: path too long");
    }
    if (c->dreamer_name) {
        wk_copy(w->name, sizeof w->name, c->dreamer_name);
    } else {
        char host[128] = "localhost";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        snprintf(w->name, sizeof w->name, "horde-node %s", host);
    }
    snprintf(w->bridge_agent, sizeof w->bridge_agent, "%s:%s:%s", WK_BRIDGE_NAME,
             api->version ? api->version() : "0", WK_PROJECT_URL);
    char errbuf[256];
    w->remote = wk_horde_remote_new(c->horde_url, w->bridge_agent, (long)c->request_timeout_s,
                                    errbuf, sizeof errbuf);
    w->local = wk_horde_local_new(api, w->bridge_agent);
    if (!w->remote || !w->local) {
        bool oom = w->remote != NULL;
        wk_free(w);
        return api->error(err, 500, "InitError", "worker: %s", oom ? "out of memory" : errbuf);
    }
    *state = w;
    int rc = 0;
    rc |= api->provider_add(self, "horde", "remote", HN_HORDE_VERSION, &wk_horde_remote_vt,
                            w->remote);
    rc |= api->provider_add(self, "horde", "local", HN_HORDE_VERSION, &wk_horde_local_vt,
                            w->local);
    rc |= api->route_add(self, HN_GET, "/api/v2/node/worker", wk_status_route, w);
    rc |= api->command_add(self, "worker", wk_command_usage, 0, wk_command, w);
    if (c->stats_output_frequency > 0)
        rc |= api->timer_add(self, (unsigned)(c->stats_output_frequency * 1000), wk_status_timer,
                             w);
    if (rc != 0)
        return api->error(err, 500, "InitError", "worker: a registration failed");
    return HN_OK;
}

static hn_rc wk_start(void *state, hn_error *err) {
    wk_state *w = state;
    const hn_api *api = w->api;
    const hn_provider *g = api->provider_get("generator");
    if (!g)
        return api->error(err, 500, "ConfigError",
                          "worker: no generator provider; load cuda-sd (or another generator)");
    w->gen = g->vt;
    w->gen_state = g->state;
    if (w->gen->size < offsetof(hn_generator_vt, result_free) + sizeof(w->gen->result_free) ||
        w->gen->version != HN_GENERATOR_VERSION)
        return api->error(err, 500, "ConfigError",
                          "worker: generator \"%s\" has an incompatible interface (version %u)",
                          g->name, w->gen->version);
    const hn_provider *h = api->provider_get("horde");
    if (!h)
        return api->error(err, 500, "ConfigError",
                          "worker: no horde chosen: set providers.horde = \"remote\" (a horde "
                          "over HTTP, horde_url) or \"local\" (the broker of this node)");
    w->horde = h->vt;
    w->horde_state = h->state;
    w->horde_is_local = h->vt == &wk_horde_local_vt;
    if (w->horde_is_local && !HN_API_HAS(api, local_request))
        return api->error(err, 500, "ConfigError",
                          "worker: this node cannot make in-process requests (local horde)");
    if (!w->horde_is_local && !w->conf->api_key)
        return api->error(err, 500, "ConfigError",
                          "worker: plugins.worker.api_key is required with a remote horde (%s)",
                          w->conf->horde_url);
    if (w->conf->api_key)
        wk_copy(w->apikey, sizeof w->apikey, w->conf->api_key);
    w->stats.started_ms = wk_now_ms();
    return wk_threads_start(w, err);
}

static void wk_stop(void *state) {
    wk_threads_stop(state);
}

static void wk_fini(void *state) {
    wk_free(state);
}

static const hn_plugin_desc wk_desc = {
    HN_PLUGIN_DESC_INIT,
    .name = "worker",
    .version = "0.1.0",
    .description = "the horde worker: pops jobs from a horde (remote or local), generates them "
                   "with the generator provider, uploads WebP, manages model files",
    .conf = wk_schema,
    .conf_size = sizeof(wk_conf),
    .init = wk_init,
    .start = wk_start,
    .stop = wk_stop,
    .fini = wk_fini,
};

HN_PLUGIN_EXPORT const hn_plugin_desc *hn_plugin_entry(void) {
    return &wk_desc;
}
