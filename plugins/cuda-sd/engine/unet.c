/* unet.c - ldm UNetModel forward pass (see unet.h).
 *
 * Structure, discovered from the keys under "model.diffusion_model.":
 *   input_blocks.0.0                 conv_in
 *   input_blocks.i.0.in_layers...    res block (+ .1 spatial transformer)
 *   input_blocks.i.0.op              3x3 stride-2 downsample
 *   middle_block.j                   res / transformer / res
 *   output_blocks.i.0                res block on concat(h, skip) (+ .1
 *                                    transformer) (+ .1/.2 upsample conv)
 *   out.0 GroupNorm, SiLU, out.2 conv; time_embed.0/.2 linears.
 * Every input block's output (and conv_in's) is pushed on a skip stack that
 * the output blocks pop in reverse.
 */
#include "engine/unet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_backend.h"
#include "engine/net_common.h"

#define P "model.diffusion_model."
#define MAX_BLOCKS 64
#define GN_GROUPS 32
#define GN_EPS_RES 1e-5f        /* ldm normalization(): GroupNorm32 default eps */
#define GN_EPS_ST 1e-6f         /* SpatialTransformer.norm */
#define LN_EPS 1e-5f

typedef struct res_w {
    sd_layer_w in_norm, in_conv, emb, out_norm, out_conv, skip;  /* skip.w NULL: identity */
    int cin, cout;
} res_w;

typedef struct tblock_w {
    sd_layer_w n1, n2, n3;
    sd_layer_w q1, k1, v1, o1;      /* self-attention */
    sd_layer_w q2, k2, v2, o2;      /* cross-attention */
    sd_layer_w ff1, ff2;            /* GEGLU feed-forward */
} tblock_w;

typedef struct st_w {
    sd_layer_w norm, proj_in, proj_out;
    int depth, ch, heads;
    tblock_w *blocks;
} st_w;

typedef struct ublock {
    bool has_res;
    res_w res;
    st_w *st;                       /* NULL: none */
    sd_layer_w down;                /* w NULL: none (input side) */
    sd_layer_w up;                  /* w NULL: none (output side) */
} ublock;

struct sd_unet {
    sd_backend *be;
    int in_ch, out_ch, ctx_dim, mc, temb_dim, size_mult;
    sd_prediction pred;
    bool circular;
    sd_layer_w conv_in, time1, time2, out_norm, out_conv;
    ublock in[MAX_BLOCKS];
    int n_in;
    ublock mid[4];
    int n_mid;
    ublock out[MAX_BLOCKS];
    int n_out;
    /* cross-attention K/V per transformer block, from the context they were
     * computed for (see sd_unet_set_kv_cache) */
    bool kv_enabled;
    bool kv_valid;           /* kv[] holds a complete pass's K/V for kv_ctx */
    float *kv_ctx;           /* host copy of that context [kv_B, kv_L, ctx_dim] */
    int kv_B, kv_L;
    sd_tensor *kv;           /* [2 * n_cross]: K, V of each block in forward order */
    int n_cross;
    unsigned long long kv_hits, kv_misses;
    unsigned long long kv_gen; /* bumped when the cached K/V are freed */
    struct unet_graph *graph; /* CUDA graph of the step, NULL = none */
};
typedef struct unet_graph unet_graph;

/* What one forward pass does with the K/V cache. */
typedef struct kv_pass {
    int next;                /* index of the next block's K in u->kv */
    bool use;                /* take K/V from the cache */
    bool fill;               /* store the computed K/V in the cache */
} kv_pass;

/* ---- construction ------------------------------------------------------- */

typedef struct build_ctx {
    sd_net_loader l;
    const sd_family_info *fam;
    sd_unet *u;
} build_ctx;

static bool has(build_ctx *b, const char *fmt, int i, int j)
{
    char name[256];
    snprintf(name, sizeof name, fmt, i, j);
    return sd_model_file_find(b->l.file, name) != NULL;
}

static bool check_conv(sd_net_loader *l, const sd_layer_w *c, int cout, int cin, int k)
{
    if (!sd_net_check(l, c->w, 4, cout, cin)) return false;
    if (c->w->shape[2] != k || c->w->shape[3] != k)
        return sd_net_fail(l, "'%s' is not a %dx%d convolution", c->w->name, k, k);
    if (c->b && (c->b->ndim != 1 || c->b->shape[0] != cout))
        return sd_net_fail(l, "'%s' does not have %d elements", c->b->name, cout);
    return true;
}

static void load_res(build_ctx *b, res_w *r, const char *base)
{
    sd_net_loader *l = &b->l;
    r->in_norm = sd_net_layer(l, true, "%s.in_layers.0", base);
    r->in_conv = sd_net_layer(l, true, "%s.in_layers.2", base);
    r->emb = sd_net_layer(l, true, "%s.emb_layers.1", base);
    r->out_norm = sd_net_layer(l, true, "%s.out_layers.0", base);
    r->out_conv = sd_net_layer(l, true, "%s.out_layers.3", base);
    r->skip.w = sd_net_opt(l, "%s.skip_connection.weight", base);
    r->skip.b = r->skip.w ? sd_net_get(l, "%s.skip_connection.bias", base) : NULL;
    if (l->failed || !sd_net_check(l, r->in_conv.w, 4, -1, -1)) return;
    r->cout = (int)r->in_conv.w->shape[0];
    r->cin = (int)r->in_conv.w->shape[1];
    if (!check_conv(l, &r->in_conv, r->cout, r->cin, 3) ||
        !check_conv(l, &r->out_conv, r->cout, r->cout, 3) ||
        !sd_net_check(l, r->emb.w, 2, r->cout, b->u->temb_dim))
        return;
    if (r->skip.w) check_conv(l, &r->skip, r->cout, r->cin, 1);
    else if (r->cin != r->cout)
        sd_net_fail(l, "'%s' changes channels %d -> %d but has no skip_connection", base,
                    r->cin, r->cout);
}

static void load_tblock(build_ctx *b, tblock_w *t, const char *base, int C)
{
    sd_net_loader *l = &b->l;
    int D = b->u->ctx_dim;
    t->n1 = sd_net_layer(l, true, "%s.norm1", base);
    t->n2 = sd_net_layer(l, true, "%s.norm2", base);
    t->n3 = sd_net_layer(l, true, "%s.norm3", base);
    t->q1 = sd_net_layer(l, false, "%s.attn1.to_q", base);
    t->k1 = sd_net_layer(l, false, "%s.attn1.to_k", base);
    t->v1 = sd_net_layer(l, false, "%s.attn1.to_v", base);
    t->o1 = sd_net_layer(l, true, "%s.attn1.to_out.0", base);
    t->q2 = sd_net_layer(l, false, "%s.attn2.to_q", base);
    t->k2 = sd_net_layer(l, false, "%s.attn2.to_k", base);
    t->v2 = sd_net_layer(l, false, "%s.attn2.to_v", base);
    t->o2 = sd_net_layer(l, true, "%s.attn2.to_out.0", base);
    t->ff1 = sd_net_layer(l, true, "%s.ff.net.0.proj", base);
    t->ff2 = sd_net_layer(l, true, "%s.ff.net.2", base);
    if (l->failed) return;
    if (!sd_net_check(l, t->q1.w, 2, C, C) || !sd_net_check(l, t->k1.w, 2, C, C) ||
        !sd_net_check(l, t->v1.w, 2, C, C) || !sd_net_check(l, t->o1.w, 2, C, C) ||
        !sd_net_check(l, t->q2.w, 2, C, C) || !sd_net_check(l, t->k2.w, 2, C, D) ||
        !sd_net_check(l, t->v2.w, 2, C, D) || !sd_net_check(l, t->o2.w, 2, C, C) ||
        !sd_net_check(l, t->ff1.w, 2, -1, C))
        return;
    int64_t inner2 = t->ff1.w->shape[0];
    if (inner2 % 2 != 0) {
        sd_net_fail(l, "'%s' has an odd number of GEGLU outputs", t->ff1.w->name);
        return;
    }
    sd_net_check(l, t->ff2.w, 2, C, inner2 / 2);
}

static st_w *load_st(build_ctx *b, const char *base, int C)
{
    sd_net_loader *l = &b->l;
    st_w *s = calloc(1, sizeof *s);
    if (!s) {
        sd_net_fail(l, "out of memory");
        return NULL;
    }
    s->ch = C;
    const sd_unet_config *uc = &b->fam->unet;
    if (uc->num_heads > 0) s->heads = uc->num_heads;
    else if (uc->head_dim > 0) s->heads = C / uc->head_dim;
    if (s->heads < 1 || C % s->heads != 0) {
        sd_net_fail(l, "%s: %d channels do not split into heads (num_heads %d, head_dim %d)",
                    base, C, uc->num_heads, uc->head_dim);
        return s;
    }
    s->norm = sd_net_layer(l, true, "%s.norm", base);
    s->proj_in = sd_net_layer(l, true, "%s.proj_in", base);
    s->proj_out = sd_net_layer(l, true, "%s.proj_out", base);
    char name[300];
    while (s->depth < 64) {
        snprintf(name, sizeof name, "%s.transformer_blocks.%d.norm1.weight", base, s->depth);
        if (!sd_model_file_find(l->file, name)) break;
        s->depth++;
    }
    if (s->depth == 0) {
        sd_net_fail(l, "%s has no transformer_blocks", base);
        return s;
    }
    s->blocks = calloc((size_t)s->depth, sizeof *s->blocks);
    if (!s->blocks) {
        sd_net_fail(l, "out of memory");
        return s;
    }
    for (int d = 0; d < s->depth && !l->failed; d++) {
        snprintf(name, sizeof name, "%s.transformer_blocks.%d", base, d);
        load_tblock(b, &s->blocks[d], name, C);
    }
    if (l->failed) return s;
    /* proj_in/out: 1x1 conv [C,C,1,1] (SD1) or linear [C,C] (SD2) */
    if (!s->proj_in.w || sd_tensor_numel(s->proj_in.w) != (int64_t)C * C ||
        !s->proj_out.w || sd_tensor_numel(s->proj_out.w) != (int64_t)C * C)
        sd_net_fail(l, "%s: proj_in/proj_out are not %dx%d", base, C, C);
    return s;
}

static void free_st(st_w *s)
{
    if (!s) return;
    free(s->blocks);
    free(s);
}

static void build(build_ctx *b)
{
    sd_unet *u = b->u;
    sd_net_loader *l = &b->l;
    char base[128];

    u->conv_in = sd_net_layer(l, true, P "input_blocks.0.0");
    u->time1 = sd_net_layer(l, true, P "time_embed.0");
    u->time2 = sd_net_layer(l, true, P "time_embed.2");
    u->out_norm = sd_net_layer(l, true, P "out.0");
    u->out_conv = sd_net_layer(l, true, P "out.2");
    if (l->failed || !sd_net_check(l, u->conv_in.w, 4, -1, -1) ||
        !sd_net_check(l, u->time1.w, 2, -1, -1))
        return;
    u->mc = (int)u->conv_in.w->shape[0];
    u->in_ch = (int)u->conv_in.w->shape[1];
    u->temb_dim = (int)u->time1.w->shape[0];
    if (!check_conv(l, &u->conv_in, u->mc, u->in_ch, 3) ||
        !sd_net_check(l, u->time1.w, 2, u->temb_dim, u->mc) ||
        !sd_net_check(l, u->time2.w, 2, u->temb_dim, u->temb_dim) || u->mc % 2 != 0)
        return;

    /* input side; simulate the skip stack's channels to check the output side */
    int stack[MAX_BLOCKS * 2], sp = 0, ch = u->mc, downs = 0;
    stack[sp++] = ch;
    for (int i = 1; i < MAX_BLOCKS && !l->failed; i++) {
        ublock *blk = &u->in[u->n_in];
        if (has(b, P "input_blocks.%d.0.op.weight", i, 0)) {
            blk->down = sd_net_layer(l, true, P "input_blocks.%d.0.op", i);
            check_conv(l, &blk->down, ch, ch, 3);
            downs++;
        } else if (has(b, P "input_blocks.%d.0.in_layers.0.weight", i, 0)) {
            snprintf(base, sizeof base, P "input_blocks.%d.0", i);
            blk->has_res = true;
            load_res(b, &blk->res, base);
            if (l->failed) break;
            if (blk->res.cin != ch) {
                sd_net_fail(l, "%s takes %d channels, previous block gives %d", base,
                            blk->res.cin, ch);
                break;
            }
            ch = blk->res.cout;
            if (has(b, P "input_blocks.%d.1.proj_in.weight", i, 0)) {
                snprintf(base, sizeof base, P "input_blocks.%d.1", i);
                blk->st = load_st(b, base, ch);
            }
        } else {
            break;
        }
        u->n_in++;
        stack[sp++] = ch;
    }
    if (l->failed) return;

    /* middle */
    for (int j = 0; j < 4; j++) {
        ublock *blk = &u->mid[u->n_mid];
        if (has(b, P "middle_block.%d.in_layers.0.weight", j, 0)) {
            snprintf(base, sizeof base, P "middle_block.%d", j);
            blk->has_res = true;
            load_res(b, &blk->res, base);
            if (l->failed) return;
            if (blk->res.cin != ch) {
                sd_net_fail(l, "%s takes %d channels, previous block gives %d", base,
                            blk->res.cin, ch);
                return;
            }
            ch = blk->res.cout;
        } else if (has(b, P "middle_block.%d.proj_in.weight", j, 0)) {
            snprintf(base, sizeof base, P "middle_block.%d", j);
            blk->st = load_st(b, base, ch);
        } else {
            break;
        }
        u->n_mid++;
    }
    if (l->failed) return;

    /* output side */
    for (int i = 0; i < MAX_BLOCKS && !l->failed; i++) {
        if (!has(b, P "output_blocks.%d.0.in_layers.0.weight", i, 0)) break;
        ublock *blk = &u->out[u->n_out];
        snprintf(base, sizeof base, P "output_blocks.%d.0", i);
        blk->has_res = true;
        load_res(b, &blk->res, base);
        if (l->failed) break;
        if (sp == 0) {
            sd_net_fail(l, "%s has no matching input block (skip stack empty)", base);
            break;
        }
        int skip = stack[--sp];
        if (blk->res.cin != ch + skip) {
            sd_net_fail(l, "%s takes %d channels, expected %d + %d skip", base, blk->res.cin,
                        ch, skip);
            break;
        }
        ch = blk->res.cout;
        for (int j = 1; j <= 2; j++) {
            if (has(b, P "output_blocks.%d.%d.proj_in.weight", i, j)) {
                snprintf(base, sizeof base, P "output_blocks.%d.%d", i, j);
                blk->st = load_st(b, base, ch);
            } else if (has(b, P "output_blocks.%d.%d.conv.weight", i, j)) {
                blk->up = sd_net_layer(l, true, P "output_blocks.%d.%d.conv", i, j);
                check_conv(l, &blk->up, ch, ch, 3);
            }
        }
        u->n_out++;
    }
    if (l->failed) return;
    if (sp != 0) {
        sd_net_fail(l, "%d skip connections are left unused by the output blocks", sp);
        return;
    }
    if (!sd_net_check(l, u->out_norm.w, 1, ch, -1)) return;
    if (!sd_net_check(l, u->out_conv.w, 4, -1, ch)) return;
    u->out_ch = (int)u->out_conv.w->shape[0];
    check_conv(l, &u->out_conv, u->out_ch, ch, 3);
    u->size_mult = 1 << downs;
}

int sd_unet_create(const sd_model_file *f, const sd_family_info *fam, sd_backend *be,
                   sd_unet **out, char *err, size_t errlen)
{
    *out = NULL;
    sd_unet *u = calloc(1, sizeof *u);
    if (!u) {
        if (err) snprintf(err, errlen, "unet: out of memory");
        return -1;
    }
    u->be = be;
    u->kv_enabled = true;
    u->pred = fam->prediction;
    u->ctx_dim = fam->unet.context_dim;
    build_ctx b = { { f, err, errlen, false }, fam, u };
    if (u->ctx_dim <= 0) sd_net_fail(&b.l, "the family info gives no UNet context dim");
    else build(&b);
    if (!b.l.failed) {
        const ublock *lists[3] = { u->in, u->mid, u->out };
        const int counts[3] = { u->n_in, u->n_mid, u->n_out };
        for (int li = 0; li < 3; li++)
            for (int i = 0; i < counts[li]; i++)
                if (lists[li][i].st) u->n_cross += lists[li][i].st->depth;
        u->kv = calloc((size_t)(2 * u->n_cross + 1), sizeof *u->kv);
        if (!u->kv) sd_net_fail(&b.l, "out of memory");
    }
    if (b.l.failed) {
        sd_unet_destroy(u);
        return -1;
    }
    *out = u;
    return 0;
}

void sd_unet_kv_cache_clear(sd_unet *u)
{
    if (u->kv)
        for (int i = 0; i < 2 * u->n_cross; i++) sd_tensor_free(u->be, &u->kv[i]);
    free(u->kv_ctx);
    u->kv_ctx = NULL;
    u->kv_valid = false;
    u->kv_gen++;
}

void sd_unet_set_kv_cache(sd_unet *u, bool on)
{
    if (!on) sd_unet_kv_cache_clear(u);
    u->kv_enabled = on;
}

void sd_unet_kv_cache_stats(const sd_unet *u, unsigned long long *hits, unsigned long long *misses)
{
    if (hits) *hits = u->kv_hits;
    if (misses) *misses = u->kv_misses;
}

void sd_unet_destroy(sd_unet *u)
{
    if (!u) return;
    sd_unet_graph_reset(u);
    sd_unet_kv_cache_clear(u);
    free(u->kv);
    for (int i = 0; i < MAX_BLOCKS; i++) {
        free_st(u->in[i].st);
        free_st(u->out[i].st);
    }
    for (int i = 0; i < 4; i++) free_st(u->mid[i].st);
    free(u);
}

int sd_unet_in_channels(const sd_unet *u) { return u->in_ch; }
int sd_unet_out_channels(const sd_unet *u) { return u->out_ch; }
int sd_unet_context_dim(const sd_unet *u) { return u->ctx_dim; }
sd_prediction sd_unet_prediction(const sd_unet *u) { return u->pred; }
int sd_unet_size_multiple(const sd_unet *u) { return u->size_mult; }
void sd_unet_set_circular(sd_unet *u, bool circular) { u->circular = circular; }

/* ---- forward ------------------------------------------------------------ */

/* Each helper reads its input, writes a new tensor into *out (allocated
 * here) and frees its own temporaries; the caller owns both. */

static int res_forward(sd_unet *u, const res_w *r, const sd_tensor *x, const sd_tensor *emb_act,
                       sd_tensor *out)
{
    sd_backend *be = u->be;
    sd_conv_params c3 = sd_conv_same(3, 1, u->circular);
    sd_conv_params c1 = sd_conv_same(1, 1, false);
    sd_tensor t1 = { 0 }, t2 = { 0 }, e = { 0 };
    int rc = -1;
    if (sd_tensor_new_inner(be, &t1, x->n, x->h, x->w, r->cin) ||
        sd_group_norm(be, x, GN_GROUPS, GN_EPS_RES, r->in_norm.w, r->in_norm.b, true, &t1) ||
        sd_tensor_new_inner(be, &t2, x->n, x->h, x->w, r->cout) ||
        sd_conv2d(be, &t1, r->in_conv.w, r->in_conv.b, &c3, NULL, &t2))
        goto done;
    sd_tensor_free(be, &t1);
    if (sd_tensor_new_inner(be, &e, x->n, 1, 1, r->cout) ||
        sd_linear(be, emb_act, r->emb.w, r->emb.b, NULL, &e) ||
        sd_add_per_channel(be, &t2, &e, &t2) ||
        sd_group_norm(be, &t2, GN_GROUPS, GN_EPS_RES, r->out_norm.w, r->out_norm.b, true, &t2))
        goto done;
    /* the shortcut goes straight into out, which the last conv then adds to
     * in place (saves one full-size tensor) */
    if (sd_tensor_new_inner(be, out, x->n, x->h, x->w, r->cout)) goto done;
    if (r->skip.w && sd_conv2d(be, x, r->skip.w, r->skip.b, &c1, NULL, out)) goto done;
    if (sd_conv2d(be, &t2, r->out_conv.w, r->out_conv.b, &c3, r->skip.w ? out : x, out))
        goto done;
    rc = 0;
done:
    sd_tensor_free(be, &t1);
    sd_tensor_free(be, &t2);
    sd_tensor_free(be, &e);
    if (rc) sd_tensor_free(be, out);
    return rc;
}

/* h += o(attention(q(x), k(kv_src), v(kv_src))). kv (may be NULL): the
 * cross-attention cache slots of this block, kv[0] = K and kv[1] = V; with
 * use, they are taken as they are (kv_src unused); with fill, the computed
 * K/V are moved into them. */
static int attn(sd_backend *be, const sd_tensor *x, const sd_tensor *kv_src, const sd_layer_w *q,
                const sd_layer_w *k, const sd_layer_w *v, const sd_layer_w *o, int heads,
                sd_tensor *kv, bool use, bool fill, sd_tensor *h)
{
    sd_tensor tq = { 0 }, tk = { 0 }, tv = { 0 }, ta = { 0 };
    int C = h->c;
    int rc = -1;
    const sd_tensor *K = &tk, *V = &tv;
    if (kv && use) {
        K = &kv[0];
        V = &kv[1];
    } else {
        int Lk = kv_src->h * kv_src->w;
        if (sd_tensor_new_inner(be, &tk, x->n, 1, Lk, C) || sd_tensor_new_inner(be, &tv, x->n, 1, Lk, C) ||
            sd_linear(be, kv_src, k->w, k->b, NULL, &tk) ||
            sd_linear(be, kv_src, v->w, v->b, NULL, &tv))
            goto done;
    }
    if (sd_tensor_new_inner(be, &tq, x->n, x->h, x->w, C) ||
        sd_tensor_new_inner(be, &ta, x->n, x->h, x->w, C) || sd_linear(be, x, q->w, q->b, NULL, &tq) ||
        sd_attention(be, &tq, K, V, heads, 0.0f, false, &ta) ||
        sd_linear(be, &ta, o->w, o->b, h, h))
        goto done;
    if (kv && fill && !use) {
        sd_tensor_free(be, &kv[0]);
        sd_tensor_free(be, &kv[1]);
        kv[0] = tk;
        kv[1] = tv;
        memset(&tk, 0, sizeof tk);
        memset(&tv, 0, sizeof tv);
    }
    rc = 0;
done:
    sd_tensor_free(be, &tq);
    sd_tensor_free(be, &tk);
    sd_tensor_free(be, &tv);
    sd_tensor_free(be, &ta);
    return rc;
}

static int st_forward(sd_unet *u, const st_w *s, const sd_tensor *x, const sd_tensor *ctx,
                      kv_pass *kp, sd_tensor *out)
{
    sd_backend *be = u->be;
    sd_tensor t = { 0 }, h = { 0 }, g = { 0 }, gg = { 0 };
    int rc = -1;
    int C = s->ch;
    if (sd_tensor_new_inner(be, &t, x->n, x->h, x->w, C) ||
        sd_group_norm(be, x, GN_GROUPS, GN_EPS_ST, s->norm.w, s->norm.b, false, &t) ||
        sd_tensor_new_inner(be, &h, x->n, x->h, x->w, C) ||
        sd_linear(be, &t, s->proj_in.w, s->proj_in.b, NULL, &h))
        goto done;
    for (int d = 0; d < s->depth; d++) {
        const tblock_w *b = &s->blocks[d];
        int inner = (int)(b->ff1.w->shape[0] / 2);
        if ((kp->use || kp->fill) && kp->next + 2 > 2 * u->n_cross) {
            sd_backend_fail(be, "K/V cache slot %d past its %d slots", kp->next,
                            2 * u->n_cross);
            goto done;
        }
        if (sd_layer_norm(be, &h, b->n1.w, b->n1.b, LN_EPS, &t) ||
            attn(be, &t, &t, &b->q1, &b->k1, &b->v1, &b->o1, s->heads, NULL, false, false,
                 &h) ||
            sd_layer_norm(be, &h, b->n2.w, b->n2.b, LN_EPS, &t) ||
            attn(be, &t, ctx, &b->q2, &b->k2, &b->v2, &b->o2, s->heads,
                 kp->use || kp->fill ? &u->kv[kp->next] : NULL, kp->use, kp->fill, &h) ||
            sd_layer_norm(be, &h, b->n3.w, b->n3.b, LN_EPS, &t) ||
            sd_tensor_new_inner(be, &g, x->n, x->h, x->w, 2 * inner) ||
            sd_linear(be, &t, b->ff1.w, b->ff1.b, NULL, &g) ||
            sd_tensor_new_inner(be, &gg, x->n, x->h, x->w, inner) || sd_geglu(be, &g, &gg))
            goto done;
        kp->next += 2;
        sd_tensor_free(be, &g);
        if (sd_linear(be, &gg, b->ff2.w, b->ff2.b, &h, &h)) goto done;
        sd_tensor_free(be, &gg);
    }
    if (sd_tensor_new_inner(be, out, x->n, x->h, x->w, C) ||
        sd_linear(be, &h, s->proj_out.w, s->proj_out.b, x, out))
        goto done;
    rc = 0;
done:
    sd_tensor_free(be, &t);
    sd_tensor_free(be, &h);
    sd_tensor_free(be, &g);
    sd_tensor_free(be, &gg);
    return rc;
}

/* Replaces *h (owned) by f(*h). */
#define STEP(call)                         \
    do {                                   \
        sd_tensor nx = { 0 };              \
        if (call) {                        \
            sd_tensor_free(be, &nx);       \
            goto done;                     \
        }                                  \
        if (h_owned) sd_tensor_free(be, &h); \
        h = nx;                            \
        h_owned = true;                    \
    } while (0)

static int cancelled(sd_backend *be)
{
    if (!sd_backend_cancelled(be)) return 0;
    return sd_backend_fail(be, "cancelled");
}

/* The network from the uploaded inputs to the output: in [B,H,W,in_ch],
 * ts (the sinusoidal timestep embedding) [B,1,1,mc], ctx [B,1,L,ctx_dim]
 * (unused when kp->use) -> out [B,H,W,out_ch] (allocated by the caller).
 * Only device work, no transfers: with CUDA graphs on, this is what is
 * captured (sd_backend_cuda_graph_run). */
static int unet_body(sd_unet *u, const sd_tensor *in, const sd_tensor *ts, const sd_tensor *ctx,
                     kv_pass *kp, sd_tensor *out)
{
    sd_backend *be = u->be;
    const int B = in->n, H = in->h, W = in->w;
    sd_tensor stack[MAX_BLOCKS + 1];
    int sp = 0;
    sd_tensor e1 = { 0 }, emb = { 0 }, h = { 0 };
    bool h_owned = false;
    int rc = -1;
    sd_conv_params c3 = sd_conv_same(3, 1, u->circular);
    sd_conv_params down = sd_conv_same(3, 2, u->circular);
    /* the body may run twice for one pass (a failed graph capture is run
     * again eagerly, graph.cu): it starts from the first K/V slot each time */
    kp->next = 0;

    /* emb = SiLU(time_embed(t)), the SiLU being the first op of every res
     * block's emb_layers */
    if (sd_tensor_new_inner(be, &e1, B, 1, 1, u->temb_dim) ||
        sd_linear(be, ts, u->time1.w, u->time1.b, NULL, &e1) ||
        sd_activation_op(be, SD_ACT_SILU, &e1, &e1) ||
        sd_tensor_new_inner(be, &emb, B, 1, 1, u->temb_dim) ||
        sd_linear(be, &e1, u->time2.w, u->time2.b, NULL, &emb) ||
        sd_activation_op(be, SD_ACT_SILU, &emb, &emb))
        goto done;
    sd_tensor_free(be, &e1);

    if (sd_tensor_new_inner(be, &stack[sp], B, H, W, u->mc) ||
        sd_conv2d(be, in, u->conv_in.w, u->conv_in.b, &c3, NULL, &stack[sp]))
        goto done;
    h = stack[sp++];
    h_owned = false;

    for (int i = 0; i < u->n_in; i++) {
        const ublock *blk = &u->in[i];
        if (cancelled(be)) goto done;
        if (blk->down.w) {
            STEP(sd_tensor_new_inner(be, &nx, B, (h.h + 1) / 2, (h.w + 1) / 2, h.c) ||
                 sd_conv2d(be, &h, blk->down.w, blk->down.b, &down, NULL, &nx));
        } else {
            STEP(res_forward(u, &blk->res, &h, &emb, &nx));
            if (blk->st) STEP(st_forward(u, blk->st, &h, ctx, kp, &nx));
        }
        stack[sp++] = h;
        h_owned = false;
    }
    for (int i = 0; i < u->n_mid; i++) {
        const ublock *blk = &u->mid[i];
        if (cancelled(be)) goto done;
        if (blk->has_res) STEP(res_forward(u, &blk->res, &h, &emb, &nx));
        else STEP(st_forward(u, blk->st, &h, ctx, kp, &nx));
    }
    for (int i = 0; i < u->n_out; i++) {
        const ublock *blk = &u->out[i];
        if (cancelled(be)) goto done;
        sd_tensor skip = stack[sp - 1];
        STEP(sd_tensor_new_inner(be, &nx, B, h.h, h.w, h.c + skip.c) ||
             sd_concat_channels(be, &h, &skip, &nx));
        sd_tensor_free(be, &stack[--sp]);
        STEP(res_forward(u, &blk->res, &h, &emb, &nx));
        if (blk->st) STEP(st_forward(u, blk->st, &h, ctx, kp, &nx));
        if (blk->up.w) {
            /* to the size of the skip the next block concatenates: 2x, or
             * less when a stride-2 conv rounded an odd size up (diffusers'
             * upsample_size; ldm itself only takes multiples of 8) */
            int uh = sp > 0 ? stack[sp - 1].h : 2 * h.h, uw = sp > 0 ? stack[sp - 1].w : 2 * h.w;
            STEP(sd_tensor_new_inner(be, &nx, B, uh, uw, h.c) || sd_upsample_nearest2x(be, &h, &nx));
            STEP(sd_tensor_new_inner(be, &nx, B, h.h, h.w, h.c) ||
                 sd_conv2d(be, &h, blk->up.w, blk->up.b, &c3, NULL, &nx));
        }
    }
    STEP(sd_tensor_new_inner(be, &nx, B, h.h, h.w, h.c) ||
         sd_group_norm(be, &h, GN_GROUPS, GN_EPS_RES, u->out_norm.w, u->out_norm.b, true, &nx));
    if (h.h != H || h.w != W) {
        sd_backend_fail(be, "output is %dx%d, input was %dx%d", h.h, h.w, H, W);
        goto done;
    }
    if (sd_conv2d(be, &h, u->out_conv.w, u->out_conv.b, &c3, NULL, out)) goto done;
    rc = 0;
done:
    if (h_owned) sd_tensor_free(be, &h);
    while (sp > 0) sd_tensor_free(be, &stack[--sp]);
    sd_tensor_free(be, &e1);
    sd_tensor_free(be, &emb);
    return rc;
}

/* ---- CUDA graphs of the step (opt-in: sd_backend_cuda_set_graphs) ---------------- */

/* What one captured pass reads and writes: the same device addresses at
 * every replay, so the inputs are uploaded into these tensors and the output
 * downloaded from out, outside the graph. */
struct unet_graph {
    sd_cuda_graph *slot;     /* the backend's captured pass, NULL = none yet */
    int B, H, W, L;
    bool circular, use_kv;
    unsigned long long kv_gen; /* u->kv_gen at capture: new K/V, new addresses */
    sd_tensor in, ts, ctx, out;
};

typedef struct body_call {
    sd_unet *u;
    const sd_tensor *in, *ts, *ctx;
    kv_pass *kp;
    sd_tensor *out;
} body_call;

static int body_thunk(void *ud)
{
    body_call *c = ud;
    return unet_body(c->u, c->in, c->ts, c->ctx, c->kp, c->out);
}

void sd_unet_graph_reset(sd_unet *u)
{
    unet_graph *g = u->graph;
    if (!g) return;
    sd_backend_cuda_graph_free(u->be, g->slot);
    sd_tensor_free(u->be, &g->in);
    sd_tensor_free(u->be, &g->ts);
    sd_tensor_free(u->be, &g->ctx);
    sd_tensor_free(u->be, &g->out);
    free(g);
    u->graph = NULL;
}

/* The graph for this pass's shape and K/V, (re)made when they changed. */
static unet_graph *graph_for(sd_unet *u, int B, int H, int W, int L, bool use_kv)
{
    unet_graph *g = u->graph;
    if (g && g->B == B && g->H == H && g->W == W && g->L == L && g->circular == u->circular &&
        g->use_kv == use_kv && (!use_kv || g->kv_gen == u->kv_gen))
        return g;
    sd_unet_graph_reset(u);
    g = calloc(1, sizeof *g);
    if (!g) return NULL;
    *g = (unet_graph){ .B = B, .H = H, .W = W, .L = L, .circular = u->circular,
                       .use_kv = use_kv, .kv_gen = u->kv_gen };
    sd_backend *be = u->be;
    if (sd_tensor_new(be, &g->in, B, H, W, u->in_ch) || sd_tensor_new(be, &g->ts, B, 1, 1, u->mc) ||
        (!use_kv && sd_tensor_new(be, &g->ctx, B, 1, L, u->ctx_dim)) ||
        sd_tensor_new(be, &g->out, B, H, W, u->out_ch)) {
        u->graph = g;
        sd_unet_graph_reset(u);
        return NULL;
    }
    u->graph = g;
    return g;
}

/* One pass through the graph: eager uploads, the captured (or replayed)
 * network, an eager download. */
static int graph_forward(sd_unet *u, const float *x, const float *t, const float *context, int L,
                         kv_pass *kp, unet_graph *g, float *out)
{
    sd_backend *be = u->be;
    if (sd_upload_nchw(be, x, &g->in) || (!kp->use && sd_upload(be, context, &g->ctx)) ||
        sd_timestep_embedding(be, t, &g->ts))
        return -1;
    (void)L;
    body_call c = { u, &g->in, &g->ts, &g->ctx, kp, &g->out };
    if (sd_backend_cuda_graph_run(be, &g->slot, body_thunk, &c)) return -1;
    return sd_download_nchw(be, &g->out, out);
}

int sd_unet_forward(sd_unet *u, const float *x, const float *t, const float *context, int L,
                    int B, int H, int W, float *out, char *err, size_t errlen)
{
    sd_backend *be = u->be;
    if (B < 1 || L < 1 || H < 1 || W < 1) {
        if (err) snprintf(err, errlen, "unet: empty input (batch %d, latent %dx%d, context %d)",
                          B, H, W, L);
        return -1;
    }
    sd_tensor in = { 0 }, ctx = { 0 }, ts = { 0 }, o = { 0 };
    int rc = -1;

    /* cross-attention K/V depend on the context only: a pass with the same
     * context as the cached one (every step of a generation) reuses them */
    size_t ctx_n = (size_t)B * (size_t)L * (size_t)u->ctx_dim;
    kv_pass kp = { 0, false, false };
    if (u->kv_enabled && u->n_cross > 0) {
        if (u->kv_valid && u->kv_B == B && u->kv_L == L &&
            memcmp(u->kv_ctx, context, ctx_n * sizeof(float)) == 0) {
            kp.use = true;
            u->kv_hits++;
        } else {
            sd_unet_kv_cache_clear(u);
            u->kv_ctx = malloc(ctx_n * sizeof(float));
            if (u->kv_ctx) {
                memcpy(u->kv_ctx, context, ctx_n * sizeof(float));
                u->kv_B = B;
                u->kv_L = L;
                kp.fill = true;
            }
            u->kv_misses++;
        }
    }

    /* CUDA graphs (opt-in): the steady state only, i.e. not a pass that
     * fills the K/V cache (its tensors are made during the pass) */
    if (!kp.fill && sd_backend_cuda_graphs_on(be)) {
        unet_graph *g = graph_for(u, B, H, W, L, kp.use);
        if (g) {
            rc = graph_forward(u, x, t, context, L, &kp, g, out);
            if (rc) sd_net_backend_error(be, "unet", err, errlen);
            return rc;
        }
        /* no memory for the graph's tensors: the plain pass below */
    }

    if (sd_tensor_new(be, &in, B, H, W, u->in_ch) || sd_upload_nchw(be, x, &in) ||
        (!kp.use && (sd_tensor_new(be, &ctx, B, 1, L, u->ctx_dim) ||
                     sd_upload(be, context, &ctx))) ||
        sd_tensor_new(be, &ts, B, 1, 1, u->mc) || sd_timestep_embedding(be, t, &ts) ||
        sd_tensor_new(be, &o, B, H, W, u->out_ch))
        goto done;
    if (unet_body(u, &in, &ts, &ctx, &kp, &o)) goto done;
    if (sd_download_nchw(be, &o, out)) goto done;
    if (kp.fill) u->kv_valid = true;
    rc = 0;
done:
    if (rc && kp.fill) sd_unet_kv_cache_clear(u);   /* a partial fill is no cache */
    if (rc) sd_net_backend_error(be, "unet", err, errlen);
    sd_tensor_free(be, &in);
    sd_tensor_free(be, &ctx);
    sd_tensor_free(be, &ts);
    sd_tensor_free(be, &o);
    return rc;
}
