/* bench_util.h — the clock, RNG and RSS reading every workload shares. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t now_ns(void) {
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

/* Resident set now, from /proc/self/statm (ru_maxrss only gives the peak). */
static inline long rss_now_kb(void) {
    long pages_total = 0, pages_res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    if (fscanf(f, "%ld %ld", &pages_total, &pages_res) != 2) pages_res = 0;
    fclose(f);
    return pages_res * (sysconf(_SC_PAGESIZE) / 1024);
}

#endif
