/* worker: model reference parsing, models_to_load resolution and local
 * checkpoints (models.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "models.h"

static const char *small_ref =
    "{"
    " \"Base\": {\"name\": \"Base\", \"baseline\": \"stable diffusion 1\", \"nsfw\": false,"
    "   \"inpainting\": false, \"size_on_disk_bytes\": 1234,"
    "   \"config\": {\"files\": [{\"path\": \"base.ckpt\", \"sha256sum\": \"ABCDEF0123\"},"
    "                            {\"path\": \"v1-inference.yaml\"},"
    "                            {\"path\": \"../escape.ckpt\", \"sha256sum\": \"00\"}],"
    "              \"download\": [{\"file_name\": \"base.ckpt\", \"file_path\": \"\","
    "                              \"file_url\": \"https://example.org/base.ckpt\"},"
    "                             {\"file_name\": \"v1-inference.yaml\","
    "                              \"file_url\": \"https://example.org/v1.yaml\"}]}},"
    " \"Paint\": {\"name\": \"Paint\", \"baseline\": \"stable diffusion 1\", \"nsfw\": true,"
    "   \"inpainting\": true, \"config\": {\"files\": [{\"path\": \"paint.safetensors\"}],"
    "   \"download\": []}},"
    " \"XL\": {\"name\": \"XL\", \"baseline\": \"stable_diffusion_xl\", \"nsfw\": true,"
    "   \"config\": {\"files\": [{\"path\": \"xl.safetensors\", \"sha256sum\": \"11\"}]}},"
    " \"Two\": {\"name\": \"Two\", \"baseline\": \"stable diffusion 2\", \"nsfw\": false,"
    "   \"config\": {\"files\": [{\"path\": \"two.ckpt\"}]}},"
    " \"Flux\": {\"name\": \"Flux\", \"baseline\": \"flux_1\", \"nsfw\": false,"
    "   \"config\": {\"files\": [{\"path\": \"flux.safetensors\"}]}},"
    " \"SDXL_beta::stability.ai#6901\": {\"name\": \"SDXL_beta::stability.ai#6901\","
    "   \"baseline\": \"stable_diffusion_xl\", \"config\": {\"files\": []}}"
    "}";

static void load_small(wk_reference *ref) {
    json_error_t je;
    json_t *root = json_loads(small_ref, 0, &je);
    assert_non_null(root);
    char err[256];
    assert_int_equal(wk_reference_parse(root, ref, err, sizeof err), 0);
    json_decref(root);
}

static void test_reference_parse(void **state) {
    (void)state;
    wk_reference ref;
    load_small(&ref);
    assert_int_equal(ref.n, 6);
    const wk_ref_model *m = wk_reference_find(&ref, "Base");
    assert_non_null(m);
    assert_string_equal(m->baseline, "stable diffusion 1");
    assert_int_equal(m->size_on_disk, 1234);
    /* weights first, then the yaml (it has a URL); the ../ path is refused */
    assert_int_equal(m->n_files, 2);
    assert_int_equal(m->n_weights, 1);
    assert_string_equal(m->files[0].path, "base.ckpt");
    assert_true(m->files[0].weight);
    assert_string_equal(m->files[1].path, "v1-inference.yaml");
    assert_false(m->files[1].weight);
    assert_string_equal(m->files[1].url, "https://example.org/v1.yaml");
    assert_string_equal(m->files[0].sha256, "abcdef0123"); /* lower-cased */
    assert_string_equal(m->files[0].url, "https://example.org/base.ckpt");
    const wk_ref_model *p = wk_reference_find(&ref, "Paint");
    assert_true(p->inpainting && p->nsfw);
    assert_null(p->files[0].sha256);
    assert_null(p->files[0].url);
    assert_null(wk_reference_find(&ref, "Nope"));
    wk_reference_free(&ref);

    char err[256];
    json_t *arr = json_array();
    assert_int_equal(wk_reference_parse(arr, &ref, err, sizeof err), -1);
    json_decref(arr);
}

static void collect(void *ud, const char *msg) {
    int *n = ud;
    (void)msg;
    (*n)++;
}

static void assert_names(const wk_names *l, const char *const *want) {
    size_t n = 0;
    while (want[n])
        n++;
    assert_int_equal(l->n, n);
    for (size_t i = 0; i < n; i++)
        assert_true(wk_names_has(l, want[i]));
}

static void test_resolve_meta(void **state) {
    (void)state;
    wk_reference ref;
    load_small(&ref);
    wk_names out;
    int warns = 0;

    const char *all[] = {"all", NULL};
    assert_int_equal(wk_models_resolve(&ref, all, NULL, NULL, false, NULL, &out, collect, &warns), 0);
    /* everything but the large model and the always-skipped SDXL beta */
    assert_names(&out, (const char *const[]){"Base", "Paint", "XL", "Two", NULL});
    wk_names_free(&out);

    assert_int_equal(wk_models_resolve(&ref, all, NULL, NULL, true, NULL, &out, collect, &warns), 0);
    assert_true(wk_names_has(&out, "Flux"));
    wk_names_free(&out);

    const char *sd15[] = {"ALL SD15 Models", NULL};
    assert_int_equal(wk_models_resolve(&ref, sd15, NULL, NULL, false, NULL, &out, collect, &warns), 0);
    assert_names(&out, (const char *const[]){"Base", "Paint", NULL});
    wk_names_free(&out);

    const char *mix[] = {"all sdxl", "all inpainting", "all sd21 model", NULL};
    assert_int_equal(wk_models_resolve(&ref, mix, NULL, NULL, false, NULL, &out, collect, &warns), 0);
    assert_names(&out, (const char *const[]){"XL", "Paint", "Two", NULL});
    wk_names_free(&out);

    const char *sfw[] = {"all sfw", NULL};
    const char *skip[] = {"Two", NULL};
    assert_int_equal(wk_models_resolve(&ref, sfw, skip, NULL, false, NULL, &out, collect, &warns), 0);
    assert_names(&out, (const char *const[]){"Base", NULL});
    wk_names_free(&out);

    const char *nsfw[] = {"all nsfw", NULL};
    assert_int_equal(wk_models_resolve(&ref, nsfw, NULL, NULL, false, NULL, &out, collect, &warns), 0);
    assert_names(&out, (const char *const[]){"Paint", "XL", NULL});
    wk_names_free(&out);
    assert_int_equal(warns, 0);
    wk_reference_free(&ref);
}

static void test_resolve_top_bottom(void **state) {
    (void)state;
    wk_reference ref;
    load_small(&ref);
    json_t *pop = json_pack("{s:i, s:i, s:i, s:i, s:i}", "Base", 10, "XL", 50, "Two", 5, "Flux",
                            999, "Unknown", 1000);
    wk_names out;
    int warns = 0;
    const char *top[] = {"top 2", NULL};
    assert_int_equal(wk_models_resolve(&ref, top, NULL, pop, false, NULL, &out, collect, &warns), 0);
    /* Flux is large, Unknown not in the reference */
    assert_names(&out, (const char *const[]){"XL", "Base", NULL});
    wk_names_free(&out);
    const char *bottom[] = {"BOTTOM 1", NULL};
    assert_int_equal(wk_models_resolve(&ref, bottom, NULL, pop, false, NULL, &out, collect, &warns), 0);
    assert_names(&out, (const char *const[]){"Two", NULL});
    wk_names_free(&out);
    assert_int_equal(warns, 0);
    /* without statistics: nothing, and a warning */
    assert_int_equal(wk_models_resolve(&ref, top, NULL, NULL, false, NULL, &out, collect, &warns), 0);
    assert_int_equal(out.n, 0);
    assert_int_equal(warns, 1);
    wk_names_free(&out);
    json_decref(pop);
    wk_reference_free(&ref);
}

static void test_resolve_explicit(void **state) {
    (void)state;
    wk_reference ref;
    load_small(&ref);
    wk_names local = {0}, out;
    wk_names_add(&local, "my_local");
    int warns = 0;
    const char *load[] = {"Base", "my_local", "not_anywhere", "top two", NULL};
    assert_int_equal(wk_models_resolve(&ref, load, NULL, NULL, false, &local, &out, collect, &warns),
                     0);
    /* "top two" is not a meta instruction: an unknown name */
    assert_names(&out, (const char *const[]){"Base", "my_local", NULL});
    assert_int_equal(warns, 2);
    wk_names_free(&out);
    /* no reference at all: only local names survive, meta instructions warn */
    warns = 0;
    const char *load2[] = {"my_local", "all", NULL};
    assert_int_equal(wk_models_resolve(NULL, load2, NULL, NULL, false, &local, &out, collect, &warns),
                     0);
    assert_names(&out, (const char *const[]){"my_local", NULL});
    assert_int_equal(warns, 1);
    wk_names_free(&out);
    wk_names_free(&local);
    wk_reference_free(&ref);
}

/* The public reference, when the shared data is there: "all sd15" is every
 * SD1 model, each weight file has a download URL. */
static void test_public_reference(void **state) {
    (void)state;
    const char *shared = getenv("HN_SHARED") ? getenv("HN_SHARED") : "../shared";
    char path[1024];
    snprintf(path, sizeof path, "%s/data/model-reference/stable_diffusion.json", shared);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root)
        skip();
    wk_reference ref;
    char err[256];
    assert_int_equal(wk_reference_parse(root, &ref, err, sizeof err), 0);
    assert_int_equal(ref.n, json_object_size(root));
    size_t sd1 = 0;
    const char *key;
    json_t *rec;
    json_object_foreach(root, key, rec) {
        const char *b = json_string_value(json_object_get(rec, "baseline"));
        sd1 += b && strcmp(b, "stable diffusion 1") == 0;
    }
    wk_names out;
    const char *load[] = {"all sd15", NULL};
    assert_int_equal(wk_models_resolve(&ref, load, NULL, NULL, false, NULL, &out, NULL, NULL), 0);
    assert_int_equal(out.n, sd1);
    assert_true(sd1 > 0);
    for (size_t i = 0; i < out.n; i++) {
        const wk_ref_model *m = wk_reference_find(&ref, out.v[i]);
        assert_non_null(m);
        assert_true(m->n_weights >= 1);
        assert_true(m->files[0].weight);
        assert_non_null(m->files[0].url);
        assert_non_null(m->files[0].sha256);
        assert_int_equal(strlen(m->files[0].sha256), 64);
    }
    wk_names_free(&out);
    wk_reference_free(&ref);
    json_decref(root);
}

static void write_bytes(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void test_scan_and_sanity(void **state) {
    (void)state;
    char dir[] = "/tmp/wk_test_scanXXXXXX";
    assert_non_null(mkdtemp(dir));
    char p[512];
    /* a well-formed safetensors head: 8-byte length + JSON */
    const char *hdr = "{\"__metadata__\":{}}";
    unsigned char st[64] = {0};
    st[0] = (unsigned char)strlen(hdr);
    memcpy(st + 8, hdr, strlen(hdr));
    snprintf(p, sizeof p, "%s/a.safetensors", dir);
    write_bytes(p, st, 8 + strlen(hdr));
    snprintf(p, sizeof p, "%s/a.ckpt", dir);
    write_bytes(p, "PK\x03\x04rest", 8);
    snprintf(p, sizeof p, "%s/b.ckpt", dir);
    write_bytes(p, "PK\x03\x04rest", 8);
    snprintf(p, sizeof p, "%s/.hidden.ckpt", dir);
    write_bytes(p, "PK\x03\x04", 4);
    snprintf(p, sizeof p, "%s/notes.txt", dir);
    write_bytes(p, "hello", 5);
    /* a header that claims more than the file has */
    unsigned char bad[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
    snprintf(p, sizeof p, "%s/trunc.safetensors", dir);
    write_bytes(p, bad, 10);
    snprintf(p, sizeof p, "%s/garbage.ckpt", dir);
    write_bytes(p, "garbage!", 8);

    wk_names names, paths;
    assert_int_equal(wk_scan_checkpoints(dir, &names, &paths), 0);
    assert_names(&names, (const char *const[]){"a", "b", "trunc", "garbage", NULL});
    for (size_t i = 0; i < names.n; i++) {
        const char *why = wk_checkpoint_sane(paths.v[i]);
        if (strcmp(names.v[i], "a") == 0) {
            assert_non_null(strstr(paths.v[i], "a.safetensors")); /* wins over a.ckpt */
            assert_null(why);
        } else if (strcmp(names.v[i], "b") == 0) {
            assert_null(why);
        } else {
            assert_non_null(why);
        }
    }
    wk_names_free(&names);
    wk_names_free(&paths);
    /* an absent folder is empty */
    assert_int_equal(wk_scan_checkpoints("/nonexistent/wk", &names, &paths), 0);
    assert_int_equal(names.n, 0);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_safe_names(void **state) {
    (void)state;
    assert_true(wk_safe_file_name("model_1_5.ckpt"));
    assert_false(wk_safe_file_name("../x.ckpt"));
    assert_false(wk_safe_file_name("a/b.ckpt"));
    assert_false(wk_safe_file_name(".hidden"));
    assert_false(wk_safe_file_name(""));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_parse),   cmocka_unit_test(test_resolve_meta),
        cmocka_unit_test(test_resolve_top_bottom), cmocka_unit_test(test_resolve_explicit),
        cmocka_unit_test(test_public_reference),  cmocka_unit_test(test_scan_and_sanity),
        cmocka_unit_test(test_safe_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
