/* Checks that 10,000 short-lived allocating threads do not leak: RSS after 10,000 threads stays within 8 MiB of RSS after 1,000. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_alloc_names.h"
#include "test_util.h"

#define BATCH 4
#define PER_THREAD 50

struct job {
    unsigned seed;
    void *handed[PER_THREAD]; /* blocks the thread leaves for main to free */
    size_t nhanded;
    int bad;
};

static size_t size_for(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    unsigned k = (*s >> 8) % 100;
    unsigned r = *s >> 4;
    if (k < 70) return 1 + r % 1024;
    if (k < 95) return 1025 + r % (31 * 1024);
    return 32 * 1024 + r % (256 * 1024);
}

/* Each thread fills its thread cache with several classes, frees some
 * locally and leaves the rest for main: both the thread-exit flush and the
 * remote-free path run on every thread. */
static void *body(void *arg)
{
    struct job *j = arg;
    void *mine[PER_THREAD];
    size_t sz[PER_THREAD];
    for (int i = 0; i < PER_THREAD; i++) {
        sz[i] = size_for(&j->seed);
        mine[i] = T_MALLOC(sz[i]);
        if (!mine[i]) {
            j->bad = 1;
            return NULL;
        }
        memset(mine[i], i + 1, sz[i]);
    }
    j->nhanded = 0;
    for (int i = 0; i < PER_THREAD; i++) {
        if (((unsigned char *)mine[i])[sz[i] - 1] != (unsigned char)(i + 1)) j->bad = 1;
        if (i % 3 == 0)
            j->handed[j->nhanded++] = mine[i];
        else
            T_FREE(mine[i]);
    }
    return NULL;
}

/* Free memory kept for reuse (empty slabs, central batches: 2-8 MiB that
 * vary with timing) goes back first, so what is compared is what the
 * threads left behind; a dead thread's cache that leaked is not free and
 * stays counted. */
static size_t rss_after_trim(void)
{
    hak_malloc_trim(0);
    return hk_test_rss();
}

int main(int argc, char **argv)
{
    /* A larger count (argv[1]) helps tell a slow leak from a plateau. */
    int total = argc > 1 ? atoi(argv[1]) : 10000;
    static struct job jobs[BATCH];
    size_t rss_1k = 0;
    for (int done = 0; done < total; done += BATCH) {
        pthread_t th[BATCH];
        for (int b = 0; b < BATCH; b++) {
            jobs[b].seed = (unsigned)(done + b) * 2654435761u;
            jobs[b].bad = 0;
            if (pthread_create(&th[b], NULL, body, &jobs[b]) != 0) {
                fprintf(stderr, "pthread_create failed at thread %d\n", done + b);
                return 2;
            }
        }
        for (int b = 0; b < BATCH; b++) {
            pthread_join(th[b], NULL);
            if (jobs[b].bad) {
                fprintf(stderr, "thread %d saw a bad allocation\n", done + b);
                return 1;
            }
            for (size_t i = 0; i < jobs[b].nhanded; i++) T_FREE(jobs[b].handed[i]);
        }
        if (done + BATCH == 1000)
            rss_1k = rss_after_trim();
    }
    size_t rss_10k = rss_after_trim();
    long growth = (long)rss_10k - (long)rss_1k;
    printf("thread churn: RSS after 1000 threads %zu KiB, after %d threads %zu KiB, growth %ld KiB\n", rss_1k / 1024,
           total, rss_10k / 1024, growth / 1024);
    if (growth >= 8L << 20) {
        fprintf(stderr, "RSS grew by %ld KiB (limit 8192 KiB): dead threads' caches leak\n", growth / 1024);
        return 1;
    }
    return 0;
}
