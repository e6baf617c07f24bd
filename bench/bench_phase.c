/* Phase change: a small-object phase, then a large-mid phase, then an idle phase, with the RSS at the end of each, to see whether memory freed by one phase is reused by the next and given back when the program goes idle. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>

#include "bench_util.h"

static uint64_t seed = 0x9E3779B97F4A7C15ull;
static unsigned check;

/* One phase: fill `slots` blocks of [min, max] bytes, then `iters` random replacements (free a
 * random slot, malloc a random size into it, write its first byte). Returns the RSS with the
 * phase's live set still allocated; the caller frees the set afterwards. Slots is a power of two
 * so the slot index is a mask. */
static long phase(char **slot, uint64_t slots, uint64_t min, uint64_t max, uint64_t iters) {
    uint64_t range = max - min + 1, mask = slots - 1;
    for (uint64_t i = 0; i < slots; i++) {
        uint64_t sz = min + (((rng_next(&seed) >> 32) * range) >> 32);
        slot[i] = malloc(sz);
        if (!slot[i]) { perror("malloc"); exit(1); }
        slot[i][0] = (char)i;
    }
    for (uint64_t i = 0; i < iters; i++) {
        uint64_t r = rng_next(&seed);
        uint64_t s = (r >> 8) & mask, sz = min + (((r >> 32) * range) >> 32);
        free(slot[s]);
        char *p = malloc(sz);
        if (__builtin_expect(!p, 0)) { perror("malloc"); exit(1); }
        p[0] = (char)i;
        slot[s] = p;
    }
    long rss = rss_now_kb();
    for (uint64_t i = 0; i < slots; i++) { check += (unsigned char)slot[i][0]; free(slot[i]); }
    return rss;
}

static uint64_t pow2_floor(uint64_t x) {
    while (x & (x - 1)) x &= x - 1;
    return x;
}

int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == '-') {
        fprintf(stderr, "usage: %s [small_iters=4000000] [mid_iters=100000] [idle_ms=1000]"
                " [small_slots=262144] [mid_slots=128]\n"
                "  small phase: 16..256 B; mid phase: 16 KiB..512 KiB; slots are rounded down to a power of two\n",
                argv[0]);
        return 2;
    }
    uint64_t small_iters = argc > 1 ? strtoull(argv[1], NULL, 0) : 4000000;
    uint64_t mid_iters = argc > 2 ? strtoull(argv[2], NULL, 0) : 100000;
    long idle_ms = argc > 3 ? strtol(argv[3], NULL, 0) : 1000;
    uint64_t small_slots = pow2_floor(argc > 4 ? strtoull(argv[4], NULL, 0) : 262144);
    uint64_t mid_slots = pow2_floor(argc > 5 ? strtoull(argv[5], NULL, 0) : 128);
    if (idle_ms < 0 || small_slots < 1 || mid_slots < 1 || small_slots > (1u << 26) || mid_slots > (1u << 20)) {
        fprintf(stderr, "bench_phase: bad parameters\n");
        return 2;
    }
    char **slot = malloc((small_slots > mid_slots ? small_slots : mid_slots) * sizeof *slot);
    if (!slot) { perror("malloc"); return 1; }

    uint64_t t0 = now_ns();
    long rss_small = phase(slot, small_slots, 16, 256, small_iters);
    uint64_t t1 = now_ns();
    long rss_mid = phase(slot, mid_slots, 16 << 10, 512 << 10, mid_iters);
    uint64_t t2 = now_ns();
    free(slot);
    /* Everything is freed now: what is still resident is the allocator's caches (and the
     * program's own few hundred KB). */
    long rss_free = rss_now_kb();
    /* Idle: a server between bursts. Sleeping in small steps keeps the process' own activity
     * negligible while giving a background/decay purger the time it needs. */
    struct timespec step = {0, 10 * 1000000L};
    for (long slept = 0; slept < idle_ms; slept += 10) nanosleep(&step, NULL);
    long rss_idle = rss_now_kb();

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    /* ops = fills + replacements of both phases (each a malloc, most with a free); idle is not timed. */
    uint64_t ops = small_slots + small_iters + mid_slots + mid_iters;
    printf("workload=phase ops=%llu ns_per_op=%.3f elapsed_s=%.4f peak_rss_kb=%ld small_ns_per_op=%.3f "
           "mid_ns_per_op=%.3f rss_small_kb=%ld rss_mid_kb=%ld rss_free_kb=%ld rss_idle_kb=%ld check=%u\n",
           (unsigned long long)ops, ops ? (double)(t2 - t0) / (double)ops : 0.0, (double)(t2 - t0) / 1e9,
           ru.ru_maxrss, small_iters ? (double)(t1 - t0) / (double)small_iters : 0.0,
           mid_iters ? (double)(t2 - t1) / (double)mid_iters : 0.0, rss_small, rss_mid, rss_free, rss_idle,
           check & 0xffff);
    return 0;
}
