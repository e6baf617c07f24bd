/* init.c — process set-up that never calls malloc: settings read from the environment and handed down, the fork protocol, the thread-exit hook. */
#include "hakmem.h"
#include "front_internal.h"
#include "hak_backend.h"
#include "hak_policy.h"
#include "hak_tls.h"

#include <pthread.h>
#include <string.h>

int hk_init_state; /* 0 never, 1 running, 2 done */
bool hk_verbose;
static bool stats_at_exit;

/* HAKMEM_PROF_WALKER: "hakmem" (the default) or "glibc"; anything else is reported. */
static bool prof_walker_is_glibc(void)
{
    const char *w = hk_env_str("HAKMEM_PROF_WALKER");
    if (!w || !strcmp(w, "hakmem"))
        return false;
    if (!strcmp(w, "glibc"))
        return true;
    hk_log("HAKMEM_PROF_WALKER is not \"hakmem\" or \"glibc\": using hakmem's walker");
    return false;
}

/* The guarded pool's default: 56 slots of 32 KiB and their guard pages,
 * about 2 MiB of address space (resident only while blocks live there). */
#define GUARD_SLOTS 56

/* A thread's exit is a safe point (the purge thread may start), and its
 * alternate signal stack, if guarded sampling gave it one, goes. */
static void thread_exit(void)
{
    hk_guard_thread_exit();
    hk_prof_thread_exit();
    hk_purge_safe_point_slow();
}

/* One fork protocol: every part holds its own locks across fork() and
 * resets its own state in the child, where only the forking thread lives
 * on (the other threads' caches are lost to it: they cannot be reached).
 * Top-down before, bottom-up after, so no part waits on one above it. */
static void fork_phase(int phase)
{
    static void (*const parts[])(int) = {hk_guard_fork, hk_prof_fork, hk_stats_fork, hk_purge_fork, hk_large_fork, hk_tls_fork,
                                         hk_refill_fork, hk_policy_fork, hk_os_fork};
    const unsigned n = sizeof parts / sizeof parts[0];
    for (unsigned i = 0; i < n; i++)
        parts[phase == HK_FORK_PREPARE ? i : n - 1 - i](phase);
}
static void fork_prepare(void) { fork_phase(HK_FORK_PREPARE); }
static void fork_parent(void) { fork_phase(HK_FORK_PARENT); }
static void fork_child(void) { fork_phase(HK_FORK_CHILD); }

void hk_init_slow(void)
{
    int expect = 0;
    hk_link_key_init(hk_random_word()); /* before any list exists, whoever wins */
    /* A nested call (pthread_atfork may allocate) or a racing thread goes on:
     * everything malloc needs is static and ready without this set-up. */
    if (!__atomic_compare_exchange_n(&hk_init_state, &expect, 1, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return;
    hk_tag_init(hk_random_word());
    /* Every HAKMEM_* setting is read here, once, and handed to its part. */
    hk_stderr_note();
    hk_verbose = hk_env_uint("HAKMEM_VERBOSE", 0, 1);
    stats_at_exit = hk_env_uint("HAKMEM_STATS", 0, 1);
    hk_purge_thread_enabled = hk_env_uint("HAKMEM_PURGE_THREAD", 1, 1);
    hk_policy_config_t pol = hk_policy_config();
    pol.purge_delay_ms = hk_env_uint("HAKMEM_PURGE_DELAY_MS", pol.purge_delay_ms, 3600000);
#if HK_POOL_TLS
    pol.thread_mid_bytes = hk_env_uint("HAKMEM_THREAD_MID_BYTES", pol.thread_mid_bytes, 1u << 30);
#else
    hk_env_unused("HAKMEM_THREAD_MID_BYTES", " (this build caches no 1-32 KiB blocks per thread: -Dpool_tls=false)");
#endif
#if HK_LEARNING
    pol.learning = hk_env_uint("HAKMEM_LEARNING", 1, 1);
    pol.trace = hk_env_uint("HAKMEM_ACE_TRACE", 0, 1);
#else
    for (const char *const *n = (const char *const[]){"HAKMEM_LEARNING", "HAKMEM_ACE_TRACE", NULL}; *n; n++)
        hk_env_unused(*n, " (this build has no learning policy: -Dlearning=true)");
#endif
    hk_policy_configure(&pol);
    hk_tls_configure(&(hk_tls_config_t){
        .mid_bytes = pol.thread_mid_bytes,
        .medium_bytes = hk_env_uint("HAKMEM_THREAD_MEDIUM_BYTES", (unsigned)HK_TLS_MEDIUM_BYTES, 1u << 30),
        .grow = !HK_LEARNING || !pol.learning, /* Box 3's caps are global: one rule at a time */
        .trace = hk_env_uint("HAKMEM_CACHE_TRACE", 0, 1),
        .exit_hook = thread_exit,
    });
    const char *prof = hk_env_str("HAKMEM_PROF");
    unsigned sample = hk_env_uint("HAKMEM_PROF_SAMPLE", 0, 1u << 30);
    unsigned seed = hk_env_uint("HAKMEM_PROF_SEED", 0, ~0u);
    unsigned guard = hk_env_uint("HAKMEM_GUARD_SAMPLE", 0, 1u << 30);
    if (guard)
        hk_guard_configure(hk_env_uint("HAKMEM_GUARD_SLOTS", GUARD_SLOTS, 1u << 16));
    else
        hk_env_unused("HAKMEM_GUARD_SLOTS", " (guarded sampling is off: HAKMEM_GUARD_SAMPLE)");
    hk_prof_configure(&(hk_prof_config_t){
        .on = prof || sample,
        .prefix = prof,
        .sample = sample ? sample : (uint64_t)2 << 20, /* tcmalloc's mean */
        .seeded = hk_env_str("HAKMEM_PROF_SEED") != NULL,
        .seed = seed,
        .glibc_walker = prof_walker_is_glibc(),
        .guard_every = hk_guard_on ? guard : 0,
    });
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
    if (stats_at_exit && hk_stderr_unchanged())
        hak_stats_print(stderr);
}
