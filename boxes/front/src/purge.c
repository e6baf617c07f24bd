/* purge.c — hakmem's one background thread: it gives idle free memory back to the OS after the purge delay. */
#include "front_internal.h"
#include "hak_policy.h"

#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

bool hk_purge_thread_enabled = true;

int hk_purge_started; /* 0 no, 1 yes (or being started) */
static int parked;  /* futex word: 1 while the thread waits for work */

static void futex(int *word, int op, int val, const struct timespec *timeout)
{
    syscall(SYS_futex, word, op, val, timeout, NULL, 0);
}

static void *purger(void *arg)
{
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals are the program's */
    hk_refill_purger_started();
    pthread_setname_np(pthread_self(), "hakmem-purge"); /* so top and gdb tell it from the program's */
    for (;;) {
        uint32_t delay = hk_policy_purge_delay_ms();
        uint32_t nap = hk_policy_purge_interval_ms(delay);
        struct timespec ts = {nap / 1000, (long)(nap % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        __atomic_store_n(&hk_refill_purge_pending, 0, __ATOMIC_SEQ_CST);
        bool more = false;
        hk_refill_purge(delay, &more);
        hk_large_purge(delay, &more);
        hk_policy_learn(hk_now_ms()); /* Box 3 learns here, off every hot path */
        if (more)
            continue;
        /* Nothing left to purge: sleep until a free makes some, waking once
         * a second so the pass count (hk_refill_purge_epoch) still tells
         * threads that come back to their slow path that they were idle. */
        static const struct timespec second = {1, 0};
        __atomic_store_n(&parked, 1, __ATOMIC_SEQ_CST);
        if (!__atomic_load_n(&hk_refill_purge_pending, __ATOMIC_SEQ_CST))
            futex(&parked, FUTEX_WAIT_PRIVATE, 1, &second);
        __atomic_store_n(&parked, 0, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

/* Heaps at least this large get the thread at their next slow path even
 * before anything is freed, so a program that frees its heap and then only
 * waits still sees its RSS fall; below it, at most this much can wait for
 * the next safe point. Small programs never start a thread. */
#define START_MAPPED ((size_t)8 << 20)

void hk_purge_safe_point_slow(void)
{
    if (!hk_purge_thread_enabled || __atomic_load_n(&hk_init_state, __ATOMIC_ACQUIRE) != 2)
        return;
    if (!__atomic_load_n(&hk_refill_purge_pending, __ATOMIC_RELAXED) &&
        hk_refill_mapped() + hk_large_mapped() < START_MAPPED)
        return;
    int expect = 0;
    if (!__atomic_compare_exchange_n(&hk_purge_started, &expect, 1, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_RELAXED))
        return; /* another thread, or this one nested in pthread_create's malloc */
    /* pthread_create allocates: no hakmem lock is held here. */
    pthread_attr_t attr;
    pthread_t tid;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    if (pthread_create(&tid, &attr, purger, NULL) != 0) {
        hk_purge_thread_enabled = false; /* purging stays inline and in malloc_trim */
        if (hk_verbose)
            hk_log("could not start the purge thread; purging on slow paths only");
    }
    pthread_attr_destroy(&attr);
}

void hk_purge_kick_slow(void)
{
    if (!__atomic_load_n(&hk_purge_started, __ATOMIC_ACQUIRE))
        return; /* the next safe point starts it: the pending flag stays set */
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* pending store before parked load */
    int one = 1;
    if (__atomic_load_n(&parked, __ATOMIC_RELAXED) &&
        __atomic_compare_exchange_n(&parked, &one, 0, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
        futex(&parked, FUTEX_WAKE_PRIVATE, 1, NULL);
}

/* The thread did not survive into a fork child: the next safe point there
 * starts a new one (Box 2 forgets it ran in its own fork reset). */
void hk_purge_fork(int phase)
{
    if (phase == HK_FORK_CHILD) {
        hk_purge_started = 0;
        parked = 0;
    }
}
