/* Filling an hn_error (types.h) without going through the host: header-only
 * helpers for code that has no host API at hand, such as lib/ sources, the
 * storage plugins' connection code and the sources a plugin shares with
 * its unit tests. They behave as the host's api->error: err may be NULL
 * (nothing is written), rc NULL means "", and the result is always
 * HN_ERROR, so a failing path reads `return hn_error_set(err, 404, ...);`. */
#ifndef HN_ERROR_H
#define HN_ERROR_H

#include <stdarg.h>
#include <stdio.h>

#include "types.h"

__attribute__((format(printf, 4, 0))) static inline hn_rc
hn_error_setv(hn_error *err, int status, const char *rc, const char *fmt, va_list ap) {
    if (err) {
        err->status = status;
        snprintf(err->rc, sizeof err->rc, "%s", rc ? rc : "");
        vsnprintf(err->message, sizeof err->message, fmt, ap);
    }
    return HN_ERROR;
}

__attribute__((format(printf, 4, 5))) static inline hn_rc
hn_error_set(hn_error *err, int status, const char *rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    hn_rc r = hn_error_setv(err, status, rc, fmt, ap);
    va_end(ap);
    return r;
}

#endif
