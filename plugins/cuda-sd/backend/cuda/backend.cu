/* backend.cu - the CUDA backend's lifecycle, memory, transfers and the
 * library's exported table (hn_sd_cuda_api, see backend/cuda_backend.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/internal.h"

#define DEFAULT_WORKSPACE_MB 128

/* ---- errors --------------------------------------------------------------- */

int cu_fail(cuda_backend *cb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cb->head.base.err, sizeof cb->head.base.err, fmt, ap);
    va_end(ap);
    return -1;
}

int cu_check(cuda_backend *cb, cudaError_t e, const char *what)
{
    if (e == cudaSuccess) return 0;
    return cu_fail(cb, "%s: %s", what, cudaGetErrorString(e));
}

int cu_launched(cuda_backend *cb, const char *what)
{
    return cu_check(cb, cudaGetLastError(), what);
}

/* ---- memory ------------------------------------------------------------- */

void *cu_malloc(cuda_backend *cb, size_t bytes)
{
    void *p = NULL;
    if (bytes == 0) bytes = 1;
    if (cudaMallocFromPoolAsync(&p, bytes, cb->pool, cb->stream) == cudaSuccess) return p;
    (void)cudaGetLastError();
    if (cb->capturing) return NULL;   /* no synchronisation inside a capture */
    /* The pool keeps freed blocks (release threshold "never"): give them
     * back to the device and try once more. */
    if (cudaStreamSynchronize(cb->stream) != cudaSuccess) return NULL;
    (void)cudaMemPoolTrimTo(cb->pool, 0);
    if (cudaMallocFromPoolAsync(&p, bytes, cb->pool, cb->stream) == cudaSuccess) return p;
    (void)cudaGetLastError();
    return NULL;
}

void cu_free(cuda_backend *cb, void *p)
{
    if (p) (void)cudaFreeAsync(p, cb->stream);
}

void *cu_workspace(cuda_backend *cb, size_t bytes)
{
    if (bytes <= cb->ws_size && cb->ws) return cb->ws;
    /* grown inside a capture, the scratch would be the graph's memory */
    if (cb->capturing) {
        cu_fail(cb, "scratch of %zu MB first needed during a graph capture", bytes >> 20);
        return NULL;
    }
    if (cb->ws) cb->wsgen++;
    cu_free(cb, cb->ws);
    cb->ws = cu_malloc(cb, bytes);
    cb->ws_size = cb->ws ? bytes : 0;
    if (!cb->ws) cu_fail(cb, "out of GPU memory for %zu MB of scratch", bytes >> 20);
    return cb->ws;
}

static float *be_alloc(sd_backend *be, size_t n)
{
    cuda_backend *cb = cu_of(be);
    if (n > SIZE_MAX / sizeof(float)) return NULL;
    return (float *)cu_malloc(cb, n * sizeof(float));
}

static void be_release(sd_backend *be, float *p)
{
    cu_free(cu_of(be), p);
}

#ifdef SD_CUDA_EMU
/* The emulator's exact high-water mark of device memory (emu/cuda_emu.cpp):
 * there, peaks are not only seen at the samples below but wherever they
 * happen (inside a VAE decode, between two downloads). */
extern "C" void sd_emu_memory_high(size_t *used, size_t *high, int reset);
#endif

/* The device's use now, folded into the peak. On a GPU it is sampled (at
 * downloads, synchronisations and memory queries), so a peak between two
 * samples is missed; the emulation reports its exact mark. */
static void sample_device_memory(cuda_backend *cb)
{
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
        (void)cudaGetLastError();
        return;
    }
    cb->device_total = total_b;
    if (total_b - free_b > cb->device_used_peak) cb->device_used_peak = total_b - free_b;
#ifdef SD_CUDA_EMU
    size_t high = 0;
    sd_emu_memory_high(NULL, &high, 0);
    if (high > cb->device_used_peak) cb->device_used_peak = high;
#endif
}

/* ---- transfers ------------------------------------------------------------ */

static int be_upload(sd_backend *be, const float *host, sd_tensor *t)
{
    cuda_backend *cb = cu_of(be);
    if (cu_types_ok(cb, "upload", t, NULL, NULL, NULL)) return -1;
    size_t n = sd_tensor_numel_of(t);
    if (!cu_is_f16(t))
        return cu_check(cb, cudaMemcpyAsync(t->data, host, n * sizeof(float),
                                            cudaMemcpyHostToDevice, cb->stream),
                        "upload");
    /* fp16 tensor: the float32 values through a staging buffer */
    float *tmp = (float *)cu_malloc(cb, n * sizeof(float));
    if (!tmp) return cu_fail(cb, "out of GPU memory uploading a tensor");
    int rc = cu_check(cb, cudaMemcpyAsync(tmp, host, n * sizeof(float), cudaMemcpyHostToDevice,
                                          cb->stream),
                      "upload");
    if (rc == 0) rc = cu_convert(cb, tmp, false, t->data, true, n);
    cu_free(cb, tmp);
    return rc;
}

static int be_download(sd_backend *be, const sd_tensor *t, float *host)
{
    cuda_backend *cb = cu_of(be);
    if (cu_types_ok(cb, "download", t, NULL, NULL, NULL)) return -1;
    size_t n = sd_tensor_numel_of(t);
    float *tmp = NULL;
    const float *src = t->data;
    if (cu_is_f16(t)) {
        if (!(tmp = (float *)cu_malloc(cb, n * sizeof(float))))
            return cu_fail(cb, "out of GPU memory downloading a tensor");
        if (cu_convert(cb, t->data, true, tmp, false, n)) {
            cu_free(cb, tmp);
            return -1;
        }
        src = tmp;
    }
    int rc = cu_check(cb, cudaMemcpyAsync(host, src, n * sizeof(float), cudaMemcpyDeviceToHost,
                                          cb->stream),
                      "download");
    if (tmp) cu_free(cb, tmp);
    if (rc) return -1;
    sample_device_memory(cb);
    return cu_check(cb, cudaStreamSynchronize(cb->stream), "download (a queued kernel failed)");
}

static int be_upload_nchw(sd_backend *be, const float *host, sd_tensor *t)
{
    cuda_backend *cb = cu_of(be);
    if (cu_types_ok(cb, "upload", t, NULL, NULL, NULL)) return -1;
    size_t n = sd_tensor_numel_of(t);
    float *tmp = (float *)cu_malloc(cb, n * sizeof(float));
    if (!tmp) return cu_fail(cb, "out of GPU memory uploading a tensor");
    int rc = cu_check(cb, cudaMemcpyAsync(tmp, host, n * sizeof(float), cudaMemcpyHostToDevice,
                                          cb->stream),
                      "upload");
    if (rc == 0) rc = cu_nchw_to_nhwc(cb, tmp, t->data, cu_is_f16(t), t->n, t->c, t->h * t->w);
    cu_free(cb, tmp);
    return rc;
}

static int be_download_nchw(sd_backend *be, const sd_tensor *t, float *host)
{
    cuda_backend *cb = cu_of(be);
    if (cu_types_ok(cb, "download", t, NULL, NULL, NULL)) return -1;
    size_t n = sd_tensor_numel_of(t);
    float *tmp = (float *)cu_malloc(cb, n * sizeof(float));
    if (!tmp) return cu_fail(cb, "out of GPU memory downloading a tensor");
    int rc = cu_nhwc_to_nchw(cb, t->data, cu_is_f16(t), tmp, t->n, t->c, t->h * t->w);
    if (rc == 0)
        rc = cu_check(cb, cudaMemcpyAsync(host, tmp, n * sizeof(float), cudaMemcpyDeviceToHost,
                                          cb->stream),
                      "download");
    cu_free(cb, tmp);
    sample_device_memory(cb);
    if (rc == 0) rc = cu_check(cb, cudaStreamSynchronize(cb->stream), "download (a queued kernel failed)");
    return rc;
}

/* ---- lifecycle ------------------------------------------------------------- */

static void be_destroy(sd_backend *be)
{
    cuda_backend *cb = cu_of(be);
    (void)cudaSetDevice(cb->device);
    if (cb->stream) (void)cudaStreamSynchronize(cb->stream);
    cu_weights_free(cb);
    for (int i = 0; i < cb->npins; i++) (void)cudaHostUnregister(cb->pins[i].start);
    cb->npins = 0;
    cu_free(cb, cb->ws);
    cu_free(cb, cb->lt_ws);
    if (cb->lt) (void)cublasLtDestroy(cb->lt);
    if (cb->blas_ws) (void)cudaFree(cb->blas_ws);
    if (cb->blas) (void)cublasDestroy(cb->blas);
    if (cb->stream) {
        (void)cudaStreamSynchronize(cb->stream);
        (void)cudaStreamDestroy(cb->stream);
    }
    /* Tensors the caller never freed keep the pool alive (CUDA defers the
     * destruction until they are freed); nothing else to do about them. */
    if (cb->pool) (void)cudaMemPoolDestroy(cb->pool);
    if (cb->wpool) (void)cudaMemPoolDestroy(cb->wpool);
    (void)cudaGetLastError();
    free(cb);
}

static int api_synchronize(sd_backend *be)
{
    cuda_backend *cb = cu_of(be);
    sample_device_memory(cb);
    return cu_check(cb, cudaStreamSynchronize(cb->stream), "synchronize");
}

static int api_memory(sd_backend *be, sd_cuda_memory *out, bool reset_peak)
{
    cuda_backend *cb = cu_of(be);
    memset(out, 0, sizeof *out);
    uint64_t used = 0, high = 0;
    if (cu_check(cb, cudaMemPoolGetAttribute(cb->pool, cudaMemPoolAttrUsedMemCurrent, &used),
                 "memory pool") ||
        cu_check(cb, cudaMemPoolGetAttribute(cb->pool, cudaMemPoolAttrUsedMemHigh, &high),
                 "memory pool"))
        return -1;
    sample_device_memory(cb);
    out->weights = cb->wbytes;
    out->activations = (size_t)used;
    out->activations_peak = (size_t)high;
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
        out->device_used = total_b - free_b;
        out->device_total = total_b;
    }
    (void)cudaGetLastError();
    out->device_used_peak = cb->device_used_peak;
    out->weights_budget = cb->wbudget;
    out->weights_peak = cb->wpeak;
    out->weight_uploads = cb->n_uploads;
    out->weight_evictions = cb->n_evictions;
    out->bytes_uploaded = cb->bytes_uploaded;
    for (int i = 0; i < cb->npins; i++) out->host_pinned += cb->pins[i].bytes;
    out->graph_captures = cb->graph_captures;
    out->graph_launches = cb->graph_launches;
    out->graph_eager = cb->graph_eager;
    out->conv_implicit_calls = cb->conv_implicit_calls;
    if (reset_peak) {
        cb->wpeak = cb->wbytes;
        uint64_t zero = 0;
        (void)cudaMemPoolSetAttribute(cb->pool, cudaMemPoolAttrUsedMemHigh, &zero);
        (void)cudaMemPoolSetAttribute(cb->pool, cudaMemPoolAttrReservedMemHigh, &zero);
        cb->device_used_peak = out->device_used;
#ifdef SD_CUDA_EMU
        sd_emu_memory_high(NULL, NULL, 1);
#endif
    }
    return 0;
}

static int api_probe(sd_cuda_info *info, char *err, size_t errlen)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n <= 0) {
        if (err && errlen)
            snprintf(err, errlen, "no CUDA device: %s",
                     e != cudaSuccess ? cudaGetErrorString(e) : "the driver reports none");
        (void)cudaGetLastError();
        return -1;
    }
    info->device_count = n;
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
        snprintf(info->name, sizeof info->name, "%.127s", prop.name);
        info->cc_major = prop.major;
        info->cc_minor = prop.minor;
        info->total_mem = prop.totalGlobalMem;
    }
    (void)cudaRuntimeGetVersion(&info->runtime_version);
    (void)cudaDriverGetVersion(&info->driver_version);
    (void)cudaGetLastError();
    return 0;
}

static int api_set_precision(sd_backend *be, sd_cuda_precision p, sd_cuda_precision *old)
{
    cuda_backend *cb = cu_of(be);
    if ((int)p < SD_CUDA_PREC_AUTO || (int)p > SD_CUDA_PREC_AUTO_VAE_BF16)
        return cu_fail(cb, "unknown precision %d", (int)p);
    if (old) *old = cb->precision;
    /* ops already queued captured their paths; weights are cached per
     * storage kind, so both precisions' copies may coexist */
    cb->precision = p;
    cu_update_inner_type(cb);
    return 0;
}

static int api_set_vram_budget(sd_backend *be, size_t bytes)
{
    cuda_backend *cb = cu_of(be);
    cb->wbudget = bytes;
    return cu_weights_fit(cb, 0);
}

/* cudaHostRegister wants page boundaries; a model file's tensors span its
 * mapping. Read-only first (a PROT_READ file mapping), then the default
 * flags (heap memory on devices without read-only registration). */
static int api_pin_host(sd_backend *be, const void *p, size_t bytes)
{
    cuda_backend *cb = cu_of(be);
    if (!p || !bytes) return cu_fail(cb, "pin_host: empty range");
    if (cb->npins == (int)(sizeof cb->pins / sizeof cb->pins[0]))
        return cu_fail(cb, "pin_host: too many pinned ranges");
    const uintptr_t page = 4096;
    uintptr_t start = (uintptr_t)p & ~(page - 1);
    uintptr_t end = ((uintptr_t)p + bytes + page - 1) & ~(page - 1);
    cudaError_t e = cudaHostRegister((void *)start, end - start, cudaHostRegisterReadOnly);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        e = cudaHostRegister((void *)start, end - start, cudaHostRegisterDefault);
    }
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return cu_fail(cb, "cudaHostRegister of %zu MB: %s", (size_t)(end - start) >> 20,
                       cudaGetErrorString(e));
    }
    cb->pins[cb->npins].user = p;
    cb->pins[cb->npins].start = (void *)start;
    cb->pins[cb->npins].bytes = end - start;
    cb->npins++;
    return 0;
}

static void api_unpin_host(sd_backend *be, const void *p)
{
    cuda_backend *cb = cu_of(be);
    for (int i = 0; i < cb->npins; i++) {
        if (cb->pins[i].user != p) continue;
        /* uploads from it may still be queued */
        (void)cudaStreamSynchronize(cb->stream);
        (void)cudaHostUnregister(cb->pins[i].start);
        (void)cudaGetLastError();
        cb->pins[i] = cb->pins[--cb->npins];
        return;
    }
}

static long long api_drop_weights(sd_backend *be, const void *lo, const void *hi)
{
    return cu_weights_drop_range(cu_of(be), lo, hi);
}

static int api_trim(sd_backend *be)
{
    cuda_backend *cb = cu_of(be);
    if (cb->ws) cb->wsgen++;
    cu_free(cb, cb->ws);
    cb->ws = NULL;
    cb->ws_size = 0;
    if (cu_check(cb, cudaStreamSynchronize(cb->stream), "trim")) return -1;
    /* captured passes keep their activations in graph memory: its physical
     * pages go back too, and are mapped again at the next launch */
    if (cb->graphs) {
        (void)cudaDeviceGraphMemTrim(cb->device);
        (void)cudaGetLastError();
    }
    (void)cudaMemPoolTrimTo(cb->wpool, 0);   /* blocks of evicted weights */
    return cu_check(cb, cudaMemPoolTrimTo(cb->pool, 0), "trim");
}

/* cuBLAS allocates its workspace on demand unless given one, which a graph
 * capture cannot do: a fixed one is set when graphs are turned on. */
#define CU_BLAS_GRAPH_WORKSPACE ((size_t)32 << 20)

static int api_set_graphs(sd_backend *be, bool on)
{
    cuda_backend *cb = cu_of(be);
    if (on && !cb->blas_ws) {
        if (cu_check(cb, cudaMalloc(&cb->blas_ws, CU_BLAS_GRAPH_WORKSPACE), "cuBLAS workspace"))
            return -1;
        if (cublasSetWorkspace(cb->blas, cb->blas_ws, CU_BLAS_GRAPH_WORKSPACE) !=
            CUBLAS_STATUS_SUCCESS) {
            (void)cudaFree(cb->blas_ws);
            cb->blas_ws = NULL;
            return cu_fail(cb, "cublasSetWorkspace failed");
        }
    }
    cb->graphs = on;
    cb->head.graphs_on = on;
    return 0;
}

static int api_set_workspace_limit(sd_backend *be, size_t bytes, size_t *old)
{
    cuda_backend *cb = cu_of(be);
    if (cb->capturing) return cu_fail(cb, "workspace limit changed during a graph capture");
    if (old) *old = cb->ws_limit;
    cb->ws_limit = bytes ? bytes : cb->ws_default;
    if (cb->ws && cb->ws_size > cb->ws_limit) {
        cb->wsgen++;
        cu_free(cb, cb->ws);
        cb->ws = NULL;
        cb->ws_size = 0;
    }
    return 0;
}

/* The context reserves a stack for every thread the device can hold at
 * once: cudaLimitStackSize (1 KB by default) x 2048 threads x the SMs, 264
 * MB on an H100's 132 SMs, before any allocation of ours. Our kernels and
 * cuBLAS's need none or little (ptxas: no stack frames, no spills in ours),
 * and a kernel that needs more than the limit makes the driver grow the
 * reservation at its launch and keep it, so asking for the minimum costs
 * only what some kernel really uses. The limit belongs to the device's
 * primary context, shared with any other CUDA user in the process.
 * Lowered only from CUDA's default (1024). SD_CUDA_STACK_BYTES (read here,
 * at backend creation) asks for another value: 1024 measures the default.
 * Failure is harmless: the default stays. */
static void lower_stack_reservation(void)
{
    size_t bytes = 0, now = 0;
    const char *e = getenv("SD_CUDA_STACK_BYTES");
    if (e && *e) {
        bytes = (size_t)strtoull(e, NULL, 10);
    } else if (cudaDeviceGetLimit(&now, cudaLimitStackSize) != cudaSuccess || now != 1024) {
        /* lowered already (a backend before this one) or chosen by another
         * user of the context: left as it is (setting it synchronises the
         * device) */
        (void)cudaGetLastError();
        return;
    }
    if (cudaDeviceSetLimit(cudaLimitStackSize, bytes) != cudaSuccess) (void)cudaGetLastError();
}

/* Version 4: the implicit-GEMM convolution switch (conv_igemm.cu). Not
 * while capturing. A change makes captured graphs stale (they hold the
 * other path's launches), through the scratch generation they check. */
static int api_set_conv_implicit(sd_backend *be, bool on)
{
    cuda_backend *cb = cu_of(be);
    if (cb->capturing) return cu_fail(cb, "conv_implicit changed during a graph capture");
    if (cb->conv_implicit != on) cb->wsgen++;
    cb->conv_implicit = on;
    return 0;
}

void cu_update_inner_type(cuda_backend *cb)
{
    const bool f16_gemms = cb->precision == SD_CUDA_PREC_AUTO ||
                           cb->precision == SD_CUDA_PREC_F16 ||
                           cb->precision == SD_CUDA_PREC_AUTO_VAE_BF16;
    cb->head.base.inner_type = cb->f16_activations && f16_gemms ? SD_ACT_F16 : SD_ACT_F32;
}

/* Version 5: fp16 activations. Tensors already allocated keep their type
 * (every op takes both). A change makes captured graphs stale (their
 * intermediates have the old type), through the scratch generation they
 * check, as the conv_implicit switch does. */
static int api_set_f16_activations(sd_backend *be, bool on)
{
    cuda_backend *cb = cu_of(be);
    if (cb->capturing) return cu_fail(cb, "f16_activations changed during a graph capture");
    if (cb->f16_activations != on) cb->wsgen++;
    cb->f16_activations = on;
    cu_update_inner_type(cb);
    return 0;
}

int cu_types_ok(cuda_backend *cb, const char *op, const sd_tensor *a, const sd_tensor *b,
                const sd_tensor *c, const sd_tensor *d)
{
    const sd_tensor *all[4] = { a, b, c, d };
    for (int i = 0; i < 4; i++) {
        if (!all[i]) continue;
        /* read as an int: a value outside the enum (the caller's C code may
         * hold any) is undefined behaviour as an enum load in C++ */
        int type;
        static_assert(sizeof type == sizeof all[i]->type, "sd_act_type is an int");
        memcpy(&type, &all[i]->type, sizeof type);
        if (type != SD_ACT_F32 && type != SD_ACT_F16)
            return cu_fail(cb, "%s: unknown activation type %d", op, type);
    }
    return 0;
}

int cu_f32_view(cuda_backend *cb, const sd_tensor *t, bool copy_in, sd_tensor *f32)
{
    *f32 = *t;
    if (!cu_is_f16(t)) return 0;
    const size_t n = sd_tensor_numel_of(t);
    f32->type = SD_ACT_F32;
    if (!(f32->data = (float *)cu_malloc(cb, n * sizeof(float)))) {
        f32->data = t->data;   /* nothing to free */
        return cu_fail(cb, "out of GPU memory for a float32 copy of an fp16 operand");
    }
    return copy_in ? cu_convert(cb, t->data, true, f32->data, false, n) : 0;
}

int cu_f32_release(cuda_backend *cb, const sd_tensor *t, sd_tensor *f32, bool copy_out)
{
    if (f32->data == t->data) return 0;
    int rc = copy_out ? cu_convert(cb, f32->data, false, t->data, true, sd_tensor_numel_of(t)) : 0;
    cu_free(cb, f32->data);
    f32->data = t->data;
    return rc;
}

static void fill_ops(sd_backend_ops *o)
{
    memset(o, 0, sizeof *o);
    o->name = "cuda";
    o->destroy = be_destroy;
    o->alloc = be_alloc;
    o->release = be_release;
    o->upload_nchw = be_upload_nchw;
    o->download_nchw = be_download_nchw;
    o->upload = be_upload;
    o->download = be_download;
    o->conv2d = cu_conv2d;
    o->linear = cu_linear;
    o->group_norm = cu_group_norm;
    o->layer_norm = cu_layer_norm;
    o->attention = cu_attention;
    o->activation = cu_activation;
    o->geglu = cu_geglu;
    o->add = cu_add;
    o->add_per_channel = cu_add_per_channel;
    o->concat_channels = cu_concat_channels;
    o->upsample_nearest2x = cu_upsample_nearest2x;
    o->timestep_embedding = cu_timestep_embedding;
    o->embedding = cu_embedding;
}

static sd_backend *api_create(const sd_cuda_options *opt, char *err, size_t errlen);

#ifdef SD_CUDA_EMU
#define SD_CUDA_BUILD "emulated on the CPU (backend/cuda/emu)"
#else
#define SD_CUDA_BUILD "nvcc, sm_90 + compute_90 PTX"
#endif

static const sd_cuda_api the_api = {
    SD_CUDA_API_VERSION,
    sizeof(sd_backend_ops),
    sizeof(sd_backend),
    SD_CUDA_BUILD,
    api_probe,
    api_create,
    api_synchronize,
    api_memory,
    api_set_precision,
    api_set_vram_budget,
    api_pin_host,
    api_unpin_host,
    api_drop_weights,
    api_trim,
    api_set_graphs,
    cu_graph_run,
    cu_graph_free,
    api_set_workspace_limit,
    api_set_conv_implicit,
    api_set_f16_activations,
};

static sd_backend *api_create(const sd_cuda_options *opt, char *err, size_t errlen)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n <= 0 || opt->device < 0 || opt->device >= n) {
        if (err && errlen)
            snprintf(err, errlen, "no CUDA device %d: %s", opt->device,
                     e != cudaSuccess ? cudaGetErrorString(e)
                                      : n <= 0 ? "the driver reports none" : "ordinal out of range");
        (void)cudaGetLastError();
        return NULL;
    }
    cuda_backend *cb = (cuda_backend *)calloc(1, sizeof *cb);
    if (!cb) {
        if (err && errlen) snprintf(err, errlen, "cuda backend: out of memory");
        return NULL;
    }
    fill_ops(&cb->ops);
    cb->head.base.ops = &cb->ops;
    cb->head.api = &the_api;
    cb->device = opt->device;
    cb->precision = opt->precision;
    cb->ws_limit = (opt->workspace_mb ? opt->workspace_mb : DEFAULT_WORKSPACE_MB) << 20;
    cb->ws_default = cb->ws_limit;
    cb->wbudget = opt->vram_budget_mb << 20;
    cb->conv_implicit = opt->conv_implicit;
    cb->f16_activations = opt->f16_activations;
    cu_update_inner_type(cb);

    const char *step = "cudaSetDevice";
    cudaDeviceProp prop;
    cudaMemPoolProps props;
    uint64_t never = UINT64_MAX;
    if ((e = cudaSetDevice(cb->device)) != cudaSuccess) goto cuda_fail;
    step = "cudaGetDeviceProperties";
    if ((e = cudaGetDeviceProperties(&prop, cb->device)) != cudaSuccess) goto cuda_fail;
    cb->sm_count = prop.multiProcessorCount;
    cb->smem_optin = prop.sharedMemPerBlockOptin;
    cb->device_total = prop.totalGlobalMem;
    cu_conv_implicit_init(cb);
    lower_stack_reservation();
    step = "cudaStreamCreate";
    if ((e = cudaStreamCreateWithFlags(&cb->stream, cudaStreamNonBlocking)) != cudaSuccess)
        goto cuda_fail;
    step = "cudaMemPoolCreate";
    memset(&props, 0, sizeof props);
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = cb->device;
    if ((e = cudaMemPoolCreate(&cb->pool, &props)) != cudaSuccess) goto cuda_fail;
    /* keep freed blocks: the same shapes come back every step */
    if ((e = cudaMemPoolSetAttribute(cb->pool, cudaMemPoolAttrReleaseThreshold, &never)) !=
        cudaSuccess)
        goto cuda_fail;
    /* weights: kept too (evictions reuse the space); dropping a range of
     * them trims it (cu_weights_drop_range) */
    step = "cudaMemPoolCreate (weights)";
    if ((e = cudaMemPoolCreate(&cb->wpool, &props)) != cudaSuccess) goto cuda_fail;
    if ((e = cudaMemPoolSetAttribute(cb->wpool, cudaMemPoolAttrReleaseThreshold, &never)) !=
        cudaSuccess)
        goto cuda_fail;
    {
        cublasStatus_t st = cublasCreate(&cb->blas);
        if (st == CUBLAS_STATUS_SUCCESS) st = cublasSetStream(cb->blas, cb->stream);
        if (st != CUBLAS_STATUS_SUCCESS) {
            if (err && errlen)
                snprintf(err, errlen, "cuBLAS initialisation failed: %s",
                         cublasGetStatusString(st));
            be_destroy(&cb->head.base);
            return NULL;
        }
    }
    /* cuBLASLt (bias and residual in the GEMM itself); without it the
     * GEMMs run through cublasGemmEx with a pre-filled output */
    if (cublasLtCreate(&cb->lt) != CUBLAS_STATUS_SUCCESS) cb->lt = NULL;
    if (opt->graphs && api_set_graphs(&cb->head.base, true) != 0) {
        if (err && errlen) snprintf(err, errlen, "%s", cb->head.base.err);
        be_destroy(&cb->head.base);
        return NULL;
    }
    sample_device_memory(cb);
    return &cb->head.base;

cuda_fail:
    if (err && errlen) snprintf(err, errlen, "%s: %s", step, cudaGetErrorString(e));
    (void)cudaGetLastError();
    be_destroy(&cb->head.base);
    return NULL;
}

extern "C" __attribute__((visibility("default"))) const sd_cuda_api *hn_sd_cuda_api(void)
{
    return &the_api;
}
