/* policy_internal.h — what the two policies share: the fixed table ACE starts from, and ACE's counters. */
#ifndef HK_POLICY_INTERNAL_H
#define HK_POLICY_INTERNAL_H

#include "hak_policy.h"

/* The fixed table (docs/design.md): the whole policy of a fixed build, and
 * where the learning policy starts from. */
unsigned hk_policy_fixed_batch(unsigned c);
unsigned hk_policy_fixed_cap(unsigned c);
/* ACE's setup: the learning switch and the trace (policy_ace.c). */
void hk_ace_configure(bool learning, bool trace);

/* Box 3's counters, for the trace summary and tests: events kept in a ring,
 * dropped (ring full or busy), skipped (a settled class not hearing that
 * thread); refills, flushes and drains count all three. */
typedef struct hk_ace_stats {
    uint64_t events, dropped, skipped, refills, flushes, drains, decisions, learns;
} hk_ace_stats_t;
void hk_ace_stats(hk_ace_stats_t *st);

#endif
