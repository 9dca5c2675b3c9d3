/* error_text: the engine's error convention. Functions that can fail take
 * (char *err, size_t errlen): a caller-owned buffer (may be NULL/0) that gets
 * one line saying what went wrong. */
#ifndef SD_ERROR_TEXT_H
#define SD_ERROR_TEXT_H

#include <stddef.h>

/* Writes the printf-style message into err (when err && errlen) and returns
 * -1, so a failing path reads `return sd_fail(err, errlen, "...", ...);`. */
int sd_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
