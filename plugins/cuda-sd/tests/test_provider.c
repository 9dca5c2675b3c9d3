/* test_provider.c - the `generator` provider (provider.c) on a real tiny
 * model: horde pop payloads in, images, seed and metadata out.
 *
 * provider.c is plugin glue, not engine, so it is compiled into this test
 * directly; the host API table is reduced to the two functions the provider
 * calls (error, log). The model folder is a temporary directory holding
 * links to golden/models/tiny_sd1.* as "tiny_sd1". */
#include "golden.h"

#include <unistd.h>

#include "provider.c"

static hn_rc api_error(hn_error *err, int status, const char *rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    hn_rc r = hn_error_setv(err, status, rc, fmt, ap);
    va_end(ap);
    return r;
}

static void api_log(hn_plugin *self, hn_log_level level, const char *fmt, ...)
{
    (void)self;
    (void)level;
    (void)fmt;
}

static const hn_api k_api = {.size = sizeof(hn_api), .error = api_error, .log = api_log};

typedef struct fixture {
    char dir[64];
    char vocab[1024];
    cuda_sd_conf conf;
    cuda_sd sd;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_provider.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    char src[1024], dst[1200], abs_src[4096];
    const char *pairs[][2] = {{"models/tiny_sd1.f16.safetensors", "tiny_sd1.safetensors"},
                              {"models/tiny_sd1.json", "tiny_sd1.json"}};
    for (int i = 0; i < 2; i++) {
        golden_path(src, sizeof src, pairs[i][0]);
        if (!realpath(src, abs_src))
            return -1;
        snprintf(dst, sizeof dst, "%s/%s", f->dir, pairs[i][1]);
        if (symlink(abs_src, dst) != 0)
            return -1;
    }
    golden_shared_path(src, sizeof src, "models/clip/bpe_simple_vocab_16e6.txt.gz");
    if (!realpath(src, f->vocab))
        return -1;
    f->conf = (cuda_sd_conf){.vocab = f->vocab, .threads = 0, .backend = "cpu"};
    f->sd.api = &k_api;
    f->sd.conf = &f->conf;
    f->sd.conventions = SD_CONV_COMFYUI;
    snprintf(f->sd.models_dir, sizeof f->sd.models_dir, "%s", f->dir);
    pthread_mutex_init(&f->sd.lock, NULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    cuda_sd_generator_release(&f->sd);
    json_decref(f->sd.worker_models); /* what configure() copied (the plugin's fini does this) */
    pthread_mutex_destroy(&f->sd.lock);
    char p[1200];
    snprintf(p, sizeof p, "%s/tiny_sd1.safetensors", f->dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/tiny_sd1.json", f->dir);
    unlink(p);
    rmdir(f->dir);
    free(f);
    return 0;
}

typedef struct seen {
    int calls, last, total;
} seen;

static void on_progress(void *ud, int step, int total)
{
    seen *s = ud;
    s->calls++;
    s->last = step;
    s->total = total;
}

static hn_rc run(fixture *f, const char *payload_json, hn_gen_result *res, hn_error *err,
                 seen *s, volatile int *cancel, const hn_image *source, const hn_image *mask,
                 const char *processing)
{
    json_error_t jerr;
    json_t *payload = json_loads(payload_json, 0, &jerr);
    if (!payload)
        fail_msg("bad test payload: %s", jerr.text);
    hn_gen_job job = {.size = sizeof job,
                      .model = "tiny_sd1",
                      .payload = payload,
                      .source = source,
                      .mask = mask,
                      .source_processing = processing,
                      .progress = on_progress,
                      .ud = s,
                      .cancel = cancel};
    hn_rc rc = cuda_sd_generator_vt.generate(&f->sd, &job, res, err);
    json_decref(payload);
    return rc;
}

static void test_models_and_load(void **state)
{
    fixture *f = *state;
    json_t *models = cuda_sd_generator_vt.models(&f->sd);
    assert_int_equal(json_array_size(models), 1);
    assert_string_equal(json_string_value(json_array_get(models, 0)), "tiny_sd1");
    json_decref(models);
    hn_error err = {0};
    assert_int_equal(cuda_sd_generator_vt.load(&f->sd, "tiny_sd1", &err), HN_OK);
    assert_int_equal(cuda_sd_generator_vt.load(&f->sd, "no_such_model", &err), HN_ERROR);
    assert_int_equal(err.status, 404);
    assert_int_equal(cuda_sd_generator_vt.load(&f->sd, "../tiny_sd1", &err), HN_ERROR);
}

/* The horde's payload rules: "###" negative prompt, sizes rounded up to 64,
 * an unknown sampler falling back, seed text, n_iter images, LoRAs reported
 * in gen_metadata; deterministic for a seed. */
static void test_payload_to_images(void **state)
{
    fixture *f = *state;
    const char *payload =
        "{\"prompt\": \"a red fox###blurry\", \"sampler_name\": \"k_nonsense\", "
        "\"cfg_scale\": 6.5, \"seed\": \"abc\", \"width\": 70, \"height\": 64, "
        "\"ddim_steps\": 3, \"n_iter\": 2, \"karras\": false, "
        "\"loras\": [{\"name\": \"some_lora\", \"model\": 1.0}]}";
    hn_gen_result a, b;
    hn_error err = {0};
    seen s = {0};
    if (run(f, payload, &a, &err, &s, NULL, NULL, NULL, NULL) != HN_OK)
        fail_msg("generate: %s", err.message);
    assert_int_equal(a.n, 2);
    assert_int_equal(a.images[0].width, 128);
    assert_int_equal(a.images[0].height, 64);
    assert_int_equal(a.images[0].channels, 3);
    /* the horde's text rule: int.from_bytes(b"abc", "little") */
    assert_int_equal(a.seed, 0x636261);
    assert_int_equal(s.total, 3);
    assert_int_equal(s.last, 3);
    json_t *meta = a.gen_metadata;
    assert_int_equal(json_array_size(meta), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(meta, 0), "type")),
                        "lora");
    assert_string_equal(json_string_value(json_object_get(json_array_get(meta, 0), "ref")),
                        "some_lora");
    size_t bytes = 128 * 64 * 3;
    assert_true(memcmp(a.images[0].pixels, a.images[1].pixels, bytes) != 0);

    if (run(f, payload, &b, &err, &s, NULL, NULL, NULL, NULL) != HN_OK)
        fail_msg("generate: %s", err.message);
    assert_memory_equal(a.images[0].pixels, b.images[0].pixels, bytes);
    cuda_sd_generator_vt.result_free(&f->sd, &b);

    const char *other = "{\"prompt\": \"a red fox###blurry\", \"seed\": \"12345\", "
                        "\"width\": 128, \"height\": 64, \"ddim_steps\": 3, "
                        "\"sampler_name\": \"k_euler\", \"karras\": false, \"cfg_scale\": 6.5}";
    if (run(f, other, &b, &err, &s, NULL, NULL, NULL, NULL) != HN_OK)
        fail_msg("generate: %s", err.message);
    assert_int_equal(b.n, 1);
    assert_int_equal(b.seed, 12345);
    assert_null(b.gen_metadata);
    assert_true(memcmp(a.images[0].pixels, b.images[0].pixels, bytes) != 0);
    cuda_sd_generator_vt.result_free(&f->sd, &b);
    cuda_sd_generator_vt.result_free(&f->sd, &a);
}

static void test_source_and_mask(void **state)
{
    fixture *f = *state;
    hn_image src = {96, 64, 3, malloc(96 * 64 * 3)}, mask = {96, 64, 1, malloc(96 * 64)};
    for (int i = 0; i < 96 * 64 * 3; i++)
        src.pixels[i] = (unsigned char)(i * 37);
    for (int i = 0; i < 96 * 64; i++)
        mask.pixels[i] = (i % 96) < 48 ? 0 : 255;
    const char *payload = "{\"prompt\": \"a red fox\", \"seed\": \"7\", \"width\": 64, "
                          "\"height\": 64, \"ddim_steps\": 4, \"denoising_strength\": 0.5, "
                          "\"sampler_name\": \"k_dpmpp_2m\"}";
    const char *kinds[] = {"img2img", "inpainting", "outpainting"};
    for (int k = 0; k < 3; k++) {
        hn_gen_result r;
        hn_error err = {0};
        seen s = {0};
        if (run(f, payload, &r, &err, &s, NULL, &src, &mask, kinds[k]) != HN_OK)
            fail_msg("%s: %s", kinds[k], err.message);
        assert_int_equal(r.n, 1);
        assert_int_equal(r.images[0].width, 64); /* the source is resized to the request */
        /* ComfyUI: int(4 / 0.5) = 8 steps computed, the last 4 run */
        assert_int_equal(s.total, 4);
        cuda_sd_generator_vt.result_free(&f->sd, &r);
    }
    free(src.pixels);
    free(mask.pixels);
}

static void test_cancel_and_bad_jobs(void **state)
{
    fixture *f = *state;
    hn_gen_result r;
    hn_error err = {0};
    seen s = {0};
    volatile int cancel = 1;
    assert_int_equal(run(f, "{\"prompt\": \"x\", \"ddim_steps\": 3, \"width\": 64, \"height\": 64}",
                         &r, &err, &s, &cancel, NULL, NULL, NULL),
                     HN_DECLINED);
    assert_int_equal(run(f, "{\"prompt\": \"x\", \"control_type\": \"canny\"}", &r, &err, &s,
                         NULL, NULL, NULL, NULL),
                     HN_ERROR);
    assert_non_null(strstr(err.message, "ControlNet"));
    hn_gen_job job = {.size = sizeof job, .model = "tiny_sd1", .payload = NULL};
    assert_int_equal(cuda_sd_generator_vt.generate(&f->sd, &job, &r, &err), HN_ERROR);
}

/* Several models in host RAM (models_in_ram): switching back to a model
 * still open loads nothing; past the limit the least recently used closes;
 * results do not depend on what was open before. */
static void test_models_in_ram(void **state)
{
    fixture *f = *state;
    char sd1[1024], sd2[1024], sd1_abs[4096], sd2_abs[4096];
    golden_path(sd1, sizeof sd1, "models/tiny_sd1.f16.safetensors");
    golden_path(sd2, sizeof sd2, "models/tiny_sd2.f16.safetensors");
    assert_non_null(realpath(sd1, sd1_abs));
    assert_non_null(realpath(sd2, sd2_abs));
    json_t *settings = json_pack("{s:{s:s, s:s}}", "models", "one", sd1_abs, "two", sd2_abs);
    hn_error err = {0};
    assert_int_equal(cuda_sd_generator_vt.configure(&f->sd, settings, &err), HN_OK);
    json_decref(settings);
    f->conf.models_in_ram = 2;
    const char *order[] = {"one", "two", "one", "two", "one"};
    unsigned char *first = NULL;
    size_t first_len = 0;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        json_t *payload = json_pack("{s:s, s:i, s:i, s:i, s:s}", "prompt", "a cat", "seed", 3,
                                    "steps", 1, "width", 64, "sampler_name", "k_euler");
        hn_gen_job job = {.size = sizeof job, .model = order[i], .payload = payload};
        hn_gen_result res = {0};
        if (cuda_sd_generator_vt.generate(&f->sd, &job, &res, &err) != HN_OK)
            fail_msg("%s: %s", order[i], err.message);
        size_t len = (size_t)res.images[0].width * res.images[0].height * res.images[0].channels;
        if (strcmp(order[i], "one") == 0) {
            if (!first) {
                first = malloc(len);
                memcpy(first, res.images[0].pixels, len);
                first_len = len;
            } else {
                assert_int_equal(len, first_len);
                assert_memory_equal(res.images[0].pixels, first, len);
            }
        }
        cuda_sd_generator_vt.result_free(&f->sd, &res);
        json_decref(payload);
    }
    free(first);
    sd_model_cache_stats st;
    sd_model_cache_stats_get(f->sd.cache, &st);
    assert_int_equal((int)st.loads, 2);   /* both stayed open */
    assert_int_equal(st.open, 2);
    /* one model in RAM: every switch reopens */
    cuda_sd_generator_release(&f->sd);
    f->conf.models_in_ram = 1;
    for (size_t i = 0; i < 3; i++) {
        json_t *payload = json_pack("{s:s, s:i, s:i}", "prompt", "a cat", "steps", 1, "width", 64);
        hn_gen_job job = {.size = sizeof job, .model = order[i], .payload = payload};
        hn_gen_result res = {0};
        assert_int_equal(cuda_sd_generator_vt.generate(&f->sd, &job, &res, &err), HN_OK);
        cuda_sd_generator_vt.result_free(&f->sd, &res);
        json_decref(payload);
    }
    sd_model_cache_stats_get(f->sd.cache, &st);
    assert_true(st.loads == 3 && st.closed == 2 && st.open == 1);
}

static void test_seed_rule(void **state)
{
    (void)state;
    assert_int_equal(cuda_sd_seed("42"), 42);
    assert_int_equal(cuda_sd_seed("-42"), 42); /* int() then abs() */
    assert_int_equal(cuda_sd_seed("4294967296"), 1); /* >= 2^32: shifted right by 32 */
    assert_int_equal(cuda_sd_seed("abc"), 0x636261);
    assert_true(cuda_sd_seed(NULL) < 4294967296ull); /* random, 32 bits */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_rule),
        cmocka_unit_test_setup_teardown(test_models_and_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_payload_to_images, setup, teardown),
        cmocka_unit_test_setup_teardown(test_source_and_mask, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_and_bad_jobs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_models_in_ram, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
