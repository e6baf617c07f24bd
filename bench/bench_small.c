/* Small programs stay small: a program with 100 B or a few MB of live data, whose peak RSS is the allocator's fixed cost plus what it keeps around those bytes. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench_util.h"

#define MINSZ 16
#define MAXSZ 200

/* The blocks are chained through their first bytes, so the program needs
 * no pointer array: whatever it allocates besides them would show in the
 * peak RSS this row is about. */
struct blk {
    struct blk *next;
};

int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == '-') {
        fprintf(stderr, "usage: %s [live_bytes=100]\n"
                "  up to %d bytes: one malloc of that size, written. More: blocks of %d-%d B until\n"
                "  live_bytes are allocated, all written, then every other one freed.\n",
                argv[0], MAXSZ, MINSZ, MAXSZ);
        return 2;
    }
    uint64_t want = argc > 1 ? strtoull(argv[1], NULL, 0) : 100;
    if (want < 1 || want > (1ull << 34)) {
        fprintf(stderr, "bench_small: bad parameters\n");
        return 2;
    }
    uint64_t blocks = 0, live = 0, check = 0;
    struct blk *head = NULL;
    unsigned char *one = NULL;
    uint64_t t0 = now_ns();
    if (want <= MAXSZ) {
        one = malloc(want);
        if (!one) { perror("malloc"); return 1; }
        memset(one, 0x5a, want);
        check = one[want - 1];
        blocks = 1;
        live = want;
    } else {
        uint64_t seed = 0x9E3779B97F4A7C15ull;
        while (live < want) {
            uint64_t size = MINSZ + pick(rng_next(&seed) >> 32, MAXSZ - MINSZ + 1);
            struct blk *b = malloc(size);
            if (!b) { perror("malloc"); return 1; }
            /* Every byte written: the pages count in RSS only once touched. */
            memset(b, (int)(blocks & 0xff), size);
            b->next = head;
            head = b;
            live += size;
            blocks++;
        }
        /* Every other block freed: the holes sit between survivors, so the
         * memory they held stays resident unless the allocator reuses it. */
        for (struct blk *b = head; b && b->next; b = b->next) {
            struct blk *gone = b->next;
            b->next = gone->next;
            free(gone);
        }
        for (struct blk *b = head; b; b = b->next) check += ((unsigned char *)b)[sizeof *b];
    }
    uint64_t t1 = now_ns();

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    /* ops = mallocs; the time (the first one includes a lazy allocator's set-up) is not the point. */
    printf("workload=small_%llu ops=%llu ns_per_op=%.3f elapsed_s=%.6f peak_rss_kb=%ld blocks=%llu live_kb=%llu "
           "check=%llu\n",
           (unsigned long long)want, (unsigned long long)blocks, (double)(t1 - t0) / (double)blocks,
           (double)(t1 - t0) / 1e9, ru.ru_maxrss, (unsigned long long)blocks, (unsigned long long)(live >> 10),
           (unsigned long long)(check & 0xffff));
    /* Freed after the line: the peak is already reached, and a leak report
     * under valgrind would hide a real one. */
    free(one);
    while (head) {
        struct blk *next = head->next;
        free(head);
        head = next;
    }
    return 0;
}
