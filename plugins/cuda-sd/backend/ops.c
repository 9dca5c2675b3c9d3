/* ops.c - the backend-independent parts of the ops interface: error
 * reporting, cancellation, tensor allocation through the backend's vtable. */
#include "backend/ops.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *sd_backend_error(const sd_backend *be)
{
    return be ? be->err : "no backend";
}

void sd_backend_destroy(sd_backend *be)
{
    if (be) be->ops->destroy(be);
}

void sd_backend_set_cancel_flag(sd_backend *be, volatile int *flag)
{
    be->cancel_flag = flag;
}

bool sd_backend_cancelled(const sd_backend *be)
{
    return be->cancel_flag && *be->cancel_flag;
}

int sd_backend_fail(sd_backend *be, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(be->err, sizeof be->err, fmt, ap);
    va_end(ap);
    return -1;
}

static int tensor_new_typed(sd_backend *be, sd_tensor *t, int n, int h, int w, int c,
                            sd_act_type type)
{
    memset(t, 0, sizeof *t);
    if (n <= 0 || h <= 0 || w <= 0 || c <= 0)
        return sd_backend_fail(be, "tensor shape [%d,%d,%d,%d] is empty or negative", n, h, w, c);
    size_t numel = (size_t)n * (size_t)h * (size_t)w * (size_t)c;
    /* alloc counts float32 slots: an fp16 tensor takes half as many */
    size_t slots = type == SD_ACT_F16 ? (numel + 1) / 2 : numel;
    float *p = be->ops->alloc(be, slots);
    if (!p)
        return sd_backend_fail(be, "out of memory for a [%d,%d,%d,%d] tensor (%zu MB)", n, h, w,
                               c, slots * sizeof(float) >> 20);
    t->data = p;
    t->n = n;
    t->h = h;
    t->w = w;
    t->c = c;
    t->type = type;
    return 0;
}

int sd_tensor_new(sd_backend *be, sd_tensor *t, int n, int h, int w, int c)
{
    return tensor_new_typed(be, t, n, h, w, c, SD_ACT_F32);
}

int sd_tensor_new_inner(sd_backend *be, sd_tensor *t, int n, int h, int w, int c)
{
    return tensor_new_typed(be, t, n, h, w, c, be->inner_type);
}

void sd_tensor_free(sd_backend *be, sd_tensor *t)
{
    if (!t) return;
    if (t->data) be->ops->release(be, t->data);
    memset(t, 0, sizeof *t);
}
