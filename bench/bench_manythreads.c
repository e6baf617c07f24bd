/* Many threads alive at once (a thread-per-connection server): each holds a few dozen small blocks; reports the RSS each live thread costs and what is left once they have exited. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench_util.h"

static int blocks;
static pthread_barrier_t all_live, may_exit;

static void *worker(void *arg) {
    uint64_t seed = 0x9E3779B97F4A7C15ull ^ ((uint64_t)(uintptr_t)arg * 0xD1B54A32D192ED03ull);
    char **v = alloca((size_t)blocks * sizeof *v);
    for (int i = 0; i < blocks; i++) {
        uint64_t r = rng_next(&seed);
        size_t n = 8 + pick(r >> 32, 1017); /* 8..1024 B, written in full */
        v[i] = malloc(n);
        if (!v[i]) { perror("malloc"); exit(1); }
        memset(v[i], (int)i, n);
    }
    pthread_barrier_wait(&all_live);
    pthread_barrier_wait(&may_exit);
    for (int i = 0; i < blocks; i++) free(v[i]);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == '-') {
        fprintf(stderr, "usage: %s [threads=1000] [blocks_per_thread=64]\n", argv[0]);
        return 2;
    }
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    blocks = argc > 2 ? atoi(argv[2]) : 64;
    if (n < 1 || n > 100000 || blocks < 1 || blocks > 4096) { /* the block array is on a 256 KiB stack */
        fprintf(stderr, "bench_manythreads: bad parameters\n");
        return 2;
    }
    pthread_t *tid = calloc((size_t)n, sizeof *tid);
    if (!tid) return 1;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 << 10); /* as servers with many threads set it */
    pthread_barrier_init(&all_live, NULL, (unsigned)n + 1);
    pthread_barrier_init(&may_exit, NULL, (unsigned)n + 1);
    long rss0 = rss_now_kb();
    uint64_t t0 = now_ns();
    for (int i = 0; i < n; i++)
        if (pthread_create(&tid[i], &attr, worker, (void *)(intptr_t)(i + 1)) != 0) { perror("pthread_create"); return 1; }
    pthread_barrier_wait(&all_live);
    long rss_live = rss_now_kb();
    pthread_barrier_wait(&may_exit);
    for (int i = 0; i < n; i++) pthread_join(tid[i], NULL);
    uint64_t t1 = now_ns();
    long rss_end = rss_now_kb();
    free(tid);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    /* ns_per_op: wall time per thread, from its creation to its join. */
    printf("workload=manythreads_%d ops=%d ns_per_op=%.3f elapsed_s=%.4f peak_rss_kb=%ld rss_per_thread_kb=%.1f "
           "final_rss_kb=%ld threads=%d blocks=%d\n",
           n, n, (double)(t1 - t0) / n, (double)(t1 - t0) / 1e9, ru.ru_maxrss, (double)(rss_live - rss0) / n,
           rss_end, n, blocks);
    return 0;
}
