/* policy_fixed.c — the Phase 1 policy: constant per-class refill counts falling from 64 to 16 blocks. */
#include "hak_policy.h"
#include "hak_front.h"

/* Refill counts by size: small blocks are cheap to park, big ones are not. */
unsigned hk_policy_batch(unsigned c)
{
    uint32_t s = hk_class_size[c];
    if (s <= 64)
        return 64;
    if (s <= 128)
        return 48;
    if (s <= 256)
        return 32;
    if (s <= 512)
        return 24;
    if (s <= 16384)
        return 16;
    return 8;
}

/* A page given back and touched again costs a fault (20-40 µs on these
 * virtual machines): keep free memory a quarter second before returning it. */
static unsigned purge_delay_ms = 250;
unsigned hk_policy_purge_delay_ms(void) { return purge_delay_ms; }
void hk_policy_set_purge_delay_ms(unsigned ms) { purge_delay_ms = ms; }

unsigned hk_policy_cap(unsigned c) { return 2 * hk_policy_batch(c); }

/* At most about 256 KiB per class waits in the central exchange (2..64
 * batches): enough to pass batches between threads, not a second cache. */
unsigned hk_policy_central_batches(unsigned c)
{
    uint32_t per_batch = hk_class_size[c] * hk_policy_batch(c);
    uint32_t n = (256u << 10) / per_batch;
    return n < 2 ? 2 : n > 64 ? 64 : n;
}
