/* storage-sqlite: commit coordination inside one process: the write gate
 * and group commit.
 *
 * Write gate. SQLite allows one writer at a time and makes the others poll
 * (sleep, retry) until busy_timeout. With many threads that polling wastes
 * most of the time: measured here, 64 threads committing got 1,000 commits/s
 * where one thread gets 5,000. So the store lets its own writers queue on a
 * gate (a lock that wakes the next waiter at once) before they touch SQLite's
 * lock: a transaction takes it at begin and gives it back at commit/rollback,
 * a write outside a transaction holds it while it runs. Readers never take it
 * (WAL readers do not block). SQLite's own lock and busy_timeout still guard
 * against other processes (e.g. a `horde-node user create` next to a node).
 * The gate is a flag under a mutex, not a mutex, so a transaction may end on
 * another thread than the one that began it.
 *
 * Group commit.
 * In group mode connections run with synchronous=NORMAL: a COMMIT appends its
 * frames to the WAL with write() and returns without fsync (SQLite still keeps
 * the file consistent across a power cut, it only may lose the newest
 * commits). Our commit then calls sq_group_sync_wait, which returns once an
 * fsync of the WAL that *started after* this commit's frames were written has
 * finished. One caller at a time runs the fsync (the leader); everyone who
 * committed before it started is covered by it, so N concurrent commits cost
 * about one fsync instead of N, and the fsync runs outside SQLite's write lock
 * so the next writers do not wait for it.
 *
 * An fsync error is not retried (the kernel may already have dropped the dirty
 * pages): the coordinator is poisoned and every later wait fails, so the node
 * stops acknowledging writes it cannot guarantee. */
#ifndef SQ_SYNC_H
#define SQ_SYNC_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include <hn/types.h>

typedef struct sq_write_gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool held;
} sq_write_gate;

void sq_write_gate_init(sq_write_gate *g);
void sq_write_gate_destroy(sq_write_gate *g);
/* Waits up to timeout_ms for the gate; false when it timed out. */
bool sq_write_gate_enter(sq_write_gate *g, int timeout_ms);
void sq_write_gate_leave(sq_write_gate *g);

typedef struct sq_group_sync {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t written;  /* commits whose frames are in the WAL (ticket counter) */
    uint64_t synced;   /* every ticket <= synced is durable */
    bool running;      /* a leader is in fsync */
    bool poisoned;     /* an fsync failed: refuse from now on */
    uint64_t fsyncs;   /* how many fsyncs ran (for tests and benchmarks) */
} sq_group_sync;

void sq_group_sync_init(sq_group_sync *g);
void sq_group_sync_destroy(sq_group_sync *g);

/* Called right after a write committed on `db` (the caller's connection, in
 * autocommit again). Blocks until that commit is durable. HN_ERROR with err
 * filled when the fsync failed (now or before). */
hn_rc sq_group_sync_wait(sq_group_sync *g, sqlite3 *db, hn_error *err);

#endif
