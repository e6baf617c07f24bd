/* Checks that joining many threads cannot hang: glibc frees a joined thread's TLS with its thread-stack lock held, so that free() must not start hakmem's purge thread (pthread_create takes the same lock). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_alloc_names.h"
#include "test_util.h"

#define NTHREADS 200 /* default 8 MiB stacks: glibc's 40 MiB stack cache overflows after 5 */
#define PER_THREAD 64

static pthread_barrier_t bar;

/* Blocks allocated and freed by the same thread (their exits may start the
 * purge thread, from the exit path). */
static void *body(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg * 977 + 1;
    void *v[PER_THREAD];
    for (int i = 0; i < PER_THREAD; i++) {
        size_t n = 8 + hk_test_rand(&rng) % 1017;
        v[i] = T_MALLOC(n);
        if (!v[i]) abort();
        memset(v[i], 1, n);
    }
    pthread_barrier_wait(&bar);
    for (int i = 0; i < PER_THREAD; i++)
        T_FREE(v[i]);
    return NULL;
}

/* Threads that never call malloc: their exit has nothing to give back, so
 * nothing starts the purge thread before the joins, and the first free()
 * that leaves memory to give back is glibc's, of a joined thread's TLS,
 * under its stack-cache lock. */
static void *idle_body(void *arg)
{
    pthread_barrier_wait(&bar);
    return arg;
}

/* Starts NTHREADS threads running fn, lets them past the barrier, joins them. */
static int run_threads(void *(*fn)(void *))
{
    static pthread_t t[NTHREADS];
    pthread_barrier_init(&bar, NULL, NTHREADS + 1);
    for (int i = 0; i < NTHREADS; i++)
        if (pthread_create(&t[i], NULL, fn, (void *)(uintptr_t)(i + 1)) != 0) {
            perror("pthread_create");
            return 1;
        }
    pthread_barrier_wait(&bar);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&bar);
    return 0;
}

int main(void)
{
    alarm(20); /* a hang kills the test with SIGALRM instead of waiting for meson's timeout */
    /* Idle threads first (the free() path), then threads that allocate. */
    if (run_threads(idle_body) || run_threads(body))
        return 1;
    /* The joins freed the threads' TLS blocks; allocation still works. */
    void *p = T_MALLOC(100);
    if (!p) return 1;
    T_FREE(p);
    printf("join-threads: %d idle threads joined, then %d that each held %d blocks\n", NTHREADS, NTHREADS, PER_THREAD);
    return 0;
}
