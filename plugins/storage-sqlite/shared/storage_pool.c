/* storage-sqlite/shared: a provider's connection pool (storage_pool.h). */
#include "storage-sqlite/shared/storage_pool.h"

#include <hn/error.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void set_error(hn_error *err, int status, const char *rc, const char *message) {
    hn_error_set(err, status, rc, "%s", message);
}

int storage_pool_init(storage_pool *p) {
    if (p->max_connections < 1)
        p->max_connections = 1;
    if (p->busy_timeout_ms < 0)
        p->busy_timeout_ms = 0;
    p->idle = calloc((size_t)p->max_connections, sizeof *p->idle);
    if (!p->idle)
        return -1;
    p->n_idle = p->open_count = 0;
    p->opened = p->shutting_down = false;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->returned, NULL);
    return 0;
}

void storage_pool_start(storage_pool *p, hn_db *first) {
    pthread_mutex_lock(&p->mu);
    p->open_count = 1;
    p->idle[0] = first;
    p->n_idle = 1;
    p->shutting_down = false;
    p->opened = true;
    pthread_mutex_unlock(&p->mu);
}

bool storage_pool_opened(storage_pool *p) {
    pthread_mutex_lock(&p->mu);
    bool opened = p->opened;
    pthread_mutex_unlock(&p->mu);
    return opened;
}

hn_db *storage_pool_acquire(storage_pool *p, hn_error *err) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += p->busy_timeout_ms / 1000;
    deadline.tv_nsec += (long)(p->busy_timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (!p->opened || p->shutting_down) {
            pthread_mutex_unlock(&p->mu);
            char m[96];
            snprintf(m, sizeof m, "storage: the %s store is not running", p->name);
            set_error(err, 500, "StorageError", m);
            return NULL;
        }
        if (p->n_idle > 0) {
            hn_db *c = p->idle[--p->n_idle];
            pthread_mutex_unlock(&p->mu);
            return c;
        }
        if (p->open_count < p->max_connections)
            break;
        if (pthread_cond_timedwait(&p->returned, &p->mu, &deadline) == ETIMEDOUT) {
            pthread_mutex_unlock(&p->mu);
            char m[96];
            snprintf(m, sizeof m, "storage: all %d connections are in use", p->max_connections);
            set_error(err, 503, "StorageBusy", m);
            return NULL;
        }
    }
    p->open_count++; /* reserve the slot, open outside the lock */
    pthread_mutex_unlock(&p->mu);
    hn_db *c = p->open(p->ctx, err);
    if (!c) {
        pthread_mutex_lock(&p->mu);
        p->open_count--;
        pthread_cond_signal(&p->returned);
        pthread_mutex_unlock(&p->mu);
    }
    return c;
}

void storage_pool_release(storage_pool *p, hn_db *c) {
    if (!c)
        return;
    pthread_mutex_lock(&p->mu);
    if (p->shutting_down || p->n_idle >= p->max_connections) {
        p->open_count--;
        pthread_mutex_unlock(&p->mu);
        p->close(c);
        return;
    }
    p->idle[p->n_idle++] = c;
    pthread_cond_signal(&p->returned);
    pthread_mutex_unlock(&p->mu);
}

int storage_pool_shutdown(storage_pool *p) {
    pthread_mutex_lock(&p->mu);
    p->shutting_down = true;
    while (p->n_idle > 0) {
        p->close(p->idle[--p->n_idle]);
        p->open_count--;
    }
    int lent = p->open_count;
    p->opened = false;
    pthread_cond_broadcast(&p->returned); /* waiters learn it is closed */
    pthread_mutex_unlock(&p->mu);
    return lent;
}

void storage_pool_destroy(storage_pool *p) {
    pthread_cond_destroy(&p->returned);
    pthread_mutex_destroy(&p->mu);
    free(p->idle);
    p->idle = NULL;
}
