/* test_model_file.c - the checkpoint reader: every golden safetensors file,
 * F16/F32 equality of the tiny models, dtype conversion (half.h), .ckpt
 * (PyTorch zip + restricted pickle) built here byte by byte, and malformed
 * or truncated files, which must fail with a message naming the file and
 * the problem - never crash (run under ASan by `make check-asan`). */
#include "golden.h"

#include <dirent.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/half.h"
#include "engine/model_file.h"
#include "model_writers.h"

/* ---- helpers ------------------------------------------------------------------ */
static void expect_open_error(const void *bytes, size_t len, const char *name, const char *needle)
{
    sd_model_file *f = (sd_model_file *)1;
    char err[1024] = "";
    int rc = sd_model_file_open_memory(bytes, len, name, &f, err, sizeof err);
    if (rc == 0) {
        sd_model_file_close(f);
        fail_msg("%s: opened although it should fail with '%s'", name, needle);
    }
    assert_null(f);
    if (!strstr(err, name)) fail_msg("error does not name the file: \"%s\"", err);
    if (needle && !strstr(err, needle)) fail_msg("error \"%s\" lacks \"%s\"", err, needle);
}

static char g_tmpdir[256];

static int make_tmpdir(void **state)
{
    (void)state;
    snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/test_model_file_XXXXXX");
    if (!mkdtemp(g_tmpdir)) return -1;
    return 0;
}

static int remove_tmpdir(void **state)
{
    (void)state;
    DIR *d = opendir(g_tmpdir);
    if (d) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            snprintf(p, sizeof p, "%s/%s", g_tmpdir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(g_tmpdir);
    return 0;
}

static const char *tmp_path(const char *name)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", g_tmpdir, name);
    return p;
}

/* ---- golden files ---------------------------------------------------------------- */
static bool is_component(const char *name)
{
    return strncmp(name, "model.diffusion_model.", 22) == 0 || strncmp(name, "first_stage_model.", 18) == 0 ||
           strncmp(name, "cond_stage_model.", 17) == 0;
}

/* Each models/tiny_*.json: its files open with num_tensors tensors, all
 * convertible; where an F16 and an F32 file exist, every network parameter
 * converts from F16 to exactly the F32 file's value. */
static void test_golden_models(void **state)
{
    (void)state;
    char dir[1024];
    golden_path(dir, sizeof dir, "models");
    DIR *d = opendir(dir);
    if (!d) fail_msg("cannot list %s", dir);
    struct dirent *e;
    int described = 0, compared = 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".json") != 0) continue;
        char rel[512];
        snprintf(rel, sizeof rel, "models/%s", e->d_name);
        json_t *j = golden_json(rel);
        json_t *files = json_object_get(j, "files");
        int64_t want_count = json_integer_value(json_object_get(j, "num_tensors"));
        sd_model_file *by_kind[2] = {NULL, NULL};             /* f16, f32 */
        const char *k;
        json_t *v;
        json_object_foreach(files, k, v) {
            snprintf(rel, sizeof rel, "models/%s", json_string_value(v));
            sd_model_file *f = golden_open(rel);
            assert_int_equal(sd_model_file_count(f), (size_t)want_count);
            assert_string_equal(sd_model_file_format(f), "safetensors");
            assert_string_equal(sd_model_file_metadata(f, "format"), "pt");
            for (size_t i = 0; i < sd_model_file_count(f); i++) {
                const sd_tensor_info *t = sd_model_file_at(f, i);
                assert_ptr_equal(sd_model_file_find(f, t->name), t);
                if (i) assert_true(strcmp(sd_model_file_at(f, i - 1)->name, t->name) < 0);
                assert_int_equal(t->nbytes, (size_t)sd_tensor_numel(t) * sd_dtype_size(t->dtype));
            }
            if (strcmp(k, "f16") == 0) by_kind[0] = f;
            else if (strcmp(k, "f32") == 0) by_kind[1] = f;
            else sd_model_file_close(f);
        }
        if (by_kind[0] && by_kind[1]) {
            sd_model_file *h = by_kind[0], *s = by_kind[1];
            assert_int_equal(sd_model_file_count(h), sd_model_file_count(s));
            for (size_t i = 0; i < sd_model_file_count(h); i++) {
                const sd_tensor_info *a = sd_model_file_at(h, i), *b = sd_model_file_at(s, i);
                assert_string_equal(a->name, b->name);
                if (!is_component(a->name)) continue;             /* DDPM buffers differ by design */
                int64_t n = sd_tensor_numel(a);
                assert_int_equal(n, sd_tensor_numel(b));
                if (a->dtype == SD_DTYPE_I64) {
                    assert_int_equal(b->dtype, SD_DTYPE_I64);
                    assert_memory_equal(a->data, b->data, a->nbytes);
                    continue;
                }
                assert_int_equal(a->dtype, SD_DTYPE_F16);
                assert_int_equal(b->dtype, SD_DTYPE_F32);
                float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
                assert_int_equal(sd_tensor_to_f32(a, x), 0);
                assert_int_equal(sd_tensor_to_f32(b, y), 0);
                golden_assert_bits_equal(a->name, x, y, (size_t)n);
                free(x);
                free(y);
                compared++;
            }
        }
        sd_model_file_close(by_kind[0]);
        sd_model_file_close(by_kind[1]);
        json_decref(j);
        described++;
    }
    closedir(d);
    assert_true(described >= 1);
    assert_true(compared > 100);
}

/* Every *.safetensors under golden/ opens and converts (F64, I64, U8 too). */
static int walk_safetensors(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) != 0) continue;
        if (S_ISDIR(st.st_mode) && depth < 3) {
            count += walk_safetensors(p, depth + 1);
            continue;
        }
        size_t l = strlen(p);
        if (l < 12 || strcmp(p + l - 12, ".safetensors") != 0) continue;
        sd_model_file *f;
        char err[1024];
        if (sd_model_file_open(p, &f, err, sizeof err)) fail_msg("%s", err);
        for (size_t i = 0; i < sd_model_file_count(f); i++) {
            const sd_tensor_info *t = sd_model_file_at(f, i);
            int64_t n = sd_tensor_numel(t);
            double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
            assert_int_equal(sd_tensor_to_f64(t, v), 0);
            free(v);
        }
        assert_true(sd_model_file_count(f) > 0);
        sd_model_file_close(f);
        count++;
    }
    closedir(d);
    return count;
}

static void test_all_golden_files_open(void **state)
{
    (void)state;
    char dir[1024];
    golden_path(dir, sizeof dir, "");
    assert_true(walk_safetensors(dir, 0) >= 10);
}

/* ---- dtypes --------------------------------------------------------------------- */
static void test_dtypes_roundtrip(void **state)
{
    (void)state;
    const float f32[4] = {1.5f, -2.25f, 0.0f, 65504.0f};
    uint16_t f16[4], bf16[4];
    for (int i = 0; i < 4; i++) { f16[i] = sd_f32_to_f16(f32[i]); bf16[i] = sd_f32_to_bf16(f32[i]); }
    const int64_t i64[3] = {-5, 0, 49407};
    const double f64[2] = {0.1, -3e30};
    const uint8_t u8[3] = {0, 128, 255};
    st_entry e[] = {
        {"z.f32", "F32", 2, {2, 2}, f32, sizeof f32},
        {"a.f16", "F16", 1, {4}, f16, sizeof f16},
        {"m.bf16", "BF16", 1, {4}, bf16, sizeof bf16},
        {"b.i64", "I64", 2, {1, 3}, i64, sizeof i64},
        {"c.f64", "F64", 1, {2}, f64, sizeof f64},
        {"d.u8", "U8", 1, {3}, u8, sizeof u8},
        {"s.scalar", "F32", 0, {0}, f32, 4},
        {"e.empty", "F16", 2, {0, 7}, NULL, 0},
    };
    mw_buf b = {0};
    st_build(&b, e, sizeof e / sizeof e[0], "{\"format\":\"pt\",\"note\":\"x\"}");
    sd_model_file *f;
    char err[512];
    assert_int_equal(sd_model_file_open_memory(b.p, b.n, "dtypes.safetensors", &f, err, sizeof err), 0);
    assert_int_equal(sd_model_file_count(f), 8);
    assert_string_equal(sd_model_file_at(f, 0)->name, "a.f16");           /* sorted */
    assert_string_equal(sd_model_file_metadata(f, "note"), "x");
    assert_null(sd_model_file_metadata(f, "missing"));
    assert_null(sd_model_file_find(f, "nope"));
    float out[4];
    assert_int_equal(sd_tensor_to_f32(sd_model_file_find(f, "z.f32"), out), 0);
    assert_memory_equal(out, f32, sizeof f32);
    assert_int_equal(sd_tensor_to_f32(sd_model_file_find(f, "a.f16"), out), 0);
    assert_memory_equal(out, f32, sizeof f32);                             /* all exact in fp16 */
    assert_int_equal(sd_tensor_to_f32(sd_model_file_find(f, "m.bf16"), out), 0);
    assert_true(out[0] == 1.5f && out[1] == -2.25f && out[3] == 65536.0f);  /* bf16 rounds 65504 */
    int64_t iv[3];
    assert_int_equal(sd_tensor_to_i64(sd_model_file_find(f, "b.i64"), iv), 0);
    assert_memory_equal(iv, i64, sizeof i64);
    double dv[2];
    assert_int_equal(sd_tensor_to_f64(sd_model_file_find(f, "c.f64"), dv), 0);
    assert_memory_equal(dv, f64, sizeof f64);
    assert_int_equal(sd_tensor_to_f32(sd_model_file_find(f, "d.u8"), out), 0);
    assert_true(out[0] == 0.0f && out[1] == 128.0f && out[2] == 255.0f);
    const sd_tensor_info *sc = sd_model_file_find(f, "s.scalar");
    assert_int_equal(sc->ndim, 0);
    assert_int_equal(sd_tensor_numel(sc), 1);
    assert_int_equal(sd_tensor_numel(sd_model_file_find(f, "e.empty")), 0);
    /* ranges */
    assert_int_equal(sd_tensor_range_to_f32(sd_model_file_find(f, "a.f16"), 1, 2, out), 0);
    assert_true(out[0] == -2.25f && out[1] == 0.0f);
    assert_int_equal(sd_tensor_range_to_f32(sd_model_file_find(f, "a.f16"), 3, 2, out), -1);
    sd_model_file_close(f);
    mw_buf_free(&b);
}

/* fp16 <-> f32: every half value round-trips; f32 -> f16 rounds to
 * nearest-even like the compiler's _Float16 where that exists. */
static void test_half_conversion(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = sd_f16_to_f32((uint16_t)h);
        uint16_t back = sd_f32_to_f16(f);
        bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (nan) assert_true(f != f && (back & 0x7c00) == 0x7c00 && (back & 0x3ff));
        else if (back != h) fail_msg("f16 0x%04x -> %g -> 0x%04x", h, (double)f, back);
    }
    /* halfway cases round to even; overflow goes to infinity */
    assert_int_equal(sd_f32_to_f16(1.0f + 1.0f / 2048.0f), 0x3c00);          /* tie, even stays */
    assert_int_equal(sd_f32_to_f16(1.0f + 3.0f / 2048.0f), 0x3c02);          /* tie, odd rounds up */
    assert_int_equal(sd_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(sd_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(sd_f32_to_f16(5.9604645e-8f), 0x0001);                  /* smallest subnormal */
    assert_int_equal(sd_f32_to_f16(2.9802322e-8f), 0x0000);                  /* half of it: tie to 0 */
#ifdef __FLT16_MAX__
    uint32_t x = 12345;
    for (int i = 0; i < 200000; i++) {
        x = x * 1664525u + 1013904223u;
        uint32_t bits = (x & 0x8fffffffu) | ((x >> 4) & 0x30000000u);       /* bias to |exp| near 0 */
        float f = sd_bits_f32(bits);
        if (f != f) continue;
        _Float16 hw = (_Float16)f;
        uint16_t want;
        memcpy(&want, &hw, 2);
        if (sd_f32_to_f16(f) != want) fail_msg("f32 %a -> f16 0x%04x, compiler says 0x%04x", (double)f, sd_f32_to_f16(f), want);
    }
#endif
    /* bf16 */
    assert_int_equal(sd_f32_to_bf16(1.0f), 0x3f80);
    assert_true(sd_bf16_to_f32(0x3f80) == 1.0f);
    assert_int_equal(sd_f32_to_bf16(sd_bits_f32(0x3f808000u)), 0x3f80);      /* tie to even */
    assert_int_equal(sd_f32_to_bf16(sd_bits_f32(0x3f818000u)), 0x3f82);
    assert_true(sd_bf16_to_f32(sd_f32_to_bf16(NAN)) != sd_bf16_to_f32(sd_f32_to_bf16(NAN)));
}

/* ---- malformed safetensors --------------------------------------------------------- */
static void test_malformed_safetensors(void **state)
{
    (void)state;
    unsigned char data[64] = {0};
    static const struct { const char *header; const char *needle; } cases[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]", "not valid JSON"},
        {"[1,2,3]", "not a JSON object"},
        {"{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", "missing dtype"},
        {"{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", "unsupported dtype"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,800]}}", "outside"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,4]}}", "outside"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-4,4]}}", "outside"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", "needs 12"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", "shape entry 0"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", "dimensions"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,4]}}", "too large"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         "not valid JSON"},                                                    /* duplicate key */
        {"{\"a\":7}", "not an object"},
        {"{\"__metadata__\":[1]}", "__metadata__"},
    };
    mw_buf b = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        st_build_raw(&b, cases[i].header, data, 16);
        char name[64];
        snprintf(name, sizeof name, "bad%zu.safetensors", i);
        expect_open_error(b.p, b.n, name, cases[i].needle);
    }
    /* too short for the length field; length beyond the file; absurd length */
    expect_open_error("\x10\0\0", 3, "short.safetensors", "too short");
    mw_buf_free(&b);
    mw_le(&b, 1000, 8);
    mw_str(&b, "{}");
    expect_open_error(b.p, b.n, "cut.safetensors", "truncated");
    b.n = 0;
    mw_le(&b, UINT64_C(1) << 40, 8);
    mw_str(&b, "{}      ");
    expect_open_error(b.p, b.n, "huge.safetensors", "implausible");
    mw_buf_free(&b);
}

/* Every truncation of a valid file fails cleanly (the header or a tensor's
 * data goes missing); so do random byte flips in the header (no crash). */
static void test_truncated_and_fuzzed_safetensors(void **state)
{
    (void)state;
    float v[6] = {1, 2, 3, 4, 5, 6};
    st_entry e[] = {
        {"first", "F32", 2, {2, 3}, v, sizeof v},
        {"second", "F16", 1, {2}, v, 4},
    };
    mw_buf b = {0};
    st_build(&b, e, 2, NULL);
    char err[512];
    sd_model_file *f;
    assert_int_equal(sd_model_file_open_memory(b.p, b.n, "ok.safetensors", &f, err, sizeof err), 0);
    sd_model_file_close(f);
    for (size_t len = 0; len < b.n; len++) expect_open_error(b.p, len, "trunc.safetensors", NULL);

    /* through the file/mmap path too, with the problem spelled out */
    assert_int_equal(mw_write_file(tmp_path("cut.safetensors"), &(mw_buf){b.p, b.n - 5, 0}), 0);
    assert_int_equal(sd_model_file_open(tmp_path("cut.safetensors"), &f, err, sizeof err), -1);
    assert_non_null(strstr(err, "cut.safetensors"));
    assert_non_null(strstr(err, "truncated"));

    unsigned char *m = malloc(b.n);
    uint32_t x = 99;
    size_t hdr_end = 8 + (size_t)b.p[0];
    for (int it = 0; it < 3000; it++) {
        memcpy(m, b.p, b.n);
        for (int k = 0; k < 3; k++) {
            x = x * 1103515245u + 12345u;
            size_t at = (x >> 8) % hdr_end;
            x = x * 1103515245u + 12345u;
            m[at] = (unsigned char)(x >> 16);
        }
        f = NULL;
        if (sd_model_file_open_memory(m, b.n, "fuzz.safetensors", &f, err, sizeof err) == 0) {
            for (size_t i = 0; i < sd_model_file_count(f); i++) {
                const sd_tensor_info *t = sd_model_file_at(f, i);
                double *d = malloc((size_t)sd_tensor_numel(t) * sizeof *d + 8);
                sd_tensor_to_f64(t, d);
                free(d);
            }
            sd_model_file_close(f);
        } else {
            assert_non_null(strstr(err, "fuzz.safetensors"));
        }
    }
    free(m);
    mw_buf_free(&b);
}

static void test_open_errors(void **state)
{
    (void)state;
    sd_model_file *f;
    char err[512];
    assert_int_equal(sd_model_file_open("/nonexistent/model.safetensors", &f, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/model.safetensors"));
    assert_int_equal(sd_model_file_open(g_tmpdir, &f, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a regular file"));
    mw_buf empty = {0};
    mw_u8(&empty, 0);
    empty.n = 0;
    assert_int_equal(mw_write_file(tmp_path("empty.safetensors"), &empty), 0);
    assert_int_equal(sd_model_file_open(tmp_path("empty.safetensors"), &f, err, sizeof err), -1);
    assert_non_null(strstr(err, "empty"));
    mw_buf_free(&empty);
    /* a .ckpt that is not a zip is named as such */
    expect_open_error("garbage, not a zip", 18, "model.ckpt", "not a PyTorch checkpoint");
}

/* ---- .ckpt ----------------------------------------------------------------------------- */
/* A state dict like torch.save({"state_dict": OrderedDict(...),
 * "global_step": 875000, "epoch": 3}) writes: a 2x3 float tensor, its
 * transpose (a strided view of the same storage), a half tensor whose
 * storage entry is deflated, an int64 buffer. */
static void build_ckpt(mw_buf *out, const char *inject_global, bool drop_storage, bool bad_view, bool deflate_all)
{
    mw_buf pk = {0};
    pk_proto(&pk);
    pk_op(&pk, '}');
    pk_op(&pk, '(');
    pk_str(&pk, "state_dict");
    pk_global(&pk, "collections", "OrderedDict");
    pk_op(&pk, ')');
    pk_op(&pk, 'R');
    pk_op(&pk, '(');
    int64_t s23[2] = {2, 3}, st23[2] = {3, 1}, s32[2] = {3, 2}, st32[2] = {1, 3}, s4[1] = {4}, st1[1] = {1};
    pk_str(&pk, "model.w");
    pk_tensor(&pk, "FloatStorage", "0", 6, 0, s23, st23, 2);
    pk_str(&pk, "model.w_t");
    pk_tensor(&pk, "FloatStorage", "0", 6, 0, s32, st32, 2);
    pk_str(&pk, "model.h");
    pk_tensor(&pk, "HalfStorage", "1", 4, bad_view ? 2 : 0, s4, st1, 1);
    pk_str(&pk, "model.ids");
    pk_tensor(&pk, "LongStorage", "2", 3, 1, (int64_t[]){2}, st1, 1);
    if (inject_global) {
        /* what a malicious file does: GLOBAL os.system, ("echo hi",), REDUCE */
        const char *dot = strrchr(inject_global, '.');
        char module[64];
        snprintf(module, sizeof module, "%.*s", (int)(dot - inject_global), inject_global);
        pk_str(&pk, "evil");
        pk_global(&pk, module, dot + 1);
        pk_op(&pk, '(');
        pk_str(&pk, "echo pwned");
        pk_op(&pk, 't');
        pk_op(&pk, 'R');
    }
    pk_op(&pk, 'u');
    pk_str(&pk, "global_step");
    pk_int(&pk, 875000);
    pk_str(&pk, "epoch");
    pk_int(&pk, 3);
    pk_op(&pk, 'u');
    pk_op(&pk, '.');

    float w[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[4];
    for (int i = 0; i < 4; i++) h[i] = sd_f32_to_f16(0.5f * (float)i - 1.0f);
    int64_t ids[3] = {7, 8, 9};
    zipw z = {0};
    zipw_add(&z, "archive/data.pkl", pk.p, pk.n, deflate_all);
    zipw_add(&z, "archive/byteorder", "little", 6, 0);
    zipw_add(&z, "archive/data/0", w, sizeof w, deflate_all);
    if (!drop_storage) zipw_add(&z, "archive/data/1", h, sizeof h, 1);
    zipw_add(&z, "archive/data/2", ids, sizeof ids, 0);
    zipw_add(&z, "archive/version", "3\n", 2, 0);
    zipw_finish(&z);
    *out = z.out;
    mw_buf_free(&pk);
}

static void test_ckpt_reads_tensors(void **state)
{
    (void)state;
    for (int deflate_all = 0; deflate_all <= 1; deflate_all++) {
        mw_buf b;
        build_ckpt(&b, NULL, false, false, deflate_all);
        assert_int_equal(mw_write_file(tmp_path("model.ckpt"), &b), 0);
        sd_model_file *f;
        char err[512];
        if (sd_model_file_open(tmp_path("model.ckpt"), &f, err, sizeof err)) fail_msg("%s", err);
        assert_string_equal(sd_model_file_format(f), "ckpt");
        assert_int_equal(sd_model_file_count(f), 4);
        assert_string_equal(sd_model_file_metadata(f, "global_step"), "875000");
        assert_string_equal(sd_model_file_metadata(f, "epoch"), "3");
        const sd_tensor_info *w = sd_model_file_find(f, "model.w"), *wt = sd_model_file_find(f, "model.w_t");
        assert_non_null(w);
        assert_non_null(wt);
        assert_int_equal(w->dtype, SD_DTYPE_F32);
        assert_int_equal(wt->ndim, 2);
        assert_int_equal(wt->shape[0], 3);
        float a[6], t[6];
        sd_tensor_to_f32(w, a);
        sd_tensor_to_f32(wt, t);
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 3; j++) assert_true(a[i * 3 + j] == t[j * 2 + i]);   /* the transpose */
        const sd_tensor_info *h = sd_model_file_find(f, "model.h");
        assert_int_equal(h->dtype, SD_DTYPE_F16);
        float hv[4];
        sd_tensor_to_f32(h, hv);
        for (int i = 0; i < 4; i++) assert_true(hv[i] == 0.5f * (float)i - 1.0f);
        int64_t ids[2];
        sd_tensor_to_i64(sd_model_file_find(f, "model.ids"), ids);
        assert_true(ids[0] == 8 && ids[1] == 9);                                    /* storage offset 1 */
        sd_model_file_close(f);
        mw_buf_free(&b);
    }
}

static void test_ckpt_refuses_code(void **state)
{
    (void)state;
    static const char *const evil[] = {"os.system", "posix.system", "builtins.eval", "__builtin__.exec",
                                       "subprocess.Popen", "torch.load"};
    for (size_t i = 0; i < sizeof evil / sizeof evil[0]; i++) {
        mw_buf b;
        build_ckpt(&b, evil[i], false, false, false);
        char want[96];
        snprintf(want, sizeof want, "forbidden GLOBAL '%s'", evil[i]);
        expect_open_error(b.p, b.n, "evil.ckpt", want);
        mw_buf_free(&b);
    }
    /* INST (protocol 0 object creation) is refused as an opcode */
    mw_buf pk = {0};
    pk_op(&pk, '(');
    mw_str(&pk, "ios\nsystem\n");
    pk_op(&pk, '.');
    zipw z = {0};
    zipw_add(&z, "archive/data.pkl", pk.p, pk.n, 0);
    zipw_finish(&z);
    expect_open_error(z.out.p, z.out.n, "inst.ckpt", "opcode 0x69");
    mw_buf_free(&z.out);
    mw_buf_free(&pk);
    /* STACK_GLOBAL spelling of the same */
    pk_proto(&pk);
    pk_str(&pk, "os");
    pk_str(&pk, "system");
    mw_u8(&pk, 0x93);
    pk_op(&pk, '.');
    memset(&z, 0, sizeof z);
    zipw_add(&z, "archive/data.pkl", pk.p, pk.n, 0);
    zipw_finish(&z);
    expect_open_error(z.out.p, z.out.n, "stack.ckpt", "forbidden GLOBAL 'os.system'");
    mw_buf_free(&z.out);
    mw_buf_free(&pk);
}

static void test_ckpt_errors(void **state)
{
    (void)state;
    mw_buf b;
    build_ckpt(&b, NULL, true, false, false);
    expect_open_error(b.p, b.n, "nostorage.ckpt", "archive/data/1");
    mw_buf_free(&b);
    build_ckpt(&b, NULL, false, true, false);
    expect_open_error(b.p, b.n, "view.ckpt", "model.h");
    mw_buf_free(&b);

    /* every truncation fails cleanly (the central directory is at the end) */
    build_ckpt(&b, NULL, false, false, true);
    for (size_t len = 0; len < b.n; len++) expect_open_error(b.p, len, "trunc.ckpt", NULL);
    /* corrupt compressed pickle bytes: inflate or CRC must notice */
    size_t at = 30 + strlen("archive/data.pkl") + 4;   /* inside the first entry's data */
    b.p[at] ^= 0x5a;
    expect_open_error(b.p, b.n, "corrupt.ckpt", NULL);
    mw_buf_free(&b);

    /* a zip that is not a torch checkpoint */
    zipw z = {0};
    zipw_add(&z, "readme.txt", "hello", 5, 0);
    zipw_finish(&z);
    expect_open_error(z.out.p, z.out.n, "notorch.ckpt", "data.pkl");
    mw_buf_free(&z.out);

    /* a truncated pickle inside a valid zip */
    mw_buf pk = {0};
    pk_proto(&pk);
    pk_op(&pk, '}');
    pk_op(&pk, '(');
    pk_str(&pk, "state_dict");
    memset(&z, 0, sizeof z);
    zipw_add(&z, "archive/data.pkl", pk.p, pk.n, 0);
    zipw_finish(&z);
    expect_open_error(z.out.p, z.out.n, "cutpickle.ckpt", "truncated");
    mw_buf_free(&z.out);
    mw_buf_free(&pk);
}

/* Inputs built to make a reader allocate without bound are refused. */
static void test_ckpt_resource_limits(void **state)
{
    (void)state;
    float w[6] = {0};
    /* a stride-0 view of a million elements over a 6-element storage */
    mw_buf pk = {0};
    pk_proto(&pk);
    pk_op(&pk, '}');
    pk_str(&pk, "w");
    pk_tensor(&pk, "FloatStorage", "0", 6, 0, (int64_t[]){1000000}, (int64_t[]){0}, 1);
    pk_op(&pk, 's');
    pk_op(&pk, '.');
    zipw z = {0};
    zipw_add(&z, "a/data.pkl", pk.p, pk.n, 0);
    zipw_add(&z, "a/data/0", w, sizeof w, 0);
    zipw_finish(&z);
    expect_open_error(z.out.p, z.out.n, "broadcast.ckpt", "overlapping view");
    mw_buf_free(&z.out);

    /* a memo index far beyond anything the pickle could number */
    pk.n = 0;
    pk_proto(&pk);
    pk_op(&pk, '}');
    pk_op(&pk, 'r');
    mw_le(&pk, 0x7fffffff, 4);
    pk_op(&pk, '.');
    memset(&z, 0, sizeof z);
    zipw_add(&z, "a/data.pkl", pk.p, pk.n, 0);
    zipw_finish(&z);
    expect_open_error(z.out.p, z.out.n, "memo.ckpt", "memo index");
    mw_buf_free(&z.out);

    /* a deflated entry claiming a size no deflate stream can reach */
    memset(&z, 0, sizeof z);
    zipw_add(&z, "a/data.pkl", pk.p, pk.n, 1);
    zipw_finish(&z);
    for (size_t i = 0; i + 4 <= z.out.n; i++) {
        if (memcmp(z.out.p + i, "PK\1\2", 4) == 0) {           /* central header: patch its size */
            z.out.p[i + 24] = 0xff; z.out.p[i + 25] = 0xff; z.out.p[i + 26] = 0xff; z.out.p[i + 27] = 0x7f;
        }
    }
    expect_open_error(z.out.p, z.out.n, "bomb.ckpt", "implausible");
    mw_buf_free(&z.out);
    mw_buf_free(&pk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_models),
        cmocka_unit_test(test_all_golden_files_open),
        cmocka_unit_test(test_dtypes_roundtrip),
        cmocka_unit_test(test_half_conversion),
        cmocka_unit_test(test_malformed_safetensors),
        cmocka_unit_test(test_truncated_and_fuzzed_safetensors),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_ckpt_reads_tensors),
        cmocka_unit_test(test_ckpt_refuses_code),
        cmocka_unit_test(test_ckpt_errors),
        cmocka_unit_test(test_ckpt_resource_limits),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
