/* hak_policy.h — the policy interface Box 2 consults at each refill and flush: how many blocks to move and keep. */
#ifndef HAK_POLICY_H
#define HAK_POLICY_H

/* Blocks per refill (and per flush) for class c. */
unsigned hk_policy_batch(unsigned c);
/* Most blocks a thread may cache for class c (at least batch, at most 65535). */
unsigned hk_policy_cap(unsigned c);
/* Most whole batches the central exchange keeps for class c. */
unsigned hk_policy_central_batches(unsigned c);

#endif /* HAK_POLICY_H */
