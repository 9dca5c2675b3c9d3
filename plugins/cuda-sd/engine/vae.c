/* vae.c - AutoencoderKL encoder/decoder forward passes (see vae.h).
 *
 * Keys under "first_stage_model.": encoder.{conv_in, down.i.block.j,
 * down.i.downsample.conv, mid.block_1, mid.attn_1, mid.block_2, norm_out,
 * conv_out}, quant_conv, post_quant_conv, decoder.{conv_in, mid.*,
 * up.i.block.j, up.i.upsample.conv, norm_out, conv_out}. Levels and blocks
 * per level are counted from the keys. Images of a batch are processed one
 * at a time: a 512x512 decode holds several 128-channel full-resolution
 * tensors (134 MB each), and batching would multiply that.
 */
#include "engine/vae.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_backend.h"
#include "engine/net_common.h"

#define P "first_stage_model."
#define MAX_LEVELS 8
#define MAX_RES 8
#define GN_GROUPS 32
#define GN_EPS 1e-6f

typedef struct vres_w {
    sd_layer_w norm1, conv1, norm2, conv2, nin;   /* nin.w NULL: identity */
    int cin, cout;
} vres_w;

typedef struct vattn_w {
    sd_layer_w norm, q, k, v, proj;
    int ch;
} vattn_w;

typedef struct vlevel {
    vres_w res[MAX_RES];
    int n_res;
    sd_layer_w resample;        /* down/upsample conv, w NULL: none */
} vlevel;

typedef struct vmid {
    vres_w block_1, block_2;
    vattn_w attn;
} vmid;

struct sd_vae {
    sd_backend *be;
    float scale;
    bool circular, has_encoder;
    bool trim_between_levels;   /* sd_vae_set_trim_between_levels */
    int z_ch, downscale;
    /* encoder */
    sd_layer_w e_conv_in, e_norm_out, e_conv_out, quant;
    vlevel e_levels[MAX_LEVELS];
    int e_n_levels;
    vmid e_mid;
    /* decoder */
    sd_layer_w post_quant, d_conv_in, d_norm_out, d_conv_out;
    vlevel d_levels[MAX_LEVELS];   /* index = ldm up.i */
    int d_n_levels;
    vmid d_mid;
};

/* ---- construction ------------------------------------------------------- */

static bool has(const sd_model_file *f, const char *fmt, int i, int j)
{
    char name[256];
    snprintf(name, sizeof name, fmt, i, j);
    return sd_model_file_find(f, name) != NULL;
}

static bool conv_ok(sd_net_loader *l, const sd_layer_w *c, int cout, int cin, int k)
{
    if (!sd_net_check(l, c->w, 4, cout, cin)) return false;
    if (c->w->shape[2] != k || c->w->shape[3] != k)
        return sd_net_fail(l, "'%s' is not a %dx%d convolution", c->w->name, k, k);
    return true;
}

static void load_res(sd_net_loader *l, vres_w *r, const char *base, int cin)
{
    r->norm1 = sd_net_layer(l, true, "%s.norm1", base);
    r->conv1 = sd_net_layer(l, true, "%s.conv1", base);
    r->norm2 = sd_net_layer(l, true, "%s.norm2", base);
    r->conv2 = sd_net_layer(l, true, "%s.conv2", base);
    r->nin.w = sd_net_opt(l, "%s.nin_shortcut.weight", base);
    r->nin.b = r->nin.w ? sd_net_get(l, "%s.nin_shortcut.bias", base) : NULL;
    if (l->failed || !sd_net_check(l, r->conv1.w, 4, -1, cin)) return;
    r->cin = cin;
    r->cout = (int)r->conv1.w->shape[0];
    if (!conv_ok(l, &r->conv1, r->cout, cin, 3) || !conv_ok(l, &r->conv2, r->cout, r->cout, 3))
        return;
    if (r->nin.w) conv_ok(l, &r->nin, r->cout, cin, 1);
    else if (cin != r->cout)
        sd_net_fail(l, "'%s' changes channels %d -> %d without nin_shortcut", base, cin,
                    r->cout);
}

static void load_attn(sd_net_loader *l, vattn_w *a, const char *base, int ch)
{
    a->ch = ch;
    a->norm = sd_net_layer(l, true, "%s.norm", base);
    a->q = sd_net_layer(l, true, "%s.q", base);
    a->k = sd_net_layer(l, true, "%s.k", base);
    a->v = sd_net_layer(l, true, "%s.v", base);
    a->proj = sd_net_layer(l, true, "%s.proj_out", base);
    if (l->failed) return;
    const sd_tensor_info *ws[4] = { a->q.w, a->k.w, a->v.w, a->proj.w };
    for (int i = 0; i < 4; i++)
        if (sd_tensor_numel(ws[i]) != (int64_t)ch * ch || ws[i]->shape[0] != ch) {
            sd_net_fail(l, "'%s' is not a %dx%d projection", ws[i]->name, ch, ch);
            return;
        }
}

static int load_mid(sd_net_loader *l, vmid *m, const char *base, int ch)
{
    char name[160];
    snprintf(name, sizeof name, "%s.mid.block_1", base);
    load_res(l, &m->block_1, name, ch);
    if (l->failed) return ch;
    ch = m->block_1.cout;
    snprintf(name, sizeof name, "%s.mid.attn_1", base);
    load_attn(l, &m->attn, name, ch);
    snprintf(name, sizeof name, "%s.mid.block_2", base);
    load_res(l, &m->block_2, name, ch);
    return l->failed ? ch : m->block_2.cout;
}

static void build_encoder(sd_net_loader *l, sd_vae *v)
{
    const sd_model_file *f = l->file;
    char base[160];
    v->e_conv_in = sd_net_layer(l, true, P "encoder.conv_in");
    if (l->failed || !sd_net_check(l, v->e_conv_in.w, 4, -1, -1)) return;
    int ch = (int)v->e_conv_in.w->shape[0];
    if (!conv_ok(l, &v->e_conv_in, ch, (int)v->e_conv_in.w->shape[1], 3)) return;
    if (v->e_conv_in.w->shape[1] != 3) {
        sd_net_fail(l, "'%s' does not take 3 image channels", v->e_conv_in.w->name);
        return;
    }
    for (int i = 0; i < MAX_LEVELS && has(f, P "encoder.down.%d.block.%d.conv1.weight", i, 0); i++) {
        vlevel *lv = &v->e_levels[v->e_n_levels++];
        if (has(f, P "encoder.down.%d.attn.%d.norm.weight", i, 0)) {
            sd_net_fail(l, "VAE attention inside encoder.down.%d is not supported", i);
            return;
        }
        for (int j = 0; j < MAX_RES && has(f, P "encoder.down.%d.block.%d.conv1.weight", i, j); j++) {
            snprintf(base, sizeof base, P "encoder.down.%d.block.%d", i, j);
            load_res(l, &lv->res[lv->n_res], base, ch);
            if (l->failed) return;
            ch = lv->res[lv->n_res++].cout;
        }
        if (has(f, P "encoder.down.%d.downsample.conv.weight", i, 0)) {
            lv->resample = sd_net_layer(l, true, P "encoder.down.%d.downsample.conv", i);
            if (!conv_ok(l, &lv->resample, ch, ch, 3)) return;
        }
    }
    ch = load_mid(l, &v->e_mid, P "encoder", ch);
    v->e_norm_out = sd_net_layer(l, true, P "encoder.norm_out");
    v->e_conv_out = sd_net_layer(l, true, P "encoder.conv_out");
    v->quant = sd_net_layer(l, true, P "quant_conv");
    if (l->failed || !conv_ok(l, &v->e_conv_out, 2 * v->z_ch, ch, 3)) return;
    conv_ok(l, &v->quant, 2 * v->z_ch, 2 * v->z_ch, 1);
}

static void build_decoder(sd_net_loader *l, sd_vae *v)
{
    const sd_model_file *f = l->file;
    char base[160];
    v->post_quant = sd_net_layer(l, true, P "post_quant_conv");
    v->d_conv_in = sd_net_layer(l, true, P "decoder.conv_in");
    if (l->failed || !sd_net_check(l, v->post_quant.w, 4, -1, -1)) return;
    v->z_ch = (int)v->post_quant.w->shape[0];
    if (!conv_ok(l, &v->post_quant, v->z_ch, v->z_ch, 1) ||
        !sd_net_check(l, v->d_conv_in.w, 4, -1, v->z_ch))
        return;
    int ch = (int)v->d_conv_in.w->shape[0];
    if (!conv_ok(l, &v->d_conv_in, ch, v->z_ch, 3)) return;
    ch = load_mid(l, &v->d_mid, P "decoder", ch);
    if (l->failed) return;
    while (v->d_n_levels < MAX_LEVELS &&
           has(f, P "decoder.up.%d.block.%d.conv1.weight", v->d_n_levels, 0))
        v->d_n_levels++;
    if (v->d_n_levels == 0) {
        sd_net_fail(l, "no decoder.up levels");
        return;
    }
    int ups = 0;
    for (int i = v->d_n_levels - 1; i >= 0; i--) {
        vlevel *lv = &v->d_levels[i];
        if (has(f, P "decoder.up.%d.attn.%d.norm.weight", i, 0)) {
            sd_net_fail(l, "VAE attention inside decoder.up.%d is not supported", i);
            return;
        }
        for (int j = 0; j < MAX_RES && has(f, P "decoder.up.%d.block.%d.conv1.weight", i, j); j++) {
            snprintf(base, sizeof base, P "decoder.up.%d.block.%d", i, j);
            load_res(l, &lv->res[lv->n_res], base, ch);
            if (l->failed) return;
            ch = lv->res[lv->n_res++].cout;
        }
        if (has(f, P "decoder.up.%d.upsample.conv.weight", i, 0)) {
            lv->resample = sd_net_layer(l, true, P "decoder.up.%d.upsample.conv", i);
            if (!conv_ok(l, &lv->resample, ch, ch, 3)) return;
            ups++;
        }
    }
    v->d_norm_out = sd_net_layer(l, true, P "decoder.norm_out");
    v->d_conv_out = sd_net_layer(l, true, P "decoder.conv_out");
    if (l->failed || !conv_ok(l, &v->d_conv_out, 3, ch, 3)) return;
    v->downscale = 1 << ups;
}

int sd_vae_create(const sd_model_file *f, const sd_family_info *fam, sd_backend *be,
                  sd_vae **out, char *err, size_t errlen)
{
    *out = NULL;
    sd_vae *v = calloc(1, sizeof *v);
    if (!v) {
        if (err) snprintf(err, errlen, "vae: out of memory");
        return -1;
    }
    v->be = be;
    v->scale = fam->vae.scale_factor > 0.0f ? fam->vae.scale_factor : 0.18215f;
    sd_net_loader l = { f, err, errlen, false };
    build_decoder(&l, v);
    if (!l.failed && sd_model_file_find(f, P "encoder.conv_in.weight")) {
        build_encoder(&l, v);
        v->has_encoder = !l.failed;
    }
    if (l.failed) {
        sd_vae_destroy(v);
        return -1;
    }
    *out = v;
    return 0;
}

void sd_vae_destroy(sd_vae *v) { free(v); }
float sd_vae_scale_factor(const sd_vae *v) { return v->scale; }
int sd_vae_latent_channels(const sd_vae *v) { return v->z_ch; }
int sd_vae_downscale(const sd_vae *v) { return v->downscale; }
bool sd_vae_has_encoder(const sd_vae *v) { return v->has_encoder; }
void sd_vae_set_circular(sd_vae *v, bool circular) { v->circular = circular; }

void sd_vae_set_trim_between_levels(sd_vae *v, bool on) { v->trim_between_levels = on; }

/* ---- forward ------------------------------------------------------------ */

/* Replaces *h by a new tensor computed from it. */
#define STEP(call)                      \
    do {                                \
        sd_tensor nx = { 0 };           \
        if (call) {                     \
            sd_tensor_free(be, &nx);    \
            goto done;                  \
        }                               \
        sd_tensor_free(be, &h);         \
        h = nx;                         \
    } while (0)

/* A ResnetBlock that consumes its input: x is freed (or becomes out) on
 * every path, so no more than three tensors of the block's size are ever
 * live. At 512x512 these are 128-256 channels of float32 at full size
 * (128-256 MB each) and set the decoder's peak (docs/BENCHMARKS.md):
 *  - with a nin_shortcut, x is dead once the shortcut and conv1 have read
 *    it, so GroupNorm+SiLU runs on x in place: x, out, t2 live (was x, t,
 *    t2 with t as large as x: 640 -> 512 MB at the 256 -> 128 block);
 *  - without one, x is the residual and conv2 adds into it in place (ops.h:
 *    out may alias residual), so no fourth tensor appears after conv1.
 * The same ops on the same values as the out-of-place code (only the
 * shortcut now runs before GroupNorm): bit for bit the same results
 * (tests/test_cuda_engine.c, test_vae_nin_decode_memory). */
static int res_forward(sd_vae *v, const vres_w *r, sd_tensor *x, sd_tensor *out)
{
    sd_backend *be = v->be;
    sd_conv_params c3 = sd_conv_same(3, 1, v->circular), c1 = sd_conv_same(1, 1, false);
    sd_tensor t = { 0 }, t2 = { 0 };
    int rc = -1;
    memset(out, 0, sizeof *out);
    if (r->nin.w) {
        if (sd_tensor_new(be, out, x->n, x->h, x->w, r->cout) ||
            sd_conv2d(be, x, r->nin.w, r->nin.b, &c1, NULL, out) ||
            sd_group_norm(be, x, GN_GROUPS, GN_EPS, r->norm1.w, r->norm1.b, true, x) ||
            sd_tensor_new(be, &t2, x->n, x->h, x->w, r->cout) ||
            sd_conv2d(be, x, r->conv1.w, r->conv1.b, &c3, NULL, &t2))
            goto done;
        sd_tensor_free(be, x);
        if (sd_group_norm(be, &t2, GN_GROUPS, GN_EPS, r->norm2.w, r->norm2.b, true, &t2) ||
            sd_conv2d(be, &t2, r->conv2.w, r->conv2.b, &c3, out, out))
            goto done;
    } else {
        if (sd_tensor_new(be, &t, x->n, x->h, x->w, r->cin) ||
            sd_group_norm(be, x, GN_GROUPS, GN_EPS, r->norm1.w, r->norm1.b, true, &t) ||
            sd_tensor_new(be, &t2, x->n, x->h, x->w, r->cout) ||
            sd_conv2d(be, &t, r->conv1.w, r->conv1.b, &c3, NULL, &t2))
            goto done;
        sd_tensor_free(be, &t);
        if (sd_group_norm(be, &t2, GN_GROUPS, GN_EPS, r->norm2.w, r->norm2.b, true, &t2) ||
            sd_conv2d(be, &t2, r->conv2.w, r->conv2.b, &c3, x, x))
            goto done;
        *out = *x;               /* x became the block's output */
        memset(x, 0, sizeof *x);
    }
    rc = 0;
done:
    sd_tensor_free(be, &t);
    sd_tensor_free(be, &t2);
    sd_tensor_free(be, x);
    if (rc) sd_tensor_free(be, out);
    return rc;
}

/* Single-head self-attention over all pixels, scale 1/sqrt(C). */
static int attn_forward(sd_vae *v, const vattn_w *a, const sd_tensor *x, sd_tensor *out)
{
    sd_backend *be = v->be;
    sd_tensor t = { 0 }, q = { 0 }, k = { 0 }, val = { 0 }, o = { 0 };
    int rc = -1;
    int n = x->n, H = x->h, W = x->w, C = x->c;
    if (sd_tensor_new(be, &t, n, H, W, C) ||
        sd_group_norm(be, x, GN_GROUPS, GN_EPS, a->norm.w, a->norm.b, false, &t) ||
        sd_tensor_new(be, &q, n, H, W, C) || sd_linear(be, &t, a->q.w, a->q.b, NULL, &q) ||
        sd_tensor_new(be, &k, n, H, W, C) || sd_linear(be, &t, a->k.w, a->k.b, NULL, &k) ||
        sd_tensor_new(be, &val, n, H, W, C) || sd_linear(be, &t, a->v.w, a->v.b, NULL, &val))
        goto done;
    sd_tensor_free(be, &t);
    if (sd_tensor_new(be, &o, n, H, W, C) || sd_attention(be, &q, &k, &val, 1, 0.0f, false, &o) ||
        sd_tensor_new(be, out, n, H, W, C) || sd_linear(be, &o, a->proj.w, a->proj.b, x, out))
        goto done;
    rc = 0;
done:
    sd_tensor_free(be, &t);
    sd_tensor_free(be, &q);
    sd_tensor_free(be, &k);
    sd_tensor_free(be, &val);
    sd_tensor_free(be, &o);
    return rc;
}

static int mid_forward(sd_vae *v, const vmid *m, sd_tensor *hp)
{
    sd_backend *be = v->be;
    sd_tensor h = *hp;
    int rc = -1;
    STEP(res_forward(v, &m->block_1, &h, &nx));
    STEP(attn_forward(v, &m->attn, &h, &nx));
    STEP(res_forward(v, &m->block_2, &h, &nx));
    rc = 0;
done:
    *hp = h;
    return rc;
}

static int cancelled(sd_backend *be)
{
    if (!sd_backend_cancelled(be)) return 0;
    return sd_backend_fail(be, "cancelled");
}

static int decode_one(sd_vae *v, const float *z, int h0, int w0, float *img)
{
    sd_backend *be = v->be;
    sd_conv_params c3 = sd_conv_same(3, 1, v->circular), c1 = sd_conv_same(1, 1, false);
    sd_tensor h = { 0 };
    int rc = -1;
    if (sd_tensor_new(be, &h, 1, h0, w0, v->z_ch) || sd_upload_nchw(be, z, &h)) goto done;
    STEP(sd_tensor_new(be, &nx, 1, h.h, h.w, v->z_ch) ||
         sd_conv2d(be, &h, v->post_quant.w, v->post_quant.b, &c1, NULL, &nx));
    STEP(sd_tensor_new(be, &nx, 1, h.h, h.w, (int)v->d_conv_in.w->shape[0]) ||
         sd_conv2d(be, &h, v->d_conv_in.w, v->d_conv_in.b, &c3, NULL, &nx));
    if (mid_forward(v, &v->d_mid, &h)) goto done;
    for (int i = v->d_n_levels - 1; i >= 0; i--) {
        const vlevel *lv = &v->d_levels[i];
        for (int j = 0; j < lv->n_res; j++) {
            if (cancelled(be)) goto done;
            STEP(res_forward(v, &lv->res[j], &h, &nx));
        }
        if (lv->resample.w) {
            if (v->trim_between_levels && sd_backend_is_cuda(be) && sd_backend_cuda_trim(be))
                goto done;
            STEP(sd_tensor_new(be, &nx, 1, 2 * h.h, 2 * h.w, h.c) ||
                 sd_upsample_nearest2x(be, &h, &nx));
            STEP(sd_tensor_new(be, &nx, 1, h.h, h.w, h.c) ||
                 sd_conv2d(be, &h, lv->resample.w, lv->resample.b, &c3, NULL, &nx));
        }
    }
    if (sd_group_norm(be, &h, GN_GROUPS, GN_EPS, v->d_norm_out.w, v->d_norm_out.b, true, &h))
        goto done;
    STEP(sd_tensor_new(be, &nx, 1, h.h, h.w, 3) ||
         sd_conv2d(be, &h, v->d_conv_out.w, v->d_conv_out.b, &c3, NULL, &nx));
    if (sd_download_nchw(be, &h, img)) goto done;
    rc = 0;
done:
    sd_tensor_free(be, &h);
    return rc;
}

static int encode_one(sd_vae *v, const float *img, int H, int W, float *moments)
{
    sd_backend *be = v->be;
    sd_conv_params c3 = sd_conv_same(3, 1, v->circular), c1 = sd_conv_same(1, 1, false);
    /* ldm Downsample: F.pad(x, (0, 1, 0, 1)) with zeros, then a 3x3 stride-2
     * conv without padding */
    sd_conv_params down = { 2, 0, 0, 1, 1, SD_PAD_ZEROS };
    sd_tensor h = { 0 };
    int rc = -1;
    if (sd_tensor_new(be, &h, 1, H, W, 3) || sd_upload_nchw(be, img, &h)) goto done;
    STEP(sd_tensor_new(be, &nx, 1, H, W, (int)v->e_conv_in.w->shape[0]) ||
         sd_conv2d(be, &h, v->e_conv_in.w, v->e_conv_in.b, &c3, NULL, &nx));
    for (int i = 0; i < v->e_n_levels; i++) {
        const vlevel *lv = &v->e_levels[i];
        for (int j = 0; j < lv->n_res; j++) {
            if (cancelled(be)) goto done;
            STEP(res_forward(v, &lv->res[j], &h, &nx));
        }
        if (lv->resample.w)
            STEP(sd_tensor_new(be, &nx, 1, sd_conv_out_size(h.h, 3, 2, 0, 1),
                               sd_conv_out_size(h.w, 3, 2, 0, 1), h.c) ||
                 sd_conv2d(be, &h, lv->resample.w, lv->resample.b, &down, NULL, &nx));
    }
    if (mid_forward(v, &v->e_mid, &h)) goto done;
    if (sd_group_norm(be, &h, GN_GROUPS, GN_EPS, v->e_norm_out.w, v->e_norm_out.b, true, &h))
        goto done;
    STEP(sd_tensor_new(be, &nx, 1, h.h, h.w, 2 * v->z_ch) ||
         sd_conv2d(be, &h, v->e_conv_out.w, v->e_conv_out.b, &c3, NULL, &nx));
    STEP(sd_tensor_new(be, &nx, 1, h.h, h.w, 2 * v->z_ch) ||
         sd_conv2d(be, &h, v->quant.w, v->quant.b, &c1, NULL, &nx));
    if (sd_download_nchw(be, &h, moments)) goto done;
    rc = 0;
done:
    sd_tensor_free(be, &h);
    return rc;
}

int sd_vae_decode(sd_vae *v, const float *z, int B, int h, int w, float *img, char *err,
                  size_t errlen)
{
    if (B < 1 || h < 1 || w < 1) {
        if (err) snprintf(err, errlen, "vae decode: empty batch or latent (%d x %dx%d)", B, h, w);
        return -1;
    }
    size_t zin = (size_t)v->z_ch * h * w, pix = (size_t)3 * h * w * v->downscale * v->downscale;
    for (int b = 0; b < B; b++)
        if (decode_one(v, z + b * zin, h, w, img + b * pix))
            return sd_net_backend_error(v->be, "vae decode", err, errlen);
    return 0;
}

int sd_vae_encode_moments(sd_vae *v, const float *img, int B, int H, int W, float *moments,
                          char *err, size_t errlen)
{
    if (!v->has_encoder) {
        if (err) snprintf(err, errlen, "vae encode: the model file has no VAE encoder");
        return -1;
    }
    if (B < 1 || H < 1 || W < 1 || H % v->downscale || W % v->downscale) {
        if (err) snprintf(err, errlen, "vae encode: image %dx%d must be a positive multiple of %d",
                          W, H, v->downscale);
        return -1;
    }
    size_t pin = (size_t)3 * H * W;
    size_t mout = (size_t)2 * v->z_ch * (H / v->downscale) * (W / v->downscale);
    for (int b = 0; b < B; b++)
        if (encode_one(v, img + b * pin, H, W, moments + b * mout))
            return sd_net_backend_error(v->be, "vae encode", err, errlen);
    return 0;
}

int sd_vae_encode(sd_vae *v, const float *img, int B, int H, int W, float *mean, float *logvar,
                  char *err, size_t errlen)
{
    if (!v->has_encoder || H < 1 || W < 1 || B < 1) return sd_vae_encode_moments(v, img, B, H, W, NULL, err, errlen);
    size_t plane = (size_t)(H / v->downscale) * (W / v->downscale);
    size_t half = (size_t)v->z_ch * plane;
    float *m = malloc((size_t)B * 2 * half * sizeof(float));
    if (!m) {
        if (err) snprintf(err, errlen, "vae encode: out of memory");
        return -1;
    }
    int rc = sd_vae_encode_moments(v, img, B, H, W, m, err, errlen);
    if (rc == 0) {
        for (int b = 0; b < B; b++) {
            memcpy(mean + b * half, m + b * 2 * half, half * sizeof(float));
            if (logvar)
                for (size_t i = 0; i < half; i++) {
                    float lv = m[b * 2 * half + half + i];
                    logvar[b * half + i] = lv < -30.0f ? -30.0f : (lv > 20.0f ? 20.0f : lv);
                }
        }
    }
    free(m);
    return rc;
}
