/* Work queue: P producer threads malloc and fill blocks of 16-4000 B, C consumer threads take them from one mutex-protected bounded queue, check every byte and free them. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench_util.h"

#define QCAP 1024u                      /* power of two */
#define MAXT 16
#define MINSZ 16
#define MAXSZ 4000

/* What the queue carries besides the pointer: the consumer knows which
 * item it should find, so a block that was handed out twice or overwritten
 * is caught by its contents, not trusted. */
struct item {
    unsigned char *p;
    uint64_t seq;
};

/* The head of each block: its size, so the consumer can check the whole
 * block without being told, and the item's number. */
struct hdr {
    uint32_t size;
    uint32_t seq;
};

/* The classic condition-variable queue: a ring with a mutex, producers wait
 * while it is full, consumers while it is empty. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    uint64_t head, tail;                /* popped, pushed so far */
    uint64_t untaken;                   /* items no consumer has taken yet */
    struct item slot[QCAP];
} q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, {{0, 0}}};

static int np, nc;
static uint64_t total;
static pthread_barrier_t start_barrier;
static uint64_t sizes_sum[MAXT], taken[MAXT];

/* The body's 64-bit word for item seq: a different value for every item. */
static inline uint64_t pattern(uint64_t seq) { return (seq + 1) * 0x9E3779B97F4A7C15ull; }

static void fill(unsigned char *p, uint32_t size, uint64_t seq) {
    struct hdr h = {size, (uint32_t)seq};
    uint64_t w = pattern(seq);
    memcpy(p, &h, sizeof h);
    uint32_t j = sizeof h;
    for (; j + 8 <= size; j += 8) memcpy(p + j, &w, 8);
    for (; j < size; j++) p[j] = (unsigned char)(w >> (8 * (j & 7)));
}

/* Returns the block's size, or 0 if anything in it is not what fill wrote. */
static uint32_t intact(const unsigned char *p, uint64_t seq) {
    struct hdr h;
    memcpy(&h, p, sizeof h);
    if (h.seq != (uint32_t)seq || h.size < MINSZ || h.size > MAXSZ) return 0;
    uint64_t w = pattern(seq), diff = 0, x;
    uint32_t j = sizeof h;
    /* OR of the differences, no early exit: the loop stays branch-free. */
    for (; j + 8 <= h.size; j += 8) { memcpy(&x, p + j, 8); diff |= x ^ w; }
    for (; j < h.size; j++) diff |= p[j] ^ (unsigned char)(w >> (8 * (j & 7)));
    return diff ? 0 : h.size;
}

/* Items producer i makes: an equal share of the total. */
static uint64_t share(uint64_t n, int parts, int i) { return n / (uint64_t)parts + ((uint64_t)i < n % (uint64_t)parts); }

static void *producer(void *arg) {
    int id = (int)(intptr_t)arg;
    uint64_t seed = 0x9E3779B97F4A7C15ull * (uint64_t)(id + 1);
    uint64_t n = share(total, np, id);
    pthread_barrier_wait(&start_barrier);
    for (uint64_t i = 0; i < n; i++) {
        /* Numbered across producers, so every item in the run is distinct. */
        uint64_t seq = i * (uint64_t)np + (uint64_t)id;
        uint32_t size = MINSZ + (uint32_t)pick(rng_next(&seed) >> 32, MAXSZ - MINSZ + 1);
        unsigned char *p = malloc(size);
        if (__builtin_expect(!p, 0)) { perror("malloc"); exit(1); }
        fill(p, size, seq);
        pthread_mutex_lock(&q.lock);
        while (q.tail - q.head == QCAP) pthread_cond_wait(&q.not_full, &q.lock);
        q.slot[q.tail & (QCAP - 1)] = (struct item){p, seq};
        q.tail++;
        pthread_cond_signal(&q.not_empty);
        pthread_mutex_unlock(&q.lock);
    }
    return NULL;
}

static void *consumer(void *arg) {
    int id = (int)(intptr_t)arg;
    uint64_t sum = 0, count = 0;
    pthread_barrier_wait(&start_barrier);
    for (;;) {
        pthread_mutex_lock(&q.lock);
        while (q.head == q.tail && q.untaken) pthread_cond_wait(&q.not_empty, &q.lock);
        if (!q.untaken) { pthread_mutex_unlock(&q.lock); break; }
        struct item it = q.slot[q.head & (QCAP - 1)];
        q.head++;
        /* The last item taken: the other consumers are waiting for one that
         * will never come, wake them all so they see untaken == 0. */
        if (--q.untaken == 0) pthread_cond_broadcast(&q.not_empty);
        /* Every pop, not only from full: with several producers waiting, a
         * signal on the full-to-not-full edge alone could leave one asleep. */
        pthread_cond_signal(&q.not_full);
        pthread_mutex_unlock(&q.lock);
        uint32_t size = intact(it.p, it.seq);
        if (__builtin_expect(!size, 0)) {
            fprintf(stderr, "bench_queue: item %llu corrupted (block %p)\n", (unsigned long long)it.seq, (void *)it.p);
            abort();
        }
        sum += size;
        count++;
        free(it.p);
    }
    sizes_sum[id] = sum;
    taken[id] = count;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == '-') {
        fprintf(stderr, "usage: %s [items=2000000] [producers=1] [consumers=1]\n", argv[0]);
        return 2;
    }
    total = argc > 1 ? strtoull(argv[1], NULL, 0) : 2000000;
    np = argc > 2 ? atoi(argv[2]) : 1;
    nc = argc > 3 ? atoi(argv[3]) : 1;
    /* seq must fit the header's 32 bits. */
    if (total < 1 || total > 0xffffffffull || np < 1 || nc < 1 || np > MAXT || nc > MAXT) {
        fprintf(stderr, "bench_queue: bad parameters\n");
        return 2;
    }
    q.untaken = total;

    pthread_t tid[2 * MAXT];
    pthread_barrier_init(&start_barrier, NULL, (unsigned)(np + nc + 1));
    for (int c = 0; c < nc; c++)
        if (pthread_create(&tid[c], NULL, consumer, (void *)(intptr_t)c)) { perror("pthread_create"); return 1; }
    for (int p = 0; p < np; p++)
        if (pthread_create(&tid[nc + p], NULL, producer, (void *)(intptr_t)p)) { perror("pthread_create"); return 1; }
    pthread_barrier_wait(&start_barrier);
    uint64_t t0 = now_ns();
    for (int i = 0; i < np + nc; i++) pthread_join(tid[i], NULL);
    uint64_t t1 = now_ns();
    /* Which consumer took which item depends on the schedule; the totals do not. */
    uint64_t sum = 0, count = 0;
    for (int c = 0; c < nc; c++) { sum += sizes_sum[c]; count += taken[c]; }
    if (count != total) {
        fprintf(stderr, "bench_queue: %llu items checked, %llu made\n", (unsigned long long)count,
                (unsigned long long)total);
        return 1;
    }

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("workload=queue_%dto%d ops=%llu ns_per_op=%.3f elapsed_s=%.4f peak_rss_kb=%ld check=%llu\n",
           np, nc, (unsigned long long)total, (double)(t1 - t0) / (double)total, (double)(t1 - t0) / 1e9,
           ru.ru_maxrss, (unsigned long long)(sum & 0xffff));
    return 0;
}
