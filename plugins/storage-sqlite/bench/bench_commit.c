/* storage-sqlite: durable commits per second, FULL vs group commit, for 1..N
 * threads each inserting one row per commit. A benchmark, not a test:
 *   make build/bench/storage-sqlite/bench_commit && build/bench/storage-sqlite/bench_commit [DIR]
 * DIR (default /tmp) should be on the disk the node will use. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sqlite_store.h"

static const hn_storage_vt *const vt = &sq_storage_vt;

typedef struct job {
    sq_store *s;
    int n;
    int id;
} job;

static void *run(void *p) {
    job *j = p;
    hn_error err = {0};
    hn_db *c = vt->acquire(j->s, &err);
    for (int i = 0; i < j->n; i++) {
        hn_value a[] = {HN_V_INT(j->id), HN_V_INT(i), HN_V_TEXT("a typical row of some sixty bytes of payload text.")};
        if (vt->exec(c, "INSERT INTO b VALUES (?, ?, ?)", a, 3, NULL, &err) != HN_OK) {
            fprintf(stderr, "%s\n", err.message);
            exit(1);
        }
    }
    vt->release(j->s, c);
    return NULL;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    int threads[] = {1, 4, 16, 64};
    printf("| mode | threads | commits/s |\n|---|---|---|\n");
    for (int mode = 0; mode < 2; mode++) {
        for (size_t t = 0; t < sizeof threads / sizeof *threads; t++) {
            char path[512];
            snprintf(path, sizeof path, "%s/bench-%d.db", dir, (int)getpid());
            sq_options opt = {.path = path, .busy_timeout_ms = 60000, .max_connections = 128,
                              .stmt_cache_size = 16, .sync_mode = (sq_sync_mode)mode};
            sq_store *s = sq_store_new(&opt);
            hn_error err = {0};
            if (sq_store_open(s, &err) != HN_OK) {
                fprintf(stderr, "%s\n", err.message);
                return 1;
            }
            hn_db *c = vt->acquire(s, &err);
            vt->exec(c, "CREATE TABLE b (t INTEGER, i INTEGER, payload TEXT)", NULL, 0, NULL, &err);
            vt->release(s, c);
            int nt = threads[t], per = 4000 / nt;
            pthread_t th[64];
            job jobs[64];
            double t0 = now();
            for (int i = 0; i < nt; i++) {
                jobs[i] = (job){s, per, i};
                pthread_create(&th[i], NULL, run, &jobs[i]);
            }
            for (int i = 0; i < nt; i++)
                pthread_join(th[i], NULL);
            double dt = now() - t0;
            printf("| %s | %d | %.0f |\n", mode ? "group" : "full", nt, nt * per / dt);
            sq_store_free(s);
            char rm[2048];
            snprintf(rm, sizeof rm, "rm -f %s %s-wal %s-shm", path, path, path);
            if (system(rm) != 0)
                return 1;
        }
    }
    return 0;
}
