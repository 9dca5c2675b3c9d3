/* cuda_backend.h - the CUDA implementation of backend/ops.h, as seen from the
 * engine and the plugin glue (plain C, no CUDA headers).
 *
 * The CUDA code lives in its own shared library, libhn-sd-cuda.so (built
 * from backend/cuda/ with nvcc only where nvcc exists), so that cuda-sd.so
 * never links CUDA and loads on machines without it. The loader
 * (backend/cuda_loader.c) finds that library at run time with dlopen:
 *   1. sd_cuda_options.lib_path when set,
 *   2. $HN_SD_CUDA_LIB when set,
 *   3. beside the module that holds the loader: <dir>/../lib/, <dir>/ and
 *      <dir>/../../lib/ (build/plugins/cuda-sd.so -> build/lib/; the test
 *      programs in build/tests/cuda-sd/ -> build/lib/),
 *   4. the dynamic linker's search path ("libhn-sd-cuda.so").
 * Once loaded, the library stays loaded for the life of the process (CUDA
 * runtimes must not be unloaded while contexts may exist).
 *
 * Precision (see backend/cuda/ for the kernels): activations are float32 in
 * device memory as ops.h says, except a network's intermediates when fp16
 * activations are on (sd_backend_cuda_set_f16_activations: fp16 storage,
 * float32 math inside every op); GEMMs (convolutions, linears) run on tensor
 * cores with fp16 weights and fp16-rounded inputs, accumulating in float32
 * (SD_CUDA_PREC_AUTO/F16); attention keeps scores and softmax in float32. In
 * AUTO mode the VAE's weights (names under first_stage_model., encoder.,
 * decoder., quant_conv., post_quant_conv.) run in TF32 with float32 weights
 * instead, because the VAE overflows fp16. SD_CUDA_PREC_AUTO_VAE_BF16
 * (opt-in) runs the VAE's GEMMs in bf16 instead: bf16 weights on the device
 * (half the VAE's weight memory) and bf16-rounded inputs, float32
 * accumulation and outputs; bf16 has float32's range, so no overflow, but
 * 8 significant bits: about 10x the TF32 VAE's error (0.02-0.045 on the tiny
 * golden VAEs, over their 1e-2 AUTO tolerance), hence not the default.
 * GroupNorm statistics, element-wise math and the VAE's one-head attention
 * (TF32) stay as in AUTO.
 */
#ifndef SD_BACKEND_CUDA_BACKEND_H
#define SD_BACKEND_CUDA_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

#include "backend/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SD_CUDA_PREC_AUTO = 0,  /* fp16 tensor cores; the VAE in TF32 */
    SD_CUDA_PREC_F16,       /* fp16 everywhere (VAE too) */
    SD_CUDA_PREC_TF32,      /* float32 weights, TF32 tensor cores */
    SD_CUDA_PREC_F32,       /* plain float32 math (reference, slow) */
    SD_CUDA_PREC_AUTO_VAE_BF16  /* fp16 tensor cores; the VAE's GEMMs in bf16
                                   with bf16 weights (opt-in, see above) */
} sd_cuda_precision;

typedef struct sd_cuda_options {
    int device;                  /* CUDA device ordinal */
    sd_cuda_precision precision;
    size_t workspace_mb;         /* im2col / attention scratch; 0 = 128 */
    const char *lib_path;        /* libhn-sd-cuda.so to load; NULL = search */
    size_t vram_budget_mb;       /* device memory the weight cache may hold;
                                    0 = no limit. Past it, the least recently
                                    used weights are evicted (and uploaded
                                    again from host RAM when next used). */
    bool graphs;                 /* CUDA graphs for passes run through
                                    sd_backend_cuda_graph_run (the UNet
                                    step); default off */
    bool conv_implicit;          /* (API version 4) fp16 convolutions as an
                                    implicit GEMM on tensor cores, without
                                    the im2col patch matrix; default off
                                    (im2col + cuBLAS) */
    bool f16_activations;        /* (API version 5) networks' intermediates
                                    (sd_tensor_new_inner: the UNet's) in
                                    fp16 in the fp16 precisions; default off
                                    (float32) */
} sd_cuda_options;

typedef struct sd_cuda_info {
    int device_count;
    char name[128];              /* device 0's name */
    int cc_major, cc_minor;      /* device 0's compute capability */
    size_t total_mem;            /* device 0's memory, bytes */
    int runtime_version;         /* cudaRuntimeGetVersion */
    int driver_version;          /* cudaDriverGetVersion */
    char lib_path[512];          /* the library that answered */
} sd_cuda_info;

/* Memory of one CUDA backend, bytes. */
typedef struct sd_cuda_memory {
    size_t weights;              /* cached weights now */
    size_t activations;          /* activation/workspace pool in use now */
    size_t activations_peak;     /* its high-water mark since creation/reset */
    size_t device_used;          /* whole device: total - free (all users) */
    size_t device_used_peak;     /* highest device_used this backend sampled */
    size_t device_total;
    size_t weights_budget;       /* vram budget, 0 = none */
    size_t weights_peak;         /* most weight bytes cached at once */
    unsigned long long weight_uploads;   /* tensors uploaded (misses) */
    unsigned long long weight_evictions; /* tensors evicted for the budget */
    unsigned long long bytes_uploaded;   /* host -> device weight bytes */
    size_t host_pinned;          /* host bytes registered by pin_host */
    /* CUDA graphs (sd_backend_cuda_graph_run), since creation */
    unsigned long long graph_captures;   /* passes captured + instantiated */
    unsigned long long graph_launches;   /* passes run as one graph launch */
    unsigned long long graph_eager;      /* passes run op by op with graphs
                                            on (capture refused or failed,
                                            or the emulation) */
    unsigned long long conv_implicit_calls; /* convolutions run by the
                                            implicit-GEMM kernel (API 4) */
} sd_cuda_memory;

/* Loads the library and asks the CUDA runtime for devices. Returns 0 when a
 * usable device exists (info filled), -1 otherwise with the reason in err
 * ("libhn-sd-cuda.so not found ...", "no CUDA device: ..."). info may be
 * NULL; lib_path NULL = the default search. */
int sd_cuda_probe(const char *lib_path, sd_cuda_info *info, char *err, size_t errlen);

/* Creates a CUDA backend (opt NULL = defaults: device 0, AUTO). NULL with a
 * message in err when the library, the driver or the device is missing.
 * Destroy with sd_backend_destroy(). */
sd_backend *sd_backend_cuda_create(const sd_cuda_options *opt, char *err, size_t errlen);

/* True for a backend made by sd_backend_cuda_create(). */
bool sd_backend_is_cuda(const sd_backend *be);

/* Waits for the backend's queued work (timing). 0 or -1 (sd_backend_error). */
int sd_backend_cuda_synchronize(sd_backend *be);

/* Memory figures; reset_peak restarts the high-water marks. 0 or -1. */
int sd_backend_cuda_memory(sd_backend *be, sd_cuda_memory *out, bool reset_peak);

/* The precision of the ops queued from now on; *old (may be NULL) gets the
 * previous one. The VAE's NaN fallback (engine/vae_decode.h) redoes a
 * decode in a stricter precision with it. 0 or -1. */
int sd_backend_cuda_set_precision(sd_backend *be, sd_cuda_precision p, sd_cuda_precision *old);

/* Changes the weight cache's VRAM budget (bytes, 0 = none); evicts down to
 * it now. 0 or -1. */
int sd_backend_cuda_set_vram_budget(sd_backend *be, size_t bytes);

/* Page-locks host memory holding weights (a model file's tensors) so their
 * uploads run at full PCIe speed without a bounce copy: cudaHostRegister,
 * read-only. -1 (with the reason) when the driver refuses; uploads from
 * that memory still work, only slower. unpin_host undoes it (p as given). */
int sd_backend_cuda_pin_host(sd_backend *be, const void *p, size_t bytes);
void sd_backend_cuda_unpin_host(sd_backend *be, const void *p);

/* Frees the device copies of every cached weight whose host data lies in
 * [lo, hi) (a model file that is being closed or swapped out). Returns the
 * device bytes freed, or -1. */
long long sd_backend_cuda_drop_weights(sd_backend *be, const void *lo, const void *hi);

/* Returns the activation pool's unused blocks and the scratch workspace to
 * the device (after a whole image: what stays is weights and live
 * tensors). 0 or -1. */
int sd_backend_cuda_trim(sd_backend *be);

/* ---- CUDA graphs (API version 3) ----
 * A caller-owned slot holds one captured pass (one shape, one set of
 * input/output addresses); NULL = nothing captured yet. */
typedef struct sd_cuda_graph sd_cuda_graph;

/* Turns graph capture on or off for later graph_run calls (off: they just
 * call fn). 0 or -1. */
int sd_backend_cuda_set_graphs(sd_backend *be, bool on);
/* True when be is a CUDA backend with graphs on. */
bool sd_backend_cuda_graphs_on(sd_backend *be);
/* Runs fn(ud), which queues ops on be and returns 0 or -1. With graphs on,
 * the first call captures what fn queues into a graph kept in *slot and
 * launches it; later calls only launch the graph, WITHOUT calling fn. So
 * fn must read and write only device tensors whose addresses stay the same
 * between calls (inputs uploaded and outputs downloaded by the caller,
 * outside fn), allocate and free its own intermediates, use only weights
 * already on the device (a pass run once before), and leave no host-side
 * effects the caller needs. fn may be called TWICE in one call (a capture
 * that failed, e.g. on a weight upload or scratch growth, is followed by an
 * eager run), so it must not carry state in ud from one run to the next.
 * The graph is captured again when weights were evicted or dropped or the
 * scratch workspace was freed since; any failure of the graph API runs fn
 * eagerly. The ops are queued, not waited for. 0 or -1 (sd_backend_error). */
int sd_backend_cuda_graph_run(sd_backend *be, sd_cuda_graph **slot, int (*fn)(void *ud),
                              void *ud);
/* Frees a slot (NULL is fine); *slot may not be used after. */
void sd_backend_cuda_graph_free(sd_backend *be, sd_cuda_graph *slot);

/* The largest scratch (im2col slices, attention score slices) later ops
 * may use, bytes (0 = the creation value); a smaller one means more,
 * smaller GEMMs and less device memory. *old (may be NULL) gets the
 * previous limit. A scratch already larger is freed. 0 or -1. */
int sd_backend_cuda_set_workspace_limit(sd_backend *be, size_t bytes, size_t *old);

/* ---- implicit-GEMM convolutions (API version 4) ----
 * Turns the implicit-GEMM convolution on or off for the convolutions
 * queued from now on: fp16 weights (AUTO/F16, not the VAE in AUTO), Cin a
 * multiple of 8, anything but 1x1 stride-1 unpadded (those are plain
 * GEMMs already); other convolutions keep im2col + cuBLAS. Off: im2col
 * for all. 0 or -1. */
int sd_backend_cuda_set_conv_implicit(sd_backend *be, bool on);

/* ---- fp16 activations (API version 5) ----
 * Turns fp16 storage of networks' intermediates on or off for the tensors
 * allocated from now on (ops.h sd_tensor_new_inner; be->inner_type): fp16
 * in the AUTO, F16 and AUTO_VAE_BF16 precisions, float32 in TF32/F32 (and
 * while off). Every op takes both types in any mix, computing in float32:
 * GEMM inputs are fp16 anyway, so what changes is that their outputs, the
 * residual stream and the norms' and element-wise ops' inputs and outputs
 * are rounded to fp16 (as in PyTorch fp16 inference) and half as many
 * bytes move. 0 or -1. */
int sd_backend_cuda_set_f16_activations(sd_backend *be, bool on);

/* ---- the library's side (backend/cuda/, loader-private) ------------------ */

/* The library exports one symbol, SD_CUDA_API_SYMBOL, a function returning
 * this table; the loader checks version and struct sizes before use. */
#define SD_CUDA_API_VERSION 5
#define SD_CUDA_API_SYMBOL "hn_sd_cuda_api"
#define SD_CUDA_LIB_NAME "libhn-sd-cuda.so"

typedef struct sd_cuda_api {
    int version;                 /* SD_CUDA_API_VERSION */
    size_t ops_size;             /* sizeof(sd_backend_ops) it was built with */
    size_t backend_size;         /* sizeof(sd_backend) */
    const char *build;           /* "nvcc 13.0 sm_90+ptx" or "emulated" */
    int (*probe)(sd_cuda_info *info, char *err, size_t errlen);
    sd_backend *(*create)(const sd_cuda_options *opt, char *err, size_t errlen);
    int (*synchronize)(sd_backend *be);
    int (*memory)(sd_backend *be, sd_cuda_memory *out, bool reset_peak);
    /* ---- version 2 ---- */
    int (*set_precision)(sd_backend *be, sd_cuda_precision p, sd_cuda_precision *old);
    int (*set_vram_budget)(sd_backend *be, size_t bytes);
    int (*pin_host)(sd_backend *be, const void *p, size_t bytes);
    void (*unpin_host)(sd_backend *be, const void *p);
    long long (*drop_weights)(sd_backend *be, const void *lo, const void *hi);
    int (*trim)(sd_backend *be);
    /* ---- version 3 ---- */
    int (*set_graphs)(sd_backend *be, bool on);
    int (*graph_run)(sd_backend *be, sd_cuda_graph **slot, int (*fn)(void *ud), void *ud);
    void (*graph_free)(sd_backend *be, sd_cuda_graph *slot);
    int (*set_workspace_limit)(sd_backend *be, size_t bytes, size_t *old);
    /* ---- version 4 ---- */
    int (*set_conv_implicit)(sd_backend *be, bool on);
    /* ---- version 5 ---- */
    int (*set_f16_activations)(sd_backend *be, bool on);
} sd_cuda_api;

typedef const sd_cuda_api *(*sd_cuda_api_fn)(void);

/* Every CUDA backend handle starts with this, so the loader can reach the
 * library's table from a backend. */
typedef struct sd_cuda_backend_head {
    sd_backend base;             /* must be first (ops.h) */
    const sd_cuda_api *api;
    bool graphs_on;              /* set_graphs' state, read by the loader */
} sd_cuda_backend_head;

#ifdef __cplusplus
}
#endif
#endif
