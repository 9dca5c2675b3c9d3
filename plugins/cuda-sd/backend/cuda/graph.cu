/* graph.cu - CUDA graphs of a network pass (sd_backend_cuda_graph_run, see
 * backend/cuda_backend.h): the ops one callback queues are captured once
 * into a graph and replayed on later calls with one launch.
 *
 * Capture is attempted only in a steady state: the callback must not
 * upload weights (an upload during the capture discards it: the copy would
 * be replayed and its allocation is not capturable), grow the scratch
 * workspace or the cuBLASLt workspace (cu_workspace refuses while
 * capturing), or synchronise. Its activations come from the stream-ordered
 * pool, which capture turns into the graph's own memory nodes. A graph is
 * replayed only while every weight it read is still where it was: any
 * eviction or drop of weights (cb->wgen) invalidates it. Every failure of
 * the graph API falls back to running the callback eagerly, once and for
 * good for that slot when the API itself refuses.
 *
 * The callback may run twice for one call (a failed capture, then eagerly):
 * it must not keep state in `ud` from one run to the next.
 *
 * The same code runs in the CPU emulation, whose capture records the queued
 * work as closures and replays them at each launch, refusing what the real
 * API refuses (emu/cuda_emu.h), so the fallbacks and the baked pointers are
 * tested there too. */
#include <stdlib.h>

#include "backend/cuda/internal.h"

typedef struct cu_graph_slot {
    cudaGraphExec_t exec;        /* NULL: nothing captured yet */
    uint64_t wgen;               /* cb->wgen when captured */
    uint64_t wsgen;              /* cb->wsgen when captured (scratch address) */
    int refused;                 /* the graph API failed here: eager for good */
    int failed_captures;         /* in a row; one is expected after weights
                                    were dropped (the pass must upload) */
} cu_graph_slot;

int cu_graph_run(sd_backend *be, sd_cuda_graph **slotp, int (*fn)(void *ud), void *ud)
{
    cuda_backend *cb = cu_of(be);
    if (!cb->graphs || !slotp) return fn(ud);
    cu_graph_slot *s = (cu_graph_slot *)*slotp;
    if (!s) {
        s = (cu_graph_slot *)calloc(1, sizeof *s);
        if (!s) return fn(ud);
        *slotp = (sd_cuda_graph *)s;
    }
    if (s->refused) {
        cb->graph_eager++;
        return fn(ud);
    }
    if (s->exec && s->wgen == cb->wgen && s->wsgen == cb->wsgen) {
        if (cudaGraphLaunch(s->exec, cb->stream) == cudaSuccess) {
            cb->graph_launches++;
            return 0;
        }
        (void)cudaGetLastError();
    }
    /* (re)capture: a first pass, or weights moved since */
    uint64_t uploads = cb->n_uploads, wgen = cb->wgen, wsgen = cb->wsgen;
    cudaGraph_t g = NULL;
    if (cudaStreamBeginCapture(cb->stream, cudaStreamCaptureModeRelaxed) != cudaSuccess) {
        (void)cudaGetLastError();
        s->refused = 1;
        cb->graph_eager++;
        return fn(ud);
    }
    cb->capturing = 1;
    int rc = fn(ud);
    cb->capturing = 0;
    cudaError_t e = cudaStreamEndCapture(cb->stream, &g);
    bool usable = rc == 0 && e == cudaSuccess && g && cb->n_uploads == uploads && cb->wgen == wgen &&
                  cb->wsgen == wsgen;
    (void)cudaGetLastError();
    if (usable) {
        cudaGraphExec_t exec = NULL;
        if (s->exec) {
            /* same topology with other addresses (new K/V, new weights):
             * update in place, cheaper than a new instantiation */
            cudaGraphExecUpdateResultInfo info;
            if (cudaGraphExecUpdate(s->exec, g, &info) == cudaSuccess) exec = s->exec;
            (void)cudaGetLastError();
        }
        if (!exec) {
            if (s->exec) {
                /* its last launch may still run */
                (void)cudaStreamSynchronize(cb->stream);
                (void)cudaGraphExecDestroy(s->exec);
            }
            s->exec = NULL;
            if (cudaGraphInstantiate(&exec, g, 0) != cudaSuccess) {
                (void)cudaGetLastError();
                exec = NULL;
                s->refused = 1;
            }
        }
        (void)cudaGraphDestroy(g);
        if (exec) {
            s->exec = exec;
            s->wgen = cb->wgen;
            s->wsgen = cb->wsgen;
            if (cudaGraphLaunch(exec, cb->stream) == cudaSuccess) {
                cb->graph_captures++;
                cb->graph_launches++;
                s->failed_captures = 0;
                return 0;
            }
            (void)cudaGetLastError();
            s->refused = 1;
        }
    } else if (g) {
        (void)cudaGraphDestroy(g);
    }
    /* twice in a row: not a missing weight but something capture cannot
     * take (e.g. the pool's allocations): stop paying for the attempts */
    if (!usable && ++s->failed_captures >= 2) s->refused = 1;
    /* nothing of the callback ran during a capture: run it for real. A
     * failure of the callback itself (rc) shows again here, with its
     * error; uploads/evictions make the next call capture again. */
    cb->head.base.err[0] = '\0';
    cb->graph_eager++;
    return fn(ud);
}

void cu_graph_free(sd_backend *be, sd_cuda_graph *slot)
{
    cu_graph_slot *s = (cu_graph_slot *)slot;
    if (!s) return;
    if (s->exec) {
        (void)cudaStreamSynchronize(cu_of(be)->stream);
        (void)cudaGraphExecDestroy(s->exec);
    }
    (void)cudaGetLastError();
    free(s);
}
