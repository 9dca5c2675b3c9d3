/* elementwise.cu - activations, GEGLU, adds, concat, upsampling, timestep
 * and token embeddings, and the NCHW <-> NHWC transposes of the transfers.
 * All memory-bound grid-stride loops over float32 NHWC tensors; the scalar
 * formulas are backend/ops_math.h's, shared with the CPU backend. */
#include "backend/cuda/internal.h"

#define GS_LOOP(i, n)                                                                         \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                 \
         i += (int64_t)gridDim.x * blockDim.x)

__device__ static inline float apply_act(int act, float x)
{
    switch (act) {
    case SD_ACT_GELU: return sd_gelu_f(x);
    case SD_ACT_QUICK_GELU: return sd_quick_gelu_f(x);
    case SD_ACT_SILU:
    default: return sd_silu_f(x);
    }
}

__global__ void act_kernel(const float *x, float *out, int64_t n, int act)
{
    GS_LOOP(i, n) out[i] = apply_act(act, x[i]);
}

int cu_activation(sd_backend *be, sd_activation act, const sd_tensor *x, sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    if (!cu_same_shape(x, out)) return cu_fail(cb, "activation: output shape differs from the input");
    int64_t n = (int64_t)sd_tensor_numel_of(x);
    SD_LAUNCH(act_kernel, cu_grid(cb, (size_t)n, 256), 256, 0, cb->stream, x->data, out->data, n,
              (int)act);
    return cu_launched(cb, "activation");
}

/* out[r, j] = x[r, j] * gelu(x[r, F + j]) */
__global__ void geglu_kernel(const float *__restrict__ x, float *__restrict__ out, int64_t n, int F)
{
    GS_LOOP(i, n)
    {
        int64_t r = i / F;
        int j = (int)(i % F);
        const float *in = x + r * 2 * F;
        out[i] = in[j] * sd_gelu_f(in[F + j]);
    }
}

/* The same, 4 outputs per thread (F % 4 == 0, 16-byte aligned): one 64-bit
 * division per 4 values and 16-byte accesses. n4 = n / 4, F4 = F / 4. */
__global__ void geglu4_kernel(const float4 *__restrict__ x, float4 *__restrict__ out, int64_t n4,
                              int F4)
{
    GS_LOOP(i, n4)
    {
        int64_t r = i / F4;
        int j = (int)(i % F4);
        const float4 a = x[r * 2 * F4 + j], g = x[r * 2 * F4 + F4 + j];
        out[i] = make_float4(a.x * sd_gelu_f(g.x), a.y * sd_gelu_f(g.y), a.z * sd_gelu_f(g.z),
                             a.w * sd_gelu_f(g.w));
    }
}

int cu_geglu(sd_backend *be, const sd_tensor *x, sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    if (out->n != x->n || out->h != x->h || out->w != x->w || x->c != 2 * out->c)
        return cu_fail(cb, "geglu: input must have twice the output's channels");
    if (out->data == x->data) return cu_fail(cb, "geglu: output must not alias the input");
    int64_t n = (int64_t)sd_tensor_numel_of(out);
    if (out->c % 4 == 0 && ((uintptr_t)x->data & 15) == 0 && ((uintptr_t)out->data & 15) == 0) {
        SD_LAUNCH(geglu4_kernel, cu_grid(cb, (size_t)n / 4, 256), 256, 0, cb->stream,
                  (const float4 *)x->data, (float4 *)out->data, n / 4, out->c / 4);
    } else {
        SD_LAUNCH(geglu_kernel, cu_grid(cb, (size_t)n, 256), 256, 0, cb->stream, x->data,
                  out->data, n, out->c);
    }
    return cu_launched(cb, "geglu");
}

__global__ void add_kernel(const float *a, const float *b, float *out, int64_t n)
{
    GS_LOOP(i, n) out[i] = a[i] + b[i];
}

int cu_add(sd_backend *be, const sd_tensor *a, const sd_tensor *b, sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    if (!cu_same_shape(a, b) || !cu_same_shape(a, out))
        return cu_fail(cb, "add: operand shapes differ");
    int64_t n = (int64_t)sd_tensor_numel_of(a);
    SD_LAUNCH(add_kernel, cu_grid(cb, (size_t)n, 256), 256, 0, cb->stream, a->data, b->data,
              out->data, n);
    return cu_launched(cb, "add");
}

/* out[n,h,w,c] = x[n,h,w,c] + v[n,c] */
__global__ void add_pc_kernel(const float *x, const float *__restrict__ v, float *out, int64_t n,
                              int64_t hwc, int C)
{
    GS_LOOP(i, n) out[i] = x[i] + v[(i / hwc) * C + i % C];
}

int cu_add_per_channel(sd_backend *be, const sd_tensor *x, const sd_tensor *v, sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    if (!cu_same_shape(x, out) || v->n != x->n || v->c != x->c || v->h * v->w != 1)
        return cu_fail(cb, "add_per_channel: shapes do not fit");
    int64_t n = (int64_t)sd_tensor_numel_of(x);
    SD_LAUNCH(add_pc_kernel, cu_grid(cb, (size_t)n, 256), 256, 0, cb->stream, x->data, v->data,
              out->data, n, (int64_t)x->h * x->w * x->c, x->c);
    return cu_launched(cb, "add_per_channel");
}

__global__ void concat_kernel(const float *__restrict__ a, const float *__restrict__ b,
                              float *__restrict__ out, int64_t n, int ca, int cb_)
{
    const int c = ca + cb_;
    GS_LOOP(i, n)
    {
        int64_t r = i / c;
        int j = (int)(i % c);
        out[i] = j < ca ? a[r * ca + j] : b[r * cb_ + (j - ca)];
    }
}

int cu_concat_channels(sd_backend *be, const sd_tensor *a, const sd_tensor *b, sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    if (a->n != b->n || a->h != b->h || a->w != b->w || out->n != a->n || out->h != a->h ||
        out->w != a->w || out->c != a->c + b->c)
        return cu_fail(cb, "concat_channels: shapes do not fit");
    if (out->data == a->data || out->data == b->data)
        return cu_fail(cb, "concat_channels: output must not alias an input");
    int64_t n = (int64_t)sd_tensor_numel_of(out);
    SD_LAUNCH(concat_kernel, cu_grid(cb, (size_t)n, 256), 256, 0, cb->stream, a->data, b->data,
              out->data, n, a->c, b->c);
    return cu_launched(cb, "concat_channels");
}

/* out [N,2H,2W,C] from x [N,H,W,C] */
/* Nearest-neighbour resize to [N, OH, OW, C]: PyTorch's "nearest" with an
 * explicit size, src = min(floor(dst * (float)in / out), in - 1), the scale
 * computed in float32 as the CPU backend does (exact 2x is the same rule). */
__global__ void upsample_nearest_kernel(const float *__restrict__ x, float *__restrict__ out,
                                        int64_t n, int H, int W, int C, int OH, int OW)
{
    const float sh = (float)H / (float)OH, sw = (float)W / (float)OW;
    const bool exact = OH == 2 * H && OW == 2 * W;
    GS_LOOP(i, n)
    {
        int c = (int)(i % C);
        int64_t pix = i / C;
        int ox = (int)(pix % OW);
        int64_t t = pix / OW;
        int oy = (int)(t % OH);
        int64_t img = t / OH;
        int iy = exact ? oy / 2 : (int)floorf((float)oy * sh);
        int ix = exact ? ox / 2 : (int)floorf((float)ox * sw);
        if (iy > H - 1) iy = H - 1;
        if (ix > W - 1) ix = W - 1;
        out[i] = x[((img * H + iy) * W + ix) * C + c];
    }
}

int cu_upsample_nearest2x(sd_backend *be, const sd_tensor *x, sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    if (out->n != x->n || out->c != x->c || out->h < x->h || out->w < x->w || x->h < 1 ||
        x->w < 1)
        return cu_fail(cb, "upsample_nearest: output [%d,%d,%d,%d] does not enlarge [%d,%d,%d,%d]",
                       out->n, out->h, out->w, out->c, x->n, x->h, x->w, x->c);
    int64_t n = (int64_t)sd_tensor_numel_of(out);
    if (n == 0) return 0;
    SD_LAUNCH(upsample_nearest_kernel, cu_grid(cb, (size_t)n, 256), 256, 0, cb->stream, x->data,
              out->data, n, x->h, x->w, x->c, out->h, out->w);
    return cu_launched(cb, "upsample_nearest");
}

/* out[i, k] = cos(t_i f_k), out[i, half + k] = sin(t_i f_k) */
__global__ void timestep_kernel(const float *__restrict__ t, float *__restrict__ out, int n,
                                int half_dim)
{
    GS_LOOP(i, (int64_t)n * half_dim)
    {
        int row = (int)(i / half_dim), k = (int)(i % half_dim);
        float arg = t[row] * sd_timestep_freq(k, half_dim);
        out[(int64_t)row * 2 * half_dim + k] = cosf(arg);
        out[(int64_t)row * 2 * half_dim + half_dim + k] = sinf(arg);
    }
}

int cu_timestep_embedding(sd_backend *be, const float *t_host, sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    int dim = out->c, half_dim = dim / 2;
    if (dim % 2 != 0 || out->h * out->w != 1)
        return cu_fail(cb, "timestep_embedding: output must be [N,1,1,even]");
    float *t = (float *)cu_malloc(cb, (size_t)out->n * sizeof(float));
    if (!t) return cu_fail(cb, "out of GPU memory");
    int rc = cu_check(cb, cudaMemcpyAsync(t, t_host, (size_t)out->n * sizeof(float),
                                          cudaMemcpyHostToDevice, cb->stream),
                      "timestep upload");
    if (rc == 0) {
        SD_LAUNCH(timestep_kernel, cu_grid(cb, (size_t)out->n * half_dim, 256), 256, 0,
                  cb->stream, (const float *)t, out->data, out->n, half_dim);
        rc = cu_launched(cb, "timestep_embedding");
    }
    cu_free(cb, t);
    return rc;
}

/* out[r, c] = table[ids[r], c] (+ pos[r % L, c]); table fp16 bits or float */
template <int F16>
__global__ void embedding_kernel(const void *__restrict__ table, const int *__restrict__ ids,
                                 const float *__restrict__ pos, float *__restrict__ out, int64_t n,
                                 int L, int C)
{
    GS_LOOP(i, n)
    {
        int64_t r = i / C;
        int c = (int)(i % C);
        int64_t src = (int64_t)ids[r] * C + c;
        float v = F16 ? cu_h2f(((const uint16_t *)table)[src]) : ((const float *)table)[src];
        if (pos) v += pos[(r % L) * C + c];
        out[i] = v;
    }
}

int cu_embedding(sd_backend *be, const sd_tensor_info *table, const int *ids_host,
                 const sd_tensor_info *pos, sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    const int C = out->c, L = out->h * out->w;
    if (!table || table->ndim != 2 || table->shape[1] != C)
        return cu_fail(cb, "embedding: table '%s' is not [vocab, %d]",
                       table ? table->name : "(null)", C);
    if (pos && (pos->ndim != 2 || pos->shape[1] != C || pos->shape[0] < L))
        return cu_fail(cb, "embedding: positions '%s' are not [>=%d, %d]", pos->name, L, C);
    const int64_t vocab = table->shape[0];
    const int64_t rows = (int64_t)out->n * L;
    for (int64_t r = 0; r < rows; r++)
        if (ids_host[r] < 0 || ids_host[r] >= vocab)
            return cu_fail(cb, "embedding: token id %d outside [0, %lld)", ids_host[r],
                           (long long)vocab);
    const void *tab = cu_weight_get(cb, table, CU_W_TABLE, -1, "embedding table");
    if (!tab) return -1;
    const float *p = NULL;
    if (pos && !(p = (const float *)cu_weight_get(cb, pos, CU_W_VEC32, -1, "position embedding")))
        return -1;
    int *ids = (int *)cu_malloc(cb, (size_t)rows * sizeof(int));
    if (!ids) return cu_fail(cb, "out of GPU memory");
    int rc = cu_check(cb, cudaMemcpyAsync(ids, ids_host, (size_t)rows * sizeof(int),
                                          cudaMemcpyHostToDevice, cb->stream),
                      "token upload");
    if (rc == 0) {
        int64_t n = rows * C;
        unsigned grid = cu_grid(cb, (size_t)n, 256);
        if (table->dtype == SD_DTYPE_F16)
            SD_LAUNCH(embedding_kernel<1>, grid, 256, 0, cb->stream, tab, (const int *)ids, p,
                      out->data, n, L, C);
        else
            SD_LAUNCH(embedding_kernel<0>, grid, 256, 0, cb->stream, tab, (const int *)ids, p,
                      out->data, n, L, C);
        rc = cu_launched(cb, "embedding");
    }
    cu_free(cb, ids);
    return rc;
}

/* [n][c][hw] -> [n][hw][c] (to_nhwc) or back; i walks the destination. */
template <int TO_NHWC>
__global__ void transpose_kernel(const float *__restrict__ src, float *__restrict__ dst, int64_t total,
                                 int c, int hw)
{
    GS_LOOP(i, total)
    {
        int64_t img = i / ((int64_t)c * hw);
        int64_t rem = i % ((int64_t)c * hw);
        if (TO_NHWC) {
            int p = (int)(rem / c), ch = (int)(rem % c);
            dst[i] = src[(img * c + ch) * hw + p];
        } else {
            int ch = (int)(rem / hw), p = (int)(rem % hw);
            dst[i] = src[(img * hw + p) * c + ch];
        }
    }
}

int cu_nchw_to_nhwc(cuda_backend *cb, const float *src, float *dst, int n, int c, int hw)
{
    int64_t total = (int64_t)n * c * hw;
    SD_LAUNCH(transpose_kernel<1>, cu_grid(cb, (size_t)total, 256), 256, 0, cb->stream, src, dst,
              total, c, hw);
    return cu_launched(cb, "layout transpose");
}

int cu_nhwc_to_nchw(cuda_backend *cb, const float *src, float *dst, int n, int c, int hw)
{
    int64_t total = (int64_t)n * c * hw;
    SD_LAUNCH(transpose_kernel<0>, cu_grid(cb, (size_t)total, 256), 256, 0, cb->stream, src, dst,
              total, c, hw);
    return cu_launched(cb, "layout transpose");
}
