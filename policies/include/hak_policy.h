/* hak_policy.h — the policy Box 2 consults at each refill and flush (how many blocks to move and keep), and when free memory goes back to the OS. */
#ifndef HAK_POLICY_H
#define HAK_POLICY_H

#include "hak_base.h"

/* Settings, handed down once by the front's initialisation (which reads
 * the environment) before any thread cache exists. */
typedef struct hk_policy_config {
    unsigned purge_delay_ms;   /* HAKMEM_PURGE_DELAY_MS */
    unsigned thread_mid_bytes; /* HAKMEM_THREAD_MID_BYTES: one thread's 1-32 KiB blocks */
    bool learning, trace;      /* HAKMEM_LEARNING, HAKMEM_ACE_TRACE (learning builds) */
} hk_policy_config_t;
void hk_policy_configure(const hk_policy_config_t *cfg);
/* The settings in force (the defaults until configured). */
hk_policy_config_t hk_policy_config(void);

/* Class c's cap (at least batch, at most 65535) and batch. One call, one
 * reading: a learned cap never pairs with an old batch. */
hk_limits_t hk_policy_limits(unsigned c);
/* Most entries (batches, or shorter lists from drained caches) the central exchange keeps for class c. */
unsigned hk_policy_central_batches(unsigned c);

/* How long an empty slab or region is kept for reuse before it is returned
 * to the OS (re-faulting pages costs more than keeping them briefly). */
unsigned hk_policy_purge_delay_ms(void);
/* How often free memory is looked over for the delay: half of it, at least
 * every 10 ms (the purge thread's sleep, and Box 2's inline walks). */
static inline uint32_t hk_policy_purge_interval_ms(uint32_t delay) { return delay / 2 < 10 ? 10 : delay / 2; }

/* Events from Box 2's thread-cache traffic (never a thread's hit path): a
 * refill of n blocks of class c, a flush of n blocks, and a thread that gave
 * back its whole cache (thread exit or idle trim; c and n are 0). */
enum { HK_EV_REFILL = 1, HK_EV_FLUSH = 2, HK_EV_DRAIN = 3 };

#if HK_LEARNING
/* Box 3 (policies/ace): records the event in the calling thread's ring, or
 * drops and counts it when the ring is full or busy (contract A); never
 * blocks and never allocates (contract C). */
void hk_policy_event(unsigned kind, unsigned c, unsigned n);
/* Reads every ring and publishes new parameters; the purge thread calls it
 * once a pass, and an event producer whenever its ring is half full. */
void hk_policy_learn(uint32_t now_ms);
/* fork(): HK_FORK_* (hak_base.h); in the child, ring and learner flags
 * held by threads that did not survive are released. */
void hk_policy_fork(int phase);
#else
/* The fixed policy learns nothing: these cost nothing. */
#define hk_policy_event(kind, c, n) ((void)0)
static inline void hk_policy_learn(uint32_t now_ms) { (void)now_ms; }
static inline void hk_policy_fork(int phase) { (void)phase; }
#endif

#endif /* HAK_POLICY_H */
