/* Four allocation sites of known sizes for the heap-profile accuracy test (tests/prof_pprof.py reads the profile with google-pprof): 64 MiB live in 1 KiB blocks from 4 threads, 16 MiB live in 64 B blocks, 1 GiB allocated and freed in 64 KiB blocks, and 16 leaked blocks of 4 MiB. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { THREADS = 4, KEEP_1K = (64 << 20) / 1024 / THREADS, KEEP_64 = (16 << 20) / 64, CHURN = (1 << 30) / 65536, LEAKS = 16 };
static void *keep1k[THREADS][KEEP_1K], *keep64[KEEP_64];
void *volatile sink;

__attribute__((noinline)) void keep_1k_blocks(int t)
{
    for (int i = 0; i < KEEP_1K; i++)
        if (!(keep1k[t][i] = malloc(1024)))
            exit(3);
}
__attribute__((noinline)) void keep_64b_blocks(void)
{
    for (int i = 0; i < KEEP_64; i++)
        if (!(keep64[i] = malloc(64)))
            exit(3);
}
__attribute__((noinline)) void churn_64k_blocks(void)
{
    for (int i = 0; i < CHURN; i++) {
        char *p = malloc(65536);
        if (!p)
            exit(3);
        p[0] = 1;
        sink = p;
        free(p);
    }
}
__attribute__((noinline)) void leak_4m_blocks(void)
{
    for (int i = 0; i < LEAKS; i++) {
        char *p = malloc(4 << 20);
        if (!p)
            exit(3);
        p[0] = 1;
        sink = p;
    }
}

static void *worker(void *arg)
{
    keep_1k_blocks((int)(long)arg);
    return NULL;
}

int main(void)
{
    pthread_t th[THREADS];
    for (long t = 0; t < THREADS; t++)
        if (pthread_create(&th[t], NULL, worker, (void *)t) != 0)
            return 2;
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    keep_64b_blocks();
    churn_64k_blocks();
    leak_4m_blocks();
    /* The output must not change under the profiler. */
    printf("sites done: %d threads x %d blocks of 1 KiB, %d of 64 B, %d of 64 KiB freed, %d of 4 MiB leaked\n",
           THREADS, KEEP_1K, KEEP_64, CHURN, LEAKS);
    return 0;
}
