/* False sharing: two threads allocate small objects in turn, then each hammers its own objects; an allocator that puts both threads' objects in one cache line makes the writes slow. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#include "bench_util.h"

#define MAX_OBJS 1024

static size_t obj_size;
static unsigned nobjs;          /* per thread, a power of two so the index is a mask */
static uint64_t writes;         /* per thread */
static atomic_uint turn;        /* whose turn it is to malloc during the interleaved phase */
static pthread_barrier_t bar;
static uintptr_t addr[2][MAX_OBJS];

struct arg { int id; uint64_t sum; };

static void *worker(void *p) {
    struct arg *a = p;
    volatile uint64_t *obj[MAX_OBJS];
    /* Allocate in strict alternation with the other thread (A, B, A, B, ...), as two request
     * handlers would, so an allocator that serves both threads from one place hands out
     * neighbouring blocks to different threads. */
    for (unsigned i = 0; i < nobjs; i++) {
        while (atomic_load_explicit(&turn, memory_order_acquire) != 2 * i + (unsigned)a->id)
            sched_yield();      /* 2 cores, maybe shared: spinning without yielding can stall */
        void *m = malloc(obj_size);
        if (!m) { perror("malloc"); exit(1); }   /* the other thread would wait for its turn forever */
        memset(m, 0, obj_size);
        obj[i] = m;
        addr[a->id][i] = (uintptr_t)m;
        atomic_store_explicit(&turn, 2 * i + (unsigned)a->id + 1, memory_order_release);
    }
    pthread_barrier_wait(&bar);
    /* The measured part: read-modify-write of the first word of each own object, round robin.
     * volatile keeps every store; with no sharing the lines stay in this core's L1. */
    unsigned mask = nobjs - 1;
    for (uint64_t w = 0; w < writes; w++) *obj[w & mask] += 1;
    pthread_barrier_wait(&bar);
    for (unsigned i = 0; i < nobjs; i++) { a->sum += *obj[i]; free((void *)obj[i]); }
    return NULL;
}

static int cmp_u(const void *x, const void *y) {
    uintptr_t a = *(const uintptr_t *)x, b = *(const uintptr_t *)y;
    return a < b ? -1 : a > b;
}

/* How many of thread 0's objects share a 64-byte line with an object of thread 1 (diagnostic:
 * explains a slow run; it depends on the allocator, so it is not a checksum). */
static unsigned shared_lines(void) {
    static uintptr_t lines1[MAX_OBJS];
    unsigned n = 0;
    for (unsigned i = 0; i < nobjs; i++) lines1[i] = addr[1][i] >> 6;
    qsort(lines1, nobjs, sizeof lines1[0], cmp_u);
    for (unsigned i = 0; i < nobjs; i++) {
        /* An object may span two lines: check the first and the last byte's line. */
        uintptr_t l0 = addr[0][i] >> 6, l1 = (addr[0][i] + obj_size - 1) >> 6;
        if (bsearch(&l0, lines1, nobjs, sizeof l0, cmp_u) || bsearch(&l1, lines1, nobjs, sizeof l1, cmp_u)) n++;
    }
    return n;
}

int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == '-') {
        fprintf(stderr, "usage: %s [writes_per_thread=50000000] [size=24] [objects_per_thread=8]\n"
                "  objects_per_thread: a power of two up to %d\n", argv[0], MAX_OBJS);
        return 2;
    }
    writes = argc > 1 ? strtoull(argv[1], NULL, 0) : 50000000;
    obj_size = argc > 2 ? strtoull(argv[2], NULL, 0) : 24;
    nobjs = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 0) : 8;
    if (writes < 1 || obj_size < 8 || obj_size > 4096 || nobjs < 1 || nobjs > MAX_OBJS || (nobjs & (nobjs - 1))) {
        fprintf(stderr, "bench_falseshare: bad parameters\n");
        return 2;
    }
    pthread_barrier_init(&bar, NULL, 3);
    pthread_t tid[2];
    struct arg args[2] = {{0, 0}, {1, 0}};
    for (int t = 0; t < 2; t++)
        if (pthread_create(&tid[t], NULL, worker, &args[t]) != 0) { perror("pthread_create"); return 1; }
    pthread_barrier_wait(&bar);
    uint64_t t0 = now_ns();
    pthread_barrier_wait(&bar);
    uint64_t t1 = now_ns();
    for (int t = 0; t < 2; t++) pthread_join(tid[t], NULL);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    uint64_t ops = 2 * writes;
    /* check = all increments landed (2 * writes): a torn or overlapping block would break it. */
    printf("workload=falseshare_%zu ops=%llu ns_per_op=%.3f elapsed_s=%.4f peak_rss_kb=%ld shared_lines=%u "
           "objects=%u check=%llu\n",
           obj_size, (unsigned long long)ops, (double)(t1 - t0) / (double)ops, (double)(t1 - t0) / 1e9,
           ru.ru_maxrss, shared_lines(), nobjs, (unsigned long long)(args[0].sum + args[1].sum));
    return 0;
}
