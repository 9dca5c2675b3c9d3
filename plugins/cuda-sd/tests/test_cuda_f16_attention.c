/* test_cuda_f16_attention.c - the CUDA backend's attention (backend/cuda/
 * attention.cu) with fp16 activations: q, k, v and out each float32 or
 * fp16, in every mix (the big cases, for the emulation's time: each
 * operand fp16 alone, the inputs fp16, all fp16), as the UNet hands them
 * over with fp16 activations on.
 *
 * Method (f16_fixture.h): the inputs are fp16 values, so an fp16 operand
 * holds exactly what its float32 twin holds. The all-float32 run is the
 * reference; every other mix must equal it up to the rounding of an fp16
 * output (1e-3 of the largest |value|: fp16's half ulp is 2^-11 of a value;
 * and element by element within one fp16 ulp of the reference's rounding)
 * and to 1e-6 with a float32 output (the same fp16 fragments and float32
 * sums: in practice bit-equal). A wrong read of halves (a channel offset,
 * a missing zero fill of the padded head channels or keys, a misaligned
 * pair) changes outputs by far more. The reference itself is checked
 * against the CPU backend at test_cuda_backend's AUTO tolerance (6e-3).
 *
 * Cases: SD's shapes (8 heads of 40 and 80 channels, SD2's 64, 160;
 * self-attention and cross-attention with 77 keys; batch 2; causal; scale
 * given and default), the in-place reads' fall-backs (head dims not a
 * multiple of 8 or odd, tensor views 2 and 4 bytes off alignment), the
 * cuBLAS path (head dim 512, the F32 precision), and unknown types.
 *
 * Two groups as test_cuda_backend.c: "cuda" (the real library; skipped
 * without a GPU unless HN_SD_REQUIRE_GPU=1) and "cuda-emu" (the same
 * kernels on the CPU emulation).
 */
#include "f16_fixture.h"

#include "backend/cuda_backend.h"

#define F16_OUT_TOL 1e-3
#define F32_OUT_TOL 1e-6
#define CPU_TOL 6e-3     /* test_cuda_backend's AUTO attention tolerance */

typedef struct att_case {
    const char *name;
    int B, Lq, Lk, C, heads;
    bool causal;
    float scale;         /* <= 0: the default 1/sqrt(d) */
    float qscale;        /* magnitude of q (large: SD2's large logits) */
} att_case;

/* Operand types of one run: bit 0 q, 1 k, 2 v, 3 out set = fp16. */
static sd_act_type type_of(int mix, int bit) { return (mix >> bit) & 1 ? SD_ACT_F16 : SD_ACT_F32; }

/* Runs the case on be with the mix's types; returns out as host floats.
 * op_prec >= 0: the CUDA backend runs the op itself in that precision
 * (the tensors are allocated before the switch, which would make the
 * inner type float32). */
static float *run_mix(sd_backend *be, const att_case *c, int mix, const float *qh,
                      const float *kh, const float *vh, int op_prec)
{
    sd_tensor q = f16_tensor(be, type_of(mix, 0), c->B, 1, c->Lq, c->C, qh);
    sd_tensor k = f16_tensor(be, type_of(mix, 1), c->B, 1, c->Lk, c->C, kh);
    sd_tensor v = f16_tensor(be, type_of(mix, 2), c->B, 1, c->Lk, c->C, vh);
    sd_tensor o = f16_tensor(be, type_of(mix, 3), c->B, 1, c->Lq, c->C, NULL);
    sd_cuda_precision old = SD_CUDA_PREC_AUTO;
    if (op_prec >= 0)
        assert_int_equal(sd_backend_cuda_set_precision(be, (sd_cuda_precision)op_prec, &old), 0);
    if (sd_attention(be, &q, &k, &v, c->heads, c->scale, c->causal, &o))
        fail_msg("%s attention: %s", c->name, sd_backend_error(be));
    if (op_prec >= 0) assert_int_equal(sd_backend_cuda_set_precision(be, old, NULL), 0);
    float *got = f16_get(be, &o);
    sd_tensor_free(be, &q);
    sd_tensor_free(be, &k);
    sd_tensor_free(be, &v);
    sd_tensor_free(be, &o);
    return got;
}

/* Element by element: an fp16 output within one fp16 ulp of the float32
 * reference rounded to fp16 (it is that rounding, once), so small values
 * are held as tightly as the largest. */
static void check_f16_rounding(const float *got, const float *ref, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        const float r16 = sd_f16_to_f32(sd_f32_to_f16(ref[i]));
        int e;
        frexpf(r16, &e);
        /* fp16 keeps 11 significant bits; subnormals' ulp is 2^-24 */
        const double ulp = r16 == 0.0f || e - 11 < -24 ? ldexp(1.0, -24) : ldexp(1.0, e - 11);
        if (!(fabs((double)got[i] - r16) <= ulp))
            fail_msg("%s: element %zu is %.8g, the reference %.8g rounds to %.8g (ulp %.3g)", what,
                     i, got[i], ref[i], r16, ulp);
    }
}

/* Every mix of operand types on be against its all-float32 run, which is
 * checked against the CPU backend at cpu_tol. */
static void run_case(fixture *f, sd_backend *be, const att_case *c, double cpu_tol, int op_prec)
{
    const size_t nq = (size_t)c->B * c->Lq * c->C, nk = (size_t)c->B * c->Lk * c->C;
    float *qh = f16_rand_vec(nq, c->qscale), *kh = f16_rand_vec(nk, 1.0f);
    float *vh = f16_rand_vec(nk, 1.0f);
    char what[200];
    float *ref = run_mix(be, c, 0, qh, kh, vh, op_prec);
    float *cpu = run_mix(f->cpu, c, 0, qh, kh, vh, -1);
    snprintf(what, sizeof what, "%s %s: all float32 against the CPU backend", f->label, c->name);
    f16_check_close(ref, cpu, nq, cpu_tol, what);
    free(cpu);
    /* each operand's path depends on its own type only: big cases (the
     * emulation's time) take each one fp16 alone, the inputs fp16 and all
     * fp16; small ones every mix */
    static const int some[] = { 1, 2, 4, 8, 7, 15 };
    const bool big = (double)c->B * c->heads * c->Lq * c->Lk > 50000.0;
    const int n_mix = big ? (int)(sizeof some / sizeof *some) : 15;
    for (int mi = 0; mi < n_mix; mi++) {
        const int mix = big ? some[mi] : mi + 1;
        float *got = run_mix(be, c, mix, qh, kh, vh, op_prec);
        snprintf(what, sizeof what, "%s %s: q %s, k %s, v %s, out %s", f->label, c->name,
                 f16_type_name(type_of(mix, 0)), f16_type_name(type_of(mix, 1)),
                 f16_type_name(type_of(mix, 2)), f16_type_name(type_of(mix, 3)));
        f16_check_close(got, ref, nq, type_of(mix, 3) == SD_ACT_F16 ? F16_OUT_TOL : F32_OUT_TOL,
                        what);
        if (type_of(mix, 3) == SD_ACT_F16) check_f16_rounding(got, ref, nq, what);
        free(got);
    }
    free(ref);
    free(qh);
    free(kh);
    free(vh);
}

/* SD1's head dims: 8 heads of 40 (320 channels) and 80 (640); the flash
 * kernel reads fp16 q and k in place, 40 zero-filled to 48. */
static void test_sd1_heads(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    sd_backend *be = f16_backend(f);
    const att_case cases[] = {
        { "SD1 self-attention d40", 2, 160, 160, 320, 8, false, 0.0f, 1.0f },
        { "SD1 cross-attention d40 scale 0.25", 2, 160, 77, 320, 8, false, 0.25f, 1.0f },
        { "SD1 self-attention d80", 2, 80, 80, 640, 8, false, 0.0f, 1.0f },
        { "SD1 cross-attention d80", 2, 64, 77, 640, 8, false, 0.0f, 1.0f },
        { "SD1 cross-attention d160 scale 0.1", 2, 64, 77, 320, 2, false, 0.1f, 1.0f },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(f, be, &cases[i], CPU_TOL, -1);
    sd_backend_destroy(be);
}

/* SD2's head dim 64 with large logits (the scores must stay float32) and
 * CLIP's causal self-attention. */
static void test_sd2_and_causal(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    sd_backend *be = f16_backend(f);
    const att_case cases[] = {
        { "SD2 self-attention d64 large logits", 2, 160, 160, 320, 5, false, 0.0f, 8.0f },
        { "SD2 cross-attention d64", 2, 128, 77, 320, 5, false, 0.0f, 1.0f },
        { "causal d64 (CLIP)", 2, 77, 77, 128, 2, true, 0.0f, 1.0f },
        { "causal d8 Lk < Lq scale 0.5", 1, 20, 9, 24, 3, true, 0.5f, 1.0f },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(f, be, &cases[i], CPU_TOL, -1);
    sd_backend_destroy(be);
}

/* Head dims the in-place reads do not take (d 12: fp16 k is packed, q
 * still read in place; d 5: both packed, the fp16 output written one
 * value at a time) and the cuBLAS path (d 512, the VAE's head). */
static void test_fallback_paths(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    sd_backend *be = f16_backend(f);
    const att_case cases[] = {
        { "d12 (fp16 k packed)", 1, 20, 9, 36, 3, true, 0.0f, 1.0f },
        { "d5 (odd: fp16 q and k packed)", 2, 30, 17, 10, 2, false, 0.0f, 1.0f },
        { "d512 (cuBLAS path)", 1, 33, 33, 512, 1, false, 0.5f, 1.0f },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(f, be, &cases[i], CPU_TOL, -1);
    sd_backend_destroy(be);
}

/* The F32 precision (cuBLAS in float32) with fp16 operands, switched to
 * for the op alone: converted to float32 copies, so every mix equals the
 * all-float32 run, and that one the CPU backend at F32's 2e-5. */
static void test_f32_precision(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    sd_backend *be = f16_backend(f);
    const att_case cases[] = {
        { "F32 precision cross-attention d40", 2, 50, 77, 320, 8, false, 0.0f, 1.0f },
        { "F32 precision causal d64", 1, 40, 40, 128, 2, true, 0.0f, 1.0f },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(f, be, &cases[i], 2e-5, SD_CUDA_PREC_F32);
    sd_backend_destroy(be);
}

/* fp16 views `off` elements into a larger buffer (the tensor's data 2 or 4
 * bytes past 16-byte alignment): the flash kernel must see the alignment
 * and pack (2 bytes: q and k; 4: k) or store one value at a time, never
 * fault or misread. */
static void run_offset_views(fixture *f, sd_backend *be, int off)
{
    const att_case c = { "views", 2, 70, 77, 320, 8, false, 0.0f, 1.0f };
    const size_t nq = (size_t)c.B * c.Lq * c.C, nk = (size_t)c.B * c.Lk * c.C;
    float *qh = f16_rand_vec(nq, 1.0f), *kh = f16_rand_vec(nk, 1.0f), *vh = f16_rand_vec(nk, 1.0f);
    float *ref = run_mix(be, &c, 0, qh, kh, vh, -1);
    const float *hosts[4] = { qh, kh, vh, NULL };
    const size_t ns[4] = { nq, nk, nk, nq };
    const int Ls[4] = { c.Lq, c.Lk, c.Lk, c.Lq };
    sd_tensor buf[4], view[4];
    for (int i = 0; i < 4; i++) {
        float *padded = calloc(ns[i] + 16, sizeof *padded);
        assert_non_null(padded);
        if (hosts[i]) memcpy(padded + off, hosts[i], ns[i] * sizeof *padded);
        buf[i] = f16_tensor(be, SD_ACT_F16, 1, 1, 1, (int)ns[i] + 16, padded);
        free(padded);
        view[i] = buf[i];
        view[i].data = (float *)((uint16_t *)buf[i].data + off);
        view[i].n = c.B;
        view[i].h = 1;
        view[i].w = Ls[i];
        view[i].c = c.C;
    }
    if (sd_attention(be, &view[0], &view[1], &view[2], c.heads, c.scale, c.causal, &view[3]))
        fail_msg("offset views: %s", sd_backend_error(be));
    float *all = f16_get(be, &buf[3]);
    char what[120];
    snprintf(what, sizeof what, "%s fp16 views %d bytes off alignment", f->label, 2 * off);
    f16_check_close(all + off, ref, nq, F16_OUT_TOL, what);
    check_f16_rounding(all + off, ref, nq, what);
    free(all);
    for (int i = 0; i < 4; i++) sd_tensor_free(be, &buf[i]);
    free(ref);
    free(qh);
    free(kh);
    free(vh);
}

static void test_unaligned_views(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    sd_backend *be = f16_backend(f);
    run_offset_views(f, be, 1);
    run_offset_views(f, be, 2);
    sd_backend_destroy(be);
}

/* An unknown type value in any operand is an error with a message. */
static void test_unknown_type(void **state)
{
    fixture *f = *state;
    NEED_CUDA(f);
    sd_backend *be = f16_backend(f);
    sd_tensor t[4];
    for (int i = 0; i < 4; i++)
        t[i] = f16_tensor(be, i & 1 ? SD_ACT_F16 : SD_ACT_F32, 1, 1, 8, 16, NULL);
    for (int i = 0; i < 4; i++) {
        const sd_act_type saved = t[i].type;
        t[i].type = (sd_act_type)(7 + i);
        assert_int_equal(sd_attention(be, &t[0], &t[1], &t[2], 2, 0.0f, false, &t[3]), -1);
        assert_non_null(strstr(sd_backend_error(be), "unknown activation type"));
        t[i].type = saved;
    }
    /* still usable afterwards */
    assert_int_equal(sd_attention(be, &t[0], &t[1], &t[2], 2, 0.0f, false, &t[3]), 0);
    for (int i = 0; i < 4; i++) sd_tensor_free(be, &t[i]);
    sd_backend_destroy(be);
}

#define FX_TESTS                                                                             \
    cmocka_unit_test(test_sd1_heads), cmocka_unit_test(test_sd2_and_causal),                 \
        cmocka_unit_test(test_fallback_paths), cmocka_unit_test(test_f32_precision),         \
        cmocka_unit_test(test_unaligned_views), cmocka_unit_test(test_unknown_type)

int main(void)
{
    const struct CMUnitTest gpu[] = { FX_TESTS };
    const struct CMUnitTest emu[] = { FX_TESTS };
    int failed = cmocka_run_group_tests_name("cuda (GPU)", gpu, setup_gpu, teardown);
    failed += cmocka_run_group_tests_name("cuda-emu (CUDA kernels emulated on the CPU)", emu,
                                          setup_emu, teardown);
    return failed ? 1 : 0;
}
