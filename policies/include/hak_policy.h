/* hak_policy.h — the policy interface Box 2 consults at each refill and flush: how many blocks to move and keep. */
#ifndef HAK_POLICY_H
#define HAK_POLICY_H

/* Blocks per refill (and per flush) for class c. */
unsigned hk_policy_batch(unsigned c);
/* Most blocks a thread may cache for class c (at least batch, at most 65535). */
unsigned hk_policy_cap(unsigned c);
/* Most bytes one thread's caches of the mid classes (1-32 KiB) may hold;
 * HAKMEM_THREAD_MID_BYTES sets it once at initialisation. */
unsigned hk_policy_thread_mid_bytes(void);
void hk_policy_set_thread_mid_bytes(unsigned bytes);
/* Most whole batches the central exchange keeps for class c. */
unsigned hk_policy_central_batches(unsigned c);

/* How long an empty slab or region is kept for reuse before it is returned
 * to the OS (re-faulting pages costs more than keeping them briefly). */
unsigned hk_policy_purge_delay_ms(void);
/* HAKMEM_PURGE_DELAY_MS, set once at initialisation. */
void hk_policy_set_purge_delay_ms(unsigned ms);

#endif /* HAK_POLICY_H */
