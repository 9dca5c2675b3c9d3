/* worker: the model table and model files.
 *
 * Which models exist (local checkpoints in cache_home, reference models of
 * models_to_load in cache_home/compvis, the generator's own), where their
 * files stand, the download thread (resume, sha256, progress bar), the CLIP
 * vocabulary, and what the generator is told (configure).
 *
 * The table lives in wk_state under `lock`. The download thread never keeps
 * a pointer into it across an unlock: it copies what it needs and finds the
 * entry again by name, because a refresh may replace the table meanwhile.
 * The reference (w->ref) is loaded once, before any thread reads it, and is
 * immutable afterwards. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http_client.h"
#include "worker.h"

static int make_dir(const char *path) {
    return mkdir(path, 0755) == 0 || errno == EEXIST ? 0 : -1;
}

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* ---- the reference ------------------------------------------------------------- */

static int read_file(const char *path, char **data, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) {
                free(buf);
                buf = NULL;
            } else {
                buf = b;
            }
        }
    }
    fclose(f);
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    *data = buf;
    *len = n;
    return 0;
}

int wk_reference_load(wk_state *w, char *err, size_t errlen) {
    const char *spec = w->conf->model_reference;
    if (!spec)
        return 1;
    char path[PATH_MAX + 64];
    char *data = NULL;
    size_t len = 0;
    if (strncmp(spec, "http://", 7) == 0 || strncmp(spec, "https://", 8) == 0) {
        /* fetched at every start, cached for when the network is down */
        char dir[PATH_MAX + 32];
        snprintf(dir, sizeof dir, "%s/horde_model_reference", w->cache_home);
        make_dir(w->cache_home);
        make_dir(dir);
        snprintf(path, sizeof path, "%s/stable_diffusion.json", dir);
        wk_http_req req = {.method = "GET", .url = spec, .timeout_s = 60};
        int status = 0;
        char *resp = NULL;
        size_t resp_len = 0;
        char herr[512] = "";
        if (wk_http_do(&req, &status, &resp, &resp_len, herr, sizeof herr) == 0 && status == 200) {
            json_t *probe = json_loadb(resp, resp_len, 0, NULL);
            if (json_is_object(probe)) {
                char tmp[PATH_MAX + 80];
                snprintf(tmp, sizeof tmp, "%s.tmp", path);
                FILE *f = fopen(tmp, "wb");
                if (f && fwrite(resp, 1, resp_len, f) == resp_len && fclose(f) == 0)
                    rename(tmp, path);
                else if (f)
                    fclose(f);
            }
            json_decref(probe);
        } else {
            w->api->log(w->self, HN_LOG_WARN, "model reference %s: %s; using the cached copy",
                        spec, herr[0] ? herr : "not HTTP 200");
        }
        free(resp);
    } else if (spec[0] == '/') {
        wk_copy(path, sizeof path, spec);
    } else {
        const char *cd = w->api->config_dir ? w->api->config_dir() : ".";
        snprintf(path, sizeof path, "%s/%s", cd ? cd : ".", spec);
    }
    if (read_file(path, &data, &len, err, errlen) != 0)
        return -1;
    json_error_t je;
    json_t *root = json_loadb(data, len, 0, &je);
    free(data);
    if (!root) {
        snprintf(err, errlen, "%s:%d: not JSON: %s", path, je.line, je.text);
        return -1;
    }
    int rc = wk_reference_parse(root, &w->ref, err, errlen);
    json_decref(root);
    if (rc == 0)
        w->have_ref = true;
    return rc;
}

/* ---- progress --------------------------------------------------------------------- */

typedef struct dl_progress {
    wk_state *w;
    const char *model;     /* table entry to update, by name */
    const char *label;     /* what the bar shows */
    bool print;            /* draw a bar on stderr */
    int64_t last_draw_ms, start_ms;
    uint64_t start_bytes;
} dl_progress;

static void human(char *buf, size_t len, double bytes) {
    static const char *const units[] = {"B", "KB", "MB", "GB", "TB"};
    int u = 0;
    while (bytes >= 1000 && u < 4) {
        bytes /= 1000;
        u++;
    }
    snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
}

static void draw_bar(dl_progress *p, uint64_t done, uint64_t total, bool final) {
    int64_t now = wk_now_ms();
    if (!final && now - p->last_draw_ms < 250)
        return;
    p->last_draw_ms = now;
    char bar[64], a[32], b[32], rate[32];
    double frac = total ? (double)done / (double)total : 0;
    wk_progress_bar(bar, sizeof bar, 30, frac);
    human(a, sizeof a, (double)done);
    human(b, sizeof b, (double)total);
    double secs = (double)(now - p->start_ms) / 1000.0;
    human(rate, sizeof rate, secs > 0 ? (double)(done - p->start_bytes) / secs : 0);
    fprintf(stderr, "\r%-.40s %s %3.0f%% %s/%s %s/s   %s", p->label, bar, frac * 100, a,
            total ? b : "?", rate, final ? "\n" : "");
    fflush(stderr);
}

static int on_progress(void *ud, uint64_t done, uint64_t total) {
    dl_progress *p = ud;
    wk_state *w = p->w;
    pthread_mutex_lock(&w->lock);
    bool stop = w->stopping;
    for (size_t i = 0; p->model && i < w->n_models; i++) {
        if (strcmp(w->models[i].name, p->model) == 0) {
            w->models[i].done = done;
            w->models[i].total = total;
        }
    }
    pthread_mutex_unlock(&w->lock);
    if (p->print)
        draw_bar(p, done, total, false);
    return stop ? 1 : 0;
}

/* ---- one model's files ---------------------------------------------------------------- */

/* A download URL with the civitai token added when configured. */
static void download_url(const wk_state *w, const char *url, char *out, size_t len) {
    const char *tok = w->conf->civitai_api_token;
    if (tok && tok[0] && strstr(url, "civitai.com/"))
        snprintf(out, len, "%s%ctoken=%s", url, strchr(url, '?') ? '&' : '?', tok);
    else
        wk_copy(out, len, url);
}

/* Verifies or fetches every weight file of m into compvis/. 0 or -1 with err.
 * `model` names the table entry to update (may be NULL). */
static int fetch_model(wk_state *w, const wk_ref_model *m, const char *model, bool print,
                       char *err, size_t errlen) {
    char dir[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/compvis", w->cache_home);
    if (make_dir(w->cache_home) != 0 || make_dir(dir) != 0) {
        snprintf(err, errlen, "cannot create %.300s: %s", dir, strerror(errno));
        return -1;
    }
    if (m->n_weights == 0) {
        snprintf(err, errlen, "the model reference lists no weight file for it");
        return -1;
    }
    for (size_t i = 0; i < m->n_files; i++) {
        const wk_ref_file *f = &m->files[i];
        char dest[PATH_MAX + 300];
        snprintf(dest, sizeof dest, "%s/%s", dir, f->path);
        if (file_exists(dest)) {
            if (!f->sha256)
                continue; /* nothing to check it against */
            int v;
            if (f->weight) {
                v = wk_verify_file(dest, f->sha256, err, errlen);
            } else {
                /* companions are small: hashed each time, no sidecar (a yaml
                 * "x.yaml" beside "x.ckpt" would share its "x.sha256") */
                char hex[65];
                v = wk_sha256_file(dest, hex, err, errlen) != 0 ? -1
                    : strcmp(hex, f->sha256) == 0             ? 1
                                                              : 0;
                if (v == 0)
                    snprintf(err, errlen, "%.300s: sha256 is %s, the reference says %s", dest, hex,
                             f->sha256);
            }
            if (v == 1)
                continue;
            if (v < 0)
                return -1;
            /* corrupt or replaced upstream: fetch it again */
            w->api->log(w->self, HN_LOG_WARN, "%s: %s; downloading it again", m->name, err);
            unlink(dest);
            if (f->weight) {
                char side[PATH_MAX + 320];
                wk_sidecar_path(dest, side, sizeof side);
                unlink(side);
            }
        }
        if (!f->url) {
            snprintf(err, errlen, "%s is missing and the reference gives no URL for it", f->path);
            return -1;
        }
        char url[4096];
        download_url(w, f->url, url, sizeof url);
        w->api->log(w->self, HN_LOG_INFO, "downloading %s (%s) from %s", m->name, f->path, f->url);
        dl_progress p = {.w = w, .model = model, .label = m->name, .print = print,
                         .start_ms = wk_now_ms()};
        char part[PATH_MAX + 320];
        snprintf(part, sizeof part, "%s.part", dest);
        struct stat st;
        p.start_bytes = stat(part, &st) == 0 ? (uint64_t)st.st_size : 0;
        wk_download_opts o = {.url = url,
                              .dest = dest,
                              .sha256 = f->sha256,
                              .attempts = (int)w->conf->download_retries,
                              .stall_s = 20,
                              .retry_delay_ms = 2000,
                              .no_sidecar = !f->weight,
                              .progress = on_progress,
                              .ud = &p};
        wk_dl_rc rc = wk_download(&o, err, errlen);
        if (print) {
            struct stat fs;
            uint64_t have = stat(rc == WK_DL_OK ? dest : part, &fs) == 0 ? (uint64_t)fs.st_size : 0;
            draw_bar(&p, have, rc == WK_DL_OK ? have : 0, true);
        }
        if (rc != WK_DL_OK) {
            if (rc == WK_DL_ABORTED)
                snprintf(err, errlen, "download stopped (the worker is stopping)");
            return -1;
        }
        w->api->log(w->self, HN_LOG_INFO, "downloaded %s (%s), sha256 verified", m->name, f->path);
    }
    return 0;
}

static char *checkpoint_of(const wk_state *w, const wk_ref_model *m) {
    if (m->n_weights == 0)
        return NULL;
    char path[PATH_MAX + 300];
    snprintf(path, sizeof path, "%s/compvis/%s", w->cache_home, m->files[0].path);
    return strdup(path);
}

/* Whether every file of m is present with a matching sidecar (no hashing). */
static bool reference_ready(const wk_state *w, const wk_ref_model *m) {
    if (m->n_weights == 0)
        return false;
    for (size_t i = 0; i < m->n_files; i++) {
        char path[PATH_MAX + 300];
        snprintf(path, sizeof path, "%s/compvis/%s", w->cache_home, m->files[i].path);
        bool ok = m->files[i].sha256 && m->files[i].weight ? wk_sidecar_matches(path, m->files[i].sha256)
                                                           : file_exists(path);
        if (!ok)
            return false;
    }
    return true;
}

/* ---- the table ------------------------------------------------------------------------------ */

static void log_warn(void *ud, const char *msg) {
    wk_state *w = ud;
    w->api->log(w->self, HN_LOG_WARN, "%s", msg);
}

static bool skipped(const wk_state *w, const char *name) {
    for (size_t i = 0; w->conf->models_to_skip && w->conf->models_to_skip[i]; i++)
        if (strcmp(w->conf->models_to_skip[i], name) == 0)
            return true;
    return false;
}

static int table_add(wk_model **v, size_t *n, const char *name, const char *path,
                     wk_model_origin origin, const wk_ref_model *ref) {
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*v)[i].name, name) == 0)
            return 0; /* first origin wins: local, then reference, then generator */
    wk_model *nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (!nv)
        return -1;
    *v = nv;
    wk_model *m = &nv[*n];
    memset(m, 0, sizeof *m);
    m->name = strdup(name);
    m->path = path ? strdup(path) : NULL;
    m->origin = origin;
    m->ref = ref;
    if (!m->name || (path && !m->path)) {
        free(m->name);
        free(m->path);
        return -1;
    }
    (*n)++;
    return 0;
}

void wk_models_refresh(wk_state *w, const json_t *popularity) {
    wk_names local = {0}, paths = {0}, gen = {0}, resolved = {0};
    if (wk_scan_checkpoints(w->cache_home, &local, &paths) != 0)
        goto oom;
    json_t *gm = w->gen->models ? w->gen->models(w->gen_state) : NULL;
    size_t gi;
    json_t *gv;
    json_array_foreach(gm, gi, gv) {
        if (json_is_string(gv) && wk_names_add(&gen, json_string_value(gv)) != 0) {
            json_decref(gm);
            goto oom;
        }
    }
    json_decref(gm);
    wk_names known = {0};
    for (size_t i = 0; i < local.n; i++)
        wk_names_add(&known, local.v[i]);
    for (size_t i = 0; i < gen.n; i++)
        wk_names_add(&known, gen.v[i]);
    int rrc = wk_models_resolve(w->have_ref ? &w->ref : NULL, w->conf->models_to_load,
                                w->conf->models_to_skip, popularity, w->conf->load_large_models,
                                &known, &resolved, log_warn, w);
    wk_names_free(&known);
    if (rrc != 0)
        goto oom;

    wk_model *nv = NULL;
    size_t nn = 0;
    int rc = 0;
    for (size_t i = 0; i < local.n && rc == 0; i++)
        if (!skipped(w, local.v[i]))
            rc = table_add(&nv, &nn, local.v[i], paths.v[i], WK_ORIGIN_LOCAL, NULL);
    for (size_t i = 0; i < resolved.n && rc == 0; i++) {
        const wk_ref_model *m = w->have_ref ? wk_reference_find(&w->ref, resolved.v[i]) : NULL;
        if (!m)
            continue; /* a local or generator name: added with its origin */
        char *ck = checkpoint_of(w, m);
        rc = table_add(&nv, &nn, m->name, ck, WK_ORIGIN_REFERENCE, m);
        free(ck);
    }
    for (size_t i = 0; i < gen.n && rc == 0; i++)
        if (!skipped(w, gen.v[i]))
            rc = table_add(&nv, &nn, gen.v[i], NULL, WK_ORIGIN_GENERATOR, NULL);
    if (rc != 0) {
        for (size_t i = 0; i < nn; i++) {
            free(nv[i].name);
            free(nv[i].path);
        }
        free(nv);
        goto oom;
    }
    /* states: checked outside the lock (file reads) */
    for (size_t i = 0; i < nn; i++) {
        wk_model *m = &nv[i];
        if (m->origin == WK_ORIGIN_LOCAL) {
            const char *why = wk_checkpoint_sane(m->path);
            if (why) {
                m->state = WK_MODEL_FAILED;
                snprintf(m->error, sizeof m->error, "%s %s", m->path, why);
            }
        } else if (m->origin == WK_ORIGIN_REFERENCE) {
            m->state = reference_ready(w, m->ref) ? WK_MODEL_READY : WK_MODEL_WAITING;
            if (m->ref->n_weights == 0) {
                m->state = WK_MODEL_FAILED;
                snprintf(m->error, sizeof m->error, "the model reference lists no weight file");
            }
        }
    }
    pthread_mutex_lock(&w->lock);
    /* keep what the old table learned: downloads under way, failures */
    for (size_t i = 0; i < nn; i++) {
        for (size_t j = 0; j < w->n_models; j++) {
            wk_model *o = &w->models[j];
            if (strcmp(o->name, nv[i].name) != 0 || o->origin != nv[i].origin)
                continue;
            bool same_file = (!o->path && !nv[i].path) ||
                             (o->path && nv[i].path && strcmp(o->path, nv[i].path) == 0);
            if (same_file && (o->state == WK_MODEL_DOWNLOADING || o->state == WK_MODEL_FAILED ||
                              (o->state == WK_MODEL_WAITING && nv[i].state != WK_MODEL_READY))) {
                nv[i].state = o->state;
                wk_copy(nv[i].error, sizeof nv[i].error, o->error);
                nv[i].done = o->done;
                nv[i].total = o->total;
            }
        }
    }
    for (size_t i = 0; i < nn; i++)
        if (nv[i].state == WK_MODEL_FAILED) {
            bool was = false;
            for (size_t j = 0; j < w->n_models; j++)
                was = was || (strcmp(w->models[j].name, nv[i].name) == 0 &&
                              w->models[j].state == WK_MODEL_FAILED);
            if (!was)
                w->api->log(w->self, HN_LOG_ERROR, "model %s skipped: %s", nv[i].name,
                            nv[i].error);
        }
    for (size_t j = 0; j < w->n_models; j++) {
        free(w->models[j].name);
        free(w->models[j].path);
    }
    free(w->models);
    w->models = nv;
    w->n_models = nn;
    w->models_ver++;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    wk_names_free(&local);
    wk_names_free(&paths);
    wk_names_free(&gen);
    wk_names_free(&resolved);
    wk_models_push_to_generator(w);
    return;
oom:
    wk_names_free(&local);
    wk_names_free(&paths);
    wk_names_free(&gen);
    wk_names_free(&resolved);
    w->api->log(w->self, HN_LOG_ERROR, "model table: out of memory");
}

void wk_models_push_to_generator(wk_state *w) {
    bool has_configure = HN_GENERATOR_HAS(w->gen, configure);
    json_t *gm = has_configure ? NULL : w->gen->models(w->gen_state);
    json_t *files = json_object();
    pthread_mutex_lock(&w->lock);
    for (size_t i = 0; i < w->n_models; i++) {
        wk_model *m = &w->models[i];
        if (m->state != WK_MODEL_READY || !m->path)
            continue;
        if (has_configure) {
            json_object_set_new(files, m->name, json_string(m->path));
            continue;
        }
        /* without configure the generator only serves the files it finds itself */
        bool listed = false;
        size_t k;
        json_t *v;
        json_array_foreach(gm, k, v) listed = listed || (json_is_string(v) &&
                                                         strcmp(json_string_value(v), m->name) == 0);
        if (!listed) {
            m->state = WK_MODEL_FAILED;
            snprintf(m->error, sizeof m->error,
                     "the generator cannot be told where model files are (no configure in its "
                     "interface) and does not list this model itself");
            w->api->log(w->self, HN_LOG_ERROR, "model %s skipped: %s", m->name, m->error);
            w->models_ver++;
        }
    }
    pthread_mutex_unlock(&w->lock);
    json_decref(gm);
    if (!has_configure) {
        json_decref(files);
        return;
    }
    json_t *settings = json_pack("{s:o, s:I, s:I}", "models", files, "max_models_in_ram",
                                 (json_int_t)w->conf->max_models_in_ram, "max_models_in_vram",
                                 (json_int_t)w->conf->max_models_in_vram);
    if (settings && w->vocab_path[0])
        json_object_set_new(settings, "vocab", json_string(w->vocab_path));
    hn_error e = {0};
    if (settings && w->gen->configure(w->gen_state, settings, &e) != HN_OK)
        w->api->log(w->self, HN_LOG_ERROR, "the generator refused the model list: %s", e.message);
    json_decref(settings);
}

json_t *wk_models_offered(wk_state *w) {
    json_t *list = json_array();
    pthread_mutex_lock(&w->lock);
    for (size_t i = 0; i < w->n_models; i++)
        if (w->models[i].state == WK_MODEL_READY)
            json_array_append_new(list, json_string(w->models[i].name));
    pthread_mutex_unlock(&w->lock);
    return list;
}

void wk_model_mark_failed(wk_state *w, const char *name, const char *why) {
    pthread_mutex_lock(&w->lock);
    for (size_t i = 0; i < w->n_models; i++) {
        wk_model *m = &w->models[i];
        if (strcmp(m->name, name) == 0 && m->state != WK_MODEL_FAILED) {
            m->state = WK_MODEL_FAILED;
            wk_copy(m->error, sizeof m->error, why);
            w->models_ver++;
            w->api->log(w->self, HN_LOG_ERROR, "model %s is not offered any more: %s", name, why);
        }
    }
    pthread_mutex_unlock(&w->lock);
}

/* ---- the download thread ---------------------------------------------------------------- */

void *wk_download_thread(void *arg) {
    wk_state *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->stopping) {
        const wk_ref_model *ref = NULL;
        char name[256] = "";
        for (size_t i = 0; i < w->n_models && !ref; i++) {
            if (w->models[i].state == WK_MODEL_WAITING && w->models[i].ref) {
                ref = w->models[i].ref;
                w->models[i].state = WK_MODEL_DOWNLOADING;
                wk_copy(name, sizeof name, w->models[i].name);
            }
        }
        if (!ref) {
            pthread_cond_wait(&w->cond, &w->lock);
            continue;
        }
        pthread_mutex_unlock(&w->lock);
        char err[512] = "";
        int rc = fetch_model(w, ref, name, w->is_tty, err, sizeof err);
        pthread_mutex_lock(&w->lock);
        for (size_t i = 0; i < w->n_models; i++) {
            wk_model *m = &w->models[i];
            if (strcmp(m->name, name) != 0 || m->state != WK_MODEL_DOWNLOADING)
                continue;
            if (rc == 0) {
                m->state = WK_MODEL_READY;
            } else if (w->stopping) {
                m->state = WK_MODEL_WAITING;
            } else {
                m->state = WK_MODEL_FAILED;
                wk_copy(m->error, sizeof m->error, err);
            }
            w->models_ver++;
        }
        if (rc != 0 && !w->stopping)
            w->api->log(w->self, HN_LOG_ERROR, "model %s skipped: %s", name, err);
        pthread_cond_broadcast(&w->cond);
        if (rc == 0) {
            pthread_mutex_unlock(&w->lock);
            wk_models_push_to_generator(w);
            pthread_mutex_lock(&w->lock);
        }
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* ---- the `download` command ------------------------------------------------------------- */

int wk_models_download_all(wk_state *w, bool print) {
    wk_names local = {0}, paths = {0}, resolved = {0};
    wk_scan_checkpoints(w->cache_home, &local, &paths);
    if (wk_models_resolve(w->have_ref ? &w->ref : NULL, w->conf->models_to_load,
                          w->conf->models_to_skip, NULL, w->conf->load_large_models, &local,
                          &resolved, log_warn, w) != 0) {
        wk_names_free(&local);
        wk_names_free(&paths);
        return 1;
    }
    int failed = 0;
    for (size_t i = 0; i < resolved.n; i++) {
        const wk_ref_model *m = w->have_ref ? wk_reference_find(&w->ref, resolved.v[i]) : NULL;
        if (!m) {
            if (print)
                printf("%s: local checkpoint\n", resolved.v[i]);
            continue;
        }
        char err[512] = "";
        if (fetch_model(w, m, NULL, print && w->is_tty, err, sizeof err) != 0) {
            failed++;
            fprintf(stderr, "%s: FAILED: %s\n", m->name, err);
        } else if (print) {
            printf("%s: ok\n", m->name);
        }
    }
    wk_names_free(&local);
    wk_names_free(&paths);
    wk_names_free(&resolved);
    return failed;
}

/* ---- the CLIP vocabulary ------------------------------------------------------------------ */

#define VOCAB_FILE "bpe_simple_vocab_16e6.txt.gz"

void wk_vocab_ensure(wk_state *w) {
    char dir[PATH_MAX + 16], path[PATH_MAX + 64];
    snprintf(dir, sizeof dir, "%s/clip", w->cache_home);
    snprintf(path, sizeof path, "%s/%s", dir, VOCAB_FILE);
    if (file_exists(path)) {
        wk_copy(w->vocab_path, sizeof w->vocab_path, path);
        return;
    }
    const char *url = w->conf->clip_vocab_url;
    if (!url || !url[0]) {
        w->api->log(w->self, HN_LOG_WARN,
                    "no CLIP vocabulary at %s and clip_vocab_url is empty: the generator must "
                    "find one itself",
                    path);
        return;
    }
    if (make_dir(w->cache_home) != 0 || make_dir(dir) != 0) {
        w->api->log(w->self, HN_LOG_ERROR, "cannot create %s: %s", dir, strerror(errno));
        return;
    }
    const char *sha = w->conf->clip_vocab_sha256;
    char lower[65] = "";
    for (size_t i = 0; sha && sha[i] && i < 64; i++)
        lower[i] = (char)(sha[i] >= 'A' && sha[i] <= 'F' ? sha[i] + 32 : sha[i]);
    dl_progress p = {.w = w, .label = "CLIP vocabulary", .print = w->is_tty,
                     .start_ms = wk_now_ms()};
    wk_download_opts o = {.url = url,
                          .dest = path,
                          .sha256 = lower[0] ? lower : NULL,
                          .attempts = (int)w->conf->download_retries,
                          .stall_s = 20,
                          .retry_delay_ms = 1000,
                          .progress = on_progress,
                          .ud = &p};
    char err[512] = "";
    wk_dl_rc rc = wk_download(&o, err, sizeof err);
    if (p.print)
        draw_bar(&p, 1, 1, true);
    if (rc != WK_DL_OK) {
        w->api->log(w->self, HN_LOG_ERROR, "CLIP vocabulary: %s", err);
        return;
    }
    w->api->log(w->self, HN_LOG_INFO, "fetched the CLIP vocabulary into %s", path);
    wk_copy(w->vocab_path, sizeof w->vocab_path, path);
}
