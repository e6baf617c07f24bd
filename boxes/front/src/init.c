/* init.c — process set-up that never calls malloc: the tag secret, settings, fork handlers and the thread-exit key. */
#include "hakmem.h"
#include "front_internal.h"
#include "hak_backend.h"
#include "hak_policy.h"
#include "hak_tls.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <time.h>

int hk_init_state; /* 0 never, 1 running, 2 done */
bool hk_verbose;

static void fork_prepare(void)
{
    hk_large_lock();
    hk_refill_lock_all();
}

static void fork_parent(void)
{
    hk_refill_unlock_all();
    hk_large_unlock();
}

/* Only the forking thread survives; the locks it took are released here. The
 * other threads' caches are lost to the child (they cannot be reached). */
static void fork_child(void)
{
    hk_refill_reset_locks();
    hk_large_unlock();
}

static uintptr_t make_secret(void)
{
    uintptr_t s = 0;
    const unsigned char *r = (const unsigned char *)getauxval(AT_RANDOM);
    if (r)
        memcpy(&s, r + 8, sizeof s); /* bytes 0-7 are glibc's stack guard */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    s ^= (uintptr_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uintptr_t)&s;
    return s | 1;
}

/* A malformed value is reported once and ignored. */
static bool env_flag(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return false;
    if ((v[0] == '0' || v[0] == '1') && v[1] == 0)
        return v[0] == '1';
    hk_log("ignoring a malformed environment value (expected 0 or 1)");
    return false;
}

void hk_init_slow(void)
{
    int expect = 0;
    /* A nested call (pthread_atfork may allocate) or a racing thread goes on:
     * everything malloc needs is static and ready without this set-up. */
    if (!__atomic_compare_exchange_n(&hk_init_state, &expect, 1, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return;
    hk_tls_secret = make_secret();
    hk_verbose = env_flag("HAKMEM_VERBOSE");
    hk_tls_process_init();
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    __atomic_store_n(&hk_init_state, 2, __ATOMIC_RELEASE);
    if (hk_verbose) {
        hk_log(hak_version());
    }
}

__attribute__((constructor)) static void hk_constructor(void) { hk_init(); }
