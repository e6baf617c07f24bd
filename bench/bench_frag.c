/* Fragmentation: rounds of "allocate many, free every other one, then allocate larger", reporting the RSS left behind next to the bytes still live. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>

#include "bench_util.h"

int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == '-') {
        fprintf(stderr, "usage: %s [mib_per_round=8] [rounds=10] [min_size=16] [passes=1]\n"
                "  round r allocates mib_per_round MiB of blocks sized [min<<r, 2*min<<r), frees every other\n"
                "  one and keeps the rest; the next round's blocks are twice as large, so they don't fit\n"
                "  in the holes. 'passes' repeats the whole pattern (freeing everything in between).\n", argv[0]);
        return 2;
    }
    uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 0) : 8;
    int rounds = argc > 2 ? atoi(argv[2]) : 10;
    uint64_t min = argc > 3 ? strtoull(argv[3], NULL, 0) : 16;
    int passes = argc > 4 ? atoi(argv[4]) : 1;
    if (mib < 1 || mib > 4096 || rounds < 1 || rounds > 24 || min < 1 || min > (1u << 20) || passes < 1) {
        fprintf(stderr, "bench_frag: bad parameters\n");
        return 2;
    }
    /* Count per round: about mib MiB of blocks of average size 1.5*(min<<r). The division is
     * here, outside the loops. */
    uint64_t count[24], total = 0;
    for (int r = 0; r < rounds; r++) {
        count[r] = (mib << 20) / ((min << r) + ((min << r) >> 1));
        if (count[r] < 2) count[r] = 2;
        total += count[r];
    }
    char **blk = malloc(total * sizeof *blk);
    if (!blk) { perror("malloc"); return 1; }

    uint64_t seed = 0x9E3779B97F4A7C15ull, ops = 0, live_bytes = 0, t_ns = 0;
    unsigned check = 0;
    long final_rss = 0;
    for (int pass = 0; pass < passes; pass++) {
        uint64_t t0 = now_ns(), base = 0;
        live_bytes = 0;
        for (int r = 0; r < rounds; r++) {
            uint64_t s = min << r;
            char **b = blk + base;
            for (uint64_t i = 0; i < count[r]; i++) {
                uint64_t sz = s + (((rng_next(&seed) >> 32) * s) >> 32);   /* [s, 2s) */
                b[i] = malloc(sz);
                if (__builtin_expect(!b[i], 0)) { perror("malloc"); return 1; }
                /* Touch both ends: a block's pages count in RSS only once written. */
                b[i][0] = (char)i;
                b[i][sz - 1] = (char)r;
                if (i & 1) live_bytes += sz;
            }
            /* Free every other block: the holes are as small as this round's blocks, and the
             * survivors pin the pages, so an allocator can only reuse the holes for this size. */
            for (uint64_t i = 0; i < count[r]; i += 2) { free(b[i]); b[i] = NULL; }
            ops += count[r] + (count[r] + 1) / 2;
            base += count[r];
        }
        t_ns += now_ns() - t0;
        /* RSS with the survivors of every round still live: peak minus what was given back. */
        final_rss = rss_now_kb();
        for (uint64_t i = 0; i < total; i++)
            if (blk[i]) { check += (unsigned char)blk[i][0]; free(blk[i]); blk[i] = NULL; }
    }
    free(blk);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    /* ops = mallocs + frees in the timed rounds (the final free-all is not timed). */
    printf("workload=frag_%llu_%d ops=%llu ns_per_op=%.3f elapsed_s=%.4f peak_rss_kb=%ld final_rss_kb=%ld "
           "live_kb=%llu check=%u\n",
           (unsigned long long)min, rounds, (unsigned long long)ops, ops ? (double)t_ns / (double)ops : 0.0,
           (double)t_ns / 1e9, ru.ru_maxrss, final_rss, (unsigned long long)(live_bytes >> 10), check & 0xffff);
    return 0;
}
