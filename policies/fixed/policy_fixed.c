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

unsigned hk_policy_cap(unsigned c) { return 2 * hk_policy_batch(c); }

/* At most about 1 MiB per class waits in the central exchange (4..64 batches). */
unsigned hk_policy_central_batches(unsigned c)
{
    uint32_t per_batch = hk_class_size[c] * hk_policy_batch(c);
    uint32_t n = (1u << 20) / per_batch;
    return n < 4 ? 4 : n > 64 ? 64 : n;
}
