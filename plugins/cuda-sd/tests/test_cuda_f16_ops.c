/* test_cuda_f16_ops.c - fp16 activations in the CUDA backend's element-wise
 * and normalisation ops (backend/cuda/elementwise.cu, norm.cu) and in its
 * transfers (upload/download, upload_nchw/download_nchw).
 *
 * Method (f16_fixture.h): every op runs on a backend with fp16 activations
 * on, first with all operands float32 (the reference; it is also checked
 * against the CPU backend), then with every mix of float32 and fp16
 * operands holding the same values (inputs are fp16-representable), and in
 * place where the op allows it. A float32 output must equal the reference
 * (1e-5 of its largest value: the math is float32 either way); an fp16
 * output must be within one fp16 ulp of the reference rounded to fp16,
 * element by element, and 2e-3 of the largest value. Reading fp16 bits as
 * floats, writing floats into an fp16 tensor or truncating instead of
 * rounding fails that.
 * Shapes hit both the 4-wide kernels (channels % 4 == 0, aligned data) and
 * the scalar ones (odd channel counts, tails of n % 4, views one element
 * off alignment). In-place calls whose input and output types differ, and
 * operands of an unknown type, must fail with a message, not run.
 * Groups as test_cuda_backend.c: "cuda (GPU)" (skipped without a GPU) and
 * "cuda-emu" (the kernels on the CPU emulation).
 */
#include "f16_fixture.h"

#include <math.h>

#include "backend/ops.h"
#include "engine/half.h"
#include "engine/model_file.h"

/* ---- weights (norm gamma/beta, embedding tables) ------------------------- */

/* Weights of aligned host bytes (test_data.h); free with weight_free. */
static test_weight *weight_new(const char *name, sd_dtype dt, int ndim, const int64_t *shape,
                               float scale, float offset)
{
    return test_weight_new(name, dt, ndim, shape, scale, offset, false, f16_frand);
}

static void weight_free(test_weight *w) { test_weight_free(w); }

/* ---- op cases ------------------------------------------------------------- */

enum { MAX_IN = 2 };

typedef struct op_case op_case;
struct op_case {
    const char *name;
    int nin;                        /* tensor inputs (0: the op only writes) */
    int in_shape[MAX_IN][4];        /* n, h, w, c */
    int out_shape[4];
    float scale;                    /* inputs uniform in [-scale, scale) */
    unsigned inplace;               /* bit k: out may be input k */
    int (*run)(sd_backend *be, const op_case *oc, const sd_tensor *in, sd_tensor *out);
    /* the op's parameters */
    sd_activation act;
    int groups;
    bool silu;
    float eps;
    const sd_tensor_info *gamma, *beta;
    const float *t_host;
    const sd_tensor_info *table, *pos;
    const int *ids;
};

static int run_act(sd_backend *be, const op_case *oc, const sd_tensor *in, sd_tensor *out)
{
    return sd_activation_op(be, oc->act, &in[0], out);
}
static int run_geglu(sd_backend *be, const op_case *oc, const sd_tensor *in, sd_tensor *out)
{
    (void)oc;
    return sd_geglu(be, &in[0], out);
}
static int run_add(sd_backend *be, const op_case *oc, const sd_tensor *in, sd_tensor *out)
{
    (void)oc;
    return sd_add(be, &in[0], &in[1], out);
}
static int run_add_pc(sd_backend *be, const op_case *oc, const sd_tensor *in, sd_tensor *out)
{
    (void)oc;
    return sd_add_per_channel(be, &in[0], &in[1], out);
}
static int run_concat(sd_backend *be, const op_case *oc, const sd_tensor *in, sd_tensor *out)
{
    (void)oc;
    return sd_concat_channels(be, &in[0], &in[1], out);
}
static int run_upsample(sd_backend *be, const op_case *oc, const sd_tensor *in, sd_tensor *out)
{
    (void)oc;
    return sd_upsample_nearest2x(be, &in[0], out);
}
static int run_group_norm(sd_backend *be, const op_case *oc, const sd_tensor *in, sd_tensor *out)
{
    return sd_group_norm(be, &in[0], oc->groups, oc->eps, oc->gamma, oc->beta, oc->silu, out);
}
static int run_layer_norm(sd_backend *be, const op_case *oc, const sd_tensor *in, sd_tensor *out)
{
    return sd_layer_norm(be, &in[0], oc->gamma, oc->beta, oc->eps, out);
}
static int run_timestep(sd_backend *be, const op_case *oc, const sd_tensor *in, sd_tensor *out)
{
    (void)in;
    return sd_timestep_embedding(be, oc->t_host, out);
}
static int run_embedding(sd_backend *be, const op_case *oc, const sd_tensor *in, sd_tensor *out)
{
    (void)in;
    return sd_embedding(be, oc->table, oc->ids, oc->pos, out);
}

static size_t numel4(const int s[4]) { return (size_t)s[0] * s[1] * s[2] * s[3]; }

/* A tensor of the given type and shape whose data starts `offset` elements
 * into a larger allocation (*base, freed by the caller): offset 1 takes the
 * data off the 4-element alignment the vectorised kernels need. */
static sd_tensor view_tensor(sd_backend *be, sd_act_type type, const int s[4], const float *host,
                             int offset, sd_tensor *base)
{
    size_t n = numel4(s);
    *base = f16_tensor(be, type, 1, 1, 1, (int)n + offset + 1, NULL);
    sd_tensor t = *base;
    t.n = s[0];
    t.h = s[1];
    t.w = s[2];
    t.c = s[3];
    t.data = (float *)((char *)base->data + (size_t)offset * sd_tensor_elem_size(base));
    if (host && sd_upload(be, host, &t) != 0) fail_msg("upload: %s", sd_backend_error(be));
    return t;
}

/* "x f16, v f32 -> out f16 (in place)" style labels. */
static void describe(char *buf, size_t len, const op_case *oc, const sd_act_type *types,
                     int offset, int inplace_k)
{
    size_t at = (size_t)snprintf(buf, len, "%s [", oc->name);
    for (int k = 0; k < oc->nin && at < len; k++)
        at += (size_t)snprintf(buf + at, len - at, "%sin%d %s", k ? ", " : "", k,
                               f16_type_name(types[k]));
    if (at < len)
        snprintf(buf + at, len - at, " -> out %s%s%s]", f16_type_name(types[oc->nin]),
                 offset ? ", unaligned" : "", inplace_k >= 0 ? ", in place" : "");
}

/* Runs oc on be with the given operand types (types[nin] = the output's);
 * out is input inplace_k when that is >= 0. The output's values (caller
 * frees). */
static float *run_types(sd_backend *be, const op_case *oc, float *const *host,
                        const sd_act_type *types, int offset, int inplace_k)
{
    sd_tensor base[MAX_IN + 1] = { 0 }, in[MAX_IN] = { 0 }, out;
    for (int k = 0; k < oc->nin; k++)
        in[k] = view_tensor(be, types[k], oc->in_shape[k], host[k], offset, &base[k]);
    if (inplace_k >= 0) {
        assert_int_equal(types[inplace_k], types[oc->nin]);
        out = in[inplace_k];
    } else {
        out = view_tensor(be, types[oc->nin], oc->out_shape, NULL, offset, &base[oc->nin]);
    }
    if (oc->run(be, oc, in, &out) != 0) {
        char what[160];
        describe(what, sizeof what, oc, types, offset, inplace_k);
        fail_msg("%s on %s: %s", what, be->ops->name, sd_backend_error(be));
    }
    float *got = f16_get(be, &out);
    for (int k = 0; k <= oc->nin; k++) sd_tensor_free(be, &base[k]);
    return got;
}

/* One fp16 ulp at |v| (v an fp16 value). */
static double f16_ulp(float v)
{
    v = fabsf(v);
    if (v < 6.103515625e-05f) return ldexp(1.0, -24);     /* subnormal spacing */
    int e;
    frexp(v, &e);                                         /* v = m 2^e, m in [0.5, 1) */
    return ldexp(1.0, e - 11);
}

/* got (an output of type out_type) against the all-float32 reference. */
static void check_result(const float *got, const float *ref, size_t n, sd_act_type out_type,
                         const char *what)
{
    if (out_type == SD_ACT_F32) {
        f16_check_close(got, ref, n, 1e-5, what);
        return;
    }
    f16_check_close(got, ref, n, 2e-3, what);
    for (size_t i = 0; i < n; i++) {
        const float r = sd_f16_to_f32(sd_f32_to_f16(ref[i]));
        if (!(fabs((double)got[i] - (double)r) <= f16_ulp(r)))
            fail_msg("%s: element %zu is %.8g, the reference %.8g rounds to fp16 %.8g "
                     "(more than one fp16 ulp off)",
                     what, i, got[i], ref[i], r);
    }
}

/* Every check of one case at one alignment offset. */
static void run_case(fixture *f, sd_backend *be16, const op_case *oc, int offset)
{
    float *host[MAX_IN] = { 0 };
    for (int k = 0; k < oc->nin; k++) host[k] = f16_rand_vec(numel4(oc->in_shape[k]), oc->scale);
    const size_t on = numel4(oc->out_shape);
    sd_act_type types[MAX_IN + 1];
    char what[160];

    /* the reference: all float32, which must agree with the CPU backend */
    for (int k = 0; k <= oc->nin; k++) types[k] = SD_ACT_F32;
    float *cpu = run_types(f->cpu, oc, host, types, offset, -1);
    float *ref = run_types(be16, oc, host, types, offset, -1);
    describe(what, sizeof what, oc, types, offset, -1);
    strncat(what, " vs cpu", sizeof what - strlen(what) - 1);
    f16_check_close(ref, cpu, on, 1e-4, what);
    free(cpu);

    /* every mix of types, and in place where allowed */
    for (unsigned mask = 0; mask < (1u << (oc->nin + 1)); mask++) {
        for (int k = 0; k <= oc->nin; k++) types[k] = (mask >> k) & 1 ? SD_ACT_F16 : SD_ACT_F32;
        float *got;
        if (mask != 0) {        /* mask 0 out of place is the reference */
            got = run_types(be16, oc, host, types, offset, -1);
            describe(what, sizeof what, oc, types, offset, -1);
            check_result(got, ref, on, types[oc->nin], what);
            free(got);
        }
        for (int k = 0; k < oc->nin; k++) {
            if (!(oc->inplace >> k & 1) || types[k] != types[oc->nin]) continue;
            got = run_types(be16, oc, host, types, offset, k);
            describe(what, sizeof what, oc, types, offset, k);
            check_result(got, ref, on, types[oc->nin], what);
            free(got);
        }
    }

    /* in place with the types differing: an error, nothing run */
    for (int k = 0; k < oc->nin; k++) {
        if (!(oc->inplace >> k & 1)) continue;
        for (int in16 = 0; in16 < 2; in16++) {
            sd_tensor base[MAX_IN] = { 0 }, in[MAX_IN] = { 0 };
            for (int j = 0; j < oc->nin; j++)
                in[j] = view_tensor(be16, j == k && in16 ? SD_ACT_F16 : SD_ACT_F32,
                                    oc->in_shape[j], host[j], offset, &base[j]);
            sd_tensor out = in[k];
            out.type = in16 ? SD_ACT_F32 : SD_ACT_F16;
            float *before = f16_get(be16, &in[k]);
            if (oc->run(be16, oc, in, &out) != -1)
                fail_msg("%s: in place from %s into %s did not fail", oc->name,
                         f16_type_name(in[k].type), f16_type_name(out.type));
            if (!strstr(sd_backend_error(be16), "in place"))
                fail_msg("%s: in-place type mismatch message: %s", oc->name,
                         sd_backend_error(be16));
            float *after = f16_get(be16, &in[k]);   /* untouched */
            assert_memory_equal(before, after, numel4(oc->in_shape[k]) * sizeof(float));
            free(before);
            free(after);
            for (int j = 0; j < oc->nin; j++) sd_tensor_free(be16, &base[j]);
        }
    }

    /* an operand of an unknown type: an error, not a crash */
    for (int k = 0; k <= oc->nin; k++) {
        sd_tensor base[MAX_IN + 1] = { 0 }, in[MAX_IN] = { 0 }, out;
        for (int j = 0; j < oc->nin; j++)
            in[j] = view_tensor(be16, SD_ACT_F32, oc->in_shape[j], host[j], offset, &base[j]);
        out = view_tensor(be16, SD_ACT_F32, oc->out_shape, NULL, offset, &base[oc->nin]);
        if (k < oc->nin) in[k].type = (sd_act_type)7;
        else out.type = (sd_act_type)7;
        if (oc->run(be16, oc, in, &out) != -1)
            fail_msg("%s: operand %d of type 7 accepted", oc->name, k);
        if (!strstr(sd_backend_error(be16), "unknown activation type"))
            fail_msg("%s: unknown type message: %s", oc->name, sd_backend_error(be16));
        for (int j = 0; j <= oc->nin; j++) sd_tensor_free(be16, &base[j]);
    }

    free(ref);
    for (int k = 0; k < oc->nin; k++) free(host[k]);
}

/* Each case aligned and one element off alignment (the scalar kernels). */
static void run_cases(fixture *f, const op_case *cases, size_t n)
{
    sd_backend *be16 = f16_backend(f);
    for (size_t i = 0; i < n; i++)
        for (int offset = 0; offset < 2; offset++) run_case(f, be16, &cases[i], offset);
    sd_backend_destroy(be16);
}

#define SHAPE(n, h, w, c) { n, h, w, c }
#define N_CASES(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the tests ---------------------------------------------------------------- */

static void test_f16_activation(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    op_case cases[6];
    memset(cases, 0, sizeof cases);
    const char *names[3] = { "silu", "gelu", "quick_gelu" };
    for (int act = 0; act < 3; act++) {
        /* 240 values: the 4-wide kernel; 210: 4-wide with a tail of 2 */
        for (int odd = 0; odd < 2; odd++) {
            op_case *c = &cases[act * 2 + odd];
            c->name = names[act];
            c->nin = 1;
            int s[4] = SHAPE(2, 3, 5, odd ? 7 : 8);
            memcpy(c->in_shape[0], s, sizeof s);
            memcpy(c->out_shape, s, sizeof s);
            c->scale = 4.0f;
            c->inplace = 1;
            c->run = run_act;
            c->act = (sd_activation)act;
        }
    }
    run_cases(f, cases, N_CASES(cases));
}

static void test_f16_geglu(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    op_case cases[] = {
        { .name = "geglu F=8", .nin = 1, .in_shape = { SHAPE(2, 3, 5, 16) },
          .out_shape = SHAPE(2, 3, 5, 8), .scale = 3.0f, .run = run_geglu },
        { .name = "geglu F=7", .nin = 1, .in_shape = { SHAPE(2, 3, 5, 14) },
          .out_shape = SHAPE(2, 3, 5, 7), .scale = 3.0f, .run = run_geglu },
    };
    run_cases(f, cases, N_CASES(cases));
}

static void test_f16_add(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    op_case cases[] = {
        { .name = "add 240", .nin = 2, .in_shape = { SHAPE(2, 3, 5, 8), SHAPE(2, 3, 5, 8) },
          .out_shape = SHAPE(2, 3, 5, 8), .scale = 4.0f, .inplace = 3, .run = run_add },
        { .name = "add 210", .nin = 2, .in_shape = { SHAPE(2, 3, 5, 7), SHAPE(2, 3, 5, 7) },
          .out_shape = SHAPE(2, 3, 5, 7), .scale = 4.0f, .inplace = 3, .run = run_add },
        { .name = "add 3", .nin = 2, .in_shape = { SHAPE(1, 1, 1, 3), SHAPE(1, 1, 1, 3) },
          .out_shape = SHAPE(1, 1, 1, 3), .scale = 4.0f, .inplace = 3, .run = run_add },
    };
    run_cases(f, cases, N_CASES(cases));
}

static void test_f16_add_per_channel(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    op_case cases[] = {
        { .name = "add_per_channel C=8", .nin = 2,
          .in_shape = { SHAPE(2, 3, 5, 8), SHAPE(2, 1, 1, 8) }, .out_shape = SHAPE(2, 3, 5, 8),
          .scale = 4.0f, .inplace = 1, .run = run_add_pc },
        { .name = "add_per_channel C=7", .nin = 2,
          .in_shape = { SHAPE(2, 3, 5, 7), SHAPE(2, 1, 1, 7) }, .out_shape = SHAPE(2, 3, 5, 7),
          .scale = 4.0f, .inplace = 1, .run = run_add_pc },
        { .name = "add_per_channel C=12 N=3", .nin = 2,
          .in_shape = { SHAPE(3, 2, 3, 12), SHAPE(3, 1, 1, 12) }, .out_shape = SHAPE(3, 2, 3, 12),
          .scale = 4.0f, .inplace = 1, .run = run_add_pc },
    };
    run_cases(f, cases, N_CASES(cases));
}

static void test_f16_concat(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    op_case cases[] = {
        { .name = "concat 8+4", .nin = 2, .in_shape = { SHAPE(2, 3, 5, 8), SHAPE(2, 3, 5, 4) },
          .out_shape = SHAPE(2, 3, 5, 12), .scale = 4.0f, .run = run_concat },
        { .name = "concat 5+3", .nin = 2, .in_shape = { SHAPE(2, 3, 5, 5), SHAPE(2, 3, 5, 3) },
          .out_shape = SHAPE(2, 3, 5, 8), .scale = 4.0f, .run = run_concat },
    };
    run_cases(f, cases, N_CASES(cases));
}

static void test_f16_upsample(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    op_case cases[] = {
        { .name = "upsample 2x", .nin = 1, .in_shape = { SHAPE(2, 3, 5, 7) },
          .out_shape = SHAPE(2, 6, 10, 7), .scale = 4.0f, .run = run_upsample },
        { .name = "upsample 3x5->7x9", .nin = 1, .in_shape = { SHAPE(1, 3, 5, 4) },
          .out_shape = SHAPE(1, 7, 9, 4), .scale = 4.0f, .run = run_upsample },
    };
    run_cases(f, cases, N_CASES(cases));
}

static void test_f16_embeddings(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    const float t_host[3] = { 999.0f, 1.5f, 0.0f };
    const int ids[2 * 7] = { 0, 5, 9, 3, 3, 1, 8, 2, 2, 7, 0, 9, 4, 6 };
    test_weight *tab16 = weight_new("token_embedding.weight", SD_DTYPE_F16, 2,
                                    (const int64_t[]){ 10, 12 }, 1.0f, 0.0f);
    test_weight *tab32 = weight_new("token_embedding.weight", SD_DTYPE_F32, 2,
                                    (const int64_t[]){ 10, 13 }, 1.0f, 0.0f);
    test_weight *pos = weight_new("position_embedding.weight", SD_DTYPE_F16, 2,
                                  (const int64_t[]){ 9, 12 }, 1.0f, 0.0f);
    op_case cases[] = {
        { .name = "timestep 320", .out_shape = SHAPE(2, 1, 1, 320), .run = run_timestep,
          .t_host = t_host },
        { .name = "timestep 6", .out_shape = SHAPE(3, 1, 1, 6), .run = run_timestep,
          .t_host = t_host },
        { .name = "embedding f16+pos", .out_shape = SHAPE(2, 1, 7, 12), .run = run_embedding,
          .table = &tab16->info, .pos = &pos->info, .ids = ids },
        { .name = "embedding f32", .out_shape = SHAPE(2, 1, 7, 13), .run = run_embedding,
          .table = &tab32->info, .ids = ids },
    };
    run_cases(f, cases, N_CASES(cases));
    weight_free(tab16);
    weight_free(tab32);
    weight_free(pos);
}

static void test_f16_group_norm(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    test_weight *g8 = weight_new("norm.weight", SD_DTYPE_F16, 1, (const int64_t[]){ 8 }, 0.5f, 1.0f);
    test_weight *b8 = weight_new("norm.bias", SD_DTYPE_F32, 1, (const int64_t[]){ 8 }, 0.5f, 0.0f);
    test_weight *g12 = weight_new("norm.weight", SD_DTYPE_F32, 1, (const int64_t[]){ 12 }, 0.5f, 1.0f);
    test_weight *b12 = weight_new("norm.bias", SD_DTYPE_F16, 1, (const int64_t[]){ 12 }, 0.5f, 0.0f);
    test_weight *g20 = weight_new("norm.weight", SD_DTYPE_F16, 1, (const int64_t[]){ 20 }, 0.5f, 1.0f);
    test_weight *b20 = weight_new("norm.bias", SD_DTYPE_F16, 1, (const int64_t[]){ 20 }, 0.5f, 0.0f);
    test_weight *g6 = weight_new("norm.weight", SD_DTYPE_F32, 1, (const int64_t[]){ 6 }, 0.5f, 1.0f);
    test_weight *b6 = weight_new("norm.bias", SD_DTYPE_F32, 1, (const int64_t[]){ 6 }, 0.5f, 0.0f);
    op_case cases[] = {
        /* 4 channels a thread, groups of 4 */
        { .name = "group_norm C=8 G=2 silu", .nin = 1, .in_shape = { SHAPE(2, 3, 5, 8) },
          .out_shape = SHAPE(2, 3, 5, 8), .scale = 3.0f, .inplace = 1, .run = run_group_norm,
          .groups = 2, .silu = true, .eps = 1e-5f, .gamma = &g8->info, .beta = &b8->info },
        /* groups of 3: a thread's 4 channels straddle groups */
        { .name = "group_norm C=12 G=4", .nin = 1, .in_shape = { SHAPE(2, 4, 6, 12) },
          .out_shape = SHAPE(2, 4, 6, 12), .scale = 3.0f, .inplace = 1, .run = run_group_norm,
          .groups = 4, .silu = false, .eps = 1e-5f, .gamma = &g12->info, .beta = &b12->info },
        /* C % 4 != 0: the scalar kernel */
        { .name = "group_norm C=6 G=3 silu", .nin = 1, .in_shape = { SHAPE(2, 3, 5, 6) },
          .out_shape = SHAPE(2, 3, 5, 6), .scale = 3.0f, .inplace = 1, .run = run_group_norm,
          .groups = 3, .silu = true, .eps = 1e-5f, .gamma = &g6->info, .beta = &b6->info },
        /* groups of 10 (the UNet's at 320 channels): fp16 statistics read 2
         * channels at a time; 9000 values a group: in 2 slices */
        { .name = "group_norm C=20 G=2", .nin = 1, .in_shape = { SHAPE(1, 30, 30, 20) },
          .out_shape = SHAPE(1, 30, 30, 20), .scale = 3.0f, .inplace = 1, .run = run_group_norm,
          .groups = 2, .silu = true, .eps = 1e-5f, .gamma = &g20->info, .beta = &b20->info },
        /* 12800 values a group: the statistics in several slices */
        { .name = "group_norm 40x40 G=1", .nin = 1, .in_shape = { SHAPE(1, 40, 40, 8) },
          .out_shape = SHAPE(1, 40, 40, 8), .scale = 2.0f, .inplace = 1, .run = run_group_norm,
          .groups = 1, .silu = false, .eps = 1e-6f, .gamma = &g8->info, .beta = &b8->info },
    };
    run_cases(f, cases, N_CASES(cases));
    weight_free(g8);
    weight_free(b8);
    weight_free(g12);
    weight_free(b12);
    weight_free(g20);
    weight_free(b20);
    weight_free(g6);
    weight_free(b6);
}

static void test_f16_layer_norm(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    test_weight *g16 = weight_new("ln.weight", SD_DTYPE_F16, 1, (const int64_t[]){ 16 }, 0.5f, 1.0f);
    test_weight *b16 = weight_new("ln.bias", SD_DTYPE_F32, 1, (const int64_t[]){ 16 }, 0.5f, 0.0f);
    test_weight *g13 = weight_new("ln.weight", SD_DTYPE_F32, 1, (const int64_t[]){ 13 }, 0.5f, 1.0f);
    test_weight *b13 = weight_new("ln.bias", SD_DTYPE_F16, 1, (const int64_t[]){ 13 }, 0.5f, 0.0f);
    test_weight *g320 = weight_new("ln.weight", SD_DTYPE_F16, 1, (const int64_t[]){ 320 }, 0.5f, 1.0f);
    test_weight *b320 = weight_new("ln.bias", SD_DTYPE_F16, 1, (const int64_t[]){ 320 }, 0.5f, 0.0f);
    op_case cases[] = {
        /* a warp a row, 4 values a lane */
        { .name = "layer_norm C=16", .nin = 1, .in_shape = { SHAPE(2, 1, 9, 16) },
          .out_shape = SHAPE(2, 1, 9, 16), .scale = 3.0f, .inplace = 1, .run = run_layer_norm,
          .eps = 1e-5f, .gamma = &g16->info, .beta = &b16->info },
        /* a block a row */
        { .name = "layer_norm C=13", .nin = 1, .in_shape = { SHAPE(2, 1, 7, 13) },
          .out_shape = SHAPE(2, 1, 7, 13), .scale = 3.0f, .inplace = 1, .run = run_layer_norm,
          .eps = 1e-5f, .gamma = &g13->info, .beta = &b13->info },
        { .name = "layer_norm C=320", .nin = 1, .in_shape = { SHAPE(1, 1, 5, 320) },
          .out_shape = SHAPE(1, 1, 5, 320), .scale = 2.0f, .inplace = 1, .run = run_layer_norm,
          .eps = 1e-5f, .gamma = &g320->info, .beta = &b320->info },
    };
    run_cases(f, cases, N_CASES(cases));
    weight_free(g16);
    weight_free(b16);
    weight_free(g13);
    weight_free(b13);
    weight_free(g320);
    weight_free(b320);
}

/* upload/download and upload_nchw/download_nchw of fp16 tensors: values
 * rounded to nearest even on the way in, read back exactly. */
static void test_f16_transfers(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    sd_backend *be = f16_backend(f);
    const int shapes[2][4] = { SHAPE(2, 3, 5, 8), SHAPE(2, 3, 5, 7) };
    for (int si = 0; si < 2; si++) {
        const int *s = shapes[si];
        const int N = s[0], H = s[1], W = s[2], C = s[3];
        const size_t n = numel4(s);
        float *host = malloc(n * sizeof *host);
        assert_non_null(host);
        /* not fp16 values: the upload rounds; plus ties that round to even */
        for (size_t i = 0; i < n; i++) host[i] = f16_frand() * 5.0f;
        host[0] = 1.0f + ldexpf(1.0f, -11);                 /* tie: rounds down to 1 */
        host[1] = 1.0f + 3.0f * ldexpf(1.0f, -11);          /* tie: rounds up to even */
        host[2] = 1e-7f;                                    /* subnormal in fp16 */
        float *want = malloc(n * sizeof *want), *nhwc = malloc(n * sizeof *nhwc);
        assert_non_null(want);
        assert_non_null(nhwc);
        for (size_t i = 0; i < n; i++) want[i] = sd_f16_to_f32(sd_f32_to_f16(host[i]));
        assert_true(want[0] == 1.0f);
        assert_true(want[1] == 1.0f + ldexpf(1.0f, -9));
        for (int offset = 0; offset < 2; offset++) {
            sd_tensor base, t = view_tensor(be, SD_ACT_F16, s, host, offset, &base);
            float *got = f16_get(be, &t);
            assert_memory_equal(got, want, n * sizeof(float));
            free(got);
            /* NCHW in, NHWC out: want[] taken as NCHW, transposed */
            assert_int_equal(sd_upload_nchw(be, host, &t), 0);
            got = f16_get(be, &t);
            for (int b = 0; b < N; b++)
                for (int c = 0; c < C; c++)
                    for (int p = 0; p < H * W; p++)
                        nhwc[((size_t)b * H * W + p) * C + c] = want[((size_t)b * C + c) * H * W + p];
            assert_memory_equal(got, nhwc, n * sizeof(float));
            /* and back */
            memset(got, 0, n * sizeof(float));
            assert_int_equal(sd_download_nchw(be, &t, got), 0);
            assert_memory_equal(got, want, n * sizeof(float));
            free(got);
            sd_tensor_free(be, &base);
        }
        free(host);
        free(want);
        free(nhwc);
    }
    /* unknown types: errors, not crashes */
    sd_tensor t = f16_tensor(be, SD_ACT_F32, 1, 2, 2, 3, NULL);
    float buf[12] = { 0 };
    t.type = (sd_act_type)7;
    assert_int_equal(sd_upload(be, buf, &t), -1);
    assert_non_null(strstr(sd_backend_error(be), "unknown activation type"));
    assert_int_equal(sd_download(be, &t, buf), -1);
    assert_int_equal(sd_upload_nchw(be, buf, &t), -1);
    assert_int_equal(sd_download_nchw(be, &t, buf), -1);
    assert_non_null(strstr(sd_backend_error(be), "unknown activation type"));
    t.type = SD_ACT_F32;
    sd_tensor_free(be, &t);
    sd_backend_destroy(be);
}

#define F16_TESTS                                                                            \
    cmocka_unit_test(test_f16_transfers), cmocka_unit_test(test_f16_activation),             \
        cmocka_unit_test(test_f16_geglu), cmocka_unit_test(test_f16_add),                    \
        cmocka_unit_test(test_f16_add_per_channel), cmocka_unit_test(test_f16_concat),       \
        cmocka_unit_test(test_f16_upsample), cmocka_unit_test(test_f16_embeddings),          \
        cmocka_unit_test(test_f16_group_norm), cmocka_unit_test(test_f16_layer_norm)

int main(void)
{
    const struct CMUnitTest gpu[] = { F16_TESTS };
    const struct CMUnitTest emu[] = { F16_TESTS };
    int failed = cmocka_run_group_tests_name("cuda (GPU)", gpu, setup_gpu, teardown);
    failed += cmocka_run_group_tests_name("cuda-emu (CUDA kernels emulated on the CPU)", emu,
                                          setup_emu, teardown);
    return failed ? 1 : 0;
}
