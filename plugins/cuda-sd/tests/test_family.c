/* test_family.c - family detection, architecture numbers and parameter
 * counts, checked against the descriptions of the golden tiny models
 * (golden/models/tiny_*.json, iterated, not named here), plus synthetic
 * checkpoints for the cases the goldens do not cover (SDXL, incomplete,
 * inconsistent, sidecar YAML, .ckpt global_step). */
#include "golden.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/family.h"
#include "model_writers.h"

static json_t *jpath(json_t *j, const char *a, const char *b, const char *c, const char *d, const char *e)
{
    const char *keys[] = {a, b, c, d, e};
    for (int i = 0; i < 5 && keys[i] && j; i++) j = json_object_get(j, keys[i]);
    return j;
}

static int jint(json_t *j) { return (int)json_integer_value(j); }

/* Checks one detected file against its golden description. */
static void check_against_json(const char *rel, json_t *j, const sd_family_info *fi, bool with_sidecar)
{
    const char *kind = json_string_value(json_object_get(j, "kind"));
    json_t *unet = jpath(j, "ldm_config", "model", "params", "unet_config", "params");
    json_t *te = json_object_get(j, "text_encoder");
    json_t *vae = json_object_get(j, "diffusers_vae_config");
    assert_non_null(unet);

    sd_family want_family = strncmp(kind, "sd2", 3) == 0 ? SD_FAMILY_SD2 : SD_FAMILY_SD1;
    if (fi->family != want_family) fail_msg("%s: family %s, want %s", rel, sd_family_name(fi->family), kind);
    assert_true(fi->supported);
    const char *pt = json_string_value(json_object_get(j, "prediction_type"));
    sd_prediction want_pred = strcmp(pt, "v_prediction") == 0 ? SD_PRED_V : SD_PRED_EPS;
    if (fi->prediction != want_pred)
        fail_msg("%s: prediction %s (%s), want %s", rel, sd_prediction_name(fi->prediction), fi->prediction_source, pt);

    /* parameter counts: the golden num_params is UNet + VAE + text encoder */
    int64_t total = fi->params_unet + fi->params_vae + fi->params_text;
    assert_int_equal(total, json_integer_value(json_object_get(j, "num_params")));
    assert_true(fi->params_unet > 0 && fi->params_vae > 0 && fi->params_text > 0 && fi->params_other > 0);

    /* UNet architecture */
    assert_int_equal(fi->unet.in_channels, jint(json_object_get(unet, "in_channels")));
    assert_int_equal(fi->unet.out_channels, jint(json_object_get(unet, "out_channels")));
    assert_int_equal(fi->unet.model_channels, jint(json_object_get(unet, "model_channels")));
    assert_int_equal(fi->inpainting, fi->unet.in_channels == 9);
    assert_int_equal(fi->context_dim, jint(json_object_get(unet, "context_dim")));
    assert_int_equal(fi->unet.num_res_blocks, jint(json_object_get(unet, "num_res_blocks")));
    json_t *mult = json_object_get(unet, "channel_mult");
    assert_int_equal(fi->unet.num_levels, (int)json_array_size(mult));
    for (int l = 0; l < fi->unet.num_levels; l++) {
        assert_int_equal(fi->unet.channel_mult[l], jint(json_array_get(mult, (size_t)l)));
        /* ldm attention_resolutions lists downsampling factors 2^level */
        bool att = false;
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(unet, "attention_resolutions"), i, r) att |= jint(r) == (1 << l);
        assert_int_equal(fi->unet.attention[l], att);
        if (att) assert_int_equal(fi->unet.transformer_depth[l], jint(json_object_get(unet, "transformer_depth")));
    }
    assert_int_equal(fi->unet.linear_proj, json_is_true(json_object_get(unet, "use_linear_in_transformer")));
    assert_int_equal(fi->unet.time_embed_dim, 4 * fi->unet.model_channels);
    if (with_sidecar) {
        json_t *nh = json_object_get(unet, "num_heads"), *hc = json_object_get(unet, "num_head_channels");
        if (json_is_integer(nh) && jint(nh) > 0) assert_int_equal(fi->unet.num_heads, jint(nh));
        if (json_is_integer(hc) && jint(hc) > 0) assert_int_equal(fi->unet.head_dim, jint(hc));
    }

    /* VAE */
    json_t *boc = json_object_get(vae, "block_out_channels");
    assert_int_equal(fi->vae.num_levels, (int)json_array_size(boc));
    for (int l = 0; l < fi->vae.num_levels; l++)
        assert_int_equal(fi->vae.ch * fi->vae.ch_mult[l], jint(json_array_get(boc, (size_t)l)));
    assert_int_equal(fi->vae.num_res_blocks, jint(json_object_get(vae, "layers_per_block")));
    assert_int_equal(fi->vae.z_channels, jint(json_object_get(vae, "latent_channels")));
    assert_true(fabs(fi->vae.scale_factor - json_number_value(json_object_get(j, "scale_factor"))) < 1e-7);

    /* text encoder */
    int width = jint(json_object_get(te, "hidden_size")) ? jint(json_object_get(te, "hidden_size"))
                                                          : jint(json_object_get(te, "width"));
    int layers = jint(json_object_get(te, "num_hidden_layers")) ? jint(json_object_get(te, "num_hidden_layers"))
                                                                : jint(json_object_get(te, "layers"));
    int heads = jint(json_object_get(te, "num_attention_heads")) ? jint(json_object_get(te, "num_attention_heads"))
                                                                 : jint(json_object_get(te, "heads"));
    assert_int_equal(fi->text.width, width);
    assert_int_equal(fi->text.layers, layers);
    if (with_sidecar) assert_int_equal(fi->text.heads, heads);
    assert_int_equal(fi->text.pad_id, jint(json_object_get(te, "pad_id")));
    assert_int_equal(fi->text.vocab_size, jint(json_object_get(te, "vocab_size")));
    assert_int_equal(fi->text.layout, want_family == SD_FAMILY_SD1 ? SD_TEXT_CLIP_HF : SD_TEXT_OPENCLIP);
    assert_int_equal(fi->text.default_clip_skip, want_family == SD_FAMILY_SD1 ? 1 : 2);
}

/* For every golden model description and each of its files: detection
 * with the sidecar found beside the file, and from the tensors alone. */
static void test_golden_models(void **state)
{
    (void)state;
    char dir[1024];
    golden_path(dir, sizeof dir, "models");
    DIR *d = opendir(dir);
    if (!d) fail_msg("cannot list %s", dir);
    struct dirent *e;
    int checked = 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".json") != 0) continue;
        char rel[512];
        snprintf(rel, sizeof rel, "models/%s", e->d_name);
        json_t *j = golden_json(rel);
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(j, "files"), k, v) {
            snprintf(rel, sizeof rel, "models/%s", json_string_value(v));
            sd_model_file *f = golden_open(rel);
            sd_family_info fi;
            char err[512];
            if (sd_family_detect(f, &fi, err, sizeof err)) fail_msg("%s", err);
            assert_non_null(strstr(fi.config_path, ".json"));          /* the sidecar was found */
            check_against_json(rel, j, &fi, true);
            assert_int_equal(sd_family_check_supported(f, &fi, err, sizeof err), 0);

            /* tensors only: same family and architecture; prediction by the
             * tensor rules (SD2: ComfyUI's norm1.bias heuristic, which
             * happens to hold for the golden SD2 model too) */
            if (sd_family_detect_with_config(f, "", &fi, err, sizeof err)) fail_msg("%s", err);
            assert_string_equal(fi.config_path, "");
            check_against_json(rel, j, &fi, false);
            if (fi.family == SD_FAMILY_SD2) assert_non_null(strstr(fi.prediction_source, "norm1.bias"));

            /* the dtype summary matches the file */
            size_t total = 0;
            for (int dt = 0; dt < SD_DTYPE_COUNT; dt++) total += fi.dtype_tensors[dt];
            assert_int_equal(total, sd_model_file_count(f));
            assert_true(fi.unet_dtype == (strcmp(k, "f16") == 0 ? SD_DTYPE_F16 : SD_DTYPE_F32));

            size_t need = sd_family_describe(f, &fi, NULL, 0);
            char *text = malloc(need + 1);
            assert_int_equal(sd_family_describe(f, &fi, text, need + 1), need);
            assert_int_equal(strlen(text), need);
            assert_non_null(strstr(text, sd_family_name(fi.family)));
            assert_non_null(strstr(text, fi.prediction == SD_PRED_V ? "v-prediction" : "epsilon"));
            char num[32];
            snprintf(num, sizeof num, "%lld", (long long)fi.params_unet % 1000);
            assert_non_null(strstr(text, num));
            /* truncated output stays a terminated prefix */
            char small[40];
            assert_int_equal(sd_family_describe(f, &fi, small, sizeof small), need);
            assert_int_equal(strlen(small), sizeof small - 1);
            assert_memory_equal(small, text, sizeof small - 1);
            free(text);
            sd_model_file_close(f);
            checked++;
        }
        json_decref(j);
    }
    closedir(d);
    assert_true(checked >= 3);
}

/* ---- synthetic checkpoints ------------------------------------------------------ */
#define U "model.diffusion_model."

/* The smallest key set that reads as a UNet: conv_in, one res block with a
 * transformer, out conv, time embedding. ctx = context dim, in_ch = input
 * channels, linear = SD2-style projections. */
static size_t unet_entries(st_entry *e, int ctx, int in_ch, bool linear)
{
    size_t n = 0;
    e[n++] = (st_entry){U "input_blocks.0.0.weight", "F16", 4, {8, in_ch, 3, 3}, NULL, (size_t)8 * in_ch * 9 * 2};
    e[n++] = (st_entry){U "input_blocks.1.0.in_layers.0.weight", "F16", 1, {8}, NULL, 16};
    e[n++] = (st_entry){U "input_blocks.1.0.out_layers.3.weight", "F16", 4, {8, 8, 3, 3}, NULL, 8 * 8 * 9 * 2};
    e[n++] = (st_entry){U "input_blocks.1.1.proj_in.weight", "F16", linear ? 2 : 4, {8, 8, 1, 1}, NULL, 8 * 8 * 2};
    e[n++] = (st_entry){U "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "F16", 2, {8, ctx}, NULL,
                        (size_t)8 * ctx * 2};
    e[n++] = (st_entry){U "out.2.weight", "F16", 4, {4, 8, 3, 3}, NULL, 4 * 8 * 9 * 2};
    e[n++] = (st_entry){U "time_embed.0.weight", "F16", 2, {32, 8}, NULL, 32 * 8 * 2};
    return n;
}

static void detect_memory(const mw_buf *b, const char *name, sd_family_info *fi, int want_rc, char *err, size_t errlen)
{
    sd_model_file *f;
    char e2[512];
    if (sd_model_file_open_memory(b->p, b->n, name, &f, e2, sizeof e2)) fail_msg("%s", e2);
    int rc = sd_family_detect_with_config(f, "", fi, err, errlen);
    if (rc != want_rc) fail_msg("%s: detect returned %d (%s)", name, rc, err);
    if (rc == 0 && !fi->supported) {
        assert_int_equal(sd_family_check_supported(f, fi, err, errlen), -1);
        assert_non_null(strstr(err, name));
    }
    sd_model_file_close(f);
}

static void test_sdxl_and_unknown(void **state)
{
    (void)state;
    st_entry e[16];
    size_t n = unet_entries(e, 2048, 4, true);
    e[n++] = (st_entry){"conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight", "F16", 2,
                        {24, 8}, NULL, 24 * 8 * 2};
    mw_buf b = {0};
    st_build(&b, e, n, NULL);
    sd_family_info fi;
    char err[512];
    detect_memory(&b, "xl.safetensors", &fi, 0, err, sizeof err);
    assert_int_equal(fi.family, SD_FAMILY_SDXL);
    assert_false(fi.supported);
    assert_non_null(strstr(err, "SDXL"));
    assert_non_null(strstr(err, "not supported yet"));

    /* no UNet at all: unknown */
    st_entry lora[] = {{"lora_unet_down_blocks_0.alpha", "F32", 0, {0}, NULL, 4}};
    st_build(&b, lora, 1, NULL);
    detect_memory(&b, "lora.safetensors", &fi, 0, err, sizeof err);
    assert_int_equal(fi.family, SD_FAMILY_UNKNOWN);
    assert_non_null(strstr(err, "no UNet"));

    /* half a VAE is inconsistent */
    st_entry half_vae[] = {{"first_stage_model.encoder.conv_in.weight", "F32", 4, {4, 3, 3, 3}, NULL, 4 * 27 * 4}};
    st_build(&b, half_vae, 1, NULL);
    detect_memory(&b, "vae.safetensors", &fi, -1, err, sizeof err);
    assert_non_null(strstr(err, "decoder.conv_in"));

    /* a UNet alone (context 768): SD1, but not runnable */
    n = unet_entries(e, 768, 9, false);
    st_build(&b, e, n, NULL);
    detect_memory(&b, "unet.safetensors", &fi, 0, err, sizeof err);
    assert_int_equal(fi.family, SD_FAMILY_SD1);
    assert_true(fi.inpainting);
    assert_false(fi.supported);
    assert_non_null(strstr(err, "incomplete"));

    /* inconsistent: UNet tensors without conv_in */
    n = unet_entries(e, 768, 4, false);
    st_build(&b, e + 1, n - 1, NULL);
    detect_memory(&b, "broken.safetensors", &fi, -1, err, sizeof err);
    assert_non_null(strstr(err, "broken.safetensors"));
    assert_non_null(strstr(err, "input_blocks.0.0.weight"));
    mw_buf_free(&b);
}

/* A sidecar ldm YAML beside the file decides prediction and heads. */
static void test_yaml_sidecar(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_family_XXXXXX";
    assert_non_null(mkdtemp(dir));
    st_entry e[16];
    size_t n = unet_entries(e, 1024, 4, true);
    mw_buf b = {0};
    st_build(&b, e, n, NULL);
    char model[256], yaml[256];
    snprintf(model, sizeof model, "%s/v2-768.fp16.safetensors", dir);
    snprintf(yaml, sizeof yaml, "%s/v2-768.yaml", dir);
    assert_int_equal(mw_write_file(model, &b), 0);
    FILE *y = fopen(yaml, "w");
    fputs("model:\n  params:\n    parameterization: \"v\"  # 768-v\n    unet_config:\n      params:\n"
          "        num_head_channels: 64 # need to fix for flash-attn\n        context_dim: 1024\n", y);
    fclose(y);
    sd_model_file *f;
    char err[512];
    assert_int_equal(sd_model_file_open(model, &f, err, sizeof err), 0);
    sd_family_info fi;
    assert_int_equal(sd_family_detect(f, &fi, err, sizeof err), 0);
    assert_int_equal(fi.family, SD_FAMILY_SD2);
    assert_int_equal(fi.prediction, SD_PRED_V);
    assert_string_equal(fi.config_path, yaml);
    assert_int_equal(fi.unet.head_dim, 64);
    assert_int_equal(fi.unet.num_heads, -1);
    /* an explicit config that does not exist is an error naming it */
    assert_int_equal(sd_family_detect_with_config(f, "/nonexistent/cfg.yaml", &fi, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/cfg.yaml"));
    sd_model_file_close(f);
    /* a broken JSON sidecar is reported, not ignored */
    char json[256];
    snprintf(json, sizeof json, "%s/v2-768.fp16.json", dir);
    y = fopen(json, "w");
    fputs("{\"prediction_type\": ", y);
    fclose(y);
    assert_int_equal(sd_model_file_open(model, &f, err, sizeof err), 0);
    assert_int_equal(sd_family_detect(f, &fi, err, sizeof err), -1);
    assert_non_null(strstr(err, json));
    sd_model_file_close(f);
    unlink(json);
    unlink(yaml);
    unlink(model);
    rmdir(dir);
    mw_buf_free(&b);
}

/* SD2 .ckpt: global_step 875000 is the 512-base (eps) model, others v. */
static void test_ckpt_global_step(void **state)
{
    (void)state;
    for (int base = 0; base <= 1; base++) {
        mw_buf pk = {0};
        pk_proto(&pk);
        pk_op(&pk, '}');
        pk_op(&pk, '(');
        pk_str(&pk, "global_step");
        pk_int(&pk, base ? 875000 : 140000);
        pk_str(&pk, "state_dict");
        pk_op(&pk, '}');
        pk_op(&pk, '(');
        st_entry e[16];
        size_t n = unet_entries(e, 1024, 4, true);
        for (size_t i = 0; i < n; i++) {
            pk_str(&pk, e[i].name);
            int64_t stride[4];
            int64_t acc = 1;
            for (int d = e[i].ndim - 1; d >= 0; d--) { stride[d] = acc; acc *= e[i].shape[d]; }
            pk_tensor(&pk, "HalfStorage", "0", 4096, 0, e[i].shape, stride, e[i].ndim);
        }
        /* a minimal OpenCLIP text encoder */
        static const struct { const char *name; int64_t rows; } text[] = {
            {"cond_stage_model.model.token_embedding.weight", 16},
            {"cond_stage_model.model.positional_embedding", 77},
            {"cond_stage_model.model.transformer.resblocks.0.mlp.c_fc.weight", 4},
            {"cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", 3},
        };
        for (size_t i = 0; i < 4; i++) {
            pk_str(&pk, text[i].name);
            pk_tensor(&pk, "HalfStorage", "0", 77 * 1024, 0, (int64_t[]){text[i].rows, 1024}, (int64_t[]){1024, 1}, 2);
        }
        pk_op(&pk, 'u');
        pk_op(&pk, 'u');
        pk_op(&pk, '.');
        static uint16_t storage[77 * 1024];
        zipw z = {0};
        zipw_add(&z, "sd/data.pkl", pk.p, pk.n, 0);
        zipw_add(&z, "sd/data/0", storage, sizeof storage, 0);
        zipw_finish(&z);
        sd_model_file *f;
        char err[512];
        if (sd_model_file_open_memory(z.out.p, z.out.n, "v2.ckpt", &f, err, sizeof err)) fail_msg("%s", err);
        sd_family_info fi;
        assert_int_equal(sd_family_detect_with_config(f, "", &fi, err, sizeof err), 0);
        assert_int_equal(fi.family, SD_FAMILY_SD2);
        assert_int_equal(fi.prediction, base ? SD_PRED_EPS : SD_PRED_V);
        assert_non_null(strstr(fi.prediction_source, "global_step"));
        sd_model_file_close(f);
        mw_buf_free(&z.out);
        mw_buf_free(&pk);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_models),
        cmocka_unit_test(test_sdxl_and_unknown),
        cmocka_unit_test(test_yaml_sidecar),
        cmocka_unit_test(test_ckpt_global_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
