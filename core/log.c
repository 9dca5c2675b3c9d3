/* Logging: levels, to stderr or a file, one line per message with time,
 * level and who logged it. Writes are whole lines (one fprintf under a lock)
 * so lines from several threads never interleave. Secrets are the caller's
 * business: the core never logs config values marked HN_CONF_SECRET or
 * request headers. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core.h"

static hn_log_level g_level = HN_LOG_INFO;
static FILE *g_out; /* NULL = stderr */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void hn_log_set_level(hn_log_level level) { g_level = level; }

hn_log_level hn_log_get_level(void) { return g_level; }

int hn_log_parse_level(const char *name, hn_log_level *out) {
    for (int i = 0; i <= HN_LOG_DEBUG; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (hn_log_level)i;
            return 0;
        }
    }
    return -1;
}

int hn_log_open(const char *path, char *err, size_t errlen) {
    if (path == NULL || path[0] == '\0')
        return 0;
    FILE *f = fopen(path, "a");
    if (f == NULL) {
        snprintf(err, errlen, "cannot open log file %s: %s", path, strerror(errno));
        return -1;
    }
    setvbuf(f, NULL, _IOLBF, 0);
    pthread_mutex_lock(&g_lock);
    if (g_out != NULL)
        fclose(g_out);
    g_out = f;
    pthread_mutex_unlock(&g_lock);
    return 0;
}

void hn_log_close(void) {
    pthread_mutex_lock(&g_lock);
    if (g_out != NULL)
        fclose(g_out);
    g_out = NULL;
    pthread_mutex_unlock(&g_lock);
}

void hn_logv(const char *who, hn_log_level level, const char *fmt, va_list ap) {
    if (level > g_level)
        return;
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    pthread_mutex_lock(&g_lock);
    FILE *out = g_out != NULL ? g_out : stderr;
    fprintf(out, "%s.%03ldZ [%s] %s: %s\n", when, ts.tv_nsec / 1000000L, level_names[level],
            who != NULL ? who : "core", msg);
    pthread_mutex_unlock(&g_lock);
}

void hn_logf(const char *who, hn_log_level level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    hn_logv(who, level, fmt, ap);
    va_end(ap);
}
