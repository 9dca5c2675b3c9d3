/* cuda_loader.c - finds libhn-sd-cuda.so at run time (dlopen) and forwards
 * to it; see cuda_backend.h for the search order. Plain C: no CUDA headers,
 * no CUDA link, so cuda-sd.so loads on machines without CUDA. */
#include "backend/cuda_backend.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bounded copy (truncates long paths instead of overflowing). */
static void copy_str(char *dst, size_t len, const char *src)
{
    if (!dst || !len) return;
    size_t n = strlen(src);
    if (n >= len) n = len - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void set_err(char *err, size_t errlen, const char *msg)
{
    copy_str(err, errlen, msg);
}

/* Tries one path; on success returns the library's table. `why` collects
 * the first failure reason for the error message. */
static const sd_cuda_api *try_open(const char *path, char *why, size_t whylen)
{
    /* RTLD_LOCAL: the library's CUDA symbols stay out of the global scope. */
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        if (why[0] == '\0') {
            const char *e = dlerror();
            snprintf(why, whylen, "%s", e ? e : path);
        }
        return NULL;
    }
    sd_cuda_api_fn fn;
    void *sym = dlsym(h, SD_CUDA_API_SYMBOL);
    memcpy(&fn, &sym, sizeof fn);    /* object -> function pointer, as POSIX allows */
    const sd_cuda_api *api = fn ? fn() : NULL;
    if (!api || api->version != SD_CUDA_API_VERSION || api->ops_size != sizeof(sd_backend_ops) ||
        api->backend_size != sizeof(sd_backend)) {
        snprintf(why, whylen, "%s: incompatible library (API %d, built for another ops.h)", path,
                 api ? api->version : -1);
        dlclose(h);
        return NULL;
    }
    /* Deliberately never dlclose()d on success: see cuda_backend.h. */
    return api;
}

/* Directory of the module (plugin .so or test program) holding this code. */
static int own_dir(char *dir, size_t len)
{
    Dl_info info;
    if (!dladdr((void *)own_dir, &info) || !info.dli_fname || !info.dli_fname[0]) return -1;
    char resolved[PATH_MAX];
    const char *p = realpath(info.dli_fname, resolved) ? resolved : info.dli_fname;
    const char *slash = strrchr(p, '/');
    if (!slash) return -1;
    size_t n = (size_t)(slash - p);
    if (n + 1 > len) return -1;
    memcpy(dir, p, n);
    dir[n] = '\0';
    return 0;
}

static const sd_cuda_api *load_api(const char *lib_path, char *found, size_t foundlen,
                                   char *err, size_t errlen)
{
    char why[512] = "";
    char cand[PATH_MAX + 64];
    const sd_cuda_api *api;
    if (lib_path && *lib_path) {
        if ((api = try_open(lib_path, why, sizeof why))) {
            copy_str(found, foundlen, lib_path);
            return api;
        }
        set_err(err, errlen, why);
        return NULL;
    }
    const char *env = getenv("HN_SD_CUDA_LIB");
    if (env && *env) {
        if ((api = try_open(env, why, sizeof why))) {
            copy_str(found, foundlen, env);
            return api;
        }
        set_err(err, errlen, why);
        return NULL;
    }
    char dir[PATH_MAX];
    if (own_dir(dir, sizeof dir) == 0) {
        static const char *const rel[] = { "/../lib/", "/", "/../../lib/" };
        for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
            snprintf(cand, sizeof cand, "%s%s%s", dir, rel[i], SD_CUDA_LIB_NAME);
            char probe[sizeof why] = "";
            if ((api = try_open(cand, probe, sizeof probe))) {
                copy_str(found, foundlen, cand);
                return api;
            }
            /* a library that exists but does not load says more than
             * "not found" further down the list */
            if (!why[0] && !strstr(probe, "No such file")) copy_str(why, sizeof why, probe);
        }
    }
    if ((api = try_open(SD_CUDA_LIB_NAME, why, sizeof why))) {
        copy_str(found, foundlen, SD_CUDA_LIB_NAME);
        return api;
    }
    if (err && errlen)
        snprintf(err, errlen, "CUDA backend library %s not found or not loadable (%s)",
                 SD_CUDA_LIB_NAME, why);
    return NULL;
}

int sd_cuda_probe(const char *lib_path, sd_cuda_info *info, char *err, size_t errlen)
{
    char found[512] = "";
    const sd_cuda_api *api = load_api(lib_path, found, sizeof found, err, errlen);
    if (!api) return -1;
    sd_cuda_info local;
    sd_cuda_info *dst = info ? info : &local;
    memset(dst, 0, sizeof *dst);
    if (api->probe(dst, err, errlen) != 0) return -1;
    copy_str(dst->lib_path, sizeof dst->lib_path, found);
    return 0;
}

sd_backend *sd_backend_cuda_create(const sd_cuda_options *opt, char *err, size_t errlen)
{
    char found[512] = "";
    const sd_cuda_api *api = load_api(opt ? opt->lib_path : NULL, found, sizeof found, err, errlen);
    if (!api) return NULL;
    sd_cuda_options defaults = { 0, SD_CUDA_PREC_AUTO, 0, NULL, 0, false, false, false };
    return api->create(opt ? opt : &defaults, err, errlen);
}

bool sd_backend_is_cuda(const sd_backend *be)
{
    return be && be->ops && be->ops->name && strcmp(be->ops->name, "cuda") == 0;
}

int sd_backend_cuda_synchronize(sd_backend *be)
{
    if (!sd_backend_is_cuda(be)) return be ? sd_backend_fail(be, "not a CUDA backend") : -1;
    return ((sd_cuda_backend_head *)be)->api->synchronize(be);
}

int sd_backend_cuda_memory(sd_backend *be, sd_cuda_memory *out, bool reset_peak)
{
    if (!sd_backend_is_cuda(be)) return be ? sd_backend_fail(be, "not a CUDA backend") : -1;
    return ((sd_cuda_backend_head *)be)->api->memory(be, out, reset_peak);
}

/* The version-2 entries: the backend's own table answers. */
static const sd_cuda_api *api_of(sd_backend *be)
{
    if (!sd_backend_is_cuda(be)) {
        if (be) sd_backend_fail(be, "not a CUDA backend");
        return NULL;
    }
    return ((sd_cuda_backend_head *)be)->api;
}

int sd_backend_cuda_set_precision(sd_backend *be, sd_cuda_precision p, sd_cuda_precision *old)
{
    const sd_cuda_api *api = api_of(be);
    return api ? api->set_precision(be, p, old) : -1;
}

int sd_backend_cuda_set_vram_budget(sd_backend *be, size_t bytes)
{
    const sd_cuda_api *api = api_of(be);
    return api ? api->set_vram_budget(be, bytes) : -1;
}

int sd_backend_cuda_pin_host(sd_backend *be, const void *p, size_t bytes)
{
    const sd_cuda_api *api = api_of(be);
    return api ? api->pin_host(be, p, bytes) : -1;
}

void sd_backend_cuda_unpin_host(sd_backend *be, const void *p)
{
    const sd_cuda_api *api = api_of(be);
    if (api) api->unpin_host(be, p);
}

long long sd_backend_cuda_drop_weights(sd_backend *be, const void *lo, const void *hi)
{
    const sd_cuda_api *api = api_of(be);
    return api ? api->drop_weights(be, lo, hi) : -1;
}

int sd_backend_cuda_trim(sd_backend *be)
{
    const sd_cuda_api *api = api_of(be);
    return api ? api->trim(be) : -1;
}

/* The version-3 entries (CUDA graphs). */
int sd_backend_cuda_set_graphs(sd_backend *be, bool on)
{
    const sd_cuda_api *api = api_of(be);
    return api ? api->set_graphs(be, on) : -1;
}

bool sd_backend_cuda_graphs_on(sd_backend *be)
{
    /* the library keeps the flag in the handle's head */
    return sd_backend_is_cuda(be) && ((sd_cuda_backend_head *)be)->graphs_on;
}

int sd_backend_cuda_graph_run(sd_backend *be, sd_cuda_graph **slot, int (*fn)(void *ud), void *ud)
{
    const sd_cuda_api *api = api_of(be);
    return api ? api->graph_run(be, slot, fn, ud) : -1;
}

int sd_backend_cuda_set_workspace_limit(sd_backend *be, size_t bytes, size_t *old)
{
    const sd_cuda_api *api = api_of(be);
    return api ? api->set_workspace_limit(be, bytes, old) : -1;
}

/* The version-4 entry (implicit-GEMM convolutions). */
int sd_backend_cuda_set_conv_implicit(sd_backend *be, bool on)
{
    const sd_cuda_api *api = api_of(be);
    return api ? api->set_conv_implicit(be, on) : -1;
}

/* The version-5 entry (fp16 activations). */
int sd_backend_cuda_set_f16_activations(sd_backend *be, bool on)
{
    const sd_cuda_api *api = api_of(be);
    return api ? api->set_f16_activations(be, on) : -1;
}

void sd_backend_cuda_graph_free(sd_backend *be, sd_cuda_graph *slot)
{
    if (!slot) return;
    const sd_cuda_api *api = api_of(be);
    if (api) api->graph_free(be, slot);
}
