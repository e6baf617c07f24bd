/* The simplest pattern a program has: free a block and allocate one of the same size at once, over 1 live block (a LIFO pair) or several taken round-robin. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "bench_util.h"

int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == '-') {
        fprintf(stderr, "usage: %s [size=32] [live=1] [iterations=50000000]\n", argv[0]);
        return 2;
    }
    uint64_t size = argc > 1 ? strtoull(argv[1], NULL, 0) : 32;
    uint64_t live = argc > 2 ? strtoull(argv[2], NULL, 0) : 1;
    uint64_t iters = argc > 3 ? strtoull(argv[3], NULL, 0) : 50000000;
    if (size < 1 || live < 1 || live > (1u << 20)) {
        fprintf(stderr, "bench_pair: bad parameters\n");
        return 2;
    }
    char **a = calloc(live, sizeof *a);
    if (!a) return 1;
    for (uint64_t j = 0; j < live; j++)
        if (!(a[j] = malloc(size))) return 1;
    /* The loop of the issue that asked for this row, as programs write it:
     * no division, no random numbers, the first byte written (the block is
     * used, and the write is a store the next free may follow). */
    uint64_t j = 0;
    uint64_t t0 = now_ns();
    if (live == 1) {
        /* One block: the pointer stays in a register, so the loop adds no
         * store and reload of its own to the chain from free to malloc. */
        char *p = a[0];
        for (uint64_t i = 0; i < iters; i++) {
            free(p);
            p = malloc(size);
            if (__builtin_expect(!p, 0)) { fprintf(stderr, "bench_pair: malloc failed\n"); return 1; }
            *(volatile char *)p = (char)i;
        }
        a[0] = p;
    } else {
        for (uint64_t i = 0; i < iters; i++) {
            free(a[j]);
            char *p = malloc(size);
            if (__builtin_expect(!p, 0)) { fprintf(stderr, "bench_pair: malloc failed\n"); return 1; }
            *(volatile char *)p = (char)i;
            a[j] = p;
            if (++j == live) j = 0;
        }
    }
    uint64_t t1 = now_ns();
    unsigned sum = 0;
    for (j = 0; j < live; j++) { sum += (unsigned char)a[j][0]; free(a[j]); }
    free(a);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("workload=pair_%llu_%llu ops=%llu ns_per_op=%.3f elapsed_s=%.4f peak_rss_kb=%ld check=%u\n",
           (unsigned long long)size, (unsigned long long)live, (unsigned long long)iters,
           iters ? (double)(t1 - t0) / (double)iters : 0.0, (double)(t1 - t0) / 1e9, ru.ru_maxrss, sum & 0xff);
    return 0;
}
