/* Producer/consumer: one thread mallocs, another frees, blocks passed through a lock-free SPSC ring. */
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

static char *ring[RING];
static _Alignas(64) _Atomic uint64_t head;   /* written by producer */
static _Alignas(64) _Atomic uint64_t tail;   /* written by consumer */
static _Alignas(64) uint64_t total, minsz, range;
static pthread_barrier_t start_barrier;

/* Back off politely: spin a little, then yield (only 2 cores, maybe shared). */
static inline void backoff(unsigned *spins) {
    if (++*spins < 64) __builtin_ia32_pause();
    else { sched_yield(); *spins = 0; }
}

static void *producer(void *arg) {
    (void)arg;
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    uint64_t h = 0, t_cached = 0;
    pthread_barrier_wait(&start_barrier);
    for (uint64_t i = 0; i < total; i++) {
        uint64_t r = rng_next(&seed);
        char *p = malloc(minsz + (((r >> 32) * range) >> 32));
        if (__builtin_expect(!p, 0)) { perror("malloc"); exit(1); }
        p[0] = (char)i;
        unsigned spins = 0;
        while (h - t_cached >= RING) {
            t_cached = atomic_load_explicit(&tail, memory_order_acquire);
            if (h - t_cached >= RING) backoff(&spins);
        }
        ring[h & (RING - 1)] = p;
        h++;
        atomic_store_explicit(&head, h, memory_order_release);
    }
    return NULL;
}

static void *consumer(void *arg) {
    uint64_t *sum = arg, t = 0, h_cached = 0, s = 0;
    pthread_barrier_wait(&start_barrier);
    while (t < total) {
        unsigned spins = 0;
        while (t == h_cached) {
            h_cached = atomic_load_explicit(&head, memory_order_acquire);
            if (t == h_cached) backoff(&spins);
        }
        while (t < h_cached) {
            char *p = ring[t & (RING - 1)];
            s += (unsigned char)p[0];
            free(p);
            t++;
            if ((t & 31) == 0) atomic_store_explicit(&tail, t, memory_order_release);
        }
        atomic_store_explicit(&tail, t, memory_order_release);
    }
    *sum = s;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == '-') {
        fprintf(stderr, "usage: %s [items=5000000] [min=8] [max=1024]\n", argv[0]);
        return 2;
    }
    total = argc > 1 ? strtoull(argv[1], NULL, 0) : 5000000;
    minsz = argc > 2 ? strtoull(argv[2], NULL, 0) : 8;
    uint64_t maxsz = argc > 3 ? strtoull(argv[3], NULL, 0) : 1024;
    if (minsz < 1 || maxsz < minsz) { fprintf(stderr, "bench_prodcons: bad parameters\n"); return 2; }
    range = maxsz - minsz + 1;

    pthread_t pt, ct;
    uint64_t sum = 0;
    pthread_barrier_init(&start_barrier, NULL, 3);
    if (pthread_create(&ct, NULL, consumer, &sum) || pthread_create(&pt, NULL, producer, NULL)) {
        perror("pthread_create");
        return 1;
    }
    pthread_barrier_wait(&start_barrier);
    uint64_t t0 = now_ns();
    pthread_join(pt, NULL);
    pthread_join(ct, NULL);
    uint64_t t1 = now_ns();

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("workload=prodcons_%llu_%llu ops=%llu ns_per_op=%.3f elapsed_s=%.4f peak_rss_kb=%ld check=%llu\n",
           (unsigned long long)minsz, (unsigned long long)maxsz, (unsigned long long)total,
           total ? (double)(t1 - t0) / (double)total : 0.0, (double)(t1 - t0) / 1e9,
           ru.ru_maxrss, (unsigned long long)(sum & 0xff));
    return 0;
}
