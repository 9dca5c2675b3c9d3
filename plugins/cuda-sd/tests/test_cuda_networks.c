/* test_cuda_networks.c - the networks (engine/clip, unet, vae) running on the
 * CUDA backend against golden/models_golden, for every tiny model listed in
 * the golden models/ index (.json files): text encoder (both clip_skip outputs the golden file
 * has), UNet (integer and fractional timesteps), VAE decode and encode.
 *
 * Tolerances (golden/README.md): F32 precision 1e-4 absolute like the CPU
 * engine; AUTO precision (fp16 tensor cores, TF32 VAE) 1e-2, what the
 * README suggests for an F16 compute path. The VAE also runs in
 * AUTO_VAE_BF16 (bf16 GEMMs, opt-in) at 6e-2: bf16 keeps 8 significant bits,
 * and its error measured on the emulation is about 10x the TF32 VAE's
 * (decode 0.020-0.023, encode 0.026-0.045; TF32 0.002-0.004), over the AUTO
 * tolerance, which is why AUTO keeps the VAE in TF32. Groups and skipping as in
 * cuda_fixture.h (real GPU; CUDA emulated on the CPU). The emulated group
 * runs AUTO only, to stay quick on CI: its F32 paths are the same ops that
 * test_cuda_backend.c checks one by one.
 */
#include "cuda_fixture.h"

#include <dirent.h>
#include <math.h>

#include "engine/clip.h"
#include "engine/family.h"
#include "engine/unet.h"
#include "engine/vae.h"
#include "golden.h"

#define MAX_MODELS 16

typedef struct model_case {
    char kind[32];              /* "sd1", "sd2", "sd1_inpaint" */
    char file[256];             /* under golden/models/ */
} model_case;

/* The tiny models, from golden/models/<name>.json ("kind", "files"). */
static int list_models(model_case *out, int max)
{
    char dir[1024];
    golden_path(dir, sizeof dir, "models");
    DIR *d = opendir(dir);
    if (!d) fail_msg("cannot list %s", dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0) continue;
        char rel[512];
        snprintf(rel, sizeof rel, "models/%.400s", e->d_name);
        json_t *j = golden_json(rel);
        const char *kind = json_string_value(json_object_get(j, "kind"));
        json_t *files = json_object_get(j, "files");
        const char *file = json_string_value(json_object_get(files, "f16"));
        if (!file) file = json_string_value(json_object_get(files, "f32"));
        if (kind && file) {
            snprintf(out[n].kind, sizeof out[n].kind, "%s", kind);
            snprintf(out[n].file, sizeof out[n].file, "%.250s", file);
            n++;
        }
        json_decref(j);
    }
    closedir(d);
    if (n == 0) fail_msg("no tiny models in %s", dir);
    return n;
}

/* Precisions to run: both on a GPU, AUTO only emulated. */
static int n_prec(const fixture *fx) { return strcmp(fx->label, "cuda-emu") == 0 ? 1 : N_PREC; }

static double tol_of(int prec) { return prec == PREC_F32 ? 1e-4 : 1e-2; }
static const char *prec_name(int prec) { return prec == PREC_F32 ? "F32" : "AUTO"; }

/* The VAE in bf16 (SD_CUDA_PREC_AUTO_VAE_BF16), run by test_vaes after the
 * fixture's precisions, on its own backend. */
#define VAE_BF16_TOL 6e-2

static sd_model_file *open_model(const model_case *m, sd_family_info *fam)
{
    char rel[512], err[512];
    snprintf(rel, sizeof rel, "models/%.250s", m->file);
    sd_model_file *f = golden_open(rel);
    if (sd_family_detect(f, fam, err, sizeof err) != 0) fail_msg("%s: %s", m->file, err);
    return f;
}

static sd_model_file *open_golden(const model_case *m, const char *part)
{
    char rel[256];
    snprintf(rel, sizeof rel, "models_golden/%.31s_%.40s.safetensors", m->kind, part);
    return golden_open(rel);
}

static void test_text_encoders(void **state)
{
    fixture *fx = *state;
    NEED_CUDA(fx);
    model_case models[MAX_MODELS];
    int nm = list_models(models, MAX_MODELS);
    /* golden tensor -> clip_skip that produces it */
    static const struct { const char *name; int clip_skip; } outputs[] = {
        { "last_hidden_state", 1 }, { "clip_skip2_ln", 2 }, { "penultimate_ln", 2 }
    };
    for (int mi = 0; mi < nm; mi++) {
        sd_family_info fam;
        sd_model_file *mf = open_model(&models[mi], &fam);
        sd_model_file *g = open_golden(&models[mi], "text_encoder");
        int64_t nids = 0;
        int64_t *ids64 = golden_i64(g, "input_ids", &nids);
        int *ids = malloc((size_t)nids * sizeof *ids);
        assert_non_null(ids);
        for (int64_t i = 0; i < nids; i++) ids[i] = (int)ids64[i];
        for (int pi = 0; pi < n_prec(fx); pi++) {
            char err[512];
            sd_text_encoder *enc = NULL;
            if (sd_text_encoder_create(mf, &fam, fx->cuda[pi], &enc, err, sizeof err))
                fail_msg("%s: %s", models[mi].kind, err);
            size_t D = (size_t)sd_text_encoder_width(enc);
            float *out = malloc((size_t)nids * D * sizeof *out);
            assert_non_null(out);
            for (size_t oi = 0; oi < sizeof outputs / sizeof outputs[0]; oi++) {
                if (!golden_has(g, outputs[oi].name)) continue;
                if (sd_text_encode(enc, ids, (int)nids, outputs[oi].clip_skip, out, err, sizeof err))
                    fail_msg("%s: %s", models[mi].kind, err);
                int64_t n = 0;
                float *want = golden_f32(g, outputs[oi].name, &n);
                assert_int_equal(n, nids * (int64_t)D);
                char what[512];
                snprintf(what, sizeof what, "%.20s %.31s text encoder %.40s (%s)", fx->label,
                         models[mi].kind, outputs[oi].name, prec_name(pi));
                golden_assert_close(what, out, want, (size_t)n, tol_of(pi));
                free(want);
            }
            free(out);
            sd_text_encoder_destroy(enc);
        }
        free(ids);
        free(ids64);
        sd_model_file_close(g);
        sd_model_file_close(mf);
    }
}

/* implicit: AUTO only, with the implicit-GEMM convolutions on
 * (sd_backend_cuda_set_conv_implicit), which must run at least once.
 * f16: AUTO only, with fp16 activations (sd_backend_cuda_set_f16_activations):
 * the same goldens at the same tolerance, and an output that is not the
 * float32 activations' (the switch took effect). */
static void run_unets(fixture *fx, bool implicit, bool f16)
{
    model_case models[MAX_MODELS];
    int nm = list_models(models, MAX_MODELS);
    for (int mi = 0; mi < nm; mi++) {
        sd_family_info fam;
        sd_model_file *mf = open_model(&models[mi], &fam);
        sd_model_file *g = open_golden(&models[mi], "unet");
        const sd_tensor_info *xi = golden_tensor(g, "x"), *ci = golden_tensor(g, "context");
        int B = (int)xi->shape[0], H = (int)xi->shape[2], W = (int)xi->shape[3];
        int L = (int)ci->shape[1];
        float *x = golden_f32(g, "x", NULL), *ctx = golden_f32(g, "context", NULL);
        for (int pi = 0; pi < (implicit || f16 ? 1 : n_prec(fx)); pi++) {
            char err[512];
            sd_unet *u = NULL;
            sd_cuda_memory before, after;
            assert_int_equal(sd_backend_cuda_memory(fx->cuda[pi], &before, false), 0);
            if (implicit) assert_int_equal(sd_backend_cuda_set_conv_implicit(fx->cuda[pi], true), 0);
            if (sd_unet_create(mf, &fam, fx->cuda[pi], &u, err, sizeof err))
                fail_msg("%s: %s", models[mi].kind, err);
            static const char *const variants[][2] = { { "timesteps_int", "out_int" },
                                                       { "timesteps_frac", "out_frac" } };
            for (int vi = 0; vi < 2; vi++) {
                float t[16];
                assert_true(B <= 16);
                double *tv = golden_f64(g, variants[vi][0], NULL);
                for (int b = 0; b < B; b++) t[b] = (float)tv[b];
                free(tv);
                int64_t n = 0;
                float *want = golden_f32(g, variants[vi][1], &n);
                float *out = malloc((size_t)n * sizeof *out);
                assert_non_null(out);
                /* f16: the first variant runs with float32 activations
                 * too (the fp16 output must differ: the switch took
                 * effect), then each variant with fp16 activations */
                float *out32 = NULL;
                if (!f16 || vi == 0) {
                    if (sd_unet_forward(u, x, t, ctx, L, B, H, W, out, err, sizeof err))
                        fail_msg("%s: %s", models[mi].kind, err);
                    if (f16) {
                        out32 = malloc((size_t)n * sizeof *out32);
                        assert_non_null(out32);
                        memcpy(out32, out, (size_t)n * sizeof *out32);
                    }
                }
                if (f16) {
                    assert_int_equal(sd_backend_cuda_set_f16_activations(fx->cuda[pi], true), 0);
                    if (vi == 0) sd_unet_kv_cache_clear(u);   /* K/V made in fp16 too */
                    int rc = sd_unet_forward(u, x, t, ctx, L, B, H, W, out, err, sizeof err);
                    assert_int_equal(sd_backend_cuda_set_f16_activations(fx->cuda[pi], false), 0);
                    if (rc) fail_msg("%s: %s", models[mi].kind, err);
                    if (out32) assert_true(memcmp(out, out32, (size_t)n * sizeof *out) != 0);
                    free(out32);
                }
                char what[512];
                snprintf(what, sizeof what, "%.20s %.31s UNet %.40s (%s%s%s)", fx->label,
                         models[mi].kind, variants[vi][1], prec_name(pi),
                         implicit ? ", implicit-GEMM convolutions" : "",
                         f16 ? ", fp16 activations" : "");
                golden_assert_close(what, out, want, (size_t)n, tol_of(pi));
                free(out);
                free(want);
            }
            sd_unet_destroy(u);
            assert_int_equal(sd_backend_cuda_memory(fx->cuda[pi], &after, false), 0);
            if (implicit) {
                assert_int_equal(sd_backend_cuda_set_conv_implicit(fx->cuda[pi], false), 0);
                assert_true(after.conv_implicit_calls > before.conv_implicit_calls);
            } else {
                assert_true(after.conv_implicit_calls == before.conv_implicit_calls);
            }
        }
        free(x);
        free(ctx);
        sd_model_file_close(g);
        sd_model_file_close(mf);
    }
}

static void test_unets(void **state)
{
    fixture *fx = *state;
    NEED_CUDA(fx);
    run_unets(fx, false, false);
}

/* The UNets with the implicit-GEMM convolutions (conv_igemm.cu) against
 * the same goldens, AUTO tolerance. */
static void test_unets_conv_implicit(void **state)
{
    fixture *fx = *state;
    NEED_CUDA(fx);
    run_unets(fx, true, false);
}

/* The UNets with fp16 activations, alone and with the implicit-GEMM
 * convolutions (which then read fp16 inputs in place), against the same
 * goldens at AUTO tolerance. */
static void test_unets_f16_activations(void **state)
{
    fixture *fx = *state;
    NEED_CUDA(fx);
    run_unets(fx, false, true);
    run_unets(fx, true, true);
}

static void test_vaes(void **state)
{
    fixture *fx = *state;
    NEED_CUDA(fx);
    model_case models[MAX_MODELS];
    int nm = list_models(models, MAX_MODELS);
    for (int mi = 0; mi < nm; mi++) {
        sd_family_info fam;
        sd_model_file *mf = open_model(&models[mi], &fam);
        sd_model_file *g = open_golden(&models[mi], "vae");
        const sd_tensor_info *zi = golden_tensor(g, "dec_z"), *ii = golden_tensor(g, "enc_image");
        float *z = golden_f32(g, "dec_z", NULL), *img = golden_f32(g, "enc_image", NULL);
        int64_t n_dec = 0, n_enc = 0;
        float *want_dec = golden_f32(g, "dec_out", &n_dec);
        float *want_enc = golden_f32(g, "enc_moments", &n_enc);
        float *dec = malloc((size_t)n_dec * sizeof *dec), *enc = malloc((size_t)n_enc * sizeof *enc);
        assert_non_null(dec);
        assert_non_null(enc);
        for (int pi = 0; pi <= n_prec(fx); pi++) {
            char err[512], what[512];
            /* pi == n_prec: the bf16 VAE */
            const bool bf16 = pi == n_prec(fx);
            sd_backend *be = fx->cuda[bf16 ? 0 : pi];
            if (bf16) {
                sd_cuda_options o = { .precision = SD_CUDA_PREC_AUTO_VAE_BF16,
                                      .workspace_mb = 1,
                                      .lib_path = fx->lib[0] ? fx->lib : NULL };
                if (!(be = sd_backend_cuda_create(&o, err, sizeof err)))
                    fail_msg("AUTO_VAE_BF16 backend: %s", err);
            }
            const double tol = bf16 ? VAE_BF16_TOL : tol_of(pi);
            const char *pname = bf16 ? "AUTO_VAE_BF16" : prec_name(pi);
            sd_vae *v = NULL;
            if (sd_vae_create(mf, &fam, be, &v, err, sizeof err))
                fail_msg("%s: %s", models[mi].kind, err);
            if (sd_vae_decode(v, z, (int)zi->shape[0], (int)zi->shape[2], (int)zi->shape[3], dec,
                              err, sizeof err))
                fail_msg("%s decode: %s", models[mi].kind, err);
            snprintf(what, sizeof what, "%.20s %.31s VAE decode (%s)", fx->label, models[mi].kind,
                     pname);
            golden_assert_close(what, dec, want_dec, (size_t)n_dec, tol);
            if (sd_vae_encode_moments(v, img, (int)ii->shape[0], (int)ii->shape[2],
                                      (int)ii->shape[3], enc, err, sizeof err))
                fail_msg("%s encode: %s", models[mi].kind, err);
            snprintf(what, sizeof what, "%.20s %.31s VAE encode (%s)", fx->label, models[mi].kind,
                     pname);
            golden_assert_close(what, enc, want_enc, (size_t)n_enc, tol);
            sd_vae_destroy(v);
            if (bf16) sd_backend_destroy(be);
        }
        free(dec);
        free(enc);
        free(want_dec);
        free(want_enc);
        free(z);
        free(img);
        sd_model_file_close(g);
        sd_model_file_close(mf);
    }
}

int main(void)
{
    const struct CMUnitTest gpu[] = { cmocka_unit_test(test_text_encoders),
                                      cmocka_unit_test(test_unets),
                                      cmocka_unit_test(test_unets_conv_implicit),
                                      cmocka_unit_test(test_unets_f16_activations),
                                      cmocka_unit_test(test_vaes) };
    const struct CMUnitTest emu[] = { cmocka_unit_test(test_text_encoders),
                                      cmocka_unit_test(test_unets),
                                      cmocka_unit_test(test_unets_conv_implicit),
                                      cmocka_unit_test(test_unets_f16_activations),
                                      cmocka_unit_test(test_vaes) };
    int failed = cmocka_run_group_tests_name("cuda networks (GPU)", gpu, setup_gpu, teardown);
    failed += cmocka_run_group_tests_name("cuda-emu networks (CUDA kernels emulated on the CPU)",
                                          emu, setup_emu, teardown);
    return failed ? 1 : 0;
}
