/* Random access over a large live set of small objects (a pointer chase through every object in a random order): ns per access, where TLB misses dominate, plus peak memory = peak RSS + HugetlbPages. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench_util.h"

/* Each object starts with the next one to visit and its own index (the
 * index makes the check value independent of where objects were placed). */
struct obj {
    struct obj *next;
    uint64_t index;
};

/* A bijection on [0, 2^bits): odd multiplies and xor-shifts are invertible
 * modulo 2^bits, so mix(0..n-1) visits every index once, in a random-looking
 * order, with no permutation array (whose own misses would blur the result). */
static uint64_t mix(uint64_t x, unsigned bits) {
    uint64_t mask = (bits == 64 ? ~0ull : (1ull << bits) - 1);
    for (int r = 0; r < 3; r++) {
        x = (x * 0x9E3779B97F4A7C15ull) & mask;
        x ^= x >> (bits / 2 + 1);
        x = (x * 0xD6E8FEB86659FD93ull) & mask;
        x ^= x >> (bits / 3 + 1);
    }
    return x;
}

static uint64_t cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* HugetlbPages now, in kB (RSS does not count MAP_HUGETLB pages). */
static long hugetlb_kb(void) {
    char line[256];
    long v = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "HugetlbPages:", 13)) v = strtol(line + 13, NULL, 10);
    fclose(f);
    return v;
}

int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == '-') {
        fprintf(stderr, "usage: %s [live_MiB=1024] [object_size=64] [accesses=10000000]\n", argv[0]);
        return 2;
    }
    uint64_t live_mib = argc > 1 ? strtoull(argv[1], NULL, 0) : 1024;
    uint64_t size = argc > 2 ? strtoull(argv[2], NULL, 0) : 64;
    uint64_t accesses = argc > 3 ? strtoull(argv[3], NULL, 0) : 10000000;
    if (live_mib < 1 || size < sizeof(struct obj) || size > 4096) {
        fprintf(stderr, "bench_randaccess: bad parameters\n");
        return 2;
    }
    /* The object count is rounded down to a power of two (mix is a bijection on bits). */
    unsigned bits = 63 - (unsigned)__builtin_clzll((live_mib << 20) / size);
    uint64_t n = 1ull << bits;
    struct obj **all = malloc(n * sizeof *all);
    if (!all) { fprintf(stderr, "bench_randaccess: malloc failed\n"); return 1; }
    for (uint64_t i = 0; i < n; i++) {
        struct obj *o = malloc(size);
        if (!o) { fprintf(stderr, "bench_randaccess: malloc failed\n"); return 1; }
        o->index = i;
        all[i] = o;
    }
    /* One cycle through every object: mix(k) -> mix(k+1). */
    for (uint64_t k = 0; k < n; k++)
        all[mix(k, bits)]->next = all[mix((k + 1) & (n - 1), bits)];
    struct obj *p = all[mix(0, bits)];
    long live_kb = (long)(n * size / 1024), huge_kb = hugetlb_kb();
    free(all); /* the chase needs no index: only the objects are touched */

    /* Warm-up pass over a slice, then the timed chase. Timed in this
     * thread's CPU time: a single-threaded loop with no syscalls, so on a
     * shared machine the time it spent descheduled is left out (the wall
     * time is printed too). */
    for (uint64_t i = 0; i < accesses / 10; i++) p = p->next;
    uint64_t w0 = now_ns(), t0 = cpu_ns();
    for (uint64_t i = 0; i < accesses; i++) p = p->next;
    uint64_t t1 = cpu_ns(), w1 = now_ns();

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("workload=randaccess_%llu_%llu ops=%llu ns_per_op=%.3f wall_ns_per_op=%.3f elapsed_s=%.4f "
           "peak_rss_kb=%ld hugetlb_kb=%ld peak_mem_kb=%ld live_kb=%ld final_rss_kb=%ld check=%llu\n",
           (unsigned long long)live_mib, (unsigned long long)size, (unsigned long long)accesses,
           (double)(t1 - t0) / (double)accesses, (double)(w1 - w0) / (double)accesses, (double)(w1 - w0) / 1e9,
           ru.ru_maxrss, huge_kb,
           ru.ru_maxrss + huge_kb, live_kb, rss_now_kb(), (unsigned long long)p->index);
    return 0;
}
