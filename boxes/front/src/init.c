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
static bool stats_at_exit;

static void fork_prepare(void)
{
    hk_tls_fork_prepare();
    hk_large_lock();
    hk_refill_lock_all();
}

static void fork_parent(void)
{
    hk_refill_unlock_all();
    hk_large_unlock();
    hk_tls_fork_parent();
}

/* Only the forking thread survives; the locks it took are released here. The
 * other threads' caches are lost to the child (they cannot be reached). */
static void fork_child(void)
{
    hk_refill_reset_locks();
    hk_large_unlock();
    hk_tls_fork_child();
    hk_stats_after_fork();
    hk_purge_after_fork();
    hk_policy_fork_child();
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

/* Reports once on stderr that a setting was ignored: "ignoring WHY NAME"
 * and an optional tail. hk_log does not allocate. */
static void env_ignored(const char *why, const char *name, const char *tail)
{
    char msg[112] = "ignoring ";
    size_t k = 9;
    for (const char *const *part = (const char *const[]){why, " ", name, tail, NULL}; *part; part++)
        for (const char *t = *part; *t && k < sizeof msg - 1; t++)
            msg[k++] = *t;
    msg[k] = 0;
    hk_log(msg);
}

/* An unsigned decimal setting in [0, max]; anything else is reported once
 * and the default kept. secure_getenv does not allocate, and in a setuid
 * or setgid program returns NULL: its invoker does not tune it. */
static unsigned env_uint(const char *name, unsigned def, unsigned max)
{
    const char *v = secure_getenv(name);
    if (!v || !*v)
        return def;
    unsigned long n = 0;
    bool big = false;
    for (const char *s = v; *s; s++) {
        if (*s < '0' || *s > '9') {
            env_ignored("malformed", name, "");
            return def;
        }
        n = n * 10 + (unsigned long)(*s - '0');
        if (n > max) { /* clamped, so that a long number cannot wrap */
            big = true;
            n = (unsigned long)max + 1;
        }
    }
    if (big) {
        env_ignored("out-of-range", name, "");
        return def;
    }
    return (unsigned)n;
}

#if !HK_LEARNING || !HK_POOL_TLS
/* A setting this build has no use for is reported once (the value is not
 * parsed, so never also "malformed"); "0" asks for what the build does
 * without it, so a fleet-wide setting stays quiet. */
static void env_unused(const char *name, const char *tail)
{
    const char *v = secure_getenv(name);
    if (v && *v && strcmp(v, "0") != 0)
        env_ignored("unused", name, tail);
}
#endif

void hk_init_slow(void)
{
    int expect = 0;
    hk_link_key_init(make_secret()); /* before any list exists, whoever wins */
    /* A nested call (pthread_atfork may allocate) or a racing thread goes on:
     * everything malloc needs is static and ready without this set-up. */
    if (!__atomic_compare_exchange_n(&hk_init_state, &expect, 1, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return;
    hk_tls_secret = make_secret();
    hk_verbose = env_uint("HAKMEM_VERBOSE", 0, 1);
    stats_at_exit = env_uint("HAKMEM_STATS", 0, 1);
    hk_purge_thread_enabled = env_uint("HAKMEM_PURGE_THREAD", 1, 1);
    hk_policy_set_purge_delay_ms(env_uint("HAKMEM_PURGE_DELAY_MS", hk_policy_purge_delay_ms(), 3600000));
#if HK_POOL_TLS
    hk_policy_set_thread_mid_bytes(env_uint("HAKMEM_THREAD_MID_BYTES", hk_policy_thread_mid_bytes(), 1u << 30));
#else
    env_unused("HAKMEM_THREAD_MID_BYTES", " (this build caches no 1-32 KiB blocks per thread: -Dpool_tls=false)");
#endif
    hk_tls_medium_bytes = env_uint("HAKMEM_THREAD_MEDIUM_BYTES", (unsigned)hk_tls_medium_bytes, 1u << 30);
#if HK_LEARNING
    hk_policy_configure(env_uint("HAKMEM_LEARNING", 1, 1), env_uint("HAKMEM_ACE_TRACE", 0, 1));
#else
    for (const char *const *n = (const char *const[]){"HAKMEM_LEARNING", "HAKMEM_ACE_TRACE", NULL}; *n; n++)
        env_unused(*n, " (this build has no learning policy: -Dlearning=true)");
#endif
    hk_tls_process_init(hk_purge_safe_point_slow); /* a thread's exit is a safe point */
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    __atomic_store_n(&hk_init_state, 2, __ATOMIC_RELEASE);
    if (hk_verbose) {
        hk_log(hak_version());
        hk_log(hk_os_mode());
    }
}

__attribute__((constructor)) static void hk_constructor(void) { hk_init(); }

/* HAKMEM_STATS=1: the table goes to stderr at exit. Nothing is torn down:
 * frees still arrive after destructors. */
__attribute__((destructor)) static void hk_destructor(void)
{
    if (stats_at_exit)
        hak_stats_print(stderr);
}
