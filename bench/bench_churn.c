/* Thread churn: N short-lived threads, started a few at a time, each allocating ~100 blocks, freeing them and exiting. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>

#include "bench_util.h"

static int blocks_per_thread;

/* Each thread: allocate blocks (mostly 8..1024 B, 1 in 16 up to 32 KiB), touch, free
 * half in reverse order, then free the rest; the final frees go into this thread's
 * cache, which the allocator must hand back when the thread dies. */
static void *worker(void *arg) {
    uint64_t seed = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    char *blk[512];
    int n = blocks_per_thread;
    for (int i = 0; i < n; i++) {
        uint64_t r = rng_next(&seed);
        uint64_t sz = (r & 15) == 0 ? 1024 + (((r >> 32) * 31744) >> 32)
                                    : 8 + (((r >> 32) * 1017) >> 32);
        blk[i] = malloc(sz);
        if (!blk[i]) { perror("malloc"); exit(1); }
        memset(blk[i], (int)i, 16 < sz ? 16 : sz);
    }
    for (int i = n - 1; i >= 0; i -= 2) free(blk[i]);
    for (int i = n - 2; i >= 0; i -= 2) free(blk[i]);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == '-') {
        fprintf(stderr, "usage: %s [threads_total=20000] [concurrent=4] [blocks_per_thread=100]\n", argv[0]);
        return 2;
    }
    long total = argc > 1 ? strtol(argv[1], NULL, 0) : 20000;
    int conc = argc > 2 ? atoi(argv[2]) : 4;
    blocks_per_thread = argc > 3 ? atoi(argv[3]) : 100;
    if (total < 1 || conc < 1 || conc > 256 || blocks_per_thread < 1 || blocks_per_thread > 512) {
        fprintf(stderr, "bench_churn: bad parameters\n");
        return 2;
    }
    pthread_t tid[256];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);

    uint64_t t0 = now_ns();
    long started = 0;
    while (started < total) {
        int k = 0;
        for (; k < conc && started < total; k++, started++)
            if (pthread_create(&tid[k], &attr, worker, (void *)(uintptr_t)started) != 0) {
                perror("pthread_create");
                return 1;
            }
        for (int j = 0; j < k; j++) pthread_join(tid[j], NULL);
    }
    uint64_t t1 = now_ns();

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    /* ops = threads; ns_per_op = cost of one thread's whole life (create, ~100 mallocs/frees, exit, join). */
    printf("workload=churn_%d ops=%ld ns_per_op=%.3f elapsed_s=%.4f peak_rss_kb=%ld final_rss_kb=%ld blocks_per_thread=%d\n",
           conc, total, (double)(t1 - t0) / (double)total, (double)(t1 - t0) / 1e9,
           ru.ru_maxrss, rss_now_kb(), blocks_per_thread);
    return 0;
}
