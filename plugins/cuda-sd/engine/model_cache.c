/* model_cache.c - open pipelines in host RAM, one shared backend whose
 * weight cache swaps them through VRAM (see model_cache.h). */
#include "engine/model_cache.h"
#include "error_text.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend_choice.h"
#include "backend/cpu_backend.h"
#include "backend/cuda_backend.h"
#include "engine/model_file.h"

#define MAX_OPEN 16

typedef struct entry {
    char *path, *config;      /* malloc'd; config may be NULL */
    sd_pipeline *pipe;
    const void *lo, *hi;      /* the tensors' host bytes (drop/pin range) */
    bool pinned;
    unsigned long long last_use;
} entry;

struct sd_model_cache {
    sd_model_cache_opts o;
    char *vocab, *data_dir;
    sd_backend *be;
    bool be_owned, cuda;
    sd_backend_choice choice;
    size_t budget;
    entry e[MAX_OPEN];
    int n, max;
    unsigned long long clock;
    sd_model_cache_stats st;
};


static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int sd_model_cache_create(const sd_model_cache_opts *o, sd_model_cache **out, char *err,
                          size_t errlen)
{
    *out = NULL;
    sd_model_cache *c = calloc(1, sizeof *c);
    if (!c)
        return sd_fail(err, errlen, "out of memory");
    c->o = *o;
    c->vocab = dup_or_null(o->vocab_path);
    c->data_dir = dup_or_null(o->data_dir);
    c->o.vocab_path = c->vocab;
    c->o.data_dir = c->data_dir;
    c->max = o->max_models > 0 ? (o->max_models < MAX_OPEN ? o->max_models : MAX_OPEN) : 2;
    if (o->use_backend) {
        c->be = o->use_backend;
        snprintf(c->choice.name, sizeof c->choice.name, "%s", c->be->ops->name);
        snprintf(c->choice.why, sizeof c->choice.why, "given");
    } else {
        if (sd_backend_choose(o->backend ? o->backend : "auto", &c->choice, err, errlen) != 0) {
            sd_model_cache_destroy(c);
            return -1;
        }
        c->be = strcmp(c->choice.name, "cuda") == 0 ? sd_backend_cuda_create(NULL, err, errlen)
                                                    : sd_backend_cpu_create(o->threads, err, errlen);
        if (!c->be) {
            sd_model_cache_destroy(c);
            return -1;
        }
        c->be_owned = true;
        if (sd_backend_is_cuda(c->be) &&
            ((o->cuda_graphs && sd_backend_cuda_set_graphs(c->be, true) != 0) ||
             (o->cuda_conv_implicit && sd_backend_cuda_set_conv_implicit(c->be, true) != 0) ||
             (o->cuda_f16_activations &&
              sd_backend_cuda_set_f16_activations(c->be, true) != 0) ||
             (o->cuda_vae_bf16 &&
              sd_backend_cuda_set_precision(c->be, SD_CUDA_PREC_AUTO_VAE_BF16, NULL) != 0))) {
            sd_fail(err, errlen, "%s", sd_backend_error(c->be));
            sd_model_cache_destroy(c);
            return -1;
        }
    }
    c->cuda = sd_backend_is_cuda(c->be);
    if (c->cuda && o->vram_budget_mb >= 0) {
        size_t budget = (size_t)o->vram_budget_mb << 20;
        sd_cuda_memory m;
        if (o->vram_budget_mb == 0 && sd_backend_cuda_memory(c->be, &m, false) == 0) {
            size_t reserve = (size_t)3072 << 20;
            budget = m.device_total > 2 * reserve ? m.device_total - reserve : m.device_total / 2;
        }
        if (budget && sd_backend_cuda_set_vram_budget(c->be, budget) != 0) {
            sd_fail(err, errlen, "%s", sd_backend_error(c->be));
            sd_model_cache_destroy(c);
            return -1;
        }
        c->budget = budget;
    }
    *out = c;
    return 0;
}

/* The span of a pipeline's tensor bytes. */
static void tensor_span(const sd_model_file *f, const void **lo, const void **hi)
{
    const unsigned char *l = NULL, *h = NULL;
    size_t n = sd_model_file_count(f);
    for (size_t i = 0; i < n; i++) {
        const sd_tensor_info *t = sd_model_file_at(f, i);
        const unsigned char *p = t->data;
        if (!p || !t->nbytes)
            continue;
        if (!l || p < l)
            l = p;
        if (!h || p + t->nbytes > h)
            h = p + t->nbytes;
    }
    *lo = l;
    *hi = h;
}

static void close_entry(sd_model_cache *c, entry *e)
{
    if (c->cuda && e->lo) {
        /* its device copies go now rather than when the LRU reaches them */
        sd_backend_cuda_drop_weights(c->be, e->lo, e->hi);
        if (e->pinned)
            sd_backend_cuda_unpin_host(c->be, e->lo);
    }
    sd_pipeline_free(e->pipe);
    free(e->path);
    free(e->config);
    memset(e, 0, sizeof *e);
}

void sd_model_cache_destroy(sd_model_cache *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n; i++)
        close_entry(c, &c->e[i]);
    if (c->be_owned)
        sd_backend_destroy(c->be);
    free(c->vocab);
    free(c->data_dir);
    free(c);
}

static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int sd_model_cache_get(sd_model_cache *c, const char *model_path, const char *config_path,
                       sd_pipeline **out, char *err, size_t errlen)
{
    *out = NULL;
    c->clock++;
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->e[i].path, model_path) == 0 && same(c->e[i].config, config_path)) {
            c->e[i].last_use = c->clock;
            c->st.hits++;
            *out = c->e[i].pipe;
            return 0;
        }
    if (c->n >= c->max) { /* close the least recently used */
        int old = 0;
        for (int i = 1; i < c->n; i++)
            if (c->e[i].last_use < c->e[old].last_use)
                old = i;
        close_entry(c, &c->e[old]);
        c->e[old] = c->e[--c->n];
        memset(&c->e[c->n], 0, sizeof c->e[c->n]);
        c->st.closed++;
    }
    entry *e = &c->e[c->n];
    sd_pipeline_opts po = {.model_path = model_path,
                           .vocab_path = c->o.vocab_path,
                           .data_dir = c->o.data_dir,
                           .config_path = config_path,
                           .threads = c->o.threads,
                           .shared_backend = c->be,
                           .vae_tile_above = c->o.vae_tile_above,
                           .vae_tile = c->o.vae_tile,
                           .keep_pool = c->o.keep_pool,
                           .offload = c->o.offload};
    if (sd_pipeline_load(&po, &e->pipe, err, errlen) != 0)
        return -1;
    e->path = strdup(model_path);
    e->config = dup_or_null(config_path);
    if (!e->path || (config_path && !e->config)) {
        sd_pipeline_free(e->pipe);
        free(e->path);
        free(e->config);
        memset(e, 0, sizeof *e);
        return sd_fail(err, errlen, "out of memory");
    }
    const sd_model_file *f = sd_pipeline_file(e->pipe);
    tensor_span(f, &e->lo, &e->hi);
    /* one mapping holds a safetensors file's tensors; a .ckpt's are separate
     * heap blocks with unrelated memory between them: pin only the former */
    if (c->cuda && !c->o.no_pin && e->lo && strcmp(sd_model_file_format(f), "safetensors") == 0)
        e->pinned = sd_backend_cuda_pin_host(c->be, e->lo,
                                             (size_t)((const char *)e->hi - (const char *)e->lo)) == 0;
    e->last_use = c->clock;
    c->n++;
    c->st.loads++;
    *out = e->pipe;
    return 0;
}

sd_backend *sd_model_cache_backend(sd_model_cache *c) { return c->be; }

void sd_model_cache_describe(const sd_model_cache *c, char *buf, size_t len)
{
    char how[600];
    sd_backend_choice_describe(&c->choice, how, sizeof how);
    if (c->cuda && c->budget)
        snprintf(buf, len, "%s, VRAM budget for weights %zu MB, %d models in RAM", how,
                 c->budget >> 20, c->max);
    else if (c->cuda)
        snprintf(buf, len, "%s, no VRAM budget, %d models in RAM", how, c->max);
    else
        snprintf(buf, len, "%s, %d models in RAM", how, c->max);
}

void sd_model_cache_stats_get(const sd_model_cache *c, sd_model_cache_stats *out)
{
    *out = c->st;
    out->open = c->n;
    out->pinned = 0;
    for (int i = 0; i < c->n; i++)
        out->pinned += c->e[i].pinned;
}
