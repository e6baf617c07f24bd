/* policy_fixed.c — the Phase 1 policy: constant per-class refill counts and caches, bounded in bytes for mid sizes (also the table ACE starts from). */
#include "hak_policy.h"
#include "hak_front.h"

/* Mid blocks (1-32 KiB) a thread may park, in bytes; docs/performance.md
 * has the measurements behind the default. */
static unsigned thread_mid_bytes = 16u << 20;
unsigned hk_policy_thread_mid_bytes(void) { return thread_mid_bytes; }
void hk_policy_set_thread_mid_bytes(unsigned bytes) { thread_mid_bytes = bytes; }

/* Blocks a thread may cache per class. Tiny classes: twice the refill count.
 * Mid classes: an equal share of the byte budget for each of the 40, so the
 * caps always fit the budget together and no class is starved of it. */
unsigned hk_policy_fixed_cap(unsigned c)
{
    uint32_t s = hk_class_size[c];
    if (c <= HK_TINY_LAST)
        return s <= 64 ? 128 : s <= 128 ? 96 : s <= 256 ? 64 : s <= 512 ? 48 : 32;
    unsigned share = thread_mid_bytes / (HK_NCLASS - 1 - HK_TINY_LAST) / s;
    return share < 2 ? 2 : share > 32 ? 32 : share;
}

/* Refill counts: 64 blocks for the smallest classes falling to 16 at 1 KiB
 * (the seed's Phase 1), and half the cap above, where blocks are big. */
unsigned hk_policy_fixed_batch(unsigned c) { return hk_policy_fixed_cap(c) / 2; }

#if !HK_LEARNING /* a learning build takes these from policies/ace */
unsigned hk_policy_cap(unsigned c) { return hk_policy_fixed_cap(c); }
unsigned hk_policy_batch(unsigned c) { return hk_policy_fixed_batch(c); }
#endif

/* A page given back and touched again costs a fault (20-40 µs on these
 * virtual machines): keep free memory a quarter second before returning it. */
static unsigned purge_delay_ms = 250;
unsigned hk_policy_purge_delay_ms(void) { return purge_delay_ms; }
void hk_policy_set_purge_delay_ms(unsigned ms) { purge_delay_ms = ms; }

/* At most about 256 KiB per class waits in the central exchange (2..64
 * batches): enough to pass batches between threads, not a second cache. */
unsigned hk_policy_central_batches(unsigned c)
{
    uint32_t per_batch = hk_class_size[c] * hk_policy_batch(c);
    uint32_t n = (256u << 10) / per_batch;
    return n < 2 ? 2 : n > 64 ? 64 : n;
}
