/* elementwise.cu - activations, GEGLU, adds, concat, upsampling, timestep
 * and token embeddings, and the NCHW <-> NHWC transposes of the transfers.
 * All memory-bound grid-stride loops over NHWC tensors; the scalar formulas
 * are backend/ops_math.h's, shared with the CPU backend.
 *
 * Element types: every operand is float32 or fp16 (ops.h sd_act_type), in
 * any mix, the math in float32. The UNet's hot ops (activation, GEGLU, add,
 * add_per_channel) run a kernel templated on the operand types that moves 4
 * elements a thread (act_io.h: 16-byte float32 / 8-byte fp16 accesses) where
 * the channel count and the pointers' alignment allow, else a scalar kernel
 * that reads and writes through cu_ld/cu_st (runtime types). The others
 * (concat, upsampling) are scalar kernels templated on the types; the
 * embeddings write float32 or fp16 through cu_st. An op in place (output
 * aliasing an input) needs that input and the output of one type. */
#include "backend/cuda/act_io.h"

#define GS_LOOP(i, n)                                                                         \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                 \
         i += (int64_t)gridDim.x * blockDim.x)

/* The global index of this thread (the tails of the 4-wide kernels). */
__device__ static inline int64_t thread_index(void)
{
    return (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ static inline float apply_act(int act, float x)
{
    switch (act) {
    case SD_ACT_GELU: return sd_gelu_f(x);
    case SD_ACT_QUICK_GELU: return sd_quick_gelu_f(x);
    case SD_ACT_SILU:
    default: return sd_silu_f(x);
    }
}

/* 4 values a thread over n4 = n / 4 groups, then the last n % 4 values one
 * per thread of the first block (every launch has >= 4 threads). */
template <typename TX, typename TO>
__global__ void act4_kernel(const void *x_, void *out_, int64_t n, int act)
{
    const TX *x = (const TX *)x_;
    TO *out = (TO *)out_;
    const int64_t n4 = n / 4;
    GS_LOOP(i, n4)
    {
        const float4 v = ld4(x, i);
        st4(out, i, make_float4(apply_act(act, v.x), apply_act(act, v.y), apply_act(act, v.z),
                                apply_act(act, v.w)));
    }
    const int64_t t = n4 * 4 + thread_index();
    if (t < n) st1(out, t, apply_act(act, ld1(x, t)));
}

__global__ void act_kernel(const void *x, bool x16, void *out, bool o16, int64_t n, int act)
{
    GS_LOOP(i, n) cu_st(out, o16, i, apply_act(act, cu_ld(x, x16, i)));
}

int cu_activation(sd_backend *be, sd_activation act, const sd_tensor *x, sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    if (cu_types_ok(cb, "activation", x, out, NULL, NULL)) return -1;
    if (!cu_same_shape(x, out)) return cu_fail(cb, "activation: output shape differs from the input");
    if (cu_inplace_ok(cb, "activation", x, out)) return -1;
    int64_t n = (int64_t)sd_tensor_numel_of(x);
    if (cu_aligned4(x) && cu_aligned4(out)) {
        static void (*const table[4])(const void *, void *, int64_t, int) =
            CU_T2_TABLE(act4_kernel);
        void (*act4)(const void *, void *, int64_t, int) = table[cu_ti2(x, out)];
        SD_LAUNCH(act4, cu_grid(cb, (size_t)n / 4, 256), 256, 0, cb->stream, (const void *)x->data,
                  (void *)out->data, n, (int)act);
    } else {
        SD_LAUNCH(act_kernel, cu_grid(cb, (size_t)n, 256), 256, 0, cb->stream,
                  (const void *)x->data, cu_is_f16(x), (void *)out->data, cu_is_f16(out), n,
                  (int)act);
    }
    return cu_launched(cb, "activation");
}

/* out[r, j] = x[r, j] * gelu(x[r, F + j]) */
__global__ void geglu_kernel(const void *__restrict__ x, bool x16, void *__restrict__ out,
                             bool o16, int64_t n, int F)
{
    GS_LOOP(i, n)
    {
        int64_t r = i / F;
        int j = (int)(i % F);
        const int64_t in = r * 2 * F;
        cu_st(out, o16, i, cu_ld(x, x16, in + j) * sd_gelu_f(cu_ld(x, x16, in + F + j)));
    }
}

/* The same, 4 outputs per thread (F % 4 == 0, both aligned to 4 elements):
 * one 64-bit division per 4 values and 16-byte (float32) or 8-byte (fp16)
 * accesses. n4 = n / 4, F4 = F / 4. */
template <typename TX, typename TO>
__global__ void geglu4_kernel(const void *__restrict__ x_, void *__restrict__ out_, int64_t n4,
                              int F4)
{
    const TX *__restrict__ x = (const TX *)x_;
    TO *__restrict__ out = (TO *)out_;
    GS_LOOP(i, n4)
    {
        int64_t r = i / F4;
        int j = (int)(i % F4);
        const float4 a = ld4(x, r * 2 * F4 + j), g = ld4(x, r * 2 * F4 + F4 + j);
        st4(out, i, make_float4(a.x * sd_gelu_f(g.x), a.y * sd_gelu_f(g.y), a.z * sd_gelu_f(g.z),
                                a.w * sd_gelu_f(g.w)));
    }
}

int cu_geglu(sd_backend *be, const sd_tensor *x, sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    if (cu_types_ok(cb, "geglu", x, out, NULL, NULL)) return -1;
    if (out->n != x->n || out->h != x->h || out->w != x->w || x->c != 2 * out->c)
        return cu_fail(cb, "geglu: input must have twice the output's channels");
    if (out->data == x->data) return cu_fail(cb, "geglu: output must not alias the input");
    int64_t n = (int64_t)sd_tensor_numel_of(out);
    if (out->c % 4 == 0 && cu_aligned4(x) && cu_aligned4(out)) {
        static void (*const table[4])(const void *, void *, int64_t, int) =
            CU_T2_TABLE(geglu4_kernel);
        void (*geglu4)(const void *, void *, int64_t, int) = table[cu_ti2(x, out)];
        SD_LAUNCH(geglu4, cu_grid(cb, (size_t)n / 4, 256), 256, 0, cb->stream,
                  (const void *)x->data, (void *)out->data, n / 4, out->c / 4);
    } else {
        SD_LAUNCH(geglu_kernel, cu_grid(cb, (size_t)n, 256), 256, 0, cb->stream,
                  (const void *)x->data, cu_is_f16(x), (void *)out->data, cu_is_f16(out), n,
                  out->c);
    }
    return cu_launched(cb, "geglu");
}

/* 4 values a thread, the n % 4 tail as act4_kernel. */
template <typename TA, typename TB, typename TO>
__global__ void add4_kernel(const void *a_, const void *b_, void *out_, int64_t n)
{
    const TA *a = (const TA *)a_;
    const TB *b = (const TB *)b_;
    TO *out = (TO *)out_;
    const int64_t n4 = n / 4;
    GS_LOOP(i, n4)
    {
        const float4 u = ld4(a, i), v = ld4(b, i);
        st4(out, i, make_float4(u.x + v.x, u.y + v.y, u.z + v.z, u.w + v.w));
    }
    const int64_t t = n4 * 4 + thread_index();
    if (t < n) st1(out, t, ld1(a, t) + ld1(b, t));
}

__global__ void add_kernel(const void *a, bool a16, const void *b, bool b16, void *out, bool o16,
                           int64_t n)
{
    GS_LOOP(i, n) cu_st(out, o16, i, cu_ld(a, a16, i) + cu_ld(b, b16, i));
}

int cu_add(sd_backend *be, const sd_tensor *a, const sd_tensor *b, sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    if (cu_types_ok(cb, "add", a, b, out, NULL)) return -1;
    if (!cu_same_shape(a, b) || !cu_same_shape(a, out))
        return cu_fail(cb, "add: operand shapes differ");
    if (cu_inplace_ok(cb, "add", a, out) || cu_inplace_ok(cb, "add", b, out)) return -1;
    int64_t n = (int64_t)sd_tensor_numel_of(a);
    if (cu_aligned4(a) && cu_aligned4(b) && cu_aligned4(out)) {
        static void (*const table[8])(const void *, const void *, void *, int64_t) =
            CU_T3_TABLE(add4_kernel);
        void (*add4)(const void *, const void *, void *, int64_t) = table[cu_ti3(a, b, out)];
        SD_LAUNCH(add4, cu_grid(cb, (size_t)n / 4, 256), 256, 0, cb->stream, (const void *)a->data,
                  (const void *)b->data, (void *)out->data, n);
    } else {
        SD_LAUNCH(add_kernel, cu_grid(cb, (size_t)n, 256), 256, 0, cb->stream,
                  (const void *)a->data, cu_is_f16(a), (const void *)b->data, cu_is_f16(b),
                  (void *)out->data, cu_is_f16(out), n);
    }
    return cu_launched(cb, "add");
}

/* out[n,h,w,c] = x[n,h,w,c] + v[n,c] */
__global__ void add_pc_kernel(const void *x, bool x16, const void *__restrict__ v, bool v16,
                              void *out, bool o16, int64_t n, int64_t hwc, int C)
{
    GS_LOOP(i, n) cu_st(out, o16, i, cu_ld(x, x16, i) + cu_ld(v, v16, (i / hwc) * C + i % C));
}

/* The same, 4 channels a thread (C % 4 == 0, every operand aligned to 4
 * elements): grid (blocks, N), blockIdx.y = sample, so the index arithmetic
 * is 32-bit (hwc4 = H*W*C/4 below 2^31, checked by the caller). */
template <typename TX, typename TV, typename TO>
__global__ void add_pc4_kernel(const void *x_, const void *__restrict__ v_, void *out_, int hwc4,
                               int C4)
{
    const int64_t n = blockIdx.y;
    const TX *x = (const TX *)x_ + n * hwc4 * 4;
    const TV *v = (const TV *)v_ + n * C4 * 4;
    TO *out = (TO *)out_ + n * hwc4 * 4;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < hwc4; i += gridDim.x * blockDim.x) {
        const float4 a = ld4(x, i), b = ld4(v, i % C4);
        st4(out, i, make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w));
    }
}

int cu_add_per_channel(sd_backend *be, const sd_tensor *x, const sd_tensor *v, sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    if (cu_types_ok(cb, "add_per_channel", x, v, out, NULL)) return -1;
    if (!cu_same_shape(x, out) || v->n != x->n || v->c != x->c || v->h * v->w != 1)
        return cu_fail(cb, "add_per_channel: shapes do not fit");
    if (cu_inplace_ok(cb, "add_per_channel", x, out) ||
        cu_inplace_ok(cb, "add_per_channel", v, out))
        return -1;
    int64_t n = (int64_t)sd_tensor_numel_of(x);
    const int64_t hwc = (int64_t)x->h * x->w * x->c;
    if (n == 0) return 0;
    if (x->c % 4 == 0 && hwc / 4 < 0x7fffffff && x->n <= 65535 && cu_aligned4(x) &&
        cu_aligned4(v) && cu_aligned4(out)) {
        static void (*const table[8])(const void *, const void *, void *, int, int) =
            CU_T3_TABLE(add_pc4_kernel);
        void (*add_pc4)(const void *, const void *, void *, int, int) = table[cu_ti3(x, v, out)];
        unsigned blocks = cu_grid(cb, (size_t)(hwc / 4), 256);
        /* the samples already multiply the blocks (as gn_apply4) */
        if (x->n > 1) blocks = (blocks + (unsigned)x->n - 1) / (unsigned)x->n;
        SD_LAUNCH(add_pc4, dim3(blocks, (unsigned)x->n), 256, 0, cb->stream,
                  (const void *)x->data, (const void *)v->data, (void *)out->data,
                  (int)(hwc / 4), x->c / 4);
    } else {
        SD_LAUNCH(add_pc_kernel, cu_grid(cb, (size_t)n, 256), 256, 0, cb->stream,
                  (const void *)x->data, cu_is_f16(x), (const void *)v->data, cu_is_f16(v),
                  (void *)out->data, cu_is_f16(out), n, hwc, x->c);
    }
    return cu_launched(cb, "add_per_channel");
}

template <typename TA, typename TB, typename TO>
__global__ void concat_kernel(const void *__restrict__ a_, const void *__restrict__ b_,
                              void *__restrict__ out_, int64_t n, int ca, int cb_)
{
    const TA *__restrict__ a = (const TA *)a_;
    const TB *__restrict__ b = (const TB *)b_;
    TO *__restrict__ out = (TO *)out_;
    const int c = ca + cb_;
    GS_LOOP(i, n)
    {
        int64_t r = i / c;
        int j = (int)(i % c);
        st1(out, i, j < ca ? ld1(a, r * ca + j) : ld1(b, r * cb_ + (j - ca)));
    }
}

int cu_concat_channels(sd_backend *be, const sd_tensor *a, const sd_tensor *b, sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    if (cu_types_ok(cb, "concat_channels", a, b, out, NULL)) return -1;
    if (a->n != b->n || a->h != b->h || a->w != b->w || out->n != a->n || out->h != a->h ||
        out->w != a->w || out->c != a->c + b->c)
        return cu_fail(cb, "concat_channels: shapes do not fit");
    if (out->data == a->data || out->data == b->data)
        return cu_fail(cb, "concat_channels: output must not alias an input");
    int64_t n = (int64_t)sd_tensor_numel_of(out);
    static void (*const table[8])(const void *, const void *, void *, int64_t, int, int) =
        CU_T3_TABLE(concat_kernel);
    void (*concat)(const void *, const void *, void *, int64_t, int, int) =
        table[cu_ti3(a, b, out)];
    SD_LAUNCH(concat, cu_grid(cb, (size_t)n, 256), 256, 0, cb->stream, (const void *)a->data,
              (const void *)b->data, (void *)out->data, n, a->c, b->c);
    return cu_launched(cb, "concat_channels");
}

/* Nearest-neighbour resize to [N, OH, OW, C]: PyTorch's "nearest" with an
 * explicit size, src = min(floor(dst * (float)in / out), in - 1), the scale
 * computed in float32 as the CPU backend does (exact 2x is the same rule). */
template <typename TX, typename TO>
__global__ void upsample_nearest_kernel(const void *__restrict__ x_, void *__restrict__ out_,
                                        int64_t n, int H, int W, int C, int OH, int OW)
{
    const TX *__restrict__ x = (const TX *)x_;
    TO *__restrict__ out = (TO *)out_;
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
        /* fp16 -> fp16 copies the value exactly (an fp16 value is a float) */
        st1(out, i, ld1(x, ((img * H + iy) * W + ix) * C + c));
    }
}

int cu_upsample_nearest2x(sd_backend *be, const sd_tensor *x, sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    if (cu_types_ok(cb, "upsample_nearest", x, out, NULL, NULL)) return -1;
    if (out->n != x->n || out->c != x->c || out->h < x->h || out->w < x->w || x->h < 1 ||
        x->w < 1)
        return cu_fail(cb, "upsample_nearest: output [%d,%d,%d,%d] does not enlarge [%d,%d,%d,%d]",
                       out->n, out->h, out->w, out->c, x->n, x->h, x->w, x->c);
    if (out->data == x->data) return cu_fail(cb, "upsample_nearest: output must not alias the input");
    int64_t n = (int64_t)sd_tensor_numel_of(out);
    if (n == 0) return 0;
    static void (*const table[4])(const void *, void *, int64_t, int, int, int, int, int) =
        CU_T2_TABLE(upsample_nearest_kernel);
    void (*upsample)(const void *, void *, int64_t, int, int, int, int, int) =
        table[cu_ti2(x, out)];
    SD_LAUNCH(upsample, cu_grid(cb, (size_t)n, 256), 256, 0, cb->stream, (const void *)x->data,
              (void *)out->data, n, x->h, x->w, x->c, out->h, out->w);
    return cu_launched(cb, "upsample_nearest");
}

/* out[i, k] = cos(t_i f_k), out[i, half + k] = sin(t_i f_k); out float32 or
 * fp16 (o16), computed in float32 either way */
__global__ void timestep_kernel(const float *__restrict__ t, void *__restrict__ out, bool o16,
                                int n, int half_dim)
{
    GS_LOOP(i, (int64_t)n * half_dim)
    {
        int row = (int)(i / half_dim), k = (int)(i % half_dim);
        float arg = t[row] * sd_timestep_freq(k, half_dim);
        cu_st(out, o16, (int64_t)row * 2 * half_dim + k, cosf(arg));
        cu_st(out, o16, (int64_t)row * 2 * half_dim + half_dim + k, sinf(arg));
    }
}

int cu_timestep_embedding(sd_backend *be, const float *t_host, sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    if (cu_types_ok(cb, "timestep_embedding", out, NULL, NULL, NULL)) return -1;
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
                  cb->stream, (const float *)t, (void *)out->data, cu_is_f16(out), out->n,
                  half_dim);
        rc = cu_launched(cb, "timestep_embedding");
    }
    cu_free(cb, t);
    return rc;
}

/* out[r, c] = table[ids[r], c] (+ pos[r % L, c]); table fp16 bits or float,
 * out float32 or fp16 (o16; the sum rounded once) */
template <int F16>
__global__ void embedding_kernel(const void *__restrict__ table, const int *__restrict__ ids,
                                 const float *__restrict__ pos, void *__restrict__ out, bool o16,
                                 int64_t n, int L, int C)
{
    GS_LOOP(i, n)
    {
        int64_t r = i / C;
        int c = (int)(i % C);
        int64_t src = (int64_t)ids[r] * C + c;
        float v = F16 ? cu_h2f(((const uint16_t *)table)[src]) : ((const float *)table)[src];
        if (pos) v += pos[(r % L) * C + c];
        cu_st(out, o16, i, v);
    }
}

int cu_embedding(sd_backend *be, const sd_tensor_info *table, const int *ids_host,
                 const sd_tensor_info *pos, sd_tensor *out)
{
    cuda_backend *cb = cu_of(be);
    if (cu_types_ok(cb, "embedding", out, NULL, NULL, NULL)) return -1;
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
        const bool o16 = cu_is_f16(out);
        if (table->dtype == SD_DTYPE_F16)
            SD_LAUNCH(embedding_kernel<1>, grid, 256, 0, cb->stream, tab, (const int *)ids, p,
                      (void *)out->data, o16, n, L, C);
        else
            SD_LAUNCH(embedding_kernel<0>, grid, 256, 0, cb->stream, tab, (const int *)ids, p,
                      (void *)out->data, o16, n, L, C);
        rc = cu_launched(cb, "embedding");
    }
    cu_free(cb, ids);
    return rc;
}

/* [n][c][hw] -> [n][hw][c] (to_nhwc) or back; i walks the destination.
 * The NHWC side is float32 or fp16 bits (nhwc_f16); the NCHW side (the
 * host's staging copy) is always float32. */
template <int TO_NHWC>
__global__ void transpose_kernel(const void *__restrict__ src, void *__restrict__ dst, int64_t total,
                                 int c, int hw, bool nhwc_f16)
{
    GS_LOOP(i, total)
    {
        int64_t img = i / ((int64_t)c * hw);
        int64_t rem = i % ((int64_t)c * hw);
        if (TO_NHWC) {
            int p = (int)(rem / c), ch = (int)(rem % c);
            cu_st(dst, nhwc_f16, i, ((const float *)src)[(img * c + ch) * hw + p]);
        } else {
            int ch = (int)(rem / hw), p = (int)(rem % hw);
            ((float *)dst)[i] = cu_ld(src, nhwc_f16, (img * hw + p) * c + ch);
        }
    }
}

int cu_nchw_to_nhwc(cuda_backend *cb, const float *src, void *dst, bool dst_f16, int n, int c,
                    int hw)
{
    int64_t total = (int64_t)n * c * hw;
    SD_LAUNCH(transpose_kernel<1>, cu_grid(cb, (size_t)total, 256), 256, 0, cb->stream,
              (const void *)src, dst, total, c, hw, dst_f16);
    return cu_launched(cb, "layout transpose");
}

int cu_nhwc_to_nchw(cuda_backend *cb, const void *src, bool src_f16, float *dst, int n, int c,
                    int hw)
{
    int64_t total = (int64_t)n * c * hw;
    SD_LAUNCH(transpose_kernel<0>, cu_grid(cb, (size_t)total, 256), 256, 0, cb->stream, src,
              (void *)dst, total, c, hw, src_f16);
    return cu_launched(cb, "layout transpose");
}
