/* ace_policy.c — tests Box 3 (ACE) in a learning build: ring overflow drops without blocking, parameters apply only at refill/flush, the learner converges, and a class settled on short-lived threads is still heard. */
#define _GNU_SOURCE /* pthread_barrier_t */
#include "policy_internal.h" /* white box: the fixed table, hk_ace_stats */
#define hk_policy_cap(c) (hk_policy_limits(c).cap)
#define hk_policy_batch(c) (hk_policy_limits(c).batch)
#include "hak_tls.h"
#include "test_alloc_names.h"

/* Box 3's test hook (policy_ace.c): while held, the learner does not run. */
void hk_ace_hold_learner(bool hold);

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fputc('\n', stderr);                                            \
            exit(1);                                                        \
        }                                                                   \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- contract A: a full ring drops and counts, and never waits --------- */

#define PRODUCERS 4
#define EVENTS_EACH 500000
static double slowest_call[PRODUCERS];

static void *producer(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (unsigned i = 0; i < EVENTS_EACH; i++) {
        double t0 = (i & 1023) == 0 ? now_s() : 0;
        hk_policy_event(i & 1 ? HK_EV_REFILL : HK_EV_FLUSH, 1 + i % 32, 16);
        if (t0 != 0) {
            double d = now_s() - t0;
            if (d > slowest_call[id])
                slowest_call[id] = d;
        }
    }
    return NULL;
}

static int test_overflow(void)
{
    hk_ace_stats_t before, after;
    /* The learner is "busy" all along: a learner infinitely slower than the
     * producers. A ring that waited for room would hang here for good. */
    hk_ace_hold_learner(true);
    hk_ace_stats(&before);
    double t0 = now_s();
    pthread_t tid[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++)
        CHECK(pthread_create(&tid[i], NULL, producer, (void *)(intptr_t)i) == 0, "pthread_create");
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(tid[i], NULL);
    double took = now_s() - t0;
    hk_ace_stats(&after);
    uint64_t sent = (uint64_t)PRODUCERS * EVENTS_EACH;
    uint64_t kept = after.events - before.events, dropped = after.dropped - before.dropped;
    printf("overflow: %llu events sent in %.3f s: %llu kept, %llu dropped\n", (unsigned long long)sent, took,
           (unsigned long long)kept, (unsigned long long)dropped);
    /* >=: the main thread's own refills (pthread_create allocates) count too. */
    CHECK(kept + dropped >= sent, "every event is either kept or counted as dropped");
    CHECK(dropped >= sent - 64 * 256, "with the learner stalled, all but the rings' room is dropped");
    for (int i = 0; i < PRODUCERS; i++)
        CHECK(slowest_call[i] < 0.5, "producer %d waited %.3f s in one event", i, slowest_call[i]);
    /* The learner back: the rings empty and events are kept again. */
    hk_ace_hold_learner(false);
    hk_policy_learn(hk_now_ms());
    hk_ace_stats(&before);
    hk_policy_event(HK_EV_REFILL, 3, 8);
    hk_ace_stats(&after);
    CHECK(after.events == before.events + 1 && after.dropped == before.dropped, "kept after the learner ran");
    return 0;
}

/* ---- contract B: a learned cap applies at the next refill or flush ---- */

static int test_scope(void)
{
    const size_t size = 100;
    unsigned c = hk_class_by16[(size + 15) >> 4];
    void *blocks[4096];
    hk_ace_hold_learner(true); /* nothing is learned while the evidence builds */
    T_FREE(T_MALLOC(size));        /* the thread's cache is live */
    unsigned old = hk_tls.cap[c];
    CHECK(old == hk_policy_cap(c), "the thread starts with the policy's cap (%u vs %u)", old, hk_policy_cap(c));
    /* Churn: the list runs empty, then full, again and again. */
    for (int round = 0; round < 12; round++) {
        unsigned n = old * 2;
        for (unsigned i = 0; i < n; i++)
            blocks[i] = T_MALLOC(size);
        for (unsigned i = 0; i < n; i++)
            T_FREE(blocks[i]);
    }
    CHECK(hk_tls.cap[c] == old && hk_policy_cap(c) == old, "nothing learned yet");
    /* Half a list: the next operations hit it. */
    unsigned live = hk_tls_held(c);
    while (live > old / 2) {
        blocks[0] = T_MALLOC(size);
        live--;
    }
    hk_ace_hold_learner(false);
    hk_policy_learn(hk_now_ms());
    hk_ace_hold_learner(true); /* the published value stays put from here */
    unsigned learned = hk_policy_cap(c);
    printf("scope: class %u cap %u -> %u published, thread cap %u\n", c, old, learned, hk_tls.cap[c]);
    CHECK(learned != old, "churn changed the cap");
    /* Hits only: the live list keeps the cap it was filled under. */
    for (int i = 0; i < 1000; i++) {
        void *p = T_MALLOC(size), *q = T_MALLOC(size);
        T_FREE(q);
        T_FREE(p);
        CHECK(hk_tls.cap[c] == old, "a hit changed the cap of a live list (%u)", hk_tls.cap[c]);
    }
    /* Empty the list: the refill takes the new cap. */
    unsigned held = hk_tls_held(c);
    for (unsigned i = 0; i <= held; i++)
        blocks[i] = T_MALLOC(size);
    CHECK(hk_tls.cap[c] == learned, "the refill took the learned cap (%u, want %u)", hk_tls.cap[c], learned);
    for (unsigned i = 0; i <= held; i++)
        T_FREE(blocks[i]);
    hk_ace_hold_learner(false);
    return 0;
}

/* ---- the learner converges on a steady workload ----------------------- */

static int test_converge(void)
{
    enum { SLOTS = 4096, ROUNDS = 400, QUIET = 100 };
    static void *slot[SLOTS];
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    hk_ace_stats_t st;
    uint64_t per_round[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < 200000; i++) {
            seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
            unsigned s = (unsigned)(seed >> 40) % SLOTS;
            T_FREE(slot[s]);
            slot[s] = T_MALLOC(16 + (seed & 0x3ff) % 1000);
        }
        hk_policy_learn(hk_now_ms());
        hk_ace_stats(&st);
        per_round[r] = st.decisions;
    }
    printf("converge: decisions after each round:");
    for (int r = 0; r < ROUNDS; r++)
        printf(" %llu", (unsigned long long)per_round[r]);
    printf("\n");
    CHECK(per_round[ROUNDS - 1] > 0, "the learner made decisions");
    CHECK(per_round[ROUNDS - 1] == per_round[ROUNDS - 1 - QUIET], "no decision in the last %d rounds", QUIET);
    for (int i = 0; i < SLOTS; i++)
        T_FREE(slot[i]);
    return 0;
}

/* ---- settled classes: fewer events written, none lost from the counts, --
 * ---- and a change of behaviour still heard ----------------------------- */

static void *short_life(void *arg)
{
    unsigned c = (unsigned)(uintptr_t)arg;
    hk_policy_event(HK_EV_REFILL, c, 8);
    hk_policy_event(HK_EV_DRAIN, 0, 0);
    return NULL;
}

static pthread_barrier_t all_alive;

static void *churn_life(void *arg)
{
    unsigned c = (unsigned)(uintptr_t)arg;
    pthread_barrier_wait(&all_alive);
    for (unsigned i = 0; i < 4; i++)
        hk_policy_event(i & 1 ? HK_EV_FLUSH : HK_EV_REFILL, c, 8);
    pthread_barrier_wait(&all_alive);
    return NULL;
}

static int test_settle(void)
{
    /* 512 B: nothing else in this test allocates it, and churn can grow its cap. */
    const unsigned c = hk_class_by16[(512 + 15) >> 4];
    const unsigned threads = 2000;
    hk_ace_stats_t before, after;
    hk_ace_stats(&before);
    /* Threads that each make one refill of c and exit: after two
     * short-lived verdicts the class hears a few rings only. */
    for (unsigned i = 0; i < threads; i++) {
        pthread_t t;
        CHECK(pthread_create(&t, NULL, short_life, (void *)(uintptr_t)c) == 0, "pthread_create");
        pthread_join(t, NULL);
        hk_policy_learn(hk_now_ms());
    }
    hk_ace_stats(&after);
    uint64_t skipped = after.skipped - before.skipped, refills = after.refills - before.refills;
    printf("settle: %u short-lived threads: %llu refills counted, %llu of them skipped; batch %u (fixed %u)\n",
           threads, (unsigned long long)refills, (unsigned long long)skipped, hk_policy_batch(c),
           hk_policy_fixed_batch(c));
    CHECK(skipped >= threads / 2, "a settled class skips most events");
    CHECK(refills >= threads, "skipped events are still counted");
    CHECK(hk_policy_batch(c) < hk_policy_fixed_batch(c) || hk_policy_fixed_batch(c) <= 2,
          "the short-lived verdict stands");
    /* A thread that stays and churns the class: first a pass in which its
     * ring is deaf (one event, skipped), then its churn must be heard within
     * a few passes (the heard rings move), and then every ring again. */
    unsigned pass = 0;
    for (bool deaf = false; !deaf; pass++) {
        CHECK(pass < 64, "the settled class never skipped this thread's ring");
        hk_ace_stats(&before);
        hk_policy_event(HK_EV_REFILL, c, 8);
        hk_ace_stats(&after);
        deaf = after.skipped > before.skipped;
        hk_policy_learn(hk_now_ms());
    }
    unsigned cap = hk_policy_cap(c);
    for (pass = 0; pass < 64 && hk_policy_cap(c) == cap; pass++) {
        for (unsigned i = 0; i < 32; i++)
            hk_policy_event(i & 1 ? HK_EV_FLUSH : HK_EV_REFILL, c, 8);
        hk_policy_learn(hk_now_ms());
    }
    printf("settle: churn heard after %u passes: cap %u -> %u\n", pass, cap, hk_policy_cap(c));
    CHECK(hk_policy_cap(c) > cap, "a long-lived thread's churn is heard");
    /* Eight threads alive at once (eight stacks, so rings all over): a
     * class still deaf to 60 of 64 rings would skip some of their events. */
    hk_ace_stats(&before);
    pthread_t t[8];
    pthread_barrier_init(&all_alive, NULL, 8);
    for (unsigned i = 0; i < 8; i++)
        CHECK(pthread_create(&t[i], NULL, churn_life, (void *)(uintptr_t)c) == 0, "pthread_create");
    for (unsigned i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    hk_ace_stats(&after);
    CHECK(after.skipped == before.skipped, "an unsettled class hears every event");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s overflow|scope|converge|settle\n", argv[0]);
        return 2;
    }
    if (!strcmp(argv[1], "overflow"))
        return test_overflow();
    if (!strcmp(argv[1], "scope"))
        return test_scope();
    if (!strcmp(argv[1], "converge"))
        return test_converge();
    if (!strcmp(argv[1], "settle"))
        return test_settle();
    return 2;
}
