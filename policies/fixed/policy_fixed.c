/* policy_fixed.c — the Phase 1 policy: constant per-class refill counts and caches, bounded in bytes for mid sizes (also the table ACE starts from). */
#include "policy_internal.h"

/* Mid blocks (1-32 KiB) a thread may park: 16 MiB (docs/performance.md has
 * the measurements behind it). A page given back and touched again costs a
 * fault (20-40 µs on these virtual machines): free memory waits a quarter
 * second before it goes back. */
static hk_policy_config_t config = {.purge_delay_ms = 250, .thread_mid_bytes = 16u << 20, .learning = true};

hk_policy_config_t hk_policy_config(void) { return config; }

void hk_policy_configure(const hk_policy_config_t *cfg)
{
    config = *cfg;
#if HK_LEARNING
    hk_ace_configure(cfg->learning, cfg->trace); /* after the budget: it starts from the fixed table */
#endif
}

/* Blocks a thread may cache per class. Tiny classes: twice the refill count.
 * Mid classes: an equal share of the byte budget for each of the 40, so the
 * caps always fit the budget together and no class is starved of it. */
unsigned hk_policy_fixed_cap(unsigned c)
{
    uint32_t s = hk_class_size[c];
    if (c <= HK_TINY_LAST)
        return s <= 64 ? 128 : s <= 128 ? 96 : s <= 256 ? 64 : s <= 512 ? 48 : 32;
    unsigned share = config.thread_mid_bytes / (HK_NCLASS - 1 - HK_TINY_LAST) / s;
    return share < 2 ? 2 : share > 32 ? 32 : share;
}

/* Refill counts: 64 blocks for the smallest classes falling to 16 at 1 KiB
 * (the seed's Phase 1), and half the cap above, where blocks are big. */
unsigned hk_policy_fixed_batch(unsigned c) { return hk_policy_fixed_cap(c) / 2; }

#if !HK_LEARNING /* a learning build takes these from policies/ace */
hk_limits_t hk_policy_limits(unsigned c)
{
    unsigned cap = hk_policy_fixed_cap(c);
    return (hk_limits_t){cap, cap / 2};
}
#endif

unsigned hk_policy_purge_delay_ms(void) { return config.purge_delay_ms; }

/* At most about 256 KiB per class waits in the central exchange (2..64
 * batches): enough to pass batches between threads, not a second cache. */
unsigned hk_policy_central_batches(unsigned c)
{
    uint32_t per_batch = hk_class_size[c] * hk_policy_limits(c).batch;
    uint32_t n = (256u << 10) / per_batch;
    return n < 2 ? 2 : n > 64 ? 64 : n;
}
