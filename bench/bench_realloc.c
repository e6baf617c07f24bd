/* Realloc growth: vectors growing x1.5 and strings growing by small appends, up to several MB, many rounds. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#include "bench_util.h"

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) { perror("realloc"); exit(1); }
    return q;
}

int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == '-') {
        fprintf(stderr, "usage: %s [rounds=20] [vec_max_bytes=8388608] [str_max_bytes=2097152]\n", argv[0]);
        return 2;
    }
    long rounds = argc > 1 ? strtol(argv[1], NULL, 0) : 20;
    size_t vec_max = argc > 2 ? strtoull(argv[2], NULL, 0) : 8u << 20;
    size_t str_max = argc > 3 ? strtoull(argv[3], NULL, 0) : 2u << 20;
    if (rounds < 1 || vec_max < 64 || str_max < 64) {
        fprintf(stderr, "bench_realloc: bad parameters\n");
        return 2;
    }
    uint64_t seed = 0x9E3779B97F4A7C15ull, ops = 0;
    unsigned check = 0;
    /* A small block re-allocated between growth steps, so in-place growth isn't free. */
    char *keep = NULL;

    uint64_t t0 = now_ns();
    for (long r = 0; r < rounds; r++) {
        /* 1. Four vectors of 8-byte elements, grown x1.5 in turn (interleaved, like a parser
         *    filling several arrays); the new tail element is written each time. */
        size_t cap[4] = {2, 3, 5, 7};
        uint64_t *vec[4] = {0};
        for (int grown = 1; grown;) {
            grown = 0;
            for (int v = 0; v < 4; v++) {
                if (cap[v] * 8 >= vec_max) continue;
                cap[v] += cap[v] >> 1;
                vec[v] = xrealloc(vec[v], cap[v] * 8);
                vec[v][cap[v] - 1] = cap[v];
                ops++, grown = 1;
            }
            free(keep);
            keep = malloc(48);
        }
        for (int v = 0; v < 4; v++) { check += (unsigned)vec[v][cap[v] - 1]; free(vec[v]); }

        /* 2. Two strings grown by small appends (1..64 bytes, written), like a log builder:
         *    realloc on every append, exactly to the needed length + NUL. */
        char *s[2] = {0};
        size_t len[2] = {0, 0};
        while (len[0] < str_max || len[1] < str_max) {
            for (int k = 0; k < 2; k++) {
                if (len[k] >= str_max) continue;
                uint64_t x = rng_next(&seed);
                size_t add = 1 + (x & 63);
                s[k] = xrealloc(s[k], len[k] + add + 1);
                memset(s[k] + len[k], 'a' + (int)(x >> 58), add);
                len[k] += add;
                s[k][len[k]] = 0;
                ops++;
            }
        }
        for (int k = 0; k < 2; k++) { check += (unsigned char)s[k][len[k] - 1]; free(s[k]); }
    }
    uint64_t t1 = now_ns();
    free(keep);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("workload=realloc ops=%llu ns_per_op=%.3f elapsed_s=%.4f peak_rss_kb=%ld rounds=%ld check=%u\n",
           (unsigned long long)ops, ops ? (double)(t1 - t0) / (double)ops : 0.0,
           (double)(t1 - t0) / 1e9, ru.ru_maxrss, rounds, check & 0xff);
    return 0;
}
