/* thread_pool.h - a fixed set of worker threads for the CPU backend.
 *
 * sd_pool_run() hands out task indices 0..n_tasks-1 to the calling thread
 * and the workers (dynamic assignment through an atomic counter) and returns
 * when every task has finished. Workers spin briefly after a job before they
 * sleep, because the networks issue thousands of short jobs per pass.
 * One job at a time: sd_pool_run must not be called from inside a task or
 * from two threads at once (the backend is single-caller by contract).
 */
#ifndef SD_CPU_THREAD_POOL_H
#define SD_CPU_THREAD_POOL_H

#include <stdint.h>

typedef struct sd_pool sd_pool;

/* task: 0..n_tasks-1; thread: 0..threads-1 (0 is the caller), for per-thread
 * scratch memory. */
typedef void (*sd_pool_task_fn)(void *ctx, int64_t task, int thread);

/* n_threads >= 1 counts the caller; NULL when threads cannot be created. */
sd_pool *sd_pool_create(int n_threads);
void sd_pool_destroy(sd_pool *p);                  /* NULL is fine */
int sd_pool_threads(const sd_pool *p);
void sd_pool_run(sd_pool *p, int64_t n_tasks, sd_pool_task_fn fn, void *ctx);

/* Range helper: calls fn(ctx, begin, end, thread) on contiguous chunks of
 * [0, n) of at least `grain` items, about 4 chunks per thread. */
typedef void (*sd_pool_range_fn)(void *ctx, int64_t begin, int64_t end, int thread);
void sd_pool_for(sd_pool *p, int64_t n, int64_t grain, sd_pool_range_fn fn, void *ctx);

#endif
