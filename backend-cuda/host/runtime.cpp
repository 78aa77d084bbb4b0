// The host stand-in for a CUDA launch (see kernels/host_shim.h): runs one block of a kernel on
// the calling thread, its threads as fibers (ucontext) switched only at barriers. The Rust side
// (src/host.rs) hands the blocks of a launch to a pool of threads reused across launches; each
// pool thread keeps its fiber stacks between launches, so a launch allocates nothing once warm.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <vector>

#include "../kernels/host_shim.h"

thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace {

typedef void (*Entry)(void** args);

// 256 KiB of stack per CUDA thread: kernels keep small per-thread arrays (an attention row's
// accumulators); mmap commits only the pages touched.
const size_t STACK_BYTES = 256 << 10;
const unsigned MAX_THREADS = 1024;

enum State { READY, WAITING, DONE };

struct Fiber {
    ucontext_t ctx;
    char* stack;
    State state;
    int group;         // barrier waited on: -1 the block, w >= 0 warp w
    unsigned wait_gen;  // that barrier's generation when it began waiting
    dim3 tid;
};

struct Barrier {
    unsigned size, arrived, gen;
};

struct Worker {
    std::vector<Fiber> fibers;
    std::vector<Barrier> warps;
    Barrier block;
    ucontext_t main;
    unsigned cur;
    Entry entry;
    void** args;
    std::vector<unsigned char> shared;
    uint64_t exchange[MAX_THREADS];
};

thread_local Worker* W = nullptr;

Worker* worker() {
    if (!W) W = new Worker();  // one per pool thread, kept for the thread's life
    return W;
}

void fiber_main() {
    Worker* w = W;
    w->entry(w->args);
    w->fibers[w->cur].state = DONE;
    // returns to uc_link (the scheduler)
}

// Arrive at barrier `b` (group -1 the block, else a warp) and wait until all its fibers have.
void arrive(Barrier& b, int group) {
    Worker* w = W;
    if (++b.arrived == b.size) {
        b.arrived = 0;
        b.gen++;
        return;  // the last to arrive goes on; the others are resumed by the scheduler
    }
    Fiber& f = w->fibers[w->cur];
    f.state = WAITING;
    f.group = group;
    f.wait_gen = b.gen;
    swapcontext(&f.ctx, &w->main);
}

bool released(const Worker* w, const Fiber& f) {
    const Barrier& b = f.group < 0 ? w->block : w->warps[f.group];
    return b.gen != f.wait_gen;
}

}  // namespace

extern "C" {

void softcot_syncthreads(void) { arrive(W->block, -1); }

void softcot_syncwarp(void) {
    Worker* w = W;
    const int warp = (int)(w->cur / 32);
    arrive(w->warps[warp], warp);
}

void* softcot_dynamic_shared(void) { return W->shared.data(); }

uint64_t* softcot_exchange(unsigned int tid) { return &W->exchange[tid]; }

// Runs block `block_linear` (x fastest) of a launch of `entry` with CUDA-style `args` (each a
// pointer to the argument's value). Returns 0, or 1 when the block's threads deadlocked at a
// barrier (some exited or wait at another one), 2 when the block is too large or no stack could
// be mapped.
int softcot_host_run_block(Entry entry, void** args, const unsigned grid[3], const unsigned block[3],
                           unsigned long long block_linear, unsigned shared_bytes) {
    Worker* w = worker();
    const unsigned n = block[0] * block[1] * block[2];
    if (n == 0 || n > MAX_THREADS) return 2;
    while (w->fibers.size() < n) {
        void* s = mmap(nullptr, STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
        if (s == MAP_FAILED) return 2;
        Fiber f;
        memset(&f, 0, sizeof f);
        f.stack = (char*)s;
        w->fibers.push_back(f);
    }
    if (w->shared.size() < shared_bytes) w->shared.resize(shared_bytes);
    w->entry = entry;
    w->args = args;
    gridDim = dim3{grid[0], grid[1], grid[2]};
    blockDim = dim3{block[0], block[1], block[2]};
    blockIdx = dim3{(unsigned)(block_linear % grid[0]), (unsigned)(block_linear / grid[0] % grid[1]),
                    (unsigned)(block_linear / grid[0] / grid[1])};
    w->block = Barrier{n, 0, 0};
    const unsigned nwarps = (n + 31) / 32;
    w->warps.assign(nwarps, Barrier{32, 0, 0});
    w->warps[nwarps - 1].size = n - 32 * (nwarps - 1);
    for (unsigned t = 0; t < n; t++) {
        Fiber& f = w->fibers[t];
        f.state = READY;
        f.tid = dim3{t % block[0], t / block[0] % block[1], t / block[0] / block[1]};
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = STACK_BYTES;
        f.ctx.uc_link = &w->main;
        makecontext(&f.ctx, fiber_main, 0);
    }
    // Round robin: run every fiber that can run until it finishes or waits at a barrier.
    unsigned done = 0;
    while (done < n) {
        bool ran = false;
        for (unsigned t = 0; t < n; t++) {
            Fiber& f = w->fibers[t];
            if (f.state == DONE || (f.state == WAITING && !released(w, f))) continue;
            f.state = READY;
            w->cur = t;
            threadIdx = f.tid;
            swapcontext(&w->main, &f.ctx);
            if (f.state == DONE) done++;
            ran = true;
        }
        if (!ran) return 1;
    }
    return 0;
}

}  // extern "C"
