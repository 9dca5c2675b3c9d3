/* test_cuda_engine.c - the engine features around the backends, on the CPU
 * backend and on the CUDA backend (real GPU; CUDA emulated on the CPU), with
 * the tiny golden models:
 *   - UNet latents that are not a multiple of 8 (upsampling to any size);
 *   - the cross-attention K/V cache: outputs equal to the uncached path;
 *   - the VAE decode in tiles (close to the whole decode, equal when one
 *     tile covers it) and its NaN check (an fp16 overflow redone in a
 *     stricter precision; the bf16 VAE, which does not overflow there);
 *   - the model cache: several models through a small VRAM budget, outputs
 *     unchanged after their weights were evicted and swapped in again;
 *   - a VAE decoder with a nin_shortcut block: bit-equal to an op-by-op
 *     reference, and its peak device memory (exact in the emulation)
 *     within four full-size maps plus the scratch cap.
 * Groups and skipping as in cuda_fixture.h.
 */
#include "cuda_fixture.h"
#include "golden.h"
#include "model_writers.h"

#include <math.h>

#include "backend/cuda_backend.h"
#include "engine/model_cache.h"
#include "engine/net_common.h"
#include "engine/pipeline.h"
#include "engine/unet.h"
#include "engine/vae.h"
#include "engine/vae_decode.h"

#define VOCAB_REL "models/clip/bpe_simple_vocab_16e6.txt.gz"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static float frand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

static float *rand_vec(size_t n, float scale)
{
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) v[i] = frand() * scale;
    return v;
}

static void model_path(char *buf, size_t len, const char *kind)
{
    char rel[256];
    snprintf(rel, sizeof rel, "models/tiny_%s.f16.safetensors", kind);
    golden_path(buf, len, rel);
}

static sd_model_file *open_tiny(const char *kind, sd_family_info *fam)
{
    char path[1024], err[512];
    model_path(path, sizeof path, kind);
    sd_model_file *f = NULL;
    if (sd_model_file_open(path, &f, err, sizeof err) || sd_family_detect(f, fam, err, sizeof err))
        fail_msg("%s: %s", kind, err);
    return f;
}

/* The backends a test runs on: the CPU, then the CUDA one when present. */
static int n_backends(const fixture *f) { return f->cuda[0] ? 2 : 1; }
static sd_backend *backend_at(const fixture *f, int i) { return i == 0 ? f->cpu : f->cuda[0]; }

static double max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

/* ---- UNet at latent sizes that are not a multiple of 8 ----------------------------- */

/* F32 precision must match the CPU closely at every size; AUTO (fp16) is
 * checked at sizes whose GroupNorms see enough pixels: the tiny UNet has one
 * channel per group, so at 1x2 pixels a group's two values normalise to +-1
 * and fp16 rounding can flip them (real models have 10+ channels a group). */
static void test_unet_any_latent_size(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    sd_family_info fam;
    sd_model_file *mf = open_tiny("sd1", &fam);
    static const int sizes[][3] = { { 12, 12, 1 }, { 6, 10, 0 }, { 10, 6, 0 }, { 3, 5, 0 },
                                    { 5, 5, 0 }, { 7, 7, 0 }, { 16, 12, 1 } };
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        const int B = 2, L = 77, H = sizes[k][0], W = sizes[k][1];
        const size_t n = (size_t)B * 4 * H * W;
        float *want = NULL;
        float t[2] = { 999.0f, 261.5f };
        for (int bi = -1; bi < N_PREC; bi++) {
            if (bi == PREC_AUTO && !sizes[k][2]) continue;
            sd_backend *be = bi < 0 ? f->cpu : f->cuda[bi];
            char err[512];
            sd_unet *u = NULL;
            if (sd_unet_create(mf, &fam, be, &u, err, sizeof err)) fail_msg("%s", err);
            int D = sd_unet_context_dim(u);
            rng_state = 42;
            float *x = rand_vec(n, 1.0f);
            float *ctx = rand_vec((size_t)B * L * D, 1.0f);
            float *out = malloc(sizeof(float) * n);
            assert_non_null(out);
            if (sd_unet_forward(u, x, t, ctx, L, B, H, W, out, err, sizeof err))
                fail_msg("%s UNet %dx%d: %s", be->ops->name, H, W, err);
            if (bi < 0) {
                want = out;
            } else {
                char what[128];
                snprintf(what, sizeof what, "%s UNet %dx%d vs cpu (%s)", f->label, H, W,
                         bi == PREC_F32 ? "F32" : "AUTO");
                double scale = fmax(1.0, max_abs(want, n));
                golden_assert_close(what, out, want, n, (bi == PREC_F32 ? 1e-4 : 1e-2) * scale);
                free(out);
            }
            free(x);
            free(ctx);
            sd_unet_destroy(u);
        }
        free(want);
    }
    sd_model_file_close(mf);
}

/* ---- cross-attention K/V cache --------------------------------------------------- */

static void unet_run(sd_unet *u, const float *x, float t, const float *ctx, int L, int B, int H,
                     int W, float *out)
{
    char err[512];
    float ts[4] = { t, t, t, t };
    if (sd_unet_forward(u, x, ts, ctx, L, B, H, W, out, err, sizeof err)) fail_msg("%s", err);
}

static void test_kv_cache_equals_uncached(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    const int B = 2, L = 77, H = 8, W = 8;
    const size_t n = (size_t)B * 4 * H * W;
    for (int bi = 0; bi < n_backends(f); bi++) {
        sd_backend *be = backend_at(f, bi);
        sd_family_info fam;
        sd_model_file *mf = open_tiny(bi == 0 ? "sd2" : "sd1", &fam);
        char err[512];
        sd_unet *u = NULL;
        if (sd_unet_create(mf, &fam, be, &u, err, sizeof err)) fail_msg("%s", err);
        int D = sd_unet_context_dim(u);
        float *x = rand_vec(n, 1.0f);
        float *ctx1 = rand_vec((size_t)B * L * D, 1.0f), *ctx2 = rand_vec((size_t)B * L * D, 1.0f);
        float *ref[3], *got[3];
        for (int i = 0; i < 3; i++) {
            ref[i] = malloc(n * sizeof(float));
            got[i] = malloc(n * sizeof(float));
            assert_true(ref[i] && got[i]);
        }
        /* uncached: two steps with one context, one with another */
        sd_unet_set_kv_cache(u, false);
        unet_run(u, x, 999.0f, ctx1, L, B, H, W, ref[0]);
        unet_run(u, x, 500.0f, ctx1, L, B, H, W, ref[1]);
        unet_run(u, x, 500.0f, ctx2, L, B, H, W, ref[2]);
        unsigned long long hits, misses;
        sd_unet_kv_cache_stats(u, &hits, &misses);
        assert_true(hits == 0 && misses == 0);
        /* cached: the first pass fills, the second reuses, a new context refills */
        sd_unet_set_kv_cache(u, true);
        unet_run(u, x, 999.0f, ctx1, L, B, H, W, got[0]);
        unet_run(u, x, 500.0f, ctx1, L, B, H, W, got[1]);
        sd_unet_kv_cache_stats(u, &hits, &misses);
        assert_true(hits == 1 && misses == 1);
        unet_run(u, x, 500.0f, ctx2, L, B, H, W, got[2]);
        sd_unet_kv_cache_stats(u, &hits, &misses);
        assert_true(hits == 1 && misses == 2);
        for (int i = 0; i < 3; i++) {
            char what[128];
            snprintf(what, sizeof what, "%s kv cache pass %d", be->ops->name, i);
            golden_assert_bits_equal(what, got[i], ref[i], n);
        }
        /* the context bytes are the key: a changed copy is not a hit */
        ctx1[5] += 1.0f;
        unet_run(u, x, 500.0f, ctx2, L, B, H, W, got[0]);
        unet_run(u, x, 500.0f, ctx1, L, B, H, W, got[1]);
        sd_unet_kv_cache_stats(u, &hits, &misses);
        assert_true(hits == 2 && misses == 3);
        for (int i = 0; i < 3; i++) {
            free(ref[i]);
            free(got[i]);
        }
        free(x);
        free(ctx1);
        free(ctx2);
        sd_unet_destroy(u);
        sd_model_file_close(mf);
    }
}

/* ---- CUDA graphs of the UNet step ------------------------------------------------------ */

/* The tiny SD1 UNet on two backends made with the same options, one with
 * graphs off (eager) and one with graphs on: what the graph tests compare. */
typedef struct graph_pair {
    sd_backend *be_eager, *be_graph;
    sd_model_file *mf;
    sd_unet *ue, *ug;
    /* graph_pair_buffers: a pass's random input and context, and room for
     * the eager (want) and graph (got) outputs; NULL until then */
    float *x, *ctx, *want, *got;
    size_t n;                    /* elements of x, want and got */
} graph_pair;

static void graph_pair_open(const fixture *f, sd_cuda_options o, graph_pair *gp)
{
    char err[512];
    o.lib_path = f->lib[0] ? f->lib : NULL;
    o.graphs = false;
    gp->be_eager = sd_backend_cuda_create(&o, err, sizeof err);
    o.graphs = true;
    gp->be_graph = gp->be_eager ? sd_backend_cuda_create(&o, err, sizeof err) : NULL;
    if (!gp->be_eager || !gp->be_graph) fail_msg("%s", err);
    assert_false(sd_backend_cuda_graphs_on(gp->be_eager));
    assert_true(sd_backend_cuda_graphs_on(gp->be_graph));
    sd_family_info fam;
    gp->mf = open_tiny("sd1", &fam);
    gp->ue = gp->ug = NULL;
    gp->x = gp->ctx = gp->want = gp->got = NULL;
    if (sd_unet_create(gp->mf, &fam, gp->be_eager, &gp->ue, err, sizeof err) ||
        sd_unet_create(gp->mf, &fam, gp->be_graph, &gp->ug, err, sizeof err))
        fail_msg("%s", err);
}

/* Buffers for passes of B latents HxW with L context tokens. */
static void graph_pair_buffers(graph_pair *gp, int B, int L, int H, int W)
{
    gp->n = (size_t)B * 4 * H * W;
    gp->ctx = rand_vec((size_t)B * L * sd_unet_context_dim(gp->ue), 1.0f);
    gp->x = rand_vec(gp->n, 1.0f);
    gp->want = malloc(gp->n * sizeof(float));
    gp->got = malloc(gp->n * sizeof(float));
    assert_true(gp->want && gp->got);
}

/* One pass of the buffers' input (B latents HxW, L tokens, timestep t for
 * each) through both UNets: want from the eager one, got from the graph
 * one; *before / *after: the graph backend's counters around it. */
static void graph_pair_pass(graph_pair *gp, float t, int B, int L, int H, int W,
                            sd_cuda_memory *before, sd_cuda_memory *after)
{
    char err[512];
    float ts[16];
    assert_true(B <= 16);
    for (int b = 0; b < B; b++) ts[b] = t;
    assert_int_equal(sd_backend_cuda_memory(gp->be_graph, before, false), 0);
    if (sd_unet_forward(gp->ue, gp->x, ts, gp->ctx, L, B, H, W, gp->want, err, sizeof err) ||
        sd_unet_forward(gp->ug, gp->x, ts, gp->ctx, L, B, H, W, gp->got, err, sizeof err))
        fail_msg("UNet pass at t = %g: %s", t, err);
    assert_int_equal(sd_backend_cuda_memory(gp->be_graph, after, false), 0);
}

static void graph_pair_close(graph_pair *gp)
{
    free(gp->x);
    free(gp->ctx);
    free(gp->want);
    free(gp->got);
    sd_unet_destroy(gp->ue);
    sd_unet_destroy(gp->ug);
    sd_model_file_close(gp->mf);
    sd_backend_destroy(gp->be_eager);
    sd_backend_destroy(gp->be_graph);
}

/* A replayed pass equals the eager one: bit for bit on the emulation; on a
 * GPU cuBLAS may pick other algorithms with the fixed workspace graphs
 * set: 5e-3 relative. */
static void assert_graph_pass_equal(const fixture *f, const char *what, const float *got,
                                    const float *want, size_t n)
{
    if (strcmp(f->label, "cuda-emu") == 0) {
        golden_assert_bits_equal(what, got, want, n);
        return;
    }
    double m = 0, d = 0;
    for (size_t j = 0; j < n; j++) {
        if (fabs(want[j]) > m) m = fabs(want[j]);
        if (fabs(got[j] - want[j]) > d) d = fabs(got[j] - want[j]);
    }
    if (d > 5e-3 * m) fail_msg("%s: max |diff| %g (max %g)", what, d, m);
}

/* The same passes with graphs off and on: K/V cached and not, a new
 * context (new K/V: a new capture), another latent size, weights dropped
 * or the scratch trimmed in between (stale graph: captured again; the
 * capture fails on the upload or scratch growth and the pass runs eagerly).
 * The emulation captures and replays as a GPU does (emu/cuda_emu.h),
 * bit-equal; on a GPU bit-equal too unless cuBLAS picks other algorithms
 * with the fixed workspace graphs set: 5e-3 relative. Each pass prints what
 * ran (captured / launched / eager); failures name the pass. */
static void test_unet_graphs_equal_eager(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    const int B = 2, L = 77;
    char err[512];
    graph_pair gp;
    graph_pair_open(f, (sd_cuda_options){ .precision = SD_CUDA_PREC_AUTO }, &gp);
    sd_backend *be_eager = gp.be_eager, *be_graph = gp.be_graph;
    sd_model_file *mf = gp.mf;
    sd_unet *ue = gp.ue, *ug = gp.ug;
    int D = sd_unet_context_dim(ue);
    float *ctx1 = rand_vec((size_t)B * L * D, 1.0f), *ctx2 = rand_vec((size_t)B * L * D, 1.0f);
    /* drop 1: every weight leaves the device before the pass (the graph is
     * stale, its re-capture fails on the first upload and the pass runs
     * eagerly); drop 2: the pool and scratch are trimmed before it, as the
     * pipeline does after each image (the scratch the graph baked in is
     * freed: stale too) */
    static const struct { int kv, ctx, h, w, drop; float t; } seq[] = {
        { 1, 1, 8, 8, 0, 999.0f }, { 1, 1, 8, 8, 0, 700.0f }, { 1, 1, 8, 8, 0, 500.0f },
        { 1, 2, 8, 8, 0, 400.0f }, { 1, 2, 8, 8, 0, 300.0f }, { 1, 2, 8, 16, 0, 200.0f },
        { 1, 2, 8, 8, 1, 100.0f }, { 1, 2, 8, 8, 0, 50.0f },  { 1, 2, 8, 8, 2, 40.0f },
        { 1, 2, 8, 8, 0, 30.0f },  { 0, 1, 8, 8, 0, 20.0f },  { 0, 1, 8, 8, 0, 10.0f },
        { 0, 1, 8, 8, 2, 5.0f },   { 0, 1, 8, 8, 0, 2.0f },
    };
    const void *lo = NULL, *hi = NULL;
    for (size_t i = 0; i < sd_model_file_count(mf); i++) {
        const sd_tensor_info *t = sd_model_file_at(mf, i);
        const char *d = t->data;
        if (!d || !t->nbytes) continue;
        if (!lo || (const void *)d < lo) lo = d;
        if (!hi || (const void *)(d + t->nbytes) > hi) hi = d + t->nbytes;
    }
    for (size_t k = 0; k < sizeof seq / sizeof seq[0]; k++) {
        const int H = seq[k].h, W = seq[k].w;
        const size_t n = (size_t)B * 4 * H * W;
        float *x = rand_vec(n, 1.0f), *want = malloc(n * sizeof(float)),
              *got = malloc(n * sizeof(float));
        assert_true(want && got);
        sd_unet_set_kv_cache(ue, seq[k].kv);
        sd_unet_set_kv_cache(ug, seq[k].kv);
        if (seq[k].drop == 1)
            assert_true(sd_backend_cuda_drop_weights(be_graph, lo, hi) > 0);
        if (seq[k].drop == 2) assert_int_equal(sd_backend_cuda_trim(be_graph), 0);
        const float *ctx = seq[k].ctx == 1 ? ctx1 : ctx2;
        char what[160];
        snprintf(what, sizeof what,
                 "%s graphs, pass %zu (kv %d, ctx %d, latent %dx%d, %s)", f->label, k,
                 seq[k].kv, seq[k].ctx, H, W,
                 seq[k].drop == 1 ? "weights dropped" : seq[k].drop == 2 ? "trimmed" : "steady");
        float ts[4] = { seq[k].t, seq[k].t, seq[k].t, seq[k].t };
        if (sd_unet_forward(ue, x, ts, ctx, L, B, H, W, want, err, sizeof err))
            fail_msg("%s, eager UNet: %s", what, err);
        sd_cuda_memory before;
        assert_int_equal(sd_backend_cuda_memory(be_graph, &before, false), 0);
        if (sd_unet_forward(ug, x, ts, ctx, L, B, H, W, got, err, sizeof err))
            fail_msg("%s, UNet with graphs: %s", what, err);
        sd_cuda_memory after;
        assert_int_equal(sd_backend_cuda_memory(be_graph, &after, false), 0);
        print_message("%s: %llu captured, %llu launched, %llu eager\n", what,
                      after.graph_captures - before.graph_captures,
                      after.graph_launches - before.graph_launches,
                      after.graph_eager - before.graph_eager);
        assert_graph_pass_equal(f, what, got, want, n);
        free(x);
        free(want);
        free(got);
    }
    sd_cuda_memory m;
    assert_int_equal(sd_backend_cuda_memory(be_graph, &m, false), 0);
    print_message("%s: graphs: %llu captured, %llu launches, %llu eager\n", f->label,
                  m.graph_captures, m.graph_launches, m.graph_eager);
    /* the emulation captures and replays as a GPU does (emu/cuda_emu.h):
     * both there: captures after each shape/context/K-V change and after
     * the drop and trim, eager passes where a capture failed */
    assert_true(m.graph_launches + m.graph_eager >= 8);
    assert_true(m.graph_captures >= 4 && m.graph_launches >= 6);
    assert_int_equal(sd_backend_cuda_memory(be_eager, &m, false), 0);
    assert_true(m.graph_launches == 0 && m.graph_eager == 0);
    free(ctx1);
    free(ctx2);
    graph_pair_close(&gp);
}

/* CUDA graphs with the implicit-GEMM convolutions (conv_igemm.cu): passes
 * replayed from a graph equal eager ones (bit for bit on the emulation:
 * the split-K sums run in a fixed order), and switching the convolutions
 * back to im2col makes the graph stale (captured again, im2col's output)
 * instead of replaying the implicit kernels. */
static void test_unet_graphs_conv_implicit(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    const int B = 2, L = 77, H = 8, W = 8;
    graph_pair gp;
    graph_pair_open(f, (sd_cuda_options){ .precision = SD_CUDA_PREC_AUTO, .conv_implicit = true },
                    &gp);
    graph_pair_buffers(&gp, B, L, H, W);
    for (int k = 0; k < 6; k++) {
        if (k == 3) {   /* back to im2col on both */
            assert_int_equal(sd_backend_cuda_set_conv_implicit(gp.be_eager, false), 0);
            assert_int_equal(sd_backend_cuda_set_conv_implicit(gp.be_graph, false), 0);
        }
        sd_cuda_memory b, a;
        graph_pair_pass(&gp, 900.0f - 100.0f * (float)k, B, L, H, W, &b, &a);
        char what[160];
        snprintf(what, sizeof what, "%s graphs + implicit-GEMM convs, pass %d (%s): %llu captured, "
                 "%llu launched, %llu eager", f->label, k, k < 3 ? "implicit" : "im2col",
                 a.graph_captures - b.graph_captures, a.graph_launches - b.graph_launches,
                 a.graph_eager - b.graph_eager);
        print_message("%s\n", what);
        /* the first pass fills the K/V cache (eager); a graph is captured at
         * the second and replayed at the third; the switch makes it stale:
         * pass 3 captures again or, as im2col's larger scratch cannot grow
         * during a capture, runs eagerly; pass 5 replays the new graph */
        if (k == 1) assert_true(a.graph_captures == b.graph_captures + 1);
        if (k == 2 || k == 5)
            assert_true(a.graph_launches == b.graph_launches + 1 &&
                        a.graph_captures == b.graph_captures);
        if (k == 3)
            assert_true(a.graph_captures == b.graph_captures + 1 ||
                        (a.graph_eager == b.graph_eager + 1 && a.graph_launches == b.graph_launches));
        assert_graph_pass_equal(f, what, gp.got, gp.want, gp.n);
    }
    sd_cuda_memory m;
    assert_int_equal(sd_backend_cuda_memory(gp.be_eager, &m, false), 0);
    assert_true(m.conv_implicit_calls > 0);
    graph_pair_close(&gp);
}

/* CUDA graphs with fp16 activations: replays equal the eager passes of a
 * backend with the same switch (bit for bit on the emulation), and turning
 * the switch off makes the graph stale (its intermediates have the old
 * type): re-captured, still equal to eager. */
static void test_unet_graphs_f16_activations(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    const int B = 2, L = 77, H = 8, W = 8;
    graph_pair gp;
    graph_pair_open(f, (sd_cuda_options){ .precision = SD_CUDA_PREC_AUTO, .f16_activations = true },
                    &gp);
    graph_pair_buffers(&gp, B, L, H, W);
    sd_backend *be_eager = gp.be_eager, *be_graph = gp.be_graph;
    const size_t n = gp.n;
    float *f16_out = malloc(n * sizeof(float));
    assert_non_null(f16_out);
    for (int k = 0; k < 6; k++) {
        if (k == 3) {   /* float32 activations on both from here */
            assert_int_equal(sd_backend_cuda_set_f16_activations(be_eager, false), 0);
            assert_int_equal(sd_backend_cuda_set_f16_activations(be_graph, false), 0);
            sd_unet_kv_cache_clear(gp.ue);
            sd_unet_kv_cache_clear(gp.ug);
        }
        sd_cuda_memory b, a;
        graph_pair_pass(&gp, 500.0f, B, L, H, W, &b, &a);
        char what[160];
        snprintf(what, sizeof what, "%s graphs, %s activations, pass %d: %llu captured, "
                 "%llu launched", f->label, k < 3 ? "fp16" : "float32", k,
                 a.graph_captures - b.graph_captures, a.graph_launches - b.graph_launches);
        print_message("%s\n", what);
        /* pass 0 and 3 fill the K/V cache (eager), 1 and 4 capture, 2 and 5
         * replay */
        if (k == 1 || k == 4) assert_true(a.graph_captures == b.graph_captures + 1);
        if (k == 2 || k == 5)
            assert_true(a.graph_launches == b.graph_launches + 1 &&
                        a.graph_captures == b.graph_captures);
        assert_graph_pass_equal(f, what, gp.got, gp.want, n);
        if (k == 2) memcpy(f16_out, gp.want, n * sizeof(float));
    }
    /* the same input and timestep: fp16 activations round, float32 do not */
    assert_true(memcmp(f16_out, gp.want, n * sizeof(float)) != 0);
    free(f16_out);
    graph_pair_close(&gp);
}

/* ---- VAE tiles and NaN check -------------------------------------------------------- */

static void test_vae_tile_starts(void **state)
{
    (void)state;
    int s[16];
    assert_int_equal(sd_vae_tile_starts(24, 16, 4, s, 16), 2);
    assert_true(s[0] == 0 && s[1] == 8);
    assert_int_equal(sd_vae_tile_starts(40, 16, 4, s, 16), 3);
    assert_true(s[0] == 0 && s[1] == 12 && s[2] == 24);
    assert_int_equal(sd_vae_tile_starts(16, 16, 4, s, 16), 1);
    assert_int_equal(sd_vae_tile_starts(10, 16, 4, s, 16), 1);
    assert_int_equal(s[0], 0);
    assert_int_equal(sd_vae_tile_starts(128, 64, 8, s, 16), 3);
    assert_true(s[0] == 0 && s[1] == 56 && s[2] == 64);
}

/* Mean |a - b| over n values. */
static double mean_abs_diff(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += fabs((double)a[i] - (double)b[i]);
    return s / (double)n;
}

static void test_vae_tiled_close_to_whole(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    sd_family_info fam;
    sd_model_file *mf = open_tiny("sd1", &fam);
    const int h = 24, w = 20;
    for (int bi = 0; bi < n_backends(f); bi++) {
        sd_backend *be = backend_at(f, bi);
        char err[512];
        sd_vae *v = NULL;
        if (sd_vae_create(mf, &fam, be, &v, err, sizeof err)) fail_msg("%s", err);
        const int ds = sd_vae_downscale(v);
        const size_t npix = (size_t)3 * h * ds * w * ds;
        rng_state = 7;
        float *z = rand_vec((size_t)4 * h * w, 1.0f);
        float *whole = malloc(npix * sizeof(float)), *tiled = malloc(npix * sizeof(float));
        assert_true(whole && tiled);
        if (sd_vae_decode(v, z, 1, h, w, whole, err, sizeof err)) fail_msg("%s", err);
        sd_vae_decode_info info;
        /* one tile that covers everything is the whole decode */
        sd_vae_decode_opts one = { .tile = 32, .overlap = 4, .force_tiles = true };
        assert_int_equal(sd_vae_decode_image(v, be, z, h, w, tiled, &one, &info, err, sizeof err), 0);
        assert_int_equal(info.tiles, 1);
        golden_assert_bits_equal("one tile", tiled, whole, npix);
        /* 2x2 tiles of 16 with 8 of overlap: close to the whole. The tiny
         * VAE's random weights make its GroupNorm statistics differ a lot
         * between a tile and the whole (real VAEs much less): measured
         * 0.14 mean |diff| for a mean spread of 0.49 around the mean, where
         * an image shifted by one row is 0.64 away */
        sd_vae_decode_opts four = { .tile = 16, .overlap = 8, .force_tiles = true };
        assert_int_equal(sd_vae_decode_image(v, be, z, h, w, tiled, &four, &info, err, sizeof err), 0);
        assert_int_equal(info.tiles, 4);
        assert_string_equal(info.why_tiled, "forced");
        double mad = mean_abs_diff(tiled, whole, npix), range = max_abs(whole, npix);
        double avg = 0, spread = 0;
        for (size_t i = 0; i < npix; i++) avg += whole[i];
        avg /= (double)npix;
        for (size_t i = 0; i < npix; i++) spread += fabs(whole[i] - avg);
        spread /= (double)npix;
        print_message("%s: tiled vs whole VAE decode: mean |diff| %.4f (spread %.4f, max %.3f)\n",
                      be->ops->name, mad, spread, range);
        if (!(mad <= 0.05 * range && mad <= 0.4 * spread))
            fail_msg("%s tiled decode: mean |diff| %.4f (spread %.4f, max %.3f)", be->ops->name,
                     mad, spread, range);
        /* above the pixel threshold tiles are used without being asked */
        sd_vae_decode_opts sz = { .tile = 16, .overlap = 8, .tile_above = 64 * 64 };
        assert_int_equal(sd_vae_decode_image(v, be, z, h, w, tiled, &sz, &info, err, sizeof err), 0);
        assert_true(info.tiles == 4 && strcmp(info.why_tiled, "size") == 0);
        /* below it, one whole decode */
        sd_vae_decode_opts big = { .tile = 16, .overlap = 8, .tile_above = -1 };
        assert_int_equal(sd_vae_decode_image(v, be, z, h, w, tiled, &big, &info, err, sizeof err), 0);
        assert_true(info.tiles == 0 && info.why_tiled == NULL && !info.nan_fallback);
        golden_assert_bits_equal("untiled", tiled, whole, npix);
        free(z);
        free(whole);
        free(tiled);
        sd_vae_destroy(v);
    }
    sd_model_file_close(mf);
}

/* The fp16-overflow setting of the two tests below: a backend at `prec`,
 * the tiny sd1 VAE on it and on the F32 backend, a 4x4 latent of values up
 * to 3e5 (seed 11) and output buffers of its image size. */
typedef struct overflow_case {
    sd_backend *be;
    sd_model_file *mf;
    sd_vae *v, *v32;
    int h, w;
    size_t npix;
    float *z, *got, *want;
} overflow_case;

static void overflow_case_open(const fixture *f, sd_cuda_precision prec, overflow_case *c)
{
    sd_cuda_options o = { .precision = prec, .lib_path = f->lib[0] ? f->lib : NULL };
    char err[512];
    c->be = sd_backend_cuda_create(&o, err, sizeof err);
    if (!c->be) fail_msg("backend at precision %d: %s", (int)prec, err);
    sd_family_info fam;
    c->mf = open_tiny("sd1", &fam);
    c->h = c->w = 4;
    c->v = c->v32 = NULL;
    if (sd_vae_create(c->mf, &fam, c->be, &c->v, err, sizeof err) ||
        sd_vae_create(c->mf, &fam, f->cuda[PREC_F32], &c->v32, err, sizeof err))
        fail_msg("%s", err);
    const int ds = sd_vae_downscale(c->v);
    c->npix = (size_t)3 * c->h * ds * c->w * ds;
    rng_state = 11;
    c->z = rand_vec((size_t)4 * c->h * c->w, 3e5f);
    c->got = malloc(c->npix * sizeof(float));
    c->want = malloc(c->npix * sizeof(float));
    assert_true(c->got && c->want);
}

static void overflow_case_close(overflow_case *c)
{
    free(c->z);
    free(c->got);
    free(c->want);
    sd_vae_destroy(c->v);
    sd_vae_destroy(c->v32);
    sd_model_file_close(c->mf);
    sd_backend_destroy(c->be);
}

/* Latents large enough to overflow fp16 (> 65504 after the first 1x1 conv)
 * give NaN/Inf in F16 precision; the check redoes the decode in TF32. */
static void test_vae_nan_fallback(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    overflow_case c;
    overflow_case_open(f, SD_CUDA_PREC_F16, &c);
    char err[512];
    const size_t npix = c.npix;
    float *plain = malloc(npix * sizeof(float));
    assert_true(plain);
    /* the precondition: plain fp16 really overflows here */
    if (sd_vae_decode(c.v, c.z, 1, c.h, c.w, plain, err, sizeof err)) fail_msg("%s", err);
    bool finite = true;
    for (size_t i = 0; i < npix; i++) finite = finite && isfinite(plain[i]);
    assert_false(finite);
    sd_vae_decode_info info;
    assert_int_equal(
        sd_vae_decode_image(c.v, c.be, c.z, c.h, c.w, c.got, NULL, &info, err, sizeof err), 0);
    assert_true(info.nan_fallback);
    assert_false(info.nan_left);
    if (sd_vae_decode(c.v32, c.z, 1, c.h, c.w, c.want, err, sizeof err)) fail_msg("%s", err);
    golden_assert_close("NaN fallback vs F32", c.got, c.want, npix,
                        1e-2 * fmax(1.0, max_abs(c.want, npix)));
    /* the backend's own precision is back to F16 afterwards */
    sd_cuda_precision now;
    assert_int_equal(sd_backend_cuda_set_precision(c.be, SD_CUDA_PREC_F16, &now), 0);
    assert_int_equal(now, SD_CUDA_PREC_F16);
    /* an ordinary latent needs no fallback */
    for (size_t i = 0; i < (size_t)4 * c.h * c.w; i++) c.z[i] *= 1.0f / 3e5f;
    assert_int_equal(
        sd_vae_decode_image(c.v, c.be, c.z, c.h, c.w, c.got, NULL, &info, err, sizeof err), 0);
    assert_false(info.nan_fallback);
    free(plain);
    overflow_case_close(&c);
}

/* The bf16 VAE (SD_CUDA_PREC_AUTO_VAE_BF16) has float32's exponent range:
 * the latent that overflows fp16 above decodes to finite values with no
 * fallback, close to F32 at a bf16 tolerance. A latent holding an infinity
 * still goes through the NaN check from bf16: the decode is redone (in F32;
 * still not finite, so nan_left) and the backend is back in AUTO_VAE_BF16
 * afterwards. */
static void test_vae_bf16_no_overflow(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    overflow_case c;
    overflow_case_open(f, SD_CUDA_PREC_AUTO_VAE_BF16, &c);
    char err[512];
    const size_t npix = c.npix;
    sd_vae_decode_info info;
    assert_int_equal(
        sd_vae_decode_image(c.v, c.be, c.z, c.h, c.w, c.got, NULL, &info, err, sizeof err), 0);
    assert_false(info.nan_fallback);
    assert_false(info.nan_left);
    for (size_t i = 0; i < npix; i++) assert_true(isfinite(c.got[i]));
    if (sd_vae_decode(c.v32, c.z, 1, c.h, c.w, c.want, err, sizeof err)) fail_msg("%s", err);
    const double m = max_abs(c.want, npix);
    print_message("bf16 VAE at a 3e5 latent: max |bf16 - F32| %.3g of max %.3g\n",
                  golden_max_abs_diff(c.got, c.want, npix, &(size_t){ 0 }), m);
    golden_assert_close("bf16 VAE vs F32, fp16-overflowing latent", c.got, c.want, npix,
                        3e-2 * fmax(1.0, m));
    /* NaN/Inf from bf16: the fallback runs and restores the precision */
    c.z[5] = INFINITY;
    assert_int_equal(
        sd_vae_decode_image(c.v, c.be, c.z, c.h, c.w, c.got, NULL, &info, err, sizeof err), 0);
    assert_true(info.nan_fallback);
    assert_true(info.nan_left);
    sd_cuda_precision now;
    assert_int_equal(sd_backend_cuda_set_precision(c.be, SD_CUDA_PREC_AUTO_VAE_BF16, &now), 0);
    assert_int_equal(now, SD_CUDA_PREC_AUTO_VAE_BF16);
    overflow_case_close(&c);
}

/* ---- model cache: several models through a small VRAM budget ------------------------ */

static const char *const k_models[3] = { "sd1", "sd2", "sd1_inpaint" };

static void generate_steps(sd_pipeline *p, int steps, sd_image *img)
{
    sd_job job;
    sd_job_init(&job);
    job.prompt = "a red cat";
    job.negative = "blurry";
    job.seed = 7;
    job.steps = steps;
    job.sampler = SD_SAMPLER_EULER;
    job.width = job.height = 64;
    char err[512];
    if (sd_generate(p, &job, img, err, sizeof err)) fail_msg("generate: %s", err);
}

static void generate(sd_pipeline *p, sd_image *img) { generate_steps(p, 1, img); }

static sd_model_cache *cache_on(sd_backend *be, int max_models)
{
    char vocab[1024], err[512];
    golden_shared_path(vocab, sizeof vocab, VOCAB_REL);
    sd_model_cache_opts o = { .use_backend = be, .vram_budget_mb = -1, .max_models = max_models,
                              .vocab_path = vocab };
    sd_model_cache *c = NULL;
    if (sd_model_cache_create(&o, &c, err, sizeof err)) fail_msg("model cache: %s", err);
    return c;
}

static sd_pipeline *cache_get(sd_model_cache *c, const char *kind)
{
    char path[1024], err[512];
    model_path(path, sizeof path, kind);
    sd_pipeline *p = NULL;
    if (sd_model_cache_get(c, path, NULL, &p, err, sizeof err)) fail_msg("%s: %s", kind, err);
    return p;
}

static int max_level_diff(const sd_image *a, const sd_image *b)
{
    assert_true(a->width == b->width && a->height == b->height && a->channels == b->channels);
    int m = 0;
    for (size_t i = 0; i < (size_t)a->width * a->height * a->channels; i++) {
        int d = abs((int)a->pixels[i] - (int)b->pixels[i]);
        if (d > m) m = d;
    }
    return m;
}

static void test_model_cache_swaps(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    const bool emulated = strcmp(f->label, "cuda-emu") == 0;
    char err[512];
    sd_cuda_options o = { 0, SD_CUDA_PREC_AUTO, 0, f->lib[0] ? f->lib : NULL, 0, false, false, false };
    /* references, and each model's weight bytes, on a backend of its own */
    sd_backend *ref_be = sd_backend_cuda_create(&o, err, sizeof err);
    if (!ref_be) fail_msg("%s", err);
    sd_model_cache *ref = cache_on(ref_be, 3);
    sd_image want[3];
    size_t wbytes[3], largest = 0;
    for (int k = 0; k < 3; k++) {
        sd_cuda_memory m0, m1;
        assert_int_equal(sd_backend_cuda_memory(ref_be, &m0, false), 0);
        generate(cache_get(ref, k_models[k]), &want[k]);
        assert_int_equal(sd_backend_cuda_memory(ref_be, &m1, false), 0);
        wbytes[k] = m1.weights - m0.weights;
        if (wbytes[k] > largest) largest = wbytes[k];
    }
    sd_model_cache_destroy(ref);
    sd_backend_destroy(ref_be);

    /* a budget for about one model: every switch swaps */
    sd_backend *be = sd_backend_cuda_create(&o, err, sizeof err);
    if (!be) fail_msg("%s", err);
    size_t budget = largest + largest / 4;
    assert_int_equal(sd_backend_cuda_set_vram_budget(be, budget), 0);
    sd_model_cache *c = cache_on(be, 2);
    static const int order[] = { 0, 1, 0, 2, 1, 0 };
    unsigned long long uploads_before_return = 0;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        int k = order[i];
        sd_cuda_memory m;
        assert_int_equal(sd_backend_cuda_memory(be, &m, false), 0);
        if (i == 2) uploads_before_return = m.weight_uploads;
        sd_image img;
        generate(cache_get(c, k_models[k]), &img);
        /* no atomics anywhere: the same kernels on the same weights give the
         * same bits; one level of slack on a GPU for cuBLAS's choices */
        int d = max_level_diff(&img, &want[k]);
        if (d > (emulated ? 0 : 1))
            fail_msg("%s after a swap differs by %d levels", k_models[k], d);
        sd_image_free(&img);
        assert_int_equal(sd_backend_cuda_memory(be, &m, false), 0);
        print_message("  %s: %llu uploads, %llu evictions so far\n", k_models[k], m.weight_uploads,
                      m.weight_evictions);
        if (m.weights > budget) fail_msg("%zu weight bytes cached, budget %zu", m.weights, budget);
    }
    sd_cuda_memory m;
    assert_int_equal(sd_backend_cuda_memory(be, &m, false), 0);
    print_message("%s: budget %zu B (models %zu/%zu/%zu B): %llu uploads, %llu evictions, "
                  "peak %zu B, %zu B pinned\n", f->label, budget, wbytes[0], wbytes[1],
                  wbytes[2], m.weight_uploads, m.weight_evictions, m.weights_peak, m.host_pinned);
    assert_true(m.weight_evictions > 0);
    assert_true(m.weights_peak <= budget);
    /* coming back to sd1 (3rd run) uploaded it again: it had been evicted */
    assert_true(m.weight_uploads > uploads_before_return);
    sd_model_cache_stats st;
    sd_model_cache_stats_get(c, &st);
    /* sd1, sd2 open; sd1 hit; inpaint closes sd2; sd2 closes sd1; sd1 closes inpaint */
    assert_int_equal((int)st.loads, 5);
    assert_int_equal((int)st.hits, 1);
    assert_int_equal((int)st.closed, 3);
    assert_int_equal(st.open, 2);
    /* safetensors files are page-locked; a driver may refuse to register a
     * read-only file mapping (uploads still work, slower): required only
     * in the emulation */
    if (emulated) {
        assert_int_equal(st.pinned, 2);
        assert_true(m.host_pinned > 0);
    } else {
        print_message("%s: %d of 2 open models page-locked\n", f->label, st.pinned);
    }
    sd_model_cache_destroy(c);
    /* closing the models dropped their device copies and pins */
    assert_int_equal(sd_backend_cuda_memory(be, &m, false), 0);
    assert_int_equal((int)m.weights, 0);
    assert_int_equal((int)m.host_pinned, 0);
    sd_backend_destroy(be);
    for (int k = 0; k < 3; k++) sd_image_free(&want[k]);
}

/* The host level alone (any backend): LRU over open pipelines, same
 * images as a pipeline of its own. */
static void test_model_cache_cpu(void **state)
{
    fixture *f = *state;
    sd_model_cache *c = cache_on(f->cpu, 1);
    sd_image a, b, a2;
    generate(cache_get(c, "sd1"), &a);
    generate(cache_get(c, "sd2"), &b);
    generate(cache_get(c, "sd1"), &a2);
    assert_int_equal(max_level_diff(&a, &a2), 0);
    sd_model_cache_stats st;
    sd_model_cache_stats_get(c, &st);
    assert_true(st.loads == 3 && st.hits == 0 && st.closed == 2 && st.open == 1 && st.pinned == 0);
    char d[700];
    sd_model_cache_describe(c, d, sizeof d);
    assert_non_null(strstr(d, "cpu"));
    sd_model_cache_destroy(c);
    sd_image_free(&a);
    sd_image_free(&b);
    sd_image_free(&a2);
}

/* ---- offload: networks' device weights dropped between the phases --------------------- */

typedef struct offload_run {
    sd_image img[2];             /* two images in a row: the second re-uploads */
    size_t weights_after;        /* weight bytes cached after them */
    sd_pipeline_memory mem;      /* of the second image */
    unsigned long long graph_captures, graph_launches;
} offload_run;

static void offload_generate(const fixture *f, int offload, bool graphs, offload_run *r)
{
    char err[512], path[1024], vocab[1024];
    sd_cuda_options o = { 0, SD_CUDA_PREC_AUTO, 0, f->lib[0] ? f->lib : NULL, 0, graphs, false, false };
    sd_backend *be = sd_backend_cuda_create(&o, err, sizeof err);
    if (!be) fail_msg("%s", err);
    model_path(path, sizeof path, "sd1");
    golden_shared_path(vocab, sizeof vocab, VOCAB_REL);
    sd_pipeline_opts po = { .model_path = path, .vocab_path = vocab,
                            .shared_backend = be, .offload = offload, .phase_memory = true };
    sd_pipeline *p = NULL;
    if (sd_pipeline_load(&po, &p, err, sizeof err)) fail_msg("pipeline: %s", err);
    /* 3 steps: the first fills the K/V cache (eager), the others are the
     * steady state that runs as a graph when graphs are on */
    generate_steps(p, 3, &r->img[0]);
    generate_steps(p, 3, &r->img[1]);
    r->mem = *sd_pipeline_last_memory(p);
    sd_cuda_memory m;
    assert_int_equal(sd_backend_cuda_memory(be, &m, false), 0);
    r->weights_after = m.weights;
    r->graph_captures = m.graph_captures;
    r->graph_launches = m.graph_launches;
    sd_pipeline_free(p);
    sd_backend_destroy(be);
}

static void test_pipeline_offload(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    const bool emulated = strcmp(f->label, "cuda-emu") == 0;
    offload_run r[3], g[2];
    for (int level = SD_OFFLOAD_NONE; level <= SD_OFFLOAD_SEQUENTIAL; level++)
        offload_generate(f, level, false, &r[level]);
    /* with CUDA graphs of the UNet step: the pool/scratch trimmed after each
     * image (and, sequential, the UNet's weights dropped) make the graph
     * stale; the second image re-captures and gives the same pixels */
    offload_generate(f, SD_OFFLOAD_NONE, true, &g[0]);
    offload_generate(f, SD_OFFLOAD_SEQUENTIAL, true, &g[1]);
    for (int k = 0; k < 2; k++) {
        print_message("%s offload %d with graphs: %llu captured, %llu launched\n", f->label,
                      k ? SD_OFFLOAD_SEQUENTIAL : SD_OFFLOAD_NONE, g[k].graph_captures,
                      g[k].graph_launches);
        assert_true(g[k].graph_captures >= 2 && g[k].graph_launches >= 2);
        for (int i = 0; i < 2; i++) {
            int d = max_level_diff(&g[k].img[i], &r[0].img[0]);
            if (d > (emulated ? 0 : 1))
                fail_msg("graphs, offload run %d, image %d differs by %d levels", k, i, d);
            sd_image_free(&g[k].img[i]);
        }
    }
    for (int level = 0; level < 3; level++) {
        print_message("%s offload %d: weights after %zu B, dropped %lld B; device peaks text %zu, "
                      "steps %zu, VAE %zu B\n", f->label, level, r[level].weights_after,
                      r[level].mem.dropped, r[level].mem.text_peak, r[level].mem.steps_peak,
                      r[level].mem.vae_peak);
        assert_true(r[level].mem.valid);
        assert_true(r[level].mem.text_peak > 0 && r[level].mem.steps_peak > 0 &&
                    r[level].mem.vae_peak > 0);
        /* the same weights uploaded again give the same images */
        for (int i = 0; i < 2; i++) {
            int d = max_level_diff(&r[level].img[i], &r[0].img[0]);
            if (d > (emulated ? 0 : 1))
                fail_msg("offload %d, image %d differs by %d levels", level, i, d);
        }
    }
    /* NONE keeps everything; ENCODERS keeps the UNet only; SEQUENTIAL nothing */
    assert_true(r[0].mem.dropped == 0);
    assert_true(r[1].mem.dropped > 0 && r[1].weights_after > 0 &&
                r[1].weights_after < r[0].weights_after);
    assert_true(r[2].mem.dropped > r[1].mem.dropped);
    assert_int_equal((int)r[2].weights_after, 0);
    /* without the UNet's weights the VAE phase needs less of the device:
     * exact on the emulation; a GPU's memory pools map whole chunks (tens
     * of MB), coarser than these tiny models' 6.6 MB of weights, so there
     * it can only be no more */
    if (emulated) assert_true(r[2].mem.vae_peak < r[0].mem.vae_peak);
    else assert_true(r[2].mem.vae_peak <= r[0].mem.vae_peak);
    for (int level = 0; level < 3; level++)
        for (int i = 0; i < 2; i++) sd_image_free(&r[level].img[i]);
}

/* ---- VAE decode with a nin_shortcut block: exact result, bounded memory ------------- */

/* A decoder with the shape of the real one's last levels (the tiny golden
 * VAE has no nin_shortcut): conv_in 4 -> 64, mid (ResBlock, attention,
 * ResBlock), up.1 = two 64-channel ResBlocks + upsample, up.0 = a
 * 64 -> 32 ResBlock with nin_shortcut + a 32-channel one, norm_out, conv_out. */
enum { NV_C1 = 64, NV_C0 = 32, NV_MAX = 96 };

typedef struct nin_vae_file {
    char path[64];
    char names[NV_MAX][96];
    float *data[NV_MAX];
    int n;
    st_entry e[NV_MAX];
} nin_vae_file;

static void nv_add(nin_vae_file *v, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2,
                   int64_t d3, float scale, float offset)
{
    assert_true(v->n < NV_MAX);
    st_entry *e = &v->e[v->n];
    snprintf(v->names[v->n], sizeof v->names[0], "first_stage_model.%s", name);
    int64_t dims[4] = { d0, d1, d2, d3 }, numel = 1;
    for (int i = 0; i < ndim; i++) {
        e->shape[i] = dims[i];
        numel *= dims[i];
    }
    float *d = rand_vec((size_t)numel, scale);
    for (int64_t i = 0; i < numel; i++) d[i] += offset;
    v->data[v->n] = d;
    e->name = v->names[v->n];
    e->dtype = "F32";
    e->ndim = ndim;
    e->data = d;
    e->nbytes = (size_t)numel * sizeof(float);
    v->n++;
}

static void nv_conv(nin_vae_file *v, const char *name, int cout, int cin, int k)
{
    char n[96];
    snprintf(n, sizeof n, "%s.weight", name);
    nv_add(v, n, 4, cout, cin, k, k, 1.0f / sqrtf((float)(cin * k * k)), 0.0f);
    snprintf(n, sizeof n, "%s.bias", name);
    nv_add(v, n, 1, cout, 1, 1, 1, 0.1f, 0.0f);
}

static void nv_norm(nin_vae_file *v, const char *name, int c)
{
    char n[96];
    snprintf(n, sizeof n, "%s.weight", name);
    nv_add(v, n, 1, c, 1, 1, 1, 0.2f, 1.0f);
    snprintf(n, sizeof n, "%s.bias", name);
    nv_add(v, n, 1, c, 1, 1, 1, 0.1f, 0.0f);
}

static void nv_res(nin_vae_file *v, const char *base, int cin, int cout)
{
    char n[96];
    snprintf(n, sizeof n, "%s.norm1", base);
    nv_norm(v, n, cin);
    snprintf(n, sizeof n, "%s.conv1", base);
    nv_conv(v, n, cout, cin, 3);
    snprintf(n, sizeof n, "%s.norm2", base);
    nv_norm(v, n, cout);
    snprintf(n, sizeof n, "%s.conv2", base);
    nv_conv(v, n, cout, cout, 3);
    if (cin != cout) {
        snprintf(n, sizeof n, "%s.nin_shortcut", base);
        nv_conv(v, n, cout, cin, 1);
    }
}

static sd_model_file *nin_vae_open(nin_vae_file *v)
{
    memset(v, 0, sizeof *v);
    rng_state = 77;
    nv_conv(v, "post_quant_conv", 4, 4, 1);
    nv_conv(v, "decoder.conv_in", NV_C1, 4, 3);
    nv_res(v, "decoder.mid.block_1", NV_C1, NV_C1);
    nv_norm(v, "decoder.mid.attn_1.norm", NV_C1);
    nv_conv(v, "decoder.mid.attn_1.q", NV_C1, NV_C1, 1);
    nv_conv(v, "decoder.mid.attn_1.k", NV_C1, NV_C1, 1);
    nv_conv(v, "decoder.mid.attn_1.v", NV_C1, NV_C1, 1);
    nv_conv(v, "decoder.mid.attn_1.proj_out", NV_C1, NV_C1, 1);
    nv_res(v, "decoder.mid.block_2", NV_C1, NV_C1);
    nv_res(v, "decoder.up.1.block.0", NV_C1, NV_C1);
    nv_res(v, "decoder.up.1.block.1", NV_C1, NV_C1);
    nv_conv(v, "decoder.up.1.upsample.conv", NV_C1, NV_C1, 3);
    nv_res(v, "decoder.up.0.block.0", NV_C1, NV_C0);
    nv_res(v, "decoder.up.0.block.1", NV_C0, NV_C0);
    nv_norm(v, "decoder.norm_out", NV_C0);
    nv_conv(v, "decoder.conv_out", 3, NV_C0, 3);
    mw_buf b = { 0 };
    st_build(&b, v->e, (size_t)v->n, NULL);
    snprintf(v->path, sizeof v->path, "/tmp/hn-nin-vae-%d.safetensors", (int)getpid());
    assert_int_equal(mw_write_file(v->path, &b), 0);
    mw_buf_free(&b);
    sd_model_file *f = NULL;
    char err[512];
    if (sd_model_file_open(v->path, &f, err, sizeof err)) fail_msg("nin VAE: %s", err);
    return f;
}

static void nin_vae_close(nin_vae_file *v, sd_model_file *f)
{
    sd_model_file_close(f);
    unlink(v->path);
    for (int i = 0; i < v->n; i++) free(v->data[i]);
}

/* The reference: the decoder written out op by op as vae.c did before its
 * ResnetBlocks consumed their input (GroupNorm out of place, a separate
 * output tensor). The same ops on the same values: bit-equal expected. */
static const sd_tensor_info *nv_w(const sd_model_file *f, const char *base, const char *what)
{
    char n[160];
    snprintf(n, sizeof n, "first_stage_model.%s.%s", base, what);
    const sd_tensor_info *t = sd_model_file_find(f, n);
    if (!t) fail_msg("no %s", n);
    return t;
}
#define NV_W(base, what) nv_w(f, base, what)
#define NV_OK(call)                                                          \
    do {                                                                     \
        if (call) fail_msg("reference decoder: %s", sd_backend_error(be));   \
    } while (0)

static sd_tensor nv_ref_res(sd_backend *be, const sd_model_file *f, const char *b, sd_tensor *x,
                            int cout)
{
    sd_conv_params c3 = sd_conv_same(3, 1, false), c1 = sd_conv_same(1, 1, false);
    sd_tensor t, t2, out;
    char n[96];
    NV_OK(sd_tensor_new(be, &t, x->n, x->h, x->w, x->c));
    NV_OK(sd_group_norm(be, x, 32, 1e-6f, NV_W(b, "norm1.weight"), NV_W(b, "norm1.bias"), true, &t));
    NV_OK(sd_tensor_new(be, &t2, x->n, x->h, x->w, cout));
    NV_OK(sd_conv2d(be, &t, NV_W(b, "conv1.weight"), NV_W(b, "conv1.bias"), &c3, NULL, &t2));
    sd_tensor_free(be, &t);
    NV_OK(sd_group_norm(be, &t2, 32, 1e-6f, NV_W(b, "norm2.weight"), NV_W(b, "norm2.bias"), true, &t2));
    NV_OK(sd_tensor_new(be, &out, x->n, x->h, x->w, cout));
    bool nin = x->c != cout;
    snprintf(n, sizeof n, "%s.nin_shortcut", b);
    if (nin) NV_OK(sd_conv2d(be, x, NV_W(n, "weight"), NV_W(n, "bias"), &c1, NULL, &out));
    NV_OK(sd_conv2d(be, &t2, NV_W(b, "conv2.weight"), NV_W(b, "conv2.bias"), &c3, nin ? &out : x,
                    &out));
    sd_tensor_free(be, &t2);
    sd_tensor_free(be, x);
    return out;
}

static void nv_ref_decode(sd_backend *be, const sd_model_file *f, const float *z, int h, int w,
                          float *img)
{
    sd_conv_params c3 = sd_conv_same(3, 1, false), c1 = sd_conv_same(1, 1, false);
    sd_tensor x, y, q, k, v, o;
    NV_OK(sd_tensor_new(be, &x, 1, h, w, 4));
    NV_OK(sd_upload_nchw(be, z, &x));
    NV_OK(sd_tensor_new(be, &y, 1, h, w, 4));
    NV_OK(sd_conv2d(be, &x, NV_W("post_quant_conv", "weight"), NV_W("post_quant_conv", "bias"), &c1,
                    NULL, &y));
    sd_tensor_free(be, &x);
    NV_OK(sd_tensor_new(be, &x, 1, h, w, NV_C1));
    NV_OK(sd_conv2d(be, &y, NV_W("decoder.conv_in", "weight"), NV_W("decoder.conv_in", "bias"), &c3,
                    NULL, &x));
    sd_tensor_free(be, &y);
    x = nv_ref_res(be, f, "decoder.mid.block_1", &x, NV_C1);
    const char *a = "decoder.mid.attn_1";
    NV_OK(sd_tensor_new(be, &y, 1, h, w, NV_C1) || sd_tensor_new(be, &q, 1, h, w, NV_C1) ||
          sd_tensor_new(be, &k, 1, h, w, NV_C1) || sd_tensor_new(be, &v, 1, h, w, NV_C1) ||
          sd_tensor_new(be, &o, 1, h, w, NV_C1));
    NV_OK(sd_group_norm(be, &x, 32, 1e-6f, NV_W(a, "norm.weight"), NV_W(a, "norm.bias"), false, &y));
    NV_OK(sd_linear(be, &y, NV_W(a, "q.weight"), NV_W(a, "q.bias"), NULL, &q));
    NV_OK(sd_linear(be, &y, NV_W(a, "k.weight"), NV_W(a, "k.bias"), NULL, &k));
    NV_OK(sd_linear(be, &y, NV_W(a, "v.weight"), NV_W(a, "v.bias"), NULL, &v));
    NV_OK(sd_attention(be, &q, &k, &v, 1, 0.0f, false, &o));
    NV_OK(sd_linear(be, &o, NV_W(a, "proj_out.weight"), NV_W(a, "proj_out.bias"), &x, &y));
    sd_tensor_free(be, &x);
    sd_tensor_free(be, &q);
    sd_tensor_free(be, &k);
    sd_tensor_free(be, &v);
    sd_tensor_free(be, &o);
    x = nv_ref_res(be, f, "decoder.mid.block_2", &y, NV_C1);
    x = nv_ref_res(be, f, "decoder.up.1.block.0", &x, NV_C1);
    x = nv_ref_res(be, f, "decoder.up.1.block.1", &x, NV_C1);
    NV_OK(sd_tensor_new(be, &y, 1, 2 * h, 2 * w, NV_C1));
    NV_OK(sd_upsample_nearest2x(be, &x, &y));
    sd_tensor_free(be, &x);
    NV_OK(sd_tensor_new(be, &x, 1, 2 * h, 2 * w, NV_C1));
    NV_OK(sd_conv2d(be, &y, NV_W("decoder.up.1.upsample.conv", "weight"),
                    NV_W("decoder.up.1.upsample.conv", "bias"), &c3, NULL, &x));
    sd_tensor_free(be, &y);
    x = nv_ref_res(be, f, "decoder.up.0.block.0", &x, NV_C0);
    x = nv_ref_res(be, f, "decoder.up.0.block.1", &x, NV_C0);
    NV_OK(sd_group_norm(be, &x, 32, 1e-6f, NV_W("decoder.norm_out", "weight"),
                        NV_W("decoder.norm_out", "bias"), true, &x));
    NV_OK(sd_tensor_new(be, &y, 1, 2 * h, 2 * w, 3));
    NV_OK(sd_conv2d(be, &x, NV_W("decoder.conv_out", "weight"), NV_W("decoder.conv_out", "bias"), &c3,
                    NULL, &y));
    NV_OK(sd_download_nchw(be, &y, img));
    sd_tensor_free(be, &x);
    sd_tensor_free(be, &y);
}

/* vae.c's decode equals the op-by-op reference bit for bit on every backend
 * and precision, and on CUDA (the memory pool's exact high-water mark) its activations
 * stay within 4 full-size 32-channel maps + the scratch cap: the 64 -> 32
 * nin block holds x (64), out and t2 (32 each), the upsample its input and
 * output (64 each). Before, the nin block also held GroupNorm(x) apart
 * (64 more): 5 maps, which this bound rejects. */
static void test_vae_nin_decode_memory(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    nin_vae_file nv;
    sd_model_file *mf = nin_vae_open(&nv);
    const int h = 16, w = 16, H = 2 * h, W = 2 * w;
    const size_t npix = (size_t)3 * H * W;
    rng_state = 5;
    float *z = rand_vec((size_t)4 * h * w, 1.0f);
    float *got = malloc(npix * sizeof(float)), *want = malloc(npix * sizeof(float));
    assert_true(got && want);
    sd_backend *bes[1 + N_PREC] = { f->cpu, f->cuda[PREC_AUTO], f->cuda[PREC_F32] };
    const char *names[1 + N_PREC] = { "cpu", "AUTO", "F32" };
    const size_t cap = 64 << 10;
    for (int i = 0; i < 1 + N_PREC; i++) {
        sd_backend *be = bes[i];
        bool cuda = sd_backend_is_cuda(be);
        size_t old_cap = 0;
        if (cuda) assert_int_equal(sd_backend_cuda_set_workspace_limit(be, cap, &old_cap), 0);
        sd_family_info fam;
        memset(&fam, 0, sizeof fam);
        sd_vae *v = NULL;
        char err[512];
        if (sd_vae_create(mf, &fam, be, &v, err, sizeof err)) fail_msg("%s", err);
        assert_int_equal(sd_vae_downscale(v), 2);
        nv_ref_decode(be, mf, z, h, w, want);   /* also uploads the weights */
        sd_cuda_memory m0, m1;
        if (cuda) assert_int_equal(sd_backend_cuda_memory(be, &m0, true), 0);
        if (sd_vae_decode(v, z, 1, h, w, got, err, sizeof err)) fail_msg("%s", err);
        if (cuda) assert_int_equal(sd_backend_cuda_memory(be, &m1, false), 0);
        char what[128];
        snprintf(what, sizeof what, "%s %s: nin VAE decode vs the op-by-op reference", f->label,
                 names[i]);
        for (size_t j = 0; j < npix; j++)
            if (memcmp(&got[j], &want[j], sizeof(float)))
                fail_msg("%s: pixel value %zu differs: %.9g vs %.9g", what, j, got[j], want[j]);
        assert_true(max_abs(want, npix) > 0.0);
        if (cuda) {
            const size_t map32 = (size_t)NV_C0 * H * W * sizeof(float);
            /* the pool's own high-water mark: exact on a GPU too, where the
             * whole-device use is only sampled and the pool keeps what the
             * reference decode reserved (the GPU saw 0 B there) */
            size_t act = m1.activations_peak - m0.activations;
            print_message("%s %s: decode %dx%d -> %dx%d: activations + scratch peak %zu B "
                          "(32-channel map %zu B, scratch cap %zu B)\n",
                          f->label, names[i], w, h, W, H, act, map32, cap);
            /* 4 maps + the cap + GroupNorm partials and the like (< 1/4 map) */
            assert_true(act <= 4 * map32 + cap + map32 / 4);
            assert_true(act >= 4 * map32);   /* the peak was seen at all */
            assert_int_equal(sd_backend_cuda_set_workspace_limit(be, old_cap, NULL), 0);
        }
        sd_vae_destroy(v);
    }
    free(z);
    free(got);
    free(want);
    nin_vae_close(&nv, mf);
}

/* ---- the config switches reach a backend the engine creates itself ---------------------- */

/* The provider (through the model cache) and the CLI (through a pipeline)
 * create their own CUDA backend from the plugin's config: graphs,
 * implicit-GEMM convolutions, fp16 activations and the bf16 VAE must be on
 * in it, and an image made there must use them and decode in the VAE tiles
 * asked for. The backend is found by the loader's search, pointed at this
 * group's library with $HN_SD_CUDA_LIB. */
static void check_switches_on(sd_backend *be, sd_pipeline *p)
{
    assert_true(sd_backend_is_cuda(be));
    assert_true(sd_backend_cuda_graphs_on(be));
    sd_cuda_precision old;
    assert_int_equal(sd_backend_cuda_set_precision(be, SD_CUDA_PREC_AUTO_VAE_BF16, &old), 0);
    assert_int_equal(old, SD_CUDA_PREC_AUTO_VAE_BF16);
    assert_int_equal(be->inner_type, SD_ACT_F16);   /* cuda_f16_activations */
    sd_cuda_memory m0, m1;
    assert_int_equal(sd_backend_cuda_memory(be, &m0, false), 0);
    sd_image img;
    generate(p, &img);
    sd_image_free(&img);
    assert_int_equal(sd_backend_cuda_memory(be, &m1, false), 0);
    assert_true(m1.conv_implicit_calls > m0.conv_implicit_calls);
    const sd_vae_decode_info *dec = sd_pipeline_last_decode(p);
    assert_true(dec->tiles > 1);
    assert_string_equal(dec->why_tiled, "size");
}

static void test_own_backend_switches(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    const char *prev = getenv("HN_SD_CUDA_LIB");
    char saved[PATH_MAX + 64] = "";
    if (prev) snprintf(saved, sizeof saved, "%s", prev);
    if (f->lib[0]) setenv("HN_SD_CUDA_LIB", f->lib, 1);
    char vocab[1024], path[1024], err[512];
    golden_shared_path(vocab, sizeof vocab, VOCAB_REL);
    model_path(path, sizeof path, "sd1");

    sd_model_cache_opts co = { .backend = "cuda", .vram_budget_mb = -1, .max_models = 1,
                               .vocab_path = vocab, .cuda_graphs = true,
                               .cuda_conv_implicit = true, .cuda_vae_bf16 = true,
                               .cuda_f16_activations = true, .vae_tile = 4,
                               .vae_tile_above = 1 };
    sd_model_cache *c = NULL;
    if (sd_model_cache_create(&co, &c, err, sizeof err)) fail_msg("model cache: %s", err);
    check_switches_on(sd_model_cache_backend(c), cache_get(c, "sd1"));
    sd_model_cache_destroy(c);

    sd_pipeline_opts po = { .model_path = path, .vocab_path = vocab, .backend = "cuda",
                            .cuda_graphs = true, .cuda_conv_implicit = true,
                            .cuda_vae_bf16 = true, .cuda_f16_activations = true,
                            .vae_tile = 4, .vae_tile_above = 1 };
    sd_pipeline *p = NULL;
    if (sd_pipeline_load(&po, &p, err, sizeof err)) fail_msg("pipeline: %s", err);
    check_switches_on(sd_pipeline_backend(p), p);
    sd_pipeline_free(p);

    if (prev) setenv("HN_SD_CUDA_LIB", saved, 1);
    else unsetenv("HN_SD_CUDA_LIB");
}

#define ENGINE_TESTS                                                                         \
    cmocka_unit_test(test_unet_any_latent_size), cmocka_unit_test(test_kv_cache_equals_uncached), \
        cmocka_unit_test(test_vae_tiled_close_to_whole), cmocka_unit_test(test_vae_nan_fallback), \
        cmocka_unit_test(test_vae_bf16_no_overflow), \
        cmocka_unit_test(test_model_cache_swaps), cmocka_unit_test(test_pipeline_offload), \
        cmocka_unit_test(test_unet_graphs_equal_eager), cmocka_unit_test(test_vae_nin_decode_memory), \
        cmocka_unit_test(test_unet_graphs_conv_implicit), cmocka_unit_test(test_own_backend_switches), \
        cmocka_unit_test(test_unet_graphs_f16_activations)

static int setup_cpu_only(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    f->label = "cpu";
    *state = f;
    char err[512];
    f->cpu = sd_backend_cpu_create(0, err, sizeof err);
    return f->cpu ? 0 : -1;
}

int main(void)
{
    /* HN_TEST_FILTER=test_unet_graphs* runs only the matching tests (cmocka's
     * wildcard pattern), e.g. the slow emulated ones one at a time */
    const char *filter = getenv("HN_TEST_FILTER");
    if (filter && filter[0]) cmocka_set_test_filter(filter);
    const struct CMUnitTest cpu[] = { cmocka_unit_test(test_vae_tile_starts),
                                      cmocka_unit_test(test_model_cache_cpu) };
    const struct CMUnitTest gpu[] = { ENGINE_TESTS };
    const struct CMUnitTest emu[] = { ENGINE_TESTS };
    int failed = cmocka_run_group_tests_name("engine (CPU)", cpu, setup_cpu_only, teardown);
    failed += cmocka_run_group_tests_name("engine on cuda (GPU)", gpu, setup_gpu, teardown);
    failed += cmocka_run_group_tests_name("engine on cuda-emu (CUDA kernels emulated on the CPU)",
                                          emu, setup_emu, teardown);
    return failed ? 1 : 0;
}
