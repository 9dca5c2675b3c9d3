/* broker: cluster mode, several broker nodes on one PostgreSQL database
 * (`cluster = true`; docs/DEPLOY.md).
 *
 * Each node keeps its in-memory index, but as a cache the database corrects:
 *   - a sync thread reads, every `cluster_sync_ms`, the requests, jobs and
 *     workers that any node changed since the last read (a `changed` column
 *     the database stamps on every insert and update) and merges them into
 *     the index; a node that misses a request or job it is asked about reads
 *     at once instead of waiting for the next round;
 *   - a pop claims its images in the database with a conditional update
 *     (`n = n - k WHERE n >= k AND state = 0`), committed in the same
 *     transaction as the job rows, so exactly one node hands each image out;
 *     a claim that fails tries the next candidate;
 *   - request and job rows are written with relative or guarded statements
 *     (store.c), so one node never overwrites another's change;
 *   - the periodic jobs that change rows (stale-job sweep, expiry) run on the
 *     node holding a session-level advisory lock (the leader); when its
 *     connection dies the lock goes with it and another node takes over.
 * Off (the default) nothing here runs and single-node behaviour is unchanged.
 * With storage-sqlite cluster mode is refused at start. */
#ifndef BR_CLUSTER_H
#define BR_CLUSTER_H

#include "broker.h"

/* After br_store_start: migration, this node's key range, the sync thread.
 * 0, or -1 with err. Does nothing when conf->cluster is off. */
int br_cluster_start(broker *b, hn_error *err);
void br_cluster_stop(broker *b);  /* joins the sync thread; frees b->cluster */
/* Should this node run the periodic row-changing jobs? Always true outside
 * cluster mode. */
bool br_cluster_leads(broker *b);
/* If id is not in the index, reads other nodes' changes now (cluster mode
 * only). Caller must not hold b->lock. */
void br_cluster_ensure_request(broker *b, const char *id);
void br_cluster_ensure_job(broker *b, const char *id);
/* Pop (caller holds b->lock): claims n images of r in the database and
 * commits op's statements in the same transaction. 1: claimed and committed
 * (op keeps only its answer); 0: another node took them; -1: database error
 * (err). */
int br_cluster_claim(broker *b, br_op *op, br_request *r, int n, hn_error *err);
/* Undoes the last n_jobs jobs a pop added to r after its claim failed;
 * taken: another node took the images (r waits for the next sync), else
 * they are given back. Caller holds b->lock. */
void br_cluster_unpop(broker *b, br_request *r, int n_jobs, bool taken);
/* br_job_fault in cluster mode: j's row becomes faulted only if it is still
 * processing (the first node to finish a job wins) and, only then and if
 * requeued, its request's n grows by one, in one statement: safe to run
 * again (br_op_retry) after a commit whose outcome was unknown. */
void br_cluster_job_fault(broker *b, const br_job *j, bool requeued, br_op *op);
/* Generate (cluster mode, a known user): the request's insert in op is
 * refused with 429 TooManyPrompts unless the user's images waiting in the
 * whole cluster (the table, under a per-user advisory lock) stay within
 * `concurrency`. Returns 0 or -1; nothing is added outside cluster mode. */
int br_cluster_guard_concurrency(broker *b, br_op *op, const br_request *r, long long concurrency);

/* Pop (cluster mode, an untrusted owner's new worker w, caller holds
 * b->lock): w's row is inserted now, under a per-user advisory lock, and
 * only if the owner's workers in the whole table then number at most
 * max_untrusted_workers + 1 (the horde refuses a new worker when more than
 * the limit exist). 0: inserted and committed; -1 with err: 403
 * TooManyWorkers, or a database error. Nothing is checked (0) outside
 * cluster mode. */
int br_cluster_reserve_worker(broker *b, const br_worker *w, hn_error *err);

/* Submit (cluster mode only): if op's commit fails, j goes back to processing
 * in the index, so the worker's retry is taken and no node's memory stays
 * ahead of the table (the worker's and users' counters keep the first try). */
void br_cluster_submit_on_fail(broker *b, br_op *op, const br_job *j);

/* A worker's fault (cluster mode only): if op's commit fails, j goes back to
 * processing in the index, as it still is in the table. */
void br_cluster_fault_on_fail(broker *b, br_op *op, const br_job *j, bool requeued);

/* ---- defined in store.c (they need br_op's insides) ---- */
/* Runs guard (which must change exactly one row; NULL: none) and then op's
 * statements in one transaction on a pool connection, now; on success op
 * keeps only its answer. 1, 0 (guard changed nothing: rolled back), -1 (err:
 * a database error, or the answer of a br_op_guard_max limit in op). */
int br_op_commit_now(broker *b, br_op *op, const char *guard, const hn_value *args, size_t nargs,
                     hn_error *err);
/* A worker row's attrs JSON to br_worker_attrs (as at load). */
void br_store_attrs_from_json(br_worker_attrs *a, const json_t *j);

#endif
