/* test_rng.c - torch CPU random numbers against golden/rng.
 *
 * Every case of golden/rng/torch_rng.json (and its call sequence) is
 * regenerated and compared bit for bit with the scalar-kernel values
 * (torch_rng_scalar_kernels.safetensors, which stores only the tensors that
 * differ from the AVX2 run; the others are taken from torch_rng.safetensors).
 * The AVX2-kernel emulation is checked bit for bit against the AVX2 values.
 * Also: the horde's seed-string rule. */
#include "golden.h"

#include "engine/rng.h"

typedef struct rng_golden {
    json_t *index;
    sd_model_file *avx2;
    sd_model_file *scalar;
} rng_golden;

static int setup(void **state)
{
    rng_golden *g = calloc(1, sizeof *g);
    g->index = golden_json("rng/torch_rng.json");
    g->avx2 = golden_open("rng/torch_rng.safetensors");
    g->scalar = golden_open("rng/torch_rng_scalar_kernels.safetensors");
    *state = g;
    return 0;
}

static int teardown(void **state)
{
    rng_golden *g = *state;
    json_decref(g->index);
    sd_model_file_close(g->avx2);
    sd_model_file_close(g->scalar);
    free(g);
    return 0;
}

static size_t shape_numel(json_t *shape)
{
    size_t n = 1, i;
    json_t *d;
    json_array_foreach(shape, i, d) n *= (size_t)json_integer_value(d);
    return n;
}

/* Runs one call (fn "rand"/"randn") on r and compares with the golden
 * tensor `name`: scalar kernels -> the scalar file when it has the tensor,
 * AVX2 emulation -> the AVX2 file. */
static size_t g_from_scalar_file;   /* cases checked against the scalar file */

static void check_call(rng_golden *g, sd_rng *r, const char *fn, const char *name, size_t n)
{
    float *got = malloc(n * sizeof *got);
    if (strcmp(fn, "rand") == 0) sd_rng_rand(r, got, n);
    else if (strcmp(fn, "randn") == 0) sd_rng_randn(r, got, n);
    else fail_msg("unknown fn '%s' in torch_rng.json", fn);
    const sd_model_file *src = g->avx2;
    if (r->math == SD_RNG_MATH_SCALAR && golden_has(g->scalar, name)) {
        src = g->scalar;
        g_from_scalar_file++;
    }
    int64_t want_n = 0;
    float *want = golden_f32(src, name, &want_n);
    assert_int_equal((int64_t)n, want_n);
    char what[256];
    snprintf(what, sizeof what, "%s (%s kernels)", name, r->math == SD_RNG_MATH_SCALAR ? "scalar" : "AVX2");
    golden_assert_bits_equal(what, got, want, n);
    free(want);
    free(got);
}

static void run_cases(void **state, sd_rng_math math)
{
    rng_golden *g = *state;
    json_t *cases = json_object_get(g->index, "cases");
    assert_true(json_array_size(cases) > 0);
    size_t i, checked = 0;
    json_t *c;
    g_from_scalar_file = 0;
    json_array_foreach(cases, i, c) {
        uint64_t seed;
        const char *seed_text = json_string_value(json_object_get(c, "seed_u64"));
        assert_non_null(seed_text);
        assert_int_equal(sd_seed_parse_u64(seed_text, &seed), 0);
        /* the signed decimal form must give the same 64-bit seed */
        uint64_t seed2;
        assert_int_equal(sd_seed_parse_u64(json_string_value(json_object_get(c, "seed")), &seed2), 0);
        assert_true(seed == seed2);
        sd_rng r;
        sd_rng_seed(&r, seed, math);
        check_call(g, &r, json_string_value(json_object_get(c, "fn")), json_string_value(json_object_get(c, "name")),
                   shape_numel(json_object_get(c, "shape")));
        checked++;
    }
    assert_int_equal(checked, json_array_size(cases));
    /* the scalar file must actually have been used (it holds the tensors
     * where the kernels differ) */
    if (math == SD_RNG_MATH_SCALAR) assert_true(g_from_scalar_file > 0);
}

static void test_cases_scalar_bit_exact(void **state) { run_cases(state, SD_RNG_MATH_SCALAR); }
static void test_cases_avx2_emulation_bit_exact(void **state) { run_cases(state, SD_RNG_MATH_AVX2); }

/* One manual_seed, then every call of the sequence in order: the generator
 * state and the cached spare normal carry over between calls. */
static void run_sequence(void **state, sd_rng_math math)
{
    rng_golden *g = *state;
    json_t *seq = json_object_get(g->index, "sequence");
    assert_non_null(seq);
    uint64_t seed;
    assert_int_equal(sd_seed_parse_u64(json_string_value(json_object_get(seq, "seed")), &seed), 0);
    sd_rng r;
    sd_rng_seed(&r, seed, math);
    size_t i;
    json_t *c;
    json_t *calls = json_object_get(seq, "calls");
    assert_true(json_array_size(calls) > 1);
    json_array_foreach(calls, i, c)
        check_call(g, &r, json_string_value(json_object_get(c, "fn")), json_string_value(json_object_get(c, "name")),
                   shape_numel(json_object_get(c, "shape")));
}

static void test_sequence_scalar(void **state) { run_sequence(state, SD_RNG_MATH_SCALAR); }
static void test_sequence_avx2(void **state) { run_sequence(state, SD_RNG_MATH_AVX2); }

/* The two kernels differ only in the last bits (README: up to 1.8e-6). */
static void test_kernels_agree_closely(void **state)
{
    (void)state;
    enum { N = 4 * 64 * 64 };
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    sd_rng r;
    sd_rng_seed(&r, 42, SD_RNG_MATH_SCALAR);
    sd_rng_randn(&r, a, N);
    sd_rng_seed(&r, 42, SD_RNG_MATH_AVX2);
    sd_rng_randn(&r, b, N);
    golden_assert_close("scalar vs AVX2 kernels", a, b, N, 2e-6);
    free(a);
    free(b);
}

/* Re-seeding restarts the stream and drops the cached spare normal. */
static void test_reseed_clears_spare(void **state)
{
    (void)state;
    sd_rng r;
    float first[1], again[1], spare[1];
    sd_rng_seed(&r, 7, SD_RNG_MATH_SCALAR);
    sd_rng_randn(&r, first, 1);
    sd_rng_seed(&r, 7, SD_RNG_MATH_SCALAR);
    sd_rng_randn(&r, again, 1);
    assert_memory_equal(first, again, sizeof first);
    sd_rng_randn(&r, spare, 1);    /* the cached sin() half */
    assert_true(memcmp(first, spare, sizeof first) != 0);
}

static void test_seed_parse(void **state)
{
    (void)state;
    uint64_t s;
    assert_int_equal(sd_seed_parse_u64("-1", &s), 0);
    assert_true(s == UINT64_MAX);
    assert_int_equal(sd_seed_parse_u64("18446744073709551615", &s), 0);
    assert_true(s == UINT64_MAX);
    assert_int_equal(sd_seed_parse_u64("18446744073709551616", &s), -1);   /* torch rejects >= 2^64 */
    assert_int_equal(sd_seed_parse_u64("-9223372036854775808", &s), 0);
    assert_true(s == UINT64_C(1) << 63);
    assert_int_equal(sd_seed_parse_u64("-9223372036854775809", &s), -1);
    assert_int_equal(sd_seed_parse_u64("12a", &s), -1);
    assert_int_equal(sd_seed_parse_u64("", &s), -1);
}

/* AI-Horde seed_to_int: expected values from the rule as Python states it:
 * abs(int(s) if s.isdigit() else int.from_bytes(s.encode(), "little")),
 * then while n >= 2**32: n >>= 32. */
static void test_horde_seed_strings(void **state)
{
    (void)state;
    static const struct { const char *text; uint64_t want; } cases[] = {
        {"0", 0},
        {"42", 42},
        {"00042", 42},
        {"4294967295", 4294967295u},
        {"4294967296", 1},
        {"18446744073709551616", 1},
        {"123456789012345678901234567890", 1},
        {"abc", 6513249},
        {"-5", 13613},                 /* not all digits: bytes */
        {" 42", 3290144},
        {"hello world", 6581362},
        {"caf\xc3\xa9", 169},
        {"\xf0\x9f\xa6\x8a fox", 2020566560u},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t s = 12345;
        assert_int_equal(sd_seed_from_string(cases[i].text, &s), 0);
        if (s != cases[i].want) fail_msg("seed '%s': got %llu, want %llu", cases[i].text, (unsigned long long)s,
                                         (unsigned long long)cases[i].want);
    }
    uint64_t s;
    assert_int_equal(sd_seed_from_string("", &s), -1);
    assert_int_equal(sd_seed_from_string(NULL, &s), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cases_scalar_bit_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cases_avx2_emulation_bit_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sequence_scalar, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sequence_avx2, setup, teardown),
        cmocka_unit_test(test_kernels_agree_closely),
        cmocka_unit_test(test_reseed_clears_spare),
        cmocka_unit_test(test_seed_parse),
        cmocka_unit_test(test_horde_seed_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
