/* thread_pool.c - see thread_pool.h. */
#include "backend/cpu/thread_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

/* How long an idle worker polls for the next job before it blocks (pause
 * iterations, roughly 50-100 us): long enough to bridge the gap between two
 * ops of a network, short enough not to steal a core for nothing. */
#define SPIN_ITERS 4000

struct sd_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv_work;
    pthread_cond_t cv_done;
    atomic_uint generation;     /* bumped per job (and for shutdown) */
    atomic_int next_task;
    atomic_int active;          /* workers still inside the current job */
    bool stop;
    /* the current job (written before generation is bumped) */
    sd_pool_task_fn fn;
    void *ctx;
    int64_t n_tasks;
};

typedef struct worker_arg {
    sd_pool *pool;
    int index;
} worker_arg;

static void do_tasks(sd_pool *p, int thread)
{
    for (;;) {
        int64_t t = atomic_fetch_add(&p->next_task, 1);
        if (t >= p->n_tasks) break;
        p->fn(p->ctx, t, thread);
    }
}

static void *worker_main(void *arg)
{
    worker_arg *wa = arg;
    sd_pool *p = wa->pool;
    int index = wa->index;
    free(wa);
    /* generation was 0 when this worker was created; reading it here instead
     * would skip a job posted before the thread got scheduled */
    unsigned seen = 0;
    for (;;) {
        unsigned g = seen;
        for (int i = 0; i < SPIN_ITERS && (g = atomic_load(&p->generation)) == seen; i++)
            CPU_RELAX();
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load(&p->generation)) == seen && !p->stop)
                pthread_cond_wait(&p->cv_work, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        seen = g;
        if (p->stop) break;
        do_tasks(p, index);
        if (atomic_fetch_sub(&p->active, 1) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

sd_pool *sd_pool_create(int n_threads)
{
    if (n_threads < 1) n_threads = 1;
    sd_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    atomic_init(&p->generation, 0);
    atomic_init(&p->next_task, 0);
    atomic_init(&p->active, 0);
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) { free(p); return NULL; }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (wa) {
            wa->pool = p;
            wa->index = i;
        }
        if (!wa || pthread_create(&p->threads[i], NULL, worker_main, wa) != 0) {
            free(wa);
            p->n_threads = i;       /* destroy joins the ones that started */
            sd_pool_destroy(p);
            return NULL;
        }
    }
    return p;
}

void sd_pool_destroy(sd_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv_work);
    pthread_cond_destroy(&p->cv_done);
    free(p->threads);
    free(p);
}

int sd_pool_threads(const sd_pool *p)
{
    return p ? p->n_threads : 1;
}

void sd_pool_run(sd_pool *p, int64_t n_tasks, sd_pool_task_fn fn, void *ctx)
{
    if (n_tasks <= 0) return;
    if (!p || p->n_threads == 1 || n_tasks == 1) {
        for (int64_t t = 0; t < n_tasks; t++) fn(ctx, t, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store(&p->next_task, 0);
    atomic_store(&p->active, p->n_threads - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);

    do_tasks(p, 0);

    for (int i = 0; i < SPIN_ITERS && atomic_load(&p->active) > 0; i++) CPU_RELAX();
    if (atomic_load(&p->active) > 0) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->active) > 0) pthread_cond_wait(&p->cv_done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}

typedef struct range_ctx {
    sd_pool_range_fn fn;
    void *ctx;
    int64_t n, chunk;
} range_ctx;

static void range_task(void *arg, int64_t task, int thread)
{
    range_ctx *r = arg;
    int64_t b = task * r->chunk;
    int64_t e = b + r->chunk < r->n ? b + r->chunk : r->n;
    r->fn(r->ctx, b, e, thread);
}

void sd_pool_for(sd_pool *p, int64_t n, int64_t grain, sd_pool_range_fn fn, void *ctx)
{
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    int threads = sd_pool_threads(p);
    int64_t chunk = (n + 4 * threads - 1) / (4 * threads);
    if (chunk < grain) chunk = grain;
    range_ctx r = { fn, ctx, n, chunk };
    sd_pool_run(p, (n + chunk - 1) / chunk, range_task, &r);
}
