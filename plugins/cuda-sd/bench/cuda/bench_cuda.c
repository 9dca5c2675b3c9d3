/* bench_cuda.c - speed, memory and agreement of the CUDA backend on an
 * SD1.5-shaped checkpoint with random F16 weights (bench/sd15_weights.h);
 * the second half of `make gpu-check`.
 *
 *   bench_cuda [--weights FILE] [--vocab FILE] [--runs N] [--steps N]
 *              [--size PX] [--compare-size PX] [--profile] [--no-image]
 *              [--no-compare]
 *
 * 1. UNet: one CFG step = one forward with batch 2 at --size (512: 64x64
 *    latent), the first pass timed apart (it uploads and converts the
 *    weights), then --runs passes; each pass includes the host transfers of
 *    x, context and the output, as the sampler does them. Then the same
 *    passes with CUDA graphs on (sd_backend_cuda_set_graphs): capture time,
 *    steps/s, how many passes really ran as graphs, and the output checked
 *    against the eager one (exit status 1 beyond 1e-2). Then the same with
 *    the implicit-GEMM convolutions (sd_backend_cuda_set_conv_implicit,
 *    conv_igemm.cu) instead of im2col + cuBLAS: eager and graph steps/s,
 *    convolutions it ran, its output against the im2col one (exit status 1
 *    beyond 1e-2) and, with --profile, its per-op profile. Then, in a table
 *    of its own, the same with fp16 activations (cuda_f16_activations,
 *    sd_backend_cuda_set_f16_activations: the UNet's intermediates in fp16,
 *    its cross-attention K/V recomputed in fp16), alone and with the
 *    implicit-GEMM convolutions (which then read the fp16 input in place):
 *    first pass, eager and graph steps/s, graph counts, the activation
 *    peak of its own passes against the float32 one, its eager and graph
 *    outputs against the float32-activation im2col output (exit status 1
 *    beyond 1e-2) and, with --profile, the per-op profiles of both.
 * 1b. Each 3x3 conv shape of that UNet (--no-conv-sweep: skipped): im2col
 *    + cuBLAS against the implicit-GEMM kernel with its own choice of
 *    block shape and K splits and with each shape forced (SD_CUDA_IGEMM):
 *    us a conv and TFLOP/s, to tune ig_pick on the GPU at hand.
 * 2. Agreement with the CPU backend (the numerical reference) on the same
 *    random SD1.5 weights at --compare-size: UNet (AUTO, AUTO with fp16
 *    activations, F32 precision), VAE decode and the text encoder; the
 *    relative error
 *    max|cuda - cpu| / max|cpu| must stay under a bound per precision
 *    (exit status 1 otherwise).
 * 3. Whole image: engine/pipeline.h txt2img on the CUDA backend (text
 *    encoder, --steps k_euler CFG steps, VAE decode, 8-bit conversion)
 *    after one warm-up generation, for each memory option (default pool
 *    trimming, pool kept, offload levels, VAE tiles, graphs): the device
 *    peak of each phase (text encoder, steps, VAE; sd_pipeline_memory) and
 *    a summary table comparing them; also with the implicit-GEMM
 *    convolutions (cuda_conv_implicit: no im2col scratch), without and with
 *    graphs, and with fp16 activations (cuda_f16_activations) alone, with
 *    graphs, with the implicit-GEMM convolutions (with and without graphs)
 *    and with sequential offload; then graphs + fp16 activations with the
 *    bf16 VAE, the offload levels (encoders: the plugin's defaults) and VAE
 *    tiles (the configurations that keep an image under 3 GB); then each
 *    fp16-activation configuration beside its float32 twin (steps-phase
 *    and whole-image peaks, per step).
 * 4. Model swap (engine/model_cache.h): the checkpoint opened in a model
 *    cache (its tensors page-locked in host RAM), a small image made once
 *    so every weight txt2img uses is on the GPU, then its device copies
 *    dropped and the same image made again: the difference to a run with
 *    the weights resident is the swap of a cached model from host RAM into
 *    VRAM (uploads + fp16/fp32 conversion + allocation); also without the
 *    page-locking, for comparison.
 * --memory-plan: no GPU needed. Only phase 3's memory, computed by the
 *    emulated library (libhn-sd-cuda-emu.so beside the program in
 *    ../../lib/, or $HN_SD_CUDA_LIB) in a dry run (SD_EMU_DRY_RUN: every
 *    allocation, launch check and GEMM shape of the real passes, no
 *    arithmetic): the exact peak of the backend's own device memory per
 *    phase and what is live at it (SD_EMU_MEMTRACE), for each memory
 *    option without CUDA graphs (the emulation never reuses graph memory
 *    inside a graph, a GPU does), and the fp16-activation configurations
 *    beside their float32 twins. The CUDA context and cuBLAS's own memory
 *    are not in it.
 * Results are printed as Markdown for docs/BENCHMARKS.md. --profile adds a
 * per-op breakdown of one UNet pass (each op synchronised, so it shows
 * where GPU time goes, not the overlapped total).
 */
#include <dlfcn.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend/cpu_backend.h"
#include "backend/cuda_backend.h"
#include "bench/sd15_weights.h"
#include "engine/clip.h"
#include "engine/family.h"
#include "engine/half.h"
#include "engine/model_cache.h"
#include "engine/model_file.h"
#include "engine/pipeline.h"
#include "engine/unet.h"
#include "engine/vae.h"
#include "engine/vae_decode.h"

typedef struct opts {
    const char *weights, *vocab;
    int runs, steps, size, compare_size;
    int profile, image, compare;
    int memory_plan;             /* --memory-plan: emulated dry run, memory only */
    int sweep;                   /* the per-shape conv table (--no-conv-sweep: off) */
} opts;

/* The emulated library's report of what was live at its high-water mark
 * (emu/cuda_emu.cpp); "" with a real GPU library. */
static void emu_report(char *buf, size_t len)
{
    buf[0] = '\0';
    const char *lib = getenv("HN_SD_CUDA_LIB");
    void *h = lib ? dlopen(lib, RTLD_NOW | RTLD_NOLOAD) : NULL;
    void (*report)(char *, size_t) = NULL;
    if (h) *(void **)&report = dlsym(h, "sd_emu_memory_report");
    if (report) report(buf, len);
    if (h) dlclose(h);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static float *random_floats(size_t n, unsigned seed, float scale)
{
    float *a = malloc(n * sizeof(float));
    if (!a) {
        fprintf(stderr, "bench_cuda: out of memory\n");
        exit(1);
    }
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        float v = 0;            /* sum of 4 uniforms: roughly normal */
        for (int k = 0; k < 4; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            v += (float)((s >> 40) * (1.0 / 16777216.0)) - 0.5f;
        }
        a[i] = v * 1.732f * scale;
    }
    return a;
}

/* The message goes to both streams: the GPU check keeps stdout (bench.md)
 * and may lose stderr; what was printed of the report so far goes first. */
static void die(const char *what, const char *err)
{
    fflush(stdout);
    printf("\n**bench_cuda failed: %s: %s**\n", what, err && err[0] ? err : "(no message)");
    fflush(stdout);
    fprintf(stderr, "bench_cuda: %s: %s\n", what, err && err[0] ? err : "(no message)");
    fflush(stderr);
    exit(1);
}

static sd_backend *make_cuda(sd_cuda_precision prec)
{
    char err[512];
    sd_cuda_options o = { 0, prec, 0, NULL, 0, false, false, false };
    sd_backend *be = sd_backend_cuda_create(&o, err, sizeof err);
    if (!be) die("CUDA backend", err);
    return be;
}

/* ---- per-op profile: a wrapper vtable that synchronises after each op --- */

enum { P_CONV, P_LINEAR, P_GN, P_LN, P_ATT, P_ELEM, P_XFER, P_N };
static const char *const prof_names[P_N] = { "conv2d", "linear", "group_norm", "layer_norm",
                                             "attention", "element-wise", "transfers" };
/* A benchmark tool, one backend profiled at a time: file-level state. */
static const sd_backend_ops *orig_ops;
static sd_backend_ops prof_ops;
static double prof_s[P_N];
static long prof_n[P_N];

#define TIMED(kind, call)                             \
    do {                                              \
        double t0_ = now();                           \
        int rc_ = (call);                             \
        if (rc_ == 0) rc_ = sd_backend_cuda_synchronize(be); \
        prof_s[kind] += now() - t0_;                  \
        prof_n[kind]++;                               \
        return rc_;                                   \
    } while (0)

static int p_conv(sd_backend *be, const sd_tensor *x, const sd_tensor_info *w,
                  const sd_tensor_info *b, const sd_conv_params *p, const sd_tensor *r, sd_tensor *o)
{ TIMED(P_CONV, orig_ops->conv2d(be, x, w, b, p, r, o)); }
static int p_linear(sd_backend *be, const sd_tensor *x, const sd_tensor_info *w,
                    const sd_tensor_info *b, const sd_tensor *r, sd_tensor *o)
{ TIMED(P_LINEAR, orig_ops->linear(be, x, w, b, r, o)); }
static int p_gn(sd_backend *be, const sd_tensor *x, int g, float eps, const sd_tensor_info *ga,
                const sd_tensor_info *bt, bool silu, sd_tensor *o)
{ TIMED(P_GN, orig_ops->group_norm(be, x, g, eps, ga, bt, silu, o)); }
static int p_ln(sd_backend *be, const sd_tensor *x, const sd_tensor_info *g,
                const sd_tensor_info *b, float eps, sd_tensor *o)
{ TIMED(P_LN, orig_ops->layer_norm(be, x, g, b, eps, o)); }
static int p_att(sd_backend *be, const sd_tensor *q, const sd_tensor *k, const sd_tensor *v,
                 int h, float s, bool c, sd_tensor *o)
{ TIMED(P_ATT, orig_ops->attention(be, q, k, v, h, s, c, o)); }
static int p_act(sd_backend *be, sd_activation a, const sd_tensor *x, sd_tensor *o)
{ TIMED(P_ELEM, orig_ops->activation(be, a, x, o)); }
static int p_geglu(sd_backend *be, const sd_tensor *x, sd_tensor *o)
{ TIMED(P_ELEM, orig_ops->geglu(be, x, o)); }
static int p_add(sd_backend *be, const sd_tensor *a, const sd_tensor *b, sd_tensor *o)
{ TIMED(P_ELEM, orig_ops->add(be, a, b, o)); }
static int p_addpc(sd_backend *be, const sd_tensor *x, const sd_tensor *v, sd_tensor *o)
{ TIMED(P_ELEM, orig_ops->add_per_channel(be, x, v, o)); }
static int p_cat(sd_backend *be, const sd_tensor *a, const sd_tensor *b, sd_tensor *o)
{ TIMED(P_ELEM, orig_ops->concat_channels(be, a, b, o)); }
static int p_up(sd_backend *be, const sd_tensor *x, sd_tensor *o)
{ TIMED(P_ELEM, orig_ops->upsample_nearest2x(be, x, o)); }
static int p_upl(sd_backend *be, const float *h, sd_tensor *t)
{ TIMED(P_XFER, orig_ops->upload_nchw(be, h, t)); }
static int p_dnl(sd_backend *be, const sd_tensor *t, float *h)
{ TIMED(P_XFER, orig_ops->download_nchw(be, t, h)); }

static void install_profiler(sd_backend *be)
{
    orig_ops = be->ops;
    prof_ops = *be->ops;
    prof_ops.conv2d = p_conv;
    prof_ops.linear = p_linear;
    prof_ops.group_norm = p_gn;
    prof_ops.layer_norm = p_ln;
    prof_ops.attention = p_att;
    prof_ops.activation = p_act;
    prof_ops.geglu = p_geglu;
    prof_ops.add = p_add;
    prof_ops.add_per_channel = p_addpc;
    prof_ops.concat_channels = p_cat;
    prof_ops.upsample_nearest2x = p_up;
    prof_ops.upload_nchw = p_upl;
    prof_ops.download_nchw = p_dnl;
    be->ops = &prof_ops;
    memset(prof_s, 0, sizeof prof_s);
    memset(prof_n, 0, sizeof prof_n);
}

static void remove_profiler(sd_backend *be) { be->ops = orig_ops; }

/* ---- phases ------------------------------------------------------------------ */

static void open_model(const opts *o, sd_model_file **f, sd_family_info *fam)
{
    char err[512];
    if (sd_model_file_open(o->weights, f, err, sizeof err)) die("model", err);
    /* "": no sidecar config (the random checkpoint has none) */
    if (sd_family_detect_with_config(*f, "", fam, err, sizeof err)) die("family", err);
}

static void mem_line(const char *label, sd_backend *be)
{
    sd_cuda_memory m;
    if (sd_backend_cuda_memory(be, &m, false) != 0) return;
    printf("| %s: weights on the GPU | %.0f MB |\n", label, m.weights / 1048576.0);
    printf("| %s: activations + scratch, peak | %.0f MB |\n", label,
           m.activations_peak / 1048576.0);
    printf("| %s: whole device in use, peak seen (CUDA context and cuBLAS included) | %.0f MB |\n",
           label, m.device_used_peak / 1048576.0);
}

static double rel_err(const float *a, const float *b, size_t n);

/* One UNet pass with the per-op profiler installed; prints the table. */
static void profile_pass(sd_backend *be, sd_unet *u, const float *x, const float *t,
                         const float *ctx, int L, int B, int lat, float *out, const char *what)
{
    char err[512];
    install_profiler(be);
    double p0 = now();
    if (sd_unet_forward(u, x, t, ctx, L, B, lat, lat, out, err, sizeof err)) die("UNet", err);
    double total = now() - p0;
    remove_profiler(be);
    printf("\nPer-op time of one pass%s, each op synchronised (%.2f ms in all):\n\n", what,
           total * 1e3);
    printf("| op | calls | ms | share |\n|---|---|---|---|\n");
    for (int k = 0; k < P_N; k++)
        printf("| %s | %ld | %.2f | %.0f%% |\n", prof_names[k], prof_n[k], prof_s[k] * 1e3,
               100.0 * prof_s[k] / total);
}

/* `runs` timed UNet passes into out: mean and best seconds. */
static void timed_passes(sd_unet *u, const float *x, const float *t, const float *ctx, int L,
                         int B, int lat, float *out, int runs, double *mean, double *best,
                         const char *what)
{
    char err[512];
    double sum = 0;
    *best = 1e30;
    for (int i = 0; i < runs; i++) {
        double t0 = now();
        if (sd_unet_forward(u, x, t, ctx, L, B, lat, lat, out, err, sizeof err)) die(what, err);
        double dt = now() - t0;
        sum += dt;
        if (dt < *best) *best = dt;
    }
    *mean = sum / runs;
}

/* The CFG step with the implicit-GEMM convolutions (cuda_conv_implicit,
 * conv_igemm.cu) instead of im2col + cuBLAS, eager and as CUDA graphs, its
 * UNet output against the im2col one (`ref`), and its per-op profile. The
 * pool is trimmed and the peaks restart first, so its memory line is its
 * own; *eager_mean and
 * *eager_peak (activations + scratch) get its eager figures (0 when it
 * could not be turned on). Returns 1 when the outputs disagree beyond 1e-2,
 * else 0. */
static int implicit_conv_rows(const opts *o, sd_backend *be, sd_unet *u, const float *x,
                              const float *t, const float *ctx, int L, int B, int lat,
                              const float *ref, size_t nx, double im2col_mean,
                              double *eager_mean, size_t *eager_peak)
{
    *eager_mean = 0;
    *eager_peak = 0;
    char err[512];
    if (sd_backend_cuda_set_conv_implicit(be, true) != 0) {
        printf("| implicit-GEMM convolutions | could not be turned on: %s |\n",
               sd_backend_error(be));
        return 0;
    }
    float *iout = malloc(nx * sizeof *iout);
    if (!iout) die("bench", "out of memory");
    sd_cuda_memory m0, m1, me;
    /* the im2col passes' scratch goes back first, then the peaks restart:
     * its own memory line */
    sd_backend_cuda_trim(be);
    sd_backend_cuda_memory(be, &m0, true);
    double t0 = now();
    if (sd_unet_forward(u, x, t, ctx, L, B, lat, lat, iout, err, sizeof err))
        die("UNet (implicit convolutions)", err);
    double first = now() - t0;
    sd_backend_cuda_memory(be, &m1, false);
    double mean, best;
    timed_passes(u, x, t, ctx, L, B, lat, iout, o->runs, &mean, &best,
                 "UNet (implicit convolutions)");
    sd_backend_cuda_memory(be, &me, false);
    *eager_mean = mean;
    *eager_peak = me.activations_peak;
    const double d = rel_err(iout, ref, nx);
    const int failed = !(d <= 1e-2);
    printf("| implicit-GEMM convolutions (cuda_conv_implicit): convolutions of one pass run by "
           "the kernel | %llu |\n", m1.conv_implicit_calls - m0.conv_implicit_calls);
    printf("| implicit-GEMM convolutions: first pass | %.2f ms |\n", first * 1e3);
    printf("| CFG step, implicit-GEMM convolutions, eager, mean of %d | %.2f ms (best %.2f; "
           "im2col %.2f) |\n", o->runs, mean * 1e3, best * 1e3, im2col_mean * 1e3);
    printf("| **sampler steps/s (CFG), implicit-GEMM convolutions, eager** | **%.1f** |\n",
           1.0 / mean);
    printf("| implicit-GEMM vs im2col UNet output, max abs diff / max abs | %.2e (bound 1e-2) %s "
           "|\n", d, failed ? "**FAIL**" : "ok");
    if (sd_backend_cuda_set_graphs(be, true) == 0) {
        float *gout = malloc(nx * sizeof *gout);
        if (!gout) die("bench", "out of memory");
        if (sd_unet_forward(u, x, t, ctx, L, B, lat, lat, gout, err, sizeof err))
            die("UNet (implicit convolutions, graphs)", err);
        double gmean, gbest;
        timed_passes(u, x, t, ctx, L, B, lat, gout, o->runs, &gmean, &gbest,
                     "UNet (implicit convolutions, graphs)");
        printf("| CFG step, implicit-GEMM convolutions + CUDA graphs, mean of %d | %.2f ms "
               "(best %.2f) |\n", o->runs, gmean * 1e3, gbest * 1e3);
        printf("| **sampler steps/s (CFG), implicit-GEMM convolutions + CUDA graphs** | "
               "**%.1f** |\n", 1.0 / gmean);
        printf("| implicit-GEMM: graphs vs eager output, max abs diff / max abs | %.2e |\n",
               rel_err(gout, iout, nx));
        sd_backend_cuda_set_graphs(be, false);
        free(gout);
    }
    mem_line("UNet with implicit-GEMM convolutions", be);
    if (o->profile)
        profile_pass(be, u, x, t, ctx, L, B, lat, iout, " with implicit-GEMM convolutions");
    sd_backend_cuda_set_conv_implicit(be, false);
    free(iout);
    return failed;
}

/* fp16 activations round every op's output and the residual stream to fp16
 * (11 significant bits); on the random-weight SD1.5 UNet the output should
 * stay within 1e-2 of the float32-activation one, relative to its max (the
 * emulation at 64x64: 2.3e-3, 2.6e-3 with the implicit-GEMM convolutions). */
static const double f16_activation_bound = 1e-2;

/* What the float32-activation passes measured, for the fp16 rows to compare
 * against (eager im2col; eager implicit-GEMM, 0 when it was not run). */
typedef struct f32_figures {
    double im2col_mean, implicit_mean;
    size_t im2col_peak, implicit_peak;   /* activations + scratch, peak */
} f32_figures;

/* The CFG step with the backend's current settings (`what`: the rows'
 * label): first pass, eager passes, their memory (pool trimmed and peaks
 * restarted first, so the line is this setting's own), then the same as CUDA graphs; the
 * eager and the graph outputs against `ref` (the float32-activation im2col
 * output) at f16_activation_bound; f32_what, f32_mean and f32_peak: the
 * float32-activation setting its time and memory are compared with.
 * eager_out gets the eager output. Returns 1 when either disagrees beyond
 * the bound, else 0. */
static int setting_rows(const opts *o, sd_backend *be, sd_unet *u, const float *x,
                        const float *t, const float *ctx, int L, int B, int lat,
                        const float *ref, size_t nx, const char *what, const char *f32_what,
                        double f32_mean, size_t f32_peak, float *eager_out)
{
    char err[512];
    sd_cuda_memory m0, m1;
    /* the earlier settings' scratch goes back first, then the peaks
     * restart: this setting's own memory line */
    sd_backend_cuda_trim(be);
    sd_backend_cuda_memory(be, &m0, true);
    double t0 = now();
    if (sd_unet_forward(u, x, t, ctx, L, B, lat, lat, eager_out, err, sizeof err)) die(what, err);
    const double first = now() - t0;
    double mean, best;
    timed_passes(u, x, t, ctx, L, B, lat, eager_out, o->runs, &mean, &best, what);
    sd_backend_cuda_memory(be, &m1, false);
    const double d = rel_err(eager_out, ref, nx);
    int failed = !(d <= f16_activation_bound);
    printf("| %s: first pass | %.2f ms |\n", what, first * 1e3);
    printf("| %s: convolutions of one pass run by the implicit-GEMM kernel | %llu |\n", what,
           (m1.conv_implicit_calls - m0.conv_implicit_calls) / (unsigned long long)(o->runs + 1));
    printf("| CFG step, %s, eager, mean of %d | %.2f ms (best %.2f; %s %.2f) |\n", what,
           o->runs, mean * 1e3, best * 1e3, f32_what, f32_mean * 1e3);
    printf("| **sampler steps/s (CFG), %s, eager** | **%.1f** |\n", what, 1.0 / mean);
    printf("| %s vs float32 activations (im2col) UNet output, max abs diff / max abs | %.2e "
           "(bound %.0e) %s |\n", what, d, f16_activation_bound, failed ? "**FAIL**" : "ok");
    mem_line(what, be);
    printf("| %s: activations + scratch, peak of the eager passes vs %s | %.0f MB vs %.0f MB "
           "|\n", what, f32_what, m1.activations_peak / 1048576.0, f32_peak / 1048576.0);
    if (sd_backend_cuda_set_graphs(be, true) != 0) {
        printf("| %s: CUDA graphs | could not be turned on: %s |\n", what, sd_backend_error(be));
        return failed;
    }
    float *gout = malloc(nx * sizeof *gout);
    if (!gout) die("bench", "out of memory");
    sd_cuda_memory g0, g1;
    sd_backend_cuda_memory(be, &g0, false);
    t0 = now();
    if (sd_unet_forward(u, x, t, ctx, L, B, lat, lat, gout, err, sizeof err)) die(what, err);
    const double capture = now() - t0;
    double gmean, gbest;
    timed_passes(u, x, t, ctx, L, B, lat, gout, o->runs, &gmean, &gbest, what);
    sd_backend_cuda_memory(be, &g1, false);
    const double dg = rel_err(gout, ref, nx);
    const int gfailed = !(dg <= f16_activation_bound);
    printf("| %s: first pass with CUDA graphs (capture + instantiate + launch) | %.2f ms |\n",
           what, capture * 1e3);
    printf("| CFG step, %s + CUDA graphs, mean of %d | %.2f ms (best %.2f) |\n", what, o->runs,
           gmean * 1e3, gbest * 1e3);
    printf("| **sampler steps/s (CFG), %s + CUDA graphs** | **%.1f** |\n", what, 1.0 / gmean);
    printf("| %s + graphs: passes captured / launched as a graph / run eagerly | %llu / %llu / "
           "%llu |\n", what, g1.graph_captures - g0.graph_captures,
           g1.graph_launches - g0.graph_launches, g1.graph_eager - g0.graph_eager);
    printf("| %s + graphs vs float32 activations (im2col, eager) UNet output, max abs diff / "
           "max abs | %.2e (bound %.0e) %s |\n", what, dg, f16_activation_bound,
           gfailed ? "**FAIL**" : "ok");
    printf("| %s: graphs vs eager output, max abs diff / max abs | %.2e |\n", what,
           rel_err(gout, eager_out, nx));
    sd_backend_cuda_set_graphs(be, false);
    free(gout);
    return failed | gfailed;
}

/* The CFG step with fp16 activations (cuda_f16_activations,
 * sd_backend_cuda_set_f16_activations), alone and with the implicit-GEMM
 * convolutions (which then read the fp16 input in place, without an fp16
 * copy), eager and as CUDA graphs, against the float32-activation output
 * `ref`; then, with --profile, the per-op profile of both. Leaves the
 * backend as it found it (float32 activations, im2col, the UNet's K/V
 * cache refilled in float32). Returns 1 when an output disagrees beyond
 * f16_activation_bound, else 0. */
static int f16_activation_rows(const opts *o, sd_backend *be, sd_unet *u, const float *x,
                               const float *t, const float *ctx, int L, int B, int lat,
                               const float *ref, size_t nx, const f32_figures *f32)
{
    char err[512];
    printf("\n### UNet, %dx%d, batch 2 (one CFG step), AUTO precision, fp16 activations "
           "(cuda_f16_activations)\n\n", o->size, o->size);
    printf("| quantity | value |\n|---|---|\n");
    if (sd_backend_cuda_set_f16_activations(be, true) != 0) {
        printf("| fp16 activations | could not be turned on: %s |\n", sd_backend_error(be));
        return 0;
    }
    /* the cached cross-attention K/V are float32 tensors of the earlier
     * passes: made again, they are fp16 like the other intermediates (the
     * first pass below includes that) */
    sd_unet_kv_cache_clear(u);
    float *fout = malloc(nx * sizeof *fout), *cout = malloc(nx * sizeof *cout);
    if (!fout || !cout) die("bench", "out of memory");
    int failed = setting_rows(o, be, u, x, t, ctx, L, B, lat, ref, nx, "fp16 activations",
                              "float32 activations", f32->im2col_mean, f32->im2col_peak, fout);
    const bool implicit = sd_backend_cuda_set_conv_implicit(be, true) == 0;
    if (!implicit) {
        printf("| fp16 activations + implicit-GEMM convolutions | could not be turned on: %s |\n",
               sd_backend_error(be));
    } else {
        const char *both = "fp16 activations + implicit-GEMM convolutions";
        const bool f32_implicit = f32->implicit_mean > 0;
        failed |= setting_rows(o, be, u, x, t, ctx, L, B, lat, ref, nx, both,
                               f32_implicit ? "float32 activations + implicit-GEMM convolutions"
                                            : "float32 activations (im2col)",
                               f32_implicit ? f32->implicit_mean : f32->im2col_mean,
                               f32_implicit ? f32->implicit_peak : f32->im2col_peak, cout);
        printf("| %s vs fp16 activations with im2col, UNet output, max abs diff / max abs | "
               "%.2e |\n", both, rel_err(cout, fout, nx));
        sd_backend_cuda_set_conv_implicit(be, false);
    }
    if (o->profile) {
        profile_pass(be, u, x, t, ctx, L, B, lat, fout, " with fp16 activations");
        if (implicit && sd_backend_cuda_set_conv_implicit(be, true) == 0) {
            profile_pass(be, u, x, t, ctx, L, B, lat, cout,
                         " with fp16 activations + implicit-GEMM convolutions");
            sd_backend_cuda_set_conv_implicit(be, false);
        }
    }
    sd_backend_cuda_set_f16_activations(be, false);
    /* the K/V back in float32, so later passes are the same as before */
    sd_unet_kv_cache_clear(u);
    if (sd_unet_forward(u, x, t, ctx, L, B, lat, lat, fout, err, sizeof err))
        die("UNet (float32 activations again)", err);
    free(fout);
    free(cout);
    return failed;
}

/* Returns 1 when the graph pass, the implicit-GEMM convolutions or the fp16
 * activations disagree with the eager im2col one, else 0. */
static int unet_phase(const opts *o)
{
    char err[512];
    sd_model_file *f;
    sd_family_info fam;
    open_model(o, &f, &fam);
    sd_backend *be = make_cuda(SD_CUDA_PREC_AUTO);
    /* the process's first backend, nothing uploaded yet: the CUDA context,
     * the cuBLAS/cuBLASLt handles and the empty pool */
    sd_cuda_memory empty;
    const double empty_mb =
        sd_backend_cuda_memory(be, &empty, false) == 0 ? empty.device_used / 1048576.0 : -1.0;
    sd_unet *u = NULL;
    if (sd_unet_create(f, &fam, be, &u, err, sizeof err)) die("UNet", err);
    const int lat = o->size / 8, B = 2, L = 77;
    const size_t nx = (size_t)B * 4 * lat * lat;
    float *x = random_floats(nx, 1, 1.0f), *ctx = random_floats((size_t)B * L * 768, 2, 1.0f);
    float *out = malloc(nx * sizeof *out);
    float t[2] = { 749.5f, 749.5f };
    double t0 = now();
    if (sd_unet_forward(u, x, t, ctx, L, B, lat, lat, out, err, sizeof err)) die("UNet", err);
    double first = now() - t0;
    double mean, best;
    timed_passes(u, x, t, ctx, L, B, lat, out, o->runs, &mean, &best, "UNet");
    for (size_t i = 0; i < nx; i++)
        if (!isfinite(out[i])) die("UNet", "non-finite output");
    printf("\n### UNet, %dx%d, batch 2 (one CFG step), AUTO precision (fp16 tensor cores)\n\n",
           o->size, o->size);
    printf("| quantity | value |\n|---|---|\n");
    printf("| whole device in use by an empty backend (CUDA context, cuBLAS handles, before any "
           "weight or kernel) | %.0f MB |\n",
           empty_mb);
    printf("| first pass (uploads and converts 1.7 GB of weights) | %.3f s |\n", first);
    printf("| CFG step (batch-2 UNet pass incl. host transfers), mean of %d | %.2f ms |\n",
           o->runs, mean * 1e3);
    printf("| best | %.2f ms |\n", best * 1e3);
    printf("| **sampler steps/s (CFG)** | **%.1f** |\n", 1.0 / mean);
    if (o->size == 512)         /* spec/sd-engine.md 1.4: 803 GFLOP per image at 512x512 */
        printf("| achieved (2 x 803 GFLOP per pass) | %.0f TFLOP/s |\n", 2 * 803e9 / mean / 1e12);
    mem_line("UNet", be);
    f32_figures f32 = { mean, 0, 0, 0 };
    {
        sd_cuda_memory em;
        if (sd_backend_cuda_memory(be, &em, false) == 0) f32.im2col_peak = em.activations_peak;
    }

    /* the same passes as CUDA graphs (opt-in cuda_graphs): the first one
     * captures, the rest replay; the output must agree with the eager one */
    int graph_failed = 0;
    if (sd_backend_cuda_set_graphs(be, true) != 0) {
        printf("| CUDA graphs | could not be turned on: %s |\n", sd_backend_error(be));
    } else {
        float *gout = malloc(nx * sizeof *gout);
        if (!gout) die("bench", "out of memory");
        t0 = now();
        if (sd_unet_forward(u, x, t, ctx, L, B, lat, lat, gout, err, sizeof err))
            die("UNet (graphs)", err);
        double capture = now() - t0;
        double gsum = 0, gbest = 1e30;
        for (int i = 0; i < o->runs; i++) {
            t0 = now();
            if (sd_unet_forward(u, x, t, ctx, L, B, lat, lat, gout, err, sizeof err))
                die("UNet (graphs)", err);
            double dt = now() - t0;
            gsum += dt;
            if (dt < gbest) gbest = dt;
        }
        double gmean = gsum / o->runs, d = rel_err(gout, out, nx);
        sd_cuda_memory gm;
        sd_backend_cuda_memory(be, &gm, false);
        printf("| first pass with CUDA graphs (capture + instantiate + launch) | %.2f ms |\n",
               capture * 1e3);
        printf("| CFG step with CUDA graphs (cuda_graphs), mean of %d | %.2f ms (best %.2f) |\n",
               o->runs, gmean * 1e3, gbest * 1e3);
        printf("| **sampler steps/s (CFG), CUDA graphs** | **%.1f** |\n", 1.0 / gmean);
        printf("| graphs: passes captured / launched as a graph / run eagerly | %llu / %llu / %llu |\n",
               gm.graph_captures, gm.graph_launches, gm.graph_eager);
        graph_failed = !(d <= 1e-2);
        printf("| graphs vs eager output, max abs diff / max abs | %.2e (bound 1e-2) %s |\n", d,
               graph_failed ? "**FAIL**" : "ok");
        if (gm.graph_launches == 0)
            printf("| note | no pass ran as a graph: the capture failed and every pass fell back "
                   "to eager launches |\n");
        mem_line("UNet with graphs", be);
        sd_backend_cuda_set_graphs(be, false);
        free(gout);
    }
    graph_failed |= implicit_conv_rows(o, be, u, x, t, ctx, L, B, lat, out, nx, mean,
                                       &f32.implicit_mean, &f32.implicit_peak);
    graph_failed |= f16_activation_rows(o, be, u, x, t, ctx, L, B, lat, out, nx, &f32);
    if (o->profile) profile_pass(be, u, x, t, ctx, L, B, lat, out, "");
    free(x);
    free(ctx);
    free(out);
    sd_unet_destroy(u);
    sd_backend_destroy(be);
    sd_model_file_close(f);
    return graph_failed;
}

/* ---- implicit-GEMM convolutions per shape (tuning) --------------------------- */

/* One conv of the SD1.5 UNet at the benchmark's size, batch 2. */
typedef struct sweep_shape {
    int div;                     /* input side = latent / div */
    int cin, cout, stride;
} sweep_shape;

/* Microseconds per conv, `reps` queued back to back (as an eager pass
 * queues them), after two warm-up calls (weight upload, scratch growth). */
static double time_conv(sd_backend *be, const sd_tensor *x, const sd_tensor_info *w,
                        const sd_tensor_info *b, const sd_conv_params *p, sd_tensor *out, int reps)
{
    for (int i = 0; i < 2; i++)
        if (sd_conv2d(be, x, w, b, p, NULL, out)) die("conv sweep", sd_backend_error(be));
    if (sd_backend_cuda_synchronize(be)) die("conv sweep", sd_backend_error(be));
    double t0 = now();
    for (int i = 0; i < reps; i++)
        if (sd_conv2d(be, x, w, b, p, NULL, out)) die("conv sweep", sd_backend_error(be));
    if (sd_backend_cuda_synchronize(be)) die("conv sweep", sd_backend_error(be));
    return (now() - t0) / reps * 1e6;
}

/* Each 3x3 conv shape of the SD1.5 UNet (batch 2 at --size): im2col +
 * cuBLAS against the implicit-GEMM kernel with its own choice of block
 * shape and K splits, and with each block shape forced (SD_CUDA_IGEMM,
 * read by a new backend; K splits by the kernel's rule, and 128x160 also
 * unsplit): where the kernel wins, and what ig_pick (conv_igemm.cu)
 * should choose on this GPU. */
static void conv_sweep(const opts *o)
{
    static const sweep_shape shapes[] = {
        { 1, 320, 320, 1 },  { 1, 640, 320, 1 },   { 1, 960, 320, 1 },  { 1, 320, 320, 2 },
        { 2, 320, 640, 1 },  { 2, 640, 640, 1 },   { 2, 1920, 640, 1 }, { 2, 640, 640, 2 },
        { 4, 640, 1280, 1 }, { 4, 1280, 1280, 1 }, { 4, 2560, 1280, 1 }, { 4, 1280, 1280, 2 },
        { 8, 1280, 1280, 1 }, { 8, 2560, 1280, 1 }, { 1, 640, 640, 1 },  { 1, 320, 4, 1 },
    };
    enum { NS = sizeof shapes / sizeof shapes[0] };
    static const char *const settings[] = { NULL, "128x160", "128x128", "128x64", "64x64",
                                            "128x160/1" };
    enum { NSET = sizeof settings / sizeof settings[0] };
    const int lat = o->size / 8, B = 2, reps = 20;
    double us[NS][NSET + 1];
    /* weights, bias and input per shape, shared by every backend */
    uint16_t *wdata[NS];
    float *bdata[NS], *xdata[NS];
    sd_tensor_info wi[NS], bi[NS];
    char names[NS][96];
    for (int s = 0; s < NS; s++) {
        const sweep_shape *sh = &shapes[s];
        const int h = lat / sh->div;
        const size_t nw = (size_t)sh->cout * sh->cin * 9, nx = (size_t)B * h * h * sh->cin;
        float *wf = random_floats(nw, 100 + (unsigned)s, 0.02f);
        wdata[s] = malloc(nw * sizeof(uint16_t));
        if (!wdata[s]) die("conv sweep", "out of memory");
        for (size_t i = 0; i < nw; i++) wdata[s][i] = sd_f32_to_f16(wf[i]);
        free(wf);
        bdata[s] = random_floats((size_t)sh->cout, 200 + (unsigned)s, 0.1f);
        xdata[s] = random_floats(nx, 300 + (unsigned)s, 1.0f);
        snprintf(names[s], sizeof names[s], "model.diffusion_model.sweep.%d.weight", s);
        memset(&wi[s], 0, sizeof wi[s]);
        wi[s].name = names[s];
        wi[s].dtype = SD_DTYPE_F16;
        wi[s].ndim = 4;
        wi[s].shape[0] = sh->cout;
        wi[s].shape[1] = sh->cin;
        wi[s].shape[2] = wi[s].shape[3] = 3;
        wi[s].data = wdata[s];
        wi[s].nbytes = nw * sizeof(uint16_t);
        memset(&bi[s], 0, sizeof bi[s]);
        bi[s].name = "model.diffusion_model.sweep.bias";
        bi[s].dtype = SD_DTYPE_F32;
        bi[s].ndim = 1;
        bi[s].shape[0] = sh->cout;
        bi[s].data = bdata[s];
        bi[s].nbytes = (size_t)sh->cout * sizeof(float);
    }
    /* column 0: im2col; 1: the kernel's own choice; 2..: forced shapes */
    for (int c = 0; c <= NSET; c++) {
        const char *force = c >= 2 ? settings[c - 1] : NULL;
        if (force) setenv("SD_CUDA_IGEMM", force, 1);
        sd_backend *be = make_cuda(SD_CUDA_PREC_AUTO);
        if (force) unsetenv("SD_CUDA_IGEMM");
        if (c >= 1 && sd_backend_cuda_set_conv_implicit(be, true))
            die("conv sweep", sd_backend_error(be));
        for (int s = 0; s < NS; s++) {
            const sweep_shape *sh = &shapes[s];
            const int h = lat / sh->div, oh = (h + 2 - 3) / sh->stride + 1;
            const sd_conv_params p = { sh->stride, 1, 1, 1, 1, SD_PAD_ZEROS };
            sd_tensor x, out;
            if (sd_tensor_new(be, &x, B, h, h, sh->cin) || sd_upload(be, xdata[s], &x) ||
                sd_tensor_new(be, &out, B, oh, oh, sh->cout))
                die("conv sweep", sd_backend_error(be));
            us[s][c] = time_conv(be, &x, &wi[s], &bi[s], &p, &out, reps);
            sd_tensor_free(be, &x);
            sd_tensor_free(be, &out);
        }
        sd_backend_destroy(be);
    }
    printf("\n### 3x3 convolutions of the UNet, %dx%d batch 2: im2col + cuBLAS vs the "
           "implicit-GEMM kernel (us a conv, %d queued back to back)\n\n", o->size, o->size, reps);
    printf("| input, Cin -> Cout, stride | GFLOP | im2col | implicit (own choice) | TFLOP/s "
           "| 128x160 | 128x128 | 128x64 | 64x64 | 128x160 unsplit |\n"
           "|---|---|---|---|---|---|---|---|---|---|\n");
    double sum_im2col = 0, sum_auto = 0, sum_best = 0;
    for (int s = 0; s < NS; s++) {
        const sweep_shape *sh = &shapes[s];
        const int h = lat / sh->div, oh = (h + 2 - 3) / sh->stride + 1;
        const double gflop = 2.0 * B * oh * oh * sh->cout * 9.0 * sh->cin / 1e9;
        double best = us[s][1];
        for (int c = 2; c <= NSET; c++)
            if (us[s][c] < best) best = us[s][c];
        sum_im2col += us[s][0];
        sum_auto += us[s][1];
        sum_best += best < us[s][0] ? best : us[s][0];
        printf("| %dx%d, %d -> %d, s%d | %.1f | %.1f | **%.1f** | %.0f |", h, h, sh->cin, sh->cout,
               sh->stride, gflop, us[s][0], us[s][1], gflop / us[s][1] * 1e3);
        for (int c = 2; c <= NSET; c++) printf(" %.1f |", us[s][c]);
        printf("\n");
    }
    printf("| **sum of the shapes above (each once)** | | %.0f | **%.0f** | | best of all "
           "columns per shape: %.0f | | | | |\n", sum_im2col, sum_auto, sum_best);
    for (int s = 0; s < NS; s++) {
        free(wdata[s]);
        free(bdata[s]);
        free(xdata[s]);
    }
}

/* max |a - b| / max |b| */
static double rel_err(const float *a, const float *b, size_t n)
{
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (!(e <= d)) d = isnan(e) ? INFINITY : e;
        if (fabs(b[i]) > m) m = fabs(b[i]);
    }
    return m > 0 ? d / m : d;
}

static int check(const char *what, double err, double bound)
{
    int ok = err <= bound;
    printf("| %s | %.2e | %.0e | %s |\n", what, err, bound, ok ? "ok" : "**FAIL**");
    return ok;
}

/* Returns the number of failed comparisons. */
static int compare_phase(const opts *o)
{
    char err[512];
    sd_model_file *f;
    sd_family_info fam;
    open_model(o, &f, &fam);
    sd_backend *cpu = sd_backend_cpu_create(0, err, sizeof err);
    if (!cpu) die("CPU backend", err);
    sd_backend *gpu[2] = { make_cuda(SD_CUDA_PREC_AUTO), make_cuda(SD_CUDA_PREC_F32) };
    const char *pname[2] = { "AUTO", "F32" };
    const double unet_bound[2] = { 3e-2, 1e-3 }, vae_bound[2] = { 1e-2, 1e-3 },
                 clip_bound[2] = { 2e-2, 1e-3 };
    int failed = 0;
    const int lat = o->compare_size / 8, B = 2, L = 77;
    printf("\n### Agreement with the CPU backend (SD1.5 shapes, random weights)\n\n");
    printf("max |cuda - cpu| / max |cpu|\n\n| what | error | bound | |\n|---|---|---|---|\n");

    /* UNet */
    {
        const size_t nx = (size_t)B * 4 * lat * lat;
        float *x = random_floats(nx, 3, 1.0f), *ctx = random_floats((size_t)B * L * 768, 4, 1.0f);
        float *ref = malloc(nx * sizeof *ref), *out = malloc(nx * sizeof *out);
        float t[2] = { 999.0f, 20.5f };
        sd_unet *u = NULL;
        double t0 = now();
        if (sd_unet_create(f, &fam, cpu, &u, err, sizeof err) ||
            sd_unet_forward(u, x, t, ctx, L, B, lat, lat, ref, err, sizeof err))
            die("CPU UNet", err);
        double cpu_s = now() - t0;
        sd_unet_destroy(u);
        for (int p = 0; p < 2; p++) {
            if (sd_unet_create(f, &fam, gpu[p], &u, err, sizeof err) ||
                sd_unet_forward(u, x, t, ctx, L, B, lat, lat, out, err, sizeof err))
                die("CUDA UNet", err);
            sd_unet_destroy(u);
            char what[128];
            snprintf(what, sizeof what, "UNet %dx%d batch 2, %s", o->compare_size,
                     o->compare_size, pname[p]);
            failed += !check(what, rel_err(out, ref, nx), unet_bound[p]);
        }
        /* AUTO with fp16 activations (opt-in), at AUTO's bound */
        if (sd_backend_cuda_set_f16_activations(gpu[0], true) == 0) {
            if (sd_unet_create(f, &fam, gpu[0], &u, err, sizeof err) ||
                sd_unet_forward(u, x, t, ctx, L, B, lat, lat, out, err, sizeof err))
                die("CUDA UNet (fp16 activations)", err);
            sd_unet_destroy(u);
            sd_backend_cuda_set_f16_activations(gpu[0], false);
            char what[128];
            snprintf(what, sizeof what, "UNet %dx%d batch 2, AUTO + fp16 activations",
                     o->compare_size, o->compare_size);
            failed += !check(what, rel_err(out, ref, nx), unet_bound[0]);
        }
        fprintf(stderr, "  (CPU UNet pass at %dx%d: %.1f s)\n", o->compare_size, o->compare_size,
                cpu_s);
        free(x);
        free(ctx);
        free(ref);
        free(out);
    }
    /* VAE decode */
    {
        const int h = lat;
        const size_t nz = (size_t)4 * h * h, ni = (size_t)3 * 64 * h * h;
        float *z = random_floats(nz, 5, 1.0f);
        float *ref = malloc(ni * sizeof *ref), *out = malloc(ni * sizeof *out);
        sd_vae *v = NULL;
        if (sd_vae_create(f, &fam, cpu, &v, err, sizeof err) ||
            sd_vae_decode(v, z, 1, h, h, ref, err, sizeof err))
            die("CPU VAE", err);
        sd_vae_destroy(v);
        for (int p = 0; p < 2; p++) {
            if (sd_vae_create(f, &fam, gpu[p], &v, err, sizeof err) ||
                sd_vae_decode(v, z, 1, h, h, out, err, sizeof err))
                die("CUDA VAE", err);
            sd_vae_destroy(v);
            char what[128];
            snprintf(what, sizeof what, "VAE decode %dx%d, %s", 8 * h, 8 * h, pname[p]);
            failed += !check(what, rel_err(out, ref, ni), vae_bound[p]);
        }
        {
            /* the opt-in bf16 VAE (8 significant bits: 1.4e-2 on the
             * emulation at 64x64, TF32 1.4e-3), at its own bound */
            sd_backend *bf = make_cuda(SD_CUDA_PREC_AUTO_VAE_BF16);
            if (sd_vae_create(f, &fam, bf, &v, err, sizeof err) ||
                sd_vae_decode(v, z, 1, h, h, out, err, sizeof err))
                die("CUDA VAE (bf16)", err);
            sd_vae_destroy(v);
            sd_backend_destroy(bf);
            char what[128];
            snprintf(what, sizeof what, "VAE decode %dx%d, AUTO_VAE_BF16", 8 * h, 8 * h);
            failed += !check(what, rel_err(out, ref, ni), 4e-2);
        }
        free(z);
        free(ref);
        free(out);
    }
    /* text encoder */
    {
        int ids[77];
        ids[0] = 49406;
        for (int i = 1; i < 77; i++) ids[i] = i < 12 ? 320 + 37 * i : 49407;
        sd_text_encoder *enc = NULL;
        if (sd_text_encoder_create(f, &fam, cpu, &enc, err, sizeof err)) die("CPU CLIP", err);
        size_t n = (size_t)77 * sd_text_encoder_width(enc);
        float *ref = malloc(n * sizeof *ref), *out = malloc(n * sizeof *out);
        if (sd_text_encode(enc, ids, 77, 1, ref, err, sizeof err)) die("CPU CLIP", err);
        sd_text_encoder_destroy(enc);
        for (int p = 0; p < 2; p++) {
            if (sd_text_encoder_create(f, &fam, gpu[p], &enc, err, sizeof err) ||
                sd_text_encode(enc, ids, 77, 1, out, err, sizeof err))
                die("CUDA CLIP", err);
            sd_text_encoder_destroy(enc);
            char what[128];
            snprintf(what, sizeof what, "text encoder (77 tokens), %s", pname[p]);
            failed += !check(what, rel_err(out, ref, n), clip_bound[p]);
        }
        free(ref);
        free(out);
    }
    sd_backend_destroy(gpu[0]);
    sd_backend_destroy(gpu[1]);
    sd_backend_destroy(cpu);
    sd_model_file_close(f);
    return failed;
}

typedef struct step_clock {
    double start, first, last;
    int steps;
} step_clock;

static void on_step(void *ud, int step, int total)
{
    (void)total;
    step_clock *c = ud;
    double t = now();
    if (step == 1) c->first = t;
    c->last = t;
    c->steps = step;
}

/* One whole-image configuration of the pipeline's memory options. */
typedef struct image_config {
    const char *label;
    bool keep_pool;
    int offload;                 /* sd_offload */
    int vae_tile;                /* latent tile side, 0 = whole decode at 512 */
    bool graphs;                 /* cuda_graphs */
    bool conv_implicit;          /* cuda_conv_implicit */
    bool vae_bf16;               /* the backend in SD_CUDA_PREC_AUTO_VAE_BF16 (opt-in) */
    bool f16_activations;        /* cuda_f16_activations */
} image_config;

typedef struct image_result {
    double seconds, per_step_ms, vae_s;
    sd_pipeline_memory mem;
} image_result;

static image_result image_phase(const opts *o, const image_config *cfg)
{
    const bool keep_pool = cfg->keep_pool;
    char err[512];
    sd_pipeline *p = NULL;
    sd_pipeline_opts po;
    memset(&po, 0, sizeof po);
    po.model_path = o->weights;
    po.vocab_path = o->vocab;
    po.config_path = "";
    po.backend = "cuda";
    po.keep_pool = keep_pool;
    po.offload = cfg->offload;
    po.cuda_graphs = cfg->graphs;
    po.cuda_conv_implicit = cfg->conv_implicit;
    po.cuda_f16_activations = cfg->f16_activations;
    po.phase_memory = true;
    if (cfg->vae_tile > 0) {
        po.vae_tile = cfg->vae_tile;
        po.vae_tile_above = 1;   /* every decode in tiles */
    }
    double t0 = now();
    if (sd_pipeline_load(&po, &p, err, sizeof err)) die("pipeline", err);
    /* the pipeline creates its backend in AUTO (TF32 VAE); bf16 is opt-in */
    if (cfg->vae_bf16 &&
        sd_backend_cuda_set_precision(sd_pipeline_backend(p), SD_CUDA_PREC_AUTO_VAE_BF16, NULL))
        die("AUTO_VAE_BF16", sd_backend_error(sd_pipeline_backend(p)));
    double load = now() - t0;
    sd_job job;
    sd_job_init(&job);
    job.conventions = SD_CONV_KDIFFUSION;
    job.prompt = "a watercolor painting of a fox in a forest";
    job.negative = "";
    job.seed = 42;
    job.cfg_scale = 7.0f;
    job.sampler = SD_SAMPLER_EULER;
    job.scheduler = SD_SCHED_KARRAS;
    job.width = job.height = o->size;
    sd_image img;
    /* warm-up: uploads the weights, grows the memory pool */
    job.steps = 2;
    memset(&img, 0, sizeof img);
    t0 = now();
    if (sd_generate(p, &job, &img, err, sizeof err)) die("txt2img", err);
    double warm = now() - t0;
    sd_image_free(&img);
    job.steps = o->steps;
    step_clock c = { 0, 0, 0, 0 };
    job.progress = on_step;
    job.progress_ud = &c;
    memset(&img, 0, sizeof img);
    sd_cuda_memory during;
    sd_backend_cuda_memory(sd_pipeline_backend(p), &during, true);   /* restart the peaks */
    c.start = now();
    if (sd_generate(p, &job, &img, err, sizeof err)) die("txt2img", err);
    double end = now();
    sd_image_free(&img);
    printf("\n### Whole image: txt2img %dx%d, %d k_euler steps, CFG 7 (batch 2 per step), %s\n\n",
           o->size, o->size, o->steps, cfg->label);
    printf("| quantity | value |\n|---|---|\n");
    printf("| pipeline load (open, detect, build) | %.3f s |\n", load);
    printf("| warm-up image, 2 steps (weight upload included) | %.3f s |\n", warm);
    printf("| **whole image (text encoder + %d steps + VAE decode + 8-bit)** | **%.3f s** |\n",
           o->steps, end - c.start);
    printf("| text encoder + first step | %.3f s |\n", c.first - c.start);
    printf("| steps 2..%d, per step | %.2f ms |\n", o->steps,
           c.steps > 1 ? (c.last - c.first) / (c.steps - 1) * 1e3 : 0.0);
    printf("| VAE decode + conversion (after the last step) | %.3f s |\n", end - c.last);
    image_result res = { end - c.start,
                         c.steps > 1 ? (c.last - c.first) / (c.steps - 1) * 1e3 : 0.0,
                         end - c.last, *sd_pipeline_last_memory(p) };
    const sd_pipeline_memory *pm = &res.mem;
    size_t peak = pm->text_peak;
    if (pm->steps_peak > peak) peak = pm->steps_peak;
    if (pm->vae_peak > peak) peak = pm->vae_peak;
    printf("| **whole device in use, peak seen during the image (at each download)** | **%.0f MB** |\n",
           peak / 1048576.0);
    printf("| of which peak during the text encoder / the steps / the VAE decode | %.0f / %.0f / %.0f MB |\n",
           pm->text_peak / 1048576.0, pm->steps_peak / 1048576.0, pm->vae_peak / 1048576.0);
    printf("| weights dropped from the device during the image (offload) | %.0f MB |\n",
           pm->dropped / 1048576.0);
    char live[2048];
    emu_report(live, sizeof live);
    if (live[0]) printf("| emulation: live at the VAE phase's peak | %s |\n", live);
    const sd_vae_decode_info *di = sd_pipeline_last_decode(p);
    printf("| VAE decode | %s%d tile(s) |\n", di->tiles ? "" : "whole, ", di->tiles ? di->tiles : 1);
    /* the pipeline's backend is internal; the device-wide figure is what a
     * second, empty backend sees (pools keep their peak size) */
    sd_backend *probe = make_cuda(SD_CUDA_PREC_AUTO);
    sd_cuda_memory m;
    if (sd_backend_cuda_memory(probe, &m, false) == 0)
        printf("| whole device in use after the image (weights, pools, CUDA context) | %.0f MB |\n",
               m.device_used / 1048576.0);
    /* what stays once the pool's unused blocks and the scratch go back */
    if (sd_backend_cuda_trim(sd_pipeline_backend(p)) == 0 &&
        sd_backend_cuda_memory(probe, &m, false) == 0)
        printf("| whole device in use after the image, pool trimmed (sd_backend_cuda_trim) | %.0f MB |\n",
               m.device_used / 1048576.0);
    sd_backend_destroy(probe);
    sd_pipeline_free(p);
    return res;
}

static size_t image_peak(const sd_pipeline_memory *m)
{
    size_t peak = m->text_peak > m->steps_peak ? m->text_peak : m->steps_peak;
    return m->vae_peak > peak ? m->vae_peak : peak;
}

/* Each configuration with fp16 activations next to the same one without
 * (every other option equal): the steps phase is the UNet's, the only
 * network whose intermediates fp16 activations change. With --memory-plan
 * only the memory, and no graph configurations (not run). */
static void f16_activation_pairs(const opts *o, const image_config *cfgs,
                                 const image_result *r, int n)
{
    printf("\n### Whole image %dx%d: fp16 activations (cuda_f16_activations) vs float32 "
           "activations%s\n\n", o->size, o->size,
           o->memory_plan ? ", backend's own allocations (emulated dry run)" : "");
    if (o->memory_plan)
        printf("| configuration (+ fp16 activations) | steps peak, fp16 / float32 | difference "
               "| whole-image peak, fp16 / float32 |\n|---|---|---|---|\n");
    else
        printf("| configuration (+ fp16 activations) | steps peak, fp16 / float32 | difference "
               "| whole-image peak, fp16 / float32 | per step, fp16 / float32 |\n"
               "|---|---|---|---|---|\n");
    for (int i = 0; i < n; i++) {
        const image_config *c = &cfgs[i];
        if (!c->f16_activations || (o->memory_plan && c->graphs)) continue;
        int j = 0;
        while (j < n && (cfgs[j].f16_activations || cfgs[j].keep_pool != c->keep_pool ||
                         cfgs[j].offload != c->offload || cfgs[j].vae_tile != c->vae_tile ||
                         cfgs[j].graphs != c->graphs || cfgs[j].conv_implicit != c->conv_implicit ||
                         cfgs[j].vae_bf16 != c->vae_bf16))
            j++;
        if (j == n) continue;    /* no float32 twin in the list */
        const sd_pipeline_memory *h = &r[i].mem, *f = &r[j].mem;
        printf("| %s | %.0f / %.0f MB | %+.0f MB | %.0f / %.0f MB |", c->label,
               h->steps_peak / 1048576.0, f->steps_peak / 1048576.0,
               ((double)h->steps_peak - (double)f->steps_peak) / 1048576.0,
               image_peak(h) / 1048576.0, image_peak(f) / 1048576.0);
        if (!o->memory_plan) printf(" %.2f / %.2f ms |", r[i].per_step_ms, r[j].per_step_ms);
        printf("\n");
    }
}

/* The memory options side by side: where the whole-image peak comes from
 * and what lowering it costs. */
static void image_phases(const opts *o)
{
    /* label, keep_pool, offload, vae_tile, graphs, conv_implicit, vae_bf16, f16_activations.
     * "base": float32 activations, op by op, TF32 VAE, pool trimmed before
     * the VAE and after the image, nothing offloaded; "fast" adds CUDA graphs
     * and fp16 activations (cuda_graphs, cuda_f16_activations); the plugin's
     * defaults are fast + offload = encoders (cuda_offload = 1). */
    static const image_config cfgs[] = {
        { "base: float32 activations, op by op, pool trimmed before the VAE and after the image",
          false, SD_OFFLOAD_NONE, 0, false, false, false, false },
        { "base + activation pool kept (keep_pool)", true, SD_OFFLOAD_NONE, 0, false, false, false,
          false },
        { "base + offload = encoders (text encoder and VAE weights dropped after use)", false,
          SD_OFFLOAD_ENCODERS, 0, false, false, false, false },
        { "base + offload = encoders, VAE in 256 px tiles (vae_tile 32)", false,
          SD_OFFLOAD_ENCODERS, 32, false, false, false, false },
        { "base + offload = sequential (one network's weights on the device at a time)", false,
          SD_OFFLOAD_SEQUENTIAL, 0, false, false, false, false },
        { "base + CUDA graphs of the UNet step (cuda_graphs)", false, SD_OFFLOAD_NONE, 0, true,
          false, false, false },
        { "base + offload = sequential + CUDA graphs", false, SD_OFFLOAD_SEQUENTIAL, 0, true,
          false, false, false },
        { "base + implicit-GEMM convolutions (cuda_conv_implicit)", false, SD_OFFLOAD_NONE, 0,
          false, true, false, false },
        { "base + CUDA graphs + implicit-GEMM convolutions", false, SD_OFFLOAD_NONE, 0, true,
          true, false, false },
        { "base + VAE in bf16 (cuda_vae_bf16)", false, SD_OFFLOAD_NONE, 0, false, false, true,
          false },
        { "base + offload = encoders + VAE in bf16", false, SD_OFFLOAD_ENCODERS, 0, false, false,
          true, false },
        { "base + offload = sequential + VAE in bf16", false, SD_OFFLOAD_SEQUENTIAL, 0, false,
          false, true, false },
        { "base + fp16 activations (cuda_f16_activations)", false, SD_OFFLOAD_NONE, 0, false,
          false, false, true },
        { "fast: base + CUDA graphs + fp16 activations", false,
          SD_OFFLOAD_NONE, 0, true, false, false, true },
        { "base + implicit-GEMM convolutions + fp16 activations", false, SD_OFFLOAD_NONE, 0,
          false, true, false, true },
        { "base + CUDA graphs + implicit-GEMM convolutions + fp16 activations", false,
          SD_OFFLOAD_NONE, 0, true, true, false, true },
        { "base + offload = sequential + fp16 activations", false, SD_OFFLOAD_SEQUENTIAL, 0,
          false, false, false, true },
        { "fast + VAE in bf16", false, SD_OFFLOAD_NONE, 0, true, false, true, true },
        { "**the plugin's defaults**: fast + offload = encoders", false, SD_OFFLOAD_ENCODERS, 0, true, false, false,
          true },
        { "fast + offload = encoders + VAE in bf16", false, SD_OFFLOAD_ENCODERS, 0, true,
          false, true, true },
        { "fast + offload = encoders, VAE in 256 px tiles + VAE in bf16", false,
          SD_OFFLOAD_ENCODERS, 32, true, false, true, true },
        { "fast + offload = sequential", false, SD_OFFLOAD_SEQUENTIAL, 0, true, false, false,
          true },
        { "fast + offload = sequential + VAE in bf16", false, SD_OFFLOAD_SEQUENTIAL, 0, true,
          false, true, true },
    };
    enum { N = sizeof cfgs / sizeof cfgs[0] };
    image_result r[N];
    memset(r, 0, sizeof r);
    for (int i = 0; i < N; i++) {
        /* the emulation keeps every allocation a captured graph makes (a
         * GPU reuses graph memory between allocations whose lifetimes do
         * not overlap): its graph rows would be far too high */
        if (o->memory_plan && cfgs[i].graphs) continue;
        r[i] = image_phase(o, &cfgs[i]);
        fflush(stdout);
    }
    if (o->memory_plan) {
        /* times of a dry run mean nothing; the peaks are exact, and only
         * the backend's own memory (no CUDA context, no cuBLAS internals) */
        printf("\n### Whole image %dx%d: computed device memory of the backend's own "
               "allocations (emulated dry run, not measured on a GPU)\n\n", o->size, o->size);
        printf("| configuration | **peak** | text encoder | steps | VAE | in use after | "
               "weights dropped |\n|---|---|---|---|---|---|---|\n");
        for (int i = 0; i < N; i++) {
            if (cfgs[i].graphs) continue;
            const sd_pipeline_memory *m = &r[i].mem;
            size_t peak = m->text_peak > m->steps_peak ? m->text_peak : m->steps_peak;
            if (m->vae_peak > peak) peak = m->vae_peak;
            printf("| %s | **%.0f MB** | %.0f MB | %.0f MB | %.0f MB | %.0f MB | %.0f MB |\n",
                   cfgs[i].label, peak / 1048576.0, m->text_peak / 1048576.0,
                   m->steps_peak / 1048576.0, m->vae_peak / 1048576.0, m->after / 1048576.0,
                   m->dropped / 1048576.0);
        }
        f16_activation_pairs(o, cfgs, r, N);
        return;
    }
    printf("\n### Whole image %dx%d: memory options compared (target: peak < 3072 MB, image < 0.3 s)\n\n",
           o->size, o->size);
    printf("| configuration | whole image | per step | VAE + 8-bit | **peak** | peak: text encoder "
           "| steps | VAE | in use after | weights dropped |\n"
           "|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < N; i++) {
        const sd_pipeline_memory *m = &r[i].mem;
        size_t peak = m->text_peak > m->steps_peak ? m->text_peak : m->steps_peak;
        if (m->vae_peak > peak) peak = m->vae_peak;
        printf("| %s | %.3f s | %.2f ms | %.3f s | **%.0f MB** | %.0f MB | %.0f MB | %.0f MB "
               "| %.0f MB | %.0f MB |\n",
               cfgs[i].label, r[i].seconds, r[i].per_step_ms, r[i].vae_s, peak / 1048576.0,
               m->text_peak / 1048576.0, m->steps_peak / 1048576.0, m->vae_peak / 1048576.0,
               m->after / 1048576.0, m->dropped / 1048576.0);
    }
    f16_activation_pairs(o, cfgs, r, N);
}

/* ---- 4. model swap ---------------------------------------------------------- */

static double small_image(sd_pipeline *p)
{
    sd_job job;
    sd_job_init(&job);
    job.prompt = "a fox";
    job.negative = "";
    job.seed = 1;
    job.steps = 1;
    job.sampler = SD_SAMPLER_EULER;
    job.width = job.height = 64;
    sd_image img;
    char err[512];
    memset(&img, 0, sizeof img);
    double t0 = now();
    if (sd_generate(p, &job, &img, err, sizeof err)) die("txt2img 64x64", err);
    double t = now() - t0;
    sd_image_free(&img);
    return t;
}

static void tensor_span(const sd_model_file *f, const void **lo, const void **hi)
{
    const unsigned char *l = NULL, *h = NULL;
    for (size_t i = 0; i < sd_model_file_count(f); i++) {
        const sd_tensor_info *t = sd_model_file_at(f, i);
        const unsigned char *d = t->data;
        if (!d || !t->nbytes) continue;
        if (!l || d < l) l = d;
        if (!h || d + t->nbytes > h) h = d + t->nbytes;
    }
    *lo = l;
    *hi = h;
}

/* Best of `runs` swaps: drop the device copies, make the small image. */
static double swap_once(sd_backend *be, sd_pipeline *p, const void *lo, const void *hi,
                        int runs, double resident, unsigned long long *bytes)
{
    double best = 1e9;
    for (int r = 0; r < runs; r++) {
        sd_cuda_memory m0, m1;
        sd_backend_cuda_memory(be, &m0, false);
        if (sd_backend_cuda_drop_weights(be, lo, hi) < 0) die("drop weights", sd_backend_error(be));
        /* the cached cross-attention K/V would spare the to_k/to_v uploads */
        sd_unet_kv_cache_clear(sd_pipeline_unet(p));
        double t = small_image(p) - resident;
        sd_backend_cuda_memory(be, &m1, false);
        *bytes = m1.bytes_uploaded - m0.bytes_uploaded;
        if (t < best) best = t;
    }
    return best > 0 ? best : 0;
}

static void swap_phase(const opts *o)
{
    char err[512];
    sd_backend *be = make_cuda(SD_CUDA_PREC_AUTO);
    sd_model_cache_opts co;
    memset(&co, 0, sizeof co);
    co.use_backend = be;
    co.vram_budget_mb = -1;
    co.max_models = 2;
    co.vocab_path = o->vocab;
    sd_model_cache *c = NULL;
    if (sd_model_cache_create(&co, &c, err, sizeof err)) die("model cache", err);
    double t0 = now();
    sd_pipeline *p = NULL;
    if (sd_model_cache_get(c, o->weights, "", &p, err, sizeof err)) die("model cache", err);
    double open_s = now() - t0;
    sd_model_cache_stats st;
    sd_model_cache_stats_get(c, &st);
    const void *lo, *hi;
    tensor_span(sd_pipeline_file(p), &lo, &hi);
    double first = small_image(p);
    double resident = 1e9;
    for (int r = 0; r < 3; r++) {
        double t = small_image(p);
        if (t < resident) resident = t;
    }
    unsigned long long bytes = 0, bytes_unpinned = 0;
    double pinned_s = swap_once(be, p, lo, hi, 3, resident, &bytes);
    double unpinned_s = -1;
    if (st.pinned) {
        sd_backend_cuda_unpin_host(be, lo);
        unpinned_s = swap_once(be, p, lo, hi, 2, resident, &bytes_unpinned);
    }
    printf("\n### Model swap: SD1.5 from host RAM into VRAM (engine/model_cache.h)\n\n");
    printf("| quantity | value |\n|---|---|\n");
    printf("| open in the model cache (map%s) | %.3f s |\n",
           st.pinned ? " + page-lock the file" : "; page-locking refused", open_s);
    printf("| first 64x64 image, 1 step (cold upload) | %.3f s |\n", first);
    printf("| same image, weights resident | %.3f s |\n", resident);
    printf("| **swap of the cached model into VRAM%s (%.0f MB uploaded + converted), best of 3** "
           "| **%.3f s** |\n", st.pinned ? ", pinned" : ", not pinned", bytes / 1048576.0, pinned_s);
    if (pinned_s > 0)
        printf("| effective host -> device rate | %.1f GB/s |\n", bytes / pinned_s / 1e9);
    if (unpinned_s >= 0)
        printf("| same swap from pageable memory (not pinned), best of 2 | %.3f s |\n", unpinned_s);
    sd_model_cache_destroy(c);
    sd_backend_destroy(be);
}

static int ensure_weights(const char *path)
{
    struct stat st;
    int64_t want = 2 * (SD15_UNET_PARAMS + SD15_VAE_PARAMS + SD15_TEXT_PARAMS);
    if (stat(path, &st) == 0 && st.st_size > want && st.st_size < want + (1 << 20)) return 0;
    fprintf(stderr, "writing %s (random SD1.5 weights, F16)...\n", path);
    char err[256];
    double t0 = now();
    if (sd15_write_random(path, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "bench_cuda: %s\n", err);
        return -1;
    }
    fprintf(stderr, "  written in %.1f s\n", now() - t0);
    return 0;
}

int main(int argc, char **argv)
{
    opts o = { "build/bench/sd15-random-f16.safetensors", NULL, 20, 20, 512, 256, 0, 1, 1, 0, 1 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "--weights") && more) o.weights = argv[++i];
        else if (!strcmp(a, "--vocab") && more) o.vocab = argv[++i];
        else if (!strcmp(a, "--runs") && more) o.runs = atoi(argv[++i]);
        else if (!strcmp(a, "--steps") && more) o.steps = atoi(argv[++i]);
        else if (!strcmp(a, "--size") && more) o.size = atoi(argv[++i]);
        else if (!strcmp(a, "--compare-size") && more) o.compare_size = atoi(argv[++i]);
        else if (!strcmp(a, "--profile")) o.profile = 1;
        else if (!strcmp(a, "--no-image")) o.image = 0;
        else if (!strcmp(a, "--no-compare")) o.compare = 0;
        else if (!strcmp(a, "--memory-plan")) o.memory_plan = 1;
        else if (!strcmp(a, "--no-conv-sweep")) o.sweep = 0;
        else {
            fprintf(stderr,
                    "usage: %s [--weights FILE] [--vocab FILE] [--runs N] [--steps N] [--size PX] "
                    "[--compare-size PX] [--profile] [--no-image] [--no-compare] [--memory-plan] "
                    "[--no-conv-sweep]\n",
                    argv[0]);
            return 2;
        }
    }
    if (o.runs < 1 || o.steps < 1 || o.size < 64 || o.size % 64 || o.compare_size < 64 ||
        o.compare_size % 64) {
        fprintf(stderr, "bench_cuda: sizes must be multiples of 64, runs and steps >= 1\n");
        return 2;
    }
    char err[512];
    if (o.memory_plan) {
        /* read by the emulated library when it loads */
        setenv("SD_EMU_DRY_RUN", "1", 1);
        setenv("SD_EMU_MEMTRACE", "1", 1);
        if (!getenv("HN_SD_CUDA_LIB")) {
            char exe[PATH_MAX], lib[PATH_MAX + 64];
            ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
            exe[n > 0 ? n : 0] = '\0';
            char *slash = strrchr(exe, '/');
            if (slash) *slash = '\0';
            snprintf(lib, sizeof lib, "%s/../../lib/libhn-sd-cuda-emu.so", exe);
            setenv("HN_SD_CUDA_LIB", lib, 1);
        }
    }
    sd_cuda_info info;
    if (sd_cuda_probe(NULL, &info, err, sizeof err) != 0) die("no GPU", err);
    if (ensure_weights(o.weights) != 0) return 1;
    printf("## CUDA backend on %s (compute %d.%d, %zu MB; CUDA runtime %d, driver %d)\n",
           info.name, info.cc_major, info.cc_minor, info.total_mem >> 20, info.runtime_version,
           info.driver_version);
    printf("\nSD1.5-shaped checkpoint, random F16 weights (bench/sd15_weights.h); %s.\n",
           info.lib_path);
    fflush(stdout);
    if (o.memory_plan) {
        if (!o.vocab) die("--memory-plan", "--vocab is needed");
        image_phases(&o);
        return 0;
    }
    int failed = unet_phase(&o);
    fflush(stdout);
    if (o.sweep) conv_sweep(&o);
    fflush(stdout);
    if (o.compare) failed += compare_phase(&o);
    fflush(stdout);
    if (o.image) {
        if (!o.vocab) {
            fprintf(stderr, "bench_cuda: --vocab needed for the whole-image and swap phases\n");
        } else {
            image_phases(&o);
            fflush(stdout);
            swap_phase(&o);
        }
    }
    fflush(stdout);
    return failed ? 1 : 0;
}
