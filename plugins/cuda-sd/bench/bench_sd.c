/* bench_sd.c - `make bench-sd`: CPU speed and memory of the SD engine on an
 * SD1.5-shaped checkpoint with random F16 weights.
 *
 *   bench_sd [--weights FILE] [--vocab FILE] [--threads N] [--runs N]
 *            [--steps N] [--size PX] [--no-image] [--profile]
 *
 * 1. Writes the checkpoint (bench/sd15_weights.h) unless FILE exists with
 *    the right size: ~2.1 GB, deterministic.
 * 2. UNet: one CFG step = one forward with batch 2 at 512x512 (64x64
 *    latent), run `runs` times after an untimed first pass (which also
 *    faults the mapped weights in). --profile adds a per-op breakdown.
 * 3. Whole image: the txt2img pipeline (text encoder, `steps` k_euler CFG
 *    steps, VAE decode) through engine/pipeline.h, timed per phase.
 * Each phase runs in its own child process so that its peak RSS
 * (getrusage ru_maxrss, mapped weights included) is its own. The result is
 * printed as Markdown for docs/BENCHMARKS.md.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend/cpu_backend.h"
#include "bench/sd15_weights.h"
#include "engine/family.h"
#include "engine/model_file.h"
#include "engine/pipeline.h"
#include "engine/unet.h"

typedef struct opts {
    const char *weights;
    const char *vocab;
    int threads, runs, steps, size;
    int image, profile;
} opts;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* ---- per-op profile: a wrapper vtable around the CPU backend ----------- */

enum { P_CONV, P_LINEAR, P_GN, P_LN, P_ATT, P_ACT, P_GEGLU, P_ADD, P_OTHER, P_N };
static const char *const prof_names[P_N] = { "conv2d",  "linear",  "group_norm",
                                             "layer_norm", "attention", "activation",
                                             "geglu", "add", "other" };

typedef struct profile {
    double seconds[P_N];
    double cpu[P_N];            /* process CPU seconds (all threads) */
    double flops[P_N];
    long calls[P_N];
} profile;

/* The bench is one process per phase with one backend, so the wrapper's
 * state can be file-level here (a tool, not the plugin). */
static const sd_backend_ops *orig_ops;
static profile prof;

static double cpu_seconds(void);

#define WRAP(kind, flop_expr, call)          \
    double t0_ = now(), c0_ = cpu_seconds(); \
    int rc_ = call;                          \
    prof.seconds[kind] += now() - t0_;       \
    prof.cpu[kind] += cpu_seconds() - c0_;   \
    prof.flops[kind] += (flop_expr);         \
    prof.calls[kind]++;                      \
    return rc_;

static int w_conv(sd_backend *be, const sd_tensor *x, const sd_tensor_info *w,
                  const sd_tensor_info *b, const sd_conv_params *p, const sd_tensor *r,
                  sd_tensor *out)
{
    WRAP(P_CONV, 2.0 * out->n * out->h * out->w * (double)sd_tensor_numel(w),
         orig_ops->conv2d(be, x, w, b, p, r, out))
}
static int w_linear(sd_backend *be, const sd_tensor *x, const sd_tensor_info *w,
                    const sd_tensor_info *b, const sd_tensor *r, sd_tensor *out)
{
    WRAP(P_LINEAR, 2.0 * out->n * out->h * out->w * (double)sd_tensor_numel(w),
         orig_ops->linear(be, x, w, b, r, out))
}
static int w_gn(sd_backend *be, const sd_tensor *x, int g, float eps, const sd_tensor_info *ga,
                const sd_tensor_info *bb, bool silu, sd_tensor *out)
{
    WRAP(P_GN, 0, orig_ops->group_norm(be, x, g, eps, ga, bb, silu, out))
}
static int w_ln(sd_backend *be, const sd_tensor *x, const sd_tensor_info *g,
                const sd_tensor_info *b, float eps, sd_tensor *out)
{
    WRAP(P_LN, 0, orig_ops->layer_norm(be, x, g, b, eps, out))
}
static int w_att(sd_backend *be, const sd_tensor *q, const sd_tensor *k, const sd_tensor *v,
                 int heads, float scale, bool causal, sd_tensor *out)
{
    WRAP(P_ATT, 4.0 * q->n * q->h * q->w * (double)k->h * k->w * q->c,
         orig_ops->attention(be, q, k, v, heads, scale, causal, out))
}
static int w_act(sd_backend *be, sd_activation a, const sd_tensor *x, sd_tensor *out)
{
    WRAP(P_ACT, 0, orig_ops->activation(be, a, x, out))
}
static int w_geglu(sd_backend *be, const sd_tensor *x, sd_tensor *out)
{
    WRAP(P_GEGLU, 0, orig_ops->geglu(be, x, out))
}
static int w_add_pc(sd_backend *be, const sd_tensor *x, const sd_tensor *v, sd_tensor *out)
{
    WRAP(P_ADD, 0, orig_ops->add_per_channel(be, x, v, out))
}
static int w_concat(sd_backend *be, const sd_tensor *a, const sd_tensor *b, sd_tensor *out)
{
    WRAP(P_OTHER, 0, orig_ops->concat_channels(be, a, b, out))
}
static int w_up(sd_backend *be, const sd_tensor *x, sd_tensor *out)
{
    WRAP(P_OTHER, 0, orig_ops->upsample_nearest2x(be, x, out))
}

static sd_backend_ops prof_ops;

static void install_profiler(sd_backend *be)
{
    orig_ops = be->ops;
    prof_ops = *be->ops;
    prof_ops.conv2d = w_conv;
    prof_ops.linear = w_linear;
    prof_ops.group_norm = w_gn;
    prof_ops.layer_norm = w_ln;
    prof_ops.attention = w_att;
    prof_ops.activation = w_act;
    prof_ops.geglu = w_geglu;
    prof_ops.add_per_channel = w_add_pc;
    prof_ops.concat_channels = w_concat;
    prof_ops.upsample_nearest2x = w_up;
    be->ops = &prof_ops;
}

/* ---- phases (each in a child; results back through a pipe) ------------- */

typedef struct unet_result {
    int ok;
    double first, best, mean;
    double cpu_util;            /* CPU seconds / (wall seconds * threads) */
    double cpu_per_step;        /* process CPU seconds per timed step */
    int runs;
    double gflop;               /* per forward, convs + linears + attention */
    profile prof;
    long rss_kb;
    char err[256];
} unet_result;

typedef struct image_result {
    int ok;
    double total, to_first_step, steps_sum, after_last;
    double cpu_total, cpu_steps, cpu_after;   /* process CPU seconds */
    int steps;
    long rss_kb;
    char err[256];
} image_result;

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static float *random_floats(size_t n, unsigned seed)
{
    float *a = malloc(n * sizeof(float));
    if (!a) return NULL;
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        /* sum of 4 uniforms: roughly normal, std ~1 */
        float v = 0;
        for (int k = 0; k < 4; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            v += (float)((s >> 40) * (1.0 / 16777216.0)) - 0.5f;
        }
        a[i] = v * 1.732f;
    }
    return a;
}

static void run_unet(const opts *o, unet_result *r)
{
    char err[256];
    sd_model_file *f = NULL;
    sd_family_info fam;
    sd_backend *be = NULL;
    sd_unet *u = NULL;
    int lat = o->size / 8, B = 2, L = 77;
    float *x = random_floats((size_t)B * 4 * lat * lat, 1);
    float *ctx = random_floats((size_t)B * L * 768, 2);
    float *out = malloc((size_t)B * 4 * lat * lat * sizeof(float));
    float t[2] = { 749.5f, 749.5f };
    if (!x || !ctx || !out) {
        snprintf(r->err, sizeof r->err, "out of memory");
        goto done;
    }
    if (sd_model_file_open(o->weights, &f, err, sizeof err) ||
        /* "": no sidecar config (the random checkpoint has none) */
        sd_family_detect_with_config(f, "", &fam, err, sizeof err) ||
        !(be = sd_backend_cpu_create(o->threads, err, sizeof err)) ||
        sd_unet_create(f, &fam, be, &u, err, sizeof err)) {
        snprintf(r->err, sizeof r->err, "%.250s", err);
        goto done;
    }
    double t0 = now();
    if (sd_unet_forward(u, x, t, ctx, L, B, lat, lat, out, err, sizeof err)) goto fail;
    r->first = now() - t0;
    if (o->profile) install_profiler(be);
    r->best = 1e30;
    double sum = 0, cpu0 = cpu_seconds();
    for (int i = 0; i < o->runs; i++) {
        t0 = now();
        if (sd_unet_forward(u, x, t, ctx, L, B, lat, lat, out, err, sizeof err)) goto fail;
        double dt = now() - t0;
        sum += dt;
        if (dt < r->best) r->best = dt;
        fprintf(stderr, "  unet forward %d/%d: %.2f s\n", i + 1, o->runs, dt);
    }
    r->runs = o->runs;
    r->mean = sum / o->runs;
    r->cpu_per_step = (cpu_seconds() - cpu0) / o->runs;
    r->cpu_util = r->cpu_per_step * o->runs / (sum * sd_backend_cpu_threads(be));
    for (size_t i = 0; i < (size_t)B * 4 * lat * lat; i++)
        if (!isfinite(out[i])) {
            snprintf(r->err, sizeof r->err, "non-finite UNet output");
            goto done;
        }
    if (o->profile) {
        r->prof = prof;
        for (int k = 0; k < P_N; k++) {
            r->prof.seconds[k] /= o->runs;
            r->prof.cpu[k] /= o->runs;
            r->prof.flops[k] /= o->runs;
            r->prof.calls[k] /= o->runs;
        }
        r->gflop = (r->prof.flops[P_CONV] + r->prof.flops[P_LINEAR] + r->prof.flops[P_ATT]) * 1e-9;
    }
    r->ok = 1;
    goto done;
fail:
    snprintf(r->err, sizeof r->err, "%.250s", err);
done:
    sd_unet_destroy(u);
    sd_backend_destroy(be);
    sd_model_file_close(f);
    free(x);
    free(ctx);
    free(out);
}

typedef struct step_clock {
    double start, first, last;
    double cpu_start, cpu_first, cpu_last;
    int steps;
} step_clock;

static void on_step(void *ud, int step, int total)
{
    step_clock *c = ud;
    double t = now(), cpu = cpu_seconds();
    if (step == 1) {
        c->first = t;
        c->cpu_first = cpu;
    }
    c->last = t;
    c->cpu_last = cpu;
    c->steps = step;
    fprintf(stderr, "  step %d/%d at %.1f s\n", step, total, t - c->start);
}

static void run_image(const opts *o, image_result *r)
{
    char err[512];
    sd_pipeline *p = NULL;
    sd_pipeline_opts po = { 0 };
    po.model_path = o->weights;
    po.vocab_path = o->vocab;
    po.threads = o->threads;
    po.config_path = "";        /* no sidecar config */
    if (sd_pipeline_load(&po, &p, err, sizeof err)) {
        snprintf(r->err, sizeof r->err, "%.250s", err);
        return;
    }
    sd_job job;
    sd_job_init(&job);
    job.conventions = SD_CONV_KDIFFUSION;
    job.prompt = "a watercolor painting of a fox in a forest";
    job.negative = "";
    job.seed = 42;
    job.steps = o->steps;
    job.cfg_scale = 7.0f;
    job.sampler = SD_SAMPLER_EULER;
    job.scheduler = SD_SCHED_KARRAS;
    job.width = job.height = o->size;
    step_clock c = { 0 };
    job.progress = on_step;
    job.progress_ud = &c;
    sd_image img = { 0 };
    c.start = now();
    c.cpu_start = cpu_seconds();
    int rc = sd_generate(p, &job, &img, err, sizeof err);
    double end = now(), cpu_end = cpu_seconds();
    if (rc != 0) {
        snprintf(r->err, sizeof r->err, "%.250s", err);
    } else {
        r->ok = 1;
        r->total = end - c.start;
        r->steps = c.steps;
        r->to_first_step = c.first - c.start;
        r->steps_sum = c.last - c.start;   /* text encoder + all steps */
        r->after_last = end - c.last;      /* VAE decode + image conversion */
        r->cpu_total = cpu_end - c.cpu_start;
        r->cpu_steps = c.cpu_last - c.cpu_first;   /* steps 2..n */
        r->cpu_after = cpu_end - c.cpu_last;
    }
    sd_image_free(&img);
    sd_pipeline_free(p);
}

static long self_maxrss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Runs fn(o, result) in a child; copies the result struct back. */
static int in_child(void (*fn)(const opts *, void *), const opts *o, void *res, size_t size,
                    long *rss_field)
{
    int fds[2];
    if (pipe(fds) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        close(fds[0]);
        fn(o, res);
        *rss_field = self_maxrss_kb();
        ssize_t w = write(fds[1], res, size);
        _exit(w == (ssize_t)size ? 0 : 1);
    }
    close(fds[1]);
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fds[0], (char *)res + got, size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    return got == size ? 0 : -1;
}

static void unet_phase(const opts *o, void *res) { run_unet(o, res); }
static void image_phase(const opts *o, void *res) { run_image(o, res); }

static void cpu_model(char *buf, size_t len)
{
    snprintf(buf, len, "unknown CPU");
    FILE *fp = fopen("/proc/cpuinfo", "r");
    if (!fp) return;
    char line[512];
    while (fgets(line, sizeof line, fp)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *c = strchr(line, ':');
            if (c) {
                c++;
                while (*c == ' ') c++;
                c[strcspn(c, "\n")] = 0;
                snprintf(buf, len, "%s", c);
            }
            break;
        }
    }
    fclose(fp);
}

static int ensure_weights(const char *path)
{
    struct stat st;
    /* F16 parameters + header: the file is regenerated when absent */
    int64_t want = 2 * (SD15_UNET_PARAMS + SD15_VAE_PARAMS + SD15_TEXT_PARAMS);
    if (stat(path, &st) == 0 && st.st_size > want && st.st_size < want + (1 << 20)) return 0;
    fprintf(stderr, "writing %s (random SD1.5 weights, F16)...\n", path);
    char err[256];
    sd15_counts c;
    double t0 = now();
    if (sd15_write_random(path, &c, err, sizeof err) != 0) {
        fprintf(stderr, "bench_sd: %s\n", err);
        return -1;
    }
    fprintf(stderr, "  %zu tensors, UNet %lld / VAE %lld / text %lld parameters, %.1f s\n",
            c.tensors, (long long)c.unet, (long long)c.vae, (long long)c.text, now() - t0);
    return 0;
}

int main(int argc, char **argv)
{
    opts o = { "build/bench/sd15-random-f16.safetensors", NULL, 0, 3, 20, 512, 1, 0 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--weights") && v) o.weights = argv[++i];
        else if (!strcmp(a, "--vocab") && v) o.vocab = argv[++i];
        else if (!strcmp(a, "--threads") && v) o.threads = atoi(argv[++i]);
        else if (!strcmp(a, "--runs") && v) o.runs = atoi(argv[++i]);
        else if (!strcmp(a, "--steps") && v) o.steps = atoi(argv[++i]);
        else if (!strcmp(a, "--size") && v) o.size = atoi(argv[++i]);
        else if (!strcmp(a, "--no-image")) o.image = 0;
        else if (!strcmp(a, "--profile")) o.profile = 1;
        else {
            fprintf(stderr, "usage: %s [--weights FILE] [--vocab FILE] [--threads N] [--runs N] "
                            "[--steps N] [--size PX] [--no-image] [--profile]\n", argv[0]);
            return 2;
        }
    }
    if (o.runs < 1 || o.steps < 1 || o.size < 64 || o.size % 64) {
        fprintf(stderr, "bench_sd: runs/steps >= 1, size a multiple of 64\n");
        return 2;
    }
    if (ensure_weights(o.weights) != 0) return 1;

    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = o.threads > 0 ? o.threads : (int)ncpu;

    unet_result ur;
    memset(&ur, 0, sizeof ur);
    fprintf(stderr, "UNet: batch 2 (CFG) at %dx%d, %d timed runs...\n", o.size, o.size, o.runs);
    if (in_child((void (*)(const opts *, void *))unet_phase, &o, &ur, sizeof ur, &ur.rss_kb) ||
        !ur.ok) {
        fprintf(stderr, "bench_sd: UNet phase failed: %s\n", ur.err);
        return 1;
    }
    image_result ir;
    memset(&ir, 0, sizeof ir);
    if (o.image) {
        fprintf(stderr, "whole image: txt2img %dx%d, %d k_euler steps, CFG 7...\n", o.size,
                o.size, o.steps);
        if (in_child((void (*)(const opts *, void *))image_phase, &o, &ir, sizeof ir,
                     &ir.rss_kb) || !ir.ok) {
            fprintf(stderr, "bench_sd: image phase failed: %s\n", ir.err);
            return 1;
        }
    }

    printf("\n| machine | threads | measure | result |\n|---|---|---|---|\n");
    printf("| %s, %ld cores | %d | UNet step, CFG (batch 2), %dx%d, mean of %d | **%.2f s** "
           "(best %.2f s, first/cold %.2f s) |\n",
           cpu, ncpu, threads, o.size, o.size, ur.runs, ur.mean, ur.best, ur.first);
    if (o.profile)
        printf("| | | UNet GEMM work per step | %.0f GFLOP -> %.0f GFLOP/s |\n", ur.gflop,
               ur.gflop / ur.mean);
    printf("| | | CPU utilisation during the timed steps | %.0f%% of %d threads |\n",
           100.0 * ur.cpu_util, threads);
    printf("| | | CPU time per step / threads (the step time with the cores to itself) | "
           "%.2f s |\n", ur.cpu_per_step / threads);
    printf("| | | peak RSS, UNet phase (F16 weights mapped) | %.2f GB |\n", ur.rss_kb / 1048576.0);
    if (o.image) {
        printf("| | | whole image: txt2img %dx%d, %d steps k_euler, CFG 7 | **%.1f s** |\n",
               o.size, o.size, ir.steps, ir.total);
        printf("| | | ... text encoder + noise until step 1 done | %.1f s |\n", ir.to_first_step);
        printf("| | | ... mean per step (steps 2..%d) | %.2f s |\n", ir.steps,
               ir.steps > 1 ? (ir.steps_sum - ir.to_first_step) / (ir.steps - 1) : ir.steps_sum);
        printf("| | | ... VAE decode + PNG-ready pixels | %.1f s |\n", ir.after_last);
        printf("| | | whole image, CPU time / threads (cores to itself) | %.1f s (steps %.2f s "
               "each, VAE decode %.1f s) |\n", ir.cpu_total / threads,
               ir.steps > 1 ? ir.cpu_steps / (ir.steps - 1) / threads : 0.0,
               ir.cpu_after / threads);
        printf("| | | peak RSS, whole image (whole checkpoint mapped) | %.2f GB |\n",
               ir.rss_kb / 1048576.0);
    }
    if (o.profile) {
        printf("\nPer-op time of one UNet step (mean over %d runs):\n\n", ur.runs);
        printf("| op | calls | seconds | share | GFLOP/s | GFLOP per CPU-second |\n"
               "|---|---|---|---|---|---|\n");
        double tot = 0;
        for (int k = 0; k < P_N; k++) tot += ur.prof.seconds[k];
        for (int k = 0; k < P_N; k++) {
            if (!ur.prof.calls[k]) continue;
            printf("| %s | %ld | %.2f | %.0f%% |", prof_names[k], ur.prof.calls[k],
                   ur.prof.seconds[k], 100.0 * ur.prof.seconds[k] / tot);
            if (ur.prof.flops[k] > 0)
                printf(" %.0f | %.0f |\n", ur.prof.flops[k] * 1e-9 / ur.prof.seconds[k],
                       ur.prof.flops[k] * 1e-9 / ur.prof.cpu[k]);
            else
                printf(" | |\n");
        }
    }
    return 0;
}
