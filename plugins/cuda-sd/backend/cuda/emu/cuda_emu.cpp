/* cuda_emu.cpp - the CPU emulation's runtime: fibers for CUDA threads,
 * barriers, launch checks, memory, and cuBLAS GEMMs (see cuda_emu.h). */
#include "backend/cuda/emu/cuda_emu.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define SD_EMU_ASAN 1
#include <sanitizer/common_interface_defs.h>
#endif

namespace sd_emu {

thread_local fiber_ids *cur_fiber;
thread_local launch_ids cur_launch;

/* ---- errors ----------------------------------------------------------------- */

static thread_local cudaError_t last_error = cudaSuccess;
static thread_local char last_detail[512];

static cudaError_t fail(cudaError_t e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static cudaError_t fail(cudaError_t e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_detail, sizeof last_detail, fmt, ap);
    va_end(ap);
    last_error = e;
    return e;
}

/* ---- fibers ----------------------------------------------------------------- */

enum fiber_state { RUNNABLE, AT_BLOCK_BARRIER, AT_WARP_BARRIER, DONE };

/* Context switch. On x86-64 a few instructions that save the callee-saved
 * registers on the old stack and load them from the new one (MXCSR and the
 * x87 control word are left alone: nothing here changes them) (ucontext's swapcontext makes a system call per switch
 * to save the signal mask, which made barrier-heavy kernels crawl); other
 * architectures use ucontext. */
#if defined(__x86_64__)
#define SD_EMU_ASM_SWITCH 1
extern "C" void sd_emu_switch(void **save_sp, void *new_sp);
__asm__(".text\n"
        ".globl sd_emu_switch\n"
        ".type sd_emu_switch,@function\n"
        "sd_emu_switch:\n"
        "    pushq %rbp\n"
        "    pushq %rbx\n"
        "    pushq %r12\n"
        "    pushq %r13\n"
        "    pushq %r14\n"
        "    pushq %r15\n"
        "    movq %rsp, (%rdi)\n"
        "    movq %rsi, %rsp\n"
        "    popq %r15\n"
        "    popq %r14\n"
        "    popq %r13\n"
        "    popq %r12\n"
        "    popq %rbx\n"
        "    popq %rbp\n"
        "    ret\n"
        ".size sd_emu_switch, .-sd_emu_switch\n");
#endif

struct fiber {
#ifdef SD_EMU_ASM_SWITCH
    void *sp;
#else
    ucontext_t ctx;
#endif
    fiber_state state;
    fiber_ids ids;
};

struct block_run {
    std::vector<fiber> fibers;
    std::vector<uint64_t> xchg[2];
    struct memo {               /* last MMA of each warp, see mma_sync */
        unsigned char a[512], b[512];
        float c[256], d[256];
        bool valid;
    };
    std::vector<memo> memos;
    struct mma_stage {          /* fragment registers of a warp's lanes, see mma_m16n8k16 */
        uint32_t a[32][4];
        uint32_t b[32][2];
    };
    std::vector<mma_stage> mma_stages;
#ifdef SD_EMU_ASM_SWITCH
    void *sched_sp;
#else
    ucontext_t sched;
#endif
    const std::function<void()> *body;
    int cur;
    unsigned char *stacks;
    size_t stack_size;
#ifdef SD_EMU_ASAN
    void *fake_stack;
#endif
};

thread_local block_run *run;
static thread_local unsigned char *dyn_smem;

#ifdef SD_EMU_ASAN
static const size_t STACK_SIZE = 512 * 1024;
#else
static const size_t STACK_SIZE = 128 * 1024;
#endif

static void switch_to_fiber(block_run *r, int i)
{
    r->cur = i;
    cur_fiber = &r->fibers[i].ids;
#ifdef SD_EMU_ASAN
    __sanitizer_start_switch_fiber(&r->fake_stack, r->stacks + (size_t)i * r->stack_size,
                                   r->stack_size);
#endif
#ifdef SD_EMU_ASM_SWITCH
    sd_emu_switch(&r->sched_sp, r->fibers[i].sp);
#else
    swapcontext(&r->sched, &r->fibers[i].ctx);
#endif
#ifdef SD_EMU_ASAN
    __sanitizer_finish_switch_fiber(r->fake_stack, NULL, NULL);
#endif
}

static void yield_to_scheduler(fiber_state st)
{
    block_run *r = run;
    fiber *me = &r->fibers[r->cur];
    me->state = st;
#ifdef SD_EMU_ASAN
    void *fake = NULL;
    __sanitizer_start_switch_fiber(&fake, NULL, 0);
#endif
#ifdef SD_EMU_ASM_SWITCH
    sd_emu_switch(&me->sp, r->sched_sp);
#else
    swapcontext(&me->ctx, &r->sched);
#endif
#ifdef SD_EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
}

static void fiber_main(void)
{
#ifdef SD_EMU_ASAN
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
    (*run->body)();
    run->fibers[run->cur].state = DONE;
#ifdef SD_EMU_ASAN
    __sanitizer_start_switch_fiber(NULL, NULL, 0);
#endif
#ifdef SD_EMU_ASM_SWITCH
    fiber *me = &run->fibers[run->cur];
    sd_emu_switch(&me->sp, run->sched_sp);   /* never resumed */
    abort();
#endif
    /* ucontext: returning resumes uc_link, the scheduler */
}

void block_barrier(void) { yield_to_scheduler(AT_BLOCK_BARRIER); }
void warp_barrier(void) { yield_to_scheduler(AT_WARP_BARRIER); }
uint64_t *exchange_slots(int set) { return run->xchg[set].data(); }
unsigned char *dynamic_smem(void) { return dyn_smem; }

/* Runs one block to completion. Returns false on a barrier deadlock. */
static bool run_block(block_run *r, int n)
{
    for (int i = 0; i < n; i++) {
        fiber &f = r->fibers[i];
        f.state = RUNNABLE;
#ifdef SD_EMU_ASM_SWITCH
        /* a frame sd_emu_switch can "return" into fiber_main from: top of
         * stack 16-byte aligned, as after a call */
        /* stack tops staggered across cache sets: tops a power of two
         * apart would all collide in the same sets, and every switch would
         * miss the cache */
        uintptr_t top = (uintptr_t)(r->stacks + (size_t)(i + 1) * r->stack_size);
        top = (top - ((size_t)i * 9 * 64) % (32 * 1024)) & ~(uintptr_t)15;
        uint64_t *sp = (uint64_t *)top;
        *--sp = 0;                              /* fake return address of fiber_main */
        *--sp = (uint64_t)(uintptr_t)fiber_main;
        for (int k = 0; k < 6; k++) *--sp = 0;  /* rbp rbx r12 r13 r14 r15 */
        f.sp = sp;
#else
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = r->stacks + (size_t)i * r->stack_size;
        f.ctx.uc_stack.ss_size = r->stack_size;
        f.ctx.uc_link = &r->sched;
        makecontext(&f.ctx, fiber_main, 0);
#endif
    }
    const int warps = (n + 31) / 32;
    for (;;) {
        bool ran = false;
        for (int i = 0; i < n; i++)
            if (r->fibers[i].state == RUNNABLE) {
                switch_to_fiber(r, i);
                ran = true;
            }
        int done = 0, at_block = 0;
        for (int i = 0; i < n; i++) {
            done += r->fibers[i].state == DONE;
            at_block += r->fibers[i].state == AT_BLOCK_BARRIER;
        }
        if (done == n) return true;
        bool released = false;
        /* a warp barrier completes when every live lane of the warp waits */
        for (int w = 0; w < warps; w++) {
            int lo = w * 32, hi = lo + 32 < n ? lo + 32 : n, waiting = 0, live = 0;
            for (int i = lo; i < hi; i++) {
                if (r->fibers[i].state == DONE) continue;
                live++;
                waiting += r->fibers[i].state == AT_WARP_BARRIER;
            }
            if (live > 0 && waiting == live) {
                for (int i = lo; i < hi; i++)
                    if (r->fibers[i].state == AT_WARP_BARRIER) r->fibers[i].state = RUNNABLE;
                released = true;
            }
        }
        /* __syncthreads completes when every live thread waits (exited
         * threads count as arrived, as on current GPUs) */
        if (!released && at_block == n - done) {
            for (int i = 0; i < n; i++)
                if (r->fibers[i].state == AT_BLOCK_BARRIER) r->fibers[i].state = RUNNABLE;
            released = true;
        }
        if (!released && !ran) return false;
    }
}

/* SD_EMU_PROFILE=1: time per kernel name, printed to stderr at exit (to
 * find what makes an emulated test slow). */
static std::mutex prof_mu;
static std::map<std::string, std::pair<double, long>> prof;
static bool prof_on = getenv("SD_EMU_PROFILE") != NULL;
/* SD_EMU_DRY_RUN=1: kernels and GEMMs are checked (launch geometry, shapes)
 * but not run, so a network at full size (SD1.5 at 512x512) goes through
 * every allocation of a real pass in seconds: what the memory figures of
 * bench_cuda --memory-plan need. Outputs are meaningless (zeros). */
static bool dry_run = getenv("SD_EMU_DRY_RUN") != NULL && strcmp(getenv("SD_EMU_DRY_RUN"), "0");

static void prof_dump_locked(void)
{
    for (auto &kv : prof)
        fprintf(stderr, "emu profile: %-40s %8.3f s %7ld launches\n", kv.first.c_str(),
                kv.second.first, kv.second.second);
}

static void prof_dump(void)
{
    std::lock_guard<std::mutex> lock(prof_mu);
    prof_dump_locked();
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static std::mutex attr_mu;
static std::map<const void *, int> smem_attr;

cudaError_t set_func_attr(const void *fn, int attr, int value)
{
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize)
        return fail(cudaErrorInvalidValue, "emulator: unsupported function attribute %d", attr);
    if (value < 0 || value > 232448)
        return fail(cudaErrorInvalidValue, "emulator: dynamic shared memory %d > 227 KB", value);
    std::lock_guard<std::mutex> lock(attr_mu);
    smem_attr[fn] = value;
    return cudaSuccess;
}

void launch_impl(const char *name, const void *fn, dim3 grid, dim3 block, size_t smem,
                 const std::function<void()> &body)
{
    const unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (threads == 0 || threads > 1024 || block.z > 64) {
        fail(cudaErrorInvalidConfiguration, "emulator: %s launched with %llu threads per block",
             name, threads);
        return;
    }
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
        grid.z > 65535) {
        fail(cudaErrorInvalidConfiguration, "emulator: %s launched with grid (%u, %u, %u)", name,
             grid.x, grid.y, grid.z);
        return;
    }
    if (smem > 48 * 1024) {
        std::lock_guard<std::mutex> lock(attr_mu);
        auto it = smem_attr.find(fn);
        if (it == smem_attr.end() || (size_t)it->second < smem) {
            fail(cudaErrorInvalidValue,
                 "emulator: %s needs %zu bytes of dynamic shared memory without "
                 "cudaFuncSetAttribute allowing it",
                 name, smem);
            return;
        }
    }
    if (dry_run) return;   /* checked, not run */
    const double t0 = prof_on ? now_s() : 0.0;
    const int n = (int)threads;
    block_run r;
    r.fibers.resize((size_t)n);
    r.xchg[0].assign((size_t)n, 0);
    r.xchg[1].assign((size_t)n, 0);
    r.memos.resize((size_t)(n + 31) / 32);
    r.mma_stages.resize((size_t)(n + 31) / 32 * 2);   /* two sets per warp */
    r.body = &body;
    r.stack_size = STACK_SIZE;
    /* stacks are kept between launches (mapping them anew each time cost
     * more than running small kernels); a nested launch gets its own */
    static thread_local unsigned char *cached_stacks;
    static thread_local size_t cached_bytes;
    static thread_local bool cached_busy;
    size_t stack_bytes = (size_t)n * r.stack_size;
    bool own_stacks = cached_busy;
    void *stacks;
    if (!own_stacks && cached_bytes >= stack_bytes) {
        stacks = cached_stacks;
    } else {
        stacks = mmap(NULL, stack_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (stacks == MAP_FAILED) {
            fail(cudaErrorMemoryAllocation, "emulator: no memory for %d fiber stacks", n);
            return;
        }
        if (!own_stacks) {
            if (cached_stacks) munmap(cached_stacks, cached_bytes);
            cached_stacks = (unsigned char *)stacks;
            cached_bytes = stack_bytes;
        }
    }
    if (!own_stacks) cached_busy = true;
    r.stacks = (unsigned char *)stacks;
    std::vector<unsigned char> smem_buf(smem + 128);
    unsigned char *smem_aligned =
        (unsigned char *)(((uintptr_t)smem_buf.data() + 127) & ~(uintptr_t)127);

    block_run *saved_run = run;
    fiber_ids *saved_fiber = cur_fiber;
    launch_ids saved_launch = cur_launch;
    unsigned char *saved_smem = dyn_smem;
    run = &r;
    dyn_smem = smem_aligned;
    cur_launch.block_dim = block;
    cur_launch.grid_dim = grid;
    for (int i = 0; i < n; i++) {
        fiber_ids &ids = r.fibers[(size_t)i].ids;
        ids.linear = i;
        ids.shuffles = 0;
        ids.mmas = 0;
        ids.thread_idx.x = (unsigned)i % block.x;
        ids.thread_idx.y = ((unsigned)i / block.x) % block.y;
        ids.thread_idx.z = (unsigned)i / (block.x * block.y);
    }
    bool ok = true;
    for (unsigned z = 0; z < grid.z && ok; z++)
        for (unsigned y = 0; y < grid.y && ok; y++)
            for (unsigned x = 0; x < grid.x && ok; x++) {
                cur_launch.block_idx.x = x;
                cur_launch.block_idx.y = y;
                cur_launch.block_idx.z = z;
                memset(smem_aligned, 0xff, smem);
                for (auto &f : r.fibers) f.ids.shuffles = f.ids.mmas = 0;
                for (auto &m : r.memos) m.valid = false;
                if (!run_block(&r, n)) {
                    fail(cudaErrorLaunchFailure,
                         "emulator: %s block (%u,%u,%u) deadlocked at a barrier (threads "
                         "waiting at different barriers)",
                         name, x, y, z);
                    ok = false;
                }
            }
    run = saved_run;
    cur_fiber = saved_fiber;
    cur_launch = saved_launch;
    dyn_smem = saved_smem;
    if (own_stacks) munmap(stacks, stack_bytes);
    else cached_busy = false;
    if (prof_on) {
        std::lock_guard<std::mutex> lock(prof_mu);
        static bool registered = false;
        if (!registered) {
            registered = true;
            atexit(prof_dump);
        }
        auto &e = prof[name];
        static double total = 0.0, next_dump = 30.0;
        double dt = now_s() - t0;
        e.first += dt;
        e.second++;
        total += dt;
        if (total > next_dump) {   /* a test killed by a timeout still tells */
            next_dump += 30.0;
            prof_dump_locked();
        }
    }
}

/* ---- memory ------------------------------------------------------------------ */

/* Every live device allocation with its size and where it came from, the
 * bytes in use and their high-water mark since the last reset (exact: the
 * emulator frees at once, it caches nothing). With SD_EMU_MEMTRACE set, the
 * allocations live at the high-water mark are kept too, for
 * sd_emu_memory_report (the breakdown in docs/BENCHMARKS.md). */
enum { MEM_MALLOC = 0, MEM_POOL, MEM_GRAPH, MEM_NCAT };
static const char *const mem_cat_names[MEM_NCAT] = { "cudaMalloc (weights, cuBLAS)",
                                                     "memory pool (activations, scratch)",
                                                     "graph memory" };
struct emu_allocation {
    size_t bytes;
    int cat;
};
static std::mutex mem_mu;
static std::map<void *, emu_allocation> allocations;
static size_t allocated, allocated_high;
static std::vector<emu_allocation> at_high;   /* SD_EMU_MEMTRACE: live at the mark */
static bool memtrace_on = getenv("SD_EMU_MEMTRACE") != NULL;

static void *emu_alloc(size_t bytes, int cat)
{
    void *p = NULL;
    if (posix_memalign(&p, 256, bytes ? bytes : 1) != 0) return NULL;
    /* a dry run reads memory no kernel wrote: zeros, not NaNs (the VAE's
     * NaN check would redo the decode) */
    if (dry_run) memset(p, 0, bytes);
    std::lock_guard<std::mutex> lock(mem_mu);
    allocations[p] = { bytes, cat };
    allocated += bytes;
    if (allocated > allocated_high) {
        allocated_high = allocated;
        if (memtrace_on) {
            at_high.clear();
            for (auto &kv : allocations) at_high.push_back(kv.second);
        }
    }
    return p;
}

static size_t emu_free(void *p)
{
    size_t bytes = 0;
    {
        std::lock_guard<std::mutex> lock(mem_mu);
        auto it = allocations.find(p);
        if (it == allocations.end()) return (size_t)-1;
        bytes = it->second.bytes;
        allocated -= bytes;
        allocations.erase(it);
    }
    free(p);
    return bytes;
}

}  // namespace sd_emu

using namespace sd_emu;

struct sd_emu_pool {
    std::map<void *, size_t> mine;   /* live allocations of this pool */
    size_t used, used_high;
};

/* Which pool handed out a pointer (cudaFreeAsync does not name it). */
static std::mutex pools_mu;
static std::map<void *, cudaMemPool_t> pool_of;
/* A captured graph (and, the same object, its instantiation): the recorded
 * work in order, and the memory allocated during the capture. */
struct sd_emu_graph {
    std::vector<std::function<void()>> nodes;
    std::vector<void *> mem;
};
struct sd_emu_stream {
    sd_emu_graph *capture;      /* non-NULL between Begin/EndCapture */
    bool invalidated;           /* something refused during the capture */
};
namespace sd_emu {
/* Records `node` when `s` is capturing (returns true), else leaves it. */
static bool record(cudaStream_t s, std::function<void()> node)
{
    if (!s || !s->capture) return false;
    s->capture->nodes.push_back(std::move(node));
    return true;
}
static std::mutex graph_mu;
static std::map<void *, sd_emu_graph *> graph_mem;   /* graph memory -> owner */
}  // namespace sd_emu
struct sd_emu_blas {
    cudaStream_t stream;
};

const char *cudaGetErrorString(cudaError_t e)
{
    if (e == cudaSuccess) return "no error";
    if (e == last_error && last_detail[0]) return last_detail;
    switch (e) {
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    default: return "unspecified launch failure";
    }
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaGetDeviceCount(int *n)
{
    *n = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int dev)
{
    return dev == 0 ? cudaSuccess : fail(cudaErrorInvalidValue, "emulator: device %d", dev);
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int dev)
{
    if (dev != 0) return fail(cudaErrorInvalidValue, "emulator: device %d", dev);
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "CPU emulation of a CUDA device");
    prop->totalGlobalMem = (size_t)80 << 30;
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = 4;
    prop->sharedMemPerBlockOptin = 232448;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v) { *v = 13000; return cudaSuccess; }
cudaError_t cudaDriverGetVersion(int *v) { *v = 0; return cudaSuccess; }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
    (void)flags;
    *s = new sd_emu_stream();
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    delete s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    if (s && s->capture) {
        /* as the real API: refused, and the capture cannot be ended well */
        s->invalidated = true;
        return fail(cudaErrorStreamCaptureUnsupported,
                    "emulator: cudaStreamSynchronize during a stream capture");
    }
    /* like the real thing, a sticky launch failure shows up here too */
    return last_error;
}

cudaError_t cudaMalloc(void **p, size_t bytes)
{
    *p = emu_alloc(bytes, MEM_MALLOC);
    return *p ? cudaSuccess : fail(cudaErrorMemoryAllocation, "emulator: out of memory");
}

cudaError_t cudaFree(void *p)
{
    if (!p) return cudaSuccess;
    return emu_free(p) == (size_t)-1 ? fail(cudaErrorInvalidValue, "emulator: cudaFree of %p", p)
                                     : cudaSuccess;
}

cudaError_t cudaMemPoolCreate(cudaMemPool_t *pool, const cudaMemPoolProps *props)
{
    (void)props;
    *pool = new sd_emu_pool();
    (*pool)->used = (*pool)->used_high = 0;
    return cudaSuccess;
}

cudaError_t cudaMemPoolDestroy(cudaMemPool_t pool)
{
    std::lock_guard<std::mutex> lock(pools_mu);
    for (auto &kv : pool->mine) {
        emu_free(kv.first);
        pool_of.erase(kv.first);
    }
    delete pool;
    return cudaSuccess;
}

cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void *value)
{
    if (attr == cudaMemPoolAttrUsedMemHigh) pool->used_high = pool->used;
    (void)value;
    return cudaSuccess;
}

cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void *value)
{
    uint64_t v = 0;
    switch (attr) {
    case cudaMemPoolAttrUsedMemCurrent:
    case cudaMemPoolAttrReservedMemCurrent: v = pool->used; break;
    case cudaMemPoolAttrUsedMemHigh:
    case cudaMemPoolAttrReservedMemHigh: v = pool->used_high; break;
    default: v = UINT64_MAX; break;
    }
    memcpy(value, &v, sizeof v);
    return cudaSuccess;
}

cudaError_t cudaMemPoolTrimTo(cudaMemPool_t pool, size_t keep)
{
    (void)pool;
    (void)keep;
    return cudaSuccess;
}

cudaError_t cudaMallocFromPoolAsync(void **p, size_t bytes, cudaMemPool_t pool, cudaStream_t s)
{
    *p = emu_alloc(bytes, s && s->capture ? MEM_GRAPH : MEM_POOL);
    if (!*p) return fail(cudaErrorMemoryAllocation, "emulator: out of memory");
    if (s && s->capture) {
        /* a memory node: the graph's own, at the same address every launch */
        std::lock_guard<std::mutex> lock(graph_mu);
        s->capture->mem.push_back(*p);
        graph_mem[*p] = s->capture;
        return cudaSuccess;
    }
    std::lock_guard<std::mutex> lock(pools_mu);
    pool->mine[*p] = bytes;
    pool_of[*p] = pool;
    pool->used += bytes;
    if (pool->used > pool->used_high) pool->used_high = pool->used;
    return cudaSuccess;
}

cudaError_t cudaFreeAsync(void *p, cudaStream_t s)
{
    if (!p) return cudaSuccess;
    {
        std::lock_guard<std::mutex> lock(graph_mu);
        auto it = graph_mem.find(p);
        if (it != graph_mem.end()) {
            /* a free node of the graph's own memory: it stays the graph's */
            if (s && s->capture == it->second) return cudaSuccess;
            return fail(cudaErrorInvalidValue, "emulator: cudaFreeAsync of graph memory %p", p);
        }
    }
    if (s && s->capture) {
        /* memory from outside the capture freed by the graph: at launch */
        record(s, [p] { (void)cudaFreeAsync(p, NULL); });
        return cudaSuccess;
    }
    {
        std::lock_guard<std::mutex> lock(pools_mu);
        auto it = pool_of.find(p);
        if (it != pool_of.end()) {
            it->second->used -= it->second->mine[p];
            it->second->mine.erase(p);
            pool_of.erase(it);
        }
    }
    if (emu_free(p) == (size_t)-1) return fail(cudaErrorInvalidValue, "emulator: cudaFreeAsync of %p", p);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s)
{
    (void)kind;
    if (record(s, [=] { if (bytes) memmove(dst, src, bytes); })) return cudaSuccess;
    if (bytes) memmove(dst, src, bytes);
    return cudaSuccess;
}

/* ---- CUDA graphs (stream capture) ------------------------------------------------ */

static void graph_release(sd_emu_graph *g)
{
    if (!g) return;
    {
        std::lock_guard<std::mutex> lock(graph_mu);
        for (void *p : g->mem) graph_mem.erase(p);
    }
    for (void *p : g->mem) emu_free(p);
    delete g;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode)
{
    (void)mode;
    if (!s) return fail(cudaErrorStreamCaptureUnsupported, "emulator: capture of the null stream");
    if (s->capture) return fail(cudaErrorInvalidValue, "emulator: capture already open");
    s->capture = new sd_emu_graph();
    s->invalidated = false;
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g)
{
    *g = NULL;
    if (!s || !s->capture) return fail(cudaErrorInvalidValue, "emulator: no capture open");
    sd_emu_graph *got = s->capture;
    s->capture = NULL;
    if (s->invalidated) {
        graph_release(got);
        return fail(cudaErrorStreamCaptureInvalidated, "emulator: stream capture invalidated");
    }
    *g = got;
    return cudaSuccess;
}

/* The exec takes over the graph's work and memory (graph.cu destroys the
 * graph right after; an emptied graph frees nothing). */
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t g, unsigned long long flags)
{
    (void)flags;
    if (!g) return fail(cudaErrorInvalidValue, "emulator: instantiate of no graph");
    sd_emu_graph *e = new sd_emu_graph();
    std::swap(e->nodes, g->nodes);
    std::swap(e->mem, g->mem);
    std::lock_guard<std::mutex> lock(graph_mu);
    for (void *p : e->mem) graph_mem[p] = e;
    *exec = e;
    return cudaSuccess;
}

cudaError_t cudaGraphExecUpdate(cudaGraphExec_t exec, cudaGraph_t g,
                                cudaGraphExecUpdateResultInfo *info)
{
    if (info) info->result = 0;
    if (!exec || !g) return fail(cudaErrorInvalidValue, "emulator: graph update of nothing");
    if (exec->nodes.size() != g->nodes.size()) {
        if (info) info->result = 1;
        return fail(cudaErrorGraphExecUpdateFailure, "emulator: graph topology changed");
    }
    /* the new graph's work and memory replace the exec's */
    std::vector<void *> old_mem;
    std::swap(old_mem, exec->mem);
    exec->nodes = std::move(g->nodes);
    g->nodes.clear();
    std::swap(exec->mem, g->mem);
    {
        std::lock_guard<std::mutex> lock(graph_mu);
        for (void *p : old_mem) graph_mem.erase(p);
        for (void *p : exec->mem) graph_mem[p] = exec;
    }
    for (void *p : old_mem) emu_free(p);
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s)
{
    if (!exec) return fail(cudaErrorInvalidValue, "emulator: launch of no graph");
    if (s && s->capture) return fail(cudaErrorStreamCaptureUnsupported, "emulator: graph launch in a capture");
    /* errors of the work show later (cudaGetLastError, a synchronisation),
     * as the real launch's asynchronous ones */
    for (auto &node : exec->nodes) node();
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec)
{
    graph_release(exec);
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t g)
{
    graph_release(g);
    return cudaSuccess;
}

cudaError_t cudaDeviceGraphMemTrim(int device)
{
    (void)device;
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b)
{
    std::lock_guard<std::mutex> lock(mem_mu);
    *total_b = (size_t)80 << 30;
    *free_b = *total_b - allocated;
    return cudaSuccess;
}

static size_t stack_limit = 1024;   /* the CUDA default, bytes a thread */

cudaError_t cudaDeviceSetLimit(cudaLimit limit, size_t value)
{
    if (limit != cudaLimitStackSize) return fail(cudaErrorInvalidValue, "emulator: limit %d", (int)limit);
    std::lock_guard<std::mutex> lock(mem_mu);
    stack_limit = value < 16 ? 16 : value;   /* the driver rounds up to its minimum */
    return cudaSuccess;
}

cudaError_t cudaDeviceGetLimit(size_t *value, cudaLimit limit)
{
    if (limit != cudaLimitStackSize || !value)
        return fail(cudaErrorInvalidValue, "emulator: limit %d", (int)limit);
    std::lock_guard<std::mutex> lock(mem_mu);
    *value = stack_limit;
    return cudaSuccess;
}

cudaError_t cudaHostRegister(void *p, size_t bytes, unsigned flags)
{
    (void)flags;
    if (!p || !bytes) return fail(cudaErrorInvalidValue, "emulator: cudaHostRegister(%p, %zu)", p, bytes);
    return cudaSuccess;
}

cudaError_t cudaHostUnregister(void *p)
{
    return p ? cudaSuccess : fail(cudaErrorInvalidValue, "emulator: cudaHostUnregister(NULL)");
}

/* ---- cuBLAS -------------------------------------------------------------------- */

cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    *h = new sd_emu_blas();
    (*h)->stream = NULL;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t h)
{
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}

/* The emulated GEMMs need no scratch: the buffer is only checked. */
cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t bytes)
{
    if (!h || (bytes && !ws)) return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusString(cublasStatus_t st)
{
    switch (st) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_(other)";
    }
}

/* float -> TF32 (10 mantissa bits), round to nearest even, as the tensor
 * cores read float32 operands. */
static inline float to_tf32(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) {
        uint32_t lsb = (u >> 13) & 1u;
        u += 0xfffu + lsb;
        u &= ~0x1fffu;
    }
    memcpy(&f, &u, 4);
    return f;
}

static inline float elem(const void *base, cudaDataType_t t, size_t i, bool tf32)
{
    if (t == CUDA_R_16F) return sd_f16_to_f32(((const uint16_t *)base)[i]);
    if (t == CUDA_R_16BF) return sd_bf16_to_f32(((const uint16_t *)base)[i]);
    float f = ((const float *)base)[i];
    return tf32 ? to_tf32(f) : f;
}

/* C = alpha op(A) op(B) + beta C (+ bias[i] per row of the column-major C),
 * float32 accumulation, one rounding into C's type (float32, fp16 or bf16)
 * at the end, as cuBLAS(Lt) does; C may be the source of the beta term
 * (src_c, NULL = C itself). */
static cublasStatus_t gemm_one(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                               float alpha, const void *A, cudaDataType_t at, int lda,
                               const void *B, cudaDataType_t bt, int ldb, float beta, void *C,
                               cudaDataType_t ct, int ldc, bool tf32, const void *src_c = NULL,
                               int ld_src = 0, const void *bias = NULL,
                               cudaDataType_t bias_type = CUDA_R_32F)
{
    if (dry_run) return CUBLAS_STATUS_SUCCESS;   /* shapes checked by the caller */
    if (!src_c) {
        src_c = C;
        ld_src = ldc;
    }
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float acc = 0.0f;
            for (int l = 0; l < k; l++) {
                size_t ai = ta == CUBLAS_OP_N ? (size_t)i + (size_t)l * lda : (size_t)l + (size_t)i * lda;
                size_t bi = tb == CUBLAS_OP_N ? (size_t)l + (size_t)j * ldb : (size_t)j + (size_t)l * ldb;
                acc += elem(A, at, ai, tf32) * elem(B, bt, bi, tf32);
            }
            size_t ci = (size_t)i + (size_t)j * ldc;
            float v = alpha * acc;
            if (beta != 0.0f) v += beta * elem(src_c, ct, (size_t)i + (size_t)j * ld_src, false);
            if (bias) v += elem(bias, bias_type, (size_t)i, false);
            if (ct == CUDA_R_16F) ((uint16_t *)C)[ci] = sd_f32_to_f16(v);
            else if (ct == CUDA_R_16BF) ((uint16_t *)C)[ci] = sd_f32_to_bf16(v);
            else ((float *)C)[ci] = v;
        }
    return CUBLAS_STATUS_SUCCESS;
}

static cublasStatus_t check_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                 cudaDataType_t at, int lda, cudaDataType_t bt, int ldb,
                                 cudaDataType_t ct, int ldc, cublasComputeType_t compute,
                                 const char *who)
{
    int need_a = ta == CUBLAS_OP_N ? m : k, need_b = tb == CUBLAS_OP_N ? k : n;
    if (m < 0 || n < 0 || k < 0 || lda < (need_a > 1 ? need_a : 1) ||
        ldb < (need_b > 1 ? need_b : 1) || ldc < (m > 1 ? m : 1)) {
        fprintf(stderr,
                "cuda emulator: %s: invalid sizes m=%d n=%d k=%d lda=%d ldb=%d ldc=%d (op %d/%d)\n",
                who, m, n, k, lda, ldb, ldc, ta, tb);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    /* C in float32, or in the inputs' 16-bit type (fp16 out of fp16 GEMMs) */
    if (at != bt || (ct != CUDA_R_32F && ct != at) ||
        (at == CUDA_R_32F && compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_TF32) ||
        (at != CUDA_R_32F && compute != CUBLAS_COMPUTE_32F)) {
        fprintf(stderr, "cuda emulator: %s: unsupported type combination\n", who);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType_t at,
                            int lda, const void *B, cudaDataType_t bt, int ldb, const void *beta,
                            void *C, cudaDataType_t ct, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t algo)
{
    (void)algo;
    cublasStatus_t st = check_gemm(ta, tb, m, n, k, at, lda, bt, ldb, ct, ldc, compute, "cublasGemmEx");
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    {
        /* host scalars are read at capture, as with CUBLAS_POINTER_MODE_HOST */
        const float al = *(const float *)alpha, be = *(const float *)beta;
        if (record(h ? h->stream : NULL, [=] {
                (void)cublasGemmEx(NULL, ta, tb, m, n, k, &al, A, at, lda, B, bt, ldb, &be, C,
                                   ct, ldc, compute, algo);
            }))
            return CUBLAS_STATUS_SUCCESS;
    }
    return gemm_one(ta, tb, m, n, k, *(const float *)alpha, A, at, lda, B, bt, ldb,
                    *(const float *)beta, C, ct, ldc, compute == CUBLAS_COMPUTE_32F_FAST_TF32);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta,
                                          cublasOperation_t tb, int m, int n, int k,
                                          const void *alpha, const void *A, cudaDataType_t at,
                                          int lda, long long sa, const void *B,
                                          cudaDataType_t bt, int ldb, long long sb,
                                          const void *beta, void *C, cudaDataType_t ct, int ldc,
                                          long long sc, int batch, cublasComputeType_t compute,
                                          cublasGemmAlgo_t algo)
{
    cublasStatus_t st = check_gemm(ta, tb, m, n, k, at, lda, bt, ldb, ct, ldc, compute,
                                   "cublasGemmStridedBatchedEx");
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    if (batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
    {
        const float al = *(const float *)alpha, be = *(const float *)beta;
        if (record(h ? h->stream : NULL, [=] {
                (void)cublasGemmStridedBatchedEx(NULL, ta, tb, m, n, k, &al, A, at, lda, sa, B, bt,
                                                 ldb, sb, &be, C, ct, ldc, sc, batch, compute,
                                                 algo);
            }))
            return CUBLAS_STATUS_SUCCESS;
    }
    size_t ea = at == CUDA_R_32F ? 4 : 2, eb = bt == CUDA_R_32F ? 4 : 2,
           ec = ct == CUDA_R_32F ? 4 : 2;
    for (int i = 0; i < batch; i++) {
        st = gemm_one(ta, tb, m, n, k, *(const float *)alpha,
                      (const char *)A + (size_t)(sa * i) * ea, at, lda,
                      (const char *)B + (size_t)(sb * i) * eb, bt, ldb, *(const float *)beta,
                      (char *)C + (size_t)(sc * i) * ec, ct, ldc,
                      compute == CUBLAS_COMPUTE_32F_FAST_TF32);
        if (st != CUBLAS_STATUS_SUCCESS) return st;
    }
    return CUBLAS_STATUS_SUCCESS;
}

/* ---- cuBLASLt ---------------------------------------------------------------- */
struct sd_emu_lt {
    int unused;
};
struct sd_emu_lt_matmul_desc {
    cublasComputeType_t compute;
    cublasOperation_t ta, tb;
    cublasLtEpilogue_t epilogue;
    const void *bias;
    int bias_type;                     /* a cudaDataType_t; -1 (the default): D's */
};
struct sd_emu_lt_layout {
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld;
};
struct sd_emu_lt_pref {
    size_t max_ws;
};

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h)
{
    *h = new sd_emu_lt();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h)
{
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute,
                                        cudaDataType_t scale)
{
    if (scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    *d = new sd_emu_lt_matmul_desc{ compute, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT,
                                    NULL, -1 };
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d)
{
    delete d;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                              cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size)
{
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB: {
        int32_t v;
        if (size != sizeof v) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&v, buf, sizeof v);
        (attr == CUBLASLT_MATMUL_DESC_TRANSA ? d->ta : d->tb) = (cublasOperation_t)v;
        return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: {
        int32_t v;
        if (size != sizeof v) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&v, buf, sizeof v);
        if (attr == CUBLASLT_MATMUL_DESC_EPILOGUE) d->epilogue = (cublasLtEpilogue_t)v;
        else d->bias_type = v;
        return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
        if (size != sizeof d->bias) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&d->bias, buf, sizeof d->bias);
        return CUBLAS_STATUS_SUCCESS;
    }
    return CUBLAS_STATUS_NOT_SUPPORTED;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t type,
                                          uint64_t rows, uint64_t cols, int64_t ld)
{
    *l = new sd_emu_lt_layout{ type, rows, cols, ld };
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l)
{
    delete l;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p)
{
    *p = new sd_emu_lt_pref{ 0 };
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p)
{
    delete p;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t size)
{
    if (attr != CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES || size != sizeof(uint64_t))
        return CUBLAS_STATUS_INVALID_VALUE;
    uint64_t v;
    memcpy(&v, buf, sizeof v);
    p->max_ws = (size_t)v;
    return CUBLAS_STATUS_SUCCESS;
}

/* The shapes cublasLtMatmul checks: m x n = rows x cols of D (and C), k the
 * inner size from op(A). */
static cublasStatus_t lt_shapes(const sd_emu_lt_matmul_desc *op, const sd_emu_lt_layout *a,
                                const sd_emu_lt_layout *b, const sd_emu_lt_layout *c,
                                const sd_emu_lt_layout *d, int *m, int *n, int *k)
{
    uint64_t am = op->ta == CUBLAS_OP_N ? a->rows : a->cols;
    uint64_t ak = op->ta == CUBLAS_OP_N ? a->cols : a->rows;
    uint64_t bk = op->tb == CUBLAS_OP_N ? b->rows : b->cols;
    uint64_t bn = op->tb == CUBLAS_OP_N ? b->cols : b->rows;
    if (am != d->rows || bn != d->cols || ak != bk || c->rows != d->rows || c->cols != d->cols ||
        c->type != d->type || c->ld != d->ld) {
        fprintf(stderr, "cuda emulator: cublasLtMatmul: mismatched layouts\n");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    /* the bias in D's type (the default), or float32 with float32 D; we
     * only claim what cuBLASLt's documentation lists for our use */
    const cudaDataType_t bias_type =
        op->bias_type == -1 ? d->type : (cudaDataType_t)op->bias_type;
    if (op->epilogue != CUBLASLT_EPILOGUE_DEFAULT &&
        (op->epilogue != CUBLASLT_EPILOGUE_BIAS || bias_type != d->type)) {
        fprintf(stderr, "cuda emulator: cublasLtMatmul: unsupported epilogue\n");
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    *m = (int)am;
    *n = (int)bn;
    *k = (int)ak;
    return check_gemm(op->ta, op->tb, *m, *n, *k, a->type, (int)a->ld, b->type, (int)b->ld,
                      d->type, (int)d->ld, op->compute, "cublasLtMatmul");
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t op,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t *results,
                                              int *returned)
{
    (void)h;
    (void)pref;
    int m, n, k;
    *returned = 0;
    cublasStatus_t st = lt_shapes(op, a, b, c, d, &m, &n, &k);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
    memset(&results[0], 0, sizeof results[0]);
    results[0].algo.data[0] = 0x5d;     /* what cublasLtMatmul checks it got */
    results[0].state = CUBLAS_STATUS_SUCCESS;
    results[0].wavesCount = 1.0f;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t op, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t a, const void *B,
                              cublasLtMatrixLayout_t b, const void *beta, const void *C,
                              cublasLtMatrixLayout_t c, void *D, cublasLtMatrixLayout_t d,
                              const cublasLtMatmulAlgo_t *algo, void *workspace,
                              size_t workspace_size, cudaStream_t stream)
{
    (void)h;
    (void)workspace;
    (void)workspace_size;
    int m, n, k;
    cublasStatus_t st = lt_shapes(op, a, b, c, d, &m, &n, &k);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    if (!algo || algo->data[0] != 0x5d) return CUBLAS_STATUS_INVALID_VALUE;
    if (stream && stream->capture) {
        /* the descriptors are destroyed after the call: the node keeps
         * copies, and the scalars as read now */
        auto opc = std::make_shared<sd_emu_lt_matmul_desc>(*op);
        auto ac = std::make_shared<sd_emu_lt_layout>(*a), bc = std::make_shared<sd_emu_lt_layout>(*b),
             cc = std::make_shared<sd_emu_lt_layout>(*c), dc = std::make_shared<sd_emu_lt_layout>(*d);
        const float al = *(const float *)alpha, be = *(const float *)beta;
        const cublasLtMatmulAlgo_t alg = *algo;
        record(stream, [=] {
            (void)cublasLtMatmul(h, opc.get(), &al, A, ac.get(), B, bc.get(), &be, C, cc.get(), D,
                                 dc.get(), &alg, workspace, workspace_size, NULL);
        });
        return CUBLAS_STATUS_SUCCESS;
    }
    if (dry_run) return CUBLAS_STATUS_SUCCESS;
    const bool with_bias = op->epilogue == CUBLASLT_EPILOGUE_BIAS;
    if (with_bias && !op->bias) return CUBLAS_STATUS_INVALID_VALUE;
    /* D = alpha A B + beta C + bias, rounded once into D's type */
    return gemm_one(op->ta, op->tb, m, n, k, *(const float *)alpha, A, a->type, (int)a->ld, B,
                    b->type, (int)b->ld, *(const float *)beta, D, d->type, (int)d->ld,
                    op->compute == CUBLAS_COMPUTE_32F_FAST_TF32, C, (int)c->ld,
                    with_bias ? op->bias : NULL,
                    op->bias_type == -1 ? d->type : (cudaDataType_t)op->bias_type);
}

namespace sd_emu {
/* fp16 element `half_idx` (0 = low) of a 32-bit fragment register */
static float frag_half(uint32_t reg, int half_idx)
{
    return sd_f16_to_f32((uint16_t)(half_idx ? reg >> 16 : reg & 0xffffu));
}

void mma_m16n8k16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    const int me = cur_fiber->linear, lane = me & 31;
    /* two staging sets used alternately, as the shuffles' slots: a lane can
     * be at most one MMA ahead of the others (the next MMA's barrier waits
     * for them), so one barrier per MMA suffices */
    auto &st = run->mma_stages[(size_t)(me / 32) * 2 + (cur_fiber->mmas++ & 1)];
    memcpy(st.a[lane], a, sizeof st.a[lane]);
    st.b[lane][0] = b0;
    st.b[lane][1] = b1;
    warp_barrier();             /* every lane's registers are staged */
    /* PTX layout (groupID g = lane/4, t = lane%4):
     *   A[r][k]: lane (r%8)*4 + (k%8)/2, register (r/8) + 2*(k/8), half k%2
     *   B[k][n]: lane n*4 + (k%8)/2, register k/8, half k%2
     *   C[r][n]: lane (r%8)*4 + n/2, element 2*(r/8) + n%2 */
    const int g = lane >> 2, t = lane & 3;
    for (int e = 0; e < 4; e++) {
        const int r = g + 8 * (e >> 1), n = t * 2 + (e & 1);
        float acc = c[e];
        for (int k = 0; k < 16; k++) {
            const int src = (k % 8) / 2;
            float av = frag_half(st.a[(r % 8) * 4 + src][(r / 8) + 2 * (k / 8)], k % 2);
            float bv = frag_half(st.b[n * 4 + src][k / 8], k % 2);
            acc += av * bv;
        }
        c[e] = acc;
    }
}
}  // namespace sd_emu

namespace nvcuda {
namespace wmma {
bool mma_memo_get(const void *a, const void *b, const float *c, float *d)
{
    auto &m = sd_emu::run->memos[(size_t)(sd_emu::cur_fiber->linear / 32)];
    if (!m.valid || memcmp(m.a, a, 512) != 0 || memcmp(m.b, b, 512) != 0 ||
        memcmp(m.c, c, sizeof m.c) != 0)
        return false;
    memcpy(d, m.d, sizeof m.d);
    return true;
}

void mma_memo_put(const void *a, const void *b, const float *c, const float *d)
{
    auto &m = sd_emu::run->memos[(size_t)(sd_emu::cur_fiber->linear / 32)];
    memcpy(m.a, a, 512);
    memcpy(m.b, b, 512);
    memcpy(m.c, c, sizeof m.c);
    memcpy(m.d, d, sizeof m.d);
    m.valid = true;
}

void collective_enter(const void *p, unsigned ldm, size_t elem)
{
    sd_emu::warp_barrier();
    /* the real API: 256-bit aligned pointer, ldm a multiple of 16 bytes */
    if (((uintptr_t)p & 31u) != 0 || (ldm * elem) % 16 != 0) {
        fprintf(stderr, "cuda emulator: WMMA load/store with misaligned pointer %p or ldm %u\n",
                p, ldm);
        abort();
    }
}
}  // namespace wmma
}  // namespace nvcuda

namespace sd_emu {
void launch_on(cudaStream_t s, const char *name, const void *fn, dim3 grid, dim3 block,
               size_t smem, const std::function<void()> &body)
{
    /* a node: the launch as it would be made now, arguments baked in */
    if (record(s, [=] { launch_impl(name, fn, grid, block, smem, body); })) return;
    launch_impl(name, fn, grid, block, smem, body);
}
}  // namespace sd_emu

/* ---- memory figures for the tests and bench_cuda --memory-plan ---------------------- */

extern "C" __attribute__((visibility("default"))) void sd_emu_memory_report(char *buf, size_t len);

/* Device bytes in use now and their exact high-water mark since the last
 * reset (reset = 1: the mark restarts from what is in use now). Only in the
 * emulated library; backend.cu's memory figures use it under SD_CUDA_EMU so
 * that phase peaks are exact, not sampled. */

extern "C" __attribute__((visibility("default"))) void sd_emu_memory_high(size_t *used,
                                                                          size_t *high, int reset)
{
    if (reset && memtrace_on) {
        /* the interval that ends (a pipeline phase, bench_cuda --memory-plan) */
        char buf[2048];
        sd_emu_memory_report(buf, sizeof buf);
        fprintf(stderr, "emu memory, interval ending: %s\n", buf);
    }
    std::lock_guard<std::mutex> lock(mem_mu);
    if (reset) {
        allocated_high = allocated;
        at_high.clear();
        if (memtrace_on)
            for (auto &kv : allocations) at_high.push_back(kv.second);
    }
    if (used) *used = allocated;
    if (high) *high = allocated_high;
}

/* What was live at the high-water mark (SD_EMU_MEMTRACE set, else only the
 * total): per kind of allocation, with the largest blocks of each, as text
 * into buf (always NUL-terminated). */
extern "C" __attribute__((visibility("default"))) void sd_emu_memory_report(char *buf, size_t len)
{
    if (!buf || !len) return;
    std::lock_guard<std::mutex> lock(mem_mu);
    size_t off = 0;
    auto put = [&](const char *fmt, auto... a) {
        if (off + 1 >= len) return;
        int n = snprintf(buf + off, len - off, fmt, a...);
        if (n > 0) off += (size_t)n < len - off ? (size_t)n : len - off - 1;
    };
    buf[0] = '\0';
    put("peak %.1f MB", allocated_high / 1048576.0);
    if (!memtrace_on) {
        put("%s", " (set SD_EMU_MEMTRACE for the breakdown)");
        return;
    }
    for (int c = 0; c < MEM_NCAT; c++) {
        std::vector<size_t> sizes;
        size_t sum = 0;
        for (auto &a : at_high)
            if (a.cat == c) {
                sizes.push_back(a.bytes);
                sum += a.bytes;
            }
        if (sizes.empty()) continue;
        std::sort(sizes.begin(), sizes.end(), std::greater<size_t>());
        put("; %s %.1f MB in %zu blocks", mem_cat_names[c], sum / 1048576.0, sizes.size());
        if (c == MEM_MALLOC) continue;   /* ~1100 weight tensors: only the sum */
        put("%s", " (largest:");
        for (size_t i = 0; i < sizes.size() && i < 8; i++) put(" %.1f", sizes[i] / 1048576.0);
        put("%s", " MB)");
    }
}
