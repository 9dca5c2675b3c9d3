/* ops.h - the compute interface the networks (engine/clip, unet, vae) are
 * written against. One backend implements it: the CPU backend now
 * (backend/cpu_backend.h), a CUDA backend later with the same entry points.
 *
 * Data model
 *   - Activations are tensors in backend memory, always 4-D NHWC ("channels
 *     last"): sd_tensor{data, n, h, w, c, type}. Token sequences are
 *     [batch, 1, tokens, width] (h = 1). NHWC keeps every 1x1 conv, linear and
 *     attention a plain row-major GEMM over [pixels, channels] and makes the
 *     whole batch one GEMM.
 *   - Their elements are float32 (sd_tensor_new), except a network's
 *     intermediates, which it allocates with sd_tensor_new_inner: those are
 *     of the backend's inner type, float32 on the CPU, fp16 on the CUDA
 *     backend when its fp16 activations are on. A backend that hands out
 *     fp16 tensors takes any mix of float32 and fp16 operands in every op
 *     (math in float32 inside each op); uploads and downloads convert.
 *   - Weights are never copied into activations: every op takes the
 *     checkpoint's tensors as `const sd_tensor_info *` (engine/model_file.h,
 *     PyTorch layout, F32/F16/BF16, usually memory-mapped). The backend
 *     converts them as it needs them (CPU: per call into scratch memory, so a
 *     model costs its mapping plus one layer's worth of float32; CUDA: may
 *     upload and cache keyed by the pointer, which stays valid as long as the
 *     model file is open).
 *   - Shapes are checked: an op whose operands do not fit returns -1 with a
 *     message (sd_backend_error), never reads out of bounds.
 *
 * Ownership: sd_tensor_new() allocates backend memory the caller frees with
 * sd_tensor_free(); ops write into caller-allocated outputs of the right
 * shape. `out` may alias an input only where an op says so ("in place ok").
 *
 * Threads: a backend runs each op on all its threads internally; the calls
 * themselves are not thread-safe (one network at a time per backend).
 */
#ifndef SD_BACKEND_OPS_H
#define SD_BACKEND_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/model_file.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sd_backend sd_backend;

/* The element type of an activation tensor. */
typedef enum {
    SD_ACT_F32 = 0,     /* float32: every backend, the default */
    SD_ACT_F16          /* IEEE fp16 bits (uint16_t per element); only from a
                           backend whose inner type it is */
} sd_act_type;

/* An NHWC tensor in backend memory. Plain value type: copying the struct
 * copies the view, not the data. A zero-initialised one is float32. */
typedef struct sd_tensor {
    float *data;        /* float32 elements, or fp16 bits when type is SD_ACT_F16 */
    int n, h, w, c;
    sd_act_type type;
} sd_tensor;

static inline size_t sd_tensor_numel_of(const sd_tensor *t)
{
    return (size_t)t->n * (size_t)t->h * (size_t)t->w * (size_t)t->c;
}

typedef enum {
    SD_PAD_ZEROS = 0,   /* PyTorch's default */
    SD_PAD_CIRCULAR     /* wrap around: seamless tiling images */
} sd_pad_mode;

/* Conv2d geometry. Padding per side so the VAE encoder's asymmetric
 * downsample (pad right/bottom by 1, stride 2) needs no extra copy. */
typedef struct sd_conv_params {
    int stride;
    int pad_top, pad_left, pad_bottom, pad_right;
    sd_pad_mode pad_mode;
} sd_conv_params;

/* Output size of a conv along one axis (floor, as PyTorch). */
static inline int sd_conv_out_size(int in, int k, int stride, int pad_a, int pad_b)
{
    return (in + pad_a + pad_b - k) / stride + 1;
}

typedef enum {
    SD_ACT_SILU = 0,      /* x * sigmoid(x) */
    SD_ACT_GELU,          /* exact: 0.5 x (1 + erf(x / sqrt 2)) */
    SD_ACT_QUICK_GELU     /* x * sigmoid(1.702 x) (OpenAI CLIP) */
} sd_activation;

/* The operations. Every function returns 0 or -1 (message: sd_backend_error).
 * Weight tensors are PyTorch-shaped; "numel must fit" means a Linear weight
 * may also be a 1x1 conv weight [N,K,1,1] and a bias any shape of numel N. */
typedef struct sd_backend_ops {
    const char *name;                       /* "cpu", "cuda" */
    void (*destroy)(sd_backend *be);

    /* ---- memory ---------------------------------------------------------- */
    float *(*alloc)(sd_backend *be, size_t n_floats);  /* NULL on failure */
    void (*release)(sd_backend *be, float *p);          /* NULL is fine */
    /* Host NCHW float32 <-> backend NHWC tensor (t's shape gives n,c,h,w). */
    int (*upload_nchw)(sd_backend *be, const float *host, sd_tensor *t);
    int (*download_nchw)(sd_backend *be, const sd_tensor *t, float *host);
    /* Host row-major [n*h*w, c] <-> backend (same element order). */
    int (*upload)(sd_backend *be, const float *host, sd_tensor *t);
    int (*download)(sd_backend *be, const sd_tensor *t, float *host);

    /* ---- layers ---------------------------------------------------------- */
    /* out = conv(x, w) + b (+ residual). w [Cout, Cin, kh, kw], b [Cout] or
     * NULL, residual shaped like out or NULL. out must not alias x but MAY
     * alias residual (in-place residual add; the networks rely on it). */
    int (*conv2d)(sd_backend *be, const sd_tensor *x, const sd_tensor_info *w,
                  const sd_tensor_info *b, const sd_conv_params *p,
                  const sd_tensor *residual, sd_tensor *out);
    /* out[..., N] = x[..., K] W^T + b (+ residual), over the last dimension:
     * rows are the n*h*w positions, and only their count must match (x may
     * be [B,H,W,K] and out [B,1,H*W,N]). w [N, K] (numel must fit), b [N] or
     * NULL. out must not alias x but MAY alias residual (in place, as the
     * transformer blocks use it: h = h + proj(attn)). */
    int (*linear)(sd_backend *be, const sd_tensor *x, const sd_tensor_info *w,
                  const sd_tensor_info *b, const sd_tensor *residual, sd_tensor *out);
    /* GroupNorm over (h, w, channels of a group) per sample, statistics in
     * float64-accumulated float32; then gamma/beta [C]; then SiLU if silu.
     * In place ok. */
    int (*group_norm)(sd_backend *be, const sd_tensor *x, int groups, float eps,
                      const sd_tensor_info *gamma, const sd_tensor_info *beta, bool silu,
                      sd_tensor *out);
    /* LayerNorm over c per token, gamma/beta [C]. In place ok. */
    int (*layer_norm)(sd_backend *be, const sd_tensor *x, const sd_tensor_info *gamma,
                      const sd_tensor_info *beta, float eps, sd_tensor *out);
    /* Multi-head scaled dot-product attention over token tensors:
     * q [B,1,Lq,C], k and v [B,1,Lk,C], out [B,1,Lq,C]; head j uses channels
     * [j*C/heads, (j+1)*C/heads). softmax(q k^T * scale) v; causal: query i
     * sees keys j <= i. scale <= 0 means 1/sqrt(C/heads). */
    int (*attention)(sd_backend *be, const sd_tensor *q, const sd_tensor *k,
                     const sd_tensor *v, int heads, float scale, bool causal,
                     sd_tensor *out);

    /* ---- element-wise ---------------------------------------------------- */
    int (*activation)(sd_backend *be, sd_activation act, const sd_tensor *x,
                      sd_tensor *out);          /* in place ok */
    /* GEGLU: x [..., 2F] -> out [..., F] = x[:F] * gelu_erf(x[F:]). */
    int (*geglu)(sd_backend *be, const sd_tensor *x, sd_tensor *out);
    int (*add)(sd_backend *be, const sd_tensor *a, const sd_tensor *b,
               sd_tensor *out);                 /* in place ok */
    /* out[n,h,w,c] = x[n,h,w,c] + v[n,0,0,c]; v is [N,1,1,C]. In place ok. */
    int (*add_per_channel)(sd_backend *be, const sd_tensor *x, const sd_tensor *v,
                           sd_tensor *out);
    /* out = concat(a, b) along channels (a first). */
    int (*concat_channels)(sd_backend *be, const sd_tensor *a, const sd_tensor *b,
                           sd_tensor *out);
    /* Nearest-neighbour upsampling: out [N, OH, OW, C], normally OH = 2H and
     * OW = 2W. Other sizes follow PyTorch's "nearest" with an explicit size
     * (src = min(floor(dst * (float)in / out), in - 1)); the UNet needs that
     * for latents that are not a multiple of 8 (diffusers' upsample_size,
     * e.g. 96x96 images = 12x12 latents). A backend may reject non-2x sizes
     * with an error. */
    int (*upsample_nearest2x)(sd_backend *be, const sd_tensor *x, sd_tensor *out);
    /* Sinusoidal timestep embedding (ldm, cos first): t[n] host values,
     * out [N,1,1,dim] with dim even: cos(t f_k), sin(t f_k),
     * f_k = exp(-ln(10000) k / (dim/2)). */
    int (*timestep_embedding)(sd_backend *be, const float *t_host, sd_tensor *out);
    /* Token embedding lookup plus positions: out[b,0,i,:] = table[ids[b*L+i]]
     * + pos[i] (pos [>=L, C] or NULL). ids are host ints; out [B,1,L,C]. */
    int (*embedding)(sd_backend *be, const sd_tensor_info *table, const int *ids_host,
                     const sd_tensor_info *pos, sd_tensor *out);
} sd_backend_ops;

/* Every backend's handle starts with this (implementations embed it as their
 * first member). */
struct sd_backend {
    const sd_backend_ops *ops;
    char err[512];
    /* Cancellation: networks poll sd_backend_cancelled() between blocks and
     * fail with "cancelled" once it returns true. */
    volatile int *cancel_flag;
    /* The type of a network's intermediates (sd_tensor_new_inner): the
     * backend sets it (SD_ACT_F32 unless it has fp16 activations on). */
    sd_act_type inner_type;
};

/* ---- convenience wrappers (the networks call these) -------------------- */
const char *sd_backend_error(const sd_backend *be);
void sd_backend_destroy(sd_backend *be);            /* NULL is fine */
/* Sets (or clears with NULL) the flag polled between blocks. */
void sd_backend_set_cancel_flag(sd_backend *be, volatile int *flag);
bool sd_backend_cancelled(const sd_backend *be);
/* printf-style error into be->err; always returns -1. */
int sd_backend_fail(sd_backend *be, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Allocates an n x h x w x c float32 tensor (contents undefined). 0 or -1. */
int sd_tensor_new(sd_backend *be, sd_tensor *t, int n, int h, int w, int c);
/* The same in the backend's inner type (be->inner_type): for tensors that
 * live only inside a network pass, never for what a caller uploads into or
 * downloads from. */
int sd_tensor_new_inner(sd_backend *be, sd_tensor *t, int n, int h, int w, int c);
/* Bytes of one element of t. */
static inline size_t sd_tensor_elem_size(const sd_tensor *t)
{
    return t->type == SD_ACT_F16 ? 2 : 4;
}
void sd_tensor_free(sd_backend *be, sd_tensor *t);  /* zeroes *t; NULL data ok */

static inline int sd_conv2d(sd_backend *be, const sd_tensor *x, const sd_tensor_info *w,
                            const sd_tensor_info *b, const sd_conv_params *p,
                            const sd_tensor *residual, sd_tensor *out)
{ return be->ops->conv2d(be, x, w, b, p, residual, out); }
static inline int sd_linear(sd_backend *be, const sd_tensor *x, const sd_tensor_info *w,
                            const sd_tensor_info *b, const sd_tensor *residual, sd_tensor *out)
{ return be->ops->linear(be, x, w, b, residual, out); }
static inline int sd_group_norm(sd_backend *be, const sd_tensor *x, int groups, float eps,
                                const sd_tensor_info *g, const sd_tensor_info *b, bool silu,
                                sd_tensor *out)
{ return be->ops->group_norm(be, x, groups, eps, g, b, silu, out); }
static inline int sd_layer_norm(sd_backend *be, const sd_tensor *x, const sd_tensor_info *g,
                                const sd_tensor_info *b, float eps, sd_tensor *out)
{ return be->ops->layer_norm(be, x, g, b, eps, out); }
static inline int sd_attention(sd_backend *be, const sd_tensor *q, const sd_tensor *k,
                               const sd_tensor *v, int heads, float scale, bool causal,
                               sd_tensor *out)
{ return be->ops->attention(be, q, k, v, heads, scale, causal, out); }
static inline int sd_activation_op(sd_backend *be, sd_activation act, const sd_tensor *x,
                                   sd_tensor *out)
{ return be->ops->activation(be, act, x, out); }
static inline int sd_geglu(sd_backend *be, const sd_tensor *x, sd_tensor *out)
{ return be->ops->geglu(be, x, out); }
static inline int sd_add(sd_backend *be, const sd_tensor *a, const sd_tensor *b, sd_tensor *out)
{ return be->ops->add(be, a, b, out); }
static inline int sd_add_per_channel(sd_backend *be, const sd_tensor *x, const sd_tensor *v,
                                     sd_tensor *out)
{ return be->ops->add_per_channel(be, x, v, out); }
static inline int sd_concat_channels(sd_backend *be, const sd_tensor *a, const sd_tensor *b,
                                     sd_tensor *out)
{ return be->ops->concat_channels(be, a, b, out); }
static inline int sd_upsample_nearest2x(sd_backend *be, const sd_tensor *x, sd_tensor *out)
{ return be->ops->upsample_nearest2x(be, x, out); }
static inline int sd_timestep_embedding(sd_backend *be, const float *t_host, sd_tensor *out)
{ return be->ops->timestep_embedding(be, t_host, out); }
static inline int sd_embedding(sd_backend *be, const sd_tensor_info *table, const int *ids,
                               const sd_tensor_info *pos, sd_tensor *out)
{ return be->ops->embedding(be, table, ids, pos, out); }
static inline int sd_upload_nchw(sd_backend *be, const float *host, sd_tensor *t)
{ return be->ops->upload_nchw(be, host, t); }
static inline int sd_download_nchw(sd_backend *be, const sd_tensor *t, float *host)
{ return be->ops->download_nchw(be, t, host); }
static inline int sd_upload(sd_backend *be, const float *host, sd_tensor *t)
{ return be->ops->upload(be, host, t); }
static inline int sd_download(sd_backend *be, const sd_tensor *t, float *host)
{ return be->ops->download(be, t, host); }

#ifdef __cplusplus
}
#endif
#endif
