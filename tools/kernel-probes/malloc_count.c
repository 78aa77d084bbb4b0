/* Counts a program's heap allocations, for LD_PRELOAD: prints "ALLOC malloc M calloc C realloc R
 * bytes B" when it exits. The per-step figures of "No allocation inside the decode loop" in
 * docs/BENCHMARKS.md (twelfth session) are the difference between two thinking budgets:
 *   gcc -O2 -shared -fPIC tools/kernel-probes/malloc_count.c -o /tmp/malloc_count.so -ldl
 *   for n in 10 60; do LD_PRELOAD=/tmp/malloc_count.so target/release/softcot generate \
 *     --model /tmp/b125 --prompt-ids 1,2,3,4,5 --think soft --seed 1 --think-tokens $n \
 *     --answer-tokens 4 --no-stop --format json >/dev/null; done */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

static atomic_long n_malloc, n_calloc, n_realloc, bytes;
static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);

/* dlsym itself may call calloc before real_calloc is known: served from here, never freed. */
static char early[1 << 16];
static size_t early_used;

void *malloc(size_t size) {
    if (!real_malloc) real_malloc = dlsym(RTLD_NEXT, "malloc");
    atomic_fetch_add(&n_malloc, 1);
    atomic_fetch_add(&bytes, size);
    return real_malloc(size);
}

void *calloc(size_t n, size_t size) {
    if (!real_calloc) {
        static int looking;
        if (looking) {
            void *p = early + early_used;
            early_used += (n * size + 15) & ~(size_t)15;
            return p;
        }
        looking = 1;
        real_calloc = dlsym(RTLD_NEXT, "calloc");
        looking = 0;
    }
    atomic_fetch_add(&n_calloc, 1);
    atomic_fetch_add(&bytes, n * size);
    return real_calloc(n, size);
}

void *realloc(void *p, size_t size) {
    if (!real_realloc) real_realloc = dlsym(RTLD_NEXT, "realloc");
    atomic_fetch_add(&n_realloc, 1);
    return real_realloc(p, size);
}

__attribute__((destructor)) static void report(void) {
    fprintf(stderr, "ALLOC malloc %ld calloc %ld realloc %ld bytes %ld\n", atomic_load(&n_malloc),
            atomic_load(&n_calloc), atomic_load(&n_realloc), atomic_load(&bytes));
}
