/* clip.c - SD1 CLIP / SD2 OpenCLIP text encoders (see clip.h). */
#include "engine/clip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/net_common.h"

typedef struct clip_block {
    sd_layer_w ln1, ln2;
    sd_layer_w q, k, v, o;
    sd_layer_w fc1, fc2;
} clip_block;

struct sd_text_encoder {
    sd_backend *be;
    int width, layers, heads, context, mlp;
    sd_activation act;
    const sd_tensor_info *tok_emb, *pos_emb;
    sd_layer_w final_ln;
    clip_block *blocks;
    /* OpenCLIP stores q/k/v as one [3D, D] in_proj; these are row slices of
     * it (views into the mapped data), 6 per block. */
    sd_tensor_info *slices;
};

/* A view of rows [row0, row0+rows) of a 2-D (or 1-D) tensor. */
static void slice_rows(const sd_tensor_info *t, int64_t row0, int64_t rows, sd_tensor_info *out)
{
    *out = *t;
    int64_t row_elems = 1;
    for (int i = 1; i < t->ndim; i++) row_elems *= t->shape[i];
    size_t esz = sd_dtype_size(t->dtype);
    out->shape[0] = rows;
    out->data = (const unsigned char *)t->data + (size_t)(row0 * row_elems) * esz;
    out->nbytes = (size_t)(rows * row_elems) * esz;
}

static void load_hf(sd_net_loader *l, sd_text_encoder *e, const char *p)
{
    e->tok_emb = sd_net_get(l, "%sembeddings.token_embedding.weight", p);
    e->pos_emb = sd_net_get(l, "%sembeddings.position_embedding.weight", p);
    e->final_ln = sd_net_layer(l, true, "%sfinal_layer_norm", p);
    for (int i = 0; i < e->layers; i++) {
        clip_block *b = &e->blocks[i];
        b->ln1 = sd_net_layer(l, true, "%sencoder.layers.%d.layer_norm1", p, i);
        b->ln2 = sd_net_layer(l, true, "%sencoder.layers.%d.layer_norm2", p, i);
        b->q = sd_net_layer(l, true, "%sencoder.layers.%d.self_attn.q_proj", p, i);
        b->k = sd_net_layer(l, true, "%sencoder.layers.%d.self_attn.k_proj", p, i);
        b->v = sd_net_layer(l, true, "%sencoder.layers.%d.self_attn.v_proj", p, i);
        b->o = sd_net_layer(l, true, "%sencoder.layers.%d.self_attn.out_proj", p, i);
        b->fc1 = sd_net_layer(l, true, "%sencoder.layers.%d.mlp.fc1", p, i);
        b->fc2 = sd_net_layer(l, true, "%sencoder.layers.%d.mlp.fc2", p, i);
    }
}

static void load_openclip(sd_net_loader *l, sd_text_encoder *e, const char *p)
{
    e->tok_emb = sd_net_get(l, "%stoken_embedding.weight", p);
    e->pos_emb = sd_net_get(l, "%spositional_embedding", p);
    e->final_ln = sd_net_layer(l, true, "%sln_final", p);
    for (int i = 0; i < e->layers; i++) {
        clip_block *b = &e->blocks[i];
        b->ln1 = sd_net_layer(l, true, "%stransformer.resblocks.%d.ln_1", p, i);
        b->ln2 = sd_net_layer(l, true, "%stransformer.resblocks.%d.ln_2", p, i);
        const sd_tensor_info *w = sd_net_get(l, "%stransformer.resblocks.%d.attn.in_proj_weight", p, i);
        const sd_tensor_info *bias = sd_net_get(l, "%stransformer.resblocks.%d.attn.in_proj_bias", p, i);
        if (!sd_net_check(l, w, 2, 3LL * e->width, e->width) ||
            !sd_net_check(l, bias, 1, 3LL * e->width, -1))
            return;
        sd_tensor_info *s = &e->slices[6 * i];
        for (int j = 0; j < 3; j++) {
            slice_rows(w, (int64_t)j * e->width, e->width, &s[2 * j]);
            slice_rows(bias, (int64_t)j * e->width, e->width, &s[2 * j + 1]);
        }
        b->q = (sd_layer_w){ &s[0], &s[1] };
        b->k = (sd_layer_w){ &s[2], &s[3] };
        b->v = (sd_layer_w){ &s[4], &s[5] };
        b->o = sd_net_layer(l, true, "%stransformer.resblocks.%d.attn.out_proj", p, i);
        b->fc1 = sd_net_layer(l, true, "%stransformer.resblocks.%d.mlp.c_fc", p, i);
        b->fc2 = sd_net_layer(l, true, "%stransformer.resblocks.%d.mlp.c_proj", p, i);
    }
}

static void check_shapes(sd_net_loader *l, sd_text_encoder *e)
{
    int D = e->width;
    if (l->failed) return;
    if (!sd_net_check(l, e->tok_emb, 2, -1, D) || !sd_net_check(l, e->pos_emb, 2, -1, D))
        return;
    if (e->pos_emb->shape[0] < e->context) {
        sd_net_fail(l, "'%s' has %lld positions, need %d", e->pos_emb->name,
                    (long long)e->pos_emb->shape[0], e->context);
        return;
    }
    for (int i = 0; i < e->layers; i++) {
        clip_block *b = &e->blocks[i];
        if (!sd_net_check(l, b->q.w, 2, D, D) || !sd_net_check(l, b->k.w, 2, D, D) ||
            !sd_net_check(l, b->v.w, 2, D, D) || !sd_net_check(l, b->o.w, 2, D, D) ||
            !sd_net_check(l, b->fc1.w, 2, e->mlp, D) || !sd_net_check(l, b->fc2.w, 2, D, e->mlp))
            return;
    }
}

int sd_text_encoder_create(const sd_model_file *f, const sd_family_info *fam, sd_backend *be,
                           sd_text_encoder **out, char *err, size_t errlen)
{
    *out = NULL;
    const sd_text_config *tc = &fam->text;
    if (tc->layout != SD_TEXT_CLIP_HF && tc->layout != SD_TEXT_OPENCLIP) {
        if (err) snprintf(err, errlen, "%s: no SD1/SD2 text encoder in this file",
                          sd_model_file_path(f));
        return -1;
    }
    if (tc->width <= 0 || tc->layers <= 0 || tc->heads <= 0 || tc->width % tc->heads != 0 ||
        tc->intermediate <= 0) {
        if (err) snprintf(err, errlen, "%s: text encoder sizes do not fit (width %d, %d heads, "
                          "%d layers)", sd_model_file_path(f), tc->width, tc->heads, tc->layers);
        return -1;
    }
    sd_text_encoder *e = calloc(1, sizeof *e);
    if (!e) goto oom;
    e->be = be;
    e->width = tc->width;
    e->layers = tc->layers;
    e->heads = tc->heads;
    e->context = tc->max_positions > 0 ? tc->max_positions : 77;
    e->mlp = tc->intermediate;
    e->act = tc->quick_gelu ? SD_ACT_QUICK_GELU : SD_ACT_GELU;
    e->blocks = calloc((size_t)e->layers, sizeof *e->blocks);
    e->slices = calloc((size_t)e->layers * 6, sizeof *e->slices);
    if (!e->blocks || !e->slices) goto oom;

    sd_net_loader l = { f, err, errlen, false };
    if (tc->layout == SD_TEXT_CLIP_HF) load_hf(&l, e, tc->prefix);
    else load_openclip(&l, e, tc->prefix);
    check_shapes(&l, e);
    if (l.failed) {
        sd_text_encoder_destroy(e);
        return -1;
    }
    *out = e;
    return 0;
oom:
    sd_text_encoder_destroy(e);
    if (err) snprintf(err, errlen, "text encoder: out of memory");
    return -1;
}

void sd_text_encoder_destroy(sd_text_encoder *enc)
{
    if (!enc) return;
    free(enc->blocks);
    free(enc->slices);
    free(enc);
}

int sd_text_encoder_width(const sd_text_encoder *enc) { return enc->width; }
int sd_text_encoder_layers(const sd_text_encoder *enc) { return enc->layers; }
int sd_text_encoder_context(const sd_text_encoder *enc) { return enc->context; }

/* x = x + attn(ln1 x); x = x + mlp(ln2 x), x [S, 1, L, D]. */
static int run_block(sd_text_encoder *e, const clip_block *b, sd_tensor *x, sd_tensor *h,
                     sd_tensor *q, sd_tensor *k, sd_tensor *v, sd_tensor *m)
{
    sd_backend *be = e->be;
    if (sd_layer_norm(be, x, b->ln1.w, b->ln1.b, 1e-5f, h) || sd_linear(be, h, b->q.w, b->q.b, NULL, q) ||
        sd_linear(be, h, b->k.w, b->k.b, NULL, k) || sd_linear(be, h, b->v.w, b->v.b, NULL, v) ||
        sd_attention(be, q, k, v, e->heads, 0.0f, true, h) ||
        sd_linear(be, h, b->o.w, b->o.b, x, x) ||
        sd_layer_norm(be, x, b->ln2.w, b->ln2.b, 1e-5f, h) ||
        sd_linear(be, h, b->fc1.w, b->fc1.b, NULL, m) || sd_activation_op(be, e->act, m, m) ||
        sd_linear(be, m, b->fc2.w, b->fc2.b, x, x))
        return -1;
    return 0;
}

int sd_text_encode_hidden(sd_text_encoder *enc, const int *ids, int n_tokens, int layer,
                          bool final_norm, float *out, char *err, size_t errlen)
{
    sd_backend *be = enc->be;
    if (n_tokens <= 0 || n_tokens % enc->context != 0) {
        if (err) snprintf(err, errlen, "text encoder: %d tokens is not a multiple of %d",
                          n_tokens, enc->context);
        return -1;
    }
    if (layer < 0 || layer > enc->layers) {
        if (err) snprintf(err, errlen, "text encoder: layer %d outside 0..%d", layer,
                          enc->layers);
        return -1;
    }
    int S = n_tokens / enc->context, L = enc->context, D = enc->width;
    sd_tensor x = { 0 }, h = { 0 }, q = { 0 }, k = { 0 }, v = { 0 }, m = { 0 };
    int rc = -1;
    if (sd_tensor_new(be, &x, S, 1, L, D) || sd_tensor_new(be, &h, S, 1, L, D) ||
        sd_tensor_new(be, &q, S, 1, L, D) || sd_tensor_new(be, &k, S, 1, L, D) ||
        sd_tensor_new(be, &v, S, 1, L, D) || sd_tensor_new(be, &m, S, 1, L, enc->mlp))
        goto done;
    if (sd_embedding(be, enc->tok_emb, ids, enc->pos_emb, &x)) goto done;
    for (int i = 0; i < layer; i++) {
        if (sd_backend_cancelled(be)) {
            sd_backend_fail(be, "cancelled");
            goto done;
        }
        if (run_block(enc, &enc->blocks[i], &x, &h, &q, &k, &v, &m)) goto done;
    }
    if (final_norm && sd_layer_norm(be, &x, enc->final_ln.w, enc->final_ln.b, 1e-5f, &x))
        goto done;
    if (sd_download(be, &x, out)) goto done;
    rc = 0;
done:
    if (rc) sd_net_backend_error(be, "text encoder", err, errlen);
    sd_tensor_free(be, &x);
    sd_tensor_free(be, &h);
    sd_tensor_free(be, &q);
    sd_tensor_free(be, &k);
    sd_tensor_free(be, &v);
    sd_tensor_free(be, &m);
    return rc;
}

int sd_text_encode(sd_text_encoder *enc, const int *ids, int n_tokens, int clip_skip,
                   float *out, char *err, size_t errlen)
{
    if (clip_skip < 1 || clip_skip > enc->layers) {
        if (err) snprintf(err, errlen, "text encoder: clip_skip %d outside 1..%d", clip_skip,
                          enc->layers);
        return -1;
    }
    return sd_text_encode_hidden(enc, ids, n_tokens, enc->layers - clip_skip + 1, true, out,
                                 err, errlen);
}
