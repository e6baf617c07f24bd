/* Producer/consumer: P threads malloc, C others free, blocks passed through one lock-free SPSC ring per pair. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sys/resource.h>

#include "bench_util.h"

#define RING 4096u                      /* power of two */
#define MAXT 8

/* One single-producer single-consumer ring per (producer, consumer) pair. */
struct ring {
    char *slot[RING];
    _Alignas(64) _Atomic uint64_t head;   /* written by its producer */
    _Alignas(64) _Atomic uint64_t tail;   /* written by its consumer */
};
static struct ring *rings;              /* [producer * nc + consumer] */
static int np, nc;
static uint64_t total, minsz, range;
static pthread_barrier_t start_barrier;

/* Back off politely: spin a little, then yield (only 2 cores, maybe shared). */
static inline void backoff(unsigned *spins) {
    if (++*spins < 64) __builtin_ia32_pause();
    else { sched_yield(); *spins = 0; }
}

/* Items producer p makes: an equal share of the total. */
static uint64_t share(uint64_t n, int parts, int i) { return n / (uint64_t)parts + ((uint64_t)i < n % (uint64_t)parts); }

static void *producer(void *arg) {
    int id = (int)(intptr_t)arg;
    uint64_t seed = 0x9E3779B97F4A7C15ull * (uint64_t)(id + 1);
    uint64_t n = share(total, np, id), h[MAXT] = {0}, t_cached[MAXT] = {0};
    pthread_barrier_wait(&start_barrier);
    for (uint64_t i = 0; i < n; i++) {
        int c = (int)(i % (uint64_t)nc); /* items dealt to the consumers in turn */
        struct ring *rg = &rings[id * nc + c];
        uint64_t r = rng_next(&seed);
        char *p = malloc(minsz + (((r >> 32) * range) >> 32));
        if (__builtin_expect(!p, 0)) { perror("malloc"); exit(1); }
        p[0] = (char)i;
        unsigned spins = 0;
        while (h[c] - t_cached[c] >= RING) {
            t_cached[c] = atomic_load_explicit(&rg->tail, memory_order_acquire);
            if (h[c] - t_cached[c] >= RING) backoff(&spins);
        }
        rg->slot[h[c] & (RING - 1)] = p;
        h[c]++;
        atomic_store_explicit(&rg->head, h[c], memory_order_release);
    }
    return NULL;
}

static uint64_t sums[MAXT];

static void *consumer(void *arg) {
    int id = (int)(intptr_t)arg;
    uint64_t want[MAXT], t[MAXT] = {0}, left = 0, s = 0;
    for (int p = 0; p < np; p++) {
        want[p] = share(share(total, np, p), nc, id);
        left += want[p];
    }
    pthread_barrier_wait(&start_barrier);
    unsigned spins = 0;
    while (left) {
        int got = 0;
        for (int p = 0; p < np; p++) {
            struct ring *rg = &rings[p * nc + id];
            uint64_t h = atomic_load_explicit(&rg->head, memory_order_acquire);
            if (t[p] == h) continue;
            got = 1;
            while (t[p] < h) {
                char *q = rg->slot[t[p] & (RING - 1)];
                s += (unsigned char)q[0];
                free(q);
                t[p]++;
                left--;
                if ((t[p] & 31) == 0) atomic_store_explicit(&rg->tail, t[p], memory_order_release);
            }
            atomic_store_explicit(&rg->tail, t[p], memory_order_release);
        }
        if (!got) backoff(&spins);
        else spins = 0;
    }
    sums[id] = s;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == '-') {
        fprintf(stderr, "usage: %s [items=5000000] [min=8] [max=1024] [producers=1] [consumers=1]\n", argv[0]);
        return 2;
    }
    total = argc > 1 ? strtoull(argv[1], NULL, 0) : 5000000;
    minsz = argc > 2 ? strtoull(argv[2], NULL, 0) : 8;
    uint64_t maxsz = argc > 3 ? strtoull(argv[3], NULL, 0) : 1024;
    np = argc > 4 ? atoi(argv[4]) : 1;
    nc = argc > 5 ? atoi(argv[5]) : 1;
    if (minsz < 1 || maxsz < minsz || np < 1 || nc < 1 || np > MAXT || nc > MAXT) {
        fprintf(stderr, "bench_prodcons: bad parameters\n");
        return 2;
    }
    range = maxsz - minsz + 1;
    rings = aligned_alloc(64, sizeof *rings * (size_t)(np * nc));
    if (!rings) { perror("aligned_alloc"); return 1; }
    for (int i = 0; i < np * nc; i++) {
        atomic_init(&rings[i].head, 0);
        atomic_init(&rings[i].tail, 0);
    }

    pthread_t tid[2 * MAXT];
    pthread_barrier_init(&start_barrier, NULL, (unsigned)(np + nc + 1));
    for (int c = 0; c < nc; c++)
        if (pthread_create(&tid[c], NULL, consumer, (void *)(intptr_t)c)) { perror("pthread_create"); return 1; }
    for (int p = 0; p < np; p++)
        if (pthread_create(&tid[nc + p], NULL, producer, (void *)(intptr_t)p)) { perror("pthread_create"); return 1; }
    pthread_barrier_wait(&start_barrier);
    uint64_t t0 = now_ns();
    for (int i = 0; i < np + nc; i++) pthread_join(tid[i], NULL);
    uint64_t t1 = now_ns();
    uint64_t sum = 0;
    for (int c = 0; c < nc; c++) sum += sums[c];
    free(rings);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("workload=prodcons_%dto%d_%llu_%llu ops=%llu ns_per_op=%.3f elapsed_s=%.4f peak_rss_kb=%ld check=%llu\n",
           np, nc, (unsigned long long)minsz, (unsigned long long)maxsz, (unsigned long long)total,
           total ? (double)(t1 - t0) / (double)total : 0.0, (double)(t1 - t0) / 1e9,
           ru.ru_maxrss, (unsigned long long)(sum & 0xff));
    return 0;
}
