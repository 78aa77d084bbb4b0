// The host stand-in for a CUDA launch (see kernels/host_shim.h): runs one block of a kernel on
// the calling thread, its threads as fibers switched only at barriers. The Rust side
// (src/host.rs) hands the blocks of a launch to a pool of threads reused across launches; each
// pool thread keeps its fiber stacks between launches, so a launch allocates nothing once warm.
//
// A block of 256 threads switches at least 512 times, so the switch is a few instructions of our
// own on x86-64 (callee-saved registers, MXCSR and the x87 control word, as the ABI asks);
// ucontext's swapcontext makes a signal-mask system call per switch, which made the conformance
// suite seven times slower (357 s against 50 s). Other targets use ucontext.
//
// Sanitized builds (build.rs, docs/CUDA.md "Sanitizers") define one of:
// - SOFTCOT_SANITIZE_ADDRESS: every stack switch is announced to ASan (it would otherwise take a
//   fiber's stack for a wild one), `__shared__` is a plain static that ASan fences with
//   redzones (host_shim.h), so blocks run one at a time, and dynamic shared memory is allocated
//   at exactly the launch's size, so reading past it hits ASan's heap redzone.
// - SOFTCOT_SANITIZE_THREAD: each CUDA thread is a TSan fiber, switched without any
//   happens-before of its own; what orders CUDA threads is declared explicitly, as on a GPU: a
//   barrier (block or warp) orders what its members did before it with what they do after; a
//   launch's start orders the launching thread's past (and so every earlier launch) before the
//   block; a block's end orders it before the launcher's return (src/host.rs calls
//   softcot_host_launch_begin / _end around every launch, from Rust code TSan cannot see). Blocks
//   that run one after the other on the same pool thread are ordered too (they reuse its
//   `__shared__` copy), so TSan sees races between blocks when they ran on different pool
//   threads. This file itself is built without TSan's instrumentation (build.rs): its
//   bookkeeping is per pool thread, and instrumented it would race with itself from fibers that
//   carry no happens-before by design.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <vector>

#if defined(SOFTCOT_SANITIZE_ADDRESS)
#include <sanitizer/common_interface_defs.h>

#include <mutex>
#endif
#if defined(SOFTCOT_SANITIZE_THREAD)
#include <sanitizer/tsan_interface.h>
#define TSAN_ACQUIRE(addr) __tsan_acquire((void*)(addr))
#define TSAN_RELEASE(addr) __tsan_release((void*)(addr))
#else
#define TSAN_ACQUIRE(addr) ((void)0)
#define TSAN_RELEASE(addr) ((void)0)
#endif

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

// The registers of a suspended context: its stack pointer (softcot_switch saved the rest on it).
struct Regs {
    void* sp;
};

void fiber_main();

// A fresh context on `stack` that starts in fiber_main: the frame softcot_switch pops.
void make_regs(Regs& r, char* stack, size_t bytes) {
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
    r.sp = sp;
}

void switch_regs(Regs& from, Regs& to) { softcot_switch(&from.sp, to.sp); }
#else
struct Regs {
    ucontext_t uc;
};

void fiber_main();

void make_regs(Regs& r, char* stack, size_t bytes) {
    getcontext(&r.uc);
    r.uc.uc_stack.ss_sp = stack;
    r.uc.uc_stack.ss_size = bytes;
    r.uc.uc_link = nullptr;
    makecontext(&r.uc, fiber_main, 0);
}

void switch_regs(Regs& from, Regs& to) { swapcontext(&from.uc, &to.uc); }
#endif

// A context to switch to, and what the sanitizers are told when switching to it.
struct Context {
    Regs regs;
    const void* stack_bottom;  // ASan: the stack it runs on (the pool thread's: learned in fiber_main)
    size_t stack_size;
    void* fake_stack;          // ASan: its fake stack while it is switched away from
    void* tsan_fiber;          // TSan: its fiber (the pool thread's own for the scheduler)
};

// Leaves `from` for `to`; returns when something switches back to `from`. `from_done`: `from` is
// never resumed (a finished fiber), so ASan may drop its fake stack.
void switch_to(Context& from, Context& to, bool from_done) {
#if defined(SOFTCOT_SANITIZE_ADDRESS)
    __sanitizer_start_switch_fiber(from_done ? nullptr : &from.fake_stack, to.stack_bottom, to.stack_size);
#endif
#if defined(SOFTCOT_SANITIZE_THREAD)
    // No happens-before from the switch itself: fibers are ordered by barriers only.
    __tsan_switch_to_fiber(to.tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
    (void)from_done;
    switch_regs(from.regs, to.regs);
#if defined(SOFTCOT_SANITIZE_ADDRESS)
    __sanitizer_finish_switch_fiber(from.fake_stack, nullptr, nullptr);
#endif
}

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
    // TSan: what arrivals at generation g release and departures acquire, by g's parity (a fast
    // thread may arrive at g + 1 before a slow one has left g, never at g + 2).
    char sync[2];
};

struct Worker {
    std::vector<Fiber> fibers;
    std::vector<Barrier> warps;
    Barrier block;
    Context main;
    unsigned cur;
    Entry entry;
    void** args;
    const char* launch;  // TSan: the launch's token (softcot_host_launch_begin)
    char blocks_sync;    // TSan: orders the blocks this pool thread runs, one after the other
    std::vector<unsigned char> shared;
    uint64_t exchange[MAX_THREADS];
};

thread_local Worker* W = nullptr;

Worker* worker() {
    if (!W) {
        W = new Worker();  // one per pool thread, kept for the thread's life
#if defined(SOFTCOT_SANITIZE_THREAD)
        W->main.tsan_fiber = __tsan_get_current_fiber();
#endif
    }
    return W;
}

void fiber_main() {
    Worker* w = W;
#if defined(SOFTCOT_SANITIZE_ADDRESS)
    // The first switch into this fiber: finish it, learning the pool thread's stack.
    __sanitizer_finish_switch_fiber(nullptr, &w->main.stack_bottom, &w->main.stack_size);
#endif
    TSAN_ACQUIRE(w->launch);
    TSAN_ACQUIRE(&w->blocks_sync);
    w->entry(w->args);
    TSAN_RELEASE(&w->blocks_sync);
    TSAN_RELEASE(w->launch + 1);
    Fiber& f = w->fibers[w->cur];
    f.state = DONE;
    switch_to(f.ctx, w->main, true);  // never resumed: the next block makes a fresh context
    __builtin_unreachable();
}

// Arrive at barrier `b` (group -1 the block, else a warp) and wait until all its fibers have.
void arrive(Barrier& b, int group) {
    Worker* w = W;
    const unsigned gen = b.gen;
    TSAN_RELEASE(&b.sync[gen & 1]);
    if (++b.arrived == b.size) {
        b.arrived = 0;
        b.gen++;
        TSAN_ACQUIRE(&b.sync[gen & 1]);
        return;  // the last to arrive goes on; the others are resumed by the scheduler
    }
    Fiber& f = w->fibers[w->cur];
    f.state = WAITING;
    f.group = group;
    f.wait_gen = gen;
    switch_to(f.ctx, w->main, false);
    TSAN_ACQUIRE(&b.sync[gen & 1]);
}

bool released(const Worker* w, const Fiber& f) {
    const Barrier& b = f.group < 0 ? w->block : w->warps[f.group];
    return b.gen != f.wait_gen;
}

#if defined(SOFTCOT_SANITIZE_ADDRESS)
// `__shared__` is one static copy per kernel in this build (host_shim.h): one block at a time.
std::mutex one_block_at_a_time;
#endif

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

// The token of a launch about to start, from the launching thread: TSan learns that what this
// thread did so far happens before the launch's blocks. Null in builds without TSan.
const char* softcot_host_launch_begin(void) {
#if defined(SOFTCOT_SANITIZE_THREAD)
    char* token = (char*)malloc(2);  // [0]: the launch's start, [1]: its blocks' ends
    __tsan_release(token);
    return token;
#else
    return nullptr;
#endif
}

// The launch of `token` is done (every block returned): what its blocks did happens before
// what the launching thread does next.
void softcot_host_launch_end(const char* token) {
#if defined(SOFTCOT_SANITIZE_THREAD)
    __tsan_acquire((void*)(token + 1));
    free((void*)token);
#else
    (void)token;
#endif
}

// Runs block `block_linear` (x fastest) of a launch of `entry` with CUDA-style `args` (each a
// pointer to the argument's value); `launch`: the token of softcot_host_launch_begin. Returns 0,
// or 1 when the block's threads deadlocked at a barrier (some exited or wait at another one), 2
// when the block is too large or no stack could be mapped.
int softcot_host_run_block(Entry entry, void** args, const unsigned grid[3], const unsigned block[3],
                           unsigned long long block_linear, unsigned shared_bytes, const char* launch) {
#if defined(SOFTCOT_SANITIZE_ADDRESS)
    std::lock_guard<std::mutex> lock(one_block_at_a_time);
#endif
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
        f.ctx.stack_bottom = s;
        f.ctx.stack_size = STACK_BYTES;
#if defined(SOFTCOT_SANITIZE_THREAD)
        f.ctx.tsan_fiber = __tsan_create_fiber(0);
#endif
        w->fibers.push_back(f);
    }
    // Exactly the launch's bytes (a fresh allocation when the size changes), so that reading
    // past them is reading past an allocation (ASan's heap redzone).
    if (w->shared.size() != shared_bytes) w->shared = std::vector<unsigned char>(shared_bytes);
    w->entry = entry;
    w->args = args;
    w->launch = launch;
    gridDim = dim3{grid[0], grid[1], grid[2]};
    blockDim = dim3{block[0], block[1], block[2]};
    blockIdx = dim3{(unsigned)(block_linear % grid[0]), (unsigned)(block_linear / grid[0] % grid[1]),
                    (unsigned)(block_linear / grid[0] / grid[1])};
    w->block = Barrier{n, 0, 0, {}};
    const unsigned nwarps = (n + 31) / 32;
    w->warps.assign(nwarps, Barrier{32, 0, 0, {}});
    w->warps[nwarps - 1].size = n - 32 * (nwarps - 1);
    for (unsigned t = 0; t < n; t++) {
        Fiber& f = w->fibers[t];
        f.state = READY;
        f.tid = dim3{t % block[0], t / block[0] % block[1], t / block[0] / block[1]};
        make_regs(f.ctx.regs, f.stack, STACK_BYTES);
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
            switch_to(w->main, f.ctx, false);
            if (f.state == DONE) done++;
            ran = true;
        }
        if (!ran) return 1;
    }
    return 0;
}

}  // extern "C"
