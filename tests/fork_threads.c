/* Checks that a child forked while other threads are allocating can itself allocate (no deadlock, no corruption). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_alloc_names.h"
#include "test_util.h"

#define NTHREADS 3
#define FORKS 50

static atomic_int stop;

/* Keeps allocator locks (refill, central lists, large cache) busy so a fork
 * is likely to land while one of them is held. */
static void *churn(void *arg)
{
    uint64_t rng = 0x1234567ull + (uint64_t)(intptr_t)arg * 977;
    /* Few live blocks: the child's copy-on-write faults on the parent's heap
     * are the cost of every fork, and they are not what is under test. */
    void *keep[16] = {0};
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        uint64_t r = hk_test_rand(&rng);
        int i = (int)(r % 16);
        T_FREE(keep[i]);
        size_t s;
        switch ((r >> 8) % 64) {
        case 0: case 1: s = 32768 + (size_t)((r >> 16) % (1 << 20)); break;
        case 2: s = (size_t)((r >> 16) % (3 << 20)) + 1; break;
        case 3: case 4: case 5: case 6: case 7: case 8: s = 1025 + (size_t)((r >> 16) % 31000); break;
        default: s = 1 + (size_t)((r >> 16) % 1024); break;
        }
        keep[i] = T_MALLOC(s);
        if (keep[i]) ((char *)keep[i])[s - 1] = 1;
    }
    for (int i = 0; i < 16; i++) T_FREE(keep[i]);
    return NULL;
}

static void *child_thread(void *arg)
{
    (void)arg;
    for (size_t s = 1; s < (1u << 21); s = s * 2 + 7) {
        char *p = T_MALLOC(s);
        if (!p) return (void *)1;
        memset(p, 7, s < 4096 ? s : 4096);
        p[s - 1] = 7;
        T_FREE(p);
    }
    return NULL;
}

/* The child allocates every size range; a lock inherited in the held state
 * shows up as a hang, which alarm() turns into SIGALRM. */
static int child_work(unsigned seed)
{
    alarm(5);
    void *p[300];
    size_t sz[300];
    for (int i = 0; i < 300; i++) {
        seed = seed * 1103515245u + 12345u;
        unsigned k = (seed >> 8) % 100;
        sz[i] = k < 70 ? 1 + (seed >> 4) % 1024
                : k < 92 ? 1025 + (seed >> 4) % 31000
                : k < 99 ? 40000 + (seed >> 4) % 900000
                : (2u << 20) + (seed >> 4) % (2u << 20);
        p[i] = T_MALLOC(sz[i]);
        if (!p[i]) return 3;
        /* Only the head is patterned: page faults are slow and the question
         * here is whether the child can allocate at all. */
        hk_test_fill(p[i], sz[i] < 8192 ? sz[i] : 8192, (uint64_t)i);
        if (i % 4 == 3) {
            T_FREE(p[i - 2]);
            p[i - 2] = NULL;
        }
    }
    for (int i = 0; i < 300; i++) {
        if (p[i] && hk_test_check(p[i], sz[i] < 8192 ? sz[i] : 8192, (uint64_t)i) != (size_t)-1) return 4;
        T_FREE(p[i]);
    }
    /* A thread in the child needs the allocator's per-thread setup too. */
    pthread_t t;
    void *res = NULL;
    if (pthread_create(&t, NULL, child_thread, NULL) != 0) return 5;
    pthread_join(t, &res);
    return res ? 6 : 0;
}

int main(void)
{
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        if (pthread_create(&th[i], NULL, churn, (void *)(intptr_t)i) != 0) return 2;
    int failed = 0;
    for (int f = 0; f < FORKS; f++) {
        /* Give the churn threads a moment so forks hit them mid-operation. */
        usleep(2000);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            failed++;
            break;
        }
        if (pid == 0) _exit(child_work((unsigned)f * 7919u + 1));
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            if (WIFSIGNALED(st))
                fprintf(stderr, "fork %d: child killed by signal %d%s\n", f, WTERMSIG(st),
                        WTERMSIG(st) == SIGALRM ? " (deadlock)" : "");
            else
                fprintf(stderr, "fork %d: child exited %d\n", f, WEXITSTATUS(st));
            failed++;
            /* Each hang costs the alarm's seconds: a few are proof enough. */
            if (failed >= 3) break;
        }
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < NTHREADS; i++) pthread_join(th[i], NULL);
    printf("fork: %d forks, %d failed\n", FORKS, failed);
    return failed ? 1 : 0;
}
