/* ratings: what feeds the image pool.
 *
 * Shared generations: the broker's job_submitted info of a request made with
 * `shared: true` carries "shared", "prompt", "params" and "client_agent"
 * (plugins/broker/submit.c). The image (key "<job>.webp" in the images
 * provider) is copied to a key of its own, "ratings-<job>", because the
 * broker removes a request's images when the request expires; the pool
 * image's id is the job id, as the horde's ratings used the procgen id.
 *
 * Imports: `horde-node ratings import DIR`: DIR holds the images and a
 * metadata.jsonl (one JSON object a line) or metadata.json (an array) naming
 * each image's "file" and, optionally, "id", "prompt", "model", "seed",
 * "sampler", "width", "height", "steps", "cfg_scale" and, for a captcha
 * dataset (--captcha), its "expected_rating". */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ratings.h"

const char *rt_image_type(const void *data, size_t len) {
    const unsigned char *b = data;
    if (len >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0)
        return "image/webp";
    if (len >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0)
        return "image/png";
    if (len >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff)
        return "image/jpeg";
    return "application/octet-stream";
}

/* ---- shared generations ---------------------------------------------------------------- */

typedef struct share_work {
    ratings *r;
    json_t *info; /* owned copy of the hook's info */
} share_work;

static const char *jstr(const json_t *o, const char *key) {
    return json_string_value(json_object_get(o, key));
}

static void share_run(void *arg) {
    share_work *w = arg;
    ratings *r = w->r;
    hn_error err = {0};
    const char *job = jstr(w->info, "job");
    if (!r->started || !job || strlen(job) > 64)
        return;
    char src[96], dst[96];
    snprintf(src, sizeof(src), "%s.webp", job);
    snprintf(dst, sizeof(dst), "ratings-%s", job);
    void *data = NULL;
    size_t len = 0;
    if (r->img->get(r->img_state, src, &data, &len, &err) != HN_OK) {
        r->api->log(r->self, HN_LOG_WARN, "shared image %s not found: %s", src, err.message);
        return;
    }
    hn_rc rc = r->img->put(r->img_state, dst, data, len, &err);
    free(data);
    if (rc != HN_OK) {
        r->api->log(r->self, HN_LOG_WARN, "cannot keep shared image %s: %s", src, err.message);
        return;
    }
    const json_t *params = json_object_get(w->info, "params");
    char seed[32];
    snprintf(seed, sizeof(seed), "%lld",
             (long long)json_integer_value(json_object_get(w->info, "seed")));
    rt_image im = {0};
    snprintf(im.id, sizeof(im.id), "%s", job);
    im.dataset_id = r->shared_dataset_id;
    im.image_key = dst;
    im.source = "shared";
    im.request_id = jstr(w->info, "request");
    im.job_id = job;
    im.user_id = json_integer_value(json_object_get(w->info, "user_id"));
    im.prompt = jstr(w->info, "prompt");
    im.model = jstr(w->info, "model");
    im.seed = seed;
    im.sampler = jstr(params, "sampler_name");
    im.client_agent = jstr(w->info, "client_agent");
    im.width = (int)json_integer_value(json_object_get(params, "width"));
    im.height = (int)json_integer_value(json_object_get(params, "height"));
    im.steps = (int)json_integer_value(json_object_get(params, "steps"));
    im.cfg_scale = json_number_value(json_object_get(params, "cfg_scale"));
    if (rt_image_insert(r, &im, &err) != HN_OK)
        r->api->log(r->self, HN_LOG_WARN, "cannot add shared image %s: %s", job, err.message);
}

static void share_done(void *arg) {
    share_work *w = arg;
    json_decref(w->info);
    free(w);
}

static hn_rc on_job_submitted(void *state, const json_t *info) {
    ratings *r = state;
    if (!json_is_true(json_object_get(info, "shared")) ||
        json_is_true(json_object_get(info, "censored")))
        return HN_OK; /* censored images are black squares: nothing to rate */
    share_work *w = calloc(1, sizeof(*w));
    if (!w)
        return HN_OK;
    w->r = r;
    w->info = json_deep_copy(info);
    /* the copy and the insert block: off the broker's thread */
    if (!w->info || r->api->work_submit(share_run, share_done, w) != 0)
        share_done(w);
    return HN_OK;
}

/* ---- imports ----------------------------------------------------------------------------- */

static void *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap)
            break;
        char *bigger = realloc(buf, cap * 2 + 1);
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        *len = n;
    }
    return buf;
}

/* The metadata as an array of objects, or NULL with a message. */
static json_t *read_metadata(const char *dir, char *msg, size_t msg_len) {
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/metadata.jsonl", dir);
    size_t len;
    char *text = read_file(path, &len);
    json_error_t jerr;
    if (text) {
        json_t *all = json_array();
        int line = 0;
        for (char *s = text, *next; s && *s; s = next) {
            next = strchr(s, '\n');
            if (next)
                *next++ = 0;
            line++;
            if (strspn(s, " \t\r") == strlen(s))
                continue;
            json_t *o = json_loads(s, 0, &jerr);
            if (!json_is_object(o)) {
                snprintf(msg, msg_len, "%.300s:%d: not a JSON object (%.200s)", path, line,
                     jerr.text);
                json_decref(o);
                json_decref(all);
                free(text);
                return NULL;
            }
            json_array_append_new(all, o);
        }
        free(text);
        return all;
    }
    snprintf(path, sizeof(path), "%s/metadata.json", dir);
    json_t *all = json_load_file(path, 0, &jerr);
    if (!json_is_array(all)) {
        snprintf(msg, msg_len, "%.300s/metadata.jsonl or metadata.json: %.200s", dir,
                 all ? "not an array" : jerr.text);
        json_decref(all);
        return NULL;
    }
    return all;
}

static int import_usage(void) {
    fprintf(stderr, "usage: horde-node ratings import DIR [--dataset NAME] [--description TEXT] "
                    "[--captcha]\n");
    return 2;
}

int rt_import(ratings *r, int argc, char **argv) {
    const char *dir = NULL, *name = NULL, *description = "";
    bool captcha = false;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--dataset") == 0 && i + 1 < argc)
            name = argv[++i];
        else if (strcmp(argv[i], "--description") == 0 && i + 1 < argc)
            description = argv[++i];
        else if (strcmp(argv[i], "--captcha") == 0)
            captcha = true;
        else if (argv[i][0] != '-' && !dir)
            dir = argv[i];
        else
            return import_usage();
    }
    if (!dir)
        return import_usage();
    if (!name) { /* the folder's name */
        const char *slash = strrchr(dir, '/');
        name = slash && slash[1] ? slash + 1 : dir;
    }
    char msg[600];
    json_t *all = read_metadata(dir, msg, sizeof(msg));
    if (!all) {
        fprintf(stderr, "ratings import: %s\n", msg);
        return 1;
    }
    hn_error err = {0};
    char dataset[RT_ID_LEN];
    if (rt_dataset_ensure(r, name, description, captcha, dataset, &err) != HN_OK) {
        fprintf(stderr, "ratings import: %s\n", err.message);
        json_decref(all);
        return 1;
    }
    size_t i, done = 0;
    json_t *m;
    int status = 0;
    json_array_foreach(all, i, m) {
        const char *file = jstr(m, "file");
        long long expected = json_integer_value(json_object_get(m, "expected_rating"));
        if (!file || strchr(file, '/') || (captcha && (expected < 1 || expected > 10))) {
            fprintf(stderr, "ratings import: entry %zu: needs \"file\" (a name in DIR)%s\n", i + 1,
                    captcha ? " and \"expected_rating\" 1..10" : "");
            status = 1;
            continue;
        }
        char path[PATH_MAX], key[96], seed[64];
        snprintf(path, sizeof(path), "%s/%s", dir, file);
        size_t len;
        void *data = read_file(path, &len);
        if (!data || len == 0) {
            fprintf(stderr, "ratings import: %s: %s\n", path, data ? "empty" : strerror(errno));
            free(data);
            status = 1;
            continue;
        }
        rt_image im = {0};
        const char *id = jstr(m, "id");
        if (id && rt_uuid_ok(id))
            snprintf(im.id, sizeof(im.id), "%s", id);
        else
            rt_uuid(im.id);
        snprintf(key, sizeof(key), "ratings-%s", im.id);
        const json_t *sv = json_object_get(m, "seed");
        if (json_is_integer(sv))
            snprintf(seed, sizeof(seed), "%lld", (long long)json_integer_value(sv));
        else
            snprintf(seed, sizeof(seed), "%.60s", json_is_string(sv) ? json_string_value(sv) : "");
        im.dataset_id = dataset;
        im.image_key = key;
        im.source = captcha ? "captcha" : "import";
        im.prompt = jstr(m, "prompt");
        im.model = jstr(m, "model");
        im.seed = seed;
        im.sampler = jstr(m, "sampler");
        im.width = (int)json_integer_value(json_object_get(m, "width"));
        im.height = (int)json_integer_value(json_object_get(m, "height"));
        im.steps = (int)json_integer_value(json_object_get(m, "steps"));
        im.cfg_scale = json_number_value(json_object_get(m, "cfg_scale"));
        im.expected_rating = captcha ? (int)expected : 0;
        hn_rc rc = r->img->put(r->img_state, key, data, len, &err);
        free(data);
        if (rc != HN_OK || rt_image_insert(r, &im, &err) != HN_OK) {
            fprintf(stderr, "ratings import: %s: %s\n", file, err.message);
            status = 1;
            continue;
        }
        done++;
    }
    json_decref(all);
    printf("imported %zu image%s into dataset %s (%s)\n", done, done == 1 ? "" : "s", name,
           dataset);
    return status;
}

int rt_pool_register(ratings *r) {
    return hn_hook_add_job_submitted(r->api, r->self, on_job_submitted, r, NULL);
}
