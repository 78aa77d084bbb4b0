// The host stand-in for a CUDA launch (see kernels/host_shim.h): runs one block of a kernel on
// the calling thread, its threads as fibers switched only at barriers. The Rust side
// (src/host.rs) hands the blocks of a launch to a pool of threads reused across launches; each
// pool thread keeps its fiber stacks between launches, so a launch allocates nothing once warm.
//
// A block of 256 threads switches at least 512 times, so the switch is a few instructions of our
// own on x86-64 (callee-saved registers, MXCSR and the x87 control word, as the ABI asks);
// ucontext's swapcontext makes a signal-mask system call per switch, which made the conformance
// suite seven times slower (357 s against 50 s). Other targets use ucontext.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <vector>

#include "../kernels/host_shim.h"

thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace {

typedef void (*Entry)(void** args);

// 256 KiB of stack per CUDA thread: kernels keep small per-thread arrays (an attention row's
// accumulators); mmap commits only the pages touched.
const size_t STACK_BYTES = 256 << 10;
const unsigned MAX_THREADS = 1024;

#if defined(__x86_64__)
// softcot_switch(save, load): saves the callee-saved state on the current stack, stores the
// stack pointer in *save, and resumes the context whose stack pointer is `load`.
extern "C" void softcot_switch(void** save, void* load);
asm(R"(
    .text
    .globl softcot_switch
    .type softcot_switch, @function
softcot_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size softcot_switch, .-softcot_switch
)");

struct Context {
    void* sp;
};

void fiber_main();

// A fresh context on `stack` that starts in fiber_main: the frame softcot_switch pops.
void make_context(Context& c, char* stack, size_t bytes) {
    uintptr_t top = ((uintptr_t)stack + bytes) & ~(uintptr_t)15;
    uint64_t* sp = (uint64_t*)top;
    *--sp = 0;                        // fiber_main's return address (it never returns)
    *--sp = (uint64_t)&fiber_main;    // where softcot_switch's `ret` goes
    for (int i = 0; i < 6; i++) *--sp = 0;  // rbp rbx r12 r13 r14 r15
    uint32_t csr;
    uint16_t cw;
    asm volatile("stmxcsr %0" : "=m"(csr));
    asm volatile("fnstcw %0" : "=m"(cw));
    *--sp = (uint64_t)csr | ((uint64_t)cw << 32);
    c.sp = sp;
}

void switch_to(Context& from, Context& to) { softcot_switch(&from.sp, to.sp); }
#else
struct Context {
    ucontext_t uc;
};

void fiber_main();

void make_context(Context& c, char* stack, size_t bytes) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = bytes;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, fiber_main, 0);
}

void switch_to(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

enum State { READY, WAITING, DONE };

struct Fiber {
    Context ctx;
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
    Context main;
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
    Fiber& f = w->fibers[w->cur];
    f.state = DONE;
    switch_to(f.ctx, w->main);  // never resumed: the next block makes a fresh context
    __builtin_unreachable();
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
    switch_to(f.ctx, w->main);
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
        make_context(f.ctx, f.stack, STACK_BYTES);
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
            switch_to(w->main, f.ctx);
            if (f.state == DONE) done++;
            ran = true;
        }
        if (!ran) return 1;
    }
    return 0;
}

}  // extern "C"
