/* Bursts: a program builds a structure of N same-size small blocks, uses it and frees it all, then builds the next one, cycling through sizes 16/32/64 B and N = 25..1600. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench_util.h"

static const uint64_t SIZES[3] = {16, 32, 64};
static const uint64_t COUNTS[4] = {25, 100, 400, 1600};

/* With a constant size the compiler writes the block with one or a few
 * stores; a memset call for 16-64 B would cost as much as the malloc and
 * dilute the allocator's share of the time. */
static inline void fill(unsigned char *p, uint64_t size, int v) {
    switch (size) {
    case 16: memset(p, v, 16); break;
    case 32: memset(p, v, 32); break;
    case 64: memset(p, v, 64); break;
    default: memset(p, v, size); break;
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == '-') {
        fprintf(stderr, "usage: %s [allocations=40000000] [size=0] [n=0]\n"
                "  round r allocates n blocks of size bytes, writes them, then frees the first half\n"
                "  oldest first and the second half newest first; size 0 cycles 16/32/64 B and n 0\n"
                "  cycles 25/100/400/1600 (every combination in turn). Stops after the round that\n"
                "  reaches 'allocations'.\n", argv[0]);
        return 2;
    }
    uint64_t total = argc > 1 ? strtoull(argv[1], NULL, 0) : 40000000;
    uint64_t fixed_size = argc > 2 ? strtoull(argv[2], NULL, 0) : 0;
    uint64_t fixed_n = argc > 3 ? strtoull(argv[3], NULL, 0) : 0;
    if (total < 1 || fixed_size > (1u << 20) || fixed_n > (1u << 24)) {
        fprintf(stderr, "bench_burst: bad parameters\n");
        return 2;
    }
    uint64_t max_n = fixed_n ? fixed_n : COUNTS[3];
    /* Allocated before the clock starts, and by the same malloc: it is the
     * program's own bookkeeping, not part of a burst. */
    unsigned char **blk = malloc(max_n * sizeof *blk);
    if (!blk) { perror("malloc"); return 1; }

    uint64_t ops = 0, rounds = 0, sum = 0;
    uint64_t t0 = now_ns();
    for (uint64_t r = 0; ops < total; r++) {
        uint64_t size = fixed_size ? fixed_size : SIZES[r % 3];
        uint64_t n = fixed_n ? fixed_n : COUNTS[(r / 3) % 4];
        for (uint64_t i = 0; i < n; i++) {
            unsigned char *p = malloc(size);
            if (__builtin_expect(!p, 0)) { perror("malloc"); return 1; }
            fill(p, size, (int)(r * 7 + i));
            blk[i] = p;
        }
        /* The last byte is read only now, after the whole burst is written:
         * a block handed out twice, or overlapping another, has lost it. */
        uint64_t half = n / 2;
        for (uint64_t i = 0; i < half; i++) {
            sum += blk[i][size - 1];
            free(blk[i]);
        }
        for (uint64_t i = n; i-- > half;) {
            sum += blk[i][size - 1];
            free(blk[i]);
        }
        ops += n;
        rounds++;
    }
    uint64_t t1 = now_ns();
    free(blk);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    /* ops = malloc+free pairs; the name says which combination ran ("mix" = cycled). */
    char sz[24] = "mix", nn[24] = "mix";
    if (fixed_size) snprintf(sz, sizeof sz, "%llu", (unsigned long long)fixed_size);
    if (fixed_n) snprintf(nn, sizeof nn, "%llu", (unsigned long long)fixed_n);
    printf("workload=bursts_%s_%s ops=%llu ns_per_op=%.3f elapsed_s=%.4f peak_rss_kb=%ld rounds=%llu check=%llu\n",
           sz, nn, (unsigned long long)ops,
           ops ? (double)(t1 - t0) / (double)ops : 0.0, (double)(t1 - t0) / 1e9, ru.ru_maxrss,
           (unsigned long long)rounds, (unsigned long long)(sum & 0xffff));
    return 0;
}
