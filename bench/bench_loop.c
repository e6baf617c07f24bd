/* Single-thread malloc/free churn over a live set of slots with random sizes in [min,max]. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sys/resource.h>

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: cheap and good enough for picking slots and sizes. */
static inline uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [0, range) from 32 random bits, no division (range < 2^32). */
static inline uint64_t pick(uint64_t bits32, uint64_t range) {
    return (bits32 * range) >> 32;
}

int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == '-') {
        fprintf(stderr, "usage: %s [min=8] [max=1024] [slots=64] [iterations=20000000]\n", argv[0]);
        return 2;
    }
    uint64_t min = argc > 1 ? strtoull(argv[1], NULL, 0) : 8;
    uint64_t max = argc > 2 ? strtoull(argv[2], NULL, 0) : 1024;
    uint64_t slots = argc > 3 ? strtoull(argv[3], NULL, 0) : 64;
    uint64_t iters = argc > 4 ? strtoull(argv[4], NULL, 0) : 20000000;
    if (min < 1 || max < min || slots < 1 || slots > (1u << 30)) {
        fprintf(stderr, "bench_loop: bad parameters\n");
        return 2;
    }
    uint64_t range = max - min + 1;
    char **slot = calloc(slots, sizeof *slot);
    if (!slot) return 1;
    uint64_t seed = 0x9E3779B97F4A7C15ull;

    /* Fill the live set before timing. */
    for (uint64_t i = 0; i < slots; i++) {
        uint64_t r = rng_next(&seed);
        slot[i] = malloc(min + pick(r >> 32, range));
        if (!slot[i]) { perror("malloc"); return 1; }
        slot[i][0] = (char)i;
    }

    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < iters; i++) {
        uint64_t r = rng_next(&seed);
        uint64_t s = pick(r & 0xffffffffu, slots);
        uint64_t sz = min + pick(r >> 32, range);
        free(slot[s]);
        char *p = malloc(sz);
        if (__builtin_expect(!p, 0)) { perror("malloc"); return 1; }
        p[0] = (char)i;
        slot[s] = p;
    }
    uint64_t t1 = now_ns();

    unsigned sum = 0;
    for (uint64_t i = 0; i < slots; i++) { sum += (unsigned char)slot[i][0]; free(slot[i]); }
    free(slot);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("workload=loop_%llu_%llu ops=%llu ns_per_op=%.3f elapsed_s=%.4f peak_rss_kb=%ld slots=%llu check=%u\n",
           (unsigned long long)min, (unsigned long long)max, (unsigned long long)iters,
           iters ? (double)(t1 - t0) / (double)iters : 0.0, (double)(t1 - t0) / 1e9,
           ru.ru_maxrss, (unsigned long long)slots, sum & 0xff);
    return 0;
}
