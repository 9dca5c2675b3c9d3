/* broker: unit tests of the parts that need no running node: the hash map,
 * seeds, base64, bridge capabilities, image headers, the request schema, the
 * request parser and the legacy price. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "broker.h"

static void test_map_put_get_delete(void **st) {
    (void)st;
    br_map m;
    br_map_init(&m);
    enum { N = 5000 };
    static char keys[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        assert_int_equal(br_map_put(&m, keys[i], (void *)(intptr_t)(i + 1)), 0);
    }
    assert_int_equal(m.len, N);
    /* delete every third key; the others must stay reachable (backward shift) */
    for (int i = 0; i < N; i += 3)
        assert_ptr_equal(br_map_del(&m, keys[i]), (void *)(intptr_t)(i + 1));
    for (int i = 0; i < N; i++) {
        void *v = br_map_get(&m, keys[i]);
        if (i % 3 == 0)
            assert_null(v);
        else
            assert_ptr_equal(v, (void *)(intptr_t)(i + 1));
    }
    size_t pos = 0, seen = 0;
    while (br_map_next(&m, &pos, NULL, NULL))
        seen++;
    assert_int_equal(seen, m.len);
    assert_null(br_map_del(&m, "absent"));
    br_map_free(&m);
}

static void test_seed_rules(void **st) {
    (void)st;
    /* digits: the number itself while < 2^32 */
    assert_int_equal(br_seed_from_text("12345"), 12345);
    assert_int_equal(br_seed_from_text("-77"), 77);
    /* >= 2^32: shifted right by 32 until it fits: 2^40 + 5 -> 256 */
    assert_int_equal(br_seed_from_text("1099511627781"), 256);
    /* text: int.from_bytes(utf8, "little") -> "abc" = 0x636261 */
    assert_int_equal(br_seed_from_text("abc"), 0x636261);
    /* 5 bytes "hello": top limb is the fifth byte 'o' */
    assert_int_equal(br_seed_from_text("hello"), 'o');
    assert_int_equal(br_seed_reduce(((int64_t)1 << 33) + 1), 2);
    assert_int_equal(br_seed_reduce(-5), 5);
}

static void test_base64_roundtrip(void **st) {
    (void)st;
    const char *txt = "any carnal pleasure.";
    for (size_t len = 0; len <= strlen(txt); len++) {
        char *enc = br_b64_encode(txt, len);
        size_t out_len = 99;
        char *dec = br_b64_decode(enc, strlen(enc), &out_len);
        assert_non_null(dec);
        assert_int_equal(out_len, len);
        assert_memory_equal(dec, txt, len);
        free(enc);
        free(dec);
    }
    size_t n;
    assert_null(br_b64_decode("ab$d", 4, &n));
    assert_null(br_b64_decode("a", 1, &n));
    char *unpadded = br_b64_decode("YWJj\nZA", 7, &n);
    assert_non_null(unpadded);
    assert_int_equal(n, 4);
    assert_memory_equal(unpadded, "abcd", 4);
    free(unpadded);
}

static void test_bridge_caps(void **st) {
    (void)st;
    uint32_t k, p;
    uint64_t regen9 = br_bridge_caps("AI Horde Worker reGen:9.0.1:https://x", &k, &p);
    assert_true(regen9 & BR_CAPBIT(BR_CAP_R2));
    assert_true(regen9 & BR_CAPBIT(BR_CAP_FLUX));
    assert_false(regen9 & BR_CAPBIT(BR_CAP_RESTOREFORMER)); /* v13 */
    assert_true(k & (1u << br_sampler_index("k_euler")));
    assert_true(k & (1u << br_sampler_index("lcm")));
    uint64_t old = br_bridge_caps("AI Horde Worker:7:x", &k, &p);
    assert_true(old & BR_CAPBIT(BR_CAP_POST_PROCESSING));
    assert_false(old & BR_CAPBIT(BR_CAP_R2));
    assert_false(p & (1u << br_sampler_index("DDIM")));
    br_bridge_caps("AI Horde Worker:17:x", &k, &p);
    assert_true(p & (1u << br_sampler_index("DDIM")));
    assert_false(k & (1u << br_sampler_index("DDIM"))); /* DDIM only without karras */
    assert_int_equal(br_bridge_caps("someone else:99:x", &k, &p), 0);
    assert_int_equal(br_bridge_caps("garbage", &k, &p), 0);
    uint64_t own = br_bridge_caps("horde-node:0.1.0:https://example", &k, &p);
    assert_int_equal(own, BR_CAPBIT(BR_CAP_COUNT) - 1);
    assert_int_equal(k, (1u << BR_N_SAMPLERS) - 1);
    assert_true(br_bridge_multiplier("AI Horde Worker reGen:13.0.0:x") == 1.0);
    assert_true(br_bridge_multiplier("AI Horde Worker reGen:9.0.1:x") == 0.9);
    assert_true(br_bridge_multiplier("other:1:x") == 0.75);
}

static void test_image_sniff(void **st) {
    (void)st;
    size_t len;
    /* a 1x1 lossless WebP */
    unsigned char *webp = br_b64_decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==", 48, &len);
    br_image_info info;
    assert_int_equal(br_image_sniff(webp, len, &info), 0);
    assert_string_equal(info.format, "webp");
    assert_int_equal(info.width, 1);
    assert_int_equal(info.height, 1);
    free(webp);
    /* PNG header: 4000x3000 RGBA */
    unsigned char png[40] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13,
                             'I', 'H', 'D', 'R', 0, 0, 0x0f, 0xa0, 0, 0, 0x0b, 0xb8, 8, 6};
    assert_int_equal(br_image_sniff(png, sizeof(png), &info), 0);
    assert_int_equal(info.width, 4000);
    assert_int_equal(info.height, 3000);
    assert_true(info.alpha);
    png[25] = 2; /* RGB */
    assert_int_equal(br_image_sniff(png, sizeof(png), &info), 0);
    assert_false(info.alpha);
    assert_int_equal(br_image_sniff("hello world, not an image", 25, &info), -1);
}

static const char *err_for(json_t *errors, const char *path) {
    return json_string_value(json_object_get(errors, path));
}

static void test_async_schema_messages(void **st) {
    (void)st;
    json_t *body = json_loads("{\"prompt\": \"x\", \"params\": {\"width\": 513, \"steps\": 501,"
                              " \"sampler_name\": \"nope\", \"n\": \"2\", \"loras\": [{}]},"
                              " \"nsfw\": 1, \"models\": [\"a\", 2]}",
                              0, NULL);
    json_t *e = br_validate_async_schema(body);
    assert_non_null(e);
    assert_string_equal(err_for(e, "params.width"), "513 is not a multiple of 64");
    assert_string_equal(err_for(e, "params.steps"), "501 is greater than the maximum of 500");
    assert_non_null(strstr(err_for(e, "params.sampler_name"), "'nope' is not one of ['k_lms'"));
    assert_string_equal(err_for(e, "params.n"), "'2' is not of type 'integer'");
    assert_string_equal(err_for(e, "params.loras.0.name"), "'name' is a required property");
    assert_string_equal(err_for(e, "nsfw"), "1 is not of type 'boolean'");
    assert_string_equal(err_for(e, "models.1"), "2 is not of type 'string'");
    json_decref(e);
    json_decref(body);

    body = json_loads("{\"params\": {}}", 0, NULL);
    e = br_validate_async_schema(body);
    assert_string_equal(err_for(e, "prompt"), "'prompt' is a required property");
    json_decref(e);
    json_decref(body);

    body = json_loads("[1]", 0, NULL);
    e = br_validate_async_schema(body);
    assert_string_equal(err_for(e, ""), "[1] is not of type 'object'");
    json_decref(e);
    json_decref(body);

    body = json_loads("{\"prompt\": \"ok\", \"params\": {\"width\": 1024.0, \"cfg_scale\": 7}}", 0,
                      NULL);
    assert_null(br_validate_async_schema(body)); /* 1024.0 is an integer to jsonschema */
    json_decref(body);
}

static void test_request_parse_and_price(void **st) {
    (void)st;
    json_t *body = json_loads(
        "{\"prompt\": \"A Cat###dog\", \"params\": {\"width\": 512, \"height\": 768, \"steps\": 20,"
        " \"sampler_name\": \"k_heun\", \"n\": 3, \"seed\": \"abc\", \"post_processing\":"
        " [\"RealESRGAN_x4plus\", \"GFPGAN\"], \"loras\": [{\"name\": \"1\", \"is_version\": true}]},"
        " \"models\": [\"m1\"], \"workers\": [\"0F6A1B7C-1111-4222-8333-444455556666\"],"
        " \"nsfw\": false, \"r2\": false, \"_has_source\": true}",
        0, NULL);
    br_req_spec s;
    assert_int_equal(br_request_parse(NULL, body, &s), 0);
    assert_int_equal(s.accurate_steps, 40); /* k_heun counts double */
    assert_true(s.things == 512.0 * 768 * 40);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.n_models, 1);
    assert_int_equal(s.n_workers, 1);
    assert_string_equal(s.workers[0], "0f6a1b7c-1111-4222-8333-444455556666");
    assert_false(s.nsfw);
    assert_false(s.r2);
    assert_true(s.has_source);
    assert_true(s.has_seed);
    assert_int_equal(s.seed, 0x636261);
    assert_int_equal(s.n_pp, 2);
    assert_int_equal(s.n_upscalers, 1);
    assert_true(s.heavy_pp);
    assert_true(s.lora_versions);
    assert_string_equal(s.prompt_lc, "a cat###dog");
    /* legacy price: 0.1232*40 + r*0.1232*40*8.75, x1.2 per post-processor, +3 per lora */
    double px = 512.0 * 768;
    double r = pow(px - 4096, 1.75) / pow(1048576.0 - 4096, 1.75);
    double cost = br_round(0.1232 * 40 + r * 0.1232 * 40 * 8.75, 2);
    cost = br_round(cost * 1.2, 2);
    cost = br_round(cost * 1.2, 2);
    assert_true(fabs(br_price_legacy(&s) - (cost + 3)) < 1e-9);
    /* burn: x1.3 for a source image, x1.05 for the upscaler, +1 tax */
    assert_true(fabs(br_price_burn(&s, 10) - (10 * 1.3 * 1.05 + 1)) < 1e-9);
    br_req_spec_free(&s);
    json_decref(body);
}

static void test_python_round(void **st) {
    (void)st;
    assert_true(br_round(2.5, 0) == 2.0);
    assert_true(br_round(3.5, 0) == 4.0);
    assert_true(br_round(2.675, 2) == 2.67);
    assert_true(br_round(7.126, 2) == 7.13);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_put_get_delete),
        cmocka_unit_test(test_seed_rules),
        cmocka_unit_test(test_base64_roundtrip),
        cmocka_unit_test(test_bridge_caps),
        cmocka_unit_test(test_image_sniff),
        cmocka_unit_test(test_async_schema_messages),
        cmocka_unit_test(test_request_parse_and_price),
        cmocka_unit_test(test_python_round),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
