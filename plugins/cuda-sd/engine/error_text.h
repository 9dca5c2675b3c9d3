/* error_text: the engine's error convention. Functions that can fail take
 * (char *err, size_t errlen): a caller-owned buffer (may be NULL/0) that gets
 * one line saying what went wrong. */
#ifndef SD_ERROR_TEXT_H
#define SD_ERROR_TEXT_H

#include <stddef.h>

/* Writes the printf-style message into err (when err && errlen) and returns
 * -1, so a failing path reads `return sd_fail(err, errlen, "...", ...);`. */
int sd_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The same with a "where: " prefix (a file name, or what was being read),
 * for errors about one input file. where must not be NULL. */
int sd_fail_in(char *err, size_t errlen, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
