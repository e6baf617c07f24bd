/* hak_policy.h — the policy interface Box 2 consults at each refill and flush: how many blocks to move and keep. */
#ifndef HAK_POLICY_H
#define HAK_POLICY_H

#include <stdbool.h>
#include <stdint.h>

/* Blocks per refill (and per flush) for class c. */
unsigned hk_policy_batch(unsigned c);
/* Most blocks a thread may cache for class c (at least batch, at most 65535). */
unsigned hk_policy_cap(unsigned c);
/* The fixed table (docs/design.md): the whole policy of a fixed build, and
 * where the learning policy starts from. */
unsigned hk_policy_fixed_batch(unsigned c);
unsigned hk_policy_fixed_cap(unsigned c);
/* Most bytes one thread's caches of the mid classes (1-32 KiB) may hold;
 * HAKMEM_THREAD_MID_BYTES sets it once at initialisation. */
unsigned hk_policy_thread_mid_bytes(void);
void hk_policy_set_thread_mid_bytes(unsigned bytes);
/* Most entries (batches, or shorter lists from drained caches) the central exchange keeps for class c. */
unsigned hk_policy_central_batches(unsigned c);

/* How long an empty slab or region is kept for reuse before it is returned
 * to the OS (re-faulting pages costs more than keeping them briefly). */
unsigned hk_policy_purge_delay_ms(void);
/* HAKMEM_PURGE_DELAY_MS, set once at initialisation. */
void hk_policy_set_purge_delay_ms(unsigned ms);
/* How often free memory is looked over for the delay: half of it, at least
 * every 10 ms (the purge thread's sleep, and Box 2's inline walks). */
static inline uint32_t hk_policy_purge_interval_ms(uint32_t delay) { return delay / 2 < 10 ? 10 : delay / 2; }

/* Events from Box 1's slow paths (never its hit path): a refill of n blocks
 * of class c, a flush of n blocks, and a thread that gave back its whole
 * cache (thread exit or idle trim; c and n are 0). */
enum { HK_EV_REFILL = 1, HK_EV_FLUSH = 2, HK_EV_DRAIN = 3 };

#if HK_LEARNING
/* Box 3 (policies/ace): records the event in the calling thread's ring, or
 * drops and counts it when the ring is full or busy (contract A); never
 * blocks and never allocates (contract C). */
void hk_policy_event(unsigned kind, unsigned c, unsigned n);
/* Reads every ring and publishes new parameters; the purge thread calls it
 * once a pass, and an event producer whenever its ring is half full. */
void hk_policy_learn(uint32_t now_ms);
/* HAKMEM_LEARNING (false: the fixed table, events counted only) and
 * HAKMEM_ACE_TRACE (each decision on stderr), set once at initialisation. */
void hk_policy_configure(bool learning, bool trace);
/* fork child: locks held by threads that did not survive are released. */
void hk_policy_fork_child(void);

/* Box 3's counters, for tests and the trace summary: events kept in a ring,
 * dropped (ring full or busy), skipped (a settled class not hearing that
 * thread); refills, flushes and drains count all three. */
typedef struct hk_ace_stats {
    uint64_t events, dropped, skipped, refills, flushes, drains, decisions, learns;
} hk_ace_stats_t;
void hk_ace_stats(hk_ace_stats_t *st);
/* Tests: while held, the learner does not run (a learner far slower than
 * the producers), so the rings fill and drop. */
void hk_ace_hold_learner(bool hold);
#else
/* The fixed policy learns nothing: these cost nothing. */
#define hk_policy_event(kind, c, n) ((void)0)
static inline void hk_policy_learn(uint32_t now_ms) { (void)now_ms; }
static inline void hk_policy_configure(bool learning, bool trace) { (void)learning; (void)trace; }
static inline void hk_policy_fork_child(void) {}
#endif

#endif /* HAK_POLICY_H */
