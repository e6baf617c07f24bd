/* Server-style multithreaded churn: T threads replace random pool slots, half of them in a neighbour's region (cross-thread frees). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sys/resource.h>

#include "bench_util.h"

static int nthreads;
static uint64_t slots_per_thread, iters;
static _Atomic(char *) *pool;          /* nthreads regions of slots_per_thread slots each */
static pthread_barrier_t start_barrier;

/* Size mix: 7/8 of requests in 8..1024, 1/8 in 1..32 KiB. */
static inline size_t draw_size(uint64_t r) {
    if ((r & 7) == 0) return 1024 + pick((r >> 32), 31 * 1024 + 1);
    return 8 + pick((r >> 32), 1017);
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    uint64_t seed = 0x9E3779B97F4A7C15ull ^ ((uint64_t)(id + 1) * 0xD1B54A32D192ED03ull);
    _Atomic(char *) *own = pool + (uint64_t)id * slots_per_thread;
    _Atomic(char *) *nbr = pool + (uint64_t)((id + 1) % nthreads) * slots_per_thread;
    pthread_barrier_wait(&start_barrier);
    for (uint64_t i = 0; i < iters; i++) {
        uint64_t r = rng_next(&seed);
        _Atomic(char *) *region = (r & 0x100) ? nbr : own;
        uint64_t s = pick((r >> 9) & 0xffffffffu, slots_per_thread);
        char *p = malloc(draw_size(r));
        if (__builtin_expect(!p, 0)) { perror("malloc"); exit(1); }
        p[0] = (char)i;
        char *old = atomic_exchange_explicit(&region[s], p, memory_order_acq_rel);
        free(old);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == '-') {
        fprintf(stderr, "usage: %s [threads=2] [slots_per_thread=1024] [iterations_per_thread=2000000]\n", argv[0]);
        return 2;
    }
    nthreads = argc > 1 ? atoi(argv[1]) : 2;
    slots_per_thread = argc > 2 ? strtoull(argv[2], NULL, 0) : 1024;
    iters = argc > 3 ? strtoull(argv[3], NULL, 0) : 2000000;
    if (nthreads < 1 || nthreads > 1024 || slots_per_thread < 1) {
        fprintf(stderr, "bench_threads: bad parameters\n");
        return 2;
    }
    uint64_t nslots = (uint64_t)nthreads * slots_per_thread;
    pool = calloc(nslots, sizeof *pool);
    pthread_t *tid = calloc((size_t)nthreads, sizeof *tid);
    if (!pool || !tid) return 1;
    uint64_t seed = 12345;
    for (uint64_t i = 0; i < nslots; i++) {
        char *p = malloc(draw_size(rng_next(&seed)));
        p[0] = 1;
        atomic_store_explicit(&pool[i], p, memory_order_relaxed);
    }
    pthread_barrier_init(&start_barrier, NULL, (unsigned)nthreads + 1);
    for (int t = 0; t < nthreads; t++)
        if (pthread_create(&tid[t], NULL, worker, (void *)(intptr_t)t) != 0) { perror("pthread_create"); return 1; }

    pthread_barrier_wait(&start_barrier);
    uint64_t t0 = now_ns();
    for (int t = 0; t < nthreads; t++) pthread_join(tid[t], NULL);
    uint64_t t1 = now_ns();

    for (uint64_t i = 0; i < nslots; i++) free(atomic_load_explicit(&pool[i], memory_order_relaxed));
    free(pool);
    free(tid);

    uint64_t ops = (uint64_t)nthreads * iters;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    /* ns_per_op is wall time per operation over all threads (inverse throughput). */
    printf("workload=threads_%d ops=%llu ns_per_op=%.3f elapsed_s=%.4f peak_rss_kb=%ld threads=%d slots=%llu\n",
           nthreads, (unsigned long long)ops, ops ? (double)(t1 - t0) / (double)ops : 0.0,
           (double)(t1 - t0) / 1e9, ru.ru_maxrss, nthreads, (unsigned long long)nslots);
    return 0;
}
