/* Malloc/free churn over a live set of slots with random sizes in [min,max], in one thread or several independent ones. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sys/resource.h>

#include "bench_util.h"

struct job {
    uint64_t min, range, slots, iters, seed;
    pthread_barrier_t *start;
    unsigned sum;
    int failed;
};

static void *run(void *arg) {
    struct job *j = arg;
    char **slot = calloc(j->slots, sizeof *slot);
    if (!slot) { j->failed = 1; return NULL; }
    uint64_t seed = j->seed;
    /* Fill the live set before timing. */
    for (uint64_t i = 0; i < j->slots; i++) {
        uint64_t r = rng_next(&seed);
        slot[i] = malloc(j->min + pick(r >> 32, j->range));
        if (!slot[i]) { j->failed = 1; return NULL; }
        slot[i][0] = (char)i;
    }
    pthread_barrier_wait(j->start);
    for (uint64_t i = 0; i < j->iters; i++) {
        uint64_t r = rng_next(&seed);
        uint64_t s = pick(r & 0xffffffffu, j->slots);
        uint64_t sz = j->min + pick(r >> 32, j->range);
        free(slot[s]);
        char *p = malloc(sz);
        if (__builtin_expect(!p, 0)) { j->failed = 1; return NULL; }
        p[0] = (char)i;
        slot[s] = p;
    }
    pthread_barrier_wait(j->start);
    for (uint64_t i = 0; i < j->slots; i++) { j->sum += (unsigned char)slot[i][0]; free(slot[i]); }
    free(slot);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == '-') {
        fprintf(stderr, "usage: %s [min=8] [max=1024] [slots=64] [iterations=20000000] [threads=1]\n", argv[0]);
        return 2;
    }
    uint64_t min = argc > 1 ? strtoull(argv[1], NULL, 0) : 8;
    uint64_t max = argc > 2 ? strtoull(argv[2], NULL, 0) : 1024;
    uint64_t slots = argc > 3 ? strtoull(argv[3], NULL, 0) : 64;
    uint64_t iters = argc > 4 ? strtoull(argv[4], NULL, 0) : 20000000;
    unsigned threads = argc > 5 ? (unsigned)strtoul(argv[5], NULL, 0) : 1;
    if (min < 1 || max < min || slots < 1 || slots > (1u << 30) || threads < 1 || threads > 64) {
        fprintf(stderr, "bench_loop: bad parameters\n");
        return 2;
    }
    /* The main thread is one of the workers, so threads=1 has no extra thread. */
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, threads + 1);
    struct job jobs[64];
    pthread_t tid[64];
    for (unsigned t = 0; t < threads; t++) {
        jobs[t] = (struct job){min, max - min + 1, slots, iters, 0x9E3779B97F4A7C15ull + t * 7919, &start, 0, 0};
        if (pthread_create(&tid[t], NULL, run, &jobs[t]) != 0) { perror("pthread_create"); return 1; }
    }
    pthread_barrier_wait(&start);
    uint64_t t0 = now_ns();
    pthread_barrier_wait(&start);
    uint64_t t1 = now_ns();
    unsigned sum = 0;
    for (unsigned t = 0; t < threads; t++) {
        pthread_join(tid[t], NULL);
        if (jobs[t].failed) { fprintf(stderr, "bench_loop: malloc failed\n"); return 1; }
        sum += jobs[t].sum;
    }

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    uint64_t ops = iters * threads;
    printf("workload=loop_%llu_%llu%s ops=%llu ns_per_op=%.3f elapsed_s=%.4f peak_rss_kb=%ld slots=%llu threads=%u check=%u\n",
           (unsigned long long)min, (unsigned long long)max, threads > 1 ? "_mt" : "", (unsigned long long)ops,
           ops ? (double)(t1 - t0) / (double)ops : 0.0, (double)(t1 - t0) / 1e9,
           ru.ru_maxrss, (unsigned long long)slots, threads, sum & 0xff);
    return 0;
}
