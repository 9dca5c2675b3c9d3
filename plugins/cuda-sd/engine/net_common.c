/* net_common.c - see net_common.h. */
#include "engine/net_common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const sd_tensor_info *lookup(sd_net_loader *l, bool required, const char *fmt,
                                    va_list ap)
{
    char name[512];
    vsnprintf(name, sizeof name, fmt, ap);
    const sd_tensor_info *t = sd_model_file_find(l->file, name);
    if (!t && required && !l->failed) {
        l->failed = true;
        if (l->err)
            snprintf(l->err, l->errlen, "%s: missing tensor '%s'",
                     sd_model_file_path(l->file), name);
    }
    return t;
}

const sd_tensor_info *sd_net_get(sd_net_loader *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const sd_tensor_info *t = lookup(l, true, fmt, ap);
    va_end(ap);
    return t;
}

const sd_tensor_info *sd_net_opt(sd_net_loader *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const sd_tensor_info *t = lookup(l, false, fmt, ap);
    va_end(ap);
    return t;
}

sd_layer_w sd_net_layer(sd_net_loader *l, bool need_bias, const char *fmt, ...)
{
    char base[480];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(base, sizeof base, fmt, ap);
    va_end(ap);
    sd_layer_w r;
    r.w = sd_net_get(l, "%s.weight", base);
    r.b = need_bias ? sd_net_get(l, "%s.bias", base) : sd_net_opt(l, "%s.bias", base);
    return r;
}

bool sd_net_fail(sd_net_loader *l, const char *fmt, ...)
{
    if (l->failed) return false;
    l->failed = true;
    if (l->err) {
        char msg[400];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        snprintf(l->err, l->errlen, "%s: %s", sd_model_file_path(l->file), msg);
    }
    return false;
}

bool sd_net_check(sd_net_loader *l, const sd_tensor_info *t, int ndim, long long d0,
                  long long d1)
{
    if (!t) return false;   /* already reported as missing */
    if (t->ndim != ndim || (d0 >= 0 && t->shape[0] != d0) ||
        (d1 >= 0 && ndim > 1 && t->shape[1] != d1))
        return sd_net_fail(l, "tensor '%s' has an unexpected shape (%d-D, [%lld, %lld, ...]), "
                              "expected %d-D [%lld, %lld, ...]",
                           t->name, t->ndim, (long long)t->shape[0],
                           (long long)(t->ndim > 1 ? t->shape[1] : 0), ndim, d0, d1);
    return true;
}

int sd_net_backend_error(sd_backend *be, const char *what, char *err, size_t errlen)
{
    if (err) snprintf(err, errlen, "%s: %s", what, sd_backend_error(be));
    return -1;
}
