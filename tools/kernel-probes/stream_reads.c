/* How fast two threads read memory as one or several sequential streams each: the probe behind
 * "far-apart streams" in docs/BENCHMARKS.md (twelfth session). AVX2, x86-64 only.
 *   gcc -O3 -march=native -pthread tools/kernel-probes/stream_reads.c -o /tmp/stream_reads
 *   /tmp/stream_reads sum THREADS STREAMS ROW   400 MiB summed; each thread splits its half into
 *                                               STREAMS far-apart parts and reads ROW floats of
 *                                               each in turn (ROW 8: interleaved every 32 bytes)
 *   /tmp/stream_reads dot THREADS FAR G         a matvec's access: G rows of 768 floats loaded side
 *                                               by side, 8 floats at a time, into FMAs; the G rows
 *                                               adjacent (FAR 0) or from G far-apart parts (FAR 1)
 * Prints the median of 9 runs in GB/s, with the smallest and largest. */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FLOATS (100u << 20) /* 400 MiB */
#define D 768
#define RUNS 9

static float *buf;
static int dot, a1, a2; /* sum: STREAMS, ROW; dot: FAR, G */
static volatile float sink;

typedef struct { size_t lo, hi; } Range;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Adds the sums where the compiler must compute them. */
static void keep(const __m256 acc[8]) {
    __m256 t = acc[0];
    for (int k = 1; k < 8; k++) t = _mm256_add_ps(t, acc[k]);
    float o[8];
    _mm256_storeu_ps(o, t);
    sink += o[0];
}

static void *sum_streams(void *arg) {
    Range *r = arg;
    __m256 acc[8];
    for (int k = 0; k < 8; k++) acc[k] = _mm256_setzero_ps();
    size_t part = (r->hi - r->lo) / a1;
    for (size_t i = 0; i + a2 <= part; i += a2)
        for (int s = 0; s < a1; s++) {
            const float *p = buf + r->lo + s * part + i;
            for (int j = 0; j < a2; j += 8) acc[s & 7] = _mm256_add_ps(acc[s & 7], _mm256_load_ps(p + j));
        }
    keep(acc);
    return NULL;
}

static void *dot_rows(void *arg) {
    Range *r = arg; /* in rows of D floats */
    __m256 acc[8];
    for (int k = 0; k < 8; k++) acc[k] = _mm256_setzero_ps();
    size_t n = r->hi - r->lo, part = n / a2;
    for (size_t g = 0; g < part; g++) {
        const float *rows[8];
        for (int k = 0; k < a2; k++)
            rows[k] = buf + (a1 ? r->lo + k * part + g : r->lo + g * a2 + k) * (size_t)D;
        for (int j = 0; j < D; j += 8)
            for (int k = 0; k < a2; k++) acc[k] = _mm256_fmadd_ps(_mm256_load_ps(rows[k] + j), acc[k], acc[k]);
    }
    keep(acc);
    return NULL;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 5 || (strcmp(argv[1], "sum") && strcmp(argv[1], "dot"))) {
        fprintf(stderr, "usage: %s sum THREADS STREAMS ROW | dot THREADS FAR G\n", argv[0]);
        return 2;
    }
    dot = !strcmp(argv[1], "dot");
    int threads = atoi(argv[2]);
    a1 = atoi(argv[3]);
    a2 = atoi(argv[4]);
    if (threads < 1 || threads > 8 || (dot ? (a1 < 0 || a1 > 1 || a2 < 1 || a2 > 8)
                                           : (a1 < 1 || a2 < 8 || a2 % 8))) {
        fprintf(stderr, "threads 1..8; sum: STREAMS >= 1, ROW a multiple of 8; dot: FAR 0 or 1, G 1..8\n");
        return 2;
    }
    buf = aligned_alloc(4096, (size_t)FLOATS * 4);
    for (size_t i = 0; i < FLOATS; i++) buf[i] = 1e-9f;
    size_t units = dot ? FLOATS / D : FLOATS;
    double rate[RUNS];
    for (int run = 0; run < RUNS; run++) {
        pthread_t t[8];
        Range r[8];
        double t0 = now();
        for (int k = 0; k < threads; k++) {
            r[k].lo = units / threads * k;
            r[k].hi = units / threads * (k + 1);
            pthread_create(&t[k], NULL, dot ? dot_rows : sum_streams, &r[k]);
        }
        for (int k = 0; k < threads; k++) pthread_join(t[k], NULL);
        rate[run] = units * (dot ? D : 1) * 4.0 / (now() - t0) / 1e9;
    }
    qsort(rate, RUNS, sizeof rate[0], cmp);
    printf("%s threads=%d %s=%d %s=%d: median %.1f GB/s (min %.1f, max %.1f)\n", argv[1], threads,
           dot ? "far" : "streams", a1, dot ? "g" : "row", a2, rate[RUNS / 2], rate[0], rate[RUNS - 1]);
    return 0;
}
